//! The conformance suite on `S3Store` against s3s-fs (verifies signatures and checksums), plus
//! what only a signature-checking server can show.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytes::Bytes;
use plugs_storage::conformance::Fixture;
use plugs_storage::{ObjectKey, ObjectStore, ObjectStoreExt, PutOptions, S3Store, StoreError};
use plugs_test_support::s3::S3TestServer;

async fn setup() -> Option<Fixture> {
    common::fixture(S3TestServer::s3s()).await
}

plugs_storage::conformance_tests!(setup);

#[tokio::test]
async fn a_wrong_secret_is_invalid_credentials() {
    let Some(server) = S3TestServer::s3s() else {
        return;
    };
    let good = common::store(&server, "credentials").await;
    let mut config = common::config(&server, good.bucket());
    config.secret_access_key = Some("not-the-secret".into());
    config.max_attempts = 1;
    let bad = S3Store::new(config).await.unwrap();
    let key = ObjectKey::parse("a").unwrap();
    match bad
        .put_bytes(&key, Bytes::from_static(b"x"), PutOptions::default())
        .await
    {
        Err(StoreError::InvalidCredentials { .. }) => {}
        other => panic!("expected InvalidCredentials, got {other:?}"),
    }
    assert!(matches!(
        bad.head(&key).await,
        Err(StoreError::InvalidCredentials { .. } | StoreError::AccessDenied { .. })
    ));
}

#[tokio::test]
async fn an_unreachable_endpoint_is_unavailable() {
    let Some(server) = S3TestServer::s3s() else {
        return;
    };
    let mut config = common::config(&server, "nowhere");
    // A port nothing listens on: connection refused.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    config.endpoint_url = Some(format!("http://{}", listener.local_addr().unwrap()));
    drop(listener);
    config.max_attempts = 1;
    let store = S3Store::new(config).await.unwrap();
    let error = store
        .head(&ObjectKey::parse("a").unwrap())
        .await
        .unwrap_err();
    assert!(error.is_transient(), "{error:?}");
}
