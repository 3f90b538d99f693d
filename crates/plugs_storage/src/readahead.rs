//! Read-ahead for large objects: one caller's stream fed by several ranged GETs in flight.
//!
//! One GetObject stream is limited by one connection's rate; S3's own guidance for large objects,
//! and what boto3's `download_file` does, is parallel ranged GETs. [`ReadAhead::get`] serves the
//! bytes of a large object (or of a large range of one) through a single [`ByteStream`] in order:
//! the first range streams as it arrives (so the first byte comes as early as with a plain GET),
//! and the following ones are fetched `ranges_in_flight` at a time, each read whole and handed on
//! in order (`futures`' `buffered`). It works over [`ObjectStore::get`] with a range, so every
//! store and wrapper has it.
//!
//! Memory per transfer is at most `range_size × (ranges_in_flight + 1)`: the ranges being
//! fetched and the one being delivered. A [`MemoryBudget`] shared by every transfer bounds the
//! total: each range takes its bytes from the budget before its GET and gives them back once
//! delivered, so under many downloads at once they wait for budget rather than allocate.
//!
//! An error in any range (the store failing, a range shorter than asked, the object's ETag
//! changing between ranges) ends the stream with that error: the caller never gets bytes out of
//! order or from two versions of an object.

use std::fmt;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::stream::{self, Stream};
use futures::{StreamExt as _, TryStreamExt as _};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::{ByteRange, GetOptions, GetResult, ObjectKey, ObjectStore, Result, StoreError};

/// Bytes that buffers of a kind may hold at once, server-wide: callers take their share before
/// they fill a buffer and give it back when it has been sent on, waiting while there is none.
/// Cheap to clone (shared).
#[derive(Clone)]
pub struct MemoryBudget {
    semaphore: Arc<Semaphore>,
    capacity: u64,
}

impl fmt::Debug for MemoryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryBudget")
            .field("capacity", &self.capacity)
            .field("in_use", &self.in_use())
            .finish()
    }
}

/// The largest budget: a semaphore counts at most `usize::MAX >> 3` permits.
const MAX_BUDGET: u64 = 1 << 60;

impl MemoryBudget {
    /// A budget of `bytes` (at least 1).
    pub fn new(bytes: u64) -> Self {
        let capacity = bytes.clamp(1, MAX_BUDGET);
        Self {
            semaphore: Arc::new(Semaphore::new(
                usize::try_from(capacity).unwrap_or(usize::MAX >> 3),
            )),
            capacity,
        }
    }

    /// The budget's size in bytes.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Bytes taken now.
    pub fn in_use(&self) -> u64 {
        self.capacity
            .saturating_sub(self.semaphore.available_permits() as u64)
    }

    /// Takes `bytes` (at most the whole budget), waiting until they are free; they return to
    /// the budget when the answer is dropped. Waiters are served in the order they came.
    pub async fn reserve(&self, bytes: u64) -> Reservation {
        let wanted = bytes.clamp(1, self.capacity).min(u64::from(u32::MAX));
        let permits = u32::try_from(wanted).unwrap_or(u32::MAX);
        // The semaphore is never closed, so acquiring cannot fail; if it ever were, the
        // caller goes on without a share rather than failing a transfer.
        Reservation {
            _permit: Arc::clone(&self.semaphore)
                .acquire_many_owned(permits)
                .await
                .ok(),
        }
    }
}

/// A share of a [`MemoryBudget`], given back on drop.
#[derive(Debug)]
pub struct Reservation {
    _permit: Option<OwnedSemaphorePermit>,
}

/// How large objects are read: ranges of `range_size` bytes, `ranges_in_flight` at a time.
#[derive(Debug, Clone)]
pub struct ReadAhead {
    range_size: u64,
    ranges_in_flight: usize,
    budget: Option<MemoryBudget>,
}

/// The smallest range: below it, requests cost more than they bring.
pub const MIN_READ_AHEAD_RANGE: u64 = 1024 * 1024;

impl ReadAhead {
    /// Ranges of `range_size` bytes (at least [`MIN_READ_AHEAD_RANGE`]), `ranges_in_flight` at
    /// a time; 0 in flight turns read-ahead off (every read is one plain GET).
    pub fn new(range_size: u64, ranges_in_flight: usize) -> Self {
        Self {
            range_size: range_size.max(MIN_READ_AHEAD_RANGE),
            ranges_in_flight,
            budget: None,
        }
    }

    /// The same, with every range's buffer taken from `budget`.
    #[must_use]
    pub fn with_budget(mut self, budget: MemoryBudget) -> Self {
        self.budget = Some(budget);
        self
    }

    /// The budget range buffers take from, if any.
    pub fn budget(&self) -> Option<&MemoryBudget> {
        self.budget.as_ref()
    }

    /// The range size.
    pub fn range_size(&self) -> u64 {
        self.range_size
    }

    /// Ranges fetched at once.
    pub fn ranges_in_flight(&self) -> usize {
        self.ranges_in_flight
    }

    /// The most one transfer holds in buffers: the ranges in flight and the one being sent.
    pub fn memory_per_transfer(&self) -> u64 {
        self.range_size
            .saturating_mul(self.ranges_in_flight as u64 + 1)
    }

    /// Whether reading `len` bytes goes through ranges: more than two ranges' worth, so small
    /// objects keep their single GET.
    pub fn applies_to(&self, len: u64) -> bool {
        self.ranges_in_flight > 0 && len > self.range_size.saturating_mul(2)
    }

    /// Reads `key` as [`ObjectStore::get`] does, with the same answer (metadata, the range
    /// served, the bytes in order), through ranged GETs when what is read is large.
    ///
    /// `size` is the object's size as the caller knows it (the media record); it decides whether
    /// to read ahead and where the first range ends. The store's answer to the first range is
    /// what counts from then on: the rest is planned from the size it reports. A range that
    /// `size` cannot satisfy, and any small read, is one plain GET, so the store answers
    /// `If-None-Match`, `Range` errors and everything else exactly as it would.
    pub async fn get(
        &self,
        store: &Arc<dyn ObjectStore>,
        key: &ObjectKey,
        options: GetOptions,
        size: u64,
    ) -> Result<GetResult> {
        let asked = options.range;
        let Some(span) = asked.map_or(Some(0..size), |range| range.resolve(size)) else {
            return store.get(key, options).await;
        };
        if !self.applies_to(span.end - span.start) {
            return store.get(key, options).await;
        }
        let first_options = GetOptions {
            range: Some(ByteRange::Bounded {
                start: span.start,
                end: span.start + self.range_size,
            }),
            if_none_match: options.if_none_match,
        };
        let first = store.get(key, first_options).await?;

        let size = first.meta.size;
        let span = match asked {
            Some(range) => range.resolve(size),
            None => Some(0..size),
        }
        .ok_or_else(|| StoreError::RangeNotSatisfiable {
            key: key.to_string(),
            size,
        })?;
        let first_range = span.start..(span.start + self.range_size).min(span.end);
        if first.range != first_range {
            return Err(changed(
                key,
                &format!("the first range came back as {:?}", first.range),
            ));
        }
        let rest = self.rest(
            store,
            key,
            first.meta.etag.clone(),
            first_range.end..span.end,
        );
        // Nothing after an error: the bytes that would follow it are not the ones after the
        // last delivered.
        let mut failed = false;
        let body = first.body.chain(rest).take_while(move |item| {
            let go_on = !failed;
            failed |= item.is_err();
            std::future::ready(go_on)
        });
        Ok(GetResult {
            meta: first.meta,
            range: span,
            body: body.boxed(),
        })
    }

    /// The bytes of `span` in order, from ranges fetched `ranges_in_flight` at a time.
    fn rest(
        &self,
        store: &Arc<dyn ObjectStore>,
        key: &ObjectKey,
        etag: String,
        span: Range<u64>,
    ) -> impl Stream<Item = Result<Bytes>> + Send + 'static {
        let range_size = self.range_size;
        let starts =
            (span.start..span.end).step_by(usize::try_from(range_size).unwrap_or(usize::MAX));
        let store = Arc::clone(store);
        let key = key.clone();
        let budget = self.budget.clone();
        stream::iter(starts)
            .map(move |start| {
                fetch(
                    Arc::clone(&store),
                    key.clone(),
                    etag.clone(),
                    start..(start + range_size).min(span.end),
                    budget.clone(),
                )
            })
            .buffered(self.ranges_in_flight.max(1))
            .try_flatten()
    }
}

/// One range read whole, with its share of the budget taken before the GET.
async fn fetch(
    store: Arc<dyn ObjectStore>,
    key: ObjectKey,
    etag: String,
    range: Range<u64>,
    budget: Option<MemoryBudget>,
) -> Result<Held> {
    let len = range.end - range.start;
    let reservation = match &budget {
        Some(budget) => Some(budget.reserve(len).await),
        None => None,
    };
    let options = GetOptions {
        range: Some(ByteRange::Bounded {
            start: range.start,
            end: range.end,
        }),
        ..GetOptions::default()
    };
    let result = store.get(&key, options).await?;
    if result.meta.etag != etag {
        return Err(changed(
            &key,
            &format!("its ETag went from {etag} to {}", result.meta.etag),
        ));
    }
    let chunks: Vec<Bytes> = result.body.try_collect().await?;
    let got: u64 = chunks.iter().map(|chunk| chunk.len() as u64).sum();
    if result.range != range || got != len {
        return Err(changed(
            &key,
            &format!(
                "bytes {}-{} came back as {:?} with {got} bytes",
                range.start, range.end, result.range
            ),
        ));
    }
    Ok(Held {
        chunks: chunks.into_iter(),
        _reservation: reservation,
    })
}

fn changed(key: &ObjectKey, what: &str) -> StoreError {
    StoreError::Other {
        message: format!("reading {key} in ranges failed"),
        source: what.to_owned().into(),
    }
}

/// A range's bytes, holding its share of the budget until the last chunk has been taken.
struct Held {
    chunks: std::vec::IntoIter<Bytes>,
    _reservation: Option<Reservation>,
}

impl Stream for Held {
    type Item = Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Poll::Ready(self.chunks.next().map(Ok))
    }
}

#[cfg(test)]
// Options are built one field at a time, as callers outside the crate must.
#[allow(clippy::field_reassign_with_default)]
mod tests {
    use super::*;
    use crate::{FaultyStore, MemoryStore, ObjectStoreExt as _, Operation, PutOptions};

    fn key() -> ObjectKey {
        ObjectKey::parse("events/e/media/big.bin").unwrap()
    }

    /// Bytes whose every position differs from its neighbours', so an offset error shows.
    fn pattern(len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i % 251) as u8 ^ (i / 251) as u8)
            .collect()
    }

    async fn store_with(len: usize) -> (Arc<MemoryStore>, Vec<u8>) {
        let store = Arc::new(MemoryStore::new());
        let bytes = pattern(len);
        store
            .put_bytes(&key(), Bytes::from(bytes.clone()), PutOptions::default())
            .await
            .unwrap();
        (store, bytes)
    }

    async fn read(result: GetResult) -> Result<Vec<u8>> {
        let chunks: Vec<Bytes> = result.body.try_collect().await?;
        Ok(chunks.concat())
    }

    #[tokio::test]
    async fn large_reads_are_whole_and_in_order_and_small_ones_one_get() {
        let (memory, bytes) = store_with(5 * 1024 * 1024 + 17).await;
        let faulty = Arc::new(FaultyStore::new(memory));
        let store: Arc<dyn ObjectStore> = faulty.clone();
        let read_ahead = ReadAhead::new(MIN_READ_AHEAD_RANGE, 3);
        let result = read_ahead
            .get(&store, &key(), GetOptions::default(), bytes.len() as u64)
            .await
            .unwrap();
        assert_eq!(result.range, 0..bytes.len() as u64);
        assert_eq!(result.meta.size, bytes.len() as u64);
        assert_eq!(read(result).await.unwrap(), bytes);
        assert_eq!(faulty.calls(Operation::Get), 6, "one GET per 1 MiB range");

        let small = 2 * MIN_READ_AHEAD_RANGE;
        let mut options = GetOptions::default();
        options.range = Some(ByteRange::Bounded {
            start: 10,
            end: 10 + small,
        });
        let result = read_ahead
            .get(&store, &key(), options, bytes.len() as u64)
            .await
            .unwrap();
        assert_eq!(read(result).await.unwrap(), &bytes[10..10 + small as usize]);
        assert_eq!(
            faulty.calls(Operation::Get),
            7,
            "two ranges' worth is one GET"
        );
    }

    #[tokio::test]
    async fn a_failing_range_fails_the_stream_after_the_bytes_before_it() {
        let (memory, bytes) = store_with(6 * 1024 * 1024).await;
        let faulty = Arc::new(FaultyStore::new(memory));
        let store: Arc<dyn ObjectStore> = faulty.clone();
        // GETs in order: the first range, then the second and third at once, then the fourth.
        faulty.fail_nth(Operation::Get, 4);
        let result = ReadAhead::new(MIN_READ_AHEAD_RANGE, 2)
            .get(&store, &key(), GetOptions::default(), bytes.len() as u64)
            .await
            .unwrap();
        let mut body = result.body;
        let mut delivered = Vec::new();
        let error = loop {
            match body.next().await {
                Some(Ok(chunk)) => delivered.extend_from_slice(&chunk),
                Some(Err(error)) => break error,
                None => panic!("the stream ended without the injected error"),
            }
        };
        assert!(matches!(error, StoreError::Unavailable { .. }), "{error:?}");
        assert_eq!(
            delivered,
            &bytes[..3 * MIN_READ_AHEAD_RANGE as usize],
            "only the ranges before the failing one, in order"
        );
        assert!(body.next().await.is_none(), "nothing after the error");
    }

    #[tokio::test]
    async fn an_object_replaced_between_ranges_fails_rather_than_mixing_versions() {
        let (memory, bytes) = store_with(4 * 1024 * 1024).await;
        let store: Arc<dyn ObjectStore> = memory.clone();
        let result = ReadAhead::new(MIN_READ_AHEAD_RANGE, 2)
            .get(&store, &key(), GetOptions::default(), bytes.len() as u64)
            .await
            .unwrap();
        memory
            .put_bytes(
                &key(),
                Bytes::from(pattern(4 * 1024 * 1024 + 1)),
                PutOptions::default(),
            )
            .await
            .unwrap();
        let error = read(result).await.unwrap_err();
        assert!(matches!(error, StoreError::Other { .. }), "{error:?}");
    }

    #[tokio::test]
    async fn not_modified_and_unsatisfiable_ranges_are_the_stores_answers() {
        let (memory, bytes) = store_with(4 * 1024 * 1024).await;
        let store: Arc<dyn ObjectStore> = memory;
        let read_ahead = ReadAhead::new(MIN_READ_AHEAD_RANGE, 2);
        let etag = store.head(&key()).await.unwrap().etag;
        let mut options = GetOptions::default();
        options.if_none_match = Some(etag);
        let error = read_ahead
            .get(&store, &key(), options, bytes.len() as u64)
            .await
            .unwrap_err();
        assert!(matches!(error, StoreError::NotModified { .. }), "{error:?}");
        let mut options = GetOptions::default();
        options.range = Some(ByteRange::From {
            start: bytes.len() as u64,
        });
        let error = read_ahead
            .get(&store, &key(), options, bytes.len() as u64)
            .await
            .unwrap_err();
        assert!(
            matches!(error, StoreError::RangeNotSatisfiable { .. }),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn the_budget_bounds_what_transfers_hold_and_is_given_back() {
        let (memory, bytes) = store_with(8 * 1024 * 1024).await;
        // A store that takes its time, so that ranges are in flight together as on S3.
        let faulty = Arc::new(FaultyStore::new(memory));
        faulty.set_latency(std::time::Duration::from_millis(20));
        let store: Arc<dyn ObjectStore> = faulty;
        let budget = MemoryBudget::new(3 * MIN_READ_AHEAD_RANGE);
        // One transfer alone would hold five ranges; the budget lets it hold three.
        let read_ahead = ReadAhead::new(MIN_READ_AHEAD_RANGE, 4).with_budget(budget.clone());
        let size = bytes.len() as u64;
        let mut body = read_ahead
            .get(&store, &key(), GetOptions::default(), size)
            .await
            .unwrap()
            .body;
        let mut delivered = Vec::new();
        while delivered.len() <= MIN_READ_AHEAD_RANGE as usize {
            delivered.extend_from_slice(&body.next().await.unwrap().unwrap());
        }
        assert_eq!(
            budget.in_use(),
            budget.capacity(),
            "the read-ahead took the whole budget and no more"
        );
        drop(body);
        assert_eq!(
            budget.in_use(),
            0,
            "a dropped transfer gives its share back"
        );

        // Transfers at once, each wanting more than the budget: all finish, in order.
        let reads = (0..3).map(|_| async {
            let result = read_ahead
                .get(&store, &key(), GetOptions::default(), size)
                .await?;
            read(result).await
        });
        for read in futures::future::join_all(reads).await {
            assert!(read.unwrap() == bytes);
        }
        assert_eq!(budget.in_use(), 0, "every share given back");
    }
}
