//! Importing files that come from elsewhere (`plugs-api backfill`: the bytes the replaced design
//! kept in PostgreSQL). An import is an upload through the same steps as every other one
//! (`receive` then `finalize`: size, sniffed type, SHA-256, the `pending` record before the
//! bytes move, `ready` after), with the id, uploader and creation time given by the caller, so
//! that re-running an import finds what an earlier run finished and nothing is stored twice.

use chrono::{DateTime, Utc};
use futures::StreamExt as _;
use plugs_domain::{Event, EventId, EventMedia, MediaId, MediaStatus, UserId};
use plugs_persistence::RepoError;
use plugs_storage::{ByteStream, GetOptions, StoreError};
use sha2::{Digest as _, Sha256};

use crate::service::object_key;
use crate::upload::Provenance;
use crate::{MediaError, MediaService, UploadRequest};

/// A file to import, with what its record keeps of its origin.
#[derive(Debug, Clone)]
pub struct ImportRequest {
    /// The media id: derived from the source's own id, so a second run finds the first's work.
    pub media_id: MediaId,
    /// The event; it must exist ([`MediaService::ensure_event`]).
    pub event_id: EventId,
    /// Who uploaded it originally.
    pub uploaded_by: UserId,
    /// When it was uploaded originally; dates the object key.
    pub created_at: DateTime<Utc>,
    /// Title, description, file name, declared type and size, checked as an upload's are.
    pub upload: UploadRequest,
}

/// Whether the stored object still is what its record says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    /// Same size and SHA-256.
    Intact,
    /// No object under the key.
    Missing,
    /// Other bytes: what was read.
    Differs {
        /// Bytes read.
        size: u64,
        /// Their hex SHA-256.
        sha256: String,
    },
}

impl MediaService {
    /// Creates event `id` owned by `owner` unless it exists; whether it was created. Operator
    /// use (imports): nobody's authorisation is checked.
    pub async fn ensure_event(
        &self,
        id: EventId,
        owner: &UserId,
        title: &str,
        created_at: DateTime<Utc>,
    ) -> Result<bool, MediaError> {
        if self.events.find_event(id).await?.is_some() {
            return Ok(false);
        }
        let title = plugs_domain::validate_event_title(title).map_err(MediaError::Invalid)?;
        let event = Event {
            id,
            title,
            owner: owner.clone(),
            created_at,
            updated_at: self.clock.now(),
        };
        match self.events.insert_event(&event).await {
            Ok(()) => Ok(true),
            // Created by someone else meanwhile: there it is.
            Err(RepoError::Duplicate { .. }) => Ok(false),
            Err(other) => Err(other.into()),
        }
    }

    /// The record an earlier import made under `id`, in any state. Reads only.
    pub async fn find_import(&self, id: MediaId) -> Result<Option<EventMedia>, MediaError> {
        Ok(self.media.find_media(id).await?)
    }

    /// Removes, with its object, a record that an interrupted import left `pending` or
    /// `deleting` (the process died mid-import), so the import can start again. A `ready`
    /// record is refused: it is media. Imports of one source must not run concurrently.
    pub async fn discard_unfinished_import(&self, media: &EventMedia) -> Result<(), MediaError> {
        if media.status == MediaStatus::Ready {
            return Err(RepoError::InvalidState {
                id: media.id.to_string(),
                expected: MediaStatus::Pending.as_str(),
                actual: MediaStatus::Ready.as_str(),
            }
            .into());
        }
        tracing::info!(media_id = %media.id, key = %media.s3_key, status = media.status.as_str(),
            "import: removing what an interrupted import left");
        self.remove_media(media).await
    }

    /// Imports one file: the upload steps every way in shares, as `request.uploaded_by` at
    /// `request.created_at`, with no authorisation (an operator's command). Refused files
    /// (empty, too large, a type the policy refuses or that the bytes contradict) leave
    /// nothing behind, as a refused upload does.
    pub async fn import(
        &self,
        request: ImportRequest,
        body: ByteStream,
    ) -> Result<EventMedia, MediaError> {
        let fields = request.upload.fields();
        let provenance = Provenance {
            id: request.media_id,
            uploaded_by: request.uploaded_by,
            created_at: Some(request.created_at),
            // The event was made for the legacy row's owner; its uploader may be someone else.
            owner: None,
        };
        let staged = self
            .receive_as(provenance, request.event_id, &request.upload, body)
            .await?;
        self.finalize(staged, fields).await
    }

    /// Reads `media`'s object through (streamed) and compares its size and SHA-256 with the
    /// record.
    pub async fn verify_stored(&self, media: &EventMedia) -> Result<Verification, MediaError> {
        let key = object_key(media)?;
        let object = match self.store.get(&key, GetOptions::default()).await {
            Ok(object) => object,
            Err(StoreError::NotFound { .. }) => return Ok(Verification::Missing),
            Err(other) => return Err(other.into()),
        };
        let mut body = object.body;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk?;
            size += chunk.len() as u64;
            hasher.update(&chunk);
        }
        let sha256 = hex::encode(hasher.finalize());
        if size == media.size_bytes
            && media
                .sha256
                .as_deref()
                .is_some_and(|recorded| recorded.eq_ignore_ascii_case(&sha256))
        {
            Ok(Verification::Intact)
        } else {
            Ok(Verification::Differs { size, sha256 })
        }
    }
}
