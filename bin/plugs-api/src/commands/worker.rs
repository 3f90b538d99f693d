//! Processing workers: inside `serve` (`PROCESSING_WORKERS`) and as `plugs-api worker`, a
//! process that only works the queue, for a separate fleet. Both claim jobs from the database,
//! so any number of them, in any number of processes, share the work.

use anyhow::Context as _;
use plugs_media::{MediaService, ProcessingConfig, ProcessingWorker};

use crate::config::Settings;
use crate::state::{self, Migrations};

/// `worker`'s flags.
#[derive(Debug, Clone, clap::Args)]
pub struct WorkerArgs {
    /// Workers in this process (default PROCESSING_WORKERS, at least 1); each uses a core while
    /// it renders.
    #[arg(long)]
    pub count: Option<usize>,
}

/// Starts `count` workers on the current runtime; they run until the process ends (a job cut
/// short is claimed again once its lease lapses). Logs and starts none when `count` is 0.
pub fn spawn(service: &MediaService, config: &ProcessingConfig, count: usize) {
    if count == 0 {
        tracing::info!("processing workers: none in this process (PROCESSING_WORKERS=0)");
        return;
    }
    let Some(worker) = ProcessingWorker::new(service, config.clone()) else {
        tracing::warn!("processing workers: the service has no job queue; none started");
        return;
    };
    tracing::info!(count, "processing workers started");
    for _ in 0..count {
        let worker = worker.clone();
        tokio::spawn(async move { worker.run(std::future::pending()).await });
    }
}

/// `plugs-api worker`: works the queue until SIGTERM or SIGINT, then finishes the jobs in hand.
pub async fn run(settings: &Settings, args: WorkerArgs) -> anyhow::Result<()> {
    let (service, _) = state::build_service(settings, Migrations::Apply).await?;
    let count = args.count.unwrap_or(settings.processing_workers).max(1);
    let worker = ProcessingWorker::new(&service, settings.processing.clone())
        .context("the service has no job queue")?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let tasks: Vec<_> = (0..count)
        .map(|_| {
            let worker = worker.clone();
            let mut stopped = stopped.clone();
            tokio::spawn(async move {
                worker
                    .run(async move {
                        let _ = stopped.wait_for(|stop| *stop).await;
                    })
                    .await;
            })
        })
        .collect();
    tracing::info!(count, "worker: processing jobs until SIGTERM or SIGINT");
    shutdown_signal().await?;
    tracing::info!("worker: stopping after the jobs in hand");
    let _ = stop.send(true);
    for task in tasks {
        task.await.context("a worker task failed")?;
    }
    Ok(())
}

async fn shutdown_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
        tokio::select! {
            _ = term.recv() => {}
            result = tokio::signal::ctrl_c() => result.context("cannot listen for SIGINT")?,
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c()
        .await
        .context("cannot listen for Ctrl-C")?;
    Ok(())
}
