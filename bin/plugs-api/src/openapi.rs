//! The OpenAPI 3.1 document, generated from the handlers' annotations.

use actix_web::HttpResponse;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::error::Problem;
use crate::routes::{events, health, local_objects, media, tus, uploads, variants, zip};

/// The API description.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "plugs-media API",
        description = "Media attached to events: photos, videos and documents stored in S3 or a \
                       compatible store. Errors are RFC 9457 problem details \
                       (`application/problem+json`). Ids that are not UUIDs answer 404, like ids \
                       that name nothing the caller owns."
    ),
    paths(
        events::create_event,
        events::list_events,
        events::get_event,
        events::patch_event,
        events::delete_event,
        media::upload_media,
        media::list_media,
        media::get_media,
        media::patch_media,
        media::delete_media,
        media::download_media,
        media::stream_media,
        media::presign_media,
        variants::thumbnail,
        zip::event_zip,
        uploads::create_upload,
        uploads::complete_upload,
        uploads::upload_status,
        uploads::abort_upload,
        uploads::resign_parts,
        tus::options,
        tus::create_upload,
        tus::upload_status,
        tus::append_chunk,
        tus::terminate_upload,
        uploads::usage,
        local_objects::get_object,
        local_objects::put_object,
        health::healthz,
        health::readyz,
        health::metrics_doc,
        openapi_json,
    ),
    components(schemas(
        Problem,
        events::EventBody,
        events::CreateEvent,
        events::EventPage,
        events::EventPatch,
        media::MediaBody,
        media::MediaPage,
        media::MediaPatch,
        media::PresignedUrlBody,
        media::UploadForm,
        variants::VariantBody,
        variants::ProcessingBody,
        health::Status,
        health::Readiness,
        health::ReadinessDetails,
        health::ExternalDecoder,
        uploads::CreateUploadBody,
        uploads::UploadPlanBody,
        uploads::PartUrl,
        uploads::CompleteBody,
        uploads::CompletionBody,
        uploads::CompletedPartBody,
        uploads::ResignBody,
        uploads::ResignedParts,
        uploads::UsageBody,
        uploads::EventUsageBody,
    )),
    modifiers(&BearerAuth),
    tags(
        (name = "events", description = "Events owned by the caller"),
        (name = "media", description = "Files attached to events"),
        (name = "uploads", description = "Direct uploads: bytes sent straight to the store through presigned URLs, verified on completion"),
        (name = "tus", description = "Resumable uploads over tus 1.0.0 (creation, creation-with-upload, creation-defer-length, termination, expiration, checksum)"),
        (name = "operations", description = "Probes, metrics and this document"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "operations", responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json")))]
pub async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}
