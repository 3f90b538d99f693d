//! The tools `cargo xtask bench api` drives: a plugs-api server process whose memory it reads from
//! /proc, curl for single big transfers (it streams a file from disk and discards what it
//! downloads, so the client never holds an object), and wrk for many small requests.
//!
//! xtask itself stays std + anyhow + serde_json: every byte on the wire is sent by a C tool, so a
//! debug build of xtask cannot be what limits a figure.

use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use serde_json::Value;

use crate::process;

/// Settings plugs-api reads from the environment (bin/plugs-api/src/config.rs `ENV_NAMES`, plus
/// its config-file and log variables). The bench clears them all before setting its own, so a
/// developer's shell cannot point the measured server somewhere else.
const API_ENV_NAMES: &[&str] = &[
    "BIND_ADDR",
    "DATA_DIR",
    "DATABASE_URL",
    "S3_BUCKET_NAME",
    "S3_REGION",
    "S3_USE_IAM_ROLE",
    "S3_ENDPOINT_URL",
    "S3_FORCE_PATH_STYLE",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "MAX_FILE_SIZE",
    "JWT_SECRET",
    "JWT_PUBLIC_KEY_PEM",
    "PRESIGN_TTL",
    "CDN_BASE_URL",
    "PUBLIC_BASE_URL",
    "GC_INTERVAL",
    "GC_GRACE",
    "LOG_FORMAT",
    "S3_SSE",
    "S3_SSE_KMS_KEY_ID",
    "ALLOWED_TYPES",
    "PLUGS_CONFIG",
    "RUST_LOG",
];

/// A plugs-api binary and the settings every process of one bench run shares.
#[derive(Debug, Clone)]
pub(crate) struct Api {
    pub(crate) binary: PathBuf,
    pub(crate) env: Vec<(String, String)>,
    /// Working directory (so no developer's `.env` is read) and home of the server logs.
    pub(crate) dir: PathBuf,
}

impl Api {
    fn command(&self) -> Command {
        let mut command = Command::new(&self.binary);
        for name in API_ENV_NAMES {
            command.env_remove(name);
        }
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        command.current_dir(&self.dir);
        command
    }

    /// `plugs-api token --user USER`: a bearer token the servers of this run accept.
    pub(crate) fn token(&self, user: &str) -> Result<String> {
        let output = process::run_quietly(
            self.command()
                .args(["token", "--user", user, "--ttl", "12h"]),
        )?;
        let token = String::from_utf8_lossy(&output.stdout).trim().to_string();
        ensure!(!token.is_empty(), "plugs-api token printed nothing");
        Ok(token)
    }

    /// A fresh server process, answering `/healthz`. A fresh process per measurement is what makes
    /// its high-water mark (VmHWM, which only ever rises) the peak of that one measurement.
    pub(crate) fn start(&self) -> Result<ApiServer> {
        let port = process::free_port()?;
        let log_path = self.dir.join("plugs-api.log");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        let mut command = self.command();
        command
            .args(["--bind-addr", &format!("127.0.0.1:{port}"), "serve"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = command
            .spawn()
            .with_context(|| format!("could not start {}", self.binary.display()))?;
        let mut server = ApiServer {
            child,
            port,
            log: log_path,
        };
        server.wait_until_healthy(Duration::from_secs(60))?;
        Ok(server)
    }
}

/// A running plugs-api, killed on drop.
pub(crate) struct ApiServer {
    child: Child,
    port: u16,
    log: PathBuf,
}

/// The kernel's view of a process's memory, in KiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Memory {
    /// Resident now.
    pub(crate) rss_kib: u64,
    /// Highest resident since the process started.
    pub(crate) hwm_kib: u64,
}

impl ApiServer {
    /// `http://127.0.0.1:PORT`
    pub(crate) fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn wait_until_healthy(&mut self, timeout: Duration) -> Result<()> {
        let started = Instant::now();
        loop {
            if get_status(self.port, "/healthz") == Some(200) {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "plugs-api exited before it answered ({status})\n{}",
                    process::tail(&self.log, 30)
                );
            }
            if started.elapsed() > timeout {
                bail!(
                    "plugs-api did not answer /healthz within {timeout:?}\n{}",
                    process::tail(&self.log, 30)
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server's CPU time so far, user and system, in seconds (`utime + stime` of
    /// /proc/PID/stat): the difference of two readings is what the server spent between them.
    pub(crate) fn cpu_seconds(&self) -> Result<f64> {
        let path = format!("/proc/{}/stat", self.child.id());
        let stat = fs::read_to_string(&path).with_context(|| format!("could not read {path}"))?;
        let ticks = parse_cpu_ticks(&stat).with_context(|| format!("{path} has no utime/stime"))?;
        Ok(ticks as f64 / clock_ticks_per_second())
    }

    /// VmRSS and VmHWM of the server process.
    pub(crate) fn memory(&self) -> Result<Memory> {
        let path = format!("/proc/{}/status", self.child.id());
        let status = fs::read_to_string(&path).with_context(|| format!("could not read {path}"))?;
        parse_memory(&status).with_context(|| format!("{path} has no VmRSS/VmHWM"))
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn parse_memory(status: &str) -> Option<Memory> {
    let field = |name: &str| {
        status.lines().find_map(|line| {
            let rest = line.strip_prefix(name)?.strip_prefix(':')?;
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
    };
    Some(Memory {
        rss_kib: field("VmRSS")?,
        hwm_kib: field("VmHWM")?,
    })
}

/// `utime + stime` in clock ticks from the text of /proc/PID/stat. Fields are counted after the
/// last `)`, since the command name in parentheses may itself hold spaces and parentheses.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let (_, after_name) = stat.rsplit_once(')')?;
    // After the name: state is field 3, utime field 14 and stime field 15.
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// `getconf CLK_TCK`, the unit of /proc's CPU times (100 on Linux unless configured otherwise).
fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| {
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse::<f64>()
                .ok()
        })
        .filter(|ticks| *ticks > 0.0)
        .unwrap_or(100.0)
}

/// The status code of a plain GET, or `None` if nothing answers.
fn get_status(port: u16, path: &str) -> Option<u16> {
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut head = [0_u8; 12];
    stream.read_exact(&mut head).ok()?;
    let head = std::str::from_utf8(&head).ok()?;
    head.strip_prefix("HTTP/1.1 ")?.trim().parse().ok()
}

/// What curl reports about one transfer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Transfer {
    pub(crate) status: u16,
    pub(crate) seconds: f64,
    pub(crate) bytes_up: u64,
    pub(crate) bytes_down: u64,
}

const CURL_WRITE_OUT: &str = "\n%{http_code} %{time_total} %{size_upload} %{size_download}";

fn curl() -> Command {
    let mut command = Command::new("curl");
    command.args(["-sS", "-w", CURL_WRITE_OUT]);
    command
}

/// `curl -F file=@PATH` to the upload route: multipart, streamed from disk. The response body
/// goes to `response`.
pub(crate) fn upload_command(
    url: &str,
    token: &str,
    file: &Path,
    filename: &str,
    content_type: &str,
    response: &Path,
) -> Command {
    upload_command_declaring(url, token, file, filename, content_type, response, None)
}

/// [`upload_command`] that also sends the form field `size` (the file's length) before the file
/// when `declared_size` is given, as a client that knows the length does.
pub(crate) fn upload_command_declaring(
    url: &str,
    token: &str,
    file: &Path,
    filename: &str,
    content_type: &str,
    response: &Path,
    declared_size: Option<u64>,
) -> Command {
    let mut command = curl();
    command
        .args(["-H", &format!("Authorization: Bearer {token}")])
        // No `Expect: 100-continue` round trip before the body: curl waits up to a second for
        // the interim answer, which would be a cost of the client, not of the server. (Not on the
        // S3 requests: curl's SigV4 would sign the header it then drops.)
        .args(["-H", "Expect:"]);
    if let Some(size) = declared_size {
        command.arg("-F").arg(format!("size={size}"));
    }
    command
        .arg("-F")
        .arg(format!(
            "file=@{};type={content_type};filename={filename}",
            file.display()
        ))
        .arg("-o")
        .arg(response)
        .arg(url);
    command
}

/// `curl URL -o /dev/null` with the token.
pub(crate) fn download_command(url: &str, token: &str) -> Command {
    let mut command = curl();
    command
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args(["-o", "/dev/null", url]);
    command
}

/// Signs a request to the S3 server with curl's own SigV4. The payload is declared unsigned, so
/// curl never hashes the body: the reference pays for nothing but moving the bytes.
pub(crate) fn s3_command(access_key: &str, secret_key: &str) -> Command {
    let mut command = curl();
    command
        .args(["--aws-sigv4", "aws:amz:us-east-1:s3"])
        .args(["--user", &format!("{access_key}:{secret_key}")])
        .args(["-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD"])
        .args(["-o", "/dev/null"]);
    command
}

/// Runs a curl command and reads its `-w` line.
pub(crate) fn run_transfer(command: &mut Command) -> Result<Transfer> {
    let output = process::run_quietly(command)?;
    transfer_of(&output, command)
}

/// Runs curl commands all at once and waits for all of them.
pub(crate) fn run_transfers_concurrently(commands: &mut [Command]) -> Result<Vec<Transfer>> {
    let children = commands
        .iter_mut()
        .map(|command| {
            command
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .with_context(|| format!("could not start `{}`", process::display(command)))
        })
        .collect::<Result<Vec<_>>>()?;
    let outputs = children
        .into_iter()
        .map(|child| child.wait_with_output().map_err(anyhow::Error::from))
        .collect::<Result<Vec<_>>>()?;
    outputs
        .iter()
        .zip(commands.iter())
        .map(|(output, command)| {
            ensure!(
                output.status.success(),
                "`{}` failed ({}): {}",
                process::display(command),
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
            transfer_of(output, command)
        })
        .collect()
}

fn transfer_of(output: &Output, command: &Command) -> Result<Transfer> {
    let text = String::from_utf8_lossy(&output.stdout);
    parse_transfer(&text).with_context(|| {
        format!(
            "`{}` printed `{text}`, not curl's -w line",
            process::display(command)
        )
    })
}

fn parse_transfer(text: &str) -> Option<Transfer> {
    let mut words = text.split_whitespace().rev().take(4).collect::<Vec<_>>();
    words.reverse();
    let [status, seconds, up, down] = words.as_slice() else {
        return None;
    };
    // curl prints sizes as integers, but older versions print them as `123.000`.
    let size = |word: &str| word.parse::<f64>().ok().map(|v| v as u64);
    Some(Transfer {
        status: status.parse().ok()?,
        seconds: seconds.parse().ok()?,
        bytes_up: size(up)?,
        bytes_down: size(down)?,
    })
}

/// A JSON request with curl; the status and the parsed body (`null` when empty).
pub(crate) fn json_request(
    method: &str,
    url: &str,
    token: &str,
    body: Option<&str>,
) -> Result<(u16, Value)> {
    let mut command = Command::new("curl");
    command
        .args(["-sS", "-X", method, "-w", "\n%{http_code}"])
        .args(["-H", &format!("Authorization: Bearer {token}")]);
    if let Some(body) = body {
        command
            .args(["-H", "Content-Type: application/json"])
            .args(["--data-binary", body]);
    }
    command.arg(url);
    let output = process::run_quietly(&mut command)?;
    let text = String::from_utf8_lossy(&output.stdout);
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    let status: u16 = status
        .trim()
        .parse()
        .with_context(|| format!("curl {method} {url}: no status in `{text}`"))?;
    let value = if body.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(body).with_context(|| format!("{method} {url} answered `{body}`"))?
    };
    Ok((status, value))
}

/// A file of `size` bytes: a valid 1x1 PNG, then random bytes, so the upload passes content
/// sniffing and no layer can compress or deduplicate it.
pub(crate) fn write_png_file(path: &Path, size: u64) -> Result<()> {
    let mut random = File::open("/dev/urandom").context("could not open /dev/urandom")?;
    let mut file = File::create(path)?;
    file.write_all(PNG)?;
    let mut left = size.saturating_sub(PNG.len() as u64);
    let mut chunk = vec![0_u8; 1 << 20];
    while left > 0 {
        let n = usize::try_from(left.min(chunk.len() as u64))?;
        random.read_exact(&mut chunk[..n])?;
        file.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    file.sync_all()?;
    Ok(())
}

/// A complete, valid 1x1 RGB PNG.
pub(crate) const PNG: &[u8] = b"\x89\x50\x4e\x47\x0d\x0a\x1a\x0a\x00\x00\x00\x0d\x49\x48\x44\x52\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00\x90\x77\x53\xde\x00\x00\x00\x0c\x49\x44\x41\x54\x78\x9c\x63\xf8\xcf\xc0\x00\x00\x03\x01\x01\x00\xc9\xfe\x92\xef\x00\x00\x00\x00\x49\x45\x4e\x44\xae\x42\x60\x82";

/// `wrk`, installed with apt-get when missing and we may (root on Debian).
pub(crate) fn find_or_install_wrk() -> Result<PathBuf> {
    find_or_install("wrk", "wrk", "the load generator wrk")
}

/// The command `program`, installed with apt-get from `package` when missing and we may (root
/// on Debian); `what` names it in messages.
pub(crate) fn find_or_install(program: &str, package: &str, what: &str) -> Result<PathBuf> {
    let found = || {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(program))
                .find(|path| path.is_file())
        })
    };
    if let Some(path) = found() {
        return Ok(path);
    }
    let root = fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
    });
    ensure!(
        root && Path::new("/usr/bin/apt-get").is_file(),
        "{what} is not installed: apt-get install {package}"
    );
    eprintln!("xtask: installing {what} with apt-get (once per machine)");
    let install = || {
        process::run_quietly(
            Command::new("apt-get")
                .args(["install", "-y", "-qq", package])
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )
    };
    if install().is_err() {
        // A fresh machine's package lists may be missing or stale.
        process::run_quietly(Command::new("apt-get").args(["update", "-qq"]))?;
        install().with_context(|| format!("could not install {package}"))?;
    }
    found().with_context(|| format!("apt-get installed {package} but {program} is not on PATH"))
}

/// One request of a wrk script.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Request {
    /// A GET of a path, with the bearer token.
    Get(String),
    /// A GET of a path without any token.
    GetAnonymous(String),
    /// A multipart upload of a PNG of this many bytes to a path.
    Upload(String, u64),
}

const BOUNDARY: &str = "plugs-bench-boundary-5f2a91";

/// A wrk Lua script sending `requests` in turn on every connection, and printing its summary as
/// one JSON line at the end (wrk's text report is meant for eyes, not parsers).
pub(crate) fn wrk_script(token: &str, requests: &[Request]) -> String {
    let mut lua = String::new();
    let png: String = PNG.iter().map(|b| format!("\\{b:03}")).collect();
    let _ = writeln!(lua, "local png = \"{png}\"");
    let _ = writeln!(lua, "local token = \"Bearer {token}\"");
    lua.push_str(
        "local function upload_body(size)\n\
         \x20 return \"--BOUNDARY\\r\\nContent-Disposition: form-data; name=\\\"file\\\"; \
         filename=\\\"small.png\\\"\\r\\nContent-Type: image/png\\r\\n\\r\\n\" .. png .. \
         string.rep(\"x\", size - #png) .. \"\\r\\n--BOUNDARY--\\r\\n\"\n\
         end\n\
         local requests = {}\n\
         local next_request = 1\n\
         init = function(args)\n",
    );
    let lua_string = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
    for request in requests {
        let line = match request {
            Request::Get(path) => format!(
                "wrk.format(\"GET\", {}, {{[\"Authorization\"] = token}})",
                lua_string(path)
            ),
            Request::GetAnonymous(path) => format!("wrk.format(\"GET\", {})", lua_string(path)),
            Request::Upload(path, size) => format!(
                "wrk.format(\"POST\", {}, {{[\"Authorization\"] = token, \
                 [\"Content-Type\"] = \"multipart/form-data; boundary=BOUNDARY\"}}, \
                 upload_body({}))",
                lua_string(path),
                (*size).max(PNG.len() as u64)
            ),
        };
        let _ = writeln!(lua, "  table.insert(requests, {line})");
    }
    lua.push_str(
        "end\n\
         request = function()\n\
         \x20 local r = requests[next_request]\n\
         \x20 next_request = next_request % #requests + 1\n\
         \x20 return r\n\
         end\n\
         done = function(summary, latency, requests)\n\
         \x20 local e = summary.errors\n\
         \x20 io.write(string.format('{\"requests\":%d,\"duration_us\":%d,\"status_errors\":%d,\
         \"socket_errors\":%d,\"p50_us\":%d,\"p99_us\":%d}\\n', summary.requests, summary.duration, \
         e.status, e.connect + e.read + e.write + e.timeout, latency:percentile(50), \
         latency:percentile(99)))\n\
         end\n",
    );
    lua.replace("BOUNDARY", BOUNDARY)
}

/// What one wrk run measured.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(crate) struct Load {
    pub(crate) requests: u64,
    pub(crate) seconds: f64,
    /// Responses with a status of 400 or more.
    pub(crate) status_errors: u64,
    /// Connect, read, write errors and timeouts.
    pub(crate) socket_errors: u64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
}

impl Load {
    pub(crate) fn per_second(&self) -> f64 {
        if self.seconds > 0.0 {
            self.requests as f64 / self.seconds
        } else {
            0.0
        }
    }
}

/// Runs wrk with a script from [`wrk_script`] against `base_url` for `seconds`.
pub(crate) fn run_wrk(
    wrk: &Path,
    script: &Path,
    base_url: &str,
    connections: u32,
    seconds: u32,
) -> Result<Load> {
    let threads = connections.clamp(1, 2);
    let output = process::run_quietly(
        Command::new(wrk)
            .args(["-t", &threads.to_string(), "-c", &connections.to_string()])
            .args(["-d", &format!("{seconds}s"), "--timeout", "30s", "-s"])
            .arg(script)
            .arg(base_url),
    )?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .with_context(|| format!("wrk printed no summary:\n{stdout}"))?;
    parse_load(line).with_context(|| format!("wrk printed `{line}`"))
}

fn parse_load(line: &str) -> Result<Load> {
    let json: Value = serde_json::from_str(line)?;
    let int = |field: &str| {
        json[field]
            .as_u64()
            .with_context(|| format!("no `{field}`"))
    };
    Ok(Load {
        requests: int("requests")?,
        seconds: int("duration_us")? as f64 / 1e6,
        status_errors: int("status_errors")?,
        socket_errors: int("socket_errors")?,
        p50_ms: int("p50_us")? as f64 / 1e3,
        p99_ms: int("p99_us")? as f64 / 1e3,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_status_memory_fields_parse() {
        let status =
            "Name:\tplugs-api\nVmPeak:\t  900 kB\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\n";
        assert_eq!(
            parse_memory(status),
            Some(Memory {
                rss_kib: 10240,
                hwm_kib: 20480
            })
        );
        assert_eq!(parse_memory("Name:\tx\n"), None);
    }

    #[test]
    fn proc_stat_cpu_ticks_are_utime_plus_stime() {
        // A command name with a space and a parenthesis, as /proc prints it.
        let stat = "4242 (plugs api) x) S 1 4242 4242 0 -1 4194304 900 0 0 0 250 37 0 0 20 0 9 0";
        assert_eq!(parse_cpu_ticks(stat), Some(287));
        assert_eq!(parse_cpu_ticks("4242 (short) S 1"), None);
    }

    #[test]
    fn curl_write_out_line_parses_after_a_body() {
        let text = "{\"id\":1}\n201 1.250000 268435712 512";
        assert_eq!(
            parse_transfer(text),
            Some(Transfer {
                status: 201,
                seconds: 1.25,
                bytes_up: 268_435_712,
                bytes_down: 512
            })
        );
        assert_eq!(parse_transfer("nonsense"), None);
    }

    #[test]
    fn wrk_summary_line_parses() {
        let load = parse_load(
            r#"{"requests":3000,"duration_us":2000000,"status_errors":1,"socket_errors":0,"p50_us":1500,"p99_us":9000}"#,
        )
        .unwrap();
        assert_eq!(load.requests, 3000);
        assert_eq!(load.per_second(), 1500.0);
        assert_eq!(load.p99_ms, 9.0);
        assert_eq!(load.status_errors, 1);
    }

    #[test]
    fn wrk_script_escapes_bytes_and_sends_each_request() {
        let script = wrk_script(
            "tok",
            &[
                Request::Get("/a?limit=50".to_string()),
                Request::GetAnonymous("/healthz".to_string()),
                Request::Upload("/up".to_string(), 1024),
            ],
        );
        // Three-digit decimal escapes, so a following digit cannot extend one.
        assert!(script.contains("\\137\\080\\078\\071"), "{script}");
        assert!(
            script.contains("wrk.format(\"GET\", \"/a?limit=50\", {[\"Authorization\"] = token})")
        );
        assert!(script.contains("wrk.format(\"GET\", \"/healthz\")"));
        assert!(script.contains("upload_body(1024)"));
        assert!(script.contains(&format!("boundary={BOUNDARY}")));
        assert!(!script.contains("BOUNDARY"));
    }
}
