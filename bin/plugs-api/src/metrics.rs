//! Prometheus metrics: request counts and durations by route and status, upload bytes, the
//! orphan count the reconciler last saw, and the memory budgets of downloads and uploads.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{Method, header};
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
    /// Downloads' read-ahead budget, read at every scrape.
    download_budget: Option<BudgetGauges>,
    /// Uploads' part buffer budget, read at every scrape.
    upload_budget: Option<BudgetGauges>,
    /// Whether the main listener answers `/metrics` (false when `METRICS_BIND_ADDR` gives
    /// them a listener of their own, so that they stay off the public address).
    on_main_listener: bool,
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
            download_budget: None,
            upload_budget: None,
            on_main_listener: true,
        })
    }

    /// The same metrics, also showing the read-ahead budget of downloads: its size
    /// (`plugs_download_buffer_budget_bytes`) and what buffers hold of it now
    /// (`plugs_download_buffer_bytes`), read at each scrape.
    pub fn with_download_budget(
        mut self,
        budget: &plugs_storage::MemoryBudget,
    ) -> Result<Self, prometheus::Error> {
        self.download_budget = Some(self.budget_gauges(
            budget,
            (
                "plugs_download_buffer_budget_bytes",
                "Bytes the read-ahead buffers of all downloads may hold at once (DOWNLOAD_MEMORY_BUDGET)",
            ),
            (
                "plugs_download_buffer_bytes",
                "Bytes the read-ahead buffers of downloads hold now",
            ),
        )?);
        Ok(self)
    }

    /// The same metrics, also showing the budget of uploads' part buffers (S3): its size
    /// (`plugs_upload_buffer_budget_bytes`) and what part buffers hold now
    /// (`plugs_upload_buffer_bytes`, above the size when uploads that waited too long for
    /// budget went beyond it), read at each scrape.
    pub fn with_upload_budget(
        mut self,
        budget: &plugs_storage::MemoryBudget,
    ) -> Result<Self, prometheus::Error> {
        self.upload_budget = Some(self.budget_gauges(
            budget,
            (
                "plugs_upload_buffer_budget_bytes",
                "Bytes the part buffers of all uploads may hold at once (UPLOAD_MEMORY_BUDGET)",
            ),
            (
                "plugs_upload_buffer_bytes",
                "Bytes the part buffers of uploads hold now, beyond the budget included",
            ),
        )?);
        Ok(self)
    }

    /// Registers a budget's two gauges: its size, set once, and its use, set at each scrape.
    fn budget_gauges(
        &self,
        budget: &plugs_storage::MemoryBudget,
        (capacity_name, capacity_help): (&str, &str),
        (in_use_name, in_use_help): (&str, &str),
    ) -> Result<BudgetGauges, prometheus::Error> {
        let capacity = IntGauge::new(capacity_name, capacity_help)?;
        capacity.set(i64::try_from(budget.capacity()).unwrap_or(i64::MAX));
        let in_use = IntGauge::new(in_use_name, in_use_help)?;
        self.registry.register(Box::new(capacity))?;
        self.registry.register(Box::new(in_use.clone()))?;
        Ok(BudgetGauges {
            budget: budget.clone(),
            in_use,
        })
    }

    /// The same metrics, served only on a listener of their own ([`metrics_app`]): the main
    /// application's `/metrics` then answers 404 like any unknown route.
    #[must_use]
    pub fn served_separately(mut self) -> Self {
        self.on_main_listener = false;
        self
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
        for gauges in [&self.download_budget, &self.upload_budget]
            .into_iter()
            .flatten()
        {
            gauges
                .in_use
                .set(i64::try_from(gauges.budget.in_use()).unwrap_or(i64::MAX));
        }
        let mut buffer = Vec::new();
        prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut buffer)?;
        String::from_utf8(buffer).map_err(|err| prometheus::Error::Msg(err.to_string()))
    }
}

/// A budget and the gauge its use is copied into.
#[derive(Clone)]
struct BudgetGauges {
    budget: plugs_storage::MemoryBudget,
    in_use: IntGauge,
}

/// The label of a request's method: one of the standard methods, else `other`. HTTP lets a
/// client send any token as a method (`XQZV… /healthz`, 20 000 letters long), and each distinct
/// label value is a new series kept for the life of the process: an attacker could grow
/// `/metrics` without bound.
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "other",
    }
}

/// The label of a request's route: the pattern of the resource that matched, one of the
/// finite set this application registers (`/api/v1/events/{event_id}`, never the concrete
/// path), or `unmatched` for every path no resource claims (actix gives no pattern for a path
/// only a scope's prefix or the default service matched), whatever the path was.
fn route_label(request: &actix_web::HttpRequest) -> String {
    request
        .match_pattern()
        .unwrap_or_else(|| UNMATCHED.to_owned())
}

/// The route label of requests no route matched.
pub const UNMATCHED: &str = "unmatched";

/// Middleware recording every request. Every label comes from a closed set (see
/// [`method_label`] and [`route_label`]; the status is a 3-digit code), so no request, however
/// made up, adds a series beyond those the application's routes allow.
pub async fn record(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let metrics = req.app_data::<web::Data<Metrics>>().cloned();
    let method = method_label(req.method());
    let started = Instant::now();
    let response = next.call(req).await?;
    if let Some(metrics) = metrics {
        let route = route_label(response.request());
        metrics.observe(
            method,
            &route,
            response.status().as_u16(),
            started.elapsed().as_secs_f64(),
        );
    }
    Ok(response)
}

/// `GET /metrics` on the main listener: the metrics, unless they are served separately.
pub async fn metrics_handler(metrics: web::Data<Metrics>) -> HttpResponse {
    if !metrics.on_main_listener {
        return crate::error::not_found().await;
    }
    render_response(&metrics)
}

/// The application of the separate metrics listener (`METRICS_BIND_ADDR`): `GET /metrics` and
/// nothing else. Its own requests are not counted.
pub fn metrics_app(
    metrics: Metrics,
) -> actix_web::App<
    impl actix_web::dev::ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    actix_web::App::new()
        .app_data(web::Data::new(metrics))
        .route(
            "/metrics",
            web::get().to(|metrics: web::Data<Metrics>| async move { render_response(&metrics) }),
        )
        .default_service(web::to(crate::error::not_found))
}

fn render_response(metrics: &Metrics) -> HttpResponse {
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
