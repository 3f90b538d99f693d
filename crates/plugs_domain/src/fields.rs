//! The free-text fields of an upload and of an event, validated and normalised.

use crate::DomainError;
use crate::error::echo;

/// The optional text that comes with an upload, validated and normalised.
///
/// ```
/// use plugs_domain::MediaFields;
/// let fields = MediaFields::parse(Some("  Sunset "), None, Some("Beach, sunset,,beach , 2024")).unwrap();
/// assert_eq!(fields.title.as_deref(), Some("Sunset"));
/// assert_eq!(fields.tags, ["beach", "sunset", "2024"]);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MediaFields {
    /// Trimmed title, `None` if absent or blank.
    pub title: Option<String>,
    /// Trimmed description, `None` if absent or blank; line breaks are `\n`.
    pub description: Option<String>,
    /// Trimmed, lower-cased, unique tags in the order first given.
    pub tags: Vec<String>,
}

impl MediaFields {
    /// Longest title, in characters (Unicode scalar values) after trimming.
    pub const MAX_TITLE_CHARS: usize = 200;
    /// Longest description, in characters after trimming.
    pub const MAX_DESCRIPTION_CHARS: usize = 2000;
    /// Most tags, counted after removing duplicates and blanks.
    pub const MAX_TAGS: usize = 20;
    /// Longest tag, in characters after trimming.
    pub const MAX_TAG_CHARS: usize = 50;

    /// Validates the form fields of an upload.
    ///
    /// - `title`: trimmed; blank means none; at most 200 characters; no control characters.
    /// - `description`: trimmed; blank means none; at most 2000 characters; `\r\n` becomes `\n`;
    ///   line feeds and tabs are the only control characters allowed.
    /// - `tags`: comma-separated; each piece trimmed and lower-cased; blank pieces (`a,,b`,
    ///   `a, ,b`, a trailing comma) are skipped; later duplicates dropped; at most 20 tags of at
    ///   most 50 characters each; no control characters.
    pub fn parse(
        title: Option<&str>,
        description: Option<&str>,
        tags: Option<&str>,
    ) -> Result<Self, DomainError> {
        let title = match non_blank(title) {
            Some(title) => Some(check_title(title)?),
            None => None,
        };
        let description = match non_blank(description) {
            Some(description) => Some(check_description(description)?),
            None => None,
        };
        let tags = match tags {
            Some(tags) => parse_tags(tags)?,
            None => Vec::new(),
        };
        Ok(Self {
            title,
            description,
            tags,
        })
    }

    /// Validates tags given one per item (a JSON list), by the rules of [`MediaFields::parse`]:
    /// each trimmed and lower-cased, blank items skipped, later duplicates dropped, at most 20 of
    /// at most 50 characters. An item holding a comma is refused rather than split: a tag can
    /// never contain one (the form splits on it), so the list a record shows always comes back
    /// unchanged.
    ///
    /// ```
    /// use plugs_domain::{DomainError, MediaFields};
    /// assert_eq!(MediaFields::parse_tag_list(&[" Beach", "beach", "New York"]).unwrap(), ["beach", "new york"]);
    /// assert!(matches!(MediaFields::parse_tag_list(&["a,b"]), Err(DomainError::TagHasComma { .. })));
    /// ```
    pub fn parse_tag_list<S: AsRef<str>>(tags: &[S]) -> Result<Vec<String>, DomainError> {
        if let Some(tag) = tags.iter().map(AsRef::as_ref).find(|t| t.contains(',')) {
            return Err(DomainError::TagHasComma { tag: echo(tag, 60) });
        }
        normalize_tags(tags.iter().map(AsRef::as_ref))
    }
}

/// Validates an event title: trimmed, 1 to 200 characters, no control characters.
///
/// ```
/// use plugs_domain::{validate_event_title, DomainError};
/// assert_eq!(validate_event_title("  Summer party "), Ok("Summer party".to_owned()));
/// assert_eq!(validate_event_title("   "), Err(DomainError::TitleEmpty));
/// ```
pub fn validate_event_title(title: &str) -> Result<String, DomainError> {
    let title = non_blank(Some(title)).ok_or(DomainError::TitleEmpty)?;
    check_title(title)
}

fn non_blank(value: Option<&str>) -> Option<&str> {
    value.map(str::trim).filter(|v| !v.is_empty())
}

fn check_title(title: &str) -> Result<String, DomainError> {
    let len = title.chars().count();
    if len > MediaFields::MAX_TITLE_CHARS {
        return Err(DomainError::TitleTooLong {
            max: MediaFields::MAX_TITLE_CHARS,
            len,
        });
    }
    if title.chars().any(char::is_control) {
        return Err(DomainError::ControlCharacter { field: "title" });
    }
    Ok(title.to_owned())
}

fn check_description(description: &str) -> Result<String, DomainError> {
    // Browsers send textarea line breaks as CRLF; store one form.
    let description = description.replace("\r\n", "\n");
    let len = description.chars().count();
    if len > MediaFields::MAX_DESCRIPTION_CHARS {
        return Err(DomainError::DescriptionTooLong {
            max: MediaFields::MAX_DESCRIPTION_CHARS,
            len,
        });
    }
    if description
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(DomainError::ControlCharacter {
            field: "description",
        });
    }
    Ok(description)
}

fn parse_tags(raw: &str) -> Result<Vec<String>, DomainError> {
    normalize_tags(raw.split(','))
}

fn normalize_tags<'a>(pieces: impl Iterator<Item = &'a str>) -> Result<Vec<String>, DomainError> {
    let mut tags: Vec<String> = Vec::new();
    for piece in pieces {
        let tag = piece.trim().to_lowercase();
        if tag.is_empty() {
            continue;
        }
        if tag.chars().any(char::is_control) {
            return Err(DomainError::ControlCharacter { field: "tags" });
        }
        let len = tag.chars().count();
        if len > MediaFields::MAX_TAG_CHARS {
            return Err(DomainError::TagTooLong {
                tag: echo(&tag, 60),
                max: MediaFields::MAX_TAG_CHARS,
                len,
            });
        }
        if !tags.contains(&tag) {
            tags.push(tag);
        }
    }
    if tags.len() > MediaFields::MAX_TAGS {
        return Err(DomainError::TooManyTags {
            max: MediaFields::MAX_TAGS,
            count: tags.len(),
        });
    }
    Ok(tags)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn tags(raw: &str) -> Result<Vec<String>, DomainError> {
        MediaFields::parse(None, None, Some(raw)).map(|f| f.tags)
    }

    #[test]
    fn absent_and_blank_fields_are_none_or_empty() {
        assert_eq!(
            MediaFields::parse(None, None, None),
            Ok(MediaFields::default())
        );
        assert_eq!(
            MediaFields::parse(Some("  "), Some("\n\t "), Some(" , ,")),
            Ok(MediaFields::default())
        );
    }

    #[test]
    fn title_is_trimmed_and_limited_in_characters_not_bytes() {
        let fields = MediaFields::parse(Some("  Fête  "), None, None).unwrap();
        assert_eq!(fields.title.as_deref(), Some("Fête"));
        let max = "é".repeat(200);
        assert_eq!(
            MediaFields::parse(Some(&max), None, None).unwrap().title,
            Some(max)
        );
        assert_eq!(
            MediaFields::parse(Some(&"é".repeat(201)), None, None),
            Err(DomainError::TitleTooLong { max: 200, len: 201 })
        );
        assert_eq!(
            MediaFields::parse(Some("two\nlines"), None, None),
            Err(DomainError::ControlCharacter { field: "title" })
        );
    }

    #[test]
    fn description_keeps_line_breaks_and_tabs_only() {
        let fields = MediaFields::parse(None, Some(" line one\r\n\tline two \n"), None).unwrap();
        assert_eq!(fields.description.as_deref(), Some("line one\n\tline two"));
        for bad in ["nul\0", "bell\x07", "lone\rcr", "esc\x1b[31m"] {
            assert_eq!(
                MediaFields::parse(None, Some(bad), None),
                Err(DomainError::ControlCharacter {
                    field: "description"
                }),
                "{bad:?}"
            );
        }
        assert!(MediaFields::parse(None, Some(&"x".repeat(2000)), None).is_ok());
        assert_eq!(
            MediaFields::parse(None, Some(&"x".repeat(2001)), None),
            Err(DomainError::DescriptionTooLong {
                max: 2000,
                len: 2001
            })
        );
    }

    #[test]
    fn tags_are_trimmed_lower_cased_deduplicated_in_first_order() {
        assert_eq!(
            tags(" Beach ,SUNSET, beach,,  ,Été,").unwrap(),
            ["beach", "sunset", "été"]
        );
        assert_eq!(tags("one").unwrap(), ["one"]);
        assert_eq!(tags("new york, New York").unwrap(), ["new york"]);
    }

    #[test]
    fn tag_limits_report_their_context() {
        let twenty: Vec<String> = (0..20).map(|i| format!("t{i}")).collect();
        assert_eq!(tags(&twenty.join(",")).unwrap(), twenty);
        // Duplicates do not count toward the limit.
        assert_eq!(
            tags(&format!("{},t0,T1", twenty.join(","))).unwrap().len(),
            20
        );
        assert_eq!(
            tags(&format!("{},t20", twenty.join(","))),
            Err(DomainError::TooManyTags { max: 20, count: 21 })
        );

        assert!(tags(&"a".repeat(50)).is_ok());
        assert_eq!(
            tags(&format!("ok,{}", "A".repeat(51))),
            Err(DomainError::TagTooLong {
                tag: "a".repeat(51),
                max: 50,
                len: 51
            })
        );
        assert_eq!(
            tags("fine,bad\u{0}tag"),
            Err(DomainError::ControlCharacter { field: "tags" })
        );
    }

    #[test]
    fn a_tag_list_follows_the_form_rules_and_refuses_commas() {
        assert_eq!(
            MediaFields::parse_tag_list(&[" Beach ", "SUNSET", "beach", "", "  ", "Été"]).unwrap(),
            ["beach", "sunset", "été"]
        );
        assert_eq!(
            MediaFields::parse_tag_list::<&str>(&[]).unwrap(),
            Vec::<String>::new()
        );
        assert_eq!(
            MediaFields::parse_tag_list(&["ok", "a, b"]),
            Err(DomainError::TagHasComma {
                tag: "a, b".to_owned()
            })
        );
        let twenty_one: Vec<String> = (0..21).map(|i| format!("t{i}")).collect();
        assert_eq!(
            MediaFields::parse_tag_list(&twenty_one),
            Err(DomainError::TooManyTags { max: 20, count: 21 })
        );
        assert_eq!(
            MediaFields::parse_tag_list(&["x".repeat(51)]),
            Err(DomainError::TagTooLong {
                tag: "x".repeat(51),
                max: 50,
                len: 51
            })
        );
        assert_eq!(
            MediaFields::parse_tag_list(&["bad\ttag"]),
            Err(DomainError::ControlCharacter { field: "tags" })
        );
        // What a record shows is accepted back unchanged.
        let parsed = tags("Pets, cats, New York").unwrap();
        assert_eq!(MediaFields::parse_tag_list(&parsed).unwrap(), parsed);
    }

    #[test]
    fn event_title_rules() {
        assert_eq!(validate_event_title("Picnic"), Ok("Picnic".into()));
        assert_eq!(validate_event_title(""), Err(DomainError::TitleEmpty));
        assert_eq!(validate_event_title(&"x".repeat(200)), Ok("x".repeat(200)));
        assert_eq!(
            validate_event_title(&"x".repeat(201)),
            Err(DomainError::TitleTooLong { max: 200, len: 201 })
        );
        assert_eq!(
            validate_event_title("a\tb"),
            Err(DomainError::ControlCharacter { field: "title" })
        );
    }

    proptest! {
        #[test]
        fn parsed_tags_are_normal_and_reparse_to_themselves(raw in "[ a-zA-Z0-9,éÉ]{0,200}") {
            if let Ok(parsed) = tags(&raw) {
                prop_assert!(parsed.len() <= MediaFields::MAX_TAGS);
                for tag in &parsed {
                    prop_assert!(!tag.is_empty() && !tag.contains(','));
                    prop_assert_eq!(tag.trim(), tag.as_str());
                    prop_assert_eq!(&tag.to_lowercase(), tag);
                    prop_assert!(tag.chars().count() <= MediaFields::MAX_TAG_CHARS);
                }
                let unique: std::collections::HashSet<_> = parsed.iter().collect();
                prop_assert_eq!(unique.len(), parsed.len());
                prop_assert_eq!(tags(&parsed.join(",")), Ok(parsed));
            }
        }

        #[test]
        fn field_parsing_never_panics(title in any::<Option<String>>(), description in any::<Option<String>>(), raw_tags in any::<Option<String>>()) {
            let _ = MediaFields::parse(title.as_deref(), description.as_deref(), raw_tags.as_deref());
        }
    }
}
