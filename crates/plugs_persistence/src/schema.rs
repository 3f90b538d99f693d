//! The tables, as both migration folders create them.

diesel::table! {
    use diesel::sql_types::*;
    use crate::connection::DbUuid;

    /// Events: minimal records owned by one user.
    events (id) {
        id -> DbUuid,
        owner -> Text,
        title -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::connection::DbUuid;

    /// Media metadata; the bytes live in the object store under `s3_key`.
    event_media (id) {
        id -> DbUuid,
        event_id -> DbUuid,
        title -> Nullable<Text>,
        description -> Nullable<Text>,
        original_filename -> Nullable<Text>,
        content_type -> Text,
        size_bytes -> BigInt,
        sha256 -> Nullable<Text>,
        s3_key -> Text,
        status -> Text,
        uploaded_by -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        kind -> Nullable<Text>,
        lease_until -> Nullable<Timestamp>,
        reserved_bytes -> BigInt,
        location_stripped -> Bool,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::connection::DbUuid;

    /// A media's tags, in the order given (`position`).
    event_media_tags (media_id, tag) {
        media_id -> DbUuid,
        tag -> Text,
        position -> Integer,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::connection::DbUuid;

    /// What a direct upload's client declared and where its bytes are staged.
    upload_sessions (media_id) {
        media_id -> DbUuid,
        kind -> Text,
        staging_key -> Text,
        multipart_id -> Nullable<Text>,
        declared_size -> BigInt,
        declared_sha256 -> Nullable<Text>,
        part_size -> Nullable<BigInt>,
        expires_at -> Timestamp,
    }
}

diesel::joinable!(event_media -> events (event_id));
diesel::joinable!(upload_sessions -> event_media (media_id));
diesel::joinable!(event_media_tags -> event_media (media_id));
diesel::allow_tables_to_appear_in_same_query!(
    events,
    event_media,
    event_media_tags,
    upload_sessions
);
