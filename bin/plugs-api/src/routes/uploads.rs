//! `/api/v1/events/{event_id}/media/uploads`: direct uploads. The client sends its bytes straight
//! to the store through presigned URLs; completing the upload verifies them and makes the media.

use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use plugs_domain::{EventId, MediaId};
use plugs_media::{DirectUploadRequest, MediaService, UploadFields, UploadPlan};
use plugs_persistence::IdempotencyRepository;
use plugs_storage::{CompletedPart, PresignedUrl};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::AuthUser;
use crate::error::{ApiError, Problem};
use crate::idempotency;
use crate::routes::media::MediaBody;

/// Registers the routes. Before the media routes: `uploads` is not a media id.
pub fn config(cfg: &mut web::ServiceConfig) {
    cfg.route(
        "/events/{event_id}/media/uploads",
        web::post().to(create_upload),
    )
    .route(
        "/events/{event_id}/media/uploads/{upload_id}",
        web::delete().to(abort_upload),
    )
    .route(
        "/events/{event_id}/media/uploads/{upload_id}/complete",
        web::post().to(complete_upload),
    )
    .route(
        "/events/{event_id}/media/uploads/{upload_id}/parts",
        web::post().to(resign_parts),
    )
    .route(
        "/events/{event_id}/usage",
        crate::routes::get_or_head().to(usage),
    );
}

/// Bytes and media held, and the limit when one is set.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UsageBody {
    /// Bytes held, counting what uploads in flight reserve.
    pub bytes: u64,
    /// Media records, uploads in flight included.
    pub media: u64,
    /// The bytes limit, if any.
    pub max_bytes: Option<u64>,
    /// The media limit, if any.
    pub max_media: Option<u64>,
}

/// An event's usage and its owner's, against the quotas.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EventUsageBody {
    /// This event.
    pub event: UsageBody,
    /// All the owner's events.
    pub owner: UsageBody,
}

/// What an event and its owner hold, against the quotas (`QUOTA_*` settings).
#[utoipa::path(
    get, path = "/api/v1/events/{event_id}/usage", tag = "uploads",
    params(("event_id" = Uuid, Path, description = "Event id")),
    responses(
        (status = 200, description = "The usage", body = EventUsageBody),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such event of the caller", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn usage(
    user: AuthUser,
    path: web::Path<EventId>,
    service: web::Data<MediaService>,
) -> Result<HttpResponse, ApiError> {
    let usage = service.usage(&user.0, path.into_inner()).await?;
    Ok(HttpResponse::Ok().json(EventUsageBody {
        event: UsageBody {
            bytes: usage.event.bytes,
            media: usage.event.media,
            max_bytes: usage.quota.event_bytes,
            max_media: usage.quota.event_media,
        },
        owner: UsageBody {
            bytes: usage.owner.bytes,
            media: usage.owner.media,
            max_bytes: usage.quota.owner_bytes,
            max_media: usage.quota.owner_media,
        },
    }))
}

/// What the client declares to start a direct upload.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUploadBody {
    /// The file's name; its extension must agree with `content_type`.
    #[schema(example = "IMG_0042.jpg")]
    pub filename: String,
    /// The file's type; the bytes must agree when the upload completes.
    #[schema(example = "image/jpeg")]
    pub content_type: String,
    /// The exact length in bytes; the URLs accept no other.
    #[schema(minimum = 1)]
    pub size: u64,
    /// Hex SHA-256 of the bytes: bound into a single PUT (the store refuses other bytes) and
    /// checked on completion.
    pub sha256: Option<String>,
    /// Optional title.
    pub title: Option<String>,
    /// Optional description.
    pub description: Option<String>,
    /// Optional comma-separated tags.
    pub tags: Option<String>,
}

/// A presigned URL and the headers its request must carry exactly.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PartUrl {
    /// The part's number, from 1.
    pub part_number: u32,
    /// Where to PUT the part's bytes.
    pub url: String,
    /// Headers the PUT must carry with exactly these values.
    pub headers: std::collections::BTreeMap<String, String>,
}

/// The plan of a direct upload: one PUT, or one PUT per part.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UploadPlanBody {
    /// Names the upload in `complete`, `parts` and `DELETE`.
    pub upload_id: Uuid,
    /// When the URLs stop working.
    pub expires_at: DateTime<Utc>,
    /// `PUT` for one request with the whole file.
    pub method: Option<String>,
    /// The single PUT's URL.
    pub url: Option<String>,
    /// Headers the single PUT must carry with exactly these values.
    pub headers: Option<std::collections::BTreeMap<String, String>>,
    /// For a multipart plan: every part's size but the last one's, which is shorter.
    pub part_size: Option<u64>,
    /// For a multipart plan: one URL per part.
    pub parts: Option<Vec<PartUrl>>,
}

/// The parts of a multipart upload, as the store answered them (`ETag` of each PUT).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteBody {
    /// Every part, with the ETag its PUT answered. Omitted: the parts the store holds.
    #[serde(default)]
    pub parts: Option<Vec<CompletedPartBody>>,
}

/// One part of a completion.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompletedPartBody {
    /// The part's number, from 1.
    pub part_number: u32,
    /// The `ETag` the part's PUT answered.
    pub etag: String,
}

/// Parts whose URLs to sign again.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResignBody {
    /// Part numbers, from 1.
    pub part_numbers: Vec<u32>,
}

/// Newly signed part URLs.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ResignedParts {
    /// One URL per part asked for.
    pub parts: Vec<PartUrl>,
}

fn headers_of(url: &PresignedUrl) -> std::collections::BTreeMap<String, String> {
    url.headers.iter().cloned().collect()
}

fn part_urls(parts: Vec<(u32, PresignedUrl)>) -> Vec<PartUrl> {
    parts
        .into_iter()
        .map(|(part_number, url)| PartUrl {
            part_number,
            headers: headers_of(&url),
            url: url.url,
        })
        .collect()
}

/// Starts a direct upload: the client then PUTs its bytes to the URLs answered.
///
/// The policy (size limit, allowed type from the declared type and the extension) and the
/// fields are checked first. Files above the multipart threshold get one URL per part. Nothing
/// becomes media until `complete` has verified the bytes.
#[utoipa::path(
    post, path = "/api/v1/events/{event_id}/media/uploads", tag = "uploads",
    params(
        ("event_id" = Uuid, Path, description = "Event id"),
        ("Idempotency-Key" = Option<String>, Header, description = "Retrying with the same key and request within 24 hours answers the first answer; the same key on another request is 422"),
    ),
    request_body = CreateUploadBody,
    responses(
        (status = 201, description = "The upload's plan", body = UploadPlanBody),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such event of the caller", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "A quota would be exceeded (the detail names it)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A request with this Idempotency-Key is still being processed", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Larger than MAX_FILE_SIZE", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "A type refused, or an extension that does not match it", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields, size 0 or a malformed sha256", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database or store unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn create_upload(
    req: HttpRequest,
    user: AuthUser,
    path: web::Path<EventId>,
    service: web::Data<MediaService>,
    idempotency: web::Data<dyn IdempotencyRepository>,
    body: web::Json<CreateUploadBody>,
) -> Result<HttpResponse, ApiError> {
    let event_id = path.into_inner();
    let body = body.into_inner();
    let fingerprint = idempotency::fingerprint(&[
        b"direct upload",
        event_id.to_string().as_bytes(),
        &serde_json::to_vec(&body).map_err(|_| ApiError::Internal {
            context: "fingerprinting a request",
        })?,
    ]);
    let begin = idempotency::begin(&req, idempotency.into_inner(), &user.0).await?;
    let outcome = match begin {
        idempotency::Begin::Answered(answer) => return idempotency::replay(&answer, &fingerprint),
        idempotency::Begin::NoKey => start_upload(&user, event_id, &service, body).await,
        idempotency::Begin::Claimed(claimed) => {
            let outcome = start_upload(&user, event_id, &service, body).await;
            idempotency::finish(claimed, fingerprint, &outcome).await;
            outcome
        }
    };
    let (status, body, location) = outcome?;
    let mut response = HttpResponse::build(status);
    if let Some(location) = location {
        response.insert_header((header::LOCATION, location));
    }
    Ok(response.content_type("application/json").body(body))
}

/// Starts the upload: the answer's status, JSON body and `Location`.
async fn start_upload(
    user: &AuthUser,
    event_id: EventId,
    service: &MediaService,
    body: CreateUploadBody,
) -> Result<(StatusCode, String, Option<String>), ApiError> {
    let request = DirectUploadRequest {
        filename: body.filename,
        content_type: body.content_type,
        size: body.size,
        sha256: body.sha256,
        fields: UploadFields {
            title: body.title,
            description: body.description,
            tags: body.tags,
            declared_size: Some(body.size),
        },
    };
    let upload = service
        .create_direct_upload(&user.0, event_id, request)
        .await?;
    let mut answer = UploadPlanBody {
        upload_id: upload.upload_id.as_uuid(),
        expires_at: upload.expires_at,
        method: None,
        url: None,
        headers: None,
        part_size: None,
        parts: None,
    };
    match upload.plan {
        UploadPlan::Put(url) => {
            answer.method = Some("PUT".to_owned());
            answer.headers = Some(headers_of(&url));
            answer.url = Some(url.url);
        }
        UploadPlan::Multipart { part_size, parts } => {
            answer.part_size = Some(part_size);
            answer.parts = Some(part_urls(parts));
        }
    }
    let location = format!(
        "/api/v1/events/{event_id}/media/uploads/{}",
        upload.upload_id
    );
    let body = serde_json::to_string(&answer).map_err(|_| ApiError::Internal {
        context: "serialising an upload plan",
    })?;
    Ok((StatusCode::CREATED, body, Some(location)))
}

/// Completes a direct upload: verifies the bytes and answers the media record.
///
/// The size is checked against the declaration, the head of the bytes is sniffed against the
/// declared type and the extension (as for a form upload), the SHA-256 is established (and
/// compared with a declared one), and the bytes move from their staging key to their final key.
/// Anything that fails verification is deleted. Completing twice answers the same record.
#[utoipa::path(
    post, path = "/api/v1/events/{event_id}/media/uploads/{upload_id}/complete", tag = "uploads",
    params(("event_id" = Uuid, Path, description = "Event id"), ("upload_id" = Uuid, Path, description = "Upload id")),
    request_body(content = CompleteBody, description = "The parts of a multipart upload; empty for a single PUT"),
    responses(
        (status = 201, description = "The media", body = MediaBody, headers(("Location" = String))),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such upload of the caller", body = Problem, content_type = "application/problem+json"),
        (status = 410, description = "The upload expired; it has been removed", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "The bytes are not of the declared type or extension", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not the declared size or SHA-256, or a wrong part list", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database or store unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn complete_upload(
    user: AuthUser,
    path: web::Path<(EventId, MediaId)>,
    service: web::Data<MediaService>,
    body: Option<web::Json<CompleteBody>>,
) -> Result<HttpResponse, ApiError> {
    let (event_id, upload_id) = path.into_inner();
    let parts = body.and_then(|body| body.into_inner().parts).map(|parts| {
        parts
            .into_iter()
            .map(|part| CompletedPart::new(part.part_number, part.etag))
            .collect()
    });
    let media = service
        .complete_direct_upload(&user.0, event_id, upload_id, parts)
        .await?;
    let location = format!("/api/v1/events/{}/media/{}", media.event_id, media.id);
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, location))
        .json(MediaBody::new(media, &service)))
}

/// Aborts a direct upload: staged bytes, open multipart upload and record are removed.
#[utoipa::path(
    delete, path = "/api/v1/events/{event_id}/media/uploads/{upload_id}", tag = "uploads",
    params(("event_id" = Uuid, Path, description = "Event id"), ("upload_id" = Uuid, Path, description = "Upload id")),
    responses(
        (status = 204, description = "Aborted"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such upload in flight of the caller", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database or store unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn abort_upload(
    user: AuthUser,
    path: web::Path<(EventId, MediaId)>,
    service: web::Data<MediaService>,
) -> Result<HttpResponse, ApiError> {
    let (event_id, upload_id) = path.into_inner();
    service
        .abort_direct_upload(&user.0, event_id, upload_id)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Signs part URLs again, for a client whose URLs expired before it finished.
#[utoipa::path(
    post, path = "/api/v1/events/{event_id}/media/uploads/{upload_id}/parts", tag = "uploads",
    params(("event_id" = Uuid, Path, description = "Event id"), ("upload_id" = Uuid, Path, description = "Upload id")),
    request_body = ResignBody,
    responses(
        (status = 200, description = "The URLs", body = ResignedParts),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such upload in flight of the caller", body = Problem, content_type = "application/problem+json"),
        (status = 410, description = "The upload expired", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A part number out of range, or a single-PUT upload", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn resign_parts(
    user: AuthUser,
    path: web::Path<(EventId, MediaId)>,
    service: web::Data<MediaService>,
    body: web::Json<ResignBody>,
) -> Result<HttpResponse, ApiError> {
    let (event_id, upload_id) = path.into_inner();
    let parts = service
        .resign_direct_parts(&user.0, event_id, upload_id, &body.part_numbers)
        .await?;
    Ok(HttpResponse::Ok().json(ResignedParts {
        parts: part_urls(parts),
    }))
}
