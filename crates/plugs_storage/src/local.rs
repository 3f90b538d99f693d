//! `LocalFsStore`: objects as files under a root directory, the embedded default.
//!
//! Layout: `root/objects/<key>` holds the bytes, `root/meta/<key>` a JSON sidecar (content type,
//! user metadata, ETag, size, encryption asked for, and the inode of the bytes it describes),
//! `root/tmp/` the uploads in progress, `root/parts/<upload id>/` the multipart uploads in progress
//! (an `upload.json` naming the key, content type, metadata and encryption; one file per part,
//! named `<part number>.<hex MD5>`, written to `tmp/` and renamed in). A put writes a temp file and renames it into place, so a
//! reader sees the old object or the new one, never a part. Because keys map to paths, a key
//! cannot also be a "directory" of another key (`a` and `a/b`); the object-key layout of
//! plugs-media never does that.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, ErrorKind, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use crate::body::BodyCheck;
use crate::memory::multipart_etag;
use crate::signing::UrlSigner;
use crate::store::{check_part_number, etag_matches};
use crate::{
    ByteStream, CompletedPart, GetOptions, GetResult, ListOptions, ListPage, ObjectKey, ObjectMeta,
    ObjectStore, PartInfo, PresignMethod, PresignOptions, PresignedParams, PresignedUrl,
    PutOptions, PutResult, Result, ServerSideEncryption, StoreError, SweepCount, SweepReport,
};

/// The store's directories under its root.
const DIRS: [&str; 4] = ["objects", "meta", "tmp", "parts"];

/// Read buffer of a get's stream.
const READ_CHUNK: usize = 64 * 1024;

/// How a [`LocalFsStore`] is set up.
#[derive(Clone)]
pub struct LocalFsConfig {
    /// The directory holding everything; created if missing.
    pub root: PathBuf,
    /// Where the HTTP server serves presigned URLs: a presigned URL is
    /// `{base_url}/{key}?method=GET&expires=<unix>&signature=<hex>`.
    pub base_url: String,
    /// The HMAC-SHA256 key presigned URLs are signed with. A secret.
    pub signing_key: Vec<u8>,
}

impl std::fmt::Debug for LocalFsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalFsConfig")
            .field("root", &self.root)
            .field("base_url", &self.base_url)
            .field("signing_key", &"<redacted>")
            .finish()
    }
}

/// An object store in a local directory (see the module layout above). Blocking file-system
/// calls run on tokio's blocking pool; ETags are the quoted hex MD5 of the content, computed
/// while the upload streams.
#[derive(Debug, Clone)]
pub struct LocalFsStore {
    root: Arc<PathBuf>,
    signer: UrlSigner,
}

#[derive(Debug, Serialize, Deserialize)]
struct Sidecar {
    size: u64,
    etag: String,
    last_modified: DateTime<Utc>,
    content_type: Option<String>,
    metadata: BTreeMap<String, String>,
    encryption: Option<String>,
    kms_key_id: Option<String>,
    /// The inode of the bytes this describes: a reader that finds another inode under the key
    /// raced a writer (or a crash came between the two renames) and must not mix the two.
    inode: u64,
    /// Hex SHA-256 of the bytes, when the put that wrote them checked one.
    #[serde(default)]
    sha256: Option<String>,
}

/// `parts/<upload id>/upload.json`: what a multipart upload will make.
#[derive(Debug, Serialize, Deserialize)]
struct UploadManifest {
    key: String,
    content_type: Option<String>,
    metadata: BTreeMap<String, String>,
    encryption: Option<String>,
    kms_key_id: Option<String>,
}

impl LocalFsStore {
    /// Opens (creating if needed) the store under `config.root`. Blocking: call it at start-up.
    pub fn new(config: LocalFsConfig) -> Result<Self> {
        for dir in DIRS {
            let path = config.root.join(dir);
            create_private_dir_all(&path).map_err(|source| StoreError::Unavailable {
                source: format!("cannot create {}: {source}", path.display()).into(),
            })?;
        }
        Ok(Self {
            root: Arc::new(config.root),
            signer: UrlSigner::new(&config.base_url, config.signing_key),
        })
    }

    /// The directory the store lives in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Checks the parameters and `signature` of a URL from [`ObjectStore::presign`] or
    /// [`ObjectStore::presign_part`] (see [`PresignedParams::from_query`]);
    /// [`StoreError::AccessDenied`] when expired or tampered with. The signature is compared in
    /// constant time. The server answering the URL then holds the request to the parameters.
    pub fn verify_presigned(
        &self,
        key: &ObjectKey,
        params: &PresignedParams,
        signature: &str,
    ) -> Result<()> {
        self.signer.verify(key, params, signature)
    }

    /// The directory of a multipart upload, once its id is shown to be one this store made (a
    /// UUID: it comes from clients, and must not name a path) and to belong to `key`.
    fn upload_dir(
        root: &Path,
        key: &ObjectKey,
        upload_id: &str,
    ) -> Result<(PathBuf, UploadManifest)> {
        let not_found = || StoreError::NotFound {
            key: key.to_string(),
        };
        let id = uuid::Uuid::try_parse(upload_id).map_err(|_| not_found())?;
        let dir = root.join("parts").join(id.simple().to_string());
        let manifest = fs::read(dir.join("upload.json"))
            .ok()
            .and_then(|json| serde_json::from_slice::<UploadManifest>(&json).ok())
            .filter(|manifest| manifest.key == key.as_str())
            .ok_or_else(not_found)?;
        Ok((dir, manifest))
    }

    fn object_path(root: &Path, key: &ObjectKey) -> PathBuf {
        root.join("objects").join(key.as_str())
    }

    fn meta_path(root: &Path, key: &ObjectKey) -> PathBuf {
        root.join("meta").join(key.as_str())
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Path) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let root = Arc::clone(&self.root);
        tokio::task::spawn_blocking(move || f(&root))
            .await
            .map_err(|source| StoreError::other("local store task failed", source))?
    }
}

/// Temporary files under `root/tmp/` last written before `cutoff`: what puts of a process that
/// died mid-upload (SIGKILL, power loss) left behind, which no drop can remove. Removes them
/// unless `dry_run`. A put in progress keeps writing its file, so a cutoff further back than an
/// upload can stall spares it. Blocking.
fn sweep_temp_files(root: &Path, cutoff: SystemTime, dry_run: bool) -> Result<SweepCount> {
    let tmp = root.join("tmp");
    let mut count = SweepCount::default();
    let entries = match fs::read_dir(&tmp) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(count),
        Err(e) => {
            return Err(StoreError::other(
                format!("cannot list {}", tmp.display()),
                e,
            ));
        }
    };
    for entry in entries {
        let entry = entry.map_err(|e| StoreError::other("cannot list tmp/", e))?;
        let Ok(metadata) = entry.metadata() else {
            continue;
        };
        let stale = metadata.modified().is_ok_and(|modified| modified < cutoff);
        if !metadata.is_file() || !stale {
            continue;
        }
        count.found += 1;
        if dry_run {
            continue;
        }
        match fs::remove_file(entry.path()) {
            Ok(()) => count.removed += 1,
            // Its put finished or failed (and cleaned up) since the listing.
            Err(e) if e.kind() == ErrorKind::NotFound => count.removed += 1,
            Err(error) => {
                tracing::warn!(path = %entry.path().display(), %error, "cannot remove a stale temporary file");
                count.failed += 1;
            }
        }
    }
    Ok(count)
}

/// Maps an I/O error of a read: a missing file is a missing object.
fn read_error(key: &ObjectKey, source: io::Error) -> StoreError {
    match source.kind() {
        // A directory where the file would be: `key` is only a prefix of other keys.
        ErrorKind::NotFound | ErrorKind::NotADirectory | ErrorKind::IsADirectory => {
            StoreError::NotFound {
                key: key.to_string(),
            }
        }
        _ => write_error(key, source),
    }
}

/// Maps an I/O error of a write: a missing directory means the store itself is gone.
fn write_error(key: &ObjectKey, source: io::Error) -> StoreError {
    match source.kind() {
        ErrorKind::PermissionDenied => StoreError::AccessDenied {
            key: key.to_string(),
            source: source.into(),
        },
        ErrorKind::StorageFull
        | ErrorKind::ReadOnlyFilesystem
        | ErrorKind::QuotaExceeded
        | ErrorKind::NotFound => StoreError::Unavailable {
            source: source.into(),
        },
        ErrorKind::IsADirectory | ErrorKind::NotADirectory | ErrorKind::DirectoryNotEmpty => {
            StoreError::other(
                format!(
                    "key {key} collides with another key used as a directory in the local store"
                ),
                source,
            )
        }
        _ => StoreError::other(format!("local store I/O on {key}"), source),
    }
}

/// A file under `tmp/` removed when dropped, so a failed or abandoned put leaves nothing.
struct TempPath(PathBuf);

impl Drop for TempPath {
    fn drop(&mut self) {
        // Synchronous on purpose: one unlink on a failure path, and the caller can rely on the
        // temp file being gone once the put has returned or been dropped.
        match fs::remove_file(&self.0) {
            Ok(()) => {}
            Err(error) if error.kind() == ErrorKind::NotFound => {}
            Err(error) => {
                tracing::warn!(path = %self.0.display(), %error, "cannot remove temp file")
            }
        }
    }
}

fn encryption_fields(encryption: &ServerSideEncryption) -> (Option<String>, Option<String>) {
    match encryption {
        ServerSideEncryption::Aes256 => (Some("AES256".to_owned()), None),
        ServerSideEncryption::Kms { key_id } => (Some("aws:kms".to_owned()), key_id.clone()),
        _ => (None, None),
    }
}

/// Opens an object and reads its sidecar so that both describe the same bytes.
fn open_consistent(root: &Path, key: &ObjectKey) -> Result<(fs::File, ObjectMeta)> {
    let path = LocalFsStore::object_path(root, key);
    let mut attempt = 0;
    loop {
        let file = fs::File::open(&path).map_err(|e| read_error(key, e))?;
        let stat = file.metadata().map_err(|e| read_error(key, e))?;
        if stat.is_dir() {
            return Err(StoreError::NotFound {
                key: key.to_string(),
            });
        }
        let sidecar = fs::read(LocalFsStore::meta_path(root, key))
            .ok()
            .and_then(|json| serde_json::from_slice::<Sidecar>(&json).ok());
        match sidecar {
            Some(sidecar) if sidecar.inode == stat.ino() && sidecar.size == stat.len() => {
                return Ok((file, meta_from_sidecar(key, sidecar)));
            }
            // A writer renamed the bytes and is about to rename the sidecar: look again.
            _ if attempt < 20 => {
                attempt += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
            // No writer in sight: a crash came between the renames. Serve the bytes with what
            // the file system knows rather than hide them.
            _ => return Ok((file, meta_from_stat(key, &stat))),
        }
    }
}

fn meta_from_sidecar(key: &ObjectKey, sidecar: Sidecar) -> ObjectMeta {
    ObjectMeta {
        key: key.clone(),
        size: sidecar.size,
        etag: sidecar.etag,
        last_modified: sidecar.last_modified,
        content_type: sidecar.content_type,
        metadata: sidecar.metadata,
        sha256: sidecar
            .sha256
            .and_then(|hex| hex::decode(hex).ok())
            .and_then(|bytes| bytes.try_into().ok()),
    }
}

fn meta_from_stat(key: &ObjectKey, stat: &fs::Metadata) -> ObjectMeta {
    let modified: DateTime<Utc> = stat
        .modified()
        .map(DateTime::from)
        .unwrap_or_else(|_| Utc::now());
    ObjectMeta {
        key: key.clone(),
        size: stat.len(),
        etag: format!(
            "\"{:x}-{:x}-{:x}\"",
            stat.ino(),
            stat.len(),
            modified.timestamp_micros()
        ),
        last_modified: modified,
        content_type: None,
        metadata: BTreeMap::new(),
        sha256: None,
    }
}

/// Moves a finished temp file and its sidecar into place.
fn commit(
    root: &Path,
    key: &ObjectKey,
    tmp: &Path,
    sidecar: &Sidecar,
    create_only: bool,
) -> Result<()> {
    let object_path = LocalFsStore::object_path(root, key);
    let meta_path = LocalFsStore::meta_path(root, key);
    let meta_tmp = TempPath(tmp.with_extension("json"));
    let json =
        serde_json::to_vec(sidecar).map_err(|e| StoreError::other("cannot encode sidecar", e))?;
    private_write(&meta_tmp.0, &json).map_err(|e| write_error(key, e))?;
    // A concurrent delete prunes empty directories, and may remove one between our
    // create_dir_all and the rename: retry a few times.
    let mut attempt = 0;
    loop {
        attempt += 1;
        let result = ensure_parent(&object_path).and_then(|()| {
            if create_only {
                // link() fails if the name exists, so two racing create-only puts cannot both win.
                fs::hard_link(tmp, &object_path).and_then(|()| fs::remove_file(tmp))
            } else {
                fs::rename(tmp, &object_path)
            }
        });
        match result {
            Ok(()) => break,
            Err(e) if create_only && e.kind() == ErrorKind::AlreadyExists => {
                return Err(StoreError::PreconditionFailed {
                    key: key.to_string(),
                });
            }
            Err(e) if e.kind() == ErrorKind::NotFound && attempt < 5 => continue,
            Err(e) => return Err(write_error(key, e)),
        }
    }
    let mut attempt = 0;
    loop {
        attempt += 1;
        match ensure_parent(&meta_path).and_then(|()| fs::rename(&meta_tmp.0, &meta_path)) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound && attempt < 5 => continue,
            Err(e) => return Err(write_error(key, e)),
        }
    }
}

fn ensure_parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(parent) => create_private_dir_all(parent),
        None => Ok(()),
    }
}

/// Objects are private to the process that stores them: directories are created 0700 and files
/// 0600, whatever the umask (which would make them 0755 and 0644, readable by every local user).
/// Renames and hard links keep the mode, so every object and sidecar ends up 0600.
const PRIVATE_DIR_MODE: u32 = 0o700;
/// See [`PRIVATE_DIR_MODE`].
const PRIVATE_FILE_MODE: u32 = 0o600;

/// `create_dir_all` with mode 0700 for every directory it creates.
fn create_private_dir_all(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR_MODE)
        .create(path)
}

/// Options creating a new file with mode 0600 (fails if it exists).
fn private_new_file() -> fs::OpenOptions {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true).mode(PRIVATE_FILE_MODE);
    options
}

/// `fs::write` of a new file with mode 0600.
fn private_write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write as _;
    private_new_file().open(path)?.write_all(bytes)
}

/// Removes the empty directories left above `path`, up to (not including) `stop`.
fn prune_empty_dirs(path: &Path, stop: &Path) {
    let mut dir = path.parent();
    while let Some(current) = dir {
        if current == stop || !current.starts_with(stop) || fs::remove_dir(current).is_err() {
            return;
        }
        dir = current.parent();
    }
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::NotFound | ErrorKind::IsADirectory | ErrorKind::NotADirectory
            ) =>
        {
            Ok(())
        }
        other => other,
    }
}

/// Every key under `objects/` starting with `prefix`, unsorted.
fn keys_under(root: &Path, prefix: &str) -> io::Result<Vec<String>> {
    let objects = root.join("objects");
    // Only walk the directory the prefix names, not the whole store.
    let start_rel = prefix.rfind('/').map(|at| &prefix[..at]).unwrap_or("");
    let mut keys = Vec::new();
    let mut pending = vec![(objects.join(start_rel), start_rel.to_owned())];
    while let Some((dir, rel)) = pending.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
                continue;
            }
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            let key = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            if entry.file_type()?.is_dir() {
                if key.starts_with(prefix) || prefix.starts_with(&format!("{key}/")) {
                    pending.push((entry.path(), key));
                }
            } else if key.starts_with(prefix) {
                keys.push(key);
            }
        }
    }
    Ok(keys)
}

/// Copies `from` to `to` through a temp file; with `options`, their content type, metadata and
/// encryption replace the source's. Blocking.
fn copy_object(
    root: &Path,
    from: &ObjectKey,
    to: &ObjectKey,
    options: Option<&PutOptions>,
) -> Result<PutResult> {
    let (mut source, meta) = open_consistent(root, from)?;
    if let Some(expected) = options.and_then(|o| o.size)
        && expected != meta.size
    {
        return Err(StoreError::SizeMismatch {
            key: from.to_string(),
            expected,
            actual: meta.size,
        });
    }
    let sidecar = fs::read(LocalFsStore::meta_path(root, from))
        .ok()
        .and_then(|json| serde_json::from_slice::<Sidecar>(&json).ok());
    let tmp = TempPath(root.join("tmp").join(uuid::Uuid::new_v4().to_string()));
    let mut target = private_new_file()
        .open(&tmp.0)
        .map_err(|e| write_error(to, e))?;
    io::copy(&mut source, &mut target).map_err(|e| write_error(to, e))?;
    target.sync_all().map_err(|e| write_error(to, e))?;
    let inode = target.metadata().map_err(|e| write_error(to, e))?.ino();
    let (encryption, kms_key_id) = match options {
        Some(options) => encryption_fields(&options.encryption),
        None => sidecar
            .as_ref()
            .map(|s| (s.encryption.clone(), s.kms_key_id.clone()))
            .unwrap_or((None, None)),
    };
    let (content_type, metadata) = match options {
        Some(options) => (options.content_type.clone(), options.metadata.clone()),
        None => (meta.content_type, meta.metadata),
    };
    let sidecar = Sidecar {
        size: meta.size,
        etag: meta.etag.clone(),
        last_modified: Utc::now(),
        content_type,
        metadata,
        encryption,
        kms_key_id,
        inode,
        sha256: meta.sha256.map(hex::encode),
    };
    commit(root, to, &tmp.0, &sidecar, false)?;
    Ok(PutResult {
        size: meta.size,
        etag: meta.etag,
    })
}

/// The part files of an upload directory: `(part number, hex MD5, path)`. Blocking.
fn part_files(dir: &Path) -> io::Result<Vec<(u32, String, PathBuf)>> {
    let mut parts = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let Some((number, md5)) = name.split_once('.') else {
            continue;
        };
        if let Ok(number) = number.parse::<u32>()
            && md5.len() == 32
        {
            parts.push((number, md5.to_owned(), entry.path()));
        }
    }
    Ok(parts)
}

/// Joins an upload's parts into the object, through a temp file renamed into place, then
/// removes the upload. Blocking.
fn complete_upload(
    root: &Path,
    key: &ObjectKey,
    upload_id: &str,
    parts: &[CompletedPart],
) -> Result<PutResult> {
    let (dir, manifest) = LocalFsStore::upload_dir(root, key, upload_id)?;
    let files = part_files(&dir).map_err(|e| read_error(key, e))?;
    let mut held = Vec::with_capacity(files.len());
    for (number, md5, path) in &files {
        let size = fs::metadata(path).map_err(|e| read_error(key, e))?.len();
        held.push((
            *number,
            md5.as_str(),
            usize::try_from(size).unwrap_or(usize::MAX),
        ));
    }
    let etag = multipart_etag(key, parts, &held)?;
    let tmp = TempPath(root.join("tmp").join(uuid::Uuid::new_v4().to_string()));
    let mut target = private_new_file()
        .open(&tmp.0)
        .map_err(|e| write_error(key, e))?;
    let mut size = 0;
    for part in parts {
        let Some((_, _, path)) = files.iter().find(|(n, _, _)| *n == part.part_number) else {
            continue;
        };
        let mut source = fs::File::open(path).map_err(|e| read_error(key, e))?;
        size += io::copy(&mut source, &mut target).map_err(|e| write_error(key, e))?;
    }
    target.sync_all().map_err(|e| write_error(key, e))?;
    let inode = target.metadata().map_err(|e| write_error(key, e))?.ino();
    drop(target);
    let sidecar = Sidecar {
        size,
        etag: etag.clone(),
        last_modified: Utc::now(),
        content_type: manifest.content_type,
        metadata: manifest.metadata,
        encryption: manifest.encryption,
        kms_key_id: manifest.kms_key_id,
        inode,
        sha256: None,
    };
    commit(root, key, &tmp.0, &sidecar, false)?;
    if let Err(error) = fs::remove_dir_all(&dir) {
        // The object is whole; the leftover parts go with the next sweep.
        tracing::warn!(dir = %dir.display(), %error, "cannot remove a completed upload's parts");
    }
    Ok(PutResult { size, etag })
}

/// Multipart uploads under `root/parts/` untouched since before `cutoff` (no part written
/// since): what a client that neither completed nor aborted left. Removes them unless
/// `dry_run`. Blocking.
fn sweep_uploads(root: &Path, cutoff: SystemTime, dry_run: bool) -> Result<SweepCount> {
    let parts = root.join("parts");
    let mut count = SweepCount::default();
    let entries = match fs::read_dir(&parts) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(count),
        Err(e) => return Err(StoreError::other("cannot list parts/", e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| StoreError::other("cannot list parts/", e))?;
        let dir = entry.path();
        let staged = fs::read(dir.join("upload.json"))
            .ok()
            .and_then(|json| serde_json::from_slice::<UploadManifest>(&json).ok())
            .is_some_and(|manifest| manifest.key.starts_with(crate::STAGING_PREFIX));
        if staged {
            continue;
        }
        let newest = fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|file| file.metadata().ok()?.modified().ok())
            .chain(entry.metadata().ok().and_then(|m| m.modified().ok()))
            .max();
        if newest.is_none_or(|newest| newest >= cutoff) {
            continue;
        }
        count.found += 1;
        if dry_run {
            continue;
        }
        match fs::remove_dir_all(&dir) {
            Ok(()) => count.removed += 1,
            Err(e) if e.kind() == ErrorKind::NotFound => count.removed += 1,
            Err(error) => {
                tracing::warn!(dir = %dir.display(), %error, "cannot remove a stale multipart upload");
                count.failed += 1;
            }
        }
    }
    Ok(count)
}

#[async_trait]
impl ObjectStore for LocalFsStore {
    async fn put(
        &self,
        key: &ObjectKey,
        mut body: ByteStream,
        options: PutOptions,
    ) -> Result<PutResult> {
        let tmp = TempPath(self.root.join("tmp").join(uuid::Uuid::new_v4().to_string()));
        let mut file = tokio::fs::OpenOptions::from(private_new_file())
            .open(&tmp.0)
            .await
            .map_err(|e| write_error(key, e))?;
        let mut check = BodyCheck::new(key, &options, true);
        while let Some(chunk) = body.next().await {
            let chunk = chunk?;
            check.update(&chunk)?;
            file.write_all(&chunk)
                .await
                .map_err(|e| write_error(key, e))?;
        }
        file.flush().await.map_err(|e| write_error(key, e))?;
        file.sync_all().await.map_err(|e| write_error(key, e))?;
        let inode = file
            .metadata()
            .await
            .map_err(|e| write_error(key, e))?
            .ino();
        drop(file);
        let (size, etag) = check.finish()?;
        let etag = etag.unwrap_or_default();
        let (encryption, kms_key_id) = encryption_fields(&options.encryption);
        let sidecar = Sidecar {
            size,
            etag: etag.clone(),
            last_modified: Utc::now(),
            content_type: options.content_type,
            metadata: options.metadata,
            encryption,
            kms_key_id,
            inode,
            sha256: options.sha256.map(hex::encode),
        };
        let key_owned = key.clone();
        self.blocking(move |root| {
            let tmp = tmp;
            commit(root, &key_owned, &tmp.0, &sidecar, options.create_only)
        })
        .await?;
        Ok(PutResult { size, etag })
    }

    async fn get(&self, key: &ObjectKey, options: GetOptions) -> Result<GetResult> {
        let key_owned = key.clone();
        let (file, meta) = self
            .blocking(move |root| open_consistent(root, &key_owned))
            .await?;
        if let Some(tag) = &options.if_none_match
            && etag_matches(tag, &meta.etag)
        {
            return Err(StoreError::NotModified {
                key: key.to_string(),
            });
        }
        let range = match options.range {
            None => 0..meta.size,
            Some(range) => {
                range
                    .resolve(meta.size)
                    .ok_or_else(|| StoreError::RangeNotSatisfiable {
                        key: key.to_string(),
                        size: meta.size,
                    })?
            }
        };
        let mut file = tokio::fs::File::from_std(file);
        if range.start > 0 {
            file.seek(SeekFrom::Start(range.start))
                .await
                .map_err(|e| read_error(key, e))?;
        }
        let error_key = key.clone();
        let body = tokio_util::io::ReaderStream::with_capacity(
            file.take(range.end - range.start),
            READ_CHUNK,
        )
        .map_err(move |e| write_error(&error_key, e))
        .boxed();
        Ok(GetResult { meta, range, body })
    }

    async fn head(&self, key: &ObjectKey) -> Result<ObjectMeta> {
        let key = key.clone();
        self.blocking(move |root| open_consistent(root, &key).map(|(_, meta)| meta))
            .await
    }

    async fn delete(&self, key: &ObjectKey) -> Result<()> {
        let key = key.clone();
        self.blocking(move |root| {
            // Bytes first: once they are gone no reader finds the object, whatever happens next.
            let object_path = Self::object_path(root, &key);
            remove_if_present(&object_path).map_err(|e| write_error(&key, e))?;
            prune_empty_dirs(&object_path, &root.join("objects"));
            let meta_path = Self::meta_path(root, &key);
            remove_if_present(&meta_path).map_err(|e| write_error(&key, e))?;
            prune_empty_dirs(&meta_path, &root.join("meta"));
            Ok(())
        })
        .await
    }

    async fn copy(&self, from: &ObjectKey, to: &ObjectKey) -> Result<()> {
        let (from, to) = (from.clone(), to.clone());
        self.blocking(move |root| copy_object(root, &from, &to, None).map(|_| ()))
            .await
    }

    async fn copy_with(
        &self,
        from: &ObjectKey,
        to: &ObjectKey,
        options: PutOptions,
    ) -> Result<PutResult> {
        let (from, to) = (from.clone(), to.clone());
        self.blocking(move |root| copy_object(root, &from, &to, Some(&options)))
            .await
    }

    async fn create_multipart(&self, key: &ObjectKey, options: &PutOptions) -> Result<String> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let (encryption, kms_key_id) = encryption_fields(&options.encryption);
        let manifest = UploadManifest {
            key: key.to_string(),
            content_type: options.content_type.clone(),
            metadata: options.metadata.clone(),
            encryption,
            kms_key_id,
        };
        let json = serde_json::to_vec(&manifest)
            .map_err(|e| StoreError::other("cannot encode an upload manifest", e))?;
        let (key, dir_id) = (key.clone(), id.clone());
        self.blocking(move |root| {
            let dir = root.join("parts").join(&dir_id);
            create_private_dir_all(&dir).map_err(|e| write_error(&key, e))?;
            // Written whole, then renamed: a reader sees the manifest or nothing.
            let tmp = TempPath(root.join("tmp").join(uuid::Uuid::new_v4().to_string()));
            private_write(&tmp.0, &json).map_err(|e| write_error(&key, e))?;
            fs::rename(&tmp.0, dir.join("upload.json")).map_err(|e| write_error(&key, e))
        })
        .await?;
        Ok(id)
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
        let (key_owned, id) = (key.clone(), upload_id.to_owned());
        let (dir, _) = self
            .blocking(move |root| Self::upload_dir(root, &key_owned, &id))
            .await?;
        let tmp = TempPath(self.root.join("tmp").join(uuid::Uuid::new_v4().to_string()));
        let mut file = tokio::fs::OpenOptions::from(private_new_file())
            .open(&tmp.0)
            .await
            .map_err(|e| write_error(key, e))?;
        let options = PutOptions {
            size: Some(size),
            ..PutOptions::default()
        };
        let mut check = BodyCheck::new(key, &options, true);
        while let Some(chunk) = body.next().await {
            let chunk = chunk?;
            check.update(&chunk)?;
            file.write_all(&chunk)
                .await
                .map_err(|e| write_error(key, e))?;
        }
        file.flush().await.map_err(|e| write_error(key, e))?;
        file.sync_all().await.map_err(|e| write_error(key, e))?;
        drop(file);
        let (size, etag) = check.finish()?;
        let etag = etag.unwrap_or_default();
        let name = format!("{part_number:05}.{}", etag.trim_matches('"'));
        let key_owned = key.clone();
        self.blocking(move |_| {
            let tmp = tmp;
            // Another upload of the same number is replaced, as on S3.
            for (number, _, path) in part_files(&dir).map_err(|e| read_error(&key_owned, e))? {
                if number == part_number {
                    remove_if_present(&path).map_err(|e| write_error(&key_owned, e))?;
                }
            }
            // An abort removed the directory meanwhile: the upload is gone.
            fs::rename(&tmp.0, dir.join(&name)).map_err(|e| read_error(&key_owned, e))
        })
        .await?;
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
        let (key, id) = (key.clone(), upload_id.to_owned());
        self.blocking(move |root| {
            let (dir, _) = Self::upload_dir(root, &key, &id)?;
            let mut parts: Vec<PartInfo> = part_files(&dir)
                .map_err(|e| read_error(&key, e))?
                .into_iter()
                .filter_map(|(part_number, etag, path)| {
                    let size = fs::metadata(path).ok()?.len();
                    Some(PartInfo {
                        part_number,
                        etag: format!("\"{etag}\""),
                        size,
                    })
                })
                .collect();
            parts.sort_by_key(|part| part.part_number);
            Ok(parts)
        })
        .await
    }

    async fn complete_multipart(
        &self,
        key: &ObjectKey,
        upload_id: &str,
        parts: &[CompletedPart],
    ) -> Result<PutResult> {
        let (key, id, parts) = (key.clone(), upload_id.to_owned(), parts.to_vec());
        self.blocking(move |root| complete_upload(root, &key, &id, &parts))
            .await
    }

    async fn abort_multipart(&self, key: &ObjectKey, upload_id: &str) -> Result<()> {
        let (key, id) = (key.clone(), upload_id.to_owned());
        self.blocking(move |root| match Self::upload_dir(root, &key, &id) {
            Ok((dir, _)) => match fs::remove_dir_all(&dir) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
                Err(e) => Err(write_error(&key, e)),
            },
            Err(StoreError::NotFound { .. }) => Ok(()),
            Err(other) => Err(other),
        })
        .await
    }

    async fn list(&self, options: ListOptions) -> Result<ListPage> {
        let prefix = options.prefix.unwrap_or_default();
        let max_keys = options.max_keys.unwrap_or(1000).clamp(1, 1000);
        let token = options.page_token;
        self.blocking(move |root| {
            let mut keys: Vec<String> = keys_under(root, &prefix)
                .map_err(|source| StoreError::other("cannot list the local store", source))?
                .into_iter()
                .filter(|key| token.as_deref().is_none_or(|token| key.as_str() > token))
                .collect();
            keys.sort_unstable();
            let mut objects = Vec::with_capacity(max_keys.min(keys.len()));
            let mut next_token = None;
            for key in keys {
                // Names that are not valid keys were not written by this store: skip them.
                let Ok(key) = ObjectKey::parse(key) else {
                    continue;
                };
                if objects.len() == max_keys {
                    next_token = objects.last().map(|meta: &ObjectMeta| meta.key.to_string());
                    break;
                }
                match open_consistent(root, &key) {
                    Ok((_, mut meta)) => {
                        meta.content_type = None;
                        meta.metadata.clear();
                        objects.push(meta);
                    }
                    // Deleted since the walk.
                    Err(StoreError::NotFound { .. }) => {}
                    Err(other) => return Err(other),
                }
            }
            Ok(ListPage {
                objects,
                next_token,
            })
        })
        .await
    }

    async fn presign(
        &self,
        method: PresignMethod,
        key: &ObjectKey,
        expires_in: Duration,
        options: &PresignOptions,
    ) -> Result<PresignedUrl> {
        // The content disposition is for whoever serves the URL (see `PresignOptions`); the
        // signer binds what a PUT must be.
        self.signer.presign(method, key, expires_in, options)
    }

    async fn sweep(&self, older_than: DateTime<Utc>, dry_run: bool) -> Result<SweepReport> {
        let cutoff = SystemTime::from(older_than);
        let (temp_files, multipart_uploads) = self
            .blocking(move |root| {
                Ok((
                    sweep_temp_files(root, cutoff, dry_run)?,
                    sweep_uploads(root, cutoff, dry_run)?,
                ))
            })
            .await?;
        Ok(SweepReport {
            temp_files,
            multipart_uploads,
            ..SweepReport::default()
        })
    }

    /// The store's three directories exist: one `stat` each, whatever the store holds (a
    /// listing walked every directory, about 60 ms for 40 000 objects).
    async fn ping(&self) -> Result<()> {
        self.blocking(|root| {
            for dir in DIRS {
                let path = root.join(dir);
                match fs::metadata(&path) {
                    Ok(meta) if meta.is_dir() => {}
                    Ok(_) => {
                        return Err(StoreError::Unavailable {
                            source: format!("{} is not a directory", path.display()).into(),
                        });
                    }
                    Err(source) => {
                        return Err(StoreError::Unavailable {
                            source: format!("cannot reach {}: {source}", path.display()).into(),
                        });
                    }
                }
            }
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use bytes::Bytes;

    use super::*;
    use crate::ObjectStoreExt as _;

    fn store(root: &Path) -> LocalFsStore {
        LocalFsStore::new(LocalFsConfig {
            root: root.to_owned(),
            base_url: "http://127.0.0.1:1/objects".to_owned(),
            signing_key: vec![7; 32],
        })
        .unwrap()
    }

    fn modes(path: &Path, out: &mut Vec<(PathBuf, u32)>) {
        out.push((
            path.to_owned(),
            fs::metadata(path).unwrap().permissions().mode() & 0o777,
        ));
        if path.is_dir() {
            for entry in fs::read_dir(path).unwrap() {
                modes(&entry.unwrap().path(), out);
            }
        }
    }

    #[tokio::test]
    async fn directories_are_0700_and_files_0600_whatever_the_umask() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("objects");
        let store = store(&root);
        let k = ObjectKey::parse("events/e/media/2026/01/02/a.png").unwrap();
        store
            .put_bytes(&k, Bytes::from_static(b"png"), PutOptions::default())
            .await
            .unwrap();
        let copy = ObjectKey::parse("events/e/media/2026/01/02/b.png").unwrap();
        store.copy(&k, &copy).await.unwrap();
        let mut found = Vec::new();
        modes(&root, &mut found);
        assert!(found.len() > 10, "{found:?}");
        let open: Vec<_> = found
            .iter()
            .filter(|(path, mode)| *mode != if path.is_dir() { 0o700 } else { 0o600 })
            .collect();
        assert!(open.is_empty(), "{open:?}");
    }

    #[tokio::test]
    async fn ping_looks_at_the_directories_not_the_objects() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("objects");
        let store = store(&root);
        store.ping().await.unwrap();
        fs::remove_dir(root.join("tmp")).unwrap();
        assert!(matches!(
            store.ping().await,
            Err(StoreError::Unavailable { .. })
        ));
    }
}
