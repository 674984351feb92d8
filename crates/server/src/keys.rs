//! Keys beyond authentication itself: what a server key's scope lets it
//! do, and the verification of org API keys (`ok_…`) for the app, behind a
//! cache as fast as the entitlements read it answers with.
//!
//! A cached org key is trusted while no key was revoked since it was read
//! (`orgplane_store::Store::keys_generation`, announced across replicas)
//! and for at most `cache.entitlements_ttl_ms`. Whether the org still has
//! the `api_tokens` feature is asked of the entitlements cache on every
//! verification, so a downgrade turns its keys off at once and an upgrade
//! back on, without touching them.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use orgplane_core::keys::{KeyScope, usable};
use orgplane_store::OrgKeyRecord;

use crate::cache::{Cache, CacheStats};
use crate::entitlements::{Resolved, current};
use crate::error::{ApiError, ApiResult};
use crate::state::{AppState, UseNoted};

/// The feature an org needs for its keys to be made and to verify.
pub const FEATURE: &str = "api_tokens";

/// POSTs that change nothing, open to `read` keys: verifying a key and
/// checking an entitlement.
const READ_ONLY_POSTS: [&str; 2] = ["/v1/api_keys/verify", "/v1/orgs/{org}/check"];

/// The scope rule: a `read` key may only read (GET, HEAD and the read-only
/// POSTs); `write` and `admin` keys pass here (routes that manage keys or
/// users ask for `admin` through [`crate::extract::AdminKey`]).
pub fn scope_allows(scope: KeyScope, req: &Request) -> ApiResult<()> {
    if scope != KeyScope::Read || matches!(*req.method(), Method::GET | Method::HEAD) {
        return Ok(());
    }
    let route = req.extensions().get::<MatchedPath>().map(MatchedPath::as_str);
    if *req.method() == Method::POST && route.is_some_and(|r| READ_ONLY_POSTS.contains(&r)) {
        return Ok(());
    }
    Err(ApiError::forbidden(format!(
        "this server key has scope `read` and may only read; {} needs a key of scope `write` or `admin`",
        req.method()
    )))
}

struct CachedOrgKey {
    record: OrgKeyRecord,
    generation: u64,
    use_noted: UseNoted,
    /// The last valid answer, serialized, with the org generation it was
    /// made at: a repeat verification of an unchanged org reuses it.
    answer: std::sync::Mutex<Option<(u64, bytes::Bytes)>>,
}

/// Org keys by hash, each with the key generation it was read at.
pub struct OrgKeyCache {
    entries: Cache<String, Arc<CachedOrgKey>>,
}

impl OrgKeyCache {
    pub fn new(max_entries: u64, ttl: Duration) -> Self {
        OrgKeyCache { entries: Cache::new(max_entries, Some(ttl)) }
    }

    pub fn stats(&self) -> CacheStats {
        self.entries.stats()
    }
}

/// What verifying a key answered: the serialized valid answer, or why not.
pub enum Verdict {
    Valid(bytes::Bytes),
    Invalid { reason: &'static str },
}

/// Verifies what an app's customer sent: an org key that exists, is not
/// revoked or expired, and whose org has the `api_tokens` feature now.
/// `render` serializes a valid answer; it is reused while the org's
/// generation is unchanged (and the cached key younger than the TTL).
pub async fn verify(
    state: &AppState,
    key: &str,
    render: impl FnOnce(&OrgKeyRecord, &Resolved) -> ApiResult<bytes::Bytes>,
) -> ApiResult<Verdict> {
    if !key.starts_with(orgplane_auth::api_key::ORG_PREFIX) {
        return Ok(Verdict::Invalid { reason: "unknown" });
    }
    let hash = orgplane_auth::api_key::hash(key);
    let generation = state.store.keys_generation();
    let cached = match state.org_keys.entries.get(&hash, |k| k.generation == generation) {
        Some(cached) => cached,
        None => {
            let Some(record) = Box::pin(state.store.org_key_by_hash(&hash)).await? else {
                return Ok(Verdict::Invalid { reason: "unknown" });
            };
            let cached = Arc::new(CachedOrgKey {
                use_noted: UseNoted::new(record.last_used_at),
                record,
                generation,
                answer: std::sync::Mutex::new(None),
            });
            state.org_keys.entries.insert(hash, cached.clone());
            cached
        }
    };
    let now = state.clock.now();
    if let Err(refusal) = usable(cached.record.revoked_at, cached.record.expires_at, now) {
        return Ok(Verdict::Invalid { reason: refusal.as_str() });
    }
    if cached.use_noted.due(now) {
        let (store, id) = (state.store.clone(), cached.record.id);
        tokio::spawn(async move {
            if let Err(e) = store.note_org_key_used(id, now).await {
                tracing::debug!(error = %e, key = %id, "could not note the org API key's use");
            }
        });
    }
    // Read before the entitlements: a change committed meanwhile makes the
    // stored answer stale at once instead of hiding behind a newer generation.
    let org_generation = state.store.org_generation(cached.record.org_id);
    if let Some((at, body)) = cached.answer.lock().unwrap_or_else(|e| e.into_inner()).as_ref()
        && *at == org_generation
    {
        return Ok(Verdict::Valid(body.clone()));
    }
    let resolved = match Box::pin(current(state, cached.record.org_id)).await {
        Ok(resolved) => resolved,
        // The org was deleted (its keys with it) after the key was cached.
        Err(e) if e.code == "not_found" => return Ok(Verdict::Invalid { reason: "unknown" }),
        Err(e) => return Err(e),
    };
    if resolved.entitlements.feature(FEATURE) != Some(true) {
        return Ok(Verdict::Invalid { reason: "feature_not_entitled" });
    }
    let body = render(&cached.record, &resolved)?;
    *cached.answer.lock().unwrap_or_else(|e| e.into_inner()) = Some((org_generation, body.clone()));
    Ok(Verdict::Valid(body))
}
