//! The one error type of the domain crate.

/// Why a domain rule refused its input. Derives `PartialEq` so tests can `assert_eq!` on it.
///
/// Every variant except [`DomainError::NotOwner`] describes a client mistake; `NotOwner` is
/// answered exactly like a missing event so that nobody learns which event ids exist.
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
    /// A page size outside the accepted range.
    #[error("invalid page limit {value}: expected 1 to {max}")]
    InvalidLimit {
        /// The requested limit.
        value: u32,
        /// The largest accepted limit.
        max: u32,
    },

    /// An upload is larger than the policy allows.
    #[error("file is too large: {size} bytes, the limit is {limit} bytes")]
    TooLarge {
        /// The configured maximum, in bytes.
        limit: u64,
        /// The size seen so far (or in total), in bytes.
        size: u64,
    },
    /// A media policy named a type or kind this crate does not know.
    #[error(
        "unknown media type or kind {entry:?} (expected a supported MIME type or one of image, video, audio, document)"
    )]
    UnknownMediaType {
        /// The offending entry (truncated).
        entry: String,
    },
    /// A media policy would allow nothing at all.
    #[error("the media policy allows no type")]
    NoAllowedTypes,
    /// The first bytes of an upload match no known file format.
    #[error("unrecognised file content")]
    UnrecognisedContent,
    /// The content was recognised but its type is not accepted.
    #[error("file type {mime} is not allowed")]
    TypeNotAllowed {
        /// The sniffed type.
        mime: String,
    },
    /// The client declared a content type that is not the one its bytes have.
    #[error("declared content type {declared} does not match the file content ({sniffed})")]
    DeclaredTypeMismatch {
        /// The declared type, normalised (lower case, no parameters; truncated).
        declared: String,
        /// The type sniffed from the bytes.
        sniffed: String,
    },
    /// The file name's extension does not belong to the type the bytes have.
    #[error("file extension .{extension} does not match the file content ({sniffed})")]
    ExtensionMismatch {
        /// The extension, lower case, without the dot (truncated).
        extension: String,
        /// The type sniffed from the bytes.
        sniffed: String,
    },

    /// A title (of media or of an event) is longer than allowed.
    #[error("title is too long: {len} characters, at most {max} allowed")]
    TitleTooLong {
        /// Maximum length, in characters.
        max: usize,
        /// Actual length after trimming, in characters.
        len: usize,
    },
    /// An event title is empty or only whitespace.
    #[error("title must not be empty")]
    TitleEmpty,
    /// A description is longer than allowed.
    #[error("description is too long: {len} characters, at most {max} allowed")]
    DescriptionTooLong {
        /// Maximum length, in characters.
        max: usize,
        /// Actual length after trimming, in characters.
        len: usize,
    },
    /// A text field holds a control character it may not hold.
    #[error("{field} contains a control character")]
    ControlCharacter {
        /// Which field: `title`, `description` or `tags`.
        field: &'static str,
    },
    /// More distinct tags than allowed.
    #[error("too many tags: {count}, at most {max} allowed")]
    TooManyTags {
        /// Maximum number of tags.
        max: usize,
        /// Number of distinct, non-empty tags given.
        count: usize,
    },
    /// One tag is longer than allowed.
    #[error("tag {tag:?} is too long: {len} characters, at most {max} allowed")]
    TagTooLong {
        /// The offending tag, normalised (truncated).
        tag: String,
        /// Maximum length, in characters.
        max: usize,
        /// Actual length, in characters.
        len: usize,
    },

    /// A listing filter named a kind that does not exist.
    #[error("unknown kind {kind:?}: expected image, video, audio or document")]
    UnknownKind {
        /// The offending value (truncated).
        kind: String,
    },
    /// One item of a tag list holds a comma; a tag never does (the form splits on commas).
    #[error("tag {tag:?} contains a comma; give each tag as its own list item")]
    TagHasComma {
        /// The offending item (truncated).
        tag: String,
    },
    /// A field of a request breaks its rule (a direct upload's `sha256`, a part number).
    #[error("invalid {field}: {reason}")]
    InvalidField {
        /// The field's name.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },

    /// The caller does not own the event. Callers answer this exactly as "event not found".
    #[error("not the owner of this event")]
    NotOwner,
}

/// Truncates user-supplied text before it is echoed in an error, so an error message never
/// carries an unbounded amount of client input.
pub(crate) fn echo(value: &str, max_chars: usize) -> String {
    value.chars().take(max_chars).collect()
}
