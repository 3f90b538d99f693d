//! Running the tools xtask drives: every command is shown before it runs, and a failure names it.

use std::ffi::OsString;
use std::fs;
use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use anyhow::{Context as _, Result, bail, ensure};

/// The workspace root, whatever directory `cargo xtask` was started from.
pub(crate) fn workspace_root() -> PathBuf {
    let xtask_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    xtask_dir.parent().unwrap_or(xtask_dir).to_path_buf()
}

/// `cargo`, the same one that runs xtask, in the workspace root.
pub(crate) fn cargo() -> Command {
    let program = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let mut command = Command::new(program);
    command.current_dir(workspace_root());
    command
}

/// Runs a command with its output going to the terminal; fails if it does not succeed.
pub(crate) fn run(command: &mut Command) -> Result<()> {
    let shown = display(command);
    eprintln!("$ {shown}");
    let status = command
        .status()
        .with_context(|| format!("could not start `{shown}`"))?;
    ensure!(status.success(), "`{shown}` failed ({status})");
    Ok(())
}

/// Runs a command whose output matters only when it fails: then the error carries that output.
pub(crate) fn run_quietly(command: &mut Command) -> Result<Output> {
    let shown = display(command);
    let output = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("could not start `{shown}`"))?;
    if !output.status.success() {
        bail!(
            "`{shown}` failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(output)
}

/// Whether a command exists and succeeds, with its output discarded (tool detection).
pub(crate) fn succeeds(command: &mut Command) -> bool {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// A command line as a user could paste it into a shell.
pub(crate) fn display(command: &Command) -> String {
    let program = command.get_program().to_string_lossy();
    let program = Path::new(program.as_ref()).file_name().map_or_else(
        || program.to_string(),
        |name| name.to_string_lossy().into_owned(),
    );
    std::iter::once(program)
        .chain(
            command
                .get_args()
                .map(|arg| shell_quote(&arg.to_string_lossy())),
        )
        .collect::<Vec<_>>()
        .join(" ")
}

/// A command line with the program's full path, for a shell script to run later.
pub(crate) fn display_full(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|word| shell_quote(&word.to_string_lossy()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Quotes a word for a POSIX shell, leaving plain words as they are for readability.
pub(crate) fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@,+%".contains(c));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// A port that was free a moment ago. Another process could take it before the server binds it;
/// the server then fails to start and says so, which is rare enough to accept.
pub(crate) fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("could not bind a free local port")?;
    Ok(listener.local_addr()?.port())
}

/// The last lines of a log file, for error messages about a server that did not start.
pub(crate) fn tail(path: &Path, lines: usize) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            let start = all.len().saturating_sub(lines);
            let mut tail = format!("--- last lines of {} ---\n", path.display());
            for line in &all[start..] {
                tail.push_str(line);
                tail.push('\n');
            }
            tail
        }
        Err(err) => format!("(no log at {}: {err})", path.display()),
    }
}

/// `cargo metadata` for the workspace members, which is where layering and target paths come from.
pub(crate) fn metadata() -> Result<serde_json::Value> {
    let output = run_quietly(cargo().args(["metadata", "--format-version", "1", "--no-deps"]))?;
    serde_json::from_slice(&output.stdout)
        .context("cargo metadata printed something that is not JSON")
}

/// Flushes stdout so that our lines and a child's output appear in the order they happened.
pub(crate) fn flush() {
    let _ = std::io::stdout().flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quote_leaves_plain_words_and_quotes_the_rest() {
        assert_eq!(
            shell_quote("http://127.0.0.1:9000"),
            "http://127.0.0.1:9000"
        );
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn display_shows_the_program_name_and_quoted_arguments() {
        let mut command = Command::new("/usr/bin/env");
        command.args(["echo", "two words"]);
        assert_eq!(display(&command), "env echo 'two words'");
    }
}
