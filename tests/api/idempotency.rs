//! `Idempotency-Key` when a request is interrupted: a client that goes away,
//! a replica killed mid-request, a request that outlives the request
//! timeout. The operation happens exactly once and a retry with the same key
//! always ends with the answer, never with a key claimed forever.
//!
//! Requests are made slow for real: on PostgreSQL a test connection holds
//! `LOCK TABLE orgs IN EXCLUSIVE MODE` (reads and the idempotency claim go
//! through, creating an org waits); on SQLite it holds a `BEGIN IMMEDIATE`
//! write transaction (every write waits, the claim included).

use std::sync::atomic::Ordering;
use std::time::Duration;

use orgplane_auth::keys::{KeyAlg, SigningKey};
use serde_json::{Value, json};
use sqlx::Connection;
use tokio::io::AsyncWriteExt;

use crate::billing_support::{Gate, eventually};
use crate::helpers::{AUDIENCE, Backend, ISSUER, Idp, Res, TestApp, TestUser, spawn_app, spawn_app_with};
use crate::on_both_backends;

on_both_backends!(
    a_client_that_disconnects_mid_request_leaves_the_work_done_once_and_the_retry_replays_it,
    a_client_that_disconnects_during_a_provider_call_gets_the_checkout_made_once_on_retry,
    a_replica_killed_mid_request_leaves_a_claim_that_a_retry_takes_over_after_its_lease,
    concurrent_retries_after_an_expired_lease_run_the_request_exactly_once,
    a_live_claim_answers_409_with_retry_after,
    a_request_that_outlives_the_request_timeout_answers_503_and_releases_its_key,
    keys_older_than_a_day_are_swept_and_then_run_again,
    a_key_sent_without_credentials_is_never_claimed_nor_replayed,
);

/// The lease and request timeout of the tests' apps: short, so that a dead
/// claim expires within a test.
fn short_lease(c: &mut orgplane_server::Config) {
    c.server.request_timeout_secs = 1;
    c.server.idempotency_lease_secs = 2;
}

/// A test connection that holds the database's write path until released.
enum WriteBlock {
    Postgres(sqlx::PgConnection),
    Sqlite(sqlx::SqliteConnection),
}

impl WriteBlock {
    async fn hold(backend: Backend, url: &str) -> WriteBlock {
        match backend {
            Backend::Postgres => {
                let mut c = sqlx::PgConnection::connect(url).await.expect("pg");
                sqlx::raw_sql("BEGIN; LOCK TABLE orgs IN EXCLUSIVE MODE").execute(&mut c).await.expect("lock orgs");
                WriteBlock::Postgres(c)
            }
            Backend::Sqlite => {
                let mut c = sqlx::SqliteConnection::connect(url).await.expect("sqlite");
                sqlx::raw_sql("BEGIN IMMEDIATE").execute(&mut c).await.expect("write lock");
                WriteBlock::Sqlite(c)
            }
        }
    }

    async fn release(self) {
        match self {
            WriteBlock::Postgres(mut c) => {
                sqlx::raw_sql("ROLLBACK").execute(&mut c).await.expect("unlock");
            }
            WriteBlock::Sqlite(mut c) => {
                sqlx::raw_sql("ROLLBACK").execute(&mut c).await.expect("unlock");
            }
        }
    }
}

async fn claims_of(app: &TestApp, key: &str) -> i64 {
    app.count(&format!("SELECT COUNT(*) FROM idempotency_keys WHERE key = '{key}' AND status_code IS NULL")).await
}

async fn orgs_named(app: &TestApp, name: &str) -> i64 {
    app.count(&format!("SELECT COUNT(*) FROM orgs WHERE name = '{name}'")).await
}

async fn create_org(app: &TestApp, base: &str, token: &str, key: &str, name: &str) -> Res {
    let req = app
        .http
        .post(format!("{base}/v1/orgs"))
        .bearer_auth(token)
        .header("idempotency-key", key)
        .json(&json!({"name": name}));
    app.send_request(req).await
}

fn replayed(res: &Res) -> bool {
    res.headers.get("idempotent-replayed").is_some_and(|v| v == "true")
}

/// Retries until the answer is no longer "still in progress" (409) or
/// "try again" (503: under load a retry may outlive a test's 1 s request
/// timeout, which releases the key), up to `secs`.
async fn retry_until_done(app: &TestApp, user: &TestUser, key: &str, name: &str, secs: u64) -> Res {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let res = create_org(app, &app.base, &user.token, key, name).await;
        if !matches!(res.status.as_u16(), 409 | 503) {
            return res;
        }
        assert!(tokio::time::Instant::now() < deadline, "the key {key} was still claimed after {secs} s: {}", res.body);
        tokio::time::sleep(Duration::from_millis(100)).await; // the poll interval of a wait on the key's release
    }
}

/// A token for `user` signed by a key the server has not fetched yet, so
/// that the IdP's JWKS fetch count tells when the server is authenticating
/// this very request.
fn token_with_a_new_key(idp: &Idp, user: &TestUser) -> String {
    let key = SigningKey::generate(KeyAlg::Rs256, format!("rsa-{}", uuid::Uuid::now_v7().simple())).expect("key");
    idp.keys.lock().expect("jwks")["keys"].as_array_mut().expect("keys").push(key.public_jwk());
    key.sign(&Idp::claims(&format!("sub-{}", user.email), &user.email)).expect("sign")
}

async fn a_client_that_disconnects_mid_request_leaves_the_work_done_once_and_the_retry_replays_it(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let alice = app.user("alice@example.com").await;
    let token = token_with_a_new_key(&app.idp, &alice);
    let fetches = app.idp.fetches.load(Ordering::SeqCst);
    let block = WriteBlock::hold(backend, &app.database_url).await;

    let body = json!({"name": "Left Behind"}).to_string();
    let mut socket = tokio::net::TcpStream::connect(app.addr).await.expect("connect");
    let request = format!(
        "POST /v1/orgs HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {token}\r\nidempotency-key: gone-1\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        app.addr,
        body.len()
    );
    socket.write_all(request.as_bytes()).await.expect("send");
    // The server is working on the request: it fetched the JWKS for the new
    // key, and on PostgreSQL it has claimed the key and waits for the lock.
    eventually(10, "the server to authenticate the request", || async {
        app.idp.fetches.load(Ordering::SeqCst) > fetches
    })
    .await;
    if backend == Backend::Postgres {
        eventually(10, "the claim of the key", || async { claims_of(&app, "gone-1").await == 1 }).await;
    }
    // The client goes away before the answer, and the server closes the
    // connection (dropping the request's future) while the write waits.
    socket.shutdown().await.expect("half-close");
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tokio::io::AsyncReadExt::read_to_end(&mut socket, &mut rest))
        .await
        .expect("the server closes the connection within 10 s")
        .expect("read");
    assert!(rest.is_empty(), "no answer was sent: {}", String::from_utf8_lossy(&rest));
    block.release().await;

    let res = retry_until_done(&app, &alice, "gone-1", "Left Behind", 20).await;
    res.expect(201);
    // On SQLite the claim itself waited for the write lock, so whether the
    // first request or the retry ran depends on which got the lock first;
    // either way exactly one org exists. (The provider-call test below
    // makes the request slow after its claim on SQLite too.)
    if backend == Backend::Postgres {
        // The first request had claimed the key: it ran to its end, and the
        // retry gets its stored answer.
        assert!(replayed(&res), "the retry replays the first request's answer: {:?}", res.headers);
    }
    assert_eq!(orgs_named(&app, "Left Behind").await, 1, "the org was created exactly once");
    let org = res.body["id"].as_str().expect("org id");
    app.get(&format!("/v1/orgs/{org}"), &alice.token).await.expect(200);
    let again = create_org(&app, &app.base, &alice.token, "gone-1", "Left Behind").await;
    assert_eq!(again.expect(201)["id"], org, "every later retry replays the same org");
    assert_eq!(claims_of(&app, "gone-1").await, 0, "no claim is left behind");
}

/// A real `orgplane serve` on the app's database, trusting the app's IdP.
async fn spawn_replica(app: &TestApp, dir: &std::path::Path) -> (tokio::process::Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("free port").local_addr().expect("addr").port();
    std::fs::create_dir_all(dir).expect("dir");
    let config = dir.join("orgplane.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\ndatabase_url = \"{}\"\ndata_dir = \"{}\"\n\
             [auth]\njwks_refresh_min_interval_secs = 0\n\
             [[auth.issuers]]\nissuer = \"{ISSUER}\"\njwks_url = \"{}\"\naudience = [\"{AUDIENCE}\"]\n",
            app.database_url,
            dir.display(),
            app.idp.jwks_url
        ),
    )
    .expect("config");
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_orgplane"))
        .args(["serve", "--config"])
        .arg(&config)
        .env_remove("ORGPLANE_CONFIG")
        .env("ORGPLANE_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .expect("serve starts");
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    eventually(30, "the replica to answer /healthz", || {
        let req = http.get(format!("{base}/healthz"));
        async move { req.send().await.is_ok_and(|r| r.status().is_success()) }
    })
    .await;
    (child, base)
}

async fn a_replica_killed_mid_request_leaves_a_claim_that_a_retry_takes_over_after_its_lease(backend: Backend) {
    let Some(app) = spawn_app_with(backend, short_lease).await else { return };
    let alice = app.user("alice@example.com").await;
    let dir = std::env::temp_dir().join(format!("orgplane_replica_{}", uuid::Uuid::now_v7().simple()));
    let (mut replica, replica_base) = spawn_replica(&app, &dir).await;
    let fetches = app.idp.fetches.load(Ordering::SeqCst);
    let block = WriteBlock::hold(backend, &app.database_url).await;

    let request = app
        .http
        .post(format!("{replica_base}/v1/orgs"))
        .bearer_auth(&alice.token)
        .header("idempotency-key", "killed-1")
        .json(&json!({"name": "Crash Site"}));
    let in_flight = tokio::spawn(request.send());
    // The replica is working on the request (it fetched the IdP's keys to
    // authenticate it).
    eventually(10, "the replica to authenticate the request", || async {
        app.idp.fetches.load(Ordering::SeqCst) > fetches
    })
    .await;
    if backend == Backend::Postgres {
        // The replica claimed the key and waits for the lock on orgs.
        eventually(10, "the replica's claim of the key", || async { claims_of(&app, "killed-1").await == 1 }).await;
    }
    // On SQLite the claim itself waits for the write lock, so the replica
    // dies before claiming; the test then proves that a kill mid-request
    // still leaves the operation to happen exactly once.
    replica.start_kill().expect("kill -9");
    replica.wait().await.expect("the replica is gone");
    assert!(in_flight.await.expect("task").is_err(), "the killed replica never answered");
    block.release().await;

    // The claim is a dead replica's: once its lease (2 s) has run out on
    // this server's clock, a retry takes it over and runs the request.
    app.clock.advance(time::Duration::seconds(3));
    let res = retry_until_done(&app, &alice, "killed-1", "Crash Site", 20).await;
    res.expect(201);
    assert!(!replayed(&res), "the killed request stored no answer; the retry ran it");
    assert_eq!(orgs_named(&app, "Crash Site").await, 1, "the org was created exactly once");
    let again = create_org(&app, &app.base, &alice.token, "killed-1", "Crash Site").await;
    assert_eq!(again.expect(201)["id"], res.body["id"], "later retries replay the taken-over answer");
    assert!(replayed(&again));
    let _ = std::fs::remove_dir_all(dir);
}

/// Makes `key` look claimed by a request of `user` that stopped at
/// `claimed_at_ms` (a dead replica's claim), for the same body as `model`, a
/// finished key of the same request.
async fn plant_claim(app: &TestApp, model: &str, key: &str, claimed_at_ms: i64) {
    app.sql(&format!(
        "INSERT INTO idempotency_keys (principal, key, request_hash, created_at) \
         SELECT principal, '{key}', request_hash, {claimed_at_ms} FROM idempotency_keys WHERE key = '{model}'"
    ))
    .await;
}

fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

async fn concurrent_retries_after_an_expired_lease_run_the_request_exactly_once(backend: Backend) {
    // The default lease (120 s): the planted claim is older than that.
    let Some(app) = spawn_app(backend).await else { return };
    let alice = app.user("alice@example.com").await;
    create_org(&app, &app.base, &alice.token, "model-1", "Twins").await.expect(201);
    // A claim taken ten minutes ago by a replica that died.
    plant_claim(&app, "model-1", "orphan-1", now_ms() - 600_000).await;

    let retries = (0..30).map(|_| create_org(&app, &app.base, &alice.token, "orphan-1", "Twins"));
    let answers: Vec<Res> = futures_util::future::join_all(retries).await;
    let ran: Vec<&Res> = answers.iter().filter(|r| r.status.as_u16() == 201 && !replayed(r)).collect();
    assert_eq!(
        ran.len(),
        1,
        "exactly one retry runs the request: {:?}",
        answers.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    let org = ran[0].body["id"].clone();
    for res in &answers {
        match res.status.as_u16() {
            201 => assert_eq!(res.body["id"], org, "a replay carries the same org"),
            409 => {
                res.expect_error(409, "conflict");
                assert!(res.headers.contains_key("retry-after"), "{:?}", res.headers);
            }
            other => panic!("unexpected status {other}: {}", res.body),
        }
    }
    assert_eq!(orgs_named(&app, "Twins").await, 2, "one org for model-1, one for orphan-1");
    let again = retry_until_done(&app, &alice, "orphan-1", "Twins", 10).await;
    assert_eq!(again.expect(201)["id"], org);
}

async fn a_live_claim_answers_409_with_retry_after(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let alice = app.user("alice@example.com").await;
    create_org(&app, &app.base, &alice.token, "model-1", "Busy").await.expect(201);
    // Claimed just now by a request that is still running.
    plant_claim(&app, "model-1", "busy-1", now_ms()).await;

    let res = create_org(&app, &app.base, &alice.token, "busy-1", "Busy").await;
    res.expect_error(409, "conflict");
    let wait: u64 = res.headers["retry-after"].to_str().expect("ascii").parse().expect("Retry-After is in seconds");
    assert!((1..=121).contains(&wait), "Retry-After is within the default 120 s lease (rounded up): {wait}");
    let message = res.body["error"]["message"].as_str().expect("message");
    assert!(message.contains("retry in") && message.contains("same key"), "{message}");
    assert_eq!(orgs_named(&app, "Busy").await, 1, "nothing ran for the held key");
}

/// A Stripe API that never answers: a provider call that takes longer than
/// the request timeout.
async fn hanging_provider() -> String {
    let router = axum::Router::new().fallback(|| async {
        std::future::pending::<()>().await;
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    format!("http://{addr}")
}

async fn a_request_that_outlives_the_request_timeout_answers_503_and_releases_its_key(backend: Backend) {
    // The slow part is a payment provider that does not answer: the same on
    // both databases, and after the claim (on SQLite, a write lock would
    // hold the claim itself back).
    let provider = hanging_provider().await;
    let Some(app) = crate::billing_support::stripe_webhook_app(backend, |c| {
        short_lease(c);
        c.billing.provider = Some(orgplane_server::billing::CheckoutProvider::Stripe);
        c.billing.stripe.api_key = Some(crate::billing_support::STRIPE_KEY.to_owned());
        c.billing.stripe.api_base = provider;
    })
    .await
    else {
        return;
    };
    let alice = app.user("alice@example.com").await;
    let org = app.team(&alice, "Slow Shop").await;
    let body =
        json!({"plan": "business", "success_url": "https://app.example/ok", "cancel_url": "https://app.example/no"});
    let checkout = |key: &'static str, body: Value| {
        let req = app
            .http
            .post(app.url(&format!("/v1/orgs/{org}/checkout")))
            .bearer_auth(&alice.token)
            .header("idempotency-key", key)
            .json(&body);
        app.send_request(req)
    };
    let res = checkout("slow-1", body.clone()).await;
    res.expect_error(503, "unavailable");
    assert!(res.headers.contains_key("retry-after"), "{:?}", res.headers);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM idempotency_keys WHERE key = 'slow-1'").await,
        0,
        "the timed-out request released its key"
    );
    // The retry runs again (and times out again) instead of answering 409.
    checkout("slow-1", body).await.expect_error(503, "unavailable");
    // Routes without a key are bounded too.
    let res = app
        .send_request(
            app.http
                .post(app.url(&format!("/v1/orgs/{org}/checkout")))
                .bearer_auth(&alice.token)
                .json(&json!({"plan": "business", "success_url": "https://app.example/ok", "cancel_url": "https://app.example/no"})),
        )
        .await;
    res.expect_error(503, "unavailable");
}

async fn a_client_that_disconnects_during_a_provider_call_gets_the_checkout_made_once_on_retry(backend: Backend) {
    // The slow part comes after the claim on both databases: the provider's
    // answer to the checkout.
    let stand_in = crate::billing_support::StandIn::stripe().await;
    let gate = Gate::start(stand_in.origin.clone()).await;
    let origin = gate.origin.clone();
    let Some(app) = crate::billing_support::stripe_webhook_app(backend, |c| {
        c.billing.provider = Some(orgplane_server::billing::CheckoutProvider::Stripe);
        c.billing.stripe.api_key = Some(crate::billing_support::STRIPE_KEY.to_owned());
        c.billing.stripe.api_base = origin;
    })
    .await
    else {
        return;
    };
    let alice = app.user("alice@example.com").await;
    let org = app.team(&alice, "Gone Shopping").await;
    let path = format!("/v1/orgs/{org}/checkout");
    let body =
        json!({"plan": "business", "success_url": "https://app.example/ok", "cancel_url": "https://app.example/no"});

    let text = body.to_string();
    let mut socket = tokio::net::TcpStream::connect(app.addr).await.expect("connect");
    let request = format!(
        "POST {path} HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {}\r\nidempotency-key: pay-1\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{text}",
        app.addr,
        alice.token,
        text.len()
    );
    socket.write_all(request.as_bytes()).await.expect("send");
    eventually(10, "the checkout to wait on the provider", || async { gate.held.load(Ordering::SeqCst) == 1 }).await;
    // The client goes away, and the server closes the connection (so the
    // request's future has been dropped) before the provider answers.
    socket.shutdown().await.expect("half-close");
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tokio::io::AsyncReadExt::read_to_end(&mut socket, &mut rest))
        .await
        .expect("the server closes the connection within 10 s")
        .expect("read");
    assert!(rest.is_empty(), "no answer was sent: {}", String::from_utf8_lossy(&rest));
    gate.open.send(true).expect("open the gate");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let res = loop {
        let req =
            app.http.post(app.url(&path)).bearer_auth(&alice.token).header("idempotency-key", "pay-1").json(&body);
        let res = app.send_request(req).await;
        if res.status.as_u16() != 409 {
            break res;
        }
        assert!(tokio::time::Instant::now() < deadline, "the key stayed claimed: {}", res.body);
        tokio::time::sleep(Duration::from_millis(100)).await; // the poll interval of a wait on the first request's end
    };
    let url = res.expect(200)["url"].as_str().expect("checkout url").to_owned();
    assert!(replayed(&res), "the retry replays the answer of the request that ran on: {:?}", res.headers);
    assert_eq!(
        stand_in.requests_to(axum::http::Method::POST, "/v1/checkout/sessions").len(),
        1,
        "one checkout session was made"
    );
    let again = app
        .send_request(
            app.http.post(app.url(&path)).bearer_auth(&alice.token).header("idempotency-key", "pay-1").json(&body),
        )
        .await;
    assert_eq!(again.expect(200)["url"], url.as_str());
}

async fn keys_older_than_a_day_are_swept_and_then_run_again(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let alice = app.user("alice@example.com").await;
    let fresh = create_org(&app, &app.base, &alice.token, "fresh-1", "Old Times").await;
    fresh.expect(201);
    // The same request answered two days ago under another key.
    app.sql(&format!(
        "INSERT INTO idempotency_keys (principal, key, request_hash, status_code, response_body, created_at) \
         SELECT principal, 'old-1', request_hash, status_code, response_body, {} FROM idempotency_keys WHERE key = 'fresh-1'",
        now_ms() - 2 * 86_400_000
    ))
    .await;
    // What the server's hourly sweep runs.
    let store = orgplane_store::Store::connect(&orgplane_store::ConnectOptions {
        max_connections: 2,
        ..orgplane_store::ConnectOptions::new(app.database_url.clone())
    })
    .await
    .expect("store");
    let swept =
        store.idempotency_sweep(time::OffsetDateTime::now_utc() - time::Duration::days(1)).await.expect("sweep");
    store.close().await;
    assert_eq!(swept, 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM idempotency_keys WHERE key = 'old-1'").await, 0);
    let replay = create_org(&app, &app.base, &alice.token, "fresh-1", "Old Times").await;
    assert!(replayed(&replay) && replay.body["id"] == fresh.body["id"], "a key of today is kept");
    let rerun = create_org(&app, &app.base, &alice.token, "old-1", "Old Times").await;
    rerun.expect(201);
    assert!(!replayed(&rerun), "a key forgotten after a day runs again");
    assert_eq!(orgs_named(&app, "Old Times").await, 2);
}

/// Keys are scoped to who sent them: without credentials nothing is claimed,
/// so one stranger's 401 is never replayed to another sending the same key.
async fn a_key_sent_without_credentials_is_never_claimed_nor_replayed(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    for _ in 0..2 {
        let req = app
            .http
            .post(app.url("/v1/orgs"))
            .header("idempotency-key", "shared-key")
            .json(&json!({"name": "Anonymous"}));
        let res = app.send_request(req).await;
        res.expect_error(401, "unauthenticated");
        assert!(!replayed(&res));
    }
    assert_eq!(app.count("SELECT COUNT(*) FROM idempotency_keys WHERE key = 'shared-key'").await, 0);
    // The same key from a signed-in caller is theirs alone.
    let alice = app.user("alice@example.com").await;
    create_org(&app, &app.base, &alice.token, "shared-key", "Agency").await.expect(201);
}
