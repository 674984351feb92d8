//! The few fields of Stripe's objects orgplane reads, and the mapping of a
//! Stripe subscription onto [`SubscriptionSnapshot`].
//!
//! Every field is optional unless orgplane can't act without it, and unknown
//! fields are ignored, so that a webhook endpoint pinned to another API
//! version still parses. This module must never grow into a model of
//! Stripe's API: read a field here only when orgplane uses it.

use orgplane_core::OrgId;
use orgplane_core::subscription::{PaymentFailure, Provider, SubscriptionSnapshot, SubscriptionStatus};
use serde::Deserialize;
use time::OffsetDateTime;

use crate::error::ParseError;

/// A field that is an id, or the object itself when the request expanded it.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum Expandable {
    Id(String),
    Object { id: String },
}

impl Expandable {
    pub(crate) fn into_id(self) -> String {
        match self {
            Expandable::Id(id) | Expandable::Object { id } => id,
        }
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct List<T> {
    #[serde(default = "Vec::new")]
    pub data: Vec<T>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct Metadata {
    pub org_id: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Subscription {
    pub id: String,
    pub status: String,
    pub customer: Option<Expandable>,
    pub metadata: Option<Metadata>,
    pub items: Option<List<SubscriptionItem>>,
    /// Only before API version 2025-03-31; later versions keep it on the items.
    pub current_period_end: Option<i64>,
    pub cancel_at_period_end: Option<bool>,
    pub cancel_at: Option<i64>,
    pub trial_end: Option<i64>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct SubscriptionItem {
    pub id: String,
    pub price: Option<Expandable>,
    pub quantity: Option<i64>,
    /// Since API version 2025-03-31.
    pub current_period_end: Option<i64>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct CheckoutSession {
    pub id: String,
    pub url: Option<String>,
    pub client_reference_id: Option<String>,
    pub customer: Option<Expandable>,
    pub subscription: Option<Expandable>,
    pub metadata: Option<Metadata>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Invoice {
    pub id: Option<String>,
    pub parent: Option<InvoiceParent>,
    /// Only before API version 2025-03-31.
    pub subscription: Option<Expandable>,
    pub amount_due: Option<i64>,
    pub currency: Option<String>,
    pub hosted_invoice_url: Option<String>,
    pub attempt_count: Option<i64>,
    pub next_payment_attempt: Option<i64>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct InvoiceParent {
    pub subscription_details: Option<SubscriptionDetails>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct SubscriptionDetails {
    pub subscription: Option<Expandable>,
}

impl Invoice {
    /// The invoice's subscription: `parent.subscription_details.subscription`
    /// since 2025-03-31, the top-level `subscription` before.
    pub(crate) fn subscription_id(&mut self) -> Option<String> {
        self.parent
            .take()
            .and_then(|p| p.subscription_details)
            .and_then(|d| d.subscription)
            .or(self.subscription.take())
            .map(Expandable::into_id)
    }

    /// What a failed attempt to collect this invoice tells the customer.
    pub(crate) fn into_failure(self, failed_at: OffsetDateTime) -> Result<PaymentFailure, ParseError> {
        Ok(PaymentFailure {
            invoice_id: self
                .id
                .ok_or(ParseError::MissingField { provider: Provider::Stripe, field: "data.object.id" })?,
            amount_due: self.amount_due,
            currency: self.currency,
            hosted_invoice_url: self.hosted_invoice_url,
            attempt_count: self.attempt_count,
            next_payment_attempt: self
                .next_payment_attempt
                .map(|t| timestamp("data.object.next_payment_attempt", t))
                .transpose()?,
            failed_at,
        })
    }
}

/// A previewed invoice (`POST /v1/invoices/create_preview`).
#[derive(Debug, Deserialize)]
pub(crate) struct InvoicePreview {
    pub amount_due: i64,
    pub currency: String,
    pub lines: Option<List<InvoiceLine>>,
    pub next_payment_attempt: Option<i64>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct InvoiceLine {
    pub amount: i64,
    pub description: Option<String>,
    pub quantity: Option<i64>,
    pub period: Option<LinePeriod>,
    pub parent: Option<LineParent>,
    /// Before API version 2025-03-31.
    pub proration: Option<bool>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct LinePeriod {
    pub start: Option<i64>,
    pub end: Option<i64>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct LineParent {
    pub subscription_item_details: Option<ItemDetails>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ItemDetails {
    pub proration: Option<bool>,
}

impl InvoicePreview {
    pub(crate) fn into_preview(self) -> Result<crate::change::ChangePreview, ParseError> {
        let mut lines = Vec::new();
        for line in self.lines.map(|l| l.data).unwrap_or_default() {
            let proration = line
                .parent
                .and_then(|p| p.subscription_item_details)
                .and_then(|d| d.proration)
                .or(line.proration)
                .unwrap_or(false);
            let (start, end) = line.period.map_or((None, None), |p| (p.start, p.end));
            lines.push(crate::change::PreviewLine {
                description: line.description,
                amount: line.amount,
                quantity: line.quantity,
                proration,
                period_start: optional_timestamp("lines.data.period.start", start)?,
                period_end: optional_timestamp("lines.data.period.end", end)?,
            });
        }
        Ok(crate::change::ChangePreview {
            amount_due: Some(self.amount_due),
            currency: Some(self.currency),
            lines,
            next_payment_at: optional_timestamp("next_payment_attempt", self.next_payment_attempt)?,
            proration_by_provider: false,
        })
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct PortalSession {
    pub url: String,
}

/// Stripe's statuses are orgplane's vocabulary, one for one.
pub(crate) fn status(text: &str) -> Option<SubscriptionStatus> {
    Some(match text {
        "incomplete" => SubscriptionStatus::Incomplete,
        "incomplete_expired" => SubscriptionStatus::IncompleteExpired,
        "trialing" => SubscriptionStatus::Trialing,
        "active" => SubscriptionStatus::Active,
        "past_due" => SubscriptionStatus::PastDue,
        "canceled" => SubscriptionStatus::Canceled,
        "unpaid" => SubscriptionStatus::Unpaid,
        "paused" => SubscriptionStatus::Paused,
        _ => return None,
    })
}

/// An org id from metadata or `client_reference_id`; anything else (another
/// app's reference, a typo) is no org rather than an error.
pub(crate) fn org_id(text: Option<&str>) -> Option<OrgId> {
    let text = text?;
    match text.parse() {
        Ok(id) => Some(id),
        Err(e) => {
            tracing::warn!(error = %e, "Stripe object names an org id that does not parse; ignoring it");
            None
        }
    }
}

pub(crate) fn timestamp(field: &'static str, unix: i64) -> Result<OffsetDateTime, ParseError> {
    OffsetDateTime::from_unix_timestamp(unix).map_err(|_| ParseError::InvalidField {
        provider: Provider::Stripe,
        field,
        value: unix.to_string(),
        expected: "a Unix timestamp",
    })
}

fn optional_timestamp(field: &'static str, unix: Option<i64>) -> Result<Option<OffsetDateTime>, ParseError> {
    unix.map(|t| timestamp(field, t)).transpose()
}

impl Subscription {
    /// The snapshot of this subscription as of `observed_at`.
    pub(crate) fn into_snapshot(self, observed_at: OffsetDateTime) -> Result<SubscriptionSnapshot, ParseError> {
        let status = status(&self.status).ok_or_else(|| ParseError::InvalidField {
            provider: Provider::Stripe,
            field: "status",
            value: self.status.clone(),
            expected: "a known Stripe subscription status",
        })?;
        // The seat item is the first one: orgplane's checkouts create exactly one.
        let item = self.items.and_then(|list| list.data.into_iter().next());
        let (item_id, price_id, quantity, item_period_end) = match item {
            Some(i) => (Some(i.id), i.price.map(Expandable::into_id), i.quantity.unwrap_or(1), i.current_period_end),
            None => (None, None, 1, None),
        };
        let period_end = item_period_end.or(self.current_period_end);
        Ok(SubscriptionSnapshot {
            provider: Provider::Stripe,
            provider_subscription_id: self.id,
            provider_customer_id: self.customer.map(Expandable::into_id),
            org_id: org_id(self.metadata.as_ref().and_then(|m| m.org_id.as_deref())),
            status,
            price_id,
            item_id,
            quantity,
            current_period_end: optional_timestamp("current_period_end", period_end)?,
            // A `cancel_at` date ends the subscription just as period-end cancellation does.
            cancel_at_period_end: self.cancel_at_period_end.unwrap_or(false) || self.cancel_at.is_some(),
            trial_end: optional_timestamp("trial_end", self.trial_end)?,
            observed_at,
            portal_url: None,
        })
    }
}
