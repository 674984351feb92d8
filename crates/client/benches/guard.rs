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

/// Runs `f` in batches of 1 000 for about `budget`; reports the median
/// time per call over the batches (and the fastest and slowest batch).
fn measure(name: &str, budget: Duration, mut f: impl FnMut()) -> Duration {
    for _ in 0..10_000 {
        f();
    }
    let mut batches = Vec::new();
    let started = Instant::now();
    while started.elapsed() < budget {
        let batch = Instant::now();
        for _ in 0..1_000 {
            f();
        }
        batches.push(batch.elapsed() / 1_000);
    }
    batches.sort();
    let median = batches[batches.len() / 2];
    let (fastest, slowest) = (batches[0], batches[batches.len() - 1]);
    println!(
        "{name:<48} median {:>7.1} ns/check (fastest {:.1}, slowest {:.1}; {} calls)",
        median.as_nanos() as f64,
        fastest.as_nanos() as f64,
        slowest.as_nanos() as f64,
        batches.len() * 1_000
    );
    median
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
