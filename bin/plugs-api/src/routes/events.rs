//! `/api/v1/events`: create, list, get, edit, delete.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use plugs_domain::{Event, EventId};
use plugs_media::{EventEdit, MediaService, PageRequest};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::auth::AuthUser;
use crate::error::{ApiError, Problem};
use crate::routes::get_or_head;
use crate::routes::preconditions::{if_match, with_etag};

/// An event as the API shows it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EventBody {
    /// Identifier.
    pub id: Uuid,
    /// Display title.
    pub title: String,
    /// The user who created it.
    pub owner: String,
    /// Creation time (UTC).
    pub created_at: DateTime<Utc>,
}

impl From<Event> for EventBody {
    fn from(event: Event) -> Self {
        Self {
            id: event.id.as_uuid(),
            title: event.title,
            owner: event.owner.into(),
            created_at: event.created_at,
        }
    }
}

/// The body of `POST /events`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateEvent {
    /// Display title, 1 to 200 characters.
    #[schema(example = "Summer party")]
    pub title: String,
}

/// The body of `PATCH /events/{event_id}`: the fields to change. A field absent (or `null`)
/// keeps its value.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventPatch {
    /// New display title, 1 to 200 characters.
    #[schema(example = "Summer party, day two")]
    pub title: Option<String>,
}

/// A page of events, newest first.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EventPage {
    /// The events.
    pub items: Vec<EventBody>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// Paging of list routes.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Page size, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl From<PageQuery> for PageRequest {
    fn from(query: PageQuery) -> Self {
        PageRequest {
            cursor: query.cursor,
            limit: query.limit,
        }
    }
}

/// Registers the routes.
pub fn config(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/events")
            .route(web::post().to(create_event))
            .route(get_or_head().to(list_events)),
    )
    .service(
        web::resource("/events/{event_id}")
            .route(get_or_head().to(get_event))
            .route(web::patch().to(patch_event))
            .route(web::delete().to(delete_event)),
    );
}

/// Creates an event owned by the caller.
#[utoipa::path(
    post, path = "/api/v1/events", tag = "events", request_body = CreateEvent,
    responses(
        (status = 201, description = "Created", body = EventBody, headers(("Location" = String))),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid title", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn create_event(
    user: AuthUser,
    service: web::Data<MediaService>,
    body: web::Json<CreateEvent>,
) -> Result<HttpResponse, ApiError> {
    let event = service.create_event(&user.0, &body.title).await?;
    let location = format!("/api/v1/events/{}", event.id);
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, location))
        .json(EventBody::from(event)))
}

/// Lists the caller's events, newest first.
#[utoipa::path(
    get, path = "/api/v1/events", tag = "events", params(PageQuery),
    responses(
        (status = 200, description = "A page of events", body = EventPage),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid limit or cursor", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn list_events(
    user: AuthUser,
    service: web::Data<MediaService>,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let page = service
        .list_events(&user.0, query.into_inner().into())
        .await?;
    Ok(HttpResponse::Ok().json(EventPage {
        items: page.items.into_iter().map(EventBody::from).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// One of the caller's events. Someone else's event answers 404, like a missing one; so does an
/// id that is not a UUID. The `ETag` names this version of the event, for `If-Match` on `PATCH`.
#[utoipa::path(
    get, path = "/api/v1/events/{event_id}", tag = "events",
    params(("event_id" = Uuid, Path, description = "Event id (a UUID; anything else answers 404)")),
    responses(
        (status = 200, description = "The event", body = EventBody, headers(("ETag" = String, description = "This version of the event"))),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such event of the caller", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn get_event(
    user: AuthUser,
    service: web::Data<MediaService>,
    path: web::Path<EventId>,
) -> Result<HttpResponse, ApiError> {
    let event = service.get_event(&user.0, path.into_inner()).await?;
    Ok(with_etag(HttpResponse::Ok(), event.updated_at).json(EventBody::from(event)))
}

/// Renames one of the caller's events.
///
/// With `If-Match` (the `ETag` of a `GET` or an earlier `PATCH`), the edit applies only to that
/// version: if the event changed since, the answer is 412 and nothing changes, so two editors
/// never silently overwrite each other. Without `If-Match` the edit applies to the current
/// version. The answer carries the new `ETag`.
#[utoipa::path(
    patch, path = "/api/v1/events/{event_id}", tag = "events", request_body = EventPatch,
    params(
        ("event_id" = Uuid, Path, description = "Event id"),
        ("If-Match" = Option<String>, Header, description = "The `ETag` of the version the edit applies to; `*` or absent: any version"),
    ),
    responses(
        (status = 200, description = "The event as stored", body = EventBody, headers(("ETag" = String, description = "The new version of the event"))),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such event of the caller", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "The event changed since the version in `If-Match`; nothing was changed", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not a JSON body", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid title or unknown field", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn patch_event(
    req: HttpRequest,
    user: AuthUser,
    service: web::Data<MediaService>,
    path: web::Path<EventId>,
    body: web::Json<EventPatch>,
) -> Result<HttpResponse, ApiError> {
    let edit = EventEdit {
        title: body.into_inner().title,
    };
    let event = service
        .edit_event(&user.0, path.into_inner(), &edit, &if_match(&req))
        .await?;
    Ok(with_etag(HttpResponse::Ok(), event.updated_at).json(EventBody::from(event)))
}

/// Deletes one of the caller's events with all its media, objects included.
#[utoipa::path(
    delete, path = "/api/v1/events/{event_id}", tag = "events",
    params(("event_id" = Uuid, Path, description = "Event id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such event of the caller", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database or store unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn delete_event(
    user: AuthUser,
    service: web::Data<MediaService>,
    path: web::Path<EventId>,
) -> Result<HttpResponse, ApiError> {
    service.delete_event(&user.0, path.into_inner()).await?;
    Ok(HttpResponse::NoContent().finish())
}
