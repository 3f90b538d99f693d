//! Resumable (tus) uploads through the service, over the in-memory repository and store: parts
//! and staged tails, deferred lengths, checksums, sniffing, interruptions, expiry and gc.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use base64::Engine as _;
use chrono::TimeDelta;
use common::{Harness, body, failing_body, object_keys, png, sha256_hex};
use plugs_domain::{EventId, MediaId, MediaPolicy};
use plugs_media::{
    MediaError, MediaService, ReconcileOptions, ServiceConfig, TusChecksum, TusChunk, TusCreate,
    TusError, TusStatus,
};
use plugs_persistence::{InMemoryTusRepository, MediaRepository as _};
use plugs_storage::{ObjectKey, ObjectStoreExt as _};
use sha2::{Digest as _, Sha256};

const MIB: usize = 1024 * 1024;

fn harness() -> (Harness, MediaService) {
    let h = Harness::with_config(ServiceConfig {
        policy: MediaPolicy::default().with_max_size_bytes(64 * MIB as u64),
        ..ServiceConfig::default()
    });
    let service = h
        .service
        .clone()
        .with_tus(Arc::new(InMemoryTusRepository::new()));
    (h, service)
}

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

fn png_metadata() -> Option<String> {
    Some(format!(
        "filename {},filetype {},title {},tags {}",
        b64("big.png"),
        b64("image/png"),
        b64("Big"),
        b64("a,b")
    ))
}

async fn create(h: &Harness, s: &MediaService, event: EventId, length: Option<u64>) -> MediaId {
    s.create_tus_upload(
        &h.alice,
        event,
        TusCreate {
            length,
            metadata: png_metadata(),
        },
    )
    .await
    .unwrap()
    .id
}

fn chunk(bytes: &[u8], offset: u64) -> TusChunk {
    TusChunk {
        offset,
        length: None,
        checksum: None,
        content_length: Some(bytes.len() as u64),
        body: body(bytes.to_vec(), 64 * 1024),
    }
}

/// Sends `file` from `from` in `size`-byte requests; answers the last status.
async fn send(
    h: &Harness,
    s: &MediaService,
    event: EventId,
    id: MediaId,
    file: &[u8],
    from: usize,
    size: usize,
) -> TusStatus {
    let mut last = None;
    let mut offset = from;
    while offset < file.len() {
        let end = (offset + size).min(file.len());
        let status = s
            .append_tus_chunk(
                &h.alice,
                event,
                id,
                chunk(&file[offset..end], offset as u64),
            )
            .await
            .unwrap();
        assert_eq!(status.offset, end as u64);
        offset = end;
        last = Some(status);
    }
    last.unwrap()
}

async fn staged_keys(h: &Harness) -> Vec<String> {
    h.store
        .list_all(Some("uploads/"))
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key.to_string())
        .collect()
}

#[tokio::test]
async fn a_file_in_small_chunks_becomes_media_with_its_sha256() {
    let (h, s) = harness();
    let event = h.event().await;
    let file = png(20 * MIB + 12_345);
    let id = create(&h, &s, event, Some(file.len() as u64)).await;
    // 1 MiB chunks: parts are 8 MiB, so most requests end inside a part and stage a tail.
    let done = send(&h, &s, event, id, &file, 0, MIB).await;
    let media = done.media.expect("the last chunk finishes the upload");
    assert_eq!(media.id, id);
    assert_eq!(media.size_bytes, file.len() as u64);
    assert_eq!(media.sha256.as_deref(), Some(sha256_hex(&file).as_str()));
    assert_eq!(media.title.as_deref(), Some("Big"));
    assert_eq!(media.tags, vec!["a".to_owned(), "b".to_owned()]);
    let stored = h
        .store
        .get_bytes(&ObjectKey::parse(media.s3_key.as_str()).unwrap())
        .await
        .unwrap();
    assert_eq!(Sha256::digest(&stored)[..], Sha256::digest(&file)[..]);
    assert!(
        staged_keys(&h).await.is_empty(),
        "{:?}",
        staged_keys(&h).await
    );
    // HEAD of a finished upload answers its whole length and the media.
    let status = s.tus_status(&h.alice, event, id).await.unwrap();
    assert_eq!(status.offset, file.len() as u64);
    assert_eq!(status.media.map(|m| m.id), Some(id));
    s.get_media(&h.alice, event, id).await.unwrap();
}

#[tokio::test]
async fn a_small_file_in_one_request_and_a_deferred_length() {
    let (h, s) = harness();
    let event = h.event().await;
    let small = png(1024);
    let id = create(&h, &s, event, Some(1024)).await;
    let done = send(&h, &s, event, id, &small, 0, 1024).await;
    assert_eq!(done.media.unwrap().size_bytes, 1024);

    let file = png(9 * MIB);
    let id = create(&h, &s, event, None).await;
    let status = send(&h, &s, event, id, &file, 0, 3 * MIB).await;
    assert!(status.media.is_none());
    assert_eq!(status.length, None);
    // The length arrives with a request that carries no bytes.
    let mut last = chunk(&[], file.len() as u64);
    last.length = Some(file.len() as u64);
    let done = s.append_tus_chunk(&h.alice, event, id, last).await.unwrap();
    let media = done.media.unwrap();
    assert_eq!(media.sha256.as_deref(), Some(sha256_hex(&file).as_str()));
    assert!(staged_keys(&h).await.is_empty());
}

#[tokio::test]
async fn wrong_offsets_excess_bytes_and_bad_checksums_are_refused() {
    let (h, s) = harness();
    let event = h.event().await;
    let file = png(100_000);
    let id = create(&h, &s, event, Some(file.len() as u64)).await;
    send(&h, &s, event, id, &file[..50_000], 0, 50_000).await;
    let wrong = s
        .append_tus_chunk(&h.alice, event, id, chunk(&file[..10], 0))
        .await;
    assert!(
        matches!(wrong, Err(TusError::OffsetMismatch { expected: 50_000 })),
        "{wrong:?}"
    );
    let mut too_much = file[50_000..].to_vec();
    too_much.push(0);
    let excess = s
        .append_tus_chunk(&h.alice, event, id, chunk(&too_much, 50_000))
        .await;
    assert!(
        matches!(excess, Err(TusError::BeyondLength { .. })),
        "{excess:?}"
    );

    let mut bad = chunk(&file[50_000..], 50_000);
    bad.checksum = Some(TusChecksum::Sha256([0; 32]));
    let refused = s.append_tus_chunk(&h.alice, event, id, bad).await;
    assert!(
        matches!(refused, Err(TusError::ChecksumMismatch)),
        "{refused:?}"
    );
    assert_eq!(
        s.tus_status(&h.alice, event, id).await.unwrap().offset,
        50_000
    );

    let mut good = chunk(&file[50_000..], 50_000);
    good.checksum = Some(TusChecksum::Sha256(Sha256::digest(&file[50_000..]).into()));
    let done = s.append_tus_chunk(&h.alice, event, id, good).await.unwrap();
    assert_eq!(
        done.media.unwrap().sha256.as_deref(),
        Some(sha256_hex(&file).as_str())
    );

    // Someone else's upload is not found.
    let other = s.tus_status(&h.bob, event, id).await;
    assert!(
        matches!(other, Err(TusError::Media(MediaError::NotFound { .. }))),
        "{other:?}"
    );
}

#[tokio::test]
async fn a_head_that_is_not_the_declared_type_ends_the_upload() {
    let (h, s) = harness();
    let event = h.event().await;
    let id = create(&h, &s, event, Some(100_000)).await;
    let text = vec![b'a'; 20_000];
    let refused = s
        .append_tus_chunk(&h.alice, event, id, chunk(&text, 0))
        .await;
    assert!(
        matches!(
            refused,
            Err(TusError::Media(MediaError::UnsupportedType { .. }))
        ),
        "{refused:?}"
    );
    assert!(object_keys(h.store.as_ref()).await.is_empty());
    assert!(staged_keys(&h).await.is_empty());
    assert!(h.repo.find_media(id).await.unwrap().is_none());
}

#[tokio::test]
async fn an_interrupted_request_keeps_its_whole_parts_and_the_client_resumes() {
    let (h, s) = harness();
    let event = h.event().await;
    let file = png(30 * MIB);
    let id = create(&h, &s, event, Some(file.len() as u64)).await;
    // One request for the whole file, cut after 19 MiB: the two whole parts stay.
    let cut = TusChunk {
        offset: 0,
        length: None,
        checksum: None,
        content_length: Some(file.len() as u64),
        body: failing_body(file.clone(), 256 * 1024, 19 * MIB),
    };
    let error = s.append_tus_chunk(&h.alice, event, id, cut).await;
    assert!(
        matches!(
            error,
            Err(TusError::Media(MediaError::UploadInterrupted { .. }))
        ),
        "{error:?}"
    );
    let offset = s.tus_status(&h.alice, event, id).await.unwrap().offset as usize;
    assert_eq!(offset, 16 * MIB);
    let done = send(&h, &s, event, id, &file, offset, 5 * MIB).await;
    assert_eq!(
        done.media.unwrap().sha256.as_deref(),
        Some(sha256_hex(&file).as_str())
    );
}

#[tokio::test]
async fn gc_and_event_deletion_remove_uploads_in_flight() {
    let (h, s) = harness();
    let event = h.event().await;
    let file = png(10 * MIB);
    let id = create(&h, &s, event, Some(file.len() as u64)).await;
    send(&h, &s, event, id, &file[..9 * MIB], 0, 3 * MIB).await;
    assert!(!staged_keys(&h).await.is_empty());
    // Within its expiry, gc leaves it alone.
    s.reconcile(ReconcileOptions::default()).await.unwrap();
    assert!(s.tus_status(&h.alice, event, id).await.is_ok());
    h.clock.advance(TimeDelta::hours(3));
    s.reconcile(ReconcileOptions::default()).await.unwrap();
    assert!(staged_keys(&h).await.is_empty());
    assert!(s.tus_status(&h.alice, event, id).await.is_err());

    let id = create(&h, &s, event, Some(file.len() as u64)).await;
    send(&h, &s, event, id, &file[..9 * MIB], 0, 9 * MIB).await;
    s.delete_event(&h.alice, event).await.unwrap();
    assert!(object_keys(h.store.as_ref()).await.is_empty());
    assert!(staged_keys(&h).await.is_empty());
}
