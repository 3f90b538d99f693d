//! Builds an `S3Store` on a fresh bucket of a test server.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code, unreachable_pub)]

use std::sync::Arc;

use plugs_storage::conformance::{Capabilities, Fixture, Leftovers};
use plugs_storage::{MIN_PART_SIZE, S3Config, S3Store};
use plugs_test_support::s3::{S3Server, S3TestServer};

/// The smallest part S3 allows, so that the streaming case spans several parts cheaply.
pub const PART_SIZE: usize = MIN_PART_SIZE;

pub fn config(server: &S3TestServer, bucket: &str) -> S3Config {
    let mut config = S3Config::new(bucket, "us-east-1");
    config.endpoint_url = Some(server.endpoint.clone());
    config.force_path_style = true;
    config.access_key_id = Some(server.access_key.clone());
    config.secret_access_key = Some(server.secret_key.clone());
    config.part_size = PART_SIZE;
    config.max_parts_in_flight = 2;
    config
}

/// A store on a new bucket of `server`.
pub async fn store(server: &S3TestServer, label: &str) -> S3Store {
    let store = S3Store::new(config(server, &server.unique_bucket(label)))
        .await
        .unwrap();
    store.ensure_bucket().await.unwrap();
    store
}

pub async fn fixture(server: Option<S3TestServer>) -> Option<Fixture> {
    let server = server?;
    let store = store(&server, "conformance").await;
    let mut capabilities = Capabilities::new(server.server.name());
    capabilities.serves_presigned_urls = true;
    // 5 parts and a bit: enough to see ordering, concurrency and the last short part.
    capabilities.large_object_size = (PART_SIZE * 5 + 123_457) as u64;
    capabilities.one_part_size = PART_SIZE as u64;
    match server.server {
        S3Server::S3s => {
            capabilities.verifies_presign = true;
            capabilities.verifies_checksums = true;
            // s3s-fs 0.14 lists parts without their ETags.
            capabilities.lists_parts = false;
            capabilities.refusals_store_nothing = false;
            // s3s-fs 0.14 seeks before the start of the file and answers 500.
            capabilities.serves_long_suffix_ranges = false;
        }
        S3Server::Moto => {
            // moto 5 keeps no checksum to answer a HEAD with, and its ListParts answer has a
            // root element the SDK refuses.
            capabilities.reports_sha256 = false;
            capabilities.lists_parts = false;
            let (make_store, count_store) = (store.clone(), store.clone());
            capabilities.leftovers = Some(Leftovers {
                // What a process killed between parts leaves: an upload started, never finished.
                make: Arc::new(move || {
                    let store = make_store.clone();
                    Box::pin(async move {
                        store
                            .client()
                            .create_multipart_upload()
                            .bucket(store.bucket())
                            .key("sweep/unfinished.bin")
                            .send()
                            .await
                            .unwrap();
                    })
                }),
                count: Arc::new(move || {
                    let store = count_store.clone();
                    Box::pin(async move { store.list_multipart_uploads("").await.unwrap().len() })
                }),
                // moto 5 reports every upload as started on 2010-11-10.
                dated: false,
            });
            let probe_store = store.clone();
            capabilities.pending_uploads = Some(Arc::new(move |prefix: String| {
                let store = probe_store.clone();
                Box::pin(async move {
                    store
                        .list_multipart_uploads(&prefix)
                        .await
                        .unwrap()
                        .into_iter()
                        .map(|upload| upload.key)
                        .collect()
                })
            }));
        }
    }
    Some(Fixture {
        store: Arc::new(store),
        capabilities,
        guard: None,
    })
}
