//! Bearer-token authentication: the [`AuthUser`] extractor, the verifier behind it and the signer
//! used by `plugs-api token`.

use std::future::{Ready, ready};
use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use actix_web::{FromRequest, HttpRequest, dev::Payload, http::header, web};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use plugs_domain::UserId;
use serde::{Deserialize, Serialize};

use crate::config::{JwtSettings, Secret};
use crate::error::ApiError;

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
    /// Tokens can only be issued with a shared secret (this binary never holds a private key).
    #[error(
        "tokens can only be issued with JWT_SECRET (RS256 verification needs the issuer's private key)"
    )]
    CannotSign,
    /// Encoding the token failed.
    #[error("signing the token failed: {0}")]
    Sign(#[source] jsonwebtoken::errors::Error),
}

/// The key material resolved from [`JwtSettings`].
#[derive(Clone)]
pub struct JwtKeys {
    decoding: DecodingKey,
    encoding: Option<EncodingKey>,
    validation: Validation,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtKeys")
            .field("algorithms", &self.validation.algorithms)
            .finish_non_exhaustive()
    }
}

impl JwtKeys {
    /// HS256 keys from a shared secret.
    pub fn hs256(secret: &Secret) -> Self {
        let bytes = secret.expose().as_bytes();
        Self {
            decoding: DecodingKey::from_secret(bytes),
            encoding: Some(EncodingKey::from_secret(bytes)),
            validation: validation(Algorithm::HS256),
        }
    }

    /// RS256 verification with an RSA public key in PEM form (tokens cannot be issued).
    pub fn rs256_public_pem(pem: &[u8], path: &Path) -> Result<Self, AuthSetupError> {
        let decoding =
            DecodingKey::from_rsa_pem(pem).map_err(|_| AuthSetupError::BadPublicKey {
                path: path.display().to_string(),
            })?;
        Ok(Self {
            decoding,
            encoding: None,
            validation: validation(Algorithm::RS256),
        })
    }

    /// Resolves the configured keys. With nothing configured, reads the development secret
    /// from `DATA_DIR/jwt-secret`, creating it (mode 0600) on first use.
    pub fn from_settings(jwt: &JwtSettings, data_dir: &Path) -> Result<Self, AuthSetupError> {
        match jwt {
            JwtSettings::Secret(secret) => Ok(Self::hs256(secret)),
            JwtSettings::PublicKeyFile(path) => {
                let pem = std::fs::read(path).map_err(|source| AuthSetupError::Io {
                    what: "JWT_PUBLIC_KEY_PEM",
                    path: path.display().to_string(),
                    source,
                })?;
                Self::rs256_public_pem(&pem, path)
            }
            JwtSettings::Development => Ok(Self::hs256(&development_secret(data_dir)?)),
        }
    }

    /// Checks a token: signature with the one configured algorithm, `exp` present and in the
    /// future, `sub` a valid user id.
    pub fn verify(&self, token: &str) -> Result<UserId, ApiError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|err| {
                tracing::debug!(error = %err, "token refused");
                ApiError::Unauthorized { token_given: true }
            })?;
        UserId::parse(data.claims.sub).map_err(|_| ApiError::Unauthorized { token_given: true })
    }

    /// Issues a token for `user` valid for `ttl` (HS256 only).
    pub fn issue(&self, user: &UserId, ttl: Duration) -> Result<String, AuthSetupError> {
        let key = self.encoding.as_ref().ok_or(AuthSetupError::CannotSign)?;
        let now = chrono::Utc::now().timestamp().unsigned_abs();
        let claims = Claims {
            sub: user.as_str().to_owned(),
            exp: now + ttl.as_secs(),
            iat: Some(now),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, key)
            .map_err(AuthSetupError::Sign)
    }
}

fn validation(algorithm: Algorithm) -> Validation {
    // `Validation::new` accepts exactly this one algorithm (so `none` and algorithm swaps are
    // refused) and requires `exp`.
    let mut validation = Validation::new(algorithm);
    validation.leeway = 30;
    validation.set_required_spec_claims(&["exp", "sub"]);
    validation
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
            tracing::warn!(path = %path.display(), "JWT_SECRET is not set: using the development secret; set JWT_SECRET or JWT_PUBLIC_KEY_PEM in production");
            return Ok(Secret::new(text.trim()));
        }
        Ok(_) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(io(err)),
    }
    std::fs::create_dir_all(data_dir).map_err(io)?;
    let secret = hex::encode(rand::random::<[u8; 32]>());
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&path).map_err(io)?;
    file.write_all(secret.as_bytes()).map_err(io)?;
    tracing::warn!(path = %path.display(), "JWT_SECRET is not set: generated a development secret; set JWT_SECRET or JWT_PUBLIC_KEY_PEM in production");
    Ok(Secret::new(secret))
}

/// The authenticated caller: the `sub` of a valid bearer token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthUser(pub UserId);

impl FromRequest for AuthUser {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        ready(authenticate(req).map(AuthUser))
    }
}

fn authenticate(req: &HttpRequest) -> Result<UserId, ApiError> {
    let Some(keys) = req.app_data::<web::Data<JwtKeys>>() else {
        return Err(ApiError::Internal {
            context: "authentication is not configured",
        });
    };
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return Err(ApiError::Unauthorized { token_given: false });
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|token| !token.is_empty())
        .ok_or(ApiError::Unauthorized { token_given: true })?;
    keys.verify(token)
}

/// Parses durations like `90s`, `15m`, `1h`, `7d` or a bare number of seconds (CLI flags).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let value: u64 = number
        .parse()
        .map_err(|_| format!("invalid duration {text:?}: expected like 90s, 15m, 1h, 7d"))?;
    let factor = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "invalid duration unit in {text:?}: use s, m, h or d"
            ));
        }
    };
    value
        .checked_mul(factor)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("duration {text:?} is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
        assert!(parse_duration("1y").is_err());
        assert!(parse_duration("h").is_err());
    }

    #[test]
    fn issued_tokens_verify_and_others_do_not() {
        let keys = JwtKeys::hs256(&Secret::new("0123456789abcdef0123456789abcdef"));
        let user = UserId::parse("alice").unwrap();
        let token = keys.issue(&user, Duration::from_secs(60)).unwrap();
        assert_eq!(keys.verify(&token).unwrap(), user);

        let other = JwtKeys::hs256(&Secret::new("another-secret-another-secret-xx"));
        assert!(other.verify(&token).is_err());
        assert!(keys.verify("not.a.token").is_err());
    }

    /// A throwaway key pair made for these tests only (`openssl genrsa 2048`).
    const RSA_PRIVATE: &str = include_str!("../tests/fixtures/jwt-rs256-test-private.pem");
    const RSA_PUBLIC: &str = include_str!("../tests/fixtures/jwt-rs256-test-public.pem");

    #[test]
    fn rs256_accepts_the_issuers_tokens_and_refuses_algorithm_confusion() {
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
        assert_eq!(keys.verify(&token).unwrap().as_str(), "alice");

        // The classic attack: an HS256 token keyed with the (public) RSA key.
        let forged = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(RSA_PUBLIC.as_bytes()),
        )
        .unwrap();
        assert!(keys.verify(&forged).is_err());
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
