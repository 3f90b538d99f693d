//! The media listing narrowed by tag and by kind, on the same keyset pages as the whole listing.

use plugs_domain::{
    Access, DomainError, EventId, EventMedia, MediaFields, MediaKind, PageCursor, UserId,
};
use plugs_persistence::MediaFilter;

use crate::service::{into_page, parse_page};
use crate::{MediaError, MediaService, Page, PageRequest};

/// Which of an event's media a listing shows, raw as the client sent it (`?tag=`, `?kind=`);
/// [`MediaService::list_media_matching`] validates it. Absent or blank values do not filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MediaQuery {
    /// Only media carrying this tag, given as a client types it: trimmed and lower-cased like
    /// the tags of an upload, so `?tag=Beach` finds `beach`.
    pub tag: Option<String>,
    /// Only media of this kind: `image`, `video`, `audio` or `document` (any case).
    pub kind: Option<String>,
}

impl MediaQuery {
    /// The repository's filter: the tag normalised by the upload's tag rules, the kind parsed.
    /// A tag no upload could carry (too long, a comma, a control character) or an unknown kind
    /// is refused rather than answered with an empty page.
    fn filter(&self) -> Result<MediaFilter, MediaError> {
        let tag = match non_blank(self.tag.as_deref()) {
            Some(tag) => MediaFields::parse_tag_list(&[tag])
                .map_err(MediaError::Invalid)?
                .pop(),
            None => None,
        };
        let kind = match non_blank(self.kind.as_deref()) {
            Some(kind) => Some(MediaKind::parse(kind).ok_or_else(|| {
                MediaError::Invalid(DomainError::UnknownKind {
                    kind: kind.chars().take(60).collect(),
                })
            })?),
            None => None,
        };
        Ok(MediaFilter { tag, kind })
    }
}

fn non_blank(value: Option<&str>) -> Option<&str> {
    value.map(str::trim).filter(|v| !v.is_empty())
}

impl MediaService {
    /// An event's `ready` media that match `query`, newest first, paged like
    /// [`MediaService::list_media`]: a cursor from a filtered page continues that filtered
    /// listing (pass the same query with it).
    pub async fn list_media_matching(
        &self,
        user: &UserId,
        event_id: EventId,
        query: &MediaQuery,
        page: PageRequest,
    ) -> Result<Page<EventMedia>, MediaError> {
        self.authorized_event(user, event_id, Access::Read).await?;
        let filter = query.filter()?;
        let (after, limit) = parse_page(&page)?;
        let media = self
            .media
            .list_ready(event_id, &filter, after, limit + 1)
            .await?;
        Ok(into_page(media, limit, |media| PageCursor {
            created_at: media.created_at,
            id: media.id.as_uuid(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(tag: Option<&str>, kind: Option<&str>) -> MediaQuery {
        MediaQuery {
            tag: tag.map(str::to_owned),
            kind: kind.map(str::to_owned),
        }
    }

    #[test]
    fn filters_are_normalised_like_uploads_and_blank_means_none() {
        assert_eq!(query(None, None).filter().unwrap(), MediaFilter::default());
        assert_eq!(
            query(Some("  "), Some("")).filter().unwrap(),
            MediaFilter::default()
        );
        assert_eq!(
            query(Some(" Beach "), Some(" VIDEO ")).filter().unwrap(),
            MediaFilter {
                tag: Some("beach".to_owned()),
                kind: Some(MediaKind::Video),
            }
        );
    }

    #[test]
    fn impossible_tags_and_unknown_kinds_are_refused() {
        for bad in [query(Some("a,b"), None), query(Some(&"x".repeat(51)), None)] {
            assert!(
                matches!(bad.filter(), Err(MediaError::Invalid(_))),
                "{bad:?}"
            );
        }
        assert!(matches!(
            query(None, Some("photo")).filter(),
            Err(MediaError::Invalid(DomainError::UnknownKind { kind })) if kind == "photo"
        ));
    }
}
