//! The REST clients against the local stand-in: each request asserted field
//! by field, answers parsed, errors sorted.

use std::time::Duration;

use axum::http::Method;
use orgplane_billing::{
    CheckoutRequest, LemonSqueezyClient, PaymentProvider, ProviderError, StripeClient, StripeConfig,
};
use orgplane_core::subscription::{Provider, SubscriptionStatus};
use serde_json::json;
use time::OffsetDateTime;

use crate::fixtures::{ls_subscription, org, stripe_object};
use crate::stand_in::{StandIn, unreachable_origin};

const TIMEOUT: Duration = Duration::from_secs(5);

fn stripe(stand_in: &StandIn) -> StripeClient {
    StripeClient::new("sk_test_orgplane", &stand_in.origin, TIMEOUT).expect("client builds")
}

fn lemonsqueezy(stand_in: &StandIn) -> LemonSqueezyClient {
    LemonSqueezyClient::new("ls_test_key", "12345", &format!("{}/v1", stand_in.origin), TIMEOUT).expect("client builds")
}

fn checkout_request() -> CheckoutRequest {
    CheckoutRequest {
        org_id: org(),
        price_id: "price_1PgafmB7WZ01zgkW6dKueIc5".into(),
        quantity: 3,
        success_url: "https://app.example.com/billing/done?session={CHECKOUT_SESSION_ID}".into(),
        cancel_url: "https://app.example.com/billing".into(),
        customer_id: None,
        customer_email: Some("ada+billing@example.com".into()),
        trial_period_days: Some(14),
        pause_trial_without_payment_method: false,
        idempotency_key: "checkout-org-1-attempt-1".into(),
    }
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

// ---- Stripe ----

#[tokio::test]
async fn stripe_checkout_posts_the_documented_form() {
    let session = stripe_object("checkout.session");
    let stand_in = StandIn::start(200, session.to_string()).await;
    let created = stripe(&stand_in).create_checkout_session(&checkout_request()).await.expect("created");
    assert_eq!(created.id, session["id"].as_str().expect("id"));
    assert_eq!(created.url, session["url"].as_str().expect("url"));

    let request = stand_in.only_request();
    assert_eq!(request.method, Method::POST);
    assert_eq!(request.path, "/v1/checkout/sessions");
    assert_eq!(request.query, None);
    assert_eq!(request.header("authorization"), Some("Bearer sk_test_orgplane"));
    assert_eq!(request.header("idempotency-key"), Some("checkout-org-1-attempt-1"));
    assert_eq!(request.header("content-type"), Some("application/x-www-form-urlencoded"));
    let org = org().to_string();
    assert_eq!(
        request.form(),
        pairs(&[
            ("mode", "subscription"),
            ("line_items[0][price]", "price_1PgafmB7WZ01zgkW6dKueIc5"),
            ("line_items[0][quantity]", "3"),
            ("success_url", "https://app.example.com/billing/done?session={CHECKOUT_SESSION_ID}"),
            ("cancel_url", "https://app.example.com/billing"),
            ("client_reference_id", &org),
            ("subscription_data[metadata][org_id]", &org),
            ("customer_email", "ada+billing@example.com"),
            ("subscription_data[trial_period_days]", "14"),
        ])
    );
}

#[tokio::test]
async fn stripe_checkout_for_a_known_customer_sends_customer_not_email() {
    let stand_in = StandIn::start(200, stripe_object("checkout.session").to_string()).await;
    let request = CheckoutRequest {
        customer_id: Some("cus_QXg1o8vcGmoR32".into()),
        trial_period_days: None,
        ..checkout_request()
    };
    stripe(&stand_in).create_checkout_session(&request).await.expect("created");
    let form = stand_in.only_request().form();
    assert!(form.contains(&("customer".into(), "cus_QXg1o8vcGmoR32".into())), "{form:?}");
    assert!(
        !form.iter().any(|(k, _)| k == "customer_email" || k == "subscription_data[trial_period_days]"),
        "{form:?}"
    );
}

#[tokio::test]
async fn stripe_get_subscription_parses_the_fixture_subscription() {
    let stand_in = StandIn::start(200, stripe_object("subscription").to_string()).await;
    let before = OffsetDateTime::now_utc();
    let snapshot = stripe(&stand_in).get_subscription("sub_1Pgc6rB7WZ01zgkWNy0Cn5nw").await.expect("fetched");
    let after = OffsetDateTime::now_utc();

    let request = stand_in.only_request();
    assert_eq!(request.method, Method::GET);
    assert_eq!(request.path, "/v1/subscriptions/sub_1Pgc6rB7WZ01zgkWNy0Cn5nw");
    assert_eq!(request.header("authorization"), Some("Bearer sk_test_orgplane"));

    assert_eq!(snapshot.provider, Provider::Stripe);
    assert_eq!(snapshot.provider_subscription_id, "sub_1Pgc6rB7WZ01zgkWNy0Cn5nw");
    assert_eq!(snapshot.status, SubscriptionStatus::Active);
    assert_eq!(snapshot.price_id.as_deref(), Some("price_1PgafmB7WZ01zgkW6dKueIc5"));
    assert_eq!(snapshot.item_id.as_deref(), Some("si_QXhVnC2h0Jczwc"));
    assert_eq!(snapshot.quantity, 1);
    assert_eq!(snapshot.current_period_end, OffsetDateTime::from_unix_timestamp(976_287_773).ok());
    assert!(before <= snapshot.observed_at && snapshot.observed_at <= after, "a GET is observed now");
}

#[tokio::test]
async fn stripe_cancel_calls_use_the_documented_requests() {
    let stand_in = StandIn::start(200, stripe_object("subscription").to_string()).await;
    let client = stripe(&stand_in);
    client.cancel_at_period_end("sub_1", true, "cancel-1").await.expect("scheduled");
    client.cancel_at_period_end("sub_1", false, "undo-1").await.expect("undone");
    client.cancel_now("sub_1").await.expect("cancelled");
    let requests = stand_in.requests();
    assert_eq!(requests.len(), 3);
    assert_eq!((&requests[0].method, requests[0].path.as_str()), (&Method::POST, "/v1/subscriptions/sub_1"));
    assert_eq!(requests[0].form(), pairs(&[("cancel_at_period_end", "true")]));
    assert_eq!(requests[1].form(), pairs(&[("cancel_at_period_end", "false")]));
    assert_eq!(requests[0].header("idempotency-key"), Some("cancel-1"), "every POST carries an Idempotency-Key");
    assert_eq!(requests[1].header("idempotency-key"), Some("undo-1"));
    assert_eq!((&requests[2].method, requests[2].path.as_str()), (&Method::DELETE, "/v1/subscriptions/sub_1"));
    assert!(requests[2].body.is_empty());
}

#[tokio::test]
async fn stripe_seat_change_posts_quantity_with_prorations_and_idempotency_key() {
    let stand_in = StandIn::start(200, stripe_object("subscription_item").to_string()).await;
    stripe(&stand_in).update_quantity("si_QXhVBoJ7NQdNXh", 7, "seats-org-1-7").await.expect("updated");
    let request = stand_in.only_request();
    assert_eq!(request.method, Method::POST);
    assert_eq!(request.path, "/v1/subscription_items/si_QXhVBoJ7NQdNXh");
    assert_eq!(request.header("idempotency-key"), Some("seats-org-1-7"));
    assert_eq!(request.form(), pairs(&[("quantity", "7"), ("proration_behavior", "create_prorations")]));
}

#[tokio::test]
async fn stripe_portal_session_returns_the_portal_url() {
    let portal = stripe_object("billing_portal.session");
    let stand_in = StandIn::start(200, portal.to_string()).await;
    let provider = PaymentProvider::Stripe(stripe(&stand_in));
    let url = provider
        .portal_url(Some("cus_QXg1o8vcGmoR32"), "sub_1", "https://app.example.com/account", "portal-1")
        .await
        .expect("portal");
    assert_eq!(url, portal["url"].as_str().expect("url"));
    let request = stand_in.only_request();
    assert_eq!((&request.method, request.path.as_str()), (&Method::POST, "/v1/billing_portal/sessions"));
    assert_eq!(request.header("idempotency-key"), Some("portal-1"));
    assert_eq!(
        request.form(),
        pairs(&[("customer", "cus_QXg1o8vcGmoR32"), ("return_url", "https://app.example.com/account")])
    );

    let err = provider.portal_url(None, "sub_1", "https://app.example.com", "portal-2").await.expect_err("no customer");
    assert!(matches!(err, ProviderError::InvalidRequest(_)), "{err:?}");
    assert_eq!(stand_in.requests().len(), 1, "nothing sent without a customer");
}

#[tokio::test]
async fn stripe_api_error_becomes_provider_error_api_with_its_message() {
    let body = json!({
        "error": {
            "code": "resource_missing",
            "message": "No such subscription: 'sub_missing'",
            "param": "id",
            "type": "invalid_request_error"
        }
    });
    let stand_in = StandIn::start(404, body.to_string()).await;
    let err = stripe(&stand_in).get_subscription("sub_missing").await.expect_err("missing");
    assert_eq!(
        err,
        ProviderError::Api {
            provider: Provider::Stripe,
            status: 404,
            code: Some("resource_missing".into()),
            message: "No such subscription: 'sub_missing'".into(),
        }
    );
    assert!(!err.is_retryable());
    assert_eq!(
        err.to_string(),
        "Stripe refused the request (HTTP 404, resource_missing): No such subscription: 'sub_missing'"
    );
}

#[tokio::test]
async fn a_stripe_server_error_without_a_body_is_api_and_retryable() {
    let stand_in = StandIn::start(503, "").await;
    let err = stripe(&stand_in).cancel_now("sub_1").await.expect_err("unavailable");
    assert!(matches!(err, ProviderError::Api { status: 503, .. }), "{err:?}");
    assert!(err.is_retryable());
}

#[tokio::test]
async fn an_unreachable_stripe_base_is_unavailable() {
    let origin = unreachable_origin().await;
    let client = StripeClient::new("sk_test_orgplane", &origin, TIMEOUT).expect("client builds");
    let err = client.get_subscription("sub_1").await.expect_err("nothing listens");
    let ProviderError::Unavailable(message) = &err else { panic!("expected Unavailable, got {err:?}") };
    assert!(message.starts_with(&format!("Stripe at {origin} could not be reached")), "{message}");
    assert!(!message.contains("sk_test_orgplane"));
    assert!(err.is_retryable());
}

#[tokio::test]
async fn a_stripe_client_needs_an_api_key_and_an_http_base() {
    let err = StripeClient::from_config(&StripeConfig::default()).expect_err("no key");
    assert!(err.to_string().starts_with("billing.stripe.api_key"), "{err}");
    let err = StripeClient::new("sk", "not a url", TIMEOUT).expect_err("bad base");
    assert!(matches!(err, ProviderError::Config(_)), "{err:?}");
}

// ---- Lemon Squeezy ----

fn ls_checkout_answer() -> String {
    json!({
        "jsonapi": { "version": "1.0" },
        "data": {
            "type": "checkouts",
            "id": "ac470bd4-7c41-474d-b6cd-0f296f5be02a",
            "attributes": {
                "store_id": 12345,
                "variant_id": 333,
                "url": "https://orgplane.lemonsqueezy.com/checkout/custom/ac470bd4-7c41-474d-b6cd-0f296f5be02a?signature=ee3f"
            }
        }
    })
    .to_string()
}

#[tokio::test]
async fn lemonsqueezy_checkout_posts_the_json_api_document() {
    let stand_in = StandIn::start(201, ls_checkout_answer()).await;
    let request = CheckoutRequest { price_id: "333".into(), ..checkout_request() };
    let provider = PaymentProvider::LemonSqueezy(lemonsqueezy(&stand_in));
    let url = provider.checkout(&request).await.expect("created");
    assert_eq!(
        url,
        "https://orgplane.lemonsqueezy.com/checkout/custom/ac470bd4-7c41-474d-b6cd-0f296f5be02a?signature=ee3f"
    );

    let sent = stand_in.only_request();
    assert_eq!(sent.method, Method::POST);
    assert_eq!(sent.path, "/v1/checkouts");
    assert_eq!(sent.header("accept"), Some("application/vnd.api+json"));
    assert_eq!(sent.header("content-type"), Some("application/vnd.api+json"));
    assert_eq!(sent.header("authorization"), Some("Bearer ls_test_key"));
    assert_eq!(sent.header("idempotency-key"), None, "Lemon Squeezy has no idempotency keys");
    assert_eq!(
        sent.json(),
        json!({
            "data": {
                "type": "checkouts",
                "attributes": {
                    "checkout_data": {
                        "email": "ada+billing@example.com",
                        "custom": { "org_id": org().to_string() },
                        "variant_quantities": [{ "variant_id": 333, "quantity": 3 }]
                    },
                    "product_options": {
                        "redirect_url": "https://app.example.com/billing/done?session={CHECKOUT_SESSION_ID}"
                    }
                },
                "relationships": {
                    "store": { "data": { "type": "stores", "id": "12345" } },
                    "variant": { "data": { "type": "variants", "id": "333" } }
                }
            }
        })
    );
}

#[tokio::test]
async fn lemonsqueezy_checkout_refuses_a_variant_id_that_is_not_a_number() {
    let stand_in = StandIn::start(201, ls_checkout_answer()).await;
    let err = lemonsqueezy(&stand_in).create_checkout(&checkout_request()).await.expect_err("stripe price id");
    assert!(matches!(err, ProviderError::InvalidRequest(_)), "{err:?}");
    assert!(stand_in.requests().is_empty());
}

#[tokio::test]
async fn lemonsqueezy_get_subscription_parses_a_subscription_document() {
    let mut document = ls_subscription("subscription_updated", "cancelled");
    document.as_object_mut().expect("object").remove("meta"); // the API has no meta
    let stand_in = StandIn::start(200, document.to_string()).await;
    let snapshot = lemonsqueezy(&stand_in).get_subscription("1").await.expect("fetched");
    let request = stand_in.only_request();
    assert_eq!((&request.method, request.path.as_str()), (&Method::GET, "/v1/subscriptions/1"));
    assert_eq!(request.header("accept"), Some("application/vnd.api+json"));
    assert_eq!(snapshot.provider, Provider::Lemonsqueezy);
    assert_eq!(snapshot.status, SubscriptionStatus::Active);
    assert!(snapshot.cancel_at_period_end);
    assert_eq!(snapshot.price_id.as_deref(), Some("333"));
    assert_eq!(snapshot.item_id.as_deref(), Some("444"));
    assert_eq!(snapshot.quantity, 4);
    assert_eq!(snapshot.org_id, None, "the API doesn't return checkout custom data");
    assert!(snapshot.portal_url.is_some());
}

#[tokio::test]
async fn lemonsqueezy_updates_use_patch_and_delete_with_json_api_bodies() {
    let mut document = ls_subscription("subscription_updated", "active");
    document.as_object_mut().expect("object").remove("meta");
    let stand_in = StandIn::start(200, document.to_string()).await;
    let provider = PaymentProvider::LemonSqueezy(lemonsqueezy(&stand_in));
    provider.set_cancel_at_period_end("1", true, "k1").await.expect("cancelled");
    provider.set_cancel_at_period_end("1", false, "k2").await.expect("resumed");
    provider.cancel_now("1").await.expect("deleted");
    provider.set_quantity("444", 6, "ignored-by-lemon-squeezy").await.expect("seats");
    let portal = provider.portal_url(None, "1", "https://ignored.example.com", "k3").await.expect("portal");
    assert_eq!(portal, "https://orgplane.lemonsqueezy.com/billing?expires=1714600000&signature=def");

    let requests = stand_in.requests();
    assert_eq!(requests.len(), 5);
    assert_eq!((&requests[0].method, requests[0].path.as_str()), (&Method::PATCH, "/v1/subscriptions/1"));
    assert_eq!(
        requests[0].json(),
        json!({ "data": { "type": "subscriptions", "id": "1", "attributes": { "cancelled": true } } })
    );
    assert_eq!(requests[1].json()["data"]["attributes"], json!({ "cancelled": false }));
    assert_eq!((&requests[2].method, requests[2].path.as_str()), (&Method::DELETE, "/v1/subscriptions/1"));
    assert_eq!((&requests[3].method, requests[3].path.as_str()), (&Method::PATCH, "/v1/subscription-items/444"));
    assert_eq!(
        requests[3].json(),
        json!({ "data": { "type": "subscription-items", "id": "444", "attributes": { "quantity": 6 } } })
    );
    assert_eq!((&requests[4].method, requests[4].path.as_str()), (&Method::GET, "/v1/subscriptions/1"));
    for request in &requests {
        assert_eq!(request.header("content-type"), Some("application/vnd.api+json"));
        assert_eq!(request.header("authorization"), Some("Bearer ls_test_key"));
    }
}

#[tokio::test]
async fn lemonsqueezy_api_error_becomes_provider_error_api() {
    let body = json!({
        "jsonapi": { "version": "1.0" },
        "errors": [{ "detail": "The quantity must be at least 1.", "status": "422", "title": "Unprocessable Entity" }]
    });
    let stand_in = StandIn::start(422, body.to_string()).await;
    let err = lemonsqueezy(&stand_in).update_quantity("444", 0).await.expect_err("refused");
    assert_eq!(
        err,
        ProviderError::Api {
            provider: Provider::Lemonsqueezy,
            status: 422,
            code: Some("Unprocessable Entity".into()),
            message: "The quantity must be at least 1.".into(),
        }
    );
}

#[tokio::test]
async fn an_unreachable_lemonsqueezy_base_is_unavailable() {
    let origin = unreachable_origin().await;
    let client = LemonSqueezyClient::new("k", "1", &format!("{origin}/v1"), TIMEOUT).expect("client builds");
    let err = client.get_subscription("1").await.expect_err("nothing listens");
    assert!(matches!(err, ProviderError::Unavailable(ref m) if m.starts_with("Lemon Squeezy")), "{err:?}");
}

#[tokio::test]
async fn stripe_undelivered_events_are_listed_with_the_documented_query_and_paged() {
    let event = serde_json::json!({"id": "evt_1", "object": "event", "type": "customer.subscription.created"});
    let body = serde_json::json!({"object": "list", "data": [event], "has_more": true, "url": "/v1/events"});
    let stand_in = StandIn::start(200, body.to_string()).await;
    let page = stripe(&stand_in).undelivered_events(1_700_000_000, Some("evt_0")).await.expect("listed");
    assert_eq!(page.events.len(), 1);
    assert!(page.has_more);
    assert_eq!(page.last_id.as_deref(), Some("evt_1"));
    let raw: serde_json::Value = serde_json::from_slice(&page.events[0]).expect("raw event json");
    assert_eq!(raw["type"], "customer.subscription.created");
    let request = stand_in.only_request();
    assert_eq!((&request.method, request.path.as_str()), (&Method::GET, "/v1/events"));
    let query = request.query.clone().unwrap_or_default();
    for part in ["delivery_success=false", "limit=100", "created%5Bgte%5D=1700000000", "starting_after=evt_0"] {
        assert!(query.contains(part), "{part} in {query}");
    }
}
