#![doc = include_str!("../README.md")]

mod body;
mod error;
mod fault;
mod key;
mod local;
mod memory;
mod readahead;
mod s3;
mod signing;
mod store;

#[cfg(feature = "conformance")]
pub mod conformance;

/// Where direct and resumable uploads stage their bytes before they are verified:
/// `uploads/{event_id}/{upload_id}`. Multipart uploads under it belong to upload sessions, which
/// abort them when the upload is given up or expires, so [`ObjectStore::sweep`] leaves them
/// alone (the bucket lifecycle rule of `plugs-api bucket init` is the net for a process that
/// died before its session was written).
pub const STAGING_PREFIX: &str = "uploads/";

pub use error::{BoxError, Result, StoreError};
pub use fault::{FaultKind, FaultyStore, Operation};
pub use key::ObjectKey;
pub use local::{LocalFsConfig, LocalFsStore};
pub use memory::MemoryStore;
pub use readahead::{MIN_READ_AHEAD_RANGE, MemoryBudget, ReadAhead, Reservation};
pub use s3::{
    ABORT_RULE_ID, ARCHIVE_RULE_ID, ArchiveRule, BucketPlan, BucketSetup, BucketState,
    CORS_RULE_ID, CredentialSource, DEFAULT_PART_BUDGET_WAIT, MIN_PART_SIZE, PayloadSigning,
    PendingUpload, ProbeEncryption, REPLICATION_RULE_ID, RULE_PREFIX, S3Config, S3Store,
    STAGING_RULE_ID, UNBUDGETED_PART_BYTES,
};
pub use signing::PresignedParams;
pub use store::{
    ByteRange, ByteStream, CompletedPart, GetOptions, GetResult, ListOptions, ListPage,
    MAX_PART_NUMBER, ORIGINAL_TAG, ObjectMeta, ObjectStore, ObjectStoreExt, PartInfo,
    PresignMethod, PresignOptions, PresignedUrl, PutOptions, PutResult, READY_PROBE_KEY,
    ServerSideEncryption, SweepCount, SweepReport, etag_matches,
};
