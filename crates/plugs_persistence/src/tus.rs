//! Resumable (tus) upload sessions: where an upload stands (offset, parts done, staged tail), kept
//! in the database so that any server process can continue an upload another one began.
//!
//! A separate trait from [`MediaRepository`](crate::MediaRepository): the media record of an
//! upload is written through that one; the session row goes with it (deleted with the record).

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

use async_trait::async_trait;
use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use plugs_domain::MediaId;

use crate::connection::SqlUuid;
use crate::{Database, RepoError, truncate_to_micros};

diesel::table! {
    use diesel::sql_types::*;
    use crate::connection::DbUuid;

    /// Where each resumable upload stands.
    tus_sessions (media_id) {
        media_id -> DbUuid,
        staging_key -> Text,
        multipart_id -> Text,
        upload_length -> Nullable<BigInt>,
        upload_offset -> BigInt,
        part_size -> BigInt,
        parts -> Text,
        tail_key -> Nullable<Text>,
        sniffed -> Bool,
        metadata -> Nullable<Text>,
        expires_at -> Timestamp,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::connection::DbUuid;

    /// Who works on an upload in flight right now (a lease across server processes).
    upload_locks (media_id) {
        media_id -> DbUuid,
        holder -> Text,
        locked_until -> Timestamp,
    }
}

/// A part of the upload's multipart upload already stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TusPart {
    /// From 1.
    pub number: u32,
    /// The ETag the store answered for it.
    pub etag: String,
}

/// Where a resumable upload stands. The pending media record with the same id holds its
/// declared type, name and fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TusSession {
    /// The pending media record's id, which is also the upload's id.
    pub media_id: MediaId,
    /// The key the multipart upload assembles: `uploads/{event_id}/{upload_id}`.
    pub staging_key: String,
    /// The store's multipart upload id.
    pub multipart_id: String,
    /// The declared length; `None` while deferred.
    pub upload_length: Option<u64>,
    /// Bytes received and kept.
    pub offset: u64,
    /// Every part's size but the last one's.
    pub part_size: u64,
    /// The parts stored, in order (`parts.len() * part_size` bytes).
    pub parts: Vec<TusPart>,
    /// The object holding the bytes after the last full part, when there are any.
    pub tail_key: Option<String>,
    /// Whether the head of the file has been sniffed and accepted.
    pub sniffed: bool,
    /// The client's `Upload-Metadata`, as sent (answered again on `HEAD`).
    pub metadata: Option<String>,
    /// When the upload expires (its record's lease runs as long).
    pub expires_at: DateTime<Utc>,
}

/// The resumable upload sessions.
#[async_trait]
pub trait TusRepository: std::fmt::Debug + Send + Sync {
    /// Stores a new session; its media record must exist ([`RepoError::MissingParent`]).
    async fn insert_tus_session(&self, session: &TusSession) -> Result<(), RepoError>;

    /// The session of an upload, if it has one.
    async fn find_tus_session(&self, media_id: MediaId) -> Result<Option<TusSession>, RepoError>;

    /// Replaces a session by `session`, but only if its offset is still `expected_offset`: one
    /// guarded UPDATE, so of two requests that continued from the same offset only the first
    /// writes. `false` (and nothing changed) when the offset moved or the session is gone.
    async fn advance_tus_session(
        &self,
        session: &TusSession,
        expected_offset: u64,
    ) -> Result<bool, RepoError>;

    /// Forgets a session (deleting its media record does too). Missing: succeeds.
    async fn delete_tus_session(&self, media_id: MediaId) -> Result<(), RepoError>;

    /// Takes the lease on an upload in flight (a tus `PATCH` appending, a direct upload's
    /// completion verifying) for `holder` until `until`, unless another holder's lease is still
    /// live at `now`: `true` when taken. One guarded statement per step, so of two requests
    /// racing for it, on any number of server processes, exactly one wins; a lease whose process
    /// died lapses by itself. The upload's media record must exist
    /// ([`RepoError::MissingParent`]); the lease goes with it.
    async fn lock_upload(
        &self,
        media_id: MediaId,
        holder: &str,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, RepoError>;

    /// Extends `holder`'s lease to `until`; `false` when `holder` no longer holds it.
    async fn renew_upload_lock(
        &self,
        media_id: MediaId,
        holder: &str,
        until: DateTime<Utc>,
    ) -> Result<bool, RepoError>;

    /// Gives `holder`'s lease up; nothing happens when it holds none.
    async fn unlock_upload(&self, media_id: MediaId, holder: &str) -> Result<(), RepoError>;

    /// Until when a live lease on the upload runs at `now`, if one does.
    async fn upload_locked_until(
        &self,
        media_id: MediaId,
        now: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, RepoError>;
}

#[derive(Debug, Insertable)]
#[diesel(table_name = upload_locks)]
struct LockRow {
    media_id: SqlUuid,
    holder: String,
    locked_until: NaiveDateTime,
}

#[derive(Debug, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = tus_sessions, treat_none_as_null = true)]
struct TusRow {
    media_id: SqlUuid,
    staging_key: String,
    multipart_id: String,
    upload_length: Option<i64>,
    upload_offset: i64,
    part_size: i64,
    parts: String,
    tail_key: Option<String>,
    sniffed: bool,
    metadata: Option<String>,
    expires_at: NaiveDateTime,
}

fn db_size(size: u64) -> Result<i64, RepoError> {
    i64::try_from(size).map_err(|_| RepoError::Other {
        source: format!("size {size} does not fit a BIGINT").into(),
    })
}

fn corrupt(detail: String) -> RepoError {
    RepoError::Corrupt {
        table: "tus_sessions",
        detail,
    }
}

impl TusRow {
    fn from_session(session: &TusSession) -> Result<Self, RepoError> {
        Ok(Self {
            media_id: SqlUuid(session.media_id.as_uuid()),
            staging_key: session.staging_key.clone(),
            multipart_id: session.multipart_id.clone(),
            upload_length: session.upload_length.map(db_size).transpose()?,
            upload_offset: db_size(session.offset)?,
            part_size: db_size(session.part_size)?,
            parts: encode_parts(&session.parts),
            tail_key: session.tail_key.clone(),
            sniffed: session.sniffed,
            metadata: session.metadata.clone(),
            expires_at: truncate_to_micros(session.expires_at).naive_utc(),
        })
    }

    fn into_session(self) -> Result<TusSession, RepoError> {
        let size = |value: i64| {
            u64::try_from(value).map_err(|_| corrupt(format!("negative size {value}")))
        };
        Ok(TusSession {
            media_id: MediaId::from_uuid(self.media_id.0),
            staging_key: self.staging_key,
            multipart_id: self.multipart_id,
            upload_length: self.upload_length.map(size).transpose()?,
            offset: size(self.upload_offset)?,
            part_size: size(self.part_size)?,
            parts: decode_parts(&self.parts)?,
            tail_key: self.tail_key,
            sniffed: self.sniffed,
            metadata: self.metadata,
            expires_at: self.expires_at.and_utc(),
        })
    }
}

/// One `number etag` per line: the multi-backend schema has no arrays.
fn encode_parts(parts: &[TusPart]) -> String {
    parts
        .iter()
        .map(|part| format!("{} {}", part.number, part.etag))
        .collect::<Vec<_>>()
        .join("\n")
}

fn decode_parts(text: &str) -> Result<Vec<TusPart>, RepoError> {
    text.lines()
        .filter(|line| !line.is_empty())
        .map(|line| {
            let (number, etag) = line
                .split_once(' ')
                .ok_or_else(|| corrupt(format!("malformed part {line:?}")))?;
            let number = number
                .parse()
                .map_err(|_| corrupt(format!("malformed part number {number:?}")))?;
            Ok(TusPart {
                number,
                etag: etag.to_owned(),
            })
        })
        .collect()
}

fn db_error(error: DieselError) -> RepoError {
    match error {
        DieselError::DatabaseError(DatabaseErrorKind::ForeignKeyViolation, _) => {
            RepoError::MissingParent {
                entity: "tus session",
                parent: "media",
            }
        }
        DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _) => RepoError::Duplicate {
            what: "tus session",
        },
        // SQLite names foreign key failures only in the message.
        DieselError::DatabaseError(_, info) if info.message().contains("FOREIGN KEY") => {
            RepoError::MissingParent {
                entity: "tus session",
                parent: "media",
            }
        }
        other => RepoError::Other {
            source: Box::new(other),
        },
    }
}

#[async_trait]
impl TusRepository for Database {
    async fn insert_tus_session(&self, session: &TusSession) -> Result<(), RepoError> {
        let row = TusRow::from_session(session)?;
        self.with_connection(move |conn| {
            diesel::insert_into(tus_sessions::table)
                .values(&row)
                .execute(conn)
                .map_err(db_error)?;
            Ok(())
        })
        .await
    }

    async fn find_tus_session(&self, media_id: MediaId) -> Result<Option<TusSession>, RepoError> {
        self.with_connection(move |conn| {
            tus_sessions::table
                .find(SqlUuid(media_id.as_uuid()))
                .select(TusRow::as_select())
                .first(conn)
                .optional()
                .map_err(db_error)?
                .map(TusRow::into_session)
                .transpose()
        })
        .await
    }

    async fn advance_tus_session(
        &self,
        session: &TusSession,
        expected_offset: u64,
    ) -> Result<bool, RepoError> {
        let row = TusRow::from_session(session)?;
        let expected = db_size(expected_offset)?;
        self.with_connection(move |conn| {
            let updated = diesel::update(
                tus_sessions::table
                    .filter(tus_sessions::media_id.eq(row.media_id))
                    .filter(tus_sessions::upload_offset.eq(expected)),
            )
            .set(&row)
            .execute(conn)
            .map_err(db_error)?;
            Ok(updated == 1)
        })
        .await
    }

    async fn delete_tus_session(&self, media_id: MediaId) -> Result<(), RepoError> {
        self.with_connection(move |conn| {
            diesel::delete(tus_sessions::table.find(SqlUuid(media_id.as_uuid())))
                .execute(conn)
                .map_err(db_error)?;
            Ok(())
        })
        .await
    }

    async fn lock_upload(
        &self,
        media_id: MediaId,
        holder: &str,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, RepoError> {
        let row = LockRow {
            media_id: SqlUuid(media_id.as_uuid()),
            holder: holder.to_owned(),
            locked_until: truncate_to_micros(until).naive_utc(),
        };
        let now = truncate_to_micros(now).naive_utc();
        self.with_connection(move |conn| {
            // A lapsed lease is taken over in place; the WHERE is evaluated again on the row
            // another writer just changed (PostgreSQL) or under the database lock (SQLite), so
            // two takers cannot both see it lapsed.
            let taken = diesel::update(
                upload_locks::table
                    .filter(upload_locks::media_id.eq(row.media_id))
                    .filter(upload_locks::locked_until.le(now)),
            )
            .set((
                upload_locks::holder.eq(&row.holder),
                upload_locks::locked_until.eq(row.locked_until),
            ))
            .execute(conn)
            .map_err(db_error)?;
            if taken == 1 {
                return Ok(true);
            }
            match diesel::insert_into(upload_locks::table)
                .values(&row)
                .execute(conn)
                .map_err(db_error)
            {
                Ok(_) => Ok(true),
                // Someone else's lease, live (or it lapsed a moment ago: the caller retries).
                Err(RepoError::Duplicate { .. }) => Ok(false),
                Err(other) => Err(other),
            }
        })
        .await
    }

    async fn renew_upload_lock(
        &self,
        media_id: MediaId,
        holder: &str,
        until: DateTime<Utc>,
    ) -> Result<bool, RepoError> {
        let (holder, until) = (holder.to_owned(), truncate_to_micros(until).naive_utc());
        self.with_connection(move |conn| {
            let renewed = diesel::update(
                upload_locks::table
                    .filter(upload_locks::media_id.eq(SqlUuid(media_id.as_uuid())))
                    .filter(upload_locks::holder.eq(&holder)),
            )
            .set(upload_locks::locked_until.eq(until))
            .execute(conn)
            .map_err(db_error)?;
            Ok(renewed == 1)
        })
        .await
    }

    async fn unlock_upload(&self, media_id: MediaId, holder: &str) -> Result<(), RepoError> {
        let holder = holder.to_owned();
        self.with_connection(move |conn| {
            diesel::delete(
                upload_locks::table
                    .filter(upload_locks::media_id.eq(SqlUuid(media_id.as_uuid())))
                    .filter(upload_locks::holder.eq(&holder)),
            )
            .execute(conn)
            .map_err(db_error)?;
            Ok(())
        })
        .await
    }

    async fn upload_locked_until(
        &self,
        media_id: MediaId,
        now: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, RepoError> {
        let now = truncate_to_micros(now).naive_utc();
        self.with_connection(move |conn| {
            let until: Option<NaiveDateTime> = upload_locks::table
                .find(SqlUuid(media_id.as_uuid()))
                .filter(upload_locks::locked_until.gt(now))
                .select(upload_locks::locked_until)
                .first(conn)
                .optional()
                .map_err(db_error)?;
            Ok(until.map(|until| until.and_utc()))
        })
        .await
    }
}

/// An in-memory [`TusRepository`] for tests. It does not see media records: the service
/// deletes a session itself when it removes the upload, so nothing here needs the cascade.
#[derive(Debug, Default)]
pub struct InMemoryTusRepository {
    sessions: Mutex<BTreeMap<MediaId, TusSession>>,
    /// Leases: holder and until when.
    locks: Mutex<BTreeMap<MediaId, (String, DateTime<Utc>)>>,
}

impl InMemoryTusRepository {
    /// An empty repository.
    pub fn new() -> Self {
        Self::default()
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, BTreeMap<MediaId, TusSession>> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn locks(&self) -> std::sync::MutexGuard<'_, BTreeMap<MediaId, (String, DateTime<Utc>)>> {
        self.locks.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn stored(session: &TusSession) -> TusSession {
    let mut stored = session.clone();
    stored.expires_at = truncate_to_micros(stored.expires_at);
    stored
}

#[async_trait]
impl TusRepository for InMemoryTusRepository {
    async fn insert_tus_session(&self, session: &TusSession) -> Result<(), RepoError> {
        let mut sessions = self.sessions();
        if sessions.contains_key(&session.media_id) {
            return Err(RepoError::Duplicate {
                what: "tus session",
            });
        }
        sessions.insert(session.media_id, stored(session));
        Ok(())
    }

    async fn find_tus_session(&self, media_id: MediaId) -> Result<Option<TusSession>, RepoError> {
        Ok(self.sessions().get(&media_id).cloned())
    }

    async fn advance_tus_session(
        &self,
        session: &TusSession,
        expected_offset: u64,
    ) -> Result<bool, RepoError> {
        let mut sessions = self.sessions();
        match sessions.get_mut(&session.media_id) {
            Some(current) if current.offset == expected_offset => {
                *current = stored(session);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn delete_tus_session(&self, media_id: MediaId) -> Result<(), RepoError> {
        self.sessions().remove(&media_id);
        Ok(())
    }

    async fn lock_upload(
        &self,
        media_id: MediaId,
        holder: &str,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, RepoError> {
        let mut locks = self.locks();
        let now = truncate_to_micros(now);
        match locks.get(&media_id) {
            Some((_, held_until)) if *held_until > now => Ok(false),
            _ => {
                locks.insert(media_id, (holder.to_owned(), truncate_to_micros(until)));
                Ok(true)
            }
        }
    }

    async fn renew_upload_lock(
        &self,
        media_id: MediaId,
        holder: &str,
        until: DateTime<Utc>,
    ) -> Result<bool, RepoError> {
        match self.locks().get_mut(&media_id) {
            Some((held_by, held_until)) if held_by == holder => {
                *held_until = truncate_to_micros(until);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn unlock_upload(&self, media_id: MediaId, holder: &str) -> Result<(), RepoError> {
        let mut locks = self.locks();
        if locks
            .get(&media_id)
            .is_some_and(|(held_by, _)| held_by == holder)
        {
            locks.remove(&media_id);
        }
        Ok(())
    }

    async fn upload_locked_until(
        &self,
        media_id: MediaId,
        now: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, RepoError> {
        let now = truncate_to_micros(now);
        Ok(self
            .locks()
            .get(&media_id)
            .map(|(_, until)| *until)
            .filter(|until| *until > now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_survive_their_text_form() {
        let parts = vec![
            TusPart {
                number: 1,
                etag: "\"abc\"".to_owned(),
            },
            TusPart {
                number: 2,
                etag: "\"d e\"".to_owned(),
            },
        ];
        assert_eq!(decode_parts(&encode_parts(&parts)).ok(), Some(parts));
        assert_eq!(decode_parts("").ok(), Some(Vec::new()));
    }
}
