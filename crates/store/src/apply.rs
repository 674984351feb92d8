//! Applying a provider's view of a subscription, inside a transaction that
//! has locked the org.
//!
//! Two tables hold billing state. `provider_subscriptions` keeps, for every
//! provider subscription orgplane has seen, its newest known state (ended
//! ones included, whether or not it is the org's current one);
//! `subscriptions` is the org's one subscription, chosen from those states.
//! Applying a snapshot is always the same three steps, whatever the order
//! in which events arrive and whether they come from a webhook, a retry, a
//! reconciliation pass or an operation's answer:
//!
//! 1. merge the snapshot into its subscription's known state
//!    ([`orgplane_core::subscription::merge`]: an ended subscription never
//!    becomes live again, older news never overwrites newer);
//! 2. choose the org's current subscription from all its known states
//!    ([`orgplane_core::subscription::current`]);
//! 3. bring the `subscriptions` row in line with that choice, and write an
//!    event for what changed.
//!
//! The rules live in `core`; this module only reads and writes rows. It is
//! written once for both backends: each function is generic over the
//! database (`DB: Sql`, see `crate::sql`).

use orgplane_core::org::OrgKind;
use orgplane_core::subscription::{
    self as rules, KnownSubscription, Provider, SubscriptionSnapshot, SubscriptionStatus,
};
use orgplane_core::{OrgId, SubscriptionId, Timestamp};

use crate::billing::{ApplyOutcome, SnapshotInput};
use crate::sql::{Row, Sql, query};
use crate::subscriptions::StoredSubscription;
use crate::tx::record_event;
use crate::{Actor, Result, StoreError, from_millis, millis, parse_id};

/// What applying one snapshot did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Applied {
    pub outcome: ApplyOutcome,
    /// The snapshot's subscription is the org's current one after applying.
    pub is_current: bool,
    /// Set when the snapshot's subscription is live while the org has
    /// another live one: the org pays twice. The reason names both.
    pub rival: Option<String>,
}

/// Why a snapshot can't be applied to this org at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refused(pub String);

const STATE_COLUMNS: &str = "provider, provider_subscription_id, id, org_id, provider_customer_id, status, price_id, item_id, \
     quantity, current_period_end, cancel_at_period_end, trial_end, past_due_since, portal_url, observed_at, first_observed_at";

const UPSERT_STATE: &str = "INSERT INTO provider_subscriptions (provider, provider_subscription_id, id, org_id, provider_customer_id, \
     status, price_id, item_id, quantity, current_period_end, cancel_at_period_end, trial_end, past_due_since, portal_url, observed_at, \
     first_observed_at, updated_at) VALUES ($1, $2, NULL, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) \
     ON CONFLICT (provider, provider_subscription_id) DO UPDATE SET provider_customer_id = excluded.provider_customer_id, \
     status = excluded.status, price_id = excluded.price_id, item_id = excluded.item_id, quantity = excluded.quantity, \
     current_period_end = excluded.current_period_end, cancel_at_period_end = excluded.cancel_at_period_end, \
     trial_end = excluded.trial_end, past_due_since = excluded.past_due_since, portal_url = excluded.portal_url, \
     observed_at = excluded.observed_at, first_observed_at = excluded.first_observed_at, updated_at = excluded.updated_at \
     WHERE provider_subscriptions.org_id = excluded.org_id";

/// The org's subscription row set to a chosen state (same id: same row,
/// its creation time kept).
const SET_CURRENT: &str = "INSERT INTO subscriptions (id, org_id, provider, provider_subscription_id, provider_customer_id, status, \
     price_id, item_id, quantity, current_period_end, cancel_at_period_end, trial_end, past_due_since, portal_url, observed_at, \
     created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $16) \
     ON CONFLICT (org_id) DO UPDATE SET id = excluded.id, provider = excluded.provider, \
     provider_subscription_id = excluded.provider_subscription_id, provider_customer_id = excluded.provider_customer_id, \
     status = excluded.status, price_id = excluded.price_id, item_id = excluded.item_id, quantity = excluded.quantity, \
     current_period_end = excluded.current_period_end, cancel_at_period_end = excluded.cancel_at_period_end, \
     trial_end = excluded.trial_end, past_due_since = excluded.past_due_since, portal_url = excluded.portal_url, \
     observed_at = excluded.observed_at, updated_at = excluded.updated_at, \
     created_at = CASE WHEN subscriptions.id = excluded.id THEN subscriptions.created_at ELSE excluded.created_at END";

const SELECT_CURRENT: &str = "SELECT id, org_id, provider, provider_subscription_id, provider_customer_id, status, price_id, item_id, \
     quantity, current_period_end, cancel_at_period_end, trial_end, past_due_since, portal_url, observed_at FROM subscriptions \
     WHERE org_id = $1";

/// One provider subscription's row.
struct StoredState {
    id: Option<SubscriptionId>,
    org_id: OrgId,
    known: KnownSubscription,
}

fn corrupt(what: &str, text: &str) -> StoreError {
    StoreError::Corrupt(format!("{what} `{text}`"))
}

fn opt_millis(at: Option<Timestamp>) -> Option<i64> {
    at.map(millis)
}

fn opt_time(ms: Option<i64>) -> Result<Option<Timestamp>> {
    ms.map(from_millis).transpose()
}

/// Reads a row of [`STATE_COLUMNS`].
fn state_from_row<DB: Sql>(row: &Row<DB>) -> Result<StoredState> {
    let provider: String = row.try_get(0)?;
    let status: String = row.try_get(5)?;
    let id: Option<String> = row.try_get(2)?;
    let org: String = row.try_get(3)?;
    let org_id: OrgId = parse_id(&org)?;
    let state = SubscriptionSnapshot {
        provider: Provider::parse(&provider).ok_or_else(|| corrupt("provider", &provider))?,
        provider_subscription_id: row.try_get(1)?,
        provider_customer_id: row.try_get(4)?,
        org_id: Some(org_id),
        status: SubscriptionStatus::parse(&status).ok_or_else(|| corrupt("subscription status", &status))?,
        price_id: row.try_get(6)?,
        item_id: row.try_get(7)?,
        quantity: row.try_get(8)?,
        current_period_end: opt_time(row.try_get(9)?)?,
        cancel_at_period_end: row.try_get(10)?,
        trial_end: opt_time(row.try_get(11)?)?,
        observed_at: from_millis(row.try_get(14)?)?,
        portal_url: row.try_get(13)?,
    };
    Ok(StoredState {
        id: id.as_deref().map(parse_id).transpose()?,
        org_id,
        known: KnownSubscription {
            state,
            first_observed_at: from_millis(row.try_get(15)?)?,
            past_due_since: opt_time(row.try_get(12)?)?,
        },
    })
}

/// Reads a `subscriptions` row (the columns of [`SELECT_CURRENT`]).
fn current_from_row<DB: Sql>(row: &Row<DB>) -> Result<StoredSubscription> {
    let id: String = row.try_get(0)?;
    let org: String = row.try_get(1)?;
    let provider: String = row.try_get(2)?;
    let status: String = row.try_get(5)?;
    Ok(StoredSubscription {
        id: parse_id(&id)?,
        org_id: parse_id(&org)?,
        provider: Provider::parse(&provider).ok_or_else(|| corrupt("provider", &provider))?,
        provider_subscription_id: row.try_get(3)?,
        provider_customer_id: row.try_get(4)?,
        status: SubscriptionStatus::parse(&status).ok_or_else(|| corrupt("subscription status", &status))?,
        price_id: row.try_get(6)?,
        item_id: row.try_get(7)?,
        quantity: row.try_get(8)?,
        current_period_end: opt_time(row.try_get(9)?)?,
        cancel_at_period_end: row.try_get(10)?,
        trial_end: opt_time(row.try_get(11)?)?,
        past_due_since: opt_time(row.try_get(12)?)?,
        portal_url: row.try_get(13)?,
        observed_at: from_millis(row.try_get(14)?)?,
    })
}

/// The org's subscription row as a snapshot (to compare with a chosen state).
fn as_snapshot(s: &StoredSubscription) -> SubscriptionSnapshot {
    SubscriptionSnapshot {
        provider: s.provider,
        provider_subscription_id: s.provider_subscription_id.clone(),
        provider_customer_id: s.provider_customer_id.clone(),
        org_id: Some(s.org_id),
        status: s.status,
        price_id: s.price_id.clone(),
        item_id: s.item_id.clone(),
        quantity: s.quantity,
        current_period_end: s.current_period_end,
        cancel_at_period_end: s.cancel_at_period_end,
        trial_end: s.trial_end,
        observed_at: s.observed_at,
        portal_url: s.portal_url.clone(),
    }
}

pub(crate) fn rfc3339(at: Option<Timestamp>) -> Option<String> {
    at.and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
}

fn subscription_event_data(
    id: SubscriptionId,
    org: OrgId,
    snap: &SubscriptionSnapshot,
    previous: Option<SubscriptionStatus>,
) -> serde_json::Value {
    serde_json::json!({
        "subscription_id": id.to_string(),
        "org_id": org,
        "provider": snap.provider.as_str(),
        "provider_subscription_id": snap.provider_subscription_id,
        "status": snap.status.as_str(),
        "previous_status": previous.map(SubscriptionStatus::as_str),
        "price_id": snap.price_id,
        "seats": snap.quantity,
        "cancel_at_period_end": snap.cancel_at_period_end,
        "current_period_end": rfc3339(snap.current_period_end),
        "trial_end": rfc3339(snap.trial_end),
    })
}

/// Applies one snapshot to the org (locked by the caller's transaction):
/// the three steps of the module docs. `Err(Refused)` when the snapshot's
/// subscription belongs to another org (nothing was written).
pub(crate) async fn apply_snapshot<DB: Sql>(
    tx: &mut sqlx::Transaction<'_, DB>,
    org: OrgId,
    kind: OrgKind,
    input: &SnapshotInput,
    actor: &Actor,
    now: Timestamp,
) -> Result<std::result::Result<Applied, Refused>> {
    let snap = &input.snapshot;
    // 1. Merge into the subscription's own known state.
    let row = query(sqlx::AssertSqlSafe(format!(
        "SELECT {STATE_COLUMNS} FROM provider_subscriptions WHERE provider = $1 AND provider_subscription_id = $2"
    )))
    .bind(snap.provider.as_str().to_owned())
    .bind(snap.provider_subscription_id.clone())
    .fetch_optional(&mut **tx)
    .await?;
    let stored = row.as_ref().map(state_from_row::<DB>).transpose()?;
    if let Some(other) = stored.as_ref().filter(|s| s.org_id != org) {
        return Ok(Err(belongs_elsewhere(snap, other.org_id)));
    }
    let (change, merged) = rules::merge(stored.as_ref().map(|s| &s.known), snap);
    let first_moved = stored.as_ref().is_some_and(|s| s.known.first_observed_at != merged.first_observed_at);
    if change.took() || first_moved {
        let m = &merged.state;
        let written = query(UPSERT_STATE)
            .bind(m.provider.as_str().to_owned())
            .bind(m.provider_subscription_id.clone())
            .bind(org.to_string())
            .bind(m.provider_customer_id.clone())
            .bind(m.status.as_str().to_owned())
            .bind(m.price_id.clone())
            .bind(m.item_id.clone())
            .bind(m.quantity)
            .bind(opt_millis(m.current_period_end))
            .bind(m.cancel_at_period_end)
            .bind(opt_millis(m.trial_end))
            .bind(opt_millis(merged.past_due_since))
            .bind(m.portal_url.clone())
            .bind(millis(m.observed_at))
            .bind(millis(merged.first_observed_at))
            .bind(millis(now))
            .execute(&mut **tx)
            .await?
            .rows_affected();
        if written == 0 {
            // Another org's transaction stored this subscription after we
            // looked (the upsert's `WHERE` kept its row): it is that org's.
            let other = org_of_subscription(tx, snap.provider, &snap.provider_subscription_id).await?;
            return Ok(Err(belongs_elsewhere(snap, other.unwrap_or(org))));
        }
    }
    if stored.is_none() {
        // Tied to an org from now on: no longer one for an operator to link.
        query("DELETE FROM unlinked_subscriptions WHERE provider = $1 AND provider_subscription_id = $2")
            .bind(snap.provider.as_str().to_owned())
            .bind(snap.provider_subscription_id.clone())
            .execute(&mut **tx)
            .await?;
    }
    if let Some(customer) = &merged.state.provider_customer_id {
        link_customer(tx, snap.provider, customer, org, now).await?;
    }

    // 2. Choose the org's subscription from every one it has had.
    let rows =
        query(sqlx::AssertSqlSafe(format!("SELECT {STATE_COLUMNS} FROM provider_subscriptions WHERE org_id = $1")))
            .bind(org.to_string())
            .fetch_all(&mut **tx)
            .await?;
    let all = rows.iter().map(state_from_row::<DB>).collect::<Result<Vec<_>>>()?;
    let knowns: Vec<KnownSubscription> = all.iter().map(|s| s.known.clone()).collect();
    let chosen = rules::current(&knowns).ok_or_else(|| {
        StoreError::Corrupt(format!("organization {org} has no subscription state after one was stored"))
    })?;
    let chosen_stored = all
        .iter()
        .find(|s| {
            s.known.state.provider == chosen.state.provider
                && s.known.state.provider_subscription_id == chosen.state.provider_subscription_id
        })
        .ok_or_else(|| StoreError::Corrupt("the chosen subscription state vanished".into()))?;
    let is_current = chosen.state.provider == snap.provider
        && chosen.state.provider_subscription_id == snap.provider_subscription_id;
    let rival = if merged.state.status.is_live() {
        let rivals = rules::live_rivals(&knowns, chosen);
        let name = |k: &KnownSubscription| format!("{}, {}", k.state.provider_subscription_id, k.state.status.as_str());
        let others: Vec<String> =
            if is_current { rivals.iter().map(|k| name(k)).collect() } else { vec![name(chosen)] };
        (!rivals.is_empty()).then(|| {
            format!(
                "this organization already has a live {provider} subscription ({others}); orgplane uses {used}, the one \
                 that started first, and only records {this}: cancel one of them at the provider, then this event is retried",
                provider = snap.provider.as_str(),
                others = others.join("; "),
                used = chosen.state.provider_subscription_id,
                this = if is_current { "the others" } else { snap.provider_subscription_id.as_str() },
            )
        })
    } else {
        None
    };

    // 3. Bring the org's subscription row in line with the choice.
    let row = query(SELECT_CURRENT).bind(org.to_string()).fetch_optional(&mut **tx).await?;
    let before = row.as_ref().map(current_from_row::<DB>).transpose()?;
    let view = set_current(tx, org, chosen_stored, before.as_ref(), actor, now).await?;

    let outcome = match view {
        ViewChange::Created => ApplyOutcome::Created,
        ViewChange::Updated => ApplyOutcome::Updated,
        ViewChange::Unchanged if !change.took() => ApplyOutcome::Stale,
        ViewChange::Unchanged if is_current => ApplyOutcome::Unchanged,
        ViewChange::Unchanged => ApplyOutcome::Superseded,
    };

    // A personal org that gets an entitling subscription becomes a team
    // org with the same id; its user gets a new personal org lazily.
    if input.entitling && kind == OrgKind::Personal && is_current && chosen.state.status.is_live() {
        let converted = query(
            "UPDATE orgs SET kind = 'team', personal_user_id = NULL, updated_at = $2 WHERE id = $1 AND kind = 'personal' RETURNING id",
        )
        .bind(org.to_string())
        .bind(millis(now))
        .fetch_optional(&mut **tx)
        .await?;
        if converted.is_some() {
            let data = serde_json::json!({"org_id": org, "from": "personal", "to": "team", "reason": "subscription"});
            record_event(tx, org, "org.converted", actor, data, now).await?;
        }
    }
    Ok(Ok(Applied { outcome, is_current, rival }))
}

/// Why a snapshot of a subscription another org holds is refused.
fn belongs_elsewhere(snap: &SubscriptionSnapshot, other: OrgId) -> Refused {
    Refused(format!(
        "{} subscription {} already belongs to organization {other}; an organization's subscription can't move to another one",
        snap.provider.as_str(),
        snap.provider_subscription_id,
    ))
}

/// What [`set_current`] did to the org's subscription row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ViewChange {
    /// Another subscription (or the first) became the org's.
    Created,
    /// The same subscription, another state.
    Updated,
    /// Nothing a reader would see changed.
    Unchanged,
}

/// Sets the org's subscription row to `chosen` and records what changed.
async fn set_current<DB: Sql>(
    tx: &mut sqlx::Transaction<'_, DB>,
    org: OrgId,
    chosen: &StoredState,
    before: Option<&StoredSubscription>,
    actor: &Actor,
    now: Timestamp,
) -> Result<ViewChange> {
    let state = &chosen.known.state;
    // A plan change's hold ends once the org's subscription has the price
    // the change asked for (or has ended): the target's limit is then the
    // plan's own. Before the no-change return: a replayed answer that
    // changes nothing still ends the hold of the request that got it.
    query(
        "UPDATE subscriptions SET plan_hold_price = NULL, plan_hold_seats = NULL, plan_hold_until = NULL \
         WHERE org_id = $1 AND plan_hold_price IS NOT NULL AND ($3 OR plan_hold_price = $2)",
    )
    .bind(org.to_string())
    .bind(state.price_id.clone())
    .bind(state.status.is_terminal())
    .execute(&mut **tx)
    .await?;
    let same_subscription = before
        .is_some_and(|b| b.provider == state.provider && b.provider_subscription_id == state.provider_subscription_id);
    let change = match before {
        Some(b) if same_subscription => {
            if !rules::same_content(&as_snapshot(b), state) || !rules::same_content(state, &as_snapshot(b)) {
                ViewChange::Updated
            } else if millis(b.observed_at) == millis(state.observed_at)
                && opt_millis(b.past_due_since) == opt_millis(chosen.known.past_due_since)
            {
                return Ok(ViewChange::Unchanged);
            } else {
                ViewChange::Unchanged
            }
        }
        _ => ViewChange::Created,
    };
    // The org's subscription id: the one this provider subscription had
    // when it was the org's before, else a new one (kept from now on).
    let id = match (chosen.id, before) {
        (Some(id), _) => id,
        (None, Some(b)) if same_subscription => b.id,
        (None, _) => SubscriptionId::new(),
    };
    if chosen.id != Some(id) {
        query("UPDATE provider_subscriptions SET id = $3 WHERE provider = $1 AND provider_subscription_id = $2")
            .bind(state.provider.as_str().to_owned())
            .bind(state.provider_subscription_id.clone())
            .bind(id.to_string())
            .execute(&mut **tx)
            .await?;
    }
    query(SET_CURRENT)
        .bind(id.to_string())
        .bind(org.to_string())
        .bind(state.provider.as_str().to_owned())
        .bind(state.provider_subscription_id.clone())
        .bind(state.provider_customer_id.clone())
        .bind(state.status.as_str().to_owned())
        .bind(state.price_id.clone())
        .bind(state.item_id.clone())
        .bind(state.quantity)
        .bind(opt_millis(state.current_period_end))
        .bind(state.cancel_at_period_end)
        .bind(opt_millis(state.trial_end))
        .bind(opt_millis(chosen.known.past_due_since))
        .bind(state.portal_url.clone())
        .bind(millis(state.observed_at))
        .bind(millis(now))
        .execute(&mut **tx)
        .await?;
    let previous = before.map(|b| b.status);
    match change {
        ViewChange::Updated => {
            let was_live = previous.is_some_and(SubscriptionStatus::is_live);
            let kind =
                if state.status.is_terminal() && was_live { "subscription.canceled" } else { "subscription.updated" };
            record_event(tx, org, kind, actor, subscription_event_data(id, org, state, previous), now).await?;
        }
        ViewChange::Created => {
            let data = subscription_event_data(id, org, state, previous);
            record_event(tx, org, "subscription.created", actor, data, now).await?;
            if state.status.is_live() {
                make_buyer_billing_admin(tx, org, state.provider, actor, now).await?;
            }
        }
        ViewChange::Unchanged => {}
    }
    Ok(change)
}

/// The buyer becomes billing admin: whoever started the org's latest
/// checkout at this provider, if still a member.
async fn make_buyer_billing_admin<DB: Sql>(
    tx: &mut sqlx::Transaction<'_, DB>,
    org: OrgId,
    provider: Provider,
    actor: &Actor,
    now: Timestamp,
) -> Result<()> {
    let buyer = query(
        "SELECT c.started_by FROM checkouts c JOIN memberships m ON m.org_id = c.org_id AND m.user_id = c.started_by \
         WHERE c.org_id = $1 AND c.provider = $2 ORDER BY c.created_at DESC LIMIT 1",
    )
    .bind(org.to_string())
    .bind(provider.as_str().to_owned())
    .fetch_optional(&mut **tx)
    .await?;
    let Some(buyer) = buyer else { return Ok(()) };
    let buyer: String = buyer.try_get(0)?;
    let admin = query("SELECT billing_admin_user_id FROM orgs WHERE id = $1")
        .bind(org.to_string())
        .fetch_one(&mut **tx)
        .await?;
    let admin: Option<String> = admin.try_get(0)?;
    if admin.as_deref() == Some(buyer.as_str()) {
        return Ok(());
    }
    query("UPDATE orgs SET billing_admin_user_id = $1 WHERE id = $2")
        .bind(buyer.clone())
        .bind(org.to_string())
        .execute(&mut **tx)
        .await?;
    let data = serde_json::json!({"org_id": org, "from": admin, "to": buyer, "reason": "checkout"});
    record_event(tx, org, "billing_admin.changed", actor, data, now).await
}

/// Ties a provider customer to the org (the first tie wins).
pub(crate) async fn link_customer<DB: Sql>(
    tx: &mut sqlx::Transaction<'_, DB>,
    provider: Provider,
    customer: &str,
    org: OrgId,
    now: Timestamp,
) -> Result<()> {
    query(
        "INSERT INTO billing_customers (provider, customer_id, org_id, created_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (provider, customer_id) DO NOTHING",
    )
    .bind(provider.as_str().to_owned())
    .bind(customer.to_owned())
    .bind(org.to_string())
    .bind(millis(now))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The org a provider subscription belongs to, if orgplane has seen it.
pub(crate) async fn org_of_subscription<DB: Sql>(
    tx: &mut sqlx::Transaction<'_, DB>,
    provider: Provider,
    provider_subscription_id: &str,
) -> Result<Option<OrgId>> {
    let row = query("SELECT org_id FROM provider_subscriptions WHERE provider = $1 AND provider_subscription_id = $2")
        .bind(provider.as_str().to_owned())
        .bind(provider_subscription_id.to_owned())
        .fetch_optional(&mut **tx)
        .await?;
    row.map(|r| r.try_get::<String, _>(0).map_err(StoreError::from).and_then(|o| parse_id(&o))).transpose()
}
