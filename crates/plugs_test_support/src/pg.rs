//! Per-test PostgreSQL databases. (owned by the persistence work)
