//! Media processing end to end (issue 12), against the real binary on SQLite + local directory
//! and PostgreSQL + s3s-fs: images made here with the `image` crate (and `exiftool` for an EXIF
//! orientation), uploaded, processed by `plugs-api worker` (or the workers inside `serve`), and
//! their derived versions read back: pixel dimensions, orientation, no metadata, job states; a
//! decompression bomb parks its job without hurting the server; deletes and `gc` know derived
//! objects; two server processes share the queue; a worker SIGKILLed mid-job has its job done by
//! another.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod binary;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use binary::{Database, Server, pairs, query};
use image::{ImageFormat, Rgb, RgbImage, Rgba, RgbaImage};
use plugs_storage::{
    LocalFsConfig, LocalFsStore, ObjectKey, ObjectStore, ObjectStoreExt as _, S3Config, S3Store,
};
use plugs_test_support::s3::S3TestServer;
use reqwest::StatusCode;
use serde_json::{Value, json};

struct Backend {
    server: Server,
    store: Arc<dyn ObjectStore>,
    database: Database,
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
        database: Database::Sqlite(data.join("plugs.db")),
        _keep: vec![Box::new(dir)],
    }
}

async fn s3(extra: &[(&str, &str)]) -> Option<Backend> {
    let s3 = S3TestServer::s3s()?;
    let db = plugs_test_support::pg::TestDatabase::create()?;
    let bucket = s3.unique_bucket("processing");
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
        database: Database::Postgres(db.url().to_owned()),
        _keep: vec![Box::new(dir), Box::new(db), Box::new(s3)],
    })
}

/// A `plugs-api worker` process with the server's settings, SIGKILLed when dropped.
struct Worker(Child);

impl Worker {
    fn start(server: &Server) -> Self {
        let child = binary::command(&server.env, &server.cwd)
            .arg("worker")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        Self(child)
    }

    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill();
    }
}

struct Client {
    http: reqwest::Client,
    token: String,
    event: String,
    base: String,
}

impl Client {
    async fn new(server: &Server) -> Self {
        let http = reqwest::Client::new();
        let token = server.token("alice");
        let response = http
            .post(server.url("/api/v1/events"))
            .bearer_auth(&token)
            .json(&json!({"title": "Processing"}))
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
            base: server.base.clone(),
        }
    }

    /// The same user and event, through another server process.
    fn on(&self, server: &Server) -> Self {
        Self {
            http: reqwest::Client::new(),
            token: self.token.clone(),
            event: self.event.clone(),
            base: server.base.clone(),
        }
    }

    fn media_url(&self, id: &str, rest: &str) -> String {
        format!(
            "{}/api/v1/events/{}/media/{id}{rest}",
            self.base, self.event
        )
    }

    async fn upload(&self, name: &str, bytes: &[u8]) -> Value {
        let form = reqwest::multipart::Form::new().part(
            "file",
            reqwest::multipart::Part::bytes(bytes.to_vec()).file_name(name.to_owned()),
        );
        let response = self
            .http
            .post(format!("{}/api/v1/events/{}/media", self.base, self.event))
            .bearer_auth(&self.token)
            .multipart(form)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert_eq!(status, StatusCode::CREATED, "{name}: {body}");
        body
    }

    async fn media(&self, id: &str) -> Value {
        let response = self
            .http
            .get(self.media_url(id, ""))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.unwrap()
    }

    /// The record once its processing is no longer `pending`.
    async fn processed(&self, id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let media = self.media(id).await;
            if media["processing"] != "pending" {
                return media;
            }
            assert!(Instant::now() < deadline, "still pending: {media}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn thumbnail(&self, id: &str, query: &str) -> reqwest::Response {
        self.http
            .get(self.media_url(id, &format!("/thumbnail?{query}")))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap()
    }

    async fn delete(&self, id: &str) {
        let response = self
            .http
            .delete(self.media_url(id, ""))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
    }
}

/// A landscape JPEG, left half red and right half blue, tagged with EXIF orientation 6 (shown
/// rotated 90 degrees clockwise: red on top) and a GPS position.
fn oriented_jpeg(dir: &Path, width: u32, height: u32) -> Vec<u8> {
    let image = RgbImage::from_fn(width, height, |x, _| {
        if x < width / 2 {
            Rgb([220, 20, 20])
        } else {
            Rgb([20, 20, 220])
        }
    });
    let path = dir.join(format!("oriented-{width}x{height}.jpg"));
    image.save_with_format(&path, ImageFormat::Jpeg).unwrap();
    let status = Command::new("exiftool")
        .args([
            "-q",
            "-overwrite_original",
            "-n",
            "-Orientation=6",
            "-GPSLatitude=48.8584",
            "-GPSLatitudeRef=N",
            "-GPSLongitude=2.2945",
            "-GPSLongitudeRef=E",
        ])
        .arg(&path)
        .status()
        .expect("exiftool is needed (apt install libimage-exiftool-perl)");
    assert!(status.success());
    std::fs::read(&path).unwrap()
}

fn encode(image: &image::DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut bytes = Cursor::new(Vec::new());
    image.write_to(&mut bytes, format).unwrap();
    bytes.into_inner()
}

fn png(width: u32, height: u32) -> Vec<u8> {
    let image = RgbaImage::from_fn(width, height, |x, y| {
        Rgba([(x % 256) as u8, (y % 256) as u8, 128, 255])
    });
    encode(&image.into(), ImageFormat::Png)
}

/// An animated GIF of two frames.
fn animated_gif(width: u32, height: u32) -> Vec<u8> {
    let mut bytes = Vec::new();
    {
        let mut encoder = image::codecs::gif::GifEncoder::new(&mut bytes);
        encoder
            .set_repeat(image::codecs::gif::Repeat::Infinite)
            .unwrap();
        for shade in [40_u8, 200] {
            let frame = RgbaImage::from_pixel(width, height, Rgba([shade, shade, 0, 255]));
            encoder.encode_frame(image::Frame::new(frame)).unwrap();
        }
    }
    bytes
}

/// A complete, tiny PNG whose header declares 100000 x 100000 pixels.
const BOMB: &[u8] =
    b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\x01\x86\xa0\0\x01\x86\xa0\x08\x02\0\0\0\x27\x30\x9c\x9f\
\0\0\0\x08IDAT\x78\x9c\x03\0\0\0\0\x01\x48\x06\x89\xd2\0\0\0\0IEND\xae\x42\x60\x82";

/// The variants of a processed record, by name: (width, height, content type, size).
fn variants(media: &Value) -> BTreeMap<String, (u64, u64, String, u64)> {
    media["variants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["name"].as_str().unwrap().to_owned(),
                (
                    v["width"].as_u64().unwrap(),
                    v["height"].as_u64().unwrap(),
                    v["content_type"].as_str().unwrap().to_owned(),
                    v["size_bytes"].as_u64().unwrap(),
                ),
            )
        })
        .collect()
}

/// Whether JPEG bytes carry any metadata segment (APP1: EXIF or XMP; APP2: ICC; APP13: IPTC),
/// walking the segments up to the scan.
fn jpeg_metadata_segments(bytes: &[u8]) -> Vec<u8> {
    assert_eq!(&bytes[..2], b"\xff\xd8");
    let mut found = Vec::new();
    let mut at = 2;
    while at + 4 <= bytes.len() && bytes[at] == 0xFF {
        let marker = bytes[at + 1];
        if marker == 0xDA {
            break;
        }
        let len = usize::from(u16::from_be_bytes([bytes[at + 2], bytes[at + 3]]));
        if matches!(marker, 0xE1 | 0xE2 | 0xED) {
            found.push(marker);
        }
        at += 2 + len;
    }
    found
}

/// What exiftool reads of a file: every tag of the EXIF, GPS, XMP and ICC groups.
fn exif_tags(dir: &Path, name: &str, bytes: &[u8]) -> Value {
    let path: PathBuf = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    let output = Command::new("exiftool")
        .args([
            "-j",
            "-n",
            "-EXIF:all",
            "-GPS:all",
            "-XMP:all",
            "-ICC_Profile:all",
        ])
        .arg(&path)
        .output()
        .unwrap();
    assert!(output.status.success());
    serde_json::from_slice::<Value>(&output.stdout).unwrap()[0].clone()
}

fn keys_under(objects: &[String], prefix: &str) -> Vec<String> {
    objects
        .iter()
        .filter(|key| key.starts_with(prefix))
        .cloned()
        .collect()
}

async fn all_keys(store: &dyn ObjectStore) -> Vec<String> {
    let mut keys: Vec<String> = store
        .list_all(Some("events/"))
        .await
        .unwrap()
        .into_iter()
        .map(|meta| meta.key.as_str().to_owned())
        .collect();
    keys.sort();
    keys
}

/// The whole scenario on one backend, its server started with no workers of its own: a job
/// waits (202) until a `plugs-api worker` process runs it.
async fn scenario(backend: &Backend) {
    let fixtures = tempfile::tempdir().unwrap();
    let client = Client::new(&backend.server).await;

    // Pending while no worker runs: the record says so and the thumbnail asks to come back.
    let jpeg = oriented_jpeg(fixtures.path(), 640, 480);
    let photo = client.upload("photo.jpg", &jpeg).await;
    let photo_id = photo["id"].as_str().unwrap().to_owned();
    assert_eq!(photo["processing"], "pending", "{photo}");
    assert_eq!(photo["variants"], json!([]));
    let waiting = client.thumbnail(&photo_id, "size=256").await;
    assert_eq!(waiting.status(), StatusCode::ACCEPTED);
    assert_eq!(
        waiting.headers()["retry-after"].to_str().unwrap(),
        "2",
        "202 says when to ask again"
    );
    let jobs = query(
        &backend.database,
        &format!("SELECT state, attempts FROM processing_jobs WHERE media_id = '{photo_id}'"),
    );
    assert_eq!(jobs, ["queued|0"], "enqueued with the upload, not run");

    let mut worker = Worker::start(&backend.server);
    let photo = client.processed(&photo_id).await;
    assert_eq!(photo["processing"], "ready", "{photo}");
    // Orientation 6 stands the 640 x 480 original upright: 480 x 640.
    assert_eq!(
        (&photo["width"], &photo["height"]),
        (&json!(480), &json!(640))
    );
    let made = variants(&photo);
    assert_eq!(
        made.keys().cloned().collect::<Vec<_>>(),
        ["display", "thumb-1024", "thumb-256"]
    );
    let (w, h, ref content_type, _) = made["thumb-256"];
    assert_eq!((w, h, content_type.as_str()), (256, 341, "image/jpeg"));
    // Never upscaled: the 1024 thumbnail and the 2048 display copy keep the original's size.
    assert_eq!((made["thumb-1024"].0, made["thumb-1024"].1), (480, 640));
    assert_eq!((made["display"].0, made["display"].1), (480, 640));
    assert_eq!(
        photo["variants"][2]["url"],
        format!(
            "/api/v1/events/{}/media/{photo_id}/thumbnail?size=256",
            client.event
        )
    );

    let response = client.thumbnail(&photo_id, "size=256").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "image/jpeg");
    assert_eq!(response.headers()["cache-control"], "private, max-age=3600");
    let etag = response.headers()["etag"].to_str().unwrap().to_owned();
    let thumb = response.bytes().await.unwrap();
    assert_eq!(thumb.len() as u64, made["thumb-256"].3);
    let decoded = image::load_from_memory(&thumb).unwrap().to_rgb8();
    assert_eq!(decoded.dimensions(), (256, 341));
    // Red on top, blue below: rotated clockwise, as orientation 6 asks.
    let top = decoded.get_pixel(128, 60);
    let bottom = decoded.get_pixel(128, 280);
    assert!(top[0] > 150 && top[2] < 100, "top should be red: {top:?}");
    assert!(
        bottom[2] > 150 && bottom[0] < 100,
        "bottom should be blue: {bottom:?}"
    );
    // No metadata at all in what is served, nor in any stored derived object.
    assert!(jpeg_metadata_segments(&thumb).is_empty());
    let tags = exif_tags(fixtures.path(), "thumb.jpg", &thumb);
    for tag in ["Orientation", "GPSLatitude", "GPSLongitude"] {
        assert!(tags.get(tag).is_none(), "{tag} in a thumbnail: {tags}");
    }
    let original_key = photo["s3_key"].as_str().unwrap();
    for name in made.keys() {
        let key = ObjectKey::parse(format!("{original_key}.{name}.jpg")).unwrap();
        let stored = backend.store.get_bytes(&key).await.unwrap();
        assert!(
            jpeg_metadata_segments(&stored).is_empty(),
            "{name} carries metadata"
        );
    }
    // Revalidation by ETag.
    let again = client
        .http
        .get(client.media_url(&photo_id, "/thumbnail?size=256"))
        .bearer_auth(&client.token)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    let display = client.thumbnail(&photo_id, "variant=display").await;
    assert_eq!(display.status(), StatusCode::OK);
    let display = image::load_from_memory(&display.bytes().await.unwrap()).unwrap();
    assert_eq!((display.width(), display.height()), (480, 640));
    let redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(client.media_url(&photo_id, "/thumbnail?size=256&redirect=true"))
        .bearer_auth(&client.token)
        .send()
        .await
        .unwrap();
    assert_eq!(redirect.status(), StatusCode::FOUND);
    let location = redirect.headers()["location"].to_str().unwrap().to_owned();
    let fetched = reqwest::get(&location).await.unwrap();
    assert_eq!(fetched.status(), StatusCode::OK, "{location}");
    assert_eq!(fetched.bytes().await.unwrap(), thumb);
    for query in ["size=300", "variant=poster", "", "size=256&variant=display"] {
        let status = client.thumbnail(&photo_id, query).await.status();
        let expected = if query.is_empty() || query.contains('&') {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::NOT_FOUND
        };
        assert_eq!(status, expected, "?{query}");
    }

    // A PNG smaller than the large thumbnail, an animated GIF (first frame), a document, a bomb.
    let picture = client.upload("picture.png", &png(300, 200)).await;
    let gif = client.upload("anim.gif", &animated_gif(120, 80)).await;
    let pdf = client
        .upload(
            "doc.pdf",
            b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n",
        )
        .await;
    let bomb = client.upload("bomb.png", BOMB).await;
    assert_eq!(pdf["processing"], "none");
    let pdf_id = pdf["id"].as_str().unwrap();
    assert_eq!(
        client.thumbnail(pdf_id, "size=256").await.status(),
        StatusCode::NOT_FOUND,
        "a type without derived versions"
    );

    let picture = client.processed(picture["id"].as_str().unwrap()).await;
    assert_eq!(picture["processing"], "ready");
    let made = variants(&picture);
    assert_eq!((made["thumb-256"].0, made["thumb-256"].1), (256, 171));
    assert_eq!((made["thumb-1024"].0, made["thumb-1024"].1), (300, 200));
    let gif = client.processed(gif["id"].as_str().unwrap()).await;
    assert_eq!(gif["processing"], "ready");
    assert_eq!((&gif["width"], &gif["height"]), (&json!(120), &json!(80)));
    assert_eq!(variants(&gif)["display"].0, 120);

    let bomb_id = bomb["id"].as_str().unwrap().to_owned();
    let bomb = client.processed(&bomb_id).await;
    assert_eq!(bomb["processing"], "failed", "{bomb}");
    assert_eq!(bomb["variants"], json!([]));
    let jobs = query(
        &backend.database,
        &format!(
            "SELECT state, attempts, last_error FROM processing_jobs WHERE media_id = '{bomb_id}'"
        ),
    );
    assert_eq!(jobs.len(), 1);
    assert!(
        jobs[0].starts_with("parked|1|") && jobs[0].contains("100000 x 100000"),
        "parked at once, with its error: {jobs:?}"
    );
    assert_eq!(
        client.thumbnail(&bomb_id, "size=256").await.status(),
        StatusCode::NOT_FOUND
    );
    let health = reqwest::get(backend.server.url("/healthz")).await.unwrap();
    assert_eq!(health.status(), StatusCode::OK, "the server lives on");

    // gc knows derived objects: none of them is an orphan.
    let before = all_keys(backend.store.as_ref()).await;
    let report = backend.server.gc_apply_now();
    assert!(
        report.contains("orphan objects found:        0"),
        "{report}"
    );
    assert_eq!(all_keys(backend.store.as_ref()).await, before);

    // Reprocess one variant: a new job, the object rewritten at the same key.
    let output = backend.server.run(&[
        "reprocess",
        "--event",
        &client.event,
        "--variant",
        "thumb-256",
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary = String::from_utf8(output.stdout).unwrap();
    assert!(summary.contains("4 of 4 media enqueued"), "{summary}");
    let photo = client.processed(&photo_id).await;
    assert_eq!(photo["processing"], "ready");
    let jobs = query(
        &backend.database,
        &format!(
            "SELECT state, COALESCE(variants, '') FROM processing_jobs WHERE media_id = '{photo_id}' ORDER BY created_at"
        ),
    );
    assert_eq!(jobs, ["done|", "done|thumb-256"]);
    assert_eq!(all_keys(backend.store.as_ref()).await, before, "same keys");

    // Deleting the media takes its derived objects along.
    client.delete(&photo_id).await;
    let after = all_keys(backend.store.as_ref()).await;
    assert!(
        keys_under(&after, original_key).is_empty(),
        "derived objects left behind: {after:?}"
    );
    assert_eq!(
        before.len() - after.len(),
        4,
        "the original and its 3 versions"
    );
    worker.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn derived_versions_sqlite_local() {
    let backend = local(&[("PROCESSING_WORKERS", "0")]);
    scenario(&backend).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn derived_versions_postgres_s3s_fs() {
    let Some(backend) = s3(&[("PROCESSING_WORKERS", "0")]).await else {
        return;
    };
    scenario(&backend).await;
}

/// Two server processes on one PostgreSQL database and one bucket, each with its workers:
/// images uploaded through both are each processed once, every derived version stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_share_the_queue_postgres_s3s_fs() {
    let Some(backend) = s3(&[("PROCESSING_WORKERS", "1")]).await else {
        return;
    };
    let second = Server::start(&backend.server.env, &backend.server.cwd);
    let first = Client::new(&backend.server).await;
    let other = first.on(&second);
    const IMAGES: usize = 200;
    let mut ids = Vec::new();
    for i in 0..IMAGES {
        let client = if i % 2 == 0 { &first } else { &other };
        let body = client
            .upload(&format!("p{i}.png"), &png(64 + i as u32, 48))
            .await;
        ids.push(body["id"].as_str().unwrap().to_owned());
    }
    for (i, id) in ids.iter().enumerate() {
        let media = first.processed(id).await;
        assert_eq!(media["processing"], "ready", "{media}");
        assert_eq!(media["width"], json!(64 + i));
        assert_eq!(variants(&media).len(), 3);
    }
    let jobs = query(
        &backend.database,
        "SELECT state, attempts, COUNT(*) FROM processing_jobs GROUP BY state, attempts",
    );
    assert_eq!(jobs, [format!("done|1|{IMAGES}")], "each job run once");
    let derived = query(
        &backend.database,
        "SELECT COUNT(*), COUNT(DISTINCT s3_key) FROM derived_versions",
    );
    assert_eq!(derived, [format!("{}|{}", IMAGES * 3, IMAGES * 3)]);
    let keys = all_keys(backend.store.as_ref()).await;
    assert_eq!(keys.len(), IMAGES * 4, "each original and its 3 versions");
    let distinct: BTreeSet<&String> = keys.iter().collect();
    assert_eq!(distinct.len(), keys.len());
}

/// A worker SIGKILLed in the middle of a job: once its lease lapses, another worker claims the
/// job again (a second attempt) and finishes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_workers_job_is_done_by_another_postgres_s3s_fs() {
    let Some(backend) = s3(&[
        ("PROCESSING_WORKERS", "0"),
        ("PROCESSING_JOB_LEASE", "3"),
        ("PROCESSING_JOB_TIMEOUT", "600"),
    ])
    .await
    else {
        return;
    };
    let fixtures = tempfile::tempdir().unwrap();
    let client = Client::new(&backend.server).await;
    // Large enough that an unoptimised build spends a while on it.
    let big = oriented_jpeg(fixtures.path(), 3000, 2000);
    let media = client.upload("big.jpg", &big).await;
    let id = media["id"].as_str().unwrap().to_owned();
    let state_sql = format!("SELECT state, attempts FROM processing_jobs WHERE media_id = '{id}'");

    let mut doomed = Worker::start(&backend.server);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let rows = query(&backend.database, &state_sql);
        if rows == ["running|1"] {
            break;
        }
        assert!(
            rows == ["queued|0"] && Instant::now() < deadline,
            "the job should be running its first attempt: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    doomed.kill();
    assert_eq!(query(&backend.database, &state_sql), ["running|1"]);

    let _rescuer = Worker::start(&backend.server);
    let media = client.processed(&id).await;
    assert_eq!(media["processing"], "ready", "{media}");
    assert_eq!(
        (&media["width"], &media["height"]),
        (&json!(2000), &json!(3000))
    );
    assert_eq!(query(&backend.database, &state_sql), ["done|2"]);
    let keys = all_keys(backend.store.as_ref()).await;
    assert_eq!(
        keys.len(),
        4,
        "the original and its 3 versions, once: {keys:?}"
    );
}

/// SIGTERM to `serve` while its worker renders: the server stops taking requests, the worker
/// finishes the job in hand and records it, then the process exits cleanly. Nothing is left
/// `running` to wait out its lease (an hour here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_finishes_the_job_in_hand_on_sigterm_postgres_s3s_fs() {
    let Some(mut backend) = s3(&[
        ("PROCESSING_WORKERS", "1"),
        ("PROCESSING_JOB_LEASE", "3600"),
        ("PROCESSING_JOB_TIMEOUT", "600"),
    ])
    .await
    else {
        return;
    };
    let fixtures = tempfile::tempdir().unwrap();
    let client = Client::new(&backend.server).await;
    let big = oriented_jpeg(fixtures.path(), 3000, 2000);
    let media = client.upload("big.jpg", &big).await;
    let id = media["id"].as_str().unwrap().to_owned();
    let state_sql = format!("SELECT state, attempts FROM processing_jobs WHERE media_id = '{id}'");
    let deadline = Instant::now() + Duration::from_secs(60);
    while query(&backend.database, &state_sql) != ["running|1"] {
        assert!(Instant::now() < deadline, "the job never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Queued behind it: once the signal has come, nothing more is claimed.
    let next = client.upload("next.jpg", &big).await;
    let next_sql = format!(
        "SELECT state, attempts FROM processing_jobs WHERE media_id = '{}'",
        next["id"].as_str().unwrap()
    );

    let status = backend
        .server
        .terminate(Duration::from_secs(120))
        .expect("serve should exit once the job in hand is done");
    assert!(status.success(), "{status:?}");
    assert_eq!(query(&backend.database, &state_sql), ["done|1"]);
    assert_eq!(query(&backend.database, &next_sql), ["queued|0"]);
    let versions = query(
        &backend.database,
        &format!("SELECT COUNT(*) FROM derived_versions WHERE media_id = '{id}'"),
    );
    assert_eq!(versions, ["3"]);
}
