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
//! - **In order.** Applying locks the org, then compares the provider's own
//!   time: a snapshot older than the stored state never overwrites it (the
//!   write itself says `WHERE observed_at <= $n`), and a subscription that
//!   ended (`canceled`, `incomplete_expired`) never comes back to life, not
//!   even at an equal timestamp.
//! - **One per org.** `subscriptions` is unique on the org and on the
//!   provider's subscription id. A new subscription replaces an ended one
//!   (the ended one is remembered in `ended_subscriptions`); a second *live*
//!   one is refused and its event kept as `failed` with the reason.
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
use orgplane_core::{DomainError, EventId, OrgId, ProviderEventId, SubscriptionId, Timestamp, UserId};

use crate::subscriptions::{SELECT_SUBSCRIPTION_BY_ORG, StoredSubscription, SubscriptionRow, subscription_from_row};
use tokio::sync::oneshot;

use crate::{
    Actor, Backend, BeginWrite, Page, PageRequest, Result, Store, StoreError, from_millis, lock_org, millis, on_pool,
    parse_id, record_event,
};

/// The longest wait between two retries of an unmatched or failed event.
const MAX_RETRY_BACKOFF_SECS: i64 = 6 * 3600;
/// Retries stop this long after an event arrived (it stays stored and listed).
const RETRY_WINDOW_DAYS: i64 = 7;

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

/// A paid sandbox checkout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxPayment {
    pub checkout: CheckoutRecord,
    pub subscription: SandboxSubscription,
}

// ---------------------------------------------------------------------------
// The apply decision: pure, so that its rules are tested without a database.

#[derive(Debug, Clone, PartialEq, Eq)]
enum Decision {
    Insert,
    Update,
    Unchanged,
    /// A new subscription takes the place of the org's ended one.
    Replace,
    Stale,
    Superseded,
    Conflict(String),
}

fn is_same(current: &StoredSubscription, snap: &SubscriptionSnapshot) -> bool {
    current.provider == snap.provider && current.provider_subscription_id == snap.provider_subscription_id
}

fn millis_opt(at: Option<Timestamp>) -> Option<i64> {
    at.map(millis)
}

fn unchanged(current: &StoredSubscription, snap: &SubscriptionSnapshot) -> bool {
    current.status == snap.status
        && current.price_id == snap.price_id
        && current.item_id == snap.item_id
        && current.quantity == snap.quantity
        && millis_opt(current.current_period_end) == millis_opt(snap.current_period_end)
        && current.cancel_at_period_end == snap.cancel_at_period_end
        && millis_opt(current.trial_end) == millis_opt(snap.trial_end)
        && snap.provider_customer_id.as_ref().is_none_or(|c| current.provider_customer_id.as_ref() == Some(c))
        && snap.portal_url.as_ref().is_none_or(|p| current.portal_url.as_ref() == Some(p))
}

/// What to do with `snap` given the org's stored subscription; `ended` says
/// the snapshot's subscription ended before, `held_by` names another org
/// that already holds it.
fn decide(
    current: Option<&StoredSubscription>,
    snap: &SubscriptionSnapshot,
    ended: bool,
    held_by: Option<&str>,
) -> Decision {
    if let Some(other) = held_by {
        return Decision::Conflict(format!(
            "{} subscription {} already belongs to organization {other}; an organization's subscription can't move to another one",
            snap.provider.as_str(),
            snap.provider_subscription_id
        ));
    }
    let Some(current) = current else {
        return if ended && snap.status.is_live() { Decision::Stale } else { Decision::Insert };
    };
    if is_same(current, snap) {
        if millis(snap.observed_at) < millis(current.observed_at) {
            return Decision::Stale;
        }
        // An ended subscription stays ended: a live state of it is older news,
        // whatever its timestamp says (ties at one-second precision happen).
        if current.status.is_terminal() && snap.status.is_live() {
            return Decision::Stale;
        }
        return if unchanged(current, snap) { Decision::Unchanged } else { Decision::Update };
    }
    if snap.status.is_terminal() {
        return Decision::Superseded;
    }
    if ended {
        return Decision::Stale;
    }
    if current.status.is_terminal() {
        return Decision::Replace;
    }
    Decision::Conflict(format!(
        "this organization already has a live {} subscription ({}, {}); a second live subscription ({} at {}) is not applied: \
         cancel one of them at the provider, then the event is retried",
        current.provider.as_str(),
        current.provider_subscription_id,
        current.status.as_str(),
        snap.provider_subscription_id,
        snap.provider.as_str(),
    ))
}

/// When `snap` says past_due: since when (kept while it stays past_due).
fn past_due_since(current: Option<&StoredSubscription>, snap: &SubscriptionSnapshot) -> Option<Timestamp> {
    if snap.status != SubscriptionStatus::PastDue {
        return None;
    }
    match current {
        Some(c) if is_same(c, snap) && c.status == SubscriptionStatus::PastDue => {
            c.past_due_since.or(Some(snap.observed_at))
        }
        _ => Some(snap.observed_at),
    }
}

/// When an unmatched or failed event is tried again: exponential backoff,
/// none after the retry window.
fn next_attempt(attempts: i64, received_at: Timestamp, now: Timestamp) -> Option<i64> {
    if now - received_at > time::Duration::days(RETRY_WINDOW_DAYS) {
        return None;
    }
    let secs = 1i64.checked_shl(attempts.clamp(0, 30) as u32).unwrap_or(i64::MAX).min(MAX_RETRY_BACKOFF_SECS);
    Some(millis(now) + secs * 1000)
}

fn rfc3339(at: Option<Timestamp>) -> Option<String> {
    at.and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
}

fn subscription_event_data(
    id: &str,
    org: OrgId,
    snap: &SubscriptionSnapshot,
    previous: Option<SubscriptionStatus>,
) -> serde_json::Value {
    serde_json::json!({
        "subscription_id": id,
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

fn corrupt_provider(text: &str) -> StoreError {
    StoreError::Corrupt(format!("provider `{text}`"))
}

fn sandbox_id(prefix: &str) -> String {
    // The id alphabet and time order of orgplane's typed ids, under a sandbox prefix.
    format!("{prefix}_{}", &EventId::new().to_string()[4..])
}

// ---------------------------------------------------------------------------
// SQL shared by the macros below.

const SUBSCRIPTION_COLUMNS: &str = "id, org_id, provider, provider_subscription_id, provider_customer_id, status, price_id, item_id, quantity, current_period_end, cancel_at_period_end, trial_end, past_due_since, portal_url, observed_at";

const INSERT_SUBSCRIPTION: &str = "INSERT INTO subscriptions (id, org_id, provider, provider_subscription_id, provider_customer_id, status, price_id, item_id, quantity, current_period_end, cancel_at_period_end, trial_end, past_due_since, portal_url, observed_at, created_at, updated_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $16) \
     ON CONFLICT (org_id) DO UPDATE SET id = excluded.id, provider = excluded.provider, provider_subscription_id = excluded.provider_subscription_id, \
     provider_customer_id = excluded.provider_customer_id, status = excluded.status, price_id = excluded.price_id, item_id = excluded.item_id, \
     quantity = excluded.quantity, current_period_end = excluded.current_period_end, cancel_at_period_end = excluded.cancel_at_period_end, \
     trial_end = excluded.trial_end, past_due_since = excluded.past_due_since, portal_url = excluded.portal_url, observed_at = excluded.observed_at, \
     created_at = excluded.created_at, updated_at = excluded.updated_at \
     WHERE subscriptions.observed_at <= excluded.observed_at";

/// A new subscription in place of the org's ended one (same parameters as the insert).
const REPLACE_SUBSCRIPTION: &str = "UPDATE subscriptions SET id = $1, provider = $3, provider_subscription_id = $4, provider_customer_id = $5, status = $6, \
     price_id = $7, item_id = $8, quantity = $9, current_period_end = $10, cancel_at_period_end = $11, trial_end = $12, past_due_since = $13, \
     portal_url = $14, observed_at = $15, created_at = $16, updated_at = $16 WHERE org_id = $2";

/// The same subscription, newer state: never over a newer stored one.
const UPDATE_SUBSCRIPTION: &str = "UPDATE subscriptions SET provider_customer_id = COALESCE($3, provider_customer_id), status = $4, price_id = $5, \
     item_id = $6, quantity = $7, current_period_end = $8, cancel_at_period_end = $9, trial_end = $10, past_due_since = $11, \
     portal_url = COALESCE($12, portal_url), observed_at = $13, updated_at = $14 \
     WHERE org_id = $1 AND provider_subscription_id = $2 AND observed_at <= $13";

const INSERT_EVENT: &str = "INSERT INTO provider_events (id, provider, event_id, event_type, occurred_at, status, outcome, error, org_id, \
     provider_subscription_id, provider_customer_id, payload, attempts, next_attempt_at, received_at, processed_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 1, $13, $14, $14) ON CONFLICT (provider, event_id) DO NOTHING";

const MARK_EVENT: &str = "UPDATE provider_events SET status = $2, outcome = $3, error = $4, org_id = COALESCE($5, org_id), \
     provider_subscription_id = COALESCE($6, provider_subscription_id), provider_customer_id = COALESCE($7, provider_customer_id), \
     next_attempt_at = $8, lease_until = NULL, processed_at = $9 WHERE id = $1";

const EVENT_COLUMNS: &str = "id, provider, event_id, event_type, status, outcome, error, org_id, provider_subscription_id, provider_customer_id, attempts, occurred_at, received_at, processed_at, next_attempt_at";

type EventRow = (
    String,
    String,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    i64,
    Option<i64>,
    i64,
    i64,
    Option<i64>,
);

fn event_from_row(row: EventRow) -> Result<ProviderEventRecord> {
    let (
        id,
        provider,
        event_id,
        event_type,
        status,
        outcome,
        error,
        org,
        psid,
        customer,
        attempts,
        occurred,
        received,
        processed,
        next,
    ) = row;
    Ok(ProviderEventRecord {
        id: parse_id(&id)?,
        provider: Provider::parse(&provider).ok_or_else(|| corrupt_provider(&provider))?,
        event_id,
        event_type,
        status: ProviderEventStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("provider event status `{status}`")))?,
        outcome,
        error,
        org_id: org,
        provider_subscription_id: psid,
        provider_customer_id: customer,
        attempts,
        occurred_at: occurred.map(from_millis).transpose()?,
        received_at: from_millis(received)?,
        processed_at: from_millis(processed)?,
        next_attempt_at: next.map(from_millis).transpose()?,
    })
}

const CHECKOUT_COLUMNS: &str = "id, org_id, provider, plan, price_id, quantity, started_by, success_url, cancel_url, session_id, url, status, created_at";

type CheckoutRow = (
    String,
    String,
    String,
    String,
    String,
    i64,
    Option<String>,
    String,
    String,
    Option<String>,
    Option<String>,
    String,
    i64,
);

fn checkout_from_row(row: CheckoutRow) -> Result<CheckoutRecord> {
    let (
        id,
        org,
        provider,
        plan,
        price_id,
        quantity,
        started_by,
        success_url,
        cancel_url,
        session_id,
        url,
        status,
        created,
    ) = row;
    Ok(CheckoutRecord {
        id,
        org_id: parse_id(&org)?,
        provider: Provider::parse(&provider).ok_or_else(|| corrupt_provider(&provider))?,
        plan,
        price_id,
        quantity,
        started_by: started_by.as_deref().map(parse_id).transpose()?,
        success_url,
        cancel_url,
        session_id,
        url,
        status: CheckoutStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("checkout status `{status}`")))?,
        created_at: from_millis(created)?,
    })
}

const SANDBOX_COLUMNS: &str = "id, checkout_id, org_id, customer_id, price_id, quantity, status, cancel_at_period_end, current_period_end, updated_at";

type SandboxRow = (String, String, String, String, String, i64, String, bool, i64, i64);

fn sandbox_from_row(row: SandboxRow) -> Result<SandboxSubscription> {
    let (id, checkout_id, org, customer_id, price_id, quantity, status, cancel, period_end, updated) = row;
    Ok(SandboxSubscription {
        id,
        checkout_id,
        org_id: parse_id(&org)?,
        customer_id,
        price_id,
        quantity,
        status: SubscriptionStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("sandbox subscription status `{status}`")))?,
        cancel_at_period_end: cancel,
        current_period_end: from_millis(period_end)?,
        updated_at: from_millis(updated)?,
    })
}

// ---------------------------------------------------------------------------
// In-transaction steps, written once for both backends (each macro body is
// compiled per backend inside `on_pool!`).

/// Binds the 16 parameters of [`INSERT_SUBSCRIPTION`] / [`REPLACE_SUBSCRIPTION`].
macro_rules! bind_new_subscription {
    ($sql:expr, $id:expr, $org:expr, $snap:expr, $past_due:expr, $now:expr) => {
        sqlx::query($sql)
            .bind($id)
            .bind($org.to_string())
            .bind($snap.provider.as_str())
            .bind(&$snap.provider_subscription_id)
            .bind(&$snap.provider_customer_id)
            .bind($snap.status.as_str())
            .bind(&$snap.price_id)
            .bind(&$snap.item_id)
            .bind($snap.quantity)
            .bind(millis_opt($snap.current_period_end))
            .bind($snap.cancel_at_period_end)
            .bind(millis_opt($snap.trial_end))
            .bind(millis_opt($past_due))
            .bind(&$snap.portal_url)
            .bind(millis($snap.observed_at))
            .bind(millis($now))
    };
}

/// Applies one snapshot to the org's subscription inside the caller's
/// transaction, which has locked the org. Evaluates to
/// `std::result::Result<ApplyOutcome, String>` (the error is a conflict's
/// reason); database errors return early through `?`.
macro_rules! apply_snapshot {
    ($tx:expr, $org:expr, $kind:expr, $input:expr, $actor:expr, $now:expr) => {{
        let org: OrgId = $org;
        let kind: OrgKind = $kind;
        let input: &SnapshotInput = $input;
        let actor: &Actor = $actor;
        let now: Timestamp = $now;
        let snap = &input.snapshot;
        let row: Option<SubscriptionRow> =
            sqlx::query_as(SELECT_SUBSCRIPTION_BY_ORG).bind(org.to_string()).fetch_optional(&mut *$tx).await?;
        let current = row.map(subscription_from_row).transpose()?;
        let same = current.as_ref().is_some_and(|c| is_same(c, snap));
        let known_customer = current.as_ref().and_then(|c| c.provider_customer_id.as_deref());
        if snap.provider_customer_id.as_deref() != known_customer {
            link_customer!($tx, snap.provider, snap.provider_customer_id.as_deref(), org, now);
        }
        let (ended, held_by) = if same {
            (false, None)
        } else {
            let ended: Option<(String,)> = sqlx::query_as(
                "SELECT status FROM ended_subscriptions WHERE provider = $1 AND provider_subscription_id = $2",
            )
            .bind(snap.provider.as_str())
            .bind(&snap.provider_subscription_id)
            .fetch_optional(&mut *$tx)
            .await?;
            let held: Option<(String,)> = sqlx::query_as(
                "SELECT org_id FROM subscriptions WHERE provider = $1 AND provider_subscription_id = $2 AND org_id <> $3",
            )
            .bind(snap.provider.as_str())
            .bind(&snap.provider_subscription_id)
            .bind(org.to_string())
            .fetch_optional(&mut *$tx)
            .await?;
            (ended.is_some(), held.map(|(o,)| o))
        };
        let decision = decide(current.as_ref(), snap, ended, held_by.as_deref());
        let replace = decision == Decision::Replace;
        let outcome: std::result::Result<ApplyOutcome, String> = match decision {
            Decision::Conflict(reason) => Err(reason),
            Decision::Stale => Ok(ApplyOutcome::Stale),
            Decision::Superseded => Ok(ApplyOutcome::Superseded),
            Decision::Unchanged => {
                sqlx::query("UPDATE subscriptions SET observed_at = $1 WHERE org_id = $2 AND observed_at <= $1")
                    .bind(millis(snap.observed_at))
                    .bind(org.to_string())
                    .execute(&mut *$tx)
                    .await?;
                Ok(ApplyOutcome::Unchanged)
            }
            Decision::Update => {
                let previous = current.as_ref().map(|c| (c.id, c.status));
                let past_due = past_due_since(current.as_ref(), snap);
                let done = sqlx::query(UPDATE_SUBSCRIPTION)
                    .bind(org.to_string())
                    .bind(&snap.provider_subscription_id)
                    .bind(&snap.provider_customer_id)
                    .bind(snap.status.as_str())
                    .bind(&snap.price_id)
                    .bind(&snap.item_id)
                    .bind(snap.quantity)
                    .bind(millis_opt(snap.current_period_end))
                    .bind(snap.cancel_at_period_end)
                    .bind(millis_opt(snap.trial_end))
                    .bind(millis_opt(past_due))
                    .bind(&snap.portal_url)
                    .bind(millis(snap.observed_at))
                    .bind(millis(now))
                    .execute(&mut *$tx)
                    .await?
                    .rows_affected();
                match previous {
                    Some((id, before)) if done == 1 => {
                        let kind_name = if snap.status.is_terminal() && before.is_live() {
                            "subscription.canceled"
                        } else {
                            "subscription.updated"
                        };
                        record_event!($tx, org.to_string(), kind_name, actor,
                            subscription_event_data(&id.to_string(), org, snap, Some(before)), now)?;
                        Ok(ApplyOutcome::Updated)
                    }
                    _ => Ok(ApplyOutcome::Stale),
                }
            }
            Decision::Insert | Decision::Replace => {
                let id = SubscriptionId::new();
                let past_due = past_due_since(None, snap);
                let previous = current.as_ref().map(|c| c.status);
                let done = if replace {
                    if let Some(old) = &current {
                        sqlx::query(
                            "INSERT INTO ended_subscriptions (provider, provider_subscription_id, org_id, status, observed_at) \
                             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (provider, provider_subscription_id) DO NOTHING",
                        )
                        .bind(old.provider.as_str())
                        .bind(&old.provider_subscription_id)
                        .bind(org.to_string())
                        .bind(old.status.as_str())
                        .bind(millis(old.observed_at))
                        .execute(&mut *$tx)
                        .await?;
                    }
                    bind_new_subscription!(REPLACE_SUBSCRIPTION, id.to_string(), org, snap, past_due, now)
                        .execute(&mut *$tx)
                        .await?
                        .rows_affected()
                } else {
                    bind_new_subscription!(INSERT_SUBSCRIPTION, id.to_string(), org, snap, past_due, now)
                        .execute(&mut *$tx)
                        .await?
                        .rows_affected()
                };
                if done == 1 {
                    record_event!($tx, org.to_string(), "subscription.created", actor,
                        subscription_event_data(&id.to_string(), org, snap, previous), now)?;
                    if snap.status.is_live() {
                        // The buyer becomes billing admin: whoever started the
                        // org's latest checkout at this provider, if still a member.
                        let buyer: Option<(String,)> = sqlx::query_as(
                            "SELECT c.started_by FROM checkouts c \
                             JOIN memberships m ON m.org_id = c.org_id AND m.user_id = c.started_by \
                             WHERE c.org_id = $1 AND c.provider = $2 ORDER BY c.created_at DESC LIMIT 1",
                        )
                        .bind(org.to_string())
                        .bind(snap.provider.as_str())
                        .fetch_optional(&mut *$tx)
                        .await?;
                        if let Some((buyer,)) = buyer {
                            let (admin,): (Option<String>,) =
                                sqlx::query_as("SELECT billing_admin_user_id FROM orgs WHERE id = $1")
                                    .bind(org.to_string())
                                    .fetch_one(&mut *$tx)
                                    .await?;
                            if admin.as_deref() != Some(buyer.as_str()) {
                                sqlx::query("UPDATE orgs SET billing_admin_user_id = $1 WHERE id = $2")
                                    .bind(&buyer)
                                    .bind(org.to_string())
                                    .execute(&mut *$tx)
                                    .await?;
                                record_event!($tx, org.to_string(), "billing_admin.changed", actor,
                                    serde_json::json!({"org_id": org, "from": admin, "to": buyer, "reason": "checkout"}), now)?;
                            }
                        }
                    }
                    Ok(ApplyOutcome::Created)
                } else {
                    Ok(ApplyOutcome::Stale)
                }
            }
        };
        // A personal org that gets an entitling subscription becomes a team
        // org with the same id; its user gets a new personal org lazily.
        if input.entitling
            && kind == OrgKind::Personal
            && matches!(outcome, Ok(ApplyOutcome::Created | ApplyOutcome::Updated | ApplyOutcome::Unchanged))
        {
            let converted = sqlx::query(
                "UPDATE orgs SET kind = 'team', personal_user_id = NULL, updated_at = $2 WHERE id = $1 AND kind = 'personal'",
            )
            .bind(org.to_string())
            .bind(millis(now))
            .execute(&mut *$tx)
            .await?
            .rows_affected();
            if converted == 1 {
                record_event!($tx, org.to_string(), "org.converted", actor,
                    serde_json::json!({"org_id": org, "from": "personal", "to": "team", "reason": "subscription"}), now)?;
            }
        }
        outcome
    }};
}

/// What resolving an event's org found.
enum Resolution {
    Found(OrgId, OrgKind),
    Unmatched,
    /// The delivery was stored before.
    Duplicate,
}

/// The org an event belongs to, locked (its version bumped, as `lock_org!`
/// does): the org it names (if it exists), then the org holding its
/// subscription, then the org its customer is tied to. With `$dedupe` (the
/// provider and event id of a new delivery), a delivery stored before is
/// found in the same statement that locks the named org. Evaluates to a
/// [`Resolution`].
macro_rules! resolve_and_lock {
    ($tx:expr, $effect:expr, $dedupe:expr) => {{
        let effect: &EventEffect = $effect;
        let dedupe: Option<(&str, &str)> = $dedupe;
        let provider = effect.provider.as_str();
        let mut candidates: Vec<OrgId> =
            [effect.org_hint, effect.snapshot.as_ref().and_then(|s| s.snapshot.org_id)].into_iter().flatten().collect();
        candidates.dedup();
        let mut resolution = Resolution::Unmatched;
        let mut looked_up = false;
        let mut dedupe_pending = dedupe;
        loop {
            if candidates.is_empty() {
                if looked_up {
                    break;
                }
                looked_up = true;
                if let Some((p, e)) = dedupe_pending.take() {
                    if seen_in_tx!($tx, p, e) {
                        resolution = Resolution::Duplicate;
                        break;
                    }
                }
                if let Some(psid) = effect.subscription_ref() {
                    let row: Option<(String,)> = sqlx::query_as(
                        "SELECT org_id FROM subscriptions WHERE provider = $1 AND provider_subscription_id = $2 \
                         UNION ALL SELECT org_id FROM ended_subscriptions WHERE provider = $1 AND provider_subscription_id = $2",
                    )
                    .bind(provider)
                    .bind(psid)
                    .fetch_optional(&mut *$tx)
                    .await?;
                    candidates.extend(row.map(|(o,)| parse_id::<OrgId>(&o)).transpose()?);
                }
                if let (true, Some(customer)) = (candidates.is_empty(), effect.customer_ref()) {
                    let row: Option<(String,)> = sqlx::query_as(
                        "SELECT org_id FROM billing_customers WHERE provider = $1 AND customer_id = $2 \
                         UNION ALL SELECT org_id FROM subscriptions WHERE provider = $1 AND provider_customer_id = $2",
                    )
                    .bind(provider)
                    .bind(customer)
                    .fetch_optional(&mut *$tx)
                    .await?;
                    candidates.extend(row.map(|(o,)| parse_id::<OrgId>(&o)).transpose()?);
                }
                if candidates.is_empty() {
                    break;
                }
            }
            let candidate = candidates.remove(0);
            let row: Option<(String,)> = match dedupe_pending {
                Some((p, e)) => sqlx::query_as(
                    "UPDATE orgs SET version = version + 1 WHERE id = $1 \
                     AND NOT EXISTS (SELECT 1 FROM provider_events WHERE provider = $2 AND event_id = $3) RETURNING kind",
                )
                .bind(candidate.to_string())
                .bind(p)
                .bind(e)
                .fetch_optional(&mut *$tx)
                .await?,
                None => sqlx::query_as("UPDATE orgs SET version = version + 1 WHERE id = $1 RETURNING kind")
                    .bind(candidate.to_string())
                    .fetch_optional(&mut *$tx)
                    .await?,
            };
            match row {
                Some((kind,)) => {
                    let kind = OrgKind::parse(&kind).ok_or_else(|| StoreError::Corrupt(format!("org kind `{kind}`")))?;
                    resolution = Resolution::Found(candidate, kind);
                    break;
                }
                // No such org, or a delivery seen before: which one?
                None => {
                    if let Some((p, e)) = dedupe_pending.take() {
                        if seen_in_tx!($tx, p, e) {
                            resolution = Resolution::Duplicate;
                            break;
                        }
                    }
                }
            }
        }
        resolution
    }};
}

/// Whether the delivery `($provider, $event_id)` is stored (inside the caller's transaction).
macro_rules! seen_in_tx {
    ($tx:expr, $provider:expr, $event_id:expr) => {{
        let row: Option<(String,)> =
            sqlx::query_as("SELECT id FROM provider_events WHERE provider = $1 AND event_id = $2")
                .bind($provider)
                .bind($event_id)
                .fetch_optional(&mut *$tx)
                .await?;
        row.is_some()
    }};
}

/// Ties a provider customer to the org (first tie wins).
macro_rules! link_customer {
    ($tx:expr, $provider:expr, $customer:expr, $org:expr, $now:expr) => {
        if let Some(customer) = $customer {
            sqlx::query(
                "INSERT INTO billing_customers (provider, customer_id, org_id, created_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (provider, customer_id) DO NOTHING",
            )
            .bind($provider.as_str())
            .bind(customer)
            .bind($org.to_string())
            .bind(millis($now))
            .execute(&mut *$tx)
            .await?;
        }
    };
}

/// Applies an event's effect inside the caller's transaction. Evaluates to
/// `None` when `$dedupe` finds the delivery stored before (nothing was
/// written), else to the [`ProcessedEvent`] and when to try it again
/// (unmatched, failed), which the caller records on the event row.
macro_rules! process_event {
    ($tx:expr, $id:expr, $effect:expr, $actor:expr, $now:expr, $attempts:expr, $received:expr, $dedupe:expr) => {{
        let id: ProviderEventId = $id;
        let effect: &EventEffect = $effect;
        let now: Timestamp = $now;
        let unmatched = || {
            (
                ProviderEventStatus::Unmatched,
                None,
                Some(
                    "no organization matches this event (no org_id in its metadata, and its subscription and customer are unknown); \
                     it is kept and retried by reconciliation"
                        .to_owned(),
                ),
                None,
            )
        };
        let decided: Option<(ProviderEventStatus, Option<ApplyOutcome>, Option<String>, Option<OrgId>)> =
            if let Some(reason) = &effect.failure {
                Some((ProviderEventStatus::Failed, None, Some(reason.clone()), None))
            } else if effect.snapshot.is_none() && effect.customer_ref().is_none() {
                Some((ProviderEventStatus::Ignored, None, None, None))
            } else {
                match resolve_and_lock!($tx, effect, $dedupe) {
                    Resolution::Duplicate => None,
                    Resolution::Unmatched => Some(unmatched()),
                    Resolution::Found(org, kind) => {
                        // A snapshot ties its own customer (when it is new to the org).
                        let snapshot_customer =
                            effect.snapshot.as_ref().and_then(|s| s.snapshot.provider_customer_id.as_deref());
                        if effect.customer_id.as_deref() != snapshot_customer {
                            link_customer!($tx, effect.provider, effect.customer_id.as_deref(), org, now);
                        }
                        Some(match &effect.snapshot {
                            None => (ProviderEventStatus::Applied, Some(ApplyOutcome::Linked), None, Some(org)),
                            Some(input) => match apply_snapshot!($tx, org, kind, input, $actor, now) {
                                Ok(outcome) => (ProviderEventStatus::Applied, Some(outcome), None, Some(org)),
                                Err(reason) => (ProviderEventStatus::Failed, None, Some(reason), Some(org)),
                            },
                        })
                    }
                }
            };
        decided.map(|(status, outcome, error, org)| {
            let retry = match status {
                ProviderEventStatus::Unmatched | ProviderEventStatus::Failed => next_attempt($attempts, $received, now),
                _ => None,
            };
            (ProcessedEvent { id, status, outcome, org_id: org, error }, retry)
        })
    }};
}

/// Inserts a new delivery with the result of processing it. Evaluates to
/// the rows inserted: 0 when the unique key finds it stored before.
macro_rules! insert_event {
    ($tx:expr, $job:expr, $processed:expr, $retry:expr) => {{
        let job: &IngestJob = $job;
        let processed: &ProcessedEvent = $processed;
        sqlx::query(INSERT_EVENT)
            .bind(processed.id.to_string())
            .bind(job.provider.as_str())
            .bind(&job.event_id)
            .bind(&job.event_type)
            .bind(millis_opt(job.occurred_at))
            .bind(processed.status.as_str())
            .bind(processed.outcome.map(ApplyOutcome::as_str))
            .bind(&processed.error)
            .bind(processed.org_id.map(|o| o.to_string()))
            .bind(job.effect.subscription_ref())
            .bind(job.effect.customer_ref())
            .bind(&job.payload)
            .bind($retry)
            .bind(millis(job.now))
            .execute(&mut *$tx)
            .await?
            .rows_affected()
    }};
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
        on_pool!(self, pool => pool.is_closed())
    }

    /// Stores a verified provider event and applies its effect, in one
    /// transaction: the event row and everything it changed commit together
    /// or not at all. A delivery seen before (same provider and event id)
    /// changes nothing and answers [`Ingest::Duplicate`], also when copies
    /// arrive at once (the unique key on the event decides).
    ///
    /// If applying fails on the database's side, the event is stored as
    /// `failed` with the reason (in a transaction of its own) and retried
    /// later; only when even that fails is the error returned (the provider
    /// then delivers again).
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
                match process_event!(tx, id, &job.effect, &actor, job.now, 1, job.now, dedupe) {
                    None => results.push(Ingest::Duplicate),
                    Some((processed, retry)) => {
                        if insert_event!(tx, job, &processed, retry) == 1 {
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
        let actor = Actor::Provider(job.event_id.clone());
        let now = job.now;
        let attempt: Result<Ingest> = on_pool!(self, pool => {
            async {
                let mut tx = pool.begin_write().await?;
                let dedupe = Some((job.provider.as_str(), job.event_id.as_str()));
                let Some((processed, retry)) = process_event!(tx, id, &job.effect, &actor, now, 1, now, dedupe) else {
                    tx.rollback().await?;
                    return Ok(Ingest::Duplicate);
                };
                // The unique key decides: a copy that raced this one inserts
                // nothing, and everything it did rolls back with it.
                if insert_event!(tx, job, &processed, retry) == 0 {
                    tx.rollback().await?;
                    return Ok(Ingest::Duplicate);
                }
                tx.commit().await?;
                Ok::<_, StoreError>(Ingest::Processed(processed))
            }
            .await
        });
        match attempt {
            Ok(ingest) => {
                if let Ingest::Processed(ProcessedEvent { org_id: Some(org), .. }) = &ingest {
                    self.touched(*org).await;
                }
                Ok(ingest)
            }
            Err(StoreError::Domain(e)) => Err(e.into()),
            Err(e) => {
                tracing::error!(error = %e, provider = job.provider.as_str(), event_id = %job.event_id,
                    "applying a provider event failed; storing it as failed for a retry");
                let reason = format!("applying failed: {e}");
                let stored = on_pool!(self, pool => {
                    sqlx::query(
                        "INSERT INTO provider_events (id, provider, event_id, event_type, occurred_at, status, error, payload, attempts, \
                         next_attempt_at, received_at, processed_at) VALUES ($1, $2, $3, $4, $5, 'failed', $6, $7, 1, $8, $9, $9) \
                         ON CONFLICT (provider, event_id) DO NOTHING",
                    )
                    .bind(id.to_string())
                    .bind(job.provider.as_str())
                    .bind(&job.event_id)
                    .bind(&job.event_type)
                    .bind(millis_opt(job.occurred_at))
                    .bind(&reason)
                    .bind(&job.payload)
                    .bind(next_attempt(1, now, now))
                    .bind(millis(now))
                    .execute(pool)
                    .await?
                    .rows_affected()
                });
                if stored == 0 {
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
        let attempt: Result<Option<ProcessedEvent>> = on_pool!(self, pool => {
            async {
                let mut tx = pool.begin_write().await?;
                let claimed: Option<(i64, i64)> = sqlx::query_as(
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
                let Some((processed, retry)) = process_event!(tx, id, effect, &actor, now, attempts, received, None) else {
                    return Err(StoreError::Corrupt("a retried event can't be a new delivery's duplicate".into()));
                };
                sqlx::query(MARK_EVENT)
                    .bind(id.to_string())
                    .bind(processed.status.as_str())
                    .bind(processed.outcome.map(ApplyOutcome::as_str))
                    .bind(&processed.error)
                    .bind(processed.org_id.map(|o| o.to_string()))
                    .bind(effect.subscription_ref())
                    .bind(effect.customer_ref())
                    .bind(retry)
                    .bind(millis(now))
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok::<_, StoreError>(Some(processed))
            }
            .await
        });
        drop(gate);
        match attempt {
            Ok(processed) => {
                if let Some(ProcessedEvent { org_id: Some(org), .. }) = &processed {
                    self.touched(*org).await;
                }
                Ok(processed)
            }
            Err(StoreError::Domain(e)) => Err(e.into()),
            Err(e) => {
                tracing::error!(error = %e, %id, "retrying a provider event failed");
                let reason = format!("applying failed: {e}");
                on_pool!(self, pool => {
                    let row: Option<(i64, i64)> = sqlx::query_as(
                        "UPDATE provider_events SET attempts = attempts + 1, status = 'failed', error = $2, lease_until = NULL, processed_at = $3 \
                         WHERE id = $1 AND status IN ('unmatched', 'failed') RETURNING attempts, received_at",
                    )
                    .bind(id.to_string())
                    .bind(&reason)
                    .bind(millis(now))
                    .fetch_optional(pool)
                    .await?;
                    if let Some((attempts, received)) = row {
                        sqlx::query("UPDATE provider_events SET next_attempt_at = $2 WHERE id = $1")
                            .bind(id.to_string())
                            .bind(next_attempt(attempts, from_millis(received)?, now))
                            .execute(pool)
                            .await?;
                    }
                });
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
        let row: Option<(String,)> = on_pool!(self, pool => {
            sqlx::query_as("SELECT id FROM provider_events WHERE provider = $1 AND event_id = $2")
                .bind(provider.as_str())
                .bind(event_id)
                .fetch_optional(pool)
                .await?
        });
        Ok(row.is_some())
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
        let now_ms = millis(now);
        let until = millis(now + lease);
        on_pool!(self, pool => {
            let ids: Vec<(String,)> = match org {
                None => sqlx::query_as(
                    "SELECT id FROM provider_events WHERE next_attempt_at IS NOT NULL AND next_attempt_at <= $1 \
                     AND status IN ('unmatched', 'failed') AND (lease_until IS NULL OR lease_until < $1) \
                     ORDER BY next_attempt_at LIMIT $2",
                )
                .bind(now_ms)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?,
                Some(org) => sqlx::query_as(
                    "SELECT id FROM provider_events WHERE next_attempt_at IS NOT NULL AND next_attempt_at <= $1 \
                     AND status IN ('unmatched', 'failed') AND (lease_until IS NULL OR lease_until < $1) AND org_id = $3 \
                     ORDER BY next_attempt_at LIMIT $2",
                )
                .bind(now_ms)
                .bind(i64::from(limit))
                .bind(org.to_string())
                .fetch_all(pool)
                .await?,
            };
            let mut claimed = Vec::with_capacity(ids.len());
            for (id,) in ids {
                let row: Option<(String, String, String, Vec<u8>)> = sqlx::query_as(
                    "UPDATE provider_events SET lease_until = $2 WHERE id = $1 AND status IN ('unmatched', 'failed') \
                     AND (lease_until IS NULL OR lease_until < $3) RETURNING provider, event_id, event_type, payload",
                )
                .bind(&id)
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
        })
    }

    /// Stored provider events, newest first, optionally of one status.
    pub async fn provider_events(
        &self,
        status: Option<ProviderEventStatus>,
        page: &PageRequest,
    ) -> Result<Page<ProviderEventRecord>> {
        // Ids sort by creation: "after" in a newest-first list is a smaller id.
        let before = page.starting_after.clone().unwrap_or_else(|| "~".to_owned());
        let limit = i64::from(page.limit) + 1;
        let rows: Vec<EventRow> = on_pool!(self, pool => {
            // The cursor must be an item of this very list (same status).
            if let Some(cursor) = &page.starting_after {
                let found: Option<(i32,)> =
                    sqlx::query_as("SELECT 1 FROM provider_events WHERE id = $1 AND ($2 = '' OR status = $2)")
                        .bind(cursor)
                        .bind(status.map(|s| s.as_str()).unwrap_or(""))
                        .fetch_optional(pool)
                        .await?;
                if found.is_none() {
                    return Err(crate::PageRequest::unknown_cursor(cursor));
                }
            }
            match status {
                None => sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT {EVENT_COLUMNS} FROM provider_events WHERE id < $1 ORDER BY id DESC LIMIT $2"
                )))
                .bind(&before)
                .bind(limit)
                .fetch_all(pool)
                .await?,
                Some(status) => sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT {EVENT_COLUMNS} FROM provider_events WHERE status = $3 AND id < $1 ORDER BY id DESC LIMIT $2"
                )))
                .bind(&before)
                .bind(limit)
                .bind(status.as_str())
                .fetch_all(pool)
                .await?,
            }
        });
        let data = rows.into_iter().map(event_from_row).collect::<Result<Vec<_>>>()?;
        Ok(Page::from_rows(data, page.limit))
    }

    /// One stored provider event by its delivery id.
    pub async fn provider_event(&self, provider: Provider, event_id: &str) -> Result<Option<ProviderEventRecord>> {
        let row: Option<EventRow> = on_pool!(self, pool => {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {EVENT_COLUMNS} FROM provider_events WHERE provider = $1 AND event_id = $2"
            )))
            .bind(provider.as_str())
            .bind(event_id)
            .fetch_optional(pool)
            .await?
        });
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
        let outcome = on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let kind = lock_org!(tx, org);
            let outcome = apply_snapshot!(tx, org, kind, input, actor, now);
            match outcome {
                Ok(outcome) => {
                    tx.commit().await?;
                    outcome
                }
                Err(reason) => return Err(DomainError::conflict(reason).into()),
            }
        });
        drop(gate);
        self.touched(org).await;
        Ok((outcome, self.subscription(org).await?))
    }

    /// Live subscriptions with an org id after `after`, in org order (a
    /// reconciliation pass walks them page by page).
    pub async fn live_subscriptions(&self, after: Option<OrgId>, limit: u32) -> Result<Vec<StoredSubscription>> {
        let after = after.map(|o| o.to_string()).unwrap_or_default();
        let rows: Vec<SubscriptionRow> = on_pool!(self, pool => {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE status NOT IN ('canceled', 'incomplete_expired') \
                 AND org_id > $1 ORDER BY org_id LIMIT $2"
            )))
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?
        });
        rows.into_iter().map(subscription_from_row).collect()
    }

    /// Takes the org's reconciliation lease for `holder` until `now + ttl`,
    /// unless another holder's lease is still running. `true` = taken.
    pub async fn claim_reconcile_lease(
        &self,
        org: OrgId,
        holder: &str,
        now: Timestamp,
        ttl: time::Duration,
    ) -> Result<bool> {
        let taken = on_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO reconcile_leases (org_id, holder, lease_until) VALUES ($1, $2, $3) \
                 ON CONFLICT (org_id) DO UPDATE SET holder = excluded.holder, lease_until = excluded.lease_until \
                 WHERE reconcile_leases.lease_until < $4 OR reconcile_leases.holder = excluded.holder",
            )
            .bind(org.to_string())
            .bind(holder)
            .bind(millis(now + ttl))
            .bind(millis(now))
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(taken == 1)
    }

    pub async fn release_reconcile_lease(&self, org: OrgId, holder: &str) -> Result<()> {
        on_pool!(self, pool => {
            sqlx::query("DELETE FROM reconcile_leases WHERE org_id = $1 AND holder = $2")
                .bind(org.to_string())
                .bind(holder)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Records a checkout about to be opened. Refused with
    /// `subscription_exists` while the org has a live subscription (checked
    /// under the org's lock).
    pub async fn begin_checkout(&self, new: &NewCheckout, actor: &Actor, now: Timestamp) -> Result<CheckoutRecord> {
        let id = sandbox_id("chk");
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            lock_org!(tx, new.org);
            let live: Option<(String, String)> = sqlx::query_as(
                "SELECT status, provider FROM subscriptions WHERE org_id = $1 AND status NOT IN ('canceled', 'incomplete_expired')",
            )
            .bind(new.org.to_string())
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
            sqlx::query(
                "INSERT INTO checkouts (id, org_id, provider, plan, price_id, quantity, started_by, success_url, cancel_url, status, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'open', $10, $10)",
            )
            .bind(&id)
            .bind(new.org.to_string())
            .bind(new.provider.as_str())
            .bind(&new.plan)
            .bind(&new.price_id)
            .bind(new.quantity)
            .bind(new.started_by.map(|u| u.to_string()))
            .bind(&new.success_url)
            .bind(&new.cancel_url)
            .bind(millis(now))
            .execute(&mut *tx)
            .await?;
            record_event!(tx, new.org.to_string(), "checkout.started", actor,
                serde_json::json!({"org_id": new.org, "checkout_id": id, "provider": new.provider.as_str(), "plan": new.plan, "seats": new.quantity}), now)?;
            tx.commit().await?;
        });
        self.checkout(&id).await?.ok_or_else(|| StoreError::Corrupt(format!("checkout {id} vanished")))
    }

    /// Records the provider's session for a checkout.
    pub async fn checkout_opened(&self, id: &str, session_id: &str, url: &str, now: Timestamp) -> Result<()> {
        on_pool!(self, pool => {
            sqlx::query("UPDATE checkouts SET session_id = $2, url = $3, updated_at = $4 WHERE id = $1")
                .bind(id)
                .bind(session_id)
                .bind(url)
                .bind(millis(now))
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Marks an open checkout abandoned (the provider refused it, or the
    /// buyer cancelled). `false` when it was no longer open.
    pub async fn cancel_checkout(&self, id: &str, now: Timestamp) -> Result<bool> {
        let done = on_pool!(self, pool => {
            sqlx::query("UPDATE checkouts SET status = 'canceled', updated_at = $2 WHERE id = $1 AND status = 'open'")
                .bind(id)
                .bind(millis(now))
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(done == 1)
    }

    pub async fn checkout(&self, id: &str) -> Result<Option<CheckoutRecord>> {
        let row: Option<CheckoutRow> = on_pool!(self, pool => {
            sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {CHECKOUT_COLUMNS} FROM checkouts WHERE id = $1")))
                .bind(id)
                .fetch_optional(pool)
                .await?
        });
        row.map(checkout_from_row).transpose()
    }

    /// The provider customer the org is known as, if any (so that a new
    /// checkout reuses it).
    pub async fn org_customer(&self, org: OrgId, provider: Provider) -> Result<Option<String>> {
        let row: Option<(String,)> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT provider_customer_id FROM subscriptions WHERE org_id = $1 AND provider = $2 AND provider_customer_id IS NOT NULL \
                 UNION ALL SELECT customer_id FROM billing_customers WHERE org_id = $1 AND provider = $2",
            )
            .bind(org.to_string())
            .bind(provider.as_str())
            .fetch_optional(pool)
            .await?
        });
        Ok(row.map(|(c,)| c))
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
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            lock_org!(tx, org);
            let member = crate::member_role_in_tx!(tx, org, target);
            if member.is_none() {
                return Err(DomainError::invalid(
                    "user_id",
                    format!("{target} is not a member of this organization; invite them first, then make them billing admin"),
                )
                .into());
            }
            let (current,): (Option<String>,) = sqlx::query_as("SELECT billing_admin_user_id FROM orgs WHERE id = $1")
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
                sqlx::query("UPDATE orgs SET billing_admin_user_id = $1, updated_at = $2 WHERE id = $3")
                    .bind(target.to_string())
                    .bind(millis(now))
                    .bind(org.to_string())
                    .execute(&mut *tx)
                    .await?;
                record_event!(tx, org.to_string(), "billing_admin.changed", actor,
                    serde_json::json!({"org_id": org, "from": current, "to": target, "reason": "transfer"}), now)?;
            }
            tx.commit().await?;
        });
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
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let paid = sqlx::query(
                "UPDATE checkouts SET status = 'paid', updated_at = $2 WHERE id = $1 AND provider = 'sandbox' AND status = 'open'",
            )
            .bind(checkout_id)
            .bind(millis(now))
            .execute(&mut *tx)
            .await?
            .rows_affected();
            let row: Option<CheckoutRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {CHECKOUT_COLUMNS} FROM checkouts WHERE id = $1 AND provider = 'sandbox'"
            )))
            .bind(checkout_id)
            .fetch_optional(&mut *tx)
            .await?;
            let checkout = checkout_from_row(row.ok_or(DomainError::NotFound { what: "sandbox checkout" })?)?;
            if paid == 1 {
                sqlx::query(
                    "INSERT INTO sandbox_subscriptions (id, checkout_id, org_id, customer_id, price_id, quantity, status, \
                     cancel_at_period_end, current_period_end, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, 'active', FALSE, $7, $8, $8)",
                )
                .bind(sandbox_id("sbxsub"))
                .bind(checkout_id)
                .bind(checkout.org_id.to_string())
                .bind(format!("sbxcus_{}", &checkout.org_id.to_string()[4..]))
                .bind(&checkout.price_id)
                .bind(checkout.quantity)
                .bind(millis(now + period))
                .bind(millis(now))
                .execute(&mut *tx)
                .await?;
            } else if checkout.status == CheckoutStatus::Canceled {
                return Err(DomainError::conflict("this sandbox checkout was cancelled; start a new checkout").into());
            }
            let row: SandboxRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {SANDBOX_COLUMNS} FROM sandbox_subscriptions WHERE checkout_id = $1"
            )))
            .bind(checkout_id)
            .fetch_one(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(SandboxPayment { checkout, subscription: sandbox_from_row(row)? })
        })
    }

    pub async fn sandbox_subscription(&self, id: &str) -> Result<Option<SandboxSubscription>> {
        let row: Option<SandboxRow> = on_pool!(self, pool => {
            sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {SANDBOX_COLUMNS} FROM sandbox_subscriptions WHERE id = $1")))
                .bind(id)
                .fetch_optional(pool)
                .await?
        });
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
        let now_ms = millis(now);
        let row: Option<SandboxRow> = on_pool!(self, pool => {
            match change {
                SandboxChange::CancelAtPeriodEnd(cancel) => sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "UPDATE sandbox_subscriptions SET cancel_at_period_end = $2, updated_at = $3 \
                     WHERE id = $1 AND status <> 'canceled' RETURNING {SANDBOX_COLUMNS}"
                )))
                .bind(id)
                .bind(cancel)
                .bind(now_ms)
                .fetch_optional(pool)
                .await?,
                SandboxChange::CancelNow => sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "UPDATE sandbox_subscriptions SET status = 'canceled', cancel_at_period_end = FALSE, current_period_end = $2, updated_at = $2 \
                     WHERE id = $1 AND status <> 'canceled' RETURNING {SANDBOX_COLUMNS}"
                )))
                .bind(id)
                .bind(now_ms)
                .fetch_optional(pool)
                .await?,
                SandboxChange::Quantity(quantity) => sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "UPDATE sandbox_subscriptions SET quantity = $2, updated_at = $3 \
                     WHERE id = $1 AND status <> 'canceled' RETURNING {SANDBOX_COLUMNS}"
                )))
                .bind(id)
                .bind(quantity)
                .bind(now_ms)
                .fetch_optional(pool)
                .await?,
                // A period that ended renews (whole periods at a time), or ends
                // the subscription when it was set to cancel.
                SandboxChange::Refresh => sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "UPDATE sandbox_subscriptions SET \
                     status = CASE WHEN current_period_end <= $2 AND cancel_at_period_end THEN 'canceled' ELSE status END, \
                     current_period_end = CASE WHEN current_period_end <= $2 AND NOT cancel_at_period_end AND status <> 'canceled' \
                         THEN current_period_end + ((($2 - current_period_end) / $3) + 1) * $3 ELSE current_period_end END, \
                     cancel_at_period_end = CASE WHEN current_period_end <= $2 THEN FALSE ELSE cancel_at_period_end END, \
                     updated_at = CASE WHEN current_period_end <= $2 THEN $2 ELSE updated_at END \
                     WHERE id = $1 RETURNING {SANDBOX_COLUMNS}"
                )))
                .bind(id)
                .bind(now_ms)
                .bind(period.whole_milliseconds() as i64)
                .fetch_optional(pool)
                .await?,
            }
        });
        match row {
            Some(row) => sandbox_from_row(row),
            None => match self.sandbox_subscription(id).await? {
                None => Err(DomainError::NotFound { what: "sandbox subscription" }.into()),
                Some(_) => Err(DomainError::conflict("this subscription has ended; start a new checkout").into()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const T1: Timestamp = datetime!(2026-01-01 10:00 UTC);
    const T2: Timestamp = datetime!(2026-01-01 11:00 UTC);

    fn snap(psid: &str, status: SubscriptionStatus, at: Timestamp) -> SubscriptionSnapshot {
        SubscriptionSnapshot {
            provider: Provider::Stripe,
            provider_subscription_id: psid.into(),
            provider_customer_id: Some("cus_1".into()),
            org_id: None,
            status,
            price_id: Some("price_1".into()),
            item_id: Some("si_1".into()),
            quantity: 3,
            current_period_end: None,
            cancel_at_period_end: false,
            trial_end: None,
            observed_at: at,
            portal_url: None,
        }
    }

    fn stored(s: &SubscriptionSnapshot) -> StoredSubscription {
        StoredSubscription {
            id: SubscriptionId::new(),
            org_id: OrgId::new(),
            provider: s.provider,
            provider_subscription_id: s.provider_subscription_id.clone(),
            provider_customer_id: s.provider_customer_id.clone(),
            status: s.status,
            price_id: s.price_id.clone(),
            item_id: s.item_id.clone(),
            quantity: s.quantity,
            current_period_end: s.current_period_end,
            cancel_at_period_end: s.cancel_at_period_end,
            trial_end: s.trial_end,
            past_due_since: None,
            portal_url: s.portal_url.clone(),
            observed_at: s.observed_at,
        }
    }

    use SubscriptionStatus::{Active, Canceled, PastDue};

    #[test]
    fn newer_states_of_the_same_subscription_apply_and_older_ones_do_not() {
        let current = stored(&snap("sub_a", Active, T2));
        assert_eq!(decide(Some(&current), &snap("sub_a", PastDue, T1), false, None), Decision::Stale);
        assert_eq!(decide(Some(&current), &snap("sub_a", PastDue, T2), false, None), Decision::Update);
        assert_eq!(decide(Some(&current), &snap("sub_a", Active, T2), false, None), Decision::Unchanged);
        assert_eq!(decide(None, &snap("sub_a", Active, T1), false, None), Decision::Insert);
    }

    #[test]
    fn an_ended_subscription_never_comes_back_even_at_the_same_second() {
        let current = stored(&snap("sub_a", Canceled, T1));
        assert_eq!(decide(Some(&current), &snap("sub_a", Active, T1), false, None), Decision::Stale);
        assert_eq!(decide(Some(&current), &snap("sub_a", Active, T2), false, None), Decision::Stale);
        assert_eq!(decide(None, &snap("sub_a", Active, T2), true, None), Decision::Stale);
    }

    #[test]
    fn a_new_subscription_replaces_an_ended_one_but_not_a_live_one() {
        let ended = stored(&snap("sub_a", Canceled, T2));
        assert_eq!(decide(Some(&ended), &snap("sub_b", Active, T1), false, None), Decision::Replace);
        let live = stored(&snap("sub_a", Active, T1));
        assert!(matches!(decide(Some(&live), &snap("sub_b", Active, T2), false, None), Decision::Conflict(_)));
        assert_eq!(decide(Some(&live), &snap("sub_b", Canceled, T2), false, None), Decision::Superseded);
        assert_eq!(decide(Some(&live), &snap("sub_old", Active, T2), true, None), Decision::Stale);
        assert!(matches!(decide(None, &snap("sub_a", Active, T1), false, Some("org_x")), Decision::Conflict(_)));
    }

    #[test]
    fn past_due_since_is_kept_while_past_due_and_cleared_after() {
        let mut current = stored(&snap("sub_a", PastDue, T1));
        current.past_due_since = Some(T1);
        assert_eq!(past_due_since(Some(&current), &snap("sub_a", PastDue, T2)), Some(T1));
        assert_eq!(past_due_since(Some(&current), &snap("sub_a", Active, T2)), None);
        let active = stored(&snap("sub_a", Active, T1));
        assert_eq!(past_due_since(Some(&active), &snap("sub_a", PastDue, T2)), Some(T2));
    }

    #[test]
    fn retries_back_off_and_stop_after_the_window() {
        let now = T2;
        assert_eq!(next_attempt(1, now, now), Some(millis(now) + 2_000));
        assert_eq!(next_attempt(40, now, now), Some(millis(now) + MAX_RETRY_BACKOFF_SECS * 1000));
        assert_eq!(next_attempt(3, now - time::Duration::days(8), now), None);
    }
}
