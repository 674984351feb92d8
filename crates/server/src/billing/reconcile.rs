//! Reconciliation: retrying unmatched and failed events, recovering events
//! Stripe could not deliver, re-fetching live subscriptions, and Lemon
//! Squeezy discovery (`super::link`).
//!
//! - Each event and each org is worked on under a short lease (see
//!   [`LEASE`]), renewed while a provider call lasts: replicas sharing a
//!   database never work on the same one at once, and a pass that died
//!   blocks nothing for long.
//! - A walk skips orgs another pass checked within the freshness window, so
//!   concurrent passes fetch each subscription once.
//! - What a provider answers is applied through the same store path as a
//!   webhook.

use std::sync::Arc;
use std::time::Duration;

use orgplane_billing::{PaymentProvider, lemonsqueezy, stripe};
use orgplane_core::subscription::Provider;
use orgplane_core::{OrgId, Timestamp};
use orgplane_store::{Actor, EventEffect, ProcessedEvent, RetryCandidate, StoredSubscription, WalkClaim};
use serde::Serialize;

use super::sandbox::SandboxEvent;
use super::webhooks::log_processed;
use super::{
    Billing, BillingError, BillingResult, DEFAULT_FRESHNESS, FRESHNESS_DIVISOR, LEASE, MISSED_EVENT_PAGES, RETRY_BATCH,
    RETRY_PER_PASS, WALK_PAGE, plan_catalog,
};
use crate::clock::Clock;
use crate::config::Config;

/// What one reconciliation pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReconcileReport {
    /// Unmatched or failed events tried again.
    pub events_retried: usize,
    /// Of those, applied now.
    pub events_applied: usize,
    /// Live subscriptions re-fetched from their provider.
    pub subscriptions_checked: usize,
    /// Of those, changed by what the provider said (drift repaired).
    pub subscriptions_changed: usize,
    /// Subscriptions whose provider has no API configured here.
    pub subscriptions_skipped: usize,
    /// Events Stripe could not deliver, fetched from its API and stored now.
    pub missed_events_recovered: usize,
    /// Orgs not checked because another pass holds their lease (one that
    /// died leaves a lease of [`LEASE`] at most; the next pass takes it).
    pub orgs_leased_elsewhere: usize,
    /// Orgs not checked because another pass checked them within the
    /// freshness window (half the reconcile interval).
    pub orgs_checked_recently: usize,
    /// Lemon Squeezy subscriptions orgplane did not hold, found by
    /// discovery and applied to the org their customer is tied to.
    pub subscriptions_discovered: usize,
    /// Subscriptions discovery found that no org holds, newly put on the
    /// unlinked list (`GET /v1/billing/unlinked`).
    pub subscriptions_unlinked: usize,
    pub errors: usize,
}

impl Billing {
    /// One reconciliation pass: retries due unmatched and failed events,
    /// then re-fetches live subscriptions from their providers and applies
    /// what they say (drift from missed webhooks or dashboard changes). With
    /// `org`, only that org's failed events and subscription.
    pub async fn reconcile_once(&self, org: Option<OrgId>) -> BillingResult<ReconcileReport> {
        let mut report = self.retry_due_events(org).await?;
        if org.is_none() {
            self.recover_missed_stripe_events(&mut report).await;
            self.discover_lemonsqueezy(&mut report).await;
        }
        self.walk_subscriptions(org, &mut report).await?;
        Ok(report)
    }

    /// Asks Stripe for the events it could not deliver (`GET
    /// /v1/events?delivery_success=false`, within its 3-day retry window) and
    /// takes each through the same intake as a webhook: stored once by its
    /// `evt_…` id, then applied. Events already stored are duplicates and
    /// change nothing. This finds subscriptions orgplane never heard of.
    async fn recover_missed_stripe_events(&self, report: &mut ReconcileReport) {
        let Some(PaymentProvider::Stripe(client)) = &self.0.stripe else { return };
        let since = (self.now() - time::Duration::days(3)).unix_timestamp();
        let mut after: Option<String> = None;
        for _ in 0..MISSED_EVENT_PAGES {
            let page = match client.undelivered_events(since, after.as_deref()).await {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(error = %e, "reconcile: listing Stripe's undelivered events failed");
                    report.errors += 1;
                    return;
                }
            };
            for body in &page.events {
                let now = self.now();
                match self.receive(Provider::Stripe, body, stripe::parse_event(body), None, now).await {
                    Ok(receipt) if !receipt.duplicate => report.missed_events_recovered += 1,
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "reconcile: storing an undelivered Stripe event failed");
                        report.errors += 1;
                    }
                }
            }
            match (page.has_more, page.last_id) {
                (true, Some(last)) => after = Some(last),
                _ => return,
            }
        }
    }

    async fn retry_due_events(&self, org: Option<OrgId>) -> BillingResult<ReconcileReport> {
        let mut report = ReconcileReport::default();
        while report.events_retried < RETRY_PER_PASS {
            let now = self.now();
            let batch = self.0.store.claim_due_provider_events(now, RETRY_BATCH, LEASE, org).await?;
            if batch.is_empty() {
                break;
            }
            for candidate in batch {
                report.events_retried += 1;
                match self.retry(&candidate).await {
                    Ok(Some(p)) if p.status == orgplane_store::ProviderEventStatus::Applied => {
                        report.events_applied += 1
                    }
                    Ok(_) => {}
                    Err(e) => {
                        report.errors += 1;
                        tracing::warn!(error = %e, event = %candidate.id, "retrying a provider event failed");
                    }
                }
            }
        }
        Ok(report)
    }

    async fn retry(&self, candidate: &RetryCandidate) -> BillingResult<Option<ProcessedEvent>> {
        let now = self.now();
        let effect = match candidate.provider {
            Provider::Stripe => match stripe::parse_event(&candidate.payload) {
                Ok(parsed) => self.effect_of(&parsed, now).await,
                Err(e) => EventEffect::failed(Provider::Stripe, e.to_string()),
            },
            Provider::Lemonsqueezy => {
                match lemonsqueezy::parse_event(&candidate.payload, Some(&candidate.event_type)) {
                    Ok(parsed) => self.effect_of(&parsed, now).await,
                    Err(e) => EventEffect::failed(Provider::Lemonsqueezy, e.to_string()),
                }
            }
            Provider::Sandbox => match serde_json::from_slice::<SandboxEvent>(&candidate.payload) {
                Ok(event) => self.sandbox_effect(event.org_id, event.snapshot, now),
                Err(e) => EventEffect::failed(Provider::Sandbox, format!("the sandbox event does not parse: {e}")),
            },
        };
        let processed = self.0.store.retry_provider_event(candidate.id, &candidate.event_id, &effect, now).await?;
        if let Some(p) = &processed {
            log_processed(candidate.provider, p);
        }
        Ok(processed)
    }

    async fn walk_subscriptions(&self, org: Option<OrgId>, report: &mut ReconcileReport) -> BillingResult<()> {
        if let Some(org) = org {
            // Asked for this org: checked now, however recently it was.
            if let Some(sub) = self.0.store.subscription(org).await? {
                self.reconcile_subscription(&sub, None, report).await;
            }
            return Ok(());
        }
        let freshness = self.0.reconcile_interval.map_or(DEFAULT_FRESHNESS, |every| every / FRESHNESS_DIVISOR);
        let mut after = None;
        loop {
            let page = self.0.store.live_subscriptions(after, WALK_PAGE).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.org_id);
            for sub in &page {
                let fresh_since = self.now() - freshness;
                self.reconcile_subscription(sub, Some(fresh_since), report).await;
            }
        }
        Ok(())
    }

    /// Re-fetches one subscription and applies the provider's answer, under
    /// the org's lease (renewed while the provider takes its time). With
    /// `fresh_since`, an org checked since then is skipped.
    async fn reconcile_subscription(
        &self,
        sub: &StoredSubscription,
        fresh_since: Option<Timestamp>,
        report: &mut ReconcileReport,
    ) {
        let Some(api) = self.api(sub.provider) else {
            report.subscriptions_skipped += 1;
            return;
        };
        let store = &self.0.store;
        let holder = self.0.holder.as_str();
        let org = sub.org_id;
        match store.claim_reconcile_walk(org, holder, self.now(), LEASE, fresh_since).await {
            Ok(WalkClaim::Taken) => {}
            Ok(WalkClaim::LeasedElsewhere { holder: other, until }) => {
                report.orgs_leased_elsewhere += 1;
                tracing::info!(%org, holder = %other, until = %until, "reconcile: skipped an org another pass holds; its lease runs out by itself");
                return;
            }
            Ok(WalkClaim::CheckedRecently { at }) => {
                report.orgs_checked_recently += 1;
                tracing::debug!(%org, checked_at = %at, "reconcile: skipped an org checked recently by another pass");
                return;
            }
            Err(e) => {
                report.errors += 1;
                tracing::warn!(error = %e, %org, "could not take a reconciliation lease");
                return;
            }
        }
        report.subscriptions_checked += 1;
        let work = async {
            let snapshot = api.fetch(&sub.provider_subscription_id).await?;
            let input = self.input(snapshot, self.now());
            let (outcome, _) = store.apply_subscription_snapshot(org, &input, &Actor::System, self.now()).await?;
            Ok::<_, BillingError>(outcome)
        };
        tokio::pin!(work);
        let renew_every = Duration::try_from(LEASE / 3).unwrap_or(Duration::from_secs(5));
        let mut renewals = tokio::time::interval_at(tokio::time::Instant::now() + renew_every, renew_every);
        let result = loop {
            tokio::select! {
                result = &mut work => break result,
                _ = renewals.tick() => {
                    if let Err(e) = store.claim_reconcile_lease(org, holder, self.now(), LEASE).await {
                        tracing::warn!(error = %e, %org, "could not renew a reconciliation lease");
                    }
                }
            }
        };
        let checked = match result {
            Ok(outcome @ (orgplane_store::ApplyOutcome::Created | orgplane_store::ApplyOutcome::Updated)) => {
                report.subscriptions_changed += 1;
                tracing::info!(%org, subscription = %sub.provider_subscription_id, outcome = outcome.as_str(),
                    "reconciliation repaired a subscription from its provider's state");
                Some(self.now())
            }
            Ok(_) => Some(self.now()),
            Err(e) => {
                report.errors += 1;
                tracing::warn!(error = %e, %org, "reconciling a subscription failed; the next pass tries again");
                None
            }
        };
        if let Err(e) = store.release_reconcile_lease(org, holder, checked).await {
            tracing::warn!(error = %e, %org, "could not release a reconciliation lease; it expires by itself");
        }
    }

    /// Runs reconciliation in the background: due events every
    /// `retry_interval_secs`, a walk of live subscriptions every
    /// `reconcile_interval_secs`. Stops when the store closes.
    pub fn spawn_reconciler(&self) {
        let Some(tick) = [self.0.retry_interval, self.0.reconcile_interval].into_iter().flatten().min() else {
            return;
        };
        let billing = self.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(tick);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last_walk: Option<tokio::time::Instant> = None;
            loop {
                ticks.tick().await;
                if billing.0.store.is_closed() {
                    return;
                }
                let mut report = ReconcileReport::default();
                if billing.0.retry_interval.is_some() {
                    match billing.retry_due_events(None).await {
                        Ok(r) => report = r,
                        Err(e) => tracing::warn!(error = %e, "reconciliation: retrying events failed"),
                    }
                }
                if let Some(every) = billing.0.reconcile_interval {
                    // The first walk waits one interval: a starting replica
                    // should not re-fetch everything at once.
                    let due = last_walk.get_or_insert_with(tokio::time::Instant::now).elapsed() >= every;
                    if due {
                        last_walk = Some(tokio::time::Instant::now());
                        if let Err(e) = billing.walk_subscriptions(None, &mut report).await {
                            tracing::warn!(error = %e, "reconciliation: walking subscriptions failed");
                        }
                        billing.discover_lemonsqueezy(&mut report).await;
                    }
                }
                if report != ReconcileReport::default() {
                    tracing::info!(?report, "reconciliation pass");
                }
            }
        });
    }
}

/// One reconciliation pass for `orgplane reconcile [--org ORG]`: opens the
/// store of `config` and runs [`Billing::reconcile_once`] at the time
/// `clock` shows.
pub async fn reconcile_from_config(
    config: &Config,
    org: Option<OrgId>,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<ReconcileReport> {
    let catalog = plan_catalog(config).map_err(|e| anyhow::anyhow!("plan catalog:\n{e}"))?;
    let store = crate::open_store(config, config.migrate_on_start).await?;
    let base = config.public_url.clone().unwrap_or_else(|| format!("http://{}", config.listen));
    let billing = Billing::new(config, store.clone(), catalog, &base, clock)?;
    let report = billing.reconcile_once(org).await.map_err(anyhow::Error::new);
    store.close().await;
    report
}
