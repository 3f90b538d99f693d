//! `MemoryStore`: the in-memory fake, with the semantics of the real stores.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Utc};
use futures::StreamExt;

use crate::body::BodyCheck;
use crate::signing::UrlSigner;
use crate::store::etag_matches;
use crate::{
    ByteStream, GetOptions, GetResult, ListOptions, ListPage, ObjectKey, ObjectMeta, ObjectStore,
    PresignMethod, PresignOptions, PresignedUrl, PutOptions, PutResult, Result, StoreError,
};

/// Chunk size of the streams a get answers: small enough that consumers see several chunks,
/// as they would from a real store.
const READ_CHUNK: usize = 64 * 1024;

#[derive(Debug, Clone)]
struct Entry {
    bytes: Bytes,
    etag: String,
    last_modified: DateTime<Utc>,
    content_type: Option<String>,
    metadata: BTreeMap<String, String>,
}

/// An object store in memory, for tests: same semantics as the real stores (ETag = quoted hex
/// MD5 of the content, create-only puts, ranges, `If-None-Match`, lexicographic pages, presigned
/// URLs verifiable with [`MemoryStore::verify_presigned`]). Clones share the same objects.
#[derive(Debug, Clone)]
pub struct MemoryStore {
    objects: Arc<Mutex<BTreeMap<ObjectKey, Entry>>>,
    signer: UrlSigner,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// Base of the presigned URLs a memory store hands out; nothing serves them.
    pub const BASE_URL: &'static str = "http://memory.invalid/objects";

    /// An empty store with a random presigning key.
    pub fn new() -> Self {
        let key = uuid::Uuid::new_v4().as_bytes().to_vec();
        Self {
            objects: Arc::default(),
            signer: UrlSigner::new(Self::BASE_URL, key),
        }
    }

    /// Checks the `expires` and `signature` query parameters of a URL from
    /// [`ObjectStore::presign`]; [`StoreError::AccessDenied`] when expired or tampered with.
    pub fn verify_presigned(
        &self,
        method: PresignMethod,
        key: &ObjectKey,
        expires: i64,
        signature: &str,
    ) -> Result<()> {
        self.signer.verify(method, key, expires, signature)
    }

    /// How many objects the store holds.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether the store holds no object.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<ObjectKey, Entry>> {
        // A panic while holding the lock cannot leave the map half-updated (every update is one
        // insert or remove), so a poisoned lock is still consistent.
        self.objects
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn meta(key: &ObjectKey, entry: &Entry) -> ObjectMeta {
        ObjectMeta {
            key: key.clone(),
            size: entry.bytes.len() as u64,
            etag: entry.etag.clone(),
            last_modified: entry.last_modified,
            content_type: entry.content_type.clone(),
            metadata: entry.metadata.clone(),
        }
    }

    fn entry(&self, key: &ObjectKey) -> Result<Entry> {
        self.lock()
            .get(key)
            .cloned()
            .ok_or_else(|| StoreError::NotFound {
                key: key.to_string(),
            })
    }
}

#[async_trait]
impl ObjectStore for MemoryStore {
    async fn put(
        &self,
        key: &ObjectKey,
        mut body: ByteStream,
        options: PutOptions,
    ) -> Result<PutResult> {
        let mut check = BodyCheck::new(key, &options, true);
        let mut buffer = BytesMut::new();
        while let Some(chunk) = body.next().await {
            let chunk = chunk?;
            check.update(&chunk)?;
            buffer.extend_from_slice(&chunk);
        }
        let (size, etag) = check.finish()?;
        let etag = etag.unwrap_or_default();
        let entry = Entry {
            bytes: buffer.freeze(),
            etag: etag.clone(),
            last_modified: Utc::now(),
            content_type: options.content_type,
            metadata: options.metadata,
        };
        let mut objects = self.lock();
        if options.create_only && objects.contains_key(key) {
            return Err(StoreError::PreconditionFailed {
                key: key.to_string(),
            });
        }
        objects.insert(key.clone(), entry);
        Ok(PutResult { size, etag })
    }

    async fn get(&self, key: &ObjectKey, options: GetOptions) -> Result<GetResult> {
        let entry = self.entry(key)?;
        if let Some(tag) = &options.if_none_match
            && etag_matches(tag, &entry.etag)
        {
            return Err(StoreError::NotModified {
                key: key.to_string(),
            });
        }
        let size = entry.bytes.len() as u64;
        let range = match options.range {
            None => 0..size,
            Some(range) => range
                .resolve(size)
                .ok_or_else(|| StoreError::RangeNotSatisfiable {
                    key: key.to_string(),
                    size,
                })?,
        };
        // usize::try_from cannot fail: the range lies within a buffer in memory.
        let slice = entry.bytes.slice(range.start as usize..range.end as usize);
        let chunks: Vec<Result<Bytes>> = (0..slice.len())
            .step_by(READ_CHUNK)
            .map(|start| Ok(slice.slice(start..(start + READ_CHUNK).min(slice.len()))))
            .collect();
        Ok(GetResult {
            meta: Self::meta(key, &entry),
            range,
            body: futures::stream::iter(chunks).boxed(),
        })
    }

    async fn head(&self, key: &ObjectKey) -> Result<ObjectMeta> {
        Ok(Self::meta(key, &self.entry(key)?))
    }

    async fn delete(&self, key: &ObjectKey) -> Result<()> {
        self.lock().remove(key);
        Ok(())
    }

    async fn copy(&self, from: &ObjectKey, to: &ObjectKey) -> Result<()> {
        let mut entry = self.entry(from)?;
        entry.last_modified = Utc::now();
        self.lock().insert(to.clone(), entry);
        Ok(())
    }

    async fn list(&self, options: ListOptions) -> Result<ListPage> {
        let prefix = options.prefix.unwrap_or_default();
        let max_keys = options.max_keys.unwrap_or(1000).clamp(1, 1000);
        let objects = self.lock();
        let mut page: Vec<ObjectMeta> = objects
            .iter()
            .filter(|(key, _)| key.starts_with(&prefix))
            .filter(|(key, _)| {
                options
                    .page_token
                    .as_deref()
                    .is_none_or(|token| key.as_str() > token)
            })
            .take(max_keys + 1)
            .map(|(key, entry)| {
                let mut meta = Self::meta(key, entry);
                // Listings carry no content type or user metadata, as on S3.
                meta.content_type = None;
                meta.metadata.clear();
                meta
            })
            .collect();
        let next_token = if page.len() > max_keys {
            page.truncate(max_keys);
            page.last().map(|meta| meta.key.to_string())
        } else {
            None
        };
        Ok(ListPage {
            objects: page,
            next_token,
        })
    }

    async fn presign(
        &self,
        method: PresignMethod,
        key: &ObjectKey,
        expires_in: Duration,
        // Whoever serves these URLs sets the answer's headers (see `PresignOptions`).
        _options: &PresignOptions,
    ) -> Result<PresignedUrl> {
        self.signer.presign(method, key, expires_in)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ObjectStoreExt;

    #[tokio::test]
    async fn etag_is_the_quoted_md5_and_presigned_urls_verify() {
        let store = MemoryStore::new();
        let key = ObjectKey::parse("a/b").unwrap();
        let put = store
            .put_bytes(&key, Bytes::from_static(b"hello"), PutOptions::default())
            .await
            .unwrap();
        assert_eq!(put.etag, "\"5d41402abc4b2a76b9719d911017c592\"");
        assert_eq!(store.len(), 1);
        let url = store
            .presign(
                PresignMethod::Get,
                &key,
                Duration::from_secs(60),
                &PresignOptions::default(),
            )
            .await
            .unwrap();
        let query = url.url.split_once('?').unwrap().1;
        let param = |name: &str| {
            query
                .split('&')
                .find_map(|p| p.strip_prefix(&format!("{name}=")))
                .unwrap()
                .to_owned()
        };
        let expires: i64 = param("expires").parse().unwrap();
        store
            .verify_presigned(PresignMethod::Get, &key, expires, &param("signature"))
            .unwrap();
        let other = MemoryStore::new();
        assert!(
            other
                .verify_presigned(PresignMethod::Get, &key, expires, &param("signature"))
                .is_err()
        );
    }
}
