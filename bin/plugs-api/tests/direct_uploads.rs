//! Direct uploads end to end: the real binary, and a client that PUTs its bytes with plain HTTP
//! (reqwest, no SDK) as a browser or a phone would, on the embedded default (SQLite + local
//! directory, URLs served by the binary), PostgreSQL + s3s-fs (signatures verified) and
//! PostgreSQL + moto. Every case ends by counting objects (final and staged) and records:
//! nothing unverified stays.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod binary;
mod common;

use std::sync::Arc;
use std::time::Duration;

use binary::{Database, Server, media_rows, pairs};
use common::{PNG, png_of_len, sha256_hex};
use plugs_storage::{
    LocalFsConfig, LocalFsStore, ObjectStore, ObjectStoreExt as _, S3Config, S3Store,
};
use plugs_test_support::s3::S3TestServer;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Small enough for quick cases, large enough for a three-part plan of 5 MiB parts.
const MAX_FILE: u64 = 32 * 1024 * 1024;

struct Backend {
    server: Server,
    store: Arc<dyn ObjectStore>,
    database: Database,
    /// Whether the store checks signatures, lengths and checksums itself (moto does not).
    verifies: bool,
    _keep: Vec<Box<dyn std::any::Any>>,
}

fn settings(extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env = pairs(&[
        ("MAX_FILE_SIZE", &MAX_FILE.to_string()),
        // Above 1 MiB a plan of 5 MiB parts, so a 11 MiB file has three parts.
        ("DIRECT_UPLOAD_MULTIPART_THRESHOLD", "1048576"),
        ("DIRECT_UPLOAD_PART_SIZE", "5242880"),
    ]);
    env.extend(pairs(extra));
    env
}

fn local(extra: &[(&str, &str)]) -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut env = settings(extra);
    env.push(("DATA_DIR".into(), data.to_string_lossy().into_owned()));
    let server = Server::start(&env, dir.path());
    let store = LocalFsStore::new(LocalFsConfig {
        root: data.join("objects"),
        base_url: "http://unused.invalid".into(),
        signing_key: b"unused".to_vec(),
    })
    .unwrap();
    Backend {
        server,
        store: Arc::new(store),
        database: Database::Sqlite(data.join("plugs.db")),
        verifies: true,
        _keep: vec![Box::new(dir)],
    }
}

async fn s3(s3: S3TestServer, verifies: bool, extra: &[(&str, &str)]) -> Option<Backend> {
    let db = plugs_test_support::pg::TestDatabase::create()?;
    let bucket = s3.unique_bucket("direct");
    let mut config = S3Config::new(bucket.clone(), "us-east-1");
    config.endpoint_url = Some(s3.endpoint.clone());
    config.force_path_style = true;
    config.access_key_id = Some(s3.access_key.clone());
    config.secret_access_key = Some(s3.secret_key.clone());
    let store = S3Store::new(config).await.unwrap();
    store.ensure_bucket().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut env = settings(extra);
    env.extend(pairs(&[
        ("DATA_DIR", dir.path().join("data").to_str().unwrap()),
        ("DATABASE_URL", db.url()),
        ("S3_BUCKET_NAME", &bucket),
        ("S3_ENDPOINT_URL", &s3.endpoint),
        ("S3_FORCE_PATH_STYLE", "true"),
        ("AWS_ACCESS_KEY_ID", &s3.access_key),
        ("AWS_SECRET_ACCESS_KEY", &s3.secret_key),
    ]));
    let server = Server::start(&env, dir.path());
    Some(Backend {
        server,
        store: Arc::new(store),
        database: Database::Postgres(db.url().to_owned()),
        verifies,
        _keep: vec![Box::new(dir), Box::new(db), Box::new(s3)],
    })
}

impl Backend {
    fn api(&self, path: &str) -> String {
        self.server.url(&format!("/api/v1{path}"))
    }

    /// Objects under `events/` and `uploads/` (staged), by key.
    async fn objects(&self) -> (Vec<String>, Vec<String>) {
        let keys = |prefix: &'static str| {
            let store = Arc::clone(&self.store);
            async move {
                store
                    .list_all(Some(prefix))
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|meta| meta.key.to_string())
                    .collect::<Vec<_>>()
            }
        };
        (keys("events/").await, keys("uploads/").await)
    }

    /// Exactly these ready objects and records are left, and nothing staged or pending.
    async fn assert_only(&self, ready: &[&Value], why: &str) {
        let (objects, staged) = self.objects().await;
        let mut expected: Vec<String> = ready
            .iter()
            .map(|m| m["s3_key"].as_str().unwrap().to_owned())
            .collect();
        expected.sort();
        let mut objects = objects;
        objects.sort();
        assert_eq!(objects, expected, "{why}: final objects");
        assert_eq!(staged, Vec::<String>::new(), "{why}: staged objects");
        let rows = media_rows(&self.database);
        assert_eq!(rows.len(), ready.len(), "{why}: records {rows:?}");
        assert!(rows.iter().all(|r| r.status == "ready"), "{why}: {rows:?}");
    }
}

struct Client {
    http: reqwest::Client,
    token: String,
    event: String,
}

impl Client {
    async fn new(backend: &Backend) -> Self {
        let http = reqwest::Client::new();
        let token = backend.server.token("alice");
        let response = http
            .post(backend.api("/events"))
            .bearer_auth(&token)
            .json(&json!({"title": "Direct"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        let event = response.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        Self { http, token, event }
    }

    async fn create(&self, backend: &Backend, body: Value) -> (StatusCode, Value) {
        let response = self
            .http
            .post(backend.api(&format!("/events/{}/media/uploads", self.event)))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .unwrap();
        (response.status(), response.json().await.unwrap())
    }

    async fn complete(&self, backend: &Backend, plan: &Value, body: Value) -> (StatusCode, Value) {
        let response = self
            .http
            .post(backend.api(&format!(
                "/events/{}/media/uploads/{}/complete",
                self.event,
                plan["upload_id"].as_str().unwrap()
            )))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .unwrap();
        (response.status(), response.json().await.unwrap())
    }

    /// `DELETE` of the upload a plan names.
    async fn abort(&self, backend: &Backend, plan: &Value) -> StatusCode {
        self.http
            .delete(backend.api(&format!(
                "/events/{}/media/uploads/{}",
                self.event,
                plan["upload_id"].as_str().unwrap()
            )))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap()
            .status()
    }

    /// A PUT as a phone sends it: the URL, the headers the plan names, the bytes.
    async fn put(&self, url: &str, headers: &Value, bytes: Vec<u8>) -> reqwest::Response {
        let mut request = self.http.put(url).body(bytes);
        for (name, value) in headers.as_object().unwrap() {
            // The HTTP client sets the length from the body.
            if name != "content-length" {
                request = request.header(name.as_str(), value.as_str().unwrap());
            }
        }
        request.send().await.unwrap()
    }
}

fn declared(name: &str, content_type: &str, bytes: &[u8]) -> Value {
    json!({"filename": name, "content_type": content_type, "size": bytes.len(), "title": "Stage", "tags": "live, Stage"})
}

/// The whole flow on one backend.
async fn direct_uploads(backend: Backend) {
    let client = Client::new(&backend).await;

    // One PUT, with a declared SHA-256.
    let bytes = png_of_len(200 * 1024);
    let mut body = declared("stage.png", "image/png", &bytes);
    body["sha256"] = json!(sha256_hex(&bytes));
    let (status, plan) = client.create(&backend, body).await;
    assert_eq!(status, StatusCode::CREATED, "{plan}");
    assert_eq!(plan["method"], "PUT");
    let response = client
        .put(
            plan["url"].as_str().unwrap(),
            &plan["headers"],
            bytes.clone(),
        )
        .await;
    assert!(response.status().is_success(), "{}", response.status());
    let (objects, staged) = backend.objects().await;
    assert!(
        objects.is_empty() && staged.len() == 1,
        "bytes are staged, not media yet"
    );
    let (status, media) = client.complete(&backend, &plan, json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "{media}");
    assert_eq!(media["sha256"], sha256_hex(&bytes));
    assert_eq!(media["size_bytes"], bytes.len());
    assert_eq!(media["content_type"], "image/png");
    assert_eq!(media["tags"], json!(["live", "stage"]));
    let key = plugs_storage::ObjectKey::parse(media["s3_key"].as_str().unwrap()).unwrap();
    assert_eq!(
        backend.store.get_bytes(&key).await.unwrap().as_ref(),
        bytes.as_slice()
    );
    // Completing twice answers the same record.
    let (status, again) = client.complete(&backend, &plan, json!({})).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(again, media);
    backend.assert_only(&[&media], "single PUT").await;

    // A retried create with the same Idempotency-Key answers the same plan (kept in the
    // database); the same key on another request is 422. The plan is then aborted.
    let keyed = |title: &str| {
        let mut body = declared("keyed.png", "image/png", &bytes);
        body["title"] = json!(title);
        client
            .http
            .post(backend.api(&format!("/events/{}/media/uploads", client.event)))
            .bearer_auth(&client.token)
            .header("Idempotency-Key", "phone-42-retry")
            .json(&body)
            .send()
    };
    let first: Value = keyed("Same").await.unwrap().json().await.unwrap();
    let again = keyed("Same").await.unwrap();
    assert_eq!(again.status(), StatusCode::CREATED);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["upload_id"], first["upload_id"], "{again}");
    assert_eq!(
        keyed("Other").await.unwrap().status(),
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(client.abort(&backend, &first).await, StatusCode::NO_CONTENT);
    backend
        .assert_only(&[&media], "keyed create, then aborted")
        .await;

    // A spoofed file: HTML bytes declared and named a JPEG are refused on completion.
    let html = b"<html><script>alert(1)</script></html>".repeat(10);
    let (status, plan) = client
        .create(&backend, declared("cat.jpg", "image/jpeg", &html))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    client
        .put(
            plan["url"].as_str().unwrap(),
            &plan["headers"],
            html.clone(),
        )
        .await;
    let (status, problem) = client.complete(&backend, &plan, json!({})).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{problem}");
    backend.assert_only(&[&media], "spoofed").await;

    // A wrong SHA-256: the store refuses the PUT where it checks, completion refuses it anyway.
    let other = png_of_len(10 * 1024);
    let mut body = declared("wrong.png", "image/png", &other);
    body["sha256"] = json!(sha256_hex(PNG));
    let (_, plan) = client.create(&backend, body).await;
    let response = client
        .put(
            plan["url"].as_str().unwrap(),
            &plan["headers"],
            other.clone(),
        )
        .await;
    if backend.verifies {
        assert!(response.status().is_client_error(), "{}", response.status());
    }
    let (status, problem) = client.complete(&backend, &plan, json!({})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    backend.assert_only(&[&media], "wrong sha256").await;

    // A body of another length than declared.
    let (_, plan) = client
        .create(&backend, declared("short.png", "image/png", &other))
        .await;
    let response = client
        .put(
            plan["url"].as_str().unwrap(),
            &json!({"content-type": "image/png"}),
            other[..other.len() - 100].to_vec(),
        )
        .await;
    if backend.verifies {
        assert!(response.status().is_client_error(), "{}", response.status());
    }
    let (status, problem) = client.complete(&backend, &plan, json!({})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    backend.assert_only(&[&media], "wrong size").await;

    // A tampered URL is refused by whatever checks signatures.
    if backend.verifies {
        let (_, plan) = client
            .create(&backend, declared("t.png", "image/png", &other))
            .await;
        // The signature ends the URL on both stores: change its last digit.
        let url = plan["url"].as_str().unwrap();
        let flipped = if url.ends_with('0') { '1' } else { '0' };
        let url = format!("{}{flipped}", &url[..url.len() - 1]);
        let response = client.put(&url, &plan["headers"], other.clone()).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "tampered URL");
        assert_eq!(client.abort(&backend, &plan).await, StatusCode::NO_CONTENT);
        backend
            .assert_only(&[&media], "tampered, then aborted")
            .await;
    }

    // A multipart plan of three parts, PUT one by one, completed with their ETags.
    let big = png_of_len(11 * 1024 * 1024);
    let (status, plan) = client
        .create(&backend, declared("video.png", "image/png", &big))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{plan}");
    let part_size = plan["part_size"].as_u64().unwrap() as usize;
    let mut parts = plan["parts"].as_array().unwrap().clone();
    assert_eq!(parts.len(), 3);
    // A client whose URL for part 2 expired asks for it again; the new one works the same.
    let response = client
        .http
        .post(backend.api(&format!(
            "/events/{}/media/uploads/{}/parts",
            client.event,
            plan["upload_id"].as_str().unwrap()
        )))
        .bearer_auth(&client.token)
        .json(&json!({"part_numbers": [2]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let resigned: Value = response.json().await.unwrap();
    assert_eq!(resigned["parts"][0]["part_number"], 2);
    parts[1] = resigned["parts"][0].clone();
    let mut completed = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        let chunk = big[i * part_size..((i + 1) * part_size).min(big.len())].to_vec();
        let response = client
            .put(part["url"].as_str().unwrap(), &part["headers"], chunk)
            .await;
        assert!(
            response.status().is_success(),
            "part {i}: {}",
            response.status()
        );
        let etag = response.headers()["etag"].to_str().unwrap().to_owned();
        completed.push(json!({"part_number": part["part_number"], "etag": etag}));
    }
    let (status, big_media) = client
        .complete(&backend, &plan, json!({"parts": completed}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{big_media}");
    assert_eq!(big_media["sha256"], sha256_hex(&big));
    assert_eq!(big_media["size_bytes"], big.len());
    backend
        .assert_only(&[&media, &big_media], "multipart")
        .await;

    // Abort of a multipart upload with a part already sent.
    let (_, plan) = client
        .create(&backend, declared("gone.png", "image/png", &big))
        .await;
    let part = &plan["parts"][0];
    client
        .put(
            part["url"].as_str().unwrap(),
            &part["headers"],
            big[..part_size].to_vec(),
        )
        .await;
    assert_eq!(client.abort(&backend, &plan).await, StatusCode::NO_CONTENT);
    backend.assert_only(&[&media, &big_media], "aborted").await;

    // Someone else's event: 404, as everywhere.
    let mallory = backend.server.token("mallory");
    let response = client
        .http
        .post(backend.api(&format!("/events/{}/media/uploads", client.event)))
        .bearer_auth(&mallory)
        .json(&declared("x.png", "image/png", PNG))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    // The policy is checked before anything is written.
    let (status, _) = client
        .create(&backend, declared("notes.txt", "text/plain", b"hello"))
        .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let (status, _) = client
        .create(
            &backend,
            json!({"filename": "huge.png", "content_type": "image/png", "size": MAX_FILE + 1}),
        )
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    backend
        .assert_only(&[&media, &big_media], "refused before anything")
        .await;
}

/// A client that PUTs its bytes and never completes: once the upload expires, gc removes its
/// record and staged bytes, and a late completion is 410.
async fn crash_between_put_and_complete(backend: Backend) {
    let client = Client::new(&backend).await;
    let bytes = png_of_len(50 * 1024);
    let (status, plan) = client
        .create(&backend, declared("late.png", "image/png", &bytes))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    client
        .put(plan["url"].as_str().unwrap(), &plan["headers"], bytes)
        .await;
    // Within the upload's life gc leaves it alone, whatever the grace.
    let summary = backend.server.gc_apply_now();
    assert_eq!(media_rows(&backend.database).len(), 1, "{summary}");
    // DIRECT_UPLOAD_TTL=2: wait it out. The URL no longer works where the store checks it;
    // presigned expiries are whole seconds, so a URL may outlive its upload by up to one.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    if backend.verifies {
        let response = client
            .put(
                plan["url"].as_str().unwrap(),
                &plan["headers"],
                png_of_len(50 * 1024),
            )
            .await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "expired URL");
    }
    let (status, problem) = client.complete(&backend, &plan, json!({})).await;
    assert_eq!(status, StatusCode::GONE, "{problem}");
    backend.assert_only(&[], "expired and completed late").await;

    // The same crash, found by gc instead of a late client.
    let bytes = png_of_len(60 * 1024);
    let (_, plan) = client
        .create(&backend, declared("lost.png", "image/png", &bytes))
        .await;
    client
        .put(plan["url"].as_str().unwrap(), &plan["headers"], bytes)
        .await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let summary = backend.server.gc_apply_now();
    assert!(
        summary.contains("pending uploads rolled back: 1"),
        "{summary}"
    );
    backend.assert_only(&[], "expired, swept by gc").await;

    // Bytes that arrive after an abort (the URL still works) belong to no upload: gc sweeps them.
    let bytes = png_of_len(30 * 1024);
    let (_, plan) = client
        .create(&backend, declared("aborted.png", "image/png", &bytes))
        .await;
    assert_eq!(client.abort(&backend, &plan).await, StatusCode::NO_CONTENT);
    let response = client
        .put(plan["url"].as_str().unwrap(), &plan["headers"], bytes)
        .await;
    assert!(response.status().is_success(), "{}", response.status());
    assert_eq!(backend.objects().await.1.len(), 1, "late bytes staged");
    let summary = backend.server.gc_apply_now();
    backend
        .assert_only(
            &[],
            &format!("late bytes after an abort, then gc: {summary}"),
        )
        .await;
}

#[tokio::test]
async fn direct_uploads_embedded_default() {
    direct_uploads(local(&[])).await;
}

#[tokio::test]
async fn direct_uploads_postgres_s3s_fs() {
    let Some(server) = S3TestServer::s3s() else {
        return;
    };
    let Some(backend) = s3(server, true, &[]).await else {
        return;
    };
    direct_uploads(backend).await;
}

#[tokio::test]
async fn direct_uploads_postgres_moto() {
    let Some(server) = S3TestServer::moto() else {
        return;
    };
    let Some(backend) = s3(server, false, &[]).await else {
        return;
    };
    direct_uploads(backend).await;
}

#[tokio::test]
async fn crash_between_put_and_complete_embedded_default() {
    crash_between_put_and_complete(local(&[("DIRECT_UPLOAD_TTL", "2")])).await;
}

#[tokio::test]
async fn crash_between_put_and_complete_postgres_s3s_fs() {
    let Some(server) = S3TestServer::s3s() else {
        return;
    };
    let Some(backend) = s3(server, true, &[("DIRECT_UPLOAD_TTL", "2")]).await else {
        return;
    };
    crash_between_put_and_complete(backend).await;
}

/// Two uploads race for the last bytes of an event's quota: exactly one gets them, on every
/// path, and the usage says so.
async fn quota_race(backend: Backend) {
    let client = Client::new(&backend).await;
    let bytes = png_of_len(100_000);
    let body = declared("a.png", "image/png", &bytes);
    let (first, second) = tokio::join!(
        client.create(&backend, body.clone()),
        client.create(&backend, body.clone())
    );
    let mut statuses = [first.0, second.0];
    statuses.sort();
    assert_eq!(
        statuses,
        [StatusCode::CREATED, StatusCode::FORBIDDEN],
        "{} / {}",
        first.1,
        second.1
    );
    let (plan, refused) = if first.0 == StatusCode::CREATED {
        (first.1, second.1)
    } else {
        (second.1, first.1)
    };
    assert!(
        refused["detail"].as_str().unwrap().contains("event bytes"),
        "{refused}"
    );
    let usage = client
        .http
        .get(backend.api(&format!("/events/{}/usage", client.event)))
        .bearer_auth(&client.token)
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(usage["event"]["bytes"], 100_000, "{usage}");
    assert_eq!(usage["event"]["max_bytes"], 150_000, "{usage}");

    // A form upload without a declared size reserves the largest file allowed: refused.
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(PNG.to_vec())
            .file_name("small.png")
            .mime_str("image/png")
            .unwrap(),
    );
    let response = client
        .http
        .post(backend.api(&format!("/events/{}/media", client.event)))
        .bearer_auth(&client.token)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    // With its size declared first, it fits beside the reservation.
    let form = reqwest::multipart::Form::new()
        .text("size", PNG.len().to_string())
        .part(
            "file",
            reqwest::multipart::Part::bytes(PNG.to_vec())
                .file_name("small.png")
                .mime_str("image/png")
                .unwrap(),
        );
    let response = client
        .http
        .post(backend.api(&format!("/events/{}/media", client.event)))
        .bearer_auth(&client.token)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let small: Value = response.json().await.unwrap();

    client
        .put(plan["url"].as_str().unwrap(), &plan["headers"], bytes)
        .await;
    let (status, media) = client.complete(&backend, &plan, json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "{media}");
    backend.assert_only(&[&small, &media], "quota race").await;
}

#[tokio::test]
async fn two_uploads_race_for_the_last_bytes_of_a_quota_embedded_default() {
    quota_race(local(&[("QUOTA_EVENT_BYTES", "150000")])).await;
}

#[tokio::test]
async fn two_uploads_race_for_the_last_bytes_of_a_quota_postgres_s3s_fs() {
    let Some(server) = S3TestServer::s3s() else {
        return;
    };
    let Some(backend) = s3(server, true, &[("QUOTA_EVENT_BYTES", "150000")]).await else {
        return;
    };
    quota_race(backend).await;
}

/// Runs one statement through the database's own client (not the code under test).
fn sql(database: &Database, statement: &str) {
    binary::query(database, statement);
}

/// A timestamp as both backends store one (UTC, microseconds).
fn db_time(at: chrono::DateTime<chrono::Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S%.6f").to_string()
}

impl Client {
    fn status_url(&self, backend: &Backend, plan: &Value) -> String {
        backend.api(&format!(
            "/events/{}/media/uploads/{}",
            self.event,
            plan["upload_id"].as_str().unwrap()
        ))
    }

    /// POST complete, with the answer's headers.
    async fn complete_answer(
        &self,
        backend: &Backend,
        plan: &Value,
        body: Value,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let response = self
            .http
            .post(format!("{}/complete", self.status_url(backend, plan)))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let headers = response.headers().clone();
        (response.status(), headers, response.json().await.unwrap())
    }

    /// GET of the status URL.
    async fn status(
        &self,
        backend: &Backend,
        plan: &Value,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let response = self
            .http
            .get(self.status_url(backend, plan))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        let headers = response.headers().clone();
        (response.status(), headers, response.json().await.unwrap())
    }

    /// Polls the status URL while it answers 202 (for at most 60 s); the first other answer.
    async fn outcome(&self, backend: &Backend, plan: &Value) -> (StatusCode, Value) {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let (status, headers, body) = self.status(backend, plan).await;
            if status != StatusCode::ACCEPTED {
                if status.is_client_error() {
                    assert_eq!(headers["content-type"], "application/problem+json");
                    assert_eq!(body["status"], status.as_u16(), "{body}");
                }
                return (status, body);
            }
            assert_accepted(&headers, &body, &self.status_url(backend, plan));
            assert!(std::time::Instant::now() < deadline, "still verifying");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// PUTs every part of a multipart plan; the part list for complete.
    async fn put_parts(&self, plan: &Value, bytes: &[u8]) -> Value {
        let part_size = plan["part_size"].as_u64().unwrap() as usize;
        let mut completed = Vec::new();
        for (i, part) in plan["parts"].as_array().unwrap().iter().enumerate() {
            let chunk = bytes[i * part_size..((i + 1) * part_size).min(bytes.len())].to_vec();
            let response = self
                .put(part["url"].as_str().unwrap(), &part["headers"], chunk)
                .await;
            assert!(response.status().is_success(), "{}", response.status());
            let etag = response.headers()["etag"].to_str().unwrap().to_owned();
            completed.push(json!({"part_number": part["part_number"], "etag": etag}));
        }
        json!({ "parts": completed })
    }
}

/// A 202 answer: the status URL in `Location`, `Retry-After`, the upload verifying.
fn assert_accepted(headers: &reqwest::header::HeaderMap, body: &Value, status_url: &str) {
    assert!(
        status_url.ends_with(headers["location"].to_str().unwrap()),
        "{:?}",
        headers["location"]
    );
    assert_eq!(headers["retry-after"], "2");
    assert_eq!(body["status"], "verifying", "{body}");
    assert!(status_url.ends_with(body["upload_id"].as_str().unwrap()));
}

/// Completion above DIRECT_UPLOAD_ASYNC_COMPLETE_ABOVE: 202 at once, the verification in the
/// background, the status URL answering 202 while it runs, then the media (200) or the refusal
/// a synchronous completion would have answered. A completion asked while another holds the
/// upload's lease verifies nothing; once that lease lapses (its process died), a repeated
/// completion takes over.
async fn background_completion(backend: Backend) {
    let client = Client::new(&backend).await;

    // Below the threshold, completion stays synchronous.
    let small = png_of_len(512 * 1024);
    let (status, plan) = client
        .create(&backend, declared("small.png", "image/png", &small))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{plan}");
    let response = client
        .put(
            plan["url"].as_str().unwrap(),
            &plan["headers"],
            small.clone(),
        )
        .await;
    assert!(response.status().is_success());
    let (status, small_media) = client.complete(&backend, &plan, json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "{small_media}");
    let (status, _, body) = client.status(&backend, &plan).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the status URL of a completed upload: {body}"
    );
    assert_eq!(body, small_media);

    // A multipart upload of three parts, above the threshold.
    let big = png_of_len(11 * 1024 * 1024);
    let (status, plan) = client
        .create(&backend, declared("video.png", "image/png", &big))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{plan}");
    let upload_id = plan["upload_id"].as_str().unwrap().to_owned();
    let status_url = client.status_url(&backend, &plan);
    // Not completed yet: nothing is verifying it.
    let (status, _, problem) = client.status(&backend, &plan).await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    let parts = client.put_parts(&plan, &big).await;

    // Another process holds the upload's lease (it is verifying): completion answers 202 and
    // verifies nothing.
    let held_until = chrono::Utc::now() + chrono::TimeDelta::hours(1);
    sql(
        &backend.database,
        &format!(
            "INSERT INTO upload_locks (media_id, holder, locked_until) VALUES ('{upload_id}', \
             'another process', '{}')",
            db_time(held_until)
        ),
    );
    let (status, headers, body) = client.complete_answer(&backend, &plan, parts.clone()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_accepted(&headers, &body, &status_url);
    let (status, headers, body) = client.status(&backend, &plan).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_accepted(&headers, &body, &status_url);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (objects, staged) = backend.objects().await;
    assert_eq!(
        objects.len(),
        1,
        "only the small media: nothing was verified"
    );
    assert_eq!(staged.len(), 0, "the parts are not assembled yet");
    assert!(
        media_rows(&backend.database)
            .iter()
            .any(|row| row.status == "pending"),
        "the upload is still pending"
    );

    // That process died: its lease lapses, and a repeated completion takes over, in the
    // background.
    sql(
        &backend.database,
        &format!(
            "UPDATE upload_locks SET locked_until = '{}' WHERE media_id = '{upload_id}'",
            db_time(chrono::Utc::now() - chrono::TimeDelta::seconds(1))
        ),
    );
    let (status, headers, body) = client.complete_answer(&backend, &plan, parts.clone()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_accepted(&headers, &body, &status_url);
    let (status, media) = client.outcome(&backend, &plan).await;
    assert_eq!(status, StatusCode::OK, "{media}");
    assert_eq!(media["sha256"], sha256_hex(&big));
    assert_eq!(media["size_bytes"], big.len());
    assert_eq!(media["id"].as_str(), Some(upload_id.as_str()));
    let key = plugs_storage::ObjectKey::parse(media["s3_key"].as_str().unwrap()).unwrap();
    assert_eq!(
        backend.store.get_bytes(&key).await.unwrap().as_ref(),
        big.as_slice()
    );
    // Completing again answers the media, as for a synchronous completion.
    let (status, again) = client.complete(&backend, &plan, parts).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(again, media);
    backend
        .assert_only(&[&small_media, &media], "background completion")
        .await;

    // A spoofed file (HTML declared and named a JPEG) and a wrong SHA-256: the status URL answers
    // the 415 and 422 a synchronous completion would, and nothing of them is kept.
    let mut html = b"<html><script>alert(1)</script></html>".repeat(60_000);
    html.truncate(2 * 1024 * 1024);
    let mut wrong_hash = declared("other.png", "image/png", &big);
    wrong_hash["sha256"] = json!(sha256_hex(&small));
    for (why, body, bytes, expected) in [
        (
            "spoofed",
            declared("cat.jpg", "image/jpeg", &html),
            &html,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            "wrong SHA-256",
            wrong_hash,
            &big,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ] {
        let (status, plan) = client.create(&backend, body).await;
        assert_eq!(status, StatusCode::CREATED, "{why}: {plan}");
        let parts = client.put_parts(&plan, bytes).await;
        let (status, headers, body) = client.complete_answer(&backend, &plan, parts.clone()).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{why}: {body}");
        assert_accepted(&headers, &body, &client.status_url(&backend, &plan));
        let (status, problem) = client.outcome(&backend, &plan).await;
        assert_eq!(status, expected, "{why}: {problem}");
        // The refusal stays the answer; completing again finds no upload.
        let (status, again) = client.outcome(&backend, &plan).await;
        assert_eq!((status, &again), (expected, &problem), "{why}");
        let (status, _) = client.complete(&backend, &plan, parts).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{why}");
        backend.assert_only(&[&small_media, &media], why).await;
    }
}

const ASYNC_ABOVE: &[(&str, &str)] = &[("DIRECT_UPLOAD_ASYNC_COMPLETE_ABOVE", "1048576")];

#[tokio::test]
async fn large_completions_run_in_the_background_embedded_default() {
    background_completion(local(ASYNC_ABOVE)).await;
}

#[tokio::test]
async fn large_completions_run_in_the_background_postgres_s3s_fs() {
    let Some(server) = S3TestServer::s3s() else {
        return;
    };
    let Some(backend) = s3(server, true, ASYNC_ABOVE).await else {
        return;
    };
    background_completion(backend).await;
}
