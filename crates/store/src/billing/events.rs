//! Provider events as stored: what one asks of orgplane ([`EventEffect`]),
//! its row in `provider_events`, and the listing of them.
//!
//! - A delivery is identified by provider + the provider's event id (unique
//!   in the table); [`Store::provider_event_seen`] is only a cheap pre-check,
//!   the unique key decides (see `ingest`).
//! - Listing pages newest first and accepts only a cursor from the very list
//!   (same status filter).

use crate::sql::{Executes, FromSqlRow, Row, Sql, query, query_as};
use orgplane_core::subscription::{Payment, PaymentFailure, Provider};
use orgplane_core::{OrgId, ProviderEventId, Timestamp};
use sqlx::Pool;

use super::corrupt_provider;
use super::snapshots::{ApplyOutcome, SnapshotInput};
use crate::tx::ensure_cursor_in_list;
use crate::{Backend, Page, PageRequest, Result, Store, StoreError, from_millis, parse_id};

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
    /// What an invoice event said about paying: kept on the row, and a
    /// failure is reported to the org's log (see `payments`).
    pub payment: Option<Payment>,
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
            payment: None,
        }
    }

    /// An event that can't be applied now, for `reason`.
    pub fn failed(provider: Provider, reason: impl Into<String>) -> Self {
        EventEffect { failure: Some(reason.into()), ..EventEffect::nothing(provider) }
    }

    pub(super) fn subscription_ref(&self) -> Option<&str> {
        self.snapshot.as_ref().map(|s| s.snapshot.provider_subscription_id.as_str()).or(self.subscription_id.as_deref())
    }

    pub(super) fn payment_failure(&self) -> Option<&PaymentFailure> {
        match &self.payment {
            Some(Payment::Failed(failure)) => Some(failure),
            _ => None,
        }
    }

    pub(super) fn customer_ref(&self) -> Option<&str> {
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

/// Whether the delivery `(provider, event_id)` is stored: inside the
/// caller's transaction (`&mut **tx`), or on the pool.
pub(super) async fn delivery_stored<'e, DB: Sql>(
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

impl Store {
    /// Whether a delivery was stored before (a cheap check before asking the
    /// provider anything; the unique key decides for real).
    pub async fn provider_event_seen(&self, provider: Provider, event_id: &str) -> Result<bool> {
        match &self.backend {
            Backend::Sqlite(pool) => delivery_stored(pool, provider.as_str(), event_id).await,
            Backend::Postgres(pool) => delivery_stored(pool, provider.as_str(), event_id).await,
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
