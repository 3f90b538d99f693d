//! The part budget of `S3Store`'s multipart writer (`S3Config::part_budget`) on s3s-fs: many
//! uploads at once, each of several parts and of no declared length, all finish with their
//! bytes while their part buffers together never hold more than the budget; and an upload
//! whose client stops sending, holding the whole budget, delays another upload by the bounded
//! wait only.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{StreamExt as _, TryStreamExt as _};
use plugs_storage::{
    ByteStream, MemoryBudget, ObjectKey, ObjectStore as _, ObjectStoreExt as _, PutOptions, S3Store,
};
use plugs_test_support::s3::S3TestServer;

const PART: usize = common::PART_SIZE;

/// Bytes that differ from their neighbours and between uploads.
fn pattern(len: usize, salt: u8) -> Bytes {
    (0..len)
        .map(|i| (i % 251) as u8 ^ (i / 251) as u8 ^ salt)
        .collect::<Vec<u8>>()
        .into()
}

/// `bytes` as a client sends them: 64 KiB chunks, length not declared.
fn chunked(bytes: &Bytes) -> ByteStream {
    let bytes = bytes.clone();
    let chunks: Vec<_> = (0..bytes.len())
        .step_by(64 * 1024)
        .map(|start| Ok(bytes.slice(start..(start + 64 * 1024).min(bytes.len()))))
        .collect();
    futures::stream::iter(chunks).boxed()
}

async fn budgeted_store(server: &S3TestServer, budget: &MemoryBudget, wait: Duration) -> S3Store {
    let mut config = common::config(server, &server.unique_bucket("part-budget"));
    config.part_budget = Some(budget.clone());
    config.part_budget_wait = wait;
    let store = S3Store::new(config).await.unwrap();
    store.ensure_bucket().await.unwrap();
    store
}

/// The most `budget` held, sampled every millisecond until `stop`.
fn sample(budget: &MemoryBudget, stop: &Arc<AtomicBool>) -> tokio::task::JoinHandle<u64> {
    let (budget, stop) = (budget.clone(), Arc::clone(stop));
    tokio::spawn(async move {
        let mut most = 0;
        while !stop.load(Ordering::Relaxed) {
            most = most.max(budget.in_use());
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        most
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3s_fs_many_uploads_share_the_part_budget_and_all_finish() {
    let Some(server) = S3TestServer::s3s() else {
        return;
    };
    // Two parts' worth for eight uploads that would each hold three (one filling, two sent).
    let budget = MemoryBudget::new(2 * PART as u64);
    // Long enough that no upload goes beyond the budget: here every holder makes progress.
    let store = budgeted_store(&server, &budget, Duration::from_secs(120)).await;
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sample(&budget, &stop);
    let uploads = (0..8u8).map(|n| {
        let store = store.clone();
        async move {
            let key = ObjectKey::parse(format!("budget/{n}.bin")).unwrap();
            let body = pattern(2 * PART + PART / 2 + usize::from(n), n);
            store
                .put(&key, chunked(&body), PutOptions::default())
                .await
                .unwrap();
            (key, body)
        }
    });
    let written =
        tokio::time::timeout(Duration::from_secs(300), futures::future::join_all(uploads))
            .await
            .expect("uploads sharing the part budget stopped making progress");
    stop.store(true, Ordering::Relaxed);
    let sampled = sampler.await.unwrap();
    for (key, body) in written {
        let stored: Vec<Bytes> = store
            .get(&key, Default::default())
            .await
            .unwrap()
            .body
            .try_collect()
            .await
            .unwrap();
        assert!(stored.concat() == body, "{key}: the bytes sent");
    }
    assert_eq!(budget.overdrawn(), 0, "nothing taken beyond the budget");
    assert!(
        sampled <= budget.capacity() && budget.peak() <= budget.capacity(),
        "part buffers never held more than the budget: sampled {sampled}, {budget:?}"
    );
    assert_eq!(
        budget.peak(),
        budget.capacity(),
        "the uploads contended for the budget"
    );
    assert_eq!(budget.in_use(), 0, "every share given back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3s_fs_an_upload_stalled_on_the_whole_budget_delays_others_by_the_wait_only() {
    let Some(server) = S3TestServer::s3s() else {
        return;
    };
    let budget = MemoryBudget::new(PART as u64);
    let wait = Duration::from_millis(500);
    let store = budgeted_store(&server, &budget, wait).await;

    // A client that sends 1 MiB and then nothing until told: its part buffer holds the budget.
    let stalled_body = pattern(2 * PART, 1);
    let (sender, receiver) = futures::channel::mpsc::unbounded::<plugs_storage::Result<Bytes>>();
    sender
        .unbounded_send(Ok(stalled_body.slice(..1024 * 1024)))
        .unwrap();
    let stalled_key = ObjectKey::parse("budget/stalled.bin").unwrap();
    let stalled = tokio::spawn({
        let (store, key) = (store.clone(), stalled_key.clone());
        async move {
            store
                .put(&key, receiver.boxed(), PutOptions::default())
                .await
        }
    });
    let started = Instant::now();
    while budget.in_use() < budget.capacity() {
        assert!(started.elapsed() < Duration::from_secs(30), "{budget:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // Another upload of two parts and a bit: it waits for the budget for `wait`, then goes on
    // beyond it, and finishes while the stalled one still holds its share.
    let stop = Arc::new(AtomicBool::new(false));
    let overdrawn = Arc::new(AtomicU64::new(0));
    let watcher = tokio::spawn({
        let (budget, stop, overdrawn) = (budget.clone(), Arc::clone(&stop), Arc::clone(&overdrawn));
        async move {
            while !stop.load(Ordering::Relaxed) {
                overdrawn.fetch_max(budget.overdrawn(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    });
    let key = ObjectKey::parse("budget/other.bin").unwrap();
    let body = pattern(2 * PART + 7, 2);
    let started = Instant::now();
    tokio::time::timeout(
        Duration::from_secs(60),
        store.put(&key, chunked(&body), PutOptions::default()),
    )
    .await
    .expect("an upload waited for a budget that a stalled client holds")
    .unwrap();
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    watcher.await.unwrap();
    assert!(took >= wait, "it waited in line first: {took:?}");
    assert_eq!(
        overdrawn.load(Ordering::Relaxed),
        PART as u64,
        "one part's buffer beyond the budget, no more"
    );
    assert_eq!(store.get_bytes(&key).await.unwrap(), body);
    assert_eq!(
        budget.in_use(),
        budget.capacity(),
        "the overdraft was given back; the stalled upload still holds its share"
    );

    // The stalled client sends the rest: its upload finishes too, and the budget is whole.
    sender
        .unbounded_send(Ok(stalled_body.slice(1024 * 1024..)))
        .unwrap();
    drop(sender);
    stalled.await.unwrap().unwrap();
    assert_eq!(store.get_bytes(&stalled_key).await.unwrap(), stalled_body);
    assert_eq!((budget.in_use(), budget.overdrawn()), (0, 0));
}
