//! External decoders (issue 12): HEIC and AVIF through libheif's `heif-convert`, a video's poster
//! frame through `ffmpeg`. Both are large C programs fed files from strangers, so neither runs in
//! this process: each job runs one as a child process, under `prlimit` (util-linux), which sets
//! the resource limits (address space, CPU seconds, no core file, largest file written) on
//! itself and then executes the decoder, so the limits hold from the decoder's first
//! instruction. The child gets an empty environment (no credential of the server's reaches it),
//! works in the job's private temporary directory, and is killed when the job is dropped (its
//! wall-time limit, or a lost lease). Whatever the decoder does, it can only fail its job.
//!
//! The decoder writes one PNG; the worker reads it back (bounded) and renders it with the same
//! pure-Rust path as every other image.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use plugs_domain::{AllowedType, ProcessableTypes};
use tokio::io::AsyncReadExt as _;

/// One external program, found on the search path at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalTool {
    /// Where it is (what the worker runs).
    pub path: PathBuf,
    /// The version it reports (`5.1.9-0+deb12u1`, `1.15.1`, ...).
    pub version: String,
}

/// The external programs the workers use, each `None` when it was not found. HEIC and AVIF get
/// derived versions only with `heif-convert` and `prlimit`, videos only with `ffmpeg` and
/// `prlimit`: no C decoder ever runs without its limits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExternalTools {
    /// `ffmpeg`: a video's poster frame.
    pub ffmpeg: Option<ExternalTool>,
    /// `heif-convert` (Debian's libheif-examples): HEIC and AVIF.
    pub heif_convert: Option<ExternalTool>,
    /// `prlimit` (util-linux): runs a decoder under resource limits.
    pub prlimit: Option<ExternalTool>,
}

/// The still-image types `heif-convert` decodes.
pub const HEIF_TYPES: [AllowedType; 2] = [AllowedType::Heic, AllowedType::Avif];
/// The video types whose poster frame `ffmpeg` extracts.
pub const VIDEO_TYPES: [AllowedType; 3] =
    [AllowedType::Mp4, AllowedType::QuickTime, AllowedType::Webm];

impl ExternalTools {
    /// Looks for `ffmpeg`, `heif-convert` and `prlimit` in the directories of `search_path` (the
    /// value of `PATH`, which the caller reads) and runs each once for its version; a program
    /// that is missing, not executable, or does not answer within 10 seconds counts as absent.
    pub async fn detect(search_path: Option<&OsStr>) -> Self {
        let (ffmpeg, heif_convert, prlimit) = tokio::join!(
            detect_one("ffmpeg", &["-version"], search_path),
            detect_one("heif-convert", &["-h"], search_path),
            detect_one("prlimit", &["--version"], search_path),
        );
        Self {
            ffmpeg,
            heif_convert,
            prlimit,
        }
    }

    /// Each program by name, found or not.
    pub fn by_name(&self) -> [(&'static str, Option<&ExternalTool>); 3] {
        [
            ("ffmpeg", self.ffmpeg.as_ref()),
            ("heif-convert", self.heif_convert.as_ref()),
            ("prlimit", self.prlimit.as_ref()),
        ]
    }

    /// Whether HEIC and AVIF can be decoded (`heif-convert` and `prlimit` found).
    pub fn decodes_heif(&self) -> bool {
        self.heif_convert.is_some() && self.prlimit.is_some()
    }

    /// Whether videos get a poster frame (`ffmpeg` and `prlimit` found).
    pub fn decodes_video(&self) -> bool {
        self.ffmpeg.is_some() && self.prlimit.is_some()
    }

    /// The types whose media get derived versions with these programs: the built-in still
    /// images, plus HEIC and AVIF, plus videos, as the programs allow.
    pub fn processable(&self) -> ProcessableTypes {
        let mut types = ProcessableTypes::default();
        if self.decodes_heif() {
            types = types.with(HEIF_TYPES);
        }
        if self.decodes_video() {
            types = types.with(VIDEO_TYPES);
        }
        types
    }
}

/// The first executable file called `name` in the directories of `search_path`.
fn find_on_path(name: &str, search_path: Option<&OsStr>) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    std::env::split_paths(search_path?)
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(name))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        })
}

async fn detect_one(
    name: &'static str,
    version_args: &[&str],
    search_path: Option<&OsStr>,
) -> Option<ExternalTool> {
    let path = find_on_path(name, search_path)?;
    let run = tokio::process::Command::new(&path)
        .args(version_args)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let output = match tokio::time::timeout(Duration::from_secs(10), run).await {
        Ok(Ok(output)) if output.status.success() => output,
        Ok(Ok(output)) => {
            tracing::warn!(program = name, path = %path.display(), status = %output.status, "external program found but does not run; not used");
            return None;
        }
        Ok(Err(error)) => {
            tracing::warn!(program = name, path = %path.display(), %error, "external program found but cannot be started; not used");
            return None;
        }
        Err(_) => {
            tracing::warn!(program = name, path = %path.display(), "external program did not answer within 10 s; not used");
            return None;
        }
    };
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    Some(ExternalTool {
        path,
        version: parse_version(&text),
    })
}

/// The version in a program's banner: the word after `version` on the first line that has one
/// (`ffmpeg version 5.1.9-0+deb12u1 ...`, `heif-convert  libheif version: 1.15.1`), else the
/// last word of the first line (`prlimit from util-linux 2.38.1`).
fn parse_version(banner: &str) -> String {
    let lines = || {
        banner
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty())
    };
    for line in lines() {
        let mut words = line.split_whitespace();
        if words.any(|word| word.trim_end_matches(':') == "version")
            && let Some(version) = words.next()
        {
            return version.to_owned();
        }
    }
    lines()
        .next()
        .and_then(|line| line.split_whitespace().last())
        .unwrap_or("unknown")
        .to_owned()
}

/// What a decoder child may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ChildLimits {
    /// Bytes of address space (`RLIMIT_AS`).
    pub(crate) address_space: u64,
    /// CPU seconds (`RLIMIT_CPU`; the kernel kills the child when it reaches them).
    pub(crate) cpu_seconds: u64,
    /// Largest file it may write (`RLIMIT_FSIZE`): bounds the PNG on the disk.
    pub(crate) file_size: u64,
    /// Most pixels a frame may have (`ffmpeg -max_pixels`).
    pub(crate) max_pixels: u64,
}

impl ChildLimits {
    fn describe(&self) -> String {
        format!(
            "limits: {} bytes of address space, {} CPU seconds",
            self.address_space, self.cpu_seconds
        )
    }
}

/// Which decoder a media needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decoder {
    /// `heif-convert`: HEIC, AVIF.
    Heif,
    /// `ffmpeg`: a video's poster frame, read with this demuxer only (the one for the sniffed
    /// type; ffmpeg would otherwise pick one from the content, playlists among them).
    Video {
        /// ffmpeg's `-f` name.
        demuxer: &'static str,
    },
}

impl Decoder {
    /// The decoder for a content type, if it needs one.
    pub(crate) fn for_type(content_type: &str) -> Option<Self> {
        let allowed = AllowedType::from_mime(content_type)?;
        if HEIF_TYPES.contains(&allowed) {
            Some(Self::Heif)
        } else if VIDEO_TYPES.contains(&allowed) {
            let demuxer = if allowed == AllowedType::Webm {
                "matroska"
            } else {
                "mov"
            };
            Some(Self::Video { demuxer })
        } else {
            None
        }
    }

    const fn program(self) -> &'static str {
        match self {
            Self::Heif => "heif-convert",
            Self::Video { .. } => "ffmpeg",
        }
    }
}

/// Why a decoder gave no image; `permanent` when trying again cannot help (the file, or the
/// limits, are the cause), not when a program is missing on this worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExternalError {
    pub(crate) message: String,
    pub(crate) permanent: bool,
}

impl ExternalError {
    fn permanent(message: String) -> Self {
        Self {
            message,
            permanent: true,
        }
    }

    fn transient(message: String) -> Self {
        Self {
            message,
            permanent: false,
        }
    }
}

/// Where a poster frame is taken: a second in, past a fade from black; a shorter clip gives its
/// first frame.
const POSTER_AT: &str = "1";

/// Decodes the file `input` with the decoder `decoder` into a PNG in `dir` (the job's private
/// directory, also the child's working directory) and returns the PNG's path.
pub(crate) async fn decode_to_png(
    tools: &ExternalTools,
    decoder: Decoder,
    input: &Path,
    dir: &Path,
    limits: ChildLimits,
) -> Result<PathBuf, ExternalError> {
    let missing = |name: &str| {
        ExternalError::transient(format!(
            "{name} is not installed on this worker (the {} media types need it)",
            decoder.program()
        ))
    };
    let prlimit = tools.prlimit.as_ref().ok_or_else(|| missing("prlimit"))?;
    // Named relative to the child's working directory, so its messages name no server path.
    let input = input.strip_prefix(dir).unwrap_or(input);
    let name_in = |file: &str| (Path::new(file).to_owned(), dir.join(file));
    match decoder {
        Decoder::Heif => {
            let program = tools
                .heif_convert
                .as_ref()
                .ok_or_else(|| missing("heif-convert"))?;
            let (out, out_path) = name_in("decoded.png");
            let args = [
                OsString::from("--quiet"),
                input.as_os_str().to_owned(),
                out.into_os_string(),
            ];
            run_limited(prlimit, program, "heif-convert", &args, dir, limits).await?;
            // A file of several top-level images is written as `decoded-1.png`, `decoded-2.png`,
            // ...: the first stands for the file.
            for candidate in [out_path, dir.join("decoded-1.png")] {
                if tokio::fs::metadata(&candidate).await.is_ok() {
                    return Ok(candidate);
                }
            }
            Err(ExternalError::permanent(
                "heif-convert wrote no image".to_owned(),
            ))
        }
        Decoder::Video { demuxer } => {
            let program = tools.ffmpeg.as_ref().ok_or_else(|| missing("ffmpeg"))?;
            let (out, out_path) = name_in("poster.png");
            for seek in [Some(POSTER_AT), None] {
                let args = ffmpeg_args(input, demuxer, &out, seek, limits.max_pixels);
                run_limited(prlimit, program, "ffmpeg", &args, dir, limits).await?;
                if tokio::fs::metadata(&out_path)
                    .await
                    .is_ok_and(|meta| meta.len() > 0)
                {
                    return Ok(out_path);
                }
            }
            Err(ExternalError::permanent(
                "ffmpeg found no video frame in the file".to_owned(),
            ))
        }
    }
}

/// One frame of `input` as an 8-bit RGB PNG, turned upright (ffmpeg applies a video's rotation
/// by default), decoded on one thread. The input is read with `demuxer` only and through the
/// `file` protocol only: a file crafted as a playlist or a concat list cannot make ffmpeg
/// fetch a URL or read another file into the poster.
fn ffmpeg_args(
    input: &Path,
    demuxer: &str,
    out: &Path,
    seek: Option<&str>,
    max_pixels: u64,
) -> Vec<OsString> {
    let mut args: Vec<OsString> = ["-hide_banner", "-nostdin", "-loglevel", "error"]
        .into_iter()
        .map(OsString::from)
        .collect();
    if let Some(at) = seek {
        args.extend(["-ss", at].map(OsString::from));
    }
    // ffmpeg takes at most INT_MAX here.
    let max_pixels = max_pixels.min(i32::MAX as u64).to_string();
    args.extend(
        [
            "-threads",
            "1",
            "-max_pixels",
            &max_pixels,
            "-protocol_whitelist",
            "file",
            "-f",
            demuxer,
            "-i",
        ]
        .map(OsString::from),
    );
    args.push(input.as_os_str().to_owned());
    args.extend(
        [
            "-map",
            "0:v:0",
            "-frames:v",
            "1",
            "-an",
            "-sn",
            "-dn",
            "-filter_threads",
            "1",
            "-pix_fmt",
            "rgb24",
            "-update",
            "1",
            "-y",
        ]
        .map(OsString::from),
    );
    args.push(out.as_os_str().to_owned());
    args
}

/// How much of a child's stderr is kept for the job's error.
const STDERR_TAIL: usize = 600;

/// Runs `program args` under `prlimit` with `limits`, in `dir`, with an empty environment;
/// killed if this future is dropped. `Ok` only when it exits with status 0.
async fn run_limited(
    prlimit: &ExternalTool,
    program: &ExternalTool,
    name: &str,
    args: &[OsString],
    dir: &Path,
    limits: ChildLimits,
) -> Result<(), ExternalError> {
    let mut command = tokio::process::Command::new(&prlimit.path);
    command
        .arg(format!("--as={}", limits.address_space))
        .arg(format!("--cpu={}", limits.cpu_seconds))
        .arg("--core=0")
        .arg(format!("--fsize={}", limits.file_size))
        .arg("--")
        .arg(&program.path)
        .args(args)
        .current_dir(dir)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn().map_err(|error| {
        ExternalError::transient(format!(
            "cannot start {name} under prlimit ({}): {error}",
            prlimit.path.display()
        ))
    })?;
    let stderr = child.stderr.take();
    let tail = async move {
        let mut tail: Vec<u8> = Vec::new();
        let Some(mut stderr) = stderr else {
            return tail;
        };
        let mut chunk = [0_u8; 4096];
        // Read to the end (a child blocked on a full pipe would never exit), keeping the end.
        while let Ok(n) = stderr.read(&mut chunk).await {
            if n == 0 {
                break;
            }
            tail.extend_from_slice(&chunk[..n]);
            if tail.len() > STDERR_TAIL * 2 {
                tail.drain(..tail.len() - STDERR_TAIL);
            }
        }
        tail
    };
    let (status, tail) = tokio::join!(child.wait(), tail);
    let status = status
        .map_err(|error| ExternalError::transient(format!("cannot wait for {name}: {error}")))?;
    if status.success() {
        return Ok(());
    }
    let said = String::from_utf8_lossy(&tail[tail.len().saturating_sub(STDERR_TAIL)..])
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    Err(ExternalError::permanent(failure_message(
        name, status, &said, limits,
    )))
}

// Linux signal numbers (the only platform the workers run decoders on).
const SIGABRT: i32 = 6;
const SIGKILL: i32 = 9;
const SIGSEGV: i32 = 11;
const SIGXCPU: i32 = 24;
const SIGXFSZ: i32 = 25;

/// Why a child failed, in words, always with the limits it ran under.
fn failure_message(name: &str, status: ExitStatus, said: &str, limits: ChildLimits) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    let out_of_memory = [
        "bad_alloc",
        "Cannot allocate memory",
        "failed to map segment",
    ]
    .iter()
    .any(|sign| said.contains(sign));
    let what = match (status.signal(), status.code()) {
        (Some(SIGXCPU), _) => format!(
            "{name} was stopped at its CPU-time limit of {} seconds (SIGXCPU)",
            limits.cpu_seconds
        ),
        // With equal soft and hard limits the kernel kills at the CPU limit with SIGKILL, but so
        // do the out-of-memory killer and an operator: name the limit as one possible cause.
        (Some(SIGKILL), _) => format!(
            "{name} was killed (SIGKILL): at its CPU-time limit of {} seconds, or by the system \
             (out of memory, an operator)",
            limits.cpu_seconds
        ),
        (Some(SIGXFSZ), _) => format!(
            "{name} was stopped at its file-size limit of {} bytes",
            limits.file_size
        ),
        (Some(SIGABRT | SIGSEGV), _) | (_, Some(_)) if out_of_memory => format!(
            "{name} ran out of memory at its address-space limit of {} bytes ({status})",
            limits.address_space
        ),
        (Some(signal), _) => format!("{name} crashed (signal {signal})"),
        (None, _) => format!("{name} could not decode the file ({status})"),
    };
    let said = if said.is_empty() {
        String::new()
    } else {
        format!(": {said}")
    };
    format!("{what}{said} ({})", limits.describe())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_from_the_banners() {
        assert_eq!(
            parse_version("ffmpeg version 5.1.9-0+deb12u1 Copyright (c) 2000-2026\nbuilt with"),
            "5.1.9-0+deb12u1"
        );
        assert_eq!(
            parse_version(" heif-convert  libheif version: 1.15.1\n-----\nUsage: ..."),
            "1.15.1"
        );
        assert_eq!(parse_version("prlimit from util-linux 2.38.1\n"), "2.38.1");
        assert_eq!(parse_version(""), "unknown");
    }

    /// The input options come before `-i`: ffmpeg reads the file with the sniffed type's
    /// demuxer and the `file` protocol only.
    #[test]
    fn ffmpeg_reads_the_input_with_one_demuxer_and_no_network() {
        let args = ffmpeg_args(
            Path::new("original"),
            "mov",
            Path::new("poster.png"),
            None,
            100,
        );
        let args: Vec<&str> = args.iter().filter_map(|a| a.to_str()).collect();
        let input = args.iter().position(|a| *a == "-i").unwrap();
        assert_eq!(args[input + 1], "original");
        let before = &args[..input];
        let value = |flag: &str| {
            let at = before.iter().position(|a| *a == flag).unwrap();
            before[at + 1]
        };
        assert_eq!(value("-f"), "mov");
        assert_eq!(value("-protocol_whitelist"), "file");
        assert_eq!(value("-max_pixels"), "100");
    }

    #[test]
    fn decoders_by_type() {
        assert_eq!(Decoder::for_type("image/heic"), Some(Decoder::Heif));
        assert_eq!(Decoder::for_type("image/heif"), Some(Decoder::Heif));
        assert_eq!(Decoder::for_type("image/avif"), Some(Decoder::Heif));
        for (video, demuxer) in [
            ("video/mp4", "mov"),
            ("video/quicktime", "mov"),
            ("video/webm", "matroska"),
        ] {
            assert_eq!(Decoder::for_type(video), Some(Decoder::Video { demuxer }));
        }
        assert_eq!(Decoder::for_type("image/jpeg"), None);
        assert_eq!(Decoder::for_type("audio/mpeg"), None);
    }

    #[test]
    fn without_prlimit_no_external_type_is_processable() {
        let tool = || {
            Some(ExternalTool {
                path: PathBuf::from("/usr/bin/x"),
                version: "1".into(),
            })
        };
        let mut tools = ExternalTools {
            ffmpeg: tool(),
            heif_convert: tool(),
            prlimit: None,
        };
        assert_eq!(tools.processable(), ProcessableTypes::default());
        tools.prlimit = tool();
        let all = tools.processable();
        assert!(all.contains("image/heic") && all.contains("image/avif"));
        assert!(all.contains("video/webm") && all.contains("image/png"));
        tools.ffmpeg = None;
        assert!(!tools.processable().contains("video/mp4"));
        assert!(tools.processable().contains("image/heic"));
    }
}
