//! The whole-event archive: an event's `ready` media, page by page, each with a safe and unique
//! file name and its bytes opened as a stream. The edge writes the zip; this module decides what
//! goes in it and in which order, without holding more than one page of records.

use std::collections::{HashSet, VecDeque};

use plugs_domain::{Access, EventId, EventMedia, PageCursor, UserId, sanitize_filename};
use plugs_persistence::MediaFilter;
use plugs_storage::{GetOptions, GetResult, StoreError};

use crate::service::object_key;
use crate::{MediaError, MediaService};

/// Records fetched per page while an archive is written.
const ARCHIVE_PAGE: usize = 100;

/// One member of an event archive: the media and the name it has in the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ArchiveMember {
    /// The media record.
    pub media: EventMedia,
    /// Its file name in the archive: the sanitised original name, or the media id with the
    /// stored object's extension; unique within the archive (ignoring case), later duplicates
    /// suffixed ` (2)`, ` (3)`, ... before the extension.
    pub name: String,
}

/// An event's `ready` media being read for an archive, newest first; from
/// [`MediaService::open_event_archive`].
///
/// Holds one page of records and the names given so far (a few dozen bytes per member, as the
/// zip's central directory does), never the bytes of more than the member being read.
#[derive(Debug)]
pub struct EventArchive {
    service: MediaService,
    event_id: EventId,
    after: Option<PageCursor>,
    page: VecDeque<EventMedia>,
    exhausted: bool,
    names: ArchiveNames,
}

impl MediaService {
    /// Starts reading one of `user`'s events for an archive. The ownership check happens here,
    /// before any byte is sent, so a missing or foreign event is a plain
    /// [`MediaError::NotFound`].
    ///
    /// # Errors
    /// [`MediaError::NotFound`] for an event that is not the caller's; repository errors.
    pub async fn open_event_archive(
        &self,
        user: &UserId,
        event_id: EventId,
    ) -> Result<EventArchive, MediaError> {
        self.authorized_event(user, event_id, Access::Read).await?;
        Ok(EventArchive {
            service: self.clone(),
            event_id,
            after: None,
            page: VecDeque::new(),
            exhausted: false,
            names: ArchiveNames::default(),
        })
    }
}

impl EventArchive {
    /// The next member and its bytes, or `None` when every `ready` media has been given.
    ///
    /// A record whose object is missing (a dangling record, which the reconciler reports) is
    /// logged and left out rather than failing the whole archive. Media that become ready while
    /// the archive is read may be left out; media deleted meanwhile are left out.
    ///
    /// # Errors
    /// Repository and store errors other than a missing object.
    pub async fn next_member(&mut self) -> Result<Option<(ArchiveMember, GetResult)>, MediaError> {
        loop {
            let Some(media) = self.next_record().await? else {
                return Ok(None);
            };
            let key = object_key(&media)?;
            match self.service.store.get(&key, GetOptions::default()).await {
                Ok(object) => {
                    let name = self.names.name_for(&media);
                    return Ok(Some((ArchiveMember { media, name }, object)));
                }
                Err(StoreError::NotFound { .. }) => {
                    tracing::error!(media_id = %media.id, key = %key, "archive: ready record without its object (dangling record), left out");
                }
                Err(other) => return Err(other.into()),
            }
        }
    }

    async fn next_record(&mut self) -> Result<Option<EventMedia>, MediaError> {
        if self.page.is_empty() && !self.exhausted {
            let records = self
                .service
                .media
                .list_ready(
                    self.event_id,
                    &MediaFilter::default(),
                    self.after,
                    ARCHIVE_PAGE,
                )
                .await?;
            self.exhausted = records.len() < ARCHIVE_PAGE;
            self.after = records.last().map(|last| PageCursor {
                created_at: last.created_at,
                id: last.id.as_uuid(),
            });
            self.page.extend(records);
        }
        Ok(self.page.pop_front())
    }
}

/// Gives archive members safe, unique names.
#[derive(Debug, Default)]
struct ArchiveNames {
    /// Names given so far, lower-cased: archives are unpacked on case-insensitive file systems.
    taken: HashSet<String>,
}

impl ArchiveNames {
    fn name_for(&mut self, media: &EventMedia) -> String {
        let base = media
            .original_filename
            .as_deref()
            .and_then(sanitize_filename)
            .map(|name| name.replace(':', "_"))
            .unwrap_or_else(|| match key_extension(&media.s3_key) {
                Some(ext) => format!("{}.{ext}", media.id),
                None => media.id.to_string(),
            });
        self.unique(&base)
    }

    fn unique(&mut self, base: &str) -> String {
        if self.taken.insert(base.to_lowercase()) {
            return base.to_owned();
        }
        let (stem, extension) = match base.rsplit_once('.') {
            Some((stem, ext)) if !stem.is_empty() => (stem, Some(ext)),
            _ => (base, None),
        };
        (2_u64..)
            .map(|n| match extension {
                Some(ext) => format!("{stem} ({n}).{ext}"),
                None => format!("{stem} ({n})"),
            })
            .find(|candidate| self.taken.insert(candidate.to_lowercase()))
            .unwrap_or_else(|| base.to_owned())
    }
}

/// The extension of an object key (`....jpg`), which the service chose from the sniffed type.
fn key_extension(key: &str) -> Option<&str> {
    let last = key.rsplit('/').next()?;
    last.rsplit_once('.')
        .map(|(_, ext)| ext)
        .filter(|ext| !ext.is_empty() && ext.chars().all(|c| c.is_ascii_alphanumeric()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_are_suffixed_before_the_extension_ignoring_case() {
        let mut names = ArchiveNames::default();
        let given: Vec<String> = [
            "a.jpg",
            "A.JPG",
            "a.jpg",
            "a (2).jpg",
            "notes",
            "notes",
            ".hidden",
        ]
        .iter()
        .map(|n| names.unique(n))
        .collect();
        assert_eq!(
            given,
            [
                "a.jpg",
                "A (2).JPG",
                "a (3).jpg",
                "a (2) (2).jpg",
                "notes",
                "notes (2)",
                ".hidden"
            ]
        );
    }

    #[test]
    fn the_key_extension_is_taken_only_from_the_last_component() {
        assert_eq!(
            key_extension("events/x/media/2026/12/01/120000_1.jpg"),
            Some("jpg")
        );
        assert_eq!(key_extension("events/x.y/media/noext"), None);
    }
}
