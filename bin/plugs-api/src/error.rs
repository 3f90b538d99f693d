//! Errors become HTTP here, once: [`ApiError`] and RFC 9457 problem details.

use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use serde::Serialize;
use utoipa::ToSchema;

/// The media type of problem-details bodies.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An RFC 9457 problem-details body.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// A URI reference for the problem type; `about:blank` means "see the status code".
    #[serde(rename = "type")]
    #[schema(example = "about:blank")]
    pub problem_type: String,
    /// Short summary (the status code's reason phrase).
    #[schema(example = "Not Found")]
    pub title: String,
    /// The HTTP status code.
    #[schema(example = 404)]
    pub status: u16,
    /// What went wrong, for a human.
    #[schema(example = "event not found")]
    pub detail: String,
}

impl Problem {
    /// A problem of type `about:blank` with the status's reason phrase as title.
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self {
            problem_type: "about:blank".to_owned(),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
        }
    }

    /// The response carrying this problem.
    pub fn response(&self) -> HttpResponse {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        HttpResponse::build(status)
            .content_type(PROBLEM_JSON)
            .json(self)
    }
}

/// Every way a request can fail, as the HTTP layer sees it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// An error from the media service.
    #[error(transparent)]
    Media(#[from] plugs_media::MediaError),
    /// No valid bearer token.
    #[error("a valid bearer token is required")]
    Unauthorized {
        /// Whether a token was given (and refused), for `WWW-Authenticate: error="invalid_token"`.
        token_given: bool,
    },
    /// A presigned URL whose signature is wrong or expired.
    #[error("{0}")]
    Forbidden(&'static str),
    /// No such resource (or not the caller's).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The request is malformed (bad JSON syntax, malformed multipart, bad query string).
    #[error("{0}")]
    BadRequest(String),
    /// The request body is larger than allowed.
    #[error("request body too large: the limit is {limit} bytes")]
    PayloadTooLarge {
        /// The limit, in bytes.
        limit: u64,
    },
    /// An upload's body was cut by its limits (too many bytes outside the file, too slow, silent).
    #[error("{0}")]
    BodyRefused(crate::body_guard::Refusal),
    /// The request's `Content-Type` is not one this route accepts.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The request conflicts with one in progress (an `Idempotency-Key` still being processed).
    #[error("{0}")]
    Conflict(String),
    /// Well-formed but semantically invalid input.
    #[error("{0}")]
    Unprocessable(String),
    /// A bug or a misconfiguration in this server.
    #[error("internal error: {context}")]
    Internal {
        /// What was being done.
        context: &'static str,
    },
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            Self::Media(err) => media_status(err),
            Self::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BodyRefused(refusal) => match refusal {
                crate::body_guard::Refusal::FormTooLarge { .. }
                | crate::body_guard::Refusal::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                crate::body_guard::Refusal::Idle(_)
                | crate::body_guard::Refusal::TooSlow { .. } => StatusCode::REQUEST_TIMEOUT,
            },
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// What the client is told. Server-side failures say little: their details go to the log.
    fn detail(&self, status: StatusCode) -> String {
        match status {
            StatusCode::SERVICE_UNAVAILABLE => {
                "a backing service is unavailable, try again later".to_owned()
            }
            s if s.is_server_error() => "internal server error".to_owned(),
            _ => self.to_string(),
        }
    }
}

/// The one place media errors become status codes.
fn media_status(err: &plugs_media::MediaError) -> StatusCode {
    use plugs_domain::DomainError;
    use plugs_media::MediaError;
    use plugs_persistence::RepoError;
    use plugs_storage::StoreError;
    match err {
        MediaError::NotFound { .. } | MediaError::Invalid(DomainError::NotOwner) => {
            StatusCode::NOT_FOUND
        }
        MediaError::Invalid(_)
        | MediaError::EmptyFile
        | MediaError::SizeMismatch { .. }
        | MediaError::ChecksumMismatch
        | MediaError::Store(StoreError::InvalidPart { .. }) => StatusCode::UNPROCESSABLE_ENTITY,
        MediaError::UploadExpired { .. } => StatusCode::GONE,
        MediaError::QuotaExceeded { .. } => StatusCode::FORBIDDEN,
        MediaError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        MediaError::UnsupportedType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        MediaError::PreconditionFailed { .. } => StatusCode::PRECONDITION_FAILED,
        MediaError::NotModified => StatusCode::NOT_MODIFIED,
        MediaError::RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
        MediaError::UploadInterrupted { .. } => StatusCode::BAD_REQUEST,
        MediaError::Store(StoreError::Unavailable { .. } | StoreError::Timeout { .. }) => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        // GLACIER or DEEP_ARCHIVE: the bytes exist but need a restore first.
        MediaError::Store(StoreError::Archived { .. }) => StatusCode::CONFLICT,
        MediaError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        MediaError::Repository(RepoError::Unavailable { .. }) => StatusCode::SERVICE_UNAVAILABLE,
        MediaError::Repository(_) => StatusCode::INTERNAL_SERVER_ERROR,
        // MediaError is non_exhaustive: a case added later is a server problem until classified.
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The error and its sources, joined, for the log.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(next) = source {
        text.push_str(": ");
        text.push_str(&next.to_string());
        source = next.source();
    }
    text
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status()
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(status = status.as_u16(), error = %chain(self), "request failed");
        }
        match self {
            Self::Media(plugs_media::MediaError::NotModified) => {
                return HttpResponse::NotModified().finish();
            }
            Self::Media(plugs_media::MediaError::Store(plugs_storage::StoreError::Archived {
                ..
            })) => {
                return Problem::new(
                    status,
                    "the file is archived (GLACIER or DEEP_ARCHIVE): restore it first, then retry; \
                     restore: ask an operator to run `aws s3api restore-object` on its s3_key \
                     (docs/S3.md, archived originals)",
                )
                .response();
            }
            Self::Media(plugs_media::MediaError::RangeNotSatisfiable { size }) => {
                let mut response = Problem::new(status, self.detail(status)).response();
                if let Ok(value) = header::HeaderValue::from_str(&format!("bytes */{size}")) {
                    response.headers_mut().insert(header::CONTENT_RANGE, value);
                }
                return response;
            }
            _ => {}
        }
        let mut response = Problem::new(status, self.detail(status)).response();
        // A body cut by its limits is not read any further: close the connection rather than
        // drain whatever the client goes on sending.
        if matches!(self, Self::BodyRefused(_) | Self::PayloadTooLarge { .. }) {
            response
                .head_mut()
                .set_connection_type(actix_web::http::ConnectionType::Close);
        }
        if let Self::Unauthorized { token_given } = self {
            let challenge = if *token_given {
                "Bearer error=\"invalid_token\""
            } else {
                "Bearer"
            };
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static(challenge),
            );
        }
        response
    }
}

/// `JsonConfig` error handler: syntax errors are 400, a body of the wrong shape is 422.
pub fn json_error(err: actix_web::error::JsonPayloadError, _req: &HttpRequest) -> actix_web::Error {
    use actix_web::error::JsonPayloadError;
    let api = match &err {
        JsonPayloadError::ContentType => {
            ApiError::UnsupportedMediaType("expected application/json".to_owned())
        }
        JsonPayloadError::Deserialize(de) if de.is_data() => {
            ApiError::Unprocessable(de.to_string())
        }
        JsonPayloadError::Overflow { limit }
        | JsonPayloadError::OverflowKnownLength { limit, .. } => ApiError::PayloadTooLarge {
            limit: *limit as u64,
        },
        _ => ApiError::BadRequest(format!("malformed JSON body: {err}")),
    };
    api.into()
}

/// `PathConfig` error handler: an id that is not a UUID names no resource, so 404.
pub fn path_error(_err: actix_web::error::PathError, _req: &HttpRequest) -> actix_web::Error {
    ApiError::NotFound("resource").into()
}

/// `QueryConfig` error handler: a malformed query string is 400.
pub fn query_error(
    err: actix_web::error::QueryPayloadError,
    _req: &HttpRequest,
) -> actix_web::Error {
    ApiError::BadRequest(format!("malformed query string: {err}")).into()
}

/// The default service: unknown routes answer a 404 problem.
pub async fn not_found() -> HttpResponse {
    Problem::new(StatusCode::NOT_FOUND, "no such route").response()
}
