//! Storing and applying a delivery: the event row and everything it changed
//! commit together or not at all.
//!
//! - **Once.** The unique key on provider + event id decides between copies
//!   of a delivery, also when they arrive at once: the loser changes nothing.
//! - **Nothing lost.** An event whose org can't be resolved is stored as
//!   `unmatched`, one that could not be applied as `failed` (in a transaction
//!   of its own when applying failed on the database's side), both with the
//!   time of their next attempt.
//! - **Throughput on SQLite.** Concurrent deliveries are applied together in
//!   one transaction (group commit, see [`SqliteWrites`]); if any of them
//!   fails, each is applied on its own.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use crate::sql::{Sql, query};
use orgplane_core::org::OrgKind;
use orgplane_core::subscription::Provider;
use orgplane_core::{OrgId, ProviderEventId, Timestamp};
use sqlx::Pool;
use tokio::sync::oneshot;

use super::events::{EventEffect, Ingest, NewProviderEvent, ProcessedEvent, ProviderEventStatus, delivery_stored};
use super::next_attempt;
use super::payments::report_payment_failure;
use super::snapshots::ApplyOutcome;
use crate::apply::{Applied, Refused};

use crate::{Actor, Backend, BeginWrite, Result, Store, StoreError, millis, parse_id};

const INSERT_EVENT: &str = "INSERT INTO provider_events (id, provider, event_id, event_type, occurred_at, status, outcome, error, org_id, \
     provider_subscription_id, provider_customer_id, payload, attempts, next_attempt_at, received_at, processed_at, payment, payment_reported_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 1, $13, $14, $14, $15, $16) ON CONFLICT (provider, event_id) DO NOTHING RETURNING id";

/// What resolving an event's org found.
enum Resolution {
    Found(OrgId, OrgKind),
    Unmatched,
    /// The delivery was stored before.
    Duplicate,
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

/// What processing an event did, for the caller to record on its row.
pub(super) struct Processed {
    pub(super) event: ProcessedEvent,
    /// When to try it again (unmatched, failed), as stored.
    pub(super) retry: Option<i64>,
    /// When a new delivery's payment failure was written to the org's log.
    pub(super) payment_reported_at: Option<Timestamp>,
}

/// Applies an event's effect inside the caller's transaction. `None` when
/// `dedupe` finds the delivery stored before (nothing was written), else
/// what it did ([`Processed`]), which the caller records on the event row.
#[allow(clippy::too_many_arguments)]
pub(super) async fn process_event<DB: Sql>(
    tx: &mut sqlx::Transaction<'_, DB>,
    id: ProviderEventId,
    effect: &EventEffect,
    actor: &Actor,
    now: Timestamp,
    attempts: i64,
    received: Timestamp,
    dedupe: Option<(&str, &str)>,
) -> Result<Option<Processed>> {
    let mut payment_reported_at = None;
    let decided: Decided = if let Some(reason) = &effect.failure {
        (ProviderEventStatus::Failed, None, Some(reason.clone()), None)
    } else if effect.snapshot.is_none() && effect.customer_ref().is_none() && effect.payment_failure().is_none() {
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
                let decided = match &effect.snapshot {
                    None if effect.customer_id.is_none() => {
                        (ProviderEventStatus::Applied, Some(ApplyOutcome::Unchanged), None, Some(org))
                    }
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
                };
                if let Some(failure) = effect.payment_failure() {
                    let new_delivery = dedupe.is_some();
                    let reported = report_payment_failure(tx, id, new_delivery, org, effect, failure, actor, now).await?;
                    payment_reported_at = reported.filter(|_| new_delivery);
                }
                decided
            }
        }
    };
    let (status, outcome, error, org) = decided;
    let retry = match status {
        ProviderEventStatus::Unmatched | ProviderEventStatus::Failed => next_attempt(attempts, received, now),
        _ => None,
    };
    Ok(Some(Processed {
        event: ProcessedEvent { id, status, outcome, org_id: org, error },
        retry,
        payment_reported_at,
    }))
}

/// Inserts a new delivery with the result of processing it. `false` when
/// the unique key finds it stored before.
async fn insert_event<DB: Sql>(tx: &mut sqlx::Transaction<'_, DB>, job: &IngestJob, done: &Processed) -> Result<bool> {
    let processed = &done.event;
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
        .bind(done.retry)
        .bind(millis(job.now))
        .bind(job.effect.payment.as_ref().map(|p| p.as_str().to_owned()))
        .bind(done.payment_reported_at.map(millis))
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
    pub(super) async fn sqlite_write_gate(&self) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        match &self.backend {
            Backend::Sqlite(pool) => Some(sqlite_writes(pool).gate.clone().lock_owned().await),
            Backend::Postgres(_) => None,
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
                    Some(done) => {
                        if insert_event(&mut tx, job, &done).await? {
                            results.push(Ingest::Processed(done.event));
                        } else if done.event.org_id.is_none() {
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
}

/// Stores and applies one delivery in a transaction of its own. `Duplicate`
/// when it was stored before: then nothing it did is kept.
async fn ingest_in_tx<DB: Sql>(pool: &Pool<DB>, id: ProviderEventId, job: &IngestJob) -> Result<Ingest> {
    let actor = Actor::Provider(job.event_id.clone());
    let mut tx = pool.begin_write().await?;
    let dedupe = Some((job.provider.as_str(), job.event_id.as_str()));
    let Some(done) = process_event(&mut tx, id, &job.effect, &actor, job.now, 1, job.now, dedupe).await? else {
        tx.rollback().await?;
        return Ok(Ingest::Duplicate);
    };
    // The unique key decides: a copy that raced this one inserts
    // nothing, and everything it did rolls back with it.
    if !insert_event(&mut tx, job, &done).await? {
        tx.rollback().await?;
        return Ok(Ingest::Duplicate);
    }
    tx.commit().await?;
    Ok(Ingest::Processed(done.event))
}

/// Stores a delivery that could not be applied as `failed`, with `reason`,
/// for a retry. `false` when the delivery was stored before.
async fn store_failed_delivery<DB: Sql>(
    pool: &Pool<DB>,
    id: ProviderEventId,
    job: &IngestJob,
    reason: &str,
) -> Result<bool> {
    let _gate = crate::sql::Sql::write_permit(pool).await?;
    let stored = query(
        "INSERT INTO provider_events (id, provider, event_id, event_type, occurred_at, status, error, payload, attempts, \
         next_attempt_at, received_at, processed_at, provider_subscription_id, payment) \
         VALUES ($1, $2, $3, $4, $5, 'failed', $6, $7, 1, $8, $9, $9, $10, $11) \
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
    .bind(job.effect.subscription_ref().map(str::to_owned))
    .bind(job.effect.payment.as_ref().map(|p| p.as_str().to_owned()))
    .execute(pool)
    .await?;
    Ok(stored.rows_affected() != 0)
}
