-- Whether the stored original's GPS position was blanked; the reasons are in the PostgreSQL
-- migration of the same name. The table is STRICT, which knows no BOOLEAN: 0 or 1.
ALTER TABLE event_media ADD COLUMN location_stripped INTEGER NOT NULL DEFAULT 0
    CHECK (location_stripped IN (0, 1));
