-- Whether the stored original differs from the bytes the client sent because its GPS position
-- was blanked (STRIP_LOCATION). Media stored before this were never changed.
ALTER TABLE event_media ADD COLUMN location_stripped BOOLEAN NOT NULL DEFAULT FALSE;
