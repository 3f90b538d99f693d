//! plugs-api: see the library crate.
fn main() {}
