//! The conformance suite on `S3Store` against moto (lists multipart uploads, echoes encryption).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytes::Bytes;
use plugs_storage::conformance::Fixture;
use plugs_storage::{ObjectKey, ObjectStore, ObjectStoreExt, PutOptions, ServerSideEncryption};
use plugs_test_support::s3::S3TestServer;

async fn setup() -> Option<Fixture> {
    common::fixture(S3TestServer::moto()).await
}

plugs_storage::conformance_tests!(setup);

#[tokio::test]
async fn encryption_asked_for_is_applied_to_puts_multipart_uploads_and_copies() {
    let Some(server) = S3TestServer::moto() else {
        return;
    };
    let store = common::store(&server, "sse").await;
    let small = ObjectKey::parse("sse/small").unwrap();
    let mut options = PutOptions::default();
    options.encryption = ServerSideEncryption::Kms {
        key_id: Some("alias/plugs".into()),
    };
    store
        .put_bytes(&small, Bytes::from_static(b"secret"), options)
        .await
        .unwrap();
    let large = ObjectKey::parse("sse/large").unwrap();
    let body = Bytes::from(vec![9u8; common::PART_SIZE + 10]);
    // PutOptions::default() asks for AES256.
    store
        .put_bytes(&large, body, PutOptions::default())
        .await
        .unwrap();
    let copied = ObjectKey::parse("sse/copied").unwrap();
    store.copy(&small, &copied).await.unwrap();
    for (key, expected) in [
        (&small, "aws:kms"),
        (&large, "AES256"),
        (&copied, "aws:kms"),
    ] {
        let head = store
            .client()
            .head_object()
            .bucket(store.bucket())
            .key(key.as_str())
            .send()
            .await
            .unwrap();
        assert_eq!(
            head.server_side_encryption().map(|sse| sse.as_str()),
            Some(expected),
            "{key}"
        );
    }
}

#[tokio::test]
async fn pending_multipart_uploads_are_listed_until_aborted() {
    // The suite relies on this probe to prove aborted puts leave nothing: check it sees uploads.
    let Some(server) = S3TestServer::moto() else {
        return;
    };
    let store = common::store(&server, "pending").await;
    let created = store
        .client()
        .create_multipart_upload()
        .bucket(store.bucket())
        .key("pending/a")
        .send()
        .await
        .unwrap();
    let pending = store.list_multipart_uploads("pending/").await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(
        (pending[0].key.as_str(), pending[0].upload_id.as_str()),
        ("pending/a", created.upload_id().unwrap())
    );
    assert!(
        store
            .list_multipart_uploads("other/")
            .await
            .unwrap()
            .is_empty()
    );
    store.abort_multipart_upload(&pending[0]).await.unwrap();
    assert!(
        store
            .list_multipart_uploads("pending/")
            .await
            .unwrap()
            .is_empty()
    );
}
