//! The servers tests run against: PostgreSQL, s3s-fs and moto, each on a free 127.0.0.1 port,
//! stopped again however xtask ends.
//!
//! Tests find them through the environment contract of crates/plugs_test_support/README.md.
//! Tools that take minutes to build (s3s-fs) or download (moto) are installed once into a cache
//! directory and reused; everything a run creates lives in one temporary directory.

use std::env;
use std::fs::{self, File};
use std::io::{self, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs as _};
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, bail};

use crate::process::{self, shell_quote};

/// Credentials both S3 servers accept. They guard nothing: the servers listen on 127.0.0.1 and
/// hold test data only.
pub(crate) const S3_ACCESS_KEY: &str = "plugs-test-access-key";
/// See [`S3_ACCESS_KEY`].
pub(crate) const S3_SECRET_KEY: &str = "plugs-test-secret-key";

/// 0.15 and later need a newer rustc than the workspace's 1.95.
pub(crate) const S3S_FS_VERSION: &str = "0.14.1";
/// Pinned so every machine tests against the same server; `s3crc32c` makes moto label CRC32C
/// checksums correctly.
const MOTO_REQUIREMENT: &str = "moto[server,s3crc32c]==5.2.5";
const LOCAL_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Running test servers and the environment that points tests at them.
pub(crate) struct Services {
    pg_url: String,
    s3s_endpoint: String,
    moto_endpoint: String,
    // Declared last so it is dropped last; it stops the servers.
    guard: Guard,
}

impl Services {
    /// Finds or starts every server and waits until each answers.
    pub(crate) fn start() -> Result<Self> {
        let cache = cache_dir()?;
        let mut guard = Guard::new()?;
        let pg_url = provide_postgres(&mut guard)?;
        let s3s_fs = Server::spawn_s3s_fs(&mut guard, &cache)?;
        let moto = Server::spawn_moto(&mut guard, &cache)?;
        s3s_fs.wait_until_ready(&mut guard)?;
        moto.wait_until_ready(&mut guard)?;
        guard.arm_watchdog();
        Ok(Self {
            pg_url,
            s3s_endpoint: s3s_fs.endpoint(),
            moto_endpoint: moto.endpoint(),
            guard,
        })
    }

    /// A directory for files the run needs, removed with the servers.
    pub(crate) fn scratch_dir(&self) -> &Path {
        self.guard.dir()
    }

    /// The variables to set on test processes.
    pub(crate) fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("PLUGS_TEST_PG_URL", self.pg_url.clone()),
            ("PLUGS_TEST_S3S_ENDPOINT", self.s3s_endpoint.clone()),
            ("PLUGS_TEST_MOTO_ENDPOINT", self.moto_endpoint.clone()),
            ("PLUGS_TEST_S3_ACCESS_KEY", S3_ACCESS_KEY.to_string()),
            ("PLUGS_TEST_S3_SECRET_KEY", S3_SECRET_KEY.to_string()),
        ]
    }
}

/// `cargo xtask services`: servers for a developer's shell, until Ctrl-C or end of input.
pub(crate) fn run_until_stopped() -> Result<()> {
    let services = Services::start()?;
    // Progress went to stderr, so stdout is exactly the lines to paste (or redirect) into a shell.
    for (name, value) in services.env() {
        println!("export {name}={}", shell_quote(&value));
    }
    process::flush();
    eprintln!("services: running; Ctrl-C or end of input (Ctrl-D) stops them");
    // Only the end of input matters; whatever is typed is discarded.
    let _ = io::copy(&mut io::stdin().lock(), &mut io::sink());
    Ok(())
}

/// `$PLUGS_CACHE_DIR`, else `${XDG_CACHE_HOME:-$HOME/.cache}/plugs-media`.
pub(crate) fn cache_dir() -> Result<PathBuf> {
    let set = |name| env::var_os(name).filter(|value| !value.is_empty());
    if let Some(dir) = set("PLUGS_CACHE_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let base = match set("XDG_CACHE_HOME") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(set("HOME").context("neither PLUGS_CACHE_DIR nor HOME is set")?)
            .join(".cache"),
    };
    Ok(base.join("plugs-media"))
}

/// Everything a run started or created, undone on drop: on success, on error and on panic.
///
/// A signal (Ctrl-C, CI cancelling the job) ends xtask without running `Drop`, and std offers
/// no signal handling. So once the servers are up, a watchdog shell in its own session holds
/// the read end of a pipe from xtask: when xtask ends, however it ends, the pipe closes and
/// the watchdog does the same cleanup. On a normal exit `Drop` kills the watchdog first.
pub(crate) struct Guard {
    dir: PathBuf,
    servers: Vec<(String, Child)>,
    cluster: Option<Cluster>,
    watchdog: Option<(Child, ChildStdin)>,
}

/// A throwaway PostgreSQL cluster this run created.
struct Cluster {
    pg_ctl: PathBuf,
    data: PathBuf,
    as_postgres_user: bool,
}

impl Cluster {
    fn pg_ctl(&self) -> Command {
        postgres_tool(&self.pg_ctl, self.as_postgres_user)
    }

    fn stop_command(&self) -> Command {
        let mut command = self.pg_ctl();
        command
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "stop"]);
        command
    }
}

impl Guard {
    /// A fresh temporary directory for data and logs.
    pub(crate) fn new() -> Result<Self> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_nanos();
        let dir = env::temp_dir().join(format!("plugs-xtask-{}-{nanos}", std::process::id()));
        fs::create_dir(&dir).with_context(|| format!("could not create {}", dir.display()))?;
        // PostgreSQL runs as its own user when we are root and must reach its directory below.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))?;
        Ok(Self {
            dir,
            servers: Vec::new(),
            cluster: None,
            watchdog: None,
        })
    }

    /// The run's temporary directory, removed on drop.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    fn log_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.log"))
    }

    /// Starts a server with its output going to `<name>.log` in the temporary directory.
    fn spawn(&mut self, name: &str, command: &mut Command) -> Result<()> {
        let log = File::create(self.log_path(name))?;
        let shown = process::display(command);
        eprintln!("services: starting {name}: {shown}");
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("could not start {name} (`{shown}`)"))?;
        self.servers.push((name.to_string(), child));
        Ok(())
    }

    fn server(&mut self, name: &str) -> Option<&mut Child> {
        self.servers
            .iter_mut()
            .find(|(server, _)| server == name)
            .map(|(_, child)| child)
    }

    /// Hands the cleanup to a watchdog that outlives xtask if a signal kills it. Best effort: if
    /// it cannot start, a normal exit still cleans up through `Drop`.
    pub(crate) fn arm_watchdog(&mut self) {
        self.disarm_watchdog();
        // Hang-ups and interrupts meant for the terminal's jobs must not stop the cleanup.
        let mut script = String::from("trap '' HUP INT\nwhile IFS= read -r _; do :; done\n");
        for (_, child) in &self.servers {
            script.push_str(&format!("kill -KILL {} 2>/dev/null\n", child.id()));
        }
        if let Some(cluster) = &self.cluster {
            script.push_str(&process::display_full(&cluster.stop_command()));
            script.push_str(" >/dev/null 2>&1\n");
        }
        script.push_str(&format!(
            "rm -rf -- {}\n",
            shell_quote(&self.dir.to_string_lossy())
        ));
        let spawned = Command::new("setsid")
            .args(["sh", "-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        match spawned {
            Ok(mut child) => match child.stdin.take() {
                Some(stdin) => self.watchdog = Some((child, stdin)),
                None => {
                    let _ = child.kill();
                    let _ = child.wait();
                }
            },
            Err(err) => eprintln!(
                "services: no watchdog ({err}); if xtask is killed, servers may outlive it"
            ),
        }
    }

    fn disarm_watchdog(&mut self) {
        if let Some((mut child, stdin)) = self.watchdog.take() {
            let _ = child.kill();
            let _ = child.wait();
            drop(stdin);
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.disarm_watchdog();
        let mut stopped = Vec::new();
        for (name, child) in &mut self.servers {
            let _ = child.kill();
            let _ = child.wait();
            stopped.push(name.clone());
        }
        if let Some(cluster) = &self.cluster {
            match process::run_quietly(&mut cluster.stop_command()) {
                Ok(_) => stopped.push("postgres (throwaway cluster)".to_string()),
                Err(err) => eprintln!("services: {err:#}"),
            }
        }
        if let Err(err) = fs::remove_dir_all(&self.dir) {
            eprintln!("services: could not remove {}: {err}", self.dir.display());
        }
        if !stopped.is_empty() {
            eprintln!("services: stopped {}", stopped.join(", "));
        }
    }
}

/// An S3 server we started, not yet known to be ready.
pub(crate) struct Server {
    name: &'static str,
    port: u16,
    timeout: Duration,
}

impl Server {
    /// Starts s3s-fs with its data in the run's temporary directory, installing it first if the
    /// cache lacks it.
    pub(crate) fn spawn_s3s_fs(guard: &mut Guard, cache: &Path) -> Result<Self> {
        let root = cache.join(format!("s3s-fs-{S3S_FS_VERSION}"));
        let binary = root.join("bin").join("s3s-fs");
        if !binary.is_file() {
            eprintln!(
                "services: installing s3s-fs {S3S_FS_VERSION} into {} \
                 (once per cache; about 4 minutes on 2 cores)",
                root.display()
            );
            process::run(
                process::cargo()
                    .args(["install", "s3s-fs", "--version", S3S_FS_VERSION])
                    .args(["--features", "binary", "--locked", "--root"])
                    .arg(&root)
                    .stdout(io::stderr()),
            )
            .context("could not install s3s-fs")?;
        }
        let data = guard.dir().join("s3s-fs-data");
        fs::create_dir(&data)?;
        let port = process::free_port()?;
        guard.spawn(
            "s3s-fs",
            Command::new(&binary)
                .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                .args(["--access-key", S3_ACCESS_KEY, "--secret-key", S3_SECRET_KEY])
                .arg(&data),
        )?;
        Ok(Self {
            name: "s3s-fs",
            port,
            timeout: Duration::from_secs(30),
        })
    }

    /// Starts moto's server, creating its virtualenv first if the cache lacks it.
    fn spawn_moto(guard: &mut Guard, cache: &Path) -> Result<Self> {
        let venv = cache.join("venv");
        let binary = venv.join("bin").join("moto_server");
        if !binary.is_file() {
            install_moto(&venv)?;
        }
        let port = process::free_port()?;
        guard.spawn(
            "moto",
            Command::new(&binary).args(["-H", "127.0.0.1", "-p", &port.to_string()]),
        )?;
        Ok(Self {
            name: "moto",
            port,
            // Importing moto's Python modules takes seconds, more on a busy machine.
            timeout: Duration::from_secs(120),
        })
    }

    /// `http://127.0.0.1:PORT`
    pub(crate) fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Waits until the server answers HTTP; fails with its log if it exits or stays silent.
    pub(crate) fn wait_until_ready(&self, guard: &mut Guard) -> Result<()> {
        let started = Instant::now();
        let log = guard.log_path(self.name);
        loop {
            if answers_http(self.port) {
                eprintln!(
                    "services: {} ready at {} after {:.1?}",
                    self.name,
                    self.endpoint(),
                    started.elapsed()
                );
                return Ok(());
            }
            if let Some(child) = guard.server(self.name)
                && let Some(status) = child.try_wait()?
            {
                bail!(
                    "{} exited before it answered ({status})\n{}",
                    self.name,
                    process::tail(&log, 30)
                );
            }
            if started.elapsed() > self.timeout {
                bail!(
                    "{} did not answer on port {} within {:?}\n{}",
                    self.name,
                    self.port,
                    self.timeout,
                    process::tail(&log, 30)
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
}

fn install_moto(venv: &Path) -> Result<()> {
    eprintln!(
        "services: installing {MOTO_REQUIREMENT} into {} (once per cache; about a minute)",
        venv.display()
    );
    let pip = venv.join("bin").join("pip");
    if !pip.is_file() {
        process::run(
            Command::new("python3")
                .args(["-m", "venv"])
                .arg(venv)
                .stdout(io::stderr()),
        )
        .context(
            "could not create a Python virtualenv (on Debian: apt-get install python3-venv)",
        )?;
    }
    process::run(
        Command::new(&pip)
            .args(["install", "--disable-pip-version-check", MOTO_REQUIREMENT])
            .stdout(io::stderr()),
    )
    .context("could not install moto")
}

/// Whether something on the port answers an HTTP request with an HTTP response, of any status.
fn answers_http(port: u16) -> bool {
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut stream) = TcpStream::connect_timeout(&address, Duration::from_secs(1)) else {
        return false;
    };
    let timeout = Some(Duration::from_secs(5));
    if stream.set_read_timeout(timeout).is_err() || stream.set_write_timeout(timeout).is_err() {
        return false;
    }
    let request = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    let mut status_line_start = [0_u8; 5];
    stream.write_all(request).is_ok()
        && stream.read_exact(&mut status_line_start).is_ok()
        && &status_line_start == b"HTTP/"
}

/// A PostgreSQL server: `DATABASE_URL` if it answers, else one on the usual local port, else a
/// throwaway cluster of our own.
fn provide_postgres(guard: &mut Guard) -> Result<String> {
    if let Some(url) = env::var("DATABASE_URL")
        .ok()
        .filter(|u| u.starts_with("postgres"))
    {
        // The URL may hold a password: only its address is ever printed.
        let address = postgres_address(&url);
        if accepts_tcp(&address) {
            eprintln!("services: postgres from DATABASE_URL at {address}");
            return Ok(url);
        }
        eprintln!("services: DATABASE_URL points at {address}, which does not answer");
    }
    if accepts_tcp("127.0.0.1:5432") {
        eprintln!("services: postgres already running at 127.0.0.1:5432");
        return Ok(LOCAL_POSTGRES_URL.to_string());
    }
    match newest_postgres_bin() {
        Some(bin) => start_cluster(guard, &bin),
        None => bail!(
            "no PostgreSQL answers (DATABASE_URL, 127.0.0.1:5432) and none is installed to \
             start: install PostgreSQL (apt-get install postgresql)"
        ),
    }
}

/// `host:port` of a `postgres://` URL, with the defaults libpq uses.
fn postgres_address(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let host_port = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let has_port = match host_port.rsplit_once(']') {
        Some((_, after_ipv6)) => after_ipv6.starts_with(':'),
        None => host_port.contains(':'),
    };
    match (host_port.is_empty(), has_port) {
        (true, _) => "localhost:5432".to_string(),
        (false, true) => host_port.to_string(),
        (false, false) => format!("{host_port}:5432"),
    }
}

fn accepts_tcp(address: &str) -> bool {
    let Ok(addresses) = address.to_socket_addrs() else {
        return false;
    };
    addresses
        .into_iter()
        .any(|a| TcpStream::connect_timeout(&a, Duration::from_secs(1)).is_ok())
}

/// `/usr/lib/postgresql/<newest>/bin`, if it has `initdb`.
fn newest_postgres_bin() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// A private cluster as shared/TESTING.md describes: about a second to create, no durability
/// (fsync off), stopped with `-m immediate` since its data is thrown away.
fn start_cluster(guard: &mut Guard, bin: &Path) -> Result<String> {
    // initdb refuses to run as root.
    let as_postgres_user = fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    let base = guard.dir().join("pg");
    if as_postgres_user {
        process::run_quietly(
            Command::new("install")
                .args(["-d", "-o", "postgres", "-m", "700"])
                .arg(&base),
        )?;
    } else {
        fs::create_dir(&base)?;
        fs::set_permissions(&base, fs::Permissions::from_mode(0o700))?;
    }
    let data = base.join("data");
    eprintln!(
        "services: creating a throwaway PostgreSQL cluster in {}",
        base.display()
    );
    process::run_quietly(
        postgres_tool(&bin.join("initdb"), as_postgres_user)
            .arg("-D")
            .arg(&data)
            .args(["--auth=trust", "-U", "postgres", "-E", "UTF8"])
            .args(["--no-locale", "--no-sync"]),
    )?;
    let cluster = Cluster {
        pg_ctl: bin.join("pg_ctl"),
        data: data.clone(),
        as_postgres_user,
    };
    let port = process::free_port()?;
    let options = format!(
        "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
        base.display()
    );
    let mut start = cluster.pg_ctl();
    start
        .arg("-D")
        .arg(&data)
        .arg("-l")
        .arg(base.join("log"))
        .args(["-w", "-o", &options, "start"]);
    // Registered before starting, so a half-started server is stopped too.
    guard.cluster = Some(cluster);
    process::run_quietly(&mut start)
        .map_err(|err| anyhow::anyhow!("{err:#}\n{}", process::tail(&base.join("log"), 30)))?;
    eprintln!("services: postgres ready at 127.0.0.1:{port}");
    Ok(format!("postgres://postgres@127.0.0.1:{port}/postgres"))
}

fn postgres_tool(tool: &Path, as_postgres_user: bool) -> Command {
    if as_postgres_user {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(tool);
        command
    } else {
        Command::new(tool)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_address_applies_libpq_defaults() {
        let cases = [
            ("postgres://u:secret@db.example:6543/app", "db.example:6543"),
            ("postgresql://postgres@127.0.0.1/postgres", "127.0.0.1:5432"),
            ("postgres://localhost", "localhost:5432"),
            ("postgres:///app", "localhost:5432"),
            ("postgres://u@[::1]:5433/app?sslmode=disable", "[::1]:5433"),
            ("postgres://[::1]/app", "[::1]:5432"),
        ];
        for (url, expected) in cases {
            assert_eq!(postgres_address(url), expected, "{url}");
        }
    }

    #[test]
    fn answers_http_is_false_when_nothing_listens() {
        let port = process::free_port().unwrap();
        assert!(!answers_http(port));
    }
}
