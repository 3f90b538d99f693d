//! `FaultyStore`: a wrapper that makes chosen calls fail, for the service's fault-injection tests.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;

use crate::{
    ByteStream, CompletedPart, GetOptions, GetResult, ListOptions, ListPage, ObjectKey, ObjectMeta,
    ObjectStore, PartInfo, PresignMethod, PresignOptions, PresignedUrl, PutOptions, PutResult,
    Result, StoreError, SweepReport,
};

/// The calls of [`ObjectStore`], to choose which one fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Operation {
    /// [`ObjectStore::put`].
    Put,
    /// [`ObjectStore::get`].
    Get,
    /// [`ObjectStore::head`].
    Head,
    /// [`ObjectStore::delete`].
    Delete,
    /// [`ObjectStore::copy`].
    Copy,
    /// [`ObjectStore::list`].
    List,
    /// [`ObjectStore::presign`].
    Presign,
    /// [`ObjectStore::copy_with`].
    CopyWith,
    /// [`ObjectStore::create_multipart`].
    CreateMultipart,
    /// [`ObjectStore::upload_part`] (its body is cut like a put's, by
    /// [`FaultyStore::fail_put_body_after`]).
    UploadPart,
    /// [`ObjectStore::presign_part`].
    PresignPart,
    /// [`ObjectStore::list_parts`].
    ListParts,
    /// [`ObjectStore::complete_multipart`].
    CompleteMultipart,
    /// [`ObjectStore::abort_multipart`].
    AbortMultipart,
    /// [`ObjectStore::sweep`].
    Sweep,
    /// [`ObjectStore::ping`].
    Ping,
}

/// Which error an injected fault raises.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum FaultKind {
    /// [`StoreError::Unavailable`]: an outage. The default.
    #[default]
    Unavailable,
    /// [`StoreError::Timeout`].
    Timeout,
    /// [`StoreError::AccessDenied`].
    AccessDenied,
    /// [`StoreError::InvalidCredentials`].
    InvalidCredentials,
    /// [`StoreError::Other`].
    Other,
}

impl FaultKind {
    /// The error this fault raises for a call on `key`.
    pub fn error(self, key: &str) -> StoreError {
        let source = || format!("injected fault on {key}").into();
        match self {
            Self::Unavailable => StoreError::Unavailable { source: source() },
            Self::Timeout => StoreError::Timeout { source: source() },
            Self::AccessDenied => StoreError::AccessDenied {
                key: key.to_owned(),
                source: source(),
            },
            Self::InvalidCredentials => StoreError::InvalidCredentials { source: source() },
            Self::Other => StoreError::Other {
                message: "injected fault".to_owned(),
                source: source(),
            },
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum When {
    /// The call with this ordinal (counting every call of the operation since the store was made).
    Call(u64),
    Always,
}

#[derive(Debug, Default)]
struct State {
    calls: HashMap<Operation, u64>,
    failures: Vec<(Operation, When, FaultKind)>,
    put_body_cut: Option<(u64, FaultKind)>,
    get_body_cut: Option<(u64, FaultKind)>,
    latency: Duration,
}

/// Wraps any store and fails chosen calls: the Nth call of an operation, every call of one, a
/// put's body after N bytes (the wrapped store sees its body fail, as when the connection to the
/// store drops mid-upload), a get's body after N bytes, and optional latency before every call.
/// Faults are set and cleared while the store is in use (it is shared through an `Arc`).
///
/// ```
/// # use std::sync::Arc;
/// # use plugs_storage::{FaultyStore, MemoryStore, ObjectKey, ObjectStoreExt, Operation, StoreError};
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let store = FaultyStore::new(Arc::new(MemoryStore::new()));
/// store.fail_next(Operation::Head);
/// let key = ObjectKey::parse("a").unwrap();
/// assert!(matches!(store.exists(&key).await, Err(StoreError::Unavailable { .. })));
/// assert!(!store.exists(&key).await.unwrap());
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct FaultyStore {
    inner: Arc<dyn ObjectStore>,
    state: Arc<Mutex<State>>,
}

impl FaultyStore {
    /// Wraps `inner`, with no fault set.
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        Self {
            inner,
            state: Arc::default(),
        }
    }

    /// The wrapped store (to look behind the faults).
    pub fn inner(&self) -> &Arc<dyn ObjectStore> {
        &self.inner
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update is a single assignment: a poisoned lock is still consistent.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Fails the `n`th call of `operation` from now (1 = the next one) with `kind`.
    pub fn fail_nth_with(&self, operation: Operation, n: u64, kind: FaultKind) -> &Self {
        let mut state = self.lock();
        let at = state.calls.get(&operation).copied().unwrap_or(0) + n.max(1);
        state.failures.push((operation, When::Call(at), kind));
        drop(state);
        self
    }

    /// Fails the `n`th call of `operation` from now (1 = the next one) as unavailable.
    pub fn fail_nth(&self, operation: Operation, n: u64) -> &Self {
        self.fail_nth_with(operation, n, FaultKind::Unavailable)
    }

    /// Fails the next call of `operation` as unavailable.
    pub fn fail_next(&self, operation: Operation) -> &Self {
        self.fail_nth(operation, 1)
    }

    /// Fails every call of `operation` with `kind` until [`FaultyStore::clear`].
    pub fn fail_always(&self, operation: Operation, kind: FaultKind) -> &Self {
        self.lock().failures.push((operation, When::Always, kind));
        self
    }

    /// Makes the body of the next put or part upload fail after `bytes` bytes have passed to the
    /// wrapped store.
    pub fn fail_put_body_after(&self, bytes: u64, kind: FaultKind) -> &Self {
        self.lock().put_body_cut = Some((bytes, kind));
        self
    }

    /// Makes the body of the next get fail after `bytes` bytes have reached the caller.
    pub fn fail_get_body_after(&self, bytes: u64, kind: FaultKind) -> &Self {
        self.lock().get_body_cut = Some((bytes, kind));
        self
    }

    /// Waits this long before every call.
    pub fn set_latency(&self, latency: Duration) -> &Self {
        self.lock().latency = latency;
        self
    }

    /// Removes every fault and the latency (call counts stay).
    pub fn clear(&self) {
        let mut state = self.lock();
        state.failures.clear();
        state.put_body_cut = None;
        state.get_body_cut = None;
        state.latency = Duration::ZERO;
    }

    /// How many calls of `operation` were made, failed ones included.
    pub fn calls(&self, operation: Operation) -> u64 {
        self.lock().calls.get(&operation).copied().unwrap_or(0)
    }

    /// Counts the call, waits the latency, and answers the injected error if this call fails.
    async fn enter(&self, operation: Operation, key: &str) -> Result<()> {
        let (latency, fault) = {
            let mut state = self.lock();
            let count = state.calls.entry(operation).or_insert(0);
            *count += 1;
            let count = *count;
            let position = state.failures.iter().position(|(op, when, _)| {
                *op == operation
                    && match when {
                        When::Always => true,
                        When::Call(at) => *at == count,
                    }
            });
            let fault = position.map(|index| {
                let (_, when, kind) = state.failures[index];
                if matches!(when, When::Call(_)) {
                    state.failures.remove(index);
                }
                kind
            });
            (state.latency, fault)
        };
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        match fault {
            Some(kind) => Err(kind.error(key)),
            None => Ok(()),
        }
    }
}

/// Passes `limit` bytes of `body`, then fails with `kind`.
fn cut_after(body: ByteStream, limit: u64, kind: FaultKind, key: String) -> ByteStream {
    futures::stream::unfold((body, 0u64, false), move |(mut body, mut passed, done)| {
        let key = key.clone();
        async move {
            if done {
                return None;
            }
            match body.next().await {
                None if passed < limit => None,
                None => Some((Err(kind.error(&key)), (body, passed, true))),
                Some(Err(error)) => Some((Err(error), (body, passed, true))),
                Some(Ok(chunk)) => {
                    let room = limit - passed;
                    if (chunk.len() as u64) < room {
                        passed += chunk.len() as u64;
                        Some((Ok(chunk), (body, passed, false)))
                    } else if room == 0 {
                        Some((Err(kind.error(&key)), (body, passed, true)))
                    } else {
                        // Deliver the bytes up to the limit; the next poll fails.
                        passed = limit;
                        let head: Bytes = chunk.slice(..room as usize);
                        Some((Ok(head), (body, passed, false)))
                    }
                }
            }
        }
    })
    .boxed()
}

#[async_trait]
impl ObjectStore for FaultyStore {
    async fn put(
        &self,
        key: &ObjectKey,
        body: ByteStream,
        options: PutOptions,
    ) -> Result<PutResult> {
        self.enter(Operation::Put, key.as_str()).await?;
        let cut = self.lock().put_body_cut.take();
        let body = match cut {
            Some((limit, kind)) => cut_after(body, limit, kind, key.to_string()),
            None => body,
        };
        self.inner.put(key, body, options).await
    }

    async fn get(&self, key: &ObjectKey, options: GetOptions) -> Result<GetResult> {
        self.enter(Operation::Get, key.as_str()).await?;
        let mut result = self.inner.get(key, options).await?;
        if let Some((limit, kind)) = self.lock().get_body_cut.take() {
            result.body = cut_after(result.body, limit, kind, key.to_string());
        }
        Ok(result)
    }

    async fn head(&self, key: &ObjectKey) -> Result<ObjectMeta> {
        self.enter(Operation::Head, key.as_str()).await?;
        self.inner.head(key).await
    }

    async fn delete(&self, key: &ObjectKey) -> Result<()> {
        self.enter(Operation::Delete, key.as_str()).await?;
        self.inner.delete(key).await
    }

    async fn copy(&self, from: &ObjectKey, to: &ObjectKey) -> Result<()> {
        self.enter(Operation::Copy, to.as_str()).await?;
        self.inner.copy(from, to).await
    }

    async fn list(&self, options: ListOptions) -> Result<ListPage> {
        self.enter(Operation::List, options.prefix.as_deref().unwrap_or(""))
            .await?;
        self.inner.list(options).await
    }

    async fn presign(
        &self,
        method: PresignMethod,
        key: &ObjectKey,
        expires_in: Duration,
        options: &PresignOptions,
    ) -> Result<PresignedUrl> {
        self.enter(Operation::Presign, key.as_str()).await?;
        self.inner.presign(method, key, expires_in, options).await
    }

    async fn copy_with(
        &self,
        from: &ObjectKey,
        to: &ObjectKey,
        options: PutOptions,
    ) -> Result<PutResult> {
        self.enter(Operation::CopyWith, to.as_str()).await?;
        self.inner.copy_with(from, to, options).await
    }

    async fn create_multipart(&self, key: &ObjectKey, options: &PutOptions) -> Result<String> {
        self.enter(Operation::CreateMultipart, key.as_str()).await?;
        self.inner.create_multipart(key, options).await
    }

    async fn upload_part(
        &self,
        key: &ObjectKey,
        upload_id: &str,
        part_number: u32,
        body: ByteStream,
        size: u64,
    ) -> Result<PartInfo> {
        self.enter(Operation::UploadPart, key.as_str()).await?;
        let cut = self.lock().put_body_cut.take();
        let body = match cut {
            Some((limit, kind)) => cut_after(body, limit, kind, key.to_string()),
            None => body,
        };
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
    ) -> Result<PresignedUrl> {
        self.enter(Operation::PresignPart, key.as_str()).await?;
        self.inner
            .presign_part(key, upload_id, part_number, size, expires_in)
            .await
    }

    async fn list_parts(&self, key: &ObjectKey, upload_id: &str) -> Result<Vec<PartInfo>> {
        self.enter(Operation::ListParts, key.as_str()).await?;
        self.inner.list_parts(key, upload_id).await
    }

    async fn complete_multipart(
        &self,
        key: &ObjectKey,
        upload_id: &str,
        parts: &[CompletedPart],
    ) -> Result<PutResult> {
        self.enter(Operation::CompleteMultipart, key.as_str())
            .await?;
        self.inner.complete_multipart(key, upload_id, parts).await
    }

    async fn abort_multipart(&self, key: &ObjectKey, upload_id: &str) -> Result<()> {
        self.enter(Operation::AbortMultipart, key.as_str()).await?;
        self.inner.abort_multipart(key, upload_id).await
    }

    async fn sweep(&self, older_than: DateTime<Utc>, dry_run: bool) -> Result<SweepReport> {
        self.enter(Operation::Sweep, "").await?;
        self.inner.sweep(older_than, dry_run).await
    }

    async fn ping(&self) -> Result<()> {
        self.enter(Operation::Ping, "").await?;
        self.inner.ping().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MemoryStore, ObjectStoreExt};

    fn key(k: &str) -> ObjectKey {
        ObjectKey::parse(k).unwrap()
    }

    fn chunks(sizes: &[usize]) -> ByteStream {
        let chunks: Vec<Result<Bytes>> = sizes
            .iter()
            .map(|&n| Ok(Bytes::from(vec![1u8; n])))
            .collect();
        futures::stream::iter(chunks).boxed()
    }

    #[tokio::test]
    async fn the_nth_call_fails_once_with_the_chosen_kind() {
        let store = FaultyStore::new(Arc::new(MemoryStore::new()));
        store
            .put_bytes(&key("a"), Bytes::from_static(b"x"), PutOptions::default())
            .await
            .unwrap();
        store.fail_nth_with(Operation::Get, 2, FaultKind::Timeout);
        store.get_bytes(&key("a")).await.unwrap();
        assert!(matches!(
            store.get_bytes(&key("a")).await,
            Err(StoreError::Timeout { .. })
        ));
        store.get_bytes(&key("a")).await.unwrap();
        assert_eq!(store.calls(Operation::Get), 3);
        // Other operations are untouched.
        assert!(store.exists(&key("a")).await.unwrap());
    }

    #[tokio::test]
    async fn always_fails_until_cleared() {
        let store = FaultyStore::new(Arc::new(MemoryStore::new()));
        store.fail_always(Operation::Delete, FaultKind::AccessDenied);
        for _ in 0..3 {
            assert!(matches!(
                store.delete(&key("a")).await,
                Err(StoreError::AccessDenied { .. })
            ));
        }
        store.clear();
        store.delete(&key("a")).await.unwrap();
    }

    #[tokio::test]
    async fn a_put_body_cut_mid_stream_stores_nothing_and_fails_as_asked() {
        let memory = Arc::new(MemoryStore::new());
        let store = FaultyStore::new(memory.clone());
        store.fail_put_body_after(150, FaultKind::Unavailable);
        let result = store
            .put(&key("a"), chunks(&[100, 100, 100]), PutOptions::default())
            .await;
        assert!(
            matches!(result, Err(StoreError::Unavailable { .. })),
            "{result:?}"
        );
        assert!(memory.is_empty());
        // One-shot: the next put goes through whole.
        let put = store
            .put(&key("a"), chunks(&[100, 100, 100]), PutOptions::default())
            .await
            .unwrap();
        assert_eq!(put.size, 300);
    }

    #[tokio::test]
    async fn a_get_body_cut_delivers_exactly_the_bytes_before_the_cut() {
        let store = FaultyStore::new(Arc::new(MemoryStore::new()));
        store
            .put_bytes(
                &key("a"),
                Bytes::from(vec![3u8; 200_000]),
                PutOptions::default(),
            )
            .await
            .unwrap();
        store.fail_get_body_after(70_000, FaultKind::Unavailable);
        let mut body = store
            .get(&key("a"), GetOptions::default())
            .await
            .unwrap()
            .body;
        let mut received = 0;
        let error = loop {
            match body.next().await {
                Some(Ok(chunk)) => received += chunk.len(),
                Some(Err(error)) => break error,
                None => panic!("the body ended without the injected error"),
            }
        };
        assert_eq!(received, 70_000);
        assert!(matches!(error, StoreError::Unavailable { .. }));
        assert!(body.next().await.is_none());
    }

    #[tokio::test]
    async fn a_cut_at_or_past_the_end_fails_only_past_the_end() {
        let store = FaultyStore::new(Arc::new(MemoryStore::new()));
        store.fail_put_body_after(300, FaultKind::Other);
        assert!(
            store
                .put(&key("exact"), chunks(&[100, 200]), PutOptions::default())
                .await
                .is_err()
        );
        store.fail_put_body_after(301, FaultKind::Other);
        assert_eq!(
            store
                .put(&key("short"), chunks(&[100, 200]), PutOptions::default())
                .await
                .unwrap()
                .size,
            300
        );
    }
}
