#![doc = include_str!("../README.md")]

mod error;
mod ids;
mod model;

pub use error::DomainError;
pub use ids::{EventId, MediaId, UserId};
pub use model::{Event, EventMedia, MediaStatus};
