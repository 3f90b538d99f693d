//! `plugs-api backfill` end to end, on PostgreSQL with s3s-fs and with moto: a legacy table in
//! another database holds a few hundred files in a BYTEA column (PNGs, JPEGs, and rows that
//! must be refused: text posing as a PNG, a PNG named as a JPEG, empty files, a NULL). A dry
//! run changes nothing; a first run is killed (SIGKILL) mid-way; a second run finishes, and
//! every valid row is then media exactly once (one record, one object, the SHA-256 of its
//! legacy bytes, a key dated by the row's creation), each refused row reported with its reason.
//! A run with `--clear-legacy` then clears the moved rows' bytes, and only theirs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod binary;
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use binary::{command, pairs};
use plugs_storage::{ObjectStoreExt as _, S3Config, S3Store};
use plugs_test_support::pg::TestDatabase;
use plugs_test_support::s3::S3TestServer;

const ROWS: usize = 300;

/// Rows of `sql` on the PostgreSQL database at `url`, split on `|`.
fn psql(url: &str, sql: &str) -> Vec<Vec<String>> {
    binary::query(&binary::Database::Postgres(url.to_owned()), sql)
        .iter()
        .map(|l| l.split('|').map(str::to_owned).collect())
        .collect()
}

fn count(url: &str, sql: &str) -> usize {
    psql(url, sql)[0][0].parse().unwrap()
}

/// The legacy table: `id serial`, the bytes, and the columns the old design kept. Each file's
/// tail differs (an md5 of its row number), so every valid file has its own SHA-256.
fn seed_legacy(url: &str) {
    let png = hex::encode(common::PNG);
    let jpeg = hex::encode(common::JPEG);
    let sql = format!(
        "CREATE TABLE legacy_media (
            id serial PRIMARY KEY,
            file_data bytea,
            filename text,
            content_type text,
            event_id integer,
            uploaded_by text,
            created_at timestamp NOT NULL
         );
         INSERT INTO legacy_media (file_data, filename, content_type, event_id, uploaded_by, created_at)
         SELECT
           CASE
             WHEN i % 10 < 6 OR i % 10 = 9 THEN decode('{png}', 'hex')
               || convert_to(repeat(md5(i::text), 1000 + (i * 37) % 3000), 'UTF8')
             WHEN i % 10 = 6 THEN decode('{jpeg}', 'hex') || convert_to(repeat(md5(i::text), 500), 'UTF8')
             WHEN i % 10 = 7 THEN convert_to('just text, row ' || i, 'UTF8')
             ELSE ''::bytea
           END,
           CASE WHEN i % 10 = 6 THEN 'photo_' || i || '.jpg'
                WHEN i % 10 = 9 THEN 'photo_' || i || '.jpg'
                ELSE 'photo_' || i || '.png' END,
           CASE WHEN i % 10 = 6 OR i % 10 = 9 THEN 'image/jpeg' ELSE 'image/png' END,
           1 + i % 5,
           CASE WHEN i % 4 = 0 THEN NULL ELSE 'user' || (i % 3) END,
           TIMESTAMP '2019-03-04 05:06:07.123456' + i * INTERVAL '1 day 1 hour'
         FROM generate_series(1, {ROWS}) AS i;
         INSERT INTO legacy_media (file_data, filename, content_type, event_id, uploaded_by, created_at)
         VALUES (NULL, 'gone.png', 'image/png', 1, 'user1', TIMESTAMP '2020-01-01');"
    );
    psql(url, &sql);
}

/// Rows 1..=ROWS with i % 10 in 0..=6 are valid; 7 (text), 8 (empty), 9 (PNG named .jpg) and
/// the NULL row are not.
fn valid(i: usize) -> bool {
    i % 10 <= 6
}

/// `legacy id -> (sha256 hex, yyyy/mm/dd)` of the valid rows.
fn expected(url: &str) -> BTreeMap<String, (String, String)> {
    psql(
        url,
        "SELECT id, encode(sha256(file_data), 'hex'), to_char(created_at, 'YYYY/MM/DD') \
         FROM legacy_media WHERE file_data IS NOT NULL ORDER BY id",
    )
    .into_iter()
    .filter(|row| valid(row[0].parse().unwrap()))
    .map(|row| (row[0].clone(), (row[1].clone(), row[2].clone())))
    .collect()
}

fn stdout(output: &Output) -> String {
    format!(
        "{}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

async fn scenario(s3: &S3TestServer) {
    let (Some(ours), Some(legacy)) = (TestDatabase::create(), TestDatabase::create()) else {
        return;
    };
    let bucket = s3.unique_bucket("backfill");
    let mut config = S3Config::new(bucket.clone(), "us-east-1");
    config.endpoint_url = Some(s3.endpoint.clone());
    config.force_path_style = true;
    config.access_key_id = Some(s3.access_key.clone());
    config.secret_access_key = Some(s3.secret_key.clone());
    let store = S3Store::new(config).await.unwrap();
    store.ensure_bucket().await.unwrap();
    seed_legacy(legacy.url());
    let expected = expected(legacy.url());
    let invalid = ROWS + 1 - expected.len();
    assert!(expected.len() > 200 && invalid > 80, "{}", expected.len());

    let dir = tempfile::tempdir().unwrap();
    let env = pairs(&[
        ("DATA_DIR", dir.path().join("data").to_str().unwrap()),
        ("DATABASE_URL", ours.url()),
        ("S3_BUCKET_NAME", &bucket),
        ("S3_ENDPOINT_URL", &s3.endpoint),
        ("AWS_ACCESS_KEY_ID", &s3.access_key),
        ("AWS_SECRET_ACCESS_KEY", &s3.secret_key),
        ("MAX_FILE_SIZE", "1048576"),
    ]);
    let args = [
        "backfill",
        "--from-url",
        legacy.url(),
        "--from-table",
        "legacy_media",
        "--columns",
        "data=file_data,filename=filename",
        "--owner-of-events",
        "importer",
        "--batch",
        "25",
    ];
    let run = |extra: &[&str]| {
        command(&env, dir.path())
            .args(args)
            .args(extra)
            .output()
            .unwrap()
    };

    // A dry run: every row judged, nothing stored.
    let output = run(&["--dry-run"]);
    let report = stdout(&output);
    assert!(!output.status.success(), "invalid rows fail: {report}");
    assert!(
        report.contains(&format!("would move: {}", expected.len())),
        "{report}"
    );
    assert!(report.contains(&format!("failed:  {invalid}")), "{report}");
    assert_eq!(count(ours.url(), "SELECT count(*) FROM event_media"), 0);
    assert_eq!(count(ours.url(), "SELECT count(*) FROM events"), 0);
    assert!(store.list_all(Some("events/")).await.unwrap().is_empty());

    // A run killed mid-way.
    let mut child = command(&env, dir.path())
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let ready = count(
            ours.url(),
            "SELECT count(*) FROM event_media WHERE status = 'ready'",
        );
        if ready >= 40 {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the first run ended before it could be killed ({ready} moved)"
        );
        assert!(Instant::now() < deadline, "no progress: {ready} moved");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let moved_before = count(
        ours.url(),
        "SELECT count(*) FROM event_media WHERE status = 'ready'",
    );
    assert!(
        moved_before < expected.len(),
        "killed after everything was moved ({moved_before}); the test needs more rows"
    );

    // The second run finishes the job.
    let output = run(&[]);
    let report = stdout(&output);
    assert!(!output.status.success(), "invalid rows fail: {report}");
    let number = |label: &str| -> usize {
        report
            .lines()
            .find_map(|l| l.trim().strip_prefix(label))
            .unwrap_or_else(|| panic!("no {label} in {report}"))
            .trim()
            .parse()
            .unwrap()
    };
    let moved_now = number("moved:");
    let skipped = number("skipped:");
    assert_eq!(moved_now + skipped, expected.len(), "{report}");
    assert!(skipped >= moved_before, "{report}");
    assert!(report.contains("moved by an earlier run"), "{report}");
    assert_eq!(number("failed:"), invalid, "{report}");
    for i in 1..=ROWS {
        let line = report
            .lines()
            .find(|l| l.trim().starts_with(&format!("row {i}:")));
        assert_eq!(line.is_some(), !valid(i), "row {i}: {report}");
        if let Some(line) = line {
            assert!(line.contains("refused"), "{line}");
        }
    }
    assert!(
        report.contains(&format!("row {}: no bytes (NULL)", ROWS + 1)),
        "{report}"
    );

    // Exactly once: one ready record per valid row, with its bytes' SHA-256 and a key dated by
    // its row; nothing half-done; one object per record and no other.
    let records = psql(
        ours.url(),
        "SELECT sha256, s3_key, status, uploaded_by FROM event_media ORDER BY s3_key",
    );
    assert_eq!(records.len(), expected.len());
    assert!(records.iter().all(|r| r[2] == "ready"), "{records:?}");
    let by_sha: BTreeMap<&str, &str> = records
        .iter()
        .map(|r| (r[0].as_str(), r[1].as_str()))
        .collect();
    assert_eq!(by_sha.len(), expected.len(), "a SHA-256 twice");
    for (id, (sha, date)) in &expected {
        let key = by_sha
            .get(sha.as_str())
            .unwrap_or_else(|| panic!("row {id} not moved"));
        assert!(key.contains(&format!("/media/{date}/")), "row {id}: {key}");
    }
    assert!(
        records.iter().any(|r| r[3] == "importer"),
        "no uploader: owner"
    );
    assert!(records.iter().any(|r| r[3] == "user1"));
    let objects: BTreeSet<String> = store
        .list_all(Some("events/"))
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key.to_string())
        .collect();
    let keys: BTreeSet<String> = records.iter().map(|r| r[1].clone()).collect();
    assert_eq!(objects, keys);
    let events = psql(ours.url(), "SELECT owner FROM events");
    assert_eq!(events.len(), 5);
    assert!(events.iter().all(|e| e[0] == "importer"));
    assert_eq!(
        count(
            legacy.url(),
            "SELECT count(*) FROM legacy_media WHERE file_data IS NULL"
        ),
        1,
        "nothing cleared without --clear-legacy"
    );

    // --clear-legacy: the moved rows' bytes go, after their objects are read back; the refused
    // rows keep theirs. A second time clears nothing more.
    let output = run(&["--clear-legacy"]);
    let report = stdout(&output);
    assert!(report.contains("moved:   0"), "{report}");
    assert!(
        report.contains(&format!("legacy bytes cleared: {}", expected.len())),
        "{report}"
    );
    let cleared: BTreeSet<String> = psql(
        legacy.url(),
        "SELECT id FROM legacy_media WHERE file_data IS NULL",
    )
    .into_iter()
    .map(|r| r[0].clone())
    .collect();
    let mut should: BTreeSet<String> = expected.keys().cloned().collect();
    should.insert((ROWS + 1).to_string());
    assert_eq!(cleared, should);
    let output = run(&["--clear-legacy"]);
    let report = stdout(&output);
    assert!(report.contains("legacy bytes cleared: 0"), "{report}");
    assert_eq!(
        count(ours.url(), "SELECT count(*) FROM event_media"),
        expected.len()
    );
}

#[tokio::test]
async fn backfill_on_s3s_fs_survives_a_kill() {
    let Some(s3) = S3TestServer::s3s() else {
        return;
    };
    scenario(&s3).await;
}

#[tokio::test]
async fn backfill_on_moto_survives_a_kill() {
    let Some(s3) = S3TestServer::moto() else {
        return;
    };
    scenario(&s3).await;
}

/// Names that are not plain identifiers are refused before any query.
#[test]
fn a_table_name_that_is_not_an_identifier_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let env = pairs(&[("DATA_DIR", dir.path().join("data").to_str().unwrap())]);
    let output = command(&env, dir.path())
        .args([
            "backfill",
            "--from-url",
            "postgres://postgres@127.0.0.1:1/none",
            "--from-table",
            "media; DROP TABLE events",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("not a plain SQL identifier"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
