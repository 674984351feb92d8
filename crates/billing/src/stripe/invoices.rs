//! `GET /v1/invoices?subscription=…`: a subscription's invoices at Stripe,
//! newest first, paged by Stripe's own `starting_after` cursor.

use orgplane_core::subscription::Provider;
use reqwest::Method;
use serde::Deserialize;

use super::client::StripeClient;
use super::object::timestamp;
use crate::error::ProviderError;
use crate::invoice::{Invoice, InvoicePage};

#[derive(Deserialize)]
struct InvoiceList {
    #[serde(default)]
    data: Vec<StripeInvoice>,
    #[serde(default)]
    has_more: bool,
}

#[derive(Deserialize)]
struct StripeInvoice {
    id: String,
    number: Option<String>,
    status: Option<String>,
    amount_due: i64,
    currency: String,
    period_start: Option<i64>,
    period_end: Option<i64>,
    hosted_invoice_url: Option<String>,
    invoice_pdf: Option<String>,
    created: i64,
}

impl StripeInvoice {
    fn into_invoice(self) -> Result<Invoice, ProviderError> {
        let invalid = |e: crate::error::ParseError| ProviderError::InvalidResponse {
            provider: Provider::Stripe,
            detail: e.to_string(),
        };
        let at = |field, unix: Option<i64>| unix.map(|t| timestamp(field, t)).transpose();
        Ok(Invoice {
            number: self.number,
            // Stripe leaves `status` null only on invoices deleted as drafts.
            status: self.status.unwrap_or_else(|| "deleted".to_owned()),
            amount: self.amount_due,
            currency: self.currency.to_ascii_lowercase(),
            period_start: at("period_start", self.period_start).map_err(invalid)?,
            period_end: at("period_end", self.period_end).map_err(invalid)?,
            hosted_url: self.hosted_invoice_url,
            pdf_url: self.invoice_pdf,
            created_at: timestamp("created", self.created).map_err(invalid)?,
            id: self.id,
        })
    }
}

impl StripeClient {
    /// One page of the subscription's invoices. A `starting_after` Stripe
    /// does not know (`resource_missing`) is the caller's bad cursor.
    pub async fn list_invoices(
        &self,
        subscription_id: &str,
        limit: u32,
        starting_after: Option<&str>,
    ) -> Result<InvoicePage, ProviderError> {
        let mut query = vec![("subscription", subscription_id.to_owned()), ("limit", limit.to_string())];
        if let Some(after) = starting_after {
            query.push(("starting_after", after.to_owned()));
        }
        let call = self.request(Method::GET, &["v1", "invoices"]).query(&query);
        let list: InvoiceList = match self.send(call).await {
            Err(ProviderError::Api { code: Some(code), .. })
                if code == "resource_missing" && starting_after.is_some() =>
            {
                return Err(ProviderError::InvalidRequest(format!(
                    "starting_after: Stripe has no invoice `{}` (pass the id of the last invoice of the previous page)",
                    starting_after.unwrap_or_default().chars().take(80).collect::<String>()
                )));
            }
            other => other?,
        };
        let invoices = list.data.into_iter().map(StripeInvoice::into_invoice).collect::<Result<_, _>>()?;
        Ok(InvoicePage { invoices, has_more: list.has_more })
    }
}
