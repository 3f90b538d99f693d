//! `plugs-api bucket init|show|replicate` on moto, which stores lifecycle, CORS, encryption,
//! public access block, versioning and replication configuration (it applies none of it), so
//! the tests read the configuration back. s3s-fs keeps no bucket configuration. Also: an object
//! in GLACIER reads as `StoreError::Archived` (moto answers `InvalidObjectState` like S3), and
//! the archive rule and the object tags it selects on.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod binary;

use std::process::Output;

use aws_sdk_s3::types::{
    AbortIncompleteMultipartUpload, BucketLifecycleConfiguration, ExpirationStatus,
    LifecycleExpiration, LifecycleRule, LifecycleRuleFilter, StorageClass, TransitionStorageClass,
};
use binary::{command, pairs};
use plugs_storage::{
    ABORT_RULE_ID, ARCHIVE_RULE_ID, CORS_RULE_ID, ORIGINAL_TAG, ObjectKey, ObjectStore as _,
    ObjectStoreExt as _, PutOptions, REPLICATION_RULE_ID, S3Config, S3Store, STAGING_RULE_ID,
    StoreError,
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

/// Automatic archiving: `init --archive-after-days` writes a transition rule for `events/`
/// selecting the originals' tag (read back from moto), is idempotent, refuses a class S3 would
/// refuse, and a later `init` without it removes our rule.
#[tokio::test]
async fn init_archives_tagged_originals_when_asked() {
    let Some(server) = S3TestServer::moto() else {
        return;
    };
    let bucket = server.unique_bucket("archive");
    let dir = tempfile::tempdir().unwrap();
    let env = env(&server, &bucket, dir.path().join("data").to_str().unwrap());
    let archive = [
        "bucket",
        "init",
        "--create",
        "--archive-after-days",
        "90",
        "--archive-storage-class",
        "glacier",
    ];
    let output = run(&env, dir.path(), &archive);
    let report = stdout(&output);
    assert!(output.status.success(), "{report}");
    assert!(
        report.contains(&format!(
            "lifecycle: add {ARCHIVE_RULE_ID} on prefix events/ tagged plugs-media-role=original: move to GLACIER after 90 d"
        )),
        "{report}"
    );

    let s3 = store(&server, &bucket).await;
    let rules = s3
        .client()
        .get_bucket_lifecycle_configuration()
        .bucket(&bucket)
        .send()
        .await
        .unwrap()
        .rules()
        .to_vec();
    let rule = rules
        .iter()
        .find(|r| r.id() == Some(ARCHIVE_RULE_ID))
        .unwrap_or_else(|| panic!("{rules:?}"));
    assert_eq!(rule.status(), &ExpirationStatus::Enabled);
    let transition = &rule.transitions()[0];
    assert_eq!(transition.days(), Some(90));
    assert_eq!(
        transition.storage_class(),
        Some(&TransitionStorageClass::Glacier)
    );
    let filter = rule.filter().and_then(|f| f.and()).expect("an And filter");
    assert_eq!(filter.prefix(), Some("events/"));
    let tags: Vec<(&str, &str)> = filter.tags().iter().map(|t| (t.key(), t.value())).collect();
    assert_eq!(tags, vec![ORIGINAL_TAG]);
    // The other rules are still there.
    assert!(rules.iter().any(|r| r.id() == Some(ABORT_RULE_ID)));

    let output = run(&env, dir.path(), &archive);
    assert!(
        stdout(&output).contains("nothing changed"),
        "{}",
        stdout(&output)
    );
    let output = run(
        &env,
        dir.path(),
        &[
            "bucket",
            "show",
            "--archive-after-days",
            "90",
            "--archive-storage-class",
            "GLACIER",
        ],
    );
    let report = stdout(&output);
    assert!(report.contains("init would change nothing"), "{report}");
    assert!(report.contains(ARCHIVE_RULE_ID), "{report}");

    // S3 refuses STANDARD_IA before 30 days, and knows no such class: refused here first.
    for bad in [
        &[
            "--archive-after-days",
            "10",
            "--archive-storage-class",
            "STANDARD_IA",
        ][..],
        &[
            "--archive-after-days",
            "10",
            "--archive-storage-class",
            "COLD",
        ][..],
        &["--archive-storage-class", "GLACIER"][..],
    ] {
        let mut args = vec!["bucket", "init"];
        args.extend_from_slice(bad);
        let output = run(&env, dir.path(), &args);
        assert!(!output.status.success(), "{bad:?}: {}", stdout(&output));
    }

    // Off again: our rule goes, the others stay.
    let output = run(&env, dir.path(), &["bucket", "init"]);
    let report = stdout(&output);
    assert!(output.status.success(), "{report}");
    assert!(
        report.contains(&format!("remove our old rule {ARCHIVE_RULE_ID}")),
        "{report}"
    );
    let rules = s3
        .client()
        .get_bucket_lifecycle_configuration()
        .bucket(&bucket)
        .send()
        .await
        .unwrap()
        .rules()
        .to_vec();
    assert!(
        rules.iter().all(|r| r.id() != Some(ARCHIVE_RULE_ID)),
        "{rules:?}"
    );
    assert!(rules.iter().any(|r| r.id() == Some(STAGING_RULE_ID)));
}

async fn tags_of(s3: &S3Store, key: &str) -> Vec<(String, String)> {
    let mut tags: Vec<(String, String)> = s3
        .client()
        .get_object_tagging()
        .bucket(s3.bucket())
        .key(key)
        .send()
        .await
        .unwrap()
        .tag_set()
        .iter()
        .map(|t| (t.key().to_owned(), t.value().to_owned()))
        .collect();
    tags.sort();
    tags
}

/// `PutOptions::tags` reach S3 on each way an object is written: one PutObject, a multipart
/// upload (CreateMultipartUpload), and a copy that replaces them (CopyObject with
/// `x-amz-tagging-directive: REPLACE`); values are URL-encoded. Read back from moto.
#[tokio::test]
async fn writes_carry_their_tags() {
    let Some(server) = S3TestServer::moto() else {
        return;
    };
    let bucket = server.unique_bucket("tags");
    let s3 = store(&server, &bucket).await;
    s3.ensure_bucket().await.unwrap();
    let mut options = PutOptions::with_content_type("image/png");
    options
        .tags
        .insert(ORIGINAL_TAG.0.to_owned(), ORIGINAL_TAG.1.to_owned());
    options
        .tags
        .insert("note".to_owned(), "a=b c/d:e+f".to_owned());
    let expected = vec![
        ("note".to_owned(), "a=b c/d:e+f".to_owned()),
        (ORIGINAL_TAG.0.to_owned(), ORIGINAL_TAG.1.to_owned()),
    ];

    let small = ObjectKey::parse("events/e/media/2026/01/01/000000_1.png").unwrap();
    s3.put_bytes(
        &small,
        bytes::Bytes::from_static(b"tagged"),
        options.clone(),
    )
    .await
    .unwrap();
    assert_eq!(tags_of(&s3, small.as_str()).await, expected);

    // Larger than a part, streamed without a declared size: a multipart upload.
    let large = ObjectKey::parse("events/e/media/2026/01/01/000000_2.png").unwrap();
    let chunks: Vec<Result<bytes::Bytes, StoreError>> = (0..10)
        .map(|_| Ok(bytes::Bytes::from(vec![7u8; 1024 * 1024])))
        .collect();
    s3.put(
        &large,
        Box::pin(futures::stream::iter(chunks)),
        options.clone(),
    )
    .await
    .unwrap();
    assert_eq!(tags_of(&s3, large.as_str()).await, expected);

    // A copy with other tags replaces them; the plain copy keeps the source's.
    let copied = ObjectKey::parse("events/e/media/2026/01/01/000000_3.png").unwrap();
    let mut other = PutOptions::with_content_type("image/png");
    other.tags.insert("kind".to_owned(), "moved".to_owned());
    s3.copy_with(&small, &copied, other).await.unwrap();
    assert_eq!(
        tags_of(&s3, copied.as_str()).await,
        vec![("kind".to_owned(), "moved".to_owned())]
    );
    let plain = ObjectKey::parse("events/e/media/2026/01/01/000000_4.png").unwrap();
    s3.copy(&small, &plain).await.unwrap();
    assert_eq!(tags_of(&s3, plain.as_str()).await, expected);
}

/// An original uploaded through the API (PostgreSQL, moto) carries the tag the archive rule
/// selects.
#[tokio::test]
async fn uploaded_originals_are_tagged() {
    let Some(server) = S3TestServer::moto() else {
        return;
    };
    let Some(db) = plugs_test_support::pg::TestDatabase::create() else {
        return;
    };
    let bucket = server.unique_bucket("original");
    let s3 = store(&server, &bucket).await;
    s3.ensure_bucket().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut env = env(&server, &bucket, dir.path().join("data").to_str().unwrap());
    env.push(("DATABASE_URL".to_owned(), db.url().to_owned()));
    let api = binary::Server::start(&env, dir.path());
    let token = api.token("alice");
    let client = reqwest::Client::new();
    let event: serde_json::Value = client
        .post(api.url("/api/v1/events"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"title": "Tagged"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let png = b"\x89\x50\x4e\x47\x0d\x0a\x1a\x0a\x00\x00\x00\x0d\x49\x48\x44\x52\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00\x90\x77\x53\xde\x00\x00\x00\x0c\x49\x44\x41\x54\x78\x9c\x63\xf8\xcf\xc0\x00\x00\x03\x01\x01\x00\xc9\xfe\x92\xef\x00\x00\x00\x00\x49\x45\x4e\x44\xae\x42\x60\x82";
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(png.to_vec())
            .file_name("dot.png")
            .mime_str("image/png")
            .unwrap(),
    );
    let response = client
        .post(api.url(&format!(
            "/api/v1/events/{}/media",
            event["id"].as_str().unwrap()
        )))
        .bearer_auth(&token)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::CREATED);
    let media: serde_json::Value = response.json().await.unwrap();
    assert_eq!(
        tags_of(&s3, media["s3_key"].as_str().unwrap()).await,
        vec![(ORIGINAL_TAG.0.to_owned(), ORIGINAL_TAG.1.to_owned())]
    );
}
