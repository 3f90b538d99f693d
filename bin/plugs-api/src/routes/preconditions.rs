//! Versions of records over HTTP: the `ETag` a record is served with, and the `If-Match` an
//! edit is guarded by (RFC 9110 §8.8.3, §13.1.1).
//!
//! A record's version is its `updated_at`, which every edit moves forward; its entity tag is
//! that instant in microseconds since the epoch, quoted: `"1750000000123456"`. Tags are strong:
//! the JSON of one version is always the same bytes, and `If-Match` compares strongly, so a weak
//! tag (`W/"…"`) never matches.

use actix_web::http::header::{self, EntityTag, Header as _};
use actix_web::{HttpRequest, HttpResponseBuilder};
use chrono::{DateTime, Utc};
use plugs_media::IfMatch;

/// The entity tag of the version `updated_at`.
pub fn record_etag(updated_at: DateTime<Utc>) -> EntityTag {
    EntityTag::new_strong(updated_at.timestamp_micros().to_string())
}

/// Puts the version's `ETag` on a response.
pub fn with_etag(
    mut response: HttpResponseBuilder,
    updated_at: DateTime<Utc>,
) -> HttpResponseBuilder {
    response.insert_header(header::ETag(record_etag(updated_at)));
    response
}

/// The request's `If-Match` as the service's precondition. No header, or `*`, allows any
/// version. Otherwise only the versions the strong tags name; a weak tag, a tag this server
/// never issued or a header that does not parse names none, so the edit is refused (412) and
/// nothing changes: a client that sent a precondition never gets an unguarded write.
pub fn if_match(req: &HttpRequest) -> IfMatch {
    if req.headers().get(header::IF_MATCH).is_none() {
        return IfMatch::Any;
    }
    match header::IfMatch::parse(req) {
        Ok(header::IfMatch::Any) => IfMatch::Any,
        Ok(header::IfMatch::Items(tags)) => IfMatch::UpdatedAt(
            tags.iter()
                .filter(|tag| !tag.weak)
                .filter_map(|tag| tag.tag().parse::<i64>().ok())
                .filter_map(DateTime::from_timestamp_micros)
                .collect(),
        ),
        Err(_) => IfMatch::UpdatedAt(Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;
    use chrono::TimeZone as _;

    use super::*;

    fn parsed(values: &[&str]) -> IfMatch {
        let mut req = TestRequest::default();
        for value in values {
            req = req.append_header((header::IF_MATCH, *value));
        }
        if_match(&req.to_http_request())
    }

    #[test]
    fn etags_name_the_version_to_the_microsecond_and_come_back_as_it() {
        let version = Utc.timestamp_micros(1_750_000_000_123_456).unwrap();
        let etag = record_etag(version);
        assert_eq!(etag.to_string(), "\"1750000000123456\"");
        assert_eq!(
            parsed(&[&etag.to_string()]),
            IfMatch::UpdatedAt(vec![version])
        );
        let before = Utc.timestamp_micros(1_749_999_999_000_000).unwrap();
        assert_eq!(
            parsed(&["\"1749999999000000\", \"1750000000123456\""]),
            IfMatch::UpdatedAt(vec![before, version])
        );
        assert_eq!(
            parsed(&["\"1749999999000000\"", "\"1750000000123456\""]),
            IfMatch::UpdatedAt(vec![before, version]),
            "several header lines are one list"
        );
    }

    #[test]
    fn no_header_or_a_star_allows_any_version_and_anything_else_none() {
        assert_eq!(parsed(&[]), IfMatch::Any);
        assert_eq!(parsed(&["*"]), IfMatch::Any);
        for never in [
            "W/\"1750000000123456\"",
            "\"not-a-version\"",
            "\"99999999999999999999999\"",
            "1750000000123456",
            "",
        ] {
            assert_eq!(
                parsed(&[never]),
                IfMatch::UpdatedAt(Vec::new()),
                "{never:?}"
            );
        }
    }
}
