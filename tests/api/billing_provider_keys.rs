//! Stripe's `Idempotency-Key` on each POST orgplane sends is derived from
//! the operation, so that a retry is one provider call: when Stripe did the
//! work but its answer was lost, the retry carries the same key (Stripe then
//! answers with its first answer instead of doing it again), and a new
//! operation carries a new key. Each test runs on SQLite and PostgreSQL.

use reqwest::Method;
use serde_json::{Value, json};

use crate::billing_support::*;
use crate::helpers::{Backend, Res, TestApp};
use crate::on_both_backends;

on_both_backends!(
    a_checkout_retried_after_a_lost_answer_sends_stripe_the_same_key,
    a_seat_change_retried_after_a_lost_answer_sends_stripe_the_same_key,
    cancel_reactivate_cancel_are_three_operations_with_three_keys,
);

const SUCCESS: &str = "https://app.example/billing/done";
const CANCEL: &str = "https://app.example/billing";

/// A request with the caller's own `Idempotency-Key`.
async fn send_keyed(app: &TestApp, method: Method, path: &str, token: &str, key: &str, body: Value) -> Res {
    let resp = app
        .http
        .request(method, app.url(path))
        .bearer_auth(token)
        .header("Idempotency-Key", key)
        .json(&body)
        .send()
        .await
        .expect("request reaches the server");
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = serde_json::from_slice(&resp.bytes().await.expect("body")).unwrap_or(Value::Null);
    Res { status, body, headers }
}

fn keys_sent(stripe: &StandIn, method: Method, path: &str) -> Vec<String> {
    stripe
        .requests_to(method, path)
        .iter()
        .map(|r| r.header("idempotency-key").expect("every POST carries a key").to_owned())
        .collect()
}

async fn a_checkout_retried_after_a_lost_answer_sends_stripe_the_same_key(backend: Backend) {
    let stripe = StandIn::stripe().await;
    let Some(app) = stripe_app(backend, &stripe, |_| {}).await else { return };
    let smith = app.user("dr.smith@clinic.example").await;
    let org = app.team(&smith, "Downtown Clinic").await;
    let path = format!("/v1/orgs/{org}/checkout");
    let body = json!({"plan": "business", "seats": 5, "success_url": SUCCESS, "cancel_url": CANCEL});

    // With the caller's key: the first answer is lost, the retry succeeds.
    stripe.lose_next_answer(Method::POST, "/v1/checkout/sessions");
    let res = send_keyed(&app, Method::POST, &path, &smith.token, "checkout-1", body.clone()).await;
    assert!(res.status.is_server_error(), "the lost answer is a provider error: {}", res.body);
    let res = send_keyed(&app, Method::POST, &path, &smith.token, "checkout-1", body.clone()).await;
    assert!(res.expect(200)["url"].is_string());
    let keys = keys_sent(&stripe, Method::POST, "/v1/checkout/sessions");
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0], keys[1], "one checkout at Stripe");

    // Without one: the same checkout asked again is the same Stripe call...
    app.post(&path, &smith.token, body.clone()).await.expect(200);
    app.post(&path, &smith.token, body.clone()).await.expect(200);
    let keys = keys_sent(&stripe, Method::POST, "/v1/checkout/sessions");
    assert_eq!(keys[2], keys[3]);
    // ...and another checkout (other seats) is another.
    let other = json!({"plan": "business", "seats": 6, "success_url": SUCCESS, "cancel_url": CANCEL});
    app.post(&path, &smith.token, other).await.expect(200);
    let keys = keys_sent(&stripe, Method::POST, "/v1/checkout/sessions");
    assert_ne!(keys[4], keys[3]);
    // Another caller's equal key is another key.
    let key = app.api_key().await;
    send_keyed(&app, Method::POST, &path, &key, "checkout-1", body).await.expect(200);
    let keys = keys_sent(&stripe, Method::POST, "/v1/checkout/sessions");
    assert_ne!(keys[5], keys[0]);
}

/// An org with a live Stripe subscription the stand-in holds.
async fn subscribed(app: &TestApp, stripe: &StandIn) -> (crate::helpers::TestUser, String, StripeSub) {
    let smith = app.user("dr.smith@clinic.example").await;
    let org = app.team(&smith, "Downtown Clinic").await;
    let sub = StripeSub::new("sub_keys", Some(&org), "cus_keys");
    stripe.set_subscription(&sub.id, sub.object());
    let body = stripe_event("evt_keys", "customer.subscription.created", now(), sub.object());
    assert_eq!(app.stripe_webhook(&body).await.expect(200)["outcome"], "created");
    (smith, org, sub)
}

async fn a_seat_change_retried_after_a_lost_answer_sends_stripe_the_same_key(backend: Backend) {
    let stripe = StandIn::stripe().await;
    let Some(app) = stripe_app(backend, &stripe, |_| {}).await else { return };
    let (smith, org, sub) = subscribed(&app, &stripe).await;
    let path = format!("/v1/orgs/{org}/subscription/seats");
    let item = format!("/v1/subscription_items/{}", sub.item_id());

    stripe.lose_next_answer(Method::POST, &item);
    let res = send_keyed(&app, Method::PUT, &path, &smith.token, "seats-8", json!({"seats": 8})).await;
    assert!(res.status.is_server_error(), "{}", res.body);
    let res = send_keyed(&app, Method::PUT, &path, &smith.token, "seats-8", json!({"seats": 8})).await;
    assert_eq!(res.expect(200)["seats"], 8);
    // Without the caller's key, a retry of the same change is the same call too.
    stripe.lose_next_answer(Method::POST, &item);
    let res = app.put(&path, &smith.token, json!({"seats": 9})).await;
    assert!(res.status.is_server_error(), "{}", res.body);
    assert_eq!(app.put(&path, &smith.token, json!({"seats": 9})).await.expect(200)["seats"], 9);
    let keys = keys_sent(&stripe, Method::POST, &item);
    assert_eq!(keys.len(), 4);
    assert_eq!(keys[0], keys[1], "one seat change at Stripe");
    assert_eq!(keys[2], keys[3], "one seat change at Stripe");
    assert_ne!(keys[1], keys[2], "two different changes");
}

async fn cancel_reactivate_cancel_are_three_operations_with_three_keys(backend: Backend) {
    let stripe = StandIn::stripe().await;
    let Some(app) = stripe_app(backend, &stripe, |_| {}).await else { return };
    let (smith, org, sub) = subscribed(&app, &stripe).await;
    let cancel = format!("/v1/orgs/{org}/subscription/cancel");
    let reactivate = format!("/v1/orgs/{org}/subscription/reactivate");
    assert_eq!(app.post(&cancel, &smith.token, json!({})).await.expect(200)["cancel_at_period_end"], true);
    assert_eq!(app.post(&reactivate, &smith.token, json!({})).await.expect(200)["cancel_at_period_end"], false);
    assert_eq!(app.post(&cancel, &smith.token, json!({})).await.expect(200)["cancel_at_period_end"], true);
    let keys = keys_sent(&stripe, Method::POST, &format!("/v1/subscriptions/{}", sub.id));
    assert_eq!(keys.len(), 3);
    assert!(keys[0] != keys[1] && keys[1] != keys[2] && keys[0] != keys[2], "{keys:?}");
    assert_eq!(stripe.subscription(&sub.id).expect("held")["cancel_at_period_end"], true);
}
