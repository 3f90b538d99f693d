//! The repository test suite every implementation runs (the fake, SQLite, PostgreSQL), and the
//! factories that give each test a fresh, empty repository.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code, unreachable_pub)]

pub mod jobs;
pub mod suite;

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use plugs_persistence::{
    Database, DatabaseOptions, EventRepository, HealthCheck, InMemoryRepository, JobRepository,
    MediaRepository,
};
use plugs_test_support::pg::TestDatabase;

/// Everything a repository under test implements.
pub trait Repo: EventRepository + MediaRepository + HealthCheck + JobRepository {}
impl<T: EventRepository + MediaRepository + HealthCheck + JobRepository> Repo for T {}

/// A fresh repository and whatever must live as long as it (temp dir, test database).
pub struct Subject {
    pub repo: Arc<dyn Repo>,
    _keep: Vec<Box<dyn Any + Send>>,
}

pub fn options() -> DatabaseOptions {
    DatabaseOptions {
        max_connections: 4,
        connect_timeout: Duration::from_secs(5),
    }
}

pub async fn memory() -> Option<Subject> {
    Some(Subject {
        repo: Arc::new(InMemoryRepository::new()),
        _keep: Vec::new(),
    })
}

pub async fn sqlite() -> Option<Subject> {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("plugs.db").display());
    let db = Database::connect(&url, options()).unwrap();
    db.run_migrations().await.unwrap();
    Some(Subject {
        repo: Arc::new(db),
        _keep: vec![Box::new(dir)],
    })
}

pub async fn postgres() -> Option<Subject> {
    let (test_db, db) = postgres_database().await?;
    db.run_migrations().await.unwrap();
    Some(Subject {
        repo: Arc::new(db),
        _keep: vec![Box::new(test_db)],
    })
}

/// A fresh PostgreSQL database (not yet migrated) and a pool on it; `None` when skipped.
pub async fn postgres_database() -> Option<(TestDatabase, Database)> {
    postgres_database_with(options()).await
}

/// [`postgres_database`] with pool options of the test's choosing.
pub async fn postgres_database_with(options: DatabaseOptions) -> Option<(TestDatabase, Database)> {
    let (test_db, db) = tokio::task::spawn_blocking(move || {
        let test_db = TestDatabase::create()?;
        let db = Database::connect(test_db.url(), options).unwrap();
        Some((test_db, db))
    })
    .await
    .unwrap()?;
    Some((test_db, db))
}

/// One `#[tokio::test]` per suite case for the backend made by `$make`.
#[allow(unused_macros)]
macro_rules! repository_suite {
    ($backend:ident, $make:path, [$($case:ident),* $(,)?]) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let Some(subject) = $make().await else { return };
                    $crate::common::suite::$case(&*subject.repo).await;
                }
            )*
        }
    };
}
