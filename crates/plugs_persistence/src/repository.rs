//! The repository traits the service layer depends on. The Diesel implementation and the
//! in-memory fake both implement them and pass the same test suite.

use std::fmt::Debug;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use plugs_domain::{Event, EventId, EventMedia, MediaId, MediaStatus, PageCursor, UserId};

use crate::RepoError;

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

    /// `Pending -> Ready` with the final size and checksum; returns the updated record.
    /// [`RepoError::InvalidState`] from any other state, [`RepoError::NotFound`] if missing.
    async fn mark_ready(
        &self,
        id: MediaId,
        size_bytes: u64,
        sha256: &str,
    ) -> Result<EventMedia, RepoError>;

    /// `Ready | Pending -> Deleting`; returns the updated record. Idempotent on `Deleting`.
    async fn mark_deleting(&self, id: MediaId) -> Result<EventMedia, RepoError>;

    /// `expected -> Deleting`, but only if the record is still `expected` and was last updated
    /// before `updated_before`; `None` when it no longer is (or is gone), and then nothing
    /// changed. The reconciler's guarded rollback: between listing a stale `pending` record and
    /// repairing it, the upload may have finished; checking and changing in one statement keeps
    /// that upload's `ready` record and object.
    async fn mark_deleting_if_stale(
        &self,
        id: MediaId,
        expected: MediaStatus,
        updated_before: DateTime<Utc>,
    ) -> Result<Option<EventMedia>, RepoError>;

    /// Removes the record and its tags. Deleting a missing record succeeds.
    async fn delete_media(&self, id: MediaId) -> Result<(), RepoError>;

    /// The record with this id, in any state.
    async fn find_media(&self, id: MediaId) -> Result<Option<EventMedia>, RepoError>;

    /// The record claiming this object key, in any state (the reconciler's question).
    async fn find_by_key(&self, s3_key: &str) -> Result<Option<EventMedia>, RepoError>;

    /// An event's `Ready` media, newest first (`created_at` then `id`, descending), strictly
    /// after `after`, at most `limit`.
    async fn list_ready(
        &self,
        event_id: EventId,
        after: Option<PageCursor>,
        limit: usize,
    ) -> Result<Vec<EventMedia>, RepoError>;

    /// All of an event's media in every state (for deleting the event), any order.
    async fn list_all_for_event(&self, event_id: EventId) -> Result<Vec<EventMedia>, RepoError>;

    /// Records in `status` not updated since `before`, oldest first, at most `limit`
    /// (the reconciler's work list).
    async fn list_stale(
        &self,
        status: MediaStatus,
        before: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<EventMedia>, RepoError>;
}

/// Whether the database answers (for readiness probes).
#[async_trait]
pub trait HealthCheck: Debug + Send + Sync {
    /// Runs a trivial query.
    async fn ping(&self) -> Result<(), RepoError>;
}
