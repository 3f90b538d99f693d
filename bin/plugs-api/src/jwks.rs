//! Verification keys from an identity provider's JWKS document (`JWT_JWKS_URL`).
//!
//! Providers rotate their signing keys: a new key appears in the document, tokens start naming
//! it in their `kid`, and the old key goes away later. So the keys are cached, fetched again when
//! a token names a key the cache does not hold, and also when the cache is older than
//! [`MAX_AGE`]. An attacker can make up `kid`s at will, so refreshes caused by unknown keys are
//! rate-limited to one per [`MIN_REFRESH_INTERVAL`]: a flood of made-up `kid`s costs the provider
//! (and us) one request, not one each.
//!
//! Only RS256 (RSA keys) and ES256 (P-256 keys) are accepted; a key whose `alg` or `use` says
//! otherwise, or a symmetric (`oct`) key, is ignored, so a document cannot turn a token's
//! algorithm against us.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};

/// Unknown `kid`s cause at most one fetch per this interval.
pub const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(30);
/// Keys older than this are fetched again on the next token (and kept if that fails).
pub const MAX_AGE: Duration = Duration::from_secs(600);
/// How long one fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest JWKS document read; real ones are a few KB.
const MAX_DOCUMENT_BYTES: usize = 256 * 1024;

/// Why the document could not be fetched or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JwksError {
    /// `JWT_JWKS_URL` is not a URL the client can fetch.
    #[error("JWT_JWKS_URL: not a valid http(s) URL")]
    BadUrl,
    /// The TLS client could not be set up.
    #[error("JWT_JWKS_URL: cannot set up TLS: {0}")]
    Tls(String),
    /// The request failed or timed out.
    #[error("fetching the JWKS document failed: {0}")]
    Fetch(String),
    /// The server answered with an error status.
    #[error("fetching the JWKS document failed: HTTP {0}")]
    Status(u16),
    /// The body is not a JWKS document, or is too large.
    #[error("the JWKS document is not usable: {0}")]
    Document(String),
}

/// One usable key of the document.
#[derive(Clone)]
pub(crate) struct JwksKey {
    pub(crate) algorithm: Algorithm,
    pub(crate) decoding: DecodingKey,
}

#[derive(Default)]
struct KeySet {
    keys: HashMap<String, JwksKey>,
    /// The one key of a document that gives its only key no `kid`.
    unnamed: Option<JwksKey>,
    fetched_at: Option<Instant>,
}

/// The cached keys of one JWKS URL. Cheap to clone (shared).
#[derive(Clone)]
pub struct Jwks {
    inner: Arc<Inner>,
}

struct Inner {
    url: hyper::Uri,
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>,
    keys: RwLock<KeySet>,
    /// Held while fetching, so concurrent misses wait for one fetch; holds when the last
    /// fetch caused by an unknown `kid` happened.
    refresh: tokio::sync::Mutex<Option<Instant>>,
}

impl std::fmt::Debug for Jwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwks")
            .field("url", &self.inner.url)
            .finish_non_exhaustive()
    }
}

impl Jwks {
    /// A cache for `url`, empty until [`Jwks::refresh`] or the first token. Makes no request.
    pub fn new(url: &str) -> Result<Self, JwksError> {
        let url: hyper::Uri = url.parse().map_err(|_| JwksError::BadUrl)?;
        if !matches!(url.scheme_str(), Some("http" | "https")) || url.host().is_none() {
            return Err(JwksError::BadUrl);
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = match hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(provider.clone())
        {
            Ok(builder) => builder,
            Err(err) => {
                // No system CA certificates: an https URL will fail (and say so); http works.
                tracing::warn!(error = %err, "JWT_JWKS_URL: no system CA certificates found");
                let config = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map_err(|err| JwksError::Tls(err.to_string()))?
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth();
                hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config)
            }
        };
        let connector = builder.https_or_http().enable_http1().build();
        let client = Client::builder(TokioExecutor::new())
            // Fetches are rare: no idle connection outlives one.
            .pool_max_idle_per_host(0)
            .build(connector);
        Ok(Self {
            inner: Arc::new(Inner {
                url,
                client,
                keys: RwLock::new(KeySet::default()),
                refresh: tokio::sync::Mutex::new(None),
            }),
        })
    }

    /// Fetches the document now and replaces the cached keys (at start, and when the cache is
    /// stale). On failure the cached keys stay.
    pub async fn refresh(&self) -> Result<usize, JwksError> {
        let _guard = self.inner.refresh.lock().await;
        self.fetch_and_store().await
    }

    /// The key a token's header names: from the cache, or after one fetch if the cache does
    /// not hold it and no fetch for an unknown key happened in the last
    /// [`MIN_REFRESH_INTERVAL`]. `None`: no such key (the token is refused).
    pub(crate) async fn key_for(&self, kid: Option<&str>) -> Option<JwksKey> {
        let (cached, stale) = self.lookup(kid);
        if let Some(key) = cached
            && !stale
        {
            return Some(key);
        }
        let mut last_miss_fetch = self.inner.refresh.lock().await;
        // Another request may have fetched while this one waited.
        let (cached, stale) = self.lookup(kid);
        match cached {
            Some(key) if !stale => return Some(key),
            Some(key) => {
                // Known but old: refresh, and keep using it if the provider does not answer.
                if let Err(err) = self.fetch_and_store().await {
                    tracing::warn!(error = %err, "JWKS refresh failed; keeping the cached keys");
                }
                return self.lookup(kid).0.or(Some(key));
            }
            None => {}
        }
        if last_miss_fetch.is_some_and(|at| at.elapsed() < MIN_REFRESH_INTERVAL) {
            tracing::debug!(kid, "unknown JWKS key id; refresh rate-limited");
            return None;
        }
        *last_miss_fetch = Some(Instant::now());
        tracing::info!(kid, "unknown JWKS key id: fetching the JWKS document");
        if let Err(err) = self.fetch_and_store().await {
            tracing::warn!(error = %err, "JWKS refresh failed");
        }
        self.lookup(kid).0
    }

    fn lookup(&self, kid: Option<&str>) -> (Option<JwksKey>, bool) {
        let Ok(set) = self.inner.keys.read() else {
            return (None, true);
        };
        let key = match kid {
            Some(kid) => set.keys.get(kid).cloned(),
            None => set.unnamed.clone(),
        };
        let stale = set.fetched_at.is_none_or(|at| at.elapsed() > MAX_AGE);
        (key, stale)
    }

    async fn fetch_and_store(&self) -> Result<usize, JwksError> {
        let body = tokio::time::timeout(FETCH_TIMEOUT, self.fetch())
            .await
            .map_err(|_| JwksError::Fetch(format!("no answer within {FETCH_TIMEOUT:?}")))??;
        let set = parse_document(&body)?;
        let count = set.keys.len() + usize::from(set.unnamed.is_some());
        if let Ok(mut keys) = self.inner.keys.write() {
            *keys = set;
        }
        tracing::debug!(count, "JWKS keys loaded");
        Ok(count)
    }

    async fn fetch(&self) -> Result<Bytes, JwksError> {
        let request = hyper::Request::get(self.inner.url.clone())
            .header(hyper::header::ACCEPT, "application/json")
            .body(Empty::<Bytes>::new())
            .map_err(|err| JwksError::Fetch(err.to_string()))?;
        let response = self
            .inner
            .client
            .request(request)
            .await
            .map_err(|err| JwksError::Fetch(err.to_string()))?;
        if !response.status().is_success() {
            return Err(JwksError::Status(response.status().as_u16()));
        }
        Limited::new(response.into_body(), MAX_DOCUMENT_BYTES)
            .collect()
            .await
            .map(|body| body.to_bytes())
            .map_err(|err| JwksError::Document(err.to_string()))
    }
}

/// The usable keys of a JWKS document. Keys this service cannot or must not use are skipped,
/// not fatal: a provider may publish encryption keys or newer algorithms beside its RS256 key.
fn parse_document(body: &[u8]) -> Result<KeySet, JwksError> {
    #[derive(serde::Deserialize)]
    struct Document {
        keys: Vec<serde_json::Value>,
    }
    let document: Document =
        serde_json::from_slice(body).map_err(|err| JwksError::Document(err.to_string()))?;
    let mut set = KeySet {
        fetched_at: Some(Instant::now()),
        ..KeySet::default()
    };
    let mut unnamed = Vec::new();
    for value in document.keys {
        let Ok(jwk) = serde_json::from_value::<Jwk>(value) else {
            continue;
        };
        let Some(key) = usable_key(&jwk) else {
            continue;
        };
        match jwk.common.key_id {
            Some(kid) => {
                set.keys.insert(kid, key);
            }
            None => unnamed.push(key),
        }
    }
    // A key without a `kid` can only be chosen when it is the only key.
    if set.keys.is_empty() && unnamed.len() == 1 {
        set.unnamed = unnamed.pop();
    }
    Ok(set)
}

/// The algorithm and key of a JWK, if it is an RS256 or ES256 signing key.
fn usable_key(jwk: &Jwk) -> Option<JwksKey> {
    if matches!(&jwk.common.public_key_use, Some(use_) if *use_ != PublicKeyUse::Signature) {
        return None;
    }
    let algorithm = match (&jwk.algorithm, jwk.common.key_algorithm) {
        (AlgorithmParameters::RSA(_), None | Some(KeyAlgorithm::RS256)) => Algorithm::RS256,
        (AlgorithmParameters::EllipticCurve(ec), None | Some(KeyAlgorithm::ES256))
            if ec.curve == EllipticCurve::P256 =>
        {
            Algorithm::ES256
        }
        _ => return None,
    };
    let decoding = DecodingKey::from_jwk(jwk).ok()?;
    Some(JwksKey {
        algorithm,
        decoding,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_rs256_and_es256_signing_keys_are_kept() {
        let document = serde_json::json!({"keys": [
            {"kty": "RSA", "kid": "rsa", "alg": "RS256", "use": "sig", "n": "sXch", "e": "AQAB"},
            {"kty": "RSA", "kid": "rsa-enc", "use": "enc", "n": "sXch", "e": "AQAB"},
            {"kty": "RSA", "kid": "rsa-512", "alg": "RS512", "n": "sXch", "e": "AQAB"},
            {"kty": "oct", "kid": "hmac", "alg": "HS256", "k": "c2VjcmV0"},
            {"kty": "EC", "kid": "p384", "crv": "P-384", "x": "AA", "y": "AA"},
            {"kty": "XYZ", "kid": "future"},
            "not even an object"
        ]});
        let set = parse_document(&serde_json::to_vec(&document).unwrap()).unwrap();
        let kids: Vec<&String> = set.keys.keys().collect();
        assert_eq!(kids, vec!["rsa"]);
        assert_eq!(set.keys["rsa"].algorithm, Algorithm::RS256);
        assert!(parse_document(b"{}").is_err());
        assert!(parse_document(b"<html>").is_err());
    }

    #[test]
    fn only_http_urls_are_accepted() {
        assert!(Jwks::new("https://id.example.com/jwks.json").is_ok());
        assert!(Jwks::new("http://127.0.0.1:1/jwks").is_ok());
        assert!(Jwks::new("file:///etc/passwd").is_err());
        assert!(Jwks::new("not a url").is_err());
    }
}
