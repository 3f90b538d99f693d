ALTER TABLE event_media DROP COLUMN lease_until;
