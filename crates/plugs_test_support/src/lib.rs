#![doc = include_str!("../README.md")]
#![allow(clippy::expect_used, clippy::unwrap_used)]

pub mod pg;
pub mod s3;

use std::io::Write as _;

/// Set to `1` to let a test whose server is missing skip instead of failing (a machine without
/// PostgreSQL, a quick run without `cargo xtask services`). Unset, a missing server fails the
/// test: a test that passes without having run would hide exactly what it exists to catch.
pub const ALLOW_MISSING_SERVERS: &str = "PLUGS_TEST_ALLOW_MISSING_SERVERS";

/// Names a file that every skip appends one line to (`test name: why`). `cargo xtask ci` sets
/// it and prints the lines in its summary, because the test runner shows no output of a test
/// that passed.
pub const SKIP_LOG: &str = "PLUGS_TEST_SKIP_LOG";

/// Whether a missing test server may be skipped ([`ALLOW_MISSING_SERVERS`] is `1`).
pub fn missing_servers_allowed() -> bool {
    std::env::var_os(ALLOW_MISSING_SERVERS).is_some_and(|v| v == "1")
}

/// The test's server is missing: panics with `why`, unless [`missing_servers_allowed`], in which
/// case the skip is [recorded](record_skip) and the caller returns early.
#[track_caller]
pub fn missing_server(why: &str) {
    if !missing_servers_allowed() {
        panic!("{why} (set {ALLOW_MISSING_SERVERS}=1 to skip such tests instead)");
    }
    record_skip(why);
}

/// Records that the running test skips: `SKIPPED: why` on stderr, and a line `test: why` appended
/// to the file [`SKIP_LOG`] names, if it is set. One `write` of one line to a file opened for
/// appending, so lines of tests running in parallel processes do not interleave.
pub fn record_skip(why: &str) {
    eprintln!("SKIPPED: {why}");
    let Some(path) = std::env::var_os(SKIP_LOG).filter(|p| !p.is_empty()) else {
        return;
    };
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("(unnamed test)");
    let line = format!("{test}: {}\n", why.replace('\n', " "));
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut file| file.write_all(line.as_bytes()));
    if let Err(error) = written {
        eprintln!("warning: could not record the skip in {path:?}: {error}");
    }
}
