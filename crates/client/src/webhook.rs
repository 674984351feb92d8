//! `verify_webhook`: Standard Webhooks (https://www.standardwebhooks.com).
//! orgplane signs `"{webhook-id}.{webhook-timestamp}.{body}"` with
//! HMAC-SHA256 keyed by the base64-decoded secret after `whsec_`, and sends
//! `webhook-signature: v1,<base64>` (several space-separated entries while a
//! secret is rotated). Verify the raw body, exactly as received.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use reqwest::header::HeaderMap;
use sha2::Sha256;

use crate::types::Event;

/// The standard's tolerance between the delivery's timestamp and now.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

/// Why a delivery was refused; answer it with 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error("the `{0}` header is missing")]
    MissingHeader(&'static str),
    #[error("`webhook-timestamp` is not unix seconds")]
    InvalidTimestamp,
    #[error("the delivery is {0} s old (tolerance {1} s)")]
    TimestampTooOld(u64, u64),
    #[error("the delivery is dated {0} s ahead (tolerance {1} s)")]
    TimestampTooNew(u64, u64),
    #[error("no `v1` signature matches the body with the given secret(s)")]
    NoMatchingSignature,
    #[error("the webhook secret is not `whsec_` followed by base64")]
    InvalidSecret,
    #[error("the signed body is not an orgplane event: {0}")]
    InvalidBody(String),
}

/// Verifies an orgplane webhook delivery against now and the standard's
/// 5-minute tolerance, and returns its event. `secrets`: the endpoint's
/// `whsec_…` secret, or several during a rotation (any one may match).
pub fn verify_webhook(secrets: &[&str], headers: &HeaderMap, body: &[u8]) -> Result<Event, WebhookError> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    verify_webhook_at(secrets, headers, body, now, DEFAULT_TOLERANCE)
}

/// [`verify_webhook`] at `now` (unix seconds) with a tolerance of your choice.
pub fn verify_webhook_at(
    secrets: &[&str],
    headers: &HeaderMap,
    body: &[u8],
    now: u64,
    tolerance: Duration,
) -> Result<Event, WebhookError> {
    let header = |name: &'static str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .ok_or(WebhookError::MissingHeader(name))
    };
    let id = header("webhook-id")?;
    let timestamp = header("webhook-timestamp")?;
    let signature = header("webhook-signature")?;
    if timestamp.is_empty() || timestamp.len() > 15 || !timestamp.bytes().all(|b| b.is_ascii_digit()) {
        return Err(WebhookError::InvalidTimestamp);
    }
    let sent: u64 = timestamp.parse().map_err(|_| WebhookError::InvalidTimestamp)?;
    let tolerance = tolerance.as_secs();
    if sent + tolerance < now {
        return Err(WebhookError::TimestampTooOld(now - sent, tolerance));
    }
    if sent > now + tolerance {
        return Err(WebhookError::TimestampTooNew(sent - now, tolerance));
    }
    if secrets.is_empty() {
        return Err(WebhookError::InvalidSecret);
    }
    let candidates: Vec<Vec<u8>> = signature
        .split(' ')
        .filter_map(|entry| entry.split_once(','))
        .filter(|(version, _)| *version == "v1")
        .filter_map(|(_, sig)| STANDARD.decode(sig).ok())
        .collect();
    let mut matched = false;
    for secret in secrets {
        let key = STANDARD
            .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
            .map_err(|_| WebhookError::InvalidSecret)?;
        if key.is_empty() {
            return Err(WebhookError::InvalidSecret);
        }
        for candidate in &candidates {
            let mut mac = Hmac::<Sha256>::new_from_slice(&key).map_err(|_| WebhookError::InvalidSecret)?;
            mac.update(id.as_bytes());
            mac.update(b".");
            mac.update(timestamp.as_bytes());
            mac.update(b".");
            mac.update(body);
            // verify_slice compares in constant time.
            matched |= mac.verify_slice(candidate).is_ok();
        }
    }
    if !matched {
        return Err(WebhookError::NoMatchingSignature);
    }
    serde_json::from_slice(body).map_err(|e| WebhookError::InvalidBody(e.to_string()))
}

/// Signs `body` as orgplane does: the `webhook-signature` value
/// (`v1,<base64>`) for `id` and `timestamp`. For tests of your own handler.
pub fn sign_webhook(secret: &str, id: &str, timestamp: u64, body: &[u8]) -> Result<String, WebhookError> {
    let key =
        STANDARD.decode(secret.strip_prefix("whsec_").unwrap_or(secret)).map_err(|_| WebhookError::InvalidSecret)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).map_err(|_| WebhookError::InvalidSecret)?;
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    Ok(format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Standard Webhooks reference vector (the spec's libraries test
    /// against it): a signature computed by another implementation.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TIMESTAMP: u64 = 1_614_265_330;
    const PAYLOAD: &[u8] = br#"{"test": 2432232314}"#;
    const SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn signing_matches_the_standard_webhooks_reference_vector() {
        assert_eq!(sign_webhook(SECRET, ID, TIMESTAMP, PAYLOAD).expect("signs"), SIGNATURE);
    }

    fn headers(id: &str, timestamp: &str, signature: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("webhook-id", id.parse().expect("header"));
        h.insert("webhook-timestamp", timestamp.parse().expect("header"));
        h.insert("webhook-signature", signature.parse().expect("header"));
        h
    }

    fn event_body() -> Vec<u8> {
        br#"{"id":"evt_1","org_id":"org_1","type":"subscription.updated","actor":"system","data":{},"created_at":"2026-01-01T00:00:00Z"}"#.to_vec()
    }

    #[test]
    fn a_signed_delivery_verifies_and_yields_its_event() {
        let body = event_body();
        let sig = sign_webhook(SECRET, "evt_1", TIMESTAMP, &body).expect("signs");
        let event =
            verify_webhook_at(&[SECRET], &headers("evt_1", "1614265330", &sig), &body, TIMESTAMP, DEFAULT_TOLERANCE)
                .expect("verifies");
        assert_eq!(event.kind, "subscription.updated");
        assert_eq!(event.org_id.as_deref(), Some("org_1"));
    }

    #[test]
    fn any_secret_of_a_rotation_and_any_signature_entry_may_match() {
        let body = event_body();
        let old = "whsec_c2VjcmV0LW9uZS1zZWNyZXQtb25l";
        let sig = sign_webhook(SECRET, "evt_1", TIMESTAMP, &body).expect("signs");
        let other = sign_webhook(old, "evt_1", TIMESTAMP, &body).expect("signs");
        let h = headers("evt_1", "1614265330", &format!("{other} {sig}"));
        assert!(verify_webhook_at(&[SECRET], &h, &body, TIMESTAMP, DEFAULT_TOLERANCE).is_ok());
        let h = headers("evt_1", "1614265330", &sig);
        assert!(verify_webhook_at(&[old, SECRET], &h, &body, TIMESTAMP, DEFAULT_TOLERANCE).is_ok());
        assert_eq!(
            verify_webhook_at(&[old], &h, &body, TIMESTAMP, DEFAULT_TOLERANCE),
            Err(WebhookError::NoMatchingSignature)
        );
    }

    #[test]
    fn tampering_staleness_and_missing_headers_are_refused_with_their_reason() {
        let body = event_body();
        let sig = sign_webhook(SECRET, "evt_1", TIMESTAMP, &body).expect("signs");
        let h = headers("evt_1", "1614265330", &sig);
        let mut tampered = body.clone();
        tampered[10] ^= 1;
        assert_eq!(
            verify_webhook_at(&[SECRET], &h, &tampered, TIMESTAMP, DEFAULT_TOLERANCE),
            Err(WebhookError::NoMatchingSignature)
        );
        assert_eq!(
            verify_webhook_at(&[SECRET], &headers("evt_2", "1614265330", &sig), &body, TIMESTAMP, DEFAULT_TOLERANCE),
            Err(WebhookError::NoMatchingSignature),
            "the id is signed too"
        );
        assert_eq!(
            verify_webhook_at(&[SECRET], &h, &body, TIMESTAMP + 301, DEFAULT_TOLERANCE),
            Err(WebhookError::TimestampTooOld(301, 300))
        );
        assert_eq!(
            verify_webhook_at(&[SECRET], &h, &body, TIMESTAMP - 301, DEFAULT_TOLERANCE),
            Err(WebhookError::TimestampTooNew(301, 300))
        );
        assert_eq!(
            verify_webhook_at(&[SECRET], &headers("evt_1", "soon", &sig), &body, TIMESTAMP, DEFAULT_TOLERANCE),
            Err(WebhookError::InvalidTimestamp)
        );
        let mut missing = h.clone();
        missing.remove("webhook-signature");
        assert_eq!(
            verify_webhook_at(&[SECRET], &missing, &body, TIMESTAMP, DEFAULT_TOLERANCE),
            Err(WebhookError::MissingHeader("webhook-signature"))
        );
        assert_eq!(
            verify_webhook_at(&["whsec_***"], &h, &body, TIMESTAMP, DEFAULT_TOLERANCE),
            Err(WebhookError::InvalidSecret)
        );
        // A signed body that is not an event.
        let sig = sign_webhook(SECRET, "evt_1", TIMESTAMP, b"[]").expect("signs");
        assert!(matches!(
            verify_webhook_at(&[SECRET], &headers("evt_1", "1614265330", &sig), b"[]", TIMESTAMP, DEFAULT_TOLERANCE),
            Err(WebhookError::InvalidBody(_))
        ));
    }
}
