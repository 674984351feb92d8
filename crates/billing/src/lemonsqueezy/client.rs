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

use super::object::{CheckoutAttributes, Document, SubscriptionAttributes};
use crate::config::LemonSqueezyConfig;
use crate::error::ProviderError;
use crate::provider::{CheckoutRequest, CheckoutSession};
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
        let variant: u64 = request.price_id.parse().map_err(|_| {
            ProviderError::InvalidRequest(format!(
                "Lemon Squeezy variant ids are numbers; `{}` is not one (check the plan catalog's variant id)",
                request.price_id
            ))
        })?;
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

    /// The subscription's pre-signed `urls.customer_portal` (valid 24 h).
    pub async fn portal_url(&self, subscription_id: &str) -> Result<String, ProviderError> {
        self.get_subscription(subscription_id).await?.portal_url.ok_or_else(|| ProviderError::InvalidResponse {
            provider: Provider::Lemonsqueezy,
            detail: format!("subscription {subscription_id} has no `urls.customer_portal`"),
        })
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
