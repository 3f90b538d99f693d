//! Location stripping through the service, over the in-memory repository and store: a form
//! upload's GPS position is blanked as it streams in, a resumable upload's when it is finalized
//! (the head read, the object rewritten once), and the record's checksum is of the bytes stored.
//! Direct uploads share that finalize step; they are tested end to end in plugs-api's
//! `location.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Cursor;
use std::sync::Arc;

use base64::Engine as _;
use common::{Harness, body, sha256_hex};
use plugs_domain::{EventId, EventMedia, MediaPolicy};
use plugs_media::{MediaService, ServiceConfig, TusChunk, TusCreate, UploadRequest};
use plugs_persistence::InMemoryTusRepository;
use plugs_storage::{ObjectKey, ObjectStoreExt as _};

/// A complete 1x1 greyscale JFIF JPEG, after its SOI marker.
const JPEG_AFTER_SOI: &[u8] = b"\xff\xe0\x00\x10\x4a\x46\x49\x46\x00\x01\x01\x01\x00\x48\x00\x48\x00\x00\xff\xdb\x00\x43\x00\x03\x02\x02\x02\x02\x02\x03\x02\x02\x02\x03\x03\x03\x03\x04\x06\x04\x04\x04\x04\x04\x08\x06\x06\x05\x06\x09\x08\x0a\x0a\x09\x08\x09\x09\x0a\x0c\x0f\x0c\x0a\x0b\x0e\x0b\x09\x09\x0d\x11\x0d\x0e\x0f\x10\x10\x11\x10\x0a\x0c\x12\x13\x12\x10\x13\x0f\x10\x10\x10\xff\xc9\x00\x0b\x08\x00\x01\x00\x01\x01\x01\x11\x00\xff\xcc\x00\x06\x00\x10\x10\x05\xff\xda\x00\x08\x01\x01\x00\x00\x3f\x00\xd2\xcf\x20\xff\xd9";

/// A little-endian TIFF block: IFD0 with a GPS pointer, and a GPS directory with latitude and
/// longitude (their rationals out of line) when `gps`; IFD0 with an orientation only otherwise.
fn exif_tiff(gps: bool) -> Vec<u8> {
    let entry = |t: &mut Vec<u8>, tag: u16, kind: u16, count: u32, value: u32| {
        t.extend_from_slice(&tag.to_le_bytes());
        t.extend_from_slice(&kind.to_le_bytes());
        t.extend_from_slice(&count.to_le_bytes());
        t.extend_from_slice(&value.to_le_bytes());
    };
    let mut t = b"II*\0".to_vec();
    t.extend_from_slice(&8u32.to_le_bytes());
    t.extend_from_slice(&2u16.to_le_bytes());
    entry(&mut t, 0x0112, 3, 1, 1);
    if gps {
        entry(&mut t, 0x8825, 4, 1, 38);
    } else {
        // ImageWidth instead of the GPS pointer.
        entry(&mut t, 0x0100, 4, 1, 1);
    }
    t.extend_from_slice(&0u32.to_le_bytes());
    if gps {
        // GPS IFD at 38: four entries, ends at 38 + 2 + 48 + 4 = 92.
        t.extend_from_slice(&4u16.to_le_bytes());
        entry(&mut t, 0x0001, 2, 2, u32::from_le_bytes([b'N', 0, 0, 0]));
        entry(&mut t, 0x0002, 5, 3, 92);
        entry(&mut t, 0x0003, 2, 2, u32::from_le_bytes([b'E', 0, 0, 0]));
        entry(&mut t, 0x0004, 5, 3, 116);
        t.extend_from_slice(&0u32.to_le_bytes());
        for (n, d) in [(48u32, 1u32), (51, 1), (24, 1), (2, 1), (21, 1), (8, 1)] {
            t.extend_from_slice(&n.to_le_bytes());
            t.extend_from_slice(&d.to_le_bytes());
        }
    }
    t
}

/// A JPEG whose APP1 segment right after SOI carries [`exif_tiff`].
fn jpeg(gps: bool) -> Vec<u8> {
    let tiff = exif_tiff(gps);
    let mut out = b"\xff\xd8\xff\xe1".to_vec();
    out.extend_from_slice(&u16::try_from(2 + 6 + tiff.len()).unwrap().to_be_bytes());
    out.extend_from_slice(b"Exif\0\0");
    out.extend_from_slice(&tiff);
    out.extend_from_slice(JPEG_AFTER_SOI);
    out
}

/// CRC-32 (PNG's), bit by bit: only fixtures need it.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn png_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut chunk = u32::try_from(data.len()).unwrap().to_be_bytes().to_vec();
    chunk.extend_from_slice(kind);
    chunk.extend_from_slice(data);
    chunk.extend_from_slice(&crc32(&chunk[4..]).to_be_bytes());
    chunk
}

/// A PNG whose `eXIf` chunk comes after `filler` bytes of other chunks: past the head that the
/// finalize step reads, so the head cannot tell whether the file carries a position.
fn png_with_late_exif(filler: usize, gps: bool) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let ihdr = [0, 0, 0, 1, 0, 0, 0, 1, 8, 2, 0, 0, 0];
    out.extend(png_chunk(b"IHDR", &ihdr));
    out.extend(png_chunk(b"tEXt", &vec![b'x'; filler]));
    out.extend(png_chunk(b"eXIf", &exif_tiff(gps)));
    out.extend(png_chunk(b"IEND", &[]));
    out
}

/// The GPS fields kamadak-exif (an independent reader) finds in a file.
fn gps_fields(bytes: &[u8]) -> Vec<exif::Tag> {
    match exif::Reader::new().read_from_container(&mut Cursor::new(bytes)) {
        Ok(exif) => exif
            .fields()
            .filter(|f| f.tag.context() == exif::Context::Gps)
            .map(|f| f.tag)
            .collect(),
        Err(_) => Vec::new(),
    }
}

fn jpeg_request() -> UploadRequest {
    UploadRequest {
        filename: Some("IMG_0001.jpg".into()),
        declared_content_type: Some("image/jpeg".into()),
        ..UploadRequest::default()
    }
}

async fn stored(h: &Harness, media: &EventMedia) -> Vec<u8> {
    h.store
        .get_bytes(&ObjectKey::parse(media.s3_key.as_str()).unwrap())
        .await
        .unwrap()
        .to_vec()
}

/// The stored object has the upload's length, no GPS field, the record's checksum, and differs
/// from the upload only inside its EXIF block (`exif_end`: where that block ends).
async fn assert_blanked(
    h: &Harness,
    media: &EventMedia,
    sent: &[u8],
    exif: std::ops::Range<usize>,
) {
    let bytes = stored(h, media).await;
    assert!(!gps_fields(sent).is_empty(), "the fixture carries GPS");
    assert!(
        media.location_stripped,
        "the record says the original changed"
    );
    assert_eq!(bytes.len(), sent.len());
    assert_eq!(media.size_bytes, sent.len() as u64);
    assert_eq!(gps_fields(&bytes), Vec::new(), "no GPS field stored");
    assert_ne!(bytes, sent);
    assert_eq!(media.sha256.as_deref(), Some(sha256_hex(&bytes).as_str()));
    assert_eq!(bytes[..exif.start], sent[..exif.start]);
    assert_eq!(
        bytes[exif.end..],
        sent[exif.end..],
        "the picture is untouched"
    );
}

async fn assert_unchanged(h: &Harness, media: &EventMedia, sent: &[u8]) {
    assert!(!media.location_stripped);
    assert_eq!(stored(h, media).await, sent);
    assert_eq!(media.sha256.as_deref(), Some(sha256_hex(sent).as_str()));
}

#[tokio::test]
async fn a_form_upload_is_stored_without_its_gps_position_whatever_its_chunks() {
    let h = Harness::new();
    let event = h.event().await;
    let sent = jpeg(true);
    let exif = 4..4 + 2 + 6 + exif_tiff(true).len();
    for chunk in [1, 7, 64, sent.len()] {
        let staged = h
            .service
            .receive(&h.alice, event, &jpeg_request(), body(sent.clone(), chunk))
            .await
            .unwrap();
        assert_eq!(staged.received_sha256(), sha256_hex(&sent), "as received");
        assert_ne!(staged.sha256(), staged.received_sha256());
        assert!(staged.location_stripped());
        let media = h
            .service
            .finalize(staged, jpeg_request().fields())
            .await
            .unwrap();
        assert_blanked(&h, &media, &sent, exif.clone()).await;
        // Read back through the repository, the flag is kept.
        let again = h
            .service
            .get_media(&h.alice, event, media.id)
            .await
            .unwrap();
        assert!(again.location_stripped);
    }
}

#[tokio::test]
async fn a_form_upload_without_gps_or_with_stripping_off_is_stored_as_sent() {
    let h = Harness::new();
    let event = h.event().await;
    let plain = jpeg(false);
    let media = h
        .service
        .upload(&h.alice, event, jpeg_request(), body(plain.clone(), 10))
        .await
        .unwrap();
    assert_unchanged(&h, &media, &plain).await;

    let h = Harness::with_config(ServiceConfig {
        strip_location: false,
        ..ServiceConfig::default()
    });
    let event = h.event().await;
    let located = jpeg(true);
    let media = h
        .service
        .upload(&h.alice, event, jpeg_request(), body(located.clone(), 10))
        .await
        .unwrap();
    assert_unchanged(&h, &media, &located).await;
    assert!(!gps_fields(&stored(&h, &media).await).is_empty());
}

fn tus_harness(strip_location: bool) -> (Harness, MediaService) {
    let h = Harness::with_config(ServiceConfig {
        policy: MediaPolicy::default().with_max_size_bytes(8 * 1024 * 1024),
        strip_location,
        ..ServiceConfig::default()
    });
    let service = h
        .service
        .clone()
        .with_tus(Arc::new(InMemoryTusRepository::new()));
    (h, service)
}

/// A whole file through tus in `chunk`-byte requests; answers the media it became.
async fn tus_upload(
    h: &Harness,
    s: &MediaService,
    event: EventId,
    file: &[u8],
    name: &str,
    content_type: &str,
    chunk: usize,
) -> EventMedia {
    let b64 = |text: &str| base64::engine::general_purpose::STANDARD.encode(text);
    let id = s
        .create_tus_upload(
            &h.alice,
            event,
            TusCreate {
                length: Some(file.len() as u64),
                metadata: Some(format!(
                    "filename {},filetype {}",
                    b64(name),
                    b64(content_type)
                )),
            },
        )
        .await
        .unwrap()
        .id;
    let mut last = None;
    for (n, piece) in file.chunks(chunk).enumerate() {
        let status = s
            .append_tus_chunk(
                &h.alice,
                event,
                id,
                TusChunk {
                    offset: (n * chunk) as u64,
                    length: None,
                    checksum: None,
                    content_length: Some(piece.len() as u64),
                    body: body(piece.to_vec(), 64 * 1024),
                },
            )
            .await
            .unwrap();
        last = Some(status);
    }
    let media = last
        .unwrap()
        .media
        .expect("the last chunk finishes the upload");
    let staged = h.store.list_all(Some("uploads/")).await.unwrap();
    assert!(staged.is_empty(), "nothing left staged: {staged:?}");
    media
}

#[tokio::test]
async fn a_resumable_upload_is_rewritten_once_without_its_gps_position() {
    let (h, s) = tus_harness(true);
    let event = h.event().await;
    let sent = jpeg(true);
    let media = tus_upload(&h, &s, event, &sent, "photo.jpg", "image/jpeg", 50).await;
    let exif = 4..4 + 2 + 6 + exif_tiff(true).len();
    assert_blanked(&h, &media, &sent, exif).await;

    // Without GPS: the head settles it, and the bytes are moved as they are.
    let plain = jpeg(false);
    let media = tus_upload(&h, &s, event, &plain, "plain.jpg", "image/jpeg", 50).await;
    assert_unchanged(&h, &media, &plain).await;
}

#[tokio::test]
async fn a_position_past_the_head_is_found_by_streaming_the_whole_file() {
    let (h, s) = tus_harness(true);
    let event = h.event().await;
    // The eXIf chunk starts 400 KiB in: beyond the head the finalize step reads first.
    let filler = 400 * 1024;
    let sent = png_with_late_exif(filler, true);
    let media = tus_upload(&h, &s, event, &sent, "late.png", "image/png", 256 * 1024).await;
    let exif_start = 8 + 25 + 12 + filler;
    let exif = exif_start..sent.len() - 12;
    assert_blanked(&h, &media, &sent, exif).await;

    // The same shape without a position: read through, found nothing, stored as sent.
    let plain = png_with_late_exif(filler, false);
    let media = tus_upload(&h, &s, event, &plain, "plain.png", "image/png", 256 * 1024).await;
    assert_unchanged(&h, &media, &plain).await;
}

#[tokio::test]
async fn with_stripping_off_a_resumable_upload_keeps_its_position() {
    let (h, s) = tus_harness(false);
    let event = h.event().await;
    let sent = jpeg(true);
    let media = tus_upload(&h, &s, event, &sent, "photo.jpg", "image/jpeg", 50).await;
    assert_unchanged(&h, &media, &sent).await;
    assert!(!gps_fields(&stored(&h, &media).await).is_empty());
}
