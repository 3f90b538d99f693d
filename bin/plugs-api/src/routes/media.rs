//! `/api/v1/events/{event_id}/media`: upload, list, get, download, stream, presign, delete.

use std::time::Duration;

use actix_multipart::{Field, Multipart};
use actix_web::body::SizedStream;
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt as _;
use plugs_domain::{EventId, EventMedia, MediaId};
use plugs_media::{MediaService, UploadRequest};
use plugs_storage::{ByteRange, ByteStream, GetOptions, StoreError};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::auth::AuthUser;
use crate::error::{ApiError, Problem};
use crate::metrics::Metrics;
use crate::routes::events::PageQuery;

/// Room for the multipart framing and text fields on top of the file-size limit, when judging a
/// request's `Content-Length` before reading it.
pub const MULTIPART_OVERHEAD: u64 = 64 * 1024;
/// Largest accepted text field (title, description, tags), in bytes.
const TEXT_FIELD_LIMIT: usize = 16 * 1024;
/// Chunks in flight between the multipart reader and the store: bounds memory, gives backpressure.
const CHANNEL_CAPACITY: usize = 4;

/// Upload limits, shared with the handlers.
#[derive(Debug, Clone, Copy)]
pub struct UploadLimits {
    /// Largest accepted file, in bytes.
    pub max_file_size: u64,
}

/// A media record as the API shows it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MediaBody {
    /// Identifier.
    pub id: Uuid,
    /// The event it belongs to.
    pub event_id: Uuid,
    /// Optional title.
    pub title: Option<String>,
    /// Optional description.
    pub description: Option<String>,
    /// Normalised tags (trimmed, lower case, unique).
    pub tags: Vec<String>,
    /// The client's file name, sanitised.
    pub original_filename: Option<String>,
    /// The type sniffed from the bytes.
    #[schema(example = "image/png")]
    pub content_type: String,
    /// Size in bytes.
    pub size_bytes: u64,
    /// Hex SHA-256 of the bytes.
    pub sha256: Option<String>,
    /// Object key in the store.
    pub s3_key: String,
    /// Where to fetch the bytes: the CDN URL when one is configured, else the download route.
    pub url: String,
    /// The uploader's user id.
    pub uploaded_by: String,
    /// Upload time (UTC).
    pub created_at: DateTime<Utc>,
}

impl MediaBody {
    fn new(media: EventMedia, service: &MediaService) -> Self {
        let url = service.media_url(&media);
        Self {
            id: media.id.as_uuid(),
            event_id: media.event_id.as_uuid(),
            title: media.title,
            description: media.description,
            tags: media.tags,
            original_filename: media.original_filename,
            content_type: media.content_type,
            size_bytes: media.size_bytes,
            sha256: media.sha256,
            s3_key: media.s3_key,
            url,
            uploaded_by: media.uploaded_by.into(),
            created_at: media.created_at,
        }
    }
}

/// A page of media, newest first.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MediaPage {
    /// The media.
    pub items: Vec<MediaBody>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// A presigned download URL.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PresignedUrlBody {
    /// The URL; works without other credentials until `expires_at`.
    pub url: String,
    /// When it stops working (UTC).
    pub expires_at: DateTime<Utc>,
}

/// The multipart form of an upload. Text fields must come before `file`; `file` must be last.
#[derive(Debug, ToSchema)]
#[allow(
    dead_code,
    reason = "describes the multipart form in the OpenAPI document"
)]
pub struct UploadForm {
    /// Optional title (at most 200 characters). Must precede `file`.
    title: Option<String>,
    /// Optional description (at most 2000 characters). Must precede `file`.
    description: Option<String>,
    /// Optional comma-separated tags. Must precede `file`.
    tags: Option<String>,
    /// Optional: the file's length in bytes. Must precede `file`. When given, a file of any
    /// other length is refused (422) and nothing is kept, a size above MAX_FILE_SIZE is refused
    /// (413) before the file is read, and S3 receives a file above one part (8 MiB) as one
    /// streamed PutObject instead of a multipart upload.
    #[schema(minimum = 1)]
    size: Option<u64>,
    /// The file; its part `Content-Type`, when given, must match the content. Must be the last part.
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
}

/// Query of the presign route.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PresignQuery {
    /// Lifetime in seconds (default PRESIGN_TTL; longer than 7 days is cut to 7 days).
    pub expires_in: Option<u64>,
}

type MediaPath = web::Path<(EventId, MediaId)>;

/// Registers the routes.
pub fn config(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/events/{event_id}/media")
            .route(web::post().to(upload_media))
            .route(web::get().to(list_media)),
    )
    .service(
        web::resource("/events/{event_id}/media/{media_id}")
            .route(web::get().to(get_media))
            .route(web::delete().to(delete_media)),
    )
    .route(
        "/events/{event_id}/media/{media_id}/download",
        web::get().to(download_media),
    )
    .route(
        "/events/{event_id}/media/{media_id}/stream",
        web::get().to(stream_media),
    )
    .route(
        "/events/{event_id}/media/{media_id}/url",
        web::get().to(presign_media),
    );
}

/// Uploads a file to one of the caller's events.
///
/// `multipart/form-data` with the optional text fields `title`, `description`, `tags` (comma
/// separated) and `size` (the file's length in bytes) first and the `file` part last; a part
/// after `file` is refused with 400 and nothing is kept. The file streams to the store; its type
/// is decided by its content.
#[utoipa::path(
    post, path = "/api/v1/events/{event_id}/media", tag = "media",
    params(("event_id" = Uuid, Path, description = "Event id")),
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    responses(
        (status = 201, description = "Stored", body = MediaBody, headers(("Location" = String))),
        (status = 400, description = "Malformed multipart, interrupted upload, or a part after `file`", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such event of the caller", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "File larger than MAX_FILE_SIZE", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not multipart/form-data, or a file type refused or not matching its declared type or extension", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields, no file, two files, unknown field, an empty file, or a file whose length is not its declared `size`", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database or store unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn upload_media(
    req: HttpRequest,
    user: AuthUser,
    path: web::Path<EventId>,
    service: web::Data<MediaService>,
    limits: web::Data<UploadLimits>,
    metrics: Option<web::Data<Metrics>>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let event_id = path.into_inner();
    let limit = limits.max_file_size;
    let content_length = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if content_length.is_some_and(|len| len > limit.saturating_add(MULTIPART_OVERHEAD)) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    let is_form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("multipart/form-data")
        });
    if !is_form {
        return Err(ApiError::UnsupportedMediaType(
            "expected a multipart/form-data body".to_owned(),
        ));
    }

    let mut multipart = Multipart::new(req.headers(), payload);
    let mut request = UploadRequest::default();
    let media = loop {
        let field = match multipart.next().await {
            Some(Ok(field)) => field,
            Some(Err(err)) => {
                return Err(ApiError::BadRequest(format!(
                    "malformed multipart body: {err}"
                )));
            }
            None => {
                return Err(ApiError::Unprocessable(
                    "the form has no `file` part".to_owned(),
                ));
            }
        };
        let name = field.name().unwrap_or_default().to_owned();
        match name.as_str() {
            "title" => set_once(
                &mut request.title,
                "title",
                read_text(field, "title").await?,
            )?,
            "description" => set_once(
                &mut request.description,
                "description",
                read_text(field, "description").await?,
            )?,
            "tags" => set_once(&mut request.tags, "tags", read_text(field, "tags").await?)?,
            "size" => {
                let text = read_text(field, "size").await?;
                let size = text.trim().parse::<u64>().map_err(|_| {
                    ApiError::Unprocessable(
                        "the form field `size` must be the file's length in bytes".to_owned(),
                    )
                })?;
                if request.declared_size.replace(size).is_some() {
                    return Err(ApiError::Unprocessable(
                        "the form field `size` is given twice".to_owned(),
                    ));
                }
            }
            "file" => {
                request.filename = field
                    .content_disposition()
                    .and_then(|cd| cd.get_filename())
                    .map(str::to_owned);
                request.declared_content_type = field.content_type().map(ToString::to_string);
                break upload_field(
                    &service,
                    &user,
                    event_id,
                    request,
                    field,
                    metrics.as_ref().map(|m| m.get_ref()),
                )
                .await?;
            }
            other => {
                return Err(ApiError::Unprocessable(format!(
                    "unknown form field {:?}",
                    truncate(other, 64)
                )));
            }
        }
    };

    // The file must be the last part: anything after it could not have been validated with the
    // upload, so the upload is undone rather than half-honoured.
    let trailing = match multipart.next().await {
        None => None,
        Some(Ok(field)) if field.name() == Some("file") => Some(ApiError::Unprocessable(
            "only one `file` part is accepted".to_owned(),
        )),
        Some(Ok(_)) => Some(ApiError::BadRequest(
            "the `file` part must be the last part of the form".to_owned(),
        )),
        Some(Err(err)) => Some(ApiError::BadRequest(format!(
            "malformed multipart body: {err}"
        ))),
    };
    if let Some(error) = trailing {
        service.delete_media(&user.0, event_id, media.id).await?;
        return Err(error);
    }

    let location = format!("/api/v1/events/{}/media/{}", media.event_id, media.id);
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, location))
        .json(MediaBody::new(media, &service)))
}

fn set_once(slot: &mut Option<String>, name: &str, value: String) -> Result<(), ApiError> {
    if slot.is_some() {
        return Err(ApiError::Unprocessable(format!(
            "the form field `{name}` is given twice"
        )));
    }
    *slot = Some(value);
    Ok(())
}

async fn read_text(mut field: Field, name: &str) -> Result<String, ApiError> {
    let bytes = match field.bytes(TEXT_FIELD_LIMIT).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(err)) => {
            return Err(ApiError::BadRequest(format!(
                "malformed multipart body: {err}"
            )));
        }
        Err(_) => {
            return Err(ApiError::Unprocessable(format!(
                "the form field `{name}` is longer than {TEXT_FIELD_LIMIT} bytes"
            )));
        }
    };
    String::from_utf8(bytes.to_vec())
        .map_err(|_| ApiError::Unprocessable(format!("the form field `{name}` is not UTF-8")))
}

/// Streams the `file` part to the service. `Field` is not `Send` and the store wants a `Send`
/// stream, so the part is pumped through a small bounded channel while the service reads the
/// other end; both run in this task, so nothing is spawned and the channel gives backpressure.
async fn upload_field(
    service: &MediaService,
    user: &AuthUser,
    event_id: EventId,
    request: UploadRequest,
    mut field: Field,
    metrics: Option<&Metrics>,
) -> Result<EventMedia, ApiError> {
    let (sender, mut receiver) =
        tokio::sync::mpsc::channel::<Result<Bytes, StoreError>>(CHANNEL_CAPACITY);
    // `poll_recv` keeps answering `None` once closed, so the stream is safe to poll again.
    let body: ByteStream = futures::stream::poll_fn(move |cx| receiver.poll_recv(cx)).boxed();
    let pump = async move {
        while let Some(chunk) = field.next().await {
            let item = match chunk {
                Ok(bytes) => {
                    if let Some(metrics) = metrics {
                        metrics.upload_bytes.inc_by(bytes.len() as u64);
                    }
                    Ok(bytes)
                }
                // The multipart error is not `Send`; its message is all the service needs.
                Err(err) => Err(StoreError::Body {
                    source: Box::new(std::io::Error::other(err.to_string())),
                }),
            };
            let failed = item.is_err();
            // A closed channel means the service stopped reading (refused type, too large).
            if sender.send(item).await.is_err() || failed {
                break;
            }
        }
    };
    let (_, result) = futures::join!(pump, service.upload(&user.0, event_id, request, body));
    Ok(result?)
}

/// Lists an event's media, newest first.
#[utoipa::path(
    get, path = "/api/v1/events/{event_id}/media", tag = "media",
    params(("event_id" = Uuid, Path, description = "Event id"), PageQuery),
    responses(
        (status = 200, description = "A page of media", body = MediaPage),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such event of the caller", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid limit or cursor", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn list_media(
    user: AuthUser,
    path: web::Path<EventId>,
    service: web::Data<MediaService>,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let page = service
        .list_media(&user.0, path.into_inner(), query.into_inner().into())
        .await?;
    Ok(HttpResponse::Ok().json(MediaPage {
        items: page
            .items
            .into_iter()
            .map(|m| MediaBody::new(m, &service))
            .collect(),
        next_cursor: page.next_cursor,
    }))
}

/// One media record.
#[utoipa::path(
    get, path = "/api/v1/events/{event_id}/media/{media_id}", tag = "media",
    params(("event_id" = Uuid, Path, description = "Event id"), ("media_id" = Uuid, Path, description = "Media id")),
    responses(
        (status = 200, description = "The record", body = MediaBody),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such media of the caller", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn get_media(
    user: AuthUser,
    path: MediaPath,
    service: web::Data<MediaService>,
) -> Result<HttpResponse, ApiError> {
    let (event_id, media_id) = path.into_inner();
    let media = service.get_media(&user.0, event_id, media_id).await?;
    Ok(HttpResponse::Ok().json(MediaBody::new(media, &service)))
}

/// Deletes a media: its object and its record.
#[utoipa::path(
    delete, path = "/api/v1/events/{event_id}/media/{media_id}", tag = "media",
    params(("event_id" = Uuid, Path, description = "Event id"), ("media_id" = Uuid, Path, description = "Media id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such media of the caller", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database or store unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn delete_media(
    user: AuthUser,
    path: MediaPath,
    service: web::Data<MediaService>,
) -> Result<HttpResponse, ApiError> {
    let (event_id, media_id) = path.into_inner();
    service.delete_media(&user.0, event_id, media_id).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// The bytes as an attachment (`Content-Disposition: attachment`), with ranges and ETags.
#[utoipa::path(
    get, path = "/api/v1/events/{event_id}/media/{media_id}/download", tag = "media",
    params(
        ("event_id" = Uuid, Path, description = "Event id"), ("media_id" = Uuid, Path, description = "Media id"),
        ("Range" = Option<String>, Header, description = "One range, `bytes=start-end`; several ranges are ignored (200)"),
        ("If-None-Match" = Option<String>, Header, description = "An ETag from an earlier answer"),
    ),
    responses(
        (status = 200, description = "The bytes", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 206, description = "The requested range", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 304, description = "Not modified"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such media of the caller", body = Problem, content_type = "application/problem+json"),
        (status = 416, description = "Range not satisfiable (`Content-Range: bytes */size`)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn download_media(
    req: HttpRequest,
    user: AuthUser,
    path: MediaPath,
    service: web::Data<MediaService>,
) -> Result<HttpResponse, ApiError> {
    let (event_id, media_id) = path.into_inner();
    serve_bytes(&req, &service, &user, event_id, media_id, "attachment").await
}

/// The bytes inline, for players and `<img>`, with ranges and ETags.
#[utoipa::path(
    get, path = "/api/v1/events/{event_id}/media/{media_id}/stream", tag = "media",
    params(
        ("event_id" = Uuid, Path, description = "Event id"), ("media_id" = Uuid, Path, description = "Media id"),
        ("Range" = Option<String>, Header, description = "One range, `bytes=start-end`; several ranges are ignored (200)"),
        ("If-None-Match" = Option<String>, Header, description = "An ETag from an earlier answer"),
    ),
    responses(
        (status = 200, description = "The bytes", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 206, description = "The requested range", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 304, description = "Not modified"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such media of the caller", body = Problem, content_type = "application/problem+json"),
        (status = 416, description = "Range not satisfiable (`Content-Range: bytes */size`)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn stream_media(
    req: HttpRequest,
    user: AuthUser,
    path: MediaPath,
    service: web::Data<MediaService>,
) -> Result<HttpResponse, ApiError> {
    let (event_id, media_id) = path.into_inner();
    serve_bytes(&req, &service, &user, event_id, media_id, "inline").await
}

async fn serve_bytes(
    req: &HttpRequest,
    service: &MediaService,
    user: &AuthUser,
    event_id: EventId,
    media_id: MediaId,
    disposition: &str,
) -> Result<HttpResponse, ApiError> {
    let mut options = GetOptions::default();
    options.range = req
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_range);
    let if_none_match = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    // The whole list goes to the store, which compares weakly as HTTP does for GET.
    options.if_none_match = if_none_match.filter(|v| !v.is_empty()).map(str::to_owned);
    let requested_range = options.range.is_some();
    let (media, object) = match service
        .open_media(&user.0, event_id, media_id, options)
        .await
    {
        Err(plugs_media::MediaError::NotModified) => {
            let mut response = HttpResponse::NotModified();
            if let Some(etag) = if_none_match.and_then(single_etag) {
                response.insert_header((header::ETAG, etag));
            }
            return Ok(response.finish());
        }
        other => other?,
    };
    let range = object.range.clone();
    let length = range.end.saturating_sub(range.start);
    let mut response = if requested_range {
        HttpResponse::PartialContent()
    } else {
        HttpResponse::Ok()
    };
    if requested_range {
        response.insert_header((
            header::CONTENT_RANGE,
            format!(
                "bytes {}-{}/{}",
                range.start,
                range.end.saturating_sub(1),
                object.meta.size
            ),
        ));
    }
    let fallback_name = format!("{}", media.id);
    let filename = media.original_filename.as_deref().unwrap_or(&fallback_name);
    response
        .insert_header((header::CONTENT_TYPE, media.content_type.clone()))
        .insert_header((header::ETAG, object.meta.etag.clone()))
        .insert_header((header::ACCEPT_RANGES, "bytes"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::CACHE_CONTROL, "private"))
        .insert_header((
            header::CONTENT_DISPOSITION,
            content_disposition(disposition, filename),
        ));
    Ok(response.body(SizedStream::new(length, object.body)))
}

/// A presigned, expiring GET URL for the media's bytes (no other credentials needed).
#[utoipa::path(
    get, path = "/api/v1/events/{event_id}/media/{media_id}/url", tag = "media",
    params(("event_id" = Uuid, Path, description = "Event id"), ("media_id" = Uuid, Path, description = "Media id"), PresignQuery),
    responses(
        (status = 200, description = "The URL", body = PresignedUrlBody),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such media of the caller", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn presign_media(
    user: AuthUser,
    path: MediaPath,
    service: web::Data<MediaService>,
    query: web::Query<PresignQuery>,
) -> Result<HttpResponse, ApiError> {
    let (event_id, media_id) = path.into_inner();
    let ttl = match query.expires_in {
        Some(0) => {
            return Err(ApiError::Unprocessable(
                "expires_in must be at least 1 second".to_owned(),
            ));
        }
        other => other.map(Duration::from_secs),
    };
    let presigned = service
        .presign_download(&user.0, event_id, media_id, ttl)
        .await?;
    Ok(HttpResponse::Ok().json(PresignedUrlBody {
        url: presigned.url,
        expires_at: presigned.expires_at,
    }))
}

/// Parses a `Range` header with one range. Several ranges, other units and malformed values
/// yield `None`: RFC 9110 lets a server ignore `Range` and answer the whole representation.
pub fn parse_range(value: &str) -> Option<ByteRange> {
    let spec = value.trim().strip_prefix("bytes=")?.trim();
    if spec.contains(',') {
        return None;
    }
    let (start, end) = spec.split_once('-')?;
    let (start, end) = (start.trim(), end.trim());
    let number = |text: &str| {
        if text.bytes().all(|b| b.is_ascii_digit()) {
            text.parse::<u64>().ok()
        } else {
            None
        }
    };
    match (start.is_empty(), end.is_empty()) {
        (false, true) => Some(ByteRange::From {
            start: number(start)?,
        }),
        (true, false) => Some(ByteRange::Suffix { len: number(end)? }),
        (false, false) => {
            let (start, last) = (number(start)?, number(end)?);
            (last >= start).then(|| ByteRange::Bounded {
                start,
                end: last.saturating_add(1),
            })
        }
        (true, true) => None,
    }
}

/// The entity tag of an `If-None-Match` holding exactly one, to repeat it on a 304 (with a list
/// or `*` the matching tag is unknown here, and a 304 may omit it).
fn single_etag(value: &str) -> Option<String> {
    let tag = value.trim();
    (!tag.is_empty() && tag != "*" && !tag.contains(',')).then(|| tag.to_owned())
}

/// `Content-Disposition` per RFC 6266: a quoted ASCII fallback without quotes, backslashes or
/// control characters, plus the exact name percent-encoded in `filename*`.
pub fn content_disposition(disposition: &str, filename: &str) -> String {
    let fallback: String = filename
        .chars()
        .filter(|c| !c.is_control() && *c != '"' && *c != '\\')
        .map(|c| if c.is_ascii() { c } else { '_' })
        .collect();
    let fallback = if fallback.trim().is_empty() {
        "download".to_owned()
    } else {
        fallback
    };
    let mut encoded = String::new();
    for byte in filename.bytes() {
        if byte.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    format!("{disposition}; filename=\"{fallback}\"; filename*=UTF-8''{encoded}")
}

fn truncate(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_as_http_defines_them() {
        assert_eq!(
            parse_range("bytes=0-99"),
            Some(ByteRange::Bounded { start: 0, end: 100 })
        );
        assert_eq!(
            parse_range("bytes=100-"),
            Some(ByteRange::From { start: 100 })
        );
        assert_eq!(
            parse_range("bytes=-50"),
            Some(ByteRange::Suffix { len: 50 })
        );
        assert_eq!(parse_range("bytes=0-1,5-6"), None, "multi-range is ignored");
        assert_eq!(parse_range("bytes=5-1"), None);
        assert_eq!(parse_range("items=0-1"), None);
        assert_eq!(parse_range("bytes=-"), None);
        assert_eq!(parse_range("bytes=+1-2"), None);
    }

    #[test]
    fn content_disposition_is_safe_for_hostile_names() {
        let header = content_disposition("attachment", "evil\"\r\nSet-Cookie: x=1\\ résumé.png");
        assert_eq!(
            header,
            "attachment; filename=\"evilSet-Cookie: x=1 r_sum_.png\"; \
             filename*=UTF-8''evil%22%0D%0ASet-Cookie%3A%20x%3D1%5C%20r%C3%A9sum%C3%A9.png"
        );
        assert!(actix_web::http::header::HeaderValue::from_str(&header).is_ok());
    }

    #[test]
    fn a_304_repeats_a_single_etag_only() {
        assert_eq!(single_etag(" \"abc\" "), Some("\"abc\"".to_owned()));
        assert_eq!(single_etag("W/\"abc\""), Some("W/\"abc\"".to_owned()));
        assert_eq!(single_etag("\"abc\", \"def\""), None);
        assert_eq!(single_etag("*"), None);
    }
}
