//! `cargo xtask ci tus`: the real tus clients, unchanged, against the debug plugs-api: tuspy
//! (PyPI tus-py-client) and tus-js-client (npm, under Node) upload files of 1 KiB, 7 MiB and
//! 40 MiB in small chunks, on the embedded default (SQLite + local directory) and on PostgreSQL
//! with s3s-fs; tuspy once more through a proxy that cuts the connection in the middle of
//! PATCHes many times, so it resumes. Each final media's SHA-256, read back through the API,
//! must equal the file's.
//!
//! The clients live in the cache, installed on first use: tuspy in a virtualenv of its own,
//! tus-js-client in an npm prefix. The scripts that drive them are `xtask/tus/upload.py` and
//! `xtask/tus/upload.mjs`.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, Result, bail, ensure};

use crate::bench_api::http::{self, Api};
use crate::bench_api::{Database, create_bucket};
use crate::process::{self, cargo};
use crate::services::{Guard, S3_ACCESS_KEY, S3_SECRET_KEY, Services, cache_dir};

/// Pinned so every machine runs the same clients.
const TUSPY: &str = "tuspy==1.1.0";
const TUS_JS: &str = "tus-js-client@4.3.1";
const BUCKET: &str = "plugs-tus";
const JWT_SECRET: &str = "plugs-tus-jwt-secret-not-a-secret-0123456789";
const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
/// The files uploaded by each client on each backend.
const SIZES: [u64; 3] = [KIB, 7 * MIB, 40 * MIB];
/// Chunks below the server's 8 MiB part size, so most requests end inside a part (the staged
/// tail), and not dividing it, so parts straddle requests.
const PY_CHUNK: u64 = 3 * MIB;
const JS_CHUNK: u64 = 5 * MIB;
/// Through the cutting proxy: 2 MiB chunks, the connection cut about every 3 MiB.
const CUT_CHUNK: u64 = 2 * MIB;
const CUT_EVERY: u64 = 3 * MIB;

/// Both backends, both clients, the resume run.
pub(crate) fn run() -> Result<()> {
    let python = find_or_install_tuspy()?;
    let tus_js = find_or_install_tus_js()?;
    let binary = build()?;
    let scripts = process::workspace_root().join("xtask").join("tus");
    let scratch = Guard::new()?;
    let files_dir = scratch.dir().join("files");
    std::fs::create_dir_all(&files_dir)?;
    let mut files = Vec::new();
    for size in SIZES {
        let path = files_dir.join(format!("tus-{size}.png"));
        http::write_png_file(&path, size)?;
        files.push((path.clone(), sha256_file(&path)?));
    }
    let clients = Clients {
        python,
        tus_js,
        scripts,
    };

    // The embedded default.
    let local = Api {
        binary: binary.clone(),
        env: settings(&[(
            "DATA_DIR",
            scratch.dir().join("local").display().to_string(),
        )]),
        dir: scratch.dir().to_path_buf(),
    };
    clients.upload_everything(&local, "SQLite + local directory", &files)?;

    // PostgreSQL + s3s-fs.
    let services = Services::start()?;
    let vars: HashMap<&str, String> = services.env().into_iter().collect();
    let pg_url = vars
        .get("PLUGS_TEST_PG_URL")
        .context("services gave no PostgreSQL URL")?;
    let s3 = vars
        .get("PLUGS_TEST_S3S_ENDPOINT")
        .context("services gave no s3s-fs endpoint")?
        .clone();
    let database = Database::create(pg_url, "plugs_tus")?;
    create_bucket(&s3, BUCKET)?;
    let remote = Api {
        binary,
        env: settings(&[
            ("DATABASE_URL", database.url()),
            ("DATA_DIR", scratch.dir().join("s3").display().to_string()),
            ("S3_BUCKET_NAME", BUCKET.to_string()),
            ("S3_ENDPOINT_URL", s3),
            ("S3_FORCE_PATH_STYLE", "true".to_string()),
            ("S3_REGION", "us-east-1".to_string()),
            ("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY.to_string()),
            ("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY.to_string()),
        ]),
        dir: scratch.dir().to_path_buf(),
    };
    clients.upload_everything(&remote, "PostgreSQL + s3s-fs", &files)?;
    drop(database);
    drop(services);
    println!("tus: tuspy and tus-js-client uploads verified on both backends");
    Ok(())
}

fn settings(extra: &[(&str, String)]) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = [
        ("MAX_FILE_SIZE", (48 * MIB).to_string()),
        ("JWT_SECRET", JWT_SECRET.to_string()),
        ("RUST_LOG", "warn".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    env.extend(extra.iter().map(|(k, v)| ((*k).to_string(), v.clone())));
    env
}

struct Clients {
    python: PathBuf,
    tus_js: PathBuf,
    scripts: PathBuf,
}

impl Clients {
    /// Every client run against one server, each upload checked through the API.
    fn upload_everything(
        &self,
        api: &Api,
        backend: &str,
        files: &[(PathBuf, String)],
    ) -> Result<()> {
        let token = api.token("tus")?;
        let server = api.start()?;
        let base = server.base_url();
        let (status, event) = http::json_request(
            "POST",
            &format!("{base}/api/v1/events"),
            &token,
            Some(r#"{"title":"tus clients"}"#),
        )?;
        ensure!(
            status == 201,
            "creating an event answered {status}: {event}"
        );
        let event = event["id"].as_str().context("the event has no id")?;
        let endpoint = format!("{base}/api/v1/events/{event}/media/tus/");
        let paths: Vec<&Path> = files.iter().map(|(path, _)| path.as_path()).collect();

        let mut python = Command::new(&self.python);
        python
            .arg(self.scripts.join("upload.py"))
            .arg(&endpoint)
            .arg(PY_CHUNK.to_string())
            .args(&paths);
        self.check(backend, "tuspy", &mut python, &token, &base, event, files)?;

        let mut node = Command::new("node");
        node.arg(self.scripts.join("upload.mjs"))
            .arg(&endpoint)
            .arg(JS_CHUNK.to_string())
            .args(&paths)
            .env("TUS_JS_DIR", &self.tus_js);
        self.check(
            backend,
            "tus-js-client",
            &mut node,
            &token,
            &base,
            event,
            files,
        )?;

        // The largest file through the cutting proxy.
        let largest = &files[files.len() - 1..];
        let mut cut = Command::new(&self.python);
        cut.arg(self.scripts.join("upload.py"))
            .arg(&endpoint)
            .arg(CUT_CHUNK.to_string())
            .arg(&largest[0].0)
            .args(["--cut-every", &CUT_EVERY.to_string()]);
        self.check(
            backend,
            "tuspy, connections cut",
            &mut cut,
            &token,
            &base,
            event,
            largest,
        )?;
        drop(server);
        Ok(())
    }

    /// Runs one client and checks that every file it names became media with the file's SHA-256.
    #[allow(clippy::too_many_arguments)]
    fn check(
        &self,
        backend: &str,
        client: &str,
        command: &mut Command,
        token: &str,
        base: &str,
        event: &str,
        files: &[(PathBuf, String)],
    ) -> Result<()> {
        command.env("TUS_TOKEN", token).stdin(Stdio::null());
        eprintln!("$ {}", process::display(command));
        let output = command
            .stderr(Stdio::inherit())
            .output()
            .with_context(|| format!("could not start {client}"))?;
        ensure!(
            output.status.success(),
            "{client} on {backend} failed ({})",
            output.status
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        let uploaded: HashMap<&str, &str> = stdout
            .lines()
            .filter_map(|line| line.trim().rsplit_once(' '))
            .collect();
        for (path, sha256) in files {
            let path = path.display().to_string();
            let Some(media_id) = uploaded.get(path.as_str()) else {
                bail!("{client} on {backend} printed no media for {path}: {stdout}");
            };
            let (status, media) = http::json_request(
                "GET",
                &format!("{base}/api/v1/events/{event}/media/{media_id}"),
                token,
                None,
            )?;
            ensure!(
                status == 200,
                "GET media {media_id} answered {status}: {media}"
            );
            ensure!(
                media["sha256"].as_str() == Some(sha256.as_str()),
                "{client} on {backend}: {path} became media with SHA-256 {}, the file's is {sha256}",
                media["sha256"]
            );
            println!("tus: {backend}, {client}: {path} -> {media_id}, SHA-256 as the file's");
        }
        Ok(())
    }
}

/// Hex SHA-256 of a file, with coreutils' `sha256sum` (xtask has no hashing library).
fn sha256_file(path: &Path) -> Result<String> {
    let output = process::run_quietly(Command::new("sha256sum").arg(path))?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.split_whitespace()
        .next()
        .map(str::to_owned)
        .context("sha256sum printed nothing")
}

/// `$CACHE/tuspy-venv/bin/python`, with tuspy installed with pip on first use.
fn find_or_install_tuspy() -> Result<PathBuf> {
    let venv = cache_dir()?.join("tuspy-venv");
    let python = venv.join("bin").join("python");
    let installed = python.is_file()
        && process::succeeds(Command::new(&python).args(["-c", "import tusclient"]));
    if installed {
        return Ok(python);
    }
    eprintln!("tus: installing {TUSPY} into {}", venv.display());
    if !venv.join("bin").join("pip").is_file() {
        process::run(
            Command::new("python3")
                .args(["-m", "venv"])
                .arg(&venv)
                .stdout(io::stderr()),
        )
        .context(
            "could not create a Python virtualenv (on Debian: apt-get install python3-venv)",
        )?;
    }
    process::run(
        Command::new(venv.join("bin").join("pip"))
            .args(["install", "--disable-pip-version-check", TUSPY])
            .stdout(io::stderr()),
    )
    .context("could not install tuspy")?;
    Ok(python)
}

/// `$CACHE/tus-js`, an npm prefix with tus-js-client installed on first use.
fn find_or_install_tus_js() -> Result<PathBuf> {
    let prefix = cache_dir()?.join("tus-js");
    if prefix
        .join("node_modules")
        .join("tus-js-client")
        .join("package.json")
        .is_file()
    {
        return Ok(prefix);
    }
    eprintln!("tus: installing {TUS_JS} into {}", prefix.display());
    std::fs::create_dir_all(&prefix)?;
    process::run(
        Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--prefix"])
            .arg(&prefix)
            .arg(TUS_JS)
            .stdout(io::stderr()),
    )
    .context("could not install tus-js-client with npm (Node 20 and npm are needed)")?;
    Ok(prefix)
}

/// The debug plugs-api binary, built.
fn build() -> Result<PathBuf> {
    process::run(cargo().args(["build", "-p", "plugs-api", "--bin", "plugs-api"]))?;
    let metadata = process::metadata()?;
    let target = metadata["target_directory"]
        .as_str()
        .context("cargo metadata has no target_directory")?;
    Ok(Path::new(target).join("debug").join("plugs-api"))
}
