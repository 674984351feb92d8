//! API keys as the domain sees them: the scope of a server key (`sk_…`),
//! the scopes an app gives an org key (`ok_…`), and whether a key is
//! usable at a given moment. No hashing or storage here.

use std::fmt;

use crate::{DomainError, Timestamp};

/// What a server key may do. Ordered: `Read < Write < Admin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KeyScope {
    /// Only reads (GET, and the read-only POSTs `/v1/api_keys/verify` and `/check`).
    Read,
    /// Everything but managing keys and users.
    Write,
    /// Everything, including server keys and user administration.
    Admin,
}

impl KeyScope {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyScope::Read => "read",
            KeyScope::Write => "write",
            KeyScope::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Result<KeyScope, DomainError> {
        match text {
            "read" => Ok(KeyScope::Read),
            "write" => Ok(KeyScope::Write),
            "admin" => Ok(KeyScope::Admin),
            other => Err(DomainError::invalid(
                "scope",
                format!(
                    "`{}` is not a key scope; use read, write or admin",
                    other.chars().take(40).collect::<String>()
                ),
            )),
        }
    }
}

impl fmt::Display for KeyScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a key found by its hash can't be used now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRefusal {
    Revoked,
    Expired,
}

impl KeyRefusal {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyRefusal::Revoked => "revoked",
            KeyRefusal::Expired => "expired",
        }
    }
}

/// Whether a key with these dates is usable at `now`: a revoked key never
/// is; an expiring key is until (not at) its `expires_at`.
pub fn usable(revoked_at: Option<Timestamp>, expires_at: Option<Timestamp>, now: Timestamp) -> Result<(), KeyRefusal> {
    if revoked_at.is_some() {
        return Err(KeyRefusal::Revoked);
    }
    match expires_at {
        Some(at) if at <= now => Err(KeyRefusal::Expired),
        _ => Ok(()),
    }
}

/// The scopes an app gives an org key: its own names, at most 20, each 1
/// to 64 characters of letters, digits and `_ - : .`, no duplicates
/// (order kept).
pub fn parse_org_key_scopes(scopes: &[String]) -> Result<Vec<String>, DomainError> {
    if scopes.len() > 20 {
        return Err(DomainError::invalid("scopes", "at most 20 scopes per key"));
    }
    let mut out: Vec<String> = Vec::with_capacity(scopes.len());
    for (i, scope) in scopes.iter().enumerate() {
        let ok = !scope.is_empty()
            && scope.len() <= 64
            && scope.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b':' | b'.'));
        if !ok {
            return Err(DomainError::invalid(
                format!("scopes.{i}"),
                "a scope is 1 to 64 characters of letters, digits, `_`, `-`, `:` and `.`",
            ));
        }
        if out.contains(scope) {
            return Err(DomainError::invalid(format!("scopes.{i}"), format!("`{scope}` is listed twice")));
        }
        out.push(scope.clone());
    }
    Ok(out)
}

/// A key's name: 1 to 100 characters once trimmed.
pub fn parse_key_name(name: &str) -> Result<String, DomainError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(DomainError::invalid("name", "a key's name is 1 to 100 characters"));
    }
    Ok(name.to_owned())
}

/// A lifetime written `90d`, `12h` or `30m` (a whole number, then the
/// unit), 1 minute to 10 years.
pub fn parse_lifetime(text: &str) -> Result<time::Duration, DomainError> {
    let refuse = || {
        DomainError::invalid(
            "expires_in",
            format!("`{}` is not a lifetime; write e.g. 90d, 12h or 30m", text.chars().take(40).collect::<String>()),
        )
    };
    let text = text.trim();
    let (number, unit) = text.split_at(text.len().saturating_sub(1));
    let n: i64 = number.parse().map_err(|_| refuse())?;
    let lifetime = match unit {
        "d" => time::Duration::days(n),
        "h" => time::Duration::hours(n),
        "m" => time::Duration::minutes(n),
        _ => return Err(refuse()),
    };
    if lifetime < time::Duration::minutes(1) || lifetime > time::Duration::days(3660) {
        return Err(DomainError::invalid("expires_in", "a key lives from 1 minute to 10 years"));
    }
    Ok(lifetime)
}

/// An expiry given by a caller must lie ahead of `now`.
pub fn check_expiry(expires_at: Option<Timestamp>, now: Timestamp) -> Result<(), DomainError> {
    match expires_at {
        Some(at) if at <= now => {
            Err(DomainError::invalid("expires_at", "expires_at is in the past; give a time ahead, or leave it out"))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn scopes_parse_and_order() {
        for s in [KeyScope::Read, KeyScope::Write, KeyScope::Admin] {
            assert_eq!(KeyScope::parse(s.as_str()), Ok(s));
        }
        assert!(KeyScope::parse("root").is_err());
        assert!(KeyScope::Read < KeyScope::Write && KeyScope::Write < KeyScope::Admin);
    }

    #[test]
    fn a_key_is_usable_until_its_expiry_and_never_once_revoked() {
        let now = datetime!(2026-01-01 00:00 UTC);
        assert_eq!(usable(None, None, now), Ok(()));
        assert_eq!(usable(None, Some(now + time::Duration::seconds(1)), now), Ok(()));
        assert_eq!(usable(None, Some(now), now), Err(KeyRefusal::Expired));
        assert_eq!(usable(Some(now), None, now), Err(KeyRefusal::Revoked));
    }

    #[test]
    fn lifetimes_are_a_number_and_a_unit() {
        assert_eq!(parse_lifetime("90d"), Ok(time::Duration::days(90)));
        assert_eq!(parse_lifetime("12h"), Ok(time::Duration::hours(12)));
        assert_eq!(parse_lifetime("30m"), Ok(time::Duration::minutes(30)));
        for bad in ["", "d", "90", "-1d", "0m", "1y", "99999d", "1.5d"] {
            assert!(parse_lifetime(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn org_key_scopes_are_names_listed_once() {
        let ok = parse_org_key_scopes(&["invoices:read".into(), "reports.write".into()]).expect("valid");
        assert_eq!(ok, ["invoices:read", "reports.write"]);
        let dup = parse_org_key_scopes(&["a".into(), "a".into()]).expect_err("twice");
        assert!(matches!(dup, DomainError::InvalidRequest { param: Some(p), .. } if p == "scopes.1"));
        assert!(parse_org_key_scopes(&["has space".into()]).is_err());
        assert!(parse_org_key_scopes(&[String::new()]).is_err());
        assert!(parse_org_key_scopes(&vec!["x".to_owned(); 21]).is_err());
    }
}
