//! Resumable uploads over the tus 1.0 protocol: the state machine behind the HTTP mapping.
//!
//! The bytes of one upload go into one multipart upload at `uploads/{event_id}/{upload_id}`, in
//! parts of one fixed size (every part but the last equal, as R2 requires). A request whose
//! bytes end inside a part leaves them in a staged tail object (`…{offset}.part`), which the next
//! request reads back and sends ahead of its own bytes as that part: nothing is held in the
//! server's memory between requests, and where an upload stands (offset, parts and their ETags,
//! the tail's key) is a database row, so any server process can continue it (tusd's design).
//!
//! The head of the file is sniffed as soon as [`SNIFF_LEN`] bytes (or the whole file) arrived.
//! When the last byte arrives the upload becomes media through the same verification as a
//! direct upload (size, sniff, SHA-256 read back, move to the final key, `ready`).

use std::sync::{Arc, Mutex as StdMutex, PoisonError};

use base64::Engine as _;
use bytes::Bytes;
use chrono::{DateTime, TimeDelta, Utc};
use futures::{StreamExt as _, TryStreamExt as _};
use plugs_domain::{
    Access, DirectUploadKind, EventId, EventMedia, MediaId, MediaStatus, SNIFF_LEN, UploadSession,
    UserId, sanitize_filename,
};
use plugs_persistence::{RepoError, TusPart, TusRepository, TusSession};
use plugs_storage::{
    ByteStream, CompletedPart, GetOptions, MIN_PART_SIZE, ObjectKey, PutOptions, StoreError,
};
use sha1::Sha1;
use sha2::{Digest as _, Sha256};
use tokio::sync::Mutex;

use crate::{MediaError, MediaService, UploadFields};

/// The part size of every tus upload but very large ones: above S3's 5 MiB minimum, fixed so
/// that every part but the last has the same size.
pub const TUS_PART_SIZE: u64 = 8 * 1024 * 1024;

/// S3's largest number of parts in one upload.
const MAX_PARTS: u64 = 10_000;

/// The checksum algorithms of the checksum extension, as `Tus-Checksum-Algorithm` lists them.
pub const TUS_CHECKSUM_ALGORITHMS: &str = "sha1,sha256";

/// Why a tus request failed, in the cases the protocol answers with its own statuses.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TusError {
    /// A refusal or failure shared with the other upload paths.
    #[error(transparent)]
    Media(#[from] MediaError),
    /// `Upload-Offset` is not where the upload stands (409).
    #[error("Upload-Offset is not the upload's offset {expected}")]
    OffsetMismatch {
        /// Where the upload stands.
        expected: u64,
    },
    /// The chunk's `Upload-Checksum` does not match its bytes; the chunk was discarded (460).
    #[error("the chunk does not match its Upload-Checksum; it was discarded")]
    ChecksumMismatch,
    /// The bytes would run past the declared `Upload-Length` (413).
    #[error("the upload would exceed its Upload-Length of {length} bytes")]
    BeyondLength {
        /// The declared length.
        length: u64,
    },
    /// A header of the protocol is malformed or contradicts the upload (400).
    #[error("{0}")]
    BadHeader(String),
    /// Another request (on this or another server process) is appending to the upload right
    /// now (423): retry, after a `HEAD`, once it ends.
    #[error(
        "another request is appending to this upload; retry once it ends (HEAD tells where it stands)"
    )]
    Locked,
}

impl From<RepoError> for TusError {
    fn from(error: RepoError) -> Self {
        Self::Media(error.into())
    }
}

impl From<StoreError> for TusError {
    fn from(error: StoreError) -> Self {
        Self::Media(error.into())
    }
}

/// A checksum of one request's bytes (`Upload-Checksum: <algorithm> <base64>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TusChecksum {
    /// SHA-1.
    Sha1([u8; 20]),
    /// SHA-256.
    Sha256([u8; 32]),
}

impl TusChecksum {
    /// Parses an `Upload-Checksum` value. An algorithm not supported is [`TusError::BadHeader`].
    pub fn parse(header: &str) -> Result<Self, TusError> {
        let bad = || TusError::BadHeader("Upload-Checksum must be `<algorithm> <base64>`".into());
        let (algorithm, value) = header.trim().split_once(' ').ok_or_else(bad)?;
        let digest = base64::engine::general_purpose::STANDARD
            .decode(value.trim())
            .map_err(|_| bad())?;
        match algorithm.to_ascii_lowercase().as_str() {
            "sha1" => Ok(Self::Sha1(digest.try_into().map_err(|_| bad())?)),
            "sha256" => Ok(Self::Sha256(digest.try_into().map_err(|_| bad())?)),
            other => Err(TusError::BadHeader(format!(
                "checksum algorithm {:?} is not one of {TUS_CHECKSUM_ALGORITHMS}",
                other.chars().take(16).collect::<String>()
            ))),
        }
    }
}

/// What `POST` declares.
#[derive(Debug, Clone, Default)]
pub struct TusCreate {
    /// `Upload-Length`; `None` with `Upload-Defer-Length: 1`.
    pub length: Option<u64>,
    /// `Upload-Metadata`, as sent.
    pub metadata: Option<String>,
}

/// One request's bytes (`PATCH`, or the body of a creation-with-upload `POST`).
pub struct TusChunk {
    /// `Upload-Offset`: where the client believes the upload stands.
    pub offset: u64,
    /// `Upload-Length`, for an upload whose length was deferred.
    pub length: Option<u64>,
    /// `Upload-Checksum`, parsed.
    pub checksum: Option<TusChecksum>,
    /// `Content-Length`, when the request has one.
    pub content_length: Option<u64>,
    /// The bytes.
    pub body: ByteStream,
}

impl std::fmt::Debug for TusChunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TusChunk")
            .field("offset", &self.offset)
            .field("length", &self.length)
            .field("content_length", &self.content_length)
            .finish_non_exhaustive()
    }
}

/// Where an upload stands, as `HEAD` and `PATCH` answer it.
#[derive(Debug, Clone)]
pub struct TusStatus {
    /// The upload's id (the media's, once finished).
    pub id: MediaId,
    /// Bytes received.
    pub offset: u64,
    /// The declared length; `None` while deferred.
    pub length: Option<u64>,
    /// When an unfinished upload expires.
    pub expires_at: DateTime<Utc>,
    /// `Upload-Metadata` as the client sent it.
    pub metadata: Option<String>,
    /// The media, once the last byte arrived and it was verified.
    pub media: Option<EventMedia>,
}

/// The fields `Upload-Metadata` carries, decoded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct TusMetadata {
    filename: Option<String>,
    content_type: Option<String>,
    title: Option<String>,
    description: Option<String>,
    tags: Option<String>,
}

/// Decodes `key base64,key base64,flag`; the names Uppy and tus-js-client use are accepted too.
fn parse_metadata(header: Option<&str>) -> Result<TusMetadata, TusError> {
    let mut metadata = TusMetadata::default();
    let Some(header) = header else {
        return Ok(metadata);
    };
    for pair in header.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once(' ').unwrap_or((pair, ""));
        let value = base64::engine::general_purpose::STANDARD
            .decode(value.trim())
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or_else(|| {
                TusError::BadHeader(format!(
                    "Upload-Metadata value of {:?} is not base64 of UTF-8 text",
                    key.chars().take(32).collect::<String>()
                ))
            })?;
        let slot = match key {
            "filename" | "name" => &mut metadata.filename,
            "content_type" | "filetype" | "type" => &mut metadata.content_type,
            "title" => &mut metadata.title,
            "description" => &mut metadata.description,
            "tags" => &mut metadata.tags,
            _ => continue,
        };
        // The first of two names wins (`filename` before `name` when a client sends both).
        if slot.is_none() {
            *slot = Some(value);
        }
    }
    Ok(metadata)
}

/// The running checksum of one request's bytes.
enum Hasher {
    Sha1(Sha1),
    Sha256(Sha256),
}

/// The request body, cut into the segments that fill parts and tails.
struct Source {
    body: ByteStream,
    pending: Option<Bytes>,
    hasher: Option<Hasher>,
    /// The body ended before the bytes a segment expected.
    ended_early: bool,
}

type SharedSource = Arc<Mutex<Source>>;

/// The next `len` bytes of the request body, as a stream a store can read.
fn take(source: SharedSource, len: u64) -> ByteStream {
    futures::stream::try_unfold((source, len), |(source, left)| async move {
        if left == 0 {
            return Ok(None);
        }
        let chunk = {
            let mut guard = source.lock().await;
            let state = &mut *guard;
            let chunk = loop {
                let next = match state.pending.take() {
                    Some(bytes) => bytes,
                    None => match state.body.next().await {
                        Some(item) => item?,
                        None => {
                            state.ended_early = true;
                            return Ok(None);
                        }
                    },
                };
                if !next.is_empty() {
                    break next;
                }
            };
            let cut = usize::try_from(left).unwrap_or(usize::MAX);
            let chunk = if chunk.len() > cut {
                state.pending = Some(chunk.slice(cut..));
                chunk.slice(..cut)
            } else {
                chunk
            };
            match &mut state.hasher {
                Some(Hasher::Sha1(hasher)) => hasher.update(&chunk),
                Some(Hasher::Sha256(hasher)) => hasher.update(&chunk),
                None => {}
            }
            chunk
        };
        let left = left - chunk.len() as u64;
        Ok(Some((chunk, (source, left))))
    })
    .boxed()
}

/// Keeps the first [`SNIFF_LEN`] bytes of a stream that starts at the file's first byte.
fn capture_head(body: ByteStream, head: Arc<StdMutex<Vec<u8>>>) -> ByteStream {
    body.inspect_ok(move |chunk| {
        let mut head = head.lock().unwrap_or_else(PoisonError::into_inner);
        let room = SNIFF_LEN.saturating_sub(head.len());
        head.extend_from_slice(&chunk[..room.min(chunk.len())]);
    })
    .boxed()
}

fn tail_key(session: &TusSession, end: u64) -> String {
    format!("{}.{end}.part", session.staging_key)
}

/// A lease on an upload in flight, taken by the one request working on it (a tus `PATCH`
/// appending, a direct upload's completion verifying) so that no other request, on any server
/// process, works on it at the same time. It lives in the database, renewed every third of
/// [`ServiceConfig::upload_lease`](crate::ServiceConfig::upload_lease) while the work runs, so a
/// process that dies holding it holds it no longer than that. Given up by
/// [`MediaService::while_locked`]; dropped unreleased (its request went away), it is given up by
/// a spawned task.
#[derive(Debug)]
pub(crate) struct UploadLock {
    repository: Arc<dyn TusRepository>,
    media_id: MediaId,
    holder: String,
    released: bool,
}

impl UploadLock {
    /// Gives the lease up now.
    pub(crate) async fn release(mut self) {
        self.released = true;
        if let Err(error) = self
            .repository
            .unlock_upload(self.media_id, &self.holder)
            .await
        {
            tracing::warn!(upload_id = %self.media_id, error = %error,
                "could not give an upload's lease up; it lapses by itself");
        }
    }
}

impl Drop for UploadLock {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        let (repository, media_id, holder) = (
            Arc::clone(&self.repository),
            self.media_id,
            std::mem::take(&mut self.holder),
        );
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(error) = repository.unlock_upload(media_id, &holder).await {
                    tracing::warn!(upload_id = %media_id, error = %error,
                        "could not give an abandoned upload's lease up; it lapses by itself");
                }
            });
        }
    }
}

impl MediaService {
    /// Takes the lease on an upload in flight; `None` while another request holds it.
    pub(crate) async fn lock_upload(
        &self,
        media_id: MediaId,
    ) -> Result<Option<UploadLock>, MediaError> {
        let repository = Arc::clone(self.tus_repo()?);
        let holder = MediaId::new().to_string();
        let now = self.clock.now();
        let until = now + TimeDelta::from_std(self.config.upload_lease).unwrap_or(TimeDelta::MAX);
        if !repository
            .lock_upload(media_id, &holder, until, now)
            .await?
        {
            return Ok(None);
        }
        Ok(Some(UploadLock {
            repository,
            media_id,
            holder,
            released: false,
        }))
    }

    /// Whether a request holds the upload's lease right now.
    pub(crate) async fn upload_locked(&self, media_id: MediaId) -> Result<bool, MediaError> {
        Ok(self
            .tus_repo()?
            .upload_locked_until(media_id, self.clock.now())
            .await?
            .is_some())
    }

    /// Runs `work` while renewing `lock`, then gives the lock up.
    pub(crate) async fn while_locked<T>(
        &self,
        lock: UploadLock,
        work: impl std::future::Future<Output = T>,
    ) -> T {
        let lease = self.config.upload_lease;
        let renew = async {
            loop {
                tokio::time::sleep(lease / 3).await;
                let until = self.clock.now() + TimeDelta::from_std(lease).unwrap_or(TimeDelta::MAX);
                match lock
                    .repository
                    .renew_upload_lock(lock.media_id, &lock.holder, until)
                    .await
                {
                    Ok(true) => {}
                    // Taken over after this process stalled past the lease: the offset guard of
                    // the session (tus) and the record's state (completion) keep the first
                    // writer's state; there is nothing left to renew.
                    Ok(false) => {
                        tracing::warn!(upload_id = %lock.media_id, "an upload's lease lapsed while its request ran");
                        return;
                    }
                    Err(error) => {
                        tracing::warn!(upload_id = %lock.media_id, error = %error, "could not renew an upload's lease");
                    }
                }
            }
        };
        let result = {
            let work = std::pin::pin!(work);
            let renew = std::pin::pin!(async {
                renew.await;
                futures::future::pending::<std::convert::Infallible>().await
            });
            match futures::future::select(work, renew).await {
                futures::future::Either::Left((result, _)) => result,
                futures::future::Either::Right((never, _)) => match never {},
            }
        };
        lock.release().await;
        result
    }
}

impl MediaService {
    /// The repository of resumable upload sessions, which [`MediaService::with_tus`] sets.
    fn tus_repo(&self) -> Result<&Arc<dyn TusRepository>, MediaError> {
        self.tus.as_ref().ok_or_else(|| {
            MediaError::Repository(RepoError::Other {
                source: "resumable uploads and direct uploads' completions need an upload \
                         session repository (MediaService::with_tus)"
                    .into(),
            })
        })
    }

    /// The same service keeping resumable (tus) uploads' state, and the leases of the requests
    /// working on uploads in flight (tus `PATCH`, direct uploads' completions), in `repository`.
    #[must_use]
    pub fn with_tus(mut self, repository: Arc<dyn TusRepository>) -> Self {
        self.tus = Some(repository);
        self
    }

    /// The largest upload a tus client may declare (`Tus-Max-Size`).
    pub fn tus_max_size(&self) -> u64 {
        self.config.policy.max_size_bytes
    }

    /// Creates a resumable upload: the metadata is checked as a form's fields are (declared type
    /// against the policy and the file name's extension, size against the limit when given),
    /// then a `pending` record leased until the upload expires, its multipart upload and its
    /// session are written.
    pub async fn create_tus_upload(
        &self,
        user: &UserId,
        event_id: EventId,
        request: TusCreate,
    ) -> Result<TusStatus, TusError> {
        self.authorized_event(user, event_id, Access::Write).await?;
        let tus = self.tus_repo()?;
        let metadata = parse_metadata(request.metadata.as_deref())?;
        let limit = self.config.policy.max_size_bytes;
        match request.length {
            Some(0) => return Err(MediaError::EmptyFile.into()),
            Some(length) if length > limit => return Err(MediaError::TooLarge { limit }.into()),
            _ => {}
        }
        let fields = UploadFields {
            title: metadata.title,
            description: metadata.description,
            tags: metadata.tags,
            declared_size: request.length,
        }
        .parse()?;
        let Some(declared_type) = metadata.content_type else {
            return Err(
                MediaError::Invalid(plugs_domain::DomainError::InvalidField {
                    field: "content_type",
                    reason:
                        "Upload-Metadata must name the file's type (`filetype` or `content_type`)"
                            .to_owned(),
                })
                .into(),
            );
        };
        let content_type = self
            .config
            .policy
            .check_declared(&declared_type, metadata.filename.as_deref())
            .map_err(MediaError::from)?;

        let now = self.clock.now();
        let expires_at =
            now + TimeDelta::from_std(self.config.direct_upload_ttl).unwrap_or(TimeDelta::MAX);
        let id = MediaId::new();
        let staging_key = format!("uploads/{event_id}/{id}");
        let staging = ObjectKey::parse(staging_key.as_str()).map_err(MediaError::from)?;
        let mut media = EventMedia {
            id,
            event_id,
            title: fields.title,
            description: fields.description,
            tags: fields.tags,
            original_filename: metadata.filename.as_deref().and_then(sanitize_filename),
            content_type: content_type.mime.to_owned(),
            size_bytes: 0,
            sha256: None,
            s3_key: String::new(),
            status: MediaStatus::Pending,
            uploaded_by: user.clone(),
            created_at: now,
            updated_at: now,
            lease_until: Some(expires_at),
            location_stripped: false,
        };
        // Reserves the declared length of the quotas, or the largest file while it is deferred.
        let reserved = request.length.unwrap_or(limit);
        self.insert_pending(&mut media, None, content_type.extension, None, reserved)
            .await?;
        // A crash from here on leaves a leased pending record, which gc removes once the lease
        // lapses, and at worst a multipart upload no record names, which the store's sweep ends.
        let started = async {
            let multipart_id = self
                .store
                .create_multipart(&staging, &self.put_options(&media))
                .await?;
            let session = TusSession {
                media_id: id,
                staging_key: staging_key.clone(),
                multipart_id: multipart_id.clone(),
                upload_length: request.length,
                offset: 0,
                part_size: part_size(request.length),
                parts: Vec::new(),
                tail_key: None,
                sniffed: false,
                metadata: request.metadata.clone(),
                expires_at,
            };
            if let Err(error) = tus.insert_tus_session(&session).await {
                let _ = self.store.abort_multipart(&staging, &multipart_id).await;
                return Err(MediaError::from(error));
            }
            Ok(session)
        }
        .await;
        let session = match started {
            Ok(session) => session,
            Err(error) => {
                if let Err(cleanup) = self.media.delete_media(id).await {
                    tracing::warn!(upload_id = %id, error = %cleanup, "could not remove a tus upload that failed to start; gc will");
                }
                return Err(error.into());
            }
        };
        tracing::info!(upload_id = %id, %event_id, length = ?request.length, "tus upload created");
        Ok(status_of(&session, None))
    }

    /// Where an upload stands (`HEAD`). A finished upload answers its whole length and media.
    pub async fn tus_status(
        &self,
        user: &UserId,
        event_id: EventId,
        id: MediaId,
    ) -> Result<TusStatus, TusError> {
        let (media, session) = self.open_tus(user, event_id, id, true).await?;
        Ok(status_of(
            &session,
            (media.status == MediaStatus::Ready).then_some(media),
        ))
    }

    /// Ends an unfinished upload (termination): multipart upload, staged tail and record go.
    pub async fn terminate_tus_upload(
        &self,
        user: &UserId,
        event_id: EventId,
        id: MediaId,
    ) -> Result<(), TusError> {
        let (media, _) = self.open_tus(user, event_id, id, false).await?;
        // Only while still pending: a PATCH that finished the upload meanwhile keeps its media.
        if self.give_up_upload(&media).await? {
            Ok(())
        } else {
            Err(MediaError::media_not_found(id).into())
        }
    }

    /// Appends one request's bytes at `chunk.offset` (`PATCH`). Full parts go to the multipart
    /// upload as they fill; bytes that end inside a part are staged as the tail. With a
    /// checksum, the request's bytes count only if they match it. When the last byte arrived,
    /// the upload is verified and becomes media ([`TusStatus::media`]).
    pub async fn append_tus_chunk(
        &self,
        user: &UserId,
        event_id: EventId,
        id: MediaId,
        chunk: TusChunk,
    ) -> Result<TusStatus, TusError> {
        self.open_tus(user, event_id, id, false).await?;
        // One request appends at a time, whichever process it reached: a second one is refused
        // at once (423) rather than queued, as tusd 1.x did; tus clients retry it after a HEAD.
        let Some(lock) = self.lock_upload(id).await? else {
            return Err(TusError::Locked);
        };
        self.while_locked(lock, async {
            // Read again under the lease: a request that held it until a moment ago may have
            // moved the upload on (or finished it).
            let (media, start) = self.open_tus(user, event_id, id, false).await?;
            self.append_locked(media, start, chunk).await
        })
        .await
    }

    async fn append_locked(
        &self,
        media: EventMedia,
        start: TusSession,
        chunk: TusChunk,
    ) -> Result<TusStatus, TusError> {
        let tus = self.tus_repo()?;
        if chunk.offset != start.offset {
            return Err(TusError::OffsetMismatch {
                expected: start.offset,
            });
        }
        let limit = self.config.policy.max_size_bytes;
        let mut progress = start.clone();
        if let Some(length) = chunk.length {
            match progress.upload_length {
                None if length < progress.offset => {
                    return Err(TusError::BadHeader(format!(
                        "Upload-Length {length} is less than the bytes already received"
                    )));
                }
                None if length > limit => return Err(MediaError::TooLarge { limit }.into()),
                None if length == 0 => return Err(MediaError::EmptyFile.into()),
                None => progress.upload_length = Some(length),
                Some(declared) if declared == length => {}
                Some(declared) => {
                    return Err(TusError::BadHeader(format!(
                        "Upload-Length {length} contradicts the declared {declared}"
                    )));
                }
            }
        }
        let cap = progress.upload_length.unwrap_or(limit);
        if let Some(len) = chunk.content_length {
            let end = progress.offset.saturating_add(len);
            if end > limit {
                return Err(MediaError::TooLarge { limit }.into());
            }
            if end > cap {
                return Err(TusError::BeyondLength { length: cap });
            }
        }
        let staging = ObjectKey::parse(progress.staging_key.as_str()).map_err(MediaError::from)?;

        // Without a Content-Length the request's length is unknown until it ends: it is staged
        // first (bounded by what the upload may still take), then read back as a body of known
        // length.
        let spool = format!("{}.{}.in", progress.staging_key, progress.offset);
        let spool = ObjectKey::parse(spool.as_str()).map_err(MediaError::from)?;
        let (body, len, spooled) = match chunk.content_length {
            Some(len) => (chunk.body, len, false),
            None => {
                let room = cap - progress.offset;
                let limited = limit_stream(chunk.body, room);
                let put = self.store.put(&spool, limited, PutOptions::default()).await;
                let size = match put {
                    Ok(put) => put.size,
                    Err(StoreError::Body { .. }) if room < cap => {
                        let _ = self.store.delete(&spool).await;
                        return Err(TusError::BeyondLength { length: cap });
                    }
                    Err(error) => {
                        let _ = self.store.delete(&spool).await;
                        return Err(error.into());
                    }
                };
                let body = self.store.get(&spool, GetOptions::default()).await?.body;
                (body, size, true)
            }
        };
        let source = Arc::new(Mutex::new(Source {
            body,
            pending: None,
            hasher: match &chunk.checksum {
                Some(TusChecksum::Sha1(_)) => Some(Hasher::Sha1(Sha1::new())),
                Some(TusChecksum::Sha256(_)) => Some(Hasher::Sha256(Sha256::new())),
                None => None,
            },
            ended_early: false,
        }));
        let head = Arc::new(StdMutex::new(Vec::with_capacity(SNIFF_LEN)));
        let mut old_tails = Vec::new();
        let mut new_tail = None;
        let written = self
            .write_segments(
                &staging,
                &mut progress,
                &source,
                len,
                &head,
                &mut old_tails,
                &mut new_tail,
            )
            .await;
        if spooled {
            let _ = self.store.delete(&spool).await;
        }
        let checked = match written {
            Ok(()) => {
                let hasher = source.lock().await.hasher.take();
                let matches = match (&chunk.checksum, hasher) {
                    (Some(TusChecksum::Sha1(expected)), Some(Hasher::Sha1(hasher))) => {
                        hasher.finalize()[..] == expected[..]
                    }
                    (Some(TusChecksum::Sha256(expected)), Some(Hasher::Sha256(hasher))) => {
                        hasher.finalize()[..] == expected[..]
                    }
                    _ => true,
                };
                if matches {
                    Ok(())
                } else {
                    Err(TusError::ChecksumMismatch)
                }
            }
            Err(error) => Err(error),
        };
        if let Err(error) = checked {
            // The parts written since the last commit are overwritten when the client sends
            // their bytes again; a new tail is discarded. Without a checksum, the whole parts
            // that did arrive before an interruption are kept.
            let keep = chunk.checksum.is_none() && matches!(error, TusError::Media(_));
            if keep && progress.offset > start.offset {
                self.sniff_if_due(&media, &mut progress, &head, new_tail.as_deref())
                    .await?;
                if progress.tail_key != new_tail {
                    self.discard_key(new_tail.as_deref()).await;
                }
                self.commit(tus.as_ref(), &media, &mut progress, start.offset)
                    .await?;
                for key in &old_tails {
                    if Some(key) != progress.tail_key.as_ref() {
                        self.discard_key(Some(key)).await;
                    }
                }
            } else {
                self.discard_key(new_tail.as_deref()).await;
            }
            return Err(error);
        }

        self.sniff_if_due(&media, &mut progress, &head, new_tail.as_deref())
            .await?;
        if progress.upload_length == Some(progress.offset) {
            return self
                .finish_tus(&media, progress, start.offset, old_tails)
                .await;
        }
        self.commit(tus.as_ref(), &media, &mut progress, start.offset)
            .await?;
        for key in &old_tails {
            self.discard_key(Some(key)).await;
        }
        Ok(status_of(&progress, None))
    }

    /// Sniffs the head of the file as soon as it is there (before more bytes are taken): a
    /// refusal ends the upload and removes everything it staged.
    async fn sniff_if_due(
        &self,
        media: &EventMedia,
        progress: &mut TusSession,
        head: &StdMutex<Vec<u8>>,
        new_tail: Option<&str>,
    ) -> Result<(), TusError> {
        let sniff_at = progress
            .upload_length
            .map_or(SNIFF_LEN as u64, |length| length.min(SNIFF_LEN as u64));
        if progress.sniffed || progress.offset < sniff_at {
            return Ok(());
        }
        let mut head = head.lock().unwrap_or_else(PoisonError::into_inner).clone();
        if head.len() < SNIFF_LEN && progress.parts.is_empty() {
            // The head lies in the tail staged by this or an earlier request.
            head = self.read_tail_head(progress).await?;
        }
        if let Err(refused) = self.config.policy.classify(
            &head,
            Some(&media.content_type),
            media.original_filename.as_deref(),
        ) {
            self.discard_key(new_tail).await;
            self.abandon_tus(media).await;
            return Err(MediaError::from(refused).into());
        }
        progress.sniffed = true;
        Ok(())
    }

    /// Sends `len` bytes of `source` into parts and the tail, updating `progress` after each
    /// segment that the store accepted.
    #[allow(clippy::too_many_arguments)]
    async fn write_segments(
        &self,
        staging: &ObjectKey,
        progress: &mut TusSession,
        source: &SharedSource,
        len: u64,
        head: &Arc<StdMutex<Vec<u8>>>,
        old_tails: &mut Vec<String>,
        new_tail: &mut Option<String>,
    ) -> Result<(), TusError> {
        let mut left = len;
        while left > 0 {
            let done = progress.parts.len() as u64 * progress.part_size;
            let tail_len = progress.offset - done;
            let target = progress.upload_length.map_or(progress.part_size, |length| {
                progress.part_size.min(length - done)
            });
            let need = target - tail_len;
            let from_start = progress.parts.is_empty();
            let step = need.min(left);
            let mut body = self.tail_body(progress, tail_len).await?;
            body = body.chain(take(Arc::clone(source), step)).boxed();
            if from_start {
                head.lock().unwrap_or_else(PoisonError::into_inner).clear();
                body = capture_head(body, Arc::clone(head));
            }
            let result = if step == need {
                let number = u32::try_from(progress.parts.len() + 1).unwrap_or(u32::MAX);
                self.store
                    .upload_part(staging, &progress.multipart_id, number, body, target)
                    .await
                    .map(|part| {
                        progress.parts.push(TusPart {
                            number,
                            etag: part.etag,
                        });
                        if let Some(old) = progress.tail_key.take() {
                            old_tails.push(old);
                        }
                    })
            } else {
                let key = tail_key(progress, progress.offset + step);
                let object = ObjectKey::parse(key.as_str()).map_err(MediaError::from)?;
                let mut options = PutOptions::default();
                options.size = Some(tail_len + step);
                self.store.put(&object, body, options).await.map(|_| {
                    if let Some(old) = progress.tail_key.replace(key.clone()) {
                        old_tails.push(old);
                    }
                    *new_tail = Some(key);
                })
            };
            if let Err(error) = result {
                // A body that ended early is the client's interruption, not the store's fault.
                if source.lock().await.ended_early {
                    return Err(MediaError::UploadInterrupted {
                        source: "the request ended before its Content-Length".into(),
                    }
                    .into());
                }
                return Err(error.into());
            }
            progress.offset += step;
            left -= step;
        }
        Ok(())
    }

    /// The staged tail's bytes, as the start of the next part.
    async fn tail_body(&self, session: &TusSession, tail_len: u64) -> Result<ByteStream, TusError> {
        match &session.tail_key {
            Some(key) if tail_len > 0 => {
                let key = ObjectKey::parse(key.as_str()).map_err(MediaError::from)?;
                Ok(self.store.get(&key, GetOptions::default()).await?.body)
            }
            _ => Ok(futures::stream::empty().boxed()),
        }
    }

    async fn read_tail_head(&self, session: &TusSession) -> Result<Vec<u8>, TusError> {
        let mut head = Vec::with_capacity(SNIFF_LEN);
        let mut body = self.tail_body(session, session.offset).await?;
        while let Some(chunk) = body.next().await {
            let chunk = chunk?;
            let room = SNIFF_LEN - head.len();
            head.extend_from_slice(&chunk[..room.min(chunk.len())]);
            if head.len() == SNIFF_LEN {
                break;
            }
        }
        Ok(head)
    }

    /// Writes the new state if the upload still stands where this request found it, and
    /// extends the record's lease with the upload's new expiry.
    async fn commit(
        &self,
        tus: &dyn TusRepository,
        media: &EventMedia,
        progress: &mut TusSession,
        expected_offset: u64,
    ) -> Result<(), TusError> {
        progress.expires_at = self.clock.now()
            + TimeDelta::from_std(self.config.direct_upload_ttl).unwrap_or(TimeDelta::MAX);
        if !tus.advance_tus_session(progress, expected_offset).await? {
            let current = tus.find_tus_session(media.id).await?;
            return Err(match current {
                Some(current) => TusError::OffsetMismatch {
                    expected: current.offset,
                },
                None => MediaError::media_not_found(media.id).into(),
            });
        }
        if !self
            .media
            .renew_lease(media.id, progress.expires_at)
            .await?
        {
            return Err(MediaError::media_not_found(media.id).into());
        }
        Ok(())
    }

    /// The last byte arrived: a tail left by a deferred length becomes the last part, the
    /// multipart upload is completed and verified as a direct upload is, and the record becomes
    /// `ready`.
    async fn finish_tus(
        &self,
        media: &EventMedia,
        mut progress: TusSession,
        expected_offset: u64,
        mut old_tails: Vec<String>,
    ) -> Result<TusStatus, TusError> {
        let tus = self.tus_repo()?;
        let staging = ObjectKey::parse(progress.staging_key.as_str()).map_err(MediaError::from)?;
        let done = progress.parts.len() as u64 * progress.part_size;
        if progress.offset > done {
            let body = self.tail_body(&progress, progress.offset - done).await?;
            let number = u32::try_from(progress.parts.len() + 1).unwrap_or(u32::MAX);
            let part = self
                .store
                .upload_part(
                    &staging,
                    &progress.multipart_id,
                    number,
                    body,
                    progress.offset - done,
                )
                .await?;
            progress.parts.push(TusPart {
                number,
                etag: part.etag,
            });
            if let Some(tail) = progress.tail_key.take() {
                old_tails.push(tail);
            }
        }
        let session = UploadSession {
            media_id: media.id,
            kind: DirectUploadKind::Multipart,
            staging_key: progress.staging_key.clone(),
            multipart_id: Some(progress.multipart_id.clone()),
            declared_size: progress.offset,
            declared_sha256: None,
            part_size: Some(progress.part_size),
            expires_at: progress.expires_at,
        };
        let parts = progress
            .parts
            .iter()
            .map(|part| CompletedPart::new(part.number, part.etag.clone()))
            .collect();
        let ready = match self.verify_and_move(media, &session, Some(parts)).await {
            Ok(ready) => ready,
            Err(error) => {
                if !error.is_unavailable() {
                    self.abandon_tus(media).await;
                }
                return Err(error.into());
            }
        };
        for key in &old_tails {
            self.discard_key(Some(key)).await;
        }
        // The record is `ready`: HEAD answers from it whatever this write does.
        if let Err(error) = tus.advance_tus_session(&progress, expected_offset).await {
            tracing::warn!(media_id = %media.id, error = %error, "could not record a finished tus upload's offset");
        }
        tracing::info!(media_id = %ready.id, event_id = %ready.event_id, size = ready.size_bytes, "tus upload completed");
        Ok(status_of(&progress, Some(ready)))
    }

    /// The upload's record and session, if `user` may write to the event. A finished upload is
    /// found only when `finished` is asked for; an expired one is removed and answered so.
    async fn open_tus(
        &self,
        user: &UserId,
        event_id: EventId,
        id: MediaId,
        finished: bool,
    ) -> Result<(EventMedia, TusSession), TusError> {
        self.authorized_event(user, event_id, Access::Write).await?;
        let tus = self.tus_repo()?;
        let media = match self.media.find_media(id).await? {
            Some(media)
                if media.event_id == event_id
                    && (media.status == MediaStatus::Pending
                        || (finished && media.status == MediaStatus::Ready)) =>
            {
                media
            }
            _ => return Err(MediaError::media_not_found(id).into()),
        };
        let Some(session) = tus.find_tus_session(id).await? else {
            return Err(MediaError::media_not_found(id).into());
        };
        if media.status == MediaStatus::Pending && self.clock.now() >= session.expires_at {
            self.abandon_tus(&media).await;
            return Err(MediaError::UploadExpired { id: id.to_string() }.into());
        }
        Ok((media, session))
    }

    /// Removes what a tus upload staged: its multipart upload, staged tail and session. Called
    /// by [`MediaService::discard_staging`], so every removal of a pending record (abort, gc,
    /// event deletion) covers it. Records without a tus session have nothing here.
    pub(crate) async fn discard_tus_staging(&self, media_id: MediaId) -> Result<(), MediaError> {
        let Some(tus) = &self.tus else {
            return Ok(());
        };
        let Some(session) = tus.find_tus_session(media_id).await? else {
            return Ok(());
        };
        let staging = ObjectKey::parse(session.staging_key.as_str())?;
        // A completed multipart upload (refused by the final verification) is the staged object
        // now, with nothing left to abort: s3s-fs refuses that abort with an error.
        match self.store.head(&staging).await {
            Ok(_) => {}
            Err(StoreError::NotFound { .. }) => {
                self.store
                    .abort_multipart(&staging, &session.multipart_id)
                    .await?;
            }
            Err(other) => return Err(other.into()),
        }
        for key in [Some(&session.staging_key), session.tail_key.as_ref()]
            .into_iter()
            .flatten()
        {
            match self.store.delete(&ObjectKey::parse(key.as_str())?).await {
                Ok(()) | Err(StoreError::NotFound { .. }) => {}
                Err(other) => return Err(other.into()),
            }
        }
        tus.delete_tus_session(media_id).await?;
        Ok(())
    }

    /// Removes a refused or expired upload; gc finishes what this cannot.
    async fn abandon_tus(&self, media: &EventMedia) {
        if let Err(error) = self.give_up_upload(media).await {
            tracing::warn!(media_id = %media.id, error = %error,
                "could not remove a refused tus upload; gc will once its lease lapses");
        }
    }

    /// Deletes a staged object that is no longer needed; a failure leaves it to gc.
    async fn discard_key(&self, key: Option<&str>) {
        let Some(key) = key else { return };
        let Ok(object) = ObjectKey::parse(key) else {
            return;
        };
        match self.store.delete(&object).await {
            Ok(()) | Err(StoreError::NotFound { .. }) => {}
            Err(error) => {
                tracing::warn!(%key, error = %error, "could not delete a staged tus object; gc will");
            }
        }
    }
}

fn status_of(session: &TusSession, media: Option<EventMedia>) -> TusStatus {
    TusStatus {
        id: session.media_id,
        offset: media.as_ref().map_or(session.offset, |m| m.size_bytes),
        length: media
            .as_ref()
            .map(|m| m.size_bytes)
            .or(session.upload_length),
        expires_at: session.expires_at,
        metadata: session.metadata.clone(),
        media,
    }
}

/// Parts of [`TUS_PART_SIZE`], larger when a declared length would need more than 10 000.
fn part_size(length: Option<u64>) -> u64 {
    TUS_PART_SIZE
        .max(MIN_PART_SIZE as u64)
        .max(length.unwrap_or(0).div_ceil(MAX_PARTS))
}

/// `body`, failing once it carries more than `max` bytes.
fn limit_stream(body: ByteStream, max: u64) -> ByteStream {
    let mut seen = 0_u64;
    body.map(move |item| {
        let chunk = item?;
        seen += chunk.len() as u64;
        if seen > max {
            return Err(StoreError::Body {
                source: format!("more than the {max} bytes the upload may still take").into(),
            });
        }
        Ok(chunk)
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(text: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(text)
    }

    #[test]
    fn metadata_takes_the_names_clients_use() {
        let header = format!(
            "name {},filetype {},tags {},flag",
            b64("a.jpg"),
            b64("image/jpeg"),
            b64("x,y")
        );
        let parsed = parse_metadata(Some(&header)).unwrap_or_default();
        assert_eq!(parsed.filename.as_deref(), Some("a.jpg"));
        assert_eq!(parsed.content_type.as_deref(), Some("image/jpeg"));
        assert_eq!(parsed.tags.as_deref(), Some("x,y"));
        assert!(parse_metadata(Some("filename !!!")).is_err());
    }

    #[test]
    fn checksums_parse_by_algorithm() {
        let sha1 = base64::engine::general_purpose::STANDARD.encode([0_u8; 20]);
        assert_eq!(
            TusChecksum::parse(&format!("sha1 {sha1}")).ok(),
            Some(TusChecksum::Sha1([0; 20]))
        );
        assert!(TusChecksum::parse(&format!("md5 {sha1}")).is_err());
        assert!(TusChecksum::parse(&format!("sha256 {sha1}")).is_err());
    }
}
