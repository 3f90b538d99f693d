#![doc = include_str!("../README.md")]

mod cursor;
mod error;
mod ids;
mod model;

pub use cursor::PageCursor;
pub use error::DomainError;
pub use ids::{EventId, MediaId, UserId};
pub use model::{Event, EventMedia, MediaStatus};
