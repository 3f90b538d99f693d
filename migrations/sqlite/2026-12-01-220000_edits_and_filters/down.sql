CREATE INDEX event_media_tags_tag_idx ON event_media_tags (tag);
DROP INDEX event_media_tags_tag_media_idx;
DROP INDEX event_media_ready_kind_idx;
ALTER TABLE event_media DROP COLUMN kind;
ALTER TABLE events DROP COLUMN updated_at;
