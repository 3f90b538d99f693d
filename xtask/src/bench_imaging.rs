//! `cargo xtask bench imaging`: thumbnails per second per core of 12-megapixel JPEGs, made by
//! `plugs_imaging::render` on one thread as a worker makes them, against `vipsthumbnail` (libvips,
//! the fastest widely used thumbnailer) with `VIPS_CONCURRENCY=1`, on the same files, at the same
//! size, in the same run.
//!
//! The rendering is `crates/plugs_imaging/examples/thumb_bench.rs` (a release build), which also
//! makes the photo-like fixtures. Both thumbnailers run as child processes under GNU `time`, which
//! reports each one's wall time, CPU time and peak resident set (`wait4`'s rusage); rounds
//! alternate between them, and the medians are written to docs/PERFORMANCE.md.
//!
//! `--profile smoke` (the CI bench step) renders two small fixtures with a debug build, checks
//! that both thumbnailers made thumbnails of the asked size, and writes nothing.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail, ensure};

use crate::bench_api::http::find_or_install;
use crate::bench_common::{has_example, kib_to_mib, machine, today, write_section};
use crate::process::{self, cargo};

const HEADING: &str = "## Thumbnails";
/// The thumbnail width, the worker's smallest default; the fixtures are landscape, so both
/// thumbnailers make 256 x 192.
const WIDTH: u32 = 256;
/// The quality `thumb_bench` encodes at (its `QUALITY`), asked of vipsthumbnail too.
const QUALITY: u8 = 80;

struct Profile {
    name: &'static str,
    release: bool,
    files: u32,
    width: u32,
    height: u32,
    rounds: usize,
}

const FULL: Profile = Profile {
    name: "full",
    release: true,
    files: 12,
    width: 4000,
    height: 3000,
    rounds: 5,
};

const SMOKE: Profile = Profile {
    name: "smoke",
    release: false,
    files: 2,
    width: 1000,
    height: 750,
    rounds: 1,
};

/// The CI bench step's run: small, debug, nothing written.
pub(crate) fn smoke() -> Result<()> {
    run(&["--profile", "smoke"])
}

pub(crate) fn run(args: &[&str]) -> Result<()> {
    let profile = match args {
        [] | ["--profile", "full"] => FULL,
        ["--profile", "smoke"] => SMOKE,
        _ => bail!("usage: cargo xtask bench imaging [--profile full|smoke]"),
    };
    println!(
        "bench imaging, profile {}: {} JPEGs of {} x {}",
        profile.name, profile.files, profile.width, profile.height
    );
    let vips = find_or_install("vipsthumbnail", "libvips-tools", "vipsthumbnail (libvips)")?;
    let time = find_or_install("time", "time", "GNU time")?;
    let thumb_bench = build(&profile)?;
    // Other work on the machine shows in wall times more than in CPU times; the figures say
    // how busy it was.
    let load = fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned());

    let scratch = Scratch::new()?;
    let fixtures = scratch.0.join("fixtures");
    process::run_quietly(
        Command::new(&thumb_bench)
            .arg("fixtures")
            .arg(&fixtures)
            .args([profile.files, profile.width, profile.height].map(|n| n.to_string())),
    )?;
    let mut files: Vec<PathBuf> = fs::read_dir(&fixtures)?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    files.sort();
    let fixture_bytes: u64 = files
        .iter()
        .map(|f| fs::metadata(f).map(|m| m.len()))
        .sum::<std::io::Result<u64>>()?;

    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for round in 1..=profile.rounds {
        let out = scratch.0.join(format!("ours-{round}"));
        let mut command = Command::new(&thumb_bench);
        command.arg("render").arg(&out).args(&files);
        let sample = timed(&time, &mut command, &scratch.0.join("time-ours"))?;
        check_thumbnails(&thumb_bench, &out, files.len())?;
        print_sample("plugs_imaging", round, profile.rounds, &sample);
        ours.push(sample);

        let out = scratch.0.join(format!("vips-{round}"));
        fs::create_dir_all(&out)?;
        let mut command = Command::new(&vips);
        command
            .env("VIPS_CONCURRENCY", "1")
            .args(["--size", &format!("{WIDTH}x")])
            .arg("-o")
            .arg(format!("{}/%s.jpg[Q={QUALITY}]", out.display()))
            .args(&files);
        let sample = timed(&time, &mut command, &scratch.0.join("time-vips"))?;
        check_thumbnails(&thumb_bench, &out, files.len())?;
        print_sample("vipsthumbnail", round, profile.rounds, &sample);
        theirs.push(sample);
    }
    let (ours, theirs) = (median(&ours), median(&theirs));
    let count = files.len();
    println!(
        "\nplugs_imaging {:.1} thumbnails/s per core, vipsthumbnail {:.1}: {:.0}% of its rate",
        ours.per_core(count),
        theirs.per_core(count),
        100.0 * ours.per_core(count) / theirs.per_core(count)
    );
    if profile.release {
        let command = "cargo xtask bench imaging";
        let section = section(
            &profile,
            count,
            fixture_bytes,
            &ours,
            &theirs,
            command,
            &load,
        );
        println!("\n{section}");
        let path = process::workspace_root().join("docs/PERFORMANCE.md");
        write_section(&path, HEADING, &section)?;
        println!("wrote the section to {}", path.display());
    }
    Ok(())
}

/// Builds the example and answers its path.
fn build(profile: &Profile) -> Result<PathBuf> {
    let metadata = process::metadata()?;
    ensure!(
        has_example(&metadata, "plugs_imaging", "thumb_bench"),
        "plugs_imaging has no example `thumb_bench` \
         (crates/plugs_imaging/examples/thumb_bench.rs): it is what this benchmark runs"
    );
    let target = metadata["target_directory"]
        .as_str()
        .context("cargo metadata has no target_directory")?;
    let mut build = cargo();
    build.args(["build", "-p", "plugs_imaging", "--example", "thumb_bench"]);
    if profile.release {
        build.arg("--release");
    }
    process::run(&mut build)?;
    let dir = if profile.release { "release" } else { "debug" };
    Ok(Path::new(target).join(dir).join("examples/thumb_bench"))
}

/// A temporary directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("plugs-bench-imaging-{}", std::process::id()));
        fs::create_dir_all(&dir)?;
        Ok(Self(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// One run of a thumbnailer over every fixture, as GNU `time` saw the child process.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Sample {
    wall: f64,
    user: f64,
    system: f64,
    peak_rss_kib: u64,
}

impl Sample {
    fn cpu(&self) -> f64 {
        self.user + self.system
    }

    /// Thumbnails per second of CPU time: per core, whatever threads the process ran.
    fn per_core(&self, count: usize) -> f64 {
        count_f64(count) / self.cpu().max(1e-3)
    }

    fn per_wall_second(&self, count: usize) -> f64 {
        count_f64(count) / self.wall.max(1e-3)
    }
}

fn count_f64(count: usize) -> f64 {
    f64::from(u32::try_from(count).unwrap_or(u32::MAX))
}

/// Runs `command` under GNU `time`, its report written to `report`.
fn timed(time: &Path, command: &mut Command, report: &Path) -> Result<Sample> {
    let mut wrapped = Command::new(time);
    wrapped
        .args(["-f", "%e %U %S %M", "-o"])
        .arg(report)
        .arg(command.get_program())
        .args(command.get_args());
    for (name, value) in command.get_envs() {
        if let Some(value) = value {
            wrapped.env(name, value);
        }
    }
    process::run_quietly(&mut wrapped)?;
    let text = fs::read_to_string(report)?;
    parse_time(&text).with_context(|| format!("GNU time reported `{}`", text.trim()))
}

/// `%e %U %S %M`: wall, user and system seconds, peak RSS in KiB (the last line: a failing child
/// makes time print a status line first).
fn parse_time(text: &str) -> Result<Sample> {
    let line = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .context("empty report")?;
    let fields: Vec<&str> = line.split_whitespace().collect();
    let [wall, user, system, rss] = fields.as_slice() else {
        bail!("expected four fields");
    };
    Ok(Sample {
        wall: wall.parse()?,
        user: user.parse()?,
        system: system.parse()?,
        peak_rss_kib: rss.parse()?,
    })
}

/// Every fixture has a thumbnail in `out`, 256 pixels wide.
fn check_thumbnails(thumb_bench: &Path, out: &Path, count: usize) -> Result<()> {
    let mut thumbnails: Vec<PathBuf> = fs::read_dir(out)?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    thumbnails.sort();
    ensure!(
        thumbnails.len() == count,
        "{} thumbnails in {}, expected {count}",
        thumbnails.len(),
        out.display()
    );
    let output = process::run_quietly(Command::new(thumb_bench).arg("dims").args(&thumbnails))?;
    let expected = format!("{WIDTH}x{}", WIDTH * 3 / 4);
    for (line, file) in String::from_utf8_lossy(&output.stdout)
        .lines()
        .zip(&thumbnails)
    {
        ensure!(
            line == expected,
            "{} is {line}, expected {expected}",
            file.display()
        );
    }
    Ok(())
}

fn print_sample(who: &str, round: usize, rounds: usize, sample: &Sample) {
    println!(
        "round {round}/{rounds} {who:<14} {:>6.2} s wall {:>6.2} s CPU {:>8} KiB peak RSS",
        sample.wall,
        sample.cpu(),
        sample.peak_rss_kib
    );
}

/// The median of each field on its own, so one slow round cannot skew it.
fn median(samples: &[Sample]) -> Sample {
    let middle = samples.len() / 2;
    let pick = |field: fn(&Sample) -> f64| {
        let mut values: Vec<f64> = samples.iter().map(field).collect();
        values.sort_by(f64::total_cmp);
        values.get(middle).copied().unwrap_or_default()
    };
    let mut rss: Vec<u64> = samples.iter().map(|s| s.peak_rss_kib).collect();
    rss.sort_unstable();
    Sample {
        wall: pick(|s| s.wall),
        user: pick(|s| s.user),
        system: pick(|s| s.system),
        peak_rss_kib: rss.get(middle).copied().unwrap_or_default(),
    }
}

fn section(
    profile: &Profile,
    count: usize,
    fixture_bytes: u64,
    ours: &Sample,
    theirs: &Sample,
    command: &str,
    load: &str,
) -> String {
    let ratio = ours.per_core(count) / theirs.per_core(count);
    let verdict = if ratio >= 0.5 { "met" } else { "not met" };
    let mut s = String::new();
    let _ = writeln!(s, "{HEADING}\n");
    let _ = writeln!(
        s,
        "Measured with `{command}` on {}, {}\n\
         (release build; load average {load} when it started).\n\
         {count} photo-like JPEGs of {} x {} pixels (quality 90, {:.1} MiB each on average:\n\
         gradients, textured shapes and noise, made by `thumb_bench fixtures`), each made into a\n\
         {WIDTH}-pixel-wide JPEG thumbnail at quality {QUALITY} by both thumbnailers, run as child\n\
         processes over the same files; medians of {} alternating rounds. Per core is thumbnails\n\
         per second of CPU time (user + system), which other work on the machine disturbs less\n\
         than wall time; peak RSS is the process's, from `wait4` (GNU `time`).\n",
        machine(),
        today(),
        profile.width,
        profile.height,
        kib_to_mib(fixture_bytes / 1024) / count_f64(count),
        profile.rounds,
    );
    let _ = writeln!(
        s,
        "| thumbnailer | thumbnails/s per core | thumbnails/s (wall) | CPU s | peak RSS |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|");
    for (who, sample) in [
        ("`plugs_imaging::render`, one thread", ours),
        ("`vipsthumbnail`, `VIPS_CONCURRENCY=1`", theirs),
    ] {
        let _ = writeln!(
            s,
            "| {who} | {:.1} | {:.1} | {:.2} | {:.1} MiB |",
            sample.per_core(count),
            sample.per_wall_second(count),
            sample.cpu(),
            kib_to_mib(sample.peak_rss_kib),
        );
    }
    let _ = writeln!(
        s,
        "\nTarget: at least half of vipsthumbnail's rate per core. Result: {:.0}% of it, \
         {verdict}.\n\
         Like vipsthumbnail, `render` decodes a JPEG at reduced size (DCT scaling, 1/8 here:\n\
         500 x 375 pixels decoded for a 256-pixel thumbnail), so the 12 megapixels are never\n\
         decoded whole. The peak RSS is the whole process's, the original's bytes (read into\n\
         memory, as the worker reads them) included.",
        100.0 * ratio
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_time_report_parses_and_a_status_line_before_it_is_skipped() {
        let sample = parse_time("Command exited with non-zero status 1\n0.32 0.20 0.08 13568\n");
        assert_eq!(
            sample.unwrap(),
            Sample {
                wall: 0.32,
                user: 0.20,
                system: 0.08,
                peak_rss_kib: 13568
            }
        );
        assert!(parse_time("0.32 0.20\n").is_err());
    }

    #[test]
    fn medians_are_taken_field_by_field() {
        let s = |wall, rss| Sample {
            wall,
            user: wall,
            system: 0.0,
            peak_rss_kib: rss,
        };
        let m = median(&[s(3.0, 10), s(1.0, 30), s(2.0, 20)]);
        assert_eq!(m, s(2.0, 20));
        assert!((m.per_core(4) - 2.0).abs() < 1e-9);
    }
}
