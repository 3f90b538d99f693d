-- Edits guarded by ETag / If-Match, and the media list filtered by tag and by kind. The reasons
-- are in the PostgreSQL migration of the same name; only the SQL differs.

-- SQLite adds a NOT NULL column only with a default; every row gets its real value right below,
-- and the repository writes it on every insert, so the '' is never seen.
ALTER TABLE events ADD COLUMN updated_at TEXT NOT NULL DEFAULT '';
UPDATE events SET updated_at = created_at;

ALTER TABLE event_media ADD COLUMN kind TEXT
    CHECK (kind IN ('image', 'video', 'audio', 'document'));
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

CREATE INDEX event_media_ready_kind_idx
    ON event_media (event_id, kind, created_at DESC, id DESC) WHERE status = 'ready';

CREATE INDEX event_media_tags_tag_media_idx ON event_media_tags (tag, media_id);
DROP INDEX event_media_tags_tag_idx;
