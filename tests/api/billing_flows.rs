//! Billing flows through HTTP: checkouts asserted field by field on
//! stand-ins for Stripe and Lemon Squeezy, the seed's clinic checklist, the
//! Lemon Squeezy lifecycle, the `--dev` sandbox, and the billing admin.

use reqwest::Method;
use serde_json::{Value, json};

use crate::billing_support::*;
use crate::helpers::{Backend, TestApp, TestUser};
use crate::on_both_backends;

on_both_backends!(
    a_subscription_whose_webhook_never_arrived_is_found_by_reconciliation,
    a_stripe_checkout_sends_every_field_stripe_expects,
    a_lemonsqueezy_checkout_sends_every_field_lemonsqueezy_expects,
    checkout_input_and_permissions_are_checked,
    the_downtown_clinic_subscribes_and_keeps_its_plan_when_people_change,
    the_lemonsqueezy_lifecycle_keeps_the_plan_until_it_ends,
    the_sandbox_upgrades_a_personal_org_offline,
    the_sandbox_ends_a_cancelled_subscription_at_period_end,
    the_billing_admin_is_handed_over_not_lost,
    one_reconciliation_pass_for_one_org_repairs_it,
    a_reconciliation_pass_rechecks_live_subscriptions_and_not_ended_ones,
);

const SUCCESS: &str = "https://app.example/billing/done";
const CANCEL: &str = "https://app.example/billing";

fn checkout_body(plan: &str, seats: Option<u32>) -> Value {
    let mut body = json!({"plan": plan, "success_url": SUCCESS, "cancel_url": CANCEL});
    if let Some(n) = seats {
        body["seats"] = json!(n);
    }
    body
}

async fn clinic(app: &TestApp) -> (TestUser, String) {
    let smith = app.user("dr.smith@clinic.example").await;
    let res = app
        .post("/v1/orgs", &smith.token, json!({"name": "Downtown Clinic", "billing_email": "billing@clinic.example"}))
        .await;
    let org = res.expect(201)["id"].as_str().expect("org id").to_owned();
    (smith, org)
}

async fn a_stripe_checkout_sends_every_field_stripe_expects(backend: Backend) {
    let stripe = StandIn::stripe().await;
    let Some(app) = stripe_app(backend, &stripe, |_| {}).await else { return };
    let (smith, org) = clinic(&app).await;
    let res = app.post(&format!("/v1/orgs/{org}/checkout"), &smith.token, checkout_body("business", Some(3))).await;
    let body = res.expect(200);
    assert_eq!(body["url"], "https://checkout.stripe.test/c/pay/cs_test_standin");
    let checkout_id = body["checkout_id"].as_str().expect("checkout id").to_owned();

    let sent = stripe.requests_to(Method::POST, "/v1/checkout/sessions");
    assert_eq!(sent.len(), 1);
    let req = &sent[0];
    assert_eq!(req.header("authorization"), Some(format!("Bearer {STRIPE_KEY}").as_str()));
    assert!(
        req.header("idempotency-key").is_some_and(|k| k.starts_with("orgplane-checkout-") && k.len() <= 255),
        "every POST carries an Idempotency-Key derived from the checkout (see billing_provider_keys)"
    );
    assert!(checkout_id.starts_with("chk_"));
    assert!(req.header("content-type").is_some_and(|c| c.starts_with("application/x-www-form-urlencoded")));
    assert_eq!(req.field("mode").as_deref(), Some("subscription"));
    assert_eq!(req.field("line_items[0][price]").as_deref(), Some(PRICE_BUSINESS), "the plan's first Stripe price");
    assert_eq!(req.field("line_items[0][quantity]").as_deref(), Some("3"));
    assert_eq!(req.field("success_url").as_deref(), Some(SUCCESS));
    assert_eq!(req.field("cancel_url").as_deref(), Some(CANCEL));
    assert_eq!(req.field("client_reference_id").as_deref(), Some(org.as_str()));
    assert_eq!(req.field("subscription_data[metadata][org_id]").as_deref(), Some(org.as_str()));
    assert_eq!(req.field("customer_email").as_deref(), Some("billing@clinic.example"), "the org's billing email");
    assert_eq!(req.field("customer"), None, "no customer yet");
    let names: Vec<String> = req.form().into_iter().map(|(k, _)| k).collect();
    assert_eq!(names.len(), 8, "nothing else is sent: {names:?}");

    // The org's subscription ends; the next checkout reuses its customer.
    let ended = StripeSub::new("sub_ended", Some(&org), "cus_clinic").with(|s| s.status = "canceled");
    app.stripe_webhook(&stripe_event("evt_ended", "customer.subscription.deleted", now(), ended.object()))
        .await
        .expect(200);
    app.post(&format!("/v1/orgs/{org}/checkout"), &smith.token, checkout_body("enterprise", None)).await.expect(200);
    let sent = stripe.requests_to(Method::POST, "/v1/checkout/sessions");
    let req = &sent[1];
    assert_eq!(req.field("customer").as_deref(), Some("cus_clinic"), "the org's known customer");
    assert_eq!(req.field("customer_email"), None, "Stripe takes one or the other");
    assert_eq!(req.field("line_items[0][price]").as_deref(), Some(PRICE_ENTERPRISE));
    assert_eq!(req.field("line_items[0][quantity]").as_deref(), Some("1"), "default: the seats in use");
    assert_ne!(req.header("idempotency-key"), sent[0].header("idempotency-key"));
}

async fn a_lemonsqueezy_checkout_sends_every_field_lemonsqueezy_expects(backend: Backend) {
    let ls = StandIn::lemonsqueezy().await;
    let Some(app) = lemonsqueezy_app(backend, &ls, |_| {}).await else { return };
    let (smith, org) = clinic(&app).await;
    let res = app.post(&format!("/v1/orgs/{org}/checkout"), &smith.token, checkout_body("business", Some(4))).await;
    assert_eq!(res.expect(200)["url"], "https://orgplane.lemonsqueezy.com/checkout/custom/5e8b546c");
    let sent = ls.requests_to(Method::POST, "/v1/checkouts");
    assert_eq!(sent.len(), 1);
    let req = &sent[0];
    assert_eq!(req.header("authorization"), Some(format!("Bearer {LS_KEY}").as_str()));
    assert_eq!(req.header("accept"), Some("application/vnd.api+json"));
    assert_eq!(req.header("content-type"), Some("application/vnd.api+json"));
    let body = req.json();
    let data = &body["data"];
    assert_eq!(data["type"], "checkouts");
    assert_eq!(data["attributes"]["checkout_data"]["custom"]["org_id"], org.as_str());
    assert_eq!(data["attributes"]["checkout_data"]["email"], "billing@clinic.example");
    assert_eq!(data["attributes"]["checkout_data"]["variant_quantities"], json!([{"variant_id": 333, "quantity": 4}]));
    assert_eq!(data["attributes"]["product_options"]["redirect_url"], SUCCESS);
    assert_eq!(data["relationships"]["store"]["data"], json!({"type": "stores", "id": LS_STORE}));
    assert_eq!(data["relationships"]["variant"]["data"], json!({"type": "variants", "id": VARIANT_BUSINESS}));
    // Enterprise has no Lemon Squeezy variant: said, and nothing is sent.
    let res = app.post(&format!("/v1/orgs/{org}/checkout"), &smith.token, checkout_body("enterprise", None)).await;
    res.expect_error(400, "invalid_request");
    assert_eq!(res.body["error"]["param"], "plan");
    assert_eq!(ls.requests().len(), 1);
}

async fn checkout_input_and_permissions_are_checked(backend: Backend) {
    let stripe = StandIn::stripe().await;
    let Some(app) = stripe_app(backend, &stripe, |_| {}).await else { return };
    let (smith, org) = clinic(&app).await;
    let path = format!("/v1/orgs/{org}/checkout");
    for (body, param) in [
        (checkout_body("platinum", None), "plan"),
        (checkout_body("free", None), "plan"),
        (checkout_body("business", Some(0)), "seats"),
        (json!({"plan": "business", "success_url": "javascript:alert(1)", "cancel_url": CANCEL}), "success_url"),
        (json!({"plan": "business", "success_url": SUCCESS, "cancel_url": "/relative"}), "cancel_url"),
    ] {
        let res = app.post(&path, &smith.token, body).await;
        assert_eq!(res.status.as_u16(), 400, "{}", res.body);
        assert_eq!(res.body["error"]["param"], param, "{}", res.body);
    }
    // A member without billing:manage can't buy; an outsider can't see the org.
    let lee = app.user("dr.lee@clinic.example").await;
    app.add_member(&org, &smith, &lee, "member").await;
    app.post(&path, &lee.token, checkout_body("business", None)).await.expect_error(403, "forbidden");
    let stranger = app.user("someone@else.example").await;
    app.post(&path, &stranger.token, checkout_body("business", None)).await.expect_error(404, "not_found");
    assert!(stripe.requests().is_empty(), "nothing reached the provider");
    // Every billing route is in the OpenAPI document.
    let doc = app.get_anonymous("/v1/openapi.json").await;
    for path in [
        "/v1/orgs/{org}/subscription",
        "/v1/orgs/{org}/checkout",
        "/v1/orgs/{org}/billing_portal",
        "/v1/orgs/{org}/subscription/cancel",
        "/v1/orgs/{org}/subscription/reactivate",
        "/v1/orgs/{org}/subscription/seats",
        "/v1/orgs/{org}/subscription/sync",
        "/v1/orgs/{org}/billing_admin",
        "/v1/billing/events",
        "/v1/webhooks/stripe",
        "/v1/webhooks/lemonsqueezy",
    ] {
        assert!(doc.expect(200)["paths"][path].is_object(), "{path} is documented");
        // This server sells through Stripe: the sandbox is neither served nor documented.
        assert!(doc.body["paths"]["/sandbox/checkout/{id}"].is_null());
    }
    // Without a subscription there is nothing to cancel.
    let res = app.post(&format!("/v1/orgs/{org}/subscription/cancel"), &smith.token, json!({})).await;
    res.expect_error(404, "not_found");
}

async fn the_downtown_clinic_subscribes_and_keeps_its_plan_when_people_change(backend: Backend) {
    let stripe = StandIn::stripe().await;
    let Some(app) = stripe_app(backend, &stripe, |_| {}).await else { return };
    let (smith, org) = clinic(&app).await;

    // Dr. Smith subscribes the clinic to business, 5 seats.
    app.post(&format!("/v1/orgs/{org}/checkout"), &smith.token, checkout_body("business", Some(5))).await.expect(200);
    let sub = StripeSub::new("sub_clinic", Some(&org), "cus_clinic");
    stripe.set_subscription("sub_clinic", sub.object());
    let res = app.stripe_webhook(&checkout_completed("evt_cs", now(), &org, "cus_clinic", "sub_clinic")).await;
    assert_eq!(res.expect(200)["outcome"], "created", "the completed checkout fetches the subscription");
    let res =
        app.stripe_webhook(&stripe_event("evt_created", "customer.subscription.created", now(), sub.object())).await;
    assert_eq!(res.expect(200)["outcome"], "unchanged");
    assert!(!stripe.requests_to(Method::GET, "/v1/subscriptions/sub_clinic").is_empty(), "webhooks re-fetch");
    let body = app.subscription(&org, &smith.token).await;
    let body = body.expect(200);
    assert_eq!(body["status"], "active");
    assert_eq!(body["plan"], "business");
    assert_eq!(body["seats"], 5);
    assert_eq!(body["billing_admin_user_id"], smith.id.as_str(), "the buyer is billing admin");
    assert_eq!(app.plan_of(&org, &smith.token).await, "business");

    // A second checkout while the subscription is live.
    let res = app.post(&format!("/v1/orgs/{org}/checkout"), &smith.token, checkout_body("enterprise", None)).await;
    res.expect_error(409, "subscription_exists");

    // Dr. Johnson joins and has the plan at once; so does Dr. Lee.
    let johnson = app.user("dr.johnson@clinic.example").await;
    app.add_member(&org, &smith, &johnson, "member").await;
    let lee = app.user("dr.lee@clinic.example").await;
    app.add_member(&org, &smith, &lee, "member").await;
    assert_eq!(app.plan_of(&org, &johnson.token).await, "business");
    let seen = app.subscription(&org, &johnson.token).await;
    assert_eq!(seen.expect(200)["status"], "active");

    // Dr. Smith hands over the clinic: ownership, then the billing admin role.
    app.patch(&format!("/v1/orgs/{org}/members/{}", johnson.id), &smith.token, json!({"role": "owner"}))
        .await
        .expect(200);
    let res = app.delete(&format!("/v1/orgs/{org}/members/{}", smith.id), &smith.token).await;
    res.expect_error(409, "billing_admin_must_transfer");
    let res = app.put(&format!("/v1/orgs/{org}/billing_admin"), &smith.token, json!({"user_id": johnson.id})).await;
    assert_eq!(res.expect(200)["billing_admin_user_id"], johnson.id.as_str());
    app.delete(&format!("/v1/orgs/{org}/members/{}", smith.id), &smith.token).await.expect(200);
    let body = app.subscription(&org, &johnson.token).await;
    assert_eq!(body.expect(200)["status"], "active", "the subscription stays with the clinic");
    assert_eq!(body.body["billing_admin_user_id"], johnson.id.as_str());
    assert_eq!(app.plan_of(&org, &lee.token).await, "business");

    // Drift: seats changed in Stripe's dashboard, a webhook lost. Sync repairs it.
    stripe.set_subscription("sub_clinic", sub.clone().with(|s| s.quantity = 8).object());
    app.post(&format!("/v1/orgs/{org}/subscription/sync"), &lee.token, json!({})).await.expect_error(403, "forbidden");
    let res = app.post(&format!("/v1/orgs/{org}/subscription/sync"), &johnson.token, json!({})).await;
    assert_eq!(res.expect(200)["seats"], 8);

    // Seats go to Stripe as the item's quantity.
    let res = app.put(&format!("/v1/orgs/{org}/subscription/seats"), &johnson.token, json!({"seats": 10})).await;
    assert_eq!(res.expect(200)["seats"], 10);
    let sent = stripe.requests_to(Method::POST, &format!("/v1/subscription_items/{}", sub.item_id()));
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].field("quantity").as_deref(), Some("10"));
    assert!(sent[0].header("idempotency-key").is_some());
    let res = app.put(&format!("/v1/orgs/{org}/subscription/seats"), &johnson.token, json!({"seats": 1})).await;
    res.expect_error(400, "invalid_request");

    // The billing portal is a Stripe session for the clinic's customer.
    let res = app.post(&format!("/v1/orgs/{org}/billing_portal"), &johnson.token, json!({"return_url": CANCEL})).await;
    assert_eq!(res.expect(200)["url"], "https://billing.stripe.test/p/session/test_standin");
    let sent = stripe.requests_to(Method::POST, "/v1/billing_portal/sessions");
    assert_eq!(sent[0].field("customer").as_deref(), Some("cus_clinic"));
    assert_eq!(sent[0].field("return_url").as_deref(), Some(CANCEL));

    // Dr. Johnson cancels at period end: still business until then.
    let res = app.post(&format!("/v1/orgs/{org}/subscription/cancel"), &johnson.token, json!({})).await;
    let body = res.expect(200);
    assert_eq!(body["status"], "active");
    assert_eq!(body["cancel_at_period_end"], true);
    let sent = stripe.requests_to(Method::POST, "/v1/subscriptions/sub_clinic");
    assert_eq!(sent.last().and_then(|r| r.field("cancel_at_period_end")).as_deref(), Some("true"));
    assert_eq!(app.plan_of(&org, &lee.token).await, "business");
    // …changes their mind, and cancels again.
    let res = app.post(&format!("/v1/orgs/{org}/subscription/reactivate"), &johnson.token, json!({})).await;
    assert_eq!(res.expect(200)["cancel_at_period_end"], false);
    let res = app.post(&format!("/v1/orgs/{org}/subscription/cancel"), &johnson.token, json!({})).await;
    assert_eq!(res.expect(200)["cancel_at_period_end"], true);

    // The period ends: Stripe deletes the subscription; everyone loses the plan together.
    let mut ended = stripe.subscription("sub_clinic").expect("held");
    ended["status"] = json!("canceled");
    stripe.set_subscription("sub_clinic", ended.clone());
    app.stripe_webhook(&stripe_event("evt_deleted", "customer.subscription.deleted", now(), ended)).await.expect(200);
    for member in [&johnson, &lee] {
        assert_eq!(app.plan_of(&org, &member.token).await, "free");
    }
    assert_eq!(app.subscription(&org, &lee.token).await.expect(200)["status"], "canceled");

    // Every change is in the audit log with its actor.
    let events = app.get(&format!("/v1/orgs/{org}/events?limit=100"), &johnson.token).await;
    let events = events.expect(200)["data"].as_array().expect("events").clone();
    let actor_of = |kind: &str| -> Vec<String> {
        events.iter().filter(|e| e["type"] == kind).map(|e| e["actor"].as_str().unwrap_or("").to_owned()).collect()
    };
    assert_eq!(actor_of("subscription.created"), ["provider:evt_cs"]);
    assert_eq!(actor_of("subscription.canceled"), ["provider:evt_deleted"]);
    assert!(actor_of("subscription.updated").contains(&johnson.id), "cancel, seats and sync by Dr. Johnson");
    let admins = actor_of("billing_admin.changed");
    assert_eq!(admins, [smith.id.clone(), "provider:evt_cs".to_owned()], "newest first");
}

/// An RFC 3339 time `secs` from now, as Lemon Squeezy writes `updated_at`.
fn ls_time(secs: i64) -> String {
    let at = time::OffsetDateTime::from_unix_timestamp(now() + secs).expect("valid time");
    at.format(&time::format_description::well_known::Rfc3339).expect("formats")
}

async fn the_lemonsqueezy_lifecycle_keeps_the_plan_until_it_ends(backend: Backend) {
    let ls = StandIn::lemonsqueezy().await;
    // Webhooks apply their own copy here (ordered by `updated_at`); the API
    // serves cancel and reactivate.
    let Some(app) = lemonsqueezy_app(backend, &ls, |c| c.billing.refetch_on_webhook = false).await else { return };
    let (smith, org) = clinic(&app).await;
    let ends = "2099-02-01T10:00:00.000000Z";
    let deliver = |name: &str, status: &str, at: String, ends_at: Option<&str>| {
        let body = ls_event(name, Some(&org), status, &at, ends_at);
        let app = &app;
        async move { app.ls_webhook(&body).await.expect(200).clone() }
    };
    let created = deliver("subscription_created", "active", ls_time(-60), None).await;
    assert_eq!(created["outcome"], "created");
    assert_eq!(app.plan_of(&org, &smith.token).await, "business");
    let sub = app.subscription(&org, &smith.token).await;
    assert_eq!(sub.expect(200)["billing_admin_user_id"], Value::Null, "no checkout here: nobody bought it");

    // Cancelled: a grace period until ends_at, still entitled.
    deliver("subscription_cancelled", "cancelled", ls_time(-50), Some(ends)).await;
    let sub = app.subscription(&org, &smith.token).await;
    assert_eq!(sub.expect(200)["status"], "active");
    assert_eq!(sub.body["cancel_at_period_end"], true);
    assert_eq!(sub.body["current_period_end"], "2099-02-01T10:00:00Z");
    assert_eq!(app.plan_of(&org, &smith.token).await, "business");

    // Resumed before ends_at; a late copy of the cancellation changes nothing.
    deliver("subscription_resumed", "active", ls_time(-40), None).await;
    assert_eq!(app.subscription(&org, &smith.token).await.body["cancel_at_period_end"], false);
    let late = deliver("subscription_updated", "cancelled", ls_time(-45), Some(ends)).await;
    assert_eq!(late["outcome"], "stale");
    assert_eq!(app.subscription(&org, &smith.token).await.body["cancel_at_period_end"], false);

    // Cancel and reactivate through Lemon Squeezy's API.
    ls.set_subscription("1", ls_attributes("active", &ls_time(-40), None, 4));
    let res = app.post(&format!("/v1/orgs/{org}/subscription/cancel"), &smith.token, json!({})).await;
    assert_eq!(res.expect(200)["cancel_at_period_end"], true);
    let res = app.post(&format!("/v1/orgs/{org}/subscription/reactivate"), &smith.token, json!({})).await;
    assert_eq!(res.expect(200)["cancel_at_period_end"], false);
    let patches = ls.requests_to(reqwest::Method::PATCH, "/v1/subscriptions/1");
    let sent: Vec<Value> = patches.iter().map(|r| r.json()["data"]["attributes"]["cancelled"].clone()).collect();
    assert_eq!(sent, [json!(true), json!(false)]);
    assert_eq!(patches[0].json()["data"]["type"], "subscriptions");
    // The portal link is Lemon Squeezy's pre-signed URL.
    let res = app.post(&format!("/v1/orgs/{org}/billing_portal"), &smith.token, json!({"return_url": CANCEL})).await;
    assert_eq!(res.expect(200)["url"], "https://orgplane.lemonsqueezy.com/billing?expires=1714600000&signature=def");

    // Cancelled again, then expired: the plan ends.
    deliver("subscription_cancelled", "cancelled", ls_time(5), Some(ends)).await;
    assert_eq!(app.plan_of(&org, &smith.token).await, "business");
    deliver("subscription_expired", "expired", ls_time(10), Some(ends)).await;
    assert_eq!(app.subscription(&org, &smith.token).await.body["status"], "canceled");
    assert_eq!(app.plan_of(&org, &smith.token).await, "free");
    // An expired subscription can't be resumed.
    let resumed = deliver("subscription_resumed", "active", ls_time(15), None).await;
    assert_eq!(resumed["outcome"], "stale");
    assert_eq!(app.plan_of(&org, &smith.token).await, "free");
}

async fn the_sandbox_upgrades_a_personal_org_offline(backend: Backend) {
    let Some(app) = sandbox_app(backend, |_| {}).await else { return };
    let smith = app.user("dr.smith@clinic.example").await;
    let personal = smith.personal_org.clone();
    let res =
        app.post(&format!("/v1/orgs/{personal}/checkout"), &smith.token, checkout_body("business", Some(3))).await;
    let url = res.expect(200)["url"].as_str().expect("url").to_owned();
    assert!(url.starts_with(&format!("{}/sandbox/checkout/chk_", app.base)), "{url}");

    // The checkout page: plain forms, Pay and Cancel.
    let page = app.http.get(&url).send().await.expect("page");
    assert_eq!(page.status().as_u16(), 200);
    let html = page.text().await.expect("html");
    assert!(html.contains(&format!("action=\"{}/pay\"", url.trim_start_matches(&app.base))), "{html}");
    assert!(html.contains(">Pay<") && html.contains(">Cancel<"));

    // Paying from a browser: a redirect to the success URL.
    let no_redirects = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    let paid = no_redirects.post(format!("{url}/pay")).send().await.expect("pay");
    assert_eq!(paid.status().as_u16(), 303);
    assert_eq!(paid.headers()["location"], SUCCESS);
    // Paying again (JSON) is the same payment.
    let again = app.send_request(app.http.post(format!("{url}/pay")).header("accept", "application/json")).await;
    assert_eq!(again.expect(200)["duplicate"], true);
    assert_eq!(again.body["subscription_status"], "active");

    // The personal org became a team org with the same id, on business.
    let org = app.get(&format!("/v1/orgs/{personal}"), &smith.token).await;
    assert_eq!(org.expect(200)["kind"], "team");
    let sub = app.subscription(&personal, &smith.token).await;
    assert_eq!(sub.expect(200)["provider"], "sandbox");
    assert_eq!(sub.body["price_id"], "sandbox_business");
    assert_eq!(sub.body["plan"], "business");
    assert_eq!(sub.body["seats"], 3);
    assert_eq!(sub.body["billing_admin_user_id"], smith.id.as_str());
    assert_eq!(app.plan_of(&personal, &smith.token).await, "business");
    // Dr. Smith gets a new personal org on demand.
    let fresh = app.post("/v1/me/personal_org", &smith.token, json!({})).await;
    let fresh_id = fresh.expect(200)["id"].as_str().expect("id").to_owned();
    assert_ne!(fresh_id, personal);
    assert_eq!(fresh.body["kind"], "personal");

    // A second checkout while live; a cancelled checkout can't be paid.
    let res = app.post(&format!("/v1/orgs/{personal}/checkout"), &smith.token, checkout_body("enterprise", None)).await;
    res.expect_error(409, "subscription_exists");
    let res = app.post(&format!("/v1/orgs/{fresh_id}/checkout"), &smith.token, checkout_body("enterprise", None)).await;
    let other = res.expect(200)["url"].as_str().expect("url").to_owned();
    let cancelled = no_redirects.post(format!("{other}/cancel")).send().await.expect("cancel");
    assert_eq!(cancelled.status().as_u16(), 303);
    assert_eq!(cancelled.headers()["location"], CANCEL);
    let res = app.send_request(app.http.post(format!("{other}/pay")).header("accept", "application/json")).await;
    res.expect_error(409, "conflict");
    assert_eq!(app.subscription(&fresh_id, &smith.token).await.status.as_u16(), 404);

    // Seats, cancel and reactivate go through the sandbox's API.
    let res = app.put(&format!("/v1/orgs/{personal}/subscription/seats"), &smith.token, json!({"seats": 6})).await;
    assert_eq!(res.expect(200)["seats"], 6);
    let res = app.post(&format!("/v1/orgs/{personal}/subscription/cancel"), &smith.token, json!({})).await;
    assert_eq!(res.expect(200)["cancel_at_period_end"], true);
    let res = app.post(&format!("/v1/orgs/{personal}/subscription/reactivate"), &smith.token, json!({})).await;
    assert_eq!(res.expect(200)["cancel_at_period_end"], false);
    let res =
        app.post(&format!("/v1/orgs/{personal}/billing_portal"), &smith.token, json!({"return_url": CANCEL})).await;
    let portal = res.expect(200)["url"].as_str().expect("url").to_owned();
    let page = app.http.get(&portal).send().await.expect("portal");
    assert_eq!(page.status().as_u16(), 200);
    // Ending it now, with no body but {"immediately": true}.
    let res =
        app.post(&format!("/v1/orgs/{personal}/subscription/cancel"), &smith.token, json!({"immediately": true})).await;
    assert_eq!(res.expect(200)["status"], "canceled");
    assert_eq!(app.plan_of(&personal, &smith.token).await, "free");
    let res = app.post(&format!("/v1/orgs/{personal}/subscription/reactivate"), &smith.token, json!({})).await;
    res.expect_error(409, "conflict");
}

async fn the_sandbox_ends_a_cancelled_subscription_at_period_end(backend: Backend) {
    let Some(app) = sandbox_app(backend, |c| {
        c.billing.retry_interval_secs = 0;
        c.billing.reconcile_interval_secs = 0;
    })
    .await
    else {
        return;
    };
    let (smith, org) = clinic(&app).await;
    let johnson = app.user("dr.johnson@clinic.example").await;
    app.add_member(&org, &smith, &johnson, "member").await;
    let res = app.post(&format!("/v1/orgs/{org}/checkout"), &smith.token, checkout_body("business", None)).await;
    let url = res.expect(200)["url"].as_str().expect("url").to_owned();
    let paid = app.send_request(app.http.post(format!("{url}/pay")).header("accept", "application/json")).await;
    assert_eq!(paid.expect(200)["seats"], 2, "default seats: the seats in use");
    app.post(&format!("/v1/orgs/{org}/subscription/cancel"), &smith.token, json!({})).await.expect(200);
    assert_eq!(app.plan_of(&org, &johnson.token).await, "business");
    // Time passes beyond the period; reconciliation sees it end, and the plan with it.
    app.clock.advance(time::Duration::days(31));
    app.state.billing.reconcile_once(None).await.expect("a reconciliation pass");
    assert_eq!(app.subscription(&org, &smith.token).await.expect(200)["status"], "canceled");
    for member in [&smith, &johnson] {
        assert_eq!(app.plan_of(&org, &member.token).await, "free");
    }
}

async fn the_billing_admin_is_handed_over_not_lost(backend: Backend) {
    let Some(app) = sandbox_app(backend, |_| {}).await else { return };
    let key = app.api_key().await;
    let (smith, org) = clinic(&app).await;
    let res = app.post(&format!("/v1/orgs/{org}/checkout"), &smith.token, checkout_body("business", Some(5))).await;
    let url = res.expect(200)["url"].as_str().expect("url").to_owned();
    app.send_request(app.http.post(format!("{url}/pay")).header("accept", "application/json")).await.expect(200);
    let johnson = app.user("dr.johnson@clinic.example").await;
    let lee = app.user("dr.lee@clinic.example").await;
    app.add_member(&org, &smith, &johnson, "member").await;
    app.add_member(&org, &smith, &lee, "admin").await;
    let outsider = app.user("someone@else.example").await;
    let path = format!("/v1/orgs/{org}/billing_admin");
    assert_eq!(app.subscription(&org, &smith.token).await.body["billing_admin_user_id"], smith.id.as_str());

    // Only an owner or the current billing admin hands it over, and only to a member.
    app.put(&path, &lee.token, json!({"user_id": lee.id})).await.expect_error(403, "forbidden");
    app.put(&path, &johnson.token, json!({"user_id": johnson.id})).await.expect_error(403, "forbidden");
    let res = app.put(&path, &smith.token, json!({"user_id": outsider.id})).await;
    res.expect_error(400, "invalid_request");
    assert_eq!(res.body["error"]["param"], "user_id");
    app.put(&path, &outsider.token, json!({"user_id": outsider.id})).await.expect_error(404, "not_found");

    // To Dr. Johnson, a plain member: he now holds billing:manage.
    app.put(&path, &smith.token, json!({"user_id": johnson.id})).await.expect(200);
    let res = app.post(&format!("/v1/orgs/{org}/subscription/cancel"), &johnson.token, json!({})).await;
    assert_eq!(res.expect(200)["cancel_at_period_end"], true);
    // The admin role alone does not manage billing.
    app.post(&format!("/v1/orgs/{org}/subscription/reactivate"), &lee.token, json!({}))
        .await
        .expect_error(403, "forbidden");
    // As billing admin he may hand it on; then it's no longer his to give.
    app.put(&path, &johnson.token, json!({"user_id": lee.id})).await.expect(200);
    app.put(&path, &johnson.token, json!({"user_id": johnson.id})).await.expect_error(403, "forbidden");
    // An API key may set it.
    app.put(&path, &key, json!({"user_id": johnson.id})).await.expect(200);

    // The billing admin can't be removed or leave, and the org can't be deleted, while it's live.
    let res = app.delete(&format!("/v1/orgs/{org}/members/{}", johnson.id), &smith.token).await;
    res.expect_error(409, "billing_admin_must_transfer");
    let res = app.delete(&format!("/v1/orgs/{org}/members/{}", johnson.id), &johnson.token).await;
    res.expect_error(409, "billing_admin_must_transfer");
    app.delete(&format!("/v1/orgs/{org}"), &smith.token).await.expect_error(409, "conflict");
    let members = app.get(&format!("/v1/orgs/{org}/members"), &smith.token).await;
    let flagged: Vec<&str> = members.expect(200)["data"]
        .as_array()
        .expect("members")
        .iter()
        .filter(|m| m["billing_admin"] == true)
        .filter_map(|m| m["user_id"].as_str())
        .collect();
    assert_eq!(flagged, [johnson.id.as_str()]);

    // Each change is audited with who made it.
    let events = app.get(&format!("/v1/orgs/{org}/events"), &smith.token).await;
    let changes: Vec<(String, String)> = events.expect(200)["data"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["type"] == "billing_admin.changed")
        .map(|e| (e["actor"].as_str().unwrap_or("").to_owned(), e["data"]["to"].as_str().unwrap_or("").to_owned()))
        .collect();
    assert_eq!(changes.len(), 4);
    assert!(changes[0].0.starts_with("key_"), "{changes:?}");
    assert_eq!(changes[1], (johnson.id.clone(), lee.id.clone()));
    assert_eq!(changes[2], (smith.id.clone(), johnson.id.clone()));
    assert!(changes[3].0.starts_with("provider:sandbox:"), "{changes:?}");
}

/// What `orgplane reconcile --org ORG` runs: one pass, outside the server.
async fn one_reconciliation_pass_for_one_org_repairs_it(backend: Backend) {
    let Some(app) = sandbox_app(backend, |c| {
        c.billing.retry_interval_secs = 0;
        c.billing.reconcile_interval_secs = 0;
    })
    .await
    else {
        return;
    };
    let (smith, org) = clinic(&app).await;
    let res = app.post(&format!("/v1/orgs/{org}/checkout"), &smith.token, checkout_body("business", Some(2))).await;
    let url = res.expect(200)["url"].as_str().expect("url").to_owned();
    app.send_request(app.http.post(format!("{url}/pay")).header("accept", "application/json")).await.expect(200);
    app.post(&format!("/v1/orgs/{org}/subscription/cancel"), &smith.token, json!({})).await.expect(200);
    // Time passes beyond the sandbox period.
    let ends = app.subscription(&org, &smith.token).await.expect(200)["current_period_end"]
        .as_str()
        .map(|t| time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).expect("rfc3339"))
        .expect("a period end");
    app.clock.set(ends + time::Duration::seconds(1));
    // No background job runs here: the subscription still looks live.
    assert_eq!(app.subscription(&org, &smith.token).await.expect(200)["status"], "active");

    let config = orgplane_server::Config {
        dev: true,
        database_url: Some(app.database_url.clone()),
        data_dir: app.data_dir.clone(),
        ..orgplane_server::Config::default()
    };
    let org_id: orgplane_core::OrgId = org.parse().expect("org id");
    let report = orgplane_server::billing::reconcile_from_config(&config, Some(org_id), app.clock.clone())
        .await
        .expect("reconciles");
    assert_eq!(report.subscriptions_checked, 1, "{report:?}");
    assert_eq!(report.subscriptions_changed, 1, "{report:?}");
    assert_eq!(report.errors, 0, "{report:?}");
    let sub = app.subscription(&org, &smith.token).await;
    assert_eq!(sub.expect(200)["status"], "canceled");
    assert_eq!(app.plan_of(&org, &smith.token).await, "free", "the server sees the pass's change");
}

/// A pass over every org re-fetches the live subscriptions only: one that
/// ended stays ended, so asking its provider again would only cost calls.
async fn a_reconciliation_pass_rechecks_live_subscriptions_and_not_ended_ones(backend: Backend) {
    let Some(app) = sandbox_app(backend, |c| {
        c.billing.retry_interval_secs = 0;
        c.billing.reconcile_interval_secs = 0;
    })
    .await
    else {
        return;
    };
    let (smith, live_org) = clinic(&app).await;
    let ended_org = app.team(&smith, "Uptown Clinic").await;
    for org in [&live_org, &ended_org] {
        let res = app.post(&format!("/v1/orgs/{org}/checkout"), &smith.token, checkout_body("business", None)).await;
        let url = res.expect(200)["url"].as_str().expect("url").to_owned();
        app.send_request(app.http.post(format!("{url}/pay")).header("accept", "application/json")).await.expect(200);
    }
    let cancel = json!({"immediately": true});
    app.post(&format!("/v1/orgs/{ended_org}/subscription/cancel"), &smith.token, cancel).await.expect(200);
    assert_eq!(app.subscription(&ended_org, &smith.token).await.expect(200)["status"], "canceled");

    let report = app.state.billing.reconcile_once(None).await.expect("a reconciliation pass");
    assert_eq!(report.subscriptions_checked, 1, "only the live subscription is re-fetched: {report:?}");
    assert_eq!(report.orgs_checked_recently + report.orgs_leased_elsewhere, 0, "{report:?}");
    assert_eq!(report.errors, 0, "{report:?}");
    assert_eq!(app.subscription(&live_org, &smith.token).await.expect(200)["status"], "active");
    assert_eq!(app.subscription(&ended_org, &smith.token).await.expect(200)["status"], "canceled");
}

/// Stripe gave up delivering `customer.subscription.created`: one
/// reconciliation pass lists its undelivered events and applies it, once.
async fn a_subscription_whose_webhook_never_arrived_is_found_by_reconciliation(backend: Backend) {
    let stand_in = StandIn::stripe().await;
    let Some(app) = stripe_app(backend, &stand_in, |c| {
        c.billing.retry_interval_secs = 0;
        c.billing.reconcile_interval_secs = 0;
    })
    .await
    else {
        return;
    };
    let (smith, org) = clinic(&app).await;
    let sub = StripeSub::new("sub_missed", Some(&org), "cus_missed");
    stand_in.set_subscription(&sub.id, sub.object());
    let event: Value =
        serde_json::from_slice(&stripe_event("evt_missed", "customer.subscription.created", now(), sub.object()))
            .expect("event json");
    stand_in.add_undelivered_event(event);
    app.subscription(&org, &smith.token).await.expect_error(404, "not_found");

    let mut config = orgplane_server::Config {
        database_url: Some(app.database_url.clone()),
        data_dir: app.data_dir.clone(),
        plans: Some(plans()),
        ..orgplane_server::Config::default()
    };
    config.billing.provider = Some(orgplane_server::billing::CheckoutProvider::Stripe);
    config.billing.stripe.api_key = Some(STRIPE_KEY.to_owned());
    config.billing.stripe.api_base = stand_in.origin.clone();
    config.billing.stripe.webhook_secrets = vec![STRIPE_SECRET.to_owned()];
    let report =
        orgplane_server::billing::reconcile_from_config(&config, None, app.clock.clone()).await.expect("reconciles");
    assert_eq!(report.missed_events_recovered, 1, "{report:?}");
    assert_eq!(report.errors, 0, "{report:?}");
    assert_eq!(stand_in.requests_to(Method::GET, "/v1/events").len(), 1);
    let found = app.subscription(&org, &smith.token).await;
    assert_eq!(found.expect(200)["status"], "active");
    assert_eq!(app.plan_of(&org, &smith.token).await, "business");

    // A second pass finds the same event stored: nothing happens twice.
    let again =
        orgplane_server::billing::reconcile_from_config(&config, None, app.clock.clone()).await.expect("reconciles");
    assert_eq!(again.missed_events_recovered, 0, "{again:?}");
    assert_eq!(app.count("SELECT COUNT(*) FROM provider_events WHERE event_id = 'evt_missed'").await, 1);
}
