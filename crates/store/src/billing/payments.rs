//! Failed payments: the `subscription.payment_failed` event an app shows a
//! banner from, written in the transaction that stores (or retries) the
//! provider's delivery.
//!
//! - **Once per delivery.** A new delivery writes it in the transaction that
//!   inserts its row (the unique key on the delivery decides between copies:
//!   the loser's event rolls back with it); a retry writes it only if no
//!   earlier attempt did (`payment_reported_at` on the row, which the retry
//!   holds).
//! - **Not after a later payment.** A payment of the same subscription that
//!   is stored as made after the failure (the provider's `occurred_at`)
//!   makes the failure stale: nothing is written. A success that is not
//!   stored yet can't be known; the subscription's own `updated` event then
//!   carries its recovery.
//!
//! This module never decides what a failure means for entitlements (the
//! subscription's status and `past_due_since` do).

use orgplane_core::subscription::PaymentFailure;
use orgplane_core::{OrgId, ProviderEventId, Timestamp};

use super::events::EventEffect;
use crate::apply::rfc3339;
use crate::sql::{Sql, query};
use crate::tx::record_event;
use crate::{Actor, Result, millis};

/// Writes the org's `subscription.payment_failed` event for `failure`
/// unless it is stale or an earlier attempt of this stored delivery (`id`)
/// wrote it. `new_delivery`: the delivery's row is inserted after this, by
/// the caller (which records the returned time on it); otherwise the row
/// exists, is held by the caller, and is marked here. Returns when it was
/// written.
#[allow(clippy::too_many_arguments)]
pub(super) async fn report_payment_failure<DB: Sql>(
    tx: &mut sqlx::Transaction<'_, DB>,
    id: ProviderEventId,
    new_delivery: bool,
    org: OrgId,
    effect: &EventEffect,
    failure: &PaymentFailure,
    actor: &Actor,
    now: Timestamp,
) -> Result<Option<Timestamp>> {
    if !new_delivery {
        let reported: Option<i64> = query("SELECT payment_reported_at FROM provider_events WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&mut **tx)
            .await?
            .map(|row| row.try_get::<Option<i64>, _>(0))
            .transpose()?
            .flatten();
        if reported.is_some() {
            return Ok(None);
        }
    }
    let subscription = effect.subscription_ref().unwrap_or_default().to_owned();
    let paid_later = query(
        "SELECT 1 FROM provider_events WHERE provider = $1 AND provider_subscription_id = $2 AND payment = 'paid' \
         AND occurred_at > $3 LIMIT 1",
    )
    .bind(effect.provider.as_str().to_owned())
    .bind(subscription.clone())
    .bind(millis(failure.failed_at))
    .fetch_optional(&mut **tx)
    .await?;
    if paid_later.is_some() {
        tracing::info!(%org, subscription = %subscription, invoice = %failure.invoice_id,
            "a payment failure arrived after a later payment of the subscription; not reported");
        return Ok(None);
    }
    let data = serde_json::json!({
        "org_id": org,
        "provider": effect.provider.as_str(),
        "provider_subscription_id": subscription,
        "invoice_id": failure.invoice_id,
        "amount_due": failure.amount_due,
        "currency": failure.currency,
        "hosted_invoice_url": failure.hosted_invoice_url,
        "attempt_count": failure.attempt_count,
        "next_payment_attempt": rfc3339(failure.next_payment_attempt),
        "failed_at": rfc3339(Some(failure.failed_at)),
    });
    record_event(tx, org, "subscription.payment_failed", actor, data, now).await?;
    if !new_delivery {
        query("UPDATE provider_events SET payment_reported_at = $2 WHERE id = $1")
            .bind(id.to_string())
            .bind(millis(now))
            .execute(&mut **tx)
            .await?;
    }
    Ok(Some(now))
}
