//! `plugs-api bucket init|show|replicate` on moto, which stores lifecycle, CORS, encryption,
//! public access block, versioning and replication configuration (it applies none of it), so
//! the tests read the configuration back. s3s-fs keeps no bucket configuration. Also: an object
//! in GLACIER reads as `StoreError::Archived` (moto answers `InvalidObjectState` like S3).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod binary;

use std::process::Output;

use aws_sdk_s3::types::{
    AbortIncompleteMultipartUpload, BucketLifecycleConfiguration, ExpirationStatus,
    LifecycleExpiration, LifecycleRule, LifecycleRuleFilter, StorageClass,
};
use binary::{command, pairs};
use plugs_storage::{
    ABORT_RULE_ID, CORS_RULE_ID, ObjectKey, ObjectStore as _, REPLICATION_RULE_ID, S3Config,
    S3Store, STAGING_RULE_ID, StoreError,
};
use plugs_test_support::s3::S3TestServer;

fn stdout(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

async fn store(server: &S3TestServer, bucket: &str) -> S3Store {
    let mut config = S3Config::new(bucket.to_owned(), "us-east-1");
    config.endpoint_url = Some(server.endpoint.clone());
    config.force_path_style = true;
    config.access_key_id = Some(server.access_key.clone());
    config.secret_access_key = Some(server.secret_key.clone());
    S3Store::new(config).await.unwrap()
}

fn env(server: &S3TestServer, bucket: &str, data: &str) -> Vec<(String, String)> {
    pairs(&[
        ("DATA_DIR", data),
        ("S3_BUCKET_NAME", bucket),
        ("S3_ENDPOINT_URL", &server.endpoint),
        ("AWS_ACCESS_KEY_ID", &server.access_key),
        ("AWS_SECRET_ACCESS_KEY", &server.secret_key),
        ("CORS_ALLOWED_ORIGINS", "https://app.example.com"),
    ])
}

fn run(env: &[(String, String)], cwd: &std::path::Path, args: &[&str]) -> Output {
    command(env, cwd).args(args).output().unwrap()
}

#[tokio::test]
async fn init_creates_applies_and_is_idempotent_and_merges_foreign_rules() {
    let Some(server) = S3TestServer::moto() else {
        return;
    };
    let bucket = server.unique_bucket("init");
    let dir = tempfile::tempdir().unwrap();
    let env = env(&server, &bucket, dir.path().join("data").to_str().unwrap());

    let output = run(&env, dir.path(), &["bucket", "init", "--create"]);
    let report = stdout(&output);
    assert!(output.status.success(), "{report}");
    for expected in [
        "default encryption: AES256",
        "block all public access",
        ABORT_RULE_ID,
        STAGING_RULE_ID,
        CORS_RULE_ID,
    ] {
        assert!(report.contains(expected), "{expected}: {report}");
    }

    // Read back what S3 (moto) stores.
    let s3 = store(&server, &bucket).await;
    let state = s3.bucket_state().await.unwrap();
    assert_eq!(state.encryption, Some(("AES256".to_owned(), None)));
    assert_eq!(state.public_access_blocked, Some(true));
    assert!(
        state.lifecycle.iter().any(|l| l.starts_with(ABORT_RULE_ID)
            && l.contains("abort incomplete multipart uploads after 2 d")),
        "{state:?}"
    );
    assert!(
        state
            .lifecycle
            .iter()
            .any(|l| l.starts_with(STAGING_RULE_ID)
                && l.contains("prefix uploads/")
                && l.contains("expire objects after 2 d")),
        "{state:?}"
    );
    assert!(
        state.cors.iter().any(|l| l.starts_with(CORS_RULE_ID)
            && l.contains("https://app.example.com")
            && l.contains("ETag")),
        "{state:?}"
    );

    // A second run changes nothing.
    let output = run(&env, dir.path(), &["bucket", "init"]);
    let report = stdout(&output);
    assert!(output.status.success(), "{report}");
    assert!(report.contains("nothing changed"), "{report}");

    // Someone adds rules of their own: one unrelated (kept), one doing our job (a conflict).
    let mut rules = s3
        .client()
        .get_bucket_lifecycle_configuration()
        .bucket(&bucket)
        .send()
        .await
        .unwrap()
        .rules()
        .to_vec();
    rules.push(
        LifecycleRule::builder()
            .id("logs-expire")
            .status(ExpirationStatus::Enabled)
            .filter(LifecycleRuleFilter::builder().prefix("logs/").build())
            .expiration(LifecycleExpiration::builder().days(30).build())
            .build()
            .unwrap(),
    );
    rules.push(
        LifecycleRule::builder()
            .id("abort-stale-multipart")
            .status(ExpirationStatus::Enabled)
            .filter(LifecycleRuleFilter::builder().prefix("events/").build())
            .abort_incomplete_multipart_upload(
                AbortIncompleteMultipartUpload::builder()
                    .days_after_initiation(7)
                    .build(),
            )
            .build()
            .unwrap(),
    );
    s3.client()
        .put_bucket_lifecycle_configuration()
        .bucket(&bucket)
        .lifecycle_configuration(
            BucketLifecycleConfiguration::builder()
                .set_rules(Some(rules))
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();

    // `show` tells what init would do; init with other days refuses the conflicting rule.
    let output = run(
        &env,
        dir.path(),
        &["bucket", "show", "--abort-multipart-days", "3"],
    );
    let report = stdout(&output);
    assert!(output.status.success(), "{report}");
    assert!(report.contains("logs-expire"), "{report}");
    assert!(report.contains("init would change"), "{report}");
    assert!(report.contains("abort-stale-multipart"), "{report}");
    let output = run(
        &env,
        dir.path(),
        &["bucket", "init", "--abort-multipart-days", "3"],
    );
    let report = stdout(&output);
    assert!(!output.status.success(), "{report}");
    assert!(report.contains("--force"), "{report}");
    let unchanged = s3.bucket_state().await.unwrap();
    assert!(
        unchanged
            .lifecycle
            .iter()
            .any(|l| l.starts_with(ABORT_RULE_ID) && l.contains("after 2 d")),
        "{unchanged:?}"
    );

    let output = run(
        &env,
        dir.path(),
        &["bucket", "init", "--force", "--abort-multipart-days", "3"],
    );
    let report = stdout(&output);
    assert!(output.status.success(), "{report}");
    let state = s3.bucket_state().await.unwrap();
    assert!(
        state.lifecycle.iter().any(|l| l.starts_with("logs-expire")),
        "someone else's unrelated rule is kept: {state:?}"
    );
    assert!(
        !state
            .lifecycle
            .iter()
            .any(|l| l.starts_with("abort-stale-multipart")),
        "{state:?}"
    );
    assert!(
        state
            .lifecycle
            .iter()
            .any(|l| l.starts_with(ABORT_RULE_ID) && l.contains("after 3 d")),
        "{state:?}"
    );
}

#[tokio::test]
async fn replicate_turns_on_versioning_and_writes_the_rule() {
    let Some(server) = S3TestServer::moto() else {
        return;
    };
    let bucket = server.unique_bucket("primary");
    let replica = server.unique_bucket("replica");
    store(&server, &bucket).await.ensure_bucket().await.unwrap();
    store(&server, &replica)
        .await
        .ensure_bucket()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut env = env(&server, &bucket, dir.path().join("data").to_str().unwrap());
    env.extend(pairs(&[
        ("S3_SSE", "aws:kms"),
        (
            "S3_SSE_KMS_KEY_ID",
            "arn:aws:kms:us-east-1:111122223333:key/primary",
        ),
    ]));
    let role = "arn:aws:iam::111122223333:role/plugs-media-replication";
    let args = [
        "bucket",
        "replicate",
        "--to",
        replica.as_str(),
        "--role",
        role,
        "--replica-kms-key-id",
        "arn:aws:kms:eu-west-1:111122223333:key/replica",
    ];
    let output = run(&env, dir.path(), &args);
    let report = stdout(&output);
    assert!(output.status.success(), "{report}");
    assert!(report.contains("versioning enabled"), "{report}");

    let s3 = store(&server, &bucket).await;
    for name in [&bucket, &replica] {
        let versioning = s3.bucket_versioning(name).await.unwrap();
        assert_eq!(versioning.as_deref(), Some("Enabled"), "{name}");
    }
    let config = s3
        .client()
        .get_bucket_replication()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    let config = config.replication_configuration().unwrap();
    assert_eq!(config.role(), role);
    let rule = config
        .rules()
        .iter()
        .find(|r| r.id() == Some(REPLICATION_RULE_ID))
        .unwrap();
    assert_eq!(
        rule.destination().unwrap().bucket(),
        format!("arn:aws:s3:::{replica}")
    );
    // moto keeps the filter but not its prefix (S3 keeps `events/`).
    assert!(
        matches!(
            rule.filter().and_then(|f| f.prefix()),
            Some("events/" | "") | None
        ),
        "{rule:?}"
    );
    assert_eq!(
        rule.destination()
            .and_then(|d| d.encryption_configuration())
            .and_then(|e| e.replica_kms_key_id()),
        Some("arn:aws:kms:eu-west-1:111122223333:key/replica")
    );

    // Again: nothing to do. With another role: refused without --force.
    let output = run(&env, dir.path(), &args);
    let report = stdout(&output);
    assert!(output.status.success(), "{report}");
    assert!(report.contains("nothing changed"), "{report}");
    let other = [
        "bucket",
        "replicate",
        "--to",
        replica.as_str(),
        "--role",
        "arn:aws:iam::111122223333:role/other",
    ];
    let output = run(&env, dir.path(), &other);
    assert!(!output.status.success(), "{}", stdout(&output));
    assert!(stdout(&output).contains("--force"));
}

#[tokio::test]
async fn an_archived_object_reads_as_archived_not_as_a_failure() {
    let Some(server) = S3TestServer::moto() else {
        return;
    };
    let bucket = server.unique_bucket("glacier");
    let s3 = store(&server, &bucket).await;
    s3.ensure_bucket().await.unwrap();
    let key = ObjectKey::parse("events/e/media/2026/01/01/000000_0.jpg").unwrap();
    s3.client()
        .put_object()
        .bucket(&bucket)
        .key(key.as_str())
        .content_type("image/jpeg")
        .storage_class(StorageClass::Glacier)
        .body(aws_sdk_s3::primitives::ByteStream::from_static(
            b"cold bytes",
        ))
        .send()
        .await
        .unwrap();
    let error = s3.get(&key, Default::default()).await.err().unwrap();
    assert!(matches!(error, StoreError::Archived { .. }), "{error:?}");
}
