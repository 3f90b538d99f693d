//! Direct uploads: the client sends its bytes straight to the store through presigned URLs (one
//! PUT, or one URL per part of a multipart upload) to a staging key, and nothing becomes media
//! until [`MediaService::complete_direct_upload`] has checked the size, sniffed the head,
//! established the SHA-256 and moved the bytes to their final key.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use futures::StreamExt as _;
use plugs_domain::{
    Access, DirectUploadKind, EventId, EventMedia, MediaId, MediaStatus, Quota, SNIFF_LEN,
    UploadSession, Usage, UserId, sanitize_filename,
};
use plugs_persistence::{ReadyUpdate, RepoError};
use plugs_storage::{
    ByteRange, CompletedPart, GetOptions, MIN_PART_SIZE, ObjectKey, PresignMethod, PresignOptions,
    PresignedUrl, StoreError,
};
use sha2::{Digest as _, Sha256};

use crate::tus::UploadLock;
use crate::{MediaError, MediaService, UploadFields};

/// S3's largest number of parts in one upload.
const MAX_PARTS: u64 = 10_000;

/// What a client declares to start a direct upload.
#[derive(Debug, Clone, Default)]
pub struct DirectUploadRequest {
    /// The file's name (its extension must agree with the type).
    pub filename: String,
    /// The declared content type (must be an allowed type; the bytes must agree at completion).
    pub content_type: String,
    /// The exact length in bytes; the presigned URLs bind it.
    pub size: u64,
    /// The hex SHA-256 of the bytes, if the client knows it: bound into a single PUT (the store
    /// refuses other bytes) and compared at completion.
    pub sha256: Option<String>,
    /// Optional title, description and comma-separated tags, checked as a form's are.
    pub fields: UploadFields,
}

/// How the client sends its bytes.
#[derive(Debug, Clone)]
pub enum UploadPlan {
    /// One PUT of the whole file to `url`, with these exact headers.
    Put(PresignedUrl),
    /// A multipart upload: every part is `part_size` bytes but the last, which is shorter.
    Multipart {
        /// Every part's size but the last one's.
        part_size: u64,
        /// One presigned URL per part, by part number from 1.
        parts: Vec<(u32, PresignedUrl)>,
    },
}

/// A direct upload started: its id (the pending media's id), expiry and plan.
#[derive(Debug, Clone)]
pub struct DirectUpload {
    /// Names the upload in completion, abort and re-signing.
    pub upload_id: MediaId,
    /// When the URLs stop working and an unfinished upload is swept.
    pub expires_at: DateTime<Utc>,
    /// How to send the bytes.
    pub plan: UploadPlan,
}

/// What asking to complete a direct upload found ([`MediaService::begin_direct_completion`]).
#[derive(Debug)]
pub enum Completion {
    /// It was completed before: its media.
    Done(EventMedia),
    /// Another request is verifying it right now.
    Running,
    /// This request holds the upload: verify it with [`MediaService::finish_direct_upload`].
    Claimed(DirectCompletion),
}

/// A direct upload claimed for completion: its lease is held until
/// [`MediaService::finish_direct_upload`] ends (or this is dropped).
#[derive(Debug)]
pub struct DirectCompletion {
    lock: UploadLock,
    media: EventMedia,
    session: UploadSession,
}

impl DirectCompletion {
    /// The upload's id (its media's, once completed).
    pub fn upload_id(&self) -> MediaId {
        self.media.id
    }

    /// The declared size: what verification reads back, at most.
    pub fn size(&self) -> u64 {
        self.session.declared_size
    }
}

/// Whether a failed verification refuses the upload (it is removed): not for a wrong part list
/// or a passing outage, which the client may retry.
fn refuses(error: &MediaError) -> bool {
    !matches!(
        error,
        MediaError::Store(StoreError::InvalidPart { .. } | StoreError::Unavailable { .. })
            | MediaError::Repository(RepoError::Unavailable { .. })
    )
}

/// Where a direct upload stands ([`MediaService::direct_upload_status`]).
#[derive(Debug, Clone)]
pub enum DirectUploadStatus {
    /// Completed: its media.
    Ready(Box<EventMedia>),
    /// A completion is verifying it right now.
    Completing,
    /// Waiting for its bytes and its completion (or for a completion to be asked again, after
    /// one that failed on its part list or an outage, or whose process died).
    Waiting {
        /// When it expires.
        expires_at: DateTime<Utc>,
    },
}

/// What an event and its owner hold, beside the limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventUsage {
    /// The event's bytes (reserved by uploads in flight, real for the rest) and media.
    pub event: Usage,
    /// The same over all the owner's events.
    pub owner: Usage,
    /// The limits in force.
    pub quota: Quota,
}

impl MediaService {
    /// What one of `user`'s events and all of `user`'s events hold, and the quotas.
    pub async fn usage(&self, user: &UserId, event_id: EventId) -> Result<EventUsage, MediaError> {
        let event = self.authorized_event(user, event_id, Access::Read).await?;
        let (of_event, of_owner) = self.media.usage(event_id, &event.owner).await?;
        Ok(EventUsage {
            event: of_event,
            owner: of_owner,
            quota: self.config.quota,
        })
    }

    /// Starts a direct upload: checks the declared size, type, extension and fields against the
    /// policy before anything is written, writes a `pending` record whose lease runs to the
    /// upload's expiry, and presigns the client's PUT (or parts) to a staging key
    /// `uploads/{event_id}/{upload_id}`, never to the final key.
    pub async fn create_direct_upload(
        &self,
        user: &UserId,
        event_id: EventId,
        request: DirectUploadRequest,
    ) -> Result<DirectUpload, MediaError> {
        self.authorized_event(user, event_id, Access::Write).await?;
        let fields = request.fields.parse()?;
        let limit = self.config.policy.max_size_bytes;
        match request.size {
            0 => return Err(MediaError::EmptyFile),
            size if size > limit => return Err(MediaError::TooLarge { limit }),
            _ => {}
        }
        let sha256 = request.sha256.as_deref().map(parse_sha256).transpose()?;
        let content_type = self
            .config
            .policy
            .check_declared(&request.content_type, Some(&request.filename))?;

        let now = self.clock.now();
        let ttl = self.config.direct_upload_ttl;
        let expires_at = now + TimeDelta::from_std(ttl).unwrap_or(TimeDelta::MAX);
        let upload_id = MediaId::new();
        let staging_key = format!("uploads/{event_id}/{upload_id}");
        let staging = ObjectKey::parse(staging_key.as_str())?;
        let mut media = EventMedia {
            id: upload_id,
            event_id,
            title: fields.title,
            description: fields.description,
            tags: fields.tags,
            original_filename: sanitize_filename(&request.filename),
            content_type: content_type.mime.to_owned(),
            size_bytes: 0,
            sha256: None,
            s3_key: plugs_domain::keys::media_key(event_id, now, content_type.extension),
            status: MediaStatus::Pending,
            uploaded_by: user.clone(),
            created_at: now,
            updated_at: now,
            lease_until: Some(expires_at),
            location_stripped: false,
        };
        let multipart = request.size > self.config.multipart_threshold;
        let part_size = multipart.then(|| self.part_size(request.size));
        let multipart_id = if multipart {
            let options = self.put_options(&media);
            Some(self.store.create_multipart(&staging, &options).await?)
        } else {
            None
        };
        let session = UploadSession {
            media_id: upload_id,
            kind: if multipart {
                DirectUploadKind::Multipart
            } else {
                DirectUploadKind::Put
            },
            staging_key,
            multipart_id: multipart_id.clone(),
            declared_size: request.size,
            declared_sha256: sha256.map(hex::encode),
            part_size,
            expires_at,
        };
        let inserted = self
            .insert_pending(
                &mut media,
                None,
                content_type.extension,
                Some(&session),
                request.size,
            )
            .await;
        if let Err(error) = inserted {
            if let Some(id) = &multipart_id {
                let _ = self.store.abort_multipart(&staging, id).await;
            }
            return Err(error);
        }

        let plan = match self.sign_plan(&session, &media, sha256, ttl).await {
            Ok(plan) => plan,
            Err(error) => {
                // Nothing was handed out: the record and its reservation go at once.
                self.abandon_direct(&media).await;
                return Err(error);
            }
        };
        tracing::info!(upload_id = %upload_id, %event_id, size = request.size, multipart, "direct upload started");
        Ok(DirectUpload {
            upload_id,
            expires_at,
            plan,
        })
    }

    /// Signs the URLs of some parts again, for a client whose URLs expired before it finished.
    pub async fn resign_direct_parts(
        &self,
        user: &UserId,
        event_id: EventId,
        upload_id: MediaId,
        part_numbers: &[u32],
    ) -> Result<Vec<(u32, PresignedUrl)>, MediaError> {
        let (_, session) = self.open_direct_upload(user, event_id, upload_id).await?;
        let (Some(multipart_id), Some(part_size)) = (&session.multipart_id, session.part_size)
        else {
            return Err(MediaError::Invalid(
                plugs_domain::DomainError::InvalidField {
                    field: "part_numbers",
                    reason: "this upload is a single PUT, it has no parts".to_owned(),
                },
            ));
        };
        let staging = ObjectKey::parse(session.staging_key.as_str())?;
        let count = session.declared_size.div_ceil(part_size);
        let ttl = self.remaining(&session)?;
        let mut urls = Vec::with_capacity(part_numbers.len());
        for &number in part_numbers {
            if number == 0 || u64::from(number) > count {
                return Err(MediaError::Invalid(
                    plugs_domain::DomainError::InvalidField {
                        field: "part_numbers",
                        reason: format!("part {number} is not within 1 to {count}"),
                    },
                ));
            }
            let size = part_len(session.declared_size, part_size, number);
            urls.push((
                number,
                self.store
                    .presign_part(&staging, multipart_id, number, size, ttl)
                    .await?,
            ));
        }
        Ok(urls)
    }

    /// Claims a direct upload for completion. An upload completed before answers its media
    /// ([`Completion::Done`]); one that another request (on any server process) is verifying
    /// right now answers [`Completion::Running`], so verification never runs twice at once; an
    /// expired one is removed and answered [`MediaError::UploadExpired`]. Otherwise this request
    /// holds the upload's lease and verifies it with [`MediaService::finish_direct_upload`],
    /// at once or in a background task: the lease is renewed while it runs and lapses if its
    /// process dies, and then a repeated completion takes over (gc does once the record's lease
    /// lapses too).
    pub async fn begin_direct_completion(
        &self,
        user: &UserId,
        event_id: EventId,
        upload_id: MediaId,
    ) -> Result<Completion, MediaError> {
        self.authorized_event(user, event_id, Access::Write).await?;
        let media = match self.find_direct_upload(event_id, upload_id).await? {
            Err(done) => return Ok(Completion::Done(done)),
            Ok(media) => media,
        };
        let Some(session) = self.media.find_upload_session(upload_id).await? else {
            return Err(MediaError::media_not_found(upload_id));
        };
        if self.clock.now() >= session.expires_at {
            self.abandon_direct(&media).await;
            return Err(MediaError::UploadExpired {
                id: upload_id.to_string(),
            });
        }
        let Some(lock) = self.lock_upload(upload_id).await? else {
            return Ok(Completion::Running);
        };
        // Read again under the lease: a completion that held it until a moment ago may have
        // finished (or refused) the upload.
        let media = match self.find_direct_upload(event_id, upload_id).await {
            Ok(Ok(media)) => media,
            Ok(Err(done)) => {
                lock.release().await;
                return Ok(Completion::Done(done));
            }
            Err(error) => {
                lock.release().await;
                return Err(error);
            }
        };
        // Verification may read a large object back: hold the record for as long as that may
        // take, so gc cannot roll the upload back under it near its expiry.
        let hold = self.clock.now()
            + TimeDelta::from_std(self.config.direct_upload_ttl).unwrap_or(TimeDelta::MAX);
        if let Err(error) = self
            .media
            .renew_lease(upload_id, hold.max(session.expires_at))
            .await
        {
            lock.release().await;
            return Err(error.into());
        }
        Ok(Completion::Claimed(DirectCompletion {
            lock,
            media,
            session,
        }))
    }

    /// Verifies and completes a claimed direct upload: finishes the multipart upload (with the
    /// client's part list), checks the size against the declaration, sniffs the head with a
    /// ranged GET (same rules as a form upload), establishes the SHA-256 (from the store when it
    /// verified a declared one, else by reading the object back as a stream, comparing with a
    /// declared one), moves the bytes to their final key with encryption and metadata, and
    /// makes the record `ready`. Anything that fails verification is deleted and answered as a
    /// form upload's refusal; a wrong part list or an outage leaves the upload to a retry.
    pub async fn finish_direct_upload(
        &self,
        completion: DirectCompletion,
        parts: Option<Vec<CompletedPart>>,
    ) -> Result<EventMedia, MediaError> {
        let DirectCompletion {
            lock,
            media,
            session,
        } = completion;
        self.while_locked(lock, async {
            let error = match self.verify_direct(&media, &session, parts).await {
                Ok(done) => return Ok(done),
                Err(error) => error,
            };
            if refuses(&error) {
                self.abandon_direct(&media).await;
            }
            Err(error)
        })
        .await
    }

    /// [`MediaService::finish_direct_upload`] for a completion whose request was answered
    /// already: a failure goes to `keep` (which keeps it for the client to fetch) while the
    /// upload is still leased, before a refused upload is removed, so that whoever asks where
    /// it stands sees it verifying until its outcome is there.
    pub async fn finish_direct_upload_then<F, Fut>(
        &self,
        completion: DirectCompletion,
        parts: Option<Vec<CompletedPart>>,
        keep: F,
    ) -> Option<EventMedia>
    where
        F: FnOnce(MediaError) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let DirectCompletion {
            lock,
            media,
            session,
        } = completion;
        self.while_locked(lock, async {
            let error = match self.verify_direct(&media, &session, parts).await {
                Ok(done) => return Some(done),
                Err(error) => error,
            };
            let refused = refuses(&error);
            keep(error).await;
            if refused {
                self.abandon_direct(&media).await;
            }
            None
        })
        .await
    }

    async fn verify_direct(
        &self,
        media: &EventMedia,
        session: &UploadSession,
        parts: Option<Vec<CompletedPart>>,
    ) -> Result<EventMedia, MediaError> {
        let done = self.verify_and_move(media, session, parts).await?;
        tracing::info!(media_id = %done.id, event_id = %done.event_id, size = done.size_bytes, "direct upload completed");
        Ok(done)
    }

    /// Where a direct upload stands, for the client that polls a completion running in the
    /// background. A refused upload is gone: [`MediaError::NotFound`].
    pub async fn direct_upload_status(
        &self,
        user: &UserId,
        event_id: EventId,
        upload_id: MediaId,
    ) -> Result<DirectUploadStatus, MediaError> {
        self.authorized_event(user, event_id, Access::Write).await?;
        let media = match self.media.find_media(upload_id).await? {
            Some(media) if media.event_id == event_id => media,
            _ => return Err(MediaError::media_not_found(upload_id)),
        };
        if media.status == MediaStatus::Ready {
            return Ok(DirectUploadStatus::Ready(Box::new(media)));
        }
        // A refused upload is being removed under its completion's lease: it is still
        // verifying, as far as the client is concerned, until nothing of it is left.
        if self.upload_locked(upload_id).await? {
            return Ok(DirectUploadStatus::Completing);
        }
        if media.status == MediaStatus::Deleting {
            return Err(MediaError::media_not_found(upload_id));
        }
        let Some(session) = self.media.find_upload_session(upload_id).await? else {
            return Err(MediaError::media_not_found(upload_id));
        };
        if self.clock.now() >= session.expires_at {
            return Err(MediaError::UploadExpired {
                id: upload_id.to_string(),
            });
        }
        Ok(DirectUploadStatus::Waiting {
            expires_at: session.expires_at,
        })
    }

    /// A direct upload's record: `Ok` while pending, `Err` with the media once completed.
    async fn find_direct_upload(
        &self,
        event_id: EventId,
        upload_id: MediaId,
    ) -> Result<Result<EventMedia, EventMedia>, MediaError> {
        match self.media.find_media(upload_id).await? {
            Some(media) if media.event_id == event_id => match media.status {
                MediaStatus::Ready => Ok(Err(media)),
                MediaStatus::Pending => Ok(Ok(media)),
                MediaStatus::Deleting => Err(MediaError::media_not_found(upload_id)),
            },
            _ => Err(MediaError::media_not_found(upload_id)),
        }
    }

    /// Aborts a direct upload: the multipart upload is aborted, the staged object and the
    /// record removed. A finished upload is media now: use the media delete instead.
    pub async fn abort_direct_upload(
        &self,
        user: &UserId,
        event_id: EventId,
        upload_id: MediaId,
    ) -> Result<(), MediaError> {
        self.authorized_event(user, event_id, Access::Write).await?;
        match self.media.find_media(upload_id).await? {
            // A delete that failed half-way: finish it.
            Some(media) if media.event_id == event_id && media.status == MediaStatus::Deleting => {
                self.remove_media(&media).await
            }
            // Only while still pending: a completion that won the race keeps its media.
            Some(media) if media.event_id == event_id && media.status == MediaStatus::Pending => {
                if self.give_up_upload(&media).await? {
                    Ok(())
                } else {
                    Err(MediaError::media_not_found(upload_id))
                }
            }
            _ => Err(MediaError::media_not_found(upload_id)),
        }
    }

    /// Removes what a direct upload staged: its open multipart upload and its staged object.
    /// Records without a session (form uploads) have nothing staged.
    pub(crate) async fn discard_staging(&self, media_id: MediaId) -> Result<(), MediaError> {
        self.discard_tus_staging(media_id).await?;
        let Some(session) = self.media.find_upload_session(media_id).await? else {
            return Ok(());
        };
        let staging = ObjectKey::parse(session.staging_key.as_str())?;
        if let Some(id) = &session.multipart_id {
            // A completed multipart upload is the staged object now, with nothing left to abort
            // (and s3s-fs answers aborting it with an error other than NoSuchUpload).
            match self.store.head(&staging).await {
                Ok(_) => {}
                Err(StoreError::NotFound { .. }) => {
                    self.store.abort_multipart(&staging, id).await?
                }
                Err(other) => return Err(other.into()),
            }
        }
        match self.store.delete(&staging).await {
            Ok(()) | Err(StoreError::NotFound { .. }) => Ok(()),
            Err(other) => Err(other.into()),
        }
    }

    async fn open_direct_upload(
        &self,
        user: &UserId,
        event_id: EventId,
        upload_id: MediaId,
    ) -> Result<(EventMedia, UploadSession), MediaError> {
        self.authorized_event(user, event_id, Access::Write).await?;
        let media = match self.media.find_media(upload_id).await? {
            Some(media) if media.event_id == event_id && media.status == MediaStatus::Pending => {
                media
            }
            _ => return Err(MediaError::media_not_found(upload_id)),
        };
        let Some(session) = self.media.find_upload_session(upload_id).await? else {
            return Err(MediaError::media_not_found(upload_id));
        };
        if self.clock.now() >= session.expires_at {
            return Err(MediaError::UploadExpired {
                id: upload_id.to_string(),
            });
        }
        Ok((media, session))
    }

    pub(crate) async fn verify_and_move(
        &self,
        media: &EventMedia,
        session: &UploadSession,
        parts: Option<Vec<CompletedPart>>,
    ) -> Result<EventMedia, MediaError> {
        let staging = ObjectKey::parse(session.staging_key.as_str())?;
        if let Some(multipart_id) = &session.multipart_id {
            let parts = match parts {
                Some(parts) if !parts.is_empty() => parts,
                // Without the client's list, the store's own list of what arrived.
                _ => self
                    .store
                    .list_parts(&staging, multipart_id)
                    .await?
                    .iter()
                    .map(CompletedPart::from)
                    .collect(),
            };
            self.store
                .complete_multipart(&staging, multipart_id, &parts)
                .await?;
        }
        let head = match self.store.head(&staging).await {
            Ok(head) => head,
            Err(StoreError::NotFound { .. }) => {
                return Err(MediaError::SizeMismatch {
                    declared: session.declared_size,
                    received: 0,
                });
            }
            Err(other) => return Err(other.into()),
        };
        if head.size != session.declared_size {
            return Err(MediaError::SizeMismatch {
                declared: session.declared_size,
                received: head.size,
            });
        }

        // The bytes decide the type, exactly as for a form upload.
        let mut options = GetOptions::default();
        options.range = Some(ByteRange::Bounded {
            start: 0,
            end: (SNIFF_LEN as u64).min(head.size),
        });
        let mut sniff = Vec::with_capacity(SNIFF_LEN);
        let mut body = self.store.get(&staging, options).await?.body;
        while let Some(chunk) = body.next().await {
            sniff.extend_from_slice(&chunk?);
        }
        self.config.policy.classify(
            &sniff,
            Some(&media.content_type),
            media.original_filename.as_deref(),
        )?;

        let declared = session
            .declared_sha256
            .as_deref()
            .map(parse_sha256)
            .transpose()?;
        let sha256 = match (head.sha256, declared) {
            // The store verified the declared checksum on the PUT itself.
            (Some(verified), Some(declared)) if verified == declared => verified,
            _ => {
                let read = self.read_back_sha256(&staging).await?;
                if let Some(declared) = declared
                    && declared != read
                {
                    return Err(MediaError::ChecksumMismatch);
                }
                read
            }
        };

        // The checksum a client declared is of the bytes it sent; the record's is of those stored.
        let (sha256, location_stripped) = self
            .place_staged(&staging, media, head.size, sha256)
            .await?;
        match self.store.delete(&staging).await {
            Ok(()) | Err(StoreError::NotFound { .. }) => {}
            // The object is safe at its final key; gc sweeps the staged copy.
            Err(error) => {
                tracing::warn!(key = %staging, error = %error, "could not delete a staged upload");
            }
        }
        let update = ReadyUpdate {
            size_bytes: head.size,
            sha256,
            fields: plugs_domain::MediaFields {
                title: media.title.clone(),
                description: media.description.clone(),
                tags: media.tags.clone(),
            },
            at: self.clock.now(),
            location_stripped,
        };
        Ok(self.media.mark_ready(media.id, update).await?)
    }

    async fn read_back_sha256(&self, key: &ObjectKey) -> Result<[u8; 32], MediaError> {
        let mut hasher = Sha256::new();
        let mut body = self.store.get(key, GetOptions::default()).await?.body;
        while let Some(chunk) = body.next().await {
            hasher.update(&chunk?);
        }
        Ok(hasher.finalize().into())
    }

    /// Removes a refused or expired direct upload: staged bytes, multipart upload, record.
    async fn abandon_direct(&self, media: &EventMedia) {
        if let Err(error) = self.give_up_upload(media).await {
            tracing::warn!(media_id = %media.id, error = %error,
                "could not remove a refused direct upload; gc will once its lease lapses");
        }
    }

    /// Gives up an upload in flight: its record is claimed only while still `pending`, so a
    /// racing completion that made it media keeps its record and object; then the staged bytes,
    /// the object and the record go. `false` when the upload is no longer pending.
    pub(crate) async fn give_up_upload(&self, media: &EventMedia) -> Result<bool, MediaError> {
        let Some(claimed) = self
            .media
            .abandon_pending(media.id, self.clock.now())
            .await?
        else {
            return Ok(false);
        };
        self.remove_media(&claimed).await?;
        Ok(true)
    }

    async fn sign_plan(
        &self,
        session: &UploadSession,
        media: &EventMedia,
        sha256: Option<[u8; 32]>,
        ttl: Duration,
    ) -> Result<UploadPlan, MediaError> {
        let staging = ObjectKey::parse(session.staging_key.as_str())?;
        match (&session.multipart_id, session.part_size) {
            (Some(multipart_id), Some(part_size)) => {
                let count = session.declared_size.div_ceil(part_size);
                let mut parts = Vec::new();
                for number in 1..=u32::try_from(count).unwrap_or(u32::MAX) {
                    let size = part_len(session.declared_size, part_size, number);
                    parts.push((
                        number,
                        self.store
                            .presign_part(&staging, multipart_id, number, size, ttl)
                            .await?,
                    ));
                }
                Ok(UploadPlan::Multipart { part_size, parts })
            }
            _ => {
                let mut options =
                    PresignOptions::for_put(session.declared_size, media.content_type.clone());
                if let Some(sha256) = sha256 {
                    options = options.with_sha256(sha256);
                }
                Ok(UploadPlan::Put(
                    self.store
                        .presign(PresignMethod::Put, &staging, ttl, &options)
                        .await?,
                ))
            }
        }
    }

    /// Parts of the configured size, larger when the file would need more than 10 000.
    fn part_size(&self, size: u64) -> u64 {
        self.config
            .direct_part_size
            .max(MIN_PART_SIZE as u64)
            .max(size.div_ceil(MAX_PARTS))
    }

    fn remaining(&self, session: &UploadSession) -> Result<Duration, MediaError> {
        (session.expires_at - self.clock.now())
            .to_std()
            .map_err(|_| MediaError::UploadExpired {
                id: session.media_id.to_string(),
            })
    }
}

/// The length of part `number` (from 1) of a file of `size` bytes cut in `part_size` pieces.
fn part_len(size: u64, part_size: u64, number: u32) -> u64 {
    let start = u64::from(number - 1) * part_size;
    part_size.min(size.saturating_sub(start))
}

fn parse_sha256(hex_digest: &str) -> Result<[u8; 32], MediaError> {
    hex::decode(hex_digest.trim())
        .ok()
        .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
        .ok_or_else(|| {
            MediaError::Invalid(plugs_domain::DomainError::InvalidField {
                field: "sha256",
                reason: "must be 64 hexadecimal digits".to_owned(),
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_cover_the_file_with_a_shorter_last_one() {
        assert_eq!(part_len(25, 10, 1), 10);
        assert_eq!(part_len(25, 10, 3), 5);
        assert_eq!(part_len(20, 10, 2), 10);
    }
}
