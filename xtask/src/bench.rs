//! `cargo xtask bench storage`: S3Store against the bare aws-sdk-s3 client it wraps, both talking
//! to s3s-fs on this machine, so the figures show the wrapper's cost rather than a network's.
//!
//! The measuring itself is `crates/plugs_storage/examples/store_bench.rs`, a release build; this
//! file starts the server, runs it, takes medians and writes docs/PERFORMANCE.md.
//!
//! `cargo xtask bench api` (the HTTP server end to end) lives in `bench_api.rs`; the helpers both
//! share (the `store_bench` runner, machine description, document sections) in `bench_common.rs`.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{Read as _, Write as _};
use std::path::Path;

use anyhow::{Context as _, Result, bail, ensure};

use crate::bench_common::{
    Sample, has_example, kib_to_mib, machine, run_once, today, write_section,
};
use crate::process::{self, cargo};
use crate::services::{self, Guard, Server};

const MODES: [&str; 4] = ["sdk-put", "store-put", "sdk-get", "store-get"];
const ROUNDS: usize = 3;
const HEADING: &str = "## Object store: S3Store vs bare aws-sdk-s3";

pub(crate) fn run(args: &[&str]) -> Result<()> {
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
             cargo xtask bench api [--profile full|smoke]\n       \
             cargo xtask bench imaging [--profile full|smoke]"
        ),
    }
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

pub(crate) fn ratio(numerator: f64, denominator: f64) -> String {
    if denominator > 0.0 {
        format!("{:.2}", numerator / denominator)
    } else {
        "n/a".to_string()
    }
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
