-- Direct-upload sessions; the reasons are in the PostgreSQL migration of the same name.
CREATE TABLE upload_sessions (
    media_id        TEXT PRIMARY KEY NOT NULL REFERENCES event_media (id) ON DELETE CASCADE,
    kind            TEXT NOT NULL CHECK (kind IN ('put', 'multipart')),
    staging_key     TEXT NOT NULL,
    multipart_id    TEXT,
    declared_size   INTEGER NOT NULL CHECK (declared_size > 0),
    declared_sha256 TEXT,
    part_size       INTEGER,
    expires_at      TEXT NOT NULL
) STRICT;
