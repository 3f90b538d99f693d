//! The legacy table of the design plugs-media replaces: one row per file, its bytes in a `BYTEA`
//! column, in a PostgreSQL database that may be another one than ours. Read for
//! `plugs-api backfill`: rows in pages by their id, each file's bytes in chunks with
//! `substring()` (so no file is ever whole in memory), and a file's bytes cleared once moved.
//!
//! Table and column names come from the operator: each is checked to be a plain identifier
//! (optionally `schema.table`) and quoted; values are bound parameters.

use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, Utc};
use diesel::pg::PgConnection;
use diesel::sql_types::{BigInt, Binary, Integer, Nullable, Text, Timestamptz};
use diesel::{Connection as _, QueryableByName, RunQueryDsl as _};

/// What reading the legacy table can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LegacyError {
    /// A table or column name that is not a plain identifier.
    #[error("{what}: {name:?} is not a plain SQL identifier (letters, digits, _; schema.table)")]
    InvalidName {
        /// Which name.
        what: String,
        /// The name given.
        name: String,
    },
    /// The URL is not a PostgreSQL one (the legacy design stored bytes in PostgreSQL).
    #[error("the legacy database must be PostgreSQL (postgres://...), not {scheme}")]
    UnsupportedUrl {
        /// The URL's scheme.
        scheme: String,
    },
    /// A query failed.
    #[error("legacy table: {what}")]
    Query {
        /// What was being done.
        what: String,
        /// Why it failed.
        #[source]
        source: diesel::result::Error,
    },
    /// Connecting failed.
    #[error("cannot connect to the legacy database")]
    Connect {
        /// Why.
        #[source]
        source: diesel::ConnectionError,
    },
    /// The blocking task running a query was lost.
    #[error("legacy table: the query task failed")]
    Task,
}

/// Which legacy column holds what. `title` and `description` are optional.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyColumns {
    /// The row's unique id (any orderable type: integer, uuid, text).
    pub id: String,
    /// The file's bytes (`BYTEA`).
    pub data: String,
    /// The client's file name.
    pub filename: String,
    /// The content type the client declared.
    pub content_type: String,
    /// The event the file belongs to.
    pub event_id: String,
    /// Who uploaded it.
    pub uploaded_by: String,
    /// When it was uploaded (`timestamp` read as UTC, or `timestamptz`).
    pub created_at: String,
    /// A title, if the legacy table has one.
    pub title: Option<String>,
    /// A description, if the legacy table has one.
    pub description: Option<String>,
}

impl Default for LegacyColumns {
    fn default() -> Self {
        Self {
            id: "id".into(),
            data: "file_data".into(),
            filename: "filename".into(),
            content_type: "content_type".into(),
            event_id: "event_id".into(),
            uploaded_by: "uploaded_by".into(),
            created_at: "created_at".into(),
            title: None,
            description: None,
        }
    }
}

/// One legacy row without its bytes.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct LegacyRow {
    /// The id, as text. (Selected under another name: ordering by `id` must mean the column's
    /// own type, not its text.)
    #[diesel(sql_type = Text, column_name = legacy_id)]
    pub id: String,
    /// The file name.
    #[diesel(sql_type = Nullable<Text>)]
    pub filename: Option<String>,
    /// The declared content type.
    #[diesel(sql_type = Nullable<Text>)]
    pub content_type: Option<String>,
    /// The event id, as text.
    #[diesel(sql_type = Nullable<Text>)]
    pub event_id: Option<String>,
    /// The uploader, as text.
    #[diesel(sql_type = Nullable<Text>)]
    pub uploaded_by: Option<String>,
    /// The upload time.
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub created_at: Option<DateTime<Utc>>,
    /// The title.
    #[diesel(sql_type = Nullable<Text>)]
    pub title: Option<String>,
    /// The description.
    #[diesel(sql_type = Nullable<Text>)]
    pub description: Option<String>,
    /// The bytes' length; `None` when the bytes are `NULL` (cleared, or never there).
    #[diesel(sql_type = Nullable<BigInt>)]
    pub length: Option<i64>,
}

#[derive(QueryableByName)]
struct Chunk {
    #[diesel(sql_type = Nullable<Binary>)]
    chunk: Option<Vec<u8>>,
}

#[derive(QueryableByName)]
struct Totals {
    #[diesel(sql_type = BigInt)]
    rows: i64,
    #[diesel(sql_type = BigInt)]
    bytes: i64,
}

#[derive(QueryableByName)]
struct TypeName {
    #[diesel(sql_type = Nullable<Text>)]
    name: Option<String>,
}

/// The legacy table, over one connection of its own.
#[derive(Clone)]
pub struct LegacyTable {
    connection: Arc<Mutex<PgConnection>>,
    table: String,
    columns: QuotedColumns,
    /// The id column's SQL type, from the catalog, for casting bound ids back.
    id_type: String,
}

impl std::fmt::Debug for LegacyTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LegacyTable")
            .field("table", &self.table)
            .field("id_type", &self.id_type)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
struct QuotedColumns {
    id: String,
    data: String,
    select: String,
}

impl LegacyTable {
    /// Connects to `url` (PostgreSQL) and checks the names; fails when the table or its id
    /// column does not exist.
    pub async fn open(
        url: &str,
        table: &str,
        columns: &LegacyColumns,
    ) -> Result<Self, LegacyError> {
        let scheme = url.split("://").next().unwrap_or_default();
        if !matches!(scheme, "postgres" | "postgresql") {
            return Err(LegacyError::UnsupportedUrl {
                scheme: scheme.to_owned(),
            });
        }
        let quoted_table = quote_name("--from-table", table, true)?;
        let q = |what: &str, name: &str| quote_name(what, name, false);
        let id = q("id column", &columns.id)?;
        let data = q("data column", &columns.data)?;
        let optional = |name: &Option<String>, what: &str| -> Result<String, LegacyError> {
            Ok(match name {
                Some(name) => format!("CAST({} AS text)", q(what, name)?),
                None => "CAST(NULL AS text)".to_owned(),
            })
        };
        let select = format!(
            "CAST({id} AS text) AS legacy_id, CAST({} AS text) AS filename, \
             CAST({} AS text) AS content_type, CAST({} AS text) AS event_id, \
             CAST({} AS text) AS uploaded_by, CAST({} AS timestamptz) AS created_at, \
             {} AS title, {} AS description, CAST(octet_length({data}) AS bigint) AS length",
            q("filename column", &columns.filename)?,
            q("content_type column", &columns.content_type)?,
            q("event_id column", &columns.event_id)?,
            q("uploaded_by column", &columns.uploaded_by)?,
            q("created_at column", &columns.created_at)?,
            optional(&columns.title, "title column")?,
            optional(&columns.description, "description column")?,
        );
        let url = url.to_owned();
        let id_name = columns.id.clone();
        let table_for_lookup = quoted_table.clone();
        let (connection, id_type) = tokio::task::spawn_blocking(move || {
            let mut connection =
                PgConnection::establish(&url).map_err(|source| LegacyError::Connect { source })?;
            // A `timestamp` without zone is read as UTC.
            diesel::sql_query("SET TIME ZONE 'UTC'")
                .execute(&mut connection)
                .map_err(query_error("setting the session time zone"))?;
            let found: Vec<TypeName> = diesel::sql_query(
                "SELECT format_type(a.atttypid, a.atttypmod) AS name FROM pg_attribute a \
                 WHERE a.attrelid = CAST($1 AS regclass) AND a.attname = $2 AND NOT a.attisdropped",
            )
            .bind::<Text, _>(&table_for_lookup)
            .bind::<Text, _>(&id_name)
            .load(&mut connection)
            .map_err(query_error("looking up the table"))?;
            let id_type = found
                .into_iter()
                .find_map(|t| t.name)
                .filter(|name| {
                    name.chars()
                        .all(|c| c.is_ascii_alphanumeric() || " ()_,".contains(c))
                })
                .ok_or_else(|| LegacyError::Query {
                    what: format!("no column {id_name:?} in {table_for_lookup}"),
                    source: diesel::result::Error::NotFound,
                })?;
            Ok::<_, LegacyError>((connection, id_type))
        })
        .await
        .map_err(|_| LegacyError::Task)??;
        Ok(Self {
            connection: Arc::new(Mutex::new(connection)),
            table: quoted_table,
            columns: QuotedColumns { id, data, select },
            id_type,
        })
    }

    async fn with<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut PgConnection) -> Result<T, LegacyError> + Send + 'static,
    ) -> Result<T, LegacyError> {
        let connection = self.connection.clone();
        tokio::task::spawn_blocking(move || {
            let mut connection = connection.lock().unwrap_or_else(PoisonError::into_inner);
            work(&mut connection)
        })
        .await
        .map_err(|_| LegacyError::Task)?
    }

    /// How many rows, and how many bytes they hold.
    pub async fn totals(&self) -> Result<(u64, u64), LegacyError> {
        let sql = format!(
            "SELECT COUNT(*) AS rows, CAST(COALESCE(SUM(octet_length({})), 0) AS bigint) AS bytes FROM {}",
            self.columns.data, self.table
        );
        self.with(move |conn| {
            let totals: Totals = diesel::sql_query(sql)
                .get_result(conn)
                .map_err(query_error("counting rows"))?;
            Ok((
                u64::try_from(totals.rows).unwrap_or(0),
                u64::try_from(totals.bytes).unwrap_or(0),
            ))
        })
        .await
    }

    /// Up to `limit` rows after the row `after` (by the id column's own order), without bytes.
    pub async fn rows_after(
        &self,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<LegacyRow>, LegacyError> {
        let (id, id_type) = (&self.columns.id, &self.id_type);
        let sql = format!(
            "SELECT {} FROM {} WHERE CAST($1 AS text) IS NULL OR {id} > CAST($1 AS {id_type}) \
             ORDER BY {id} LIMIT $2",
            self.columns.select, self.table
        );
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with(move |conn| {
            diesel::sql_query(sql)
                .bind::<Nullable<Text>, _>(after)
                .bind::<BigInt, _>(limit)
                .load(conn)
                .map_err(query_error("listing rows"))
        })
        .await
    }

    /// `len` bytes of row `id`'s file from `offset` (`substring`, so only these bytes leave the
    /// database); empty past the end, `None` when the bytes are `NULL` or the row is gone.
    pub async fn read_chunk(
        &self,
        id: &str,
        offset: u64,
        len: u32,
    ) -> Result<Option<Vec<u8>>, LegacyError> {
        let sql = format!(
            "SELECT substring({} FROM $2 FOR $3) AS chunk FROM {} WHERE {} = CAST($1 AS {})",
            self.columns.data, self.table, self.columns.id, self.id_type
        );
        let id = id.to_owned();
        // substring() counts from 1, in `integer`: files above 2 GiB cannot be read this way.
        let from = i32::try_from(offset + 1).map_err(|_| LegacyError::Query {
            what: format!("row {id}: offset {offset} is beyond what substring() can address"),
            source: diesel::result::Error::NotFound,
        })?;
        let len = i32::try_from(len).unwrap_or(i32::MAX);
        self.with(move |conn| {
            let rows: Vec<Chunk> = diesel::sql_query(sql)
                .bind::<Text, _>(&id)
                .bind::<Integer, _>(from)
                .bind::<Integer, _>(len)
                .load(conn)
                .map_err(query_error("reading bytes"))?;
            Ok(rows.into_iter().next().and_then(|row| row.chunk))
        })
        .await
    }

    /// Sets row `id`'s bytes to `NULL`; whether a row had bytes to clear.
    pub async fn clear(&self, id: &str) -> Result<bool, LegacyError> {
        let sql = format!(
            "UPDATE {} SET {data} = NULL WHERE {} = CAST($1 AS {}) AND {data} IS NOT NULL",
            self.table,
            self.columns.id,
            self.id_type,
            data = self.columns.data
        );
        let id = id.to_owned();
        self.with(move |conn| {
            let changed = diesel::sql_query(sql)
                .bind::<Text, _>(&id)
                .execute(conn)
                .map_err(query_error("clearing bytes"))?;
            Ok(changed > 0)
        })
        .await
    }
}

fn query_error(what: &'static str) -> impl Fn(diesel::result::Error) -> LegacyError {
    move |source| LegacyError::Query {
        what: what.to_owned(),
        source,
    }
}

/// `"name"`, or `"schema"."name"` when `qualified` allows it; refuses anything but plain
/// identifiers.
fn quote_name(what: &str, name: &str, qualified: bool) -> Result<String, LegacyError> {
    let invalid = || LegacyError::InvalidName {
        what: what.to_owned(),
        name: name.to_owned(),
    };
    let parts: Vec<&str> = name.split('.').collect();
    if parts.is_empty() || parts.len() > if qualified { 2 } else { 1 } {
        return Err(invalid());
    }
    let plain = |part: &str| {
        let mut chars = part.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
            && part.len() <= 63
    };
    if !parts.iter().all(|part| plain(part)) {
        return Err(invalid());
    }
    Ok(parts
        .iter()
        .map(|part| format!("\"{part}\""))
        .collect::<Vec<_>>()
        .join("."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_names_are_quoted() {
        assert_eq!(quote_name("t", "files", true).unwrap(), "\"files\"");
        assert_eq!(
            quote_name("t", "legacy.files_2", true).unwrap(),
            "\"legacy\".\"files_2\""
        );
        assert!(quote_name("c", "legacy.files", false).is_err());
        for bad in ["", "1files", "files;drop", "a\"b", "a.b.c", "fi les", "é"] {
            assert!(quote_name("t", bad, true).is_err(), "{bad}");
        }
    }
}
