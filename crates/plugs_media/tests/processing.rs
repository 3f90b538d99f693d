//! The processing worker over the in-memory repository and store: versions made and recorded,
//! taken along by a delete, known to the reconciler; a file that cannot be decoded parks its job
//! at once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytes::Bytes;
use common::{Harness, body, png, png_request};
use plugs_domain::{MediaStatus, ProcessingState};
use plugs_media::{
    JobReport, MediaService, ProcessingConfig, ProcessingWorker, ReconcileOptions, derived_key,
};
use plugs_persistence::{JobRepository as _, JobState, MediaRepository as _};
use plugs_storage::{ObjectKey, ObjectStoreExt as _, PutOptions};

/// A complete, valid 1x1 RGB PNG.
const PNG_1X1: &[u8] = b"\x89\x50\x4e\x47\x0d\x0a\x1a\x0a\x00\x00\x00\x0d\x49\x48\x44\x52\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00\x90\x77\x53\xde\x00\x00\x00\x0c\x49\x44\x41\x54\x78\x9c\x63\xf8\xcf\xc0\x00\x00\x03\x01\x01\x00\xc9\xfe\x92\xef\x00\x00\x00\x00\x49\x45\x4e\x44\xae\x42\x60\x82";

fn processing(h: &Harness) -> (MediaService, ProcessingWorker) {
    let service = h.service.clone().with_jobs(h.repo.clone());
    let worker = ProcessingWorker::new(&service, ProcessingConfig::default()).unwrap();
    (service, worker)
}

async fn keys(h: &Harness) -> Vec<String> {
    let mut keys: Vec<String> = h
        .store
        .list_all(Some("events/"))
        .await
        .unwrap()
        .into_iter()
        .map(|meta| meta.key.as_str().to_owned())
        .collect();
    keys.sort();
    keys
}

#[tokio::test]
async fn versions_are_made_recorded_and_deleted_with_their_media() {
    let h = Harness::new();
    let (service, worker) = processing(&h);
    let event = h.event().await;
    let media = service
        .upload(&h.alice, event, png_request(), body(PNG_1X1.to_vec(), 1000))
        .await
        .unwrap();

    let report = worker.run_once().await.unwrap().unwrap();
    assert!(matches!(report, JobReport::Done { media_id, .. } if media_id == media.id));
    assert_eq!(worker.run_once().await.unwrap(), None, "one job only");
    let state = service.processing_of(&[media.id]).await.unwrap().remove(0);
    assert_eq!(state.state, ProcessingState::Ready);
    assert_eq!((state.width, state.height), (Some(1), Some(1)));
    let names: Vec<&str> = state.variants.iter().map(|v| v.variant.as_str()).collect();
    assert_eq!(names, ["display", "thumb-1024", "thumb-256"]);
    let mut expected: Vec<String> = names
        .iter()
        .map(|name| derived_key(&media.s3_key, name, "jpg"))
        .collect();
    expected.push(media.s3_key.clone());
    expected.sort();
    assert_eq!(keys(&h).await, expected);
    for version in &state.variants {
        let stored = h
            .store
            .get_bytes(&ObjectKey::parse(version.s3_key.as_str()).unwrap())
            .await
            .unwrap();
        assert_eq!(stored.len() as u64, version.size_bytes);
        assert_eq!(&stored[..3], b"\xff\xd8\xff", "a JPEG");
    }

    service
        .delete_media(&h.alice, event, media.id)
        .await
        .unwrap();
    assert!(keys(&h).await.is_empty(), "derived objects went too");
}

#[tokio::test]
async fn a_file_that_cannot_be_decoded_is_parked_at_once() {
    let h = Harness::new();
    let (service, worker) = processing(&h);
    let event = h.event().await;
    // A PNG signature and a truncated header: sniffed as PNG, never decodable.
    let media = service
        .upload(&h.alice, event, png_request(), body(png(200), 1000))
        .await
        .unwrap();
    let report = worker.run_once().await.unwrap().unwrap();
    let JobReport::Failed { state, error, .. } = report else {
        panic!("{report:?}");
    };
    assert_eq!(
        state,
        JobState::Parked,
        "no retry of a file that cannot change"
    );
    assert!(!error.is_empty());
    let jobs = h.repo.jobs_of(media.id).await.unwrap();
    assert_eq!((jobs[0].state, jobs[0].attempts), (JobState::Parked, 1));
    let state = service.processing_of(&[media.id]).await.unwrap().remove(0);
    assert_eq!(state.state, ProcessingState::Failed);
    assert!(state.variants.is_empty());
    assert_eq!(keys(&h).await, vec![media.s3_key]);
}

#[tokio::test]
async fn gc_keeps_derived_objects_of_ready_media_and_removes_the_others() {
    let h = Harness::new();
    let (service, worker) = processing(&h);
    let event = h.event().await;
    let media = service
        .upload(&h.alice, event, png_request(), body(PNG_1X1.to_vec(), 1000))
        .await
        .unwrap();
    worker.run_once().await.unwrap().unwrap();
    // A job finishing right now: its object is written, its row not yet.
    let unrecorded = derived_key(&media.s3_key, "thumb-64", "jpg");
    // Left by a job whose media was deleted meanwhile.
    let gone_original = plugs_domain::keys::media_key(event, chrono::Utc::now(), "png");
    assert_ne!(gone_original, media.s3_key);
    let orphan = derived_key(&gone_original, "thumb-256", "jpg");
    for key in [&unrecorded, &orphan] {
        h.store
            .put_bytes(
                &ObjectKey::parse(key.as_str()).unwrap(),
                Bytes::from_static(b"\xff\xd8\xff"),
                PutOptions::with_content_type("image/jpeg"),
            )
            .await
            .unwrap();
    }
    let before = keys(&h).await;
    assert_eq!(before.len(), 6);

    h.after_grace();
    let report = service
        .reconcile(ReconcileOptions {
            dry_run: false,
            grace: None,
        })
        .await
        .unwrap();
    assert_eq!((report.orphans_found, report.orphans_deleted), (1, 1));
    let after = keys(&h).await;
    assert_eq!(after.len(), 5);
    assert!(!after.contains(&orphan));
    assert!(after.contains(&unrecorded));
    assert_eq!(
        h.repo.find_media(media.id).await.unwrap().unwrap().status,
        MediaStatus::Ready
    );
}
