-- Quota reservations; the reasons are in the PostgreSQL migration of the same name.
ALTER TABLE event_media ADD COLUMN reserved_bytes INTEGER NOT NULL DEFAULT 0
    CHECK (reserved_bytes >= 0);
UPDATE event_media SET reserved_bytes = size_bytes;
CREATE INDEX IF NOT EXISTS events_owner_idx ON events (owner);
