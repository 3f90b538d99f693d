//! Decoding, orientation, limits and renditions, on real encoded images.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Cursor;
use std::time::{Duration, Instant};

use common::{encode, jpeg_with_exif, png_chunk, two_tone};
use image::{GenericImageView, ImageBuffer, Rgb};
use plugs_imaging::{
    DecodeLimits, Encoding, ImageFormat, ImagingError, Orientation, RenditionSpec, Size, probe,
    render, render_upright,
};

const JPEG_85: Encoding = Encoding::Jpeg { quality: 85 };

fn decode(bytes: &[u8]) -> image::DynamicImage {
    image::load_from_memory(bytes).unwrap()
}

fn is_red(p: image::Rgba<u8>) -> bool {
    p[0] > 150 && p[2] < 100
}

fn is_blue(p: image::Rgba<u8>) -> bool {
    p[2] > 150 && p[0] < 100
}

#[test]
fn probe_reads_dimensions_and_orientation_from_the_headers() {
    let jpeg = jpeg_with_exif(640, 480, 6);
    let info = probe(&jpeg).unwrap();
    assert_eq!(info.format, ImageFormat::Jpeg);
    assert_eq!((info.width, info.height), (640, 480));
    assert_eq!(info.orientation, Orientation::Rotate90);
    assert_eq!(info.upright_dimensions(), (480, 640));

    let png = encode(&two_tone(30, 20), image::ImageFormat::Png);
    let info = probe(&png).unwrap();
    assert_eq!(
        (info.format, info.width, info.height),
        (ImageFormat::Png, 30, 20)
    );
    assert_eq!(info.orientation, Orientation::Normal);

    assert_eq!(probe(b"%PDF-1.7 ..."), Err(ImagingError::UnsupportedFormat));
}

/// What `heif-convert` writes: pixels already turned upright, and the HEIF's EXIF block (whose
/// orientation a HEIF reader must ignore) copied into the PNG. Turning it again would stand a
/// portrait iPhone photo on its side.
#[test]
fn render_upright_ignores_the_exif_orientation_that_render_applies() {
    let plain = encode(&two_tone(64, 48), image::ImageFormat::Png);
    let mut png = plain[..33].to_vec();
    png.extend(png_chunk(b"eXIf", &common::exif_tiff(6)));
    png.extend_from_slice(&plain[33..]);
    assert_eq!(probe(&png).unwrap().orientation, Orientation::Rotate90);
    let specs = [RenditionSpec::new(Size::LongEdge(2048), JPEG_85)];
    let limits = DecodeLimits::default();

    let turned = render(&png, &specs, &limits).unwrap();
    assert_eq!(turned.info.upright_dimensions(), (48, 64));
    assert_eq!(
        (turned.renditions[0].width, turned.renditions[0].height),
        (48, 64)
    );

    let upright = render_upright(&png, &specs, &limits).unwrap();
    assert_eq!(upright.info.orientation, Orientation::Normal);
    assert_eq!(upright.info.upright_dimensions(), (64, 48));
    let image = decode(&upright.renditions[0].bytes);
    assert_eq!(image.dimensions(), (64, 48));
    // Red stays on top, as stored.
    assert!(is_red(image.get_pixel(32, 3)));
    assert!(is_blue(image.get_pixel(32, 44)));
}

#[test]
fn a_rotated_phone_photo_gives_upright_thumbnails_without_any_metadata() {
    let jpeg = jpeg_with_exif(640, 480, 6);
    let specs = [
        RenditionSpec::new(Size::Width(256), JPEG_85),
        RenditionSpec::new(Size::LongEdge(2048), JPEG_85),
        RenditionSpec::new(Size::Width(100), Encoding::WebpLossless),
    ];
    let rendered = render(&jpeg, &specs, &DecodeLimits::default()).unwrap();
    let dims: Vec<(u32, u32)> = rendered
        .renditions
        .iter()
        .map(|r| (r.width, r.height))
        .collect();
    // Upright, the photo is 480 x 640; the display copy is not upscaled to 2048.
    assert_eq!(dims, vec![(256, 341), (480, 640), (100, 133)]);
    for rendition in &rendered.renditions {
        let image = decode(&rendition.bytes);
        assert_eq!(image.dimensions(), (rendition.width, rendition.height));
        // Stored top (red) turned a quarter clockwise is on the right.
        let (w, h) = image.dimensions();
        assert!(
            is_red(image.get_pixel(w - 3, h / 2)),
            "{:?}",
            rendition.spec
        );
        assert!(is_blue(image.get_pixel(2, h / 2)), "{:?}", rendition.spec);
        assert!(common::gps_fields_in_file(&rendition.bytes).is_empty());
        assert!(
            !rendition
                .bytes
                .windows(4)
                .any(|w| w == b"Exif" || w == b"EXIF"),
            "no EXIF block in a rendition"
        );
    }
    assert_eq!(rendered.renditions[0].content_type, "image/jpeg");
    assert_eq!(rendered.renditions[2].content_type, "image/webp");
    assert_eq!(&rendered.renditions[2].bytes[8..12], b"WEBP");
}

#[test]
fn a_large_jpeg_is_decoded_at_reduced_size_and_still_sharp_enough() {
    // 12 megapixels, like a phone's photo.
    let jpeg = encode(&two_tone(4000, 3000), image::ImageFormat::Jpeg);
    let started = Instant::now();
    let rendered = render(
        &jpeg,
        &[RenditionSpec::new(Size::Width(256), JPEG_85)],
        &DecodeLimits::default(),
    )
    .unwrap();
    let thumb = &rendered.renditions[0];
    assert_eq!((thumb.width, thumb.height), (256, 192));
    let image = decode(&thumb.bytes);
    assert!(is_red(image.get_pixel(128, 10)));
    assert!(is_blue(image.get_pixel(128, 180)));
    eprintln!("12 MP JPEG to a 256 px thumbnail: {:?}", started.elapsed());
}

#[test]
fn a_sixteen_bit_png_renders() {
    let wide: ImageBuffer<Rgb<u16>, Vec<u16>> = ImageBuffer::from_fn(300, 200, |x, _| {
        Rgb([u16::try_from(x * 200).unwrap(), 0, 65535])
    });
    let mut png = Cursor::new(Vec::new());
    wide.write_to(&mut png, image::ImageFormat::Png).unwrap();
    let png = png.into_inner();
    assert_eq!(
        image::load_from_memory(&png).unwrap().color(),
        image::ColorType::Rgb16
    );
    let rendered = render(
        &png,
        &[RenditionSpec::new(Size::Width(100), JPEG_85)],
        &DecodeLimits::default(),
    )
    .unwrap();
    let thumb = &rendered.renditions[0];
    assert_eq!((thumb.width, thumb.height), (100, 67));
    assert!(decode(&thumb.bytes).get_pixel(50, 30)[2] > 200);
}

fn animated_gif(frames: usize) -> Vec<u8> {
    let colours = [[255, 0, 0, 255], [0, 255, 0, 255], [0, 0, 255, 255]];
    let mut out = Vec::new();
    {
        let mut encoder = image::codecs::gif::GifEncoder::new(&mut out);
        for i in 0..frames {
            let frame = image::RgbaImage::from_pixel(50, 40, image::Rgba(colours[i % 3]));
            encoder.encode_frame(image::Frame::new(frame)).unwrap();
        }
    }
    out
}

#[test]
fn an_animated_gif_gives_its_first_frame() {
    let gif = animated_gif(3);
    let info = probe(&gif).unwrap();
    assert_eq!(
        (info.format, info.width, info.height),
        (ImageFormat::Gif, 50, 40)
    );
    let rendered = render(
        &gif,
        &[RenditionSpec::new(Size::Width(256), Encoding::WebpLossless)],
        &DecodeLimits::default(),
    )
    .unwrap();
    let thumb = &rendered.renditions[0];
    assert_eq!((thumb.width, thumb.height), (50, 40));
    let pixel = decode(&thumb.bytes).get_pixel(25, 20);
    assert_eq!((pixel[0], pixel[1], pixel[2]), (255, 0, 0));
}

#[test]
fn an_animation_with_too_many_frames_is_refused() {
    let gif = animated_gif(5);
    let mut limits = DecodeLimits::default();
    limits.max_frames = 4;
    assert_eq!(
        render(
            &gif,
            &[RenditionSpec::new(Size::Width(10), JPEG_85)],
            &limits
        ),
        Err(ImagingError::TooManyFrames {
            frames: 5,
            max_frames: 4
        })
    );
}

#[test]
fn a_decompression_bomb_is_refused_from_its_header_at_once() {
    // 100000 x 100000 RGB declared, a few bytes of compressed data.
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut bomb = b"\x89PNG\r\n\x1a\n".to_vec();
    bomb.extend(png_chunk(b"IHDR", &ihdr));
    bomb.extend(png_chunk(
        b"IDAT",
        &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
    ));
    bomb.extend(png_chunk(b"IEND", &[]));
    assert!(bomb.len() < 100);

    let started = Instant::now();
    let result = render(
        &bomb,
        &[RenditionSpec::new(Size::Width(256), JPEG_85)],
        &DecodeLimits::default(),
    );
    assert_eq!(
        result,
        Err(ImagingError::TooManyPixels {
            width: 100_000,
            height: 100_000,
            max_pixels: 100_000_000
        })
    );
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[test]
fn garbage_that_looks_like_a_jpeg_is_a_decode_error() {
    let mut broken = jpeg_with_exif(64, 48, 1);
    broken.truncate(400);
    assert!(matches!(
        render(
            &broken,
            &[RenditionSpec::new(Size::Width(32), JPEG_85)],
            &DecodeLimits::default()
        ),
        Err(ImagingError::Decode {
            format: ImageFormat::Jpeg,
            ..
        })
    ));
}
