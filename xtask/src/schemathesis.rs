//! `cargo xtask ci schemathesis`: property-based requests generated from the served OpenAPI
//! document (schemathesis, from PyPI) against the debug plugs-api on the embedded default. A
//! 5xx, or a response that does not match the document, fails the step.
//!
//! schemathesis lives in a virtualenv of its own in the cache (not moto's), because each pins
//! libraries the other also uses (werkzeug, jsonschema).

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, Result, ensure};

use crate::bench_api::http::Api;
use crate::process::{self, cargo};
use crate::services::{Guard, cache_dir};

/// Pinned so every machine generates the same cases from the same seed.
const REQUIREMENT: &str = "schemathesis==4.32.5";

/// Registers raw bytes for the media types the API takes as raw bodies (tus uploads).
const HOOKS: &str = "\
from hypothesis import strategies as st
import schemathesis

schemathesis.openapi.media_type(\"application/offset+octet-stream\", st.binary(max_size=4096))
";
const SEED: &str = "20261124";
/// Cases per operation and phase; with 15 operations and four phases this generates well over
/// 1000 cases (the step fails below [`MIN_CASES`]).
const MAX_EXAMPLES: &str = "12";
/// A bound on the whole run, so a slow machine ends the fuzzing early rather than holding CI.
const MAX_SECONDS: &str = "150";
const MIN_CASES: u64 = 1000;
/// One worker thread: CPython 3.11 before 3.11.8 (3.11.7 on these machines) can raise a spurious
/// `SystemError: AST constructor recursion depth mismatch` when two threads build ASTs at once
/// (python/cpython#106905), and hypothesis parses lambdas with `ast` while it generates cases.
/// With two workers that failed a CI run with no fault of the server's.
const WORKERS: &str = "1";

/// Runs schemathesis against a fresh server and checks it generated enough cases and found
/// nothing.
pub(crate) fn run() -> Result<()> {
    let schemathesis = find_or_install()?;
    let binary = build()?;
    let scratch = Guard::new()?;
    let api = Api {
        binary,
        env: [
            ("DATA_DIR", scratch.dir().join("data").display().to_string()),
            (
                "JWT_SECRET",
                "plugs-fuzz-jwt-secret-not-a-secret-0123456789".to_string(),
            ),
            ("RUST_LOG", "error".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect(),
        dir: scratch.dir().to_path_buf(),
    };
    let token = api.token("fuzz")?;
    let server = api.start()?;
    let url = format!("{}/api/v1/openapi.json", server.base_url());
    // tus PATCH and creation-with-upload bodies are raw bytes of a media type schemathesis has
    // no serializer for: generate them as bytes.
    std::fs::write(scratch.dir().join("plugs_hooks.py"), HOOKS)
        .context("writing the schemathesis hooks")?;
    let mut command = Command::new(&schemathesis);
    command
        .args(["run", &url])
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args(["--checks", "not_a_server_error,response_schema_conformance"])
        .args(["--max-examples", MAX_EXAMPLES, "--max-time", MAX_SECONDS])
        .args(["--seed", SEED, "--workers", WORKERS])
        .args(["--report", "junit", "--report-dir"])
        .arg(scratch.dir().join("report"))
        .env("NO_COLOR", "1")
        .env("SCHEMATHESIS_HOOKS", "plugs_hooks")
        .env("PYTHONPATH", scratch.dir())
        .current_dir(scratch.dir())
        .stdin(Stdio::null());
    eprintln!(
        "$ {}",
        process::display(&command).replace(&token, "[token]")
    );
    let output = command
        .output()
        .with_context(|| format!("could not start {}", schemathesis.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    print!("{stdout}");
    eprint!("{}", String::from_utf8_lossy(&output.stderr));
    drop(server);
    let cases = generated_cases(&stdout);
    ensure!(
        output.status.success(),
        "schemathesis found failures ({}); its output above shows each with a curl command \
         to reproduce it",
        output.status
    );
    let cases = cases.context("schemathesis printed no `N generated` count")?;
    ensure!(
        cases >= MIN_CASES,
        "schemathesis generated only {cases} cases (at least {MIN_CASES} wanted)"
    );
    println!(
        "schemathesis: {cases} generated cases, no server error, every response as documented"
    );
    Ok(())
}

/// The `N generated, N passed` count of schemathesis's summary.
fn generated_cases(output: &str) -> Option<u64> {
    output.lines().find_map(|line| {
        let (count, _) = line.trim().split_once(" generated")?;
        count.trim().parse().ok()
    })
}

/// `$CACHE/schemathesis-venv/bin/schemathesis`, installed with pip on first use.
fn find_or_install() -> Result<PathBuf> {
    let venv = cache_dir()?.join("schemathesis-venv");
    let binary = venv.join("bin").join("schemathesis");
    if binary.is_file() {
        return Ok(binary);
    }
    eprintln!(
        "schemathesis: installing {REQUIREMENT} into {} (once per cache; about a minute)",
        venv.display()
    );
    install(&venv)?;
    Ok(binary)
}

fn install(venv: &Path) -> Result<()> {
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
            .args(["install", "--disable-pip-version-check", REQUIREMENT])
            .stdout(io::stderr()),
    )
    .context("could not install schemathesis")
}

/// The debug plugs-api binary, built.
fn build() -> Result<PathBuf> {
    process::run(cargo().args(["build", "-p", "plugs-api", "--bin", "plugs-api"]))?;
    let metadata = process::metadata()?;
    let target = metadata["target_directory"]
        .as_str()
        .context("cargo metadata has no target_directory")?;
    Ok(Path::new(target).join("debug").join("plugs-api"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_case_count_is_read_from_the_summary() {
        let summary = "Test cases:\n  10065 generated, 10065 passed\n\nSeed: 1\n";
        assert_eq!(generated_cases(summary), Some(10065));
        let failing = "Test cases:\n  1203 generated, 1190 passed, 13 failed\n";
        assert_eq!(generated_cases(failing), Some(1203));
        assert_eq!(generated_cases("nothing here"), None);
    }
}
