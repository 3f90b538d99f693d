//! `S3Store`: Amazon S3 and S3-compatible stores through aws-sdk-s3.

use std::collections::BTreeMap;
use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream as SdkByteStream;
use aws_sdk_s3::types::{
    ChecksumMode, CompletedMultipartUpload, CompletedPart as S3CompletedPart, MetadataDirective,
    TaggingDirective,
};
use base64::Engine;
use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use http_body::{Frame, SizeHint};

mod admin;
mod bucket;
pub use admin::{CredentialSource, ProbeEncryption};
pub use bucket::{
    ABORT_RULE_ID, ARCHIVE_RULE_ID, ArchiveRule, BucketPlan, BucketSetup, BucketState,
    CORS_RULE_ID, REPLICATION_RULE_ID, RULE_PREFIX, STAGING_RULE_ID,
};

use crate::body::BodyCheck;
use crate::readahead::{MemoryBudget, Reservation};
use crate::signing::encode_key;
use crate::store::{check_part_number, etag_matches};
use crate::{
    ByteRange, ByteStream, CompletedPart, GetOptions, GetResult, ListOptions, ListPage, ObjectKey,
    ObjectMeta, ObjectStore, PartInfo, PresignMethod, PresignOptions, PresignedUrl, PutOptions,
    PutResult, Result, ServerSideEncryption, StoreError, SweepReport,
};

/// S3's smallest part (all but the last).
pub const MIN_PART_SIZE: usize = 5 * 1024 * 1024;
/// S3's largest part.
const MAX_PART_SIZE: usize = 5 * 1024 * 1024 * 1024;
/// S3's most parts in one upload.
const MAX_PARTS: i32 = 10_000;
/// The largest object one PutObject may carry, and one CopyObject copy.
const MAX_SINGLE_PUT: u64 = 5 * 1024 * 1024 * 1024;
/// A part buffer takes its share of the part budget once it holds more than this: bodies
/// smaller than this (most photos' derived versions, small documents) never wait for budget.
pub const UNBUDGETED_PART_BYTES: usize = 256 * 1024;
/// How long an upload that holds no part budget waits in line for one part's worth before it
/// takes it beyond the budget (see [`S3Config::part_budget`]).
pub const DEFAULT_PART_BUDGET_WAIT: Duration = Duration::from_secs(5);
/// Part size of a copy above [`MAX_SINGLE_PUT`] (`UploadPartCopy`): 10 000 parts of 1 GiB hold
/// S3's largest object (5 TiB).
const COPY_PART_SIZE: u64 = 1024 * 1024 * 1024;

/// How an [`S3Store`] reaches its bucket.
#[derive(Clone)]
#[non_exhaustive]
pub struct S3Config {
    /// The bucket.
    pub bucket: String,
    /// The region (`us-east-1` for most S3-compatible servers).
    pub region: String,
    /// A non-AWS endpoint (`http://127.0.0.1:9000`), or `None` for AWS.
    pub endpoint_url: Option<String>,
    /// `http://host/bucket/key` rather than `http://bucket.host/key` (most S3-compatible servers).
    pub force_path_style: bool,
    /// Take credentials from the standard AWS chain (environment, profile, web identity, IAM
    /// role) rather than the static keys below.
    pub use_iam_role: bool,
    /// Static access key id, used when `use_iam_role` is false.
    pub access_key_id: Option<String>,
    /// Static secret key, used when `use_iam_role` is false. Never printed.
    pub secret_access_key: Option<String>,
    /// Size of each multipart-upload part, and the largest object sent in one PutObject.
    /// At least 5 MiB. Memory per upload stays near `part_size × (max_parts_in_flight + 1)`.
    pub part_size: usize,
    /// Parts of one upload sent concurrently.
    pub max_parts_in_flight: usize,
    /// A budget, shared by every upload through this store (and its clones), for the buffers
    /// of parts being filled and sent; `None`: each upload holds what it needs.
    ///
    /// An upload waits in line for a part's share only while it holds no share at all (never
    /// while holding one), for at most [`S3Config::part_budget_wait`] each time, and takes it
    /// beyond the budget (an overdraft, shown in [`MemoryBudget::in_use`]) if it is not free by
    /// then; an overdraft, once taken, stays the upload's own until it ends. Every further part
    /// buffer (parts in flight beyond the first) is taken only when the budget has it free at
    /// once; otherwise the upload waits for its own parts in flight, not the budget. A sent
    /// part's share is kept for the upload's next part unless another upload waits in line,
    /// which then gets it: uploads take turns. So an upload never waits on a budget it holds
    /// part of, and each of its waits is bounded by `part_budget_wait`.
    pub part_budget: Option<MemoryBudget>,
    /// How long an upload holding no share waits in line for one (see
    /// [`S3Config::part_budget`]); [`DEFAULT_PART_BUDGET_WAIT`] by default.
    pub part_budget_wait: Duration,
    /// Time to open a connection.
    pub connect_timeout: Duration,
    /// Time for one whole call (retries included), or `None` for no limit.
    pub operation_timeout: Option<Duration>,
    /// Attempts per call, the first included (the SDK's standard retry with backoff).
    pub max_attempts: u32,
    /// Whether SigV4 covers the bytes of parts and of objects sent from memory (see
    /// [`PayloadSigning`]).
    pub payload_signing: PayloadSigning,
}

/// Whether request signatures cover the payload of uploads sent from memory (UploadPart, a
/// small PutObject). Signing hashes every byte with SHA-256 once more: perf put it at a sixth
/// of a 1 GiB upload's server CPU. Every such request also carries the SDK's CRC32 checksum of
/// its bytes, which the store verifies, so an unsigned payload still cannot arrive corrupted;
/// what signing adds is that nobody on the path can replace the bytes, which TLS already
/// ensures. Streamed uploads (a PutObject of declared size) are never payload-signed: their
/// bytes cannot be read twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum PayloadSigning {
    /// Unsigned over HTTPS (AWS, or an `https://` endpoint), signed over plain HTTP, as the
    /// AWS SDK for Java's `AWS4UnsignedPayloadSigner` does.
    #[default]
    Auto,
    /// Always signed.
    Signed,
    /// Never signed (`UNSIGNED-PAYLOAD`), even over plain HTTP.
    Unsigned,
}

impl PayloadSigning {
    /// Whether payloads are signed for this endpoint (`None`: AWS, always HTTPS).
    pub fn signs(self, endpoint_url: Option<&str>) -> bool {
        match self {
            Self::Signed => true,
            Self::Unsigned => false,
            Self::Auto => endpoint_url.is_some_and(|url| {
                !url.trim_start()
                    .to_ascii_lowercase()
                    .starts_with("https://")
            }),
        }
    }
}

impl S3Config {
    /// A configuration for `bucket` in `region` with static credentials to be filled in, 8 MiB
    /// parts, 2 parts in flight, a 5 s connect and 120 s operation timeout, 3 attempts.
    /// (Two in flight, not four: measured against s3s-fs, four bought no throughput and cost
    /// 17 MiB more per upload; see docs/PERFORMANCE.md.)
    pub fn new(bucket: impl Into<String>, region: impl Into<String>) -> Self {
        Self {
            bucket: bucket.into(),
            region: region.into(),
            endpoint_url: None,
            force_path_style: false,
            use_iam_role: false,
            access_key_id: None,
            secret_access_key: None,
            part_size: 8 * 1024 * 1024,
            max_parts_in_flight: 2,
            part_budget: None,
            part_budget_wait: DEFAULT_PART_BUDGET_WAIT,
            connect_timeout: Duration::from_secs(5),
            operation_timeout: Some(Duration::from_secs(120)),
            max_attempts: 3,
            payload_signing: PayloadSigning::Auto,
        }
    }
}

impl fmt::Debug for S3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("endpoint_url", &self.endpoint_url)
            .field("force_path_style", &self.force_path_style)
            .field("use_iam_role", &self.use_iam_role)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "<redacted>"),
            )
            .field("part_size", &self.part_size)
            .field("max_parts_in_flight", &self.max_parts_in_flight)
            .field("part_budget", &self.part_budget)
            .field("part_budget_wait", &self.part_budget_wait)
            .field("connect_timeout", &self.connect_timeout)
            .field("operation_timeout", &self.operation_timeout)
            .field("max_attempts", &self.max_attempts)
            .field("payload_signing", &self.payload_signing)
            .finish()
    }
}

/// A multipart upload started and neither completed nor aborted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingUpload {
    /// The key being uploaded.
    pub key: String,
    /// S3's id of the upload.
    pub upload_id: String,
    /// When it started, when the server says.
    pub initiated: Option<DateTime<Utc>>,
}

/// An object store on S3 or an S3-compatible server.
#[derive(Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    part_size: usize,
    max_parts_in_flight: usize,
    part_budget: Option<MemoryBudget>,
    part_budget_wait: Duration,
    /// [`PayloadSigning`] resolved for the endpoint.
    sign_payload: bool,
}

impl fmt::Debug for S3Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Store")
            .field("bucket", &self.bucket)
            .field("part_size", &self.part_size)
            .field("max_parts_in_flight", &self.max_parts_in_flight)
            .field("part_budget", &self.part_budget)
            .field("sign_payload", &self.sign_payload)
            .finish_non_exhaustive()
    }
}

fn config_error(message: &str) -> StoreError {
    StoreError::other("invalid S3 configuration", message.to_owned())
}

impl S3Store {
    /// Builds the client. Makes no request: a wrong bucket or credentials show at the first call
    /// (see [`S3Store::ensure_bucket`] for a start-up check).
    pub async fn new(config: S3Config) -> Result<Self> {
        if config.bucket.is_empty() {
            return Err(config_error("the bucket name is empty"));
        }
        if !(MIN_PART_SIZE..=MAX_PART_SIZE).contains(&config.part_size) {
            return Err(config_error("part_size must be between 5 MiB and 5 GiB"));
        }
        if config.max_parts_in_flight == 0 || config.max_attempts == 0 {
            return Err(config_error(
                "max_parts_in_flight and max_attempts must be at least 1",
            ));
        }
        let mut timeouts =
            aws_config::timeout::TimeoutConfig::builder().connect_timeout(config.connect_timeout);
        if let Some(timeout) = config.operation_timeout {
            timeouts = timeouts.operation_timeout(timeout);
        }
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(config.region.clone()))
            .timeout_config(timeouts.build())
            .retry_config(
                aws_config::retry::RetryConfig::standard().with_max_attempts(config.max_attempts),
            );
        if !config.use_iam_role {
            let (Some(access_key), Some(secret_key)) =
                (&config.access_key_id, &config.secret_access_key)
            else {
                return Err(config_error(
                    "static credentials need both access_key_id and secret_access_key",
                ));
            };
            loader = loader.credentials_provider(Credentials::new(
                access_key,
                secret_key,
                None,
                None,
                "plugs-static",
            ));
        }
        if let Some(endpoint) = &config.endpoint_url {
            loader = loader.endpoint_url(endpoint);
        }
        let shared = loader.load().await;
        let s3_config = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(config.force_path_style)
            .build();
        Ok(Self {
            client: Client::from_conf(s3_config),
            bucket: config.bucket,
            part_size: config.part_size,
            max_parts_in_flight: config.max_parts_in_flight,
            part_budget: config.part_budget,
            part_budget_wait: config.part_budget_wait,
            // The endpoint the SDK resolved: `endpoint_url` here, or `AWS_ENDPOINT_URL(_S3)`
            // or a profile's `endpoint_url`, which it also reads.
            sign_payload: config.payload_signing.signs(shared.endpoint_url()),
        })
    }

    /// Whether uploads sent from memory carry a payload signature ([`PayloadSigning`]).
    pub fn signs_payload(&self) -> bool {
        self.sign_payload
    }

    /// The budget part buffers take from, if any (see [`S3Config::part_budget`]).
    pub fn part_budget(&self) -> Option<&MemoryBudget> {
        self.part_budget.as_ref()
    }

    /// The SDK client, for what the trait does not cover.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The bucket.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Creates the bucket unless it exists (and is ours). For tests and the operator's setup.
    pub async fn ensure_bucket(&self) -> Result<()> {
        match self.client.head_bucket().bucket(&self.bucket).send().await {
            Ok(_) => return Ok(()),
            Err(error) => match map_error(error, &self.bucket) {
                StoreError::NotFound { .. } => {}
                other => return Err(other),
            },
        }
        let mut create = self.client.create_bucket().bucket(&self.bucket);
        let region = self
            .client
            .config()
            .region()
            .map(|r| r.as_ref().to_owned())
            .unwrap_or_default();
        // us-east-1 is the one region that refuses an explicit location constraint.
        if !region.is_empty() && region != "us-east-1" {
            let location = aws_sdk_s3::types::CreateBucketConfiguration::builder()
                .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::from(
                    region.as_str(),
                ))
                .build();
            create = create.create_bucket_configuration(location);
        }
        match create.send().await {
            Ok(_) => Ok(()),
            Err(error) if matches!(error.code(), Some("BucketAlreadyOwnedByYou")) => Ok(()),
            Err(error) => Err(map_error(error, &self.bucket)),
        }
    }

    /// Unfinished multipart uploads under `prefix` (what an aborted put must not leave). Not
    /// every S3-compatible server implements this (s3s-fs does not).
    pub async fn list_multipart_uploads(&self, prefix: &str) -> Result<Vec<PendingUpload>> {
        self.try_list_multipart_uploads(prefix)
            .await?
            .ok_or_else(|| {
                StoreError::other(
                    "cannot list unfinished multipart uploads",
                    "the server does not implement ListMultipartUploads",
                )
            })
    }

    /// [`S3Store::list_multipart_uploads`], or `None` when the server does not implement the
    /// call (it answers `NotImplemented` or 501).
    async fn try_list_multipart_uploads(&self, prefix: &str) -> Result<Option<Vec<PendingUpload>>> {
        let mut uploads = Vec::new();
        let (mut key_marker, mut upload_marker) = (None::<String>, None::<String>);
        loop {
            let result = self
                .client
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_key_marker(key_marker.take())
                .set_upload_id_marker(upload_marker.take())
                .send()
                .await;
            let page = match result {
                Ok(page) => page,
                Err(error) if is_not_implemented(&error) => return Ok(None),
                Err(error) => return Err(map_error(error, prefix)),
            };
            uploads.extend(page.uploads().iter().map(|upload| PendingUpload {
                key: upload.key().unwrap_or_default().to_owned(),
                upload_id: upload.upload_id().unwrap_or_default().to_owned(),
                initiated: upload.initiated().and_then(to_chrono),
            }));
            if page.is_truncated() != Some(true) {
                return Ok(Some(uploads));
            }
            key_marker = page.next_key_marker().map(str::to_owned);
            upload_marker = page.next_upload_id_marker().map(str::to_owned);
            if key_marker.is_none() && upload_marker.is_none() {
                return Ok(Some(uploads));
            }
        }
    }

    /// Aborts a pending multipart upload (what [`ObjectStore::sweep`] does to stale ones).
    pub async fn abort_multipart_upload(&self, upload: &PendingUpload) -> Result<()> {
        abort(&self.client, &self.bucket, &upload.key, &upload.upload_id).await
    }

    async fn put_single(
        &self,
        key: &ObjectKey,
        body: Bytes,
        options: &PutOptions,
    ) -> Result<PutResult> {
        let size = body.len() as u64;
        self.put_object(key, SdkByteStream::from(body), size, options)
            .await
    }

    /// A body whose length the caller declared: one PutObject streaming it through, so the
    /// bytes are neither buffered in parts nor written twice by the store as a multipart
    /// completion does. Such a body cannot be replayed, so the SDK does not retry it.
    async fn put_streamed(
        &self,
        key: &ObjectKey,
        body: ByteStream,
        size: u64,
        options: &PutOptions,
    ) -> Result<PutResult> {
        let (checked, failure) = CheckedBody::sdk_body(key, body, size, options);
        let result = self.put_object(key, checked, size, options).await;
        // The caller's stream or the size check failed: that error, not the SDK's report of
        // an aborted request, is what the caller must see.
        if let Some(error) = failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            return Err(error);
        }
        result
    }

    async fn put_object(
        &self,
        key: &ObjectKey,
        body: SdkByteStream,
        size: u64,
        options: &PutOptions,
    ) -> Result<PutResult> {
        let mut request = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .content_length(size as i64)
            .body(body)
            .set_content_type(options.content_type.clone())
            .set_metadata(metadata_map(options))
            .set_tagging(tagging(options));
        request = apply_sse!(request, &options.encryption);
        if let Some(sha256) = options.sha256 {
            // The server checks the bytes it received against this, end to end.
            request =
                request.checksum_sha256(base64::engine::general_purpose::STANDARD.encode(sha256));
        }
        if options.create_only {
            request = request.if_none_match("*");
        }
        let mut request = request.customize();
        if !self.sign_payload {
            request = request.disable_payload_signing();
        }
        let output = request
            .send()
            .await
            .map_err(|error| map_error(error, key.as_str()))?;
        Ok(PutResult {
            size,
            etag: quoted(output.e_tag().unwrap_or_default()),
        })
    }

    async fn put_multipart(
        &self,
        key: &ObjectKey,
        mut parts: PartReader,
        first: Part,
        options: &PutOptions,
    ) -> Result<PutResult> {
        if options.create_only && self.head(key).await.is_ok() {
            // Fail before sending gigabytes; the conditional complete below still settles races.
            return Err(StoreError::PreconditionFailed {
                key: key.to_string(),
            });
        }
        let upload_id = self.start_multipart(key, options).await?;
        let mut guard = AbortGuard {
            client: self.client.clone(),
            bucket: self.bucket.clone(),
            key: key.to_string(),
            upload_id: upload_id.clone(),
            armed: true,
        };
        let outcome = self
            .send_parts(key, &upload_id, &mut parts, first, options)
            .await;
        // Abort here, awaited, on any failure; the guard only covers a dropped future.
        guard.armed = false;
        match outcome {
            Ok(result) => Ok(result),
            Err(error) => {
                if let Err(abort_error) =
                    abort(&self.client, &self.bucket, key.as_str(), &upload_id).await
                {
                    tracing::warn!(%key, %upload_id, error = %abort_error, "cannot abort multipart upload; gc will");
                }
                Err(error)
            }
        }
    }

    /// `CreateMultipartUpload` with the options' content type, metadata, tags and encryption.
    async fn start_multipart(&self, key: &ObjectKey, options: &PutOptions) -> Result<String> {
        let mut create = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key.as_str())
            .set_content_type(options.content_type.clone())
            .set_metadata(metadata_map(options))
            .set_tagging(tagging(options));
        create = apply_sse!(create, &options.encryption);
        let created = create
            .send()
            .await
            .map_err(|error| map_error(error, key.as_str()))?;
        Ok(created
            .upload_id()
            .ok_or_else(|| {
                StoreError::other(
                    "CreateMultipartUpload answered no upload id",
                    key.to_string(),
                )
            })?
            .to_owned())
    }

    /// Every part of an upload as `ListParts` reports it, following pages.
    async fn s3_parts(
        &self,
        key: &ObjectKey,
        upload_id: &str,
    ) -> Result<Vec<aws_sdk_s3::types::Part>> {
        let mut parts = Vec::new();
        let mut marker = None::<String>;
        loop {
            let page = self
                .client
                .list_parts()
                .bucket(&self.bucket)
                .key(key.as_str())
                .upload_id(upload_id)
                .set_part_number_marker(marker.take())
                .send()
                .await
                .map_err(|error| map_error(error, key.as_str()))?;
            parts.extend(page.parts().iter().cloned());
            match page.next_part_number_marker() {
                Some(next) if page.is_truncated() == Some(true) => marker = Some(next.to_owned()),
                _ => return Ok(parts),
            }
        }
    }

    /// A copy above 5 GiB: a multipart upload of `UploadPartCopy` parts, aborted on failure.
    async fn copy_in_parts(
        &self,
        from: &ObjectKey,
        to: &ObjectKey,
        size: u64,
        options: &PutOptions,
    ) -> Result<PutResult> {
        let upload_id = self.start_multipart(to, options).await?;
        let mut guard = AbortGuard {
            client: self.client.clone(),
            bucket: self.bucket.clone(),
            key: to.to_string(),
            upload_id: upload_id.clone(),
            armed: true,
        };
        let source = format!("{}/{}", self.bucket, encode_key(from.as_str()));
        let outcome = async {
            let mut parts = Vec::new();
            let mut start = 0;
            let mut number = 1;
            while start < size {
                let end = (start + COPY_PART_SIZE).min(size);
                let output = self
                    .client
                    .upload_part_copy()
                    .bucket(&self.bucket)
                    .key(to.as_str())
                    .upload_id(&upload_id)
                    .part_number(number)
                    .copy_source(&source)
                    .copy_source_range(format!("bytes={start}-{}", end - 1))
                    .send()
                    .await
                    .map_err(|error| map_error(error, from.as_str()))?;
                let etag = output
                    .copy_part_result()
                    .and_then(|result| result.e_tag())
                    .unwrap_or_default();
                parts.push(CompletedPart::new(number as u32, etag));
                start = end;
                number += 1;
            }
            self.complete_multipart(to, &upload_id, &parts).await
        }
        .await;
        guard.armed = false;
        if outcome.is_err()
            && let Err(error) = abort(&self.client, &self.bucket, to.as_str(), &upload_id).await
        {
            tracing::warn!(key = %to, %upload_id, %error, "cannot abort a failed copy; gc will");
        }
        outcome
    }

    async fn send_parts(
        &self,
        key: &ObjectKey,
        upload_id: &str,
        parts: &mut PartReader,
        first: Part,
        options: &PutOptions,
    ) -> Result<PutResult> {
        let mut in_flight = FuturesUnordered::new();
        let mut completed = Vec::new();
        in_flight.push(self.upload_part(key, upload_id, 1, first));
        let mut next_number = 2;
        let mut body_done = false;
        // The next part needs a share the budget has not free: wait for a part in flight,
        // whose share it then takes, rather than for the budget.
        let mut blocked = false;
        loop {
            if !body_done && !blocked && in_flight.len() < self.max_parts_in_flight {
                // With nothing in flight this upload holds no share but its spare, if any: the
                // one moment it may wait for budget.
                let may_wait = in_flight.is_empty();
                tokio::select! {
                    next = parts.next_part(may_wait) => match next? {
                        Next::Part(part) => {
                            if next_number > MAX_PARTS {
                                return Err(StoreError::other(
                                    "object larger than 10000 parts; raise part_size",
                                    key.to_string(),
                                ));
                            }
                            in_flight.push(self.upload_part(key, upload_id, next_number, part));
                            next_number += 1;
                        }
                        Next::End => body_done = true,
                        Next::NoBudget => blocked = true,
                    },
                    Some(done) = in_flight.next(), if !in_flight.is_empty() => {
                        let (part, share) = done?;
                        completed.push(part);
                        parts.give_back(share);
                        blocked = false;
                    }
                }
            } else {
                match in_flight.next().await {
                    Some(done) => {
                        let (part, share) = done?;
                        completed.push(part);
                        parts.give_back(share);
                        blocked = false;
                    }
                    None if body_done => break,
                    None => blocked = false,
                }
            }
        }
        let size = parts.finish()?;
        completed.sort_by_key(|part: &S3CompletedPart| part.part_number());
        let mut complete = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key.as_str())
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(completed))
                    .build(),
            );
        if options.create_only {
            complete = complete.if_none_match("*");
        }
        let output = complete
            .send()
            .await
            .map_err(|error| map_error(error, key.as_str()))?;
        Ok(PutResult {
            size,
            etag: quoted(output.e_tag().unwrap_or_default()),
        })
    }

    fn upload_part(
        &self,
        key: &ObjectKey,
        upload_id: &str,
        number: i32,
        part: Part,
    ) -> impl Future<Output = Result<(S3CompletedPart, Option<Reservation>)>> + Send + 'static {
        let Part { bytes, share } = part;
        let request = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(key.as_str())
            .upload_id(upload_id)
            .part_number(number)
            .content_length(bytes.len() as i64)
            .body(SdkByteStream::from(bytes))
            .customize();
        let request = if self.sign_payload {
            request
        } else {
            request.disable_payload_signing()
        };
        let key = key.to_string();
        async move {
            let output = request
                .send()
                .await
                .map_err(|error| map_error(error, &key))?;
            // The buffer's share is held until the part is sent, then handed back to the upload.
            let completed = S3CompletedPart::builder()
                .part_number(number)
                .set_e_tag(output.e_tag().map(str::to_owned))
                .set_checksum_crc32(output.checksum_crc32().map(str::to_owned))
                .set_checksum_crc32_c(output.checksum_crc32_c().map(str::to_owned))
                .set_checksum_crc64_nvme(output.checksum_crc64_nvme().map(str::to_owned))
                .set_checksum_sha1(output.checksum_sha1().map(str::to_owned))
                .set_checksum_sha256(output.checksum_sha256().map(str::to_owned))
                .build();
            Ok((completed, share))
        }
    }
}

/// Sets the encryption headers on any request builder that has them.
macro_rules! apply_sse {
    ($request:expr, $encryption:expr) => {{
        let request = $request;
        match $encryption {
            ServerSideEncryption::Aes256 => {
                request.server_side_encryption(aws_sdk_s3::types::ServerSideEncryption::Aes256)
            }
            ServerSideEncryption::Kms { key_id } => request
                .server_side_encryption(aws_sdk_s3::types::ServerSideEncryption::AwsKms)
                .set_ssekms_key_id(key_id.clone()),
            _ => request,
        }
    }};
}
use apply_sse;

fn metadata_map(options: &PutOptions) -> Option<std::collections::HashMap<String, String>> {
    (!options.metadata.is_empty()).then(|| {
        options
            .metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    })
}

/// The `x-amz-tagging` value: `key=value` pairs joined by `&`, each part URL-encoded.
fn tagging(options: &PutOptions) -> Option<String> {
    (!options.tags.is_empty()).then(|| {
        options
            .tags
            .iter()
            .map(|(key, value)| {
                format!(
                    "{}={}",
                    percent_encoding::utf8_percent_encode(key, TAG_ENCODE),
                    percent_encoding::utf8_percent_encode(value, TAG_ENCODE)
                )
            })
            .collect::<Vec<_>>()
            .join("&")
    })
}

/// Everything but the unreserved characters of RFC 3986, as a query string's values need.
const TAG_ENCODE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn quoted(etag: &str) -> String {
    if etag.starts_with('"') || etag.starts_with("W/") {
        etag.to_owned()
    } else {
        format!("\"{etag}\"")
    }
}

/// Whether the server answered that it does not implement the call at all.
fn is_not_implemented<E: ProvideErrorMetadata>(
    error: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> bool {
    let status = error
        .raw_response()
        .map(|response| response.status().as_u16());
    error.code() == Some("NotImplemented") || status == Some(501)
}

fn to_chrono(time: &aws_sdk_s3::primitives::DateTime) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(time.secs(), time.subsec_nanos())
}

async fn abort(client: &Client, bucket: &str, key: &str, upload_id: &str) -> Result<()> {
    match client
        .abort_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(upload_id)
        .send()
        .await
    {
        Ok(_) => Ok(()),
        // Already gone: what we wanted.
        Err(error) if matches!(error.code(), Some("NoSuchUpload")) => Ok(()),
        Err(error) => Err(map_error(error, key)),
    }
}

/// Aborts the multipart upload if the put future is dropped before it finished or aborted.
struct AbortGuard {
    client: Client,
    bucket: String,
    key: String,
    upload_id: String,
    armed: bool,
}

impl Drop for AbortGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        // Drop cannot await: hand the abort to the runtime. If the process dies first, `gc`
        // finds the upload with list_multipart_uploads.
        let (client, bucket, key, upload_id) = (
            self.client.clone(),
            self.bucket.clone(),
            self.key.clone(),
            self.upload_id.clone(),
        );
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    if let Err(error) = abort(&client, &bucket, &key, &upload_id).await {
                        tracing::warn!(%key, %upload_id, %error, "cannot abort a dropped multipart upload");
                    }
                });
            }
            Err(_) => {
                tracing::warn!(key = %self.key, upload_id = %self.upload_id, "multipart upload left pending")
            }
        }
    }
}

/// A caller's stream as an HTTP body for one PutObject, checked as it passes (size, SHA-256).
/// A failure is kept in `failure` for `put_streamed` to return; the SDK only sees that the
/// body broke, and the store, short of the declared length, keeps nothing.
///
/// The chunk that completes the declared length is held back until the caller's stream has
/// ended: an HTTP client that knows the length (hyper, when the SDK adds no checksum trailer)
/// stops polling after the last byte, and then neither would a longer body be caught nor would
/// the caller's stream see its own end, which callers such as the media service wait for.
struct CheckedBody {
    // Behind a mutex only to be `Sync`, as the SDK's body must be; `poll_frame` has `&mut self`
    // and never waits on it.
    stream: Mutex<ByteStream>,
    check: Option<BodyCheck>,
    size: u64,
    /// Bytes received from the caller's stream so far.
    received: u64,
    /// The chunk that reached `size`, sent once the stream has ended.
    last: Option<Bytes>,
    /// The stream ended or failed: nothing more is polled from it.
    done: bool,
    failure: Arc<Mutex<Option<StoreError>>>,
}

/// What the SDK is told when a [`CheckedBody`] fails; the real error is in its `failure`.
#[derive(Debug, thiserror::Error)]
#[error("the upload body failed")]
struct BodyFailed;

impl CheckedBody {
    /// `body`, checked against `size` and the options' SHA-256, as an SDK body; the failure
    /// slot holds the real error when the request fails because of the body.
    fn sdk_body(
        key: &ObjectKey,
        body: ByteStream,
        size: u64,
        options: &PutOptions,
    ) -> (SdkByteStream, Arc<Mutex<Option<StoreError>>>) {
        let failure = Arc::new(Mutex::new(None));
        let checked = Self {
            stream: Mutex::new(body),
            check: Some(BodyCheck::new(key, options, false)),
            size,
            received: 0,
            last: None,
            done: false,
            failure: Arc::clone(&failure),
        };
        (SdkByteStream::from_body_1_x(checked), failure)
    }

    fn fail(
        &mut self,
        error: StoreError,
    ) -> Poll<Option<std::result::Result<Frame<Bytes>, BodyFailed>>> {
        self.check = None;
        self.done = true;
        *self.failure.lock().unwrap_or_else(PoisonError::into_inner) = Some(error);
        Poll::Ready(Some(Err(BodyFailed)))
    }
}

impl http_body::Body for CheckedBody {
    type Data = Bytes;
    type Error = BodyFailed;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<Frame<Bytes>, BodyFailed>>> {
        let this = self.get_mut();
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            let stream = this
                .stream
                .get_mut()
                .unwrap_or_else(PoisonError::into_inner);
            match std::task::ready!(stream.poll_next_unpin(cx)) {
                Some(Ok(chunk)) => {
                    if let Some(Err(error)) = this.check.as_mut().map(|check| check.update(&chunk))
                    {
                        return this.fail(error);
                    }
                    this.received += chunk.len() as u64;
                    if this.received < this.size {
                        return Poll::Ready(Some(Ok(Frame::data(chunk))));
                    }
                    // All declared bytes are here: keep the last chunk until the stream ends
                    // (an empty chunk changes nothing; a non-empty one failed the check above).
                    if !chunk.is_empty() {
                        this.last = Some(chunk);
                    }
                }
                Some(Err(error)) => return this.fail(error),
                None => {
                    this.done = true;
                    if let Some(Err(error)) = this.check.take().map(BodyCheck::finish) {
                        return this.fail(error);
                    }
                    return Poll::Ready(this.last.take().map(|chunk| Ok(Frame::data(chunk))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.last.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.size)
    }
}

/// A part's bytes and the share of the part budget its buffer holds (none without a budget, or
/// for a part of at most [`UNBUDGETED_PART_BYTES`]).
struct Part {
    bytes: Bytes,
    share: Option<Reservation>,
}

/// What [`PartReader::next_part`] found.
enum Next {
    /// A full part, or the last short one.
    Part(Part),
    /// The body ended; every part has been returned.
    End,
    /// The part being filled needs a share of the budget, none is free at once, and the caller
    /// may not wait for one: call again once a part in flight has given its share back.
    NoBudget,
}

/// Cuts a body stream into parts of `part_size` bytes, copying each part's bytes once at most,
/// each part's buffer holding a share of the part budget if there is one (see
/// [`S3Config::part_budget`]).
///
/// Cancel-safe: its only awaits are the stream's `next`, after which the chunk is moved into
/// `self` at once, and the wait for budget, which runs with the chunk already kept; so a
/// `select!` dropping `next_part` loses nothing.
struct PartReader {
    body: ByteStream,
    check: BodyCheck,
    part_size: usize,
    /// A part's first chunks, kept as they came while they hold at most
    /// [`UNBUDGETED_PART_BYTES`] (a small body is sent from them without a part buffer).
    chunks: Vec<Bytes>,
    /// The part buffer, once the part holds more: every chunk is copied in as it comes, so the
    /// chunks (and the larger buffers of the connection they may be slices of) are freed at
    /// once, and the part is sent from it without another copy.
    buf: Option<BytesMut>,
    len: usize,
    /// Bytes read and not yet in a part: the rest of a chunk that crossed a part's end, or a
    /// chunk waiting for the part's share.
    leftover: Option<Bytes>,
    ended: bool,
    budget: Option<MemoryBudget>,
    budget_wait: Duration,
    /// The share of the part being filled.
    share: Option<Reservation>,
    /// A share given back by a part sent, kept for the next part: the upload's own.
    spare: Option<Reservation>,
}

impl PartReader {
    fn new(body: ByteStream, check: BodyCheck, part_size: usize) -> Self {
        Self {
            body,
            check,
            part_size,
            chunks: Vec::new(),
            buf: None,
            len: 0,
            leftover: None,
            ended: false,
            budget: None,
            budget_wait: DEFAULT_PART_BUDGET_WAIT,
            share: None,
            spare: None,
        }
    }

    /// The same, with part buffers taken from `budget`, waiting at most `wait` in line.
    fn with_budget(mut self, budget: Option<MemoryBudget>, wait: Duration) -> Self {
        self.budget = budget;
        self.budget_wait = wait;
        self
    }

    fn take(&mut self, chunk: Bytes) {
        let room = self.part_size - self.len;
        let chunk = if chunk.len() > room {
            self.leftover = Some(chunk.slice(room..));
            chunk.slice(..room)
        } else {
            chunk
        };
        self.len += chunk.len();
        if self.buf.is_none() && self.len > UNBUDGETED_PART_BYTES {
            let mut buf = BytesMut::with_capacity(self.part_size);
            for kept in self.chunks.drain(..) {
                buf.extend_from_slice(&kept);
            }
            self.buf = Some(buf);
        }
        match &mut self.buf {
            Some(buf) => buf.extend_from_slice(&chunk),
            None => self.chunks.push(chunk),
        }
    }

    /// Whether taking `more` bytes into the part being filled needs a share it does not hold.
    fn needs_share(&self, more: usize) -> bool {
        self.budget.is_some() && self.share.is_none() && self.len + more > UNBUDGETED_PART_BYTES
    }

    /// Takes a part's share for the part being filled: the spare, or one free at once, or, if
    /// `may_wait` (the caller holds no share in flight), one waited for. False when none is
    /// free and the caller may not wait.
    async fn take_share(&mut self, may_wait: bool) -> bool {
        let Some(budget) = &self.budget else {
            return true;
        };
        let wanted = self.part_size as u64;
        let share = match self.spare.take() {
            Some(spare) => spare,
            None => match budget.try_reserve(wanted) {
                Some(share) => share,
                None if may_wait => budget.reserve_within(wanted, self.budget_wait).await,
                None => return false,
            },
        };
        if share.is_overdraft() {
            tracing::debug!(
                bytes = wanted,
                "no part budget free in time: this upload's part buffer is beyond the budget"
            );
        }
        self.share = Some(share);
        true
    }

    /// Keeps a sent part's share for the next part if none is kept yet and nobody is waiting
    /// in line for budget; gives it back to the budget otherwise. Kept while others waited, the
    /// shares stayed with the uploads that held them first until they ended, the others
    /// waited past `budget_wait` and took theirs beyond the budget (16 uploads of 64 MiB at
    /// once held 16 part buffers under a budget of 8); given back, the uploads take turns.
    /// A share taken beyond the budget (an overdraft) is always kept: giving it back frees
    /// nothing anyone in line could take, and the upload would only wait and overdraw again.
    fn give_back(&mut self, share: Option<Reservation>) {
        if let Some(share) = share
            && self.spare.is_none()
            && self.share.is_none()
            && share.bytes() == self.part_size as u64
            && (share.is_overdraft()
                || !self.budget.as_ref().is_some_and(MemoryBudget::has_waiters))
        {
            self.spare = Some(share);
        }
    }

    /// The next full part, or the last short one, or the end. A part that needs a share of
    /// the budget waits for one only if `may_wait`.
    async fn next_part(&mut self, may_wait: bool) -> Result<Next> {
        loop {
            if self.len < self.part_size
                && let Some(leftover) = self.leftover.take()
            {
                let more = leftover.len().min(self.part_size - self.len);
                if self.needs_share(more) {
                    self.leftover = Some(leftover);
                    if !self.take_share(may_wait).await {
                        return Ok(Next::NoBudget);
                    }
                    continue;
                }
                self.take(leftover);
                continue;
            }
            if self.len == self.part_size || (self.ended && self.len > 0) {
                return Ok(Next::Part(self.emit()));
            }
            if self.ended {
                return Ok(Next::End);
            }
            match self.body.next().await {
                None => self.ended = true,
                Some(chunk) => {
                    let chunk = chunk?;
                    self.check.update(&chunk)?;
                    if !chunk.is_empty() {
                        self.leftover = Some(chunk);
                    }
                }
            }
        }
    }

    /// The first part, or an empty one for an empty body; waits for budget if it must.
    async fn first_part(&mut self) -> Result<Part> {
        match self.next_part(true).await? {
            Next::Part(part) => Ok(part),
            Next::End => Ok(Part {
                bytes: Bytes::new(),
                share: None,
            }),
            Next::NoBudget => Err(StoreError::other(
                "cannot read an upload's first part",
                "a part reader allowed to wait for budget answered that it has none",
            )),
        }
    }

    fn emit(&mut self) -> Part {
        let chunks = std::mem::take(&mut self.chunks);
        let len = std::mem::take(&mut self.len);
        let mut share = self.share.take();
        if let Some(share) = &mut share {
            // The last part may be shorter: what it does not use goes back now.
            share.release(share.bytes().saturating_sub(len as u64));
        }
        let bytes = if let Some(buf) = self.buf.take() {
            buf.freeze()
        } else if chunks.len() == 1 {
            chunks.into_iter().next().unwrap_or_default()
        } else {
            let mut part = BytesMut::with_capacity(len);
            for chunk in chunks {
                part.extend_from_slice(&chunk);
            }
            part.freeze()
        };
        Part { bytes, share }
    }

    /// Whether the body ended within the part returned last (nothing buffered, nothing left).
    fn is_exhausted(&self) -> bool {
        self.ended && self.len == 0 && self.leftover.is_none()
    }

    fn finish(&mut self) -> Result<u64> {
        let check = std::mem::replace(&mut self.check, BodyCheck::empty());
        check.finish().map(|(size, _)| size)
    }
}

/// Maps an SDK error to the cases callers branch on.
fn map_error<E>(error: SdkError<E, aws_sdk_s3::config::http::HttpResponse>, key: &str) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let key = key.to_owned();
    let status = error
        .raw_response()
        .map(|response| response.status().as_u16());
    let code = error.code().map(str::to_owned);
    match &error {
        SdkError::TimeoutError(_) => {
            return StoreError::Timeout {
                source: error.into(),
            };
        }
        SdkError::DispatchFailure(failure) if failure.is_timeout() => {
            return StoreError::Timeout {
                source: error.into(),
            };
        }
        SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            return StoreError::Unavailable {
                source: error.into(),
            };
        }
        _ => {}
    }
    match (status, code.as_deref()) {
        (_, Some("NoSuchKey" | "NotFound" | "NoSuchBucket" | "NoSuchUpload")) | (Some(404), _) => {
            StoreError::NotFound { key }
        }
        (Some(304), _) => StoreError::NotModified { key },
        (_, Some("PreconditionFailed" | "ConditionalRequestConflict")) | (Some(412 | 409), _) => {
            StoreError::PreconditionFailed { key }
        }
        (_, Some("InvalidRange")) | (Some(416), _) => {
            StoreError::RangeNotSatisfiable { key, size: 0 }
        }
        (
            _,
            Some(
                "InvalidAccessKeyId"
                | "SignatureDoesNotMatch"
                | "ExpiredToken"
                | "InvalidToken"
                | "TokenRefreshRequired",
            ),
        ) => StoreError::InvalidCredentials {
            source: error.into(),
        },
        // GetObject of an object in GLACIER or DEEP_ARCHIVE that has not been restored (403).
        (_, Some("InvalidObjectState")) => StoreError::Archived { key },
        (_, Some("AccessDenied")) | (Some(403), _) => StoreError::AccessDenied {
            key,
            source: error.into(),
        },
        (
            _,
            Some(
                "BadDigest"
                | "XAmzContentChecksumMismatch"
                | "XAmzContentSHA256Mismatch"
                | "InvalidDigest",
            ),
        ) => StoreError::ChecksumMismatch { key },
        (_, Some(code @ ("InvalidPart" | "InvalidPartOrder" | "EntityTooSmall"))) => {
            StoreError::InvalidPart {
                key,
                reason: format!("the server answered {code}"),
            }
        }
        (_, Some("SlowDown" | "ServiceUnavailable" | "InternalError" | "RequestTimeout"))
        | (Some(500..=599), _) => StoreError::Unavailable {
            source: error.into(),
        },
        _ => StoreError::Other {
            message: format!("S3 call on {key} failed (status {status:?}, code {code:?})"),
            source: error.into(),
        },
    }
}

/// A presigned request as the trait answers it: the URL and the headers it signed.
fn presigned_url(
    request: &aws_sdk_s3::presigning::PresignedRequest,
    expires_at: DateTime<Utc>,
) -> PresignedUrl {
    PresignedUrl {
        url: request.uri().to_owned(),
        expires_at,
        headers: request
            .headers()
            .map(|(name, value)| (name.to_ascii_lowercase(), value.to_owned()))
            .collect(),
    }
}

/// `bytes=start-end` (inclusive) for an HTTP `Range` header, or `None` when the range is empty.
fn range_header(range: ByteRange) -> Option<String> {
    match range {
        ByteRange::Bounded { start, end } if end > start => {
            Some(format!("bytes={start}-{}", end - 1))
        }
        ByteRange::From { start } => Some(format!("bytes={start}-")),
        ByteRange::Suffix { len } if len > 0 => Some(format!("bytes=-{len}")),
        _ => None,
    }
}

/// `bytes 10-19/1000` → (10..20, 1000).
fn parse_content_range(header: &str) -> Option<(std::ops::Range<u64>, u64)> {
    let rest = header.trim().strip_prefix("bytes ")?;
    let (span, total) = rest.split_once('/')?;
    let (start, end) = span.split_once('-')?;
    let (start, end, total): (u64, u64, u64) =
        (start.parse().ok()?, end.parse().ok()?, total.parse().ok()?);
    Some((start..end + 1, total))
}

fn sdk_body_stream(body: SdkByteStream, key: String) -> ByteStream {
    futures::stream::try_unfold((body, key), |(mut body, key)| async move {
        match body.try_next().await {
            Ok(Some(chunk)) => Ok(Some((chunk, (body, key)))),
            Ok(None) => Ok(None),
            Err(error) => Err(StoreError::Unavailable {
                source: format!("reading {key} from S3 failed: {error}").into(),
            }),
        }
    })
    .boxed()
}

impl BodyCheck {
    /// A placeholder for `mem::replace`.
    fn empty() -> Self {
        Self::new(
            &ObjectKey::parse("_").unwrap_or_else(|_| unreachable!()),
            &PutOptions::default(),
            false,
        )
    }
}

#[async_trait]
impl ObjectStore for S3Store {
    async fn put(
        &self,
        key: &ObjectKey,
        body: ByteStream,
        options: PutOptions,
    ) -> Result<PutResult> {
        if let Some(size) = options.size
            && size > self.part_size as u64
            && size <= MAX_SINGLE_PUT
        {
            return self.put_streamed(key, body, size, &options).await;
        }
        let check = BodyCheck::new(key, &options, false);
        let mut parts = PartReader::new(body, check, self.part_size)
            .with_budget(self.part_budget.clone(), self.part_budget_wait);
        let first = parts.first_part().await?;
        if parts.is_exhausted() {
            parts.finish()?;
            // The buffer's share is held until it has been sent.
            let Part { bytes, share } = first;
            let result = self.put_single(key, bytes, &options).await;
            drop(share);
            return result;
        }
        // A full first part and more may follow: go multipart now rather than read a second
        // part ahead to find out, which would hold two parts before the first byte is sent. A
        // body of exactly one part then becomes a one-part multipart upload, which S3 accepts.
        self.put_multipart(key, parts, first, &options).await
    }

    async fn get(&self, key: &ObjectKey, options: GetOptions) -> Result<GetResult> {
        let mut request = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key.as_str());
        if let Some(range) = options.range {
            match range_header(range) {
                Some(header) => request = request.range(header),
                None => {
                    let size = self.head(key).await?.size;
                    return Err(StoreError::RangeNotSatisfiable {
                        key: key.to_string(),
                        size,
                    });
                }
            }
        }
        if let Some(tag) = &options.if_none_match {
            request = request.if_none_match(tag);
        }
        let output = match request.send().await {
            Ok(output) => output,
            Err(error) => {
                return Err(match map_error(error, key.as_str()) {
                    StoreError::RangeNotSatisfiable { key: error_key, .. } => {
                        let size = self.head(key).await?.size;
                        StoreError::RangeNotSatisfiable {
                            key: error_key,
                            size,
                        }
                    }
                    other => other,
                });
            }
        };
        let etag = quoted(output.e_tag().unwrap_or_default());
        // Some servers (s3s-fs) ignore If-None-Match and answer 200: apply it here.
        if let Some(tag) = &options.if_none_match
            && etag_matches(tag, &etag)
        {
            return Err(StoreError::NotModified {
                key: key.to_string(),
            });
        }
        let length = output.content_length().unwrap_or(0).max(0) as u64;
        let (range, size) = match output.content_range().and_then(parse_content_range) {
            Some((range, total)) => (range, total),
            None => (0..length, length),
        };
        if let Some(asked) = options.range
            && asked.resolve(size).is_none()
        {
            // A server answering 200 to a range no byte of the object satisfies (an empty object).
            return Err(StoreError::RangeNotSatisfiable {
                key: key.to_string(),
                size,
            });
        }
        let meta = ObjectMeta {
            key: key.clone(),
            size,
            etag,
            last_modified: output
                .last_modified()
                .and_then(to_chrono)
                .unwrap_or_else(Utc::now),
            content_type: output.content_type().map(str::to_owned),
            metadata: output
                .metadata()
                .map(|m| m.clone().into_iter().collect())
                .unwrap_or_default(),
            sha256: None,
        };
        Ok(GetResult {
            meta,
            range,
            body: sdk_body_stream(output.body, key.to_string()),
        })
    }

    async fn head(&self, key: &ObjectKey) -> Result<ObjectMeta> {
        let output = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .checksum_mode(ChecksumMode::Enabled)
            .send()
            .await
            .map_err(|error| map_error(error, key.as_str()))?;
        Ok(ObjectMeta {
            key: key.clone(),
            size: output.content_length().unwrap_or(0).max(0) as u64,
            etag: quoted(output.e_tag().unwrap_or_default()),
            last_modified: output
                .last_modified()
                .and_then(to_chrono)
                .unwrap_or_else(Utc::now),
            content_type: output.content_type().map(str::to_owned),
            metadata: output
                .metadata()
                .map(|m| m.clone().into_iter().collect::<BTreeMap<_, _>>())
                .unwrap_or_default(),
            // A multipart object's checksum is one of its parts' (`...-N`): not the object's.
            sha256: output
                .checksum_sha256()
                .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
                .and_then(|bytes| bytes.try_into().ok()),
        })
    }

    async fn delete(&self, key: &ObjectKey) -> Result<()> {
        match self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(error) => match map_error(error, key.as_str()) {
                StoreError::NotFound { .. } => Ok(()),
                other => Err(other),
            },
        }
    }

    async fn copy(&self, from: &ObjectKey, to: &ObjectKey) -> Result<()> {
        // CopyObject encrypts with the bucket default unless told: keep the source's choice.
        let source = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(from.as_str())
            .send()
            .await
            .map_err(|error| map_error(error, from.as_str()))?;
        self.client
            .copy_object()
            .bucket(&self.bucket)
            .key(to.as_str())
            .copy_source(format!("{}/{}", self.bucket, encode_key(from.as_str())))
            .metadata_directive(MetadataDirective::Copy)
            .set_server_side_encryption(source.server_side_encryption().cloned())
            .set_ssekms_key_id(source.ssekms_key_id().map(str::to_owned))
            .send()
            .await
            .map_err(|error| match map_error(error, from.as_str()) {
                StoreError::NotFound { .. } => StoreError::NotFound {
                    key: from.to_string(),
                },
                other => other,
            })?;
        Ok(())
    }

    async fn list(&self, options: ListOptions) -> Result<ListPage> {
        let max_keys = options.max_keys.unwrap_or(1000).clamp(1, 1000);
        let output = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .set_prefix(options.prefix.clone())
            .set_continuation_token(options.page_token)
            .max_keys(max_keys as i32)
            .send()
            .await
            .map_err(|error| map_error(error, options.prefix.as_deref().unwrap_or("")))?;
        let objects = output
            .contents()
            .iter()
            .filter_map(|object| {
                let raw = object.key()?;
                let Ok(key) = ObjectKey::parse(raw) else {
                    tracing::warn!(key = raw, "skipping a key that is not a valid ObjectKey");
                    return None;
                };
                Some(ObjectMeta {
                    key,
                    size: object.size().unwrap_or(0).max(0) as u64,
                    etag: quoted(object.e_tag().unwrap_or_default()),
                    last_modified: object
                        .last_modified()
                        .and_then(to_chrono)
                        .unwrap_or_else(Utc::now),
                    content_type: None,
                    metadata: BTreeMap::new(),
                    sha256: None,
                })
            })
            .collect();
        let next_token = if output.is_truncated() == Some(true) {
            output.next_continuation_token().map(str::to_owned)
        } else {
            None
        };
        Ok(ListPage {
            objects,
            next_token,
        })
    }

    async fn presign(
        &self,
        method: PresignMethod,
        key: &ObjectKey,
        expires_in: Duration,
        options: &PresignOptions,
    ) -> Result<PresignedUrl> {
        let presigning = PresigningConfig::expires_in(expires_in)
            .map_err(|source| StoreError::other("invalid presigned URL lifetime", source))?;
        let expires_at = Utc::now()
            + chrono::Duration::from_std(expires_in)
                .map_err(|source| StoreError::other("presign expiry", source))?;
        let request = match method {
            PresignMethod::Get => {
                let request = self
                    .client
                    .get_object()
                    .bucket(&self.bucket)
                    .key(key.as_str())
                    .set_response_content_disposition(options.content_disposition.clone());
                request
                    .presigned(presigning)
                    .await
                    .map_err(|error| map_error(error, key.as_str()))?
            }
            PresignMethod::Put => {
                // Each of these becomes a signed header (aws-sigv4 excludes only authorization,
                // user-agent, x-amzn-trace-id and transfer-encoding): S3 refuses a request
                // whose values differ, and checks the body against the SHA-256.
                let request = self
                    .client
                    .put_object()
                    .bucket(&self.bucket)
                    .key(key.as_str())
                    .set_content_length(options.content_length.map(|l| l as i64))
                    .set_content_type(options.content_type.clone())
                    .set_checksum_sha256(
                        options
                            .sha256
                            .map(|sha| base64::engine::general_purpose::STANDARD.encode(sha)),
                    );
                request
                    .presigned(presigning)
                    .await
                    .map_err(|error| map_error(error, key.as_str()))?
            }
        };
        Ok(presigned_url(&request, expires_at))
    }

    async fn copy_with(
        &self,
        from: &ObjectKey,
        to: &ObjectKey,
        options: PutOptions,
    ) -> Result<PutResult> {
        let size = self.head(from).await?.size;
        if let Some(expected) = options.size
            && expected != size
        {
            return Err(StoreError::SizeMismatch {
                key: from.to_string(),
                expected,
                actual: size,
            });
        }
        if size > MAX_SINGLE_PUT {
            return self.copy_in_parts(from, to, size, &options).await;
        }
        let mut request = self
            .client
            .copy_object()
            .bucket(&self.bucket)
            .key(to.as_str())
            .copy_source(format!("{}/{}", self.bucket, encode_key(from.as_str())))
            .metadata_directive(MetadataDirective::Replace)
            .set_content_type(options.content_type.clone())
            .set_metadata(metadata_map(&options))
            // The copy's tags are the options', as its metadata is: staged bytes become an
            // original with the original's tag.
            .tagging_directive(TaggingDirective::Replace)
            .set_tagging(tagging(&options));
        request = apply_sse!(request, &options.encryption);
        let output = request
            .send()
            .await
            .map_err(|error| map_error(error, from.as_str()))?;
        let etag = output
            .copy_object_result()
            .and_then(|result| result.e_tag())
            .unwrap_or_default();
        Ok(PutResult {
            size,
            etag: quoted(etag),
        })
    }

    async fn create_multipart(&self, key: &ObjectKey, options: &PutOptions) -> Result<String> {
        self.start_multipart(key, options).await
    }

    /// One `UploadPart` streaming the body through (not buffered; not retried, as it cannot be
    /// replayed).
    async fn upload_part(
        &self,
        key: &ObjectKey,
        upload_id: &str,
        part_number: u32,
        body: ByteStream,
        size: u64,
    ) -> Result<PartInfo> {
        check_part_number(key, part_number)?;
        let options = PutOptions {
            size: Some(size),
            ..PutOptions::default()
        };
        let (checked, failure) = CheckedBody::sdk_body(key, body, size, &options);
        let result = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(key.as_str())
            .upload_id(upload_id)
            .part_number(part_number as i32)
            .content_length(size as i64)
            .body(checked)
            .send()
            .await;
        if let Some(error) = failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            return Err(error);
        }
        let output = result.map_err(|error| map_error(error, key.as_str()))?;
        Ok(PartInfo {
            part_number,
            etag: quoted(output.e_tag().unwrap_or_default()),
            size,
        })
    }

    async fn presign_part(
        &self,
        key: &ObjectKey,
        upload_id: &str,
        part_number: u32,
        size: u64,
        expires_in: Duration,
    ) -> Result<PresignedUrl> {
        check_part_number(key, part_number)?;
        let presigning = PresigningConfig::expires_in(expires_in)
            .map_err(|source| StoreError::other("invalid presigned URL lifetime", source))?;
        let expires_at = Utc::now()
            + chrono::Duration::from_std(expires_in)
                .map_err(|source| StoreError::other("presign expiry", source))?;
        let request = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(key.as_str())
            .upload_id(upload_id)
            .part_number(part_number as i32)
            .content_length(size as i64)
            .presigned(presigning)
            .await
            .map_err(|error| map_error(error, key.as_str()))?;
        Ok(presigned_url(&request, expires_at))
    }

    async fn list_parts(&self, key: &ObjectKey, upload_id: &str) -> Result<Vec<PartInfo>> {
        let mut parts: Vec<PartInfo> = self
            .s3_parts(key, upload_id)
            .await?
            .iter()
            .map(|part| PartInfo {
                part_number: part.part_number().unwrap_or(0).max(0) as u32,
                etag: quoted(part.e_tag().unwrap_or_default()),
                size: part.size().unwrap_or(0).max(0) as u64,
            })
            .collect();
        parts.sort_by_key(|part| part.part_number);
        Ok(parts)
    }

    /// Lists the parts first: the completion then carries each part's checksum, which S3
    /// requires when the SDK sent one with the part, and the answer its size.
    async fn complete_multipart(
        &self,
        key: &ObjectKey,
        upload_id: &str,
        parts: &[CompletedPart],
    ) -> Result<PutResult> {
        if parts.is_empty() {
            return Err(StoreError::InvalidPart {
                key: key.to_string(),
                reason: "a completion needs at least one part".to_owned(),
            });
        }
        // A server whose ListParts fails (moto 5 answers a document the SDK refuses) still
        // completes: without part checksums, and the size from a HEAD.
        let held = match self.s3_parts(key, upload_id).await {
            Ok(held) => held,
            Err(StoreError::NotFound { key }) => return Err(StoreError::NotFound { key }),
            Err(error) => {
                tracing::debug!(%key, %error, "cannot list the parts before completing");
                Vec::new()
            }
        };
        let mut size = 0;
        let mut all_sized = true;
        let mut completed = Vec::with_capacity(parts.len());
        for part in parts {
            check_part_number(key, part.part_number)?;
            let found = held.iter().find(|held| {
                held.part_number() == Some(part.part_number as i32)
                    && held.e_tag().map(|e| e.trim_matches('"'))
                        == Some(part.etag.trim_matches('"'))
            });
            let mut builder = S3CompletedPart::builder()
                .part_number(part.part_number as i32)
                .e_tag(quoted(&part.etag));
            all_sized &= found.and_then(|found| found.size()).is_some();
            if let Some(found) = found {
                size += found.size().unwrap_or(0).max(0) as u64;
                builder = builder
                    .set_checksum_crc32(found.checksum_crc32().map(str::to_owned))
                    .set_checksum_crc32_c(found.checksum_crc32_c().map(str::to_owned))
                    .set_checksum_crc64_nvme(found.checksum_crc64_nvme().map(str::to_owned))
                    .set_checksum_sha1(found.checksum_sha1().map(str::to_owned))
                    .set_checksum_sha256(found.checksum_sha256().map(str::to_owned));
            }
            completed.push(builder.build());
        }
        let output = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key.as_str())
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(completed))
                    .build(),
            )
            .send()
            .await
            .map_err(|error| map_error(error, key.as_str()))?;
        if !all_sized {
            size = self.head(key).await?.size;
        }
        Ok(PutResult {
            size,
            etag: quoted(output.e_tag().unwrap_or_default()),
        })
    }

    async fn abort_multipart(&self, key: &ObjectKey, upload_id: &str) -> Result<()> {
        match abort(&self.client, &self.bucket, key.as_str(), upload_id).await {
            // NoSuchUpload is already success; some servers answer a bare 404.
            Err(StoreError::NotFound { .. }) => Ok(()),
            other => other,
        }
    }

    /// Aborts every unfinished multipart upload in the bucket started before `older_than`
    /// (one whose start the server does not report is aborted only when `older_than` is not in
    /// the past). On a server without `ListMultipartUploads` it skips, and says so.
    async fn sweep(&self, older_than: DateTime<Utc>, dry_run: bool) -> Result<SweepReport> {
        let mut report = SweepReport::default();
        let Some(uploads) = self.try_list_multipart_uploads("").await? else {
            tracing::warn!(
                bucket = %self.bucket,
                "the S3 server cannot list unfinished multipart uploads; none aborted"
            );
            report.skipped = Some(
                "the S3 server does not implement ListMultipartUploads: unfinished multipart \
                 uploads not swept"
                    .to_owned(),
            );
            return Ok(report);
        };
        let now = Utc::now();
        for upload in uploads {
            // Staged uploads belong to their upload sessions, which abort them when the upload
            // is given up or expires; their initiation time says nothing of whether they are
            // still in use (a resumable upload may run for hours).
            if upload.key.starts_with(crate::STAGING_PREFIX) {
                continue;
            }
            let stale = match upload.initiated {
                Some(initiated) => initiated < older_than,
                None => older_than >= now,
            };
            if !stale {
                continue;
            }
            report.multipart_uploads.found += 1;
            if dry_run {
                continue;
            }
            match self.abort_multipart_upload(&upload).await {
                Ok(()) => {
                    tracing::info!(key = %upload.key, upload_id = %upload.upload_id, "aborted a stale multipart upload");
                    report.multipart_uploads.removed += 1;
                }
                Err(error) => {
                    tracing::warn!(key = %upload.key, upload_id = %upload.upload_id, %error, "cannot abort a stale multipart upload");
                    report.multipart_uploads.failed += 1;
                }
            }
        }
        Ok(report)
    }

    /// `HeadBucket`: one request whatever the bucket holds, and, unlike a HEAD of a missing
    /// key (a bare 404 either way), it tells a missing bucket from a missing object.
    async fn ping(&self) -> Result<()> {
        match self.client.head_bucket().bucket(&self.bucket).send().await {
            Ok(_) => Ok(()),
            Err(error) => Err(match map_error(error, &self.bucket) {
                StoreError::NotFound { key } => StoreError::Unavailable {
                    source: format!("bucket {key} does not exist").into(),
                },
                other => other,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_headers_and_content_ranges() {
        assert_eq!(
            range_header(ByteRange::Bounded { start: 10, end: 20 }).unwrap(),
            "bytes=10-19"
        );
        assert_eq!(
            range_header(ByteRange::From { start: 5 }).unwrap(),
            "bytes=5-"
        );
        assert_eq!(
            range_header(ByteRange::Suffix { len: 7 }).unwrap(),
            "bytes=-7"
        );
        assert_eq!(range_header(ByteRange::Bounded { start: 3, end: 3 }), None);
        assert_eq!(
            parse_content_range("bytes 10-19/1000"),
            Some((10..20, 1000))
        );
        assert_eq!(parse_content_range("bytes */1000"), None);
    }

    /// Polls a [`CheckedBody`] the way an HTTP client that trusts `Content-Length` does: until
    /// the declared bytes are out, then no more. Answers the bytes sent, whether the body
    /// failed, and whether the caller's stream was driven to its end.
    async fn send_like_a_length_trusting_client(
        chunks: &[&'static [u8]],
        size: u64,
    ) -> (u64, bool, bool) {
        use http_body::Body as _;
        let ended = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen_end = Arc::clone(&ended);
        let items: Vec<Result<Bytes>> = chunks.iter().map(|c| Ok(Bytes::from_static(c))).collect();
        let stream = futures::stream::iter(items)
            .chain(futures::stream::poll_fn(move |_| {
                seen_end.store(true, std::sync::atomic::Ordering::SeqCst);
                Poll::Ready(None)
            }))
            .boxed();
        let key = ObjectKey::parse("checked/body.bin").unwrap();
        let options = PutOptions {
            size: Some(size),
            ..PutOptions::default()
        };
        let failure = Arc::new(Mutex::new(None));
        let mut body = CheckedBody {
            stream: Mutex::new(stream),
            check: Some(BodyCheck::new(&key, &options, false)),
            size,
            received: 0,
            last: None,
            done: false,
            failure: Arc::clone(&failure),
        };
        let mut sent = 0;
        let mut failed = false;
        while sent < size {
            match std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
                Some(Ok(frame)) => sent += frame.into_data().map_or(0, |d| d.len() as u64),
                Some(Err(_)) => {
                    failed = true;
                    break;
                }
                None => break,
            }
        }
        assert_eq!(failed, failure.lock().unwrap().is_some());
        (
            sent,
            failed,
            ended.load(std::sync::atomic::Ordering::SeqCst),
        )
    }

    #[tokio::test]
    async fn a_declared_length_body_is_driven_to_its_end_before_its_last_byte_goes_out() {
        // Exactly the declared length: all sent, and the caller's stream saw its end.
        let (sent, failed, ended) = send_like_a_length_trusting_client(&[b"abc", b"def"], 6).await;
        assert_eq!((sent, failed, ended), (6, false, true));
        // Longer, with the extra bytes starting on a chunk boundary: refused, not cut short.
        let (sent, failed, _) =
            send_like_a_length_trusting_client(&[b"abc", b"def", b"g"], 6).await;
        assert!(failed && sent < 6, "sent {sent}");
        // Shorter: refused at the stream's end.
        let (_, failed, ended) = send_like_a_length_trusting_client(&[b"abc"], 6).await;
        assert!(failed && ended);
    }

    #[tokio::test]
    async fn part_reader_cuts_exact_parts_whatever_the_chunks() {
        let part = MIN_PART_SIZE;
        // One huge chunk, then small ones: parts must still be exactly part_size.
        let chunks = vec![
            Ok(Bytes::from(vec![1u8; part * 2 + 10])),
            Ok(Bytes::from(vec![2u8; 7])),
            Ok(Bytes::new()),
        ];
        let key = ObjectKey::parse("k").unwrap();
        let check = BodyCheck::new(&key, &PutOptions::default(), false);
        let mut reader = PartReader::new(futures::stream::iter(chunks).boxed(), check, part);
        let mut sizes = Vec::new();
        while let Next::Part(part) = reader.next_part(true).await.unwrap() {
            assert!(part.share.is_none(), "no budget, no share");
            sizes.push(part.bytes.len());
        }
        assert_eq!(sizes, vec![part, part, 17]);
        assert_eq!(reader.finish().unwrap(), (part * 2 + 17) as u64);
    }

    /// A reader of a body of `len` bytes in 64 KiB chunks, over `budget`.
    fn budgeted_reader(len: usize, budget: &MemoryBudget, wait: Duration) -> PartReader {
        let chunk = 64 * 1024;
        let chunks: Vec<Result<Bytes>> = (0..len)
            .step_by(chunk)
            .map(|start| Ok(Bytes::from(vec![7u8; chunk.min(len - start)])))
            .collect();
        let key = ObjectKey::parse("k").unwrap();
        let check = BodyCheck::new(&key, &PutOptions::default(), false);
        PartReader::new(futures::stream::iter(chunks).boxed(), check, MIN_PART_SIZE)
            .with_budget(Some(budget.clone()), wait)
    }

    #[tokio::test]
    async fn part_buffers_hold_a_share_and_only_the_first_may_wait_for_it() {
        let part = MIN_PART_SIZE as u64;
        let budget = MemoryBudget::new(2 * part);
        let tail = UNBUDGETED_PART_BYTES + 100;
        let mut reader =
            budgeted_reader(3 * MIN_PART_SIZE + tail, &budget, Duration::from_secs(60));
        let Next::Part(first) = reader.next_part(true).await.unwrap() else {
            panic!("a first part");
        };
        assert_eq!(first.share.as_ref().map(Reservation::bytes), Some(part));
        let Next::Part(second) = reader.next_part(false).await.unwrap() else {
            panic!("a second part: the budget has one more part free");
        };
        assert_eq!(budget.in_use(), 2 * part, "two parts, two shares");
        assert!(
            matches!(reader.next_part(false).await.unwrap(), Next::NoBudget),
            "a third part while two are held: no waiting for budget"
        );
        assert_eq!(budget.in_use(), 2 * part, "the refused part took nothing");
        // The first part is sent: its share becomes the upload's spare, and the third part
        // takes it without asking the budget.
        reader.give_back(first.share);
        let Next::Part(third) = reader.next_part(false).await.unwrap() else {
            panic!("a third part on the spare share");
        };
        assert_eq!(budget.in_use(), 2 * part);
        reader.give_back(second.share);
        reader.give_back(third.share);
        let Next::Part(last) = reader.next_part(false).await.unwrap() else {
            panic!("the short last part");
        };
        assert_eq!(last.bytes.len(), tail);
        assert_eq!(
            last.share.as_ref().map(Reservation::bytes),
            Some(tail as u64),
            "the last part took the spare share, shrunk to its bytes"
        );
        assert_eq!(
            budget.in_use(),
            tail as u64,
            "the third part's share went back"
        );
        assert!(matches!(reader.next_part(false).await.unwrap(), Next::End));
        drop((reader, last));
        assert_eq!(budget.in_use(), 0, "every share given back");
        assert_eq!(budget.peak(), 2 * part, "never beyond the budget");
    }

    #[tokio::test]
    async fn a_sent_parts_share_goes_to_an_upload_waiting_in_line_not_to_the_spare() {
        let part = MIN_PART_SIZE as u64;
        let budget = MemoryBudget::new(part);
        let len = 2 * MIN_PART_SIZE + UNBUDGETED_PART_BYTES + 100;
        let mut reader = budgeted_reader(len, &budget, Duration::from_secs(60));
        let Next::Part(first) = reader.next_part(true).await.unwrap() else {
            panic!("a first part");
        };
        // Another upload waits in line for the one part's worth the budget has.
        let other = budget.clone();
        let waiter = tokio::spawn(async move { other.reserve(part).await });
        while !budget.has_waiters() {
            tokio::task::yield_now().await;
        }
        reader.give_back(first.share);
        let share = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the share went back to the budget")
            .unwrap();
        assert_eq!(share.bytes(), part, "the upload in line got it");
        assert!(!budget.has_waiters());
        assert!(
            matches!(reader.next_part(false).await.unwrap(), Next::NoBudget),
            "this upload kept no spare: its next part takes its turn"
        );
        drop(share);
        // With nobody in line, a sent part's share is kept for the next part, as before.
        let Next::Part(second) = reader.next_part(true).await.unwrap() else {
            panic!("a second part");
        };
        reader.give_back(second.share);
        assert_eq!(budget.in_use(), part, "kept as the spare");
        let Next::Part(last) = reader.next_part(false).await.unwrap() else {
            panic!("the last part, on the spare");
        };
        assert_eq!(last.bytes.len(), UNBUDGETED_PART_BYTES + 100);
    }

    #[tokio::test]
    async fn a_part_taken_beyond_the_budget_stays_the_uploads_own() {
        let part = MIN_PART_SIZE as u64;
        let budget = MemoryBudget::new(part);
        // A stalled upload holds the whole budget.
        let stalled = budget.try_reserve(part).unwrap();
        let len = 2 * MIN_PART_SIZE + UNBUDGETED_PART_BYTES + 100;
        let mut reader = budgeted_reader(len, &budget, Duration::from_millis(50));
        let Next::Part(first) = reader.next_part(true).await.unwrap() else {
            panic!("a first part, beyond the budget after the wait");
        };
        assert!(first.share.as_ref().is_some_and(Reservation::is_overdraft));
        // Another upload waits in line; giving the overdraft back would free nothing for it.
        let other = budget.clone();
        let waiter = tokio::spawn(async move { other.reserve(part).await });
        while !budget.has_waiters() {
            tokio::task::yield_now().await;
        }
        reader.give_back(first.share);
        let Next::Part(second) = reader.next_part(false).await.unwrap() else {
            panic!("the second part, on the kept overdraft, without waiting again");
        };
        assert!(second.share.as_ref().is_some_and(Reservation::is_overdraft));
        assert!(
            budget.has_waiters(),
            "the one in line still waits for real budget"
        );
        drop(stalled);
        let share = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the stalled upload's share went to the one in line")
            .unwrap();
        assert!(!share.is_overdraft());
    }

    #[tokio::test]
    async fn an_upload_without_budget_waits_a_bounded_time_then_overdraws() {
        let part = MIN_PART_SIZE as u64;
        let budget = MemoryBudget::new(part);
        let held = budget.try_reserve(part).unwrap();
        let wait = Duration::from_millis(300);
        let mut reader = budgeted_reader(MIN_PART_SIZE, &budget, wait);
        let started = std::time::Instant::now();
        let Next::Part(first) = reader.next_part(true).await.unwrap() else {
            panic!("a first part");
        };
        assert!(
            started.elapsed() >= wait,
            "waited in line for the budget first"
        );
        assert!(first.share.as_ref().unwrap().is_overdraft());
        assert_eq!((budget.in_use(), budget.overdrawn()), (2 * part, part));
        drop(first);
        assert_eq!(
            budget.overdrawn(),
            0,
            "an overdraft is given back like a share"
        );

        // A share freed while the upload waits is taken then, within the budget.
        let mut reader = budgeted_reader(MIN_PART_SIZE, &budget, Duration::from_secs(60));
        let release = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            drop(held);
        });
        let Next::Part(first) = reader.next_part(true).await.unwrap() else {
            panic!("a first part");
        };
        release.await.unwrap();
        assert!(!first.share.as_ref().unwrap().is_overdraft());
        assert_eq!((budget.in_use(), budget.overdrawn()), (part, 0));
    }

    #[tokio::test]
    async fn a_small_body_takes_no_part_budget() {
        let budget = MemoryBudget::new(MIN_PART_SIZE as u64);
        let _held = budget.try_reserve(MIN_PART_SIZE as u64).unwrap();
        let chunks = vec![Ok(Bytes::from(vec![1u8; UNBUDGETED_PART_BYTES]))];
        let key = ObjectKey::parse("k").unwrap();
        let check = BodyCheck::new(&key, &PutOptions::default(), false);
        let mut reader =
            PartReader::new(futures::stream::iter(chunks).boxed(), check, MIN_PART_SIZE)
                .with_budget(Some(budget.clone()), Duration::from_secs(3600));
        // With the whole budget held elsewhere, a body of UNBUDGETED_PART_BYTES is read at once.
        let part = reader.first_part().await.unwrap();
        assert_eq!(part.bytes.len(), UNBUDGETED_PART_BYTES);
        assert!(part.share.is_none());
    }

    #[tokio::test]
    async fn a_server_that_never_answers_is_a_timeout() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        // Accept connections and hold them open without a byte of answer.
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let mut config = S3Config::new("bucket", "us-east-1");
        config.endpoint_url = Some(endpoint);
        config.force_path_style = true;
        config.access_key_id = Some("AKID".into());
        config.secret_access_key = Some("secret".into());
        config.operation_timeout = Some(Duration::from_millis(300));
        config.max_attempts = 1;
        let store = S3Store::new(config).await.unwrap();
        let error = store
            .head(&ObjectKey::parse("a").unwrap())
            .await
            .unwrap_err();
        assert!(matches!(error, StoreError::Timeout { .. }), "{error:?}");
        assert!(error.is_transient());
    }

    #[tokio::test]
    async fn config_is_validated_and_the_secret_never_printed() {
        let mut config = S3Config::new("bucket", "us-east-1");
        config.access_key_id = Some("AKID".into());
        config.secret_access_key = Some("very-secret".into());
        let debug = format!("{config:?}");
        assert!(
            debug.contains("AKID") && !debug.contains("very-secret"),
            "{debug}"
        );
        config.part_size = MIN_PART_SIZE - 1;
        assert!(S3Store::new(config.clone()).await.is_err());
        config.part_size = MIN_PART_SIZE;
        config.secret_access_key = None;
        assert!(S3Store::new(config.clone()).await.is_err());
    }

    #[tokio::test]
    async fn a_presigned_get_carries_the_asked_disposition_under_its_signature() {
        let mut config = S3Config::new("bucket", "us-east-1");
        config.endpoint_url = Some("http://127.0.0.1:9".into());
        config.force_path_style = true;
        config.access_key_id = Some("AKID".into());
        config.secret_access_key = Some("secret".into());
        let store = S3Store::new(config).await.unwrap();
        let key = ObjectKey::parse("events/a/doc.pdf").unwrap();
        let ttl = Duration::from_secs(60);
        let options = PresignOptions::with_content_disposition("attachment");
        let url = store
            .presign(PresignMethod::Get, &key, ttl, &options)
            .await
            .unwrap()
            .url;
        assert!(
            url.contains("response-content-disposition=attachment&")
                || url.ends_with("response-content-disposition=attachment"),
            "{url}"
        );
        let plain = store
            .presign(PresignMethod::Get, &key, ttl, &PresignOptions::default())
            .await
            .unwrap()
            .url;
        assert!(!plain.contains("response-content-disposition"), "{plain}");
    }
}

#[cfg(test)]
mod presign_put_tests {
    use super::*;

    #[tokio::test]
    async fn a_presigned_put_signs_the_declared_length_type_and_checksum() {
        let mut config = S3Config::new("bucket", "us-east-1");
        config.endpoint_url = Some("http://127.0.0.1:9".into());
        config.force_path_style = true;
        config.access_key_id = Some("AKID".into());
        config.secret_access_key = Some("secret".into());
        let store = S3Store::new(config).await.unwrap();
        let key = ObjectKey::parse("uploads/e/u").unwrap();
        let ttl = Duration::from_secs(60);
        let options = PresignOptions::for_put(42, "image/jpeg").with_sha256([1; 32]);
        let url = store
            .presign(PresignMethod::Put, &key, ttl, &options)
            .await
            .unwrap();
        assert!(
            url.url.contains(
                "X-Amz-SignedHeaders=content-length%3Bcontent-type%3Bhost%3Bx-amz-checksum-sha256"
            ),
            "{url:?}"
        );
        let names: Vec<&str> = url.headers.iter().map(|(n, _)| n.as_str()).collect();
        for name in ["content-length", "content-type", "x-amz-checksum-sha256"] {
            assert!(names.contains(&name), "{url:?}");
        }
        let part = store
            .presign_part(&key, "upload", 2, 5 * 1024 * 1024, ttl)
            .await
            .unwrap();
        assert!(
            part.url
                .contains("X-Amz-SignedHeaders=content-length%3Bhost"),
            "{part:?}"
        );
        assert!(part.url.contains("partNumber=2") && part.url.contains("uploadId=upload"));
    }
}
