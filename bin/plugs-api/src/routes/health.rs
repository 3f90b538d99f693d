//! `/healthz`, `/readyz` and `/metrics`: for orchestrators and scrapers, no auth.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use plugs_media::MediaService;
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::Problem;

/// The body of the probes.
#[derive(Debug, Serialize, ToSchema)]
pub struct Status {
    /// `ok` or `ready`.
    pub status: &'static str,
}

/// Registers the routes.
pub fn config(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/metrics", web::get().to(crate::metrics::metrics_handler));
}

/// Liveness: the process answers. Always 200.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "Alive", body = Status)))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Status { status: "ok" })
}

/// Readiness: the database and the object store answer.
#[utoipa::path(
    get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready", body = Status),
        (status = 503, description = "Database or store unreachable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn readyz(service: web::Data<MediaService>) -> HttpResponse {
    match service.check_ready().await {
        Ok(()) => HttpResponse::Ok().json(Status { status: "ready" }),
        Err(err) => {
            tracing::warn!(error = %err, source = ?std::error::Error::source(&err), "not ready");
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: the database or the object store does not answer",
            )
            .response()
        }
    }
}

/// Prometheus metrics (documented here; served by [`crate::metrics::metrics_handler`]).
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")))]
#[allow(dead_code, reason = "exists for the OpenAPI document only")]
fn metrics_doc() {}
