//! Seat changes against invitations racing them. A seat change checks the
//! seats in use and holds the new count in one locked step before it calls
//! the provider, so that nothing joins under the old, higher quantity while
//! the provider lowers it; the hold goes once the answer is applied, or the
//! call failed, and expires by itself if the request never finishes.
//!
//! The provider is a Stripe stand-in behind a [`Gate`] that holds its
//! answers until the test opens it. Webhooks apply their own copy here, so
//! that only seat changes pass the gate.

use std::time::Duration;

use axum::http::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::billing_support::{Gate, STRIPE_KEY, StandIn, StripeSub, eventually, now, stripe_event, stripe_webhook_app};
use crate::helpers::{Backend, Res, TestApp, TestUser};
use crate::on_both_backends;

on_both_backends!(
    an_invitation_racing_a_seat_decrease_is_refused_and_the_count_ends_exact,
    concurrent_invitations_during_a_seat_decrease_never_end_above_the_seats,
    a_seat_hold_is_released_when_the_provider_fails_or_refuses,
    a_seat_decrease_below_usage_answers_400_and_calls_no_provider,
    a_second_seat_change_waits_for_the_first,
    a_seat_hold_whose_request_never_finishes_expires_by_itself,
    a_seat_change_whose_client_goes_away_is_still_applied_and_its_hold_released,
);

/// A clinic on the business plan with `quantity` seats bought at a Stripe
/// stand-in that the app reaches through a closed gate.
struct Clinic {
    stripe: StandIn,
    gate: Gate,
    app: TestApp,
    owner: TestUser,
    org: String,
    sub: StripeSub,
}

impl Clinic {
    async fn start(backend: Backend, quantity: i64) -> Option<Clinic> {
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
        let sub = StripeSub::new("sub_clinic", Some(&org), "cus_clinic").with(|s| s.quantity = quantity);
        stripe.set_subscription(&sub.id, sub.object());
        let created = stripe_event("evt_created", "customer.subscription.created", now(), sub.object());
        assert_eq!(app.stripe_webhook(&created).await.expect(200)["outcome"], "created");
        Some(Clinic { stripe, gate, app, owner, org, sub })
    }

    /// Invites `email` as a member.
    async fn invite(&self, email: &str) -> Res {
        let path = format!("/v1/orgs/{}/invitations", self.org);
        self.app.post(&path, &self.owner.token, json!({"email": email, "role": "member"})).await
    }

    /// Starts inviting `email` without waiting for the answer.
    fn invite_later(&self, email: &str) -> tokio::task::JoinHandle<Res> {
        let req = self
            .app
            .http
            .post(self.app.url(&format!("/v1/orgs/{}/invitations", self.org)))
            .bearer_auth(&self.owner.token)
            .json(&json!({"email": email, "role": "member"}));
        tokio::spawn(async move { crate::helpers::read_res(req.send().await.expect("reaches the server")).await })
    }

    /// Invites `n` people (`name-0@…`, …), each of whom must get in.
    async fn invite_many(&self, name: &str, n: usize) {
        for i in 0..n {
            self.invite(&format!("{name}-{i}@clinic.example")).await.expect(201);
        }
    }

    /// Starts `PUT /subscription/seats` without waiting for its answer.
    fn set_seats(&self, seats: u32) -> tokio::task::JoinHandle<Res> {
        let req = self
            .app
            .http
            .put(self.app.url(&format!("/v1/orgs/{}/subscription/seats", self.org)))
            .bearer_auth(&self.owner.token)
            .json(&json!({"seats": seats}));
        tokio::spawn(async move { crate::helpers::read_res(req.send().await.expect("reaches the server")).await })
    }

    /// Starts a seat change and waits until its provider call is held.
    async fn set_seats_held(&self, seats: u32) -> tokio::task::JoinHandle<Res> {
        let before = self.gate.received();
        let change = self.set_seats(seats);
        eventually(10, "the seat change to wait on the provider", || async { self.gate.received() > before }).await;
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

    /// The purchased seats as `GET /subscription` shows them.
    async fn purchased(&self) -> i64 {
        self.app.subscription(&self.org, &self.owner.token).await.expect(200)["seats"].as_i64().expect("seats")
    }

    /// Seat holds left on the org's subscription (SQL).
    async fn holds(&self) -> i64 {
        let org = &self.org;
        self.app
            .count(&format!("SELECT COUNT(*) FROM subscriptions WHERE org_id = '{org}' AND seat_hold IS NOT NULL"))
            .await
    }

    fn item_path(&self) -> String {
        format!("/v1/subscription_items/{}", self.sub.item_id())
    }
}

async fn an_invitation_racing_a_seat_decrease_is_refused_and_the_count_ends_exact(backend: Backend) {
    let Some(clinic) = Clinic::start(backend, 5).await else { return };
    // Dr. Smith and three pending invitations: 4 of 5 seats.
    clinic.invite_many("nurse", 3).await;
    assert_eq!(clinic.seats().await, json!({"limit": 5, "used": 4}));

    // Dr. Smith buys 4 seats; Stripe takes its time to answer.
    let change = clinic.set_seats_held(4).await;
    // Meanwhile an admin invites a fifth person: the seat is about to go.
    let late = clinic.invite("late@clinic.example").await;
    late.expect_error(403, "limit_reached");
    assert_eq!(late.body["error"]["param"], "seats");
    assert_eq!(clinic.seats().await, json!({"limit": 4, "used": 4}), "the decrease shows at once");

    clinic.open_gate();
    let answer = change.await.expect("the request ends");
    assert_eq!(answer.expect(200)["seats"], 4);
    let sent = clinic.stripe.requests_to(Method::POST, &clinic.item_path());
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].field("quantity").as_deref(), Some("4"));
    assert_eq!(clinic.seats().await, json!({"limit": 4, "used": 4}), "exactly the seats bought are in use");
    assert_eq!(clinic.holds().await, 0, "the hold went with the answer");
    clinic.invite("later@clinic.example").await.expect_error(403, "limit_reached");
}

async fn concurrent_invitations_during_a_seat_decrease_never_end_above_the_seats(backend: Backend) {
    const STORM: usize = 20;
    let Some(clinic) = Clinic::start(backend, 40).await else { return };
    clinic.invite_many("nurse", 9).await;
    assert_eq!(clinic.seats().await, json!({"limit": 40, "used": 10}));

    // Dr. Smith buys 12 seats; while Stripe takes its time, a storm of
    // invitations comes in at once.
    let change = clinic.set_seats_held(12).await;
    let during: Vec<_> = (0..STORM).map(|i| clinic.invite_later(&format!("storm-{i}@clinic.example"))).collect();
    let mut admitted = admitted(during).await;
    assert_eq!(admitted, 2, "only the seats left under the new count are taken");
    // Stripe answers while a second storm comes in.
    let racing: Vec<_> = (0..STORM).map(|i| clinic.invite_later(&format!("racing-{i}@clinic.example"))).collect();
    clinic.open_gate();
    admitted += self::admitted(racing).await;
    assert_eq!(change.await.expect("the request ends").expect(200)["seats"], 12);

    assert_eq!(clinic.purchased().await, 12);
    assert_eq!(clinic.seats().await, json!({"limit": 12, "used": 10 + admitted}));
    assert_eq!(admitted, 2, "no seat was taken beyond the 12 bought");
    assert_eq!(clinic.holds().await, 0);
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

async fn a_seat_hold_is_released_when_the_provider_fails_or_refuses(backend: Backend) {
    let Some(clinic) = Clinic::start(backend, 5).await else { return };
    clinic.open_gate();
    clinic.invite_many("nurse", 1).await;

    // Stripe makes the change but the answer is lost: nothing is known here.
    clinic.stripe.lose_next_answer(Method::POST, &clinic.item_path());
    let lost = clinic.set_seats(2).await.expect("the request ends");
    lost.expect_error(503, "provider_unavailable");
    assert_eq!(clinic.holds().await, 0);
    assert_eq!(clinic.seats().await, json!({"limit": 5, "used": 2}), "the old quantity counts again");
    clinic.invite_many("doctor", 1).await;

    // Stripe refuses: the seat item is gone.
    clinic.stripe.set_subscription(&clinic.sub.id, json!({"id": clinic.sub.id}));
    let refused = clinic.set_seats(3).await.expect("the request ends");
    refused.expect_error(502, "provider_error");
    assert_eq!(clinic.holds().await, 0);
    // The org invites up to its old quantity again.
    clinic.invite_many("surgeon", 2).await;
    assert_eq!(clinic.seats().await, json!({"limit": 5, "used": 5}));
    clinic.invite("one-more@clinic.example").await.expect_error(403, "limit_reached");
}

async fn a_seat_decrease_below_usage_answers_400_and_calls_no_provider(backend: Backend) {
    let Some(clinic) = Clinic::start(backend, 5).await else { return };
    clinic.open_gate();
    clinic.invite_many("nurse", 2).await;
    let res = clinic.set_seats(2).await.expect("the request ends");
    res.expect_error(400, "invalid_request");
    assert_eq!(res.body["error"]["param"], "seats");
    assert_eq!(
        res.body["error"]["message"],
        "3 seats are in use (members and pending invitations); remove members or revoke invitations before buying fewer"
    );
    assert_eq!(clinic.gate.received(), 0, "Stripe was not called");
    assert_eq!(clinic.holds().await, 0, "a refused change holds nothing");
    clinic.invite_many("doctor", 2).await;
    assert_eq!(clinic.seats().await, json!({"limit": 5, "used": 5}));
}

async fn a_second_seat_change_waits_for_the_first(backend: Backend) {
    let Some(clinic) = Clinic::start(backend, 5).await else { return };
    let first = clinic.set_seats_held(3).await;
    let second = clinic.set_seats(8).await.expect("the request ends");
    second.expect_error(409, "conflict");
    assert_eq!(clinic.gate.received(), 1, "the second change did not reach Stripe");
    clinic.open_gate();
    assert_eq!(first.await.expect("the request ends").expect(200)["seats"], 3);
    let again = clinic.set_seats(8).await.expect("the request ends");
    assert_eq!(again.expect(200)["seats"], 8, "once the first is done, the next goes through");
}

async fn a_seat_hold_whose_request_never_finishes_expires_by_itself(backend: Backend) {
    let Some(clinic) = Clinic::start(backend, 5).await else { return };
    clinic.invite_many("nurse", 2).await;
    let change = clinic.set_seats_held(3).await;
    clinic.invite("late@clinic.example").await.expect_error(403, "limit_reached");
    // The hold outlives any provider call by far; past it, the seats the org
    // bought count again (as if the process holding it had died).
    clinic.app.clock.advance(time::Duration::minutes(3));
    assert_eq!(clinic.seats().await, json!({"limit": 5, "used": 3}));
    clinic.invite("later@clinic.example").await.expect(201);
    clinic.open_gate();
    change.await.expect("the request ends").expect(200);
}

async fn a_seat_change_whose_client_goes_away_is_still_applied_and_its_hold_released(backend: Backend) {
    let Some(clinic) = Clinic::start(backend, 5).await else { return };
    let app = &clinic.app;
    let body = json!({"seats": 3}).to_string();
    let mut socket = tokio::net::TcpStream::connect(app.addr).await.expect("connect");
    let request = format!(
        "PUT /v1/orgs/{}/subscription/seats HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        clinic.org,
        app.addr,
        clinic.owner.token,
        body.len()
    );
    socket.write_all(request.as_bytes()).await.expect("send");
    eventually(10, "the seat change to wait on Stripe", || async { clinic.gate.received() == 1 }).await;
    // The client goes away, and the server closes the connection (so the
    // request's future has been dropped) before Stripe answers.
    socket.shutdown().await.expect("half-close");
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), socket.read_to_end(&mut rest))
        .await
        .expect("the server closes the connection within 10 s")
        .expect("read");
    assert!(rest.is_empty(), "no answer was sent: {}", String::from_utf8_lossy(&rest));
    clinic.open_gate();
    // Stripe's answer is applied all the same, and the hold goes with it.
    eventually(10, "the answer to be applied", || async { clinic.purchased().await == 3 }).await;
    eventually(10, "the hold to be released", || async { clinic.holds().await == 0 }).await;
    assert_eq!(clinic.seats().await, json!({"limit": 3, "used": 1}));
}
