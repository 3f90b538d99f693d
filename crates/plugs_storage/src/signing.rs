//! Presigned URLs for the stores that have no server of their own (local directory, memory):
//! an HMAC-SHA256 over the method, key and expiry, checked by whatever HTTP server serves them.

use std::time::Duration;

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::{ObjectKey, PresignMethod, PresignedUrl, Result, StoreError};

/// Signs and verifies presigned URLs of the form
/// `{base_url}/{key}?method=GET&expires=<unix>&signature=<hex>`.
#[derive(Clone)]
pub(crate) struct UrlSigner {
    base_url: String,
    key: Vec<u8>,
}

impl std::fmt::Debug for UrlSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The signing key is a secret: never print it.
        f.debug_struct("UrlSigner")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl UrlSigner {
    pub(crate) fn new(base_url: &str, key: Vec<u8>) -> Self {
        Self {
            base_url: base_url.trim_end_matches('/').to_owned(),
            key,
        }
    }

    fn mac(&self, method: PresignMethod, key: &ObjectKey, expires: i64) -> Hmac<Sha256> {
        // new_from_slice accepts keys of any length for HMAC, so this cannot fail.
        let mut mac = match Hmac::<Sha256>::new_from_slice(&self.key) {
            Ok(mac) => mac,
            Err(_) => unreachable!("HMAC takes keys of any length"),
        };
        mac.update(format!("{}\n{}\n{}", method.as_str(), key.as_str(), expires).as_bytes());
        mac
    }

    pub(crate) fn presign(
        &self,
        method: PresignMethod,
        key: &ObjectKey,
        expires_in: Duration,
    ) -> Result<PresignedUrl> {
        let expires_in = chrono::Duration::from_std(expires_in)
            .map_err(|source| StoreError::other("presign expiry out of range", source))?;
        let expires_at: DateTime<Utc> = Utc::now() + expires_in;
        let expires = expires_at.timestamp();
        let signature = hex::encode(self.mac(method, key, expires).finalize().into_bytes());
        let url = format!(
            "{}/{}?method={}&expires={}&signature={}",
            self.base_url,
            encode_key(key.as_str()),
            method.as_str(),
            expires,
            signature
        );
        Ok(PresignedUrl {
            url,
            expires_at: DateTime::from_timestamp(expires, 0).unwrap_or(expires_at),
        })
    }

    pub(crate) fn verify(
        &self,
        method: PresignMethod,
        key: &ObjectKey,
        expires: i64,
        signature: &str,
    ) -> Result<()> {
        let denied = |why: &'static str| StoreError::AccessDenied {
            key: key.as_str().to_owned(),
            source: why.into(),
        };
        let Ok(given) = hex::decode(signature) else {
            return Err(denied("malformed presigned URL signature"));
        };
        let expected = self.mac(method, key, expires).finalize().into_bytes();
        if !bool::from(expected[..].ct_eq(&given)) {
            return Err(denied("presigned URL signature does not match"));
        }
        if Utc::now().timestamp() > expires {
            return Err(denied("presigned URL expired"));
        }
        Ok(())
    }
}

/// What a key keeps unencoded in a URL path: RFC 3986's unreserved characters, and `/` between
/// segments.
const KEY_IN_PATH: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/');

/// Percent-encodes a key for a URL path, keeping `/` between segments.
pub(crate) fn encode_key(key: &str) -> String {
    utf8_percent_encode(key, KEY_IN_PATH).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> ObjectKey {
        ObjectKey::parse(s).unwrap()
    }

    fn parts(url: &str) -> (i64, String) {
        let query = url.split_once('?').unwrap().1;
        let mut expires = 0;
        let mut signature = String::new();
        for pair in query.split('&') {
            let (name, value) = pair.split_once('=').unwrap();
            match name {
                "expires" => expires = value.parse().unwrap(),
                "signature" => signature = value.to_owned(),
                _ => {}
            }
        }
        (expires, signature)
    }

    #[test]
    fn a_presigned_url_verifies_for_its_method_and_key_only() {
        let signer = UrlSigner::new("http://h/o/", b"secret".to_vec());
        let url = signer
            .presign(
                PresignMethod::Get,
                &key("a/b c.png"),
                Duration::from_secs(60),
            )
            .unwrap();
        assert!(
            url.url
                .starts_with("http://h/o/a/b%20c.png?method=GET&expires="),
            "{}",
            url.url
        );
        let (expires, signature) = parts(&url.url);
        assert_eq!(url.expires_at.timestamp(), expires);
        signer
            .verify(PresignMethod::Get, &key("a/b c.png"), expires, &signature)
            .unwrap();
        for (method, k, e) in [
            (PresignMethod::Put, "a/b c.png", expires),
            (PresignMethod::Get, "a/other.png", expires),
            (PresignMethod::Get, "a/b c.png", expires + 3600),
        ] {
            let err = signer.verify(method, &key(k), e, &signature).unwrap_err();
            assert!(matches!(err, StoreError::AccessDenied { .. }), "{err:?}");
        }
        let other_signer = UrlSigner::new("http://h/o", b"other".to_vec());
        assert!(
            other_signer
                .verify(PresignMethod::Get, &key("a/b c.png"), expires, &signature)
                .is_err()
        );
    }

    #[test]
    fn an_expired_signature_is_refused_even_when_genuine() {
        let signer = UrlSigner::new("http://h", b"secret".to_vec());
        let expires = Utc::now().timestamp() - 1;
        let signature = hex::encode(
            signer
                .mac(PresignMethod::Get, &key("k"), expires)
                .finalize()
                .into_bytes(),
        );
        let err = signer
            .verify(PresignMethod::Get, &key("k"), expires, &signature)
            .unwrap_err();
        assert!(err.to_string().contains("access denied"), "{err}");
        assert!(
            signer
                .verify(PresignMethod::Get, &key("k"), expires, "zz")
                .is_err()
        );
    }
}
