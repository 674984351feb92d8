//! Lemon Squeezy webhook normalization, from payloads built on the
//! documented field list.

use orgplane_billing::lemonsqueezy::parse_event;
use orgplane_billing::{BillingEvent, ParseError};
use orgplane_core::subscription::{Payment, PaymentFailure, Provider, SubscriptionSnapshot, SubscriptionStatus};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::macros::datetime;

use crate::fixtures::{LS_UPDATED_AT, bytes, ls_invoice, ls_subscription, org};

fn snapshot(body: &Value) -> SubscriptionSnapshot {
    match parse_event(&bytes(body), None).expect("parses").event {
        BillingEvent::Subscription(snapshot) => snapshot,
        other => panic!("not a subscription event: {other:?}"),
    }
}

const UPDATED: OffsetDateTime = datetime!(2024-05-01 10:00 UTC);

#[test]
fn an_active_subscription_becomes_a_full_snapshot() {
    let parsed = parse_event(&bytes(&ls_subscription("subscription_created", "active")), Some("subscription_created"))
        .expect("parses");
    assert_eq!(parsed.provider, Provider::Lemonsqueezy);
    assert_eq!(parsed.event_type, "subscription_created");
    assert_eq!(parsed.occurred_at, UPDATED);
    let BillingEvent::Subscription(snapshot) = parsed.event else { panic!("not a subscription") };
    assert_eq!(
        snapshot,
        SubscriptionSnapshot {
            provider: Provider::Lemonsqueezy,
            provider_subscription_id: "1".into(),
            provider_customer_id: Some("67890".into()),
            org_id: Some(org()),
            status: SubscriptionStatus::Active,
            price_id: Some("333".into()),
            item_id: Some("444".into()),
            quantity: 4,
            current_period_end: Some(datetime!(2024-06-01 10:00 UTC)),
            cancel_at_period_end: false,
            trial_end: Some(datetime!(2024-05-08 10:00 UTC)),
            observed_at: UPDATED,
            portal_url: Some("https://orgplane.lemonsqueezy.com/billing?expires=1714600000&signature=def".into()),
        }
    );
}

#[test]
fn every_lemonsqueezy_status_maps_onto_orgplanes() {
    let cases = [
        ("on_trial", SubscriptionStatus::Trialing, false),
        ("active", SubscriptionStatus::Active, false),
        ("paused", SubscriptionStatus::Paused, false),
        ("past_due", SubscriptionStatus::PastDue, false),
        ("unpaid", SubscriptionStatus::Unpaid, false),
        ("cancelled", SubscriptionStatus::Active, true),
        ("expired", SubscriptionStatus::Canceled, false),
    ];
    for (ls_status, status, cancelling) in cases {
        let snap = snapshot(&ls_subscription("subscription_updated", ls_status));
        assert_eq!((snap.status, snap.cancel_at_period_end), (status, cancelling), "{ls_status}");
    }
}

#[test]
fn cancelled_is_a_grace_period_that_ends_at_ends_at() {
    let snap = snapshot(&ls_subscription("subscription_cancelled", "cancelled"));
    assert_eq!(snap.status, SubscriptionStatus::Active, "still entitled until ends_at");
    assert!(snap.cancel_at_period_end);
    assert_eq!(snap.current_period_end, Some(datetime!(2024-05-20 10:00 UTC)), "ends_at, not renews_at");

    let snap = snapshot(&ls_subscription("subscription_expired", "expired"));
    assert_eq!(snap.status, SubscriptionStatus::Canceled);
    assert_eq!(snap.current_period_end, Some(datetime!(2024-05-20 10:00 UTC)));
}

#[test]
fn an_unknown_status_is_a_parse_error() {
    let body = ls_subscription("subscription_updated", "frozen");
    let err = parse_event(&bytes(&body), None).expect_err("unknown status");
    assert!(matches!(err, ParseError::InvalidField { field: "data.attributes.status", .. }), "{err:?}");
}

#[test]
fn the_dedupe_key_is_event_name_data_id_and_updated_at() {
    let parsed = parse_event(&bytes(&ls_subscription("subscription_updated", "active")), None).expect("parses");
    assert_eq!(parsed.event_id, format!("subscription_updated:1:{LS_UPDATED_AT}"));
    assert_eq!(parsed.event_id, "subscription_updated:1:2024-05-01T10:00:00.000000Z");

    // The same object in another event, or changed later, is another delivery.
    let other = parse_event(&bytes(&ls_subscription("subscription_resumed", "active")), None).expect("parses");
    assert_ne!(other.event_id, parsed.event_id);
    let mut later = ls_subscription("subscription_updated", "active");
    later["data"]["attributes"]["updated_at"] = json!("2024-05-01T10:00:01.000000Z");
    assert_ne!(parse_event(&bytes(&later), None).expect("parses").event_id, parsed.event_id);
}

#[test]
fn the_event_name_comes_from_the_signed_body_then_the_header() {
    let mut body = ls_subscription("subscription_updated", "active");
    let parsed = parse_event(&bytes(&body), Some("subscription_expired")).expect("parses");
    assert_eq!(parsed.event_type, "subscription_updated", "the body is signed, the header is not");

    body["meta"].as_object_mut().expect("meta").remove("event_name");
    let parsed = parse_event(&bytes(&body), Some("subscription_resumed")).expect("parses");
    assert_eq!(parsed.event_type, "subscription_resumed");

    let err = parse_event(&bytes(&body), None).expect_err("no event name anywhere");
    assert!(matches!(err, ParseError::MissingField { field: "meta.event_name", .. }), "{err:?}");
}

#[test]
fn org_id_comes_from_custom_data_and_anything_else_is_no_org() {
    let mut body = ls_subscription("subscription_created", "active");
    body["meta"]["custom_data"] = json!({ "org_id": "not-an-org" });
    assert_eq!(snapshot(&body).org_id, None);
    body["meta"].as_object_mut().expect("meta").remove("custom_data");
    assert_eq!(snapshot(&body).org_id, None);
}

#[test]
fn payment_events_become_invoice_events_of_the_subscription() {
    let failure = PaymentFailure {
        invoice_id: "9001".into(),
        amount_due: Some(2000),
        currency: Some("usd".into()),
        hosted_invoice_url: Some("https://app.lemonsqueezy.com/my-orders/invoice/9001".into()),
        attempt_count: None,
        next_payment_attempt: None,
        failed_at: datetime!(2024-05-01 10:00 UTC),
    };
    for (name, payment) in [
        ("subscription_payment_success", Payment::Paid),
        ("subscription_payment_recovered", Payment::Paid),
        ("subscription_payment_failed", Payment::Failed(failure)),
    ] {
        let parsed = parse_event(&bytes(&ls_invoice(name)), Some(name)).expect("parses");
        assert_eq!(
            parsed.event,
            BillingEvent::Invoice { provider: Provider::Lemonsqueezy, subscription_id: "1".into(), payment },
            "{name}"
        );
        assert_eq!(parsed.event_id, format!("{name}:9001:{LS_UPDATED_AT}"));
    }
    let parsed = parse_event(&bytes(&ls_invoice("subscription_payment_refunded")), None).expect("parses");
    assert_eq!(parsed.event, BillingEvent::Ignored { kind: "subscription_payment_refunded".into() });
}

#[test]
fn order_events_are_ignored() {
    let order = json!({
        "meta": { "event_name": "order_created", "custom_data": { "org_id": org().to_string() } },
        "data": {
            "type": "orders",
            "id": "111",
            "attributes": { "store_id": 12345, "status": "paid", "total": 2000, "created_at": LS_UPDATED_AT, "updated_at": LS_UPDATED_AT }
        }
    });
    let parsed = parse_event(&bytes(&order), Some("order_created")).expect("parses");
    assert_eq!(parsed.event, BillingEvent::Ignored { kind: "order_created".into() });
    assert_eq!(parsed.event_id, format!("order_created:111:{LS_UPDATED_AT}"));
}

#[test]
fn a_body_without_updated_at_or_valid_times_is_a_parse_error() {
    let mut body = ls_subscription("subscription_updated", "active");
    body["data"]["attributes"].as_object_mut().expect("attributes").remove("updated_at");
    let err = parse_event(&bytes(&body), None).expect_err("no updated_at");
    assert!(matches!(err, ParseError::MissingField { field: "data.attributes.updated_at", .. }), "{err:?}");

    let mut body = ls_subscription("subscription_updated", "active");
    body["data"]["attributes"]["renews_at"] = json!("next tuesday");
    assert!(matches!(parse_event(&bytes(&body), None), Err(ParseError::InvalidField { .. })));
    assert!(matches!(parse_event(b"[]", None), Err(ParseError::Json { .. })));
}
