//! A database that cannot be reached is a typed, prompt `RepoError::Unavailable`, never a panic
//! or a hang; and a URL that names no supported backend never echoes its password.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use plugs_persistence::{Database, DatabaseOptions, HealthCheck as _, RepoError};

fn closed_port() -> u16 {
    // Bound then released: nothing listens there for the moment this test needs it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[test]
fn connecting_to_a_closed_port_is_unavailable() {
    let url = format!(
        "postgres://postgres:s3cret@127.0.0.1:{}/plugs",
        closed_port()
    );
    let options = DatabaseOptions {
        max_connections: 2,
        connect_timeout: Duration::from_millis(500),
    };
    let err = Database::connect(&url, options).unwrap_err();
    assert!(matches!(err, RepoError::Unavailable { .. }), "{err:?}");
    assert!(!format!("{err:?} {err}").contains("s3cret"), "{err:?}");
}

#[test]
fn unsupported_urls_name_only_their_scheme() {
    let err = Database::connect("mysql://root:s3cret@db/plugs", common::options()).unwrap_err();
    assert!(
        matches!(&err, RepoError::UnsupportedUrl { scheme } if scheme == "mysql"),
        "{err:?}"
    );
    assert!(!format!("{err:?} {err}").contains("s3cret"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_goes_away_makes_calls_unavailable() {
    let options = DatabaseOptions {
        max_connections: 2,
        connect_timeout: Duration::from_secs(1),
    };
    let Some((test_db, db)) = common::postgres_database_with(options).await else {
        return;
    };
    db.run_migrations().await.unwrap();
    db.ping().await.unwrap();

    // Dropping the database terminates the pool's sessions and refuses new ones.
    tokio::task::spawn_blocking(move || drop(test_db))
        .await
        .unwrap();
    let err = db.ping().await.unwrap_err();
    assert!(matches!(err, RepoError::Unavailable { .. }), "{err:?}");
}
