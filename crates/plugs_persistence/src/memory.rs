//! The in-memory fake: the same behaviour as the Diesel repository (it passes the same test
//! suite), plus fault hooks so the service's tests can make any call fail like a database outage.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use plugs_domain::{
    AllowedType, Event, EventId, EventMedia, MediaId, MediaKind, MediaStatus, PageCursor, Quota,
    UploadSession, Usage, UserId,
};

use crate::repository::check_quota;
use crate::{
    EventRepository, FieldsUpdate, HealthCheck, MediaFilter, MediaRepository, ReadyUpdate,
    RepoError, truncate_to_micros,
};

/// A repository operation, named for fault injection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RepoOp {
    /// [`EventRepository::insert_event`].
    InsertEvent,
    /// [`EventRepository::find_event`].
    FindEvent,
    /// [`EventRepository::list_events`].
    ListEvents,
    /// [`EventRepository::update_event_title`].
    UpdateEventTitle,
    /// [`EventRepository::delete_event`].
    DeleteEvent,
    /// [`MediaRepository::insert_media`].
    InsertMedia,
    /// [`MediaRepository::mark_ready`].
    MarkReady,
    /// [`MediaRepository::mark_deleting`].
    MarkDeleting,
    /// [`MediaRepository::update_fields`].
    UpdateFields,
    /// [`MediaRepository::renew_lease`].
    RenewLease,
    /// [`MediaRepository::delete_media`].
    DeleteMedia,
    /// [`MediaRepository::find_media`].
    FindMedia,
    /// [`MediaRepository::find_by_key`].
    FindByKey,
    /// [`MediaRepository::list_ready`].
    ListReady,
    /// [`MediaRepository::list_all_for_event`].
    ListAllForEvent,
    /// [`MediaRepository::list_stale`].
    ListStale,
    /// [`MediaRepository::list_ready_by_id`].
    ListReadyById,
    /// [`HealthCheck::ping`].
    Ping,
    /// [`crate::JobRepository::claim_job`].
    ClaimJob,
    /// [`crate::JobRepository::renew_job`].
    RenewJob,
    /// [`crate::JobRepository::complete_job`].
    CompleteJob,
    /// [`crate::JobRepository::fail_job`].
    FailJob,
    /// [`crate::JobRepository::enqueue_job`].
    EnqueueJob,
    /// The reads of [`crate::JobRepository`] (jobs, processing, derived versions).
    ReadJobs,
}

/// How an injected fault fails a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FaultKind {
    /// [`RepoError::Unavailable`] before anything changes: the commit never happened.
    Unavailable,
    /// The change is applied, then the call answers [`RepoError::Unavailable`]: the commit
    /// happened but its acknowledgement was lost (the connection died after `COMMIT`). Callers
    /// cannot tell this from [`FaultKind::Unavailable`], and must cope with both.
    UnavailableAfterCommit,
}

#[derive(Debug, Default)]
struct Tables {
    events: BTreeMap<EventId, Event>,
    media: BTreeMap<MediaId, EventMedia>,
    sessions: BTreeMap<MediaId, UploadSession>,
    /// Quota reservations of records inserted pending; a record's size counts otherwise.
    reserved: BTreeMap<MediaId, u64>,
    /// The processing queue and derived versions ([`crate::JobRepository`]).
    jobs: crate::jobs::MemoryJobs,
}

impl Tables {
    /// What an event and an owner hold, as the Diesel repository counts it.
    fn usage(&self, event_id: EventId, owner: &UserId) -> (Usage, Usage) {
        let mut of_event = Usage::default();
        let mut of_owner = Usage::default();
        for media in self.media.values() {
            let bytes = match media.status {
                MediaStatus::Pending => self.reserved.get(&media.id).copied().unwrap_or_default(),
                _ => media.size_bytes,
            };
            if media.event_id == event_id {
                of_event.bytes += bytes;
                of_event.media += 1;
            }
            if self
                .events
                .get(&media.event_id)
                .is_some_and(|event| &event.owner == owner)
            {
                of_owner.bytes += bytes;
                of_owner.media += 1;
            }
        }
        (of_event, of_owner)
    }
}

#[derive(Debug, Default)]
struct Faults {
    unavailable: bool,
    queued: HashMap<RepoOp, VecDeque<FaultKind>>,
    calls: HashMap<RepoOp, usize>,
}

/// An in-memory [`EventRepository`] + [`MediaRepository`] + [`HealthCheck`] for tests.
///
/// Faults: [`InMemoryRepository::fail_next`] queues a failure for the next call of one operation;
/// [`InMemoryRepository::set_unavailable`] fails every call until cleared, like a database that
/// is down.
#[derive(Debug, Default)]
pub struct InMemoryRepository {
    tables: Mutex<Tables>,
    faults: Mutex<Faults>,
}

mod jobs;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A test that panicked while holding the lock left consistent data (every operation validates
    // before it mutates), so later calls may keep using it.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn injected(op: RepoOp) -> RepoError {
    RepoError::Unavailable {
        source: format!("injected fault in {op:?}").into(),
    }
}

fn keyset_before(created_at: DateTime<Utc>, id: uuid::Uuid, cursor: &PageCursor) -> bool {
    let cursor_at = truncate_to_micros(cursor.created_at);
    (created_at, id) < (cursor_at, cursor.id)
}

impl InMemoryRepository {
    /// An empty repository with no faults armed.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes the next call of `op` fail as `kind`. Several calls queue up, one per call.
    pub fn fail_next(&self, op: RepoOp, kind: FaultKind) {
        lock(&self.faults)
            .queued
            .entry(op)
            .or_default()
            .push_back(kind);
    }

    /// While `true`, every call fails with [`RepoError::Unavailable`] and changes nothing.
    pub fn set_unavailable(&self, unavailable: bool) {
        lock(&self.faults).unavailable = unavailable;
    }

    /// How many times `op` was called (including calls failed by a fault).
    pub fn calls(&self, op: RepoOp) -> usize {
        lock(&self.faults).calls.get(&op).copied().unwrap_or(0)
    }

    /// Counts the call and takes the fault armed for it, if any. `Err` fails the call untouched.
    fn enter(&self, op: RepoOp) -> Result<Option<FaultKind>, RepoError> {
        let mut faults = lock(&self.faults);
        *faults.calls.entry(op).or_default() += 1;
        if faults.unavailable {
            return Err(injected(op));
        }
        match faults.queued.get_mut(&op).and_then(VecDeque::pop_front) {
            Some(FaultKind::Unavailable) => Err(injected(op)),
            other => Ok(other),
        }
    }

    /// Runs an operation under the fault hooks: an after-commit fault lets `work` apply its change
    /// and then replaces the answer.
    fn run<T>(
        &self,
        op: RepoOp,
        work: impl FnOnce(&mut Tables) -> Result<T, RepoError>,
    ) -> Result<T, RepoError> {
        let fault = self.enter(op)?;
        let result = work(&mut lock(&self.tables));
        match (fault, result) {
            (Some(FaultKind::UnavailableAfterCommit), Ok(_)) => Err(injected(op)),
            (_, result) => result,
        }
    }
}

/// The staleness rule of [`MediaRepository::list_stale`]: a lapsed lease, or without one an
/// update before the grace period's start.
fn is_stale(media: &EventMedia, before: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    match media.lease_until {
        Some(lease) => lease < truncate_to_micros(now),
        None => media.updated_at < truncate_to_micros(before),
    }
}

fn newest_first<T>(items: &mut [T], key: impl Fn(&T) -> (DateTime<Utc>, uuid::Uuid)) {
    items.sort_by_key(|item| std::cmp::Reverse(key(item)));
}

#[async_trait]
impl EventRepository for InMemoryRepository {
    async fn insert_event(&self, event: &Event) -> Result<(), RepoError> {
        self.run(RepoOp::InsertEvent, |tables| {
            if tables.events.contains_key(&event.id) {
                return Err(RepoError::Duplicate { what: "id" });
            }
            let mut stored = event.clone();
            stored.created_at = truncate_to_micros(stored.created_at);
            stored.updated_at = truncate_to_micros(stored.updated_at);
            tables.events.insert(event.id, stored);
            Ok(())
        })
    }

    async fn find_event(&self, id: EventId) -> Result<Option<Event>, RepoError> {
        self.run(RepoOp::FindEvent, |tables| {
            Ok(tables.events.get(&id).cloned())
        })
    }

    async fn list_events(
        &self,
        owner: &UserId,
        after: Option<PageCursor>,
        limit: usize,
    ) -> Result<Vec<Event>, RepoError> {
        self.run(RepoOp::ListEvents, |tables| {
            let mut events: Vec<Event> = tables
                .events
                .values()
                .filter(|e| &e.owner == owner)
                .filter(|e| {
                    after
                        .as_ref()
                        .is_none_or(|c| keyset_before(e.created_at, e.id.as_uuid(), c))
                })
                .cloned()
                .collect();
            newest_first(&mut events, |e| (e.created_at, e.id.as_uuid()));
            events.truncate(limit);
            Ok(events)
        })
    }

    async fn update_event_title(
        &self,
        id: EventId,
        title: &str,
        expected: DateTime<Utc>,
        at: DateTime<Utc>,
    ) -> Result<Option<Event>, RepoError> {
        self.run(RepoOp::UpdateEventTitle, |tables| {
            match tables.events.get_mut(&id) {
                Some(event) if event.updated_at == truncate_to_micros(expected) => {
                    title.clone_into(&mut event.title);
                    event.updated_at = truncate_to_micros(at);
                    Ok(Some(event.clone()))
                }
                _ => Ok(None),
            }
        })
    }

    async fn delete_event(&self, id: EventId) -> Result<(), RepoError> {
        self.run(RepoOp::DeleteEvent, |tables| {
            if !tables.events.contains_key(&id) {
                return Err(RepoError::NotFound {
                    entity: "event",
                    id: id.to_string(),
                });
            }
            if tables.media.values().any(|m| m.event_id == id) {
                return Err(RepoError::HasChildren {
                    entity: "event",
                    id: id.to_string(),
                    children: "media",
                });
            }
            tables.events.remove(&id);
            Ok(())
        })
    }
}

/// The kind the Diesel repository stores beside a content type (`None` for a type of no kind).
fn kind_of(content_type: &str) -> Option<MediaKind> {
    AllowedType::from_mime(content_type).map(AllowedType::kind)
}

fn passes(media: &EventMedia, filter: &MediaFilter) -> bool {
    filter
        .tag
        .as_ref()
        .is_none_or(|tag| media.tags.contains(tag))
        && filter
            .kind
            .is_none_or(|kind| kind_of(&media.content_type) == Some(kind))
}

fn not_found(id: MediaId) -> RepoError {
    RepoError::NotFound {
        entity: "media",
        id: id.to_string(),
    }
}

#[async_trait]
impl MediaRepository for InMemoryRepository {
    async fn insert_media(&self, media: &EventMedia) -> Result<(), RepoError> {
        self.run(RepoOp::InsertMedia, |tables| {
            if tables.media.contains_key(&media.id) {
                return Err(RepoError::Duplicate { what: "id" });
            }
            if tables.media.values().any(|m| m.s3_key == media.s3_key) {
                return Err(RepoError::Duplicate { what: "s3_key" });
            }
            if !tables.events.contains_key(&media.event_id) {
                return Err(RepoError::MissingParent {
                    entity: "media",
                    parent: "event",
                });
            }
            let mut seen = std::collections::HashSet::new();
            if !media.tags.iter().all(|tag| seen.insert(tag)) {
                return Err(RepoError::Duplicate { what: "tag" });
            }
            let mut stored = media.clone();
            stored.created_at = truncate_to_micros(stored.created_at);
            stored.updated_at = truncate_to_micros(stored.updated_at);
            stored.lease_until = stored.lease_until.map(truncate_to_micros);
            tables.media.insert(media.id, stored);
            Ok(())
        })
    }

    async fn mark_ready(&self, id: MediaId, update: ReadyUpdate) -> Result<EventMedia, RepoError> {
        self.run(RepoOp::MarkReady, |tables| {
            let media = tables.media.get_mut(&id).ok_or_else(|| not_found(id))?;
            if media.status != MediaStatus::Pending {
                return Err(RepoError::InvalidState {
                    id: id.to_string(),
                    expected: MediaStatus::Pending.as_str(),
                    actual: media.status.as_str(),
                });
            }
            media.status = MediaStatus::Ready;
            media.size_bytes = update.size_bytes;
            media.sha256 = Some(update.sha256);
            media.title = update.fields.title;
            media.description = update.fields.description;
            media.tags = update.fields.tags;
            media.updated_at = truncate_to_micros(update.at);
            media.lease_until = None;
            media.location_stripped = update.location_stripped;
            let ready = media.clone();
            // The processing job is enqueued in the same step, as in the Diesel transaction.
            tables
                .jobs
                .enqueue_on_ready(id, &ready.content_type, update.at);
            Ok(ready)
        })
    }

    async fn mark_deleting(&self, id: MediaId, at: DateTime<Utc>) -> Result<EventMedia, RepoError> {
        self.run(RepoOp::MarkDeleting, |tables| {
            let media = tables.media.get_mut(&id).ok_or_else(|| not_found(id))?;
            if media.status != MediaStatus::Deleting {
                media.status = MediaStatus::Deleting;
                media.updated_at = truncate_to_micros(at);
                media.lease_until = None;
            }
            Ok(media.clone())
        })
    }

    async fn mark_deleting_if_stale(
        &self,
        id: MediaId,
        expected: MediaStatus,
        updated_before: DateTime<Utc>,
        at: DateTime<Utc>,
    ) -> Result<Option<EventMedia>, RepoError> {
        self.run(RepoOp::MarkDeleting, |tables| {
            match tables.media.get_mut(&id) {
                Some(media) if media.status == expected && is_stale(media, updated_before, at) => {
                    media.status = MediaStatus::Deleting;
                    media.updated_at = truncate_to_micros(at);
                    media.lease_until = None;
                    Ok(Some(media.clone()))
                }
                _ => Ok(None),
            }
        })
    }

    async fn update_fields(
        &self,
        id: MediaId,
        update: FieldsUpdate,
    ) -> Result<Option<EventMedia>, RepoError> {
        self.run(RepoOp::UpdateFields, |tables| {
            match tables.media.get_mut(&id) {
                Some(media)
                    if media.status == MediaStatus::Ready
                        && media.updated_at == truncate_to_micros(update.expected) =>
                {
                    let mut seen = std::collections::HashSet::new();
                    if !update.fields.tags.iter().all(|tag| seen.insert(tag)) {
                        return Err(RepoError::Duplicate { what: "tag" });
                    }
                    media.title = update.fields.title;
                    media.description = update.fields.description;
                    media.tags = update.fields.tags;
                    media.updated_at = truncate_to_micros(update.at);
                    Ok(Some(media.clone()))
                }
                _ => Ok(None),
            }
        })
    }

    async fn abandon_pending(
        &self,
        id: MediaId,
        at: DateTime<Utc>,
    ) -> Result<Option<EventMedia>, RepoError> {
        self.run(RepoOp::MarkDeleting, |tables| {
            match tables.media.get_mut(&id) {
                Some(media) if media.status == MediaStatus::Pending => {
                    media.status = MediaStatus::Deleting;
                    media.updated_at = truncate_to_micros(at);
                    media.lease_until = None;
                    Ok(Some(media.clone()))
                }
                _ => Ok(None),
            }
        })
    }

    async fn renew_lease(&self, id: MediaId, until: DateTime<Utc>) -> Result<bool, RepoError> {
        self.run(RepoOp::RenewLease, |tables| {
            match tables.media.get_mut(&id) {
                Some(media) if media.status == MediaStatus::Pending => {
                    media.lease_until = Some(truncate_to_micros(until));
                    Ok(true)
                }
                _ => Ok(false),
            }
        })
    }

    async fn delete_media(&self, id: MediaId) -> Result<(), RepoError> {
        self.run(RepoOp::DeleteMedia, |tables| {
            tables.media.remove(&id);
            tables.sessions.remove(&id);
            tables.reserved.remove(&id);
            tables.jobs.forget_media(id);
            Ok(())
        })
    }

    async fn insert_pending(
        &self,
        media: &EventMedia,
        owner: Option<&UserId>,
        session: Option<&UploadSession>,
        reserved: u64,
        quota: &Quota,
    ) -> Result<(), RepoError> {
        self.run(RepoOp::InsertMedia, |tables| {
            // As the Diesel insert: someone else's event is a missing one, before anything else.
            let event = tables
                .events
                .get(&media.event_id)
                .filter(|event| owner.is_none_or(|owner| &event.owner == owner));
            if owner.is_some() && event.is_none() {
                return Err(RepoError::MissingParent {
                    entity: "media",
                    parent: "event",
                });
            }
            if tables.media.contains_key(&media.id) {
                return Err(RepoError::Duplicate { what: "id" });
            }
            if tables.media.values().any(|m| m.s3_key == media.s3_key) {
                return Err(RepoError::Duplicate { what: "s3_key" });
            }
            let Some(event) = event else {
                return Err(RepoError::MissingParent {
                    entity: "media",
                    parent: "event",
                });
            };
            let owner = event.owner.clone();
            let (mut of_event, mut of_owner) = tables.usage(media.event_id, &owner);
            of_event.bytes += reserved;
            of_event.media += 1;
            of_owner.bytes += reserved;
            of_owner.media += 1;
            check_quota(quota, of_event, of_owner)?;
            let mut stored = media.clone();
            stored.created_at = truncate_to_micros(stored.created_at);
            stored.updated_at = truncate_to_micros(stored.updated_at);
            stored.lease_until = stored.lease_until.map(truncate_to_micros);
            tables.reserved.insert(media.id, reserved);
            tables.media.insert(media.id, stored);
            if let Some(session) = session {
                let mut stored = session.clone();
                stored.expires_at = truncate_to_micros(stored.expires_at);
                tables.sessions.insert(session.media_id, stored);
            }
            Ok(())
        })
    }

    async fn usage(&self, event_id: EventId, owner: &UserId) -> Result<(Usage, Usage), RepoError> {
        self.run(
            RepoOp::FindMedia,
            |tables| Ok(tables.usage(event_id, owner)),
        )
    }

    async fn find_upload_session(
        &self,
        media_id: MediaId,
    ) -> Result<Option<UploadSession>, RepoError> {
        self.run(RepoOp::FindMedia, |tables| {
            Ok(tables.sessions.get(&media_id).cloned())
        })
    }

    async fn find_media(&self, id: MediaId) -> Result<Option<EventMedia>, RepoError> {
        self.run(RepoOp::FindMedia, |tables| {
            Ok(tables.media.get(&id).cloned())
        })
    }

    async fn find_by_key(&self, s3_key: &str) -> Result<Option<EventMedia>, RepoError> {
        self.run(RepoOp::FindByKey, |tables| {
            Ok(tables.media.values().find(|m| m.s3_key == s3_key).cloned())
        })
    }

    async fn list_ready(
        &self,
        event_id: EventId,
        filter: &MediaFilter,
        after: Option<PageCursor>,
        limit: usize,
    ) -> Result<Vec<EventMedia>, RepoError> {
        self.run(RepoOp::ListReady, |tables| {
            let mut media: Vec<EventMedia> = tables
                .media
                .values()
                .filter(|m| m.event_id == event_id && m.status == MediaStatus::Ready)
                .filter(|m| passes(m, filter))
                .filter(|m| {
                    after
                        .as_ref()
                        .is_none_or(|c| keyset_before(m.created_at, m.id.as_uuid(), c))
                })
                .cloned()
                .collect();
            newest_first(&mut media, |m| (m.created_at, m.id.as_uuid()));
            media.truncate(limit);
            Ok(media)
        })
    }

    async fn list_all_for_event(&self, event_id: EventId) -> Result<Vec<EventMedia>, RepoError> {
        self.run(RepoOp::ListAllForEvent, |tables| {
            Ok(tables
                .media
                .values()
                .filter(|m| m.event_id == event_id)
                .cloned()
                .collect())
        })
    }

    async fn list_ready_by_id(
        &self,
        after: Option<MediaId>,
        limit: usize,
    ) -> Result<Vec<EventMedia>, RepoError> {
        self.run(RepoOp::ListReadyById, |tables| {
            let mut media: Vec<EventMedia> = tables
                .media
                .values()
                .filter(|m| m.status == MediaStatus::Ready)
                .filter(|m| after.is_none_or(|after| m.id.as_uuid() > after.as_uuid()))
                .cloned()
                .collect();
            media.sort_by_key(|m| m.id.as_uuid());
            media.truncate(limit);
            Ok(media)
        })
    }

    async fn list_stale(
        &self,
        status: MediaStatus,
        before: DateTime<Utc>,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<EventMedia>, RepoError> {
        self.run(RepoOp::ListStale, |tables| {
            let mut media: Vec<EventMedia> = tables
                .media
                .values()
                .filter(|m| m.status == status && is_stale(m, before, now))
                .cloned()
                .collect();
            media.sort_by_key(|m| (m.updated_at, m.id));
            media.truncate(limit);
            Ok(media)
        })
    }
}

#[async_trait]
impl HealthCheck for InMemoryRepository {
    async fn ping(&self) -> Result<(), RepoError> {
        self.run(RepoOp::Ping, |_| Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> Event {
        Event {
            id: EventId::new(),
            title: "faults".to_owned(),
            owner: UserId::parse("alice").unwrap(),
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    #[tokio::test]
    async fn fail_next_fails_one_call_and_changes_nothing() {
        let repo = InMemoryRepository::new();
        let first = event();
        repo.fail_next(RepoOp::InsertEvent, FaultKind::Unavailable);
        let err = repo.insert_event(&first).await.unwrap_err();
        assert!(matches!(err, RepoError::Unavailable { .. }), "{err:?}");
        assert_eq!(repo.find_event(first.id).await.unwrap(), None);
        // One-shot: the retry goes through.
        repo.insert_event(&first).await.unwrap();
        assert_eq!(repo.calls(RepoOp::InsertEvent), 2);
    }

    #[tokio::test]
    async fn after_commit_faults_apply_the_change_then_fail() {
        let repo = InMemoryRepository::new();
        let first = event();
        repo.fail_next(RepoOp::InsertEvent, FaultKind::UnavailableAfterCommit);
        let err = repo.insert_event(&first).await.unwrap_err();
        assert!(matches!(err, RepoError::Unavailable { .. }), "{err:?}");
        assert!(repo.find_event(first.id).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn an_unavailable_repository_refuses_everything_until_restored() {
        let repo = InMemoryRepository::new();
        repo.set_unavailable(true);
        assert!(matches!(
            repo.ping().await,
            Err(RepoError::Unavailable { .. })
        ));
        let first = event();
        assert!(repo.insert_event(&first).await.is_err());
        repo.set_unavailable(false);
        repo.ping().await.unwrap();
        assert_eq!(repo.find_event(first.id).await.unwrap(), None);
    }
}
