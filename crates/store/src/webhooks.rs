//! Outgoing webhooks: the app's endpoints, one delivery per (endpoint,
//! event), and every attempt's outcome.
//!
//! Deliveries are derived from the event log, which each change writes in
//! its own transaction (a transactional outbox): [`Store::webhook_fan_out`]
//! follows the log from a position kept in the database and inserts the
//! deliveries of each event in the same transaction that moves the position,
//! so a crash loses nothing and repeats nothing (`(endpoint_id, event_id)` is
//! unique). Sending is leased per endpoint ([`Store::claim_webhook_endpoints`]):
//! one replica at a time sends an endpoint's deliveries, in log order.
//!
//! This module stores what it is given: the secrets arrive encrypted, the
//! event filters arrive parsed, the next attempt's time arrives computed.
//!
//! Each operation is one body run on either backend's pool (`with_pool!`),
//! as `tx` does with generic functions: the same SQL serves both.

use orgplane_core::webhooks::{EventTypeFilter, endpoint_takes};
use orgplane_core::{DeliveryId, DomainError, EventId, OrgId, Timestamp, WebhookEndpointId};

use crate::events::{EventRecord, event_from_row};
use crate::tx::record_user_event;
use crate::write_gate::Lane;
use crate::{
    Actor, Backend, BackendKind, BeginWrite, Page, PageRequest, Result, Store, StoreError, from_millis, millis,
    parse_id,
};

/// Runs `$body` with `$pool` bound to the store's pool: one body, compiled
/// for each backend.
macro_rules! with_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.backend {
            Backend::Sqlite($pool) => $body,
            Backend::Postgres($pool) => $body,
        }
    };
}
pub(crate) use with_pool;

/// A new endpoint, its secret already encrypted.
#[derive(Debug, Clone)]
pub struct NewWebhookEndpoint {
    pub id: WebhookEndpointId,
    pub url: String,
    pub event_types: EventTypeFilter,
    pub org_id: Option<OrgId>,
    pub description: Option<String>,
    pub secret: Vec<u8>,
}

/// An endpoint as stored.
#[derive(Debug, Clone)]
pub struct WebhookEndpointRecord {
    pub id: WebhookEndpointId,
    pub url: String,
    pub event_types: Vec<String>,
    pub org_id: Option<String>,
    pub description: Option<String>,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub secret: Vec<u8>,
    pub previous_secret: Option<Vec<u8>>,
    pub previous_secret_until: Option<Timestamp>,
    pub failing_since: Option<Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// A change to an endpoint (`None`: unchanged; `description: Some(None)` clears it).
#[derive(Debug, Clone, Default)]
pub struct WebhookEndpointPatch {
    pub url: Option<String>,
    pub event_types: Option<EventTypeFilter>,
    pub enabled: Option<bool>,
    pub description: Option<Option<String>>,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryStatus {
    Pending,
    Succeeded,
    Failed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Succeeded => "succeeded",
            DeliveryStatus::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "pending" => Some(DeliveryStatus::Pending),
            "succeeded" => Some(DeliveryStatus::Succeeded),
            "failed" => Some(DeliveryStatus::Failed),
            _ => None,
        }
    }
}

/// One attempt of a delivery, as logged.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    pub attempt: i64,
    pub attempted_at: Timestamp,
    pub status_code: Option<u16>,
    pub duration_ms: i64,
    pub response_excerpt: Option<String>,
    pub error: Option<String>,
}

/// A delivery with its attempts, for the delivery log.
#[derive(Debug, Clone)]
pub struct DeliveryRecord {
    pub id: DeliveryId,
    pub event_id: String,
    pub event_type: String,
    pub status: DeliveryStatus,
    pub next_attempt_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub attempts: Vec<AttemptRecord>,
}

/// An endpoint this replica now sends to, with what signing needs.
#[derive(Debug, Clone)]
pub struct LeasedEndpoint {
    pub id: WebhookEndpointId,
    pub url: String,
    pub secret: Vec<u8>,
    pub previous_secret: Option<Vec<u8>>,
    pub previous_secret_until: Option<Timestamp>,
}

/// A delivery due now, with its body's source: the event from the log, or
/// a stored body (`webhook.test`).
#[derive(Debug, Clone)]
pub struct DueDelivery {
    pub id: DeliveryId,
    pub event_id: String,
    pub event_type: String,
    /// Failed attempts in a row since the delivery was queued.
    pub failures: u32,
    /// Which queueing of the delivery this is (a replay queues it again).
    pub generation: i64,
    pub body: DueBody,
}

#[derive(Debug, Clone)]
pub enum DueBody {
    Event(EventRecord),
    Stored(String),
}

/// What became of one attempt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AttemptResult {
    Succeeded,
    /// Failed; tried again at this time.
    RetryAt(Timestamp),
    /// Failed, and the schedule is used up: the delivery is `failed`.
    GaveUp,
    /// The receiver answered 410 Gone: the delivery fails and the endpoint is disabled.
    Gone,
}

/// One attempt to log.
#[derive(Debug, Clone)]
pub struct AttemptOutcome {
    pub delivery: DeliveryId,
    /// The [`DueDelivery::generation`] that was sent.
    pub generation: i64,
    pub endpoint: WebhookEndpointId,
    pub at: Timestamp,
    pub status_code: Option<u16>,
    pub duration_ms: i64,
    pub response_excerpt: Option<String>,
    pub error: Option<String>,
    pub result: AttemptResult,
}

/// Where a replay starts.
#[derive(Debug, Clone)]
pub enum ReplayFrom {
    /// Every event after this one (`evt_…`).
    AfterEvent(String),
    /// Every event committed at or after this time.
    Since(Timestamp),
}

/// What one fan-out step did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FanOut {
    /// Events read from the log.
    pub events: usize,
    /// Deliveries created.
    pub deliveries: usize,
    /// Another replica holds the log's position right now.
    pub busy: bool,
}

type EndpointRow = (
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    bool,
    Option<String>,
    Vec<u8>,
    Option<Vec<u8>>,
    Option<i64>,
    Option<i64>,
    i64,
    i64,
);

fn endpoint_from_row(row: EndpointRow) -> Result<WebhookEndpointRecord> {
    let (id, url, types, org_id, description, enabled, reason, secret, previous, until, failing, created, updated) =
        row;
    Ok(WebhookEndpointRecord {
        id: parse_id(&id)?,
        url,
        event_types: serde_json::from_str(&types)
            .map_err(|e| StoreError::Corrupt(format!("event_types of webhook endpoint {id}: {e}")))?,
        org_id,
        description,
        enabled,
        disabled_reason: reason,
        secret,
        previous_secret: previous,
        previous_secret_until: until.map(from_millis).transpose()?,
        failing_since: failing.map(from_millis).transpose()?,
        created_at: from_millis(created)?,
        updated_at: from_millis(updated)?,
    })
}

/// url, secret, previous secret, until when the previous one signs.
type LeaseRow = (String, Vec<u8>, Option<Vec<u8>>, Option<i64>);

fn filter_of(types: &str) -> Result<EventTypeFilter> {
    let patterns: Vec<String> =
        serde_json::from_str(types).map_err(|e| StoreError::Corrupt(format!("webhook endpoint event_types: {e}")))?;
    EventTypeFilter::parse(&patterns).map_err(|e| StoreError::Corrupt(format!("webhook endpoint event_types: {e}")))
}

fn not_found() -> StoreError {
    DomainError::NotFound { what: "webhook endpoint" }.into()
}

/// Whether any endpoint is free to claim with a delivery due (`$1`: true,
/// `$2`: now): the claim's own condition, read without a lock.
const DUE_ENDPOINT_EXISTS: &str = "SELECT e.id FROM webhook_endpoints e WHERE e.enabled = $1 AND (e.lease_until IS NULL OR e.lease_until < $2) \
     AND EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.endpoint_id = e.id AND d.status = 'pending' AND d.next_attempt_at <= $2) LIMIT 1";

/// The SQL of the endpoint's row, written once (`$1`: the id).
const SELECT_ENDPOINT: &str = "SELECT id, url, event_types, org_id, description, enabled, disabled_reason, secret, previous_secret, previous_secret_until, failing_since, created_at, updated_at FROM webhook_endpoints WHERE id = $1";

impl Store {
    /// Stores a new endpoint. It takes the events committed from now on;
    /// an `org_id` must name an existing org.
    pub async fn create_webhook_endpoint(
        &self,
        new: &NewWebhookEndpoint,
        now: Timestamp,
    ) -> Result<WebhookEndpointRecord> {
        let types =
            serde_json::to_string(new.event_types.patterns()).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        with_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            if let Some(org) = new.org_id {
                let found: Option<(String,)> = sqlx::query_as("SELECT id FROM orgs WHERE id = $1")
                    .bind(org.to_string())
                    .fetch_optional(&mut **tx)
                    .await?;
                if found.is_none() {
                    return Err(DomainError::invalid("org_id", format!("no organization `{org}`; give the id of an existing organization or leave org_id out")).into());
                }
            }
            sqlx::query(
                "INSERT INTO webhook_endpoints (id, url, event_types, org_id, description, enabled, secret, start_after_seq, created_at, updated_at) \
                 SELECT $1, $2, $3, $4, $5, $6, $7, COALESCE(MAX(seq), 0), $8, $8 FROM events",
            )
            .bind(new.id.to_string())
            .bind(new.url.clone())
            .bind(types)
            .bind(new.org_id.map(|o| o.to_string()))
            .bind(new.description.clone())
            .bind(true)
            .bind(new.secret.clone())
            .bind(millis(now))
            .execute(&mut **tx)
            .await?;
            tx.commit().await?;
        });
        self.webhook_endpoint(new.id).await?.ok_or_else(not_found)
    }

    /// One endpoint (`None`: no such endpoint).
    pub async fn webhook_endpoint(&self, id: WebhookEndpointId) -> Result<Option<WebhookEndpointRecord>> {
        let row: Option<EndpointRow> = with_pool!(self, pool => {
            sqlx::query_as(SELECT_ENDPOINT).bind(id.to_string()).fetch_optional(pool).await?
        });
        row.map(endpoint_from_row).transpose()
    }

    /// Endpoints, oldest first.
    pub async fn webhook_endpoints(&self, page: &PageRequest) -> Result<Page<WebhookEndpointRecord>> {
        let rows: Vec<EndpointRow> = with_pool!(self, pool => {
            crate::tx::ensure_cursor_in_list(pool, page, "SELECT 1 FROM webhook_endpoints WHERE id = $1", &[page.starting_after.as_deref().unwrap_or_default()]).await?;
            sqlx::query_as(
                "SELECT id, url, event_types, org_id, description, enabled, disabled_reason, secret, previous_secret, previous_secret_until, failing_since, created_at, updated_at \
                 FROM webhook_endpoints WHERE id > $1 ORDER BY id LIMIT $2",
            )
            .bind(page.starting_after.clone().unwrap_or_default())
            .bind(i64::from(page.limit) + 1)
            .fetch_all(pool)
            .await?
        });
        let data = rows.into_iter().map(endpoint_from_row).collect::<Result<Vec<_>>>()?;
        Ok(Page::from_rows(data, page.limit))
    }

    /// Changes an endpoint. Enabling it again clears its failure record
    /// and any pause; its deliveries resume.
    pub async fn update_webhook_endpoint(
        &self,
        id: WebhookEndpointId,
        patch: &WebhookEndpointPatch,
        now: Timestamp,
    ) -> Result<WebhookEndpointRecord> {
        let types = patch
            .event_types
            .as_ref()
            .map(|f| serde_json::to_string(f.patterns()))
            .transpose()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let changed = with_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let found = sqlx::query("UPDATE webhook_endpoints SET updated_at = $2 WHERE id = $1")
                .bind(id.to_string())
                .bind(millis(now))
                .execute(&mut **tx)
                .await?;
            if found.rows_affected() == 0 {
                return Err(not_found());
            }
            if let Some(url) = &patch.url {
                sqlx::query("UPDATE webhook_endpoints SET url = $2 WHERE id = $1").bind(id.to_string()).bind(url.clone()).execute(&mut **tx).await?;
            }
            if let Some(types) = types {
                sqlx::query("UPDATE webhook_endpoints SET event_types = $2 WHERE id = $1").bind(id.to_string()).bind(types).execute(&mut **tx).await?;
            }
            if let Some(description) = &patch.description {
                sqlx::query("UPDATE webhook_endpoints SET description = $2 WHERE id = $1").bind(id.to_string()).bind(description.clone()).execute(&mut **tx).await?;
            }
            match patch.enabled {
                Some(true) => {
                    sqlx::query(
                        "UPDATE webhook_endpoints SET enabled = $2, disabled_reason = NULL, failing_since = NULL, \
                         lease_until = CASE WHEN lease_owner IS NULL THEN NULL ELSE lease_until END WHERE id = $1",
                    )
                    .bind(id.to_string())
                    .bind(true)
                    .execute(&mut **tx)
                    .await?;
                }
                Some(false) => {
                    sqlx::query("UPDATE webhook_endpoints SET enabled = $2, disabled_reason = 'disabled through the API' WHERE id = $1")
                        .bind(id.to_string())
                        .bind(false)
                        .execute(&mut **tx)
                        .await?;
                }
                None => {}
            }
            tx.commit().await?;
            patch.enabled == Some(true)
        });
        if changed {
            self.wake();
        }
        self.webhook_endpoint(id).await?.ok_or_else(not_found)
    }

    /// Deletes an endpoint with its deliveries and their log; `false`: no such endpoint.
    pub async fn delete_webhook_endpoint(&self, id: WebhookEndpointId) -> Result<bool> {
        let done = with_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            // Attempts, then deliveries: SQLite's cascades need foreign
            // keys on, which every connection of ours has; explicit deletes
            // keep this independent of that.
            sqlx::query("DELETE FROM webhook_attempts WHERE delivery_id IN (SELECT id FROM webhook_deliveries WHERE endpoint_id = $1)")
                .bind(id.to_string()).execute(&mut **tx).await?;
            sqlx::query("DELETE FROM webhook_deliveries WHERE endpoint_id = $1").bind(id.to_string()).execute(&mut **tx).await?;
            let done = sqlx::query("DELETE FROM webhook_endpoints WHERE id = $1").bind(id.to_string()).execute(&mut **tx).await?;
            tx.commit().await?;
            done.rows_affected()
        });
        Ok(done > 0)
    }

    /// Replaces the endpoint's secret with `secret`; the current one keeps
    /// signing until `previous_until`.
    pub async fn rotate_webhook_secret(
        &self,
        id: WebhookEndpointId,
        secret: &[u8],
        previous_until: Timestamp,
        now: Timestamp,
    ) -> Result<WebhookEndpointRecord> {
        let done = with_pool!(self, pool => {
            let _gate = crate::sql::Sql::write_permit(pool).await?;
            sqlx::query(
                "UPDATE webhook_endpoints SET previous_secret = secret, previous_secret_until = $3, secret = $2, updated_at = $4 WHERE id = $1",
            )
            .bind(id.to_string())
            .bind(secret.to_vec())
            .bind(millis(previous_until))
            .bind(millis(now))
            .execute(pool)
            .await?
            .rows_affected()
        });
        if done == 0 {
            return Err(not_found());
        }
        self.webhook_endpoint(id).await?.ok_or_else(not_found)
    }

    /// Queues a delivery of `payload` (a `webhook.test` event, `event_id`)
    /// to the endpoint, after what is already queued. A disabled endpoint
    /// is a `conflict`: nothing would be sent.
    pub async fn queue_webhook_test(
        &self,
        endpoint: WebhookEndpointId,
        event_id: EventId,
        event_type: &str,
        payload: &str,
        now: Timestamp,
    ) -> Result<DeliveryId> {
        let id = DeliveryId::new();
        let done = with_pool!(self, pool => {
            let _gate = crate::sql::Sql::write_permit(pool).await?;
            sqlx::query(
                "INSERT INTO webhook_deliveries (id, endpoint_id, event_id, event_seq, event_type, payload, status, next_attempt_at, created_at, updated_at) \
                 SELECT $1, e.id, $3, (SELECT COALESCE(MAX(seq), 0) FROM events), $4, $5, 'pending', $6, $6, $6 FROM webhook_endpoints e \
                 WHERE e.id = $2 AND e.enabled = $7",
            )
            .bind(id.to_string())
            .bind(endpoint.to_string())
            .bind(event_id.to_string())
            .bind(event_type.to_owned())
            .bind(payload.to_owned())
            .bind(millis(now))
            .bind(true)
            .execute(pool)
            .await?
            .rows_affected()
        });
        if done == 0 {
            return Err(match self.webhook_endpoint(endpoint).await? {
                Some(_) => DomainError::conflict(
                    "this endpoint is disabled; enable it (PATCH {\"enabled\": true}) to send to it",
                )
                .into(),
                None => not_found(),
            });
        }
        self.wake();
        Ok(id)
    }

    /// The endpoint's deliveries, newest first, each with its attempts.
    pub async fn webhook_deliveries(
        &self,
        endpoint: WebhookEndpointId,
        status: Option<DeliveryStatus>,
        page: &PageRequest,
    ) -> Result<Page<DeliveryRecord>> {
        if self.webhook_endpoint(endpoint).await?.is_none() {
            return Err(not_found());
        }
        type Row = (String, String, String, String, Option<i64>, i64);
        type AttemptRow = (i64, i64, Option<i64>, i64, Option<String>, Option<String>);
        let status_text = status.map(|s| s.as_str().to_owned()).unwrap_or_default();
        let (rows, attempts) = with_pool!(self, pool => {
            let cursor = page.starting_after.clone().unwrap_or_default();
            crate::tx::ensure_cursor_in_list(
                pool,
                page,
                "SELECT 1 FROM webhook_deliveries WHERE id = $1 AND endpoint_id = $2 AND ($3 = '' OR status = $3)",
                &[&cursor, &endpoint.to_string(), &status_text],
            )
            .await?;
            let before = if cursor.is_empty() { "~".to_owned() } else { cursor };
            let rows: Vec<Row> = sqlx::query_as(
                "SELECT id, event_id, event_type, status, next_attempt_at, created_at FROM webhook_deliveries \
                 WHERE endpoint_id = $1 AND ($2 = '' OR status = $2) AND id < $3 ORDER BY id DESC LIMIT $4",
            )
            .bind(endpoint.to_string())
            .bind(status_text.clone())
            .bind(before)
            .bind(i64::from(page.limit) + 1)
            .fetch_all(pool)
            .await?;
            let mut attempts = Vec::with_capacity(rows.len());
            for row in &rows {
                let list: Vec<AttemptRow> = sqlx::query_as(
                    "SELECT attempt, attempted_at, status_code, duration_ms, response_excerpt, error FROM webhook_attempts WHERE delivery_id = $1 ORDER BY attempt",
                )
                .bind(row.0.clone())
                .fetch_all(pool)
                .await?;
                attempts.push(list);
            }
            (rows, attempts)
        });
        let mut data = Vec::with_capacity(rows.len());
        for ((id, event_id, event_type, status, next, created), attempts) in rows.into_iter().zip(attempts) {
            data.push(DeliveryRecord {
                id: parse_id(&id)?,
                event_id,
                event_type,
                status: DeliveryStatus::parse(&status)
                    .ok_or_else(|| StoreError::Corrupt(format!("delivery {id} has status `{status}`")))?,
                next_attempt_at: next.map(from_millis).transpose()?,
                created_at: from_millis(created)?,
                attempts: attempts
                    .into_iter()
                    .map(|(attempt, at, code, duration_ms, excerpt, error)| {
                        Ok(AttemptRecord {
                            attempt,
                            attempted_at: from_millis(at)?,
                            status_code: code.and_then(|c| u16::try_from(c).ok()),
                            duration_ms,
                            response_excerpt: excerpt,
                            error,
                        })
                    })
                    .collect::<Result<Vec<_>>>()?,
            });
        }
        Ok(Page::from_rows(data, page.limit))
    }

    /// Queues again every event after `from` that the endpoint takes (its
    /// org and event types), whatever became of earlier deliveries of them:
    /// each is pending again, due now. Returns how many were queued.
    pub async fn replay_webhook_events(
        &self,
        endpoint: WebhookEndpointId,
        from: &ReplayFrom,
        now: Timestamp,
    ) -> Result<u64> {
        const BATCH: i64 = 1000;
        let queued = with_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let row: Option<(String, Option<String>)> =
                sqlx::query_as("SELECT event_types, org_id FROM webhook_endpoints WHERE id = $1")
                    .bind(endpoint.to_string())
                    .fetch_optional(&mut **tx)
                    .await?;
            let Some((types, endpoint_org)) = row else { return Err(not_found()) };
            let filter = filter_of(&types)?;
            let (mut after, since) = match from {
                ReplayFrom::AfterEvent(id) => {
                    let seq: Option<(i64,)> = sqlx::query_as("SELECT seq FROM events WHERE id = $1")
                        .bind(id.clone())
                        .fetch_optional(&mut **tx)
                        .await?;
                    let Some((seq,)) = seq else {
                        return Err(DomainError::invalid("since", format!("no event `{}`; give an event id from the log (evt_…) or an RFC 3339 time", id.chars().take(64).collect::<String>())).into());
                    };
                    (seq, i64::MIN)
                }
                ReplayFrom::Since(at) => (0, millis(*at)),
            };
            let mut queued = 0u64;
            loop {
                let events: Vec<(i64, String, Option<String>, String)> = sqlx::query_as(
                    "SELECT seq, id, org_id, type FROM events WHERE seq > $1 AND created_at >= $2 ORDER BY seq LIMIT $3",
                )
                .bind(after)
                .bind(since)
                .bind(BATCH)
                .fetch_all(&mut **tx)
                .await?;
                let Some(last) = events.last() else { break };
                after = last.0;
                for (seq, event_id, event_org, kind) in &events {
                    if !endpoint_takes(&filter, endpoint_org.as_deref(), kind, event_org.as_deref()) {
                        continue;
                    }
                    sqlx::query(
                        "INSERT INTO webhook_deliveries (id, endpoint_id, event_id, event_seq, event_type, status, next_attempt_at, created_at, updated_at) \
                         VALUES ($1, $2, $3, $4, $5, 'pending', $6, $6, $6) \
                         ON CONFLICT (endpoint_id, event_id) DO UPDATE SET status = 'pending', failures = 0, \
                         generation = webhook_deliveries.generation + 1, next_attempt_at = excluded.next_attempt_at, updated_at = excluded.updated_at",
                    )
                    .bind(DeliveryId::new().to_string())
                    .bind(endpoint.to_string())
                    .bind(event_id.clone())
                    .bind(*seq)
                    .bind(kind.clone())
                    .bind(millis(now))
                    .execute(&mut **tx)
                    .await?;
                    queued += 1;
                }
            }
            // A pause after connection failures would hold the replay back.
            sqlx::query("UPDATE webhook_endpoints SET lease_until = NULL WHERE id = $1 AND lease_owner IS NULL")
                .bind(endpoint.to_string())
                .execute(&mut **tx)
                .await?;
            tx.commit().await?;
            queued
        });
        self.wake();
        Ok(queued)
    }

    /// One step of the fan-out: up to `limit` events after the log position
    /// become deliveries to every enabled endpoint that takes them, and the
    /// position moves past them, in one transaction. On PostgreSQL the
    /// position's row is locked for it, and a replica that finds it locked
    /// skips the step (`busy`); SQLite's writers take turns anyway.
    pub async fn webhook_fan_out(&self, limit: u32, now: Timestamp) -> Result<FanOut> {
        let lock = match self.kind() {
            BackendKind::Sqlite => "SELECT after_seq FROM webhook_fanout WHERE name = 'events'",
            BackendKind::Postgres => {
                "SELECT after_seq FROM webhook_fanout WHERE name = 'events' FOR UPDATE SKIP LOCKED"
            }
        };
        let out = with_pool!(self, pool => {
            let mut tx = pool.begin_worker_write().await?;
            let position: Option<(i64,)> = sqlx::query_as(lock).fetch_optional(&mut **tx).await?;
            let Some((after,)) = position else {
                return Ok(FanOut { busy: true, ..FanOut::default() });
            };
            let events: Vec<(i64, String, Option<String>, String)> =
                sqlx::query_as("SELECT seq, id, org_id, type FROM events WHERE seq > $1 ORDER BY seq LIMIT $2")
                    .bind(after)
                    .bind(i64::from(limit))
                    .fetch_all(&mut **tx)
                    .await?;
            let Some(last) = events.last().map(|e| e.0) else {
                return Ok(FanOut::default());
            };
            let endpoints: Vec<(String, String, Option<String>, i64)> =
                sqlx::query_as("SELECT id, event_types, org_id, start_after_seq FROM webhook_endpoints WHERE enabled = $1")
                    .bind(true)
                    .fetch_all(&mut **tx)
                    .await?;
            let endpoints = endpoints
                .into_iter()
                .map(|(id, types, org, start)| Ok((id, filter_of(&types)?, org, start)))
                .collect::<Result<Vec<_>>>()?;
            let mut deliveries = 0;
            for (seq, event_id, event_org, kind) in &events {
                for (endpoint, filter, endpoint_org, start) in &endpoints {
                    if *seq <= *start || !endpoint_takes(filter, endpoint_org.as_deref(), kind, event_org.as_deref()) {
                        continue;
                    }
                    let done = sqlx::query(
                        "INSERT INTO webhook_deliveries (id, endpoint_id, event_id, event_seq, event_type, status, next_attempt_at, created_at, updated_at) \
                         VALUES ($1, $2, $3, $4, $5, 'pending', $6, $6, $6) ON CONFLICT (endpoint_id, event_id) DO NOTHING",
                    )
                    .bind(DeliveryId::new().to_string())
                    .bind(endpoint.clone())
                    .bind(event_id.clone())
                    .bind(*seq)
                    .bind(kind.clone())
                    .bind(millis(now))
                    .execute(&mut **tx)
                    .await?;
                    deliveries += done.rows_affected() as usize;
                }
            }
            sqlx::query("UPDATE webhook_fanout SET after_seq = $1 WHERE name = 'events'").bind(last).execute(&mut **tx).await?;
            tx.commit().await?;
            FanOut { events: events.len(), deliveries, busy: false }
        });
        Ok(out)
    }

    /// Leases up to `limit` enabled endpoints that have a delivery due and
    /// that no replica holds (or whose holder's lease ran out, or whose
    /// pause ended) to `owner` until `until`. On PostgreSQL rows another
    /// replica is claiming at this moment are skipped, not waited for.
    pub async fn claim_webhook_endpoints(
        &self,
        owner: &str,
        now: Timestamp,
        until: Timestamp,
        limit: u32,
    ) -> Result<Vec<WebhookEndpointId>> {
        let sql = match self.kind() {
            BackendKind::Sqlite => {
                "UPDATE webhook_endpoints SET lease_owner = $1, lease_until = $2 WHERE id IN (\
                 SELECT e.id FROM webhook_endpoints e WHERE e.enabled = $5 AND (e.lease_until IS NULL OR e.lease_until < $3) \
                 AND EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.endpoint_id = e.id AND d.status = 'pending' AND d.next_attempt_at <= $3) \
                 ORDER BY e.id LIMIT $4) AND (lease_until IS NULL OR lease_until < $3) RETURNING id"
            }
            BackendKind::Postgres => {
                "UPDATE webhook_endpoints SET lease_owner = $1, lease_until = $2 WHERE id IN (\
                 SELECT e.id FROM webhook_endpoints e WHERE e.enabled = $5 AND (e.lease_until IS NULL OR e.lease_until < $3) \
                 AND EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.endpoint_id = e.id AND d.status = 'pending' AND d.next_attempt_at <= $3) \
                 ORDER BY e.id LIMIT $4 FOR UPDATE SKIP LOCKED) AND (lease_until IS NULL OR lease_until < $3) RETURNING id"
            }
        };
        let rows: Vec<(String,)> = with_pool!(self, pool => {
            // An UPDATE that matches nothing still takes SQLite's write
            // lock, and this runs on every pass of the worker: a read
            // first, so that a pass with nothing due writes nothing.
            let due: Option<(String,)> = sqlx::query_as(DUE_ENDPOINT_EXISTS)
                .bind(true)
                .bind(millis(now))
                .fetch_optional(pool)
                .await?;
            if due.is_none() {
                return Ok(Vec::new());
            }
            let _gate = crate::sql::Sql::write_permit_in(pool, Lane::Worker).await?;
            sqlx::query_as(sql)
                .bind(owner.to_owned())
                .bind(millis(until))
                .bind(millis(now))
                .bind(i64::from(limit))
                .bind(true)
                .fetch_all(pool)
                .await?
        });
        rows.into_iter().map(|(id,)| parse_id(&id)).collect()
    }

    /// Extends `owner`'s lease on the endpoint to `until` and returns the
    /// endpoint's current target and secrets; `None`: the lease is lost
    /// (taken over after it ran out) or the endpoint is disabled or gone.
    pub async fn renew_webhook_lease(
        &self,
        endpoint: WebhookEndpointId,
        owner: &str,
        until: Timestamp,
    ) -> Result<Option<LeasedEndpoint>> {
        let row: Option<LeaseRow> = with_pool!(self, pool => {
            let _gate = crate::sql::Sql::write_permit_in(pool, Lane::Worker).await?;
            sqlx::query_as(
                "UPDATE webhook_endpoints SET lease_until = $3 WHERE id = $1 AND lease_owner = $2 AND enabled = $4 \
                 RETURNING url, secret, previous_secret, previous_secret_until",
            )
            .bind(endpoint.to_string())
            .bind(owner.to_owned())
            .bind(millis(until))
            .bind(true)
            .fetch_optional(pool)
            .await?
        });
        row.map(|(url, secret, previous_secret, until)| {
            Ok(LeasedEndpoint {
                id: endpoint,
                url,
                secret,
                previous_secret,
                previous_secret_until: until.map(from_millis).transpose()?,
            })
        })
        .transpose()
    }

    /// Ends `owner`'s lease on the endpoint; with `paused_until`, no
    /// replica sends to it before then (after a connection failure).
    pub async fn release_webhook_lease(
        &self,
        endpoint: WebhookEndpointId,
        owner: &str,
        paused_until: Option<Timestamp>,
    ) -> Result<()> {
        with_pool!(self, pool => {
            let _gate = crate::sql::Sql::write_permit_in(pool, Lane::Worker).await?;
            sqlx::query("UPDATE webhook_endpoints SET lease_owner = NULL, lease_until = $3 WHERE id = $1 AND lease_owner = $2")
                .bind(endpoint.to_string())
                .bind(owner.to_owned())
                .bind(paused_until.map(millis))
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Up to `limit` of the endpoint's deliveries due at `now`, in log order.
    pub async fn due_webhook_deliveries(
        &self,
        endpoint: WebhookEndpointId,
        now: Timestamp,
        limit: u32,
    ) -> Result<Vec<DueDelivery>> {
        type Row = (
            String,
            String,
            i64,
            String,
            Option<String>,
            i64,
            Option<i64>,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<i64>,
        );
        let rows: Vec<Row> = with_pool!(self, pool => {
            sqlx::query_as(
                "SELECT d.id, d.event_id, d.generation, d.event_type, d.payload, d.failures, \
                 ev.seq, ev.org_id, ev.actor, ev.data, ev.created_at \
                 FROM webhook_deliveries d LEFT JOIN events ev ON ev.id = d.event_id \
                 WHERE d.endpoint_id = $1 AND d.status = 'pending' AND d.next_attempt_at <= $2 \
                 ORDER BY d.event_seq, d.id LIMIT $3",
            )
            .bind(endpoint.to_string())
            .bind(millis(now))
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?
        });
        let mut due = Vec::with_capacity(rows.len());
        for (id, event_id, generation, event_type, payload, failures, seq, org_id, actor, data, created) in rows {
            let body = match (payload, seq, actor, data, created) {
                (Some(payload), ..) => DueBody::Stored(payload),
                (None, Some(seq), Some(actor), Some(data), Some(created)) => DueBody::Event(event_from_row((
                    seq,
                    event_id.clone(),
                    org_id,
                    event_type.clone(),
                    actor,
                    data,
                    created,
                ))?),
                _ => return Err(StoreError::Corrupt(format!("delivery {id}: event {event_id} is not in the log"))),
            };
            due.push(DueDelivery {
                id: parse_id(&id)?,
                event_id,
                event_type,
                failures: u32::try_from(failures).unwrap_or(u32::MAX),
                generation,
                body,
            });
        }
        Ok(due)
    }

    /// Logs attempts (one endpoint's, in the order they were made) and
    /// moves their deliveries on, in one transaction. A failure starts (or
    /// continues) the endpoint's failing streak; one that has lasted
    /// `disable_after`, or a 410 answer, disables the endpoint and writes a
    /// `webhook_endpoint.disabled` event. A success ends the streak.
    /// Returns whether the endpoint was disabled.
    pub async fn record_webhook_attempts(
        &self,
        outcomes: &[AttemptOutcome],
        disable_after: time::Duration,
    ) -> Result<bool> {
        let disabled = with_pool!(self, pool => {
            let mut tx = pool.begin_worker_write().await?;
            let mut disabled = false;
            for outcome in outcomes {
        let (status, next) = match outcome.result {
            AttemptResult::Succeeded => (DeliveryStatus::Succeeded, None),
            AttemptResult::RetryAt(at) => (DeliveryStatus::Pending, Some(millis(at))),
            AttemptResult::GaveUp | AttemptResult::Gone => (DeliveryStatus::Failed, None),
        };
        let failed = outcome.result != AttemptResult::Succeeded;
        let now = millis(outcome.at);
            // A delivery replayed while this attempt was in flight stays
            // queued: the attempt is logged, the replay still goes out.
            let row: Option<(i64,)> = sqlx::query_as(
                "UPDATE webhook_deliveries SET attempts = attempts + 1, \
                 failures = CASE WHEN generation <> $6 THEN failures WHEN $2 THEN failures + 1 ELSE 0 END, \
                 status = CASE WHEN generation <> $6 THEN status ELSE $3 END, \
                 next_attempt_at = CASE WHEN generation <> $6 THEN next_attempt_at ELSE $4 END, \
                 updated_at = $5 WHERE id = $1 RETURNING attempts",
            )
            .bind(outcome.delivery.to_string())
            .bind(failed)
            .bind(status.as_str())
            .bind(next)
            .bind(now)
            .bind(outcome.generation)
            .fetch_optional(&mut **tx)
            .await?;
            // Deleted with its endpoint meanwhile: nothing to log.
            let Some((attempt,)) = row else { continue };
            sqlx::query(
                "INSERT INTO webhook_attempts (delivery_id, attempt, attempted_at, status_code, duration_ms, response_excerpt, error) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(outcome.delivery.to_string())
            .bind(attempt)
            .bind(now)
            .bind(outcome.status_code.map(i64::from))
            .bind(outcome.duration_ms)
            .bind(outcome.response_excerpt.clone())
            .bind(outcome.error.clone())
            .execute(&mut **tx)
            .await?;
            let reason = if !failed {
                sqlx::query("UPDATE webhook_endpoints SET failing_since = NULL WHERE id = $1 AND failing_since IS NOT NULL")
                    .bind(outcome.endpoint.to_string())
                    .execute(&mut **tx)
                    .await?;
                None
            } else if outcome.result == AttemptResult::Gone {
                Some("the receiver answered 410 Gone".to_owned())
            } else {
                let since: Option<(Option<i64>,)> = sqlx::query_as(
                    "UPDATE webhook_endpoints SET failing_since = COALESCE(failing_since, $2) WHERE id = $1 RETURNING failing_since",
                )
                .bind(outcome.endpoint.to_string())
                .bind(now)
                .fetch_optional(&mut **tx)
                .await?;
                let since = since.and_then(|(s,)| s).unwrap_or(now);
                let limit = disable_after.whole_milliseconds() as i64;
                (now - since >= limit).then(|| {
                    format!("no successful delivery for {} hours", disable_after.whole_hours())
                })
            };
            if let Some(reason) = reason {
                let row: Option<(Option<String>,)> = sqlx::query_as(
                    "UPDATE webhook_endpoints SET enabled = $2, disabled_reason = $3, lease_owner = NULL, lease_until = NULL, updated_at = $4 \
                     WHERE id = $1 AND enabled = $5 RETURNING org_id",
                )
                .bind(outcome.endpoint.to_string())
                .bind(false)
                .bind(reason.clone())
                .bind(now)
                .bind(true)
                .fetch_optional(&mut **tx)
                .await?;
                if let Some((org,)) = row {
                    // An event of the deployment (no org), like `api_key.*`:
                    // endpoints belong to the app, not to an org; `org_id`
                    // in `data` says which org's events it was limited to.
                    let data = serde_json::json!({"endpoint_id": outcome.endpoint.to_string(), "org_id": org, "reason": reason});
                    record_user_event(&mut tx, "webhook_endpoint.disabled", &Actor::System, data, outcome.at).await?;
                    disabled = true;
                }
            }
            }
            tx.commit().await?;
            disabled
        });
        if disabled {
            self.wake();
        }
        Ok(disabled)
    }

    /// When the oldest pending delivery was queued (`None`: none pending).
    pub async fn oldest_pending_webhook_delivery(&self) -> Result<Option<Timestamp>> {
        let (oldest,): (Option<i64>,) = with_pool!(self, pool => {
            sqlx::query_as("SELECT MIN(created_at) FROM webhook_deliveries WHERE status = 'pending'").fetch_one(pool).await?
        });
        oldest.map(from_millis).transpose()
    }
}
