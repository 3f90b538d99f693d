//! The media types this service accepts, their canonical names and their aliases.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The broad family of a media type, as users think of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaKind {
    /// Photos and pictures.
    Image,
    /// Moving pictures, with or without sound.
    Video,
    /// Sound only.
    Audio,
    /// Paged documents (PDF).
    Document,
}

impl MediaKind {
    /// Every kind, in a stable order.
    pub const ALL: [Self; 4] = [Self::Image, Self::Video, Self::Audio, Self::Document];

    /// The lower-case name used in configuration (`image`, `video`, `audio`, `document`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Image => "image",
            Self::Video => "video",
            Self::Audio => "audio",
            Self::Document => "document",
        }
    }

    /// Parses a kind name; case-insensitive, surrounding whitespace ignored.
    pub fn parse(name: &str) -> Option<Self> {
        let name = name.trim();
        Self::ALL
            .into_iter()
            .find(|kind| kind.as_str().eq_ignore_ascii_case(name))
    }
}

impl fmt::Display for MediaKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One media type this service can accept. A [`MediaPolicy`](crate::MediaPolicy) holds a set of
/// them.
///
/// Each type has one canonical MIME name (what is stored and served) and a few aliases that
/// clients and tools send for the same format; aliases compare equal to the canonical name.
/// HEIF and HEIC are one type here: the sniffer recognises only HEVC-coded HEIF, which is what
/// phones produce and what `image/heic` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum AllowedType {
    /// `image/jpeg`
    Jpeg,
    /// `image/png`
    Png,
    /// `image/gif`
    Gif,
    /// `image/webp`
    Webp,
    /// `image/heic` (alias `image/heif`)
    Heic,
    /// `image/avif`
    Avif,
    /// `video/mp4` (alias `video/x-m4v`)
    Mp4,
    /// `video/quicktime`
    QuickTime,
    /// `video/webm`
    Webm,
    /// `audio/mpeg` (MP3)
    Mp3,
    /// `audio/wav` (alias `audio/x-wav`)
    Wav,
    /// `audio/ogg` (Vorbis or Opus in Ogg)
    Ogg,
    /// `audio/aac` (ADTS)
    Aac,
    /// `audio/mp4` (M4A; aliases `audio/x-m4a`, `audio/m4a`)
    M4a,
    /// `application/pdf`
    Pdf,
}

struct TypeInfo {
    mime: &'static str,
    extension: &'static str,
    kind: MediaKind,
    aliases: &'static [&'static str],
}

impl AllowedType {
    /// Every type, in a stable order.
    pub const ALL: [Self; 15] = [
        Self::Jpeg,
        Self::Png,
        Self::Gif,
        Self::Webp,
        Self::Heic,
        Self::Avif,
        Self::Mp4,
        Self::QuickTime,
        Self::Webm,
        Self::Mp3,
        Self::Wav,
        Self::Ogg,
        Self::Aac,
        Self::M4a,
        Self::Pdf,
    ];

    const fn info(self) -> TypeInfo {
        use MediaKind::{Audio, Document, Image, Video};
        let (mime, extension, kind, aliases): (_, _, _, &'static [&'static str]) = match self {
            Self::Jpeg => ("image/jpeg", "jpg", Image, &["image/jpg", "image/pjpeg"]),
            Self::Png => ("image/png", "png", Image, &["image/x-png"]),
            Self::Gif => ("image/gif", "gif", Image, &[]),
            Self::Webp => ("image/webp", "webp", Image, &[]),
            Self::Heic => ("image/heic", "heic", Image, &["image/heif"]),
            Self::Avif => ("image/avif", "avif", Image, &[]),
            Self::Mp4 => ("video/mp4", "mp4", Video, &["video/x-m4v"]),
            Self::QuickTime => ("video/quicktime", "mov", Video, &[]),
            Self::Webm => ("video/webm", "webm", Video, &[]),
            Self::Mp3 => (
                "audio/mpeg",
                "mp3",
                Audio,
                &["audio/mp3", "audio/mpeg3", "audio/x-mpeg", "audio/x-mp3"],
            ),
            Self::Wav => (
                "audio/wav",
                "wav",
                Audio,
                &["audio/x-wav", "audio/wave", "audio/vnd.wave"],
            ),
            // `infer` reports Opus-in-Ogg as audio/opus; it is still an Ogg file.
            Self::Ogg => (
                "audio/ogg",
                "ogg",
                Audio,
                &["audio/opus", "application/ogg", "audio/vorbis"],
            ),
            Self::Aac => ("audio/aac", "aac", Audio, &["audio/x-aac", "audio/aacp"]),
            Self::M4a => ("audio/mp4", "m4a", Audio, &["audio/x-m4a", "audio/m4a"]),
            Self::Pdf => ("application/pdf", "pdf", Document, &["application/x-pdf"]),
        };
        TypeInfo {
            mime,
            extension,
            kind,
            aliases,
        }
    }

    /// The canonical MIME type, as stored and served.
    pub const fn mime(self) -> &'static str {
        self.info().mime
    }

    /// The canonical file extension, without the dot; used in object keys.
    pub const fn extension(self) -> &'static str {
        self.info().extension
    }

    /// The kind this type belongs to.
    pub const fn kind(self) -> MediaKind {
        self.info().kind
    }

    /// The types of one kind.
    pub fn of_kind(kind: MediaKind) -> impl Iterator<Item = Self> {
        Self::ALL.into_iter().filter(move |t| t.kind() == kind)
    }

    /// Finds the type a MIME name denotes, accepting aliases, any case and parameters
    /// (`IMAGE/JPG; q=1` is [`AllowedType::Jpeg`]).
    pub fn from_mime(mime: &str) -> Option<Self> {
        let mime = normalize_mime(mime);
        Self::ALL.into_iter().find(|t| {
            let info = t.info();
            info.mime == mime || info.aliases.contains(&mime.as_str())
        })
    }

    /// The canonical content type description of this type.
    pub const fn content_type(self) -> ContentType {
        let info = self.info();
        ContentType {
            mime: info.mime,
            extension: info.extension,
            kind: info.kind,
        }
    }
}

impl fmt::Display for AllowedType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.mime())
    }
}

/// What an upload turned out to be: canonical MIME type, canonical extension and kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ContentType {
    /// Canonical MIME type, for example `image/jpeg`.
    pub mime: &'static str,
    /// Canonical extension without the dot, for example `jpg`; used in object keys.
    pub extension: &'static str,
    /// Broad family.
    pub kind: MediaKind,
}

impl ContentType {
    /// The [`AllowedType`] this content type is.
    pub fn allowed_type(&self) -> Option<AllowedType> {
        AllowedType::from_mime(self.mime)
    }
}

impl From<AllowedType> for ContentType {
    fn from(value: AllowedType) -> Self {
        value.content_type()
    }
}

/// Whether a browser that displays a file of this content type may run code it carries: a PDF
/// viewer runs the document's JavaScript (an `OpenAction`, form scripts), where pictures, video
/// and sound only play. Any type outside those three kinds counts, and so does a type this
/// service does not know, so a type added later is treated as active until someone decides
/// otherwise. Such files are served as attachments in a sandbox, never rendered in our origin.
///
/// ```
/// use plugs_domain::may_run_code;
/// assert!(may_run_code("application/pdf"));
/// assert!(may_run_code("text/html"));
/// assert!(!may_run_code("image/png"));
/// assert!(!may_run_code("Video/MP4; codecs=avc1"));
/// ```
pub fn may_run_code(content_type: &str) -> bool {
    match AllowedType::from_mime(content_type) {
        Some(known) => !matches!(
            known.kind(),
            MediaKind::Image | MediaKind::Video | MediaKind::Audio
        ),
        None => true,
    }
}

/// Lower-cases a MIME type and drops its parameters and surrounding whitespace:
/// `" Image/PNG ; charset=binary"` becomes `"image/png"`.
pub fn normalize_mime(mime: &str) -> String {
    let essence = mime.split(';').next().unwrap_or_default();
    essence.trim().to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_documents_and_unknown_types_may_run_code() {
        for t in AllowedType::ALL {
            assert_eq!(
                may_run_code(t.mime()),
                t.kind() == MediaKind::Document,
                "{t}"
            );
        }
        for unknown in ["text/html", "image/svg+xml", "application/octet-stream", ""] {
            assert!(may_run_code(unknown), "{unknown}");
        }
    }

    #[test]
    fn every_canonical_name_and_alias_resolves_to_its_type() {
        for t in AllowedType::ALL {
            assert_eq!(AllowedType::from_mime(t.mime()), Some(t));
            for alias in t.info().aliases {
                assert_eq!(AllowedType::from_mime(alias), Some(t), "{alias}");
            }
        }
    }

    #[test]
    fn names_are_unique_across_types() {
        let mut seen = std::collections::HashSet::new();
        for t in AllowedType::ALL {
            for name in std::iter::once(&t.mime()).chain(t.info().aliases) {
                assert!(seen.insert(*name), "{name} names two types");
            }
        }
    }

    #[test]
    fn mime_lookup_ignores_case_parameters_and_whitespace() {
        assert_eq!(
            AllowedType::from_mime(" IMAGE/JPG ; q=1"),
            Some(AllowedType::Jpeg)
        );
        assert_eq!(
            AllowedType::from_mime("audio/x-wav"),
            Some(AllowedType::Wav)
        );
        assert_eq!(
            AllowedType::from_mime("audio/x-m4a"),
            Some(AllowedType::M4a)
        );
        assert_eq!(AllowedType::from_mime("text/html"), None);
        assert_eq!(AllowedType::from_mime(""), None);
    }

    #[test]
    fn every_canonical_extension_maps_back_through_mime_guess() {
        // The extension check in classify relies on this: a file named with our own canonical
        // extension must never be refused as a mismatch.
        for t in AllowedType::ALL {
            let guessed: Vec<_> = mime_guess::from_ext(t.extension()).iter_raw().collect();
            assert!(
                guessed.iter().any(|m| AllowedType::from_mime(m) == Some(t)),
                "{} guesses {guessed:?}",
                t.extension()
            );
        }
    }

    #[test]
    fn kinds_group_the_types_and_parse_case_insensitively() {
        assert_eq!(
            AllowedType::of_kind(MediaKind::Document).collect::<Vec<_>>(),
            vec![AllowedType::Pdf]
        );
        assert_eq!(AllowedType::of_kind(MediaKind::Image).count(), 6);
        assert_eq!(MediaKind::parse(" Video "), Some(MediaKind::Video));
        assert_eq!(MediaKind::parse("videos"), None);
    }
}
