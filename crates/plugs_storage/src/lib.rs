#![doc = include_str!("../README.md")]

mod error;
mod key;
mod store;

pub use error::{BoxError, Result, StoreError};
pub use key::ObjectKey;
pub use store::{
    ByteRange, ByteStream, GetOptions, GetResult, ListOptions, ListPage, ObjectMeta, ObjectStore,
    ObjectStoreExt, PresignMethod, PresignedUrl, PutOptions, PutResult, ServerSideEncryption,
};
