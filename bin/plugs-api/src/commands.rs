//! What each subcommand does. The operator commands that grow beyond a few lines live in
//! `commands/`, one file each.

pub mod backfill;
pub mod bucket;
pub mod check;
pub mod reprocess;
pub mod scrub;
pub mod worker;

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
pub async fn run(command: Option<Command>, mut settings: Settings) -> anyhow::Result<()> {
    let command = command.unwrap_or(Command::Serve);
    // What makes derived versions or enqueues them (uploads, imports, reprocess) must know
    // which types the external decoders found here make processable.
    if matches!(
        command,
        Command::Serve | Command::Worker(_) | Command::Reprocess(_) | Command::Backfill(_)
    ) {
        settings.detect_external_tools().await;
    }
    match command {
        Command::Serve => serve(settings).await,
        Command::Migrate => {
            state::connect_database(&settings, Migrations::Apply).await?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::Token { user, ttl } => token(&settings, &user, ttl),
        Command::Gc { apply, grace } => gc(&settings, apply, grace).await,
        Command::Check => check::run(&settings).await,
        Command::Bucket { command } => bucket::run(&settings, command).await,
        Command::Scrub(args) => scrub::run(&settings, args).await,
        Command::Backfill(args) => backfill::run(&settings, args).await,
        Command::Worker(args) => worker::run(&settings, args).await,
        Command::Reprocess(args) => reprocess::run(&settings, args).await,
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
    let mut state = state::build(&settings).await?;
    if settings.metrics_bind_addr.is_some() {
        state.metrics = state.metrics.served_separately();
    }
    if let Some(interval) = settings.gc_interval {
        let service = state.service.clone();
        let metrics = state.metrics.clone();
        actix_web::rt::spawn(reconcile_periodically(service, metrics, interval));
    }
    let processing = worker::spawn(
        &state.service,
        &settings.processing,
        settings.processing_workers,
    );
    processing.stop_on_signal();
    let workers = std::thread::available_parallelism().map_or(1, usize::from);
    tracing::info!(addr = %settings.bind_addr, workers, "listening");
    let metrics = state.metrics.clone();
    let main = HttpServer::new(move || crate::build_app(state.clone()))
        .workers(workers)
        .shutdown_timeout(SHUTDOWN_TIMEOUT_SECS)
        .bind(settings.bind_addr)
        .with_context(|| format!("BIND_ADDR: cannot listen on {}", settings.bind_addr))?
        .run();
    let Some(metrics_addr) = settings.metrics_bind_addr else {
        let served = main.await.context("the HTTP server failed");
        processing.drain().await?;
        return served;
    };
    // Scrapers only: one worker is plenty, and it stops with the main server on a signal.
    tracing::info!(addr = %metrics_addr, "serving /metrics");
    let scrape = HttpServer::new(move || crate::metrics::metrics_app(metrics.clone()))
        .workers(1)
        .shutdown_timeout(SHUTDOWN_TIMEOUT_SECS)
        .bind(metrics_addr)
        .with_context(|| format!("METRICS_BIND_ADDR: cannot listen on {metrics_addr}"))?
        .run();
    let served = futures::future::try_join(main, scrape)
        .await
        .context("the HTTP server failed");
    processing.drain().await?;
    served.map(|_| ())
}

/// The server's reconciler: the same pass as `gc --apply` (finishes or rolls back what faults
/// left half done, removes unclaimed objects and the store's leftovers of unfinished writes older
/// than GC_GRACE). A failed pass is logged and retried at the next tick.
async fn reconcile_periodically(service: MediaService, metrics: Metrics, interval: Duration) {
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
    }
}

#[allow(clippy::print_stdout, reason = "the token is this command's output")]
fn token(settings: &Settings, user: &str, ttl: Duration) -> anyhow::Result<()> {
    let user = UserId::parse(user).context("--user: not a valid user id")?;
    let keys = JwtKeys::from_settings(settings)?;
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
    Ok(())
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
    // What writes that never finished left in the store (a killed process's temporary files,
    // unfinished multipart uploads): no record or listing shows them.
    let sweep = &report.sweep;
    println!("  stale temporary files found: {}", sweep.temp_files.found);
    if applied {
        println!(
            "  stale temporary files removed: {}",
            sweep.temp_files.removed
        );
    }
    println!(
        "  unfinished multipart uploads found:   {}",
        sweep.multipart_uploads.found
    );
    if applied {
        println!(
            "  unfinished multipart uploads aborted: {}",
            sweep.multipart_uploads.removed
        );
    }
    if let Some(why) = &sweep.skipped {
        println!("  store sweep skipped: {why}");
    }
    println!("  repairs failed:              {}", report.failed);
}
