//! The provider-neutral shapes of a plan change, its preview and a resume:
//! what the server asks ([`PlanChange`]) and what a provider previews
//! ([`ChangePreview`]).
//!
//! It holds no provider logic: each provider's client turns a
//! [`PlanChange`] into its own request (Stripe's `items[0]` and
//! `proration_behavior`, Lemon Squeezy's `variant_id` and proration flags).

use time::OffsetDateTime;

/// How the provider charges for the rest of the current period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Proration {
    /// Credit and charge the difference on the next invoice (the default).
    #[default]
    CreateProrations,
    /// No proration: the new price applies from the next period.
    None,
    /// Prorate and invoice the difference now.
    AlwaysInvoice,
}

impl Proration {
    pub const ALL: [Proration; 3] = [Proration::CreateProrations, Proration::None, Proration::AlwaysInvoice];

    /// Stripe's `proration_behavior` value, which is also orgplane's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Proration::CreateProrations => "create_prorations",
            Proration::None => "none",
            Proration::AlwaysInvoice => "always_invoice",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == text)
    }
}

/// A move of a subscription to another price (Stripe) or variant (Lemon
/// Squeezy), keeping its one item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanChange {
    pub subscription_id: String,
    /// The subscription's seat item (Stripe `si_…`, Lemon Squeezy
    /// subscription-item id): it is updated, so no second item appears.
    pub item_id: String,
    /// The target plan's price (Stripe) or variant (Lemon Squeezy) id.
    pub price_id: String,
    /// A new seat count, or the current one when `None`.
    pub quantity: Option<u32>,
    pub proration: Proration,
    /// Stripe's `Idempotency-Key` (Lemon Squeezy has none).
    pub idempotency_key: String,
}

/// One line of a previewed invoice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviewLine {
    pub description: Option<String>,
    /// In the currency's smallest unit (cents).
    pub amount: i64,
    pub quantity: Option<i64>,
    /// A credit or charge for the rest of the current period.
    pub proration: bool,
    pub period_start: Option<OffsetDateTime>,
    pub period_end: Option<OffsetDateTime>,
}

/// What a change would cost, as far as the provider says before it is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangePreview {
    /// The next invoice's total (Stripe's preview); `None` when the provider
    /// does not preview it (Lemon Squeezy computes proration itself).
    pub amount_due: Option<i64>,
    /// ISO 4217, lower case (`usd`); `None` when not known.
    pub currency: Option<String>,
    pub lines: Vec<PreviewLine>,
    /// When that invoice is charged, if the provider says.
    pub next_payment_at: Option<OffsetDateTime>,
    /// The provider computes proration when the change is made and does not
    /// preview it: `lines` then show the new price per period only.
    pub proration_by_provider: bool,
}
