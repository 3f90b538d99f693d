//! `ReadAhead` over real stores: for objects and ranges of many sizes, the bytes, the range and
//! the metadata are exactly those of a plain GET, on the in-memory store and on `S3Store`
//! against s3s-fs; a range that fails ends the stream with the error; readers that stop reading
//! while holding the whole memory budget stall no other download, and give it all back when
//! dropped.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// Options are built the only way a caller outside the crate can (they are non_exhaustive).
#![allow(clippy::field_reassign_with_default)]

mod common;

use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt as _, TryStreamExt as _};
use plugs_storage::{
    ByteRange, FaultyStore, GetOptions, GetResult, MIN_READ_AHEAD_RANGE, MemoryBudget, MemoryStore,
    ObjectKey, ObjectStore, ObjectStoreExt as _, Operation, PutOptions, ReadAhead, StoreError,
};
use plugs_test_support::s3::S3TestServer;

/// xorshift64*: reproducible sizes and ranges; the seed is in every failure message.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, bound: u64) -> u64 {
        if bound == 0 { 0 } else { self.next() % bound }
    }
}

fn pattern(len: usize, salt: u8) -> Bytes {
    (0..len)
        .map(|i| (i % 253) as u8 ^ (i / 253) as u8 ^ salt)
        .collect::<Vec<u8>>()
        .into()
}

async fn bytes_of(result: GetResult) -> Result<Vec<u8>, StoreError> {
    let chunks: Vec<Bytes> = result.body.try_collect().await?;
    Ok(chunks.concat())
}

/// Objects of random sizes around the read-ahead threshold and well past it, each read whole
/// and in random ranges, through `ReadAhead` and through a plain GET: the same answer.
async fn same_bytes_as_a_plain_get(store: Arc<dyn ObjectStore>, seed: u64) {
    let mut random = Random(seed);
    let range = MIN_READ_AHEAD_RANGE;
    let read_ahead = ReadAhead::new(range, 3).with_budget(MemoryBudget::new(8 * range));
    for object in 0..4u8 {
        // 0 to about 7.5 ranges: below, at and past the two-range threshold.
        let size = random.below(range * 15 / 2) + u64::from(object == 0) * 3 * range;
        let key = ObjectKey::parse(format!("readahead/{seed}/{object}.bin")).unwrap();
        let body = pattern(usize::try_from(size).unwrap(), object);
        store
            .put_bytes(&key, body.clone(), PutOptions::default())
            .await
            .unwrap();
        for case in 0..6 {
            let asked = match case {
                0 => None,
                1 => Some(ByteRange::From {
                    start: random.below(size.max(1)),
                }),
                2 => Some(ByteRange::Suffix {
                    len: 1 + random.below(size.max(1)),
                }),
                _ => {
                    let start = random.below(size.max(1));
                    Some(ByteRange::Bounded {
                        start,
                        end: start + 1 + random.below(size - start.min(size) + range),
                    })
                }
            };
            let context = format!("seed {seed}, object of {size} bytes, range {asked:?}");
            let mut options = GetOptions::default();
            options.range = asked;
            let plain = store.get(&key, options.clone()).await;
            let ahead = read_ahead.get(&store, &key, options, size).await;
            match (plain, ahead) {
                (Ok(plain), Ok(ahead)) => {
                    assert_eq!(ahead.range, plain.range, "{context}");
                    assert_eq!(ahead.meta.size, plain.meta.size, "{context}");
                    assert_eq!(ahead.meta.etag, plain.meta.etag, "{context}");
                    let expected = &body[plain.range.start as usize..plain.range.end as usize];
                    assert!(
                        bytes_of(plain).await.unwrap() == expected,
                        "{context}: plain"
                    );
                    assert!(
                        bytes_of(ahead).await.unwrap() == expected,
                        "{context}: read ahead"
                    );
                }
                (Err(plain), Err(ahead)) => {
                    assert_eq!(
                        std::mem::discriminant(&plain),
                        std::mem::discriminant(&ahead),
                        "{context}: {plain:?} / {ahead:?}"
                    );
                }
                (plain, ahead) => panic!(
                    "{context}: a plain GET gave {:?}, read-ahead {:?}",
                    plain.map(|r| r.range),
                    ahead.map(|r| r.range)
                ),
            }
        }
    }
}

/// A range that fails mid-transfer ends the stream with the store's error, after exactly the
/// bytes before it.
async fn a_failing_range_ends_the_stream(inner: Arc<dyn ObjectStore>) {
    let range = MIN_READ_AHEAD_RANGE;
    let key = ObjectKey::parse("readahead/failing.bin").unwrap();
    let body = pattern(usize::try_from(6 * range).unwrap(), 9);
    inner
        .put_bytes(&key, body.clone(), PutOptions::default())
        .await
        .unwrap();
    let faulty = Arc::new(FaultyStore::new(inner));
    let store: Arc<dyn ObjectStore> = faulty.clone();
    // The first range, then the second and third together, then the fourth: it fails.
    faulty.fail_nth(Operation::Get, 4);
    let result = ReadAhead::new(range, 2)
        .get(&store, &key, GetOptions::default(), body.len() as u64)
        .await
        .unwrap();
    let mut stream = result.body;
    let mut delivered = Vec::new();
    let error = loop {
        match stream.next().await {
            Some(Ok(chunk)) => delivered.extend_from_slice(&chunk),
            Some(Err(error)) => break error,
            None => panic!("the stream ended without the store's error"),
        }
    };
    assert!(error.is_transient(), "{error:?}");
    assert!(delivered == body[..usize::try_from(3 * range).unwrap()]);
    assert!(stream.next().await.is_none(), "nothing after the error");
}

/// Readers that stop reading hold every byte of the budget; another download of a large object
/// still completes, at once, as one plain GET; nothing ever holds more than the budget; and the
/// stalled readers, dropped, give everything back.
async fn stalled_readers_do_not_stall_other_downloads(inner: Arc<dyn ObjectStore>) {
    let range = MIN_READ_AHEAD_RANGE;
    let key = ObjectKey::parse("readahead/stalled.bin").unwrap();
    let body = pattern(usize::try_from(8 * range + 5).unwrap(), 3);
    inner
        .put_bytes(&key, body.clone(), PutOptions::default())
        .await
        .unwrap();
    let faulty = Arc::new(FaultyStore::new(inner));
    let store: Arc<dyn ObjectStore> = faulty.clone();
    // Each transfer fetches three ranges ahead; the budget holds five.
    let budget = MemoryBudget::new(5 * range);
    let read_ahead = ReadAhead::new(range, 3).with_budget(budget.clone());
    let size = body.len() as u64;

    // Three readers take a chunk each and stop reading: the first holds three ranges' worth
    // (what it fetches ahead), the second the two left, the third none (a plain GET).
    let mut stalled = Vec::new();
    for _ in 0..3 {
        let mut stream = read_ahead
            .get(&store, &key, GetOptions::default(), size)
            .await
            .unwrap()
            .body;
        let first = stream.next().await.unwrap().unwrap();
        assert!(body.starts_with(&first));
        stalled.push(stream);
    }
    assert_eq!(
        budget.in_use(),
        budget.capacity(),
        "the stalled readers hold the whole budget"
    );

    let gets_before = faulty.calls(Operation::Get);
    let download = async {
        let result = read_ahead
            .get(&store, &key, GetOptions::default(), size)
            .await?;
        bytes_of(result).await
    };
    let bytes = tokio::time::timeout(std::time::Duration::from_secs(60), download)
        .await
        .expect("a download waited for budget that stalled readers hold")
        .unwrap();
    assert!(bytes == body, "the other download's bytes");
    assert_eq!(
        faulty.calls(Operation::Get) - gets_before,
        1,
        "with no budget free, one plain GET"
    );
    assert!(
        budget.peak() <= budget.capacity(),
        "never more than the budget: {budget:?}"
    );

    drop(stalled);
    assert_eq!(budget.in_use(), 0, "dropped streams give their shares back");

    // With the budget free again, the same download reads ahead again.
    let gets_before = faulty.calls(Operation::Get);
    let result = read_ahead
        .get(&store, &key, GetOptions::default(), size)
        .await
        .unwrap();
    assert!(bytes_of(result).await.unwrap() == body);
    assert_eq!(
        faulty.calls(Operation::Get) - gets_before,
        9,
        "a GET per range"
    );
    assert_eq!(budget.in_use(), 0);
}

#[tokio::test]
async fn memory_store_serves_the_same_bytes() {
    for seed in [1, 0x9E37_79B9_7F4A_7C15, 42] {
        same_bytes_as_a_plain_get(Arc::new(MemoryStore::new()), seed).await;
    }
}

#[tokio::test]
async fn memory_store_failing_range() {
    a_failing_range_ends_the_stream(Arc::new(MemoryStore::new())).await;
}

#[tokio::test]
async fn memory_store_stalled_readers() {
    stalled_readers_do_not_stall_other_downloads(Arc::new(MemoryStore::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3s_fs_stalled_readers() {
    let Some(fixture) = common::fixture(S3TestServer::s3s()).await else {
        return;
    };
    stalled_readers_do_not_stall_other_downloads(Arc::clone(&fixture.store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3s_fs_serves_the_same_bytes() {
    let Some(fixture) = common::fixture(S3TestServer::s3s()).await else {
        return;
    };
    same_bytes_as_a_plain_get(Arc::clone(&fixture.store), 7).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3s_fs_failing_range() {
    let Some(fixture) = common::fixture(S3TestServer::s3s()).await else {
        return;
    };
    a_failing_range_ends_the_stream(Arc::clone(&fixture.store)).await;
}
