//! The media-processing work queue and the derived versions it makes (thumbnails, display
//! copies), kept in the database so that any number of workers, in any number of processes,
//! share the work and a crashed worker's job is done again.
//!
//! A job is enqueued in the transaction that marks its media `ready` (see
//! [`MediaRepository::mark_ready`](crate::MediaRepository::mark_ready)), so an upload whose
//! answer said "ready" always has its job. Workers claim the oldest runnable job and hold it by a
//! lease: PostgreSQL picks it with `FOR UPDATE SKIP LOCKED` (claimers never wait on each other
//! nor get the same job); SQLite claims in a `BEGIN IMMEDIATE` transaction (one writer at a
//! time) with `UPDATE ... RETURNING`. A job whose lease lapsed (its worker died or hangs) is
//! claimed again; every claim counts an attempt, and a job is parked with its error after its
//! last allowed attempt. Every write of a worker names the attempt it holds, so a worker whose
//! job was taken over can no longer finish or fail it.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Integer, Timestamp};
use plugs_domain::{
    DerivedVersion, EventId, MediaId, MediaProcessing, MediaStatus, ProcessableTypes,
    ProcessingState,
};
use uuid::Uuid;

use crate::connection::{AnyConnection, SqlUuid};
use crate::diesel_repo::db_error;
use crate::{Database, RepoError, truncate_to_micros};

diesel::table! {
    use diesel::sql_types::*;
    use crate::connection::DbUuid;

    /// The work queue.
    processing_jobs (id) {
        id -> DbUuid,
        media_id -> DbUuid,
        variants -> Nullable<Text>,
        state -> Text,
        attempts -> Integer,
        lease_until -> Nullable<Timestamp>,
        last_error -> Nullable<Text>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::connection::DbUuid;

    /// The derived versions stored, one per media and variant.
    derived_versions (media_id, variant) {
        media_id -> DbUuid,
        variant -> Text,
        s3_key -> Text,
        width -> Integer,
        height -> Integer,
        size_bytes -> BigInt,
        content_type -> Text,
        created_at -> Timestamp,
    }
}

/// The processing columns of `event_media`, declared apart from [`crate::schema`]'s full table:
/// the media record's row type (and every query selecting the table's default columns) stays as
/// it is, and only this module reads or writes them.
pub(crate) mod media_columns {
    diesel::table! {
        use diesel::sql_types::*;
        use crate::connection::DbUuid;

        /// `event_media`, the columns processing uses.
        event_media (id) {
            id -> DbUuid,
            event_id -> DbUuid,
            content_type -> Text,
            status -> Text,
            width -> Nullable<Integer>,
            height -> Nullable<Integer>,
            processing -> Text,
        }
    }
}

use media_columns::event_media;

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum JobState {
    /// Waiting for a worker (first time, or again after a failure).
    Queued,
    /// A worker holds it until its lease lapses.
    Running,
    /// Its derived versions are stored.
    Done,
    /// It failed on its last allowed attempt (or on a file that can never be read); its error
    /// says why. Only `plugs-api reprocess` runs the media again.
    Parked,
}

impl JobState {
    /// The name stored in the database.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Done => "done",
            Self::Parked => "parked",
        }
    }

    /// The state a stored name stands for.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "queued" => Some(Self::Queued),
            "running" => Some(Self::Running),
            "done" => Some(Self::Done),
            "parked" => Some(Self::Parked),
            _ => None,
        }
    }
}

/// One processing job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessingJob {
    /// Identifier.
    pub id: Uuid,
    /// The media whose derived versions it makes.
    pub media_id: MediaId,
    /// The variants to make, by name; `None`: every configured one.
    pub variants: Option<Vec<String>>,
    /// Where it is.
    pub state: JobState,
    /// How many times it was claimed. A worker names the attempt it holds in every later call.
    pub attempts: u32,
    /// While running: until when its worker holds it. While queued after a failure: the
    /// earliest time it may run again.
    pub lease_until: Option<DateTime<Utc>>,
    /// The last failure's message.
    pub last_error: Option<String>,
    /// When it was enqueued; the oldest runnable job is claimed first.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// What a claim asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobClaim {
    /// The present.
    pub now: DateTime<Utc>,
    /// The lease a claimed job gets.
    pub lease_until: DateTime<Utc>,
    /// Most claims a job gets: a job whose lease lapsed on its last attempt is parked instead
    /// of claimed again.
    pub max_attempts: u32,
}

/// What a finished job stores, in one transaction with the job's completion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobOutcome {
    /// The original's width after orientation.
    pub width: u32,
    /// The original's height after orientation.
    pub height: u32,
    /// The versions made; each replaces the stored version of its variant.
    pub versions: Vec<DerivedVersion>,
}

/// The work queue and the derived versions.
#[async_trait]
pub trait JobRepository: std::fmt::Debug + Send + Sync {
    /// Claims the oldest runnable job (queued and due, or running with a lapsed lease) for
    /// `claim.lease_until`, counting an attempt; `None` when there is none. Jobs whose lease
    /// lapsed on their last attempt are parked first (their media's processing `failed`).
    /// Concurrent claimers never get the same job.
    async fn claim_job(&self, claim: JobClaim) -> Result<Option<ProcessingJob>, RepoError>;

    /// Extends a running job's lease, but only while `attempt` still holds it; `false` when the
    /// job was taken over (its lease lapsed and it was claimed again), finished or deleted.
    async fn renew_job(
        &self,
        id: Uuid,
        attempt: u32,
        until: DateTime<Utc>,
    ) -> Result<bool, RepoError>;

    /// Marks a job done, stores its derived versions (replacing those of the same variants),
    /// the original's dimensions and processing `ready`, in one transaction, but only while
    /// `attempt` still holds the job; `false` (and nothing written) otherwise.
    async fn complete_job(
        &self,
        id: Uuid,
        attempt: u32,
        outcome: &JobOutcome,
        at: DateTime<Utc>,
    ) -> Result<bool, RepoError>;

    /// Records a failure of `attempt`: the job is queued again, due at `retry_at`, or parked
    /// when `retry_at` is `None` (its media's processing `failed`). Returns the new state;
    /// `None` (and nothing written) when `attempt` no longer holds the job.
    async fn fail_job(
        &self,
        id: Uuid,
        attempt: u32,
        error: &str,
        retry_at: Option<DateTime<Utc>>,
        at: DateTime<Utc>,
    ) -> Result<Option<JobState>, RepoError>;

    /// Enqueues a job for a `ready` media of a processable type (its processing `pending`),
    /// unless one is already queued for it; whether one was enqueued.
    async fn enqueue_job(
        &self,
        media_id: MediaId,
        variants: Option<&[String]>,
        at: DateTime<Utc>,
    ) -> Result<bool, RepoError>;

    /// `ready` media of a processable type, of one event or of all, in id order, strictly after
    /// `after`, at most `limit` (what `plugs-api reprocess` walks).
    async fn processable_media(
        &self,
        event_id: Option<EventId>,
        after: Option<MediaId>,
        limit: usize,
    ) -> Result<Vec<MediaId>, RepoError>;

    /// A media's jobs, oldest first.
    async fn jobs_of(&self, media_id: MediaId) -> Result<Vec<ProcessingJob>, RepoError>;

    /// What processing knows of each of these media that exists, in no particular order.
    async fn processing_of(&self, ids: &[MediaId]) -> Result<Vec<MediaProcessing>, RepoError>;

    /// The derived version stored under this key, if any (the reconciler's question).
    async fn find_derived_by_key(&self, s3_key: &str) -> Result<Option<DerivedVersion>, RepoError>;
}

// ---------------------------------------------------------------------------------------------
// Rows

#[derive(Debug, Queryable, QueryableByName, Selectable, Insertable)]
#[diesel(table_name = processing_jobs)]
struct JobRow {
    id: SqlUuid,
    media_id: SqlUuid,
    variants: Option<String>,
    state: String,
    attempts: i32,
    lease_until: Option<NaiveDateTime>,
    last_error: Option<String>,
    created_at: NaiveDateTime,
    updated_at: NaiveDateTime,
}

fn corrupt(table: &'static str, detail: String) -> RepoError {
    RepoError::Corrupt { table, detail }
}

impl JobRow {
    fn into_job(self) -> Result<ProcessingJob, RepoError> {
        Ok(ProcessingJob {
            id: self.id.0,
            media_id: MediaId::from_uuid(self.media_id.0),
            variants: self.variants.as_deref().map(decode_variants),
            state: JobState::parse(&self.state).ok_or_else(|| {
                corrupt("processing_jobs", format!("unknown state {:?}", self.state))
            })?,
            attempts: u32::try_from(self.attempts)
                .map_err(|_| corrupt("processing_jobs", format!("attempts {}", self.attempts)))?,
            lease_until: self.lease_until.map(|at| at.and_utc()),
            last_error: self.last_error,
            created_at: self.created_at.and_utc(),
            updated_at: self.updated_at.and_utc(),
        })
    }
}

#[derive(Debug, Queryable, Selectable, Insertable)]
#[diesel(table_name = derived_versions)]
struct DerivedRow {
    media_id: SqlUuid,
    variant: String,
    s3_key: String,
    width: i32,
    height: i32,
    size_bytes: i64,
    content_type: String,
    created_at: NaiveDateTime,
}

impl DerivedRow {
    fn from_version(version: &DerivedVersion, at: NaiveDateTime) -> Result<Self, RepoError> {
        let int = |value: u32| {
            i32::try_from(value).map_err(|_| RepoError::Other {
                source: format!("dimension {value} exceeds INTEGER").into(),
            })
        };
        Ok(Self {
            media_id: SqlUuid(version.media_id.as_uuid()),
            variant: version.variant.clone(),
            s3_key: version.s3_key.clone(),
            width: int(version.width)?,
            height: int(version.height)?,
            size_bytes: i64::try_from(version.size_bytes).map_err(|_| RepoError::Other {
                source: format!("size {} exceeds BIGINT", version.size_bytes).into(),
            })?,
            content_type: version.content_type.clone(),
            created_at: at,
        })
    }

    fn into_version(self) -> Result<DerivedVersion, RepoError> {
        let bad = |what: &str, value: i64| corrupt("derived_versions", format!("{what} {value}"));
        Ok(DerivedVersion {
            media_id: MediaId::from_uuid(self.media_id.0),
            variant: self.variant,
            s3_key: self.s3_key,
            width: u32::try_from(self.width).map_err(|_| bad("width", self.width.into()))?,
            height: u32::try_from(self.height).map_err(|_| bad("height", self.height.into()))?,
            size_bytes: u64::try_from(self.size_bytes)
                .map_err(|_| bad("size_bytes", self.size_bytes))?,
            content_type: self.content_type,
        })
    }
}

/// Variant names, comma-separated: the multi-backend schema has no arrays, and names are
/// `[a-z0-9-]` (the worker's configuration checks them).
fn encode_variants(variants: &[String]) -> String {
    variants.join(",")
}

fn decode_variants(text: &str) -> Vec<String> {
    text.split(',')
        .filter(|name| !name.is_empty())
        .map(str::to_owned)
        .collect()
}

fn db_time(time: DateTime<Utc>) -> NaiveDateTime {
    truncate_to_micros(time).naive_utc()
}

fn db_attempt(attempt: u32) -> i32 {
    i32::try_from(attempt).unwrap_or(i32::MAX)
}

// ---------------------------------------------------------------------------------------------
// Statements shared by the Diesel repository

/// Enqueues a job for a media and marks its processing `pending` (inside the caller's
/// transaction). The caller has checked that the media is `ready` and processable.
fn insert_job(
    conn: &mut AnyConnection,
    media_id: SqlUuid,
    variants: Option<String>,
    at: NaiveDateTime,
) -> QueryResult<()> {
    diesel::insert_into(processing_jobs::table)
        .values(&JobRow {
            id: SqlUuid(Uuid::now_v7()),
            media_id,
            variants,
            state: JobState::Queued.as_str().to_owned(),
            attempts: 0,
            lease_until: None,
            last_error: None,
            created_at: at,
            updated_at: at,
        })
        .execute(conn)?;
    diesel::update(event_media::table.find(media_id))
        .set(event_media::processing.eq(ProcessingState::Pending.as_str()))
        .execute(conn)?;
    Ok(())
}

/// What [`crate::MediaRepository::mark_ready`] adds to its transaction: a processing job for a
/// media of a processable type.
pub(crate) fn enqueue_on_ready(
    conn: &mut AnyConnection,
    processable: &ProcessableTypes,
    media_id: SqlUuid,
    content_type: &str,
    at: DateTime<Utc>,
) -> QueryResult<()> {
    if processable.contains(content_type) {
        insert_job(conn, media_id, None, db_time(at))?;
    }
    Ok(())
}

/// Parks the jobs whose lease lapsed on their last attempt (their worker died each time):
/// `$1` the present, `$2` the most attempts. Numbered parameters: SQLite reads `?N` as the
/// N-th bound value (the text is rewritten for it), so one value serves two places.
const PARK_LAPSED_MEDIA: &str = "UPDATE event_media SET processing = 'failed' WHERE id IN \
     (SELECT media_id FROM processing_jobs WHERE state = 'running' AND lease_until < $1 \
     AND attempts >= $2)";
const PARK_LAPSED_JOBS: &str = "UPDATE processing_jobs SET state = 'parked', \
     last_error = 'its worker stopped (the lease lapsed) on the last allowed attempt', \
     lease_until = NULL, updated_at = $1 \
     WHERE state = 'running' AND lease_until < $1 AND attempts >= $2";
/// Claims the oldest runnable job: `$1` the present, `$2` the most attempts, `$3` the lease.
const CLAIM: &str = "UPDATE processing_jobs \
     SET state = 'running', attempts = attempts + 1, lease_until = $3, updated_at = $1 \
     WHERE id = (SELECT id FROM processing_jobs \
         WHERE state IN ('queued', 'running') \
           AND ((state = 'queued' AND (lease_until IS NULL OR lease_until <= $1)) \
             OR (state = 'running' AND lease_until < $1 AND attempts < $2)) \
         ORDER BY created_at, id LIMIT 1{lock}) \
     RETURNING id, media_id, variants, state, attempts, lease_until, last_error, created_at, \
     updated_at";

fn sqlite_text(sql: &str) -> String {
    sql.replace('$', "?")
}

/// The claim's statements on one concrete connection, inside its transaction.
macro_rules! claim_on {
    ($conn:expr, $park_media:expr, $park_jobs:expr, $claim:expr, $now:expr, $max:expr, $lease:expr) => {{
        diesel::sql_query($park_media)
            .bind::<Timestamp, _>($now)
            .bind::<Integer, _>($max)
            .execute($conn)?;
        diesel::sql_query($park_jobs)
            .bind::<Timestamp, _>($now)
            .bind::<Integer, _>($max)
            .execute($conn)?;
        diesel::sql_query($claim)
            .bind::<Timestamp, _>($now)
            .bind::<Integer, _>($max)
            .bind::<Timestamp, _>($lease)
            .get_result::<JobRow>($conn)
            .optional()
    }};
}

#[async_trait]
impl JobRepository for Database {
    async fn claim_job(&self, claim: JobClaim) -> Result<Option<ProcessingJob>, RepoError> {
        let now = db_time(claim.now);
        let lease = db_time(claim.lease_until);
        let max = db_attempt(claim.max_attempts);
        self.with_connection(move |conn| {
            let row = match conn {
                AnyConnection::Postgresql(pg) => {
                    let claim_sql = CLAIM.replace("{lock}", " FOR UPDATE SKIP LOCKED");
                    pg.transaction(|pg| {
                        claim_on!(
                            pg,
                            PARK_LAPSED_MEDIA,
                            PARK_LAPSED_JOBS,
                            &claim_sql,
                            now,
                            max,
                            lease
                        )
                    })
                }
                AnyConnection::Sqlite(sqlite) => {
                    let park_media = sqlite_text(PARK_LAPSED_MEDIA);
                    let park_jobs = sqlite_text(PARK_LAPSED_JOBS);
                    let claim_sql = sqlite_text(&CLAIM.replace("{lock}", ""));
                    sqlite.immediate_transaction(|sqlite| {
                        claim_on!(sqlite, &park_media, &park_jobs, &claim_sql, now, max, lease)
                    })
                }
            }
            .map_err(db_error)?;
            row.map(JobRow::into_job).transpose()
        })
        .await
    }

    async fn renew_job(
        &self,
        id: Uuid,
        attempt: u32,
        until: DateTime<Utc>,
    ) -> Result<bool, RepoError> {
        self.with_connection(move |conn| {
            let renewed = diesel::update(held(id, attempt))
                .set(processing_jobs::lease_until.eq(Some(db_time(until))))
                .execute(conn)
                .map_err(db_error)?;
            Ok(renewed == 1)
        })
        .await
    }

    async fn complete_job(
        &self,
        id: Uuid,
        attempt: u32,
        outcome: &JobOutcome,
        at: DateTime<Utc>,
    ) -> Result<bool, RepoError> {
        let at = db_time(at);
        let rows = outcome
            .versions
            .iter()
            .map(|version| DerivedRow::from_version(version, at))
            .collect::<Result<Vec<_>, _>>()?;
        let (width, height) = (db_attempt(outcome.width), db_attempt(outcome.height));
        self.with_connection(move |conn| {
            conn.transaction::<_, DieselErrorOr, _>(|conn| {
                let Some(media_id) = lock_media_of_job(conn, id)? else {
                    return Ok(false);
                };
                // The guarded write then takes the job's row lock (the write lock on SQLite),
                // so a takeover cannot slip in between.
                let done = diesel::update(held(id, attempt))
                    .set((
                        processing_jobs::state.eq(JobState::Done.as_str()),
                        processing_jobs::lease_until.eq(None::<NaiveDateTime>),
                        processing_jobs::updated_at.eq(at),
                    ))
                    .execute(conn)?;
                if done == 0 {
                    return Ok(false);
                }
                for row in &rows {
                    if row.media_id != media_id {
                        return Err(DieselErrorOr::Repo(RepoError::Other {
                            source: "a derived version of another media".into(),
                        }));
                    }
                    diesel::delete(
                        derived_versions::table
                            .filter(derived_versions::media_id.eq(media_id))
                            .filter(derived_versions::variant.eq(&row.variant)),
                    )
                    .execute(conn)?;
                    diesel::insert_into(derived_versions::table)
                        .values(row)
                        .execute(conn)?;
                }
                diesel::update(event_media::table.find(media_id))
                    .set((
                        event_media::width.eq(Some(width)),
                        event_media::height.eq(Some(height)),
                        event_media::processing.eq(ProcessingState::Ready.as_str()),
                    ))
                    .execute(conn)?;
                Ok(true)
            })
            .map_err(RepoError::from)
        })
        .await
    }

    async fn fail_job(
        &self,
        id: Uuid,
        attempt: u32,
        error: &str,
        retry_at: Option<DateTime<Utc>>,
        at: DateTime<Utc>,
    ) -> Result<Option<JobState>, RepoError> {
        let error = error.to_owned();
        let at = db_time(at);
        let (state, due) = match retry_at {
            Some(when) => (JobState::Queued, Some(db_time(when))),
            None => (JobState::Parked, None),
        };
        self.with_connection(move |conn| {
            conn.transaction::<_, DieselErrorOr, _>(|conn| {
                let Some(media_id) = lock_media_of_job(conn, id)? else {
                    return Ok(None);
                };
                let updated = diesel::update(held(id, attempt))
                    .set((
                        processing_jobs::state.eq(state.as_str()),
                        processing_jobs::lease_until.eq(due),
                        processing_jobs::last_error.eq(Some(error)),
                        processing_jobs::updated_at.eq(at),
                    ))
                    .execute(conn)?;
                if updated == 0 {
                    return Ok(None);
                }
                if state == JobState::Parked {
                    diesel::update(event_media::table.find(media_id))
                        .set(event_media::processing.eq(ProcessingState::Failed.as_str()))
                        .execute(conn)?;
                }
                Ok(Some(state))
            })
            .map_err(RepoError::from)
        })
        .await
    }

    async fn enqueue_job(
        &self,
        media_id: MediaId,
        variants: Option<&[String]>,
        at: DateTime<Utc>,
    ) -> Result<bool, RepoError> {
        let variants = variants.map(encode_variants);
        let at = db_time(at);
        let mimes = self.processable.mimes();
        self.with_connection(move |conn| {
            conn.transaction::<_, DieselErrorOr, _>(|conn| {
                let key = SqlUuid(media_id.as_uuid());
                // The media row is written first (its processing `pending`), guarded by its
                // state and type: that takes its row lock (SQLite's write lock), so two
                // enqueuers of one media serialise and the second sees the first's job.
                let marked = diesel::update(
                    event_media::table
                        .filter(event_media::id.eq(key))
                        .filter(event_media::status.eq(MediaStatus::Ready.as_str()))
                        .filter(event_media::content_type.eq_any(mimes)),
                )
                .set(event_media::processing.eq(ProcessingState::Pending.as_str()))
                .execute(conn)?;
                if marked == 0 {
                    return Ok(false);
                }
                let queued: i64 = processing_jobs::table
                    .filter(processing_jobs::media_id.eq(key))
                    .filter(processing_jobs::state.eq(JobState::Queued.as_str()))
                    .count()
                    .get_result(conn)?;
                if queued > 0 {
                    return Ok(false);
                }
                insert_job(conn, key, variants, at)?;
                Ok(true)
            })
            .map_err(RepoError::from)
        })
        .await
    }

    async fn processable_media(
        &self,
        event_id: Option<EventId>,
        after: Option<MediaId>,
        limit: usize,
    ) -> Result<Vec<MediaId>, RepoError> {
        let mimes = self.processable.mimes();
        self.with_connection(move |conn| {
            let mut query = event_media::table
                .into_boxed::<crate::connection::MultiBackend>()
                .filter(event_media::status.eq(MediaStatus::Ready.as_str()))
                .filter(event_media::content_type.eq_any(mimes));
            if let Some(event_id) = event_id {
                query = query.filter(event_media::event_id.eq(SqlUuid(event_id.as_uuid())));
            }
            if let Some(after) = after {
                query = query.filter(event_media::id.gt(SqlUuid(after.as_uuid())));
            }
            let ids: Vec<SqlUuid> = query
                .order(event_media::id.asc())
                .limit(i64::try_from(limit).unwrap_or(i64::MAX))
                .select(event_media::id)
                .load(conn)
                .map_err(db_error)?;
            Ok(ids.into_iter().map(|id| MediaId::from_uuid(id.0)).collect())
        })
        .await
    }

    async fn jobs_of(&self, media_id: MediaId) -> Result<Vec<ProcessingJob>, RepoError> {
        self.with_connection(move |conn| {
            let rows: Vec<JobRow> = processing_jobs::table
                .filter(processing_jobs::media_id.eq(SqlUuid(media_id.as_uuid())))
                .order((processing_jobs::created_at, processing_jobs::id))
                .select(JobRow::as_select())
                .load(conn)
                .map_err(db_error)?;
            rows.into_iter().map(JobRow::into_job).collect()
        })
        .await
    }

    async fn processing_of(&self, ids: &[MediaId]) -> Result<Vec<MediaProcessing>, RepoError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<SqlUuid> = ids.iter().map(|id| SqlUuid(id.as_uuid())).collect();
        self.with_connection(move |conn| {
            let media: Vec<(SqlUuid, String, Option<i32>, Option<i32>)> = event_media::table
                .filter(event_media::id.eq_any(&keys))
                .select((
                    event_media::id,
                    event_media::processing,
                    event_media::width,
                    event_media::height,
                ))
                .load(conn)
                .map_err(db_error)?;
            let derived: Vec<DerivedRow> = derived_versions::table
                .filter(derived_versions::media_id.eq_any(&keys))
                .order((derived_versions::media_id, derived_versions::variant))
                .select(DerivedRow::as_select())
                .load(conn)
                .map_err(db_error)?;
            let mut versions: HashMap<Uuid, Vec<DerivedVersion>> = HashMap::new();
            for row in derived {
                let id = row.media_id.0;
                versions.entry(id).or_default().push(row.into_version()?);
            }
            media
                .into_iter()
                .map(|(id, processing, width, height)| {
                    let dimension = |value: Option<i32>| {
                        value
                            .map(|v| {
                                u32::try_from(v)
                                    .map_err(|_| corrupt("event_media", format!("dimension {v}")))
                            })
                            .transpose()
                    };
                    Ok(MediaProcessing {
                        media_id: MediaId::from_uuid(id.0),
                        state: ProcessingState::parse(&processing).ok_or_else(|| {
                            corrupt("event_media", format!("processing {processing:?}"))
                        })?,
                        width: dimension(width)?,
                        height: dimension(height)?,
                        variants: versions.remove(&id.0).unwrap_or_default(),
                    })
                })
                .collect()
        })
        .await
    }

    async fn find_derived_by_key(&self, s3_key: &str) -> Result<Option<DerivedVersion>, RepoError> {
        let s3_key = s3_key.to_owned();
        self.with_connection(move |conn| {
            derived_versions::table
                .filter(derived_versions::s3_key.eq(s3_key))
                .select(DerivedRow::as_select())
                .first(conn)
                .optional()
                .map_err(db_error)?
                .map(DerivedRow::into_version)
                .transpose()
        })
        .await
    }
}

/// The media of job `id` (`None` when the job is gone), its row locked first on PostgreSQL.
///
/// Every transaction that writes a media row and its job rows takes the media's lock before the
/// jobs': `mark_ready` and [`JobRepository::enqueue_job`] write the media first, the claim parks
/// lapsed jobs' media before the jobs, and deleting a media locks it before the cascade reaches
/// its jobs. Completing or failing a job does the same here, so no two of them wait on each
/// other in a circle (PostgreSQL would break such a deadlock by failing one of them). `FOR NO
/// KEY UPDATE` is the lock the later `UPDATE` of the media takes anyway; it leaves inserts of
/// rows that reference the media (`KEY SHARE`) free. SQLite has one writer at a time.
fn lock_media_of_job(conn: &mut AnyConnection, id: Uuid) -> QueryResult<Option<SqlUuid>> {
    let media_id: Option<SqlUuid> = processing_jobs::table
        .find(SqlUuid(id))
        .select(processing_jobs::media_id)
        .first(conn)
        .optional()?;
    if let (Some(media_id), AnyConnection::Postgresql(pg)) = (media_id, &mut *conn) {
        event_media::table
            .find(media_id)
            .select(event_media::id)
            .for_no_key_update()
            .load::<SqlUuid>(pg)?;
    }
    Ok(media_id)
}

/// The job `id` while `attempt` holds it: running, claimed that many times.
#[diesel::dsl::auto_type]
fn held(id: Uuid, attempt: u32) -> _ {
    let key: SqlUuid = SqlUuid(id);
    let attempts: i32 = db_attempt(attempt);
    let running: &'static str = JobState::Running.as_str();
    processing_jobs::table
        .filter(processing_jobs::id.eq(key))
        .filter(processing_jobs::state.eq(running))
        .filter(processing_jobs::attempts.eq(attempts))
}

/// An error inside a transaction: Diesel's, or one this module already classified.
enum DieselErrorOr {
    Diesel(diesel::result::Error),
    Repo(RepoError),
}

impl From<diesel::result::Error> for DieselErrorOr {
    fn from(value: diesel::result::Error) -> Self {
        Self::Diesel(value)
    }
}

impl From<DieselErrorOr> for RepoError {
    fn from(value: DieselErrorOr) -> Self {
        match value {
            DieselErrorOr::Diesel(error) => db_error(error),
            DieselErrorOr::Repo(error) => error,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The in-memory fake's tables (kept inside the fake's one lock, beside the media records, so
// `mark_ready` enqueues in the same step)

/// The fake's queue and derived versions.
#[derive(Debug, Default)]
pub(crate) struct MemoryJobs {
    pub(crate) jobs: BTreeMap<Uuid, ProcessingJob>,
    pub(crate) derived: BTreeMap<(MediaId, String), DerivedVersion>,
    /// Per media: processing state, width, height (absent: `none`, unknown dimensions).
    pub(crate) media: HashMap<MediaId, (ProcessingState, Option<u32>, Option<u32>)>,
    /// The types `mark_ready` enqueues a job for ([`crate::Database::with_processable`]).
    pub(crate) processable: ProcessableTypes,
}

impl MemoryJobs {
    /// [`enqueue_on_ready`] in the fake.
    pub(crate) fn enqueue_on_ready(
        &mut self,
        media_id: MediaId,
        content_type: &str,
        at: DateTime<Utc>,
    ) {
        if self.processable.contains(content_type) {
            self.insert_job(media_id, None, at);
        }
    }

    pub(crate) fn insert_job(
        &mut self,
        media_id: MediaId,
        variants: Option<Vec<String>>,
        at: DateTime<Utc>,
    ) {
        let at = truncate_to_micros(at);
        let id = Uuid::now_v7();
        self.jobs.insert(
            id,
            ProcessingJob {
                id,
                media_id,
                variants,
                state: JobState::Queued,
                attempts: 0,
                lease_until: None,
                last_error: None,
                created_at: at,
                updated_at: at,
            },
        );
        self.media
            .entry(media_id)
            .or_insert((ProcessingState::None, None, None))
            .0 = ProcessingState::Pending;
    }

    /// What deleting a media record takes with it (the tables' CASCADE).
    pub(crate) fn forget_media(&mut self, media_id: MediaId) {
        self.jobs.retain(|_, job| job.media_id != media_id);
        self.derived.retain(|(id, _), _| *id != media_id);
        self.media.remove(&media_id);
    }

    pub(crate) fn set_state(&mut self, media_id: MediaId, state: ProcessingState) {
        self.media
            .entry(media_id)
            .or_insert((ProcessingState::None, None, None))
            .0 = state;
    }

    pub(crate) fn claim(&mut self, claim: JobClaim) -> Option<ProcessingJob> {
        let now = truncate_to_micros(claim.now);
        let lapsed = |job: &ProcessingJob| {
            job.state == JobState::Running && job.lease_until.is_some_and(|until| until < now)
        };
        let parked: Vec<MediaId> = self
            .jobs
            .values_mut()
            .filter(|job| lapsed(job) && job.attempts >= claim.max_attempts)
            .map(|job| {
                job.state = JobState::Parked;
                job.last_error = Some(
                    "its worker stopped (the lease lapsed) on the last allowed attempt".to_owned(),
                );
                job.lease_until = None;
                job.updated_at = now;
                job.media_id
            })
            .collect();
        for media_id in parked {
            self.set_state(media_id, ProcessingState::Failed);
        }
        let job = self
            .jobs
            .values_mut()
            .filter(|job| {
                (job.state == JobState::Queued && job.lease_until.is_none_or(|due| due <= now))
                    || (lapsed(job) && job.attempts < claim.max_attempts)
            })
            .min_by_key(|job| (job.created_at, job.id))?;
        job.state = JobState::Running;
        job.attempts += 1;
        job.lease_until = Some(truncate_to_micros(claim.lease_until));
        job.updated_at = now;
        Some(job.clone())
    }

    pub(crate) fn held(&mut self, id: Uuid, attempt: u32) -> Option<&mut ProcessingJob> {
        self.jobs
            .get_mut(&id)
            .filter(|job| job.state == JobState::Running && job.attempts == attempt)
    }

    pub(crate) fn processing_of(&self, media_id: MediaId) -> MediaProcessing {
        let (state, width, height) =
            self.media
                .get(&media_id)
                .copied()
                .unwrap_or((ProcessingState::None, None, None));
        MediaProcessing {
            media_id,
            state,
            width,
            height,
            variants: self
                .derived
                .range((media_id, String::new())..)
                .take_while(|((id, _), _)| *id == media_id)
                .map(|(_, version)| version.clone())
                .collect(),
        }
    }
}
