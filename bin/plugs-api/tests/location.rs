//! Location stripping end to end: the real binary, a JPEG whose GPS position exiftool wrote,
//! uploaded the three ways (a form sent by curl with `file` first, a direct upload PUT with plain
//! HTTP, a tus upload), on the embedded default (SQLite + local directory) and PostgreSQL +
//! s3s-fs. Each stored object is read back from the store itself and checked with exiftool: no
//! GPS, the upload's size, the record's SHA-256; a photo without GPS is stored byte for byte,
//! and `STRIP_LOCATION=false` keeps the position.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod binary;
mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use base64::Engine as _;
use binary::{Server, pairs};
use common::{JPEG, sha256_hex};
use plugs_storage::{
    LocalFsConfig, LocalFsStore, ObjectKey, ObjectStore, ObjectStoreExt as _, S3Config, S3Store,
};
use plugs_test_support::s3::S3TestServer;
use reqwest::StatusCode;
use serde_json::{Value, json};

struct Backend {
    server: Server,
    store: Arc<dyn ObjectStore>,
    dir: tempfile::TempDir,
    _keep: Vec<Box<dyn std::any::Any>>,
}

fn local(extra: &[(&str, &str)]) -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut env = pairs(extra);
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
        dir,
        _keep: Vec::new(),
    }
}

async fn postgres_s3s(extra: &[(&str, &str)]) -> Option<Backend> {
    let s3 = S3TestServer::s3s()?;
    let db = plugs_test_support::pg::TestDatabase::create()?;
    let bucket = s3.unique_bucket("location");
    let mut config = S3Config::new(bucket.clone(), "us-east-1");
    config.endpoint_url = Some(s3.endpoint.clone());
    config.force_path_style = true;
    config.access_key_id = Some(s3.access_key.clone());
    config.secret_access_key = Some(s3.secret_key.clone());
    let store = S3Store::new(config).await.unwrap();
    store.ensure_bucket().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut env = pairs(extra);
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
        dir,
        _keep: vec![Box::new(db), Box::new(s3)],
    })
}

/// The test photos, written by exiftool: with a GPS position, and with EXIF but none.
struct Photos {
    located: Vec<u8>,
    plain: Vec<u8>,
}

fn exiftool(args: &[&str]) -> std::process::Output {
    let output = Command::new("exiftool")
        .args(args)
        .output()
        .expect("exiftool is installed (see README requirements)");
    assert!(
        output.status.success(),
        "exiftool {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn photos(dir: &Path) -> Photos {
    let base = dir.join("base.jpg");
    std::fs::write(&base, JPEG).unwrap();
    let located = dir.join("located.jpg");
    let plain = dir.join("plain.jpg");
    exiftool(&[
        "-q",
        "-Make=Phone",
        "-GPSLatitude=48.8566",
        "-GPSLatitudeRef=N",
        "-GPSLongitude=2.3522",
        "-GPSLongitudeRef=E",
        "-GPSAltitude=35",
        "-o",
        located.to_str().unwrap(),
        base.to_str().unwrap(),
    ]);
    exiftool(&[
        "-q",
        "-Make=Phone",
        "-o",
        plain.to_str().unwrap(),
        base.to_str().unwrap(),
    ]);
    let photos = Photos {
        located: std::fs::read(&located).unwrap(),
        plain: std::fs::read(&plain).unwrap(),
    };
    assert!(
        !gps_tags(dir, &photos.located).is_empty(),
        "the fixture has GPS"
    );
    assert!(gps_tags(dir, &photos.plain).is_empty());
    photos
}

/// The GPS tags exiftool reads in `bytes` (other than the empty directory's own), with values.
fn gps_tags(dir: &Path, bytes: &[u8]) -> Vec<(String, Value)> {
    let file = dir.join("check.jpg");
    std::fs::write(&file, bytes).unwrap();
    let output = exiftool(&["-j", "-n", "-gps:all", file.to_str().unwrap()]);
    let read: Value = serde_json::from_slice(&output.stdout).unwrap();
    read[0]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(name, _)| name.as_str() != "SourceFile")
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect()
}

struct Client {
    http: reqwest::Client,
    token: String,
    event: String,
}

impl Backend {
    fn api(&self, path: &str) -> String {
        self.server.url(&format!("/api/v1{path}"))
    }

    async fn client(&self) -> Client {
        let http = reqwest::Client::new();
        let token = self.server.token("alice");
        let response = http
            .post(self.api("/events"))
            .bearer_auth(&token)
            .json(&json!({"title": "Holiday"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        let event = response.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        Client { http, token, event }
    }

    async fn stored(&self, media: &Value) -> Vec<u8> {
        let key = ObjectKey::parse(media["s3_key"].as_str().unwrap()).unwrap();
        self.store.get_bytes(&key).await.unwrap().to_vec()
    }

    /// The form upload as the clients of the system we replace send it: curl, `file` first.
    fn form_upload(&self, client: &Client, bytes: &[u8], name: &str) -> Value {
        let file = self.dir.path().join(name);
        std::fs::write(&file, bytes).unwrap();
        let output = Command::new("curl")
            .args(["-sS", "-w", "\n%{http_code}", "-H"])
            .arg(format!("Authorization: Bearer {}", client.token))
            .arg("-F")
            .arg(format!("file=@{};type=image/jpeg", file.display()))
            .args(["-F", "title=Beach", "-F", "tags=holiday"])
            .arg(self.api(&format!("/events/{}/media", client.event)))
            .output()
            .expect("curl is installed (see README requirements)");
        let text = String::from_utf8(output.stdout).unwrap();
        let (body, status) = text.rsplit_once('\n').unwrap();
        assert_eq!(status, "201", "{body}");
        serde_json::from_str(body).unwrap()
    }

    /// A direct upload of one PUT, declaring the SHA-256 of the bytes it sends.
    async fn direct_upload(&self, client: &Client, bytes: &[u8], name: &str) -> Value {
        let uploads = format!("/events/{}/media/uploads", client.event);
        let response = client
            .http
            .post(self.api(&uploads))
            .bearer_auth(&client.token)
            .json(&json!({
                "filename": name,
                "content_type": "image/jpeg",
                "size": bytes.len(),
                "sha256": sha256_hex(bytes),
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        let plan: Value = response.json().await.unwrap();
        let mut put = client
            .http
            .put(plan["url"].as_str().unwrap())
            .body(bytes.to_vec());
        for (header, value) in plan["headers"].as_object().unwrap() {
            if header != "content-length" {
                put = put.header(header.as_str(), value.as_str().unwrap());
            }
        }
        let response = put.send().await.unwrap();
        assert!(response.status().is_success(), "{}", response.status());
        let upload_id = plan["upload_id"].as_str().unwrap();
        let response = client
            .http
            .post(self.api(&format!("{uploads}/{upload_id}/complete")))
            .bearer_auth(&client.token)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        response.json().await.unwrap()
    }

    /// A tus upload: creation, then the bytes in two PATCHes.
    async fn tus_upload(&self, client: &Client, bytes: &[u8], name: &str) -> Value {
        let b64 = |text: &str| base64::engine::general_purpose::STANDARD.encode(text);
        let response = client
            .http
            .post(self.api(&format!("/events/{}/media/tus/", client.event)))
            .bearer_auth(&client.token)
            .header("Tus-Resumable", "1.0.0")
            .header("Upload-Length", bytes.len())
            .header(
                "Upload-Metadata",
                format!("filename {},filetype {}", b64(name), b64("image/jpeg")),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        let location = response.headers()["location"].to_str().unwrap().to_owned();
        let half = bytes.len() / 2;
        let mut media_id = None;
        for (offset, piece) in [(0, &bytes[..half]), (half, &bytes[half..])] {
            let response = client
                .http
                .patch(self.server.url(&location))
                .bearer_auth(&client.token)
                .header("Tus-Resumable", "1.0.0")
                .header("Content-Type", "application/offset+octet-stream")
                .header("Upload-Offset", offset)
                .body(piece.to_vec())
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::NO_CONTENT);
            media_id = response
                .headers()
                .get("upload-media-id")
                .map(|id| id.to_str().unwrap().to_owned());
        }
        let media_id = media_id.expect("the last PATCH names the media");
        let response = client
            .http
            .get(self.api(&format!("/events/{}/media/{media_id}", client.event)))
            .bearer_auth(&client.token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.unwrap()
    }

    /// The stored object carries no GPS position, has the upload's size, and is what the
    /// record's SHA-256 says; the record says it was changed.
    async fn assert_stripped(&self, media: &Value, sent: &[u8], how: &str) {
        let stored = self.stored(media).await;
        assert_eq!(gps_tags(self.dir.path(), &stored), [], "{how}: GPS stored");
        assert_eq!(stored.len(), sent.len(), "{how}: size");
        assert_eq!(media["size_bytes"], sent.len(), "{how}");
        assert_eq!(media["sha256"], sha256_hex(&stored), "{how}: sha256");
        assert_ne!(media["sha256"], sha256_hex(sent), "{how}");
        assert_eq!(media["location_stripped"], true, "{how}: {media}");
        // The rest of the EXIF is kept.
        let file = self.dir.path().join("kept.jpg");
        std::fs::write(&file, &stored).unwrap();
        let make = exiftool(&["-s3", "-Make", file.to_str().unwrap()]);
        assert_eq!(
            String::from_utf8_lossy(&make.stdout).trim(),
            "Phone",
            "{how}"
        );
    }

    /// Stored byte for byte, and the record says nothing was changed.
    async fn assert_as_sent(&self, media: &Value, sent: &[u8], how: &str) {
        assert_eq!(self.stored(media).await, sent, "{how}");
        assert_eq!(media["sha256"], sha256_hex(sent), "{how}");
        assert_eq!(media["location_stripped"], false, "{how}: {media}");
    }
}

async fn strips_on_every_path(backend: Backend) {
    let photos = photos(backend.dir.path());
    let client = backend.client().await;

    let media = backend.form_upload(&client, &photos.located, "located.jpg");
    backend
        .assert_stripped(&media, &photos.located, "form")
        .await;
    let media = backend
        .direct_upload(&client, &photos.located, "located.jpg")
        .await;
    backend
        .assert_stripped(&media, &photos.located, "direct")
        .await;
    let media = backend
        .tus_upload(&client, &photos.located, "located.jpg")
        .await;
    backend
        .assert_stripped(&media, &photos.located, "tus")
        .await;

    let media = backend.form_upload(&client, &photos.plain, "plain.jpg");
    backend
        .assert_as_sent(&media, &photos.plain, "form, no GPS")
        .await;
    let media = backend
        .direct_upload(&client, &photos.plain, "plain.jpg")
        .await;
    backend
        .assert_as_sent(&media, &photos.plain, "direct, no GPS")
        .await;
    let media = backend
        .tus_upload(&client, &photos.plain, "plain.jpg")
        .await;
    backend
        .assert_as_sent(&media, &photos.plain, "tus, no GPS")
        .await;
}

async fn keeps_the_position_when_off(backend: Backend) {
    let photos = photos(backend.dir.path());
    let client = backend.client().await;
    let media = backend.form_upload(&client, &photos.located, "located.jpg");
    backend
        .assert_as_sent(&media, &photos.located, "form, off")
        .await;
    let media = backend
        .direct_upload(&client, &photos.located, "located.jpg")
        .await;
    backend
        .assert_as_sent(&media, &photos.located, "direct, off")
        .await;
    let media = backend
        .tus_upload(&client, &photos.located, "located.jpg")
        .await;
    backend
        .assert_as_sent(&media, &photos.located, "tus, off")
        .await;
    let stored = backend.stored(&media).await;
    assert!(!gps_tags(backend.dir.path(), &stored).is_empty());
}

#[tokio::test]
async fn location_is_stripped_embedded_default() {
    strips_on_every_path(local(&[])).await;
}

#[tokio::test]
async fn location_is_stripped_postgres_s3s_fs() {
    let Some(backend) = postgres_s3s(&[]).await else {
        return;
    };
    strips_on_every_path(backend).await;
}

#[tokio::test]
async fn location_is_kept_when_off_embedded_default() {
    keeps_the_position_when_off(local(&[("STRIP_LOCATION", "false")])).await;
}

#[tokio::test]
async fn location_is_kept_when_off_postgres_s3s_fs() {
    let Some(backend) = postgres_s3s(&[("STRIP_LOCATION", "false")]).await else {
        return;
    };
    keeps_the_position_when_off(backend).await;
}
