#![doc = include_str!("../README.md")]

mod body;
mod error;
mod key;
mod local;
mod memory;
mod signing;
mod store;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use error::{BoxError, Result, StoreError};
pub use key::ObjectKey;
pub use local::{LocalFsConfig, LocalFsStore};
pub use memory::MemoryStore;
pub use store::{
    ByteRange, ByteStream, GetOptions, GetResult, ListOptions, ListPage, ObjectMeta, ObjectStore,
    ObjectStoreExt, PresignMethod, PresignedUrl, PutOptions, PutResult, ServerSideEncryption,
    etag_matches,
};
