//! The repository traits the service layer depends on. The Diesel implementation and the
//! in-memory fake both implement them and pass the same test suite.

use std::fmt::Debug;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use plugs_domain::{
    Event, EventId, EventMedia, MediaFields, MediaId, MediaKind, MediaStatus, PageCursor, Quota,
    UploadSession, Usage, UserId,
};

use crate::RepoError;

/// What finishing an upload writes in [`MediaRepository::mark_ready`].
///
/// The fields travel with the outcome because a form may send them after its file: the record
/// becomes visible (`Ready`) with its final fields in one transaction, never half-updated. Every
/// timestamp comes from the caller (`at`), so the service's one clock dates records and the
/// reconciler's grace periods alike.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadyUpdate {
    /// The number of bytes stored.
    pub size_bytes: u64,
    /// Hex SHA-256 of the bytes stored.
    pub sha256: String,
    /// Validated title, description and tags.
    pub fields: MediaFields,
    /// The new `updated_at`.
    pub at: DateTime<Utc>,
    /// Whether the stored bytes had their GPS position blanked.
    pub location_stripped: bool,
}

/// What an edit of a `Ready` media writes in [`MediaRepository::update_fields`].
///
/// The whole set of fields, not a difference: the caller merges its edit into the record it read
/// at `expected`, and the guard on `expected` makes sure nothing changed in between.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldsUpdate {
    /// Validated title, description and tags; they replace the stored ones.
    pub fields: MediaFields,
    /// The `updated_at` the record must still have, else nothing is written.
    pub expected: DateTime<Utc>,
    /// The new `updated_at`; the caller keeps it later than `expected`, so every edit gives the
    /// record a new version.
    pub at: DateTime<Utc>,
}

/// Which of an event's `Ready` media [`MediaRepository::list_ready`] lists. The default lists
/// them all; each `Some` narrows the listing, and both together must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MediaFilter {
    /// Only media carrying this tag, compared exactly: pass a tag normalised as stored
    /// (trimmed, lower case).
    pub tag: Option<String>,
    /// Only media of this kind (from their content type).
    pub kind: Option<MediaKind>,
}

/// Events: minimal records owned by one user.
#[async_trait]
pub trait EventRepository: Debug + Send + Sync {
    /// Stores a new event. [`RepoError::Duplicate`] if the id exists.
    async fn insert_event(&self, event: &Event) -> Result<(), RepoError>;

    /// The event with this id, if any.
    async fn find_event(&self, id: EventId) -> Result<Option<Event>, RepoError>;

    /// An owner's events, newest first (`created_at` then `id`, descending), strictly after
    /// `after`, at most `limit`.
    async fn list_events(
        &self,
        owner: &UserId,
        after: Option<PageCursor>,
        limit: usize,
    ) -> Result<Vec<Event>, RepoError>;

    /// Sets an event's title, stamped `at`, but only if its `updated_at` is still `expected`:
    /// the check and the change are one guarded UPDATE, so of two editors who read the same
    /// version only the first writes. Returns the updated event; `None` when it is gone or
    /// changed since `expected`, and then nothing changed.
    async fn update_event_title(
        &self,
        id: EventId,
        title: &str,
        expected: DateTime<Utc>,
        at: DateTime<Utc>,
    ) -> Result<Option<Event>, RepoError>;

    /// Deletes an event. [`RepoError::NotFound`] if missing; [`RepoError::HasChildren`] while
    /// media rows of the event remain (the service removes their objects and rows first, so a
    /// crash half-way never leaves objects that no row claims).
    async fn delete_event(&self, id: EventId) -> Result<(), RepoError>;
}

/// Media records and their life cycle `pending -> ready -> deleting -> (deleted)`.
#[async_trait]
pub trait MediaRepository: Debug + Send + Sync {
    /// Stores a new record (normally `Pending`, with its tags). [`RepoError::Duplicate`] for an
    /// existing id or `s3_key`; [`RepoError::MissingParent`] if the event does not exist.
    async fn insert_media(&self, media: &EventMedia) -> Result<(), RepoError>;

    /// `Pending -> Ready` with the final size (which becomes its quota reservation), checksum and fields (title, description and
    /// tags replace what the pending record held), stamped `update.at`; returns the updated
    /// record. [`RepoError::InvalidState`] from any other state, [`RepoError::NotFound`] if
    /// missing.
    async fn mark_ready(&self, id: MediaId, update: ReadyUpdate) -> Result<EventMedia, RepoError>;

    /// `Ready | Pending -> Deleting`, stamped `at`; returns the updated record. Idempotent on
    /// `Deleting` (the stamp then stays, so a retried delete still ages).
    async fn mark_deleting(&self, id: MediaId, at: DateTime<Utc>) -> Result<EventMedia, RepoError>;

    /// `expected -> Deleting`, stamped `at`, but only if the record is still `expected` and
    /// still stale as [`MediaRepository::list_stale`] judges it (`updated_before` the grace's
    /// start, `at` the present); `None` when it no longer is (or is gone), and then nothing
    /// changed. The reconciler's guarded rollback: between listing a stale `pending` record and
    /// repairing it, the upload may have finished; checking and changing in one statement keeps
    /// that upload's `ready` record and object.
    async fn mark_deleting_if_stale(
        &self,
        id: MediaId,
        expected: MediaStatus,
        updated_before: DateTime<Utc>,
        at: DateTime<Utc>,
    ) -> Result<Option<EventMedia>, RepoError>;

    /// Replaces a `Ready` record's title, description and tags, stamped `update.at`, but only if
    /// it is still `Ready` with `updated_at` equal to `update.expected`: one guarded UPDATE, so of
    /// two editors who read the same version only the first writes. Returns the updated record;
    /// `None` when it is gone, not `Ready`, or changed since `expected`, and then nothing changed
    /// (its tags included).
    async fn update_fields(
        &self,
        id: MediaId,
        update: FieldsUpdate,
    ) -> Result<Option<EventMedia>, RepoError>;

    /// `Pending -> Deleting`, stamped `at`, but only if the record is still `Pending`; `None`
    /// when it no longer is (or is gone), and then nothing changed. How an upload that is given
    /// up (refused, aborted, expired) claims its record: a racing completion that made it
    /// `Ready` keeps its record and object.
    async fn abandon_pending(
        &self,
        id: MediaId,
        at: DateTime<Utc>,
    ) -> Result<Option<EventMedia>, RepoError>;

    /// Extends a `Pending` record's lease to `until`; `false` when the record is no longer
    /// pending (or gone), and then nothing changed.
    async fn renew_lease(&self, id: MediaId, until: DateTime<Utc>) -> Result<bool, RepoError>;

    /// Stores a new `Pending` record (and, for a direct upload, the session that goes with it)
    /// reserving `reserved` bytes of its event's and its owner's quotas, in one transaction that
    /// checks the usage with the record counted: [`RepoError::QuotaExceeded`] and nothing
    /// stored when a limit of `quota` would be crossed. Concurrent calls for one owner are
    /// serialised, so they cannot overshoot together. Otherwise as
    /// [`MediaRepository::insert_media`]. The session goes when the record is deleted.
    ///
    /// With `owner`, the record is stored only if its event is owned by `owner`, checked by the
    /// insert itself (`INSERT ... SELECT ... WHERE` the event's owner matches): someone else's
    /// event is [`RepoError::MissingParent`], exactly as a missing one, and nothing is stored.
    /// That is an upload's ownership check (the rule of `plugs_domain::authorize`: the owner
    /// alone) without a round trip of its own; `None` when the caller has checked already.
    async fn insert_pending(
        &self,
        media: &EventMedia,
        owner: Option<&UserId>,
        session: Option<&UploadSession>,
        reserved: u64,
        quota: &Quota,
    ) -> Result<(), RepoError>;

    /// What an event, and all the events of `owner`, hold: bytes (reserved by uploads in flight,
    /// real for the rest) and records.
    async fn usage(&self, event_id: EventId, owner: &UserId) -> Result<(Usage, Usage), RepoError>;

    /// The direct upload session of a media record, if it has one.
    async fn find_upload_session(
        &self,
        media_id: MediaId,
    ) -> Result<Option<UploadSession>, RepoError>;

    /// Removes the record and its tags. Deleting a missing record succeeds.
    async fn delete_media(&self, id: MediaId) -> Result<(), RepoError>;

    /// The record with this id, in any state.
    async fn find_media(&self, id: MediaId) -> Result<Option<EventMedia>, RepoError>;

    /// The record claiming this object key, in any state (the reconciler's question).
    async fn find_by_key(&self, s3_key: &str) -> Result<Option<EventMedia>, RepoError>;

    /// An event's `Ready` media that pass `filter`, newest first (`created_at` then `id`,
    /// descending), strictly after `after`, at most `limit`.
    async fn list_ready(
        &self,
        event_id: EventId,
        filter: &MediaFilter,
        after: Option<PageCursor>,
        limit: usize,
    ) -> Result<Vec<EventMedia>, RepoError>;

    /// All of an event's media in every state (for deleting the event), any order.
    async fn list_all_for_event(&self, event_id: EventId) -> Result<Vec<EventMedia>, RepoError>;

    /// Every event's `Ready` media in id order, strictly after `after`, at most `limit`: a walk
    /// of the whole table one page at a time (`plugs-api scrub`). Ids never change, so a record
    /// edited during the walk is neither skipped nor seen twice.
    async fn list_ready_by_id(
        &self,
        after: Option<MediaId>,
        limit: usize,
    ) -> Result<Vec<EventMedia>, RepoError>;

    /// Stale records in `status`, oldest first, at most `limit` (the reconciler's work list): a
    /// record is stale when its lease lapsed before `now`, or, without a lease, when it was not
    /// updated since `before`. A live lease protects a record however old it is.
    async fn list_stale(
        &self,
        status: MediaStatus,
        before: DateTime<Utc>,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<EventMedia>, RepoError>;
}

/// Whether the database answers (for readiness probes).
#[async_trait]
pub trait HealthCheck: Debug + Send + Sync {
    /// Runs a trivial query.
    async fn ping(&self) -> Result<(), RepoError>;
}

/// Refuses a usage (the new record counted) that crosses a limit of `quota`: the rule every
/// repository's `insert_pending` applies.
pub(crate) fn check_quota(quota: &Quota, event: Usage, owner: Usage) -> Result<(), RepoError> {
    match quota.crossed(event, owner) {
        Some((which, limit)) => Err(RepoError::QuotaExceeded { which, limit }),
        None => Ok(()),
    }
}
