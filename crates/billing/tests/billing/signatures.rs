//! Webhook signatures: Stripe's official vectors, secret rotation, schemes,
//! the timestamp window, tampering; Lemon Squeezy's HMAC.

use std::time::Duration;

use orgplane_billing::SignatureError;
use orgplane_billing::lemonsqueezy::signature as ls;
use orgplane_billing::stripe::signature::{self as stripe, DEFAULT_TOLERANCE};

use crate::fixtures::fixture_bytes;

const VECTOR_T: i64 = 1_533_204_620;
const VECTOR_1_V1: &str = "2220f87ef101a04665f11cdf770523143f875572008577fa0f20882ddb9cc3c7";
const VECTOR_2_PAYLOAD: &str = r#"{"account":"acct_123","api_version":"2017-05-25","created":1533204620,"data":{"object":{"amount":1000,"currency":"usd","customer":"cus_123","date":1533204620,"description":"Test Invoice Item","discountable":false,"id":"ii_123","invoice":"in_123","livemode":false,"metadata":{},"object":"invoiceitem","period":{"end":1533204620,"start":1533204620},"proration":false,"quantity":3,"quantity_decimal":"0"}},"id":"evt_123","livemode":false,"object":"event","pending_webhooks":1,"request":{"id":"req_123","idempotency_key":"idempotency-key-123"},"type":"invoiceitem.created"}"#;
const VECTOR_2_V1: &str = "d7373bc68f4bd320b253cd7461f87af6e1cdf1b4d7db1614d8d1d746972d2d0a";

fn secrets(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn stripe_official_vector_with_the_484_byte_payload_verifies() {
    let payload = fixture_bytes("stripe/signature-vector-payload.json");
    assert_eq!(payload.len(), 484, "the vector payload must be the exact bytes");
    let header = format!("t={VECTOR_T},v1={VECTOR_1_V1}");
    assert_eq!(stripe::sign(&payload, "webhook_secret", VECTOR_T), header);
    assert_eq!(stripe::verify(&payload, &header, &secrets(&["webhook_secret"]), DEFAULT_TOLERANCE, VECTOR_T), Ok(()));
}

#[test]
fn stripe_official_vector_with_the_invoiceitem_payload_verifies() {
    let header = format!("t={VECTOR_T},v1={VECTOR_2_V1}");
    assert_eq!(stripe::sign(VECTOR_2_PAYLOAD.as_bytes(), "secret", VECTOR_T), header);
    let result =
        stripe::verify(VECTOR_2_PAYLOAD.as_bytes(), &header, &secrets(&["secret"]), DEFAULT_TOLERANCE, VECTOR_T + 10);
    assert_eq!(result, Ok(()));
}

#[test]
fn during_a_secret_roll_any_v1_of_any_secret_matches() {
    let body = br#"{"id":"evt_roll"}"#;
    let old = stripe::sign(body, "whsec_old", VECTOR_T);
    let new = stripe::sign(body, "whsec_new", VECTOR_T);
    let old_v1 = old.split_once(",v1=").expect("has v1").1;
    let new_v1 = new.split_once(",v1=").expect("has v1").1;
    // Stripe sends one v1 per active secret; orgplane may know only one of them.
    let header = format!("t={VECTOR_T},v1={old_v1},v1={new_v1}");
    for configured in [&["whsec_new"][..], &["whsec_old"], &["whsec_unrelated", "whsec_new"]] {
        assert_eq!(stripe::verify(body, &header, &secrets(configured), DEFAULT_TOLERANCE, VECTOR_T), Ok(()));
    }
    // Two configured secrets, one v1: the second secret is tried too.
    assert_eq!(stripe::verify(body, &old, &secrets(&["whsec_new", "whsec_old"]), DEFAULT_TOLERANCE, VECTOR_T), Ok(()));
    let err = stripe::verify(body, &header, &secrets(&["whsec_other"]), DEFAULT_TOLERANCE, VECTOR_T)
        .expect_err("no configured secret signed it");
    assert_eq!(err, SignatureError::NoMatch);
}

#[test]
fn a_header_with_only_a_v0_signature_is_refused() {
    let payload = fixture_bytes("stripe/signature-vector-payload.json");
    // A correct HMAC, but under the v0 scheme, which Stripe's SDKs ignore.
    let header = format!("t={VECTOR_T},v0={VECTOR_1_V1}");
    let err = stripe::verify(&payload, &header, &secrets(&["webhook_secret"]), DEFAULT_TOLERANCE, VECTOR_T)
        .expect_err("v0 only");
    assert_eq!(err, SignatureError::NoV1Signature);
    // Next to a v1, a v0 changes nothing.
    let header = format!("t={VECTOR_T},v0=deadbeef,v1={VECTOR_1_V1}");
    assert_eq!(stripe::verify(&payload, &header, &secrets(&["webhook_secret"]), DEFAULT_TOLERANCE, VECTOR_T), Ok(()));
}

#[test]
fn a_stale_timestamp_is_refused_even_when_the_signature_holds() {
    let payload = fixture_bytes("stripe/signature-vector-payload.json");
    let header = format!("t={VECTOR_T},v1={VECTOR_1_V1}");
    let s = secrets(&["webhook_secret"]);
    assert_eq!(stripe::verify(&payload, &header, &s, DEFAULT_TOLERANCE, VECTOR_T + 300), Ok(()));
    let err = stripe::verify(&payload, &header, &s, DEFAULT_TOLERANCE, VECTOR_T + 301).expect_err("stale");
    assert_eq!(err, SignatureError::OutsideTolerance { age_secs: 301, tolerance_secs: 300 });
    assert!(err.to_string().contains("outside the 300 s tolerance"), "{err}");
    // A tighter tolerance is honoured.
    let err = stripe::verify(&payload, &header, &s, Duration::from_secs(5), VECTOR_T + 6).expect_err("stale");
    assert_eq!(err, SignatureError::OutsideTolerance { age_secs: 6, tolerance_secs: 5 });
}

#[test]
fn a_tampered_body_is_refused() {
    let mut payload = fixture_bytes("stripe/signature-vector-payload.json");
    let header = format!("t={VECTOR_T},v1={VECTOR_1_V1}");
    let at = payload.iter().position(|b| *b == b'1').expect("payload has a digit");
    payload[at] = b'2';
    let err = stripe::verify(&payload, &header, &secrets(&["webhook_secret"]), DEFAULT_TOLERANCE, VECTOR_T)
        .expect_err("tampered");
    assert_eq!(err, SignatureError::NoMatch);
    assert_eq!(
        err.to_string(),
        "no v1 signature matched any configured webhook secret; check the endpoint's signing secret"
    );
    // Re-signing under another timestamp doesn't help either: t is signed too.
    let moved = format!("t={},v1={VECTOR_1_V1}", VECTOR_T + 1);
    let untouched = fixture_bytes("stripe/signature-vector-payload.json");
    let err = stripe::verify(&untouched, &moved, &secrets(&["webhook_secret"]), DEFAULT_TOLERANCE, VECTOR_T)
        .expect_err("timestamp changed");
    assert_eq!(err, SignatureError::NoMatch);
}

#[test]
fn lemonsqueezy_signature_over_the_raw_body_verifies() {
    let body = br#"{"meta":{"event_name":"subscription_created"},"data":{"type":"subscriptions","id":"1"}}"#;
    let signature = ls::sign(body, "ls_signing_secret");
    assert_eq!(signature.len(), 64);
    assert_eq!(ls::verify(body, &signature, "ls_signing_secret"), Ok(()));
    assert_eq!(ls::verify(body, &signature.to_uppercase(), "ls_signing_secret"), Ok(()), "hex case doesn't matter");
}

#[test]
fn lemonsqueezy_invalid_signatures_are_refused() {
    let body = br#"{"meta":{"event_name":"subscription_created"}}"#;
    let signature = ls::sign(body, "ls_signing_secret");
    assert_eq!(ls::verify(body, &signature, "another_secret"), Err(SignatureError::Mismatch));
    assert_eq!(
        ls::verify(br#"{"meta":{"event_name":"subscription_expired"}}"#, &signature, "ls_signing_secret"),
        Err(SignatureError::Mismatch)
    );
    assert_eq!(ls::verify(body, "zz-not-hex", "ls_signing_secret"), Err(SignatureError::NotHex));
    assert_eq!(ls::verify(body, &signature[..32], "ls_signing_secret"), Err(SignatureError::Mismatch));
    assert_eq!(ls::verify(body, "", "ls_signing_secret"), Err(SignatureError::MissingHeader));
    assert_eq!(ls::verify(body, &signature, ""), Err(SignatureError::NoSecretConfigured));
}
