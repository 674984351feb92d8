//! Background work leases: with several replicas on one database, no two
//! work on the same org at once. Raced here through the store, the way the
//! reconciliation pass of each replica claims an org.

use orgplane_server::clock::Clock;
use reqwest::Method;

use crate::billing_support::*;
use crate::helpers::{Backend, spawn_app};
use crate::on_both_backends;

async fn racing_replicas_get_one_reconciliation_lease_per_org(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let alice = app.user("alice@example.com").await;
    let org: orgplane_core::OrgId = app.team(&alice, "Agency").await.parse().expect("org id");
    let store = orgplane_store::Store::connect(&orgplane_store::ConnectOptions {
        max_connections: 8,
        ..orgplane_store::ConnectOptions::new(app.database_url.clone())
    })
    .await
    .expect("store");
    let now = time::OffsetDateTime::now_utc();
    let ttl = time::Duration::minutes(5);
    let mut tasks = Vec::new();
    for replica in 0..24 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store.claim_reconcile_lease(org, &format!("replica-{replica}"), now, ttl).await.expect("claim")
        }));
    }
    let mut winners = 0;
    for t in tasks {
        if t.await.expect("task") {
            winners += 1;
        }
    }
    assert_eq!(winners, 1, "exactly one replica holds the org");
    // While the lease runs, nobody else gets it; once released (or expired), one can.
    assert!(!store.claim_reconcile_lease(org, "late-replica", now, ttl).await.expect("claim"));
    assert_eq!(app.count(&format!("SELECT COUNT(*) FROM reconcile_leases WHERE org_id = '{org}'")).await, 1);
    let later = now + time::Duration::minutes(6);
    assert!(store.claim_reconcile_lease(org, "late-replica", later, ttl).await.expect("claim after expiry"));
    store.release_reconcile_lease(org, "late-replica", None).await.expect("release");
    assert!(store.claim_reconcile_lease(org, "another", later, ttl).await.expect("claim after release"));
    store.close().await;
}

/// The config of an `orgplane reconcile` process against `app`'s database
/// and a Stripe stand-in.
fn reconcile_config(app: &crate::helpers::TestApp, stripe: &StandIn) -> orgplane_server::Config {
    let mut config = orgplane_server::Config {
        database_url: Some(app.database_url.clone()),
        data_dir: app.data_dir.clone(),
        max_connections: 4,
        plans: Some(plans()),
        ..orgplane_server::Config::default()
    };
    config.billing.stripe.api_key = Some(STRIPE_KEY.to_owned());
    config.billing.stripe.api_base = stripe.origin.clone();
    config.billing.stripe.webhook_secrets = vec![STRIPE_SECRET.to_owned()];
    config
}

/// `count` team orgs, each with a live Stripe subscription the stand-in holds.
async fn orgs_with_subscriptions(
    app: &crate::helpers::TestApp,
    stripe: &StandIn,
    count: usize,
) -> Vec<(String, String)> {
    let owner = app.user("owner@clinics.example").await;
    let mut orgs = Vec::new();
    for i in 0..count {
        let org = app.team(&owner, &format!("Clinic {i}")).await;
        let sub = StripeSub::new(&format!("sub_walk_{i}"), Some(&org), &format!("cus_walk_{i}"));
        stripe.set_subscription(&sub.id, sub.object());
        let body = stripe_event(&format!("evt_walk_{i}"), "customer.subscription.created", now(), sub.object());
        app.stripe_webhook(&body).await.expect(200);
        orgs.push((org, sub.id));
    }
    orgs
}

fn fetches(stripe: &StandIn, psid: &str) -> usize {
    stripe.requests_to(Method::GET, &format!("/v1/subscriptions/{psid}")).len()
}

/// A pass killed mid-way leaves its org's lease behind: the next pass skips
/// that org, counts and logs it, and takes it once the short lease runs out.
async fn a_lease_left_by_a_dead_pass_is_counted_and_taken_over_when_it_runs_out(backend: Backend) {
    let stripe = StandIn::stripe().await;
    let Some(app) = stripe_app(backend, &stripe, |_| {}).await else { return };
    let orgs = orgs_with_subscriptions(&app, &stripe, 1).await;
    let (org, psid) = &orgs[0];
    let config = reconcile_config(&app, &stripe);
    let store = orgplane_store::Store::connect(&orgplane_store::ConnectOptions {
        max_connections: 2,
        ..orgplane_store::ConnectOptions::new(app.database_url.clone())
    })
    .await
    .expect("store");
    let org_id: orgplane_core::OrgId = org.parse().expect("org id");
    // What a pass killed while fetching leaves: its lease, with a little time left.
    let left = time::Duration::seconds(2);
    assert!(store.claim_reconcile_lease(org_id, "dead-pass", app.clock.now(), left).await.expect("claim"));
    let before = fetches(&stripe, psid);
    let report =
        orgplane_server::billing::reconcile_from_config(&config, None, app.clock.clone()).await.expect("a pass");
    assert_eq!(report.orgs_leased_elsewhere, 1, "{report:?}");
    assert_eq!(report.subscriptions_checked, 0, "{report:?}");
    assert_eq!(fetches(&stripe, psid), before);
    // Once the lease runs out, the next pass takes the org.
    app.clock.advance(left + time::Duration::seconds(1));
    let report =
        orgplane_server::billing::reconcile_from_config(&config, None, app.clock.clone()).await.expect("a pass");
    assert_eq!(report.subscriptions_checked, 1, "{report:?}");
    assert_eq!(fetches(&stripe, psid), before + 1);
    store.close().await;
}

/// Two `orgplane reconcile` processes at once fetch each subscription once
/// between them; a third pass right after fetches nothing; a pass for one
/// org (`--org`, or the sync route) always fetches it.
async fn concurrent_reconcile_passes_fetch_each_subscription_once(backend: Backend) {
    let stripe = StandIn::stripe().await;
    let Some(app) = stripe_app(backend, &stripe, |_| {}).await else { return };
    let orgs = orgs_with_subscriptions(&app, &stripe, 6).await;
    let config = reconcile_config(&app, &stripe);
    let before: Vec<usize> = orgs.iter().map(|(_, psid)| fetches(&stripe, psid)).collect();
    let (a, b) = tokio::join!(
        orgplane_server::billing::reconcile_from_config(&config, None, app.clock.clone()),
        orgplane_server::billing::reconcile_from_config(&config, None, app.clock.clone()),
    );
    let (a, b) = (a.expect("pass a"), b.expect("pass b"));
    assert_eq!(a.subscriptions_checked + b.subscriptions_checked, orgs.len(), "{a:?} {b:?}");
    for ((_, psid), before) in orgs.iter().zip(&before) {
        assert_eq!(fetches(&stripe, psid), before + 1, "{psid} is fetched once");
    }
    let third = orgplane_server::billing::reconcile_from_config(&config, None, app.clock.clone()).await.expect("pass");
    assert_eq!(third.subscriptions_checked, 0);
    assert_eq!(third.orgs_checked_recently, orgs.len());
    let (org, psid) = &orgs[0];
    let one =
        orgplane_server::billing::reconcile_from_config(&config, Some(org.parse().expect("org id")), app.clock.clone())
            .await
            .expect("pass");
    assert_eq!(one.subscriptions_checked, 1);
    assert_eq!(fetches(&stripe, psid), before[0] + 2);
}

on_both_backends!(
    racing_replicas_get_one_reconciliation_lease_per_org,
    a_lease_left_by_a_dead_pass_is_counted_and_taken_over_when_it_runs_out,
    concurrent_reconcile_passes_fetch_each_subscription_once,
);
