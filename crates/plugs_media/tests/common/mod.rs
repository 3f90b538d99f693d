//! Shared test fixtures: a service over fakes, a fault-injecting store, bodies, and the
//! consistency check every fault test ends with.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, TimeDelta, Utc};
use futures::{StreamExt, TryStreamExt};
use plugs_domain::{Clock, EventId, EventMedia, ManualClock, MediaPolicy, MediaStatus, UserId};
use plugs_media::{MediaService, ServiceConfig, UploadRequest};
use plugs_persistence::{InMemoryRepository, MediaRepository};
use plugs_storage::{
    ByteStream, GetOptions, GetResult, ListOptions, ListPage, MemoryStore, ObjectKey, ObjectMeta,
    ObjectStore, ObjectStoreExt, PresignMethod, PresignOptions, PresignedUrl, PutOptions,
    PutResult, StoreError, SweepReport,
};
use sha2::{Digest, Sha256};

/// A service over an in-memory repository and a [`TestStore`], all on one manual clock.
pub struct Harness {
    pub service: MediaService,
    pub store: Arc<TestStore>,
    pub repo: Arc<InMemoryRepository>,
    pub clock: Arc<ManualClock>,
    pub alice: UserId,
    pub bob: UserId,
}

impl Harness {
    pub fn new() -> Self {
        Self::with_config(ServiceConfig::default())
    }

    pub fn with_max_size(max: u64) -> Self {
        Self::with_config(ServiceConfig {
            policy: MediaPolicy::default().with_max_size_bytes(max),
            ..ServiceConfig::default()
        })
    }

    pub fn with_config(config: ServiceConfig) -> Self {
        let clock = Arc::new(ManualClock::default());
        let store = Arc::new(TestStore::new(clock.clone()));
        let repo = Arc::new(InMemoryRepository::new());
        let service = MediaService::new(
            store.clone(),
            repo.clone(),
            repo.clone(),
            repo.clone(),
            config,
        )
        .with_clock(clock.clone());
        Self {
            service,
            store,
            repo,
            clock,
            alice: UserId::parse("alice").unwrap(),
            bob: UserId::parse("bob").unwrap(),
        }
    }

    pub async fn event(&self) -> EventId {
        self.service
            .create_event(&self.alice, "Picnic")
            .await
            .unwrap()
            .id
    }

    /// Uploads a PNG of `len` bytes as alice.
    pub async fn upload_png(&self, event: EventId, len: usize) -> EventMedia {
        self.service
            .upload(&self.alice, event, png_request(), body(png(len), 1000))
            .await
            .unwrap()
    }

    /// Moves the clock past the default one-hour grace period.
    pub fn after_grace(&self) {
        self.clock.advance(TimeDelta::hours(2));
    }
}

pub fn png_request() -> UploadRequest {
    UploadRequest {
        title: Some("Sunset".into()),
        description: None,
        tags: Some("beach, 2024".into()),
        filename: Some("sunset.png".into()),
        declared_content_type: Some("image/png".into()),
        declared_size: None,
    }
}

/// `len` bytes that start like a PNG (signature and IHDR chunk header), then a counting pattern.
pub fn png(len: usize) -> Vec<u8> {
    let mut bytes = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR".to_vec();
    bytes.resize(64, 0);
    bytes.extend(
        (0..)
            .map(|i: u32| (i % 251) as u8)
            .take(len.saturating_sub(64)),
    );
    bytes.truncate(len);
    bytes
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A body arriving in `chunk`-byte pieces.
pub fn body(bytes: Vec<u8>, chunk: usize) -> ByteStream {
    let chunks: Vec<Result<Bytes, StoreError>> = Bytes::from(bytes)
        .chunks(chunk)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    futures::stream::iter(chunks).boxed()
}

/// A body whose client disconnects after `after` bytes.
pub fn failing_body(bytes: Vec<u8>, chunk: usize, after: usize) -> ByteStream {
    let sent = bytes[..after].to_vec();
    body(sent, chunk)
        .chain(futures::stream::once(async {
            Err(StoreError::Body {
                source: "client disconnected".into(),
            })
        }))
        .boxed()
}

/// A body that counts how many bytes the service pulled from it.
pub fn counted_body(bytes: Vec<u8>, chunk: usize) -> (ByteStream, Arc<AtomicU64>) {
    let pulled = Arc::new(AtomicU64::new(0));
    let counter = pulled.clone();
    let stream = body(bytes, chunk)
        .inspect_ok(move |c| {
            counter.fetch_add(c.len() as u64, Ordering::SeqCst);
        })
        .boxed();
    (stream, pulled)
}

/// The invariant every fault test ends with: every object under `events/` is claimed by a
/// `ready` record (or a record in one of `also_allowed`), every `ready` record has its object
/// with the recorded size and checksum, and no record is in a state the test did not allow.
pub async fn assert_consistent(
    store: &dyn ObjectStore,
    repo: &InMemoryRepository,
    also_allowed: &[MediaStatus],
) {
    for object in store.list_all(Some("events/")).await.unwrap() {
        let record = repo.find_by_key(object.key.as_str()).await.unwrap();
        let record = record.unwrap_or_else(|| panic!("orphan object {}", object.key));
        assert!(
            record.status == MediaStatus::Ready || also_allowed.contains(&record.status),
            "object {} is claimed by a {:?} record",
            object.key,
            record.status
        );
    }
    for status in [MediaStatus::Pending, MediaStatus::Deleting] {
        if !also_allowed.contains(&status) {
            let left = all_records(repo, status).await;
            assert!(left.is_empty(), "unexpected {status:?} records: {left:?}");
        }
    }
    for record in all_records(repo, MediaStatus::Ready).await {
        let key = ObjectKey::parse(record.s3_key.as_str()).unwrap();
        let bytes = store
            .get_bytes(&key)
            .await
            .unwrap_or_else(|e| panic!("ready record {} without its object: {e}", record.id));
        assert_eq!(
            bytes.len() as u64,
            record.size_bytes,
            "size of {}",
            record.s3_key
        );
        assert_eq!(
            Some(sha256_hex(&bytes)),
            record.sha256,
            "checksum of {}",
            record.s3_key
        );
    }
}

pub async fn all_records(repo: &InMemoryRepository, status: MediaStatus) -> Vec<EventMedia> {
    repo.list_stale(
        status,
        DateTime::<Utc>::MAX_UTC,
        DateTime::<Utc>::MAX_UTC,
        100_000,
    )
    .await
    .unwrap()
}

pub async fn object_keys(store: &dyn ObjectStore) -> Vec<String> {
    store
        .list_all(Some("events/"))
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key.to_string())
        .collect()
}

/// Faults a [`TestStore`] can be told to inject.
#[derive(Debug, Default)]
pub struct StoreFaults {
    /// Every call fails with `Unavailable` without doing anything.
    pub unavailable: bool,
    /// The next put fails with `Unavailable` before reading any byte.
    pub refuse_next_put: bool,
    /// The next put fails with `Unavailable` after this many body bytes (nothing is stored).
    pub fail_next_put_after: Option<u64>,
    /// The next put stores the object, then answers `Unavailable` (a lost acknowledgement).
    pub fail_next_put_after_commit: bool,
    /// The next this-many deletes fail with `Unavailable`.
    pub fail_deletes: u32,
    /// The next sweep answers this report instead of sweeping (the memory store has nothing
    /// to sweep).
    pub next_sweep: Option<SweepReport>,
    /// The next sweep fails with `Unavailable`, alone of all the calls.
    pub fail_next_sweep: bool,
}

/// The object store of these tests: a [`MemoryStore`] behind a wrapper that injects faults and
/// dates objects by the shared manual clock (so the reconciler's grace period can be tested).
#[derive(Debug)]
pub struct TestStore {
    inner: MemoryStore,
    clock: Arc<ManualClock>,
    stamps: Mutex<HashMap<String, DateTime<Utc>>>,
    pub faults: Mutex<StoreFaults>,
    puts: AtomicU64,
    /// The `PutOptions::size` of every put, in order.
    declared_sizes: Mutex<Vec<Option<u64>>>,
    /// The arguments of every sweep, in order.
    sweeps: Mutex<Vec<(DateTime<Utc>, bool)>>,
}

fn injected(what: &str) -> StoreError {
    StoreError::Unavailable {
        source: format!("injected store fault in {what}").into(),
    }
}

impl TestStore {
    pub fn new(clock: Arc<ManualClock>) -> Self {
        Self {
            inner: MemoryStore::new(),
            clock,
            stamps: Mutex::default(),
            faults: Mutex::default(),
            puts: AtomicU64::new(0),
            declared_sizes: Mutex::default(),
            sweeps: Mutex::default(),
        }
    }

    /// The `(older_than, dry_run)` of every sweep asked of the store, in order.
    pub fn sweeps(&self) -> Vec<(DateTime<Utc>, bool)> {
        self.sweeps.lock().unwrap().clone()
    }

    pub fn faults(&self) -> std::sync::MutexGuard<'_, StoreFaults> {
        self.faults.lock().unwrap()
    }

    /// How many puts were attempted.
    pub fn puts(&self) -> u64 {
        self.puts.load(Ordering::SeqCst)
    }

    /// The size each put declared to the store, in order.
    pub fn declared_sizes(&self) -> Vec<Option<u64>> {
        self.declared_sizes.lock().unwrap().clone()
    }

    fn check_up(&self, what: &str) -> Result<(), StoreError> {
        if self.faults().unavailable {
            Err(injected(what))
        } else {
            Ok(())
        }
    }

    fn restamp(&self, meta: &mut ObjectMeta) {
        if let Some(at) = self.stamps.lock().unwrap().get(meta.key.as_str()) {
            meta.last_modified = *at;
        }
    }
}

#[async_trait]
impl ObjectStore for TestStore {
    async fn put(
        &self,
        key: &ObjectKey,
        body: ByteStream,
        options: PutOptions,
    ) -> Result<PutResult, StoreError> {
        self.puts.fetch_add(1, Ordering::SeqCst);
        self.declared_sizes.lock().unwrap().push(options.size);
        self.check_up("put")?;
        let (fail_after, after_commit) = {
            let mut faults = self.faults();
            if std::mem::take(&mut faults.refuse_next_put) {
                return Err(injected("put"));
            }
            (
                faults.fail_next_put_after.take(),
                std::mem::take(&mut faults.fail_next_put_after_commit),
            )
        };
        let body = match fail_after {
            None => body,
            Some(limit) => {
                let mut seen = 0u64;
                body.map(move |chunk| {
                    let chunk = chunk?;
                    seen += chunk.len() as u64;
                    if seen >= limit {
                        Err(injected("put (mid-stream)"))
                    } else {
                        Ok(chunk)
                    }
                })
                .boxed()
            }
        };
        let result = self.inner.put(key, body, options).await?;
        self.stamps
            .lock()
            .unwrap()
            .insert(key.to_string(), self.clock.now());
        if after_commit {
            return Err(injected("put (after commit)"));
        }
        Ok(result)
    }

    async fn get(&self, key: &ObjectKey, options: GetOptions) -> Result<GetResult, StoreError> {
        self.check_up("get")?;
        let mut result = self.inner.get(key, options).await?;
        self.restamp(&mut result.meta);
        Ok(result)
    }

    async fn head(&self, key: &ObjectKey) -> Result<ObjectMeta, StoreError> {
        self.check_up("head")?;
        let mut meta = self.inner.head(key).await?;
        self.restamp(&mut meta);
        Ok(meta)
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), StoreError> {
        self.check_up("delete")?;
        {
            let mut faults = self.faults();
            if faults.fail_deletes > 0 {
                faults.fail_deletes -= 1;
                return Err(injected("delete"));
            }
        }
        self.inner.delete(key).await?;
        self.stamps.lock().unwrap().remove(key.as_str());
        Ok(())
    }

    async fn copy(&self, from: &ObjectKey, to: &ObjectKey) -> Result<(), StoreError> {
        self.check_up("copy")?;
        self.inner.copy(from, to).await?;
        self.stamps
            .lock()
            .unwrap()
            .insert(to.to_string(), self.clock.now());
        Ok(())
    }

    async fn list(&self, options: ListOptions) -> Result<ListPage, StoreError> {
        self.check_up("list")?;
        let mut page = self.inner.list(options).await?;
        for meta in &mut page.objects {
            self.restamp(meta);
        }
        Ok(page)
    }

    async fn presign(
        &self,
        method: PresignMethod,
        key: &ObjectKey,
        expires_in: Duration,
        options: &PresignOptions,
    ) -> Result<PresignedUrl, StoreError> {
        self.check_up("presign")?;
        self.inner.presign(method, key, expires_in, options).await
    }

    async fn copy_with(
        &self,
        from: &ObjectKey,
        to: &ObjectKey,
        options: PutOptions,
    ) -> Result<PutResult, StoreError> {
        self.check_up("copy")?;
        let result = self.inner.copy_with(from, to, options).await?;
        self.stamps
            .lock()
            .unwrap()
            .insert(to.to_string(), self.clock.now());
        Ok(result)
    }

    async fn create_multipart(
        &self,
        key: &ObjectKey,
        options: &PutOptions,
    ) -> Result<String, StoreError> {
        self.check_up("create_multipart")?;
        self.inner.create_multipart(key, options).await
    }

    async fn upload_part(
        &self,
        key: &ObjectKey,
        upload_id: &str,
        part_number: u32,
        body: ByteStream,
        size: u64,
    ) -> Result<plugs_storage::PartInfo, StoreError> {
        self.check_up("upload_part")?;
        self.inner
            .upload_part(key, upload_id, part_number, body, size)
            .await
    }

    async fn presign_part(
        &self,
        key: &ObjectKey,
        upload_id: &str,
        part_number: u32,
        size: u64,
        expires_in: Duration,
    ) -> Result<PresignedUrl, StoreError> {
        self.check_up("presign")?;
        self.inner
            .presign_part(key, upload_id, part_number, size, expires_in)
            .await
    }

    async fn list_parts(
        &self,
        key: &ObjectKey,
        upload_id: &str,
    ) -> Result<Vec<plugs_storage::PartInfo>, StoreError> {
        self.check_up("list_parts")?;
        self.inner.list_parts(key, upload_id).await
    }

    async fn complete_multipart(
        &self,
        key: &ObjectKey,
        upload_id: &str,
        parts: &[plugs_storage::CompletedPart],
    ) -> Result<PutResult, StoreError> {
        self.check_up("complete_multipart")?;
        let result = self.inner.complete_multipart(key, upload_id, parts).await?;
        self.stamps
            .lock()
            .unwrap()
            .insert(key.to_string(), self.clock.now());
        Ok(result)
    }

    async fn abort_multipart(&self, key: &ObjectKey, upload_id: &str) -> Result<(), StoreError> {
        self.check_up("abort_multipart")?;
        self.inner.abort_multipart(key, upload_id).await
    }

    async fn sweep(
        &self,
        older_than: DateTime<Utc>,
        dry_run: bool,
    ) -> Result<SweepReport, StoreError> {
        self.sweeps.lock().unwrap().push((older_than, dry_run));
        self.check_up("sweep")?;
        {
            let mut faults = self.faults();
            if std::mem::take(&mut faults.fail_next_sweep) {
                return Err(injected("sweep"));
            }
            if let Some(report) = faults.next_sweep.take() {
                return Ok(report);
            }
        }
        self.inner.sweep(older_than, dry_run).await
    }
}

/// Stores an object no record claims, as a crash between put and record would have left.
pub async fn put_orphan(store: &TestStore, key: &str) {
    store
        .put_bytes(
            &ObjectKey::parse(key).unwrap(),
            Bytes::from_static(b"orphan"),
            PutOptions::default(),
        )
        .await
        .unwrap();
}

impl Harness {
    pub fn clock_now(&self) -> DateTime<Utc> {
        self.clock.now()
    }
}
