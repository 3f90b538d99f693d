//! The repository traits over Diesel, for both backends through one [`AnyConnection`].

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::dsl::sql;
use diesel::expression::SqlLiteral;
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::sql_types::Bool;
use plugs_domain::{Event, EventId, EventMedia, MediaId, MediaStatus, PageCursor, UserId};
use uuid::Uuid;

use crate::connection::{AnyConnection, SqlUuid};
use crate::database::Database;
use crate::schema::{event_media, event_media_tags, events};
use crate::{EventRepository, HealthCheck, MediaRepository, RepoError, truncate_to_micros};

#[derive(Debug, Queryable, Selectable, Insertable)]
#[diesel(table_name = events)]
struct EventRow {
    id: SqlUuid,
    owner: String,
    title: String,
    created_at: NaiveDateTime,
}

impl EventRow {
    fn from_event(event: &Event) -> Self {
        Self {
            id: SqlUuid(event.id.as_uuid()),
            owner: event.owner.as_str().to_owned(),
            title: event.title.clone(),
            created_at: db_time(event.created_at),
        }
    }

    fn into_event(self) -> Result<Event, RepoError> {
        let owner = UserId::parse(self.owner).map_err(|e| RepoError::Corrupt {
            table: "events",
            detail: e.to_string(),
        })?;
        Ok(Event {
            id: EventId::from_uuid(self.id.0),
            title: self.title,
            owner,
            created_at: self.created_at.and_utc(),
        })
    }
}

#[derive(Debug, Queryable, Selectable, Insertable)]
#[diesel(table_name = event_media)]
struct MediaRow {
    id: SqlUuid,
    event_id: SqlUuid,
    title: Option<String>,
    description: Option<String>,
    original_filename: Option<String>,
    content_type: String,
    size_bytes: i64,
    sha256: Option<String>,
    s3_key: String,
    status: String,
    uploaded_by: String,
    created_at: NaiveDateTime,
    updated_at: NaiveDateTime,
}

impl MediaRow {
    fn from_media(media: &EventMedia) -> Result<Self, RepoError> {
        Ok(Self {
            id: SqlUuid(media.id.as_uuid()),
            event_id: SqlUuid(media.event_id.as_uuid()),
            title: media.title.clone(),
            description: media.description.clone(),
            original_filename: media.original_filename.clone(),
            content_type: media.content_type.clone(),
            size_bytes: db_size(media.size_bytes)?,
            sha256: media.sha256.clone(),
            s3_key: media.s3_key.clone(),
            status: media.status.as_str().to_owned(),
            uploaded_by: media.uploaded_by.as_str().to_owned(),
            created_at: db_time(media.created_at),
            updated_at: db_time(media.updated_at),
        })
    }

    fn into_media(self, tags: Vec<String>) -> Result<EventMedia, RepoError> {
        let corrupt = |detail: String| RepoError::Corrupt {
            table: "event_media",
            detail,
        };
        let status = MediaStatus::parse(&self.status)
            .ok_or_else(|| corrupt(format!("unknown status {:?}", self.status)))?;
        let size_bytes = u64::try_from(self.size_bytes)
            .map_err(|_| corrupt(format!("negative size {}", self.size_bytes)))?;
        let uploaded_by = UserId::parse(self.uploaded_by).map_err(|e| corrupt(e.to_string()))?;
        Ok(EventMedia {
            id: MediaId::from_uuid(self.id.0),
            event_id: EventId::from_uuid(self.event_id.0),
            title: self.title,
            description: self.description,
            tags,
            original_filename: self.original_filename,
            content_type: self.content_type,
            size_bytes,
            sha256: self.sha256,
            s3_key: self.s3_key,
            status,
            uploaded_by,
            created_at: self.created_at.and_utc(),
            updated_at: self.updated_at.and_utc(),
        })
    }
}

#[derive(Debug, Insertable)]
#[diesel(table_name = event_media_tags)]
struct TagRow<'a> {
    media_id: SqlUuid,
    tag: &'a str,
    position: i32,
}

/// Both backends store UTC wall-clock time at microsecond precision; truncating here (rather than
/// letting PostgreSQL round and SQLite keep nanoseconds) makes a value read back equal to the value
/// written on either backend and in the fake.
fn db_time(time: DateTime<Utc>) -> NaiveDateTime {
    truncate_to_micros(time).naive_utc()
}

fn db_now() -> NaiveDateTime {
    db_time(Utc::now())
}

fn db_size(size: u64) -> Result<i64, RepoError> {
    i64::try_from(size).map_err(|_| RepoError::Other {
        source: format!("size {size} exceeds BIGINT").into(),
    })
}

fn db_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// An error inside a transaction: either Diesel's (classified after the rollback) or one already
/// classified by the operation that knows what a constraint violation means there.
enum TxError {
    Diesel(DieselError),
    Repo(RepoError),
}

impl From<DieselError> for TxError {
    fn from(value: DieselError) -> Self {
        Self::Diesel(value)
    }
}

impl From<TxError> for RepoError {
    fn from(value: TxError) -> Self {
        match value {
            TxError::Diesel(error) => db_error(error),
            TxError::Repo(error) => error,
        }
    }
}

/// Classifies a Diesel error that the calling operation gave no special meaning.
fn db_error(error: DieselError) -> RepoError {
    match &error {
        DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, info) => {
            RepoError::Duplicate {
                what: duplicate_what(info.constraint_name(), info.message()),
            }
        }
        DieselError::DatabaseError(
            DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
            _,
        )
        | DieselError::BrokenTransactionManager => RepoError::Unavailable {
            source: Box::new(error),
        },
        DieselError::DatabaseError(_, info) if is_transient(info.message()) => {
            RepoError::Unavailable {
                source: Box::new(error),
            }
        }
        _ => RepoError::Other {
            source: Box::new(error),
        },
    }
}

/// Which unique constraint refused a row. PostgreSQL names the constraint
/// (`event_media_s3_key_key`, `event_media_pkey`, ...); SQLite only says
/// `UNIQUE constraint failed: event_media.s3_key` in its message.
fn duplicate_what(constraint: Option<&str>, message: &str) -> &'static str {
    let text = constraint.unwrap_or(message);
    if text.contains("s3_key") {
        "s3_key"
    } else if text.contains("tags") {
        "tag"
    } else {
        "id"
    }
}

/// Errors that say "try again later" rather than "this request is wrong": SQLite's lock timeout,
/// and PostgreSQL terminating the session (server shutdown, database dropped).
fn is_transient(message: &str) -> bool {
    message.contains("database is locked")
        || message.contains("terminating connection")
        || message.contains("server closed the connection")
        || message.contains("no connection to the server")
}

/// A foreign key refused the statement. SQLite reports an `ON DELETE RESTRICT` refusal with an
/// extended code Diesel does not classify, so its message is checked too.
fn is_fk_violation(error: &DieselError) -> bool {
    match error {
        DieselError::DatabaseError(
            DatabaseErrorKind::ForeignKeyViolation | DatabaseErrorKind::RestrictViolation,
            _,
        ) => true,
        DieselError::DatabaseError(_, info) => {
            info.message().contains("FOREIGN KEY constraint failed")
        }
        _ => false,
    }
}

/// The status literal is SQL text, not a bound parameter, so that the partial index
/// `event_media_ready_listing_idx ... WHERE status = 'ready'` matches on both backends: SQLite
/// only uses a partial index whose condition appears verbatim in the query, and PostgreSQL cannot
/// prove `status = $n` implies it for a generic prepared-statement plan.
fn ready_only() -> SqlLiteral<Bool> {
    sql("event_media.status = 'ready'")
}

/// First page of an event's ready media, newest first. Selects the table's default column list,
/// which is the field order of [`MediaRow`].
#[diesel::dsl::auto_type(no_type_alias)]
pub(crate) fn ready_first_page(event: SqlUuid, limit: i64) -> _ {
    let ready: SqlLiteral<Bool> = ready_only();
    event_media::table
        .filter(event_media::event_id.eq(event))
        .filter(ready)
        .order((event_media::created_at.desc(), event_media::id.desc()))
        .limit(limit)
}

/// The page after `(created_at, id)`. Written as `created_at <= c AND (created_at < c OR id < i)`
/// (not as an `OR` alone) so the `<=` bound is an index condition and a deep page starts where the
/// cursor points instead of filtering every newer row.
#[diesel::dsl::auto_type(no_type_alias)]
pub(crate) fn ready_page_after(
    event: SqlUuid,
    created_at: NaiveDateTime,
    id: SqlUuid,
    limit: i64,
) -> _ {
    let ready: SqlLiteral<Bool> = ready_only();
    event_media::table
        .filter(event_media::event_id.eq(event))
        .filter(ready)
        .filter(event_media::created_at.le(created_at))
        .filter(
            event_media::created_at
                .lt(created_at)
                .or(event_media::id.lt(id)),
        )
        .order((event_media::created_at.desc(), event_media::id.desc()))
        .limit(limit)
}

/// Attaches tags to rows with one query for the whole page (`media_id IN (...)`).
fn with_tags(conn: &mut AnyConnection, rows: Vec<MediaRow>) -> Result<Vec<EventMedia>, RepoError> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<SqlUuid> = rows.iter().map(|row| row.id).collect();
    let tag_rows: Vec<(SqlUuid, String)> = event_media_tags::table
        .filter(event_media_tags::media_id.eq_any(&ids))
        .order((event_media_tags::media_id, event_media_tags::position))
        .select((event_media_tags::media_id, event_media_tags::tag))
        .load(conn)
        .map_err(db_error)?;
    let mut tags: HashMap<Uuid, Vec<String>> = HashMap::new();
    for (media_id, tag) in tag_rows {
        tags.entry(media_id.0).or_default().push(tag);
    }
    rows.into_iter()
        .map(|row| {
            let row_tags = tags.remove(&row.id.0).unwrap_or_default();
            row.into_media(row_tags)
        })
        .collect()
}

fn load_media(conn: &mut AnyConnection, id: SqlUuid) -> Result<Option<EventMedia>, RepoError> {
    let row: Option<MediaRow> = event_media::table
        .find(id)
        .select(MediaRow::as_select())
        .first(conn)
        .optional()
        .map_err(db_error)?;
    Ok(with_tags(conn, row.into_iter().collect())?.pop())
}

fn media_not_found(id: MediaId) -> RepoError {
    RepoError::NotFound {
        entity: "media",
        id: id.to_string(),
    }
}

/// Why a guarded transition matched no row: the row is missing, or in another state.
fn transition_refused(
    conn: &mut AnyConnection,
    id: MediaId,
    expected: &'static str,
) -> Result<RepoError, RepoError> {
    let status: Option<String> = event_media::table
        .find(SqlUuid(id.as_uuid()))
        .select(event_media::status)
        .first(conn)
        .optional()
        .map_err(db_error)?;
    Ok(match status {
        None => media_not_found(id),
        Some(status) => match MediaStatus::parse(&status) {
            Some(actual) => RepoError::InvalidState {
                id: id.to_string(),
                expected,
                actual: actual.as_str(),
            },
            None => RepoError::Corrupt {
                table: "event_media",
                detail: format!("status {status:?}"),
            },
        },
    })
}

#[async_trait]
impl EventRepository for Database {
    async fn insert_event(&self, event: &Event) -> Result<(), RepoError> {
        let row = EventRow::from_event(event);
        self.with_connection(move |conn| {
            diesel::insert_into(events::table)
                .values(&row)
                .execute(conn)
                .map_err(db_error)?;
            Ok(())
        })
        .await
    }

    async fn find_event(&self, id: EventId) -> Result<Option<Event>, RepoError> {
        self.with_connection(move |conn| {
            events::table
                .find(SqlUuid(id.as_uuid()))
                .select(EventRow::as_select())
                .first(conn)
                .optional()
                .map_err(db_error)?
                .map(EventRow::into_event)
                .transpose()
        })
        .await
    }

    async fn list_events(
        &self,
        owner: &UserId,
        after: Option<PageCursor>,
        limit: usize,
    ) -> Result<Vec<Event>, RepoError> {
        let owner = owner.as_str().to_owned();
        self.with_connection(move |conn| {
            let mut query = events::table.filter(events::owner.eq(owner)).into_boxed();
            if let Some(cursor) = after {
                let created_at = db_time(cursor.created_at);
                query = query.filter(events::created_at.le(created_at)).filter(
                    events::created_at
                        .lt(created_at)
                        .or(events::id.lt(SqlUuid(cursor.id))),
                );
            }
            let rows: Vec<EventRow> = query
                .order((events::created_at.desc(), events::id.desc()))
                .limit(db_limit(limit))
                .select(EventRow::as_select())
                .load(conn)
                .map_err(db_error)?;
            rows.into_iter().map(EventRow::into_event).collect()
        })
        .await
    }

    async fn delete_event(&self, id: EventId) -> Result<(), RepoError> {
        self.with_connection(move |conn| {
            let deleted = diesel::delete(events::table.find(SqlUuid(id.as_uuid())))
                .execute(conn)
                .map_err(|error| {
                    if is_fk_violation(&error) {
                        RepoError::HasChildren {
                            entity: "event",
                            id: id.to_string(),
                            children: "media",
                        }
                    } else {
                        db_error(error)
                    }
                })?;
            if deleted == 0 {
                return Err(RepoError::NotFound {
                    entity: "event",
                    id: id.to_string(),
                });
            }
            Ok(())
        })
        .await
    }
}

#[async_trait]
impl MediaRepository for Database {
    async fn insert_media(&self, media: &EventMedia) -> Result<(), RepoError> {
        let row = MediaRow::from_media(media)?;
        let tags = media.tags.clone();
        self.with_connection(move |conn| {
            conn.transaction::<_, TxError, _>(|conn| {
                diesel::insert_into(event_media::table)
                    .values(&row)
                    .execute(conn)
                    .map_err(|error| {
                        TxError::Repo(if is_fk_violation(&error) {
                            RepoError::MissingParent {
                                entity: "media",
                                parent: "event",
                            }
                        } else {
                            db_error(error)
                        })
                    })?;
                // One statement per tag: the multi-backend connection has no batch insert.
                for (position, tag) in tags.iter().enumerate() {
                    let position = i32::try_from(position).map_err(|_| {
                        TxError::Repo(RepoError::Other {
                            source: "too many tags".into(),
                        })
                    })?;
                    diesel::insert_into(event_media_tags::table)
                        .values(&TagRow {
                            media_id: row.id,
                            tag,
                            position,
                        })
                        .execute(conn)?;
                }
                Ok(())
            })
            .map_err(RepoError::from)
        })
        .await
    }

    async fn mark_ready(
        &self,
        id: MediaId,
        size_bytes: u64,
        sha256: &str,
    ) -> Result<EventMedia, RepoError> {
        let size = db_size(size_bytes)?;
        let sha256 = sha256.to_owned();
        self.with_connection(move |conn| {
            conn.transaction::<_, TxError, _>(|conn| {
                // The write comes first: the `status = 'pending'` guard makes two racing calls
                // serialise on the row (one updates, the other matches nothing), and on SQLite a
                // transaction that starts by writing takes the write lock at once instead of
                // failing to upgrade a read snapshot.
                let key = SqlUuid(id.as_uuid());
                let updated = diesel::update(
                    event_media::table
                        .filter(event_media::id.eq(key))
                        .filter(event_media::status.eq(MediaStatus::Pending.as_str())),
                )
                .set((
                    event_media::status.eq(MediaStatus::Ready.as_str()),
                    event_media::size_bytes.eq(size),
                    event_media::sha256.eq(Some(sha256)),
                    event_media::updated_at.eq(db_now()),
                ))
                .execute(conn)?;
                if updated == 0 {
                    let refused = transition_refused(conn, id, MediaStatus::Pending.as_str())
                        .map_err(TxError::Repo)?;
                    return Err(TxError::Repo(refused));
                }
                load_media(conn, key)
                    .map_err(TxError::Repo)?
                    .ok_or_else(|| TxError::Repo(media_not_found(id)))
            })
            .map_err(RepoError::from)
        })
        .await
    }

    async fn mark_deleting(&self, id: MediaId) -> Result<EventMedia, RepoError> {
        self.with_connection(move |conn| {
            conn.transaction::<_, TxError, _>(|conn| {
                let key = SqlUuid(id.as_uuid());
                // `updated_at` only moves on a real transition, so a delete that keeps being
                // retried still ages and the reconciler picks it up.
                diesel::update(
                    event_media::table
                        .filter(event_media::id.eq(key))
                        .filter(event_media::status.ne(MediaStatus::Deleting.as_str())),
                )
                .set((
                    event_media::status.eq(MediaStatus::Deleting.as_str()),
                    event_media::updated_at.eq(db_now()),
                ))
                .execute(conn)?;
                let media = load_media(conn, key)
                    .map_err(TxError::Repo)?
                    .ok_or_else(|| TxError::Repo(media_not_found(id)))?;
                Ok(media)
            })
            .map_err(RepoError::from)
        })
        .await
    }

    async fn mark_deleting_if_stale(
        &self,
        id: MediaId,
        expected: MediaStatus,
        updated_before: DateTime<Utc>,
    ) -> Result<Option<EventMedia>, RepoError> {
        self.with_connection(move |conn| {
            conn.transaction::<_, TxError, _>(|conn| {
                let key = SqlUuid(id.as_uuid());
                // One guarded UPDATE: the check and the change cannot be split by a racing
                // `mark_ready`, which itself only moves a row that is still `pending`.
                let updated = diesel::update(
                    event_media::table
                        .filter(event_media::id.eq(key))
                        .filter(event_media::status.eq(expected.as_str()))
                        .filter(event_media::updated_at.lt(db_time(updated_before))),
                )
                .set((
                    event_media::status.eq(MediaStatus::Deleting.as_str()),
                    event_media::updated_at.eq(db_now()),
                ))
                .execute(conn)?;
                if updated == 0 {
                    return Ok(None);
                }
                load_media(conn, key).map_err(TxError::Repo)
            })
            .map_err(RepoError::from)
        })
        .await
    }

    async fn delete_media(&self, id: MediaId) -> Result<(), RepoError> {
        self.with_connection(move |conn| {
            // Tags go with the row (ON DELETE CASCADE).
            diesel::delete(event_media::table.find(SqlUuid(id.as_uuid())))
                .execute(conn)
                .map_err(db_error)?;
            Ok(())
        })
        .await
    }

    async fn find_media(&self, id: MediaId) -> Result<Option<EventMedia>, RepoError> {
        self.with_connection(move |conn| load_media(conn, SqlUuid(id.as_uuid())))
            .await
    }

    async fn find_by_key(&self, s3_key: &str) -> Result<Option<EventMedia>, RepoError> {
        let s3_key = s3_key.to_owned();
        self.with_connection(move |conn| {
            let row: Option<MediaRow> = event_media::table
                .filter(event_media::s3_key.eq(s3_key))
                .select(MediaRow::as_select())
                .first(conn)
                .optional()
                .map_err(db_error)?;
            Ok(with_tags(conn, row.into_iter().collect())?.pop())
        })
        .await
    }

    async fn list_ready(
        &self,
        event_id: EventId,
        after: Option<PageCursor>,
        limit: usize,
    ) -> Result<Vec<EventMedia>, RepoError> {
        self.with_connection(move |conn| {
            let event = SqlUuid(event_id.as_uuid());
            let limit = db_limit(limit);
            let rows: Vec<MediaRow> = match after {
                None => ready_first_page(event, limit).load(conn),
                Some(cursor) => {
                    ready_page_after(event, db_time(cursor.created_at), SqlUuid(cursor.id), limit)
                        .load(conn)
                }
            }
            .map_err(db_error)?;
            with_tags(conn, rows)
        })
        .await
    }

    async fn list_all_for_event(&self, event_id: EventId) -> Result<Vec<EventMedia>, RepoError> {
        self.with_connection(move |conn| {
            let rows: Vec<MediaRow> = event_media::table
                .filter(event_media::event_id.eq(SqlUuid(event_id.as_uuid())))
                .select(MediaRow::as_select())
                .load(conn)
                .map_err(db_error)?;
            with_tags(conn, rows)
        })
        .await
    }

    async fn list_stale(
        &self,
        status: MediaStatus,
        before: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<EventMedia>, RepoError> {
        self.with_connection(move |conn| {
            let rows: Vec<MediaRow> = event_media::table
                .filter(event_media::status.eq(status.as_str()))
                .filter(event_media::updated_at.lt(db_time(before)))
                .order((event_media::updated_at.asc(), event_media::id.asc()))
                .limit(db_limit(limit))
                .select(MediaRow::as_select())
                .load(conn)
                .map_err(db_error)?;
            with_tags(conn, rows)
        })
        .await
    }
}

#[async_trait]
impl HealthCheck for Database {
    async fn ping(&self) -> Result<(), RepoError> {
        self.with_connection(|conn| {
            diesel::sql_query("SELECT 1")
                .execute(conn)
                .map_err(db_error)?;
            Ok(())
        })
        .await
    }
}
