-- Leases on uploads in flight; the reasons are in the PostgreSQL migration of the same name.
CREATE TABLE upload_locks (
    media_id     TEXT PRIMARY KEY NOT NULL REFERENCES event_media (id) ON DELETE CASCADE,
    holder       TEXT NOT NULL,
    locked_until TEXT NOT NULL
) STRICT;
