//! The resumable-upload repository suite ([`TusRepository`]: tus sessions and the leases on
//! uploads in flight), run against the in-memory fake, SQLite (a temp file) and PostgreSQL (a
//! fresh database per test; skipped visibly when no server is reachable), so that the fake the
//! service's tests use cannot drift from the Diesel repositories. The cases that rest on the
//! database's foreign keys (a session or lease needs its media record and goes with it) run on
//! SQLite and PostgreSQL only: the fake does not see media records, as its documentation says.
//! Beside them, the answers a background completion keeps for its client
//! ([`IdempotencyRepository::put_answer`]), which the status URL of a direct upload reads.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod common;

use std::any::Any;
use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone as _, Utc};
use plugs_domain::{Event, EventId, EventMedia, MediaId, MediaStatus, UserId};
use plugs_persistence::{
    Claim, Database, EventRepository, IdempotencyRepository, InMemoryIdempotency,
    InMemoryRepository, InMemoryTusRepository, MediaRepository, RepoError, StoredAnswer, TusPart,
    TusRepository, TusSession, truncate_to_micros,
};

/// A fresh pair of repositories: media records and tus sessions (one database, or two fakes).
struct TusSubject {
    media: Arc<dyn Records>,
    tus: Arc<dyn TusRepository>,
    answers: Arc<dyn IdempotencyRepository>,
    _keep: Vec<Box<dyn Any + Send>>,
}

trait Records: EventRepository + MediaRepository {}
impl<T: EventRepository + MediaRepository> Records for T {}

async fn memory() -> Option<TusSubject> {
    Some(TusSubject {
        media: Arc::new(InMemoryRepository::new()),
        tus: Arc::new(InMemoryTusRepository::new()),
        answers: Arc::new(InMemoryIdempotency::new()),
        _keep: Vec::new(),
    })
}

fn database_subject(db: Database, keep: Vec<Box<dyn Any + Send>>) -> TusSubject {
    let db = Arc::new(db);
    TusSubject {
        media: Arc::clone(&db) as Arc<dyn Records>,
        answers: Arc::clone(&db) as Arc<dyn IdempotencyRepository>,
        tus: db,
        _keep: keep,
    }
}

async fn sqlite() -> Option<TusSubject> {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("plugs.db").display());
    let db = Database::connect(&url, common::options()).unwrap();
    db.run_migrations().await.unwrap();
    Some(database_subject(db, vec![Box::new(dir)]))
}

async fn postgres() -> Option<TusSubject> {
    let (test_db, db) = common::postgres_database().await?;
    db.run_migrations().await.unwrap();
    Some(database_subject(db, vec![Box::new(test_db)]))
}

macro_rules! tus_suite {
    ($backend:ident, [$($case:ident),* $(,)?]) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let Some(subject) = crate::$backend().await else { return };
                    crate::$case(&subject).await;
                }
            )*
        }
    };
}

macro_rules! every_backend {
    ($($case:ident),* $(,)?) => {
        mod every_backend {
            tus_suite!(memory, [$($case),*]);
            tus_suite!(sqlite, [$($case),*]);
            tus_suite!(postgres, [$($case),*]);
        }
    };
}

macro_rules! database_backends {
    ($($case:ident),* $(,)?) => {
        mod database_backends {
            tus_suite!(sqlite, [$($case),*]);
            tus_suite!(postgres, [$($case),*]);
        }
    };
}

every_backend!(
    a_session_round_trips_and_is_stored_once,
    advancing_applies_only_from_the_offset_read,
    a_session_expires_with_its_records_lease,
    deleting_a_session_is_idempotent,
    one_holder_leases_an_upload_at_a_time,
    racing_lockers_let_exactly_one_win,
    kept_answers_replace_each_other_and_expire,
);

database_backends!(
    a_session_or_lease_needs_its_media_record,
    sessions_and_leases_go_with_their_media_record,
);

fn at(seconds: i64, nanos: u32) -> DateTime<Utc> {
    Utc.timestamp_opt(1_750_000_000 + seconds, nanos).unwrap()
}

/// A pending upload's record in a new event, leased until `lease_until`.
async fn upload_record(subject: &TusSubject, lease_until: DateTime<Utc>) -> EventMedia {
    let owner = UserId::parse("alice").unwrap();
    let event = Event {
        id: EventId::new(),
        title: "Resumable".to_owned(),
        owner: owner.clone(),
        created_at: at(0, 0),
        updated_at: at(0, 0),
    };
    subject.media.insert_event(&event).await.unwrap();
    let id = MediaId::new();
    let media = EventMedia {
        id,
        event_id: event.id,
        title: None,
        description: None,
        tags: Vec::new(),
        original_filename: Some("clip.mp4".to_owned()),
        content_type: "video/mp4".to_owned(),
        size_bytes: 0,
        sha256: None,
        s3_key: format!(
            "events/{}/media/2025/06/15/120000_{}.mp4",
            event.id,
            id.as_uuid().simple()
        ),
        status: MediaStatus::Pending,
        uploaded_by: owner,
        created_at: at(0, 0),
        updated_at: at(0, 0),
        lease_until: Some(lease_until),
        location_stripped: false,
    };
    subject.media.insert_media(&media).await.unwrap();
    media
}

fn session(media: &EventMedia, expires_at: DateTime<Utc>) -> TusSession {
    TusSession {
        media_id: media.id,
        staging_key: format!("uploads/{}/{}", media.event_id, media.id),
        multipart_id: "2~mp-Ab_c.d".to_owned(),
        upload_length: None,
        offset: 0,
        part_size: 8 * 1024 * 1024,
        parts: Vec::new(),
        tail_key: None,
        sniffed: false,
        metadata: Some("filename Y2xpcC5tcDQ=,filetype dmlkZW8vbXA0".to_owned()),
        expires_at,
    }
}

async fn a_session_round_trips_and_is_stored_once(subject: &TusSubject) {
    let media = upload_record(subject, at(3600, 0)).await;
    // Nanoseconds are beyond every backend's precision: what comes back is truncated to micros.
    let new = session(&media, at(3600, 123_456_789));
    subject.tus.insert_tus_session(&new).await.unwrap();
    let found = subject.tus.find_tus_session(media.id).await.unwrap();
    assert_eq!(
        found,
        Some(TusSession {
            expires_at: at(3600, 123_456_000),
            ..new.clone()
        })
    );
    assert!(matches!(
        subject.tus.insert_tus_session(&new).await,
        Err(RepoError::Duplicate { .. })
    ));
    assert_eq!(
        subject.tus.find_tus_session(MediaId::new()).await.unwrap(),
        None
    );
}

async fn advancing_applies_only_from_the_offset_read(subject: &TusSubject) {
    let media = upload_record(subject, at(3600, 0)).await;
    let start = session(&media, at(3600, 0));
    subject.tus.insert_tus_session(&start).await.unwrap();

    // A deferred length declared, a full part stored (ETags with quotes and spaces survive), a
    // tail staged, the head sniffed.
    let part_size = start.part_size;
    let first = TusSession {
        upload_length: Some(3 * part_size + 5),
        offset: part_size + 100,
        parts: vec![TusPart {
            number: 1,
            etag: "\"9b2c f00\"".to_owned(),
        }],
        tail_key: Some(format!("{}.{}.part", start.staging_key, part_size + 100)),
        sniffed: true,
        expires_at: at(7200, 0),
        ..start.clone()
    };
    assert!(subject.tus.advance_tus_session(&first, 0).await.unwrap());
    assert_eq!(
        subject.tus.find_tus_session(media.id).await.unwrap(),
        Some(first.clone())
    );

    // A second request that read offset 0 too writes nothing.
    let stale = TusSession {
        offset: 10,
        tail_key: Some("uploads/other.10.part".to_owned()),
        ..start.clone()
    };
    assert!(!subject.tus.advance_tus_session(&stale, 0).await.unwrap());
    assert_eq!(
        subject.tus.find_tus_session(media.id).await.unwrap(),
        Some(first.clone())
    );

    // The tail merged into a second part: the tail's key goes back to nothing.
    let second = TusSession {
        offset: 2 * part_size,
        parts: vec![
            first.parts[0].clone(),
            TusPart {
                number: 2,
                etag: "\"second\"".to_owned(),
            },
        ],
        tail_key: None,
        ..first.clone()
    };
    assert!(
        subject
            .tus
            .advance_tus_session(&second, first.offset)
            .await
            .unwrap()
    );
    assert_eq!(
        subject.tus.find_tus_session(media.id).await.unwrap(),
        Some(second)
    );

    // A session that is not there is not advanced (and not created).
    let missing = TusSession {
        media_id: MediaId::new(),
        ..start
    };
    assert!(!subject.tus.advance_tus_session(&missing, 0).await.unwrap());
    assert_eq!(
        subject
            .tus
            .find_tus_session(missing.media_id)
            .await
            .unwrap(),
        None
    );
}

/// The record of a tus upload is leased until the upload expires, and each request moves both
/// on: gc sees the upload stale only once that passed.
async fn a_session_expires_with_its_records_lease(subject: &TusSubject) {
    let expires = at(3600, 0);
    let media = upload_record(subject, expires).await;
    let start = session(&media, expires);
    subject.tus.insert_tus_session(&start).await.unwrap();
    let stale = |now: DateTime<Utc>| {
        let media = Arc::clone(&subject.media);
        async move {
            media
                .list_stale(MediaStatus::Pending, now, now, 10)
                .await
                .unwrap()
                .into_iter()
                .map(|m| m.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(stale(at(3599, 0)).await, Vec::new());
    assert_eq!(stale(at(3600, 1000)).await, vec![media.id]);

    // A request moves the expiry and the record's lease on together.
    let later = at(7200, 0);
    let moved = TusSession {
        offset: 10,
        expires_at: later,
        ..start
    };
    assert!(subject.tus.advance_tus_session(&moved, 0).await.unwrap());
    assert!(subject.media.renew_lease(media.id, later).await.unwrap());
    assert_eq!(
        subject
            .tus
            .find_tus_session(media.id)
            .await
            .unwrap()
            .unwrap()
            .expires_at,
        later
    );
    assert_eq!(stale(at(3600, 1000)).await, Vec::new());
    assert_eq!(stale(at(7200, 1000)).await, vec![media.id]);
}

async fn deleting_a_session_is_idempotent(subject: &TusSubject) {
    let media = upload_record(subject, at(3600, 0)).await;
    subject
        .tus
        .insert_tus_session(&session(&media, at(3600, 0)))
        .await
        .unwrap();
    subject.tus.delete_tus_session(media.id).await.unwrap();
    assert_eq!(subject.tus.find_tus_session(media.id).await.unwrap(), None);
    subject.tus.delete_tus_session(media.id).await.unwrap();
    subject
        .tus
        .delete_tus_session(MediaId::new())
        .await
        .unwrap();
    // The record stays: the session is only where the upload stood.
    assert!(subject.media.find_media(media.id).await.unwrap().is_some());
}

async fn one_holder_leases_an_upload_at_a_time(subject: &TusSubject) {
    let tus = &subject.tus;
    let media = upload_record(subject, at(3600, 0)).await;
    let id = media.id;
    let now = at(10, 0);
    assert_eq!(tus.upload_locked_until(id, now).await.unwrap(), None);

    assert!(tus.lock_upload(id, "a", at(70, 5_000), now).await.unwrap());
    assert_eq!(
        tus.upload_locked_until(id, now).await.unwrap(),
        Some(at(70, 5_000))
    );
    // Live: nobody else takes it, not even the same request twice, and only its holder renews.
    assert!(
        !tus.lock_upload(id, "b", at(80, 0), at(69, 0))
            .await
            .unwrap()
    );
    assert!(
        !tus.lock_upload(id, "a", at(80, 0), at(69, 0))
            .await
            .unwrap()
    );
    assert!(!tus.renew_upload_lock(id, "b", at(90, 0)).await.unwrap());
    assert!(tus.renew_upload_lock(id, "a", at(100, 0)).await.unwrap());
    assert!(
        !tus.lock_upload(id, "b", at(120, 0), at(99, 0))
            .await
            .unwrap()
    );
    // Another holder's unlock changes nothing.
    tus.unlock_upload(id, "b").await.unwrap();
    assert_eq!(
        tus.upload_locked_until(id, at(99, 0)).await.unwrap(),
        Some(at(100, 0))
    );

    // Lapsed (its process died): the next request takes it over, and the old holder can
    // neither renew it nor give it up.
    assert_eq!(tus.upload_locked_until(id, at(100, 0)).await.unwrap(), None);
    assert!(
        tus.lock_upload(id, "b", at(160, 0), at(100, 0))
            .await
            .unwrap()
    );
    assert!(!tus.renew_upload_lock(id, "a", at(200, 0)).await.unwrap());
    tus.unlock_upload(id, "a").await.unwrap();
    assert_eq!(
        tus.upload_locked_until(id, at(101, 0)).await.unwrap(),
        Some(at(160, 0))
    );

    // Given up: free at once.
    tus.unlock_upload(id, "b").await.unwrap();
    assert_eq!(tus.upload_locked_until(id, at(101, 0)).await.unwrap(), None);
    assert!(
        tus.lock_upload(id, "c", at(200, 0), at(101, 0))
            .await
            .unwrap()
    );

    // Leases of other uploads are their own.
    let other = upload_record(subject, at(3600, 0)).await;
    assert!(
        tus.lock_upload(other.id, "d", at(200, 0), at(101, 0))
            .await
            .unwrap()
    );
}

async fn racing_lockers_let_exactly_one_win(subject: &TusSubject) {
    let media = upload_record(subject, at(3600, 0)).await;
    let now = Utc::now();
    for round in 0..2 {
        // Round 0 races for a free upload; round 1 for one whose lease lapsed.
        let until = now + Duration::seconds(60 * (round + 1));
        let at_round = now + Duration::seconds(60 * round);
        let racers = (0..8).map(|i| {
            let tus = Arc::clone(&subject.tus);
            let holder = format!("holder-{round}-{i}");
            tokio::spawn(async move {
                let won = tus
                    .lock_upload(media.id, &holder, until, at_round)
                    .await
                    .unwrap();
                (holder, won)
            })
        });
        let results = futures::future::join_all(racers).await;
        let winners: Vec<String> = results
            .into_iter()
            .map(Result::unwrap)
            .filter_map(|(holder, won)| won.then_some(holder))
            .collect();
        assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
        assert!(
            subject
                .tus
                .renew_upload_lock(media.id, &winners[0], until)
                .await
                .unwrap(),
            "the winner holds it"
        );
        assert_eq!(
            subject
                .tus
                .upload_locked_until(media.id, at_round)
                .await
                .unwrap(),
            Some(truncate_to_micros(until))
        );
    }
}

async fn a_session_or_lease_needs_its_media_record(subject: &TusSubject) {
    let media = upload_record(subject, at(3600, 0)).await;
    let orphan = TusSession {
        media_id: MediaId::new(),
        ..session(&media, at(3600, 0))
    };
    assert!(matches!(
        subject.tus.insert_tus_session(&orphan).await,
        Err(RepoError::MissingParent { .. })
    ));
    assert!(matches!(
        subject
            .tus
            .lock_upload(MediaId::new(), "a", at(60, 0), at(0, 0))
            .await,
        Err(RepoError::MissingParent { .. })
    ));
}

async fn sessions_and_leases_go_with_their_media_record(subject: &TusSubject) {
    let media = upload_record(subject, at(3600, 0)).await;
    subject
        .tus
        .insert_tus_session(&session(&media, at(3600, 0)))
        .await
        .unwrap();
    assert!(
        subject
            .tus
            .lock_upload(media.id, "a", at(60, 0), at(0, 0))
            .await
            .unwrap()
    );
    subject.media.delete_media(media.id).await.unwrap();
    assert_eq!(subject.tus.find_tus_session(media.id).await.unwrap(), None);
    assert_eq!(
        subject
            .tus
            .upload_locked_until(media.id, at(0, 0))
            .await
            .unwrap(),
        None
    );
}

async fn kept_answers_replace_each_other_and_expire(subject: &TusSubject) {
    let answers = &subject.answers;
    let user = UserId::parse("alice").unwrap();
    let key = "direct-upload outcome 1";
    let day = chrono::TimeDelta::hours(24);
    let refusal = |status: u16| StoredAnswer {
        fingerprint: String::new(),
        status,
        body: format!("{{\"status\":{status}}}"),
        location: None,
    };
    assert_eq!(
        answers
            .find_answer(&user, key, at(0, 0), day)
            .await
            .unwrap(),
        None
    );
    answers
        .put_answer(&user, key, &refusal(503), at(0, 0))
        .await
        .unwrap();
    assert_eq!(
        answers
            .find_answer(&user, key, at(10, 0), day)
            .await
            .unwrap(),
        Some(refusal(503))
    );
    // A later outcome of the same upload replaces the first.
    answers
        .put_answer(&user, key, &refusal(415), at(20, 0))
        .await
        .unwrap();
    assert_eq!(
        answers
            .find_answer(&user, key, at(30, 0), day)
            .await
            .unwrap(),
        Some(refusal(415))
    );
    // Another user's key of the same name is theirs; finding claims nothing.
    let bob = UserId::parse("bob").unwrap();
    assert_eq!(
        answers
            .find_answer(&bob, key, at(30, 0), day)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        answers
            .claim(&bob, key, at(30, 0), day, chrono::TimeDelta::hours(1))
            .await
            .unwrap(),
        Claim::Claimed
    );
    // A kept answer is an answered key for claims too, and expires with the same age.
    assert_eq!(
        answers
            .claim(&user, key, at(40, 0), day, chrono::TimeDelta::hours(1))
            .await
            .unwrap(),
        Claim::Answered(refusal(415))
    );
    assert_eq!(
        answers
            .find_answer(&user, key, at(20 + 24 * 3600 + 1, 0), day)
            .await
            .unwrap(),
        None
    );
}
