//! `cargo xtask bench api [--profile full|smoke]`: the plugs-api binary end to end, over HTTP,
//! against PostgreSQL and s3s-fs on this machine, each figure beside a reference measured in the
//! same run: the same bytes sent straight to the same S3 server by the bare aws-sdk-s3 client
//! (`crates/plugs_storage/examples/store_bench.rs`) and by curl, and `/healthz` of the same
//! process for the metadata route.
//!
//! Memory is the server's own: VmHWM (the kernel's high-water mark of its resident set) of a
//! server process started fresh for that one measurement, since the mark only ever rises.
//!
//! `full` uses a release build and writes its section of docs/PERFORMANCE.md; `smoke` uses the
//! debug build the tests already made, tiny sizes and a second per load run, and only checks that
//! every path works (CI runs it), so its figures are printed and not kept.

#[path = "bench_http.rs"]
pub(crate) mod http;
#[path = "bench_uploads.rs"]
mod uploads;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, bail, ensure};
use serde_json::Value;

use self::http::{Api, ApiServer, Load, Request, Transfer};
use crate::bench_common::{self, Sample};
use crate::process::{self, cargo};
use crate::services::{Guard, S3_ACCESS_KEY, S3_SECRET_KEY, S3S_FS_VERSION, Services};

const HEADING: &str = "## HTTP API: plugs-api end to end against bare S3 clients";
/// The bucket the server stores into; the references write beside it, under other keys.
const BUCKET: &str = "plugs-bench-api";
/// The bucket store_bench uses (it creates it).
const SDK_BUCKET: &str = "plugs-bench";
const USER: &str = "bench";
/// HS256 wants at least 32 bytes; it guards a throwaway server on 127.0.0.1.
const JWT_SECRET: &str = "plugs-bench-jwt-secret-not-a-secret-0123456789";
const MIB: u64 = 1 << 20;

/// What one run measures, and how hard.
#[derive(Debug, Clone, PartialEq)]
struct Profile {
    name: &'static str,
    release: bool,
    rounds: usize,
    /// Single-transfer sizes in MiB, ascending: the first is the baseline of the memory ratio.
    sizes_mib: &'static [u64],
    /// The upload whose peak RSS is reported on its own row.
    headline_mib: u64,
    /// How many transfers at once, and of how many MiB each.
    concurrent: (usize, u64),
    small_kib: u64,
    small_connections: u32,
    load_seconds: u32,
    seed_rows: u64,
    metadata_connections: u32,
    /// Requests after which the resident set is read (three readings: issue 15 judges the
    /// growth between the last two).
    leak_counts: [u64; 3],
    /// Direct-upload sizes in MiB (issue 11's row).
    direct_sizes_mib: &'static [u64],
    /// `DIRECT_UPLOAD_MULTIPART_THRESHOLD` and `DIRECT_UPLOAD_PART_SIZE` in MiB: the smoke
    /// profile lowers them so that its small files take the multipart path too.
    direct_plan_mib: (u64, u64),
    /// `DIRECT_UPLOAD_ASYNC_COMPLETE_ABOVE` in MiB: completions above it answer 202 and are
    /// polled (the full profile keeps the server's default, 128 MiB; the smoke profile lowers
    /// it so that CI polls one).
    direct_async_above_mib: u64,
    /// A tus upload of this many MiB in PATCHes of this many (issue 14's row).
    tus: (u64, u64),
}

const FULL: Profile = Profile {
    name: "full",
    release: true,
    rounds: 3,
    sizes_mib: &[16, 200, 256, 1024],
    headline_mib: 200,
    concurrent: (16, 64),
    small_kib: 100,
    small_connections: 64,
    load_seconds: 10,
    seed_rows: 10_000,
    // Issue 15 states the listing's p99 target at 16 connections.
    metadata_connections: 16,
    leak_counts: [10_000, 200_000, 1_000_000],
    direct_sizes_mib: &[16, 256],
    direct_plan_mib: (64, 16),
    direct_async_above_mib: 128,
    tus: (256, 8),
};

const SMOKE: Profile = Profile {
    name: "smoke",
    release: false,
    rounds: 1,
    sizes_mib: &[1, 4],
    headline_mib: 4,
    concurrent: (4, 2),
    small_kib: 100,
    small_connections: 8,
    load_seconds: 1,
    seed_rows: 200,
    metadata_connections: 8,
    leak_counts: [300, 1_000, 2_000],
    direct_sizes_mib: &[1, 12],
    direct_plan_mib: (8, 5),
    direct_async_above_mib: 8,
    tus: (6, 2),
};

/// The parts of a run, in the order they run.
const PHASES: [&str; 6] = [
    "transfers",
    "direct",
    "tus",
    "concurrent",
    "small",
    "metadata",
];

const USAGE: &str = "usage: cargo xtask bench api [--profile full|smoke] [--only PHASE,...] \
                     [--system-allocator]\n  phases: transfers, direct, tus, concurrent, small, \
                     metadata (listing and the leak readings)";

/// What the command line asks for beyond the profile.
#[derive(Debug, Clone, PartialEq)]
struct Options {
    profile: Profile,
    /// The phases to run; a run of only some of them prints its table and writes no section.
    only: Option<Vec<&'static str>>,
    /// plugs-api built without its default `jemalloc` feature: the system's allocator, for
    /// measuring both (issue 15, target 7). Such a run writes no section either.
    system_allocator: bool,
}

impl Options {
    fn runs(&self, phase: &str) -> bool {
        self.only.as_ref().is_none_or(|only| only.contains(&phase))
    }

    /// Whether the run is the whole default one, the only kind that writes docs/PERFORMANCE.md.
    fn is_complete(&self) -> bool {
        self.only.is_none() && !self.system_allocator
    }
}

fn parse_args(args: &[&str]) -> Result<Options> {
    let mut options = Options {
        profile: FULL,
        only: None,
        system_allocator: false,
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match *arg {
            "--profile" => {
                options.profile = match args.next() {
                    Some(&"full") => FULL,
                    Some(&"smoke") => SMOKE,
                    _ => bail!("{USAGE}"),
                }
            }
            "--only" => {
                let list = args.next().with_context(|| USAGE.to_string())?;
                let mut phases = Vec::new();
                for name in list.split(',') {
                    let phase = PHASES
                        .iter()
                        .find(|phase| **phase == name)
                        .with_context(|| format!("no phase {name:?}\n{USAGE}"))?;
                    phases.push(*phase);
                }
                options.only = Some(phases);
            }
            "--system-allocator" => options.system_allocator = true,
            _ => bail!("{USAGE}"),
        }
    }
    Ok(options)
}

/// The `smoke` profile, as a `cargo xtask ci` step: every benchmark path works end to end.
pub(crate) fn smoke() -> Result<()> {
    run(&["--profile", "smoke"])
}

pub(crate) fn run(args: &[&str]) -> Result<()> {
    let options = parse_args(args)?;
    let profile = options.profile.clone();
    let command = format!("cargo xtask bench api --profile {}", profile.name);
    let (api_binary, store_bench) = build(&profile, options.system_allocator)?;
    let wrk = http::find_or_install_wrk()?;

    let services = Services::start()?;
    let vars: HashMap<&str, String> = services.env().into_iter().collect();
    let pg_url = vars
        .get("PLUGS_TEST_PG_URL")
        .context("services gave no PostgreSQL URL")?;
    let s3 = vars
        .get("PLUGS_TEST_S3S_ENDPOINT")
        .context("services gave no s3s-fs endpoint")?
        .clone();
    let scratch = Guard::new()?;
    let database = Database::create(pg_url, "plugs_bench")?;
    create_bucket(&s3, BUCKET)?;

    let api = Api {
        binary: api_binary,
        env: [
            ("DATABASE_URL", database.url()),
            ("DATA_DIR", scratch.dir().join("data").display().to_string()),
            ("S3_BUCKET_NAME", BUCKET.to_string()),
            ("S3_ENDPOINT_URL", s3.clone()),
            ("S3_FORCE_PATH_STYLE", "true".to_string()),
            ("S3_REGION", "us-east-1".to_string()),
            ("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY.to_string()),
            ("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY.to_string()),
            ("MAX_FILE_SIZE", (4 * 1024 * MIB).to_string()),
            ("JWT_SECRET", JWT_SECRET.to_string()),
            (
                "DIRECT_UPLOAD_MULTIPART_THRESHOLD",
                (profile.direct_plan_mib.0 * MIB).to_string(),
            ),
            (
                "DIRECT_UPLOAD_PART_SIZE",
                (profile.direct_plan_mib.1 * MIB).to_string(),
            ),
            (
                "DIRECT_UPLOAD_ASYNC_COMPLETE_ABOVE",
                (profile.direct_async_above_mib * MIB).to_string(),
            ),
            // Thumbnails are made by the processing queue after the answer; its workers would
            // decode the benchmark's files on the same two cores while the upload paths are
            // measured, so this server runs none (a separate `plugs-api worker` fleet would).
            ("PROCESSING_WORKERS", "0".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect(),
        dir: scratch.dir().to_path_buf(),
    };
    let token = api.token(USER)?;
    let mut bench = Bench {
        api,
        token,
        wrk,
        s3,
        store_bench,
        database,
        dir: scratch.dir().to_path_buf(),
        profile: profile.clone(),
        rows: Vec::new(),
    };
    if options.runs("transfers") {
        bench.transfers()?;
    }
    if options.runs("direct") {
        bench.direct_uploads()?;
    }
    if options.runs("tus") {
        bench.tus_upload()?;
    }
    if options.runs("concurrent") {
        bench.concurrent()?;
    }
    if options.runs("small") {
        bench.small_files()?;
    }
    if options.runs("metadata") {
        bench.metadata_and_leaks()?;
    }

    let table = table(&bench.rows);
    println!("\n{table}");
    if options.system_allocator {
        println!("(plugs-api built with --no-default-features: the system's allocator)");
    }
    if profile.release && options.is_complete() {
        let section = section(
            &profile,
            &table,
            &command,
            &bench_common::machine(),
            &bench_common::today(),
        );
        let path = process::workspace_root().join("docs/PERFORMANCE.md");
        bench_common::write_section(&path, HEADING, &section)?;
        println!("wrote the section to {}", path.display());
    }
    drop(bench);
    drop(scratch);
    drop(services);
    Ok(())
}

/// Builds plugs-api and, if it exists, the store_bench example; returns their paths.
///
/// With `system_allocator`, plugs-api is built without its default features (jemalloc), in the
/// same target directory (only the binary's own crate is compiled again), and copied aside as
/// `plugs-api-system-allocator`: the next default build puts the usual binary back.
fn build(profile: &Profile, system_allocator: bool) -> Result<(PathBuf, Option<PathBuf>)> {
    let metadata = process::metadata()?;
    let target = metadata["target_directory"]
        .as_str()
        .context("cargo metadata has no target_directory")?;
    let dir = Path::new(target).join(if profile.release { "release" } else { "debug" });
    let release: &[&str] = if profile.release { &["--release"] } else { &[] };
    let mut api = cargo();
    api.arg("build")
        .args(release)
        .args(["-p", "plugs-api", "--bin", "plugs-api"]);
    if system_allocator {
        api.arg("--no-default-features");
    }
    process::run(&mut api)?;
    let api_binary = if system_allocator {
        let copy = dir.join("plugs-api-system-allocator");
        fs::copy(dir.join("plugs-api"), &copy)
            .with_context(|| format!("copying plugs-api to {}", copy.display()))?;
        copy
    } else {
        dir.join("plugs-api")
    };
    let store_bench = if bench_common::has_example(&metadata, "plugs_storage", "store_bench") {
        process::run(cargo().arg("build").args(release).args([
            "-p",
            "plugs_storage",
            "--example",
            "store_bench",
        ]))?;
        Some(dir.join("examples/store_bench"))
    } else {
        eprintln!(
            "bench: plugs_storage has no example store_bench; the bare-SDK references are skipped"
        );
        None
    };
    Ok((api_binary, store_bench))
}

/// Creates `bucket` on the S3 server at `s3` (also used by `cargo xtask load`).
pub(crate) fn create_bucket(s3: &str, bucket: &str) -> Result<()> {
    let transfer = http::run_transfer(http::s3_command(S3_ACCESS_KEY, S3_SECRET_KEY).args([
        "-X",
        "PUT",
        &format!("{s3}/{bucket}"),
    ]))?;
    // 409: it exists already, owned by us.
    ensure!(
        matches!(transfer.status, 200 | 409),
        "creating the bucket {bucket} answered {}",
        transfer.status
    );
    Ok(())
}

/// A database of its own for one run, dropped afterwards (also used by `cargo xtask load`).
pub(crate) struct Database {
    admin_url: String,
    name: String,
    psql: PathBuf,
}

impl Database {
    /// A fresh database named `{prefix}_{pid}_{nanos}` on the server of `admin_url`.
    pub(crate) fn create(admin_url: &str, prefix: &str) -> Result<Self> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_nanos();
        let database = Self {
            admin_url: admin_url.to_string(),
            name: format!("{prefix}_{}_{nanos}", std::process::id()),
            psql: psql()?,
        };
        database.run_sql(admin_url, &format!("CREATE DATABASE {}", database.name))?;
        Ok(database)
    }

    /// Its URL.
    pub(crate) fn url(&self) -> String {
        with_database(&self.admin_url, &self.name)
    }

    /// Runs `sql` in it and returns the unaligned output.
    pub(crate) fn sql(&self, sql: &str) -> Result<String> {
        self.run_sql(&self.url(), sql)
    }

    fn run_sql(&self, url: &str, sql: &str) -> Result<String> {
        let output = process::run_quietly(
            Command::new(&self.psql)
                .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", url])
                .args(["-c", sql]),
        )?;
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let drop_sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        if let Err(err) = self.run_sql(&self.admin_url, &drop_sql) {
            eprintln!("bench: could not drop database {}: {err:#}", self.name);
        }
    }
}

/// `psql` on PATH, else from the newest installed PostgreSQL.
fn psql() -> Result<PathBuf> {
    if process::succeeds(Command::new("psql").arg("--version")) {
        return Ok(PathBuf::from("psql"));
    }
    let mut found: Vec<PathBuf> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path().join("bin/psql"))
        .filter(|path| path.is_file())
        .collect();
    found.sort();
    found
        .pop()
        .context("psql is not installed (apt-get install postgresql-client)")
}

/// The URL with its database name replaced; user, host, port and query stay.
fn with_database(url: &str, name: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", url));
    let (before_query, query) = match rest.split_once('?') {
        Some((before, query)) => (before, Some(query)),
        None => (rest, None),
    };
    let authority = before_query.split('/').next().unwrap_or_default();
    let mut out = format!("{scheme}://{authority}/{name}");
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

/// What the server sends PostgreSQL for one `GET .../media?limit=50` with no filter and no
/// cursor (crates/plugs_persistence `find_event`, `list_ready` with `ready_page` and `with_tags`;
/// the pool checks each connection it hands out with `SELECT 1`). The page's ids are bound as
/// one array where the server binds 51 values; the work for PostgreSQL is the same. The media
/// columns are the table's own, in order, as Diesel's schema lists them, so the script follows
/// the migrations.
fn list_sql(media_columns: &str) -> String {
    let columns = media_columns
        .split(',')
        .map(|column| format!("\"event_media\".\"{}\"", column.trim()))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "SELECT 1;\n\
         SELECT \"events\".\"id\", \"events\".\"owner\", \"events\".\"title\", \
         \"events\".\"created_at\", \"events\".\"updated_at\" FROM \"events\" \
         WHERE (\"events\".\"id\" = :event) LIMIT 1;\n\
         SELECT 1;\n\
         SELECT {columns} FROM \"event_media\" \
         WHERE ((\"event_media\".\"event_id\" = :event) AND event_media.status = 'ready') \
         ORDER BY \"event_media\".\"created_at\" DESC, \"event_media\".\"id\" DESC LIMIT 51;\n\
         SELECT \"event_media_tags\".\"media_id\", \"event_media_tags\".\"tag\" \
         FROM \"event_media_tags\" WHERE \"event_media_tags\".\"media_id\" = ANY(:ids::uuid[]) \
         ORDER BY \"event_media_tags\".\"media_id\", \"event_media_tags\".\"position\";\n"
    )
}

/// `pgbench` on PATH, else from the newest installed PostgreSQL.
fn pgbench() -> Option<PathBuf> {
    if process::succeeds(Command::new("pgbench").arg("--version")) {
        return Some(PathBuf::from("pgbench"));
    }
    let mut found: Vec<PathBuf> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path().join("bin/pgbench"))
        .filter(|path| path.is_file())
        .collect();
    found.sort();
    found.pop()
}

/// The latency of each transaction (µs, the third field) of a pgbench `-l` log.
fn pgbench_latencies(log: &str) -> Vec<f64> {
    log.lines()
        .filter_map(|line| line.split_whitespace().nth(2)?.parse::<f64>().ok())
        .collect()
}

/// pgbench's `tps = ...` and its transaction count with the percentiles of `latencies_us`.
fn pgbench_load(stdout: &str, latencies_us: &mut [f64]) -> Option<Load> {
    let field = |prefix: &str| {
        stdout.lines().find_map(|line| {
            line.trim()
                .strip_prefix(prefix)?
                .split_whitespace()
                .next()?
                .parse::<f64>()
                .ok()
        })
    };
    let tps = field("tps = ")?;
    let requests = field("number of transactions actually processed: ")? as u64;
    let failed = field("number of failed transactions: ").unwrap_or(0.0) as u64;
    latencies_us.sort_by(f64::total_cmp);
    let percentile = |p: f64| {
        let index = ((latencies_us.len() as f64 * p).ceil() as usize).saturating_sub(1);
        latencies_us.get(index).copied().unwrap_or_default() / 1e3
    };
    Some(Load {
        requests,
        seconds: if tps > 0.0 {
            requests as f64 / tps
        } else {
            0.0
        },
        status_errors: failed,
        socket_errors: 0,
        p50_ms: percentile(0.50),
        p99_ms: percentile(0.99),
    })
}

/// One line of the result table.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    measure: String,
    ours: String,
    reference: String,
    ratio: String,
    target: String,
    verdict: &'static str,
}

/// The verdict column of a row without a target.
const NO_VERDICT: &str = "n/a";

/// The verdict on a figure against its target: `met` or `**not met**`, and `n/a` when there is
/// no figure or it is not a finite number. A reference that measured zero makes an infinite or
/// undefined ratio, which must not pass for a target met (nor for one missed).
fn verdict(figure: Option<f64>, target_met: impl FnOnce(f64) -> bool) -> &'static str {
    match figure {
        Some(value) if value.is_finite() => {
            if target_met(value) {
                "met"
            } else {
                "**not met**"
            }
        }
        _ => NO_VERDICT,
    }
}

fn mib_per_s(bytes: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        bytes as f64 / MIB as f64 / seconds
    } else {
        0.0
    }
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or_default()
}

fn mib(kib: u64) -> f64 {
    bench_common::kib_to_mib(kib)
}

/// Everything one run holds.
struct Bench {
    api: Api,
    token: String,
    wrk: PathBuf,
    s3: String,
    store_bench: Option<PathBuf>,
    database: Database,
    dir: PathBuf,
    profile: Profile,
    rows: Vec<Row>,
}

/// Figures of one single-transfer size across rounds.
#[derive(Debug, Default)]
struct SizeFigures {
    api_up: Vec<f64>,
    /// Uploads whose form declared the file's size (`size` before `file`).
    api_up_sized: Vec<f64>,
    api_down: Vec<f64>,
    curl_up: Vec<f64>,
    curl_down: Vec<f64>,
    sdk_up: Vec<f64>,
    sdk_down: Vec<f64>,
    /// The bare SDK's multipart upload, same part size and parts in flight as the server's.
    sdk_up_multipart: Vec<f64>,
    /// The bare SDK's ranged GETs of 8 MiB, 10 in flight (boto3's defaults).
    sdk_down_parallel: Vec<f64>,
    /// The server's CPU seconds per GiB moved.
    up_cpu_per_gib: Vec<f64>,
    up_sized_cpu_per_gib: Vec<f64>,
    down_cpu_per_gib: Vec<f64>,
    up_hwm_kib: u64,
    up_sized_hwm_kib: u64,
    down_hwm_kib: u64,
    idle_hwm_kib: u64,
}

impl Bench {
    fn api_url(&self, server: &ApiServer, path: &str) -> String {
        format!("{}/api/v1{path}", server.base_url())
    }

    fn create_event(&self, server: &ApiServer, title: &str) -> Result<String> {
        let (status, body) = http::json_request(
            "POST",
            &self.api_url(server, "/events"),
            &self.token,
            Some(&serde_json::json!({ "title": title }).to_string()),
        )?;
        ensure!(status == 201, "creating an event answered {status}: {body}");
        body["id"]
            .as_str()
            .map(str::to_string)
            .with_context(|| format!("the created event has no id: {body}"))
    }

    /// Uploads a file through the API, declaring its size in the form or not; the transfer and
    /// the new media id.
    fn upload(
        &self,
        server: &ApiServer,
        event: &str,
        file: &Path,
        declare_size: bool,
    ) -> Result<(Transfer, String)> {
        let response = self.dir.join("upload-response.json");
        let size = if declare_size {
            Some(fs::metadata(file)?.len())
        } else {
            None
        };
        let transfer = http::run_transfer(&mut http::upload_command_declaring(
            &self.api_url(server, &format!("/events/{event}/media")),
            &self.token,
            file,
            "payload.png",
            "image/png",
            &response,
            size,
        ))?;
        media_id(&transfer, &response).map(|id| (transfer, id))
    }

    fn delete_media(&self, server: &ApiServer, event: &str, media: &str) -> Result<()> {
        let (status, body) = http::json_request(
            "DELETE",
            &self.api_url(server, &format!("/events/{event}/media/{media}")),
            &self.token,
            None,
        )?;
        ensure!(status == 204, "deleting media answered {status}: {body}");
        Ok(())
    }

    fn stream_url(&self, server: &ApiServer, event: &str, media: &str) -> String {
        self.api_url(server, &format!("/events/{event}/media/{media}/stream"))
    }

    fn s3_put(&self, file: &Path, key: &str) -> Command {
        let mut command = http::s3_command(S3_ACCESS_KEY, S3_SECRET_KEY);
        command
            .arg("-T")
            .arg(file)
            .arg(format!("{}/{BUCKET}/{key}", self.s3));
        command
    }

    fn s3_get(&self, key: &str) -> Command {
        let mut command = http::s3_command(S3_ACCESS_KEY, S3_SECRET_KEY);
        command.arg(format!("{}/{BUCKET}/{key}", self.s3));
        command
    }

    fn sdk(&self, file: &Path, mode: &str) -> Result<Option<Sample>> {
        self.store_bench
            .as_ref()
            .map(|binary| bench_common::run_once(binary, &self.s3, file, mode))
            .transpose()
    }

    /// Single uploads and downloads of each size: throughput against the references, and the
    /// server's peak memory during each.
    fn transfers(&mut self) -> Result<()> {
        let mut event = None;
        let mut figures: Vec<(u64, SizeFigures)> = Vec::new();
        let files = self
            .profile
            .sizes_mib
            .iter()
            .map(|&size| {
                let path = self.dir.join(format!("payload-{size}MiB.png"));
                http::write_png_file(&path, size * MIB)?;
                Ok((size, path))
            })
            .collect::<Result<Vec<_>>>()?;
        for round in 1..=self.profile.rounds {
            for (size, file) in &files {
                let bytes = size * MIB;
                let index = match figures.iter().position(|(s, _)| s == size) {
                    Some(index) => index,
                    None => {
                        figures.push((*size, SizeFigures::default()));
                        figures.len() - 1
                    }
                };

                let gib = bytes as f64 / (1024.0 * MIB as f64);
                let server = self.api.start()?;
                let idle = server.memory()?;
                let event_id = match &event {
                    Some(id) => String::clone(id),
                    None => {
                        let id = self.create_event(&server, "bench transfers")?;
                        event = Some(id.clone());
                        id
                    }
                };
                let cpu = server.cpu_seconds()?;
                let (up, media) = self.upload(&server, &event_id, file, false)?;
                let up_cpu = server.cpu_seconds()? - cpu;
                let up_memory = server.memory()?;
                drop(server);

                let server = self.api.start()?;
                let cpu = server.cpu_seconds()?;
                let down = http::run_transfer(&mut http::download_command(
                    &self.stream_url(&server, &event_id, &media),
                    &self.token,
                ))?;
                let down_cpu = server.cpu_seconds()? - cpu;
                let down_memory = server.memory()?;
                ensure!(
                    down.status == 200 && down.bytes_down == bytes,
                    "the stream of a {size} MiB upload answered {} with {} bytes",
                    down.status,
                    down.bytes_down
                );
                self.delete_media(&server, &event_id, &media)?;
                drop(server);

                let server = self.api.start()?;
                let cpu = server.cpu_seconds()?;
                let (up_sized, media) = self.upload(&server, &event_id, file, true)?;
                let up_sized_cpu = server.cpu_seconds()? - cpu;
                let up_sized_memory = server.memory()?;
                self.delete_media(&server, &event_id, &media)?;
                drop(server);

                let key = format!("direct/{size}");
                let curl_up = http::run_transfer(&mut self.s3_put(file, &key))?;
                let curl_down = http::run_transfer(&mut self.s3_get(&key))?;
                ensure!(
                    curl_up.status == 200 && curl_down.bytes_down == bytes,
                    "the direct S3 put/get answered {}/{} with {} bytes",
                    curl_up.status,
                    curl_down.status,
                    curl_down.bytes_down
                );
                let sdk_up = self.sdk(file, "sdk-put")?.map(|s| s.mib_per_s);
                let sdk_down = self.sdk(file, "sdk-get")?.map(|s| s.mib_per_s);
                let sdk_down_parallel = self.sdk(file, "sdk-get-parallel")?.map(|s| s.mib_per_s);
                let sdk_up_multipart = self.sdk(file, "sdk-put-multipart")?.map(|s| s.mib_per_s);

                let f = &mut figures[index].1;
                f.api_up.push(mib_per_s(bytes, up.seconds));
                f.api_up_sized.push(mib_per_s(bytes, up_sized.seconds));
                f.api_down.push(mib_per_s(bytes, down.seconds));
                f.curl_up.push(mib_per_s(bytes, curl_up.seconds));
                f.curl_down.push(mib_per_s(bytes, curl_down.seconds));
                f.sdk_up.extend(sdk_up);
                f.sdk_down.extend(sdk_down);
                f.sdk_up_multipart.extend(sdk_up_multipart);
                f.sdk_down_parallel.extend(sdk_down_parallel);
                f.up_cpu_per_gib.push(up_cpu / gib);
                f.up_sized_cpu_per_gib.push(up_sized_cpu / gib);
                f.down_cpu_per_gib.push(down_cpu / gib);
                f.up_hwm_kib = f.up_hwm_kib.max(up_memory.hwm_kib);
                f.up_sized_hwm_kib = f.up_sized_hwm_kib.max(up_sized_memory.hwm_kib);
                f.down_hwm_kib = f.down_hwm_kib.max(down_memory.hwm_kib);
                f.idle_hwm_kib = f.idle_hwm_kib.max(idle.hwm_kib);
                let show =
                    |value: Option<f64>| value.map_or("n/a".to_string(), |s| format!("{s:.1}"));
                println!(
                    "round {round}/{} {size:>5} MiB: SDK multipart up {}, parallel ranged down {}; \
                     server CPU s/GiB up {:.2} (size declared {:.2}) down {:.2}",
                    self.profile.rounds,
                    show(sdk_up_multipart),
                    show(sdk_down_parallel),
                    up_cpu / gib,
                    up_sized_cpu / gib,
                    down_cpu / gib,
                );
                println!(
                    "round {round}/{} {size:>5} MiB: API up {:>7.1} (size declared {:>7.1}) \
                     down {:>7.1} MiB/s (curl direct {:>7.1} / {:>7.1}, SDK {} / {}); server \
                     peak RSS up {:.1} (size declared {:.1}) down {:.1} MiB (idle {:.1})",
                    self.profile.rounds,
                    mib_per_s(bytes, up.seconds),
                    mib_per_s(bytes, up_sized.seconds),
                    mib_per_s(bytes, down.seconds),
                    mib_per_s(bytes, curl_up.seconds),
                    mib_per_s(bytes, curl_down.seconds),
                    sdk_up.map_or("n/a".to_string(), |s| format!("{s:.1}")),
                    sdk_down.map_or("n/a".to_string(), |s| format!("{s:.1}")),
                    mib(up_memory.hwm_kib),
                    mib(up_sized_memory.hwm_kib),
                    mib(down_memory.hwm_kib),
                    mib(idle.hwm_kib),
                );
                process::flush();
            }
        }
        for (path, _) in files.iter().map(|(s, p)| (p, s)) {
            let _ = fs::remove_file(path);
        }
        self.rows
            .extend(transfer_rows(&figures, self.profile.headline_mib));
        Ok(())
    }
    /// Many big transfers at once: aggregate throughput against as many direct puts, and memory.
    fn concurrent(&mut self) -> Result<()> {
        let (count, size) = self.profile.concurrent;
        let bytes = size * MIB;
        let file = self.dir.join(format!("concurrent-{size}MiB.png"));
        http::write_png_file(&file, bytes)?;

        let server = self.api.start()?;
        let event = self.create_event(&server, "bench concurrent")?;
        let url = self.api_url(&server, &format!("/events/{event}/media"));
        let responses: Vec<PathBuf> = (0..count)
            .map(|i| self.dir.join(format!("concurrent-{i}.json")))
            .collect();
        let mut commands: Vec<Command> = responses
            .iter()
            .map(|response| {
                http::upload_command(&url, &self.token, &file, "c.png", "image/png", response)
            })
            .collect();
        let started = Instant::now();
        let uploads = http::run_transfers_concurrently(&mut commands)?;
        let up_seconds = started.elapsed().as_secs_f64();
        let up_memory = server.memory()?;
        let ids = uploads
            .iter()
            .zip(&responses)
            .map(|(transfer, response)| media_id(transfer, response))
            .collect::<Result<Vec<_>>>()?;
        drop(server);

        let server = self.api.start()?;
        let mut commands: Vec<Command> = ids
            .iter()
            .map(|id| http::download_command(&self.stream_url(&server, &event, id), &self.token))
            .collect();
        let started = Instant::now();
        let downloads = http::run_transfers_concurrently(&mut commands)?;
        let down_seconds = started.elapsed().as_secs_f64();
        let down_memory = server.memory()?;
        ensure!(
            downloads
                .iter()
                .all(|d| d.status == 200 && d.bytes_down == bytes),
            "a concurrent download failed: {downloads:?}"
        );
        for id in &ids {
            self.delete_media(&server, &event, id)?;
        }
        drop(server);

        let mut commands: Vec<Command> = (0..count)
            .map(|i| self.s3_put(&file, &format!("direct/concurrent-{i}")))
            .collect();
        let started = Instant::now();
        http::run_transfers_concurrently(&mut commands)?;
        let curl_up_seconds = started.elapsed().as_secs_f64();
        let mut commands: Vec<Command> = (0..count)
            .map(|i| self.s3_get(&format!("direct/concurrent-{i}")))
            .collect();
        let started = Instant::now();
        http::run_transfers_concurrently(&mut commands)?;
        let curl_down_seconds = started.elapsed().as_secs_f64();
        let _ = fs::remove_file(&file);

        let total = bytes * count as u64;
        println!(
            "{count} x {size} MiB at once: API up {:.1} down {:.1} MiB/s (curl direct {:.1} / \
             {:.1}); server peak RSS up {:.1} down {:.1} MiB",
            mib_per_s(total, up_seconds),
            mib_per_s(total, down_seconds),
            mib_per_s(total, curl_up_seconds),
            mib_per_s(total, curl_down_seconds),
            mib(up_memory.hwm_kib),
            mib(down_memory.hwm_kib)
        );
        for (direction, ours, theirs, memory) in [
            ("uploads", up_seconds, curl_up_seconds, up_memory),
            ("downloads", down_seconds, curl_down_seconds, down_memory),
        ] {
            let (ours, theirs) = (mib_per_s(total, ours), mib_per_s(total, theirs));
            self.rows.push(Row {
                measure: format!("{count} x {size} MiB {direction} at once, aggregate MiB/s"),
                ours: format!("{ours:.1}"),
                reference: format!("curl {theirs:.1}"),
                ratio: format!("{:.2} (of curl)", ours / theirs),
                target: String::new(),
                verdict: NO_VERDICT,
            });
            // Issue 15, target 6: the server-wide budgets keep the peak at most 128 MiB
            // whatever the concurrency.
            let peak = mib(memory.hwm_kib);
            self.rows.push(Row {
                measure: format!("{count} x {size} MiB {direction} at once, server peak RSS MiB"),
                ours: format!("{peak:.1}"),
                reference: String::new(),
                ratio: String::new(),
                target: "<= 128".to_string(),
                verdict: verdict(Some(peak), |p| p <= 128.0),
            });
        }
        Ok(())
    }

    fn write_script(&self, name: &str, requests: &[Request]) -> Result<PathBuf> {
        let path = self.dir.join(name);
        fs::write(&path, http::wrk_script(&self.token, requests))?;
        Ok(path)
    }

    fn wrk(
        &self,
        script: &Path,
        server: &ApiServer,
        connections: u32,
        seconds: u32,
    ) -> Result<Load> {
        http::run_wrk(&self.wrk, script, &server.base_url(), connections, seconds)
    }

    /// Small uploads with many in flight, against the bare SDK doing the same puts.
    fn small_files(&mut self) -> Result<()> {
        let size = self.profile.small_kib * 1024;
        let connections = self.profile.small_connections;
        let server = self.api.start()?;
        let event = self.create_event(&server, "bench small files")?;
        let script = self.write_script(
            "small-uploads.lua",
            &[Request::Upload(
                format!("/api/v1/events/{event}/media"),
                size,
            )],
        )?;
        let load = self.wrk(&script, &server, connections, self.profile.load_seconds)?;
        let memory = server.memory()?;
        drop(server);
        check_errors("small uploads", &load)?;

        let file = self.dir.join("small.png");
        http::write_png_file(&file, size)?;
        let sdk = self.sdk_put_many(&file, load.requests, connections)?;
        println!(
            "{} KiB uploads, {connections} in flight: {:.0}/s, p50 {:.1} ms, p99 {:.1} ms; \
             server peak RSS {:.1} MiB; bare SDK {}",
            self.profile.small_kib,
            load.per_second(),
            load.p50_ms,
            load.p99_ms,
            mib(memory.hwm_kib),
            sdk.as_ref().map_or("n/a".to_string(), |s| format!(
                "{:.0}/s, p50 {:.1} ms, p99 {:.1} ms",
                s.per_second(),
                s.p50_ms,
                s.p99_ms
            ))
        );
        let what = format!(
            "{} KiB uploads, {connections} in flight",
            self.profile.small_kib
        );
        let reference = |value: Option<String>| {
            value.unwrap_or_else(|| "bare SDK: n/a (store_bench has no sdk-put-many)".to_string())
        };
        let rate_ratio = sdk.map(|s| load.per_second() / s.per_second());
        self.rows.push(Row {
            measure: format!("{what}: uploads/s"),
            ours: format!("{:.0}", load.per_second()),
            reference: reference(sdk.map(|s| format!("SDK {:.0}", s.per_second()))),
            ratio: rate_ratio.map_or(String::new(), |r| format!("{r:.2}")),
            target: ">= 0.7".to_string(),
            verdict: verdict(rate_ratio, |r| r >= 0.7),
        });
        let tail = load.p99_ms / load.p50_ms;
        self.rows.push(Row {
            measure: format!("{what}: p50 / p99 ms"),
            ours: format!("{:.1} / {:.1}", load.p50_ms, load.p99_ms),
            reference: reference(sdk.map(|s| format!("SDK {:.1} / {:.1}", s.p50_ms, s.p99_ms))),
            ratio: format!("{tail:.2} (p99 / p50)"),
            target: "p99 <= 3 x p50".to_string(),
            verdict: verdict(Some(tail), |t| t <= 3.0),
        });
        self.rows.push(Row {
            measure: format!("{what}: server peak RSS MiB"),
            ours: format!("{:.1}", mib(memory.hwm_kib)),
            reference: String::new(),
            ratio: String::new(),
            target: String::new(),
            verdict: NO_VERDICT,
        });
        Ok(())
    }

    /// `store_bench --mode sdk-put-many`, when the example has that mode.
    fn sdk_put_many(&self, file: &Path, count: u64, concurrency: u32) -> Result<Option<Load>> {
        let Some(binary) = &self.store_bench else {
            return Ok(None);
        };
        let output = Command::new(binary)
            .args(["--endpoint", &self.s3])
            .args(["--access-key", S3_ACCESS_KEY, "--secret-key", S3_SECRET_KEY])
            .args(["--bucket", SDK_BUCKET, "--mode", "sdk-put-many"])
            .args(["--count", &count.max(1).to_string()])
            .args(["--concurrency", &concurrency.to_string()])
            .arg("--file")
            .arg(file)
            .output()?;
        if !output.status.success() {
            eprintln!(
                "bench: store_bench --mode sdk-put-many failed, so no reference: {}",
                String::from_utf8_lossy(&output.stderr)
                    .lines()
                    .next()
                    .unwrap_or_default()
            );
            return Ok(None);
        }
        let stdout = String::from_utf8_lossy(&output.stdout);
        let line = stdout.lines().rev().find(|l| l.starts_with('{'));
        let json: Value = serde_json::from_str(line.unwrap_or_default())
            .with_context(|| format!("store_bench sdk-put-many printed `{stdout}`"))?;
        let number = |field: &str| json[field].as_f64().unwrap_or_default();
        Ok(Some(Load {
            requests: json["count"].as_u64().unwrap_or_default(),
            seconds: number("seconds"),
            status_errors: 0,
            socket_errors: 0,
            p50_ms: number("p50_ms"),
            p99_ms: number("p99_ms"),
        }))
    }

    /// The listing of a large gallery against `/healthz` of the same process, then the resident
    /// set of one process after many mixed requests.
    fn metadata_and_leaks(&mut self) -> Result<()> {
        let server = self.api.start()?;
        let gallery = self.create_event(&server, "bench gallery")?;
        let mixed = self.create_event(&server, "bench mixed")?;
        let small = self.dir.join("small.png");
        if !small.exists() {
            // Written by the small-files phase; a run of `--only metadata` writes it here.
            http::write_png_file(&small, self.profile.small_kib * 1024)?;
        }
        let (_, small_media) = self.upload(&server, &mixed, &small, false)?;
        drop(server);
        self.seed(&gallery)?;

        let list = self.write_script(
            "list.lua",
            &[Request::Get(format!(
                "/api/v1/events/{gallery}/media?limit=50"
            ))],
        )?;
        let health = self.write_script(
            "healthz.lua",
            &[Request::GetAnonymous("/healthz".to_string())],
        )?;
        let connections = self.profile.metadata_connections;
        let seconds = self.profile.load_seconds;
        let server = self.api.start()?;
        if self.profile.release {
            // Warm both paths (connection pool, prepared statements, allocator) before measuring.
            self.wrk(&list, &server, connections, 1)?;
            self.wrk(&health, &server, connections, 1)?;
        }
        let listing = self.wrk(&list, &server, connections, seconds)?;
        let healthz = self.wrk(&health, &server, connections, seconds)?;
        drop(server);
        check_errors("listing", &listing)?;
        check_errors("healthz", &healthz)?;
        let ceiling = self.listing_ceiling(&gallery, connections, seconds)?;
        let ratio = listing.per_second() / healthz.per_second();
        println!(
            "list 50 of {} rows: {:.0}/s p99 {:.1} ms; /healthz {:.0}/s p99 {:.1} ms",
            self.profile.seed_rows,
            listing.per_second(),
            listing.p99_ms,
            healthz.per_second(),
            healthz.p99_ms
        );
        let what = format!(
            "GET media?limit=50 of {} rows, {connections} connections",
            self.profile.seed_rows
        );
        // The target (issue 15) is the database's own ceiling for the same statements; /healthz
        // is kept beside it as the HTTP layer's ceiling.
        let db_ratio = ceiling.map(|c| listing.per_second() / c.per_second());
        self.rows.push(Row {
            measure: format!("{what}: requests/s"),
            ours: format!("{:.0}", listing.per_second()),
            reference: format!(
                "pgbench {}; /healthz {:.0} ({ratio:.2})",
                ceiling.map_or("n/a".to_string(), |c| format!("{:.0}", c.per_second())),
                healthz.per_second()
            ),
            ratio: db_ratio.map_or(String::new(), |r| format!("{r:.2}")),
            target: ">= 0.5".to_string(),
            verdict: verdict(db_ratio, |r| r >= 0.5),
        });
        self.rows.push(Row {
            measure: format!("{what}: p99 ms"),
            ours: format!("{:.1}", listing.p99_ms),
            reference: format!(
                "pgbench {}; /healthz {:.1}",
                ceiling.map_or("n/a".to_string(), |c| format!("{:.1}", c.p99_ms)),
                healthz.p99_ms
            ),
            ratio: String::new(),
            target: "<= 25".to_string(),
            verdict: verdict(Some(listing.p99_ms), |p| p <= 25.0),
        });

        let media = format!("/api/v1/events/{mixed}/media/{small_media}");
        let mix = self.write_script(
            "mixed.lua",
            &[
                Request::Get(format!("/api/v1/events/{gallery}/media?limit=50")),
                Request::Get(media.clone()),
                Request::Get(format!("{media}/stream")),
                Request::GetAnonymous("/healthz".to_string()),
                Request::Upload(format!("/api/v1/events/{mixed}/media"), 4096),
                Request::Get(format!("/api/v1/events/{mixed}/media?limit=20")),
                Request::Get("/api/v1/events?limit=20".to_string()),
            ],
        )?;
        self.leaks(&mix)
    }

    /// The database's own ceiling for a list request: every statement the server sends for
    /// `GET .../media?limit=50` (the pool's `SELECT 1` check before each of its two connection
    /// checkouts, the event, the page of 51 rows, the page's tags), in one pgbench script with
    /// the same event and the page's ids bound as parameters, `-M prepared`, as many clients as
    /// wrk has connections. `None` when pgbench is not installed.
    fn listing_ceiling(&self, event: &str, clients: u32, seconds: u32) -> Result<Option<Load>> {
        let Some(pgbench) = pgbench() else {
            eprintln!("bench: pgbench is not installed, so the listing has no database reference");
            return Ok(None);
        };
        let ids = self.database.sql(&format!(
            "SELECT '{{' || string_agg(id::text, ',' ORDER BY created_at DESC, id DESC) || '}}' \
             FROM (SELECT id, created_at FROM event_media WHERE event_id = '{event}' \
             AND status = 'ready' ORDER BY created_at DESC, id DESC LIMIT 51) AS page"
        ))?;
        let columns = self.database.sql(
            "SELECT string_agg(column_name, ',' ORDER BY ordinal_position) \
             FROM information_schema.columns WHERE table_name = 'event_media'",
        )?;
        let script = self.dir.join("list.sql");
        fs::write(&script, list_sql(&columns))?;
        let log_prefix = self.dir.join("pgbench-list");
        let output = process::run_quietly(
            Command::new(&pgbench)
                .current_dir(&self.dir)
                .args(["-n", "-M", "prepared", "-f"])
                .arg(&script)
                .args(["-D", &format!("event={event}"), "-D", &format!("ids={ids}")])
                .args(["-c", &clients.to_string(), "-j", "2"])
                .args(["-T", &seconds.to_string(), "-l", "--log-prefix"])
                .arg(&log_prefix)
                .arg(self.database.url()),
        )?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let mut latencies_us = Vec::new();
        for entry in fs::read_dir(&self.dir)?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("pgbench-list") {
                latencies_us.extend(pgbench_latencies(&fs::read_to_string(entry.path())?));
                let _ = fs::remove_file(entry.path());
            }
        }
        let load = pgbench_load(&stdout, &mut latencies_us)
            .with_context(|| format!("pgbench printed no summary:\n{stdout}"))?;
        println!(
            "pgbench, the statements of one list request, {clients} clients: {:.0}/s, p50 {:.2} \
             ms, p99 {:.2} ms",
            load.per_second(),
            load.p50_ms,
            load.p99_ms
        );
        Ok(Some(load))
    }

    /// Rows straight into PostgreSQL: ten thousand uploads through the API would measure the
    /// uploads, not the listing.
    fn seed(&self, event: &str) -> Result<()> {
        let rows = self.profile.seed_rows;
        self.database.sql(&format!(
            "INSERT INTO event_media (id, event_id, title, original_filename, content_type, \
             size_bytes, sha256, s3_key, status, uploaded_by, created_at, updated_at) \
             SELECT gen_random_uuid(), '{event}', 'seed ' || i, 'seed-' || i || '.png', \
             'image/png', 1024, repeat('0', 64), \
             format('events/{event}/media/2025/01/01/%s_%s.png', \
             to_char(timestamp '2025-01-01' + i * interval '1 second', 'HH24MISS'), \
             lpad(i::text, 6, '0')), 'ready', '{USER}', \
             timestamp '2025-01-01' + i * interval '1 second', \
             timestamp '2025-01-01' + i * interval '1 second' \
             FROM generate_series(1, {rows}) AS i; ANALYZE event_media;"
        ))?;
        let count = self.database.sql(&format!(
            "SELECT count(*) FROM event_media WHERE event_id = '{event}'"
        ))?;
        ensure!(
            count == rows.to_string(),
            "seeded {rows} rows but the event holds {count}"
        );
        Ok(())
    }

    /// Mixed requests on one process, its resident set read after about each of `leak_counts`
    /// of them (wrk runs for a time, so the counts are reached in slices sized from the rate
    /// measured so far).
    fn leaks(&mut self, script: &Path) -> Result<()> {
        let connections = self.profile.metadata_connections;
        let server = self.api.start()?;
        let mut done = 0_u64;
        let mut elapsed = 0.0_f64;
        let mut errors = 0_u64;
        let mut readings = Vec::new();
        for goal in self.profile.leak_counts {
            let mut slices = 0;
            while done < goal {
                slices += 1;
                ensure!(
                    slices <= 100,
                    "the mixed load made no progress ({done} requests)"
                );
                let rate = if elapsed > 0.0 {
                    done as f64 / elapsed
                } else {
                    0.0
                };
                // A slice at most doubles the time so far: the first second's rate (connections
                // opening, caches cold) is too low to extrapolate far.
                let longest = (2.0 * elapsed).clamp(1.0, 60.0);
                let seconds = if rate > 0.0 {
                    ((goal - done) as f64 / rate).ceil().clamp(1.0, longest) as u32
                } else {
                    1
                };
                let load = self.wrk(script, &server, connections, seconds)?;
                // The mix's uploads add rows to one event all along. This machine's PostgreSQL
                // runs with autovacuum off, so without a fresh ANALYZE the planner goes on
                // believing that event holds a handful of rows, sorts all of them for each
                // page, and the rate decays with the count (what kept an earlier run at 160
                // requests/s): analyze between slices, as autovacuum would.
                self.database.sql("ANALYZE event_media")?;
                done += load.requests;
                elapsed += load.seconds;
                errors += load.status_errors + load.socket_errors;
            }
            let memory = server.memory()?;
            println!(
                "after {done} mixed requests: server RSS {:.1} MiB (peak {:.1})",
                mib(memory.rss_kib),
                mib(memory.hwm_kib)
            );
            readings.push((done, memory));
        }
        drop(server);
        ensure!(
            errors * 100 <= done,
            "{errors} of {done} mixed requests failed"
        );
        if let [(n0, m0), (n1, m1), (n2, m2)] = readings.as_slice() {
            let growth = (mib(m2.rss_kib) / mib(m1.rss_kib) - 1.0) * 100.0;
            self.rows.push(Row {
                measure: format!(
                    "RSS after {n2} mixed requests vs after {n1} (after {n0}: {:.1}), MiB",
                    mib(m0.rss_kib)
                ),
                ours: format!("{:.1}", mib(m2.rss_kib)),
                reference: format!("{:.1}", mib(m1.rss_kib)),
                ratio: format!("{growth:+.1} %"),
                target: "within 1 %".to_string(),
                verdict: verdict(Some(growth), |g| g.abs() <= 1.0),
            });
        }
        Ok(())
    }
}

/// The table rows of the single transfers: throughput against the references, peak memory.
fn transfer_rows(figures: &[(u64, SizeFigures)], headline_mib: u64) -> Vec<Row> {
    let mut rows = Vec::new();
    for direction in ["upload", "upload (size declared)", "download"] {
        for (size, f) in figures {
            // The reference each target names, in the same run (issue 15): for an upload whose
            // length is unknown, the bare SDK's multipart upload with the server's part size and
            // parts in flight (it pays the same completion on the store); for one whose length
            // is declared, the SDK's one PutObject; for a download, the SDK's parallel ranged
            // GETs as boto3 makes them. The single-stream SDK and curl (no hashing at all: the
            // wire alone) are shown beside it.
            let (ours, curl, sdk, reference, reference_name) = match direction {
                "upload" => (
                    &f.api_up,
                    &f.curl_up,
                    &f.sdk_up,
                    &f.sdk_up_multipart,
                    "SDK multipart",
                ),
                "download" => (
                    &f.api_down,
                    &f.curl_down,
                    &f.sdk_down,
                    &f.sdk_down_parallel,
                    "SDK parallel",
                ),
                _ => (&f.api_up_sized, &f.curl_up, &f.sdk_up, &f.sdk_up, "SDK"),
            };
            let ours = median(ours);
            let curl = median(curl);
            let sdk = (!sdk.is_empty()).then(|| median(sdk));
            let named = (!reference.is_empty()).then(|| median(reference));
            let ratio = ours / named.unwrap_or(curl);
            let mut shown = Vec::new();
            if reference_name != "SDK" {
                shown.push(format!(
                    "{reference_name} {}",
                    named.map_or("n/a".to_string(), |s| format!("{s:.1}"))
                ));
            }
            shown.push(format!(
                "SDK {}",
                sdk.map_or("n/a".to_string(), |s| format!("{s:.1}"))
            ));
            shown.push(format!("curl {curl:.1}"));
            // Downloads: the target is for objects of 64 MiB and more; smaller ones keep their
            // single GET and are shown without a verdict.
            let target = (direction != "download" || *size >= 64).then_some(0.9);
            rows.push(Row {
                measure: format!("{direction} {size} MiB, MiB/s"),
                ours: format!("{ours:.1}"),
                reference: shown.join("; "),
                ratio: format!(
                    "{ratio:.2}{}",
                    if named.is_some() { "" } else { " (of curl)" }
                ),
                target: target.map_or(String::new(), |t| format!(">= {t}")),
                verdict: target.map_or(NO_VERDICT, |t| verdict(Some(ratio), |r| r >= t)),
            });
        }
    }
    if let Some((size, f)) = figures.last() {
        for (direction, values, target) in [
            ("upload", &f.up_cpu_per_gib, 1.0),
            ("upload (size declared)", &f.up_sized_cpu_per_gib, 1.0),
            ("download", &f.down_cpu_per_gib, 0.4),
        ] {
            if values.is_empty() {
                continue;
            }
            let cpu = median(values);
            rows.push(Row {
                measure: format!("{direction} {size} MiB: server CPU s per GiB"),
                ours: format!("{cpu:.2}"),
                reference: String::new(),
                ratio: String::new(),
                target: format!("<= {target}"),
                verdict: verdict(Some(cpu), |c| c <= target),
            });
        }
    }
    for (direction, pick) in [
        (
            "upload",
            (|f: &SizeFigures| f.up_hwm_kib) as fn(&SizeFigures) -> u64,
        ),
        ("upload (size declared)", |f: &SizeFigures| {
            f.up_sized_hwm_kib
        }),
        ("download", |f: &SizeFigures| f.down_hwm_kib),
    ] {
        for (size, f) in figures {
            let peak = mib(pick(f));
            rows.push(Row {
                measure: format!("{direction} {size} MiB, server peak RSS MiB"),
                ours: format!("{peak:.1}"),
                reference: format!("idle server {:.1}", mib(f.idle_hwm_kib)),
                ratio: String::new(),
                target: "<= 64".to_string(),
                verdict: verdict(Some(peak), |p| p <= 64.0),
            });
        }
        if let (Some((small, first)), Some((large, last))) = (figures.first(), figures.last()) {
            let ratio = mib(pick(last)) / mib(pick(first));
            rows.push(Row {
                measure: format!("{direction}: peak RSS {large} MiB / {small} MiB"),
                ours: format!("{:.1} / {:.1}", mib(pick(last)), mib(pick(first))),
                reference: String::new(),
                ratio: format!("{ratio:.2}"),
                target: "<= 1.3".to_string(),
                verdict: verdict(Some(ratio), |r| r <= 1.3),
            });
        }
    }
    if let Some((size, f)) = figures.iter().find(|(s, _)| *s == headline_mib) {
        rows.push(Row {
            measure: format!("**one {size} MiB upload: server peak RSS MiB**"),
            ours: format!("**{:.1}**", mib(f.up_hwm_kib)),
            reference: format!("idle server {:.1}", mib(f.idle_hwm_kib)),
            ratio: String::new(),
            target: "<= 64".to_string(),
            verdict: verdict(Some(mib(f.up_hwm_kib)), |p| p <= 64.0),
        });
    }
    rows
}

fn media_id(transfer: &Transfer, response: &Path) -> Result<String> {
    let body = fs::read_to_string(response).unwrap_or_default();
    ensure!(
        transfer.status == 201,
        "the upload answered {}: {body}",
        transfer.status
    );
    let json: Value =
        serde_json::from_str(&body).with_context(|| format!("the upload answered `{body}`"))?;
    json["id"]
        .as_str()
        .map(str::to_string)
        .with_context(|| format!("the upload's answer has no id: {body}"))
}

/// A load run whose requests mostly failed measured failures; one with a few is reported.
fn check_errors(what: &str, load: &Load) -> Result<()> {
    let errors = load.status_errors + load.socket_errors;
    ensure!(load.requests > 0, "{what}: wrk completed no request");
    ensure!(
        errors * 100 <= load.requests,
        "{what}: {errors} of {} requests failed ({} with an error status, {} socket errors)",
        load.requests,
        load.status_errors,
        load.socket_errors
    );
    Ok(())
}

fn table(rows: &[Row]) -> String {
    let mut text = String::from(
        "| measure | plugs-api | reference | ratio | target | verdict |\n\
         |---|--:|--:|--:|--:|---|\n",
    );
    for row in rows {
        let _ = writeln!(
            text,
            "| {} | {} | {} | {} | {} | {} |",
            row.measure, row.ours, row.reference, row.ratio, row.target, row.verdict
        );
    }
    text
}

fn section(profile: &Profile, table: &str, command: &str, machine: &str, date: &str) -> String {
    let (count, size) = profile.concurrent;
    format!(
        "{HEADING}\n\n\
         Measured on {date} with `{command}` on {machine}: a release build of `plugs-api` over \
         PostgreSQL and s3s-fs {S3S_FS_VERSION} (objects as files on local disk), all on \
         127.0.0.1, so client, server, database and store share the same cores.\n\n\
         - Transfers: one file of each size (a valid PNG header, then random bytes) uploaded with \
         `curl -F file=@...` to `POST /api/v1/events/{{id}}/media`, once as is and once with \
         the form field `size` (the file's length) before the file (\"size declared\", which \
         lets the server stream it to S3 as one PutObject), and read back with \
         `GET .../stream`, the median of {rounds} rounds. References, in the same run, to the same \
         s3s-fs, the ratio's reference named first: for uploads without `size`, the bare \
         aws-sdk-s3 client's multipart upload with the server's part size and parts in flight \
         (`store_bench --mode sdk-put-multipart`); for uploads with `size`, its one streamed \
         PutObject (`sdk-put`); for downloads, its ranged GETs of 8 MiB, 10 in flight, as \
         boto3 makes them (`sdk-get-parallel`); beside them the single-stream SDK GetObject \
         (`sdk-get`) and curl with its own SigV4 and an unsigned payload (no hashing at all: the \
         wire's cost alone). Server CPU: user and system seconds of the server process from \
         `/proc/PID/stat` over the largest transfer, per GiB.\n\
         - Memory: VmHWM, the kernel's high-water mark of the server's resident set, of a server \
         process started fresh for that one transfer; the idle figure is a fresh server's mark \
         before any request.\n\
         - At once: {count} transfers of {size} MiB by as many curl processes, aggregate \
         throughput from first start to last finish.\n\
         - Small files: wrk POSTing {small} KiB multipart uploads on {conns} connections for \
         {secs} s; the reference is `store_bench --mode sdk-put-many` with as many puts at the \
         same concurrency.\n\
         - Metadata: wrk on `GET .../media?limit=50` of an event holding {rows} ready rows \
         (inserted with SQL), then on `/healthz` of the same process, {mconns} connections, \
         {secs} s each after a 1 s warm-up.\n\
         - Leaks: one process serving a mix of listing, metadata, stream (100 KiB), `/healthz`, \
         4 KiB upload and event-list requests; its VmRSS after about {l0}, {l1} and {l2} \
         requests.\n\
         - The server runs with its default settings and allocator (jemalloc), no processing \
         workers.\n\n\
         {table}",
        rounds = profile.rounds,
        small = profile.small_kib,
        conns = profile.small_connections,
        secs = profile.load_seconds,
        rows = profile.seed_rows,
        mconns = profile.metadata_connections,
        l0 = profile.leak_counts[0],
        l1 = profile.leak_counts[1],
        l2 = profile.leak_counts[2],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_parse() {
        let default = parse_args(&[]).unwrap();
        assert_eq!(default.profile.name, "full");
        assert!(default.is_complete() && default.runs("transfers"));
        assert_eq!(parse_args(&["--profile", "smoke"]).unwrap().profile, SMOKE);
        assert!(parse_args(&["--profile", "huge"]).is_err());
        assert!(parse_args(&["--profile"]).is_err());

        let some = parse_args(&["--only", "metadata,small", "--system-allocator"]).unwrap();
        assert_eq!(some.profile, FULL);
        assert!(some.runs("metadata") && some.runs("small") && !some.runs("transfers"));
        assert!(some.system_allocator && !some.is_complete());
        assert!(!parse_args(&["--only", "metadata"]).unwrap().is_complete());
        assert!(parse_args(&["--only", "leaks"]).is_err());
        assert!(parse_args(&["--only"]).is_err());
    }

    #[test]
    fn the_database_name_is_replaced_and_the_rest_kept() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "b"),
            "postgres://postgres@127.0.0.1:5432/b"
        );
        assert_eq!(
            with_database("postgresql://u:p@db:6543/app?sslmode=disable", "b"),
            "postgresql://u:p@db:6543/b?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://localhost", "b"),
            "postgres://localhost/b"
        );
    }

    #[test]
    fn the_memory_ratio_row_compares_largest_with_smallest() {
        let figures = [
            (
                16,
                SizeFigures {
                    api_up: vec![100.0],
                    api_down: vec![100.0],
                    curl_up: vec![200.0],
                    curl_down: vec![100.0],
                    up_hwm_kib: 20 * 1024,
                    down_hwm_kib: 20 * 1024,
                    idle_hwm_kib: 10 * 1024,
                    ..SizeFigures::default()
                },
            ),
            (
                1024,
                SizeFigures {
                    api_up: vec![180.0, 190.0, 10.0],
                    api_up_sized: vec![195.0],
                    api_down: vec![100.0],
                    curl_up: vec![200.0],
                    curl_down: vec![100.0],
                    up_hwm_kib: 30 * 1024,
                    down_hwm_kib: 21 * 1024,
                    idle_hwm_kib: 10 * 1024,
                    ..SizeFigures::default()
                },
            ),
        ];
        let bench_rows = transfer_rows(&figures, 1024);
        let find = |prefix: &str| {
            bench_rows
                .iter()
                .find(|r| r.measure.starts_with(prefix))
                .cloned()
                .unwrap()
        };
        let up = find("upload 1024 MiB, MiB/s");
        assert_eq!(up.ours, "180.0", "the median of the rounds");
        assert_eq!(up.ratio, "0.90 (of curl)");
        assert_eq!(up.verdict, "met");
        let sized = find("upload (size declared) 1024 MiB, MiB/s");
        assert_eq!(
            (sized.ours.as_str(), sized.ratio.as_str()),
            ("195.0", "0.97 (of curl)")
        );
        let ratio = find("upload: peak RSS 1024 MiB / 16 MiB");
        assert_eq!(ratio.ratio, "1.50");
        assert_eq!(ratio.verdict, "**not met**");
        let download = find("download: peak RSS");
        assert_eq!(download.verdict, "met");
        assert!(find("**one 1024 MiB upload").ours.contains("30.0"));
    }

    #[test]
    fn each_direction_is_judged_against_the_reference_its_target_names() {
        let f = |size_up: f64| SizeFigures {
            api_up: vec![90.0],
            api_up_sized: vec![200.0],
            api_down: vec![150.0],
            curl_up: vec![300.0],
            curl_down: vec![300.0],
            sdk_up: vec![size_up],
            sdk_down: vec![150.0],
            sdk_up_multipart: vec![100.0],
            sdk_down_parallel: vec![300.0],
            up_cpu_per_gib: vec![3.0],
            up_sized_cpu_per_gib: vec![0.9],
            down_cpu_per_gib: vec![0.3],
            ..SizeFigures::default()
        };
        let rows = transfer_rows(&[(16, f(200.0)), (256, f(200.0))], 256);
        let find = |measure: &str| rows.iter().find(|r| r.measure == measure).cloned().unwrap();
        let up = find("upload 256 MiB, MiB/s");
        assert_eq!(up.ratio, "0.90", "against the SDK's multipart upload");
        assert!(up.reference.starts_with("SDK multipart 100.0; SDK 200.0"));
        assert_eq!(find("upload (size declared) 256 MiB, MiB/s").ratio, "1.00");
        let down = find("download 256 MiB, MiB/s");
        assert_eq!(down.ratio, "0.50", "against the parallel ranged GETs");
        assert_eq!(down.verdict, "**not met**");
        let small = find("download 16 MiB, MiB/s");
        assert_eq!(
            (small.target.as_str(), small.verdict),
            ("", NO_VERDICT),
            "below 64 MiB a download keeps its single GET and has no target"
        );
        assert_eq!(
            find("upload 256 MiB: server CPU s per GiB").verdict,
            "**not met**"
        );
        assert_eq!(
            find("upload (size declared) 256 MiB: server CPU s per GiB").verdict,
            "met"
        );
        assert_eq!(
            find("download 256 MiB: server CPU s per GiB").verdict,
            "met"
        );
    }

    #[test]
    fn verdicts_judge_finite_figures_and_only_those() {
        let at_least = |r: f64| r >= 0.7;
        assert_eq!(
            verdict(Some(0.7), at_least),
            "met",
            "the target itself is met"
        );
        assert_eq!(verdict(Some(0.69), at_least), "**not met**");
        assert_eq!(verdict(Some(2.0), |r| r <= 1.3), "**not met**");
        assert_eq!(verdict(Some(-4.9), |g| g.abs() <= 5.0), "met");
        assert_eq!(verdict(None, at_least), "n/a", "no reference measured");
        // A reference of zero: the ratio is infinite or undefined, and is not judged.
        assert_eq!(verdict(Some(f64::INFINITY), at_least), "n/a");
        assert_eq!(verdict(Some(f64::NAN), |r| r <= 1.3), "n/a");
    }

    #[test]
    fn the_list_script_selects_the_tables_columns_in_order() {
        let sql = list_sql("id, event_id,title");
        assert!(sql.contains(
            "SELECT \"event_media\".\"id\", \"event_media\".\"event_id\", \"event_media\".\"title\" FROM"
        ));
        assert_eq!(sql.matches(";\n").count(), 5, "five statements: {sql}");
    }

    #[test]
    fn pgbench_summary_and_log_give_rate_and_percentiles() {
        let stdout = "transaction type: list.sql\nnumber of clients: 16\n\
                      number of transactions actually processed: 20000\n\
                      number of failed transactions: 0 (0.000%)\n\
                      latency average = 1.600 ms\n\
                      tps = 10000.123456 (without initial connection time)\n";
        let log = "0 1 1500 0 1700000000 1\n0 2 900 0 1700000000 2\n1 1 30000 0 1700000000 3\n";
        let mut latencies = pgbench_latencies(log);
        assert_eq!(latencies, vec![1500.0, 900.0, 30000.0]);
        let load = pgbench_load(stdout, &mut latencies).unwrap();
        assert_eq!(load.requests, 20000);
        assert!((load.per_second() - 10000.123456).abs() < 1e-3);
        assert_eq!((load.p50_ms, load.p99_ms), (1.5, 30.0));
        assert!(pgbench_load("no summary", &mut []).is_none());
    }

    #[test]
    fn the_table_has_one_line_per_row() {
        let rows = [Row {
            measure: "m".to_string(),
            ours: "1".to_string(),
            reference: "2".to_string(),
            ratio: "0.50".to_string(),
            target: ">= 0.5".to_string(),
            verdict: "met",
        }];
        assert!(table(&rows).ends_with("| m | 1 | 2 | 0.50 | >= 0.5 | met |\n"));
    }
}
