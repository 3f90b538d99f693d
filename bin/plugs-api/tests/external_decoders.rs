//! HEIC, AVIF and video posters end to end (issue 12), against the real binary on SQLite + local
//! directory and PostgreSQL + s3s-fs: files made here with the real tools (`heif-enc` from
//! libheif-examples, `ffmpeg`'s test source), uploaded, decoded by the workers through
//! `heif-convert` and `ffmpeg` in child processes under `prlimit`, and their derived versions
//! read back with their pixel dimensions. Broken files park their job with the decoder's error
//! while the server lives on; a small address-space limit makes the decoder fail with an error
//! naming it; a server without the programs leaves these types at processing `none`, and
//! `reprocess` picks them up once the programs are there.
//!
//! The programs are needed: a test fails without them, unless PLUGS_TEST_ALLOW_MISSING_SERVERS=1
//! lets it skip (as for a missing test server).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod binary;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use binary::{Database, Server, pairs, query};
use image::{ImageFormat, Rgb, RgbImage};
use plugs_storage::{S3Config, S3Store};
use plugs_test_support::s3::S3TestServer;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// The programs these tests make their files with and the server decodes with.
const TOOLS: [&str; 5] = ["ffmpeg", "heif-enc", "heif-convert", "prlimit", "exiftool"];

/// Whether every program is on `PATH`; if not, fails the test or (when allowed) records the skip.
fn tools_present() -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let missing: Vec<&str> = TOOLS
        .into_iter()
        .filter(|tool| !std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
        .collect();
    if missing.is_empty() {
        return true;
    }
    plugs_test_support::missing_server(&format!(
        "external decoder tests need {} (apt-get install ffmpeg libheif-examples \
         libimage-exiftool-perl util-linux)",
        missing.join(", ")
    ));
    false
}

struct Backend {
    server: Server,
    database: Database,
    /// The server's `TMPDIR`, where its decoders' private directories go.
    tmp: PathBuf,
    _keep: Vec<Box<dyn std::any::Any>>,
}

/// A private `TMPDIR` for the server under `dir`, so the test can see what decoders leave.
fn server_tmp(dir: &Path) -> PathBuf {
    let tmp = dir.join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    tmp
}

fn local(extra: &[(&str, &str)]) -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let tmp = server_tmp(dir.path());
    let mut env = pairs(extra);
    env.push(("DATA_DIR".into(), data.to_string_lossy().into_owned()));
    env.push(("TMPDIR".into(), tmp.to_string_lossy().into_owned()));
    let server = Server::start(&env, dir.path());
    Backend {
        server,
        database: Database::Sqlite(data.join("plugs.db")),
        tmp,
        _keep: vec![Box::new(dir)],
    }
}

async fn s3(extra: &[(&str, &str)]) -> Option<Backend> {
    let s3 = S3TestServer::s3s()?;
    let db = plugs_test_support::pg::TestDatabase::create()?;
    let bucket = s3.unique_bucket("decoders");
    let mut config = S3Config::new(bucket.clone(), "us-east-1");
    config.endpoint_url = Some(s3.endpoint.clone());
    config.force_path_style = true;
    config.access_key_id = Some(s3.access_key.clone());
    config.secret_access_key = Some(s3.secret_key.clone());
    S3Store::new(config)
        .await
        .unwrap()
        .ensure_bucket()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tmp = server_tmp(dir.path());
    let mut env = pairs(extra);
    env.extend(pairs(&[
        ("DATA_DIR", dir.path().join("data").to_str().unwrap()),
        ("TMPDIR", tmp.to_str().unwrap()),
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
        database: Database::Postgres(db.url().to_owned()),
        tmp,
        _keep: vec![Box::new(dir), Box::new(db), Box::new(s3)],
    })
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
            .json(&json!({"title": "Decoders"}))
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

    /// A derived version's bytes, decoded.
    async fn variant_image(&self, id: &str, query: &str) -> image::DynamicImage {
        let response = self
            .http
            .get(self.media_url(id, &format!("/thumbnail?{query}")))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "?{query}");
        assert_eq!(response.headers()["content-type"], "image/jpeg");
        image::load_from_memory(&response.bytes().await.unwrap()).unwrap()
    }
}

/// The variants of a processed record, by name: (width, height).
fn variants(media: &Value) -> BTreeMap<String, (u64, u64)> {
    media["variants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["name"].as_str().unwrap().to_owned(),
                (v["width"].as_u64().unwrap(), v["height"].as_u64().unwrap()),
            )
        })
        .collect()
}

fn dims(media: &Value) -> (u64, u64) {
    (
        media["width"].as_u64().unwrap_or_default(),
        media["height"].as_u64().unwrap_or_default(),
    )
}

fn run(command: &mut Command) {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A picture whose left half is red and right half blue, so a turn would show.
fn two_tone(width: u32, height: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |x, _| {
        if x < width / 2 {
            Rgb([220, 20, 20])
        } else {
            Rgb([20, 20, 220])
        }
    })
}

/// A HEIC (or with `avif`, an AVIF) of a `width` x `height` picture, made by `heif-enc`.
fn heif(dir: &Path, width: u32, height: u32, avif: bool) -> Vec<u8> {
    let png = dir.join(format!("src-{width}x{height}.png"));
    two_tone(width, height)
        .save_with_format(&png, ImageFormat::Png)
        .unwrap();
    let out = dir.join(format!(
        "{width}x{height}.{}",
        if avif { "avif" } else { "heic" }
    ));
    let mut command = Command::new("heif-enc");
    command.args(["-q", "60"]);
    if avif {
        command.arg("--avif");
    }
    run(command.arg("-o").arg(&out).arg(&png));
    std::fs::read(out).unwrap()
}

/// A HEIC made from a JPEG tagged with EXIF orientation 6: `heif-enc` stores the pixels as they
/// are, with no rotation property, and copies the EXIF block. A HEIF reader shows it unturned
/// (only the HEIF's own properties turn an image); `heif-convert` copies the tag into its PNG.
fn heic_with_exif_orientation(dir: &Path, width: u32, height: u32) -> Vec<u8> {
    let jpeg = dir.join("tagged.jpg");
    two_tone(width, height)
        .save_with_format(&jpeg, ImageFormat::Jpeg)
        .unwrap();
    run(Command::new("exiftool")
        .args(["-q", "-overwrite_original", "-n", "-Orientation=6"])
        .arg(&jpeg));
    let out = dir.join("tagged.heic");
    run(Command::new("heif-enc")
        .args(["-q", "60", "-o"])
        .arg(&out)
        .arg(&jpeg));
    std::fs::read(out).unwrap()
}

/// An MP4 (H.264) of ffmpeg's test pattern, `seconds` long.
fn mp4(dir: &Path, width: u32, height: u32, seconds: f32) -> Vec<u8> {
    let out = dir.join(format!("clip-{width}x{height}-{seconds}.mp4"));
    run(Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
        ])
        .arg(format!(
            "testsrc=size={width}x{height}:rate=10:duration={seconds}"
        ))
        .args(["-pix_fmt", "yuv420p", "-c:v", "libx264"])
        .arg(&out));
    std::fs::read(out).unwrap()
}

/// The job of a media: `state|attempts|last_error`.
fn job_of(database: &Database, id: &str) -> String {
    let rows = query(
        database,
        &format!(
            "SELECT state, attempts, COALESCE(last_error, '') FROM processing_jobs \
             WHERE media_id = '{id}'"
        ),
    );
    assert_eq!(rows.len(), 1, "one job for {id}: {rows:?}");
    rows[0].clone()
}

async fn readyz(server: &Server) -> Value {
    let response = reqwest::get(server.url("/readyz")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

/// HEIC, AVIF and MP4 processed; a clip shorter than the poster's offset; broken files parked.
async fn scenario(backend: &Backend) {
    let fixtures = tempfile::tempdir().unwrap();
    let dir = fixtures.path();
    let client = Client::new(&backend.server).await;

    let ready = readyz(&backend.server).await;
    for decoder in ready["details"]["external_decoders"].as_array().unwrap() {
        assert_eq!(decoder["found"], true, "{ready}");
        assert!(
            decoder.get("version").is_none(),
            "no version to strangers: {ready}"
        );
    }
    let types = &ready["details"]["processable_types"];
    for mime in [
        "image/jpeg",
        "image/heic",
        "image/avif",
        "video/mp4",
        "video/webm",
    ] {
        assert!(
            types.as_array().unwrap().contains(&json!(mime)),
            "{mime}: {ready}"
        );
    }

    let heic = client
        .upload("IMG_0001.HEIC", &heif(dir, 640, 480, false))
        .await;
    assert_eq!(heic["content_type"], "image/heic");
    assert_eq!(heic["processing"], "pending", "enqueued: {heic}");
    let tagged = client
        .upload("tagged.heic", &heic_with_exif_orientation(dir, 640, 480))
        .await;
    let avif = client
        .upload("photo.avif", &heif(dir, 512, 320, true))
        .await;
    assert_eq!(avif["content_type"], "image/avif");
    let video = client.upload("clip.mp4", &mp4(dir, 320, 240, 3.0)).await;
    assert_eq!(video["content_type"], "video/mp4");
    assert_eq!(video["processing"], "pending", "enqueued: {video}");
    let short = client.upload("short.mp4", &mp4(dir, 160, 120, 0.3)).await;

    // Broken files: a truncated MP4 (its index, written last, is gone), a truncated HEIC, and an
    // MP4 header followed by garbage. Each passes the upload's sniffing.
    let whole = mp4(dir, 320, 240, 2.0);
    let cut_mp4 = client.upload("cut.mp4", &whole[..whole.len() / 3]).await;
    let whole = heif(dir, 320, 240, false);
    let cut_heic = client
        .upload("cut.heic", &whole[..whole.len() * 2 / 3])
        .await;
    let mut garbage = whole_mp4_head(&mp4(dir, 64, 48, 1.0));
    garbage.extend((0..200_000_u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    let garbage = client.upload("garbage.mp4", &garbage).await;

    let id = |media: &Value| media["id"].as_str().unwrap().to_owned();

    let heic = client.processed(&id(&heic)).await;
    assert_eq!(heic["processing"], "ready", "{heic}");
    assert_eq!(dims(&heic), (640, 480));
    let made = variants(&heic);
    assert_eq!(
        made,
        BTreeMap::from([
            ("display".into(), (640, 480)),
            ("thumb-1024".into(), (640, 480)),
            ("thumb-256".into(), (256, 192)),
        ])
    );
    let thumb = client.variant_image(&id(&heic), "size=256").await.to_rgb8();
    assert_eq!(thumb.dimensions(), (256, 192));
    let (left, right) = (thumb.get_pixel(30, 96), thumb.get_pixel(226, 96));
    assert!(
        left[0] > 150 && left[2] < 100,
        "left should be red: {left:?}"
    );
    assert!(
        right[2] > 150 && right[0] < 100,
        "right should be blue: {right:?}"
    );

    // The EXIF orientation heif-convert copies is not applied on top of its upright pixels.
    let tagged = client.processed(&id(&tagged)).await;
    assert_eq!(tagged["processing"], "ready", "{tagged}");
    assert_eq!(dims(&tagged), (640, 480));
    assert_eq!(variants(&tagged)["thumb-256"], (256, 192));

    let avif = client.processed(&id(&avif)).await;
    assert_eq!(avif["processing"], "ready", "{avif}");
    assert_eq!(dims(&avif), (512, 320));
    assert_eq!(variants(&avif)["thumb-256"], (256, 160));
    assert_eq!(variants(&avif)["display"], (512, 320));

    let video = client.processed(&id(&video)).await;
    assert_eq!(video["processing"], "ready", "{video}");
    assert_eq!(dims(&video), (320, 240), "the frame's dimensions");
    assert_eq!(
        variants(&video),
        BTreeMap::from([
            ("poster".into(), (320, 240)),
            ("thumb-1024".into(), (320, 240)),
            ("thumb-256".into(), (256, 192)),
        ])
    );
    let poster = client.variant_image(&id(&video), "variant=poster").await;
    assert_eq!((poster.width(), poster.height()), (320, 240));
    let thumb = client.variant_image(&id(&video), "size=256").await;
    assert_eq!((thumb.width(), thumb.height()), (256, 192));

    // Shorter than the poster's offset: its first frame.
    let short = client.processed(&id(&short)).await;
    assert_eq!(short["processing"], "ready", "{short}");
    assert_eq!(variants(&short)["poster"], (160, 120));

    for (media, program) in [
        (&cut_mp4, "ffmpeg"),
        (&cut_heic, "heif-convert"),
        (&garbage, "ffmpeg"),
    ] {
        let media = client.processed(&id(media)).await;
        assert_eq!(media["processing"], "failed", "{media}");
        assert_eq!(media["variants"], json!([]));
        let job = job_of(&backend.database, &id(&media));
        assert!(
            job.starts_with("parked|1|") && job.contains(program),
            "parked at once with {program}'s error: {job}"
        );
    }
    let health = reqwest::get(backend.server.url("/healthz")).await.unwrap();
    assert_eq!(health.status(), StatusCode::OK, "the server lives on");

    // Every decoder's private directory is gone, and only those were made.
    let left: Vec<_> = std::fs::read_dir(&backend.tmp)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    assert!(left.is_empty(), "temporary files left: {left:?}");
}

/// The `ftyp` box of an MP4 (what sniffing reads), without the rest.
fn whole_mp4_head(mp4: &[u8]) -> Vec<u8> {
    let size = u32::from_be_bytes(mp4[..4].try_into().unwrap()) as usize;
    assert_eq!(&mp4[4..8], b"ftyp");
    mp4[..size].to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heic_avif_and_video_posters_sqlite_local() {
    if !tools_present() {
        return;
    }
    let backend = local(&[("PROCESSING_WORKERS", "1")]);
    scenario(&backend).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heic_avif_and_video_posters_postgres_s3s_fs() {
    if !tools_present() {
        return;
    }
    let Some(backend) = s3(&[("PROCESSING_WORKERS", "1")]).await else {
        return;
    };
    scenario(&backend).await;
}

/// With 64 MiB of address space, `heif-convert` still decodes a small HEIC but runs out on a
/// 12-megapixel one, and `ffmpeg` cannot even load its libraries: both jobs are parked with an
/// error that names the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_address_space_limit_stops_the_decoder_sqlite_local() {
    if !tools_present() {
        return;
    }
    let limit = 64 << 20;
    let backend = local(&[
        ("PROCESSING_WORKERS", "1"),
        ("PROCESSING_CHILD_MEMORY", &limit.to_string()),
    ]);
    let fixtures = tempfile::tempdir().unwrap();
    let client = Client::new(&backend.server).await;
    let small = client
        .upload("small.heic", &heif(fixtures.path(), 320, 240, false))
        .await;
    let large = client
        .upload("large.heic", &heif(fixtures.path(), 4000, 3000, false))
        .await;
    let video = client
        .upload("clip.mp4", &mp4(fixtures.path(), 320, 240, 2.0))
        .await;
    let id = |media: &Value| media["id"].as_str().unwrap().to_owned();

    let small = client.processed(&id(&small)).await;
    assert_eq!(small["processing"], "ready", "under the limit: {small}");
    assert_eq!(variants(&small)["thumb-256"], (256, 192));
    for (media, program) in [(&large, "heif-convert"), (&video, "ffmpeg")] {
        let media = client.processed(&id(media)).await;
        assert_eq!(media["processing"], "failed", "{media}");
        let job = job_of(&backend.database, &id(&media));
        assert!(
            job.starts_with("parked|1|")
                && job.contains(program)
                && job.contains(&format!("{limit} bytes of address space")),
            "parked with an error naming the limit: {job}"
        );
    }
    let health = reqwest::get(backend.server.url("/healthz")).await.unwrap();
    assert_eq!(health.status(), StatusCode::OK, "the server lives on");
}

/// A server whose `PATH` has none of the programs: HEIC and video get processing `none` (no job,
/// not failed), `/readyz` says what is missing. The same data served with the programs:
/// `reprocess` enqueues them, and they are made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_programs_these_types_have_none_until_reprocessed_sqlite_local() {
    if !tools_present() {
        return;
    }
    let fixtures = tempfile::tempdir().unwrap();
    let mut backend = local(&[("PROCESSING_WORKERS", "1"), ("PATH", "/nonexistent")]);
    let ready = readyz(&backend.server).await;
    for decoder in ready["details"]["external_decoders"].as_array().unwrap() {
        assert_eq!(decoder["found"], false, "{ready}");
    }
    let types = ready["details"]["processable_types"].as_array().unwrap();
    assert!(types.contains(&json!("image/png")));
    assert!(!types.contains(&json!("image/heic")) && !types.contains(&json!("video/mp4")));

    let client = Client::new(&backend.server).await;
    let heic = client
        .upload("a.heic", &heif(fixtures.path(), 320, 240, false))
        .await;
    let video = client
        .upload("a.mp4", &mp4(fixtures.path(), 320, 240, 2.0))
        .await;
    let id = |media: &Value| media["id"].as_str().unwrap().to_owned();
    for media in [&heic, &video] {
        assert_eq!(media["processing"], "none", "{media}");
        let media = client.media(&id(media)).await;
        assert_eq!(media["processing"], "none", "{media}");
        let jobs = query(
            &backend.database,
            &format!(
                "SELECT COUNT(*) FROM processing_jobs WHERE media_id = '{}'",
                id(&media)
            ),
        );
        assert_eq!(jobs, ["0"], "no job without the program");
    }

    // The same data directory, now with the programs on PATH.
    let mut env = backend.server.env.clone();
    env.retain(|(k, _)| k != "PATH");
    let cwd = backend.server.cwd.clone();
    backend.server.kill();
    let server = Server::start(&env, &cwd);
    let output = server.run(&["reprocess", "--event", &client.event]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary = String::from_utf8(output.stdout).unwrap();
    assert!(summary.contains("2 of 2 media enqueued"), "{summary}");
    let client = client.on(&server);
    let heic = client.processed(&id(&heic)).await;
    assert_eq!(heic["processing"], "ready", "{heic}");
    assert_eq!(variants(&heic)["display"], (320, 240));
    let video = client.processed(&id(&video)).await;
    assert_eq!(video["processing"], "ready", "{video}");
    assert_eq!(variants(&video)["poster"], (320, 240));
}
