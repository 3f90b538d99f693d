//! What the benchmarks (`bench.rs`, `bench_api.rs`) and the load test (`load.rs`) share: the
//! `store_bench` runner and its samples, the machine and date figures were measured on, and
//! writing a section of a Markdown document. A module of its own, so that each of them imports
//! it and none imports another.

use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, Result};
use serde_json::Value;

use crate::process;
use crate::services::{S3_ACCESS_KEY, S3_SECRET_KEY};

/// The bucket `store_bench` works in.
const BUCKET: &str = "plugs-bench";

/// Replaces (or appends) one `## ` section of a Markdown document on disk.
pub(crate) fn write_section(path: &Path, heading: &str, section: &str) -> Result<()> {
    let old = fs::read_to_string(path).unwrap_or_else(|_| "# Performance\n".to_string());
    fs::write(path, replace_titled_section(&old, heading, section))
        .with_context(|| format!("could not write {}", path.display()))
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

pub(crate) fn kib_to_mib(kib: u64) -> f64 {
    // Exact for any realistic peak RSS; f64 holds integers up to 2^53.
    #[allow(clippy::cast_precision_loss)]
    let kib = kib as f64;
    kib / 1024.0
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

    const HEADING: &str = "## Object store";

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
        let updated =
            replace_titled_section(&document, HEADING, &format!("{HEADING}\n\nnew figures\n"));
        assert_eq!(
            updated,
            format!(
                "# Performance\n\nIntro.\n\n## Uploads\n\nfast\n\n{HEADING}\n\nnew figures\n\n## Database\n\nrows\n"
            )
        );
    }

    #[test]
    fn a_missing_section_is_appended() {
        let updated = replace_titled_section(
            "# Performance\n\nIntro.\n",
            HEADING,
            &format!("{HEADING}\n\nx\n"),
        );
        assert_eq!(
            updated,
            format!("# Performance\n\nIntro.\n\n{HEADING}\n\nx\n")
        );
    }
}
