//! `cargo xtask ci`: every check CI runs, in order, stopping at the first step that fails.
//!
//! Passing locally means CI passes: `.ci/run` runs exactly this.

use std::fs;
use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context as _, Result, bail};

use crate::layers;
use crate::process::{self, cargo};
use crate::services::Services;

/// nextest settings: a test that hangs (a server that never answers) would otherwise hold CI
/// until the job's own time limit, so a test still running after ten minutes is ended. Passed as a
/// tool config file, so a repository `.config/nextest.toml` still takes precedence.
const NEXTEST_TOOL_CONFIG: &str =
    "[profile.default]\nslow-timeout = { period = \"60s\", terminate-after = 10 }\n";

type Step = (&'static str, &'static str, fn() -> Result<()>);

const STEPS: [Step; 8] = [
    ("fmt", "cargo fmt --all -- --check", fmt),
    ("layers", "dependencies point downward only", layers::run),
    (
        "clippy",
        "cargo clippy --workspace --all-targets -- -D warnings",
        clippy,
    ),
    (
        "tests",
        "every test and doctest, against PostgreSQL, s3s-fs and moto",
        tests,
    ),
    (
        "schemathesis",
        "generated requests from the served OpenAPI document: no 5xx, responses as documented",
        crate::schemathesis::run,
    ),
    (
        "tus",
        "tuspy and tus-js-client upload through tus on both backends, cut connections resumed",
        crate::tus::run,
    ),
    (
        "load",
        "cargo xtask load --smoke: concurrent uploads, then records and objects agree",
        crate::load::smoke,
    ),
    (
        "bench",
        "cargo xtask bench api --profile smoke and bench imaging --profile smoke: every \
         benchmark path, tiny sizes, debug build",
        || {
            crate::bench_api::smoke()?;
            crate::bench_imaging::smoke()
        },
    ),
];

/// Runs every step, or only the named ones (`cargo xtask ci clippy tests`) when iterating on one.
pub(crate) fn run(only: &[&str]) -> Result<()> {
    if let Some(unknown) = only
        .iter()
        .find(|name| !STEPS.iter().any(|s| s.0 == **name))
    {
        let names: Vec<&str> = STEPS.iter().map(|s| s.0).collect();
        bail!("no ci step `{unknown}`; the steps are {}", names.join(", "));
    }
    let steps: Vec<&Step> = STEPS
        .iter()
        .filter(|step| only.is_empty() || only.contains(&step.0))
        .collect();
    let started = Instant::now();
    for (index, (name, what, step)) in steps.iter().enumerate() {
        println!("\n==> ci {}/{}: {name} ({what})", index + 1, steps.len());
        process::flush();
        let step_started = Instant::now();
        step().with_context(|| format!("ci step `{name}` failed"))?;
        println!("==> {name}: ok in {:.0?}", step_started.elapsed());
    }
    let which = if only.is_empty() { "all" } else { "the chosen" };
    println!(
        "\nci: {which} {} steps passed in {:.0?}",
        steps.len(),
        started.elapsed()
    );
    Ok(())
}

fn fmt() -> Result<()> {
    process::run(cargo().args(["fmt", "--all", "--", "--check"]))
        .context("formatting differs; `cargo fmt --all` fixes it")
}

fn clippy() -> Result<()> {
    process::run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))
}

/// Runs unit and integration tests (nextest when installed, it is faster on many test
/// binaries), then doctests, which nextest does not run. Both run even if the first fails, so one
/// pass shows every failure.
fn tests() -> Result<()> {
    // The imaging tests write and read GPS tags with exiftool, as a user's tools would.
    crate::bench_api::http::find_or_install("exiftool", "libimage-exiftool-perl", "exiftool")?;
    // The external decoders' tests (bin/plugs-api/tests/external_decoders.rs) make HEIC, AVIF
    // and MP4 files with these and the server decodes them with them (prlimit is util-linux's,
    // on every Debian).
    crate::bench_api::http::find_or_install("ffmpeg", "ffmpeg", "ffmpeg")?;
    crate::bench_api::http::find_or_install("heif-enc", "libheif-examples", "libheif's heif-enc")?;
    crate::bench_api::http::find_or_install(
        "heif-convert",
        "libheif-examples",
        "libheif's heif-convert",
    )?;
    crate::bench_api::http::find_or_install("prlimit", "util-linux", "prlimit (util-linux)")?;
    let services = Services::start()?;
    let skip_log = services.scratch_dir().join("skipped-tests.log");
    let mut env = services.env();
    // Every skip appends a line here (plugs_test_support::record_skip, the conformance suite):
    // a test that passes shows none of its output, so this is where skips become visible.
    env.push(("PLUGS_TEST_SKIP_LOG", skip_log.display().to_string()));
    let mut failures = Vec::new();
    let mut counts = Vec::new();

    let nextest = process::succeeds(cargo().args(["nextest", "--version"]));
    if nextest {
        let config = services.scratch_dir().join("nextest.toml");
        fs::write(&config, NEXTEST_TOOL_CONFIG)?;
        let mut command = cargo();
        command
            .args(["nextest", "run", "--workspace", "--no-fail-fast"])
            .arg("--tool-config-file")
            .arg(format!("xtask:{}", config.display()))
            .envs(env.iter().cloned());
        if let Err(err) = process::run(&mut command) {
            failures.push(format!("{err:#}"));
        }
    } else {
        eprintln!("(cargo-nextest is not installed; using cargo test)");
        let mut command = cargo();
        command
            .args(["test", "--workspace", "--no-fail-fast"])
            .envs(env.iter().cloned());
        match run_libtest(&mut command) {
            Ok(tally) => counts.push(format!("tests {tally}")),
            Err(err) => failures.push(format!("{err:#}")),
        }
    }

    let mut command = cargo();
    command
        .args(["test", "--workspace", "--doc"])
        .envs(env.iter().cloned());
    match run_libtest(&mut command) {
        Ok(tally) => counts.push(format!("doctests {tally}")),
        Err(err) => failures.push(format!("{err:#}")),
    }
    let skipped = read_skips(&skip_log)?;
    drop(services);
    print!("{}", skip_summary(&skipped));
    counts.push(format!(
        "{} skipped for a missing capability",
        skipped.len()
    ));

    if !failures.is_empty() {
        bail!("{}", failures.join("\n"));
    }
    if nextest {
        counts.insert(0, "tests: see the nextest summary above".to_string());
    }
    println!("{}", counts.join("; "));
    Ok(())
}

/// The lines the tests appended to the skip log (none if no test skipped, so no file).
fn read_skips(path: &std::path::Path) -> Result<Vec<String>> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(text
            .lines()
            .filter(|line| !line.trim().is_empty())
            .map(str::to_owned)
            .collect()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(err) => Err(err).with_context(|| format!("could not read {}", path.display())),
    }
}

/// The skipped tests, sorted, under a count; nothing when none skipped.
fn skip_summary(skipped: &[String]) -> String {
    if skipped.is_empty() {
        return String::new();
    }
    let mut lines = skipped.to_vec();
    lines.sort();
    let mut out = format!(
        "\n{} test(s) skipped a case their server cannot run:\n",
        lines.len()
    );
    for line in lines {
        out.push_str("  ");
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// Passed, failed and ignored tests, summed over libtest's `test result:` lines.
#[derive(Debug, Default, PartialEq, Eq)]
struct Tally {
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} passed, {} failed, {} ignored",
            self.passed, self.failed, self.ignored
        )
    }
}

impl Tally {
    fn add_line(&mut self, line: &str) {
        let Some(result) = line.trim_start().strip_prefix("test result:") else {
            return;
        };
        let words: Vec<&str> = result.split_whitespace().collect();
        for pair in words.windows(2) {
            let Ok(count) = pair[0].parse::<u64>() else {
                continue;
            };
            let label = pair[1].trim_end_matches([';', ',', '.']);
            match label {
                "passed" => self.passed += count,
                "failed" => self.failed += count,
                "ignored" => self.ignored += count,
                _ => {}
            }
        }
    }
}

/// Runs `cargo test`, echoing its output while counting results.
fn run_libtest(command: &mut Command) -> Result<Tally> {
    let shown = process::display(command);
    eprintln!("$ {shown}");
    let mut child = command
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("could not start `{shown}`"))?;
    let mut tally = Tally::default();
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines() {
            let line = line?;
            println!("{line}");
            tally.add_line(&line);
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("`{shown}` failed ({status}): {tally}");
    }
    Ok(tally)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_are_read_back_and_listed_under_their_count() {
        let dir = std::env::temp_dir().join(format!("xtask-skips-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let log = dir.join("skipped-tests.log");
        assert_eq!(read_skips(&log).unwrap(), Vec::<String>::new(), "no file");
        assert_eq!(skip_summary(&[]), "");
        fs::write(
            &log,
            "presigned_put: memory lacks an HTTP endpoint\n\na: s3s-fs lacks X\n",
        )
        .unwrap();
        let skipped = read_skips(&log).unwrap();
        assert_eq!(skipped.len(), 2);
        assert_eq!(
            skip_summary(&skipped),
            "\n2 test(s) skipped a case their server cannot run:\n  a: s3s-fs lacks X\n  \
             presigned_put: memory lacks an HTTP endpoint\n"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn tally_sums_libtest_result_lines_and_ignores_others() {
        let mut tally = Tally::default();
        for line in [
            "running 3 tests",
            "test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s",
            "test keys::tests::a ... ok",
            "test result: FAILED. 5 passed; 2 failed; 0 ignored; 0 measured; 1 filtered out; finished in 1.2s",
        ] {
            tally.add_line(line);
        }
        assert_eq!(
            tally,
            Tally {
                passed: 8,
                failed: 2,
                ignored: 1
            }
        );
    }
}
