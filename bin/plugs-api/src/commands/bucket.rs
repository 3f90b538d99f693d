//! `plugs-api bucket init|show|replicate`: the bucket's encryption, public access block,
//! lifecycle rules, CORS, versioning and replication, applied idempotently and merged with the
//! rules this service did not write (see `plugs_storage::S3Store::plan_bucket`).

use anyhow::Context as _;
use clap::Subcommand;
use plugs_storage::{ArchiveRule, BucketSetup, BucketState, S3Store, ServerSideEncryption};

use crate::config::Settings;

/// `bucket` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum BucketCommand {
    /// Apply the bucket configuration the service needs; prints what it changed. Safe to run
    /// again: a second run changes nothing.
    Init {
        /// Create the bucket first when it does not exist.
        #[arg(long)]
        create: bool,
        /// Replace rules and settings that plugs-media did not write where they conflict.
        #[arg(long)]
        force: bool,
        /// The lifecycle rules' numbers.
        #[command(flatten)]
        lifecycle: LifecycleArgs,
    },
    /// Print the bucket's configuration and what `init` would change.
    Show {
        /// The lifecycle rules' numbers.
        #[command(flatten)]
        lifecycle: LifecycleArgs,
    },
    /// Disaster recovery: versioning on both buckets and a replication rule for `events/`.
    Replicate {
        /// The destination bucket (name or ARN), usually in another region.
        #[arg(long)]
        to: String,
        /// The IAM role S3 assumes to replicate (docs/S3.md lists its policy).
        #[arg(long)]
        role: String,
        /// KMS key for the replicas (default: S3_SSE_KMS_KEY_ID when S3_SSE=aws:kms).
        #[arg(long)]
        replica_kms_key_id: Option<String>,
        /// Replace a replication configuration that uses another role.
        #[arg(long)]
        force: bool,
    },
}

/// The lifecycle rules' numbers.
#[derive(Debug, Clone, clap::Args)]
pub struct LifecycleArgs {
    /// Abort incomplete multipart uploads this many days after they started.
    #[arg(long, default_value_t = 2)]
    pub abort_multipart_days: i32,
    /// Expire staged direct uploads (`uploads/`) after this many days.
    #[arg(long, default_value_t = 2)]
    pub staging_expire_days: i32,
    /// Automatic archiving (off unless given): move originals (objects tagged
    /// plugs-media-role=original at upload; thumbnails are not) to --archive-storage-class this
    /// many days after upload.
    #[arg(long)]
    pub archive_after_days: Option<i32>,
    /// The class originals move to: GLACIER_IR (default; downloads keep working), STANDARD_IA,
    /// ONEZONE_IA, INTELLIGENT_TIERING, or GLACIER / DEEP_ARCHIVE (downloads answer 409 until
    /// an operator restores the object).
    #[arg(long, default_value = "GLACIER_IR", requires = "archive_after_days")]
    pub archive_storage_class: String,
}

/// The prefix every media object lives under.
const MEDIA_PREFIX: &str = "events/";
/// The direct-upload staging prefix.
const STAGING_PREFIX: &str = "uploads/";

/// Runs a `bucket` subcommand.
pub async fn run(settings: &Settings, command: BucketCommand) -> anyhow::Result<()> {
    let store = crate::commands::check::s3_store(settings).await?;
    match command {
        BucketCommand::Init {
            create,
            force,
            lifecycle,
        } => {
            if create {
                store
                    .ensure_bucket()
                    .await
                    .with_context(|| format!("creating bucket {}", store.bucket()))?;
            }
            let plan = store
                .plan_bucket(&setup(settings, &lifecycle)?)
                .await
                .context("reading the bucket's configuration")?;
            if !plan.conflicts.is_empty() && !force {
                print_lines(
                    "conflicts (nothing changed; pass --force to replace)",
                    &plan.conflicts,
                );
                anyhow::bail!(
                    "{} conflict(s) with configuration plugs-media did not write",
                    plan.conflicts.len()
                );
            }
            let changed = store
                .apply_bucket_plan(&plan, force)
                .await
                .context("applying the bucket configuration")?;
            if changed.is_empty() {
                say(&format!(
                    "bucket {}: already set up, nothing changed",
                    store.bucket()
                ));
            } else {
                print_lines(&format!("bucket {}: changed", store.bucket()), &changed);
            }
            Ok(())
        }
        BucketCommand::Show { lifecycle } => {
            let state = store
                .bucket_state()
                .await
                .context("reading the bucket's configuration")?;
            print_state(store.bucket(), &state);
            let plan = store
                .plan_bucket(&setup(settings, &lifecycle)?)
                .await
                .context("reading the bucket's configuration")?;
            if plan.changes.is_empty() {
                say("init would change nothing");
            } else {
                print_lines("init would change", &plan.changes);
            }
            if !plan.conflicts.is_empty() {
                print_lines("conflicts (init needs --force)", &plan.conflicts);
            }
            Ok(())
        }
        BucketCommand::Replicate {
            to,
            role,
            replica_kms_key_id,
            force,
        } => replicate(settings, &store, &to, &role, replica_kms_key_id, force).await,
    }
}

async fn replicate(
    settings: &Settings,
    store: &S3Store,
    to: &str,
    role: &str,
    replica_kms_key_id: Option<String>,
    force: bool,
) -> anyhow::Result<()> {
    if !role.starts_with("arn:") {
        anyhow::bail!("--role: expected an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)");
    }
    let replica_key = replica_kms_key_id.or_else(|| match &settings.encryption {
        ServerSideEncryption::Kms { key_id } => key_id.clone(),
        _ => None,
    });
    let changed = store
        .replicate_to(to, role, MEDIA_PREFIX, replica_key.as_deref(), force)
        .await
        .context("setting up replication")?;
    if changed.is_empty() {
        say(&format!(
            "bucket {}: replication to {to} already set up, nothing changed",
            store.bucket()
        ));
    } else {
        print_lines(&format!("bucket {}: changed", store.bucket()), &changed);
    }
    Ok(())
}

fn setup(settings: &Settings, lifecycle: &LifecycleArgs) -> anyhow::Result<BucketSetup> {
    if lifecycle.abort_multipart_days < 1 || lifecycle.staging_expire_days < 1 {
        anyhow::bail!("lifecycle days must be at least 1");
    }
    let archive = lifecycle
        .archive_after_days
        .map(|after_days| {
            let rule = ArchiveRule {
                after_days,
                storage_class: lifecycle.archive_storage_class.to_ascii_uppercase(),
                prefix: MEDIA_PREFIX.to_owned(),
            };
            rule.validate().map(|()| rule).map_err(|why| {
                anyhow::anyhow!("--archive-after-days/--archive-storage-class: {why}")
            })
        })
        .transpose()?;
    Ok(BucketSetup {
        encryption: settings.encryption.clone(),
        abort_multipart_days: lifecycle.abort_multipart_days,
        staging_expire_days: lifecycle.staging_expire_days,
        staging_prefix: STAGING_PREFIX.to_owned(),
        cors_origins: settings.cors_allowed_origins.clone(),
        archive,
    })
}

#[allow(clippy::print_stdout, reason = "the report is this command's output")]
fn say(line: &str) {
    println!("{line}");
}

fn print_lines(title: &str, lines: &[String]) {
    say(&format!("{title}:"));
    for line in lines {
        say(&format!("  - {line}"));
    }
}

fn print_state(bucket: &str, state: &BucketState) {
    say(&format!("bucket {bucket}"));
    say(&format!(
        "  default encryption: {}",
        match &state.encryption {
            Some((algorithm, Some(key))) => format!("{algorithm} (key {key})"),
            Some((algorithm, None)) => algorithm.clone(),
            None => "none".to_owned(),
        }
    ));
    say(&format!(
        "  public access blocked: {}",
        match state.public_access_blocked {
            Some(true) => "yes",
            Some(false) => "partly",
            None => "no configuration",
        }
    ));
    say(&format!(
        "  versioning: {}",
        state.versioning.as_deref().unwrap_or("never enabled")
    ));
    let sections: [(&str, &[String]); 3] = [
        ("lifecycle rules", &state.lifecycle),
        ("CORS rules", &state.cors),
        ("replication", &state.replication),
    ];
    for (name, lines) in sections {
        if lines.is_empty() {
            say(&format!("  {name}: none"));
        } else {
            say(&format!("  {name}:"));
            for line in lines {
                say(&format!("    - {line}"));
            }
        }
    }
}
