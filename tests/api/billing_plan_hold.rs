//! The seat hold of a plan change (issue 10, item 1): between a downgrade's
//! seat check and the provider's answer, invitations count the target
//! plan's seat limit, so that the org never ends above it; the hold ends
//! with the answer, or with the call's failure, and a forced change holds
//! nothing. The provider is a Stripe stand-in behind a gate that holds each
//! call until the test opens it.

use axum::http::Method;
use serde_json::{Value, json};

use crate::billing_support::{
    Gate, PRICE_BUSINESS, PRICE_ENTERPRISE, STRIPE_KEY, StandIn, StripeSub, eventually, now, stripe_event,
    stripe_webhook_app,
};
use crate::helpers::{Backend, Res, TestApp, TestUser};
use crate::on_both_backends;

on_both_backends!(
    invitations_during_a_downgrade_count_the_target_plans_seats,
    a_downgrade_racing_dozens_of_invitations_never_leaves_the_org_over_the_target,
    a_failed_plan_change_releases_its_hold,
    a_forced_downgrade_holds_nothing,
);

/// A clinic on the enterprise plan (no seat limit) at a Stripe stand-in
/// that the app reaches through a gate.
struct Clinic {
    stripe: StandIn,
    gate: Gate,
    app: TestApp,
    owner: TestUser,
    org: String,
    sub: StripeSub,
}

impl Clinic {
    async fn start(backend: Backend) -> Option<Clinic> {
        let stripe = StandIn::stripe().await;
        let gate = Gate::start(stripe.origin.clone()).await;
        let origin = gate.origin.clone();
        let app = stripe_webhook_app(backend, |c| {
            c.billing.provider = Some(orgplane_server::billing::CheckoutProvider::Stripe);
            c.billing.stripe.api_key = Some(STRIPE_KEY.to_owned());
            c.billing.stripe.api_base = origin;
            c.billing.refetch_on_webhook = false;
        })
        .await?;
        let owner = app.user("dr.smith@clinic.example").await;
        let org = app.team(&owner, "Downtown Clinic").await;
        let sub = StripeSub::new("sub_clinic", Some(&org), "cus_clinic").with(|s| {
            s.price = PRICE_ENTERPRISE.to_owned();
            s.quantity = 1;
        });
        stripe.set_subscription(&sub.id, sub.object());
        let created = stripe_event("evt_created", "customer.subscription.created", now(), sub.object());
        assert_eq!(app.stripe_webhook(&created).await.expect(200)["outcome"], "created");
        Some(Clinic { stripe, gate, app, owner, org, sub })
    }

    fn invite_later(&self, email: &str) -> tokio::task::JoinHandle<Res> {
        let req = self
            .app
            .http
            .post(self.app.url(&format!("/v1/orgs/{}/invitations", self.org)))
            .bearer_auth(&self.owner.token)
            .json(&json!({"email": email, "role": "member"}));
        tokio::spawn(async move { crate::helpers::read_res(req.send().await.expect("reaches the server")).await })
    }

    async fn invite_many(&self, name: &str, n: usize) {
        for i in 0..n {
            let path = format!("/v1/orgs/{}/invitations", self.org);
            let email = format!("{name}-{i}@clinic.example");
            self.app.post(&path, &self.owner.token, json!({"email": email, "role": "member"})).await.expect(201);
        }
    }

    /// Starts `POST /subscription/change` without waiting for its answer.
    fn change_later(&self, body: Value) -> tokio::task::JoinHandle<Res> {
        let req = self
            .app
            .http
            .post(self.app.url(&format!("/v1/orgs/{}/subscription/change", self.org)))
            .bearer_auth(&self.owner.token)
            .json(&body);
        tokio::spawn(async move { crate::helpers::read_res(req.send().await.expect("reaches the server")).await })
    }

    /// Starts a change and waits until its provider call is held.
    async fn change_held(&self, body: Value) -> tokio::task::JoinHandle<Res> {
        let before = self.gate.received();
        let change = self.change_later(body);
        eventually(10, "the plan change to wait on the provider", || async { self.gate.received() > before }).await;
        change
    }

    fn open_gate(&self) {
        self.gate.open.send(true).expect("open the gate");
    }

    /// The seat limit and usage as `GET /entitlements` shows them.
    async fn seats(&self) -> Value {
        let res = self.app.get(&format!("/v1/orgs/{}/entitlements", self.org), &self.owner.token).await;
        res.expect(200)["limits"]["seats"].clone()
    }

    async fn plan(&self) -> String {
        self.app.plan_of(&self.org, &self.owner.token).await
    }

    /// Plan holds left on the org's subscription (SQL).
    async fn holds(&self) -> i64 {
        let org = &self.org;
        self.app
            .count(&format!(
                "SELECT COUNT(*) FROM subscriptions WHERE org_id = '{org}' AND plan_hold_seats IS NOT NULL"
            ))
            .await
    }

    fn change_calls(&self) -> usize {
        self.stripe.requests_to(Method::POST, &format!("/v1/subscriptions/{}", self.sub.id)).len()
    }
}

/// Awaits invitations: how many got in (the others must be refused at the
/// seat limit).
async fn admitted(invites: Vec<tokio::task::JoinHandle<Res>>) -> i64 {
    let mut admitted = 0;
    for invite in invites {
        let res = invite.await.expect("the request ends");
        match res.status.as_u16() {
            201 => admitted += 1,
            _ => res.expect_error(403, "limit_reached"),
        }
    }
    admitted
}

async fn invitations_during_a_downgrade_count_the_target_plans_seats(backend: Backend) {
    const STORM: usize = 24;
    let Some(clinic) = Clinic::start(backend).await else { return };
    clinic.invite_many("nurse", 5).await;
    assert_eq!(clinic.seats().await, json!({"limit": null, "used": 6}));

    // Dr. Smith moves the clinic to business with 10 seats; Stripe takes
    // its time. The target's limit counts at once, before Stripe answers.
    let change = clinic.change_held(json!({"plan": "business", "seats": 10})).await;
    assert_eq!(clinic.seats().await, json!({"limit": 10, "used": 6}));
    assert_eq!(clinic.plan().await, "enterprise", "the plan itself changes with Stripe's answer");
    // A change to another seat limit waits for this one.
    let other = clinic.change_later(json!({"plan": "business", "seats": 8})).await.expect("the request ends");
    other.expect_error(409, "conflict");
    assert!(other.body["error"]["message"].as_str().is_some_and(|m| m.contains("another plan change")));
    let during: Vec<_> = (0..STORM).map(|i| clinic.invite_later(&format!("storm-{i}@clinic.example"))).collect();
    let mut taken = admitted(during).await;
    assert_eq!(taken, 4, "only the seats left under the target's limit are taken");

    // Stripe answers while a second storm comes in.
    let racing: Vec<_> = (0..STORM).map(|i| clinic.invite_later(&format!("racing-{i}@clinic.example"))).collect();
    clinic.open_gate();
    taken += admitted(racing).await;
    let answer = change.await.expect("the request ends");
    let answer = answer.expect(200);
    assert_eq!((answer["plan"].as_str(), answer["price_id"].as_str()), (Some("business"), Some(PRICE_BUSINESS)));
    assert_eq!(taken, 4, "no seat was taken beyond the target's 10");
    assert_eq!(clinic.seats().await, json!({"limit": 10, "used": 10}));
    assert_eq!(clinic.holds().await, 0, "the hold went with the answer");
    assert_eq!(clinic.change_calls(), 1);
}

async fn a_downgrade_racing_dozens_of_invitations_never_leaves_the_org_over_the_target(backend: Backend) {
    const STORM: usize = 40;
    const TARGET: i64 = 12;
    let Some(clinic) = Clinic::start(backend).await else { return };
    clinic.open_gate();
    clinic.invite_many("nurse", 3).await;

    // The downgrade and the invitations leave at the same moment; whichever
    // order the server sees them in, the org never ends above the target.
    let mut invites: Vec<_> =
        (0..STORM / 2).map(|i| clinic.invite_later(&format!("early-{i}@clinic.example"))).collect();
    let change = clinic.change_later(json!({"plan": "business", "seats": TARGET}));
    invites.extend((0..STORM / 2).map(|i| clinic.invite_later(&format!("late-{i}@clinic.example"))));
    let taken = admitted(invites).await;
    let answer = change.await.expect("the request ends");
    let used = 4 + taken;
    match answer.status.as_u16() {
        200 => {
            assert_eq!(answer.body["plan"], "business");
            assert!(used <= TARGET, "{used} seats in use on a plan of {TARGET}");
            assert_eq!(clinic.seats().await, json!({"limit": TARGET, "used": used}));
            assert_eq!(clinic.change_calls(), 1);
        }
        _ => {
            // The invitations came first: the downgrade names what to free.
            answer.expect_error(409, "conflict");
            // Counted when it was refused: more invitations may have come after.
            let message = answer.body["error"]["message"].as_str().unwrap_or_default();
            let prefix = format!("the business plan allows {TARGET} seats and ");
            let counted: i64 = message
                .strip_prefix(&prefix)
                .and_then(|rest| rest.split(' ').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("the refusal counts the seats in use: {message}"));
            assert!(TARGET < counted && counted <= used, "{counted} counted, {used} in use in the end");
            assert_eq!(clinic.plan().await, "enterprise");
            assert_eq!(clinic.seats().await, json!({"limit": null, "used": used}));
            assert_eq!(clinic.change_calls(), 0, "a refused change calls no provider");
        }
    }
    assert_eq!(clinic.holds().await, 0);
}

async fn a_failed_plan_change_releases_its_hold(backend: Backend) {
    let Some(clinic) = Clinic::start(backend).await else { return };
    clinic.open_gate();
    clinic.invite_many("nurse", 2).await;

    // Stripe makes the change but the answer is lost: nothing is known here.
    clinic.stripe.lose_next_answer(Method::POST, &format!("/v1/subscriptions/{}", clinic.sub.id));
    let lost = clinic.change_later(json!({"plan": "business", "seats": 5})).await.expect("the request ends");
    lost.expect_error(503, "provider_unavailable");
    assert_eq!(clinic.holds().await, 0);
    assert_eq!(clinic.plan().await, "enterprise");
    assert_eq!(clinic.seats().await, json!({"limit": null, "used": 3}), "the enterprise limit counts again");
    clinic.invite_many("doctor", 4).await;
    assert_eq!(clinic.seats().await, json!({"limit": null, "used": 7}));
}

async fn a_forced_downgrade_holds_nothing(backend: Backend) {
    let Some(clinic) = Clinic::start(backend).await else { return };
    clinic.invite_many("nurse", 5).await;
    // Forced below the seats in use: it goes to Stripe without a hold, and
    // nobody is removed.
    let change = clinic.change_held(json!({"plan": "business", "seats": 3, "force": true})).await;
    assert_eq!(clinic.holds().await, 0);
    assert_eq!(clinic.seats().await, json!({"limit": null, "used": 6}));
    clinic.open_gate();
    assert_eq!(change.await.expect("the request ends").expect(200)["plan"], "business");
    assert_eq!(clinic.seats().await, json!({"limit": 3, "used": 6}));
    assert_eq!(clinic.holds().await, 0);
}
