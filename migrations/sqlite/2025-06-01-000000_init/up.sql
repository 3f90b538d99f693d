-- SQLite has no uuid or timestamp types: ids are hyphenated lower-case UUID text, timestamps are
-- Diesel's UTC text form ('YYYY-MM-DD HH:MM:SS.ffffff'), which sorts like the instants it names.
-- STRICT tables refuse values of the wrong type instead of silently storing them.
-- Foreign keys are enforced because every connection sets `PRAGMA foreign_keys = ON`.

CREATE TABLE events (
    id         TEXT PRIMARY KEY NOT NULL,
    owner      TEXT NOT NULL,
    title      TEXT NOT NULL,
    created_at TEXT NOT NULL
) STRICT;

CREATE INDEX events_owner_created_idx ON events (owner, created_at DESC, id DESC);

CREATE TABLE event_media (
    id                TEXT PRIMARY KEY NOT NULL,
    event_id          TEXT NOT NULL REFERENCES events (id) ON DELETE RESTRICT,
    title             TEXT,
    description       TEXT,
    original_filename TEXT,
    content_type      TEXT NOT NULL,
    size_bytes        INTEGER NOT NULL DEFAULT 0 CHECK (size_bytes >= 0),
    sha256            TEXT,
    s3_key            TEXT NOT NULL UNIQUE,
    status            TEXT NOT NULL CHECK (status IN ('pending', 'ready', 'deleting')),
    uploaded_by       TEXT NOT NULL,
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL
) STRICT;

CREATE INDEX event_media_ready_listing_idx
    ON event_media (event_id, created_at DESC, id DESC) WHERE status = 'ready';
CREATE INDEX event_media_event_idx ON event_media (event_id);
CREATE INDEX event_media_status_updated_idx ON event_media (status, updated_at);

CREATE TABLE event_media_tags (
    media_id TEXT NOT NULL REFERENCES event_media (id) ON DELETE CASCADE,
    tag      TEXT NOT NULL,
    position INTEGER NOT NULL,
    PRIMARY KEY (media_id, tag)
) STRICT;

CREATE INDEX event_media_tags_tag_idx ON event_media_tags (tag);
