//! CloudFront signed URLs with a canned policy: with `CDN_KEY_PAIR_ID` and `CDN_PRIVATE_KEY_PEM`
//! set, the `/url` route hands out `{CDN_BASE_URL}/{s3_key}?Expires=…&Signature=…&Key-Pair-Id=…`
//! (and `&Hash-Algorithm=SHA256`) instead of S3's presigned URLs. Media records keep their
//! stable, unsigned `url`, so list pages stay cacheable.
//!
//! The canned policy is `{"Statement":[{"Resource":"URL","Condition":{"DateLessThan":
//! {"AWS:EpochTime":N}}}]}` without whitespace; the signature is RSASSA-PKCS1-v1_5 (RSA-2048) or
//! ECDSA P-256 (DER) over its SHA-256 (or SHA-1), in CloudFront's URL-safe base64 (`+` to `-`,
//! `=` to `_`, `/` to `~`).

use std::fmt;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use p256::ecdsa::signature::hazmat::PrehashSigner as _;
use plugs_media::DownloadSigner;
use plugs_storage::{ObjectKey, PresignedUrl, StoreError};
use rsa::pkcs1::DecodeRsaPrivateKey as _;
use rsa::pkcs8::DecodePrivateKey as _;
use rsa::traits::PublicKeyParts as _;
use sha2::Digest as _;

/// The hash CloudFront checks the signature with (`CDN_HASH_ALGORITHM`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HashAlgorithm {
    /// SHA-256, announced with `Hash-Algorithm=SHA256` (the default).
    #[default]
    Sha256,
    /// SHA-1, CloudFront's original and implicit algorithm: only for old key groups.
    Sha1,
}

impl HashAlgorithm {
    fn digest(self, message: &[u8]) -> Vec<u8> {
        match self {
            Self::Sha256 => sha2::Sha256::digest(message).to_vec(),
            Self::Sha1 => sha1::Sha1::digest(message).to_vec(),
        }
    }
}

/// The private key of a CloudFront public key (RSA-2048 or ECDSA P-256, as CloudFront accepts).
enum SigningKey {
    Rsa(Box<rsa::RsaPrivateKey>),
    Ecdsa(p256::ecdsa::SigningKey),
}

impl SigningKey {
    /// Reads a PEM key: PKCS#1 (`RSA PRIVATE KEY`, as `openssl genrsa` writes), SEC1
    /// (`EC PRIVATE KEY`, as `openssl ecparam -genkey` writes) or PKCS#8 (`PRIVATE KEY`).
    fn from_pem(pem: &str) -> Result<Self, String> {
        let pem = pem.trim();
        let key = if pem.contains("-----BEGIN RSA PRIVATE KEY-----") {
            rsa::RsaPrivateKey::from_pkcs1_pem(pem)
                .map(|key| Self::Rsa(Box::new(key)))
                .map_err(|_| "not a readable PKCS#1 RSA private key".to_owned())?
        } else if pem.contains("-----BEGIN EC PRIVATE KEY-----") {
            p256::SecretKey::from_sec1_pem(pem)
                .map(|key| Self::Ecdsa(key.into()))
                .map_err(|_| {
                    "not a readable P-256 EC private key (CloudFront takes P-256 only)".to_owned()
                })?
        } else if pem.contains("-----BEGIN PRIVATE KEY-----") {
            match rsa::RsaPrivateKey::from_pkcs8_pem(pem) {
                Ok(key) => Self::Rsa(Box::new(key)),
                Err(_) => p256::ecdsa::SigningKey::from_pkcs8_pem(pem)
                    .map(Self::Ecdsa)
                    .map_err(|_| "a PKCS#8 key that is neither RSA nor ECDSA P-256".to_owned())?,
            }
        } else if pem.contains("ENCRYPTED PRIVATE KEY") {
            return Err(
                "the key is encrypted: store it unencrypted (readable by this service only)"
                    .to_owned(),
            );
        } else {
            return Err("expected a PEM private key (-----BEGIN ... PRIVATE KEY-----)".to_owned());
        };
        if let Self::Rsa(rsa) = &key
            && rsa.size() != 256
        {
            return Err(format!(
                "an RSA key of {} bits: CloudFront accepts RSA-2048 only",
                rsa.size() * 8
            ));
        }
        Ok(key)
    }

    fn sign(&self, hash: HashAlgorithm, message: &[u8]) -> Result<Vec<u8>, String> {
        let digest = hash.digest(message);
        match (self, hash) {
            (Self::Rsa(key), HashAlgorithm::Sha256) => key
                .sign(rsa::Pkcs1v15Sign::new::<sha2::Sha256>(), &digest)
                .map_err(|error| error.to_string()),
            (Self::Rsa(key), HashAlgorithm::Sha1) => key
                .sign(rsa::Pkcs1v15Sign::new::<sha1::Sha1>(), &digest)
                .map_err(|error| error.to_string()),
            (Self::Ecdsa(key), _) => {
                let signature: p256::ecdsa::Signature = key
                    .sign_prehash(&digest)
                    .map_err(|error| error.to_string())?;
                Ok(signature.to_der().as_bytes().to_vec())
            }
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Self::Rsa(_) => "RSA-2048",
            Self::Ecdsa(_) => "ECDSA P-256",
        }
    }
}

/// Signs CloudFront URLs for objects behind `CDN_BASE_URL`.
pub struct CloudFrontSigner {
    base_url: String,
    key_pair_id: String,
    hash: HashAlgorithm,
    key: SigningKey,
}

impl fmt::Debug for CloudFrontSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CloudFrontSigner")
            .field("base_url", &self.base_url)
            .field("key_pair_id", &self.key_pair_id)
            .field("hash", &self.hash)
            .field("key", &self.key.kind())
            .finish()
    }
}

impl CloudFrontSigner {
    /// A signer from a PEM private key's text. `base_url` is the distribution's URL (no trailing
    /// slash needed); `key_pair_id` the CloudFront public key's id.
    pub fn from_pem(
        base_url: &str,
        key_pair_id: &str,
        pem: &str,
        hash: HashAlgorithm,
    ) -> Result<Self, String> {
        Ok(Self {
            base_url: base_url.trim_end_matches('/').to_owned(),
            key_pair_id: key_pair_id.to_owned(),
            hash,
            key: SigningKey::from_pem(pem)?,
        })
    }

    /// A signer from the PEM file at `path` (`CDN_PRIVATE_KEY_PEM`).
    pub fn load(
        base_url: &str,
        key_pair_id: &str,
        path: &Path,
        hash: HashAlgorithm,
    ) -> anyhow::Result<Self> {
        let pem = std::fs::read_to_string(path)
            .with_context(|| format!("CDN_PRIVATE_KEY_PEM: cannot read {}", path.display()))?;
        Self::from_pem(base_url, key_pair_id, &pem, hash)
            .map_err(|reason| anyhow::anyhow!("CDN_PRIVATE_KEY_PEM: {}: {reason}", path.display()))
    }

    /// The key's kind, for the start-up log line.
    pub fn key_kind(&self) -> &'static str {
        self.key.kind()
    }

    /// The unsigned URL of `key` behind the CDN: the canned policy's `Resource`.
    pub fn resource(&self, key: &ObjectKey) -> String {
        format!("{}/{}", self.base_url, key.as_str())
    }

    /// The canned policy for `resource` until `expires` (Unix seconds), exactly as CloudFront
    /// rebuilds it to check the signature: no whitespace, the time unquoted.
    pub fn canned_policy(resource: &str, expires: i64) -> String {
        // JSON-escaped, though our URLs hold nothing that needs it.
        let resource = serde_json::Value::String(resource.to_owned());
        format!(
            r#"{{"Statement":[{{"Resource":{resource},"Condition":{{"DateLessThan":{{"AWS:EpochTime":{expires}}}}}}}]}}"#
        )
    }

    /// `resource` signed until `expires` (Unix seconds).
    pub fn sign_url(&self, resource: &str, expires: i64) -> Result<String, String> {
        let policy = Self::canned_policy(resource, expires);
        let signature = cloudfront_base64(&self.key.sign(self.hash, policy.as_bytes())?);
        let separator = if resource.contains('?') { '&' } else { '?' };
        let mut url = format!(
            "{resource}{separator}Expires={expires}&Signature={signature}&Key-Pair-Id={}",
            self.key_pair_id
        );
        if self.hash == HashAlgorithm::Sha256 {
            url.push_str("&Hash-Algorithm=SHA256");
        }
        Ok(url)
    }

    /// [`CloudFrontSigner::sign_url`] for `key`, valid for `ttl` from `now` (whole seconds,
    /// rounded down so that the URL never outlives what was asked).
    pub fn presign_at(
        &self,
        key: &ObjectKey,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> Result<PresignedUrl, StoreError> {
        let ttl = chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
        let expires_at = now
            .checked_add_signed(ttl)
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        let expires = expires_at.timestamp();
        let url = self
            .sign_url(&self.resource(key), expires)
            .map_err(|reason| StoreError::other("signing a CloudFront URL", reason))?;
        Ok(PresignedUrl {
            url,
            expires_at: DateTime::from_timestamp(expires, 0).unwrap_or(expires_at),
            headers: Vec::new(),
        })
    }
}

impl DownloadSigner for CloudFrontSigner {
    fn presign_get(&self, key: &ObjectKey, ttl: Duration) -> Result<PresignedUrl, StoreError> {
        self.presign_at(key, ttl, Utc::now())
    }
}

/// Base64 in CloudFront's URL-safe alphabet: `+` to `-`, `=` to `_`, `/` to `~`.
pub fn cloudfront_base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD
        .encode(bytes)
        .chars()
        .map(|c| match c {
            '+' => '-',
            '=' => '_',
            '/' => '~',
            other => other,
        })
        .collect()
}

/// The bytes of a CloudFront base64 value (the inverse of [`cloudfront_base64`]).
pub fn cloudfront_base64_decode(text: &str) -> Option<Vec<u8>> {
    let standard: String = text
        .chars()
        .map(|c| match c {
            '-' => '+',
            '_' => '=',
            '~' => '/',
            other => other,
        })
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(standard)
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_canned_policy_has_no_whitespace_and_an_unquoted_time() {
        assert_eq!(
            CloudFrontSigner::canned_policy(
                "https://d111111abcdef8.cloudfront.net/horizon.jpg",
                1_357_034_400
            ),
            r#"{"Statement":[{"Resource":"https://d111111abcdef8.cloudfront.net/horizon.jpg","Condition":{"DateLessThan":{"AWS:EpochTime":1357034400}}}]}"#
        );
    }

    #[test]
    fn base64_uses_cloudfronts_alphabet() {
        // 0xfb 0xff 0xbf encodes to "+/+/" in standard base64; one byte more needs padding.
        assert_eq!(cloudfront_base64(&[0xfb, 0xff, 0xbf]), "-~-~");
        assert_eq!(cloudfront_base64(&[0xfb, 0xff, 0xbf, 0xff]), "-~-~~w__");
        assert_eq!(
            cloudfront_base64_decode("-~-~~w__").as_deref(),
            Some(&[0xfb, 0xff, 0xbf, 0xff][..])
        );
    }

    #[test]
    fn unusable_keys_are_refused_with_the_reason() {
        let err = SigningKey::from_pem("hello").err().unwrap_or_default();
        assert!(err.contains("PEM"), "{err}");
        let err = SigningKey::from_pem(
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAA==\n-----END ENCRYPTED PRIVATE KEY-----",
        )
        .err()
        .unwrap_or_default();
        assert!(err.contains("encrypted"), "{err}");
    }
}
