//! Uploads: authorise, validate, sniff, write a `pending` record, stream the bytes to the store
//! while counting and hashing them (blanking GPS positions on the way when location stripping is
//! on), mark the record `ready`; undo on any failure. Staged uploads (direct, tus) come to their
//! final key through [`MediaService::place_staged`], which blanks GPS there.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use chrono::TimeDelta;
use futures::{Stream, StreamExt};
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use plugs_domain::{
    EventId, EventMedia, MediaId, MediaStatus, SNIFF_LEN, UploadSession, UserId, keys,
    sanitize_filename,
};
use plugs_imaging::{GpsBlanker, GpsOutcome, MAX_EXIF_BLOCK};
use plugs_persistence::{ReadyUpdate, RepoError};
use plugs_storage::{ByteRange, ByteStream, GetOptions, ObjectKey, PutOptions, StoreError};
use sha2::{Digest, Sha256};

use crate::{MediaError, MediaService, UploadFields, UploadRequest};

/// Who made a media and when, as its record will say.
pub(crate) struct Provenance {
    /// The media id.
    pub(crate) id: MediaId,
    /// Who uploaded it.
    pub(crate) uploaded_by: UserId,
    /// When it was created (it dates the object key); `None`: now.
    pub(crate) created_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The user the event must belong to, checked by the pending record's insert (a stranger's
    /// event answers as a missing one); `None` when the caller needs no such check (`import`).
    pub(crate) owner: Option<UserId>,
}

/// How many next-microsecond keys to try when another upload to the same event took the key.
const KEY_ATTEMPTS: i64 = 5;

/// How much of a staged upload is read to decide whether it carries a GPS position: one EXIF
/// block at its largest plus room for the segments phones write before it. A head that does not
/// settle the question (a WebP keeps its EXIF after the image data) means a streamed rewrite.
const GPS_HEAD_LEN: u64 = MAX_EXIF_BLOCK as u64 + 64 * 1024;

impl MediaService {
    /// Stores a new media of `event_id` from `body` and returns its `ready` record: [`receive`]
    /// then [`finalize`] with the request's own fields, for callers that know every field
    /// before the bytes.
    ///
    /// [`receive`]: MediaService::receive
    /// [`finalize`]: MediaService::finalize
    pub async fn upload(
        &self,
        user: &UserId,
        event_id: EventId,
        request: UploadRequest,
        body: ByteStream,
    ) -> Result<EventMedia, MediaError> {
        let fields = request.fields();
        let staged = self.receive(user, event_id, &request, body).await?;
        self.finalize(staged, fields).await
    }

    /// The first half of a streamed upload: checks what is known before the bytes, writes a
    /// `pending` record and streams `body` to the store, counting and hashing it. The media is
    /// not visible until [`finalize`](MediaService::finalize) makes it `ready`; a caller that
    /// cannot finish hands the [`StagedUpload`] to [`abandon`](MediaService::abandon).
    ///
    /// Nothing is stored for a refused upload: the fields given so far, the file name and the
    /// first [`SNIFF_LEN`] bytes are checked before any record or byte is written, and the size
    /// limit stops the stream the moment it is crossed. That `user` owns the event is checked by
    /// the pending record's insert itself (no statement of its own), so a missing event and
    /// someone else's answer alike, after the checks above: the same file answers the same
    /// refusal whether or not the event exists. The object key needs only the event,
    /// the clock and the sniffed type, so the bytes can move before a form's later fields
    /// arrive. The record is written (`pending`) before the bytes move, so an object never
    /// exists without a record; if anything fails afterwards the object and record are removed,
    /// or, if that fails too, left for the reconciler.
    pub async fn receive(
        &self,
        user: &UserId,
        event_id: EventId,
        request: &UploadRequest,
        body: ByteStream,
    ) -> Result<StagedUpload, MediaError> {
        let provenance = Provenance {
            id: MediaId::new(),
            uploaded_by: user.clone(),
            created_at: None,
            owner: Some(user.clone()),
        };
        self.receive_as(provenance, event_id, request, body).await
    }

    /// [`MediaService::receive`] after authorisation, for a media whose id, uploader and
    /// creation time are given (`import`: a legacy row keeps its own).
    pub(crate) async fn receive_as(
        &self,
        provenance: Provenance,
        event_id: EventId,
        request: &UploadRequest,
        mut body: ByteStream,
    ) -> Result<StagedUpload, MediaError> {
        // Fields sent before the file are refused before a byte is stored; the finalize step
        // checks them again together with any that follow the file.
        let fields = request.fields().parse()?;
        let original_filename = request.filename.as_deref().and_then(sanitize_filename);
        let limit = self.config.policy.max_size_bytes;
        let declared = request.declared_size;
        check_declared_size(declared, limit)?;

        let head = read_head(&mut body).await?;
        if head.len == 0 {
            return Err(MediaError::EmptyFile);
        }
        if head.len > limit {
            return Err(MediaError::TooLarge { limit });
        }
        if let Some(declared) = declared
            && head.len > declared
        {
            return Err(MediaError::SizeMismatch {
                declared,
                received: head.len,
            });
        }
        let content_type = self.config.policy.classify(
            &head.sniff,
            request.declared_content_type.as_deref(),
            request.filename.as_deref(),
        )?;

        let now = self.clock.now();
        let created_at = provenance.created_at.unwrap_or(now);
        let mut media = EventMedia {
            id: provenance.id,
            event_id,
            title: fields.title,
            description: fields.description,
            tags: fields.tags,
            original_filename,
            content_type: content_type.mime.to_owned(),
            size_bytes: 0,
            sha256: None,
            s3_key: String::new(),
            status: MediaStatus::Pending,
            uploaded_by: provenance.uploaded_by,
            created_at,
            updated_at: now,
            lease_until: Some(now + self.config.upload_lease),
            location_stripped: false,
        };
        if let Err(error) = self
            // Until the bytes are counted, the record holds the declared size, or the most a file
            // may be.
            .insert_pending(
                &mut media,
                provenance.owner.as_ref(),
                content_type.extension,
                None,
                declared.unwrap_or(limit),
            )
            .await
        {
            // An outage may hide a commit that happened; the record is ours alone (fresh id),
            // so removing it is safe, and if that fails too the reconciler rolls it back.
            if error.is_unavailable()
                && let Err(cleanup) = self.media.delete_media(media.id).await
            {
                tracing::warn!(media_id = %media.id, error = %cleanup,
                    "could not remove a possibly committed pending record; the reconciler will");
            }
            return Err(error);
        }

        match self.store_bytes(&media, head.chunks, body, declared).await {
            Ok(stored) => Ok(StagedUpload {
                media,
                size: stored.size,
                sha256: stored.sha256,
                received_sha256: stored.received_sha256,
                location_stripped: stored.location_stripped,
            }),
            Err(error) => {
                self.undo_upload(&media).await;
                Err(error)
            }
        }
    }

    /// The one step that turns received bytes into media, whichever way they came in: checks
    /// the complete `fields` (including those sent after the file) and the size against its
    /// declaration and the limit, then marks the record `ready` with its size, SHA-256 and
    /// fields in one transaction. On any refusal or failure the object and record are removed
    /// (or left for the reconciler), so nothing unchecked ever becomes media.
    pub async fn finalize(
        &self,
        staged: StagedUpload,
        fields: UploadFields,
    ) -> Result<EventMedia, MediaError> {
        match self.finish(&staged, fields).await {
            Ok(done) => {
                tracing::info!(media_id = %done.id, event_id = %done.event_id,
                    size = done.size_bytes, "media uploaded");
                Ok(done)
            }
            Err(error) => {
                self.undo_upload(&staged.media).await;
                Err(error)
            }
        }
    }

    /// Gives up a staged upload (the rest of its form was malformed, or the client went away):
    /// its object and record are removed, or left for the reconciler if that fails.
    pub async fn abandon(&self, staged: StagedUpload) {
        self.undo_upload(&staged.media).await;
    }

    async fn finish(
        &self,
        staged: &StagedUpload,
        fields: UploadFields,
    ) -> Result<EventMedia, MediaError> {
        let limit = self.config.policy.max_size_bytes;
        let parsed = fields.parse()?;
        check_declared_size(fields.declared_size, limit)?;
        if staged.size > limit {
            return Err(MediaError::TooLarge { limit });
        }
        if let Some(declared) = fields.declared_size
            && declared != staged.size
        {
            return Err(MediaError::SizeMismatch {
                declared,
                received: staged.size,
            });
        }
        let update = ReadyUpdate {
            size_bytes: staged.size,
            sha256: staged.sha256.clone(),
            fields: parsed,
            at: self.clock.now(),
            location_stripped: staged.location_stripped,
        };
        match self.media.mark_ready(staged.media.id, update).await {
            Ok(media) => Ok(media),
            // The record went while the bytes arrived: the event was deleted meanwhile (its
            // delete removes uploads in flight), or the reconciler rolled the upload back.
            Err(error @ (RepoError::NotFound { .. } | RepoError::InvalidState { .. })) => {
                let event_id = staged.media.event_id;
                match self.events.find_event(event_id).await? {
                    None => Err(MediaError::event_not_found(event_id)),
                    Some(_) => Err(error.into()),
                }
            }
            Err(other) => Err(other.into()),
        }
    }

    /// Inserts the `pending` record (with a direct upload's session) under a fresh key, moving
    /// one microsecond on when an upload to the same event in the same microsecond took the key.
    /// The record reserves `reserved` bytes of the quotas, checked in the same transaction; with
    /// `owner`, the event must be theirs (else the event is not found), checked by the insert.
    pub(crate) async fn insert_pending(
        &self,
        media: &mut EventMedia,
        owner: Option<&UserId>,
        extension: &str,
        session: Option<&UploadSession>,
        reserved: u64,
    ) -> Result<(), MediaError> {
        for step in 0..KEY_ATTEMPTS {
            let at = media.created_at + TimeDelta::microseconds(step);
            media.s3_key = keys::media_key(media.event_id, at, extension);
            match self
                .media
                .insert_pending(media, owner, session, reserved, &self.config.quota)
                .await
            {
                Ok(()) => return Ok(()),
                Err(RepoError::Duplicate { what: "s3_key" }) => continue,
                Err(RepoError::QuotaExceeded { which, limit }) => {
                    return Err(MediaError::QuotaExceeded { which, limit });
                }
                // The event is missing (deleted since the caller looked it up), or not `owner`'s.
                Err(RepoError::MissingParent { .. }) => {
                    return Err(MediaError::event_not_found(media.event_id));
                }
                Err(other) => return Err(other.into()),
            }
        }
        Err(RepoError::Duplicate { what: "s3_key" }.into())
    }

    /// Streams the bytes to the store, through the GPS blanker when location stripping is on;
    /// answers their count and the hex SHA-256 of the bytes received and of those stored. With a
    /// `declared` size the store is told the length, and a body of any other length fails.
    async fn store_bytes(
        &self,
        media: &EventMedia,
        head: Vec<Bytes>,
        rest: ByteStream,
        declared: Option<u64>,
    ) -> Result<StoredBytes, MediaError> {
        let key = ObjectKey::parse(media.s3_key.as_str())?;
        let limit = self.config.policy.max_size_bytes;
        let meter = Arc::new(Mutex::new(Meter::default()));
        let body = MeteredBody {
            inner: futures::stream::iter(head.into_iter().map(Ok))
                .chain(rest)
                .boxed(),
            meter: Arc::clone(&meter),
            limit,
            declared,
            finished: false,
        };
        let stripped = Arc::new(Mutex::new(Stripped::default()));
        // Counted, limited and hashed as received; then blanked, and hashed again as stored only
        // if the blanker changed something (else the bytes stored are the bytes received).
        let body: ByteStream = if self.config.strip_location {
            Box::pin(StripGps::new(Box::pin(body), Arc::clone(&stripped), false))
        } else {
            Box::pin(body)
        };
        let mut options = self.put_options(media);
        options.size = declared;

        let put = {
            let put = self.store.put(&key, body, options);
            let renew = self.renew_lease_while_receiving(media.id, &meter);
            futures::pin_mut!(put, renew);
            match futures::future::select(put, renew).await {
                futures::future::Either::Left((put, _)) => put,
                futures::future::Either::Right(((), put)) => put.await,
            }
        };
        let (size, sha256, exceeded, mismatched, complete) = {
            let meter = meter.lock().unwrap_or_else(PoisonError::into_inner);
            (
                meter.bytes,
                hex::encode(meter.hasher.clone().finalize()),
                meter.exceeded,
                meter.mismatched,
                meter.complete,
            )
        };
        if let (Err(_), Some(declared)) = (&put, mismatched) {
            return Err(MediaError::SizeMismatch {
                declared,
                received: size,
            });
        }
        match put {
            Err(_) if exceeded => return Err(MediaError::TooLarge { limit }),
            Err(error) => return Err(error.into()),
            Ok(stored) if !complete || stored.size != size => {
                return Err(MediaError::Store(StoreError::Other {
                    message: format!(
                        "store reported {} bytes for {key}, {size} were sent",
                        stored.size
                    ),
                    source: "the stored object does not match the upload".into(),
                }));
            }
            Ok(_) => {}
        }
        let (stored_sha256, location_stripped) = if self.config.strip_location {
            let stripped = stripped.lock().unwrap_or_else(PoisonError::into_inner);
            (
                // Unchanged, the bytes stored are the bytes received.
                stripped
                    .hasher
                    .as_ref()
                    .map_or_else(|| sha256.clone(), |h| hex::encode(h.clone().finalize())),
                stripped.outcome.is_some_and(GpsOutcome::changed),
            )
        } else {
            (sha256.clone(), false)
        };
        Ok(StoredBytes {
            size,
            sha256: stored_sha256,
            received_sha256: sha256,
            location_stripped,
        })
    }

    /// Moves a staged upload (direct or tus) whose `size` bytes hash to `received_sha256` to
    /// `media`'s final key, and answers the hex SHA-256 of the bytes stored there and whether
    /// their GPS position was blanked.
    ///
    /// The bytes of these uploads never passed through the server while they arrived, so this
    /// is where location stripping happens for them: the head of the staged object is read
    /// through the blanker, and only if it carries a GPS position (or does not settle the
    /// question) is the object rewritten once, streamed from the staging key through the blanker
    /// to the final key. Everything else is copied inside the store, as before.
    pub(crate) async fn place_staged(
        &self,
        staging: &ObjectKey,
        media: &EventMedia,
        size: u64,
        received_sha256: [u8; 32],
    ) -> Result<(String, bool), MediaError> {
        let key = ObjectKey::parse(media.s3_key.as_str())?;
        if !self.config.strip_location || !self.head_may_carry_gps(staging, size).await? {
            self.store
                .copy_with(staging, &key, self.put_options(media))
                .await?;
            return Ok((hex::encode(received_sha256), false));
        }
        let stripped = Arc::new(Mutex::new(Stripped::default()));
        let source = self.store.get(staging, GetOptions::default()).await?.body;
        // Hashed as stored whatever the blanker does: these bytes are read back from the staging
        // key, which a client holding its upload URL could have rewritten since it was hashed.
        let body = StripGps::new(source, Arc::clone(&stripped), true);
        let mut options = self.put_options(media);
        options.size = Some(size);
        let stored = self.store.put(&key, Box::pin(body), options).await?;
        let (sha256, outcome) = {
            let stripped = stripped.lock().unwrap_or_else(PoisonError::into_inner);
            let sha256: [u8; 32] = stripped
                .hasher
                .as_ref()
                .map_or(received_sha256, |h| h.clone().finalize().into());
            debug_assert!(stripped.hasher.is_some(), "a rewrite hashes what it stores");
            (sha256, stripped.outcome)
        };
        // The blanker reports its outcome once the whole source has passed through it.
        let Some(outcome) = outcome.filter(|_| stored.size == size) else {
            return Err(MediaError::Store(StoreError::Other {
                message: format!(
                    "store reported {} bytes for {key}, {size} were staged",
                    stored.size
                ),
                source: "the rewritten object does not match the staged upload".into(),
            }));
        };
        if outcome.changed() {
            tracing::info!(media_id = %media.id, "GPS position blanked in a staged upload");
        }
        Ok((hex::encode(sha256), outcome.changed()))
    }

    /// Reads the head of a staged object through a GPS blanker: `false` when it settles that
    /// the file carries no GPS position, `true` when it found one or cannot tell from the head.
    async fn head_may_carry_gps(&self, staging: &ObjectKey, size: u64) -> Result<bool, MediaError> {
        let end = GPS_HEAD_LEN.min(size);
        let mut options = GetOptions::default();
        options.range = Some(ByteRange::Bounded { start: 0, end });
        let mut body = self.store.get(staging, options).await?.body;
        let mut blanker = GpsBlanker::new();
        while let Some(chunk) = body.next().await {
            // Only the verdict matters here; the blanked bytes are dropped as they come.
            drop(blanker.push(&chunk?));
            if blanker.has_blanked() {
                return Ok(true);
            }
            if blanker.is_settled() {
                return Ok(false);
            }
        }
        // The whole file was read and nothing was found: nothing to rewrite.
        Ok(end < size)
    }

    /// Renews the upload's lease every third of its length while bytes keep arriving, so the
    /// reconciler never rolls back an upload that is still receiving. A stalled upload stops
    /// renewing, and its lease lapses. Never finishes by itself: the caller drops it when the
    /// put is over.
    async fn renew_lease_while_receiving(&self, id: MediaId, meter: &Mutex<Meter>) {
        let lease = self.config.upload_lease;
        let every = (lease / 3).max(std::time::Duration::from_millis(10));
        let mut seen = 0;
        loop {
            tokio::time::sleep(every).await;
            let (bytes, complete) = {
                let meter = meter.lock().unwrap_or_else(PoisonError::into_inner);
                (meter.bytes, meter.complete)
            };
            // Renewed while bytes arrive, and once they all have while the store finishes
            // writing them (a last part, a multipart completion); a stalled client renews nothing.
            if bytes == seen && !complete {
                continue;
            }
            seen = bytes;
            let until = self.clock.now() + lease;
            match self.media.renew_lease(id, until).await {
                Ok(true) => {}
                // Rolled back or deleted meanwhile: the put will find out when it finishes.
                Ok(false) => return std::future::pending().await,
                Err(error) => {
                    tracing::warn!(media_id = %id, error = %error, "could not renew an upload's lease");
                }
            }
        }
    }

    pub(crate) fn put_options(&self, media: &EventMedia) -> PutOptions {
        let mut metadata = BTreeMap::new();
        metadata.insert("event-id".to_owned(), media.event_id.to_string());
        metadata.insert("media-id".to_owned(), media.id.to_string());
        metadata.insert(
            "uploaded-by".to_owned(),
            ascii_safe(media.uploaded_by.as_str()),
        );
        if let Some(name) = &media.original_filename {
            metadata.insert("original-filename".to_owned(), ascii_safe(name));
        }
        let mut options = PutOptions::with_content_type(media.content_type.clone());
        options.metadata = metadata;
        options.encryption = self.config.encryption.clone();
        options.create_only = true;
        // What a bucket's archive rule selects (`plugs-api bucket init --archive-after-days`):
        // originals only, so derived versions stay in the hot class.
        let (tag, value) = plugs_storage::ORIGINAL_TAG;
        options.tags.insert(tag.to_owned(), value.to_owned());
        options
    }

    /// Best-effort removal of a failed upload's object and record. The record goes to
    /// `deleting` first, so that an upload whose `ready` commit actually landed is not left
    /// `ready` without its object. If any step fails, the record stays (`pending` or
    /// `deleting`) and the reconciler finishes the job after the grace period; the object is
    /// never deleted while a `pending`/`ready` record might still claim it.
    async fn undo_upload(&self, media: &EventMedia) {
        match self.media.mark_deleting(media.id, self.clock.now()).await {
            // Gone already (the reconciler rolled back a slow upload): the object is ours alone.
            Ok(_) | Err(RepoError::NotFound { .. }) => {}
            Err(error) => {
                tracing::warn!(media_id = %media.id, key = %media.s3_key, error = %error,
                    "could not undo a failed upload; the reconciler will roll it back");
                return;
            }
        }
        if let Err(error) = self.delete_object(&media.s3_key).await {
            tracing::warn!(media_id = %media.id, key = %media.s3_key, error = %error,
                "could not delete a failed upload's object; the reconciler will finish it");
            return;
        }
        if let Err(error) = self.media.delete_media(media.id).await {
            tracing::warn!(media_id = %media.id, error = %error,
                "could not delete a failed upload's record; the reconciler will finish it");
        }
    }
}

/// An upload whose bytes are in the store under a `pending` record, waiting for
/// [`MediaService::finalize`] (or [`MediaService::abandon`]). Until then the media is invisible;
/// if the process dies first, the reconciler rolls the record and object back.
#[derive(Debug)]
#[must_use = "a staged upload must be finalized or abandoned"]
pub struct StagedUpload {
    media: EventMedia,
    size: u64,
    sha256: String,
    received_sha256: String,
    location_stripped: bool,
}

/// What [`MediaService::store_bytes`] stored.
struct StoredBytes {
    size: u64,
    /// Hex SHA-256 of the bytes stored.
    sha256: String,
    /// Hex SHA-256 of the bytes received: a declared checksum is checked against these.
    received_sha256: String,
    location_stripped: bool,
}

impl StagedUpload {
    /// The pending record.
    pub fn media(&self) -> &EventMedia {
        &self.media
    }

    /// How many bytes were stored.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The hex SHA-256 of the bytes stored.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// The hex SHA-256 of the bytes received, before any GPS position was blanked: the one a
    /// checksum the client declared must match.
    pub fn received_sha256(&self) -> &str {
        &self.received_sha256
    }

    /// Whether the stored bytes differ from those received because a GPS position was blanked.
    pub fn location_stripped(&self) -> bool {
        self.location_stripped
    }
}

/// A declared size is refused on the client's word when it is above the limit (before a byte
/// of the body is read) or zero (no file may be empty).
fn check_declared_size(declared: Option<u64>, limit: u64) -> Result<(), MediaError> {
    match declared {
        Some(size) if size > limit => Err(MediaError::TooLarge { limit }),
        Some(0) => Err(MediaError::SizeMismatch {
            declared: 0,
            received: 0,
        }),
        _ => Ok(()),
    }
}

/// The first bytes of an upload, kept as the chunks they arrived in (to be sent on unchanged)
/// plus a copy of at most [`SNIFF_LEN`] bytes to classify.
struct Head {
    chunks: Vec<Bytes>,
    sniff: Vec<u8>,
    len: u64,
}

async fn read_head(body: &mut ByteStream) -> Result<Head, MediaError> {
    let mut head = Head {
        chunks: Vec::new(),
        sniff: Vec::with_capacity(SNIFF_LEN),
        len: 0,
    };
    while head.sniff.len() < SNIFF_LEN {
        match body.next().await {
            Some(Ok(chunk)) if chunk.is_empty() => {}
            Some(Ok(chunk)) => {
                let take = chunk.len().min(SNIFF_LEN - head.sniff.len());
                head.sniff.extend_from_slice(&chunk[..take]);
                head.len += chunk.len() as u64;
                head.chunks.push(chunk);
            }
            Some(Err(error)) => return Err(interrupted(error)),
            None => break,
        }
    }
    Ok(head)
}

/// A caller's stream should only fail with [`StoreError::Body`]; any other error from it is
/// still the client's stream failing.
fn interrupted(error: StoreError) -> MediaError {
    match error {
        StoreError::Body { source } => MediaError::UploadInterrupted { source },
        other => MediaError::UploadInterrupted {
            source: Box::new(other),
        },
    }
}

/// What S3 user metadata cannot carry (control characters; non-ASCII is always encoded), and
/// `%` itself, so the value decodes back unambiguously.
const NOT_METADATA_SAFE: &AsciiSet = &CONTROLS.add(b'%');

/// Percent-encodes what S3 user metadata cannot carry, so the value decodes back unambiguously.
fn ascii_safe(value: &str) -> String {
    utf8_percent_encode(value, NOT_METADATA_SAFE).to_string()
}

/// What passed through a [`MeteredBody`].
#[derive(Default)]
struct Meter {
    bytes: u64,
    hasher: Sha256,
    exceeded: bool,
    /// The declared size, once the body turned out longer or shorter than it.
    mismatched: Option<u64>,
    complete: bool,
}

/// The upload stream as the store sees it: counts and hashes each chunk as it passes (no
/// copy), and fails the moment the count crosses the limit or the declared size, or when it
/// ends short of the declared size, so the store aborts the write.
struct MeteredBody {
    inner: ByteStream,
    meter: Arc<Mutex<Meter>>,
    limit: u64,
    declared: Option<u64>,
    finished: bool,
}

/// The error a [`MeteredBody`] fails with when the upload crosses the size limit.
#[derive(Debug, thiserror::Error)]
#[error("upload exceeds the limit of {limit} bytes")]
struct SizeLimitExceeded {
    limit: u64,
}

/// The error a [`MeteredBody`] fails with when the upload is not of its declared size.
#[derive(Debug, thiserror::Error)]
#[error("upload is not of its declared size of {declared} bytes")]
struct DeclaredSizeMismatch {
    declared: u64,
}

impl Stream for MeteredBody {
    type Item = Result<Bytes, StoreError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.finished {
            return Poll::Ready(None);
        }
        let item = std::task::ready!(self.inner.poll_next_unpin(cx));
        let (limit, declared) = (self.limit, self.declared);
        let mismatch = |meter: &mut Meter, declared: u64| {
            meter.mismatched = Some(declared);
            Some(Err(StoreError::Body {
                source: Box::new(DeclaredSizeMismatch { declared }),
            }))
        };
        let mut meter = self.meter.lock().unwrap_or_else(PoisonError::into_inner);
        let answer = match item {
            Some(Ok(chunk)) => {
                meter.bytes += chunk.len() as u64;
                match declared {
                    _ if meter.bytes > limit => {
                        meter.exceeded = true;
                        Some(Err(StoreError::Body {
                            source: Box::new(SizeLimitExceeded { limit }),
                        }))
                    }
                    Some(declared) if meter.bytes > declared => mismatch(&mut meter, declared),
                    _ => {
                        meter.hasher.update(&chunk);
                        Some(Ok(chunk))
                    }
                }
            }
            Some(Err(error)) => Some(Err(error)),
            None => match declared {
                Some(declared) if meter.bytes != declared => mismatch(&mut meter, declared),
                _ => {
                    meter.complete = true;
                    None
                }
            },
        };
        drop(meter);
        if !matches!(answer, Some(Ok(_))) {
            self.finished = true;
        }
        Poll::Ready(answer)
    }
}

/// What a [`StripGps`] stream did, read once it has ended.
struct Stripped {
    /// SHA-256 of the bytes that came out, while they may differ from the bytes that went in;
    /// `None` once the blanker has settled without blanking anything (unless the stream was
    /// told to hash throughout): the bytes out are then the bytes in, whose hash the caller has
    /// (SHA-256 is a third of an upload's CPU: hashing the same bytes twice cost that much
    /// again).
    hasher: Option<Sha256>,
    /// Set when the source ended and the blanker was finished.
    outcome: Option<GpsOutcome>,
}

impl Default for Stripped {
    fn default() -> Self {
        Self {
            hasher: Some(Sha256::new()),
            outcome: None,
        }
    }
}

/// Passes a byte stream through a [`GpsBlanker`], hashing what comes out. The blanker holds back
/// at most one EXIF block; once it has settled the rest of the file, chunks pass as they are.
struct StripGps {
    inner: ByteStream,
    /// `None` once the source has ended.
    blanker: Option<GpsBlanker>,
    state: Arc<Mutex<Stripped>>,
    /// Hash what comes out to the end, even when nothing was blanked.
    hash_throughout: bool,
}

impl StripGps {
    fn new(inner: ByteStream, state: Arc<Mutex<Stripped>>, hash_throughout: bool) -> Self {
        Self {
            inner,
            blanker: Some(GpsBlanker::new()),
            state,
            hash_throughout,
        }
    }
}

/// Hashes bytes on their way to the store, until `unchanged` (the blanker settled without
/// blanking anything, so nothing out differs from what came in).
fn emit(
    state: &Mutex<Stripped>,
    bytes: Bytes,
    unchanged: bool,
) -> Poll<Option<Result<Bytes, StoreError>>> {
    let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
    if unchanged {
        state.hasher = None;
    }
    if let Some(hasher) = state.hasher.as_mut() {
        hasher.update(&bytes);
    }
    Poll::Ready(Some(Ok(bytes)))
}

impl Stream for StripGps {
    type Item = Result<Bytes, StoreError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            let Some(blanker) = this.blanker.as_mut() else {
                return Poll::Ready(None);
            };
            match std::task::ready!(this.inner.poll_next_unpin(cx)) {
                // Past the image data nothing more changes: no copy.
                Some(Ok(chunk)) if blanker.is_settled() => {
                    let unchanged = !this.hash_throughout && !blanker.has_blanked();
                    return emit(&this.state, chunk, unchanged);
                }
                Some(Ok(chunk)) => {
                    let out = blanker.push(&chunk);
                    if !out.is_empty() {
                        let unchanged =
                            !this.hash_throughout && blanker.is_settled() && !blanker.has_blanked();
                        return emit(&this.state, Bytes::from(out), unchanged);
                    }
                    // Held back (an EXIF block in progress): read on.
                }
                Some(Err(error)) => {
                    this.blanker = None;
                    return Poll::Ready(Some(Err(error)));
                }
                None => {
                    let Some(blanker) = this.blanker.take() else {
                        return Poll::Ready(None);
                    };
                    let (rest, outcome) = blanker.finish();
                    let unchanged = !this.hash_throughout && !outcome.changed();
                    let mut state = this.state.lock().unwrap_or_else(PoisonError::into_inner);
                    state.outcome = Some(outcome);
                    if unchanged {
                        state.hasher = None;
                    }
                    drop(state);
                    if rest.is_empty() {
                        return Poll::Ready(None);
                    }
                    return emit(&this.state, Bytes::from(rest), unchanged);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_values_are_ascii_and_reversible() {
        assert_eq!(ascii_safe("holiday photo.jpg"), "holiday photo.jpg");
        assert_eq!(ascii_safe("été 100%.jpg"), "%C3%A9t%C3%A9 100%25.jpg");
        assert_eq!(ascii_safe("a\tb"), "a%09b");
    }

    /// A file the blanker leaves alone is hashed once, as received: the blanker's own hash of its
    /// output stops once it has settled, and the bytes pass unchanged. Told to hash throughout
    /// (a staged object read back), it hashes every byte it passes.
    #[tokio::test]
    async fn strip_gps_stops_hashing_what_it_cannot_change() {
        use sha2::Digest as _;
        for (head, throughout) in [
            (&b"%PDF-1.7\n"[..], false),
            (b"\x89PNG\r\n\x1a\n", false),
            (b"\x89PNG\r\n\x1a\n", true),
        ] {
            let mut file = head.to_vec();
            file.extend((0..300_000_u32).map(|i| (i % 251) as u8));
            let chunks: Vec<Result<Bytes, StoreError>> = file
                .chunks(64 * 1024)
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect();
            let state = Arc::new(Mutex::new(Stripped::default()));
            let strip = StripGps::new(
                Box::pin(futures::stream::iter(chunks)),
                Arc::clone(&state),
                throughout,
            );
            let out: Vec<Bytes> = futures::TryStreamExt::try_collect(strip).await.unwrap();
            assert_eq!(out.concat(), file);
            let state = state.lock().unwrap();
            match &state.hasher {
                None => assert!(!throughout, "stopped hashing though told not to"),
                Some(hasher) => {
                    assert!(throughout, "still hashing after settling");
                    assert_eq!(hasher.clone().finalize(), Sha256::digest(&file));
                }
            }
            assert_eq!(state.outcome.map(GpsOutcome::changed), Some(false));
        }
    }

    #[tokio::test]
    async fn metered_body_counts_hashes_and_stops_past_the_limit() {
        let chunks = ["abc", "def", "ghi"].map(|s| Ok(Bytes::from_static(s.as_bytes())));
        let meter = Arc::new(Mutex::new(Meter::default()));
        let body = MeteredBody {
            inner: futures::stream::iter(chunks).boxed(),
            meter: Arc::clone(&meter),
            limit: 6,
            declared: None,
            finished: false,
        };
        let items: Vec<_> = body.collect().await;
        assert_eq!(items.len(), 3);
        assert!(items[0].is_ok() && items[1].is_ok());
        assert!(matches!(items[2], Err(StoreError::Body { .. })));
        {
            let meter = meter.lock().unwrap();
            assert!(meter.exceeded && !meter.complete);
        }

        let meter = Arc::new(Mutex::new(Meter::default()));
        let body = MeteredBody {
            inner: futures::stream::iter(
                ["abc", "def"].map(|s| Ok(Bytes::from_static(s.as_bytes()))),
            )
            .boxed(),
            meter: Arc::clone(&meter),
            limit: 6,
            declared: None,
            finished: false,
        };
        assert_eq!(body.count().await, 2);
        let meter = meter.lock().unwrap();
        assert!(!meter.exceeded && meter.complete);
        assert_eq!(meter.bytes, 6);
        assert_eq!(
            hex::encode(meter.hasher.clone().finalize()),
            hex::encode(Sha256::digest(b"abcdef"))
        );
    }

    fn declared_body(chunks: &[&'static str], declared: u64) -> (MeteredBody, Arc<Mutex<Meter>>) {
        let meter = Arc::new(Mutex::new(Meter::default()));
        let chunks: Vec<_> = chunks
            .iter()
            .map(|s| Ok(Bytes::from_static(s.as_bytes())))
            .collect();
        let body = MeteredBody {
            inner: futures::stream::iter(chunks).boxed(),
            meter: Arc::clone(&meter),
            limit: 100,
            declared: Some(declared),
            finished: false,
        };
        (body, meter)
    }

    #[tokio::test]
    async fn metered_body_holds_the_upload_to_its_declared_size() {
        let (body, meter) = declared_body(&["abc", "def"], 6);
        let items: Vec<_> = body.collect().await;
        assert!(items.iter().all(Result::is_ok), "exactly the declared size");
        assert!(meter.lock().unwrap().complete);

        // Longer: the chunk that crosses the declared size is not passed on.
        let (body, meter) = declared_body(&["abc", "def", "g"], 6);
        let items: Vec<_> = body.collect().await;
        assert_eq!(items.len(), 3);
        assert!(items[0].is_ok() && items[1].is_ok());
        assert!(matches!(items[2], Err(StoreError::Body { .. })));
        {
            let seen = meter.lock().unwrap();
            assert!(seen.mismatched == Some(6) && !seen.exceeded && !seen.complete);
        }

        // Shorter: the end of the body is an error, not a clean end the store would commit.
        let (body, meter) = declared_body(&["abc"], 6);
        let items: Vec<_> = body.collect().await;
        assert_eq!(items.len(), 2);
        assert!(matches!(items[1], Err(StoreError::Body { .. })));
        let seen = meter.lock().unwrap();
        assert!(seen.mismatched == Some(6) && !seen.complete);
        assert_eq!(seen.bytes, 3);
    }
}
