//! Limits on an upload's request body that hold whatever the framing: how many bytes may arrive
//! outside the file (preamble, part headers, text fields), how long the body may stay silent,
//! and how slowly it may trickle in.
//!
//! The `Content-Length` gate in the handler does not apply to chunked bodies, and the multipart
//! parser buffers a part header until it ends, searching the buffer again on every read; an
//! endless header would cost memory and CPU that grow faster than the bytes. The guard sits
//! between the connection and the parser, so a hostile body is cut after a bounded number of
//! bytes and seconds, and the parser never holds more than that.

use std::cell::Cell;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::error::PayloadError;
use bytes::Bytes;
use futures::Stream;
use tokio::time::{Instant, Sleep};

/// What a guarded body may cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimits {
    /// Bytes allowed outside the file: the preamble, every part header and the text fields,
    /// before the file and after it (give or take the one chunk that crosses the line).
    pub form_overhead: u64,
    /// The largest file.
    pub max_file_size: u64,
    /// The body is abandoned when no byte arrives for this long.
    pub idle_timeout: Duration,
    /// The body is abandoned when fewer than this many bytes per second arrived over the last
    /// [`BodyLimits::rate_window`]; 0 turns the check off.
    pub min_bytes_per_sec: u64,
    /// The window the minimum rate is measured over (the first window starts with the body).
    pub rate_window: Duration,
}

/// Why a guarded body was cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// More bytes outside the file than [`BodyLimits::form_overhead`].
    FormTooLarge {
        /// The allowance.
        limit: u64,
    },
    /// More bytes than the file limit plus the form's allowance.
    BodyTooLarge {
        /// The file limit.
        limit: u64,
    },
    /// No byte for [`BodyLimits::idle_timeout`].
    Idle(Duration),
    /// Slower than [`BodyLimits::min_bytes_per_sec`].
    TooSlow {
        /// The minimum rate.
        min_bytes_per_sec: u64,
    },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::FormTooLarge { limit } => write!(
                f,
                "the form's part headers and text fields exceed {limit} bytes"
            ),
            Self::BodyTooLarge { limit } => {
                write!(f, "the upload exceeds the limit of {limit} bytes")
            }
            Self::Idle(after) => write!(
                f,
                "no bytes arrived for {} s; the upload was abandoned",
                after.as_secs()
            ),
            Self::TooSlow { min_bytes_per_sec } => write!(
                f,
                "the upload arrived slower than {min_bytes_per_sec} bytes per second; it was abandoned"
            ),
        }
    }
}

/// The handler's side of a guarded body: says where the file starts and ends, and why the body
/// was cut. Request handlers run on one thread, so plain cells suffice.
#[derive(Debug, Clone)]
pub struct BodyGuard {
    state: Rc<GuardState>,
}

#[derive(Debug)]
struct GuardState {
    limits: BodyLimits,
    /// Bytes read from the connection so far.
    consumed: Cell<u64>,
    /// How far into the body reading may go right now.
    allowance: Cell<u64>,
    refusal: Cell<Option<Refusal>>,
    /// When the body ended cleanly, if it has.
    ended_at: Cell<Option<Instant>>,
}

impl BodyGuard {
    /// Wraps `body`: the returned stream fails once a limit is crossed, and this guard tells why.
    pub fn wrap<S>(body: S, limits: BodyLimits) -> (Self, GuardedBody<S>)
    where
        S: Stream<Item = Result<Bytes, PayloadError>> + Unpin,
    {
        let state = Rc::new(GuardState {
            limits,
            consumed: Cell::new(0),
            allowance: Cell::new(limits.form_overhead),
            refusal: Cell::new(None),
            ended_at: Cell::new(None),
        });
        let body = GuardedBody {
            inner: body,
            state: Rc::clone(&state),
            timer: Box::pin(tokio::time::sleep(limits.idle_timeout)),
            waiting_since: None,
            counted_since: None,
            window_waited: Duration::ZERO,
            window_bytes: 0,
            done: false,
        };
        (Self { state }, body)
    }

    /// The file part begins: the file's bytes, and the form's remaining allowance after them,
    /// may now be read.
    pub fn file_started(&self) {
        let state = &self.state;
        let allowance = state
            .consumed
            .get()
            .saturating_add(state.limits.max_file_size)
            .saturating_add(state.limits.form_overhead);
        state.allowance.set(allowance);
    }

    /// Why the body was cut, if it was.
    pub fn refusal(&self) -> Option<Refusal> {
        self.state.refusal.get()
    }

    /// Resolves once the body has ended at least `grace` ago; never before it ends. Whatever
    /// still waits on the parser by then waits for bytes that will never come: the multipart
    /// parser can stall, without an error, on a form whose body ends before its closing
    /// boundary (seen with actix-multipart 0.7 on a body ending right after a text field's
    /// line break). While the body is still arriving, the idle timeout and minimum rate apply.
    pub async fn ended_for(&self, grace: Duration) {
        loop {
            let wait = match self.state.ended_at.get() {
                Some(ended) if ended.elapsed() >= grace => return,
                Some(ended) => grace - ended.elapsed(),
                None => grace.max(Duration::from_millis(100)),
            };
            tokio::time::sleep(wait).await;
        }
    }
}

/// The guarded request body (see [`BodyGuard::wrap`]).
///
/// Time is counted only while the body waits for the client: when the server itself stops
/// reading (a slow store holding the upload back), no byte is expected and no limit runs.
#[derive(Debug)]
pub struct GuardedBody<S> {
    inner: S,
    state: Rc<GuardState>,
    /// Fires at the next moment a time limit must be checked.
    timer: Pin<Box<Sleep>>,
    /// Since when the body has been waiting for the client, if it is.
    waiting_since: Option<Instant>,
    /// Since when the current wait counts towards the current rate window.
    counted_since: Option<Instant>,
    /// Waiting time already counted in the current rate window.
    window_waited: Duration,
    /// Bytes received in the current rate window.
    window_bytes: u64,
    done: bool,
}

impl<S> GuardedBody<S> {
    fn refuse(&mut self, refusal: Refusal) -> Poll<Option<Result<Bytes, PayloadError>>> {
        self.done = true;
        self.state.refusal.set(Some(refusal));
        let error = match refusal {
            Refusal::FormTooLarge { .. } | Refusal::BodyTooLarge { .. } => PayloadError::Overflow,
            Refusal::Idle(_) | Refusal::TooSlow { .. } => PayloadError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                refusal.to_string(),
            )),
        };
        Poll::Ready(Some(Err(error)))
    }

    /// The next moment a time limit can be crossed while waiting.
    fn next_check(&self, now: Instant) -> Instant {
        let limits = self.state.limits;
        let idle = self.waiting_since.unwrap_or(now) + limits.idle_timeout;
        if limits.min_bytes_per_sec == 0 {
            return idle;
        }
        let window_left = limits.rate_window.saturating_sub(self.window_waited);
        idle.min(self.counted_since.unwrap_or(now) + window_left)
    }

    /// Judges the rate window once enough waiting time has been counted in it, then starts the
    /// next window.
    fn check_rate(&mut self, now: Instant) -> Option<Refusal> {
        let limits = self.state.limits;
        if limits.min_bytes_per_sec == 0 {
            return None;
        }
        let current = self
            .counted_since
            .map_or(Duration::ZERO, |since| now - since);
        if self.window_waited + current < limits.rate_window {
            return None;
        }
        let needed = limits
            .min_bytes_per_sec
            .saturating_mul(limits.rate_window.as_secs().max(1));
        if self.window_bytes < needed {
            return Some(Refusal::TooSlow {
                min_bytes_per_sec: limits.min_bytes_per_sec,
            });
        }
        self.window_waited = Duration::ZERO;
        self.window_bytes = 0;
        if self.counted_since.is_some() {
            self.counted_since = Some(now);
        }
        None
    }

    /// Checks both time limits at `now`, while waiting.
    fn check_waiting(&mut self, now: Instant) -> Option<Refusal> {
        let limits = self.state.limits;
        if let Some(since) = self.waiting_since
            && now - since >= limits.idle_timeout
        {
            return Some(Refusal::Idle(limits.idle_timeout));
        }
        self.check_rate(now)
    }
}

impl<S> Stream for GuardedBody<S>
where
    S: Stream<Item = Result<Bytes, PayloadError>> + Unpin,
{
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                let now = Instant::now();
                let before = self.state.consumed.get();
                self.state.consumed.set(before + chunk.len() as u64);
                // A chunk is judged by where it starts: the connection delivers chunks of its own
                // size, and the one that carries the file's part header may hold the file's
                // first bytes too, before the handler can say the file has started. So the
                // parser holds at most the allowance plus one chunk.
                if before >= self.state.allowance.get() {
                    let limits = self.state.limits;
                    // Past the file's start the allowance includes the file: crossing it means
                    // the body as a whole is too large.
                    let refusal = if self.state.allowance.get() > limits.form_overhead {
                        Refusal::BodyTooLarge {
                            limit: limits.max_file_size,
                        }
                    } else {
                        Refusal::FormTooLarge {
                            limit: limits.form_overhead,
                        }
                    };
                    return self.refuse(refusal);
                }
                // The wait ends; its time counts towards the rate window, and so does the chunk.
                if let Some(since) = self.counted_since.take() {
                    self.window_waited += now - since;
                }
                self.waiting_since = None;
                self.window_bytes += chunk.len() as u64;
                if let Some(refusal) = self.check_rate(now) {
                    return self.refuse(refusal);
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(other) => {
                if other.is_none() {
                    self.done = true;
                    self.state.ended_at.set(Some(Instant::now()));
                }
                Poll::Ready(other)
            }
            Poll::Pending => {
                let now = Instant::now();
                if self.waiting_since.is_none() {
                    self.waiting_since = Some(now);
                    self.counted_since = Some(now);
                    let next = self.next_check(now);
                    self.timer.as_mut().reset(next);
                }
                loop {
                    if self.timer.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    let now = Instant::now();
                    if let Some(refusal) = self.check_waiting(now) {
                        return self.refuse(refusal);
                    }
                    // A rate window ended in good standing: wait for the next check.
                    let next = self.next_check(now);
                    self.timer.as_mut().reset(next);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use futures::StreamExt as _;

    use super::*;

    fn limits() -> BodyLimits {
        BodyLimits {
            form_overhead: 10,
            max_file_size: 100,
            idle_timeout: Duration::from_secs(5),
            min_bytes_per_sec: 0,
            rate_window: Duration::from_secs(10),
        }
    }

    fn chunks(sizes: &[usize]) -> impl Stream<Item = Result<Bytes, PayloadError>> + Unpin {
        futures::stream::iter(
            sizes
                .iter()
                .map(|&n| Ok(Bytes::from(vec![b'x'; n])))
                .collect::<Vec<_>>(),
        )
    }

    #[tokio::test]
    async fn bytes_outside_the_file_are_bounded() {
        // The second chunk starts within the allowance and may end past it; the third starts
        // past it.
        let (guard, body) = BodyGuard::wrap(chunks(&[6, 6, 6, 6]), limits());
        let items: Vec<_> = body.collect().await;
        assert!(items[0].is_ok() && items[1].is_ok());
        assert!(matches!(items[2], Err(PayloadError::Overflow)));
        assert_eq!(items.len(), 3, "nothing is read past the refusal");
        assert_eq!(guard.refusal(), Some(Refusal::FormTooLarge { limit: 10 }));
    }

    #[tokio::test]
    async fn the_file_lifts_the_allowance_by_its_limit_only() {
        let (guard, mut body) = BodyGuard::wrap(chunks(&[8, 50, 50, 10, 1]), limits());
        assert!(body.next().await.unwrap().is_ok());
        guard.file_started();
        // 8 + 100 (file) + 10 (form) = 118 bytes may be read; the fifth chunk starts past them.
        for _ in 0..3 {
            assert!(body.next().await.unwrap().is_ok());
        }
        assert!(matches!(
            body.next().await.unwrap(),
            Err(PayloadError::Overflow)
        ));
        assert_eq!(guard.refusal(), Some(Refusal::BodyTooLarge { limit: 100 }));
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_body_is_cut_after_the_idle_timeout() {
        let silent = futures::stream::iter([Ok(Bytes::from_static(b"abc"))])
            .chain(futures::stream::pending());
        let (guard, mut body) = BodyGuard::wrap(Box::pin(silent), limits());
        assert!(body.next().await.unwrap().is_ok());
        let started = Instant::now();
        assert!(matches!(
            body.next().await.unwrap(),
            Err(PayloadError::Io(e)) if e.kind() == std::io::ErrorKind::TimedOut
        ));
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        assert_eq!(guard.refusal(), Some(Refusal::Idle(Duration::from_secs(5))));
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickle_below_the_minimum_rate_is_cut() {
        // One byte every 4 s: never idle for 5 s, but far below 10 bytes/s.
        let trickle = futures::stream::unfold(0u32, |n| async move {
            tokio::time::sleep(Duration::from_secs(4)).await;
            Some((Ok(Bytes::from_static(b"x")), n + 1))
        });
        let mut limits = limits();
        limits.form_overhead = 1000;
        limits.min_bytes_per_sec = 10;
        let (guard, body) = BodyGuard::wrap(Box::pin(trickle), limits);
        let started = Instant::now();
        let items: Vec<_> = body.collect().await;
        assert!(items.last().unwrap().is_err());
        assert!(
            started.elapsed() <= Duration::from_secs(12),
            "cut within one window and a byte: {:?}",
            started.elapsed()
        );
        assert_eq!(
            guard.refusal(),
            Some(Refusal::TooSlow {
                min_bytes_per_sec: 10
            })
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_server_that_stops_reading_is_not_a_silent_client() {
        // Every chunk is there at once; the reader (a slow store) takes 60 s between reads.
        let (guard, mut body) = BodyGuard::wrap(chunks(&[1, 1, 1]), {
            let mut limits = limits();
            limits.min_bytes_per_sec = 10;
            limits
        });
        while let Some(item) = body.next().await {
            assert!(item.is_ok());
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
        assert_eq!(guard.refusal(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stall_after_the_end_is_noticed_and_never_before_it() {
        let (guard, mut body) = BodyGuard::wrap(chunks(&[3]), limits());
        let stalled = guard.ended_for(Duration::from_secs(1));
        futures::pin_mut!(stalled);
        assert!(
            tokio::time::timeout(Duration::from_secs(10), stalled.as_mut())
                .await
                .is_err(),
            "not while the body has not ended"
        );
        assert!(body.next().await.unwrap().is_ok());
        assert!(body.next().await.is_none());
        let started = Instant::now();
        stalled.await;
        assert_eq!(started.elapsed(), Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_steady_body_passes_every_window() {
        let steady = futures::stream::unfold(0u32, |n| async move {
            if n == 30 {
                return None;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            Some((Ok(Bytes::from(vec![b'x'; 20])), n + 1))
        });
        let mut limits = limits();
        limits.form_overhead = 10_000;
        limits.min_bytes_per_sec = 10;
        let (guard, body) = BodyGuard::wrap(Box::pin(steady), limits);
        let items: Vec<_> = body.collect().await;
        assert_eq!(items.len(), 30);
        assert!(items.iter().all(Result::is_ok));
        assert_eq!(guard.refusal(), None);
    }
}
