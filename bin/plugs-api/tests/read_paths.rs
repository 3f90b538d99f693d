//! The read paths of issue 15 end to end, on the real binary: large downloads read ahead from the
//! store in ranges (small settings here, so that a file of a few MiB spans many ranges and
//! several downloads at once contend for the memory budget) and deliver exactly the uploaded
//! bytes, whole and for client ranges, on PostgreSQL with s3s-fs and with a local directory; the
//! budget shows in `/metrics`; and list pages answer an `ETag` and 304 on `If-None-Match`. Also
//! the budget of uploads' part buffers on S3 (`UPLOAD_MEMORY_BUDGET`), whose size and use show
//! in `/metrics` while an upload is under way.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod binary;
mod common;

use binary::{Server, pairs};
use common::{PNG, Part, multipart, multipart_content_type};
use plugs_storage::{S3Config, S3Store};
use plugs_test_support::s3::S3TestServer;
use reqwest::{StatusCode, header};
use serde_json::{Value, json};

/// 1 MiB ranges, 3 in flight, and a budget of two ranges for the whole server: a download
/// wants four ranges at once, so concurrent downloads wait for budget.
const READ_AHEAD: &[(&str, &str)] = &[
    ("MAX_FILE_SIZE", "33554432"),
    ("DOWNLOAD_RANGE_SIZE", "1048576"),
    ("DOWNLOAD_RANGES_IN_FLIGHT", "3"),
    ("DOWNLOAD_MEMORY_BUDGET", "2097152"),
];

/// A PNG head, then bytes that differ from their neighbours, so any offset error shows.
fn payload(len: usize) -> Vec<u8> {
    let mut bytes = PNG.to_vec();
    bytes.extend((PNG.len()..len).map(|i| (i % 251) as u8 ^ (i / 251) as u8));
    bytes
}

struct Client {
    http: reqwest::Client,
    token: String,
    base: String,
}

impl Client {
    fn new(server: &Server) -> Self {
        Self {
            http: reqwest::Client::new(),
            token: server.token("reader"),
            base: server.url("/api/v1"),
        }
    }

    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }

    async fn event(&self) -> String {
        let response = self
            .http
            .post(format!("{}/events", self.base))
            .bearer_auth(&self.token)
            .json(&json!({ "title": "read paths" }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        response.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    async fn upload(&self, event: &str, bytes: &[u8]) -> String {
        let response = self
            .http
            .post(format!("{}/events/{event}/media", self.base))
            .bearer_auth(&self.token)
            .header(header::CONTENT_TYPE, multipart_content_type())
            .body(multipart(&[Part::File(
                "file",
                "big.png",
                Some("image/png"),
                bytes,
            )]))
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_str().unwrap().to_owned()
    }
}

async fn downloads_are_the_uploaded_bytes(server: &Server) {
    let client = Client::new(server);
    let event = client.event().await;
    // 9 MiB and a bit: nine full ranges and a short one.
    let bytes = payload(9 * 1024 * 1024 + 12_345);
    let media = client.upload(&event, &bytes).await;
    let base = format!("/events/{event}/media/{media}");

    for route in ["download", "stream"] {
        let response = client.get(&format!("{base}/{route}")).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{route}");
        assert_eq!(
            response.content_length(),
            Some(bytes.len() as u64),
            "{route}"
        );
        assert!(
            response.bytes().await.unwrap() == bytes,
            "{route}: the bytes"
        );
    }

    let len = bytes.len();
    for (range, expected) in [
        ("bytes=100-".to_owned(), 100..len),
        ("bytes=-3000000".to_owned(), len - 3_000_000..len),
        ("bytes=1048570-5242890".to_owned(), 1_048_570..5_242_891),
        (format!("bytes={}-{}", len - 10, len + 1000), len - 10..len),
    ] {
        let response = client
            .get(&format!("{base}/stream"))
            .header(header::RANGE, &range)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(
            response.headers()[header::CONTENT_RANGE],
            format!("bytes {}-{}/{len}", expected.start, expected.end - 1).as_str(),
            "{range}"
        );
        assert!(
            response.bytes().await.unwrap() == bytes[expected],
            "{range}: the bytes"
        );
    }
    let beyond = client
        .get(&format!("{base}/stream"))
        .header(header::RANGE, format!("bytes={len}-"))
        .send()
        .await
        .unwrap();
    assert_eq!(beyond.status(), StatusCode::RANGE_NOT_SATISFIABLE);

    // Four downloads at once, each wanting twice the server's whole budget: all complete.
    let downloads = (0..4).map(|_| async {
        let response = client
            .get(&format!("{base}/download"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.bytes().await.unwrap()
    });
    for body in futures::future::join_all(downloads).await {
        assert!(body == bytes, "a concurrent download's bytes");
    }

    let metrics = reqwest::get(server.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("plugs_download_buffer_budget_bytes 2097152"),
        "{metrics}"
    );
    assert!(
        metrics.contains("plugs_download_buffer_bytes 0"),
        "every share given back once the downloads are done: {metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_and_s3s_fs_downloads_read_ahead() {
    let Some(s3) = S3TestServer::s3s() else {
        return;
    };
    let Some(db) = plugs_test_support::pg::TestDatabase::create() else {
        return;
    };
    let bucket = s3.unique_bucket("readahead");
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
    let mut env = pairs(READ_AHEAD);
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
    downloads_are_the_uploaded_bytes(&server).await;
}

/// The value of the metric `name` in a scrape of `server`'s `/metrics`.
async fn metric(server: &Server, name: &str) -> Option<u64> {
    let text = reqwest::get(server.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_and_s3s_fs_upload_part_buffers_show_in_metrics() {
    let Some(s3) = S3TestServer::s3s() else {
        return;
    };
    let Some(db) = plugs_test_support::pg::TestDatabase::create() else {
        return;
    };
    let bucket = s3.unique_bucket("upload-budget");
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
    let part: u64 = 8 * 1024 * 1024;
    let budget = (2 * part).to_string();
    let env = pairs(&[
        ("DATA_DIR", dir.path().join("data").to_str().unwrap()),
        ("DATABASE_URL", db.url()),
        ("S3_BUCKET_NAME", &bucket),
        ("S3_ENDPOINT_URL", &s3.endpoint),
        ("S3_FORCE_PATH_STYLE", "true"),
        ("AWS_ACCESS_KEY_ID", &s3.access_key),
        ("AWS_SECRET_ACCESS_KEY", &s3.secret_key),
        ("MAX_FILE_SIZE", "33554432"),
        ("UPLOAD_MEMORY_BUDGET", &budget),
        ("PROCESSING_WORKERS", "0"),
    ]);
    let server = Server::start(&env, dir.path());
    assert_eq!(
        metric(&server, "plugs_upload_buffer_budget_bytes").await,
        Some(2 * part)
    );
    assert_eq!(metric(&server, "plugs_upload_buffer_bytes").await, Some(0));

    // A form whose file is two parts and a bit, sent up to 1 MiB into the file, then held.
    let client = Client::new(&server);
    let event = client.event().await;
    let bytes = payload(2 * part as usize + 4321);
    let form = multipart(&[Part::File("file", "big.png", Some("image/png"), &bytes)]);
    let held_at = form.len() - bytes.len() + 1024 * 1024;
    let (sender, receiver) = futures::channel::mpsc::unbounded::<Result<Vec<u8>, std::io::Error>>();
    sender.unbounded_send(Ok(form[..held_at].to_vec())).unwrap();
    let upload = tokio::spawn({
        let request = client
            .http
            .post(format!("{}/events/{event}/media", client.base))
            .bearer_auth(&client.token)
            .header(header::CONTENT_TYPE, multipart_content_type())
            .body(reqwest::Body::wrap_stream(receiver));
        async move { request.send().await.unwrap() }
    });
    // The part being filled holds more than 256 KiB: it has taken one part's share.
    let started = std::time::Instant::now();
    loop {
        let in_use = metric(&server, "plugs_upload_buffer_bytes").await;
        if in_use == Some(part) {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "the upload's part buffer never showed: {in_use:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    sender.unbounded_send(Ok(form[held_at..].to_vec())).unwrap();
    drop(sender);
    let response = upload.await.unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let media = body["id"].as_str().unwrap();
    let stored = client
        .get(&format!("/events/{event}/media/{media}/download"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(stored == bytes, "the uploaded bytes");
    assert_eq!(
        metric(&server, "plugs_upload_buffer_bytes").await,
        Some(0),
        "every share given back once the upload is done"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_and_local_directory_downloads_read_ahead() {
    let Some(db) = plugs_test_support::pg::TestDatabase::create() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut env = pairs(READ_AHEAD);
    env.extend(pairs(&[
        ("DATA_DIR", dir.path().join("data").to_str().unwrap()),
        ("DATABASE_URL", db.url()),
    ]));
    let server = Server::start(&env, dir.path());
    downloads_are_the_uploaded_bytes(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_pages_answer_an_etag_and_304_until_they_change() {
    let Some(db) = plugs_test_support::pg::TestDatabase::create() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let env = pairs(&[
        ("DATA_DIR", dir.path().join("data").to_str().unwrap()),
        ("DATABASE_URL", db.url()),
        // No background processing: the page would change when a worker gets to the upload.
        ("PROCESSING_WORKERS", "0"),
    ]);
    let server = Server::start(&env, dir.path());
    let client = Client::new(&server);
    let event = client.event().await;
    client.upload(&event, &payload(1000)).await;
    let list = format!("/events/{event}/media?limit=10");

    let first = client.get(&list).send().await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let etag = first.headers()[header::ETAG].to_str().unwrap().to_owned();
    assert!(etag.starts_with('"') && etag.len() > 2, "{etag}");
    let page: Value = first.json().await.unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 1);

    let again = client
        .get(&list)
        .header(header::IF_NONE_MATCH, &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(again.headers()[header::ETAG], etag.as_str());
    assert!(again.bytes().await.unwrap().is_empty());

    // Another page of the same listing is another representation.
    let other = client
        .get(&format!("/events/{event}/media?limit=10&kind=video"))
        .header(header::IF_NONE_MATCH, &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::OK);

    // A new upload changes the page: the old tag no longer matches.
    client.upload(&event, &payload(2000)).await;
    let changed = client
        .get(&list)
        .header(header::IF_NONE_MATCH, &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), StatusCode::OK);
    assert_ne!(changed.headers()[header::ETAG], etag.as_str());
    let page: Value = changed.json().await.unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
}
