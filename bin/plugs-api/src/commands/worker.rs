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

/// Workers running on the current runtime, until [`Workers::drain`].
#[derive(Debug)]
pub struct Workers {
    stop: std::sync::Arc<tokio::sync::watch::Sender<bool>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Workers {
    /// Starts `count` copies of `worker`.
    fn start(worker: &ProcessingWorker, count: usize) -> Self {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let tasks = (0..count)
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
        Self {
            stop: std::sync::Arc::new(stop),
            tasks,
        }
    }

    /// Tells the workers to stop claiming jobs as soon as SIGTERM or SIGINT arrives, while the
    /// HTTP server (which hears the same signal) finishes its requests: the jobs in hand then
    /// finish alongside, rather than after, the server's own shutdown.
    pub fn stop_on_signal(&self) {
        if self.tasks.is_empty() {
            return;
        }
        let stop = std::sync::Arc::clone(&self.stop);
        tokio::spawn(async move {
            if shutdown_signal().await.is_ok() {
                tracing::info!("processing workers: signal received, claiming no more jobs");
                let _ = stop.send(true);
            }
        });
    }

    /// No workers (processing off in this process).
    fn none() -> Self {
        Self {
            stop: std::sync::Arc::new(tokio::sync::watch::channel(false).0),
            tasks: Vec::new(),
        }
    }

    /// Tells every worker to stop and waits while they finish the jobs in hand (each at most
    /// PROCESSING_JOB_TIMEOUT): no job is left `running` to wait out its lease.
    pub async fn drain(self) -> anyhow::Result<()> {
        if self.tasks.is_empty() {
            return Ok(());
        }
        tracing::info!(
            count = self.tasks.len(),
            "processing workers: stopping after the jobs in hand"
        );
        let _ = self.stop.send(true);
        for task in self.tasks {
            task.await.context("a worker task failed")?;
        }
        tracing::info!("processing workers: stopped");
        Ok(())
    }
}

/// Starts `count` workers on the current runtime, until [`Workers::drain`] (`serve` drains them
/// once the HTTP server has stopped). Logs and starts none when `count` is 0.
pub fn spawn(service: &MediaService, config: &ProcessingConfig, count: usize) -> Workers {
    if count == 0 {
        tracing::info!("processing workers: none in this process (PROCESSING_WORKERS=0)");
        return Workers::none();
    }
    let Some(worker) = ProcessingWorker::new(service, config.clone()) else {
        tracing::warn!("processing workers: the service has no job queue; none started");
        return Workers::none();
    };
    tracing::info!(count, "processing workers started");
    Workers::start(&worker, count)
}

/// `plugs-api worker`: works the queue until SIGTERM or SIGINT, then finishes the jobs in hand.
pub async fn run(settings: &Settings, args: WorkerArgs) -> anyhow::Result<()> {
    let (service, _) = state::build_service(settings, Migrations::Apply).await?;
    let count = args.count.unwrap_or(settings.processing_workers).max(1);
    let worker = ProcessingWorker::new(&service, settings.processing.clone())
        .context("the service has no job queue")?;
    let workers = Workers::start(&worker, count);
    tracing::info!(count, "worker: processing jobs until SIGTERM or SIGINT");
    shutdown_signal().await?;
    workers.drain().await
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
