//! Everything a request handler may reach: the store, the token verifier,
//! the configuration and the role catalog, behind one cheap `Arc`.

use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use moka::Equivalent;
use orgplane_auth::Verifier;
use orgplane_auth::dev::DevIssuer;
use orgplane_core::roles::RoleCatalog;
use std::sync::atomic::{AtomicI64, Ordering};

use orgplane_core::keys::KeyScope;
use orgplane_core::{ApiKeyId, UserId};
use orgplane_store::Store;

use crate::cache::{Cache, CacheStats};
use crate::config::Config;
use crate::metrics::Metrics;

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub store: Store,
    /// The time every decision is made at (see [`crate::clock`]).
    pub clock: Arc<dyn crate::clock::Clock>,
    pub verifier: Verifier,
    pub config: Config,
    pub roles: RoleCatalog,
    pub catalog: orgplane_core::plans::PlanCatalog,
    pub entitlements: crate::entitlements::EntitlementsCache,
    pub dev: Option<DevIssuer>,
    pub metrics: Metrics,
    pub principals: PrincipalCache,
    pub me_cache: MeCache,
    pub org_access: OrgAccessCache,
    /// Org API keys by hash, for `POST /v1/api_keys/verify`.
    pub org_keys: crate::keys::OrgKeyCache,
    /// Requests in flight, rates per caller, event streams.
    pub limits: crate::limits::Limits,
    /// Turns `true` when the server begins to shut down: long-lived
    /// responses (the event stream) end so that shutdown can finish.
    pub shutting_down: tokio::sync::watch::Receiver<bool>,
    /// Payment providers, webhook intake, subscription operations.
    pub billing: crate::billing::Billing,
    /// The OpenAPI document of this deployment, built on first request.
    pub openapi: std::sync::OnceLock<String>,
    /// The portal's origin, cookie policy and headers (see [`crate::portal`]).
    pub portal: crate::portal::PortalSettings,
    /// Outgoing webhooks: target checks, secrets, the background worker.
    pub webhooks: Arc<crate::webhook_worker::WebhookWorker>,
    /// The WorkOS mirror's worker, when `[mirror.workos]` is set.
    pub workos_mirror: Option<Arc<crate::workos_mirror::WorkosMirror>>,
}

/// Who may see an org, as the `OrgCtx` extractor decides on every org-scoped
/// request: (org, user) → the org and the member's role (`None` user: an API
/// key, which needs only the org). Valid while the org's and the user's
/// change generations are unchanged and the entry is younger than the TTL.
pub struct OrgAccessCache {
    entries: Cache<(orgplane_core::OrgId, Option<UserId>), Arc<OrgAccessEntry>>,
}

#[derive(Clone)]
pub struct OrgAccess {
    pub org: Arc<orgplane_core::org::Org>,
    pub role: orgplane_core::roles::RoleName,
    pub is_billing_admin: bool,
}

struct OrgAccessEntry {
    org_generation: u64,
    user_generation: u64,
    access: OrgAccess,
}

impl OrgAccessCache {
    pub fn new(max_entries: u64, ttl: Duration) -> Self {
        OrgAccessCache { entries: Cache::new(max_entries, Some(ttl)) }
    }

    pub fn get(
        &self,
        key: (orgplane_core::OrgId, Option<UserId>),
        org_generation: u64,
        user_generation: u64,
    ) -> Option<OrgAccess> {
        self.entries
            .get(&key, |e| e.org_generation == org_generation && e.user_generation == user_generation)
            .map(|e| e.access.clone())
    }

    pub fn put(
        &self,
        key: (orgplane_core::OrgId, Option<UserId>),
        org_generation: u64,
        user_generation: u64,
        access: OrgAccess,
    ) {
        self.entries.insert(key, Arc::new(OrgAccessEntry { org_generation, user_generation, access }));
    }

    pub fn stats(&self) -> CacheStats {
        self.entries.stats()
    }
}

/// `GET /v1/me` answers, valid while the user's generation and each of their
/// orgs' generations are unchanged (see `orgplane_store::Store::user_generation`)
/// and younger than the cache TTL.
pub struct MeCache {
    entries: Cache<UserId, Arc<MeEntry>>,
}

struct MeEntry {
    user_generation: u64,
    orgs: Vec<(orgplane_core::OrgId, u64)>,
    body: bytes::Bytes,
}

impl MeCache {
    pub fn new(max_entries: u64, ttl: Duration) -> Self {
        MeCache { entries: Cache::new(max_entries, Some(ttl)) }
    }

    pub fn get(
        &self,
        user: UserId,
        user_generation: u64,
        org_generation: impl Fn(orgplane_core::OrgId) -> u64,
    ) -> Option<bytes::Bytes> {
        self.entries
            .get(&user, |entry| {
                entry.user_generation == user_generation
                    && entry.orgs.iter().all(|(org, generation)| org_generation(*org) == *generation)
            })
            .map(|entry| entry.body.clone())
    }

    pub fn put(&self, user: UserId, user_generation: u64, orgs: Vec<(orgplane_core::OrgId, u64)>, body: bytes::Bytes) {
        self.entries.insert(user, Arc::new(MeEntry { user_generation, orgs, body }));
    }

    pub fn stats(&self) -> CacheStats {
        self.entries.stats()
    }
}

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    pub fn new(inner: Inner) -> Self {
        AppState(Arc::new(inner))
    }

    /// The OpenAPI document this server serves: its routes (`/dev/*` with
    /// `--dev`, `/sandbox/*` with the sandbox provider) and its catalog's names.
    pub fn openapi_document(&self) -> String {
        self.openapi.get_or_init(|| crate::openapi::document(&crate::openapi::Deployment::of(self))).clone()
    }

    /// Every cache's counts, by the name `/metrics` gives it.
    pub fn cache_stats(&self) -> [(&'static str, CacheStats); 7] {
        [
            ("tokens", self.verifier.cache_stats()),
            ("users", self.principals.user_stats()),
            ("api_keys", self.principals.api_key_stats()),
            ("me", self.me_cache.stats()),
            ("org_access", self.org_access.stats()),
            ("entitlements", self.entitlements.stats()),
            ("org_api_keys", self.org_keys.stats()),
        ]
    }
}

/// What a verified token said about a user last time, so that a repeat
/// request with unchanged claims skips the provisioning write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownUser {
    pub id: UserId,
    pub email: Option<String>,
    pub email_verified: bool,
    pub name: Option<String>,
    /// The user's change generation when this was cached: a deleted user
    /// (whose subject signs in fresh) is not served from the cache.
    pub generation: u64,
}

/// A server key as the cache holds it, with the key generation it was read
/// at (see `orgplane_store::Store::keys_generation`) and when its use was
/// last noted.
#[derive(Debug)]
pub struct KnownKey {
    pub id: ApiKeyId,
    pub scope: KeyScope,
    pub expires_at: Option<orgplane_core::Timestamp>,
    pub generation: u64,
    pub use_noted: UseNoted,
}

/// When a key's use was last written, in unix milliseconds: the gate that
/// keeps `last_used_at` to at most one write a minute per key and replica.
#[derive(Debug, Default)]
pub struct UseNoted(AtomicI64);

impl UseNoted {
    pub fn new(at: Option<orgplane_core::Timestamp>) -> Self {
        UseNoted(AtomicI64::new(at.map_or(0, |t| (t.unix_timestamp_nanos() / 1_000_000) as i64)))
    }

    /// Whether the caller should write the use at `now` (then it is noted):
    /// once a minute.
    pub fn due(&self, now: orgplane_core::Timestamp) -> bool {
        self.due_every(now, orgplane_store::LAST_USED_EVERY_MS)
    }

    /// Whether the last noted time is `every_ms` or more before `now`; if
    /// so, `now` is noted and exactly one caller is told so.
    pub fn due_every(&self, now: orgplane_core::Timestamp, every_ms: i64) -> bool {
        let now = (now.unix_timestamp_nanos() / 1_000_000) as i64;
        let last = self.0.load(Ordering::Relaxed);
        now - last >= every_ms && self.0.compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed).is_ok()
    }
}

/// Principals seen recently, in two bounded caches. A user's entry
/// (issuer, subject → what their token said last time) has no TTL: it only
/// saves the provisioning write, and a token with other claims misses. An
/// API key is trusted from the cache while no key was revoked since it was
/// read (revocations are announced to every replica) and for at most
/// `api_key_ttl`, the bound when an announcement is lost.
pub struct PrincipalCache {
    users: Cache<(String, String), Arc<KnownUser>>,
    api_keys: Cache<String, Arc<KnownKey>>,
    /// When each user's `last_seen_at` was last written from here.
    seen: Cache<UserId, Arc<UseNoted>>,
}

/// Looks up a `(String, String)` key from two borrowed strings, without
/// allocating: it hashes exactly as the owned tuple does.
#[derive(Hash)]
struct IssuerSubject<'a>(&'a str, &'a str);

impl Equivalent<(String, String)> for IssuerSubject<'_> {
    fn equivalent(&self, key: &(String, String)) -> bool {
        self.0 == key.0 && self.1 == key.1
    }
}

impl PrincipalCache {
    pub fn new(max_entries: u64, api_key_ttl: Duration) -> Self {
        PrincipalCache {
            users: Cache::new(max_entries, None),
            api_keys: Cache::new(max_entries, Some(api_key_ttl)),
            seen: Cache::new(max_entries, None),
        }
    }

    pub fn user(&self, issuer: &str, subject: &str) -> Option<Arc<KnownUser>> {
        self.users.get(&IssuerSubject(issuer, subject), |_| true)
    }

    pub fn remember_user(&self, issuer: &str, subject: &str, known: KnownUser) {
        self.users.insert((issuer.to_owned(), subject.to_owned()), Arc::new(known));
    }

    /// The key cached for `hash` if no key was revoked since it was read.
    pub fn api_key(&self, hash: &str, generation: u64) -> Option<Arc<KnownKey>> {
        self.api_keys.get(hash, |k| k.generation == generation)
    }

    pub fn remember_api_key(&self, hash: &str, key: Arc<KnownKey>) {
        self.api_keys.insert(hash.to_owned(), key);
    }

    /// Whether the user's visit at `now` should be written: at most once an
    /// hour per user from this replica.
    pub fn seen_due(&self, user: UserId, now: orgplane_core::Timestamp) -> bool {
        let noted = match self.seen.get(&user, |_| true) {
            Some(noted) => noted,
            None => {
                let noted = Arc::new(UseNoted::default());
                self.seen.insert(user, noted.clone());
                noted
            }
        };
        noted.due_every(now, orgplane_store::LAST_SEEN_EVERY_MS)
    }

    pub fn user_stats(&self) -> CacheStats {
        self.users.stats()
    }

    pub fn api_key_stats(&self) -> CacheStats {
        self.api_keys.stats()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_is_found_by_borrowed_issuer_and_subject() {
        let cache = PrincipalCache::new(10, Duration::from_secs(1));
        let known = KnownUser { id: UserId::new(), email: None, email_verified: false, name: None, generation: 0 };
        cache.remember_user("https://issuer", "sub-1", known.clone());
        assert_eq!(cache.user("https://issuer", "sub-1").as_deref(), Some(&known));
        assert!(cache.user("https://issuer", "sub-2").is_none());
        assert!(cache.user("https://issuer/", "sub-1").is_none());
        // The split between issuer and subject is part of the key.
        assert!(cache.user("https://issuers", "ub-1").is_none());
    }
}
