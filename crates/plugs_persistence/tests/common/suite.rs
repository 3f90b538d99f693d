//! The cases. Each takes an empty repository and asserts what a caller of the traits would see.

use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone as _, Utc};
use plugs_domain::{
    Event, EventId, EventMedia, MediaFields, MediaId, MediaKind, MediaStatus, PageCursor, UserId,
};
use plugs_persistence::{FieldsUpdate, MediaFilter, ReadyUpdate, RepoError, truncate_to_micros};

use super::Repo;

fn at(seconds: i64, nanos: u32) -> DateTime<Utc> {
    Utc.timestamp_opt(1_750_000_000 + seconds, nanos).unwrap()
}

fn user(name: &str) -> UserId {
    UserId::parse(name).unwrap()
}

fn event(owner: &str, created_at: DateTime<Utc>) -> Event {
    Event {
        id: EventId::new(),
        title: format!("event of {owner}"),
        owner: user(owner),
        created_at,
        updated_at: created_at,
    }
}

fn pending(event_id: EventId, created_at: DateTime<Utc>, tags: &[&str]) -> EventMedia {
    let id = MediaId::new();
    EventMedia {
        id,
        event_id,
        title: Some("Stage, second night".to_owned()),
        description: Some("From the balcony — ünïcode too".to_owned()),
        tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        original_filename: Some("IMG_0001.jpg".to_owned()),
        content_type: "image/jpeg".to_owned(),
        size_bytes: 0,
        sha256: None,
        s3_key: format!(
            "events/{event_id}/media/2025/06/15/120000_{}.jpg",
            id.as_uuid().simple()
        ),
        status: MediaStatus::Pending,
        uploaded_by: user("alice"),
        created_at,
        updated_at: created_at,
        lease_until: None,
        location_stripped: false,
    }
}

const SHA: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

/// A finished upload of `media` with `size` bytes that keeps the record's fields.
fn outcome(media: &EventMedia, size: u64) -> ReadyUpdate {
    ReadyUpdate {
        size_bytes: size,
        sha256: SHA.to_owned(),
        fields: MediaFields {
            title: media.title.clone(),
            description: media.description.clone(),
            tags: media.tags.clone(),
        },
        at: Utc::now(),
        location_stripped: false,
    }
}

async fn new_event(repo: &dyn Repo, created_at: DateTime<Utc>) -> Event {
    let event = event("alice", created_at);
    repo.insert_event(&event).await.unwrap();
    event
}

async fn ready_media(repo: &dyn Repo, event_id: EventId, created_at: DateTime<Utc>) -> EventMedia {
    let media = pending(event_id, created_at, &[]);
    repo.insert_media(&media).await.unwrap();
    repo.mark_ready(media.id, outcome(&media, 42))
        .await
        .unwrap()
}

/// Walks every page of a listing with `page_size` and returns the items in order served.
async fn all_pages<T, F, Fut>(
    page_size: usize,
    key: impl Fn(&T) -> PageCursor,
    mut page: F,
) -> Vec<T>
where
    F: FnMut(Option<PageCursor>) -> Fut,
    Fut: Future<Output = Result<Vec<T>, RepoError>>,
{
    let mut served = Vec::new();
    let mut cursor = None;
    loop {
        let items = page(cursor).await.unwrap();
        assert!(items.len() <= page_size, "a page longer than the limit");
        let Some(last) = items.last() else { break };
        cursor = Some(key(last));
        let full = items.len() == page_size;
        served.extend(items);
        if !full {
            break;
        }
    }
    served
}

pub async fn event_round_trip_and_duplicate_id(repo: &dyn Repo) {
    // Nanoseconds are beyond every backend's precision: what comes back is truncated to micros.
    let event = event("alice", at(0, 123_456_789));
    repo.insert_event(&event).await.unwrap();

    let found = repo.find_event(event.id).await.unwrap().unwrap();
    assert_eq!(
        found,
        Event {
            created_at: at(0, 123_456_000),
            updated_at: at(0, 123_456_000),
            ..event.clone()
        }
    );
    assert_eq!(repo.find_event(EventId::new()).await.unwrap(), None);

    let again = Event {
        title: "other".to_owned(),
        ..event.clone()
    };
    let err = repo.insert_event(&again).await.unwrap_err();
    assert!(
        matches!(err, RepoError::Duplicate { what: "id" }),
        "{err:?}"
    );
    assert_eq!(
        repo.find_event(event.id).await.unwrap().unwrap().title,
        event.title
    );
}

pub async fn events_list_by_owner_newest_first_without_repeats_or_skips(repo: &dyn Repo) {
    // Three events share one timestamp: only the id tie-break keeps pages from repeating or
    // skipping them.
    let times = [
        at(5, 0),
        at(1, 0),
        at(3, 500),
        at(3, 500),
        at(3, 500),
        at(2, 999_000),
        at(4, 1_000),
    ];
    let mut expected = Vec::new();
    for time in times {
        expected.push(new_event(repo, time).await);
    }
    for time in [at(10, 0), at(0, 0)] {
        repo.insert_event(&event("bob", time)).await.unwrap();
    }
    for event in &mut expected {
        event.created_at = truncate_to_micros(event.created_at);
        event.updated_at = truncate_to_micros(event.updated_at);
    }
    expected.sort_by_key(|e| std::cmp::Reverse((e.created_at, e.id)));

    let alice = user("alice");
    for page_size in [1, 2, 3, 7, 50] {
        let served = all_pages(
            page_size,
            |e: &Event| PageCursor {
                created_at: e.created_at,
                id: e.id.as_uuid(),
            },
            |after| repo.list_events(&alice, after, page_size),
        )
        .await;
        assert_eq!(served, expected, "page size {page_size}");
    }
    assert!(
        repo.list_events(&user("carol"), None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(repo.list_events(&alice, None, 0).await.unwrap().is_empty());
}

pub async fn delete_event_refuses_while_media_remain(repo: &dyn Repo) {
    let missing = EventId::new();
    let err = repo.delete_event(missing).await.unwrap_err();
    assert!(
        matches!(&err, RepoError::NotFound { entity: "event", id } if *id == missing.to_string()),
        "{err:?}"
    );

    let event = new_event(repo, at(0, 0)).await;
    let media = pending(event.id, at(1, 0), &["a"]);
    repo.insert_media(&media).await.unwrap();
    let err = repo.delete_event(event.id).await.unwrap_err();
    assert!(
        matches!(
            err,
            RepoError::HasChildren {
                entity: "event",
                children: "media",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(repo.find_event(event.id).await.unwrap().is_some());

    repo.delete_media(media.id).await.unwrap();
    repo.delete_event(event.id).await.unwrap();
    assert_eq!(repo.find_event(event.id).await.unwrap(), None);
}

pub async fn media_round_trip_keeps_tags_in_order(repo: &dyn Repo) {
    let event = new_event(repo, at(0, 0)).await;
    let mut media = pending(event.id, at(1, 987_654_321), &["zeta", "alpha", "mid", "b"]);
    media.updated_at = at(2, 1_999);
    repo.insert_media(&media).await.unwrap();

    let expected = EventMedia {
        created_at: truncate_to_micros(media.created_at),
        updated_at: truncate_to_micros(media.updated_at),
        ..media.clone()
    };
    assert_eq!(
        repo.find_media(media.id).await.unwrap(),
        Some(expected.clone())
    );
    assert_eq!(
        repo.find_by_key(&media.s3_key).await.unwrap(),
        Some(expected)
    );

    let mut bare = pending(event.id, at(2, 0), &[]);
    bare.title = None;
    bare.description = None;
    bare.original_filename = None;
    repo.insert_media(&bare).await.unwrap();
    assert_eq!(repo.find_media(bare.id).await.unwrap(), Some(bare));
    assert_eq!(repo.find_media(MediaId::new()).await.unwrap(), None);
}

pub async fn media_duplicates_are_told_apart(repo: &dyn Repo) {
    let event = new_event(repo, at(0, 0)).await;
    let media = pending(event.id, at(1, 0), &["x"]);
    repo.insert_media(&media).await.unwrap();

    let same_id = EventMedia {
        s3_key: format!("{}-other", media.s3_key),
        ..media.clone()
    };
    let err = repo.insert_media(&same_id).await.unwrap_err();
    assert!(
        matches!(err, RepoError::Duplicate { what: "id" }),
        "{err:?}"
    );

    let same_key = EventMedia {
        id: MediaId::new(),
        ..media.clone()
    };
    let err = repo.insert_media(&same_key).await.unwrap_err();
    assert!(
        matches!(err, RepoError::Duplicate { what: "s3_key" }),
        "{err:?}"
    );

    // Neither refused insert left anything behind (its tags included).
    assert_eq!(repo.find_media(same_key.id).await.unwrap(), None);
    assert_eq!(
        repo.find_media(media.id).await.unwrap().unwrap().tags,
        vec!["x".to_owned()]
    );
    assert_eq!(repo.list_all_for_event(event.id).await.unwrap().len(), 1);
}

pub async fn media_for_a_missing_event_is_refused(repo: &dyn Repo) {
    let media = pending(EventId::new(), at(0, 0), &["tag"]);
    let err = repo.insert_media(&media).await.unwrap_err();
    assert!(
        matches!(
            err,
            RepoError::MissingParent {
                entity: "media",
                parent: "event"
            }
        ),
        "{err:?}"
    );
    assert_eq!(repo.find_media(media.id).await.unwrap(), None);
}

/// With an owner, `insert_pending` stores the record only on that owner's event: someone
/// else's event is refused exactly as a missing one, and nothing is stored, whichever way the
/// insert goes (alone, with tags, with a quota to check).
pub async fn insert_pending_checks_the_events_owner(repo: &dyn Repo) {
    let event = new_event(repo, at(0, 0)).await;
    let alice = user("alice");
    let bob = user("bob");
    let quota = plugs_domain::Quota {
        event_media: Some(100),
        ..plugs_domain::Quota::default()
    };
    let no_quota = plugs_domain::Quota::default();
    let cases: [(&[&str], &plugs_domain::Quota); 3] = [
        (&[], &no_quota),
        (&["tag", "other"], &no_quota),
        (&[], &quota),
    ];
    for (tags, quota) in cases {
        for (event_id, owner) in [(event.id, &bob), (EventId::new(), &alice)] {
            let media = pending(event_id, at(1, 0), tags);
            let err = repo
                .insert_pending(&media, Some(owner), None, 1_000, quota)
                .await
                .unwrap_err();
            assert!(
                matches!(
                    err,
                    RepoError::MissingParent {
                        entity: "media",
                        parent: "event"
                    }
                ),
                "{tags:?} {owner}: {err:?}"
            );
            assert_eq!(repo.find_media(media.id).await.unwrap(), None);
        }
        let media = pending(event.id, at(2, 0), tags);
        repo.insert_pending(&media, Some(&alice), None, 1_000, quota)
            .await
            .unwrap();
        let stored = repo.find_media(media.id).await.unwrap().unwrap();
        assert_eq!(stored.status, MediaStatus::Pending);
        assert_eq!(stored.tags, tags, "tags in order");
        assert_eq!(stored.title, media.title);
        assert_eq!(stored.original_filename, media.original_filename);
        assert_eq!(stored.uploaded_by, alice);
        assert_eq!(stored.s3_key, media.s3_key);
        assert_eq!(stored.created_at, truncate_to_micros(media.created_at));
    }
    let (of_event, _) = repo.usage(event.id, &alice).await.unwrap();
    assert_eq!(
        (of_event.bytes, of_event.media),
        (3_000, 3),
        "only alice's three"
    );
}

/// `mark_ready` writes the final tags whatever the pending record held: none (a form's tags
/// after its file), the same, others, or none any more.
pub async fn mark_ready_sets_the_final_tags_whatever_the_pending_record_held(repo: &dyn Repo) {
    let event = new_event(repo, at(0, 0)).await;
    let cases: [(&[&str], &[&str]); 4] = [
        (&[], &["late", "tags"]),
        (&["same"], &["same"]),
        (&["early", "gone"], &["gone", "new"]),
        (&["dropped"], &[]),
    ];
    for (step, (early, late)) in cases.into_iter().enumerate() {
        let media = pending(event.id, at(i64::try_from(step).unwrap() + 1, 0), early);
        repo.insert_media(&media).await.unwrap();
        let mut update = outcome(&media, 10);
        update.fields.tags = late.iter().map(|t| (*t).to_owned()).collect();
        let ready = repo.mark_ready(media.id, update).await.unwrap();
        assert_eq!(ready.tags, late, "{early:?} -> {late:?}");
        assert_eq!(
            repo.find_media(media.id).await.unwrap(),
            Some(ready),
            "{early:?} -> {late:?}: the answer is the stored record"
        );
    }
}

pub async fn state_machine_pending_ready_deleting(repo: &dyn Repo) {
    let event = new_event(repo, at(0, 0)).await;
    let media = pending(event.id, at(1, 0), &["t1", "t2"]);
    repo.insert_media(&media).await.unwrap();

    let ready = repo
        .mark_ready(media.id, outcome(&media, 1_234_567))
        .await
        .unwrap();
    assert_eq!(ready.status, MediaStatus::Ready);
    assert_eq!(ready.size_bytes, 1_234_567);
    assert_eq!(ready.sha256.as_deref(), Some(SHA));
    assert_eq!(ready.tags, media.tags);
    assert!(ready.updated_at > media.updated_at);
    assert_eq!(
        repo.find_media(media.id).await.unwrap(),
        Some(ready.clone())
    );

    let err = repo
        .mark_ready(media.id, outcome(&media, 1))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            RepoError::InvalidState {
                expected: "pending",
                actual: "ready",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        repo.find_media(media.id).await.unwrap().unwrap().size_bytes,
        1_234_567
    );

    let deleting = repo.mark_deleting(media.id, Utc::now()).await.unwrap();
    assert_eq!(deleting.status, MediaStatus::Deleting);
    assert_eq!(deleting.sha256.as_deref(), Some(SHA));
    // Idempotent, and the age of the delete is kept so the reconciler still sees it as stale.
    let again = repo.mark_deleting(media.id, Utc::now()).await.unwrap();
    assert_eq!(again, deleting);

    let err = repo
        .mark_ready(media.id, outcome(&media, 1))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            RepoError::InvalidState {
                expected: "pending",
                actual: "deleting",
                ..
            }
        ),
        "{err:?}"
    );

    // A pending record can be abandoned straight away.
    let other = pending(event.id, at(2, 0), &[]);
    repo.insert_media(&other).await.unwrap();
    assert_eq!(
        repo.mark_deleting(other.id, Utc::now())
            .await
            .unwrap()
            .status,
        MediaStatus::Deleting
    );

    let missing = MediaId::new();
    let err = repo
        .mark_ready(missing, outcome(&media, 1))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, RepoError::NotFound { entity: "media", id } if *id == missing.to_string()),
        "{err:?}"
    );
    let err = repo.mark_deleting(missing, Utc::now()).await.unwrap_err();
    assert!(
        matches!(
            err,
            RepoError::NotFound {
                entity: "media",
                ..
            }
        ),
        "{err:?}"
    );
}

/// A form may send its fields after the file: finishing the upload writes them with the
/// outcome, replacing what the pending record held, at the caller's time.
pub async fn mark_ready_writes_fields_sent_after_the_file(repo: &dyn Repo) {
    let event = new_event(repo, at(0, 0)).await;
    let media = pending(event.id, at(1, 0), &["early", "kept?"]);
    repo.insert_media(&media).await.unwrap();

    let finished_at = at(7, 123_456_000);
    let update = ReadyUpdate {
        size_bytes: 99,
        sha256: SHA.to_owned(),
        fields: MediaFields {
            title: Some("Event Photo".to_owned()),
            description: None,
            tags: vec!["photo".to_owned(), "event".to_owned()],
        },
        at: finished_at,
        location_stripped: true,
    };
    let ready = repo.mark_ready(media.id, update).await.unwrap();
    assert_eq!(ready.title.as_deref(), Some("Event Photo"));
    assert!(
        ready.location_stripped,
        "the record says its GPS was blanked"
    );
    assert_eq!(ready.description, None);
    assert_eq!(ready.tags, ["photo", "event"]);
    assert_eq!(
        ready.updated_at, finished_at,
        "stamped with the caller's clock"
    );
    assert_eq!(
        repo.find_media(media.id).await.unwrap(),
        Some(ready.clone())
    );
    let listed = repo
        .list_ready(event.id, &MediaFilter::default(), None, 10)
        .await
        .unwrap();
    assert_eq!(listed, [ready]);
}

/// A pending record with a live lease is never stale, however old; one whose lease lapsed is
/// stale at once, whatever the grace. Renewing moves the lease; finishing clears it.
pub async fn leases_protect_uploads_in_flight_whatever_the_grace(repo: &dyn Repo) {
    let event = new_event(repo, at(0, 0)).await;
    let now = at(10_000, 0);
    let grace_start = at(9_000, 0);

    let mut old_but_leased = pending(event.id, at(1, 0), &[]);
    old_but_leased.lease_until = Some(at(10_060, 0));
    let mut recent_but_lapsed = pending(event.id, at(9_990, 0), &[]);
    recent_but_lapsed.lease_until = Some(at(9_999, 0));
    let old_without_lease = pending(event.id, at(2, 0), &[]);
    for media in [&old_but_leased, &recent_but_lapsed, &old_without_lease] {
        repo.insert_media(media).await.unwrap();
    }
    assert_eq!(
        repo.find_media(old_but_leased.id)
            .await
            .unwrap()
            .unwrap()
            .lease_until,
        old_but_leased.lease_until
    );

    let stale: Vec<MediaId> = repo
        .list_stale(MediaStatus::Pending, grace_start, now, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(stale, [old_without_lease.id, recent_but_lapsed.id]);
    assert_eq!(
        repo.mark_deleting_if_stale(old_but_leased.id, MediaStatus::Pending, grace_start, now)
            .await
            .unwrap(),
        None,
        "a live lease is never rolled back"
    );
    let claimed = repo
        .mark_deleting_if_stale(recent_but_lapsed.id, MediaStatus::Pending, grace_start, now)
        .await
        .unwrap()
        .expect("a lapsed lease is rolled back whatever the grace");
    assert_eq!(claimed.lease_until, None);

    // Renewed past `later`, the leased record stays safe then; once finished, it has no lease.
    let later = at(10_100, 0);
    assert!(
        repo.renew_lease(old_but_leased.id, at(10_200, 0))
            .await
            .unwrap()
    );
    assert!(
        repo.list_stale(MediaStatus::Pending, later, later, 10)
            .await
            .unwrap()
            .iter()
            .all(|m| m.id != old_but_leased.id)
    );
    let ready = repo
        .mark_ready(old_but_leased.id, outcome(&old_but_leased, 5))
        .await
        .unwrap();
    assert_eq!(ready.lease_until, None);
    assert!(
        !repo
            .renew_lease(old_but_leased.id, at(10_300, 0))
            .await
            .unwrap(),
        "only pending records hold a lease"
    );
    assert!(
        !repo
            .renew_lease(MediaId::new(), at(10_300, 0))
            .await
            .unwrap()
    );
}

/// Quotas are checked in the insert's own transaction: concurrent uploads cannot overshoot, a
/// pending record holds its reservation, and finishing corrects it to the real size.
pub async fn quotas_hold_under_concurrent_inserts(repo: &dyn Repo) {
    let event = new_event(repo, at(0, 0)).await;
    let quota = plugs_domain::Quota {
        event_media: Some(3),
        owner_bytes: Some(10_000),
        ..plugs_domain::Quota::default()
    };
    let candidates: Vec<EventMedia> = (0..6).map(|i| pending(event.id, at(i, 0), &[])).collect();
    let results = futures::future::join_all(
        candidates
            .iter()
            .map(|media| repo.insert_pending(media, None, None, 1_000, &quota)),
    )
    .await;
    let landed = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(landed, 3, "exactly the quota's count lands: {results:?}");
    for refused in results.iter().filter_map(|r| r.as_ref().err()) {
        assert!(
            matches!(
                refused,
                RepoError::QuotaExceeded {
                    which: "event media",
                    limit: 3
                }
            ),
            "{refused:?}"
        );
    }
    let (of_event, of_owner) = repo.usage(event.id, &user("alice")).await.unwrap();
    assert_eq!((of_event.bytes, of_event.media), (3_000, 3));
    assert_eq!((of_owner.bytes, of_owner.media), (3_000, 3));

    // Finishing corrects the reservation to the real size.
    let first = candidates
        .iter()
        .zip(&results)
        .find(|(_, r)| r.is_ok())
        .map(|(m, _)| m)
        .unwrap();
    repo.mark_ready(first.id, outcome(first, 10)).await.unwrap();
    let (of_event, _) = repo.usage(event.id, &user("alice")).await.unwrap();
    assert_eq!((of_event.bytes, of_event.media), (2_010, 3));

    // Another event of the same owner: the owner's bytes are the limit now.
    let other = new_event(repo, at(100, 0)).await;
    let big = pending(other.id, at(101, 0), &[]);
    let err = repo
        .insert_pending(&big, None, None, 8_000, &quota)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            RepoError::QuotaExceeded {
                which: "owner bytes",
                limit: 10_000
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        repo.find_media(big.id).await.unwrap(),
        None,
        "nothing stored"
    );
    repo.insert_pending(&big, None, None, 7_000, &quota)
        .await
        .unwrap();
    let (_, of_owner) = repo.usage(other.id, &user("alice")).await.unwrap();
    assert_eq!((of_owner.bytes, of_owner.media), (9_010, 4));
}

pub async fn racing_mark_ready_lets_exactly_one_win(repo: &dyn Repo) {
    let event = new_event(repo, at(0, 0)).await;
    let media = pending(event.id, at(1, 0), &[]);
    repo.insert_media(&media).await.unwrap();

    let results = futures_join(
        repo.mark_ready(media.id, outcome(&media, 10)),
        repo.mark_ready(media.id, outcome(&media, 20)),
    )
    .await;
    let wins: Vec<u64> = results
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .map(|m| m.size_bytes)
        .collect();
    assert_eq!(wins.len(), 1, "{results:?}");
    assert!(results.iter().any(|r| matches!(
        r,
        Err(RepoError::InvalidState {
            actual: "ready",
            ..
        })
    )));
    assert_eq!(
        repo.find_media(media.id).await.unwrap().unwrap().size_bytes,
        wins[0]
    );
}

async fn futures_join<A, B>(a: A, b: B) -> Vec<A::Output>
where
    A: Future,
    B: Future<Output = A::Output>,
{
    let (a, b) = tokio::join!(a, b);
    vec![a, b]
}

pub async fn list_ready_shows_only_ready_media_newest_first(repo: &dyn Repo) {
    let event = new_event(repo, at(0, 0)).await;
    let other_event = new_event(repo, at(0, 0)).await;
    let mut expected = Vec::new();
    // Four share a timestamp; each has its own tags so a mix-up while attaching them shows.
    for (i, time) in [
        at(3, 0),
        at(1, 0),
        at(2, 0),
        at(2, 0),
        at(2, 0),
        at(2, 0),
        at(4, 5_000),
    ]
    .into_iter()
    .enumerate()
    {
        let tag_a = format!("n{i}");
        let tag_b = format!("m{i}");
        let media = pending(event.id, time, &[tag_a.as_str(), "shared", tag_b.as_str()]);
        repo.insert_media(&media).await.unwrap();
        expected.push(
            repo.mark_ready(media.id, outcome(&media, i as u64))
                .await
                .unwrap(),
        );
    }
    // Not listed: pending, deleting, another event's.
    repo.insert_media(&pending(event.id, at(9, 0), &[]))
        .await
        .unwrap();
    let gone = ready_media(repo, event.id, at(9, 0)).await;
    repo.mark_deleting(gone.id, Utc::now()).await.unwrap();
    ready_media(repo, other_event.id, at(9, 0)).await;

    expected.sort_by_key(|m| std::cmp::Reverse((m.created_at, m.id)));
    let everything = MediaFilter::default();
    for page_size in [1, 2, 3, 4, 100] {
        let served = all_pages(
            page_size,
            |m: &EventMedia| PageCursor {
                created_at: m.created_at,
                id: m.id.as_uuid(),
            },
            |after| repo.list_ready(event.id, &everything, after, page_size),
        )
        .await;
        assert_eq!(served, expected, "page size {page_size}");
    }
    assert!(
        repo.list_ready(EventId::new(), &MediaFilter::default(), None, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn list_all_for_event_covers_every_state(repo: &dyn Repo) {
    let event = new_event(repo, at(0, 0)).await;
    let other = new_event(repo, at(0, 0)).await;
    let p = pending(event.id, at(1, 0), &["p"]);
    repo.insert_media(&p).await.unwrap();
    let r = ready_media(repo, event.id, at(2, 0)).await;
    let d = ready_media(repo, event.id, at(3, 0)).await;
    let d = repo.mark_deleting(d.id, Utc::now()).await.unwrap();
    ready_media(repo, other.id, at(4, 0)).await;

    let mut all = repo.list_all_for_event(event.id).await.unwrap();
    all.sort_by_key(|m| m.created_at);
    assert_eq!(all, vec![p, r, d]);
}

/// Every event's ready media, page by page in id order: nothing skipped or repeated, other
/// states left out (what `plugs-api scrub` walks).
pub async fn list_ready_by_id_walks_every_event_in_pages(repo: &dyn Repo) {
    let first = new_event(repo, at(0, 0)).await;
    let second = new_event(repo, at(0, 0)).await;
    let mut expected = Vec::new();
    for minute in 1..=7 {
        let event = if minute % 2 == 0 { &first } else { &second };
        expected.push(ready_media(repo, event.id, at(minute, 0)).await.id);
    }
    repo.insert_media(&pending(first.id, at(8, 0), &[]))
        .await
        .unwrap();
    let gone = ready_media(repo, second.id, at(9, 0)).await;
    repo.mark_deleting(gone.id, Utc::now()).await.unwrap();
    expected.sort_by_key(|id| id.as_uuid());

    let mut walked = Vec::new();
    let mut after = None;
    loop {
        let page = repo.list_ready_by_id(after, 3).await.unwrap();
        assert!(page.len() <= 3);
        assert!(page.iter().all(|m| m.status == MediaStatus::Ready));
        walked.extend(page.iter().map(|m| m.id));
        match page.last() {
            Some(last) if page.len() == 3 => after = Some(last.id),
            _ => break,
        }
    }
    assert_eq!(walked, expected);
}

pub async fn list_stale_by_status_and_age(repo: &dyn Repo) {
    let event = new_event(repo, at(0, 0)).await;
    let now = Utc::now();
    let hour_ago = now - Duration::hours(1);
    let mut old_pending = Vec::new();
    for minutes in [90, 300, 120] {
        let mut media = pending(event.id, now - Duration::minutes(minutes), &["s"]);
        media.updated_at = media.created_at;
        repo.insert_media(&media).await.unwrap();
        old_pending.push(media);
    }
    let fresh = pending(event.id, now - Duration::minutes(5), &[]);
    repo.insert_media(&fresh).await.unwrap();
    let mut old_ready = pending(event.id, now - Duration::minutes(500), &[]);
    old_ready.status = MediaStatus::Ready;
    old_ready.size_bytes = 3;
    old_ready.sha256 = Some(SHA.to_owned());
    repo.insert_media(&old_ready).await.unwrap();

    let stale = repo
        .list_stale(MediaStatus::Pending, hour_ago, Utc::now(), 10)
        .await
        .unwrap();
    let ids: Vec<MediaId> = stale.iter().map(|m| m.id).collect();
    // Oldest first.
    assert_eq!(
        ids,
        vec![old_pending[1].id, old_pending[2].id, old_pending[0].id]
    );
    assert_eq!(stale[0].tags, vec!["s".to_owned()]);

    let first = repo
        .list_stale(MediaStatus::Pending, hour_ago, Utc::now(), 1)
        .await
        .unwrap();
    assert_eq!(
        first.iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![old_pending[1].id]
    );

    let ready: Vec<MediaId> = repo
        .list_stale(MediaStatus::Ready, hour_ago, Utc::now(), 10)
        .await
        .unwrap()
        .iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(ready, vec![old_ready.id]);
    assert!(
        repo.list_stale(MediaStatus::Deleting, now, Utc::now(), 10)
            .await
            .unwrap()
            .is_empty()
    );

    // A transition refreshes the age: a record just marked deleting is not stale yet.
    repo.mark_deleting(old_ready.id, Utc::now()).await.unwrap();
    assert!(
        repo.list_stale(MediaStatus::Deleting, hour_ago, Utc::now(), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        repo.list_stale(
            MediaStatus::Deleting,
            Utc::now() + Duration::seconds(1),
            Utc::now(),
            10
        )
        .await
        .unwrap()
        .len(),
        1
    );
}

pub async fn find_by_key_in_any_state(repo: &dyn Repo) {
    let event = new_event(repo, at(0, 0)).await;
    let media = pending(event.id, at(1, 0), &["k"]);
    repo.insert_media(&media).await.unwrap();
    assert_eq!(
        repo.find_by_key(&media.s3_key).await.unwrap().unwrap().id,
        media.id
    );
    repo.mark_deleting(media.id, Utc::now()).await.unwrap();
    let found = repo.find_by_key(&media.s3_key).await.unwrap().unwrap();
    assert_eq!((found.id, found.status), (media.id, MediaStatus::Deleting));
    assert_eq!(
        repo.find_by_key("events/nobody/claims/this.jpg")
            .await
            .unwrap(),
        None
    );
}

pub async fn delete_media_is_idempotent_and_takes_its_tags(repo: &dyn Repo) {
    let event = new_event(repo, at(0, 0)).await;
    let media = pending(event.id, at(1, 0), &["one", "two"]);
    repo.insert_media(&media).await.unwrap();

    repo.delete_media(media.id).await.unwrap();
    assert_eq!(repo.find_media(media.id).await.unwrap(), None);
    repo.delete_media(media.id).await.unwrap();
    repo.delete_media(MediaId::new()).await.unwrap();

    // The same id and key can be used again, and no tag of the deleted row comes back with it.
    let again = EventMedia {
        tags: vec!["two".to_owned()],
        ..media.clone()
    };
    repo.insert_media(&again).await.unwrap();
    assert_eq!(
        repo.find_media(media.id).await.unwrap().unwrap().tags,
        vec!["two".to_owned()]
    );
}

pub async fn ping_answers(repo: &dyn Repo) {
    repo.ping().await.unwrap();
}

pub async fn concurrent_inserts_all_land(repo: &dyn Repo) {
    let event = new_event(repo, at(0, 0)).await;
    let media: Vec<EventMedia> = (0..16)
        .map(|i| pending(event.id, at(i, 0), &["c"]))
        .collect();
    let media = Arc::new(media);
    let inserts = media.iter().map(|m| repo.insert_media(m));
    for result in futures::future::join_all(inserts).await {
        result.unwrap();
    }
    assert_eq!(repo.list_all_for_event(event.id).await.unwrap().len(), 16);
}

pub async fn mark_deleting_if_stale_moves_only_records_still_stale_and_expected(repo: &dyn Repo) {
    let event = new_event(repo, at(0, 0)).await;
    let now = Utc::now();
    let hour_ago = now - Duration::hours(1);
    let mut old = pending(event.id, now - Duration::minutes(90), &[]);
    old.updated_at = old.created_at;
    repo.insert_media(&old).await.unwrap();
    let fresh = pending(event.id, now - Duration::minutes(5), &[]);
    repo.insert_media(&fresh).await.unwrap();

    // Too young: nothing changes.
    assert_eq!(
        repo.mark_deleting_if_stale(fresh.id, MediaStatus::Pending, hour_ago, Utc::now())
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        repo.find_media(fresh.id).await.unwrap().unwrap().status,
        MediaStatus::Pending
    );

    // The upload finished since it was listed: not in the expected state any more.
    let mut finished = pending(event.id, now - Duration::minutes(120), &[]);
    finished.updated_at = finished.created_at;
    repo.insert_media(&finished).await.unwrap();
    repo.mark_ready(finished.id, outcome(&finished, 42))
        .await
        .unwrap();
    assert_eq!(
        repo.mark_deleting_if_stale(finished.id, MediaStatus::Pending, hour_ago, Utc::now())
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        repo.find_media(finished.id).await.unwrap().unwrap().status,
        MediaStatus::Ready
    );

    // Stale and still pending: claimed, once.
    let claimed = repo
        .mark_deleting_if_stale(old.id, MediaStatus::Pending, hour_ago, Utc::now())
        .await
        .unwrap()
        .expect("a stale pending record is claimed");
    assert_eq!(claimed.id, old.id);
    assert_eq!(claimed.status, MediaStatus::Deleting);
    assert_eq!(
        repo.mark_deleting_if_stale(old.id, MediaStatus::Pending, hour_ago, Utc::now())
            .await
            .unwrap(),
        None
    );

    // A missing record is not an error: there is nothing to claim.
    assert_eq!(
        repo.mark_deleting_if_stale(MediaId::new(), MediaStatus::Pending, hour_ago, Utc::now())
            .await
            .unwrap(),
        None
    );
}

/// Edits of an event's title are guarded by the version the editor read: a stale one changes
/// nothing, and every write gives a new version.
pub async fn update_event_title_applies_only_to_the_version_read(repo: &dyn Repo) {
    let event = new_event(repo, at(0, 123_456_789)).await;
    let stored = repo.find_event(event.id).await.unwrap().unwrap();
    assert_eq!(
        stored.updated_at,
        at(0, 123_456_000),
        "truncated like created_at"
    );

    assert_eq!(
        repo.update_event_title(event.id, "stale", at(0, 0), at(9, 0))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        repo.find_event(event.id).await.unwrap(),
        Some(stored.clone())
    );

    let edited = repo
        .update_event_title(event.id, "Renamed", stored.updated_at, at(5, 7_000_999))
        .await
        .unwrap()
        .expect("the version read is current");
    assert_eq!(
        edited,
        Event {
            title: "Renamed".to_owned(),
            updated_at: at(5, 7_000_000),
            ..stored.clone()
        }
    );
    assert_eq!(
        repo.find_event(event.id).await.unwrap(),
        Some(edited.clone())
    );
    assert_eq!(
        repo.list_events(&user("alice"), None, 10).await.unwrap(),
        std::slice::from_ref(&edited)
    );

    // The version read before that edit is stale now.
    assert_eq!(
        repo.update_event_title(event.id, "Lost update", stored.updated_at, at(6, 0))
            .await
            .unwrap(),
        None
    );
    assert_eq!(repo.find_event(event.id).await.unwrap(), Some(edited));
    assert_eq!(
        repo.update_event_title(EventId::new(), "x", at(0, 0), at(1, 0))
            .await
            .unwrap(),
        None
    );
}

fn fields(title: Option<&str>, description: Option<&str>, tags: &[&str]) -> MediaFields {
    MediaFields {
        title: title.map(str::to_owned),
        description: description.map(str::to_owned),
        tags: tags.iter().map(|t| (*t).to_owned()).collect(),
    }
}

/// Edits of a media's fields are guarded by the version the editor read and apply to `ready`
/// records only; a refused edit changes nothing, tags included.
pub async fn update_fields_applies_only_to_a_ready_record_at_the_version_read(repo: &dyn Repo) {
    let event = new_event(repo, at(0, 0)).await;
    let media = pending(event.id, at(1, 0), &["a", "b"]);
    repo.insert_media(&media).await.unwrap();
    let ready = repo
        .mark_ready(
            media.id,
            ReadyUpdate {
                at: at(2, 500),
                ..outcome(&media, 42)
            },
        )
        .await
        .unwrap();

    let stale = FieldsUpdate {
        fields: fields(Some("stale"), None, &["z"]),
        expected: at(1, 0),
        at: at(9, 0),
    };
    assert_eq!(repo.update_fields(media.id, stale).await.unwrap(), None);
    assert_eq!(
        repo.find_media(media.id).await.unwrap(),
        Some(ready.clone())
    );

    let edit = FieldsUpdate {
        fields: fields(None, Some("Line one\nline two"), &["c", "a"]),
        expected: ready.updated_at,
        at: at(3, 999_999_999),
    };
    let edited = repo
        .update_fields(media.id, edit.clone())
        .await
        .unwrap()
        .expect("the version read is current");
    assert_eq!(
        edited,
        EventMedia {
            title: None,
            description: Some("Line one\nline two".to_owned()),
            tags: vec!["c".to_owned(), "a".to_owned()],
            updated_at: at(3, 999_999_000),
            ..ready.clone()
        }
    );
    assert_eq!(
        repo.find_media(media.id).await.unwrap(),
        Some(edited.clone())
    );
    assert_eq!(
        repo.list_ready(event.id, &MediaFilter::default(), None, 10)
            .await
            .unwrap(),
        std::slice::from_ref(&edited)
    );
    // Replaying the same edit: its version is stale now.
    assert_eq!(repo.update_fields(media.id, edit).await.unwrap(), None);

    // Duplicate tags are refused and the whole edit with them (the title too).
    let err = repo
        .update_fields(
            media.id,
            FieldsUpdate {
                fields: fields(Some("kept?"), None, &["d", "d"]),
                expected: edited.updated_at,
                at: at(4, 0),
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, RepoError::Duplicate { what: "tag" }),
        "{err:?}"
    );
    assert_eq!(
        repo.find_media(media.id).await.unwrap(),
        Some(edited.clone())
    );

    // Only ready records: a pending upload and a delete in progress are not edited.
    let upload = pending(event.id, at(5, 0), &["p"]);
    repo.insert_media(&upload).await.unwrap();
    let deleting = ready_media(repo, event.id, at(6, 0)).await;
    let deleting = repo.mark_deleting(deleting.id, at(7, 0)).await.unwrap();
    for record in [&upload, &deleting] {
        let stored = repo.find_media(record.id).await.unwrap().unwrap();
        let update = FieldsUpdate {
            fields: fields(Some("no"), None, &[]),
            expected: stored.updated_at,
            at: at(8, 0),
        };
        assert_eq!(repo.update_fields(record.id, update).await.unwrap(), None);
        assert_eq!(repo.find_media(record.id).await.unwrap(), Some(stored));
    }
    let update = FieldsUpdate {
        fields: MediaFields::default(),
        expected: at(0, 0),
        at: at(1, 0),
    };
    assert_eq!(
        repo.update_fields(MediaId::new(), update).await.unwrap(),
        None
    );
}

/// Two editors who read the same version: exactly one edit lands, whole.
pub async fn racing_field_updates_from_one_version_let_exactly_one_win(repo: &dyn Repo) {
    let event = new_event(repo, at(0, 0)).await;
    let ready = ready_media(repo, event.id, at(1, 0)).await;
    let update = |title: &str, tag: &str| FieldsUpdate {
        fields: fields(Some(title), None, &[tag, "both"]),
        expected: ready.updated_at,
        at: ready.updated_at + Duration::seconds(1),
    };
    let results = futures_join(
        repo.update_fields(ready.id, update("first", "one")),
        repo.update_fields(ready.id, update("second", "two")),
    )
    .await;
    let wins: Vec<EventMedia> = results.into_iter().filter_map(Result::unwrap).collect();
    assert_eq!(wins.len(), 1, "{wins:?}");
    assert_eq!(
        repo.find_media(ready.id).await.unwrap().as_ref(),
        Some(&wins[0])
    );
}

fn typed(mut media: EventMedia, content_type: &str) -> EventMedia {
    content_type.clone_into(&mut media.content_type);
    media
}

/// The filtered listings keep the unfiltered one's order and paging: every page size walks the
/// same items, and only those with the tag, of the kind, or both.
pub async fn list_ready_filters_by_tag_and_kind_on_every_page(repo: &dyn Repo) {
    let event = new_event(repo, at(0, 0)).await;
    let other_event = new_event(repo, at(0, 0)).await;
    let items: [(&str, &[&str], DateTime<Utc>); 9] = [
        ("image/jpeg", &["party", "night"], at(5, 0)),
        ("video/mp4", &["party"], at(4, 0)),
        ("image/png", &["beach"], at(4, 0)),
        ("application/pdf", &["party", "menu"], at(3, 0)),
        ("image/webp", &["party"], at(3, 0)),
        ("image/jpeg", &[], at(3, 0)),
        ("audio/mpeg", &["night"], at(2, 0)),
        ("image/heic", &["party", "beach"], at(1, 0)),
        ("video/webm", &["party"], at(1, 0)),
    ];
    let mut all = Vec::new();
    for (content_type, tags, time) in items {
        let media = typed(pending(event.id, time, tags), content_type);
        repo.insert_media(&media).await.unwrap();
        all.push(repo.mark_ready(media.id, outcome(&media, 1)).await.unwrap());
    }
    // Never listed, though tagged `party` and photos: pending, deleting, another event's.
    repo.insert_media(&pending(event.id, at(9, 0), &["party"]))
        .await
        .unwrap();
    let gone = pending(event.id, at(9, 0), &["party"]);
    repo.insert_media(&gone).await.unwrap();
    repo.mark_ready(gone.id, outcome(&gone, 1)).await.unwrap();
    repo.mark_deleting(gone.id, at(10, 0)).await.unwrap();
    let elsewhere = pending(other_event.id, at(9, 0), &["party"]);
    repo.insert_media(&elsewhere).await.unwrap();
    repo.mark_ready(elsewhere.id, outcome(&elsewhere, 1))
        .await
        .unwrap();

    all.sort_by_key(|m| std::cmp::Reverse((m.created_at, m.id)));
    let kind_of = |m: &EventMedia| {
        plugs_domain::AllowedType::from_mime(&m.content_type).map(plugs_domain::AllowedType::kind)
    };
    let filters = [
        (Some("party"), None),
        (Some("night"), None),
        (None, Some(MediaKind::Image)),
        (None, Some(MediaKind::Video)),
        (None, Some(MediaKind::Audio)),
        (None, Some(MediaKind::Document)),
        (Some("party"), Some(MediaKind::Image)),
        (Some("beach"), Some(MediaKind::Video)),
        (Some("nobody"), None),
        // Compared exactly: normalising what a client typed is the caller's job.
        (Some("Party"), None),
    ];
    for (tag, kind) in filters {
        let filter = MediaFilter {
            tag: tag.map(str::to_owned),
            kind,
        };
        let expected: Vec<EventMedia> = all
            .iter()
            .filter(|m| tag.is_none_or(|tag| m.tags.iter().any(|t| t == tag)))
            .filter(|m| kind.is_none_or(|kind| kind_of(m) == Some(kind)))
            .cloned()
            .collect();
        for page_size in [1, 2, 3, 100] {
            let served = all_pages(
                page_size,
                |m: &EventMedia| PageCursor {
                    created_at: m.created_at,
                    id: m.id.as_uuid(),
                },
                |after| repo.list_ready(event.id, &filter, after, page_size),
            )
            .await;
            assert_eq!(served, expected, "{filter:?}, page size {page_size}");
        }
    }
    let party = MediaFilter {
        tag: Some("party".to_owned()),
        kind: None,
    };
    assert_eq!(
        repo.list_ready(event.id, &party, None, 100)
            .await
            .unwrap()
            .len(),
        6
    );

    // The tag filter follows an edit of the tags.
    let photo = all.iter().find(|m| m.content_type == "image/webp").unwrap();
    repo.update_fields(
        photo.id,
        FieldsUpdate {
            fields: fields(None, None, &["beach"]),
            expected: photo.updated_at,
            at: photo.updated_at + Duration::seconds(1),
        },
    )
    .await
    .unwrap()
    .unwrap();
    let listed = repo.list_ready(event.id, &party, None, 100).await.unwrap();
    assert_eq!(listed.len(), 5);
    assert!(listed.iter().all(|m| m.id != photo.id));
}
