//! The `ObjectStore` trait and the types it takes and returns.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::Range;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};

use crate::{ObjectKey, Result, StoreError};

/// Bytes in flight, in either direction. A failing caller stream should yield
/// [`StoreError::Body`]; stores pass that error back unchanged.
pub type ByteStream = BoxStream<'static, Result<Bytes>>;

/// Server-side encryption asked of the store for a new object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerSideEncryption {
    /// No encryption header (the bucket's default applies).
    None,
    /// `AES256`: keys managed by the store. The default.
    #[default]
    Aes256,
    /// `aws:kms`, with the KMS key id (or the account's default key when `None`).
    Kms {
        /// KMS key id or ARN.
        key_id: Option<String>,
    },
}

/// How to write an object.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct PutOptions {
    /// `Content-Type` to store with the object.
    pub content_type: Option<String>,
    /// User metadata (`x-amz-meta-*`); keys are lower-case ASCII.
    pub metadata: BTreeMap<String, String>,
    /// Encryption at rest.
    pub encryption: ServerSideEncryption,
    /// The SHA-256 of the whole body, when the caller already knows it; the store checks it.
    pub sha256: Option<[u8; 32]>,
    /// Fail with [`StoreError::PreconditionFailed`] if an object already exists (`If-None-Match: *`).
    pub create_only: bool,
    /// The exact body size, when the caller knows it; a body of any other size is refused with
    /// [`StoreError::SizeMismatch`] and nothing is stored.
    pub size: Option<u64>,
    /// Object tags (S3 object tagging, sent as `x-amz-tagging` with the write), which bucket
    /// lifecycle rules can select on: originals carry [`ORIGINAL_TAG`] so a rule can move them
    /// to a colder class while derived versions stay. Stores without tagging ignore them.
    pub tags: BTreeMap<String, String>,
}

/// The tag `(key, value)` on every original a user uploaded (not on derived versions): what the
/// storage-class transition of `plugs-api bucket init --archive-after-days` selects.
pub const ORIGINAL_TAG: (&str, &str) = ("plugs-media-role", "original");

impl PutOptions {
    /// Options with a content type and everything else at its default.
    pub fn with_content_type(content_type: impl Into<String>) -> Self {
        Self {
            content_type: Some(content_type.into()),
            ..Self::default()
        }
    }
}

/// What a successful put stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutResult {
    /// Bytes stored.
    pub size: u64,
    /// The store's entity tag, quoted as in HTTP (`"..."`).
    pub etag: String,
}

/// A byte range of an object, as in an HTTP `Range` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// `bytes=start-end` with `end` exclusive here (HTTP's is inclusive).
    Bounded {
        /// First byte.
        start: u64,
        /// One past the last byte.
        end: u64,
    },
    /// `bytes=start-`.
    From {
        /// First byte.
        start: u64,
    },
    /// `bytes=-len`: the last `len` bytes.
    Suffix {
        /// How many bytes from the end.
        len: u64,
    },
}

impl ByteRange {
    /// The concrete range within an object of `size` bytes, or `None` if it is not satisfiable
    /// (starts at or past the end, or is empty). A range that runs past the end is cut to it,
    /// as HTTP does.
    pub fn resolve(self, size: u64) -> Option<Range<u64>> {
        let range = match self {
            Self::Bounded { start, end } => start..end.min(size),
            Self::From { start } => start..size,
            Self::Suffix { len } => size.saturating_sub(len)..size,
        };
        (range.start < range.end).then_some(range)
    }
}

/// Whether an `If-None-Match` value matches an object's ETag: `*`, or one of a comma-separated
/// list of ETags, compared weakly (quotes and a `W/` prefix ignored) as HTTP does for GET.
pub fn etag_matches(if_none_match: &str, etag: &str) -> bool {
    fn bare(tag: &str) -> &str {
        let tag = tag.trim();
        let tag = tag.strip_prefix("W/").unwrap_or(tag);
        tag.trim_matches('"')
    }
    let etag = bare(etag);
    if_none_match
        .split(',')
        .any(|candidate| candidate.trim() == "*" || bare(candidate) == etag)
}

/// How to read an object.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct GetOptions {
    /// Only these bytes.
    pub range: Option<ByteRange>,
    /// Answer [`StoreError::NotModified`] when the object's ETag equals this one.
    pub if_none_match: Option<String>,
}

/// An object's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Its key.
    pub key: ObjectKey,
    /// Its whole size in bytes.
    pub size: u64,
    /// Entity tag, quoted (`"..."`).
    pub etag: String,
    /// When it was last written.
    pub last_modified: DateTime<Utc>,
    /// Stored content type, when known (listing does not return it).
    pub content_type: Option<String>,
    /// User metadata (empty in listings).
    pub metadata: BTreeMap<String, String>,
    /// The SHA-256 of the whole object, when the store verified one at upload (a put with
    /// [`PutOptions::sha256`], a presigned PUT bound with [`PresignOptions::sha256`]). Reported
    /// by `head`; gets and listings may leave it out. S3 keeps it for single PUTs only (a
    /// multipart object has a checksum of checksums).
    pub sha256: Option<[u8; 32]>,
}

/// The answer to a get: metadata, the byte range served and the bytes.
pub struct GetResult {
    /// The whole object's metadata.
    pub meta: ObjectMeta,
    /// The bytes this stream carries, within `0..meta.size`.
    pub range: Range<u64>,
    /// The bytes, streamed.
    pub body: ByteStream,
}

impl Debug for GetResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GetResult")
            .field("meta", &self.meta)
            .field("range", &self.range)
            .finish_non_exhaustive()
    }
}

/// One page of a listing.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ListOptions {
    /// Only keys starting with this (a plain string prefix).
    pub prefix: Option<String>,
    /// The `next_token` of the previous page.
    pub page_token: Option<String>,
    /// At most this many keys (capped at 1000).
    pub max_keys: Option<usize>,
}

/// A page of keys, in lexicographic order.
#[derive(Debug, Clone, Default)]
pub struct ListPage {
    /// The objects of this page.
    pub objects: Vec<ObjectMeta>,
    /// Pass back as [`ListOptions::page_token`] for the next page; `None` on the last.
    pub next_token: Option<String>,
}

/// Which request a presigned URL allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresignMethod {
    /// Download.
    Get,
    /// Upload.
    Put,
}

impl PresignMethod {
    /// The HTTP method name (`GET`, `PUT`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Put => "PUT",
        }
    }
}

/// What a presigned URL makes the store answer besides the bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PresignOptions {
    /// For a GET: the `Content-Disposition` the answer carries (S3's
    /// `response-content-disposition`, part of the signature), such as `attachment` so that a
    /// browser following the URL saves the file instead of rendering it.
    ///
    /// Stores whose URLs no server of their own answers (`LocalFsStore`, `MemoryStore`) ignore
    /// it: whatever serves their URLs sets the answer's headers (plugs-api decides from the
    /// stored content type).
    pub content_disposition: Option<String>,
    /// For a PUT: the exact `Content-Length` the upload must declare. Signed (S3 answers 403 to
    /// another length), so a client cannot store more or fewer bytes than it announced.
    pub content_length: Option<u64>,
    /// For a PUT: the `Content-Type` the upload must carry, and that the object keeps. Signed.
    pub content_type: Option<String>,
    /// For a PUT: the SHA-256 of the body. Sent as `x-amz-checksum-sha256` (signed), so the
    /// store itself refuses other bytes and keeps the checksum ([`ObjectMeta::sha256`]).
    pub sha256: Option<[u8; 32]>,
}

impl PresignOptions {
    /// Options asking for this `Content-Disposition` on a GET.
    pub fn with_content_disposition(disposition: impl Into<String>) -> Self {
        Self {
            content_disposition: Some(disposition.into()),
            ..Self::default()
        }
    }

    /// Options for a PUT bound to what the client declared: its length and content type.
    pub fn for_put(content_length: u64, content_type: impl Into<String>) -> Self {
        Self {
            content_length: Some(content_length),
            content_type: Some(content_type.into()),
            ..Self::default()
        }
    }

    /// These options, also binding the body's SHA-256.
    #[must_use]
    pub fn with_sha256(mut self, sha256: [u8; 32]) -> Self {
        self.sha256 = Some(sha256);
        self
    }
}

/// A URL that allows one kind of request on one key until it expires, without other credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresignedUrl {
    /// The URL.
    pub url: String,
    /// When it stops working.
    pub expires_at: DateTime<Utc>,
    /// Headers the request must carry with exactly these values (names lower-case), because the
    /// signature covers them: `content-type`, `x-amz-checksum-sha256`, and `content-length`
    /// (which an HTTP client sets itself from the body). Empty for a URL that binds none.
    pub headers: Vec<(String, String)>,
}

/// S3's largest part number; parts are numbered from 1.
pub const MAX_PART_NUMBER: u32 = 10_000;

/// A part of a multipart upload as the upload's completion names it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CompletedPart {
    /// 1 to [`MAX_PART_NUMBER`].
    pub part_number: u32,
    /// The ETag the store answered for the part (quoted or not).
    pub etag: String,
}

impl CompletedPart {
    /// A part by number and ETag.
    pub fn new(part_number: u32, etag: impl Into<String>) -> Self {
        Self {
            part_number,
            etag: etag.into(),
        }
    }
}

/// A part a multipart upload holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartInfo {
    /// 1 to [`MAX_PART_NUMBER`].
    pub part_number: u32,
    /// Entity tag of the part, quoted.
    pub etag: String,
    /// Its size in bytes.
    pub size: u64,
}

impl From<&PartInfo> for CompletedPart {
    fn from(part: &PartInfo) -> Self {
        Self::new(part.part_number, part.etag.clone())
    }
}

/// Checks a part number is within 1 to [`MAX_PART_NUMBER`].
pub(crate) fn check_part_number(key: &ObjectKey, part_number: u32) -> Result<()> {
    if (1..=MAX_PART_NUMBER).contains(&part_number) {
        Ok(())
    } else {
        Err(StoreError::InvalidPart {
            key: key.to_string(),
            reason: format!("part number {part_number} is not within 1 to {MAX_PART_NUMBER}"),
        })
    }
}

/// How many leftovers of one kind a [`ObjectStore::sweep`] found, and what became of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SweepCount {
    /// Leftovers older than the cutoff.
    pub found: u64,
    /// Of those, how many were removed (0 in a dry run).
    pub removed: u64,
    /// Of those, how many could not be removed (logged; the next sweep tries again).
    pub failed: u64,
}

/// What [`ObjectStore::sweep`] found of the leftovers that writes which never finished (a killed
/// process, a lost connection) leave behind, and what it removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SweepReport {
    /// Temporary files of puts that never finished (`LocalFsStore`).
    pub temp_files: SweepCount,
    /// Multipart uploads started and neither completed nor aborted (`S3Store`): parts the
    /// server keeps, and bills, that no listing of objects shows.
    pub multipart_uploads: SweepCount,
    /// Set when the store could not look for its leftovers and skipped them rather than fail,
    /// with the reason (s3s-fs implements no `ListMultipartUploads`).
    pub skipped: Option<String>,
}

impl SweepReport {
    /// Leftovers found, of every kind.
    pub fn found(&self) -> u64 {
        self.temp_files.found + self.multipart_uploads.found
    }

    /// Leftovers removed, of every kind.
    pub fn removed(&self) -> u64 {
        self.temp_files.removed + self.multipart_uploads.removed
    }

    /// Removals that failed, of every kind.
    pub fn failed(&self) -> u64 {
        self.temp_files.failed + self.multipart_uploads.failed
    }
}

/// The key the default [`ObjectStore::ping`] asks about: outside `events/` and `uploads/`, so no
/// object of plugs-media ever has it.
pub const READY_PROBE_KEY: &str = "plugs-ready-probe";

/// A store of objects addressed by [`ObjectKey`]: S3, a local directory, memory, or a wrapper.
///
/// Object-safe and held as `Arc<dyn ObjectStore>`. Bytes stream both ways; no method holds a
/// whole object in memory. Conveniences live in [`ObjectStoreExt`], so wrappers only forward
/// these few methods.
#[async_trait]
pub trait ObjectStore: Debug + Send + Sync + 'static {
    /// Writes `body` under `key`, replacing any object there unless `create_only`. Either the
    /// whole body is stored or nothing is: a failing body stream or a failing store leaves no
    /// object (and, on S3, no unfinished multipart upload).
    async fn put(
        &self,
        key: &ObjectKey,
        body: ByteStream,
        options: PutOptions,
    ) -> Result<PutResult>;

    /// Reads an object, or a range of it.
    async fn get(&self, key: &ObjectKey, options: GetOptions) -> Result<GetResult>;

    /// An object's metadata.
    async fn head(&self, key: &ObjectKey) -> Result<ObjectMeta>;

    /// Deletes an object. Deleting a missing object succeeds.
    async fn delete(&self, key: &ObjectKey) -> Result<()>;

    /// Copies `from` to `to` inside the store, with its content type and metadata.
    async fn copy(&self, from: &ObjectKey, to: &ObjectKey) -> Result<()>;

    /// One page of the keys under a prefix.
    async fn list(&self, options: ListOptions) -> Result<ListPage>;

    /// A URL that allows `method` on `key` for `expires_in`, with `options` for the answer.
    async fn presign(
        &self,
        method: PresignMethod,
        key: &ObjectKey,
        expires_in: Duration,
        options: &PresignOptions,
    ) -> Result<PresignedUrl>;

    /// Copies `from` to `to` inside the store, replacing the content type, user metadata and
    /// encryption with those of `options` (S3 `CopyObject` with `MetadataDirective: REPLACE`):
    /// how a verified staged upload moves to its final key. `size`, when given, must be the
    /// source's size ([`StoreError::SizeMismatch`] otherwise; nothing copied); `sha256` and
    /// `create_only` are not checked. Answers the new object's size and ETag. `S3Store` copies
    /// objects up to 5 GiB in one `CopyObject` and larger ones part by part (`UploadPartCopy`).
    async fn copy_with(
        &self,
        from: &ObjectKey,
        to: &ObjectKey,
        options: PutOptions,
    ) -> Result<PutResult>;

    /// Starts a multipart upload to `key` with the content type, user metadata and encryption
    /// of `options` (its other fields are ignored); answers the upload id. The object appears
    /// only at [`ObjectStore::complete_multipart`]. Every part except the last must be at least
    /// 5 MiB ([`MIN_PART_SIZE`](crate::MIN_PART_SIZE)): the completion refuses smaller ones,
    /// on every store, as S3 does.
    async fn create_multipart(&self, key: &ObjectKey, options: &PutOptions) -> Result<String>;

    /// Uploads part `part_number` (1 to [`MAX_PART_NUMBER`]) of an upload from a stream of
    /// exactly `size` bytes (streamed, not buffered; [`StoreError::SizeMismatch`] and no part
    /// otherwise). Uploading a number again replaces that part. An unknown upload id is
    /// [`StoreError::NotFound`].
    async fn upload_part(
        &self,
        key: &ObjectKey,
        upload_id: &str,
        part_number: u32,
        body: ByteStream,
        size: u64,
    ) -> Result<PartInfo>;

    /// A URL that lets a client PUT part `part_number` of an upload itself, with a body of
    /// exactly `size` bytes (the length is signed), until `expires_in` has passed. The ETag of
    /// the stored part comes back in the answer's `ETag` header, and from
    /// [`ObjectStore::list_parts`].
    async fn presign_part(
        &self,
        key: &ObjectKey,
        upload_id: &str,
        part_number: u32,
        size: u64,
        expires_in: Duration,
    ) -> Result<PresignedUrl>;

    /// The parts an upload holds, by part number (to check a client's list before completing,
    /// or to resume). An unknown, completed or aborted upload is [`StoreError::NotFound`].
    async fn list_parts(&self, key: &ObjectKey, upload_id: &str) -> Result<Vec<PartInfo>>;

    /// Joins `parts` (ascending part numbers, each with the ETag the store gave it) into the
    /// object under `key`, replacing any object there, and ends the upload. A missing part, an
    /// ETag that differs, numbers out of order or a part other than the last smaller than
    /// 5 MiB is [`StoreError::InvalidPart`] (the upload stays open); an unknown upload is
    /// [`StoreError::NotFound`]. Answers the object's size and ETag.
    async fn complete_multipart(
        &self,
        key: &ObjectKey,
        upload_id: &str,
        parts: &[CompletedPart],
    ) -> Result<PutResult>;

    /// Ends an upload and removes its parts. Aborting an unknown or already ended upload
    /// succeeds.
    async fn abort_multipart(&self, key: &ObjectKey, upload_id: &str) -> Result<()>;

    /// Removes what writes that never finished left behind and no caller can reach by key:
    /// leftovers last touched before `older_than` (temporary files of a local put, unfinished S3
    /// multipart uploads). With `dry_run` it only counts them. Objects are never touched, and a
    /// write still in progress is spared as long as it is younger than the cutoff. Multipart
    /// uploads under [`STAGING_PREFIX`](crate::STAGING_PREFIX) are never swept: their upload
    /// sessions own them, and a resumable upload may rightly run for hours.
    ///
    /// The default finds nothing, for stores whose writes leave nothing behind (memory).
    /// Wrappers must forward it. A store that cannot look for its leftovers (a server without
    /// the listing call) says so in [`SweepReport::skipped`] instead of failing.
    async fn sweep(&self, older_than: DateTime<Utc>, dry_run: bool) -> Result<SweepReport> {
        let _ = (older_than, dry_run);
        Ok(SweepReport::default())
    }

    /// Whether the store answers and can be used, at a cost that does not grow with what it
    /// holds: readiness probes call it every few seconds, on stores of millions of objects.
    ///
    /// The default asks for the metadata of [`READY_PROBE_KEY`], a key no object has: "not
    /// found" is an answer. `S3Store` overrides it with `HeadBucket` (a missing bucket is not
    /// ready, where a missing key would be), `LocalFsStore` with a look at its directories.
    /// Wrappers should forward it.
    async fn ping(&self) -> Result<()> {
        let probe = ObjectKey::parse(READY_PROBE_KEY)?;
        match self.head(&probe).await {
            Ok(_) | Err(StoreError::NotFound { .. }) => Ok(()),
            Err(other) => Err(other),
        }
    }
}

/// Conveniences over [`ObjectStore`], for every store and wrapper alike.
#[async_trait]
pub trait ObjectStoreExt: ObjectStore {
    /// Puts bytes already in memory (small objects and tests).
    async fn put_bytes(
        &self,
        key: &ObjectKey,
        bytes: Bytes,
        options: PutOptions,
    ) -> Result<PutResult> {
        self.put(
            key,
            futures::stream::once(async move { Ok(bytes) }).boxed(),
            options,
        )
        .await
    }

    /// Reads a whole object into memory (small objects and tests).
    async fn get_bytes(&self, key: &ObjectKey) -> Result<Bytes> {
        let result = self.get(key, GetOptions::default()).await?;
        let chunks: Vec<Bytes> = result.body.try_collect().await?;
        Ok(chunks.concat().into())
    }

    /// Whether an object exists.
    async fn exists(&self, key: &ObjectKey) -> Result<bool> {
        match self.head(key).await {
            Ok(_) => Ok(true),
            Err(StoreError::NotFound { .. }) => Ok(false),
            Err(other) => Err(other),
        }
    }

    /// Every object under `prefix`, following pages.
    async fn list_all(&self, prefix: Option<&str>) -> Result<Vec<ObjectMeta>> {
        let mut objects = Vec::new();
        let mut page_token = None;
        loop {
            let options = ListOptions {
                prefix: prefix.map(str::to_owned),
                page_token,
                max_keys: None,
            };
            let page = self.list(options).await?;
            objects.extend(page.objects);
            match page.next_token {
                Some(token) => page_token = Some(token),
                None => return Ok(objects),
            }
        }
    }
}

impl<T: ObjectStore + ?Sized> ObjectStoreExt for T {}
