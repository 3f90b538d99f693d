//! Handler tests: the whole app (routes, auth, errors, middleware) over the in-memory store and
//! repository, driven through `actix_web::test`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use actix_web::body::{BodySize, MessageBody};
use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::{StatusCode, header};
use actix_web::test;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{PNG, Part, multipart, multipart_content_type, png_of_len, sha256_hex};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use plugs_api::AppState;
use plugs_api::auth::{Claims, JwtKeys};
use plugs_api::config::Secret;
use plugs_api::metrics::Metrics;
use plugs_api::routes::local_objects::LocalObjects;
use plugs_api::routes::media::UploadLimits;
use plugs_domain::MediaPolicy;
use plugs_media::{MediaService, ServiceConfig};
use plugs_persistence::{InMemoryRepository, MediaRepository as _};
use plugs_storage::{MemoryStore, ObjectStoreExt as _};
use serde_json::{Value, json};

const SECRET: &str = "handler-tests-secret-0123456789abcdef";
const MAX_FILE: u64 = 4096;

struct Fixture {
    state: AppState,
    store: MemoryStore,
    repo: Arc<InMemoryRepository>,
}

fn fixture() -> Fixture {
    fixture_with(ServiceConfig {
        policy: MediaPolicy::default().with_max_size_bytes(MAX_FILE),
        ..ServiceConfig::default()
    })
}

fn fixture_with(config: ServiceConfig) -> Fixture {
    let store = MemoryStore::new();
    let repo = Arc::new(InMemoryRepository::new());
    let service = MediaService::new(
        Arc::new(store.clone()),
        repo.clone(),
        repo.clone(),
        repo.clone(),
        config,
    );
    let verifier = store.clone();
    let state = AppState {
        service,
        keys: JwtKeys::hs256(&Secret::new(SECRET)),
        metrics: Metrics::new().unwrap(),
        limits: UploadLimits::with_max_file_size(MAX_FILE),
        local_objects: Some(LocalObjects {
            store: Arc::new(store.clone()),
            verify: Arc::new(move |key, params, signature| {
                verifier.verify_presigned(key, params, signature)
            }),
            max_size: MAX_FILE,
        }),
        cors_allowed_origins: vec!["https://app.example.com".to_owned()],
        idempotency: Arc::new(plugs_persistence::InMemoryIdempotency::new()),
    };
    Fixture { state, store, repo }
}

fn now() -> u64 {
    chrono::Utc::now().timestamp().unsigned_abs()
}

fn token_for(user: &str) -> String {
    token_with(user, now() + 3600, Algorithm::HS256, SECRET)
}

fn token_with(user: &str, exp: u64, alg: Algorithm, secret: &str) -> String {
    let claims = Claims {
        sub: user.to_owned(),
        exp,
        iat: None,
    };
    jsonwebtoken::encode(
        &Header::new(alg),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn bearer(user: &str) -> (header::HeaderName, String) {
    (header::AUTHORIZATION, format!("Bearer {}", token_for(user)))
}

macro_rules! app {
    ($fixture:expr) => {
        test::init_service(plugs_api::build_app($fixture.state.clone())).await
    };
}

async fn problem(response: ServiceResponse<impl MessageBody>) -> (StatusCode, Value) {
    let status = response.status();
    assert_eq!(
        response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
        Some("application/problem+json"),
        "status {status}"
    );
    let body: Value = serde_json::from_slice(&test::read_body(response).await).unwrap();
    assert_eq!(body["status"], status.as_u16(), "{body}");
    assert!(
        body["type"].is_string() && body["title"].is_string() && body["detail"].is_string(),
        "{body}"
    );
    (status, body)
}

async fn create_event(
    app: &impl Service<
        actix_http::Request,
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
    >,
    user: &str,
) -> String {
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

fn upload_request(user: &str, event: &str, body: Vec<u8>) -> actix_http::Request {
    test::TestRequest::post()
        .uri(&format!("/api/v1/events/{event}/media"))
        .insert_header(bearer(user))
        .insert_header((header::CONTENT_TYPE, multipart_content_type()))
        .set_payload(body)
        .to_request()
}

async fn upload_png(
    app: &impl Service<
        actix_http::Request,
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
    >,
    user: &str,
    event: &str,
    filename: &str,
) -> Value {
    let body = multipart(&[
        Part::Text("title", "Cat"),
        Part::Text("tags", "Pets, cats"),
        Part::File("file", filename, Some("image/png"), PNG),
    ]);
    let response = test::call_service(app, upload_request(user, event, body)).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    test::read_body_json(response).await
}

#[actix_web::test]
async fn requests_without_a_valid_token_get_401_with_a_bearer_challenge() {
    let f = fixture();
    let app = app!(f);

    let response = test::call_service(
        &app,
        test::TestRequest::get().uri("/api/v1/events").to_request(),
    )
    .await;
    assert_eq!(
        response.headers().get(header::WWW_AUTHENTICATE).unwrap(),
        "Bearer"
    );
    assert_eq!(problem(response).await.0, StatusCode::UNAUTHORIZED);

    let header_b64 = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload_b64 =
        URL_SAFE_NO_PAD.encode(format!(r#"{{"sub":"alice","exp":{}}}"#, now() + 3600));
    let refused = [
        (
            "expired",
            token_with("alice", now() - 3600, Algorithm::HS256, SECRET),
        ),
        (
            "wrong secret",
            token_with(
                "alice",
                now() + 3600,
                Algorithm::HS256,
                "some-other-secret-0123456789abcdef",
            ),
        ),
        ("alg none", format!("{header_b64}.{payload_b64}.")),
        (
            "other algorithm",
            token_with("alice", now() + 3600, Algorithm::HS512, SECRET),
        ),
        ("garbage", "not-a-jwt".to_owned()),
    ];
    for (why, token) in refused {
        let req = test::TestRequest::get()
            .uri("/api/v1/events")
            .insert_header((header::AUTHORIZATION, format!("Bearer {token}")))
            .to_request();
        let response = test::call_service(&app, req).await;
        assert_eq!(
            response.headers().get(header::WWW_AUTHENTICATE).unwrap(),
            "Bearer error=\"invalid_token\"",
            "{why}"
        );
        assert_eq!(problem(response).await.0, StatusCode::UNAUTHORIZED, "{why}");
    }

    let req = test::TestRequest::get()
        .uri("/api/v1/events")
        .insert_header(bearer("alice"))
        .to_request();
    assert_eq!(test::call_service(&app, req).await.status(), StatusCode::OK);
}

#[actix_web::test]
async fn events_are_private_to_their_owner() {
    let f = fixture();
    let app = app!(f);
    let req = test::TestRequest::post()
        .uri("/api/v1/events")
        .insert_header(bearer("alice"))
        .set_json(json!({"title": "Party"}))
        .to_request();
    let response = test::call_service(&app, req).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let location = response
        .headers()
        .get(header::LOCATION)
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let event: Value = test::read_body_json(response).await;
    assert_eq!(
        location,
        format!("/api/v1/events/{}", event["id"].as_str().unwrap())
    );
    assert_eq!(
        (event["title"].as_str(), event["owner"].as_str()),
        (Some("Party"), Some("alice"))
    );
    assert!(event["created_at"].is_string());

    let response = test::call_service(
        &app,
        test::TestRequest::get()
            .uri(&location)
            .insert_header(bearer("alice"))
            .to_request(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);

    // A stranger sees exactly what a missing event looks like, on every route.
    let missing = format!("/api/v1/events/{}", uuid::Uuid::now_v7());
    for uri in [location.clone(), missing] {
        let response = test::call_service(
            &app,
            test::TestRequest::get()
                .uri(&uri)
                .insert_header(bearer("mallory"))
                .to_request(),
        )
        .await;
        assert_eq!(problem(response).await.0, StatusCode::NOT_FOUND, "{uri}");
    }
    let response = test::call_service(
        &app,
        test::TestRequest::get()
            .uri(&format!("{location}/media"))
            .insert_header(bearer("mallory"))
            .to_request(),
    )
    .await;
    assert_eq!(problem(response).await.0, StatusCode::NOT_FOUND);
    let body = multipart(&[Part::File("file", "cat.png", Some("image/png"), PNG)]);
    let event_id = event["id"].as_str().unwrap();
    assert_eq!(
        problem(test::call_service(&app, upload_request("mallory", event_id, body)).await)
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    let response = test::call_service(
        &app,
        test::TestRequest::delete()
            .uri(&location)
            .insert_header(bearer("mallory"))
            .to_request(),
    )
    .await;
    assert_eq!(problem(response).await.0, StatusCode::NOT_FOUND);

    let response = test::call_service(
        &app,
        test::TestRequest::get()
            .uri("/api/v1/events")
            .insert_header(bearer("mallory"))
            .to_request(),
    )
    .await;
    let page: Value = test::read_body_json(response).await;
    assert_eq!(page, json!({"items": [], "next_cursor": null}));
    let response = test::call_service(
        &app,
        test::TestRequest::get()
            .uri("/api/v1/events")
            .insert_header(bearer("alice"))
            .to_request(),
    )
    .await;
    let page: Value = test::read_body_json(response).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1);

    let response = test::call_service(
        &app,
        test::TestRequest::delete()
            .uri(&location)
            .insert_header(bearer("alice"))
            .to_request(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let response = test::call_service(
        &app,
        test::TestRequest::get()
            .uri(&location)
            .insert_header(bearer("alice"))
            .to_request(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

#[actix_web::test]
async fn bad_input_answers_problem_details_with_the_right_status() {
    let f = fixture();
    let app = app!(f);
    let cases: Vec<(actix_http::Request, StatusCode)> = vec![
        (
            test::TestRequest::get()
                .uri("/api/v1/events/not-a-uuid")
                .insert_header(bearer("alice"))
                .to_request(),
            StatusCode::NOT_FOUND,
        ),
        (
            test::TestRequest::get()
                .uri("/api/v1/events?limit=1000")
                .insert_header(bearer("alice"))
                .to_request(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            test::TestRequest::get()
                .uri("/api/v1/events?limit=abc")
                .insert_header(bearer("alice"))
                .to_request(),
            StatusCode::BAD_REQUEST,
        ),
        (
            test::TestRequest::get()
                .uri("/api/v1/events?cursor=bogus")
                .insert_header(bearer("alice"))
                .to_request(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            test::TestRequest::post()
                .uri("/api/v1/events")
                .insert_header(bearer("alice"))
                .insert_header((header::CONTENT_TYPE, "application/json"))
                .set_payload("{not json")
                .to_request(),
            StatusCode::BAD_REQUEST,
        ),
        (
            test::TestRequest::post()
                .uri("/api/v1/events")
                .insert_header(bearer("alice"))
                .set_json(json!({"title": 5}))
                .to_request(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            test::TestRequest::post()
                .uri("/api/v1/events")
                .insert_header(bearer("alice"))
                .set_json(json!({"title": "  "}))
                .to_request(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            test::TestRequest::get()
                .uri("/api/v1/nothing-here")
                .to_request(),
            StatusCode::NOT_FOUND,
        ),
    ];
    for (req, expected) in cases {
        let uri = req.uri().clone();
        let response = test::call_service(&app, req).await;
        assert_eq!(problem(response).await.0, expected, "{uri}");
    }
}

#[actix_web::test]
async fn an_upload_streams_to_the_store_and_is_listed_and_fetched() {
    let f = fixture();
    let app = app!(f);
    let event = create_event(&app, "alice").await;
    let body = multipart(&[
        Part::Text("title", "Cat"),
        Part::Text("description", "A very small cat"),
        Part::Text("tags", "Pets, cats"),
        Part::Text("size", &PNG.len().to_string()),
        Part::File("file", "cat.png", Some("image/png"), PNG),
    ]);
    let response = test::call_service(&app, upload_request("alice", &event, body)).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let location = response
        .headers()
        .get(header::LOCATION)
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let media: Value = test::read_body_json(response).await;
    let id = media["id"].as_str().unwrap();
    assert_eq!(location, format!("/api/v1/events/{event}/media/{id}"));
    assert_eq!(media["event_id"], event.as_str());
    assert_eq!(media["title"], "Cat");
    assert_eq!(media["description"], "A very small cat");
    assert_eq!(media["tags"], json!(["pets", "cats"]));
    assert_eq!(media["original_filename"], "cat.png");
    assert_eq!(media["content_type"], "image/png");
    assert_eq!(media["size_bytes"], PNG.len());
    assert_eq!(media["sha256"], sha256_hex(PNG));
    assert_eq!(media["uploaded_by"], "alice");
    assert_eq!(
        media["url"],
        format!("/api/v1/events/{event}/media/{id}/download")
    );
    let key = media["s3_key"].as_str().unwrap();
    assert!(
        key.starts_with(&format!("events/{event}/media/")) && key.ends_with(".png"),
        "{key}"
    );
    let fields: Vec<&String> = media.as_object().unwrap().keys().collect();
    assert_eq!(
        fields.len(),
        18,
        "exactly the documented fields: {fields:?}"
    );
    let stored = f
        .store
        .get_bytes(&plugs_storage::ObjectKey::parse(key).unwrap())
        .await
        .unwrap();
    assert_eq!(stored.as_ref(), PNG);

    let response = test::call_service(
        &app,
        test::TestRequest::get()
            .uri(&location)
            .insert_header(bearer("alice"))
            .to_request(),
    )
    .await;
    assert_eq!(test::read_body_json::<Value, _>(response).await, media);
    let response = test::call_service(
        &app,
        test::TestRequest::get()
            .uri(&format!("/api/v1/events/{event}/media"))
            .insert_header(bearer("alice"))
            .to_request(),
    )
    .await;
    let page: Value = test::read_body_json(response).await;
    assert_eq!(page, json!({"items": [media], "next_cursor": null}));
    let response = test::call_service(
        &app,
        test::TestRequest::get()
            .uri(&location)
            .insert_header(bearer("mallory"))
            .to_request(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

#[actix_web::test]
async fn refused_uploads_keep_nothing_and_say_why() {
    let f = fixture();
    let app = app!(f);
    let event = create_event(&app, "alice").await;
    let png = Some("image/png");
    let big = png_of_len(usize::try_from(MAX_FILE).unwrap() + 1);
    let cases: Vec<(&str, Vec<u8>, StatusCode)> = vec![
        (
            "file one byte over the limit",
            multipart(&[Part::File("file", "big.png", png, &big)]),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            "text content",
            multipart(&[Part::File(
                "file",
                "notes.txt",
                Some("text/plain"),
                b"just some text, nothing else",
            )]),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            "declared type mismatch",
            multipart(&[Part::File("file", "cat.png", Some("application/pdf"), PNG)]),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            "extension mismatch",
            multipart(&[Part::File("file", "cat.pdf", None, PNG)]),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            "no file",
            multipart(&[Part::Text("title", "Cat")]),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "empty file",
            multipart(&[Part::File("file", "cat.png", png, b"")]),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "two files",
            multipart(&[
                Part::File("file", "a.png", png, PNG),
                Part::File("file", "b.png", png, PNG),
            ]),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "unknown field",
            multipart(&[
                Part::Text("colour", "red"),
                Part::File("file", "a.png", png, PNG),
            ]),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "title too long",
            multipart(&[
                Part::Text("title", &"x".repeat(201)),
                Part::File("file", "a.png", png, PNG),
            ]),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "invalid title after the file",
            multipart(&[
                Part::File("file", "a.png", png, PNG),
                Part::Text("title", &"x".repeat(201)),
            ]),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "invalid tags after the file",
            multipart(&[
                Part::File("file", "a.png", png, PNG),
                Part::Text("title", "fine"),
                Part::Text(
                    "tags",
                    "ok, , bad tag with spaces and far too long to be any tag at all really truly",
                ),
            ]),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "a second file after the first, with a field between",
            multipart(&[
                Part::File("file", "a.png", png, PNG),
                Part::Text("title", "two"),
                Part::File("file", "b.png", png, PNG),
            ]),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "unknown field after the file",
            multipart(&[
                Part::File("file", "a.png", png, PNG),
                Part::Text("colour", "red"),
            ]),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "size after the file, not the file's",
            multipart(&[
                Part::File("file", "a.png", png, PNG),
                Part::Text("size", &(PNG.len() + 1).to_string()),
            ]),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "size after the file above the limit",
            multipart(&[
                Part::File("file", "a.png", png, PNG),
                Part::Text("size", &(MAX_FILE + 1).to_string()),
            ]),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            "title twice, around the file",
            multipart(&[
                Part::Text("title", "one"),
                Part::File("file", "a.png", png, PNG),
                Part::Text("title", "two"),
            ]),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "malformed multipart",
            b"--wrong-boundary\r\ngarbage".to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "file longer than its declared size",
            multipart(&[
                Part::Text("size", &(PNG.len() - 1).to_string()),
                Part::File("file", "a.png", png, PNG),
            ]),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "file shorter than its declared size",
            multipart(&[
                Part::Text("size", &(PNG.len() + 1).to_string()),
                Part::File("file", "a.png", png, PNG),
            ]),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "declared size above the limit",
            multipart(&[
                Part::Text("size", &(MAX_FILE + 1).to_string()),
                Part::File("file", "a.png", png, PNG),
            ]),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            "size not a number",
            multipart(&[
                Part::Text("size", "-5"),
                Part::File("file", "a.png", png, PNG),
            ]),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "size twice",
            multipart(&[
                Part::Text("size", &PNG.len().to_string()),
                Part::Text("size", &PNG.len().to_string()),
                Part::File("file", "a.png", png, PNG),
            ]),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ];
    let event_id: plugs_domain::EventId = event.parse().unwrap();
    for (why, body, expected) in cases {
        let response = test::call_service(&app, upload_request("alice", &event, body)).await;
        assert_eq!(problem(response).await.0, expected, "{why}");
        assert!(f.store.is_empty(), "{why}: nothing stored");
        let records = f.repo.list_all_for_event(event_id).await.unwrap();
        assert!(records.is_empty(), "{why}: no record kept: {records:?}");
    }

    // A Content-Length far above the limit is refused before the body is read.
    let req = test::TestRequest::post()
        .uri(&format!("/api/v1/events/{event}/media"))
        .insert_header(bearer("alice"))
        .insert_header((header::CONTENT_TYPE, multipart_content_type()))
        .insert_header((header::CONTENT_LENGTH, (MAX_FILE + 1024 * 1024).to_string()))
        .to_request();
    assert_eq!(
        problem(test::call_service(&app, req).await).await.0,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    // Not a form at all.
    let req = test::TestRequest::post()
        .uri(&format!("/api/v1/events/{event}/media"))
        .insert_header(bearer("alice"))
        .insert_header((header::CONTENT_TYPE, "image/png"))
        .set_payload(PNG)
        .to_request();
    assert_eq!(
        problem(test::call_service(&app, req).await).await.0,
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );

    let response = test::call_service(
        &app,
        test::TestRequest::get()
            .uri(&format!("/api/v1/events/{event}/media"))
            .insert_header(bearer("alice"))
            .to_request(),
    )
    .await;
    let page: Value = test::read_body_json(response).await;
    assert_eq!(page["items"], json!([]));
}

/// Every order of `file`, `title`, `description`, `tags` and `size` makes the same media: the
/// clients of the system we replace send `file` first.
#[actix_web::test]
async fn form_parts_in_any_order_make_the_same_media() {
    let f = fixture();
    let app = app!(f);
    let event = create_event(&app, "alice").await;
    let size = PNG.len().to_string();
    let parts = [
        Part::File("file", "photo.png", Some("image/png"), PNG),
        Part::Text("title", "Event Photo"),
        Part::Text("description", "From the stage"),
        Part::Text("tags", "photo,event"),
        Part::Text("size", &size),
    ];
    let mut orders = vec![Vec::new()];
    for _ in 0..parts.len() {
        orders = orders
            .into_iter()
            .flat_map(|order: Vec<usize>| {
                (0..parts.len())
                    .filter(|i| !order.contains(i))
                    .map(|i| {
                        let mut next = order.clone();
                        next.push(i);
                        next
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
    }
    assert_eq!(orders.len(), 120);
    let mut keys = std::collections::HashSet::new();
    for order in &orders {
        let form: Vec<Part<'_>> = order.iter().map(|&i| parts[i]).collect();
        let response =
            test::call_service(&app, upload_request("alice", &event, multipart(&form))).await;
        assert_eq!(response.status(), StatusCode::CREATED, "order {order:?}");
        let media: Value = test::read_body_json(response).await;
        assert_eq!(media["title"], "Event Photo", "order {order:?}");
        assert_eq!(media["description"], "From the stage", "order {order:?}");
        assert_eq!(media["tags"], json!(["photo", "event"]), "order {order:?}");
        assert_eq!(media["size_bytes"], PNG.len(), "order {order:?}");
        assert_eq!(media["sha256"], sha256_hex(PNG), "order {order:?}");
        assert_eq!(media["original_filename"], "photo.png", "order {order:?}");
        assert!(keys.insert(media["s3_key"].as_str().unwrap().to_owned()));
    }
    // Each upload is one object, served with its record.
    let event_id: plugs_domain::EventId = event.parse().unwrap();
    let records = f.repo.list_all_for_event(event_id).await.unwrap();
    assert_eq!(records.len(), orders.len());
    assert!(
        records
            .iter()
            .all(|m| m.status == plugs_domain::MediaStatus::Ready)
    );
    assert_eq!(f.store.len(), orders.len());
}

#[actix_web::test]
async fn downloads_carry_safe_headers_ranges_and_etags() {
    let f = fixture();
    let app = app!(f);
    let event = create_event(&app, "alice").await;
    let media = upload_png(&app, "alice", &event, "évil\"\r\nX-Injected: 1.png").await;
    let base = format!(
        "/api/v1/events/{event}/media/{}",
        media["id"].as_str().unwrap()
    );

    let response = test::call_service(
        &app,
        test::TestRequest::get()
            .uri(&format!("{base}/download"))
            .insert_header(bearer("alice"))
            .to_request(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let headers = response.headers().clone();
    let disposition = headers
        .get(header::CONTENT_DISPOSITION)
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        disposition.starts_with("attachment; filename=\""),
        "{disposition}"
    );
    assert!(disposition.contains("filename*=UTF-8''"), "{disposition}");
    assert!(
        !disposition.contains('\r') && !disposition.contains('\n'),
        "{disposition}"
    );
    assert!(headers.get("x-injected").is_none());
    assert_eq!(headers.get(header::CONTENT_TYPE).unwrap(), "image/png");
    // Content-Length is written from the body's known size when the response is encoded.
    assert_eq!(
        response.response().body().size(),
        BodySize::Sized(PNG.len() as u64)
    );
    assert_eq!(headers.get(header::ACCEPT_RANGES).unwrap(), "bytes");
    assert_eq!(
        headers.get(header::X_CONTENT_TYPE_OPTIONS).unwrap(),
        "nosniff"
    );
    let etag = headers
        .get(header::ETAG)
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(test::read_body(response).await.as_ref(), PNG);

    let response = test::call_service(
        &app,
        test::TestRequest::get()
            .uri(&format!("{base}/stream"))
            .insert_header(bearer("alice"))
            .to_request(),
    )
    .await;
    assert!(
        response
            .headers()
            .get(header::CONTENT_DISPOSITION)
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("inline;")
    );
    assert_eq!(
        response
            .headers()
            .get(header::ETAG)
            .unwrap()
            .to_str()
            .unwrap(),
        etag
    );

    let ranged = |range: &'static str| {
        test::TestRequest::get()
            .uri(&format!("{base}/stream"))
            .insert_header(bearer("alice"))
            .insert_header((header::RANGE, range))
            .to_request()
    };
    let response = test::call_service(&app, ranged("bytes=1-3")).await;
    assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        response
            .headers()
            .get(header::CONTENT_RANGE)
            .unwrap()
            .to_str()
            .unwrap(),
        format!("bytes 1-3/{}", PNG.len())
    );
    assert_eq!(response.response().body().size(), BodySize::Sized(3));
    assert_eq!(test::read_body(response).await.as_ref(), &PNG[1..4]);

    let response = test::call_service(&app, ranged("bytes=-4")).await;
    assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        test::read_body(response).await.as_ref(),
        &PNG[PNG.len() - 4..]
    );

    let response = test::call_service(&app, ranged("bytes=1000-")).await;
    assert_eq!(
        response
            .headers()
            .get(header::CONTENT_RANGE)
            .unwrap()
            .to_str()
            .unwrap(),
        format!("bytes */{}", PNG.len())
    );
    assert_eq!(problem(response).await.0, StatusCode::RANGE_NOT_SATISFIABLE);

    let response = test::call_service(&app, ranged("bytes=0-1,4-5")).await;
    assert_eq!(response.status(), StatusCode::OK, "multi-range is ignored");
    assert_eq!(test::read_body(response).await.as_ref(), PNG);

    let req = test::TestRequest::get()
        .uri(&format!("{base}/stream"))
        .insert_header(bearer("alice"))
        .insert_header((header::IF_NONE_MATCH, etag.clone()))
        .to_request();
    let response = test::call_service(&app, req).await;
    assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(
        response
            .headers()
            .get(header::ETAG)
            .unwrap()
            .to_str()
            .unwrap(),
        etag
    );
    assert!(test::read_body(response).await.is_empty());
    let req = test::TestRequest::get()
        .uri(&format!("{base}/stream"))
        .insert_header(bearer("alice"))
        .insert_header((header::IF_NONE_MATCH, "\"something-else\""))
        .to_request();
    assert_eq!(test::call_service(&app, req).await.status(), StatusCode::OK);

    let response = test::call_service(
        &app,
        test::TestRequest::get()
            .uri(&format!("{base}/download"))
            .insert_header(bearer("mallory"))
            .to_request(),
    )
    .await;
    assert_eq!(problem(response).await.0, StatusCode::NOT_FOUND);
}

#[actix_web::test]
async fn presigned_urls_work_without_a_token_until_tampered_with() {
    let f = fixture();
    let app = app!(f);
    let event = create_event(&app, "alice").await;
    let media = upload_png(&app, "alice", &event, "cat.png").await;
    let base = format!(
        "/api/v1/events/{event}/media/{}",
        media["id"].as_str().unwrap()
    );

    let response = test::call_service(
        &app,
        test::TestRequest::get()
            .uri(&format!("{base}/url?expires_in=60"))
            .insert_header(bearer("alice"))
            .to_request(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let presigned: Value = test::read_body_json(response).await;
    let expires_at =
        chrono::DateTime::parse_from_rfc3339(presigned["expires_at"].as_str().unwrap()).unwrap();
    let remaining = expires_at
        .signed_duration_since(chrono::Utc::now())
        .num_seconds();
    assert!((1..=61).contains(&remaining), "{remaining}");
    let url = presigned["url"].as_str().unwrap();
    let path = url.strip_prefix(MemoryStore::BASE_URL).unwrap();
    let local = format!("/api/v1/objects{path}");

    let response =
        test::call_service(&app, test::TestRequest::get().uri(&local).to_request()).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(test::read_body(response).await.as_ref(), PNG);

    let tampered = format!("{}0", &local[..local.len() - 1]);
    let tampered = if tampered == local {
        format!("{}1", &local[..local.len() - 1])
    } else {
        tampered
    };
    let response =
        test::call_service(&app, test::TestRequest::get().uri(&tampered).to_request()).await;
    assert_eq!(problem(response).await.0, StatusCode::FORBIDDEN);

    let response = test::call_service(
        &app,
        test::TestRequest::get()
            .uri(&format!("{base}/url"))
            .insert_header(bearer("mallory"))
            .to_request(),
    )
    .await;
    assert_eq!(problem(response).await.0, StatusCode::NOT_FOUND);
}

#[actix_web::test]
async fn deleting_media_or_its_event_removes_the_objects() {
    let f = fixture();
    let app = app!(f);
    let event = create_event(&app, "alice").await;
    let first = upload_png(&app, "alice", &event, "a.png").await;
    upload_png(&app, "alice", &event, "b.png").await;
    assert_eq!(f.store.len(), 2);

    let uri = format!(
        "/api/v1/events/{event}/media/{}",
        first["id"].as_str().unwrap()
    );
    let response = test::call_service(
        &app,
        test::TestRequest::delete()
            .uri(&uri)
            .insert_header(bearer("mallory"))
            .to_request(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let response = test::call_service(
        &app,
        test::TestRequest::delete()
            .uri(&uri)
            .insert_header(bearer("alice"))
            .to_request(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(f.store.len(), 1);
    let response = test::call_service(
        &app,
        test::TestRequest::get()
            .uri(&uri)
            .insert_header(bearer("alice"))
            .to_request(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);

    let response = test::call_service(
        &app,
        test::TestRequest::delete()
            .uri(&format!("/api/v1/events/{event}"))
            .insert_header(bearer("alice"))
            .to_request(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert!(f.store.is_empty());
}

#[actix_web::test]
async fn an_unavailable_database_is_a_503_not_a_client_error() {
    let f = fixture();
    let app = app!(f);
    let response =
        test::call_service(&app, test::TestRequest::get().uri("/readyz").to_request()).await;
    assert_eq!(response.status(), StatusCode::OK);

    f.repo.set_unavailable(true);
    // A worker reuses a `ready` answer for a second; a new worker asks the database.
    let app = app!(f);
    let response =
        test::call_service(&app, test::TestRequest::get().uri("/readyz").to_request()).await;
    assert_eq!(problem(response).await.0, StatusCode::SERVICE_UNAVAILABLE);
    let response = test::call_service(
        &app,
        test::TestRequest::get()
            .uri("/api/v1/events")
            .insert_header(bearer("alice"))
            .to_request(),
    )
    .await;
    let (status, body) = problem(response).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        !body["detail"].as_str().unwrap().contains("Unavailable {"),
        "no internals leak: {body}"
    );
    let response =
        test::call_service(&app, test::TestRequest::get().uri("/healthz").to_request()).await;
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "liveness does not depend on the database"
    );
}

#[actix_web::test]
async fn every_response_has_a_request_id_and_is_counted() {
    let f = fixture();
    let app = app!(f);
    let event = create_event(&app, "alice").await;
    upload_png(&app, "alice", &event, "cat.png").await;
    let response = test::call_service(
        &app,
        test::TestRequest::get()
            .uri(&format!("/api/v1/events/{event}"))
            .to_request(),
    )
    .await;
    let id = response
        .headers()
        .get("x-request-id")
        .unwrap()
        .to_str()
        .unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");

    let response =
        test::call_service(&app, test::TestRequest::get().uri("/metrics").to_request()).await;
    assert_eq!(response.status(), StatusCode::OK);
    let text = String::from_utf8(test::read_body(response).await.to_vec()).unwrap();
    assert!(
        text.contains(
            r#"plugs_http_requests_total{method="POST",route="/api/v1/events",status="201"} 1"#
        ),
        "{text}"
    );
    assert!(
        text.contains(r#"route="/api/v1/events/{event_id}",status="401""#),
        "{text}"
    );
    assert!(
        text.contains(&format!("plugs_upload_bytes_total {}", PNG.len())),
        "{text}"
    );
    assert!(text.contains("plugs_orphans_found 0"), "{text}");
    assert!(
        text.contains("plugs_http_request_duration_seconds_bucket"),
        "{text}"
    );
}

#[actix_web::test]
async fn the_openapi_document_describes_every_route() {
    let f = fixture();
    let app = app!(f);
    let response = test::call_service(
        &app,
        test::TestRequest::get()
            .uri("/api/v1/openapi.json")
            .to_request(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let doc: Value = test::read_body_json(response).await;
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    let expected = [
        ("/api/v1/events", &["get", "post"][..]),
        ("/api/v1/events/{event_id}", &["get", "patch", "delete"]),
        ("/api/v1/events/{event_id}/media", &["get", "post"]),
        ("/api/v1/events/{event_id}/media.zip", &["get"]),
        (
            "/api/v1/events/{event_id}/media/{media_id}",
            &["get", "patch", "delete"],
        ),
        (
            "/api/v1/events/{event_id}/media/{media_id}/download",
            &["get"],
        ),
        (
            "/api/v1/events/{event_id}/media/{media_id}/stream",
            &["get"],
        ),
        ("/api/v1/events/{event_id}/media/{media_id}/url", &["get"]),
        // Answers 202/404 until a worker made the version: checked by tests/processing.rs.
        ("/api/v1/events/{event_id}/media/{media_id}/thumbnail", &[]),
        ("/api/v1/events/{event_id}/media/uploads", &["post"]),
        (
            "/api/v1/events/{event_id}/media/uploads/{upload_id}",
            &["delete"],
        ),
        (
            "/api/v1/events/{event_id}/media/uploads/{upload_id}/complete",
            &["post"],
        ),
        (
            "/api/v1/events/{event_id}/media/uploads/{upload_id}/parts",
            &["post"],
        ),
        ("/api/v1/events/{event_id}/usage", &["get"]),
        // The tus routes' methods are checked by the tus tests.
        ("/api/v1/events/{event_id}/media/tus", &[]),
        ("/api/v1/events/{event_id}/media/tus/{upload_id}", &[]),
        ("/api/v1/objects/{key}", &["get", "put"]),
        ("/api/v1/openapi.json", &["get"]),
        ("/healthz", &["get"]),
        ("/readyz", &["get"]),
        ("/metrics", &["get"]),
    ];
    let paths = doc["paths"].as_object().unwrap();
    assert_eq!(
        paths.len(),
        expected.len(),
        "{:?}",
        paths.keys().collect::<Vec<_>>()
    );
    for (path, methods) in expected {
        for method in methods {
            assert!(paths[path][method].is_object(), "{method} {path}");
        }
    }
    let upload = &paths["/api/v1/events/{event_id}/media"]["post"];
    assert!(upload["requestBody"]["content"]["multipart/form-data"].is_object());
    assert_eq!(upload["security"], json!([{"bearer": []}]));
    for schema in [
        "MediaBody",
        "EventBody",
        "Problem",
        "MediaPage",
        "EventPage",
        "PresignedUrlBody",
    ] {
        assert!(doc["components"]["schemas"][schema].is_object(), "{schema}");
    }

    // The documented routes are the served ones: each answers something other than "no such route".
    let event = create_event(&app, "alice").await;
    let media = upload_png(&app, "alice", &event, "cat.png").await;
    let media_id = media["id"].as_str().unwrap();
    for (path, methods) in expected {
        if path.contains("{key}") {
            continue;
        }
        let uri = path
            .replace("{event_id}", &event)
            .replace("{media_id}", media_id);
        for method in methods.iter().filter(|m| **m == "get") {
            let req = test::TestRequest::get()
                .uri(&uri)
                .insert_header(bearer("alice"))
                .to_request();
            let response = test::call_service(&app, req).await;
            assert!(
                response.status().is_success(),
                "{method} {uri}: {}",
                response.status()
            );
        }
    }
}

/// A PDF the sniffer recognises (kind `document`).
const PDF: &[u8] =
    b"%PDF-1.7\n1 0 obj\n<< /Type /Catalog >>\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n";

fn patch_request(
    user: &str,
    uri: &str,
    body: &Value,
    if_match: Option<&str>,
) -> actix_http::Request {
    let mut req = test::TestRequest::patch()
        .uri(uri)
        .insert_header(bearer(user))
        .set_json(body);
    if let Some(etag) = if_match {
        req = req.insert_header((header::IF_MATCH, etag));
    }
    req.to_request()
}

/// `GET` of a record: its body and its `ETag`.
async fn get_with_etag(
    app: &impl Service<
        actix_http::Request,
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
    >,
    user: &str,
    uri: &str,
) -> (Value, String) {
    let req = test::TestRequest::get()
        .uri(uri)
        .insert_header(bearer(user))
        .to_request();
    let response = test::call_service(app, req).await;
    assert_eq!(response.status(), StatusCode::OK, "GET {uri}");
    let etag = etag_of(&response);
    (test::read_body_json(response).await, etag)
}

fn etag_of<B>(response: &ServiceResponse<B>) -> String {
    let etag = response
        .headers()
        .get(header::ETAG)
        .expect("an ETag")
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        etag.starts_with('"') && etag.ends_with('"'),
        "a strong tag: {etag}"
    );
    etag
}

#[actix_web::test]
async fn media_fields_are_edited_and_a_stale_if_match_changes_nothing() {
    let f = fixture();
    let app = app!(f);
    let event = create_event(&app, "alice").await;
    let media = upload_png(&app, "alice", &event, "cat.png").await;
    let uri = format!(
        "/api/v1/events/{event}/media/{}",
        media["id"].as_str().unwrap()
    );
    let (fetched, first) = get_with_etag(&app, "alice", &uri).await;
    assert_eq!(fetched, media);

    // Editor A, from the version fetched: the fields sent change, the others stay.
    let edit = json!({"description": "On the sofa", "tags": [" Sofa ", "pets", "PETS"]});
    let response =
        test::call_service(&app, patch_request("alice", &uri, &edit, Some(&first))).await;
    assert_eq!(response.status(), StatusCode::OK);
    let second = etag_of(&response);
    assert_ne!(second, first);
    let edited: Value = test::read_body_json(response).await;
    assert_eq!(edited["title"], "Cat");
    assert_eq!(edited["description"], "On the sofa");
    assert_eq!(edited["tags"], json!(["sofa", "pets"]));
    for unchanged in ["id", "s3_key", "sha256", "size_bytes", "created_at", "url"] {
        assert_eq!(edited[unchanged], media[unchanged], "{unchanged}");
    }
    assert_eq!(
        get_with_etag(&app, "alice", &uri).await,
        (edited.clone(), second.clone())
    );

    // Editor B, from the same first version: refused, and nothing changes.
    let late = json!({"title": "Dog"});
    let response =
        test::call_service(&app, patch_request("alice", &uri, &late, Some(&first))).await;
    let (status, body) = problem(response).await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED);
    assert!(
        body["detail"].as_str().unwrap().contains("If-Match"),
        "{body}"
    );
    assert_eq!(
        get_with_etag(&app, "alice", &uri).await,
        (edited.clone(), second.clone())
    );
    // A weak tag never matches (If-Match compares strongly).
    let weak = format!("W/{second}");
    let response = test::call_service(&app, patch_request("alice", &uri, &late, Some(&weak))).await;
    assert_eq!(problem(response).await.0, StatusCode::PRECONDITION_FAILED);
    let response = test::call_service(
        &app,
        patch_request("alice", &uri, &late, Some("\"not-a-version\"")),
    )
    .await;
    assert_eq!(problem(response).await.0, StatusCode::PRECONDITION_FAILED);

    // Without If-Match (or with `*`) the edit applies to the current version; null clears.
    let response = test::call_service(
        &app,
        patch_request("alice", &uri, &json!({"title": null, "tags": null}), None),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let third = etag_of(&response);
    let cleared: Value = test::read_body_json(response).await;
    assert_eq!(cleared["title"], Value::Null);
    assert_eq!(cleared["tags"], json!([]));
    assert_eq!(cleared["description"], "On the sofa");
    let response = test::call_service(
        &app,
        patch_request("alice", &uri, &json!({"title": "Cat again"}), Some("*")),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_ne!(etag_of(&response), third);
    // HEAD answers the same ETag as GET.
    let (_, current) = get_with_etag(&app, "alice", &uri).await;
    let response = test::call_service(
        &app,
        test::TestRequest::default()
            .method(actix_web::http::Method::HEAD)
            .uri(&uri)
            .insert_header(bearer("alice"))
            .to_request(),
    )
    .await;
    assert_eq!(etag_of(&response), current);
}

#[actix_web::test]
async fn invalid_edits_answer_422_or_400_and_change_nothing() {
    let f = fixture();
    let app = app!(f);
    let event = create_event(&app, "alice").await;
    let media = upload_png(&app, "alice", &event, "cat.png").await;
    let uri = format!(
        "/api/v1/events/{event}/media/{}",
        media["id"].as_str().unwrap()
    );
    let before = get_with_etag(&app, "alice", &uri).await;

    let too_many: Vec<String> = (0..21).map(|i| format!("t{i}")).collect();
    let refusals = [
        (json!({"tags": ["fine", "a,b"]}), "a comma inside one tag"),
        (json!({"tags": ["x".repeat(51)]}), "a tag of 51 characters"),
        (json!({"tags": too_many}), "21 tags"),
        (json!({"tags": ["bad\u{0}tag"]}), "a control character"),
        (
            json!({"tags": "pets, cats"}),
            "tags as a string, not a list",
        ),
        (
            json!({"title": "x".repeat(201)}),
            "a title of 201 characters",
        ),
        (json!({"description": 7}), "a description that is no string"),
        (json!({"colour": "red"}), "an unknown field"),
    ];
    for (body, why) in refusals {
        let response =
            test::call_service(&app, patch_request("alice", &uri, &body, Some(&before.1))).await;
        assert_eq!(
            problem(response).await.0,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{why}"
        );
    }
    let response = test::call_service(
        &app,
        test::TestRequest::patch()
            .uri(&uri)
            .insert_header(bearer("alice"))
            .insert_header((header::CONTENT_TYPE, "application/json"))
            .set_payload("{\"title\": ")
            .to_request(),
    )
    .await;
    assert_eq!(problem(response).await.0, StatusCode::BAD_REQUEST);
    let response = test::call_service(
        &app,
        test::TestRequest::patch()
            .uri(&uri)
            .insert_header(bearer("alice"))
            .insert_header((header::CONTENT_TYPE, "text/plain"))
            .set_payload("title=Dog")
            .to_request(),
    )
    .await;
    assert_eq!(
        problem(response).await.0,
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
    assert_eq!(get_with_etag(&app, "alice", &uri).await, before);
}

#[actix_web::test]
async fn someone_elses_media_or_event_cannot_be_edited_and_looks_missing() {
    let f = fixture();
    let app = app!(f);
    let event = create_event(&app, "alice").await;
    let other_event = create_event(&app, "alice").await;
    let media = upload_png(&app, "alice", &event, "cat.png").await;
    let media_id = media["id"].as_str().unwrap();
    let uri = format!("/api/v1/events/{event}/media/{media_id}");
    let event_uri = format!("/api/v1/events/{event}");
    let before = get_with_etag(&app, "alice", &uri).await;
    let event_before = get_with_etag(&app, "alice", &event_uri).await;

    let edit = json!({"title": "Mine now"});
    let attempts = [
        ("bob", uri.clone(), None),
        ("bob", uri.clone(), Some(before.1.clone())),
        ("bob", uri.clone(), Some("\"0\"".to_owned())),
        (
            "alice",
            format!("/api/v1/events/{other_event}/media/{media_id}"),
            None,
        ),
        (
            "alice",
            format!("/api/v1/events/{event}/media/{}", uuid::Uuid::new_v4()),
            None,
        ),
        (
            "alice",
            format!("/api/v1/events/{event}/media/not-a-uuid"),
            None,
        ),
        ("bob", event_uri.clone(), None),
        ("bob", event_uri.clone(), Some(event_before.1.clone())),
        (
            "alice",
            format!("/api/v1/events/{}", uuid::Uuid::new_v4()),
            None,
        ),
    ];
    for (user, target, if_match) in attempts {
        let response = test::call_service(
            &app,
            patch_request(user, &target, &edit, if_match.as_deref()),
        )
        .await;
        assert_eq!(
            problem(response).await.0,
            StatusCode::NOT_FOUND,
            "{user} {target}"
        );
    }
    assert_eq!(get_with_etag(&app, "alice", &uri).await, before);
    assert_eq!(get_with_etag(&app, "alice", &event_uri).await, event_before);
}

#[actix_web::test]
async fn an_event_is_renamed_with_if_match() {
    let f = fixture();
    let app = app!(f);
    let event = create_event(&app, "alice").await;
    let uri = format!("/api/v1/events/{event}");
    let (_, first) = get_with_etag(&app, "alice", &uri).await;

    let response = test::call_service(
        &app,
        patch_request(
            "alice",
            &uri,
            &json!({"title": "  Party, day two "}),
            Some(&first),
        ),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let second = etag_of(&response);
    assert_ne!(second, first);
    let renamed: Value = test::read_body_json(response).await;
    assert_eq!(renamed["title"], "Party, day two");
    assert_eq!(
        get_with_etag(&app, "alice", &uri).await,
        (renamed.clone(), second.clone())
    );

    let response = test::call_service(
        &app,
        patch_request(
            "alice",
            &uri,
            &json!({"title": "Lost update"}),
            Some(&first),
        ),
    )
    .await;
    assert_eq!(problem(response).await.0, StatusCode::PRECONDITION_FAILED);
    for bad in [
        json!({"title": ""}),
        json!({"title": "x".repeat(201)}),
        json!({"owner": "bob"}),
    ] {
        let response =
            test::call_service(&app, patch_request("alice", &uri, &bad, Some(&second))).await;
        assert_eq!(
            problem(response).await.0,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{bad}"
        );
    }
    assert_eq!(get_with_etag(&app, "alice", &uri).await, (renamed, second));
}

async fn upload_file(
    app: &impl Service<
        actix_http::Request,
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
    >,
    event: &str,
    (filename, content_type, bytes): (&str, &str, &[u8]),
    tags: &str,
) -> String {
    let body = multipart(&[
        Part::Text("tags", tags),
        Part::File("file", filename, Some(content_type), bytes),
    ]);
    let response = test::call_service(app, upload_request("alice", event, body)).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let media: Value = test::read_body_json(response).await;
    media["id"].as_str().unwrap().to_owned()
}

/// Every page of a listing, `limit` at a time, following `next_cursor` with the same filters.
async fn list_all(
    app: &impl Service<
        actix_http::Request,
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
    >,
    event: &str,
    filters: &str,
    limit: u32,
) -> Vec<String> {
    let mut ids = Vec::new();
    let mut cursor = String::new();
    loop {
        let uri = format!("/api/v1/events/{event}/media?limit={limit}{filters}{cursor}");
        let req = test::TestRequest::get()
            .uri(&uri)
            .insert_header(bearer("alice"))
            .to_request();
        let response = test::call_service(app, req).await;
        assert_eq!(response.status(), StatusCode::OK, "{uri}");
        let page: Value = test::read_body_json(response).await;
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= limit as usize);
        ids.extend(items.iter().map(|m| m["id"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => return ids,
        }
    }
}

#[actix_web::test]
async fn the_media_list_filters_by_tag_and_kind_on_every_page() {
    let f = fixture();
    let app = app!(f);
    let event = create_event(&app, "alice").await;
    let png = ("a.png", "image/png", PNG);
    let jpeg = ("b.jpg", "image/jpeg", common::JPEG);
    let pdf = ("c.pdf", "application/pdf", PDF);
    let uploads = [
        (png, "Beach, pets"),
        (pdf, "menu"),
        (jpeg, "beach"),
        (png, ""),
        (pdf, "BEACH , menu"),
        (jpeg, "pets"),
    ];
    let mut tags_of = std::collections::HashMap::new();
    for (file, tags) in uploads {
        let id = upload_file(&app, &event, file, tags).await;
        tags_of.insert(id, (file.1, tags.to_lowercase()));
    }
    // The order to expect is the unfiltered listing's, newest first.
    let all = list_all(&app, &event, "", 100).await;
    assert_eq!(all.len(), 6);
    let expect = |keep: &dyn Fn(&str, &str) -> bool| -> Vec<String> {
        all.iter()
            .filter(|id| {
                let (content_type, tags) = &tags_of[*id];
                keep(content_type, tags)
            })
            .cloned()
            .collect()
    };
    let cases: [(&str, Vec<String>); 6] = [
        ("&tag=Beach", expect(&|_, tags| tags.contains("beach"))),
        ("&kind=document", expect(&|ct, _| ct == "application/pdf")),
        ("&kind=Image", expect(&|ct, _| ct.starts_with("image/"))),
        (
            "&kind=image&tag=beach",
            expect(&|ct, tags| ct.starts_with("image/") && tags.contains("beach")),
        ),
        ("&tag=menu&kind=video", Vec::new()),
        ("&tag=&kind=", all.clone()),
    ];
    for (filters, expected) in cases {
        assert!(!expected.is_empty() || filters.contains("video"));
        for limit in [1, 2, 100] {
            assert_eq!(
                list_all(&app, &event, filters, limit).await,
                expected,
                "{filters} limit {limit}"
            );
        }
    }
    assert_eq!(list_all(&app, &event, "&tag=beach", 1).await.len(), 3);

    for bad in [
        "&kind=photo",
        "&kind=images",
        "&tag=a%2Cb",
        &format!("&tag={}", "x".repeat(51)),
    ] {
        let req = test::TestRequest::get()
            .uri(&format!("/api/v1/events/{event}/media?{bad}"))
            .insert_header(bearer("alice"))
            .to_request();
        let response = test::call_service(&app, req).await;
        assert_eq!(
            problem(response).await.0,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{bad}"
        );
    }
    // A stranger's filtered listing looks like a missing event.
    let req = test::TestRequest::get()
        .uri(&format!("/api/v1/events/{event}/media?tag=beach"))
        .insert_header(bearer("bob"))
        .to_request();
    assert_eq!(
        problem(test::call_service(&app, req).await).await.0,
        StatusCode::NOT_FOUND
    );
}

#[actix_web::test]
async fn browsers_on_a_configured_origin_may_call_the_api_and_read_its_headers() {
    let f = fixture();
    let app = app!(f);
    let event = create_event(&app, "alice").await;
    let preflight = test::TestRequest::default()
        .method(actix_web::http::Method::OPTIONS)
        .uri(&format!("/api/v1/events/{event}/media"))
        .insert_header((header::ORIGIN, "https://app.example.com"))
        .insert_header((header::ACCESS_CONTROL_REQUEST_METHOD, "POST"))
        .insert_header((
            header::ACCESS_CONTROL_REQUEST_HEADERS,
            "authorization, idempotency-key",
        ))
        .to_request();
    let response = test::call_service(&app, preflight).await;
    assert!(response.status().is_success(), "{}", response.status());
    assert_eq!(
        response
            .headers()
            .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
            .unwrap(),
        "https://app.example.com"
    );

    let get = test::TestRequest::get()
        .uri(&format!("/api/v1/events/{event}"))
        .insert_header(bearer("alice"))
        .insert_header((header::ORIGIN, "https://app.example.com"))
        .to_request();
    let response = test::call_service(&app, get).await;
    assert_eq!(response.status(), StatusCode::OK);
    let exposed = response
        .headers()
        .get(header::ACCESS_CONTROL_EXPOSE_HEADERS)
        .unwrap()
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    for name in ["etag", "location", "content-type"] {
        assert!(exposed.contains(name), "{name} in {exposed}");
    }

    // Another origin gets no permission to read anything.
    let get = test::TestRequest::get()
        .uri(&format!("/api/v1/events/{event}"))
        .insert_header(bearer("alice"))
        .insert_header((header::ORIGIN, "https://evil.example.net"))
        .to_request();
    let response = test::call_service(&app, get).await;
    assert!(
        !response
            .headers()
            .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN)
    );
}

#[actix_web::test]
async fn a_retry_with_the_same_idempotency_key_answers_the_first_answer_and_stores_once() {
    let f = fixture();
    let app = app!(f);
    let event = create_event(&app, "alice").await;
    let form = || {
        multipart(&[
            Part::File("file", "cat.png", Some("image/png"), PNG),
            Part::Text("title", "Once"),
        ])
    };
    let with_key = |body: Vec<u8>, key: &str| {
        test::TestRequest::post()
            .uri(&format!("/api/v1/events/{event}/media"))
            .insert_header(bearer("alice"))
            .insert_header((header::CONTENT_TYPE, multipart_content_type()))
            .insert_header(("Idempotency-Key", key.to_owned()))
            .set_payload(body)
            .to_request()
    };
    let first = test::call_service(&app, with_key(form(), "retry-1")).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let location = first.headers().get(header::LOCATION).unwrap().clone();
    let first: Value = test::read_body_json(first).await;
    let again = test::call_service(&app, with_key(form(), "retry-1")).await;
    assert_eq!(again.status(), StatusCode::CREATED);
    assert_eq!(again.headers().get(header::LOCATION), Some(&location));
    let again: Value = test::read_body_json(again).await;
    assert_eq!(again, first, "the first answer, not a second upload");
    assert_eq!(f.store.len(), 1, "one object");

    // The same key on another form: refused, nothing stored.
    let other = multipart(&[
        Part::File("file", "cat.png", Some("image/png"), PNG),
        Part::Text("title", "Twice"),
    ]);
    assert_eq!(
        problem(test::call_service(&app, with_key(other, "retry-1")).await)
            .await
            .0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(f.store.len(), 1);
    let event_id: plugs_domain::EventId = event.parse().unwrap();
    assert_eq!(f.repo.list_all_for_event(event_id).await.unwrap().len(), 1);

    // A failed request does not burn its key: the corrected retry is processed.
    let bad = multipart(&[Part::File("file", "cat.png", Some("application/pdf"), PNG)]);
    assert_eq!(
        problem(test::call_service(&app, with_key(bad, "retry-2")).await)
            .await
            .0,
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
    let response = test::call_service(&app, with_key(form(), "retry-2")).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(f.store.len(), 2);

    // Direct uploads: the same plan again for the same request.
    let create = |title: &str| {
        test::TestRequest::post()
            .uri(&format!("/api/v1/events/{event}/media/uploads"))
            .insert_header(bearer("alice"))
            .insert_header(("Idempotency-Key", "plan-1"))
            .set_json(json!({"filename": "a.png", "content_type": "image/png", "size": 10, "title": title}))
            .to_request()
    };
    let first = test::call_service(&app, create("A")).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Value = test::read_body_json(first).await;
    let again: Value = test::read_body_json(test::call_service(&app, create("A")).await).await;
    assert_eq!(again["upload_id"], first["upload_id"]);
    assert_eq!(
        problem(test::call_service(&app, create("B")).await).await.0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let pending: Vec<_> = f
        .repo
        .list_all_for_event(event_id)
        .await
        .unwrap()
        .into_iter()
        .filter(|m| m.status == plugs_domain::MediaStatus::Pending)
        .collect();
    assert_eq!(pending.len(), 1, "one direct upload started");
}

/// The retry of a form upload that filled the event's quota still gets the first answer: its
/// file is only hashed to compare the requests, never staged, so it needs no quota of its own.
#[actix_web::test]
async fn a_retry_gets_the_first_answer_when_the_first_upload_filled_the_quota() {
    let f = fixture_with(ServiceConfig {
        policy: MediaPolicy::default().with_max_size_bytes(MAX_FILE),
        quota: plugs_domain::Quota {
            event_media: Some(1),
            ..plugs_domain::Quota::default()
        },
        ..ServiceConfig::default()
    });
    let app = app!(f);
    let event = create_event(&app, "alice").await;
    let upload = |title: &str, key: &str| {
        test::TestRequest::post()
            .uri(&format!("/api/v1/events/{event}/media"))
            .insert_header(bearer("alice"))
            .insert_header((header::CONTENT_TYPE, multipart_content_type()))
            .insert_header(("Idempotency-Key", key.to_owned()))
            .set_payload(multipart(&[
                Part::File("file", "cat.png", Some("image/png"), PNG),
                Part::Text("title", title),
            ]))
            .to_request()
    };
    let first = test::call_service(&app, upload("Only", "full-1")).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Value = test::read_body_json(first).await;

    let again = test::call_service(&app, upload("Only", "full-1")).await;
    assert_eq!(
        again.status(),
        StatusCode::CREATED,
        "the retry is not refused by the quota"
    );
    let again: Value = test::read_body_json(again).await;
    assert_eq!(again, first);
    // A changed form under the same key is still told apart by its hash.
    assert_eq!(
        problem(test::call_service(&app, upload("Other", "full-1")).await)
            .await
            .0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    // A new request is a new upload, and that one the quota refuses.
    let (status, problem_body) =
        problem(test::call_service(&app, upload("Only", "full-2")).await).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{problem_body}");
    assert_eq!(f.store.len(), 1, "one object");
    let event_id: plugs_domain::EventId = event.parse().unwrap();
    assert_eq!(f.repo.list_all_for_event(event_id).await.unwrap().len(), 1);
}
