//! Proof on PostgreSQL that the media listing reads one page through an index however many rows
//! the event has, unfiltered and filtered by kind or tag: `EXPLAIN` of the exact SQL the
//! repository sends for `list_ready`, over 100k rows.
//!
//! Prints the plans and `EXPLAIN ANALYZE` timings to stderr. With `PLUGS_UPDATE_PERF_DOC=1` it
//! also rewrites its own section of `docs/PERFORMANCE.md` (opt-in, so an ordinary test run never
//! dirties the work tree with fresh timings).

use std::sync::{Arc, Mutex};

use chrono::NaiveDateTime;
use diesel::connection::{InstrumentationEvent, SimpleConnection as _};
use diesel::sql_types::Text;
use diesel::{Connection as _, PgConnection, QueryDsl as _, QueryableByName, RunQueryDsl as _};
use plugs_domain::{EventId, MediaKind, PageCursor};
use plugs_test_support::pg::TestDatabase;
use uuid::Uuid;

use crate::connection::{AnyConnection, SqlUuid};
use crate::diesel_repo::ready_page;
use crate::{Database, DatabaseOptions, MediaFilter, MediaRepository as _};

const SECTION: &str = "## Listing 50 of 100k media rows";
const ROWS: u32 = 100_000;
const PAGE: i64 = 50;

#[derive(QueryableByName)]
struct Line {
    #[diesel(sql_type = Text)]
    line: String,
}

/// Runs an EXPLAIN through a set-returning function, because Diesel cannot name EXPLAIN's
/// output column (`QUERY PLAN` has a space in it).
fn explain(conn: &mut PgConnection, statement: &str) -> String {
    let quoted = statement.replace('\'', "''");
    let lines: Vec<Line> = diesel::sql_query(format!("SELECT explain_lines('{quoted}') AS line"))
        .load(conn)
        .unwrap();
    lines
        .into_iter()
        .map(|l| l.line)
        .collect::<Vec<_>>()
        .join("\n")
}

/// One listing the test explains: what it asks, and the index its plan must read.
struct Case {
    name: &'static str,
    what: &'static str,
    filter: MediaFilter,
    index: &'static str,
    /// Whether the plan must read rows in index order (no `Sort`). A rare tag may be found
    /// from the tag instead and its few rows sorted: cheaper than walking the whole listing.
    in_order: bool,
}

fn cases() -> Vec<Case> {
    let tag = |tag: &str| MediaFilter {
        tag: Some(tag.to_owned()),
        kind: None,
    };
    vec![
        Case {
            name: "all",
            what: "every ready media",
            filter: MediaFilter::default(),
            index: "event_media_ready_listing_idx",
            in_order: true,
        },
        Case {
            name: "kind",
            what: "`?kind=document` (1 row in 100)",
            filter: MediaFilter {
                tag: None,
                kind: Some(MediaKind::Document),
            },
            index: "event_media_ready_kind_idx",
            in_order: true,
        },
        Case {
            name: "common_tag",
            what: "`?tag=common` (1 row in 2)",
            filter: tag("common"),
            index: "event_media_ready_listing_idx",
            in_order: true,
        },
        Case {
            name: "rare_tag",
            what: "`?tag=rare` (1 row in 1000)",
            filter: tag("rare"),
            index: "event_media_tags_tag_media_idx",
            in_order: false,
        },
    ]
}

fn assert_plan(plan: &str, case: &Case, label: &str) {
    assert!(
        plan.contains(case.index),
        "{label} does not use {}:\n{plan}",
        case.index
    );
    assert!(!plan.contains("Seq Scan"), "{label} scans a table:\n{plan}");
    if case.in_order {
        assert!(
            !plan.contains("Sort"),
            "{label} sorts instead of reading in index order:\n{plan}"
        );
    }
}

fn execution_ms(analyzed: &str) -> String {
    analyzed
        .lines()
        .find_map(|l| l.trim().strip_prefix("Execution Time: "))
        .unwrap_or("?")
        .to_owned()
}

/// The SQL PostgreSQL receives when the repository's builder runs, read back from Diesel's
/// instrumentation (the builder is typed for the multi-backend connection, so this is the one
/// faithful way to see its PostgreSQL text).
fn sql_sent(url: &str, filter: &MediaFilter, after: Option<(NaiveDateTime, SqlUuid)>) -> String {
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut conn = AnyConnection::Postgresql(PgConnection::establish(url).unwrap());
    let sink = seen.clone();
    conn.set_instrumentation(move |event: InstrumentationEvent<'_>| {
        if let InstrumentationEvent::StartQuery { query, .. } = event {
            sink.lock().unwrap().push(query.to_string());
        }
    });
    ready_page(SqlUuid(Uuid::nil()), filter, after)
        .limit(PAGE)
        .execute(&mut conn)
        .unwrap();
    let statements = seen.lock().unwrap().clone();
    assert_eq!(statements.len(), 1, "{statements:?}");
    let text = &statements[0];
    text.split(" -- binds: ")
        .next()
        .unwrap_or(text)
        .trim()
        .to_owned()
}

/// The EXECUTE arguments for a case, in the order the builder binds them: event, kind, cursor
/// (`created_at` twice, then `id`), tag, limit.
fn arguments(event: EventId, filter: &MediaFilter, after: Option<NaiveDateTime>) -> String {
    let mut args = vec![format!("'{event}'")];
    if let Some(kind) = filter.kind {
        args.push(format!("'{kind}'"));
    }
    if let Some(cursor_at) = after {
        args.push(format!("'{cursor_at}'"));
        args.push(format!("'{cursor_at}'"));
        args.push(format!("'{}'", Uuid::max()));
    }
    if let Some(tag) = &filter.tag {
        args.push(format!("'{tag}'"));
    }
    args.push(PAGE.to_string());
    format!("({})", args.join(", "))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_50_of_100k_rows_reads_the_index() {
    let Some(test_db) = tokio::task::spawn_blocking(TestDatabase::create)
        .await
        .unwrap()
    else {
        return;
    };
    let url = test_db.url().to_owned();
    let db = {
        let url = url.clone();
        tokio::task::spawn_blocking(move || Database::connect(&url, DatabaseOptions::default()))
            .await
            .unwrap()
            .unwrap()
    };
    db.run_migrations().await.unwrap();

    let event = EventId::new();
    let other_event = EventId::new();
    let setup = format!(
        "INSERT INTO events (id, owner, title, created_at, updated_at) VALUES
             ('{event}', 'alice', 'big', now(), now()), ('{other_event}', 'bob', 'other', now(), now());
         -- Pairs of rows share a timestamp, as uploads in the same millisecond would. One in ten
         -- is a video, one in a hundred a PDF, the rest photos.
         INSERT INTO event_media (id, event_id, content_type, kind, size_bytes, sha256, s3_key,
                                  status, uploaded_by, created_at, updated_at)
         SELECT gen_random_uuid(), '{event}',
                CASE WHEN g % 100 = 0 THEN 'application/pdf' WHEN g % 10 = 0 THEN 'video/mp4'
                     ELSE 'image/jpeg' END,
                CASE WHEN g % 100 = 0 THEN 'document' WHEN g % 10 = 0 THEN 'video'
                     ELSE 'image' END,
                1000 + g, md5(g::text), 'events/{event}/media/' || g, 'ready', 'alice',
                timestamp '2025-01-01' + (g / 2) * interval '1 millisecond',
                timestamp '2025-01-01' + (g / 2) * interval '1 millisecond'
         FROM generate_series(1, {ROWS}) AS g;
         -- Rows the listing must skip: pending uploads of the same event, another event's media.
         INSERT INTO event_media (id, event_id, content_type, kind, size_bytes, s3_key, status,
                                  uploaded_by, created_at, updated_at)
         SELECT gen_random_uuid(), CASE WHEN g % 2 = 0 THEN '{event}'::uuid ELSE '{other_event}'::uuid END,
                'application/pdf', 'document', 0, 'events/x/media/' || g,
                CASE WHEN g % 2 = 0 THEN 'pending' ELSE 'ready' END, 'alice',
                timestamp '2025-01-02' + g * interval '1 millisecond',
                timestamp '2025-01-02' + g * interval '1 millisecond'
         FROM generate_series(1, 20000) AS g;
         -- Tags: each media one of twenty everyday tags, `common` on every other one (the
         -- skipped rows too), `rare` on one in a thousand.
         INSERT INTO event_media_tags (media_id, tag, position)
         SELECT id, 'n' || (size_bytes % 20), 0 FROM event_media;
         INSERT INTO event_media_tags (media_id, tag, position)
         SELECT id, 'common', 1 FROM event_media WHERE size_bytes % 2 = 0;
         INSERT INTO event_media_tags (media_id, tag, position)
         SELECT id, 'rare', 2 FROM event_media WHERE size_bytes % 1000 = 7;
         ANALYZE;
         CREATE FUNCTION explain_lines(statement text) RETURNS SETOF text LANGUAGE plpgsql AS $$
         DECLARE line text;
         BEGIN FOR line IN EXECUTE statement LOOP RETURN NEXT line; END LOOP; END $$;"
    );
    let mut conn = {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = PgConnection::establish(&url).unwrap();
            conn.batch_execute(&setup).unwrap();
            conn
        })
        .await
        .unwrap()
    };

    // The repository agrees with the data: each listing's first page, then the page after it.
    for case in cases() {
        let first = db.list_ready(event, &case.filter, None, 50).await.unwrap();
        assert_eq!(first.len(), 50, "{}", case.name);
        assert!(
            first.iter().all(|m| m.event_id == event
                && case
                    .filter
                    .tag
                    .as_ref()
                    .is_none_or(|tag| m.tags.contains(tag))
                && case
                    .filter
                    .kind
                    .is_none_or(|kind| m.content_type == expected_type(kind))),
            "{}",
            case.name
        );
        if case.name == "all" {
            assert_eq!(first[0].s3_key, format!("events/{event}/media/{ROWS}"));
        }
        let last = &first[49];
        let cursor = PageCursor {
            created_at: last.created_at,
            id: last.id.as_uuid(),
        };
        let second = db
            .list_ready(event, &case.filter, Some(cursor), 50)
            .await
            .unwrap();
        assert_eq!(second.len(), 50, "{}", case.name);
        assert!(
            second
                .iter()
                .all(|m| (m.created_at, m.id) < (last.created_at, last.id)),
            "{}",
            case.name
        );
    }

    // The same statements, as the repository sends them to PostgreSQL. A mid-table cursor:
    // 50 000 newer rows precede it.
    let cursor_at: NaiveDateTime = "2025-01-01T00:00:25".parse().unwrap();
    let statements = {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            cases()
                .into_iter()
                .map(|case| {
                    let first = sql_sent(&url, &case.filter, None);
                    let after =
                        sql_sent(&url, &case.filter, Some((cursor_at, SqlUuid(Uuid::max()))));
                    (case, first, after)
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap()
    };
    let report = tokio::task::spawn_blocking(move || {
        let mut report = Report::default();
        for (case, first_sql, after_sql) in &statements {
            let first_name = format!("{}_first", case.name);
            let after_name = format!("{}_after", case.name);
            conn.batch_execute(&format!(
                "PREPARE {first_name} AS {first_sql}; PREPARE {after_name} AS {after_sql};"
            ))
            .unwrap();
            let runs = [
                (&first_name, arguments(event, &case.filter, None)),
                (&after_name, arguments(event, &case.filter, Some(cursor_at))),
            ];
            let mut plans = Vec::new();
            for (name, args) in &runs {
                let plan = explain(&mut conn, &format!("EXPLAIN EXECUTE {name}{args}"));
                assert_plan(&plan, case, name);
                // Warm once so the figure is the steady state, not the first read from disk.
                explain(&mut conn, &format!("EXPLAIN ANALYZE EXECUTE {name}{args}"));
                let analyzed = explain(
                    &mut conn,
                    &format!("EXPLAIN (ANALYZE, BUFFERS) EXECUTE {name}{args}"),
                );
                assert_plan(&analyzed, case, name);
                // Should the statement ever be cached, PostgreSQL may switch it to a generic
                // plan, blind to the tag's frequency: that plan must still read an index, and
                // for a listing without a tag the same index in order.
                conn.batch_execute("SET plan_cache_mode = force_generic_plan")
                    .unwrap();
                let generic = explain(&mut conn, &format!("EXPLAIN EXECUTE {name}{args}"));
                conn.batch_execute("SET plan_cache_mode = auto").unwrap();
                assert!(
                    !generic.contains("Seq Scan") && generic.contains("Index"),
                    "{name} (generic plan) does not read an index:\n{generic}"
                );
                if case.filter.tag.is_none() {
                    assert_plan(&generic, case, &format!("{name} (generic plan)"));
                }
                plans.push(((*name).clone(), plan, analyzed));
            }
            report.cases.push(CaseReport {
                what: case.what,
                first_sql: first_sql.clone(),
                after_sql: after_sql.clone(),
                plans,
            });
        }
        let version: Vec<Line> =
            diesel::sql_query("SELECT current_setting('server_version') AS line")
                .load(&mut conn)
                .unwrap();
        report.server_version = version
            .into_iter()
            .next()
            .map(|l| l.line)
            .unwrap_or_default();
        report
    })
    .await
    .unwrap();

    let section = report.section();
    eprintln!("{section}");
    if std::env::var_os("PLUGS_UPDATE_PERF_DOC").is_some_and(|v| v == "1") {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/PERFORMANCE.md");
        write_section(std::path::Path::new(path), &section);
    }
    drop(db);
    tokio::task::spawn_blocking(move || drop(test_db))
        .await
        .unwrap();
}

fn expected_type(kind: MediaKind) -> &'static str {
    match kind {
        MediaKind::Document => "application/pdf",
        MediaKind::Video => "video/mp4",
        MediaKind::Image | MediaKind::Audio => "image/jpeg",
    }
}

#[derive(Default)]
struct Report {
    cases: Vec<CaseReport>,
    server_version: String,
}

struct CaseReport {
    what: &'static str,
    first_sql: String,
    after_sql: String,
    /// Statement name, plan, and the plan analyzed.
    plans: Vec<(String, String, String)>,
}

impl Report {
    fn section(&self) -> String {
        let mut out = String::new();
        out.push_str(SECTION);
        out.push_str(&format!(
            "\n\nWhat a user waits for when opening an event with a very large gallery: the first \
             page, and a page far down it, of every media or only those of one kind or one tag. \
             One event holds 100 000 ready media rows (pairs share a timestamp; one in ten a \
             video, one in a hundred a PDF; each with one of twenty everyday tags, every other \
             one tagged `common`, one in a thousand `rare`), beside 10 000 pending rows of the \
             same event and 10 000 rows of another event; the table is `ANALYZE`d. The \
             statements are the exact SQL the repository sends for \
             `MediaRepository::list_ready(event, filter, cursor, {PAGE})` to PostgreSQL ({}), \
             read back from Diesel's instrumentation. The status filter is a SQL literal (so the \
             partial indexes match), which also keeps Diesel from caching the statements as \
             named prepared statements: PostgreSQL plans each with its actual parameters (a \
             custom plan), so the plan follows how common the tag asked for is. The test also \
             checks the generic plan PostgreSQL would use for a cached statement: it reads an \
             index too, and without a tag the same index in order.\n\n\
             Reproduce: `PLUGS_UPDATE_PERF_DOC=1 cargo test -p plugs_persistence --lib \
             listing_50_of_100k -- --nocapture` (debug build; the database does the work). The \
             test fails if a plan below scans a table, stops using the index named, or sorts \
             where it should read in index order (a rare tag may be found from \
             `event_media_tags_tag_media_idx` and its few rows sorted).\n\n",
            self.server_version
        ));
        out.push_str("| listing | first page | page after a cursor 50 000 rows deep |\n");
        out.push_str("|---|---|---|\n");
        for case in &self.cases {
            let times: Vec<String> = case
                .plans
                .iter()
                .map(|(_, _, analyzed)| execution_ms(analyzed))
                .collect();
            out.push_str(&format!("| {} | {} |\n", case.what, times.join(" | ")));
        }
        out.push_str(
            "\nMeasured with `EXPLAIN (ANALYZE, BUFFERS)`, warm cache, 2-core machine.\n\n",
        );
        for case in &self.cases {
            out.push_str(&format!("### {}\n\n", case.what));
            out.push_str("First page:\n\n```sql\n");
            out.push_str(&case.first_sql);
            out.push_str("\n```\n\nPage after a cursor:\n\n```sql\n");
            out.push_str(&case.after_sql);
            out.push_str("\n```\n\n");
            for (name, _, analyzed) in &case.plans {
                out.push_str(&format!(
                    "`{name}`, analyzed:\n\n```text\n{analyzed}\n```\n\n"
                ));
            }
        }
        out
    }
}

/// Replaces this test's section of the file (or appends it), leaving every other section as is.
fn write_section(path: &std::path::Path, section: &str) {
    let existing = std::fs::read_to_string(path).unwrap_or_else(|_| "# Performance\n".to_owned());
    let section = format!("{}\n", section.trim_end());
    let updated = match existing.find(SECTION) {
        Some(start) => {
            let after = start + SECTION.len();
            match existing[after..].find("\n## ").map(|i| after + i + 1) {
                Some(next) => format!("{}{section}\n{}", &existing[..start], &existing[next..]),
                None => format!("{}{section}", &existing[..start]),
            }
        }
        None => format!("{}\n\n{section}", existing.trim_end()),
    };
    std::fs::write(path, updated).unwrap();
}

#[test]
fn the_section_is_replaced_in_place_and_other_sections_survive() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("PERFORMANCE.md");
    write_section(&path, &format!("{SECTION}\n\nold figures\n"));
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        format!("# Performance\n\n{SECTION}\n\nold figures\n")
    );
    let others = "## Uploads\n\n210 MiB/s\n";
    let text = std::fs::read_to_string(&path).unwrap() + "\n" + others;
    std::fs::write(&path, text).unwrap();

    write_section(&path, &format!("{SECTION}\n\nnew figures\n"));
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        text,
        format!("# Performance\n\n{SECTION}\n\nnew figures\n\n{others}")
    );
}
