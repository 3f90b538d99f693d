//! tus 1.0 resumable uploads end to end: the real binary, spoken to with plain HTTP (reqwest and
//! a raw socket, no tus client), on the embedded default (SQLite + local directory) and on
//! PostgreSQL + s3s-fs. Every case ends by counting final objects (`events/`), staged objects
//! (`uploads/`), multipart uploads in progress, media records and tus sessions.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod binary;
mod common;

use std::io::Write as _;
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use binary::{Database, Server, media_rows, pairs, query};
use common::{PNG, sha256_hex};
use plugs_storage::{
    LocalFsConfig, LocalFsStore, ObjectKey, ObjectStore, ObjectStoreExt as _, S3Config, S3Store,
};
use plugs_test_support::s3::S3TestServer;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

const MAX_FILE: u64 = 32 * 1024 * 1024;
const MIB: usize = 1024 * 1024;

/// A PNG header followed by bytes that differ everywhere, so a part in the wrong place or a
/// byte dropped changes the SHA-256.
fn file_of_len(len: usize, seed: u64) -> Vec<u8> {
    let mut bytes = PNG.to_vec();
    let mut state = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    while bytes.len() < len {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        bytes.extend_from_slice(&state.to_le_bytes());
    }
    bytes.truncate(len);
    bytes
}

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

fn metadata(filename: &str) -> String {
    format!(
        "filename {},filetype {},title {}",
        b64(filename),
        b64("image/png"),
        b64("Stage")
    )
}

struct Backend {
    server: Server,
    store: Arc<dyn ObjectStore>,
    database: Database,
    /// The local store's root, to look at its multipart uploads in progress (`parts/`).
    local_root: Option<PathBuf>,
    _keep: Vec<Box<dyn std::any::Any>>,
}

fn settings(extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env = pairs(&[("MAX_FILE_SIZE", &MAX_FILE.to_string())]);
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
        local_root: Some(data.join("objects")),
        _keep: vec![Box::new(dir)],
    }
}

async fn s3(extra: &[(&str, &str)]) -> Option<Backend> {
    let s3 = S3TestServer::s3s()?;
    let db = plugs_test_support::pg::TestDatabase::create()?;
    let bucket = s3.unique_bucket("tus");
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
        local_root: None,
        _keep: vec![Box::new(dir), Box::new(db), Box::new(s3)],
    })
}

impl Backend {
    fn api(&self, path: &str) -> String {
        self.server.url(&format!("/api/v1{path}"))
    }

    async fn keys(&self, prefix: &str) -> Vec<String> {
        let mut keys: Vec<String> = self
            .store
            .list_all(Some(prefix))
            .await
            .unwrap()
            .into_iter()
            .map(|meta| meta.key.to_string())
            .collect();
        keys.sort();
        keys
    }

    /// The multipart uploads in progress the local store holds (S3 servers here cannot list
    /// them: see [`Backend::assert_multipart_gone`]).
    fn local_multiparts(&self) -> Vec<String> {
        self.local_root
            .as_ref()
            .map(|root| binary::files_under(&root.join("parts")))
            .unwrap_or_default()
    }

    /// `(staging key, multipart id)` of every tus session of an unfinished upload (a finished
    /// one keeps its session, so that HEAD answers it, until its media goes).
    fn sessions(&self) -> Vec<(String, String)> {
        query(
            &self.database,
            "SELECT s.staging_key || '|' || s.multipart_id FROM tus_sessions s \
             JOIN event_media m ON m.id = s.media_id WHERE m.status <> 'ready' \
             ORDER BY s.staging_key",
        )
        .into_iter()
        .map(|line| {
            let (key, id) = line.split_once('|').unwrap();
            (key.to_owned(), id.to_owned())
        })
        .collect()
    }

    /// The store no longer knows this multipart upload.
    async fn assert_multipart_gone(&self, (key, id): &(String, String)) {
        let key = ObjectKey::parse(key.as_str()).unwrap();
        // An ended upload is NoSuchUpload; s3s-fs answers an empty list of parts instead.
        match self.store.list_parts(&key, id).await {
            Err(_) => {}
            Ok(parts) => assert!(
                parts.is_empty(),
                "multipart upload {id} of {key} still open with {parts:?}"
            ),
        }
    }

    /// Exactly these media are left, ready, with their objects; nothing staged, no session, no
    /// multipart upload in progress.
    async fn assert_only(&self, ready: &[&Value], why: &str) {
        let mut expected: Vec<String> = ready
            .iter()
            .map(|m| m["s3_key"].as_str().unwrap().to_owned())
            .collect();
        expected.sort();
        assert_eq!(self.keys("events/").await, expected, "{why}: final objects");
        assert_eq!(
            self.keys("uploads/").await,
            Vec::<String>::new(),
            "{why}: staged objects"
        );
        let rows = media_rows(&self.database);
        assert_eq!(rows.len(), ready.len(), "{why}: records {rows:?}");
        assert!(rows.iter().all(|r| r.status == "ready"), "{why}: {rows:?}");
        assert_eq!(self.sessions(), Vec::new(), "{why}: tus sessions");
        assert_eq!(
            self.local_multiparts(),
            Vec::<String>::new(),
            "{why}: multipart uploads in progress"
        );
    }
}

struct Client {
    http: reqwest::Client,
    token: String,
    event: String,
    base: String,
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    fn offset(&self) -> u64 {
        self.header("upload-offset")
            .unwrap_or_else(|| panic!("no Upload-Offset ({}): {}", self.status, self.body))
            .parse()
            .unwrap()
    }
}

impl Client {
    async fn new(backend: &Backend, user: &str) -> Self {
        let http = reqwest::Client::new();
        let token = backend.server.token(user);
        let response = http
            .post(backend.api("/events"))
            .bearer_auth(&token)
            .json(&json!({"title": "Resumable"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        let event = response.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        Self {
            http,
            token,
            event,
            base: backend.server.base.clone(),
        }
    }

    /// The same user and event, on another server process.
    fn on(&self, server: &Server) -> Self {
        Self {
            http: reqwest::Client::new(),
            token: self.token.clone(),
            event: self.event.clone(),
            base: server.base.clone(),
        }
    }

    fn collection(&self) -> String {
        format!("{}/api/v1/events/{}/media/tus/", self.base, self.event)
    }

    fn url(&self, location: &str) -> String {
        format!("{}{location}", self.base)
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Answer {
        let response = request.send().await.unwrap();
        Answer {
            status: response.status(),
            headers: response.headers().clone(),
            body: response.text().await.unwrap(),
        }
    }

    fn tus(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, url)
            .bearer_auth(&self.token)
            .header("Tus-Resumable", "1.0.0")
    }

    /// POST with `Upload-Length` (or deferred), optionally with the first bytes.
    async fn create(&self, length: Option<u64>, name: &str, first: Option<Vec<u8>>) -> Answer {
        let mut request = self
            .tus(reqwest::Method::POST, &self.collection())
            .header("Upload-Metadata", metadata(name));
        request = match length {
            Some(length) => request.header("Upload-Length", length),
            None => request.header("Upload-Defer-Length", "1"),
        };
        if let Some(first) = first {
            request = request
                .header("Content-Type", "application/offset+octet-stream")
                .body(first);
        }
        self.send(request).await
    }

    async fn head(&self, location: &str) -> Answer {
        self.send(self.tus(reqwest::Method::HEAD, &self.url(location)))
            .await
    }

    async fn patch(&self, location: &str, offset: u64, bytes: &[u8]) -> Answer {
        self.patch_with(location, offset, bytes, &[]).await
    }

    async fn patch_with(
        &self,
        location: &str,
        offset: u64,
        bytes: &[u8],
        headers: &[(&str, String)],
    ) -> Answer {
        let mut request = self
            .tus(reqwest::Method::PATCH, &self.url(location))
            .header("Content-Type", "application/offset+octet-stream")
            .header("Upload-Offset", offset)
            .body(bytes.to_vec());
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        self.send(request).await
    }

    /// PATCHes `bytes[from..]` in chunks of `chunk`, checking each answer; the media's id. A
    /// 423 (another request, perhaps of a killed process, holds the upload's lease) is retried
    /// after its `Retry-After`, as tus clients do, for at most 30 s.
    async fn patch_all(&self, location: &str, bytes: &[u8], from: usize, chunk: usize) -> String {
        let mut offset = from;
        loop {
            let end = (offset + chunk).min(bytes.len());
            let mut waited = Duration::ZERO;
            let answer = loop {
                let answer = self
                    .patch(location, offset as u64, &bytes[offset..end])
                    .await;
                if answer.status != StatusCode::LOCKED {
                    break answer;
                }
                let after =
                    Duration::from_secs(answer.header("retry-after").unwrap().parse().unwrap());
                assert!(
                    waited < Duration::from_secs(30),
                    "still locked: {}",
                    answer.body
                );
                tokio::time::sleep(after).await;
                waited += after;
            };
            assert_eq!(answer.status, StatusCode::NO_CONTENT, "{}", answer.body);
            assert_eq!(answer.offset(), end as u64);
            offset = end;
            if offset == bytes.len() {
                return answer
                    .header("upload-media-id")
                    .expect("the last PATCH names the media")
                    .to_owned();
            }
            assert!(answer.header("upload-media-id").is_none());
            assert!(answer.header("upload-expires").is_some());
        }
    }

    /// GET of the media, checked against the file.
    async fn media(&self, id: &str, bytes: &[u8]) -> Value {
        let response = self
            .http
            .get(format!(
                "{}/api/v1/events/{}/media/{id}",
                self.base, self.event
            ))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let media: Value = response.json().await.unwrap();
        assert_eq!(media["sha256"], sha256_hex(bytes), "{media}");
        assert_eq!(media["size_bytes"], bytes.len(), "{media}");
        assert_eq!(media["content_type"], "image/png");
        media
    }
}

fn location(answer: &Answer) -> String {
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    answer.header("location").unwrap().to_owned()
}

fn sha256_b64(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(bytes))
}

/// The protocol, its extensions and its bad inputs on one backend.
async fn protocol(backend: Backend) {
    let client = Client::new(&backend, "alice").await;

    // Discovery: no auth, no Tus-Resumable.
    let answer = client
        .send(
            client
                .http
                .request(reqwest::Method::OPTIONS, client.collection()),
        )
        .await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT, "{}", answer.body);
    assert_eq!(answer.header("tus-version"), Some("1.0.0"));
    assert_eq!(answer.header("tus-resumable"), Some("1.0.0"));
    let extensions = answer.header("tus-extension").unwrap();
    for extension in [
        "creation",
        "creation-with-upload",
        "creation-defer-length",
        "termination",
        "expiration",
        "checksum",
    ] {
        assert!(
            extensions.split(',').any(|e| e == extension),
            "{extensions}"
        );
    }
    assert_eq!(answer.header("tus-max-size"), Some(&*MAX_FILE.to_string()));
    assert!(
        answer
            .header("tus-checksum-algorithm")
            .unwrap()
            .contains("sha256")
    );

    // Tus-Resumable missing or of another version: 412, with the version spoken.
    let answer = client
        .send(
            client
                .http
                .post(client.collection())
                .bearer_auth(&client.token)
                .header("Upload-Length", 100)
                .header("Upload-Metadata", metadata("a.png")),
        )
        .await;
    assert_eq!(
        answer.status,
        StatusCode::PRECONDITION_FAILED,
        "{}",
        answer.body
    );
    assert_eq!(answer.header("tus-version"), Some("1.0.0"));
    let answer = client
        .send(
            client
                .http
                .post(client.collection())
                .bearer_auth(&client.token)
                .header("Tus-Resumable", "0.2.2")
                .header("Upload-Length", 100)
                .header("Upload-Metadata", metadata("a.png")),
        )
        .await;
    assert_eq!(answer.status, StatusCode::PRECONDITION_FAILED);
    // No token: 401.
    let answer = client
        .send(
            client
                .http
                .post(client.collection())
                .header("Tus-Resumable", "1.0.0")
                .header("Upload-Length", 100),
        )
        .await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    // Larger than MAX_FILE_SIZE: 413 before anything is written.
    let answer = client.create(Some(MAX_FILE + 1), "huge.png", None).await;
    assert_eq!(
        answer.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        answer.body
    );
    backend.assert_only(&[], "refused before anything").await;

    // Creation, then PATCHes of 3 MiB (every one ends inside an 8 MiB part), with HEAD and the
    // bad inputs between them.
    let bytes = file_of_len(11 * MIB + 123, 1);
    let created = client
        .create(Some(bytes.len() as u64), "stage.png", None)
        .await;
    let at = location(&created);
    assert_eq!(created.offset(), 0);
    assert!(created.header("upload-expires").is_some());
    let chunk = 3 * MIB;
    let answer = client.patch(&at, 0, &bytes[..chunk]).await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT, "{}", answer.body);
    assert_eq!(answer.offset(), chunk as u64);
    let head = client.head(&at).await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.offset(), chunk as u64);
    assert_eq!(
        head.header("upload-length"),
        Some(&*bytes.len().to_string())
    );
    assert!(
        head.header("upload-metadata")
            .unwrap()
            .contains(&b64("stage.png"))
    );
    assert_eq!(head.header("cache-control"), Some("no-store"));
    // HEAD without Tus-Resumable: 412.
    let answer = client
        .send(client.http.head(client.url(&at)).bearer_auth(&client.token))
        .await;
    assert_eq!(answer.status, StatusCode::PRECONDITION_FAILED);
    // Wrong Upload-Offset: 409, nothing taken.
    let answer = client.patch(&at, 0, &bytes[..chunk]).await;
    assert_eq!(answer.status, StatusCode::CONFLICT, "{}", answer.body);
    let answer = client
        .patch(&at, chunk as u64 + 1, &bytes[chunk + 1..chunk + 2])
        .await;
    assert_eq!(answer.status, StatusCode::CONFLICT);
    // Without Content-Type: application/offset+octet-stream: 415.
    let answer = client
        .send(
            client
                .tus(reqwest::Method::PATCH, &client.url(&at))
                .header("Content-Type", "application/octet-stream")
                .header("Upload-Offset", chunk)
                .body(bytes[chunk..2 * chunk].to_vec()),
        )
        .await;
    assert_eq!(
        answer.status,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "{}",
        answer.body
    );
    // A checksum that does not match: 460, the chunk discarded; the same chunk with its own
    // checksum (sha256, then sha1) is taken.
    let next = &bytes[chunk..2 * chunk];
    let answer = client
        .patch_with(
            &at,
            chunk as u64,
            next,
            &[(
                "Upload-Checksum",
                format!("sha256 {}", sha256_b64(b"other")),
            )],
        )
        .await;
    assert_eq!(answer.status.as_u16(), 460, "{}", answer.body);
    assert_eq!(client.head(&at).await.offset(), chunk as u64);
    let answer = client
        .patch_with(
            &at,
            chunk as u64,
            next,
            &[("Upload-Checksum", format!("sha256 {}", sha256_b64(next)))],
        )
        .await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT, "{}", answer.body);
    assert_eq!(answer.offset(), 2 * chunk as u64);
    let next = &bytes[2 * chunk..3 * chunk];
    let sha1 = {
        use sha1::Digest as _;
        base64::engine::general_purpose::STANDARD.encode(sha1::Sha1::digest(next))
    };
    let answer = client
        .patch_with(
            &at,
            2 * chunk as u64,
            next,
            &[("Upload-Checksum", format!("sha1 {sha1}"))],
        )
        .await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT, "{}", answer.body);
    // Bytes beyond the declared length: 413, nothing taken.
    let mut too_long = bytes[3 * chunk..].to_vec();
    too_long.extend_from_slice(b"one byte too many");
    let answer = client.patch(&at, 3 * chunk as u64, &too_long).await;
    assert_eq!(
        answer.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        answer.body
    );
    assert_eq!(client.head(&at).await.offset(), 3 * chunk as u64);
    // Another user's upload: 404, as an unknown one.
    let mallory = Client::new(&backend, "mallory").await;
    let mallory = Client {
        event: client.event.clone(),
        ..mallory
    };
    assert_eq!(mallory.head(&at).await.status, StatusCode::NOT_FOUND);
    let answer = mallory
        .patch(&at, 3 * chunk as u64, &bytes[3 * chunk..])
        .await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    let unknown = format!(
        "/api/v1/events/{}/media/tus/{}",
        client.event,
        uuid::Uuid::new_v4()
    );
    assert_eq!(client.head(&unknown).await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        client.patch(&unknown, 0, PNG).await.status,
        StatusCode::NOT_FOUND
    );
    // The rest: media, named in the answer, with the file's SHA-256.
    let id = client.patch_all(&at, &bytes, 3 * chunk, chunk).await;
    let stage = client.media(&id, &bytes).await;
    let key = ObjectKey::parse(stage["s3_key"].as_str().unwrap()).unwrap();
    assert_eq!(
        backend.store.get_bytes(&key).await.unwrap().as_ref(),
        bytes.as_slice()
    );
    // HEAD of a finished upload: its whole length and its media.
    let head = client.head(&at).await;
    if head.status == StatusCode::OK {
        assert_eq!(head.offset(), bytes.len() as u64);
        assert_eq!(head.header("upload-media-id"), Some(id.as_str()));
    } else {
        assert_eq!(head.status, StatusCode::NOT_FOUND, "{}", head.body);
    }
    backend.assert_only(&[&stage], "chunks").await;

    // Creation with upload: a small file whole in the POST.
    let small = file_of_len(1024, 2);
    let answer = client
        .create(Some(small.len() as u64), "small.png", Some(small.clone()))
        .await;
    location(&answer);
    assert_eq!(answer.offset(), small.len() as u64);
    let id = answer.header("upload-media-id").unwrap().to_owned();
    let small_media = client.media(&id, &small).await;
    // Creation with the first bytes of a larger one, the rest by PATCH.
    let medium = file_of_len(9 * MIB + 7, 3);
    let answer = client
        .create(
            Some(medium.len() as u64),
            "medium.png",
            Some(medium[..MIB].to_vec()),
        )
        .await;
    let at = location(&answer);
    assert_eq!(answer.offset(), MIB as u64);
    let id = client.patch_all(&at, &medium, MIB, 5 * MIB).await;
    let medium_media = client.media(&id, &medium).await;

    // Deferred length: the length comes with the last PATCH.
    let deferred = file_of_len(10 * MIB + 5, 4);
    let created = client.create(None, "deferred.png", None).await;
    let at = location(&created);
    assert_eq!(created.header("upload-defer-length"), Some("1"));
    let answer = client.patch(&at, 0, &deferred[..4 * MIB]).await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT, "{}", answer.body);
    let answer = client
        .patch(&at, 4 * MIB as u64, &deferred[4 * MIB..9 * MIB])
        .await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT, "{}", answer.body);
    assert_eq!(
        client.head(&at).await.header("upload-defer-length"),
        Some("1")
    );
    let answer = client
        .patch_with(
            &at,
            9 * MIB as u64,
            &deferred[9 * MIB..],
            &[("Upload-Length", deferred.len().to_string())],
        )
        .await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT, "{}", answer.body);
    let id = answer.header("upload-media-id").unwrap().to_owned();
    let deferred_media = client.media(&id, &deferred).await;
    let ready = [&stage, &small_media, &medium_media, &deferred_media];
    backend
        .assert_only(&ready, "creation with upload, deferred")
        .await;

    // Termination: 204, then the upload is unknown; its parts and staged tail are gone.
    let gone = file_of_len(10 * MIB, 5);
    let at = location(
        &client
            .create(Some(gone.len() as u64), "gone.png", None)
            .await,
    );
    let answer = client.patch(&at, 0, &gone[..9 * MIB]).await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT, "{}", answer.body);
    let sessions = backend.sessions();
    assert_eq!(sessions.len(), 1);
    assert_eq!(
        mallory
            .send(mallory.tus(reqwest::Method::DELETE, &mallory.url(&at)))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let answer = client
        .send(client.tus(reqwest::Method::DELETE, &client.url(&at)))
        .await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT, "{}", answer.body);
    assert_eq!(client.head(&at).await.status, StatusCode::NOT_FOUND);
    backend.assert_multipart_gone(&sessions[0]).await;
    backend.assert_only(&ready, "terminated").await;

    // Bytes that are not what the metadata declared: 415 as soon as they arrive, nothing kept.
    let html = b"<html><script>alert(1)</script></html>".repeat(300);
    let at = location(
        &client
            .create(Some(html.len() as u64), "cat.png", None)
            .await,
    );
    let answer = client.patch(&at, 0, &html).await;
    assert_eq!(
        answer.status,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "{}",
        answer.body
    );
    backend.assert_only(&ready, "spoofed").await;
}

#[tokio::test]
async fn protocol_embedded_default() {
    protocol(local(&[])).await;
}

#[tokio::test]
async fn protocol_postgres_s3s_fs() {
    let Some(backend) = s3(&[]).await else {
        return;
    };
    protocol(backend).await;
}

/// Any process continues an upload: a second server (same database and store) takes over from
/// the first, and back; then the server is SIGKILLed in the middle of a PATCH, restarted, and
/// the client resumes from the offset HEAD answers.
async fn processes(mut backend: Backend) {
    let client = Client::new(&backend, "alice").await;
    let bytes = file_of_len(20 * MIB + 17, 6);
    let at = location(
        &client
            .create(Some(bytes.len() as u64), "two.png", None)
            .await,
    );
    let second = Server::start(&backend.server.env, &backend.server.cwd);
    let other = client.on(&second);
    let answer = client.patch(&at, 0, &bytes[..3 * MIB]).await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT, "{}", answer.body);
    assert_eq!(other.head(&at).await.offset(), 3 * MIB as u64);
    let answer = other
        .patch(&at, 3 * MIB as u64, &bytes[3 * MIB..10 * MIB])
        .await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT, "{}", answer.body);
    // The first one again, at the offset the second left.
    let answer = client
        .patch(&at, 3 * MIB as u64, &bytes[3 * MIB..4 * MIB])
        .await;
    assert_eq!(answer.status, StatusCode::CONFLICT);
    let id = client.patch_all(&at, &bytes, 10 * MIB, 4 * MIB).await;
    let two = other.media(&id, &bytes).await;
    drop(second);
    backend.assert_only(&[&two], "two processes").await;

    // SIGKILL in the middle of a PATCH: 12 MiB announced, 10 MiB sent, the server killed.
    let bytes = file_of_len(25 * MIB + 3, 7);
    let at = location(
        &client
            .create(Some(bytes.len() as u64), "killed.png", None)
            .await,
    );
    let answer = client.patch(&at, 0, &bytes[..MIB]).await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT, "{}", answer.body);
    let mut stream = TcpStream::connect(backend.server.addr).unwrap();
    let head = format!(
        "PATCH {at} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\n\
         Tus-Resumable: 1.0.0\r\nContent-Type: application/offset+octet-stream\r\n\
         Upload-Offset: {MIB}\r\nContent-Length: {}\r\n\r\n",
        client.token,
        12 * MIB
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(&bytes[MIB..11 * MIB]).unwrap();
    stream.flush().unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    backend.server.kill();
    drop(stream);
    backend.server = Server::start(&backend.server.env, &backend.server.cwd);
    let client = client.on(&backend.server);
    let head = client.head(&at).await;
    assert_eq!(head.status, StatusCode::OK, "{}", head.body);
    let offset = head.offset() as usize;
    assert!(offset <= 11 * MIB, "{offset}");
    let id = client.patch_all(&at, &bytes, offset, 5 * MIB).await;
    let killed = client.media(&id, &bytes).await;
    // Whatever the killed request left half-written, gc (after the leases) finds nothing more
    // than the two media.
    backend.server.gc_apply_now();
    backend
        .assert_only(&[&two, &killed], "killed and resumed")
        .await;
}

// The killed PATCH held the upload's lease: with UPLOAD_LEASE=2 the resumed client waits out
// at most 2 s of 423s instead of a minute.
#[tokio::test]
async fn another_process_continues_and_a_killed_one_resumes_embedded_default() {
    processes(local(&[("UPLOAD_LEASE", "2")])).await;
}

#[tokio::test]
async fn another_process_continues_and_a_killed_one_resumes_postgres_s3s_fs() {
    let Some(backend) = s3(&[("UPLOAD_LEASE", "2")]).await else {
        return;
    };
    processes(backend).await;
}

/// A PATCH written by hand on its own connection, its body sent when the test says.
struct RawPatch {
    stream: TcpStream,
}

/// A raw answer: status, headers (names in lower case), body.
struct RawAnswer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl RawAnswer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

impl RawPatch {
    /// Sends the head of a PATCH at `offset`: with `Content-Length: length`, or chunked.
    fn start(
        addr: std::net::SocketAddr,
        client: &Client,
        at: &str,
        offset: u64,
        length: Option<usize>,
    ) -> Self {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        // A server that answered and stopped reading fills the socket buffers: stop writing.
        stream
            .set_write_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let framing = match length {
            Some(length) => format!("Content-Length: {length}"),
            None => "Transfer-Encoding: chunked".to_owned(),
        };
        let head = format!(
            "PATCH {at} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\n\
             Tus-Resumable: 1.0.0\r\nContent-Type: application/offset+octet-stream\r\n\
             Upload-Offset: {offset}\r\n{framing}\r\n\r\n",
            client.token
        );
        let mut patch = Self { stream };
        assert!(patch.send(head.as_bytes()));
        patch
    }

    /// Writes `bytes`; `false` once the server has answered or stopped reading.
    fn send(&mut self, bytes: &[u8]) -> bool {
        self.stream.set_nonblocking(true).unwrap();
        let peeked = self.stream.peek(&mut [0_u8; 1]);
        self.stream.set_nonblocking(false).unwrap();
        let answered = match peeked {
            Ok(_) => true,
            Err(error) => error.kind() != std::io::ErrorKind::WouldBlock,
        };
        !answered && self.stream.write_all(bytes).is_ok()
    }

    /// Writes `bytes` as one chunk of a chunked body.
    fn send_chunk(&mut self, bytes: &[u8]) -> bool {
        let mut chunk = format!("{:x}\r\n", bytes.len()).into_bytes();
        chunk.extend_from_slice(bytes);
        chunk.extend_from_slice(b"\r\n");
        self.send(&chunk)
    }

    /// Reads the answer.
    fn answer(mut self) -> RawAnswer {
        use std::io::Read as _;
        let mut received = Vec::new();
        let mut buffer = [0_u8; 8192];
        let head_end = loop {
            if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
                break end;
            }
            let read = self.stream.read(&mut buffer).unwrap();
            assert!(read > 0, "connection closed before an answer");
            received.extend_from_slice(&buffer[..read]);
        };
        let head = String::from_utf8_lossy(&received[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let headers: Vec<(String, String)> = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
            .collect();
        let length: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .map_or(0, |(_, v)| v.parse().unwrap());
        let mut body = received[head_end + 4..].to_vec();
        while body.len() < length {
            let read = self.stream.read(&mut buffer).unwrap();
            assert!(read > 0, "connection closed inside the answer's body");
            body.extend_from_slice(&buffer[..read]);
        }
        RawAnswer {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }
}

/// The leases on uploads in flight that are held right now (any holder, live or lapsed).
fn leases(database: &Database) -> usize {
    query(database, "SELECT count(*) FROM upload_locks")[0]
        .parse()
        .unwrap()
}

/// Asserts a tus problem with `status`, and returns its detail.
fn assert_tus_problem(status: u16, headers: &HeaderMap, body: &str) -> String {
    let problem: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("{body}"));
    assert_eq!(problem["status"], status, "{problem}");
    assert_eq!(
        headers.get("content-type").unwrap(),
        "application/problem+json"
    );
    assert_eq!(headers.get("tus-resumable").unwrap(), "1.0.0");
    problem["detail"].as_str().unwrap().to_owned()
}

/// Two PATCHes of one upload at once, on two server processes and on one: while the first
/// appends, the second is refused with 423 and `Retry-After` and writes nothing; once the first
/// ends, the other process continues, and the file arrives whole.
async fn concurrent_patches(backend: Backend) {
    let client = Client::new(&backend, "alice").await;
    let bytes = file_of_len(12 * MIB + 5, 9);
    let at = location(
        &client
            .create(Some(bytes.len() as u64), "locked.png", None)
            .await,
    );
    let second = Server::start(&backend.server.env, &backend.server.cwd);
    let other = client.on(&second);

    // The first PATCH: 9 MiB announced, 1 MiB sent, then held open.
    let mut first = RawPatch::start(backend.server.addr, &client, &at, 0, Some(9 * MIB));
    assert!(first.send(&bytes[..MIB]));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while leases(&backend.database) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the first PATCH never took the lease"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    for (who, patcher) in [("another process", &other), ("the same process", &client)] {
        let answer = patcher.patch(&at, 0, &bytes[..MIB]).await;
        assert_eq!(answer.status, StatusCode::LOCKED, "{who}: {}", answer.body);
        let detail = assert_tus_problem(423, &answer.headers, &answer.body);
        assert!(detail.contains("another request"), "{detail}");
        assert_eq!(answer.header("retry-after"), Some("1"));
        // HEAD takes no lease: it answers what is committed.
        assert_eq!(patcher.head(&at).await.offset(), 0, "{who}");
    }

    assert!(first.send(&bytes[MIB..9 * MIB]));
    let answer = first.answer();
    assert_eq!(answer.status, 204, "{}", answer.body);
    assert_eq!(
        answer.header("upload-offset"),
        Some(&*(9 * MIB).to_string())
    );
    assert_eq!(
        leases(&backend.database),
        0,
        "the first PATCH gave its lease up"
    );

    let id = other.patch_all(&at, &bytes, 9 * MIB, 2 * MIB).await;
    let media = other.media(&id, &bytes).await;
    assert_eq!(leases(&backend.database), 0);
    drop(second);
    backend.assert_only(&[&media], "concurrent patches").await;
}

#[tokio::test]
async fn concurrent_patches_are_refused_with_423_embedded_default() {
    concurrent_patches(local(&[])).await;
}

#[tokio::test]
async fn concurrent_patches_are_refused_with_423_postgres_s3s_fs() {
    let Some(backend) = s3(&[]).await else {
        return;
    };
    concurrent_patches(backend).await;
}

/// The upload guards cut a PATCH body as they cut a form's, with the same statuses: 408 for a
/// body that goes silent, 413 for one that runs past MAX_FILE_SIZE (a deferred length, so only
/// the guard knows). Neither keeps a byte that did not fill a part, and the upload goes on.
async fn guarded_bodies(backend: Backend) {
    let client = Client::new(&backend, "alice").await;
    let bytes = file_of_len(10 * MIB + 3, 10);
    let at = location(
        &client
            .create(Some(bytes.len() as u64), "silent.png", None)
            .await,
    );
    let mut silent = RawPatch::start(backend.server.addr, &client, &at, 0, Some(3 * MIB));
    assert!(silent.send(&bytes[..MIB]));
    let answer = silent.answer();
    assert_eq!(answer.status, 408, "{}", answer.body);
    assert_eq!(
        answer.header("content-type"),
        Some("application/problem+json")
    );
    assert_eq!(answer.header("tus-resumable"), Some("1.0.0"));
    let problem: Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(problem["status"], 408);
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("no bytes arrived"),
        "{problem}"
    );
    assert_eq!(client.head(&at).await.offset(), 0);
    assert_eq!(
        backend.keys("uploads/").await,
        Vec::<String>::new(),
        "nothing staged"
    );

    let big = location(&client.create(None, "endless.png", None).await);
    let mut endless = RawPatch::start(backend.server.addr, &client, &big, 0, None);
    let mut sent = 0;
    while sent <= MAX_FILE as usize + 4 * MIB {
        let piece = &bytes[sent % (8 * MIB)..sent % (8 * MIB) + MIB];
        if !endless.send_chunk(piece) {
            break;
        }
        sent += MIB;
    }
    let answer = endless.answer();
    assert_eq!(answer.status, 413, "{}", answer.body);
    assert_eq!(
        answer.header("content-type"),
        Some("application/problem+json")
    );
    assert_eq!(answer.header("tus-resumable"), Some("1.0.0"));
    let problem: Value = serde_json::from_str(&answer.body).unwrap();
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("exceeds the limit"),
        "{problem}"
    );
    assert_eq!(client.head(&big).await.offset(), 0);
    assert_eq!(
        backend.keys("uploads/").await,
        Vec::<String>::new(),
        "nothing staged"
    );
    let answer = client
        .send(client.tus(reqwest::Method::DELETE, &client.url(&big)))
        .await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT, "{}", answer.body);

    // Neither request holds the upload: the first one goes on.
    let id = client.patch_all(&at, &bytes, 0, 4 * MIB).await;
    let media = client.media(&id, &bytes).await;
    backend.assert_only(&[&media], "guarded bodies").await;
}

const GUARDS: &[(&str, &str)] = &[("UPLOAD_IDLE_TIMEOUT", "1"), ("UPLOAD_MIN_RATE", "0")];

#[tokio::test]
async fn guarded_patch_bodies_are_408_and_413_embedded_default() {
    guarded_bodies(local(GUARDS)).await;
}

#[tokio::test]
async fn guarded_patch_bodies_are_408_and_413_postgres_s3s_fs() {
    let Some(backend) = s3(GUARDS).await else {
        return;
    };
    guarded_bodies(backend).await;
}

/// Abandoned uploads (one with a full part and a staged tail, one with only a tail, one with
/// nothing): within their life gc leaves them; once `Upload-Expires` passed (DIRECT_UPLOAD_TTL=3)
/// gc removes their records, staged tails and multipart uploads, and the client gets 404/410.
async fn abandoned(backend: Backend) {
    let client = Client::new(&backend, "alice").await;
    let bytes = file_of_len(12 * MIB, 8);
    let mut locations = Vec::new();
    for (name, sent) in [("a.png", 9 * MIB), ("b.png", MIB), ("c.png", 0)] {
        let at = location(&client.create(Some(bytes.len() as u64), name, None).await);
        if sent > 0 {
            let answer = client.patch(&at, 0, &bytes[..sent]).await;
            assert_eq!(answer.status, StatusCode::NO_CONTENT, "{}", answer.body);
        }
        locations.push(at);
    }
    let sessions = backend.sessions();
    assert_eq!(sessions.len(), 3);
    assert_eq!(backend.keys("uploads/").await.len(), 2, "two staged tails");
    let summary = backend.server.gc_apply_now();
    assert_eq!(
        backend.sessions().len(),
        3,
        "live uploads are left alone: {summary}"
    );
    assert_eq!(client.head(&locations[0]).await.offset(), 9 * MIB as u64);
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let summary = backend.server.gc_apply_now();
    for session in &sessions {
        backend.assert_multipart_gone(session).await;
    }
    backend
        .assert_only(&[], &format!("after gc: {summary}"))
        .await;
    for at in &locations {
        let status = client.head(at).await.status;
        assert!(
            status == StatusCode::NOT_FOUND || status == StatusCode::GONE,
            "{status}"
        );
    }
}

#[tokio::test]
async fn gc_removes_abandoned_uploads_embedded_default() {
    abandoned(local(&[("DIRECT_UPLOAD_TTL", "3")])).await;
}

#[tokio::test]
async fn gc_removes_abandoned_uploads_postgres_s3s_fs() {
    let Some(backend) = s3(&[("DIRECT_UPLOAD_TTL", "3")]).await else {
        return;
    };
    abandoned(backend).await;
}
