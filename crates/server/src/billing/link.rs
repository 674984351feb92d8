//! Subscriptions made elsewhere: linking one to an org
//! (`POST /v1/billing/link`, `orgplane billing link`), and Lemon Squeezy
//! discovery (a reconciliation step that lists the store's subscriptions).
//!
//! - Linking fetches the provider's present view and hands it to the
//!   store, which checks, claims and applies it in one transaction through
//!   the webhooks' apply path (`Store::link_subscription`).
//! - Discovery applies what it finds to the org its customer is tied to,
//!   through the same path as a reconciliation; anything else goes on the
//!   unlinked list, once, for an operator.

use std::sync::Arc;

use orgplane_billing::{PaymentProvider, ProviderError};
use orgplane_core::subscription::Provider;
use orgplane_core::{DomainError, OrgId};
use orgplane_store::{Actor, DiscoveredOwner, DiscoveredSubscription, StoredSubscription};

use super::reconcile::ReconcileReport;
use super::{Billing, BillingError, BillingResult, plan_catalog};
use crate::clock::Clock;
use crate::config::Config;

/// Pages (of 100) of the Lemon Squeezy store's subscriptions read per pass.
const DISCOVERY_PAGES: u32 = 50;

impl Billing {
    /// Ties `provider`'s subscription `subscription_id` to `org` and applies
    /// it: `not_found` when the provider (or orgplane) knows no such
    /// subscription or org, `conflict` when another org holds it,
    /// `subscription_exists` when the org has another live one.
    pub async fn link(
        &self,
        provider: Provider,
        subscription_id: &str,
        org: OrgId,
        actor: &Actor,
    ) -> BillingResult<StoredSubscription> {
        let api = self.require_api(provider)?;
        let snapshot = match api.fetch(subscription_id).await {
            Ok(snapshot) => snapshot,
            Err(BillingError::Provider(ProviderError::Api { status: 404, .. })) => {
                return Err(DomainError::NotFound { what: "subscription at the provider" }.into());
            }
            Err(e) => return Err(e),
        };
        // Webhooks go to the org a subscription's metadata names first: a
        // link against it would leave every later event refused.
        if snapshot.org_id.is_some_and(|named| named != org) {
            return Err(DomainError::conflict(format!(
                "{} subscription {subscription_id} names another organization in its metadata (org_id); change or \
                 remove that metadata at the provider first",
                provider.as_str()
            ))
            .into());
        }
        let now = self.now();
        let input = self.input(snapshot, now);
        Ok(self.0.store.link_subscription(org, &input, actor, now).await?)
    }

    /// Lemon Squeezy discovery: reads the store's subscriptions page by page
    /// and sorts each (see the module docs). Without a Lemon Squeezy API
    /// configured, nothing to do.
    pub(super) async fn discover_lemonsqueezy(&self, report: &mut ReconcileReport) {
        let Some(PaymentProvider::LemonSqueezy(client)) = &self.0.lemonsqueezy else { return };
        let mut number = 1;
        while number <= DISCOVERY_PAGES {
            let page = match client.list_subscriptions(number).await {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(error = %e, page = number, "discovery: listing Lemon Squeezy's subscriptions failed");
                    report.errors += 1;
                    return;
                }
            };
            for listed in page.subscriptions {
                let snapshot = listed.snapshot;
                let found = DiscoveredSubscription {
                    provider: Provider::Lemonsqueezy,
                    provider_subscription_id: snapshot.provider_subscription_id.clone(),
                    provider_customer_id: snapshot.provider_customer_id.clone(),
                    customer_email: listed.customer_email,
                    plan: self.plan_of_price(
                        Provider::Lemonsqueezy,
                        &snapshot.provider_subscription_id,
                        snapshot.price_id.as_deref(),
                    ),
                    price_id: snapshot.price_id.clone(),
                    status: snapshot.status,
                };
                match self.0.store.sort_discovered_subscription(&found, self.now()).await {
                    Ok(DiscoveredOwner::Held(_)) => {}
                    Ok(DiscoveredOwner::Unlinked { new }) => report.subscriptions_unlinked += usize::from(new),
                    Ok(DiscoveredOwner::Customer(org)) => {
                        let now = self.now();
                        let input = self.input(snapshot, now);
                        match self.0.store.apply_subscription_snapshot(org, &input, &Actor::System, now).await {
                            Ok(_) => {
                                report.subscriptions_discovered += 1;
                                tracing::info!(%org, subscription = %found.provider_subscription_id,
                                    "discovery applied a Lemon Squeezy subscription to the org its customer is tied to");
                            }
                            Err(e) => {
                                report.errors += 1;
                                tracing::warn!(error = %e, %org, subscription = %found.provider_subscription_id,
                                    "discovery could not apply a subscription to its customer's org");
                            }
                        }
                    }
                    Err(e) => {
                        report.errors += 1;
                        tracing::warn!(error = %e, subscription = %found.provider_subscription_id,
                            "discovery could not record a subscription");
                    }
                }
            }
            match page.next_page {
                Some(next) => number = next,
                None => return,
            }
        }
        tracing::warn!(pages = DISCOVERY_PAGES, "discovery: stopped after its page limit; the next pass starts over");
    }
}

/// `orgplane billing link`: opens the store of `config` and links as
/// [`Billing::link`] does, attributed to the system.
pub async fn link_from_config(
    config: &Config,
    provider: Provider,
    subscription_id: &str,
    org: OrgId,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<StoredSubscription> {
    let catalog = plan_catalog(config).map_err(|e| anyhow::anyhow!("plan catalog:\n{e}"))?;
    let store = crate::open_store(config, config.migrate_on_start).await?;
    let base = config.public_url.clone().unwrap_or_else(|| format!("http://{}", config.listen));
    let billing = Billing::new(config, store.clone(), catalog, &base, clock)?;
    let linked = billing.link(provider, subscription_id, org, &Actor::System).await;
    store.close().await;
    linked.map_err(|e| {
        let e = crate::error::ApiError::from(e);
        anyhow::anyhow!("{} ({})", e.message, e.code)
    })
}
