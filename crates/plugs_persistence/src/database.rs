//! The connection pool over either backend, chosen by URL scheme, and the embedded migrations.

use std::fmt;
use std::time::{Duration, Instant};

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

/// A connection of the pool, with what the pool needs to know to lend it safely without
/// testing it (`SELECT 1`) on every checkout: a round trip of its own before every call.
struct Pooled {
    conn: AnyConnection,
    /// When a call last used it: one idle longer than [`IDLE_CHECK`] is tested before use,
    /// since the server may have closed it meanwhile (a restart, an idle timeout).
    used_at: Instant,
    /// A call failed as if the server had gone: the pool drops it rather than lend it again.
    broken: bool,
}

/// How long a pooled connection may sit idle and still be lent without a test. Under load a
/// connection is lent again within milliseconds and never tested; after a pause (when a
/// server restart may have closed it) it is, and replaced if it does not answer.
const IDLE_CHECK: Duration = Duration::from_secs(1);

impl ManageConnection for Manager {
    type Connection = Pooled;
    type Error = r2d2::Error;

    fn connect(&self) -> Result<Pooled, r2d2::Error> {
        let conn = match &self.target {
            Target::Postgres { url } => PgConnection::establish(url)
                .map(AnyConnection::Postgresql)
                .map_err(r2d2::Error::ConnectionError),
            Target::SqliteFile { path } => self.sqlite(path),
            Target::SqliteMemory => self.sqlite(":memory:"),
        }?;
        Ok(Pooled {
            conn,
            used_at: Instant::now(),
            broken: false,
        })
    }

    fn is_valid(&self, pooled: &mut Pooled) -> Result<(), r2d2::Error> {
        pooled.conn.ping().map_err(r2d2::Error::QueryError)
    }

    fn has_broken(&self, pooled: &mut Pooled) -> bool {
        pooled.broken || pooled.conn.is_broken()
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
    /// [`IDLE_CHECK`], or what a test sets.
    idle_check: Duration,
    /// The types `mark_ready` enqueues a processing job for (see [`Database::with_processable`]).
    pub(crate) processable: std::sync::Arc<plugs_domain::ProcessableTypes>,
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
    ///
    /// Further connections are opened only when a caller is waiting for one, never ahead of
    /// demand in the background: a process that exits (a one-shot command such as `migrate`)
    /// then has no connection being established on the pool's thread while the C libraries
    /// clean up at exit, which crashed the process with SIGSEGV inside libpq's OpenSSL.
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
            // No spare connection opened in the background after each checkout (see above);
            // idle connections are kept until `idle_timeout` (10 minutes) as before, so after
            // a quiet spell that long the next call pays for connecting.
            .min_idle(Some(0))
            // `with_connection` tests a connection only after it sat idle (`IDLE_CHECK`).
            .test_on_check_out(false)
            .connection_timeout(options.connect_timeout);
        if in_memory {
            // The one connection *is* the database: never let the pool close it.
            builder = builder.idle_timeout(None).max_lifetime(None);
        }
        let pool = builder.build(manager).map_err(unavailable)?;
        // The first connection, established now (and kept idle in the pool): with no idle
        // minimum, `build` waited for none.
        drop(pool.get().map_err(unavailable)?);
        tracing::debug!(?backend, "database pool ready");
        Ok(Self {
            pool,
            backend,
            timeout: options.connect_timeout,
            idle_check: IDLE_CHECK,
            processable: std::sync::Arc::default(),
        })
    }

    /// The same pool, enqueueing processing jobs for the media of these types (by default the
    /// built-in still images only): what a deployment's workers can decode, which depends on
    /// the external decoders it has. Every process sharing the database should agree.
    #[must_use]
    pub fn with_processable(mut self, types: plugs_domain::ProcessableTypes) -> Self {
        self.processable = std::sync::Arc::new(types);
        self
    }

    /// The same pool, testing a connection before a call once it sat idle for `idle_check`
    /// ([`IDLE_CHECK`] otherwise): tests pin what a call sends with a long one, and the test
    /// itself with none.
    #[cfg(test)]
    pub(crate) fn with_idle_check(mut self, idle_check: Duration) -> Self {
        self.idle_check = idle_check;
        self
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
        let (timeout, idle_check) = (self.timeout, self.idle_check);
        // A server that closes sessions (PostgreSQL) can leave a pooled connection dead; a
        // SQLite connection is a file handle (and, in memory, the database itself).
        let may_die = self.backend == Backend::Postgres;
        let task = tokio::task::spawn_blocking(move || {
            let mut conn = checkout(&pool, timeout, idle_check, may_die)?;
            let result = work(&mut conn.conn);
            conn.used_at = Instant::now();
            if may_die && matches!(result, Err(RepoError::Unavailable { .. })) {
                conn.broken = true;
            }
            result
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

/// A connection from the pool, tested first if it sat idle longer than `idle_check`; one that
/// does not answer is dropped and the next tried (the pool opens a fresh one when none is left).
fn checkout(
    pool: &Pool<Manager>,
    timeout: Duration,
    idle_check: Duration,
    may_die: bool,
) -> Result<PooledConnection<Manager>, RepoError> {
    let mut attempts = pool.max_size() + 1;
    loop {
        let mut conn = pool.get_timeout(timeout).map_err(unavailable)?;
        if conn.used_at.elapsed() < idle_check {
            return Ok(conn);
        }
        match conn.conn.ping() {
            Ok(()) => return Ok(conn),
            Err(error) => {
                attempts -= 1;
                if !may_die || attempts == 0 {
                    return Err(crate::diesel_repo::db_error(error));
                }
                conn.broken = true;
            }
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

    /// A one-shot command (`plugs-api migrate`) connects, makes its calls and exits. The pool
    /// must not be opening another connection on its own thread meanwhile: with an idle
    /// minimum of one it did after every checkout that emptied it, and the process crashed
    /// (SIGSEGV in libpq's OpenSSL, cleaned up at exit under that thread) about one exit in
    /// four. Calls one at a time use the one connection `connect` opened, and nothing more.
    #[tokio::test]
    async fn calls_one_at_a_time_open_no_connection_in_the_background() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("plugs.db").display());
        let database = Database::connect(&url, DatabaseOptions::default()).unwrap();
        assert_eq!(database.pool.state().connections, 1);
        database.run_migrations().await.unwrap();
        for _ in 0..3 {
            database.with_connection(|_| Ok(())).await.unwrap();
        }
        // A background connection would have been asked for at the first checkout; give the
        // pool's thread ample time to have opened it.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let state = database.pool.state();
        assert_eq!(
            (state.connections, state.idle_connections),
            (1, 1),
            "the pool opened connections nobody waited for"
        );
    }
}
