//! `/api/v1/objects/{key}`: serves presigned URLs of stores without a server of their own (the
//! local directory store). No bearer token: the URL's signature is the credential.

use std::sync::Arc;

use actix_web::body::SizedStream;
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use plugs_storage::{GetOptions, ObjectKey, ObjectStore, PresignMethod, StoreError};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::error::{ApiError, Problem};
use crate::routes::media::parse_range;

/// Checks a presigned URL's signature: `(method, key, expires, signature)`.
pub type VerifyPresigned =
    dyn Fn(PresignMethod, &ObjectKey, i64, &str) -> Result<(), StoreError> + Send + Sync;

/// The store whose presigned URLs this server answers, and how to check them.
#[derive(Clone)]
pub struct LocalObjects {
    /// The store.
    pub store: Arc<dyn ObjectStore>,
    /// Its signature check.
    pub verify: Arc<VerifyPresigned>,
}

impl std::fmt::Debug for LocalObjects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalObjects")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

/// The signature part of a presigned URL.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PresignedQuery {
    /// `GET`.
    pub method: String,
    /// Expiry, seconds since the epoch.
    pub expires: i64,
    /// Hex HMAC-SHA256 of method, key and expiry.
    pub signature: String,
}

/// Registers the route (only when the store needs it; otherwise it answers 404).
pub fn config(cfg: &mut web::ServiceConfig) {
    cfg.route("/objects/{key:.*}", web::get().to(get_object));
}

/// Downloads an object through a presigned URL of the local store.
#[utoipa::path(
    get, path = "/api/v1/objects/{key}", tag = "media",
    params(("key" = String, Path, description = "Object key (may contain `/`)"), PresignedQuery),
    responses(
        (status = 200, description = "The bytes", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 206, description = "The requested range", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 403, description = "Signature wrong or expired", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such object, or this server's store has no presigned URLs", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_object(
    req: HttpRequest,
    local: Option<web::Data<LocalObjects>>,
    query: web::Query<PresignedQuery>,
) -> Result<HttpResponse, ApiError> {
    let Some(local) = local else {
        return Err(ApiError::NotFound("object"));
    };
    // `match_info` holds the percent-decoded path segment the URL was signed over.
    let key = req.match_info().get("key").unwrap_or_default();
    let key = ObjectKey::parse(key).map_err(|_| ApiError::NotFound("object"))?;
    if !query.method.eq_ignore_ascii_case("GET") {
        return Err(ApiError::Forbidden("this presigned URL does not allow GET"));
    }
    if (local.verify)(PresignMethod::Get, &key, query.expires, &query.signature).is_err() {
        return Err(ApiError::Forbidden(
            "the presigned URL is invalid or has expired",
        ));
    }
    let mut options = GetOptions::default();
    options.range = req
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_range);
    let requested_range = options.range.is_some();
    let object = match local.store.get(&key, options).await {
        Ok(object) => object,
        Err(StoreError::NotFound { .. }) => return Err(ApiError::NotFound("object")),
        Err(err) => return Err(ApiError::Media(err.into())),
    };
    let range = object.range.clone();
    let mut response = if requested_range {
        HttpResponse::PartialContent()
    } else {
        HttpResponse::Ok()
    };
    if requested_range {
        let last = range.end.saturating_sub(1);
        response.insert_header((
            header::CONTENT_RANGE,
            format!("bytes {}-{last}/{}", range.start, object.meta.size),
        ));
    }
    let content_type = object
        .meta
        .content_type
        .clone()
        .unwrap_or_else(|| "application/octet-stream".to_owned());
    response
        .insert_header((header::CONTENT_TYPE, content_type))
        .insert_header((header::ETAG, object.meta.etag.clone()))
        .insert_header((header::ACCEPT_RANGES, "bytes"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"));
    Ok(response.body(SizedStream::new(
        range.end.saturating_sub(range.start),
        object.body,
    )))
}
