//! The local store's presigned URLs through the binary's own route, `/api/v1/objects/{key}`:
//! the app exactly as `plugs-api serve` builds it (settings, `state::build`, `build_app`) on the
//! embedded default, listening on a real socket. The whole storage conformance suite runs here
//! on the store that app uses, so its presigned cases (GET, PUT, tampered, expired) exercise the
//! real route, not a stand-in. Beside it: what only this route promises about PUT (the
//! `MAX_FILE_SIZE` limit, bodies cut short, the method the URL was signed for).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::HttpServer;
use actix_web::dev::ServerHandle;
use bytes::Bytes;
use plugs_api::config::{FlagOverrides, Settings};
use plugs_storage::conformance::{Capabilities, Fixture, Leftovers};
use plugs_storage::{ObjectKey, ObjectStore, ObjectStoreExt as _, PresignMethod, PutOptions};

/// Stops the server when dropped (the temporary directory goes with it).
struct Running {
    handle: ServerHandle,
    _dir: tempfile::TempDir,
}

impl Drop for Running {
    fn drop(&mut self) {
        // The stop command is sent at once; nothing needs to wait for the workers to wind down.
        drop(self.handle.stop(false));
    }
}

/// The app, listening on a free port.
struct App {
    /// The store behind the app's presigned URLs (the very instance its routes use), when the
    /// store is the local directory.
    store: Option<Arc<dyn ObjectStore>>,
    /// `127.0.0.1:PORT`.
    addr: SocketAddr,
    /// `DATA_DIR/objects`: the local store's root.
    root: PathBuf,
    running: Running,
}

impl App {
    fn store(&self) -> &dyn ObjectStore {
        self.store.as_deref().unwrap()
    }

    /// `/api/v1/objects/...?...` of a presigned URL for `key`.
    async fn presigned_path(&self, method: PresignMethod, key: &ObjectKey) -> String {
        let url = self
            .store()
            .presign(method, key, Duration::from_secs(300), &Default::default())
            .await
            .unwrap()
            .url;
        let base = format!("http://{}", self.addr);
        url.strip_prefix(&base).unwrap().to_owned()
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

/// Starts the app with these settings (plus a temporary `DATA_DIR`, `PUBLIC_BASE_URL` pointing at
/// its socket and a `JWT_SECRET`), built as `serve` builds it.
async fn start(extra: &[(&str, &str)]) -> App {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Bound before the settings are made, so that presigned URLs name the port that answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut env: HashMap<String, String> = [
        ("DATA_DIR", data.to_string_lossy().into_owned()),
        ("PUBLIC_BASE_URL", format!("http://{addr}")),
        (
            "JWT_SECRET",
            "local-objects-tests-secret-0123456789abcdef".to_owned(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    env.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    let settings = Settings::load_from(None, &env, &FlagOverrides::default()).unwrap();
    let state = plugs_api::state::build(&settings).await.unwrap();
    let store = state
        .local_objects
        .as_ref()
        .map(|local| Arc::clone(&local.store));
    let server = HttpServer::new(move || plugs_api::build_app(state.clone()))
        .workers(1)
        .disable_signals()
        .listen(listener)
        .unwrap()
        .run();
    let handle = server.handle();
    tokio::spawn(server);
    App {
        store,
        addr,
        root: data.join("objects"),
        running: Running { handle, _dir: dir },
    }
}

async fn setup() -> Option<Fixture> {
    let app = start(&[]).await;
    let mut capabilities = Capabilities::new("local through plugs-api");
    capabilities.serves_presigned_urls = true;
    capabilities.verifies_presign = true;
    capabilities.verifies_checksums = true;
    capabilities.leftovers = Some(Leftovers::local_temp_files(app.root.clone()));
    Some(Fixture {
        store: app.store.clone().unwrap(),
        capabilities,
        guard: Some(Box::new(app.running)),
    })
}

plugs_storage::conformance_tests!(setup);

/// Sends `request` on a fresh connection (the request asks to close it) and reads the answer
/// until the server closes: `(status, whole response)`.
async fn exchange(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    let request = request.to_vec();
    let response = tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        stream.write_all(&request).unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).unwrap();
        response
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {text:?}"));
    (status, text)
}

fn files_under(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                found.push(path.to_string_lossy().into_owned());
            }
        }
    }
    found
}

/// Waits (up to 10 s) until `done` holds.
async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

const LIMIT: usize = 1024;

#[tokio::test]
async fn a_put_past_max_file_size_is_413_and_keeps_nothing() {
    let limit = LIMIT.to_string();
    let app = start(&[("MAX_FILE_SIZE", &limit)]).await;
    let key = ObjectKey::parse("events/e/media/kept.bin").unwrap();
    app.store()
        .put_bytes(
            &key,
            Bytes::from_static(b"the first version"),
            PutOptions::default(),
        )
        .await
        .unwrap();
    let path = app.presigned_path(PresignMethod::Put, &key).await;

    // Declared too long: refused from the headers, before any byte of the body is sent.
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 1073741824\r\nConnection: close\r\n\r\n"
    );
    let (status, response) = exchange(app.addr, head.as_bytes()).await;
    assert_eq!(status, 413, "{response}");
    assert!(response.contains("application/problem+json"), "{response}");

    // No length declared: cut off once the body crosses the limit.
    let mut chunked = format!(
        "PUT {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    for _ in 0..3 {
        chunked.extend_from_slice(format!("{:x}\r\n", LIMIT / 2).as_bytes());
        chunked.extend_from_slice(&[b'x'; LIMIT / 2]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let (status, response) = exchange(app.addr, &chunked).await;
    assert_eq!(status, 413, "{response}");

    // Nothing kept: the object under the key is the one that was there, and no temp file stays.
    assert_eq!(
        app.store().get_bytes(&key).await.unwrap(),
        Bytes::from_static(b"the first version")
    );
    wait_for("the refused put's temp file to go", || {
        files_under(&app.root.join("tmp")).is_empty()
    })
    .await;

    // The limit itself is allowed.
    let response = reqwest::Client::new()
        .put(app.url(&path))
        .body(vec![b'y'; LIMIT])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(app.store().get_bytes(&key).await.unwrap().len(), LIMIT);
}

#[tokio::test]
async fn a_put_cut_short_keeps_nothing() {
    let app = start(&[]).await;
    let key = ObjectKey::parse("events/e/media/cut.bin").unwrap();
    let path = app.presigned_path(PresignMethod::Put, &key).await;
    let mut stream = std::net::TcpStream::connect(app.addr).unwrap();
    let head = format!("PUT {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(&[b'z'; 50_000]).unwrap();
    let tmp = app.root.join("tmp");
    wait_for("the put to start writing", || !files_under(&tmp).is_empty()).await;
    // The client goes away half-way.
    drop(stream);
    wait_for("the cut-short put's temp file to go", || {
        files_under(&tmp).is_empty()
    })
    .await;
    assert!(!app.store().exists(&key).await.unwrap());
    assert!(files_under(&app.root.join("objects")).is_empty());
}

#[tokio::test]
async fn a_put_stores_its_content_type_and_answers_the_objects_etag() {
    let app = start(&[]).await;
    let key = ObjectKey::parse("events/e/media/photo.png").unwrap();
    let path = app.presigned_path(PresignMethod::Put, &key).await;
    let response = reqwest::Client::new()
        .put(app.url(&path))
        .header("content-type", "image/png")
        .body(&b"not really a png"[..])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let etag = response.headers()["etag"].to_str().unwrap().to_owned();
    let meta = app.store().head(&key).await.unwrap();
    assert_eq!(meta.etag, etag);
    assert_eq!(meta.content_type.as_deref(), Some("image/png"));
    assert_eq!(meta.size, 16);
}

#[tokio::test]
async fn a_url_opens_only_the_method_it_was_signed_for() {
    let app = start(&[]).await;
    let key = ObjectKey::parse("events/e/media/doc.pdf").unwrap();
    app.store()
        .put_bytes(
            &key,
            Bytes::from_static(b"%PDF-1.7 the original"),
            PutOptions::default(),
        )
        .await
        .unwrap();
    let client = reqwest::Client::new();
    let put_path = app.presigned_path(PresignMethod::Put, &key).await;
    let get_path = app.presigned_path(PresignMethod::Get, &key).await;

    // A PUT URL downloads nothing.
    let response = client.get(app.url(&put_path)).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 403);
    // A GET URL uploads nothing, even with its `method` parameter rewritten.
    for path in [
        get_path.clone(),
        get_path.replace("method=GET", "method=PUT"),
    ] {
        let response = client
            .put(app.url(&path))
            .body("overwritten")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 403, "{path}");
    }
    assert_eq!(
        app.store().get_bytes(&key).await.unwrap(),
        Bytes::from_static(b"%PDF-1.7 the original")
    );
    // Nor does a PUT URL for another key.
    let other = put_path.replace("doc.pdf", "other.pdf");
    let response = client
        .put(app.url(&other))
        .body("elsewhere")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 403);
    assert!(
        !app.store()
            .exists(&ObjectKey::parse("events/e/media/other.pdf").unwrap())
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn on_s3_the_route_answers_404() {
    // S3 serves its own presigned URLs; this server has no objects of its own to take.
    let app = start(&[
        ("S3_BUCKET_NAME", "nowhere"),
        ("S3_ENDPOINT_URL", "http://127.0.0.1:9"),
        ("AWS_ACCESS_KEY_ID", "key"),
        ("AWS_SECRET_ACCESS_KEY", "secret"),
    ])
    .await;
    assert!(app.store.is_none());
    let path = "/api/v1/objects/events/e/media/a.png?method=PUT&expires=99999999999&signature=00";
    let response = reqwest::Client::new()
        .put(app.url(path))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 404);
}
