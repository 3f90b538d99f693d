//! The processing-queue cases of the shared suite: every repository (fake, SQLite, PostgreSQL)
//! enqueues with `mark_ready`, claims under leases, retries and parks the same way.

use std::collections::HashSet;

use chrono::{DateTime, TimeZone as _, Utc};
use plugs_domain::{
    DerivedVersion, Event, EventId, EventMedia, MediaFields, MediaId, MediaStatus, ProcessingState,
    UserId,
};
use plugs_persistence::{JobClaim, JobOutcome, JobState, ReadyUpdate};

use super::Repo;

fn at(seconds: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_760_000_000 + seconds, 0).unwrap()
}

async fn new_event(repo: &dyn Repo) -> EventId {
    let event = Event {
        id: EventId::new(),
        title: "jobs".to_owned(),
        owner: UserId::parse("alice").unwrap(),
        created_at: at(0),
        updated_at: at(0),
    };
    repo.insert_event(&event).await.unwrap();
    event.id
}

/// A `ready` media of this content type (its job enqueued by `mark_ready`, if any).
async fn ready(repo: &dyn Repo, event_id: EventId, content_type: &str, when: i64) -> EventMedia {
    let id = MediaId::new();
    let media = EventMedia {
        id,
        event_id,
        title: None,
        description: None,
        tags: Vec::new(),
        original_filename: None,
        content_type: content_type.to_owned(),
        size_bytes: 0,
        sha256: None,
        s3_key: format!(
            "events/{event_id}/media/2025/06/15/120000_{}.bin",
            id.as_uuid().simple()
        ),
        status: MediaStatus::Pending,
        uploaded_by: UserId::parse("alice").unwrap(),
        created_at: at(when),
        updated_at: at(when),
        lease_until: None,
        location_stripped: false,
    };
    repo.insert_media(&media).await.unwrap();
    repo.mark_ready(
        id,
        ReadyUpdate {
            size_bytes: 10,
            sha256: "00".repeat(32),
            fields: MediaFields::default(),
            at: at(when),
            location_stripped: false,
        },
    )
    .await
    .unwrap()
}

fn claim(now: i64, lease: i64, max_attempts: u32) -> JobClaim {
    JobClaim {
        now: at(now),
        lease_until: at(now + lease),
        max_attempts,
    }
}

fn version(media: &EventMedia, variant: &str, width: u32, height: u32) -> DerivedVersion {
    DerivedVersion {
        media_id: media.id,
        variant: variant.to_owned(),
        s3_key: format!("{}.{variant}.jpg", media.s3_key),
        width,
        height,
        size_bytes: u64::from(width) * 3,
        content_type: "image/jpeg".to_owned(),
    }
}

async fn state_of(repo: &dyn Repo, media: &EventMedia) -> ProcessingState {
    repo.processing_of(&[media.id]).await.unwrap()[0].state
}

pub async fn mark_ready_enqueues_a_job_for_images_only(repo: &dyn Repo) {
    let event = new_event(repo).await;
    let photo = ready(repo, event, "image/jpeg", 1).await;
    let pdf = ready(repo, event, "application/pdf", 2).await;
    let heic = ready(repo, event, "image/heic", 3).await;

    let jobs = repo.jobs_of(photo.id).await.unwrap();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0].state, JobState::Queued);
    assert_eq!(jobs[0].attempts, 0);
    assert_eq!(jobs[0].variants, None);
    assert_eq!(jobs[0].created_at, at(1));
    assert_eq!(state_of(repo, &photo).await, ProcessingState::Pending);

    // Types no worker reads get no job and say so.
    for other in [&pdf, &heic] {
        assert!(repo.jobs_of(other.id).await.unwrap().is_empty());
        assert_eq!(state_of(repo, other).await, ProcessingState::None);
    }
    let listed = repo.processable_media(Some(event), None, 10).await.unwrap();
    assert_eq!(listed, vec![photo.id]);
    assert!(
        repo.processable_media(Some(EventId::new()), None, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn claim_complete_and_read_back(repo: &dyn Repo) {
    let event = new_event(repo).await;
    let photo = ready(repo, event, "image/png", 1).await;

    let job = repo.claim_job(claim(10, 60, 3)).await.unwrap().unwrap();
    assert_eq!(job.media_id, photo.id);
    assert_eq!(job.state, JobState::Running);
    assert_eq!(job.attempts, 1);
    assert_eq!(job.lease_until, Some(at(70)));
    // Held: nobody else gets it while the lease runs.
    assert_eq!(repo.claim_job(claim(20, 60, 3)).await.unwrap(), None);

    let outcome = JobOutcome {
        width: 4000,
        height: 3000,
        versions: vec![
            version(&photo, "thumb-256", 256, 192),
            version(&photo, "display", 2048, 1536),
        ],
    };
    assert!(
        repo.complete_job(job.id, 1, &outcome, at(30))
            .await
            .unwrap()
    );
    // Done once: the same attempt cannot finish it twice.
    assert!(
        !repo
            .complete_job(job.id, 1, &outcome, at(31))
            .await
            .unwrap()
    );
    let processing = repo.processing_of(&[photo.id]).await.unwrap();
    assert_eq!(processing.len(), 1);
    let processing = &processing[0];
    assert_eq!(processing.state, ProcessingState::Ready);
    assert_eq!(
        (processing.width, processing.height),
        (Some(4000), Some(3000))
    );
    let names: Vec<&str> = processing
        .variants
        .iter()
        .map(|v| v.variant.as_str())
        .collect();
    assert_eq!(names, ["display", "thumb-256"], "ordered by name");
    assert_eq!(processing.variants[1], outcome.versions[0]);
    assert_eq!(
        repo.find_derived_by_key(&outcome.versions[1].s3_key)
            .await
            .unwrap(),
        Some(outcome.versions[1].clone())
    );
    assert_eq!(repo.find_derived_by_key("nope").await.unwrap(), None);
    let jobs = repo.jobs_of(photo.id).await.unwrap();
    assert_eq!(jobs[0].state, JobState::Done);
    assert_eq!(repo.claim_job(claim(40, 60, 3)).await.unwrap(), None);

    // Processing again replaces the versions of the variants made, keeps the others.
    assert!(
        repo.enqueue_job(photo.id, Some(&["thumb-256".to_owned()]), at(50))
            .await
            .unwrap()
    );
    assert_eq!(state_of(repo, &photo).await, ProcessingState::Pending);
    // One queued job per media is enough.
    assert!(!repo.enqueue_job(photo.id, None, at(51)).await.unwrap());
    let again = repo.claim_job(claim(60, 60, 3)).await.unwrap().unwrap();
    assert_eq!(again.variants, Some(vec!["thumb-256".to_owned()]));
    let smaller = JobOutcome {
        width: 4000,
        height: 3000,
        versions: vec![version(&photo, "thumb-256", 128, 96)],
    };
    assert!(
        repo.complete_job(again.id, 1, &smaller, at(70))
            .await
            .unwrap()
    );
    let processing = repo.processing_of(&[photo.id]).await.unwrap().remove(0);
    assert_eq!(processing.variants.len(), 2);
    assert_eq!(processing.variants[1].width, 128);
    assert_eq!(processing.variants[0].width, 2048);

    // The media's delete takes its jobs and versions along.
    repo.mark_deleting(photo.id, at(80)).await.unwrap();
    repo.delete_media(photo.id).await.unwrap();
    assert!(repo.jobs_of(photo.id).await.unwrap().is_empty());
    assert!(repo.processing_of(&[photo.id]).await.unwrap().is_empty());
    assert_eq!(
        repo.find_derived_by_key(&outcome.versions[1].s3_key)
            .await
            .unwrap(),
        None
    );
}

pub async fn a_lapsed_lease_lets_another_worker_take_the_job_over(repo: &dyn Repo) {
    let event = new_event(repo).await;
    let photo = ready(repo, event, "image/jpeg", 1).await;
    let first = repo.claim_job(claim(10, 10, 3)).await.unwrap().unwrap();
    // Renewing keeps it: at 15 the lease runs to 30.
    assert!(repo.renew_job(first.id, 1, at(30)).await.unwrap());
    assert_eq!(repo.claim_job(claim(25, 10, 3)).await.unwrap(), None);

    // The first worker goes silent; past its lease the job is claimed again.
    let second = repo.claim_job(claim(31, 10, 3)).await.unwrap().unwrap();
    assert_eq!(second.id, first.id);
    assert_eq!(second.attempts, 2);
    // The first worker has lost it: it can neither renew, finish nor fail it.
    assert!(!repo.renew_job(first.id, 1, at(60)).await.unwrap());
    let outcome = JobOutcome {
        width: 10,
        height: 10,
        versions: vec![version(&photo, "display", 10, 10)],
    };
    assert!(
        !repo
            .complete_job(first.id, 1, &outcome, at(32))
            .await
            .unwrap()
    );
    assert_eq!(
        repo.fail_job(first.id, 1, "late", None, at(32))
            .await
            .unwrap(),
        None
    );
    assert!(
        repo.processing_of(&[photo.id]).await.unwrap()[0]
            .variants
            .is_empty()
    );
    assert!(
        repo.complete_job(second.id, 2, &outcome, at(33))
            .await
            .unwrap()
    );
    assert_eq!(state_of(repo, &photo).await, ProcessingState::Ready);
}

pub async fn failures_are_retried_then_parked_with_their_error(repo: &dyn Repo) {
    let event = new_event(repo).await;
    let photo = ready(repo, event, "image/gif", 1).await;
    let job = repo.claim_job(claim(10, 60, 3)).await.unwrap().unwrap();
    assert_eq!(
        repo.fail_job(job.id, 1, "store down", Some(at(20)), at(11))
            .await
            .unwrap(),
        Some(JobState::Queued)
    );
    assert_eq!(state_of(repo, &photo).await, ProcessingState::Pending);
    // Not before its back-off.
    assert_eq!(repo.claim_job(claim(15, 60, 3)).await.unwrap(), None);
    let job = repo.claim_job(claim(20, 60, 3)).await.unwrap().unwrap();
    assert_eq!(job.attempts, 2);
    assert_eq!(job.last_error.as_deref(), Some("store down"));

    // The second attempt's worker dies; the third claim is the last allowed.
    let job = repo.claim_job(claim(81, 60, 3)).await.unwrap().unwrap();
    assert_eq!(job.attempts, 3);
    assert_eq!(
        repo.fail_job(job.id, 3, "cannot decode", None, at(90))
            .await
            .unwrap(),
        Some(JobState::Parked)
    );
    let jobs = repo.jobs_of(photo.id).await.unwrap();
    assert_eq!(jobs[0].state, JobState::Parked);
    assert_eq!(jobs[0].last_error.as_deref(), Some("cannot decode"));
    assert_eq!(state_of(repo, &photo).await, ProcessingState::Failed);
    assert_eq!(repo.claim_job(claim(1000, 60, 3)).await.unwrap(), None);

    // A worker that dies on the last allowed attempt: the job is parked, not run a fourth time.
    let other = ready(repo, event, "image/webp", 2).await;
    for attempt in 1..=2 {
        let job = repo
            .claim_job(claim(2000 + attempt * 100, 10, 2))
            .await
            .unwrap()
            .unwrap();
        assert_eq!((job.media_id, job.attempts), (other.id, attempt as u32));
    }
    assert_eq!(repo.claim_job(claim(3000, 10, 2)).await.unwrap(), None);
    let jobs = repo.jobs_of(other.id).await.unwrap();
    assert_eq!(jobs[0].state, JobState::Parked);
    assert!(
        jobs[0]
            .last_error
            .as_deref()
            .unwrap()
            .contains("lease lapsed"),
        "{jobs:?}"
    );
    assert_eq!(state_of(repo, &other).await, ProcessingState::Failed);
}

pub async fn concurrent_claimers_never_get_the_same_job(repo: &dyn Repo) {
    let event = new_event(repo).await;
    let mut expected = HashSet::new();
    for i in 0..24 {
        expected.insert(ready(repo, event, "image/jpeg", i).await.id);
    }
    let claims = (0..6).map(|_| async move {
        let mut mine = Vec::new();
        while let Some(job) = repo.claim_job(claim(100, 600, 3)).await.unwrap() {
            mine.push((job.id, job.media_id));
        }
        mine
    });
    let claimed: Vec<_> = futures::future::join_all(claims)
        .await
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(
        claimed.len(),
        expected.len(),
        "every job claimed exactly once"
    );
    let jobs: HashSet<_> = claimed.iter().map(|(job, _)| *job).collect();
    let media: HashSet<_> = claimed.iter().map(|(_, media)| *media).collect();
    assert_eq!(jobs.len(), claimed.len(), "a job claimed twice");
    assert_eq!(media, expected);
}

/// PostgreSQL's row locks: completing (or failing) a job takes its media's lock before the job's,
/// as every other transaction writing both does (deleting a media locks it, then its cascade
/// reaches the jobs; the claim parks lapsed jobs' media before the jobs). Another session holds
/// the media's lock here, then writes the job: in the other order the two would wait on each
/// other and PostgreSQL would fail one of them as a deadlock.
pub async fn completion_locks_the_media_before_the_job(repo: &dyn Repo, url: &str) {
    use diesel::prelude::*;
    use std::sync::mpsc;
    use std::time::Duration;

    let event = new_event(repo).await;
    let photo = ready(repo, event, "image/png", 1).await;
    let job = repo.claim_job(claim(10, 60, 3)).await.unwrap().unwrap();

    let (locked_tx, locked_rx) = mpsc::channel::<()>();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (media, job_id, url) = (photo.id.as_uuid(), job.id, url.to_owned());
    let other = std::thread::spawn(move || -> Result<usize, String> {
        let mut conn = PgConnection::establish(&url).map_err(|e| e.to_string())?;
        conn.transaction::<_, diesel::result::Error, _>(|conn| {
            diesel::sql_query(format!(
                "SELECT id FROM event_media WHERE id = '{media}' FOR NO KEY UPDATE"
            ))
            .execute(conn)?;
            locked_tx.send(()).unwrap();
            go_rx.recv().unwrap();
            diesel::sql_query(format!(
                "UPDATE processing_jobs SET updated_at = updated_at WHERE id = '{job_id}'"
            ))
            .execute(conn)
        })
        .map_err(|e| e.to_string())
    });
    locked_rx.recv().unwrap();

    let outcome = JobOutcome {
        width: 8,
        height: 6,
        versions: vec![version(&photo, "thumb-256", 8, 6)],
    };
    let complete = repo.complete_job(job.id, 1, &outcome, at(20));
    let mut complete = std::pin::pin!(complete);
    // The completion waits for the media's lock (holding nothing of the job's) ...
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut complete)
            .await
            .is_err(),
        "the completion should wait for the media's row lock"
    );
    // ... so the other session's write of the job goes through and commits.
    go_tx.send(()).unwrap();
    let written = tokio::task::spawn_blocking(move || other.join().unwrap())
        .await
        .unwrap();
    assert_eq!(written, Ok(1), "the other session's write of the job");
    assert!(complete.await.unwrap(), "then the completion goes through");
    assert_eq!(state_of(repo, &photo).await, ProcessingState::Ready);
}
