//! The few fields of Lemon Squeezy's JSON:API objects orgplane reads, and the
//! mapping of a Lemon Squeezy subscription onto [`SubscriptionSnapshot`].
//!
//! Fields are optional unless orgplane can't act without them; unknown ones
//! are ignored. Ids arrive as strings or numbers depending on the field, so
//! both are accepted. This module must never grow into a model of Lemon
//! Squeezy's API: read a field here only when orgplane uses it.

use orgplane_core::OrgId;
use orgplane_core::subscription::{PaymentFailure, Provider, SubscriptionSnapshot, SubscriptionStatus};
use serde::Deserialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::error::ParseError;

/// An id written as a JSON number (`"variant_id": 42`) or string (`"id": "42"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum IdValue {
    Number(serde_json::Number),
    Text(String),
}

impl IdValue {
    pub(crate) fn into_string(self) -> String {
        match self {
            IdValue::Number(n) => n.to_string(),
            IdValue::Text(s) => s,
        }
    }
}

/// `{"data": {...}}`, a JSON:API document holding one resource.
#[derive(Debug, Deserialize)]
pub(crate) struct Document<A> {
    pub data: Resource<A>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Resource<A> {
    #[serde(rename = "type")]
    pub kind: String,
    pub id: IdValue,
    pub attributes: A,
}

/// A variant's price (`GET /variants/{id}`): cents per `interval_count` × `interval`.
#[derive(Debug, Deserialize)]
pub(crate) struct VariantAttributes {
    pub name: Option<String>,
    pub price: i64,
    pub interval: Option<String>,
    pub interval_count: Option<i64>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct SubscriptionAttributes {
    pub customer_id: Option<IdValue>,
    /// The customer's e-mail (read by discovery only).
    pub user_email: Option<String>,
    pub variant_id: Option<IdValue>,
    pub status: String,
    pub cancelled: Option<bool>,
    pub trial_ends_at: Option<String>,
    pub renews_at: Option<String>,
    pub ends_at: Option<String>,
    pub first_subscription_item: Option<FirstItem>,
    pub urls: Option<Urls>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct FirstItem {
    pub id: IdValue,
    pub quantity: Option<i64>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Urls {
    pub customer_portal: Option<String>,
}

/// A `subscription-invoices` object.
#[derive(Debug, Deserialize)]
pub(crate) struct InvoiceAttributes {
    pub subscription_id: Option<IdValue>,
    /// In cents.
    pub total: Option<i64>,
    /// Upper-case ISO 4217 (`USD`).
    pub currency: Option<String>,
    pub urls: Option<InvoiceUrls>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct InvoiceUrls {
    pub invoice_url: Option<String>,
}

impl InvoiceAttributes {
    /// What a failed payment of this invoice tells the customer. Lemon
    /// Squeezy says neither how many attempts were made nor when the next is.
    pub(crate) fn failure(&self, invoice_id: String, failed_at: OffsetDateTime) -> PaymentFailure {
        PaymentFailure {
            invoice_id,
            amount_due: self.total,
            currency: self.currency.as_ref().map(|c| c.to_ascii_lowercase()),
            hosted_invoice_url: self.urls.as_ref().and_then(|u| u.invoice_url.clone()),
            attempt_count: None,
            next_payment_attempt: None,
            failed_at,
        }
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct CheckoutAttributes {
    pub url: Option<String>,
}

/// Lemon Squeezy's status → orgplane's, and whether the subscription is in
/// its post-cancellation grace period.
///
/// `cancelled` is a grace period: the customer paid until `ends_at` and can
/// still resume, so it stays entitled (active, cancelling at period end).
/// `expired` is the end.
pub(crate) fn status(text: &str) -> Option<(SubscriptionStatus, bool)> {
    Some(match text {
        "on_trial" => (SubscriptionStatus::Trialing, false),
        "active" => (SubscriptionStatus::Active, false),
        "paused" => (SubscriptionStatus::Paused, false),
        "past_due" => (SubscriptionStatus::PastDue, false),
        "unpaid" => (SubscriptionStatus::Unpaid, false),
        "cancelled" => (SubscriptionStatus::Active, true),
        "expired" => (SubscriptionStatus::Canceled, false),
        _ => return None,
    })
}

/// Lemon Squeezy's ISO 8601 times (`2021-08-11T13:47:28.000000Z`).
pub(crate) fn timestamp(field: &'static str, text: &str) -> Result<OffsetDateTime, ParseError> {
    OffsetDateTime::parse(text, &Rfc3339).map_err(|_| ParseError::InvalidField {
        provider: Provider::Lemonsqueezy,
        field,
        value: text.chars().take(64).collect(),
        expected: "an RFC 3339 time",
    })
}

fn optional_timestamp(field: &'static str, text: Option<&str>) -> Result<Option<OffsetDateTime>, ParseError> {
    text.map(|t| timestamp(field, t)).transpose()
}

/// An org id from checkout custom data; anything else is no org rather than an error.
pub(crate) fn org_id(text: Option<&str>) -> Option<OrgId> {
    let text = text?;
    match text.parse() {
        Ok(id) => Some(id),
        Err(e) => {
            tracing::warn!(error = %e, "Lemon Squeezy custom data names an org id that does not parse; ignoring it");
            None
        }
    }
}

impl SubscriptionAttributes {
    pub(crate) fn into_snapshot(
        self,
        subscription_id: String,
        org_id: Option<OrgId>,
        observed_at: OffsetDateTime,
    ) -> Result<SubscriptionSnapshot, ParseError> {
        let (status, in_grace) = status(&self.status).ok_or_else(|| ParseError::InvalidField {
            provider: Provider::Lemonsqueezy,
            field: "data.attributes.status",
            value: self.status.clone(),
            expected: "a known Lemon Squeezy subscription status",
        })?;
        let ended = in_grace || self.status == "expired";
        // Once cancelled, the paid period ends at `ends_at`; `renews_at` no longer applies.
        let ends_at = self.ends_at.as_deref().map(|t| ("data.attributes.ends_at", t));
        let renews_at = self.renews_at.as_deref().map(|t| ("data.attributes.renews_at", t));
        let period_end = if ended { ends_at.or(renews_at) } else { renews_at };
        let cancel_at_period_end = match status {
            SubscriptionStatus::Canceled => false,
            _ => in_grace || self.cancelled.unwrap_or(false),
        };
        let (item_id, quantity) = match self.first_subscription_item {
            Some(item) => (Some(item.id.into_string()), item.quantity.unwrap_or(1)),
            None => (None, 1),
        };
        Ok(SubscriptionSnapshot {
            provider: Provider::Lemonsqueezy,
            provider_subscription_id: subscription_id,
            provider_customer_id: self.customer_id.map(IdValue::into_string),
            org_id,
            status,
            price_id: self.variant_id.map(IdValue::into_string),
            item_id,
            quantity,
            current_period_end: period_end.map(|(field, text)| timestamp(field, text)).transpose()?,
            cancel_at_period_end,
            trial_end: optional_timestamp("data.attributes.trial_ends_at", self.trial_ends_at.as_deref())?,
            observed_at,
            portal_url: self.urls.and_then(|u| u.customer_portal),
        })
    }
}
