//! The conformance suite on the local-directory store, with a small HTTP server standing in for
//! the API's presigned-URL route, plus what only the local store promises (no temp files left).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use plugs_storage::conformance::{Capabilities, Fixture};
use plugs_storage::{
    LocalFsConfig, LocalFsStore, ObjectKey, ObjectStore, ObjectStoreExt, PresignMethod, PutOptions,
    StoreError,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            out.push(u8::from_str_radix(&text[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// Answers one HTTP/1.1 request for a presigned URL: verify, then serve GET or take PUT.
async fn serve_one(store: Arc<LocalFsStore>, stream: tokio::net::TcpStream) {
    let mut reader = BufReader::new(stream);
    let mut request_line = String::new();
    reader.read_line(&mut request_line).await.unwrap();
    let mut content_length = 0usize;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).await.unwrap();
        if header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            content_length = value.trim().parse().unwrap();
        }
    }
    let mut body = vec![0u8; content_length];
    reader.read_exact(&mut body).await.unwrap();
    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next().unwrap(), parts.next().unwrap());
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let key = ObjectKey::parse(percent_decode(path.trim_start_matches("/objects/"))).unwrap();
    let param = |name: &str| {
        query
            .split('&')
            .find_map(|pair| {
                pair.strip_prefix(name)
                    .and_then(|rest| rest.strip_prefix('='))
            })
            .unwrap_or("")
    };
    let presign_method = if method == "PUT" {
        PresignMethod::Put
    } else {
        PresignMethod::Get
    };
    let verified = param("method") == method
        && store
            .verify_presigned(
                presign_method,
                &key,
                param("expires").parse().unwrap_or(0),
                param("signature"),
            )
            .is_ok();
    let (status, payload) = if !verified {
        ("403 Forbidden", Bytes::from_static(b"denied"))
    } else if method == "PUT" {
        store
            .put_bytes(&key, body.into(), PutOptions::default())
            .await
            .unwrap();
        ("200 OK", Bytes::new())
    } else {
        ("200 OK", store.get_bytes(&key).await.unwrap())
    };
    let mut stream = reader.into_inner();
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        payload.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&payload).await.unwrap();
    stream.shutdown().await.unwrap();
}

async fn new_store() -> (Arc<LocalFsStore>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base_url = format!("http://{}/objects", listener.local_addr().unwrap());
    let config = LocalFsConfig {
        root: dir.path().to_owned(),
        base_url,
        signing_key: b"test signing key".to_vec(),
    };
    let store = Arc::new(LocalFsStore::new(config).unwrap());
    let served = Arc::clone(&store);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve_one(Arc::clone(&served), stream));
        }
    });
    (store, dir)
}

async fn setup() -> Option<Fixture> {
    let (store, dir) = new_store().await;
    let mut capabilities = Capabilities::new("local");
    capabilities.serves_presigned_urls = true;
    capabilities.verifies_presign = true;
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
    let (store, dir) = new_store().await;
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
    let (store, dir) = new_store().await;
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
    let (store, _dir) = new_store().await;
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
    let (store, dir) = new_store().await;
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
