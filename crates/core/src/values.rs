//! Values parsed once at the edge: once typed, they are valid.
//!
//! One text rule covers every string orgplane stores from a request or a
//! token ([`forbidden_char`]): no NUL and no other control character, except
//! that free text (strings inside org `settings`) may break lines with tab,
//! line feed and carriage return. PostgreSQL text columns can't hold NUL at
//! all, and control characters in names break every screen that shows them.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::DomainError;

/// Whether a text may span lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextKind {
    /// Names, ids, keys: no control character at all.
    SingleLine,
    /// Free text: tab, line feed and carriage return are allowed.
    MultiLine,
}

/// The first character of `text` the text rule refuses, if any: every
/// control character (Unicode category Cc: U+0000..U+001F, U+007F..U+009F),
/// except tab, line feed and carriage return in [`TextKind::MultiLine`] text.
pub fn forbidden_char(text: &str, kind: TextKind) -> Option<char> {
    text.chars().find(|&c| c.is_control() && !(kind == TextKind::MultiLine && matches!(c, '\t' | '\n' | '\r')))
}

/// The text rule as an error naming `param`: what is wrong and what to do.
pub fn check_text(param: &str, text: &str, kind: TextKind) -> Result<(), DomainError> {
    match forbidden_char(text, kind) {
        None => Ok(()),
        Some(c) => Err(DomainError::invalid(param, forbidden_message(param, c))),
    }
}

/// "name contains the control character U+0000; remove control characters from it".
pub fn forbidden_message(param: &str, c: char) -> String {
    format!("{param} contains the control character U+{:04X}; remove control characters from it", u32::from(c))
}

/// `text` with every character the single-line rule refuses removed and
/// the rest trimmed; `None` when nothing is left. For text orgplane does not
/// choose, such as the display name in an identity token: a stray control
/// character there is the issuer's, and refusing the sign-in would lock the
/// user out for it.
pub fn strip_forbidden(text: &str) -> Option<String> {
    let kept: String = text.chars().filter(|c| !c.is_control()).collect();
    let kept = kept.trim();
    (!kept.is_empty()).then(|| kept.to_owned())
}

/// A syntactically valid, lower-cased e-mail address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        let text = raw.trim().to_lowercase();
        let invalid = || {
            DomainError::invalid(
                "email",
                format!("`{}` is not a valid e-mail address", raw.chars().take(80).collect::<String>()),
            )
        };
        if text.len() > 254 || text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid());
        }
        let (local, domain) = text.split_once('@').ok_or_else(invalid)?;
        if local.is_empty()
            || local.len() > 64
            || domain.is_empty()
            || domain.contains('@')
            || !domain.contains('.')
            || domain.starts_with('.')
            || domain.ends_with('.')
            || domain.contains("..")
        {
            return Err(invalid());
        }
        Ok(Self(text))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Email {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Email::parse(&raw).map_err(serde::de::Error::custom)
    }
}

/// An organization's display name: 1 to 100 characters, trimmed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct OrgName(String);

impl OrgName {
    pub const MAX_CHARS: usize = 100;

    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        let text = raw.trim();
        if text.is_empty() {
            return Err(DomainError::invalid("name", "the organization name must not be empty"));
        }
        if text.chars().count() > Self::MAX_CHARS {
            return Err(DomainError::invalid(
                "name",
                format!("the organization name is longer than {} characters", Self::MAX_CHARS),
            ));
        }
        check_text("name", text, TextKind::SingleLine)?;
        Ok(Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for OrgName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for OrgName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        OrgName::parse(&raw).map_err(serde::de::Error::custom)
    }
}

/// A one-line label the app chooses, such as a resource's `name` or
/// `external_id`: 1 to 256 characters, kept as given, under the
/// single-line text rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Label(String);

impl Label {
    pub const MAX_CHARS: usize = 256;

    /// `param` names the field in the error.
    pub fn parse(param: &str, raw: &str) -> Result<Self, DomainError> {
        if raw.is_empty() || raw.chars().count() > Self::MAX_CHARS {
            return Err(DomainError::invalid(param, format!("{param} must be 1 to {} characters", Self::MAX_CHARS)));
        }
        check_text(param, raw, TextKind::SingleLine)?;
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl<'de> Deserialize<'de> for Label {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // The field's name is in the error's param.
        let raw = String::deserialize(d)?;
        Label::parse("the value", &raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn emails_are_trimmed_and_lower_cased() {
        assert_eq!(Email::parse("  Dr.Smith@Clinic.Example ").expect("valid").as_str(), "dr.smith@clinic.example");
    }

    #[test]
    fn malformed_emails_are_refused() {
        for bad in ["", "a", "a@", "@b.c", "a@b", "a@@b.c", "a b@c.d", "a@.b.c", "a@b..c", "a@b.c."] {
            assert!(Email::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn org_names_must_hold_something_printable() {
        assert_eq!(OrgName::parse("  Downtown Clinic ").expect("valid").as_str(), "Downtown Clinic");
        assert!(OrgName::parse("   ").is_err());
        assert!(OrgName::parse(&"x".repeat(101)).is_err());
        assert!(OrgName::parse("a\u{0}b").is_err());
    }

    #[test]
    fn the_text_rule_refuses_nul_and_control_characters() {
        for bad in ["a\u{0}b", "\u{1}", "x\u{1b}[31m", "\u{7f}", "\u{85}", "\u{9f}"] {
            assert!(forbidden_char(bad, TextKind::SingleLine).is_some(), "{bad:?}");
            assert!(forbidden_char(bad, TextKind::MultiLine).is_some(), "{bad:?}");
        }
        for line_break in ["a\tb", "a\nb", "a\r\nb"] {
            assert!(forbidden_char(line_break, TextKind::SingleLine).is_some(), "{line_break:?}");
            assert_eq!(forbidden_char(line_break, TextKind::MultiLine), None, "{line_break:?}");
        }
        for fine in ["", "Downtown Clinic", "Zürich — 東京 🏥", "\u{a0}non-breaking", "\u{200b}"] {
            assert_eq!(forbidden_char(fine, TextKind::SingleLine), None, "{fine:?}");
        }
        let err = check_text("name", "a\u{0}", TextKind::SingleLine);
        assert!(matches!(&err, Err(DomainError::InvalidRequest { param: Some(p), message })
            if p == "name" && message.contains("U+0000")));
    }

    #[test]
    fn labels_are_one_line_of_1_to_256_characters() {
        assert_eq!(Label::parse("name", " Ünïcode ok ").expect("valid").as_str(), " Ünïcode ok ");
        assert!(Label::parse("name", "").is_err());
        assert!(Label::parse("name", &"é".repeat(256)).is_ok());
        assert!(Label::parse("name", &"é".repeat(257)).is_err());
        assert!(Label::parse("external_id", "a\nb").is_err());
        assert!(Label::parse("external_id", "a\u{0}b").is_err());
    }

    #[test]
    fn stripping_keeps_the_printable_rest_of_a_token_name() {
        assert_eq!(strip_forbidden(" Ada\u{0} Lovelace\n").as_deref(), Some("Ada Lovelace"));
        assert_eq!(strip_forbidden("\u{0}\u{1f} "), None);
        assert_eq!(strip_forbidden("Grace").as_deref(), Some("Grace"));
    }

    proptest! {
        #[test]
        fn the_single_line_rule_is_the_multi_line_rule_without_line_breaks(text in any::<String>()) {
            let single = forbidden_char(&text, TextKind::SingleLine).is_none();
            let multi = forbidden_char(&text, TextKind::MultiLine).is_none();
            prop_assert!(!single || multi, "single-line text is valid free text");
            let without_breaks: String = text.chars().filter(|c| !matches!(c, '\t' | '\n' | '\r')).collect();
            prop_assert_eq!(multi, forbidden_char(&without_breaks, TextKind::SingleLine).is_none());
        }

        #[test]
        fn stripped_text_always_passes_the_rule(text in any::<String>()) {
            if let Some(kept) = strip_forbidden(&text) {
                prop_assert_eq!(forbidden_char(&kept, TextKind::SingleLine), None);
                prop_assert!(!kept.is_empty());
            }
        }

        #[test]
        fn org_names_and_labels_follow_the_rule(text in any::<String>()) {
            if OrgName::parse(&text).is_ok() || Label::parse("name", &text).is_ok() {
                prop_assert_eq!(forbidden_char(&text, TextKind::SingleLine), None);
            }
        }
    }
}
