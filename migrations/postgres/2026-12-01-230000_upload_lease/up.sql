-- Every upload in flight holds its `pending` record with a lease: a form upload renews it while
-- bytes arrive, and direct or resumable uploads hold it until they expire. The reconciler rolls
-- back only pending records whose lease has lapsed, whatever its grace period, so it never races
-- a live upload. NULL on records that are not uploads in flight.
ALTER TABLE event_media ADD COLUMN lease_until TIMESTAMP NULL;
-- Uploads in flight while this runs were written without a lease: give them the old hour.
UPDATE event_media SET lease_until = updated_at + INTERVAL '1 hour' WHERE status = 'pending';
