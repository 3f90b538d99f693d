//! Checks every store applies to an upload body while it streams: size and SHA-256 against what
//! the caller declared, and the MD5 that becomes the ETag of the local and in-memory stores.

use md5::{Digest, Md5};
use sha2::Sha256;

use crate::{ObjectKey, PutOptions, Result, StoreError};

/// Running checks over one upload body.
pub(crate) struct BodyCheck {
    key: String,
    md5: Option<Md5>,
    sha256: Option<(Sha256, [u8; 32])>,
    expected_size: Option<u64>,
    size: u64,
}

impl BodyCheck {
    /// Checks for `options`; `with_md5` when the store derives its ETag from the content.
    pub(crate) fn new(key: &ObjectKey, options: &PutOptions, with_md5: bool) -> Self {
        Self {
            key: key.as_str().to_owned(),
            md5: with_md5.then(Md5::new),
            sha256: options.sha256.map(|expected| (Sha256::new(), expected)),
            expected_size: options.size,
            size: 0,
        }
    }

    /// Feeds a chunk; fails as soon as the body is longer than declared, so an oversized body
    /// is not read to its end.
    pub(crate) fn update(&mut self, chunk: &[u8]) -> Result<()> {
        self.size += chunk.len() as u64;
        if let Some(expected) = self.expected_size
            && self.size > expected
        {
            return Err(StoreError::SizeMismatch {
                key: self.key.clone(),
                expected,
                actual: self.size,
            });
        }
        if let Some(md5) = &mut self.md5 {
            md5.update(chunk);
        }
        if let Some((sha256, _)) = &mut self.sha256 {
            sha256.update(chunk);
        }
        Ok(())
    }

    /// Checks the whole body; answers its size and, when asked for, its quoted MD5 ETag.
    pub(crate) fn finish(self) -> Result<(u64, Option<String>)> {
        if let Some(expected) = self.expected_size
            && self.size != expected
        {
            return Err(StoreError::SizeMismatch {
                key: self.key,
                expected,
                actual: self.size,
            });
        }
        if let Some((sha256, expected)) = self.sha256
            && <[u8; 32]>::from(sha256.finalize()) != expected
        {
            return Err(StoreError::ChecksumMismatch { key: self.key });
        }
        let etag = self
            .md5
            .map(|md5| format!("\"{}\"", hex::encode(md5.finalize())));
        Ok((self.size, etag))
    }
}
