//! `Idempotency-Key` on the routes that store: a retry of the same request within 24 hours is
//! answered with the first answer instead of storing twice; the same key on another request is
//! 422; a key whose first request is still running is 409.

use std::sync::Arc;

use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse};
use chrono::{TimeDelta, Utc};
use plugs_domain::UserId;
use plugs_persistence::{Claim, IdempotencyRepository, StoredAnswer};
use sha2::{Digest as _, Sha256};

use crate::error::ApiError;

/// The request header.
pub const HEADER: &str = "idempotency-key";

/// How long a first answer is kept.
const TTL: TimeDelta = TimeDelta::hours(24);

/// How long a claim without an answer holds its key: a request that died without answering
/// or releasing (a crash) no longer blocks its retries after this.
const CLAIM_TTL: TimeDelta = TimeDelta::hours(1);

/// A key the caller claimed: [`finish`] answers or releases it; dropped unfinished (the client
/// went away and the handler with it), it is released, so the retry is processed anew.
#[derive(Debug)]
pub struct Claimed {
    store: Arc<dyn IdempotencyRepository>,
    user: UserId,
    key: String,
    settled: bool,
}

impl Drop for Claimed {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let (store, user, key) = (
            Arc::clone(&self.store),
            self.user.clone(),
            std::mem::take(&mut self.key),
        );
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(error) = store.release(&user, &key).await {
                    tracing::warn!(error = %error, "could not release an abandoned Idempotency-Key");
                }
            });
        }
    }
}

/// What the request carries and what the key's history says.
#[derive(Debug)]
pub enum Begin {
    /// No key: process as usual.
    NoKey,
    /// A new key: process, then [`finish`] with the outcome.
    Claimed(Claimed),
    /// The key was answered before: compare the request's fingerprint, then [`replay`].
    Answered(StoredAnswer),
}

/// Reads the header and claims the key. A key in progress is 409 at once.
pub async fn begin(
    req: &HttpRequest,
    store: Arc<dyn IdempotencyRepository>,
    user: &UserId,
) -> Result<Begin, ApiError> {
    let Some(value) = req.headers().get(HEADER) else {
        return Ok(Begin::NoKey);
    };
    let key = value
        .to_str()
        .ok()
        .filter(|key| (1..=255).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| {
            ApiError::BadRequest(
                "Idempotency-Key must be 1 to 255 visible ASCII characters".to_owned(),
            )
        })?
        .to_owned();
    let claim = store
        .claim(user, &key, Utc::now(), TTL, CLAIM_TTL)
        .await
        .map_err(plugs_media::MediaError::from)?;
    match claim {
        Claim::Claimed => Ok(Begin::Claimed(Claimed {
            store,
            user: user.clone(),
            key,
            settled: false,
        })),
        Claim::InProgress => Err(ApiError::Conflict(
            "a request with this Idempotency-Key is still being processed; retry later".to_owned(),
        )),
        Claim::Answered(answer) => Ok(Begin::Answered(answer)),
    }
}

/// The first answer again, for a request with the same fingerprint; 422 for another request.
pub fn replay(answer: &StoredAnswer, fingerprint: &str) -> Result<HttpResponse, ApiError> {
    if answer.fingerprint != fingerprint {
        return Err(ApiError::Unprocessable(
            "this Idempotency-Key was used for another request".to_owned(),
        ));
    }
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK);
    let mut response = HttpResponse::build(status);
    response.content_type("application/json");
    response.insert_header(("idempotent-replayed", "true"));
    if let Some(location) = &answer.location {
        response.insert_header((header::LOCATION, location.clone()));
    }
    Ok(response.body(answer.body.clone()))
}

/// Keeps a success as the key's answer, or releases the key after a failure (nothing was
/// stored, so a retry is processed anew). A failure to keep the answer is logged: the request
/// itself succeeded.
pub async fn finish(
    mut claimed: Claimed,
    fingerprint: String,
    outcome: &Result<(StatusCode, String, Option<String>), ApiError>,
) {
    let result = match outcome {
        Ok((status, body, location)) => {
            let answer = StoredAnswer {
                fingerprint,
                status: status.as_u16(),
                body: body.clone(),
                location: location.clone(),
            };
            claimed
                .store
                .answer(&claimed.user, &claimed.key, &answer)
                .await
        }
        Err(_) => claimed.store.release(&claimed.user, &claimed.key).await,
    };
    claimed.settled = true;
    if let Err(error) = result {
        tracing::warn!(error = %error, "could not keep an Idempotency-Key's answer");
    }
}

/// A fingerprint of what identifies a request: a hash of its parts, each length-prefixed.
pub fn fingerprint(parts: &[&[u8]]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    hex::encode(hasher.finalize())
}
