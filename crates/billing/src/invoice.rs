//! A subscription's invoices as its provider lists them, in one
//! provider-neutral shape.
//!
//! - Nothing here is stored: every list is read from the provider, so it
//!   always agrees with the provider's dashboard.
//! - Amounts are in the currency's smallest unit (cents), currencies in
//!   lowercase ISO 4217, as Stripe writes them.
//! - A page is newest first; `starting_after` names the last invoice of the
//!   previous page, and an invoice the list does not hold is refused
//!   ([`ProviderError::InvalidRequest`]) rather than answered as a page.

use time::OffsetDateTime;

use crate::error::ProviderError;
use crate::provider::PaymentProvider;

/// One invoice of a subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invoice {
    /// The provider's invoice id (Stripe `in_…`; a Lemon Squeezy number).
    pub id: String,
    /// The number printed on the invoice (Stripe only; Lemon Squeezy has none).
    pub number: Option<String>,
    /// The provider's status as it writes it (Stripe `draft|open|paid|uncollectible|void`;
    /// Lemon Squeezy `pending|paid|void|refunded|partial_refund`).
    pub status: String,
    /// What the invoice asks for (Stripe `amount_due`, Lemon Squeezy `total`).
    pub amount: i64,
    pub currency: String,
    /// The period billed (Stripe only: Lemon Squeezy's invoices carry none).
    pub period_start: Option<OffsetDateTime>,
    pub period_end: Option<OffsetDateTime>,
    /// The invoice's page at the provider (Stripe `hosted_invoice_url`,
    /// Lemon Squeezy `urls.invoice_url`).
    pub hosted_url: Option<String>,
    /// The PDF (Stripe only).
    pub pdf_url: Option<String>,
    pub created_at: OffsetDateTime,
}

/// One page of invoices, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoicePage {
    pub invoices: Vec<Invoice>,
    pub has_more: bool,
}

impl PaymentProvider {
    /// Up to `limit` (1 to 100) invoices of the subscription, newest first,
    /// after the invoice `starting_after`.
    pub async fn invoices(
        &self,
        subscription_id: &str,
        limit: u32,
        starting_after: Option<&str>,
    ) -> Result<InvoicePage, ProviderError> {
        let limit = limit.clamp(1, 100);
        match self {
            PaymentProvider::Stripe(client) => client.list_invoices(subscription_id, limit, starting_after).await,
            PaymentProvider::LemonSqueezy(client) => client.list_invoices(subscription_id, limit, starting_after).await,
        }
    }
}
