//! `plugs-api check`: the deployment's "test the S3 integration" step as one command against the
//! configured store and database. Each line passes, warns or fails with the fix to try; the exit
//! status says whether none failed.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use http_body_util::{BodyExt as _, Empty};
use plugs_storage::{
    ObjectKey, ObjectStore, ObjectStoreExt as _, PresignMethod, PresignOptions, S3Store,
    ServerSideEncryption, StoreError,
};

use crate::config::{S3Credentials, Settings, StorageSettings};
use crate::state::{self, Migrations};

/// S3 refuses requests signed more than 15 minutes away from its clock
/// (`RequestTimeTooSkewed`).
const S3_MAX_SKEW: Duration = Duration::from_secs(15 * 60);
/// A skew this large still works, but eats into presigned URLs' lifetimes and log correlation.
const SKEW_WARNING: Duration = Duration::from_secs(60);
/// The probe's bytes: recognisable in a listing if a failed run leaves it behind.
const PROBE_BODY: &[u8] = b"plugs-api check probe: safe to delete\n";

/// How one line ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Works.
    Pass,
    /// Works, but something deserves a look (or the server cannot tell).
    Warn,
    /// Does not work.
    Fail,
    /// Does not apply to this configuration.
    Skip,
}

/// One line of the report.
#[derive(Debug, Clone)]
pub struct CheckLine {
    /// What was checked.
    pub name: &'static str,
    /// How it ended.
    pub outcome: Outcome,
    /// What was found.
    pub detail: String,
    /// What to try when it did not pass.
    pub fix: Option<String>,
}

impl CheckLine {
    fn pass(name: &'static str, detail: impl Into<String>) -> Self {
        Self {
            name,
            outcome: Outcome::Pass,
            detail: detail.into(),
            fix: None,
        }
    }

    fn skip(name: &'static str, detail: impl Into<String>) -> Self {
        Self {
            name,
            outcome: Outcome::Skip,
            detail: detail.into(),
            fix: None,
        }
    }

    fn fail(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            name,
            outcome: Outcome::Fail,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    fn warn(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            name,
            outcome: Outcome::Warn,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}

/// Runs every check, printing each line as it ends; fails when any line failed.
pub async fn run(settings: &Settings) -> anyhow::Result<()> {
    let mut lines = Vec::new();
    check_database(settings, &mut lines).await;
    match &settings.storage {
        StorageSettings::Local { root } => check_local(settings, root, &mut lines).await,
        StorageSettings::S3 { .. } => check_s3(settings, &mut lines).await,
    }
    let failed = lines.iter().filter(|l| l.outcome == Outcome::Fail).count();
    print_summary(lines.len(), failed);
    if failed > 0 {
        anyhow::bail!("{failed} of {} checks failed", lines.len());
    }
    Ok(())
}

fn record(lines: &mut Vec<CheckLine>, line: CheckLine) {
    print_line(&line);
    lines.push(line);
}

#[allow(clippy::print_stdout, reason = "the report is this command's output")]
fn print_line(line: &CheckLine) {
    let mark = match line.outcome {
        Outcome::Pass => " ok ",
        Outcome::Warn => "warn",
        Outcome::Fail => "FAIL",
        Outcome::Skip => "skip",
    };
    println!("[{mark}] {}: {}", line.name, line.detail);
    if let Some(fix) = &line.fix {
        println!("       fix: {fix}");
    }
}

#[allow(clippy::print_stdout, reason = "the report is this command's output")]
fn print_summary(total: usize, failed: usize) {
    if failed == 0 {
        println!("check: all {total} checks passed");
    } else {
        println!("check: {failed} of {total} checks failed");
    }
}

/// An error and its causes on one line (the SDK's top-level messages alone say little).
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

async fn check_database(settings: &Settings, lines: &mut Vec<CheckLine>) {
    let database = match state::connect_database(settings, Migrations::Skip).await {
        Ok(database) => database,
        Err(error) => {
            record(
                lines,
                CheckLine::fail(
                    "database",
                    format!("cannot connect: {}", chain(error.as_ref())),
                    "check DATABASE_URL (host, port, user, database name) and that the server accepts connections from here",
                ),
            );
            return;
        }
    };
    record(
        lines,
        CheckLine::pass("database", format!("connected ({:?})", database.backend())),
    );
    let line = match database.pending_migrations().await {
        Ok(pending) if pending.is_empty() => CheckLine::pass("migrations", "current"),
        Ok(pending) => CheckLine::fail(
            "migrations",
            format!("{} pending: {}", pending.len(), pending.join(", ")),
            "run `plugs-api migrate` (serve applies them too, at start)",
        ),
        Err(error) => CheckLine::fail(
            "migrations",
            format!("cannot read the applied migrations: {}", chain(&error)),
            "check that DATABASE_URL's user may read the __diesel_schema_migrations table",
        ),
    };
    record(lines, line);
}

/// A key no record claims and no upload produces, under the prefix the IAM policy grants.
fn probe_key() -> anyhow::Result<ObjectKey> {
    ObjectKey::parse(format!(
        "events/plugs-check/{}.txt",
        uuid::Uuid::new_v4().simple()
    ))
    .context("the probe key")
}

async fn check_local(settings: &Settings, root: &std::path::Path, lines: &mut Vec<CheckLine>) {
    record(
        lines,
        CheckLine::skip("credentials", "not needed: objects in a local directory"),
    );
    let store = match state::build_store(settings).await {
        Ok((store, _)) => store,
        Err(error) => {
            record(
                lines,
                CheckLine::fail(
                    "store",
                    format!("cannot open {}: {}", root.display(), chain(error.as_ref())),
                    "check that DATA_DIR exists and is writable by this user",
                ),
            );
            return;
        }
    };
    record(
        lines,
        CheckLine::pass("store", format!("local directory {}", root.display())),
    );
    let Ok(key) = probe_key() else { return };
    let write = async {
        store
            .put_bytes(&key, Bytes::from_static(PROBE_BODY), Default::default())
            .await?;
        let read = store.get_bytes(&key).await?;
        Ok::<_, StoreError>(read)
    };
    let line = match write.await {
        Ok(read) if read.as_ref() == PROBE_BODY => {
            CheckLine::pass("probe object", format!("wrote and read back {key}"))
        }
        Ok(_) => CheckLine::fail(
            "probe object",
            "read back different bytes",
            "check the disk under DATA_DIR",
        ),
        Err(error) => CheckLine::fail(
            "probe object",
            chain(&error),
            "check that DATA_DIR is writable and not full",
        ),
    };
    record(lines, line);
    record(
        lines,
        CheckLine::skip(
            "encryption",
            "not applicable: the local directory does not encrypt (use disk encryption)",
        ),
    );
    record(
        lines,
        CheckLine::skip(
            "presigned URL",
            "served by `plugs-api serve` itself (/api/v1/objects); /readyz covers it",
        ),
    );
    record(lines, delete_probe(store.as_ref(), &key).await);
    record(
        lines,
        CheckLine::skip("clock", "no remote clock to compare with"),
    );
}

async fn delete_probe(store: &dyn ObjectStore, key: &ObjectKey) -> CheckLine {
    let deleted = async {
        store.delete(key).await?;
        store.exists(key).await
    };
    match deleted.await {
        Ok(false) => CheckLine::pass("probe deleted", key.to_string()),
        Ok(true) => CheckLine::fail(
            "probe deleted",
            format!("{key} is still there after DeleteObject"),
            "the role needs s3:DeleteObject on events/*; delete the probe by hand",
        ),
        Err(error) => CheckLine::fail(
            "probe deleted",
            chain(&error),
            "the role needs s3:DeleteObject on events/*; delete the probe by hand",
        ),
    }
}

/// The S3 store as `serve` builds it (see `state::s3`), answering within a minute (also for
/// `bucket`).
pub(crate) async fn s3_store(settings: &Settings) -> anyhow::Result<S3Store> {
    let mut config = crate::state::s3::config(settings)?;
    // A check should answer within a minute, not wait out the server's retries.
    config.max_attempts = 1;
    config.operation_timeout = Some(Duration::from_secs(30));
    S3Store::new(config).await.context("S3 settings refused")
}

async fn check_s3(settings: &Settings, lines: &mut Vec<CheckLine>) {
    let StorageSettings::S3 {
        bucket,
        region,
        credentials,
        ..
    } = &settings.storage
    else {
        return;
    };
    let line = match credentials {
        S3Credentials::Static { .. } => CheckLine::pass(
            "credentials",
            "static keys from the settings (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)",
        ),
        S3Credentials::DefaultChain => match S3Store::default_chain_credentials(region).await {
            Ok(source) => {
                let expiry = source.expires_at.map_or_else(String::new, |at| {
                    format!(", expiring {}", DateTime::<Utc>::from(at).to_rfc3339())
                });
                CheckLine::pass("credentials", format!("{}{expiry}", source.description))
            }
            Err(error) => CheckLine::fail(
                "credentials",
                format!("none resolved: {}", chain(&error)),
                "attach an IAM role to the instance/task/pod, or set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
            ),
        },
    };
    let credentials_failed = line.outcome == Outcome::Fail;
    record(lines, line);
    if credentials_failed {
        return;
    }
    let store = match s3_store(settings).await {
        Ok(store) => Arc::new(store),
        Err(error) => {
            record(
                lines,
                CheckLine::fail(
                    "bucket",
                    chain(error.as_ref()),
                    "check S3_BUCKET_NAME, S3_REGION and S3_ENDPOINT_URL",
                ),
            );
            return;
        }
    };
    let line = match store.ping().await {
        Ok(()) => CheckLine::pass("bucket", format!("{bucket} exists and is reachable")),
        Err(error) => {
            let text = chain(&error);
            let fix = if text.contains("does not exist") {
                format!(
                    "create it (`aws s3api create-bucket --bucket {bucket}`, docs/S3.md), or correct S3_BUCKET_NAME and S3_REGION"
                )
            } else if matches!(
                error,
                StoreError::AccessDenied { .. } | StoreError::InvalidCredentials { .. }
            ) {
                "check the keys, and grant s3:ListBucket on the bucket to these credentials (docs/S3.md, IAM policy); check S3_REGION".to_owned()
            } else {
                "check S3_ENDPOINT_URL, S3_REGION and the network path to S3 (proxy, VPC endpoint, DNS)".to_owned()
            };
            CheckLine::fail("bucket", text, fix)
        }
    };
    let bucket_failed = line.outcome == Outcome::Fail;
    record(lines, line);
    if bucket_failed {
        return;
    }
    let Ok(key) = probe_key() else { return };
    let encryption = &settings.encryption;
    let reported = match store
        .put_probe(&key, Bytes::from_static(PROBE_BODY), encryption)
        .await
    {
        Ok(reported) => {
            record(
                lines,
                CheckLine::pass("probe object", format!("wrote {key}")),
            );
            reported
        }
        Err(error) => {
            record(
                lines,
                CheckLine::fail(
                    "probe object",
                    chain(&error),
                    "grant s3:PutObject on events/* (and kms:GenerateDataKey on the key with SSE-KMS)",
                ),
            );
            return;
        }
    };
    record(lines, encryption_line(encryption, &reported));
    let (fetch_line, server_date) = fetch_presigned(store.as_ref(), &key).await;
    record(lines, fetch_line);
    record(lines, delete_probe(store.as_ref(), &key).await);
    record(lines, clock_line(server_date, Utc::now()));
}

fn encryption_line(
    asked: &ServerSideEncryption,
    reported: &plugs_storage::ProbeEncryption,
) -> CheckLine {
    let expected = match asked {
        ServerSideEncryption::Kms { .. } => Some("aws:kms"),
        ServerSideEncryption::Aes256 => Some("AES256"),
        _ => None,
    };
    let kms = reported
        .kms_key_id
        .as_deref()
        .map_or_else(String::new, |key| format!(" (key {key})"));
    match (expected, reported.algorithm.as_deref()) {
        (Some(want), Some(got)) if want == got => {
            CheckLine::pass("encryption", format!("S3 reports {got}{kms}"))
        }
        (Some(want), Some(got)) => CheckLine::fail(
            "encryption",
            format!("asked for {want}, S3 reports {got}{kms}"),
            "check S3_SSE and S3_SSE_KMS_KEY_ID, and the bucket policy's encryption conditions",
        ),
        (Some(want), None) => CheckLine::warn(
            "encryption",
            format!("asked for {want}; the server reports no encryption"),
            "Amazon S3 always reports it; some S3-compatible servers never do: check the server's own encryption settings",
        ),
        (None, Some(got)) => CheckLine::pass(
            "encryption",
            format!("none asked (S3_SSE=none); the bucket's default applies: {got}{kms}"),
        ),
        (None, None) => CheckLine::warn(
            "encryption",
            "none asked (S3_SSE=none) and none reported",
            "set S3_SSE=aes256 or aws:kms, or give the bucket a default encryption (`plugs-api bucket init`)",
        ),
    }
}

/// Fetches the probe through a presigned GET URL with a plain HTTP client, no credentials.
/// Also returns the server's `Date`, for the clock line (present on errors too).
async fn fetch_presigned(
    store: &dyn ObjectStore,
    key: &ObjectKey,
) -> (CheckLine, Option<DateTime<Utc>>) {
    const NAME: &str = "presigned URL";
    let url = match store
        .presign(
            PresignMethod::Get,
            key,
            Duration::from_secs(300),
            &PresignOptions::default(),
        )
        .await
    {
        Ok(url) => url.url,
        Err(error) => {
            return (
                CheckLine::fail(NAME, chain(&error), "check the S3 settings"),
                None,
            );
        }
    };
    let response = match http_get(&url).await {
        Ok(response) => response,
        Err(error) => {
            return (
                CheckLine::fail(
                    NAME,
                    format!("fetching it failed: {}", chain(error.as_ref())),
                    "clients must reach the S3 endpoint (S3_ENDPOINT_URL) from where they run",
                ),
                None,
            );
        }
    };
    let (status, date, body) = response;
    let line = if status == 200 && body.as_ref() == PROBE_BODY {
        CheckLine::pass(NAME, "fetched the probe without credentials")
    } else if status == 200 {
        CheckLine::fail(
            NAME,
            "answered 200 with other bytes",
            "a proxy or CDN in front of S3 rewrites answers",
        )
    } else {
        CheckLine::fail(
            NAME,
            format!("answered {status}"),
            "403: the signing credentials lack s3:GetObject, or the clock is off (see below); 404: S3_ENDPOINT_URL or path style (S3_FORCE_PATH_STYLE) differ from what clients reach",
        )
    };
    (line, date)
}

type Fetched = (u16, Option<DateTime<Utc>>, Bytes);

async fn http_get(url: &str) -> anyhow::Result<Fetched> {
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    let uri: hyper::Uri = url.parse().context("the presigned URL does not parse")?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_native_roots(provider)
        .context("no system CA certificates")?
        .https_or_http()
        .enable_http1()
        .build();
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let request = hyper::Request::get(uri)
        .body(Empty::<Bytes>::new())
        .context("building the request")?;
    let response = tokio::time::timeout(Duration::from_secs(30), client.request(request))
        .await
        .context("no answer within 30 s")??;
    let status = response.status().as_u16();
    let date = response
        .headers()
        .get(hyper::header::DATE)
        .and_then(|value| value.to_str().ok())
        .and_then(|text| DateTime::parse_from_rfc2822(text).ok())
        .map(|date| date.with_timezone(&Utc));
    let body = response
        .into_body()
        .collect()
        .await
        .context("reading the answer")?
        .to_bytes();
    Ok((status, date, body))
}

/// Compares the server's `Date` (whole seconds) with ours.
fn clock_line(server: Option<DateTime<Utc>>, now: DateTime<Utc>) -> CheckLine {
    const NAME: &str = "clock";
    let Some(server) = server else {
        return CheckLine::warn(
            NAME,
            "the server sent no Date header to compare with",
            "compare this host's clock with an NTP source by hand",
        );
    };
    let skew = (now - server).abs().to_std().unwrap_or(Duration::MAX);
    let ahead = if now > server { "ahead of" } else { "behind" };
    // The header has whole seconds: anything within 2 s is equal as far as it can tell.
    let detail = format!("{}s {ahead} the server's", skew.as_secs());
    if skew > S3_MAX_SKEW {
        CheckLine::fail(
            NAME,
            detail,
            "S3 refuses requests more than 15 minutes off (RequestTimeTooSkewed): sync this host's clock (chrony, systemd-timesyncd)",
        )
    } else if skew > SKEW_WARNING {
        CheckLine::warn(
            NAME,
            detail,
            "sync this host's clock (chrony, systemd-timesyncd) before it drifts past S3's 15 minutes",
        )
    } else {
        CheckLine::pass(NAME, format!("{detail} (S3 allows 15 min)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_skew_is_judged_against_s3s_limit() {
        let now = Utc::now();
        let line = clock_line(Some(now - chrono::Duration::seconds(2)), now);
        assert_eq!(line.outcome, Outcome::Pass, "{line:?}");
        let line = clock_line(Some(now - chrono::Duration::minutes(5)), now);
        assert_eq!(line.outcome, Outcome::Warn, "{line:?}");
        let line = clock_line(Some(now + chrono::Duration::minutes(16)), now);
        assert_eq!(line.outcome, Outcome::Fail, "{line:?}");
        assert!(line.detail.contains("behind"), "{line:?}");
        assert!(line.fix.unwrap().contains("RequestTimeTooSkewed"));
        assert_eq!(clock_line(None, now).outcome, Outcome::Warn);
    }

    #[test]
    fn http_dates_parse_as_rfc2822() {
        let date = DateTime::parse_from_rfc2822("Tue, 15 Nov 1994 08:12:31 GMT").unwrap();
        assert_eq!(date.timestamp(), 784_887_151);
    }
}
