//! `/api/v1/events/{event_id}/media/uploads`: direct uploads. The client sends its bytes straight
//! to the store through presigned URLs; completing the upload verifies them and makes the media.

use std::sync::Arc;

use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, ResponseError as _, web};
use chrono::{DateTime, TimeDelta, Utc};
use plugs_domain::{EventId, EventMedia, MediaId, UserId};
use plugs_media::{
    Completion, DirectUploadRequest, DirectUploadStatus, MediaError, MediaService, UploadFields,
    UploadPlan,
};
use plugs_persistence::{IdempotencyRepository, StoredAnswer};
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
        "/events/{event_id}/media/uploads/{upload_id}",
        crate::routes::get_or_head().to(upload_status),
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

/// How long a client polling a completion that runs in the background is asked to wait.
const POLL_AFTER_SECS: u64 = 2;

/// How long a background completion's refusal is kept for its client to fetch.
const OUTCOME_TTL: TimeDelta = TimeDelta::hours(24);

/// Where a background completion's refusal is kept (beside the Idempotency-Key answers; a
/// client's key cannot contain a space, so it cannot name this one).
fn outcome_key(upload_id: MediaId) -> String {
    format!("direct-upload outcome {upload_id}")
}

/// A completion running in the background, answered to the request that started it, to one
/// that completes again meanwhile, and to the status URL while it runs.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CompletionBody {
    /// The upload.
    pub upload_id: Uuid,
    /// `verifying`.
    #[schema(example = "verifying")]
    pub status: String,
}

fn accepted(event_id: EventId, upload_id: MediaId) -> HttpResponse {
    HttpResponse::Accepted()
        .insert_header((
            header::LOCATION,
            format!("/api/v1/events/{event_id}/media/uploads/{upload_id}"),
        ))
        .insert_header((header::RETRY_AFTER, POLL_AFTER_SECS.to_string()))
        .json(CompletionBody {
            upload_id: upload_id.as_uuid(),
            status: "verifying".to_owned(),
        })
}

fn completed(status: StatusCode, media: EventMedia, service: &MediaService) -> HttpResponse {
    let location = format!("/api/v1/events/{}/media/{}", media.event_id, media.id);
    HttpResponse::build(status)
        .insert_header((header::LOCATION, location))
        .json(MediaBody::new(media, service))
}

/// Verifies a claimed upload after its request was answered; a failure is kept as the problem
/// the synchronous path would have answered, for the status URL.
async fn complete_in_background(
    service: web::Data<MediaService>,
    answers: Arc<dyn IdempotencyRepository>,
    user: UserId,
    completion: plugs_media::DirectCompletion,
    parts: Option<Vec<CompletedPart>>,
) {
    let upload_id = completion.upload_id();
    let keep = move |error: MediaError| {
        tracing::info!(%upload_id, error = %error, "a direct upload's background completion failed");
        let response = ApiError::Media(error).error_response();
        async move {
            let status = response.status().as_u16();
            let body = match actix_web::body::to_bytes(response.into_body()).await {
                Ok(body) => String::from_utf8_lossy(&body).into_owned(),
                Err(_) => return,
            };
            let answer = StoredAnswer {
                fingerprint: String::new(),
                status,
                body,
                location: None,
            };
            if let Err(error) = answers
                .put_answer(&user, &outcome_key(upload_id), &answer, Utc::now())
                .await
            {
                tracing::warn!(%upload_id, error = %error, "could not keep a background completion's outcome");
            }
        }
    };
    service
        .finish_direct_upload_then(completion, parts, keep)
        .await;
}

/// Completes a direct upload: verifies the bytes and answers the media record.
///
/// The size is checked against the declaration, the head of the bytes is sniffed against the
/// declared type and the extension (as for a form upload), the SHA-256 is established (and
/// compared with a declared one), and the bytes move from their staging key to their final key.
/// Anything that fails verification is deleted. Completing twice answers the same record.
///
/// Above `DIRECT_UPLOAD_ASYNC_COMPLETE_ABOVE` bytes, reading the object back takes a while: the
/// answer is 202 at once, with the status URL in `Location` and `Retry-After`; the verification
/// runs in the background, and the status URL answers its outcome. A completion asked again
/// while one runs (here or on another server process) answers 202 too and verifies nothing.
#[utoipa::path(
    post, path = "/api/v1/events/{event_id}/media/uploads/{upload_id}/complete", tag = "uploads",
    params(("event_id" = Uuid, Path, description = "Event id"), ("upload_id" = Uuid, Path, description = "Upload id")),
    request_body(content = CompleteBody, description = "The parts of a multipart upload; empty for a single PUT"),
    responses(
        (status = 201, description = "The media", body = MediaBody, headers(("Location" = String))),
        (status = 202, description = "Verifying in the background: poll Location", body = CompletionBody, headers(("Location" = String), ("Retry-After" = u64))),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such upload of the caller", body = Problem, content_type = "application/problem+json"),
        (status = 410, description = "The upload expired; it has been removed", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Larger than MAX_FILE_SIZE", body = Problem, content_type = "application/problem+json"),
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
    answers: web::Data<dyn IdempotencyRepository>,
    body: Option<web::Json<CompleteBody>>,
) -> Result<HttpResponse, ApiError> {
    let (event_id, upload_id) = path.into_inner();
    let parts = body.and_then(|body| body.into_inner().parts).map(|parts| {
        parts
            .into_iter()
            .map(|part| CompletedPart::new(part.part_number, part.etag))
            .collect()
    });
    let completion = match service
        .begin_direct_completion(&user.0, event_id, upload_id)
        .await?
    {
        Completion::Done(media) => return Ok(completed(StatusCode::CREATED, media, &service)),
        Completion::Running => return Ok(accepted(event_id, upload_id)),
        Completion::Claimed(completion) => completion,
    };
    if completion.size() <= service.config().direct_complete_async_above {
        let media = service.finish_direct_upload(completion, parts).await?;
        return Ok(completed(StatusCode::CREATED, media, &service));
    }
    // The lease travels with the task: renewed while it runs, lapsing if this process dies.
    actix_web::rt::spawn(complete_in_background(
        service.clone(),
        answers.into_inner(),
        user.0,
        completion,
        parts,
    ));
    Ok(accepted(event_id, upload_id))
}

/// A kept refusal, answered as it was first given.
fn replay(answer: StoredAnswer) -> HttpResponse {
    HttpResponse::build(StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK))
        .content_type("application/problem+json")
        .body(answer.body)
}

/// Where a direct upload stands, for a client polling a completion that runs in the background:
/// 202 with `Retry-After` while it verifies, then 200 with the media, or the problem the
/// completion answered (413, 415, 422: the upload was removed; 422 for a wrong part list and
/// 503 for an outage leave it to another completion). 409 while no completion runs.
#[utoipa::path(
    get, path = "/api/v1/events/{event_id}/media/uploads/{upload_id}", tag = "uploads",
    params(("event_id" = Uuid, Path, description = "Event id"), ("upload_id" = Uuid, Path, description = "Upload id")),
    responses(
        (status = 200, description = "Completed: the media", body = MediaBody, headers(("Location" = String))),
        (status = 202, description = "Verifying: poll again after Retry-After", body = CompletionBody, headers(("Location" = String), ("Retry-After" = u64))),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such upload of the caller", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not being completed: POST complete", body = Problem, content_type = "application/problem+json"),
        (status = 410, description = "The upload expired", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The completion refused a file larger than MAX_FILE_SIZE", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "The completion refused bytes not of the declared type or extension", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The completion refused another size or SHA-256, or a wrong part list", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn upload_status(
    user: AuthUser,
    path: web::Path<(EventId, MediaId)>,
    service: web::Data<MediaService>,
    answers: web::Data<dyn IdempotencyRepository>,
) -> Result<HttpResponse, ApiError> {
    let (event_id, upload_id) = path.into_inner();
    let kept = || async {
        answers
            .find_answer(&user.0, &outcome_key(upload_id), Utc::now(), OUTCOME_TTL)
            .await
            .map_err(MediaError::from)
    };
    match service
        .direct_upload_status(&user.0, event_id, upload_id)
        .await
    {
        Ok(DirectUploadStatus::Ready(media)) => Ok(completed(StatusCode::OK, *media, &service)),
        Ok(DirectUploadStatus::Completing) => Ok(accepted(event_id, upload_id)),
        Ok(DirectUploadStatus::Waiting { .. }) => match kept().await? {
            Some(answer) => Ok(replay(answer)),
            None => Err(ApiError::Conflict(format!(
                "upload {upload_id} is not being completed: POST \
                 /api/v1/events/{event_id}/media/uploads/{upload_id}/complete"
            ))),
        },
        Err(error @ MediaError::NotFound { .. }) => match kept().await? {
            Some(answer) => Ok(replay(answer)),
            None => Err(error.into()),
        },
        Err(error) => Err(error.into()),
    }
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
