//! Typed, prefixed, time-sortable identifiers (`org_…`, `usr_…`).
//!
//! Each id is a UUIDv7 printed as 26 characters of Crockford base32 behind a
//! type prefix. Base32 keeps the byte order, so ids sort by creation time as
//! strings too, which is what cursor pagination relies on. A function taking
//! an `OrgId` can't be handed a `UserId`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// Encodes 128 bits as 26 base32 characters (the first carries 3 bits).
fn encode(value: u128) -> String {
    let mut out = [0u8; 26];
    for (i, slot) in out.iter_mut().enumerate() {
        let shift = 5 * (25 - i);
        *slot = ALPHABET[((value >> shift) & 0x1f) as usize];
    }
    String::from_utf8(out.to_vec()).expect("alphabet is ASCII")
}

fn decode(text: &str) -> Option<u128> {
    if text.len() != 26 {
        return None;
    }
    let mut value: u128 = 0;
    for (i, c) in text.bytes().enumerate() {
        let digit = ALPHABET.iter().position(|&a| a == c)? as u128;
        if i == 0 && digit > 7 {
            return None; // would overflow 128 bits
        }
        value = (value << 5) | digit;
    }
    Some(value)
}

/// The reason a string is not an id of the expected type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{value}` is not a valid {kind} id (expected `{prefix}_` followed by 26 base32 characters)")]
pub struct IdParseError {
    pub kind: &'static str,
    pub prefix: &'static str,
    pub value: String,
}

macro_rules! typed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(u128);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            /// A new id, ordered after every id made before it in this process.
            pub fn new() -> Self {
                Self(uuid::Uuid::now_v7().as_u128())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}_{}", $prefix, encode(self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self, f)
            }
        }

        impl FromStr for $name {
            type Err = IdParseError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                s.strip_prefix(concat!($prefix, "_"))
                    .and_then(decode)
                    .map(Self)
                    .ok_or_else(|| IdParseError {
                        kind: $kind,
                        prefix: $prefix,
                        value: s.chars().take(64).collect(),
                    })
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

typed_id!(
    /// A user: an identity from an external issuer.
    UserId, "usr", "user");
typed_id!(
    /// An organization, personal or team.
    OrgId, "org", "organization");
typed_id!(
    /// A pending or settled invitation.
    InvitationId, "inv", "invitation");
typed_id!(
    /// An org's subscription.
    SubscriptionId, "sub", "subscription");
typed_id!(
    /// A counted resource of the app's.
    ResourceId, "res", "resource");
typed_id!(
    /// A committed state change.
    EventId, "evt", "event");
typed_id!(
    /// A server API key.
    ApiKeyId, "key", "API key");
typed_id!(
    /// An org API key (`ok_…` is the secret; this is its id).
    OrgApiKeyId, "oky", "org API key");
typed_id!(
    /// A stored provider webhook.
    ProviderEventId, "pev", "provider event");
typed_id!(
    /// A portal session: a single-use link, then the browser session it opened.
    PortalSessionId, "ps", "portal session");
typed_id!(
    /// An outgoing webhook endpoint of the app's.
    WebhookEndpointId, "whe", "webhook endpoint");
typed_id!(
    /// One event's delivery to one webhook endpoint.
    DeliveryId, "dlv", "webhook delivery");
typed_id!(
    /// A provider subscription found by discovery that no org holds yet.
    UnlinkedSubscriptionId, "uls", "unlinked subscription");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_their_text() {
        let id = OrgId::new();
        let text = id.to_string();
        assert!(text.starts_with("org_"));
        assert_eq!(text.len(), 4 + 26);
        assert_eq!(text.parse::<OrgId>().expect("parses"), id);
    }

    #[test]
    fn ids_sort_by_creation_as_strings() {
        let ids: Vec<String> = (0..200).map(|_| UserId::new().to_string()).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
    }

    #[test]
    fn an_id_of_another_type_is_refused() {
        let user = UserId::new().to_string();
        let err = user.parse::<OrgId>().expect_err("wrong prefix");
        assert_eq!(err.kind, "organization");
        assert!("org_".parse::<OrgId>().is_err());
        assert!("org_zzzzzzzzzzzzzzzzzzzzzzzzzz".parse::<OrgId>().is_err());
        assert!("org_0000000000000000000000000I".parse::<OrgId>().is_err());
    }
}
