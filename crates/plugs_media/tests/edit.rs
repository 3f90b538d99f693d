//! Edits guarded by the version a client saw, and the listing filtered by tag and kind, over fakes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use common::{Harness, body, png_request};
use plugs_domain::{
    DomainError, EventId, EventMedia, MediaFields, MediaId, MediaStatus, PageCursor,
};
use plugs_media::{
    EventEdit, IfMatch, MediaEdit, MediaError, MediaQuery, MediaService, PageRequest,
    ServiceConfig, UploadRequest,
};
use plugs_persistence::{
    FieldsUpdate, InMemoryRepository, MediaFilter, MediaRepository, ReadyUpdate, RepoError, RepoOp,
};

fn title(text: &str) -> MediaEdit {
    MediaEdit {
        title: Some(Some(text.to_owned())),
        ..MediaEdit::default()
    }
}

fn tags(list: &[&str]) -> MediaEdit {
    MediaEdit {
        tags: Some(list.iter().map(|t| (*t).to_owned()).collect()),
        ..MediaEdit::default()
    }
}

fn at_version(version: DateTime<Utc>) -> IfMatch {
    IfMatch::UpdatedAt(vec![version])
}

fn changed(result: Result<impl std::fmt::Debug, MediaError>) -> bool {
    matches!(result, Err(MediaError::PreconditionFailed { .. }))
}

fn not_found(result: Result<impl std::fmt::Debug, MediaError>) -> bool {
    matches!(result, Err(MediaError::NotFound { .. }))
}

#[tokio::test]
async fn an_edit_changes_the_fields_given_keeps_the_others_and_null_clears() {
    let h = Harness::new();
    let event = h.event().await;
    let media = h.upload_png(event, 100).await;
    assert_eq!(
        (media.title.as_deref(), media.tags.as_slice()),
        (Some("Sunset"), &["beach".to_owned(), "2024".to_owned()][..])
    );

    let edit = MediaEdit {
        description: Some(Some(" At the pier\r\nat dusk ".to_owned())),
        ..MediaEdit::default()
    };
    let described = h
        .service
        .edit_media(&h.alice, event, media.id, &edit, &IfMatch::Any)
        .await
        .unwrap();
    assert_eq!(
        described.description.as_deref(),
        Some("At the pier\nat dusk"),
        "the upload's rules normalise it"
    );
    assert_eq!(described.title, media.title);
    assert_eq!(described.tags, media.tags);
    assert!(described.updated_at > media.updated_at);

    let edit = MediaEdit {
        title: Some(None),
        tags: Some(vec![
            "Pier".into(),
            "pier".into(),
            " Sea ".into(),
            " ".into(),
        ]),
        ..MediaEdit::default()
    };
    let edited = h
        .service
        .edit_media(&h.alice, event, media.id, &edit, &IfMatch::Any)
        .await
        .unwrap();
    assert_eq!(edited.title, None);
    assert_eq!(edited.tags, ["pier", "sea"]);
    assert_eq!(edited.description, described.description);
    assert_eq!(
        h.service
            .get_media(&h.alice, event, media.id)
            .await
            .unwrap(),
        edited
    );
    // Only the fields changed: the bytes' record is as uploaded.
    assert_eq!(
        (
            edited.s3_key,
            edited.sha256,
            edited.size_bytes,
            edited.created_at
        ),
        (
            media.s3_key,
            media.sha256,
            media.size_bytes,
            media.created_at
        )
    );

    // A blank title is no title, and an empty list no tags, as in the upload form.
    let cleared = h
        .service
        .edit_media(&h.alice, event, media.id, &tags(&[]), &IfMatch::Any)
        .await
        .unwrap();
    assert!(cleared.tags.is_empty());
    let blank = h
        .service
        .edit_media(&h.alice, event, media.id, &title("   "), &IfMatch::Any)
        .await
        .unwrap();
    assert_eq!(blank.title, None);
}

#[tokio::test]
async fn a_stale_version_is_refused_and_changes_nothing_even_within_one_clock_tick() {
    let h = Harness::new();
    let event = h.event().await;
    let first = h.upload_png(event, 100).await;

    // The clock does not move between these edits: every one still gets a version of its own.
    let second = h
        .service
        .edit_media(
            &h.alice,
            event,
            first.id,
            &title("Editor A"),
            &at_version(first.updated_at),
        )
        .await
        .unwrap();
    assert_eq!(
        second.updated_at,
        first.updated_at + TimeDelta::microseconds(1)
    );

    let late = h
        .service
        .edit_media(
            &h.alice,
            event,
            first.id,
            &title("Editor B"),
            &at_version(first.updated_at),
        )
        .await;
    assert!(changed(late), "B saw the version A replaced");
    assert_eq!(
        h.service
            .get_media(&h.alice, event, first.id)
            .await
            .unwrap(),
        second
    );

    // Any version in the list matches; none, and nothing changes.
    let third = h
        .service
        .edit_media(
            &h.alice,
            event,
            first.id,
            &title("Editor B, again"),
            &IfMatch::UpdatedAt(vec![first.updated_at, second.updated_at]),
        )
        .await
        .unwrap();
    assert_eq!(third.title.as_deref(), Some("Editor B, again"));
    assert!(third.updated_at > second.updated_at);
    assert!(changed(
        h.service
            .edit_media(
                &h.alice,
                event,
                first.id,
                &title("x"),
                &IfMatch::UpdatedAt(Vec::new()),
            )
            .await
    ));
    // The precondition is checked even when the edit would change nothing.
    assert!(changed(
        h.service
            .edit_media(
                &h.alice,
                event,
                first.id,
                &MediaEdit::default(),
                &at_version(first.updated_at),
            )
            .await
    ));
}

#[tokio::test]
async fn an_edit_that_changes_nothing_writes_nothing() {
    let h = Harness::new();
    let event = h.event().await;
    let media = h.upload_png(event, 100).await;
    for edit in [
        MediaEdit::default(),
        title("  Sunset "),
        tags(&["Beach", "2024"]),
    ] {
        let same = h
            .service
            .edit_media(
                &h.alice,
                event,
                media.id,
                &edit,
                &at_version(media.updated_at),
            )
            .await
            .unwrap();
        assert_eq!(same, media, "{edit:?}");
    }
    assert_eq!(h.repo.calls(RepoOp::UpdateFields), 0);
}

#[tokio::test]
async fn invalid_fields_are_refused_before_anything_changes() {
    let h = Harness::new();
    let event = h.event().await;
    let media = h.upload_png(event, 100).await;
    let too_many: Vec<String> = (0..21).map(|i| format!("t{i}")).collect();
    let refusals = [
        (title(&"é".repeat(201)), "a title of 201 characters"),
        (title("two\nlines"), "a line break in a title"),
        (
            MediaEdit {
                description: Some(Some("x".repeat(2001))),
                ..MediaEdit::default()
            },
            "a description of 2001 characters",
        ),
        (tags(&["fine", "a,b"]), "a comma inside one tag"),
        (tags(&[&"x".repeat(51)]), "a tag of 51 characters"),
        (
            MediaEdit {
                tags: Some(too_many),
                ..MediaEdit::default()
            },
            "21 tags",
        ),
    ];
    for (edit, why) in refusals {
        let result = h
            .service
            .edit_media(&h.alice, event, media.id, &edit, &IfMatch::Any)
            .await;
        assert!(
            matches!(result, Err(MediaError::Invalid(_))),
            "{why}: {result:?}"
        );
    }
    assert!(matches!(
        h.service
            .edit_media(&h.alice, event, media.id, &tags(&["a,b"]), &IfMatch::Any)
            .await,
        Err(MediaError::Invalid(DomainError::TagHasComma { .. }))
    ));
    assert_eq!(
        h.service
            .get_media(&h.alice, event, media.id)
            .await
            .unwrap(),
        media
    );
    assert_eq!(h.repo.calls(RepoOp::UpdateFields), 0);
}

#[tokio::test]
async fn only_the_owner_edits_and_everyone_else_sees_a_missing_media() {
    let h = Harness::new();
    let event = h.event().await;
    let other_event = h.event().await;
    let media = h.upload_png(event, 100).await;
    let edit = title("Mine now");

    let attempts = [
        h.service
            .edit_media(&h.bob, event, media.id, &edit, &IfMatch::Any)
            .await,
        h.service
            .edit_media(&h.alice, other_event, media.id, &edit, &IfMatch::Any)
            .await,
        h.service
            .edit_media(&h.alice, event, MediaId::new(), &edit, &IfMatch::Any)
            .await,
        h.service
            .edit_media(&h.alice, EventId::new(), media.id, &edit, &IfMatch::Any)
            .await,
    ];
    for attempt in attempts {
        assert!(not_found(attempt));
    }
    // A stranger learns nothing from the version either: 404, not 412.
    assert!(not_found(
        h.service
            .edit_media(
                &h.bob,
                event,
                media.id,
                &edit,
                &IfMatch::UpdatedAt(Vec::new())
            )
            .await
    ));
    // Nor from the fields: 404 before 422.
    assert!(not_found(
        h.service
            .edit_media(&h.bob, event, media.id, &tags(&["a,b"]), &IfMatch::Any)
            .await
    ));
    assert_eq!(
        h.service
            .get_media(&h.alice, event, media.id)
            .await
            .unwrap(),
        media
    );

    // A delete in progress is not edited back to life.
    h.repo.mark_deleting(media.id, h.clock_now()).await.unwrap();
    assert!(not_found(
        h.service
            .edit_media(&h.alice, event, media.id, &edit, &IfMatch::Any)
            .await
    ));
    assert_eq!(
        h.repo.find_media(media.id).await.unwrap().unwrap().status,
        MediaStatus::Deleting
    );
}

#[tokio::test]
async fn an_unavailable_database_is_reported_and_nothing_changes() {
    let h = Harness::new();
    let event = h.event().await;
    let media = h.upload_png(event, 100).await;
    h.repo.fail_next(
        RepoOp::UpdateFields,
        plugs_persistence::FaultKind::Unavailable,
    );
    let result = h
        .service
        .edit_media(&h.alice, event, media.id, &title("x"), &IfMatch::Any)
        .await;
    assert!(
        result.as_ref().is_err_and(MediaError::is_unavailable),
        "{result:?}"
    );
    assert_eq!(
        h.service
            .get_media(&h.alice, event, media.id)
            .await
            .unwrap(),
        media
    );
}

/// A media repository where another editor's change lands between an edit's read and its write,
/// once.
#[derive(Debug)]
struct AnotherEditorFirst {
    inner: Arc<InMemoryRepository>,
    armed: AtomicBool,
}

#[async_trait]
impl MediaRepository for AnotherEditorFirst {
    async fn update_fields(
        &self,
        id: MediaId,
        update: FieldsUpdate,
    ) -> Result<Option<EventMedia>, RepoError> {
        if self.armed.swap(false, Ordering::SeqCst) {
            let current = self.inner.find_media(id).await?.unwrap();
            let theirs = FieldsUpdate {
                fields: MediaFields {
                    description: Some("theirs".to_owned()),
                    title: current.title.clone(),
                    tags: current.tags.clone(),
                },
                expected: current.updated_at,
                at: current.updated_at + TimeDelta::seconds(1),
            };
            self.inner.update_fields(id, theirs).await?.unwrap();
        }
        self.inner.update_fields(id, update).await
    }
    async fn insert_media(&self, media: &EventMedia) -> Result<(), RepoError> {
        self.inner.insert_media(media).await
    }
    async fn mark_ready(&self, id: MediaId, update: ReadyUpdate) -> Result<EventMedia, RepoError> {
        self.inner.mark_ready(id, update).await
    }
    async fn mark_deleting(&self, id: MediaId, at: DateTime<Utc>) -> Result<EventMedia, RepoError> {
        self.inner.mark_deleting(id, at).await
    }
    async fn mark_deleting_if_stale(
        &self,
        id: MediaId,
        expected: MediaStatus,
        updated_before: DateTime<Utc>,
        at: DateTime<Utc>,
    ) -> Result<Option<EventMedia>, RepoError> {
        self.inner
            .mark_deleting_if_stale(id, expected, updated_before, at)
            .await
    }
    async fn abandon_pending(
        &self,
        id: MediaId,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<Option<EventMedia>, RepoError> {
        self.inner.abandon_pending(id, at).await
    }
    async fn renew_lease(&self, id: MediaId, until: DateTime<Utc>) -> Result<bool, RepoError> {
        self.inner.renew_lease(id, until).await
    }
    async fn insert_pending(
        &self,
        media: &EventMedia,
        owner: Option<&plugs_domain::UserId>,
        session: Option<&plugs_domain::UploadSession>,
        reserved: u64,
        quota: &plugs_domain::Quota,
    ) -> Result<(), RepoError> {
        self.inner
            .insert_pending(media, owner, session, reserved, quota)
            .await
    }
    async fn usage(
        &self,
        event_id: plugs_domain::EventId,
        owner: &plugs_domain::UserId,
    ) -> Result<(plugs_domain::Usage, plugs_domain::Usage), RepoError> {
        self.inner.usage(event_id, owner).await
    }
    async fn find_upload_session(
        &self,
        media_id: MediaId,
    ) -> Result<Option<plugs_domain::UploadSession>, RepoError> {
        self.inner.find_upload_session(media_id).await
    }
    async fn delete_media(&self, id: MediaId) -> Result<(), RepoError> {
        self.inner.delete_media(id).await
    }
    async fn find_media(&self, id: MediaId) -> Result<Option<EventMedia>, RepoError> {
        self.inner.find_media(id).await
    }
    async fn find_by_key(&self, s3_key: &str) -> Result<Option<EventMedia>, RepoError> {
        self.inner.find_by_key(s3_key).await
    }
    async fn list_ready(
        &self,
        event_id: EventId,
        filter: &MediaFilter,
        after: Option<PageCursor>,
        limit: usize,
    ) -> Result<Vec<EventMedia>, RepoError> {
        self.inner.list_ready(event_id, filter, after, limit).await
    }
    async fn list_all_for_event(&self, event_id: EventId) -> Result<Vec<EventMedia>, RepoError> {
        self.inner.list_all_for_event(event_id).await
    }
    async fn list_ready_by_id(
        &self,
        after: Option<MediaId>,
        limit: usize,
    ) -> Result<Vec<EventMedia>, RepoError> {
        self.inner.list_ready_by_id(after, limit).await
    }
    async fn list_stale(
        &self,
        status: MediaStatus,
        before: DateTime<Utc>,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<EventMedia>, RepoError> {
        self.inner.list_stale(status, before, now, limit).await
    }
}

fn racing_service(h: &Harness) -> MediaService {
    let racing = Arc::new(AnotherEditorFirst {
        inner: h.repo.clone(),
        armed: AtomicBool::new(true),
    });
    MediaService::new(
        h.store.clone(),
        h.repo.clone(),
        racing,
        h.repo.clone(),
        ServiceConfig::default(),
    )
    .with_clock(h.clock.clone())
}

#[tokio::test]
async fn an_edit_that_loses_a_race_is_refused_with_a_version_and_merged_again_without() {
    let h = Harness::new();
    let event = h.event().await;

    // With If-Match: the other editor's change makes the version stale; theirs stays.
    let media = h.upload_png(event, 100).await;
    let service = racing_service(&h);
    let result = service
        .edit_media(
            &h.alice,
            event,
            media.id,
            &title("Mine"),
            &at_version(media.updated_at),
        )
        .await;
    assert!(changed(result));
    let stored = h
        .service
        .get_media(&h.alice, event, media.id)
        .await
        .unwrap();
    assert_eq!(
        (stored.title.as_deref(), stored.description.as_deref()),
        (Some("Sunset"), Some("theirs"))
    );

    // Without: merged into their version, so both edits show.
    let media = h.upload_png(event, 100).await;
    let service = racing_service(&h);
    let edited = service
        .edit_media(&h.alice, event, media.id, &title("Mine"), &IfMatch::Any)
        .await
        .unwrap();
    assert_eq!(
        (edited.title.as_deref(), edited.description.as_deref()),
        (Some("Mine"), Some("theirs"))
    );
    // Theirs and ours refused; then theirs, ours refused, and ours merged into theirs.
    assert_eq!(h.repo.calls(RepoOp::UpdateFields), 5);
}

#[tokio::test]
async fn an_event_title_edit_is_guarded_the_same_way() {
    let h = Harness::new();
    let event_id = h.event().await;
    let event = h.service.get_event(&h.alice, event_id).await.unwrap();
    assert_eq!(event.updated_at, event.created_at);
    let rename = |title: &str| EventEdit {
        title: Some(title.to_owned()),
    };

    let renamed = h
        .service
        .edit_event(
            &h.alice,
            event_id,
            &rename("  Beach party "),
            &at_version(event.updated_at),
        )
        .await
        .unwrap();
    assert_eq!(renamed.title, "Beach party");
    assert_eq!(
        renamed.updated_at,
        event.updated_at + TimeDelta::microseconds(1)
    );
    assert_eq!(renamed.created_at, event.created_at);
    assert_eq!(
        h.service.get_event(&h.alice, event_id).await.unwrap(),
        renamed
    );

    assert!(changed(
        h.service
            .edit_event(
                &h.alice,
                event_id,
                &rename("Lost"),
                &at_version(event.updated_at)
            )
            .await
    ));
    assert!(not_found(
        h.service
            .edit_event(&h.bob, event_id, &rename("Mine"), &IfMatch::Any)
            .await
    ));
    assert!(not_found(
        h.service
            .edit_event(&h.alice, EventId::new(), &rename("Mine"), &IfMatch::Any)
            .await
    ));
    for bad in ["", "   ", &"x".repeat(201)] {
        assert!(matches!(
            h.service
                .edit_event(&h.alice, event_id, &rename(bad), &IfMatch::Any)
                .await,
            Err(MediaError::Invalid(_))
        ));
    }
    // No title given: nothing to change, but the version is still checked.
    let same = h
        .service
        .edit_event(
            &h.alice,
            event_id,
            &EventEdit::default(),
            &at_version(renamed.updated_at),
        )
        .await
        .unwrap();
    assert_eq!(same, renamed);
    assert_eq!(
        h.service.get_event(&h.alice, event_id).await.unwrap(),
        renamed
    );
    assert_eq!(h.repo.calls(RepoOp::UpdateEventTitle), 1);
}

const PDF: &[u8] = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n";

async fn upload(h: &Harness, event: EventId, pdf: bool, tags: &str) -> EventMedia {
    let (request, bytes) = if pdf {
        let request = UploadRequest {
            filename: Some("menu.pdf".into()),
            declared_content_type: Some("application/pdf".into()),
            ..png_request()
        };
        (request, PDF.to_vec())
    } else {
        (png_request(), common::png(200))
    };
    let request = UploadRequest {
        tags: Some(tags.to_owned()),
        ..request
    };
    let media = h
        .service
        .upload(&h.alice, event, request, body(bytes, 64))
        .await
        .unwrap();
    // Distinct, increasing creation times.
    h.clock.advance(TimeDelta::seconds(1));
    media
}

async fn every_page(h: &Harness, event: EventId, query: &MediaQuery, limit: u32) -> Vec<MediaId> {
    let mut served = Vec::new();
    let mut cursor = None;
    loop {
        let page = h
            .service
            .list_media_matching(
                &h.alice,
                event,
                query,
                PageRequest {
                    cursor,
                    limit: Some(limit),
                },
            )
            .await
            .unwrap();
        assert!(page.items.len() <= limit as usize);
        served.extend(page.items.iter().map(|m| m.id));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return served,
        }
    }
}

#[tokio::test]
async fn the_listing_filters_by_tag_and_kind_on_every_page() {
    let h = Harness::new();
    let event = h.event().await;
    let beach_photo = upload(&h, event, false, "Beach, sunset").await;
    let menu = upload(&h, event, true, "food").await;
    let plain_photo = upload(&h, event, false, "").await;
    let beach_pdf = upload(&h, event, true, "beach").await;
    let another = upload(&h, event, false, "BEACH").await;
    assert_eq!(menu.content_type, "application/pdf");

    let query = |tag: Option<&str>, kind: Option<&str>| MediaQuery {
        tag: tag.map(str::to_owned),
        kind: kind.map(str::to_owned),
    };
    let cases = [
        (
            query(None, None),
            vec![
                another.id,
                beach_pdf.id,
                plain_photo.id,
                menu.id,
                beach_photo.id,
            ],
        ),
        (
            query(Some(" Beach "), None),
            vec![another.id, beach_pdf.id, beach_photo.id],
        ),
        (query(None, Some("document")), vec![beach_pdf.id, menu.id]),
        (
            query(None, Some("IMAGE")),
            vec![another.id, plain_photo.id, beach_photo.id],
        ),
        (
            query(Some("beach"), Some("image")),
            vec![another.id, beach_photo.id],
        ),
        (query(None, Some("video")), vec![]),
        (query(Some("nobody"), None), vec![]),
        (
            query(Some(""), Some(" ")),
            vec![
                another.id,
                beach_pdf.id,
                plain_photo.id,
                menu.id,
                beach_photo.id,
            ],
        ),
    ];
    for (query, expected) in cases {
        for limit in [1, 2, 100] {
            assert_eq!(
                every_page(&h, event, &query, limit).await,
                expected,
                "{query:?} limit {limit}"
            );
        }
    }

    // An edit of the tags moves a media in or out of the filtered listing.
    h.service
        .edit_media(&h.alice, event, menu.id, &tags(&["beach"]), &IfMatch::Any)
        .await
        .unwrap();
    assert_eq!(
        every_page(&h, event, &query(Some("beach"), Some("document")), 1).await,
        [beach_pdf.id, menu.id]
    );

    for bad in [query(None, Some("photo")), query(Some("a,b"), None)] {
        let result = h
            .service
            .list_media_matching(&h.alice, event, &bad, PageRequest::default())
            .await;
        assert!(matches!(result, Err(MediaError::Invalid(_))), "{bad:?}");
    }
    assert!(not_found(
        h.service
            .list_media_matching(
                &h.bob,
                event,
                &query(Some("beach"), None),
                PageRequest::default()
            )
            .await
    ));
}
