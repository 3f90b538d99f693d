//! CloudFront signed URLs from `/url`: keys made here with the rsa and p256 crates, signatures
//! checked with the public key the way CloudFront documents it (rebuild the canned policy from
//! the URL's resource and `Expires`, undo the base64 alphabet, verify with SHA-256 or SHA-1), and
//! once more with the `openssl` command line as in CloudFront's own examples, where it exists.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::{StatusCode, header};
use actix_web::test;
use common::{PNG, Part, multipart, multipart_content_type};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p256::ecdsa::signature::Verifier as _;
use p256::pkcs8::{EncodePrivateKey as _, EncodePublicKey as _, LineEnding};
use plugs_api::AppState;
use plugs_api::auth::{Claims, JwtKeys};
use plugs_api::cdn::{CloudFrontSigner, HashAlgorithm, cloudfront_base64_decode};
use plugs_api::config::Secret;
use plugs_api::metrics::Metrics;
use plugs_api::routes::media::UploadLimits;
use plugs_media::{MediaService, ServiceConfig};
use plugs_persistence::InMemoryRepository;
use plugs_storage::MemoryStore;
use rsa::pkcs1::EncodeRsaPrivateKey as _;
use rsa::rand_core::{CryptoRng, RngCore};
use serde_json::{Value, json};
use sha2::Digest as _;

const SECRET: &str = "cdn-tests-secret-0123456789abcdef0123";
const CDN: &str = "https://d111111abcdef8.cloudfront.net";
const KEY_PAIR_ID: &str = "K2JCJMDEHXQW5F";

/// rand 0.9's generator behind the rand_core 0.6 traits that the rsa crate's key generation takes.
struct Rng09;

impl RngCore for Rng09 {
    fn next_u32(&mut self) -> u32 {
        rand::random()
    }
    fn next_u64(&mut self) -> u64 {
        rand::random()
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        rand::fill(dest);
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rsa::rand_core::Error> {
        rand::fill(dest);
        Ok(())
    }
}

impl CryptoRng for Rng09 {}

enum Public {
    Rsa(rsa::RsaPublicKey),
    Ecdsa(p256::ecdsa::VerifyingKey),
}

struct KeyPair {
    private_pem: String,
    public_pem: String,
    public: Public,
}

fn rsa_key() -> KeyPair {
    let private = rsa::RsaPrivateKey::new(&mut Rng09, 2048).unwrap();
    let public = rsa::RsaPublicKey::from(&private);
    KeyPair {
        // PKCS#1, as `openssl genrsa` writes it and CloudFront's guide shows.
        private_pem: private.to_pkcs1_pem(LineEnding::LF).unwrap().to_string(),
        public_pem: public.to_public_key_pem(LineEnding::LF).unwrap(),
        public: Public::Rsa(public),
    }
}

fn ecdsa_key() -> KeyPair {
    let private = loop {
        if let Ok(key) = p256::ecdsa::SigningKey::from_slice(&rand::random::<[u8; 32]>()) {
            break key;
        }
    };
    let public = *private.verifying_key();
    KeyPair {
        private_pem: private.to_pkcs8_pem(LineEnding::LF).unwrap().to_string(),
        public_pem: public.to_public_key_pem(LineEnding::LF).unwrap(),
        public: Public::Ecdsa(public),
    }
}

fn state(signer: CloudFrontSigner) -> AppState {
    let store = MemoryStore::new();
    let repo = Arc::new(InMemoryRepository::new());
    let config = ServiceConfig {
        cdn_base_url: Some(CDN.to_owned()),
        download_signer: Some(Arc::new(signer)),
        ..ServiceConfig::default()
    };
    let service = MediaService::new(Arc::new(store), repo.clone(), repo.clone(), repo, config);
    AppState {
        service,
        keys: JwtKeys::hs256(&Secret::new(SECRET)),
        metrics: Metrics::new().unwrap(),
        limits: UploadLimits::with_max_file_size(1 << 20),
        local_objects: None,
        cors_allowed_origins: Vec::new(),
        idempotency: std::sync::Arc::new(plugs_persistence::InMemoryIdempotency::new()),
    }
}

fn bearer(user: &str) -> (header::HeaderName, String) {
    let claims = Claims {
        sub: user.to_owned(),
        exp: chrono::Utc::now().timestamp().unsigned_abs() + 3600,
        iat: None,
    };
    let token = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    (header::AUTHORIZATION, format!("Bearer {token}"))
}

/// Creates an event, uploads a PNG and returns (the media record, the `/url` answer for
/// `query`).
async fn upload_and_presign(
    app: &impl Service<
        actix_http::Request,
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
    >,
    query: &str,
) -> (Value, Value) {
    let req = test::TestRequest::post()
        .uri("/api/v1/events")
        .insert_header(bearer("alice"))
        .set_json(json!({"title": "Party"}))
        .to_request();
    let response = test::call_service(app, req).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let event: Value = test::read_body_json(response).await;
    let event = event["id"].as_str().unwrap().to_owned();
    let body = multipart(&[Part::File("file", "cat.png", Some("image/png"), PNG)]);
    let req = test::TestRequest::post()
        .uri(&format!("/api/v1/events/{event}/media"))
        .insert_header(bearer("alice"))
        .insert_header((header::CONTENT_TYPE, multipart_content_type()))
        .set_payload(body)
        .to_request();
    let response = test::call_service(app, req).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let media: Value = test::read_body_json(response).await;
    let id = media["id"].as_str().unwrap();
    let req = test::TestRequest::get()
        .uri(&format!("/api/v1/events/{event}/media/{id}/url{query}"))
        .insert_header(bearer("alice"))
        .to_request();
    let response = test::call_service(app, req).await;
    assert_eq!(response.status(), StatusCode::OK);
    (media, test::read_body_json(response).await)
}

/// What CloudFront reads from a signed URL: the resource (the URL without its own parameters),
/// `Expires`, the signature's bytes, `Key-Pair-Id` and `Hash-Algorithm`.
struct Signed {
    resource: String,
    expires: i64,
    signature: Vec<u8>,
    key_pair_id: String,
    hash_algorithm: Option<String>,
}

fn parse_signed(url: &str) -> Signed {
    let (resource, query) = url.split_once('?').unwrap();
    let mut expires = None;
    let mut signature = None;
    let mut key_pair_id = None;
    let mut hash_algorithm = None;
    for pair in query.split('&') {
        let (name, value) = pair.split_once('=').unwrap();
        match name {
            "Expires" => expires = Some(value.parse().unwrap()),
            "Signature" => signature = Some(cloudfront_base64_decode(value).unwrap()),
            "Key-Pair-Id" => key_pair_id = Some(value.to_owned()),
            "Hash-Algorithm" => hash_algorithm = Some(value.to_owned()),
            other => panic!("unexpected parameter {other} in {url}"),
        }
    }
    Signed {
        resource: resource.to_owned(),
        expires: expires.unwrap(),
        signature: signature.unwrap(),
        key_pair_id: key_pair_id.unwrap(),
        hash_algorithm,
    }
}

/// CloudFront's check: the canned policy rebuilt, hashed with the announced algorithm (SHA-1
/// when none is), verified with the public key.
fn verify(public: &Public, signed: &Signed) -> bool {
    let policy = format!(
        r#"{{"Statement":[{{"Resource":"{}","Condition":{{"DateLessThan":{{"AWS:EpochTime":{}}}}}}}]}}"#,
        signed.resource, signed.expires
    );
    let sha256 = match signed.hash_algorithm.as_deref() {
        Some("SHA256") => true,
        None => false,
        Some(other) => panic!("unknown Hash-Algorithm {other}"),
    };
    match public {
        Public::Rsa(key) if sha256 => key
            .verify(
                rsa::Pkcs1v15Sign::new::<sha2::Sha256>(),
                &sha2::Sha256::digest(policy.as_bytes()),
                &signed.signature,
            )
            .is_ok(),
        Public::Rsa(key) => key
            .verify(
                rsa::Pkcs1v15Sign::new::<sha1::Sha1>(),
                &sha1::Sha1::digest(policy.as_bytes()),
                &signed.signature,
            )
            .is_ok(),
        Public::Ecdsa(key) => {
            assert!(sha256, "ECDSA is checked with SHA-256 here");
            let Ok(signature) = p256::ecdsa::Signature::from_der(&signed.signature) else {
                return false;
            };
            key.verify(policy.as_bytes(), &signature).is_ok()
        }
    }
}

/// The same check with `openssl dgst -verify`, as CloudFront's guide signs with `openssl`.
/// `None` when there is no `openssl` on this machine.
fn openssl_verifies(public_pem: &str, signed: &Signed) -> Option<bool> {
    let dir = tempfile::tempdir().unwrap();
    let policy = format!(
        r#"{{"Statement":[{{"Resource":"{}","Condition":{{"DateLessThan":{{"AWS:EpochTime":{}}}}}}}]}}"#,
        signed.resource, signed.expires
    );
    std::fs::write(dir.path().join("policy"), policy).unwrap();
    std::fs::write(dir.path().join("public.pem"), public_pem).unwrap();
    std::fs::write(dir.path().join("signature"), &signed.signature).unwrap();
    let digest = if signed.hash_algorithm.is_some() {
        "-sha256"
    } else {
        "-sha1"
    };
    let status = std::process::Command::new("openssl")
        .current_dir(dir.path())
        .args([
            "dgst",
            digest,
            "-verify",
            "public.pem",
            "-signature",
            "signature",
            "policy",
        ])
        .output()
        .ok()?;
    Some(status.status.success())
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

async fn check_signed_urls(pair: &KeyPair, hash: HashAlgorithm) {
    let signer = CloudFrontSigner::from_pem(CDN, KEY_PAIR_ID, &pair.private_pem, hash).unwrap();
    let app = test::init_service(plugs_api::build_app(state(signer))).await;

    let before = now();
    let (media, answer) = upload_and_presign(&app, "").await;
    let url = answer["url"].as_str().unwrap();
    let key = media["s3_key"].as_str().unwrap();
    // The record keeps its stable, unsigned URL (list pages stay cacheable).
    assert_eq!(media["url"], format!("{CDN}/{key}"));

    let signed = parse_signed(url);
    assert_eq!(signed.resource, format!("{CDN}/{key}"));
    assert_eq!(signed.key_pair_id, KEY_PAIR_ID);
    match hash {
        HashAlgorithm::Sha256 => assert_eq!(signed.hash_algorithm.as_deref(), Some("SHA256")),
        HashAlgorithm::Sha1 => assert_eq!(signed.hash_algorithm, None),
    }
    // Expiry = the presign TTL (15 min by default), and `expires_at` says the same.
    assert!(
        (before + 900..=now() + 900).contains(&signed.expires),
        "{url}"
    );
    let expires_at = chrono::DateTime::parse_from_rfc3339(answer["expires_at"].as_str().unwrap())
        .unwrap()
        .timestamp();
    assert_eq!(expires_at, signed.expires);
    assert!(
        verify(&pair.public, &signed),
        "signature does not verify: {url}"
    );
    if let Some(ok) = openssl_verifies(&pair.public_pem, &signed) {
        assert!(ok, "openssl does not verify {url}");
    }

    // Tampering with the resource or the expiry breaks it.
    let mut other = parse_signed(url);
    other.expires += 1;
    assert!(!verify(&pair.public, &other));
    let mut other = parse_signed(url);
    other.resource.push('x');
    assert!(!verify(&pair.public, &other));

    // A TTL asked for is the URL's.
    let before = now();
    let (_, answer) = upload_and_presign(&app, "?expires_in=60").await;
    let signed = parse_signed(answer["url"].as_str().unwrap());
    assert!((before + 60..=now() + 60).contains(&signed.expires));
    assert!(verify(&pair.public, &signed));
}

#[actix_web::test]
async fn rsa_urls_verify_with_sha256() {
    check_signed_urls(&rsa_key(), HashAlgorithm::Sha256).await;
}

#[actix_web::test]
async fn rsa_urls_verify_with_sha1_when_configured() {
    check_signed_urls(&rsa_key(), HashAlgorithm::Sha1).await;
}

#[actix_web::test]
async fn ecdsa_p256_urls_verify_with_sha256() {
    check_signed_urls(&ecdsa_key(), HashAlgorithm::Sha256).await;
}

#[actix_web::test]
async fn keys_cloudfront_does_not_accept_are_refused_at_start() {
    let small = rsa::RsaPrivateKey::new(&mut Rng09, 1024).unwrap();
    let pem = small.to_pkcs1_pem(LineEnding::LF).unwrap();
    let err =
        CloudFrontSigner::from_pem(CDN, KEY_PAIR_ID, &pem, HashAlgorithm::Sha256).unwrap_err();
    assert!(err.contains("2048"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let err = CloudFrontSigner::load(
        CDN,
        KEY_PAIR_ID,
        &dir.path().join("missing.pem"),
        HashAlgorithm::Sha256,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("CDN_PRIVATE_KEY_PEM"), "{err}");
}
