//! The command line: `serve` (the default), `migrate`, `token`, `gc`, `check`, `bucket`,
//! `scrub`, `backfill`, `worker`, `reprocess`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::config::FlagOverrides;

/// plugs-api: the media API of the events backend, and its operator commands.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    /// TOML settings file (lower-case names of the environment settings).
    #[arg(long, global = true, env = "PLUGS_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on (overrides BIND_ADDR).
    #[arg(long, global = true)]
    pub bind_addr: Option<String>,
    /// Directory of the embedded defaults (overrides DATA_DIR).
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
    /// `text` or `json` (overrides LOG_FORMAT).
    #[arg(long, global = true)]
    pub log_format: Option<String>,
    /// What to do; `serve` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
}

impl Cli {
    /// The flags that override settings.
    pub fn overrides(&self) -> FlagOverrides {
        FlagOverrides {
            bind_addr: self.bind_addr.clone(),
            data_dir: self.data_dir.clone(),
            log_format: self.log_format.clone(),
        }
    }
}

/// The subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Run the HTTP server (applies pending migrations first).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Print a bearer token for a user (HS256 with JWT_SECRET or the development secret).
    Token {
        /// The user id (the token's `sub`).
        #[arg(long)]
        user: String,
        /// How long the token is valid, like 15m, 1h, 7d.
        #[arg(long, default_value = "1h", value_parser = parse_duration)]
        ttl: Duration,
    },
    /// Reconcile the database with the object store: roll back or finish half-done uploads and
    /// deletes, find objects no record claims. A dry run unless --apply.
    Gc {
        /// Change things (default: only report what would be done).
        #[arg(long)]
        apply: bool,
        /// Only touch records and objects older than this (default GC_GRACE).
        #[arg(long, value_parser = parse_duration)]
        grace: Option<Duration>,
    },
    /// Check the deployment against the configured store and database: credentials and where
    /// they come from, the bucket, a probe object written with the configured encryption,
    /// fetched through a presigned URL and deleted, migrations, the clock. Exits non-zero when
    /// any check fails.
    Check,
    /// Bucket setup (S3 only): `init` applies encryption, public access block, lifecycle rules
    /// and CORS, merged with rules plugs-media did not write; `show` prints the configuration
    /// and what `init` would change; `replicate` sets up replication to another bucket.
    Bucket {
        /// What to do with the bucket.
        #[command(subcommand)]
        command: crate::commands::bucket::BucketCommand,
    },
    /// Integrity: re-read stored objects (streamed, rate-limited) and compare each one's size
    /// and SHA-256 with its record; reports missing and differing objects and exits non-zero
    /// when there is any.
    Scrub(crate::commands::scrub::ScrubArgs),
    /// Move files kept in a legacy PostgreSQL table's BYTEA column into the store, each
    /// through the upload checks, dated by its row; resumable, reports moved, skipped and
    /// failed rows. `--clear-legacy` clears a row's bytes once its object is verified.
    Backfill(crate::commands::backfill::BackfillArgs),
    /// Work the processing queue (thumbnails, display copies) without serving HTTP, until
    /// SIGTERM: a separate worker fleet beside (or instead of) the workers inside `serve`.
    Worker(crate::commands::worker::WorkerArgs),
    /// Enqueue processing again for ready images, of one event or all, for every variant or
    /// the named ones; shows a progress bar.
    Reprocess(crate::commands::reprocess::ReprocessArgs),
}

/// Parses a duration flag: `90s`, `15m`, `1h 30m`, `7d` (humantime's units), or a bare number
/// of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text
            .parse()
            .map(Duration::from_secs)
            .map_err(|_| format!("duration {text:?} is too long"));
    }
    humantime::parse_duration(text).map_err(|error| {
        format!("invalid duration {text:?} ({error}): expected like 90s, 15m, 1h, 7d")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("99999999999999999999").is_err());
    }

    #[test]
    fn serve_is_the_default_and_subcommands_parse() {
        let cli = Cli::try_parse_from(["plugs-api"]).unwrap();
        assert!(cli.command.is_none());
        let cli =
            Cli::try_parse_from(["plugs-api", "token", "--user", "alice", "--ttl", "2h"]).unwrap();
        assert!(
            matches!(cli.command, Some(Command::Token { user, ttl }) if user == "alice" && ttl.as_secs() == 7200)
        );
        let cli = Cli::try_parse_from(["plugs-api", "gc", "--apply", "--grace", "10m"]).unwrap();
        assert!(
            matches!(cli.command, Some(Command::Gc { apply: true, grace: Some(g) }) if g.as_secs() == 600)
        );
        let cli = Cli::try_parse_from(["plugs-api", "gc"]).unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Gc {
                apply: false,
                grace: None
            })
        ));
        assert!(
            Cli::try_parse_from(["plugs-api", "token"]).is_err(),
            "--user is required"
        );
    }
}
