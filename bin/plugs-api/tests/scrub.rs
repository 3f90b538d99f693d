//! `plugs-api scrub` and `Repr-Digest` end to end: the real binary on PostgreSQL with s3s-fs and
//! with moto. Media are uploaded through the API; then, behind the server's back, one object is
//! overwritten with other bytes of the same length and another is deleted. A scrub finds both
//! (and exits non-zero), a scrub of an untouched event passes. On moto an object moved to
//! GLACIER answers the download 409 with the restore hint and is reported, not read, by scrub.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod binary;
mod common;

use std::process::Output;

use base64::Engine as _;
use binary::{Server, pairs};
use common::{png_of_len, sha256_hex};
use plugs_storage::{ObjectKey, ObjectStore as _, S3Config, S3Store};
use plugs_test_support::pg::TestDatabase;
use plugs_test_support::s3::S3TestServer;
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn bucket_store(server: &S3TestServer, bucket: &str) -> S3Store {
    let mut config = S3Config::new(bucket.to_owned(), "us-east-1");
    config.endpoint_url = Some(server.endpoint.clone());
    config.force_path_style = true;
    config.access_key_id = Some(server.access_key.clone());
    config.secret_access_key = Some(server.secret_key.clone());
    S3Store::new(config).await.unwrap()
}

/// A server on PostgreSQL and a fresh bucket of `s3`; the store looks behind its back.
async fn start(s3: &S3TestServer, db: &TestDatabase, dir: &std::path::Path) -> (Server, S3Store) {
    let bucket = s3.unique_bucket("scrub");
    let store = bucket_store(s3, &bucket).await;
    store.ensure_bucket().await.unwrap();
    let data = dir.join("data");
    let env = pairs(&[
        ("DATA_DIR", data.to_str().unwrap()),
        ("DATABASE_URL", db.url()),
        ("S3_BUCKET_NAME", &bucket),
        ("S3_ENDPOINT_URL", &s3.endpoint),
        ("AWS_ACCESS_KEY_ID", &s3.access_key),
        ("AWS_SECRET_ACCESS_KEY", &s3.secret_key),
    ]);
    (Server::start(&env, dir), store)
}

struct Api {
    client: reqwest::Client,
    token: String,
}

impl Api {
    async fn event(&self, server: &Server) -> String {
        let response = self
            .client
            .post(server.url("/api/v1/events"))
            .bearer_auth(&self.token)
            .json(&json!({"title": "Scrubbed"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        let event: Value = response.json().await.unwrap();
        event["id"].as_str().unwrap().to_owned()
    }

    /// Uploads `bytes` as a PNG; the record.
    async fn upload(&self, server: &Server, event: &str, bytes: Vec<u8>) -> Value {
        let form = reqwest::multipart::Form::new().part(
            "file",
            reqwest::multipart::Part::bytes(bytes)
                .file_name("photo.png")
                .mime_str("image/png")
                .unwrap(),
        );
        let response = self
            .client
            .post(server.url(&format!("/api/v1/events/{event}/media")))
            .bearer_auth(&self.token)
            .multipart(form)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        response.json().await.unwrap()
    }

    async fn get(&self, server: &Server, path: &str, range: Option<&str>) -> reqwest::Response {
        let mut request = self.client.get(server.url(path)).bearer_auth(&self.token);
        if let Some(range) = range {
            request = request.header(reqwest::header::RANGE, range);
        }
        request.send().await.unwrap()
    }
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn media_path(media: &Value, what: &str) -> String {
    format!(
        "/api/v1/events/{}/media/{}/{what}",
        media["event_id"].as_str().unwrap(),
        media["id"].as_str().unwrap()
    )
}

/// `sha-256=:<base64>:` of `bytes`, computed here, independently of the server.
fn repr_digest_of(bytes: &[u8]) -> String {
    let sha = hex::decode(sha256_hex(bytes)).unwrap();
    format!(
        "sha-256=:{}:",
        base64::engine::general_purpose::STANDARD.encode(sha)
    )
}

/// The scenario both servers run.
async fn scrub_finds_a_changed_and_a_missing_object(s3: &S3TestServer) {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (server, store) = start(s3, &db, dir.path()).await;
    let api = Api {
        client: reqwest::Client::new(),
        token: server.token("alice"),
    };

    // Before any media: nothing to check, and that is a pass.
    let output = server.run(&["scrub"]);
    assert!(output.status.success(), "{}", stdout(&output));
    assert!(stdout(&output).contains("checked 0 object(s)"));

    let event = api.event(&server).await;
    let untouched_event = api.event(&server).await;
    let kept_bytes = png_of_len(300 * 1024);
    let kept = api.upload(&server, &event, kept_bytes.clone()).await;
    let changed_bytes = png_of_len(20 * 1024);
    let changed = api.upload(&server, &event, changed_bytes.clone()).await;
    let deleted = api.upload(&server, &event, png_of_len(5000)).await;
    let other = api
        .upload(&server, &untouched_event, png_of_len(7000))
        .await;

    // Downloads carry the recorded SHA-256 as Repr-Digest, on 200 and on 206 alike (the digest
    // of the whole representation, RFC 9530).
    let expected = repr_digest_of(&kept_bytes);
    for (what, range, status) in [
        ("download", None, StatusCode::OK),
        ("stream", None, StatusCode::OK),
        ("stream", Some("bytes=10-99"), StatusCode::PARTIAL_CONTENT),
    ] {
        let response = api.get(&server, &media_path(&kept, what), range).await;
        assert_eq!(response.status(), status, "{what} {range:?}");
        assert_eq!(
            response.headers()["repr-digest"].to_str().unwrap(),
            expected,
            "{what} {range:?}"
        );
        let body = response.bytes().await.unwrap();
        if range.is_none() {
            assert_eq!(repr_digest_of(&body), expected);
        } else {
            assert_eq!(body.len(), 90);
        }
    }

    let output = server.run(&["scrub", "--max-mib-per-s", "100"]);
    let report = stdout(&output);
    assert!(
        output.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(report.contains("checked 4 object(s)"), "{report}");
    assert!(report.contains("4 intact"), "{report}");
    assert!(report.contains("0 missing, 0 mismatched"), "{report}");

    // Behind the server's back: same length, other bytes (only the hash can tell); and gone.
    let changed_key = ObjectKey::parse(changed["s3_key"].as_str().unwrap()).unwrap();
    let mut tampered = changed_bytes.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 0xff;
    assert_eq!(tampered.len(), changed_bytes.len());
    store.delete(&changed_key).await.unwrap();
    plugs_storage::ObjectStoreExt::put_bytes(
        &store,
        &changed_key,
        bytes::Bytes::from(tampered),
        plugs_storage::PutOptions::with_content_type("image/png"),
    )
    .await
    .unwrap();
    let deleted_key = ObjectKey::parse(deleted["s3_key"].as_str().unwrap()).unwrap();
    store.delete(&deleted_key).await.unwrap();

    let output = server.run(&["scrub"]);
    let report = stdout(&output);
    assert!(!output.status.success(), "{report}");
    let line_of = |media: &Value| {
        let id = media["id"].as_str().unwrap();
        report
            .lines()
            .find(|line| line.contains(id))
            .map(str::to_owned)
    };
    let changed_line = line_of(&changed).unwrap_or_else(|| panic!("{report}"));
    assert!(changed_line.starts_with("MISMATCH"), "{report}");
    assert!(changed_line.contains("SHA-256"), "{report}");
    assert!(
        changed_line.contains(changed["sha256"].as_str().unwrap()),
        "{report}"
    );
    let deleted_line = line_of(&deleted).unwrap_or_else(|| panic!("{report}"));
    assert!(deleted_line.starts_with("MISSING"), "{report}");
    assert_eq!(
        line_of(&kept),
        None,
        "intact media are not listed: {report}"
    );
    assert!(report.contains("checked 4 object(s)"), "{report}");
    assert!(
        report.contains("2 intact") && report.contains("1 missing, 1 mismatched"),
        "{report}"
    );
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("2 problem(s)"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // One event at a time: the untouched one passes, the damaged one does not.
    let output = server.run(&["scrub", "--event", &untouched_event]);
    assert!(output.status.success(), "{}", stdout(&output));
    assert!(stdout(&output).contains("checked 1 object(s)"));
    assert_eq!(other["event_id"].as_str(), Some(untouched_event.as_str()));
    let output = server.run(&["scrub", "--event", &event]);
    assert!(!output.status.success());
    assert!(stdout(&output).contains("checked 3 object(s)"));

    // A sample of two out of four.
    let output = server.run(&["scrub", "--sample", "2"]);
    assert!(
        stdout(&output).contains("checked 2 object(s)"),
        "{}",
        stdout(&output)
    );

    // An event that does not exist, and a flag that is not a number: clear errors, no scrub.
    let output = server.run(&["scrub", "--event", &uuid::Uuid::new_v4().to_string()]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--event: no event"));
    let output = server.run(&["scrub", "--max-mib-per-s", "0"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("MiB per second"));
}

#[tokio::test]
async fn scrub_on_s3s_fs() {
    let Some(s3) = S3TestServer::s3s() else {
        return;
    };
    scrub_finds_a_changed_and_a_missing_object(&s3).await;
}

#[tokio::test]
async fn scrub_on_moto() {
    let Some(s3) = S3TestServer::moto() else {
        return;
    };
    scrub_finds_a_changed_and_a_missing_object(&s3).await;
}

/// An original moved to GLACIER (as a lifecycle transition would): the download answers 409
/// with the restore hint, not a 500, and scrub reports the object as archived without counting
/// it as a problem. moto answers `InvalidObjectState` for a GET of a GLACIER object, like S3.
#[tokio::test]
async fn an_archived_original_answers_409_and_scrub_skips_it() {
    let Some(s3) = S3TestServer::moto() else {
        return;
    };
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (server, store) = start(&s3, &db, dir.path()).await;
    let api = Api {
        client: reqwest::Client::new(),
        token: server.token("alice"),
    };
    let event = api.event(&server).await;
    let bytes = png_of_len(4000);
    let media = api.upload(&server, &event, bytes.clone()).await;
    let key = media["s3_key"].as_str().unwrap();

    // What a transition does: the same key and bytes, now in GLACIER.
    store
        .client()
        .copy_object()
        .bucket(store.bucket())
        .key(key)
        .copy_source(format!("{}/{key}", store.bucket()))
        .storage_class(aws_sdk_s3::types::StorageClass::Glacier)
        .metadata_directive(aws_sdk_s3::types::MetadataDirective::Copy)
        .send()
        .await
        .unwrap();

    for what in ["download", "stream"] {
        let response = api.get(&server, &media_path(&media, what), None).await;
        assert_eq!(response.status(), StatusCode::CONFLICT, "{what}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["status"], 409);
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains("restore"), "{problem}");
        assert!(detail.contains("archived"), "{problem}");
    }
    // The record is still there and still answers.
    let response = api
        .get(
            &server,
            &format!(
                "/api/v1/events/{event}/media/{}",
                media["id"].as_str().unwrap()
            ),
            None,
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);

    let output = server.run(&["scrub"]);
    let report = stdout(&output);
    assert!(output.status.success(), "{report}");
    assert!(report.contains("1 archived (not read)"), "{report}");
    assert!(report.contains("0 intact"), "{report}");
}
