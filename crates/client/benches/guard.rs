//! What a guarded request costs when the cache holds the org: the cached
//! check itself, the layer's decision on a request, and a whole call through
//! the `RequireFeature` service (a request built, decided and handed to a
//! handler that answers at once). Target: under 1 µs per check.
//!
//! `cargo bench -p orgplane-client --bench guard` (std::time; a few seconds).
//! Services complete on their first poll here and are driven without a
//! runtime, which would only add noise.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use orgplane_client::{
    CacheOptions, Client, Credentials, EntitlementCache, Entitlements, LimitUsage, OrgKind, RequireFeature, Verdict,
};
use tower_layer::Layer;
use tower_service::Service;

const ORGS: usize = 10_000;

fn entitlements(org: &str) -> Entitlements {
    Entitlements {
        org_id: org.to_owned(),
        kind: OrgKind::Team,
        plan: "business".into(),
        tier: "business".into(),
        status: None,
        features: HashMap::from([
            ("invitations".into(), true),
            ("api_tokens".into(), true),
            ("custom_roles".into(), true),
            ("audit_log".into(), true),
        ]),
        limits: HashMap::from([
            ("customers".into(), LimitUsage { limit: Some(100), used: 12 }),
            ("seats".into(), LimitUsage { limit: Some(10), used: 4 }),
            ("clients".into(), LimitUsage { limit: Some(1000), used: 200 }),
        ]),
    }
}

/// Runs `f` for about `budget`, then reports the mean time per call.
fn measure(name: &str, budget: Duration, mut f: impl FnMut()) -> Duration {
    for _ in 0..10_000 {
        f();
    }
    let mut calls: u64 = 0;
    let started = Instant::now();
    while started.elapsed() < budget {
        for _ in 0..1_000 {
            f();
        }
        calls += 1_000;
    }
    let per_call = started.elapsed() / u32::try_from(calls).unwrap_or(u32::MAX);
    println!("{name:<48} {:>8.1} ns/check ({calls} calls)", per_call.as_nanos() as f64);
    per_call
}

#[derive(Clone)]
struct Handler;

impl Service<Request> for Handler {
    type Response = Response;
    type Error = Infallible;
    type Future = Ready<Result<Response, Infallible>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, _: Request) -> Self::Future {
        ready(Ok(Response::new(Body::empty())))
    }
}

fn org_in_path(req: &Request) -> Option<String> {
    req.uri().path().strip_prefix("/orgs/").and_then(|rest| rest.split('/').next()).map(str::to_owned)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let _entered = runtime.enter();
    // Nothing listens there: a miss would fail, so every answer below is the cache's.
    let client = Client::new("http://127.0.0.1:9", Credentials::ApiKey("sk_bench".into()));
    let cache =
        EntitlementCache::new(client, CacheOptions { ttl: Duration::from_secs(3600), ..CacheOptions::default() });
    let orgs: Vec<String> = (0..ORGS).map(|i| format!("org_01bench{i:016}")).collect();
    for org in &orgs {
        cache.insert(entitlements(org));
    }
    let org = &orgs[ORGS / 2];
    let budget = Duration::from_secs(1);

    let cached = measure("cached check (EntitlementCache::with_cached)", budget, || {
        let allowed = cache.with_cached(black_box(org), |e| e.has(black_box("audit_log")));
        assert_eq!(allowed, Some(true));
    });

    let guard = RequireFeature::new("audit_log", org_in_path).with_cache(cache.clone());
    let req = Request::get(format!("/orgs/{org}/audit")).body(Body::empty()).expect("request");
    let decided = measure("guard decision on a request (verdict)", budget, || {
        assert_eq!(guard.verdict(black_box(&req)), Verdict::Allow);
    });

    let mut service = guard.layer(Handler);
    let waker = Waker::noop();
    let mut cx = Context::from_waker(waker);
    let path = format!("/orgs/{org}/audit");
    let whole = measure("whole guarded call, request built (layer)", budget, || {
        let req = Request::get(path.as_str()).body(Body::empty()).expect("request");
        let mut call = pin!(service.call(req));
        match call.as_mut().poll(&mut cx) {
            Poll::Ready(Ok(res)) => assert_eq!(res.status(), 200),
            _ => panic!("a cached allow completes on its first poll"),
        }
    });

    for (name, took) in [("cached check", cached), ("guard decision", decided), ("whole guarded call", whole)] {
        if took >= Duration::from_micros(1) {
            println!("!!! {name} took {took:?}: over the 1 µs target");
        }
    }
}
