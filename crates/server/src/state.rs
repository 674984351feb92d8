//! Everything a request handler may reach: the store, the token verifier,
//! the configuration and the role catalog, behind one cheap `Arc`.

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::{Arc, Mutex};

use orgplane_auth::Verifier;
use orgplane_auth::dev::DevIssuer;
use orgplane_core::roles::RoleCatalog;
use orgplane_core::{ApiKeyId, UserId};
use orgplane_store::Store;

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
    /// Turns `true` when the server begins to shut down: long-lived
    /// responses (the event stream) end so that shutdown can finish.
    pub shutting_down: tokio::sync::watch::Receiver<bool>,
    /// Payment providers, webhook intake, subscription operations.
    pub billing: crate::billing::Billing,
}

/// Who may see an org, as the `OrgCtx` extractor decides on every org-scoped
/// request: (org, user) → the org and the member's role (`None` user: an API
/// key, which needs only the org). Valid while the org's and the user's
/// change generations are unchanged and the entry is younger than the TTL.
pub struct OrgAccessCache {
    ttl: std::time::Duration,
    entries: Mutex<HashMap<(orgplane_core::OrgId, Option<UserId>), OrgAccessEntry>>,
}

#[derive(Clone)]
pub struct OrgAccess {
    pub org: orgplane_core::org::Org,
    pub role: orgplane_core::roles::RoleName,
    pub is_billing_admin: bool,
}

struct OrgAccessEntry {
    org_generation: u64,
    user_generation: u64,
    at: std::time::Instant,
    access: OrgAccess,
}

impl OrgAccessCache {
    pub fn new(ttl: std::time::Duration) -> Self {
        OrgAccessCache { ttl, entries: Mutex::new(HashMap::new()) }
    }

    pub fn get(
        &self,
        key: (orgplane_core::OrgId, Option<UserId>),
        org_generation: u64,
        user_generation: u64,
    ) -> Option<OrgAccess> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(&key)
            .filter(|e| {
                e.org_generation == org_generation && e.user_generation == user_generation && e.at.elapsed() < self.ttl
            })
            .map(|e| e.access.clone())
    }

    pub fn put(
        &self,
        key: (orgplane_core::OrgId, Option<UserId>),
        org_generation: u64,
        user_generation: u64,
        access: OrgAccess,
    ) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= PRINCIPAL_CACHE_CAPACITY {
            entries.clear();
        }
        entries.insert(key, OrgAccessEntry { org_generation, user_generation, at: std::time::Instant::now(), access });
    }
}

/// `GET /v1/me` answers, valid while the user's generation and each of their
/// orgs' generations are unchanged (see `orgplane_store::Store::user_generation`)
/// and younger than the cache TTL.
pub struct MeCache {
    ttl: std::time::Duration,
    entries: Mutex<HashMap<UserId, MeEntry>>,
}

struct MeEntry {
    user_generation: u64,
    orgs: Vec<(orgplane_core::OrgId, u64)>,
    at: std::time::Instant,
    body: bytes::Bytes,
}

impl MeCache {
    pub fn new(ttl: std::time::Duration) -> Self {
        MeCache { ttl, entries: Mutex::new(HashMap::new()) }
    }

    pub fn get(
        &self,
        user: UserId,
        user_generation: u64,
        org_generation: impl Fn(orgplane_core::OrgId) -> u64,
    ) -> Option<bytes::Bytes> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let entry = entries.get(&user)?;
        let fresh = entry.user_generation == user_generation
            && entry.at.elapsed() < self.ttl
            && entry.orgs.iter().all(|(org, generation)| org_generation(*org) == *generation);
        fresh.then(|| entry.body.clone())
    }

    pub fn put(&self, user: UserId, user_generation: u64, orgs: Vec<(orgplane_core::OrgId, u64)>, body: bytes::Bytes) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= PRINCIPAL_CACHE_CAPACITY {
            entries.clear();
        }
        entries.insert(user, MeEntry { user_generation, orgs, at: std::time::Instant::now(), body });
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
}

/// What a verified token said about a user last time, so that a repeat
/// request with unchanged claims skips the provisioning write.
#[derive(Clone, PartialEq, Eq)]
pub struct KnownUser {
    pub id: UserId,
    pub email: Option<String>,
    pub email_verified: bool,
    pub name: Option<String>,
}

/// Principals seen recently. Bounded: when full it is cleared, which costs
/// one database read per principal afterwards, nothing more. An API key is
/// trusted from the cache for at most `api_key_ttl`, so a key revoked in the
/// database (by any replica) stops working within that time.
pub struct PrincipalCache {
    users: Mutex<HashMap<(String, String), KnownUser>>,
    api_keys: Mutex<HashMap<String, (ApiKeyId, std::time::Instant)>>,
    api_key_ttl: std::time::Duration,
}

const PRINCIPAL_CACHE_CAPACITY: usize = 100_000;

impl PrincipalCache {
    pub fn user(&self, issuer: &str, subject: &str) -> Option<KnownUser> {
        let users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        users.get(&(issuer.to_owned(), subject.to_owned())).cloned()
    }

    pub fn remember_user(&self, issuer: &str, subject: &str, known: KnownUser) {
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        if users.len() >= PRINCIPAL_CACHE_CAPACITY {
            users.clear();
        }
        users.insert((issuer.to_owned(), subject.to_owned()), known);
    }

    pub fn new(api_key_ttl: std::time::Duration) -> Self {
        PrincipalCache { users: Mutex::default(), api_keys: Mutex::default(), api_key_ttl }
    }

    pub fn api_key(&self, hash: &str) -> Option<ApiKeyId> {
        let keys = self.api_keys.lock().unwrap_or_else(|e| e.into_inner());
        keys.get(hash).filter(|(_, at)| at.elapsed() < self.api_key_ttl).map(|(id, _)| *id)
    }

    pub fn remember_api_key(&self, hash: &str, id: ApiKeyId) {
        let mut keys = self.api_keys.lock().unwrap_or_else(|e| e.into_inner());
        if keys.len() >= PRINCIPAL_CACHE_CAPACITY {
            keys.clear();
        }
        keys.insert(hash.to_owned(), (id, std::time::Instant::now()));
    }
}
