-- Idempotency keys; the reasons are in the PostgreSQL migration of the same name.
CREATE TABLE idempotency_keys (
    user_id        TEXT NOT NULL,
    key            TEXT NOT NULL,
    fingerprint    TEXT,
    answer_status  INTEGER,
    answer_body    TEXT,
    answer_location TEXT,
    created_at     TEXT NOT NULL,
    PRIMARY KEY (user_id, key)
) STRICT;
