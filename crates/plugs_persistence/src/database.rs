//! The connection pool over either backend, chosen by URL scheme, and the embedded migrations.

use std::fmt;
use std::time::Duration;

use diesel::connection::SimpleConnection as _;
use diesel::r2d2::{self, ManageConnection, Pool, PooledConnection, R2D2Connection as _};
use diesel::{Connection as _, PgConnection, SqliteConnection};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness as _, embed_migrations};

use crate::RepoError;
use crate::connection::AnyConnection;

const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/postgres");
const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/sqlite");

/// How to size and time the connection pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DatabaseOptions {
    /// Most connections open at once. An in-memory SQLite database always uses one (each
    /// connection would otherwise see its own empty database).
    pub max_connections: u32,
    /// How long to wait for a connection (establishing one, or a free one from the pool) before a
    /// call fails with [`RepoError::Unavailable`]. Also SQLite's busy timeout.
    pub connect_timeout: Duration,
}

impl Default for DatabaseOptions {
    fn default() -> Self {
        Self {
            max_connections: 10,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// Which SQL backend a [`Database`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Backend {
    /// PostgreSQL (`postgres://` or `postgresql://`).
    Postgres,
    /// SQLite (`sqlite://path`, `sqlite:path`, `sqlite::memory:`).
    Sqlite,
}

/// Where to connect, parsed from the URL. Never printed: the PostgreSQL URL may hold a password.
#[derive(Clone)]
enum Target {
    Postgres { url: String },
    SqliteFile { path: String },
    SqliteMemory,
}

impl Target {
    fn parse(url: &str, connect_timeout: Duration) -> Result<Self, RepoError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Self::Postgres {
                url: with_connect_timeout(url, connect_timeout),
            });
        }
        let sqlite_path = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"));
        match sqlite_path {
            Some(":memory:") => Ok(Self::SqliteMemory),
            Some(path) if !path.is_empty() => Ok(Self::SqliteFile {
                path: path.to_owned(),
            }),
            _ => Err(RepoError::UnsupportedUrl {
                scheme: scheme_of(url),
            }),
        }
    }

    const fn backend(&self) -> Backend {
        match self {
            Self::Postgres { .. } => Backend::Postgres,
            Self::SqliteFile { .. } | Self::SqliteMemory => Backend::Sqlite,
        }
    }
}

/// The scheme of a URL for an error message, and nothing after it: the rest may hold a password.
fn scheme_of(url: &str) -> String {
    match url.split_once(':') {
        Some((scheme, _))
            if !scheme.is_empty()
                && scheme.len() <= 32
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)) =>
        {
            scheme.to_owned()
        }
        _ => "(none)".to_owned(),
    }
}

/// Adds libpq's `connect_timeout` (whole seconds, at least 2 as libpq requires) unless the URL
/// sets one, so an unroutable host fails within the pool's timeout instead of the OS's.
fn with_connect_timeout(url: &str, timeout: Duration) -> String {
    if url.contains("connect_timeout=") {
        return url.to_owned();
    }
    let seconds = timeout.as_secs().max(2);
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}connect_timeout={seconds}")
}

/// Opens connections of the configured backend. Unlike `ConnectionManager<AnyConnection>`, which
/// tries every backend in turn, this never falls back to SQLite when PostgreSQL is down (that would
/// quietly create a file named after the PostgreSQL URL).
struct Manager {
    target: Target,
    busy_timeout: Duration,
}

impl ManageConnection for Manager {
    type Connection = AnyConnection;
    type Error = r2d2::Error;

    fn connect(&self) -> Result<AnyConnection, r2d2::Error> {
        match &self.target {
            Target::Postgres { url } => PgConnection::establish(url)
                .map(AnyConnection::Postgresql)
                .map_err(r2d2::Error::ConnectionError),
            Target::SqliteFile { path } => self.sqlite(path),
            Target::SqliteMemory => self.sqlite(":memory:"),
        }
    }

    fn is_valid(&self, conn: &mut AnyConnection) -> Result<(), r2d2::Error> {
        conn.ping().map_err(r2d2::Error::QueryError)
    }

    fn has_broken(&self, conn: &mut AnyConnection) -> bool {
        conn.is_broken()
    }
}

impl Manager {
    fn sqlite(&self, path: &str) -> Result<AnyConnection, r2d2::Error> {
        let mut conn = SqliteConnection::establish(path).map_err(r2d2::Error::ConnectionError)?;
        // Per connection, because SQLite keeps these per connection: enforce the foreign keys the
        // schema declares, let readers run beside the writer (WAL), and wait for a lock instead of
        // failing at once with "database is locked".
        let pragmas = format!(
            "PRAGMA foreign_keys = ON; PRAGMA busy_timeout = {}; PRAGMA journal_mode = WAL; \
             PRAGMA synchronous = NORMAL;",
            self.busy_timeout.as_millis()
        );
        conn.batch_execute(&pragmas)
            .map_err(r2d2::Error::QueryError)?;
        Ok(AnyConnection::Sqlite(conn))
    }
}

/// A pool of connections to PostgreSQL or SQLite, cheap to clone. Implements the repository
/// traits ([`crate::EventRepository`], [`crate::MediaRepository`], [`crate::HealthCheck`]); every
/// query runs on Tokio's blocking thread pool, so callers may await it from any async context.
#[derive(Clone)]
pub struct Database {
    pool: Pool<Manager>,
    backend: Backend,
    timeout: Duration,
}

impl fmt::Debug for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.pool.state();
        f.debug_struct("Database")
            .field("backend", &self.backend)
            .field("connections", &state.connections)
            .field("idle_connections", &state.idle_connections)
            .finish_non_exhaustive()
    }
}

impl Database {
    /// Opens a pool for `url`: `postgres://…` / `postgresql://…`, or `sqlite://path`,
    /// `sqlite:path`, `sqlite::memory:` (the parent directory of a SQLite file is created).
    ///
    /// Establishes one connection before returning, so a wrong URL or an unreachable server is
    /// reported here as [`RepoError::Unavailable`] within `connect_timeout`. Blocks the calling
    /// thread meanwhile; call it at start-up or from `spawn_blocking`.
    pub fn connect(url: &str, options: DatabaseOptions) -> Result<Self, RepoError> {
        let target = Target::parse(url, options.connect_timeout)?;
        let backend = target.backend();
        if let Target::SqliteFile { path } = &target {
            create_parent_dir(path)?;
        }
        let in_memory = matches!(target, Target::SqliteMemory);
        let manager = Manager {
            target,
            busy_timeout: options.connect_timeout,
        };
        let mut builder = Pool::builder()
            .max_size(if in_memory {
                1
            } else {
                options.max_connections.max(1)
            })
            .min_idle(Some(1))
            .connection_timeout(options.connect_timeout);
        if in_memory {
            // The one connection *is* the database: never let the pool close it.
            builder = builder.idle_timeout(None).max_lifetime(None);
        }
        let pool = builder.build(manager).map_err(unavailable)?;
        tracing::debug!(?backend, "database pool ready");
        Ok(Self {
            pool,
            backend,
            timeout: options.connect_timeout,
        })
    }

    /// Which backend this pool talks to.
    pub const fn backend(&self) -> Backend {
        self.backend
    }

    /// Applies the pending embedded migrations of this backend.
    pub async fn run_migrations(&self) -> Result<(), RepoError> {
        self.with_connection(|conn| {
            let applied = match conn {
                AnyConnection::Postgresql(pg) => pg.run_pending_migrations(POSTGRES_MIGRATIONS),
                AnyConnection::Sqlite(sqlite) => sqlite.run_pending_migrations(SQLITE_MIGRATIONS),
            }
            .map_err(|source| RepoError::Migration { source })?;
            for version in applied {
                tracing::info!(%version, "applied migration");
            }
            Ok(())
        })
        .await
    }

    /// The embedded migrations not applied yet, by name (`plugs-api check`: "migrations are
    /// current"). Changes nothing.
    pub async fn pending_migrations(&self) -> Result<Vec<String>, RepoError> {
        self.with_connection(|conn| {
            let pending = match conn {
                AnyConnection::Postgresql(pg) => pg
                    .pending_migrations(POSTGRES_MIGRATIONS)
                    .map(|list| list.iter().map(|m| m.name().to_string()).collect()),
                AnyConnection::Sqlite(sqlite) => sqlite
                    .pending_migrations(SQLITE_MIGRATIONS)
                    .map(|list| list.iter().map(|m| m.name().to_string()).collect()),
            }
            .map_err(|source| RepoError::Migration { source })?;
            Ok(pending)
        })
        .await
    }

    /// Reverts every applied migration (tests of the `down.sql` files; operators rolling back).
    pub async fn revert_all_migrations(&self) -> Result<(), RepoError> {
        self.with_connection(|conn| {
            let reverted = match conn {
                AnyConnection::Postgresql(pg) => pg.revert_all_migrations(POSTGRES_MIGRATIONS),
                AnyConnection::Sqlite(sqlite) => sqlite.revert_all_migrations(SQLITE_MIGRATIONS),
            }
            .map_err(|source| RepoError::Migration { source })?;
            for version in reverted {
                tracing::info!(%version, "reverted migration");
            }
            Ok(())
        })
        .await
    }

    /// Runs `work` with a pooled connection on the blocking thread pool: taking a connection from
    /// the pool may block for up to `connect_timeout`, and Diesel itself is synchronous.
    pub(crate) async fn with_connection<T, F>(&self, work: F) -> Result<T, RepoError>
    where
        T: Send + 'static,
        F: FnOnce(&mut AnyConnection) -> Result<T, RepoError> + Send + 'static,
    {
        let pool = self.pool.clone();
        let timeout = self.timeout;
        let task = tokio::task::spawn_blocking(move || {
            let mut conn: PooledConnection<Manager> =
                pool.get_timeout(timeout).map_err(unavailable)?;
            work(&mut conn)
        });
        match task.await {
            Ok(result) => result,
            Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
            Err(join) => Err(RepoError::Other {
                source: Box::new(join),
            }),
        }
    }
}

fn unavailable(source: r2d2::PoolError) -> RepoError {
    RepoError::Unavailable {
        source: Box::new(source),
    }
}

fn create_parent_dir(path: &str) -> Result<(), RepoError> {
    // `file:` URIs and the like are SQLite's business; only plain paths get a directory.
    if path.starts_with("file:") {
        return Ok(());
    }
    match std::path::Path::new(path).parent() {
        Some(parent) if !parent.as_os_str().is_empty() => {
            std::fs::create_dir_all(parent).map_err(|source| RepoError::Unavailable {
                source: Box::new(source),
            })
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_pick_the_backend_and_never_leak_the_rest() {
        let timeout = Duration::from_secs(3);
        assert!(matches!(
            Target::parse("postgres://u:secret@h/db", timeout),
            Ok(Target::Postgres { url }) if url == "postgres://u:secret@h/db?connect_timeout=3"
        ));
        assert!(matches!(
            Target::parse("postgresql://h/db?sslmode=disable", timeout),
            Ok(Target::Postgres { url }) if url.ends_with("sslmode=disable&connect_timeout=3")
        ));
        assert!(matches!(
            Target::parse("sqlite::memory:", timeout),
            Ok(Target::SqliteMemory)
        ));
        assert!(matches!(
            Target::parse("sqlite://:memory:", timeout),
            Ok(Target::SqliteMemory)
        ));
        assert!(matches!(
            Target::parse("sqlite://data/plugs.db", timeout),
            Ok(Target::SqliteFile { path }) if path == "data/plugs.db"
        ));
        assert!(matches!(
            Target::parse("sqlite:///tmp/x.db", timeout),
            Ok(Target::SqliteFile { path }) if path == "/tmp/x.db"
        ));
        let err = Target::parse("mysql://root:hunter2@db/x", timeout)
            .err()
            .unwrap();
        assert!(matches!(&err, RepoError::UnsupportedUrl { scheme } if scheme == "mysql"));
        assert!(!err.to_string().contains("hunter2"));
        let err = Target::parse("hunter2@db", timeout).err().unwrap();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }
}
