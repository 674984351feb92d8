//! Subscriptions as orgplane normalizes them across payment providers.
//!
//! Each provider's vocabulary maps onto [`SubscriptionStatus`]; the billing
//! crate does the mapping, the store keeps the result, entitlement
//! resolution reads it. Nothing here knows a provider's JSON.

use serde::{Deserialize, Serialize};

use crate::{OrgId, Timestamp};

/// Which payment provider a subscription or event belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Stripe,
    Lemonsqueezy,
    Sandbox,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Stripe => "stripe",
            Provider::Lemonsqueezy => "lemonsqueezy",
            Provider::Sandbox => "sandbox",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "stripe" => Some(Provider::Stripe),
            "lemonsqueezy" => Some(Provider::Lemonsqueezy),
            "sandbox" => Some(Provider::Sandbox),
            _ => None,
        }
    }
}

/// The normalized subscription status (Stripe's vocabulary, which is the
/// larger one; Lemon Squeezy's maps onto it in the billing crate).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionStatus {
    Incomplete,
    IncompleteExpired,
    Trialing,
    Active,
    PastDue,
    Canceled,
    Unpaid,
    Paused,
}

impl SubscriptionStatus {
    pub const ALL: [SubscriptionStatus; 8] = [
        SubscriptionStatus::Incomplete,
        SubscriptionStatus::IncompleteExpired,
        SubscriptionStatus::Trialing,
        SubscriptionStatus::Active,
        SubscriptionStatus::PastDue,
        SubscriptionStatus::Canceled,
        SubscriptionStatus::Unpaid,
        SubscriptionStatus::Paused,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SubscriptionStatus::Incomplete => "incomplete",
            SubscriptionStatus::IncompleteExpired => "incomplete_expired",
            SubscriptionStatus::Trialing => "trialing",
            SubscriptionStatus::Active => "active",
            SubscriptionStatus::PastDue => "past_due",
            SubscriptionStatus::Canceled => "canceled",
            SubscriptionStatus::Unpaid => "unpaid",
            SubscriptionStatus::Paused => "paused",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        SubscriptionStatus::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// A subscription that has ended for good: a new checkout may start.
    pub fn is_terminal(self) -> bool {
        matches!(self, SubscriptionStatus::Canceled | SubscriptionStatus::IncompleteExpired)
    }

    /// Live = not ended. An org holds at most one live subscription.
    pub fn is_live(self) -> bool {
        !self.is_terminal()
    }
}

/// The provider's view of one subscription at one moment, normalized.
/// This is what a webhook or a re-fetch turns into, and what the store
/// applies (older snapshots never overwrite newer ones).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionSnapshot {
    pub provider: Provider,
    /// The provider's subscription id (`sub_…` at Stripe, a number at Lemon Squeezy).
    pub provider_subscription_id: String,
    pub provider_customer_id: Option<String>,
    /// The org named in the provider's metadata, if any.
    pub org_id: Option<OrgId>,
    pub status: SubscriptionStatus,
    /// The price (Stripe) or variant (Lemon Squeezy) id that maps to a plan.
    pub price_id: Option<String>,
    /// The provider's id of the item whose quantity is the seat count.
    pub item_id: Option<String>,
    pub quantity: i64,
    #[serde(with = "time::serde::rfc3339::option")]
    pub current_period_end: Option<Timestamp>,
    pub cancel_at_period_end: bool,
    #[serde(with = "time::serde::rfc3339::option")]
    pub trial_end: Option<Timestamp>,
    /// The provider's own time of this state: events are applied in this order.
    #[serde(with = "time::serde::rfc3339")]
    pub observed_at: Timestamp,
    /// A customer-portal URL when the provider hands one out with the object
    /// (Lemon Squeezy's pre-signed `urls.customer_portal`).
    pub portal_url: Option<String>,
}
