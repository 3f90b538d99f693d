-- Quotas count the bytes each record holds: a pending upload reserves its declared size (or
-- the largest file allowed), and finishing it corrects the reservation to the real size. The
-- sum over an event's (or an owner's) records is its usage, checked in the same transaction
-- that inserts the pending record, so concurrent uploads cannot overshoot.
ALTER TABLE event_media ADD COLUMN reserved_bytes BIGINT NOT NULL DEFAULT 0
    CHECK (reserved_bytes >= 0);
UPDATE event_media SET reserved_bytes = size_bytes;
-- The per-owner usage joins events by owner; the per-event one reads event_media_event_idx.
CREATE INDEX IF NOT EXISTS events_owner_idx ON events (owner);
