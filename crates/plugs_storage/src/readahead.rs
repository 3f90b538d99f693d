//! Read-ahead for large objects: one caller's stream fed by several ranged GETs in flight.
//!
//! One GetObject stream is limited by one connection's rate; S3's own guidance for large objects,
//! and what boto3's `download_file` does, is parallel ranged GETs. [`ReadAhead::get`] serves the
//! bytes of a large object (or of a large range of one) through a single [`ByteStream`] in order:
//! the first range streams as it arrives (so the first byte comes as early as with a plain GET),
//! and the following ones are fetched up to `ranges_in_flight` at a time while it does, each read
//! whole and handed on in order. It works over [`ObjectStore::get`] with a range, so every store
//! and wrapper has it.
//!
//! Memory per transfer is at most `range_size × (ranges_in_flight + 1)`: the ranges being
//! fetched or waiting their turn, and the one being delivered. A [`MemoryBudget`] shared by every
//! transfer bounds the total, and no transfer ever waits for it: a transfer that cannot take one
//! range's worth at once (with [`MemoryBudget::try_reserve`]) is one plain streamed GET, as a
//! small object is, which buffers nothing; a transfer under way fetches a further range only
//! when its share can be taken at once, and when it holds no share at all and cannot take one,
//! it streams the rest of its bytes with one plain ranged GET. So clients that stop reading can
//! hold the whole budget, and every other download still goes on, at one connection's rate. A
//! range is read into one buffer of its exact length (so the budget counts what is held) and
//! gives its share back when the caller has taken its last bytes; a dropped stream gives back
//! everything it held.
//!
//! An error in any range (the store failing, a range shorter than asked, the object's ETag
//! changing between ranges) ends the stream with that error: the caller never gets bytes out of
//! order or from two versions of an object.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use futures::stream::{FuturesOrdered, Stream};
use futures::{FutureExt as _, StreamExt as _, TryStreamExt as _};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::{
    ByteRange, ByteStream, GetOptions, GetResult, ObjectKey, ObjectStore, Result, StoreError,
};

/// Bytes that buffers of a kind may hold at once, server-wide: callers take their share before
/// they fill a buffer and give it back as its bytes are sent on. Cheap to clone (shared).
///
/// Three ways to take a share: [`MemoryBudget::try_reserve`] (now or not at all),
/// [`MemoryBudget::reserve`] (waiting in line as long as it takes) and
/// [`MemoryBudget::reserve_within`] (waiting in line for a while, then beyond the budget: an
/// overdraft, counted in [`MemoryBudget::in_use`] so that it shows).
#[derive(Clone)]
pub struct MemoryBudget {
    shared: Arc<Shared>,
}

struct Shared {
    semaphore: Arc<Semaphore>,
    capacity: u64,
    /// Bytes taken beyond the budget by [`MemoryBudget::reserve_within`], held now.
    overdrawn: AtomicU64,
    /// The most ever held at once, as seen when a share was taken.
    peak: AtomicU64,
    /// Callers of [`MemoryBudget::reserve`] waiting in line now.
    waiting: AtomicU64,
}

/// One caller in line for budget, counted while it waits (also when its wait is given up).
struct InLine<'a>(&'a AtomicU64);

impl<'a> InLine<'a> {
    fn new(waiting: &'a AtomicU64) -> Self {
        waiting.fetch_add(1, Ordering::Relaxed);
        Self(waiting)
    }
}

impl Drop for InLine<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl fmt::Debug for MemoryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryBudget")
            .field("capacity", &self.capacity())
            .field("in_use", &self.in_use())
            .field("overdrawn", &self.overdrawn())
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
            shared: Arc::new(Shared {
                semaphore: Arc::new(Semaphore::new(
                    usize::try_from(capacity).unwrap_or(usize::MAX >> 3),
                )),
                capacity,
                overdrawn: AtomicU64::new(0),
                peak: AtomicU64::new(0),
                waiting: AtomicU64::new(0),
            }),
        }
    }

    /// The budget's size in bytes.
    pub fn capacity(&self) -> u64 {
        self.shared.capacity
    }

    /// Bytes taken now, overdrafts included (so it may exceed [`MemoryBudget::capacity`]).
    pub fn in_use(&self) -> u64 {
        self.shared
            .capacity
            .saturating_sub(self.shared.semaphore.available_permits() as u64)
            .saturating_add(self.overdrawn())
    }

    /// Bytes taken beyond the budget now (see [`MemoryBudget::reserve_within`]).
    pub fn overdrawn(&self) -> u64 {
        self.shared.overdrawn.load(Ordering::Relaxed)
    }

    /// Whether someone is waiting in line for a share now: a holder that could keep its share
    /// for later should give it back instead.
    pub fn has_waiters(&self) -> bool {
        self.shared.waiting.load(Ordering::Relaxed) > 0
    }

    /// The most [`MemoryBudget::in_use`] has been, as seen each time a share was taken.
    pub fn peak(&self) -> u64 {
        self.shared.peak.load(Ordering::Relaxed)
    }

    /// The permits a share of `bytes` takes: at least 1, at most the whole budget (and 4 GiB).
    fn permits(&self, bytes: u64) -> u32 {
        let wanted = bytes
            .clamp(1, self.shared.capacity)
            .min(u64::from(u32::MAX));
        u32::try_from(wanted).unwrap_or(u32::MAX)
    }

    fn taken(&self, permit: Option<OwnedSemaphorePermit>, overdrawn: u64) -> Reservation {
        self.shared.peak.fetch_max(self.in_use(), Ordering::Relaxed);
        Reservation {
            permit,
            overdrawn,
            shared: Arc::clone(&self.shared),
        }
    }

    /// Takes `bytes` (at most the whole budget) if they are free now and nobody is waiting in
    /// line for budget; `None` otherwise. Never waits.
    pub fn try_reserve(&self, bytes: u64) -> Option<Reservation> {
        let permit = Arc::clone(&self.shared.semaphore)
            .try_acquire_many_owned(self.permits(bytes))
            .ok()?;
        Some(self.taken(Some(permit), 0))
    }

    /// Takes `bytes` (at most the whole budget), waiting until they are free; they return to
    /// the budget when the answer is dropped. Waiters are served in the order they came, and
    /// [`MemoryBudget::try_reserve`] does not pass them.
    ///
    /// Waiting is safe only for a caller that holds no share of this budget while it waits,
    /// and only if every holder gives its share back without waiting for this budget itself;
    /// otherwise holders can wait on each other for ever.
    pub async fn reserve(&self, bytes: u64) -> Reservation {
        // The semaphore is never closed, so acquiring cannot fail; if it ever were, the
        // caller goes on without a share rather than failing a transfer.
        let _in_line = InLine::new(&self.shared.waiting);
        let permit = Arc::clone(&self.shared.semaphore)
            .acquire_many_owned(self.permits(bytes))
            .await
            .ok();
        self.taken(permit, 0)
    }

    /// Takes `bytes` (at most the whole budget), waiting in line for at most `wait`; if they
    /// are not free by then, takes them beyond the budget (an overdraft, shown by
    /// [`MemoryBudget::overdrawn`] and counted in [`MemoryBudget::in_use`]). For a caller that
    /// cannot go on without the buffer and must not wait for ever on holders it does not
    /// control.
    pub async fn reserve_within(&self, bytes: u64, wait: Duration) -> Reservation {
        if let Ok(reservation) = tokio::time::timeout(wait, self.reserve(bytes)).await {
            return reservation;
        }
        let bytes = u64::from(self.permits(bytes));
        self.shared.overdrawn.fetch_add(bytes, Ordering::Relaxed);
        self.taken(None, bytes)
    }
}

/// A share of a [`MemoryBudget`], given back on drop (or piece by piece with
/// [`Reservation::release`]).
pub struct Reservation {
    permit: Option<OwnedSemaphorePermit>,
    overdrawn: u64,
    shared: Arc<Shared>,
}

impl fmt::Debug for Reservation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reservation")
            .field("bytes", &self.bytes())
            .field("overdrawn", &self.overdrawn)
            .finish()
    }
}

impl Reservation {
    /// Bytes this share holds.
    pub fn bytes(&self) -> u64 {
        self.permit
            .as_ref()
            .map_or(0, |permit| permit.num_permits() as u64)
            + self.overdrawn
    }

    /// Whether this share was taken beyond the budget.
    pub fn is_overdraft(&self) -> bool {
        self.overdrawn > 0
    }

    /// Gives `bytes` of this share back now (all of it if it holds fewer).
    pub fn release(&mut self, bytes: u64) {
        let from_overdraft = bytes.min(self.overdrawn);
        if from_overdraft > 0 {
            self.overdrawn -= from_overdraft;
            self.shared
                .overdrawn
                .fetch_sub(from_overdraft, Ordering::Relaxed);
        }
        let rest = bytes - from_overdraft;
        if rest > 0
            && let Some(permit) = &mut self.permit
        {
            let held = permit.num_permits();
            let given = usize::try_from(rest).unwrap_or(usize::MAX).min(held);
            // Dropping the split-off part returns it to the semaphore.
            drop(permit.split(given));
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.overdrawn > 0 {
            self.shared
                .overdrawn
                .fetch_sub(self.overdrawn, Ordering::Relaxed);
        }
    }
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

    /// The same, with every range's buffer taken from `budget` (never waiting for it: see the
    /// module's documentation).
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
    /// `If-None-Match`, `Range` errors and everything else exactly as it would; so is a read
    /// that finds the budget without one range's worth free.
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
        // The first share is taken now or never: without it, the bytes stream from one GET.
        let first_share = match &self.budget {
            Some(budget) => match budget.try_reserve(self.range_size) {
                Some(share) => Some(share),
                None => return store.get(key, options).await,
            },
            None => None,
        };
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
        let body = Ranges {
            store: Arc::clone(store),
            key: key.clone(),
            etag: first.meta.etag.clone(),
            range_size: self.range_size,
            max_in_flight: self.ranges_in_flight.max(1),
            budget: self.budget.clone(),
            first_share,
            next: first_range.end,
            end: span.end,
            head: Some(first.body),
            in_flight: FuturesOrdered::new(),
            ready: VecDeque::new(),
            current: None,
            tail: None,
            done: false,
        };
        Ok(GetResult {
            meta: first.meta,
            range: span,
            body: body.boxed(),
        })
    }
}

/// The bytes of one read in order: the first range as it streams, then ranges fetched whole
/// (several at once), or, once the transfer holds no share and cannot take one, the rest from
/// one plain GET.
struct Ranges {
    store: Arc<dyn ObjectStore>,
    key: ObjectKey,
    etag: String,
    range_size: u64,
    max_in_flight: usize,
    budget: Option<MemoryBudget>,
    /// The share taken before the first GET, for the first range fetched.
    first_share: Option<Reservation>,
    /// Where the next range to ask for starts.
    next: u64,
    end: u64,
    /// The first range's body, streamed as it comes.
    head: Option<ByteStream>,
    in_flight: FuturesOrdered<BoxFuture<'static, Result<Held>>>,
    /// Ranges fetched (or failed), in order, waiting for the ones before them to be delivered.
    ready: VecDeque<Result<Held>>,
    /// The range being delivered.
    current: Option<Held>,
    /// The rest of the bytes from one plain GET.
    tail: Option<Tail>,
    done: bool,
}

/// The rest of a read from one plain GET: being opened, then streaming.
enum Tail {
    Opening {
        body: BoxFuture<'static, Result<ByteStream>>,
        len: u64,
    },
    Streaming {
        body: ByteStream,
        left: u64,
    },
}

impl Ranges {
    /// Whether this read holds no share of the budget and nothing that would give it one.
    fn holds_nothing(&self) -> bool {
        self.first_share.is_none()
            && self.head.is_none()
            && self.current.is_none()
            && self.ready.is_empty()
            && self.in_flight.is_empty()
    }

    /// Asks for more ranges while fewer than `max_in_flight` are fetched or waiting and their
    /// shares can be taken at once; with none held and none to take, opens the tail instead.
    fn start_fetches(&mut self) {
        while self.tail.is_none()
            && self.next < self.end
            && self.in_flight.len() + self.ready.len() < self.max_in_flight
        {
            let range = self.next..(self.next + self.range_size).min(self.end);
            let len = range.end - range.start;
            let share = match &self.budget {
                None => None,
                Some(budget) => {
                    let share = self
                        .first_share
                        .take()
                        .or_else(|| budget.try_reserve(self.range_size));
                    match share {
                        Some(mut share) => {
                            // The last range may be shorter.
                            share.release(share.bytes().saturating_sub(len));
                            Some(share)
                        }
                        None => {
                            if self.holds_nothing() {
                                self.open_tail();
                            }
                            return;
                        }
                    }
                }
            };
            self.in_flight.push_back(
                fetch(
                    Arc::clone(&self.store),
                    self.key.clone(),
                    self.etag.clone(),
                    range.clone(),
                    share,
                )
                .boxed(),
            );
            self.next = range.end;
        }
    }

    /// Streams the rest, from `next` to the end, with one plain GET of the same version.
    fn open_tail(&mut self) {
        let range = self.next..self.end;
        self.next = self.end;
        let len = range.end - range.start;
        let (store, key, etag) = (Arc::clone(&self.store), self.key.clone(), self.etag.clone());
        let opening = async move {
            let options = GetOptions {
                range: Some(ByteRange::Bounded {
                    start: range.start,
                    end: range.end,
                }),
                ..GetOptions::default()
            };
            let result = store.get(&key, options).await?;
            check_range(&key, &etag, &range, &result)?;
            Ok(result.body)
        };
        self.tail = Some(Tail::Opening {
            body: opening.boxed(),
            len,
        });
    }

    /// Ends the stream with `error`, giving back every share at once.
    fn fail(&mut self, error: StoreError) -> Poll<Option<Result<Bytes>>> {
        self.done = true;
        self.first_share = None;
        self.head = None;
        self.in_flight = FuturesOrdered::new();
        self.ready.clear();
        self.current = None;
        self.tail = None;
        Poll::Ready(Some(Err(error)))
    }
}

impl Stream for Ranges {
    type Item = Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            if let Some(held) = &mut this.current {
                if let Some(chunk) = held.take() {
                    return Poll::Ready(Some(Ok(chunk)));
                }
                this.current = None;
            }
            this.start_fetches();
            // Fetches progress only while polled: drive them, and queue those done in order.
            while let Poll::Ready(Some(fetched)) = this.in_flight.poll_next_unpin(cx) {
                this.ready.push_back(fetched);
            }
            if let Some(head) = &mut this.head {
                match head.poll_next_unpin(cx) {
                    Poll::Ready(Some(Ok(chunk))) => return Poll::Ready(Some(Ok(chunk))),
                    Poll::Ready(Some(Err(error))) => return this.fail(error),
                    Poll::Ready(None) => {
                        this.head = None;
                        continue;
                    }
                    Poll::Pending => return Poll::Pending,
                }
            }
            if let Some(fetched) = this.ready.pop_front() {
                match fetched {
                    Ok(held) => this.current = Some(held),
                    Err(error) => return this.fail(error),
                }
                continue;
            }
            match &mut this.tail {
                Some(Tail::Opening { body: opening, len }) => match opening.poll_unpin(cx) {
                    Poll::Ready(Ok(body)) => {
                        let left = *len;
                        this.tail = Some(Tail::Streaming { body, left });
                        continue;
                    }
                    Poll::Ready(Err(error)) => return this.fail(error),
                    Poll::Pending => return Poll::Pending,
                },
                Some(Tail::Streaming { body, left }) => {
                    return match body.poll_next_unpin(cx) {
                        Poll::Ready(Some(Ok(chunk))) => {
                            *left = left.saturating_sub(chunk.len() as u64);
                            Poll::Ready(Some(Ok(chunk)))
                        }
                        Poll::Ready(Some(Err(error))) => this.fail(error),
                        Poll::Ready(None) if *left > 0 => {
                            let error = changed(&this.key, "the rest came back short");
                            this.fail(error)
                        }
                        Poll::Ready(None) => {
                            this.done = true;
                            Poll::Ready(None)
                        }
                        Poll::Pending => Poll::Pending,
                    };
                }
                None => {}
            }
            if this.in_flight.is_empty() {
                if this.next >= this.end {
                    this.done = true;
                    return Poll::Ready(None);
                }
                // Nothing in flight and bytes left: the next turn starts a range or the tail.
                continue;
            }
            return Poll::Pending;
        }
    }
}
/// Bytes handed on at a time from a range read whole: large enough that the HTTP layer writes
/// in few calls, small enough that no single write holds a large piece of the range.
const DELIVERY_CHUNK: usize = 256 * 1024;

/// One range read whole into one buffer of exactly its length, holding its share of the budget
/// (taken before the GET).
///
/// The bytes are copied out of the HTTP client's chunks as they arrive rather than kept in
/// them: each chunk is a view into a read buffer the client sized for its next read (up to
/// about 400 KiB), and a range held as such views kept 1.5 to 2 times its length alive, so the
/// budget, which counts lengths, was not what the process held (a heap profile of 16
/// downloads at once: 114 MiB of read buffers under a 64 MiB budget). One copy of each byte
/// makes the budget the memory.
async fn fetch(
    store: Arc<dyn ObjectStore>,
    key: ObjectKey,
    etag: String,
    range: std::ops::Range<u64>,
    share: Option<Reservation>,
) -> Result<Held> {
    let len = range.end - range.start;
    let options = GetOptions {
        range: Some(ByteRange::Bounded {
            start: range.start,
            end: range.end,
        }),
        ..GetOptions::default()
    };
    let result = store.get(&key, options).await?;
    check_range(&key, &etag, &range, &result)?;
    let short = |got: u64| {
        changed(
            &key,
            &format!(
                "bytes {}-{} came back with {got} bytes",
                range.start, range.end
            ),
        )
    };
    let capacity = usize::try_from(len).map_err(|_| short(0))?;
    let mut buffer = BytesMut::with_capacity(capacity);
    let mut body = result.body;
    while let Some(chunk) = body.try_next().await? {
        if (buffer.len() + chunk.len()) as u64 > len {
            return Err(short((buffer.len() + chunk.len()) as u64));
        }
        buffer.extend_from_slice(&chunk);
    }
    if buffer.len() as u64 != len {
        return Err(short(buffer.len() as u64));
    }
    Ok(Held {
        bytes: buffer.freeze(),
        share,
    })
}

/// Refuses an answer for another version of the object or another range than asked.
fn check_range(
    key: &ObjectKey,
    etag: &str,
    range: &std::ops::Range<u64>,
    result: &GetResult,
) -> Result<()> {
    if result.meta.etag != etag {
        return Err(changed(
            key,
            &format!("its ETag went from {etag} to {}", result.meta.etag),
        ));
    }
    if result.range != *range {
        return Err(changed(
            key,
            &format!(
                "bytes {}-{} came back as {:?}",
                range.start, range.end, result.range
            ),
        ));
    }
    Ok(())
}

fn changed(key: &ObjectKey, what: &str) -> StoreError {
    StoreError::Other {
        message: format!("reading {key} in ranges failed"),
        source: what.to_owned().into(),
    }
}

/// A range's bytes, handed on [`DELIVERY_CHUNK`] at a time: views of its one buffer, not
/// copies, so the buffer lives until its last view is dropped. The range's share of the budget
/// goes back when its last view is taken (the HTTP layer copies each view into its write buffer
/// as it takes it), not piece by piece.
struct Held {
    bytes: Bytes,
    share: Option<Reservation>,
}

impl Held {
    fn take(&mut self) -> Option<Bytes> {
        if self.bytes.is_empty() {
            return None;
        }
        let chunk = self.bytes.split_to(self.bytes.len().min(DELIVERY_CHUNK));
        if self.bytes.is_empty() {
            self.share = None;
        }
        Some(chunk)
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
    async fn the_budget_bounds_what_transfers_hold_and_is_given_back_as_ranges_are_taken() {
        let (memory, bytes) = store_with(8 * 1024 * 1024).await;
        // A store that takes its time, so that ranges are in flight together as on S3.
        let faulty = Arc::new(FaultyStore::new(memory));
        faulty.set_latency(std::time::Duration::from_millis(20));
        let store: Arc<dyn ObjectStore> = faulty.clone();
        let budget = MemoryBudget::new(3 * MIN_READ_AHEAD_RANGE);
        // One transfer alone would hold five ranges; the budget lets it hold three.
        let read_ahead = ReadAhead::new(MIN_READ_AHEAD_RANGE, 4).with_budget(budget.clone());
        let size = bytes.len() as u64;
        let mut body = read_ahead
            .get(&store, &key(), GetOptions::default(), size)
            .await
            .unwrap()
            .body;
        // The first range, then the first chunk of the second.
        let mut delivered = Vec::new();
        while delivered.len() as u64 <= MIN_READ_AHEAD_RANGE {
            delivered.extend_from_slice(&body.next().await.unwrap().unwrap());
        }
        assert_eq!(
            budget.peak(),
            budget.capacity(),
            "the read-ahead took the whole budget"
        );
        assert_eq!(
            faulty.calls(Operation::Get),
            4,
            "the first range and three fetched with the budget's three shares, no more"
        );
        assert_eq!(
            budget.in_use(),
            budget.capacity(),
            "a range's buffer, partly taken, still holds its whole share"
        );
        // The rest of the second range: its last bytes taken, its share comes back.
        while delivered.len() as u64 != 2 * MIN_READ_AHEAD_RANGE {
            let chunk = body.next().await.unwrap().unwrap();
            assert!(chunk.len() <= DELIVERY_CHUNK, "handed on in pieces");
            delivered.extend_from_slice(&chunk);
        }
        assert!(delivered[..] == bytes[..delivered.len()], "in order");
        assert_eq!(budget.in_use(), budget.capacity() - MIN_READ_AHEAD_RANGE);
        drop(body);
        assert_eq!(
            budget.in_use(),
            0,
            "a dropped transfer gives everything back"
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
        assert_eq!(
            budget.peak(),
            budget.capacity(),
            "and never more than the budget"
        );
    }

    #[tokio::test]
    async fn without_a_range_of_budget_free_a_read_is_one_plain_get() {
        let (memory, bytes) = store_with(4 * 1024 * 1024).await;
        let faulty = Arc::new(FaultyStore::new(memory));
        let store: Arc<dyn ObjectStore> = faulty.clone();
        let budget = MemoryBudget::new(2 * MIN_READ_AHEAD_RANGE);
        let read_ahead = ReadAhead::new(MIN_READ_AHEAD_RANGE, 2).with_budget(budget.clone());
        let held = budget.try_reserve(MIN_READ_AHEAD_RANGE + 1).unwrap();
        let result = read_ahead
            .get(&store, &key(), GetOptions::default(), bytes.len() as u64)
            .await
            .unwrap();
        assert_eq!(read(result).await.unwrap(), bytes);
        assert_eq!(
            faulty.calls(Operation::Get),
            1,
            "one GET, nothing waited for"
        );
        assert_eq!(
            budget.in_use(),
            MIN_READ_AHEAD_RANGE + 1,
            "and no share taken"
        );
        drop(held);
    }

    #[tokio::test]
    async fn a_read_left_without_budget_streams_the_rest_from_one_get() {
        let (memory, bytes) = store_with(5 * 1024 * 1024 + 3).await;
        let faulty = Arc::new(FaultyStore::new(memory));
        let store: Arc<dyn ObjectStore> = faulty.clone();
        let budget = MemoryBudget::new(MIN_READ_AHEAD_RANGE);
        let read_ahead = ReadAhead::new(MIN_READ_AHEAD_RANGE, 3).with_budget(budget.clone());
        let mut body = read_ahead
            .get(&store, &key(), GetOptions::default(), bytes.len() as u64)
            .await
            .unwrap()
            .body;
        // The first range streams while the second is fetched on the one share there is.
        let mut delivered = Vec::new();
        while (delivered.len() as u64) < 2 * MIN_READ_AHEAD_RANGE {
            delivered.extend_from_slice(&body.next().await.unwrap().unwrap());
        }
        assert_eq!(faulty.calls(Operation::Get), 2);
        assert_eq!(
            budget.in_use(),
            0,
            "the second range's bytes all taken, its share back"
        );
        // Someone else takes the budget before this read asks for its third range.
        let held = budget.try_reserve(MIN_READ_AHEAD_RANGE).unwrap();
        while let Some(chunk) = body.next().await {
            delivered.extend_from_slice(&chunk.unwrap());
        }
        assert!(delivered == bytes, "every byte, in order");
        assert_eq!(
            faulty.calls(Operation::Get),
            3,
            "the rest came from one more GET, without waiting for budget"
        );
        assert_eq!(budget.in_use(), MIN_READ_AHEAD_RANGE);
        drop(held);
    }
}
