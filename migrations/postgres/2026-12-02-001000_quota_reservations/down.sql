DROP INDEX IF EXISTS events_owner_idx;
ALTER TABLE event_media DROP COLUMN reserved_bytes;
