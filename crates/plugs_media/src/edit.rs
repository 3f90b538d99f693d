//! Edits of an event's title and of a media's fields, guarded by the version the client saw.
//!
//! A record's version is its `updated_at`. An edit reads the record, merges the change into it,
//! and writes it back with one guarded UPDATE that applies only if the version is still the one
//! read: of two editors who read the same version, the second is refused
//! ([`MediaError::PreconditionFailed`]) instead of silently overwriting the first. Every write
//! moves the version forward, even within one clock tick.

use chrono::{DateTime, TimeDelta, Utc};
use plugs_domain::{
    Access, Event, EventId, EventMedia, MediaFields, MediaId, UserId, validate_event_title,
};
use plugs_persistence::{FieldsUpdate, truncate_to_micros};

use crate::{MediaError, MediaService};

/// How many times an edit without a precondition is retried when another edit lands between
/// its read and its write.
const EDIT_ATTEMPTS: usize = 3;

/// Which version of a record an edit applies to (HTTP `If-Match`), by its `updated_at`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum IfMatch {
    /// Whatever version is current (no `If-Match`, or `If-Match: *`). The edit is still merged
    /// into the version read and written with a guard, so a concurrent edit of another field is
    /// never lost: the edit is merged again into the newer version.
    #[default]
    Any,
    /// Only a version whose `updated_at` is one of these; otherwise
    /// [`MediaError::PreconditionFailed`] and nothing changes. An empty list matches nothing.
    UpdatedAt(Vec<DateTime<Utc>>),
}

impl IfMatch {
    fn allows(&self, updated_at: DateTime<Utc>) -> bool {
        match self {
            Self::Any => true,
            Self::UpdatedAt(versions) => versions
                .iter()
                .any(|version| truncate_to_micros(*version) == updated_at),
        }
    }
}

/// A change of a media's fields, raw as the client sent it. `None` keeps a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MediaEdit {
    /// The new title; `Some(None)` (or a blank title) clears it. At most 200 characters.
    pub title: Option<Option<String>>,
    /// The new description; `Some(None)` (or a blank one) clears it. At most 2000 characters.
    pub description: Option<Option<String>>,
    /// The new tags, one per item, replacing all of them; an empty list clears them. The
    /// upload's tag rules apply ([`MediaFields::parse_tag_list`]).
    pub tags: Option<Vec<String>>,
}

/// A change of an event, raw as the client sent it. `None` keeps a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventEdit {
    /// The new title, 1 to 200 characters.
    pub title: Option<String>,
}

/// A [`MediaEdit`] whose values passed the rules; merged into the record read.
struct ValidEdit {
    title: Option<Option<String>>,
    description: Option<Option<String>>,
    tags: Option<Vec<String>>,
}

impl ValidEdit {
    fn parse(edit: &MediaEdit) -> Result<Self, MediaError> {
        let title = edit
            .title
            .as_ref()
            .map(|title| MediaFields::parse(title.as_deref(), None, None).map(|f| f.title))
            .transpose();
        let description = edit
            .description
            .as_ref()
            .map(|text| MediaFields::parse(None, text.as_deref(), None).map(|f| f.description))
            .transpose();
        let tags = edit
            .tags
            .as_deref()
            .map(MediaFields::parse_tag_list)
            .transpose();
        Ok(Self {
            title: title.map_err(MediaError::Invalid)?,
            description: description.map_err(MediaError::Invalid)?,
            tags: tags.map_err(MediaError::Invalid)?,
        })
    }

    fn merged_into(&self, media: &EventMedia) -> MediaFields {
        MediaFields {
            title: self.title.clone().unwrap_or_else(|| media.title.clone()),
            description: self
                .description
                .clone()
                .unwrap_or_else(|| media.description.clone()),
            tags: self.tags.clone().unwrap_or_else(|| media.tags.clone()),
        }
    }
}

fn fields_of(media: &EventMedia) -> MediaFields {
    MediaFields {
        title: media.title.clone(),
        description: media.description.clone(),
        tags: media.tags.clone(),
    }
}

/// The version an edit writes: now, but always after the version it replaces, so that a second
/// edit within one microsecond (or after the clock stepped back) still gets a version of its
/// own and a client holding the previous one is refused.
fn next_version(now: DateTime<Utc>, previous: DateTime<Utc>) -> DateTime<Utc> {
    truncate_to_micros(now).max(previous + TimeDelta::microseconds(1))
}

impl MediaService {
    /// Changes a `ready` media's title, description or tags, if `if_match` allows the current
    /// version; returns the record as stored, with its new `updated_at`. Only the event's owner
    /// may ([`Access::Write`]); anyone else gets [`MediaError::NotFound`], as for a missing
    /// media. An edit that changes nothing writes nothing and keeps the version.
    pub async fn edit_media(
        &self,
        user: &UserId,
        event_id: EventId,
        media_id: MediaId,
        edit: &MediaEdit,
        if_match: &IfMatch,
    ) -> Result<EventMedia, MediaError> {
        self.authorized_event(user, event_id, Access::Write).await?;
        let edit = ValidEdit::parse(edit)?;
        for _ in 0..EDIT_ATTEMPTS {
            let current = self.ready_media(event_id, media_id).await?;
            if !if_match.allows(current.updated_at) {
                return Err(media_changed(media_id));
            }
            let fields = edit.merged_into(&current);
            if fields == fields_of(&current) {
                return Ok(current);
            }
            let update = FieldsUpdate {
                fields,
                expected: current.updated_at,
                at: next_version(self.clock.now(), current.updated_at),
            };
            if let Some(edited) = self.media.update_fields(media_id, update).await? {
                tracing::info!(%media_id, %event_id, "media edited");
                return Ok(edited);
            }
            // Changed (or gone) since read: the next read tells which, and whether the
            // precondition still holds.
        }
        Err(media_changed(media_id))
    }

    /// Changes one of `user`'s events, if `if_match` allows the current version; returns the
    /// event as stored, with its new `updated_at`. Someone else's event answers
    /// [`MediaError::NotFound`], as a missing one does.
    pub async fn edit_event(
        &self,
        user: &UserId,
        event_id: EventId,
        edit: &EventEdit,
        if_match: &IfMatch,
    ) -> Result<Event, MediaError> {
        self.authorized_event(user, event_id, Access::Write).await?;
        let title = edit
            .title
            .as_deref()
            .map(validate_event_title)
            .transpose()
            .map_err(MediaError::Invalid)?;
        for _ in 0..EDIT_ATTEMPTS {
            let current = self.authorized_event(user, event_id, Access::Write).await?;
            if !if_match.allows(current.updated_at) {
                return Err(event_changed(event_id));
            }
            let Some(title) = title.as_deref().filter(|title| *title != current.title) else {
                return Ok(current);
            };
            let at = next_version(self.clock.now(), current.updated_at);
            if let Some(edited) = self
                .events
                .update_event_title(event_id, title, current.updated_at, at)
                .await?
            {
                tracing::info!(%event_id, "event edited");
                return Ok(edited);
            }
        }
        Err(event_changed(event_id))
    }
}

fn media_changed(id: MediaId) -> MediaError {
    MediaError::PreconditionFailed {
        what: "media",
        id: id.to_string(),
    }
}

fn event_changed(id: EventId) -> MediaError {
    MediaError::PreconditionFailed {
        what: "event",
        id: id.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone as _;

    use super::*;

    #[test]
    fn every_version_is_after_the_one_it_replaces() {
        let t = |micros: i64| Utc.timestamp_micros(micros).unwrap();
        assert_eq!(next_version(t(2_000_000), t(1_000_000)), t(2_000_000));
        // Same microsecond, or a clock that stepped back: one microsecond later still.
        assert_eq!(next_version(t(1_000_000), t(1_000_000)), t(1_000_001));
        assert_eq!(next_version(t(5), t(1_000_000)), t(1_000_001));
        // Nanoseconds are below every repository's precision.
        let fine = t(3_000_000) + TimeDelta::nanoseconds(999);
        assert_eq!(next_version(fine, t(1)), t(3_000_000));
    }

    #[test]
    fn if_match_compares_at_the_stored_precision() {
        let stored = Utc.timestamp_micros(1_750_000_000_123_456).unwrap();
        assert!(IfMatch::Any.allows(stored));
        assert!(IfMatch::UpdatedAt(vec![stored + TimeDelta::nanoseconds(500)]).allows(stored));
        assert!(!IfMatch::UpdatedAt(vec![stored - TimeDelta::microseconds(1)]).allows(stored));
        assert!(!IfMatch::UpdatedAt(Vec::new()).allows(stored));
    }
}
