//! Reconciliation: retrying unmatched and failed events, and the leases
//! that keep concurrent passes (replicas sharing a PostgreSQL database)
//! apart.
//!
//! - A pass claims each due event with a lease written by a conditional
//!   `UPDATE`, so no two passes retry the same event at once; a retry takes
//!   one more attempt and records its result on the row in one transaction.
//! - A pass claims each org it re-fetches with a conditional upsert of its
//!   lease, which also skips an org another pass checked within the
//!   freshness window; a lease runs out by itself if its holder dies.

use crate::sql::{Sql, query, query_as};
use orgplane_core::subscription::Provider;
use orgplane_core::{OrgId, ProviderEventId, Timestamp};
use sqlx::Pool;

use super::events::{EventEffect, ProcessedEvent, ProviderEventStatus};
use super::ingest::process_event;
use super::{corrupt_provider, next_attempt};
use crate::subscriptions::{StoredSubscription, SubscriptionRow, subscription_from_row};
use crate::tx::terminal_statuses;
use crate::{Actor, Backend, BeginWrite, Result, Store, StoreError, from_millis, millis, parse_id};

/// An unmatched or failed event claimed for a retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryCandidate {
    pub id: ProviderEventId,
    pub provider: Provider,
    pub event_id: String,
    pub event_type: String,
    pub payload: Vec<u8>,
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

const SUBSCRIPTION_COLUMNS: &str = "id, org_id, provider, provider_subscription_id, provider_customer_id, status, price_id, item_id, quantity, current_period_end, cancel_at_period_end, trial_end, past_due_since, portal_url, observed_at";

const MARK_EVENT: &str = "UPDATE provider_events SET status = $2, outcome = $3, error = $4, org_id = COALESCE($5, org_id), \
     provider_subscription_id = COALESCE($6, provider_subscription_id), provider_customer_id = COALESCE($7, provider_customer_id), \
     next_attempt_at = $8, lease_until = NULL, processed_at = $9 WHERE id = $1";

impl Store {
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
    let Some(done) = process_event(&mut tx, id, effect, actor, now, attempts, received, None).await? else {
        return Err(StoreError::Corrupt("a retried event can't be a new delivery's duplicate".into()));
    };
    let (processed, retry) = (done.event, done.retry);
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
    // One turn at SQLite's write gate for both statements.
    let _gate = crate::sql::Sql::write_permit(pool).await?;
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
        let _gate = crate::sql::Sql::write_permit(pool).await?;
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
    let _gate = crate::sql::Sql::write_permit(pool).await?;
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
    let _gate = crate::sql::Sql::write_permit(pool).await?;
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
