//! Prometheus metrics: request counts and durations by route and status, upload bytes, and the
//! orphan count the reconciler last saw.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::{HttpResponse, web};
use prometheus::{
    Encoder as _, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};

/// The metrics of one server, in their own registry (no global state, so tests stay apart).
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    durations: HistogramVec,
    /// Bytes received in upload `file` fields.
    pub upload_bytes: IntCounter,
    /// Objects no record claims, as of the last reconciler run.
    pub orphans_found: IntGauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Creates and registers the metrics.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "plugs_http_requests_total",
                "HTTP requests by method, route and status",
            ),
            &["method", "route", "status"],
        )?;
        let durations = HistogramVec::new(
            HistogramOpts::new(
                "plugs_http_request_duration_seconds",
                "HTTP request durations by method and route",
            ),
            &["method", "route"],
        )?;
        let upload_bytes =
            IntCounter::new("plugs_upload_bytes_total", "Bytes received in uploads")?;
        let orphans_found = IntGauge::new(
            "plugs_orphans_found",
            "Unclaimed objects found by the last reconciler run",
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(durations.clone()))?;
        registry.register(Box::new(upload_bytes.clone()))?;
        registry.register(Box::new(orphans_found.clone()))?;
        Ok(Self {
            registry,
            requests,
            durations,
            upload_bytes,
            orphans_found,
        })
    }

    fn observe(&self, method: &str, route: &str, status: u16, seconds: f64) {
        self.requests
            .with_label_values(&[method, route, &status.to_string()])
            .inc();
        self.durations
            .with_label_values(&[method, route])
            .observe(seconds);
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut buffer = Vec::new();
        prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut buffer)?;
        String::from_utf8(buffer).map_err(|err| prometheus::Error::Msg(err.to_string()))
    }
}

/// Middleware recording every request. Routes are labelled by their pattern
/// (`/api/v1/events/{event_id}`), never by the concrete path, so ids don't explode the label set.
pub async fn record(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let metrics = req.app_data::<web::Data<Metrics>>().cloned();
    let method = req.method().to_string();
    let started = Instant::now();
    let response = next.call(req).await?;
    if let Some(metrics) = metrics {
        let route = response
            .request()
            .match_pattern()
            .unwrap_or_else(|| "unmatched".to_owned());
        metrics.observe(
            &method,
            &route,
            response.status().as_u16(),
            started.elapsed().as_secs_f64(),
        );
    }
    Ok(response)
}

/// `GET /metrics`.
pub async fn metrics_handler(metrics: web::Data<Metrics>) -> HttpResponse {
    match metrics.render() {
        Ok(text) => HttpResponse::Ok()
            .insert_header((header::CONTENT_TYPE, prometheus::TEXT_FORMAT))
            .body(text),
        Err(err) => {
            tracing::error!(error = %err, "rendering metrics failed");
            crate::error::Problem::new(
                actix_web::http::StatusCode::INTERNAL_SERVER_ERROR,
                "internal server error",
            )
            .response()
        }
    }
}
