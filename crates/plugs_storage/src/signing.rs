//! Presigned URLs for the stores that have no server of their own (local directory, memory):
//! an HMAC-SHA256 over the method, key, expiry and whatever the URL binds (length, content
//! type, SHA-256, multipart part), checked by whatever HTTP server serves them.

use std::time::Duration;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::{ObjectKey, PresignMethod, PresignOptions, PresignedUrl, Result, StoreError};

/// What a presigned URL of a local or in-memory store allows, as its query string carries it
/// (`method`, `expires`, and when bound `length`, `content_type`, `sha256` (hex), `upload_id`
/// and `part_number`). The server answering the URL fills this from the query, checks it with
/// the store's `verify_presigned`, then holds the request to it: the body's length and
/// SHA-256, its `Content-Type`, and where it goes (a part of a multipart upload or the object).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PresignedParams {
    /// The request allowed.
    pub method: PresignMethod,
    /// Expiry, seconds since the epoch.
    pub expires: i64,
    /// The exact body length a PUT must have.
    pub content_length: Option<u64>,
    /// The `Content-Type` a PUT must carry.
    pub content_type: Option<String>,
    /// The SHA-256 a PUT's body must have.
    pub sha256: Option<[u8; 32]>,
    /// For a PUT of one part: the multipart upload id and the part number.
    pub part: Option<(String, u32)>,
}

impl PresignedParams {
    /// A URL's parameters that bind nothing beyond method and expiry.
    pub fn new(method: PresignMethod, expires: i64) -> Self {
        Self {
            method,
            expires,
            content_length: None,
            content_type: None,
            sha256: None,
            part: None,
        }
    }

    /// Reads them from a presigned URL's query string (percent-encoded `name=value` pairs);
    /// answers them and the `signature`, or `None` when one is missing or malformed.
    pub fn from_query(query: &str) -> Option<(Self, String)> {
        let mut params = Self::new(PresignMethod::Get, 0);
        let (mut method, mut expires, mut signature) = (None, None, None);
        let (mut upload_id, mut part_number) = (None, None);
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_encoding::percent_decode_str(value)
                .decode_utf8()
                .ok()?
                .into_owned();
            match name {
                "method" => method = Some(value),
                "expires" => expires = Some(value.parse().ok()?),
                "signature" => signature = Some(value),
                "length" => params.content_length = Some(value.parse().ok()?),
                "content_type" => params.content_type = Some(value),
                "sha256" => params.sha256 = Some(hex::decode(value).ok()?.try_into().ok()?),
                "upload_id" => upload_id = Some(value),
                "part_number" => part_number = Some(value.parse().ok()?),
                _ => {}
            }
        }
        params.method = match method?.to_ascii_uppercase().as_str() {
            "GET" => PresignMethod::Get,
            "PUT" => PresignMethod::Put,
            _ => return None,
        };
        params.expires = expires?;
        params.part = match (upload_id, part_number) {
            (Some(id), Some(number)) => Some((id, number)),
            (None, None) => None,
            _ => return None,
        };
        Some((params, signature?))
    }

    /// What the signature covers: every field, in a fixed order, one per line.
    fn canonical(&self, key: &ObjectKey) -> String {
        let (upload_id, part_number) = match &self.part {
            Some((id, number)) => (id.as_str(), number.to_string()),
            None => ("", String::new()),
        };
        format!(
            "{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}",
            self.method.as_str(),
            key.as_str(),
            self.expires,
            self.content_length
                .map(|l| l.to_string())
                .unwrap_or_default(),
            self.content_type.as_deref().unwrap_or_default(),
            self.sha256.map(hex::encode).unwrap_or_default(),
            upload_id,
            part_number,
        )
    }

    /// The query string, without the signature.
    fn query(&self) -> String {
        let mut query = format!("method={}&expires={}", self.method.as_str(), self.expires);
        if let Some(length) = self.content_length {
            query.push_str(&format!("&length={length}"));
        }
        if let Some(content_type) = &self.content_type {
            query.push_str("&content_type=");
            query.push_str(&utf8_percent_encode(content_type, NON_ALPHANUMERIC).to_string());
        }
        if let Some(sha256) = self.sha256 {
            query.push_str(&format!("&sha256={}", hex::encode(sha256)));
        }
        if let Some((upload_id, part_number)) = &self.part {
            query.push_str("&upload_id=");
            query.push_str(&utf8_percent_encode(upload_id, NON_ALPHANUMERIC).to_string());
            query.push_str(&format!("&part_number={part_number}"));
        }
        query
    }

    /// The headers a client must send, as S3's presigned URLs list them.
    fn headers(&self) -> Vec<(String, String)> {
        let mut headers = Vec::new();
        if let Some(length) = self.content_length {
            headers.push(("content-length".to_owned(), length.to_string()));
        }
        if let Some(content_type) = &self.content_type {
            headers.push(("content-type".to_owned(), content_type.clone()));
        }
        if let Some(sha256) = self.sha256 {
            headers.push((
                "x-amz-checksum-sha256".to_owned(),
                base64::engine::general_purpose::STANDARD.encode(sha256),
            ));
        }
        headers
    }
}

/// Signs and verifies presigned URLs of the form
/// `{base_url}/{key}?method=GET&expires=<unix>[&...]&signature=<hex>`.
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

    fn mac(&self, key: &ObjectKey, params: &PresignedParams) -> Hmac<Sha256> {
        // new_from_slice accepts keys of any length for HMAC, so this cannot fail.
        let mut mac = match Hmac::<Sha256>::new_from_slice(&self.key) {
            Ok(mac) => mac,
            Err(_) => unreachable!("HMAC takes keys of any length"),
        };
        mac.update(params.canonical(key).as_bytes());
        mac
    }

    /// A URL for `method` on `key`, binding what `options` asks of a PUT.
    pub(crate) fn presign(
        &self,
        method: PresignMethod,
        key: &ObjectKey,
        expires_in: Duration,
        options: &PresignOptions,
    ) -> Result<PresignedUrl> {
        self.sign(key, expires_in, |expires| {
            let mut params = PresignedParams::new(method, expires);
            if method == PresignMethod::Put {
                params.content_length = options.content_length;
                params.content_type = options.content_type.clone();
                params.sha256 = options.sha256;
            }
            params
        })
    }

    /// A URL for a PUT of part `part_number` of upload `upload_id`, of exactly `size` bytes.
    pub(crate) fn presign_part(
        &self,
        key: &ObjectKey,
        upload_id: &str,
        part_number: u32,
        size: u64,
        expires_in: Duration,
    ) -> Result<PresignedUrl> {
        self.sign(key, expires_in, |expires| {
            let mut params = PresignedParams::new(PresignMethod::Put, expires);
            params.content_length = Some(size);
            params.part = Some((upload_id.to_owned(), part_number));
            params
        })
    }

    fn sign(
        &self,
        key: &ObjectKey,
        expires_in: Duration,
        params: impl FnOnce(i64) -> PresignedParams,
    ) -> Result<PresignedUrl> {
        let expires_in = chrono::Duration::from_std(expires_in)
            .map_err(|source| StoreError::other("presign expiry out of range", source))?;
        let expires_at: DateTime<Utc> = Utc::now() + expires_in;
        let params = params(expires_at.timestamp());
        let signature = hex::encode(self.mac(key, &params).finalize().into_bytes());
        let url = format!(
            "{}/{}?{}&signature={}",
            self.base_url,
            encode_key(key.as_str()),
            params.query(),
            signature
        );
        Ok(PresignedUrl {
            url,
            expires_at: DateTime::from_timestamp(params.expires, 0).unwrap_or(expires_at),
            headers: params.headers(),
        })
    }

    pub(crate) fn verify(
        &self,
        key: &ObjectKey,
        params: &PresignedParams,
        signature: &str,
    ) -> Result<()> {
        let denied = |why: &'static str| StoreError::AccessDenied {
            key: key.as_str().to_owned(),
            source: why.into(),
        };
        let Ok(given) = hex::decode(signature) else {
            return Err(denied("malformed presigned URL signature"));
        };
        let expected = self.mac(key, params).finalize().into_bytes();
        if !bool::from(expected[..].ct_eq(&given)) {
            return Err(denied("presigned URL signature does not match"));
        }
        if Utc::now().timestamp() > params.expires {
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

    fn parse(url: &str) -> (PresignedParams, String) {
        PresignedParams::from_query(url.split_once('?').unwrap().1).unwrap()
    }

    #[test]
    fn a_presigned_url_verifies_for_its_method_and_key_only() {
        let signer = UrlSigner::new("http://h/o/", b"secret".to_vec());
        let options = PresignOptions::default();
        let ttl = Duration::from_secs(60);
        let url = signer
            .presign(PresignMethod::Get, &key("a/b c.png"), ttl, &options)
            .unwrap();
        assert!(
            url.url
                .starts_with("http://h/o/a/b%20c.png?method=GET&expires="),
            "{}",
            url.url
        );
        assert!(url.headers.is_empty());
        let (params, signature) = parse(&url.url);
        assert_eq!(url.expires_at.timestamp(), params.expires);
        signer
            .verify(&key("a/b c.png"), &params, &signature)
            .unwrap();
        let mut put = params.clone();
        put.method = PresignMethod::Put;
        let mut later = params.clone();
        later.expires += 3600;
        for (k, p) in [
            ("a/b c.png", &put),
            ("a/other.png", &params),
            ("a/b c.png", &later),
        ] {
            let err = signer.verify(&key(k), p, &signature).unwrap_err();
            assert!(matches!(err, StoreError::AccessDenied { .. }), "{err:?}");
        }
        let other_signer = UrlSigner::new("http://h/o", b"other".to_vec());
        assert!(
            other_signer
                .verify(&key("a/b c.png"), &params, &signature)
                .is_err()
        );
    }

    #[test]
    fn a_put_url_binds_length_type_sha256_and_part() {
        let signer = UrlSigner::new("http://h", b"secret".to_vec());
        let ttl = Duration::from_secs(60);
        let options = PresignOptions::for_put(42, "image/jpeg; q=1").with_sha256([7; 32]);
        let url = signer
            .presign(PresignMethod::Put, &key("k"), ttl, &options)
            .unwrap();
        let (params, signature) = parse(&url.url);
        assert_eq!(params.content_length, Some(42));
        assert_eq!(params.content_type.as_deref(), Some("image/jpeg; q=1"));
        assert_eq!(params.sha256, Some([7; 32]));
        signer.verify(&key("k"), &params, &signature).unwrap();
        assert_eq!(url.headers.len(), 3, "{:?}", url.headers);
        let mut longer = params.clone();
        longer.content_length = Some(43);
        let mut untyped = params.clone();
        untyped.content_type = None;
        let mut other_hash = params.clone();
        other_hash.sha256 = Some([8; 32]);
        for changed in [longer, untyped, other_hash] {
            assert!(signer.verify(&key("k"), &changed, &signature).is_err());
        }

        let part = signer
            .presign_part(&key("k"), "upload-1", 3, 5, ttl)
            .unwrap();
        let (params, signature) = parse(&part.url);
        assert_eq!(params.part, Some(("upload-1".to_owned(), 3)));
        assert_eq!(params.content_length, Some(5));
        signer.verify(&key("k"), &params, &signature).unwrap();
        let mut other_part = params.clone();
        other_part.part = Some(("upload-1".to_owned(), 4));
        assert!(signer.verify(&key("k"), &other_part, &signature).is_err());
    }

    #[test]
    fn an_expired_signature_is_refused_even_when_genuine() {
        let signer = UrlSigner::new("http://h", b"secret".to_vec());
        let params = PresignedParams::new(PresignMethod::Get, Utc::now().timestamp() - 1);
        let signature = hex::encode(signer.mac(&key("k"), &params).finalize().into_bytes());
        let err = signer.verify(&key("k"), &params, &signature).unwrap_err();
        assert!(err.to_string().contains("access denied"), "{err}");
        assert!(signer.verify(&key("k"), &params, "zz").is_err());
    }
}
