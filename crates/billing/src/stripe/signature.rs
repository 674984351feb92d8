//! Stripe webhook signatures (`Stripe-Signature: t=…,v1=…`), exactly as
//! Stripe's SDKs check them.
//!
//! This module owns the check and a signer for tests and benches. It must
//! never compare signatures in variable time, accept a scheme other than
//! `v1`, or look at the body before the signature holds.

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::{Choice, ConstantTimeEq};

use crate::error::SignatureError;

/// The header Stripe signs deliveries with.
pub const HEADER: &str = "Stripe-Signature";

/// How far a delivery's timestamp may be from now: 300 s in every official SDK.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

/// Verifies a delivery: the header's `t` and any of its `v1` signatures must
/// be HMAC-SHA256(key = a whole `whsec_…` secret, msg = `"<t>." + payload`)
/// for one of `secrets` (several during a secret roll), and `t` must be
/// within `tolerance` of `now_unix`, in the past or the future.
///
/// `payload` is the raw request body, byte for byte: re-serialized JSON
/// does not verify.
pub fn verify(
    payload: &[u8],
    header: &str,
    secrets: &[String],
    tolerance: Duration,
    now_unix: i64,
) -> Result<(), SignatureError> {
    let secrets: Vec<&str> = secrets.iter().map(String::as_str).filter(|s| !s.is_empty()).collect();
    if secrets.is_empty() {
        return Err(SignatureError::NoSecretConfigured);
    }
    let header = header.trim();
    if header.is_empty() {
        return Err(SignatureError::MissingHeader);
    }
    let parsed = ParsedHeader::parse(header);
    let timestamp = parsed.timestamp.ok_or(SignatureError::MissingTimestamp)?;
    if parsed.v1_count == 0 {
        return Err(SignatureError::NoV1Signature);
    }

    // Every (secret, signature) pair is compared, whatever matched before, so
    // the time taken says nothing about which one matched.
    let mut matched = Choice::from(0);
    for secret in &secrets {
        let expected = compute(payload, secret, timestamp);
        for candidate in &parsed.v1 {
            matched |= expected.as_slice().ct_eq(candidate.as_slice());
        }
    }
    if !bool::from(matched) {
        return Err(SignatureError::NoMatch);
    }

    let age = now_unix.saturating_sub(timestamp);
    if age.unsigned_abs() > tolerance.as_secs() {
        return Err(SignatureError::OutsideTolerance { age_secs: age, tolerance_secs: tolerance.as_secs() });
    }
    Ok(())
}

/// A `Stripe-Signature` header value for `payload`, as Stripe would send it.
pub fn sign(payload: &[u8], secret: &str, timestamp: i64) -> String {
    format!("t={timestamp},v1={}", hex::encode(compute(payload, secret, timestamp)))
}

fn compute(payload: &[u8], secret: &str, timestamp: i64) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(payload);
    mac.finalize().into_bytes().to_vec()
}

/// The parts of the header Stripe's SDKs read: the first `t`, and every
/// `v1` (decoded; one that is not hex can't match and is kept out).
struct ParsedHeader {
    timestamp: Option<i64>,
    v1: Vec<Vec<u8>>,
    v1_count: usize,
}

impl ParsedHeader {
    fn parse(header: &str) -> Self {
        let mut parsed = ParsedHeader { timestamp: None, v1: Vec::new(), v1_count: 0 };
        for item in header.split(',') {
            let Some((key, value)) = item.split_once('=') else { continue };
            match key.trim() {
                "t" if parsed.timestamp.is_none() => parsed.timestamp = value.trim().parse().ok(),
                "v1" => {
                    parsed.v1_count += 1;
                    if let Ok(bytes) = hex::decode(value.trim()) {
                        parsed.v1.push(bytes);
                    }
                }
                _ => {} // v0 and future schemes are ignored, as Stripe's SDKs do.
            }
        }
        parsed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000;

    fn secrets(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn a_signed_payload_verifies_and_round_trips() {
        let header = sign(b"{}", "whsec_a", NOW);
        assert!(header.starts_with(&format!("t={NOW},v1=")));
        assert_eq!(verify(b"{}", &header, &secrets(&["whsec_a"]), DEFAULT_TOLERANCE, NOW), Ok(()));
    }

    #[test]
    fn no_configured_secret_is_a_configuration_error() {
        let header = sign(b"{}", "", NOW);
        let err = verify(b"{}", &header, &secrets(&[""]), DEFAULT_TOLERANCE, NOW).expect_err("no secret");
        assert_eq!(err, SignatureError::NoSecretConfigured);
    }

    #[test]
    fn a_header_without_timestamp_or_v1_is_refused() {
        let s = secrets(&["whsec_a"]);
        assert_eq!(verify(b"{}", "", &s, DEFAULT_TOLERANCE, NOW), Err(SignatureError::MissingHeader));
        assert_eq!(verify(b"{}", "v1=00", &s, DEFAULT_TOLERANCE, NOW), Err(SignatureError::MissingTimestamp));
        assert_eq!(verify(b"{}", "t=abc,v1=00", &s, DEFAULT_TOLERANCE, NOW), Err(SignatureError::MissingTimestamp));
        assert_eq!(verify(b"{}", &format!("t={NOW}"), &s, DEFAULT_TOLERANCE, NOW), Err(SignatureError::NoV1Signature));
        assert_eq!(
            verify(b"{}", &format!("t={NOW},v1=not-hex"), &s, DEFAULT_TOLERANCE, NOW),
            Err(SignatureError::NoMatch)
        );
    }

    #[test]
    fn a_timestamp_too_far_ahead_is_refused() {
        let header = sign(b"{}", "whsec_a", NOW + 301);
        let err = verify(b"{}", &header, &secrets(&["whsec_a"]), DEFAULT_TOLERANCE, NOW).expect_err("future");
        assert_eq!(err, SignatureError::OutsideTolerance { age_secs: -301, tolerance_secs: 300 });
        let header = sign(b"{}", "whsec_a", NOW + 300);
        assert_eq!(verify(b"{}", &header, &secrets(&["whsec_a"]), DEFAULT_TOLERANCE, NOW), Ok(()));
    }
}
