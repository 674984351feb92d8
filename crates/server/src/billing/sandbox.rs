//! The sandbox provider (`--dev`): a payment provider whose "API" is rows in
//! the database and whose checkout page is served by orgplane itself.
//!
//! - Paying a checkout stores and applies a provider event through the same
//!   path as a real webhook (once: the event id is the checkout's).
//! - Its API answers snapshots that are applied like Stripe's answers.

use std::sync::Arc;

use orgplane_core::subscription::{Provider, SubscriptionSnapshot};
use orgplane_core::{DomainError, OrgId, Timestamp};
use orgplane_store::{
    EventEffect, Ingest, NewProviderEvent, SandboxChange, SandboxSubscription, Store, StoreError, StoredSubscription,
};
use serde::{Deserialize, Serialize};

use super::webhooks::WebhookReceipt;
use super::webhooks::log_processed;
use super::{Billing, BillingError, BillingResult};
use crate::clock::Clock;

/// The sandbox provider: a payment provider whose "API" is rows in the
/// database and whose checkout page is served by orgplane itself.
#[derive(Clone)]
pub(super) struct SandboxProvider {
    pub(super) store: Store,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) base_url: String,
    pub(super) period: time::Duration,
}

/// A sandbox provider event, as stored (its payload).
#[derive(Serialize, Deserialize)]
pub(super) struct SandboxEvent {
    pub(super) org_id: OrgId,
    pub(super) snapshot: SubscriptionSnapshot,
}

impl SandboxProvider {
    pub(super) fn snapshot(sub: &SandboxSubscription, now: Timestamp) -> SubscriptionSnapshot {
        SubscriptionSnapshot {
            provider: Provider::Sandbox,
            provider_subscription_id: sub.id.clone(),
            provider_customer_id: Some(sub.customer_id.clone()),
            org_id: Some(sub.org_id),
            status: sub.status,
            price_id: Some(sub.price_id.clone()),
            item_id: Some(sub.id.clone()),
            quantity: sub.quantity,
            current_period_end: Some(sub.current_period_end),
            cancel_at_period_end: sub.cancel_at_period_end,
            trial_end: None,
            observed_at: now,
            portal_url: None,
        }
    }

    pub(super) async fn change(&self, id: &str, change: SandboxChange) -> BillingResult<SubscriptionSnapshot> {
        let now = self.clock.now();
        let sub = self.store.sandbox_change(id, change, now, self.period).await?;
        Ok(Self::snapshot(&sub, now))
    }
}

/// What a paid sandbox checkout became.
#[derive(Debug, Clone)]
pub struct SandboxPaid {
    pub checkout: orgplane_store::CheckoutRecord,
    pub receipt: WebhookReceipt,
    pub subscription: Option<StoredSubscription>,
}

impl Billing {
    fn sandbox(&self) -> BillingResult<&SandboxProvider> {
        self.0
            .sandbox
            .as_ref()
            .ok_or_else(|| BillingError::NotConfigured("the sandbox provider runs only with --dev".into()))
    }

    pub async fn sandbox_checkout(&self, id: &str) -> BillingResult<orgplane_store::CheckoutRecord> {
        self.sandbox()?;
        match self.0.store.checkout(id).await? {
            Some(c) if c.provider == Provider::Sandbox => Ok(c),
            _ => Err(DomainError::NotFound { what: "sandbox checkout" }.into()),
        }
    }

    /// Pays a sandbox checkout: the sandbox creates its subscription and
    /// delivers the event through the same path as a real webhook.
    pub async fn sandbox_pay(&self, id: &str) -> BillingResult<SandboxPaid> {
        let sandbox = self.sandbox()?;
        let now = self.now();
        let payment = self.0.store.sandbox_pay(id, now, sandbox.period).await?;
        let snapshot = SandboxProvider::snapshot(&payment.subscription, now);
        let payload =
            serde_json::to_vec(&SandboxEvent { org_id: payment.subscription.org_id, snapshot: snapshot.clone() })
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let event_id = format!("sandbox:{id}:paid");
        let effect = self.sandbox_effect(payment.subscription.org_id, snapshot, now);
        let event = NewProviderEvent {
            provider: Provider::Sandbox,
            event_id: &event_id,
            event_type: "subscription.created",
            occurred_at: Some(now),
            payload: &payload,
        };
        let ingest = self.0.store.ingest_provider_event(&event, &effect, now).await?;
        if let Ingest::Processed(p) = &ingest {
            log_processed(Provider::Sandbox, p);
        }
        let subscription = self.0.store.subscription(payment.checkout.org_id).await?;
        Ok(SandboxPaid { checkout: payment.checkout, receipt: WebhookReceipt::from_ingest(&ingest), subscription })
    }

    /// Abandons a sandbox checkout (its Cancel button).
    pub async fn sandbox_cancel(&self, id: &str) -> BillingResult<orgplane_store::CheckoutRecord> {
        let checkout = self.sandbox_checkout(id).await?;
        self.0.store.cancel_checkout(id, self.now()).await?;
        Ok(checkout)
    }

    pub async fn sandbox_subscription(&self, id: &str) -> BillingResult<SandboxSubscription> {
        self.sandbox()?;
        self.0
            .store
            .sandbox_subscription(id)
            .await?
            .ok_or_else(|| DomainError::NotFound { what: "sandbox subscription" }.into())
    }

    pub(super) fn sandbox_effect(&self, org: OrgId, snapshot: SubscriptionSnapshot, now: Timestamp) -> EventEffect {
        EventEffect {
            provider: Provider::Sandbox,
            org_hint: Some(org),
            customer_id: snapshot.provider_customer_id.clone(),
            subscription_id: Some(snapshot.provider_subscription_id.clone()),
            snapshot: Some(self.input(snapshot, now)),
            failure: None,
            payment: None,
        }
    }
}
