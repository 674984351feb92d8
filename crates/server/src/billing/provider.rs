//! One payment provider's API, whichever it is ([`ProviderApi`]), and the
//! idempotency keys of the calls made to it.
//!
//! - Every call answers the provider's view of the subscription afterwards,
//!   which the caller applies through the store's one apply path.
//! - [`provider_key`] derives a call's `Idempotency-Key` from the operation,
//!   the state it acts on and every parameter sent: a retry of the same
//!   operation is one provider call.

use orgplane_billing::PaymentProvider;
use orgplane_core::subscription::SubscriptionSnapshot;
use orgplane_store::{SandboxChange, StoredSubscription};
use sha2::{Digest, Sha256};

use super::BillingResult;
use super::sandbox::SandboxProvider;

/// One payment provider's API, whichever it is.
pub(super) enum ProviderApi<'a> {
    Remote(&'a PaymentProvider),
    Sandbox(&'a SandboxProvider),
}

impl ProviderApi<'_> {
    pub(super) async fn fetch(&self, subscription_id: &str) -> BillingResult<SubscriptionSnapshot> {
        match self {
            ProviderApi::Remote(p) => Ok(p.fetch(subscription_id).await?),
            ProviderApi::Sandbox(s) => s.change(subscription_id, SandboxChange::Refresh).await,
        }
    }

    pub(super) async fn set_cancel_at_period_end(
        &self,
        subscription_id: &str,
        cancel: bool,
        key: &str,
    ) -> BillingResult<SubscriptionSnapshot> {
        match self {
            ProviderApi::Remote(p) => Ok(p.set_cancel_at_period_end(subscription_id, cancel, key).await?),
            ProviderApi::Sandbox(s) => s.change(subscription_id, SandboxChange::CancelAtPeriodEnd(cancel)).await,
        }
    }

    pub(super) async fn cancel_now(&self, subscription_id: &str) -> BillingResult<SubscriptionSnapshot> {
        match self {
            ProviderApi::Remote(p) => Ok(p.cancel_now(subscription_id).await?),
            ProviderApi::Sandbox(s) => s.change(subscription_id, SandboxChange::CancelNow).await,
        }
    }

    /// Sets the seat count; answers the provider's view afterwards.
    pub(super) async fn set_quantity(
        &self,
        subscription_id: &str,
        item_id: &str,
        quantity: u32,
        key: &str,
    ) -> BillingResult<SubscriptionSnapshot> {
        match self {
            ProviderApi::Remote(p) => {
                p.set_quantity(item_id, quantity, key).await?;
                Ok(p.fetch(subscription_id).await?)
            }
            ProviderApi::Sandbox(s) => s.change(subscription_id, SandboxChange::Quantity(i64::from(quantity))).await,
        }
    }

    pub(super) async fn portal_url(
        &self,
        customer: Option<&str>,
        subscription_id: &str,
        return_url: &str,
        key: &str,
    ) -> BillingResult<String> {
        match self {
            ProviderApi::Remote(p) => Ok(p.portal_url(customer, subscription_id, return_url, key).await?),
            ProviderApi::Sandbox(s) => {
                Ok(format!("{}/sandbox/portal/{subscription_id}?return_url={}", s.base_url, form_encode(return_url)))
            }
        }
    }
}

/// Stripe's `Idempotency-Key` for one operation, derived from what the
/// operation is, so that a retry of the same operation is one provider call
/// (Stripe answers a repeated key with its first answer, for 24 h): the
/// operation and its target, the state it acts on (the stored subscription's
/// time: once an operation's result is applied, the next one is new), every
/// parameter sent (Stripe refuses a key reused with other parameters), and
/// the caller's own `Idempotency-Key` (scoped by who sent it) when there is
/// one.
pub fn provider_key(operation: &str, caller: Option<&str>, parts: &[&str]) -> String {
    let mut hash = Sha256::new();
    hash.update(operation.as_bytes());
    for part in caller.into_iter().chain(parts.iter().copied()) {
        hash.update([0x1f]);
        hash.update(part.as_bytes());
    }
    format!("orgplane-{operation}-{}", hex::encode(&hash.finalize()[..20]))
}

/// The state version an operation on `sub` acts on (see [`provider_key`]).
pub(super) fn state_version(sub: &StoredSubscription) -> String {
    format!("{}@{}", sub.provider_subscription_id, sub.observed_at.unix_timestamp_nanos() / 1_000_000)
}

/// Percent-encodes a query value.
pub(super) fn form_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
