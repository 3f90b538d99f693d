//! `/api/v1/events/{event_id}/media/tus/`: resumable uploads over tus 1.0.0 (core, creation,
//! creation-with-upload, creation-defer-length, termination, expiration, checksum). The state
//! machine is the service's ([`MediaService::append_tus_chunk`]); this maps HTTP only.

use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{HttpRequest, HttpResponse, ResponseError as _, web};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt as _;
use plugs_domain::{EventId, MediaId};
use plugs_media::{
    MediaService, TUS_CHECKSUM_ALGORITHMS, TusChecksum, TusChunk, TusCreate, TusError, TusStatus,
};
use plugs_storage::{ByteStream, StoreError};

use crate::auth::AuthUser;
use crate::body_guard::{BodyGuard, BodyLimits, Refusal};
use crate::error::{ApiError, Problem};
use crate::routes::media::UploadLimits;

/// The protocol version spoken.
const TUS_VERSION: &str = "1.0.0";
/// The extensions supported, as `Tus-Extension` lists them.
const TUS_EXTENSIONS: &str =
    "creation,creation-with-upload,creation-defer-length,termination,expiration,checksum";
/// The body type of `PATCH` (and of a creation with upload).
const OFFSET_OCTET_STREAM: &str = "application/offset+octet-stream";
/// Chunks in flight between the connection and the store.
const CHANNEL_CAPACITY: usize = 4;

/// Registers the routes. Before the media routes: `tus` is not a media id.
pub fn config(cfg: &mut web::ServiceConfig) {
    for collection in [
        "/events/{event_id}/media/tus",
        "/events/{event_id}/media/tus/",
    ] {
        cfg.route(collection, web::post().to(create_upload))
            .route(collection, web::method(Method::OPTIONS).to(options));
    }
    cfg.route(
        "/events/{event_id}/media/tus/{upload_id}",
        web::head().to(upload_status),
    )
    .route(
        "/events/{event_id}/media/tus/{upload_id}",
        web::patch().to(append_chunk),
    )
    .route(
        "/events/{event_id}/media/tus/{upload_id}",
        web::delete().to(terminate_upload),
    )
    .route(
        "/events/{event_id}/media/tus/{upload_id}",
        web::method(Method::OPTIONS).to(options),
    );
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

fn header_u64(headers: &HeaderMap, name: &'static str) -> Result<Option<u64>, TusError> {
    header_str(headers, name)
        .map(|value| {
            value
                .trim()
                .parse::<u64>()
                .map_err(|_| TusError::BadHeader(format!("{name} must be a non-negative integer")))
        })
        .transpose()
}

/// Adds the headers every tus answer carries.
fn tus_headers(mut response: HttpResponse) -> HttpResponse {
    let headers = response.headers_mut();
    headers.insert(
        HeaderName::from_static("tus-resumable"),
        HeaderValue::from_static(TUS_VERSION),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// A tus error as a problem, with the protocol's statuses for its own cases.
fn tus_error(error: TusError) -> HttpResponse {
    let response = match error {
        TusError::Media(error) => ApiError::Media(error).error_response(),
        TusError::OffsetMismatch { .. } => {
            Problem::new(StatusCode::CONFLICT, error.to_string()).response()
        }
        TusError::ChecksumMismatch => {
            let status = StatusCode::from_u16(460).unwrap_or(StatusCode::BAD_REQUEST);
            Problem::new(status, error.to_string()).response()
        }
        TusError::BeyondLength { .. } => {
            Problem::new(StatusCode::PAYLOAD_TOO_LARGE, error.to_string()).response()
        }
        TusError::Locked => {
            let mut response = Problem::new(StatusCode::LOCKED, error.to_string()).response();
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            response
        }
        other => Problem::new(StatusCode::BAD_REQUEST, other.to_string()).response(),
    };
    tus_headers(response)
}

/// The `412` answer, unless the request speaks tus 1.0.0.
fn check_resumable(req: &HttpRequest) -> Option<HttpResponse> {
    match header_str(req.headers(), "tus-resumable") {
        Some(version) if version.trim() == TUS_VERSION => None,
        _ => {
            let mut response = Problem::new(
                StatusCode::PRECONDITION_FAILED,
                format!("this server speaks tus {TUS_VERSION}: send Tus-Resumable: {TUS_VERSION}"),
            )
            .response();
            response.headers_mut().insert(
                HeaderName::from_static("tus-version"),
                HeaderValue::from_static(TUS_VERSION),
            );
            Some(tus_headers(response))
        }
    }
}

fn status_headers(mut response: HttpResponse, status: &TusStatus) -> HttpResponse {
    let headers = response.headers_mut();
    let mut set = |name: &'static str, value: String| {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    };
    set("upload-offset", status.offset.to_string());
    match status.length {
        Some(length) => set("upload-length", length.to_string()),
        None => set("upload-defer-length", "1".to_owned()),
    }
    match &status.media {
        Some(media) => set("upload-media-id", media.id.to_string()),
        None => set("upload-expires", http_date(status.expires_at)),
    }
    tus_headers(response)
}

fn http_date(at: DateTime<Utc>) -> String {
    at.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

/// Protocol discovery: version, extensions, size limit, checksum algorithms. No auth and no
/// `Tus-Resumable` needed, as the protocol says.
#[utoipa::path(
    options, path = "/api/v1/events/{event_id}/media/tus", tag = "tus",
    params(("event_id" = uuid::Uuid, Path, description = "Event id")),
    responses((status = 204, description = "What the server supports", headers(
        ("Tus-Resumable" = String), ("Tus-Version" = String), ("Tus-Extension" = String),
        ("Tus-Max-Size" = u64), ("Tus-Checksum-Algorithm" = String))))
)]
pub async fn options(service: web::Data<MediaService>) -> HttpResponse {
    let mut response = HttpResponse::NoContent().finish();
    let headers = response.headers_mut();
    headers.insert(
        HeaderName::from_static("tus-version"),
        HeaderValue::from_static(TUS_VERSION),
    );
    headers.insert(
        HeaderName::from_static("tus-extension"),
        HeaderValue::from_static(TUS_EXTENSIONS),
    );
    headers.insert(
        HeaderName::from_static("tus-checksum-algorithm"),
        HeaderValue::from_static(TUS_CHECKSUM_ALGORITHMS),
    );
    if let Ok(max) = HeaderValue::from_str(&service.tus_max_size().to_string()) {
        headers.insert(HeaderName::from_static("tus-max-size"), max);
    }
    tus_headers(response)
}

/// Creates an upload (`Upload-Length`, or `Upload-Defer-Length: 1`), with its first bytes when
/// the body is `application/offset+octet-stream` (creation-with-upload).
///
/// `Upload-Metadata` (base64 values) names the file (`filename` or `name`), its type
/// (`content_type`, `filetype` or `type`), and optionally `title`, `description`, `tags`; they
/// are checked as a form's fields are. The answer's `Location` is the upload's URL.
#[utoipa::path(
    post, path = "/api/v1/events/{event_id}/media/tus", tag = "tus",
    params(
        ("event_id" = uuid::Uuid, Path, description = "Event id"),
        ("Tus-Resumable" = String, Header, description = "1.0.0"),
        ("Upload-Length" = Option<u64>, Header, description = "The file's length"),
        ("Upload-Defer-Length" = Option<String>, Header, description = "1 when the length comes later"),
        ("Upload-Metadata" = Option<String>, Header, description = "key base64 pairs, comma separated"),
    ),
    request_body(content = Vec<u8>, description = "Optional first bytes", content_type = "application/offset+octet-stream"),
    responses(
        (status = 201, description = "Created", headers(("Location" = String), ("Upload-Offset" = u64), ("Upload-Expires" = String), ("Upload-Media-Id" = String))),
        (status = 400, description = "Malformed tus headers", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such event of the caller", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "Not tus 1.0.0", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Larger than MAX_FILE_SIZE", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "A type refused, or an extension that does not match it", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields or metadata", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn create_upload(
    req: HttpRequest,
    user: AuthUser,
    path: web::Path<EventId>,
    service: web::Data<MediaService>,
    limits: web::Data<UploadLimits>,
    payload: web::Payload,
) -> HttpResponse {
    if let Some(refused) = check_resumable(&req) {
        return refused;
    }
    let event_id = path.into_inner();
    let headers = req.headers();
    let length = match header_u64(headers, "upload-length") {
        Ok(length) => length,
        Err(error) => return tus_error(error),
    };
    let deferred = header_str(headers, "upload-defer-length").map(str::trim) == Some("1");
    if length.is_none() && !deferred {
        return tus_error(TusError::BadHeader(
            "send Upload-Length, or Upload-Defer-Length: 1".to_owned(),
        ));
    }
    let request = TusCreate {
        length,
        metadata: header_str(headers, "upload-metadata").map(str::to_owned),
    };
    let created = match service.create_tus_upload(&user.0, event_id, request).await {
        Ok(created) => created,
        Err(error) => return tus_error(error),
    };
    let location = format!("/api/v1/events/{event_id}/media/tus/{}", created.id);
    let with_body = is_offset_stream(headers)
        && header_u64(headers, "content-length")
            .ok()
            .flatten()
            .is_none_or(|len| len > 0);
    let status = if with_body {
        match append(
            &req, &user, event_id, created.id, &service, &limits, payload, 0,
        )
        .await
        {
            Ok(status) => status,
            // The upload exists; the client learns where it stands with HEAD.
            Err(Appended::Tus(TusError::Media(plugs_media::MediaError::UploadInterrupted {
                ..
            }))) => created,
            Err(error) => return error.response(),
        }
    } else {
        created
    };
    status_headers(
        HttpResponse::Created()
            .insert_header((header::LOCATION, location))
            .finish(),
        &status,
    )
}

fn is_offset_stream(headers: &HeaderMap) -> bool {
    header_str(headers, "content-type").is_some_and(|value| {
        value
            .split(';')
            .next()
            .is_some_and(|kind| kind.trim().eq_ignore_ascii_case(OFFSET_OCTET_STREAM))
    })
}

/// Where an upload stands: `Upload-Offset`, its length, metadata and expiry; a finished one
/// names its media in `Upload-Media-Id`.
#[utoipa::path(
    head, path = "/api/v1/events/{event_id}/media/tus/{upload_id}", tag = "tus",
    params(("event_id" = uuid::Uuid, Path, description = "Event id"), ("upload_id" = uuid::Uuid, Path, description = "Upload id"),
        ("Tus-Resumable" = String, Header, description = "1.0.0")),
    responses(
        (status = 200, description = "Where the upload stands", headers(("Upload-Offset" = u64), ("Upload-Length" = u64), ("Upload-Metadata" = String), ("Upload-Expires" = String), ("Upload-Media-Id" = String))),
        (status = 401, description = "No valid token"),
        (status = 404, description = "No such upload of the caller"),
        (status = 410, description = "The upload expired"),
        (status = 412, description = "Not tus 1.0.0"),
    ),
    security(("bearer" = []))
)]
pub async fn upload_status(
    req: HttpRequest,
    user: AuthUser,
    path: web::Path<(EventId, MediaId)>,
    service: web::Data<MediaService>,
) -> HttpResponse {
    if let Some(refused) = check_resumable(&req) {
        return refused;
    }
    let (event_id, upload_id) = path.into_inner();
    match service.tus_status(&user.0, event_id, upload_id).await {
        Ok(status) => {
            let mut response = status_headers(HttpResponse::Ok().finish(), &status);
            if let Some(metadata) = &status.metadata
                && let Ok(value) = HeaderValue::from_str(metadata)
            {
                response
                    .headers_mut()
                    .insert(HeaderName::from_static("upload-metadata"), value);
            }
            response
        }
        Err(error) => tus_error(error),
    }
}

/// Appends bytes at `Upload-Offset`. With `Upload-Checksum` (sha1 or sha256), bytes that do not
/// match are discarded (460). The answer's `Upload-Offset` is where the upload stands; the last
/// bytes make it media, named in `Upload-Media-Id`.
#[utoipa::path(
    patch, path = "/api/v1/events/{event_id}/media/tus/{upload_id}", tag = "tus",
    params(("event_id" = uuid::Uuid, Path, description = "Event id"), ("upload_id" = uuid::Uuid, Path, description = "Upload id"),
        ("Tus-Resumable" = String, Header, description = "1.0.0"),
        ("Upload-Offset" = u64, Header, description = "Where the bytes go"),
        ("Upload-Length" = Option<u64>, Header, description = "The length, if it was deferred"),
        ("Upload-Checksum" = Option<String>, Header, description = "`sha1 <base64>` or `sha256 <base64>`")),
    request_body(content = Vec<u8>, description = "The bytes", content_type = "application/offset+octet-stream"),
    responses(
        (status = 204, description = "Appended", headers(("Upload-Offset" = u64), ("Upload-Expires" = String), ("Upload-Media-Id" = String))),
        (status = 400, description = "Malformed tus headers", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such upload of the caller", body = Problem, content_type = "application/problem+json"),
        (status = 408, description = "The body went silent for UPLOAD_IDLE_TIMEOUT or arrived slower than UPLOAD_MIN_RATE; the bytes of this request that did not fill a whole part are discarded", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Upload-Offset is not where the upload stands", body = Problem, content_type = "application/problem+json"),
        (status = 410, description = "The upload expired", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "Not tus 1.0.0", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Beyond Upload-Length or MAX_FILE_SIZE", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not application/offset+octet-stream, or bytes not of the declared type", body = Problem, content_type = "application/problem+json"),
        (status = 423, description = "Another request is appending to this upload right now: retry after Retry-After (HEAD first)", body = Problem, content_type = "application/problem+json", headers(("Retry-After" = u64))),
        (status = 460, description = "Checksum mismatch: the bytes were discarded", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn append_chunk(
    req: HttpRequest,
    user: AuthUser,
    path: web::Path<(EventId, MediaId)>,
    service: web::Data<MediaService>,
    limits: web::Data<UploadLimits>,
    payload: web::Payload,
) -> HttpResponse {
    if let Some(refused) = check_resumable(&req) {
        return refused;
    }
    if !is_offset_stream(req.headers()) {
        return tus_headers(
            ApiError::UnsupportedMediaType(format!(
                "PATCH needs Content-Type: {OFFSET_OCTET_STREAM}"
            ))
            .error_response(),
        );
    }
    let offset = match header_u64(req.headers(), "upload-offset") {
        Ok(Some(offset)) => offset,
        Ok(None) => return tus_error(TusError::BadHeader("Upload-Offset is required".to_owned())),
        Err(error) => return tus_error(error),
    };
    let (event_id, upload_id) = path.into_inner();
    match append(
        &req, &user, event_id, upload_id, &service, &limits, payload, offset,
    )
    .await
    {
        Ok(status) => status_headers(HttpResponse::NoContent().finish(), &status),
        Err(error) => error.response(),
    }
}

/// Why appending failed: the protocol's or the service's reasons, or the body guard's.
enum Appended {
    Tus(TusError),
    /// The body guard cut the body: 408 (silent, too slow) or 413 (too large), as for a form.
    Body(Refusal),
}

impl From<TusError> for Appended {
    fn from(error: TusError) -> Self {
        Self::Tus(error)
    }
}

impl Appended {
    fn response(self) -> HttpResponse {
        match self {
            Self::Tus(error) => tus_error(error),
            Self::Body(refusal) => tus_headers(ApiError::BodyRefused(refusal).error_response()),
        }
    }
}

/// Streams the request body to the service. The payload is not `Send` and the store wants a
/// `Send` stream: the body is pumped through a small bounded channel in this task, as a form's
/// file is, and the body guard's idle timeout and minimum rate apply.
#[allow(clippy::too_many_arguments)]
async fn append(
    req: &HttpRequest,
    user: &AuthUser,
    event_id: EventId,
    upload_id: MediaId,
    service: &MediaService,
    limits: &UploadLimits,
    payload: web::Payload,
    offset: u64,
) -> Result<TusStatus, Appended> {
    let headers = req.headers();
    let checksum = header_str(headers, "upload-checksum")
        .map(TusChecksum::parse)
        .transpose()?;
    let length = header_u64(headers, "upload-length")?;
    let content_length = header_u64(headers, "content-length")?;
    let (guard, mut body) = BodyGuard::wrap(
        payload,
        BodyLimits {
            form_overhead: 0,
            max_file_size: limits.max_file_size,
            idle_timeout: limits.idle_timeout,
            min_bytes_per_sec: limits.min_bytes_per_sec,
            rate_window: limits.rate_window,
        },
    );
    guard.file_started();
    let (sender, mut receiver) =
        tokio::sync::mpsc::channel::<Result<Bytes, StoreError>>(CHANNEL_CAPACITY);
    let stream: ByteStream = futures::stream::poll_fn(move |cx| receiver.poll_recv(cx)).boxed();
    let pump = async move {
        while let Some(item) = body.next().await {
            let item = item.map_err(|err| StoreError::Body {
                source: Box::new(std::io::Error::other(err.to_string())),
            });
            let failed = item.is_err();
            if sender.send(item).await.is_err() || failed {
                break;
            }
        }
    };
    let chunk = TusChunk {
        offset,
        length,
        checksum,
        content_length,
        body: stream,
    };
    let (_, result) = futures::join!(
        pump,
        service.append_tus_chunk(&user.0, event_id, upload_id, chunk)
    );
    match (result, guard.refusal()) {
        (Err(_), Some(refusal)) => Err(Appended::Body(refusal)),
        (result, _) => Ok(result?),
    }
}

/// Ends an unfinished upload: its staged bytes, multipart upload and record are removed.
#[utoipa::path(
    delete, path = "/api/v1/events/{event_id}/media/tus/{upload_id}", tag = "tus",
    params(("event_id" = uuid::Uuid, Path, description = "Event id"), ("upload_id" = uuid::Uuid, Path, description = "Upload id"),
        ("Tus-Resumable" = String, Header, description = "1.0.0")),
    responses(
        (status = 204, description = "Terminated"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such upload in flight of the caller", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "Not tus 1.0.0", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn terminate_upload(
    req: HttpRequest,
    user: AuthUser,
    path: web::Path<(EventId, MediaId)>,
    service: web::Data<MediaService>,
) -> HttpResponse {
    if let Some(refused) = check_resumable(&req) {
        return refused;
    }
    let (event_id, upload_id) = path.into_inner();
    match service
        .terminate_tus_upload(&user.0, event_id, upload_id)
        .await
    {
        Ok(()) => tus_headers(HttpResponse::NoContent().finish()),
        Err(error) => tus_error(error),
    }
}
