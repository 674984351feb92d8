//! The one interface the server calls a payment provider through.
//!
//! This module owns the provider-neutral request and answer types and the
//! [`PaymentProvider`] enum that routes each call to the provider's client.
//! It must never hold provider-specific logic: each arm forwards to its
//! client, and a difference between providers is documented on the method.

use orgplane_core::OrgId;
use orgplane_core::subscription::{Provider, SubscriptionSnapshot};

use crate::change::{ChangePreview, PlanChange};
use crate::error::ProviderError;
use crate::lemonsqueezy::LemonSqueezyClient;
use crate::stripe::StripeClient;

/// A subscription checkout for one org.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckoutRequest {
    /// Travels in the provider's metadata so that the webhook finds the org.
    pub org_id: OrgId,
    /// Stripe price id, or Lemon Squeezy variant id.
    pub price_id: String,
    pub quantity: u32,
    pub success_url: String,
    /// Stripe only: Lemon Squeezy's checkout has no cancel URL.
    pub cancel_url: String,
    /// An existing provider customer (Stripe only), so the org keeps one customer.
    pub customer_id: Option<String>,
    /// Pre-fills the checkout's email when there is no customer yet.
    pub customer_email: Option<String>,
    /// Stripe only: Lemon Squeezy's trial is configured on the variant.
    pub trial_period_days: Option<u32>,
    /// Stripe only, with a trial: a trial that ends without a payment
    /// method pauses the subscription (`trial_settings[end_behavior]
    /// [missing_payment_method]=pause`) instead of cancelling it.
    pub pause_trial_without_payment_method: bool,
    /// Sent as Stripe's `Idempotency-Key` (Lemon Squeezy has none): a retry
    /// with the same key returns the same session.
    pub idempotency_key: String,
}

/// A hosted checkout page to send the buyer to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckoutSession {
    pub id: String,
    pub url: String,
}

/// What the provider says of a catalog price (Stripe) or variant (Lemon
/// Squeezy), for `orgplane doctor`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatalogItemStatus {
    /// Known, active, and sold as a subscription.
    Active,
    /// Known, but a checkout for it would fail or sell the wrong thing; why.
    Unusable(String),
    /// The provider does not know it (404).
    Unknown,
}

/// A configured payment provider. An enum rather than a trait object: the set
/// of providers is closed, and `async fn` stays plain.
#[derive(Debug, Clone)]
pub enum PaymentProvider {
    Stripe(StripeClient),
    LemonSqueezy(LemonSqueezyClient),
}

impl PaymentProvider {
    pub fn provider(&self) -> Provider {
        match self {
            PaymentProvider::Stripe(_) => Provider::Stripe,
            PaymentProvider::LemonSqueezy(_) => Provider::Lemonsqueezy,
        }
    }

    /// Starts a hosted checkout and returns the URL to redirect the buyer to.
    pub async fn checkout(&self, request: &CheckoutRequest) -> Result<String, ProviderError> {
        let session = match self {
            PaymentProvider::Stripe(client) => client.create_checkout_session(request).await?,
            PaymentProvider::LemonSqueezy(client) => client.create_checkout(request).await?,
        };
        Ok(session.url)
    }

    /// The provider's present view of a subscription (`observed_at` = now).
    /// Lemon Squeezy's API does not return checkout custom data, so its
    /// snapshots have no `org_id`: the caller already knows the org.
    pub async fn fetch(&self, subscription_id: &str) -> Result<SubscriptionSnapshot, ProviderError> {
        match self {
            PaymentProvider::Stripe(client) => client.get_subscription(subscription_id).await,
            PaymentProvider::LemonSqueezy(client) => client.get_subscription(subscription_id).await,
        }
    }

    /// Cancels at the end of the paid period (`true`) or undoes that (`false`).
    /// The idempotency key goes to Stripe (every POST carries one).
    pub async fn set_cancel_at_period_end(
        &self,
        subscription_id: &str,
        cancel: bool,
        idempotency_key: &str,
    ) -> Result<SubscriptionSnapshot, ProviderError> {
        match self {
            PaymentProvider::Stripe(client) => {
                client.cancel_at_period_end(subscription_id, cancel, idempotency_key).await
            }
            PaymentProvider::LemonSqueezy(client) => client.set_cancelled(subscription_id, cancel).await,
        }
    }

    /// Ends the subscription. Stripe cancels at once (status `canceled`).
    /// Lemon Squeezy has no immediate cancel: its `DELETE` leaves the
    /// subscription `cancelled` until `ends_at`, which normalizes to active
    /// with `cancel_at_period_end` (see the crate's notes).
    pub async fn cancel_now(&self, subscription_id: &str) -> Result<SubscriptionSnapshot, ProviderError> {
        match self {
            PaymentProvider::Stripe(client) => client.cancel_now(subscription_id).await,
            PaymentProvider::LemonSqueezy(client) => client.cancel_now(subscription_id).await,
        }
    }

    /// Sets the seat count on the subscription's item, prorated. The
    /// idempotency key goes to Stripe; Lemon Squeezy has none (setting a
    /// quantity is idempotent anyway).
    pub async fn set_quantity(&self, item_id: &str, quantity: u32, idempotency_key: &str) -> Result<(), ProviderError> {
        match self {
            PaymentProvider::Stripe(client) => client.update_quantity(item_id, quantity, idempotency_key).await,
            PaymentProvider::LemonSqueezy(client) => client.update_quantity(item_id, quantity).await,
        }
    }

    /// A customer-portal URL. Stripe needs the customer and makes a portal
    /// session that returns to `return_url`; Lemon Squeezy hands out a
    /// pre-signed URL (valid 24 h) with the subscription and ignores `return_url`.
    pub async fn portal_url(
        &self,
        customer_id: Option<&str>,
        subscription_id: &str,
        return_url: &str,
        idempotency_key: &str,
    ) -> Result<String, ProviderError> {
        match self {
            PaymentProvider::Stripe(client) => {
                let customer = customer_id.ok_or_else(|| {
                    ProviderError::InvalidRequest(
                        "a Stripe billing-portal session needs the subscription's customer id, and it has none".into(),
                    )
                })?;
                client.create_portal_session(customer, return_url, idempotency_key).await
            }
            PaymentProvider::LemonSqueezy(client) => client.portal_url(subscription_id).await,
        }
    }

    /// Moves the subscription to another plan, keeping its one item, and
    /// answers the provider's view afterwards. Stripe updates the item's
    /// price (and quantity) in one call with `proration_behavior`; Lemon
    /// Squeezy patches the subscription's variant with its proration flags,
    /// then the item's quantity when it changes.
    pub async fn change_plan(&self, change: &PlanChange) -> Result<SubscriptionSnapshot, ProviderError> {
        match self {
            PaymentProvider::Stripe(client) => client.change_plan(change).await,
            PaymentProvider::LemonSqueezy(client) => client.change_plan(change).await,
        }
    }

    /// What the change would cost. Stripe previews the next invoice with its
    /// prorations; Lemon Squeezy has no preview and computes proration when
    /// the change is made, so its answer is the new price per period.
    pub async fn preview_change(&self, change: &PlanChange) -> Result<ChangePreview, ProviderError> {
        match self {
            PaymentProvider::Stripe(client) => client.preview_change(change).await,
            PaymentProvider::LemonSqueezy(client) => client.preview_change(change).await,
        }
    }

    /// Resumes a paused subscription: Stripe `POST …/resume`, Lemon Squeezy
    /// unpauses (`pause: null`). The idempotency key goes to Stripe.
    pub async fn resume(
        &self,
        subscription_id: &str,
        idempotency_key: &str,
    ) -> Result<SubscriptionSnapshot, ProviderError> {
        match self {
            PaymentProvider::Stripe(client) => client.resume(subscription_id, idempotency_key).await,
            PaymentProvider::LemonSqueezy(client) => client.unpause(subscription_id).await,
        }
    }
}
