-- Idempotency-Key: the first answer to a request, kept for 24 hours, so that a client's retry
-- of the same request is answered the same instead of storing twice. A row is claimed before
-- the request is processed (answer_status NULL: in progress), so two concurrent requests with
-- one key cannot both store.
CREATE TABLE idempotency_keys (
    user_id        TEXT NOT NULL,
    key            TEXT NOT NULL,
    fingerprint    TEXT,
    answer_status  INTEGER,
    answer_body    TEXT,
    answer_location TEXT,
    created_at     TIMESTAMP NOT NULL,
    PRIMARY KEY (user_id, key)
);
