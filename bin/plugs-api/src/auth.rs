//! Bearer-token authentication: the [`AuthUser`] extractor, the verifier behind it and the signer
//! used by `plugs-api token`.
//!
//! A token is accepted when its signature verifies with the one configured algorithm (HS256 with
//! `JWT_SECRET`, RS256 with `JWT_PUBLIC_KEY_PEM`, RS256 or ES256 with a key of `JWT_JWKS_URL`),
//! `exp` is in the future and `nbf` (if any) in the past (30 s of leeway), `iss` and `aud` are
//! those configured (when configured), the token lives no longer than `JWT_MAX_LIFETIME`, and
//! `sub` is a user id in Unicode NFC without control or invisible formatting characters.

use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use actix_web::{FromRequest, HttpRequest, dev::Payload, http::header, web};
use futures::future::LocalBoxFuture;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use plugs_domain::UserId;
use serde::{Deserialize, Serialize};

use crate::config::{JwtPolicy, JwtSettings, Secret, Settings};
use crate::error::ApiError;
use crate::jwks::{Jwks, JwksError};

/// Clock skew allowed on `exp`, `nbf` and the lifetime, in seconds.
const LEEWAY_SECS: u64 = 30;

/// The claims this service reads and writes. `sub` is the user id.
#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// Expiry, seconds since the epoch. Required.
    pub exp: u64,
    /// Issued at, seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
}

/// What `plugs-api token` signs: [`Claims`] plus the configured issuer and audience.
#[derive(Debug, Serialize)]
struct IssuedClaims<'a> {
    sub: &'a str,
    exp: u64,
    iat: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
}

/// Why auth could not be set up (a key file unreadable or not a key).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthSetupError {
    /// The public key file or the development secret file could not be read or written.
    #[error("{what} {path}: {source}")]
    Io {
        /// What the file is.
        what: &'static str,
        /// Its path.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// `JWT_PUBLIC_KEY_PEM` does not hold an RSA public key in PEM form.
    #[error("JWT_PUBLIC_KEY_PEM {path}: not an RSA public key in PEM form")]
    BadPublicKey {
        /// Its path.
        path: String,
    },
    /// `JWT_JWKS_URL` cannot be used.
    #[error(transparent)]
    Jwks(#[from] JwksError),
    /// Tokens can only be issued with a shared secret (this binary never holds a private key).
    #[error(
        "tokens can only be issued with JWT_SECRET (RS256 and ES256 need the issuer's private key)"
    )]
    CannotSign,
    /// The token asked for would outlive `JWT_MAX_LIFETIME`, so the server would refuse it.
    #[error("--ttl {asked}s is longer than JWT_MAX_LIFETIME ({max}s)")]
    TooLong {
        /// The lifetime asked for, in seconds.
        asked: u64,
        /// The longest accepted, in seconds.
        max: u64,
    },
    /// The user id would be refused as a token subject.
    #[error("--user: {0}")]
    BadSubject(&'static str),
    /// Encoding the token failed.
    #[error("signing the token failed: {0}")]
    Sign(#[source] jsonwebtoken::errors::Error),
}

/// Where verification keys come from.
#[derive(Clone)]
enum Verifier {
    /// One key and its algorithm (HS256 secret, RS256 public key).
    Static {
        decoding: DecodingKey,
        algorithm: Algorithm,
    },
    /// The keys of a JWKS document, chosen by the token's `kid`.
    Jwks(Jwks),
}

/// The key material resolved from [`JwtSettings`], and the claims policy.
#[derive(Clone)]
pub struct JwtKeys {
    verifier: Verifier,
    encoding: Option<EncodingKey>,
    policy: JwtPolicy,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let source = match &self.verifier {
            Verifier::Static { algorithm, .. } => format!("{algorithm:?}"),
            Verifier::Jwks(jwks) => format!("{jwks:?}"),
        };
        f.debug_struct("JwtKeys")
            .field("keys", &source)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl JwtKeys {
    /// HS256 keys from a shared secret, with the default policy (no issuer or audience
    /// required, a day's lifetime at most).
    pub fn hs256(secret: &Secret) -> Self {
        let bytes = secret.expose().as_bytes();
        Self {
            verifier: Verifier::Static {
                decoding: DecodingKey::from_secret(bytes),
                algorithm: Algorithm::HS256,
            },
            encoding: Some(EncodingKey::from_secret(bytes)),
            policy: JwtPolicy::default(),
        }
    }

    /// RS256 verification with an RSA public key in PEM form (tokens cannot be issued).
    pub fn rs256_public_pem(pem: &[u8], path: &Path) -> Result<Self, AuthSetupError> {
        let decoding =
            DecodingKey::from_rsa_pem(pem).map_err(|_| AuthSetupError::BadPublicKey {
                path: path.display().to_string(),
            })?;
        Ok(Self {
            verifier: Verifier::Static {
                decoding,
                algorithm: Algorithm::RS256,
            },
            encoding: None,
            policy: JwtPolicy::default(),
        })
    }

    /// RS256 and ES256 verification with the keys of a JWKS document (tokens cannot be
    /// issued). Makes no request: call [`JwtKeys::prefetch`] to load the keys before serving.
    pub fn jwks(url: &str) -> Result<Self, AuthSetupError> {
        Ok(Self {
            verifier: Verifier::Jwks(Jwks::new(url)?),
            encoding: None,
            policy: JwtPolicy::default(),
        })
    }

    /// The same keys with another claims policy.
    #[must_use]
    pub fn with_policy(mut self, policy: JwtPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Resolves the configured keys and policy. With no key configured, reads the development
    /// secret from `DATA_DIR/jwt-secret`, creating it (mode 0600) on first use.
    pub fn from_settings(settings: &Settings) -> Result<Self, AuthSetupError> {
        let keys = match &settings.jwt {
            JwtSettings::Secret(secret) => Self::hs256(secret),
            JwtSettings::PublicKeyFile(path) => {
                let pem = std::fs::read(path).map_err(|source| AuthSetupError::Io {
                    what: "JWT_PUBLIC_KEY_PEM",
                    path: path.display().to_string(),
                    source,
                })?;
                Self::rs256_public_pem(&pem, path)?
            }
            JwtSettings::Jwks(url) => Self::jwks(url)?,
            JwtSettings::Development => Self::hs256(&development_secret(&settings.data_dir)?),
        };
        Ok(keys.with_policy(settings.jwt_policy.clone()))
    }

    /// Loads the JWKS document now, so the first requests do not wait for it. A failure is
    /// logged, not fatal: the server still starts, and the first token fetches again.
    pub async fn prefetch(&self) {
        if let Verifier::Jwks(jwks) = &self.verifier {
            match jwks.refresh().await {
                Ok(count) => tracing::info!(count, "JWKS keys loaded"),
                Err(err) => tracing::warn!(error = %err, "JWT_JWKS_URL: cannot load the keys yet"),
            }
        }
    }

    /// Checks a token (see the module documentation). Every refusal is one DEBUG line saying
    /// why, never the token.
    pub async fn verify(&self, token: &str) -> Result<UserId, ApiError> {
        self.check(token).await.map_err(|reason| {
            tracing::debug!(reason = %reason, "token refused");
            ApiError::Unauthorized { token_given: true }
        })
    }

    async fn check(&self, token: &str) -> Result<UserId, String> {
        let (decoding, algorithm) = match &self.verifier {
            Verifier::Static {
                decoding,
                algorithm,
            } => (decoding.clone(), *algorithm),
            Verifier::Jwks(jwks) => {
                let header = jsonwebtoken::decode_header(token).map_err(|e| e.to_string())?;
                let key = jwks
                    .key_for(header.kid.as_deref())
                    .await
                    .ok_or_else(|| "no JWKS key for the token's kid".to_owned())?;
                // The key decides the algorithm; the header must agree with it.
                (key.decoding, key.algorithm)
            }
        };
        let data = jsonwebtoken::decode::<Claims>(token, &decoding, &self.validation(algorithm))
            .map_err(|e| e.to_string())?;
        self.check_lifetime(&data.claims)?;
        check_subject(&data.claims.sub).map_err(str::to_owned)?;
        UserId::parse(data.claims.sub).map_err(|e| e.to_string())
    }

    /// `Validation::new` accepts exactly one algorithm (so `none` and algorithm swaps are
    /// refused) and requires `exp`.
    fn validation(&self, algorithm: Algorithm) -> Validation {
        let mut validation = Validation::new(algorithm);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        let mut required = vec!["exp", "sub"];
        if let Some(issuer) = &self.policy.issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        match &self.policy.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                required.push("aud");
            }
            // Identity providers always name an audience; with none configured, any will do.
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        validation
    }

    /// Refuses tokens that live longer than `JWT_MAX_LIFETIME`: `exp - iat` when the token has
    /// an `iat`, and `exp - now` always (so an `iat` in the future buys nothing).
    fn check_lifetime(&self, claims: &Claims) -> Result<(), String> {
        let max = self.policy.max_lifetime.as_secs();
        let now = now_secs();
        let too_long = |from: u64, allowance: u64| {
            claims.exp.saturating_sub(from) > max.saturating_add(allowance)
        };
        if claims.iat.is_some_and(|iat| too_long(iat, 0)) || too_long(now, LEEWAY_SECS) {
            return Err(format!("token lives longer than JWT_MAX_LIFETIME ({max}s)"));
        }
        Ok(())
    }

    /// Issues a token for `user` valid for `ttl` (HS256 only), with the configured issuer and
    /// audience, so that this server accepts it.
    pub fn issue(&self, user: &UserId, ttl: Duration) -> Result<String, AuthSetupError> {
        let key = self.encoding.as_ref().ok_or(AuthSetupError::CannotSign)?;
        let max = self.policy.max_lifetime.as_secs();
        if ttl.as_secs() > max {
            return Err(AuthSetupError::TooLong {
                asked: ttl.as_secs(),
                max,
            });
        }
        check_subject(user.as_str()).map_err(AuthSetupError::BadSubject)?;
        let now = now_secs();
        let claims = IssuedClaims {
            sub: user.as_str(),
            exp: now.saturating_add(ttl.as_secs()),
            iat: now,
            iss: self.policy.issuer.as_deref(),
            aud: self.policy.audience.as_deref(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, key)
            .map_err(AuthSetupError::Sign)
    }
}

fn now_secs() -> u64 {
    chrono::Utc::now().timestamp().max(0).unsigned_abs()
}

/// A subject is refused, never rewritten, when it is not in Unicode NFC (`"e\u{301}"` and `"é"`
/// would otherwise be two users who look the same) or holds a control character, an invisible
/// formatting character (general category Cf: RTL override, zero-width space and joiners, BOM,
/// ...) or a line or paragraph separator, which can disguise one id as another in logs and UIs.
pub fn check_subject(sub: &str) -> Result<(), &'static str> {
    use unicode_properties::{GeneralCategory, UnicodeGeneralCategory as _};
    if !unicode_normalization::is_nfc(sub) {
        return Err("sub is not in Unicode NFC");
    }
    let hidden = sub.chars().any(|c| {
        matches!(
            c.general_category(),
            GeneralCategory::Control
                | GeneralCategory::Format
                | GeneralCategory::LineSeparator
                | GeneralCategory::ParagraphSeparator
        )
    });
    if hidden {
        return Err("sub holds a control or invisible formatting character");
    }
    Ok(())
}

/// Reads or creates the development secret. Loud on purpose: it is only for a laptop.
fn development_secret(data_dir: &Path) -> Result<Secret, AuthSetupError> {
    let path = data_dir.join("jwt-secret");
    let io = |source| AuthSetupError::Io {
        what: "development JWT secret",
        path: path.display().to_string(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(text) if text.trim().len() >= 32 => {
            tracing::warn!(path = %path.display(), "JWT_SECRET is not set: using the development secret; set JWT_SECRET, JWT_PUBLIC_KEY_PEM or JWT_JWKS_URL in production");
            return Ok(Secret::new(text.trim()));
        }
        Ok(_) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(io(err)),
    }
    crate::state::create_private_dir(data_dir).map_err(io)?;
    let secret = hex::encode(rand::random::<[u8; 32]>());
    let mut file = crate::state::private_file_options()
        .open(&path)
        .map_err(io)?;
    file.write_all(secret.as_bytes()).map_err(io)?;
    tracing::warn!(path = %path.display(), "JWT_SECRET is not set: generated a development secret; set JWT_SECRET, JWT_PUBLIC_KEY_PEM or JWT_JWKS_URL in production");
    Ok(Secret::new(secret))
}

/// The authenticated caller: the `sub` of a valid bearer token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthUser(pub UserId);

impl FromRequest for AuthUser {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        let keys = req.app_data::<web::Data<JwtKeys>>().cloned();
        let token = bearer_token(req);
        Box::pin(async move {
            let Some(keys) = keys else {
                return Err(ApiError::Internal {
                    context: "authentication is not configured",
                });
            };
            keys.verify(&token?).await.map(AuthUser)
        })
    }
}

/// The token of the `Authorization: Bearer` header. A missing or malformed header is one DEBUG
/// line, like a refused token.
fn bearer_token(req: &HttpRequest) -> Result<String, ApiError> {
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        tracing::debug!("no bearer token");
        return Err(ApiError::Unauthorized { token_given: false });
    };
    value
        .to_str()
        .ok()
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|token| !token.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| {
            tracing::debug!("Authorization header is not a bearer token");
            ApiError::Unauthorized { token_given: true }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> Secret {
        Secret::new("0123456789abcdef0123456789abcdef")
    }

    fn sign(claims: &serde_json::Value) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(secret().expose().as_bytes()),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn issued_tokens_verify_and_others_do_not() {
        let keys = JwtKeys::hs256(&secret());
        let user = UserId::parse("alice").unwrap();
        let token = keys.issue(&user, Duration::from_secs(60)).unwrap();
        assert_eq!(keys.verify(&token).await.unwrap(), user);

        let other = JwtKeys::hs256(&Secret::new("another-secret-another-secret-xx"));
        assert!(other.verify(&token).await.is_err());
        assert!(keys.verify("not.a.token").await.is_err());
    }

    #[tokio::test]
    async fn nbf_issuer_audience_and_lifetime_are_checked() {
        let now = now_secs();
        let policy = JwtPolicy {
            issuer: Some("https://id.example.com/".into()),
            audience: Some("plugs-media".into()),
            max_lifetime: Duration::from_secs(3600),
        };
        let keys = JwtKeys::hs256(&secret()).with_policy(policy);
        let good = serde_json::json!({
            "sub": "alice", "exp": now + 600, "iat": now,
            "iss": "https://id.example.com/", "aud": ["other", "plugs-media"],
        });
        assert_eq!(keys.verify(&sign(&good)).await.unwrap().as_str(), "alice");
        // What `token` issues carries the issuer and audience, so the server accepts it.
        let issued = keys
            .issue(&UserId::parse("bob").unwrap(), Duration::from_secs(60))
            .unwrap();
        assert_eq!(keys.verify(&issued).await.unwrap().as_str(), "bob");
        assert!(matches!(
            keys.issue(&UserId::parse("bob").unwrap(), Duration::from_secs(7200)),
            Err(AuthSetupError::TooLong {
                asked: 7200,
                max: 3600
            })
        ));

        let refused = |change: serde_json::Value| {
            let mut claims = good.clone();
            for (name, value) in change.as_object().unwrap() {
                if value.is_null() {
                    claims.as_object_mut().unwrap().remove(name);
                } else {
                    claims[name] = value.clone();
                }
            }
            sign(&claims)
        };
        for (why, change) in [
            ("not yet valid", serde_json::json!({"nbf": now + 600})),
            (
                "another issuer",
                serde_json::json!({"iss": "https://evil.example.com/"}),
            ),
            ("no issuer", serde_json::json!({"iss": null})),
            (
                "another audience",
                serde_json::json!({"aud": "someone-else"}),
            ),
            ("no audience", serde_json::json!({"aud": null})),
            ("lives too long", serde_json::json!({"exp": now + 7200})),
            (
                "lives too long without iat",
                serde_json::json!({"iat": null, "exp": now + 7200}),
            ),
            (
                "exp at the end of time",
                serde_json::json!({"exp": u64::MAX}),
            ),
            (
                "iat in the future",
                serde_json::json!({"iat": u64::MAX - 10, "exp": u64::MAX}),
            ),
        ] {
            assert!(keys.verify(&refused(change)).await.is_err(), "{why}");
        }
        assert!(
            keys.verify(&refused(serde_json::json!({"nbf": now - 10})))
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn without_a_configured_audience_any_audience_is_accepted() {
        let keys = JwtKeys::hs256(&secret());
        let exp = now_secs() + 600;
        for aud in [
            serde_json::json!("https://api.example.com"),
            serde_json::json!(["a", "b"]),
        ] {
            let token = sign(&serde_json::json!({"sub": "alice", "exp": exp, "aud": aud}));
            assert!(keys.verify(&token).await.is_ok(), "{aud}");
        }
        // The default lifetime (a day) still applies.
        let token = sign(&serde_json::json!({"sub": "alice", "exp": u64::MAX}));
        assert!(keys.verify(&token).await.is_err());
    }

    #[tokio::test]
    async fn subjects_not_in_nfc_or_with_hidden_characters_are_refused() {
        let keys = JwtKeys::hs256(&secret());
        let exp = now_secs() + 600;
        for sub in ["alice", "zoë", "\u{e9}l\u{e9}onore", "李"] {
            let token = sign(&serde_json::json!({"sub": sub, "exp": exp}));
            assert!(keys.verify(&token).await.is_ok(), "{sub:?}");
        }
        for sub in [
            "e\u{301}lise",         // e + combining acute: NFD
            "\u{212b}ngstr\u{f6}m", // ANGSTROM SIGN: NFC maps it to Å
            "admin\u{202e}nimda",   // RIGHT-TO-LEFT OVERRIDE
            "ali\u{200b}ce",        // ZERO WIDTH SPACE
            "ali\u{200d}ce",        // ZERO WIDTH JOINER
            "\u{feff}alice",        // BOM
            "ali\u{2028}ce",        // LINE SEPARATOR
            "ali\u{7f}ce",          // DEL
            "ali\u{85}ce",          // NEXT LINE (C1 control)
        ] {
            assert!(check_subject(sub).is_err(), "{sub:?}");
            let token = sign(&serde_json::json!({"sub": sub, "exp": exp}));
            assert!(keys.verify(&token).await.is_err(), "{sub:?}");
            if let Ok(user) = UserId::parse(sub) {
                assert!(matches!(
                    keys.issue(&user, Duration::from_secs(60)),
                    Err(AuthSetupError::BadSubject(_))
                ));
            }
        }
    }

    /// A throwaway key pair made for these tests only (`openssl genrsa 2048`).
    const RSA_PRIVATE: &str = include_str!("../tests/fixtures/jwt-rs256-test-private.pem");
    const RSA_PUBLIC: &str = include_str!("../tests/fixtures/jwt-rs256-test-public.pem");

    #[tokio::test]
    async fn rs256_accepts_the_issuers_tokens_and_refuses_algorithm_confusion() {
        let keys =
            JwtKeys::rs256_public_pem(RSA_PUBLIC.as_bytes(), Path::new("public.pem")).unwrap();
        let exp = chrono::Utc::now().timestamp().unsigned_abs() + 600;
        let claims = Claims {
            sub: "alice".into(),
            exp,
            iat: None,
        };
        let private = EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap();
        let token =
            jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &private).unwrap();
        assert_eq!(keys.verify(&token).await.unwrap().as_str(), "alice");

        // The classic attack: an HS256 token keyed with the (public) RSA key.
        let forged = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(RSA_PUBLIC.as_bytes()),
        )
        .unwrap();
        assert!(keys.verify(&forged).await.is_err());
        assert!(matches!(
            keys.issue(&UserId::parse("alice").unwrap(), Duration::from_secs(60)),
            Err(AuthSetupError::CannotSign)
        ));
        assert!(JwtKeys::rs256_public_pem(b"not a key", Path::new("x.pem")).is_err());
    }

    #[test]
    fn development_secret_is_created_once_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let first = development_secret(dir.path()).unwrap();
        let second = development_secret(dir.path()).unwrap();
        assert_eq!(first, second);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(dir.path().join("jwt-secret"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
