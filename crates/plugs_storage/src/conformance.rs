//! The conformance suite every [`ObjectStore`] runs: public async functions, one per behaviour,
//! that panic on a violation. Enabled by the `conformance` feature.
//!
//! Each case takes a fresh, empty store and the [`Capabilities`] of the server behind it; a case
//! needing a behaviour the server lacks prints a visible `SKIPPED (...)` line, records it in
//! `PLUGS_TEST_SKIP_LOG` when set, and returns. The
//! [`conformance_tests!`](crate::conformance_tests) macro generates one `#[tokio::test]` per case.
// A test suite: failures are panics with a message, and skips must show in the test output.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]
// Options are built the only way a caller outside this crate can (they are non_exhaustive).
#![allow(clippy::field_reassign_with_default)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use futures::StreamExt;
use futures::future::BoxFuture;
use sha2::{Digest, Sha256};

use crate::{
    ByteRange, ByteStream, CompletedPart, GetOptions, ListOptions, MIN_PART_SIZE, ObjectKey,
    ObjectStore, ObjectStoreExt, PresignMethod, PresignOptions, PresignedUrl, PutOptions,
    ServerSideEncryption, StoreError,
};

/// Lists the keys of unfinished multipart uploads under a prefix (see
/// [`S3Store::list_multipart_uploads`](crate::S3Store::list_multipart_uploads)).
pub type PendingUploadsProbe = Arc<dyn Fn(String) -> BoxFuture<'static, Vec<String>> + Send + Sync>;

/// Leaves one leftover of a write that never finished, as a killed process leaves it: an
/// unfinished multipart upload on S3, a temporary file in a local store.
pub type LeftoverMaker = Arc<dyn Fn() -> BoxFuture<'static, ()> + Send + Sync>;

/// Counts the leftovers of unfinished writes the store holds, looking behind its back.
pub type LeftoverCounter = Arc<dyn Fn() -> BoxFuture<'static, usize> + Send + Sync>;

/// How a case makes and sees what [`ObjectStore::sweep`] must remove.
#[derive(Clone)]
pub struct Leftovers {
    /// Makes one.
    pub make: LeftoverMaker,
    /// Counts them.
    pub count: LeftoverCounter,
    /// The server reports when a leftover was made, so a young one can be spared (moto 5
    /// reports every multipart upload as started on 2010-11-10).
    pub dated: bool,
}

impl Leftovers {
    /// The leftovers of a [`LocalFsStore`](crate::LocalFsStore) opened on `root`: files under
    /// `root/tmp/`, as a put killed mid-upload leaves them.
    pub fn local_temp_files(root: std::path::PathBuf) -> Self {
        let tmp = root.join("tmp");
        let made = tmp.clone();
        Self {
            make: Arc::new(move || {
                let path = made.join(format!("killed-put-{}", uuid::Uuid::new_v4()));
                Box::pin(async move { tokio::fs::write(path, b"half an upload").await.unwrap() })
            }),
            count: Arc::new(move || {
                let tmp = tmp.clone();
                Box::pin(async move {
                    let mut entries = tokio::fs::read_dir(&tmp).await.unwrap();
                    let mut count = 0;
                    while entries.next_entry().await.unwrap().is_some() {
                        count += 1;
                    }
                    count
                })
            }),
            dated: true,
        }
    }
}

/// What the server behind a store can do, so that cases skip visibly what it lacks.
#[derive(Clone)]
#[non_exhaustive]
pub struct Capabilities {
    /// The backend's name, for skip messages.
    pub name: &'static str,
    /// A plain HTTP client can fetch (GET) and upload (PUT) through presigned URLs.
    pub serves_presigned_urls: bool,
    /// Tampered or expired presigned URLs are refused with 403.
    pub verifies_presign: bool,
    /// Size of the object the streaming case uploads; more than several parts on S3.
    pub large_object_size: u64,
    /// The store's part size, for the case of a body exactly one part long (S3 then uploads a
    /// one-part multipart upload); any size for stores without parts.
    pub one_part_size: u64,
    /// Where unfinished multipart uploads can be listed, if anywhere.
    pub pending_uploads: Option<PendingUploadsProbe>,
    /// A suffix range longer than the object serves the whole object (s3s-fs 0.14 answers 500).
    pub serves_long_suffix_ranges: bool,
    /// How to make and count the leftovers [`ObjectStore::sweep`] removes, for stores that can
    /// have them and servers that can list them.
    pub leftovers: Option<Leftovers>,
    /// A presigned PUT whose body differs from the `x-amz-checksum-sha256` it carries is
    /// refused (moto stores it anyway).
    pub verifies_checksums: bool,
    /// `head` reports the SHA-256 an upload was checked against.
    pub reports_sha256: bool,
    /// A multipart completion with a part other than the last under 5 MiB is refused.
    pub enforces_min_part_size: bool,
    /// `ListParts` answers each part's number, size and ETag, and calls naming an unknown or
    /// ended upload answer "no such upload", and a completion checks its list of parts (s3s-fs 0.14 lists no ETag and answers 400 or 403
    /// to unknown uploads; moto 5 answers ListParts with a document the SDK cannot read, and
    /// 500 to a part of an unknown upload).
    pub lists_parts: bool,
    /// A presigned PUT refused (a length, `Content-Type` or SHA-256 other than the signed one)
    /// stores nothing (s3s-fs 0.14 streams the body to disk, then answers 403 or 400 and
    /// keeps it).
    pub refusals_store_nothing: bool,
}

impl std::fmt::Debug for Capabilities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capabilities")
            .field("name", &self.name)
            .field("serves_presigned_urls", &self.serves_presigned_urls)
            .field("verifies_presign", &self.verifies_presign)
            .field("large_object_size", &self.large_object_size)
            .field("one_part_size", &self.one_part_size)
            .field("pending_uploads", &self.pending_uploads.is_some())
            .field("serves_long_suffix_ranges", &self.serves_long_suffix_ranges)
            .field("leftovers", &self.leftovers.is_some())
            .field("verifies_checksums", &self.verifies_checksums)
            .field("reports_sha256", &self.reports_sha256)
            .field("enforces_min_part_size", &self.enforces_min_part_size)
            .field("lists_parts", &self.lists_parts)
            .field("refusals_store_nothing", &self.refusals_store_nothing)
            .finish()
    }
}

impl Capabilities {
    /// A backend that serves no presigned URL, lists no multipart upload and makes no leftover,
    /// with a 3 MiB streaming case.
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            serves_presigned_urls: false,
            verifies_presign: false,
            large_object_size: 3 * 1024 * 1024 + 12_345,
            one_part_size: 5 * 1024 * 1024,
            pending_uploads: None,
            serves_long_suffix_ranges: true,
            leftovers: None,
            verifies_checksums: false,
            reports_sha256: true,
            enforces_min_part_size: true,
            lists_parts: true,
            refusals_store_nothing: true,
        }
    }
}

/// A store under test, its capabilities, and whatever must live as long as it (a temp dir, a
/// server task).
pub struct Fixture {
    /// The store, empty.
    pub store: Arc<dyn ObjectStore>,
    /// What its server can do.
    pub capabilities: Capabilities,
    /// Dropped after the case.
    pub guard: Option<Box<dyn std::any::Any + Send>>,
}

/// Generates one `#[tokio::test]` per conformance case. `$setup` is an `async fn() ->
/// Option<Fixture>` (`None`: the server is missing and the test skips, having said so).
#[macro_export]
macro_rules! conformance_tests {
    ($setup:path) => {
        $crate::conformance_tests!(@cases $setup;
            put_get_roundtrip, head_reports_metadata, overwrite_replaces, create_only_refuses_existing,
            missing_objects_are_not_found, delete_is_idempotent, copy_keeps_content_and_metadata,
            list_pages_in_order, ranges, range_past_end_not_satisfiable, if_none_match_not_modified,
            empty_object, awkward_keys_roundtrip, sha256_checked, size_checked, encryption_accepted,
            large_streamed_upload, declared_size_large_upload, exactly_one_part_upload, failing_body_stores_nothing, dropped_put_stores_nothing,
            presigned_get, presigned_put, presigned_tampered_refused, presigned_expired_refused,
            sweep_removes_only_stale_leftovers, ping_answers,
            presigned_put_bound, multipart_presigned_parts, multipart_server_parts,
            multipart_abort_removes_parts, copy_with_replaces_metadata);
    };
    (@cases $setup:path; $($case:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let Some(fixture) = $setup().await else { return };
                $crate::conformance::$case(&*fixture.store, &fixture.capabilities).await;
                drop(fixture);
            }
        )*
    };
}

fn key(key: &str) -> ObjectKey {
    ObjectKey::parse(key).unwrap()
}

/// A case the server cannot run: `SKIPPED (...)` on stderr, which the test runner hides for a
/// test that passes, so also a line `test: why` appended to the file `PLUGS_TEST_SKIP_LOG` names
/// (the contract of `plugs_test_support::record_skip`; `cargo xtask ci` sets it and prints the
/// lines in its summary).
fn skip(caps: &Capabilities, lacks: &str) {
    use std::io::Write as _;
    let why = format!("{} lacks {lacks}", caps.name);
    eprintln!("SKIPPED ({why})");
    let Some(path) = std::env::var_os("PLUGS_TEST_SKIP_LOG").filter(|p| !p.is_empty()) else {
        return;
    };
    let thread = std::thread::current();
    let line = format!("{}: {why}\n", thread.name().unwrap_or("(unnamed test)"));
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut file| file.write_all(line.as_bytes()));
    if let Err(error) = written {
        eprintln!("warning: could not record the skip in {path:?}: {error}");
    }
}

/// Deterministic bytes: chunk `index` of a pattern, different per seed and chunk.
fn pattern_chunk(seed: u64, index: u64, len: usize) -> Bytes {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ index.wrapping_add(1).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        // xorshift64*: cheap, and no two chunks alike.
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        let word = state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
        out.extend_from_slice(&word[..word.len().min(len - out.len())]);
    }
    out.into()
}

/// Odd-sized chunks so that part and buffer boundaries never line up with them.
const STREAM_CHUNK: u64 = 100_003;

fn pattern_chunks(total: u64, seed: u64) -> impl Iterator<Item = Bytes> {
    (0..total.div_ceil(STREAM_CHUNK)).map(move |index| {
        let len = STREAM_CHUNK.min(total - index * STREAM_CHUNK) as usize;
        pattern_chunk(seed, index, len)
    })
}

fn pattern_stream(total: u64, seed: u64) -> ByteStream {
    futures::stream::iter(pattern_chunks(total, seed).map(Ok)).boxed()
}

fn pattern_sha256(total: u64, seed: u64) -> [u8; 32] {
    let mut hasher = Sha256::new();
    pattern_chunks(total, seed).for_each(|chunk| hasher.update(&chunk));
    hasher.finalize().into()
}

/// Streams `k` back and checks it is the `pattern_stream(size, seed)` that was written: every
/// byte, hashed as it arrives, never the whole object in memory.
async fn assert_reads_back_pattern(store: &dyn ObjectStore, k: &ObjectKey, size: u64, seed: u64) {
    let got = store.get(k, GetOptions::default()).await.unwrap();
    assert_eq!(got.meta.size, size);
    let mut body = got.body;
    let mut hasher = Sha256::new();
    let mut received = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.unwrap();
        received += chunk.len() as u64;
        hasher.update(&chunk);
    }
    assert_eq!(received, size);
    let digest: [u8; 32] = hasher.finalize().into();
    assert!(
        digest == pattern_sha256(size, seed),
        "the bytes read back differ from the bytes written"
    );
}

fn body_error() -> StoreError {
    StoreError::Body {
        source: "the client went away".into(),
    }
}

fn sample_options() -> PutOptions {
    let mut options = PutOptions::with_content_type("image/png");
    options.metadata = BTreeMap::from([
        ("origin".to_owned(), "conformance".to_owned()),
        ("owner-id".to_owned(), "42".to_owned()),
    ]);
    options
}

async fn assert_absent(store: &dyn ObjectStore, key: &ObjectKey) {
    match store.head(key).await {
        Err(StoreError::NotFound { .. }) => {}
        other => panic!("expected no object at {key}, got {other:?}"),
    }
}

/// Waits (up to 15 s) until no multipart upload is pending under `prefix`, when the server can
/// list them; aborting a dropped upload happens on a spawned task.
async fn assert_no_pending_upload(caps: &Capabilities, prefix: &str) {
    let Some(probe) = &caps.pending_uploads else {
        skip(
            caps,
            "ListMultipartUploads: pending multipart uploads not checked",
        );
        return;
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let pending = probe(prefix.to_owned()).await;
        if pending.is_empty() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "multipart uploads left pending: {pending:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Bytes, content type and user metadata come back as written.
pub async fn put_get_roundtrip(store: &dyn ObjectStore, _caps: &Capabilities) {
    let k = key("roundtrip/photo.png");
    let body = pattern_chunk(1, 0, 70_000);
    let put = store
        .put_bytes(&k, body.clone(), sample_options())
        .await
        .unwrap();
    assert_eq!(put.size, 70_000);
    assert!(
        put.etag.starts_with('"') && put.etag.ends_with('"') && put.etag.len() > 2,
        "quoted ETag: {}",
        put.etag
    );
    let got = store.get(&k, GetOptions::default()).await.unwrap();
    assert_eq!(got.range, 0..70_000);
    assert_eq!(got.meta.size, 70_000);
    assert_eq!(got.meta.etag, put.etag);
    assert_eq!(got.meta.content_type.as_deref(), Some("image/png"));
    assert_eq!(got.meta.metadata, sample_options().metadata);
    let chunks: Vec<Bytes> = got.body.map(|chunk| chunk.unwrap()).collect().await;
    assert_eq!(Bytes::from(chunks.concat()), body);
}

/// `head` reports what was stored without the bytes.
pub async fn head_reports_metadata(store: &dyn ObjectStore, _caps: &Capabilities) {
    let k = key("head/doc.pdf");
    let put = store
        .put_bytes(&k, Bytes::from_static(b"%PDF-1.7 hello"), sample_options())
        .await
        .unwrap();
    let meta = store.head(&k).await.unwrap();
    assert_eq!(meta.key, k);
    assert_eq!(meta.size, 14);
    assert_eq!(meta.etag, put.etag);
    assert_eq!(meta.content_type.as_deref(), Some("image/png"));
    assert_eq!(meta.metadata, sample_options().metadata);
    let age = Utc::now() - meta.last_modified;
    assert!(
        age.num_minutes().abs() < 60,
        "last_modified {} is not about now",
        meta.last_modified
    );
    assert!(store.exists(&k).await.unwrap());
}

/// A second put replaces the object, its ETag and its metadata.
pub async fn overwrite_replaces(store: &dyn ObjectStore, _caps: &Capabilities) {
    let k = key("overwrite/a.txt");
    let first = store
        .put_bytes(&k, Bytes::from_static(b"first version"), sample_options())
        .await
        .unwrap();
    let second = store
        .put_bytes(
            &k,
            Bytes::from_static(b"second"),
            PutOptions::with_content_type("text/plain"),
        )
        .await
        .unwrap();
    assert_ne!(first.etag, second.etag);
    assert_eq!(
        store.get_bytes(&k).await.unwrap(),
        Bytes::from_static(b"second")
    );
    let meta = store.head(&k).await.unwrap();
    assert_eq!((meta.size, meta.etag), (6, second.etag));
    assert_eq!(meta.content_type.as_deref(), Some("text/plain"));
    assert!(
        meta.metadata.is_empty(),
        "old metadata survived: {:?}",
        meta.metadata
    );
}

/// A create-only put succeeds once, then refuses and leaves the first object untouched.
pub async fn create_only_refuses_existing(store: &dyn ObjectStore, _caps: &Capabilities) {
    let k = key("create-only/a.bin");
    let mut options = PutOptions::default();
    options.create_only = true;
    store
        .put_bytes(&k, Bytes::from_static(b"winner"), options.clone())
        .await
        .unwrap();
    match store
        .put_bytes(&k, Bytes::from_static(b"loser"), options)
        .await
    {
        Err(StoreError::PreconditionFailed { key }) => assert_eq!(key, k.as_str()),
        other => panic!("expected PreconditionFailed, got {other:?}"),
    }
    assert_eq!(
        store.get_bytes(&k).await.unwrap(),
        Bytes::from_static(b"winner")
    );
}

/// get, head and copy of a missing key answer NotFound with the key.
pub async fn missing_objects_are_not_found(store: &dyn ObjectStore, _caps: &Capabilities) {
    let k = key("missing/nothing.png");
    match store.get(&k, GetOptions::default()).await {
        Err(StoreError::NotFound { key }) => assert_eq!(key, k.as_str()),
        other => panic!("expected NotFound, got {other:?}"),
    }
    assert_absent(store, &k).await;
    assert!(!store.exists(&k).await.unwrap());
    match store.copy(&k, &key("missing/copy.png")).await {
        Err(StoreError::NotFound { .. }) => {}
        other => panic!("expected NotFound copying a missing object, got {other:?}"),
    }
    assert_absent(store, &key("missing/copy.png")).await;
}

/// Delete removes the object; deleting again (or something never there) succeeds.
pub async fn delete_is_idempotent(store: &dyn ObjectStore, _caps: &Capabilities) {
    let k = key("delete/a/b/c.txt");
    let sibling = key("delete/a/keep.txt");
    store
        .put_bytes(&k, Bytes::from_static(b"bye"), PutOptions::default())
        .await
        .unwrap();
    store
        .put_bytes(&sibling, Bytes::from_static(b"stay"), PutOptions::default())
        .await
        .unwrap();
    store.delete(&k).await.unwrap();
    assert_absent(store, &k).await;
    store.delete(&k).await.unwrap();
    store.delete(&key("delete/never/was")).await.unwrap();
    assert_eq!(
        store.get_bytes(&sibling).await.unwrap(),
        Bytes::from_static(b"stay")
    );
    let keys: Vec<String> = store
        .list_all(Some("delete/"))
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.key.into())
        .collect();
    assert_eq!(keys, vec!["delete/a/keep.txt".to_owned()]);
}

/// A copy has the source's bytes, content type and metadata; the source stays; a copy over an
/// existing object replaces it.
pub async fn copy_keeps_content_and_metadata(store: &dyn ObjectStore, _caps: &Capabilities) {
    let from = key("copy/source.png");
    let to = key("copy/target.png");
    let body = pattern_chunk(2, 0, 20_000);
    store
        .put_bytes(&from, body.clone(), sample_options())
        .await
        .unwrap();
    store
        .put_bytes(&to, Bytes::from_static(b"old"), PutOptions::default())
        .await
        .unwrap();
    store.copy(&from, &to).await.unwrap();
    assert_eq!(store.get_bytes(&to).await.unwrap(), body);
    let meta = store.head(&to).await.unwrap();
    assert_eq!(meta.size, 20_000);
    assert_eq!(meta.content_type.as_deref(), Some("image/png"));
    assert_eq!(meta.metadata, sample_options().metadata);
    assert_eq!(store.get_bytes(&from).await.unwrap(), body);
}

/// Listing follows a prefix, in byte-wise key order, across several small pages.
pub async fn list_pages_in_order(store: &dyn ObjectStore, _caps: &Capabilities) {
    // '-' < '/' < '0' byte-wise: a walk of directories would get these wrong.
    let inside = [
        "list/a-b",
        "list/a/b",
        "list/a/c/d",
        "list/a0",
        "list/b",
        "list/z/1",
        "list/z/2",
    ];
    for (index, k) in inside
        .iter()
        .chain(["lis", "listing/x", "other/list/a"].iter())
        .enumerate()
    {
        store
            .put_bytes(
                &key(k),
                Bytes::from(vec![b'x'; index + 1]),
                PutOptions::default(),
            )
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    let mut pages = 0;
    let mut token = None;
    loop {
        let mut options = ListOptions::default();
        options.prefix = Some("list/".to_owned());
        options.max_keys = Some(2);
        options.page_token = token;
        let page = store.list(options).await.unwrap();
        pages += 1;
        assert!(
            page.objects.len() <= 2,
            "page of {} with max_keys 2",
            page.objects.len()
        );
        for meta in &page.objects {
            let index = inside
                .iter()
                .position(|k| *k == meta.key.as_str())
                .expect("a key under the prefix");
            assert_eq!(meta.size, index as u64 + 1, "size of {}", meta.key);
            assert!(
                meta.etag.starts_with('"'),
                "quoted ETag in a listing: {}",
                meta.etag
            );
        }
        seen.extend(page.objects.into_iter().map(|meta| meta.key.to_string()));
        match page.next_token {
            Some(next) => token = Some(next),
            None => break,
        }
        assert!(pages < 20, "listing does not end");
    }
    assert_eq!(seen, inside.to_vec());
    assert!(pages >= 4, "7 keys in pages of 2 came in {pages} pages");
    let all: Vec<String> = store
        .list_all(None)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.key.into())
        .collect();
    assert_eq!(all.len(), 10);
    assert!(
        all.windows(2).all(|pair| pair[0] < pair[1]),
        "unordered: {all:?}"
    );
    let empty = store.list_all(Some("nothing-here/")).await.unwrap();
    assert!(empty.is_empty());
}

/// Bounded, open-ended and suffix ranges; a range running past the end is cut to it.
pub async fn ranges(store: &dyn ObjectStore, caps: &Capabilities) {
    let k = key("ranges/data.bin");
    let body = pattern_chunk(3, 0, 1000);
    store
        .put_bytes(&k, body.clone(), PutOptions::default())
        .await
        .unwrap();
    let cases = [
        (ByteRange::Bounded { start: 10, end: 20 }, 10..20),
        (ByteRange::Bounded { start: 0, end: 1 }, 0..1),
        (ByteRange::From { start: 990 }, 990..1000),
        (ByteRange::From { start: 0 }, 0..1000),
        (ByteRange::Suffix { len: 5 }, 995..1000),
        (
            ByteRange::Bounded {
                start: 995,
                end: 5000,
            },
            995..1000,
        ),
        (ByteRange::Suffix { len: 5000 }, 0..1000),
    ];
    for (range, expected) in cases {
        if matches!(range, ByteRange::Suffix { len: 5000 }) && !caps.serves_long_suffix_ranges {
            skip(caps, "suffix ranges longer than the object");
            continue;
        }
        let mut options = GetOptions::default();
        options.range = Some(range);
        let got = store
            .get(&k, options)
            .await
            .unwrap_or_else(|error| panic!("{range:?}: {error:?}"));
        assert_eq!(got.range, expected, "{range:?}");
        assert_eq!(got.meta.size, 1000, "{range:?}: the whole object's size");
        let chunks: Vec<Bytes> = got.body.map(|chunk| chunk.unwrap()).collect().await;
        let bytes = chunks.concat();
        assert_eq!(
            bytes,
            body[expected.start as usize..expected.end as usize],
            "{range:?}"
        );
    }
}

/// A range starting at or past the end (or empty) is refused with the object's size.
pub async fn range_past_end_not_satisfiable(store: &dyn ObjectStore, _caps: &Capabilities) {
    let k = key("ranges/short.bin");
    store
        .put_bytes(&k, Bytes::from(vec![7u8; 100]), PutOptions::default())
        .await
        .unwrap();
    for range in [
        ByteRange::From { start: 100 },
        ByteRange::From { start: 5000 },
        ByteRange::Bounded {
            start: 200,
            end: 300,
        },
        ByteRange::Bounded { start: 10, end: 10 },
    ] {
        let mut options = GetOptions::default();
        options.range = Some(range);
        match store.get(&k, options).await {
            Err(StoreError::RangeNotSatisfiable { key, size }) => {
                assert_eq!((key.as_str(), size), (k.as_str(), 100), "{range:?}");
            }
            other => panic!("{range:?}: expected RangeNotSatisfiable, got {other:?}"),
        }
    }
}

/// A get whose `If-None-Match` names the current ETag answers NotModified; another ETag gets
/// the bytes.
pub async fn if_none_match_not_modified(store: &dyn ObjectStore, _caps: &Capabilities) {
    let k = key("conditional/a.txt");
    let put = store
        .put_bytes(&k, Bytes::from_static(b"cached"), PutOptions::default())
        .await
        .unwrap();
    let mut options = GetOptions::default();
    options.if_none_match = Some(put.etag.clone());
    match store.get(&k, options).await {
        Err(StoreError::NotModified { key }) => assert_eq!(key, k.as_str()),
        other => panic!("expected NotModified, got {other:?}"),
    }
    let mut options = GetOptions::default();
    options.if_none_match = Some("\"0123456789abcdef0123456789abcdef\"".to_owned());
    let got = store.get(&k, options).await.unwrap();
    assert_eq!(got.meta.etag, put.etag);
    store
        .put_bytes(&k, Bytes::from_static(b"changed"), PutOptions::default())
        .await
        .unwrap();
    let mut options = GetOptions::default();
    options.if_none_match = Some(put.etag);
    let got = store.get(&k, options).await.unwrap();
    let chunks: Vec<Bytes> = got.body.map(|chunk| chunk.unwrap()).collect().await;
    assert_eq!(chunks.concat(), b"changed");
}

/// A zero-byte object is stored, read and listed; no range of it is satisfiable.
pub async fn empty_object(store: &dyn ObjectStore, _caps: &Capabilities) {
    let k = key("empty/zero");
    let put = store
        .put(&k, futures::stream::empty().boxed(), PutOptions::default())
        .await
        .unwrap();
    assert_eq!(put.size, 0);
    assert_eq!(store.get_bytes(&k).await.unwrap().len(), 0);
    assert_eq!(store.head(&k).await.unwrap().size, 0);
    let mut options = GetOptions::default();
    options.range = Some(ByteRange::From { start: 0 });
    match store.get(&k, options).await {
        Err(StoreError::RangeNotSatisfiable { size: 0, .. }) => {}
        other => panic!("expected RangeNotSatisfiable on an empty object, got {other:?}"),
    }
}

/// Keys with spaces, unicode and URL-special characters round-trip and list exactly; invalid
/// keys never reach a store.
pub async fn awkward_keys_roundtrip(store: &dyn ObjectStore, _caps: &Capabilities) {
    let awkward = [
        "odd/with space/ünïcødé.png",
        "odd/plus+eq=amp&pct%20q?.txt",
        "odd/(parens)[brackets]~!$'*,;:@",
    ];
    for (index, k) in awkward.iter().enumerate() {
        store
            .put_bytes(
                &key(k),
                Bytes::from(vec![index as u8; 10]),
                PutOptions::default(),
            )
            .await
            .unwrap();
    }
    for (index, k) in awkward.iter().enumerate() {
        assert_eq!(
            store.get_bytes(&key(k)).await.unwrap(),
            Bytes::from(vec![index as u8; 10]),
            "{k}"
        );
    }
    let listed: Vec<String> = store
        .list_all(Some("odd/"))
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.key.into())
        .collect();
    let mut expected: Vec<String> = awkward.iter().map(|k| (*k).to_owned()).collect();
    expected.sort();
    assert_eq!(listed, expected);
    for bad in [
        "",
        "/abs",
        "trailing/",
        "a//b",
        "a/../b",
        "./a",
        "tab\there",
        "back\\slash",
    ] {
        assert!(
            matches!(ObjectKey::parse(bad), Err(StoreError::InvalidKey { .. })),
            "{bad:?} accepted"
        );
    }
    assert!(ObjectKey::parse("k".repeat(ObjectKey::MAX_LEN + 1)).is_err());
}

/// A declared SHA-256 is checked: the right one stores, a wrong one stores nothing.
pub async fn sha256_checked(store: &dyn ObjectStore, caps: &Capabilities) {
    let k = key("checksum/a.bin");
    let body = pattern_chunk(4, 0, 5000);
    let mut options = PutOptions::default();
    options.sha256 = Some(Sha256::digest(&body).into());
    store.put_bytes(&k, body.clone(), options).await.unwrap();
    assert_eq!(store.get_bytes(&k).await.unwrap(), body);
    assert_head_sha256(store, caps, &k, Sha256::digest(&body).into()).await;

    let wrong = key("checksum/wrong.bin");
    let mut options = PutOptions::default();
    options.sha256 = Some([0u8; 32]);
    match store.put_bytes(&wrong, body, options).await {
        Err(StoreError::ChecksumMismatch { key }) => assert_eq!(key, wrong.as_str()),
        other => panic!("expected ChecksumMismatch, got {other:?}"),
    }
    assert_absent(store, &wrong).await;
}

/// A declared size is checked: a longer or shorter body stores nothing.
pub async fn size_checked(store: &dyn ObjectStore, _caps: &Capabilities) {
    let k = key("size/a.bin");
    let mut options = PutOptions::default();
    options.size = Some(4);
    store
        .put_bytes(&k, Bytes::from_static(b"four"), options)
        .await
        .unwrap();
    for (body, declared) in [(&b"five!"[..], 4), (&b"three"[..], 9)] {
        let k = key(&format!("size/wrong-{declared}.bin"));
        let mut options = PutOptions::default();
        options.size = Some(declared);
        match store.put_bytes(&k, Bytes::from_static(body), options).await {
            Err(StoreError::SizeMismatch { expected, .. }) => assert_eq!(expected, declared),
            other => panic!("expected SizeMismatch, got {other:?}"),
        }
        assert_absent(store, &k).await;
    }
}

/// Puts asking for AES256, KMS or no encryption are accepted (what the bucket does with them is
/// the server's business).
pub async fn encryption_accepted(store: &dyn ObjectStore, _caps: &Capabilities) {
    let choices = [ServerSideEncryption::Aes256, ServerSideEncryption::None];
    for (index, encryption) in choices.into_iter().enumerate() {
        let k = key(&format!("sse/{index}"));
        let mut options = PutOptions::default();
        options.encryption = encryption;
        store
            .put_bytes(&k, Bytes::from_static(b"secret"), options)
            .await
            .unwrap();
        assert_eq!(
            store.get_bytes(&k).await.unwrap(),
            Bytes::from_static(b"secret")
        );
    }
}

/// An object of several parts streams in and out intact, compared by SHA-256 on the fly.
pub async fn large_streamed_upload(store: &dyn ObjectStore, caps: &Capabilities) {
    let k = key("large/video.mp4");
    let size = caps.large_object_size;
    let put = store
        .put(
            &k,
            pattern_stream(size, 5),
            PutOptions::with_content_type("video/mp4"),
        )
        .await
        .unwrap();
    assert_eq!(put.size, size);
    assert_reads_back_pattern(store, &k, size, 5).await;
    let meta = store.head(&k).await.unwrap();
    assert_eq!(meta.content_type.as_deref(), Some("video/mp4"));
}

/// A large body whose size the caller declares (S3 streams it as one PutObject): the bytes
/// round-trip; a caller's stream failing mid-way or ending short of the declared size stores
/// nothing and says why.
pub async fn declared_size_large_upload(store: &dyn ObjectStore, caps: &Capabilities) {
    let size = caps.large_object_size;
    let k = key("declared/video.mp4");
    let mut options = PutOptions::with_content_type("video/mp4");
    options.size = Some(size);
    let put = store
        .put(&k, pattern_stream(size, 11), options)
        .await
        .unwrap();
    assert_eq!(put.size, size);
    assert_reads_back_pattern(store, &k, size, 11).await;
    assert_eq!(put.etag, store.head(&k).await.unwrap().etag);

    let failing = key("declared/failing.bin");
    let mut options = PutOptions::default();
    options.size = Some(size);
    let body = pattern_stream(size / 2, 12)
        .chain(futures::stream::once(async { Err(body_error()) }))
        .boxed();
    match store.put(&failing, body, options).await {
        Err(StoreError::Body { source }) => assert_eq!(source.to_string(), "the client went away"),
        other => panic!("expected the body's error back, got {other:?}"),
    }
    assert_absent(store, &failing).await;

    let short = key("declared/short.bin");
    let mut options = PutOptions::default();
    options.size = Some(size);
    match store
        .put(&short, pattern_stream(size - 1, 13), options)
        .await
    {
        Err(StoreError::SizeMismatch {
            expected, actual, ..
        }) => {
            assert_eq!((expected, actual), (size, size - 1));
        }
        other => panic!("expected SizeMismatch, got {other:?}"),
    }
    assert_absent(store, &short).await;
    assert_no_pending_upload(caps, "declared/").await;
}

/// A body exactly one part long: the boundary between a single PUT and a multipart upload.
pub async fn exactly_one_part_upload(store: &dyn ObjectStore, caps: &Capabilities) {
    let k = key("boundary/one-part.bin");
    let size = caps.one_part_size;
    let put = store
        .put(&k, pattern_stream(size, 9), PutOptions::default())
        .await
        .unwrap();
    assert_eq!(put.size, size);
    assert_reads_back_pattern(store, &k, size, 9).await;
}

/// A body stream failing after more than a part leaves no object (and no pending multipart
/// upload), and the caller's error comes back unchanged.
pub async fn failing_body_stores_nothing(store: &dyn ObjectStore, caps: &Capabilities) {
    let k = key("failing/upload.bin");
    let good = caps.large_object_size / 2;
    let body = pattern_stream(good, 6)
        .chain(futures::stream::once(async { Err(body_error()) }))
        .boxed();
    match store.put(&k, body, PutOptions::default()).await {
        Err(StoreError::Body { source }) => assert_eq!(source.to_string(), "the client went away"),
        other => panic!("expected the body's error back, got {other:?}"),
    }
    assert_absent(store, &k).await;
    assert!(store.list_all(Some("failing/")).await.unwrap().is_empty());
    assert_no_pending_upload(caps, "failing/").await;
    // The same key still takes a good upload afterwards.
    store
        .put_bytes(&k, Bytes::from_static(b"ok"), PutOptions::default())
        .await
        .unwrap();
    assert_eq!(
        store.get_bytes(&k).await.unwrap(),
        Bytes::from_static(b"ok")
    );
}

/// A put abandoned mid-stream (its future dropped) leaves no object and no pending upload.
pub async fn dropped_put_stores_nothing(store: &dyn ObjectStore, caps: &Capabilities) {
    let k = key("dropped/upload.bin");
    let (reached_tx, reached_rx) = tokio::sync::oneshot::channel::<()>();
    let mut reached_tx = Some(reached_tx);
    let sent = pattern_stream(caps.large_object_size / 2, 7);
    // After the bytes, signal and then hang like a client that stopped sending.
    let hang = futures::stream::poll_fn(move |_| {
        if let Some(tx) = reached_tx.take() {
            let _ = tx.send(());
        }
        std::task::Poll::Pending
    });
    let body = sent.chain(hang).boxed();
    // Boxed, not pinned on the stack, so that drop() below really drops the put.
    let mut put = Box::pin(store.put(&k, body, PutOptions::default()));
    tokio::select! {
        result = put.as_mut() => panic!("a put whose body never ends finished: {result:?}"),
        _ = reached_rx => {}
    }
    drop(put);
    assert_absent(store, &k).await;
    assert_no_pending_upload(caps, "dropped/").await;
}

/// `sweep` removes the leftovers of writes that never finished once they are older than the
/// cutoff, only counts them in a dry run, spares younger ones, and never touches an object. A
/// store that cannot look for its leftovers says so instead of failing.
pub async fn sweep_removes_only_stale_leftovers(store: &dyn ObjectStore, caps: &Capabilities) {
    let kept = key("sweep/kept.bin");
    store
        .put_bytes(
            &kept,
            Bytes::from_static(b"finished"),
            PutOptions::default(),
        )
        .await
        .unwrap();
    let later = || Utc::now() + chrono::Duration::minutes(10);
    let report = store.sweep(later(), false).await.unwrap();
    assert_eq!(
        (report.found(), report.removed(), report.failed()),
        (0, 0, 0),
        "a store without unfinished writes has nothing to sweep: {report:?}"
    );
    assert_eq!(
        store.get_bytes(&kept).await.unwrap(),
        Bytes::from_static(b"finished")
    );
    if let Some(why) = &report.skipped {
        assert!(
            caps.leftovers.is_none(),
            "the sweep skipped although the server lists leftovers: {why}"
        );
        skip(caps, &format!("a listing of leftovers ({why})"));
        return;
    }
    let Some(leftovers) = &caps.leftovers else {
        skip(caps, "a way to make leftovers: sweep not observed");
        return;
    };
    (leftovers.make)().await;
    assert_eq!((leftovers.count)().await, 1, "the leftover was made");

    if leftovers.dated {
        let earlier = Utc::now() - chrono::Duration::hours(1);
        let report = store.sweep(earlier, false).await.unwrap();
        assert_eq!(report.found(), 0, "younger than the cutoff: {report:?}");
        assert_eq!((leftovers.count)().await, 1, "a young leftover is spared");
    } else {
        skip(
            caps,
            "true start times of leftovers: sparing a young one not checked",
        );
    }

    let report = store.sweep(later(), true).await.unwrap();
    assert_eq!(
        (report.found(), report.removed()),
        (1, 0),
        "a dry run counts: {report:?}"
    );
    assert_eq!((leftovers.count)().await, 1, "a dry run removes nothing");

    let report = store.sweep(later(), false).await.unwrap();
    assert_eq!(
        (report.found(), report.removed(), report.failed()),
        (1, 1, 0),
        "{report:?}"
    );
    assert_eq!((leftovers.count)().await, 0, "the stale leftover is gone");
    assert_eq!(store.sweep(later(), false).await.unwrap().found(), 0);

    // A staged upload belongs to its upload session, however old: the sweep leaves it alone.
    let staged = ObjectKey::parse(format!(
        "{}{}/{}",
        crate::STAGING_PREFIX,
        uuid::Uuid::new_v4(),
        uuid::Uuid::new_v4()
    ))
    .unwrap();
    let upload_id = store
        .create_multipart(&staged, &PutOptions::default())
        .await
        .unwrap();
    let report = store.sweep(later(), false).await.unwrap();
    assert_eq!(
        (report.found(), report.removed()),
        (0, 0),
        "a staged upload is not a leftover: {report:?}"
    );
    store.abort_multipart(&staged, &upload_id).await.unwrap();
    assert_eq!(
        store.get_bytes(&kept).await.unwrap(),
        Bytes::from_static(b"finished"),
        "the sweep never touches an object"
    );
}

/// `ping` answers on a working store, empty or not, and never creates what it probes.
pub async fn ping_answers(store: &dyn ObjectStore, _caps: &Capabilities) {
    store.ping().await.unwrap();
    store
        .put_bytes(
            &key("ping/a.bin"),
            Bytes::from_static(b"a"),
            PutOptions::default(),
        )
        .await
        .unwrap();
    store.ping().await.unwrap();
    let probe = key(crate::READY_PROBE_KEY);
    assert!(
        !store.exists(&probe).await.unwrap(),
        "ping leaves no object behind"
    );
}

fn tamper(url: &str) -> String {
    // Change the last character of the signature, wherever the backend puts it.
    for name in ["X-Amz-Signature=", "signature="] {
        if let Some(at) = url.find(name) {
            let start = at + name.len();
            let end = url[start..]
                .find('&')
                .map_or(url.len(), |offset| start + offset);
            let last = url[..end].chars().last().unwrap();
            let replacement = if last == '0' { '1' } else { '0' };
            return format!("{}{}{}", &url[..end - 1], replacement, &url[end..]);
        }
    }
    panic!("no signature in presigned URL {url}");
}

async fn fetch(url: &str) -> (u16, Bytes) {
    let response = reqwest::get(url).await.unwrap();
    let status = response.status().as_u16();
    (status, response.bytes().await.unwrap())
}

/// A presigned GET URL gives the bytes to a plain HTTP client.
pub async fn presigned_get(store: &dyn ObjectStore, caps: &Capabilities) {
    let k = key("presign/get me.png");
    let body = pattern_chunk(8, 0, 3000);
    store
        .put_bytes(&k, body.clone(), PutOptions::with_content_type("image/png"))
        .await
        .unwrap();
    let url = store
        .presign(
            PresignMethod::Get,
            &k,
            Duration::from_secs(300),
            &PresignOptions::default(),
        )
        .await
        .unwrap();
    let lifetime = url.expires_at - Utc::now();
    assert!(
        (200..=301).contains(&lifetime.num_seconds()),
        "expires_at {} not about 300 s away",
        url.expires_at
    );
    if !caps.serves_presigned_urls {
        skip(caps, "an HTTP endpoint: presigned GET not fetched");
        return;
    }
    let (status, bytes) = fetch(&url.url).await;
    assert_eq!(status, 200, "{}", url.url);
    assert_eq!(bytes, body);
}

/// A presigned PUT URL takes an upload from a plain HTTP client.
pub async fn presigned_put(store: &dyn ObjectStore, caps: &Capabilities) {
    let k = key("presign/put.txt");
    let url = store
        .presign(
            PresignMethod::Put,
            &k,
            Duration::from_secs(300),
            &PresignOptions::default(),
        )
        .await
        .unwrap();
    if !caps.serves_presigned_urls {
        skip(caps, "an HTTP endpoint: presigned PUT not sent");
        return;
    }
    let response = reqwest::Client::new()
        .put(&url.url)
        // moto hangs on a PUT without a content type.
        .header("content-type", "text/plain")
        .body("uploaded through a presigned URL")
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    assert!(
        (200..300).contains(&status),
        "{status}: {}",
        response.text().await.unwrap_or_default()
    );
    assert_eq!(
        store.get_bytes(&k).await.unwrap(),
        Bytes::from_static(b"uploaded through a presigned URL")
    );
}

/// A presigned URL with a changed signature is refused.
pub async fn presigned_tampered_refused(store: &dyn ObjectStore, caps: &Capabilities) {
    if !caps.serves_presigned_urls || !caps.verifies_presign {
        skip(caps, "presigned URL verification");
        return;
    }
    let k = key("presign/tampered.png");
    store
        .put_bytes(&k, Bytes::from_static(b"private"), PutOptions::default())
        .await
        .unwrap();
    let url = store
        .presign(
            PresignMethod::Get,
            &k,
            Duration::from_secs(300),
            &PresignOptions::default(),
        )
        .await
        .unwrap();
    let (status, body) = fetch(&tamper(&url.url)).await;
    assert_eq!(status, 403, "tampered URL answered {status}");
    assert_ne!(body, Bytes::from_static(b"private"));
    // And a URL for one key does not open another.
    let other = key("presign/other.png");
    store
        .put_bytes(&other, Bytes::from_static(b"other"), PutOptions::default())
        .await
        .unwrap();
    let (status, _) = fetch(&url.url.replace("tampered.png", "other.png")).await;
    assert_eq!(status, 403);
    // The URL binds its method: one signed for GET takes no upload.
    let response = reqwest::Client::new()
        .put(&url.url)
        .header("content-type", "text/plain")
        .body("overwritten")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 403, "PUT through a GET URL");
    assert_eq!(
        store.get_bytes(&k).await.unwrap(),
        Bytes::from_static(b"private")
    );
}

/// A presigned URL stops working once expired.
pub async fn presigned_expired_refused(store: &dyn ObjectStore, caps: &Capabilities) {
    if !caps.serves_presigned_urls || !caps.verifies_presign {
        skip(caps, "presigned URL verification");
        return;
    }
    let k = key("presign/expiring.png");
    store
        .put_bytes(&k, Bytes::from_static(b"soon gone"), PutOptions::default())
        .await
        .unwrap();
    let url = store
        .presign(
            PresignMethod::Get,
            &k,
            Duration::from_secs(1),
            &PresignOptions::default(),
        )
        .await
        .unwrap();
    // Expiry is checked in whole seconds: wait until the URL's lifetime has certainly passed.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (status, _) = fetch(&url.url).await;
    assert_eq!(status, 403, "expired URL answered {status}");
}

/// `head` reports the SHA-256 an upload was checked against (where the store keeps it).
async fn assert_head_sha256(
    store: &dyn ObjectStore,
    caps: &Capabilities,
    k: &ObjectKey,
    sha256: [u8; 32],
) {
    let reported = store.head(k).await.unwrap().sha256;
    if caps.reports_sha256 {
        assert_eq!(
            reported,
            Some(sha256),
            "head of {k} reports no or another SHA-256"
        );
    } else if let Some(reported) = reported {
        assert_eq!(reported, sha256);
    } else {
        skip(caps, "checksums on HEAD: SHA-256 not reported");
    }
}

/// A staging key as plugs-media lays them out: `uploads/{event_id}/{upload_id}`.
fn staging_key() -> ObjectKey {
    key(&format!(
        "uploads/{}/{}",
        uuid::Uuid::new_v4(),
        uuid::Uuid::new_v4()
    ))
}

/// Sends `body` with a plain HTTP PUT as a phone would: the URL's headers, except the length,
/// which the client sets from the body. Answers the status, the `ETag` and the answer's text.
async fn send_put(
    url: &PresignedUrl,
    body: Bytes,
    extra: &[(&str, &str)],
) -> (u16, String, String) {
    let mut request = reqwest::Client::new().put(&url.url);
    for (name, value) in &url.headers {
        if name != "content-length" && !extra.iter().any(|(n, _)| n == name) {
            request = request.header(name, value);
        }
    }
    if !url.headers.iter().any(|(name, _)| name == "content-type")
        && !extra.iter().any(|(n, _)| *n == "content-type")
    {
        // moto hangs on a PUT without a content type.
        request = request.header("content-type", "application/octet-stream");
    }
    for (name, value) in extra {
        request = request.header(*name, *value);
    }
    let response = match request.body(body).send().await {
        Ok(response) => response,
        // The server refused and closed the connection before the body was sent.
        Err(error) => return (0, String::new(), error.to_string()),
    };
    let status = response.status().as_u16();
    let etag = response
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (status, etag, response.text().await.unwrap_or_default())
}

/// A call naming an unknown or ended upload failed, with NotFound where the server says so.
fn assert_no_such_upload<T: std::fmt::Debug>(caps: &Capabilities, result: Result<T, StoreError>) {
    match result {
        Err(StoreError::NotFound { .. }) => {}
        Err(other) if !caps.lists_parts => {
            skip(caps, "NoSuchUpload answers: another error accepted");
            eprintln!("(answered {other})");
        }
        other => panic!("expected NotFound for an unknown or ended upload, got {other:?}"),
    }
}

/// A refusal: a client error, or a connection the server closed on the body (status 0).
fn refused(status: u16) -> bool {
    status == 0 || (400..500).contains(&status)
}

fn bare(etag: &str) -> &str {
    etag.trim_matches('"')
}

/// A presigned PUT bound to a length, a content type and a SHA-256 takes exactly that upload:
/// the object keeps the type and the checksum; another length, type or body is refused and
/// stores nothing.
pub async fn presigned_put_bound(store: &dyn ObjectStore, caps: &Capabilities) {
    let body = pattern_chunk(21, 0, 3001);
    let sha256: [u8; 32] = Sha256::digest(&body).into();
    let options = PresignOptions::for_put(body.len() as u64, "image/jpeg").with_sha256(sha256);
    let ttl = Duration::from_secs(300);
    let k = staging_key();
    let url = store
        .presign(PresignMethod::Put, &k, ttl, &options)
        .await
        .unwrap();
    let header = |name: &str| {
        url.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(
        header("content-type").as_deref(),
        Some("image/jpeg"),
        "{:?}",
        url.headers
    );
    assert!(
        header("x-amz-checksum-sha256").is_some(),
        "{:?}",
        url.headers
    );
    assert_eq!(
        header("content-length"),
        Some("3001".to_owned()),
        "{:?}",
        url.headers
    );
    if !caps.serves_presigned_urls {
        skip(caps, "an HTTP endpoint: bound presigned PUT not sent");
        return;
    }
    let (status, _, text) = send_put(&url, body.clone(), &[]).await;
    assert!((200..300).contains(&status), "{status}: {text}");
    assert_eq!(store.get_bytes(&k).await.unwrap(), body);
    let meta = store.head(&k).await.unwrap();
    assert_eq!(meta.size, 3001);
    assert_eq!(meta.content_type.as_deref(), Some("image/jpeg"));
    assert_head_sha256(store, caps, &k, sha256).await;

    // Another length, or another content type, than the URL was signed for.
    if caps.verifies_presign {
        let options = PresignOptions::for_put(3001, "image/jpeg");
        let longer = pattern_chunk(21, 0, 3002);
        for (what, body, extra) in [
            ("a longer body", longer, &[][..]),
            (
                "another type",
                body.clone(),
                &[("content-type", "text/html")][..],
            ),
        ] {
            let k = staging_key();
            let url = store
                .presign(PresignMethod::Put, &k, ttl, &options)
                .await
                .unwrap();
            let (status, _, text) = send_put(&url, body, extra).await;
            assert!(refused(status), "{what} answered {status}: {text}");
            if !caps.refusals_store_nothing {
                skip(
                    caps,
                    "atomic refusals: a presigned PUT refused with 403 may keep bytes",
                );
                continue;
            }
            assert_absent(store, &k).await;
        }
    } else {
        skip(
            caps,
            "presigned URL verification: a signed Content-Length not enforced",
        );
    }

    // Bytes of the declared length whose SHA-256 is not the one bound.
    if caps.verifies_checksums {
        let k = staging_key();
        let url = store
            .presign(PresignMethod::Put, &k, ttl, &options)
            .await
            .unwrap();
        let other = pattern_chunk(22, 0, 3001);
        let (status, _, text) = send_put(&url, other, &[]).await;
        assert!(refused(status), "other bytes answered {status}: {text}");
        if caps.refusals_store_nothing {
            assert_absent(store, &k).await;
        } else {
            skip(
                caps,
                "atomic refusals: a presigned PUT refused for its checksum may keep bytes",
            );
        }
    } else {
        skip(caps, "x-amz-checksum-sha256 verification on PUT");
    }
}

/// Sizes of the parts of the multipart cases: two of S3's smallest, then a short last one.
fn part_sizes() -> [u64; 3] {
    [MIN_PART_SIZE as u64, MIN_PART_SIZE as u64, 12_345]
}

fn multipart_options() -> PutOptions {
    let mut options = PutOptions::with_content_type("video/mp4");
    options.metadata = BTreeMap::from([("origin".to_owned(), "multipart".to_owned())]);
    options
}

/// Three parts PUT by a plain HTTP client through presigned part URLs (each bound to its
/// length), listed, then completed into one object with the upload's content type and metadata.
pub async fn multipart_presigned_parts(store: &dyn ObjectStore, caps: &Capabilities) {
    let k = staging_key();
    let upload_id = store
        .create_multipart(&k, &multipart_options())
        .await
        .unwrap();
    let ttl = Duration::from_secs(300);
    let sizes = part_sizes();
    let mut completed = Vec::new();
    for (index, size) in sizes.iter().enumerate() {
        let number = index as u32 + 1;
        let bytes = pattern_chunk(30, index as u64, *size as usize);
        let url = store
            .presign_part(&k, &upload_id, number, *size, ttl)
            .await
            .unwrap();
        if !caps.serves_presigned_urls {
            let stream = futures::stream::iter([Ok(bytes)]).boxed();
            let part = store
                .upload_part(&k, &upload_id, number, stream, *size)
                .await
                .unwrap();
            completed.push(CompletedPart::from(&part));
            continue;
        }
        if index == 0 && caps.verifies_presign {
            let (status, _, text) = send_put(&url, bytes.slice(1..), &[]).await;
            assert!(refused(status), "a short part answered {status}: {text}");
        }
        let (status, etag, text) = send_put(&url, bytes, &[]).await;
        assert!(
            (200..300).contains(&status),
            "part {number}: {status}: {text}"
        );
        assert!(!etag.is_empty(), "part {number} answered no ETag");
        completed.push(CompletedPart::new(number, etag));
    }
    if !caps.serves_presigned_urls {
        skip(
            caps,
            "an HTTP endpoint: parts uploaded by the server instead",
        );
    }
    if caps.lists_parts {
        let listed = store.list_parts(&k, &upload_id).await.unwrap();
        assert_eq!(
            listed
                .iter()
                .map(|p| (p.part_number, p.size))
                .collect::<Vec<_>>(),
            vec![(1, sizes[0]), (2, sizes[1]), (3, sizes[2])]
        );
        for (part, done) in listed.iter().zip(&completed) {
            assert_eq!(bare(&part.etag), bare(&done.etag));
        }
    } else {
        skip(caps, "a usable ListParts: parts not listed");
    }
    assert!(
        !store.exists(&k).await.unwrap(),
        "no object before the completion"
    );
    let put = store
        .complete_multipart(&k, &upload_id, &completed)
        .await
        .unwrap();
    let total: u64 = sizes.iter().sum();
    assert_eq!(put.size, total);
    let got = store.get(&k, GetOptions::default()).await.unwrap();
    assert_eq!(got.meta.size, total);
    let mut expected = Vec::new();
    for (index, size) in sizes.iter().enumerate() {
        expected.extend_from_slice(&pattern_chunk(30, index as u64, *size as usize));
    }
    let bytes: Vec<Bytes> = futures::TryStreamExt::try_collect(got.body).await.unwrap();
    assert!(
        bytes.concat() == expected,
        "the object is not its parts in order"
    );
    let meta = store.head(&k).await.unwrap();
    assert_eq!(meta.etag, put.etag);
    assert_eq!(meta.content_type.as_deref(), Some("video/mp4"));
    assert_eq!(meta.metadata, multipart_options().metadata);
    if caps.lists_parts {
        assert!(matches!(
            store.list_parts(&k, &upload_id).await,
            Err(StoreError::NotFound { .. })
        ));
    }
    assert_no_pending_upload(caps, k.as_str()).await;
}

/// Parts uploaded by the server from streams (a resumable upload's chunks): the declared size
/// is held to, a part uploaded again replaces the first, a wrong list is refused and leaves the
/// upload open, and the completion joins the parts.
pub async fn multipart_server_parts(store: &dyn ObjectStore, caps: &Capabilities) {
    let k = staging_key();
    let upload_id = store
        .create_multipart(&k, &PutOptions::default())
        .await
        .unwrap();
    let first_size = MIN_PART_SIZE as u64 + 7;
    let first = store
        .upload_part(
            &k,
            &upload_id,
            1,
            pattern_stream(first_size, 40),
            first_size,
        )
        .await
        .unwrap();
    assert_eq!((first.part_number, first.size), (1, first_size));
    match store
        .upload_part(&k, &upload_id, 2, pattern_stream(100, 41), 99)
        .await
    {
        Err(StoreError::SizeMismatch { expected: 99, .. }) => {}
        other => panic!("expected SizeMismatch, got {other:?}"),
    }
    let _replaced = store
        .upload_part(&k, &upload_id, 2, pattern_stream(500, 42), 500)
        .await
        .unwrap();
    let second = store
        .upload_part(&k, &upload_id, 2, pattern_stream(1000, 41), 1000)
        .await
        .unwrap();
    if caps.lists_parts {
        let listed = store.list_parts(&k, &upload_id).await.unwrap();
        assert_eq!(
            listed
                .iter()
                .map(|p| (p.part_number, p.size))
                .collect::<Vec<_>>(),
            vec![(1, first_size), (2, 1000)]
        );
        assert_eq!(bare(&listed[1].etag), bare(&second.etag));
    } else {
        skip(caps, "a usable ListParts: parts not listed");
    }
    let unknown = store
        .upload_part(&k, "no-such-upload", 1, pattern_stream(10, 1), 10)
        .await;
    assert_no_such_upload(caps, unknown);

    // A part with another ETag, or parts out of order: refused, the upload stays open.
    if !caps.lists_parts {
        skip(caps, "checks of the completed part list");
        let parts = [CompletedPart::from(&first), CompletedPart::from(&second)];
        store
            .complete_multipart(&k, &upload_id, &parts)
            .await
            .unwrap();
        return;
    }
    let wrong_etag = [
        CompletedPart::from(&first),
        CompletedPart::new(2, "\"0123456789abcdef0123456789abcdef\""),
    ];
    let out_of_order = [CompletedPart::from(&second), CompletedPart::from(&first)];
    for parts in [&wrong_etag[..], &out_of_order[..]] {
        match store.complete_multipart(&k, &upload_id, parts).await {
            Err(StoreError::InvalidPart { .. }) => {}
            other => panic!("expected InvalidPart, got {other:?}"),
        }
    }
    assert_absent(store, &k).await;
    let parts = [CompletedPart::from(&first), CompletedPart::from(&second)];
    let put = store
        .complete_multipart(&k, &upload_id, &parts)
        .await
        .unwrap();
    assert_eq!(put.size, first_size + 1000);
    let mut expected = pattern_chunks(first_size, 40).collect::<Vec<_>>().concat();
    expected.extend(pattern_chunks(1000, 41).collect::<Vec<_>>().concat());
    assert!(
        store.get_bytes(&k).await.unwrap() == expected,
        "the object is not its parts"
    );

    // Every part but the last must be at least 5 MiB.
    let small = staging_key();
    let upload_id = store
        .create_multipart(&small, &PutOptions::default())
        .await
        .unwrap();
    let mut parts = Vec::new();
    for number in 1..=2 {
        let part = store
            .upload_part(&small, &upload_id, number, pattern_stream(1000, 43), 1000)
            .await
            .unwrap();
        parts.push(CompletedPart::from(&part));
    }
    match store.complete_multipart(&small, &upload_id, &parts).await {
        Err(StoreError::InvalidPart { .. }) => {}
        Ok(_) if !caps.enforces_min_part_size => {
            skip(caps, "the 5 MiB minimum part size");
            return;
        }
        other => panic!("expected InvalidPart for a small first part, got {other:?}"),
    }
    store.abort_multipart(&small, &upload_id).await.unwrap();
}

/// An aborted upload is gone with its parts; aborting again succeeds.
pub async fn multipart_abort_removes_parts(store: &dyn ObjectStore, caps: &Capabilities) {
    let k = staging_key();
    let upload_id = store
        .create_multipart(&k, &PutOptions::default())
        .await
        .unwrap();
    let part = store
        .upload_part(&k, &upload_id, 1, pattern_stream(2000, 50), 2000)
        .await
        .unwrap();
    store.abort_multipart(&k, &upload_id).await.unwrap();
    if caps.lists_parts {
        assert!(matches!(
            store.list_parts(&k, &upload_id).await,
            Err(StoreError::NotFound { .. })
        ));
    }
    let completed = store
        .complete_multipart(&k, &upload_id, &[CompletedPart::from(&part)])
        .await;
    assert_no_such_upload(caps, completed);
    let again = store.abort_multipart(&k, &upload_id).await;
    if caps.lists_parts {
        again.unwrap();
    }
    assert_absent(store, &k).await;
    assert_no_pending_upload(caps, k.as_str()).await;
}

/// A copy with new options has the source's bytes and the new content type and metadata; a
/// declared size that differs copies nothing.
pub async fn copy_with_replaces_metadata(store: &dyn ObjectStore, _caps: &Capabilities) {
    let from = staging_key();
    let body = pattern_chunk(60, 0, 40_000);
    store
        .put_bytes(&from, body.clone(), sample_options())
        .await
        .unwrap();
    let to = key("events/final/media/2026/01/02/120000_000001.mp4");
    let mut options = PutOptions::with_content_type("video/mp4");
    options.metadata = BTreeMap::from([("state".to_owned(), "final".to_owned())]);
    options.size = Some(40_000);
    let put = store.copy_with(&from, &to, options.clone()).await.unwrap();
    assert_eq!(put.size, 40_000);
    assert_eq!(store.get_bytes(&to).await.unwrap(), body);
    let meta = store.head(&to).await.unwrap();
    assert_eq!(meta.content_type.as_deref(), Some("video/mp4"));
    assert_eq!(meta.metadata, options.metadata);
    assert_eq!(bare(&meta.etag), bare(&put.etag));
    assert_eq!(
        store.get_bytes(&from).await.unwrap(),
        body,
        "the source stays"
    );

    let elsewhere = key("events/final/media/2026/01/02/120000_000002.mp4");
    options.size = Some(39_999);
    match store.copy_with(&from, &elsewhere, options.clone()).await {
        Err(StoreError::SizeMismatch { .. }) => {}
        other => panic!("expected SizeMismatch, got {other:?}"),
    }
    assert_absent(store, &elsewhere).await;
    match store
        .copy_with(&key("copy/missing"), &elsewhere, PutOptions::default())
        .await
    {
        Err(StoreError::NotFound { .. }) => {}
        other => panic!("expected NotFound, got {other:?}"),
    }
}
