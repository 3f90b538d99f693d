//! GPS blanking in a stream, on JPEG, PNG and WebP files cut into chunks of many sizes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{
    blank_in_chunks, gps_fields_in_file, gps_fields_in_tiff, jpeg_with_exif, png_with_exif,
    webp_with_exif,
};
use plugs_imaging::{GpsBlanker, GpsOutcome, Orientation, probe};
use proptest::prelude::*;

/// Bytes that differ between two equally long buffers, as one range (first..last+1).
fn changed_span(a: &[u8], b: &[u8]) -> Option<std::ops::Range<usize>> {
    assert_eq!(a.len(), b.len());
    let first = a.iter().zip(b).position(|(x, y)| x != y)?;
    let last = a.iter().zip(b).rposition(|(x, y)| x != y)?;
    Some(first..last + 1)
}

/// Where the TIFF block of the fixture JPEG lies: after SOI (2), APP1 header (4) and "Exif\0\0".
const JPEG_TIFF_START: usize = 2 + 4 + 6;

#[test]
fn gps_is_blanked_in_a_jpeg_whatever_the_chunk_sizes() {
    let original = jpeg_with_exif(320, 240, 6);
    assert_eq!(
        gps_fields_in_file(&original).len(),
        5,
        "the fixture carries GPS"
    );
    let splits: [&[usize]; 5] = [&[1], &[2, 3, 5, 7], &[11], &[4096], &[original.len()]];
    let mut outputs = Vec::new();
    for sizes in splits {
        let (out, outcome) = blank_in_chunks(&original, sizes);
        assert_eq!(outcome, GpsOutcome::Blanked, "{sizes:?}");
        assert_eq!(out.len(), original.len());
        outputs.push(out);
    }
    assert!(
        outputs.windows(2).all(|w| w[0] == w[1]),
        "chunking changes nothing"
    );
    let out = &outputs[0];
    assert!(gps_fields_in_file(out).is_empty());
    // Only the GPS directory and its values changed: from the GPS IFD (38) to the end of the
    // rationals (152), inside the TIFF block.
    let span = changed_span(&original, out).unwrap();
    assert!(
        span.start >= JPEG_TIFF_START + 38 && span.end <= JPEG_TIFF_START + 152,
        "{span:?}"
    );
    // The orientation survives, and the picture still decodes as before.
    assert_eq!(probe(out).unwrap().orientation, Orientation::Rotate90);
    assert_eq!(
        image::load_from_memory(out).unwrap().to_rgb8(),
        image::load_from_memory(&original).unwrap().to_rgb8()
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn any_chunking_gives_the_same_blanked_bytes(sizes in prop::collection::vec(1usize..300, 1..20)) {
        let original = jpeg_with_exif(64, 48, 6);
        let (whole, _) = blank_in_chunks(&original, &[original.len()]);
        let (out, outcome) = blank_in_chunks(&original, &sizes);
        prop_assert_eq!(outcome, GpsOutcome::Blanked);
        prop_assert_eq!(out, whole);
    }
}

#[test]
fn the_push_output_never_holds_back_more_than_one_exif_block() {
    let original = jpeg_with_exif(320, 240, 1);
    let mut blanker = GpsBlanker::new();
    let mut released = 0;
    for (i, chunk) in original.chunks(100).enumerate() {
        released += blanker.push(chunk).len();
        let received = (i + 1) * 100;
        assert!(received.min(original.len()) - released <= 64 * 1024 + 100);
    }
    // Past the EXIF block and the scan start, everything is released at once.
    assert_eq!(released, original.len());
    let (rest, outcome) = blanker.finish();
    assert!(rest.is_empty());
    assert_eq!(outcome, GpsOutcome::Blanked);
}

#[test]
fn gps_is_blanked_in_a_png_and_its_chunk_crc_rewritten() {
    let original = png_with_exif(40, 30);
    for sizes in [&[1][..], &[9, 13], &[100_000]] {
        let (out, outcome) = blank_in_chunks(&original, sizes);
        assert_eq!(outcome, GpsOutcome::Blanked);
        assert_eq!(out.len(), original.len());
        // The eXIf chunk: after signature (8) and IHDR (25).
        let exif_len = u32::from_be_bytes(out[33..37].try_into().unwrap()) as usize;
        assert_eq!(&out[37..41], b"eXIf");
        let data = &out[41..41 + exif_len];
        assert!(gps_fields_in_tiff(data).is_empty());
        let crc = u32::from_be_bytes(out[41 + exif_len..45 + exif_len].try_into().unwrap());
        assert_eq!(
            crc,
            crc32fast::hash(&out[37..41 + exif_len]),
            "CRC rewritten"
        );
        assert_eq!(&out[..33], &original[..33]);
        assert_eq!(&out[45 + exif_len..], &original[45 + exif_len..]);
        assert_eq!(
            image::load_from_memory(&out).unwrap().to_rgb8(),
            image::load_from_memory(&original).unwrap().to_rgb8()
        );
    }
}

#[test]
fn gps_is_blanked_in_a_webp_exif_chunk() {
    let original = webp_with_exif(40, 30);
    let (out, outcome) = blank_in_chunks(&original, &[7]);
    assert_eq!(outcome, GpsOutcome::Blanked);
    assert_eq!(out.len(), original.len());
    let tiff_start = out.windows(4).rposition(|w| w == b"EXIF").unwrap() + 8;
    assert!(!gps_fields_in_tiff(&original[tiff_start..]).is_empty());
    assert!(gps_fields_in_tiff(&out[tiff_start..]).is_empty());
    assert_eq!(&out[..tiff_start], &original[..tiff_start]);
    assert_eq!(
        image::load_from_memory(&out).unwrap().to_rgb8(),
        image::load_from_memory(&original).unwrap().to_rgb8()
    );
}

#[test]
fn files_without_gps_or_of_other_formats_pass_unchanged() {
    let plain_jpeg = common::encode(&common::two_tone(50, 40), image::ImageFormat::Jpeg);
    let plain_png = common::encode(&common::two_tone(50, 40), image::ImageFormat::Png);
    let cases: [(&[u8], GpsOutcome); 5] = [
        (&plain_jpeg, GpsOutcome::NotFound),
        (&plain_png, GpsOutcome::NotFound),
        (
            b"%PDF-1.7\n% a document, not a picture\n",
            GpsOutcome::Unsupported,
        ),
        (b"\xff\xd8", GpsOutcome::Unsupported),
        (b"", GpsOutcome::Unsupported),
    ];
    for (bytes, expected) in cases {
        for sizes in [&[1][..], &[5], &[1 << 20]] {
            let (out, outcome) = blank_in_chunks(bytes, sizes);
            assert_eq!(outcome, expected);
            assert!(!outcome.changed());
            assert_eq!(out, bytes);
        }
    }
}

#[test]
fn malformed_or_cut_short_exif_passes_unchanged() {
    // The GPS pointer leads outside the block.
    let mut bad_pointer = jpeg_with_exif(50, 40, 1);
    let pointer_value = JPEG_TIFF_START + 8 + 2 + 12 + 8;
    bad_pointer[pointer_value..pointer_value + 4].copy_from_slice(&60_000u32.to_le_bytes());
    // Cut inside the EXIF block.
    let cut = jpeg_with_exif(50, 40, 1)[..80].to_vec();
    // A PNG whose eXIf CRC is already wrong is not "repaired".
    let mut bad_crc = png_with_exif(20, 10);
    let crc_at = 33 + 8 + common::exif_tiff(1).len();
    bad_crc[crc_at] ^= 0xFF;
    for bytes in [bad_pointer, cut, bad_crc] {
        for sizes in [&[1][..], &[1 << 20]] {
            let (out, outcome) = blank_in_chunks(&bytes, sizes);
            assert_eq!(outcome, GpsOutcome::GaveUp);
            assert_eq!(out, bytes);
        }
    }
}

#[test]
fn exiftool_sees_no_gps_after_blanking_a_file_it_wrote() {
    let Some(exiftool) = common::tool("exiftool") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("photo.jpg");
    std::fs::write(
        &source,
        common::encode(&common::two_tone(320, 240), image::ImageFormat::Jpeg),
    )
    .unwrap();
    let status = std::process::Command::new(&exiftool)
        .args([
            "-q",
            "-overwrite_original",
            "-GPSLatitude=48.8566",
            "-GPSLatitudeRef=N",
            "-GPSLongitude=2.3522",
            "-GPSLongitudeRef=E",
            "-GPSAltitude=35",
            "-Orientation#=6",
            "-Make=Plugs",
        ])
        .arg(&source)
        .status()
        .unwrap();
    assert!(status.success());
    let original = std::fs::read(&source).unwrap();
    let gps = |path: &std::path::Path| {
        let output = std::process::Command::new(&exiftool)
            .args([
                "-s",
                "-s",
                "-GPSLatitude",
                "-GPSLongitude",
                "-GPS:all",
                "-Make",
                "-Orientation#",
            ])
            .arg(path)
            .output()
            .unwrap();
        String::from_utf8(output.stdout).unwrap()
    };
    let before = gps(&source);
    assert!(before.contains("GPSLatitude: 48"), "{before}");

    let (out, outcome) = blank_in_chunks(&original, &[3, 1000, 17]);
    assert_eq!(outcome, GpsOutcome::Blanked);
    assert_eq!(out.len(), original.len());
    let blanked = dir.path().join("blanked.jpg");
    std::fs::write(&blanked, &out).unwrap();
    let after = gps(&blanked);
    assert!(!after.contains("GPS"), "{after}");
    assert!(after.contains("Make: Plugs"), "{after}");
    assert!(after.contains("Orientation: 6"), "{after}");
    assert_eq!(
        image::load_from_memory(&out).unwrap().to_rgb8(),
        image::load_from_memory(&original).unwrap().to_rgb8()
    );
}

#[test]
fn the_head_of_a_jpeg_settles_the_outcome_for_the_whole_file() {
    let original = jpeg_with_exif(320, 240, 6);
    // Up to and including the EXIF block: blanked, but the scan has not been reached.
    let mut blanker = GpsBlanker::new();
    let _ = blanker.push(&original[..JPEG_TIFF_START + 160]);
    assert!(blanker.has_blanked());
    // Through the start of scan: nothing later can carry EXIF.
    let mut blanker = GpsBlanker::new();
    let _ = blanker.push(&original[..start_of_scan(&original) + 2]);
    assert!(blanker.has_blanked() && blanker.is_settled());

    let plain = common::encode(&common::two_tone(64, 48), image::ImageFormat::Jpeg);
    let mut blanker = GpsBlanker::new();
    let _ = blanker.push(&plain[..1]);
    assert!(!blanker.is_settled(), "one byte tells nothing");
    let _ = blanker.push(&plain[1..start_of_scan(&plain) + 2]);
    assert!(blanker.is_settled() && !blanker.has_blanked());

    let mut blanker = GpsBlanker::new();
    let _ = blanker.push(b"%PDF-1.7 not an image");
    assert!(blanker.is_settled() && !blanker.has_blanked());
}

/// Where a JPEG's start-of-scan marker is.
fn start_of_scan(jpeg: &[u8]) -> usize {
    jpeg.windows(2).position(|w| w == [0xFF, 0xDA]).unwrap()
}
