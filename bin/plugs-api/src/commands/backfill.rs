//! `plugs-api backfill`: moves the files the replaced design kept in a PostgreSQL `BYTEA` column
//! into the store, each through the service's one upload path (`MediaService::import`: size,
//! sniffed type, SHA-256, `pending` then `ready`), with the key dated by the row's own creation
//! time. Bytes are read in chunks with `substring()`, so no file is ever whole in memory.
//!
//! Resumable: a row's media id is derived from the table and the row's id, so a second run finds
//! what the first finished (and skips it), and removes what a killed run left half-done before
//! moving that row again: every row is moved once, and no object is stored twice. Only with
//! `--clear-legacy` are the legacy bytes cleared, and only once the stored object has been read
//! back and matched its record.

use std::collections::BTreeMap;

use anyhow::Context as _;
use bytes::Bytes;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use plugs_domain::{EventId, MediaId, SNIFF_LEN, UserId};
use plugs_media::{ImportRequest, MediaService, UploadRequest, Verification};
use plugs_persistence::{LegacyColumns, LegacyRow, LegacyTable};
use plugs_storage::{ByteStream, StoreError};
use uuid::Uuid;

use crate::config::Settings;
use crate::state::{self, Migrations};

/// Bytes per `substring()` read.
const CHUNK: u32 = 1024 * 1024;

/// The namespace of the UUIDv5 ids derived from legacy ids (media: `TABLE/ID`; events: the
/// legacy event id, when it is not a UUID itself).
const NAMESPACE: Uuid = Uuid::from_u128(0x6d1f_0c8e_3b2a_4f5e_9a1d_7c4b_2e8f_0a13);

/// `backfill`'s flags.
#[derive(Debug, Clone, clap::Args)]
pub struct BackfillArgs {
    /// The legacy database (PostgreSQL), e.g. postgres://user@host/olddb; may be ours.
    #[arg(long)]
    pub from_url: String,
    /// The legacy table (`name` or `schema.name`).
    #[arg(long)]
    pub from_table: String,
    /// Legacy column names where they differ from the defaults, as `ours=theirs` pairs:
    /// id=id, data=file_data, filename=filename, content_type=content_type, event_id=event_id,
    /// uploaded_by=uploaded_by, created_at=created_at; title= and description= are optional.
    #[arg(long, value_delimiter = ',')]
    pub columns: Vec<String>,
    /// Owner of the events created for legacy event ids we lack (default: the row's uploader).
    #[arg(long)]
    pub owner_of_events: Option<String>,
    /// Rows read per query.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub batch: u32,
    /// Check every row (type, size) and report; store and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// After a row's object is stored and read back intact, set its legacy bytes to NULL.
    #[arg(long)]
    pub clear_legacy: bool,
}

/// What became of one row.
#[derive(Debug)]
enum Outcome {
    Moved { cleared: bool },
    WouldMove,
    Skipped { reason: String, cleared: bool },
    Failed(String),
}

#[derive(Debug, Default)]
struct Report {
    moved: u64,
    would_move: u64,
    cleared: u64,
    skipped: BTreeMap<String, u64>,
    failed: Vec<(String, String)>,
}

/// Runs the backfill; `Err` (non-zero exit) when a row failed.
pub async fn run(settings: &Settings, args: BackfillArgs) -> anyhow::Result<()> {
    let columns = parse_columns(&args.columns)?;
    let owner = args
        .owner_of_events
        .as_deref()
        .map(UserId::parse)
        .transpose()
        .context("--owner-of-events: not a valid user id")?;
    // The URL may carry a password: it is never printed.
    let legacy = LegacyTable::open(&args.from_url, &args.from_table, &columns)
        .await
        .context("--from-url/--from-table: cannot open the legacy table")?;
    let (service, _) = state::build_service(settings, Migrations::Apply).await?;
    let (total_rows, total_bytes) = legacy.totals().await?;
    let bar = progress_bar(total_bytes);
    let job = Job {
        service,
        legacy,
        table: args.from_table.clone(),
        owner,
        dry_run: args.dry_run,
        clear_legacy: args.clear_legacy,
    };

    let mut report = Report::default();
    let mut after = None;
    let mut done = 0u64;
    loop {
        let rows = job
            .legacy
            .rows_after(after.take(), args.batch as usize)
            .await?;
        let Some(last) = rows.last() else { break };
        after = Some(last.id.clone());
        for row in rows {
            let outcome = job.row(&row).await;
            bar.inc(u64::try_from(row.length.unwrap_or(0)).unwrap_or(0));
            done += 1;
            bar.set_message(format!("{done}/{total_rows} rows"));
            report.add(&row.id, outcome);
        }
    }
    bar.finish_and_clear();
    report.print(&args.from_table, args.dry_run, args.clear_legacy);
    if report.failed.is_empty() {
        Ok(())
    } else {
        anyhow::bail!(
            "{} row(s) could not be moved; see the report above",
            report.failed.len()
        )
    }
}

struct Job {
    service: MediaService,
    legacy: LegacyTable,
    table: String,
    owner: Option<UserId>,
    dry_run: bool,
    clear_legacy: bool,
}

impl Job {
    async fn row(&self, row: &LegacyRow) -> Outcome {
        match self.try_row(row).await {
            Ok(outcome) => outcome,
            Err(error) => Outcome::Failed(format!("{error:#}")),
        }
    }

    async fn try_row(&self, row: &LegacyRow) -> anyhow::Result<Outcome> {
        let media_id = MediaId::from_uuid(Uuid::new_v5(
            &NAMESPACE,
            format!("{}/{}", self.table, row.id).as_bytes(),
        ));
        let earlier = self.service.find_import(media_id).await?;
        if let Some(media) = &earlier
            && media.status == plugs_domain::MediaStatus::Ready
        {
            let cleared = self.clear_if_verified(row, media).await?;
            return Ok(Outcome::Skipped {
                reason: "moved by an earlier run".into(),
                cleared,
            });
        }
        let Some(length) = row.length else {
            return Ok(Outcome::Failed("no bytes (NULL)".into()));
        };
        let length = u64::try_from(length).unwrap_or(0);
        let uploaded_by = row
            .uploaded_by
            .as_deref()
            .map(UserId::parse)
            .transpose()
            .context("uploader is not a valid user id")?
            .or_else(|| self.owner.clone())
            .context("no uploader (and no --owner-of-events)")?;
        let event_id = row.event_id.as_deref().context("no event id")?;
        let event = event_id.parse::<Uuid>().map_or_else(
            |_| EventId::from_uuid(Uuid::new_v5(&NAMESPACE, event_id.as_bytes())),
            EventId::from_uuid,
        );
        let created_at = row.created_at.context("no created time")?;
        let upload = UploadRequest {
            title: row.title.clone(),
            description: row.description.clone(),
            filename: row.filename.clone(),
            declared_content_type: row.content_type.clone(),
            declared_size: Some(length),
            ..UploadRequest::default()
        };

        if self.dry_run {
            return self.check_only(row, &upload, length).await;
        }
        if let Some(unfinished) = earlier {
            self.service.discard_unfinished_import(&unfinished).await?;
        }
        let owner = self.owner.clone().unwrap_or_else(|| uploaded_by.clone());
        self.service
            .ensure_event(
                event,
                &owner,
                &format!("Imported event {event_id}"),
                created_at,
            )
            .await
            .context("creating the event")?;
        let request = ImportRequest {
            media_id,
            event_id: event,
            uploaded_by,
            created_at,
            upload,
        };
        let media = self
            .service
            .import(request, chunks(self.legacy.clone(), row.id.clone()))
            .await
            .map_err(|error| anyhow::anyhow!("refused: {}", error_chain(&error)))?;
        let cleared = self.clear_if_verified(row, &media).await?;
        Ok(Outcome::Moved { cleared })
    }

    /// What an import would decide before storing anything: size, and the sniffed type against
    /// the declared one and the file name.
    async fn check_only(
        &self,
        row: &LegacyRow,
        upload: &UploadRequest,
        length: u64,
    ) -> anyhow::Result<Outcome> {
        let policy = &self.service.config().policy;
        if length == 0 {
            return Ok(Outcome::Failed("refused: the file is empty".into()));
        }
        if length > policy.max_size_bytes {
            return Ok(Outcome::Failed(format!(
                "refused: {length} bytes, above the limit of {}",
                policy.max_size_bytes
            )));
        }
        let head = self
            .legacy
            .read_chunk(&row.id, 0, SNIFF_LEN as u32)
            .await?
            .unwrap_or_default();
        match policy.classify(
            &head,
            upload.declared_content_type.as_deref(),
            upload.filename.as_deref(),
        ) {
            Ok(_) => Ok(Outcome::WouldMove),
            Err(error) => Ok(Outcome::Failed(format!("refused: {error}"))),
        }
    }

    /// With `--clear-legacy`: reads the object back, and clears the legacy bytes only when it
    /// matches its record.
    async fn clear_if_verified(
        &self,
        row: &LegacyRow,
        media: &plugs_domain::EventMedia,
    ) -> anyhow::Result<bool> {
        if !self.clear_legacy || self.dry_run || row.length.is_none() {
            return Ok(false);
        }
        match self.service.verify_stored(media).await? {
            Verification::Intact => Ok(self.legacy.clear(&row.id).await?),
            other => anyhow::bail!(
                "stored as media {} but its object does not match ({other:?}); legacy bytes kept",
                media.id
            ),
        }
    }
}

/// Row `id`'s bytes as a stream of `substring()` reads: one chunk in memory at a time.
fn chunks(legacy: LegacyTable, id: String) -> ByteStream {
    Box::pin(futures::stream::try_unfold(
        (legacy, id, 0u64, false),
        |(legacy, id, offset, done)| async move {
            if done {
                return Ok(None);
            }
            let chunk = legacy
                .read_chunk(&id, offset, CHUNK)
                .await
                .map_err(|error| StoreError::Body {
                    source: Box::new(error),
                })?
                .unwrap_or_default();
            if chunk.is_empty() {
                return Ok(None);
            }
            let last = chunk.len() < CHUNK as usize;
            let next = offset + chunk.len() as u64;
            Ok(Some((Bytes::from(chunk), (legacy, id, next, last))))
        },
    ))
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn parse_columns(pairs: &[String]) -> anyhow::Result<LegacyColumns> {
    let mut columns = LegacyColumns::default();
    for pair in pairs {
        let (ours, theirs) = pair
            .split_once('=')
            .with_context(|| format!("--columns: {pair:?} is not ours=theirs"))?;
        let theirs = theirs.trim().to_owned();
        match ours.trim() {
            "id" => columns.id = theirs,
            "data" => columns.data = theirs,
            "filename" => columns.filename = theirs,
            "content_type" => columns.content_type = theirs,
            "event_id" => columns.event_id = theirs,
            "uploaded_by" => columns.uploaded_by = theirs,
            "created_at" => columns.created_at = theirs,
            "title" => columns.title = Some(theirs),
            "description" => columns.description = Some(theirs),
            other => anyhow::bail!(
                "--columns: unknown column {other:?} (id, data, filename, content_type, event_id, uploaded_by, created_at, title, description)"
            ),
        }
    }
    Ok(columns)
}

impl Report {
    fn add(&mut self, id: &str, outcome: Outcome) {
        match outcome {
            Outcome::Moved { cleared } => {
                self.moved += 1;
                self.cleared += u64::from(cleared);
            }
            Outcome::WouldMove => self.would_move += 1,
            Outcome::Skipped { reason, cleared } => {
                *self.skipped.entry(reason).or_default() += 1;
                self.cleared += u64::from(cleared);
            }
            Outcome::Failed(reason) => self.failed.push((id.to_owned(), reason)),
        }
    }

    #[allow(clippy::print_stdout, reason = "the report is this command's output")]
    fn print(&self, table: &str, dry_run: bool, clear_legacy: bool) {
        let mode = if dry_run {
            " (dry run: nothing stored or changed)"
        } else {
            ""
        };
        println!("backfill from {table}{mode}:");
        if dry_run {
            println!("  would move: {}", self.would_move);
        } else {
            println!("  moved:   {}", self.moved);
        }
        println!("  skipped: {}", self.skipped.values().sum::<u64>());
        for (reason, count) in &self.skipped {
            println!("    {count} {reason}");
        }
        println!("  failed:  {}", self.failed.len());
        for (id, reason) in &self.failed {
            println!("    row {id}: {reason}");
        }
        if clear_legacy {
            println!("  legacy bytes cleared: {}", self.cleared);
        }
    }
}

/// Rows and bytes with rate and ETA on stderr; nothing is drawn when stderr is not a terminal.
fn progress_bar(total_bytes: u64) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(total_bytes), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "backfill [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {msg}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_map_ours_to_theirs() {
        let columns = parse_columns(&["data=blob".into(), " title = caption".into()]).unwrap();
        assert_eq!(columns.data, "blob");
        assert_eq!(columns.title.as_deref(), Some("caption"));
        assert_eq!(columns.id, "id");
        assert!(parse_columns(&["size=bytes".into()]).is_err());
        assert!(parse_columns(&["data".into()]).is_err());
    }

    #[test]
    fn ids_derive_the_same_way_every_run() {
        let a = Uuid::new_v5(&NAMESPACE, b"files/17");
        assert_eq!(a, Uuid::new_v5(&NAMESPACE, b"files/17"));
        assert_ne!(a, Uuid::new_v5(&NAMESPACE, b"files/18"));
    }
}
