-- Timestamps are UTC in `timestamp` columns: Diesel's portable Timestamp type (the same code runs
-- on SQLite), microsecond precision, written only by the repository in UTC.

CREATE TABLE events (
    id         UUID PRIMARY KEY,
    owner      TEXT NOT NULL,
    title      TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL
);

-- An owner's events, newest first, keyset-paginated on (created_at, id).
CREATE INDEX events_owner_created_idx ON events (owner, created_at DESC, id DESC);

CREATE TABLE event_media (
    id                UUID PRIMARY KEY,
    -- RESTRICT: the service deletes objects and media rows first; an event row must never vanish
    -- under media whose objects still exist.
    event_id          UUID NOT NULL
                      CONSTRAINT event_media_event_id_fkey REFERENCES events (id) ON DELETE RESTRICT,
    title             TEXT,
    description       TEXT,
    original_filename TEXT,
    content_type      TEXT NOT NULL,
    size_bytes        BIGINT NOT NULL DEFAULT 0 CHECK (size_bytes >= 0),
    sha256            TEXT,
    s3_key            TEXT NOT NULL CONSTRAINT event_media_s3_key_key UNIQUE,
    status            TEXT NOT NULL CHECK (status IN ('pending', 'ready', 'deleting')),
    uploaded_by       TEXT NOT NULL,
    created_at        TIMESTAMP NOT NULL,
    updated_at        TIMESTAMP NOT NULL
);

-- The user-facing listing: an event's ready media, newest first. Partial, so pending and deleting
-- rows cost nothing here; the listing query spells `status = 'ready'` as a literal so the planner
-- can use this index even for a generic prepared-statement plan.
CREATE INDEX event_media_ready_listing_idx
    ON event_media (event_id, created_at DESC, id DESC) WHERE status = 'ready';
-- Every state of one event (deleting an event) and the RESTRICT check when an event is deleted.
CREATE INDEX event_media_event_idx ON event_media (event_id);
-- The reconciler's work list: rows stuck in a state since before some time.
CREATE INDEX event_media_status_updated_idx ON event_media (status, updated_at);

CREATE TABLE event_media_tags (
    media_id UUID NOT NULL
             CONSTRAINT event_media_tags_media_id_fkey REFERENCES event_media (id) ON DELETE CASCADE,
    tag      TEXT NOT NULL,
    position INTEGER NOT NULL,
    PRIMARY KEY (media_id, tag)
);

CREATE INDEX event_media_tags_tag_idx ON event_media_tags (tag);
