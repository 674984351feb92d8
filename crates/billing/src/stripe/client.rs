//! A hand-written client for the few Stripe REST calls orgplane makes:
//! form-encoded requests, `Authorization: Bearer`, `Idempotency-Key` on the
//! POSTs that create something.
//!
//! This module must never log the API key or a request body, and never
//! retry on its own: the caller decides (with [`ProviderError::is_retryable`]).

use std::fmt;
use std::time::Duration;

use orgplane_core::subscription::{Provider, SubscriptionSnapshot};
use reqwest::{Method, RequestBuilder, Url};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use time::OffsetDateTime;

use super::object::{CheckoutSession as StripeSession, InvoicePreview, PortalSession, Subscription};
use crate::change::{ChangePreview, PlanChange};
use crate::config::StripeConfig;
use crate::error::ProviderError;
use crate::provider::{CatalogItemStatus, CheckoutRequest, CheckoutSession};
use crate::transport;

/// A page of Stripe events, each as raw JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventsPage {
    pub events: Vec<Vec<u8>>,
    pub has_more: bool,
    /// The last event's id, for `starting_after` on the next page.
    pub last_id: Option<String>,
}

#[derive(Deserialize)]
struct EventList {
    #[serde(default)]
    data: Vec<serde_json::Value>,
    #[serde(default)]
    has_more: bool,
}

/// Stripe's REST API at a configurable base URL.
#[derive(Clone)]
pub struct StripeClient {
    http: reqwest::Client,
    api_key: String,
    base: Url,
}

impl fmt::Debug for StripeClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StripeClient").field("base", &self.base.as_str()).finish_non_exhaustive()
    }
}

impl StripeClient {
    pub fn new(api_key: impl Into<String>, api_base: &str, timeout: Duration) -> Result<Self, ProviderError> {
        Ok(StripeClient {
            http: transport::http_client(Provider::Stripe, timeout)?,
            api_key: api_key.into(),
            base: transport::parse_base(Provider::Stripe, api_base)?,
        })
    }

    /// From `[billing.stripe]`; refuses a table without `api_key`.
    pub fn from_config(config: &StripeConfig) -> Result<Self, ProviderError> {
        let key = config.api_key.as_deref().ok_or_else(|| {
            ProviderError::Config("billing.stripe.api_key: is not set; Stripe calls need a secret key (`sk_…`)".into())
        })?;
        StripeClient::new(key, &config.api_base, config.timeout())
    }

    /// `POST /v1/checkout/sessions` in subscription mode. The org id goes in
    /// both `client_reference_id` (on the session) and the subscription's
    /// metadata, so that every later subscription event names the org.
    pub async fn create_checkout_session(&self, request: &CheckoutRequest) -> Result<CheckoutSession, ProviderError> {
        let org_id = request.org_id.to_string();
        let mut form: Vec<(&str, String)> = vec![
            ("mode", "subscription".to_owned()),
            ("line_items[0][price]", request.price_id.clone()),
            ("line_items[0][quantity]", request.quantity.to_string()),
            ("success_url", request.success_url.clone()),
            ("cancel_url", request.cancel_url.clone()),
            ("client_reference_id", org_id.clone()),
            ("subscription_data[metadata][org_id]", org_id),
        ];
        // Stripe refuses both at once; an existing customer wins.
        if let Some(customer) = &request.customer_id {
            form.push(("customer", customer.clone()));
        } else if let Some(email) = &request.customer_email {
            form.push(("customer_email", email.clone()));
        }
        if let Some(days) = request.trial_period_days {
            form.push(("subscription_data[trial_period_days]", days.to_string()));
            if request.pause_trial_without_payment_method {
                form.push(("subscription_data[trial_settings][end_behavior][missing_payment_method]", "pause".into()));
            }
        }
        let call = self
            .request(Method::POST, &["v1", "checkout", "sessions"])
            .header("Idempotency-Key", &request.idempotency_key)
            .form(&form);
        let session: StripeSession = self.send(call).await?;
        let url = session.url.ok_or_else(|| ProviderError::InvalidResponse {
            provider: Provider::Stripe,
            detail: format!("checkout session {} has no `url`", session.id),
        })?;
        Ok(CheckoutSession { id: session.id, url })
    }

    /// `GET /v1/subscriptions/{id}`. The answer is the present state, so it
    /// is observed now.
    pub async fn get_subscription(&self, subscription_id: &str) -> Result<SubscriptionSnapshot, ProviderError> {
        let call = self.request(Method::GET, &["v1", "subscriptions", subscription_id]);
        self.snapshot(call).await
    }

    /// `POST /v1/subscriptions/{id}` with `cancel_at_period_end=true|false`.
    pub async fn cancel_at_period_end(
        &self,
        subscription_id: &str,
        cancel: bool,
        idempotency_key: &str,
    ) -> Result<SubscriptionSnapshot, ProviderError> {
        let call = self
            .request(Method::POST, &["v1", "subscriptions", subscription_id])
            .header("Idempotency-Key", idempotency_key)
            .form(&[("cancel_at_period_end", if cancel { "true" } else { "false" })]);
        self.snapshot(call).await
    }

    /// `DELETE /v1/subscriptions/{id}`: ends the subscription now.
    pub async fn cancel_now(&self, subscription_id: &str) -> Result<SubscriptionSnapshot, ProviderError> {
        let call = self.request(Method::DELETE, &["v1", "subscriptions", subscription_id]);
        self.snapshot(call).await
    }

    /// `POST /v1/subscription_items/{si}` with the new seat count, prorated.
    pub async fn update_quantity(
        &self,
        item_id: &str,
        quantity: u32,
        idempotency_key: &str,
    ) -> Result<(), ProviderError> {
        let call = self
            .request(Method::POST, &["v1", "subscription_items", item_id])
            .header("Idempotency-Key", idempotency_key)
            .form(&[("quantity", quantity.to_string().as_str()), ("proration_behavior", "create_prorations")]);
        let _item: IgnoredObject = self.send(call).await?;
        Ok(())
    }

    /// `POST /v1/subscriptions/{id}` moving the existing item to another
    /// price: `items[0][id]` keeps the one item (no second item appears),
    /// `items[0][price]` swaps the price, `items[0][quantity]` when the
    /// seats change too, and `proration_behavior`.
    pub async fn change_plan(&self, change: &PlanChange) -> Result<SubscriptionSnapshot, ProviderError> {
        let mut form: Vec<(&str, String)> =
            vec![("items[0][id]", change.item_id.clone()), ("items[0][price]", change.price_id.clone())];
        if let Some(quantity) = change.quantity {
            form.push(("items[0][quantity]", quantity.to_string()));
        }
        form.push(("proration_behavior", change.proration.as_str().to_owned()));
        let call = self
            .request(Method::POST, &["v1", "subscriptions", &change.subscription_id])
            .header("Idempotency-Key", &change.idempotency_key)
            .form(&form);
        self.snapshot(call).await
    }

    /// `POST /v1/invoices/create_preview` for the same change: the invoice
    /// the change would produce, not created (it shows in no invoice list).
    pub async fn preview_change(&self, change: &PlanChange) -> Result<ChangePreview, ProviderError> {
        let mut form: Vec<(&str, String)> = vec![
            ("subscription", change.subscription_id.clone()),
            ("subscription_details[items][0][id]", change.item_id.clone()),
            ("subscription_details[items][0][price]", change.price_id.clone()),
        ];
        if let Some(quantity) = change.quantity {
            form.push(("subscription_details[items][0][quantity]", quantity.to_string()));
        }
        form.push(("subscription_details[proration_behavior]", change.proration.as_str().to_owned()));
        let call = self
            .request(Method::POST, &["v1", "invoices", "create_preview"])
            .header("Idempotency-Key", &change.idempotency_key)
            .form(&form);
        let preview: InvoicePreview = self.send(call).await?;
        preview
            .into_preview()
            .map_err(|e| ProviderError::InvalidResponse { provider: Provider::Stripe, detail: e.to_string() })
    }

    /// `POST /v1/subscriptions/{id}/resume` with `billing_cycle_anchor=now`:
    /// a paused subscription (a trial that ended without a payment method)
    /// starts a new period now.
    pub async fn resume(
        &self,
        subscription_id: &str,
        idempotency_key: &str,
    ) -> Result<SubscriptionSnapshot, ProviderError> {
        let call = self
            .request(Method::POST, &["v1", "subscriptions", subscription_id, "resume"])
            .header("Idempotency-Key", idempotency_key)
            .form(&[("billing_cycle_anchor", "now")]);
        self.snapshot(call).await
    }

    /// `POST /v1/customers/{id}` with `email=…` (empty clears it): the
    /// customer's e-mail follows the org's billing e-mail. A deleted
    /// customer is `ProviderError::Api` with status 404.
    pub async fn update_customer_email(
        &self,
        customer_id: &str,
        email: &str,
        idempotency_key: &str,
    ) -> Result<(), ProviderError> {
        let call = self
            .request(Method::POST, &["v1", "customers", customer_id])
            .header("Idempotency-Key", idempotency_key)
            .form(&[("email", email)]);
        let _customer: IgnoredObject = self.send(call).await?;
        Ok(())
    }

    /// `POST /v1/billing_portal/sessions`; returns the portal URL.
    pub async fn create_portal_session(
        &self,
        customer_id: &str,
        return_url: &str,
        idempotency_key: &str,
    ) -> Result<String, ProviderError> {
        let call = self
            .request(Method::POST, &["v1", "billing_portal", "sessions"])
            .header("Idempotency-Key", idempotency_key)
            .form(&[("customer", customer_id), ("return_url", return_url)]);
        let session: PortalSession = self.send(call).await?;
        Ok(session.url)
    }

    /// `GET /v1/events?delivery_success=false`: one page (newest first) of the
    /// events created since `created_gte` that Stripe could not deliver to a
    /// webhook endpoint. Each comes back as its raw JSON, to be parsed and
    /// stored exactly like a delivery.
    pub async fn undelivered_events(
        &self,
        created_gte: i64,
        starting_after: Option<&str>,
    ) -> Result<EventsPage, ProviderError> {
        let mut query = vec![
            ("delivery_success", "false".to_owned()),
            ("limit", "100".to_owned()),
            ("created[gte]", created_gte.to_string()),
        ];
        if let Some(after) = starting_after {
            query.push(("starting_after", after.to_owned()));
        }
        let call = self.request(Method::GET, &["v1", "events"]).query(&query);
        let list: EventList = self.send(call).await?;
        let last_id = list.data.last().and_then(|e| e.get("id")).and_then(|v| v.as_str()).map(str::to_owned);
        let events = list.data.iter().map(|e| serde_json::to_vec(e).unwrap_or_default()).collect();
        Ok(EventsPage { events, has_more: list.has_more, last_id })
    }

    /// `GET /v1/prices?limit=1`: a read-only call that only a valid secret
    /// (or restricted, with prices readable) key may make.
    pub async fn check_key(&self) -> Result<(), ProviderError> {
        let call = self.request(Method::GET, &["v1", "prices"]).query(&[("limit", "1")]);
        self.send::<serde_json::Value>(call).await.map(drop)
    }

    /// `GET /v1/prices/{id}`: whether the price exists, is active and recurring.
    pub async fn price_status(&self, price_id: &str) -> Result<CatalogItemStatus, ProviderError> {
        #[derive(Deserialize)]
        struct Price {
            active: bool,
            #[serde(default)]
            recurring: Option<serde_json::Value>,
        }
        let call = self.request(Method::GET, &["v1", "prices", price_id]);
        match self.send::<Price>(call).await {
            Ok(Price { active: false, .. }) => {
                Ok(CatalogItemStatus::Unusable("is archived (inactive): checkouts for it fail".into()))
            }
            Ok(Price { recurring: None | Some(serde_json::Value::Null), .. }) => {
                Ok(CatalogItemStatus::Unusable("is a one-time price: subscriptions need a recurring one".into()))
            }
            Ok(_) => Ok(CatalogItemStatus::Active),
            Err(ProviderError::Api { status: 404, .. }) => Ok(CatalogItemStatus::Unknown),
            Err(e) => Err(e),
        }
    }

    pub(super) fn request(&self, method: Method, segments: &[&str]) -> RequestBuilder {
        self.http.request(method, transport::endpoint(&self.base, segments)).bearer_auth(&self.api_key)
    }

    pub(super) async fn send<T: DeserializeOwned>(&self, call: RequestBuilder) -> Result<T, ProviderError> {
        transport::send(Provider::Stripe, call, read_error).await
    }

    async fn snapshot(&self, call: RequestBuilder) -> Result<SubscriptionSnapshot, ProviderError> {
        let subscription: Subscription = self.send(call).await?;
        subscription
            .into_snapshot(OffsetDateTime::now_utc())
            .map_err(|e| ProviderError::InvalidResponse { provider: Provider::Stripe, detail: e.to_string() })
    }
}

/// Any JSON object: the answer is not read, only checked to be one.
#[derive(Deserialize)]
struct IgnoredObject {}

/// `{"error": {"message", "type", "code"}}`.
fn read_error(body: &[u8]) -> Option<(Option<String>, String)> {
    #[derive(Deserialize)]
    struct Body {
        error: Detail,
    }
    #[derive(Deserialize)]
    struct Detail {
        message: Option<String>,
        #[serde(rename = "type")]
        kind: Option<String>,
        code: Option<String>,
    }
    let detail = serde_json::from_slice::<Body>(body).ok()?.error;
    let message = detail.message.or_else(|| detail.kind.clone())?;
    Some((detail.code.or(detail.kind), message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stripe_error_bodies_give_code_and_message() {
        let body = br#"{"error":{"message":"No such price: 'price_x'","type":"invalid_request_error","code":"resource_missing","param":"line_items[0][price]"}}"#;
        assert_eq!(read_error(body), Some((Some("resource_missing".into()), "No such price: 'price_x'".into())));
        let body = br#"{"error":{"message":"Too many requests","type":"rate_limit_error"}}"#;
        assert_eq!(read_error(body), Some((Some("rate_limit_error".into()), "Too many requests".into())));
        assert_eq!(read_error(b"<html>bad gateway</html>"), None);
    }

    #[test]
    fn debug_output_hides_the_api_key() {
        let client = StripeClient::new("sk_test_hidden", "http://127.0.0.1:9", Duration::from_secs(1)).expect("builds");
        assert!(!format!("{client:?}").contains("sk_test_hidden"));
    }
}
