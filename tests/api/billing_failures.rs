//! Payment failures through HTTP: a provider's failed-payment webhook
//! writes one `subscription.payment_failed` event (with where to pay) to the
//! org's log — once however often, and however concurrently, it is
//! delivered, and not at all when a later payment is already stored — and
//! `GET /v1/orgs/{org}/subscription` says when the grace period ends.

use axum::http::Method;
use futures_util::future::join_all;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::billing_support::*;
use crate::helpers::{Backend, TestApp};
use crate::on_both_backends;

on_both_backends!(
    a_failed_stripe_payment_logs_one_event_with_where_to_pay,
    dozens_of_concurrent_deliveries_of_one_failure_log_it_once,
    a_failure_older_than_a_stored_payment_is_not_logged,
    a_lemonsqueezy_payment_failure_logs_its_invoice_url,
    a_failure_of_a_subscription_not_known_yet_is_logged_once_by_reconciliation,
    the_subscription_shows_when_the_grace_period_ends,
    with_the_stripe_api_a_failure_applies_the_refetched_state_and_logs_the_failure,
);

const HOSTED: &str = "https://invoice.stripe.com/i/acct_1OrgPlane/test_YWNjdF8x";

/// A Stripe `invoice.payment_failed` of `subscription`, created at `created`.
fn stripe_failure(event: &str, subscription: &str, created: i64, attempt: i64) -> Vec<u8> {
    let mut invoice = stripe_object("invoice");
    invoice["id"] = json!("in_clinic_renewal");
    invoice["status"] = json!("open");
    invoice["parent"]["subscription_details"]["subscription"] = json!(subscription);
    invoice["amount_due"] = json!(4900);
    invoice["currency"] = json!("usd");
    invoice["hosted_invoice_url"] = json!(HOSTED);
    invoice["attempt_count"] = json!(attempt);
    invoice["next_payment_attempt"] = json!(created + 3 * 86_400);
    stripe_event(event, "invoice.payment_failed", created, invoice)
}

/// A Stripe `invoice.paid` of `subscription`, created at `created`.
fn stripe_paid(event: &str, subscription: &str, created: i64) -> Vec<u8> {
    let mut invoice = stripe_object("invoice");
    invoice["id"] = json!("in_clinic_renewal");
    invoice["status"] = json!("paid");
    invoice["parent"]["subscription_details"]["subscription"] = json!(subscription);
    stripe_event(event, "invoice.paid", created, invoice)
}

fn rfc3339(unix: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix).expect("a time").format(&Rfc3339).expect("formats")
}

/// The org's `subscription.payment_failed` events, oldest first, as the log carries them.
async fn failures(app: &TestApp, org: &str, key: &str) -> Vec<Value> {
    let res = app.get(&format!("/v1/orgs/{org}/events?limit=100"), key).await;
    let mut found: Vec<Value> = res.expect(200)["data"]
        .as_array()
        .expect("a list")
        .iter()
        .filter(|e| e["type"] == "subscription.payment_failed")
        .cloned()
        .collect();
    found.reverse();
    found
}

/// A clinic with a live Stripe subscription `sub_clinic` that went past due at `t + 10`.
async fn past_due_clinic(app: &TestApp, t: i64) -> (crate::helpers::TestUser, String) {
    let smith = app.user("dr.smith@clinic.example").await;
    let org = app.team(&smith, "Downtown Clinic").await;
    let sub = StripeSub::new("sub_clinic", Some(&org), "cus_clinic");
    app.stripe_webhook(&stripe_event("evt_created", "customer.subscription.created", t, sub.object()))
        .await
        .expect(200);
    let past_due = sub.with(|s| s.status = "past_due");
    app.stripe_webhook(&stripe_event("evt_past_due", "customer.subscription.updated", t + 10, past_due.object()))
        .await
        .expect(200);
    (smith, org)
}

async fn a_failed_stripe_payment_logs_one_event_with_where_to_pay(backend: Backend) {
    let Some(app) = stripe_webhook_app(backend, |_| {}).await else { return };
    let key = app.api_key().await;
    let t = now() - 120;
    let (_, org) = past_due_clinic(&app, t).await;

    let body = stripe_failure("evt_failed_1", "sub_clinic", t + 11, 1);
    let res = app.stripe_webhook(&body).await;
    assert_eq!(res.expect(200)["status"], "applied");
    assert_eq!(res.body["duplicate"], false);

    let logged = failures(&app, &org, &key).await;
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert_eq!(logged[0]["org_id"], org.as_str());
    assert_eq!(logged[0]["actor"], "provider:evt_failed_1");
    assert_eq!(
        logged[0]["data"],
        json!({
            "org_id": org,
            "provider": "stripe",
            "provider_subscription_id": "sub_clinic",
            "invoice_id": "in_clinic_renewal",
            "amount_due": 4900,
            "currency": "usd",
            "hosted_invoice_url": HOSTED,
            "attempt_count": 1,
            "next_payment_attempt": rfc3339(t + 11 + 3 * 86_400),
            "failed_at": rfc3339(t + 11),
        })
    );

    // Stripe delivers again: a duplicate, and still one event.
    let again = app.stripe_webhook(&body).await;
    assert_eq!(again.expect(200)["duplicate"], true);
    assert_eq!(failures(&app, &org, &key).await.len(), 1);

    // Stripe's next attempt fails too: a new event, a new entry.
    app.stripe_webhook(&stripe_failure("evt_failed_2", "sub_clinic", t + 20, 2)).await.expect(200);
    let logged = failures(&app, &org, &key).await;
    assert_eq!(logged.len(), 2);
    assert_eq!(logged[1]["data"]["attempt_count"], 2);
    assert!(logged[1]["seq"].as_i64() > logged[0]["seq"].as_i64(), "the log orders them");
}

async fn dozens_of_concurrent_deliveries_of_one_failure_log_it_once(backend: Backend) {
    let Some(app) = stripe_webhook_app(backend, |_| {}).await else { return };
    let key = app.api_key().await;
    let t = now() - 120;
    let (_, org) = past_due_clinic(&app, t).await;
    let body = stripe_failure("evt_failed_storm", "sub_clinic", t + 11, 1);
    let results = join_all((0..40).map(|_| app.stripe_webhook(&body))).await;
    for res in &results {
        res.expect(200);
    }
    let fresh = results.iter().filter(|r| r.body["duplicate"] == false).count();
    assert_eq!(fresh, 1, "exactly one delivery was processed");
    assert_eq!(app.event_count(&org, "subscription.payment_failed").await, 1);
    assert_eq!(failures(&app, &org, &key).await.len(), 1);
    let stored = "SELECT COUNT(*) FROM provider_events WHERE event_id = 'evt_failed_storm' AND payment = 'failed' \
                  AND payment_reported_at IS NOT NULL";
    assert_eq!(app.count(stored).await, 1);
}

async fn a_failure_older_than_a_stored_payment_is_not_logged(backend: Backend) {
    let Some(app) = stripe_webhook_app(backend, |_| {}).await else { return };
    let key = app.api_key().await;
    let t = now() - 120;
    let (_, org) = past_due_clinic(&app, t).await;

    // The retry that succeeded arrives first; the failure before it, late.
    app.stripe_webhook(&stripe_paid("evt_paid", "sub_clinic", t + 30)).await.expect(200);
    let late = app.stripe_webhook(&stripe_failure("evt_failed_late", "sub_clinic", t + 20, 1)).await;
    assert_eq!(late.expect(200)["status"], "applied", "stored and done with");
    assert_eq!(late.body["duplicate"], false);
    assert_eq!(failures(&app, &org, &key).await.len(), 0, "a banner for an invoice already paid would be stale");

    // A payment of another subscription says nothing about this one.
    app.stripe_webhook(&stripe_paid("evt_paid_other", "sub_other", t + 60)).await.expect(200);
    // A failure after the payment is news.
    app.stripe_webhook(&stripe_failure("evt_failed_next", "sub_clinic", t + 40, 1)).await.expect(200);
    let logged = failures(&app, &org, &key).await;
    assert_eq!(logged.len(), 1);
    assert_eq!(logged[0]["actor"], "provider:evt_failed_next");
}

async fn a_lemonsqueezy_payment_failure_logs_its_invoice_url(backend: Backend) {
    let ls = StandIn::lemonsqueezy().await;
    let Some(app) = lemonsqueezy_app(backend, &ls, |c| c.billing.refetch_on_webhook = false).await else { return };
    let key = app.api_key().await;
    let smith = app.user("dr.smith@clinic.example").await;
    let org = app.team(&smith, "Downtown Clinic").await;
    let created = rfc3339(now() - 60);
    app.ls_webhook(&ls_event("subscription_created", Some(&org), "active", &created, None)).await.expect(200);

    let failed_at = rfc3339(now() - 30);
    let invoice_url = "https://app.lemonsqueezy.com/my-orders/2ba92a4e/subscription-invoice/9001?signature=abc";
    let body = serde_json::to_vec(&json!({
        "meta": { "test_mode": true, "event_name": "subscription_payment_failed", "custom_data": { "org_id": org } },
        "data": {
            "type": "subscription-invoices",
            "id": "9001",
            "attributes": {
                "store_id": 4242,
                "subscription_id": 1,
                "customer_id": 67890,
                "billing_reason": "renewal",
                "currency": "USD",
                "status": "pending",
                "total": 4900,
                "urls": { "invoice_url": invoice_url },
                "created_at": failed_at,
                "updated_at": failed_at,
                "test_mode": true
            }
        }
    }))
    .expect("serializes");
    for _ in 0..2 {
        app.ls_webhook(&body).await.expect(200);
    }
    let logged = failures(&app, &org, &key).await;
    assert_eq!(logged.len(), 1, "a redelivery is the same event: {logged:?}");
    assert_eq!(
        logged[0]["data"],
        json!({
            "org_id": org,
            "provider": "lemonsqueezy",
            "provider_subscription_id": "1",
            "invoice_id": "9001",
            "amount_due": 4900,
            "currency": "usd",
            "hosted_invoice_url": invoice_url,
            "attempt_count": null,
            "next_payment_attempt": null,
            "failed_at": failed_at,
        })
    );
}

async fn a_failure_of_a_subscription_not_known_yet_is_logged_once_by_reconciliation(backend: Backend) {
    let Some(app) = stripe_webhook_app(backend, |c| c.billing.retry_interval_secs = 0).await else { return };
    let key = app.api_key().await;
    let smith = app.user("dr.smith@clinic.example").await;
    let org = app.team(&smith, "Downtown Clinic").await;
    let t = now() - 120;
    // The failure overtakes the subscription's own events.
    let res = app.stripe_webhook(&stripe_failure("evt_failed_early", "sub_clinic", t + 11, 1)).await;
    assert_eq!(res.expect(200)["status"], "unmatched");
    assert_eq!(failures(&app, &org, &key).await.len(), 0);

    let sub = StripeSub::new("sub_clinic", Some(&org), "cus_clinic").with(|s| s.status = "past_due");
    app.stripe_webhook(&stripe_event("evt_created", "customer.subscription.created", t, sub.object()))
        .await
        .expect(200);
    app.clock.advance(time::Duration::hours(1));
    for _ in 0..2 {
        app.state.billing.reconcile_once(None).await.expect("a reconciliation pass");
    }
    let logged = failures(&app, &org, &key).await;
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert_eq!(logged[0]["actor"], "provider:evt_failed_early");
    assert_eq!(logged[0]["data"]["hosted_invoice_url"], HOSTED);
    // A redelivery of it now is a duplicate, not a second banner.
    app.stripe_webhook(&stripe_failure("evt_failed_early", "sub_clinic", t + 11, 1)).await.expect(200);
    assert_eq!(failures(&app, &org, &key).await.len(), 1);
}

async fn the_subscription_shows_when_the_grace_period_ends(backend: Backend) {
    let Some(app) = stripe_webhook_app(backend, |_| {}).await else { return };
    let t = now() - 120;
    let (smith, org) = past_due_clinic(&app, t).await;
    let sub = app.subscription(&org, &smith.token).await;
    assert_eq!(sub.expect(200)["status"], "past_due");
    let since = sub.body["past_due_since"].as_str().expect("past due since").to_owned();
    let since = OffsetDateTime::parse(&since, &Rfc3339).expect("a time");
    let ends = sub.body["grace_ends_at"].as_str().expect("a grace period end");
    // The catalog's grace period: 7 days by default.
    assert_eq!(OffsetDateTime::parse(ends, &Rfc3339).expect("a time"), since + time::Duration::days(7));
    assert_eq!(app.plan_of(&org, &smith.token).await, "business", "inside the grace period");

    // Paid again: not past due, no grace period.
    let active = StripeSub::new("sub_clinic", Some(&org), "cus_clinic");
    app.stripe_webhook(&stripe_event("evt_recovered", "customer.subscription.updated", t + 30, active.object()))
        .await
        .expect(200);
    let sub = app.subscription(&org, &smith.token).await;
    assert_eq!(sub.expect(200)["status"], "active");
    assert_eq!(sub.body["past_due_since"], Value::Null);
    assert_eq!(sub.body["grace_ends_at"], Value::Null);
}

async fn with_the_stripe_api_a_failure_applies_the_refetched_state_and_logs_the_failure(backend: Backend) {
    let stripe = StandIn::stripe().await;
    let Some(app) = stripe_app(backend, &stripe, |_| {}).await else { return };
    let key = app.api_key().await;
    let smith = app.user("dr.smith@clinic.example").await;
    let org = app.team(&smith, "Downtown Clinic").await;
    let sub = StripeSub::new("sub_clinic", Some(&org), "cus_clinic");
    stripe.set_subscription("sub_clinic", sub.object());
    let t = now() - 60;
    app.stripe_webhook(&stripe_event("evt_created", "customer.subscription.created", t, sub.object()))
        .await
        .expect(200);

    // Stripe has moved the subscription to past_due by the time the failure arrives.
    stripe.set_subscription("sub_clinic", sub.with(|s| s.status = "past_due").object());
    let fetched_before = stripe.requests_to(Method::GET, "/v1/subscriptions/sub_clinic").len();
    let res = app.stripe_webhook(&stripe_failure("evt_failed_1", "sub_clinic", t + 10, 1)).await;
    assert_eq!(res.expect(200)["status"], "applied");
    assert_eq!(res.body["outcome"], "updated", "the re-fetched state is applied");
    let fetched = stripe.requests_to(Method::GET, "/v1/subscriptions/sub_clinic");
    assert_eq!(fetched.len(), fetched_before + 1, "the failure is a trigger to re-fetch");
    let sub = app.subscription(&org, &smith.token).await;
    assert_eq!(sub.expect(200)["status"], "past_due");
    assert!(sub.body["grace_ends_at"].is_string());
    let logged = failures(&app, &org, &key).await;
    assert_eq!(logged.len(), 1);
    assert_eq!(logged[0]["data"]["hosted_invoice_url"], HOSTED);
    // The log has the status change before the banner.
    let updated = app.get(&format!("/v1/orgs/{org}/events?limit=100"), &key).await;
    let types: Vec<String> = updated.expect(200)["data"]
        .as_array()
        .expect("a list")
        .iter()
        .rev()
        .map(|e| e["type"].as_str().unwrap_or_default().to_owned())
        .collect();
    let at = |kind: &str| types.iter().rposition(|t| t == kind).expect(kind);
    assert!(at("subscription.updated") < at("subscription.payment_failed"), "{types:?}");
}
