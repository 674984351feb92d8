//! `EntitlementCache`: each org's entitlements kept in memory and answered
//! from there, kept fresh by following `GET /v1/events/stream` (resumed with
//! `Last-Event-ID` after a disconnect) or by events handed to it (verified
//! webhooks). Any event of an org drops that org's entry; the next read asks
//! the server again.
//!
//! While the stream is connected an entry lives up to `max_age` (time alone
//! changes some entitlements: a trial or a grace period ends without an
//! event); while it is down, or before it is followed, up to `ttl`. The
//! cache says how long it has been without the stream ([`EntitlementCache::staleness`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use crate::client::Client;
use crate::error::{Error, Result};
use crate::types::{Entitlements, Event, Remaining};

#[derive(Debug, Clone, Copy)]
pub struct CacheOptions {
    /// Longest life of an entry while the event stream is down (default 30 s).
    pub ttl: Duration,
    /// Longest life of an entry while the stream is connected (default 10 min).
    pub max_age: Duration,
    /// First wait before reconnecting the stream (default 250 ms), doubled
    /// up to `max_reconnect_delay` (default 5 s) while it keeps failing.
    pub reconnect_delay: Duration,
    pub max_reconnect_delay: Duration,
    /// Most orgs held (default 10 000); past it the entry read longest ago goes.
    pub max_entries: usize,
}

impl Default for CacheOptions {
    fn default() -> Self {
        CacheOptions {
            ttl: Duration::from_secs(30),
            max_age: Duration::from_secs(600),
            reconnect_delay: Duration::from_millis(250),
            max_reconnect_delay: Duration::from_secs(5),
            max_entries: 10_000,
        }
    }
}

/// Where the cache stands with the event stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheStatus {
    /// [`EntitlementCache::follow_events`] was called.
    pub following: bool,
    /// The stream is open now: entries are dropped as events arrive.
    pub stream_connected: bool,
    /// The last event the stream delivered: where a reconnect resumes.
    pub last_event_id: Option<String>,
    /// How long the cache has been without the stream (`None` while
    /// connected): for that long, entries were only as fresh as `ttl`.
    pub stale_for: Option<Duration>,
    /// Why the stream last failed.
    pub last_error: Option<String>,
}

#[derive(Default)]
struct Slot {
    value: Option<(Arc<Entitlements>, Instant)>,
    /// Bumped by every invalidation, so that a read that started before an
    /// event never stores what the event said is stale.
    generation: u64,
    /// Held while the org is read from the server: concurrent misses of one
    /// org make one request.
    fetching: Arc<tokio::sync::Mutex<()>>,
}

struct StreamInfo {
    following: bool,
    last_event_id: Option<String>,
    down_since: Instant,
    last_error: Option<String>,
}

struct Shared {
    client: Client,
    options: CacheOptions,
    slots: RwLock<HashMap<String, Slot>>,
    /// Bumped by [`EntitlementCache::invalidate_all`].
    epoch: AtomicU64,
    connected: AtomicBool,
    stream: Mutex<StreamInfo>,
    follower: Mutex<Option<tokio::task::AbortHandle>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Some(task) = self.follower.get_mut().ok().and_then(Option::take) {
            task.abort();
        }
    }
}

/// A per-org entitlement cache. Cheap to clone (shared state).
#[derive(Clone)]
pub struct EntitlementCache {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for EntitlementCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntitlementCache").field("status", &self.status()).finish_non_exhaustive()
    }
}

impl EntitlementCache {
    /// A cache reading through `client` (an API key, or a member's token).
    pub fn new(client: Client, options: CacheOptions) -> EntitlementCache {
        EntitlementCache {
            shared: Arc::new(Shared {
                client,
                options,
                slots: RwLock::new(HashMap::new()),
                epoch: AtomicU64::new(0),
                connected: AtomicBool::new(false),
                stream: Mutex::new(StreamInfo {
                    following: false,
                    last_event_id: None,
                    down_since: Instant::now(),
                    last_error: None,
                }),
                follower: Mutex::new(None),
            }),
        }
    }

    /// Follows `GET /v1/events/stream` (the client needs a server API key)
    /// in a task of the current tokio runtime until the cache is dropped:
    /// reconnects with backoff, resuming after the last event it read. Call
    /// it once.
    pub fn follow_events(&self) {
        let mut follower = self.shared.follower.lock().unwrap_or_else(|p| p.into_inner());
        if follower.is_some() {
            return;
        }
        self.shared.stream.lock().unwrap_or_else(|p| p.into_inner()).following = true;
        let task = tokio::spawn(follow(Arc::downgrade(&self.shared)));
        *follower = Some(task.abort_handle());
    }

    /// The org's entitlements when a fresh entry holds them; never a network call.
    pub fn cached(&self, org: &str) -> Option<Arc<Entitlements>> {
        self.with_cached(org, Arc::clone)
    }

    /// `read` applied to the org's fresh entry, if there is one (no clone,
    /// no network): the guards' hot path.
    pub fn with_cached<R>(&self, org: &str, read: impl FnOnce(&Arc<Entitlements>) -> R) -> Option<R> {
        let limit = self.shared.entry_life();
        let slots = self.shared.slots.read().unwrap_or_else(|p| p.into_inner());
        let (value, at) = slots.get(org)?.value.as_ref()?;
        (at.elapsed() < limit).then(|| read(value))
    }

    /// The org's entitlements: from memory when fresh, else from the server.
    pub async fn get(&self, org: &str) -> Result<Arc<Entitlements>> {
        if let Some(hit) = self.cached(org) {
            return Ok(hit);
        }
        let fetching = {
            let mut slots = self.shared.slots.write().unwrap_or_else(|p| p.into_inner());
            Arc::clone(&slots.entry(org.to_owned()).or_default().fetching)
        };
        let _one_at_a_time = fetching.lock().await;
        // Another task may have read it meanwhile.
        if let Some(hit) = self.cached(org) {
            return Ok(hit);
        }
        let seen = self.shared.generation(org);
        let fresh = Arc::new(self.shared.client.get_entitlements(org).await?);
        self.shared.store(org, &fresh, Some(seen));
        Ok(fresh)
    }

    /// Whether the org's plan has `feature` (false for a name it does not know).
    pub async fn has(&self, org: &str, feature: &str) -> Result<bool> {
        Ok(self.get(org).await?.has(feature))
    }

    /// How many more of `limit` the org may use.
    pub async fn remaining(&self, org: &str, limit: &str) -> Result<Remaining> {
        Ok(self.get(org).await?.remaining(limit))
    }

    /// Stores entitlements you already hold (an answer of
    /// [`Client::get_entitlements`] or `set_overrides`).
    pub fn insert(&self, entitlements: Entitlements) {
        let org = entitlements.org_id.clone();
        self.shared.store(&org, &Arc::new(entitlements), None);
    }

    /// Feed it events (the stream does this itself; hand it verified webhook
    /// events): an event of an org drops that org's entry. Returns whether
    /// an entry was dropped.
    pub fn handle_event(&self, event: &Event) -> bool {
        event.org_id.as_deref().is_some_and(|org| self.invalidate(org))
    }

    /// Drops one org's entry; returns whether there was one.
    pub fn invalidate(&self, org: &str) -> bool {
        self.shared.invalidate(org)
    }

    /// Drops every entry.
    pub fn invalidate_all(&self) {
        self.shared.invalidate_all();
    }

    pub fn status(&self) -> CacheStatus {
        let connected = self.shared.connected.load(Ordering::SeqCst);
        let stream = self.shared.stream.lock().unwrap_or_else(|p| p.into_inner());
        CacheStatus {
            following: stream.following,
            stream_connected: connected,
            last_event_id: stream.last_event_id.clone(),
            stale_for: (!connected).then(|| stream.down_since.elapsed()),
            last_error: stream.last_error.clone(),
        }
    }

    /// How long the cache has been without the event stream; `None` while
    /// it is connected and every change reaches the cache as it commits.
    pub fn staleness(&self) -> Option<Duration> {
        self.status().stale_for
    }

    /// The client the cache reads through (the guards confirm refusals with it).
    pub fn client(&self) -> &Client {
        &self.shared.client
    }
}

impl Shared {
    fn entry_life(&self) -> Duration {
        if self.connected.load(Ordering::Relaxed) { self.options.max_age } else { self.options.ttl }
    }

    fn generation(&self, org: &str) -> (u64, u64) {
        let slots = self.slots.read().unwrap_or_else(|p| p.into_inner());
        (self.epoch.load(Ordering::SeqCst), slots.get(org).map_or(0, |s| s.generation))
    }

    /// Stores `value` unless an invalidation came after `seen` (the
    /// generation read before the fetch began).
    fn store(&self, org: &str, value: &Arc<Entitlements>, seen: Option<(u64, u64)>) {
        let mut slots = self.slots.write().unwrap_or_else(|p| p.into_inner());
        let epoch = self.epoch.load(Ordering::SeqCst);
        let slot = slots.entry(org.to_owned()).or_default();
        if seen.is_some_and(|seen| seen != (epoch, slot.generation)) {
            return;
        }
        slot.value = Some((Arc::clone(value), Instant::now()));
        if slots.len() > self.options.max_entries {
            // Rare (only past the bound): one scan for the oldest entry.
            let oldest = slots
                .iter()
                .filter(|(key, slot)| key.as_str() != org && Arc::strong_count(&slot.fetching) == 1)
                .min_by_key(|(_, slot)| slot.value.as_ref().map(|(_, at)| *at))
                .map(|(key, _)| key.clone());
            if let Some(oldest) = oldest {
                slots.remove(&oldest);
            }
        }
    }

    /// Only orgs the cache has read have a slot: the stream's events of
    /// every other org cost a map lookup and nothing else.
    fn invalidate(&self, org: &str) -> bool {
        let mut slots = self.slots.write().unwrap_or_else(|p| p.into_inner());
        match slots.get_mut(org) {
            Some(slot) => {
                slot.generation += 1;
                slot.value.take().is_some()
            }
            None => false,
        }
    }

    fn invalidate_all(&self) {
        let mut slots = self.slots.write().unwrap_or_else(|p| p.into_inner());
        self.epoch.fetch_add(1, Ordering::SeqCst);
        for slot in slots.values_mut() {
            slot.generation += 1;
            slot.value = None;
        }
    }

    fn set_down(&self, why: String) {
        let mut stream = self.stream.lock().unwrap_or_else(|p| p.into_inner());
        if self.connected.swap(false, Ordering::SeqCst) {
            stream.down_since = Instant::now();
        }
        stream.last_error = Some(why);
    }
}

/// The follower: one stream at a time, reconnecting with backoff, holding
/// the cache only weakly (it ends when the cache is dropped).
async fn follow(weak: Weak<Shared>) {
    let Some(shared) = weak.upgrade() else { return };
    let (client, options) = (shared.client.clone(), shared.options);
    drop(shared);
    let mut delay = options.reconnect_delay;
    loop {
        let resume = match weak.upgrade() {
            Some(shared) => shared.stream.lock().unwrap_or_else(|p| p.into_inner()).last_event_id.clone(),
            None => return,
        };
        match client.event_stream(resume.as_deref()).await {
            Ok(mut events) => {
                {
                    let Some(shared) = weak.upgrade() else { return };
                    if resume.is_none() {
                        // Without a resume point the stream starts at the end of
                        // the log: whatever changed before is unknown.
                        shared.invalidate_all();
                    }
                    shared.connected.store(true, Ordering::SeqCst);
                    delay = options.reconnect_delay;
                }
                let why = loop {
                    match events.next().await {
                        Some(Ok(event)) => {
                            let Some(shared) = weak.upgrade() else { return };
                            if let Some(org) = &event.org_id {
                                shared.invalidate(org);
                            }
                            shared.stream.lock().unwrap_or_else(|p| p.into_inner()).last_event_id = Some(event.id);
                        }
                        Some(Err(Error::Decode { message, .. })) => {
                            // An event this client can't read: which org it
                            // concerns is unknown, so nothing cached is trusted.
                            let Some(shared) = weak.upgrade() else { return };
                            shared.invalidate_all();
                            let mut stream = shared.stream.lock().unwrap_or_else(|p| p.into_inner());
                            stream.last_event_id = events.last_event_id().map(str::to_owned);
                            stream.last_error = Some(message);
                        }
                        Some(Err(e)) => break e.to_string(),
                        None => break "the server ended the event stream".to_owned(),
                    }
                };
                let Some(shared) = weak.upgrade() else { return };
                shared.set_down(why);
            }
            Err(Error::Api(e)) if e.status == 400 && e.param.as_deref() == Some("Last-Event-ID") => {
                // The resume point is gone from the log: start over, and trust
                // nothing read before.
                let Some(shared) = weak.upgrade() else { return };
                shared.stream.lock().unwrap_or_else(|p| p.into_inner()).last_event_id = None;
                shared.invalidate_all();
                shared.set_down(e.message);
                continue;
            }
            Err(e) => {
                let Some(shared) = weak.upgrade() else { return };
                shared.set_down(e.to_string());
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(options.max_reconnect_delay);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::client::Credentials;
    use crate::types::OrgKind;

    fn entitlements(org: &str) -> Entitlements {
        Entitlements {
            org_id: org.to_owned(),
            kind: OrgKind::Team,
            plan: "free".into(),
            tier: "free".into(),
            status: None,
            features: HashMap::from([("invitations".into(), true)]),
            limits: HashMap::new(),
        }
    }

    fn cache(options: CacheOptions) -> EntitlementCache {
        EntitlementCache::new(Client::new("http://127.0.0.1:9", Credentials::ApiKey("sk_x".into())), options)
    }

    fn event(org: Option<&str>) -> Event {
        Event {
            id: "evt_1".into(),
            org_id: org.map(str::to_owned),
            kind: "member.added".into(),
            actor: "system".into(),
            data: serde_json::Value::Null,
            created_at: "2026-01-01T00:00:00Z".into(),
            seq: 1,
        }
    }

    #[test]
    fn an_event_of_an_org_drops_that_orgs_entry_only() {
        let cache = cache(CacheOptions::default());
        cache.insert(entitlements("org_a"));
        cache.insert(entitlements("org_b"));
        assert!(!cache.handle_event(&event(None)), "a user-level event drops nothing");
        assert!(!cache.handle_event(&event(Some("org_c"))), "an org the cache never read");
        assert!(cache.handle_event(&event(Some("org_a"))));
        assert!(cache.cached("org_a").is_none());
        assert!(cache.cached("org_b").is_some());
        assert!(!cache.handle_event(&event(Some("org_a"))), "already dropped");
    }

    #[test]
    fn entries_expire_after_the_ttl_while_the_stream_is_down() {
        let cache = cache(CacheOptions { ttl: Duration::from_millis(30), ..CacheOptions::default() });
        cache.insert(entitlements("org_a"));
        assert!(cache.cached("org_a").is_some());
        let stale = cache.staleness().expect("not following: stale");
        // The cache keeps time with `Instant`, which a test can't move: wait
        // out the 30 ms TTL.
        std::thread::sleep(Duration::from_millis(40));
        assert!(cache.cached("org_a").is_none());
        assert!(cache.staleness().expect("still stale") > stale);
    }

    #[test]
    fn past_max_entries_the_entry_read_longest_ago_goes() {
        let cache = cache(CacheOptions { max_entries: 2, ..CacheOptions::default() });
        cache.insert(entitlements("org_a"));
        // Reads are ordered by `Instant`: 2 ms apart, so the oldest is certain.
        std::thread::sleep(Duration::from_millis(2));
        cache.insert(entitlements("org_b"));
        std::thread::sleep(Duration::from_millis(2));
        cache.insert(entitlements("org_c"));
        assert!(cache.cached("org_a").is_none());
        assert!(cache.cached("org_b").is_some() && cache.cached("org_c").is_some());
    }
}
