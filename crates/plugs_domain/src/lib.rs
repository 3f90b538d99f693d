#![doc = include_str!("../README.md")]

mod access;
mod cursor;
mod error;
mod fields;
mod filename;
mod ids;
pub mod keys;
mod media_type;
mod model;
mod policy;

pub use access::{Access, authorize};
pub use cursor::{PageCursor, PageLimit};
pub use error::DomainError;
pub use fields::{MediaFields, validate_event_title};
pub use filename::{MAX_FILENAME_CHARS, sanitize_filename};
pub use ids::{EventId, MediaId, UserId};
pub use keys::{Clock, ManualClock, SystemClock};
pub use media_type::{AllowedType, ContentType, MediaKind, may_run_code, normalize_mime};
pub use model::{
    DerivedVersion, DirectUploadKind, Event, EventMedia, MediaProcessing, MediaStatus,
    ProcessableTypes, ProcessingState, Quota, UploadSession, Usage,
};
pub use policy::{DEFAULT_MAX_SIZE_BYTES, MediaPolicy, SNIFF_LEN};
