//! Outgoing webhooks' rules: which events an endpoint subscribes to, what
//! makes a target URL acceptable, and when a failed delivery is tried again.
//!
//! Pure: no I/O and no clock. Resolving a host name and sending are the
//! server's; it hands the addresses it got to [`forbidden_address`].

use std::net::IpAddr;

use crate::DomainError;

/// The event types an endpoint takes: exact names (`org.updated`) and
/// prefixes (`subscription.*`); empty = every event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EventTypeFilter {
    patterns: Vec<String>,
}

/// The most patterns one endpoint may list.
pub const MAX_EVENT_TYPES: usize = 100;

impl EventTypeFilter {
    /// Every event.
    pub fn all() -> Self {
        EventTypeFilter::default()
    }

    /// Parses the `event_types` of a request: each an event name of
    /// lower-case letters, digits, `_` and `.`, or such a prefix followed by
    /// `.*`; `["*"]` and `[]` mean every event.
    pub fn parse(patterns: &[String]) -> Result<Self, DomainError> {
        if patterns.len() > MAX_EVENT_TYPES {
            return Err(DomainError::invalid(
                "event_types",
                format!("at most {MAX_EVENT_TYPES} event types per endpoint; use prefixes such as `subscription.*`"),
            ));
        }
        let mut out: Vec<String> = Vec::with_capacity(patterns.len());
        for pattern in patterns {
            if pattern == "*" {
                return Ok(EventTypeFilter::all());
            }
            let name = pattern.strip_suffix(".*").unwrap_or(pattern);
            let valid = !name.is_empty()
                && name.len() <= 100
                && !name.starts_with('.')
                && !name.ends_with('.')
                && !name.contains("..")
                && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.');
            if !valid {
                return Err(DomainError::invalid(
                    "event_types",
                    format!(
                        "`{}` is not an event type: use an exact name such as `org.updated` or a prefix such as `subscription.*`",
                        pattern.chars().take(100).collect::<String>()
                    ),
                ));
            }
            if !out.contains(pattern) {
                out.push(pattern.clone());
            }
        }
        Ok(EventTypeFilter { patterns: out })
    }

    /// The patterns as given (empty: every event).
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    /// Whether an event of type `kind` goes to the endpoint.
    pub fn matches(&self, kind: &str) -> bool {
        self.patterns.is_empty()
            || self.patterns.iter().any(|p| match p.strip_suffix(".*") {
                Some(prefix) => {
                    kind.len() > prefix.len() + 1 && kind.starts_with(prefix) && kind.as_bytes()[prefix.len()] == b'.'
                }
                None => p == kind,
            })
    }
}

/// Whether an endpoint (limited to `endpoint_org`, if any) takes an event
/// of type `kind` about `event_org`. An endpoint limited to one org takes
/// only that org's events; events about no org go to unlimited endpoints.
pub fn endpoint_takes(
    filter: &EventTypeFilter,
    endpoint_org: Option<&str>,
    kind: &str,
    event_org: Option<&str>,
) -> bool {
    let org_ok = match endpoint_org {
        None => true,
        Some(org) => event_org == Some(org),
    };
    org_ok && filter.matches(kind)
}

/// Why a target address is refused: loopback, private, link-local,
/// unspecified, or another address no public receiver has (`None`: fine).
pub fn forbidden_address(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            if v4.is_loopback() {
                Some("a loopback address")
            } else if v4.is_private() || (a == 100 && (64..128).contains(&b)) {
                Some("a private address")
            } else if v4.is_link_local() {
                Some("a link-local address")
            } else if v4.is_unspecified() || a == 0 {
                Some("an unspecified address")
            } else if v4.is_broadcast() || v4.is_multicast() || a >= 240 {
                Some("a broadcast, multicast or reserved address")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return forbidden_address(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            if v6.is_loopback() {
                Some("a loopback address")
            } else if v6.is_unspecified() {
                Some("an unspecified address")
            } else if first & 0xfe00 == 0xfc00 {
                Some("a private address")
            } else if first & 0xffc0 == 0xfe80 {
                Some("a link-local address")
            } else if v6.is_multicast() {
                Some("a broadcast, multicast or reserved address")
            } else {
                None
            }
        }
    }
}

/// When the next attempt of a delivery goes out, as a delay in seconds,
/// after its `failures`-th failed attempt in a row (1 = the first): the
/// schedule's entry scaled by `jitter` (a factor the caller draws from
/// 0.8 to 1.2). `None`: the schedule is used up and the delivery fails.
pub fn retry_delay_secs(schedule: &[u64], failures: u32, jitter: f64) -> Option<f64> {
    let index = usize::try_from(failures).ok()?.checked_sub(1)?;
    schedule.get(index).map(|secs| *secs as f64 * jitter.clamp(0.8, 1.2))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(patterns: &[&str]) -> EventTypeFilter {
        EventTypeFilter::parse(&patterns.iter().map(|p| p.to_string()).collect::<Vec<_>>()).expect("valid")
    }

    #[test]
    fn prefixes_match_whole_segments_and_exact_names_match_only_themselves() {
        let f = filter(&["subscription.*", "org.updated"]);
        assert!(f.matches("subscription.created"));
        assert!(f.matches("subscription.status.changed"));
        assert!(!f.matches("subscriptions.created"));
        assert!(!f.matches("subscription"));
        assert!(f.matches("org.updated"));
        assert!(!f.matches("org.created"));
        assert!(filter(&[]).matches("anything.at_all"));
        assert!(filter(&["*"]).matches("member.removed"));
    }

    #[test]
    fn malformed_event_types_are_refused_naming_the_field() {
        for bad in ["", ".*", "Org.Updated", "org..x", "org.", "a b", "sub.*.*"] {
            let err = EventTypeFilter::parse(&[bad.to_owned()]).expect_err(bad);
            assert!(
                matches!(err, DomainError::InvalidRequest { ref param, .. } if param.as_deref() == Some("event_types")),
                "{bad}: {err:?}"
            );
        }
    }

    #[test]
    fn an_org_limited_endpoint_takes_only_that_orgs_events() {
        let all = EventTypeFilter::all();
        assert!(endpoint_takes(&all, Some("org_a"), "org.updated", Some("org_a")));
        assert!(!endpoint_takes(&all, Some("org_a"), "org.updated", Some("org_b")));
        assert!(!endpoint_takes(&all, Some("org_a"), "user.created", None));
        assert!(endpoint_takes(&all, None, "user.created", None));
    }

    #[test]
    fn private_loopback_link_local_and_unspecified_addresses_are_refused() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(forbidden_address(ip.parse().expect("ip")).is_some(), "{ip}");
        }
        for ip in ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111"] {
            assert_eq!(forbidden_address(ip.parse().expect("ip")), None, "{ip}");
        }
    }

    #[test]
    fn retries_follow_the_schedule_within_the_jitter_and_then_stop() {
        let schedule = [5, 300];
        assert_eq!(retry_delay_secs(&schedule, 1, 1.0), Some(5.0));
        assert_eq!(retry_delay_secs(&schedule, 2, 1.2), Some(360.0));
        assert_eq!(retry_delay_secs(&schedule, 2, 5.0), Some(360.0), "jitter is bounded");
        assert_eq!(retry_delay_secs(&schedule, 3, 1.0), None);
        assert_eq!(retry_delay_secs(&schedule, 0, 1.0), None);
    }
}
