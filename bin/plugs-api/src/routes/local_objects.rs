//! `/api/v1/objects/{key}`: serves presigned URLs of stores without a server of their own (the
//! local directory store): GET downloads, PUT uploads (a whole object, or one part of a
//! multipart upload). No bearer token: the URL's signature, which binds the method, the key, the
//! expiry and what a PUT must be (length, content type, SHA-256, part), is the credential.

use std::sync::Arc;

use actix_web::body::SizedStream;
use actix_web::http::Method;
use actix_web::http::header::{
    self, ContentDisposition, ContentRange, ContentRangeSpec, DispositionType,
};
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;
use futures::StreamExt as _;
use plugs_domain::may_run_code;
use plugs_storage::{
    ByteStream, GetOptions, ObjectKey, ObjectStore, PresignMethod, PresignedParams, PutOptions,
    StoreError,
};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::error::{ApiError, Problem};
use crate::routes::get_or_head;
use crate::routes::media::{SANDBOX_POLICY, parse_range};

/// Checks a presigned URL's signature: `(key, parameters, signature)` (the store's
/// `verify_presigned`).
pub type VerifyPresigned =
    dyn Fn(&ObjectKey, &PresignedParams, &str) -> Result<(), StoreError> + Send + Sync;

/// The store whose presigned URLs this server answers, and how to check them.
#[derive(Clone)]
pub struct LocalObjects {
    /// The store.
    pub store: Arc<dyn ObjectStore>,
    /// Its signature check.
    pub verify: Arc<VerifyPresigned>,
    /// The largest body a presigned PUT may carry (`MAX_FILE_SIZE`), in bytes.
    pub max_size: u64,
}

impl std::fmt::Debug for LocalObjects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalObjects")
            .field("store", &self.store)
            .field("max_size", &self.max_size)
            .finish_non_exhaustive()
    }
}

/// The signature part of a presigned URL.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PresignedQuery {
    /// The method the URL was signed for: `GET` or `PUT`.
    pub method: String,
    /// Expiry, seconds since the epoch.
    pub expires: i64,
    /// Hex HMAC-SHA256 of method, key, expiry and the parameters below.
    pub signature: String,
    /// For a PUT: the exact `Content-Length` the request must declare.
    pub length: Option<u64>,
    /// For a PUT: the `Content-Type` the request must carry.
    pub content_type: Option<String>,
    /// For a PUT: the hex SHA-256 the body must have (a client may also send it base64 in
    /// `x-amz-checksum-sha256`, as for S3).
    pub sha256: Option<String>,
    /// For a PUT of one part of a multipart upload: the upload id.
    pub upload_id: Option<String>,
    /// For a PUT of one part of a multipart upload: the part number.
    pub part_number: Option<u32>,
}

/// Chunks a presigned PUT's body may have in flight between the request and the store.
const CHANNEL_CAPACITY: usize = 4;

/// Registers the routes (always; without a local store they answer 404).
pub fn config(cfg: &mut web::ServiceConfig) {
    cfg.route("/objects/{key:.*}", get_or_head().to(get_object))
        .route("/objects/{key:.*}", web::put().to(put_object));
}

/// The key a presigned request names and what its URL binds, once the URL is shown to allow
/// `method` on it.
fn presigned_key(
    req: &HttpRequest,
    local: &LocalObjects,
    query: &PresignedQuery,
    method: PresignMethod,
) -> Result<(ObjectKey, PresignedParams), ApiError> {
    // `match_info` holds the percent-decoded path segment the URL was signed over.
    let key = req.match_info().get("key").unwrap_or_default();
    let key = ObjectKey::parse(key).map_err(|_| ApiError::NotFound("object"))?;
    if !query.method.eq_ignore_ascii_case(method.as_str()) {
        return Err(ApiError::Forbidden(match method {
            PresignMethod::Get => "this presigned URL does not allow GET",
            PresignMethod::Put => "this presigned URL does not allow PUT",
        }));
    }
    let invalid = || ApiError::Forbidden("the presigned URL is invalid or has expired");
    let (params, signature) =
        PresignedParams::from_query(req.query_string()).ok_or_else(invalid)?;
    // The signature covers the method and every binding too: changing one in the URL breaks it.
    if params.method != method || (local.verify)(&key, &params, &signature).is_err() {
        return Err(invalid());
    }
    Ok((key, params))
}

/// Holds a PUT's headers to what its URL binds, as S3 holds a request to its signed headers
/// (403 when one differs); the body itself is checked against the length and SHA-256 as it
/// streams into the store (an `x-amz-checksum-sha256` header, which S3 clients send, is not
/// needed: the SHA-256 is in the signed URL).
fn check_bound_headers(
    req: &HttpRequest,
    params: &PresignedParams,
    declared: Option<u64>,
) -> Result<(), ApiError> {
    if params.content_length.is_some() && declared != params.content_length {
        return Err(ApiError::Forbidden(
            "the request's Content-Length is not the one this URL was signed for",
        ));
    }
    let header = |name| req.headers().get(name).and_then(|v| v.to_str().ok());
    if let Some(bound) = &params.content_type
        && header(header::CONTENT_TYPE) != Some(bound.as_str())
    {
        return Err(ApiError::Forbidden(
            "the request's Content-Type is not the one this URL was signed for",
        ));
    }
    Ok(())
}

/// Downloads an object through a presigned URL of the local store.
///
/// Like the media routes, every answer carries `Content-Security-Policy: sandbox`, and a type a
/// browser may run code from (PDF, anything not a picture, video or sound) comes with
/// `Content-Disposition: attachment`, as S3 answers the URLs the service presigns for such
/// types. A GET URL also answers `HEAD` (headers only, `Range` ignored).
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
    let (key, _) = presigned_key(&req, &local, &query, PresignMethod::Get)?;
    let mut options = GetOptions::default();
    // RFC 9110 defines `Range` for GET only; a HEAD answers for the whole object.
    options.range = req
        .headers()
        .get(header::RANGE)
        .filter(|_| req.method() != Method::HEAD)
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
        response.insert_header(ContentRange(ContentRangeSpec::Bytes {
            range: Some((range.start, range.end.saturating_sub(1))),
            instance_length: Some(object.meta.size),
        }));
    }
    let content_type = object
        .meta
        .content_type
        .clone()
        .unwrap_or_else(|| "application/octet-stream".to_owned());
    if may_run_code(&content_type) {
        response.insert_header(ContentDisposition {
            disposition: DispositionType::Attachment,
            parameters: Vec::new(),
        });
    }
    response
        .insert_header((header::CONTENT_TYPE, content_type))
        .insert_header((header::ETAG, object.meta.etag.clone()))
        .insert_header((header::ACCEPT_RANGES, "bytes"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::CONTENT_SECURITY_POLICY, SANDBOX_POLICY));
    Ok(response.body(SizedStream::new(
        range.end.saturating_sub(range.start),
        object.body,
    )))
}

/// Uploads an object, or one part of a multipart upload, through a presigned PUT URL of the
/// local store. The body streams into the store's own put or part upload (a temporary file
/// renamed into place), so a body that fails, runs past `MAX_FILE_SIZE`, or differs from the
/// length or SHA-256 the URL binds leaves nothing, and an object or part already there stays as
/// it was.
#[utoipa::path(
    put, path = "/api/v1/objects/{key}", tag = "media",
    params(("key" = String, Path, description = "Object key (may contain `/`)"), PresignedQuery),
    request_body(
        content = Vec<u8>, content_type = "application/octet-stream",
        description = "The object's bytes, at most MAX_FILE_SIZE. The request's `Content-Type` is stored with the object."
    ),
    responses(
        (status = 200, description = "Stored, replacing any object (or part) under the key; `ETag` is the new object's (or part's)",
            headers(("ETag" = String, description = "The stored object's or part's entity tag"))),
        (status = 400, description = "Malformed query string, a body cut short, or a body whose length or SHA-256 is not the one bound", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Signature wrong or expired, the URL was signed for another method, or a header differs from what the URL binds (Content-Length, Content-Type)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Not a valid key, no such multipart upload, or this server's store has no presigned URLs", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body larger than MAX_FILE_SIZE; nothing stored", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The store is unavailable (a full disk, say); nothing stored", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn put_object(
    req: HttpRequest,
    local: Option<web::Data<LocalObjects>>,
    query: web::Query<PresignedQuery>,
    mut payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let Some(local) = local else {
        return Err(ApiError::NotFound("object"));
    };
    let (key, params) = presigned_key(&req, &local, &query, PresignMethod::Put)?;
    let limit = local.max_size;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    check_bound_headers(&req, &params, declared)?;
    if declared.is_some_and(|len| len > limit) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    let mut options = PutOptions::default();
    options.size = declared;
    options.sha256 = params.sha256;
    options.content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);

    // The payload is not `Send` and the store wants a `Send` stream: pump it through a small
    // bounded channel that the put reads from, both in this task (backpressure, nothing spawned).
    let (sender, mut receiver) =
        tokio::sync::mpsc::channel::<Result<Bytes, StoreError>>(CHANNEL_CAPACITY);
    let body: ByteStream = futures::stream::poll_fn(move |cx| receiver.poll_recv(cx)).boxed();
    let pump = async move {
        let mut received = 0u64;
        while let Some(chunk) = payload.next().await {
            let (item, too_large) = match chunk {
                Ok(bytes) => {
                    received = received.saturating_add(bytes.len() as u64);
                    if received > limit {
                        let error = std::io::Error::other("the body is larger than MAX_FILE_SIZE");
                        (
                            Err(StoreError::Body {
                                source: Box::new(error),
                            }),
                            true,
                        )
                    } else {
                        (Ok(bytes), false)
                    }
                }
                // The payload error is not `Send`; its message is all the store needs.
                Err(err) => {
                    let error = std::io::Error::other(err.to_string());
                    (
                        Err(StoreError::Body {
                            source: Box::new(error),
                        }),
                        false,
                    )
                }
            };
            let failed = item.is_err();
            // A closed channel means the put stopped reading (it failed).
            if sender.send(item).await.is_err() || failed {
                return too_large;
            }
        }
        false
    };
    let store = async {
        match (&params.part, declared) {
            (Some((upload_id, part_number)), Some(size)) => local
                .store
                .upload_part(&key, upload_id, *part_number, body, size)
                .await
                .map(|part| part.etag),
            // A part URL always binds its length, and the request was held to it above.
            (Some(_), None) => Err(StoreError::Body {
                source: "a part upload without Content-Length".into(),
            }),
            (None, _) => local
                .store
                .put(&key, body, options)
                .await
                .map(|put| put.etag),
        }
    };
    let (too_large, stored) = futures::join!(pump, store);
    if too_large {
        // The put saw its body fail and kept nothing.
        return Err(ApiError::PayloadTooLarge { limit });
    }
    let stored = match stored {
        Ok(stored) => stored,
        Err(StoreError::Body { .. }) => {
            return Err(ApiError::BadRequest(
                "the request body was cut short or malformed; nothing stored".to_owned(),
            ));
        }
        Err(StoreError::SizeMismatch { .. }) => {
            return Err(ApiError::BadRequest(
                "the body's length is not its Content-Length; nothing stored".to_owned(),
            ));
        }
        Err(StoreError::ChecksumMismatch { .. }) => {
            return Err(ApiError::BadRequest(
                "the body's SHA-256 is not the one this URL was signed for; nothing stored"
                    .to_owned(),
            ));
        }
        Err(StoreError::NotFound { .. }) if params.part.is_some() => {
            return Err(ApiError::NotFound("multipart upload"));
        }
        Err(err) => return Err(ApiError::Media(err.into())),
    };
    Ok(HttpResponse::Ok()
        .insert_header((header::ETAG, stored))
        .finish())
}
