//! Changing the org's plan, previewing a change, and resuming a paused
//! subscription.
//!
//! - **The downgrade check comes first.** What the target plan would leave
//!   over its limits and which features it would take away are computed by
//!   the pure [`check_change`] over the org's usage now. A change that would
//!   leave seats over the limit is refused (`409 conflict`, naming members
//!   to remove) unless forced; resources over a limit are kept, as for any
//!   downgrade. Nothing is sent to the provider before the check passes.
//! - **The seat check holds until the change is applied.** The check
//!   above reads usage outside the org's lock, and the plan changes here
//!   only when the provider's answer is applied. So a change to a plan with
//!   a seat limit takes a plan hold in the store (the seats counted again
//!   under the org's lock, the one invitations and acceptances take): from
//!   then on they count `min(limit now, target's limit)`, until an answer
//!   with the target price is applied, the call fails, or [`PLAN_HOLD`]
//!   (one hour) passes. `force` holds nothing.
//! - **One state machine.** Local state changes only by applying the
//!   provider's answer through the store's one apply path: the answer to
//!   the call here, then the provider's webhooks (or a re-fetch). The
//!   sandbox changes at once and delivers its change as a provider event,
//!   like its payments.
//! - **One provider call per operation.** The change's `Idempotency-Key`
//!   derives from the org, the state it acts on and everything it sends
//!   ([`provider_key`]): concurrent or retried identical requests are one
//!   change at Stripe. A preview is never replayed (its numbers move with
//!   time), so it gets a fresh key.

use std::collections::BTreeMap;

use orgplane_billing::{ChangePreview, PaymentProvider, PlanChange, Proration};
use orgplane_core::plan_change::{ChangeCheck, check_change};
use orgplane_core::subscription::{PlanHoldRefused, Provider, SubscriptionStatus, check_seats};
use orgplane_core::{DomainError, OrgId};
use orgplane_store::{Actor, Ingest, NewProviderEvent, PageRequest, StoreError, StoredSubscription};

use super::provider::{ProviderApi, provider_key, state_version};
use super::sandbox::{SandboxEvent, SandboxProvider};
use super::webhooks::log_processed;
use super::{Billing, BillingError, BillingResult, PLAN_HOLD};
use tracing::Instrument;

use crate::entitlements::resolve_inputs;

/// A change as asked: the target plan, seats (the current quantity when
/// left out), how to prorate, and whether to go ahead over the seat limit.
#[derive(Debug, Clone)]
pub struct ChangeRequest<'a> {
    pub plan: &'a str,
    pub seats: Option<u32>,
    pub proration: Proration,
    pub force: bool,
}

/// What a change would do, before it is made.
#[derive(Debug, Clone)]
pub struct ChangePreviewed {
    pub plan: String,
    pub seats: u32,
    pub check: ChangeCheck,
    pub preview: ChangePreview,
}

/// A change checked and ready for the provider.
struct Planned {
    sub: StoredSubscription,
    price: String,
    quantity: u32,
    check: ChangeCheck,
}

impl Billing {
    /// Moves the org's live subscription to another plan at its provider,
    /// then applies the provider's answer. Refused with `conflict` when the
    /// target plan's seat limit is below the seats in use, unless forced.
    pub async fn change_plan(
        &self,
        org: OrgId,
        change: &ChangeRequest<'_>,
        actor: &Actor,
        caller_key: Option<&str>,
    ) -> BillingResult<StoredSubscription> {
        let planned = self.plan_change(org, change.plan, change.seats).await?;
        if let (Some(over), false) = (planned.check.seats_over(), change.force) {
            return Err(self.seats_over_limit(org, change.plan, over.used, over.limit).await?);
        }
        let Planned { sub, price, quantity, .. } = &planned;
        let (sub, price, quantity) = (sub.clone(), price.clone(), *quantity);
        self.require_api(sub.provider)?;
        let item = sub.item_id.clone().ok_or_else(|| {
            DomainError::conflict(format!(
                "the provider's item of this subscription is not known yet; sync it first (POST /v1/orgs/{org}/subscription/sync)"
            ))
        })?;
        let seats = change.seats.map(|_| quantity);
        // Already bought: nothing to ask the provider (a repeat, or a
        // request that read the state before a concurrent change applied).
        if sub.price_id.as_deref() == Some(price.as_str()) && seats.is_none_or(|n| i64::from(n) == sub.quantity) {
            return Ok(sub);
        }
        // The check above read usage outside the org's lock; the hold
        // checks again inside it, and from then on invitations and
        // acceptances count the target's seat limit until the change is
        // applied. A forced change holds nothing (it may leave seats over).
        let hold = match (planned.check.seat_limit, change.force) {
            (Some(limit), false) => {
                match self.0.store.hold_plan_change(org, &price, limit, self.now(), PLAN_HOLD).await? {
                    Ok(hold) => Some(hold),
                    Err(PlanHoldRefused::SeatsInUse { used, limit }) => {
                        return Err(self.seats_over_limit(org, change.plan, used, limit).await?);
                    }
                    Err(PlanHoldRefused::AnotherChange { until }) => {
                        let wait = (until - self.now()).whole_seconds().max(0) + 1;
                        return Err(DomainError::conflict(format!(
                            "another plan change of this organization, to a plan with another seat limit, is waiting on the payment provider; try again when it is applied (at most {wait} s)"
                        ))
                        .into());
                    }
                }
            }
            _ => None,
        };
        // The call, the applying of its answer and the release on failure
        // run in a task of their own, as for a seat change: a client that
        // goes away must not leave a change made but not applied.
        let billing = self.clone();
        let (actor, proration, caller_key) = (actor.clone(), change.proration, caller_key.map(str::to_owned));
        let task = async move {
            let result = match billing.require_api(sub.provider) {
                Err(e) => Err(e),
                Ok(ProviderApi::Sandbox(_)) => billing.sandbox_change_plan(&sub, &price, seats).await,
                Ok(ProviderApi::Remote(provider)) => {
                    let key = provider_key(
                        "change",
                        caller_key.as_deref(),
                        &[
                            &org.to_string(),
                            &state_version(&sub),
                            &item,
                            &price,
                            &seats.map(|n| n.to_string()).unwrap_or_default(),
                            proration.as_str(),
                        ],
                    );
                    let request = PlanChange {
                        subscription_id: sub.provider_subscription_id.clone(),
                        item_id: item,
                        price_id: price,
                        quantity: seats,
                        proration,
                        idempotency_key: key,
                    };
                    match provider.change_plan(&request).await {
                        Ok(snapshot) => billing.apply(org, snapshot, &actor).await,
                        Err(e) => Err(e.into()),
                    }
                }
            };
            // Applied with the target price, the hold went with the answer;
            // applied without it (the provider switches later), it waits
            // for the webhook; failed, it goes now.
            if let (Err(_), Some(hold)) = (&result, &hold)
                && let Err(e) = billing.0.store.release_plan_hold(org, hold).await
            {
                tracing::warn!(error = %e, %org, "could not release a plan hold; it expires by itself");
            }
            result
        };
        match tokio::spawn(task.in_current_span()).await {
            Ok(result) => result,
            Err(e) => Err(BillingError::Internal(format!("the plan change task ended without an answer: {e}"))),
        }
    }

    /// What a change would cost and leave behind, without making it.
    pub async fn preview_change(
        &self,
        org: OrgId,
        plan: &str,
        seats: Option<u32>,
        proration: Proration,
    ) -> BillingResult<ChangePreviewed> {
        let Planned { sub, price, quantity, check } = self.plan_change(org, plan, seats).await?;
        let api = self.require_api(sub.provider)?;
        let preview = match api {
            // The sandbox charges nothing.
            ProviderApi::Sandbox(_) => ChangePreview {
                amount_due: Some(0),
                currency: None,
                lines: Vec::new(),
                next_payment_at: sub.current_period_end,
                proration_by_provider: false,
            },
            ProviderApi::Remote(provider) => {
                let item = sub.item_id.clone().unwrap_or_default();
                let fresh = uuid::Uuid::now_v7().simple().to_string();
                let request = PlanChange {
                    subscription_id: sub.provider_subscription_id.clone(),
                    item_id: item,
                    price_id: price,
                    quantity: Some(quantity),
                    proration,
                    idempotency_key: provider_key("preview", None, &[&org.to_string(), &fresh]),
                };
                let mut preview = provider.preview_change(&request).await?;
                if matches!(provider, PaymentProvider::LemonSqueezy(_)) {
                    preview.next_payment_at = preview.next_payment_at.or(sub.current_period_end);
                }
                preview
            }
        };
        Ok(ChangePreviewed { plan: plan.to_owned(), seats: quantity, check, preview })
    }

    /// Resumes a paused subscription at its provider (Stripe `resume`,
    /// Lemon Squeezy unpause), then applies the answer. Refused with
    /// `conflict` when the subscription is not paused.
    pub async fn resume(
        &self,
        org: OrgId,
        actor: &Actor,
        caller_key: Option<&str>,
    ) -> BillingResult<StoredSubscription> {
        let sub = self.live_subscription(org).await?;
        if sub.status != SubscriptionStatus::Paused {
            return Err(DomainError::conflict(format!(
                "only a paused subscription can be resumed, and this one is {}; to undo a pending cancellation use POST /v1/orgs/{org}/subscription/reactivate",
                sub.status.as_str()
            ))
            .into());
        }
        let snapshot = match self.require_api(sub.provider)? {
            ProviderApi::Remote(provider) => {
                let key = provider_key("resume", caller_key, &[&org.to_string(), &state_version(&sub)]);
                provider.resume(&sub.provider_subscription_id, &key).await?
            }
            ProviderApi::Sandbox(_) => {
                return Err(DomainError::conflict("the sandbox provider never pauses a subscription").into());
            }
        };
        self.apply(org, snapshot, actor).await
    }

    /// The live subscription, the target's price at its provider, the
    /// seats, and the downgrade check; `invalid_request` for a plan that
    /// can't be bought there.
    async fn plan_change(&self, org: OrgId, plan: &str, seats: Option<u32>) -> BillingResult<Planned> {
        let catalog = &self.0.catalog;
        let known =
            || catalog.plans().iter().filter(|p| !p.is_default()).map(|p| p.key()).collect::<Vec<_>>().join(", ");
        let target = catalog.plan(plan).ok_or_else(|| {
            DomainError::invalid("plan", format!("unknown plan `{plan}`; plans for sale: {}", known()))
        })?;
        if target.is_default() {
            return Err(DomainError::invalid(
                "plan",
                format!(
                    "`{plan}` is the default plan, which no subscription buys; cancel the subscription instead (POST /v1/orgs/{org}/subscription/cancel)"
                ),
            )
            .into());
        }
        if let Some(n) = seats {
            check_seats(n)?;
        }
        let sub = self.live_subscription(org).await?;
        let price = catalog.first_price(plan, sub.provider).ok_or_else(|| {
            DomainError::invalid(
                "plan",
                format!(
                    "plan `{plan}` has no {provider} price, and this subscription is at {provider}; list one under [plans.{plan}] prices",
                    provider = sub.provider.as_str()
                ),
            )
        })?;
        let quantity = seats.unwrap_or_else(|| u32::try_from(sub.quantity.max(1)).unwrap_or(1));
        let now = self.now();
        let (inputs, usage) = self.0.store.entitlement_inputs(org, now).await?;
        let current = resolve_inputs(catalog, &inputs, now);
        let used: BTreeMap<String, i64> = catalog.limit_keys().iter().map(|k| (k.clone(), usage.used(k))).collect();
        let check =
            check_change(catalog, inputs.kind, &current, plan, i64::from(quantity), &inputs.overrides, &used, now);
        Ok(Planned { sub, price: price.to_owned(), quantity, check })
    }

    /// The `conflict` of a change that leaves more seats in use than the
    /// target plan allows, naming members who could go (newest first, not
    /// owners, not the billing admin).
    async fn seats_over_limit(&self, org: OrgId, plan: &str, used: i64, limit: i64) -> BillingResult<BillingError> {
        let page = PageRequest { limit: 100, starting_after: None };
        let members = self.0.store.members(org, &page).await?;
        let mut candidates: Vec<_> =
            members.data.iter().filter(|m| !m.membership.role.is_owner() && !m.billing_admin).collect();
        candidates.sort_by_key(|m| std::cmp::Reverse(m.membership.created_at));
        let excess = usize::try_from(used - limit).unwrap_or(0);
        let names: Vec<String> = candidates
            .iter()
            .take(excess)
            .map(|m| m.email.clone().unwrap_or_else(|| m.membership.user_id.to_string()))
            .collect();
        let suggestion = if names.is_empty() {
            "revoke pending invitations".to_owned()
        } else {
            format!("remove members (for example {}) or revoke pending invitations", names.join(", "))
        };
        Ok(DomainError::conflict(format!(
            "the {plan} plan allows {limit} seats and {used} are in use (members and pending invitations); {suggestion} until {excess} seats are free, or send \"force\": true to change anyway (nobody is removed, and no one can join until seats are free)"
        ))
        .into())
    }

    /// The sandbox's plan change: at once, delivered as a provider event
    /// through the same intake as its payments.
    async fn sandbox_change_plan(
        &self,
        sub: &StoredSubscription,
        price: &str,
        seats: Option<u32>,
    ) -> BillingResult<StoredSubscription> {
        let now = self.now();
        let changed =
            self.0.store.sandbox_change_price(&sub.provider_subscription_id, price, seats.map(i64::from), now).await?;
        let snapshot = SandboxProvider::snapshot(&changed, now);
        let payload = serde_json::to_vec(&SandboxEvent { org_id: sub.org_id, snapshot: snapshot.clone() })
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        // One event per change made: the id names this change alone.
        let event_id = format!("sandbox:{}:changed:{}", changed.id, uuid::Uuid::now_v7().simple());
        let effect = self.sandbox_effect(sub.org_id, snapshot, now);
        let event = NewProviderEvent {
            provider: Provider::Sandbox,
            event_id: &event_id,
            event_type: "subscription.updated",
            occurred_at: Some(now),
            payload: &payload,
        };
        let ingest = self.0.store.ingest_provider_event(&event, &effect, now).await?;
        if let Ingest::Processed(p) = &ingest {
            log_processed(Provider::Sandbox, p);
        }
        self.0.store.subscription(sub.org_id).await?.ok_or_else(super::no_subscription)
    }
}
