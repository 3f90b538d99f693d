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

/// Parts and small objects sent with an unsigned payload (`PayloadSigning::Unsigned`, what
/// `Auto` does over HTTPS) are accepted by a server that verifies signatures and checksums, and
/// read back byte for byte; the store says which it does.
#[tokio::test]
async fn unsigned_payloads_are_accepted_and_intact() {
    use futures::StreamExt as _;
    use plugs_storage::{GetOptions, PayloadSigning};

    let Some(server) = S3TestServer::s3s() else {
        return;
    };
    let signed = common::store(&server, "unsigned").await;
    assert!(signed.signs_payload(), "Auto signs over plain HTTP");
    let mut config = common::config(&server, signed.bucket());
    config.payload_signing = PayloadSigning::Unsigned;
    let part_size = config.part_size;
    let store = S3Store::new(config).await.unwrap();
    assert!(!store.signs_payload());
    for (name, len) in [("small", 1000), ("multipart", 2 * part_size + 123)] {
        let bytes: Vec<u8> = (0..len).map(|i| (i * 7 % 256) as u8).collect();
        let key = ObjectKey::parse(name).unwrap();
        // No declared size: buffered in memory, so a PutObject or parts (the signed kinds).
        let chunks: Vec<Result<Bytes, StoreError>> = bytes
            .chunks(64 * 1024)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let put = store
            .put(
                &key,
                Box::pin(futures::stream::iter(chunks)),
                PutOptions::default(),
            )
            .await
            .unwrap();
        assert_eq!(put.size, len as u64, "{name}");
        let mut body = store.get(&key, GetOptions::default()).await.unwrap().body;
        let mut read = Vec::new();
        while let Some(chunk) = body.next().await {
            read.extend_from_slice(&chunk.unwrap());
        }
        assert!(read == bytes, "{name}: the bytes read back differ");
    }
}

#[test]
fn payload_signing_follows_the_scheme_unless_told() {
    use plugs_storage::PayloadSigning;
    let auto = PayloadSigning::Auto;
    assert!(!auto.signs(None), "AWS is HTTPS");
    assert!(!auto.signs(Some("https://minio.internal:9000")));
    assert!(!auto.signs(Some("HTTPS://minio.internal")));
    assert!(auto.signs(Some("http://127.0.0.1:9000")));
    assert!(PayloadSigning::Signed.signs(None));
    assert!(!PayloadSigning::Unsigned.signs(Some("http://127.0.0.1:9000")));
}
