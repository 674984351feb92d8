//! The one normalized shape every provider's webhook turns into.
//!
//! This module owns the vocabulary the server reads ([`ParsedWebhook`],
//! [`BillingEvent`]). It must never hold a provider's JSON or a provider's
//! own names for things: those stay in `stripe` and `lemonsqueezy`.

use orgplane_core::OrgId;
use orgplane_core::subscription::{Payment, Provider, SubscriptionSnapshot};
use time::OffsetDateTime;

/// A verified webhook, normalized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedWebhook {
    pub provider: Provider,
    /// The idempotency key of the delivery: Stripe's `evt_…` id; for Lemon
    /// Squeezy, which has no event id, `"{event_name}:{data.id}:{updated_at}"`.
    pub event_id: String,
    /// The provider's event name (`customer.subscription.updated`, `subscription_updated`).
    pub event_type: String,
    /// The provider's own time of the event (Stripe `event.created`, Lemon
    /// Squeezy `data.attributes.updated_at`): events are applied in this order.
    pub occurred_at: OffsetDateTime,
    pub event: BillingEvent,
}

/// What a webhook means to orgplane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BillingEvent {
    /// The provider's view of one subscription at `observed_at`.
    Subscription(SubscriptionSnapshot),
    /// A checkout finished. The subscription's own event carries its state;
    /// this one ties the buyer's org to the provider's customer and subscription.
    CheckoutCompleted {
        provider: Provider,
        org_id: Option<OrgId>,
        customer_id: Option<String>,
        subscription_id: Option<String>,
        session_id: String,
    },
    /// A subscription's invoice was paid, or a payment of it failed (with
    /// what an app shows about it). A trigger to re-fetch the subscription.
    Invoice { provider: Provider, subscription_id: String, payment: Payment },
    /// An event orgplane does not act on, kept for the record.
    Ignored { kind: String },
}
