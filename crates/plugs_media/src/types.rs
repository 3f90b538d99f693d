//! The request and answer types of the service's calls.

use std::time::Duration;

use plugs_domain::{MediaFields, MediaId};
use plugs_storage::SweepReport;

use crate::MediaError;

/// The form fields of an upload, raw as the client sent them; the service validates them.
#[derive(Debug, Clone, Default)]
pub struct UploadRequest {
    /// Optional title.
    pub title: Option<String>,
    /// Optional description.
    pub description: Option<String>,
    /// Comma-separated tags, as the form sends them.
    pub tags: Option<String>,
    /// The client's file name (raw; sanitised by the service, display metadata only).
    pub filename: Option<String>,
    /// The multipart part's `Content-Type`; it must agree with the bytes when given.
    pub declared_content_type: Option<String>,
    /// The file's length in bytes, when the client declared it (the form's `size` field).
    ///
    /// Optional. When given, the upload must have exactly this many bytes (otherwise
    /// [`MediaError::SizeMismatch`](crate::MediaError::SizeMismatch) and nothing is kept), a size
    /// above the limit is refused before a byte is read, and the store is told the length up
    /// front: S3 then receives a body above one part as one streamed PutObject instead of a
    /// multipart upload whose completion some stores pay for by copying the object again.
    pub declared_size: Option<u64>,
}

impl UploadRequest {
    /// The fields that the finalize step checks: title, description, tags and declared size.
    pub fn fields(&self) -> UploadFields {
        UploadFields {
            title: self.title.clone(),
            description: self.description.clone(),
            tags: self.tags.clone(),
            declared_size: self.declared_size,
        }
    }
}

/// The fields of an upload as the client sent them, whenever they arrived (a form may send them
/// after its file); [`MediaService::finalize`](crate::MediaService::finalize) validates them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UploadFields {
    /// Optional title.
    pub title: Option<String>,
    /// Optional description.
    pub description: Option<String>,
    /// Comma-separated tags, as the form sends them.
    pub tags: Option<String>,
    /// The file's length in bytes, when declared. Checked against the bytes received; declared
    /// only after the file, it can no longer tell the store the length up front.
    pub declared_size: Option<u64>,
}

impl UploadFields {
    pub(crate) fn parse(&self) -> Result<MediaFields, MediaError> {
        MediaFields::parse(
            self.title.as_deref(),
            self.description.as_deref(),
            self.tags.as_deref(),
        )
        .map_err(MediaError::Invalid)
    }
}

/// Which page of a listing: the cursor from the previous page and a page size.
#[derive(Debug, Clone, Default)]
pub struct PageRequest {
    /// The previous page's `next_cursor`; `None` for the first page.
    pub cursor: Option<String>,
    /// Page size, 1 to 100; 20 when `None`.
    pub limit: Option<u32>,
}

/// One page of a newest-first listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    /// The items, newest first.
    pub items: Vec<T>,
    /// Pass back as [`PageRequest::cursor`] for the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// How to run the reconciler.
#[derive(Debug, Clone, Default)]
pub struct ReconcileOptions {
    /// Count what would be done, change nothing.
    pub dry_run: bool,
    /// Override of [`ServiceConfig::reconcile_grace`](crate::ServiceConfig::reconcile_grace).
    pub grace: Option<Duration>,
}

/// What a reconciler run did (or, in a dry run, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Stale `pending` records rolled back: object (if any) and record deleted. Never completed:
    /// without the client's stream there is no trustworthy checksum.
    pub pending_rolled_back: u64,
    /// Stale `deleting` records whose object and record were removed.
    pub deleting_finished: u64,
    /// Objects under `events/` older than the grace period that no record claims.
    pub orphans_found: u64,
    /// Of those, how many were deleted (0 in a dry run).
    pub orphans_deleted: u64,
    /// `ready` records whose object is gone. Reported, never deleted automatically: the bytes
    /// may come back from a backup, and the record is the only trace of what was lost.
    pub missing_objects: Vec<MediaId>,
    /// What the store's [`sweep`](plugs_storage::ObjectStore::sweep) found and removed of the
    /// leftovers of writes that never finished (stale temporary files, unfinished multipart
    /// uploads), older than the grace period.
    pub sweep: SweepReport,
    /// Items whose repair failed this run (logged; the next run retries them), leftovers the
    /// sweep could not remove and a sweep that failed as a whole included.
    pub failed: u64,
}
