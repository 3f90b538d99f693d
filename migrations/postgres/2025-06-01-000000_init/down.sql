DROP TABLE event_media_tags;
DROP TABLE event_media;
DROP TABLE events;
