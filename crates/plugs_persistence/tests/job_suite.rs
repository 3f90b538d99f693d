//! The processing queue's part of the shared repository suite, run against the in-memory fake,
//! SQLite (a temp file) and PostgreSQL (a fresh database per test; skipped visibly when no
//! server is reachable).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

macro_rules! job_suite {
    ($backend:ident, $make:path, [$($case:ident),* $(,)?]) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let Some(subject) = $make().await else { return };
                    $crate::common::jobs::$case(&*subject.repo).await;
                }
            )*
        }
    };
}

macro_rules! all_backends {
    ($($case:ident),* $(,)?) => {
        job_suite!(memory, crate::common::memory, [$($case),*]);
        job_suite!(sqlite, crate::common::sqlite, [$($case),*]);
        job_suite!(postgres, crate::common::postgres, [$($case),*]);
    };
}

all_backends!(
    mark_ready_enqueues_a_job_for_images_only,
    claim_complete_and_read_back,
    a_lapsed_lease_lets_another_worker_take_the_job_over,
    failures_are_retried_then_parked_with_their_error,
    concurrent_claimers_never_get_the_same_job,
);

/// Lock order, which only PostgreSQL's row locks can show.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_completion_locks_the_media_before_the_job() {
    let Some((test_db, db)) = common::postgres_database().await else {
        return;
    };
    db.run_migrations().await.unwrap();
    common::jobs::completion_locks_the_media_before_the_job(&db, test_db.url()).await;
}
