//! `plugs-api check` against real servers: PostgreSQL with s3s-fs (verifies the presigned URL's
//! signature, reports no encryption) and moto (reports the encryption it applied), and the
//! embedded default (SQLite, local directory). What an operator sees: a line per check and an
//! exit status.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod binary;

use std::process::Output;

use binary::{command, pairs};
use plugs_storage::{S3Config, S3Store};
use plugs_test_support::pg::TestDatabase;
use plugs_test_support::s3::S3TestServer;

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The report's line for `name`.
fn line<'a>(report: &'a str, name: &str) -> &'a str {
    report
        .lines()
        .find(|l| l.contains(&format!("] {name}:")))
        .unwrap_or_else(|| panic!("no {name} line in:\n{report}"))
}

async fn bucket_on(server: &S3TestServer, create: bool) -> String {
    let bucket = server.unique_bucket("check");
    if create {
        let mut config = S3Config::new(bucket.clone(), "us-east-1");
        config.endpoint_url = Some(server.endpoint.clone());
        config.force_path_style = true;
        config.access_key_id = Some(server.access_key.clone());
        config.secret_access_key = Some(server.secret_key.clone());
        S3Store::new(config)
            .await
            .unwrap()
            .ensure_bucket()
            .await
            .unwrap();
    }
    bucket
}

fn s3_env(
    server: &S3TestServer,
    db: &TestDatabase,
    bucket: &str,
    data: &str,
) -> Vec<(String, String)> {
    pairs(&[
        ("DATA_DIR", data),
        ("DATABASE_URL", db.url()),
        ("S3_BUCKET_NAME", bucket),
        ("S3_ENDPOINT_URL", &server.endpoint),
        ("AWS_ACCESS_KEY_ID", &server.access_key),
        ("AWS_SECRET_ACCESS_KEY", &server.secret_key),
    ])
}

fn run_check(env: &[(String, String)], cwd: &std::path::Path, extra: &[(&str, &str)]) -> Output {
    let mut env = env.to_vec();
    env.extend(pairs(extra));
    command(&env, cwd).arg("check").output().unwrap()
}

/// s3s-fs checks SigV4, so the presigned line proves a real signature; it echoes no SSE, so the
/// encryption line warns (and the run still passes).
#[tokio::test]
async fn s3s_fs_and_postgres_pass_after_migrate() {
    let Some(server) = S3TestServer::s3s() else {
        return;
    };
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let bucket = bucket_on(&server, true).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let env = s3_env(&server, &db, &bucket, data.to_str().unwrap());

    // A fresh database: every migration pending, and the exit status says so.
    let output = run_check(&env, dir.path(), &[]);
    let report = stdout(&output);
    assert!(!output.status.success(), "{report}");
    assert!(
        line(&report, "migrations").starts_with("[FAIL]"),
        "{report}"
    );
    assert!(report.contains("plugs-api migrate"), "{report}");

    let migrate = command(&env, dir.path()).arg("migrate").output().unwrap();
    assert!(migrate.status.success());
    let output = run_check(&env, dir.path(), &[]);
    let report = stdout(&output);
    assert!(
        output.status.success(),
        "{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for name in [
        "database",
        "migrations",
        "credentials",
        "bucket",
        "probe object",
        "presigned URL",
        "probe deleted",
        "clock",
    ] {
        assert!(
            line(&report, name).starts_with("[ ok ]"),
            "{name}: {report}"
        );
    }
    assert!(
        line(&report, "credentials").contains("static keys"),
        "{report}"
    );
    assert!(
        line(&report, "encryption").starts_with("[warn]"),
        "{report}"
    );
    assert!(report.contains("check: all 9 checks passed"), "{report}");

    // The probe is gone: nothing left under events/.
    let mut config = S3Config::new(bucket.clone(), "us-east-1");
    config.endpoint_url = Some(server.endpoint.clone());
    config.force_path_style = true;
    config.access_key_id = Some(server.access_key.clone());
    config.secret_access_key = Some(server.secret_key.clone());
    let store = S3Store::new(config).await.unwrap();
    let left = plugs_storage::ObjectStoreExt::list_all(&store, Some("events/"))
        .await
        .unwrap();
    assert!(left.is_empty(), "{left:?}");
}

/// A bucket that does not exist, and keys s3s-fs refuses: each fails on its line with a fix.
#[tokio::test]
async fn s3s_fs_missing_bucket_and_wrong_secret_fail_with_a_fix() {
    let Some(server) = S3TestServer::s3s() else {
        return;
    };
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let bucket = bucket_on(&server, false).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let env = s3_env(&server, &db, &bucket, data.to_str().unwrap());
    assert!(
        command(&env, dir.path())
            .arg("migrate")
            .output()
            .unwrap()
            .status
            .success()
    );

    let output = run_check(&env, dir.path(), &[]);
    let report = stdout(&output);
    assert!(!output.status.success(), "{report}");
    let bucket_line = line(&report, "bucket");
    assert!(bucket_line.starts_with("[FAIL]"), "{report}");
    assert!(report.contains("aws s3api create-bucket"), "{report}");

    let existing = bucket_on(&server, true).await;
    let output = run_check(
        &env,
        dir.path(),
        &[
            ("S3_BUCKET_NAME", &existing),
            ("AWS_SECRET_ACCESS_KEY", "not-the-secret"),
        ],
    );
    let report = stdout(&output);
    assert!(!output.status.success(), "{report}");
    assert!(line(&report, "bucket").starts_with("[FAIL]"), "{report}");
    assert!(report.contains("fix: check the keys"), "{report}");
}

/// moto echoes the encryption it applied: the line passes for AES256 and for SSE-KMS with a key.
#[tokio::test]
async fn moto_reports_the_configured_encryption() {
    let Some(server) = S3TestServer::moto() else {
        return;
    };
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let bucket = bucket_on(&server, true).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let env = s3_env(&server, &db, &bucket, data.to_str().unwrap());
    assert!(
        command(&env, dir.path())
            .arg("migrate")
            .output()
            .unwrap()
            .status
            .success()
    );

    let output = run_check(&env, dir.path(), &[("S3_SSE", "aes256")]);
    let report = stdout(&output);
    assert!(output.status.success(), "{report}");
    assert_eq!(
        line(&report, "encryption"),
        "[ ok ] encryption: S3 reports AES256",
        "{report}"
    );

    let output = run_check(
        &env,
        dir.path(),
        &[
            ("S3_SSE", "aws:kms"),
            ("S3_SSE_KMS_KEY_ID", "alias/plugs-check"),
        ],
    );
    let report = stdout(&output);
    assert!(output.status.success(), "{report}");
    let encryption = line(&report, "encryption");
    assert!(
        encryption.starts_with("[ ok ] encryption: S3 reports aws:kms"),
        "{report}"
    );
    assert!(encryption.contains("alias/plugs-check"), "{report}");
}

/// The embedded default: nothing to configure, and the lines that do not apply say why.
#[tokio::test]
async fn embedded_default_passes_with_skips() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let env = pairs(&[("DATA_DIR", data.to_str().unwrap())]);
    assert!(
        command(&env, dir.path())
            .arg("migrate")
            .output()
            .unwrap()
            .status
            .success()
    );
    let output = run_check(&env, dir.path(), &[]);
    let report = stdout(&output);
    assert!(
        output.status.success(),
        "{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        line(&report, "probe object").starts_with("[ ok ]"),
        "{report}"
    );
    assert!(
        line(&report, "probe deleted").starts_with("[ ok ]"),
        "{report}"
    );
    assert!(
        line(&report, "credentials").starts_with("[skip]"),
        "{report}"
    );
    assert!(
        line(&report, "encryption").starts_with("[skip]"),
        "{report}"
    );
}
