//! The shared repository suite, run against the in-memory fake, SQLite (a temp file) and
//! PostgreSQL (a fresh database per test; skipped visibly when no server is reachable).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod common;

macro_rules! all_backends {
    ($($case:ident),* $(,)?) => {
        repository_suite!(memory, crate::common::memory, [$($case),*]);
        repository_suite!(sqlite, crate::common::sqlite, [$($case),*]);
        repository_suite!(postgres, crate::common::postgres, [$($case),*]);
    };
}

all_backends!(
    event_round_trip_and_duplicate_id,
    events_list_by_owner_newest_first_without_repeats_or_skips,
    delete_event_refuses_while_media_remain,
    media_round_trip_keeps_tags_in_order,
    media_duplicates_are_told_apart,
    media_for_a_missing_event_is_refused,
    insert_pending_checks_the_events_owner,
    mark_ready_sets_the_final_tags_whatever_the_pending_record_held,
    state_machine_pending_ready_deleting,
    mark_ready_writes_fields_sent_after_the_file,
    leases_protect_uploads_in_flight_whatever_the_grace,
    quotas_hold_under_concurrent_inserts,
    racing_mark_ready_lets_exactly_one_win,
    list_ready_shows_only_ready_media_newest_first,
    list_all_for_event_covers_every_state,
    list_stale_by_status_and_age,
    list_ready_by_id_walks_every_event_in_pages,
    find_by_key_in_any_state,
    delete_media_is_idempotent_and_takes_its_tags,
    ping_answers,
    concurrent_inserts_all_land,
    mark_deleting_if_stale_moves_only_records_still_stale_and_expected,
    update_event_title_applies_only_to_the_version_read,
    update_fields_applies_only_to_a_ready_record_at_the_version_read,
    racing_field_updates_from_one_version_let_exactly_one_win,
    list_ready_filters_by_tag_and_kind_on_every_page,
);
