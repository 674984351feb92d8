//! A hand-written client for the few Lemon Squeezy REST calls orgplane makes
//! (JSON:API: `Accept` and `Content-Type: application/vnd.api+json`,
//! `Authorization: Bearer`).
//!
//! This module must never log the API key or a request body, and never
//! retry on its own: the caller decides (with [`ProviderError::is_retryable`]).

use std::fmt;
use std::time::Duration;

use orgplane_core::subscription::{Provider, SubscriptionSnapshot};
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use reqwest::{Method, RequestBuilder, Url};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use time::OffsetDateTime;

use super::object::{CheckoutAttributes, Document, SubscriptionAttributes, VariantAttributes};
use crate::change::{ChangePreview, PlanChange, PreviewLine, Proration};
use crate::config::LemonSqueezyConfig;
use crate::error::ProviderError;
use crate::provider::{CatalogItemStatus, CheckoutRequest, CheckoutSession};
use crate::transport;

const JSON_API: &str = "application/vnd.api+json";

/// Lemon Squeezy's REST API at a configurable base URL (which includes `/v1`).
#[derive(Clone)]
pub struct LemonSqueezyClient {
    http: reqwest::Client,
    api_key: String,
    store_id: String,
    base: Url,
}

impl fmt::Debug for LemonSqueezyClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LemonSqueezyClient")
            .field("store_id", &self.store_id)
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

impl LemonSqueezyClient {
    pub fn new(
        api_key: impl Into<String>,
        store_id: impl Into<String>,
        api_base: &str,
        timeout: Duration,
    ) -> Result<Self, ProviderError> {
        Ok(LemonSqueezyClient {
            http: transport::http_client(Provider::Lemonsqueezy, timeout)?,
            api_key: api_key.into(),
            store_id: store_id.into(),
            base: transport::parse_base(Provider::Lemonsqueezy, api_base)?,
        })
    }

    /// From `[billing.lemonsqueezy]`; refuses a table without `api_key` or `store_id`.
    pub fn from_config(config: &LemonSqueezyConfig) -> Result<Self, ProviderError> {
        let key = config.api_key.as_deref().ok_or_else(|| {
            ProviderError::Config(
                "billing.lemonsqueezy.api_key: is not set; Lemon Squeezy calls need an API key".into(),
            )
        })?;
        let store = config.store_id.as_deref().ok_or_else(|| {
            ProviderError::Config(
                "billing.lemonsqueezy.store_id: is not set; checkouts are created in a store (its id is a number)"
                    .into(),
            )
        })?;
        LemonSqueezyClient::new(key, store, &config.api_base, config.timeout())
    }

    /// `POST /checkouts` for the variant in `price_id`. The org id travels in
    /// `checkout_data.custom.org_id` and comes back in every subscription
    /// webhook's `meta.custom_data`. `cancel_url`, `customer_id`,
    /// `trial_period_days` and the idempotency key have no Lemon Squeezy
    /// counterpart and are not sent.
    pub async fn create_checkout(&self, request: &CheckoutRequest) -> Result<CheckoutSession, ProviderError> {
        let variant = variant_number(&request.price_id)?;
        let mut checkout_data = json!({
            "custom": { "org_id": request.org_id.to_string() },
            "variant_quantities": [{ "variant_id": variant, "quantity": request.quantity }],
        });
        if let Some(email) = &request.customer_email {
            checkout_data["email"] = json!(email);
        }
        let body = json!({
            "data": {
                "type": "checkouts",
                "attributes": {
                    "checkout_data": checkout_data,
                    "product_options": { "redirect_url": request.success_url },
                },
                "relationships": {
                    "store": { "data": { "type": "stores", "id": self.store_id } },
                    "variant": { "data": { "type": "variants", "id": variant.to_string() } },
                },
            }
        });
        let call = self.request(Method::POST, &["checkouts"]).body(body.to_string());
        let document: Document<CheckoutAttributes> = self.send(call).await?;
        let id = document.data.id.into_string();
        let url = document.data.attributes.url.ok_or_else(|| ProviderError::InvalidResponse {
            provider: Provider::Lemonsqueezy,
            detail: format!("checkout {id} has no `data.attributes.url`"),
        })?;
        Ok(CheckoutSession { id, url })
    }

    /// `GET /subscriptions/{id}`, observed now. The API does not return the
    /// checkout's custom data, so the snapshot has no `org_id`.
    pub async fn get_subscription(&self, subscription_id: &str) -> Result<SubscriptionSnapshot, ProviderError> {
        let call = self.request(Method::GET, &["subscriptions", subscription_id]);
        self.snapshot(call).await
    }

    /// `PATCH /subscriptions/{id}` with `cancelled`: `true` cancels at the end
    /// of the period, `false` resumes a cancelled subscription before `ends_at`.
    pub async fn set_cancelled(
        &self,
        subscription_id: &str,
        cancelled: bool,
    ) -> Result<SubscriptionSnapshot, ProviderError> {
        let body = json!({
            "data": { "type": "subscriptions", "id": subscription_id, "attributes": { "cancelled": cancelled } }
        });
        let call = self.request(Method::PATCH, &["subscriptions", subscription_id]).body(body.to_string());
        self.snapshot(call).await
    }

    /// `DELETE /subscriptions/{id}`. Lemon Squeezy has no immediate cancel:
    /// the subscription becomes `cancelled` and stays paid until `ends_at`.
    pub async fn cancel_now(&self, subscription_id: &str) -> Result<SubscriptionSnapshot, ProviderError> {
        let call = self.request(Method::DELETE, &["subscriptions", subscription_id]);
        self.snapshot(call).await
    }

    /// `PATCH /subscription-items/{id}` with the new `quantity` (prorated by default).
    pub async fn update_quantity(&self, item_id: &str, quantity: u32) -> Result<(), ProviderError> {
        let body = json!({
            "data": { "type": "subscription-items", "id": item_id, "attributes": { "quantity": quantity } }
        });
        let call = self.request(Method::PATCH, &["subscription-items", item_id]).body(body.to_string());
        let _item: Document<serde::de::IgnoredAny> = self.send(call).await?;
        Ok(())
    }

    /// `PATCH /subscriptions/{id}` with the new `variant_id` (a number) and
    /// the proration flags (`none` → `disable_prorations`, `always_invoice`
    /// → `invoice_immediately`; the default sends neither), then `PATCH
    /// /subscription-items/{id}` when the seats change too, then the
    /// subscription as it is now.
    pub async fn change_plan(&self, change: &PlanChange) -> Result<SubscriptionSnapshot, ProviderError> {
        let variant = variant_number(&change.price_id)?;
        let mut attributes = json!({ "variant_id": variant });
        match change.proration {
            Proration::CreateProrations => {}
            Proration::None => attributes["disable_prorations"] = json!(true),
            Proration::AlwaysInvoice => attributes["invoice_immediately"] = json!(true),
        }
        let body = json!({
            "data": { "type": "subscriptions", "id": change.subscription_id, "attributes": attributes }
        });
        let call = self.request(Method::PATCH, &["subscriptions", &change.subscription_id]).body(body.to_string());
        let snapshot = self.snapshot(call).await?;
        match change.quantity {
            Some(quantity) if i64::from(quantity) != snapshot.quantity => {
                self.update_quantity(&change.item_id, quantity).await?;
                self.get_subscription(&change.subscription_id).await
            }
            _ => Ok(snapshot),
        }
    }

    /// Lemon Squeezy previews no invoice and prorates when the change is
    /// made: what can be known is the variant's price per period
    /// (`GET /variants/{id}`), times the seats.
    pub async fn preview_change(&self, change: &PlanChange) -> Result<ChangePreview, ProviderError> {
        let variant = variant_number(&change.price_id)?.to_string();
        let call = self.request(Method::GET, &["variants", &variant]);
        let document: Document<VariantAttributes> = self.send(call).await?;
        let attributes = document.data.attributes;
        let quantity = i64::from(change.quantity.unwrap_or(1));
        let every = match attributes.interval_count {
            Some(n) if n > 1 => format!("every {n} {}s", attributes.interval.as_deref().unwrap_or("period")),
            _ => format!("per {}", attributes.interval.as_deref().unwrap_or("period")),
        };
        let name = attributes.name.unwrap_or_else(|| format!("variant {variant}"));
        Ok(ChangePreview {
            amount_due: None,
            currency: None,
            lines: vec![PreviewLine {
                description: Some(format!("{quantity} × {name} {every}")),
                amount: attributes.price.saturating_mul(quantity),
                quantity: Some(quantity),
                proration: false,
                period_start: None,
                period_end: None,
            }],
            next_payment_at: None,
            proration_by_provider: true,
        })
    }

    /// `PATCH /subscriptions/{id}` with `pause: null`: unpauses.
    pub async fn unpause(&self, subscription_id: &str) -> Result<SubscriptionSnapshot, ProviderError> {
        let body = json!({
            "data": { "type": "subscriptions", "id": subscription_id, "attributes": { "pause": null } }
        });
        let call = self.request(Method::PATCH, &["subscriptions", subscription_id]).body(body.to_string());
        self.snapshot(call).await
    }

    /// The subscription's pre-signed `urls.customer_portal` (valid 24 h).
    pub async fn portal_url(&self, subscription_id: &str) -> Result<String, ProviderError> {
        self.get_subscription(subscription_id).await?.portal_url.ok_or_else(|| ProviderError::InvalidResponse {
            provider: Provider::Lemonsqueezy,
            detail: format!("subscription {subscription_id} has no `urls.customer_portal`"),
        })
    }

    /// `GET /users/me`, then `GET /stores/{store_id}`: the key is valid and
    /// can see the configured store. Read-only.
    pub async fn check_key_and_store(&self) -> Result<(), ProviderError> {
        self.send::<serde_json::Value>(self.request(Method::GET, &["users", "me"])).await?;
        match self.send::<serde_json::Value>(self.request(Method::GET, &["stores", &self.store_id])).await {
            Err(ProviderError::Api { status: 404, .. }) => Err(ProviderError::InvalidRequest(format!(
                "Lemon Squeezy knows no store {} for this API key; check billing.lemonsqueezy.store_id (Settings → Stores)",
                self.store_id
            ))),
            other => other.map(drop),
        }
    }

    /// `GET /variants/{id}`: whether the variant exists, is published (or
    /// the product's only, pending, variant) and is a subscription.
    pub async fn variant_status(&self, variant_id: &str) -> Result<CatalogItemStatus, ProviderError> {
        #[derive(Deserialize)]
        struct Variant {
            status: String,
            #[serde(default)]
            is_subscription: Option<bool>,
        }
        let call = self.request(Method::GET, &["variants", variant_id]);
        match self.send::<Document<Variant>>(call).await {
            Ok(document) => {
                let variant = document.data.attributes;
                Ok(match (variant.status.as_str(), variant.is_subscription) {
                    (_, Some(false)) => CatalogItemStatus::Unusable(
                        "is not a subscription: enable \"Subscription\" on the variant in Lemon Squeezy".into(),
                    ),
                    ("published" | "pending", _) => CatalogItemStatus::Active,
                    (status, _) => CatalogItemStatus::Unusable(format!("is `{status}`, not published")),
                })
            }
            Err(ProviderError::Api { status: 404, .. }) => Ok(CatalogItemStatus::Unknown),
            Err(e) => Err(e),
        }
    }

    /// The configured store's id.
    pub fn store_id(&self) -> &str {
        &self.store_id
    }

    pub(super) fn request(&self, method: Method, segments: &[&str]) -> RequestBuilder {
        self.http
            .request(method, transport::endpoint(&self.base, segments))
            .bearer_auth(&self.api_key)
            .header(ACCEPT, JSON_API)
            .header(CONTENT_TYPE, JSON_API)
    }

    pub(super) async fn send<T: DeserializeOwned>(&self, call: RequestBuilder) -> Result<T, ProviderError> {
        transport::send(Provider::Lemonsqueezy, call, read_error).await
    }

    async fn snapshot(&self, call: RequestBuilder) -> Result<SubscriptionSnapshot, ProviderError> {
        let document: Document<SubscriptionAttributes> = self.send(call).await?;
        let id = document.data.id.into_string();
        document
            .data
            .attributes
            .into_snapshot(id, None, OffsetDateTime::now_utc())
            .map_err(|e| ProviderError::InvalidResponse { provider: Provider::Lemonsqueezy, detail: e.to_string() })
    }
}

/// A variant id as Lemon Squeezy's API takes it: a number.
fn variant_number(price_id: &str) -> Result<u64, ProviderError> {
    price_id.parse().map_err(|_| {
        ProviderError::InvalidRequest(format!(
            "Lemon Squeezy variant ids are numbers; `{price_id}` is not one (check the plan catalog's variant id)"
        ))
    })
}

/// JSON:API `{"errors": [{"status", "title", "detail"}]}`: the details, joined.
fn read_error(body: &[u8]) -> Option<(Option<String>, String)> {
    #[derive(Deserialize)]
    struct Body {
        errors: Vec<Detail>,
    }
    #[derive(Deserialize)]
    struct Detail {
        title: Option<String>,
        detail: Option<String>,
    }
    let errors = serde_json::from_slice::<Body>(body).ok()?.errors;
    let code = errors.first().and_then(|e| e.title.clone());
    let messages: Vec<String> = errors.into_iter().filter_map(|e| e.detail.or(e.title)).collect();
    if messages.is_empty() { None } else { Some((code, messages.join("; "))) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_api_error_bodies_give_title_and_details() {
        let body = br#"{"jsonapi":{"version":"1.0"},"errors":[{"detail":"The variant field is required.","status":"422","title":"Unprocessable Entity","source":{"pointer":"/data/relationships/variant"}}]}"#;
        assert_eq!(
            read_error(body),
            Some((Some("Unprocessable Entity".into()), "The variant field is required.".into()))
        );
        assert_eq!(read_error(br#"{"errors":[]}"#), None);
    }

    #[test]
    fn debug_output_hides_the_api_key() {
        let client = LemonSqueezyClient::new("ls_hidden_key", "1", "http://127.0.0.1:9/v1", Duration::from_secs(1))
            .expect("builds");
        assert!(!format!("{client:?}").contains("ls_hidden_key"));
    }
}
