//! Derived versions (issue 12): `GET .../media/{media_id}/thumbnail?size=256` (or
//! `?variant=display`) and what the media record shows of them (`width`, `height`,
//! `processing`, `variants`).

use actix_web::body::SizedStream;
use actix_web::http::header::{self, CacheControl, CacheDirective, ETag, EntityTag};
use actix_web::http::{Method, StatusCode};
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;
use plugs_domain::{EventId, MediaId, MediaProcessing, ProcessableTypes, ProcessingState};
use plugs_media::{MediaError, MediaService, VariantRequest, VariantState};
use plugs_storage::{GetOptions, StoreError};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::AuthUser;
use crate::error::{ApiError, Problem};
use crate::routes::get_or_head;
use crate::routes::media::{MediaBody, PresignedUrlBody};

/// How long a client may keep a derived version without asking again. Short enough that a
/// `reprocess` (which overwrites the same key) shows within the hour; the `ETag` makes the
/// revalidation cheap.
const MAX_AGE_SECS: u32 = 3600;
/// What a `202` asks the client to wait before asking again.
const RETRY_AFTER_SECS: u32 = 2;

/// Registers the route.
pub fn config(cfg: &mut web::ServiceConfig) {
    cfg.route(
        "/events/{event_id}/media/{media_id}/thumbnail",
        get_or_head().to(thumbnail),
    );
}

/// One derived version, as a media record lists it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VariantBody {
    /// `thumb-{width}` or `display`.
    #[schema(example = "thumb-256")]
    pub name: String,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `image/jpeg` or `image/webp`.
    pub content_type: String,
    /// Size in bytes.
    pub size_bytes: u64,
    /// Where to fetch it: a stable API path (`.../thumbnail?size=256`, `?variant=display`), so
    /// a record's representation stays the same between fetches; signed store or CDN URLs are
    /// handed out only by `?redirect=true`.
    pub url: String,
}

/// Where a media's derived versions stand, as the API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProcessingBody {
    /// Its type has none.
    None,
    /// Being made.
    Pending,
    /// Made.
    Ready,
    /// Could not be made (the file cannot be read, or failed too often).
    Failed,
}

impl From<ProcessingState> for ProcessingBody {
    fn from(state: ProcessingState) -> Self {
        match state {
            ProcessingState::None => Self::None,
            ProcessingState::Pending => Self::Pending,
            ProcessingState::Ready => Self::Ready,
            ProcessingState::Failed => Self::Failed,
        }
    }
}

/// The processing state a record has before a worker looked at it: `pending` for the types the
/// workers read (`processable`: their job was enqueued with the upload's `ready`), `none` for
/// the rest.
pub fn initial_processing(content_type: &str, processable: &ProcessableTypes) -> ProcessingBody {
    if processable.contains(content_type) {
        ProcessingBody::Pending
    } else {
        ProcessingBody::None
    }
}

fn variant_path(event_id: uuid::Uuid, media_id: uuid::Uuid, name: &str) -> String {
    let base = format!("/api/v1/events/{event_id}/media/{media_id}/thumbnail");
    match name.strip_prefix("thumb-") {
        Some(width) if width.bytes().all(|b| b.is_ascii_digit()) => format!("{base}?size={width}"),
        _ => format!("{base}?variant={name}"),
    }
}

/// Fills in what processing knows of each record (one query for the whole page).
pub async fn attach_processing(
    bodies: &mut [MediaBody],
    service: &MediaService,
) -> Result<(), ApiError> {
    let ids: Vec<MediaId> = bodies
        .iter()
        .map(|body| MediaId::from_uuid(body.id))
        .collect();
    let known = service.processing_of(&ids).await?;
    for body in bodies.iter_mut() {
        if let Some(processing) = known
            .iter()
            .find(|processing| processing.media_id.as_uuid() == body.id)
        {
            apply(body, processing);
        }
    }
    Ok(())
}

fn apply(body: &mut MediaBody, processing: &MediaProcessing) {
    body.processing = processing.state.into();
    body.width = processing.width;
    body.height = processing.height;
    body.variants = processing
        .variants
        .iter()
        .map(|version| VariantBody {
            url: variant_path(body.event_id, body.id, &version.variant),
            name: version.variant.clone(),
            width: version.width,
            height: version.height,
            content_type: version.content_type.clone(),
            size_bytes: version.size_bytes,
        })
        .collect();
}

/// Query of the thumbnail route.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ThumbnailQuery {
    /// A thumbnail width (one of THUMBNAIL_WIDTHS). Give this or `variant`.
    pub size: Option<u32>,
    /// A variant by name: `display`, or `thumb-{width}`.
    pub variant: Option<String>,
    /// `true`: answer `302` to a presigned store (or CDN-signed) URL instead of the bytes.
    pub redirect: Option<bool>,
}

/// A derived version's bytes: a thumbnail (`?size=256`) or the display copy
/// (`?variant=display`), made after the upload with the orientation applied and no metadata.
#[utoipa::path(
    get, path = "/api/v1/events/{event_id}/media/{media_id}/thumbnail", tag = "media",
    params(
        ("event_id" = Uuid, Path, description = "Event id"), ("media_id" = Uuid, Path, description = "Media id"),
        ThumbnailQuery,
        ("If-None-Match" = Option<String>, Header, description = "An ETag from an earlier answer"),
    ),
    responses(
        (status = 200, description = "The bytes", content_type = "image/jpeg", body = Vec<u8>, headers(
            ("ETag" = String, description = "The derived object's entity tag"),
            ("Cache-Control" = String, description = "`private, max-age=3600`"),
        )),
        (status = 202, description = "Still being made: ask again after `Retry-After` seconds", body = Problem, content_type = "application/problem+json", headers(("Retry-After" = u32))),
        (status = 302, description = "With `redirect=true`: a presigned URL in `Location`", body = PresignedUrlBody),
        (status = 304, description = "Not modified"),
        (status = 400, description = "Neither or both of `size` and `variant`, or a malformed query", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such media of the caller, its type has no derived versions, their making failed, or no such size or variant is made", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn thumbnail(
    req: HttpRequest,
    user: AuthUser,
    path: web::Path<(EventId, MediaId)>,
    service: web::Data<MediaService>,
    query: web::Query<ThumbnailQuery>,
) -> Result<HttpResponse, ApiError> {
    let (event_id, media_id) = path.into_inner();
    let ThumbnailQuery {
        size,
        variant,
        redirect,
    } = query.into_inner();
    let request = match (size, variant) {
        (Some(size), None) => VariantRequest::Thumbnail(size),
        (None, Some(name)) => VariantRequest::Named(name),
        _ => {
            return Err(ApiError::BadRequest(
                "give either size (a thumbnail width) or variant (like display)".to_owned(),
            ));
        }
    };
    if redirect == Some(true) {
        return match service
            .presign_variant(&user.0, event_id, media_id, &request, None)
            .await?
        {
            VariantState::Ready(_, url) => Ok(HttpResponse::Found()
                .insert_header((header::LOCATION, url.url.clone()))
                .insert_header(CacheControl(vec![CacheDirective::NoStore]))
                .json(PresignedUrlBody {
                    url: url.url,
                    expires_at: url.expires_at,
                })),
            VariantState::Pending => Ok(pending()),
            _ => Err(ApiError::Media(MediaError::NotFound {
                what: "variant",
                id: request.name(),
            })),
        };
    }
    let if_none_match = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
        .map(str::trim)
        .filter(|value| !value.is_empty())
        .map(str::to_owned);
    let mut options = GetOptions::default();
    options.if_none_match = if_none_match.clone();
    let (version, object) = match service
        .open_variant(&user.0, event_id, media_id, &request, options)
        .await
    {
        Ok(VariantState::Ready(version, object)) => (version, object),
        Ok(VariantState::Pending) => return Ok(pending()),
        Ok(_) => {
            return Err(ApiError::Media(MediaError::NotFound {
                what: "variant",
                id: request.name(),
            }));
        }
        Err(MediaError::NotModified) => return Ok(not_modified()),
        Err(other) => return Err(other.into()),
    };
    // Stores that do not answer If-None-Match themselves: compare here.
    if if_none_match
        .as_deref()
        .is_some_and(|tags| plugs_storage::etag_matches(tags, &object.meta.etag))
    {
        return Ok(not_modified());
    }
    let mut response = HttpResponse::Ok();
    response.insert_header((header::CONTENT_TYPE, version.content_type.clone()));
    response.insert_header(cache_control());
    if let Some(tag) = entity_tag(&object.meta.etag) {
        response.insert_header(ETag(tag));
    }
    let size = object.meta.size;
    if req.method() == Method::HEAD {
        let nothing = futures::stream::empty::<Result<Bytes, StoreError>>();
        return Ok(response.body(SizedStream::new(size, nothing)));
    }
    Ok(response.body(SizedStream::new(size, object.body)))
}

fn cache_control() -> CacheControl {
    CacheControl(vec![
        CacheDirective::Private,
        CacheDirective::MaxAge(MAX_AGE_SECS),
    ])
}

fn entity_tag(quoted: &str) -> Option<EntityTag> {
    let bare = quoted.trim().trim_start_matches("W/").trim_matches('"');
    (!bare.is_empty()
        && bare
            .bytes()
            .all(|b| b != b'"' && (b'!'..=b'~').contains(&b)))
    .then(|| EntityTag::new_strong(bare.to_owned()))
}

fn not_modified() -> HttpResponse {
    HttpResponse::NotModified()
        .insert_header(cache_control())
        .finish()
}

/// `202` with `Retry-After` and a problem body saying why.
fn pending() -> HttpResponse {
    HttpResponse::build(StatusCode::ACCEPTED)
        .insert_header((header::RETRY_AFTER, RETRY_AFTER_SECS.to_string()))
        .insert_header(CacheControl(vec![CacheDirective::NoStore]))
        .content_type("application/problem+json")
        .json(serde_json::json!({
            "type": "about:blank",
            "title": "Accepted",
            "status": 202,
            "detail": "this derived version is still being made; ask again after Retry-After seconds",
        }))
}
