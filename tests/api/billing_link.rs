//! Subscriptions made elsewhere: `POST /v1/billing/link` (and `orgplane
//! billing link`) ties one to an org through the webhooks' apply path;
//! Lemon Squeezy discovery applies the store's subscriptions of known
//! customers and lists the others once in `GET /v1/billing/unlinked`. The
//! stand-ins check each provider request field by field.

use std::process::Command;

use reqwest::Method;
use serde_json::{Value, json};

use crate::billing_support::*;
use crate::helpers::{Backend, TestApp, TestUser};
use crate::on_both_backends;

on_both_backends!(
    linking_a_stripe_subscription_made_elsewhere_applies_it_and_writes_one_event,
    a_subscription_another_org_holds_is_refused_without_naming_that_org,
    an_org_with_a_live_subscription_is_refused_subscription_exists,
    unknown_subscriptions_orgs_and_bad_input_change_nothing,
    concurrent_links_of_one_subscription_to_many_orgs_have_exactly_one_winner,
    concurrent_links_of_many_subscriptions_to_one_org_have_exactly_one_winner,
    discovery_applies_known_customers_and_lists_each_unknown_subscription_once,
    the_cli_links_a_lemonsqueezy_subscription,
    a_sandbox_subscription_links_only_to_the_org_that_bought_it,
);

async fn clinic(app: &TestApp) -> (TestUser, String) {
    let smith = app.user("dr.smith@clinic.example").await;
    let org = app.team(&smith, "Downtown Clinic").await;
    (smith, org)
}

async fn link(app: &TestApp, key: &str, provider: &str, subscription: &str, org: &str) -> crate::helpers::Res {
    app.post("/v1/billing/link", key, json!({"provider": provider, "subscription_id": subscription, "org_id": org}))
        .await
}

/// A subscription made in Stripe's dashboard: no orgplane metadata.
fn dashboard_sub(id: &str, customer: &str) -> Value {
    StripeSub::new(id, None, customer).object()
}

async fn linking_a_stripe_subscription_made_elsewhere_applies_it_and_writes_one_event(backend: Backend) {
    let stripe = StandIn::stripe().await;
    let Some(app) = stripe_app(backend, &stripe, |_| {}).await else { return };
    let key = app.api_key().await;
    let (smith, org) = clinic(&app).await;
    stripe.set_subscription("sub_dashboard", dashboard_sub("sub_dashboard", "cus_dashboard"));
    assert_eq!(app.plan_of(&org, &smith.token).await, "free");

    let res = link(&app, &key, "stripe", "sub_dashboard", &org).await;
    let body = res.expect(200);
    assert_eq!(body["org_id"], json!(org));
    assert_eq!(body["provider"], "stripe");
    assert_eq!(body["provider_subscription_id"], "sub_dashboard");
    assert_eq!(body["status"], "active");
    assert_eq!(body["seats"], 5);
    assert_eq!(app.plan_of(&org, &smith.token).await, "business", "applied: the org is entitled at once");
    assert_eq!(app.event_count(&org, "subscription.linked").await, 1);
    assert_eq!(app.event_count(&org, "subscription.created").await, 1);
    // Its customer is the org's now: a later webhook naming only the customer finds the org.
    let tied = app
        .count(&format!(
            "SELECT COUNT(*) FROM billing_customers WHERE provider = 'stripe' AND customer_id = 'cus_dashboard' AND org_id = '{org}'"
        ))
        .await;
    assert_eq!(tied, 1);
    let fetched = stripe.requests_to(Method::GET, "/v1/subscriptions/sub_dashboard");
    assert_eq!(fetched.len(), 1, "fetched once from the provider");
    assert_eq!(fetched[0].header("authorization"), Some(format!("Bearer {STRIPE_KEY}").as_str()));
    assert_eq!(fetched[0].query_string, "");
    assert!(fetched[0].body.is_empty());

    // Linking it again to the same org applies it again and writes no second event.
    link(&app, &key, "stripe", "sub_dashboard", &org).await.expect(200);
    assert_eq!(app.event_count(&org, "subscription.linked").await, 1);
    assert_eq!(app.event_count(&org, "subscription.created").await, 1);

    // A user token is not an API key.
    link(&app, &smith.token, "stripe", "sub_dashboard", &org).await.expect_error(403, "forbidden");
}

async fn a_subscription_another_org_holds_is_refused_without_naming_that_org(backend: Backend) {
    let stripe = StandIn::stripe().await;
    let Some(app) = stripe_app(backend, &stripe, |_| {}).await else { return };
    let key = app.api_key().await;
    let (smith, first) = clinic(&app).await;
    let second = app.team(&smith, "Uptown Clinic").await;
    stripe.set_subscription("sub_shared", dashboard_sub("sub_shared", "cus_shared"));
    link(&app, &key, "stripe", "sub_shared", &first).await.expect(200);

    let res = link(&app, &key, "stripe", "sub_shared", &second).await;
    res.expect_error(409, "conflict");
    let message = res.body["error"]["message"].as_str().expect("message");
    assert!(message.contains("another organization"), "{message}");
    assert!(!message.contains(&first), "the holder is not named: {message}");
    app.get(&format!("/v1/orgs/{second}/subscription"), &smith.token).await.expect_error(404, "not_found");
    assert_eq!(app.event_count(&second, "subscription.linked").await, 0);
    assert_eq!(app.plan_of(&second, &smith.token).await, "free");

    // A subscription whose metadata names another org is refused too: its webhooks would go there.
    stripe.set_subscription("sub_named", StripeSub::new("sub_named", Some(&first), "cus_named").object());
    link(&app, &key, "stripe", "sub_named", &second).await.expect_error(409, "conflict");
    app.get(&format!("/v1/orgs/{second}/subscription"), &smith.token).await.expect_error(404, "not_found");
}

async fn an_org_with_a_live_subscription_is_refused_subscription_exists(backend: Backend) {
    let stripe = StandIn::stripe().await;
    let Some(app) = stripe_app(backend, &stripe, |_| {}).await else { return };
    let key = app.api_key().await;
    let (smith, org) = clinic(&app).await;
    stripe.set_subscription("sub_first", dashboard_sub("sub_first", "cus_clinic"));
    stripe.set_subscription("sub_second", dashboard_sub("sub_second", "cus_clinic"));
    link(&app, &key, "stripe", "sub_first", &org).await.expect(200);

    let res = link(&app, &key, "stripe", "sub_second", &org).await;
    res.expect_error(409, "subscription_exists");
    assert!(res.body["error"]["message"].as_str().expect("message").contains("sub_first"), "{}", res.body);
    let sub = app.subscription(&org, &smith.token).await;
    assert_eq!(sub.expect(200)["provider_subscription_id"], "sub_first");
    let known =
        app.count("SELECT COUNT(*) FROM provider_subscriptions WHERE provider_subscription_id = 'sub_second'").await;
    assert_eq!(known, 0, "nothing of the refused one was stored");

    // Once the first has ended, the second links.
    stripe.set_subscription(
        "sub_first",
        StripeSub::new("sub_first", None, "cus_clinic").with(|s| s.status = "canceled").object(),
    );
    app.post(&format!("/v1/orgs/{org}/subscription/sync"), &smith.token, json!({})).await.expect(200);
    link(&app, &key, "stripe", "sub_second", &org).await.expect(200);
    assert_eq!(app.subscription(&org, &smith.token).await.expect(200)["provider_subscription_id"], "sub_second");
}

async fn unknown_subscriptions_orgs_and_bad_input_change_nothing(backend: Backend) {
    let stripe = StandIn::stripe().await;
    let Some(app) = stripe_app(backend, &stripe, |_| {}).await else { return };
    let key = app.api_key().await;
    let (smith, org) = clinic(&app).await;
    stripe.set_subscription("sub_known", dashboard_sub("sub_known", "cus_known"));

    link(&app, &key, "stripe", "sub_nowhere", &org).await.expect_error(404, "not_found");
    let nobody = "org_00000000000000000000000000";
    link(&app, &key, "stripe", "sub_known", nobody).await.expect_error(404, "not_found");
    let res = link(&app, &key, "paypal", "sub_known", &org).await;
    res.expect_error(400, "invalid_request");
    assert_eq!(res.body["error"]["param"], "provider");
    let res = link(&app, &key, "stripe", "  ", &org).await;
    res.expect_error(400, "invalid_request");
    assert_eq!(res.body["error"]["param"], "subscription_id");
    let res = link(&app, &key, "stripe", "sub_known", "clinic").await;
    res.expect_error(400, "invalid_request");
    assert_eq!(res.body["error"]["param"], "org_id");
    let res = link(&app, &key, "stripe", "sub_known/../x", &org).await;
    res.expect_error(400, "invalid_request");
    assert_eq!(res.body["error"]["param"], "subscription_id");
    // Lemon Squeezy is not configured here: the caller asked for what this
    // deployment can't do (400, param provider), not an outage.
    let res = link(&app, &key, "lemonsqueezy", "1", &org).await;
    res.expect_error(400, "invalid_request");
    assert_eq!(res.body["error"]["param"], "provider");
    assert!(res.body["error"]["message"].as_str().is_some_and(|m| m.contains("lemonsqueezy.api_key")), "{}", res.body);

    app.get(&format!("/v1/orgs/{org}/subscription"), &smith.token).await.expect_error(404, "not_found");
    assert_eq!(app.count("SELECT COUNT(*) FROM provider_subscriptions").await, 0);
    assert_eq!(app.count("SELECT COUNT(*) FROM billing_customers").await, 0);
    assert_eq!(app.count("SELECT COUNT(*) FROM events WHERE type = 'subscription.linked'").await, 0);
}

const RACERS: usize = 24;

async fn concurrent_links_of_one_subscription_to_many_orgs_have_exactly_one_winner(backend: Backend) {
    let stripe = StandIn::stripe().await;
    let Some(app) = stripe_app(backend, &stripe, |_| {}).await else { return };
    let key = app.api_key().await;
    let (smith, _) = clinic(&app).await;
    let mut orgs = Vec::new();
    for n in 0..RACERS {
        orgs.push(app.team(&smith, &format!("Clinic {n}")).await);
    }
    stripe.set_subscription("sub_contested", dashboard_sub("sub_contested", "cus_contested"));

    let calls = orgs.iter().map(|org| link(&app, &key, "stripe", "sub_contested", org));
    let results = futures_util::future::join_all(calls).await;
    let winners: Vec<&String> =
        orgs.iter().zip(&results).filter(|(_, r)| r.status.as_u16() == 200).map(|(o, _)| o).collect();
    assert_eq!(
        winners.len(),
        1,
        "exactly one org links it: {:?}",
        results.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    for res in results.iter().filter(|r| r.status.as_u16() != 200) {
        res.expect_error(409, "conflict");
    }
    let winner = winners[0];
    let held = app
        .count(&format!(
            "SELECT COUNT(*) FROM provider_subscriptions WHERE provider_subscription_id = 'sub_contested' AND org_id = '{winner}'"
        ))
        .await;
    assert_eq!(held, 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM subscriptions").await, 1, "one org has a subscription");
    assert_eq!(app.count("SELECT COUNT(*) FROM events WHERE type = 'subscription.linked'").await, 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM billing_customers").await, 1);
}

async fn concurrent_links_of_many_subscriptions_to_one_org_have_exactly_one_winner(backend: Backend) {
    let stripe = StandIn::stripe().await;
    let Some(app) = stripe_app(backend, &stripe, |_| {}).await else { return };
    let key = app.api_key().await;
    let (smith, org) = clinic(&app).await;
    let subs: Vec<String> = (0..RACERS).map(|n| format!("sub_offer{n:02}")).collect();
    for (n, sub) in subs.iter().enumerate() {
        stripe.set_subscription(sub, dashboard_sub(sub, &format!("cus_offer{n:02}")));
    }

    let calls = subs.iter().map(|sub| link(&app, &key, "stripe", sub, &org));
    let results = futures_util::future::join_all(calls).await;
    let winners: Vec<&String> =
        subs.iter().zip(&results).filter(|(_, r)| r.status.as_u16() == 200).map(|(s, _)| s).collect();
    assert_eq!(winners.len(), 1, "exactly one link: {:?}", results.iter().map(|r| r.status).collect::<Vec<_>>());
    for res in results.iter().filter(|r| r.status.as_u16() != 200) {
        res.expect_error(409, "subscription_exists");
    }
    let sub = app.subscription(&org, &smith.token).await;
    assert_eq!(sub.expect(200)["provider_subscription_id"], json!(winners[0]));
    assert_eq!(app.count("SELECT COUNT(*) FROM provider_subscriptions").await, 1);
    assert_eq!(app.event_count(&org, "subscription.linked").await, 1);
}

/// Lemon Squeezy attributes of a subscription made in its dashboard.
fn ls_sub(customer: i64, email: &str, status: &str) -> Value {
    let mut attrs = ls_attributes(status, "2026-03-01T10:00:00.000000Z", None, 3);
    attrs["customer_id"] = json!(customer);
    attrs["user_email"] = json!(email);
    attrs
}

async fn discovery_applies_known_customers_and_lists_each_unknown_subscription_once(backend: Backend) {
    let ls = StandIn::lemonsqueezy().await;
    let Some(app) = lemonsqueezy_app(backend, &ls, |_| {}).await else { return };
    let key = app.api_key().await;
    let (smith, org) = clinic(&app).await;
    let walk_in = app.team(&smith, "Walk-in Clinic").await;
    // The clinic bought once through orgplane (customer 67890), and it expired.
    ls.set_subscription("1", ls_attributes("expired", "2026-02-01T10:00:00.000000Z", None, 4));
    let expired = ls_event("subscription_expired", Some(&org), "expired", "2026-02-01T10:00:00.000000Z", None);
    app.ls_webhook(&expired).await.expect(200);
    // Then it bought again in Lemon Squeezy's dashboard, and a stranger bought too.
    ls.set_subscription("501", ls_sub(67890, "dr.smith@clinic.example", "active"));
    ls.set_subscription("502", ls_sub(99999, "walk-in@clinic.example", "on_trial"));
    ls.cap_pages(2);
    app.get("/v1/billing/unlinked", &key).await.expect(200);

    app.state.billing.reconcile_once(None).await.expect("a reconciliation pass");

    let sub = app.subscription(&org, &smith.token).await;
    assert_eq!(sub.expect(200)["provider_subscription_id"], "501", "applied to the org its customer is tied to");
    assert_eq!(app.plan_of(&org, &smith.token).await, "business");
    let listed = app.get("/v1/billing/unlinked", &key).await;
    let body = listed.expect(200).clone();
    assert_eq!(body["has_more"], false);
    let data = body["data"].as_array().expect("list");
    assert_eq!(data.len(), 1, "only the unknown one: {body}");
    let unlinked = &data[0];
    assert!(unlinked["id"].as_str().expect("id").starts_with("uls_"));
    assert_eq!(unlinked["provider"], "lemonsqueezy");
    assert_eq!(unlinked["subscription_id"], "502");
    assert_eq!(unlinked["customer_id"], "99999");
    assert_eq!(unlinked["customer_email"], "walk-in@clinic.example");
    assert_eq!(unlinked["price_id"], VARIANT_BUSINESS);
    assert_eq!(unlinked["plan"], "business");
    assert_eq!(unlinked["status"], "trialing");
    assert_eq!(unlinked["first_seen_at"], unlinked["last_seen_at"]);

    // Each list request named the store, its page and the largest page size, with the API key.
    let pages = ls.requests_to(Method::GET, "/v1/subscriptions");
    assert_eq!(pages.len(), 2, "three subscriptions in pages of two");
    for (n, page) in pages.iter().enumerate() {
        assert_eq!(
            page.query(),
            vec![
                ("filter[store_id]".to_owned(), LS_STORE.to_owned()),
                ("page[number]".to_owned(), (n + 1).to_string()),
                ("page[size]".to_owned(), "100".to_owned()),
            ]
        );
        assert_eq!(page.header("authorization"), Some(format!("Bearer {LS_KEY}").as_str()));
        assert_eq!(page.header("accept"), Some("application/vnd.api+json"));
        assert!(page.body.is_empty());
    }

    // A second pass lists it once still.
    app.clock.advance(time::Duration::minutes(5));
    app.state.billing.reconcile_once(None).await.expect("a second pass");
    let again = app.get("/v1/billing/unlinked", &key).await;
    let again = again.expect(200);
    assert_eq!(again["data"].as_array().expect("list").len(), 1);
    assert_eq!(again["data"][0]["id"], unlinked["id"]);
    assert_eq!(again["data"][0]["first_seen_at"], unlinked["first_seen_at"]);
    assert_eq!(app.count("SELECT COUNT(*) FROM unlinked_subscriptions").await, 1);

    // An operator links it: it leaves the list, and its org is on trial.
    let res = link(&app, &key, "lemonsqueezy", "502", &walk_in).await;
    assert_eq!(res.expect(200)["status"], "trialing");
    let after = app.get("/v1/billing/unlinked", &key).await;
    assert_eq!(after.expect(200), &json!({"data": [], "has_more": false}));
    assert_eq!(app.count("SELECT COUNT(*) FROM unlinked_subscriptions").await, 0);
    assert_eq!(app.plan_of(&walk_in, &smith.token).await, "business");
    // A third pass finds every subscription held.
    let report = app.state.billing.reconcile_once(None).await.expect("a third pass");
    assert_eq!((report.subscriptions_discovered, report.subscriptions_unlinked), (0, 0));
    assert_eq!(app.count("SELECT COUNT(*) FROM unlinked_subscriptions").await, 0);

    // The list's cursor is one of its items, and it needs an API key.
    app.get("/v1/billing/unlinked?starting_after=uls_nothing", &key).await.expect_error(400, "invalid_request");
    app.get("/v1/billing/unlinked", &smith.token).await.expect_error(403, "forbidden");
}

async fn the_cli_links_a_lemonsqueezy_subscription(backend: Backend) {
    let ls = StandIn::lemonsqueezy().await;
    let Some(app) = lemonsqueezy_app(backend, &ls, |_| {}).await else { return };
    let (smith, org) = clinic(&app).await;
    let other = app.team(&smith, "Uptown Clinic").await;
    ls.set_subscription("601", ls_sub(70001, "dr.smith@clinic.example", "active"));
    let config = app.data_dir.join("link.toml");
    std::fs::create_dir_all(&app.data_dir).expect("data dir");
    std::fs::write(
        &config,
        format!(
            "[billing.lemonsqueezy]\napi_key = \"{LS_KEY}\"\nstore_id = \"{LS_STORE}\"\nwebhook_secret = \"{LS_SECRET}\"\napi_base = \"{}/v1\"\n",
            ls.origin
        ),
    )
    .expect("config written");
    let run = |org: &str| {
        Command::new(env!("CARGO_BIN_EXE_orgplane"))
            .args(["billing", "link", "--provider", "lemonsqueezy", "--subscription", "601", "--org", org])
            .arg("--config")
            .arg(&config)
            .args(["--database-url", &app.database_url])
            .env_remove("ORGPLANE_LOG")
            .output()
            .expect("runs")
    };
    let out = run(&org);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(&format!("linked lemonsqueezy subscription 601 to {org}")), "{stdout}");
    let sub = app.subscription(&org, &smith.token).await;
    assert_eq!(sub.expect(200)["provider_subscription_id"], "601");
    assert_eq!(app.event_count(&org, "subscription.linked").await, 1);
    let fetched = ls.requests_to(Method::GET, "/v1/subscriptions/601");
    assert_eq!(fetched.len(), 1);
    assert_eq!(fetched[0].header("authorization"), Some(format!("Bearer {LS_KEY}").as_str()));
    assert_eq!(fetched[0].header("accept"), Some("application/vnd.api+json"));

    // To another org: refused, with the contract's words, and nothing changes.
    let out = run(&other);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("already linked to another organization") && stderr.contains("(conflict)"), "{stderr}");
    app.get(&format!("/v1/orgs/{other}/subscription"), &smith.token).await.expect_error(404, "not_found");
}

async fn a_sandbox_subscription_links_only_to_the_org_that_bought_it(backend: Backend) {
    let Some(app) = sandbox_app(backend, |_| {}).await else { return };
    let key = app.api_key().await;
    let (smith, org) = clinic(&app).await;
    let other = app.team(&smith, "Uptown Clinic").await;
    let body = json!({"plan": "business", "seats": 2, "success_url": "https://app.example/ok", "cancel_url": "https://app.example/no"});
    let res = app.post(&format!("/v1/orgs/{org}/checkout"), &smith.token, body).await;
    let url = res.expect(200)["url"].as_str().expect("url").to_owned();
    let paid = app.send_request(app.http.post(format!("{url}/pay")).header("accept", "application/json")).await;
    paid.expect(200);
    let sub = app.subscription(&org, &smith.token).await;
    let id = sub.expect(200)["provider_subscription_id"].as_str().expect("id").to_owned();

    link(&app, &key, "sandbox", "sbx_nothing", &org).await.expect_error(404, "not_found");
    let res = link(&app, &key, "sandbox", &id, &other).await;
    res.expect_error(409, "conflict");
    app.get(&format!("/v1/orgs/{other}/subscription"), &smith.token).await.expect_error(404, "not_found");
    // Its own org: applied again, no new event.
    let res = link(&app, &key, "sandbox", &id, &org).await;
    assert_eq!(res.expect(200)["provider_subscription_id"], json!(id));
    assert_eq!(app.event_count(&org, "subscription.linked").await, 0);
}
