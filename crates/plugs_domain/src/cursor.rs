//! Opaque pagination cursors for newest-first listings.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::DomainError;

/// Where a newest-first page ends: the `(created_at, id)` of its last item. The next page holds
/// the items strictly older than that, ties broken by id, so pages never repeat or skip a row
/// even when many rows share a timestamp.
///
/// ```
/// use plugs_domain::{Clock, PageCursor, SystemClock};
/// // Cursors keep microseconds, as the database does; clocks hand out such times.
/// let cursor = PageCursor { created_at: SystemClock.now(), id: uuid::Uuid::nil() };
/// assert_eq!(PageCursor::decode(&cursor.encode()), Ok(cursor));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageCursor {
    /// Creation time of the last item served (microsecond precision).
    pub created_at: DateTime<Utc>,
    /// Id of the last item served.
    pub id: Uuid,
}

/// The earliest instant a cursor may name: 0000-01-01T00:00:00Z, in microseconds.
const MIN_MICROS: i64 = -62_167_219_200_000_000;
/// The latest instant a cursor may name: 9999-12-31T23:59:59.999999Z. Both databases hold this
/// range; a cursor past it (year 10000) names no row that could ever exist, and PostgreSQL and
/// SQLite would compare it differently (a timestamp overflow, or a string that sorts wrong), so
/// it is refused rather than answered with a silently empty page.
const MAX_MICROS: i64 = 253_402_300_799_999_999;

impl PageCursor {
    /// The opaque text form handed to clients.
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!(
            "{}:{}",
            self.created_at.timestamp_micros(),
            self.id.simple()
        ))
    }

    /// Parses a cursor previously produced by [`PageCursor::encode`]. Any other text, however
    /// malformed, gives [`DomainError::InvalidCursor`], and so does a well-formed cursor dated
    /// outside the years 0 to 9999, which no stored row can have.
    pub fn decode(text: &str) -> Result<Self, DomainError> {
        let invalid = || DomainError::InvalidCursor;
        let raw = URL_SAFE_NO_PAD.decode(text).map_err(|_| invalid())?;
        let raw = std::str::from_utf8(&raw).map_err(|_| invalid())?;
        let (micros, id) = raw.split_once(':').ok_or_else(invalid)?;
        let micros: i64 = micros.parse().map_err(|_| invalid())?;
        if !(MIN_MICROS..=MAX_MICROS).contains(&micros) {
            return Err(invalid());
        }
        let created_at = DateTime::from_timestamp_micros(micros).ok_or_else(invalid)?;
        let id = Uuid::parse_str(id).map_err(|_| invalid())?;
        Ok(Self { created_at, id })
    }
}

/// How many items one page holds: 1 to [`PageLimit::MAX`], [`PageLimit::DEFAULT`] when the
/// client does not say.
///
/// ```
/// use plugs_domain::PageLimit;
/// assert_eq!(PageLimit::parse(None).unwrap().get(), 20);
/// assert!(PageLimit::parse(Some(0)).is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PageLimit(u32);

impl PageLimit {
    /// The page size when none is asked for.
    pub const DEFAULT: u32 = 20;
    /// The largest page size served.
    pub const MAX: u32 = 100;

    /// Validates a requested page size. Out-of-range values are refused rather than clamped,
    /// so a client asking for 1000 learns the limit instead of silently getting 100.
    pub fn parse(requested: Option<u32>) -> Result<Self, DomainError> {
        match requested {
            None => Ok(Self(Self::DEFAULT)),
            Some(value @ 1..=Self::MAX) => Ok(Self(value)),
            Some(value) => Err(DomainError::InvalidLimit {
                value,
                max: Self::MAX,
            }),
        }
    }

    /// The page size.
    pub const fn get(self) -> u32 {
        self.0
    }
}

impl Default for PageLimit {
    fn default() -> Self {
        Self(Self::DEFAULT)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn page_limit_defaults_and_bounds() {
        assert_eq!(PageLimit::parse(None), Ok(PageLimit(20)));
        assert_eq!(PageLimit::default().get(), 20);
        assert_eq!(PageLimit::parse(Some(1)).map(PageLimit::get), Ok(1));
        assert_eq!(PageLimit::parse(Some(100)).map(PageLimit::get), Ok(100));
        assert_eq!(
            PageLimit::parse(Some(0)),
            Err(DomainError::InvalidLimit { value: 0, max: 100 })
        );
        assert_eq!(
            PageLimit::parse(Some(101)),
            Err(DomainError::InvalidLimit {
                value: 101,
                max: 100
            })
        );
    }

    #[test]
    fn cursor_rejects_text_it_did_not_produce() {
        for text in [
            "",
            "!!!",
            "bm90IGEgY3Vyc29y",
            "MTIzOm5vdC1hLXV1aWQ",
            "OnRvbw",
        ] {
            assert_eq!(
                PageCursor::decode(text),
                Err(DomainError::InvalidCursor),
                "{text}"
            );
        }
    }

    #[test]
    fn cursor_outside_years_0_to_9999_is_refused() {
        let id = Uuid::nil().simple();
        for micros in [
            MAX_MICROS + 1,
            // 10000-01-01T00:00:00Z
            253_402_300_800_000_000,
            MIN_MICROS - 1,
            i64::MAX,
            i64::MIN,
        ] {
            let text = URL_SAFE_NO_PAD.encode(format!("{micros}:{id}"));
            assert_eq!(
                PageCursor::decode(&text),
                Err(DomainError::InvalidCursor),
                "{micros}"
            );
        }
    }

    proptest! {
        #[test]
        fn cursor_round_trips(micros in MIN_MICROS..=MAX_MICROS, id in any::<u128>()) {
            let cursor = PageCursor {
                created_at: DateTime::from_timestamp_micros(micros).unwrap(),
                id: Uuid::from_u128(id),
            };
            let text = cursor.encode();
            prop_assert!(text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
            prop_assert_eq!(PageCursor::decode(&text), Ok(cursor));
        }

        #[test]
        fn cursor_decode_never_panics(text in any::<String>()) {
            let _ = PageCursor::decode(&text);
        }

        #[test]
        fn cursor_decode_never_panics_on_well_formed_base64(raw in any::<Vec<u8>>()) {
            let _ = PageCursor::decode(&URL_SAFE_NO_PAD.encode(raw));
        }

        #[test]
        fn page_limit_accepts_exactly_1_to_100(value in any::<u32>()) {
            prop_assert_eq!(PageLimit::parse(Some(value)).is_ok(), (1..=100).contains(&value));
        }
    }
}
