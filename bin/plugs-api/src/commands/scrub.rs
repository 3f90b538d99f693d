//! `plugs-api scrub`: re-reads stored objects and compares each with its `ready` record, size and
//! SHA-256, so that bytes that rotted, were replaced or vanished behind the service's back are
//! found before a user finds them. Reads stream (nothing holds an object), at a bounded rate so a
//! scrub can run beside live traffic; the exit status is non-zero when anything did not match.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt as _;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use plugs_domain::{EventId, EventMedia, MediaId, MediaStatus};
use plugs_persistence::{Database, EventRepository as _, MediaRepository as _};
use plugs_storage::{GetOptions, ObjectKey, ObjectStore, StoreError};
use rand::Rng as _;
use sha2::{Digest as _, Sha256};
use tokio::time::Instant;

use crate::config::Settings;
use crate::state::{self, Migrations};

/// Records asked of the database per page.
const PAGE: usize = 500;

/// `scrub`'s flags.
#[derive(Debug, Clone, clap::Args)]
pub struct ScrubArgs {
    /// Only this event's media.
    #[arg(long)]
    pub event: Option<String>,
    /// Only this many media, drawn at random (uniformly) from those in scope.
    #[arg(long)]
    pub sample: Option<usize>,
    /// Read at most this many MiB per second (default: as fast as the store answers).
    #[arg(long, value_parser = parse_rate)]
    pub max_mib_per_s: Option<f64>,
}

fn parse_rate(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => Err(format!(
            "{text:?} is not a positive number of MiB per second"
        )),
    }
}

/// What one object's check found.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Finding {
    /// Size and SHA-256 as recorded.
    Intact,
    /// No object under the record's key.
    Missing,
    /// The object differs from its record.
    Mismatch(String),
    /// In a storage class that must be restored before it can be read (GLACIER,
    /// DEEP_ARCHIVE): not read, not counted as a problem.
    Archived,
    /// The store or the record could not be read; the check says nothing about the bytes.
    Failed(String),
    /// The media was deleted (or began to be) while the scrub ran: its object going is no
    /// problem.
    Gone,
}

/// The counts of a run.
#[derive(Debug, Default)]
struct Summary {
    checked: u64,
    bytes: u64,
    intact: u64,
    missing: u64,
    mismatched: u64,
    archived: u64,
    failed: u64,
    gone: u64,
}

impl Summary {
    fn problems(&self) -> u64 {
        self.missing + self.mismatched + self.failed
    }
}

/// Runs the scrub; `Err` (a non-zero exit) when any object is missing, differs, or could not
/// be checked.
pub async fn run(settings: &Settings, args: ScrubArgs) -> anyhow::Result<()> {
    // Read-only: a schema behind the binary's is an error to fix with `migrate`, not to apply
    // from a check.
    let database = Arc::new(state::connect_database(settings, Migrations::Skip).await?);
    let (store, _) = state::build_store(settings).await?;
    let event = match &args.event {
        Some(text) => {
            let id: EventId = text.parse().context("--event: not an event id")?;
            if database.find_event(id).await?.is_none() {
                anyhow::bail!("--event: no event {id}");
            }
            Some(id)
        }
        None => None,
    };

    let scope = Scope { database, event };
    // The sample, or the size of the whole walk for the bar; a second walk then reads the
    // records page by page again, so memory does not grow with the table.
    let (sample, total_bytes) = match args.sample {
        Some(size) => {
            let sample = scope.sample(size).await?;
            let total = sample.iter().map(|m| m.size_bytes).sum();
            (Some(sample), total)
        }
        None => (None, scope.total_bytes().await?),
    };

    let bar = progress_bar(total_bytes);
    let mut pacer = Pacer::new(args.max_mib_per_s);
    let mut summary = Summary::default();
    let mut run = Run {
        database: &scope.database,
        store: store.as_ref(),
        bar: &bar,
        pacer: &mut pacer,
        summary: &mut summary,
    };
    match sample {
        Some(sample) => {
            for media in sample {
                run.check(media).await;
            }
        }
        None => {
            let mut after = None;
            loop {
                let page = scope.page(after).await?;
                let last = page.last().map(|m| m.id);
                let full = page.len() == PAGE;
                for media in page {
                    run.check(media).await;
                }
                match last {
                    Some(last) if full => after = Some(last),
                    _ => break,
                }
            }
        }
    }
    bar.finish_and_clear();
    print_summary(&summary, pacer.started.elapsed());
    match summary.problems() {
        0 => Ok(()),
        problems => anyhow::bail!("scrub found {problems} problem(s); see the lines above"),
    }
}

/// What checking one record needs.
struct Run<'a> {
    database: &'a Database,
    store: &'a dyn ObjectStore,
    bar: &'a ProgressBar,
    pacer: &'a mut Pacer,
    summary: &'a mut Summary,
}

impl Run<'_> {
    async fn check(&mut self, media: EventMedia) {
        let mut finding = check_object(self.store, &media, self.bar, self.pacer).await;
        // Records are listed before their objects are read, and a scrub runs beside live
        // traffic: a missing or different object is only a problem if its record still says
        // ready, unchanged, now.
        if matches!(finding, Finding::Missing | Finding::Mismatch(_)) {
            match self.database.find_media(media.id).await {
                Ok(Some(now)) if now.status == MediaStatus::Ready && now.s3_key == media.s3_key => {
                }
                Ok(_) => finding = Finding::Gone,
                Err(error) => {
                    finding = Finding::Failed(format!("re-reading the record failed: {error}"));
                }
            }
        }
        record(self.bar, &media, &finding, self.summary);
    }
}

/// Which records a run walks.
struct Scope {
    database: Arc<Database>,
    event: Option<EventId>,
}

impl Scope {
    /// The next page of `ready` records after `after`, in id order. For one event the whole
    /// event is one page (as deleting an event lists it).
    async fn page(&self, after: Option<MediaId>) -> anyhow::Result<Vec<EventMedia>> {
        match self.event {
            Some(event) => {
                if after.is_some() {
                    return Ok(Vec::new());
                }
                let mut media: Vec<EventMedia> = self
                    .database
                    .list_all_for_event(event)
                    .await
                    .context("listing the event's media failed")?
                    .into_iter()
                    .filter(|m| m.status == MediaStatus::Ready)
                    .collect();
                media.sort_by_key(|m| m.id);
                // All of it, however many: the next call (with `after`) answers nothing.
                Ok(media)
            }
            None => self
                .database
                .list_ready_by_id(after, PAGE)
                .await
                .context("listing media records failed"),
        }
    }

    async fn walk(&self, mut visit: impl FnMut(EventMedia)) -> anyhow::Result<()> {
        let mut after = None;
        loop {
            let page = self.page(after).await?;
            let full = page.len() == PAGE;
            let last = page.last().map(|m| m.id);
            page.into_iter().for_each(&mut visit);
            match last {
                Some(last) if full => after = Some(last),
                _ => return Ok(()),
            }
        }
    }

    async fn total_bytes(&self) -> anyhow::Result<u64> {
        let mut total = 0u64;
        self.walk(|media| total = total.saturating_add(media.size_bytes))
            .await?;
        Ok(total)
    }

    /// `size` records drawn uniformly (reservoir sampling: one walk, `size` records held).
    async fn sample(&self, size: usize) -> anyhow::Result<Vec<EventMedia>> {
        let mut rng = rand::rng();
        let mut reservoir = Vec::with_capacity(size.min(PAGE));
        let mut seen = 0usize;
        self.walk(|media| {
            seen += 1;
            if reservoir.len() < size {
                reservoir.push(media);
            } else {
                let slot = rng.random_range(0..seen);
                if slot < size {
                    reservoir[slot] = media;
                }
            }
        })
        .await?;
        Ok(reservoir)
    }
}

/// Streams one object through SHA-256 and compares it with the record.
async fn check_object(
    store: &dyn ObjectStore,
    media: &EventMedia,
    bar: &ProgressBar,
    pacer: &mut Pacer,
) -> Finding {
    let Some(expected_sha) = media.sha256.as_deref() else {
        return Finding::Failed("the record has no SHA-256 to compare with".into());
    };
    let key = match ObjectKey::parse(media.s3_key.clone()) {
        Ok(key) => key,
        Err(error) => return Finding::Failed(format!("the record's key is invalid: {error}")),
    };
    let object = match store.get(&key, GetOptions::default()).await {
        Ok(object) => object,
        Err(StoreError::NotFound { .. }) => return Finding::Missing,
        Err(StoreError::Archived { .. }) => return Finding::Archived,
        Err(error) => return Finding::Failed(format!("reading failed: {error}")),
    };
    let stored_size = object.meta.size;
    let mut body = object.body;
    let mut hasher = Sha256::new();
    let mut read = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(error) => {
                bar.inc(media.size_bytes.saturating_sub(read));
                return Finding::Failed(format!("reading failed after {read} bytes: {error}"));
            }
        };
        hasher.update(&chunk);
        let len = chunk.len() as u64;
        read += len;
        // Counted as the record's bytes at most, so a larger object cannot push the bar past
        // its end.
        bar.inc(len.min(media.size_bytes.saturating_sub(read - len)));
        pacer.pace(len).await;
    }
    bar.inc(media.size_bytes.saturating_sub(read));
    let actual_sha = hex::encode(hasher.finalize());
    if read != media.size_bytes {
        return Finding::Mismatch(format!(
            "size {read} bytes, recorded {} (SHA-256 {actual_sha}, recorded {expected_sha})",
            media.size_bytes
        ));
    }
    if read != stored_size {
        return Finding::Mismatch(format!(
            "read {read} bytes of an object the store says has {stored_size}"
        ));
    }
    if !actual_sha.eq_ignore_ascii_case(expected_sha) {
        return Finding::Mismatch(format!(
            "SHA-256 {actual_sha}, recorded {expected_sha} (size {read} bytes as recorded)"
        ));
    }
    Finding::Intact
}

#[allow(
    clippy::print_stdout,
    reason = "the findings are this command's output"
)]
fn record(bar: &ProgressBar, media: &EventMedia, finding: &Finding, summary: &mut Summary) {
    summary.checked += 1;
    let line = match finding {
        Finding::Intact => {
            summary.intact += 1;
            summary.bytes += media.size_bytes;
            None
        }
        Finding::Missing => {
            summary.missing += 1;
            Some("MISSING  no object under the key".to_owned())
        }
        Finding::Mismatch(what) => {
            summary.mismatched += 1;
            Some(format!("MISMATCH {what}"))
        }
        Finding::Archived => {
            summary.archived += 1;
            Some("archived (restore it to check: aws s3api restore-object)".to_owned())
        }
        Finding::Failed(why) => {
            summary.failed += 1;
            Some(format!("FAILED   {why}"))
        }
        Finding::Gone => {
            summary.gone += 1;
            None
        }
    };
    if let Some(line) = line {
        // Above the bar, on stdout, so the report can be piped or kept.
        bar.suspend(|| {
            println!(
                "{line}: media {} of event {} at {}",
                media.id, media.event_id, media.s3_key
            );
        });
    }
}

#[allow(clippy::print_stdout, reason = "the summary is this command's output")]
fn print_summary(summary: &Summary, elapsed: Duration) {
    println!(
        "scrub: checked {} object(s) in {:.1}s: {} intact ({} bytes), {} missing, {} mismatched, {} could not be checked, {} archived (not read), {} deleted while the scrub ran",
        summary.checked,
        elapsed.as_secs_f64(),
        summary.intact,
        summary.bytes,
        summary.missing,
        summary.mismatched,
        summary.failed,
        summary.archived,
        summary.gone,
    );
}

/// A bar of bytes with rate and ETA, on stderr; indicatif draws nothing when stderr is not a
/// terminal (cron, CI, a pipe), so logs stay clean.
fn progress_bar(total_bytes: u64) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(total_bytes), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "scrub [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// Keeps the average read rate under a limit: after each chunk, sleeps until the bytes read so
/// far are no ahead of the limit's schedule.
struct Pacer {
    started: Instant,
    bytes: u64,
    bytes_per_sec: Option<f64>,
}

impl Pacer {
    fn new(max_mib_per_s: Option<f64>) -> Self {
        Self {
            started: Instant::now(),
            bytes: 0,
            bytes_per_sec: max_mib_per_s.map(|mib| mib * 1024.0 * 1024.0),
        }
    }

    async fn pace(&mut self, bytes: u64) {
        self.bytes += bytes;
        let Some(rate) = self.bytes_per_sec else {
            return;
        };
        #[allow(
            clippy::cast_precision_loss,
            reason = "a byte count far below 2^52 in any scrub"
        )]
        let due = Duration::from_secs_f64(self.bytes as f64 / rate);
        let elapsed = self.started.elapsed();
        if due > elapsed {
            tokio::time::sleep(due - elapsed).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_must_be_positive_numbers() {
        assert_eq!(parse_rate("2.5"), Ok(2.5));
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("-1").is_err());
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("inf").is_err());
    }

    /// 3 MiB at 6 MiB/s takes half a second of schedule; the pacer sleeps it off in paused
    /// time (no wall-clock wait, no timing assertion on a loaded machine).
    #[tokio::test(start_paused = true)]
    async fn the_pacer_holds_reads_to_the_rate() {
        let mut pacer = Pacer::new(Some(6.0));
        let start = tokio::time::Instant::now();
        for _ in 0..3 {
            pacer.pace(1024 * 1024).await;
        }
        let slept = start.elapsed();
        assert!(
            slept >= Duration::from_millis(499) && slept < Duration::from_millis(600),
            "{slept:?}"
        );
        let mut unlimited = Pacer::new(None);
        let start = tokio::time::Instant::now();
        unlimited.pace(u64::MAX / 2).await;
        assert_eq!(start.elapsed(), Duration::ZERO);
    }
}
