//! Webhook intake: verify, turn the event into an [`EventEffect`] (the
//! subscription re-fetched from the provider when its API is configured),
//! store and apply it in one store call.
//!
//! - A delivery whose signature does not verify stores nothing.
//! - A verified body that does not parse is kept as `failed`, never lost.
//! - A replay is answered as a duplicate before the provider is asked
//!   anything; the store's unique key decides for real.

use orgplane_billing::{BillingEvent, ParseError, ParsedWebhook, lemonsqueezy, stripe};
use orgplane_core::Timestamp;
use orgplane_core::subscription::{Payment, Provider, SubscriptionSnapshot};
use orgplane_store::{EventEffect, Ingest, NewProviderEvent, ProcessedEvent};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{Billing, BillingError, BillingResult};

/// What a webhook delivery became.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct WebhookReceipt {
    pub received: bool,
    /// Seen before: nothing was done again.
    pub duplicate: bool,
    /// `applied`, `ignored`, `unmatched` or `failed` (a duplicate: absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<&'static str>,
    /// What applying did (`created`, `updated`, `unchanged`, `stale`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<&'static str>,
    /// The stored event (`pev_…`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
}

impl WebhookReceipt {
    pub(super) fn from_ingest(ingest: &Ingest) -> Self {
        match ingest {
            Ingest::Duplicate => {
                WebhookReceipt { received: true, duplicate: true, status: None, outcome: None, event: None }
            }
            Ingest::Processed(p) => WebhookReceipt {
                received: true,
                duplicate: false,
                status: Some(p.status.as_str()),
                outcome: p.outcome.map(|o| o.as_str()),
                event: Some(p.id.to_string()),
            },
        }
    }
}

impl Billing {
    /// A Stripe delivery: verified (any configured secret, within the
    /// tolerance), stored, applied.
    pub async fn receive_stripe(&self, body: &[u8], signature: Option<&str>) -> BillingResult<WebhookReceipt> {
        // The replay window is a security check: it runs on the machine's
        // clock, like token expiry, whatever time the service decides at.
        stripe::signature::verify(
            body,
            signature.unwrap_or(""),
            &self.0.stripe_secrets,
            self.0.stripe_tolerance,
            Timestamp::now_utc().unix_timestamp(),
        )
        .map_err(|e| BillingError::InvalidSignature(e.to_string()))?;
        self.receive(Provider::Stripe, body, stripe::parse_event(body), None, self.now()).await
    }

    /// A Lemon Squeezy delivery: verified with the signing secret, stored, applied.
    pub async fn receive_lemonsqueezy(
        &self,
        body: &[u8],
        signature: Option<&str>,
        event_name: Option<&str>,
    ) -> BillingResult<WebhookReceipt> {
        let now = self.now();
        let secret = self.0.lemonsqueezy_secret.as_deref().unwrap_or("");
        lemonsqueezy::signature::verify(body, signature.unwrap_or(""), secret)
            .map_err(|e| BillingError::InvalidSignature(e.to_string()))?;
        self.receive(Provider::Lemonsqueezy, body, lemonsqueezy::parse_event(body, event_name), event_name, now).await
    }

    pub(super) async fn receive(
        &self,
        provider: Provider,
        body: &[u8],
        parsed: Result<ParsedWebhook, ParseError>,
        event_name: Option<&str>,
        now: Timestamp,
    ) -> BillingResult<WebhookReceipt> {
        let ingest = match parsed {
            Ok(parsed) => {
                // Asking the provider costs a round trip: not for a replay.
                if self.would_call_provider(&parsed)
                    && self.0.store.provider_event_seen(provider, &parsed.event_id).await?
                {
                    return Ok(WebhookReceipt::from_ingest(&Ingest::Duplicate));
                }
                let effect = self.effect_of(&parsed, now).await;
                let event = NewProviderEvent {
                    provider,
                    event_id: &parsed.event_id,
                    event_type: &parsed.event_type,
                    occurred_at: Some(parsed.occurred_at),
                    payload: body,
                };
                self.0.store.ingest_provider_event(&event, &effect, now).await?
            }
            Err(e) => {
                // Verified, but not what orgplane reads: kept as failed, never lost.
                tracing::error!(provider = provider.as_str(), error = %e, "a verified webhook does not parse; stored as failed");
                let event_id = format!("unparsed:{}", hex::encode(Sha256::digest(body)));
                let event = NewProviderEvent {
                    provider,
                    event_id: &event_id,
                    event_type: event_name.unwrap_or("unknown"),
                    occurred_at: None,
                    payload: body,
                };
                self.0.store.ingest_provider_event(&event, &EventEffect::failed(provider, e.to_string()), now).await?
            }
        };
        if let Ingest::Processed(p) = &ingest {
            log_processed(provider, p);
        }
        Ok(WebhookReceipt::from_ingest(&ingest))
    }

    fn would_call_provider(&self, parsed: &ParsedWebhook) -> bool {
        let provider = match &parsed.event {
            BillingEvent::Subscription(s) => s.provider,
            BillingEvent::CheckoutCompleted { provider, subscription_id: Some(_), .. } => *provider,
            BillingEvent::Invoice { provider, .. } => *provider,
            _ => return false,
        };
        self.refetch_api(provider).is_some()
    }

    /// What a parsed event asks of orgplane. With the provider's API
    /// configured, the subscription is re-fetched and its present state
    /// applied (observed now); if that fails, the event's own copy is
    /// applied, which the store orders by the provider's timestamp.
    pub(super) async fn effect_of(&self, parsed: &ParsedWebhook, now: Timestamp) -> EventEffect {
        match &parsed.event {
            BillingEvent::Subscription(snapshot) => {
                let snapshot = self.refetched(snapshot.clone()).await;
                EventEffect {
                    provider: snapshot.provider,
                    org_hint: None,
                    customer_id: snapshot.provider_customer_id.clone(),
                    subscription_id: Some(snapshot.provider_subscription_id.clone()),
                    snapshot: Some(self.input(snapshot, now)),
                    failure: None,
                    payment: None,
                }
            }
            BillingEvent::CheckoutCompleted { provider, org_id, customer_id, subscription_id, session_id } => {
                let mut snapshot = None;
                if let (Some(api), Some(id)) = (self.refetch_api(*provider), subscription_id) {
                    match api.fetch(id).await {
                        Ok(mut fetched) => {
                            fetched.org_id = fetched.org_id.or(*org_id);
                            snapshot = Some(self.input(fetched, now));
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, session = %session_id, "could not fetch a completed checkout's subscription; its own event will bring it")
                        }
                    }
                }
                EventEffect {
                    provider: *provider,
                    org_hint: *org_id,
                    customer_id: customer_id.clone(),
                    subscription_id: subscription_id.clone(),
                    snapshot,
                    failure: None,
                    payment: None,
                }
            }
            // A failed payment is reported to the org's log whichever way the
            // subscription's state arrives (see the store's `payments`).
            BillingEvent::Invoice { provider, subscription_id, payment } => match self.refetch_api(*provider) {
                // Without the API an invoice says nothing to apply: the
                // subscription's own `updated` event carries the status change.
                None => EventEffect {
                    subscription_id: Some(subscription_id.clone()),
                    payment: Some(payment.clone()),
                    ..EventEffect::nothing(*provider)
                },
                Some(api) => match api.fetch(subscription_id).await {
                    Ok(fetched) => EventEffect {
                        provider: *provider,
                        org_hint: None,
                        customer_id: fetched.provider_customer_id.clone(),
                        subscription_id: Some(subscription_id.clone()),
                        snapshot: Some(self.input(fetched, now)),
                        failure: None,
                        payment: Some(payment.clone()),
                    },
                    // Kept as failed and retried: its failure is reported when it applies.
                    Err(e) => EventEffect {
                        subscription_id: Some(subscription_id.clone()),
                        payment: Some(payment.clone()),
                        ..EventEffect::failed(
                            *provider,
                            format!(
                                "an invoice was {} but subscription {subscription_id} could not be re-fetched: {e}",
                                match payment {
                                    Payment::Paid => "paid",
                                    Payment::Failed(_) => "not paid",
                                }
                            ),
                        )
                    },
                },
            },
            BillingEvent::Ignored { .. } => EventEffect::nothing(parsed.provider),
        }
    }

    async fn refetched(&self, snapshot: SubscriptionSnapshot) -> SubscriptionSnapshot {
        let Some(api) = self.refetch_api(snapshot.provider) else { return snapshot };
        match api.fetch(&snapshot.provider_subscription_id).await {
            Ok(mut fetched) => {
                // Lemon Squeezy's API does not return checkout custom data.
                fetched.org_id = fetched.org_id.or(snapshot.org_id);
                fetched.provider_customer_id = fetched.provider_customer_id.or(snapshot.provider_customer_id);
                fetched
            }
            Err(e) => {
                tracing::warn!(error = %e, subscription = %snapshot.provider_subscription_id,
                    "re-fetching a webhook's subscription failed; applying the event's own copy, ordered by its timestamp");
                snapshot
            }
        }
    }
}

pub(super) fn log_processed(provider: Provider, p: &ProcessedEvent) {
    use orgplane_store::ProviderEventStatus as S;
    match p.status {
        S::Applied | S::Ignored => {
            tracing::debug!(provider = provider.as_str(), event = %p.id, status = p.status.as_str(),
            outcome = p.outcome.map(|o| o.as_str()), "provider event processed")
        }
        S::Unmatched => tracing::warn!(provider = provider.as_str(), event = %p.id,
            "provider event matches no organization; kept as unmatched and retried"),
        S::Failed => tracing::error!(provider = provider.as_str(), event = %p.id, error = p.error.as_deref(),
            "provider event could not be applied; kept as failed and retried"),
    }
}
