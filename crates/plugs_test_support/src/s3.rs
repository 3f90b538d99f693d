//! S3 test servers started by `cargo xtask ci`, found through the environment.

use std::sync::atomic::{AtomicU32, Ordering};

/// Which S3 protocol server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum S3Server {
    /// s3s-fs: verifies SigV4 (presigned URLs, wrong keys), checks checksums, no
    /// ListMultipartUploads, ignores `If-None-Match` on GET.
    S3s,
    /// moto: lists multipart uploads, echoes encryption, honours `If-None-Match`, but accepts
    /// any signature.
    Moto,
}

impl S3Server {
    /// Its short name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::S3s => "s3s-fs",
            Self::Moto => "moto",
        }
    }

    fn endpoint_var(self) -> &'static str {
        match self {
            Self::S3s => "PLUGS_TEST_S3S_ENDPOINT",
            Self::Moto => "PLUGS_TEST_MOTO_ENDPOINT",
        }
    }
}

/// A running S3 protocol server and credentials it accepts.
#[derive(Clone)]
pub struct S3TestServer {
    /// Which server.
    pub server: S3Server,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// Access key id.
    pub access_key: String,
    /// Secret key.
    pub secret_key: String,
}

impl std::fmt::Debug for S3TestServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3TestServer")
            .field("server", &self.server)
            .field("endpoint", &self.endpoint)
            .field("access_key", &self.access_key)
            .finish_non_exhaustive()
    }
}

impl S3TestServer {
    /// The s3s-fs server; see [`S3TestServer::from_env`].
    #[track_caller]
    pub fn s3s() -> Option<Self> {
        Self::from_env(S3Server::S3s)
    }

    /// The moto server; see [`S3TestServer::from_env`].
    #[track_caller]
    pub fn moto() -> Option<Self> {
        Self::from_env(S3Server::Moto)
    }

    /// The given server from the environment. When it is not there the test fails, unless
    /// [`missing_servers_allowed`](crate::missing_servers_allowed): then the skip is recorded
    /// and `None` returned.
    #[track_caller]
    pub fn from_env(server: S3Server) -> Option<Self> {
        let var = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
        let found = (
            var(server.endpoint_var()),
            var("PLUGS_TEST_S3_ACCESS_KEY"),
            var("PLUGS_TEST_S3_SECRET_KEY"),
        );
        match found {
            (Some(endpoint), Some(access_key), Some(secret_key)) => Some(Self {
                server,
                endpoint,
                access_key,
                secret_key,
            }),
            _ => {
                crate::missing_server(&format!(
                    "no {} server ({}, PLUGS_TEST_S3_ACCESS_KEY and PLUGS_TEST_S3_SECRET_KEY must be set; `cargo xtask services` prints them)",
                    server.name(),
                    server.endpoint_var()
                ));
                None
            }
        }
    }

    /// A bucket name no other test (or earlier run) uses: create it with the store under test
    /// (`S3Store::ensure_bucket`). Valid S3 bucket syntax: lower case, digits, dashes, at most 63.
    pub fn unique_bucket(&self, label: &str) -> String {
        unique_bucket(label)
    }
}

/// A fresh bucket name, `plugs-<label>-<pid>-<n>-<random>`, at most 63 characters.
pub fn unique_bucket(label: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let label: String = label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(24)
        .collect();
    let random = uuid::Uuid::new_v4().simple().to_string();
    let name = format!(
        "plugs-{}-{}-{}-{}",
        label.trim_matches('-'),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        &random[..8]
    );
    name.chars()
        .take(63)
        .collect::<String>()
        .trim_end_matches('-')
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_names_are_unique_and_valid() {
        let a = unique_bucket("Conformance Test_with a very long label indeed");
        let b = unique_bucket("Conformance Test_with a very long label indeed");
        assert_ne!(a, b);
        for name in [a, b] {
            assert!((3..=63).contains(&name.len()), "{name}");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{name}"
            );
            assert!(!name.ends_with('-') && !name.contains("--"), "{name}");
        }
    }
}
