//! Billing test support: stateful stand-ins for Stripe's and Lemon Squeezy's
//! REST APIs (real HTTP servers on 127.0.0.1 that record every request
//! exactly), signed webhook deliveries built from Stripe's reference objects
//! and Lemon Squeezy's documented payloads, and apps configured for them.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use orgplane_billing::{lemonsqueezy, stripe};
use orgplane_core::plans::{CatalogConfig, PlanConfig};
use orgplane_server::Config;
use orgplane_server::billing::CheckoutProvider;
use serde_json::{Value, json};

use crate::helpers::{Backend, Res, TestApp, spawn_app_with};

pub const STRIPE_SECRET: &str = "whsec_orgplane_tests";
pub const STRIPE_KEY: &str = "sk_test_orgplane";
pub const LS_SECRET: &str = "ls_signing_secret";
pub const LS_KEY: &str = "ls_api_key";
pub const LS_STORE: &str = "4242";
pub const PRICE_BUSINESS: &str = "price_business_month";
pub const PRICE_ENTERPRISE: &str = "price_enterprise_month";
pub const VARIANT_BUSINESS: &str = "333";
/// Enterprise's Lemon Squeezy variant, for tests that sell it there (the
/// shared catalog has none: see [`plans`]).
pub const VARIANT_ENTERPRISE: &str = "334";

/// The default catalog's plans, with Stripe prices and Lemon Squeezy variants.
pub fn plans() -> BTreeMap<String, PlanConfig> {
    CatalogConfig::from_toml(&format!(
        r#"
        [plans.free]
        default = true
        tier = "free"
        features = ["invitations"]
        limits = {{ customers = 3, seats = 2, clients = 10 }}
        [plans.business]
        tier = "business"
        features = ["invitations", "api_tokens", "custom_roles", "audit_log"]
        limits = {{ customers = 100, clients = 1000 }}
        seats = "per_unit"
        prices = {{ stripe = ["{PRICE_BUSINESS}"], lemonsqueezy = ["{VARIANT_BUSINESS}"] }}
        [plans.enterprise]
        tier = "enterprise"
        features = ["*"]
        prices = {{ stripe = ["{PRICE_ENTERPRISE}"] }}
        "#
    ))
    .expect("test catalog parses")
    .plans
    .expect("plans")
}

/// An app that takes Stripe webhooks signed with [`STRIPE_SECRET`], without
/// a Stripe API (no re-fetch: events apply in the order of their timestamps).
pub async fn stripe_webhook_app(backend: Backend, adjust: impl FnOnce(&mut Config)) -> Option<TestApp> {
    spawn_app_with(backend, |c| {
        c.plans = Some(plans());
        c.billing.stripe.webhook_secrets = vec![STRIPE_SECRET.to_owned()];
        adjust(c);
    })
    .await
}

/// An app whose Stripe API is `stand_in`.
pub async fn stripe_app(backend: Backend, stand_in: &StandIn, adjust: impl FnOnce(&mut Config)) -> Option<TestApp> {
    let origin = stand_in.origin.clone();
    stripe_webhook_app(backend, |c| {
        c.billing.provider = Some(CheckoutProvider::Stripe);
        c.billing.stripe.api_key = Some(STRIPE_KEY.to_owned());
        c.billing.stripe.api_base = origin;
        adjust(c);
    })
    .await
}

/// An app whose Lemon Squeezy API is `stand_in`.
pub async fn lemonsqueezy_app(
    backend: Backend,
    stand_in: &StandIn,
    adjust: impl FnOnce(&mut Config),
) -> Option<TestApp> {
    let origin = format!("{}/v1", stand_in.origin);
    spawn_app_with(backend, |c| {
        c.plans = Some(plans());
        c.billing.provider = Some(CheckoutProvider::Lemonsqueezy);
        c.billing.lemonsqueezy.api_key = Some(LS_KEY.to_owned());
        c.billing.lemonsqueezy.store_id = Some(LS_STORE.to_owned());
        c.billing.lemonsqueezy.webhook_secret = Some(LS_SECRET.to_owned());
        c.billing.lemonsqueezy.api_base = origin;
        adjust(c);
    })
    .await
}

/// An app in `--dev` mode: the sandbox provider sells every paid plan.
pub async fn sandbox_app(backend: Backend, adjust: impl FnOnce(&mut Config)) -> Option<TestApp> {
    spawn_app_with(backend, |c| {
        c.dev = true;
        adjust(c);
    })
    .await
}

pub fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

// -- Stripe objects and deliveries -------------------------------------------------

fn fixtures() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/api/fixtures/stripe/objects.json");
    serde_json::from_slice(&std::fs::read(path).expect("objects.json")).expect("objects.json is JSON")
}

/// One of Stripe's reference objects (`subscription`, `checkout.session`, …).
pub fn stripe_object(name: &str) -> Value {
    fixtures()["resources"][name].clone()
}

/// The fields of a Stripe subscription orgplane reads.
#[derive(Debug, Clone)]
pub struct StripeSub {
    pub id: String,
    pub org: Option<String>,
    pub customer: String,
    pub status: &'static str,
    pub price: String,
    pub quantity: i64,
    pub period_end: i64,
    pub cancel_at_period_end: bool,
}

impl StripeSub {
    pub fn new(id: &str, org: Option<&str>, customer: &str) -> Self {
        StripeSub {
            id: id.to_owned(),
            org: org.map(str::to_owned),
            customer: customer.to_owned(),
            status: "active",
            price: PRICE_BUSINESS.to_owned(),
            quantity: 5,
            period_end: now() + 30 * 86_400,
            cancel_at_period_end: false,
        }
    }

    pub fn with(mut self, f: impl FnOnce(&mut Self)) -> Self {
        f(&mut self);
        self
    }

    /// Stripe's reference subscription with these fields (API version
    /// 2025-03-31+: the period end on the item).
    pub fn object(&self) -> Value {
        let mut sub = stripe_object("subscription");
        sub["id"] = json!(self.id);
        sub["customer"] = json!(self.customer);
        sub["status"] = json!(self.status);
        sub["metadata"] = match &self.org {
            Some(org) => json!({ "org_id": org }),
            None => json!({}),
        };
        sub["cancel_at_period_end"] = json!(self.cancel_at_period_end);
        sub["cancel_at"] = Value::Null;
        sub["trial_end"] = Value::Null;
        let item = &mut sub["items"]["data"][0];
        item["id"] = json!(format!("si_{}", self.id.trim_start_matches("sub_")));
        item["price"]["id"] = json!(self.price);
        item["quantity"] = json!(self.quantity);
        item["current_period_end"] = json!(self.period_end);
        item["subscription"] = json!(self.id);
        sub
    }

    pub fn item_id(&self) -> String {
        format!("si_{}", self.id.trim_start_matches("sub_"))
    }
}

/// A Stripe event envelope around `object`, as the webhook body.
pub fn stripe_event(id: &str, kind: &str, created: i64, object: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "id": id,
        "object": "event",
        "api_version": "2025-03-31.basil",
        "created": created,
        "livemode": false,
        "pending_webhooks": 1,
        "request": { "id": null, "idempotency_key": null },
        "type": kind,
        "data": { "object": object },
    }))
    .expect("serializes")
}

/// A completed checkout session naming `org` (client_reference_id).
pub fn checkout_completed(id: &str, created: i64, org: &str, customer: &str, subscription: &str) -> Vec<u8> {
    let mut session = stripe_object("checkout.session");
    session["id"] = json!("cs_test_completed");
    session["mode"] = json!("subscription");
    session["status"] = json!("complete");
    session["client_reference_id"] = json!(org);
    session["customer"] = json!(customer);
    session["subscription"] = json!(subscription);
    stripe_event(id, "checkout.session.completed", created, session)
}

impl TestApp {
    /// POSTs `body` to the Stripe webhook with a valid signature.
    pub async fn stripe_webhook(&self, body: &[u8]) -> Res {
        let header = stripe::signature::sign(body, STRIPE_SECRET, now());
        self.stripe_webhook_signed(body, &header).await
    }

    pub async fn stripe_webhook_signed(&self, body: &[u8], header: &str) -> Res {
        let req = self
            .http
            .post(self.url("/v1/webhooks/stripe"))
            .header("content-type", "application/json")
            .header("stripe-signature", header)
            .body(body.to_vec());
        self.send_request(req).await
    }

    /// POSTs `body` to the Lemon Squeezy webhook, signed with [`LS_SECRET`].
    pub async fn ls_webhook(&self, body: &[u8]) -> Res {
        self.ls_webhook_signed(body, &lemonsqueezy::signature::sign(body, LS_SECRET)).await
    }

    pub async fn ls_webhook_signed(&self, body: &[u8], signature: &str) -> Res {
        let name = serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| v["meta"]["event_name"].as_str().map(str::to_owned));
        let mut req = self
            .http
            .post(self.url("/v1/webhooks/lemonsqueezy"))
            .header("content-type", "application/json")
            .header("x-signature", signature)
            .body(body.to_vec());
        if let Some(name) = name {
            req = req.header("x-event-name", name);
        }
        self.send_request(req).await
    }

    /// How many provider events are stored (SQL).
    pub async fn provider_event_count(&self) -> i64 {
        self.count("SELECT COUNT(*) FROM provider_events").await
    }

    /// How many audit events of `kind` `org` has (SQL).
    pub async fn event_count(&self, org: &str, kind: &str) -> i64 {
        self.count(&format!("SELECT COUNT(*) FROM events WHERE org_id = '{org}' AND type = '{kind}'")).await
    }

    /// The org's plan as `GET /v1/orgs/{org}/entitlements` shows it to `token`.
    pub async fn plan_of(&self, org: &str, token: &str) -> String {
        let res = self.get(&format!("/v1/orgs/{org}/entitlements"), token).await;
        res.expect(200)["plan"].as_str().expect("plan").to_owned()
    }

    /// `GET /v1/orgs/{org}/subscription`.
    pub async fn subscription(&self, org: &str, token: &str) -> Res {
        self.get(&format!("/v1/orgs/{org}/subscription"), token).await
    }
}

/// Waits until `check` passes, up to `secs` seconds.
pub async fn eventually<F, Fut>(secs: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if check().await {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await; // the poll interval of a wait on `check`
    }
}

// -- Lemon Squeezy payloads ---------------------------------------------------------

/// A Lemon Squeezy subscription webhook (the documented attributes).
pub fn ls_event(event_name: &str, org: Option<&str>, status: &str, updated_at: &str, ends_at: Option<&str>) -> Vec<u8> {
    let body = json!({
        "meta": {
            "test_mode": true,
            "event_name": event_name,
            "custom_data": match org { Some(o) => json!({ "org_id": o }), None => json!({}) },
        },
        "data": { "type": "subscriptions", "id": "1", "attributes": ls_attributes(status, updated_at, ends_at, 4) },
    });
    serde_json::to_vec(&body).expect("serializes")
}

pub fn ls_attributes(status: &str, updated_at: &str, ends_at: Option<&str>, quantity: i64) -> Value {
    json!({
        "store_id": 4242,
        "customer_id": 67890,
        "order_id": 111,
        "product_id": 222,
        "variant_id": 333,
        "status": status,
        "cancelled": status == "cancelled",
        "pause": null,
        "trial_ends_at": null,
        "first_subscription_item": { "id": 444, "subscription_id": 1, "price_id": 555, "quantity": quantity },
        "urls": {
            "update_payment_method": "https://orgplane.lemonsqueezy.com/subscription/1/payment-details?signature=abc",
            "customer_portal": "https://orgplane.lemonsqueezy.com/billing?expires=1714600000&signature=def"
        },
        "renews_at": "2099-06-01T10:00:00.000000Z",
        "ends_at": ends_at,
        "created_at": "2026-01-01T10:00:00.000000Z",
        "updated_at": updated_at,
        "test_mode": true
    })
}

// -- The stand-in server --------------------------------------------------------------

/// One request the stand-in received, exactly.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    /// The query string as sent (without `?`).
    pub query_string: String,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as form fields, in order.
    pub fn form(&self) -> Vec<(String, String)> {
        let text = std::str::from_utf8(&self.body).expect("form bodies are UTF-8");
        let url = reqwest::Url::parse(&format!("http://form.invalid/?{text}")).expect("parses");
        url.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
    }

    /// One form field (asserting it appears exactly once).
    pub fn field(&self, name: &str) -> Option<String> {
        let all: Vec<String> = self.form().into_iter().filter(|(k, _)| k == name).map(|(_, v)| v).collect();
        assert!(all.len() <= 1, "{name} sent {} times", all.len());
        all.into_iter().next()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("the body is JSON")
    }

    /// The query parameters, decoded, in order.
    pub fn query(&self) -> Vec<(String, String)> {
        let url = reqwest::Url::parse(&format!("http://query.invalid/?{}", self.query_string)).expect("parses");
        url.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
    }

    /// One query parameter (asserting it appears at most once).
    pub fn query_field(&self, name: &str) -> Option<String> {
        let all: Vec<String> = self.query().into_iter().filter(|(k, _)| k == name).map(|(_, v)| v).collect();
        assert!(all.len() <= 1, "{name} sent {} times", all.len());
        all.into_iter().next()
    }
}

#[derive(Default)]
struct Shared {
    requests: Vec<Recorded>,
    /// Subscriptions the provider holds, by id (Stripe or Lemon Squeezy shape).
    subscriptions: BTreeMap<String, Value>,
    /// Events Stripe could not deliver (`GET /v1/events?delivery_success=false`).
    undelivered: Vec<Value>,
    /// Requests (method, path) whose next answer is lost: the change is
    /// made, the caller gets a 500 (as when a connection drops).
    lose_answer: Vec<(Method, String)>,
    /// Catalog items the provider knows: Stripe prices or Lemon Squeezy
    /// variants (attributes), by id.
    catalog: BTreeMap<String, Value>,
    /// Stripe's answer to `POST /v1/invoices/create_preview`.
    preview: Option<Value>,
    /// Stripe replays the first answer to a repeated `Idempotency-Key`
    /// (for the POSTs that change a subscription): key → that answer.
    replays: BTreeMap<String, Value>,
    /// Invoices, oldest first (a Stripe invoice, or Lemon Squeezy
    /// `subscription-invoices` attributes with an `"id"`).
    invoices: Vec<Value>,
    /// The most subscriptions one page of Lemon Squeezy's list holds,
    /// whatever `page[size]` asks (so that a test sees several pages).
    page_cap: Option<usize>,
    /// Stripe customers, by id.
    customers: BTreeMap<String, Value>,
    /// Requests (method, path) whose next answers fail with a 500 without
    /// doing anything, with how many are left to fail.
    fail_next: Vec<(Method, String, u32)>,
    /// The status of each answer, in the order of `requests`.
    statuses: Vec<u16>,
}

/// Which provider's API the stand-in plays.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Stripe,
    LemonSqueezy,
}

/// A provider API on 127.0.0.1: answers from its own subscription state and
/// records every request.
pub struct StandIn {
    /// `http://127.0.0.1:<port>`.
    pub origin: String,
    shared: Arc<Mutex<Shared>>,
}

impl StandIn {
    pub async fn stripe() -> StandIn {
        Self::start(Kind::Stripe).await
    }

    pub async fn lemonsqueezy() -> StandIn {
        Self::start(Kind::LemonSqueezy).await
    }

    async fn start(kind: Kind) -> StandIn {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let app = Router::new().fallback(handle).with_state((kind, shared.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binds");
        let origin = format!("http://{}", listener.local_addr().expect("has an address"));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        StandIn { origin, shared }
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.lock().expect("not poisoned").requests.clone()
    }

    /// The requests to `method path`.
    pub fn requests_to(&self, method: Method, path: &str) -> Vec<Recorded> {
        self.requests().into_iter().filter(|r| r.method == method && r.path == path).collect()
    }

    /// Sets what the provider holds for a subscription (a Stripe object, or
    /// Lemon Squeezy attributes).
    pub fn set_subscription(&self, id: &str, object: Value) {
        self.shared.lock().expect("not poisoned").subscriptions.insert(id.to_owned(), object);
    }

    /// Adds an event Stripe failed to deliver, listed by `GET /v1/events`.
    pub fn add_undelivered_event(&self, event: Value) {
        self.shared.lock().expect("not poisoned").undelivered.push(event);
    }

    /// The next `method path` is carried out but its answer is lost (a 500).
    pub fn lose_next_answer(&self, method: Method, path: &str) {
        self.shared.lock().expect("not poisoned").lose_answer.push((method, path.to_owned()));
    }

    /// Adds a Stripe price (`{"active", "recurring"}`) or Lemon Squeezy
    /// variant's attributes (`{"status", "is_subscription"}`) to the catalog.
    pub fn set_catalog_item(&self, id: &str, object: Value) {
        self.shared.lock().expect("not poisoned").catalog.insert(id.to_owned(), object);
    }

    /// What Stripe answers to an invoice preview.
    pub fn set_preview(&self, invoice: Value) {
        self.shared.lock().expect("not poisoned").preview = Some(invoice);
    }

    /// Adds an invoice (newest last): a Stripe invoice object, or a Lemon
    /// Squeezy invoice's attributes plus its `"id"`.
    pub fn add_invoice(&self, invoice: Value) {
        self.shared.lock().expect("not poisoned").invoices.push(invoice);
    }

    /// Caps Lemon Squeezy's list pages at `size` subscriptions.
    pub fn cap_pages(&self, size: usize) {
        self.shared.lock().expect("not poisoned").page_cap = Some(size);
    }

    /// Adds a Stripe customer (`POST /v1/customers/{id}` updates it).
    pub fn set_customer(&self, id: &str, email: &str) {
        let customer = json!({"id": id, "object": "customer", "email": email});
        self.shared.lock().expect("not poisoned").customers.insert(id.to_owned(), customer);
    }

    pub fn customer(&self, id: &str) -> Option<Value> {
        self.shared.lock().expect("not poisoned").customers.get(id).cloned()
    }

    /// The next `times` requests to `method path` fail with a 500 and change nothing.
    pub fn fail_next(&self, method: Method, path: &str, times: u32) {
        self.shared.lock().expect("not poisoned").fail_next.push((method, path.to_owned(), times));
    }

    /// The requests to `method path`, each with the status it was answered.
    pub fn answered(&self, method: Method, path: &str) -> Vec<(Recorded, u16)> {
        let shared = self.shared.lock().expect("not poisoned");
        shared
            .requests
            .iter()
            .zip(shared.statuses.iter())
            .filter(|(r, _)| r.method == method && r.path == path)
            .map(|(r, s)| (r.clone(), *s))
            .collect()
    }

    pub fn subscription(&self, id: &str) -> Option<Value> {
        self.shared.lock().expect("not poisoned").subscriptions.get(id).cloned()
    }
}

fn json_response(status: u16, body: Value) -> Response {
    (StatusCode::from_u16(status).expect("status"), axum::Json(body)).into_response()
}

async fn handle(
    State((kind, shared)): State<(Kind, Arc<Mutex<Shared>>)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let recorded = Recorded {
        method: method.clone(),
        path: uri.path().to_owned(),
        headers,
        body: body.to_vec(),
        query_string: uri.query().unwrap_or_default().to_owned(),
    };
    let mut shared = shared.lock().expect("not poisoned");
    shared.requests.push(recorded.clone());
    let segments: Vec<&str> = uri.path().trim_matches('/').split('/').collect();
    if let Some(at) = shared.fail_next.iter().position(|(m, p, n)| *m == method && p == uri.path() && *n > 0) {
        shared.fail_next[at].2 -= 1;
        shared.statuses.push(500);
        return json_response(500, json!({"error": {"message": "An unknown error occurred", "type": "api_error"}}));
    }
    let answer = match kind {
        Kind::Stripe => stripe_answer(&mut shared, &method, &segments, &recorded),
        Kind::LemonSqueezy => ls_answer(&mut shared, &method, &segments, &recorded),
    };
    let answer = match shared.lose_answer.iter().position(|(m, p)| *m == method && p == uri.path()) {
        Some(i) => {
            shared.lose_answer.remove(i);
            json_response(500, json!({"error": {"message": "the answer was lost", "type": "api_error"}}))
        }
        None => answer,
    };
    shared.statuses.push(answer.status().as_u16());
    answer
}

fn stripe_missing(what: &str) -> Response {
    json_response(
        404,
        json!({"error": {"message": format!("No such {what}"), "type": "invalid_request_error", "code": "resource_missing"}}),
    )
}

fn stripe_answer(shared: &mut Shared, method: &Method, segments: &[&str], req: &Recorded) -> Response {
    match (method.as_str(), segments) {
        ("POST", ["v1", "checkout", "sessions"]) => {
            let mut session = stripe_object("checkout.session");
            session["id"] = json!("cs_test_standin");
            session["mode"] = json!("subscription");
            session["status"] = json!("open");
            session["url"] = json!("https://checkout.stripe.test/c/pay/cs_test_standin");
            json_response(200, session)
        }
        ("GET", ["v1", "events"]) => json_response(
            200,
            json!({"object": "list", "data": shared.undelivered, "has_more": false, "url": "/v1/events"}),
        ),
        ("GET", ["v1", "prices", ..])
            if req.header("authorization") != Some(format!("Bearer {STRIPE_KEY}").as_str()) =>
        {
            json_response(
                401,
                json!({"error": {"message": "Invalid API Key provided: sk_test_****", "type": "invalid_request_error"}}),
            )
        }
        ("GET", ["v1", "prices"]) => {
            let data: Vec<Value> = shared.catalog.values().take(1).cloned().collect();
            json_response(200, json!({"object": "list", "data": data, "has_more": false, "url": "/v1/prices"}))
        }
        ("GET", ["v1", "prices", id]) => match shared.catalog.get(*id) {
            Some(price) => {
                let mut price = price.clone();
                price["id"] = json!(id);
                price["object"] = json!("price");
                json_response(200, price)
            }
            None => stripe_missing("price"),
        },
        ("GET", ["v1", "subscriptions", id]) => match shared.subscriptions.get(*id) {
            Some(sub) => json_response(200, sub.clone()),
            None => stripe_missing("subscription"),
        },
        ("POST", ["v1", "subscriptions", id]) => {
            if let Some(first) = req.header("idempotency-key").and_then(|k| shared.replays.get(k)) {
                return json_response(200, first.clone());
            }
            let Some(sub) = shared.subscriptions.get_mut(*id) else { return stripe_missing("subscription") };
            if let Some(cancel) = req.field("cancel_at_period_end") {
                sub["cancel_at_period_end"] = json!(cancel == "true");
            }
            if let Some(price) = req.field("items[0][price]") {
                // Stripe keeps the item named by items[0][id] and swaps its price.
                assert_eq!(
                    req.field("items[0][id]").as_ref(),
                    sub["items"]["data"][0]["id"].as_str().map(str::to_owned).as_ref()
                );
                sub["items"]["data"][0]["price"]["id"] = json!(price);
                if let Some(quantity) = req.field("items[0][quantity]").and_then(|q| q.parse::<i64>().ok()) {
                    sub["items"]["data"][0]["quantity"] = json!(quantity);
                }
            }
            let answer = sub.clone();
            if let Some(key) = req.header("idempotency-key") {
                shared.replays.insert(key.to_owned(), answer.clone());
            }
            json_response(200, answer)
        }
        ("POST", ["v1", "subscriptions", id, "resume"]) => match shared.subscriptions.get_mut(*id) {
            Some(sub) if sub["status"] == "paused" => {
                sub["status"] = json!("active");
                json_response(200, sub.clone())
            }
            Some(_) => json_response(
                400,
                json!({"error": {"message": "Only paused subscriptions can be resumed.", "type": "invalid_request_error"}}),
            ),
            None => stripe_missing("subscription"),
        },
        // Only `email` may be sent; a repeated Idempotency-Key replays the
        // first answer, and must come with the same e-mail (as Stripe checks).
        ("POST", ["v1", "customers", id]) => {
            let form = req.form();
            assert!(form.iter().all(|(k, _)| k == "email"), "only `email` is sent to a customer: {form:?}");
            let Some(email) = req.field("email") else {
                return json_response(
                    400,
                    json!({"error": {"message": "Missing email", "type": "invalid_request_error"}}),
                );
            };
            let key = req.header("idempotency-key").map(str::to_owned);
            if let Some(first) = key.as_deref().and_then(|k| shared.replays.get(k)) {
                assert_eq!(first["email"], json!(email), "an Idempotency-Key reused with another e-mail");
                return json_response(200, first.clone());
            }
            let Some(customer) = shared.customers.get_mut(*id) else { return stripe_missing("customer") };
            customer["email"] = json!(email);
            let answer = customer.clone();
            if let Some(key) = key {
                shared.replays.insert(key, answer.clone());
            }
            json_response(200, answer)
        }
        ("POST", ["v1", "invoices", "create_preview"]) => match &shared.preview {
            Some(invoice) => json_response(200, invoice.clone()),
            None => stripe_missing("preview"),
        },
        ("DELETE", ["v1", "subscriptions", id]) => match shared.subscriptions.get_mut(*id) {
            Some(sub) => {
                sub["status"] = json!("canceled");
                sub["cancel_at_period_end"] = json!(false);
                json_response(200, sub.clone())
            }
            None => stripe_missing("subscription"),
        },
        ("POST", ["v1", "subscription_items", item]) => {
            let quantity: i64 = req.field("quantity").and_then(|q| q.parse().ok()).unwrap_or(1);
            let found = shared.subscriptions.values_mut().find(|s| s["items"]["data"][0]["id"] == *item);
            match found {
                Some(sub) => {
                    sub["items"]["data"][0]["quantity"] = json!(quantity);
                    json_response(200, sub["items"]["data"][0].clone())
                }
                None => stripe_missing("subscription item"),
            }
        }
        // Newest first, `limit` at a time after `starting_after`, as Stripe pages.
        ("GET", ["v1", "invoices"]) => {
            let subscription = req.query_field("subscription");
            let mine: Vec<&Value> = shared
                .invoices
                .iter()
                .rev()
                .filter(|i| i["subscription"].as_str() == subscription.as_deref())
                .collect();
            let start = match req.query_field("starting_after") {
                None => 0,
                Some(after) => match mine.iter().position(|i| i["id"] == after.as_str()) {
                    Some(at) => at + 1,
                    None => return stripe_missing("invoice"),
                },
            };
            let limit: usize = req.query_field("limit").and_then(|l| l.parse().ok()).unwrap_or(10);
            let page: Vec<Value> = mine.iter().skip(start).take(limit).map(|i| (*i).clone()).collect();
            let has_more = mine.len() > start + limit;
            json_response(200, json!({"object": "list", "data": page, "has_more": has_more, "url": "/v1/invoices"}))
        }
        ("POST", ["v1", "billing_portal", "sessions"]) => {
            let mut portal = stripe_object("billing_portal.session");
            portal["customer"] = json!(req.field("customer"));
            portal["return_url"] = json!(req.field("return_url"));
            portal["url"] = json!("https://billing.stripe.test/p/session/test_standin");
            json_response(200, portal)
        }
        _ => stripe_missing("route"),
    }
}

fn ls_document(id: &str, attributes: &Value) -> Value {
    json!({"jsonapi": {"version": "1.0"}, "data": {"type": "subscriptions", "id": id, "attributes": attributes}})
}

fn ls_missing() -> Response {
    json_response(
        404,
        json!({"errors": [{"status": "404", "title": "Not Found", "detail": "The resource was not found."}]}),
    )
}

fn ls_answer(shared: &mut Shared, method: &Method, segments: &[&str], req: &Recorded) -> Response {
    let read_only_catalog = matches!(segments, ["v1", "users" | "stores" | "variants", ..]);
    if read_only_catalog && req.header("authorization") != Some(format!("Bearer {LS_KEY}").as_str()) {
        return json_response(
            401,
            json!({"errors": [{"status": "401", "title": "Unauthorized", "detail": "Unauthenticated."}]}),
        );
    }
    match (method.as_str(), segments) {
        ("GET", ["v1", "users", "me"]) => {
            json_response(200, json!({"data": {"type": "users", "id": "1", "attributes": {"name": "Tests"}}}))
        }
        ("GET", ["v1", "stores", id]) if *id == LS_STORE => {
            json_response(200, json!({"data": {"type": "stores", "id": id, "attributes": {"name": "Tests"}}}))
        }
        // A test that names its catalog gets exactly it (unknown ids: 404);
        // otherwise every variant exists at 49.00 a month.
        ("GET", ["v1", "variants", id]) => match shared.catalog.get(*id) {
            Some(attrs) => json_response(200, json!({"data": {"type": "variants", "id": id, "attributes": attrs}})),
            None if shared.catalog.is_empty() => json_response(
                200,
                json!({"data": {"type": "variants", "id": id,
                    "attributes": {"name": format!("Variant {id}"), "price": 4900, "interval": "month", "interval_count": 1}}}),
            ),
            None => ls_missing(),
        },
        ("POST", ["v1", "checkouts"]) => json_response(
            201,
            json!({"data": {"type": "checkouts", "id": "5e8b546c-c561-4a2c-a586-40c18bb2a195",
                "attributes": {"url": "https://orgplane.lemonsqueezy.com/checkout/custom/5e8b546c"}}}),
        ),
        ("GET", ["v1", "events"]) => json_response(
            200,
            json!({"object": "list", "data": shared.undelivered, "has_more": false, "url": "/v1/events"}),
        ),
        // The store's subscriptions, in id order, page by page number, as
        // Lemon Squeezy pages (`meta.page`, `links.next`); only this store's.
        ("GET", ["v1", "subscriptions"]) => {
            if req.query_field("filter[store_id]").as_deref() != Some(LS_STORE) {
                return json_response(
                    404,
                    json!({"errors": [{"status": "404", "title": "Not Found", "detail": "No such store."}]}),
                );
            }
            let asked: usize = req.query_field("page[size]").and_then(|l| l.parse().ok()).unwrap_or(10);
            let size = shared.page_cap.map_or(asked, |cap| cap.min(asked)).max(1);
            let number: usize = req.query_field("page[number]").and_then(|l| l.parse().ok()).unwrap_or(1).max(1);
            let all: Vec<(&String, &Value)> = shared.subscriptions.iter().collect();
            let last_page = all.len().div_ceil(size).max(1);
            let data: Vec<Value> = all
                .iter()
                .skip((number - 1) * size)
                .take(size)
                .map(|(id, attrs)| json!({"type": "subscriptions", "id": id, "attributes": attrs}))
                .collect();
            let page_link = |n: usize| {
                format!(
                    "https://api.lemonsqueezy.com/v1/subscriptions?filter%5Bstore_id%5D={LS_STORE}&page%5Bnumber%5D={n}&page%5Bsize%5D={size}"
                )
            };
            let mut links = json!({"first": page_link(1), "last": page_link(last_page)});
            if number < last_page {
                links["next"] = json!(page_link(number + 1));
            }
            json_response(
                200,
                json!({"meta": {"page": {"currentPage": number, "from": (number - 1) * size + 1, "lastPage": last_page,
                        "perPage": size, "to": ((number - 1) * size + data.len()), "total": all.len()}},
                    "jsonapi": {"version": "1.0"}, "links": links, "data": data}),
            )
        }
        ("GET", ["v1", "subscriptions", id]) => match shared.subscriptions.get(*id) {
            Some(attrs) => json_response(200, ls_document(id, attrs)),
            None => ls_missing(),
        },
        ("PATCH", ["v1", "subscriptions", id]) => match shared.subscriptions.get_mut(*id) {
            Some(attrs) => {
                let patch = req.json()["data"]["attributes"].clone();
                if let Some(variant) = patch["variant_id"].as_i64() {
                    attrs["variant_id"] = json!(variant);
                }
                if patch.get("pause").is_some_and(Value::is_null) && attrs["status"] == "paused" {
                    attrs["pause"] = Value::Null;
                    attrs["status"] = json!("active");
                }
                if let Some(cancelled) = req.json()["data"]["attributes"]["cancelled"].as_bool() {
                    attrs["cancelled"] = json!(cancelled);
                    attrs["status"] = json!(if cancelled { "cancelled" } else { "active" });
                    attrs["ends_at"] = if cancelled { attrs["renews_at"].clone() } else { Value::Null };
                }
                json_response(200, ls_document(id, attrs))
            }
            None => ls_missing(),
        },
        ("DELETE", ["v1", "subscriptions", id]) => match shared.subscriptions.get_mut(*id) {
            Some(attrs) => {
                attrs["cancelled"] = json!(true);
                attrs["status"] = json!("cancelled");
                attrs["ends_at"] = attrs["renews_at"].clone();
                json_response(200, ls_document(id, attrs))
            }
            None => ls_missing(),
        },
        // Oldest first, page by page number, as Lemon Squeezy pages.
        ("GET", ["v1", "subscription-invoices"]) => {
            let subscription = req.query_field("filter[subscription_id]");
            let mine: Vec<&Value> = shared
                .invoices
                .iter()
                .filter(|i| Some(i["subscription_id"].to_string().trim_matches('"').to_owned()) == subscription)
                .collect();
            let size: usize = req.query_field("page[size]").and_then(|l| l.parse().ok()).unwrap_or(10);
            let number: usize = req.query_field("page[number]").and_then(|l| l.parse().ok()).unwrap_or(1);
            let last_page = mine.len().div_ceil(size).max(1);
            let data: Vec<Value> = mine
                .iter()
                .skip((number - 1) * size)
                .take(size)
                .map(|i| json!({"type": "subscription-invoices", "id": i["id"], "attributes": i}))
                .collect();
            json_response(
                200,
                json!({"meta": {"page": {"currentPage": number, "lastPage": last_page, "perPage": size, "total": mine.len()}},
                    "jsonapi": {"version": "1.0"}, "data": data}),
            )
        }
        ("PATCH", ["v1", "subscription-items", item]) => {
            let quantity = req.json()["data"]["attributes"]["quantity"].as_i64().unwrap_or(1);
            for attrs in shared.subscriptions.values_mut() {
                if attrs["first_subscription_item"]["id"].to_string().trim_matches('"') == *item {
                    attrs["first_subscription_item"]["quantity"] = json!(quantity);
                }
            }
            json_response(
                200,
                json!({"data": {"type": "subscription-items", "id": item, "attributes": {"quantity": quantity}}}),
            )
        }
        _ => ls_missing(),
    }
}

// -- A gate in front of a provider ---------------------------------------------------

/// A provider API in front of `origin` that holds every request until
/// opened (`open.send(true)`), counting the requests it received.
pub struct Gate {
    pub origin: String,
    pub held: Arc<std::sync::atomic::AtomicUsize>,
    pub open: tokio::sync::watch::Sender<bool>,
}

impl Gate {
    pub async fn start(upstream: String) -> Gate {
        use std::sync::atomic::Ordering;
        let held = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (open, opened) = tokio::sync::watch::channel(false);
        let (count, http) = (held.clone(), reqwest::Client::new());
        let router = axum::Router::new().fallback(move |req: axum::extract::Request| {
            let (count, mut opened, http, upstream) = (count.clone(), opened.clone(), http.clone(), upstream.clone());
            async move {
                count.fetch_add(1, Ordering::SeqCst);
                opened.wait_for(|open| *open).await.expect("gate");
                let (parts, body) = req.into_parts();
                let body = axum::body::to_bytes(body, 1 << 20).await.expect("body");
                let path = parts.uri.path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_default();
                let mut forward = http.request(parts.method, format!("{upstream}{path}")).body(body);
                for name in ["authorization", "content-type", "idempotency-key", "stripe-version"] {
                    if let Some(value) = parts.headers.get(name) {
                        forward = forward.header(name, value);
                    }
                }
                let answer = forward.send().await.expect("upstream answers");
                let status = answer.status();
                let bytes = answer.bytes().await.expect("upstream body");
                (status, [("content-type", "application/json")], bytes)
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let origin = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Gate { origin, held, open }
    }

    /// How many requests reached the gate (held or let through).
    pub fn received(&self) -> usize {
        self.held.load(std::sync::atomic::Ordering::SeqCst)
    }
}
