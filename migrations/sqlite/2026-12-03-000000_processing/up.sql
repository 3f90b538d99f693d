-- Media processing; the reasons are in the PostgreSQL migration of the same name. SQLite claims
-- jobs in a `BEGIN IMMEDIATE` transaction (one writer at a time) with `UPDATE ... RETURNING`.
ALTER TABLE event_media ADD COLUMN width INTEGER CHECK (width IS NULL OR width > 0);
ALTER TABLE event_media ADD COLUMN height INTEGER CHECK (height IS NULL OR height > 0);
ALTER TABLE event_media ADD COLUMN processing TEXT NOT NULL DEFAULT 'none'
    CHECK (processing IN ('none', 'pending', 'ready', 'failed'));

CREATE TABLE processing_jobs (
    id          TEXT PRIMARY KEY NOT NULL,
    media_id    TEXT NOT NULL REFERENCES event_media (id) ON DELETE CASCADE,
    variants    TEXT,
    state       TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done', 'parked')),
    attempts    INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    lease_until TEXT,
    last_error  TEXT,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
) STRICT;

CREATE INDEX processing_jobs_claim_idx
    ON processing_jobs (created_at) WHERE state IN ('queued', 'running');
CREATE INDEX processing_jobs_media_idx ON processing_jobs (media_id);

CREATE TABLE derived_versions (
    media_id     TEXT NOT NULL REFERENCES event_media (id) ON DELETE CASCADE,
    variant      TEXT NOT NULL,
    s3_key       TEXT NOT NULL UNIQUE,
    width        INTEGER NOT NULL CHECK (width > 0),
    height       INTEGER NOT NULL CHECK (height > 0),
    size_bytes   INTEGER NOT NULL CHECK (size_bytes >= 0),
    content_type TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    PRIMARY KEY (media_id, variant)
) STRICT;
