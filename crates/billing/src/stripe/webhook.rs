//! Stripe webhook events → [`ParsedWebhook`].
//!
//! This module owns which Stripe event types orgplane acts on and what each
//! one means. It must never verify signatures (see [`super::signature`]; the
//! caller verifies before parsing) and never call Stripe.

use orgplane_core::subscription::{Payment, Provider};
use serde::Deserialize;
use serde::de::{DeserializeOwned, IgnoredAny};

use super::object::{self, CheckoutSession, Invoice, Subscription};
use crate::error::ParseError;
use crate::event::{BillingEvent, ParsedWebhook};

/// Event types that carry a subscription object.
const SUBSCRIPTION_EVENTS: [&str; 6] = [
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "customer.subscription.paused",
    "customer.subscription.resumed",
    "customer.subscription.trial_will_end",
];

#[derive(Deserialize)]
struct Envelope<T> {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    created: i64,
    data: EnvelopeData<T>,
}

#[derive(Deserialize)]
struct EnvelopeData<T> {
    object: T,
}

/// Normalizes a verified Stripe event body (`{"id":"evt_…","type":…,"created":…,"data":{"object":…}}`).
///
/// Subscription snapshots are observed at `event.created`, Stripe's own time
/// of the change, so that a late `updated` never overwrites a newer state.
pub fn parse_event(body: &[u8]) -> Result<ParsedWebhook, ParseError> {
    // First the envelope alone, to learn the type; then the object as that type.
    let envelope: Envelope<IgnoredAny> = decode(body)?;
    let occurred_at = object::timestamp("created", envelope.created)?;
    let kind = envelope.kind;
    let event = match kind.as_str() {
        k if SUBSCRIPTION_EVENTS.contains(&k) => {
            let subscription: Subscription = decode::<Envelope<Subscription>>(body)?.data.object;
            BillingEvent::Subscription(subscription.into_snapshot(occurred_at)?)
        }
        "checkout.session.completed" => {
            let session: CheckoutSession = decode::<Envelope<CheckoutSession>>(body)?.data.object;
            // `client_reference_id` is set by orgplane's checkout; metadata is the fallback
            // for sessions made elsewhere (payment links, the dashboard).
            let reference =
                session.client_reference_id.as_deref().or(session.metadata.as_ref().and_then(|m| m.org_id.as_deref()));
            BillingEvent::CheckoutCompleted {
                provider: Provider::Stripe,
                org_id: object::org_id(reference),
                customer_id: session.customer.map(object::Expandable::into_id),
                subscription_id: session.subscription.map(object::Expandable::into_id),
                session_id: session.id,
            }
        }
        "invoice.paid" | "invoice.payment_failed" => {
            let mut invoice: Invoice = decode::<Envelope<Invoice>>(body)?.data.object;
            match invoice.subscription_id() {
                Some(subscription_id) => {
                    let payment = match kind.as_str() {
                        "invoice.paid" => Payment::Paid,
                        _ => Payment::Failed(invoice.into_failure(occurred_at)?),
                    };
                    BillingEvent::Invoice { provider: Provider::Stripe, subscription_id, payment }
                }
                // A one-off invoice: nothing of orgplane's depends on it.
                None => BillingEvent::Ignored { kind: kind.clone() },
            }
        }
        _ => BillingEvent::Ignored { kind: kind.clone() },
    };
    Ok(ParsedWebhook { provider: Provider::Stripe, event_id: envelope.id, event_type: kind, occurred_at, event })
}

fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, ParseError> {
    serde_json::from_slice(body).map_err(|source| ParseError::Json { provider: Provider::Stripe, source })
}
