//! Plan changes (issue 10, items 1–4): upgrade and downgrade through each
//! provider's stand-in, which checks the exact request; the preview's
//! numbers from the stand-in; the downgrade check (409 naming members,
//! `force`); one trial per org; resuming a paused subscription; and
//! concurrent changes of one org.

use axum::http::Method;
use serde_json::{Value, json};

use crate::billing_support::{
    PRICE_BUSINESS, PRICE_ENTERPRISE, Recorded, StandIn, StripeSub, VARIANT_BUSINESS, VARIANT_ENTERPRISE,
    lemonsqueezy_app, ls_attributes, ls_event, now, plans, sandbox_app, stripe_app, stripe_event,
};
use crate::helpers::{Backend, TestApp, TestUser};
use crate::on_both_backends;

on_both_backends!(
    stripe_upgrade_and_downgrade_swap_the_price_of_the_same_item,
    lemonsqueezy_upgrade_and_downgrade_patch_the_variant,
    the_sandbox_changes_plans_at_once_with_an_event,
    the_preview_shows_the_stand_ins_numbers_and_what_a_downgrade_leaves_over,
    a_downgrade_below_the_seats_in_use_is_refused_naming_members_unless_forced,
    bad_change_requests_change_nothing,
    an_org_gets_one_trial_and_the_plan_sets_its_length,
    a_paused_subscription_resumes_and_an_active_one_does_not,
    concurrent_checkouts_of_one_org_give_exactly_one_trial,
    a_paused_lemonsqueezy_subscription_resumes_by_unpausing,
    concurrent_identical_changes_are_one_change_at_the_provider,
    the_rust_client_previews_changes_and_resumes,
);

/// An org on `price` at the Stripe stand-in, with `quantity` seats.
async fn stripe_org(
    backend: Backend,
    price: &str,
    quantity: i64,
) -> Option<(StandIn, TestApp, TestUser, String, StripeSub)> {
    let stripe = StandIn::stripe().await;
    let app = stripe_app(backend, &stripe, |_| {}).await?;
    let owner = app.user("dr.smith@clinic.example").await;
    let org = app.team(&owner, "Downtown Clinic").await;
    let sub = StripeSub::new("sub_clinic", Some(&org), "cus_clinic").with(|s| {
        s.price = price.to_owned();
        s.quantity = quantity;
    });
    stripe.set_subscription(&sub.id, sub.object());
    let created = stripe_event("evt_created", "customer.subscription.created", now(), sub.object());
    app.stripe_webhook(&created).await.expect(200);
    Some((stripe, app, owner, org, sub))
}

fn change_path(org: &str) -> String {
    format!("/v1/orgs/{org}/subscription/change")
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

async fn stripe_upgrade_and_downgrade_swap_the_price_of_the_same_item(backend: Backend) {
    let Some((stripe, app, owner, org, sub)) = stripe_org(backend, PRICE_BUSINESS, 5).await else { return };
    let path = format!("/v1/subscriptions/{}", sub.id);

    let up = app.post(&change_path(&org), &owner.token, json!({"plan": "enterprise"})).await;
    assert_eq!(up.expect(200)["plan"], "enterprise");
    let calls = stripe.requests_to(Method::POST, &path);
    assert_eq!(calls.len(), 1);
    assert_eq!(
        calls[0].form(),
        pairs(&[
            ("items[0][id]", &sub.item_id()),
            ("items[0][price]", PRICE_ENTERPRISE),
            ("proration_behavior", "create_prorations"),
        ])
    );
    assert!(calls[0].header("idempotency-key").is_some_and(|k| k.starts_with("orgplane-change-")));
    // The provider's webhook says the same; entitlements follow.
    let updated =
        stripe_event("evt_up", "customer.subscription.updated", now(), stripe.subscription(&sub.id).expect("sub"));
    app.stripe_webhook(&updated).await.expect(200);
    assert_eq!(app.plan_of(&org, &owner.token).await, "enterprise");

    let down =
        app.post(&change_path(&org), &owner.token, json!({"plan": "business", "seats": 3, "proration": "none"})).await;
    assert_eq!(down.expect(200)["plan"], "business");
    assert_eq!(down.body["seats"], 3);
    let calls = stripe.requests_to(Method::POST, &path);
    assert_eq!(
        calls[1].form(),
        pairs(&[
            ("items[0][id]", &sub.item_id()),
            ("items[0][price]", PRICE_BUSINESS),
            ("items[0][quantity]", "3"),
            ("proration_behavior", "none"),
        ])
    );
    assert_ne!(calls[0].header("idempotency-key"), calls[1].header("idempotency-key"));
    let held = stripe.subscription(&sub.id).expect("sub");
    assert_eq!(held["items"]["data"].as_array().map(Vec::len), Some(1), "one item, never a second");
    let updated = stripe_event("evt_down", "customer.subscription.updated", now(), held);
    app.stripe_webhook(&updated).await.expect(200);
    assert_eq!(app.plan_of(&org, &owner.token).await, "business");
    let limits = app.get(&format!("/v1/orgs/{org}/entitlements"), &owner.token).await;
    assert_eq!(limits.expect(200)["limits"]["seats"], json!({"limit": 3, "used": 1}));
}

async fn lemonsqueezy_upgrade_and_downgrade_patch_the_variant(backend: Backend) {
    let ls = StandIn::lemonsqueezy().await;
    let Some(app) = lemonsqueezy_app(backend, &ls, |c| {
        let mut catalog = plans();
        let enterprise = catalog.get_mut("enterprise").expect("enterprise");
        enterprise.prices.insert("lemonsqueezy".into(), vec![VARIANT_ENTERPRISE.into()]);
        c.plans = Some(catalog);
    })
    .await
    else {
        return;
    };
    let owner = app.user("dr.smith@clinic.example").await;
    let org = app.team(&owner, "Downtown Clinic").await;
    ls.set_subscription("1", ls_attributes("active", "2026-05-01T10:00:00.000000Z", None, 4));
    let created = ls_event("subscription_created", Some(&org), "active", "2026-05-01T10:00:00.000000Z", None);
    app.ls_webhook(&created).await.expect(200);
    assert_eq!(app.plan_of(&org, &owner.token).await, "business");

    let up = app.post(&change_path(&org), &owner.token, json!({"plan": "enterprise"})).await;
    assert_eq!(up.expect(200)["plan"], "enterprise");
    let down =
        app.post(&change_path(&org), &owner.token, json!({"plan": "business", "proration": "always_invoice"})).await;
    assert_eq!(down.expect(200)["plan"], "business");
    let patches = ls.requests_to(Method::PATCH, "/v1/subscriptions/1");
    let sent: Vec<Value> = patches.iter().map(Recorded::json).collect();
    assert_eq!(
        sent,
        [
            json!({"data": {"type": "subscriptions", "id": "1", "attributes": {"variant_id": VARIANT_ENTERPRISE.parse::<i64>().expect("number")}}}),
            json!({"data": {"type": "subscriptions", "id": "1", "attributes": {"variant_id": VARIANT_BUSINESS.parse::<i64>().expect("number"), "invoice_immediately": true}}}),
        ]
    );
    // The provider's webhook (re-fetched from the stand-in) keeps business.
    let updated = ls_event("subscription_updated", Some(&org), "active", "2026-05-02T10:00:00.000000Z", None);
    app.ls_webhook(&updated).await.expect(200);
    assert_eq!(app.plan_of(&org, &owner.token).await, "business");
}

async fn the_sandbox_changes_plans_at_once_with_an_event(backend: Backend) {
    let Some(app) = sandbox_app(backend, |_| {}).await else { return };
    let owner = app.user("dr.smith@clinic.example").await;
    let org = app.team(&owner, "Downtown Clinic").await;
    let body = json!({"plan": "business", "seats": 2, "success_url": "https://app.example/ok", "cancel_url": "https://app.example/no"});
    let url = app.post(&format!("/v1/orgs/{org}/checkout"), &owner.token, body).await.expect(200)["url"]
        .as_str()
        .expect("url")
        .to_owned();
    app.send_request(app.http.post(format!("{url}/pay")).header("accept", "application/json")).await.expect(200);
    assert_eq!(app.plan_of(&org, &owner.token).await, "business");
    let before = app.provider_event_count().await;

    let up = app.post(&change_path(&org), &owner.token, json!({"plan": "enterprise"})).await;
    assert_eq!(up.expect(200)["plan"], "enterprise");
    assert_eq!(up.body["price_id"], "sandbox_enterprise");
    assert_eq!(app.plan_of(&org, &owner.token).await, "enterprise");
    let down = app.post(&change_path(&org), &owner.token, json!({"plan": "business", "seats": 4})).await;
    assert_eq!(down.expect(200)["plan"], "business");
    assert_eq!(down.body["seats"], 4);
    assert_eq!(app.plan_of(&org, &owner.token).await, "business");
    assert_eq!(app.provider_event_count().await, before + 2, "each change is a provider event");
    assert_eq!(app.event_count(&org, "subscription.updated").await, 2);
}

async fn the_preview_shows_the_stand_ins_numbers_and_what_a_downgrade_leaves_over(backend: Backend) {
    let Some((stripe, app, owner, org, sub)) = stripe_org(backend, PRICE_ENTERPRISE, 5).await else { return };
    for name in ["nurse-a", "nurse-b"] {
        let nurse = app.user(&format!("{name}@clinic.example")).await;
        app.add_member(&org, &owner, &nurse, "member").await;
    }
    stripe.set_preview(json!({
        "object": "invoice", "amount_due": 1234, "currency": "eur", "next_payment_attempt": 1_900_000_000,
        "lines": {"object": "list", "data": [
            {"amount": -5000, "description": "Unused time on Enterprise", "quantity": 5,
             "period": {"start": 1_890_000_000, "end": 1_900_000_000},
             "parent": {"subscription_item_details": {"proration": true}}},
            {"amount": 6234, "description": "2 × Business", "quantity": 2,
             "period": {"start": 1_900_000_000, "end": 1_902_592_000},
             "parent": {"subscription_item_details": {"proration": false}}}
        ]}
    }));
    let path = format!("/v1/orgs/{org}/subscription/change_preview");
    let res = app.post(&path, &owner.token, json!({"plan": "business", "seats": 2})).await;
    let body = res.expect(200);
    assert_eq!(body["amount_due"], 1234);
    assert_eq!(body["currency"], "eur");
    assert_eq!(body["lines"][0]["amount"], -5000);
    assert_eq!(body["lines"][0]["proration"], true);
    assert_eq!(body["lines"][1]["description"], "2 × Business");
    assert_eq!(body["next_payment_at"], "2030-03-17T17:46:40Z");
    assert_eq!(body["over_limits"], json!({"seats": {"used": 3, "limit": 2}}));
    assert_eq!(body["features_lost"], json!([]));
    assert_eq!(body["proration_by_provider"], false);
    let previews = stripe.requests_to(Method::POST, "/v1/invoices/create_preview");
    assert_eq!(
        previews[0].form(),
        pairs(&[
            ("subscription", &sub.id),
            ("subscription_details[items][0][id]", &sub.item_id()),
            ("subscription_details[items][0][price]", PRICE_BUSINESS),
            ("subscription_details[items][0][quantity]", "2"),
            ("subscription_details[proration_behavior]", "create_prorations"),
        ])
    );
    assert!(
        stripe.requests_to(Method::POST, &format!("/v1/subscriptions/{}", sub.id)).is_empty(),
        "a preview changes nothing"
    );
}

async fn a_downgrade_below_the_seats_in_use_is_refused_naming_members_unless_forced(backend: Backend) {
    let Some((stripe, app, owner, org, sub)) = stripe_org(backend, PRICE_ENTERPRISE, 5).await else { return };
    for name in ["nurse-a", "nurse-b"] {
        let nurse = app.user(&format!("{name}@clinic.example")).await;
        app.add_member(&org, &owner, &nurse, "member").await;
    }
    let refused = app.post(&change_path(&org), &owner.token, json!({"plan": "business", "seats": 2})).await;
    refused.expect_error(409, "conflict");
    let message = refused.body["error"]["message"].as_str().expect("message");
    assert!(message.contains("nurse-b@clinic.example"), "names the newest member: {message}");
    assert!(!message.contains("dr.smith"), "never the owner: {message}");
    let path = format!("/v1/subscriptions/{}", sub.id);
    assert!(stripe.requests_to(Method::POST, &path).is_empty(), "refused before the provider");
    assert_eq!(app.plan_of(&org, &owner.token).await, "enterprise");

    let forced =
        app.post(&change_path(&org), &owner.token, json!({"plan": "business", "seats": 2, "force": true})).await;
    assert_eq!(forced.expect(200)["plan"], "business");
    assert_eq!(app.member_count(&org).await, 3, "nobody is removed");
    let limits = app.get(&format!("/v1/orgs/{org}/entitlements"), &owner.token).await;
    assert_eq!(limits.expect(200)["limits"]["seats"], json!({"limit": 2, "used": 3}));
}

async fn bad_change_requests_change_nothing(backend: Backend) {
    let Some((stripe, app, owner, org, _sub)) = stripe_org(backend, PRICE_BUSINESS, 5).await else { return };
    let unknown = app.post(&change_path(&org), &owner.token, json!({"plan": "platinum"})).await;
    assert_eq!(unknown.body["error"]["param"], "plan", "{:?}", unknown.body);
    assert_eq!(unknown.body["error"]["code"], "invalid_request");
    let default = app.post(&change_path(&org), &owner.token, json!({"plan": "free"})).await;
    assert!(default.body["error"]["message"].as_str().expect("message").contains("cancel"), "{:?}", default.body);
    let proration =
        app.post(&change_path(&org), &owner.token, json!({"plan": "enterprise", "proration": "sometimes"})).await;
    assert_eq!(proration.body["error"]["code"], "invalid_request", "{:?}", proration.body);
    let seats = app.post(&change_path(&org), &owner.token, json!({"plan": "enterprise", "seats": 0})).await;
    assert_eq!(seats.body["error"]["code"], "invalid_request", "{:?}", seats.body);
    let member = app.user("nurse@clinic.example").await;
    app.add_member(&org, &owner, &member, "member").await;
    app.post(&change_path(&org), &member.token, json!({"plan": "enterprise"})).await.expect_error(403, "forbidden");
    let gets = stripe.requests().into_iter().filter(|r| r.method != Method::GET).count();
    assert_eq!(gets, 0, "no bad request reached the provider");
    assert_eq!(app.plan_of(&org, &owner.token).await, "business");
}

async fn an_org_gets_one_trial_and_the_plan_sets_its_length(backend: Backend) {
    let stripe = StandIn::stripe().await;
    let Some(app) = stripe_app(backend, &stripe, |c| {
        let mut catalog = plans();
        catalog.get_mut("business").expect("business").trial_days = Some(7);
        c.plans = Some(catalog);
        c.billing.trial_period_days = Some(14);
        c.billing.pause_trials_without_payment_method = true;
    })
    .await
    else {
        return;
    };
    let owner = app.user("dr.smith@clinic.example").await;
    let org = app.team(&owner, "Downtown Clinic").await;
    let checkout = |plan: &str| json!({"plan": plan, "success_url": "https://app.example/ok", "cancel_url": "https://app.example/no"});
    app.post(&format!("/v1/orgs/{org}/checkout"), &owner.token, checkout("business")).await.expect(200);
    app.post(&format!("/v1/orgs/{org}/checkout"), &owner.token, checkout("enterprise")).await.expect(200);
    let sessions = stripe.requests_to(Method::POST, "/v1/checkout/sessions");
    assert_eq!(
        sessions[0].field("subscription_data[trial_period_days]").as_deref(),
        Some("7"),
        "the plan's own length"
    );
    assert_eq!(
        sessions[0].field("subscription_data[trial_settings][end_behavior][missing_payment_method]").as_deref(),
        Some("pause")
    );
    assert_eq!(sessions[1].field("subscription_data[trial_period_days]"), None, "a second trial is refused");
    assert_eq!(sessions[1].field("subscription_data[trial_settings][end_behavior][missing_payment_method]"), None);
    // Another org still gets its trial (the configured length for enterprise).
    let other = app.team(&owner, "Uptown Clinic").await;
    app.post(&format!("/v1/orgs/{other}/checkout"), &owner.token, checkout("enterprise")).await.expect(200);
    let sessions = stripe.requests_to(Method::POST, "/v1/checkout/sessions");
    assert_eq!(sessions[2].field("subscription_data[trial_period_days]").as_deref(), Some("14"));

    // The trial arrives: entitlements show it and when it ends.
    let sub = StripeSub::new("sub_trial", Some(&org), "cus_clinic").with(|s| s.status = "trialing");
    let mut object = sub.object();
    object["trial_end"] = json!(1_900_000_000);
    stripe.set_subscription(&sub.id, object.clone());
    app.stripe_webhook(&stripe_event("evt_trial", "customer.subscription.created", now(), object)).await.expect(200);
    let entitlements = app.get(&format!("/v1/orgs/{org}/entitlements"), &owner.token).await;
    assert_eq!(entitlements.expect(200)["status"], "trialing");
    assert_eq!(entitlements.body["plan"], "business");
    assert_eq!(entitlements.body["trial_end"], "2030-03-17T17:46:40Z");
}

async fn a_paused_subscription_resumes_and_an_active_one_does_not(backend: Backend) {
    let stripe = StandIn::stripe().await;
    let Some(app) = stripe_app(backend, &stripe, |_| {}).await else { return };
    let owner = app.user("dr.smith@clinic.example").await;
    let org = app.team(&owner, "Downtown Clinic").await;
    let sub = StripeSub::new("sub_paused", Some(&org), "cus_clinic").with(|s| s.status = "paused");
    stripe.set_subscription(&sub.id, sub.object());
    app.stripe_webhook(&stripe_event("evt_paused", "customer.subscription.paused", now(), sub.object()))
        .await
        .expect(200);
    assert_eq!(app.subscription(&org, &owner.token).await.expect(200)["status"], "paused");

    let path = format!("/v1/orgs/{org}/subscription/resume");
    let resumed = app.post(&path, &owner.token, json!({})).await;
    assert_eq!(resumed.expect(200)["status"], "active");
    let calls = stripe.requests_to(Method::POST, &format!("/v1/subscriptions/{}/resume", sub.id));
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].form(), pairs(&[("billing_cycle_anchor", "now")]));
    assert!(calls[0].header("idempotency-key").is_some_and(|k| k.starts_with("orgplane-resume-")));

    app.post(&path, &owner.token, json!({})).await.expect_error(409, "conflict");
    assert_eq!(stripe.requests_to(Method::POST, &format!("/v1/subscriptions/{}/resume", sub.id)).len(), 1);
}

async fn concurrent_checkouts_of_one_org_give_exactly_one_trial(backend: Backend) {
    const CHECKOUTS: usize = 30;
    let stripe = StandIn::stripe().await;
    let Some(app) = stripe_app(backend, &stripe, |c| c.billing.trial_period_days = Some(14)).await else { return };
    let owner = app.user("dr.smith@clinic.example").await;
    let org = app.team(&owner, "Downtown Clinic").await;
    let body = |plan: &str| json!({"plan": plan, "success_url": "https://app.example/ok", "cancel_url": "https://app.example/no"});
    let checkouts: Vec<_> = (0..CHECKOUTS)
        .map(|i| {
            let plan = if i % 2 == 0 { "business" } else { "enterprise" };
            let req =
                app.http.post(app.url(&format!("/v1/orgs/{org}/checkout"))).bearer_auth(&owner.token).json(&body(plan));
            tokio::spawn(async move { crate::helpers::read_res(req.send().await.expect("reaches the server")).await })
        })
        .collect();
    for checkout in checkouts {
        checkout.await.expect("joins").expect(200);
    }
    let sessions = stripe.requests_to(Method::POST, "/v1/checkout/sessions");
    assert_eq!(sessions.len(), CHECKOUTS);
    let trials: Vec<_> = sessions.iter().filter_map(|s| s.field("subscription_data[trial_period_days]")).collect();
    assert_eq!(trials, ["14"], "exactly one checkout carries a trial");
    assert_eq!(app.count(&format!("SELECT COUNT(*) FROM org_trials WHERE org_id = '{org}'")).await, 1);

    // A later checkout gets none either.
    app.post(&format!("/v1/orgs/{org}/checkout"), &owner.token, body("business")).await.expect(200);
    let last = stripe.requests_to(Method::POST, "/v1/checkout/sessions").pop().expect("a session");
    assert_eq!(last.field("subscription_data[trial_period_days]"), None);
    assert_eq!(app.count(&format!("SELECT COUNT(*) FROM org_trials WHERE org_id = '{org}'")).await, 1);
}

async fn a_paused_lemonsqueezy_subscription_resumes_by_unpausing(backend: Backend) {
    let ls = StandIn::lemonsqueezy().await;
    let Some(app) = lemonsqueezy_app(backend, &ls, |_| {}).await else { return };
    let owner = app.user("dr.smith@clinic.example").await;
    let org = app.team(&owner, "Downtown Clinic").await;
    let mut paused = ls_attributes("paused", "2026-05-01T10:00:00.000000Z", None, 3);
    paused["pause"] = json!({"mode": "void", "resumes_at": null});
    ls.set_subscription("1", paused);
    let event = ls_event("subscription_paused", Some(&org), "paused", "2026-05-01T10:00:00.000000Z", None);
    app.ls_webhook(&event).await.expect(200);
    assert_eq!(app.subscription(&org, &owner.token).await.expect(200)["status"], "paused");

    let path = format!("/v1/orgs/{org}/subscription/resume");
    let resumed = app.post(&path, &owner.token, json!({})).await;
    assert_eq!(resumed.expect(200)["status"], "active");
    let patches = ls.requests_to(Method::PATCH, "/v1/subscriptions/1");
    assert_eq!(patches.len(), 1);
    assert_eq!(
        patches[0].json(),
        json!({"data": {"type": "subscriptions", "id": "1", "attributes": {"pause": null}}}),
        "an unpause and nothing else"
    );
    assert_eq!(app.plan_of(&org, &owner.token).await, "business");

    app.post(&path, &owner.token, json!({})).await.expect_error(409, "conflict");
    assert_eq!(ls.requests_to(Method::PATCH, "/v1/subscriptions/1").len(), 1, "an active one is not resumed");
}

async fn concurrent_identical_changes_are_one_change_at_the_provider(backend: Backend) {
    let Some((stripe, app, owner, org, sub)) = stripe_org(backend, PRICE_BUSINESS, 5).await else { return };
    let requests: Vec<_> = (0..24)
        .map(|_| {
            let req = app
                .http
                .post(app.url(&change_path(&org)))
                .bearer_auth(&owner.token)
                .json(&json!({"plan": "enterprise"}));
            tokio::spawn(async move { crate::helpers::read_res(req.send().await.expect("reaches the server")).await })
        })
        .collect();
    for request in requests {
        let res = request.await.expect("joins");
        assert_eq!(res.expect(200)["plan"], "enterprise");
    }
    let calls = stripe.requests_to(Method::POST, &format!("/v1/subscriptions/{}", sub.id));
    let mut keys: Vec<&str> = calls.iter().filter_map(|c| c.header("idempotency-key")).collect();
    assert_eq!(keys.len(), calls.len(), "every call carries a key");
    keys.sort_unstable();
    keys.dedup();
    // Every request that read the state before the change asked with the
    // same key (Stripe replays the first answer: one change); one that read
    // it after found the plan already bought and asked nothing.
    assert_eq!(keys.len(), 1, "one key for one change: {keys:?}");
    for call in &calls {
        assert_eq!(call.field("items[0][price]").as_deref(), Some(PRICE_ENTERPRISE));
        assert_eq!(call.field("items[0][id]"), Some(sub.item_id()));
    }
    let held = stripe.subscription(&sub.id).expect("sub");
    assert_eq!(held["items"]["data"].as_array().map(Vec::len), Some(1));
    assert_eq!(app.plan_of(&org, &owner.token).await, "enterprise");
    let stored = app.subscription(&org, &owner.token).await;
    assert_eq!(stored.expect(200)["price_id"], PRICE_ENTERPRISE);
}

async fn the_rust_client_previews_changes_and_resumes(backend: Backend) {
    use orgplane_client::{CheckoutRequest, Client, Credentials, Error, ErrorCode, PlanChangeRequest};
    let Some(app) = sandbox_app(backend, |_| {}).await else { return };
    let owner = app.user("dr.smith@clinic.example").await;
    let org = app.team(&owner, "Downtown Clinic").await;
    let nurse = app.user("nurse@clinic.example").await;
    app.add_member(&org, &owner, &nurse, "member").await;
    let client = Client::new(&app.base, Credentials::Bearer(owner.token.clone()));
    let checkout = CheckoutRequest {
        plan: "business".into(),
        seats: Some(2),
        success_url: "https://app.example/ok".into(),
        cancel_url: "https://app.example/no".into(),
    };
    let started = client.start_checkout(&org, &checkout).await.expect("checkout");
    app.send_request(app.http.post(format!("{}/pay", started.url)).header("accept", "application/json"))
        .await
        .expect(200);

    let to_enterprise = PlanChangeRequest { plan: "enterprise".into(), ..PlanChangeRequest::default() };
    let preview = client.preview_subscription_change(&org, &to_enterprise).await.expect("preview");
    assert_eq!((preview.plan.as_str(), preview.seats, preview.amount_due), ("enterprise", 2, Some(0)));
    assert!(preview.over_limits.is_empty() && preview.features_lost.is_empty());
    let changed = client.change_subscription_plan(&org, &to_enterprise).await.expect("change");
    assert_eq!(changed.plan.as_deref(), Some("enterprise"));

    let to_one_seat = PlanChangeRequest { plan: "business".into(), seats: Some(1), ..PlanChangeRequest::default() };
    let preview = client.preview_subscription_change(&org, &to_one_seat).await.expect("preview");
    assert_eq!(preview.over_limits["seats"].used, 2);
    assert_eq!(preview.over_limits["seats"].limit, 1);
    match client.change_subscription_plan(&org, &to_one_seat).await {
        Err(Error::Api(e)) => {
            assert_eq!((e.status, e.code), (409, ErrorCode::Conflict));
            assert!(e.message.contains("nurse@clinic.example"), "{}", e.message);
        }
        other => panic!("expected a 409, got {other:?}"),
    }
    let forced = client.change_subscription_plan(&org, &PlanChangeRequest { force: true, ..to_one_seat }).await;
    assert_eq!(forced.expect("forced").seats, 1);
    // The sandbox never pauses: nothing to resume.
    match client.resume_subscription(&org).await {
        Err(Error::Api(e)) => assert_eq!((e.status, e.code), (409, ErrorCode::Conflict)),
        other => panic!("expected a 409, got {other:?}"),
    }
}
