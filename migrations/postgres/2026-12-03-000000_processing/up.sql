-- Media processing (issue 12): derived versions (thumbnails, display copies) made after an upload
-- by workers that share a queue kept here, so that any number of server processes and
-- `plugs-api worker` processes share the work and a crashed worker's job is retried.

-- What processing made of a media: the original's upright dimensions (once read) and where its
-- derived versions stand. 'none': its type has none; 'pending': a job is queued or running;
-- 'ready': every variant is stored; 'failed': its job was parked.
ALTER TABLE event_media
    ADD COLUMN width      INTEGER CHECK (width IS NULL OR width > 0),
    ADD COLUMN height     INTEGER CHECK (height IS NULL OR height > 0),
    ADD COLUMN processing TEXT NOT NULL DEFAULT 'none'
               CHECK (processing IN ('none', 'pending', 'ready', 'failed'));

-- The work queue. A job is enqueued in the transaction that marks its media ready. Workers claim
-- the oldest runnable job with `FOR UPDATE SKIP LOCKED` (so they never wait on each other nor
-- take the same job) and hold it by a lease they renew while working; a job whose lease lapsed
-- (its worker died) is claimed again. `attempts` counts claims; after the last allowed one a
-- failure parks the job with its error. A queued job's `lease_until` is the earliest time it
-- may run (back-off after a failure). Jobs go with their media (CASCADE).
CREATE TABLE processing_jobs (
    id          UUID PRIMARY KEY,
    media_id    UUID NOT NULL
                CONSTRAINT processing_jobs_media_id_fkey REFERENCES event_media (id) ON DELETE CASCADE,
    -- The variants to make, comma-separated; NULL: every configured variant.
    variants    TEXT,
    state       TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done', 'parked')),
    attempts    INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    lease_until TIMESTAMP,
    last_error  TEXT,
    created_at  TIMESTAMP NOT NULL,
    updated_at  TIMESTAMP NOT NULL
);

-- The claim's scan: runnable jobs oldest first; done and parked jobs cost nothing here.
CREATE INDEX processing_jobs_claim_idx
    ON processing_jobs (created_at) WHERE state IN ('queued', 'running');
CREATE INDEX processing_jobs_media_idx ON processing_jobs (media_id);

-- The derived versions stored, one per media and variant: a retried job replaces its row (and
-- overwrites its object, whose key is fixed by the original's key and the variant).
CREATE TABLE derived_versions (
    media_id     UUID NOT NULL
                 CONSTRAINT derived_versions_media_id_fkey REFERENCES event_media (id) ON DELETE CASCADE,
    variant      TEXT NOT NULL,
    s3_key       TEXT NOT NULL CONSTRAINT derived_versions_s3_key_key UNIQUE,
    width        INTEGER NOT NULL CHECK (width > 0),
    height       INTEGER NOT NULL CHECK (height > 0),
    size_bytes   BIGINT NOT NULL CHECK (size_bytes >= 0),
    content_type TEXT NOT NULL,
    created_at   TIMESTAMP NOT NULL,
    PRIMARY KEY (media_id, variant)
);
