//! plugs-api: parse the command line, load settings, start tracing, dispatch. The work lives in
//! the library (`plugs_api::commands`).

use clap::Parser as _;
use plugs_api::cli::Cli;
use plugs_api::config::Settings;

/// jemalloc rather than the system's allocator (feature `jemalloc`, on by default): under a
/// long mixed load the resident set kept growing with glibc's (+10.1 % from 200k to 1M
/// requests), and jemalloc gives freed pages back as they decay (docs/PERFORMANCE.md,
/// target 7). `--no-default-features` builds with the system's allocator.
#[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    // Before parsing: `.env` may set PLUGS_CONFIG, which clap reads.
    if let Err(err) = dotenvy::dotenv()
        && !err.not_found()
    {
        anyhow::bail!(".env: {err}");
    }
    let cli = Cli::parse();
    let settings = Settings::load(cli.config.as_deref(), &cli.overrides())?;
    plugs_api::commands::init_tracing(settings.log_format);
    plugs_api::commands::run(cli.command, settings).await
}
