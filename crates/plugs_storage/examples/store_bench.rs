//! Store throughput and memory, one mode per process so that peak RSS belongs to that mode.
//!
//! ```sh
//! cargo run --release -p plugs_storage --example store_bench -- \
//!     --endpoint http://127.0.0.1:9000 --access-key K --secret-key S --bucket B \
//!     --file /tmp/256MiB.bin --mode store-put
//! ```
//!
//! Modes: `sdk-put` (bare aws-sdk-s3 PutObject streaming the file), `sdk-get` (bare GetObject,
//! drained), `store-put` (`S3Store::put` from a file stream, its length declared:
//! one streamed PutObject), `store-put-unsized` (the same without the length, as an HTTP upload
//! arrives: a streamed multipart upload), `store-get` (`S3Store::get`,
//! drained). Prints one JSON line: `{"mode","bytes","seconds","mib_per_s","peak_rss_kib"}`.
//! `sdk-put-many` (bare PutObject of the file `--count` times under distinct keys, `--concurrency`
//! at once: the reference for many small uploads) adds `count`, `p50_ms` and `p99_ms`.
//! `sdk-get-parallel` (bare ranged GetObjects of `--range-size-mib` each, `--concurrency` in
//! flight, joined in order: what boto3's download_file does with its 8 MiB and 10 threads) and
//! `sdk-put-multipart` (bare CreateMultipartUpload, UploadPart of `--part-size-mib` parts with
//! `--parts-in-flight` at once read from the file, CompleteMultipartUpload: the fair reference
//! for an upload whose length is unknown, since it pays the same completion on the store).
//! Optional: `--key` (default `bench/object.bin`), `--region`, `--part-size-mib`,
//! `--parts-in-flight`.
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::time::Instant;

use anyhow::{Context, bail};
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::primitives::ByteStream as SdkByteStream;
use futures::{StreamExt, TryStreamExt};
use plugs_storage::{
    GetOptions, ObjectKey, ObjectStore, PutOptions, S3Config, S3Store, StoreError,
};

/// Read size of the file stream fed to `S3Store::put`.
const FILE_CHUNK: usize = 256 * 1024;

fn parse_args() -> anyhow::Result<HashMap<String, String>> {
    let mut args = HashMap::new();
    let mut iter = std::env::args().skip(1);
    while let Some(name) = iter.next() {
        let Some(name) = name.strip_prefix("--") else {
            bail!("unexpected argument {name}")
        };
        let value = iter
            .next()
            .with_context(|| format!("--{name} needs a value"))?;
        args.insert(name.to_owned(), value);
    }
    for required in [
        "endpoint",
        "access-key",
        "secret-key",
        "bucket",
        "file",
        "mode",
    ] {
        if !args.contains_key(required) {
            bail!("missing --{required}");
        }
    }
    if ![
        "sdk-put",
        "sdk-get",
        "store-put",
        "store-put-unsized",
        "store-get",
        "sdk-put-many",
        "sdk-get-parallel",
        "sdk-put-multipart",
    ]
    .contains(&args["mode"].as_str())
    {
        bail!(
            "unknown --mode {} (sdk-put, sdk-get, store-put, store-put-unsized, store-get, \
             sdk-put-many, sdk-get-parallel, sdk-put-multipart)",
            args["mode"]
        );
    }
    Ok(args)
}

/// Peak resident set size of this process (VmHWM), in KiB.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn store_config(args: &HashMap<String, String>) -> anyhow::Result<S3Config> {
    let mut config = S3Config::new(
        &args["bucket"],
        args.get("region").map_or("us-east-1", String::as_str),
    );
    config.endpoint_url = Some(args["endpoint"].clone());
    config.force_path_style = true;
    config.access_key_id = Some(args["access-key"].clone());
    config.secret_access_key = Some(args["secret-key"].clone());
    if let Some(mib) = args.get("part-size-mib") {
        config.part_size = mib.parse::<usize>()? * 1024 * 1024;
    }
    if let Some(parts) = args.get("parts-in-flight") {
        config.max_parts_in_flight = parts.parse()?;
    }
    Ok(config)
}

async fn sdk_client(args: &HashMap<String, String>) -> aws_sdk_s3::Client {
    let credentials = Credentials::new(
        &args["access-key"],
        &args["secret-key"],
        None,
        None,
        "bench",
    );
    let shared = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(
            args.get("region")
                .cloned()
                .unwrap_or_else(|| "us-east-1".to_owned()),
        ))
        .credentials_provider(credentials)
        .endpoint_url(&args["endpoint"])
        .load()
        .await;
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(true)
            .build(),
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let mode = args["mode"].clone();
    let key = args
        .get("key")
        .cloned()
        .unwrap_or_else(|| "bench/object.bin".to_owned());
    let file = args["file"].clone();
    let store = S3Store::new(store_config(&args)?).await?;
    let client = sdk_client(&args).await;
    if mode.contains("put") {
        store.ensure_bucket().await?;
    }
    if mode == "sdk-put-many" {
        return put_many(&args, &client, store.bucket(), &key, &file).await;
    }
    let started = Instant::now();
    let bytes = match mode.as_str() {
        "sdk-put" => {
            let size = tokio::fs::metadata(&file).await?.len();
            let body = SdkByteStream::from_path(&file).await?;
            client
                .put_object()
                .bucket(store.bucket())
                .key(&key)
                .body(body)
                .send()
                .await?;
            size
        }
        "sdk-get-parallel" => get_parallel(&args, &client, store.bucket(), &key).await?,
        "sdk-put-multipart" => put_multipart(&args, &client, store.bucket(), &key, &file).await?,
        "sdk-get" => {
            let output = client
                .get_object()
                .bucket(store.bucket())
                .key(&key)
                .send()
                .await?;
            let mut body = output.body;
            let mut bytes = 0u64;
            while let Some(chunk) = body.try_next().await? {
                bytes += chunk.len() as u64;
            }
            bytes
        }
        // `store-put` declares the file's length, as any caller that has it should (one
        // streamed PutObject); `store-put-unsized` does not, as an HTTP multipart upload cannot
        // (a streamed multipart upload).
        "store-put" | "store-put-unsized" => {
            let reader = tokio::fs::File::open(&file).await?;
            let size = reader.metadata().await?.len();
            let body = tokio_util::io::ReaderStream::with_capacity(reader, FILE_CHUNK)
                .map_err(|error| StoreError::Body {
                    source: error.into(),
                })
                .boxed();
            let key = ObjectKey::parse(key)?;
            let mut options = PutOptions::default();
            if mode == "store-put" {
                options.size = Some(size);
            }
            store.put(&key, body, options).await?.size
        }
        "store-get" => {
            let key = ObjectKey::parse(key)?;
            let mut body = store.get(&key, GetOptions::default()).await?.body;
            let mut bytes = 0u64;
            while let Some(chunk) = body.next().await {
                bytes += chunk?.len() as u64;
            }
            bytes
        }
        other => {
            bail!(
                "unknown --mode {other} (sdk-put, sdk-get, store-put, store-put-unsized, store-get, sdk-put-many)"
            )
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    let mib_per_s = bytes as f64 / (1024.0 * 1024.0) / seconds.max(1e-9);
    println!(
        "{{\"mode\":\"{mode}\",\"bytes\":{bytes},\"seconds\":{seconds:.3},\"mib_per_s\":{mib_per_s:.1},\"peak_rss_kib\":{}}}",
        peak_rss_kib()
    );
    Ok(())
}

/// `sdk-put-many`: the file (read once; meant for small files) put `--count` times under distinct
/// keys with `--concurrency` requests in flight, each request's latency recorded.
async fn put_many(
    args: &HashMap<String, String>,
    client: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    file: &str,
) -> anyhow::Result<()> {
    let count: usize = args.get("count").map_or(Ok(100), |v| v.parse())?;
    let concurrency: usize = args.get("concurrency").map_or(Ok(64), |v| v.parse())?;
    let body = bytes::Bytes::from(tokio::fs::read(file).await?);
    let started = Instant::now();
    let mut latencies: Vec<f64> = futures::stream::iter(0..count)
        .map(|i| {
            let body = body.clone();
            async move {
                let begun = Instant::now();
                client
                    .put_object()
                    .bucket(bucket)
                    .key(format!("{key}.many/{i}"))
                    .body(SdkByteStream::from(body))
                    .send()
                    .await?;
                anyhow::Ok(begun.elapsed().as_secs_f64() * 1000.0)
            }
        })
        .buffer_unordered(concurrency.max(1))
        .try_collect()
        .await?;
    let seconds = started.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    let percentile = |p: f64| {
        let index = ((latencies.len() as f64 * p).ceil() as usize).saturating_sub(1);
        latencies.get(index).copied().unwrap_or_default()
    };
    let bytes = body.len() as u64 * count as u64;
    let mib_per_s = bytes as f64 / (1024.0 * 1024.0) / seconds.max(1e-9);
    println!(
        "{{\"mode\":\"sdk-put-many\",\"bytes\":{bytes},\"seconds\":{seconds:.3},\"mib_per_s\":{mib_per_s:.1},\"peak_rss_kib\":{},\"count\":{count},\"p50_ms\":{:.2},\"p99_ms\":{:.2}}}",
        peak_rss_kib(),
        percentile(0.50),
        percentile(0.99)
    );
    Ok(())
}

/// `--name N` as a number, or `default`.
fn number_arg(args: &HashMap<String, String>, name: &str, default: u64) -> anyhow::Result<u64> {
    args.get(name).map_or(Ok(default), |v| {
        v.parse()
            .with_context(|| format!("--{name} must be a number"))
    })
}

/// `sdk-get-parallel`: a HeadObject for the size, then ranged GetObjects of `--range-size-mib`
/// (default 8) with `--concurrency` (default 10) in flight, each range read whole and handed on
/// in order, as boto3's transfer manager does; answers the bytes read.
async fn get_parallel(
    args: &HashMap<String, String>,
    client: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
) -> anyhow::Result<u64> {
    let range = number_arg(args, "range-size-mib", 8)? * 1024 * 1024;
    let concurrency = usize::try_from(number_arg(args, "concurrency", 10)?)?.max(1);
    let head = client.head_object().bucket(bucket).key(key).send().await?;
    let size = u64::try_from(head.content_length().unwrap_or(0))?;
    let starts = (0..size).step_by(usize::try_from(range.max(1))?);
    let mut ranges = futures::stream::iter(starts)
        .map(|start| async move {
            let end = (start + range).min(size);
            let output = client
                .get_object()
                .bucket(bucket)
                .key(key)
                .range(format!("bytes={start}-{}", end - 1))
                .send()
                .await?;
            let bytes = output.body.collect().await?.into_bytes();
            anyhow::ensure!(
                bytes.len() as u64 == end - start,
                "range {start}-{end} came back with {} bytes",
                bytes.len()
            );
            anyhow::Ok(bytes)
        })
        .buffered(concurrency);
    let mut bytes = 0u64;
    while let Some(chunk) = ranges.try_next().await? {
        bytes += chunk.len() as u64;
    }
    Ok(bytes)
}

/// `sdk-put-multipart`: the file as a multipart upload of `--part-size-mib` parts (default 8),
/// `--parts-in-flight` (default 2) at once, each part read from the file when its turn comes;
/// answers the bytes stored.
async fn put_multipart(
    args: &HashMap<String, String>,
    client: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    file: &str,
) -> anyhow::Result<u64> {
    use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
    use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};

    let part_size = number_arg(args, "part-size-mib", 8)? * 1024 * 1024;
    let in_flight = usize::try_from(number_arg(args, "parts-in-flight", 2)?)?.max(1);
    let size = tokio::fs::metadata(file).await?.len();
    let upload = client
        .create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .send()
        .await?;
    let upload_id = upload.upload_id().context("no upload id")?.to_owned();
    let parts: Vec<CompletedPart> = futures::stream::iter((0..size.div_ceil(part_size)).map(|i| {
        let upload_id = upload_id.clone();
        async move {
            let start = i * part_size;
            let length = part_size.min(size - start);
            let mut reader = tokio::fs::File::open(file).await?;
            reader.seek(std::io::SeekFrom::Start(start)).await?;
            let mut buffer = Vec::with_capacity(usize::try_from(length)?);
            reader.take(length).read_to_end(&mut buffer).await?;
            let number = i32::try_from(i + 1)?;
            let output = client
                .upload_part()
                .bucket(bucket)
                .key(key)
                .upload_id(&upload_id)
                .part_number(number)
                .body(SdkByteStream::from(buffer))
                .send()
                .await?;
            anyhow::Ok(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(output.e_tag().map(str::to_owned))
                    .build(),
            )
        }
    }))
    .buffered(in_flight)
    .try_collect()
    .await?;
    client
        .complete_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(&upload_id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await?;
    Ok(size)
}
