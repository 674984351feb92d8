//! The Rust client (`crates/client`) against the real server: typed calls
//! and typed errors, lists as streams over every page, the entitlement
//! cache following the event stream (a plan change reflected within 1 s,
//! the stream resumed after a server restart), the cache invalidated by a
//! real outgoing webhook delivery verified with `verify_webhook`, the axum
//! guard layers, and retries of idempotent calls only.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Request;
use axum::routing::{get, patch, post};
use futures_util::TryStreamExt;
use orgplane_client::{
    CacheOptions, CheckoutRequest, Client, CreateOrg, Credentials, EntitlementCache, Error, ErrorCode, Invitation,
    InvitationStatus, LimitUsage, Member, NewResource, OrgKind, Overrides, Remaining, RequireFeature, RequireLimit,
    Resource, RetryPolicy, UpdateOrg,
};
use serde_json::{Value, json};

use crate::billing_support::{eventually, sandbox_app};
use crate::helpers::{Backend, spawn_app, unknown_id};
use crate::on_both_backends;

on_both_backends!(
    the_client_runs_an_orgs_life_with_typed_calls_and_typed_errors,
    lists_are_streams_over_every_page,
    the_cache_reflects_a_plan_change_within_a_second,
    the_guard_layers_answer_from_the_cache_and_confirm_refusals_with_the_server,
    the_cache_resumes_the_event_stream_after_the_server_restarts,
    a_real_webhook_delivery_verified_by_the_client_drops_the_orgs_cached_entry,
);

#[track_caller]
fn api_error(result: Result<impl std::fmt::Debug, Error>, status: u16, code: ErrorCode) -> orgplane_client::ApiError {
    match result {
        Err(Error::Api(e)) => {
            assert_eq!((e.status, &e.code), (status, &code), "{e:?}");
            assert!(!e.message.is_empty());
            e
        }
        other => panic!("expected {status} {code}, got {other:?}"),
    }
}

async fn the_client_runs_an_orgs_life_with_typed_calls_and_typed_errors(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let alice = app.user("alice@example.com").await;
    let bob = app.user("bob@example.com").await;
    let as_alice = Client::new(&app.base, Credentials::Bearer(alice.token.clone()));
    let as_bob = as_alice.with_credentials(Credentials::Bearer(bob.token.clone()));

    let me = as_alice.get_me().await.expect("me");
    assert_eq!(me.id, alice.id);
    assert!(me.memberships.iter().any(|m| m.org_id == alice.personal_org && m.kind == OrgKind::Personal));

    let org = as_alice
        .create_org(&CreateOrg { name: "Agency".into(), billing_email: Some("billing@agency.example".into()) })
        .await
        .expect("create org");
    assert!(org.id.starts_with("org_"));
    assert_eq!((org.kind, org.name.as_str()), (OrgKind::Team, "Agency"));
    assert_eq!(org.billing_email.as_deref(), Some("billing@agency.example"));
    let read = as_alice.get_org(&org.id).await.expect("get org");
    assert_eq!(read.plan.as_deref(), Some("free"));
    assert_eq!(read.role.as_deref(), Some("owner"));
    let mine: BTreeSet<String> = as_alice.list_orgs().map_ok(|o| o.id).try_collect().await.expect("list orgs");
    assert_eq!(mine, BTreeSet::from([org.id.clone(), alice.personal_org.clone()]));

    // Invite, list, accept.
    let invitation =
        as_alice.create_invitation(&org.id, "bob@example.com", Some("admin")).await.expect("create invitation");
    assert_eq!(invitation.status, InvitationStatus::Pending);
    let token = invitation.token.clone().expect("the accept token, once");
    let pending: Vec<Invitation> = as_alice.list_invitations(&org.id).try_collect().await.expect("invitations");
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].id, invitation.id);
    assert_eq!(pending[0].token, None, "the token is shown once");
    let accepted = as_bob.accept_invitation(&token).await.expect("accept");
    assert_eq!(accepted.status, InvitationStatus::Accepted);
    let members: Vec<Member> = as_alice.list_members(&org.id).try_collect().await.expect("members");
    let roles: BTreeSet<(String, String)> = members.iter().map(|m| (m.user_id.clone(), m.role.clone())).collect();
    assert_eq!(roles, BTreeSet::from([(alice.id.clone(), "owner".into()), (bob.id.clone(), "admin".into())]));
    let changed = as_alice.change_member_role(&org.id, &bob.id, "member").await.expect("change role");
    assert_eq!(changed.role, "member");

    let renamed = as_alice
        .update_org(&org.id, &UpdateOrg { name: Some("Agency & Co".into()), ..UpdateOrg::default() })
        .await
        .expect("update org");
    assert_eq!(renamed.name, "Agency & Co");

    // Entitlements, checks and counted resources.
    let entitlements = as_alice.get_entitlements(&org.id).await.expect("entitlements");
    assert_eq!((entitlements.plan.as_str(), entitlements.kind), ("free", OrgKind::Team));
    assert!(entitlements.has("invitations") && !entitlements.has("audit_log"));
    assert_eq!(entitlements.limits["customers"], LimitUsage { limit: Some(3), used: 0 });
    let no = as_alice.check_feature(&org.id, "audit_log").await.expect("check feature");
    assert!(!no.allowed && no.reason.is_some_and(|r| !r.is_empty()));
    assert!(as_alice.check_limit(&org.id, "customers", 3).await.expect("check limit").allowed);
    assert!(!as_alice.check_limit(&org.id, "customers", 4).await.expect("check limit").allowed);
    let mut customers = Vec::new();
    for name in ["Ann", "Ben", "Cy"] {
        let r = NewResource { name: Some(name.into()), ..NewResource::of_type("customers") };
        customers.push(as_alice.create_resource(&org.id, &r).await.expect("create resource"));
    }
    let full = as_alice.create_resource(&org.id, &NewResource::of_type("customers")).await;
    api_error(full, 403, ErrorCode::LimitReached);
    let listed: Vec<Resource> =
        as_alice.list_resources(&org.id, Some("customers")).try_collect().await.expect("resources");
    assert_eq!(listed.len(), 3);
    assert!(listed.iter().all(|r| r.kind == "customers"));
    let gone = as_alice.delete_resource(&org.id, &customers[0].id).await.expect("delete resource");
    assert!(gone.deleted && gone.id == customers[0].id);
    assert_eq!(
        as_alice.get_entitlements(&org.id).await.expect("entitlements").remaining("customers"),
        Remaining::Count(1)
    );
    let grant = as_alice.grant_resource_access(&org.id, &customers[1].id, &bob.id).await.expect("grant");
    assert!(grant.granted);
    assert!(as_alice.check_resource_access(&org.id, &customers[1].id, &bob.id).await.expect("access").allowed);
    assert!(!as_alice.check_resource_access(&org.id, &customers[2].id, &bob.id).await.expect("access").allowed);

    // Errors carry the contract's code, param and request id.
    let unknown = api_error(as_alice.get_org(&unknown_id("org")).await, 404, ErrorCode::NotFound);
    assert!(unknown.request_id.is_some(), "x-request-id is on every answer");
    api_error(as_alice.get_subscription(&org.id).await, 404, ErrorCode::NotFound);
    let bad = api_error(
        as_alice.create_org(&CreateOrg { name: String::new(), billing_email: None }).await,
        422,
        ErrorCode::InvalidRequest,
    );
    assert_eq!(bad.param.as_deref(), Some("name"));
    assert_eq!(bad.to_body()["error"]["code"], "invalid_request");
    // An id is one path segment, escaped: it can't reach another route.
    let escaped = api_error(as_alice.get_org("../../v1/me").await, 400, ErrorCode::InvalidRequest);
    assert_eq!(escaped.param.as_deref(), Some("org"));
    let nobody = Client::new(&app.base, Credentials::Bearer("not-a-token".into()));
    api_error(nobody.get_me().await, 401, ErrorCode::Unauthenticated);

    assert_eq!(as_alice.healthz().await.expect("healthz").status, "ok");
    assert_eq!(as_alice.readyz().await.expect("readyz").status, "ok");
    let document = as_alice.get_openapi().await.expect("openapi");
    assert!(document["paths"]["/v1/orgs/{org}/entitlements"]["get"]["operationId"] == "get_entitlements");

    // Bob leaves; the org then doesn't exist for him. Alice deletes it.
    assert!(as_bob.remove_member(&org.id, &bob.id).await.expect("leave").deleted);
    api_error(as_bob.get_org(&org.id).await, 404, ErrorCode::NotFound);
    assert!(as_alice.delete_org(&org.id).await.expect("delete org").deleted);
    api_error(as_alice.get_org(&org.id).await, 404, ErrorCode::NotFound);
}

async fn lists_are_streams_over_every_page(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let key = app.api_key().await;
    let alice = app.user("alice@example.com").await;
    let org = app.team(&alice, "Agency").await;
    let server = Client::new(&app.base, Credentials::ApiKey(key)).with_page_size(10);
    let unlimited = Overrides { limits: [("clients".to_owned(), None)].into(), ..Overrides::default() };
    let entitlements = server.set_overrides(&org, &unlimited).await.expect("overrides");
    assert_eq!(entitlements.remaining("clients"), Remaining::Unlimited);
    let mut created = Vec::new();
    for i in 0..25 {
        let r = NewResource { external_id: Some(format!("client-{i}")), ..NewResource::of_type("clients") };
        created.push(server.create_resource(&org, &r).await.expect("create").id);
    }
    // 25 items at 10 a page: three pages, each item once.
    let listed: Vec<String> =
        server.list_resources(&org, Some("clients")).map_ok(|r| r.id).try_collect().await.expect("list");
    assert_eq!(listed.len(), 25);
    assert_eq!(listed.iter().collect::<BTreeSet<_>>(), created.iter().collect::<BTreeSet<_>>());
    let events: Vec<String> = server.list_org_events(&org).map_ok(|e| e.id).try_collect().await.expect("events");
    let logged = app.count(&format!("SELECT COUNT(*) FROM events WHERE org_id = '{org}'")).await;
    assert_eq!(events.len() as i64, logged);
    assert_eq!(events.iter().collect::<BTreeSet<_>>().len(), events.len(), "no event twice");
    // An error ends the stream after it is yielded.
    let mut failing = Box::pin(server.list_members(&unknown_id("org")));
    let first = futures_util::StreamExt::next(&mut failing).await.expect("an item");
    api_error(first, 404, ErrorCode::NotFound);
    assert!(futures_util::StreamExt::next(&mut failing).await.is_none());
}

const SUCCESS: &str = "https://app.example/billing/done";
const CANCEL: &str = "https://app.example/billing";

async fn the_cache_reflects_a_plan_change_within_a_second(backend: Backend) {
    let Some(app) = sandbox_app(backend, |_| {}).await else { return };
    let key = app.api_key().await;
    let cache = EntitlementCache::new(Client::new(&app.base, Credentials::ApiKey(key)), CacheOptions::default());
    assert!(cache.staleness().is_some(), "not following yet: only as fresh as the TTL");
    cache.follow_events();
    eventually(10, "the cache to follow the event stream", || async { cache.status().stream_connected }).await;
    assert_eq!(cache.staleness(), None);

    let alice = app.user("alice@example.com").await;
    let org = app.team(&alice, "Clinic").await;
    // The org's creation reaches the cache as events too; let them pass.
    caught_up(&app, &cache).await;
    assert!(!cache.has(&org, "audit_log").await.expect("has"), "free has no audit log");
    assert!(cache.cached(&org).is_some(), "answered from memory from now on");

    let as_alice = Client::new(&app.base, Credentials::Bearer(alice.token.clone()));
    let checkout = CheckoutRequest {
        plan: "business".into(),
        seats: Some(3),
        success_url: SUCCESS.into(),
        cancel_url: CANCEL.into(),
    };
    let started = as_alice.start_checkout(&org, &checkout).await.expect("checkout");
    // `checkout.started` drops the entry too: let it pass and cache the
    // free plan again, so that only the payment's events can change it.
    caught_up(&app, &cache).await;
    assert!(!cache.has(&org, "audit_log").await.expect("has"));
    assert!(cache.cached(&org).is_some());
    let paid =
        app.send_request(app.http.post(format!("{}/pay", started.url)).header("accept", "application/json")).await;
    assert_eq!(paid.expect(200)["subscription_status"], "active");
    let paid_at = Instant::now();
    // The subscription's events drop the entry; the next read is the new plan.
    while !cache.has(&org, "audit_log").await.expect("has") {
        assert!(paid_at.elapsed() < Duration::from_secs(1), "the cache still says free 1 s after the upgrade");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = paid_at.elapsed();
    assert!(took < Duration::from_secs(1), "{took:?}");
    let now = cache.cached(&org).expect("cached again");
    assert_eq!(now.plan, "business");
    assert!(cache.status().last_event_id.is_some_and(|id| id.starts_with("evt_")));
    eprintln!("the cache reflected the upgrade {took:?} after the payment");
}

/// What the loopback receiver made of one delivery.
#[derive(Debug)]
struct Delivery {
    webhook_id: String,
    /// The verified event and whether `handle_event` dropped an entry, or why
    /// `verify_webhook` refused the delivery.
    outcome: Result<(orgplane_client::Event, bool), orgplane_client::WebhookError>,
}

/// The server's outgoing webhooks, not the event stream, keep the cache
/// current: a real HTTP receiver on loopback verifies each delivery with
/// `verify_webhook` (raw body and headers, the endpoint's secret) and hands
/// the event to `handle_event`; after a sandbox upgrade the org's entry is
/// dropped and the next read is the new plan.
async fn a_real_webhook_delivery_verified_by_the_client_drops_the_orgs_cached_entry(backend: Backend) {
    let Some(app) = sandbox_app(backend, crate::webhooks_out::local_webhooks).await else { return };
    let key = app.api_key().await;
    let server = Client::new(&app.base, Credentials::ApiKey(key.clone()));
    // Not following the stream, and a TTL past the test: only a webhook can drop an entry.
    let options = CacheOptions { ttl: Duration::from_secs(3600), ..CacheOptions::default() };
    let cache = EntitlementCache::new(server, options);

    // The receiver: the secret is known once the endpoint exists, so a
    // delivery waits for it rather than being refused.
    let (secret_tx, secret_rx) = tokio::sync::watch::channel(None::<String>);
    let received: Arc<std::sync::Mutex<Vec<Delivery>>> = Arc::default();
    let (c, r) = (cache.clone(), received.clone());
    let router = Router::new().route(
        "/hook",
        post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
            let (c, r, mut secret) = (c.clone(), r.clone(), secret_rx.clone());
            async move {
                let secret = secret.wait_for(Option::is_some).await.expect("the secret is set").clone();
                let secret = secret.expect("some");
                let webhook_id = headers.get("webhook-id").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
                let outcome = orgplane_client::verify_webhook(&[&secret], &headers, &body).map(|event| {
                    let dropped = c.handle_event(&event);
                    (event, dropped)
                });
                let status = if outcome.is_ok() { 204 } else { 400 };
                r.lock().expect("deliveries").push(Delivery { webhook_id, outcome });
                axum::http::StatusCode::from_u16(status).expect("status")
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let hook = format!("http://{}/hook", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, router).await });

    let created = app.post("/v1/webhook_endpoints", &key, json!({"url": hook})).await.expect(201).clone();
    let secret = created["secret"].as_str().expect("the secret, shown once").to_owned();
    assert!(secret.starts_with("whsec_"), "{created}");
    secret_tx.send(Some(secret)).expect("the receiver listens");

    let alice = app.user("alice@example.com").await;
    let org = app.team(&alice, "Clinic").await;
    let as_alice = Client::new(&app.base, Credentials::Bearer(alice.token.clone()));
    let checkout = CheckoutRequest {
        plan: "business".into(),
        seats: Some(3),
        success_url: SUCCESS.into(),
        cancel_url: CANCEL.into(),
    };
    let started = as_alice.start_checkout(&org, &checkout).await.expect("checkout");
    // Every delivery so far (the org's creation, `checkout.started`) has
    // arrived: from here on only the payment's events can drop the entry.
    let before = delivered_all(&app, &received, 0).await;
    assert!(!cache.has(&org, "audit_log").await.expect("has"), "free has no audit log");
    assert_eq!(cache.cached(&org).map(|e| e.plan.clone()).as_deref(), Some("free"), "cached");

    let paid =
        app.send_request(app.http.post(format!("{}/pay", started.url)).header("accept", "application/json")).await;
    assert_eq!(paid.expect(200)["subscription_status"], "active");
    delivered_all(&app, &received, before).await;

    {
        let deliveries = received.lock().expect("deliveries");
        for d in deliveries.iter() {
            assert!(d.outcome.is_ok(), "every delivery verifies with the endpoint's secret: {d:?}");
        }
        let payment: Vec<&(orgplane_client::Event, bool)> =
            deliveries[before..].iter().filter_map(|d| d.outcome.as_ref().ok()).collect();
        assert!(
            payment
                .iter()
                .any(|(e, _)| e.org_id.as_deref() == Some(org.as_str()) && e.kind.starts_with("subscription.")),
            "the upgrade arrived as a webhook: {payment:?}"
        );
        assert_eq!(
            payment.iter().find(|(e, _)| e.org_id.as_deref() == Some(org.as_str())).map(|(_, dropped)| *dropped),
            Some(true),
            "the first delivered event of the org dropped its cached entry: {payment:?}"
        );
    }
    assert!(cache.cached(&org).is_none(), "the org's entry was dropped");
    assert!(cache.has(&org, "audit_log").await.expect("has"), "the next read is the upgraded plan");
    assert_eq!(cache.cached(&org).expect("cached again").plan, "business");
}

/// Waits until the receiver holds a delivery of every event committed so
/// far (and as many deliveries); returns how many that is.
async fn delivered_all(
    app: &crate::helpers::TestApp,
    received: &std::sync::Mutex<Vec<Delivery>>,
    at_least: usize,
) -> usize {
    let ids =
        app.strings("SELECT id FROM events WHERE seq > (SELECT MAX(start_after_seq) FROM webhook_endpoints)").await;
    assert!(ids.len() > at_least, "new events were committed: {ids:?}");
    eventually(30, "every committed event to be delivered", || async {
        let got = received.lock().expect("deliveries");
        ids.iter().all(|id| got.iter().any(|d| &d.webhook_id == id))
    })
    .await;
    let n = received.lock().expect("deliveries").len();
    assert_eq!(n, ids.len(), "each event delivered once");
    n
}

/// Waits until the cache's stream has delivered the last event of the log.
async fn caught_up(app: &crate::helpers::TestApp, cache: &EntitlementCache) {
    let last = app.strings("SELECT id FROM events ORDER BY seq DESC LIMIT 1").await;
    eventually(10, "the cache to read the last event of the log", || async {
        cache.status().last_event_id.as_deref() == last.first().map(String::as_str)
    })
    .await;
}

/// The org of `/orgs/{org}/…`.
fn org_in_path(req: &Request) -> Option<String> {
    let mut segments = req.uri().path().trim_start_matches('/').split('/');
    (segments.next() == Some("orgs")).then(|| segments.next().map(str::to_owned)).flatten()
}

/// An axum app with a guarded route per guard, served on a free port.
async fn guarded_app(cache: &EntitlementCache) -> String {
    let router = Router::new()
        .route(
            "/orgs/{org}/audit",
            get(|| async { "the audit log" }).route_layer(RequireFeature::new("audit_log", org_in_path)),
        )
        .route(
            "/orgs/{org}/customers",
            post(|| async { "a customer" }).route_layer(RequireLimit::new("customers", org_in_path).amount(2)),
        )
        .route("/audit", get(|| async { "no org" }).route_layer(RequireFeature::new("audit_log", org_in_path)))
        .layer(axum::Extension(cache.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{addr}")
}

async fn call(method: reqwest::Method, url: String) -> (u16, Value) {
    let res = reqwest::Client::new().request(method, url).send().await.expect("the guarded app answers");
    let status = res.status().as_u16();
    let text = res.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

async fn the_guard_layers_answer_from_the_cache_and_confirm_refusals_with_the_server(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let key = app.api_key().await;
    let alice = app.user("alice@example.com").await;
    let org = app.team(&alice, "Agency").await;
    let server = Client::new(&app.base, Credentials::ApiKey(key));
    // Not following the stream, and a long TTL: the cache goes stale on purpose.
    let options = CacheOptions { ttl: Duration::from_secs(3600), ..CacheOptions::default() };
    let cache = EntitlementCache::new(server.clone(), options);
    let base = guarded_app(&cache).await;

    // A miss reads the org; the refusal is confirmed and answered in the contract's shape.
    let (status, body) = call(reqwest::Method::GET, format!("{base}/orgs/{org}/audit")).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "feature_not_entitled");
    assert_eq!(body["error"]["param"], "audit_log");
    assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    assert!(cache.cached(&org).is_some());
    let (status, body) = call(reqwest::Method::POST, format!("{base}/orgs/{org}/customers")).await;
    assert_eq!((status, body.clone()), (200, json!("a customer")), "2 of 3 customers fit");
    for _ in 0..2 {
        server.create_resource(&org, &NewResource::of_type("customers")).await.expect("create");
    }
    cache.invalidate(&org);
    let (status, body) = call(reqwest::Method::POST, format!("{base}/orgs/{org}/customers")).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        (body["error"]["code"].as_str(), body["error"]["param"].as_str()),
        (Some("limit_reached"), Some("customers"))
    );

    // A sales-led deal turns the audit log on. The stale cache still says
    // no; the server's check says yes: the request goes through and the
    // stale entry is dropped.
    let on = Overrides { features: [("audit_log".to_owned(), true)].into(), ..Overrides::default() };
    server.set_overrides(&org, &on).await.expect("overrides");
    assert_eq!(cache.cached(&org).map(|e| e.has("audit_log")), Some(false), "stale on purpose");
    let (status, body) = call(reqwest::Method::GET, format!("{base}/orgs/{org}/audit")).await;
    assert_eq!((status, body), (200, json!("the audit log")));
    assert!(cache.cached(&org).is_none(), "the stale entry was dropped");
    assert_eq!(call(reqwest::Method::GET, format!("{base}/orgs/{org}/audit")).await.0, 200);
    assert_eq!(cache.cached(&org).map(|e| e.has("audit_log")), Some(true));

    // A request that names no org.
    let (status, body) = call(reqwest::Method::GET, format!("{base}/audit")).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")));

    // The hot path makes no network call: a cache whose orgplane is
    // unreachable still answers from what it holds.
    let unreachable =
        Client::new("http://127.0.0.1:9", Credentials::ApiKey("sk_nowhere".into())).with_retry(RetryPolicy::NONE);
    let offline = EntitlementCache::new(unreachable, options);
    offline.insert(server.get_entitlements(&org).await.expect("entitlements"));
    let offline_base = guarded_app(&offline).await;
    assert_eq!(call(reqwest::Method::GET, format!("{offline_base}/orgs/{org}/audit")).await.0, 200);
    let (status, body) = call(reqwest::Method::GET, format!("{offline_base}/orgs/{}/audit", unknown_id("org"))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (503, Some("unavailable")), "a miss needs orgplane");
}

async fn the_cache_resumes_the_event_stream_after_the_server_restarts(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let key = app.api_key().await;
    let alice = app.user("alice@example.com").await;
    let org = app.team(&alice, "Agency").await;
    let first = app.start_server("127.0.0.1:0".parse().expect("addr")).await;
    let addr = first.addr;
    let options = CacheOptions {
        ttl: Duration::from_secs(3600),
        reconnect_delay: Duration::from_millis(50),
        max_reconnect_delay: Duration::from_millis(200),
        ..CacheOptions::default()
    };
    let cache = EntitlementCache::new(Client::new(&first.base, Credentials::ApiKey(key.clone())), options);
    cache.follow_events();
    eventually(10, "the cache to follow the stream", || async { cache.status().stream_connected }).await;
    // One event read, so that there is a place to resume after.
    app.patch(&format!("/v1/orgs/{org}"), &alice.token, json!({"name": "Agency & Co"})).await.expect(200);
    eventually(10, "the rename to arrive", || async { cache.status().last_event_id.is_some() }).await;
    assert_eq!(cache.remaining(&org, "customers").await.expect("remaining"), Remaining::Count(3));

    first.stop().await;
    eventually(10, "the cache to see the stream end", || async { !cache.status().stream_connected }).await;
    let down = cache.status();
    assert!(down.stale_for.is_some() && down.last_error.is_some(), "{down:?}");
    // A change while the server is down (another replica, same database).
    let server = Client::new(&app.base, Credentials::ApiKey(key));
    server.create_resource(&org, &NewResource::of_type("customers")).await.expect("create");
    let missed =
        app.strings(&format!("SELECT id FROM events WHERE org_id = '{org}' AND type = 'resource.created'")).await;
    assert_eq!(cache.cached(&org).map(|e| e.remaining("customers")), Some(Remaining::Count(3)), "stale while down");

    let second = app.start_server(addr).await;
    eventually(10, "the cache to resume after the missed event", || async {
        let status = cache.status();
        status.stream_connected && status.last_event_id.as_deref() == Some(missed[0].as_str())
    })
    .await;
    assert_eq!(cache.staleness(), None);
    // The missed event reached the cache: its entry was dropped, and the next read is current.
    assert!(cache.cached(&org).is_none());
    assert_eq!(cache.remaining(&org, "customers").await.expect("remaining"), Remaining::Count(2));
    // The stream follows new changes on the restarted server too.
    app.patch(&format!("/v1/orgs/{org}"), &alice.token, json!({"name": "Agency"})).await.expect(200);
    eventually(10, "the next change to arrive", || async { cache.cached(&org).is_none() }).await;
    second.stop().await;
}

/// A stand-in orgplane that answers 503 or 429 a given number of times per
/// route, counting requests and recording `Idempotency-Key`s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_calls_are_retried_after_503_429_and_patch_is_not() {
    #[derive(Clone, Default)]
    struct Hits {
        get: Arc<AtomicUsize>,
        slow: Arc<AtomicUsize>,
        patch: Arc<AtomicUsize>,
        post: Arc<AtomicUsize>,
        keys: Arc<std::sync::Mutex<Vec<String>>>,
    }
    fn refusal(status: u16, retry_after: &str) -> axum::response::Response {
        use axum::response::IntoResponse;
        let code = if status == 429 { "rate_limited" } else { "unavailable" };
        let body = json!({"error": {"code": code, "message": "try again shortly"}});
        (
            axum::http::StatusCode::from_u16(status).expect("status"),
            [("retry-after", retry_after.to_owned())],
            axum::Json(body),
        )
            .into_response()
    }
    fn org(id: &str) -> axum::response::Response {
        use axum::response::IntoResponse;
        axum::Json(json!({"id": id, "kind": "team", "name": "Agency", "settings": {}, "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z"})).into_response()
    }
    let hits = Hits::default();
    let h = hits.clone();
    let router = Router::new()
        .route(
            "/v1/orgs/{org}",
            get({
                let h = h.clone();
                move |axum::extract::Path(id): axum::extract::Path<String>| {
                    let h = h.clone();
                    async move {
                        if id == "org_slow" {
                            h.slow.fetch_add(1, Ordering::SeqCst);
                            return refusal(503, "60");
                        }
                        if h.get.fetch_add(1, Ordering::SeqCst) < 2 { refusal(503, "0") } else { org(&id) }
                    }
                }
            })
            .merge(patch({
                let h = h.clone();
                move || {
                    let h = h.clone();
                    async move {
                        h.patch.fetch_add(1, Ordering::SeqCst);
                        refusal(503, "0")
                    }
                }
            })),
        )
        .route(
            "/v1/orgs",
            post(move |headers: axum::http::HeaderMap| {
                let h = h.clone();
                async move {
                    let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
                    h.keys.lock().expect("keys").push(key);
                    if h.post.fetch_add(1, Ordering::SeqCst) < 1 { refusal(429, "0") } else { org("org_new") }
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, router).await });
    let retry =
        RetryPolicy { max_retries: 3, base_delay: Duration::from_millis(10), max_delay: Duration::from_millis(200) };
    let client = Client::new(&base, Credentials::ApiKey("sk_test".into())).with_retry(retry);

    let got = client.get_org("org_a").await.expect("the third attempt succeeds");
    assert_eq!(got.id, "org_a");
    assert_eq!(hits.get.load(Ordering::SeqCst), 3);

    let created =
        client.create_org(&CreateOrg { name: "Agency".into(), billing_email: None }).await.expect("retried POST");
    assert_eq!(created.id, "org_new");
    let keys = hits.keys.lock().expect("keys").clone();
    assert_eq!(keys.len(), 2);
    assert!(!keys[0].is_empty() && keys[0] == keys[1], "one Idempotency-Key for every attempt: {keys:?}");

    let err = client.update_org("org_a", &UpdateOrg { name: Some("X".into()), ..UpdateOrg::default() }).await;
    api_error(err, 503, ErrorCode::Unavailable);
    assert_eq!(hits.patch.load(Ordering::SeqCst), 1, "PATCH is not idempotent: never retried");

    let err = api_error(client.get_org("org_slow").await, 503, ErrorCode::Unavailable);
    assert_eq!(err.retry_after, Some(60));
    assert_eq!(hits.slow.load(Ordering::SeqCst), 1, "a Retry-After past max_delay ends the retries");

    let closed = Client::new("http://127.0.0.1:9", Credentials::ApiKey("sk_test".into())).with_retry(retry);
    let err = closed.get_org("org_a").await.expect_err("nothing listens");
    assert!(matches!(err, Error::Transport(_)) && err.code() == ErrorCode::Unavailable, "{err:?}");
}

/// Many requests of one org missing the cache at once make one request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_of_one_org_make_one_request() {
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let router = Router::new().route(
        "/v1/orgs/{org}/entitlements",
        get(move |axum::extract::Path(org): axum::extract::Path<String>| {
            let h = h.clone();
            async move {
                h.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
                axum::Json(json!({"org_id": org, "kind": "team", "plan": "free", "tier": "free", "status": null,
                    "features": {"invitations": true}, "limits": {"customers": {"limit": 3, "used": 1}}}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, router).await });
    let cache =
        EntitlementCache::new(Client::new(&base, Credentials::ApiKey("sk_test".into())), CacheOptions::default());
    let reads = (0..10).map(|_| cache.remaining("org_a", "customers"));
    for remaining in futures_util::future::join_all(reads).await {
        assert_eq!(remaining.expect("remaining"), Remaining::Count(2));
    }
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

/// A stand-in event stream the test writes to: the cache drops one org's
/// entry per event of that org, trusts nothing after an event it can't
/// read, and resumes after the last event's id (read or not).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_drops_entries_per_event_and_everything_after_an_unreadable_one() {
    type Chunks = tokio::sync::mpsc::UnboundedReceiver<String>;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let first: Arc<std::sync::Mutex<Option<Chunks>>> = Arc::new(std::sync::Mutex::new(Some(rx)));
    let resumed_after: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let (f, r) = (first.clone(), resumed_after.clone());
    let router = Router::new().route(
        "/v1/events/stream",
        get(move |headers: axum::http::HeaderMap| {
            let (f, r) = (f.clone(), r.clone());
            async move {
                if let Some(id) = headers.get("last-event-id").and_then(|v| v.to_str().ok()) {
                    r.lock().expect("ids").push(id.to_owned());
                }
                let body = match f.lock().expect("first").take() {
                    Some(rx) => axum::body::Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
                        rx.recv().await.map(|chunk| (Ok::<_, std::convert::Infallible>(chunk), rx))
                    })),
                    // Later connections: an empty stream, ended at once.
                    None => axum::body::Body::empty(),
                };
                ([("content-type", "text/event-stream")], body)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, router).await });
    let options = CacheOptions { max_reconnect_delay: Duration::from_millis(200), ..CacheOptions::default() };
    let cache = EntitlementCache::new(Client::new(&base, Credentials::ApiKey("sk_test".into())), options);
    cache.follow_events();
    eventually(10, "the stream to open", || async { cache.status().stream_connected }).await;
    let entitlements = |org: &str| {
        serde_json::from_value::<orgplane_client::Entitlements>(json!({"org_id": org, "kind": "team", "plan": "free",
            "tier": "free", "status": null, "features": {}, "limits": {}}))
        .expect("entitlements")
    };
    cache.insert(entitlements("org_a"));
    cache.insert(entitlements("org_b"));

    let event = json!({"id": "evt_1", "org_id": "org_a", "type": "org.updated", "actor": "system", "data": {},
        "created_at": "2026-01-01T00:00:00Z"});
    tx.send(format!("id: evt_1\nevent: org.updated\ndata: {event}\n\n")).expect("send");
    eventually(10, "org_a's entry to go", || async { cache.cached("org_a").is_none() }).await;
    assert!(cache.cached("org_b").is_some(), "another org's event");

    tx.send(": keep-alive\n\nid: evt_2\nevent: org.updated\ndata: {\"id\": \"evt_2\", not json\n\n".into())
        .expect("send");
    eventually(10, "every entry to go", || async { cache.cached("org_b").is_none() }).await;
    let status = cache.status();
    assert!(status.stream_connected, "an unreadable event does not end the stream");
    assert_eq!(status.last_event_id.as_deref(), Some("evt_2"));
    assert!(status.last_error.is_some_and(|e| e.contains("event")));

    drop(tx);
    eventually(10, "a reconnect resuming after evt_2", || async {
        resumed_after.lock().expect("ids").first().map(String::as_str) == Some("evt_2")
    })
    .await;
}
