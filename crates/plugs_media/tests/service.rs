//! The service's use cases over fakes: the happy path, refusals, limits, ownership, pagination.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::TimeDelta;
use common::{
    Harness, assert_consistent, body, counted_body, object_keys, png, png_request, sha256_hex,
};
use plugs_domain::{DomainError, EventId, MediaId, MediaStatus, keys};
use plugs_media::{MediaError, PageRequest, UploadRequest};
use plugs_persistence::RepoOp;
use plugs_storage::{ByteRange, GetOptions, ObjectKey, ObjectStore};

fn range(start: u64, end: u64) -> GetOptions {
    let mut options = GetOptions::default();
    options.range = Some(ByteRange::Bounded { start, end });
    options
}

#[tokio::test]
async fn upload_list_get_stream_presign_and_delete() {
    let h = Harness::new();
    let event = h.event().await;
    let bytes = png(20_000);
    let request = UploadRequest {
        filename: Some("Été à la plage.png".into()),
        ..png_request()
    };

    let media = h
        .service
        .upload(&h.alice, event, request, body(bytes.clone(), 777))
        .await
        .unwrap();
    assert_eq!(media.status, MediaStatus::Ready);
    assert_eq!(media.size_bytes, 20_000);
    assert_eq!(media.sha256.as_deref(), Some(sha256_hex(&bytes).as_str()));
    assert_eq!(media.content_type, "image/png");
    assert_eq!(media.title.as_deref(), Some("Sunset"));
    assert_eq!(media.tags, ["beach", "2024"]);
    assert_eq!(
        media.original_filename.as_deref(),
        Some("Été à la plage.png")
    );
    assert_eq!(media.uploaded_by, h.alice);
    assert_eq!(media.s3_key, keys::media_key(event, h.clock_now(), "png"));

    // The object carries the sniffed type and ASCII-safe metadata.
    let meta = h
        .store
        .head(&ObjectKey::parse(media.s3_key.as_str()).unwrap())
        .await
        .unwrap();
    assert_eq!(meta.content_type.as_deref(), Some("image/png"));
    assert_eq!(meta.metadata["event-id"], event.to_string());
    assert_eq!(meta.metadata["media-id"], media.id.to_string());
    assert_eq!(meta.metadata["uploaded-by"], "alice");
    assert_eq!(
        meta.metadata["original-filename"],
        "%C3%89t%C3%A9 %C3%A0 la plage.png"
    );

    let page = h
        .service
        .list_media(&h.alice, event, PageRequest::default())
        .await
        .unwrap();
    assert_eq!(page.items, std::slice::from_ref(&media));
    assert_eq!(page.next_cursor, None);
    assert_eq!(
        h.service
            .get_media(&h.alice, event, media.id)
            .await
            .unwrap(),
        media
    );

    // Range and conditional reads pass through to the store.
    let (served, result) = h
        .service
        .open_media(&h.alice, event, media.id, range(0, 8))
        .await
        .unwrap();
    assert_eq!(served, media);
    assert_eq!(result.range, 0..8);
    let chunks: Vec<bytes::Bytes> = futures::TryStreamExt::try_collect(result.body)
        .await
        .unwrap();
    assert_eq!(chunks.concat(), bytes[..8]);
    let mut conditional = GetOptions::default();
    conditional.if_none_match = Some(meta.etag.clone());
    assert!(matches!(
        h.service
            .open_media(&h.alice, event, media.id, conditional)
            .await,
        Err(MediaError::NotModified)
    ));
    assert!(matches!(
        h.service
            .open_media(&h.alice, event, media.id, range(20_000, 20_010))
            .await,
        Err(MediaError::RangeNotSatisfiable { size: 20_000 })
    ));

    // The default lifetime, and a too-long request cut to the maximum (7 days).
    for (asked, granted) in [
        (None, TimeDelta::minutes(15)),
        (Some(Duration::from_secs(30 * 86_400)), TimeDelta::days(7)),
    ] {
        let before = chrono::Utc::now();
        let url = h
            .service
            .presign_download(&h.alice, event, media.id, asked)
            .await
            .unwrap();
        let after = chrono::Utc::now();
        assert!(url.url.contains(&media.s3_key), "{}", url.url);
        assert!(
            before + granted <= url.expires_at + TimeDelta::seconds(1)
                && url.expires_at <= after + granted,
            "{asked:?} gave {}",
            url.expires_at
        );
    }

    h.service
        .delete_media(&h.alice, event, media.id)
        .await
        .unwrap();
    assert!(matches!(
        h.service.get_media(&h.alice, event, media.id).await,
        Err(MediaError::NotFound { .. })
    ));
    assert!(object_keys(h.store.as_ref()).await.is_empty());

    // Deleting the event takes its media, objects included.
    h.upload_png(event, 100).await;
    h.clock.advance(TimeDelta::seconds(1));
    h.upload_png(event, 200).await;
    assert_eq!(object_keys(h.store.as_ref()).await.len(), 2);
    h.service.delete_event(&h.alice, event).await.unwrap();
    assert!(object_keys(h.store.as_ref()).await.is_empty());
    assert!(matches!(
        h.service.get_event(&h.alice, event).await,
        Err(MediaError::NotFound { what: "event", .. })
    ));
    assert_consistent(h.store.as_ref(), &h.repo, &[]).await;
}

#[tokio::test]
async fn refused_uploads_store_nothing() {
    let h = Harness::new();
    let event = h.event().await;
    let pdf = {
        let mut pdf = b"%PDF-1.7\n%\xE2\xE3\xCF\xD3\n".to_vec();
        pdf.resize(500, b' ');
        pdf
    };
    let html = b"<!DOCTYPE html><html><body><script>alert(1)</script></body></html>".to_vec();
    let cases: Vec<(&str, UploadRequest, Vec<u8>)> = vec![
        (
            "long title",
            UploadRequest {
                title: Some("x".repeat(201)),
                ..png_request()
            },
            png(100),
        ),
        (
            "too many tags",
            UploadRequest {
                tags: Some(
                    (0..21)
                        .map(|i| format!("t{i}"))
                        .collect::<Vec<_>>()
                        .join(","),
                ),
                ..png_request()
            },
            png(100),
        ),
        (
            "declared type lies",
            UploadRequest {
                declared_content_type: Some("application/pdf".into()),
                ..png_request()
            },
            png(100),
        ),
        (
            "pdf named png",
            UploadRequest {
                declared_content_type: None,
                ..png_request()
            },
            pdf,
        ),
        (
            "html",
            UploadRequest {
                declared_content_type: None,
                filename: None,
                ..png_request()
            },
            html,
        ),
        (
            "unknown bytes",
            UploadRequest {
                declared_content_type: None,
                filename: None,
                ..png_request()
            },
            vec![7; 300],
        ),
        ("empty", png_request(), Vec::new()),
    ];
    for (name, request, bytes) in cases {
        let error = h
            .service
            .upload(&h.alice, event, request, body(bytes, 64))
            .await
            .unwrap_err();
        match name {
            "long title" => assert!(
                matches!(error, MediaError::Invalid(DomainError::TitleTooLong { .. })),
                "{name}: {error:?}"
            ),
            "too many tags" => assert!(
                matches!(error, MediaError::Invalid(DomainError::TooManyTags { .. })),
                "{name}: {error:?}"
            ),
            "empty" => assert!(matches!(error, MediaError::EmptyFile), "{name}: {error:?}"),
            _ => assert!(
                matches!(error, MediaError::UnsupportedType { .. }),
                "{name}: {error:?}"
            ),
        }
    }
    assert_eq!(
        h.repo.calls(RepoOp::InsertMedia),
        0,
        "no record was even attempted"
    );
    assert_eq!(h.store.puts(), 0, "no byte was sent to the store");
    assert!(object_keys(h.store.as_ref()).await.is_empty());
}

#[tokio::test]
async fn size_limit_is_inclusive_and_an_oversized_upload_leaves_nothing() {
    let limit = 10_000;
    let h = Harness::with_max_size(limit);
    let event = h.event().await;

    let at_limit = h.upload_png(event, 10_000).await;
    assert_eq!(at_limit.size_bytes, 10_000);

    h.clock.advance(TimeDelta::seconds(1));
    let error = h
        .service
        .upload(&h.alice, event, png_request(), body(png(10_001), 1000))
        .await
        .unwrap_err();
    assert!(
        matches!(error, MediaError::TooLarge { limit: 10_000 }),
        "{error:?}"
    );

    // A much larger upload is cut off near the limit, not read to its end.
    let (stream, pulled) = counted_body(png(1_000_000), 1000);
    let error = h
        .service
        .upload(&h.alice, event, png_request(), stream)
        .await
        .unwrap_err();
    assert!(
        matches!(error, MediaError::TooLarge { limit: 10_000 }),
        "{error:?}"
    );
    assert!(
        pulled.load(Ordering::SeqCst) <= 11_000,
        "pulled {} bytes",
        pulled.load(Ordering::SeqCst)
    );

    let page = h
        .service
        .list_media(&h.alice, event, PageRequest::default())
        .await
        .unwrap();
    assert_eq!(page.items, [at_limit]);
    assert_eq!(object_keys(h.store.as_ref()).await.len(), 1);
    assert_consistent(h.store.as_ref(), &h.repo, &[]).await;
}

#[tokio::test]
async fn an_upload_larger_than_a_small_limit_is_refused_before_any_record() {
    let h = Harness::with_max_size(100);
    let event = h.event().await;
    let error = h
        .service
        .upload(&h.alice, event, png_request(), body(png(101), 1000))
        .await
        .unwrap_err();
    assert!(
        matches!(error, MediaError::TooLarge { limit: 100 }),
        "{error:?}"
    );
    assert_eq!(h.repo.calls(RepoOp::InsertMedia), 0);
    assert_eq!(h.store.puts(), 0);
}

#[tokio::test]
async fn a_declared_size_reaches_the_store_and_must_be_the_files_length() {
    let h = Harness::with_max_size(100_000);
    let event = h.event().await;
    let sized = |size: u64| UploadRequest {
        declared_size: Some(size),
        ..png_request()
    };

    let media = h
        .service
        .upload(&h.alice, event, sized(50_000), body(png(50_000), 700))
        .await
        .unwrap();
    assert_eq!(media.size_bytes, 50_000);
    assert_eq!(media.sha256, Some(sha256_hex(&png(50_000))));
    assert_eq!(
        h.store.declared_sizes(),
        [Some(50_000)],
        "the store was told"
    );

    // Longer and shorter than declared, found while streaming to the store (past the sniffed
    // head, after the pending record exists, so the upload is undone); then longer within the
    // sniffed head, refused before any record or put.
    for (declared, actual) in [(40_000, 50_000), (60_000, 50_000), (100, 50_000)] {
        h.clock.advance(TimeDelta::seconds(1));
        let error = h
            .service
            .upload(&h.alice, event, sized(declared), body(png(actual), 700))
            .await
            .unwrap_err();
        assert!(
            matches!(error, MediaError::SizeMismatch { declared: d, .. } if d == declared),
            "declared {declared}, sent {actual}: {error:?}"
        );
    }
    assert_eq!(
        h.store.puts(),
        3,
        "the two in-stream cases reached the store"
    );

    // A store outage during a declared-size upload is the store's error, not a mismatch.
    h.clock.advance(TimeDelta::seconds(1));
    h.store.faults().refuse_next_put = true;
    let error = h
        .service
        .upload(&h.alice, event, sized(50_000), body(png(50_000), 700))
        .await
        .unwrap_err();
    assert!(error.is_unavailable(), "{error:?}");

    // Above the limit or zero: refused on the declaration, before the body is read.
    for (declared, refused) in [(100_001, "too large"), (0, "zero")] {
        let (stream, pulled) = counted_body(png(5_000), 700);
        let error = h
            .service
            .upload(&h.alice, event, sized(declared), stream)
            .await
            .unwrap_err();
        assert!(
            matches!(
                (&error, refused),
                (MediaError::TooLarge { limit: 100_000 }, "too large")
                    | (
                        MediaError::SizeMismatch {
                            declared: 0,
                            received: 0
                        },
                        "zero"
                    )
            ),
            "{refused}: {error:?}"
        );
        assert_eq!(pulled.load(Ordering::SeqCst), 0, "{refused}: body not read");
    }

    let page = h
        .service
        .list_media(&h.alice, event, PageRequest::default())
        .await
        .unwrap();
    assert_eq!(page.items, [media]);
    assert_eq!(object_keys(h.store.as_ref()).await.len(), 1);
    assert_consistent(h.store.as_ref(), &h.repo, &[]).await;
}

/// A form upload costs the repository two calls, one trip to the database each: the pending
/// insert, which checks the event's owner itself, and `mark_ready`, which answers the record it
/// wrote. Nothing looks the event up first or reads the record back. A stranger's upload is
/// refused by that same insert, and nothing is kept. (What each call sends to SQLite and
/// PostgreSQL is pinned in `plugs_persistence`'s `statement_tests`.)
#[tokio::test]
async fn an_upload_makes_two_repository_calls() {
    let h = Harness::new();
    let event = h.event().await;
    let ops = [
        RepoOp::FindEvent,
        RepoOp::InsertMedia,
        RepoOp::MarkReady,
        RepoOp::FindMedia,
        RepoOp::RenewLease,
        RepoOp::MarkDeleting,
        RepoOp::DeleteMedia,
    ];
    let calls = || ops.map(|op| (op, h.repo.calls(op)));
    let made =
        |before: [(RepoOp, usize); 7]| before.map(|(op, count)| (op, h.repo.calls(op) - count));

    let before = calls();
    let media = h.upload_png(event, 500).await;
    assert_eq!(media.status, MediaStatus::Ready);
    assert_eq!(
        made(before),
        [
            (RepoOp::FindEvent, 0),
            (RepoOp::InsertMedia, 1),
            (RepoOp::MarkReady, 1),
            (RepoOp::FindMedia, 0),
            (RepoOp::RenewLease, 0),
            (RepoOp::MarkDeleting, 0),
            (RepoOp::DeleteMedia, 0),
        ]
    );

    for (user, event) in [(&h.bob, event), (&h.alice, EventId::new())] {
        let before = calls();
        let err = h
            .service
            .upload(user, event, png_request(), body(png(500), 100))
            .await
            .unwrap_err();
        assert!(matches!(err, MediaError::NotFound { .. }), "{err:?}");
        assert_eq!(
            made(before),
            [
                (RepoOp::FindEvent, 0),
                (RepoOp::InsertMedia, 1),
                (RepoOp::MarkReady, 0),
                (RepoOp::FindMedia, 0),
                (RepoOp::RenewLease, 0),
                (RepoOp::MarkDeleting, 0),
                (RepoOp::DeleteMedia, 0),
            ],
            "refused by the insert itself"
        );
    }
    assert_eq!(
        object_keys(h.store.as_ref()).await.len(),
        1,
        "no byte stored"
    );
    assert_consistent(h.store.as_ref(), &h.repo, &[]).await;
}

#[tokio::test]
async fn a_stranger_gets_not_found_for_everything() {
    let h = Harness::new();
    let event = h.event().await;
    let media = h.upload_png(event, 500).await;
    let bob = &h.bob;
    let s = &h.service;
    let not_found =
        |result: Result<(), MediaError>| matches!(result, Err(MediaError::NotFound { .. }));

    assert!(not_found(s.get_event(bob, event).await.map(drop)));
    assert!(not_found(
        s.list_media(bob, event, PageRequest::default())
            .await
            .map(drop)
    ));
    assert!(not_found(s.get_media(bob, event, media.id).await.map(drop)));
    assert!(not_found(
        s.open_media(bob, event, media.id, GetOptions::default())
            .await
            .map(drop)
    ));
    assert!(not_found(
        s.presign_download(bob, event, media.id, None)
            .await
            .map(drop)
    ));
    assert!(not_found(
        s.upload(bob, event, png_request(), body(png(500), 100))
            .await
            .map(drop)
    ));
    assert!(not_found(s.delete_media(bob, event, media.id).await));
    assert!(not_found(s.delete_event(bob, event).await));
    assert!(
        s.list_events(bob, PageRequest::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );

    // A missing event and someone else's answer exactly alike.
    let missing = EventId::new();
    let theirs = s
        .get_event(bob, event)
        .await
        .unwrap_err()
        .to_string()
        .replace(&event.to_string(), "ID");
    let nobodys = s
        .get_event(bob, missing)
        .await
        .unwrap_err()
        .to_string()
        .replace(&missing.to_string(), "ID");
    assert_eq!(theirs, nobodys);

    // Alice's own media under another of her events is not reachable through the wrong path.
    let other = h.event().await;
    assert!(not_found(
        s.get_media(&h.alice, other, media.id).await.map(drop)
    ));
    assert!(not_found(s.delete_media(&h.alice, other, media.id).await));
    assert!(not_found(
        s.get_media(&h.alice, event, MediaId::new()).await.map(drop)
    ));

    assert_eq!(s.get_media(&h.alice, event, media.id).await.unwrap(), media);
    assert_eq!(object_keys(h.store.as_ref()).await.len(), 1);
    assert_consistent(h.store.as_ref(), &h.repo, &[]).await;
}

#[tokio::test]
async fn pages_cover_every_media_once_newest_first() {
    let h = Harness::new();
    let event = h.event().await;
    let mut uploaded = Vec::new();
    for i in 0..45 {
        // Pairs share a creation time (and so their key's microsecond), so ties are exercised.
        if i % 2 == 0 {
            h.clock.advance(TimeDelta::milliseconds(3));
        }
        uploaded.push(h.upload_png(event, 100 + i).await);
    }
    let keys: HashSet<_> = uploaded.iter().map(|m| m.s3_key.clone()).collect();
    assert_eq!(keys.len(), 45, "every upload got its own key");

    let mut seen = Vec::new();
    let mut cursor = None;
    let mut pages = 0;
    loop {
        let page = h
            .service
            .list_media(
                &h.alice,
                event,
                PageRequest {
                    cursor,
                    limit: Some(20),
                },
            )
            .await
            .unwrap();
        pages += 1;
        assert!(page.items.len() <= 20);
        seen.extend(page.items.into_iter().map(|m| (m.created_at, m.id)));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let mut expected: Vec<_> = uploaded.iter().map(|m| (m.created_at, m.id)).collect();
    expected.sort_by(|a, b| b.cmp(a));
    assert_eq!(seen, expected);

    let events = h
        .service
        .list_events(
            &h.alice,
            PageRequest {
                cursor: None,
                limit: Some(1),
            },
        )
        .await
        .unwrap();
    assert_eq!(events.items.len(), 1);
    assert!(events.next_cursor.is_none());
}

#[tokio::test]
async fn bad_page_requests_are_invalid() {
    let h = Harness::new();
    let event = h.event().await;
    for page in [
        PageRequest {
            cursor: Some("not-a-cursor".into()),
            limit: None,
        },
        PageRequest {
            cursor: None,
            limit: Some(0),
        },
        PageRequest {
            cursor: None,
            limit: Some(101),
        },
    ] {
        assert!(matches!(
            h.service.list_media(&h.alice, event, page.clone()).await,
            Err(MediaError::Invalid(_))
        ));
        assert!(matches!(
            h.service.list_events(&h.alice, page).await,
            Err(MediaError::Invalid(_))
        ));
    }
    assert!(matches!(
        h.service.create_event(&h.alice, "   ").await,
        Err(MediaError::Invalid(DomainError::TitleEmpty))
    ));
}
