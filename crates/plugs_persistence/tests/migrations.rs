//! Every migration applies, reverts and applies again, on both backends: the `down.sql` files
//! are run, not just written.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use chrono::Utc;
use plugs_domain::{Event, EventId, UserId};
use plugs_persistence::{Database, EventRepository as _, HealthCheck as _, RepoError};

fn event() -> Event {
    Event {
        id: EventId::new(),
        title: "migrations".to_owned(),
        owner: UserId::parse("alice").unwrap(),
        created_at: Utc::now(),
        updated_at: Utc::now(),
    }
}

async fn up_down_up(db: &Database) {
    db.run_migrations().await.unwrap();
    // Applying again is a no-op, not an error (the server runs them at every start).
    db.run_migrations().await.unwrap();
    db.insert_event(&event()).await.unwrap();

    db.revert_all_migrations().await.unwrap();
    // The tables are gone: the schema really was taken down.
    let err = db.insert_event(&event()).await.unwrap_err();
    assert!(matches!(err, RepoError::Other { .. }), "{err:?}");
    db.ping().await.unwrap();

    db.run_migrations().await.unwrap();
    let fresh = event();
    db.insert_event(&fresh).await.unwrap();
    assert_eq!(
        db.find_event(fresh.id).await.unwrap().map(|e| e.id),
        Some(fresh.id)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_migrations_go_up_down_and_up_again() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("m.db").display());
    let db = Database::connect(&url, common::options()).unwrap();
    up_down_up(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_in_memory_database_keeps_its_tables_across_calls() {
    // One connection is the whole database: the pool must not open a second, empty one.
    let db = Database::connect("sqlite::memory:", common::options()).unwrap();
    up_down_up(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_migrations_go_up_down_and_up_again() {
    let Some((_test_db, db)) = common::postgres_database().await else {
        return;
    };
    up_down_up(&db).await;
}
