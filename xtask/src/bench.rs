//! `cargo xtask bench storage`: S3Store against the bare aws-sdk-s3 client it wraps, both talking
//! to s3s-fs on this machine, so the figures show the wrapper's cost rather than a network's.
//!
//! The measuring itself is `crates/plugs_storage/examples/store_bench.rs`, a release build; this
//! file starts the server, runs it, takes medians and writes docs/PERFORMANCE.md.
//!
//! `cargo xtask bench api` (the HTTP server end to end) lives in `bench_api.rs`; the helpers both
//! share (machine description, document sections) are here.

use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{Read as _, Write as _};
use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, Result, bail, ensure};
use serde_json::Value;

use crate::process::{self, cargo};
use crate::services::{self, Guard, S3_ACCESS_KEY, S3_SECRET_KEY, Server};

const MODES: [&str; 4] = ["sdk-put", "store-put", "sdk-get", "store-get"];
const ROUNDS: usize = 3;
const BUCKET: &str = "plugs-bench";
const HEADING: &str = "## Object store: S3Store vs bare aws-sdk-s3";

pub(crate) fn run(args: &[&str]) -> Result<()> {
    if let ["api", rest @ ..] = args {
        return crate::bench_api::run(rest);
    }
    let size_mib = parse_args(args)?;
    let metadata = process::metadata()?;
    ensure!(
        has_example(&metadata, "plugs_storage", "store_bench"),
        "plugs_storage has no example `store_bench` \
         (crates/plugs_storage/examples/store_bench.rs): it is what this benchmark runs"
    );
    let target = metadata["target_directory"]
        .as_str()
        .context("cargo metadata has no target_directory")?;
    let binary = Path::new(target).join("release/examples/store_bench");

    process::run(cargo().args([
        "build",
        "--release",
        "-p",
        "plugs_storage",
        "--example",
        "store_bench",
    ]))?;

    let mut guard = Guard::new()?;
    let server = Server::spawn_s3s_fs(&mut guard, &services::cache_dir()?)?;
    server.wait_until_ready(&mut guard)?;
    guard.arm_watchdog();

    let payload = guard.dir().join("payload.bin");
    write_random_file(&payload, size_mib)?;

    let mut samples: Vec<Sample> = Vec::new();
    for round in 1..=ROUNDS {
        for mode in MODES {
            let sample = run_once(&binary, &server.endpoint(), &payload, mode)?;
            println!(
                "round {round}/{ROUNDS} {mode:<9} {:>8.1} MiB/s  {:>8} KiB peak RSS",
                sample.mib_per_s, sample.peak_rss_kib
            );
            samples.push(sample);
        }
    }
    drop(guard);

    let command = format!("cargo xtask bench storage --size-mib {size_mib}");
    let section = section(&samples, size_mib, &command, &machine(), &today());
    println!("\n{section}");
    let path = process::workspace_root().join("docs/PERFORMANCE.md");
    write_section(&path, HEADING, &section)?;
    println!("wrote the section to {}", path.display());
    Ok(())
}

/// Replaces (or appends) one `## ` section of a Markdown document on disk.
pub(crate) fn write_section(path: &Path, heading: &str, section: &str) -> Result<()> {
    let old = fs::read_to_string(path).unwrap_or_else(|_| "# Performance\n".to_string());
    fs::write(path, replace_titled_section(&old, heading, section))
        .with_context(|| format!("could not write {}", path.display()))
}

fn parse_args(args: &[&str]) -> Result<u64> {
    match args {
        ["storage"] => Ok(256),
        ["storage", "--size-mib", size] => {
            let size: u64 = size.parse().context("--size-mib takes a whole number")?;
            ensure!(size > 0, "--size-mib must be at least 1");
            Ok(size)
        }
        _ => bail!(
            "usage: cargo xtask bench storage [--size-mib N]\n       \
             cargo xtask bench api [--profile full|smoke]"
        ),
    }
}

pub(crate) fn has_example(metadata: &Value, package: &str, example: &str) -> bool {
    let packages = metadata["packages"].as_array().map(Vec::as_slice);
    packages
        .unwrap_or_default()
        .iter()
        .filter(|p| p["name"] == package)
        .flat_map(|p| {
            p["targets"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
        })
        .any(|t| {
            t["name"] == example
                && t["kind"]
                    .as_array()
                    .is_some_and(|k| k.contains(&"example".into()))
        })
}

/// Random bytes, so that no layer can compress or deduplicate them.
fn write_random_file(path: &Path, size_mib: u64) -> Result<()> {
    let mut random = File::open("/dev/urandom").context("could not open /dev/urandom")?;
    let mut file = File::create(path)?;
    let mut chunk = vec![0_u8; 1 << 20];
    for _ in 0..size_mib {
        random.read_exact(&mut chunk)?;
        file.write_all(&chunk)?;
    }
    file.sync_all()?;
    Ok(())
}

/// One measurement, as the example prints it on one JSON line.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sample {
    pub(crate) mode: String,
    pub(crate) bytes: u64,
    pub(crate) seconds: f64,
    pub(crate) mib_per_s: f64,
    pub(crate) peak_rss_kib: u64,
}

pub(crate) fn run_once(
    binary: &Path,
    endpoint: &str,
    payload: &Path,
    mode: &str,
) -> Result<Sample> {
    let output = process::run_quietly(
        Command::new(binary)
            .args(["--endpoint", endpoint])
            .args(["--access-key", S3_ACCESS_KEY, "--secret-key", S3_SECRET_KEY])
            .args(["--bucket", BUCKET, "--mode", mode])
            .arg("--file")
            .arg(payload),
    )?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .with_context(|| format!("store_bench --mode {mode} printed nothing"))?;
    parse_sample(line).with_context(|| format!("store_bench --mode {mode} printed `{line}`"))
}

fn parse_sample(line: &str) -> Result<Sample> {
    let json: Value = serde_json::from_str(line)?;
    let number = |field: &str| {
        json[field]
            .as_f64()
            .with_context(|| format!("no number `{field}`"))
    };
    Ok(Sample {
        mode: json["mode"].as_str().context("no `mode`")?.to_string(),
        bytes: json["bytes"].as_u64().context("no `bytes`")?,
        seconds: number("seconds")?,
        mib_per_s: number("mib_per_s")?,
        peak_rss_kib: json["peak_rss_kib"].as_u64().context("no `peak_rss_kib`")?,
    })
}

/// The median of a mode's rounds, taken field by field so one slow round cannot skew it.
fn median(samples: &[Sample], mode: &str) -> Sample {
    let of_mode: Vec<&Sample> = samples.iter().filter(|s| s.mode == mode).collect();
    let middle = of_mode.len() / 2;
    let mut seconds: Vec<f64> = of_mode.iter().map(|s| s.seconds).collect();
    let mut speeds: Vec<f64> = of_mode.iter().map(|s| s.mib_per_s).collect();
    let mut rss: Vec<u64> = of_mode.iter().map(|s| s.peak_rss_kib).collect();
    seconds.sort_by(f64::total_cmp);
    speeds.sort_by(f64::total_cmp);
    rss.sort_unstable();
    Sample {
        mode: mode.to_string(),
        bytes: of_mode.first().map_or(0, |s| s.bytes),
        seconds: seconds.get(middle).copied().unwrap_or_default(),
        mib_per_s: speeds.get(middle).copied().unwrap_or_default(),
        peak_rss_kib: rss.get(middle).copied().unwrap_or_default(),
    }
}

/// `2 cores, <model name>` from this machine.
pub(crate) fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let model = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, model)| model.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".to_string());
    format!("{cores} cores, {model}")
}

pub(crate) fn today() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d"])
        .output()
        .ok()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|date| !date.is_empty())
        .unwrap_or_else(|| "an unknown date".to_string())
}

/// The document section: medians of every round, with the slowest and fastest round beside each
/// throughput so that noise from a shared machine shows instead of hiding in one number.
fn section(samples: &[Sample], size_mib: u64, command: &str, machine: &str, date: &str) -> String {
    let medians: Vec<Sample> = MODES.iter().map(|mode| median(samples, mode)).collect();
    let get = |mode: &str| medians.iter().find(|s| s.mode == mode);
    let spread = |mode: &str| {
        let speeds = samples
            .iter()
            .filter(|s| s.mode == mode)
            .map(|s| s.mib_per_s);
        let min = speeds.clone().fold(f64::INFINITY, f64::min);
        let max = speeds.fold(0.0, f64::max);
        format!("{min:.0}–{max:.0}")
    };
    let mut text = format!(
        "{HEADING}\n\n\
         Measured on {date} with `{command}` on {machine}. One object of {size_mib} MiB of random \
         bytes, one stream, written and read by a release build of \
         `crates/plugs_storage/examples/store_bench.rs` against s3s-fs {} on 127.0.0.1 (data on \
         local disk); the median of {ROUNDS} rounds, with the slowest and fastest round in \
         brackets. Peak RSS is the client process's high-water mark, so it shows whether bytes \
         stream or pile up in memory.\n\n\
         | | bare aws-sdk-s3 | S3Store | S3Store / SDK |\n\
         |---|--:|--:|--:|\n",
        services::S3S_FS_VERSION
    );
    for (label, sdk, store) in [
        ("put", "sdk-put", "store-put"),
        ("get", "sdk-get", "store-get"),
    ] {
        let (Some(sdk), Some(store)) = (get(sdk), get(store)) else {
            continue;
        };
        let _ = writeln!(
            text,
            "| {label}, MiB/s | {:.1} ({}) | {:.1} ({}) | {} |",
            sdk.mib_per_s,
            spread(&sdk.mode),
            store.mib_per_s,
            spread(&store.mode),
            ratio(store.mib_per_s, sdk.mib_per_s)
        );
        let _ = writeln!(
            text,
            "| {label}, peak RSS MiB | {:.1} | {:.1} | {} |",
            kib_to_mib(sdk.peak_rss_kib),
            kib_to_mib(store.peak_rss_kib),
            ratio(kib_to_mib(store.peak_rss_kib), kib_to_mib(sdk.peak_rss_kib))
        );
    }
    text
}

pub(crate) fn kib_to_mib(kib: u64) -> f64 {
    // Exact for any realistic peak RSS; f64 holds integers up to 2^53.
    #[allow(clippy::cast_precision_loss)]
    let kib = kib as f64;
    kib / 1024.0
}

pub(crate) fn ratio(numerator: f64, denominator: f64) -> String {
    if denominator > 0.0 {
        format!("{:.2}", numerator / denominator)
    } else {
        "n/a".to_string()
    }
}

/// The document with our section replaced, or appended if it has none; every other section stays.
#[cfg(test)]
fn replace_section(document: &str, section: &str) -> String {
    replace_titled_section(document, HEADING, section)
}

/// The document with the `## ` section titled `heading` replaced by `section`, or `section`
/// appended if there is none; every other section stays as it is.
pub(crate) fn replace_titled_section(document: &str, heading: &str, section: &str) -> String {
    let mut out = String::new();
    let mut lines = document.lines().peekable();
    let mut replaced = false;
    while let Some(line) = lines.next() {
        if line.trim_end() == heading {
            // Skip the old section up to the next heading of the same or a higher level.
            while lines
                .peek()
                .is_some_and(|next| !(next.starts_with("## ") || next.starts_with("# ")))
            {
                lines.next();
            }
            out.push_str(section.trim_end());
            out.push_str("\n\n");
            replaced = true;
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    if !replaced {
        if !out.ends_with("\n\n") {
            out.push('\n');
        }
        out.push_str(section.trim_end());
        out.push('\n');
    }
    out.trim_end().to_string() + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(mode: &str, mib_per_s: f64, rss: u64) -> Sample {
        Sample {
            mode: mode.to_string(),
            bytes: 1 << 20,
            seconds: 1.0 / mib_per_s,
            mib_per_s,
            peak_rss_kib: rss,
        }
    }

    #[test]
    fn median_takes_the_middle_round_of_one_mode() {
        let samples = [
            sample("sdk-put", 100.0, 9000),
            sample("store-put", 1.0, 1),
            sample("sdk-put", 300.0, 7000),
            sample("sdk-put", 200.0, 8000),
        ];
        let median = median(&samples, "sdk-put");
        assert_eq!(median.mib_per_s, 200.0);
        assert_eq!(median.peak_rss_kib, 8000);
    }

    #[test]
    fn the_example_output_line_parses() {
        let line = r#"{"mode":"store-get","bytes":268435456,"seconds":1.5,"mib_per_s":170.7,"peak_rss_kib":13312}"#;
        assert_eq!(
            parse_sample(line).unwrap(),
            Sample {
                mode: "store-get".to_string(),
                bytes: 268_435_456,
                seconds: 1.5,
                mib_per_s: 170.7,
                peak_rss_kib: 13312
            }
        );
    }

    #[test]
    fn replacing_the_section_keeps_the_others() {
        let document = format!(
            "# Performance\n\nIntro.\n\n## Uploads\n\nfast\n\n{HEADING}\n\nold figures\n\n## Database\n\nrows\n"
        );
        let updated = replace_section(&document, &format!("{HEADING}\n\nnew figures\n"));
        assert_eq!(
            updated,
            format!(
                "# Performance\n\nIntro.\n\n## Uploads\n\nfast\n\n{HEADING}\n\nnew figures\n\n## Database\n\nrows\n"
            )
        );
    }

    #[test]
    fn a_missing_section_is_appended() {
        let updated = replace_section("# Performance\n\nIntro.\n", &format!("{HEADING}\n\nx\n"));
        assert_eq!(
            updated,
            format!("# Performance\n\nIntro.\n\n{HEADING}\n\nx\n")
        );
    }

    #[test]
    fn the_section_shows_ratios_of_store_to_sdk() {
        let samples = [
            sample("sdk-put", 200.0, 20480),
            sample("sdk-put", 260.0, 20480),
            sample("sdk-put", 180.0, 20480),
            sample("store-put", 100.0, 10240),
            sample("sdk-get", 100.0, 10240),
            sample("store-get", 150.0, 10240),
        ];
        let text = section(&samples, 256, "cmd", "2 cores, X", "2026-01-01");
        assert!(
            text.contains("| put, MiB/s | 200.0 (180–260) | 100.0 (100–100) | 0.50 |"),
            "{text}"
        );
        assert!(
            text.contains("| put, peak RSS MiB | 20.0 | 10.0 | 0.50 |"),
            "{text}"
        );
        assert!(
            text.contains("| get, MiB/s | 100.0 (100–100) | 150.0 (150–150) | 1.50 |"),
            "{text}"
        );
    }

    #[test]
    fn size_argument_is_validated() {
        assert_eq!(parse_args(&["storage"]).unwrap(), 256);
        assert_eq!(parse_args(&["storage", "--size-mib", "8"]).unwrap(), 8);
        assert!(parse_args(&["storage", "--size-mib", "0"]).is_err());
        assert!(parse_args(&["network"]).is_err());
    }
}
