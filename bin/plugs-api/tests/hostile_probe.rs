//! What an attacker's probe of the running binary found (issue 10), one test per finding, against
//! the real binary on its embedded default (SQLite + local directory) in a temporary `DATA_DIR`:
//! metric series grown by made-up methods, a readiness probe that walked the whole store,
//! signatures in the log, files readable by every local user, and cursors past the year 9999.
//! The token findings are in `auth.rs`. Rows of the hostile-input table in docs/RELIABILITY.md.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod binary;
mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use binary::{RawResponse, Server, exchange, free_port, get_request, pairs};
use common::{PNG, Part, multipart, multipart_content_type};
use serde_json::Value;

struct Fixture {
    server: Server,
    data: PathBuf,
    log: PathBuf,
    alice: String,
    event: String,
    _dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        Self::with_env(&[])
    }

    /// A server with these settings besides `DATA_DIR`, its log (at `RUST_LOG`, or `debug`
    /// when the settings do not say) written to a file; alice owns one event.
    fn with_env(extra: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let log = dir.path().join("server.log");
        let mut env = pairs(&[("DATA_DIR", data.to_str().unwrap()), ("RUST_LOG", "debug")]);
        for (name, value) in pairs(extra) {
            env.retain(|(k, _)| *k != name);
            env.push((name, value));
        }
        let server = Server::start_logging_to(&env, dir.path(), &log);
        let alice = server.token("alice");
        let response = request(
            &server,
            "POST",
            "/api/v1/events",
            Some(&alice),
            Some(("application/json", br#"{"title":"Probe"}"#)),
        );
        assert_eq!(response.status, 201);
        let event = response.json()["id"].as_str().unwrap().to_owned();
        Self {
            server,
            data,
            log,
            alice,
            event,
            _dir: dir,
        }
    }

    fn media_path(&self) -> String {
        format!("/api/v1/events/{}/media", self.event)
    }

    fn upload_png(&self) -> Value {
        let body = multipart(&[Part::File("file", "a.png", Some("image/png"), PNG)]);
        let response = request(
            &self.server,
            "POST",
            &self.media_path(),
            Some(&self.alice),
            Some((&multipart_content_type(), &body)),
        );
        assert_eq!(
            response.status,
            201,
            "{}",
            String::from_utf8_lossy(&response.body)
        );
        response.json()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap()
    }
}

/// One request with any method, `Connection: close`, an optional token and body.
fn request(
    server: &Server,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<(&str, &[u8])>,
) -> RawResponse {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    if let Some(token) = token {
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    let body = body.map_or(&[][..], |(content_type, bytes)| {
        head.push_str(&format!("Content-Type: {content_type}\r\n"));
        bytes
    });
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut raw = head.into_bytes();
    raw.extend_from_slice(body);
    exchange(server.addr, &raw)
}

fn get(server: &Server, path: &str, token: Option<&str>) -> RawResponse {
    exchange(server.addr, &get_request(path, token))
}

#[track_caller]
fn assert_problem(response: &RawResponse, status: u16) {
    assert_eq!(
        response.status,
        status,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    assert_eq!(
        response.header("content-type"),
        Some("application/problem+json")
    );
}

/// A small deterministic generator (xorshift), so a failure can be replayed.
struct Letters(u64);

impl Letters {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn word(&mut self, len: usize) -> String {
        (0..len)
            .map(|_| char::from(b'A' + (self.next() % 26) as u8))
            .collect()
    }
}

/// The sample lines of a Prometheus text exposition: one per series.
fn series(text: &str) -> Vec<String> {
    text.lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            line.rsplit_once(' ')
                .map_or(line, |(name, _)| name)
                .to_owned()
        })
        .collect()
}

#[test]
fn made_up_methods_and_paths_add_no_metric_series() {
    let f = Fixture::with_env(&[("RUST_LOG", "error")]);
    let mut letters = Letters(0x5eed_1234_abcd_0001);
    let uuid = uuid::Uuid::new_v4();
    // One request of each shape first, so that the series the shapes map to exist.
    let shapes = |method: &str, word: &str| {
        vec![
            (method.to_owned(), "/healthz".to_owned()),
            (method.to_owned(), format!("/{word}")),
            (method.to_owned(), format!("/api/v1/{word}")),
            (method.to_owned(), format!("/api/v1/events/{uuid}/{word}")),
            ("GET".to_owned(), format!("/{word}/{word}")),
            ("GET".to_owned(), format!("/api/v1/events/{uuid}")),
        ]
    };
    for (method, path) in shapes("XWARMUP", "warm") {
        request(&f.server, &method, &path, None, None);
    }
    let before = get(&f.server, "/metrics", None);
    assert_eq!(before.status, 200);
    let before = String::from_utf8(before.body).unwrap();
    let _ = get(&f.server, "/metrics", None);
    let baseline = series(&String::from_utf8(get(&f.server, "/metrics", None).body).unwrap());

    // A thousand made-up methods (60 letters, and a few of 20 000) on made-up paths.
    for i in 0..1000 {
        let len = if i % 250 == 0 { 20_000 } else { 60 };
        let method = format!("X{}", letters.word(len));
        let word = letters.word(12);
        let (method, path) = shapes(&method, &word).swap_remove(i % 6);
        let response = request(&f.server, &method, &path, None, None);
        assert!(
            (400..500).contains(&response.status),
            "{method:.20} {path}: {}",
            response.status
        );
    }

    let after = String::from_utf8(get(&f.server, "/metrics", None).body).unwrap();
    let after_series = series(&after);
    let grown: Vec<&String> = after_series
        .iter()
        .filter(|s| !baseline.contains(s))
        .collect();
    assert!(grown.is_empty(), "new series: {grown:#?}");
    assert_eq!(after_series.len(), baseline.len());
    assert!(
        after.len() < before.len() + 4096,
        "/metrics grew from {} to {} bytes",
        before.len(),
        after.len()
    );
    assert!(
        after.contains(r#"method="other",route="/healthz",status="404""#),
        "{after}"
    );
    assert!(after.contains(r#"route="unmatched",status="404""#));
}

#[test]
fn metrics_can_be_served_on_their_own_address() {
    let port = free_port();
    let f = Fixture::with_env(&[("METRICS_BIND_ADDR", &format!("127.0.0.1:{port}"))]);
    // Off the main listener, which answers as for any unknown route.
    assert_problem(&get(&f.server, "/metrics", None), 404);
    let metrics_addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let response = exchange(metrics_addr, &get_request("/metrics", None));
    assert_eq!(response.status, 200);
    let text = String::from_utf8(response.body).unwrap();
    assert!(
        text.contains(
            r#"plugs_http_requests_total{method="POST",route="/api/v1/events",status="201"} 1"#
        ),
        "{text}"
    );
    // Only the metrics there: the API is not reachable through the scrape address.
    assert_eq!(
        exchange(metrics_addr, &get_request("/api/v1/events", Some(&f.alice))).status,
        404
    );
}

/// User plus system CPU time the process has used, from `/proc/PID/stat` (clock ticks of 10 ms).
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    // After the command name: state is field 3, utime 14, stime 15.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

/// Writes `count` objects straight into the local store's directory, as many uploads would have.
fn fill_store(objects: &Path, event: &str, count: usize) {
    for dir in 0..count.div_ceil(500) {
        let path = objects.join(format!(
            "objects/events/{event}/media/2026/01/{:02}",
            dir % 28 + 1
        ));
        let path = path.join(format!("{dir:04}"));
        std::fs::create_dir_all(&path).unwrap();
        for file in 0..500.min(count - dir * 500) {
            std::fs::write(path.join(format!("000000_{file:06}.png")), b"x").unwrap();
        }
    }
}

#[test]
fn readiness_does_not_grow_with_the_store() {
    let f = Fixture::with_env(&[("RUST_LOG", "error")]);
    fill_store(&f.data.join("objects"), &f.event, 40_000);
    // Probes a second apart, so that each one checks rather than answering from the cache.
    let before = cpu_time(f.server.pid());
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(1100));
        let response = get(&f.server, "/readyz", None);
        assert_eq!(response.status, 200);
    }
    let checked = cpu_time(f.server.pid()) - before;
    // Listing a store of 40 000 objects cost about 60 ms of CPU a probe; a look at one key or
    // directory costs well under a millisecond, whatever the store holds.
    assert!(
        checked < Duration::from_millis(120),
        "4 readiness probes cost {checked:?} of CPU"
    );

    // Under load, probes share one answer a second.
    let before = cpu_time(f.server.pid());
    for _ in 0..200 {
        assert_eq!(get(&f.server, "/readyz", None).status, 200);
    }
    let burst = cpu_time(f.server.pid()) - before;
    assert!(
        burst < Duration::from_millis(400),
        "200 readiness probes cost {burst:?} of CPU"
    );
}

/// The value of `name` in a URL's query string.
fn query_value(url: &str, name: &str) -> String {
    let query = url.split_once('?').unwrap().1;
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .unwrap()
        .1
        .into_owned()
}

#[test]
fn presigned_signatures_and_refused_tokens_stay_out_of_the_log() {
    let f = Fixture::new();
    let media = f.upload_png();
    let response = get(
        &f.server,
        &format!("{}/{}/url", f.media_path(), media["id"].as_str().unwrap()),
        Some(&f.alice),
    );
    assert_eq!(response.status, 200);
    let url = response.json()["url"].as_str().unwrap().to_owned();
    let path = url[url.find("/api/v1/objects/").unwrap()..].to_owned();
    let signature = query_value(&url, "signature");
    assert!(signature.len() >= 16, "{url}");

    // A working URL refused with 416 (the probe's WARN line), and one refused with 403.
    let mut raw = get_request(&path, None);
    raw.truncate(raw.len() - 2);
    raw.extend_from_slice(b"Range: bytes=100000-\r\n\r\n");
    let response = exchange(f.server.addr, &raw);
    assert_eq!(
        response.status,
        416,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    let tampered = format!("{}0", &path[..path.len() - 1]);
    assert_ne!(get(&f.server, &tampered, None).status, 200);

    // Fifty refused tokens of 1 KB each.
    let token = format!("eyJhbGciOiJIUzI1NiJ9.{}.sig", "A".repeat(1000));
    let mut refused = Vec::new();
    for _ in 0..50 {
        let response = get(&f.server, &f.media_path(), Some(&token));
        assert_eq!(response.status, 401);
        refused.push(response.header("x-request-id").unwrap().to_owned());
    }
    let no_token = get(&f.server, &f.media_path(), None);
    assert_eq!(no_token.status, 401);
    refused.push(no_token.header("x-request-id").unwrap().to_owned());

    let log = f.log_text();
    assert!(!log.contains(&signature), "the signature is in the log");
    assert!(
        log.contains("signature=REDACTED"),
        "the redacted target is logged"
    );
    assert!(!log.contains(&"A".repeat(100)), "a token is in the log");
    for id in &refused {
        let lines: Vec<&str> = log.lines().filter(|l| l.contains(id.as_str())).collect();
        assert_eq!(lines.len(), 1, "request {id}: {lines:#?}");
        assert!(lines[0].contains("DEBUG"), "{}", lines[0]);
        assert!(
            lines[0].len() < 512,
            "{} bytes: {}",
            lines[0].len(),
            lines[0]
        );
    }
    // Nothing a client can cause is a warning.
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .filter(|l| !l.contains("JWT_SECRET"))
        .collect();
    assert!(warnings.is_empty(), "{warnings:#?}");
}

#[cfg(unix)]
#[test]
fn the_embedded_default_keeps_its_files_to_its_owner() {
    use std::os::unix::fs::PermissionsExt as _;
    // No JWT_SECRET: the development secret is created too.
    let f = Fixture::with_env(&[("JWT_SECRET", ""), ("RUST_LOG", "error")]);
    f.upload_png();
    fn walk(path: &Path, out: &mut Vec<(PathBuf, u32)>) {
        let mode = std::fs::metadata(path).unwrap().permissions().mode();
        out.push((path.to_owned(), mode & 0o777));
        if path.is_dir() {
            for entry in std::fs::read_dir(path).unwrap() {
                walk(&entry.unwrap().path(), out);
            }
        }
    }
    let mut modes = Vec::new();
    walk(&f.data, &mut modes);
    let names: Vec<String> = modes
        .iter()
        .map(|(p, _)| p.strip_prefix(&f.data).unwrap().display().to_string())
        .collect();
    for expected in [
        "plugs.db",
        "jwt-secret",
        "presign-key",
        "objects/tmp",
        "objects/meta",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} in {names:?}"
        );
    }
    assert!(
        names
            .iter()
            .any(|n| n.starts_with("objects/objects/events/")),
        "{names:?}"
    );
    let open: Vec<String> = modes
        .iter()
        .filter(|(path, mode)| {
            let expected = if path.is_dir() { 0o700 } else { 0o600 };
            *mode != expected
        })
        .map(|(path, mode)| format!("{} {mode:o}", path.display()))
        .collect();
    assert!(open.is_empty(), "not private: {open:#?}");
}

#[test]
fn cursors_outside_the_years_0_to_9999_are_422() {
    let f = Fixture::with_env(&[("RUST_LOG", "error")]);
    f.upload_png();
    let id = uuid::Uuid::new_v4().simple();
    // 10000-01-01T00:00:00Z: parses as a date, but no row can be that old or that new.
    for micros in [
        "253402300800000000",
        "-62167219200000001",
        "9223372036854775807",
    ] {
        let cursor = URL_SAFE_NO_PAD.encode(format!("{micros}:{id}"));
        for path in ["/api/v1/events".to_owned(), f.media_path()] {
            let response = get(
                &f.server,
                &format!("{path}?cursor={cursor}"),
                Some(&f.alice),
            );
            assert_problem(&response, 422);
        }
    }
    // The last instant of 9999 is a cursor like any other.
    let cursor = URL_SAFE_NO_PAD.encode(format!("253402300799999999:{id}"));
    let response = get(
        &f.server,
        &format!("{}?cursor={cursor}", f.media_path()),
        Some(&f.alice),
    );
    assert_eq!(response.status, 200);
}
