//! `cargo xtask load`: many uploads at once through the real plugs-api on PostgreSQL and s3s-fs,
//! with listing and downloading alongside, then proof that the database and the bucket agree:
//! every record's object downloads with its recorded size and SHA-256, and the bucket holds
//! nothing else. Then two server processes sharing the database and the bucket: what one uploads
//! the other reads and deletes.
//!
//! Like the bench, it stays std + anyhow + serde_json: every byte moves through curl, and the
//! checksums come from `sha256sum`.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::Instant;

use anyhow::{Context as _, Result, bail, ensure};
use serde_json::Value;

use crate::bench_api::http::{self, Api};
use crate::bench_api::{Database, create_bucket};
use crate::bench_common;
use crate::process::{self, cargo};
use crate::services::{Guard, S3_ACCESS_KEY, S3_SECRET_KEY, Services};

const BUCKET: &str = "plugs-load";
const JWT_SECRET: &str = "plugs-load-jwt-secret-not-a-secret-0123456789";
const HEADING: &str = "## Load: concurrent uploads against PostgreSQL and s3s-fs";
const KIB: u64 = 1024;

/// How hard to push.
#[derive(Debug, Clone)]
struct Profile {
    name: &'static str,
    uploads: usize,
    concurrency: usize,
    max_size: u64,
    release: bool,
}

const FULL: Profile = Profile {
    name: "full",
    uploads: 500,
    concurrency: 50,
    max_size: 8 * 1024 * KIB,
    release: true,
};

/// What `cargo xtask ci` runs: the same checks, small and on the debug build.
const SMOKE: Profile = Profile {
    name: "smoke",
    uploads: 40,
    concurrency: 8,
    max_size: 256 * KIB,
    release: false,
};

fn parse_args(args: &[&str]) -> Result<Profile> {
    let mut profile = FULL;
    let mut rest = args;
    while let Some((flag, tail)) = rest.split_first() {
        let value = |tail: &[&str]| -> Result<usize> {
            tail.first()
                .with_context(|| format!("{flag} takes a number"))?
                .parse()
                .with_context(|| format!("{flag} takes a whole number"))
        };
        rest = match *flag {
            "--smoke" => {
                profile = Profile { ..SMOKE };
                tail
            }
            "--uploads" => {
                profile.uploads = value(tail)?;
                &tail[1..]
            }
            "--concurrency" => {
                profile.concurrency = value(tail)?;
                &tail[1..]
            }
            _ => bail!(
                "usage: cargo xtask load [--smoke] [--uploads N] [--concurrency N]\n\
                 unknown argument `{flag}`"
            ),
        };
    }
    ensure!(
        profile.uploads > 0 && profile.concurrency > 0,
        "--uploads and --concurrency must be at least 1"
    );
    Ok(profile)
}

/// `cargo xtask load`.
pub(crate) fn run(args: &[&str]) -> Result<()> {
    run_profile(parse_args(args)?)
}

/// The smoke profile, as a `cargo xtask ci` step.
pub(crate) fn smoke() -> Result<()> {
    run_profile(SMOKE)
}

fn run_profile(profile: Profile) -> Result<()> {
    let mut command_line = String::from("cargo xtask load");
    if profile.name == "smoke" {
        command_line.push_str(" --smoke");
    } else {
        command_line.push_str(&format!(
            " --uploads {} --concurrency {}",
            profile.uploads, profile.concurrency
        ));
    }
    let binary = build(&profile)?;
    let services = Services::start()?;
    let vars: HashMap<&str, String> = services.env().into_iter().collect();
    let pg_url = vars
        .get("PLUGS_TEST_PG_URL")
        .context("services gave no PostgreSQL URL")?;
    let s3 = vars
        .get("PLUGS_TEST_S3S_ENDPOINT")
        .context("services gave no s3s-fs endpoint")?
        .clone();
    // s3s-fs keeps each bucket as a plain directory of its objects.
    let bucket_dir = services.scratch_dir().join("s3s-fs-data").join(BUCKET);
    let scratch = Guard::new()?;
    let database = Database::create(pg_url, "plugs_load")?;
    create_bucket(&s3, BUCKET)?;

    let api = Api {
        binary,
        env: [
            ("DATABASE_URL", database.url()),
            ("DATA_DIR", scratch.dir().join("data").display().to_string()),
            ("S3_BUCKET_NAME", BUCKET.to_string()),
            ("S3_ENDPOINT_URL", s3),
            ("S3_FORCE_PATH_STYLE", "true".to_string()),
            ("S3_REGION", "us-east-1".to_string()),
            ("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY.to_string()),
            ("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY.to_string()),
            ("MAX_FILE_SIZE", (profile.max_size + KIB).to_string()),
            ("JWT_SECRET", JWT_SECRET.to_string()),
            ("RUST_LOG", "warn".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect(),
        dir: scratch.dir().to_path_buf(),
    };
    let token = api.token("load")?;
    let files = make_files(&scratch.dir().join("files"), &profile)?;

    let server = api.start()?;
    let base = server.base_url();
    let (status, event) = http::json_request(
        "POST",
        &format!("{base}/api/v1/events"),
        &token,
        Some(r#"{"title":"load"}"#),
    )?;
    ensure!(status == 201, "creating the event answered {status}");
    let event = event["id"]
        .as_str()
        .context("event without id")?
        .to_string();
    let media_url = format!("{base}/api/v1/events/{event}/media");

    println!(
        "load: {} uploads ({} in flight, 1 KiB..{} KiB, {:.1} MiB in all) with listing and \
         downloading alongside",
        profile.uploads,
        profile.concurrency,
        profile.max_size / KIB,
        files.iter().map(|f| f.size).sum::<u64>() as f64 / (KIB * KIB) as f64
    );
    let outcome = upload_all(
        &files,
        &media_url,
        &token,
        profile.concurrency,
        scratch.dir(),
    )?;
    let memory = server.memory()?;

    let records = list_all(&media_url, &token)?;
    verify(
        &records,
        &files,
        &outcome,
        &media_url,
        &token,
        &bucket_dir,
        profile.concurrency,
    )?;
    let not_ready = database.sql("SELECT count(*) FROM event_media WHERE status <> 'ready'")?;
    ensure!(
        not_ready == "0",
        "{not_ready} records are not ready after the load"
    );

    let shared = two_servers(&api, &token, &event, &files, &bucket_dir)?;
    drop(server);

    let latencies = percentiles(&outcome.upload_seconds);
    let wall = outcome.wall_seconds;
    let total_bytes: u64 = files.iter().map(|f| f.size).sum();
    let report = format!(
        "| figure | value |\n|---|---|\n\
         | uploads | {} ({} in flight), 1 KiB..{} KiB, {:.1} MiB in all |\n\
         | wall time | {wall:.1} s |\n\
         | throughput | {:.1} uploads/s, {:.1} MiB/s |\n\
         | upload latency p50 / p99 | {:.3} s / {:.3} s |\n\
         | reads alongside | {} lists, {} downloads, 0 errors |\n\
         | server peak RSS (VmHWM) | {:.1} MiB |\n\
         | after: records ready / objects / stray objects | {} / {} / 0, every SHA-256 and size matches |\n\
         | two servers, one database and bucket | {shared} uploaded on A, read and deleted on B, 0 left |\n",
        profile.uploads,
        profile.concurrency,
        profile.max_size / KIB,
        total_bytes as f64 / (KIB * KIB) as f64,
        profile.uploads as f64 / wall,
        total_bytes as f64 / (KIB * KIB) as f64 / wall,
        latencies.0,
        latencies.1,
        outcome.lists,
        outcome.downloads,
        bench_common::kib_to_mib(memory.hwm_kib),
        records.len(),
        records.len(),
    );
    println!("\n{report}");
    if profile.release {
        let section = format!(
            "{HEADING}\n\n`{command_line}` on {}, {} (release build; PostgreSQL and s3s-fs on the \
             same machine).\n\n{report}",
            bench_common::machine(),
            bench_common::today()
        );
        let path = process::workspace_root().join("docs/RELIABILITY.md");
        bench_common::write_section(&path, HEADING, &section)?;
        println!("wrote the figures to {}", path.display());
    }
    drop(database);
    drop(scratch);
    drop(services);
    Ok(())
}

/// Builds plugs-api (release for the full profile) and returns its path.
fn build(profile: &Profile) -> Result<PathBuf> {
    let metadata = process::metadata()?;
    let target = metadata["target_directory"]
        .as_str()
        .context("cargo metadata has no target_directory")?;
    let release: &[&str] = if profile.release { &["--release"] } else { &[] };
    process::run(cargo().arg("build").args(release).args([
        "-p",
        "plugs-api",
        "--bin",
        "plugs-api",
    ]))?;
    let dir = if profile.release { "release" } else { "debug" };
    Ok(Path::new(target).join(dir).join("plugs-api"))
}

/// One file to upload.
#[derive(Debug, Clone)]
struct File {
    path: PathBuf,
    name: String,
    size: u64,
    sha256: String,
}

/// Sizes spread evenly on a log scale from 1 KiB to the profile's maximum (most files small, a
/// few large, as photo uploads are), in a fixed pseudo-random order so runs compare.
fn make_files(dir: &Path, profile: &Profile) -> Result<Vec<File>> {
    fs::create_dir_all(dir)?;
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let (low, high) = ((KIB as f64).ln(), (profile.max_size as f64).ln());
    let mut files = Vec::with_capacity(profile.uploads);
    for index in 0..profile.uploads {
        // xorshift64*: deterministic, no dependency.
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        let unit = (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1_u64 << 53) as f64;
        let size = (low + unit * (high - low)).exp() as u64;
        let name = format!("load-{index:04}.png");
        let path = dir.join(&name);
        http::write_png_file(&path, size)?;
        files.push(File {
            sha256: sha256_file(&path)?,
            path,
            name,
            size,
        });
    }
    Ok(files)
}

fn sha256_file(path: &Path) -> Result<String> {
    let output = process::run_quietly(Command::new("sha256sum").arg(path))?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.split_whitespace()
        .next()
        .map(str::to_string)
        .context("sha256sum printed nothing")
}

/// What the load phase saw.
#[derive(Debug, Default)]
struct Outcome {
    /// The created media, by file name.
    created: BTreeMap<String, Value>,
    upload_seconds: Vec<f64>,
    wall_seconds: f64,
    lists: usize,
    downloads: usize,
}

/// Uploads every file with `concurrency` uploads in flight, while one reader lists the event
/// and another downloads what is already there, until the uploads are done.
fn upload_all(
    files: &[File],
    media_url: &str,
    token: &str,
    concurrency: usize,
    dir: &Path,
) -> Result<Outcome> {
    let next = AtomicUsize::new(0);
    let done = AtomicBool::new(false);
    let created: Mutex<BTreeMap<String, Value>> = Mutex::default();
    let seconds: Mutex<Vec<f64>> = Mutex::default();
    let errors: Mutex<Vec<String>> = Mutex::default();
    let (lists, downloads) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let responses = dir.join("responses");
    fs::create_dir_all(&responses)?;
    let started = Instant::now();
    thread::scope(|scope| {
        let uploaders: Vec<_> = (0..concurrency)
            .map(|_| {
                scope.spawn(|| {
                    loop {
                        let index = next.fetch_add(1, Ordering::SeqCst);
                        let Some(file) = files.get(index) else { break };
                        let response = responses.join(format!("{index}.json"));
                        let result = http::run_transfer(&mut http::upload_command(
                            media_url,
                            token,
                            &file.path,
                            &file.name,
                            "image/png",
                            &response,
                        ))
                        .and_then(|transfer| {
                            let body = fs::read_to_string(&response).unwrap_or_default();
                            ensure!(
                                transfer.status == 201,
                                "{} answered {}: {body}",
                                file.name,
                                transfer.status
                            );
                            let media: Value = serde_json::from_str(&body)?;
                            Ok((transfer.seconds, media))
                        });
                        match result {
                            Ok((secs, media)) => {
                                lock(&seconds).push(secs);
                                lock(&created).insert(file.name.clone(), media);
                            }
                            Err(err) => lock(&errors).push(format!("{err:#}")),
                        }
                    }
                })
            })
            .collect();
        // Readers alongside: lists, and downloads of whatever exists already.
        scope.spawn(|| {
            while !done.load(Ordering::SeqCst) {
                match http::json_request("GET", &format!("{media_url}?limit=50"), token, None) {
                    Ok((200, _)) => {
                        lists.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok((status, body)) => {
                        lock(&errors).push(format!("list answered {status}: {body}"))
                    }
                    Err(err) => lock(&errors).push(format!("{err:#}")),
                }
            }
        });
        scope.spawn(|| {
            let mut round = 0;
            while !done.load(Ordering::SeqCst) {
                let pick = {
                    let created = lock(&created);
                    let ids: Vec<(String, u64)> = created
                        .values()
                        .filter_map(|m| {
                            Some((m["id"].as_str()?.to_string(), m["size_bytes"].as_u64()?))
                        })
                        .collect();
                    round += 1;
                    (!ids.is_empty()).then(|| ids[round % ids.len()].clone())
                };
                let Some((id, size)) = pick else {
                    thread::yield_now();
                    continue;
                };
                let url = format!("{media_url}/{id}/download");
                match http::run_transfer(&mut http::download_command(&url, token)) {
                    Ok(t) if t.status == 200 && t.bytes_down == size => {
                        downloads.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(t) => {
                        lock(&errors).push(format!("download {id}: {t:?}, expected {size} bytes"))
                    }
                    Err(err) => lock(&errors).push(format!("{err:#}")),
                }
            }
        });
        for uploader in uploaders {
            let _ = uploader.join();
        }
        done.store(true, Ordering::SeqCst);
    });
    let wall_seconds = started.elapsed().as_secs_f64();
    let errors = errors.into_inner().unwrap_or_else(|e| e.into_inner());
    if !errors.is_empty() {
        bail!(
            "{} requests failed under load; first: {}",
            errors.len(),
            errors[0]
        );
    }
    Ok(Outcome {
        created: created.into_inner().unwrap_or_else(|e| e.into_inner()),
        upload_seconds: seconds.into_inner().unwrap_or_else(|e| e.into_inner()),
        wall_seconds,
        lists: lists.into_inner(),
        downloads: downloads.into_inner(),
    })
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Every media of the event, following `next_cursor`.
fn list_all(media_url: &str, token: &str) -> Result<Vec<Value>> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            Some(cursor) => format!("{media_url}?limit=100&cursor={cursor}"),
            None => format!("{media_url}?limit=100"),
        };
        let (status, page) = http::json_request("GET", &url, token, None)?;
        ensure!(status == 200, "listing answered {status}: {page}");
        items.extend(page["items"].as_array().cloned().unwrap_or_default());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => return Ok(items),
        }
    }
}

/// Every record matches an upload, downloads whole with its recorded SHA-256 (that of the file
/// sent), and is in the bucket with its size; the bucket holds nothing else but derived versions
/// of those originals (thumbnails a processing worker made meanwhile).
fn verify(
    records: &[Value],
    files: &[File],
    outcome: &Outcome,
    media_url: &str,
    token: &str,
    bucket_dir: &Path,
    concurrency: usize,
) -> Result<()> {
    ensure!(
        records.len() == files.len(),
        "{} records listed for {} uploads",
        records.len(),
        files.len()
    );
    let by_name: HashMap<&str, &File> = files.iter().map(|f| (f.name.as_str(), f)).collect();
    let mut expected = BTreeMap::new();
    for record in records {
        let name = record["original_filename"].as_str().unwrap_or_default();
        let file = by_name
            .get(name)
            .with_context(|| format!("a record for no upload: {record}"))?;
        ensure!(
            record["sha256"].as_str() == Some(file.sha256.as_str())
                && record["size_bytes"].as_u64() == Some(file.size),
            "record {record} does not describe {name} ({} bytes, {})",
            file.size,
            file.sha256
        );
        ensure!(
            outcome.created.get(name).map(|m| &m["id"]) == Some(&record["id"]),
            "the listing and the upload answer disagree on {name}"
        );
        let key = record["s3_key"].as_str().context("record without s3_key")?;
        expected.insert(
            key.to_string(),
            (record["id"].as_str().unwrap_or_default().to_string(), *file),
        );
    }

    // The bucket, read from s3s-fs's directory: the recorded keys, of the recorded sizes, and
    // their derived versions.
    let mut stored = BTreeMap::new();
    list_files(bucket_dir, bucket_dir, &mut stored)?;
    // A derived version (`{original key}.{variant}.{ext}`, written by a processing worker while
    // the load ran) is claimed by its original's record.
    let derived_of_recorded = |key: &str| {
        let mut parts = key.rsplitn(3, '.');
        let (_ext, _variant) = (parts.next(), parts.next());
        parts
            .next()
            .is_some_and(|original| expected.contains_key(original))
    };
    let orphans: Vec<&String> = stored
        .keys()
        .filter(|k| !expected.contains_key(*k) && !derived_of_recorded(k))
        .collect();
    ensure!(orphans.is_empty(), "objects no record claims: {orphans:?}");
    for (key, (_, file)) in &expected {
        ensure!(
            stored.get(key) == Some(&file.size),
            "object {key}: {:?} bytes stored, {} recorded",
            stored.get(key),
            file.size
        );
    }

    // Through the API, whole, checksummed: `concurrency` downloads at a time.
    let queue: Vec<&(String, &File)> = expected.values().collect();
    let next = AtomicUsize::new(0);
    let failures: Mutex<Vec<String>> = Mutex::default();
    thread::scope(|scope| {
        for _ in 0..concurrency.min(8) {
            scope.spawn(|| {
                while let Some((id, file)) = queue.get(next.fetch_add(1, Ordering::SeqCst)).copied()
                {
                    let url = format!("{media_url}/{id}/download");
                    let script =
                        "curl -sS --fail -H \"Authorization: Bearer $2\" \"$1\" | sha256sum";
                    let result = process::run_quietly(
                        Command::new("sh").args(["-c", script, "sh", &url, token]),
                    );
                    match result {
                        Ok(output) => {
                            let text = String::from_utf8_lossy(&output.stdout);
                            let got = text.split_whitespace().next().unwrap_or_default();
                            if got != file.sha256 {
                                lock(&failures).push(format!(
                                    "{}: downloaded {got}, sent {}",
                                    file.name, file.sha256
                                ));
                            }
                        }
                        Err(err) => lock(&failures).push(format!("{err:#}")),
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap_or_else(|e| e.into_inner());
    ensure!(failures.is_empty(), "downloads differ: {failures:?}");
    println!(
        "load: {} records, {} objects, every download matches its SHA-256, no stray object",
        records.len(),
        stored.len()
    );
    Ok(())
}

fn list_files(root: &Path, dir: &Path, out: &mut BTreeMap<String, u64>) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("could not list {}", dir.display()))? {
        let entry = entry?;
        let path = entry.path();
        if path.is_dir() {
            list_files(root, &path, out)?;
        } else {
            let key = path.strip_prefix(root)?.to_string_lossy().into_owned();
            out.insert(key, entry.metadata()?.len());
        }
    }
    Ok(())
}

/// Two servers on one database and bucket: each file uploaded through A is read (checksummed)
/// and deleted through B, after which A finds it gone and the bucket no longer has it.
fn two_servers(
    api: &Api,
    token: &str,
    event: &str,
    files: &[File],
    bucket_dir: &Path,
) -> Result<usize> {
    let a = api.start()?;
    let b = api.start()?;
    let count = files.len().min(20);
    for file in files.iter().take(count) {
        let url_a = format!("{}/api/v1/events/{event}/media", a.base_url());
        let url_b = format!("{}/api/v1/events/{event}/media", b.base_url());
        let response = api.dir.join("two-servers.json");
        let transfer = http::run_transfer(&mut http::upload_command(
            &url_a,
            token,
            &file.path,
            &file.name,
            "image/png",
            &response,
        ))?;
        ensure!(
            transfer.status == 201,
            "upload through A answered {}",
            transfer.status
        );
        let media: Value = serde_json::from_str(&fs::read_to_string(&response)?)?;
        let id = media["id"].as_str().context("no id")?;
        let key = media["s3_key"].as_str().context("no key")?;
        let script = "curl -sS --fail -H \"Authorization: Bearer $2\" \"$1\" | sha256sum";
        let output = process::run_quietly(Command::new("sh").args([
            "-c",
            script,
            "sh",
            &format!("{url_b}/{id}/download"),
            token,
        ]))?;
        let got = String::from_utf8_lossy(&output.stdout);
        ensure!(
            got.starts_with(&file.sha256),
            "B served {got} for {}",
            file.name
        );
        let (status, _) = http::json_request("DELETE", &format!("{url_b}/{id}"), token, None)?;
        ensure!(status == 204, "delete through B answered {status}");
        let (status, _) = http::json_request("GET", &format!("{url_a}/{id}"), token, None)?;
        ensure!(
            status == 404,
            "A still finds {id} after B deleted it ({status})"
        );
        ensure!(
            !bucket_dir.join(key).exists(),
            "{key} is still in the bucket"
        );
    }
    println!("load: {count} files uploaded through A, read and deleted through B");
    Ok(count)
}

/// p50 and p99, nearest rank.
fn percentiles(values: &[f64]) -> (f64, f64) {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = |p: f64| {
        if sorted.is_empty() {
            return 0.0;
        }
        let index = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
        sorted[index]
    };
    (rank(0.50), rank(0.99))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentiles(&values), (50.0, 99.0));
        assert_eq!(percentiles(&[3.0]), (3.0, 3.0));
    }

    #[test]
    fn arguments_choose_a_profile_and_override_it() {
        let profile = parse_args(&["--uploads", "10", "--concurrency", "2"]).unwrap();
        assert_eq!(
            (profile.uploads, profile.concurrency, profile.release),
            (10, 2, true)
        );
        let profile = parse_args(&["--smoke"]).unwrap();
        assert_eq!((profile.uploads, profile.release), (40, false));
        assert!(parse_args(&["--uploads"]).is_err());
        assert!(parse_args(&["--uploads", "0"]).is_err());
    }
}
