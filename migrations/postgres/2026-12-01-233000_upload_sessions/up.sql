-- Direct uploads (presigned PUT or multipart straight to the store): what the client declared
-- and where its bytes are staged, beside the upload's `pending` media record. The session goes
-- with the record (CASCADE), so rolling back or deleting the record also forgets the session;
-- the service removes the staged bytes and aborts the multipart upload first.
CREATE TABLE upload_sessions (
    media_id        UUID PRIMARY KEY
                    CONSTRAINT upload_sessions_media_id_fkey REFERENCES event_media (id) ON DELETE CASCADE,
    kind            TEXT NOT NULL CHECK (kind IN ('put', 'multipart')),
    staging_key     TEXT NOT NULL,
    multipart_id    TEXT,
    declared_size   BIGINT NOT NULL CHECK (declared_size > 0),
    declared_sha256 TEXT,
    part_size       BIGINT,
    expires_at      TIMESTAMP NOT NULL
);
