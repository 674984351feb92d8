//! `GET /subscriptions?filter[store_id]=…`: every subscription of the
//! configured store, a page at a time, for discovery (finding subscriptions
//! orgplane never heard of: made in the dashboard, by a payment link, or
//! whose webhooks were all lost).
//!
//! The list carries no checkout custom data, so a listed subscription has no
//! `org_id`: the caller ties it by its customer, or an operator does.

use orgplane_core::subscription::{Provider, SubscriptionSnapshot};
use reqwest::Method;
use serde::Deserialize;
use time::OffsetDateTime;

use super::client::LemonSqueezyClient;
use super::object::{IdValue, SubscriptionAttributes};
use crate::error::ProviderError;

/// Subscriptions per page (Lemon Squeezy's largest).
const PAGE_SIZE: u32 = 100;

/// One subscription of the store's list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedSubscription {
    /// Observed when the page was read; no `org_id`.
    pub snapshot: SubscriptionSnapshot,
    /// The customer's e-mail (`user_email`), for an operator to recognise.
    pub customer_email: Option<String>,
}

/// One page of the store's subscriptions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionList {
    pub subscriptions: Vec<ListedSubscription>,
    /// The number of the next page; `None` on the last one.
    pub next_page: Option<u32>,
}

#[derive(Deserialize)]
struct List {
    #[serde(default)]
    data: Vec<Item>,
    meta: Option<Meta>,
    links: Option<Links>,
}

#[derive(Deserialize)]
struct Item {
    id: IdValue,
    attributes: SubscriptionAttributes,
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

#[derive(Deserialize)]
struct Links {
    next: Option<String>,
}

impl LemonSqueezyClient {
    /// Page `number` (from 1) of the configured store's subscriptions. There
    /// is a next page when `meta.page` says this is not the last one, or
    /// (without `meta.page`) when `links.next` is set.
    pub async fn list_subscriptions(&self, number: u32) -> Result<SubscriptionList, ProviderError> {
        let query = [
            ("filter[store_id]", self.store_id().to_owned()),
            ("page[number]", number.to_string()),
            ("page[size]", PAGE_SIZE.to_string()),
        ];
        let call = self.request(Method::GET, &["subscriptions"]).query(&query);
        let list: List = self.send(call).await?;
        let more = match list.meta.and_then(|m| m.page) {
            Some(page) => page.current_page < page.last_page,
            None => list.links.and_then(|l| l.next).is_some_and(|next| !next.is_empty()),
        };
        let now = OffsetDateTime::now_utc();
        let empty = list.data.is_empty();
        let subscriptions = list
            .data
            .into_iter()
            .map(|item| {
                let customer_email = item.attributes.user_email.clone();
                let snapshot = item.attributes.into_snapshot(item.id.into_string(), None, now).map_err(|e| {
                    ProviderError::InvalidResponse { provider: Provider::Lemonsqueezy, detail: e.to_string() }
                })?;
                Ok(ListedSubscription { snapshot, customer_email })
            })
            .collect::<Result<Vec<_>, ProviderError>>()?;
        Ok(SubscriptionList { subscriptions, next_page: (more && !empty).then_some(number + 1) })
    }
}
