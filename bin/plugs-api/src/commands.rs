//! What each subcommand does.

use std::time::Duration;

use actix_web::HttpServer;
use anyhow::Context as _;
use plugs_domain::UserId;
use plugs_media::{MediaService, ReconcileOptions, ReconcileReport};

use crate::auth::JwtKeys;
use crate::cli::Command;
use crate::config::{LogFormat, Settings};
use crate::metrics::Metrics;
use crate::state::{self, Migrations};

/// How long in-flight requests may run after SIGTERM/SIGINT before workers stop.
const SHUTDOWN_TIMEOUT_SECS: u64 = 30;

/// Runs `command` (`serve` when `None`).
pub async fn run(command: Option<Command>, settings: Settings) -> anyhow::Result<()> {
    match command.unwrap_or(Command::Serve) {
        Command::Serve => serve(settings).await,
        Command::Migrate => {
            state::connect_database(&settings, Migrations::Apply).await?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::Token { user, ttl } => token(&settings, &user, ttl),
        Command::Gc { apply, grace } => gc(&settings, apply, grace).await,
    }
}

/// Starts tracing on stderr (stdout stays clean for `token`), filtered by `RUST_LOG`.
pub fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let state = state::build(&settings).await?;
    if let Some(interval) = settings.gc_interval {
        let service = state.service.clone();
        let metrics = state.metrics.clone();
        let sweep = match &settings.storage {
            crate::config::StorageSettings::Local { root } => {
                Some((root.clone(), settings.gc_grace))
            }
            crate::config::StorageSettings::S3 { .. } => None,
        };
        actix_web::rt::spawn(reconcile_periodically(service, metrics, interval, sweep));
    }
    let workers = std::thread::available_parallelism().map_or(1, usize::from);
    tracing::info!(addr = %settings.bind_addr, workers, "listening");
    HttpServer::new(move || crate::build_app(state.clone()))
        .workers(workers)
        .shutdown_timeout(SHUTDOWN_TIMEOUT_SECS)
        .bind(settings.bind_addr)
        .with_context(|| format!("BIND_ADDR: cannot listen on {}", settings.bind_addr))?
        .run()
        .await
        .context("the HTTP server failed")
}

/// The server's reconciler: finishes or rolls back what faults left half done, removes unclaimed
/// objects older than GC_GRACE. A failed pass is logged and retried at the next tick.
/// With the local store, each pass also removes temporary files older than the grace that puts
/// of a killed process left behind (`sweep`: the store's root and the grace).
async fn reconcile_periodically(
    service: MediaService,
    metrics: Metrics,
    interval: Duration,
    sweep: Option<(std::path::PathBuf, Duration)>,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        match service
            .reconcile(ReconcileOptions {
                dry_run: false,
                grace: None,
            })
            .await
        {
            Ok(report) => {
                metrics
                    .orphans_found
                    .set(i64::try_from(report.orphans_found).unwrap_or(i64::MAX));
                tracing::info!(?report, "reconciler pass done");
            }
            Err(err) => {
                tracing::warn!(error = %err, source = ?std::error::Error::source(&err), "reconciler pass failed")
            }
        }
        if let Some((root, grace)) = sweep.clone() {
            let swept = tokio::task::spawn_blocking(move || {
                plugs_storage::LocalFsStore::remove_stale_temp_files(&root, grace, false)
            })
            .await;
            match swept {
                Ok(Ok(0)) => {}
                Ok(Ok(removed)) => tracing::info!(removed, "stale temporary files removed"),
                Ok(Err(err)) => tracing::warn!(error = %err, "temporary file sweep failed"),
                Err(err) => tracing::warn!(error = %err, "temporary file sweep task failed"),
            }
        }
    }
}

#[allow(clippy::print_stdout, reason = "the token is this command's output")]
fn token(settings: &Settings, user: &str, ttl: Duration) -> anyhow::Result<()> {
    let user = UserId::parse(user).context("--user: not a valid user id")?;
    let keys = JwtKeys::from_settings(&settings.jwt, &settings.data_dir)?;
    let token = keys.issue(&user, ttl)?;
    println!("{token}");
    Ok(())
}

async fn gc(settings: &Settings, apply: bool, grace: Option<Duration>) -> anyhow::Result<()> {
    // Migrations are idempotent, and a fresh embedded database has no tables to reconcile yet.
    let (service, _) = state::build_service(settings, Migrations::Apply).await?;
    let report = service
        .reconcile(ReconcileOptions {
            dry_run: !apply,
            grace,
        })
        .await
        .context("reconciling failed")?;
    print_report(&report, apply);
    // A local put killed mid-upload leaves a temporary file no record or listing can see.
    if let crate::config::StorageSettings::Local { root } = &settings.storage {
        let grace = grace.unwrap_or(settings.gc_grace);
        let stale = tokio::task::spawn_blocking({
            let root = root.clone();
            move || plugs_storage::LocalFsStore::remove_stale_temp_files(&root, grace, !apply)
        })
        .await
        .context("temporary file sweep failed")?
        .context("removing stale temporary files failed")?;
        print_stale_temp_files(stale, apply);
    }
    // A put killed between parts leaves an unfinished multipart upload: bytes S3 keeps (and
    // bills) that no listing of objects shows.
    if let crate::config::StorageSettings::S3 { .. } = &settings.storage {
        let store = state::s3::store(settings).await?;
        let grace = grace.unwrap_or(settings.gc_grace);
        let cutoff = chrono::Utc::now() - chrono::Duration::from_std(grace).unwrap_or_default();
        match store.list_multipart_uploads("events/").await {
            Ok(uploads) => {
                let stale: Vec<_> = uploads
                    .into_iter()
                    .filter(|u| match u.initiated {
                        Some(initiated) => initiated <= cutoff,
                        None => grace.is_zero(),
                    })
                    .collect();
                let mut aborted = 0;
                if apply {
                    for upload in &stale {
                        match store.abort_multipart_upload(upload).await {
                            Ok(()) => aborted += 1,
                            Err(err) => {
                                tracing::warn!(key = %upload.key, error = %err, "abort failed")
                            }
                        }
                    }
                }
                print_multipart(stale.len(), aborted, apply);
            }
            // Not every S3-compatible server lists them (s3s-fs does not): say so, go on.
            Err(err) => tracing::warn!(error = %err, "cannot list unfinished multipart uploads"),
        }
    }
    Ok(())
}

#[allow(clippy::print_stdout, reason = "the summary is this command's output")]
fn print_multipart(found: usize, aborted: usize, applied: bool) {
    println!("  unfinished multipart uploads found:   {found}");
    if applied {
        println!("  unfinished multipart uploads aborted: {aborted}");
    }
}

#[allow(clippy::print_stdout, reason = "the summary is this command's output")]
fn print_stale_temp_files(count: usize, applied: bool) {
    let verb = if applied { "removed" } else { "found" };
    println!("  stale temporary files {verb}: {count}");
}

#[allow(clippy::print_stdout, reason = "the summary is this command's output")]
fn print_report(report: &ReconcileReport, applied: bool) {
    let mode = if applied {
        "applied"
    } else {
        "dry run (pass --apply to change anything)"
    };
    println!("gc: {mode}");
    println!(
        "  pending uploads rolled back: {}",
        report.pending_rolled_back
    );
    println!(
        "  pending uploads completed:   {}",
        report.pending_completed
    );
    println!(
        "  deletes finished:            {}",
        report.deleting_finished
    );
    println!("  orphan objects found:        {}", report.orphans_found);
    println!("  orphan objects deleted:      {}", report.orphans_deleted);
    println!(
        "  records missing their object: {}",
        report.missing_objects.len()
    );
    for id in &report.missing_objects {
        println!("    {id}");
    }
    println!("  repairs failed:              {}", report.failed);
}
