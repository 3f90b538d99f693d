//! `/healthz`, `/readyz` and `/metrics`: for orchestrators and scrapers, no auth.

use std::future::Future;
use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use plugs_media::MediaService;
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::Problem;
use crate::routes::get_or_head;

/// The body of the probes.
#[derive(Debug, Serialize, ToSchema)]
pub struct Status {
    /// `ok` or `ready`.
    pub status: &'static str,
}

/// The body of a ready `/readyz`: the status, and what this process can make derived versions
/// of.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// `ready`.
    pub status: &'static str,
    /// What the processing workers of this process can decode.
    pub details: ReadinessDetails,
}

/// The details of [`Readiness`].
#[derive(Debug, Serialize, ToSchema)]
pub struct ReadinessDetails {
    /// The external decoders looked for at start (`ffmpeg`, `heif-convert`, `prlimit`).
    pub external_decoders: Vec<ExternalDecoder>,
    /// The content types whose media get derived versions here. HEIC and AVIF need
    /// `heif-convert` and `prlimit`, videos `ffmpeg` and `prlimit`; without them such media
    /// keep processing `none`.
    pub processable_types: Vec<String>,
}

/// One external decoder, found or not.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExternalDecoder {
    /// The program's name.
    pub name: &'static str,
    /// Whether it was found on `PATH` and answered. Its version is in the startup log, not
    /// here: `/readyz` answers anyone who reaches it, and the exact versions of the decoders
    /// that read strangers' files would tell an attacker which flaws to try.
    pub found: bool,
}

fn details(service: &MediaService) -> ReadinessDetails {
    let tools = &service.config().external_tools;
    ReadinessDetails {
        external_decoders: tools
            .by_name()
            .into_iter()
            .map(|(name, tool)| ExternalDecoder {
                name,
                found: tool.is_some(),
            })
            .collect(),
        processable_types: tools
            .processable()
            .mimes()
            .into_iter()
            .map(str::to_owned)
            .collect(),
    }
}

/// Registers the routes.
pub fn config(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", get_or_head().to(healthz))
        .route("/readyz", get_or_head().to(readyz))
        .route(
            "/metrics",
            get_or_head().to(crate::metrics::metrics_handler),
        );
}

/// Liveness: the process answers. Always 200.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "Alive", body = Status)))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Status { status: "ok" })
}

/// How long a readiness answer is reused: probes arriving faster than this (a load balancer's
/// health checks from many nodes, an attacker) share one check of the database and the store.
pub const READY_CACHE_TTL: Duration = Duration::from_secs(1);

/// When one worker last found the service ready; that answer is reused for
/// [`READY_CACHE_TTL`]. A failure is not reused: once the database or the store is back, the
/// next probe says so. Concurrent probes wait for the one check in progress rather than start
/// their own.
#[derive(Debug)]
pub struct ReadyCache {
    ttl: Duration,
    last_ready: tokio::sync::Mutex<Option<Instant>>,
}

impl Default for ReadyCache {
    fn default() -> Self {
        Self::new(READY_CACHE_TTL)
    }
}

impl ReadyCache {
    /// A cache that keeps each answer for `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            last_ready: tokio::sync::Mutex::new(None),
        }
    }

    /// Ready if a check found it so less than the TTL ago, else the answer of `check`.
    pub async fn answer<F: Future<Output = bool>>(&self, check: impl FnOnce() -> F) -> bool {
        let mut last_ready = self.last_ready.lock().await;
        if last_ready.is_some_and(|at| at.elapsed() < self.ttl) {
            return true;
        }
        let ready = check().await;
        *last_ready = ready.then(Instant::now);
        ready
    }
}

/// Readiness: the database and the object store answer. Costs the same whatever the store
/// holds (one query, one look at the store), at most once a second per worker. The answer's
/// details say which external decoders this process found and so which types get derived
/// versions.
#[utoipa::path(
    get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "Database or store unreachable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn readyz(
    service: web::Data<MediaService>,
    cache: Option<web::Data<ReadyCache>>,
) -> HttpResponse {
    let check = || async {
        match service.check_ready().await {
            Ok(()) => true,
            Err(err) => {
                tracing::warn!(error = %err, source = ?std::error::Error::source(&err), "not ready");
                false
            }
        }
    };
    let ready = match &cache {
        Some(cache) => cache.answer(check).await,
        None => check().await,
    };
    if ready {
        HttpResponse::Ok().json(Readiness {
            status: "ready",
            details: details(&service),
        })
    } else {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the database or the object store does not answer",
        )
        .response()
    }
}

/// Prometheus metrics (documented here; served by [`crate::metrics::metrics_handler`]).
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")))]
#[allow(dead_code, reason = "exists for the OpenAPI document only")]
fn metrics_doc() {}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn probes_share_one_check_until_the_answer_is_stale() {
        let cache = ReadyCache::new(Duration::from_millis(200));
        let checks = AtomicUsize::new(0);
        let check = || async {
            checks.fetch_add(1, Ordering::SeqCst);
            true
        };
        for _ in 0..100 {
            assert!(cache.answer(check).await);
        }
        assert_eq!(checks.load(Ordering::SeqCst), 1);
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(cache.answer(check).await);
        assert_eq!(checks.load(Ordering::SeqCst), 2);

        // A failure is not reused: the next probe checks again.
        let cache = ReadyCache::new(Duration::from_secs(60));
        assert!(!cache.answer(|| async { false }).await);
        assert!(cache.answer(|| async { true }).await);
        assert!(cache.answer(|| async { false }).await, "ready, and fresh");
    }
}
