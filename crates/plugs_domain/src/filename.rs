//! Client file names, reduced to something safe to show and to offer back on download.

/// Longest sanitised file name, in characters.
pub const MAX_FILENAME_CHARS: usize = 255;

/// Longest tail after the last dot that still counts as an extension worth keeping when a long
/// name is cut; anything longer is just part of the name.
const MAX_EXTENSION_CHARS: usize = 16;

/// Reduces a client-supplied file name to a display name, or `None` if nothing usable remains.
///
/// Keeps only the last path component (`/` and `\` both separate), drops control characters
/// (NUL included) and the Unicode direction overrides that make `gpj.exe` look like `exe.jpg`,
/// trims whitespace, drops leading dots (no hidden files, no `..`), and cuts names longer than
/// [`MAX_FILENAME_CHARS`] characters in the stem so the extension survives. The result is
/// metadata only: it never becomes part of an object key.
///
/// ```
/// use plugs_domain::sanitize_filename;
/// assert_eq!(sanitize_filename("C:\\Users\\me\\..\\holiday.JPG").as_deref(), Some("holiday.JPG"));
/// assert_eq!(sanitize_filename("../../etc/.."), None);
/// ```
pub fn sanitize_filename(raw: &str) -> Option<String> {
    let last = raw.rsplit(['/', '\\']).next().unwrap_or_default();
    let cleaned: String = last
        .chars()
        .filter(|c| !c.is_control() && !is_direction_control(*c))
        .collect();
    let name = cleaned
        .trim()
        .trim_start_matches(|c: char| c == '.' || c.is_whitespace());
    if name.is_empty() {
        return None;
    }
    if name.chars().count() <= MAX_FILENAME_CHARS {
        return Some(name.to_owned());
    }
    Some(shorten(name))
}

/// Cuts the stem of an over-long name so that `stem.ext` fits in [`MAX_FILENAME_CHARS`].
fn shorten(name: &str) -> String {
    let (stem, extension) = match split_extension(name) {
        Some((stem, ext)) if ext.chars().count() <= MAX_EXTENSION_CHARS => (stem, Some(ext)),
        _ => (name, None),
    };
    let room = match extension {
        Some(ext) => MAX_FILENAME_CHARS - 1 - ext.chars().count(),
        None => MAX_FILENAME_CHARS,
    };
    let mut out: String = stem.chars().take(room).collect();
    // Cutting may leave trailing whitespace that would not survive a second sanitising.
    out.truncate(out.trim_end().len());
    if let Some(ext) = extension {
        out.push('.');
        out.push_str(ext);
    }
    out
}

/// Splits `name` at its last dot into a non-empty stem and the text after the dot.
fn split_extension(name: &str) -> Option<(&str, &str)> {
    name.rsplit_once('.').filter(|(stem, _)| !stem.is_empty())
}

/// The extension of a (sanitised) file name as the type check sees it: the text after the last
/// dot, lower-cased, if it is 1 to 16 ASCII letters or digits. `Report v1.2 final` has none.
pub(crate) fn filename_extension(name: &str) -> Option<String> {
    let (_, ext) = split_extension(name)?;
    let is_extension = !ext.is_empty()
        && ext.len() <= MAX_EXTENSION_CHARS
        && ext.bytes().all(|b| b.is_ascii_alphanumeric());
    is_extension.then(|| ext.to_ascii_lowercase())
}

/// Bidirectional-text controls: invisible, and able to reorder how the rest of a name displays.
fn is_direction_control(c: char) -> bool {
    matches!(c, '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{061C}')
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn keeps_only_the_last_path_component() {
        assert_eq!(sanitize_filename("/etc/passwd").as_deref(), Some("passwd"));
        assert_eq!(
            sanitize_filename("a\\b/c\\photo.png").as_deref(),
            Some("photo.png")
        );
        assert_eq!(sanitize_filename("dir/").as_deref(), None);
    }

    #[test]
    fn drops_control_characters_and_direction_overrides() {
        assert_eq!(
            sanitize_filename("ev\0il\r\n.png").as_deref(),
            Some("evil.png")
        );
        assert_eq!(
            sanitize_filename("photo\u{202E}gpj.exe").as_deref(),
            Some("photogpj.exe")
        );
        assert_eq!(
            sanitize_filename("tab\there.txt").as_deref(),
            Some("tabhere.txt")
        );
    }

    #[test]
    fn drops_leading_dots_and_surrounding_whitespace() {
        assert_eq!(
            sanitize_filename("  .hidden.png  ").as_deref(),
            Some("hidden.png")
        );
        assert_eq!(sanitize_filename(". . .x").as_deref(), Some("x"));
        assert_eq!(sanitize_filename(".."), None);
        assert_eq!(sanitize_filename("   "), None);
        assert_eq!(sanitize_filename(""), None);
    }

    #[test]
    fn keeps_unicode_names() {
        assert_eq!(
            sanitize_filename("Fête d'été 🎉.jpeg").as_deref(),
            Some("Fête d'été 🎉.jpeg")
        );
    }

    #[test]
    fn long_names_are_cut_in_the_stem_keeping_the_extension() {
        let name = format!("{}.jpeg", "é".repeat(400));
        let out = sanitize_filename(&name).unwrap();
        assert_eq!(out.chars().count(), MAX_FILENAME_CHARS);
        assert!(out.ends_with("é.jpeg"));

        let no_ext = "x".repeat(300);
        assert_eq!(
            sanitize_filename(&no_ext).unwrap(),
            "x".repeat(MAX_FILENAME_CHARS)
        );

        // A "extension" longer than 16 characters is just part of the name.
        let long_tail = format!("a.{}", "b".repeat(300));
        assert_eq!(
            sanitize_filename(&long_tail).unwrap().chars().count(),
            MAX_FILENAME_CHARS
        );
    }

    #[test]
    fn extension_is_a_short_alphanumeric_tail() {
        assert_eq!(filename_extension("photo.JPG").as_deref(), Some("jpg"));
        assert_eq!(filename_extension("a.tar.gz").as_deref(), Some("gz"));
        assert_eq!(filename_extension("Report v1.2 final"), None);
        assert_eq!(filename_extension("noext"), None);
        assert_eq!(filename_extension("trailing."), None);
    }

    proptest! {
        #[test]
        fn sanitised_names_are_safe_and_stable(raw in any::<String>()) {
            if let Some(name) = sanitize_filename(&raw) {
                prop_assert!(!name.is_empty());
                prop_assert!(name.chars().count() <= MAX_FILENAME_CHARS);
                prop_assert!(!name.contains(['/', '\\']));
                prop_assert!(!name.chars().any(|c| c.is_control() || is_direction_control(c)));
                prop_assert!(!name.starts_with('.'));
                prop_assert_eq!(name.trim(), name.as_str());
                prop_assert_eq!(sanitize_filename(&name), Some(name.clone()));
            }
        }

        #[test]
        fn path_like_names_keep_their_last_component(
            dirs in proptest::collection::vec("[a-z.]{0,5}", 0..4),
            base in "[a-z]{1,10}\\.(png|jpg)",
        ) {
            let raw = dirs.iter().map(|d| format!("{d}/")).collect::<String>() + &base;
            prop_assert_eq!(sanitize_filename(&raw), Some(base));
        }
    }
}
