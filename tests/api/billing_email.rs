//! The billing e-mail follows the org to its Stripe customer (issue 10 item
//! 9): changing `billing_email` (PATCH `/v1/orgs/{org}`) reaches Stripe as
//! `POST /v1/customers/{id}` with `email=…` and an `Idempotency-Key`, sent
//! by a background worker from a row written with the change. The Stripe
//! stand-in checks that only `email` is sent and that a repeated key comes
//! with the same e-mail.

use reqwest::Method;
use serde_json::json;

use crate::billing_support::*;
use crate::helpers::{Backend, TestApp, TestUser};
use crate::on_both_backends;

on_both_backends!(
    a_changed_billing_email_reaches_the_stripe_customer,
    a_failing_update_is_retried_with_the_same_key_until_stripe_takes_it,
    a_newer_email_replaces_one_that_keeps_failing,
    two_quick_changes_leave_stripe_with_the_second,
    dozens_of_concurrent_changes_leave_stripe_with_the_orgs_final_email,
    a_deleted_stripe_customer_is_given_up_after_one_try,
    a_lemon_squeezy_billed_org_sends_nothing_to_any_provider,
    a_change_queued_while_no_worker_runs_is_sent_by_the_next_server,
);

const CUSTOMER: &str = "cus_clinic";

fn customer_path() -> String {
    format!("/v1/customers/{CUSTOMER}")
}

/// An org billed at Stripe (customer [`CUSTOMER`], which the stand-in knows).
async fn stripe_clinic(backend: Backend, stripe: &StandIn) -> Option<(TestApp, TestUser, String)> {
    let app = stripe_app(backend, stripe, |c| c.billing.refetch_on_webhook = false).await?;
    let smith = app.user("dr.smith@clinic.example").await;
    let org = app.team(&smith, "Downtown Clinic").await;
    let sub = StripeSub::new("sub_clinic", Some(&org), CUSTOMER);
    app.stripe_webhook(&stripe_event("evt_created", "customer.subscription.created", now(), sub.object()))
        .await
        .expect(200);
    stripe.set_customer(CUSTOMER, "old@clinic.example");
    Some((app, smith, org))
}

async fn set_email(app: &TestApp, smith: &TestUser, org: &str, email: &str) {
    let res = app.patch(&format!("/v1/orgs/{org}"), &smith.token, json!({"billing_email": email})).await;
    assert_eq!(res.expect(200)["billing_email"], json!(email));
}

/// Waits until Stripe's customer holds `email`, moving the app clock on so
/// that retries fall due.
async fn until_stripe_holds(app: &TestApp, stripe: &StandIn, email: &str) {
    eventually(30, &format!("Stripe's customer to hold {email}"), || async {
        if stripe.customer(CUSTOMER).is_some_and(|c| c["email"] == json!(email)) {
            return true;
        }
        app.clock.advance(time::Duration::seconds(5));
        false
    })
    .await;
}

/// How many rows of the org's e-mail syncs are in `status` (SQL).
async fn syncs(app: &TestApp, org: &str, status: &str) -> i64 {
    app.count(&format!("SELECT COUNT(*) FROM billing_email_syncs WHERE org_id = '{org}' AND status = '{status}'")).await
}

async fn a_changed_billing_email_reaches_the_stripe_customer(backend: Backend) {
    let stripe = StandIn::stripe().await;
    let Some((app, smith, org)) = stripe_clinic(backend, &stripe).await else { return };
    set_email(&app, &smith, &org, "billing@clinic.example").await;
    until_stripe_holds(&app, &stripe, "billing@clinic.example").await;
    eventually(10, "the sync to be done", || async { syncs(&app, &org, "done").await == 1 }).await;

    let sent = stripe.answered(Method::POST, &customer_path());
    assert_eq!(sent.len(), 1, "one update");
    let (request, status) = &sent[0];
    assert_eq!(*status, 200);
    assert_eq!(request.form(), vec![("email".to_owned(), "billing@clinic.example".to_owned())]);
    assert_eq!(request.header("authorization"), Some(format!("Bearer {STRIPE_KEY}").as_str()));
    assert_eq!(request.header("content-type"), Some("application/x-www-form-urlencoded"));
    assert!(request.header("idempotency-key").is_some_and(|k| !k.is_empty()));

    // A change of the name only, or the same e-mail again, sends nothing.
    app.patch(&format!("/v1/orgs/{org}"), &smith.token, json!({"name": "Uptown Clinic"})).await.expect(200);
    set_email(&app, &smith, &org, "billing@clinic.example").await;
    // Nothing was queued (the row is written with the change, in its
    // transaction), so there is nothing for the worker to send.
    assert_eq!(syncs(&app, &org, "pending").await, 0, "nothing queued");
    assert_eq!(stripe.requests_to(Method::POST, &customer_path()).len(), 1);

    // Clearing the e-mail clears it at Stripe (an empty `email`).
    let res = app.patch(&format!("/v1/orgs/{org}"), &smith.token, json!({"billing_email": null})).await;
    assert_eq!(res.expect(200)["billing_email"], json!(null));
    until_stripe_holds(&app, &stripe, "").await;
    let sent = stripe.requests_to(Method::POST, &customer_path());
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[1].form(), vec![("email".to_owned(), String::new())]);
    assert_ne!(sent[0].header("idempotency-key"), sent[1].header("idempotency-key"), "a new change, a new key");
}

async fn a_failing_update_is_retried_with_the_same_key_until_stripe_takes_it(backend: Backend) {
    let stripe = StandIn::stripe().await;
    let Some((app, smith, org)) = stripe_clinic(backend, &stripe).await else { return };
    stripe.fail_next(Method::POST, &customer_path(), 2);
    set_email(&app, &smith, &org, "billing@clinic.example").await;
    until_stripe_holds(&app, &stripe, "billing@clinic.example").await;
    eventually(10, "the sync to be done", || async { syncs(&app, &org, "done").await == 1 }).await;

    let sent = stripe.answered(Method::POST, &customer_path());
    let statuses: Vec<u16> = sent.iter().map(|(_, s)| *s).collect();
    assert_eq!(statuses, vec![500, 500, 200], "two failures, then the one update");
    let key = sent[0].0.header("idempotency-key").expect("a key").to_owned();
    for (request, _) in &sent {
        assert_eq!(request.form(), vec![("email".to_owned(), "billing@clinic.example".to_owned())]);
        assert_eq!(request.header("idempotency-key"), Some(key.as_str()), "a retry repeats the key");
    }
    let failing = app
        .count(&format!(
            "SELECT COUNT(*) FROM billing_email_syncs WHERE org_id = '{org}' AND attempts = 3 AND failures = 0 \
             AND last_error IS NULL AND failing_since IS NULL"
        ))
        .await;
    assert_eq!(failing, 1, "three attempts, and the failures are over");
}

async fn a_newer_email_replaces_one_that_keeps_failing(backend: Backend) {
    let stripe = StandIn::stripe().await;
    let Some((app, smith, org)) = stripe_clinic(backend, &stripe).await else { return };
    stripe.fail_next(Method::POST, &customer_path(), 2);
    set_email(&app, &smith, &org, "first@clinic.example").await;
    eventually(10, "the first failure", || async { !stripe.requests_to(Method::POST, &customer_path()).is_empty() })
        .await;
    eventually(10, "the failure recorded", || async {
        app.count(&format!("SELECT COUNT(*) FROM billing_email_syncs WHERE org_id = '{org}' AND failures > 0")).await
            == 1
    })
    .await;
    // An operator sees the failing update while it is retried.
    let key = app.api_key().await;
    let listed = app.get("/v1/billing/email_syncs/failures", &key).await;
    let failing = listed.expect(200)["data"][0].clone();
    assert_eq!(failing["org_id"], json!(org));
    assert_eq!(failing["customer_id"], json!(CUSTOMER));
    assert_eq!(failing["status"], json!("pending"));
    assert!(failing["failures"].as_i64().is_some_and(|n| n >= 1), "{failing}");
    assert!(failing["failing_since"].is_string() && failing["last_error"].is_string(), "{failing}");
    set_email(&app, &smith, &org, "latest@clinic.example").await;
    until_stripe_holds(&app, &stripe, "latest@clinic.example").await;
    eventually(10, "the sync to be done", || async { syncs(&app, &org, "done").await == 1 }).await;

    let sent = stripe.answered(Method::POST, &customer_path());
    let succeeded: Vec<_> = sent.iter().filter(|(_, s)| *s == 200).collect();
    assert_eq!(succeeded.len(), 1, "one update reached Stripe: {sent:?}");
    assert_eq!(succeeded[0].0.field("email").as_deref(), Some("latest@clinic.example"));
    assert_eq!(sent.last().map(|(_, s)| *s), Some(200), "nothing after the update");
    let first_key = sent[0].0.header("idempotency-key").expect("a key");
    assert_eq!(sent[0].0.field("email").as_deref(), Some("first@clinic.example"));
    assert_ne!(succeeded[0].0.header("idempotency-key"), Some(first_key), "the newer e-mail has its own key");
    assert_eq!(stripe.customer(CUSTOMER).expect("customer")["email"], json!("latest@clinic.example"));
    let listed = app.get("/v1/billing/email_syncs/failures", &key).await;
    assert_eq!(listed.expect(200)["data"], json!([]), "nothing fails any more");
}

async fn two_quick_changes_leave_stripe_with_the_second(backend: Backend) {
    let stripe = StandIn::stripe().await;
    let Some((app, smith, org)) = stripe_clinic(backend, &stripe).await else { return };
    set_email(&app, &smith, &org, "first@clinic.example").await;
    set_email(&app, &smith, &org, "second@clinic.example").await;
    until_stripe_holds(&app, &stripe, "second@clinic.example").await;
    eventually(10, "the sync to be done", || async { syncs(&app, &org, "done").await == 1 }).await;
    let sent = stripe.requests_to(Method::POST, &customer_path());
    assert!((1..=2).contains(&sent.len()), "one update per change at most: {sent:?}");
    assert_eq!(sent.last().and_then(|r| r.field("email")).as_deref(), Some("second@clinic.example"));
    assert_eq!(stripe.customer(CUSTOMER).expect("customer")["email"], json!("second@clinic.example"));
}

async fn dozens_of_concurrent_changes_leave_stripe_with_the_orgs_final_email(backend: Backend) {
    let stripe = StandIn::stripe().await;
    let Some((app, smith, org)) = stripe_clinic(backend, &stripe).await else { return };
    let changes = (0..32).map(|n| {
        let (app, smith, org) = (&app, &smith, &org);
        async move {
            // The answer shows the org as it is when read back, maybe with a later change.
            let body = json!({"billing_email": format!("billing{n}@clinic.example")});
            app.patch(&format!("/v1/orgs/{org}"), &smith.token, body).await.expect(200);
        }
    });
    futures_util::future::join_all(changes).await;
    let org_now = app.get(&format!("/v1/orgs/{org}"), &smith.token).await;
    let last = org_now.expect(200)["billing_email"].as_str().expect("an e-mail").to_owned();
    until_stripe_holds(&app, &stripe, &last).await;
    eventually(10, "the sync to be done", || async { syncs(&app, &org, "done").await == 1 }).await;
    assert_eq!(stripe.customer(CUSTOMER).expect("customer")["email"], json!(last), "the latest e-mail won");
    assert_eq!(app.count("SELECT COUNT(*) FROM billing_email_syncs").await, 1, "one row for the org's customer");
    // Every key went with one e-mail (the stand-in asserts it on replay too).
    let sent = stripe.requests_to(Method::POST, &customer_path());
    let mut keys = std::collections::BTreeMap::new();
    for request in &sent {
        let key = request.header("idempotency-key").expect("a key").to_owned();
        let email = request.field("email").expect("email");
        assert_eq!(keys.entry(key).or_insert_with(|| email.clone()), &email);
    }
}

async fn a_deleted_stripe_customer_is_given_up_after_one_try(backend: Backend) {
    let stripe = StandIn::stripe().await;
    let Some(app) = stripe_app(backend, &stripe, |c| c.billing.refetch_on_webhook = false).await else {
        return;
    };
    let smith = app.user("dr.smith@clinic.example").await;
    let org = app.team(&smith, "Downtown Clinic").await;
    let sub = StripeSub::new("sub_gone", Some(&org), "cus_deleted");
    app.stripe_webhook(&stripe_event("evt_created", "customer.subscription.created", now(), sub.object()))
        .await
        .expect(200);
    set_email(&app, &smith, &org, "billing@clinic.example").await;
    eventually(10, "the sync to be given up", || async { syncs(&app, &org, "gone").await == 1 }).await;
    app.clock.advance(time::Duration::hours(2));
    // A given-up row is never claimed again (claims take pending rows only).
    assert_eq!(syncs(&app, &org, "pending").await, 0, "nothing left to send");
    let sent = stripe.answered(Method::POST, "/v1/customers/cus_deleted");
    assert_eq!(sent.iter().map(|(_, s)| *s).collect::<Vec<_>>(), vec![404], "one try, no retries");
    let shown = app
        .count(&format!("SELECT COUNT(*) FROM billing_email_syncs WHERE org_id = '{org}' AND last_error LIKE '%404%'"))
        .await;
    assert_eq!(shown, 1, "the reason is kept for an operator");
    let key = app.api_key().await;
    let listed = app.get("/v1/billing/email_syncs/failures", &key).await;
    let data = listed.expect(200)["data"].as_array().expect("data").clone();
    assert_eq!(data.len(), 1, "{data:?}");
    assert_eq!(data[0]["org_id"], json!(org));
    assert_eq!(data[0]["customer_id"], json!("cus_deleted"));
    assert_eq!(data[0]["status"], json!("gone"));
    assert_eq!(data[0]["attempts"], json!(1));
    assert!(data[0]["last_error"].as_str().is_some_and(|e| e.contains("404")), "{}", data[0]);
    app.get("/v1/billing/email_syncs/failures", &smith.token).await.expect_error(403, "forbidden");
}

async fn a_lemon_squeezy_billed_org_sends_nothing_to_any_provider(backend: Backend) {
    let ls = StandIn::lemonsqueezy().await;
    let stripe = StandIn::stripe().await;
    let stripe_origin = stripe.origin.clone();
    let Some(app) = lemonsqueezy_app(backend, &ls, |c| {
        c.billing.refetch_on_webhook = false;
        c.billing.stripe.api_key = Some(STRIPE_KEY.to_owned());
        c.billing.stripe.api_base = stripe_origin;
    })
    .await
    else {
        return;
    };
    let smith = app.user("dr.smith@clinic.example").await;
    let org = app.team(&smith, "Downtown Clinic").await;
    let created = ls_event("subscription_created", Some(&org), "active", "2026-01-01T10:00:00.000000Z", None);
    app.ls_webhook(&created).await.expect(200);
    assert_eq!(app.subscription(&org, &smith.token).await.expect(200)["provider"], json!("lemonsqueezy"));
    let ls_before = ls.requests().len();

    set_email(&app, &smith, &org, "billing@clinic.example").await;
    assert_eq!(app.count("SELECT COUNT(*) FROM billing_email_syncs").await, 0, "no customer update is queued");
    assert!(stripe.requests().is_empty(), "nothing goes to Stripe");
    assert_eq!(ls.requests().len(), ls_before, "Lemon Squeezy has no customer update: nothing goes there");
}

async fn a_change_queued_while_no_worker_runs_is_sent_by_the_next_server(backend: Backend) {
    // A server without a Stripe API key takes the change (as one that
    // crashed right after the commit would have): it is kept, not sent.
    let Some(app) = stripe_webhook_app(backend, |_| {}).await else { return };
    let smith = app.user("dr.smith@clinic.example").await;
    let org = app.team(&smith, "Downtown Clinic").await;
    let sub = StripeSub::new("sub_clinic", Some(&org), CUSTOMER);
    app.stripe_webhook(&stripe_event("evt_created", "customer.subscription.created", now(), sub.object()))
        .await
        .expect(200);
    set_email(&app, &smith, &org, "billing@clinic.example").await;
    assert_eq!(syncs(&app, &org, "pending").await, 1, "queued with the change");

    // The next server on the same database, with Stripe configured, sends it.
    let stripe = StandIn::stripe().await;
    stripe.set_customer(CUSTOMER, "old@clinic.example");
    let mut config = orgplane_server::Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        database_url: Some(app.database_url.clone()),
        data_dir: app.data_dir.join(format!("next-{}", uuid::Uuid::now_v7().simple())),
        migrate_on_start: false,
        max_connections: 4,
        ..orgplane_server::Config::default()
    };
    config.auth.issuers = vec![app.idp.issuer_config()];
    config.plans = Some(plans());
    config.billing.stripe.api_key = Some(STRIPE_KEY.to_owned());
    config.billing.stripe.api_base = stripe.origin.clone();
    config.billing.stripe.webhook_secrets = vec![STRIPE_SECRET.to_owned()];
    let next = orgplane_server::Application::build_with_clock(config, app.clock.clone()).await.expect("builds");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(next.run_until(async move {
        let _ = stopped.await;
    }));
    until_stripe_holds(&app, &stripe, "billing@clinic.example").await;
    eventually(10, "the sync to be done", || async { syncs(&app, &org, "done").await == 1 }).await;
    let sent = stripe.requests_to(Method::POST, &customer_path());
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].form(), vec![("email".to_owned(), "billing@clinic.example".to_owned())]);
    let _ = stop.send(());
    task.await.expect("joins").expect("stops cleanly");
}
