-- Edits guarded by ETag / If-Match, and the media list filtered by tag and by kind.

-- An event's version is its `updated_at`, as a media's already is: every edit moves it forward,
-- and a PATCH whose If-Match names an older one changes nothing.
ALTER TABLE events ADD COLUMN updated_at TIMESTAMP;
UPDATE events SET updated_at = created_at;
ALTER TABLE events ALTER COLUMN updated_at SET NOT NULL;

-- The kind of the content type (plugs_domain::MediaKind), written once on insert: a content type
-- never changes. A column of its own rather than `content_type IN (...)`, so that one index gives
-- an event's ready media of one kind already in listing order. NULL for a type of no kind (none is
-- stored today; rows from elsewhere might be). The backfill names every type and alias
-- plugs_domain accepts, as `AllowedType::from_mime` does.
ALTER TABLE event_media ADD COLUMN kind TEXT
    CONSTRAINT event_media_kind_check CHECK (kind IN ('image', 'video', 'audio', 'document'));
UPDATE event_media SET kind = CASE
    WHEN lower(content_type) IN ('image/jpeg', 'image/jpg', 'image/pjpeg', 'image/png', 'image/x-png',
        'image/gif', 'image/webp', 'image/heic', 'image/heif', 'image/avif') THEN 'image'
    WHEN lower(content_type) IN ('video/mp4', 'video/x-m4v', 'video/quicktime', 'video/webm') THEN 'video'
    WHEN lower(content_type) IN ('audio/mpeg', 'audio/mp3', 'audio/mpeg3', 'audio/x-mpeg', 'audio/x-mp3',
        'audio/wav', 'audio/x-wav', 'audio/wave', 'audio/vnd.wave', 'audio/ogg', 'audio/opus',
        'application/ogg', 'audio/vorbis', 'audio/aac', 'audio/x-aac', 'audio/aacp', 'audio/mp4',
        'audio/x-m4a', 'audio/m4a') THEN 'audio'
    WHEN lower(content_type) IN ('application/pdf', 'application/x-pdf') THEN 'document'
END;

-- The listing filtered by kind: like event_media_ready_listing_idx, with the kind after the event,
-- so `event_id = $1 AND kind = $2` reads newest first from the cursor on.
CREATE INDEX event_media_ready_kind_idx
    ON event_media (event_id, kind, created_at DESC, id DESC) WHERE status = 'ready';

-- The listing filtered by tag. A common tag is found by walking the listing index and probing
-- the primary key (media_id, tag); a rare one from the tag: (tag, media_id) answers that without
-- reading the table, and replaces the index on (tag) alone.
CREATE INDEX event_media_tags_tag_media_idx ON event_media_tags (tag, media_id);
DROP INDEX event_media_tags_tag_idx;
