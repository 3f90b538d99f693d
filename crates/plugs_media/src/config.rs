//! The service's settings: plain values, filled in by the binary.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use plugs_domain::MediaPolicy;
use plugs_storage::{ObjectKey, PresignedUrl, ServerSideEncryption, StoreError};

/// Hands out download URLs in place of the store's presigned ones: a CDN in front of the bucket
/// that checks its own signatures (CloudFront signed URLs). The binary implements it; the
/// service only asks it for a URL.
pub trait DownloadSigner: fmt::Debug + Send + Sync {
    /// A URL that fetches `key` until `ttl` from now, without other credentials.
    fn presign_get(&self, key: &ObjectKey, ttl: Duration) -> Result<PresignedUrl, StoreError>;
}

/// Everything the service needs to know besides its backends. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// Size limit and accepted types of uploads.
    pub policy: MediaPolicy,
    /// Encryption at rest asked of the store for every new object.
    pub encryption: ServerSideEncryption,
    /// Lifetime of a presigned URL when the caller does not ask for one.
    pub presign_default_ttl: Duration,
    /// Longest lifetime of a presigned URL; longer requests are cut to it (S3 refuses more than
    /// 7 days for SigV4).
    pub presign_max_ttl: Duration,
    /// The base URL of a CDN in front of the bucket, when there is one. The service builds no
    /// URL: it only carries this for the edge, which answers a media's `url` as
    /// `{cdn_base_url}/{s3_key}` when set and with its own download route otherwise.
    pub cdn_base_url: Option<String>,
    /// How old an unfinished record or an unclaimed object must be before the reconciler
    /// touches it. Uploads in flight are protected by their lease instead, whatever the grace.
    pub reconcile_grace: Duration,
    /// How long a form upload's `pending` record is held without news: the lease is renewed
    /// while bytes arrive (every third of this), and the reconciler rolls back only records
    /// whose lease has lapsed.
    pub upload_lease: Duration,
    /// How long a direct upload's presigned URLs work; its record is held (leased) until then.
    pub direct_upload_ttl: Duration,
    /// Direct uploads above this size get a multipart plan instead of one PUT.
    pub multipart_threshold: u64,
    /// Completing a direct upload above this size verifies it in the background: the edge
    /// answers at once with where to poll for the outcome.
    pub direct_complete_async_above: u64,
    /// Part size of a direct multipart upload (at least 5 MiB; larger when a file would need
    /// more than 10 000 parts).
    pub direct_part_size: u64,
    /// Limits on what an event and an owner may hold; none by default.
    pub quota: plugs_domain::Quota,
    /// When set, presigned downloads are this signer's URLs (a CDN's) instead of the store's.
    pub download_signer: Option<Arc<dyn DownloadSigner>>,
    /// Blank the GPS position in the EXIF of every uploaded original (JPEG, PNG, WebP) before
    /// it is stored: in the stream for form uploads, by one streamed rewrite when a direct or
    /// resumable upload is finalized. On by default.
    pub strip_location: bool,
    /// The external decoders found at start (`ffmpeg`, `heif-convert`, `prlimit`): which types
    /// get derived versions beyond the built-in still images
    /// ([`ExternalTools::processable`](crate::ExternalTools::processable)), and what the
    /// workers run. None by default.
    pub external_tools: crate::ExternalTools,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            policy: MediaPolicy::default(),
            encryption: ServerSideEncryption::Aes256,
            presign_default_ttl: Duration::from_secs(15 * 60),
            presign_max_ttl: Duration::from_secs(7 * 24 * 60 * 60),
            cdn_base_url: None,
            reconcile_grace: Duration::from_secs(60 * 60),
            upload_lease: Duration::from_secs(60),
            direct_upload_ttl: Duration::from_secs(60 * 60),
            multipart_threshold: 64 * 1024 * 1024,
            direct_complete_async_above: 128 * 1024 * 1024,
            direct_part_size: 16 * 1024 * 1024,
            quota: plugs_domain::Quota::default(),
            download_signer: None,
            strip_location: true,
            external_tools: crate::ExternalTools::default(),
        }
    }
}
