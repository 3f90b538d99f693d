//! End-to-end: the real `plugs-api` binary on a free port, driven over HTTP with reqwest, against
//! (a) PostgreSQL + s3s-fs, (b) PostgreSQL + moto, (c) the embedded default (SQLite + local
//! directory). Each scenario creates an event, uploads, lists, downloads (whole, ranged,
//! conditional), fetches a presigned URL without a token, checks a stranger sees nothing,
//! restarts the process and finds the data again, then deletes and checks the store directly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{JPEG, PNG, png_of_len, sha256_hex};
use plugs_storage::{
    LocalFsConfig, LocalFsStore, ObjectStore, ObjectStoreExt as _, S3Config, S3Store,
};
use plugs_test_support::s3::S3TestServer;
use reqwest::StatusCode;
use reqwest::header;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_plugs-api");
const JWT_SECRET: &str = "e2e-secret-0123456789abcdef0123456789";

/// A running `plugs-api serve`, killed when dropped.
struct Server {
    child: Child,
    base: String,
    env: Vec<(String, String)>,
    cwd: PathBuf,
}

impl Server {
    /// Starts the binary with exactly these settings (the test process's own settings are
    /// removed from its environment) and waits until `/healthz` answers.
    async fn start(env: &[(String, String)], cwd: &Path) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut env = env.to_vec();
        env.retain(|(k, _)| k != "BIND_ADDR");
        env.push(("BIND_ADDR".into(), format!("127.0.0.1:{port}")));
        let child = command(&env, cwd)
            .arg("serve")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let server = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            env,
            cwd: cwd.to_owned(),
        };
        server.wait_until_up().await;
        server
    }

    async fn wait_until_up(&self) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(response) = client.get(format!("{}/healthz", self.base)).send().await
                && response.status() == StatusCode::OK
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "plugs-api did not come up on {}",
                self.base
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Kills the process and starts a new one with the same settings on a new port.
    async fn restart(mut self) -> Self {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        Self::start(&self.env, &self.cwd.clone()).await
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `plugs-api token --user USER` with the server's settings: the token alone on stdout.
    fn token(&self, user: &str) -> String {
        let output = command(&self.env, &self.cwd)
            .args(["token", "--user", user])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let token = String::from_utf8(output.stdout).unwrap();
        let token = token.trim_end_matches('\n');
        assert_eq!(
            token.split('.').count(),
            3,
            "stdout is the JWT alone: {token:?}"
        );
        token.to_owned()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The binary with a clean environment: only PATH, HOME, RUST_LOG and `env`.
fn command(env: &[(String, String)], cwd: &Path) -> Command {
    let mut command = Command::new(BIN);
    command.env_clear().current_dir(cwd);
    for name in ["PATH", "HOME", "RUST_LOG"] {
        if let Some(value) = std::env::var_os(name) {
            command.env(name, value);
        }
    }
    command.env(
        "RUST_LOG",
        std::env::var("RUST_LOG").unwrap_or_else(|_| "error".into()),
    );
    // No processing workers: their derived versions would join the objects this test counts.
    command.env("PROCESSING_WORKERS", "0");
    command.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    command
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// The whole user journey. `store` looks at the bucket or directory behind the server.
async fn journey(mut server: Server, store: Arc<dyn ObjectStore>) {
    let client = reqwest::Client::new();
    let alice = server.token("alice");
    let mallory = server.token("mallory");

    let response = client.get(server.url("/readyz")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    let response = client
        .post(server.url("/api/v1/events"))
        .bearer_auth(&alice)
        .json(&json!({"title": "Launch"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let event: Value = response.json().await.unwrap();
    let event_id = event["id"].as_str().unwrap().to_owned();

    // Larger than one multipart read chunk, so the file really streams in pieces.
    let bytes = png_of_len(300 * 1024);
    let form = reqwest::multipart::Form::new()
        .text("title", "Launch photo")
        .text("tags", "launch, Team")
        .part(
            "file",
            reqwest::multipart::Part::bytes(bytes.clone())
                .file_name("launch.png")
                .mime_str("image/png")
                .unwrap(),
        );
    let response = client
        .post(server.url(&format!("/api/v1/events/{event_id}/media")))
        .bearer_auth(&alice)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::CREATED,
        "{:?}",
        response.text().await
    );
    let location = response.headers()[header::LOCATION]
        .to_str()
        .unwrap()
        .to_owned();
    let media: Value = response.json().await.unwrap();
    assert_eq!(media["sha256"], sha256_hex(&bytes));
    assert_eq!(media["size_bytes"], bytes.len());
    assert_eq!(media["tags"], json!(["launch", "team"]));
    let key = plugs_storage::ObjectKey::parse(media["s3_key"].as_str().unwrap()).unwrap();
    assert_eq!(
        store.get_bytes(&key).await.unwrap().as_ref(),
        bytes.as_slice(),
        "the bytes are in the store"
    );

    let response = client
        .get(server.url(&format!("/api/v1/events/{event_id}/media")))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    let page: Value = response.json().await.unwrap();
    assert_eq!(page["items"], json!([media]));

    let download = server.url(&format!("{location}/download"));
    let response = client
        .get(&download)
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[header::CONTENT_LENGTH].to_str().unwrap(),
        bytes.len().to_string()
    );
    assert_eq!(response.headers()[header::CONTENT_TYPE], "image/png");
    assert_eq!(
        response.headers()[header::CONTENT_DISPOSITION],
        "attachment; filename=\"launch.png\"; filename*=UTF-8''launch.png"
    );
    assert!(response.headers().contains_key("x-request-id"));
    let etag = response.headers()[header::ETAG]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(response.bytes().await.unwrap().as_ref(), bytes.as_slice());

    let stream = server.url(&format!("{location}/stream"));
    let response = client
        .get(&stream)
        .bearer_auth(&alice)
        .header(header::RANGE, "bytes=100-199")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        response.headers()[header::CONTENT_RANGE].to_str().unwrap(),
        format!("bytes 100-199/{}", bytes.len())
    );
    assert_eq!(response.bytes().await.unwrap().as_ref(), &bytes[100..200]);

    let response = client
        .get(&stream)
        .bearer_auth(&alice)
        .header(header::IF_NONE_MATCH, &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_MODIFIED);

    let response = client
        .get(server.url(&format!("{location}/url")))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let presigned: Value = response.json().await.unwrap();
    let response = reqwest::get(presigned["url"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "presigned URL works without a token"
    );
    assert_eq!(response.bytes().await.unwrap().as_ref(), bytes.as_slice());

    for uri in [
        location.clone(),
        format!("{location}/download"),
        format!("/api/v1/events/{event_id}"),
    ] {
        let response = client
            .get(server.url(&uri))
            .bearer_auth(&mallory)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{uri}");
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
    }

    server = server.restart().await;
    let response = client
        .get(server.url(&location))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "the record survives a restart"
    );
    assert_eq!(response.json::<Value>().await.unwrap(), media);
    let response = client
        .get(server.url(&format!("{location}/download")))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.bytes().await.unwrap().as_ref(),
        bytes.as_slice(),
        "the bytes survive a restart"
    );

    let small = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(PNG.to_vec())
            .file_name("small.png")
            .mime_str("image/png")
            .unwrap(),
    );
    let response = client
        .post(server.url(&format!("/api/v1/events/{event_id}/media")))
        .bearer_auth(&alice)
        .multipart(small)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);

    // A declared size: larger than one S3 part (8 MiB), so S3Store streams it as one PutObject
    // of that length; a file that breaks its declaration is refused and leaves nothing.
    let big = png_of_len(9 * 1024 * 1024);
    let sized_form = |size: usize| {
        reqwest::multipart::Form::new()
            .text("size", size.to_string())
            .part(
                "file",
                reqwest::multipart::Part::bytes(big.clone())
                    .file_name("big.png")
                    .mime_str("image/png")
                    .unwrap(),
            )
    };
    let objects_before = store
        .list_all(Some(&format!("events/{event_id}/")))
        .await
        .unwrap()
        .len();
    for wrong in [big.len() - 1, big.len() + 1] {
        let response = client
            .post(server.url(&format!("/api/v1/events/{event_id}/media")))
            .bearer_auth(&alice)
            .multipart(sized_form(wrong))
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "declared {wrong}"
        );
    }
    assert_eq!(
        store
            .list_all(Some(&format!("events/{event_id}/")))
            .await
            .unwrap()
            .len(),
        objects_before,
        "a refused declared-size upload left no object"
    );
    let response = client
        .post(server.url(&format!("/api/v1/events/{event_id}/media")))
        .bearer_auth(&alice)
        .multipart(sized_form(big.len()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let sized: Value = response.json().await.unwrap();
    assert_eq!(sized["size_bytes"], big.len());
    assert_eq!(sized["sha256"], sha256_hex(&big));
    let sized_key = plugs_storage::ObjectKey::parse(sized["s3_key"].as_str().unwrap()).unwrap();
    assert_eq!(
        store.get_bytes(&sized_key).await.unwrap().as_ref(),
        big.as_slice(),
        "the declared-size upload's bytes are in the store"
    );

    let response = client
        .delete(server.url(&location))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert!(
        !store.exists(&key).await.unwrap(),
        "deleting the media deleted its object"
    );
    let response = client
        .get(server.url(&location))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);

    // The call that the clients of the system we replace make, `file` first, run with curl
    // exactly as its documentation shows it.
    let photo_dir = tempfile::tempdir().unwrap();
    std::fs::write(photo_dir.path().join("photo.jpg"), JPEG).unwrap();
    let output = Command::new("curl")
        .current_dir(photo_dir.path())
        .args(["-s", "-w", "\n%{http_code}", "-X", "POST"])
        .arg(server.url(&format!("/api/v1/events/{event_id}/media")))
        .args(["-H", &format!("Authorization: Bearer {alice}")])
        .args([
            "-F",
            "file=@photo.jpg",
            "-F",
            "title=Event Photo",
            "-F",
            "tags=photo,event",
        ])
        .output()
        .expect("curl is installed (see README requirements)");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let (body, status) = stdout.rsplit_once('\n').unwrap();
    assert_eq!(status, "201", "the seed's curl call: {body}");
    let seeded: Value = serde_json::from_str(body).unwrap();
    assert_eq!(seeded["title"], "Event Photo");
    assert_eq!(seeded["tags"], json!(["photo", "event"]));
    assert_eq!(seeded["content_type"], "image/jpeg");
    assert_eq!(seeded["original_filename"], "photo.jpg");
    assert_eq!(seeded["sha256"], sha256_hex(JPEG));
    let seeded_key = plugs_storage::ObjectKey::parse(seeded["s3_key"].as_str().unwrap()).unwrap();
    assert_eq!(
        store.get_bytes(&seeded_key).await.unwrap().as_ref(),
        JPEG,
        "the seed's upload is in the store"
    );

    let response = client
        .delete(server.url(&format!("/api/v1/events/{event_id}")))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let left = store
        .list_all(Some(&format!("events/{event_id}/")))
        .await
        .unwrap();
    assert!(
        left.is_empty(),
        "deleting the event deleted its objects: {left:?}"
    );
}

#[tokio::test]
async fn embedded_default_sqlite_and_local_directory() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Nothing configured but the directory: the embedded default, with a development secret.
    let env = pairs(&[("DATA_DIR", data.to_str().unwrap())]);
    let server = Server::start(&env, dir.path()).await;
    assert!(
        data.join("plugs.db").exists(),
        "SQLite database created under DATA_DIR"
    );
    assert!(
        data.join("jwt-secret").exists(),
        "development secret created under DATA_DIR"
    );
    let store = LocalFsStore::new(LocalFsConfig {
        root: data.join("objects"),
        base_url: "http://unused.invalid".into(),
        signing_key: b"unused".to_vec(),
    })
    .unwrap();
    journey(server, Arc::new(store)).await;
}

#[tokio::test]
async fn postgres_and_local_directory() {
    let Some(db) = plugs_test_support::pg::TestDatabase::create() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let env = pairs(&[
        ("DATA_DIR", data.to_str().unwrap()),
        ("DATABASE_URL", db.url()),
        ("JWT_SECRET", JWT_SECRET),
    ]);
    let server = Server::start(&env, dir.path()).await;
    assert!(
        !data.join("plugs.db").exists(),
        "PostgreSQL is used, not SQLite"
    );
    let store = LocalFsStore::new(LocalFsConfig {
        root: data.join("objects"),
        base_url: "http://unused.invalid".into(),
        signing_key: b"unused".to_vec(),
    })
    .unwrap();
    journey(server, Arc::new(store)).await;
}

/// `plugs-api gc` reports an unclaimed object in a dry run and removes it with `--apply`; the
/// server's periodic reconciler (GC_INTERVAL) does the same on its own.
#[tokio::test]
async fn gc_finds_and_removes_unclaimed_objects() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let env = pairs(&[("DATA_DIR", data.to_str().unwrap())]);
    let store = LocalFsStore::new(LocalFsConfig {
        root: data.join("objects"),
        base_url: "http://unused.invalid".into(),
        signing_key: b"unused".to_vec(),
    })
    .unwrap();
    let orphan = plugs_storage::ObjectKey::parse(format!(
        "events/{}/media/2020/01/01/000000_000000.png",
        uuid::Uuid::now_v7()
    ))
    .unwrap();
    store
        .put_bytes(
            &orphan,
            bytes::Bytes::from_static(PNG),
            plugs_storage::PutOptions::default(),
        )
        .await
        .unwrap();

    let output = command(&env, dir.path())
        .args(["gc", "--grace", "0s"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary = String::from_utf8(output.stdout).unwrap();
    assert!(
        summary.contains("dry run") && summary.contains("orphan objects found:        1"),
        "{summary}"
    );
    assert!(
        store.exists(&orphan).await.unwrap(),
        "a dry run changes nothing"
    );

    let output = command(&env, dir.path())
        .args(["gc", "--apply", "--grace", "0s"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary = String::from_utf8(output.stdout).unwrap();
    assert!(
        summary.contains("orphan objects deleted:      1"),
        "{summary}"
    );
    assert!(!store.exists(&orphan).await.unwrap());

    store
        .put_bytes(
            &orphan,
            bytes::Bytes::from_static(PNG),
            plugs_storage::PutOptions::default(),
        )
        .await
        .unwrap();
    let mut env = env;
    env.extend(pairs(&[("GC_INTERVAL", "1"), ("GC_GRACE", "0")]));
    let _server = Server::start(&env, dir.path()).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while store.exists(&orphan).await.unwrap() {
        assert!(
            Instant::now() < deadline,
            "the periodic reconciler did not remove the orphan"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The journey against PostgreSQL and an S3 protocol server, with a fresh bucket.
async fn s3_journey(server: S3TestServer) {
    let Some(db) = plugs_test_support::pg::TestDatabase::create() else {
        return;
    };
    let bucket = server.unique_bucket("e2e");
    let mut config = S3Config::new(bucket.clone(), "us-east-1");
    config.endpoint_url = Some(server.endpoint.clone());
    config.force_path_style = true;
    config.access_key_id = Some(server.access_key.clone());
    config.secret_access_key = Some(server.secret_key.clone());
    let store = S3Store::new(config).await.unwrap();
    store.ensure_bucket().await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let env = pairs(&[
        ("DATA_DIR", dir.path().join("data").to_str().unwrap()),
        ("DATABASE_URL", db.url()),
        ("JWT_SECRET", JWT_SECRET),
        ("S3_BUCKET_NAME", &bucket),
        ("S3_ENDPOINT_URL", &server.endpoint),
        ("S3_FORCE_PATH_STYLE", "true"),
        ("AWS_ACCESS_KEY_ID", &server.access_key),
        ("AWS_SECRET_ACCESS_KEY", &server.secret_key),
    ]);
    let running = Server::start(&env, dir.path()).await;
    assert!(
        !dir.path().join("data").join("objects").exists(),
        "S3 is used, not the local directory"
    );
    journey(running, Arc::new(store)).await;
}

/// s3s-fs verifies SigV4, so the presigned URL fetched here is really checked by the store.
#[tokio::test]
async fn postgres_and_s3s_fs() {
    let Some(server) = S3TestServer::s3s() else {
        return;
    };
    s3_journey(server).await;
}

#[tokio::test]
async fn postgres_and_moto() {
    let Some(server) = S3TestServer::moto() else {
        return;
    };
    s3_journey(server).await;
}
