//! `/api/v1/events/{event_id}/media`: upload, list, get, download, stream, presign, delete.

use std::time::Duration;

use actix_multipart::{Field, Multipart};
use actix_web::body::SizedStream;
use actix_web::http::Method;
use actix_web::http::header::{
    self, ByteRangeSpec, Charset, ContentDisposition, ContentRange, ContentRangeSpec,
    DispositionParam, DispositionType, ETag, EntityTag, ExtendedValue, Header as _, IfNoneMatch,
    IfRange, Range,
};
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder, web};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt as _;
use plugs_domain::{EventId, EventMedia, MediaId, may_run_code};
use plugs_media::{MediaEdit, MediaQuery, MediaService, PageRequest, StagedUpload, UploadRequest};
use plugs_storage::{ByteRange, ByteStream, GetOptions, StoreError, etag_matches};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::auth::AuthUser;
use crate::body_guard::{BodyGuard, BodyLimits};
use crate::error::{ApiError, Problem};
use crate::idempotency;
use crate::metrics::Metrics;
use crate::routes::get_or_head;
use crate::routes::preconditions::{if_match, with_etag};
use plugs_persistence::IdempotencyRepository;

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
    /// An upload whose body sends nothing for this long is abandoned (408, nothing kept).
    pub idle_timeout: Duration,
    /// An upload slower than this many bytes per second over [`UploadLimits::rate_window`] is
    /// abandoned (408, nothing kept); 0 turns the check off.
    pub min_bytes_per_sec: u64,
    /// The window the minimum rate is measured over.
    pub rate_window: Duration,
}

impl UploadLimits {
    /// The defaults (`UPLOAD_IDLE_TIMEOUT` 30 s, `UPLOAD_MIN_RATE` 1024 bytes/s over 30 s) with
    /// this file-size limit.
    pub fn with_max_file_size(max_file_size: u64) -> Self {
        Self {
            max_file_size,
            idle_timeout: Duration::from_secs(30),
            min_bytes_per_sec: 1024,
            rate_window: Duration::from_secs(30),
        }
    }
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
    /// Hex SHA-256 of the bytes stored.
    pub sha256: Option<String>,
    /// Whether the stored original differs from the upload because the GPS position in its
    /// EXIF was blanked (`STRIP_LOCATION`); same size, `sha256` of the stored bytes.
    pub location_stripped: bool,
    /// Object key in the store.
    pub s3_key: String,
    /// Where to fetch the bytes: the CDN URL when one is configured, else the download route.
    pub url: String,
    /// The uploader's user id.
    pub uploaded_by: String,
    /// Upload time (UTC).
    pub created_at: DateTime<Utc>,
    /// The original's width in pixels (orientation applied), once a worker has read it.
    pub width: Option<u32>,
    /// The original's height in pixels (orientation applied), once a worker has read it.
    pub height: Option<u32>,
    /// Where its derived versions (thumbnails, display copy) stand.
    pub processing: crate::routes::variants::ProcessingBody,
    /// Its derived versions, by name.
    pub variants: Vec<crate::routes::variants::VariantBody>,
}

impl MediaBody {
    pub(crate) fn new(media: EventMedia, service: &MediaService) -> Self {
        let url = media_url(&media, service.config().cdn_base_url.as_deref());
        let processing = crate::routes::variants::initial_processing(
            &media.content_type,
            &service.config().external_tools.processable(),
        );
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
            location_stripped: media.location_stripped,
            s3_key: media.s3_key,
            url,
            uploaded_by: media.uploaded_by.into(),
            created_at: media.created_at,
            width: None,
            height: None,
            processing,
            variants: Vec::new(),
        }
    }

    /// [`MediaBody::new`] with what processing knows of the record.
    pub(crate) async fn with_processing(
        media: EventMedia,
        service: &MediaService,
    ) -> Result<Self, ApiError> {
        let mut body = [Self::new(media, service)];
        crate::routes::variants::attach_processing(&mut body, service).await?;
        let [body] = body;
        Ok(body)
    }
}

/// Where clients fetch a media's bytes: `{cdn_base_url}/{s3_key}` when a CDN fronts the bucket,
/// else this API's download route. URLs are the edge's business: the service builds none.
pub fn media_url(media: &EventMedia, cdn_base_url: Option<&str>) -> String {
    match cdn_base_url {
        Some(cdn) => cdn_url(cdn, &media.s3_key),
        None => download_path(media.event_id, media.id),
    }
}

fn cdn_url(cdn_base_url: &str, s3_key: &str) -> String {
    format!("{}/{s3_key}", cdn_base_url.trim_end_matches('/'))
}

fn download_path(event_id: EventId, media_id: MediaId) -> String {
    format!("/api/v1/events/{event_id}/media/{media_id}/download")
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

/// The multipart form of an upload. Parts may come in any order (`curl -F file=@photo.jpg -F
/// title=... -F tags=...` sends `file` first); the file streams to the store as it arrives
/// either way.
#[derive(Debug, ToSchema)]
#[allow(
    dead_code,
    reason = "describes the multipart form in the OpenAPI document"
)]
pub struct UploadForm {
    /// Optional title (at most 200 characters).
    title: Option<String>,
    /// Optional description (at most 2000 characters).
    description: Option<String>,
    /// Optional comma-separated tags.
    tags: Option<String>,
    /// Optional: the file's length in bytes. When given, a file of any other length is refused
    /// (422) and nothing is kept. Sent before `file`, it also refuses a size above MAX_FILE_SIZE
    /// (413) before the file is read, and lets S3 receive a file above one part (8 MiB) as one
    /// streamed PutObject instead of a multipart upload; sent after `file`, it is only checked.
    #[schema(minimum = 1)]
    size: Option<u64>,
    /// The file; its part `Content-Type`, when given, must match the content. Exactly one.
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
            .route(get_or_head().to(list_media)),
    )
    .service(
        web::resource("/events/{event_id}/media/{media_id}")
            .route(get_or_head().to(get_media))
            .route(web::patch().to(patch_media))
            .route(web::delete().to(delete_media)),
    )
    .route(
        "/events/{event_id}/media/{media_id}/download",
        get_or_head().to(download_media),
    )
    .route(
        "/events/{event_id}/media/{media_id}/stream",
        get_or_head().to(stream_media),
    )
    .route(
        "/events/{event_id}/media/{media_id}/url",
        get_or_head().to(presign_media),
    );
}

/// Uploads a file to one of the caller's events.
///
/// `multipart/form-data` with one `file` part and the optional text fields `title`,
/// `description`, `tags` (comma separated) and `size` (the file's length in bytes), in any
/// order. The file streams to the store as it arrives; fields after it are checked when the form
/// ends, and if they are refused nothing is kept. Its type is decided by its content.
#[utoipa::path(
    post, path = "/api/v1/events/{event_id}/media", tag = "media",
    params(
        ("event_id" = Uuid, Path, description = "Event id"),
        ("Idempotency-Key" = Option<String>, Header, description = "Retrying with the same key and form (fields, file name and bytes) within 24 hours answers the first answer and stores nothing again; the same key on another form is 422"),
    ),
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    responses(
        (status = 201, description = "Stored", body = MediaBody, headers(("Location" = String))),
        (status = 400, description = "Malformed multipart or interrupted upload", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such event of the caller", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A request with this Idempotency-Key is still being processed", body = Problem, content_type = "application/problem+json"),
        (status = 408, description = "The body stayed silent for UPLOAD_IDLE_TIMEOUT or arrived slower than UPLOAD_MIN_RATE; nothing is kept", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "A quota would be exceeded (the detail names it)", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "File larger than MAX_FILE_SIZE, or part headers and text fields above 64 KiB", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not multipart/form-data, or a file type refused or not matching its declared type or extension", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields, no file, two files, unknown field, an empty file, or a file whose length is not its declared `size`", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database or store unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[allow(
    clippy::too_many_arguments,
    reason = "an actix-web handler takes what it needs as extractors"
)]
pub async fn upload_media(
    req: HttpRequest,
    user: AuthUser,
    path: web::Path<EventId>,
    service: web::Data<MediaService>,
    limits: web::Data<UploadLimits>,
    metrics: Option<web::Data<Metrics>>,
    idempotency: web::Data<dyn IdempotencyRepository>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let begin = idempotency::begin(&req, idempotency.into_inner(), &user.0).await?;
    // The form's fingerprint needs the file's hash, known once its bytes have streamed.
    let mut fingerprint = None;
    let outcome = receive_form(
        &req,
        &user,
        path.into_inner(),
        &service,
        &limits,
        metrics.as_ref().map(|m| m.get_ref()),
        payload,
        &begin,
        &mut fingerprint,
    )
    .await;
    match begin {
        idempotency::Begin::NoKey => {}
        idempotency::Begin::Answered(answer) => {
            return match (outcome, fingerprint) {
                (Ok(_), Some(fingerprint)) => idempotency::replay(&answer, &fingerprint),
                (Err(error), _) => Err(error),
                (Ok(_), None) => Err(ApiError::Internal {
                    context: "replaying an idempotent upload",
                }),
            };
        }
        idempotency::Begin::Claimed(claimed) => {
            idempotency::finish(claimed, fingerprint.unwrap_or_default(), &outcome).await;
        }
    }
    let (status, body, location) = outcome?;
    let mut response = HttpResponse::build(status);
    if let Some(location) = location {
        response.insert_header((header::LOCATION, location));
    }
    Ok(response.content_type("application/json").body(body))
}

/// The upload itself: the answer's status, JSON body and `Location`. With an `Idempotency-Key`
/// answered before, the bytes are received and hashed only to compare the request with the
/// first one, then removed.
#[allow(
    clippy::too_many_arguments,
    reason = "the handler's extractors, passed on once"
)]
async fn receive_form(
    req: &HttpRequest,
    user: &AuthUser,
    event_id: EventId,
    service: &MediaService,
    limits: &UploadLimits,
    metrics: Option<&Metrics>,
    payload: web::Payload,
    begin: &idempotency::Begin,
    fingerprint: &mut Option<String>,
) -> Result<(actix_web::http::StatusCode, String, Option<String>), ApiError> {
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

    let (guard, body) = BodyGuard::wrap(
        payload,
        BodyLimits {
            form_overhead: MULTIPART_OVERHEAD,
            max_file_size: limit,
            idle_timeout: limits.idle_timeout,
            min_bytes_per_sec: limits.min_bytes_per_sec,
            rate_window: limits.rate_window,
        },
    );
    let mut multipart = Multipart::new(req.headers(), body);
    let mut staged = None;
    // A retry of an answered request only needs the file's hash to compare it with the first:
    // its bytes are hashed as they stream and dropped, never staged, so the retry takes no
    // quota and works even when the first upload filled it.
    let replay = matches!(begin, idempotency::Begin::Answered(_));
    let form = read_form(
        &mut multipart,
        service,
        user,
        event_id,
        metrics,
        &guard,
        replay,
        &mut staged,
    )
    .await;
    // A body cut by its limits says so, whichever layer saw the cut first.
    let form = form.map_err(|error| guard.refusal().map_or(error, ApiError::BodyRefused));
    let (form, staged) = match (form, staged) {
        (Ok(form), Some(staged)) => (form, staged),
        (Ok(_), None) => {
            return Err(ApiError::Unprocessable(
                "the form has no `file` part".to_owned(),
            ));
        }
        // The bytes are stored but the rest of the form is refused: nothing is kept.
        (Err(error), staged) => {
            if let Some(FilePart::Staged(staged)) = staged {
                service.abandon(*staged).await;
            }
            return Err(error);
        }
    };
    *fingerprint = Some(idempotency::fingerprint(&[
        b"form upload",
        event_id.to_string().as_bytes(),
        form.title.as_deref().unwrap_or_default().as_bytes(),
        form.description.as_deref().unwrap_or_default().as_bytes(),
        form.tags.as_deref().unwrap_or_default().as_bytes(),
        form.declared_size
            .map(|s| s.to_string())
            .unwrap_or_default()
            .as_bytes(),
        form.filename.as_deref().unwrap_or_default().as_bytes(),
        staged.received_sha256().as_bytes(),
    ]));
    let staged = match staged {
        FilePart::Staged(staged) if !replay => *staged,
        // A retry: the first answer stands, and these bytes are not kept twice.
        FilePart::Staged(staged) => {
            service.abandon(*staged).await;
            return Ok((actix_web::http::StatusCode::OK, String::new(), None));
        }
        FilePart::Hashed(_) => return Ok((actix_web::http::StatusCode::OK, String::new(), None)),
    };
    let media = service.finalize(staged, form.fields()).await?;

    let location = format!("/api/v1/events/{}/media/{}", media.event_id, media.id);
    let body =
        serde_json::to_string(&MediaBody::new(media, service)).map_err(|_| ApiError::Internal {
            context: "serialising a media record",
        })?;
    Ok((actix_web::http::StatusCode::CREATED, body, Some(location)))
}

/// The form's `file` part once read: staged in the store, or, for the retry of an answered
/// idempotent request, only hashed.
enum FilePart {
    Staged(Box<StagedUpload>),
    /// The hex SHA-256 of the bytes received.
    Hashed(String),
}

impl FilePart {
    /// The hex SHA-256 of the bytes received (before any GPS position was blanked), which is
    /// what tells two requests apart.
    fn received_sha256(&self) -> &str {
        match self {
            Self::Staged(staged) => staged.received_sha256(),
            Self::Hashed(sha256) => sha256,
        }
    }
}

/// Reads the form's parts in whatever order they come. The `file` part streams to the store as
/// it arrives (into `staged`), so text fields after it cost no buffering of the file; the
/// fields are checked with the rest in the service's finalize step. With `replay_only` the
/// file is hashed and dropped instead of staged.
#[allow(
    clippy::too_many_arguments,
    reason = "the handler's extractors, passed on once"
)]
async fn read_form(
    multipart: &mut Multipart,
    service: &MediaService,
    user: &AuthUser,
    event_id: EventId,
    metrics: Option<&Metrics>,
    guard: &BodyGuard,
    replay_only: bool,
    staged: &mut Option<FilePart>,
) -> Result<UploadRequest, ApiError> {
    let mut request = UploadRequest::default();
    loop {
        let field = match until_stalled(guard, multipart.next()).await? {
            Some(Ok(field)) => field,
            Some(Err(err)) => {
                return Err(ApiError::BadRequest(format!(
                    "malformed multipart body: {err}"
                )));
            }
            None => return Ok(request),
        };
        let name = field.name().unwrap_or_default().to_owned();
        match name.as_str() {
            "title" => set_once(
                &mut request.title,
                "title",
                until_stalled(guard, read_text(field, "title")).await??,
            )?,
            "description" => set_once(
                &mut request.description,
                "description",
                until_stalled(guard, read_text(field, "description")).await??,
            )?,
            "tags" => set_once(
                &mut request.tags,
                "tags",
                until_stalled(guard, read_text(field, "tags")).await??,
            )?,
            "size" => {
                let text = until_stalled(guard, read_text(field, "size")).await??;
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
            "file" if staged.is_some() => {
                return Err(ApiError::Unprocessable(
                    "only one `file` part is accepted".to_owned(),
                ));
            }
            "file" => {
                guard.file_started();
                request.filename = field
                    .content_disposition()
                    .and_then(|cd| cd.get_filename())
                    .map(str::to_owned);
                request.declared_content_type = field.content_type().map(ToString::to_string);
                *staged = Some(if replay_only {
                    FilePart::Hashed(hash_field(field, guard).await?)
                } else {
                    FilePart::Staged(Box::new(
                        upload_field(service, user, event_id, &request, field, metrics, guard)
                            .await?,
                    ))
                });
            }
            other => {
                return Err(ApiError::Unprocessable(format!(
                    "unknown form field {:?}",
                    truncate(other, 64)
                )));
            }
        }
    }
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

/// How long the multipart parser may sit on a body that has ended before the form counts as
/// cut short (parsing what has arrived takes microseconds).
const PARSER_STALL: Duration = Duration::from_secs(1);

/// Runs `work` on the form, unless the body has ended and the parser stalls on it: a form that
/// ends before its closing boundary can leave actix-multipart waiting for bytes that will never
/// come, without an error, and nothing else would end the request.
async fn until_stalled<T>(
    guard: &BodyGuard,
    work: impl std::future::Future<Output = T>,
) -> Result<T, ApiError> {
    let stalled = guard.ended_for(PARSER_STALL);
    futures::pin_mut!(work, stalled);
    match futures::future::select(work, stalled).await {
        futures::future::Either::Left((done, _)) => Ok(done),
        futures::future::Either::Right(_) => Err(ApiError::BadRequest(
            "malformed multipart body: the form ended before its closing boundary".to_owned(),
        )),
    }
}

/// The hex SHA-256 of a `file` part, read to its end and dropped chunk by chunk (the body
/// guard's limits apply as for any upload).
async fn hash_field(mut field: Field, guard: &BodyGuard) -> Result<String, ApiError> {
    use sha2::Digest as _;
    let mut hasher = sha2::Sha256::new();
    while let Some(chunk) = until_stalled(guard, field.next()).await? {
        let chunk = chunk
            .map_err(|err| ApiError::BadRequest(format!("malformed multipart body: {err}")))?;
        hasher.update(&chunk);
    }
    Ok(hex::encode(hasher.finalize()))
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
    request: &UploadRequest,
    mut field: Field,
    metrics: Option<&Metrics>,
    guard: &BodyGuard,
) -> Result<StagedUpload, ApiError> {
    let (sender, mut receiver) =
        tokio::sync::mpsc::channel::<Result<Bytes, StoreError>>(CHANNEL_CAPACITY);
    // `poll_recv` keeps answering `None` once closed, so the stream is safe to poll again.
    let body: ByteStream = futures::stream::poll_fn(move |cx| receiver.poll_recv(cx)).boxed();
    let pump = async move {
        loop {
            let chunk = match until_stalled(guard, field.next()).await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(stalled) => {
                    let _ = sender
                        .send(Err(StoreError::Body {
                            source: Box::new(std::io::Error::other(stalled.to_string())),
                        }))
                        .await;
                    break;
                }
            };
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
    let (_, result) = futures::join!(pump, service.receive(&user.0, event_id, request, body));
    Ok(result?)
}

/// The kinds a media listing can be narrowed to (from the content type).
#[derive(Debug, ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(
    dead_code,
    reason = "describes the `kind` query parameter in the OpenAPI document"
)]
pub enum KindName {
    /// Photos and pictures (JPEG, PNG, GIF, WebP, HEIC, AVIF).
    Image,
    /// Video (MP4, QuickTime, WebM).
    Video,
    /// Sound (MP3, WAV, Ogg, AAC, M4A).
    Audio,
    /// Documents (PDF).
    Document,
}

/// Paging and filters of the media list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MediaListQuery {
    /// Page size, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page (of the same filtered listing).
    pub cursor: Option<String>,
    /// Only media carrying this tag; compared as tags are stored (trimmed, lower case), so
    /// `Beach` finds `beach`. Empty: no tag filter.
    pub tag: Option<String>,
    /// Only media of this kind (any case). Empty: no kind filter; anything else: 422.
    #[param(value_type = Option<KindName>, inline)]
    pub kind: Option<String>,
}

/// Lists an event's media, newest first, optionally only those with one tag or of one kind
/// (both: those with both). Pages as the whole list does: pass `next_cursor` back with the same
/// filters.
#[utoipa::path(
    get, path = "/api/v1/events/{event_id}/media", tag = "media",
    params(("event_id" = Uuid, Path, description = "Event id"), MediaListQuery),
    responses(
        (status = 200, description = "A page of media", body = MediaPage),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such event of the caller", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid limit, cursor, tag or kind", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn list_media(
    req: HttpRequest,
    user: AuthUser,
    path: web::Path<EventId>,
    service: web::Data<MediaService>,
    query: web::Query<MediaListQuery>,
) -> Result<HttpResponse, ApiError> {
    let MediaListQuery {
        limit,
        cursor,
        tag,
        kind,
    } = query.into_inner();
    let page = service
        .list_media_matching(
            &user.0,
            path.into_inner(),
            &MediaQuery { tag, kind },
            PageRequest { cursor, limit },
        )
        .await?;
    let mut items: Vec<MediaBody> = page
        .items
        .into_iter()
        .map(|m| MediaBody::new(m, &service))
        .collect();
    crate::routes::variants::attach_processing(&mut items, &service).await?;
    Ok(page_response(
        &req,
        &MediaPage {
            items,
            next_cursor: page.next_cursor,
        },
    ))
}

/// A list page as JSON with an `ETag` naming exactly these bytes (a SHA-256 of them), or 304 when
/// the request's `If-None-Match` names it: a gallery polled for news costs the client no
/// transfer while nothing changed. The tag covers everything the page says (records, processing
/// state, cursor), so any change shows; it is computed per request, with no state kept.
fn page_response(req: &HttpRequest, page: &MediaPage) -> HttpResponse {
    use actix_web::ResponseError as _;
    use sha2::Digest as _;
    let Ok(body) = serde_json::to_vec(page) else {
        return ApiError::Internal {
            context: "serialising a media page",
        }
        .error_response();
    };
    let digest = sha2::Sha256::digest(&body);
    let etag = format!("\"{}\"", hex::encode(&digest[..16]));
    let matched = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|tags| etag_matches(tags, &etag));
    let mut response = if matched {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    // Revalidated on every use: the page is the caller's alone and changes with every upload.
    response
        .insert_header((header::ETAG, etag))
        .insert_header((header::CACHE_CONTROL, "private, no-cache"));
    if matched {
        response.finish()
    } else {
        response.content_type("application/json").body(body)
    }
}

/// One media record. The `ETag` names this version of the record, for `If-Match` on `PATCH`
/// (it is not the ETag of the bytes, which `stream` and `download` answer).
#[utoipa::path(
    get, path = "/api/v1/events/{event_id}/media/{media_id}", tag = "media",
    params(("event_id" = Uuid, Path, description = "Event id"), ("media_id" = Uuid, Path, description = "Media id")),
    responses(
        (status = 200, description = "The record", body = MediaBody, headers(("ETag" = String, description = "This version of the record"))),
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
    let version = media.updated_at;
    Ok(with_etag(HttpResponse::Ok(), version)
        .json(MediaBody::with_processing(media, &service).await?))
}

/// Deserialises a field that is present, `null` included, as `Some`: with `#[serde(default)]`
/// an absent field stays `None`, so "absent" (keep) and `null` (clear) are told apart.
fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

/// The body of `PATCH .../media/{media_id}`: the fields to change, by the upload form's rules.
/// A field absent keeps its value; `null` clears it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MediaPatch {
    /// New title, at most 200 characters; `null` or blank clears it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, example = "The cat, asleep")]
    pub title: Option<Option<String>>,
    /// New description, at most 2000 characters; `null` or blank clears it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub description: Option<Option<String>>,
    /// New tags, one per item, replacing them all: each trimmed and lower-cased, blanks and
    /// repeats dropped, at most 20 of at most 50 characters, none holding a comma (the list a
    /// record shows is accepted back as is). `null` or `[]` clears them.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Vec<String>>, example = json!(["pets", "summer"]))]
    pub tags: Option<Option<Vec<String>>>,
}

impl From<MediaPatch> for MediaEdit {
    fn from(patch: MediaPatch) -> Self {
        Self {
            title: patch.title,
            description: patch.description,
            tags: patch.tags.map(Option::unwrap_or_default),
        }
    }
}

/// Changes a media's title, description or tags.
///
/// With `If-Match` (the `ETag` of a `GET` or an earlier `PATCH`), the edit applies only to that
/// version: if the record changed since, the answer is 412 and nothing changes, so two editors
/// never silently overwrite each other. Without `If-Match` the edit applies to the current
/// version (and is never lost to a concurrent edit of another field). The answer is the record
/// as stored, with its new `ETag`. Only the event's owner may edit; anyone else gets 404.
#[utoipa::path(
    patch, path = "/api/v1/events/{event_id}/media/{media_id}", tag = "media", request_body = MediaPatch,
    params(
        ("event_id" = Uuid, Path, description = "Event id"), ("media_id" = Uuid, Path, description = "Media id"),
        ("If-Match" = Option<String>, Header, description = "The `ETag` of the version the edit applies to; `*` or absent: any version"),
    ),
    responses(
        (status = 200, description = "The record as stored", body = MediaBody, headers(("ETag" = String, description = "The new version of the record"))),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such media of the caller", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "The record changed since the version in `If-Match`; nothing was changed", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not a JSON body", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid title, description or tags, or an unknown field", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn patch_media(
    req: HttpRequest,
    user: AuthUser,
    path: MediaPath,
    service: web::Data<MediaService>,
    body: web::Json<MediaPatch>,
) -> Result<HttpResponse, ApiError> {
    let (event_id, media_id) = path.into_inner();
    let edit = MediaEdit::from(body.into_inner());
    let media = service
        .edit_media(&user.0, event_id, media_id, &edit, &if_match(&req))
        .await?;
    let version = media.updated_at;
    Ok(with_etag(HttpResponse::Ok(), version)
        .json(MediaBody::with_processing(media, &service).await?))
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
///
/// Every answer carries `Content-Security-Policy: sandbox`, so that even a document opened
/// in the browser runs no script in this origin. `HEAD` answers the same headers without the
/// bytes (and ignores `Range`).
#[utoipa::path(
    get, path = "/api/v1/events/{event_id}/media/{media_id}/download", tag = "media",
    params(
        ("event_id" = Uuid, Path, description = "Event id"), ("media_id" = Uuid, Path, description = "Media id"),
        ("Range" = Option<String>, Header, description = RANGE_DOC),
        ("If-Range" = Option<String>, Header, description = IF_RANGE_DOC),
        ("If-None-Match" = Option<String>, Header, description = "An ETag from an earlier answer"),
    ),
    responses(
        (status = 200, description = "The bytes", content_type = "application/octet-stream", body = Vec<u8>, headers(
            ("Content-Disposition" = String, description = "`attachment` on `/download`; on `/stream` `inline` for pictures, video and sound, else `attachment` unless `inline=true`"),
            ("Content-Security-Policy" = String, description = "Always `sandbox`"),
            ("ETag" = String, description = "The object's strong entity tag"),
            ("Repr-Digest" = String, description = "RFC 9530: `sha-256=:<base64>:`, the SHA-256 of the whole file as recorded at upload (the same on a 206: it covers the representation, not the range)"),
        )),
        (status = 206, description = "The requested range", content_type = "application/octet-stream", body = Vec<u8>, headers(
            ("Content-Range" = String, description = "`bytes first-last/size`"),
            ("Content-Security-Policy" = String, description = "Always `sandbox`"),
            ("Repr-Digest" = String, description = "RFC 9530: `sha-256=:<base64>:`, the SHA-256 of the whole file as recorded at upload (the same on a 206: it covers the representation, not the range)"),
        )),
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
    let presentation = Presentation::Download;
    serve_bytes(&req, &service, &user, (event_id, media_id), presentation).await
}

/// The bytes inline, for players and `<img>`, with ranges and ETags.
///
/// Pictures, video and sound come inline. A type a browser may run code from (PDF, or anything
/// that is not a picture, video or sound) comes as an attachment unless `inline=true` asks
/// otherwise. Every answer carries `Content-Security-Policy: sandbox`, so that even a document
/// shown inline runs no script in this origin. `HEAD` answers the same headers without the bytes
/// (and ignores `Range`).
#[utoipa::path(
    get, path = "/api/v1/events/{event_id}/media/{media_id}/stream", tag = "media",
    params(
        ("event_id" = Uuid, Path, description = "Event id"), ("media_id" = Uuid, Path, description = "Media id"),
        StreamQuery,
        ("Range" = Option<String>, Header, description = RANGE_DOC),
        ("If-Range" = Option<String>, Header, description = IF_RANGE_DOC),
        ("If-None-Match" = Option<String>, Header, description = "An ETag from an earlier answer"),
    ),
    responses(
        (status = 200, description = "The bytes", content_type = "application/octet-stream", body = Vec<u8>, headers(
            ("Content-Disposition" = String, description = "`attachment` on `/download`; on `/stream` `inline` for pictures, video and sound, else `attachment` unless `inline=true`"),
            ("Content-Security-Policy" = String, description = "Always `sandbox`"),
            ("ETag" = String, description = "The object's strong entity tag"),
            ("Repr-Digest" = String, description = "RFC 9530: `sha-256=:<base64>:`, the SHA-256 of the whole file as recorded at upload (the same on a 206: it covers the representation, not the range)"),
        )),
        (status = 206, description = "The requested range", content_type = "application/octet-stream", body = Vec<u8>, headers(
            ("Content-Range" = String, description = "`bytes first-last/size`"),
            ("Content-Security-Policy" = String, description = "Always `sandbox`"),
            ("Repr-Digest" = String, description = "RFC 9530: `sha-256=:<base64>:`, the SHA-256 of the whole file as recorded at upload (the same on a 206: it covers the representation, not the range)"),
        )),
        (status = 304, description = "Not modified"),
        (status = 400, description = "Malformed query (`inline` is `true` or `false`)", body = Problem, content_type = "application/problem+json"),
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
    query: web::Query<StreamQuery>,
) -> Result<HttpResponse, ApiError> {
    let (event_id, media_id) = path.into_inner();
    let presentation = Presentation::Stream {
        inline_asked: query.inline.unwrap_or(false),
    };
    serve_bytes(&req, &service, &user, (event_id, media_id), presentation).await
}

const RANGE_DOC: &str = "One range: `bytes=first-last`, `bytes=first-` or `bytes=-suffix`. \
    Several ranges, other units and malformed values are ignored (200). Ignored by HEAD.";
const IF_RANGE_DOC: &str = "The strong ETag of an earlier answer: `Range` is honoured only if \
    it is still the current one, otherwise the whole file comes (200). A weak ETag or a date \
    never matches (no `Last-Modified` is sent).";

/// Query of the stream route.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// `true` shows a document a browser may run code from (PDF) inline too, still under
    /// `Content-Security-Policy: sandbox`; by default such a file comes as an attachment.
    /// Pictures, video and sound come inline either way.
    pub inline: Option<bool>,
}

/// Which route serves the bytes, which decides their `Content-Disposition`.
#[derive(Debug, Clone, Copy)]
enum Presentation {
    /// `/download`: always an attachment.
    Download,
    /// `/stream`: inline, except what may run code, unless the client asked for inline anyway.
    Stream { inline_asked: bool },
}

impl Presentation {
    fn disposition(self, content_type: &str) -> DispositionType {
        match self {
            Self::Download => DispositionType::Attachment,
            Self::Stream {
                inline_asked: false,
            } if may_run_code(content_type) => DispositionType::Attachment,
            Self::Stream { .. } => DispositionType::Inline,
        }
    }
}

/// The policy every byte answer carries: a document rendered from it is sandboxed (no script,
/// a unique origin), so a hostile file cannot act in this API's origin even when displayed.
pub const SANDBOX_POLICY: &str = "sandbox";

async fn serve_bytes(
    req: &HttpRequest,
    service: &MediaService,
    user: &AuthUser,
    (event_id, media_id): (EventId, MediaId),
    presentation: Presentation,
) -> Result<HttpResponse, ApiError> {
    let if_none_match = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty());

    if req.method() == Method::HEAD {
        let (media, meta) = service.head_media(&user.0, event_id, media_id).await?;
        if if_none_match.is_some_and(|tags| etag_matches(tags, &meta.etag)) {
            return Ok(not_modified(req));
        }
        let mut response = HttpResponse::Ok();
        byte_headers(&mut response, &media, &meta.etag, presentation);
        // The length of what a GET would send; actix-http sends no body to a HEAD.
        let nothing = futures::stream::empty::<Result<Bytes, StoreError>>();
        return Ok(response.body(SizedStream::new(meta.size, nothing)));
    }

    let mut options = GetOptions::default();
    options.range = req
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_range);
    if options.range.is_some() && !if_range_holds(req, service, user, (event_id, media_id)).await? {
        options.range = None;
    }
    // The whole list goes to the store, which compares weakly as HTTP does for GET.
    options.if_none_match = if_none_match.map(str::to_owned);
    let requested_range = options.range.is_some();
    let (media, object) = match service
        .open_media(&user.0, event_id, media_id, options)
        .await
    {
        Err(plugs_media::MediaError::NotModified) => return Ok(not_modified(req)),
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
        response.insert_header(ContentRange(ContentRangeSpec::Bytes {
            range: Some((range.start, range.end.saturating_sub(1))),
            instance_length: Some(object.meta.size),
        }));
    }
    byte_headers(&mut response, &media, &object.meta.etag, presentation);
    Ok(response.body(SizedStream::new(length, object.body)))
}

/// Whether a `Range` may be honoured under the request's `If-Range` (RFC 9110 §13.1.5): without
/// one, yes; with one, only if it is a strong entity tag that is the object's current one.
/// A weak tag never matches, a date never does either (no `Last-Modified` is sent, so it cannot
/// be an exact match of one), and neither does a value that is no validator at all: the client
/// then gets the whole file, which is always correct.
async fn if_range_holds(
    req: &HttpRequest,
    service: &MediaService,
    user: &AuthUser,
    (event_id, media_id): (EventId, MediaId),
) -> Result<bool, ApiError> {
    if !req.headers().contains_key(header::IF_RANGE) {
        return Ok(true);
    }
    let Ok(IfRange::EntityTag(asked)) = IfRange::parse(req) else {
        return Ok(false);
    };
    if asked.weak {
        return Ok(false);
    }
    // Objects never change under a key (puts are create-only), so the tag read now is the one
    // the ranged read will serve.
    let (_, meta) = service.head_media(&user.0, event_id, media_id).await?;
    Ok(meta
        .etag
        .parse::<EntityTag>()
        .is_ok_and(|current| asked.strong_eq(&current)))
}

/// The headers every byte answer has, to a GET and to a HEAD alike.
fn byte_headers(
    response: &mut HttpResponseBuilder,
    media: &EventMedia,
    etag: &str,
    presentation: Presentation,
) {
    let fallback_name = media.id.to_string();
    let filename = media.original_filename.as_deref().unwrap_or(&fallback_name);
    response
        .insert_header((header::CONTENT_TYPE, media.content_type.clone()))
        .insert_header((header::ETAG, etag.to_owned()))
        .insert_header((header::ACCEPT_RANGES, "bytes"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::CACHE_CONTROL, "private"))
        .insert_header((header::CONTENT_SECURITY_POLICY, SANDBOX_POLICY))
        .insert_header(content_disposition(
            presentation.disposition(&media.content_type),
            filename,
        ));
    if let Some(digest) = repr_digest(media) {
        response.insert_header((REPR_DIGEST, digest));
    }
}

/// `Repr-Digest` (RFC 9530 §3).
const REPR_DIGEST: &str = "repr-digest";

/// `sha-256=:<base64>:` from the SHA-256 recorded at upload. It is the digest of the whole
/// selected representation, not of the bytes in this message, so it is the same on a 200, a
/// 206 of any range and a HEAD (RFC 9530 §3 and its Appendix B example of a range request):
/// a client checks it once it holds every byte. A record without a valid hash sends none.
fn repr_digest(media: &EventMedia) -> Option<String> {
    use base64::Engine as _;
    let sha = hex::decode(media.sha256.as_deref()?).ok()?;
    (sha.len() == 32).then(|| {
        format!(
            "sha-256=:{}:",
            base64::engine::general_purpose::STANDARD.encode(sha)
        )
    })
}

/// A 304, repeating the `If-None-Match` tag when there was exactly one (with a list or `*` the
/// matching tag is unknown here, and a 304 may omit it).
fn not_modified(req: &HttpRequest) -> HttpResponse {
    let mut response = HttpResponse::NotModified();
    if let Ok(IfNoneMatch::Items(tags)) = IfNoneMatch::parse(req)
        && let [tag] = tags.as_slice()
    {
        response.insert_header(ETag(tag.clone()));
    }
    response.finish()
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

/// Parses a `Range` header with one range (actix-web's typed `Range`). Several ranges, other
/// units and malformed values yield `None`: RFC 9110 lets a server ignore `Range` and answer the
/// whole representation.
pub fn parse_range(value: &str) -> Option<ByteRange> {
    let Ok(Range::Bytes(specs)) = value.trim().parse::<Range>() else {
        return None;
    };
    match specs.as_slice() {
        [ByteRangeSpec::FromTo(first, last)] => Some(ByteRange::Bounded {
            start: *first,
            end: last.saturating_add(1),
        }),
        [ByteRangeSpec::From(first)] => Some(ByteRange::From { start: *first }),
        [ByteRangeSpec::Last(len)] => Some(ByteRange::Suffix { len: *len }),
        _ => None,
    }
}

/// `Content-Disposition` per RFC 6266, written by actix-web: a quoted ASCII fallback name,
/// without quotes, backslashes or control characters, plus the exact name percent-encoded in
/// `filename*`.
pub fn content_disposition(disposition: DispositionType, filename: &str) -> ContentDisposition {
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
    ContentDisposition {
        disposition,
        parameters: vec![
            DispositionParam::Filename(fallback),
            DispositionParam::FilenameExt(ExtendedValue {
                charset: Charset::Ext("UTF-8".to_owned()),
                language_tag: None,
                value: filename.as_bytes().to_vec(),
            }),
        ],
    }
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
        assert_eq!(parse_range("bytes=a-b"), None);
        assert_eq!(parse_range(""), None);
    }

    #[test]
    fn content_disposition_is_safe_for_hostile_names() {
        let name = "evil\"\r\nSet-Cookie: x=1\\ résumé.png";
        let header = content_disposition(DispositionType::Attachment, name).to_string();
        let (fallback, encoded) = header
            .strip_prefix("attachment; filename=\"")
            .and_then(|rest| rest.split_once("\"; filename*=UTF-8''"))
            .unwrap_or_else(|| panic!("unexpected shape: {header}"));
        assert_eq!(fallback, "evilSet-Cookie: x=1 r_sum_.png");
        assert!(
            !encoded.contains(['"', ';', ' ', '\r', '\n', '\\']),
            "{encoded}"
        );
        assert!(encoded.contains("r%C3%A9sum%C3%A9.png"), "{encoded}");
        assert!(actix_web::http::header::HeaderValue::from_str(&header).is_ok());
        let inline = content_disposition(DispositionType::Inline, "").to_string();
        assert_eq!(inline, "inline; filename=\"download\"; filename*=UTF-8''");
    }

    #[test]
    fn documents_come_as_attachments_unless_asked_inline() {
        let stream = Presentation::Stream {
            inline_asked: false,
        };
        let asked = Presentation::Stream { inline_asked: true };
        for (presentation, content_type, expected) in [
            (
                Presentation::Download,
                "image/png",
                DispositionType::Attachment,
            ),
            (stream, "image/png", DispositionType::Inline),
            (stream, "video/mp4", DispositionType::Inline),
            (stream, "application/pdf", DispositionType::Attachment),
            (stream, "text/html", DispositionType::Attachment),
            (asked, "application/pdf", DispositionType::Inline),
        ] {
            assert_eq!(
                presentation.disposition(content_type),
                expected,
                "{presentation:?} {content_type}"
            );
        }
    }

    #[test]
    fn media_urls_point_at_the_cdn_when_one_is_configured() {
        let (event_id, media_id) = (EventId::new(), MediaId::new());
        assert_eq!(
            download_path(event_id, media_id),
            format!("/api/v1/events/{event_id}/media/{media_id}/download")
        );
        let key = "events/e/media/2025/01/02/030405_000007.png";
        assert_eq!(
            cdn_url("https://cdn.example.com/", key),
            format!("https://cdn.example.com/{key}")
        );
    }
}
