//! The application state every worker shares, and how it is built from [`Settings`].

use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use plugs_media::{MediaService, ServiceConfig};
use plugs_persistence::{Database, DatabaseOptions};
use plugs_storage::{LocalFsConfig, LocalFsStore, ObjectStore};

use crate::auth::JwtKeys;
use crate::config::{Settings, StorageSettings};
use crate::metrics::Metrics;
use crate::routes::local_objects::LocalObjects;
use crate::routes::media::UploadLimits;

/// What the handlers share: the service, the token keys, the metrics, the upload limits and,
/// for the local store, what serves its presigned URLs.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The media service.
    pub service: MediaService,
    /// Token verification.
    pub keys: JwtKeys,
    /// Metrics registry.
    pub metrics: Metrics,
    /// Upload limits.
    pub limits: UploadLimits,
    /// Set when the store's presigned URLs point at this server.
    pub local_objects: Option<LocalObjects>,
    /// Browser origins allowed to call the API; empty: no CORS.
    pub cors_allowed_origins: Vec<String>,
    /// The first answers to requests sent with an `Idempotency-Key`.
    pub idempotency: Arc<dyn plugs_persistence::IdempotencyRepository>,
}

/// Whether to apply pending migrations while connecting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Migrations {
    /// Apply them (`serve`, `migrate`).
    Apply,
    /// Leave the schema alone.
    Skip,
}

/// Opens the database (applying migrations if asked).
pub async fn connect_database(
    settings: &Settings,
    migrations: Migrations,
) -> anyhow::Result<Database> {
    let url = settings.database_url.clone();
    // Connecting blocks (it establishes one connection before returning).
    let database = tokio::task::spawn_blocking(move || {
        create_private_sqlite_file(url.expose())
            .context("DATABASE_URL: cannot create the SQLite database file")?;
        Database::connect(url.expose(), DatabaseOptions::default())
            .context("DATABASE_URL: cannot connect to the database")
    })
    .await
    .context("database connection task failed")??
    // Uploads enqueue jobs for the types this process's workers (and its peers') can decode.
    .with_processable(settings.external_tools.processable());
    if migrations == Migrations::Apply {
        database
            .run_migrations()
            .await
            .context("applying database migrations failed")?;
    }
    Ok(database)
}

/// The object store the settings name, and (for the local store) what serves its presigned URLs.
pub async fn build_store(
    settings: &Settings,
) -> anyhow::Result<(Arc<dyn ObjectStore>, Option<LocalObjects>)> {
    build_store_with(settings, upload_budget(settings)).await
}

/// The budget the S3 store's part buffers share (`UPLOAD_MEMORY_BUDGET`); none for the local
/// store, which writes the bytes to a file as they come and buffers no parts.
pub fn upload_budget(settings: &Settings) -> Option<plugs_storage::MemoryBudget> {
    matches!(settings.storage, StorageSettings::S3 { .. })
        .then(|| plugs_storage::MemoryBudget::new(settings.upload_memory_budget))
}

/// [`build_store`], the S3 store's part buffers taking from `upload_budget`.
async fn build_store_with(
    settings: &Settings,
    upload_budget: Option<plugs_storage::MemoryBudget>,
) -> anyhow::Result<(Arc<dyn ObjectStore>, Option<LocalObjects>)> {
    match &settings.storage {
        StorageSettings::Local { root } => {
            let signing_key = presign_key(&settings.data_dir)?;
            let config = LocalFsConfig {
                root: root.clone(),
                base_url: format!("{}/api/v1/objects", settings.public_base_url),
                signing_key,
            };
            let store = LocalFsStore::new(config)
                .with_context(|| format!("DATA_DIR: cannot open {}", root.display()))?;
            tracing::info!(root = %root.display(), "objects stored in a local directory");
            let verifier = store.clone();
            let local = LocalObjects {
                store: Arc::new(store.clone()),
                verify: Arc::new(move |key, params, signature| {
                    verifier.verify_presigned(key, params, signature)
                }),
                max_size: settings.max_file_size,
            };
            Ok((Arc::new(store), Some(local)))
        }
        StorageSettings::S3 { .. } => s3::build(settings, upload_budget)
            .await
            .map(|store| (store, None)),
    }
}

/// The S3 store, built from settings.
pub mod s3 {
    use plugs_storage::{MemoryBudget, S3Config, S3Store};

    use anyhow::Context as _;

    use super::{Arc, ObjectStore, Settings, StorageSettings};
    use crate::config::S3Credentials;

    /// The S3 store, its part buffers taking from `part_budget`. Makes no request: a wrong
    /// bucket or credentials show in `/readyz`.
    pub(super) async fn build(
        settings: &Settings,
        part_budget: Option<MemoryBudget>,
    ) -> anyhow::Result<Arc<dyn ObjectStore>> {
        Ok(Arc::new(store(settings, part_budget).await?))
    }

    /// The S3 store itself.
    async fn store(
        settings: &Settings,
        part_budget: Option<MemoryBudget>,
    ) -> anyhow::Result<S3Store> {
        let mut config = config(settings)?;
        config.part_budget = part_budget;
        let (bucket, endpoint_url) = (config.bucket.clone(), config.endpoint_url.clone());
        let store = S3Store::new(config).await.context("S3 settings refused")?;
        tracing::info!(bucket = %bucket, endpoint = ?endpoint_url, "objects stored in S3");
        Ok(store)
    }

    /// The S3 client settings the settings name (bucket, region, endpoint, credentials).
    pub fn config(settings: &Settings) -> anyhow::Result<S3Config> {
        let StorageSettings::S3 {
            bucket,
            region,
            endpoint_url,
            force_path_style,
            credentials,
        } = &settings.storage
        else {
            anyhow::bail!("S3_BUCKET_NAME: not set");
        };
        let mut config = S3Config::new(bucket.clone(), region.clone());
        config.endpoint_url = endpoint_url.clone();
        config.force_path_style = *force_path_style;
        config.payload_signing = settings.payload_signing;
        match credentials {
            S3Credentials::DefaultChain => config.use_iam_role = true,
            S3Credentials::Static {
                access_key_id,
                secret_access_key,
            } => {
                config.use_iam_role = false;
                config.access_key_id = Some(access_key_id.expose().to_owned());
                config.secret_access_key = Some(secret_access_key.expose().to_owned());
            }
        }
        Ok(config)
    }
}

/// Creates `dir` and its missing parents with mode 0700 (owner only): the embedded default keeps
/// the database, the objects and two secrets there. A directory that exists is left as it is.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Creates the file of a `sqlite://PATH` URL, empty (an empty file is an empty database), with
/// mode 0600 in a 0700 directory, before SQLite would create it 0644. SQLite gives its `-wal` and
/// `-shm` files the database file's mode. Other URLs, and a file that exists, are left alone.
fn create_private_sqlite_file(url: &str) -> std::io::Result<()> {
    let Some(path) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    else {
        return Ok(());
    };
    let path = path.split('?').next().unwrap_or_default();
    if path.is_empty() || path == ":memory:" || path.starts_with("file:") {
        return Ok(());
    }
    let path = Path::new(path);
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_private_dir(parent)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(err) => Err(err),
    }
}

/// Options that create (or truncate) a file with mode 0600 (owner only), for secrets.
pub fn private_file_options() -> std::fs::OpenOptions {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
}

/// The key local presigned URLs are signed with: random, kept in `DATA_DIR/presign-key` (mode
/// 0600) so URLs handed out stay valid across restarts.
fn presign_key(data_dir: &Path) -> anyhow::Result<Vec<u8>> {
    let path = data_dir.join("presign-key");
    match std::fs::read_to_string(&path) {
        Ok(text) if text.trim().len() >= 32 => return Ok(text.trim().as_bytes().to_vec()),
        Ok(_) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(err).with_context(|| format!("cannot read {}", path.display())),
    }
    create_private_dir(data_dir)
        .with_context(|| format!("DATA_DIR: cannot create {}", data_dir.display()))?;
    let key = hex::encode(rand::random::<[u8; 32]>());
    let mut file = private_file_options()
        .open(&path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(key.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(key.into_bytes())
}

/// The service over the configured database and store.
pub async fn build_service(
    settings: &Settings,
    migrations: Migrations,
) -> anyhow::Result<(MediaService, Option<LocalObjects>)> {
    let database = Arc::new(connect_database(settings, migrations).await?);
    build_service_on(settings, database, upload_budget(settings)).await
}

/// [`build_service`] over a database already open.
async fn build_service_on(
    settings: &Settings,
    database: Arc<Database>,
    upload_budget: Option<plugs_storage::MemoryBudget>,
) -> anyhow::Result<(MediaService, Option<LocalObjects>)> {
    let (store, local) = build_store_with(settings, upload_budget).await?;
    let download_signer = cdn_signer(settings)?;
    let config = ServiceConfig {
        policy: settings.policy.clone(),
        encryption: settings.encryption.clone(),
        presign_default_ttl: settings.presign_ttl,
        cdn_base_url: settings.cdn_base_url.clone(),
        reconcile_grace: settings.gc_grace,
        upload_lease: settings.upload_lease,
        direct_upload_ttl: settings.direct_upload_ttl,
        multipart_threshold: settings.direct_upload_multipart_threshold,
        direct_part_size: settings.direct_upload_part_size,
        direct_complete_async_above: settings.direct_upload_async_complete_above,
        download_signer,
        quota: settings.quota,
        strip_location: settings.strip_location,
        external_tools: settings.external_tools.clone(),
        ..ServiceConfig::default()
    };
    let service = MediaService::new(
        store,
        database.clone(),
        database.clone(),
        database.clone(),
        config,
    )
    .with_jobs(database.clone())
    .with_tus(database);
    // Large downloads read ahead in ranges, all of them within one memory budget.
    let service = if settings.download_ranges_in_flight > 0 {
        service.with_read_ahead(
            plugs_storage::ReadAhead::new(
                settings.download_range_size,
                settings.download_ranges_in_flight,
            )
            .with_budget(plugs_storage::MemoryBudget::new(
                settings.download_memory_budget,
            )),
        )
    } else {
        service
    };
    Ok((service, local))
}

/// The CloudFront signer the settings ask for: its key is read (and refused) at start, not at
/// the first download.
fn cdn_signer(settings: &Settings) -> anyhow::Result<Option<Arc<dyn plugs_media::DownloadSigner>>> {
    let (Some(base_url), Some(signing)) = (&settings.cdn_base_url, &settings.cdn_signing) else {
        return Ok(None);
    };
    let signer = crate::cdn::CloudFrontSigner::load(
        base_url,
        &signing.key_pair_id,
        &signing.private_key_pem,
        signing.hash,
    )?;
    tracing::info!(key = signer.key_kind(), key_pair_id = %signing.key_pair_id, hash = ?signing.hash, "presigned downloads are CloudFront signed URLs");
    Ok(Some(Arc::new(signer)))
}

/// Everything `serve` needs.
pub async fn build(settings: &Settings) -> anyhow::Result<AppState> {
    let keys = JwtKeys::from_settings(settings)?;
    keys.prefetch().await;
    let database = Arc::new(connect_database(settings, Migrations::Apply).await?);
    let upload_budget = upload_budget(settings);
    let (service, local_objects) =
        build_service_on(settings, database.clone(), upload_budget.clone()).await?;
    let mut metrics = Metrics::new().context("registering metrics failed")?;
    if let Some(budget) = &upload_budget {
        metrics = metrics
            .with_upload_budget(budget)
            .context("registering metrics failed")?;
    }
    if let Some(budget) = service
        .read_ahead()
        .and_then(plugs_storage::ReadAhead::budget)
    {
        metrics = metrics
            .with_download_budget(budget)
            .context("registering metrics failed")?;
    }
    Ok(AppState {
        service,
        idempotency: database,
        keys,
        metrics,
        limits: UploadLimits {
            idle_timeout: settings.upload_idle_timeout,
            min_bytes_per_sec: settings.upload_min_rate,
            // One knob for both: the rate is judged over windows as long as the idle timeout.
            rate_window: settings.upload_idle_timeout,
            ..UploadLimits::with_max_file_size(settings.max_file_size)
        },
        local_objects,
        cors_allowed_origins: settings.cors_allowed_origins.clone(),
    })
}
