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
use crate::store::{check_part_number, etag_matches};
use crate::{
    ByteStream, CompletedPart, GetOptions, GetResult, ListOptions, ListPage, MIN_PART_SIZE,
    ObjectKey, ObjectMeta, ObjectStore, PartInfo, PresignMethod, PresignOptions, PresignedParams,
    PresignedUrl, PutOptions, PutResult, Result, StoreError,
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
    sha256: Option<[u8; 32]>,
}

/// A multipart upload in progress.
#[derive(Debug, Clone)]
struct Upload {
    key: ObjectKey,
    content_type: Option<String>,
    metadata: BTreeMap<String, String>,
    /// Part number → (bytes, quoted MD5 ETag).
    parts: BTreeMap<u32, (Bytes, String)>,
}

/// An object store in memory, for tests: same semantics as the real stores (ETag = quoted hex
/// MD5 of the content, create-only puts, ranges, `If-None-Match`, lexicographic pages, presigned
/// URLs verifiable with [`MemoryStore::verify_presigned`]). Clones share the same objects.
#[derive(Debug, Clone)]
pub struct MemoryStore {
    objects: Arc<Mutex<BTreeMap<ObjectKey, Entry>>>,
    uploads: Arc<Mutex<BTreeMap<String, Upload>>>,
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
            uploads: Arc::default(),
            signer: UrlSigner::new(Self::BASE_URL, key),
        }
    }

    /// Checks the parameters and `signature` of a URL from [`ObjectStore::presign`] or
    /// [`ObjectStore::presign_part`] (see [`PresignedParams::from_query`]);
    /// [`StoreError::AccessDenied`] when expired or tampered with.
    pub fn verify_presigned(
        &self,
        key: &ObjectKey,
        params: &PresignedParams,
        signature: &str,
    ) -> Result<()> {
        self.signer.verify(key, params, signature)
    }

    fn lock_uploads(&self) -> MutexGuard<'_, BTreeMap<String, Upload>> {
        // As for the objects: every update is one insert or remove.
        self.uploads
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn no_upload(key: &ObjectKey) -> StoreError {
        StoreError::NotFound {
            key: key.to_string(),
        }
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
            sha256: entry.sha256,
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
            sha256: options.sha256,
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
        options: &PresignOptions,
    ) -> Result<PresignedUrl> {
        self.signer.presign(method, key, expires_in, options)
    }

    async fn copy_with(
        &self,
        from: &ObjectKey,
        to: &ObjectKey,
        options: PutOptions,
    ) -> Result<PutResult> {
        let mut entry = self.entry(from)?;
        let size = entry.bytes.len() as u64;
        if let Some(expected) = options.size
            && expected != size
        {
            return Err(StoreError::SizeMismatch {
                key: from.to_string(),
                expected,
                actual: size,
            });
        }
        entry.last_modified = Utc::now();
        entry.content_type = options.content_type;
        entry.metadata = options.metadata;
        let etag = entry.etag.clone();
        self.lock().insert(to.clone(), entry);
        Ok(PutResult { size, etag })
    }

    async fn create_multipart(&self, key: &ObjectKey, options: &PutOptions) -> Result<String> {
        let upload_id = uuid::Uuid::new_v4().simple().to_string();
        let upload = Upload {
            key: key.clone(),
            content_type: options.content_type.clone(),
            metadata: options.metadata.clone(),
            parts: BTreeMap::new(),
        };
        self.lock_uploads().insert(upload_id.clone(), upload);
        Ok(upload_id)
    }

    async fn upload_part(
        &self,
        key: &ObjectKey,
        upload_id: &str,
        part_number: u32,
        mut body: ByteStream,
        size: u64,
    ) -> Result<PartInfo> {
        check_part_number(key, part_number)?;
        if self
            .lock_uploads()
            .get(upload_id)
            .is_none_or(|u| &u.key != key)
        {
            return Err(Self::no_upload(key));
        }
        let options = PutOptions {
            size: Some(size),
            ..PutOptions::default()
        };
        let mut check = BodyCheck::new(key, &options, true);
        let mut buffer = BytesMut::new();
        while let Some(chunk) = body.next().await {
            let chunk = chunk?;
            check.update(&chunk)?;
            buffer.extend_from_slice(&chunk);
        }
        let (size, etag) = check.finish()?;
        let etag = etag.unwrap_or_default();
        let mut uploads = self.lock_uploads();
        // Aborted while the part streamed.
        let upload = uploads
            .get_mut(upload_id)
            .ok_or_else(|| Self::no_upload(key))?;
        upload
            .parts
            .insert(part_number, (buffer.freeze(), etag.clone()));
        Ok(PartInfo {
            part_number,
            etag,
            size,
        })
    }

    async fn presign_part(
        &self,
        key: &ObjectKey,
        upload_id: &str,
        part_number: u32,
        size: u64,
        expires_in: Duration,
    ) -> Result<PresignedUrl> {
        check_part_number(key, part_number)?;
        self.signer
            .presign_part(key, upload_id, part_number, size, expires_in)
    }

    async fn list_parts(&self, key: &ObjectKey, upload_id: &str) -> Result<Vec<PartInfo>> {
        let uploads = self.lock_uploads();
        let upload = uploads
            .get(upload_id)
            .filter(|u| &u.key == key)
            .ok_or_else(|| Self::no_upload(key))?;
        Ok(upload
            .parts
            .iter()
            .map(|(number, (bytes, etag))| PartInfo {
                part_number: *number,
                etag: etag.clone(),
                size: bytes.len() as u64,
            })
            .collect())
    }

    async fn complete_multipart(
        &self,
        key: &ObjectKey,
        upload_id: &str,
        parts: &[CompletedPart],
    ) -> Result<PutResult> {
        let upload = self
            .lock_uploads()
            .get(upload_id)
            .filter(|u| &u.key == key)
            .cloned()
            .ok_or_else(|| Self::no_upload(key))?;
        let held: Vec<(u32, &str, usize)> = upload
            .parts
            .iter()
            .map(|(n, (bytes, etag))| (*n, etag.as_str(), bytes.len()))
            .collect();
        let etag = multipart_etag(key, parts, &held)?;
        let mut buffer = BytesMut::new();
        for part in parts {
            if let Some((bytes, _)) = upload.parts.get(&part.part_number) {
                buffer.extend_from_slice(bytes);
            }
        }
        let size = buffer.len() as u64;
        let entry = Entry {
            bytes: buffer.freeze(),
            etag: etag.clone(),
            last_modified: Utc::now(),
            content_type: upload.content_type,
            metadata: upload.metadata,
            sha256: None,
        };
        if self.lock_uploads().remove(upload_id).is_none() {
            // Aborted or completed by someone else meanwhile.
            return Err(Self::no_upload(key));
        }
        self.lock().insert(key.clone(), entry);
        Ok(PutResult { size, etag })
    }

    async fn abort_multipart(&self, key: &ObjectKey, upload_id: &str) -> Result<()> {
        let mut uploads = self.lock_uploads();
        if uploads.get(upload_id).is_some_and(|u| &u.key == key) {
            uploads.remove(upload_id);
        }
        Ok(())
    }
}

/// Checks a completion's parts against the parts an upload holds (`(number, quoted etag,
/// size)`) as S3 does, and answers the object's ETag, S3's way: the MD5 of the parts' MD5s,
/// a dash and the number of parts. For the stores that emulate multipart uploads.
pub(crate) fn multipart_etag(
    key: &ObjectKey,
    parts: &[CompletedPart],
    held: &[(u32, &str, usize)],
) -> Result<String> {
    use md5::{Digest as _, Md5};
    let invalid = |reason: String| StoreError::InvalidPart {
        key: key.to_string(),
        reason,
    };
    if parts.is_empty() {
        return Err(invalid("a completion needs at least one part".to_owned()));
    }
    let mut digests = Md5::new();
    let mut previous = 0;
    for (index, part) in parts.iter().enumerate() {
        check_part_number(key, part.part_number)?;
        if part.part_number <= previous {
            return Err(invalid(
                "part numbers must be in ascending order".to_owned(),
            ));
        }
        previous = part.part_number;
        let Some((_, etag, size)) = held.iter().find(|(n, _, _)| *n == part.part_number) else {
            return Err(invalid(format!("no part {}", part.part_number)));
        };
        if etag.trim_matches('"') != part.etag.trim_matches('"') {
            return Err(invalid(format!(
                "part {} has another ETag",
                part.part_number
            )));
        }
        if index + 1 < parts.len() && *size < MIN_PART_SIZE {
            return Err(invalid(format!(
                "part {} is smaller than 5 MiB and not the last",
                part.part_number
            )));
        }
        let raw = hex::decode(etag.trim_matches('"'))
            .map_err(|_| invalid(format!("part {} has a malformed ETag", part.part_number)))?;
        digests.update(raw);
    }
    Ok(format!(
        "\"{}-{}\"",
        hex::encode(digests.finalize()),
        parts.len()
    ))
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
        let params = PresignedParams::new(PresignMethod::Get, param("expires").parse().unwrap());
        store
            .verify_presigned(&key, &params, &param("signature"))
            .unwrap();
        let other = MemoryStore::new();
        assert!(
            other
                .verify_presigned(&key, &params, &param("signature"))
                .is_err()
        );
    }
}
