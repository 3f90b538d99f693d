-- Resumable (tus) uploads: where an upload stands, so that any server process can continue it.
-- Beside the upload's `pending` media record, whose lease runs to `expires_at`; the session goes
-- with the record (CASCADE). The service aborts the multipart upload and deletes the staged tail
-- first. `parts` lists the multipart parts done, one `number etag` per line.
CREATE TABLE tus_sessions (
    media_id      UUID PRIMARY KEY
                  CONSTRAINT tus_sessions_media_id_fkey REFERENCES event_media (id) ON DELETE CASCADE,
    staging_key   TEXT NOT NULL,
    multipart_id  TEXT NOT NULL,
    upload_length BIGINT CHECK (upload_length IS NULL OR upload_length >= 0),
    upload_offset BIGINT NOT NULL CHECK (upload_offset >= 0),
    part_size     BIGINT NOT NULL CHECK (part_size > 0),
    parts         TEXT NOT NULL,
    tail_key      TEXT,
    sniffed       BOOLEAN NOT NULL,
    metadata      TEXT,
    expires_at    TIMESTAMP NOT NULL
);
