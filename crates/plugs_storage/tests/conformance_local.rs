//! The conformance suite on the local-directory store, plus what only the local store promises
//! (no temp files left, racing creates, reopening).
//!
//! Its presigned URLs are served by the API binary's `/api/v1/objects/{key}` route, not by the
//! store: the presigned cases skip here and run, with the whole suite, through that real route in
//! `bin/plugs-api/tests/local_objects.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use bytes::Bytes;
use chrono::Utc;
use futures::StreamExt;
use plugs_storage::conformance::{Capabilities, Fixture, Leftovers};
use plugs_storage::{
    LocalFsConfig, LocalFsStore, ObjectKey, ObjectStore, ObjectStoreExt, PutOptions, StoreError,
};

fn new_store() -> (Arc<LocalFsStore>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let config = LocalFsConfig {
        root: dir.path().to_owned(),
        // Nothing serves these URLs here (see the module doc).
        base_url: "http://127.0.0.1:9/api/v1/objects".to_owned(),
        signing_key: b"test signing key".to_vec(),
    };
    (Arc::new(LocalFsStore::new(config).unwrap()), dir)
}

async fn setup() -> Option<Fixture> {
    let (store, dir) = new_store();
    let mut capabilities = Capabilities::new("local (no HTTP server)");
    capabilities.leftovers = Some(Leftovers::local_temp_files(dir.path().to_owned()));
    Some(Fixture {
        store,
        capabilities,
        guard: Some(Box::new(dir)),
    })
}

plugs_storage::conformance_tests!(setup);

fn entries(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect()
}

#[tokio::test]
async fn objects_and_sidecars_live_where_documented_and_etag_is_md5() {
    let (store, dir) = new_store();
    let key = ObjectKey::parse("events/1/media/a.txt").unwrap();
    let put = store
        .put_bytes(
            &key,
            Bytes::from_static(b"hello"),
            PutOptions::with_content_type("text/plain"),
        )
        .await
        .unwrap();
    // MD5("hello")
    assert_eq!(put.etag, "\"5d41402abc4b2a76b9719d911017c592\"");
    assert_eq!(
        std::fs::read(dir.path().join("objects/events/1/media/a.txt")).unwrap(),
        b"hello"
    );
    let sidecar: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("meta/events/1/media/a.txt")).unwrap(),
    )
    .unwrap();
    assert_eq!(sidecar["content_type"], "text/plain");
    assert_eq!(sidecar["encryption"], "AES256");
    assert!(entries(&dir.path().join("tmp")).is_empty());
    store.delete(&key).await.unwrap();
    // Empty directories go with the last object in them.
    assert!(entries(&dir.path().join("objects")).is_empty());
    assert!(entries(&dir.path().join("meta")).is_empty());
}

#[tokio::test]
async fn failed_and_dropped_uploads_leave_no_temp_file() {
    let (store, dir) = new_store();
    let key = ObjectKey::parse("a/b").unwrap();
    let body = futures::stream::iter([
        Ok(Bytes::from_static(b"part")),
        Err(StoreError::Body {
            source: "gone".into(),
        }),
    ]);
    assert!(
        store
            .put(&key, body.boxed(), PutOptions::default())
            .await
            .is_err()
    );
    assert!(entries(&dir.path().join("tmp")).is_empty());

    // A body that sends a chunk, says so, then hangs like a client that stopped sending.
    let (reached_tx, reached_rx) = tokio::sync::oneshot::channel::<()>();
    let mut reached_tx = Some(reached_tx);
    let hang = futures::stream::poll_fn(move |_| {
        if let Some(tx) = reached_tx.take() {
            tx.send(()).unwrap();
        }
        std::task::Poll::Pending
    });
    let body = futures::stream::once(async { Ok(Bytes::from_static(b"part")) }).chain(hang);
    // Boxed, not pinned on the stack, so that drop() below really drops the put.
    let mut put = Box::pin(store.put(&key, body.boxed(), PutOptions::default()));
    tokio::select! {
        _ = put.as_mut() => panic!("a put whose body never ends finished"),
        _ = reached_rx => {}
    }
    assert_eq!(
        entries(&dir.path().join("tmp")).len(),
        1,
        "the upload in progress has its temp file"
    );
    drop(put);
    assert!(entries(&dir.path().join("tmp")).is_empty());
    assert!(!store.exists(&key).await.unwrap());
}

#[tokio::test]
async fn racing_create_only_puts_have_exactly_one_winner() {
    let (store, _dir) = new_store();
    let key = ObjectKey::parse("race/one").unwrap();
    let mut tasks = Vec::new();
    for index in 0..8u8 {
        let (store, key) = (Arc::clone(&store), key.clone());
        tasks.push(tokio::spawn(async move {
            let mut options = PutOptions::default();
            options.create_only = true;
            store
                .put_bytes(&key, Bytes::from(vec![index; 1000]), options)
                .await
                .map(|_| index)
        }));
    }
    let mut winners = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            Ok(index) => winners.push(index),
            Err(StoreError::PreconditionFailed { .. }) => {}
            Err(other) => panic!("{other:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    assert_eq!(
        store.get_bytes(&key).await.unwrap(),
        Bytes::from(vec![winners[0]; 1000])
    );
}

#[tokio::test]
async fn a_store_reopened_on_the_same_root_sees_the_objects() {
    let (store, dir) = new_store();
    let key = ObjectKey::parse("persist/x").unwrap();
    store
        .put_bytes(&key, Bytes::from_static(b"kept"), PutOptions::default())
        .await
        .unwrap();
    let config = LocalFsConfig {
        root: dir.path().to_owned(),
        base_url: "http://x".into(),
        signing_key: vec![1],
    };
    let reopened = LocalFsStore::new(config).unwrap();
    assert_eq!(
        reopened.get_bytes(&key).await.unwrap(),
        Bytes::from_static(b"kept")
    );
    let debug = format!(
        "{:?}",
        LocalFsConfig {
            root: "/r".into(),
            base_url: "u".into(),
            signing_key: b"topsecret".to_vec()
        }
    );
    assert!(
        !debug.contains("topsecret") && !debug.contains("116, 111"),
        "{debug}"
    );
}

#[tokio::test]
async fn a_sweep_spares_the_temp_file_of_a_put_in_progress() {
    let (store, dir) = new_store();
    let key = ObjectKey::parse("slow/upload.bin").unwrap();
    let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
    let body = futures::stream::once(async { Ok(Bytes::from_static(b"first half, ")) })
        .chain(futures::stream::once(async move {
            release_rx.await.unwrap();
            Ok(Bytes::from_static(b"second half"))
        }))
        .boxed();
    let put = tokio::spawn({
        let (store, key) = (Arc::clone(&store), key.clone());
        async move { store.put(&key, body, PutOptions::default()).await }
    });
    let tmp = dir.path().join("tmp");
    while entries(&tmp).is_empty() {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    // A grace of an hour: the file being written is younger, so it stays.
    let report = store
        .sweep(Utc::now() - chrono::Duration::hours(1), false)
        .await
        .unwrap();
    assert_eq!(report.temp_files.found, 0, "{report:?}");
    release_tx.send(()).unwrap();
    assert_eq!(put.await.unwrap().unwrap().size, 23);
    assert_eq!(
        store.get_bytes(&key).await.unwrap(),
        Bytes::from_static(b"first half, second half")
    );
    assert!(entries(&tmp).is_empty());
}
