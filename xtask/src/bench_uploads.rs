//! The rows of `cargo xtask bench api` for the two upload paths that do not go through a form:
//! direct uploads (the client PUTs to presigned URLs, the server only plans and completes) and
//! tus (resumable PATCHes of 8 MiB through the server). Both are driven with plain curl, as a
//! phone or a browser would, and compared with the bare SDK's PutObject of the same file to the
//! same store.

use std::fs::{self, File};
use std::io::{self, Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use serde_json::Value;

use super::http::{self, ApiServer};
use super::{Bench, MIB, NO_VERDICT, Row, median, mib, mib_per_s, verdict};
use crate::process;

/// The tus protocol version the API speaks.
const TUS_VERSION: &str = "1.0.0";

/// What one direct upload measured.
#[derive(Debug, Clone, Copy)]
struct DirectFigures {
    /// From the first PUT's start to the last one's end.
    transfer_seconds: f64,
    /// The server's CPU seconds during the PUTs (it only waits).
    transfer_cpu: f64,
    /// The server's resident set after the PUTs, and its idle mark before.
    transfer_rss_kib: u64,
    idle_hwm_kib: u64,
    /// `POST .../complete`: verification, read-back where needed, copy to the final key.
    complete_seconds: f64,
    complete_cpu: f64,
}

/// One PUT of a direct upload's plan: its part number (none for a single PUT), the presigned
/// URL, the headers it must carry, and the file it sends.
type PlannedPut = (Option<u32>, String, Vec<(String, String)>, PathBuf);

/// What one tus upload measured.
#[derive(Debug, Clone, Copy)]
struct TusFigures {
    seconds: f64,
    cpu: f64,
    hwm_kib: u64,
    idle_hwm_kib: u64,
}

impl Bench {
    /// Issue 11's row: direct uploads of each size in `direct_sizes_mib`, against the bare SDK.
    pub(super) fn direct_uploads(&mut self) -> Result<()> {
        let sizes = self.profile.direct_sizes_mib;
        let mut by_size = Vec::new();
        for &size in sizes {
            let bytes = size * MIB;
            let file = self.dir.join(format!("direct-{size}MiB.png"));
            http::write_png_file(&file, bytes)?;
            let mut rounds = Vec::new();
            let mut sdk = Vec::new();
            for round in 1..=self.profile.rounds {
                let figures = self.direct_upload_once(&file, bytes)?;
                let sdk_put = self.sdk(&file, "sdk-put")?.map(|s| s.mib_per_s);
                println!(
                    "round {round}/{} direct upload {size:>5} MiB: PUTs {:.1} MiB/s, server CPU \
                     {:.2} s and RSS {:.1} MiB (idle {:.1}) during them; complete {:.0} ms \
                     ({:.2} s CPU); bare SDK PutObject {}",
                    self.profile.rounds,
                    mib_per_s(bytes, figures.transfer_seconds),
                    figures.transfer_cpu,
                    mib(figures.transfer_rss_kib),
                    mib(figures.idle_hwm_kib),
                    figures.complete_seconds * 1e3,
                    figures.complete_cpu,
                    sdk_put.map_or("n/a".to_string(), |s| format!("{s:.1} MiB/s")),
                );
                process::flush();
                rounds.push(figures);
                sdk.extend(sdk_put);
            }
            let _ = fs::remove_file(&file);
            by_size.push((size, rounds, sdk));
        }
        for (size, rounds, sdk) in &by_size {
            let bytes = size * MIB;
            let rate = median(
                &rounds
                    .iter()
                    .map(|f| mib_per_s(bytes, f.transfer_seconds))
                    .collect::<Vec<_>>(),
            );
            let sdk = (!sdk.is_empty()).then(|| median(sdk));
            let ratio = sdk.map(|s| rate / s);
            let what = format!("direct upload {size} MiB (presigned PUTs + complete)");
            self.rows.push(Row {
                measure: format!("{what}: PUTs, MiB/s"),
                ours: format!("{rate:.1}"),
                reference: sdk.map_or("SDK n/a".to_string(), |s| format!("SDK PutObject {s:.1}")),
                ratio: ratio.map_or(String::new(), |r| format!("{r:.2}")),
                target: String::new(),
                verdict: NO_VERDICT,
            });
            let cpu = median(&rounds.iter().map(|f| f.transfer_cpu).collect::<Vec<_>>());
            let rss = rounds.iter().map(|f| f.transfer_rss_kib).max().unwrap_or(0);
            let idle = rounds.iter().map(|f| f.idle_hwm_kib).max().unwrap_or(0);
            self.rows.push(Row {
                measure: format!("{what}: server CPU s / RSS MiB during the PUTs"),
                ours: format!("{cpu:.2} / {:.1}", mib(rss)),
                reference: format!("idle server {:.1} MiB", mib(idle)),
                ratio: String::new(),
                target: "near idle".to_string(),
                verdict: NO_VERDICT,
            });
            let complete = median(
                &rounds
                    .iter()
                    .map(|f| f.complete_seconds)
                    .collect::<Vec<_>>(),
            );
            let complete_cpu = median(&rounds.iter().map(|f| f.complete_cpu).collect::<Vec<_>>());
            self.rows.push(Row {
                measure: format!("{what}: complete, ms (server CPU s)"),
                ours: format!("{:.0} ({complete_cpu:.2})", complete * 1e3),
                reference: String::new(),
                ratio: String::new(),
                target: String::new(),
                verdict: NO_VERDICT,
            });
        }
        Ok(())
    }

    /// One direct upload on a fresh server: plan, PUT the file (or its parts) with curl to the
    /// presigned URLs, complete; the media is deleted afterwards.
    fn direct_upload_once(&self, file: &Path, bytes: u64) -> Result<DirectFigures> {
        let server = self.api.start()?;
        let idle = server.memory()?;
        let event = self.create_event(&server, "bench direct uploads")?;
        let uploads = self.api_url(&server, &format!("/events/{event}/media/uploads"));
        let (status, plan) = http::json_request(
            "POST",
            &uploads,
            &self.token,
            Some(
                &serde_json::json!({
                    "filename": "payload.png",
                    "content_type": "image/png",
                    "size": bytes,
                })
                .to_string(),
            ),
        )?;
        ensure!(
            status == 201,
            "creating a direct upload answered {status}: {plan}"
        );
        let upload_id = plan["upload_id"]
            .as_str()
            .with_context(|| format!("the upload plan has no upload_id: {plan}"))?
            .to_string();

        // Parts are cut into files of their own before the clock starts, so that the PUTs read
        // them straight from disk as a phone would read its file.
        let mut puts: Vec<PlannedPut> = Vec::new();
        if let Some(url) = plan["url"].as_str() {
            puts.push((
                None,
                url.to_string(),
                headers_of(&plan["headers"]),
                file.to_path_buf(),
            ));
        } else {
            let part_size = plan["part_size"].as_u64().with_context(|| {
                format!("the upload plan has neither url nor part_size: {plan}")
            })?;
            let parts = plan["parts"]
                .as_array()
                .with_context(|| format!("the multipart plan has no parts: {plan}"))?;
            for part in parts {
                let number = part["part_number"]
                    .as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .with_context(|| format!("a part has no part_number: {part}"))?;
                let url = part["url"]
                    .as_str()
                    .with_context(|| format!("part {number} has no url"))?;
                let path = self.dir.join(format!("direct-part-{number}"));
                write_slice(file, &path, u64::from(number - 1) * part_size, part_size)?;
                puts.push((
                    Some(number),
                    url.to_string(),
                    headers_of(&part["headers"]),
                    path,
                ));
            }
        }

        let cpu_before = server.cpu_seconds()?;
        let started = Instant::now();
        let mut completed = Vec::new();
        for (number, url, headers, path) in &puts {
            let head = self.dir.join("direct-put-headers.txt");
            let mut command = presigned_put(url, headers, path, &head);
            let transfer = http::run_transfer(&mut command)?;
            ensure!(
                transfer.status == 200,
                "the presigned PUT{} answered {}",
                number.map_or(String::new(), |n| format!(" of part {n}")),
                transfer.status
            );
            if let Some(number) = number {
                let etag = header_value(&fs::read_to_string(&head)?, "etag")
                    .with_context(|| format!("the PUT of part {number} answered no ETag"))?;
                completed.push(serde_json::json!({ "part_number": number, "etag": etag }));
            }
        }
        let transfer_seconds = started.elapsed().as_secs_f64();
        let transfer_cpu = server.cpu_seconds()? - cpu_before;
        let transfer_rss_kib = server.memory()?.rss_kib;
        for (number, _, _, path) in &puts {
            if number.is_some() {
                let _ = fs::remove_file(path);
            }
        }

        let body = if completed.is_empty() {
            None
        } else {
            Some(serde_json::json!({ "parts": completed }).to_string())
        };
        let cpu_before = server.cpu_seconds()?;
        let started = Instant::now();
        let (mut status, mut media) = http::json_request(
            "POST",
            &format!("{uploads}/{upload_id}/complete"),
            &self.token,
            body.as_deref(),
        )?;
        // Above DIRECT_UPLOAD_ASYNC_COMPLETE_ABOVE the server verifies in the background and
        // answers 202: the complete step lasts until its status URL has the record, polled as
        // a client would (more often than its Retry-After, so the figure is not the poll's).
        while status == 202 {
            ensure!(
                started.elapsed() < Duration::from_secs(600),
                "a background completion of {bytes} bytes was still running after 10 minutes"
            );
            std::thread::sleep(Duration::from_millis(50));
            (status, media) =
                http::json_request("GET", &format!("{uploads}/{upload_id}"), &self.token, None)?;
        }
        let complete_seconds = started.elapsed().as_secs_f64();
        let complete_cpu = server.cpu_seconds()? - cpu_before;
        ensure!(
            (status == 201 || status == 200) && media["size_bytes"].as_u64() == Some(bytes),
            "completing a direct upload of {bytes} bytes answered {status}: {media}"
        );
        let id = media["id"]
            .as_str()
            .with_context(|| format!("the completed upload has no id: {media}"))?;
        self.delete_media(&server, &event, id)?;
        Ok(DirectFigures {
            transfer_seconds,
            transfer_cpu,
            transfer_rss_kib,
            idle_hwm_kib: idle.hwm_kib,
            complete_seconds,
            complete_cpu,
        })
    }

    /// Issue 14's row: a tus upload in `tus_chunk_mib` PATCHes, against the bare SDK.
    pub(super) fn tus_upload(&mut self) -> Result<()> {
        let (size, chunk_mib) = self.profile.tus;
        let bytes = size * MIB;
        let file = self.dir.join(format!("tus-{size}MiB.png"));
        http::write_png_file(&file, bytes)?;
        let chunk = chunk_mib * MIB;
        let chunks = (0..bytes.div_ceil(chunk))
            .map(|i| {
                let path = self.dir.join(format!("tus-chunk-{i}"));
                write_slice(&file, &path, i * chunk, chunk)?;
                Ok((i * chunk, path))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut rounds = Vec::new();
        let mut sdk = Vec::new();
        for round in 1..=self.profile.rounds {
            let figures = self.tus_upload_once(&chunks, bytes)?;
            let sdk_put = self.sdk(&file, "sdk-put")?.map(|s| s.mib_per_s);
            println!(
                "round {round}/{} tus {size} MiB in {chunk_mib} MiB PATCHes: {:.1} MiB/s, server \
                 CPU {:.2} s, peak RSS {:.1} MiB (idle {:.1}); bare SDK PutObject {}",
                self.profile.rounds,
                mib_per_s(bytes, figures.seconds),
                figures.cpu,
                mib(figures.hwm_kib),
                mib(figures.idle_hwm_kib),
                sdk_put.map_or("n/a".to_string(), |s| format!("{s:.1} MiB/s")),
            );
            process::flush();
            rounds.push(figures);
            sdk.extend(sdk_put);
        }
        for (_, path) in &chunks {
            let _ = fs::remove_file(path);
        }
        let _ = fs::remove_file(&file);

        let rate = median(
            &rounds
                .iter()
                .map(|f| mib_per_s(bytes, f.seconds))
                .collect::<Vec<_>>(),
        );
        let sdk = (!sdk.is_empty()).then(|| median(&sdk));
        let ratio = sdk.map(|s| rate / s);
        let what = format!("tus upload {size} MiB in {chunk_mib} MiB PATCHes");
        self.rows.push(Row {
            measure: format!("{what}, MiB/s"),
            ours: format!("{rate:.1}"),
            reference: sdk.map_or("SDK n/a".to_string(), |s| format!("SDK PutObject {s:.1}")),
            ratio: ratio.map_or(String::new(), |r| format!("{r:.2}")),
            target: String::new(),
            verdict: NO_VERDICT,
        });
        let peak = rounds.iter().map(|f| f.hwm_kib).max().unwrap_or(0);
        let idle = rounds.iter().map(|f| f.idle_hwm_kib).max().unwrap_or(0);
        let cpu = median(&rounds.iter().map(|f| f.cpu).collect::<Vec<_>>());
        self.rows.push(Row {
            measure: format!("{what}: server peak RSS MiB (CPU s)"),
            ours: format!("{:.1} ({cpu:.2})", mib(peak)),
            reference: format!("idle server {:.1}", mib(idle)),
            ratio: String::new(),
            target: "<= 64".to_string(),
            verdict: verdict(Some(mib(peak)), |p| p <= 64.0),
        });
        Ok(())
    }

    /// One tus upload on a fresh server: create with the length and metadata, PATCH each chunk
    /// at its offset, check the last answer names the media, delete it.
    fn tus_upload_once(&self, chunks: &[(u64, PathBuf)], bytes: u64) -> Result<TusFigures> {
        let server = self.api.start()?;
        let idle = server.memory()?;
        let event = self.create_event(&server, "bench tus")?;
        let collection = self.api_url(&server, &format!("/events/{event}/media/tus/"));
        let head = self.dir.join("tus-headers.txt");
        let metadata = format!(
            "filename {},content_type {}",
            base64(b"payload.png")?,
            base64(b"image/png")?
        );
        let cpu_before = server.cpu_seconds()?;
        let started = Instant::now();
        let created = http::run_transfer(
            tus_request(&self.token, &head)
                .args(["-X", "POST"])
                .args(["-H", &format!("Upload-Length: {bytes}")])
                .args(["-H", &format!("Upload-Metadata: {metadata}")])
                .arg(&collection),
        )?;
        let headers = fs::read_to_string(&head)?;
        ensure!(
            created.status == 201,
            "creating a tus upload answered {}:\n{headers}",
            created.status
        );
        let location = header_value(&headers, "location")
            .with_context(|| format!("the tus creation answered no Location:\n{headers}"))?;
        let upload_url = absolute(&server, &location);
        let mut media = None;
        for (offset, path) in chunks {
            let patch = http::run_transfer(
                tus_request(&self.token, &head)
                    .args(["-X", "PATCH"])
                    .args(["-H", "Content-Type: application/offset+octet-stream"])
                    .args(["-H", &format!("Upload-Offset: {offset}")])
                    .arg("-T")
                    .arg(path)
                    .arg(&upload_url),
            )?;
            let headers = fs::read_to_string(&head)?;
            ensure!(
                patch.status == 204,
                "the tus PATCH at {offset} answered {}:\n{headers}",
                patch.status
            );
            media = header_value(&headers, "upload-media-id");
        }
        let seconds = started.elapsed().as_secs_f64();
        let cpu = server.cpu_seconds()? - cpu_before;
        let memory = server.memory()?;
        let media = media.context("the last tus PATCH named no media (Upload-Media-Id)")?;
        let (status, record) = http::json_request(
            "GET",
            &self.api_url(&server, &format!("/events/{event}/media/{media}")),
            &self.token,
            None,
        )?;
        ensure!(
            status == 200 && record["size_bytes"].as_u64() == Some(bytes),
            "the media of a tus upload of {bytes} bytes answered {status}: {record}"
        );
        self.delete_media(&server, &event, &media)?;
        Ok(TusFigures {
            seconds,
            cpu,
            hwm_kib: memory.hwm_kib,
            idle_hwm_kib: idle.hwm_kib,
        })
    }
}

/// The plan's `headers` object as name/value pairs, without `content-length` (curl sends the
/// file's own, which is the one signed).
fn headers_of(value: &Value) -> Vec<(String, String)> {
    value
        .as_object()
        .map(|map| {
            map.iter()
                .filter(|(name, _)| !name.eq_ignore_ascii_case("content-length"))
                .filter_map(|(name, value)| Some((name.clone(), value.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// `curl -T FILE` to a presigned URL with the signed headers, answer headers into `head`.
fn presigned_put(url: &str, headers: &[(String, String)], file: &Path, head: &Path) -> Command {
    let mut command = Command::new("curl");
    command.args([
        "-sS",
        "-w",
        "\n%{http_code} %{time_total} %{size_upload} %{size_download}",
    ]);
    // No `Expect: 100-continue`: it is not signed, and its round trip is the client's cost.
    command.args(["-H", "Expect:"]);
    for (name, value) in headers {
        command.args(["-H", &format!("{name}: {value}")]);
    }
    command
        .arg("-D")
        .arg(head)
        .arg("-T")
        .arg(file)
        .args(["-o", "/dev/null"])
        .arg(url);
    command
}

/// curl with the tus and auth headers, answer headers into `head`, body discarded.
fn tus_request(token: &str, head: &Path) -> Command {
    let mut command = Command::new("curl");
    command
        .args([
            "-sS",
            "-w",
            "\n%{http_code} %{time_total} %{size_upload} %{size_download}",
        ])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args(["-H", &format!("Tus-Resumable: {TUS_VERSION}")])
        .args(["-H", "Expect:"])
        .arg("-D")
        .arg(head)
        .args(["-o", "/dev/null"]);
    command
}

/// The value of header `name` (any case) in curl's `-D` dump; the last one wins, as after a
/// redirect or an interim answer.
fn header_value(dump: &str, name: &str) -> Option<String> {
    dump.lines()
        .filter_map(|line| line.split_once(':'))
        .filter(|(key, _)| key.trim().eq_ignore_ascii_case(name))
        .map(|(_, value)| value.trim().to_string())
        .next_back()
}

/// A `Location` made absolute against the server.
fn absolute(server: &ApiServer, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        location.to_string()
    } else {
        format!("{}{location}", server.base_url())
    }
}

/// `len` bytes of `from` starting at `offset` (fewer at its end) into the file `to`.
fn write_slice(from: &Path, to: &Path, offset: u64, len: u64) -> Result<()> {
    let mut source = File::open(from)?;
    source.seek(SeekFrom::Start(offset))?;
    let mut target = File::create(to)?;
    io::copy(&mut source.take(len), &mut target)?;
    Ok(())
}

/// Standard base64 of `bytes`, by coreutils' `base64` (tus metadata values are base64).
fn base64(bytes: &[u8]) -> Result<String> {
    use std::io::Write as _;
    let mut child = Command::new("base64")
        .args(["-w", "0"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("could not run base64 (coreutils)")?;
    child
        .stdin
        .take()
        .context("base64 has no stdin")?
        .write_all(bytes)?;
    let output = child.wait_with_output()?;
    ensure!(output.status.success(), "base64 failed");
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_are_found_in_any_case_and_the_last_wins() {
        let dump = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nLocation: /a/b\r\n\
                    ETag: \"abc\"\r\netag: \"def\"\r\n\r\n";
        assert_eq!(header_value(dump, "location").as_deref(), Some("/a/b"));
        assert_eq!(header_value(dump, "ETag").as_deref(), Some("\"def\""));
        assert_eq!(header_value(dump, "upload-media-id"), None);
    }

    #[test]
    fn plan_headers_leave_out_the_length_curl_sets() {
        let headers = headers_of(&serde_json::json!({
            "content-type": "image/png",
            "content-length": "42",
            "x-amz-checksum-sha256": "abc=",
        }));
        assert_eq!(
            headers,
            vec![
                ("content-type".to_string(), "image/png".to_string()),
                ("x-amz-checksum-sha256".to_string(), "abc=".to_string()),
            ]
        );
    }

    #[test]
    fn a_slice_is_the_bytes_at_its_offset() {
        let dir = tempfile_dir();
        let from = dir.join("whole");
        fs::write(&from, b"0123456789").unwrap();
        let to = dir.join("slice");
        write_slice(&from, &to, 8, 4).unwrap();
        assert_eq!(fs::read(&to).unwrap(), b"89");
        write_slice(&from, &to, 2, 3).unwrap();
        assert_eq!(fs::read(&to).unwrap(), b"234");
        let _ = fs::remove_dir_all(&dir);
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("xtask-slice-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        dir
    }
}
