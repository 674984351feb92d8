//! `GET /subscription-invoices?filter[subscription_id]=…`: a subscription's
//! invoices at Lemon Squeezy.
//!
//! Lemon Squeezy pages by page number and states no order, so the client
//! reads the subscription's pages (at most [`MAX_PAGES`] of 100: a monthly
//! subscription's first 83 years), orders them newest first itself, and cuts
//! the page the caller asked for after its `starting_after` invoice id.

use reqwest::Method;
use serde::Deserialize;

use super::client::LemonSqueezyClient;
use super::object::{IdValue, timestamp};
use crate::error::ProviderError;
use crate::invoice::{Invoice, InvoicePage};
use orgplane_core::subscription::Provider;

/// Pages of 100 read per list.
const MAX_PAGES: u32 = 10;

#[derive(Deserialize)]
struct List {
    #[serde(default)]
    data: Vec<Item>,
    meta: Option<Meta>,
}

#[derive(Deserialize)]
struct Item {
    id: IdValue,
    attributes: Attributes,
}

#[derive(Deserialize)]
struct Attributes {
    status: String,
    total: i64,
    currency: String,
    created_at: String,
    urls: Option<Urls>,
}

#[derive(Deserialize)]
struct Urls {
    invoice_url: Option<String>,
}

#[derive(Deserialize)]
struct Meta {
    page: Option<PageMeta>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PageMeta {
    current_page: u32,
    last_page: u32,
}

impl LemonSqueezyClient {
    /// One page of the subscription's invoices, newest first (see the module doc).
    pub async fn list_invoices(
        &self,
        subscription_id: &str,
        limit: u32,
        starting_after: Option<&str>,
    ) -> Result<InvoicePage, ProviderError> {
        let mut all = Vec::new();
        for number in 1..=MAX_PAGES {
            let query = [
                ("filter[subscription_id]", subscription_id.to_owned()),
                ("page[number]", number.to_string()),
                ("page[size]", "100".to_owned()),
            ];
            let call = self.request(Method::GET, &["subscription-invoices"]).query(&query);
            let list: List = self.send(call).await?;
            let last = list.meta.and_then(|m| m.page).is_none_or(|p| p.current_page >= p.last_page);
            let empty = list.data.is_empty();
            for item in list.data {
                all.push(item.into_invoice()?);
            }
            if last || empty {
                break;
            }
        }
        all.sort_by(|a, b| b.created_at.cmp(&a.created_at).then_with(|| b.id.cmp(&a.id)));
        let start = match starting_after {
            None => 0,
            Some(cursor) => {
                all.iter().position(|i| i.id == cursor).map(|at| at + 1).ok_or_else(|| {
                    ProviderError::InvalidRequest(format!(
                        "starting_after: this subscription has no invoice `{}` at Lemon Squeezy (pass the id of the last invoice of the previous page)",
                        cursor.chars().take(80).collect::<String>()
                    ))
                })?
            }
        };
        let mut invoices: Vec<Invoice> = all.into_iter().skip(start).collect();
        let has_more = invoices.len() > limit as usize;
        invoices.truncate(limit as usize);
        Ok(InvoicePage { invoices, has_more })
    }
}

impl Item {
    fn into_invoice(self) -> Result<Invoice, ProviderError> {
        let created_at = timestamp("data[].attributes.created_at", &self.attributes.created_at)
            .map_err(|e| ProviderError::InvalidResponse { provider: Provider::Lemonsqueezy, detail: e.to_string() })?;
        Ok(Invoice {
            id: self.id.into_string(),
            number: None,
            status: self.attributes.status,
            amount: self.attributes.total,
            currency: self.attributes.currency.to_ascii_lowercase(),
            period_start: None,
            period_end: None,
            hosted_url: self.attributes.urls.and_then(|u| u.invoice_url),
            pdf_url: None,
            created_at,
        })
    }
}
