-- Resumable (tus) upload sessions; the reasons are in the PostgreSQL migration of the same name.
CREATE TABLE tus_sessions (
    media_id      TEXT PRIMARY KEY NOT NULL REFERENCES event_media (id) ON DELETE CASCADE,
    staging_key   TEXT NOT NULL,
    multipart_id  TEXT NOT NULL,
    upload_length INTEGER CHECK (upload_length IS NULL OR upload_length >= 0),
    upload_offset INTEGER NOT NULL CHECK (upload_offset >= 0),
    part_size     INTEGER NOT NULL CHECK (part_size > 0),
    parts         TEXT NOT NULL,
    tail_key      TEXT,
    sniffed       INTEGER NOT NULL,
    metadata      TEXT,
    expires_at    TEXT NOT NULL
) STRICT;
