DROP TABLE derived_versions;
DROP TABLE processing_jobs;
ALTER TABLE event_media DROP COLUMN processing;
ALTER TABLE event_media DROP COLUMN height;
ALTER TABLE event_media DROP COLUMN width;
