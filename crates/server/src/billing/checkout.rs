//! Opening a checkout at the checkout provider.
//!
//! - The plan must be for sale and have a price at the provider; the seats
//!   are checked, or default to the seats the org uses now.
//! - The checkout is recorded first (refused with `subscription_exists`
//!   while the org has a live subscription, under the org's lock); a provider
//!   that refuses it leaves it cancelled, so nothing half-open stays behind.
//! - The provider call carries an idempotency key derived from everything
//!   it sends (see [`provider_key`]).

use orgplane_billing::{CheckoutRequest, PaymentProvider};
use orgplane_core::org::Org;
use orgplane_core::subscription::{Provider, check_seats};
use orgplane_core::{DomainError, UserId};
use orgplane_store::{Actor, NewCheckout};
use serde::Serialize;

use super::provider::{ProviderApi, provider_key};
use super::{Billing, BillingError, BillingResult};

/// A checkout's hosted page.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CheckoutStarted {
    /// Where to send the buyer.
    pub url: String,
    /// `chk_…`
    pub checkout_id: String,
}

impl Billing {
    /// Opens a checkout for `plan` at the checkout provider. Refused with
    /// `subscription_exists` while the org has a live subscription.
    #[allow(clippy::too_many_arguments)]
    pub async fn checkout(
        &self,
        org: &Org,
        plan: &str,
        seats: Option<u32>,
        success_url: &str,
        cancel_url: &str,
        buyer: Option<(UserId, Option<&str>)>,
        actor: &Actor,
        caller_key: Option<&str>,
    ) -> BillingResult<CheckoutStarted> {
        let now = self.now();
        let provider = self.0.checkout_provider.ok_or_else(|| {
            BillingError::NotConfigured(
                "no payment provider is configured for checkouts; set [billing] provider and its API key".into(),
            )
        })?;
        let catalog = &self.0.catalog;
        let known =
            || catalog.plans().iter().filter(|p| !p.is_default()).map(|p| p.key()).collect::<Vec<_>>().join(", ");
        let chosen = catalog.plan(plan).ok_or_else(|| {
            DomainError::invalid("plan", format!("unknown plan `{plan}`; plans for sale: {}", known()))
        })?;
        if chosen.is_default() {
            return Err(DomainError::invalid(
                "plan",
                format!("`{plan}` is the default plan and needs no checkout; plans for sale: {}", known()),
            )
            .into());
        }
        let price = catalog.first_price(plan, provider).ok_or_else(|| {
            DomainError::invalid(
                "plan",
                format!(
                    "plan `{plan}` has no {} price; list one under [plans.{plan}] prices = {{ {} = [\"…\"] }}",
                    provider.as_str(),
                    provider.as_str()
                ),
            )
        })?;
        let quantity = match seats {
            Some(n) => check_seats(n)?,
            None => {
                // The seats the org uses now (members and pending invitations).
                let (_, usage) = self.0.store.entitlement_inputs(org.id, now).await?;
                u32::try_from(usage.seats().max(1)).unwrap_or(1)
            }
        };
        let record = self
            .0
            .store
            .begin_checkout(
                &NewCheckout {
                    org: org.id,
                    provider,
                    plan: plan.to_owned(),
                    price_id: price.to_owned(),
                    quantity: i64::from(quantity),
                    started_by: buyer.map(|(id, _)| id),
                    success_url: success_url.to_owned(),
                    cancel_url: cancel_url.to_owned(),
                },
                actor,
                now,
            )
            .await?;
        let opened = match (&self.0.sandbox, provider) {
            (Some(sandbox), Provider::Sandbox) => {
                Ok((record.id.clone(), format!("{}/sandbox/checkout/{}", sandbox.base_url, record.id)))
            }
            _ => {
                let customer_id = self.0.store.org_customer(org.id, provider).await?;
                let customer_email =
                    org.billing_email.clone().or_else(|| buyer.and_then(|(_, e)| e.map(str::to_owned)));
                // One trial per org, ever: the plan's own length, else the
                // configured one, claimed in the store for this checkout.
                let days = chosen.trial_days().or(self.0.trial_period_days).filter(|d| *d > 0);
                let trial_days = match (days, provider) {
                    (Some(days), Provider::Stripe) => {
                        self.0.store.claim_trial(org.id, &record.id, plan, days, now).await?.then_some(days)
                    }
                    _ => None,
                };
                let trial = trial_days.map(|d| d.to_string()).unwrap_or_default();
                let key = provider_key(
                    "checkout",
                    caller_key,
                    &[
                        &org.id.to_string(),
                        price,
                        &quantity.to_string(),
                        success_url,
                        cancel_url,
                        customer_id.as_deref().unwrap_or(""),
                        customer_email.as_deref().unwrap_or(""),
                        &trial,
                    ],
                );
                let request = CheckoutRequest {
                    org_id: org.id,
                    price_id: price.to_owned(),
                    quantity,
                    success_url: success_url.to_owned(),
                    cancel_url: cancel_url.to_owned(),
                    customer_id,
                    customer_email,
                    trial_period_days: trial_days,
                    pause_trial_without_payment_method: self.0.pause_trials_without_payment_method,
                    idempotency_key: key,
                };
                match self.api(provider) {
                    Some(ProviderApi::Remote(PaymentProvider::Stripe(client))) => client
                        .create_checkout_session(&request)
                        .await
                        .map(|s| (s.id, s.url))
                        .map_err(BillingError::from),
                    Some(ProviderApi::Remote(PaymentProvider::LemonSqueezy(client))) => {
                        client.create_checkout(&request).await.map(|s| (s.id, s.url)).map_err(BillingError::from)
                    }
                    _ => Err(self.require_api(provider).err().unwrap_or_else(|| {
                        BillingError::NotConfigured(format!("no {} API is configured", provider.as_str()))
                    })),
                }
            }
        };
        match opened {
            Ok((session, url)) => {
                self.0.store.checkout_opened(&record.id, &session, &url, now).await?;
                Ok(CheckoutStarted { url, checkout_id: record.id })
            }
            Err(e) => {
                self.0.store.cancel_checkout(&record.id, now).await?;
                self.0.store.release_trial(org.id, &record.id).await?;
                Err(e)
            }
        }
    }
}
