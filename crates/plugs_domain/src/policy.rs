//! What an upload may be: how large, and which types, checked against the bytes themselves.

use std::collections::BTreeSet;

use crate::error::echo;
use crate::filename::{filename_extension, sanitize_filename};
use crate::media_type::normalize_mime;
use crate::{AllowedType, ContentType, DomainError, MediaKind};

/// How many leading bytes of an upload [`MediaPolicy::classify`] wants to see. Every format this
/// crate accepts is recognisable well within it; it matches what `infer` reads from a file.
/// Give it fewer only when the whole upload is shorter.
pub const SNIFF_LEN: usize = 8192;

/// The default upload limit: 10 MiB, the `MAX_FILE_SIZE` default of the system this replaced.
pub const DEFAULT_MAX_SIZE_BYTES: u64 = 10_485_760;

/// Declared types that mean "the client did not say" rather than naming a type.
const UNDECLARED: &[&str] = &["application/octet-stream", "binary/octet-stream"];

/// The upload rules: a size limit and the set of accepted types.
///
/// ```
/// use plugs_domain::{AllowedType, DomainError, MediaPolicy};
/// let policy = MediaPolicy::from_entries(["image", "application/pdf"]).unwrap();
/// assert!(policy.allows(AllowedType::Png));
/// assert!(!policy.allows(AllowedType::Mp4));
///
/// let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";
/// let sniffed = policy.classify(png, Some("image/png"), Some("cat.png")).unwrap();
/// assert_eq!((sniffed.mime, sniffed.extension), ("image/png", "png"));
/// assert!(matches!(
///     policy.classify(png, None, Some("invoice.pdf")),
///     Err(DomainError::ExtensionMismatch { .. })
/// ));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaPolicy {
    /// Largest accepted upload, in bytes (inclusive).
    pub max_size_bytes: u64,
    /// The accepted types.
    pub allowed: BTreeSet<AllowedType>,
}

impl Default for MediaPolicy {
    /// Every supported type, up to [`DEFAULT_MAX_SIZE_BYTES`].
    fn default() -> Self {
        Self {
            max_size_bytes: DEFAULT_MAX_SIZE_BYTES,
            allowed: AllowedType::ALL.into_iter().collect(),
        }
    }
}

impl MediaPolicy {
    /// A policy with the default size limit accepting the listed entries. Each entry is a kind
    /// (`image`, `video`, `audio`, `document`) or a MIME type (aliases accepted), in any case;
    /// blank entries are skipped so that `"image, video,"` from a config file works.
    ///
    /// Fails on the first unknown entry, naming it, or if nothing would be allowed.
    pub fn from_entries<I, S>(entries: I) -> Result<Self, DomainError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut allowed = BTreeSet::new();
        for entry in entries {
            let entry = entry.as_ref().trim();
            if entry.is_empty() {
                continue;
            }
            if let Some(kind) = MediaKind::parse(entry) {
                allowed.extend(AllowedType::of_kind(kind));
            } else if let Some(t) = AllowedType::from_mime(entry) {
                allowed.insert(t);
            } else {
                return Err(DomainError::UnknownMediaType {
                    entry: echo(entry, 100),
                });
            }
        }
        if allowed.is_empty() {
            return Err(DomainError::NoAllowedTypes);
        }
        Ok(Self {
            max_size_bytes: DEFAULT_MAX_SIZE_BYTES,
            allowed,
        })
    }

    /// The same policy with another size limit.
    #[must_use]
    pub fn with_max_size_bytes(mut self, max_size_bytes: u64) -> Self {
        self.max_size_bytes = max_size_bytes;
        self
    }

    /// Whether `t` is accepted.
    pub fn allows(&self, t: AllowedType) -> bool {
        self.allowed.contains(&t)
    }

    /// Refuses a size above the limit. Call it with the running total while bytes stream in,
    /// so an oversized upload stops as soon as it crosses the limit.
    pub fn check_size(&self, size: u64) -> Result<(), DomainError> {
        if size > self.max_size_bytes {
            return Err(DomainError::TooLarge {
                limit: self.max_size_bytes,
                size,
            });
        }
        Ok(())
    }

    /// Checks what a client declares before sending any byte (a direct upload): the declared
    /// type must be one this policy accepts, and the file name's extension must agree with it.
    /// The bytes are still sniffed with [`MediaPolicy::classify`] once they have arrived.
    pub fn check_declared(
        &self,
        declared_content_type: &str,
        filename: Option<&str>,
    ) -> Result<ContentType, DomainError> {
        let declared = normalize_mime(declared_content_type);
        let Some(allowed) = AllowedType::from_mime(&declared) else {
            return Err(DomainError::TypeNotAllowed {
                mime: echo(&declared, 100),
            });
        };
        if !self.allows(allowed) {
            return Err(DomainError::TypeNotAllowed {
                mime: allowed.mime().to_owned(),
            });
        }
        check_extension(filename, allowed)?;
        Ok(allowed.content_type())
    }

    /// Decides what an upload is from its first bytes (up to [`SNIFF_LEN`]), and checks it
    /// against this policy and against what the client claimed.
    ///
    /// The bytes decide; the declared content type and the file name's extension may only
    /// agree with them. In order, it fails with:
    /// - [`DomainError::UnrecognisedContent`] when the bytes match no known format;
    /// - [`DomainError::TypeNotAllowed`] when they match a format this policy does not accept;
    /// - [`DomainError::DeclaredTypeMismatch`] when a declared type names another type
    ///   (`application/octet-stream` and an empty value count as not declared);
    /// - [`DomainError::ExtensionMismatch`] when the file name ends in an extension that is
    ///   unknown or belongs to another type (a name without extension is fine).
    pub fn classify(
        &self,
        head: &[u8],
        declared_content_type: Option<&str>,
        filename: Option<&str>,
    ) -> Result<ContentType, DomainError> {
        let sniffed = match sniff(head)? {
            Sniffed::Supported(t) if self.allows(t) => t,
            Sniffed::Supported(t) => {
                return Err(DomainError::TypeNotAllowed {
                    mime: t.mime().to_owned(),
                });
            }
            Sniffed::Other(mime) => {
                return Err(DomainError::TypeNotAllowed {
                    mime: mime.to_owned(),
                });
            }
        };

        if let Some(declared) = declared_content_type.map(normalize_mime)
            && !declared.is_empty()
            && !UNDECLARED.contains(&declared.as_str())
            && AllowedType::from_mime(&declared) != Some(sniffed)
        {
            return Err(DomainError::DeclaredTypeMismatch {
                declared: echo(&declared, 100),
                sniffed: sniffed.mime().to_owned(),
            });
        }

        check_extension(filename, sniffed)?;
        Ok(sniffed.content_type())
    }
}

/// A file name's extension, if it has one, must be one of `t`'s. It is judged on the name as it
/// will be shown and offered on download; a name without extension is fine.
fn check_extension(filename: Option<&str>, t: AllowedType) -> Result<(), DomainError> {
    if let Some(extension) = filename
        .and_then(sanitize_filename)
        .as_deref()
        .and_then(filename_extension)
        && !mime_guess::from_ext(&extension)
            .iter_raw()
            .any(|m| AllowedType::from_mime(m) == Some(t))
    {
        return Err(DomainError::ExtensionMismatch {
            extension: echo(&extension, 32),
            sniffed: t.mime().to_owned(),
        });
    }
    Ok(())
}

/// What the bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sniffed {
    /// A type this crate supports (allowed or not by a given policy).
    Supported(AllowedType),
    /// A recognised format this crate never accepts, by its MIME type.
    Other(&'static str),
}

/// Recognises the bytes with `infer`, then double-checks the few formats whose `infer` matcher
/// is looser than the format's real signature, so a text file starting with `GIF` or an
/// arbitrary RIFF or EBML file does not pass as an image or a WebM video.
fn sniff(head: &[u8]) -> Result<Sniffed, DomainError> {
    let kind = infer::get(head).ok_or(DomainError::UnrecognisedContent)?;
    let Some(t) = AllowedType::from_mime(kind.mime_type()) else {
        return Ok(Sniffed::Other(kind.mime_type()));
    };
    let confirmed = match t {
        AllowedType::Png => head.starts_with(b"\x89PNG\r\n\x1a\n"),
        AllowedType::Gif => head.starts_with(b"GIF87a") || head.starts_with(b"GIF89a"),
        AllowedType::Webp => head.starts_with(b"RIFF") && head.get(8..12) == Some(b"WEBP"),
        AllowedType::Pdf => head.starts_with(b"%PDF-"),
        AllowedType::Webm => {
            // `infer` calls every EBML file WebM; Matroska shares the magic and differs only in
            // the DocType element of the EBML header, which sits in the first few dozen bytes.
            let header = &head[..head.len().min(64)];
            if !contains(header, b"webm") {
                return Ok(Sniffed::Other("video/x-matroska"));
            }
            true
        }
        _ => true,
    };
    if confirmed {
        Ok(Sniffed::Supported(t))
    } else {
        Err(DomainError::UnrecognisedContent)
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Synthetic file heads, built from the published signatures. Each is followed by padding so
    /// it looks like the start of a real file rather than a file that is only a signature.
    mod heads {
        fn padded(mut bytes: Vec<u8>) -> Vec<u8> {
            bytes.resize(bytes.len() + 64, 0);
            bytes
        }

        /// An ISO BMFF `ftyp` box: size, `ftyp`, major brand, minor version, compatible brands.
        fn ftyp(major: &[u8; 4], compatible: &[&[u8; 4]]) -> Vec<u8> {
            let size = u32::try_from(16 + 4 * compatible.len()).unwrap();
            let mut out = size.to_be_bytes().to_vec();
            out.extend_from_slice(b"ftyp");
            out.extend_from_slice(major);
            out.extend_from_slice(&[0, 0, 2, 0]);
            for brand in compatible {
                out.extend_from_slice(*brand);
            }
            // Then an `mdat` box header, as a muxer would write.
            out.extend_from_slice(&[0, 0, 0, 8]);
            out.extend_from_slice(b"mdat");
            padded(out)
        }

        fn riff(form: &[u8; 4], chunk: &[u8; 4]) -> Vec<u8> {
            let mut out = b"RIFF".to_vec();
            out.extend_from_slice(&1000u32.to_le_bytes());
            out.extend_from_slice(form);
            out.extend_from_slice(chunk);
            padded(out)
        }

        fn ebml(doc_type: &[u8]) -> Vec<u8> {
            let mut out = vec![0x1A, 0x45, 0xDF, 0xA3, 0x9F];
            out.extend_from_slice(&[0x42, 0x86, 0x81, 0x01, 0x42, 0xF7, 0x81, 0x01]);
            out.extend_from_slice(&[0x42, 0xF2, 0x81, 0x04, 0x42, 0xF3, 0x81, 0x08]);
            out.extend_from_slice(&[0x42, 0x82, 0x80 | u8::try_from(doc_type.len()).unwrap()]);
            out.extend_from_slice(doc_type);
            out.extend_from_slice(&[0x42, 0x87, 0x81, 0x04, 0x42, 0x85, 0x81, 0x02]);
            padded(out)
        }

        pub(super) fn jpeg() -> Vec<u8> {
            padded(b"\xFF\xD8\xFF\xE0\x00\x10JFIF\x00\x01\x01".to_vec())
        }
        pub(super) fn png() -> Vec<u8> {
            padded(b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR".to_vec())
        }
        pub(super) fn gif() -> Vec<u8> {
            padded(b"GIF89a\x01\x00\x01\x00".to_vec())
        }
        pub(super) fn webp() -> Vec<u8> {
            riff(b"WEBP", b"VP8 ")
        }
        pub(super) fn heic() -> Vec<u8> {
            ftyp(b"heic", &[b"mif1", b"heic"])
        }
        pub(super) fn heic_mif1_major() -> Vec<u8> {
            ftyp(b"mif1", &[b"mif1", b"heic"])
        }
        pub(super) fn avif() -> Vec<u8> {
            ftyp(b"avif", &[b"avif", b"mif1", b"miaf"])
        }
        pub(super) fn mp4() -> Vec<u8> {
            ftyp(b"isom", &[b"isom", b"iso2", b"avc1", b"mp41"])
        }
        pub(super) fn mp4_mp42() -> Vec<u8> {
            ftyp(b"mp42", &[b"mp42", b"isom"])
        }
        pub(super) fn quicktime() -> Vec<u8> {
            ftyp(b"qt  ", &[b"qt  "])
        }
        pub(super) fn m4a() -> Vec<u8> {
            ftyp(b"M4A ", &[b"M4A ", b"mp42", b"isom"])
        }
        pub(super) fn webm() -> Vec<u8> {
            ebml(b"webm")
        }
        pub(super) fn matroska() -> Vec<u8> {
            ebml(b"matroska")
        }
        pub(super) fn mp3_id3() -> Vec<u8> {
            padded(b"ID3\x04\x00\x00\x00\x00\x00\x00".to_vec())
        }
        pub(super) fn mp3_frame() -> Vec<u8> {
            padded(b"\xFF\xFB\x90\x64".to_vec())
        }
        pub(super) fn wav() -> Vec<u8> {
            riff(b"WAVE", b"fmt ")
        }
        pub(super) fn ogg_vorbis() -> Vec<u8> {
            let mut out = b"OggS\x00\x02".to_vec();
            out.resize(28, 0);
            out.extend_from_slice(b"\x01vorbis");
            padded(out)
        }
        pub(super) fn ogg_opus() -> Vec<u8> {
            let mut out = b"OggS\x00\x02".to_vec();
            out.resize(28, 0);
            out.extend_from_slice(b"OpusHead");
            padded(out)
        }
        pub(super) fn aac() -> Vec<u8> {
            padded(b"\xFF\xF1\x50\x80".to_vec())
        }
        pub(super) fn pdf() -> Vec<u8> {
            padded(b"%PDF-1.7\n%\xE2\xE3\xCF\xD3\n".to_vec())
        }
        pub(super) fn html() -> Vec<u8> {
            b"<!DOCTYPE html><html><body><script>alert(1)</script></body></html>".to_vec()
        }
    }

    fn sniffed(head: &[u8]) -> Result<ContentType, DomainError> {
        MediaPolicy::default().classify(head, None, None)
    }

    #[test]
    fn every_supported_format_is_recognised_with_its_canonical_name() {
        let cases: &[(Vec<u8>, &str, &str, MediaKind)] = &[
            (heads::jpeg(), "image/jpeg", "jpg", MediaKind::Image),
            (heads::png(), "image/png", "png", MediaKind::Image),
            (heads::gif(), "image/gif", "gif", MediaKind::Image),
            (heads::webp(), "image/webp", "webp", MediaKind::Image),
            (heads::heic(), "image/heic", "heic", MediaKind::Image),
            (
                heads::heic_mif1_major(),
                "image/heic",
                "heic",
                MediaKind::Image,
            ),
            (heads::avif(), "image/avif", "avif", MediaKind::Image),
            (heads::mp4(), "video/mp4", "mp4", MediaKind::Video),
            (heads::mp4_mp42(), "video/mp4", "mp4", MediaKind::Video),
            (
                heads::quicktime(),
                "video/quicktime",
                "mov",
                MediaKind::Video,
            ),
            (heads::webm(), "video/webm", "webm", MediaKind::Video),
            (heads::mp3_id3(), "audio/mpeg", "mp3", MediaKind::Audio),
            (heads::mp3_frame(), "audio/mpeg", "mp3", MediaKind::Audio),
            (heads::wav(), "audio/wav", "wav", MediaKind::Audio),
            (heads::ogg_vorbis(), "audio/ogg", "ogg", MediaKind::Audio),
            (heads::ogg_opus(), "audio/ogg", "ogg", MediaKind::Audio),
            (heads::aac(), "audio/aac", "aac", MediaKind::Audio),
            (heads::m4a(), "audio/mp4", "m4a", MediaKind::Audio),
            (heads::pdf(), "application/pdf", "pdf", MediaKind::Document),
        ];
        for (head, mime, extension, kind) in cases {
            assert_eq!(
                sniffed(head),
                Ok(ContentType {
                    mime,
                    extension,
                    kind: *kind
                }),
                "{mime}"
            );
        }
    }

    #[test]
    fn empty_or_unknown_content_is_unrecognised() {
        assert_eq!(sniffed(b""), Err(DomainError::UnrecognisedContent));
        assert_eq!(
            sniffed(b"just some plain text"),
            Err(DomainError::UnrecognisedContent)
        );
        assert_eq!(sniffed(&[0u8; 100]), Err(DomainError::UnrecognisedContent));
    }

    #[test]
    fn loose_signatures_are_double_checked() {
        // infer accepts these prefixes; the real formats need more.
        assert_eq!(
            sniffed(b"GIFT list for the party"),
            Err(DomainError::UnrecognisedContent)
        );
        assert_eq!(
            sniffed(b"\x89PNG but not really a png"),
            Err(DomainError::UnrecognisedContent)
        );
        assert_eq!(
            sniffed(b"XXXXXXXXWEBPVP8 rest of it"),
            Err(DomainError::UnrecognisedContent)
        );
        assert_eq!(sniffed(b"%PDF"), Err(DomainError::UnrecognisedContent));
    }

    #[test]
    fn matroska_is_not_webm() {
        assert_eq!(
            sniffed(&heads::matroska()),
            Err(DomainError::TypeNotAllowed {
                mime: "video/x-matroska".into()
            })
        );
    }

    #[test]
    fn recognised_but_unsupported_formats_are_not_allowed() {
        let exe = padded_exe();
        assert_eq!(
            sniffed(&heads::html()),
            Err(DomainError::TypeNotAllowed {
                mime: "text/html".into()
            })
        );
        assert!(matches!(
            sniffed(&exe),
            Err(DomainError::TypeNotAllowed { .. })
        ));
        assert!(matches!(
            sniffed(b"PK\x03\x04\x14\x00\x00\x00"),
            Err(DomainError::TypeNotAllowed { .. })
        ));
    }

    fn padded_exe() -> Vec<u8> {
        let mut exe = b"MZ".to_vec();
        exe.resize(128, 0);
        exe
    }

    #[test]
    fn a_policy_refuses_supported_types_it_does_not_list() {
        let images = MediaPolicy::from_entries(["image"]).unwrap();
        assert_eq!(
            images.classify(&heads::pdf(), None, None),
            Err(DomainError::TypeNotAllowed {
                mime: "application/pdf".into()
            })
        );
        assert!(images.classify(&heads::heic(), None, None).is_ok());
    }

    #[test]
    fn a_direct_upload_is_judged_on_its_declared_type_and_name_before_any_byte() {
        let policy = MediaPolicy::default();
        assert_eq!(
            policy.check_declared("IMAGE/JPG", Some("IMG_0042.jpeg")),
            Ok(AllowedType::Jpeg.content_type())
        );
        assert_eq!(
            policy.check_declared("image/png", Some("scan")),
            Ok(AllowedType::Png.content_type()),
            "a name without extension is fine"
        );
        assert_eq!(
            policy.check_declared("image/png", Some("cat.jpg")),
            Err(DomainError::ExtensionMismatch {
                extension: "jpg".into(),
                sniffed: "image/png".into()
            })
        );
        assert_eq!(
            policy.check_declared("text/html", Some("page.html")),
            Err(DomainError::TypeNotAllowed {
                mime: "text/html".into()
            })
        );
        let images = MediaPolicy::from_entries(["image"]).unwrap();
        assert_eq!(
            images.check_declared("application/pdf", Some("a.pdf")),
            Err(DomainError::TypeNotAllowed {
                mime: "application/pdf".into()
            })
        );
    }

    #[test]
    fn declared_type_must_name_the_sniffed_type_up_to_aliases() {
        let policy = MediaPolicy::default();
        let jpeg = heads::jpeg();
        for declared in [
            "image/jpeg",
            "image/jpg",
            "IMAGE/JPEG; charset=binary",
            " image/pjpeg ",
        ] {
            assert!(
                policy.classify(&jpeg, Some(declared), None).is_ok(),
                "{declared}"
            );
        }
        assert!(
            policy
                .classify(&heads::wav(), Some("audio/x-wav"), None)
                .is_ok()
        );
        assert!(
            policy
                .classify(&heads::m4a(), Some("audio/x-m4a"), None)
                .is_ok()
        );
        assert!(
            policy
                .classify(&heads::heic(), Some("image/heif"), None)
                .is_ok()
        );
        assert!(
            policy
                .classify(&heads::ogg_opus(), Some("audio/opus"), None)
                .is_ok()
        );

        assert_eq!(
            policy.classify(&jpeg, Some("image/png"), None),
            Err(DomainError::DeclaredTypeMismatch {
                declared: "image/png".into(),
                sniffed: "image/jpeg".into()
            })
        );
        assert_eq!(
            policy.classify(&heads::mp4(), Some("video/quicktime"), None),
            Err(DomainError::DeclaredTypeMismatch {
                declared: "video/quicktime".into(),
                sniffed: "video/mp4".into()
            })
        );
    }

    #[test]
    fn octet_stream_and_blank_declarations_mean_not_declared() {
        let policy = MediaPolicy::default();
        for declared in [
            "application/octet-stream",
            "Application/Octet-Stream; x=1",
            "",
            "  ",
            "binary/octet-stream",
        ] {
            assert!(
                policy.classify(&heads::png(), Some(declared), None).is_ok(),
                "{declared:?}"
            );
        }
    }

    #[test]
    fn extension_must_belong_to_the_sniffed_type() {
        let policy = MediaPolicy::default();
        let ok = [
            (heads::jpeg(), "photo.JPG"),
            (heads::jpeg(), "photo.jpeg"),
            (heads::heic(), "IMG_0001.HEIC"),
            (heads::heic(), "IMG_0001.heif"),
            (heads::quicktime(), "clip.mov"),
            (heads::m4a(), "song.m4a"),
            (heads::ogg_opus(), "voice.opus"),
            (heads::wav(), "take.wave"),
            (heads::pdf(), "../../minutes.pdf"),
            (heads::png(), "no_extension"),
            (heads::png(), "Report v1.2 final"),
        ];
        for (head, name) in ok {
            assert!(policy.classify(&head, None, Some(name)).is_ok(), "{name}");
        }

        assert_eq!(
            policy.classify(&heads::mp4(), None, Some("clip.mov")),
            Err(DomainError::ExtensionMismatch {
                extension: "mov".into(),
                sniffed: "video/mp4".into()
            })
        );
        assert_eq!(
            policy.classify(&heads::png(), None, Some("photo.xyzzy")),
            Err(DomainError::ExtensionMismatch {
                extension: "xyzzy".into(),
                sniffed: "image/png".into()
            })
        );
    }

    #[test]
    fn spoofed_uploads_are_refused() {
        let policy = MediaPolicy::default();
        // PNG bytes passed off as a PDF by name.
        assert_eq!(
            policy.classify(&heads::png(), Some("application/pdf"), Some("invoice.pdf")),
            Err(DomainError::DeclaredTypeMismatch {
                declared: "application/pdf".into(),
                sniffed: "image/png".into()
            })
        );
        assert_eq!(
            policy.classify(&heads::png(), None, Some("invoice.pdf")),
            Err(DomainError::ExtensionMismatch {
                extension: "pdf".into(),
                sniffed: "image/png".into()
            })
        );
        // An HTML page declared and named as an image.
        assert_eq!(
            policy.classify(&heads::html(), Some("image/png"), Some("cat.png")),
            Err(DomainError::TypeNotAllowed {
                mime: "text/html".into()
            })
        );
        // A real image named so that a browser or OS would treat the download as a page or program.
        for name in ["cat.png.html", "cat.svg", "cat.exe", "cat.png.js"] {
            assert!(
                matches!(
                    policy.classify(&heads::png(), Some("image/png"), Some(name)),
                    Err(DomainError::ExtensionMismatch { .. })
                ),
                "{name}"
            );
        }
    }

    #[test]
    fn size_limit_is_inclusive() {
        let policy = MediaPolicy::default();
        assert_eq!(policy.max_size_bytes, 10_485_760);
        assert_eq!(policy.check_size(10_485_760), Ok(()));
        assert_eq!(
            policy.check_size(10_485_761),
            Err(DomainError::TooLarge {
                limit: 10_485_760,
                size: 10_485_761
            })
        );
        let tiny = MediaPolicy::default().with_max_size_bytes(0);
        assert_eq!(tiny.check_size(0), Ok(()));
        assert_eq!(
            tiny.check_size(1),
            Err(DomainError::TooLarge { limit: 0, size: 1 })
        );
    }

    #[test]
    fn policy_entries_accept_kinds_and_mime_types_and_name_the_unknown_one() {
        let policy =
            MediaPolicy::from_entries(["Audio", " image/JPG ", "", "application/pdf"]).unwrap();
        let expected: BTreeSet<_> = AllowedType::of_kind(MediaKind::Audio)
            .chain([AllowedType::Jpeg, AllowedType::Pdf])
            .collect();
        assert_eq!(policy.allowed, expected);
        assert_eq!(policy.max_size_bytes, DEFAULT_MAX_SIZE_BYTES);

        assert_eq!(
            MediaPolicy::from_entries(["image", "text/html", "nope"]),
            Err(DomainError::UnknownMediaType {
                entry: "text/html".into()
            })
        );
        assert_eq!(
            MediaPolicy::from_entries(["", " "]),
            Err(DomainError::NoAllowedTypes)
        );
        assert_eq!(
            MediaPolicy::from_entries(Vec::<String>::new()),
            Err(DomainError::NoAllowedTypes)
        );
    }

    #[test]
    fn default_policy_allows_every_kind() {
        let policy = MediaPolicy::default();
        for kind in MediaKind::ALL {
            assert!(
                AllowedType::of_kind(kind).all(|t| policy.allows(t)),
                "{kind}"
            );
        }
    }

    proptest! {
        #[test]
        fn classify_never_panics_and_only_returns_allowed_types(
            head in proptest::collection::vec(any::<u8>(), 0..256),
            declared in proptest::option::of(".{0,40}"),
            name in proptest::option::of(".{0,40}"),
        ) {
            let policy = MediaPolicy::from_entries(["image", "document"]).unwrap();
            if let Ok(content) = policy.classify(&head, declared.as_deref(), name.as_deref()) {
                let t = content.allowed_type().unwrap();
                prop_assert!(policy.allows(t));
                prop_assert_eq!(t.content_type(), content);
            }
        }

        #[test]
        fn trailing_bytes_do_not_change_the_verdict(tail in proptest::collection::vec(any::<u8>(), 0..512)) {
            for head in [heads::jpeg(), heads::png(), heads::mp4(), heads::pdf(), heads::wav()] {
                let before = sniffed(&head).unwrap();
                let mut longer = head.clone();
                longer.extend_from_slice(&tail);
                prop_assert_eq!(sniffed(&longer), Ok(before));
            }
        }
    }
}
