//! The one error type of the persistence crate.

/// A boxed error from a lower layer (Diesel, r2d2, the migration harness).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a repository call failed: typed cases for what callers branch on, never strings.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RepoError {
    /// The row does not exist.
    #[error("{entity} {id} not found")]
    NotFound {
        /// `event` or `media`.
        entity: &'static str,
        /// Its id.
        id: String,
    },
    /// A unique constraint refused the row (same id, or an `s3_key` already claimed).
    #[error("duplicate {what}")]
    Duplicate {
        /// Which constraint: `id` or `s3_key`.
        what: &'static str,
    },
    /// The row refers to a parent that does not exist (media for a missing event).
    #[error("{entity} refers to a missing {parent}")]
    MissingParent {
        /// The row inserted.
        entity: &'static str,
        /// The parent it names.
        parent: &'static str,
    },
    /// The row still has dependent rows (an event with media).
    #[error("{entity} {id} still has {children}")]
    HasChildren {
        /// The row that was to be deleted.
        entity: &'static str,
        /// Its id.
        id: String,
        /// What still refers to it.
        children: &'static str,
    },
    /// A state transition was asked of a row in another state (`mark_ready` on a `deleting` row).
    #[error("media {id} is {actual}, expected {expected}")]
    InvalidState {
        /// The media id.
        id: String,
        /// The state the transition starts from.
        expected: &'static str,
        /// The state the row is in.
        actual: &'static str,
    },
    /// Inserting the record would take an event or an owner past its quota; nothing changed.
    #[error("the {which} quota of {limit} would be exceeded")]
    QuotaExceeded {
        /// Which limit: `event bytes`, `event media`, `owner bytes` or `owner media`.
        which: &'static str,
        /// The limit.
        limit: u64,
    },
    /// The database could not be reached (pool timeout, connection refused, server gone).
    #[error("database unavailable")]
    Unavailable {
        /// The underlying error.
        #[source]
        source: BoxError,
    },
    /// Migrations failed to run.
    #[error("database migration failed")]
    Migration {
        /// The underlying error.
        #[source]
        source: BoxError,
    },
    /// The database URL is not one this crate supports.
    #[error("unsupported database URL (expected postgres:// or sqlite://): {scheme}")]
    UnsupportedUrl {
        /// The scheme found, without the rest of the URL (which may hold a password).
        scheme: String,
    },
    /// A stored value could not be read back into a domain type.
    #[error("corrupt row in {table}: {detail}")]
    Corrupt {
        /// The table.
        table: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// Anything else.
    #[error("database error")]
    Other {
        /// The underlying error.
        #[source]
        source: BoxError,
    },
}
