//! Billing state: provider events stored before they are applied, applying a
//! provider's view of a subscription to the org's one subscription, checkouts,
//! the billing admin, reconciliation leases, and the sandbox provider's own
//! state.
//!
//! What holds here, on both backends:
//!
//! - **Once.** A provider event is stored in the transaction that applies
//!   it, unique on provider + the provider's event id: the event row and
//!   everything it changed commit together or not at all. A replay, or a
//!   concurrent copy, finds the stored row (or loses on the unique key) and
//!   changes nothing.
//! - **In any order.** Applying locks the org, then merges the snapshot into
//!   its provider subscription's own known state and chooses the org's
//!   subscription from every one it has had (`crate::apply`, rules in
//!   `orgplane_core::subscription`): older news never overwrites newer, a
//!   subscription that ended never comes back to life, and every arrival
//!   order of the same events ends in the same state.
//! - **One per org.** `subscriptions` is unique on the org and on the
//!   provider's subscription id. A second *live* subscription is recorded
//!   (so that it can't be lost or revived later) but its event is kept as
//!   `failed` with the reason, and retried, until one of them ends.
//! - **Nothing lost.** An event whose org can't be resolved is kept as
//!   `unmatched`, one that could not be applied as `failed`; both wait for
//!   `next_attempt_at` and a reconciliation pass. A pass claims each event
//!   (and each org it re-fetches) with a lease written by a conditional
//!   `UPDATE`/upsert, so replicas sharing a PostgreSQL database never work on
//!   the same one at once.
//! - **Throughput on SQLite.** Concurrent deliveries are applied together in
//!   one transaction (group commit, see `SqliteWrites`); if any of them
//!   fails, each is applied on its own.
//!
//! This module never calls a payment provider and never decides
//! entitlements: the server says whether a snapshot entitles
//! ([`SnapshotInput::entitling`]).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use orgplane_core::org::OrgKind;
use orgplane_core::subscription::{Provider, SubscriptionSnapshot, SubscriptionStatus};
use orgplane_core::{DomainError, EventId, OrgId, ProviderEventId, Timestamp, UserId};

use crate::subscriptions::{StoredSubscription, SubscriptionRow, subscription_from_row};
use tokio::sync::oneshot;

use sqlx::Pool;

use crate::apply::{Applied, Refused};
use crate::sql::{Executes, FromSqlRow, Row, Sql, query, query_as};
use crate::tx::{ensure_cursor_in_list, lock_org, member_role, record_event, terminal_statuses};
use crate::{Actor, Backend, BeginWrite, Page, PageRequest, Result, Store, StoreError, from_millis, millis, parse_id};

/// A provider's view of a subscription, with what the server's catalog says
/// of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInput {
    pub snapshot: SubscriptionSnapshot,
    /// Its price maps to a plan that this status entitles: a personal org
    /// that receives it becomes a team org.
    pub entitling: bool,
}

/// What one provider event asks of orgplane, as the server read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventEffect {
    pub provider: Provider,
    /// The org the event names outside the subscription (Stripe's
    /// `client_reference_id`, the sandbox checkout's org).
    pub org_hint: Option<OrgId>,
    /// A provider customer to tie to the org.
    pub customer_id: Option<String>,
    /// The provider subscription the event is about, when no snapshot says so.
    pub subscription_id: Option<String>,
    /// The subscription state to apply.
    pub snapshot: Option<SnapshotInput>,
    /// Set when the event can't be turned into an effect now (its body does
    /// not parse, the provider could not be asked): it is stored as `failed`.
    pub failure: Option<String>,
}

impl EventEffect {
    /// An event orgplane records and does not act on.
    pub fn nothing(provider: Provider) -> Self {
        EventEffect {
            provider,
            org_hint: None,
            customer_id: None,
            subscription_id: None,
            snapshot: None,
            failure: None,
        }
    }

    /// An event that can't be applied now, for `reason`.
    pub fn failed(provider: Provider, reason: impl Into<String>) -> Self {
        EventEffect { failure: Some(reason.into()), ..EventEffect::nothing(provider) }
    }

    fn subscription_ref(&self) -> Option<&str> {
        self.snapshot.as_ref().map(|s| s.snapshot.provider_subscription_id.as_str()).or(self.subscription_id.as_deref())
    }

    fn customer_ref(&self) -> Option<&str> {
        self.snapshot.as_ref().and_then(|s| s.snapshot.provider_customer_id.as_deref()).or(self.customer_id.as_deref())
    }
}

/// A verified delivery, as stored.
#[derive(Debug, Clone, Copy)]
pub struct NewProviderEvent<'a> {
    pub provider: Provider,
    /// The idempotency key of the delivery (Stripe's `evt_…`).
    pub event_id: &'a str,
    pub event_type: &'a str,
    pub occurred_at: Option<Timestamp>,
    /// The raw body, byte for byte.
    pub payload: &'a [u8],
}

/// Where a stored provider event stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProviderEventStatus {
    /// Done (whatever it changed: see [`ApplyOutcome`]).
    Applied,
    /// Nothing of orgplane's depends on it.
    Ignored,
    /// No org could be resolved yet; retried.
    Unmatched,
    /// Applying failed; the reason is kept; retried.
    Failed,
}

impl ProviderEventStatus {
    pub const ALL: [ProviderEventStatus; 4] = [
        ProviderEventStatus::Applied,
        ProviderEventStatus::Ignored,
        ProviderEventStatus::Unmatched,
        ProviderEventStatus::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ProviderEventStatus::Applied => "applied",
            ProviderEventStatus::Ignored => "ignored",
            ProviderEventStatus::Unmatched => "unmatched",
            ProviderEventStatus::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// What applying an event or snapshot did to the org's subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ApplyOutcome {
    /// A new subscription row (first, or replacing an ended one).
    Created,
    Updated,
    /// The same state as stored (only its time moved on).
    Unchanged,
    /// Older than the stored state, or a live state of an ended subscription: not applied.
    Stale,
    /// An ended subscription that is no longer the org's: nothing to change.
    Superseded,
    /// Only a provider customer was tied to the org.
    Linked,
}

impl ApplyOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            ApplyOutcome::Created => "created",
            ApplyOutcome::Updated => "updated",
            ApplyOutcome::Unchanged => "unchanged",
            ApplyOutcome::Stale => "stale",
            ApplyOutcome::Superseded => "superseded",
            ApplyOutcome::Linked => "linked",
        }
    }
}

/// The result of processing one stored event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessedEvent {
    pub id: ProviderEventId,
    pub status: ProviderEventStatus,
    pub outcome: Option<ApplyOutcome>,
    pub org_id: Option<OrgId>,
    pub error: Option<String>,
}

/// What became of a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ingest {
    /// The event was stored before: nothing was done again.
    Duplicate,
    Processed(ProcessedEvent),
}

/// A stored provider event, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderEventRecord {
    pub id: ProviderEventId,
    pub provider: Provider,
    pub event_id: String,
    pub event_type: String,
    pub status: ProviderEventStatus,
    pub outcome: Option<String>,
    pub error: Option<String>,
    pub org_id: Option<String>,
    pub provider_subscription_id: Option<String>,
    pub provider_customer_id: Option<String>,
    pub attempts: i64,
    pub occurred_at: Option<Timestamp>,
    pub received_at: Timestamp,
    pub processed_at: Timestamp,
    pub next_attempt_at: Option<Timestamp>,
}

/// An unmatched or failed event claimed for a retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryCandidate {
    pub id: ProviderEventId,
    pub provider: Provider,
    pub event_id: String,
    pub event_type: String,
    pub payload: Vec<u8>,
}

/// A checkout about to be opened at a provider.
#[derive(Debug, Clone)]
pub struct NewCheckout {
    pub org: OrgId,
    pub provider: Provider,
    pub plan: String,
    pub price_id: String,
    pub quantity: i64,
    /// Becomes the billing admin when the subscription arrives.
    pub started_by: Option<UserId>,
    pub success_url: String,
    pub cancel_url: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckoutStatus {
    Open,
    Paid,
    Canceled,
}

impl CheckoutStatus {
    fn parse(text: &str) -> Option<Self> {
        match text {
            "open" => Some(CheckoutStatus::Open),
            "paid" => Some(CheckoutStatus::Paid),
            "canceled" => Some(CheckoutStatus::Canceled),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckoutRecord {
    /// `chk_…`: also the idempotency key of the provider call.
    pub id: String,
    pub org_id: OrgId,
    pub provider: Provider,
    pub plan: String,
    pub price_id: String,
    pub quantity: i64,
    pub started_by: Option<UserId>,
    pub success_url: String,
    pub cancel_url: String,
    pub session_id: Option<String>,
    pub url: Option<String>,
    pub status: CheckoutStatus,
    pub created_at: Timestamp,
}

/// The sandbox provider's record of one subscription (what Stripe would
/// hold on its side).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxSubscription {
    pub id: String,
    pub checkout_id: String,
    pub org_id: OrgId,
    pub customer_id: String,
    pub price_id: String,
    pub quantity: i64,
    pub status: SubscriptionStatus,
    pub cancel_at_period_end: bool,
    pub current_period_end: Timestamp,
    pub updated_at: Timestamp,
}

/// A change the sandbox provider's API makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SandboxChange {
    CancelAtPeriodEnd(bool),
    CancelNow,
    Quantity(i64),
    /// Lets time pass: a period that ended renews, or ends the subscription
    /// when it was set to cancel.
    Refresh,
}

/// Whether a reconciliation walk may check an org now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalkClaim {
    Taken,
    /// Another pass holds the org (possibly a pass that died: its lease is
    /// short and runs out by itself).
    LeasedElsewhere {
        holder: String,
        until: Timestamp,
    },
    /// Another pass checked it within the freshness window.
    CheckedRecently {
        at: Timestamp,
    },
}

/// A paid sandbox checkout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxPayment {
    pub checkout: CheckoutRecord,
    pub subscription: SandboxSubscription,
}

/// When to try an unmatched or failed event again, as stored (the rule is
/// [`orgplane_core::subscription::next_retry_at`]).
fn next_attempt(attempts: i64, received_at: Timestamp, now: Timestamp) -> Option<i64> {
    orgplane_core::subscription::next_retry_at(attempts, received_at, now).map(millis)
}

fn corrupt_provider(text: &str) -> StoreError {
    StoreError::Corrupt(format!("provider `{text}`"))
}

fn sandbox_id(prefix: &str) -> String {
    // The id alphabet and time order of orgplane's typed ids, under a sandbox prefix.
    format!("{prefix}_{}", &EventId::new().to_string()[4..])
}

// ---------------------------------------------------------------------------
// Statements and rows shared by the functions below.

const SUBSCRIPTION_COLUMNS: &str = "id, org_id, provider, provider_subscription_id, provider_customer_id, status, price_id, item_id, quantity, current_period_end, cancel_at_period_end, trial_end, past_due_since, portal_url, observed_at";

const INSERT_EVENT: &str = "INSERT INTO provider_events (id, provider, event_id, event_type, occurred_at, status, outcome, error, org_id, \
     provider_subscription_id, provider_customer_id, payload, attempts, next_attempt_at, received_at, processed_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 1, $13, $14, $14) ON CONFLICT (provider, event_id) DO NOTHING RETURNING id";

const MARK_EVENT: &str = "UPDATE provider_events SET status = $2, outcome = $3, error = $4, org_id = COALESCE($5, org_id), \
     provider_subscription_id = COALESCE($6, provider_subscription_id), provider_customer_id = COALESCE($7, provider_customer_id), \
     next_attempt_at = $8, lease_until = NULL, processed_at = $9 WHERE id = $1";

const EVENT_COLUMNS: &str = "id, provider, event_id, event_type, status, outcome, error, org_id, provider_subscription_id, provider_customer_id, attempts, occurred_at, received_at, processed_at, next_attempt_at";

/// A `provider_events` row as stored (the columns of [`EVENT_COLUMNS`]).
struct EventRow {
    id: String,
    provider: String,
    event_id: String,
    event_type: String,
    status: String,
    outcome: Option<String>,
    error: Option<String>,
    org_id: Option<String>,
    provider_subscription_id: Option<String>,
    provider_customer_id: Option<String>,
    attempts: i64,
    occurred_at: Option<i64>,
    received_at: i64,
    processed_at: i64,
    next_attempt_at: Option<i64>,
}

impl FromSqlRow for EventRow {
    fn from_row<DB: Sql>(row: &Row<DB>) -> sqlx::Result<Self> {
        Ok(EventRow {
            id: row.try_get("id")?,
            provider: row.try_get("provider")?,
            event_id: row.try_get("event_id")?,
            event_type: row.try_get("event_type")?,
            status: row.try_get("status")?,
            outcome: row.try_get("outcome")?,
            error: row.try_get("error")?,
            org_id: row.try_get("org_id")?,
            provider_subscription_id: row.try_get("provider_subscription_id")?,
            provider_customer_id: row.try_get("provider_customer_id")?,
            attempts: row.try_get("attempts")?,
            occurred_at: row.try_get("occurred_at")?,
            received_at: row.try_get("received_at")?,
            processed_at: row.try_get("processed_at")?,
            next_attempt_at: row.try_get("next_attempt_at")?,
        })
    }
}

fn event_from_row(row: EventRow) -> Result<ProviderEventRecord> {
    Ok(ProviderEventRecord {
        id: parse_id(&row.id)?,
        provider: Provider::parse(&row.provider).ok_or_else(|| corrupt_provider(&row.provider))?,
        event_id: row.event_id,
        event_type: row.event_type,
        status: ProviderEventStatus::parse(&row.status)
            .ok_or_else(|| StoreError::Corrupt(format!("provider event status `{}`", row.status)))?,
        outcome: row.outcome,
        error: row.error,
        org_id: row.org_id,
        provider_subscription_id: row.provider_subscription_id,
        provider_customer_id: row.provider_customer_id,
        attempts: row.attempts,
        occurred_at: row.occurred_at.map(from_millis).transpose()?,
        received_at: from_millis(row.received_at)?,
        processed_at: from_millis(row.processed_at)?,
        next_attempt_at: row.next_attempt_at.map(from_millis).transpose()?,
    })
}

const CHECKOUT_COLUMNS: &str = "id, org_id, provider, plan, price_id, quantity, started_by, success_url, cancel_url, session_id, url, status, created_at";

/// A `checkouts` row as stored (the columns of [`CHECKOUT_COLUMNS`]).
struct CheckoutRow {
    id: String,
    org_id: String,
    provider: String,
    plan: String,
    price_id: String,
    quantity: i64,
    started_by: Option<String>,
    success_url: String,
    cancel_url: String,
    session_id: Option<String>,
    url: Option<String>,
    status: String,
    created_at: i64,
}

impl FromSqlRow for CheckoutRow {
    fn from_row<DB: Sql>(row: &Row<DB>) -> sqlx::Result<Self> {
        Ok(CheckoutRow {
            id: row.try_get("id")?,
            org_id: row.try_get("org_id")?,
            provider: row.try_get("provider")?,
            plan: row.try_get("plan")?,
            price_id: row.try_get("price_id")?,
            quantity: row.try_get("quantity")?,
            started_by: row.try_get("started_by")?,
            success_url: row.try_get("success_url")?,
            cancel_url: row.try_get("cancel_url")?,
            session_id: row.try_get("session_id")?,
            url: row.try_get("url")?,
            status: row.try_get("status")?,
            created_at: row.try_get("created_at")?,
        })
    }
}

fn checkout_from_row(row: CheckoutRow) -> Result<CheckoutRecord> {
    Ok(CheckoutRecord {
        id: row.id,
        org_id: parse_id(&row.org_id)?,
        provider: Provider::parse(&row.provider).ok_or_else(|| corrupt_provider(&row.provider))?,
        plan: row.plan,
        price_id: row.price_id,
        quantity: row.quantity,
        started_by: row.started_by.as_deref().map(parse_id).transpose()?,
        success_url: row.success_url,
        cancel_url: row.cancel_url,
        session_id: row.session_id,
        url: row.url,
        status: CheckoutStatus::parse(&row.status)
            .ok_or_else(|| StoreError::Corrupt(format!("checkout status `{}`", row.status)))?,
        created_at: from_millis(row.created_at)?,
    })
}

const SANDBOX_COLUMNS: &str = "id, checkout_id, org_id, customer_id, price_id, quantity, status, cancel_at_period_end, current_period_end, updated_at";

/// A `sandbox_subscriptions` row as stored (the columns of [`SANDBOX_COLUMNS`]).
struct SandboxRow {
    id: String,
    checkout_id: String,
    org_id: String,
    customer_id: String,
    price_id: String,
    quantity: i64,
    status: String,
    cancel_at_period_end: bool,
    current_period_end: i64,
    updated_at: i64,
}

impl FromSqlRow for SandboxRow {
    fn from_row<DB: Sql>(row: &Row<DB>) -> sqlx::Result<Self> {
        Ok(SandboxRow {
            id: row.try_get("id")?,
            checkout_id: row.try_get("checkout_id")?,
            org_id: row.try_get("org_id")?,
            customer_id: row.try_get("customer_id")?,
            price_id: row.try_get("price_id")?,
            quantity: row.try_get("quantity")?,
            status: row.try_get("status")?,
            cancel_at_period_end: row.try_get("cancel_at_period_end")?,
            current_period_end: row.try_get("current_period_end")?,
            updated_at: row.try_get("updated_at")?,
        })
    }
}

fn sandbox_from_row(row: SandboxRow) -> Result<SandboxSubscription> {
    Ok(SandboxSubscription {
        id: row.id,
        checkout_id: row.checkout_id,
        org_id: parse_id(&row.org_id)?,
        customer_id: row.customer_id,
        price_id: row.price_id,
        quantity: row.quantity,
        status: SubscriptionStatus::parse(&row.status)
            .ok_or_else(|| StoreError::Corrupt(format!("sandbox subscription status `{}`", row.status)))?,
        cancel_at_period_end: row.cancel_at_period_end,
        current_period_end: from_millis(row.current_period_end)?,
        updated_at: from_millis(row.updated_at)?,
    })
}

// ---------------------------------------------------------------------------
// In-transaction steps, written once for both backends: each is generic over
// the database (`DB: Sql`, see `crate::sql`).

/// What resolving an event's org found.
enum Resolution {
    Found(OrgId, OrgKind),
    Unmatched,
    /// The delivery was stored before.
    Duplicate,
}

/// Whether the delivery `(provider, event_id)` is stored: inside the
/// caller's transaction (`&mut **tx`), or on the pool.
async fn delivery_stored<'e, DB: Sql>(
    executor: impl Executes<'e, Db = DB>,
    provider: &str,
    event_id: &str,
) -> Result<bool> {
    let row = query("SELECT id FROM provider_events WHERE provider = $1 AND event_id = $2")
        .bind(provider.to_owned())
        .bind(event_id.to_owned())
        .fetch_optional(executor)
        .await?;
    Ok(row.is_some())
}

/// The org an event belongs to, locked (its version bumped, as
/// [`lock_org`] does): the org it names (if it exists), then the org holding its
/// subscription, then the org its customer is tied to. With `dedupe` (the
/// provider and event id of a new delivery), a delivery stored before is
/// found in the same statement that locks the named org.
async fn resolve_and_lock<DB: Sql>(
    tx: &mut sqlx::Transaction<'_, DB>,
    effect: &EventEffect,
    dedupe: Option<(&str, &str)>,
) -> Result<Resolution> {
    let provider = effect.provider.as_str();
    let mut candidates: Vec<OrgId> =
        [effect.org_hint, effect.snapshot.as_ref().and_then(|s| s.snapshot.org_id)].into_iter().flatten().collect();
    candidates.dedup();
    let mut looked_up = false;
    let mut dedupe_pending = dedupe;
    loop {
        if candidates.is_empty() {
            if looked_up {
                return Ok(Resolution::Unmatched);
            }
            looked_up = true;
            if let Some((p, e)) = dedupe_pending.take()
                && delivery_stored(&mut **tx, p, e).await?
            {
                return Ok(Resolution::Duplicate);
            }
            if let Some(psid) = effect.subscription_ref() {
                candidates.extend(crate::apply::org_of_subscription(tx, effect.provider, psid).await?);
            }
            if let (true, Some(customer)) = (candidates.is_empty(), effect.customer_ref()) {
                let row = query(
                    "SELECT org_id FROM billing_customers WHERE provider = $1 AND customer_id = $2 \
                     UNION ALL SELECT org_id FROM subscriptions WHERE provider = $1 AND provider_customer_id = $2",
                )
                .bind(provider.to_owned())
                .bind(customer.to_owned())
                .fetch_optional(&mut **tx)
                .await?;
                if let Some(row) = row {
                    candidates.push(parse_id(&row.try_get::<String, _>(0)?)?);
                }
            }
            if candidates.is_empty() {
                return Ok(Resolution::Unmatched);
            }
        }
        let candidate = candidates.remove(0);
        let row = match dedupe_pending {
            Some((p, e)) => {
                query(
                    "UPDATE orgs SET version = version + 1 WHERE id = $1 \
                     AND NOT EXISTS (SELECT 1 FROM provider_events WHERE provider = $2 AND event_id = $3) RETURNING kind",
                )
                .bind(candidate.to_string())
                .bind(p.to_owned())
                .bind(e.to_owned())
                .fetch_optional(&mut **tx)
                .await?
            }
            None => {
                query("UPDATE orgs SET version = version + 1 WHERE id = $1 RETURNING kind")
                    .bind(candidate.to_string())
                    .fetch_optional(&mut **tx)
                    .await?
            }
        };
        match row {
            Some(row) => {
                let kind: String = row.try_get(0)?;
                let kind = OrgKind::parse(&kind).ok_or_else(|| StoreError::Corrupt(format!("org kind `{kind}`")))?;
                return Ok(Resolution::Found(candidate, kind));
            }
            // No such org, or a delivery seen before: which one?
            None => {
                if let Some((p, e)) = dedupe_pending.take()
                    && delivery_stored(&mut **tx, p, e).await?
                {
                    return Ok(Resolution::Duplicate);
                }
            }
        }
    }
}

/// Where applying an event left it, before it is recorded on its row.
type Decided = (ProviderEventStatus, Option<ApplyOutcome>, Option<String>, Option<OrgId>);

/// Applies an event's effect inside the caller's transaction. `None` when
/// `dedupe` finds the delivery stored before (nothing was written), else the
/// [`ProcessedEvent`] and when to try it again (unmatched, failed), which
/// the caller records on the event row.
#[allow(clippy::too_many_arguments)]
async fn process_event<DB: Sql>(
    tx: &mut sqlx::Transaction<'_, DB>,
    id: ProviderEventId,
    effect: &EventEffect,
    actor: &Actor,
    now: Timestamp,
    attempts: i64,
    received: Timestamp,
    dedupe: Option<(&str, &str)>,
) -> Result<Option<(ProcessedEvent, Option<i64>)>> {
    let decided: Decided = if let Some(reason) = &effect.failure {
        (ProviderEventStatus::Failed, None, Some(reason.clone()), None)
    } else if effect.snapshot.is_none() && effect.customer_ref().is_none() {
        (ProviderEventStatus::Ignored, None, None, None)
    } else {
        match resolve_and_lock(tx, effect, dedupe).await? {
            Resolution::Duplicate => return Ok(None),
            Resolution::Unmatched => (
                ProviderEventStatus::Unmatched,
                None,
                Some(
                    "no organization matches this event (no org_id in its metadata, and its subscription and customer are unknown); \
                     it is kept and retried by reconciliation"
                        .to_owned(),
                ),
                None,
            ),
            Resolution::Found(org, kind) => {
                // A snapshot ties its own customer (when it is new to the org).
                let snapshot_customer = effect.snapshot.as_ref().and_then(|s| s.snapshot.provider_customer_id.as_deref());
                if let Some(customer) = effect.customer_id.as_deref().filter(|c| Some(*c) != snapshot_customer) {
                    crate::apply::link_customer(tx, effect.provider, customer, org, now).await?;
                }
                match &effect.snapshot {
                    None => (ProviderEventStatus::Applied, Some(ApplyOutcome::Linked), None, Some(org)),
                    Some(input) => match crate::apply::apply_snapshot(tx, org, kind, input, actor, now).await? {
                        // Applied, but the org pays twice: kept visible as failed, retried.
                        Ok(Applied { outcome, rival: Some(reason), .. }) => {
                            (ProviderEventStatus::Failed, Some(outcome), Some(reason), Some(org))
                        }
                        Ok(Applied { outcome, rival: None, .. }) => {
                            (ProviderEventStatus::Applied, Some(outcome), None, Some(org))
                        }
                        Err(Refused(reason)) => (ProviderEventStatus::Failed, None, Some(reason), Some(org)),
                    },
                }
            }
        }
    };
    let (status, outcome, error, org) = decided;
    let retry = match status {
        ProviderEventStatus::Unmatched | ProviderEventStatus::Failed => next_attempt(attempts, received, now),
        _ => None,
    };
    Ok(Some((ProcessedEvent { id, status, outcome, org_id: org, error }, retry)))
}

/// Inserts a new delivery with the result of processing it. `false` when
/// the unique key finds it stored before.
async fn insert_event<DB: Sql>(
    tx: &mut sqlx::Transaction<'_, DB>,
    job: &IngestJob,
    processed: &ProcessedEvent,
    retry: Option<i64>,
) -> Result<bool> {
    let inserted = query(INSERT_EVENT)
        .bind(processed.id.to_string())
        .bind(job.provider.as_str().to_owned())
        .bind(job.event_id.clone())
        .bind(job.event_type.clone())
        .bind(job.occurred_at.map(millis))
        .bind(processed.status.as_str().to_owned())
        .bind(processed.outcome.map(|o| o.as_str().to_owned()))
        .bind(processed.error.clone())
        .bind(processed.org_id.map(|o| o.to_string()))
        .bind(job.effect.subscription_ref().map(str::to_owned))
        .bind(job.effect.customer_ref().map(str::to_owned))
        .bind(job.payload.clone())
        .bind(retry)
        .bind(millis(job.now))
        .fetch_optional(&mut **tx)
        .await?;
    Ok(inserted.is_some())
}

/// One delivery to store and apply, owned (a batch leader may apply another
/// request's delivery).
struct IngestJob {
    provider: Provider,
    event_id: String,
    event_type: String,
    occurred_at: Option<Timestamp>,
    payload: Vec<u8>,
    effect: EventEffect,
    now: Timestamp,
}

/// SQLite admits one writer at a time. A transaction that finds the write
/// lock taken waits in SQLite's busy handler, which sleeps (1 ms, 2 ms, 5 ms,
/// …) while the lock may already be free again, and each statement is a
/// round trip to the connection's worker thread. So on SQLite, billing
/// writes queue here, per database file, and concurrent webhook deliveries
/// are applied together: whoever takes the gate applies every delivery
/// waiting at that moment in one transaction (group commit) and answers each.
/// PostgreSQL needs none of this: concurrent deliveries run concurrently and
/// the unique key and the org's row lock keep them apart.
struct SqliteWrites {
    gate: Arc<tokio::sync::Mutex<()>>,
    pending: std::sync::Mutex<Vec<(IngestJob, oneshot::Sender<Result<Ingest>>)>>,
}

fn sqlite_writes(pool: &sqlx::SqlitePool) -> Arc<SqliteWrites> {
    static ALL: OnceLock<std::sync::Mutex<HashMap<PathBuf, Arc<SqliteWrites>>>> = OnceLock::new();
    let file = pool.connect_options().get_filename().to_path_buf();
    let mut all = ALL.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    all.entry(file)
        .or_insert_with(|| {
            Arc::new(SqliteWrites { gate: Arc::new(tokio::sync::Mutex::new(())), pending: Default::default() })
        })
        .clone()
}

impl Store {
    /// On SQLite, waits for the billing write gate (see [`SqliteWrites`]).
    async fn sqlite_write_gate(&self) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        match &self.backend {
            Backend::Sqlite(pool) => Some(sqlite_writes(pool).gate.clone().lock_owned().await),
            Backend::Postgres(_) => None,
        }
    }

    /// Whether the store was closed (background jobs stop then).
    pub fn is_closed(&self) -> bool {
        match &self.backend {
            Backend::Sqlite(pool) => pool.is_closed(),
            Backend::Postgres(pool) => pool.is_closed(),
        }
    }

    /// Stores a verified provider event and applies its effect, in one
    /// transaction: the event row and everything it changed commit together
    /// or not at all. A delivery seen before (same provider and event id)
    /// changes nothing and answers [`Ingest::Duplicate`], also when copies
    /// arrive at once (the unique key on the event decides).
    ///
    /// If applying fails on the database's side, the event is stored as
    /// `failed` with the reason (in a transaction of its own) and retried
    /// later; only when even that fails, or when the database is
    /// unavailable ([`StoreError::Unavailable`], answered at once), is the
    /// error returned (the provider then delivers again).
    pub async fn ingest_provider_event(
        &self,
        event: &NewProviderEvent<'_>,
        effect: &EventEffect,
        now: Timestamp,
    ) -> Result<Ingest> {
        let job = IngestJob {
            provider: event.provider,
            event_id: event.event_id.to_owned(),
            event_type: event.event_type.to_owned(),
            occurred_at: event.occurred_at,
            payload: event.payload.to_vec(),
            effect: effect.clone(),
            now,
        };
        let Backend::Sqlite(pool) = &self.backend else {
            return self.ingest_one(&job).await;
        };
        let writes = sqlite_writes(pool);
        let (reply, mut answer) = oneshot::channel();
        writes.pending.lock().unwrap_or_else(|e| e.into_inner()).push((job, reply));
        let gate = writes.gate.clone().lock_owned().await;
        // A batch that held the gate before may have applied this delivery.
        match answer.try_recv() {
            Ok(result) => return result,
            Err(oneshot::error::TryRecvError::Empty) => {}
            Err(oneshot::error::TryRecvError::Closed) => {
                return Err(StoreError::Corrupt("a webhook batch ended without an answer".into()));
            }
        }
        let jobs = std::mem::take(&mut *writes.pending.lock().unwrap_or_else(|e| e.into_inner()));
        // In a task of its own, so that a dropped request can't abandon the
        // batch (and the other requests waiting on it) half-way.
        let store = self.clone();
        let pool = pool.clone();
        tokio::spawn(async move {
            store.ingest_batch(&pool, jobs).await;
            drop(gate);
        });
        answer.await.unwrap_or_else(|_| Err(StoreError::Corrupt("a webhook batch ended without an answer".into())))
    }

    /// Applies a batch of deliveries in one SQLite transaction (the caller
    /// holds the gate). If anything fails, the batch rolls back and each
    /// delivery is applied on its own.
    async fn ingest_batch(&self, pool: &sqlx::SqlitePool, jobs: Vec<(IngestJob, oneshot::Sender<Result<Ingest>>)>) {
        let attempt: Result<Vec<Ingest>> = async {
            let mut tx = pool.begin_write().await?;
            let mut results = Vec::with_capacity(jobs.len());
            for (job, _) in &jobs {
                let actor = Actor::Provider(job.event_id.clone());
                let dedupe = Some((job.provider.as_str(), job.event_id.as_str()));
                let id = ProviderEventId::new();
                match process_event(&mut tx, id, &job.effect, &actor, job.now, 1, job.now, dedupe).await? {
                    None => results.push(Ingest::Duplicate),
                    Some((processed, retry)) => {
                        if insert_event(&mut tx, job, &processed, retry).await? {
                            results.push(Ingest::Processed(processed));
                        } else if processed.org_id.is_none() {
                            // Nothing else was written for it: a plain duplicate.
                            results.push(Ingest::Duplicate);
                        } else {
                            return Err(StoreError::Corrupt(format!(
                                "provider event {} was applied in a batch although it was stored before",
                                job.event_id
                            )));
                        }
                    }
                }
            }
            tx.commit().await?;
            Ok(results)
        }
        .await;
        match attempt {
            Ok(results) => {
                for ((_, reply), result) in jobs.into_iter().zip(results) {
                    if let Ingest::Processed(ProcessedEvent { org_id: Some(org), .. }) = &result {
                        self.touched(*org).await;
                    }
                    let _ = reply.send(Ok(result));
                }
            }
            // Nothing can be stored: every delivery answers so at once (the
            // provider delivers again), rather than each waiting its turn to fail.
            Err(StoreError::Unavailable(reason)) => {
                for (_, reply) in jobs {
                    let _ = reply.send(Err(StoreError::Unavailable(reason.clone())));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, deliveries = jobs.len(), "a webhook batch failed; applying its deliveries one by one");
                for (job, reply) in jobs {
                    let _ = reply.send(self.ingest_one(&job).await);
                }
            }
        }
    }

    /// Stores and applies one delivery in a transaction of its own (on
    /// SQLite, the caller holds the gate).
    async fn ingest_one(&self, job: &IngestJob) -> Result<Ingest> {
        let id = ProviderEventId::new();
        let attempt = match &self.backend {
            Backend::Sqlite(pool) => ingest_in_tx(pool, id, job).await,
            Backend::Postgres(pool) => ingest_in_tx(pool, id, job).await,
        };
        match attempt {
            Ok(ingest) => {
                if let Ingest::Processed(ProcessedEvent { org_id: Some(org), .. }) = &ingest {
                    self.touched(*org).await;
                }
                Ok(ingest)
            }
            Err(StoreError::Domain(e)) => Err(e.into()),
            // Storing it as failed would fail too: the provider delivers it again.
            Err(e @ StoreError::Unavailable(_)) => Err(e),
            Err(e) => {
                tracing::error!(error = %e, provider = job.provider.as_str(), event_id = %job.event_id,
                    "applying a provider event failed; storing it as failed for a retry");
                let reason = format!("applying failed: {e}");
                let stored = match &self.backend {
                    Backend::Sqlite(pool) => store_failed_delivery(pool, id, job, &reason).await,
                    Backend::Postgres(pool) => store_failed_delivery(pool, id, job, &reason).await,
                }?;
                if !stored {
                    return Ok(Ingest::Duplicate);
                }
                Ok(Ingest::Processed(ProcessedEvent {
                    id,
                    status: ProviderEventStatus::Failed,
                    outcome: None,
                    org_id: None,
                    error: Some(reason),
                }))
            }
        }
    }

    /// Applies a claimed unmatched or failed event again. `None` when it was
    /// applied meanwhile (by another replica, or a later delivery).
    pub async fn retry_provider_event(
        &self,
        id: ProviderEventId,
        event_id: &str,
        effect: &EventEffect,
        now: Timestamp,
    ) -> Result<Option<ProcessedEvent>> {
        let actor = Actor::Provider(event_id.to_owned());
        let gate = self.sqlite_write_gate().await;
        let attempt = match &self.backend {
            Backend::Sqlite(pool) => retry_in_tx(pool, id, effect, &actor, now).await,
            Backend::Postgres(pool) => retry_in_tx(pool, id, effect, &actor, now).await,
        };
        drop(gate);
        match attempt {
            Ok(processed) => {
                if let Some(ProcessedEvent { org_id: Some(org), .. }) = &processed {
                    self.touched(*org).await;
                }
                Ok(processed)
            }
            Err(StoreError::Domain(e)) => Err(e.into()),
            // Not the event's fault: its lease ends and a later pass retries it.
            Err(e @ StoreError::Unavailable(_)) => Err(e),
            Err(e) => {
                tracing::error!(error = %e, %id, "retrying a provider event failed");
                let reason = format!("applying failed: {e}");
                match &self.backend {
                    Backend::Sqlite(pool) => mark_retry_failed(pool, id, &reason, now).await,
                    Backend::Postgres(pool) => mark_retry_failed(pool, id, &reason, now).await,
                }?;
                Ok(Some(ProcessedEvent {
                    id,
                    status: ProviderEventStatus::Failed,
                    outcome: None,
                    org_id: None,
                    error: Some(reason),
                }))
            }
        }
    }

    /// Whether a delivery was stored before (a cheap check before asking the
    /// provider anything; the unique key decides for real).
    pub async fn provider_event_seen(&self, provider: Provider, event_id: &str) -> Result<bool> {
        match &self.backend {
            Backend::Sqlite(pool) => delivery_stored(pool, provider.as_str(), event_id).await,
            Backend::Postgres(pool) => delivery_stored(pool, provider.as_str(), event_id).await,
        }
    }

    /// Claims up to `limit` unmatched or failed events that are due, each
    /// with a lease of `lease` (so that no other pass retries it meanwhile).
    /// With `org`, only that org's failed events.
    pub async fn claim_due_provider_events(
        &self,
        now: Timestamp,
        limit: u32,
        lease: time::Duration,
        org: Option<OrgId>,
    ) -> Result<Vec<RetryCandidate>> {
        match &self.backend {
            Backend::Sqlite(pool) => claim_due_provider_events(pool, now, limit, lease, org).await,
            Backend::Postgres(pool) => claim_due_provider_events(pool, now, limit, lease, org).await,
        }
    }

    /// Stored provider events, newest first, optionally of one status.
    pub async fn provider_events(
        &self,
        status: Option<ProviderEventStatus>,
        page: &PageRequest,
    ) -> Result<Page<ProviderEventRecord>> {
        let rows = match &self.backend {
            Backend::Sqlite(pool) => provider_events(pool, status, page).await,
            Backend::Postgres(pool) => provider_events(pool, status, page).await,
        }?;
        let data = rows.into_iter().map(event_from_row).collect::<Result<Vec<_>>>()?;
        Ok(Page::from_rows(data, page.limit))
    }

    /// One stored provider event by its delivery id.
    pub async fn provider_event(&self, provider: Provider, event_id: &str) -> Result<Option<ProviderEventRecord>> {
        let row = match &self.backend {
            Backend::Sqlite(pool) => provider_event(pool, provider, event_id).await,
            Backend::Postgres(pool) => provider_event(pool, provider, event_id).await,
        }?;
        row.map(event_from_row).transpose()
    }

    /// Applies a provider's answer (to a cancel, a seat change, a sync or a
    /// reconciliation) to the org's subscription, attributed to `actor`.
    /// Returns what it did and the subscription as now stored.
    pub async fn apply_subscription_snapshot(
        &self,
        org: OrgId,
        input: &SnapshotInput,
        actor: &Actor,
        now: Timestamp,
    ) -> Result<(ApplyOutcome, Option<StoredSubscription>)> {
        let gate = self.sqlite_write_gate().await;
        let outcome = match &self.backend {
            Backend::Sqlite(pool) => apply_provider_answer(pool, org, input, actor, now).await,
            Backend::Postgres(pool) => apply_provider_answer(pool, org, input, actor, now).await,
        }?;
        drop(gate);
        self.touched(org).await;
        Ok((outcome, self.subscription(org).await?))
    }

    /// Live subscriptions with an org id after `after`, in org order (a
    /// reconciliation pass walks them page by page).
    pub async fn live_subscriptions(&self, after: Option<OrgId>, limit: u32) -> Result<Vec<StoredSubscription>> {
        let rows = match &self.backend {
            Backend::Sqlite(pool) => live_subscriptions(pool, after, limit).await,
            Backend::Postgres(pool) => live_subscriptions(pool, after, limit).await,
        }?;
        rows.into_iter().map(subscription_from_row).collect()
    }

    /// Takes (or, for the same holder, renews) the org's reconciliation
    /// lease until `now + ttl`, unless another holder's lease is still
    /// running. `true` = taken.
    pub async fn claim_reconcile_lease(
        &self,
        org: OrgId,
        holder: &str,
        now: Timestamp,
        ttl: time::Duration,
    ) -> Result<bool> {
        Ok(self.claim_reconcile_walk(org, holder, now, ttl, None).await? == WalkClaim::Taken)
    }

    /// Takes the org's reconciliation lease for a walk over every org: as
    /// [`Store::claim_reconcile_lease`], and only when the org was not
    /// checked since `checked_since` (another pass did it just now), so
    /// that concurrent passes fetch each subscription once. In one
    /// conditional upsert; then says why it was not taken.
    pub async fn claim_reconcile_walk(
        &self,
        org: OrgId,
        holder: &str,
        now: Timestamp,
        ttl: time::Duration,
        checked_since: Option<Timestamp>,
    ) -> Result<WalkClaim> {
        let taken = match &self.backend {
            Backend::Sqlite(pool) => take_reconcile_lease(pool, org, holder, now, ttl, checked_since).await,
            Backend::Postgres(pool) => take_reconcile_lease(pool, org, holder, now, ttl, checked_since).await,
        }?;
        if taken {
            return Ok(WalkClaim::Taken);
        }
        let lease = match &self.backend {
            Backend::Sqlite(pool) => reconcile_lease(pool, org).await,
            Backend::Postgres(pool) => reconcile_lease(pool, org).await,
        }?;
        Ok(match lease {
            Some((holder, until, _)) if until >= millis(now) => {
                WalkClaim::LeasedElsewhere { holder, until: from_millis(until)? }
            }
            Some((_, _, Some(checked))) => WalkClaim::CheckedRecently { at: from_millis(checked)? },
            // Released between the two statements: the next pass takes it.
            _ => WalkClaim::CheckedRecently { at: now },
        })
    }

    /// Ends `holder`'s lease on the org; `checked_at` records a completed
    /// check (which a walk within the freshness window then skips).
    pub async fn release_reconcile_lease(&self, org: OrgId, holder: &str, checked_at: Option<Timestamp>) -> Result<()> {
        match &self.backend {
            Backend::Sqlite(pool) => release_reconcile_lease(pool, org, holder, checked_at).await,
            Backend::Postgres(pool) => release_reconcile_lease(pool, org, holder, checked_at).await,
        }
    }

    /// Records a checkout about to be opened. Refused with
    /// `subscription_exists` while the org has a live subscription (checked
    /// under the org's lock).
    pub async fn begin_checkout(&self, new: &NewCheckout, actor: &Actor, now: Timestamp) -> Result<CheckoutRecord> {
        let id = sandbox_id("chk");
        match &self.backend {
            Backend::Sqlite(pool) => begin_checkout(pool, &id, new, actor, now).await,
            Backend::Postgres(pool) => begin_checkout(pool, &id, new, actor, now).await,
        }?;
        self.checkout(&id).await?.ok_or_else(|| StoreError::Corrupt(format!("checkout {id} vanished")))
    }

    /// Records the provider's session for a checkout.
    pub async fn checkout_opened(&self, id: &str, session_id: &str, url: &str, now: Timestamp) -> Result<()> {
        match &self.backend {
            Backend::Sqlite(pool) => checkout_opened(pool, id, session_id, url, now).await,
            Backend::Postgres(pool) => checkout_opened(pool, id, session_id, url, now).await,
        }
    }

    /// Marks an open checkout abandoned (the provider refused it, or the
    /// buyer cancelled). `false` when it was no longer open.
    pub async fn cancel_checkout(&self, id: &str, now: Timestamp) -> Result<bool> {
        match &self.backend {
            Backend::Sqlite(pool) => cancel_checkout(pool, id, now).await,
            Backend::Postgres(pool) => cancel_checkout(pool, id, now).await,
        }
    }

    pub async fn checkout(&self, id: &str) -> Result<Option<CheckoutRecord>> {
        let row = match &self.backend {
            Backend::Sqlite(pool) => checkout(pool, id).await,
            Backend::Postgres(pool) => checkout(pool, id).await,
        }?;
        row.map(checkout_from_row).transpose()
    }

    /// The provider customer the org is known as, if any (so that a new
    /// checkout reuses it).
    pub async fn org_customer(&self, org: OrgId, provider: Provider) -> Result<Option<String>> {
        match &self.backend {
            Backend::Sqlite(pool) => org_customer(pool, org, provider).await,
            Backend::Postgres(pool) => org_customer(pool, org, provider).await,
        }
    }

    /// Makes `target` (a member) the org's billing admin. With
    /// `only_if_current`, the change happens only while that user is still
    /// the billing admin (the caller's authority, checked under the lock).
    pub async fn set_billing_admin(
        &self,
        org: OrgId,
        target: UserId,
        only_if_current: Option<UserId>,
        actor: &Actor,
        now: Timestamp,
    ) -> Result<()> {
        match &self.backend {
            Backend::Sqlite(pool) => set_billing_admin(pool, org, target, only_if_current, actor, now).await,
            Backend::Postgres(pool) => set_billing_admin(pool, org, target, only_if_current, actor, now).await,
        }?;
        self.touched(org).await;
        Ok(())
    }

    // -- The sandbox provider's side ------------------------------------------------

    /// Pays an open sandbox checkout: the sandbox provider creates its
    /// subscription, active for `period`. Paying twice returns the first
    /// payment; a cancelled checkout can't be paid.
    pub async fn sandbox_pay(
        &self,
        checkout_id: &str,
        now: Timestamp,
        period: time::Duration,
    ) -> Result<SandboxPayment> {
        match &self.backend {
            Backend::Sqlite(pool) => sandbox_pay(pool, checkout_id, now, period).await,
            Backend::Postgres(pool) => sandbox_pay(pool, checkout_id, now, period).await,
        }
    }

    pub async fn sandbox_subscription(&self, id: &str) -> Result<Option<SandboxSubscription>> {
        let row = match &self.backend {
            Backend::Sqlite(pool) => sandbox_subscription(pool, id).await,
            Backend::Postgres(pool) => sandbox_subscription(pool, id).await,
        }?;
        row.map(sandbox_from_row).transpose()
    }

    /// Changes a sandbox subscription as the sandbox provider's API would,
    /// in one statement. An ended subscription can't change (`conflict`),
    /// except by a refresh, which leaves it as it is.
    pub async fn sandbox_change(
        &self,
        id: &str,
        change: SandboxChange,
        now: Timestamp,
        period: time::Duration,
    ) -> Result<SandboxSubscription> {
        let row = match &self.backend {
            Backend::Sqlite(pool) => sandbox_change(pool, id, change, now, period).await,
            Backend::Postgres(pool) => sandbox_change(pool, id, change, now, period).await,
        }?;
        match row {
            Some(row) => sandbox_from_row(row),
            None => match self.sandbox_subscription(id).await? {
                None => Err(DomainError::NotFound { what: "sandbox subscription" }.into()),
                Some(_) => Err(DomainError::conflict("this subscription has ended; start a new checkout").into()),
            },
        }
    }
}

// ---------------------------------------------------------------------------
// The operations behind the `Store` methods above, written once for both
// backends: each `Store` method picks the backend with one `match` and calls
// one of these (see `crate::tx`).

/// Stores and applies one delivery in a transaction of its own. `Duplicate`
/// when it was stored before: then nothing it did is kept.
async fn ingest_in_tx<DB: Sql>(pool: &Pool<DB>, id: ProviderEventId, job: &IngestJob) -> Result<Ingest> {
    let actor = Actor::Provider(job.event_id.clone());
    let mut tx = pool.begin_write().await?;
    let dedupe = Some((job.provider.as_str(), job.event_id.as_str()));
    let Some((processed, retry)) = process_event(&mut tx, id, &job.effect, &actor, job.now, 1, job.now, dedupe).await?
    else {
        tx.rollback().await?;
        return Ok(Ingest::Duplicate);
    };
    // The unique key decides: a copy that raced this one inserts
    // nothing, and everything it did rolls back with it.
    if !insert_event(&mut tx, job, &processed, retry).await? {
        tx.rollback().await?;
        return Ok(Ingest::Duplicate);
    }
    tx.commit().await?;
    Ok(Ingest::Processed(processed))
}

/// Stores a delivery that could not be applied as `failed`, with `reason`,
/// for a retry. `false` when the delivery was stored before.
async fn store_failed_delivery<DB: Sql>(
    pool: &Pool<DB>,
    id: ProviderEventId,
    job: &IngestJob,
    reason: &str,
) -> Result<bool> {
    let stored = query(
        "INSERT INTO provider_events (id, provider, event_id, event_type, occurred_at, status, error, payload, attempts, \
         next_attempt_at, received_at, processed_at) VALUES ($1, $2, $3, $4, $5, 'failed', $6, $7, 1, $8, $9, $9) \
         ON CONFLICT (provider, event_id) DO NOTHING",
    )
    .bind(id.to_string())
    .bind(job.provider.as_str().to_owned())
    .bind(job.event_id.clone())
    .bind(job.event_type.clone())
    .bind(job.occurred_at.map(millis))
    .bind(reason.to_owned())
    .bind(job.payload.clone())
    .bind(next_attempt(1, job.now, job.now))
    .bind(millis(job.now))
    .execute(pool)
    .await?;
    Ok(stored.rows_affected() != 0)
}

/// Claims a stored unmatched or failed event (one more attempt), applies
/// it and records the result on its row, in one transaction. `None` when it
/// is no longer unmatched or failed.
async fn retry_in_tx<DB: Sql>(
    pool: &Pool<DB>,
    id: ProviderEventId,
    effect: &EventEffect,
    actor: &Actor,
    now: Timestamp,
) -> Result<Option<ProcessedEvent>> {
    let mut tx = pool.begin_write().await?;
    let claimed: Option<(i64, i64)> = query_as(
        "UPDATE provider_events SET attempts = attempts + 1 WHERE id = $1 AND status IN ('unmatched', 'failed') \
         RETURNING attempts, received_at",
    )
    .bind(id.to_string())
    .fetch_optional(&mut *tx)
    .await?;
    let Some((attempts, received)) = claimed else {
        tx.rollback().await?;
        return Ok(None);
    };
    let received = from_millis(received)?;
    let Some((processed, retry)) = process_event(&mut tx, id, effect, actor, now, attempts, received, None).await?
    else {
        return Err(StoreError::Corrupt("a retried event can't be a new delivery's duplicate".into()));
    };
    query(MARK_EVENT)
        .bind(id.to_string())
        .bind(processed.status.as_str().to_owned())
        .bind(processed.outcome.map(|o| o.as_str().to_owned()))
        .bind(processed.error.clone())
        .bind(processed.org_id.map(|o| o.to_string()))
        .bind(effect.subscription_ref().map(str::to_owned))
        .bind(effect.customer_ref().map(str::to_owned))
        .bind(retry)
        .bind(millis(now))
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Some(processed))
}

/// Records a retry that failed on the database's side as `failed`, with
/// `reason`, and when to try again (if it is still unmatched or failed).
async fn mark_retry_failed<DB: Sql>(pool: &Pool<DB>, id: ProviderEventId, reason: &str, now: Timestamp) -> Result<()> {
    let row: Option<(i64, i64)> = query_as(
        "UPDATE provider_events SET attempts = attempts + 1, status = 'failed', error = $2, lease_until = NULL, processed_at = $3 \
         WHERE id = $1 AND status IN ('unmatched', 'failed') RETURNING attempts, received_at",
    )
    .bind(id.to_string())
    .bind(reason.to_owned())
    .bind(millis(now))
    .fetch_optional(pool)
    .await?;
    if let Some((attempts, received)) = row {
        query("UPDATE provider_events SET next_attempt_at = $2 WHERE id = $1")
            .bind(id.to_string())
            .bind(next_attempt(attempts, from_millis(received)?, now))
            .execute(pool)
            .await?;
    }
    Ok(())
}

async fn claim_due_provider_events<DB: Sql>(
    pool: &Pool<DB>,
    now: Timestamp,
    limit: u32,
    lease: time::Duration,
    org: Option<OrgId>,
) -> Result<Vec<RetryCandidate>> {
    let now_ms = millis(now);
    let until = millis(now + lease);
    let ids: Vec<(String,)> = match org {
        None => {
            query_as(
                "SELECT id FROM provider_events WHERE next_attempt_at IS NOT NULL AND next_attempt_at <= $1 \
                 AND status IN ('unmatched', 'failed') AND (lease_until IS NULL OR lease_until < $1) \
                 ORDER BY next_attempt_at LIMIT $2",
            )
            .bind(now_ms)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?
        }
        Some(org) => {
            query_as(
                "SELECT id FROM provider_events WHERE next_attempt_at IS NOT NULL AND next_attempt_at <= $1 \
                 AND status IN ('unmatched', 'failed') AND (lease_until IS NULL OR lease_until < $1) AND org_id = $3 \
                 ORDER BY next_attempt_at LIMIT $2",
            )
            .bind(now_ms)
            .bind(i64::from(limit))
            .bind(org.to_string())
            .fetch_all(pool)
            .await?
        }
    };
    let mut claimed = Vec::with_capacity(ids.len());
    for (id,) in ids {
        let row: Option<(String, String, String, Vec<u8>)> = query_as(
            "UPDATE provider_events SET lease_until = $2 WHERE id = $1 AND status IN ('unmatched', 'failed') \
             AND (lease_until IS NULL OR lease_until < $3) RETURNING provider, event_id, event_type, payload",
        )
        .bind(id.clone())
        .bind(until)
        .bind(now_ms)
        .fetch_optional(pool)
        .await?;
        if let Some((provider, event_id, event_type, payload)) = row {
            claimed.push(RetryCandidate {
                id: parse_id(&id)?,
                provider: Provider::parse(&provider).ok_or_else(|| corrupt_provider(&provider))?,
                event_id,
                event_type,
                payload,
            });
        }
    }
    Ok(claimed)
}

async fn provider_events<DB: Sql>(
    pool: &Pool<DB>,
    status: Option<ProviderEventStatus>,
    page: &PageRequest,
) -> Result<Vec<EventRow>> {
    // The cursor must be an item of this very list (same status).
    let cursor = page.starting_after.as_deref().unwrap_or_default();
    let exists = "SELECT 1 FROM provider_events WHERE id = $1 AND ($2 = '' OR status = $2)";
    ensure_cursor_in_list(pool, page, exists, &[cursor, status.map(|s| s.as_str()).unwrap_or("")]).await?;
    // Ids sort by creation: "after" in a newest-first list is a smaller id.
    let before = page.starting_after.clone().unwrap_or_else(|| "~".to_owned());
    let limit = i64::from(page.limit) + 1;
    let rows =
        match status {
            None => {
                query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT {EVENT_COLUMNS} FROM provider_events WHERE id < $1 ORDER BY id DESC LIMIT $2"
                )))
                .bind(before)
                .bind(limit)
                .fetch_all(pool)
                .await?
            }
            Some(status) => query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {EVENT_COLUMNS} FROM provider_events WHERE status = $3 AND id < $1 ORDER BY id DESC LIMIT $2"
            )))
            .bind(before)
            .bind(limit)
            .bind(status.as_str().to_owned())
            .fetch_all(pool)
            .await?,
        };
    Ok(rows)
}

async fn provider_event<DB: Sql>(pool: &Pool<DB>, provider: Provider, event_id: &str) -> Result<Option<EventRow>> {
    let row = query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {EVENT_COLUMNS} FROM provider_events WHERE provider = $1 AND event_id = $2"
    )))
    .bind(provider.as_str().to_owned())
    .bind(event_id.to_owned())
    .fetch_optional(pool)
    .await?;
    Ok(row)
}

/// Applies a provider's answer to the org's subscription under the org's
/// lock. Refused (`conflict`) when the answer is about a subscription that
/// is not the org's while the org has another live one, or one that
/// belongs to another org.
async fn apply_provider_answer<DB: Sql>(
    pool: &Pool<DB>,
    org: OrgId,
    input: &SnapshotInput,
    actor: &Actor,
    now: Timestamp,
) -> Result<ApplyOutcome> {
    let mut tx = pool.begin_write().await?;
    let kind = lock_org(&mut tx, org).await?;
    match crate::apply::apply_snapshot(&mut tx, org, kind, input, actor, now).await? {
        Ok(Applied { rival: Some(reason), is_current: false, .. }) | Err(Refused(reason)) => {
            Err(DomainError::conflict(reason).into())
        }
        Ok(applied) => {
            tx.commit().await?;
            Ok(applied.outcome)
        }
    }
}

async fn live_subscriptions<DB: Sql>(
    pool: &Pool<DB>,
    after: Option<OrgId>,
    limit: u32,
) -> Result<Vec<SubscriptionRow>> {
    let [first, second] = terminal_statuses();
    let rows = query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE status NOT IN ($1, $2) \
         AND org_id > $3 ORDER BY org_id LIMIT $4"
    )))
    .bind(first)
    .bind(second)
    .bind(after.map(|o| o.to_string()).unwrap_or_default())
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    Ok(rows)
}

/// The conditional upsert of a walk's lease (see
/// [`Store::claim_reconcile_walk`]). `true` = taken.
async fn take_reconcile_lease<DB: Sql>(
    pool: &Pool<DB>,
    org: OrgId,
    holder: &str,
    now: Timestamp,
    ttl: time::Duration,
    checked_since: Option<Timestamp>,
) -> Result<bool> {
    let fresh_after = checked_since.map(millis).unwrap_or(i64::MAX);
    let taken = query(
        "INSERT INTO reconcile_leases (org_id, holder, lease_until) VALUES ($1, $2, $3) \
         ON CONFLICT (org_id) DO UPDATE SET holder = excluded.holder, lease_until = excluded.lease_until \
         WHERE (reconcile_leases.lease_until < $4 OR reconcile_leases.holder = excluded.holder) \
         AND (reconcile_leases.checked_at IS NULL OR reconcile_leases.checked_at < $5)",
    )
    .bind(org.to_string())
    .bind(holder.to_owned())
    .bind(millis(now + ttl))
    .bind(millis(now))
    .bind(fresh_after)
    .execute(pool)
    .await?;
    Ok(taken.rows_affected() == 1)
}

/// The org's lease as stored: holder, until, last completed check.
async fn reconcile_lease<DB: Sql>(pool: &Pool<DB>, org: OrgId) -> Result<Option<(String, i64, Option<i64>)>> {
    let row = query_as("SELECT holder, lease_until, checked_at FROM reconcile_leases WHERE org_id = $1")
        .bind(org.to_string())
        .fetch_optional(pool)
        .await?;
    Ok(row)
}

async fn release_reconcile_lease<DB: Sql>(
    pool: &Pool<DB>,
    org: OrgId,
    holder: &str,
    checked_at: Option<Timestamp>,
) -> Result<()> {
    query(
        "UPDATE reconcile_leases SET lease_until = 0, checked_at = COALESCE($3, checked_at) WHERE org_id = $1 AND holder = $2",
    )
    .bind(org.to_string())
    .bind(holder.to_owned())
    .bind(checked_at.map(millis))
    .execute(pool)
    .await?;
    Ok(())
}

async fn begin_checkout<DB: Sql>(
    pool: &Pool<DB>,
    id: &str,
    new: &NewCheckout,
    actor: &Actor,
    now: Timestamp,
) -> Result<()> {
    let mut tx = pool.begin_write().await?;
    lock_org(&mut tx, new.org).await?;
    let [first, second] = terminal_statuses();
    let live: Option<(String, String)> =
        query_as("SELECT status, provider FROM subscriptions WHERE org_id = $1 AND status NOT IN ($2, $3)")
            .bind(new.org.to_string())
            .bind(first)
            .bind(second)
            .fetch_optional(&mut *tx)
            .await?;
    if let Some((status, provider)) = live {
        return Err(DomainError::SubscriptionExists {
            message: format!(
                "this organization already has a live subscription ({status}, at {provider}); change its seats \
                 (PUT /v1/orgs/{org}/subscription/seats) or cancel it (POST /v1/orgs/{org}/subscription/cancel) instead of buying another",
                org = new.org
            ),
        }
        .into());
    }
    query(
        "INSERT INTO checkouts (id, org_id, provider, plan, price_id, quantity, started_by, success_url, cancel_url, status, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'open', $10, $10)",
    )
    .bind(id.to_owned())
    .bind(new.org.to_string())
    .bind(new.provider.as_str().to_owned())
    .bind(new.plan.clone())
    .bind(new.price_id.clone())
    .bind(new.quantity)
    .bind(new.started_by.map(|u| u.to_string()))
    .bind(new.success_url.clone())
    .bind(new.cancel_url.clone())
    .bind(millis(now))
    .execute(&mut *tx)
    .await?;
    let data = serde_json::json!({"org_id": new.org, "checkout_id": id, "provider": new.provider.as_str(), "plan": new.plan, "seats": new.quantity});
    record_event(&mut tx, new.org, "checkout.started", actor, data, now).await?;
    tx.commit().await?;
    Ok(())
}

async fn checkout_opened<DB: Sql>(
    pool: &Pool<DB>,
    id: &str,
    session_id: &str,
    url: &str,
    now: Timestamp,
) -> Result<()> {
    query("UPDATE checkouts SET session_id = $2, url = $3, updated_at = $4 WHERE id = $1")
        .bind(id.to_owned())
        .bind(session_id.to_owned())
        .bind(url.to_owned())
        .bind(millis(now))
        .execute(pool)
        .await?;
    Ok(())
}

async fn cancel_checkout<DB: Sql>(pool: &Pool<DB>, id: &str, now: Timestamp) -> Result<bool> {
    let done = query("UPDATE checkouts SET status = 'canceled', updated_at = $2 WHERE id = $1 AND status = 'open'")
        .bind(id.to_owned())
        .bind(millis(now))
        .execute(pool)
        .await?;
    Ok(done.rows_affected() == 1)
}

async fn checkout<DB: Sql>(pool: &Pool<DB>, id: &str) -> Result<Option<CheckoutRow>> {
    let row = query_as(sqlx::AssertSqlSafe(format!("SELECT {CHECKOUT_COLUMNS} FROM checkouts WHERE id = $1")))
        .bind(id.to_owned())
        .fetch_optional(pool)
        .await?;
    Ok(row)
}

async fn org_customer<DB: Sql>(pool: &Pool<DB>, org: OrgId, provider: Provider) -> Result<Option<String>> {
    let row: Option<(String,)> = query_as(
        "SELECT provider_customer_id FROM subscriptions WHERE org_id = $1 AND provider = $2 AND provider_customer_id IS NOT NULL \
         UNION ALL SELECT customer_id FROM billing_customers WHERE org_id = $1 AND provider = $2",
    )
    .bind(org.to_string())
    .bind(provider.as_str().to_owned())
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(customer,)| customer))
}

async fn set_billing_admin<DB: Sql>(
    pool: &Pool<DB>,
    org: OrgId,
    target: UserId,
    only_if_current: Option<UserId>,
    actor: &Actor,
    now: Timestamp,
) -> Result<()> {
    let mut tx = pool.begin_write().await?;
    lock_org(&mut tx, org).await?;
    if member_role(&mut tx, org, target).await?.is_none() {
        return Err(DomainError::invalid(
            "user_id",
            format!("{target} is not a member of this organization; invite them first, then make them billing admin"),
        )
        .into());
    }
    let (current,): (Option<String>,) = query_as("SELECT billing_admin_user_id FROM orgs WHERE id = $1")
        .bind(org.to_string())
        .fetch_one(&mut *tx)
        .await?;
    if let Some(required) = only_if_current
        && current.as_deref() != Some(required.to_string().as_str())
    {
        return Err(DomainError::forbidden(
            "only an owner or the current billing admin can hand over the billing admin role",
        )
        .into());
    }
    if current.as_deref() != Some(target.to_string().as_str()) {
        query("UPDATE orgs SET billing_admin_user_id = $1, updated_at = $2 WHERE id = $3")
            .bind(target.to_string())
            .bind(millis(now))
            .bind(org.to_string())
            .execute(&mut *tx)
            .await?;
        let data = serde_json::json!({"org_id": org, "from": current, "to": target, "reason": "transfer"});
        record_event(&mut tx, org, "billing_admin.changed", actor, data, now).await?;
    }
    tx.commit().await?;
    Ok(())
}

async fn sandbox_pay<DB: Sql>(
    pool: &Pool<DB>,
    checkout_id: &str,
    now: Timestamp,
    period: time::Duration,
) -> Result<SandboxPayment> {
    let mut tx = pool.begin_write().await?;
    let paid = query(
        "UPDATE checkouts SET status = 'paid', updated_at = $2 WHERE id = $1 AND provider = 'sandbox' AND status = 'open'",
    )
    .bind(checkout_id.to_owned())
    .bind(millis(now))
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let row: Option<CheckoutRow> = query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {CHECKOUT_COLUMNS} FROM checkouts WHERE id = $1 AND provider = 'sandbox'"
    )))
    .bind(checkout_id.to_owned())
    .fetch_optional(&mut *tx)
    .await?;
    let checkout = checkout_from_row(row.ok_or(DomainError::NotFound { what: "sandbox checkout" })?)?;
    if paid == 1 {
        query(
            "INSERT INTO sandbox_subscriptions (id, checkout_id, org_id, customer_id, price_id, quantity, status, \
             cancel_at_period_end, current_period_end, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, 'active', FALSE, $7, $8, $8)",
        )
        .bind(sandbox_id("sbxsub"))
        .bind(checkout_id.to_owned())
        .bind(checkout.org_id.to_string())
        .bind(format!("sbxcus_{}", &checkout.org_id.to_string()[4..]))
        .bind(checkout.price_id.clone())
        .bind(checkout.quantity)
        .bind(millis(now + period))
        .bind(millis(now))
        .execute(&mut *tx)
        .await?;
    } else if checkout.status == CheckoutStatus::Canceled {
        return Err(DomainError::conflict("this sandbox checkout was cancelled; start a new checkout").into());
    }
    let row: SandboxRow = query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {SANDBOX_COLUMNS} FROM sandbox_subscriptions WHERE checkout_id = $1"
    )))
    .bind(checkout_id.to_owned())
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(SandboxPayment { checkout, subscription: sandbox_from_row(row)? })
}

async fn sandbox_subscription<DB: Sql>(pool: &Pool<DB>, id: &str) -> Result<Option<SandboxRow>> {
    let row =
        query_as(sqlx::AssertSqlSafe(format!("SELECT {SANDBOX_COLUMNS} FROM sandbox_subscriptions WHERE id = $1")))
            .bind(id.to_owned())
            .fetch_optional(pool)
            .await?;
    Ok(row)
}

/// The sandbox subscription after `change`, in one statement; `None` when
/// there is no such subscription, or (except for a refresh) it has ended.
async fn sandbox_change<DB: Sql>(
    pool: &Pool<DB>,
    id: &str,
    change: SandboxChange,
    now: Timestamp,
    period: time::Duration,
) -> Result<Option<SandboxRow>> {
    let now_ms = millis(now);
    let row = match change {
        SandboxChange::CancelAtPeriodEnd(cancel) => {
            query_as(sqlx::AssertSqlSafe(format!(
                "UPDATE sandbox_subscriptions SET cancel_at_period_end = $2, updated_at = $3 \
                 WHERE id = $1 AND status <> 'canceled' RETURNING {SANDBOX_COLUMNS}"
            )))
            .bind(id.to_owned())
            .bind(cancel)
            .bind(now_ms)
            .fetch_optional(pool)
            .await?
        }
        SandboxChange::CancelNow => {
            query_as(sqlx::AssertSqlSafe(format!(
                "UPDATE sandbox_subscriptions SET status = 'canceled', cancel_at_period_end = FALSE, current_period_end = $2, updated_at = $2 \
                 WHERE id = $1 AND status <> 'canceled' RETURNING {SANDBOX_COLUMNS}"
            )))
            .bind(id.to_owned())
            .bind(now_ms)
            .fetch_optional(pool)
            .await?
        }
        SandboxChange::Quantity(quantity) => {
            query_as(sqlx::AssertSqlSafe(format!(
                "UPDATE sandbox_subscriptions SET quantity = $2, updated_at = $3 \
                 WHERE id = $1 AND status <> 'canceled' RETURNING {SANDBOX_COLUMNS}"
            )))
            .bind(id.to_owned())
            .bind(quantity)
            .bind(now_ms)
            .fetch_optional(pool)
            .await?
        }
        // A period that ended renews (whole periods at a time), or ends
        // the subscription when it was set to cancel.
        SandboxChange::Refresh => {
            query_as(sqlx::AssertSqlSafe(format!(
                "UPDATE sandbox_subscriptions SET \
                 status = CASE WHEN current_period_end <= $2 AND cancel_at_period_end THEN 'canceled' ELSE status END, \
                 current_period_end = CASE WHEN current_period_end <= $2 AND NOT cancel_at_period_end AND status <> 'canceled' \
                     THEN current_period_end + ((($2 - current_period_end) / $3) + 1) * $3 ELSE current_period_end END, \
                 cancel_at_period_end = CASE WHEN current_period_end <= $2 THEN FALSE ELSE cancel_at_period_end END, \
                 updated_at = CASE WHEN current_period_end <= $2 THEN $2 ELSE updated_at END \
                 WHERE id = $1 RETURNING {SANDBOX_COLUMNS}"
            )))
            .bind(id.to_owned())
            .bind(now_ms)
            .bind(period.whole_milliseconds() as i64)
            .fetch_optional(pool)
            .await?
        }
    };
    Ok(row)
}
