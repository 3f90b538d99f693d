//! Proof on PostgreSQL that the media listing reads 50 rows through its index however many rows
//! the event has: `EXPLAIN` of the exact SQL Diesel generates for `list_ready`, over 100k rows.
//!
//! Prints the plans and `EXPLAIN ANALYZE` timings to stderr. With `PLUGS_UPDATE_PERF_DOC=1` it
//! also rewrites its own section of `docs/PERFORMANCE.md` (opt-in, so an ordinary test run never
//! dirties the work tree with fresh timings).

use chrono::NaiveDateTime;
use diesel::connection::SimpleConnection as _;
use diesel::pg::Pg;
use diesel::query_builder::{QueryBuilder as _, QueryFragment};
use diesel::sql_types::Text;
use diesel::{Connection as _, PgConnection, QueryableByName, RunQueryDsl as _};
use plugs_domain::{EventId, PageCursor};
use plugs_test_support::pg::TestDatabase;
use uuid::Uuid;

use crate::connection::SqlUuid;
use crate::diesel_repo::{ready_first_page, ready_page_after};
use crate::{Database, DatabaseOptions, MediaRepository as _};

const SECTION: &str = "## Listing 50 of 100k media rows";
const ROWS: u32 = 100_000;
const PAGE: i64 = 50;

#[derive(QueryableByName)]
struct Line {
    #[diesel(sql_type = Text)]
    line: String,
}

fn sql_of(query: &impl QueryFragment<Pg>) -> String {
    let mut builder = diesel::pg::PgQueryBuilder::default();
    query.to_sql(&mut builder, &Pg).unwrap();
    builder.finish()
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

fn assert_uses_listing_index(plan: &str, what: &str) {
    assert!(
        plan.contains("event_media_ready_listing_idx"),
        "{what} does not use the index:\n{plan}"
    );
    assert!(
        !plan.contains("Seq Scan"),
        "{what} scans the table:\n{plan}"
    );
    assert!(
        !plan.contains("Sort"),
        "{what} sorts instead of reading in index order:\n{plan}"
    );
}

fn execution_ms(analyzed: &str) -> String {
    analyzed
        .lines()
        .find_map(|l| l.trim().strip_prefix("Execution Time: "))
        .unwrap_or("?")
        .to_owned()
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
        "INSERT INTO events (id, owner, title, created_at) VALUES
             ('{event}', 'alice', 'big', now()), ('{other_event}', 'bob', 'other', now());
         -- Pairs of rows share a timestamp, as uploads in the same millisecond would.
         INSERT INTO event_media (id, event_id, content_type, size_bytes, sha256, s3_key, status,
                                  uploaded_by, created_at, updated_at)
         SELECT gen_random_uuid(), '{event}', 'image/jpeg', 1000 + g, md5(g::text),
                'events/{event}/media/' || g, 'ready', 'alice',
                timestamp '2025-01-01' + (g / 2) * interval '1 millisecond',
                timestamp '2025-01-01' + (g / 2) * interval '1 millisecond'
         FROM generate_series(1, {ROWS}) AS g;
         -- Rows the listing must skip: pending uploads of the same event, another event's media.
         INSERT INTO event_media (id, event_id, content_type, size_bytes, s3_key, status,
                                  uploaded_by, created_at, updated_at)
         SELECT gen_random_uuid(), CASE WHEN g % 2 = 0 THEN '{event}'::uuid ELSE '{other_event}'::uuid END,
                'image/jpeg', 0, 'events/x/media/' || g,
                CASE WHEN g % 2 = 0 THEN 'pending' ELSE 'ready' END, 'alice',
                timestamp '2025-01-02' + g * interval '1 millisecond',
                timestamp '2025-01-02' + g * interval '1 millisecond'
         FROM generate_series(1, 20000) AS g;
         ANALYZE;
         CREATE FUNCTION explain_lines(statement text) RETURNS SETOF text LANGUAGE plpgsql AS $$
         DECLARE line text;
         BEGIN FOR line IN EXECUTE statement LOOP RETURN NEXT line; END LOOP; END $$;"
    );
    let mut conn = tokio::task::spawn_blocking(move || {
        let mut conn = PgConnection::establish(&url).unwrap();
        conn.batch_execute(&setup).unwrap();
        conn
    })
    .await
    .unwrap();

    // The repository agrees with the data: 50 newest ready rows, then the next 50 after them.
    let first = db.list_ready(event, None, 50).await.unwrap();
    assert_eq!(first.len(), 50);
    assert_eq!(first[0].s3_key, format!("events/{event}/media/{ROWS}"));
    let last = &first[49];
    let cursor = PageCursor {
        created_at: last.created_at,
        id: last.id.as_uuid(),
    };
    let second = db.list_ready(event, Some(cursor), 50).await.unwrap();
    assert_eq!(second.len(), 50);
    assert!(
        second
            .iter()
            .all(|m| (m.created_at, m.id) < (last.created_at, last.id))
    );

    // The same statements, as Diesel writes them for PostgreSQL.
    let cursor_at: NaiveDateTime = "2025-01-01T00:00:25".parse().unwrap();
    let first_sql = sql_of(&ready_first_page(SqlUuid(event.as_uuid()), PAGE));
    let after_sql = sql_of(&ready_page_after(
        SqlUuid(event.as_uuid()),
        cursor_at,
        SqlUuid(Uuid::max()),
        PAGE,
    ));
    let report = tokio::task::spawn_blocking(move || {
        conn.batch_execute(&format!(
            "PREPARE list_first AS {first_sql}; PREPARE list_after AS {after_sql};"
        ))
        .unwrap();
        // A mid-table cursor: 50 000 newer rows precede it.
        let first_args = format!("('{event}', {PAGE})");
        let after_args = format!(
            "('{event}', '{cursor_at}', '{cursor_at}', '{}', {PAGE})",
            Uuid::max()
        );
        let mut plans = Vec::new();
        for (mode, label) in [
            ("force_custom_plan", "custom"),
            ("force_generic_plan", "generic"),
        ] {
            conn.batch_execute(&format!("SET plan_cache_mode = {mode}"))
                .unwrap();
            for (name, args) in [("list_first", &first_args), ("list_after", &after_args)] {
                let plan = explain(&mut conn, &format!("EXPLAIN EXECUTE {name}{args}"));
                assert_uses_listing_index(&plan, &format!("{name} ({label} plan)"));
                plans.push((format!("{name}, {label} plan"), plan));
            }
        }
        conn.batch_execute("SET plan_cache_mode = auto").unwrap();
        let mut analyzed = Vec::new();
        for (name, args) in [("list_first", &first_args), ("list_after", &after_args)] {
            // Warm once so the figure is the steady state, not the first read from disk.
            explain(&mut conn, &format!("EXPLAIN ANALYZE EXECUTE {name}{args}"));
            let plan = explain(
                &mut conn,
                &format!("EXPLAIN (ANALYZE, BUFFERS) EXECUTE {name}{args}"),
            );
            assert_uses_listing_index(&plan, name);
            analyzed.push((name, plan));
        }
        let version: Vec<Line> =
            diesel::sql_query("SELECT current_setting('server_version') AS line")
                .load(&mut conn)
                .unwrap();
        Report {
            first_sql,
            after_sql,
            plans,
            analyzed,
            server_version: version
                .into_iter()
                .next()
                .map(|l| l.line)
                .unwrap_or_default(),
        }
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

struct Report {
    first_sql: String,
    after_sql: String,
    plans: Vec<(String, String)>,
    analyzed: Vec<(&'static str, String)>,
    server_version: String,
}

impl Report {
    fn section(&self) -> String {
        let mut out = String::new();
        out.push_str(SECTION);
        out.push_str(&format!(
            "\n\nWhat a user waits for when opening an event with a very large gallery: the first \
             page, and a page far down it. One event holds 100 000 ready media rows (pairs share a \
             timestamp), beside 10 000 pending rows of the same event and 10 000 rows of another \
             event; the table is `ANALYZE`d. The statements are the exact SQL Diesel generates \
             for `MediaRepository::list_ready(event, cursor, {PAGE})` on PostgreSQL \
             ({}), prepared as Diesel prepares them.\n\n\
             Reproduce: `PLUGS_UPDATE_PERF_DOC=1 cargo test -p plugs_persistence --lib \
             listing_50_of_100k -- --nocapture` (debug build; the database does the work). The \
             test fails if any plan below stops using `event_media_ready_listing_idx`, sorts, or \
             scans the table.\n\n",
            self.server_version
        ));
        out.push_str("First page:\n\n```sql\n");
        out.push_str(&self.first_sql);
        out.push_str("\n```\n\nPage after a cursor (`$2`, `$3`, `$4` are the `created_at` and `id` of the last row served):\n\n```sql\n");
        out.push_str(&self.after_sql);
        out.push_str("\n```\n\n");
        out.push_str(
            "Plans, both as custom plans (parameters known) and as the generic plan PostgreSQL \
             switches a prepared statement to after five executions. The status filter is a SQL \
             literal rather than a bound parameter so the partial index matches the generic plan \
             too:\n\n",
        );
        for (label, plan) in &self.plans {
            out.push_str(&format!("`{label}`:\n\n```text\n{plan}\n```\n\n"));
        }
        out.push_str("Measured (`EXPLAIN (ANALYZE, BUFFERS)`, warm cache, 2-core machine):\n\n");
        out.push_str("| query | execution time |\n|---|---|\n");
        for (name, plan) in &self.analyzed {
            let what = if *name == "list_first" {
                "first page".to_owned()
            } else {
                "page after a cursor 50 000 rows deep".to_owned()
            };
            out.push_str(&format!("| {what} | {} |\n", execution_ms(plan)));
        }
        out.push('\n');
        for (name, plan) in &self.analyzed {
            out.push_str(&format!("`{name}`, analyzed:\n\n```text\n{plan}\n```\n\n"));
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
