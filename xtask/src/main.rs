//! Project automation for plugs-media, run as `cargo xtask <command>`.
//!
//! A workspace binary rather than shell scripts, so that the one command CI runs needs nothing but
//! the Rust toolchain to start. It builds in seconds (std, anyhow and serde_json only), because it
//! runs before anything else is compiled.

// Printing progress and results is this program's whole interface.
#![allow(clippy::print_stdout)]

mod bench;
mod bench_api;
mod bench_common;
mod bench_imaging;
mod ci;
mod layers;
mod load;
mod process;
mod schemathesis;
mod services;
mod tus;

use std::process::ExitCode;

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  ci [STEP...]                  every check CI runs, in order: fmt, layers, clippy, then tests
                                (every test against PostgreSQL, s3s-fs and moto servers it
                                starts); naming steps runs only those
  services                      start those servers, print `export` lines for a shell, and stop
                                them on Ctrl-C or end of input
  layers                        check that each crate depends only on the layers below it
  bench storage [--size-mib N]  S3Store against bare aws-sdk-s3 on s3s-fs (default 256 MiB);
                                writes the figures into docs/PERFORMANCE.md
  bench api [--profile full|smoke] [--only PHASE,...] [--system-allocator]
                                the release plugs-api end to end against bare S3 clients;
                                a whole full run writes the figures into docs/PERFORMANCE.md;
                                --only runs some phases (transfers, direct, tus, concurrent,
                                small, metadata), --system-allocator builds plugs-api without
                                jemalloc; either only prints its table
  bench imaging [--profile full|smoke]
                                thumbnails per second per core of 12-megapixel JPEGs against
                                vipsthumbnail; full writes the figures into docs/PERFORMANCE.md
  load [--smoke] [--uploads N] [--concurrency N]
                                concurrent uploads through the release plugs-api on PostgreSQL
                                and s3s-fs, then proof that records and objects agree; writes
                                the figures into docs/RELIABILITY.md (--smoke: small, debug, CI)
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        ["ci", steps @ ..] => ci::run(steps),
        ["services"] => services::run_until_stopped(),
        ["layers"] => layers::run(),
        ["bench", "api", rest @ ..] => bench_api::run(rest),
        ["bench", "imaging", rest @ ..] => bench_imaging::run(rest),
        ["bench", rest @ ..] => bench::run(rest),
        ["load", rest @ ..] => load::run(rest),
        ["help" | "--help" | "-h"] => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => {
            eprint!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
