//! The one error type of the service crate.

use plugs_domain::DomainError;
use plugs_persistence::RepoError;
use plugs_storage::{BoxError, StoreError};

/// Why a service call failed, in the cases the HTTP edge maps to distinct answers.
///
/// Errors never carry secrets: the lower layers' errors hold keys, ids and backend messages only.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MediaError {
    /// The thing does not exist, or it belongs to someone else: both answer the same, so that
    /// nobody learns which ids exist.
    #[error("{what} {id} not found")]
    NotFound {
        /// `event` or `media`.
        what: &'static str,
        /// The id asked for.
        id: String,
    },
    /// A field, id, cursor, page size or file name the client sent breaks a rule.
    #[error("invalid request: {0}")]
    Invalid(#[source] DomainError),
    /// The upload is larger than the policy allows; nothing was kept.
    #[error("file is larger than the limit of {limit} bytes")]
    TooLarge {
        /// The limit, in bytes.
        limit: u64,
    },
    /// The bytes are of a type the policy refuses, of no known type, or not the type the client
    /// declared or named.
    #[error("unsupported media type: {detail}")]
    UnsupportedType {
        /// What was wrong, for the client.
        detail: String,
    },
    /// The upload has no bytes.
    #[error("the file is empty")]
    EmptyFile,
    /// The upload's length is not the size the client declared; nothing was kept.
    #[error("the file does not have the declared {declared} bytes ({received} received)")]
    SizeMismatch {
        /// The size the client declared.
        declared: u64,
        /// The bytes received before the mismatch was certain: the whole file when it was
        /// shorter, the first bytes past the declared size when it was longer.
        received: u64,
    },
    /// The record changed since the version the caller's `If-Match` names; nothing was changed.
    #[error("{what} {id} has changed since the version given in If-Match")]
    PreconditionFailed {
        /// `event` or `media`.
        what: &'static str,
        /// The id.
        id: String,
    },
    /// The object's ETag matched the caller's `If-None-Match`.
    #[error("not modified")]
    NotModified,
    /// The requested range starts past the end of the object.
    #[error("range not satisfiable (object size {size})")]
    RangeNotSatisfiable {
        /// The object's size, for `Content-Range: bytes */size`.
        size: u64,
    },
    /// The client's upload stream failed (disconnect, malformed multipart); nothing was kept.
    #[error("the upload was interrupted")]
    UploadInterrupted {
        /// The caller's stream error.
        #[source]
        source: BoxError,
    },
    /// The upload would take the event or its owner past a quota; nothing was kept.
    #[error("the {which} quota of {limit} would be exceeded")]
    QuotaExceeded {
        /// Which limit: `event bytes`, `event media`, `owner bytes` or `owner media`.
        which: &'static str,
        /// The limit.
        limit: u64,
    },
    /// A direct upload was completed after its URLs expired; it has been removed.
    #[error("upload {id} has expired")]
    UploadExpired {
        /// The upload's id.
        id: String,
    },
    /// The bytes are not those whose SHA-256 the client declared; nothing was kept.
    #[error("the file's SHA-256 is not the declared one")]
    ChecksumMismatch,
    /// The object store failed.
    #[error("object store error")]
    Store(#[source] StoreError),
    /// The database failed.
    #[error("database error")]
    Repository(#[source] RepoError),
}

impl MediaError {
    /// Whether a backend is unreachable or overloaded (HTTP 503: worth retrying later), as
    /// opposed to a bug or a refusal (500) or a client mistake (4xx).
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            Self::Store(StoreError::Unavailable { .. } | StoreError::Timeout { .. })
                | Self::Repository(RepoError::Unavailable { .. })
        )
    }

    pub(crate) fn event_not_found(id: impl ToString) -> Self {
        Self::NotFound {
            what: "event",
            id: id.to_string(),
        }
    }

    pub(crate) fn media_not_found(id: impl ToString) -> Self {
        Self::NotFound {
            what: "media",
            id: id.to_string(),
        }
    }
}

impl From<DomainError> for MediaError {
    fn from(error: DomainError) -> Self {
        match error {
            DomainError::TooLarge { limit, .. } => Self::TooLarge { limit },
            DomainError::UnrecognisedContent
            | DomainError::TypeNotAllowed { .. }
            | DomainError::DeclaredTypeMismatch { .. }
            | DomainError::ExtensionMismatch { .. } => Self::UnsupportedType {
                detail: error.to_string(),
            },
            // Never a 4xx that tells a stranger the event exists; call sites name the id.
            DomainError::NotOwner => Self::NotFound {
                what: "event",
                id: String::new(),
            },
            other => Self::Invalid(other),
        }
    }
}

impl From<StoreError> for MediaError {
    /// Keeps the cases callers answer differently apart; `NotFound` stays a store error here
    /// because only the call site knows whether a missing object is the client's problem.
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Body { source } => Self::UploadInterrupted { source },
            StoreError::NotModified { .. } => Self::NotModified,
            StoreError::RangeNotSatisfiable { size, .. } => Self::RangeNotSatisfiable { size },
            other => Self::Store(other),
        }
    }
}

impl From<RepoError> for MediaError {
    fn from(error: RepoError) -> Self {
        Self::Repository(error)
    }
}
