#![doc = include_str!("../README.md")]

mod connection;
mod database;
mod diesel_repo;
mod error;
#[cfg(test)]
mod explain_tests;
mod idempotency;
mod jobs;
mod legacy;
mod memory;
mod repository;
mod schema;
#[cfg(test)]
mod statement_tests;
mod tus;

use chrono::{DateTime, SubsecRound as _, Utc};

pub use database::{Backend, Database, DatabaseOptions};
pub use error::{BoxError, RepoError};
pub use idempotency::{Claim, IdempotencyRepository, InMemoryIdempotency, StoredAnswer};
pub use jobs::{JobClaim, JobOutcome, JobRepository, JobState, ProcessingJob};
pub use legacy::{LegacyColumns, LegacyError, LegacyRow, LegacyTable};
pub use memory::{FaultKind, InMemoryRepository, RepoOp};
pub use repository::{
    EventRepository, FieldsUpdate, HealthCheck, MediaFilter, MediaRepository, ReadyUpdate,
};
pub use tus::{InMemoryTusRepository, TusPart, TusRepository, TusSession};

/// The precision every repository keeps timestamps at (PostgreSQL's): what is read back equals
/// what was written after this truncation, on every backend and in the fake.
pub fn truncate_to_micros(time: DateTime<Utc>) -> DateTime<Utc> {
    time.trunc_subsecs(6)
}
