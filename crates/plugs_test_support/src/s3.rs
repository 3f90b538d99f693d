//! S3 test servers started by `cargo xtask ci`. (owned by the storage work)
