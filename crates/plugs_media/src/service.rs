//! The service: events, media reads and deletes, readiness. Uploads and the reconciler have
//! their own modules.

use std::sync::Arc;
use std::time::Duration;

use plugs_domain::{
    Access, Clock, Event, EventId, EventMedia, MediaId, MediaStatus, PageCursor, PageLimit,
    SystemClock, UserId, may_run_code, validate_event_title,
};
use plugs_persistence::{EventRepository, HealthCheck, MediaRepository, RepoError};
use plugs_storage::{
    GetOptions, GetResult, ObjectKey, ObjectMeta, ObjectStore, PresignMethod, PresignOptions,
    PresignedUrl, StoreError,
};

use crate::{MediaError, MediaQuery, Page, PageRequest, ServiceConfig};

/// The media layer's application service: every use case, over the store and repository traits.
///
/// Holds only `Arc`s and plain config, so one instance is shared by every request.
#[derive(Debug, Clone)]
pub struct MediaService {
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) events: Arc<dyn EventRepository>,
    pub(crate) media: Arc<dyn MediaRepository>,
    pub(crate) health: Arc<dyn HealthCheck>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) config: ServiceConfig,
    /// Resumable uploads' sessions ([`MediaService::with_tus`]); without it, tus is refused.
    pub(crate) tus: Option<Arc<dyn plugs_persistence::TusRepository>>,
    /// How large objects are read for downloads ([`MediaService::with_read_ahead`]); without
    /// it, every download is one plain GET.
    pub(crate) read_ahead: Option<plugs_storage::ReadAhead>,
    /// The processing queue and derived versions ([`MediaService::with_jobs`]).
    pub(crate) jobs: Option<Arc<dyn plugs_persistence::JobRepository>>,
}

/// How many times deleting an event re-lists its media when an upload slipped in meanwhile.
const DELETE_EVENT_ATTEMPTS: usize = 3;

impl MediaService {
    /// A service over these backends, dated by the system clock.
    pub fn new(
        store: Arc<dyn ObjectStore>,
        events: Arc<dyn EventRepository>,
        media: Arc<dyn MediaRepository>,
        health: Arc<dyn HealthCheck>,
        config: ServiceConfig,
    ) -> Self {
        Self {
            store,
            events,
            media,
            health,
            clock: Arc::new(SystemClock),
            config,
            tus: None,
            read_ahead: None,
            jobs: None,
        }
    }

    /// The same service reading time from `clock` (tests pin it to date keys and grace periods).
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The same service reading large objects for downloads through `read_ahead`: several
    /// ranged GETs in flight, delivered in order through the one stream the caller gets.
    #[must_use]
    pub fn with_read_ahead(mut self, read_ahead: plugs_storage::ReadAhead) -> Self {
        self.read_ahead = Some(read_ahead);
        self
    }

    /// How large objects are read for downloads, when set.
    pub fn read_ahead(&self) -> Option<&plugs_storage::ReadAhead> {
        self.read_ahead.as_ref()
    }

    /// The settings in use.
    pub fn config(&self) -> &ServiceConfig {
        &self.config
    }

    /// Creates an event owned by `user`.
    pub async fn create_event(&self, user: &UserId, title: &str) -> Result<Event, MediaError> {
        let title = validate_event_title(title).map_err(MediaError::Invalid)?;
        let now = self.clock.now();
        let event = Event {
            id: EventId::new(),
            title,
            owner: user.clone(),
            created_at: now,
            updated_at: now,
        };
        self.events.insert_event(&event).await?;
        tracing::info!(event_id = %event.id, "event created");
        Ok(event)
    }

    /// `user`'s events, newest first.
    pub async fn list_events(
        &self,
        user: &UserId,
        page: PageRequest,
    ) -> Result<Page<Event>, MediaError> {
        let (after, limit) = parse_page(&page)?;
        let events = self.events.list_events(user, after, limit + 1).await?;
        Ok(into_page(events, limit, |event| PageCursor {
            created_at: event.created_at,
            id: event.id.as_uuid(),
        }))
    }

    /// One of `user`'s events.
    pub async fn get_event(&self, user: &UserId, event_id: EventId) -> Result<Event, MediaError> {
        self.authorized_event(user, event_id, Access::Read).await
    }

    /// Deletes an event with all its media, objects first, so a failure half-way never leaves an
    /// object that no record claims.
    pub async fn delete_event(&self, user: &UserId, event_id: EventId) -> Result<(), MediaError> {
        self.authorized_event(user, event_id, Access::Delete)
            .await?;
        for attempt in 1..=DELETE_EVENT_ATTEMPTS {
            for media in self.media.list_all_for_event(event_id).await? {
                self.remove_media(&media).await?;
            }
            match self.events.delete_event(event_id).await {
                Ok(()) => {
                    tracing::info!(%event_id, "event deleted");
                    return Ok(());
                }
                // Someone else deleted it between our check and now: the result is what was asked.
                Err(RepoError::NotFound { .. }) => return Ok(()),
                // An upload inserted a record after we listed: list again.
                Err(error @ RepoError::HasChildren { .. }) if attempt == DELETE_EVENT_ATTEMPTS => {
                    return Err(error.into());
                }
                Err(RepoError::HasChildren { .. }) => continue,
                Err(other) => return Err(other.into()),
            }
        }
        Err(MediaError::event_not_found(event_id))
    }

    /// An event's `ready` media, newest first ([`MediaService::list_media_matching`] with no
    /// filter).
    pub async fn list_media(
        &self,
        user: &UserId,
        event_id: EventId,
        page: PageRequest,
    ) -> Result<Page<EventMedia>, MediaError> {
        self.list_media_matching(user, event_id, &MediaQuery::default(), page)
            .await
    }

    /// One `ready` media of one of `user`'s events.
    pub async fn get_media(
        &self,
        user: &UserId,
        event_id: EventId,
        media_id: MediaId,
    ) -> Result<EventMedia, MediaError> {
        self.authorized_event(user, event_id, Access::Read).await?;
        self.ready_media(event_id, media_id).await
    }

    /// The record and a stream of its bytes; `options` (range, `If-None-Match`) go to the store.
    pub async fn open_media(
        &self,
        user: &UserId,
        event_id: EventId,
        media_id: MediaId,
        options: GetOptions,
    ) -> Result<(EventMedia, GetResult), MediaError> {
        let media = self.get_media(user, event_id, media_id).await?;
        let key = object_key(&media)?;
        // The record's size decides whether to read ahead; the store's answer to the first
        // range is what the rest is planned from.
        let result = match &self.read_ahead {
            Some(read_ahead) => {
                read_ahead
                    .get(&self.store, &key, options, media.size_bytes)
                    .await
            }
            None => self.store.get(&key, options).await,
        };
        match result {
            Ok(result) => Ok((media, result)),
            Err(error) => Err(object_error(&media, &key, error)),
        }
    }

    /// The record and its object's metadata (size, ETag), without opening the bytes: what an
    /// HTTP `HEAD` answers.
    pub async fn head_media(
        &self,
        user: &UserId,
        event_id: EventId,
        media_id: MediaId,
    ) -> Result<(EventMedia, ObjectMeta), MediaError> {
        let media = self.get_media(user, event_id, media_id).await?;
        let key = object_key(&media)?;
        match self.store.head(&key).await {
            Ok(meta) => Ok((media, meta)),
            Err(error) => Err(object_error(&media, &key, error)),
        }
    }

    /// A presigned GET URL for a media's object, valid for `ttl` (default
    /// [`ServiceConfig::presign_default_ttl`]); longer requests are cut to
    /// [`ServiceConfig::presign_max_ttl`] rather than refused, and the answer's `expires_at`
    /// says what was granted.
    ///
    /// A type a browser may run code from ([`may_run_code`]: PDF, anything unknown) is presigned
    /// with `Content-Disposition: attachment`, so that opening the URL saves the file rather
    /// than rendering it; stores that do not serve their own URLs leave that to whatever does.
    pub async fn presign_download(
        &self,
        user: &UserId,
        event_id: EventId,
        media_id: MediaId,
        ttl: Option<Duration>,
    ) -> Result<PresignedUrl, MediaError> {
        let media = self.get_media(user, event_id, media_id).await?;
        let key = object_key(&media)?;
        let ttl = ttl.unwrap_or(self.config.presign_default_ttl).clamp(
            Duration::from_secs(1),
            self.config.presign_max_ttl.max(Duration::from_secs(1)),
        );
        if let Some(signer) = &self.config.download_signer {
            return Ok(signer.presign_get(&key, ttl)?);
        }
        let options = if may_run_code(&media.content_type) {
            PresignOptions::with_content_disposition("attachment")
        } else {
            PresignOptions::default()
        };
        Ok(self
            .store
            .presign(PresignMethod::Get, &key, ttl, &options)
            .await?)
    }

    /// Deletes one media: record marked `deleting`, object deleted, record deleted. A failure
    /// between the steps leaves a `deleting` record the reconciler (or a retry) finishes.
    pub async fn delete_media(
        &self,
        user: &UserId,
        event_id: EventId,
        media_id: MediaId,
    ) -> Result<(), MediaError> {
        self.authorized_event(user, event_id, Access::Delete)
            .await?;
        let media = match self.media.find_media(media_id).await? {
            // A `deleting` record is a delete that failed half-way: a retry finishes it.
            Some(media)
                if media.event_id == event_id
                    && matches!(media.status, MediaStatus::Ready | MediaStatus::Deleting) =>
            {
                media
            }
            _ => return Err(MediaError::media_not_found(media_id)),
        };
        self.remove_media(&media).await?;
        tracing::info!(%media_id, %event_id, "media deleted");
        Ok(())
    }

    /// Readiness: the database answers a trivial query and the store its cheap check
    /// ([`ObjectStore::ping`]). Costs the same with 10 objects or 10 million: a listing, even of
    /// one key, walked the whole local store.
    pub async fn check_ready(&self) -> Result<(), MediaError> {
        self.health.ping().await?;
        self.store.ping().await?;
        Ok(())
    }

    /// The event, if it exists and `user` may have `access` to it; a stranger's event and a
    /// missing one give the same answer.
    pub(crate) async fn authorized_event(
        &self,
        user: &UserId,
        event_id: EventId,
        access: Access,
    ) -> Result<Event, MediaError> {
        match self.events.find_event(event_id).await? {
            Some(event) if access.authorize(&event, user).is_ok() => Ok(event),
            _ => Err(MediaError::event_not_found(event_id)),
        }
    }

    pub(crate) async fn ready_media(
        &self,
        event_id: EventId,
        media_id: MediaId,
    ) -> Result<EventMedia, MediaError> {
        match self.media.find_media(media_id).await? {
            Some(media) if media.event_id == event_id && media.status == MediaStatus::Ready => {
                Ok(media)
            }
            _ => Err(MediaError::media_not_found(media_id)),
        }
    }

    /// The delete sequence: `deleting` first (so nothing serves or completes it any more), then
    /// the object, then the record. Each step is idempotent, so running it again finishes it.
    pub(crate) async fn remove_media(&self, media: &EventMedia) -> Result<(), MediaError> {
        if media.status != MediaStatus::Deleting {
            match self.media.mark_deleting(media.id, self.clock.now()).await {
                Ok(_) => {}
                Err(RepoError::NotFound { .. }) => return Ok(()),
                Err(other) => return Err(other.into()),
            }
        }
        if media.status != MediaStatus::Ready {
            // An upload in flight (or rolled back) may have staged bytes elsewhere.
            self.discard_staging(media.id).await?;
        }
        self.delete_derived(media).await?;
        self.delete_object(&media.s3_key).await?;
        self.media.delete_media(media.id).await?;
        Ok(())
    }

    /// Deletes an object; a missing one is already what we want.
    pub(crate) async fn delete_object(&self, key: &str) -> Result<(), MediaError> {
        let key = ObjectKey::parse(key)?;
        match self.store.delete(&key).await {
            Ok(()) | Err(StoreError::NotFound { .. }) => Ok(()),
            Err(other) => Err(other.into()),
        }
    }
}

pub(crate) fn object_key(media: &EventMedia) -> Result<ObjectKey, MediaError> {
    Ok(ObjectKey::parse(media.s3_key.as_str())?)
}

/// A store error on a `ready` media's object; a missing object is a dangling record, logged and
/// answered as a missing media.
fn object_error(media: &EventMedia, key: &ObjectKey, error: StoreError) -> MediaError {
    match error {
        StoreError::NotFound { .. } => {
            tracing::error!(media_id = %media.id, key = %key, "ready record without its object (dangling record)");
            MediaError::media_not_found(media.id)
        }
        other => other.into(),
    }
}

pub(crate) fn parse_page(page: &PageRequest) -> Result<(Option<PageCursor>, usize), MediaError> {
    let limit = PageLimit::parse(page.limit).map_err(MediaError::Invalid)?;
    let after = page
        .cursor
        .as_deref()
        .map(PageCursor::decode)
        .transpose()
        .map_err(MediaError::Invalid)?;
    let limit = usize::try_from(limit.get()).unwrap_or(usize::MAX);
    Ok((after, limit))
}

/// Cuts a `limit + 1` fetch to `limit` items; the extra item only says that a next page exists.
pub(crate) fn into_page<T>(
    mut items: Vec<T>,
    limit: usize,
    cursor_of: impl Fn(&T) -> PageCursor,
) -> Page<T> {
    let has_more = items.len() > limit;
    items.truncate(limit);
    let next_cursor = if has_more {
        items.last().map(|last| cursor_of(last).encode())
    } else {
        None
    };
    Page { items, next_cursor }
}
