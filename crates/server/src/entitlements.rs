//! Entitlements as the server answers them: resolution (the one pure
//! function in core) over the store's inputs, behind an in-memory cache.
//!
//! A cached answer is reused while the org's change generation (bumped by
//! the store after every commit touching the org, and on PostgreSQL by
//! other replicas' NOTIFY) is unchanged and the entry is younger than
//! `cache.entitlements_ttl_ms`.

use std::sync::Arc;
use std::time::Duration;

use orgplane_core::entitlements::{Entitlements, SubscriptionFacts, resolve};
use orgplane_core::plans::{Plan, PlanCatalog};
use orgplane_core::subscription::Provider;
use orgplane_core::{OrgId, Timestamp};
use orgplane_store::{EntitlementInputs, Usage};

use crate::cache::{Cache, CacheStats};
use crate::error::ApiResult;
use crate::state::AppState;

/// An org's resolved entitlements with its usage.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub entitlements: Entitlements,
    pub usage: Usage,
    /// `GET /v1/orgs/{org}/entitlements`'s body, encoded by the first request
    /// that needs it: a cached answer is not encoded again.
    pub body: std::sync::OnceLock<bytes::Bytes>,
}

/// Resolved entitlements by org, each with the org's change generation it
/// was computed at.
pub struct EntitlementsCache {
    entries: Cache<OrgId, (u64, Arc<Resolved>)>,
}

impl EntitlementsCache {
    pub fn new(max_entries: u64, ttl: Duration) -> Self {
        EntitlementsCache { entries: Cache::new(max_entries, Some(ttl)) }
    }

    fn get(&self, org: OrgId, generation: u64) -> Option<Arc<Resolved>> {
        self.entries.get(&org, |(at, _)| *at == generation).map(|(_, value)| value)
    }

    fn put(&self, org: OrgId, generation: u64, value: Arc<Resolved>) {
        self.entries.insert(org, (generation, value));
    }

    pub fn stats(&self) -> CacheStats {
        self.entries.stats()
    }
}

/// The catalog plan a subscription's price buys: the one mapping from a
/// provider's price to a plan, for entitlements, the subscription's answer
/// and what a webhook stores. An unknown price grants nothing beyond the
/// default plan, and is said loudly.
pub fn plan_bought<'c>(
    catalog: &'c PlanCatalog,
    provider: Provider,
    subscription: &str,
    price: Option<&str>,
) -> Option<&'c Plan> {
    let plan = price.and_then(|p| catalog.plan_for_price(provider, p));
    if plan.is_none() {
        tracing::error!(
            provider = provider.as_str(),
            subscription,
            price = ?price,
            "a subscription's price maps to no plan of the catalog: it grants nothing beyond the default plan; \
             add the price to a plan's `prices` and sync the org"
        );
    }
    plan
}

/// Resolution over stored inputs: maps the subscription's price to a plan
/// through the catalog, then applies the core rules (a live seat hold caps
/// the seat limit). The display and the in-lock quota guards both resolve
/// here, so they can't disagree.
pub fn resolve_inputs(catalog: &PlanCatalog, inputs: &EntitlementInputs, now: Timestamp) -> Entitlements {
    let plan_key = inputs.subscription.as_ref().and_then(|s| {
        plan_bought(catalog, s.provider, &s.provider_subscription_id, s.price_id.as_deref()).map(|p| p.key().to_owned())
    });
    let facts = inputs.subscription.as_ref().map(|s| SubscriptionFacts {
        status: s.status,
        plan: plan_key.as_deref(),
        quantity: s.quantity,
        trial_end: s.trial_end,
        past_due_since: s.past_due_since,
        seat_hold: inputs.seat_hold,
        plan_hold: inputs.plan_hold,
    });
    resolve(catalog, inputs.kind, facts.as_ref(), &inputs.overrides, now)
}

/// The org's entitlements and usage, from the cache when it is fresh.
pub async fn current(state: &AppState, org: OrgId) -> ApiResult<Arc<Resolved>> {
    let generation = state.store.org_generation(org);
    if let Some(hit) = state.entitlements.get(org, generation) {
        return Ok(hit);
    }
    let now = state.clock.now();
    // Boxed: the store's future is large and only a miss needs it; inline it
    // would be moved with every request's future, hits included.
    let (inputs, usage) = Box::pin(state.store.entitlement_inputs(org, now)).await?;
    let resolved = Arc::new(Resolved {
        entitlements: resolve_inputs(&state.catalog, &inputs, now),
        usage,
        body: std::sync::OnceLock::new(),
    });
    state.entitlements.put(org, generation, resolved.clone());
    Ok(resolved)
}
