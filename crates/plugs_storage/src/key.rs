//! The validated object key.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::StoreError;

/// A key in an object store: a `/`-separated path that every backend can hold safely.
///
/// Rules, checked once at construction so that no backend has to re-check them:
/// 1 to [`ObjectKey::MAX_LEN`] bytes of UTF-8; no leading or trailing `/`; no empty segment
/// (`a//b`); no `.` or `..` segment; no control characters; no backslash.
///
/// ```
/// use plugs_storage::ObjectKey;
/// assert!(ObjectKey::parse("events/42/media/a.png").is_ok());
/// assert!(ObjectKey::parse("events/../etc/passwd").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ObjectKey(String);

impl ObjectKey {
    /// Longest accepted key in bytes (S3's own limit).
    pub const MAX_LEN: usize = 1024;

    /// Validates `key`.
    pub fn parse(key: impl Into<String>) -> Result<Self, StoreError> {
        let key = key.into();
        match Self::problem(&key) {
            None => Ok(Self(key)),
            Some(reason) => Err(StoreError::InvalidKey {
                key: key.chars().take(200).collect(),
                reason,
            }),
        }
    }

    fn problem(key: &str) -> Option<&'static str> {
        if key.is_empty() {
            return Some("empty");
        }
        if key.len() > Self::MAX_LEN {
            return Some("longer than 1024 bytes");
        }
        if key.chars().any(|c| c.is_control() || c == '\\') {
            return Some("contains a control character or a backslash");
        }
        if key.split('/').any(|segment| segment.is_empty()) {
            return Some("has an empty segment or a leading or trailing '/'");
        }
        if key
            .split('/')
            .any(|segment| segment == "." || segment == "..")
        {
            return Some("has a '.' or '..' segment");
        }
        None
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this key lies under `prefix` (a plain string prefix, as S3 lists them).
    pub fn starts_with(&self, prefix: &str) -> bool {
        self.0.starts_with(prefix)
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for ObjectKey {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ObjectKey {
    type Error = StoreError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(value)
    }
}

impl TryFrom<&str> for ObjectKey {
    type Error = StoreError;

    fn try_from(value: &str) -> Result<Self, Self::Error> {
        Self::parse(value)
    }
}

impl From<ObjectKey> for String {
    fn from(value: ObjectKey) -> Self {
        value.0
    }
}
