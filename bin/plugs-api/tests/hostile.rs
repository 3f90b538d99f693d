//! Hostile input against the real binary: the embedded default (SQLite + local directory) in a
//! temporary `DATA_DIR`, spoken to over raw sockets so that requests can be malformed, cut short
//! or sent without their body. One test per row of the table in docs/RELIABILITY.md; each checks
//! the status, that the body is `application/problem+json`, and, where an upload is refused,
//! that neither the object directory nor the database kept anything.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod binary;
mod common;

use std::io::Write as _;
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use binary::{
    Database, JWT_SECRET, RawResponse, Server, exchange, files_under, get_request, media_rows,
    pairs, post_head, read_response,
};
use common::{BOUNDARY, PNG, Part, multipart, multipart_content_type, png_of_len};
use serde_json::{Value, json};
use sha2::Digest as _;

/// Small, so oversize cases stay cheap.
const MAX_FILE: u64 = 64 * 1024;

struct Fixture {
    server: Server,
    data: PathBuf,
    alice: String,
    event: String,
    _dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        Self::with_env(&[])
    }

    /// A fixture whose server also has these settings.
    fn with_env(extra: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let mut env = pairs(&[
            ("DATA_DIR", data.to_str().unwrap()),
            ("MAX_FILE_SIZE", &MAX_FILE.to_string()),
        ]);
        env.extend(pairs(extra));
        let server = Server::start(&env, dir.path());
        let alice = server.token("alice");
        let response = send(
            &server,
            "POST",
            "/api/v1/events",
            Some(&alice),
            Some("application/json"),
            br#"{"title":"Launch"}"#,
        );
        assert_eq!(response.status, 201);
        let event = response.json()["id"].as_str().unwrap().to_owned();
        Self {
            server,
            data,
            alice,
            event,
            _dir: dir,
        }
    }

    fn media_path(&self) -> String {
        format!("/api/v1/events/{}/media", self.event)
    }

    fn objects(&self) -> PathBuf {
        self.data.join("objects")
    }

    fn database(&self) -> Database {
        Database::Sqlite(self.data.join("plugs.db"))
    }

    fn upload(&self, body: &[u8]) -> RawResponse {
        send(
            &self.server,
            "POST",
            &self.media_path(),
            Some(&self.alice),
            Some(&multipart_content_type()),
            body,
        )
    }

    fn upload_png(&self, name: &str, bytes: &[u8]) -> Value {
        let response = self.upload(&multipart(&[Part::File(
            "file",
            name,
            Some("image/png"),
            bytes,
        )]));
        assert_eq!(
            response.status,
            201,
            "{}",
            String::from_utf8_lossy(&response.body)
        );
        response.json()
    }

    /// The refused upload left no object (not even a temporary file) and no record of any status.
    fn assert_nothing_stored(&self) {
        assert_eq!(
            files_under(&self.objects()),
            Vec::<String>::new(),
            "objects"
        );
        assert_eq!(media_rows(&self.database()), vec![], "event_media rows");
    }
}

/// One request, `Connection: close`, with a `Content-Length` body.
fn send(
    server: &Server,
    method: &str,
    path: &str,
    token: Option<&str>,
    content_type: Option<&str>,
    body: &[u8],
) -> RawResponse {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    if let Some(token) = token {
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    if let Some(content_type) = content_type {
        head.push_str(&format!("Content-Type: {content_type}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut request = head.into_bytes();
    request.extend_from_slice(body);
    exchange(server.addr, &request)
}

fn get(server: &Server, path: &str, token: Option<&str>, headers: &[(&str, &str)]) -> RawResponse {
    let mut request = get_request(path, token);
    request.truncate(request.len() - 2);
    for (name, value) in headers {
        request.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    request.extend_from_slice(b"\r\n");
    exchange(server.addr, &request)
}

/// The response is a problem-details body with this status.
#[track_caller]
fn assert_problem(response: &RawResponse, status: u16) -> Value {
    assert_eq!(
        response.status,
        status,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    assert_eq!(
        response.header("content-type"),
        Some("application/problem+json")
    );
    let body = response.json();
    assert_eq!(body["status"], status);
    assert!(body["type"].is_string() && body["title"].is_string() && body["detail"].is_string());
    body
}

fn jwt(header: &Value, claims: &Value, secret: Option<&str>) -> String {
    let encode = |v: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap());
    let signing_input = format!("{}.{}", encode(header), encode(claims));
    let signature = secret.map_or_else(String::new, |secret| {
        URL_SAFE_NO_PAD.encode(hmac_sha256(secret.as_bytes(), signing_input.as_bytes()))
    });
    format!("{signing_input}.{signature}")
}

/// HMAC-SHA256 (RFC 2104) over sha2, to sign tokens and presigned URLs the way the server does.
fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut block = [0_u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&sha2::Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
    let mut inner = sha2::Sha256::new();
    inner.update(pad(0x36));
    inner.update(message);
    let mut outer = sha2::Sha256::new();
    outer.update(pad(0x5c));
    outer.update(inner.finalize());
    outer.finalize().to_vec()
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

#[test]
fn oversize_body_is_refused_with_413_before_the_body_is_sent() {
    let f = Fixture::new();
    // Announce a gibibyte and send none of it: the answer must come from the headers alone.
    let mut stream = TcpStream::connect(f.server.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream
        .write_all(&post_head(
            &f.media_path(),
            &f.alice,
            &multipart_content_type(),
            1 << 30,
        ))
        .unwrap();
    let response = read_response(&mut stream).expect("an answer without the body");
    assert_problem(&response, 413);
    f.assert_nothing_stored();
}

#[test]
fn oversize_body_without_a_length_is_cut_off_at_the_limit() {
    let f = Fixture::new();
    // Chunked, so only counting the bytes can catch it.
    let body = multipart(&[Part::File(
        "file",
        "big.png",
        Some("image/png"),
        &png_of_len(MAX_FILE as usize + 1),
    )]);
    let mut request = format!(
        "POST {} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nAuthorization: Bearer {}\r\n\
         Content-Type: {}\r\nTransfer-Encoding: chunked\r\n\r\n",
        f.media_path(),
        f.alice,
        multipart_content_type()
    )
    .into_bytes();
    for chunk in body.chunks(8192) {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    assert_problem(&exchange(f.server.addr, &request), 413);
    f.assert_nothing_stored();
}

#[test]
fn missing_file_field_is_422() {
    let f = Fixture::new();
    let response = f.upload(&multipart(&[Part::Text("title", "no file")]));
    assert_problem(&response, 422);
    f.assert_nothing_stored();
}

#[test]
fn two_file_fields_are_422_and_the_first_is_not_kept() {
    let f = Fixture::new();
    let response = f.upload(&multipart(&[
        Part::File("file", "a.png", Some("image/png"), PNG),
        Part::File("file", "b.png", Some("image/png"), PNG),
    ]));
    assert_problem(&response, 422);
    f.assert_nothing_stored();
}

#[test]
fn empty_file_is_422() {
    let f = Fixture::new();
    let response = f.upload(&multipart(&[Part::File(
        "file",
        "empty.png",
        Some("image/png"),
        b"",
    )]));
    assert_problem(&response, 422);
    f.assert_nothing_stored();
}

#[test]
fn truncated_multipart_is_400_and_keeps_nothing() {
    let f = Fixture::new();
    let whole = multipart(&[Part::File(
        "file",
        "cut.png",
        Some("image/png"),
        &png_of_len(40 * 1024),
    )]);
    // Cut in the middle of the file's bytes: no closing boundary ever comes.
    let cut = &whole[..whole.len() / 2];
    let response = f.upload(cut);
    assert_problem(&response, 400);
    f.assert_nothing_stored();
}

#[test]
fn a_form_cut_after_the_whole_file_is_400_and_keeps_nothing() {
    let f = Fixture::new();
    let whole = multipart(&[
        Part::File("file", "cut.png", Some("image/png"), &png_of_len(20 * 1024)),
        Part::Text("title", "never finished"),
    ]);
    // The file arrived whole and was stored; the form ends inside the title that follows it.
    let cut = &whole[..whole.len() - 12];
    let response = f.upload(cut);
    assert_problem(&response, 400);
    f.assert_nothing_stored();
}

#[test]
fn spoofed_type_is_415() {
    let f = Fixture::new();
    // Declared and named a PNG; the bytes are a PDF.
    let pdf = b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n";
    let response = f.upload(&multipart(&[Part::File(
        "file",
        "photo.png",
        Some("image/png"),
        pdf,
    )]));
    assert_problem(&response, 415);
    // A Windows executable named and declared a PDF.
    let exe = [b"MZ\x90\x00\x03\x00\x00\x00".as_slice(), &[0_u8; 120]].concat();
    let response = f.upload(&multipart(&[Part::File(
        "file",
        "invoice.pdf",
        Some("application/pdf"),
        &exe,
    )]));
    assert_problem(&response, 415);
    f.assert_nothing_stored();
}

#[test]
fn polyglot_file_is_stored_as_what_it_sniffs_as_and_never_served_as_html() {
    let f = Fixture::new();
    let polyglot = [
        PNG,
        b"<html><script>alert(document.cookie)</script></html>".as_slice(),
    ]
    .concat();
    // Claimed as HTML, it is refused: the bytes are a PNG.
    let response = f.upload(&multipart(&[Part::File(
        "file",
        "page.html",
        Some("text/html"),
        &polyglot,
    )]));
    assert_problem(&response, 415);
    f.assert_nothing_stored();
    // Claimed as a PNG it is one, and it goes back out as one, never sniffed into HTML.
    let media = f.upload_png("page.png", &polyglot);
    assert_eq!(media["content_type"], "image/png");
    let location = format!("{}/{}", f.media_path(), media["id"].as_str().unwrap());
    for (route, disposition) in [("stream", "inline"), ("download", "attachment")] {
        let response = get(
            &f.server,
            &format!("{location}/{route}"),
            Some(&f.alice),
            &[],
        );
        assert_eq!(response.status, 200);
        assert_eq!(response.header("content-type"), Some("image/png"));
        assert_eq!(response.header("x-content-type-options"), Some("nosniff"));
        assert!(
            response
                .header("content-disposition")
                .unwrap()
                .starts_with(disposition),
            "{route}"
        );
        assert_eq!(response.body, polyglot);
    }
}

#[test]
fn path_traversal_in_filename_is_reduced_to_a_name_and_never_reaches_the_key() {
    let f = Fixture::new();
    let media = f.upload_png("../../../../../../tmp/evil/../../etc/passwd.png", PNG);
    assert_eq!(media["original_filename"], "passwd.png");
    let key = media["s3_key"].as_str().unwrap();
    assert!(
        key.starts_with(&format!("events/{}/media/", f.event)),
        "{key}"
    );
    assert!(!key.contains("passwd") && !key.contains(".."), "{key}");
    // The only files written are the object and its metadata, inside the store's directory.
    assert_eq!(
        files_under(&f.objects()),
        vec![format!("meta/{key}"), format!("objects/{key}")]
    );
    let escaped = f.data.parent().unwrap();
    assert!(!escaped.join("etc").exists() && !escaped.join("tmp").exists());
}

#[test]
fn nul_and_control_bytes_in_filename_never_reach_the_record_or_the_key() {
    let f = Fixture::new();
    // A raw NUL inside the part header: the multipart parser refuses the header outright.
    let body = multipart(&[Part::File("file", "a\0b.png", Some("image/png"), PNG)]);
    assert_problem(&f.upload(&body), 400);
    f.assert_nothing_stored();
    // Percent-encoded control bytes are just characters of the name; tabs are dropped.
    let media = f.upload_png("tab\there%00.png", PNG);
    assert_eq!(media["original_filename"], "tabhere%00.png");
    assert!(!media["s3_key"].as_str().unwrap().contains("here"));
}

#[test]
fn huge_title_is_422() {
    let f = Fixture::new();
    let title = "t".repeat(201);
    let response = f.upload(&multipart(&[
        Part::Text("title", &title),
        Part::File("file", "a.png", Some("image/png"), PNG),
    ]));
    assert_problem(&response, 422);
    // Beyond the text-field limit (16 KiB) the field is not even read whole.
    let title = "t".repeat(20 * 1024);
    let response = f.upload(&multipart(&[
        Part::Text("title", &title),
        Part::File("file", "a.png", Some("image/png"), PNG),
    ]));
    assert_problem(&response, 422);
    // A body larger than the file limit plus room for fields is refused on its length.
    let title = "t".repeat(1 << 20);
    let response = f.upload(&multipart(&[
        Part::Text("title", &title),
        Part::File("file", "a.png", Some("image/png"), PNG),
    ]));
    assert_problem(&response, 413);
    f.assert_nothing_stored();
}

#[test]
fn huge_tag_list_is_422() {
    let f = Fixture::new();
    let many: Vec<String> = (0..21).map(|i| format!("tag{i}")).collect();
    let response = f.upload(&multipart(&[
        Part::Text("tags", &many.join(",")),
        Part::File("file", "a.png", Some("image/png"), PNG),
    ]));
    assert_problem(&response, 422);
    let long_tag = "x".repeat(51);
    let response = f.upload(&multipart(&[
        Part::Text("tags", &long_tag),
        Part::File("file", "a.png", Some("image/png"), PNG),
    ]));
    assert_problem(&response, 422);
    f.assert_nothing_stored();
}

#[test]
fn non_uuid_ids_are_404() {
    let f = Fixture::new();
    for path in [
        "/api/v1/events/not-a-uuid".to_owned(),
        "/api/v1/events/not-a-uuid/media".to_owned(),
        format!("/api/v1/events/{}/media/123", f.event),
        format!("/api/v1/events/{}/media/%00/download", f.event),
        format!(
            "/api/v1/events/{}/media/..%2F..%2Fetc%2Fpasswd/stream",
            f.event
        ),
    ] {
        let response = get(&f.server, &path, Some(&f.alice), &[]);
        assert_problem(&response, 404);
    }
}

#[test]
fn unknown_event_is_404() {
    let f = Fixture::new();
    let path = format!("/api/v1/events/{}/media", uuid::Uuid::now_v7());
    let response = send(
        &f.server,
        "POST",
        &path,
        Some(&f.alice),
        Some(&multipart_content_type()),
        &multipart(&[Part::File("file", "a.png", Some("image/png"), PNG)]),
    );
    assert_problem(&response, 404);
    f.assert_nothing_stored();
}

#[test]
fn someone_elses_event_is_404_exactly_like_a_missing_one() {
    let f = Fixture::new();
    let mallory = f.server.token("mallory");
    let body = multipart(&[Part::File("file", "a.png", Some("image/png"), PNG)]);
    let theirs = send(
        &f.server,
        "POST",
        &f.media_path(),
        Some(&mallory),
        Some(&multipart_content_type()),
        &body,
    );
    let missing = send(
        &f.server,
        "POST",
        &format!("/api/v1/events/{}/media", uuid::Uuid::now_v7()),
        Some(&mallory),
        Some(&multipart_content_type()),
        &body,
    );
    // Identical but for the id each names.
    let same = |response: &RawResponse, id: &str| {
        let mut body = assert_problem(response, 404);
        let detail = body["detail"].as_str().unwrap().replace(id, "ID");
        body["detail"] = Value::String(detail);
        body
    };
    let missing_id = missing_event_id(&missing);
    assert_eq!(same(&theirs, &f.event), same(&missing, &missing_id));
    let read = get(&f.server, &f.media_path(), Some(&mallory), &[]);
    assert_eq!(same(&read, &f.event), same(&missing, &missing_id));
    f.assert_nothing_stored();
}

/// The event id a 404 names (`event ID not found`).
fn missing_event_id(response: &RawResponse) -> String {
    let body = response.json();
    let detail = body["detail"].as_str().unwrap();
    detail.split(' ').nth(1).unwrap().to_owned()
}

#[test]
fn expired_token_is_401() {
    let f = Fixture::new();
    let token = jwt(
        &json!({"alg": "HS256", "typ": "JWT"}),
        &json!({"sub": "alice", "exp": now() - 3600}),
        Some(JWT_SECRET),
    );
    let response = get(&f.server, &f.media_path(), Some(&token), &[]);
    assert_problem(&response, 401);
    assert_eq!(
        response.header("www-authenticate"),
        Some("Bearer error=\"invalid_token\"")
    );
}

#[test]
fn unsigned_token_is_401() {
    let f = Fixture::new();
    let token = jwt(
        &json!({"alg": "HS256", "typ": "JWT"}),
        &json!({"sub": "alice", "exp": now() + 3600}),
        None,
    );
    assert_problem(&get(&f.server, &f.media_path(), Some(&token), &[]), 401);
}

#[test]
fn alg_none_token_is_401() {
    let f = Fixture::new();
    let token = jwt(
        &json!({"alg": "none", "typ": "JWT"}),
        &json!({"sub": "alice", "exp": now() + 3600}),
        None,
    );
    assert_problem(&get(&f.server, &f.media_path(), Some(&token), &[]), 401);
}

#[test]
fn wrong_secret_token_is_401() {
    let f = Fixture::new();
    let token = jwt(
        &json!({"alg": "HS256", "typ": "JWT"}),
        &json!({"sub": "alice", "exp": now() + 3600}),
        Some("not-the-server-secret-0123456789abcdef"),
    );
    assert_problem(&get(&f.server, &f.media_path(), Some(&token), &[]), 401);
    // The same claims with the right secret pass, so the refusal above is the signature's.
    let token = jwt(
        &json!({"alg": "HS256", "typ": "JWT"}),
        &json!({"sub": "alice", "exp": now() + 3600}),
        Some(JWT_SECRET),
    );
    assert_eq!(
        get(&f.server, &f.media_path(), Some(&token), &[]).status,
        200
    );
}

/// The presigned URL of a fresh upload, as a path on the server, and the object's key.
fn presigned(f: &Fixture) -> (String, String) {
    let media = f.upload_png("a.png", PNG);
    let response = get(
        &f.server,
        &format!("{}/{}/url", f.media_path(), media["id"].as_str().unwrap()),
        Some(&f.alice),
        &[],
    );
    assert_eq!(response.status, 200);
    let url = response.json()["url"].as_str().unwrap().to_owned();
    let path = url[url.find("/api/v1/objects/").unwrap()..].to_owned();
    // Works as handed out, without a token.
    let ok = get(&f.server, &path, None, &[]);
    assert_eq!(ok.status, 200);
    assert_eq!(ok.body, PNG);
    (path, media["s3_key"].as_str().unwrap().to_owned())
}

#[test]
fn tampered_presigned_url_is_403() {
    let f = Fixture::new();
    let (path, _) = presigned(&f);
    let last = path.chars().last().unwrap();
    let flipped = if last == '0' { '1' } else { '0' };
    let tampered = format!("{}{flipped}", &path[..path.len() - 1]);
    assert_problem(&get(&f.server, &tampered, None, &[]), 403);
    // A later expiry with the old signature.
    let at = path.find("expires=").unwrap() + "expires=".len();
    let extended = format!("{}9{}", &path[..at], &path[at..]);
    assert_problem(&get(&f.server, &extended, None, &[]), 403);
}

#[test]
fn expired_presigned_url_is_403_even_with_a_genuine_signature() {
    let f = Fixture::new();
    let (_, key) = presigned(&f);
    // Signed with the server's own key, exactly as it signs (method, key, expiry, then the
    // length, type, SHA-256 and part a GET does not bind, one per line), but already past.
    let signing_key = std::fs::read_to_string(f.data.join("presign-key")).unwrap();
    let expires = now() - 60;
    let signature = hex::encode(hmac_sha256(
        signing_key.trim().as_bytes(),
        format!("GET\n{key}\n{expires}\n\n\n\n\n").as_bytes(),
    ));
    let path = format!("/api/v1/objects/{key}?method=GET&expires={expires}&signature={signature}");
    assert_problem(&get(&f.server, &path, None, &[]), 403);
    // The same construction with a future expiry is accepted: the refusal is the expiry's.
    let expires = now() + 600;
    let signature = hex::encode(hmac_sha256(
        signing_key.trim().as_bytes(),
        format!("GET\n{key}\n{expires}\n\n\n\n\n").as_bytes(),
    ));
    let path = format!("/api/v1/objects/{key}?method=GET&expires={expires}&signature={signature}");
    assert_eq!(get(&f.server, &path, None, &[]).status, 200);
}

#[test]
fn range_beyond_the_end_is_416() {
    let f = Fixture::new();
    let media = f.upload_png("a.png", PNG);
    let path = format!(
        "{}/{}/stream",
        f.media_path(),
        media["id"].as_str().unwrap()
    );
    let response = get(
        &f.server,
        &path,
        Some(&f.alice),
        &[("Range", "bytes=100000-")],
    );
    assert_problem(&response, 416);
    assert_eq!(
        response.header("content-range"),
        Some(format!("bytes */{}", PNG.len()).as_str())
    );
}

/// `HEAD path`, like [`get`].
fn head(server: &Server, path: &str, token: Option<&str>) -> RawResponse {
    let mut request = get_request(path, token);
    request.splice(..3, *b"HEAD");
    exchange(server.addr, &request)
}

#[test]
fn if_range_with_a_stale_or_weak_etag_serves_the_whole_file() {
    let f = Fixture::new();
    let media = f.upload_png("a.png", PNG);
    let path = format!(
        "{}/{}/stream",
        f.media_path(),
        media["id"].as_str().unwrap()
    );
    let range = ("Range", "bytes=0-7");
    let current = get(&f.server, &path, Some(&f.alice), &[]);
    let etag = current.header("etag").unwrap().to_owned();
    assert!(etag.starts_with('"'), "a strong ETag: {etag}");

    // The client's copy is of another version: the whole file, never a piece of the new one.
    let weak = format!("W/{etag}");
    for stale in [
        "\"stale\"",
        weak.as_str(),
        "Sat, 29 Oct 1994 19:43:31 GMT",
        "not a tag",
    ] {
        let response = get(
            &f.server,
            &path,
            Some(&f.alice),
            &[range, ("If-Range", stale)],
        );
        assert_eq!(response.status, 200, "If-Range: {stale}");
        assert_eq!(response.header("content-range"), None, "If-Range: {stale}");
        assert_eq!(response.body, PNG, "If-Range: {stale}");
    }
    // Its own strong ETag: the range.
    let response = get(
        &f.server,
        &path,
        Some(&f.alice),
        &[range, ("If-Range", &etag)],
    );
    assert_eq!(response.status, 206);
    assert_eq!(
        response.header("content-range"),
        Some(format!("bytes 0-7/{}", PNG.len()).as_str())
    );
    assert_eq!(response.body, &PNG[..8]);
}

#[test]
fn head_answers_every_get_route_with_its_headers_and_no_body() {
    let f = Fixture::new();
    let media = f.upload_png("a.png", PNG);
    let location = format!("{}/{}", f.media_path(), media["id"].as_str().unwrap());
    let (presigned, _) = presigned(&f);
    let event = format!("/api/v1/events/{}", f.event);
    let routes = [
        (format!("{location}/download"), true),
        (format!("{location}/stream"), true),
        (location.clone(), true),
        (format!("{location}/url"), true),
        (f.media_path(), true),
        (event, true),
        ("/api/v1/events".to_owned(), true),
        (presigned, false),
        ("/healthz".to_owned(), false),
        ("/readyz".to_owned(), false),
        ("/api/v1/openapi.json".to_owned(), false),
    ];
    for (path, with_token) in routes {
        let token = with_token.then_some(f.alice.as_str());
        let got = get(&f.server, &path, token, &[]);
        let headed = head(&f.server, &path, token);
        assert_eq!((got.status, headed.status), (200, 200), "HEAD {path}");
        assert!(headed.body.is_empty(), "HEAD {path} sent a body");
        assert_eq!(
            headed.header("content-type"),
            got.header("content-type"),
            "HEAD {path}"
        );
        if got.header("etag").is_some() {
            assert_eq!(headed.header("etag"), got.header("etag"), "HEAD {path}");
        }
        // The length a GET sends (a fresh presigned URL has the same length as the last one).
        let length = got.body.len().to_string();
        assert_eq!(
            headed.header("content-length"),
            Some(length.as_str()),
            "HEAD {path}"
        );
    }
    // HEAD ignores `Range` and honours `If-None-Match` like GET.
    let bytes = format!("{location}/download");
    let mut request = get_request(&bytes, Some(&f.alice));
    request.splice(..3, *b"HEAD");
    request.truncate(request.len() - 2);
    request.extend_from_slice(b"Range: bytes=0-3\r\n\r\n");
    let ranged = exchange(f.server.addr, &request);
    assert_eq!(ranged.status, 200);
    assert_eq!(
        ranged.header("content-length"),
        Some(PNG.len().to_string().as_str())
    );
    let etag = ranged.header("etag").unwrap().to_owned();
    let mut request = get_request(&bytes, Some(&f.alice));
    request.splice(..3, *b"HEAD");
    request.truncate(request.len() - 2);
    request.extend_from_slice(format!("If-None-Match: {etag}\r\n\r\n").as_bytes());
    assert_eq!(exchange(f.server.addr, &request).status, 304);
}

/// A PDF whose catalogue runs JavaScript as the document opens.
const PDF_WITH_OPEN_ACTION: &[u8] = b"%PDF-1.7\n\
1 0 obj << /Type /Catalog /Pages 2 0 R /OpenAction 3 0 R >> endobj\n\
2 0 obj << /Type /Pages /Kids [] /Count 0 >> endobj\n\
3 0 obj << /Type /Action /S /JavaScript /JS (app.alert\\(document.cookie\\)) >> endobj\n\
trailer << /Root 1 0 R >>\n%%EOF\n";

#[test]
fn a_pdf_with_an_open_action_script_is_sandboxed_and_an_attachment() {
    let f = Fixture::new();
    let response = f.upload(&multipart(&[Part::File(
        "file",
        "invoice.pdf",
        Some("application/pdf"),
        PDF_WITH_OPEN_ACTION,
    )]));
    assert_eq!(
        response.status,
        201,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    let media = response.json();
    assert_eq!(media["content_type"], "application/pdf");
    let location = format!("{}/{}", f.media_path(), media["id"].as_str().unwrap());
    let disposition = |r: &RawResponse| {
        r.header("content-disposition")
            .unwrap_or_default()
            .split(';')
            .next()
            .unwrap_or_default()
            .to_owned()
    };
    // Downloaded or streamed, it comes as an attachment in a sandbox; `inline=true` shows it
    // inline, still sandboxed.
    for (route, expected) in [
        ("download", "attachment"),
        ("stream", "attachment"),
        ("stream?inline=false", "attachment"),
        ("stream?inline=true", "inline"),
    ] {
        for response in [
            get(
                &f.server,
                &format!("{location}/{route}"),
                Some(&f.alice),
                &[],
            ),
            head(&f.server, &format!("{location}/{route}"), Some(&f.alice)),
        ] {
            assert_eq!(response.status, 200, "{route}");
            assert_eq!(
                response.header("content-security-policy"),
                Some("sandbox"),
                "{route}"
            );
            assert_eq!(response.header("content-type"), Some("application/pdf"));
            assert_eq!(response.header("x-content-type-options"), Some("nosniff"));
            assert_eq!(disposition(&response), expected, "{route}");
        }
    }
    assert_problem(
        &get(
            &f.server,
            &format!("{location}/stream?inline=maybe"),
            Some(&f.alice),
            &[],
        ),
        400,
    );
    // Its presigned URL answers the same way.
    let url = get(&f.server, &format!("{location}/url"), Some(&f.alice), &[]).json()["url"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = &url[url.find("/api/v1/objects/").unwrap()..];
    let fetched = get(&f.server, path, None, &[]);
    assert_eq!(fetched.status, 200);
    assert_eq!(fetched.body, PDF_WITH_OPEN_ACTION);
    assert_eq!(fetched.header("content-security-policy"), Some("sandbox"));
    assert_eq!(disposition(&fetched), "attachment");
    // A picture stays inline on /stream, in the same sandbox.
    let png = f.upload_png("a.png", PNG);
    let stream = format!("{}/{}/stream", f.media_path(), png["id"].as_str().unwrap());
    let response = get(&f.server, &stream, Some(&f.alice), &[]);
    assert_eq!(disposition(&response), "inline");
    assert_eq!(response.header("content-security-policy"), Some("sandbox"));
}

#[test]
fn header_injection_in_filename_cannot_break_content_disposition() {
    let f = Fixture::new();
    // The part header is written by hand: an escaped quote and `;` inside the quoted name, a
    // literal percent-encoded CRLF and a right-to-left override.
    let name = "inj\\\"; X-Injected: yes; a=\\\"%0d%0aSet-Cookie: s=1 \u{202e}gnp.png";
    let mut body = Vec::new();
    body.extend_from_slice(
        format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n\
             Content-Type: image/png\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(PNG);
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    let response = f.upload(&body);
    assert_eq!(
        response.status,
        201,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    let media = response.json();
    let stored = media["original_filename"].as_str().unwrap().to_owned();
    assert!(!stored.contains('\u{202e}'), "{stored:?}");
    let response = get(
        &f.server,
        &format!(
            "{}/{}/download",
            f.media_path(),
            media["id"].as_str().unwrap()
        ),
        Some(&f.alice),
        &[],
    );
    assert_eq!(response.status, 200);
    let dispositions: Vec<&(String, String)> = response
        .headers
        .iter()
        .filter(|(k, _)| k == "content-disposition")
        .collect();
    assert_eq!(dispositions.len(), 1);
    assert!(
        response.header("set-cookie").is_none() && response.header("x-injected").is_none(),
        "{:?}",
        response.headers
    );
    let value = &dispositions[0].1;
    // `attachment; filename="…"; filename*=UTF-8''…`: the quoted fallback holds no quote, so
    // the parameters a browser reads are exactly these two.
    let fallback = value
        .strip_prefix("attachment; filename=\"")
        .and_then(|rest| rest.split_once("\"; filename*=UTF-8''"))
        .map(|(fallback, encoded)| {
            assert!(!encoded.contains(['"', ';', ' ']), "{encoded}");
            fallback
        })
        .unwrap_or_else(|| panic!("unexpected Content-Disposition {value:?}"));
    assert!(!fallback.contains(['"', '\\', '\r', '\n']), "{fallback:?}");
}

#[test]
fn refusals_leave_the_server_serving() {
    // After every kind of refusal above, a plain upload still works on the same server.
    let f = Fixture::new();
    assert_problem(&f.upload(b"garbage"), 400);
    let media = f.upload_png("ok.png", PNG);
    assert_eq!(
        media_rows(&f.database()),
        vec![binary::MediaRow {
            status: "ready".into(),
            s3_key: media["s3_key"].as_str().unwrap().to_owned(),
            size_bytes: PNG.len() as u64,
        }]
    );
}

/// The head of a chunked upload request of the fixture's media route.
fn chunked_upload_head(f: &Fixture) -> Vec<u8> {
    format!(
        "POST {} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nAuthorization: Bearer {}\r\n\
         Content-Type: {}\r\nTransfer-Encoding: chunked\r\n\r\n",
        f.media_path(),
        f.alice,
        multipart_content_type()
    )
    .into_bytes()
}

fn chunk(bytes: &[u8]) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", bytes.len()).into_bytes();
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
    out
}

/// Writes `parts` with a pause before each after the first, stopping when the server has closed
/// the connection, then reads the answer.
fn send_slowly(f: &Fixture, parts: &[Vec<u8>], pause: Duration) -> RawResponse {
    let mut stream = TcpStream::connect(f.server.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    // A server that has answered and stopped reading fills the socket buffers: stop writing.
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            std::thread::sleep(pause);
        }
        if answered(&stream) || stream.write_all(part).is_err() {
            break;
        }
    }
    read_response(&mut stream).unwrap()
}

/// The server's resident memory, KiB (`VmRSS`).
fn rss_kib(server: &Server) -> i64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// The server's user and system CPU time so far, seconds.
fn cpu_seconds(server: &Server) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", server.pid())).unwrap();
    // Fields after the command name (which is in parentheses): utime and stime are 14 and 15.
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

/// Whether the server has sent something (its answer) or closed the connection.
fn answered(stream: &TcpStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    let peeked = stream.peek(&mut [0_u8; 1]);
    stream.set_nonblocking(false).unwrap();
    match peeked {
        Ok(_) => true,
        Err(error) => error.kind() != std::io::ErrorKind::WouldBlock,
    }
}

#[test]
fn an_endless_part_header_in_a_chunked_body_is_413_after_a_bounded_read() {
    let f = Fixture::new();
    let mut stream = TcpStream::connect(f.server.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    // A server that has answered and stopped reading fills the socket buffers: stop writing.
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(&chunked_upload_head(&f)).unwrap();
    let (rss_before, cpu_before) = (rss_kib(&f.server), cpu_seconds(&f.server));
    let start = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\nX-Pad: "
    );
    stream.write_all(&chunk(start.as_bytes())).unwrap();
    // Up to 40 MiB of a header line that never ends; the server stops reading long before.
    let filler = chunk(&[b'a'; 64 * 1024]);
    let mut sent = 0_usize;
    for _ in 0..640 {
        if stream.write_all(&filler).is_err() {
            break;
        }
        sent += filler.len();
    }
    let response = read_response(&mut stream).unwrap();
    assert_problem(&response, 413);
    // Before the guard the parser held every header byte and searched it again on each read:
    // +38 MB and 11.7 s of CPU for 40 MiB. Now whatever the client goes on sending is at most
    // discarded as it arrives.
    let (rss, cpu) = (
        rss_kib(&f.server) - rss_before,
        cpu_seconds(&f.server) - cpu_before,
    );
    assert!(
        rss < 16 * 1024,
        "server RSS grew by {rss} KiB for {sent} bytes"
    );
    assert!(cpu < 3.0, "server spent {cpu:.2} s of CPU on {sent} bytes");
    f.assert_nothing_stored();
}

#[test]
fn too_many_text_bytes_before_the_file_are_413() {
    let f = Fixture::new();
    // Many small fields of unknown names would be refused one by one; a long preamble is not a
    // field at all, so only the byte count of the form can stop it.
    let mut body = vec![b'p'; 200 * 1024];
    body.extend_from_slice(&multipart(&[Part::File(
        "file",
        "a.png",
        Some("image/png"),
        PNG,
    )]));
    let mut request = chunked_upload_head(&f);
    for piece in body.chunks(8192) {
        request.extend_from_slice(&chunk(piece));
    }
    request.extend_from_slice(b"0\r\n\r\n");
    assert_problem(&exchange(f.server.addr, &request), 413);
    f.assert_nothing_stored();
}

/// The first part of a multipart upload: the file part's header and the file's first 4 KiB.
fn upload_head_parts(file: &[u8]) -> Vec<u8> {
    let mut head = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"slow.png\"\r\n\
         Content-Type: image/png\r\n\r\n"
    )
    .into_bytes();
    head.extend_from_slice(&file[..4096]);
    head
}

#[test]
fn a_silent_upload_is_408_and_its_record_and_temp_file_are_gone() {
    let f = Fixture::with_env(&[("UPLOAD_IDLE_TIMEOUT", "2"), ("UPLOAD_MIN_RATE", "0")]);
    let file = png_of_len(32 * 1024);
    let mut head = chunked_upload_head(&f);
    head.extend_from_slice(&chunk(&upload_head_parts(&file)));
    // The head, then one byte every 3 s: silent longer than the idle timeout each time.
    let mut parts = vec![head];
    parts.extend((0..5).map(|i| chunk(&file[4096 + i..4097 + i])));
    let response = send_slowly(&f, &parts, Duration::from_secs(3));
    let problem = assert_problem(&response, 408);
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("no bytes arrived"),
        "{problem}"
    );
    f.assert_nothing_stored();
}

#[test]
fn a_trickling_upload_below_the_minimum_rate_is_408_and_keeps_nothing() {
    // One byte a second is never silent for 3 s, but far below 1 KiB/s.
    let f = Fixture::with_env(&[("UPLOAD_IDLE_TIMEOUT", "3"), ("UPLOAD_MIN_RATE", "1024")]);
    let file = png_of_len(32 * 1024);
    let mut head = chunked_upload_head(&f);
    head.extend_from_slice(&chunk(&upload_head_parts(&file)));
    let mut parts = vec![head];
    parts.extend((0..20).map(|i| chunk(&file[4096 + i..4097 + i])));
    let started = std::time::Instant::now();
    let response = send_slowly(&f, &parts, Duration::from_secs(1));
    let problem = assert_problem(&response, 408);
    assert!(
        problem["detail"].as_str().unwrap().contains("slower than"),
        "{problem}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "cut within a window or two, not after the whole trickle"
    );
    f.assert_nothing_stored();
}

#[test]
fn an_upload_into_an_event_deleted_meanwhile_is_404_and_keeps_nothing() {
    let f = Fixture::new();
    let file = png_of_len(32 * 1024);
    let mut stream = TcpStream::connect(f.server.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut head = chunked_upload_head(&f);
    head.extend_from_slice(&chunk(&upload_head_parts(&file)));
    stream.write_all(&head).unwrap();
    // The upload is in flight (its pending record written); the owner deletes the event.
    std::thread::sleep(Duration::from_millis(500));
    let response = send(
        &f.server,
        "DELETE",
        &format!("/api/v1/events/{}", f.event),
        Some(&f.alice),
        None,
        b"",
    );
    assert_eq!(response.status, 204);
    let mut rest = file[4096..].to_vec();
    rest.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    let mut tail = chunk(&rest);
    tail.extend_from_slice(b"0\r\n\r\n");
    let _ = stream.write_all(&tail);
    let response = read_response(&mut stream).unwrap();
    assert_problem(&response, 404);
    f.assert_nothing_stored();
}

#[test]
fn gc_with_a_zero_grace_leaves_an_upload_that_is_still_receiving_alone() {
    let f = Fixture::new();
    let file = png_of_len(48 * 1024);
    let mut stream = TcpStream::connect(f.server.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut head = chunked_upload_head(&f);
    head.extend_from_slice(&chunk(&upload_head_parts(&file)));
    stream.write_all(&head).unwrap();
    // Half the file arrives, then gc runs with no grace at all while the rest is on its way.
    std::thread::sleep(Duration::from_millis(300));
    stream.write_all(&chunk(&file[4096..24 * 1024])).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let summary = f.server.gc_apply_now();
    assert_eq!(
        media_rows(&f.database()).len(),
        1,
        "the pending record survived gc: {summary}"
    );
    let mut rest = file[24 * 1024..].to_vec();
    rest.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    let mut tail = chunk(&rest);
    tail.extend_from_slice(b"0\r\n\r\n");
    stream.write_all(&tail).unwrap();
    let response = read_response(&mut stream).unwrap();
    assert_eq!(
        response.status,
        201,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    let media = response.json();
    assert_eq!(media["size_bytes"], file.len());
    assert_eq!(
        media_rows(&f.database()),
        vec![binary::MediaRow {
            status: "ready".into(),
            s3_key: media["s3_key"].as_str().unwrap().to_owned(),
            size_bytes: file.len() as u64,
        }]
    );
    assert_eq!(
        files_under(&f.objects()).len(),
        2,
        "the object and its metadata, no temp file"
    );
}
