//! Fixtures: real images encoded by the `image` crate, with EXIF written by a hand-built TIFF
//! block (always available) or by exiftool (the tool tests).

#![allow(dead_code, unreachable_pub, missing_docs, clippy::unwrap_used)]

use std::io::Cursor;

use image::{ImageBuffer, Rgb, RgbImage};

/// The GPS position the fixtures carry: 48° 51' 24" N, 2° 21' 8" E.
pub const LATITUDE: [(u32, u32); 3] = [(48, 1), (51, 1), (24, 1)];
pub const LONGITUDE: [(u32, u32); 3] = [(2, 1), (21, 1), (8, 1)];

/// A little-endian TIFF block: IFD0 with Orientation and a GPS pointer, and a GPS directory
/// with version, latitude and longitude (the rationals stored out of line).
pub fn exif_tiff(orientation: u16) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend_from_slice(b"II*\0");
    t.extend_from_slice(&8u32.to_le_bytes());
    // IFD0 at 8: two entries, ends at 8 + 2 + 24 + 4 = 38.
    t.extend_from_slice(&2u16.to_le_bytes());
    entry(&mut t, 0x0112, 3, 1, u32::from(orientation));
    entry(&mut t, 0x8825, 4, 1, 38);
    t.extend_from_slice(&0u32.to_le_bytes());
    // GPS IFD at 38: five entries, ends at 38 + 2 + 60 + 4 = 104.
    t.extend_from_slice(&5u16.to_le_bytes());
    entry(&mut t, 0x0000, 1, 4, u32::from_le_bytes([2, 2, 0, 0]));
    entry(&mut t, 0x0001, 2, 2, u32::from_le_bytes([b'N', 0, 0, 0]));
    entry(&mut t, 0x0002, 5, 3, 104);
    entry(&mut t, 0x0003, 2, 2, u32::from_le_bytes([b'E', 0, 0, 0]));
    entry(&mut t, 0x0004, 5, 3, 128);
    t.extend_from_slice(&0u32.to_le_bytes());
    assert_eq!(t.len(), 104);
    for (n, d) in LATITUDE.into_iter().chain(LONGITUDE) {
        t.extend_from_slice(&n.to_le_bytes());
        t.extend_from_slice(&d.to_le_bytes());
    }
    t
}

fn entry(t: &mut Vec<u8>, tag: u16, kind: u16, count: u32, value: u32) {
    t.extend_from_slice(&tag.to_le_bytes());
    t.extend_from_slice(&kind.to_le_bytes());
    t.extend_from_slice(&count.to_le_bytes());
    t.extend_from_slice(&value.to_le_bytes());
}

/// A `width` x `height` picture: top half red, bottom half blue, so orientation shows.
pub fn two_tone(width: u32, height: u32) -> RgbImage {
    ImageBuffer::from_fn(width, height, |_, y| {
        if y < height / 2 {
            Rgb([220, 20, 20])
        } else {
            Rgb([20, 20, 220])
        }
    })
}

pub fn encode(image: &RgbImage, format: image::ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    image.write_to(&mut out, format).unwrap();
    out.into_inner()
}

/// A JPEG with an APP1 Exif segment (GPS and the given orientation) right after SOI.
pub fn jpeg_with_exif(width: u32, height: u32, orientation: u16) -> Vec<u8> {
    let plain = encode(&two_tone(width, height), image::ImageFormat::Jpeg);
    let tiff = exif_tiff(orientation);
    let mut out = plain[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&u16::try_from(2 + 6 + tiff.len()).unwrap().to_be_bytes());
    out.extend_from_slice(b"Exif\0\0");
    out.extend_from_slice(&tiff);
    out.extend_from_slice(&plain[2..]);
    out
}

pub fn png_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut chunk = u32::try_from(data.len()).unwrap().to_be_bytes().to_vec();
    chunk.extend_from_slice(kind);
    chunk.extend_from_slice(data);
    let crc = crc32fast::hash(&chunk[4..]);
    chunk.extend_from_slice(&crc.to_be_bytes());
    chunk
}

/// A PNG with an `eXIf` chunk after IHDR.
pub fn png_with_exif(width: u32, height: u32) -> Vec<u8> {
    let plain = encode(&two_tone(width, height), image::ImageFormat::Png);
    // Signature (8) and IHDR (25).
    let mut out = plain[..33].to_vec();
    out.extend(png_chunk(b"eXIf", &exif_tiff(1)));
    out.extend_from_slice(&plain[33..]);
    out
}

/// A lossless WebP with an `EXIF` chunk appended (RIFF size corrected).
pub fn webp_with_exif(width: u32, height: u32) -> Vec<u8> {
    let mut out = encode(&two_tone(width, height), image::ImageFormat::WebP);
    let tiff = exif_tiff(1);
    out.extend_from_slice(b"EXIF");
    out.extend_from_slice(&u32::try_from(tiff.len()).unwrap().to_le_bytes());
    out.extend_from_slice(&tiff);
    if tiff.len() % 2 == 1 {
        out.push(0);
    }
    let riff = u32::try_from(out.len() - 8).unwrap();
    out[4..8].copy_from_slice(&riff.to_le_bytes());
    out
}

/// Runs a GpsBlanker over `bytes` cut at the given chunk sizes (cycled).
pub fn blank_in_chunks(bytes: &[u8], sizes: &[usize]) -> (Vec<u8>, plugs_imaging::GpsOutcome) {
    let mut blanker = plugs_imaging::GpsBlanker::new();
    let mut out = Vec::new();
    let mut rest = bytes;
    let mut i = 0;
    while !rest.is_empty() {
        let n = sizes[i % sizes.len()].clamp(1, rest.len());
        out.extend(blanker.push(&rest[..n]));
        rest = &rest[n..];
        i += 1;
    }
    let (tail, outcome) = blanker.finish();
    out.extend(tail);
    (out, outcome)
}

/// The GPS fields kamadak-exif finds in a TIFF block.
pub fn gps_fields_in_tiff(tiff: &[u8]) -> Vec<exif::Tag> {
    let exif = exif::Reader::new().read_raw(tiff.to_vec()).unwrap();
    exif.fields()
        .filter(|f| f.ifd_num == exif::In::PRIMARY && f.tag.context() == exif::Context::Gps)
        .map(|f| f.tag)
        .collect()
}

/// The GPS fields kamadak-exif finds in a whole file (JPEG, PNG, WebP), none if no EXIF.
pub fn gps_fields_in_file(bytes: &[u8]) -> Vec<exif::Tag> {
    match exif::Reader::new().read_from_container(&mut Cursor::new(bytes)) {
        Ok(exif) => exif
            .fields()
            .filter(|f| f.tag.context() == exif::Context::Gps)
            .map(|f| f.tag)
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// A tool on PATH, or None (and the test then fails unless missing tools are allowed, as
/// missing servers are: PLUGS_TEST_ALLOW_MISSING_SERVERS=1).
pub fn tool(name: &str) -> Option<String> {
    let found = std::process::Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    if found.is_none() {
        assert!(
            std::env::var_os("PLUGS_TEST_ALLOW_MISSING_SERVERS").is_some(),
            "{name} is not installed (apt-get install -y libimage-exiftool-perl); set \
             PLUGS_TEST_ALLOW_MISSING_SERVERS=1 to skip"
        );
        eprintln!("SKIPPED: {name} is not installed");
    }
    found
}
