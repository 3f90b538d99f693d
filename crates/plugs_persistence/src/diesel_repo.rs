//! The repository traits over Diesel, for both backends through one [`AnyConnection`].

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::dsl::sql;
use diesel::expression::SqlLiteral;
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::sql_types::Bool;
use plugs_domain::{
    AllowedType, DirectUploadKind, Event, EventId, EventMedia, MediaId, MediaStatus, PageCursor,
    Quota, UploadSession, Usage, UserId,
};
use uuid::Uuid;

use crate::connection::{AnyConnection, DbUuid, MultiBackend, SqlUuid};
use crate::database::Database;
use crate::repository::check_quota;
use crate::schema::{event_media, event_media_tags, events, upload_sessions};
use crate::{
    EventRepository, FieldsUpdate, HealthCheck, MediaFilter, MediaRepository, ReadyUpdate,
    RepoError, truncate_to_micros,
};

#[derive(Debug, Queryable, Selectable, Insertable)]
#[diesel(table_name = events)]
struct EventRow {
    id: SqlUuid,
    owner: String,
    title: String,
    created_at: NaiveDateTime,
    updated_at: NaiveDateTime,
}

impl EventRow {
    fn from_event(event: &Event) -> Self {
        Self {
            id: SqlUuid(event.id.as_uuid()),
            owner: event.owner.as_str().to_owned(),
            title: event.title.clone(),
            created_at: db_time(event.created_at),
            updated_at: db_time(event.updated_at),
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
            updated_at: self.updated_at.and_utc(),
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
    /// Derived from `content_type` on insert, for the listing filtered by kind; never read back.
    kind: Option<String>,
    lease_until: Option<NaiveDateTime>,
    /// The bytes the record counts against its quotas.
    reserved_bytes: i64,
    /// Whether the GPS position of the stored original was blanked.
    location_stripped: bool,
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
            kind: AllowedType::from_mime(&media.content_type)
                .map(|allowed| allowed.kind().as_str().to_owned()),
            lease_until: media.lease_until.map(db_time),
            reserved_bytes: db_size(media.size_bytes)?,
            location_stripped: media.location_stripped,
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
            lease_until: self.lease_until.map(|at| at.and_utc()),
            location_stripped: self.location_stripped,
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
pub(crate) fn db_error(error: DieselError) -> RepoError {
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

/// A page of an event's ready media that pass `filter`, newest first, strictly after `after`
/// (`created_at`, `id`); the caller adds the limit. Selects the table's default column list,
/// which is the field order of [`MediaRow`].
///
/// The cursor is written as `created_at <= c AND (created_at < c OR id < i)` (not as an `OR`
/// alone) so the `<=` bound is an index condition and a deep page starts where the cursor points
/// instead of filtering every newer row. A kind is an index column
/// (`event_media_ready_kind_idx`); a tag is an `EXISTS` on the tags' primary key, so a common
/// tag is read in listing order and a rare one can be found from `event_media_tags_tag_media_idx`.
/// The EXPLAIN tests run this very builder and read back the SQL PostgreSQL received.
pub(crate) fn ready_page<'a>(
    event: SqlUuid,
    filter: &MediaFilter,
    after: Option<(NaiveDateTime, SqlUuid)>,
) -> event_media::BoxedQuery<'a, MultiBackend> {
    let mut query = event_media::table
        .into_boxed()
        .filter(event_media::event_id.eq(event))
        .filter(ready_only());
    if let Some(kind) = filter.kind {
        query = query.filter(event_media::kind.eq(kind.as_str().to_owned()));
    }
    if let Some((created_at, id)) = after {
        query = query.filter(event_media::created_at.le(created_at)).filter(
            event_media::created_at
                .lt(created_at)
                .or(event_media::id.lt(id)),
        );
    }
    if let Some(tag) = &filter.tag {
        query = query.filter(diesel::dsl::exists(
            event_media_tags::table
                .filter(event_media_tags::media_id.eq(event_media::id))
                .filter(event_media_tags::tag.eq(tag.clone())),
        ));
    }
    query.order((event_media::created_at.desc(), event_media::id.desc()))
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

/// A record is stale when its lease lapsed before `now`, or, without a lease, when it was last
/// updated before `before` (the grace period's start). A live lease protects a record however
/// old it is.
#[diesel::dsl::auto_type]
fn stale(before: NaiveDateTime, now: NaiveDateTime) -> _ {
    event_media::lease_until
        .is_null()
        .and(event_media::updated_at.lt(before))
        .or(event_media::lease_until.lt(now))
}

/// An event's and an owner's usage (inside the caller's transaction, if any).
fn usage_of(
    conn: &mut AnyConnection,
    event: SqlUuid,
    owner: &str,
) -> Result<(Usage, Usage), TxError> {
    use diesel::sql_types::BigInt;
    let usage = |(bytes, media): (i64, i64)| Usage {
        bytes: u64::try_from(bytes).unwrap_or_default(),
        media: u64::try_from(media).unwrap_or_default(),
    };
    let of_event: (i64, i64) = event_media::table
        .filter(event_media::event_id.eq(event))
        .select((
            sql::<BigInt>("CAST(COALESCE(SUM(event_media.reserved_bytes), 0) AS BIGINT)"),
            sql::<BigInt>("COUNT(*)"),
        ))
        .first(conn)?;
    let of_owner: (i64, i64) = event_media::table
        .inner_join(events::table)
        .filter(events::owner.eq(owner))
        .select((
            sql::<BigInt>("CAST(COALESCE(SUM(event_media.reserved_bytes), 0) AS BIGINT)"),
            sql::<BigInt>("COUNT(*)"),
        ))
        .first(conn)?;
    Ok((usage(of_event), usage(of_owner)))
}

/// Inserts a media row and its tags (inside the caller's transaction).
fn insert_media_row(
    conn: &mut AnyConnection,
    row: &MediaRow,
    tags: &[String],
) -> Result<(), TxError> {
    insert_row(conn, row, None)?;
    insert_tags(conn, row.id, tags)
}

fn missing_event() -> RepoError {
    RepoError::MissingParent {
        entity: "media",
        parent: "event",
    }
}

/// Inserts a media row: a plain `INSERT`, or with `owner` an `INSERT ... SELECT` from the
/// event's row that matches only while the event exists and is `owner`'s, so the upload's
/// ownership check costs no statement of its own. Someone else's event and a missing one are
/// both [`RepoError::MissingParent`]; the foreign key still refuses an event deleted meanwhile.
fn insert_row(
    conn: &mut AnyConnection,
    row: &MediaRow,
    owner: Option<&str>,
) -> Result<(), TxError> {
    use diesel::sql_types::{BigInt, Nullable, Text, Timestamp};
    let inserted = match owner {
        None => diesel::insert_into(event_media::table)
            .values(row)
            .execute(conn),
        Some(owner) => {
            let values = events::table
                .filter(events::id.eq(row.event_id))
                .filter(events::owner.eq(owner))
                .select((
                    row.id.into_sql::<DbUuid>(),
                    row.event_id.into_sql::<DbUuid>(),
                    row.title.clone().into_sql::<Nullable<Text>>(),
                    row.description.clone().into_sql::<Nullable<Text>>(),
                    row.original_filename.clone().into_sql::<Nullable<Text>>(),
                    row.content_type.clone().into_sql::<Text>(),
                    row.size_bytes.into_sql::<BigInt>(),
                    row.sha256.clone().into_sql::<Nullable<Text>>(),
                    row.s3_key.clone().into_sql::<Text>(),
                    row.status.clone().into_sql::<Text>(),
                    row.uploaded_by.clone().into_sql::<Text>(),
                    row.created_at.into_sql::<Timestamp>(),
                    row.updated_at.into_sql::<Timestamp>(),
                    row.kind.clone().into_sql::<Nullable<Text>>(),
                    row.lease_until.into_sql::<Nullable<Timestamp>>(),
                    row.reserved_bytes.into_sql::<BigInt>(),
                    row.location_stripped.into_sql::<Bool>(),
                ));
            diesel::insert_into(event_media::table)
                .values(values)
                .into_columns((
                    event_media::id,
                    event_media::event_id,
                    event_media::title,
                    event_media::description,
                    event_media::original_filename,
                    event_media::content_type,
                    event_media::size_bytes,
                    event_media::sha256,
                    event_media::s3_key,
                    event_media::status,
                    event_media::uploaded_by,
                    event_media::created_at,
                    event_media::updated_at,
                    event_media::kind,
                    event_media::lease_until,
                    event_media::reserved_bytes,
                    event_media::location_stripped,
                ))
                .execute(conn)
        }
    };
    match inserted {
        Ok(0) => Err(TxError::Repo(missing_event())),
        Ok(_) => Ok(()),
        Err(error) if is_fk_violation(&error) => Err(TxError::Repo(missing_event())),
        Err(error) => Err(TxError::Repo(db_error(error))),
    }
}

#[derive(Debug, Queryable, Selectable, Insertable)]
#[diesel(table_name = upload_sessions)]
struct SessionRow {
    media_id: SqlUuid,
    kind: String,
    staging_key: String,
    multipart_id: Option<String>,
    declared_size: i64,
    declared_sha256: Option<String>,
    part_size: Option<i64>,
    expires_at: NaiveDateTime,
}

impl SessionRow {
    fn from_session(session: &UploadSession) -> Result<Self, RepoError> {
        Ok(Self {
            media_id: SqlUuid(session.media_id.as_uuid()),
            kind: session.kind.as_str().to_owned(),
            staging_key: session.staging_key.clone(),
            multipart_id: session.multipart_id.clone(),
            declared_size: db_size(session.declared_size)?,
            declared_sha256: session.declared_sha256.clone(),
            part_size: session.part_size.map(db_size).transpose()?,
            expires_at: db_time(session.expires_at),
        })
    }

    fn into_session(self) -> Result<UploadSession, RepoError> {
        let corrupt = |detail: String| RepoError::Corrupt {
            table: "upload_sessions",
            detail,
        };
        let size = |value: i64| {
            u64::try_from(value).map_err(|_| corrupt(format!("negative size {value}")))
        };
        Ok(UploadSession {
            media_id: MediaId::from_uuid(self.media_id.0),
            kind: DirectUploadKind::parse(&self.kind)
                .ok_or_else(|| corrupt(format!("unknown kind {:?}", self.kind)))?,
            staging_key: self.staging_key,
            multipart_id: self.multipart_id,
            declared_size: size(self.declared_size)?,
            declared_sha256: self.declared_sha256,
            part_size: self.part_size.map(size).transpose()?,
            expires_at: self.expires_at.and_utc(),
        })
    }
}

/// Writes a media's tags in their order. One statement per tag: the multi-backend connection has
/// no batch insert.
fn insert_tags(
    conn: &mut AnyConnection,
    media_id: SqlUuid,
    tags: &[String],
) -> Result<(), TxError> {
    for (position, tag) in tags.iter().enumerate() {
        let position = i32::try_from(position).map_err(|_| {
            TxError::Repo(RepoError::Other {
                source: "too many tags".into(),
            })
        })?;
        diesel::insert_into(event_media_tags::table)
            .values(&TagRow {
                media_id,
                tag,
                position,
            })
            .execute(conn)?;
    }
    Ok(())
}

/// Replaces a media's tags with `tags` (inside the caller's transaction).
fn replace_tags(
    conn: &mut AnyConnection,
    media_id: SqlUuid,
    tags: &[String],
) -> Result<(), TxError> {
    diesel::delete(event_media_tags::table.filter(event_media_tags::media_id.eq(media_id)))
        .execute(conn)?;
    insert_tags(conn, media_id, tags)
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

    async fn update_event_title(
        &self,
        id: EventId,
        title: &str,
        expected: DateTime<Utc>,
        at: DateTime<Utc>,
    ) -> Result<Option<Event>, RepoError> {
        let title = title.to_owned();
        self.with_connection(move |conn| {
            conn.transaction::<_, TxError, _>(|conn| {
                let key = SqlUuid(id.as_uuid());
                // One guarded UPDATE: of two editors who read the same version, the second
                // matches no row.
                let updated = diesel::update(
                    events::table
                        .filter(events::id.eq(key))
                        .filter(events::updated_at.eq(db_time(expected))),
                )
                .set((events::title.eq(title), events::updated_at.eq(db_time(at))))
                .execute(conn)?;
                if updated == 0 {
                    return Ok(None);
                }
                let row: EventRow = events::table
                    .find(key)
                    .select(EventRow::as_select())
                    .first(conn)?;
                row.into_event().map(Some).map_err(TxError::Repo)
            })
            .map_err(RepoError::from)
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
            conn.transaction::<_, TxError, _>(|conn| insert_media_row(conn, &row, &tags))
                .map_err(RepoError::from)
        })
        .await
    }

    async fn insert_pending(
        &self,
        media: &EventMedia,
        owner: Option<&UserId>,
        session: Option<&UploadSession>,
        reserved: u64,
        quota: &Quota,
    ) -> Result<(), RepoError> {
        let mut row = MediaRow::from_media(media)?;
        row.reserved_bytes = db_size(reserved)?;
        let tags = media.tags.clone();
        let session = session.map(SessionRow::from_session).transpose()?;
        let quota = *quota;
        let event_owner = owner.map(|owner| owner.as_str().to_owned());
        let owner = media.uploaded_by.as_str().to_owned();
        self.with_connection(move |conn| {
            if tags.is_empty() && session.is_none() && !quota.is_set() {
                // One statement is atomic by itself: no BEGIN and COMMIT round trips.
                return insert_row(conn, &row, event_owner.as_deref()).map_err(RepoError::from);
            }
            conn.transaction::<_, TxError, _>(|conn| {
                if quota.is_set()
                    && let AnyConnection::Postgresql(pg) = conn
                {
                    // One owner's uploads check and insert one at a time (read committed would
                    // let two see the same usage). SQLite has one writer, and the insert below
                    // takes the write lock before the usage is read.
                    diesel::sql_query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
                        .bind::<diesel::sql_types::Text, _>(&owner)
                        .execute(pg)?;
                }
                insert_row(conn, &row, event_owner.as_deref())?;
                insert_tags(conn, row.id, &tags)?;
                if let Some(session) = &session {
                    diesel::insert_into(upload_sessions::table)
                        .values(session)
                        .execute(conn)?;
                }
                if quota.is_set() {
                    let (event, owner) = usage_of(conn, row.event_id, &owner)?;
                    check_quota(&quota, event, owner).map_err(TxError::Repo)?;
                }
                Ok(())
            })
            .map_err(RepoError::from)
        })
        .await
    }

    async fn usage(&self, event_id: EventId, owner: &UserId) -> Result<(Usage, Usage), RepoError> {
        let owner = owner.as_str().to_owned();
        self.with_connection(move |conn| {
            usage_of(conn, SqlUuid(event_id.as_uuid()), &owner).map_err(RepoError::from)
        })
        .await
    }

    async fn find_upload_session(
        &self,
        media_id: MediaId,
    ) -> Result<Option<UploadSession>, RepoError> {
        self.with_connection(move |conn| {
            upload_sessions::table
                .find(SqlUuid(media_id.as_uuid()))
                .select(SessionRow::as_select())
                .first(conn)
                .optional()
                .map_err(db_error)?
                .map(SessionRow::into_session)
                .transpose()
        })
        .await
    }

    async fn mark_ready(&self, id: MediaId, update: ReadyUpdate) -> Result<EventMedia, RepoError> {
        let size = db_size(update.size_bytes)?;
        let processable = self.processable.clone();
        self.with_connection(move |conn| {
            conn.transaction::<_, TxError, _>(|conn| {
                // The write comes first: the `status = 'pending'` guard makes two racing calls
                // serialise on the row (one updates, the other matches nothing), and on SQLite a
                // transaction that starts by writing takes the write lock at once instead of
                // failing to upgrade a read snapshot.
                let key = SqlUuid(id.as_uuid());
                let ReadyUpdate {
                    sha256,
                    fields,
                    at,
                    location_stripped,
                    ..
                } = update;
                // Whether the pending record holds tags: only a form that sent them before its
                // file wrote any, so most uploads skip the tags' delete.
                let had_tags = diesel::dsl::exists(
                    event_media_tags::table.filter(event_media_tags::media_id.eq(event_media::id)),
                );
                // One statement moves the row and answers it (RETURNING): no reload.
                let updated: Option<(MediaRow, bool)> = diesel::update(
                    event_media::table
                        .filter(event_media::id.eq(key))
                        .filter(event_media::status.eq(MediaStatus::Pending.as_str())),
                )
                .set((
                    event_media::status.eq(MediaStatus::Ready.as_str()),
                    event_media::size_bytes.eq(size),
                    event_media::reserved_bytes.eq(size),
                    event_media::sha256.eq(Some(sha256)),
                    event_media::title.eq(fields.title),
                    event_media::description.eq(fields.description),
                    event_media::updated_at.eq(db_time(at)),
                    event_media::lease_until.eq(None::<NaiveDateTime>),
                    event_media::location_stripped.eq(location_stripped),
                ))
                // The table's default columns are `MediaRow`'s fields, in order.
                .returning((event_media::all_columns, had_tags))
                .get_result(conn)
                .optional()?;
                let Some((row, had_tags)) = updated else {
                    let refused = transition_refused(conn, id, MediaStatus::Pending.as_str())
                        .map_err(TxError::Repo)?;
                    return Err(TxError::Repo(refused));
                };
                if had_tags {
                    replace_tags(conn, key, &fields.tags)?;
                } else {
                    insert_tags(conn, key, &fields.tags)?;
                }
                let ready = row.into_media(fields.tags).map_err(TxError::Repo)?;
                // Its processing job commits with it: a media answered `ready` always has one.
                crate::jobs::enqueue_on_ready(conn, &processable, key, &ready.content_type, at)?;
                Ok(ready)
            })
            .map_err(RepoError::from)
        })
        .await
    }

    async fn mark_deleting(&self, id: MediaId, at: DateTime<Utc>) -> Result<EventMedia, RepoError> {
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
                    event_media::updated_at.eq(db_time(at)),
                    event_media::lease_until.eq(None::<NaiveDateTime>),
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
        at: DateTime<Utc>,
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
                        .filter(stale(db_time(updated_before), db_time(at))),
                )
                .set((
                    event_media::status.eq(MediaStatus::Deleting.as_str()),
                    event_media::updated_at.eq(db_time(at)),
                    event_media::lease_until.eq(None::<NaiveDateTime>),
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

    async fn abandon_pending(
        &self,
        id: MediaId,
        at: DateTime<Utc>,
    ) -> Result<Option<EventMedia>, RepoError> {
        self.with_connection(move |conn| {
            conn.transaction::<_, TxError, _>(|conn| {
                let key = SqlUuid(id.as_uuid());
                let updated = diesel::update(
                    event_media::table
                        .filter(event_media::id.eq(key))
                        .filter(event_media::status.eq(MediaStatus::Pending.as_str())),
                )
                .set((
                    event_media::status.eq(MediaStatus::Deleting.as_str()),
                    event_media::updated_at.eq(db_time(at)),
                    event_media::lease_until.eq(None::<NaiveDateTime>),
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

    async fn renew_lease(&self, id: MediaId, until: DateTime<Utc>) -> Result<bool, RepoError> {
        self.with_connection(move |conn| {
            let renewed = diesel::update(
                event_media::table
                    .filter(event_media::id.eq(SqlUuid(id.as_uuid())))
                    .filter(event_media::status.eq(MediaStatus::Pending.as_str())),
            )
            .set(event_media::lease_until.eq(Some(db_time(until))))
            .execute(conn)
            .map_err(db_error)?;
            Ok(renewed == 1)
        })
        .await
    }

    async fn update_fields(
        &self,
        id: MediaId,
        update: FieldsUpdate,
    ) -> Result<Option<EventMedia>, RepoError> {
        self.with_connection(move |conn| {
            conn.transaction::<_, TxError, _>(|conn| {
                let key = SqlUuid(id.as_uuid());
                let FieldsUpdate {
                    fields,
                    expected,
                    at,
                } = update;
                // The check and the change are one guarded UPDATE, and it comes first: of two
                // editors who read the same version, the second matches no row (and on SQLite
                // the transaction holds the write lock from its first statement).
                let updated = diesel::update(
                    event_media::table
                        .filter(event_media::id.eq(key))
                        .filter(event_media::status.eq(MediaStatus::Ready.as_str()))
                        .filter(event_media::updated_at.eq(db_time(expected))),
                )
                .set((
                    event_media::title.eq(fields.title),
                    event_media::description.eq(fields.description),
                    event_media::updated_at.eq(db_time(at)),
                ))
                .execute(conn)?;
                if updated == 0 {
                    return Ok(None);
                }
                replace_tags(conn, key, &fields.tags)?;
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
        filter: &MediaFilter,
        after: Option<PageCursor>,
        limit: usize,
    ) -> Result<Vec<EventMedia>, RepoError> {
        let filter = filter.clone();
        self.with_connection(move |conn| {
            let after = after.map(|cursor| (db_time(cursor.created_at), SqlUuid(cursor.id)));
            let rows: Vec<MediaRow> = ready_page(SqlUuid(event_id.as_uuid()), &filter, after)
                .limit(db_limit(limit))
                .load(conn)
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

    async fn list_ready_by_id(
        &self,
        after: Option<MediaId>,
        limit: usize,
    ) -> Result<Vec<EventMedia>, RepoError> {
        self.with_connection(move |conn| {
            // The primary key's order: PostgreSQL compares uuids bytewise, SQLite their
            // lower-case hyphenated text, which sorts the same.
            let mut query = event_media::table
                .into_boxed::<MultiBackend>()
                .filter(ready_only());
            if let Some(after) = after {
                query = query.filter(event_media::id.gt(SqlUuid(after.as_uuid())));
            }
            let rows: Vec<MediaRow> = query
                .order(event_media::id.asc())
                .limit(db_limit(limit))
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
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<EventMedia>, RepoError> {
        self.with_connection(move |conn| {
            let rows: Vec<MediaRow> = event_media::table
                .filter(event_media::status.eq(status.as_str()))
                .filter(stale(db_time(before), db_time(now)))
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
