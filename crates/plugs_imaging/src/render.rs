//! Decoding under limits, orientation, resizing and encoding: from an original to its renditions.

use std::io::Cursor;

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::{DynamicImage, ExtendedColorType, ImageBuffer, Luma, RgbImage, RgbaImage};

use crate::{ImageFormat, ImageInfo, ImagingError, probe};

/// What a hostile or merely huge file may cost. Checked from the headers before any pixel is
/// decoded, and enforced again by the decoders' allocation limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct DecodeLimits {
    /// Most pixels (width times height) an original may declare: the guard against
    /// decompression bombs, such as a tiny PNG that declares 100000 x 100000.
    pub max_pixels: u64,
    /// Most frames an animation (GIF, WebP) may have. Only the first is decoded, but a file of
    /// a million empty frames is hostile all the same.
    pub max_frames: u32,
    /// Most bytes a decoder may allocate.
    pub max_alloc_bytes: u64,
}

impl Default for DecodeLimits {
    /// 100 megapixels (phones make up to about 50 in their largest mode), 1000 frames, 1 GiB.
    fn default() -> Self {
        Self {
            max_pixels: 100_000_000,
            max_frames: 1000,
            max_alloc_bytes: 1 << 30,
        }
    }
}

impl DecodeLimits {
    /// Limits with the given pixel maximum and the defaults otherwise.
    #[must_use]
    pub fn with_max_pixels(max_pixels: u64) -> Self {
        Self {
            max_pixels,
            ..Self::default()
        }
    }
}

/// How big a rendition is, in the upright image (orientation applied). Never bigger than the
/// original: an image smaller than asked keeps its own size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Size {
    /// This width, the height following the aspect ratio (thumbnails).
    Width(u32),
    /// This length for the longer edge (display copies).
    LongEdge(u32),
}

/// How a rendition is encoded. No metadata is ever written: no EXIF, no ICC profile, no XMP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Encoding {
    /// Baseline JPEG at this quality (1 to 100). Transparency is flattened onto white.
    Jpeg {
        /// 1 to 100; 80 to 85 suit photographs.
        quality: u8,
    },
    /// Lossless WebP, which is what the pure-Rust encoder of `image` writes. Lossy WebP needs
    /// the C libwebp, so display copies of photographs should use [`Encoding::Jpeg`].
    WebpLossless,
}

impl Encoding {
    /// The content type of the encoded bytes.
    #[must_use]
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Jpeg { .. } => "image/jpeg",
            Self::WebpLossless => "image/webp",
        }
    }
}

/// One rendition to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RenditionSpec {
    /// Its size.
    pub size: Size,
    /// Its encoding.
    pub encoding: Encoding,
}

impl RenditionSpec {
    /// A rendition of this size and encoding.
    #[must_use]
    pub fn new(size: Size, encoding: Encoding) -> Self {
        Self { size, encoding }
    }
}

/// An encoded rendition.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Rendition {
    /// The spec it was made for.
    pub spec: RenditionSpec,
    /// Its width in pixels.
    pub width: u32,
    /// Its height in pixels.
    pub height: u32,
    /// Its content type (`image/jpeg`, `image/webp`).
    pub content_type: &'static str,
    /// The encoded bytes, without metadata.
    pub bytes: Vec<u8>,
}

/// An original's header facts and its renditions.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Rendered {
    /// What the original is (its stored dimensions and orientation).
    pub info: ImageInfo,
    /// One rendition per spec, in the order asked.
    pub renditions: Vec<Rendition>,
}

/// Decodes an original once, under `limits`, turns it upright and makes every rendition of
/// `specs` from it.
///
/// The original is decoded only as large as the largest rendition needs: JPEGs are decoded at
/// reduced size (1/2, 1/4 or 1/8, by scaling the DCT) when that is still at least as large,
/// which is most of the cost of a thumbnail. GIFs and animated WebPs give their first frame.
///
/// # Errors
/// [`ImagingError::UnsupportedFormat`], [`ImagingError::TooManyPixels`] (from the header alone,
/// before decoding), [`ImagingError::TooManyFrames`], [`ImagingError::Decode`] and
/// [`ImagingError::Render`].
pub fn render(
    bytes: &[u8],
    specs: &[RenditionSpec],
    limits: &DecodeLimits,
) -> Result<Rendered, ImagingError> {
    render_oriented(bytes, specs, limits, true)
}

/// [`render`] of an image whose pixels are already upright, whatever EXIF orientation it
/// carries: what an external decoder wrote (`heif-convert` applies a HEIF's rotation and
/// mirroring itself but copies the EXIF block, whose orientation a HEIF reader must ignore, into
/// its PNG). [`Rendered::info`] then says [`crate::Orientation::Normal`].
///
/// # Errors
/// As [`render`].
pub fn render_upright(
    bytes: &[u8],
    specs: &[RenditionSpec],
    limits: &DecodeLimits,
) -> Result<Rendered, ImagingError> {
    render_oriented(bytes, specs, limits, false)
}

fn render_oriented(
    bytes: &[u8],
    specs: &[RenditionSpec],
    limits: &DecodeLimits,
    exif_orientation: bool,
) -> Result<Rendered, ImagingError> {
    let mut info = probe(bytes)?;
    if !exif_orientation {
        info.orientation = crate::Orientation::Normal;
    }
    check_limits(bytes, &info, limits)?;
    let (upright_w, upright_h) = info.upright_dimensions();
    let targets: Vec<(u32, u32)> = specs
        .iter()
        .map(|spec| target_dimensions(upright_w, upright_h, spec.size))
        .collect();
    // The fraction of the original the largest rendition needs, per axis alike.
    let needed = targets
        .iter()
        .map(|&(w, _)| f64::from(w) / f64::from(upright_w.max(1)))
        .fold(0.0_f64, f64::max)
        .min(1.0);
    let mut image = decode(bytes, &info, needed, limits)?;
    image.apply_orientation(info.orientation.to_image());
    // Alpha is kept only where there is some: most photographs have none, and RGB is a
    // quarter less to resize.
    let upright = if image.color().has_alpha() {
        Pixels::Rgba(image.to_rgba8())
    } else {
        Pixels::Rgb(image.to_rgb8())
    };
    drop(image);
    let mut resizer = Resizer::new();
    let mut renditions = Vec::with_capacity(specs.len());
    for (spec, &(width, height)) in specs.iter().zip(&targets) {
        let (pixels, color) = match &upright {
            Pixels::Rgb(rgb) => (
                resize(&mut resizer, rgb, PixelType::U8x3, width, height)?,
                ExtendedColorType::Rgb8,
            ),
            Pixels::Rgba(rgba) => (
                resize(&mut resizer, rgba, PixelType::U8x4, width, height)?,
                ExtendedColorType::Rgba8,
            ),
        };
        let bytes = encode(pixels, color, width, height, spec.encoding)?;
        renditions.push(Rendition {
            spec: *spec,
            width,
            height,
            content_type: spec.encoding.content_type(),
            bytes,
        });
    }
    Ok(Rendered { info, renditions })
}

enum Pixels {
    Rgb(RgbImage),
    Rgba(RgbaImage),
}

/// The size of a rendition of an upright `width` x `height` image: aspect kept, never upscaled,
/// at least one pixel each way.
#[must_use]
pub fn target_dimensions(width: u32, height: u32, size: Size) -> (u32, u32) {
    let (width, height) = (width.max(1), height.max(1));
    let scale = match size {
        Size::Width(w) => f64::from(w) / f64::from(width),
        Size::LongEdge(edge) => f64::from(edge) / f64::from(width.max(height)),
    }
    .min(1.0);
    if scale >= 1.0 {
        return (width, height);
    }
    let scaled = |side: u32| {
        // Rounded, within 1..=side: the casts cannot truncate anything that matters.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let value = (f64::from(side) * scale).round() as u32;
        value.clamp(1, side)
    };
    (scaled(width), scaled(height))
}

fn check_limits(bytes: &[u8], info: &ImageInfo, limits: &DecodeLimits) -> Result<(), ImagingError> {
    if info.pixels() > limits.max_pixels {
        return Err(ImagingError::TooManyPixels {
            width: info.width,
            height: info.height,
            max_pixels: limits.max_pixels,
        });
    }
    let frames = match info.format {
        ImageFormat::Gif => crate::frames::gif_frames(bytes, limits.max_frames),
        ImageFormat::Webp => crate::frames::webp_frames(bytes, limits.max_frames),
        ImageFormat::Jpeg | ImageFormat::Png => 1,
    };
    if frames > limits.max_frames {
        return Err(ImagingError::TooManyFrames {
            frames,
            max_frames: limits.max_frames,
        });
    }
    Ok(())
}

fn decode(
    bytes: &[u8],
    info: &ImageInfo,
    needed: f64,
    limits: &DecodeLimits,
) -> Result<DynamicImage, ImagingError> {
    if info.format == ImageFormat::Jpeg
        && let Some(image) = decode_jpeg_scaled(bytes, info, needed, limits)?
    {
        return Ok(image);
    }
    let mut reader = image::ImageReader::with_format(Cursor::new(bytes), info.format.to_image());
    let mut image_limits = image::Limits::default();
    image_limits.max_alloc = Some(limits.max_alloc_bytes);
    reader.limits(image_limits);
    reader.decode().map_err(|e| ImagingError::Decode {
        format: info.format,
        reason: e.to_string(),
    })
}

/// Decodes a JPEG at the smallest DCT scale (1/8 to 1) that still gives at least `needed` of
/// each side. `None` for the colour models it does not convert (CMYK), which then take the
/// full-size path.
fn decode_jpeg_scaled(
    bytes: &[u8],
    info: &ImageInfo,
    needed: f64,
    limits: &DecodeLimits,
) -> Result<Option<DynamicImage>, ImagingError> {
    let fail = |e: jpeg_decoder::Error| ImagingError::Decode {
        format: ImageFormat::Jpeg,
        reason: e.to_string(),
    };
    let mut decoder = jpeg_decoder::Decoder::new(Cursor::new(bytes));
    decoder.set_max_decoding_buffer_size(
        usize::try_from(limits.max_alloc_bytes).unwrap_or(usize::MAX),
    );
    decoder.read_info().map_err(fail)?;
    let request = |side: u32| {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let value = (f64::from(side) * needed).ceil() as u32;
        u16::try_from(value.clamp(1, side)).unwrap_or(u16::MAX)
    };
    let (width, height) = decoder
        .scale(request(info.width), request(info.height))
        .map_err(fail)?;
    let pixels = decoder.decode().map_err(fail)?;
    let Some(decoded) = decoder.info() else {
        return Ok(None);
    };
    let (width, height) = (u32::from(width), u32::from(height));
    let bad_size = || ImagingError::Decode {
        format: ImageFormat::Jpeg,
        reason: "the decoder gave fewer pixels than its dimensions".to_string(),
    };
    let image = match decoded.pixel_format {
        jpeg_decoder::PixelFormat::RGB24 => {
            DynamicImage::ImageRgb8(RgbImage::from_raw(width, height, pixels).ok_or_else(bad_size)?)
        }
        jpeg_decoder::PixelFormat::L8 => DynamicImage::ImageLuma8(
            ImageBuffer::<Luma<u8>, _>::from_raw(width, height, pixels).ok_or_else(bad_size)?,
        ),
        jpeg_decoder::PixelFormat::L16 => {
            let wide: Vec<u16> = pixels
                .chunks_exact(2)
                .map(|pair| u16::from_be_bytes([pair[0], pair[1]]))
                .collect();
            DynamicImage::ImageLuma16(
                ImageBuffer::<Luma<u16>, _>::from_raw(width, height, wide).ok_or_else(bad_size)?,
            )
        }
        jpeg_decoder::PixelFormat::CMYK32 => return Ok(None),
    };
    Ok(Some(image))
}

fn resize<P: image::Pixel<Subpixel = u8>>(
    resizer: &mut Resizer,
    source: &ImageBuffer<P, Vec<u8>>,
    pixel_type: PixelType,
    width: u32,
    height: u32,
) -> Result<Vec<u8>, ImagingError> {
    if source.dimensions() == (width, height) {
        return Ok(source.as_raw().clone());
    }
    let fail = |reason: String| ImagingError::Render { reason };
    let src = ImageRef::new(source.width(), source.height(), source.as_raw(), pixel_type)
        .map_err(|e| fail(e.to_string()))?;
    let mut dst = Image::new(width, height, pixel_type);
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Lanczos3));
    resizer
        .resize(&src, &mut dst, &options)
        .map_err(|e| fail(e.to_string()))?;
    Ok(dst.into_vec())
}

fn encode(
    pixels: Vec<u8>,
    color: ExtendedColorType,
    width: u32,
    height: u32,
    encoding: Encoding,
) -> Result<Vec<u8>, ImagingError> {
    let fail = |e: image::ImageError| ImagingError::Render {
        reason: e.to_string(),
    };
    let mut out = Vec::new();
    match encoding {
        Encoding::Jpeg { quality } => {
            let (pixels, color) = if color == ExtendedColorType::Rgba8 {
                (flatten_on_white(pixels), ExtendedColorType::Rgb8)
            } else {
                (pixels, color)
            };
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality.clamp(1, 100))
                .encode(&pixels, width, height, color)
                .map_err(fail)?;
        }
        Encoding::WebpLossless => {
            image::codecs::webp::WebPEncoder::new_lossless(&mut out)
                .encode(&pixels, width, height, color)
                .map_err(fail)?;
        }
    }
    Ok(out)
}

/// RGBA to RGB over a white background: JPEG has no transparency, and the colour under a
/// transparent pixel is often black.
fn flatten_on_white(rgba: Vec<u8>) -> Vec<u8> {
    rgba.chunks_exact(4)
        .flat_map(|p| {
            let alpha = u16::from(p[3]);
            let blend = move |c: u8| {
                let value = (u16::from(c) * alpha + 255 * (255 - alpha) + 127) / 255;
                u8::try_from(value).unwrap_or(u8::MAX)
            };
            [blend(p[0]), blend(p[1]), blend(p[2])]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_keep_the_aspect_and_never_upscale() {
        assert_eq!(target_dimensions(4000, 3000, Size::Width(256)), (256, 192));
        assert_eq!(
            target_dimensions(3000, 4000, Size::LongEdge(2048)),
            (1536, 2048)
        );
        assert_eq!(target_dimensions(100, 50, Size::Width(256)), (100, 50));
        assert_eq!(target_dimensions(10000, 1, Size::Width(256)), (256, 1));
    }

    #[test]
    fn a_jpeg_is_decoded_at_the_smallest_dct_scale_that_is_large_enough() {
        let mut jpeg = std::io::Cursor::new(Vec::new());
        RgbImage::new(800, 600)
            .write_to(&mut jpeg, image::ImageFormat::Jpeg)
            .unwrap();
        let jpeg = jpeg.into_inner();
        let info = crate::probe(&jpeg).unwrap();
        let limits = DecodeLimits::default();
        let eighth = decode(&jpeg, &info, 0.1, &limits).unwrap();
        assert_eq!((eighth.width(), eighth.height()), (100, 75));
        let half = decode(&jpeg, &info, 0.3, &limits).unwrap();
        assert_eq!((half.width(), half.height()), (400, 300));
        let full = decode(&jpeg, &info, 1.0, &limits).unwrap();
        assert_eq!((full.width(), full.height()), (800, 600));
    }

    #[test]
    fn transparency_is_flattened_onto_white() {
        assert_eq!(
            flatten_on_white(vec![0, 0, 0, 0, 10, 20, 30, 255]),
            vec![255, 255, 255, 10, 20, 30]
        );
    }
}
