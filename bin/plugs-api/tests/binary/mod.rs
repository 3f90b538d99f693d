//! The real `plugs-api` binary as a child process, for tests that need what an in-process app
//! cannot give: real sockets (a body that is never sent, a client that hangs up), a process that
//! is killed, the real files and tables behind it. Shared by `hostile.rs` and `faults_e2e.rs`.
#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use sha2::Digest as _;

/// The binary under test.
pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_plugs-api");
/// The HS256 secret the servers are started with, so tests can also sign hostile tokens.
pub(crate) const JWT_SECRET: &str = "binary-tests-secret-0123456789abcdef0123";

/// A running `plugs-api serve`, killed (SIGKILL) when dropped.
pub(crate) struct Server {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub(crate) addr: SocketAddr,
    /// `http://127.0.0.1:PORT`.
    pub(crate) base: String,
    /// The settings it was started with.
    pub(crate) env: Vec<(String, String)>,
    /// Its working directory.
    pub(crate) cwd: PathBuf,
}

impl Server {
    /// Starts the binary with exactly these settings (plus `JWT_SECRET` unless given, and a free
    /// `BIND_ADDR`) and waits until `/healthz` answers.
    pub(crate) fn start(env: &[(String, String)], cwd: &Path) -> Self {
        let server = Self::spawn(env, cwd);
        server.wait_until_up();
        server
    }

    /// Like [`Server::start`], with the server's log (stderr) written to `log` for the test to
    /// read.
    pub(crate) fn start_logging_to(env: &[(String, String)], cwd: &Path, log: &Path) -> Self {
        let file = std::fs::File::create(log).unwrap();
        let server = Self::spawn_with_stderr(env, cwd, Stdio::from(file));
        server.wait_until_up();
        server
    }

    /// Starts the binary without waiting for it.
    pub(crate) fn spawn(env: &[(String, String)], cwd: &Path) -> Self {
        Self::spawn_with_stderr(env, cwd, Stdio::inherit())
    }

    fn spawn_with_stderr(env: &[(String, String)], cwd: &Path, stderr: Stdio) -> Self {
        let port = free_port();
        let mut env = env.to_vec();
        env.retain(|(k, _)| k != "BIND_ADDR");
        env.push(("BIND_ADDR".into(), format!("127.0.0.1:{port}")));
        if !env.iter().any(|(k, _)| k == "JWT_SECRET") {
            env.push(("JWT_SECRET".into(), JWT_SECRET.into()));
        }
        let child = command(&env, cwd)
            .arg("serve")
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            base: format!("http://127.0.0.1:{port}"),
            env,
            cwd: cwd.to_owned(),
        }
    }

    /// Waits until `/healthz` answers 200; fails if the process exits or a minute passes.
    pub(crate) fn wait_until_up(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(response) = try_exchange(self.addr, &get_request("/healthz", None))
                && response.status == 200
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "plugs-api did not come up on {}",
                self.base
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no graceful shutdown, no cleanup, no flushed buffers.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, as an orchestrator stops a server, then waits up to `within` for the process to
    /// exit; its exit status, or `None` if it is still running then (it is SIGKILLed on drop).
    pub(crate) fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -TERM failed");
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Runs another subcommand (`token`, `gc`, ...) with the server's settings.
    pub(crate) fn run(&self, args: &[&str]) -> Output {
        command(&self.env, &self.cwd).args(args).output().unwrap()
    }

    /// `plugs-api token --user USER`: the token alone on stdout.
    pub(crate) fn token(&self, user: &str) -> String {
        let output = self.run(&["token", "--user", user]);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap().trim().to_owned()
    }

    /// `plugs-api gc --apply --grace 0s`, returning its summary; fails if gc fails.
    pub(crate) fn gc_apply_now(&self) -> String {
        let output = self.run(&["gc", "--apply", "--grace", "0s"]);
        assert!(
            output.status.success(),
            "gc failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The binary with a clean environment: only PATH, HOME, RUST_LOG and `env`.
pub(crate) fn command(env: &[(String, String)], cwd: &Path) -> Command {
    let mut command = Command::new(BIN);
    command.env_clear().current_dir(cwd);
    for name in ["PATH", "HOME"] {
        if let Some(value) = std::env::var_os(name) {
            command.env(name, value);
        }
    }
    command.env(
        "RUST_LOG",
        std::env::var("RUST_LOG").unwrap_or_else(|_| "error".into()),
    );
    // No processing workers unless a test asks for them: derived versions would appear in the
    // store (asynchronously) beside the objects the other tests count. tests/processing.rs
    // sets PROCESSING_WORKERS itself.
    if !env.iter().any(|(k, _)| k == "PROCESSING_WORKERS") {
        command.env("PROCESSING_WORKERS", "0");
    }
    command.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    command
}

/// `[("K", "V")]` as owned pairs.
pub(crate) fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A port that was free a moment ago.
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An HTTP/1.1 response read off a raw socket.
#[derive(Debug)]
pub(crate) struct RawResponse {
    /// Status code.
    pub(crate) status: u16,
    /// Header lines as sent (names lower-cased), in order, repeated names kept.
    pub(crate) headers: Vec<(String, String)>,
    /// The raw bytes of the header block, to look for injected lines.
    pub(crate) head: Vec<u8>,
    /// The body (Content-Length bytes, or until the server closed).
    pub(crate) body: Vec<u8>,
}

impl RawResponse {
    /// The first value of a header.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|err| {
            panic!("not JSON ({err}): {}", String::from_utf8_lossy(&self.body))
        })
    }
}

/// `GET path` with `Connection: close` and an optional bearer token.
pub(crate) fn get_request(path: &str, token: Option<&str>) -> Vec<u8> {
    let mut head = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    if let Some(token) = token {
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    head.push_str("\r\n");
    head.into_bytes()
}

/// Sends `request` whole and reads one response.
pub(crate) fn exchange(addr: SocketAddr, request: &[u8]) -> RawResponse {
    try_exchange(addr, request).unwrap()
}

/// Like [`exchange`], but a connection failure is an error rather than a panic.
pub(crate) fn try_exchange(addr: SocketAddr, request: &[u8]) -> std::io::Result<RawResponse> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    stream.write_all(request)?;
    read_response(&mut stream)
}

/// Reads one response: the header block, then `Content-Length` bytes (or to EOF without one).
/// A read timeout (set by the caller) turns a server that never answers into an error.
pub(crate) fn read_response(stream: &mut TcpStream) -> std::io::Result<RawResponse> {
    let mut buffer = Vec::new();
    let mut chunk = [0_u8; 8192];
    let head_end = loop {
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "connection closed before a full response head: {:?}",
                    String::from_utf8_lossy(&buffer)
                ),
            ));
        }
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = buffer[..head_end].to_vec();
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP status line: {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = buffer[head_end..].to_vec();
    let length = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok());
    match length {
        Some(length) => {
            while body.len() < length {
                let n = stream.read(&mut chunk)?;
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..n]);
            }
            body.truncate(length);
        }
        None if status == 304 || status == 204 => {}
        None => {
            let _ = stream.read_to_end(&mut body);
        }
    }
    Ok(RawResponse {
        status,
        headers,
        head,
        body,
    })
}

/// A request head for a POST of `length` body bytes.
pub(crate) fn post_head(path: &str, token: &str, content_type: &str, length: u64) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
         Authorization: Bearer {token}\r\nContent-Type: {content_type}\r\n\
         Content-Length: {length}\r\n\r\n"
    )
    .into_bytes()
}

/// Hex SHA-256 of a file's contents.
pub(crate) fn file_sha256(path: &Path) -> String {
    hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap()))
}

/// Every regular file under `root`, as paths relative to it, sorted. Temporary files a store
/// left behind count: they are orphans too.
pub(crate) fn files_under(root: &Path) -> Vec<String> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, root, out);
            } else {
                out.push(
                    path.strip_prefix(root)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

/// One row of `event_media`, read straight from the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MediaRow {
    /// `pending`, `ready` or `deleting`.
    pub(crate) status: String,
    /// The object key.
    pub(crate) s3_key: String,
    /// The recorded size.
    pub(crate) size_bytes: u64,
}

/// Rows of one query, each as `|`-separated text, through the database's own command-line
/// client (`psql` for a `postgres://` URL, `sqlite3` for a SQLite file), so that a check does
/// not go through the code under test.
pub(crate) fn query(database: &Database, sql: &str) -> Vec<String> {
    let output = match database {
        Database::Postgres(url) => Command::new("psql")
            .args([
                "-X",
                "-A",
                "-t",
                "-F",
                "|",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ])
            .arg(url)
            .output(),
        Database::Sqlite(path) => Command::new("sqlite3")
            .args(["-batch", "-separator", "|"])
            .arg(path)
            .arg(sql)
            .output(),
    }
    .unwrap_or_else(|err| panic!("cannot run the database client for {database:?}: {err}"));
    assert!(
        output.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

/// Every `event_media` row, read straight from the database (see [`query`]).
pub(crate) fn media_rows(database: &Database) -> Vec<MediaRow> {
    query(
        database,
        "SELECT status, s3_key, size_bytes FROM event_media ORDER BY s3_key",
    )
    .iter()
    .map(|line| {
        let mut fields = line.split('|');
        MediaRow {
            status: fields.next().unwrap().to_owned(),
            s3_key: fields.next().unwrap().to_owned(),
            size_bytes: fields.next().unwrap().trim().parse().unwrap(),
        }
    })
    .collect()
}

/// Where a server keeps its records.
#[derive(Debug, Clone)]
pub(crate) enum Database {
    /// A `postgres://` URL.
    Postgres(String),
    /// The embedded default's SQLite file.
    Sqlite(PathBuf),
}

/// Where a server keeps its objects, as files the test can list.
#[derive(Debug, Clone)]
pub(crate) enum StoreDir {
    /// The local store's root (`DATA_DIR/objects`): `objects/KEY`, `meta/KEY`, `tmp/`.
    Local(PathBuf),
}

impl StoreDir {
    /// Every object the store holds, with its size, sorted by key; plus every stray file (a
    /// temporary file, metadata without its object) that counts as an orphan too.
    pub(crate) fn objects(&self) -> (Vec<(String, u64)>, Vec<String>) {
        let sized = |root: &Path, files: Vec<String>| -> Vec<(String, u64)> {
            files
                .into_iter()
                .map(|f| {
                    let size = std::fs::metadata(root.join(&f)).unwrap().len();
                    (f, size)
                })
                .collect()
        };
        match self {
            Self::Local(root) => {
                let objects = files_under(&root.join("objects"));
                let mut stray: Vec<String> = files_under(&root.join("tmp"))
                    .into_iter()
                    .map(|f| format!("tmp/{f}"))
                    .collect();
                stray.extend(
                    files_under(&root.join("meta"))
                        .into_iter()
                        .filter(|f| !objects.contains(f))
                        .map(|f| format!("meta/{f}")),
                );
                (sized(&root.join("objects"), objects), stray)
            }
        }
    }
}

/// The consistency invariant, checked on the store's files and the database's rows directly:
/// every record is `ready` and has its object of the recorded size, and the store holds nothing
/// else: no object without a record, no temporary file.
pub(crate) fn assert_consistent(store: &StoreDir, database: &Database) {
    let (objects, stray) = store.objects();
    assert_consistent_listing(&objects, &stray, database);
}

/// [`assert_consistent`] over a listing taken some other way (an S3 ListObjects).
pub(crate) fn assert_consistent_listing(
    objects: &[(String, u64)],
    stray: &[String],
    database: &Database,
) {
    assert!(stray.is_empty(), "stray files in the store: {stray:?}");
    let rows = media_rows(database);
    let not_ready: Vec<&MediaRow> = rows.iter().filter(|r| r.status != "ready").collect();
    assert!(
        not_ready.is_empty(),
        "dangling records (not ready): {not_ready:?}"
    );
    let orphans: Vec<&(String, u64)> = objects
        .iter()
        .filter(|(key, _)| !rows.iter().any(|r| &r.s3_key == key))
        .collect();
    assert!(
        orphans.is_empty(),
        "orphans (objects no record claims): {orphans:?}"
    );
    for row in &rows {
        let object = objects.iter().find(|(key, _)| *key == row.s3_key);
        assert_eq!(
            object.map(|(_, size)| *size),
            Some(row.size_bytes),
            "dangling record (object missing or of another size): {row:?}"
        );
    }
}
