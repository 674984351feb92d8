//! The org's invoices, read from its subscription's provider on each call
//! (the sandbox's from its own table): never stored here, so a list always
//! agrees with the provider's dashboard.
//!
//! An org without a subscription has no invoices (an empty list, not an
//! error); an ended subscription still lists the invoices it had.

use orgplane_billing::{Invoice, InvoicePage};
use orgplane_core::OrgId;
use orgplane_store::PageRequest;

use super::provider::ProviderApi;
use super::{Billing, BillingResult};

impl Billing {
    /// One page of the org's invoices, newest first.
    pub async fn invoices(&self, org: OrgId, page: &PageRequest) -> BillingResult<InvoicePage> {
        let Some(sub) = self.0.store.subscription(org).await? else {
            return Ok(InvoicePage { invoices: Vec::new(), has_more: false });
        };
        match self.require_api(sub.provider)? {
            ProviderApi::Remote(provider) => {
                Ok(provider.invoices(&sub.provider_subscription_id, page.limit, page.starting_after.as_deref()).await?)
            }
            ProviderApi::Sandbox(_) => {
                let stored = self.0.store.sandbox_invoices(&sub.provider_subscription_id, page).await?;
                let invoices = stored
                    .data
                    .into_iter()
                    .map(|i| Invoice {
                        id: i.id,
                        number: Some(i.number),
                        status: "paid".to_owned(),
                        amount: i.amount,
                        currency: i.currency,
                        period_start: Some(i.period_start),
                        period_end: Some(i.period_end),
                        hosted_url: None,
                        pdf_url: None,
                        created_at: i.created_at,
                    })
                    .collect();
                Ok(InvoicePage { invoices, has_more: stored.has_more })
            }
        }
    }
}
