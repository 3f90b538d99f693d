//! The one error type of the domain crate.

/// Why a domain rule refused its input. Derives `PartialEq` so tests can `assert_eq!` on it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DomainError {
    /// A textual id did not parse.
    #[error("invalid {kind} id: {value:?}")]
    InvalidId {
        /// Which id: `event`, `media` or `user`.
        kind: &'static str,
        /// The offending value (truncated).
        value: String,
    },
    /// A pagination cursor was not one this service produced.
    #[error("invalid pagination cursor")]
    InvalidCursor,
}
