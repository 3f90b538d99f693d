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
/// use plugs_domain::PageCursor;
/// let cursor = PageCursor { created_at: chrono::Utc::now(), id: uuid::Uuid::nil() };
/// assert_eq!(PageCursor::decode(&cursor.encode()), Ok(cursor));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageCursor {
    /// Creation time of the last item served (microsecond precision).
    pub created_at: DateTime<Utc>,
    /// Id of the last item served.
    pub id: Uuid,
}

impl PageCursor {
    /// The opaque text form handed to clients.
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{}:{}", self.created_at.timestamp_micros(), self.id.simple()))
    }

    /// Parses a cursor previously produced by [`PageCursor::encode`].
    pub fn decode(text: &str) -> Result<Self, DomainError> {
        let invalid = || DomainError::InvalidCursor;
        let raw = URL_SAFE_NO_PAD.decode(text).map_err(|_| invalid())?;
        let raw = std::str::from_utf8(&raw).map_err(|_| invalid())?;
        let (micros, id) = raw.split_once(':').ok_or_else(invalid)?;
        let micros: i64 = micros.parse().map_err(|_| invalid())?;
        let created_at = DateTime::from_timestamp_micros(micros).ok_or_else(invalid)?;
        let id = Uuid::parse_str(id).map_err(|_| invalid())?;
        Ok(Self { created_at, id })
    }
}
