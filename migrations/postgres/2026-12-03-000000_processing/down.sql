DROP TABLE derived_versions;
DROP TABLE processing_jobs;
ALTER TABLE event_media DROP COLUMN processing, DROP COLUMN height, DROP COLUMN width;
