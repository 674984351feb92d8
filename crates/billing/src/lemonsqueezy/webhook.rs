//! Lemon Squeezy webhook events → [`ParsedWebhook`].
//!
//! This module owns which Lemon Squeezy events orgplane acts on, what each
//! one means, and the dedupe key of an event (Lemon Squeezy has no event id).
//! It must never verify signatures (see [`super::signature`]; the caller
//! verifies first) and never call Lemon Squeezy.

use orgplane_core::subscription::{Payment, Provider};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::object::{self, InvoiceAttributes, Resource, SubscriptionAttributes};
use crate::error::ParseError;
use crate::event::{BillingEvent, ParsedWebhook};

#[derive(Deserialize)]
struct Webhook<A> {
    meta: Option<Meta>,
    data: Resource<A>,
}

#[derive(Default, Deserialize)]
struct Meta {
    event_name: Option<String>,
    custom_data: Option<CustomData>,
}

/// Checkout custom data comes back with values as strings; anything else is ignored.
#[derive(Default, Deserialize)]
struct CustomData {
    org_id: Option<serde_json::Value>,
}

/// What every object carries: the time of its last change.
#[derive(Deserialize)]
struct Common {
    updated_at: Option<String>,
}

/// Normalizes a verified Lemon Squeezy webhook body.
///
/// The event name is read from the signed body (`meta.event_name`);
/// `x_event_name` (the unsigned `X-Event-Name` header) is only a fallback.
/// The dedupe key is `"{event_name}:{data.id}:{updated_at}"`, and the event
/// happened at `data.attributes.updated_at`.
pub fn parse_event(body: &[u8], x_event_name: Option<&str>) -> Result<ParsedWebhook, ParseError> {
    let webhook: Webhook<Common> = decode(body)?;
    let meta = webhook.meta.unwrap_or_default();
    let event_name = match (meta.event_name, x_event_name) {
        (Some(signed), header) => {
            if header.is_some_and(|h| h != signed) {
                tracing::warn!(meta = %signed, header = ?header, "X-Event-Name disagrees with meta.event_name; using the signed body");
            }
            signed
        }
        (None, Some(header)) => header.to_owned(),
        (None, None) => return Err(missing("meta.event_name")),
    };
    let data_id = webhook.data.id.into_string();
    let updated_at = webhook.data.attributes.updated_at.ok_or_else(|| missing("data.attributes.updated_at"))?;
    let occurred_at = object::timestamp("data.attributes.updated_at", &updated_at)?;
    let event_id = format!("{event_name}:{data_id}:{updated_at}");

    let event = match (webhook.data.kind.as_str(), event_name.as_str()) {
        ("subscriptions", name) if name.starts_with("subscription_") => {
            let org_id =
                meta.custom_data.and_then(|c| c.org_id).and_then(|v| v.as_str().and_then(|s| object::org_id(Some(s))));
            let subscription: Webhook<SubscriptionAttributes> = decode(body)?;
            BillingEvent::Subscription(subscription.data.attributes.into_snapshot(data_id, org_id, occurred_at)?)
        }
        (
            "subscription-invoices",
            name @ ("subscription_payment_success" | "subscription_payment_recovered" | "subscription_payment_failed"),
        ) => {
            let invoice: Webhook<InvoiceAttributes> = decode(body)?;
            let attributes = invoice.data.attributes;
            let payment = match name {
                "subscription_payment_failed" => Payment::Failed(attributes.failure(data_id.clone(), occurred_at)),
                _ => Payment::Paid,
            };
            let subscription_id =
                attributes.subscription_id.ok_or_else(|| missing("data.attributes.subscription_id"))?.into_string();
            BillingEvent::Invoice { provider: Provider::Lemonsqueezy, subscription_id, payment }
        }
        // Orders, refunds, license keys…: recorded, not acted on.
        _ => BillingEvent::Ignored { kind: event_name.clone() },
    };
    Ok(ParsedWebhook { provider: Provider::Lemonsqueezy, event_id, event_type: event_name, occurred_at, event })
}

fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, ParseError> {
    serde_json::from_slice(body).map_err(|source| ParseError::Json { provider: Provider::Lemonsqueezy, source })
}

fn missing(field: &'static str) -> ParseError {
    ParseError::MissingField { provider: Provider::Lemonsqueezy, field }
}
