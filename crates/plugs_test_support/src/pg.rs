//! Per-test PostgreSQL databases: each test creates its own, uniquely named database on the test
//! server and the database is dropped when the test ends, so tests never share rows and run in
//! parallel.
//!
//! ```no_run
//! use plugs_test_support::pg::TestDatabase;
//!
//! // Without a server: fails, or skips visibly when PLUGS_TEST_ALLOW_MISSING_SERVERS=1.
//! let Some(db) = TestDatabase::create() else { return };
//! let url = db.url(); // postgres://.../plugs_test_<uuid>
//! # let _ = url;
//! ```

use std::fmt;

use diesel::{Connection as _, PgConnection, RunQueryDsl as _};
use url::Url;

/// The server used when neither `PLUGS_TEST_PG_URL` nor `DATABASE_URL` is set.
pub const DEFAULT_SERVER_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The URL of the PostgreSQL server tests may create databases on: `PLUGS_TEST_PG_URL`, else
/// `DATABASE_URL` (when it is a PostgreSQL URL), else [`DEFAULT_SERVER_URL`].
pub fn server_url() -> String {
    let from_env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    from_env("PLUGS_TEST_PG_URL")
        .or_else(|| from_env("DATABASE_URL").filter(|u| u.starts_with("postgres")))
        .unwrap_or_else(|| DEFAULT_SERVER_URL.to_owned())
}

/// A database that exists for the life of this value, then is dropped (`WITH (FORCE)`, so
/// connections a test left open do not keep it alive).
pub struct TestDatabase {
    name: String,
    url: String,
    server_url: String,
}

impl fmt::Debug for TestDatabase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestDatabase")
            .field("url", &redact(&self.url))
            .finish()
    }
}

impl TestDatabase {
    /// Creates a fresh database `plugs_test_<uuid>` on [`server_url`].
    ///
    /// When the server cannot be reached the test fails, unless
    /// [`missing_servers_allowed`](crate::missing_servers_allowed): then the skip is recorded
    /// ([`record_skip`](crate::record_skip)) and `None` returned, so the test returns early.
    #[track_caller]
    pub fn create() -> Option<Self> {
        let server_url = server_url();
        match Self::try_create(&server_url) {
            Ok(db) => Some(db),
            Err(error) => {
                crate::missing_server(&format!(
                    "no PostgreSQL at {}: {error:#}",
                    redact(&server_url)
                ));
                None
            }
        }
    }

    /// Creates a fresh database on the server at `server_url`, or says why it could not.
    pub fn try_create(server_url: &str) -> anyhow::Result<Self> {
        let name = format!("plugs_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = admin_connection(server_url)?;
        diesel::sql_query(format!("CREATE DATABASE \"{name}\"")).execute(&mut admin)?;
        let mut url = Url::parse(server_url)?;
        url.set_path(&format!("/{name}"));
        Ok(Self {
            name,
            url: url.into(),
            server_url: server_url.to_owned(),
        })
    }

    /// The URL of this test's database (may hold the server's password; do not print it).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let dropped = admin_connection(&self.server_url).and_then(|mut admin| {
            diesel::sql_query(format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            ))
            .execute(&mut admin)?;
            Ok(())
        });
        if let Err(error) = dropped {
            eprintln!(
                "warning: could not drop test database {}: {error:#}",
                self.name
            );
        }
    }
}

fn admin_connection(server_url: &str) -> anyhow::Result<PgConnection> {
    let mut url = Url::parse(server_url)?;
    // An unreachable host should cost seconds, not the operating system's TCP timeout.
    if !url.query_pairs().any(|(key, _)| key == "connect_timeout") {
        url.query_pairs_mut().append_pair("connect_timeout", "5");
    }
    Ok(PgConnection::establish(url.as_str())?)
}

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("***"));
            }
            parsed.into()
        }
        Err(_) => "(unparsable URL)".to_owned(),
    }
}
