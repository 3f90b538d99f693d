//! Media processing (issue 12): the worker that makes derived versions (thumbnails at configured
//! widths, a display copy) of every image, and the service's reads of them.
//!
//! Jobs come from the database queue ([`JobRepository`]): enqueued with the media's `ready`,
//! claimed under a lease the worker renews while it works, retried after a failure of the store
//! or the database, parked at once on a file that can never be read (a decompression bomb, a
//! corrupt image) and after the last allowed attempt otherwise. Outputs go to keys fixed by the
//! original's key and the variant's name ([`derived_key`]), so a retried or duplicated job
//! overwrites rather than adds. Decoding and encoding run on the blocking pool, under the decode
//! limits of `plugs_imaging` (pixels declared, frames, bytes a decoder may allocate) and a
//! bound on the original's size, since a decoder needs the whole file.
//!
//! HEIC, AVIF and videos are decoded by C programs instead (`heif-convert`, `ffmpeg`), each in
//! a child process under resource limits ([`crate::external`]): the original is streamed from
//! the store into a private temporary file (never whole in memory; videos have a size limit of
//! their own), the program writes a PNG (for a video, its poster frame), and that PNG goes
//! through the same pure-Rust rendering. A video's variants are its thumbnails and `poster`
//! (the frame, its long edge capped like the display copy's).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::TimeDelta;
use futures::TryStreamExt as _;
use plugs_domain::{
    DerivedVersion, EventId, EventMedia, MediaId, MediaProcessing, MediaStatus, ProcessingState,
    UserId, keys,
};
use plugs_imaging::{DecodeLimits, Encoding, ImagingError, RenditionSpec, Size};
use plugs_persistence::{JobClaim, JobOutcome, JobRepository, JobState, ProcessingJob};
use plugs_storage::{
    GetOptions, GetResult, ObjectKey, PresignMethod, PresignOptions, PresignedUrl,
};
use plugs_storage::{ObjectStoreExt as _, PutOptions};
use tokio::io::AsyncWriteExt as _;

use crate::external::{self, ChildLimits, Decoder, ExternalError};
use crate::{MediaError, MediaService};

/// How derived versions are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DerivedFormat {
    /// JPEG at [`ProcessingConfig::quality`]: what photographs want.
    Jpeg,
    /// Lossless WebP (the pure-Rust encoder writes no lossy WebP): small graphics only.
    Webp,
}

impl DerivedFormat {
    fn encoding(self, quality: u8) -> Encoding {
        match self {
            Self::Jpeg => Encoding::Jpeg { quality },
            Self::Webp => Encoding::WebpLossless,
        }
    }

    /// The extension of derived keys in this format.
    pub const fn extension(self) -> &'static str {
        match self {
            Self::Jpeg => "jpg",
            Self::Webp => "webp",
        }
    }
}

/// The worker's settings: plain values, filled in by the binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessingConfig {
    /// Thumbnail widths, in pixels (variants `thumb-{width}`); never upscaled, aspect kept.
    pub thumbnail_widths: Vec<u32>,
    /// The display copy's longer edge, in pixels (variant `display`).
    pub display_long_edge: u32,
    /// The encoding of every derived version.
    pub format: DerivedFormat,
    /// JPEG quality, 1 to 100.
    pub quality: u8,
    /// Most pixels an original may declare (decompression bombs are refused from the header).
    pub max_pixels: u64,
    /// Most frames an animation may have (only the first is used).
    pub max_frames: u32,
    /// Most bytes a decoder may allocate for one job.
    pub max_decode_bytes: u64,
    /// Largest original a worker reads (a decoder needs the whole file in memory).
    pub max_original_bytes: u64,
    /// Most claims of one job; the failure of the last parks it with its error.
    pub max_attempts: u32,
    /// How long a claim holds a job without news; renewed every third of it while working, so a
    /// crashed worker's job is claimed again this long after its last renewal.
    pub job_lease: Duration,
    /// Longest a job may take; past it the attempt fails.
    pub job_timeout: Duration,
    /// How long an idle worker waits before looking for work again.
    pub poll_interval: Duration,
    /// Wait before the first retry of a failed job; doubled for each later attempt.
    pub retry_backoff: Duration,
    /// Bytes of address space an external decoder (`heif-convert`, `ffmpeg`) may map.
    pub child_address_space: u64,
    /// CPU seconds an external decoder may use before the kernel kills it.
    pub child_cpu_seconds: u64,
    /// Largest video a worker reads (streamed to a temporary file, not held in memory).
    pub max_video_bytes: u64,
}

impl Default for ProcessingConfig {
    fn default() -> Self {
        Self {
            thumbnail_widths: vec![256, 1024],
            display_long_edge: 2048,
            format: DerivedFormat::Jpeg,
            quality: 82,
            max_pixels: DecodeLimits::default().max_pixels,
            max_frames: DecodeLimits::default().max_frames,
            max_decode_bytes: DecodeLimits::default().max_alloc_bytes,
            max_original_bytes: 100 * 1024 * 1024,
            max_attempts: 5,
            job_lease: Duration::from_secs(60),
            job_timeout: Duration::from_secs(120),
            poll_interval: Duration::from_secs(1),
            retry_backoff: Duration::from_secs(5),
            child_address_space: 2 << 30,
            child_cpu_seconds: 60,
            max_video_bytes: 1 << 30,
        }
    }
}

/// The display copy's variant name.
pub const DISPLAY_VARIANT: &str = "display";

/// A video's poster frame's variant name (its long edge capped like the display copy's).
pub const POSTER_VARIANT: &str = "poster";

/// The variant name of the thumbnail of this width.
pub fn thumbnail_variant(width: u32) -> String {
    format!("thumb-{width}")
}

impl ProcessingConfig {
    /// Every variant these settings make, by name, with its size.
    pub fn variants(&self) -> Vec<(String, Size)> {
        let mut variants: Vec<(String, Size)> = self
            .thumbnail_widths
            .iter()
            .map(|&width| (thumbnail_variant(width), Size::Width(width)))
            .collect();
        variants.push((
            DISPLAY_VARIANT.to_owned(),
            Size::LongEdge(self.display_long_edge),
        ));
        variants
    }

    /// Every variant a video gets: the thumbnails of its poster frame, and the frame itself.
    pub fn video_variants(&self) -> Vec<(String, Size)> {
        let mut variants: Vec<(String, Size)> = self
            .thumbnail_widths
            .iter()
            .map(|&width| (thumbnail_variant(width), Size::Width(width)))
            .collect();
        variants.push((
            POSTER_VARIANT.to_owned(),
            Size::LongEdge(self.display_long_edge),
        ));
        variants
    }

    /// The variants a media of this content type gets.
    fn variants_for(&self, content_type: &str) -> Vec<(String, Size)> {
        if matches!(
            external::Decoder::for_type(content_type),
            Some(external::Decoder::Video { .. })
        ) {
            self.video_variants()
        } else {
            self.variants()
        }
    }

    fn limits(&self) -> DecodeLimits {
        let mut limits = DecodeLimits::with_max_pixels(self.max_pixels);
        limits.max_frames = self.max_frames;
        limits.max_alloc_bytes = self.max_decode_bytes;
        limits
    }
}

/// The key of a media's derived version: `{original key}.{variant}.{extension}`, beside the
/// original (same event prefix, so deleting an event's objects finds them) and fixed, so a
/// retry overwrites it.
///
/// ```
/// use plugs_media::{derived_key, parse_derived_key};
/// let original = "events/00000000-0000-0000-0000-000000000000/media/2024/03/09/070501_000042.png";
/// let key = derived_key(original, "thumb-256", "jpg");
/// assert_eq!(key, format!("{original}.thumb-256.jpg"));
/// assert_eq!(parse_derived_key(&key), Some((original, "thumb-256")));
/// assert_eq!(parse_derived_key(original), None);
/// ```
pub fn derived_key(original_key: &str, variant: &str, extension: &str) -> String {
    format!("{original_key}.{variant}.{extension}")
}

/// The original's key and the variant of a key [`derived_key`] made; `None` for any other key
/// (an original's among them).
pub fn parse_derived_key(key: &str) -> Option<(&str, &str)> {
    let mut parts = key.rsplitn(3, '.');
    let extension = parts.next()?;
    let variant = parts.next()?;
    let original = parts.next()?;
    let name_ok = !variant.is_empty()
        && variant
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let ext_ok = matches!(extension, "jpg" | "webp");
    (name_ok && ext_ok && keys::parse_media_key(original).is_some()).then_some((original, variant))
}

/// What the worker did with the job it claimed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum JobReport {
    /// Every variant is stored.
    Done {
        /// The job.
        job: uuid::Uuid,
        /// The media.
        media_id: MediaId,
    },
    /// It failed and was queued again or parked (`state`), with this error.
    Failed {
        /// The job.
        job: uuid::Uuid,
        /// The media.
        media_id: MediaId,
        /// Queued (to retry) or parked.
        state: JobState,
        /// Why.
        error: String,
    },
    /// Another worker took it over (this one's lease lapsed) or its media is gone: nothing
    /// written by this attempt counts.
    Lost {
        /// The job.
        job: uuid::Uuid,
    },
}

/// Why one attempt failed, and whether trying again can help.
struct Failure {
    message: String,
    permanent: bool,
}

impl From<MediaError> for Failure {
    fn from(error: MediaError) -> Self {
        Self {
            message: error_chain(&error),
            permanent: false,
        }
    }
}

impl From<ExternalError> for Failure {
    fn from(error: ExternalError) -> Self {
        Self {
            message: error.message,
            permanent: error.permanent,
        }
    }
}

impl From<ImagingError> for Failure {
    /// A file that cannot be read now never will be: parked at once.
    fn from(error: ImagingError) -> Self {
        Self {
            message: error.to_string(),
            permanent: true,
        }
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A worker: claims jobs one at a time and makes their derived versions. Cheap to clone; run as
/// many as there are cores to give ([`ProcessingWorker::run`]).
#[derive(Debug, Clone)]
pub struct ProcessingWorker {
    service: MediaService,
    jobs: Arc<dyn JobRepository>,
    config: Arc<ProcessingConfig>,
}

impl ProcessingWorker {
    /// A worker over the service's store, repositories and processing queue; `None` when the
    /// service has no queue ([`MediaService::with_jobs`]).
    pub fn new(service: &MediaService, config: ProcessingConfig) -> Option<Self> {
        Some(Self {
            service: service.clone(),
            jobs: service.jobs.clone()?,
            config: Arc::new(config),
        })
    }

    /// Works until `shutdown` resolves: claims a job, makes it, and when there is none waits
    /// [`ProcessingConfig::poll_interval`]. A failing database or store is logged and waited
    /// out. The job in hand when `shutdown` comes is finished first (at most
    /// [`ProcessingConfig::job_timeout`]).
    pub async fn run(&self, shutdown: impl Future<Output = ()>) {
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let idle = match self.run_once().await {
                Ok(Some(_)) => false,
                Ok(None) => true,
                Err(error) => {
                    tracing::warn!(error = %error_chain(&error), "processing: could not claim a job");
                    true
                }
            };
            if idle {
                tokio::select! {
                    () = &mut shutdown => return,
                    () = tokio::time::sleep(self.config.poll_interval) => {}
                }
            } else {
                tokio::select! {
                    biased;
                    () = &mut shutdown => return,
                    () = std::future::ready(()) => {}
                }
            }
        }
    }

    /// Claims one job and does it; `None` when no job is runnable.
    ///
    /// # Errors
    /// Only when claiming fails; a failing job is reported in [`JobReport::Failed`].
    pub async fn run_once(&self) -> Result<Option<JobReport>, MediaError> {
        let now = self.service.clock.now();
        let claim = JobClaim {
            now,
            lease_until: now + to_delta(self.config.job_lease),
            max_attempts: self.config.max_attempts.max(1),
        };
        let Some(job) = self.jobs.claim_job(claim).await? else {
            return Ok(None);
        };
        tracing::debug!(job = %job.id, media_id = %job.media_id, attempt = job.attempts, "processing: claimed");
        let attempt = self.attempt(&job);
        let work = tokio::time::timeout(self.config.job_timeout, attempt);
        let result = match self.with_lease(&job, work).await {
            Some(Ok(result)) => result,
            Some(Err(_elapsed)) => Err(Failure {
                message: format!(
                    "the job took longer than the limit of {:?}",
                    self.config.job_timeout
                ),
                permanent: false,
            }),
            None => {
                tracing::warn!(job = %job.id, "processing: lease lost to another worker; attempt abandoned");
                return Ok(Some(JobReport::Lost { job: job.id }));
            }
        };
        self.finish(&job, result).await.map(Some)
    }

    /// Runs `work` while renewing the job's lease every third of it; `None` as soon as a renewal
    /// finds the job taken over (the work is dropped then).
    async fn with_lease<T>(&self, job: &ProcessingJob, work: impl Future<Output = T>) -> Option<T> {
        let every = (self.config.job_lease / 3).max(Duration::from_millis(50));
        let mut work = std::pin::pin!(work);
        loop {
            tokio::select! {
                result = &mut work => return Some(result),
                () = tokio::time::sleep(every) => {
                    let until = self.service.clock.now() + to_delta(self.config.job_lease);
                    match self.jobs.renew_job(job.id, job.attempts, until).await {
                        Ok(true) => {}
                        Ok(false) => return None,
                        // The database may be back before the lease lapses: keep working.
                        Err(error) => tracing::warn!(job = %job.id, error = %error, "processing: could not renew the lease"),
                    }
                }
            }
        }
    }

    /// Records the attempt's result: done, queued again, or parked.
    async fn finish(
        &self,
        job: &ProcessingJob,
        result: Result<JobOutcome, Failure>,
    ) -> Result<JobReport, MediaError> {
        let now = self.service.clock.now();
        match result {
            Ok(outcome) => {
                if self
                    .jobs
                    .complete_job(job.id, job.attempts, &outcome, now)
                    .await?
                {
                    tracing::info!(job = %job.id, media_id = %job.media_id, variants = outcome.versions.len(), "processing: done");
                    Ok(JobReport::Done {
                        job: job.id,
                        media_id: job.media_id,
                    })
                } else {
                    Ok(JobReport::Lost { job: job.id })
                }
            }
            Err(failure) => {
                let retry_at = (!failure.permanent && job.attempts < self.config.max_attempts)
                    .then(|| {
                        let doublings = job.attempts.saturating_sub(1).min(16);
                        now + to_delta(self.config.retry_backoff * 2_u32.pow(doublings))
                    });
                match self
                    .jobs
                    .fail_job(job.id, job.attempts, &failure.message, retry_at, now)
                    .await?
                {
                    Some(state) => {
                        tracing::warn!(job = %job.id, media_id = %job.media_id, attempt = job.attempts, state = state.as_str(), error = %failure.message, "processing: failed");
                        Ok(JobReport::Failed {
                            job: job.id,
                            media_id: job.media_id,
                            state,
                            error: failure.message,
                        })
                    }
                    None => Ok(JobReport::Lost { job: job.id }),
                }
            }
        }
    }

    /// One attempt: read the original (bounded), render every variant asked for on the blocking
    /// pool, store each under its fixed key.
    async fn attempt(&self, job: &ProcessingJob) -> Result<JobOutcome, Failure> {
        let media = match self.service.media.find_media(job.media_id).await {
            Ok(Some(media)) if media.status == MediaStatus::Ready => media,
            Ok(_) => {
                return Err(Failure {
                    message: "the media is no longer ready (deleted or being deleted)".to_owned(),
                    permanent: true,
                });
            }
            Err(error) => return Err(MediaError::from(error).into()),
        };
        let decoder = Decoder::for_type(&media.content_type);
        let max_bytes = match decoder {
            Some(Decoder::Video { .. }) => self.config.max_video_bytes,
            _ => self.config.max_original_bytes,
        };
        if media.size_bytes > max_bytes {
            return Err(Failure {
                message: format!(
                    "the original has {} bytes, more than the limit of {max_bytes}",
                    media.size_bytes
                ),
                permanent: true,
            });
        }
        let variants: Vec<(String, Size)> = self
            .config
            .variants_for(&media.content_type)
            .into_iter()
            .filter(|(name, _)| {
                job.variants
                    .as_ref()
                    .is_none_or(|wanted| wanted.iter().any(|w| w == name))
            })
            .collect();
        let encoding = self.config.format.encoding(self.config.quality);
        let specs: Vec<RenditionSpec> = variants
            .iter()
            .map(|(_, size)| RenditionSpec::new(*size, encoding))
            .collect();
        let limits = self.config.limits();
        let rendered = match decoder {
            None => {
                let original = self.read_original(&media).await?;
                tokio::task::spawn_blocking(move || {
                    plugs_imaging::render(&original, &specs, &limits)
                })
                .await
            }
            Some(decoder) => {
                // The job's private directory, removed with everything in it when dropped.
                let dir = tempfile::Builder::new()
                    .prefix("plugs-decode-")
                    .tempdir()
                    .map_err(|error| Failure {
                        message: format!("cannot create a temporary directory: {error}"),
                        permanent: false,
                    })?;
                let png = self.decode_externally(&media, decoder, dir.path()).await?;
                tokio::task::spawn_blocking(move || {
                    // The decoder turned the pixels upright already.
                    plugs_imaging::render_upright(&png, &specs, &limits)
                })
                .await
            }
        }
        .map_err(|join| Failure {
            message: format!("the renderer stopped: {join}"),
            permanent: false,
        })??;
        let (width, height) = rendered.info.upright_dimensions();
        let mut versions = Vec::with_capacity(variants.len());
        for ((name, _), rendition) in variants.iter().zip(rendered.renditions) {
            let key = derived_key(&media.s3_key, name, self.config.format.extension());
            let object_key = ObjectKey::parse(key.as_str()).map_err(MediaError::from)?;
            let size_bytes = rendition.bytes.len() as u64;
            let mut options = PutOptions::with_content_type(rendition.content_type);
            options.encryption = self.service.config.encryption.clone();
            options.size = Some(size_bytes);
            self.service
                .store
                .put_bytes(&object_key, Bytes::from(rendition.bytes), options)
                .await
                .map_err(MediaError::from)?;
            versions.push(DerivedVersion {
                media_id: media.id,
                variant: name.clone(),
                s3_key: key,
                width: rendition.width,
                height: rendition.height,
                size_bytes,
                content_type: rendition.content_type.to_owned(),
            });
        }
        Ok(JobOutcome {
            width,
            height,
            versions,
        })
    }

    /// Streams the original into `dir`, has `decoder` turn it into a PNG there under the child
    /// limits, and reads the PNG back (at most the decoders' allocation limit: a PNG is never
    /// much larger than its pixels).
    async fn decode_externally(
        &self,
        media: &EventMedia,
        decoder: Decoder,
        dir: &std::path::Path,
    ) -> Result<Vec<u8>, Failure> {
        let limit = match decoder {
            Decoder::Video { .. } => self.config.max_video_bytes,
            Decoder::Heif => self.config.max_original_bytes,
        };
        let input = dir.join("original");
        self.download_original(media, &input, limit).await?;
        let limits = ChildLimits {
            address_space: self.config.child_address_space,
            cpu_seconds: self.config.child_cpu_seconds.max(1),
            file_size: self.config.max_decode_bytes,
            max_pixels: self.config.max_pixels,
        };
        let tools = &self.service.config.external_tools;
        let png = external::decode_to_png(tools, decoder, &input, dir, limits).await?;
        let local = |error: std::io::Error| Failure {
            message: format!("cannot read the decoded image: {error}"),
            permanent: false,
        };
        let size = tokio::fs::metadata(&png).await.map_err(local)?.len();
        if size > self.config.max_decode_bytes {
            return Err(Failure {
                message: format!(
                    "the decoded image has {size} bytes, more than the limit of {}",
                    self.config.max_decode_bytes
                ),
                permanent: true,
            });
        }
        tokio::fs::read(&png).await.map_err(local)
    }

    /// Streams the original into the file `path`, refusing more than `limit` bytes.
    async fn download_original(
        &self,
        media: &EventMedia,
        path: &std::path::Path,
        limit: u64,
    ) -> Result<(), Failure> {
        let local = |error: std::io::Error| Failure {
            message: format!("cannot write the original to a temporary file: {error}"),
            permanent: false,
        };
        let key = ObjectKey::parse(media.s3_key.as_str()).map_err(MediaError::from)?;
        let result = self
            .service
            .store
            .get(&key, GetOptions::default())
            .await
            .map_err(MediaError::from)?;
        let mut file = tokio::fs::File::create(path).await.map_err(local)?;
        let mut written = 0_u64;
        let mut body = result.body;
        while let Some(chunk) = body.try_next().await.map_err(MediaError::from)? {
            written += chunk.len() as u64;
            if written > limit {
                return Err(Failure {
                    message: format!("the original is larger than the limit of {limit} bytes"),
                    permanent: true,
                });
            }
            file.write_all(&chunk).await.map_err(local)?;
        }
        file.flush().await.map_err(local)?;
        Ok(())
    }

    /// The original's bytes, refusing more than the limit however long the stream runs.
    async fn read_original(&self, media: &EventMedia) -> Result<Vec<u8>, Failure> {
        let key = ObjectKey::parse(media.s3_key.as_str()).map_err(MediaError::from)?;
        let result = self
            .service
            .store
            .get(&key, GetOptions::default())
            .await
            .map_err(MediaError::from)?;
        let limit = self.config.max_original_bytes;
        let mut bytes =
            Vec::with_capacity(usize::try_from(media.size_bytes.min(limit)).unwrap_or(0));
        let mut body = result.body;
        while let Some(chunk) = body.try_next().await.map_err(MediaError::from)? {
            if (bytes.len() + chunk.len()) as u64 > limit {
                return Err(Failure {
                    message: format!("the original is larger than the limit of {limit} bytes"),
                    permanent: true,
                });
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(bytes)
    }
}

fn to_delta(duration: Duration) -> TimeDelta {
    TimeDelta::from_std(duration).unwrap_or(TimeDelta::MAX)
}

/// Which derived version a client asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VariantRequest {
    /// The thumbnail of this width (`?size=256`).
    Thumbnail(u32),
    /// A variant by name (`?variant=display`).
    Named(String),
}

impl VariantRequest {
    /// The variant's name.
    pub fn name(&self) -> String {
        match self {
            Self::Thumbnail(width) => thumbnail_variant(*width),
            Self::Named(name) => name.clone(),
        }
    }
}

/// Where a derived version a client asked for stands.
#[derive(Debug)]
#[non_exhaustive]
pub enum VariantState<T> {
    /// Stored: the record and `T` (its bytes, or a URL).
    Ready(DerivedVersion, T),
    /// Its job is queued or running: ask again later.
    Pending,
}

impl MediaService {
    /// The same service with the processing queue: media reads then carry their processing
    /// state and derived versions, deletes take the derived objects along, and the reconciler
    /// knows their keys.
    #[must_use]
    pub fn with_jobs(mut self, jobs: Arc<dyn JobRepository>) -> Self {
        self.jobs = Some(jobs);
        self
    }

    /// What processing knows of these media (any order); empty without a queue.
    pub async fn processing_of(&self, ids: &[MediaId]) -> Result<Vec<MediaProcessing>, MediaError> {
        match &self.jobs {
            Some(jobs) => Ok(jobs.processing_of(ids).await?),
            None => Ok(Vec::new()),
        }
    }

    /// A derived version of one `ready` media of one of `user`'s events, and a stream of its
    /// bytes; [`VariantState::Pending`] while its job runs; [`MediaError::NotFound`] (`what`:
    /// `variant`) when the media's type has none, its processing failed, or no such variant is
    /// made.
    pub async fn open_variant(
        &self,
        user: &UserId,
        event_id: EventId,
        media_id: MediaId,
        request: &VariantRequest,
        options: GetOptions,
    ) -> Result<VariantState<GetResult>, MediaError> {
        let version = match self.find_variant(user, event_id, media_id, request).await? {
            VariantState::Ready(version, ()) => version,
            VariantState::Pending => return Ok(VariantState::Pending),
        };
        let key = ObjectKey::parse(version.s3_key.as_str())?;
        match self.store.get(&key, options).await {
            Ok(result) => Ok(VariantState::Ready(version, result)),
            Err(plugs_storage::StoreError::NotFound { .. }) => {
                tracing::error!(%media_id, key = %key, "derived version recorded without its object");
                Err(variant_not_found(request))
            }
            Err(other) => Err(other.into()),
        }
    }

    /// A presigned (or CDN-signed) URL of a derived version, as for the original
    /// ([`MediaService::presign_download`]).
    pub async fn presign_variant(
        &self,
        user: &UserId,
        event_id: EventId,
        media_id: MediaId,
        request: &VariantRequest,
        ttl: Option<Duration>,
    ) -> Result<VariantState<PresignedUrl>, MediaError> {
        let version = match self.find_variant(user, event_id, media_id, request).await? {
            VariantState::Ready(version, ()) => version,
            VariantState::Pending => return Ok(VariantState::Pending),
        };
        let key = ObjectKey::parse(version.s3_key.as_str())?;
        let ttl = ttl.unwrap_or(self.config.presign_default_ttl).clamp(
            Duration::from_secs(1),
            self.config.presign_max_ttl.max(Duration::from_secs(1)),
        );
        let url = match &self.config.download_signer {
            Some(signer) => signer.presign_get(&key, ttl)?,
            None => {
                self.store
                    .presign(PresignMethod::Get, &key, ttl, &PresignOptions::default())
                    .await?
            }
        };
        Ok(VariantState::Ready(version, url))
    }

    async fn find_variant(
        &self,
        user: &UserId,
        event_id: EventId,
        media_id: MediaId,
        request: &VariantRequest,
    ) -> Result<VariantState<()>, MediaError> {
        self.get_media(user, event_id, media_id).await?;
        let processing = self
            .processing_of(&[media_id])
            .await?
            .pop()
            .ok_or_else(|| variant_not_found(request))?;
        let name = request.name();
        if let Some(version) = processing.variants.into_iter().find(|v| v.variant == name) {
            return Ok(VariantState::Ready(version, ()));
        }
        match processing.state {
            ProcessingState::Pending => Ok(VariantState::Pending),
            ProcessingState::None | ProcessingState::Ready | ProcessingState::Failed => {
                Err(variant_not_found(request))
            }
        }
    }

    /// Deletes a media's derived objects (before its record goes, taking their rows along).
    pub(crate) async fn delete_derived(&self, media: &EventMedia) -> Result<(), MediaError> {
        let Some(jobs) = &self.jobs else {
            return Ok(());
        };
        for processing in jobs.processing_of(&[media.id]).await? {
            for version in processing.variants {
                self.delete_object(&version.s3_key).await?;
            }
        }
        Ok(())
    }

    /// Whether a record claims a derived object: its row, or else a media record of its
    /// original (a job may be writing it right now; the row comes with the job's completion).
    pub(crate) async fn derived_claimed(&self, key: &str) -> Result<Option<bool>, MediaError> {
        let Some((original, _variant)) = parse_derived_key(key) else {
            return Ok(None);
        };
        if let Some(jobs) = &self.jobs
            && jobs.find_derived_by_key(key).await?.is_some()
        {
            return Ok(Some(true));
        }
        Ok(Some(
            self.media
                .find_by_key(original)
                .await?
                .is_some_and(|media| media.status == MediaStatus::Ready),
        ))
    }

    /// Enqueues processing again for `ready` images, of one event or all, making only
    /// `variants` (all when `None`), `batch` media per repository call; `progress` hears
    /// `(seen, enqueued)` after each batch. Returns the same pair at the end. Without a queue,
    /// nothing is enqueued.
    pub async fn reprocess(
        &self,
        event_id: Option<EventId>,
        variants: Option<&[String]>,
        batch: usize,
        mut progress: impl FnMut(u64, u64),
    ) -> Result<(u64, u64), MediaError> {
        let Some(jobs) = &self.jobs else {
            return Ok((0, 0));
        };
        let (mut seen, mut enqueued) = (0_u64, 0_u64);
        let mut after = None;
        loop {
            let ids = jobs
                .processable_media(event_id, after, batch.max(1))
                .await?;
            let Some(last) = ids.last() else {
                break;
            };
            after = Some(*last);
            for id in &ids {
                seen += 1;
                if jobs.enqueue_job(*id, variants, self.clock.now()).await? {
                    enqueued += 1;
                }
            }
            progress(seen, enqueued);
        }
        Ok((seen, enqueued))
    }

    /// Counts the media [`MediaService::reprocess`] would walk (for a progress bar's length).
    pub async fn count_processable(&self, event_id: Option<EventId>) -> Result<u64, MediaError> {
        let Some(jobs) = &self.jobs else {
            return Ok(0);
        };
        let mut count = 0_u64;
        let mut after = None;
        loop {
            let ids = jobs.processable_media(event_id, after, 1000).await?;
            let Some(last) = ids.last() else {
                return Ok(count);
            };
            after = Some(*last);
            count += ids.len() as u64;
        }
    }
}

fn variant_not_found(request: &VariantRequest) -> MediaError {
    MediaError::NotFound {
        what: "variant",
        id: request.name(),
    }
}
