//! `plugs-api reprocess`: enqueues processing again for `ready` images (after a change of the
//! derived versions' settings, or for media uploaded before processing existed), with a progress
//! bar. The workers do the work; this only enqueues, skipping media that already have a job
//! waiting.

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use plugs_domain::EventId;

use crate::config::Settings;
use crate::state::{self, Migrations};

/// Media enqueued per database page.
const PAGE: usize = 500;

/// `reprocess`'s flags.
#[derive(Debug, Clone, clap::Args)]
pub struct ReprocessArgs {
    /// Only this event's media.
    #[arg(long)]
    pub event: Option<String>,
    /// Only this variant (`thumb-256`, `display`, `poster`, ...; repeatable); default: every
    /// variant.
    #[arg(long = "variant")]
    pub variants: Vec<String>,
}

/// Runs the command.
#[allow(clippy::print_stdout, reason = "the summary is this command's output")]
pub async fn run(settings: &Settings, args: ReprocessArgs) -> anyhow::Result<()> {
    let event: Option<EventId> = args
        .event
        .as_deref()
        .map(|text| text.parse().context("--event: not an event id"))
        .transpose()?;
    let mut known: Vec<String> = settings
        .processing
        .variants()
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    // A video's `poster` too (its thumbnails share the images' names).
    for (name, _) in settings.processing.video_variants() {
        if !known.contains(&name) {
            known.push(name);
        }
    }
    if let Some(unknown) = args.variants.iter().find(|name| !known.contains(name)) {
        anyhow::bail!(
            "--variant {unknown:?}: not a configured variant (configured: {})",
            known.join(", ")
        );
    }
    let variants = (!args.variants.is_empty()).then_some(args.variants.as_slice());
    let (service, _) = state::build_service(settings, Migrations::Apply).await?;
    let total = service
        .count_processable(event)
        .await
        .context("counting media failed")?;
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if let Ok(style) =
        ProgressStyle::with_template("{bar:40} {pos}/{len} media [{elapsed_precise}, eta {eta}]")
    {
        bar.set_style(style);
    }
    let (seen, enqueued) = service
        .reprocess(event, variants, PAGE, |seen, _| bar.set_position(seen))
        .await
        .context("enqueueing failed")?;
    bar.finish_and_clear();
    println!(
        "reprocess: {enqueued} of {seen} media enqueued (the others already had a job waiting)"
    );
    Ok(())
}
