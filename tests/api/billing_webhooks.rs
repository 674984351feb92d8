//! Provider webhooks through HTTP: signatures verified exactly as the
//! providers specify (nothing stored when they don't hold), events stored
//! once and applied once, in the provider's order whatever the delivery
//! order, and events that match no org kept and applied by reconciliation.

use futures_util::future::join_all;
use orgplane_billing::stripe::signature;
use serde_json::json;

use crate::billing_support::*;
use crate::helpers::Backend;
use crate::on_both_backends;

on_both_backends!(
    stripe_signatures_are_verified_with_every_configured_secret,
    official_stripe_vectors_verify_at_the_endpoint,
    lemonsqueezy_signatures_are_verified,
    a_replayed_event_has_no_second_effect,
    twenty_concurrent_deliveries_of_one_event_apply_once,
    created_updated_deleted_in_every_order_reach_the_same_state,
    a_webhook_body_over_the_limit_is_413_and_stores_nothing,
    an_unmatched_event_is_kept_listed_and_applied_by_reconciliation,
    an_unknown_price_keeps_the_subscription_and_grants_nothing,
    a_second_live_subscription_is_kept_as_failed_with_its_reason,
    past_due_counts_from_when_it_began,
);

/// The hex signature of a `t=…,v1=…` header.
fn v1_of(header: &str) -> String {
    header.split("v1=").nth(1).expect("a v1 signature").to_owned()
}

async fn stripe_signatures_are_verified_with_every_configured_secret(backend: Backend) {
    let Some(app) = stripe_webhook_app(backend, |c| {
        c.billing.stripe.webhook_secrets = vec!["whsec_old".into(), "whsec_new".into()];
    })
    .await
    else {
        return;
    };
    let smith = app.user("dr.smith@clinic.example").await;
    let org = app.team(&smith, "Downtown Clinic").await;
    let body = stripe_event(
        "evt_sig_1",
        "customer.subscription.created",
        now(),
        StripeSub::new("sub_sig", Some(&org), "cus_sig").object(),
    );
    let t = now();

    // Refused: no header, a secret we don't hold, an altered body, a stale or future timestamp.
    let refused = [
        ("".to_owned(), body.clone()),
        (signature::sign(&body, "whsec_unknown", t), body.clone()),
        (signature::sign(&body, "whsec_new", t), [body.as_slice(), b" "].concat()),
        (signature::sign(&body, "whsec_new", t - 301), body.clone()),
        (signature::sign(&body, "whsec_new", t + 301), body.clone()),
        (format!("t={t},v0={}", v1_of(&signature::sign(&body, "whsec_new", t))), body.clone()),
    ];
    for (header, payload) in &refused {
        let res = app.stripe_webhook_signed(payload, header).await;
        res.expect_error(400, "invalid_signature");
    }
    assert_eq!(app.provider_event_count().await, 0, "a refused delivery stores nothing");
    assert_eq!(app.subscription(&org, &smith.token).await.status.as_u16(), 404);

    // During a roll Stripe signs with each active secret; any v1 that matches will do.
    let unknown = v1_of(&signature::sign(&body, "whsec_retired", t));
    let old = v1_of(&signature::sign(&body, "whsec_old", t));
    let rolled = format!("t={t},v1={unknown},v1={old},v0=deadbeef");
    let res = app.stripe_webhook_signed(&body, &rolled).await;
    assert_eq!(res.expect(200)["status"], "applied");
    // Each secret alone verifies too (the endpoint's secret is being rolled).
    for (n, secret) in ["whsec_old", "whsec_new"].into_iter().enumerate() {
        let object = StripeSub::new("sub_sig", Some(&org), "cus_sig").object();
        let body = stripe_event(&format!("evt_roll_{n}"), "customer.subscription.updated", now(), object);
        app.stripe_webhook_signed(&body, &signature::sign(&body, secret, now())).await.expect(200);
    }
    assert_eq!(app.provider_event_count().await, 3);
    assert_eq!(app.subscription(&org, &smith.token).await.expect(200)["status"], "active");
}

/// Stripe's second official vector (secret `secret`).
const VECTOR_2: &str = r#"{"account":"acct_123","api_version":"2017-05-25","created":1533204620,"data":{"object":{"amount":1000,"currency":"usd","customer":"cus_123","date":1533204620,"description":"Test Invoice Item","discountable":false,"id":"ii_123","invoice":"in_123","livemode":false,"metadata":{},"object":"invoiceitem","period":{"end":1533204620,"start":1533204620},"proration":false,"quantity":3,"quantity_decimal":"0"}},"id":"evt_123","livemode":false,"object":"event","pending_webhooks":1,"request":{"id":"req_123","idempotency_key":"idempotency-key-123"},"type":"invoiceitem.created"}"#;

async fn official_stripe_vectors_verify_at_the_endpoint(backend: Backend) {
    // The vectors were signed in 2018: a tolerance wide enough to reach them.
    let Some(app) = stripe_webhook_app(backend, |c| {
        c.billing.stripe.webhook_secrets = vec!["webhook_secret".into(), "secret".into()];
        c.billing.stripe.webhook_tolerance_secs = 20 * 365 * 86_400;
    })
    .await
    else {
        return;
    };
    let vector_1 =
        std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/api/fixtures/stripe/signature-vector-payload.json"))
            .expect("vector payload");
    assert_eq!(vector_1.len(), 484);
    let res = app
        .stripe_webhook_signed(
            &vector_1,
            "t=1533204620,v1=2220f87ef101a04665f11cdf770523143f875572008577fa0f20882ddb9cc3c7",
        )
        .await;
    assert_eq!(res.expect(200)["status"], "ignored", "customer.created is recorded, not acted on: {}", res.body);
    let res = app
        .stripe_webhook_signed(
            VECTOR_2.as_bytes(),
            "t=1533204620,v1=d7373bc68f4bd320b253cd7461f87af6e1cdf1b4d7db1614d8d1d746972d2d0a",
        )
        .await;
    // Both vectors are event `evt_123`: verified, and deduplicated as one event.
    assert_eq!(res.expect(200)["duplicate"], true);
    // One changed byte, or the right signature under the default tolerance: refused.
    let mut tampered = vector_1.clone();
    tampered[10] ^= 1;
    app.stripe_webhook_signed(
        &tampered,
        "t=1533204620,v1=2220f87ef101a04665f11cdf770523143f875572008577fa0f20882ddb9cc3c7",
    )
    .await
    .expect_error(400, "invalid_signature");
    assert_eq!(app.provider_event_count().await, 1);

    let Some(strict) = stripe_webhook_app(backend, |c| c.billing.stripe.webhook_secrets = vec!["secret".into()]).await
    else {
        return;
    };
    strict
        .stripe_webhook_signed(
            VECTOR_2.as_bytes(),
            "t=1533204620,v1=d7373bc68f4bd320b253cd7461f87af6e1cdf1b4d7db1614d8d1d746972d2d0a",
        )
        .await
        .expect_error(400, "invalid_signature");
    assert_eq!(strict.provider_event_count().await, 0, "a stale delivery stores nothing");
}

async fn lemonsqueezy_signatures_are_verified(backend: Backend) {
    let stand_in = StandIn::lemonsqueezy().await;
    let Some(app) = lemonsqueezy_app(backend, &stand_in, |c| c.billing.refetch_on_webhook = false).await else {
        return;
    };
    let smith = app.user("dr.smith@clinic.example").await;
    let org = app.team(&smith, "Downtown Clinic").await;
    let body = ls_event("subscription_created", Some(&org), "active", "2026-01-02T10:00:00.000000Z", None);
    for bad in ["", "not-hex", &orgplane_billing::lemonsqueezy::signature::sign(&body, "another_secret")] {
        app.ls_webhook_signed(&body, bad).await.expect_error(400, "invalid_signature");
    }
    assert_eq!(app.provider_event_count().await, 0);
    let res = app.ls_webhook(&body).await;
    assert_eq!(res.expect(200)["status"], "applied");
    let sub = app.subscription(&org, &smith.token).await;
    assert_eq!(sub.expect(200)["provider"], "lemonsqueezy");
    assert_eq!(sub.body["plan"], "business");
    assert_eq!(sub.body["seats"], 4);
}

async fn a_replayed_event_has_no_second_effect(backend: Backend) {
    let Some(app) = stripe_webhook_app(backend, |_| {}).await else { return };
    let smith = app.user("dr.smith@clinic.example").await;
    let org = app.team(&smith, "Downtown Clinic").await;
    let body = stripe_event(
        "evt_replay",
        "customer.subscription.created",
        now(),
        StripeSub::new("sub_r", Some(&org), "cus_r").object(),
    );
    let first = app.stripe_webhook(&body).await;
    assert_eq!(first.expect(200)["duplicate"], false);
    assert_eq!(first.body["outcome"], "created");
    for _ in 0..3 {
        let again = app.stripe_webhook(&body).await;
        assert_eq!(again.expect(200)["duplicate"], true, "a replay is acknowledged");
    }
    assert_eq!(app.provider_event_count().await, 1);
    assert_eq!(app.event_count(&org, "subscription.created").await, 1);
    assert_eq!(app.event_count(&org, "subscription.updated").await, 0);
}

async fn twenty_concurrent_deliveries_of_one_event_apply_once(backend: Backend) {
    let Some(app) = stripe_webhook_app(backend, |_| {}).await else { return };
    let smith = app.user("dr.smith@clinic.example").await;
    let org = app.team(&smith, "Downtown Clinic").await;
    let body = stripe_event(
        "evt_storm",
        "customer.subscription.created",
        now(),
        StripeSub::new("sub_storm", Some(&org), "cus_storm").object(),
    );
    let results = join_all((0..20).map(|_| app.stripe_webhook(&body))).await;
    for res in &results {
        res.expect(200);
    }
    let fresh = results.iter().filter(|r| r.body["duplicate"] == false).count();
    assert_eq!(fresh, 1, "exactly one delivery was applied");
    assert_eq!(app.count(&format!("SELECT COUNT(*) FROM subscriptions WHERE org_id = '{org}'")).await, 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM provider_events WHERE status = 'applied'").await, 1);
    assert_eq!(app.provider_event_count().await, 1);
    assert_eq!(app.event_count(&org, "subscription.created").await, 1);
    assert_eq!(app.event_count(&org, "subscription.updated").await, 0);
}

/// The state `GET /v1/orgs/{org}/subscription` shows, without ids and times of writing.
fn comparable(body: &serde_json::Value) -> serde_json::Value {
    json!({
        "status": body["status"], "seats": body["seats"], "plan": body["plan"], "price_id": body["price_id"],
        "cancel_at_period_end": body["cancel_at_period_end"], "current_period_end": body["current_period_end"],
    })
}

async fn created_updated_deleted_in_every_order_reach_the_same_state(backend: Backend) {
    let Some(app) = stripe_webhook_app(backend, |_| {}).await else { return };
    let smith = app.user("dr.smith@clinic.example").await;
    let t = now() - 100;
    let period_end = t + 30 * 86_400;
    let events = |org: &str| {
        let sub = StripeSub::new(&format!("sub_order_{org}"), Some(org), &format!("cus_{org}"))
            .with(|s| s.period_end = period_end);
        let created = sub.clone().with(|s| s.quantity = 2);
        let updated = sub.clone().with(|s| s.cancel_at_period_end = true);
        let deleted = sub.with(|s| s.status = "canceled");
        [
            stripe_event(&format!("evt_c_{org}"), "customer.subscription.created", t, created.object()),
            stripe_event(&format!("evt_u_{org}"), "customer.subscription.updated", t + 10, updated.object()),
            stripe_event(&format!("evt_d_{org}"), "customer.subscription.deleted", t + 20, deleted.object()),
        ]
    };
    let orders: [[usize; 3]; 6] = [[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]];
    let mut baseline = None;
    // The in-order run first, then the other five: each on an org of its own
    // (a provider subscription belongs to one org).
    for (n, order) in orders.iter().enumerate() {
        let org = app.team(&smith, &format!("Clinic {n}")).await;
        let bodies = events(&org);
        for i in order {
            app.stripe_webhook(&bodies[*i]).await.expect(200);
        }
        let sub = app.subscription(&org, &smith.token).await;
        let state = comparable(sub.expect(200));
        assert_eq!(state["status"], "canceled", "order {order:?}");
        assert_eq!(app.plan_of(&org, &smith.token).await, "free", "order {order:?}");
        assert_eq!(app.event_count(&org, "subscription.created").await, 1, "order {order:?}");
        match &baseline {
            None => baseline = Some(state),
            Some(expected) => assert_eq!(&state, expected, "order {order:?} ends elsewhere than in order"),
        }
    }
    // An update that arrived before its create is never undone by the create.
    let org = app.team(&smith, "Clinic updated-first").await;
    let bodies = events(&org);
    app.stripe_webhook(&bodies[1]).await.expect(200);
    let res = app.stripe_webhook(&bodies[0]).await;
    assert_eq!(res.expect(200)["outcome"], "stale");
    let sub = app.subscription(&org, &smith.token).await;
    assert_eq!(sub.expect(200)["cancel_at_period_end"], true);
    assert_eq!(sub.body["seats"], 5);
}

async fn a_webhook_body_over_the_limit_is_413_and_stores_nothing(backend: Backend) {
    let Some(app) = stripe_webhook_app(backend, |c| c.max_body_bytes = 4096).await else { return };
    let mut object = StripeSub::new("sub_big", None, "cus_big").object();
    object["description"] = json!("x".repeat(8192));
    let body = stripe_event("evt_big", "customer.subscription.created", now(), object);
    let res = app.stripe_webhook(&body).await;
    res.expect_error(413, "payload_too_large");
    let res = app.ls_webhook(&body).await;
    res.expect_error(413, "payload_too_large");
    assert_eq!(app.provider_event_count().await, 0);
}

async fn an_unmatched_event_is_kept_listed_and_applied_by_reconciliation(backend: Backend) {
    let Some(app) = stripe_webhook_app(backend, |c| c.billing.retry_interval_secs = 0).await else { return };
    let key = app.api_key().await;
    let smith = app.user("dr.smith@clinic.example").await;
    let org = app.team(&smith, "Downtown Clinic").await;
    // Made elsewhere (a payment link): no org in the metadata, an unknown customer.
    let body = stripe_event(
        "evt_orphan",
        "customer.subscription.created",
        now(),
        StripeSub::new("sub_orphan", None, "cus_orphan").object(),
    );
    let res = app.stripe_webhook(&body).await;
    assert_eq!(res.expect(200)["status"], "unmatched", "kept, and the provider is told not to retry");

    let listed = app.get("/v1/billing/events?status=unmatched", &key).await;
    let data = listed.expect(200)["data"].as_array().expect("list").clone();
    assert_eq!(data.len(), 1);
    assert_eq!(data[0]["event_id"], "evt_orphan");
    assert_eq!(data[0]["type"], "customer.subscription.created");
    assert_eq!(data[0]["provider_customer_id"], "cus_orphan");
    assert!(data[0]["error"].as_str().is_some_and(|e| e.contains("no organization")));
    assert!(data[0]["next_attempt_at"].is_string());
    app.get("/v1/billing/events?status=unmatched", &smith.token).await.expect_error(403, "forbidden");
    app.get("/v1/billing/events?status=lost", &key).await.expect_error(400, "invalid_request");
    app.subscription(&org, &smith.token).await.expect_error(404, "not_found");

    // The checkout completes: now the customer is known to be the clinic's.
    let link = checkout_completed("evt_link", now(), &org, "cus_orphan", "sub_orphan");
    assert_eq!(app.stripe_webhook(&link).await.expect(200)["outcome"], "linked");

    // Once its backoff has passed, reconciliation retries the unmatched
    // event and applies it.
    app.clock.advance(time::Duration::hours(1));
    app.state.billing.reconcile_once(None).await.expect("a reconciliation pass");
    assert_eq!(app.subscription(&org, &smith.token).await.body["status"], "active");
    let unmatched = app.get("/v1/billing/events?status=unmatched", &key).await;
    assert_eq!(unmatched.expect(200)["data"].as_array().map(Vec::len), Some(0));
    let applied = app.get("/v1/billing/events?status=applied", &key).await;
    let orphan = applied.expect(200)["data"]
        .as_array()
        .and_then(|d| d.iter().find(|e| e["event_id"] == "evt_orphan").cloned())
        .expect("the event is applied now");
    assert_eq!(orphan["org_id"], org.as_str());
    assert_eq!(orphan["outcome"], "created");
    assert!(orphan["attempts"].as_i64().is_some_and(|a| a >= 2));
    // Its audit event names the provider event that made the change.
    let events = app.get(&format!("/v1/orgs/{org}/events"), &key).await;
    let created = events.expect(200)["data"]
        .as_array()
        .and_then(|d| d.iter().find(|e| e["type"] == "subscription.created").cloned())
        .expect("audited");
    assert_eq!(created["actor"], "provider:evt_orphan");
}

async fn an_unknown_price_keeps_the_subscription_and_grants_nothing(backend: Backend) {
    let Some(app) = stripe_webhook_app(backend, |_| {}).await else { return };
    let smith = app.user("dr.smith@clinic.example").await;
    let org = app.team(&smith, "Downtown Clinic").await;
    let sub = StripeSub::new("sub_odd", Some(&org), "cus_odd").with(|s| s.price = "price_not_in_catalog".into());
    let res = app.stripe_webhook(&stripe_event("evt_odd", "customer.subscription.created", now(), sub.object())).await;
    assert_eq!(res.expect(200)["status"], "applied");
    let sub = app.subscription(&org, &smith.token).await;
    assert_eq!(sub.expect(200)["status"], "active");
    assert_eq!(sub.body["plan"], serde_json::Value::Null);
    assert_eq!(sub.body["price_id"], "price_not_in_catalog");
    assert_eq!(app.plan_of(&org, &smith.token).await, "free");
}

async fn a_second_live_subscription_is_kept_as_failed_with_its_reason(backend: Backend) {
    let Some(app) = stripe_webhook_app(backend, |_| {}).await else { return };
    let key = app.api_key().await;
    let smith = app.user("dr.smith@clinic.example").await;
    let org = app.team(&smith, "Downtown Clinic").await;
    let first = StripeSub::new("sub_first", Some(&org), "cus_1");
    app.stripe_webhook(&stripe_event("evt_first", "customer.subscription.created", now(), first.object()))
        .await
        .expect(200);
    let second = StripeSub::new("sub_second", Some(&org), "cus_1").with(|s| s.price = PRICE_ENTERPRISE.into());
    let res =
        app.stripe_webhook(&stripe_event("evt_second", "customer.subscription.created", now(), second.object())).await;
    assert_eq!(res.expect(200)["status"], "failed");
    let sub = app.subscription(&org, &smith.token).await;
    assert_eq!(sub.expect(200)["provider_subscription_id"], "sub_first");
    let failed = app.get("/v1/billing/events?status=failed", &key).await;
    let data = failed.expect(200)["data"].as_array().expect("list").clone();
    assert_eq!(data.len(), 1);
    assert!(data[0]["error"].as_str().is_some_and(|e| e.contains("already has a live")), "{}", data[0]);
    assert_eq!(app.count(&format!("SELECT COUNT(*) FROM subscriptions WHERE org_id = '{org}'")).await, 1);

    // Once the first ends, the second (whose state was recorded) takes its
    // place at once, and its later events update it.
    let ended = first.clone().with(|s| s.status = "canceled");
    app.stripe_webhook(&stripe_event("evt_first_end", "customer.subscription.deleted", now(), ended.object()))
        .await
        .expect(200);
    let sub = app.subscription(&org, &smith.token).await;
    assert_eq!(sub.expect(200)["provider_subscription_id"], "sub_second");
    assert_eq!(sub.body["status"], "active");
    assert_eq!(app.plan_of(&org, &smith.token).await, "enterprise");
    let second_update = second.with(|s| s.quantity = 6);
    let res = app
        .stripe_webhook(&stripe_event("evt_second_2", "customer.subscription.updated", now(), second_update.object()))
        .await;
    assert_eq!(res.expect(200)["outcome"], "updated");
    assert_eq!(app.subscription(&org, &smith.token).await.body["seats"], 6);
    // A late event of the ended subscription can't bring it back.
    let late = first.with(|s| s.quantity = 9);
    let res = app
        .stripe_webhook(&stripe_event("evt_first_late", "customer.subscription.updated", now(), late.object()))
        .await;
    assert_eq!(res.expect(200)["outcome"], "stale");
    assert_eq!(app.subscription(&org, &smith.token).await.body["provider_subscription_id"], "sub_second");
}

async fn past_due_counts_from_when_it_began(backend: Backend) {
    let Some(app) = stripe_webhook_app(backend, |_| {}).await else { return };
    let smith = app.user("dr.smith@clinic.example").await;
    let org = app.team(&smith, "Downtown Clinic").await;
    let t = now() - 60;
    let sub = StripeSub::new("sub_pd", Some(&org), "cus_pd");
    app.stripe_webhook(&stripe_event("evt_pd_1", "customer.subscription.created", t, sub.object())).await.expect(200);
    let past_due = sub.clone().with(|s| s.status = "past_due");
    app.stripe_webhook(&stripe_event("evt_pd_2", "customer.subscription.updated", t + 10, past_due.object()))
        .await
        .expect(200);
    let first = app.subscription(&org, &smith.token).await.expect(200)["past_due_since"].clone();
    assert!(first.is_string());
    let still = past_due.with(|s| s.quantity = 6);
    app.stripe_webhook(&stripe_event("evt_pd_3", "customer.subscription.updated", t + 20, still.object()))
        .await
        .expect(200);
    let sub_now = app.subscription(&org, &smith.token).await;
    assert_eq!(sub_now.expect(200)["past_due_since"], first, "kept while past_due");
    assert_eq!(app.plan_of(&org, &smith.token).await, "business", "inside the grace period");
    app.stripe_webhook(&stripe_event("evt_pd_4", "customer.subscription.updated", t + 30, sub.object()))
        .await
        .expect(200);
    assert_eq!(app.subscription(&org, &smith.token).await.body["past_due_since"], serde_json::Value::Null);
}
