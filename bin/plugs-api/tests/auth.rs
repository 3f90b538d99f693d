//! Bearer tokens against the real binary (issue 10): `nbf`, `iss` and `aud`, the longest
//! lifetime, subjects that are not in Unicode NFC or hide characters, and keys from a JWKS
//! document served on localhost by the test, rotated while the server runs. Rows of the
//! hostile-input table in docs/RELIABILITY.md.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod binary;

use std::io::{Read as _, Write as _};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use binary::{JWT_SECRET, Server, exchange, get_request, pairs};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

const RSA_PRIVATE: &str = include_str!("fixtures/jwt-rs256-test-private.pem");
const RSA_PUBLIC: &str = include_str!("fixtures/jwt-rs256-test-public.pem");
/// A throwaway P-256 key made for these tests only (`openssl genpkey -algorithm EC -pkeyopt
/// ec_paramgen_curve:P-256`).
const EC_PRIVATE: &str = include_str!("fixtures/jwt-es256-test-private.pem");

fn now() -> u64 {
    chrono::Utc::now().timestamp().unsigned_abs()
}

fn start(extra: &[(&str, &str)]) -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut env = pairs(&[("DATA_DIR", data.to_str().unwrap())]);
    env.extend(pairs(extra));
    (Server::start(&env, dir.path()), dir)
}

/// The status of `GET /api/v1/events` with this token.
fn status_with(server: &Server, token: &str) -> u16 {
    exchange(server.addr, &get_request("/api/v1/events", Some(token))).status
}

fn hs256(claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap()
}

fn signed(algorithm: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: &Value) -> String {
    let mut header = Header::new(algorithm);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

fn rsa_key() -> EncodingKey {
    EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap()
}

fn ec_key() -> EncodingKey {
    EncodingKey::from_ec_pem(EC_PRIVATE.as_bytes()).unwrap()
}

#[test]
fn a_token_with_an_audience_is_accepted_when_none_is_configured() {
    let (server, _dir) = start(&[]);
    let exp = now() + 600;
    for aud in [json!("https://api.example.com"), json!(["a", "b"])] {
        let token = hs256(&json!({"sub": "alice", "exp": exp, "aud": aud}));
        assert_eq!(status_with(&server, &token), 200, "aud {aud}");
    }
}

#[test]
fn a_token_not_yet_valid_is_401() {
    let (server, _dir) = start(&[]);
    let exp = now() + 600;
    let early = hs256(&json!({"sub": "alice", "exp": exp, "nbf": now() + 300}));
    assert_eq!(status_with(&server, &early), 401);
    let valid = hs256(&json!({"sub": "alice", "exp": exp, "nbf": now() - 5}));
    assert_eq!(status_with(&server, &valid), 200);
}

#[test]
fn a_token_that_lives_longer_than_the_maximum_is_401() {
    let (server, _dir) = start(&[("JWT_MAX_LIFETIME", "3600")]);
    let now = now();
    for (why, claims) in [
        (
            "exp at the end of time",
            json!({"sub": "a", "exp": u64::MAX}),
        ),
        (
            "exp at the end of time, iat now",
            json!({"sub": "a", "exp": u64::MAX, "iat": now}),
        ),
        (
            "two hours from iat",
            json!({"sub": "a", "exp": now + 7200, "iat": now}),
        ),
        ("two hours from now", json!({"sub": "a", "exp": now + 7200})),
        (
            "an iat in the future",
            json!({"sub": "a", "exp": u64::MAX, "iat": u64::MAX - 60}),
        ),
    ] {
        assert_eq!(status_with(&server, &hs256(&claims)), 401, "{why}");
    }
    let fine = hs256(&json!({"sub": "a", "exp": now + 3000, "iat": now}));
    assert_eq!(status_with(&server, &fine), 200);
    // `token` refuses to issue what the server would refuse.
    let output = server.run(&["token", "--user", "alice", "--ttl", "2h"]);
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("JWT_MAX_LIFETIME"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // Unset, the maximum is a day: the end of time is refused all the same.
    let (server, _dir) = start(&[]);
    let forever = hs256(&json!({"sub": "a", "exp": u64::MAX}));
    assert_eq!(status_with(&server, &forever), 401);
}

#[test]
fn subjects_not_in_nfc_or_with_invisible_characters_are_401() {
    let (server, _dir) = start(&[]);
    let exp = now() + 600;
    for sub in ["alice", "zo\u{eb}", "\u{674e}"] {
        assert_eq!(
            status_with(&server, &hs256(&json!({"sub": sub, "exp": exp}))),
            200,
            "{sub:?}"
        );
    }
    for sub in [
        "zoe\u{308}",            // NFD: looks like "zoë", is another string
        "admin\u{202e}nimda",    // RIGHT-TO-LEFT OVERRIDE
        "ali\u{200b}ce",         // ZERO WIDTH SPACE
        "\u{feff}alice",         // BYTE ORDER MARK
        "ali\u{2066}ce\u{2069}", // directional isolates
    ] {
        assert_eq!(
            status_with(&server, &hs256(&json!({"sub": sub, "exp": exp}))),
            401,
            "{sub:?}"
        );
    }
    // `token` refuses to issue one for such a user too.
    let output = server.run(&["token", "--user", "ali\u{200b}ce"]);
    assert!(!output.status.success());
}

#[test]
fn issuer_and_audience_are_enforced_when_configured_and_issued_tokens_carry_them() {
    let issuer = "https://id.example.com/";
    let (server, _dir) = start(&[("JWT_ISSUER", issuer), ("JWT_AUDIENCE", "plugs-media")]);
    // What `plugs-api token` issues is accepted...
    let issued = server.token("alice");
    assert_eq!(status_with(&server, &issued), 200);
    let payload = issued.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["iss"], issuer);
    assert_eq!(claims["aud"], "plugs-media");

    let exp = now() + 600;
    let good = json!({"sub": "alice", "exp": exp, "iss": issuer, "aud": ["x", "plugs-media"]});
    assert_eq!(status_with(&server, &hs256(&good)), 200);
    for (why, claims) in [
        ("no aud", json!({"sub": "alice", "exp": exp, "iss": issuer})),
        (
            "another aud",
            json!({"sub": "alice", "exp": exp, "iss": issuer, "aud": "other"}),
        ),
        (
            "no iss",
            json!({"sub": "alice", "exp": exp, "aud": "plugs-media"}),
        ),
        (
            "another iss",
            json!({"sub": "alice", "exp": exp, "iss": "https://evil.example.com/", "aud": "plugs-media"}),
        ),
    ] {
        assert_eq!(status_with(&server, &hs256(&claims)), 401, "{why}");
    }
}

/// A JWKS document served on localhost: its current text, and how many times it was fetched.
struct JwksServer {
    url: String,
    document: Arc<Mutex<String>>,
    fetches: Arc<AtomicUsize>,
}

impl JwksServer {
    fn start(keys: &[(&str, &EncodingKey, Algorithm)]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!(
            "http://{}/.well-known/jwks.json",
            listener.local_addr().unwrap()
        );
        let document = Arc::new(Mutex::new(jwks(keys)));
        let fetches = Arc::new(AtomicUsize::new(0));
        let (doc, count) = (document.clone(), fetches.clone());
        // Answers until the test process ends.
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut head = Vec::new();
                let mut byte = [0_u8; 1];
                while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                    head.push(byte[0]);
                }
                count.fetch_add(1, Ordering::SeqCst);
                let body = doc.lock().unwrap().clone();
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Self {
            url,
            document,
            fetches,
        }
    }

    fn publish(&self, keys: &[(&str, &EncodingKey, Algorithm)]) {
        *self.document.lock().unwrap() = jwks(keys);
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

/// A JWKS document of the public halves of `keys`, named by their `kid`.
fn jwks(keys: &[(&str, &EncodingKey, Algorithm)]) -> String {
    let keys = keys
        .iter()
        .map(|(kid, key, algorithm)| {
            let mut jwk = Jwk::from_encoding_key(key, *algorithm).unwrap();
            jwk.common.key_id = Some((*kid).to_owned());
            jwk
        })
        .collect();
    serde_json::to_string(&JwkSet { keys }).unwrap()
}

#[test]
fn jwks_keys_rotate_and_made_up_key_ids_cost_one_fetch() {
    let (rsa, ec) = (rsa_key(), ec_key());
    let jwks = JwksServer::start(&[("k1", &rsa, Algorithm::RS256)]);
    // An empty JWT_SECRET is unset: the JWKS is the only key source.
    let (server, _dir) = start(&[("JWT_JWKS_URL", &jwks.url), ("JWT_SECRET", "")]);
    assert_eq!(jwks.fetches(), 1, "fetched once at start");

    let claims = json!({"sub": "alice", "exp": now() + 600, "iss": "idp"});
    let k1 = signed(Algorithm::RS256, Some("k1"), &rsa, &claims);
    assert_eq!(status_with(&server, &k1), 200);
    assert_eq!(status_with(&server, &k1), 200);
    assert_eq!(jwks.fetches(), 1, "known keys come from the cache");

    // The provider rotates: a new ES256 key appears and tokens start naming it.
    jwks.publish(&[
        ("k1", &rsa, Algorithm::RS256),
        ("k2", &ec, Algorithm::ES256),
    ]);
    let k2 = signed(Algorithm::ES256, Some("k2"), &ec, &claims);
    assert_eq!(status_with(&server, &k2), 200);
    assert_eq!(
        jwks.fetches(),
        2,
        "an unknown kid fetches the document again"
    );

    // Made-up kids right after: refused, and the refresh is rate-limited.
    for i in 0..20 {
        let forged = signed(
            Algorithm::RS256,
            Some(&format!("made-up-{i}")),
            &rsa,
            &claims,
        );
        assert_eq!(status_with(&server, &forged), 401);
    }
    assert_eq!(
        jwks.fetches(),
        2,
        "made-up kids cause no fetch within the interval"
    );

    // The key decides the algorithm: k1 with an ES256 signature, or an HS256 token keyed with
    // the RSA public key (the classic confusion), is refused.
    assert_eq!(
        status_with(&server, &signed(Algorithm::ES256, Some("k1"), &ec, &claims)),
        401
    );
    let confused = signed(
        Algorithm::HS256,
        Some("k1"),
        &EncodingKey::from_secret(RSA_PUBLIC.as_bytes()),
        &claims,
    );
    assert_eq!(status_with(&server, &confused), 401);
    assert_eq!(status_with(&server, &k1), 200);

    // This binary holds no private key: it cannot issue tokens.
    let output = server.run(&["token", "--user", "alice"]);
    assert!(!output.status.success());
}
