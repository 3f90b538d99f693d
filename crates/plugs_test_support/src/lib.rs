#![doc = include_str!("../README.md")]
#![allow(clippy::expect_used, clippy::unwrap_used)]

pub mod pg;
pub mod s3;

/// Whether missing test servers are an error (set by `cargo xtask ci`) rather than a visible skip.
pub fn servers_required() -> bool {
    std::env::var_os("PLUGS_TEST_REQUIRE_SERVERS").is_some_and(|v| v == "1")
}
