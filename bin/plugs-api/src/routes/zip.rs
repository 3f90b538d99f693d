//! `GET /api/v1/events/{event_id}/media.zip`: every `ready` original of an event in one zip,
//! streamed as it is written.
//!
//! Entries are stored, not recompressed (photos and videos are compressed already), and written
//! with ZIP64 fields (`async_zip` streams every entry so, since its size is known only at its
//! end), so archives above 4 GiB or 65535 entries are fine. A writer task writes the zip into a
//! small in-memory pipe that the response body drains: memory is the pipe, one chunk of the
//! member being copied, and the zip's central directory (a few dozen bytes per member), however
//! large the event.

use actix_web::http::Method;
use actix_web::http::header::{self, ContentDisposition, DispositionParam, DispositionType};
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder, web};
use async_zip::base::write::ZipFileWriter;
use async_zip::{Compression, ZipDateTimeBuilder, ZipEntryBuilder};
use chrono::{Datelike as _, Timelike as _};
use futures::{AsyncWriteExt as _, StreamExt as _};
use plugs_domain::EventId;
use plugs_media::{EventArchive, MediaService};
use tokio::sync::oneshot;
use tokio_util::io::ReaderStream;

use crate::auth::AuthUser;
use crate::error::{ApiError, Problem};
use crate::routes::get_or_head;

/// Bytes the pipe between the zip writer and the response holds.
const PIPE_BYTES: usize = 64 * 1024;

/// Registers the route.
pub fn config(cfg: &mut web::ServiceConfig) {
    cfg.route("/events/{event_id}/media.zip", get_or_head().to(event_zip));
}

/// Every ready original of one of the caller's events, as a zip.
///
/// Entries are stored as uploaded (no recompression), named after their original file names,
/// made safe (no directories, no leading dots) and unique (`photo (2).jpg`), or after the media
/// id when there is none. The archive streams as it is written, so it has no `Content-Length`;
/// if the store fails part way, the connection is cut rather than ended cleanly, so a client
/// never mistakes a short archive for a whole one.
#[utoipa::path(
    get, path = "/api/v1/events/{event_id}/media.zip", tag = "media",
    params(("event_id" = Uuid, Path, description = "Event id")),
    responses(
        (status = 200, description = "The zip, streamed", content_type = "application/zip", body = Vec<u8>, headers(
            ("Content-Disposition" = String, description = "`attachment; filename=\"event-{event_id}.zip\"`"),
        )),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such event of the caller", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn event_zip(
    req: HttpRequest,
    user: AuthUser,
    path: web::Path<EventId>,
    service: web::Data<MediaService>,
) -> Result<HttpResponse, ApiError> {
    let event_id = path.into_inner();
    // Ownership is checked before the answer starts, so a foreign event is a clean 404.
    let archive = service.open_event_archive(&user.0, event_id).await?;
    if req.method() == Method::HEAD {
        // The headers alone: nothing is read from the store.
        return Ok(zip_headers(event_id).finish());
    }
    let (reader, writer) = tokio::io::duplex(PIPE_BYTES);
    let (done_tx, done_rx) = oneshot::channel();
    actix_web::rt::spawn(async move {
        let outcome = write_zip(archive, writer).await;
        if let Err(error) = &outcome {
            tracing::warn!(%event_id, %error, "event zip cut short");
        }
        // The receiver is gone only if the client left; nothing to tell then.
        let _ = done_tx.send(outcome);
    });
    // The pipe's end, then the writer's verdict: an error after the last byte becomes a body
    // error, which makes actix-web abort the connection instead of ending the chunked body.
    let verdict = futures::stream::once(async move {
        match done_rx.await {
            Ok(Ok(())) => None,
            Ok(Err(error)) => Some(Err(std::io::Error::other(error))),
            Err(_) => Some(Err(std::io::Error::other("zip writer stopped"))),
        }
    })
    .filter_map(futures::future::ready);
    let body = ReaderStream::new(reader).chain(verdict);
    Ok(zip_headers(event_id).streaming::<_, std::io::Error>(body))
}

fn zip_headers(event_id: EventId) -> HttpResponseBuilder {
    let mut response = HttpResponse::Ok();
    response
        .content_type("application/zip")
        .insert_header(ContentDisposition {
            disposition: DispositionType::Attachment,
            parameters: vec![DispositionParam::Filename(format!("event-{event_id}.zip"))],
        })
        .insert_header((header::CACHE_CONTROL, "private, no-store"));
    response
}

/// Writes every member into `out` and the central directory at the end.
async fn write_zip(mut archive: EventArchive, out: tokio::io::DuplexStream) -> Result<(), String> {
    let mut zip = ZipFileWriter::with_tokio(out);
    while let Some((member, object)) = archive.next_member().await.map_err(|e| e.to_string())? {
        let created = member.media.created_at;
        let modified = ZipDateTimeBuilder::new()
            .year(created.year())
            .month(created.month())
            .day(created.day())
            .hour(created.hour())
            .minute(created.minute())
            .second(created.second())
            .build();
        let entry = ZipEntryBuilder::new(member.name.clone().into(), Compression::Stored)
            .last_modification_date(modified)
            .unix_permissions(0o644);
        let mut writer = zip
            .write_entry_stream(entry)
            .await
            .map_err(|e| format!("{}: {e}", member.name))?;
        let mut body = object.body;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| format!("{}: {e}", member.name))?;
            writer
                .write_all(&chunk)
                .await
                .map_err(|e| format!("{}: {e}", member.name))?;
        }
        writer
            .close()
            .await
            .map_err(|e| format!("{}: {e}", member.name))?;
    }
    let mut out = zip.close().await.map_err(|e| e.to_string())?;
    tokio::io::AsyncWriteExt::shutdown(out.get_mut())
        .await
        .map_err(|e| e.to_string())
}
