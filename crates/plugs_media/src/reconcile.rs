//! The reconciler: finishes or rolls back what a crash or an outage left half done, and removes
//! objects that no record claims.

use std::collections::HashSet;

use chrono::{DateTime, TimeDelta, Utc};
use plugs_domain::{EventMedia, MediaId, MediaStatus, keys::MEDIA_ROOT};
use plugs_persistence::MediaRepository;
use plugs_storage::{ListOptions, StoreError};

use crate::service::object_key;
use crate::{MediaError, MediaService, ReconcileOptions, ReconcileReport};

/// Records asked of the repository per call, and keys per store listing page.
const BATCH: usize = 500;
/// Most records one run looks at without changing them (dry runs, the `ready` check). The
/// repository lists stale records oldest first without a cursor, so records a run leaves in
/// place must be skipped by id; this bounds that bookkeeping. The next run sees the rest.
const MAX_UNCHANGED: usize = 10_000;

/// Where direct and resumable uploads stage their bytes before they are verified.
const STAGING_ROOT: &str = "uploads/";

impl MediaService {
    /// One reconciler pass, in this order:
    /// 1. `pending` records older than the grace period: the upload died. Rolled back
    ///    (record to `deleting`, object deleted if any, record deleted); never completed.
    /// 2. `deleting` records older than the grace period: a delete stopped half-way; finished.
    /// 3. Objects under `events/` older than the grace period that no record claims (orphans):
    ///    deleted.
    /// 4. The store's leftovers of writes that never finished (a killed process's temporary
    ///    files, unfinished multipart uploads) older than the grace period:
    ///    [`ObjectStore::sweep`](plugs_storage::ObjectStore::sweep) removes them, and
    ///    [`ReconcileReport::sweep`] says what it did.
    /// 5. `ready` records whose object is missing: reported in
    ///    [`ReconcileReport::missing_objects`], never deleted.
    ///
    /// With `dry_run` nothing changes and the counts say what would be done. A failure to
    /// repair one item is logged and counted in [`ReconcileReport::failed`], and the pass goes
    /// on; a failure to list (store or database down) ends it with the error. The store
    /// listing is read one page at a time. A sweep that fails as a whole (a store refusing the
    /// listing of its leftovers) is logged and counted in `failed` too: the rest of the pass
    /// still runs.
    pub async fn reconcile(
        &self,
        options: ReconcileOptions,
    ) -> Result<ReconcileReport, MediaError> {
        let grace = options.grace.unwrap_or(self.config.reconcile_grace);
        let now = self.clock.now();
        let cutoff = TimeDelta::from_std(grace)
            .ok()
            .and_then(|grace| now.checked_sub_signed(grace))
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        let dry_run = options.dry_run;
        let mut report = ReconcileReport::default();

        let mut scan = StaleScan::new(MediaStatus::Pending, cutoff, now);
        while let Some(batch) = scan.next_batch(self.media.as_ref()).await? {
            for media in batch {
                if dry_run {
                    report.pending_rolled_back += 1;
                    scan.unchanged += 1;
                } else {
                    match self.claim_stale(&media, cutoff, &mut report).await {
                        // Finished (or gone) since it was listed: not ours to roll back.
                        Claim::Moved => {}
                        Claim::Failed => scan.unchanged += 1,
                        Claim::Claimed(claimed) => {
                            if self
                                .repair(&claimed, "roll back pending upload", &mut report)
                                .await
                            {
                                report.pending_rolled_back += 1;
                            } else {
                                scan.unchanged += 1;
                            }
                        }
                    }
                }
            }
        }

        let mut scan = StaleScan::new(MediaStatus::Deleting, cutoff, now);
        while let Some(batch) = scan.next_batch(self.media.as_ref()).await? {
            for media in batch {
                if dry_run {
                    report.deleting_finished += 1;
                    scan.unchanged += 1;
                } else if self.repair(&media, "finish delete", &mut report).await {
                    report.deleting_finished += 1;
                } else {
                    scan.unchanged += 1;
                }
            }
        }

        self.collect_orphans(cutoff, dry_run, &mut report).await?;

        // Leftovers of unfinished writes (temp files, open multipart uploads) are only swept once
        // older than a whole upload lease too, whatever the grace: an upload in flight touches
        // its temp file with every chunk and renews its lease every third of it, so nothing it
        // is still writing is that old.
        let lease = TimeDelta::from_std(self.config.upload_lease).unwrap_or(TimeDelta::MAX);
        let sweep_cutoff = now
            .checked_sub_signed(lease)
            .map_or(DateTime::<Utc>::MIN_UTC, |leased| leased.min(cutoff));
        match self.store.sweep(sweep_cutoff, dry_run).await {
            Ok(sweep) => {
                report.failed += sweep.failed();
                if let Some(why) = &sweep.skipped {
                    tracing::warn!(reason = %why, "reconcile: the store skipped its sweep");
                }
                report.sweep = sweep;
            }
            Err(error) => {
                tracing::warn!(error = %error, "reconcile: the store's sweep failed");
                report.failed += 1;
            }
        }

        let mut scan = StaleScan::new(MediaStatus::Ready, now, now);
        while let Some(batch) = scan.next_batch(self.media.as_ref()).await? {
            for media in batch {
                scan.unchanged += 1;
                self.check_object(&media, &mut report).await;
            }
        }

        tracing::info!(?report, dry_run, "reconcile finished");
        Ok(report)
    }

    /// Moves a stale `pending` record to `deleting`, unless it changed since it was listed: an
    /// upload slower than the grace period may have just been marked `ready` (and its client
    /// told so), and must then be left alone.
    async fn claim_stale(
        &self,
        media: &EventMedia,
        cutoff: DateTime<Utc>,
        report: &mut ReconcileReport,
    ) -> Claim {
        match self
            .media
            .mark_deleting_if_stale(media.id, MediaStatus::Pending, cutoff, self.clock.now())
            .await
        {
            Ok(Some(claimed)) => Claim::Claimed(Box::new(claimed)),
            Ok(None) => {
                tracing::info!(media_id = %media.id, "reconcile: pending upload finished or moved on since listed; left alone");
                Claim::Moved
            }
            Err(error) => {
                tracing::warn!(media_id = %media.id, error = %error, "reconcile: could not claim a stale pending upload");
                report.failed += 1;
                Claim::Failed
            }
        }
    }

    /// Removes a stale record and its object; whether it worked.
    async fn repair(&self, media: &EventMedia, what: &str, report: &mut ReconcileReport) -> bool {
        match self.remove_media(media).await {
            Ok(()) => {
                tracing::info!(media_id = %media.id, key = %media.s3_key, "reconcile: {what}");
                true
            }
            Err(error) => {
                tracing::warn!(media_id = %media.id, key = %media.s3_key, error = %error, "reconcile: could not {what}");
                report.failed += 1;
                false
            }
        }
    }

    /// Deletes objects under `events/` and `uploads/` that no record claims, once older than
    /// the grace period.
    async fn collect_orphans(
        &self,
        cutoff: DateTime<Utc>,
        dry_run: bool,
        report: &mut ReconcileReport,
    ) -> Result<(), MediaError> {
        for prefix in [MEDIA_ROOT, STAGING_ROOT] {
            self.collect_orphans_under(prefix, cutoff, dry_run, report)
                .await?;
        }
        Ok(())
    }

    /// Whether a record claims the object: for `events/`, the record of that key; for staged
    /// bytes under `uploads/{event_id}/{upload_id}[.suffix]`, a `pending` upload of that id
    /// (bytes that arrived after an abort, or after their upload expired, are claimed by none).
    async fn claimed(&self, key: &str) -> Result<bool, MediaError> {
        if let Some(staged) = key.strip_prefix(STAGING_ROOT) {
            let upload = staged
                .split('/')
                .nth(1)
                .and_then(|name| name.split('.').next())
                .and_then(|id| id.parse::<plugs_domain::MediaId>().ok());
            return Ok(match upload {
                Some(id) => self
                    .media
                    .find_media(id)
                    .await?
                    .is_some_and(|media| media.status == MediaStatus::Pending),
                None => false,
            });
        }
        if let Some(claimed) = self.derived_claimed(key).await? {
            return Ok(claimed);
        }
        Ok(self.media.find_by_key(key).await?.is_some())
    }

    async fn collect_orphans_under(
        &self,
        prefix: &str,
        cutoff: DateTime<Utc>,
        dry_run: bool,
        report: &mut ReconcileReport,
    ) -> Result<(), MediaError> {
        let mut page_token = None;
        loop {
            let mut options = ListOptions::default();
            options.prefix = Some(prefix.to_owned());
            options.page_token = page_token;
            options.max_keys = Some(BATCH);
            let page = self.store.list(options).await?;
            for object in page.objects {
                // Younger objects may belong to an upload whose record is being written.
                if object.last_modified > cutoff {
                    continue;
                }
                match self.claimed(object.key.as_str()).await {
                    Ok(true) => continue,
                    Ok(false) => {}
                    Err(error) => {
                        tracing::warn!(key = %object.key, error = %error, "reconcile: could not look up an object's record");
                        report.failed += 1;
                        continue;
                    }
                }
                report.orphans_found += 1;
                if dry_run {
                    continue;
                }
                match self.store.delete(&object.key).await {
                    Ok(()) | Err(StoreError::NotFound { .. }) => {
                        tracing::info!(key = %object.key, "reconcile: deleted orphan object");
                        report.orphans_deleted += 1;
                    }
                    Err(error) => {
                        tracing::warn!(key = %object.key, error = %error, "reconcile: could not delete an orphan object");
                        report.failed += 1;
                    }
                }
            }
            match page.next_token {
                Some(token) => page_token = Some(token),
                None => return Ok(()),
            }
        }
    }

    async fn check_object(&self, media: &EventMedia, report: &mut ReconcileReport) {
        let result = match object_key(media) {
            Ok(key) => self.store.head(&key).await.map_err(MediaError::from),
            Err(error) => Err(error),
        };
        match result {
            Ok(_) => {}
            Err(MediaError::Store(StoreError::NotFound { .. })) => {
                tracing::error!(media_id = %media.id, key = %media.s3_key, "reconcile: ready record without its object");
                report.missing_objects.push(media.id);
            }
            Err(error) => {
                tracing::warn!(media_id = %media.id, error = %error, "reconcile: could not check an object");
                report.failed += 1;
            }
        }
    }
}

/// Walks the records in one state not updated since a time, in batches. Records the pass
/// removes drop out of the listing by themselves; records it leaves in place (dry run, failed
/// repair, checks) are counted in `unchanged` and skipped by id.
struct StaleScan {
    status: MediaStatus,
    before: DateTime<Utc>,
    now: DateTime<Utc>,
    seen: HashSet<MediaId>,
    unchanged: usize,
    exhausted: bool,
}

impl StaleScan {
    fn new(status: MediaStatus, before: DateTime<Utc>, now: DateTime<Utc>) -> Self {
        Self {
            status,
            before,
            now,
            seen: HashSet::new(),
            unchanged: 0,
            exhausted: false,
        }
    }

    /// The next records not handled yet, or `None` when there are no more (or the run has left
    /// [`MAX_UNCHANGED`] records in place and stops looking).
    async fn next_batch(
        &mut self,
        repo: &dyn MediaRepository,
    ) -> Result<Option<Vec<EventMedia>>, MediaError> {
        if self.exhausted {
            return Ok(None);
        }
        if self.unchanged >= MAX_UNCHANGED {
            tracing::warn!(
                status = self.status.as_str(),
                "reconcile: stopped after {MAX_UNCHANGED} records; the next run continues"
            );
            return Ok(None);
        }
        let limit = BATCH + self.unchanged;
        let records = repo
            .list_stale(self.status, self.before, self.now, limit)
            .await?;
        self.exhausted = records.len() < limit;
        let fresh: Vec<EventMedia> = records
            .into_iter()
            .filter(|media| self.seen.insert(media.id))
            .collect();
        if fresh.is_empty() {
            return Ok(None);
        }
        Ok(Some(fresh))
    }
}

/// What claiming a stale record gave.
enum Claim {
    /// The record is now `deleting` and ours to finish.
    Claimed(Box<EventMedia>),
    /// It is no longer a stale `pending` record.
    Moved,
    /// The repository failed; counted in the report.
    Failed,
}
