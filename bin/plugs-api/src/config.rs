//! Settings: defaults, then an optional TOML file, then the environment, then flags; validated
//! once into [`Settings`], with errors that name the setting and never echo a secret.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The environment names this binary reads (the TOML file uses the same names in lower case).
/// Only these are taken from the environment, so an unrelated variable never trips validation.
pub const ENV_NAMES: &[&str] = &[
    "BIND_ADDR",
    "METRICS_BIND_ADDR",
    "DATA_DIR",
    "DATABASE_URL",
    "S3_BUCKET_NAME",
    "S3_REGION",
    "S3_USE_IAM_ROLE",
    "S3_ENDPOINT_URL",
    "S3_FORCE_PATH_STYLE",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "MAX_FILE_SIZE",
    "JWT_SECRET",
    "JWT_PUBLIC_KEY_PEM",
    "JWT_JWKS_URL",
    "JWT_ISSUER",
    "JWT_AUDIENCE",
    "JWT_MAX_LIFETIME",
    "PRESIGN_TTL",
    "CDN_BASE_URL",
    "CDN_KEY_PAIR_ID",
    "CDN_PRIVATE_KEY_PEM",
    "CDN_HASH_ALGORITHM",
    "PUBLIC_BASE_URL",
    "GC_INTERVAL",
    "GC_GRACE",
    "UPLOAD_IDLE_TIMEOUT",
    "UPLOAD_MIN_RATE",
    "UPLOAD_LEASE",
    "CORS_ALLOWED_ORIGINS",
    "DIRECT_UPLOAD_TTL",
    "QUOTA_EVENT_BYTES",
    "QUOTA_EVENT_MEDIA",
    "QUOTA_OWNER_BYTES",
    "QUOTA_OWNER_MEDIA",
    "DIRECT_UPLOAD_MULTIPART_THRESHOLD",
    "DIRECT_UPLOAD_PART_SIZE",
    "DIRECT_UPLOAD_ASYNC_COMPLETE_ABOVE",
    "DOWNLOAD_RANGE_SIZE",
    "DOWNLOAD_RANGES_IN_FLIGHT",
    "DOWNLOAD_MEMORY_BUDGET",
    "UPLOAD_MEMORY_BUDGET",
    "LOG_FORMAT",
    "S3_SSE",
    "S3_SSE_KMS_KEY_ID",
    "S3_PAYLOAD_SIGNING",
    "ALLOWED_TYPES",
    "STRIP_LOCATION",
    "PROCESSING_WORKERS",
    "THUMBNAIL_WIDTHS",
    "DISPLAY_LONG_EDGE",
    "DERIVED_FORMAT",
    "DERIVED_QUALITY",
    "PROCESSING_MAX_PIXELS",
    "PROCESSING_MAX_ATTEMPTS",
    "PROCESSING_JOB_LEASE",
    "PROCESSING_JOB_TIMEOUT",
    "PROCESSING_CHILD_MEMORY",
    "PROCESSING_CHILD_CPU_SECONDS",
    "PROCESSING_MAX_VIDEO_SIZE",
];

/// A value that must never reach a log line, an error message or `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Why the settings could not be loaded. Messages name the setting, never a secret's value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The configuration file or a value's type was wrong (the message names the key).
    #[error("configuration: {0}")]
    Load(#[from] config::ConfigError),
    /// A value has the right type but is not acceptable.
    #[error("configuration: {setting}: {reason}")]
    Invalid {
        /// The environment name of the setting.
        setting: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

fn invalid(setting: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        setting,
        reason: reason.into(),
    }
}

/// Overrides given on the command line: the last layer.
#[derive(Debug, Clone, Default)]
pub struct FlagOverrides {
    /// `--bind-addr`.
    pub bind_addr: Option<String>,
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--log-format`.
    pub log_format: Option<String>,
}

/// The settings as layered, before validation. Every field has a default or is optional.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    bind_addr: String,
    metrics_bind_addr: Option<String>,
    data_dir: PathBuf,
    database_url: Option<String>,
    s3_bucket_name: Option<String>,
    s3_region: String,
    s3_use_iam_role: bool,
    s3_endpoint_url: Option<String>,
    s3_force_path_style: Option<bool>,
    aws_access_key_id: Option<String>,
    aws_secret_access_key: Option<String>,
    max_file_size: u64,
    jwt_secret: Option<String>,
    jwt_public_key_pem: Option<PathBuf>,
    jwt_jwks_url: Option<String>,
    jwt_issuer: Option<String>,
    jwt_audience: Option<String>,
    jwt_max_lifetime: u64,
    presign_ttl: u64,
    cdn_base_url: Option<String>,
    cdn_key_pair_id: Option<String>,
    cdn_private_key_pem: Option<PathBuf>,
    cdn_hash_algorithm: String,
    public_base_url: Option<String>,
    gc_interval: u64,
    gc_grace: u64,
    upload_idle_timeout: u64,
    upload_min_rate: u64,
    upload_lease: Option<u64>,
    cors_allowed_origins: Option<String>,
    direct_upload_ttl: u64,
    quota_event_bytes: Option<u64>,
    quota_event_media: Option<u64>,
    quota_owner_bytes: Option<u64>,
    quota_owner_media: Option<u64>,
    direct_upload_multipart_threshold: u64,
    direct_upload_part_size: u64,
    direct_upload_async_complete_above: u64,
    download_range_size: u64,
    download_ranges_in_flight: usize,
    download_memory_budget: u64,
    upload_memory_budget: u64,
    log_format: String,
    s3_sse: String,
    s3_sse_kms_key_id: Option<String>,
    s3_payload_signing: String,
    allowed_types: Option<String>,
    strip_location: bool,
    processing_workers: usize,
    thumbnail_widths: String,
    display_long_edge: u32,
    derived_format: String,
    derived_quality: u8,
    processing_max_pixels: u64,
    processing_max_attempts: u32,
    processing_job_lease: u64,
    processing_job_timeout: u64,
    processing_child_memory: u64,
    processing_child_cpu_seconds: u64,
    processing_max_video_size: u64,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Credentials for the S3 store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum S3Credentials {
    /// The standard AWS chain (environment, profile, IAM role, web identity).
    DefaultChain,
    /// Static keys from `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`.
    Static {
        /// Access key id (not secret on its own, but kept out of logs all the same).
        access_key_id: Secret,
        /// Secret access key.
        secret_access_key: Secret,
    },
}

/// Where object bytes go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageSettings {
    /// A local directory (the embedded default): `DATA_DIR/objects`.
    Local {
        /// The directory holding the objects.
        root: PathBuf,
    },
    /// An S3 bucket (`S3_BUCKET_NAME` set).
    S3 {
        /// Bucket name.
        bucket: String,
        /// Region.
        region: String,
        /// Endpoint of an S3-compatible service (MinIO, R2, ...); `None` for AWS.
        endpoint_url: Option<String>,
        /// Path-style addressing; defaults to true when an endpoint is given.
        force_path_style: bool,
        /// Which credentials to use.
        credentials: S3Credentials,
    },
}

/// How bearer tokens are verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwtSettings {
    /// HS256 with a shared secret (`JWT_SECRET`).
    Secret(Secret),
    /// RS256 with a public key read from this PEM file (`JWT_PUBLIC_KEY_PEM`).
    PublicKeyFile(PathBuf),
    /// RS256 or ES256 with the keys of a JWKS document (`JWT_JWKS_URL`), fetched at start,
    /// cached, and fetched again when a token names a key the cache does not hold.
    Jwks(String),
    /// Neither configured: a development secret kept in `DATA_DIR/jwt-secret`.
    Development,
}

/// What a token's claims must say besides a valid signature, `exp` and `sub`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtPolicy {
    /// `JWT_ISSUER`: when set, `iss` must be present and equal it.
    pub issuer: Option<String>,
    /// `JWT_AUDIENCE`: when set, `aud` must be present and hold it; when unset, any `aud` (as
    /// identity providers always put one) is accepted.
    pub audience: Option<String>,
    /// `JWT_MAX_LIFETIME`: the longest a token may live, `exp - iat` (or `exp - now` when it has
    /// no `iat`), so that a leaked token, or one minted with a huge `exp`, stops working.
    pub max_lifetime: Duration,
}

impl Default for JwtPolicy {
    fn default() -> Self {
        Self {
            issuer: None,
            audience: None,
            max_lifetime: Duration::from_secs(DEFAULT_JWT_MAX_LIFETIME_SECS),
        }
    }
}

/// CloudFront signed URLs for presigned downloads (`CDN_KEY_PAIR_ID`, `CDN_PRIVATE_KEY_PEM`,
/// `CDN_HASH_ALGORITHM`); needs `CDN_BASE_URL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CdnSigning {
    /// The id of the CloudFront public key (the URL's `Key-Pair-Id`).
    pub key_pair_id: String,
    /// The PEM file of its private key (RSA-2048 or ECDSA P-256), read at start.
    pub private_key_pem: PathBuf,
    /// SHA-256 (the default) or SHA-1.
    pub hash: crate::cdn::HashAlgorithm,
}

/// The most one download's read-ahead may hold (issue 15: memory per transfer <= 64 MiB).
pub const MAX_DOWNLOAD_MEMORY: u64 = 64 * 1024 * 1024;

/// The part size of uploads to S3 (`S3Config::new`'s), the least `UPLOAD_MEMORY_BUDGET` may be.
pub const UPLOAD_PART_SIZE: u64 = 8 * 1024 * 1024;

/// `UPLOAD_MEMORY_BUDGET` when unset: eight parts in flight across all uploads.
pub const DEFAULT_UPLOAD_MEMORY_BUDGET: u64 = 64 * 1024 * 1024;

/// `JWT_MAX_LIFETIME` when unset: one day.
pub const DEFAULT_JWT_MAX_LIFETIME_SECS: u64 = 86_400;

/// Validated settings of the binary.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Address the HTTP server listens on.
    pub bind_addr: SocketAddr,
    /// Where `/metrics` is served instead of the main listener (`METRICS_BIND_ADDR`); `None`:
    /// on the main listener.
    pub metrics_bind_addr: Option<SocketAddr>,
    /// Directory for the embedded defaults (SQLite file, local objects, development secret).
    pub data_dir: PathBuf,
    /// Database URL (may hold a password).
    pub database_url: Secret,
    /// Object store.
    pub storage: StorageSettings,
    /// Largest accepted upload, in bytes.
    pub max_file_size: u64,
    /// Token verification.
    pub jwt: JwtSettings,
    /// What tokens' claims must say (issuer, audience, lifetime).
    pub jwt_policy: JwtPolicy,
    /// Lifetime of presigned URLs when the client does not ask for one.
    pub presign_ttl: Duration,
    /// Base URL of a CDN in front of the bucket.
    pub cdn_base_url: Option<String>,
    /// CloudFront signed URLs for `/url` instead of S3's presigned ones; `None`: S3's.
    pub cdn_signing: Option<CdnSigning>,
    /// Base URL clients reach this server at (used in local-store presigned URLs).
    pub public_base_url: String,
    /// How often the server reconciles the database with the store; `None` = never.
    pub gc_interval: Option<Duration>,
    /// How old an unclaimed object must be before the reconciler removes it.
    pub gc_grace: Duration,
    /// An upload whose body sends nothing for this long is abandoned (`UPLOAD_IDLE_TIMEOUT`).
    pub upload_idle_timeout: Duration,
    /// Slowest accepted upload, bytes per second over windows of `UPLOAD_IDLE_TIMEOUT`
    /// (`UPLOAD_MIN_RATE`); 0: no minimum.
    pub upload_min_rate: u64,
    /// How long an upload's `pending` record is held without news (`UPLOAD_LEASE`; default
    /// twice the idle timeout, at least 60 s). gc rolls back only uploads whose lease lapsed.
    pub upload_lease: Duration,
    /// Browser origins allowed to call the API (`CORS_ALLOWED_ORIGINS`, comma separated, each
    /// `scheme://host[:port]`); empty: no cross-origin access.
    pub cors_allowed_origins: Vec<String>,
    /// Limits on what an event and an owner may hold (`QUOTA_EVENT_BYTES`, `QUOTA_EVENT_MEDIA`,
    /// `QUOTA_OWNER_BYTES`, `QUOTA_OWNER_MEDIA`); none by default.
    pub quota: plugs_domain::Quota,
    /// How long a direct upload's URLs work (`DIRECT_UPLOAD_TTL`).
    pub direct_upload_ttl: Duration,
    /// Direct uploads above this size get a multipart plan (`DIRECT_UPLOAD_MULTIPART_THRESHOLD`).
    pub direct_upload_multipart_threshold: u64,
    /// Part size of a direct multipart upload (`DIRECT_UPLOAD_PART_SIZE`, at least 5 MiB).
    pub direct_upload_part_size: u64,
    /// Completing a direct upload larger than this verifies it in the background and answers
    /// 202 with a status URL (`DIRECT_UPLOAD_ASYNC_COMPLETE_ABOVE`).
    pub direct_upload_async_complete_above: u64,
    /// Downloads of large objects read ahead in ranges of this many bytes
    /// (`DOWNLOAD_RANGE_SIZE`, at least 1 MiB).
    pub download_range_size: u64,
    /// Ranges one download fetches at once (`DOWNLOAD_RANGES_IN_FLIGHT`; 0: one plain GET per
    /// download). One download holds at most `DOWNLOAD_RANGE_SIZE × (this + 1)`, at most 64 MiB.
    pub download_ranges_in_flight: usize,
    /// Bytes the read-ahead buffers of all downloads may hold at once (`DOWNLOAD_MEMORY_BUDGET`);
    /// a download never waits for it: one that finds no range's worth free is one plain GET.
    pub download_memory_budget: u64,
    /// Bytes the S3 multipart writer's part buffers of all uploads may hold at once
    /// (`UPLOAD_MEMORY_BUDGET`, at least one part): an upload holding no share waits in line
    /// for one for at most a few seconds each time, then takes it beyond the budget; further
    /// parts in flight only when free (see `plugs_storage::S3Config::part_budget`).
    pub upload_memory_budget: u64,
    /// What uploads may be: `MAX_FILE_SIZE` and `ALLOWED_TYPES`.
    pub policy: plugs_domain::MediaPolicy,
    /// Server-side encryption asked for every new object (`S3_SSE`, `S3_SSE_KMS_KEY_ID`).
    pub encryption: plugs_storage::ServerSideEncryption,
    /// Whether S3 request signatures cover upload payloads sent from memory
    /// (`S3_PAYLOAD_SIGNING`: `auto`, unsigned over HTTPS and signed over plain HTTP).
    pub payload_signing: plugs_storage::PayloadSigning,
    /// Log line format.
    pub log_format: LogFormat,
    /// Blank the GPS position in uploaded originals' EXIF (`STRIP_LOCATION`, default on).
    pub strip_location: bool,
    /// Processing workers `serve` runs (`PROCESSING_WORKERS`, default 1; 0: none, leave the
    /// queue to `plugs-api worker` processes).
    pub processing_workers: usize,
    /// Derived versions and the workers' limits (`THUMBNAIL_WIDTHS`, `DISPLAY_LONG_EDGE`,
    /// `DERIVED_FORMAT`, `DERIVED_QUALITY`, `PROCESSING_MAX_PIXELS`, `PROCESSING_MAX_ATTEMPTS`,
    /// `PROCESSING_JOB_LEASE`, `PROCESSING_JOB_TIMEOUT`, `PROCESSING_CHILD_MEMORY`,
    /// `PROCESSING_CHILD_CPU_SECONDS`, `PROCESSING_MAX_VIDEO_SIZE`).
    pub processing: plugs_media::ProcessingConfig,
    /// The external decoders found on `PATH` (`ffmpeg`, `heif-convert`, `prlimit`). Not a
    /// setting: none when loaded; the commands that make or enqueue derived versions look for
    /// them at start ([`Settings::detect_external_tools`]).
    pub external_tools: plugs_media::ExternalTools,
}

impl Settings {
    /// Looks for the external decoders on `PATH`, logs what it found (path and version, or that
    /// a program is missing and which types therefore get no derived versions) and keeps it.
    pub async fn detect_external_tools(&mut self) {
        let tools = plugs_media::ExternalTools::detect(std::env::var_os("PATH").as_deref()).await;
        for (name, tool) in tools.by_name() {
            match tool {
                Some(tool) => {
                    tracing::info!(program = name, path = %tool.path.display(), version = %tool.version, "external decoder found")
                }
                None => tracing::info!(program = name, "external decoder not found on PATH"),
            }
        }
        if !tools.decodes_heif() {
            tracing::warn!(
                "HEIC and AVIF get no derived versions (processing `none`): heif-convert (libheif-examples) and prlimit (util-linux) are both needed"
            );
        }
        if !tools.decodes_video() {
            tracing::warn!(
                "videos get no poster frame (processing `none`): ffmpeg and prlimit (util-linux) are both needed"
            );
        }
        self.external_tools = tools;
    }

    /// Layers defaults, the TOML file at `file` (if any), the process environment and `flags`,
    /// then validates.
    pub fn load(file: Option<&Path>, flags: &FlagOverrides) -> Result<Self, ConfigError> {
        let env: HashMap<String, String> = ENV_NAMES
            .iter()
            .filter_map(|name| {
                std::env::var(name)
                    .ok()
                    .map(|value| ((*name).to_owned(), value))
            })
            .collect();
        Self::load_from(file, &env, flags)
    }

    /// [`Settings::load`] with an explicit environment, for tests.
    pub fn load_from(
        file: Option<&Path>,
        env: &HashMap<String, String>,
        flags: &FlagOverrides,
    ) -> Result<Self, ConfigError> {
        // An empty variable means "unset", as shells and .env files often leave them.
        let env: config::Map<String, String> = env
            .iter()
            .filter(|(name, value)| ENV_NAMES.contains(&name.as_str()) && !value.is_empty())
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();
        let mut builder = config::Config::builder()
            .set_default("bind_addr", "127.0.0.1:8000")?
            .set_default("data_dir", "./data")?
            .set_default("s3_region", "us-east-1")?
            .set_default("s3_use_iam_role", false)?
            .set_default("max_file_size", plugs_domain::DEFAULT_MAX_SIZE_BYTES)?
            .set_default("presign_ttl", 900)?
            .set_default("jwt_max_lifetime", DEFAULT_JWT_MAX_LIFETIME_SECS)?
            .set_default("gc_interval", 0)?
            .set_default("gc_grace", 3600)?
            .set_default("upload_idle_timeout", 30)?
            .set_default("upload_min_rate", 1024)?
            .set_default("direct_upload_ttl", 3600)?
            .set_default("direct_upload_multipart_threshold", 64 * 1024 * 1024)?
            .set_default("direct_upload_part_size", 16 * 1024 * 1024)?
            .set_default("direct_upload_async_complete_above", 128 * 1024 * 1024)?
            .set_default("download_range_size", 8 * 1024 * 1024)?
            // One download's read-ahead at most 64 MiB (issue 15): 7 ranges in flight and the
            // one being sent, which is what brought `/stream` to the parallel client's rate.
            .set_default("download_ranges_in_flight", 7)?
            // All downloads' read-ahead together: one download's worth, so 16 at once stay
            // within 128 MiB of RSS; the others stream from one GET each meanwhile.
            .set_default("download_memory_budget", MAX_DOWNLOAD_MEMORY)?
            .set_default("upload_memory_budget", DEFAULT_UPLOAD_MEMORY_BUDGET)?
            .set_default("log_format", "text")?
            .set_default("cdn_hash_algorithm", "SHA256")?
            .set_default("s3_sse", "AES256")?
            .set_default("s3_payload_signing", "auto")?
            .set_default("strip_location", true)?
            .set_default("processing_workers", 1)?
            .set_default("thumbnail_widths", "256,1024")?
            .set_default("display_long_edge", 2048)?
            .set_default("derived_format", "jpeg")?
            .set_default("derived_quality", 82)?
            .set_default("processing_max_pixels", 100_000_000)?
            .set_default("processing_max_attempts", 5)?
            .set_default("processing_job_lease", 60)?
            .set_default("processing_job_timeout", 120)?
            .set_default("processing_child_memory", 2_u64 << 30)?
            .set_default("processing_child_cpu_seconds", 60)?
            .set_default("processing_max_video_size", 1_u64 << 30)?;
        if let Some(file) = file {
            builder = builder.add_source(config::File::from(file).format(config::FileFormat::Toml));
        }
        let raw: RawSettings = builder
            .add_source(config::Environment::default().source(Some(env)))
            .set_override_option("bind_addr", flags.bind_addr.clone())?
            .set_override_option(
                "data_dir",
                flags
                    .data_dir
                    .as_ref()
                    .map(|dir| dir.to_string_lossy().into_owned()),
            )?
            .set_override_option("log_format", flags.log_format.clone())?
            .build()?
            .try_deserialize()?;
        raw.validate()
    }
}

impl RawSettings {
    fn validate(self) -> Result<Settings, ConfigError> {
        let bind_addr: SocketAddr = self.bind_addr.parse().map_err(|_| {
            invalid(
                "BIND_ADDR",
                "expected an IP address and port, like 127.0.0.1:8000",
            )
        })?;
        let metrics_bind_addr = match &self.metrics_bind_addr {
            None => None,
            Some(text) => {
                let addr: SocketAddr = text.parse().map_err(|_| {
                    invalid(
                        "METRICS_BIND_ADDR",
                        "expected an IP address and port, like 127.0.0.1:9100",
                    )
                })?;
                if addr == bind_addr {
                    return Err(invalid(
                        "METRICS_BIND_ADDR",
                        "must differ from BIND_ADDR (leave it unset to serve /metrics there)",
                    ));
                }
                Some(addr)
            }
        };

        let database_url = match self.database_url {
            Some(url)
                if url.starts_with("postgres://")
                    || url.starts_with("postgresql://")
                    || url.starts_with("sqlite:") =>
            {
                Secret::new(url)
            }
            Some(_) => {
                return Err(invalid(
                    "DATABASE_URL",
                    "expected a postgres:// or sqlite:// URL",
                ));
            }
            None => Secret::new(format!(
                "sqlite://{}",
                self.data_dir.join("plugs.db").display()
            )),
        };

        let storage = match self.s3_bucket_name {
            None => StorageSettings::Local {
                root: self.data_dir.join("objects"),
            },
            Some(bucket) => {
                if let Some(endpoint) = &self.s3_endpoint_url {
                    check_url("S3_ENDPOINT_URL", endpoint)?;
                }
                let credentials = match (
                    self.s3_use_iam_role,
                    self.aws_access_key_id,
                    self.aws_secret_access_key,
                ) {
                    (true, _, _) | (false, None, None) => S3Credentials::DefaultChain,
                    (false, Some(id), Some(secret)) => S3Credentials::Static {
                        access_key_id: Secret::new(id),
                        secret_access_key: Secret::new(secret),
                    },
                    (false, Some(_), None) => {
                        return Err(invalid(
                            "AWS_SECRET_ACCESS_KEY",
                            "must be set with AWS_ACCESS_KEY_ID",
                        ));
                    }
                    (false, None, Some(_)) => {
                        return Err(invalid(
                            "AWS_ACCESS_KEY_ID",
                            "must be set with AWS_SECRET_ACCESS_KEY",
                        ));
                    }
                };
                StorageSettings::S3 {
                    bucket,
                    region: self.s3_region,
                    force_path_style: self
                        .s3_force_path_style
                        .unwrap_or(self.s3_endpoint_url.is_some()),
                    endpoint_url: self.s3_endpoint_url,
                    credentials,
                }
            }
        };

        if self.max_file_size == 0 {
            return Err(invalid("MAX_FILE_SIZE", "must be at least 1 byte"));
        }
        if self.upload_idle_timeout == 0 {
            return Err(invalid("UPLOAD_IDLE_TIMEOUT", "must be at least 1 second"));
        }
        if self.upload_lease == Some(0) {
            return Err(invalid("UPLOAD_LEASE", "must be at least 1 second"));
        }
        let cors_allowed_origins = parse_origins(self.cors_allowed_origins.as_deref())?;
        if !(1..=604_800).contains(&self.direct_upload_ttl) {
            return Err(invalid(
                "DIRECT_UPLOAD_TTL",
                "must be 1 to 604800 seconds (S3's limit for presigned URLs is 7 days)",
            ));
        }
        if self.direct_upload_part_size < 5 * 1024 * 1024 {
            return Err(invalid(
                "DIRECT_UPLOAD_PART_SIZE",
                "must be at least 5 MiB (5242880 bytes), S3's smallest part",
            ));
        }
        if self.download_range_size < plugs_storage::MIN_READ_AHEAD_RANGE {
            return Err(invalid(
                "DOWNLOAD_RANGE_SIZE",
                "must be at least 1 MiB (1048576 bytes)",
            ));
        }
        let per_download = (self.download_ranges_in_flight as u64)
            .saturating_add(1)
            .saturating_mul(self.download_range_size);
        if per_download > MAX_DOWNLOAD_MEMORY {
            return Err(invalid(
                "DOWNLOAD_RANGES_IN_FLIGHT",
                format!(
                    "one download would hold DOWNLOAD_RANGE_SIZE x (DOWNLOAD_RANGES_IN_FLIGHT + 1) \
                     = {per_download} bytes, more than 64 MiB"
                ),
            ));
        }
        if self.download_memory_budget < self.download_range_size {
            return Err(invalid(
                "DOWNLOAD_MEMORY_BUDGET",
                "must hold at least one range (DOWNLOAD_RANGE_SIZE)",
            ));
        }
        if self.upload_memory_budget < UPLOAD_PART_SIZE {
            return Err(invalid(
                "UPLOAD_MEMORY_BUDGET",
                format!("must hold at least one upload part ({UPLOAD_PART_SIZE} bytes)"),
            ));
        }

        let jwt = match (self.jwt_jwks_url, self.jwt_public_key_pem, self.jwt_secret) {
            (Some(url), None, None) => {
                check_url("JWT_JWKS_URL", &url)?;
                JwtSettings::Jwks(url)
            }
            (Some(_), _, _) => {
                return Err(invalid(
                    "JWT_JWKS_URL",
                    "set only one of JWT_JWKS_URL, JWT_PUBLIC_KEY_PEM and JWT_SECRET",
                ));
            }
            (None, Some(path), _) => JwtSettings::PublicKeyFile(path),
            (None, None, Some(secret)) if secret.len() < 32 => {
                return Err(invalid("JWT_SECRET", "must be at least 32 bytes long"));
            }
            (None, None, Some(secret)) => JwtSettings::Secret(Secret::new(secret)),
            (None, None, None) => JwtSettings::Development,
        };
        if self.jwt_max_lifetime == 0 {
            return Err(invalid("JWT_MAX_LIFETIME", "must be at least 1 second"));
        }
        let nonempty = |setting: &'static str, value: Option<String>| match value {
            Some(text) if text.trim().is_empty() => Err(invalid(setting, "must not be blank")),
            other => Ok(other),
        };
        let jwt_policy = JwtPolicy {
            issuer: nonempty("JWT_ISSUER", self.jwt_issuer)?,
            audience: nonempty("JWT_AUDIENCE", self.jwt_audience)?,
            max_lifetime: Duration::from_secs(self.jwt_max_lifetime),
        };

        if self.presign_ttl == 0 || self.presign_ttl > 7 * 24 * 3600 {
            return Err(invalid(
                "PRESIGN_TTL",
                "must be 1 to 604800 seconds (S3's limit is 7 days)",
            ));
        }
        let cdn_base_url = match self.cdn_base_url {
            Some(url) => {
                check_url("CDN_BASE_URL", &url)?;
                Some(url.trim_end_matches('/').to_owned())
            }
            None => None,
        };
        let cdn_signing = cdn_signing(
            cdn_base_url.as_deref(),
            self.cdn_key_pair_id,
            self.cdn_private_key_pem,
            &self.cdn_hash_algorithm,
        )?;
        let public_base_url = match self.public_base_url {
            Some(url) => {
                check_url("PUBLIC_BASE_URL", &url)?;
                url.trim_end_matches('/').to_owned()
            }
            None => format!("http://{bind_addr}"),
        };
        let policy = match &self.allowed_types {
            Some(list) => plugs_domain::MediaPolicy::from_entries(list.split(','))
                .map_err(|error| invalid("ALLOWED_TYPES", error.to_string()))?,
            None => plugs_domain::MediaPolicy::default(),
        }
        .with_max_size_bytes(self.max_file_size);
        let encryption = match (
            self.s3_sse.to_ascii_lowercase().as_str(),
            self.s3_sse_kms_key_id,
        ) {
            ("aes256", None) => plugs_storage::ServerSideEncryption::Aes256,
            ("none", None) => plugs_storage::ServerSideEncryption::None,
            ("aws:kms", key_id) => plugs_storage::ServerSideEncryption::Kms { key_id },
            ("aes256" | "none", Some(_)) => {
                return Err(invalid(
                    "S3_SSE_KMS_KEY_ID",
                    "only applies with S3_SSE=aws:kms",
                ));
            }
            _ => return Err(invalid("S3_SSE", "expected AES256, aws:kms or none")),
        };
        let payload_signing = match self.s3_payload_signing.to_ascii_lowercase().as_str() {
            "auto" => plugs_storage::PayloadSigning::Auto,
            "signed" => plugs_storage::PayloadSigning::Signed,
            "unsigned" => plugs_storage::PayloadSigning::Unsigned,
            _ => {
                return Err(invalid(
                    "S3_PAYLOAD_SIGNING",
                    "expected auto, signed or unsigned",
                ));
            }
        };
        let mut processing = processing_config(
            &self.thumbnail_widths,
            self.display_long_edge,
            &self.derived_format,
            self.derived_quality,
            self.processing_max_pixels,
            self.processing_max_attempts,
            self.processing_job_lease,
            self.processing_job_timeout,
        )?;
        if self.processing_child_memory < MIN_CHILD_MEMORY {
            return Err(invalid(
                "PROCESSING_CHILD_MEMORY",
                format!("expected at least {MIN_CHILD_MEMORY} bytes"),
            ));
        }
        if self.processing_child_cpu_seconds == 0 {
            return Err(invalid(
                "PROCESSING_CHILD_CPU_SECONDS",
                "expected at least 1 second",
            ));
        }
        if self.processing_max_video_size == 0 {
            return Err(invalid(
                "PROCESSING_MAX_VIDEO_SIZE",
                "expected at least 1 byte",
            ));
        }
        processing.child_address_space = self.processing_child_memory;
        processing.child_cpu_seconds = self.processing_child_cpu_seconds;
        processing.max_video_bytes = self.processing_max_video_size;
        let log_format = match self.log_format.to_ascii_lowercase().as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            _ => return Err(invalid("LOG_FORMAT", "expected text or json")),
        };

        Ok(Settings {
            bind_addr,
            metrics_bind_addr,
            data_dir: self.data_dir,
            database_url,
            storage,
            max_file_size: self.max_file_size,
            jwt,
            jwt_policy,
            presign_ttl: Duration::from_secs(self.presign_ttl),
            cdn_base_url,
            cdn_signing,
            public_base_url,
            gc_interval: (self.gc_interval > 0).then(|| Duration::from_secs(self.gc_interval)),
            gc_grace: Duration::from_secs(self.gc_grace),
            upload_idle_timeout: Duration::from_secs(self.upload_idle_timeout),
            upload_min_rate: self.upload_min_rate,
            // A silent upload is cut at its idle timeout, so by default it never outlives its
            // lease first.
            cors_allowed_origins,
            direct_upload_ttl: Duration::from_secs(self.direct_upload_ttl),
            quota: plugs_domain::Quota {
                event_bytes: self.quota_event_bytes,
                event_media: self.quota_event_media,
                owner_bytes: self.quota_owner_bytes,
                owner_media: self.quota_owner_media,
            },
            direct_upload_multipart_threshold: self.direct_upload_multipart_threshold,
            direct_upload_part_size: self.direct_upload_part_size,
            direct_upload_async_complete_above: self.direct_upload_async_complete_above,
            download_range_size: self.download_range_size,
            download_ranges_in_flight: self.download_ranges_in_flight,
            download_memory_budget: self.download_memory_budget,
            upload_memory_budget: self.upload_memory_budget,
            upload_lease: self.upload_lease.map_or(
                Duration::from_secs((self.upload_idle_timeout.saturating_mul(2)).max(60)),
                Duration::from_secs,
            ),
            policy,
            encryption,
            payload_signing,
            log_format,
            strip_location: self.strip_location,
            processing_workers: self.processing_workers,
            processing,
            external_tools: plugs_media::ExternalTools::default(),
        })
    }
}

/// The smallest `PROCESSING_CHILD_MEMORY`: 16 MiB. `ffmpeg` alone needs several hundred MiB of
/// address space to load its libraries, `heif-convert` tens.
const MIN_CHILD_MEMORY: u64 = 16 << 20;

/// The derived versions' settings: `THUMBNAIL_WIDTHS` (comma-separated pixels, each 16 to
/// 8192, at most 8), `DISPLAY_LONG_EDGE` (16 to 16384), `DERIVED_FORMAT` (`jpeg` or `webp`,
/// which is lossless), `DERIVED_QUALITY` (1 to 100), `PROCESSING_MAX_PIXELS`,
/// `PROCESSING_MAX_ATTEMPTS` (at least 1), `PROCESSING_JOB_LEASE` and `PROCESSING_JOB_TIMEOUT`
/// (seconds, at least 1).
#[allow(
    clippy::too_many_arguments,
    reason = "one per setting, named at the call"
)]
fn processing_config(
    widths: &str,
    display_long_edge: u32,
    format: &str,
    quality: u8,
    max_pixels: u64,
    max_attempts: u32,
    lease: u64,
    timeout: u64,
) -> Result<plugs_media::ProcessingConfig, ConfigError> {
    let mut thumbnail_widths = Vec::new();
    for part in widths
        .split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
    {
        let width: u32 = part
            .parse()
            .ok()
            .filter(|width| (16..=8192).contains(width))
            .ok_or_else(|| {
                invalid(
                    "THUMBNAIL_WIDTHS",
                    "expected comma-separated widths in pixels, each 16 to 8192, like 256,1024",
                )
            })?;
        if !thumbnail_widths.contains(&width) {
            thumbnail_widths.push(width);
        }
    }
    if thumbnail_widths.len() > 8 {
        return Err(invalid("THUMBNAIL_WIDTHS", "at most 8 widths"));
    }
    if !(16..=16_384).contains(&display_long_edge) {
        return Err(invalid("DISPLAY_LONG_EDGE", "expected 16 to 16384 pixels"));
    }
    let format = match format.to_ascii_lowercase().as_str() {
        "jpeg" | "jpg" => plugs_media::DerivedFormat::Jpeg,
        "webp" => plugs_media::DerivedFormat::Webp,
        _ => return Err(invalid("DERIVED_FORMAT", "expected jpeg or webp")),
    };
    if !(1..=100).contains(&quality) {
        return Err(invalid("DERIVED_QUALITY", "expected 1 to 100"));
    }
    if max_pixels == 0 {
        return Err(invalid("PROCESSING_MAX_PIXELS", "expected at least 1"));
    }
    if max_attempts == 0 {
        return Err(invalid("PROCESSING_MAX_ATTEMPTS", "expected at least 1"));
    }
    if lease == 0 {
        return Err(invalid(
            "PROCESSING_JOB_LEASE",
            "expected at least 1 second",
        ));
    }
    if timeout == 0 {
        return Err(invalid(
            "PROCESSING_JOB_TIMEOUT",
            "expected at least 1 second",
        ));
    }
    Ok(plugs_media::ProcessingConfig {
        thumbnail_widths,
        display_long_edge,
        format,
        quality,
        max_pixels,
        max_attempts,
        job_lease: Duration::from_secs(lease),
        job_timeout: Duration::from_secs(timeout),
        ..plugs_media::ProcessingConfig::default()
    })
}

/// `CDN_KEY_PAIR_ID` and `CDN_PRIVATE_KEY_PEM` (both or neither, and only with `CDN_BASE_URL`),
/// `CDN_HASH_ALGORITHM`. The key file itself is read when the server starts.
fn cdn_signing(
    base_url: Option<&str>,
    key_pair_id: Option<String>,
    private_key_pem: Option<PathBuf>,
    hash: &str,
) -> Result<Option<CdnSigning>, ConfigError> {
    let hash = match hash.to_ascii_uppercase().as_str() {
        "SHA256" | "SHA-256" => crate::cdn::HashAlgorithm::Sha256,
        "SHA1" | "SHA-1" => crate::cdn::HashAlgorithm::Sha1,
        _ => return Err(invalid("CDN_HASH_ALGORITHM", "expected SHA256 or SHA1")),
    };
    let (key_pair_id, private_key_pem) = match (key_pair_id, private_key_pem) {
        (None, None) => return Ok(None),
        (Some(id), Some(pem)) => (id.trim().to_owned(), pem),
        (Some(_), None) => {
            return Err(invalid(
                "CDN_PRIVATE_KEY_PEM",
                "must be set with CDN_KEY_PAIR_ID (the PEM file of the key pair's private key)",
            ));
        }
        (None, Some(_)) => {
            return Err(invalid(
                "CDN_KEY_PAIR_ID",
                "must be set with CDN_PRIVATE_KEY_PEM (the CloudFront public key's id)",
            ));
        }
    };
    if key_pair_id.is_empty() || !key_pair_id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(invalid(
            "CDN_KEY_PAIR_ID",
            "expected the CloudFront public key's id, letters and digits like K2JCJMDEHXQW5F",
        ));
    }
    if base_url.is_none() {
        return Err(invalid(
            "CDN_BASE_URL",
            "must be set when CDN_KEY_PAIR_ID is (the distribution's URL that signed URLs point at)",
        ));
    }
    Ok(Some(CdnSigning {
        key_pair_id,
        private_key_pem,
        hash,
    }))
}

/// `CORS_ALLOWED_ORIGINS`: comma-separated origins, each a scheme and host (and port) with no
/// path, as browsers send them in `Origin`.
fn parse_origins(value: Option<&str>) -> Result<Vec<String>, ConfigError> {
    let Some(value) = value else {
        return Ok(Vec::new());
    };
    value
        .split(',')
        .map(str::trim)
        .filter(|origin| !origin.is_empty())
        .map(|origin| {
            let url = url::Url::parse(origin).map_err(|_| {
                invalid(
                    "CORS_ALLOWED_ORIGINS",
                    format!("{origin:?} is not an origin"),
                )
            })?;
            let bare = url.origin().ascii_serialization();
            if !matches!(url.scheme(), "http" | "https") || bare != origin.trim_end_matches('/') {
                return Err(invalid(
                    "CORS_ALLOWED_ORIGINS",
                    format!("{origin:?} must be scheme://host[:port], without a path"),
                ));
            }
            Ok(bare)
        })
        .collect()
}

fn check_url(setting: &'static str, value: &str) -> Result<(), ConfigError> {
    match url::Url::parse(value) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => Ok(()),
        _ => Err(invalid(setting, "expected an http:// or https:// URL")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn load(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        Settings::load_from(None, &env(pairs), &FlagOverrides::default())
    }

    #[test]
    fn download_read_ahead_is_bounded_per_download_and_server_wide() {
        let settings = load(&[]).unwrap();
        assert_eq!(
            (
                settings.download_range_size,
                settings.download_ranges_in_flight,
                settings.download_memory_budget
            ),
            (8 << 20, 7, 64 << 20)
        );
        let settings = load(&[
            ("DOWNLOAD_RANGE_SIZE", "16777216"),
            ("DOWNLOAD_RANGES_IN_FLIGHT", "3"),
            ("DOWNLOAD_MEMORY_BUDGET", "67108864"),
        ])
        .unwrap();
        assert_eq!(settings.download_range_size * 4, MAX_DOWNLOAD_MEMORY);
        let refused = |pairs: &[(&str, &str)]| load(pairs).unwrap_err().to_string();
        assert!(
            refused(&[("DOWNLOAD_RANGES_IN_FLIGHT", "8")]).contains("DOWNLOAD_RANGES_IN_FLIGHT")
        );
        assert!(refused(&[("DOWNLOAD_RANGE_SIZE", "65536")]).contains("DOWNLOAD_RANGE_SIZE"));
        assert!(
            refused(&[("DOWNLOAD_MEMORY_BUDGET", "1048576")]).contains("DOWNLOAD_MEMORY_BUDGET")
        );
        assert_eq!(
            load(&[("DOWNLOAD_RANGES_IN_FLIGHT", "0")])
                .unwrap()
                .download_ranges_in_flight,
            0,
            "0 turns read-ahead off"
        );
    }

    #[test]
    fn the_upload_budget_holds_at_least_one_part() {
        assert_eq!(
            load(&[]).unwrap().upload_memory_budget,
            DEFAULT_UPLOAD_MEMORY_BUDGET
        );
        assert_eq!(
            load(&[("UPLOAD_MEMORY_BUDGET", "8388608")])
                .unwrap()
                .upload_memory_budget,
            UPLOAD_PART_SIZE
        );
        assert_eq!(
            plugs_storage::S3Config::new("bucket", "us-east-1").part_size as u64,
            UPLOAD_PART_SIZE,
            "the store's part size"
        );
        let refused = load(&[("UPLOAD_MEMORY_BUDGET", "8388607")])
            .unwrap_err()
            .to_string();
        assert!(refused.contains("UPLOAD_MEMORY_BUDGET"), "{refused}");
    }

    #[test]
    fn nothing_configured_means_the_embedded_default() {
        let settings = load(&[]).unwrap();
        assert_eq!(settings.bind_addr.to_string(), "127.0.0.1:8000");
        assert_eq!(settings.database_url.expose(), "sqlite://./data/plugs.db");
        assert_eq!(
            settings.storage,
            StorageSettings::Local {
                root: PathBuf::from("./data/objects")
            }
        );
        assert_eq!(settings.jwt, JwtSettings::Development);
        assert_eq!(settings.jwt_policy, JwtPolicy::default());
        assert_eq!(
            settings.jwt_policy.max_lifetime,
            Duration::from_secs(86_400)
        );
        assert_eq!(settings.metrics_bind_addr, None);
        assert_eq!(settings.max_file_size, 10_485_760);
        assert_eq!(settings.presign_ttl, Duration::from_secs(900));
        assert_eq!(settings.public_base_url, "http://127.0.0.1:8000");
        assert_eq!(settings.gc_interval, None);
        assert_eq!(settings.gc_grace, Duration::from_secs(3600));
        assert_eq!(settings.log_format, LogFormat::Text);
    }

    #[test]
    fn the_legacy_s3_names_select_the_s3_store() {
        let settings = load(&[
            ("S3_BUCKET_NAME", "media"),
            ("S3_REGION", "eu-west-1"),
            ("S3_ENDPOINT_URL", "http://127.0.0.1:9000"),
            ("AWS_ACCESS_KEY_ID", "AKIA"),
            ("AWS_SECRET_ACCESS_KEY", "shh-secret"),
            ("MAX_FILE_SIZE", "1024"),
        ])
        .unwrap();
        let StorageSettings::S3 {
            bucket,
            region,
            force_path_style,
            credentials,
            ..
        } = &settings.storage
        else {
            panic!("expected S3, got {:?}", settings.storage);
        };
        assert_eq!(
            (bucket.as_str(), region.as_str(), *force_path_style),
            ("media", "eu-west-1", true)
        );
        assert!(matches!(credentials, S3Credentials::Static { .. }));
        assert_eq!(settings.max_file_size, 1024);
        assert!(!format!("{settings:?}").contains("shh-secret"));

        let iam = load(&[
            ("S3_BUCKET_NAME", "media"),
            ("S3_USE_IAM_ROLE", "true"),
            ("AWS_ACCESS_KEY_ID", "x"),
        ])
        .unwrap();
        assert!(matches!(
            iam.storage,
            StorageSettings::S3 {
                credentials: S3Credentials::DefaultChain,
                ..
            }
        ));
    }

    #[test]
    fn encryption_and_allowed_types_are_configurable() {
        let settings = load(&[]).unwrap();
        assert_eq!(
            settings.encryption,
            plugs_storage::ServerSideEncryption::Aes256
        );
        assert!(settings.policy.allows(plugs_domain::AllowedType::Mp4));

        let settings = load(&[
            ("S3_SSE", "aws:kms"),
            ("S3_SSE_KMS_KEY_ID", "alias/media"),
            ("ALLOWED_TYPES", "image, application/pdf"),
            ("MAX_FILE_SIZE", "2048"),
        ])
        .unwrap();
        assert_eq!(
            settings.encryption,
            plugs_storage::ServerSideEncryption::Kms {
                key_id: Some("alias/media".to_owned())
            }
        );
        assert!(settings.policy.allows(plugs_domain::AllowedType::Png));
        assert!(settings.policy.allows(plugs_domain::AllowedType::Pdf));
        assert!(!settings.policy.allows(plugs_domain::AllowedType::Mp4));
        assert_eq!(settings.policy.max_size_bytes, 2048);

        let err = load(&[("S3_SSE", "rot13")]).unwrap_err().to_string();
        assert!(err.contains("S3_SSE"), "{err}");
        let err = load(&[("S3_PAYLOAD_SIGNING", "sometimes")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("S3_PAYLOAD_SIGNING"), "{err}");
        assert_eq!(
            load(&[]).unwrap().payload_signing,
            plugs_storage::PayloadSigning::Auto
        );
        assert_eq!(
            load(&[("S3_PAYLOAD_SIGNING", "Unsigned")])
                .unwrap()
                .payload_signing,
            plugs_storage::PayloadSigning::Unsigned
        );
        let err = load(&[("S3_SSE_KMS_KEY_ID", "k")]).unwrap_err().to_string();
        assert!(err.contains("S3_SSE_KMS_KEY_ID"), "{err}");
        let err = load(&[("ALLOWED_TYPES", "image, text/html")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("ALLOWED_TYPES") && err.contains("text/html"),
            "{err}"
        );
    }

    #[test]
    fn errors_name_the_setting_and_never_the_secret() {
        let secret = "short-but-secret";
        let err = load(&[("JWT_SECRET", secret)]).unwrap_err().to_string();
        assert!(err.contains("JWT_SECRET"), "{err}");
        assert!(!err.contains(secret), "{err}");

        let err = load(&[("MAX_FILE_SIZE", "ten")]).unwrap_err().to_string();
        assert!(err.contains("max_file_size"), "{err}");
        let err = load(&[("BIND_ADDR", "nowhere")]).unwrap_err().to_string();
        assert!(err.contains("BIND_ADDR"), "{err}");
        let err = load(&[("DATABASE_URL", "mysql://root:hunter2@db/x")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("DATABASE_URL") && !err.contains("hunter2"),
            "{err}"
        );
        let err = load(&[("S3_BUCKET_NAME", "b"), ("AWS_ACCESS_KEY_ID", "id")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("AWS_SECRET_ACCESS_KEY"), "{err}");
        let err = load(&[("LOG_FORMAT", "xml")]).unwrap_err().to_string();
        assert!(err.contains("LOG_FORMAT"), "{err}");
        let err = load(&[("PRESIGN_TTL", "0")]).unwrap_err().to_string();
        assert!(err.contains("PRESIGN_TTL"), "{err}");

        let settings =
            load(&[("JWT_SECRET", "0123456789abcdef0123456789abcdef-very-secret")]).unwrap();
        assert!(!format!("{settings:?}").contains("very-secret"));
    }

    #[test]
    fn token_and_metrics_settings_are_validated() {
        let settings = load(&[
            (
                "JWT_JWKS_URL",
                "https://id.example.com/.well-known/jwks.json",
            ),
            ("JWT_ISSUER", "https://id.example.com/"),
            ("JWT_AUDIENCE", "plugs-media"),
            ("JWT_MAX_LIFETIME", "3600"),
            ("METRICS_BIND_ADDR", "127.0.0.1:9100"),
        ])
        .unwrap();
        assert_eq!(
            settings.jwt,
            JwtSettings::Jwks("https://id.example.com/.well-known/jwks.json".to_owned())
        );
        assert_eq!(
            settings.jwt_policy,
            JwtPolicy {
                issuer: Some("https://id.example.com/".to_owned()),
                audience: Some("plugs-media".to_owned()),
                max_lifetime: Duration::from_secs(3600),
            }
        );
        assert_eq!(
            settings.metrics_bind_addr.map(|a| a.to_string()).as_deref(),
            Some("127.0.0.1:9100")
        );

        for (pairs, setting) in [
            (&[("JWT_JWKS_URL", "ftp://keys")][..], "JWT_JWKS_URL"),
            (
                &[
                    ("JWT_JWKS_URL", "https://id.example.com/jwks"),
                    ("JWT_SECRET", "0123456789abcdef0123456789abcdef"),
                ][..],
                "JWT_JWKS_URL",
            ),
            (&[("JWT_MAX_LIFETIME", "0")][..], "JWT_MAX_LIFETIME"),
            (&[("JWT_AUDIENCE", "  ")][..], "JWT_AUDIENCE"),
            (&[("METRICS_BIND_ADDR", "metrics")][..], "METRICS_BIND_ADDR"),
            (
                &[
                    ("BIND_ADDR", "127.0.0.1:8000"),
                    ("METRICS_BIND_ADDR", "127.0.0.1:8000"),
                ][..],
                "METRICS_BIND_ADDR",
            ),
        ] {
            let err = load(pairs).unwrap_err().to_string();
            assert!(err.contains(setting), "{pairs:?}: {err}");
        }
    }

    #[test]
    fn cloudfront_signing_settings_are_validated() {
        assert_eq!(load(&[]).unwrap().cdn_signing, None);
        let settings = load(&[
            ("CDN_BASE_URL", "https://d111111abcdef8.cloudfront.net/"),
            ("CDN_KEY_PAIR_ID", "K2JCJMDEHXQW5F"),
            ("CDN_PRIVATE_KEY_PEM", "/etc/plugs/cloudfront.pem"),
        ])
        .unwrap();
        assert_eq!(
            settings.cdn_signing,
            Some(CdnSigning {
                key_pair_id: "K2JCJMDEHXQW5F".to_owned(),
                private_key_pem: PathBuf::from("/etc/plugs/cloudfront.pem"),
                hash: crate::cdn::HashAlgorithm::Sha256,
            })
        );
        let sha1 = load(&[
            ("CDN_BASE_URL", "https://cdn.example.com"),
            ("CDN_KEY_PAIR_ID", "K2JCJMDEHXQW5F"),
            ("CDN_PRIVATE_KEY_PEM", "/k.pem"),
            ("CDN_HASH_ALGORITHM", "sha1"),
        ])
        .unwrap();
        assert_eq!(
            sha1.cdn_signing.map(|s| s.hash),
            Some(crate::cdn::HashAlgorithm::Sha1)
        );
        for (pairs, setting) in [
            (
                &[("CDN_KEY_PAIR_ID", "K2JCJMDEHXQW5F")][..],
                "CDN_PRIVATE_KEY_PEM",
            ),
            (&[("CDN_PRIVATE_KEY_PEM", "/k.pem")][..], "CDN_KEY_PAIR_ID"),
            (
                &[
                    ("CDN_KEY_PAIR_ID", "K2JCJMDEHXQW5F"),
                    ("CDN_PRIVATE_KEY_PEM", "/k.pem"),
                ][..],
                "CDN_BASE_URL",
            ),
            (
                &[
                    ("CDN_BASE_URL", "https://cdn.example.com"),
                    ("CDN_KEY_PAIR_ID", "K2&x=1"),
                    ("CDN_PRIVATE_KEY_PEM", "/k.pem"),
                ][..],
                "CDN_KEY_PAIR_ID",
            ),
            (&[("CDN_HASH_ALGORITHM", "MD5")][..], "CDN_HASH_ALGORITHM"),
        ] {
            let err = load(pairs).unwrap_err().to_string();
            assert!(err.contains(setting), "{pairs:?}: {err}");
        }
    }

    #[test]
    fn layers_apply_in_order_file_then_env_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plugs.toml");
        std::fs::write(&file, "bind_addr = \"127.0.0.1:7000\"\ndata_dir = \"/srv/plugs\"\nmax_file_size = 5\nlog_format = \"json\"\n")
            .unwrap();
        let from_file =
            Settings::load_from(Some(&file), &env(&[]), &FlagOverrides::default()).unwrap();
        assert_eq!(from_file.bind_addr.to_string(), "127.0.0.1:7000");
        assert_eq!(from_file.max_file_size, 5);
        assert_eq!(
            from_file.database_url.expose(),
            "sqlite:///srv/plugs/plugs.db"
        );

        let environment = env(&[
            ("BIND_ADDR", "127.0.0.1:7001"),
            ("MAX_FILE_SIZE", ""),
            ("PATH", "/bin"),
        ]);
        let from_env =
            Settings::load_from(Some(&file), &environment, &FlagOverrides::default()).unwrap();
        assert_eq!(from_env.bind_addr.to_string(), "127.0.0.1:7001");
        assert_eq!(
            from_env.max_file_size, 5,
            "an empty variable counts as unset"
        );

        let flags = FlagOverrides {
            bind_addr: Some("127.0.0.1:7002".into()),
            log_format: Some("text".into()),
            ..Default::default()
        };
        let from_flags = Settings::load_from(Some(&file), &environment, &flags).unwrap();
        assert_eq!(from_flags.bind_addr.to_string(), "127.0.0.1:7002");
        assert_eq!(from_flags.log_format, LogFormat::Text);

        std::fs::write(&file, "bind_adr = \"127.0.0.1:7000\"\n").unwrap();
        let err = Settings::load_from(Some(&file), &env(&[]), &FlagOverrides::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("bind_adr"),
            "a typo in the file is reported: {err}"
        );
    }
}
