//! `Idempotency-Key`: the first answer to a request, kept for a while, so that a client's retry of
//! the same request is answered the same instead of storing twice.
//!
//! A key is claimed before its request is processed, so two concurrent requests with one key
//! cannot both store: the second finds the first in progress.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

use async_trait::async_trait;
use chrono::{DateTime, NaiveDateTime, TimeDelta, Utc};
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use plugs_domain::UserId;

use crate::diesel_repo::db_error;
use crate::{Database, RepoError, truncate_to_micros};

diesel::table! {
    /// Idempotency keys and the answers they were given.
    idempotency_keys (user_id, key) {
        user_id -> Text,
        key -> Text,
        fingerprint -> Nullable<Text>,
        answer_status -> Nullable<Integer>,
        answer_body -> Nullable<Text>,
        answer_location -> Nullable<Text>,
        created_at -> Timestamp,
    }
}

/// The answer first given to a request with a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAnswer {
    /// What identifies the request (a hash of what the client sent), to tell a retry from
    /// another request that reuses the key.
    pub fingerprint: String,
    /// The HTTP status.
    pub status: u16,
    /// The body (JSON).
    pub body: String,
    /// The `Location` header, if any.
    pub location: Option<String>,
}

/// What claiming a key found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The key is new (or its answer expired): the caller processes the request, then
    /// [`IdempotencyRepository::answer`]s or [`IdempotencyRepository::release`]s it.
    Claimed,
    /// Another request with this key is being processed.
    InProgress,
    /// A request with this key was answered.
    Answered(StoredAnswer),
}

/// Where idempotency keys are kept.
#[async_trait]
pub trait IdempotencyRepository: std::fmt::Debug + Send + Sync {
    /// Claims `key` of `user` at `now`; an answer older than `ttl` no longer counts, nor does a
    /// claim left unanswered for `claim_ttl` (its request died without answering or releasing).
    async fn claim(
        &self,
        user: &UserId,
        key: &str,
        now: DateTime<Utc>,
        ttl: TimeDelta,
        claim_ttl: TimeDelta,
    ) -> Result<Claim, RepoError>;

    /// Keeps the answer given to the claimed request.
    async fn answer(
        &self,
        user: &UserId,
        key: &str,
        answer: &StoredAnswer,
    ) -> Result<(), RepoError>;

    /// Gives a claim up (the request failed and stored nothing): a retry is processed anew.
    async fn release(&self, user: &UserId, key: &str) -> Result<(), RepoError>;

    /// Keeps `answer` under `key`, given at `now`, replacing whatever the key held: the answer of
    /// work that ran after its request was answered (a background completion's outcome), which
    /// the client fetches later with [`IdempotencyRepository::find_answer`].
    async fn put_answer(
        &self,
        user: &UserId,
        key: &str,
        answer: &StoredAnswer,
        now: DateTime<Utc>,
    ) -> Result<(), RepoError>;

    /// The answer kept under `key`, unless older than `ttl` at `now`; claims nothing.
    async fn find_answer(
        &self,
        user: &UserId,
        key: &str,
        now: DateTime<Utc>,
        ttl: TimeDelta,
    ) -> Result<Option<StoredAnswer>, RepoError>;
}

#[derive(Debug, Queryable, Selectable, Insertable)]
#[diesel(table_name = idempotency_keys)]
struct KeyRow {
    user_id: String,
    key: String,
    fingerprint: Option<String>,
    answer_status: Option<i32>,
    answer_body: Option<String>,
    answer_location: Option<String>,
    created_at: NaiveDateTime,
}

impl KeyRow {
    fn claim(self) -> Claim {
        match (self.fingerprint, self.answer_status, self.answer_body) {
            (Some(fingerprint), Some(status), Some(body)) => Claim::Answered(StoredAnswer {
                fingerprint,
                status: u16::try_from(status).unwrap_or_default(),
                body,
                location: self.answer_location,
            }),
            _ => Claim::InProgress,
        }
    }
}

#[async_trait]
impl IdempotencyRepository for Database {
    async fn claim(
        &self,
        user: &UserId,
        key: &str,
        now: DateTime<Utc>,
        ttl: TimeDelta,
        claim_ttl: TimeDelta,
    ) -> Result<Claim, RepoError> {
        let (user, key) = (user.as_str().to_owned(), key.to_owned());
        let now = truncate_to_micros(now).naive_utc();
        let (expired_before, abandoned_before) = (now - ttl, now - claim_ttl);
        self.with_connection(move |conn| {
            // An expired answer, or a claim whose request died, no longer counts: forget it.
            diesel::delete(
                idempotency_keys::table
                    .filter(idempotency_keys::user_id.eq(&user))
                    .filter(idempotency_keys::key.eq(&key))
                    .filter(
                        idempotency_keys::created_at.lt(expired_before).or(
                            idempotency_keys::answer_status
                                .is_null()
                                .and(idempotency_keys::created_at.lt(abandoned_before)),
                        ),
                    ),
            )
            .execute(conn)
            .map_err(db_error)?;
            let row = KeyRow {
                user_id: user.clone(),
                key: key.clone(),
                fingerprint: None,
                answer_status: None,
                answer_body: None,
                answer_location: None,
                created_at: now,
            };
            match diesel::insert_into(idempotency_keys::table)
                .values(&row)
                .execute(conn)
            {
                Ok(_) => Ok(Claim::Claimed),
                Err(DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _)) => {
                    let existing: Option<KeyRow> = idempotency_keys::table
                        .filter(idempotency_keys::user_id.eq(&user))
                        .filter(idempotency_keys::key.eq(&key))
                        .select(KeyRow::as_select())
                        .first(conn)
                        .optional()
                        .map_err(db_error)?;
                    Ok(existing.map_or(Claim::InProgress, KeyRow::claim))
                }
                Err(error) => Err(db_error(error)),
            }
        })
        .await
    }

    async fn answer(
        &self,
        user: &UserId,
        key: &str,
        answer: &StoredAnswer,
    ) -> Result<(), RepoError> {
        let (user, key, answer) = (user.as_str().to_owned(), key.to_owned(), answer.clone());
        self.with_connection(move |conn| {
            diesel::update(
                idempotency_keys::table
                    .filter(idempotency_keys::user_id.eq(&user))
                    .filter(idempotency_keys::key.eq(&key)),
            )
            .set((
                idempotency_keys::fingerprint.eq(Some(answer.fingerprint)),
                idempotency_keys::answer_status.eq(Some(i32::from(answer.status))),
                idempotency_keys::answer_body.eq(Some(answer.body)),
                idempotency_keys::answer_location.eq(answer.location),
            ))
            .execute(conn)
            .map_err(db_error)?;
            Ok(())
        })
        .await
    }

    async fn release(&self, user: &UserId, key: &str) -> Result<(), RepoError> {
        let (user, key) = (user.as_str().to_owned(), key.to_owned());
        self.with_connection(move |conn| {
            diesel::delete(
                idempotency_keys::table
                    .filter(idempotency_keys::user_id.eq(&user))
                    .filter(idempotency_keys::key.eq(&key))
                    .filter(idempotency_keys::answer_status.is_null()),
            )
            .execute(conn)
            .map_err(db_error)?;
            Ok(())
        })
        .await
    }

    async fn put_answer(
        &self,
        user: &UserId,
        key: &str,
        answer: &StoredAnswer,
        now: DateTime<Utc>,
    ) -> Result<(), RepoError> {
        let row = KeyRow {
            user_id: user.as_str().to_owned(),
            key: key.to_owned(),
            fingerprint: Some(answer.fingerprint.clone()),
            answer_status: Some(i32::from(answer.status)),
            answer_body: Some(answer.body.clone()),
            answer_location: answer.location.clone(),
            created_at: truncate_to_micros(now).naive_utc(),
        };
        self.with_connection(move |conn| {
            conn.transaction(|conn| {
                diesel::delete(
                    idempotency_keys::table
                        .filter(idempotency_keys::user_id.eq(&row.user_id))
                        .filter(idempotency_keys::key.eq(&row.key)),
                )
                .execute(conn)?;
                diesel::insert_into(idempotency_keys::table)
                    .values(&row)
                    .execute(conn)
            })
            .map_err(db_error)?;
            Ok(())
        })
        .await
    }

    async fn find_answer(
        &self,
        user: &UserId,
        key: &str,
        now: DateTime<Utc>,
        ttl: TimeDelta,
    ) -> Result<Option<StoredAnswer>, RepoError> {
        let (user, key) = (user.as_str().to_owned(), key.to_owned());
        let since = truncate_to_micros(now).naive_utc() - ttl;
        self.with_connection(move |conn| {
            let row: Option<KeyRow> = idempotency_keys::table
                .filter(idempotency_keys::user_id.eq(&user))
                .filter(idempotency_keys::key.eq(&key))
                .filter(idempotency_keys::created_at.ge(since))
                .select(KeyRow::as_select())
                .first(conn)
                .optional()
                .map_err(db_error)?;
            Ok(row.and_then(|row| match row.claim() {
                Claim::Answered(answer) => Some(answer),
                _ => None,
            }))
        })
        .await
    }
}

/// A key of the fake: user and key.
type KeyId = (String, String);

/// When a key was claimed, and its answer once given.
type KeyState = (DateTime<Utc>, Option<StoredAnswer>);

/// The in-memory fake, for tests of the layers above.
#[derive(Debug, Default)]
pub struct InMemoryIdempotency {
    /// When each key was claimed, and its answer once given.
    keys: Mutex<BTreeMap<KeyId, KeyState>>,
}

impl InMemoryIdempotency {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl IdempotencyRepository for InMemoryIdempotency {
    async fn claim(
        &self,
        user: &UserId,
        key: &str,
        now: DateTime<Utc>,
        ttl: TimeDelta,
        claim_ttl: TimeDelta,
    ) -> Result<Claim, RepoError> {
        let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        let id = (user.as_str().to_owned(), key.to_owned());
        match keys.get(&id) {
            Some((at, Some(answer))) if *at >= now - ttl => Ok(Claim::Answered(answer.clone())),
            Some((at, None)) if *at >= now - claim_ttl => Ok(Claim::InProgress),
            _ => {
                keys.insert(id, (now, None));
                Ok(Claim::Claimed)
            }
        }
    }

    async fn answer(
        &self,
        user: &UserId,
        key: &str,
        answer: &StoredAnswer,
    ) -> Result<(), RepoError> {
        let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = keys.get_mut(&(user.as_str().to_owned(), key.to_owned())) {
            entry.1 = Some(answer.clone());
        }
        Ok(())
    }

    async fn release(&self, user: &UserId, key: &str) -> Result<(), RepoError> {
        let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        let id = (user.as_str().to_owned(), key.to_owned());
        if keys.get(&id).is_some_and(|(_, answer)| answer.is_none()) {
            keys.remove(&id);
        }
        Ok(())
    }

    async fn put_answer(
        &self,
        user: &UserId,
        key: &str,
        answer: &StoredAnswer,
        now: DateTime<Utc>,
    ) -> Result<(), RepoError> {
        let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        keys.insert(
            (user.as_str().to_owned(), key.to_owned()),
            (truncate_to_micros(now), Some(answer.clone())),
        );
        Ok(())
    }

    async fn find_answer(
        &self,
        user: &UserId,
        key: &str,
        now: DateTime<Utc>,
        ttl: TimeDelta,
    ) -> Result<Option<StoredAnswer>, RepoError> {
        let keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(keys
            .get(&(user.as_str().to_owned(), key.to_owned()))
            .and_then(|(at, answer)| (*at >= now - ttl).then(|| answer.clone()).flatten()))
    }
}
