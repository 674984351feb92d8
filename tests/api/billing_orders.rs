//! Provider events in every order: a subscription that ended never comes
//! back to life, and each org ends in the state its newest events imply,
//! whatever order the events arrive in, however often, and whether or not
//! the provider's API answers. Each test runs on SQLite and PostgreSQL.

use futures_util::StreamExt;

use crate::billing_support::*;
use crate::helpers::{Backend, TestApp};
use crate::on_both_backends;

on_both_backends!(
    case_b_an_old_created_event_after_both_subscriptions_ended_changes_nothing,
    case_a_a_retried_event_does_not_revive_an_ended_subscription,
    an_unanswering_provider_api_during_the_refetch_revives_nothing,
    a_storm_of_cancellations_and_resubscriptions_in_any_order_ends_right_for_every_org,
);

/// Delivers a Stripe subscription event created `ago` seconds before now.
async fn deliver(app: &TestApp, event_id: &str, kind: &str, ago: i64, sub: &StripeSub) -> serde_json::Value {
    app.stripe_webhook(&stripe_event(event_id, kind, now() - ago, sub.object())).await.expect(200).clone()
}

/// Case B of the fault run (webhook secret only): `sub_1.created` →
/// `sub_1.deleted` → `sub_2.deleted` → `sub_2.created` (older than its
/// deletion). The org used to end with `sub_2` active on business for good.
async fn run_case_b(app: &TestApp) {
    let smith = app.user("dr.smith@clinic.example").await;
    let org = app.team(&smith, "Downtown Clinic").await;
    let sub_1 = StripeSub::new("sub_b1", Some(&org), "cus_b");
    let sub_2 = StripeSub::new("sub_b2", Some(&org), "cus_b");
    deliver(app, "evt_b1_created", "customer.subscription.created", 500, &sub_1).await;
    deliver(
        app,
        "evt_b1_deleted",
        "customer.subscription.deleted",
        400,
        &sub_1.clone().with(|s| s.status = "canceled"),
    )
    .await;
    let res = deliver(
        app,
        "evt_b2_deleted",
        "customer.subscription.deleted",
        100,
        &sub_2.clone().with(|s| s.status = "canceled"),
    )
    .await;
    assert_eq!(res["status"], "applied");
    let res = deliver(app, "evt_b2_created", "customer.subscription.created", 200, &sub_2).await;
    assert_eq!(res["status"], "applied");
    assert_eq!(res["outcome"], "stale", "an older live state of an ended subscription is old news");

    let sub = app.subscription(&org, &smith.token).await;
    assert_eq!(sub.expect(200)["provider_subscription_id"], "sub_b2");
    assert_eq!(sub.body["status"], "canceled");
    assert_eq!(app.plan_of(&org, &smith.token).await, "free");
    // Redeliveries, and the same old state under another event id, change nothing.
    deliver(app, "evt_b2_created", "customer.subscription.created", 200, &sub_2).await;
    let res = deliver(app, "evt_b2_created_again", "customer.subscription.updated", 150, &sub_2).await;
    assert_eq!(res["outcome"], "stale");
    let res = deliver(app, "evt_b1_created_again", "customer.subscription.updated", 450, &sub_1).await;
    assert_eq!(res["outcome"], "stale");
    assert_eq!(app.subscription(&org, &smith.token).await.body["status"], "canceled");
    assert_eq!(app.plan_of(&org, &smith.token).await, "free");
}

async fn case_b_an_old_created_event_after_both_subscriptions_ended_changes_nothing(backend: Backend) {
    let Some(app) = stripe_webhook_app(backend, |_| {}).await else { return };
    run_case_b(&app).await;
}

/// Case A: `sub_2.created` → `sub_1.updated` (older: a second live
/// subscription, kept as failed) → `sub_1.deleted` → `sub_2.deleted`. The
/// retry of the failed event used to revive `sub_1` as active.
async fn case_a_a_retried_event_does_not_revive_an_ended_subscription(backend: Backend) {
    let Some(app) = stripe_webhook_app(backend, |c| c.billing.retry_interval_secs = 0).await else { return };
    let key = app.api_key().await;
    let smith = app.user("dr.smith@clinic.example").await;
    let org = app.team(&smith, "Downtown Clinic").await;
    let sub_1 = StripeSub::new("sub_a1", Some(&org), "cus_a");
    let sub_2 = StripeSub::new("sub_a2", Some(&org), "cus_a");
    deliver(&app, "evt_a2_created", "customer.subscription.created", 100, &sub_2).await;
    let res = deliver(&app, "evt_a1_updated", "customer.subscription.updated", 1000, &sub_1).await;
    assert_eq!(res["status"], "failed", "two live subscriptions: kept visible and retried");
    let failed = app.get("/v1/billing/events?status=failed", &key).await;
    let data = failed.expect(200)["data"].as_array().expect("list").clone();
    assert_eq!(data.len(), 1);
    assert!(data[0]["error"].as_str().is_some_and(|e| e.contains("already has a live")), "{}", data[0]);
    deliver(
        &app,
        "evt_a1_deleted",
        "customer.subscription.deleted",
        900,
        &sub_1.clone().with(|s| s.status = "canceled"),
    )
    .await;
    assert_eq!(app.subscription(&org, &smith.token).await.body["provider_subscription_id"], "sub_a2");
    assert_eq!(app.plan_of(&org, &smith.token).await, "business");
    deliver(
        &app,
        "evt_a2_deleted",
        "customer.subscription.deleted",
        50,
        &sub_2.clone().with(|s| s.status = "canceled"),
    )
    .await;

    // Once its backoff has passed, reconciliation retries the failed event
    // through the same rule.
    app.clock.advance(time::Duration::hours(1));
    app.state.billing.reconcile_once(None).await.expect("a reconciliation pass");
    let failed = app.get("/v1/billing/events?status=failed", &key).await;
    assert_eq!(failed.expect(200)["data"].as_array().map(Vec::len), Some(0), "{:?}", failed.body);
    let applied = app.get("/v1/billing/events?status=applied", &key).await;
    let retried = applied.expect(200)["data"]
        .as_array()
        .and_then(|d| d.iter().find(|e| e["event_id"] == "evt_a1_updated").cloned())
        .expect("the retried event is applied now");
    assert_eq!(retried["outcome"], "stale");
    let sub = app.subscription(&org, &smith.token).await;
    assert_eq!(sub.expect(200)["provider_subscription_id"], "sub_a2");
    assert_eq!(sub.body["status"], "canceled");
    assert_eq!(app.plan_of(&org, &smith.token).await, "free");
    // A later redelivery of an old sub_1 event does nothing either.
    let res = deliver(&app, "evt_a1_created_late", "customer.subscription.created", 1100, &sub_1).await;
    assert_eq!(res["outcome"], "stale");
    assert_eq!(app.subscription(&org, &smith.token).await.body["status"], "canceled");
}

/// A provider API that accepts connections and never answers.
async fn unanswering_api() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let origin = format!("http://{}", listener.local_addr().expect("has an address"));
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    origin
}

/// With an API key configured, the webhook's subscription is re-fetched;
/// when the API times out, the event's own copy goes through the same rule.
async fn an_unanswering_provider_api_during_the_refetch_revives_nothing(backend: Backend) {
    let origin = unanswering_api().await;
    let Some(app) = stripe_webhook_app(backend, |c| {
        c.billing.stripe.api_key = Some(STRIPE_KEY.to_owned());
        c.billing.stripe.api_base = origin;
        c.billing.stripe.timeout_secs = 1;
    })
    .await
    else {
        return;
    };
    run_case_b(&app).await;
}

/// A small deterministic shuffle (xorshift), so that a failing order can be
/// replayed from its seed.
fn shuffle<T>(items: &mut [T], mut seed: u64) {
    for i in (1..items.len()).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        items.swap(i, (seed % (i as u64 + 1)) as usize);
    }
}

/// Many orgs cancel and re-subscribe; every event (some twice) arrives in a
/// shuffled order, 16 at a time. Each org must end on its newest
/// subscription in that subscription's newest state.
async fn a_storm_of_cancellations_and_resubscriptions_in_any_order_ends_right_for_every_org(backend: Backend) {
    let Some(app) = stripe_webhook_app(backend, |_| {}).await else { return };
    let smith = app.user("dr.smith@clinic.example").await;
    let mut deliveries: Vec<Vec<u8>> = Vec::new();
    let mut expected: Vec<(String, String, &'static str)> = Vec::new();
    for i in 0..24 {
        let org = app.team(&smith, &format!("Clinic {i}")).await;
        let customer = format!("cus_storm_{i}");
        // sub a: bought, changed, cancelled; sub b: bought again, maybe cancelled; sub c: a third purchase.
        let a = StripeSub::new(&format!("sub_storm_{i}_a"), Some(&org), &customer);
        let b = StripeSub::new(&format!("sub_storm_{i}_b"), Some(&org), &customer);
        let c = StripeSub::new(&format!("sub_storm_{i}_c"), Some(&org), &customer);
        let mut history = vec![
            (format!("evt_{i}_a1"), "customer.subscription.created", 900, a.clone()),
            (format!("evt_{i}_a2"), "customer.subscription.updated", 800, a.clone().with(|s| s.quantity = 7)),
            (format!("evt_{i}_a3"), "customer.subscription.deleted", 700, a.clone().with(|s| s.status = "canceled")),
            (format!("evt_{i}_b1"), "customer.subscription.created", 600, b.clone()),
            (format!("evt_{i}_b2"), "customer.subscription.updated", 500, b.clone().with(|s| s.status = "past_due")),
        ];
        let last = match i % 3 {
            0 => (b.id.clone(), "past_due"),
            1 => {
                history.push((
                    format!("evt_{i}_b3"),
                    "customer.subscription.deleted",
                    400,
                    b.clone().with(|s| s.status = "canceled"),
                ));
                (b.id.clone(), "canceled")
            }
            _ => {
                history.push((
                    format!("evt_{i}_b3"),
                    "customer.subscription.deleted",
                    400,
                    b.clone().with(|s| s.status = "canceled"),
                ));
                history.push((format!("evt_{i}_c1"), "customer.subscription.created", 300, c.clone()));
                (c.id.clone(), "active")
            }
        };
        expected.push((org, last.0, last.1));
        let now = now();
        for (n, (id, kind, ago, sub)) in history.iter().enumerate() {
            let body = stripe_event(id, kind, now - ago, sub.object());
            if (i + n) % 4 == 0 {
                deliveries.push(body.clone()); // a redelivery
            }
            deliveries.push(body);
        }
    }
    shuffle(&mut deliveries, 0x05ee_d0f0_d3e5);
    let statuses: Vec<u16> = futures_util::stream::iter(deliveries.iter())
        .map(|body| async { app.stripe_webhook(body).await.status.as_u16() })
        .buffer_unordered(16)
        .collect()
        .await;
    assert!(statuses.iter().all(|s| *s == 200), "every delivery is taken: {statuses:?}");
    for (org, psid, status) in expected {
        let sub = app.subscription(&org, &smith.token).await;
        assert_eq!(sub.expect(200)["provider_subscription_id"], psid.as_str(), "org {org}");
        assert_eq!(sub.body["status"], status, "org {org}");
    }
}
