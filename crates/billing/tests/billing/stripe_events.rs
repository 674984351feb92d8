//! Stripe webhook normalization, from Stripe's reference objects wrapped in
//! event envelopes.

use orgplane_billing::stripe::parse_event;
use orgplane_billing::{BillingEvent, ParseError};
use orgplane_core::subscription::{Payment, PaymentFailure, Provider, SubscriptionSnapshot, SubscriptionStatus};
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::fixtures::{EVENT_CREATED, fixture_bytes, org, stripe_event, stripe_object};

fn at(unix: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(unix).expect("valid")
}

/// The reference subscription, with an org in its metadata and 3 seats.
fn subscription() -> Value {
    let mut sub = stripe_object("subscription");
    sub["metadata"] = json!({ "org_id": org().to_string() });
    sub["items"]["data"][0]["quantity"] = json!(3);
    sub
}

fn snapshot_of(kind: &str, object: Value) -> SubscriptionSnapshot {
    let parsed = parse_event(&stripe_event(kind, object)).expect("parses");
    match parsed.event {
        BillingEvent::Subscription(snapshot) => snapshot,
        other => panic!("{kind} should be a subscription event, got {other:?}"),
    }
}

#[test]
fn subscription_updated_becomes_a_snapshot_of_the_fixture_subscription() {
    let parsed = parse_event(&stripe_event("customer.subscription.updated", subscription())).expect("parses");
    assert_eq!(parsed.provider, Provider::Stripe);
    assert_eq!(parsed.event_id, "evt_1TestEnvelope");
    assert_eq!(parsed.event_type, "customer.subscription.updated");
    assert_eq!(parsed.occurred_at, at(EVENT_CREATED));
    let BillingEvent::Subscription(snapshot) = parsed.event else { panic!("not a subscription event") };
    assert_eq!(
        snapshot,
        SubscriptionSnapshot {
            provider: Provider::Stripe,
            provider_subscription_id: "sub_1Pgc6rB7WZ01zgkWNy0Cn5nw".into(),
            provider_customer_id: Some("cus_QXg1o8vcGmoR32".into()),
            org_id: Some(org()),
            status: SubscriptionStatus::Active,
            price_id: Some("price_1PgafmB7WZ01zgkW6dKueIc5".into()),
            item_id: Some("si_QXhVnC2h0Jczwc".into()),
            quantity: 3,
            // From items.data[0] (API ≥ 2025-03-31): the fixture has no top-level period.
            current_period_end: Some(at(976_287_773)),
            // The fixture sets both cancel_at_period_end and cancel_at.
            cancel_at_period_end: true,
            trial_end: Some(at(1_234_567_890)),
            observed_at: at(EVENT_CREATED),
            portal_url: None,
        }
    );
}

#[test]
fn every_subscription_event_type_yields_a_snapshot() {
    for kind in [
        "customer.subscription.created",
        "customer.subscription.updated",
        "customer.subscription.deleted",
        "customer.subscription.paused",
        "customer.subscription.resumed",
        "customer.subscription.trial_will_end",
    ] {
        let snapshot = snapshot_of(kind, subscription());
        assert_eq!(snapshot.provider_subscription_id, "sub_1Pgc6rB7WZ01zgkWNy0Cn5nw", "{kind}");
    }
}

#[test]
fn stripe_statuses_map_one_to_one() {
    for status in SubscriptionStatus::ALL {
        let mut sub = subscription();
        sub["status"] = json!(status.as_str());
        assert_eq!(snapshot_of("customer.subscription.updated", sub).status, status);
    }
}

#[test]
fn an_unknown_status_is_a_parse_error_not_a_guess() {
    let mut sub = subscription();
    sub["status"] = json!("frozen");
    let err = parse_event(&stripe_event("customer.subscription.updated", sub)).expect_err("unknown status");
    assert!(matches!(err, ParseError::InvalidField { field: "status", ref value, .. } if value == "frozen"), "{err:?}");
    assert!(err.to_string().contains("`frozen`"), "{err}");
}

#[test]
fn period_end_falls_back_to_the_subscription_before_api_2025_03_31() {
    let mut sub = subscription();
    sub["items"]["data"][0].as_object_mut().expect("item").remove("current_period_end");
    sub["current_period_end"] = json!(1_760_000_000);
    assert_eq!(snapshot_of("customer.subscription.updated", sub).current_period_end, Some(at(1_760_000_000)));

    // When both are there, the item's wins.
    let mut sub = subscription();
    sub["current_period_end"] = json!(1_760_000_000);
    assert_eq!(snapshot_of("customer.subscription.updated", sub).current_period_end, Some(at(976_287_773)));
}

#[test]
fn cancel_at_alone_counts_as_cancelling_at_period_end() {
    let mut sub = subscription();
    sub["cancel_at_period_end"] = json!(false);
    sub["cancel_at"] = json!(1_760_000_000);
    assert!(snapshot_of("customer.subscription.updated", sub).cancel_at_period_end);

    let mut sub = subscription();
    sub["cancel_at_period_end"] = json!(false);
    sub["cancel_at"] = Value::Null;
    assert!(!snapshot_of("customer.subscription.updated", sub).cancel_at_period_end);
}

#[test]
fn org_id_comes_from_metadata_and_a_foreign_value_is_no_org() {
    let mut sub = subscription();
    sub["metadata"] = json!({ "org_id": "customer-42" });
    assert_eq!(snapshot_of("customer.subscription.updated", sub).org_id, None);
    let mut sub = subscription();
    sub["metadata"] = json!({});
    assert_eq!(snapshot_of("customer.subscription.updated", sub).org_id, None);
}

#[test]
fn an_expanded_customer_and_missing_quantity_are_read() {
    let mut sub = subscription();
    sub["customer"] = stripe_object("customer");
    sub["items"]["data"][0]["quantity"] = Value::Null;
    sub["trial_end"] = Value::Null;
    let snapshot = snapshot_of("customer.subscription.created", sub);
    assert_eq!(snapshot.provider_customer_id.as_deref(), Some(stripe_object("customer")["id"].as_str().expect("id")));
    assert_eq!(snapshot.quantity, 1);
    assert_eq!(snapshot.trial_end, None);
}

#[test]
fn checkout_session_completed_names_org_customer_and_subscription() {
    let mut session = stripe_object("checkout.session");
    session["mode"] = json!("subscription");
    session["client_reference_id"] = json!(org().to_string());
    session["customer"] = json!("cus_QXg1o8vcGmoR32");
    session["subscription"] = json!("sub_1Pgc6rB7WZ01zgkWNy0Cn5nw");
    let parsed = parse_event(&stripe_event("checkout.session.completed", session.clone())).expect("parses");
    assert_eq!(
        parsed.event,
        BillingEvent::CheckoutCompleted {
            provider: Provider::Stripe,
            org_id: Some(org()),
            customer_id: Some("cus_QXg1o8vcGmoR32".into()),
            subscription_id: Some("sub_1Pgc6rB7WZ01zgkWNy0Cn5nw".into()),
            session_id: session["id"].as_str().expect("id").to_owned(),
        }
    );

    // The reference object as is: no reference, no customer, no subscription.
    let parsed =
        parse_event(&stripe_event("checkout.session.completed", stripe_object("checkout.session"))).expect("parses");
    let BillingEvent::CheckoutCompleted { org_id, customer_id, subscription_id, .. } = parsed.event else {
        panic!("not a checkout event")
    };
    assert_eq!((org_id, customer_id, subscription_id), (None, None, None));
}

#[test]
fn invoice_paid_reads_the_subscription_from_the_invoice_parent() {
    let mut invoice = stripe_object("invoice");
    assert_eq!(invoice["subscription"], Value::Null, "the reference invoice is API ≥ 2025-03-31");
    invoice["parent"]["subscription_details"]["subscription"] = json!("sub_1Pgc6rB7WZ01zgkWNy0Cn5nw");
    let parsed = parse_event(&stripe_event("invoice.paid", invoice.clone())).expect("parses");
    assert_eq!(
        parsed.event,
        BillingEvent::Invoice {
            provider: Provider::Stripe,
            subscription_id: "sub_1Pgc6rB7WZ01zgkWNy0Cn5nw".into(),
            payment: Payment::Paid,
        }
    );
    let parsed = parse_event(&stripe_event("invoice.payment_failed", invoice)).expect("parses");
    assert!(matches!(parsed.event, BillingEvent::Invoice { payment: Payment::Failed(_), .. }), "{:?}", parsed.event);
}

#[test]
fn a_failed_payment_carries_what_the_customer_owes_and_where_to_pay() {
    let mut invoice = stripe_object("invoice");
    invoice["parent"]["subscription_details"]["subscription"] = json!("sub_failing");
    invoice["hosted_invoice_url"] = json!("https://invoice.stripe.com/i/acct_1/test_pay");
    invoice["attempt_count"] = json!(2);
    invoice["amount_due"] = json!(4900);
    let parsed = parse_event(&stripe_event("invoice.payment_failed", invoice)).expect("parses");
    let created = OffsetDateTime::from_unix_timestamp(EVENT_CREATED).expect("a time");
    assert_eq!(
        parsed.event,
        BillingEvent::Invoice {
            provider: Provider::Stripe,
            subscription_id: "sub_failing".into(),
            payment: Payment::Failed(PaymentFailure {
                invoice_id: "in_1Pgc6tB7WZ01zgkWu9fdqL6I".into(),
                amount_due: Some(4900),
                currency: Some("usd".into()),
                hosted_invoice_url: Some("https://invoice.stripe.com/i/acct_1/test_pay".into()),
                attempt_count: Some(2),
                next_payment_attempt: Some(OffsetDateTime::from_unix_timestamp(1_234_567_890).expect("a time")),
                failed_at: created,
            }),
        }
    );
}

#[test]
fn invoice_subscription_falls_back_to_the_top_level_field() {
    let mut invoice = stripe_object("invoice");
    invoice["parent"] = Value::Null;
    invoice["subscription"] = json!("sub_legacy");
    let parsed = parse_event(&stripe_event("invoice.paid", invoice.clone())).expect("parses");
    assert_eq!(
        parsed.event,
        BillingEvent::Invoice {
            provider: Provider::Stripe,
            subscription_id: "sub_legacy".into(),
            payment: Payment::Paid
        }
    );

    // Without any subscription it is a one-off invoice, ignored.
    invoice["subscription"] = Value::Null;
    let parsed = parse_event(&stripe_event("invoice.paid", invoice)).expect("parses");
    assert_eq!(parsed.event, BillingEvent::Ignored { kind: "invoice.paid".into() });
}

#[test]
fn other_event_types_are_ignored_by_name() {
    // The reference `event` object is a whole envelope (`plan.created`).
    let body = serde_json::to_vec(&stripe_object("event")).expect("serializes");
    let parsed = parse_event(&body).expect("parses");
    assert_eq!(parsed.event_id, "evt_1Pgc76B7WZ01zgkWwyRHS12y");
    assert_eq!(parsed.event, BillingEvent::Ignored { kind: "plan.created".into() });
    // And the signature-vector payload (`customer.created`).
    let parsed = parse_event(&fixture_bytes("stripe/signature-vector-payload.json")).expect("parses");
    assert_eq!(parsed.event, BillingEvent::Ignored { kind: "customer.created".into() });
    assert_eq!(parsed.occurred_at, at(1_533_204_620));
}

#[test]
fn a_body_that_is_not_an_event_is_a_parse_error() {
    assert!(matches!(parse_event(b"not json"), Err(ParseError::Json { .. })));
    let err = parse_event(br#"{"type":"customer.subscription.updated","created":1}"#).expect_err("no id");
    assert!(err.to_string().contains("missing field `id`"), "{err}");
    let no_status = json!({ "id": "sub_1" });
    assert!(parse_event(&stripe_event("customer.subscription.updated", no_status)).is_err());
}
