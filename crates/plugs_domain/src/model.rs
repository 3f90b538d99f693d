//! The records this service keeps: events and the media attached to them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{EventId, MediaId, UserId};

/// An event that media is attached to. Owned by the user who created it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Identifier.
    pub id: EventId,
    /// Display title, 1 to 200 characters.
    pub title: String,
    /// The user who created the event; the only one who may see or change it and its media.
    pub owner: UserId,
    /// When the event was created (UTC, microsecond precision).
    pub created_at: DateTime<Utc>,
    /// When the event last changed (its creation, or the last edit of its title); a client's
    /// `If-Match` names the version it saw by this instant, so every edit moves it forward.
    pub updated_at: DateTime<Utc>,
}

/// Where a media record is in its life. Records move `Pending -> Ready -> Deleting -> (gone)`;
/// only `Ready` records are shown to users. The other two states exist so that a crash between
/// the database and the object store can always be finished or rolled back by the reconciler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaStatus {
    /// The record exists; the bytes may or may not have reached the store yet.
    Pending,
    /// The object is stored and its size and checksum are recorded.
    Ready,
    /// A delete has started; the object may or may not still exist.
    Deleting,
}

impl MediaStatus {
    /// The lower-case name stored in the database.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Ready => "ready",
            Self::Deleting => "deleting",
        }
    }

    /// Parses the stored name.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "pending" => Some(Self::Pending),
            "ready" => Some(Self::Ready),
            "deleting" => Some(Self::Deleting),
            _ => None,
        }
    }
}

/// Metadata of one file attached to an event. The bytes live in the object store under `s3_key`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventMedia {
    /// Identifier.
    pub id: MediaId,
    /// The event this media belongs to.
    pub event_id: EventId,
    /// Optional display title (at most 200 characters).
    pub title: Option<String>,
    /// Optional description (at most 2000 characters).
    pub description: Option<String>,
    /// Normalised tags: trimmed, lower-case, unique, in the order first given.
    pub tags: Vec<String>,
    /// The client's file name, sanitised; display metadata only, never part of a key.
    pub original_filename: Option<String>,
    /// The content type sniffed from the bytes (not the one the client declared).
    pub content_type: String,
    /// Size in bytes; 0 while `Pending`.
    pub size_bytes: u64,
    /// Lower-case hex SHA-256 of the bytes; `None` while `Pending`.
    pub sha256: Option<String>,
    /// The object key in the store (see [`crate::keys`]).
    pub s3_key: String,
    /// Life-cycle state.
    pub status: MediaStatus,
    /// The user who uploaded it.
    pub uploaded_by: UserId,
    /// When the record was created (UTC, microsecond precision).
    pub created_at: DateTime<Utc>,
    /// When the record last changed: a state transition or an edit of its fields. A client's
    /// `If-Match` names the version it saw by this instant, so every edit moves it forward.
    pub updated_at: DateTime<Utc>,
    /// While `Pending`: until when the upload in flight holds the record. The reconciler rolls
    /// a pending record back only once its lease has lapsed, however old it is; a form upload
    /// renews the lease while bytes arrive. `None` once the upload is over.
    pub lease_until: Option<DateTime<Utc>>,
    /// Whether the stored bytes differ from those the client sent because the GPS position in
    /// their EXIF was blanked (location stripping). `sha256` and `size_bytes` describe the bytes
    /// stored; the size is the same either way.
    #[serde(default)]
    pub location_stripped: bool,
}

/// How the bytes of a direct upload reach the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DirectUploadKind {
    /// One presigned PUT.
    Put,
    /// A multipart upload with one presigned URL per part.
    Multipart,
}

impl DirectUploadKind {
    /// The name stored in the database.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Put => "put",
            Self::Multipart => "multipart",
        }
    }

    /// The kind a stored name stands for.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "put" => Some(Self::Put),
            "multipart" => Some(Self::Multipart),
            _ => None,
        }
    }
}

/// A direct upload in flight: what its client declared and where its bytes are staged, beside
/// its `Pending` media record (same id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadSession {
    /// The pending media record's id, which is also the upload's id.
    pub media_id: MediaId,
    /// One PUT or a multipart upload.
    pub kind: DirectUploadKind,
    /// Where the client's bytes go: `uploads/{event_id}/{upload_id}`, never the final key.
    pub staging_key: String,
    /// The store's multipart upload id, for [`DirectUploadKind::Multipart`].
    pub multipart_id: Option<String>,
    /// The length the client declared (and the presigned URLs bind).
    pub declared_size: u64,
    /// The hex SHA-256 the client declared, if any.
    pub declared_sha256: Option<String>,
    /// Every part's size but the last one's, for [`DirectUploadKind::Multipart`].
    pub part_size: Option<u64>,
    /// When the presigned URLs stop working and the upload may be swept.
    pub expires_at: DateTime<Utc>,
}

/// Limits on the bytes and media an event, and all of an owner's events, may hold. `None`: no
/// limit. Enforced atomically with the insertion of every upload's pending record, which
/// reserves its declared size (or the largest file allowed) until it finishes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Quota {
    /// Bytes one event may hold.
    pub event_bytes: Option<u64>,
    /// Media one event may hold.
    pub event_media: Option<u64>,
    /// Bytes all of one owner's events may hold.
    pub owner_bytes: Option<u64>,
    /// Media all of one owner's events may hold.
    pub owner_media: Option<u64>,
}

impl Quota {
    /// The first limit that these usages cross, by name (`event bytes`, `event media`,
    /// `owner bytes`, `owner media`) and value; `None` when all hold.
    pub fn crossed(&self, event: Usage, owner: Usage) -> Option<(&'static str, u64)> {
        [
            ("event bytes", self.event_bytes, event.bytes),
            ("event media", self.event_media, event.media),
            ("owner bytes", self.owner_bytes, owner.bytes),
            ("owner media", self.owner_media, owner.media),
        ]
        .into_iter()
        .find_map(|(which, limit, used)| limit.filter(|&limit| used > limit).map(|l| (which, l)))
    }

    /// Whether any limit is set.
    pub fn is_set(&self) -> bool {
        self.event_bytes.is_some()
            || self.event_media.is_some()
            || self.owner_bytes.is_some()
            || self.owner_media.is_some()
    }
}

/// What an event or an owner holds: bytes (reserved by uploads in flight, real for the rest)
/// and media records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Bytes held or reserved.
    pub bytes: u64,
    /// Media records (uploads in flight included).
    pub media: u64,
}

/// Where a media's derived versions (thumbnails, display copy) stand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessingState {
    /// Its type has no derived versions (documents, audio, and types no worker reads).
    None,
    /// A job is queued or running.
    Pending,
    /// Every variant asked for is stored.
    Ready,
    /// Its job failed too often (or on a file that can never be read) and was parked.
    Failed,
}

impl ProcessingState {
    /// The lower-case name stored in the database and answered by the API.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Pending => "pending",
            Self::Ready => "ready",
            Self::Failed => "failed",
        }
    }

    /// Parses the stored name.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "none" => Some(Self::None),
            "pending" => Some(Self::Pending),
            "ready" => Some(Self::Ready),
            "failed" => Some(Self::Failed),
            _ => None,
        }
    }

    /// Whether a media of this (sniffed) content type gets derived versions in every
    /// deployment: the still-image formats the workers decode in Rust (JPEG, PNG, GIF's first
    /// frame, WebP). A deployment with the external decoders adds more
    /// ([`ProcessableTypes`]).
    pub fn is_processable(content_type: &str) -> bool {
        crate::AllowedType::from_mime(content_type)
            .is_some_and(|allowed| Self::PROCESSABLE.contains(&allowed))
    }

    /// The types [`ProcessingState::is_processable`] accepts.
    pub const PROCESSABLE: [crate::AllowedType; 4] = [
        crate::AllowedType::Jpeg,
        crate::AllowedType::Png,
        crate::AllowedType::Gif,
        crate::AllowedType::Webp,
    ];
}

/// The types whose media get derived versions in one deployment: the repository enqueues a
/// job for these when their upload finishes, and `plugs-api reprocess` walks them. Always the
/// still images the workers decode in Rust ([`ProcessingState::PROCESSABLE`]); HEIC, AVIF and
/// videos only where their external decoder (`heif-convert`, `ffmpeg`) was found, so that a
/// deployment without it leaves them at processing `none` rather than failing their jobs.
///
/// ```
/// use plugs_domain::{AllowedType, ProcessableTypes};
/// let builtin = ProcessableTypes::default();
/// assert!(builtin.contains("image/png"));
/// assert!(!builtin.contains("image/heic"));
/// let more = builtin.with([AllowedType::Heic, AllowedType::Mp4]);
/// assert!(more.contains("image/heif"), "aliases count");
/// assert!(more.contains("video/mp4"));
/// assert!(!more.contains("application/pdf"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessableTypes {
    types: Vec<crate::AllowedType>,
}

impl Default for ProcessableTypes {
    /// The built-in still images only.
    fn default() -> Self {
        Self {
            types: ProcessingState::PROCESSABLE.to_vec(),
        }
    }
}

impl ProcessableTypes {
    /// These types as well (each once).
    #[must_use]
    pub fn with(mut self, types: impl IntoIterator<Item = crate::AllowedType>) -> Self {
        for allowed in types {
            if !self.types.contains(&allowed) {
                self.types.push(allowed);
            }
        }
        self
    }

    /// Whether media of this content type (canonical name or alias) get derived versions.
    pub fn contains(&self, content_type: &str) -> bool {
        crate::AllowedType::from_mime(content_type).is_some_and(|t| self.types.contains(&t))
    }

    /// The types, in the order added.
    pub fn types(&self) -> &[crate::AllowedType] {
        &self.types
    }

    /// Their canonical MIME names (what records store).
    pub fn mimes(&self) -> Vec<&'static str> {
        self.types.iter().map(|t| t.mime()).collect()
    }
}

/// One stored derived version of a media (a thumbnail or the display copy).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DerivedVersion {
    /// The media it was made from.
    pub media_id: MediaId,
    /// The variant's name (`thumb-256`, `display`, ...).
    pub variant: String,
    /// Where it is stored: a key derived from the original's, so a retry overwrites it.
    pub s3_key: String,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Size of the encoded bytes.
    pub size_bytes: u64,
    /// `image/jpeg` or `image/webp`.
    pub content_type: String,
}

/// What processing knows of one media: the original's upright dimensions, once read, its state,
/// and its stored derived versions (by variant name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaProcessing {
    /// The media.
    pub media_id: MediaId,
    /// Where its derived versions stand.
    pub state: ProcessingState,
    /// The original's width after orientation; `None` until a worker read it.
    pub width: Option<u32>,
    /// The original's height after orientation; `None` until a worker read it.
    pub height: Option<u32>,
    /// Its stored derived versions, ordered by variant name.
    pub variants: Vec<DerivedVersion>,
}
