-- Who is working on an upload in flight right now: a tus PATCH appending bytes, or a direct
-- upload's completion verifying them. A lease, not a session lock, so that it holds across
-- server processes and lapses by itself when its process dies (`locked_until`, renewed while
-- the work runs). `holder` is a random token of the request holding it. The row goes with the
-- upload's record (CASCADE).
CREATE TABLE upload_locks (
    media_id     UUID PRIMARY KEY
                 CONSTRAINT upload_locks_media_id_fkey REFERENCES event_media (id) ON DELETE CASCADE,
    holder       TEXT NOT NULL,
    locked_until TIMESTAMP NOT NULL
);
