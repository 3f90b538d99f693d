//! [`JobRepository`] in the in-memory fake: the same rules as the Diesel queries in
//! `crate::jobs`, under the fake's one lock.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use plugs_domain::{
    DerivedVersion, EventId, MediaId, MediaProcessing, MediaStatus, ProcessingState,
};
use uuid::Uuid;

use super::{InMemoryRepository, RepoOp};
use crate::jobs::{JobClaim, JobOutcome, JobRepository, JobState, ProcessingJob};
use crate::{RepoError, truncate_to_micros};

impl InMemoryRepository {
    /// The fake's [`crate::Database::with_processable`]: jobs are enqueued for media of these
    /// types from now on.
    #[must_use]
    pub fn with_processable(self, types: plugs_domain::ProcessableTypes) -> Self {
        super::lock(&self.tables).jobs.processable = types;
        self
    }
}

#[async_trait]
impl JobRepository for InMemoryRepository {
    async fn claim_job(&self, claim: JobClaim) -> Result<Option<ProcessingJob>, RepoError> {
        self.run(RepoOp::ClaimJob, |tables| Ok(tables.jobs.claim(claim)))
    }

    async fn renew_job(
        &self,
        id: Uuid,
        attempt: u32,
        until: DateTime<Utc>,
    ) -> Result<bool, RepoError> {
        self.run(RepoOp::RenewJob, |tables| {
            Ok(match tables.jobs.held(id, attempt) {
                Some(job) => {
                    job.lease_until = Some(truncate_to_micros(until));
                    true
                }
                None => false,
            })
        })
    }

    async fn complete_job(
        &self,
        id: Uuid,
        attempt: u32,
        outcome: &JobOutcome,
        at: DateTime<Utc>,
    ) -> Result<bool, RepoError> {
        self.run(RepoOp::CompleteJob, |tables| {
            let jobs = &mut tables.jobs;
            let Some(job) = jobs.held(id, attempt) else {
                return Ok(false);
            };
            let media_id = job.media_id;
            if outcome.versions.iter().any(|v| v.media_id != media_id) {
                return Err(RepoError::Other {
                    source: "a derived version of another media".into(),
                });
            }
            let taken = outcome.versions.iter().any(|v| {
                jobs.derived
                    .values()
                    .any(|stored| stored.s3_key == v.s3_key && stored.media_id != media_id)
            });
            if taken {
                return Err(RepoError::Duplicate { what: "s3_key" });
            }
            let Some(job) = jobs.held(id, attempt) else {
                return Ok(false);
            };
            job.state = JobState::Done;
            job.lease_until = None;
            job.updated_at = truncate_to_micros(at);
            for version in &outcome.versions {
                jobs.derived
                    .insert((media_id, version.variant.clone()), version.clone());
            }
            jobs.media.insert(
                media_id,
                (
                    ProcessingState::Ready,
                    Some(outcome.width),
                    Some(outcome.height),
                ),
            );
            Ok(true)
        })
    }

    async fn fail_job(
        &self,
        id: Uuid,
        attempt: u32,
        error: &str,
        retry_at: Option<DateTime<Utc>>,
        at: DateTime<Utc>,
    ) -> Result<Option<JobState>, RepoError> {
        self.run(RepoOp::FailJob, |tables| {
            let jobs = &mut tables.jobs;
            let Some(job) = jobs.held(id, attempt) else {
                return Ok(None);
            };
            let state = if retry_at.is_some() {
                JobState::Queued
            } else {
                JobState::Parked
            };
            job.state = state;
            job.lease_until = retry_at.map(truncate_to_micros);
            job.last_error = Some(error.to_owned());
            job.updated_at = truncate_to_micros(at);
            let media_id = job.media_id;
            if state == JobState::Parked {
                jobs.set_state(media_id, ProcessingState::Failed);
            }
            Ok(Some(state))
        })
    }

    async fn enqueue_job(
        &self,
        media_id: MediaId,
        variants: Option<&[String]>,
        at: DateTime<Utc>,
    ) -> Result<bool, RepoError> {
        self.run(RepoOp::EnqueueJob, |tables| {
            let processable = tables.media.get(&media_id).is_some_and(|media| {
                media.status == MediaStatus::Ready
                    && tables.jobs.processable.contains(&media.content_type)
            });
            if !processable {
                return Ok(false);
            }
            tables.jobs.set_state(media_id, ProcessingState::Pending);
            let queued = tables
                .jobs
                .jobs
                .values()
                .any(|job| job.media_id == media_id && job.state == JobState::Queued);
            if queued {
                return Ok(false);
            }
            tables
                .jobs
                .insert_job(media_id, variants.map(<[String]>::to_vec), at);
            Ok(true)
        })
    }

    async fn processable_media(
        &self,
        event_id: Option<EventId>,
        after: Option<MediaId>,
        limit: usize,
    ) -> Result<Vec<MediaId>, RepoError> {
        self.run(RepoOp::ReadJobs, |tables| {
            let mut ids: Vec<MediaId> = tables
                .media
                .values()
                .filter(|media| {
                    media.status == MediaStatus::Ready
                        && tables.jobs.processable.contains(&media.content_type)
                        && event_id.is_none_or(|event| media.event_id == event)
                        && after.is_none_or(|after| media.id.as_uuid() > after.as_uuid())
                })
                .map(|media| media.id)
                .collect();
            ids.sort_by_key(MediaId::as_uuid);
            ids.truncate(limit);
            Ok(ids)
        })
    }

    async fn jobs_of(&self, media_id: MediaId) -> Result<Vec<ProcessingJob>, RepoError> {
        self.run(RepoOp::ReadJobs, |tables| {
            let mut jobs: Vec<ProcessingJob> = tables
                .jobs
                .jobs
                .values()
                .filter(|job| job.media_id == media_id)
                .cloned()
                .collect();
            jobs.sort_by_key(|job| (job.created_at, job.id));
            Ok(jobs)
        })
    }

    async fn processing_of(&self, ids: &[MediaId]) -> Result<Vec<MediaProcessing>, RepoError> {
        self.run(RepoOp::ReadJobs, |tables| {
            Ok(ids
                .iter()
                .filter(|id| tables.media.contains_key(id))
                .map(|id| tables.jobs.processing_of(*id))
                .collect())
        })
    }

    async fn find_derived_by_key(&self, s3_key: &str) -> Result<Option<DerivedVersion>, RepoError> {
        self.run(RepoOp::ReadJobs, |tables| {
            Ok(tables
                .jobs
                .derived
                .values()
                .find(|version| version.s3_key == s3_key)
                .cloned())
        })
    }
}
