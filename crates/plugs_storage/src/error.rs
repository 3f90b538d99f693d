//! The one public error of every object store.

/// A boxed error from a lower layer (the SDK, the file system, the caller's stream).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why an object-store call failed: the cases a caller branches on, each with its context.
///
/// Backends convert their private errors into this (S3 error codes, `std::io::ErrorKind`s).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// No object under `key`.
    #[error("object not found: {key}")]
    NotFound {
        /// The key asked for.
        key: String,
    },
    /// A conditional GET matched the caller's `If-None-Match` ETag.
    #[error("object not modified: {key}")]
    NotModified {
        /// The key asked for.
        key: String,
    },
    /// A create-only put found an object already there, or another precondition failed.
    #[error("precondition failed for {key}")]
    PreconditionFailed {
        /// The key written or read.
        key: String,
    },
    /// The requested byte range starts past the end of the object.
    #[error("range not satisfiable for {key} (object size {size})")]
    RangeNotSatisfiable {
        /// The key read.
        key: String,
        /// The object's size, for a `Content-Range: bytes */size` answer.
        size: u64,
    },
    /// The object is in an archive storage class (GLACIER, DEEP_ARCHIVE) and must be restored
    /// before it can be read (S3 `InvalidObjectState`).
    #[error("{key} is archived and must be restored before it can be read")]
    Archived {
        /// The key read.
        key: String,
    },
    /// The credentials are valid but not allowed to do this (S3 `AccessDenied`).
    #[error("access denied for {key}")]
    AccessDenied {
        /// The key, or the bucket for bucket-level calls.
        key: String,
        /// The backend's error.
        #[source]
        source: BoxError,
    },
    /// The store refused the credentials (unknown key id, bad signature, expired token).
    #[error("the object store refused the credentials")]
    InvalidCredentials {
        /// The backend's error.
        #[source]
        source: BoxError,
    },
    /// The store did not answer in time.
    #[error("object store timed out")]
    Timeout {
        /// The backend's error.
        #[source]
        source: BoxError,
    },
    /// The store could not be reached or answered that it is unavailable (5xx, throttling after
    /// retries, connection refused, disk full).
    #[error("object store unavailable")]
    Unavailable {
        /// The backend's error.
        #[source]
        source: BoxError,
    },
    /// A key failed [`ObjectKey`](crate::ObjectKey) validation.
    #[error("invalid object key {key:?}: {reason}")]
    InvalidKey {
        /// The offending key (truncated).
        key: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The caller's body stream failed; the store wrote nothing and passes the caller's error
    /// back unchanged.
    #[error("the upload stream failed")]
    Body {
        /// The caller's error.
        #[source]
        source: BoxError,
    },
    /// The body's SHA-256 differs from [`PutOptions::sha256`](crate::PutOptions::sha256); nothing
    /// was stored.
    #[error("the body of {key} does not match its declared SHA-256")]
    ChecksumMismatch {
        /// The key written.
        key: String,
    },
    /// The body's length differs from [`PutOptions::size`](crate::PutOptions::size); nothing was
    /// stored.
    #[error("the body of {key} has {actual} bytes, {expected} were declared")]
    SizeMismatch {
        /// The key written.
        key: String,
        /// The declared size.
        expected: u64,
        /// The bytes the stream carried (at least this many when it was cut short).
        actual: u64,
    },
    /// A multipart upload's parts cannot be joined: a part named that the upload does not hold
    /// or with another ETag, part numbers out of order or out of range, or a part other than
    /// the last smaller than 5 MiB. The upload stays open.
    #[error("invalid multipart upload part for {key}: {reason}")]
    InvalidPart {
        /// The key being uploaded.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// Anything else, with the backend's error.
    #[error("object store error: {message}")]
    Other {
        /// What was being done.
        message: String,
        /// The backend's error.
        #[source]
        source: BoxError,
    },
}

impl StoreError {
    /// Wraps any error as [`StoreError::Other`].
    pub fn other(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self::Other {
            message: message.into(),
            source: source.into(),
        }
    }

    /// Whether retrying the same call later may succeed (the store was slow or unreachable).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Timeout { .. } | Self::Unavailable { .. })
    }
}

/// Result alias for object-store calls.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
