#![doc = include_str!("../README.md")]

mod error;
mod repository;

pub use error::{BoxError, RepoError};
pub use repository::{EventRepository, HealthCheck, MediaRepository};
