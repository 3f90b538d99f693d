-- Upload leases; the reasons are in the PostgreSQL migration of the same name.
ALTER TABLE event_media ADD COLUMN lease_until TEXT NULL;
UPDATE event_media SET lease_until = strftime('%Y-%m-%d %H:%M:%f', updated_at, '+1 hour')
    WHERE status = 'pending';
