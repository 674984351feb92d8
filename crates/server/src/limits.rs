//! What one server takes on, and from whom (`[limits]`):
//!
//! - **Requests in flight**: at most `max_in_flight` requests are handled at
//!   once. One more is answered `503 unavailable` with `Retry-After: 1` at
//!   once rather than queued: a queue would only hold clients longer and hide
//!   the overload from the load balancer, which can send the retry to another
//!   replica. A request counts from routing until its response head is ready
//!   (an event stream's body is capped separately, below).
//! - **Rate per caller**: a token bucket (GCRA, one atomic word per caller)
//!   per authenticated principal (API key id or user), per peer IP address
//!   for requests without credentials (or with credentials that fail), and
//!   per provider for webhook deliveries, each with its own rate and burst.
//!   Over it: `429 rate_limited` with `Retry-After` in whole seconds.
//! - **Event streams**: at most `max_event_streams` open
//!   `GET /v1/events/stream` responses in total (`503 unavailable`) and
//!   `max_event_streams_per_key` per API key (`429 rate_limited`), both with
//!   `Retry-After`; a slot is freed when its stream ends or its client leaves.
//!
//! `/healthz`, `/readyz` and `/metrics` are exempt from all of it: probes and
//! scrapes must still answer when the server is busiest. Every limit is
//! per replica; 0 turns a limit off.
//!
//! This module never looks inside a request beyond its route, its principal
//! and its peer address.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use orgplane_core::{ApiKeyId, UserId};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::extract::Principal;
use crate::state::AppState;

/// `[limits]` of the configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Requests handled at once; one more is answered 503 at once. 0: no limit.
    pub max_in_flight: usize,
    /// Requests per second per API key or user (sustained). 0: no limit.
    pub rate_per_second: f64,
    /// Requests an API key or user may send at once before the rate applies.
    pub rate_burst: u32,
    /// Requests per second per peer IP address without (valid) credentials. 0: no limit.
    pub anonymous_rate_per_second: f64,
    pub anonymous_rate_burst: u32,
    /// Deliveries per second per payment provider's webhook route. 0: no limit.
    pub webhook_rate_per_second: f64,
    pub webhook_rate_burst: u32,
    /// Open `GET /v1/events/stream` responses in total. 0: no limit.
    pub max_event_streams: usize,
    /// Open event streams per API key. 0: no limit.
    pub max_event_streams_per_key: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_in_flight: 1024,
            rate_per_second: 200.0,
            rate_burst: 400,
            anonymous_rate_per_second: 50.0,
            anonymous_rate_burst: 100,
            // Providers retry refused deliveries, but a backlog after an outage
            // arrives fast: let it in.
            webhook_rate_per_second: 500.0,
            webhook_rate_burst: 2000,
            max_event_streams: 256,
            max_event_streams_per_key: 16,
        }
    }
}

/// Highest rate and burst accepted: beyond, a limit is no limit; use 0.
const MAX_RATE: f64 = 1e9;
const MAX_COUNT: u64 = 1_000_000_000;

impl LimitsConfig {
    /// Range checks, with the key and the fix named.
    pub fn validate(&self) -> Result<(), String> {
        for (key, rate, burst_key, burst) in [
            ("rate_per_second", self.rate_per_second, "rate_burst", self.rate_burst),
            (
                "anonymous_rate_per_second",
                self.anonymous_rate_per_second,
                "anonymous_rate_burst",
                self.anonymous_rate_burst,
            ),
            ("webhook_rate_per_second", self.webhook_rate_per_second, "webhook_rate_burst", self.webhook_rate_burst),
        ] {
            if !(rate == 0.0 || (0.001..=MAX_RATE).contains(&rate)) {
                return Err(format!(
                    "limits.{key}: must be 0 (no limit) or between 0.001 and {MAX_RATE} requests per second, not {rate}"
                ));
            }
            if rate > 0.0 && !(1..=MAX_COUNT).contains(&u64::from(burst)) {
                return Err(format!(
                    "limits.{burst_key}: must be between 1 and {MAX_COUNT} when limits.{key} is set, not {burst}"
                ));
            }
        }
        Ok(())
    }
}

/// A refusal that says when to come back: the contract's error body and
/// `Retry-After` in whole seconds (at least 1).
#[derive(Debug)]
pub struct RetryLater {
    error: ApiError,
    after_secs: u64,
}

impl RetryLater {
    fn new(status: StatusCode, code: &'static str, message: String, after: Duration) -> Self {
        RetryLater { error: ApiError::new(status, code, message), after_secs: whole_seconds(after) }
    }
}

/// `Retry-After`'s value: whole seconds, rounded up, at least 1.
fn whole_seconds(after: Duration) -> u64 {
    (after.as_secs() + u64::from(after.subsec_nanos() > 0)).max(1)
}

impl IntoResponse for RetryLater {
    fn into_response(self) -> Response {
        let mut response = self.error.into_response();
        response.headers_mut().insert("retry-after", HeaderValue::from(self.after_secs));
        response
    }
}

/// All of a replica's limits; built once from the config.
pub struct Limits {
    max_in_flight: usize,
    in_flight: AtomicUsize,
    rates: Rates,
    pub streams: StreamSlots,
}

impl Limits {
    pub fn new(config: &LimitsConfig) -> Self {
        Limits {
            max_in_flight: config.max_in_flight,
            in_flight: AtomicUsize::new(0),
            rates: Rates::new(config),
            streams: StreamSlots::new(config.max_event_streams, config.max_event_streams_per_key),
        }
    }

    /// Requests being handled now (the exempt routes aside).
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    fn enter(&self) -> Result<InFlight<'_>, RetryLater> {
        let before = self.in_flight.fetch_add(1, Ordering::AcqRel);
        let guard = InFlight(&self.in_flight);
        if self.max_in_flight > 0 && before >= self.max_in_flight {
            return Err(RetryLater::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                format!(
                    "the server is handling as many requests as it takes at once ({}); retry in a moment (see Retry-After)",
                    self.max_in_flight
                ),
                Duration::from_secs(1),
            ));
        }
        Ok(guard)
    }
}

/// One request in flight, until dropped (also when the client goes away).
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn exempt(route: Option<&str>) -> bool {
    matches!(route, Some("/healthz" | "/readyz" | "/metrics"))
}

fn route(req: &Request) -> Option<&str> {
    req.extensions().get::<MatchedPath>().map(MatchedPath::as_str)
}

/// Middleware: the cap on requests in flight.
pub async fn limit_in_flight(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if exempt(route(&req)) {
        return next.run(req).await;
    }
    match state.limits.enter() {
        Ok(_in_flight) => next.run(req).await,
        Err(refusal) => refusal.into_response(),
    }
}

/// Middleware: the rate limit, keyed by who is calling. Runs after
/// authentication on the API routes, so the principal is known.
pub async fn limit_rate(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let caller = match req.extensions().get::<Principal>() {
        Some(Principal::User(user)) => Caller::User(user.id),
        Some(Principal::ApiKey(key)) => Caller::ApiKey(*key),
        None => match route(&req) {
            route if exempt(route) => return next.run(req).await,
            Some("/v1/webhooks/stripe") => Caller::Webhook("stripe"),
            Some("/v1/webhooks/lemonsqueezy") => Caller::Webhook("lemonsqueezy"),
            _ => Caller::Peer(peer_ip(&req)),
        },
    };
    match state.limits.rates.check(caller) {
        Ok(()) => next.run(req).await,
        Err(refusal) => refusal.into_response(),
    }
}

/// Charges a request whose credentials were refused to its peer address, so
/// that guessing keys or replaying bad tokens is as limited as anonymous
/// traffic. `Err` when that address is over its rate.
pub fn charge_refused_credentials(state: &AppState, req: &Request) -> Result<(), RetryLater> {
    state.limits.rates.check(Caller::Peer(peer_ip(req)))
}

/// The TCP peer's address. Behind a reverse proxy this is the proxy's: all
/// anonymous traffic through it shares one bucket.
fn peer_ip(req: &Request) -> IpAddr {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |ConnectInfo(addr)| addr.ip())
}

/// Who a rate applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Caller {
    User(UserId),
    ApiKey(ApiKeyId),
    Peer(IpAddr),
    Webhook(&'static str),
}

/// A rate as the bucket arithmetic uses it, in nanoseconds.
#[derive(Debug, Clone, Copy)]
struct Rate {
    per_second: f64,
    burst: u32,
    /// Time one request costs.
    interval: u64,
    /// How far ahead of now the bucket may be booked: `burst` requests.
    window: u64,
}

impl Rate {
    fn new(per_second: f64, burst: u32) -> Option<Rate> {
        if per_second <= 0.0 {
            return None;
        }
        // `as` saturates; validation keeps the rate within 0.001..=1e9.
        let interval = ((1e9 / per_second) as u64).max(1);
        Some(Rate { per_second, burst, interval, window: interval.saturating_mul(u64::from(burst.max(1))) })
    }
}

/// The generic cell rate algorithm, the token bucket kept as one number:
/// `tat`, the time at which the bucket would be full again. A request at
/// `now` books `interval` after `max(tat, now)`; it is admitted if that
/// booking ends no more than `window` ahead of `now`. Returns the new `tat`,
/// or how long to wait until the request would be admitted.
fn admit(tat: u64, now: u64, rate: &Rate) -> Result<u64, u64> {
    let booked = tat.max(now).saturating_add(rate.interval);
    let ahead = booked - now;
    if ahead <= rate.window { Ok(booked) } else { Err(ahead - rate.window) }
}

/// Callers tracked at once. A caller quiet long enough for its bucket to
/// fill up again is forgotten (that loses nothing); past this many busy
/// callers, the least active ones are forgotten and start again with a full
/// bucket.
const TRACKED_CALLERS: u64 = 100_000;
/// Even a very slow rate's bucket is forgotten after a day without requests.
const MAX_IDLE: Duration = Duration::from_secs(24 * 3600);

struct Rates {
    credential: Option<Rate>,
    anonymous: Option<Rate>,
    webhook: Option<Rate>,
    /// Each caller's `tat`, in nanoseconds since `epoch`.
    buckets: moka::sync::Cache<Caller, Arc<AtomicU64>>,
    epoch: Instant,
}

impl Rates {
    fn new(config: &LimitsConfig) -> Self {
        let credential = Rate::new(config.rate_per_second, config.rate_burst);
        let anonymous = Rate::new(config.anonymous_rate_per_second, config.anonymous_rate_burst);
        let webhook = Rate::new(config.webhook_rate_per_second, config.webhook_rate_burst);
        // A bucket idle for as long as it takes to fill up is as good as new.
        let refill = [credential, anonymous, webhook].iter().flatten().map(|rate| rate.window).max().unwrap_or(0);
        let idle = (Duration::from_nanos(refill) + Duration::from_secs(1)).min(MAX_IDLE);
        let buckets = moka::sync::Cache::builder().max_capacity(TRACKED_CALLERS).time_to_idle(idle).build();
        Rates { credential, anonymous, webhook, buckets, epoch: Instant::now() }
    }

    fn check(&self, caller: Caller) -> Result<(), RetryLater> {
        let rate = match caller {
            Caller::User(_) | Caller::ApiKey(_) => self.credential,
            Caller::Peer(_) => self.anonymous,
            Caller::Webhook(_) => self.webhook,
        };
        let Some(rate) = rate else { return Ok(()) };
        let now = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let bucket = self.buckets.get_with(caller, || Arc::new(AtomicU64::new(0)));
        let mut tat = bucket.load(Ordering::Acquire);
        loop {
            match admit(tat, now, &rate) {
                Ok(booked) => match bucket.compare_exchange_weak(tat, booked, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => return Ok(()),
                    Err(current) => tat = current,
                },
                Err(wait) => return Err(rate_limited(caller, &rate, Duration::from_nanos(wait))),
            }
        }
    }
}

fn rate_limited(caller: Caller, rate: &Rate, wait: Duration) -> RetryLater {
    let who = match caller {
        Caller::User(_) => "this user",
        Caller::ApiKey(_) => "this API key",
        Caller::Peer(_) => "this address without valid credentials",
        Caller::Webhook(_) => "this provider's webhook deliveries",
    };
    let message = format!(
        "too many requests: {who} may send {} per second, in bursts of up to {}; retry in {} s (see Retry-After)",
        rate.per_second,
        rate.burst,
        whole_seconds(wait)
    );
    RetryLater::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message, wait)
}

/// How long a client refused a stream should wait: slots free up only as
/// other streams end.
const STREAM_RETRY: Duration = Duration::from_secs(5);

/// Open event streams, in total and per API key.
#[derive(Clone)]
pub struct StreamSlots(Arc<SlotsInner>);

struct SlotsInner {
    max_total: usize,
    max_per_key: usize,
    open: Mutex<OpenStreams>,
}

#[derive(Default)]
struct OpenStreams {
    total: usize,
    /// Only keys with a stream open: an entry is removed at zero.
    per_key: HashMap<ApiKeyId, usize>,
}

impl StreamSlots {
    fn new(max_total: usize, max_per_key: usize) -> Self {
        StreamSlots(Arc::new(SlotsInner { max_total, max_per_key, open: Mutex::default() }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, OpenStreams> {
        // Counts are updated in one step each: a panic can't leave them half-done.
        self.0.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Streams open now.
    pub fn open_count(&self) -> usize {
        self.lock().total
    }

    /// A slot for one more stream of `key`, held until the slot is dropped.
    pub fn open(&self, key: ApiKeyId) -> Result<StreamSlot, RetryLater> {
        let mut open = self.lock();
        let of_key = open.per_key.get(&key).copied().unwrap_or(0);
        if self.0.max_per_key > 0 && of_key >= self.0.max_per_key {
            return Err(RetryLater::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "this API key already has {of_key} event streams open, the most it may; close one, or retry later (see Retry-After)"
                ),
                STREAM_RETRY,
            ));
        }
        if self.0.max_total > 0 && open.total >= self.0.max_total {
            return Err(RetryLater::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                format!(
                    "this server already serves {} event streams, the most it takes; retry later (see Retry-After)",
                    open.total
                ),
                STREAM_RETRY,
            ));
        }
        open.total += 1;
        *open.per_key.entry(key).or_insert(0) += 1;
        Ok(StreamSlot { slots: self.clone(), key })
    }
}

/// One open event stream; frees its slot when dropped.
pub struct StreamSlot {
    slots: StreamSlots,
    key: ApiKeyId,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.slots.lock();
        open.total = open.total.saturating_sub(1);
        if let Some(count) = open.per_key.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                open.per_key.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;

    #[test]
    fn a_full_bucket_admits_a_burst_then_one_request_per_interval() {
        let rate = Rate::new(2.0, 3).expect("a rate");
        let mut tat = 0;
        let now = 10 * SECOND;
        for _ in 0..3 {
            tat = admit(tat, now, &rate).expect("within the burst");
        }
        assert_eq!(admit(tat, now, &rate), Err(SECOND / 2), "the fourth waits for one interval");
        assert!(admit(tat, now + SECOND / 2 - 1, &rate).is_err());
        tat = admit(tat, now + SECOND / 2, &rate).expect("one token back after half a second");
        assert!(admit(tat, now + SECOND / 2, &rate).is_err());
    }

    #[test]
    fn a_quiet_caller_gets_its_whole_burst_back_and_no_more() {
        let rate = Rate::new(1.0, 2).expect("a rate");
        let mut tat = 0;
        for _ in 0..2 {
            tat = admit(tat, SECOND, &rate).expect("burst");
        }
        let later = 100 * SECOND;
        for _ in 0..2 {
            tat = admit(tat, later, &rate).expect("refilled");
        }
        assert!(admit(tat, later, &rate).is_err(), "idle time does not save up more than the burst");
    }

    #[test]
    fn retry_after_is_whole_seconds_rounded_up_and_at_least_one() {
        let secs = whole_seconds;
        assert_eq!(secs(Duration::from_millis(1)), 1);
        assert_eq!(secs(Duration::ZERO), 1);
        assert_eq!(secs(Duration::from_millis(1_001)), 2);
        assert_eq!(secs(Duration::from_secs(100)), 100);
    }

    #[test]
    fn rates_are_per_caller_and_each_kind_has_its_own() {
        let config = LimitsConfig {
            rate_per_second: 0.001,
            rate_burst: 1,
            anonymous_rate_per_second: 0.001,
            anonymous_rate_burst: 2,
            webhook_rate_per_second: 0.0,
            ..LimitsConfig::default()
        };
        let rates = Rates::new(&config);
        let key = Caller::ApiKey(ApiKeyId::new());
        assert!(rates.check(key).is_ok());
        let refused = rates.check(key).expect_err("one request per 1000 s");
        assert!(refused.after_secs > 900 && refused.after_secs <= 1000, "{}", refused.after_secs);
        assert!(rates.check(Caller::ApiKey(ApiKeyId::new())).is_ok(), "another key has its own bucket");
        let peer = Caller::Peer(IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert!(rates.check(peer).is_ok() && rates.check(peer).is_ok());
        assert!(rates.check(peer).is_err());
        for _ in 0..100 {
            assert!(rates.check(Caller::Webhook("stripe")).is_ok(), "0 is no limit");
        }
    }

    #[test]
    fn stream_slots_are_capped_per_key_and_in_total_and_freed_on_drop() {
        let slots = StreamSlots::new(2, 1);
        let (a, b, c) = (ApiKeyId::new(), ApiKeyId::new(), ApiKeyId::new());
        let first = slots.open(a).expect("a's first");
        assert_eq!(slots.open(a).err().map(|r| r.error.code), Some("rate_limited"));
        let _second = slots.open(b).expect("b's first");
        assert_eq!(slots.open(c).err().map(|r| r.error.code), Some("unavailable"));
        assert_eq!(slots.open_count(), 2);
        drop(first);
        assert_eq!(slots.open_count(), 1);
        assert!(slots.open(c).is_ok());
        assert!(!slots.lock().per_key.contains_key(&a), "a key without streams is forgotten");
    }

    #[test]
    fn defaults_pass_and_out_of_range_values_are_named() {
        assert!(LimitsConfig::default().validate().is_ok());
        let err = LimitsConfig { rate_per_second: -1.0, ..LimitsConfig::default() }.validate().expect_err("negative");
        assert!(err.contains("limits.rate_per_second"), "{err}");
        let err = LimitsConfig { webhook_rate_burst: 0, ..LimitsConfig::default() }.validate().expect_err("no burst");
        assert!(err.contains("limits.webhook_rate_burst"), "{err}");
        let err = LimitsConfig { anonymous_rate_per_second: f64::NAN, ..LimitsConfig::default() }
            .validate()
            .expect_err("NaN");
        assert!(err.contains("limits.anonymous_rate_per_second"), "{err}");
        assert!(LimitsConfig { rate_per_second: 0.0, rate_burst: 0, ..LimitsConfig::default() }.validate().is_ok());
    }
}
