//! What one form upload costs the database, statement by statement, on SQLite and PostgreSQL:
//! the repository calls of an upload (`insert_pending`, then `mark_ready`) on a pool of one
//! connection whose every statement Diesel's instrumentation records. Pinned here, so that a
//! round trip added to the upload path is a deliberate change (issue 15, target 4;
//! docs/ARCHITECTURE.md lists the statements).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use diesel::Connection as _;
use diesel::connection::InstrumentationEvent;
use plugs_domain::{Event, EventId, EventMedia, MediaFields, MediaId, MediaStatus, Quota, UserId};
use plugs_test_support::pg::TestDatabase;

use crate::{Database, DatabaseOptions, EventRepository as _, MediaRepository as _, ReadyUpdate};

type Log = Arc<Mutex<Vec<String>>>;

/// A pool of exactly one connection, so every later call runs on the connection instrumented,
/// which is tested (`SELECT 1`) before a call only once it sat idle for `idle_check`.
async fn single_connection(url: String, idle_check: Duration) -> Database {
    let options = DatabaseOptions {
        max_connections: 1,
        connect_timeout: Duration::from_secs(5),
    };
    let db = tokio::task::spawn_blocking(move || Database::connect(&url, options))
        .await
        .unwrap()
        .unwrap()
        .with_idle_check(idle_check);
    db.run_migrations().await.unwrap();
    db
}

/// Long enough that no call of a test is preceded by a connection test.
const NEVER: Duration = Duration::from_secs(3600);

/// Records the text of every statement the pool's connection sends from now on.
async fn record(db: &Database) -> Log {
    let log = Log::default();
    let sink = Arc::clone(&log);
    db.with_connection(move |conn| {
        conn.set_instrumentation(move |event: InstrumentationEvent<'_>| {
            if let InstrumentationEvent::StartQuery { query, .. } = event {
                sink.lock().unwrap().push(query.to_string());
            }
        });
        Ok(())
    })
    .await
    .unwrap();
    log
}

/// The statements recorded since the last call, each as its verb and table (`INSERT
/// event_media`), or whole when short (`BEGIN`, `SELECT 1`).
fn take(log: &Log) -> Vec<String> {
    std::mem::take(&mut *log.lock().unwrap())
        .iter()
        .map(|statement| summary(statement))
        .collect()
}

fn summary(statement: &str) -> String {
    let text = statement.split(" -- binds:").next().unwrap_or(statement);
    let words: Vec<&str> = text.split_whitespace().collect();
    let table = |after: &str| {
        words
            .iter()
            .position(|word| word.eq_ignore_ascii_case(after))
            .and_then(|at| words.get(at + 1))
            .map(|table| table.trim_matches(['"', '`']).to_owned())
    };
    let verb = words
        .first()
        .copied()
        .unwrap_or_default()
        .to_ascii_uppercase();
    let target = match verb.as_str() {
        "INSERT" => table("INTO"),
        "UPDATE" => words.get(1).map(|t| t.trim_matches(['"', '`']).to_owned()),
        "DELETE" | "SELECT" => table("FROM"),
        _ => None,
    };
    match target {
        Some(table) => format!("{verb} {table}"),
        None => text.trim().to_owned(),
    }
}

fn pending(event: EventId, owner: &UserId, tags: &[&str]) -> EventMedia {
    let now = Utc::now();
    let id = MediaId::new();
    EventMedia {
        id,
        event_id: event,
        title: None,
        description: None,
        tags: tags.iter().map(|tag| (*tag).to_owned()).collect(),
        original_filename: Some("small.png".to_owned()),
        content_type: "image/png".to_owned(),
        size_bytes: 0,
        sha256: None,
        s3_key: format!(
            "events/{event}/media/2026/12/02/000000_{}.png",
            id.as_uuid()
        ),
        status: MediaStatus::Pending,
        uploaded_by: owner.clone(),
        created_at: now,
        updated_at: now,
        lease_until: Some(now + chrono::TimeDelta::seconds(60)),
        location_stripped: false,
    }
}

fn finished(tags: &[&str]) -> ReadyUpdate {
    ReadyUpdate {
        size_bytes: 102_400,
        sha256: "0".repeat(64),
        fields: MediaFields {
            title: Some("Event Photo".to_owned()),
            description: None,
            tags: tags.iter().map(|tag| (*tag).to_owned()).collect(),
        },
        at: Utc::now(),
        location_stripped: false,
    }
}

/// The statements of one upload's two repository calls: (`insert_pending`, `mark_ready`), for
/// a pending record written with `early` tags and finished with `late` ones.
async fn upload(
    db: &Database,
    log: &Log,
    event: EventId,
    early: &[&str],
    late: &[&str],
) -> [Vec<String>; 2] {
    let owner = UserId::parse("alice").unwrap();
    let media = pending(event, &owner, early);
    take(log);
    db.insert_pending(&media, Some(&owner), None, 102_400, &Quota::default())
        .await
        .unwrap();
    let insert = take(log);
    let ready = db.mark_ready(media.id, finished(late)).await.unwrap();
    assert_eq!(ready.status, MediaStatus::Ready);
    assert_eq!(ready.title.as_deref(), Some("Event Photo"));
    assert_eq!(ready.tags, late);
    let statements = take(log);
    assert_eq!(db.find_media(media.id).await.unwrap(), Some(ready));
    [insert, statements]
}

fn owned(statements: &[&str]) -> Vec<String> {
    statements.iter().map(|s| (*s).to_owned()).collect()
}

async fn pin_upload_statements(db: Database) {
    let owner = UserId::parse("alice").unwrap();
    let now = Utc::now();
    let event = Event {
        id: EventId::new(),
        title: "counted".to_owned(),
        owner,
        created_at: now,
        updated_at: now,
    };
    db.insert_event(&event).await.unwrap();
    let log = record(&db).await;

    // Each repository call is one hop to the blocking pool; a connection lent again at once is
    // not tested first. The insert checks the event's owner itself and, alone, needs no
    // transaction.
    let insert = owned(&["INSERT event_media"]);
    // `mark_ready` answers the row from its UPDATE (RETURNING, no reload), and deletes no tags
    // where the pending record had none; its processing job commits with it.
    let ready_without_tags = owned(&[
        "BEGIN",
        "UPDATE event_media",
        "INSERT processing_jobs",
        "UPDATE event_media",
        "COMMIT",
    ]);

    // An upload without tags, as the benchmark's: 6 statements in two hops.
    let [first, then] = upload(&db, &log, event.id, &[], &[]).await;
    assert_eq!(first, insert, "insert_pending");
    assert_eq!(then, ready_without_tags, "mark_ready");

    // Tags after the file (`curl -F file=@x -F tags=...`): one INSERT per tag.
    let [first, then] = upload(&db, &log, event.id, &[], &["a", "b"]).await;
    assert_eq!(first, insert, "insert_pending");
    let mut expected = ready_without_tags.clone();
    expected.splice(
        2..2,
        owned(&["INSERT event_media_tags", "INSERT event_media_tags"]),
    );
    assert_eq!(then, expected, "mark_ready with tags sent after the file");

    // Tags before the file: written with the pending record (in a transaction), then replaced.
    let [first, then] = upload(&db, &log, event.id, &["a"], &["b"]).await;
    assert_eq!(
        first,
        owned(&[
            "BEGIN",
            "INSERT event_media",
            "INSERT event_media_tags",
            "COMMIT"
        ]),
        "insert_pending with tags"
    );
    let mut expected = ready_without_tags.clone();
    expected.splice(
        2..2,
        owned(&["DELETE event_media_tags", "INSERT event_media_tags"]),
    );
    assert_eq!(then, expected, "mark_ready replacing tags");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_upload_statements_are_pinned() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("plugs.db").display());
    pin_upload_statements(single_connection(url, NEVER).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_upload_statements_are_pinned() {
    let Some(test_db) = tokio::task::spawn_blocking(TestDatabase::create)
        .await
        .unwrap()
    else {
        return;
    };
    pin_upload_statements(single_connection(test_db.url().to_owned(), NEVER).await).await;
    tokio::task::spawn_blocking(move || drop(test_db))
        .await
        .unwrap();
}

/// A connection that sat idle is tested before it is lent, and one the server closed meanwhile
/// is replaced without the caller seeing an error; a connection that fails a call is dropped,
/// so only that call fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_pool_replaces_a_connection_the_server_closed() {
    let Some(test_db) = tokio::task::spawn_blocking(TestDatabase::create)
        .await
        .unwrap()
    else {
        return;
    };
    let url = test_db.url().to_owned();
    // Ends every session of the test database but the caller's: the pool's one connection.
    let terminate = |url: String| async move {
        tokio::task::spawn_blocking(move || {
            let mut admin = diesel::PgConnection::establish(&url).unwrap();
            diesel::RunQueryDsl::execute(
                diesel::sql_query(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE datname = current_database() AND pid <> pg_backend_pid()",
                ),
                &mut admin,
            )
            .unwrap()
        })
        .await
        .unwrap()
    };
    let event = EventId::new();

    // Tested before every call: the closed connection is found and replaced.
    let tested = single_connection(url.clone(), Duration::ZERO).await;
    let log = record(&tested).await;
    assert_eq!(tested.find_event(event).await.unwrap(), None);
    assert_eq!(take(&log), ["SELECT 1", "SELECT events"]);
    assert_eq!(terminate(url.clone()).await, 1, "the pool's one session");
    assert_eq!(tested.find_event(event).await.unwrap(), None);
    drop(tested);

    // Never tested: the call on the closed connection fails as unavailable, and the
    // connection goes with it, so the next call works on a fresh one.
    let untested = single_connection(url.clone(), NEVER).await;
    let log = record(&untested).await;
    assert_eq!(untested.find_event(event).await.unwrap(), None);
    assert_eq!(take(&log), ["SELECT events"]);
    // The first pool's session may still be closing (a dropped pool closes its connections
    // without waiting): at least the second pool's one session is ended.
    assert!(terminate(url).await >= 1, "the pool's one session");
    let err = untested.find_event(event).await.unwrap_err();
    assert!(
        matches!(err, crate::RepoError::Unavailable { .. }),
        "{err:?}"
    );
    assert_eq!(untested.find_event(event).await.unwrap(), None);

    drop(untested);
    tokio::task::spawn_blocking(move || drop(test_db))
        .await
        .unwrap();
}
