//! The whole-event zip: names, bytes and ownership, through the whole app over the in-memory
//! store and repository, read back with the `zip` crate.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::io::{Cursor, Read as _};
use std::sync::Arc;

use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::{StatusCode, header};
use actix_web::test;
use common::{JPEG, PNG, Part, multipart, multipart_content_type, png_of_len, sha256_hex};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use plugs_api::AppState;
use plugs_api::auth::{Claims, JwtKeys};
use plugs_api::config::Secret;
use plugs_api::metrics::Metrics;
use plugs_api::routes::media::UploadLimits;
use plugs_domain::MediaPolicy;
use plugs_media::{MediaService, ServiceConfig};
use plugs_persistence::InMemoryRepository;
use plugs_storage::MemoryStore;
use serde_json::{Value, json};

const SECRET: &str = "event-zip-tests-secret-0123456789abcdef";
const MAX_FILE: u64 = 1 << 20;

fn state() -> AppState {
    let store = MemoryStore::new();
    let repo = Arc::new(InMemoryRepository::new());
    let config = ServiceConfig {
        policy: MediaPolicy::default().with_max_size_bytes(MAX_FILE),
        ..ServiceConfig::default()
    };
    let service = MediaService::new(Arc::new(store), repo.clone(), repo.clone(), repo, config);
    AppState {
        service,
        keys: JwtKeys::hs256(&Secret::new(SECRET)),
        metrics: Metrics::new().unwrap(),
        limits: UploadLimits::with_max_file_size(MAX_FILE),
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

trait App:
    Service<actix_http::Request, Response = ServiceResponse<Self::Body>, Error = actix_web::Error>
{
    type Body: MessageBody;
}

impl<S, B> App for S
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    type Body = B;
}

async fn create_event(app: &impl App, user: &str) -> String {
    let req = test::TestRequest::post()
        .uri("/api/v1/events")
        .insert_header(bearer(user))
        .set_json(json!({"title": "Party"}))
        .to_request();
    let response = test::call_service(app, req).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = test::read_body_json(response).await;
    body["id"].as_str().unwrap().to_owned()
}

async fn upload(app: &impl App, user: &str, event: &str, filename: &str, bytes: &[u8]) -> Value {
    let body = multipart(&[Part::File("file", filename, None, bytes)]);
    let req = test::TestRequest::post()
        .uri(&format!("/api/v1/events/{event}/media"))
        .insert_header(bearer(user))
        .insert_header((header::CONTENT_TYPE, multipart_content_type()))
        .set_payload(body)
        .to_request();
    let response = test::call_service(app, req).await;
    assert_eq!(response.status(), StatusCode::CREATED, "{filename}");
    test::read_body_json(response).await
}

async fn get_zip(app: &impl App, user: &str, event: &str) -> ServiceResponse<impl MessageBody> {
    let req = test::TestRequest::get()
        .uri(&format!("/api/v1/events/{event}/media.zip"))
        .insert_header(bearer(user))
        .to_request();
    test::call_service(app, req).await
}

/// Name to (SHA-256, stored?) of every entry.
fn unzip(bytes: &[u8]) -> BTreeMap<String, (String, bool)> {
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes)).unwrap();
    let mut entries = BTreeMap::new();
    for i in 0..archive.len() {
        let mut file = archive.by_index(i).unwrap();
        let stored = file.compression() == zip::CompressionMethod::Stored;
        let name = file.name().unwrap().into_owned();
        let mut content = Vec::new();
        file.read_to_end(&mut content).unwrap();
        assert!(
            entries
                .insert(name, (sha256_hex(&content), stored))
                .is_none()
        );
    }
    entries
}

#[actix_web::test]
async fn the_zip_holds_every_original_stored_under_safe_unique_names() {
    let app = test::init_service(plugs_api::build_app(state())).await;
    let event = create_event(&app, "alice").await;
    let big_png = png_of_len(300_000);
    let uploads: [(&str, &[u8]); 5] = [
        ("cat.png", PNG),
        ("CAT.png", &big_png),
        ("../../etc/passwd.png", PNG),
        ("Été à Paris.jpg", JPEG),
        (".hidden.jpg", JPEG),
    ];
    let mut records = Vec::new();
    for (name, bytes) in uploads {
        records.push(upload(&app, "alice", &event, name, bytes).await);
    }

    let response = get_zip(&app, "alice", &event).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers().get(header::CONTENT_TYPE).unwrap(),
        "application/zip"
    );
    let disposition = response
        .headers()
        .get(header::CONTENT_DISPOSITION)
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(disposition.starts_with("attachment"), "{disposition}");
    let entries = unzip(&test::read_body(response).await);

    let sha = |i: usize| records[i]["sha256"].as_str().unwrap().to_owned();
    let expected: BTreeMap<String, (String, bool)> = [
        // Newest first: the later upload of the same name (ignoring case) gets the suffix.
        ("CAT.png".to_owned(), (sha(1), true)),
        ("cat (2).png".to_owned(), (sha(0), true)),
        ("passwd.png".to_owned(), (sha(2), true)),
        ("Été à Paris.jpg".to_owned(), (sha(3), true)),
        ("hidden.jpg".to_owned(), (sha(4), true)),
    ]
    .into_iter()
    .collect();
    assert_eq!(entries, expected);
    assert_eq!(sha(1), sha256_hex(&big_png));
    assert_eq!(sha(3), sha256_hex(JPEG));
}

#[actix_web::test]
async fn an_event_of_more_than_one_page_is_zipped_whole() {
    let app = test::init_service(plugs_api::build_app(state())).await;
    let event = create_event(&app, "alice").await;
    for i in 0..105 {
        let mut bytes = PNG.to_vec();
        // Distinct bytes after IEND: the sniffer reads the head only.
        bytes.extend_from_slice(format!("{i}").as_bytes());
        upload(&app, "alice", &event, "same.png", &bytes).await;
    }
    let response = get_zip(&app, "alice", &event).await;
    assert_eq!(response.status(), StatusCode::OK);
    let entries = unzip(&test::read_body(response).await);
    assert_eq!(entries.len(), 105);
    assert!(entries.contains_key("same.png"));
    assert!(entries.contains_key("same (105).png"));
    let distinct: std::collections::BTreeSet<&String> =
        entries.values().map(|(sha, _)| sha).collect();
    assert_eq!(distinct.len(), 105);
}

#[actix_web::test]
async fn an_empty_event_gives_an_empty_zip() {
    let app = test::init_service(plugs_api::build_app(state())).await;
    let event = create_event(&app, "alice").await;
    let response = get_zip(&app, "alice", &event).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(unzip(&test::read_body(response).await).is_empty());
}

#[actix_web::test]
async fn another_users_event_and_a_missing_one_are_404_and_no_token_is_401() {
    let app = test::init_service(plugs_api::build_app(state())).await;
    let event = create_event(&app, "alice").await;
    upload(&app, "alice", &event, "cat.png", PNG).await;

    for (user, event) in [
        ("bob", event.as_str()),
        ("alice", "0190a7a0-0000-7000-8000-000000000000"),
    ] {
        let response = get_zip(&app, user, event).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{user} {event}");
        assert_eq!(
            response.headers().get(header::CONTENT_TYPE).unwrap(),
            "application/problem+json"
        );
    }
    let head = test::TestRequest::default()
        .method(actix_web::http::Method::HEAD)
        .uri(&format!("/api/v1/events/{event}/media.zip"))
        .insert_header(bearer("alice"))
        .to_request();
    let response = test::call_service(&app, head).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers().get(header::CONTENT_TYPE).unwrap(),
        "application/zip"
    );
    assert!(test::read_body(response).await.is_empty());

    let anonymous = test::TestRequest::get()
        .uri(&format!("/api/v1/events/{event}/media.zip"))
        .to_request();
    assert_eq!(
        test::call_service(&app, anonymous).await.status(),
        StatusCode::UNAUTHORIZED
    );
}
