//! `[limits]`: a rate per caller (429 `rate_limited`), a cap on requests in
//! flight (503 `unavailable`), a cap on event streams, and the caches' and
//! limits' numbers in `/metrics`.
//!
//! Rates here are one request per 1000 s, so a test never depends on how
//! fast it runs: the bucket can't refill while it does.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{Backend, Res, TestApp, spawn_app, spawn_app_with};
use crate::on_both_backends;

const SLOW: f64 = 0.001;

/// Asserts the contract's `429 rate_limited` with a `Retry-After` of whole seconds.
#[track_caller]
fn assert_rate_limited(res: &Res) {
    res.expect_error(429, "rate_limited");
    assert_eq!(res.body.as_object().map(|body| body.len()), Some(1), "only `error`: {}", res.body);
    let retry_after: u64 = res.headers["retry-after"].to_str().expect("ascii").parse().expect("whole seconds");
    assert!((1..=1000).contains(&retry_after), "one request per 1000 s: {retry_after}");
}

/// The value of one metric line of `/metrics` (`name{labels}` exactly).
async fn metric(app: &TestApp, series: &str) -> Option<f64> {
    let text = app.http.get(app.url("/metrics")).send().await.expect("metrics").text().await.expect("text");
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Waits (10 s at most) until `/metrics` shows `series` at `value`: the
/// server notices a closed or stalled connection on its own schedule.
async fn until_metric(app: &TestApp, series: &str, value: f64) {
    for _ in 0..200 {
        if metric(app, series).await == Some(value) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await; // the poll interval of a wait on the metric
    }
    panic!("{series} did not reach {value}; it is {:?}", metric(app, series).await);
}

async fn a_credential_over_its_rate_gets_429_with_retry_after_and_others_are_unaffected(backend: Backend) {
    let Some(app) = spawn_app_with(backend, |c| {
        c.limits.rate_per_second = SLOW;
        c.limits.rate_burst = 2;
    })
    .await
    else {
        return;
    };
    let alice = app.idp.token("sub-alice", "alice@example.com");
    app.get("/v1/me", &alice).await.expect(200);
    app.get("/v1/me", &alice).await.expect(200);
    assert_rate_limited(&app.get("/v1/me", &alice).await);
    assert_rate_limited(&app.get("/v1/orgs", &alice).await);
    let bob = app.idp.token("sub-bob", "bob@example.com");
    app.get("/v1/me", &bob).await.expect(200);

    // API keys are keyed by key, whatever the route.
    let (first, second) = (app.api_key().await, app.api_key().await);
    app.get("/v1/billing/events", &first).await.expect(200);
    app.get("/v1/billing/events", &first).await.expect(200);
    assert_rate_limited(&app.get("/v1/billing/events", &first).await);
    app.get("/v1/billing/events", &second).await.expect(200);
}

async fn requests_without_credentials_are_limited_by_address_and_webhooks_by_provider(backend: Backend) {
    let Some(app) = spawn_app_with(backend, |c| {
        c.limits.anonymous_rate_per_second = SLOW;
        c.limits.anonymous_rate_burst = 2;
        c.limits.webhook_rate_per_second = SLOW;
        c.limits.webhook_rate_burst = 1;
    })
    .await
    else {
        return;
    };
    app.get_anonymous("/v1/openapi.json").await.expect(200);
    // A refused credential counts against its address too.
    app.get("/v1/me", "not-a-token").await.expect_error(401, "unauthenticated");
    assert_rate_limited(&app.get_anonymous("/v1/openapi.json").await);
    assert_rate_limited(&app.get("/v1/me", "not-a-token").await);
    // Probes and scrapes are never limited.
    for _ in 0..5 {
        app.get_anonymous("/healthz").await.expect(200);
        app.get_anonymous("/metrics").await;
    }
    // A valid credential has its own bucket.
    let alice = app.idp.token("sub-alice", "alice@example.com");
    app.get("/v1/me", &alice).await.expect(200);

    // Webhook deliveries have a bucket per provider, apart from the address's.
    let delivery =
        |path: &str| app.http.post(app.url(path)).header("content-type", "application/json").body(r#"{"id":"evt_1"}"#);
    let first = app.send_request(delivery("/v1/webhooks/stripe")).await;
    assert_ne!(first.status.as_u16(), 429, "{}", first.body);
    assert_rate_limited(&app.send_request(delivery("/v1/webhooks/stripe")).await);
    let other = app.send_request(delivery("/v1/webhooks/lemonsqueezy")).await;
    assert_ne!(other.status.as_u16(), 429, "{}", other.body);
}

async fn a_request_over_the_in_flight_limit_gets_503_at_once(backend: Backend) {
    let Some(app) = spawn_app_with(backend, |c| c.limits.max_in_flight = 1).await else { return };
    let alice = app.user("alice@example.com").await;

    // A request whose body has not all arrived stays in flight: the handler
    // waits for the rest.
    let body = br#"{"name":"Slow Agency"}"#;
    let mut slow = tokio::net::TcpStream::connect(app.addr).await.expect("connect");
    let head = format!(
        "POST /v1/orgs HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        app.addr,
        alice.token,
        body.len()
    );
    slow.write_all(head.as_bytes()).await.expect("head");
    slow.write_all(&body[..5]).await.expect("part of the body");
    until_metric(&app, "orgplane_requests_in_flight", 1.0).await;

    let refused = app.get("/v1/me", &alice.token).await;
    refused.expect_error(503, "unavailable");
    assert_eq!(refused.headers["retry-after"], "1");

    slow.write_all(&body[5..]).await.expect("rest of the body");
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = slow.read(&mut chunk).await.expect("read");
        assert!(n > 0, "the server answers the slow request");
        answer.extend_from_slice(&chunk[..n]);
    }
    assert!(answer.starts_with(b"HTTP/1.1 201"), "{}", String::from_utf8_lossy(&answer));
    // Its answer is on its way out: the slot is free again.
    app.get("/v1/me", &alice.token).await.expect(200);
}

async fn open_stream(app: &TestApp, key: &str) -> reqwest::Response {
    app.http.get(app.url("/v1/events/stream")).bearer_auth(key).send().await.expect("reaches")
}

async fn refusal(res: reqwest::Response) -> Res {
    crate::helpers::read_res(res).await
}

async fn event_streams_are_capped_per_key_and_in_total_and_a_closed_one_frees_its_slot(backend: Backend) {
    let Some(app) = spawn_app_with(backend, |c| {
        c.limits.max_event_streams = 2;
        c.limits.max_event_streams_per_key = 1;
    })
    .await
    else {
        return;
    };
    let (a, b, c) = (app.api_key().await, app.api_key().await, app.api_key().await);
    let a_stream = open_stream(&app, &a).await;
    assert_eq!(a_stream.status().as_u16(), 200);
    let second_of_a = refusal(open_stream(&app, &a).await).await;
    second_of_a.expect_error(429, "rate_limited");
    assert_eq!(second_of_a.headers["retry-after"], "5");
    let b_stream = open_stream(&app, &b).await;
    assert_eq!(b_stream.status().as_u16(), 200);
    let third = refusal(open_stream(&app, &c).await).await;
    third.expect_error(503, "unavailable");
    assert_eq!(third.headers["retry-after"], "5");
    assert_eq!(metric(&app, "orgplane_event_streams_open").await, Some(2.0));

    drop(a_stream);
    until_metric(&app, "orgplane_event_streams_open", 1.0).await;
    let c_stream = open_stream(&app, &c).await;
    assert_eq!(c_stream.status().as_u16(), 200, "a closed stream's slot is free again");
    refusal(open_stream(&app, &a).await).await.expect_error(503, "unavailable");
    drop((b_stream, c_stream));
}

async fn cache_hits_misses_and_sizes_appear_in_metrics(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let alice = app.user("alice@example.com").await;
    app.get("/v1/me", &alice.token).await.expect(200);
    let entitlements = format!("/v1/orgs/{}/entitlements", alice.personal_org);
    app.get(&entitlements, &alice.token).await.expect(200);
    app.get(&entitlements, &alice.token).await.expect(200);
    let key = app.api_key().await;
    app.get(&entitlements, &key).await.expect(200);
    app.get(&entitlements, &key).await.expect(200);

    for cache in ["tokens", "users", "api_keys", "me", "org_access", "entitlements"] {
        let hits = metric(&app, &format!("orgplane_cache_hits_total{{cache=\"{cache}\"}}")).await;
        let misses = metric(&app, &format!("orgplane_cache_misses_total{{cache=\"{cache}\"}}")).await;
        assert!(hits.is_some_and(|n| n >= 1.0), "{cache}: hits {hits:?}");
        assert!(misses.is_some_and(|n| n >= 1.0), "{cache}: misses {misses:?}");
        let entries = metric(&app, &format!("orgplane_cache_entries{{cache=\"{cache}\"}}")).await;
        assert!(entries.is_some(), "{cache}: entries");
    }
}

on_both_backends!(
    a_credential_over_its_rate_gets_429_with_retry_after_and_others_are_unaffected,
    requests_without_credentials_are_limited_by_address_and_webhooks_by_provider,
    a_request_over_the_in_flight_limit_gets_503_at_once,
    event_streams_are_capped_per_key_and_in_total_and_a_closed_one_frees_its_slot,
    cache_hits_misses_and_sizes_appear_in_metrics,
);
