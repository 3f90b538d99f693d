ALTER TABLE event_media DROP COLUMN location_stripped;
