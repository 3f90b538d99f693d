//! plugs-api
fn main() {}
