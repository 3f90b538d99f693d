//! The object-key layout, and the clock that dates new keys.
//!
//! A media object lives at `events/{event_id}/media/{yyyy}/{mm}/{dd}/{HHMMSS}_{micros}.{ext}`:
//! all of an event's objects share one prefix (so deleting an event can list them), the date
//! path keeps listings of busy events short, and nothing in a key comes from the client.

use std::fmt::Debug;
use std::sync::{Mutex, PoisonError};

use chrono::{DateTime, Datelike, NaiveDate, SubsecRound, TimeDelta, Timelike, Utc};
use uuid::Uuid;

use crate::EventId;

/// The prefix every media object key starts with; the reconciler lists it.
pub const MEDIA_ROOT: &str = "events/";

/// The prefix of every object belonging to `event_id`: `events/{event_id}/`.
pub fn event_prefix(event_id: EventId) -> String {
    format!("{MEDIA_ROOT}{event_id}/")
}

/// The key of a media object uploaded at `at` to `event_id`, with the canonical `extension` of
/// its sniffed type (see [`ContentType::extension`](crate::ContentType::extension)).
///
/// `at` is rendered in UTC with microsecond precision; take it from a [`Clock`]. The layout
/// holds years 0 to 9999, which is every year a SQL timestamp holds.
///
/// ```
/// use chrono::{TimeZone, Utc};
/// use plugs_domain::{EventId, keys};
/// let event = EventId::from_uuid(uuid::Uuid::nil());
/// let at = Utc.with_ymd_and_hms(2024, 3, 9, 7, 5, 1).unwrap() + chrono::TimeDelta::microseconds(42);
/// let key = keys::media_key(event, at, "jpg");
/// assert_eq!(key, "events/00000000-0000-0000-0000-000000000000/media/2024/03/09/070501_000042.jpg");
/// assert_eq!(keys::parse_media_key(&key), Some((event, at)));
/// ```
pub fn media_key(event_id: EventId, at: DateTime<Utc>, extension: &str) -> String {
    debug_assert!(
        !extension.is_empty()
            && extension
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()),
        "extension must be a canonical one, got {extension:?}"
    );
    // A leap second carries a sub-second part of 1 s or more; keep the field at six digits.
    let micros = at.timestamp_subsec_micros().min(999_999);
    format!(
        "{MEDIA_ROOT}{event_id}/media/{:04}/{:02}/{:02}/{:02}{:02}{:02}_{micros:06}.{extension}",
        at.year(),
        at.month(),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
    )
}

/// Reads back the event and upload time from a key [`media_key`] produced; `None` for any other
/// text. Strict: a key parses only if `media_key` renders it again byte for byte (given its
/// extension), so the reconciler never mistakes a foreign object for one of ours.
pub fn parse_media_key(key: &str) -> Option<(EventId, DateTime<Utc>)> {
    let rest = key.strip_prefix(MEDIA_ROOT)?;
    let mut parts = rest.split('/');
    let event_text = parts.next()?;
    let (media, year, month, day, file) = (
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
    );
    if parts.next().is_some() || media != "media" {
        return None;
    }

    let event_id = EventId::from_uuid(Uuid::parse_str(event_text).ok()?);
    // Uuid::parse_str also takes braces, URNs and upper case; only our own rendering counts.
    if event_id.to_string() != event_text {
        return None;
    }

    let (stem, extension) = file.split_once('.')?;
    if extension.is_empty()
        || !extension
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        return None;
    }
    let (clock, micros) = stem.split_once('_')?;
    let date = NaiveDate::from_ymd_opt(
        i32::try_from(digits(year, 4)?).ok()?,
        digits(month, 2)?,
        digits(day, 2)?,
    )?;
    if clock.len() != 6 {
        return None;
    }
    let time = date.and_hms_micro_opt(
        digits(clock.get(0..2)?, 2)?,
        digits(clock.get(2..4)?, 2)?,
        digits(clock.get(4..6)?, 2)?,
        digits(micros, 6)?,
    )?;
    let at = time.and_utc();
    // and_hms_micro_opt accepts a leap second (second 59, micros >= 1_000_000) that media_key
    // never writes; the field is six digits, so that cannot occur, but stay strict anyway.
    (at.timestamp_subsec_micros() <= 999_999).then_some((event_id, at))
}

/// Parses exactly `len` ASCII digits.
fn digits(text: &str, len: usize) -> Option<u32> {
    if text.len() != len || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Where the current time comes from. Injected so that tests can pin the time that dates keys,
/// records and grace periods.
pub trait Clock: Send + Sync + Debug {
    /// The current time, truncated to microseconds (what SQL timestamps and keys hold).
    fn now(&self) -> DateTime<Utc>;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now().trunc_subsecs(6)
    }
}

/// A clock that only moves when told to, for tests.
///
/// ```
/// use chrono::TimeDelta;
/// use plugs_domain::{Clock, ManualClock};
/// let clock = ManualClock::new(chrono::DateTime::UNIX_EPOCH);
/// clock.advance(TimeDelta::seconds(90));
/// assert_eq!(clock.now().timestamp(), 90);
/// ```
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<DateTime<Utc>>,
}

impl ManualClock {
    /// A clock reading `at` (truncated to microseconds).
    pub fn new(at: DateTime<Utc>) -> Self {
        Self {
            now: Mutex::new(at.trunc_subsecs(6)),
        }
    }

    /// Sets the time (truncated to microseconds).
    pub fn set(&self, at: DateTime<Utc>) {
        *self.now.lock().unwrap_or_else(PoisonError::into_inner) = at.trunc_subsecs(6);
    }

    /// Moves the time by `delta` (truncated to microseconds).
    pub fn advance(&self, delta: TimeDelta) {
        let mut now = self.now.lock().unwrap_or_else(PoisonError::into_inner);
        *now = (*now + delta).trunc_subsecs(6);
    }
}

impl Default for ManualClock {
    /// A clock reading the current system time.
    fn default() -> Self {
        Self::new(SystemClock.now())
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.now.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use proptest::prelude::*;

    use super::*;

    const MIN_MICROS: i64 = -62_167_219_200_000_000; // 0000-01-01T00:00:00Z
    const MAX_MICROS: i64 = 253_402_300_799_999_999; // 9999-12-31T23:59:59.999999Z

    fn event() -> EventId {
        EventId::from_uuid(Uuid::parse_str("0190f3c1-7a2b-7c3d-8e4f-a1b2c3d4e5f6").unwrap())
    }

    #[test]
    fn key_layout_is_exact_and_zero_padded() {
        let at = Utc.with_ymd_and_hms(2025, 1, 2, 3, 4, 5).unwrap() + TimeDelta::microseconds(7);
        assert_eq!(
            media_key(event(), at, "png"),
            "events/0190f3c1-7a2b-7c3d-8e4f-a1b2c3d4e5f6/media/2025/01/02/030405_000007.png"
        );
        let late = Utc.with_ymd_and_hms(2025, 12, 31, 23, 59, 59).unwrap()
            + TimeDelta::microseconds(999_999);
        assert!(media_key(event(), late, "mp4").ends_with("/2025/12/31/235959_999999.mp4"));
        assert_eq!(
            event_prefix(event()),
            "events/0190f3c1-7a2b-7c3d-8e4f-a1b2c3d4e5f6/"
        );
        assert!(media_key(event(), at, "png").starts_with(&event_prefix(event())));
        assert!(event_prefix(event()).starts_with(MEDIA_ROOT));
    }

    #[test]
    fn sub_microsecond_precision_is_dropped() {
        let at = Utc.with_ymd_and_hms(2025, 1, 2, 3, 4, 5).unwrap() + TimeDelta::nanoseconds(1_999);
        assert!(media_key(event(), at, "png").ends_with("030405_000001.png"));
    }

    #[test]
    fn foreign_and_malformed_keys_do_not_parse() {
        let good = "events/0190f3c1-7a2b-7c3d-8e4f-a1b2c3d4e5f6/media/2025/01/02/030405_000007.png";
        assert!(parse_media_key(good).is_some());
        for bad in [
            "",
            "events/",
            "other/0190f3c1-7a2b-7c3d-8e4f-a1b2c3d4e5f6/media/2025/01/02/030405_000007.png",
            "events/0190F3C1-7A2B-7C3D-8E4F-A1B2C3D4E5F6/media/2025/01/02/030405_000007.png",
            "events/0190f3c17a2b7c3d8e4fa1b2c3d4e5f6/media/2025/01/02/030405_000007.png",
            "events/0190f3c1-7a2b-7c3d-8e4f-a1b2c3d4e5f6/photos/2025/01/02/030405_000007.png",
            "events/0190f3c1-7a2b-7c3d-8e4f-a1b2c3d4e5f6/media/2025/1/02/030405_000007.png",
            "events/0190f3c1-7a2b-7c3d-8e4f-a1b2c3d4e5f6/media/2025/02/30/030405_000007.png",
            "events/0190f3c1-7a2b-7c3d-8e4f-a1b2c3d4e5f6/media/2025/01/02/240405_000007.png",
            "events/0190f3c1-7a2b-7c3d-8e4f-a1b2c3d4e5f6/media/2025/01/02/030405_0000070.png",
            "events/0190f3c1-7a2b-7c3d-8e4f-a1b2c3d4e5f6/media/2025/01/02/030405_00007.png",
            "events/0190f3c1-7a2b-7c3d-8e4f-a1b2c3d4e5f6/media/2025/01/02/030405_000007",
            "events/0190f3c1-7a2b-7c3d-8e4f-a1b2c3d4e5f6/media/2025/01/02/030405_000007.",
            "events/0190f3c1-7a2b-7c3d-8e4f-a1b2c3d4e5f6/media/2025/01/02/030405_000007.PNG",
            "events/0190f3c1-7a2b-7c3d-8e4f-a1b2c3d4e5f6/media/2025/01/02/030405_000007.tar.gz",
            "events/0190f3c1-7a2b-7c3d-8e4f-a1b2c3d4e5f6/media/2025/01/02/03:405_000007.png",
            "events/0190f3c1-7a2b-7c3d-8e4f-a1b2c3d4e5f6/media/2025/01/02/+30405_000007.png",
            "events/0190f3c1-7a2b-7c3d-8e4f-a1b2c3d4e5f6/media/2025/01/02/030405_000007.png/x",
            "events/0190f3c1-7a2b-7c3d-8e4f-a1b2c3d4e5f6/media/2025/01/02/030405_+00007.png",
        ] {
            assert_eq!(parse_media_key(bad), None, "{bad}");
        }
    }

    #[test]
    fn manual_clock_moves_only_when_told_and_truncates() {
        let start =
            Utc.with_ymd_and_hms(2030, 6, 1, 0, 0, 0).unwrap() + TimeDelta::nanoseconds(1_500);
        let clock = ManualClock::new(start);
        assert_eq!(clock.now(), start - TimeDelta::nanoseconds(500));
        assert_eq!(clock.now(), clock.now());
        clock.advance(TimeDelta::minutes(5));
        assert_eq!(
            clock.now(),
            start - TimeDelta::nanoseconds(500) + TimeDelta::minutes(5)
        );
        let later = Utc.with_ymd_and_hms(2031, 1, 1, 0, 0, 0).unwrap();
        clock.set(later);
        assert_eq!(clock.now(), later);
    }

    #[test]
    fn system_clock_has_microsecond_precision() {
        let clock: &dyn Clock = &SystemClock;
        let now = clock.now();
        assert_eq!(now.timestamp_subsec_nanos() % 1_000, 0);
    }

    proptest! {
        #[test]
        fn media_keys_parse_back(
            micros in MIN_MICROS..=MAX_MICROS,
            id in any::<u128>(),
            ext in prop::sample::select(crate::AllowedType::ALL.map(crate::AllowedType::extension).to_vec()),
        ) {
            let at = DateTime::from_timestamp_micros(micros).unwrap();
            let event_id = EventId::from_uuid(Uuid::from_u128(id));
            let key = media_key(event_id, at, ext);
            prop_assert!(key.starts_with(&event_prefix(event_id)));
            prop_assert_eq!(parse_media_key(&key), Some((event_id, at)));
        }

        /// Written out by hand rather than by `media_key`: every well-formed key of a real
        /// calendar date parses and renders back byte for byte, and only the days that no
        /// calendar has (30 February, 31 April) are refused.
        #[test]
        fn well_formed_keys_parse_and_render_back_identically(
            id in any::<u128>(),
            (year, month, day) in (0..=9999_i32, 1..=12_u32, 1..=31_u32),
            (hour, minute, second, micros) in (0..=23_u32, 0..=59_u32, 0..=59_u32, 0..=999_999_u32),
            ext in "[a-z0-9]{1,4}",
        ) {
            let key = format!(
                "events/{}/media/{year:04}/{month:02}/{day:02}/{hour:02}{minute:02}{second:02}_{micros:06}.{ext}",
                Uuid::from_u128(id)
            );
            let parsed = parse_media_key(&key);
            match NaiveDate::from_ymd_opt(year, month, day) {
                Some(_) => {
                    let (event_id, at) = parsed.ok_or_else(|| {
                        TestCaseError::fail(format!("a well-formed key did not parse: {key}"))
                    })?;
                    prop_assert_eq!(event_id.as_uuid(), Uuid::from_u128(id));
                    prop_assert_eq!(media_key(event_id, at, &ext), key);
                }
                None => prop_assert_eq!(parsed, None, "no such day: {}", key),
            }
        }

        #[test]
        fn parse_never_panics(key in any::<String>()) {
            let _ = parse_media_key(&key);
        }
    }
}
