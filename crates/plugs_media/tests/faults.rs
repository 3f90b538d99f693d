//! The fault matrix: every failure of the store, the database or the client leaves the store
//! and the database consistent, immediately or after `reconcile`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use chrono::TimeDelta;
use common::{
    Harness, all_records, assert_consistent, body, failing_body, object_keys, png, png_request,
    put_orphan,
};
use plugs_domain::{EventMedia, MediaId, MediaStatus, keys};
use plugs_media::{MediaError, ReconcileOptions, ReconcileReport};
use plugs_persistence::{FaultKind, MediaRepository, RepoOp};
use plugs_storage::{ObjectKey, ObjectStore, StoreError, SweepReport};

async fn reconcile(h: &Harness) -> ReconcileReport {
    h.service
        .reconcile(ReconcileOptions::default())
        .await
        .unwrap()
}

#[tokio::test]
async fn store_refusing_the_put_leaves_nothing() {
    let h = Harness::new();
    let event = h.event().await;
    h.store.faults().refuse_next_put = true;
    let error = h
        .service
        .upload(&h.alice, event, png_request(), body(png(5000), 1000))
        .await
        .unwrap_err();
    assert!(
        matches!(error, MediaError::Store(StoreError::Unavailable { .. })),
        "{error:?}"
    );
    assert!(error.is_unavailable());
    assert!(all_records(&h.repo, MediaStatus::Pending).await.is_empty());
    assert_consistent(h.store.as_ref(), &h.repo, &[]).await;
}

#[tokio::test]
async fn store_failing_mid_stream_leaves_nothing() {
    let h = Harness::new();
    let event = h.event().await;
    h.store.faults().fail_next_put_after = Some(12_000);
    let error = h
        .service
        .upload(&h.alice, event, png_request(), body(png(50_000), 1000))
        .await
        .unwrap_err();
    assert!(
        matches!(error, MediaError::Store(StoreError::Unavailable { .. })),
        "{error:?}"
    );
    assert!(object_keys(h.store.as_ref()).await.is_empty());
    assert_consistent(h.store.as_ref(), &h.repo, &[]).await;
}

#[tokio::test]
async fn store_storing_but_losing_the_answer_leaves_nothing() {
    let h = Harness::new();
    let event = h.event().await;
    h.store.faults().fail_next_put_after_commit = true;
    let error = h
        .service
        .upload(&h.alice, event, png_request(), body(png(5000), 1000))
        .await
        .unwrap_err();
    assert!(error.is_unavailable(), "{error:?}");
    assert!(
        object_keys(h.store.as_ref()).await.is_empty(),
        "the object the store kept was removed"
    );
    assert_consistent(h.store.as_ref(), &h.repo, &[]).await;
}

#[tokio::test]
async fn client_disconnecting_mid_upload_leaves_nothing() {
    let h = Harness::new();
    let event = h.event().await;
    // After the sniffed head: the record exists and the bytes are moving.
    let error = h
        .service
        .upload(
            &h.alice,
            event,
            png_request(),
            failing_body(png(50_000), 1000, 20_000),
        )
        .await;
    assert!(
        matches!(error, Err(MediaError::UploadInterrupted { .. })),
        "{error:?}"
    );
    assert_eq!(h.repo.calls(RepoOp::InsertMedia), 1);
    assert_consistent(h.store.as_ref(), &h.repo, &[]).await;

    // Within the head: refused before any record.
    let error = h
        .service
        .upload(
            &h.alice,
            event,
            png_request(),
            failing_body(png(50_000), 1000, 3000),
        )
        .await;
    assert!(
        matches!(error, Err(MediaError::UploadInterrupted { .. })),
        "{error:?}"
    );
    assert_eq!(h.repo.calls(RepoOp::InsertMedia), 1);
    assert_consistent(h.store.as_ref(), &h.repo, &[]).await;
}

#[tokio::test]
async fn database_down_before_the_bytes_move_stores_no_object() {
    let h = Harness::new();
    let event = h.event().await;
    h.repo
        .fail_next(RepoOp::InsertMedia, FaultKind::Unavailable);
    let error = h
        .service
        .upload(&h.alice, event, png_request(), body(png(5000), 1000))
        .await
        .unwrap_err();
    assert!(
        matches!(error, MediaError::Repository(_)) && error.is_unavailable(),
        "{error:?}"
    );
    assert_eq!(h.store.puts(), 0);
    assert_consistent(h.store.as_ref(), &h.repo, &[]).await;
}

#[tokio::test]
async fn a_pending_insert_whose_answer_is_lost_leaves_no_record() {
    let h = Harness::new();
    let event = h.event().await;
    h.repo
        .fail_next(RepoOp::InsertMedia, FaultKind::UnavailableAfterCommit);
    let error = h
        .service
        .upload(&h.alice, event, png_request(), body(png(5000), 1000))
        .await
        .unwrap_err();
    assert!(error.is_unavailable(), "{error:?}");
    assert_eq!(h.store.puts(), 0);
    assert_consistent(h.store.as_ref(), &h.repo, &[]).await;
}

#[tokio::test]
async fn reconcile_pages_through_more_stale_records_than_one_batch() {
    let h = Harness::new();
    let event = h.event().await;
    let at = h.clock_now();
    for i in 0..1_100 {
        let record = EventMedia {
            id: MediaId::new(),
            event_id: event,
            title: None,
            description: None,
            tags: Vec::new(),
            original_filename: None,
            content_type: "image/png".into(),
            size_bytes: 0,
            sha256: None,
            s3_key: keys::media_key(event, at + TimeDelta::microseconds(i), "png"),
            status: MediaStatus::Pending,
            uploaded_by: h.alice.clone(),
            created_at: at,
            updated_at: at,
            // Records written before leases existed: the grace period decides.
            lease_until: None,
            location_stripped: false,
        };
        h.repo.insert_media(&record).await.unwrap();
        // Every tenth one got its bytes stored before the crash.
        if i % 10 == 0 {
            put_orphan(&h.store, &record.s3_key).await;
        }
    }
    h.after_grace();
    let dry = h
        .service
        .reconcile(ReconcileOptions {
            dry_run: true,
            grace: None,
        })
        .await
        .unwrap();
    assert_eq!(
        dry,
        ReconcileReport {
            pending_rolled_back: 1_100,
            ..ReconcileReport::default()
        }
    );
    assert_eq!(
        all_records(&h.repo, MediaStatus::Pending).await.len(),
        1_100
    );

    let done = reconcile(&h).await;
    assert_eq!(
        done,
        ReconcileReport {
            pending_rolled_back: 1_100,
            ..ReconcileReport::default()
        }
    );
    assert_consistent(h.store.as_ref(), &h.repo, &[]).await;
    assert!(object_keys(h.store.as_ref()).await.is_empty());
}

#[tokio::test]
async fn database_failing_the_final_commit_removes_object_and_record() {
    for kind in [FaultKind::Unavailable, FaultKind::UnavailableAfterCommit] {
        let h = Harness::new();
        let event = h.event().await;
        h.repo.fail_next(RepoOp::MarkReady, kind);
        let error = h
            .service
            .upload(&h.alice, event, png_request(), body(png(5000), 1000))
            .await
            .unwrap_err();
        assert!(error.is_unavailable(), "{kind:?}: {error:?}");
        assert!(object_keys(h.store.as_ref()).await.is_empty(), "{kind:?}");
        assert!(
            all_records(&h.repo, MediaStatus::Ready).await.is_empty(),
            "{kind:?}"
        );
        assert_consistent(h.store.as_ref(), &h.repo, &[]).await;
    }
}

#[tokio::test]
async fn when_the_cleanup_fails_too_reconcile_rolls_the_upload_back() {
    let h = Harness::new();
    let event = h.event().await;
    h.repo.fail_next(RepoOp::MarkReady, FaultKind::Unavailable);
    h.repo
        .fail_next(RepoOp::MarkDeleting, FaultKind::Unavailable);
    let error = h
        .service
        .upload(&h.alice, event, png_request(), body(png(5000), 1000))
        .await
        .unwrap_err();
    assert!(error.is_unavailable());
    // Left as designed: a pending record claiming the object, invisible to users.
    assert_eq!(all_records(&h.repo, MediaStatus::Pending).await.len(), 1);
    assert_eq!(object_keys(h.store.as_ref()).await.len(), 1);
    assert!(
        h.service
            .list_media(&h.alice, event, Default::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert_consistent(h.store.as_ref(), &h.repo, &[MediaStatus::Pending]).await;

    // Within the grace period the reconciler leaves a possibly live upload alone.
    assert_eq!(reconcile(&h).await, ReconcileReport::default());
    assert_eq!(all_records(&h.repo, MediaStatus::Pending).await.len(), 1);

    h.after_grace();
    let report = reconcile(&h).await;
    assert_eq!(
        report,
        ReconcileReport {
            pending_rolled_back: 1,
            ..ReconcileReport::default()
        }
    );
    assert!(object_keys(h.store.as_ref()).await.is_empty());
    assert_consistent(h.store.as_ref(), &h.repo, &[]).await;
}

#[tokio::test]
async fn when_the_store_refuses_the_cleanup_delete_reconcile_finishes_it() {
    let h = Harness::new();
    let event = h.event().await;
    h.repo.fail_next(RepoOp::MarkReady, FaultKind::Unavailable);
    h.store.faults().fail_deletes = 1;
    assert!(
        h.service
            .upload(&h.alice, event, png_request(), body(png(5000), 1000))
            .await
            .is_err()
    );
    assert_consistent(h.store.as_ref(), &h.repo, &[MediaStatus::Deleting]).await;

    h.after_grace();
    assert_eq!(
        reconcile(&h).await,
        ReconcileReport {
            deleting_finished: 1,
            ..ReconcileReport::default()
        }
    );
    assert!(object_keys(h.store.as_ref()).await.is_empty());
    assert_consistent(h.store.as_ref(), &h.repo, &[]).await;
}

#[tokio::test]
async fn store_failing_the_delete_leaves_deleting_for_reconcile() {
    let h = Harness::new();
    let event = h.event().await;
    let media = h.upload_png(event, 5000).await;
    h.store.faults().fail_deletes = 1;
    let error = h
        .service
        .delete_media(&h.alice, event, media.id)
        .await
        .unwrap_err();
    assert!(error.is_unavailable(), "{error:?}");
    assert_eq!(
        h.repo.find_media(media.id).await.unwrap().unwrap().status,
        MediaStatus::Deleting
    );
    assert!(matches!(
        h.service.get_media(&h.alice, event, media.id).await,
        Err(MediaError::NotFound { .. })
    ));
    assert_consistent(h.store.as_ref(), &h.repo, &[MediaStatus::Deleting]).await;

    h.after_grace();
    assert_eq!(
        reconcile(&h).await,
        ReconcileReport {
            deleting_finished: 1,
            ..ReconcileReport::default()
        }
    );
    assert!(h.repo.find_media(media.id).await.unwrap().is_none());
    assert_consistent(h.store.as_ref(), &h.repo, &[]).await;
}

#[tokio::test]
async fn retrying_a_half_failed_delete_finishes_it() {
    let h = Harness::new();
    let event = h.event().await;
    let media = h.upload_png(event, 5000).await;
    h.repo
        .fail_next(RepoOp::DeleteMedia, FaultKind::Unavailable);
    assert!(
        h.service
            .delete_media(&h.alice, event, media.id)
            .await
            .unwrap_err()
            .is_unavailable()
    );
    // The object is gone, the record says so.
    assert!(object_keys(h.store.as_ref()).await.is_empty());
    assert_consistent(h.store.as_ref(), &h.repo, &[MediaStatus::Deleting]).await;

    h.service
        .delete_media(&h.alice, event, media.id)
        .await
        .unwrap();
    assert!(h.repo.find_media(media.id).await.unwrap().is_none());
    assert_consistent(h.store.as_ref(), &h.repo, &[]).await;
}

#[tokio::test]
async fn deleting_an_event_stops_at_a_store_failure_and_keeps_the_event() {
    let h = Harness::new();
    let event = h.event().await;
    h.upload_png(event, 100).await;
    h.clock.advance(TimeDelta::seconds(1));
    h.upload_png(event, 200).await;
    h.store.faults().fail_deletes = 1;
    assert!(
        h.service
            .delete_event(&h.alice, event)
            .await
            .unwrap_err()
            .is_unavailable()
    );
    assert!(h.service.get_event(&h.alice, event).await.is_ok());
    assert_consistent(h.store.as_ref(), &h.repo, &[MediaStatus::Deleting]).await;

    h.service.delete_event(&h.alice, event).await.unwrap();
    assert!(object_keys(h.store.as_ref()).await.is_empty());
    assert_consistent(h.store.as_ref(), &h.repo, &[]).await;
}

#[tokio::test]
async fn reconcile_deletes_old_orphans_and_spares_fresh_ones() {
    let h = Harness::new();
    let event = h.event().await;
    let kept = h.upload_png(event, 300).await;
    let old = keys::media_key(event, h.clock_now() - TimeDelta::seconds(1), "png");
    put_orphan(&h.store, &old).await;
    put_orphan(&h.store, "events/not-one-of-our-keys.bin").await;
    h.after_grace();
    let fresh = keys::media_key(event, h.clock_now(), "jpg");
    put_orphan(&h.store, &fresh).await;

    let report = reconcile(&h).await;
    assert_eq!(
        report,
        ReconcileReport {
            orphans_found: 2,
            orphans_deleted: 2,
            ..ReconcileReport::default()
        }
    );
    let mut left = object_keys(h.store.as_ref()).await;
    left.sort();
    let mut expected = vec![kept.s3_key.clone(), fresh.clone()];
    expected.sort();
    assert_eq!(left, expected);

    // A custom grace period applies too.
    h.clock.advance(TimeDelta::minutes(10));
    let report = h
        .service
        .reconcile(ReconcileOptions {
            dry_run: false,
            grace: Some(Duration::from_secs(60)),
        })
        .await;
    assert_eq!(report.unwrap().orphans_deleted, 1);
    assert_eq!(object_keys(h.store.as_ref()).await, [kept.s3_key]);
    assert_consistent(h.store.as_ref(), &h.repo, &[]).await;
}

#[tokio::test]
async fn reconcile_pages_through_a_large_store() {
    let h = Harness::new();
    let event = h.event().await;
    for i in 0..1_200 {
        put_orphan(&h.store, &format!("events/{event}/media/stray-{i:05}.bin")).await;
    }
    let media = h.upload_png(event, 300).await;
    h.after_grace();
    let report = reconcile(&h).await;
    assert_eq!(report.orphans_deleted, 1_200);
    assert_eq!(object_keys(h.store.as_ref()).await, [media.s3_key]);
}

#[tokio::test]
async fn dry_run_changes_nothing_and_counts_what_would_be_done() {
    let h = Harness::new();
    let event = h.event().await;
    // A ready media whose object vanished behind the service's back.
    let lost = h.upload_png(event, 100).await;
    h.store
        .delete(&ObjectKey::parse(lost.s3_key.as_str()).unwrap())
        .await
        .unwrap();
    // A pending upload that died (its cleanup failed), a delete that stopped half-way, an orphan.
    h.clock.advance(TimeDelta::seconds(1));
    h.repo.fail_next(RepoOp::MarkReady, FaultKind::Unavailable);
    h.repo
        .fail_next(RepoOp::MarkDeleting, FaultKind::Unavailable);
    assert!(
        h.service
            .upload(&h.alice, event, png_request(), body(png(200), 100))
            .await
            .is_err()
    );
    h.clock.advance(TimeDelta::seconds(1));
    let deleting = h.upload_png(event, 300).await;
    h.store.faults().fail_deletes = 1;
    assert!(
        h.service
            .delete_media(&h.alice, event, deleting.id)
            .await
            .is_err()
    );
    put_orphan(
        &h.store,
        &keys::media_key(event, h.clock_now() + TimeDelta::seconds(1), "png"),
    )
    .await;
    h.after_grace();

    let objects_before = object_keys(h.store.as_ref()).await;
    let expected = ReconcileReport {
        pending_rolled_back: 1,
        deleting_finished: 1,
        orphans_found: 1,
        missing_objects: vec![lost.id],
        ..ReconcileReport::default()
    };
    let dry = h
        .service
        .reconcile(ReconcileOptions {
            dry_run: true,
            grace: None,
        })
        .await
        .unwrap();
    assert_eq!(dry, expected);
    assert_eq!(object_keys(h.store.as_ref()).await, objects_before);
    assert_eq!(all_records(&h.repo, MediaStatus::Pending).await.len(), 1);
    assert_eq!(all_records(&h.repo, MediaStatus::Deleting).await.len(), 1);
    assert_eq!(all_records(&h.repo, MediaStatus::Ready).await.len(), 1);

    let done = reconcile(&h).await;
    assert_eq!(
        done,
        ReconcileReport {
            orphans_deleted: 1,
            ..expected
        }
    );
    // The lost object's record is reported, never deleted.
    assert_eq!(
        all_records(&h.repo, MediaStatus::Ready).await,
        std::slice::from_ref(&lost)
    );
    assert!(all_records(&h.repo, MediaStatus::Pending).await.is_empty());
    assert!(all_records(&h.repo, MediaStatus::Deleting).await.is_empty());
    assert!(object_keys(h.store.as_ref()).await.is_empty());
    // And reading it answers not found rather than a server error.
    let error = h
        .service
        .open_media(&h.alice, event, lost.id, Default::default())
        .await
        .unwrap_err();
    assert!(
        matches!(error, MediaError::NotFound { what: "media", .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn reconcile_reports_repair_failures_and_a_later_run_finishes() {
    let h = Harness::new();
    let event = h.event().await;
    let media = h.upload_png(event, 100).await;
    h.store.faults().fail_deletes = 1;
    assert!(
        h.service
            .delete_media(&h.alice, event, media.id)
            .await
            .is_err()
    );
    h.after_grace();
    h.store.faults().fail_deletes = 1;
    let report = reconcile(&h).await;
    assert_eq!(
        report,
        ReconcileReport {
            failed: 1,
            ..ReconcileReport::default()
        }
    );
    assert_consistent(h.store.as_ref(), &h.repo, &[MediaStatus::Deleting]).await;
    assert_eq!(
        reconcile(&h).await,
        ReconcileReport {
            deleting_finished: 1,
            ..ReconcileReport::default()
        }
    );
    assert_consistent(h.store.as_ref(), &h.repo, &[]).await;
}

#[tokio::test]
async fn reconcile_stops_with_the_error_when_a_backend_is_down() {
    let h = Harness::new();
    h.repo.set_unavailable(true);
    assert!(
        h.service
            .reconcile(ReconcileOptions::default())
            .await
            .unwrap_err()
            .is_unavailable()
    );
    h.repo.set_unavailable(false);
    h.store.faults().unavailable = true;
    assert!(
        h.service
            .reconcile(ReconcileOptions::default())
            .await
            .unwrap_err()
            .is_unavailable()
    );
}

#[tokio::test]
async fn readiness_needs_both_the_database_and_the_store() {
    let h = Harness::new();
    h.service.check_ready().await.unwrap();
    h.repo.set_unavailable(true);
    assert!(matches!(
        h.service.check_ready().await,
        Err(MediaError::Repository(_))
    ));
    h.repo.set_unavailable(false);
    h.store.faults().unavailable = true;
    assert!(matches!(
        h.service.check_ready().await,
        Err(MediaError::Store(_))
    ));
}

/// A repository in which every upload listed as a stale `pending` record finishes (is marked
/// `ready`) right after the listing, before the reconciler acts on it: the race between a
/// slow upload and a reconciler pass, made deterministic.
#[derive(Debug)]
struct UploadFinishesWhileListed {
    inner: std::sync::Arc<plugs_persistence::InMemoryRepository>,
    finish: plugs_persistence::ReadyUpdate,
}

#[async_trait::async_trait]
impl MediaRepository for UploadFinishesWhileListed {
    async fn insert_media(&self, media: &EventMedia) -> Result<(), plugs_persistence::RepoError> {
        self.inner.insert_media(media).await
    }
    async fn mark_ready(
        &self,
        id: MediaId,
        update: plugs_persistence::ReadyUpdate,
    ) -> Result<EventMedia, plugs_persistence::RepoError> {
        self.inner.mark_ready(id, update).await
    }
    async fn mark_deleting(
        &self,
        id: MediaId,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<EventMedia, plugs_persistence::RepoError> {
        self.inner.mark_deleting(id, at).await
    }
    async fn mark_deleting_if_stale(
        &self,
        id: MediaId,
        expected: MediaStatus,
        updated_before: chrono::DateTime<chrono::Utc>,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<Option<EventMedia>, plugs_persistence::RepoError> {
        self.inner
            .mark_deleting_if_stale(id, expected, updated_before, at)
            .await
    }
    async fn abandon_pending(
        &self,
        id: MediaId,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<Option<EventMedia>, plugs_persistence::RepoError> {
        self.inner.abandon_pending(id, at).await
    }
    async fn renew_lease(
        &self,
        id: MediaId,
        until: chrono::DateTime<chrono::Utc>,
    ) -> Result<bool, plugs_persistence::RepoError> {
        self.inner.renew_lease(id, until).await
    }
    async fn insert_pending(
        &self,
        media: &EventMedia,
        owner: Option<&plugs_domain::UserId>,
        session: Option<&plugs_domain::UploadSession>,
        reserved: u64,
        quota: &plugs_domain::Quota,
    ) -> Result<(), plugs_persistence::RepoError> {
        self.inner
            .insert_pending(media, owner, session, reserved, quota)
            .await
    }
    async fn usage(
        &self,
        event_id: plugs_domain::EventId,
        owner: &plugs_domain::UserId,
    ) -> Result<(plugs_domain::Usage, plugs_domain::Usage), plugs_persistence::RepoError> {
        self.inner.usage(event_id, owner).await
    }
    async fn find_upload_session(
        &self,
        media_id: MediaId,
    ) -> Result<Option<plugs_domain::UploadSession>, plugs_persistence::RepoError> {
        self.inner.find_upload_session(media_id).await
    }
    async fn delete_media(&self, id: MediaId) -> Result<(), plugs_persistence::RepoError> {
        self.inner.delete_media(id).await
    }
    async fn find_media(
        &self,
        id: MediaId,
    ) -> Result<Option<EventMedia>, plugs_persistence::RepoError> {
        self.inner.find_media(id).await
    }
    async fn find_by_key(
        &self,
        s3_key: &str,
    ) -> Result<Option<EventMedia>, plugs_persistence::RepoError> {
        self.inner.find_by_key(s3_key).await
    }
    async fn update_fields(
        &self,
        id: MediaId,
        update: plugs_persistence::FieldsUpdate,
    ) -> Result<Option<EventMedia>, plugs_persistence::RepoError> {
        self.inner.update_fields(id, update).await
    }
    async fn list_ready(
        &self,
        event_id: plugs_domain::EventId,
        filter: &plugs_persistence::MediaFilter,
        after: Option<plugs_domain::PageCursor>,
        limit: usize,
    ) -> Result<Vec<EventMedia>, plugs_persistence::RepoError> {
        self.inner.list_ready(event_id, filter, after, limit).await
    }
    async fn list_all_for_event(
        &self,
        event_id: plugs_domain::EventId,
    ) -> Result<Vec<EventMedia>, plugs_persistence::RepoError> {
        self.inner.list_all_for_event(event_id).await
    }
    async fn list_ready_by_id(
        &self,
        after: Option<MediaId>,
        limit: usize,
    ) -> Result<Vec<EventMedia>, plugs_persistence::RepoError> {
        self.inner.list_ready_by_id(after, limit).await
    }
    async fn list_stale(
        &self,
        status: MediaStatus,
        before: chrono::DateTime<chrono::Utc>,
        now: chrono::DateTime<chrono::Utc>,
        limit: usize,
    ) -> Result<Vec<EventMedia>, plugs_persistence::RepoError> {
        let listed = self.inner.list_stale(status, before, now, limit).await?;
        if status == MediaStatus::Pending {
            for media in &listed {
                self.inner.mark_ready(media.id, self.finish.clone()).await?;
            }
        }
        Ok(listed)
    }
}

#[tokio::test]
async fn reconcile_leaves_alone_an_upload_that_finishes_after_being_listed_as_stale() {
    let h = Harness::new();
    let event = h.event().await;
    // An upload in flight: its pending record is written and its bytes are in the store, but
    // it has taken longer than the grace period.
    let bytes = png(3000);
    let key = keys::media_key(event, h.clock_now(), "png");
    let now = h.clock_now();
    let media = EventMedia {
        id: MediaId::new(),
        event_id: event,
        title: None,
        description: None,
        tags: Vec::new(),
        original_filename: None,
        content_type: "image/png".into(),
        size_bytes: 0,
        sha256: None,
        s3_key: key.clone(),
        status: MediaStatus::Pending,
        uploaded_by: h.alice.clone(),
        created_at: now,
        updated_at: now,
        lease_until: None,
        location_stripped: false,
    };
    h.repo.insert_media(&media).await.unwrap();
    use plugs_storage::ObjectStoreExt as _;
    h.store
        .put_bytes(
            &ObjectKey::parse(key.as_str()).unwrap(),
            bytes.clone().into(),
            plugs_storage::PutOptions::default(),
        )
        .await
        .unwrap();
    h.after_grace();

    let racing = std::sync::Arc::new(UploadFinishesWhileListed {
        inner: h.repo.clone(),
        finish: plugs_persistence::ReadyUpdate {
            size_bytes: bytes.len() as u64,
            sha256: common::sha256_hex(&bytes),
            fields: plugs_domain::MediaFields::default(),
            at: h.clock_now(),
            location_stripped: false,
        },
    });
    let service = plugs_media::MediaService::new(
        h.store.clone(),
        h.repo.clone(),
        racing,
        h.repo.clone(),
        plugs_media::ServiceConfig::default(),
    )
    .with_clock(h.clock.clone());
    let report = service
        .reconcile(ReconcileOptions::default())
        .await
        .unwrap();

    assert_eq!(report.pending_rolled_back, 0, "{report:?}");
    assert_eq!(report.failed, 0, "{report:?}");
    let kept = h.repo.find_media(media.id).await.unwrap().unwrap();
    assert_eq!(kept.status, MediaStatus::Ready);
    assert_eq!(object_keys(h.store.as_ref()).await, vec![key]);
    assert_consistent(h.store.as_ref(), &h.repo, &[]).await;
}

/// What a store's sweep found: `found` stale temporary files, `failed` of which stayed.
fn temp_file_sweep(found: u64, failed: u64) -> SweepReport {
    let mut report = SweepReport::default();
    report.temp_files.found = found;
    report.temp_files.removed = found - failed;
    report.temp_files.failed = failed;
    report
}

#[tokio::test]
async fn reconcile_sweeps_the_store_with_its_own_cutoff_and_reports_what_it_did() {
    let h = Harness::new();
    let grace = TimeDelta::hours(1);
    h.store.faults().next_sweep = Some(temp_file_sweep(3, 0));
    let report = reconcile(&h).await;
    assert_eq!(
        report,
        ReconcileReport {
            sweep: temp_file_sweep(3, 0),
            ..ReconcileReport::default()
        }
    );

    // A dry run asks the store for a dry sweep; a custom grace moves the cutoff.
    let report = h
        .service
        .reconcile(ReconcileOptions {
            dry_run: true,
            grace: Some(Duration::from_secs(60)),
        })
        .await
        .unwrap();
    assert_eq!(report, ReconcileReport::default());
    let now = h.clock_now();
    assert_eq!(
        h.store.sweeps(),
        [(now - grace, false), (now - TimeDelta::seconds(60), true)]
    );
}

#[tokio::test]
async fn a_failing_sweep_is_counted_and_the_rest_of_the_pass_still_runs() {
    let h = Harness::new();
    let event = h.event().await;
    let orphan = keys::media_key(event, h.clock_now(), "png");
    put_orphan(&h.store, &orphan).await;
    h.after_grace();
    h.store.faults().fail_next_sweep = true;
    assert_eq!(
        reconcile(&h).await,
        ReconcileReport {
            orphans_found: 1,
            orphans_deleted: 1,
            failed: 1,
            ..ReconcileReport::default()
        }
    );
    assert!(object_keys(h.store.as_ref()).await.is_empty());

    // Leftovers the store could not remove count as failed repairs too.
    h.store.faults().next_sweep = Some(temp_file_sweep(2, 1));
    assert_eq!(
        reconcile(&h).await,
        ReconcileReport {
            sweep: temp_file_sweep(2, 1),
            failed: 1,
            ..ReconcileReport::default()
        }
    );
}
