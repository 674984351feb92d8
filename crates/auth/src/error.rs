//! Why a bearer token was refused, in words a caller can act on.
//!
//! Every message says what is wrong and what to do about it. Messages never
//! echo the token itself, nor anything that only a verified token could vouch
//! for: they are shown to whoever sent the request.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A token was refused, or could not be checked.
///
/// All variants but [`AuthError::JwksUnavailable`] and
/// [`AuthError::KeyNotYetFetched`] are the caller's problem (HTTP 401);
/// those two mean the token may be fine and the caller may retry (HTTP 503,
/// after [`AuthError::retry_after_secs`] when known).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The token is not a compact JWS with JSON header and claims, or lacks a
    /// claim orgplane needs to check it.
    #[error(
        "the bearer token is not a well-formed JWT ({0}); send the access token your identity provider issued, unmodified"
    )]
    Malformed(&'static str),
    /// `alg` is not one of RS256, ES256 or EdDSA (this covers `none` and HS*).
    #[error(
        "tokens signed with `{0}` are not accepted; orgplane accepts RS256, ES256 and EdDSA tokens from the configured identity providers"
    )]
    UnsupportedAlgorithm(String),
    /// The header's `alg` differs from the algorithm of the key it names.
    #[error(
        "the token says it is signed with `{alg}` but its key `{kid}` is a {key_alg} key; the token was not issued by this identity provider"
    )]
    AlgorithmMismatch { alg: String, kid: String, key_alg: &'static str },
    /// No `[[auth.issuers]]` entry has this exact `iss`.
    #[error(
        "tokens issued by `{0}` are not accepted here; use a token from a configured identity provider, or add this issuer under [[auth.issuers]]"
    )]
    UnknownIssuer(String),
    /// The issuer publishes no key with this `kid` (or, for a token without a
    /// `kid`, no single key for its algorithm).
    #[error("{}", unknown_key_message(kid.as_deref()))]
    UnknownKey { kid: Option<String> },
    /// The signature does not verify with the issuer's key.
    #[error(
        "the token's signature is invalid; it was altered or not issued by this identity provider, so get a fresh token"
    )]
    BadSignature,
    /// `exp` (plus leeway) has passed.
    #[error("the token expired at {}; get a fresh token from your identity provider", rfc3339(*expired_at))]
    Expired { expired_at: i64 },
    /// `nbf` is later than now (plus leeway).
    #[error("the token is not valid before {}; check that the clocks of this server and of the identity provider agree", rfc3339(*not_before))]
    NotYetValid { not_before: i64 },
    /// `aud` names none of the audiences configured for the issuer.
    #[error(
        "the token was issued for another audience (`aud`); request a token whose audience is this orgplane deployment"
    )]
    WrongAudience,
    /// The token carries no usable `iss` claim to say who issued it.
    #[error("the token has no `iss` claim naming its issuer; use a token from a configured identity provider")]
    WrongIssuer,
    /// `sub` is missing or empty.
    #[error("the token has no `sub` claim identifying the user; use a user access token from your identity provider")]
    MissingSubject,
    /// The token names a key that was not in the issuer's JWKS when it was
    /// fetched, less than `jwks_refresh_min_interval` ago: the issuer may
    /// have rotated its keys since, and the keys may be fetched again after
    /// `retry_after_secs`.
    #[error(
        "the identity provider did not publish signing key `{kid}` when its keys were last fetched, a moment ago; if it has just rotated its keys, retry after {retry_after_secs} s"
    )]
    KeyNotYetFetched { kid: String, retry_after_secs: u64 },
    /// The issuer's JWKS could not be fetched or used.
    #[error("the identity provider's signing keys could not be fetched ({0}); retry in a moment")]
    JwksUnavailable(String),
}

impl AuthError {
    /// When to retry, for the errors a retry may cure, if known.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            AuthError::KeyNotYetFetched { retry_after_secs, .. } => Some(*retry_after_secs),
            _ => None,
        }
    }

    /// Whether the token may be fine and the request worth retrying (503).
    pub fn is_retryable(&self) -> bool {
        matches!(self, AuthError::JwksUnavailable(_) | AuthError::KeyNotYetFetched { .. })
    }
}

fn unknown_key_message(kid: Option<&str>) -> String {
    match kid {
        Some(kid) => format!(
            "the identity provider publishes no signing key `{kid}`; the key may have been retired, so get a fresh token"
        ),
        None => "the token names no key (`kid`) and the identity provider publishes several keys for its algorithm; \
                 use a token whose header has a `kid`"
            .to_owned(),
    }
}

/// A unix time as RFC 3339, or as the raw number when it is out of range.
fn rfc3339(unix: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|at| at.format(&Rfc3339).ok())
        .unwrap_or_else(|| format!("unix time {unix}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expired_message_names_the_time_and_the_fix() {
        let message = AuthError::Expired { expired_at: 1_790_000_000 }.to_string();
        assert_eq!(message, "the token expired at 2026-09-21T14:13:20Z; get a fresh token from your identity provider");
    }

    #[test]
    fn unknown_key_message_covers_tokens_without_kid() {
        assert!(AuthError::UnknownKey { kid: Some("k1".into()) }.to_string().contains("`k1`"));
        assert!(AuthError::UnknownKey { kid: None }.to_string().contains("names no key"));
    }
}
