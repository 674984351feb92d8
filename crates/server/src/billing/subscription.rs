//! Operations on the org's subscription: cancel, reactivate, seats, the
//! customer portal, sync.
//!
//! - Local state changes only by applying the provider's answer through the
//!   store's one apply path (never a second state machine).
//! - Each provider call carries an idempotency key derived from the
//!   operation, the state it acts on and what it sends ([`provider_key`]).
//! - A seat change holds the org's seats at the asked-for count until its
//!   answer is applied (see [`Billing::set_seats`]).

use orgplane_core::subscription::{SubscriptionSnapshot, check_seats};
use orgplane_core::{DomainError, OrgId};
use orgplane_store::{Actor, StoredSubscription};
use tracing::Instrument;

use super::provider::provider_key;
use super::provider::state_version;
use super::{Billing, BillingError, BillingResult, no_subscription};

impl Billing {
    /// The org's subscription while it is live, or why not.
    pub(super) async fn live_subscription(&self, org: OrgId) -> BillingResult<StoredSubscription> {
        let sub = self.0.store.subscription(org).await?.ok_or_else(no_subscription)?;
        if sub.status.is_terminal() {
            return Err(DomainError::conflict(format!(
                "this organization's subscription has ended ({}); start a new one with POST /v1/orgs/{org}/checkout",
                sub.status.as_str()
            ))
            .into());
        }
        Ok(sub)
    }

    pub(super) async fn apply(
        &self,
        org: OrgId,
        snapshot: SubscriptionSnapshot,
        actor: &Actor,
    ) -> BillingResult<StoredSubscription> {
        let now = self.now();
        let input = self.input(snapshot, now);
        let (_, stored) = self.0.store.apply_subscription_snapshot(org, &input, actor, now).await?;
        stored.ok_or_else(no_subscription)
    }

    /// Cancels at the end of the period, or now.
    pub async fn cancel(
        &self,
        org: OrgId,
        immediately: bool,
        actor: &Actor,
        caller_key: Option<&str>,
    ) -> BillingResult<StoredSubscription> {
        let sub = self.live_subscription(org).await?;
        let api = self.require_api(sub.provider)?;
        let snapshot = if immediately {
            api.cancel_now(&sub.provider_subscription_id).await?
        } else {
            let key = provider_key("cancel", caller_key, &[&org.to_string(), &state_version(&sub), "true"]);
            api.set_cancel_at_period_end(&sub.provider_subscription_id, true, &key).await?
        };
        self.apply(org, snapshot, actor).await
    }

    /// Undoes a pending cancellation.
    pub async fn reactivate(
        &self,
        org: OrgId,
        actor: &Actor,
        caller_key: Option<&str>,
    ) -> BillingResult<StoredSubscription> {
        let sub = self.live_subscription(org).await?;
        let api = self.require_api(sub.provider)?;
        let key = provider_key("reactivate", caller_key, &[&org.to_string(), &state_version(&sub), "false"]);
        let snapshot = api.set_cancel_at_period_end(&sub.provider_subscription_id, false, &key).await?;
        self.apply(org, snapshot, actor).await
    }

    /// Sets the purchased seats at the provider, then applies its answer.
    ///
    /// The provider call can't run inside a transaction, so the seats in
    /// use are checked first, in the store's locked step that also takes a
    /// seat hold: until the answer is applied, every seat limit of the org
    /// counts at most `seats`, and an invitation racing a decrease is
    /// refused rather than let in under the old quantity. The hold is
    /// released once the answer is applied or the call failed.
    pub async fn set_seats(
        &self,
        org: OrgId,
        seats: u32,
        actor: &Actor,
        caller_key: Option<&str>,
    ) -> BillingResult<StoredSubscription> {
        check_seats(seats)?;
        let sub = self.live_subscription(org).await?;
        let item = sub.item_id.clone().ok_or_else(|| {
            DomainError::conflict(format!(
                "the provider's seat item of this subscription is not known yet; sync it first (POST /v1/orgs/{org}/subscription/sync)"
            ))
        })?;
        self.require_api(sub.provider)?;
        let hold = self.0.store.hold_seats(org, seats, self.now(), self.0.seat_hold).await?;
        let key =
            provider_key("seats", caller_key, &[&org.to_string(), &state_version(&sub), &item, &seats.to_string()]);
        // The call, the applying of its answer and the release run in a task
        // of their own: a client that goes away, or the request timeout,
        // drops this future, and a change made at the provider but never
        // applied here would keep the hold until it expires.
        let billing = self.clone();
        let actor = actor.clone();
        let change = async move {
            let result = async {
                let snapshot = billing
                    .require_api(sub.provider)?
                    .set_quantity(&sub.provider_subscription_id, &item, seats, &key)
                    .await?;
                billing.apply(org, snapshot, &actor).await
            }
            .await;
            if let Err(e) = billing.0.store.release_seat_hold(org, &hold).await {
                tracing::warn!(error = %e, %org, "could not release a seat hold; it expires by itself");
            }
            result
        };
        match tokio::spawn(change.in_current_span()).await {
            Ok(result) => result,
            Err(e) => Err(BillingError::Internal(format!("the seat change task ended without an answer: {e}"))),
        }
    }

    /// A customer-portal link for the org's subscription.
    /// Without the caller's `Idempotency-Key`, each call opens a new portal
    /// session (a repeated key would hand back an expired link for 24 h).
    pub async fn portal_url(&self, org: OrgId, return_url: &str, caller_key: Option<&str>) -> BillingResult<String> {
        let sub = self.0.store.subscription(org).await?.ok_or_else(no_subscription)?;
        let api = self.require_api(sub.provider)?;
        let fresh = uuid::Uuid::now_v7().simple().to_string();
        let key = provider_key(
            "portal",
            caller_key,
            &[&org.to_string(), return_url, if caller_key.is_some() { "" } else { &fresh }],
        );
        api.portal_url(sub.provider_customer_id.as_deref(), &sub.provider_subscription_id, return_url, &key).await
    }

    /// Re-fetches the org's subscription from its provider and applies it.
    pub async fn sync(&self, org: OrgId, actor: &Actor) -> BillingResult<StoredSubscription> {
        let sub = self.0.store.subscription(org).await?.ok_or_else(no_subscription)?;
        let api = self.require_api(sub.provider)?;
        let snapshot = api.fetch(&sub.provider_subscription_id).await?;
        self.apply(org, snapshot, actor).await
    }
}
