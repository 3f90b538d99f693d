//! The span every request runs in, and the one line a refused request leaves in the log.
//!
//! tracing-actix-web's default span logs the request target verbatim, query string included, and
//! its `emit_event_on_error` feature (off in this workspace) wrote every 4xx as a WARN line with
//! the error's `Debug`. So a presigned URL answered 416 put its working `signature=` into the
//! log, and a stream of bad tokens wrote about 1 KB each. Here the target is redacted (and cut
//! short), the method is a closed set, client errors are one DEBUG line, and 401s are left to
//! the authenticator, which logs why once at DEBUG, never the token.

use std::borrow::Cow;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::{Error, HttpMessage as _};
use tracing::Span;
use tracing_actix_web::{RequestId, RootSpanBuilder};

use crate::error::ApiError;

/// Query parameters whose value is a credential: our presigned URLs' `signature`, S3's SigV4
/// query parameters, and bearer tokens some clients put in the URL. Compared case-insensitively
/// after percent-decoding, as the query extractor reads them.
const SECRET_PARAMS: &[&str] = &[
    "signature",
    "x-amz-signature",
    "x-amz-credential",
    "x-amz-security-token",
    "access_token",
    "token",
];

/// Longest target kept in the log, in bytes; a longer one is cut and marked.
const MAX_TARGET_LEN: usize = 512;

/// What replaces a secret parameter's value.
pub const REDACTED: &str = "REDACTED";

/// The request's path and query as logged: every secret parameter's value replaced by
/// `REDACTED`, the rest as sent, cut to 512 bytes.
///
/// ```
/// use plugs_api::request_log::redact_target;
/// assert_eq!(
///     redact_target("/api/v1/objects/k?method=GET&expires=9&signature=abc"),
///     "/api/v1/objects/k?method=GET&expires=9&signature=REDACTED"
/// );
/// assert_eq!(redact_target("/healthz"), "/healthz");
/// ```
pub fn redact_target(target: &str) -> Cow<'_, str> {
    let redacted = match target.split_once('?') {
        None => Cow::Borrowed(target),
        Some((path, query)) => {
            let mut out = String::with_capacity(target.len());
            out.push_str(path);
            out.push('?');
            for (at, pair) in query.split('&').enumerate() {
                if at > 0 {
                    out.push('&');
                }
                let raw_name = pair.split_once('=').map_or(pair, |(name, _)| name);
                let name = url::form_urlencoded::parse(raw_name.as_bytes())
                    .next()
                    .map(|(name, _)| name.to_ascii_lowercase())
                    .unwrap_or_default();
                if SECRET_PARAMS.contains(&name.as_str()) {
                    out.push_str(raw_name);
                    out.push('=');
                    out.push_str(REDACTED);
                } else {
                    out.push_str(pair);
                }
            }
            Cow::Owned(out)
        }
    };
    if redacted.len() <= MAX_TARGET_LEN {
        return redacted;
    }
    let mut cut = MAX_TARGET_LEN;
    while !redacted.is_char_boundary(cut) {
        cut -= 1;
    }
    Cow::Owned(format!("{}…(cut)", &redacted[..cut]))
}

/// The root span of every request: method (from a closed set), route pattern, redacted target,
/// request id, and the status once known.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestSpan;

impl RootSpanBuilder for RequestSpan {
    fn on_request_start(request: &ServiceRequest) -> Span {
        let request_id = request
            .extensions()
            .get::<RequestId>()
            .map(ToString::to_string)
            .unwrap_or_default();
        let route = request.match_pattern();
        tracing::info_span!(
            "HTTP request",
            http.method = crate::metrics::method_label(request.method()),
            http.route = route.as_deref().unwrap_or(crate::metrics::UNMATCHED),
            http.target = %redact_target(
                request.uri().path_and_query().map_or("", |p| p.as_str())
            ),
            request_id = %request_id,
            http.status_code = tracing::field::Empty,
        )
    }

    fn on_request_end<B: MessageBody>(span: Span, outcome: &Result<ServiceResponse<B>, Error>) {
        let (status, error) = match outcome {
            Ok(response) => (response.status(), response.response().error()),
            Err(error) => (error.as_response_error().status_code(), Some(error)),
        };
        span.record("http.status_code", status.as_u16());
        let Some(error) = error else {
            return;
        };
        let from_api = error.as_error::<ApiError>().is_some();
        if status.is_server_error() {
            // ApiError logs its own server errors, with their causes, where it builds the answer.
            if !from_api {
                tracing::error!(status = status.as_u16(), error = %error, "request failed");
            }
        } else if status != StatusCode::UNAUTHORIZED {
            // The client's mistake: worth a line when debugging, never a warning an attacker can
            // fill the log with.
            tracing::debug!(status = status.as_u16(), error = %error, "request refused");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_in_the_query_are_redacted_and_the_rest_kept() {
        assert_eq!(
            redact_target("/o/k?X-Amz-Credential=AKIA%2F1&X-Amz-Signature=ff&x=1&Signature=s"),
            "/o/k?X-Amz-Credential=REDACTED&X-Amz-Signature=REDACTED&x=1&Signature=REDACTED"
        );
        // The query extractor percent-decodes names, so a disguised name is caught too.
        assert_eq!(
            redact_target("/o/k?sig%6Eature=abc&expires=1"),
            "/o/k?sig%6Eature=REDACTED&expires=1"
        );
        assert_eq!(redact_target("/o/k?signature"), "/o/k?signature=REDACTED");
        assert_eq!(redact_target("/o/k?a=1&&b"), "/o/k?a=1&&b");
    }

    #[test]
    fn long_targets_are_cut_on_a_char_boundary() {
        let long = format!("/{}", "é".repeat(600));
        let logged = redact_target(&long);
        assert!(logged.len() <= MAX_TARGET_LEN + "…(cut)".len());
        assert!(logged.ends_with("…(cut)"));
    }
}
