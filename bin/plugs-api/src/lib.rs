#![doc = include_str!("../README.md")]

pub mod auth;
pub mod body_guard;
pub mod cdn;
pub mod cli;
pub mod commands;
pub mod config;
pub mod error;
pub mod idempotency;
pub mod jwks;
pub mod metrics;
pub mod openapi;
pub mod request_log;
pub mod routes;
pub mod state;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::{Condition, Next, from_fn};
use actix_web::{App, HttpMessage as _, web};
use tracing_actix_web::{RequestId, TracingLogger};

pub use state::AppState;

/// Largest JSON body accepted (event creation is a title).
const JSON_LIMIT: usize = 64 * 1024;

/// The application: routes, shared state, extractor error handlers and middleware (request id,
/// tracing, metrics). Used by `serve` and by tests alike.
pub fn build_app(
    state: AppState,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let mut app = App::new()
        .app_data(web::Data::new(state.service))
        .app_data(web::Data::new(state.keys))
        .app_data(web::Data::new(state.metrics))
        .app_data(web::Data::new(state.limits))
        .app_data(web::Data::from(state.idempotency))
        // One per worker: readiness probes share one check a second.
        .app_data(web::Data::new(routes::health::ReadyCache::default()))
        .app_data(
            web::JsonConfig::default()
                .limit(JSON_LIMIT)
                .error_handler(error::json_error),
        )
        .app_data(web::PathConfig::default().error_handler(error::path_error))
        .app_data(web::QueryConfig::default().error_handler(error::query_error));
    if let Some(local) = state.local_objects {
        app = app.app_data(web::Data::new(local));
    }
    let cors_enabled = !state.cors_allowed_origins.is_empty();
    app.wrap(Condition::new(
        cors_enabled,
        cors(&state.cors_allowed_origins),
    ))
    .wrap(from_fn(metrics::record))
    .wrap(from_fn(request_id_header))
    .wrap(TracingLogger::<request_log::RequestSpan>::new())
    .configure(routes::health::config)
    .service(
        web::scope("/api/v1")
            .configure(routes::events::config)
            // Before the media routes: `uploads` is not a media id.
            .configure(routes::uploads::config)
            // Before the media routes: `tus` is not a media id.
            .configure(routes::tus::config)
            .configure(routes::media::config)
            .configure(routes::variants::config)
            .configure(routes::zip::config)
            .configure(routes::local_objects::config)
            .route(
                "/openapi.json",
                routes::get_or_head().to(openapi::openapi_json),
            ),
    )
    .default_service(web::to(error::not_found))
}

/// CORS for browser apps on the configured origins (actix-cors): the methods and request headers
/// the API takes, and the response headers a browser app needs to read (`ETag` for `If-Match`
/// and multipart completion, `Location` of a new record, the problem type, range and tus
/// headers).
fn cors(origins: &[String]) -> actix_cors::Cors {
    origins
        .iter()
        .fold(actix_cors::Cors::default(), |cors, origin| {
            cors.allowed_origin(origin)
        })
        .allowed_methods(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
        .allowed_headers([
            "authorization",
            "content-type",
            "if-match",
            "if-none-match",
            "if-range",
            "range",
            "idempotency-key",
            "tus-resumable",
            "upload-length",
            "upload-offset",
            "upload-metadata",
            "upload-checksum",
            "upload-defer-length",
            "upload-concat",
        ])
        .expose_headers([
            "etag",
            "location",
            "content-type",
            "content-range",
            "content-disposition",
            "x-request-id",
            "retry-after",
            "tus-resumable",
            "tus-version",
            "tus-extension",
            "tus-max-size",
            "tus-checksum-algorithm",
            "upload-offset",
            "upload-length",
            "upload-expires",
            "upload-metadata",
            "upload-media-id",
        ])
        .max_age(3600)
}

/// Puts the request id that tracing-actix-web gave the request (and its log lines) on the
/// response, so a client can quote it in a bug report.
async fn request_id_header(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let id = req.extensions().get::<RequestId>().copied();
    let mut response = next.call(req).await?;
    if let Some(id) = id
        && let Ok(value) = HeaderValue::from_str(&id.to_string())
    {
        response
            .headers_mut()
            .insert(HeaderName::from_static("x-request-id"), value);
    }
    Ok(response)
}
