//! Outgoing webhooks, the background work of each replica:
//!
//! 1. **fan-out** — follows the event log from the position stored in the
//!    database and turns each committed event into deliveries, in one
//!    transaction per step (`Store::webhook_fan_out`); on PostgreSQL one
//!    replica at a time holds the position.
//! 2. **sending** — leases endpoints that have deliveries due
//!    (`Store::claim_webhook_endpoints`, `FOR UPDATE SKIP LOCKED`), and for
//!    each runs one task that sends its due deliveries in log order, at most
//!    `max_in_flight_per_endpoint` at once, renewing the lease while it
//!    works. So one replica sends to an endpoint at a time, a delivery has
//!    one attempt in flight at most, and a slow endpoint holds only its own
//!    task and its own share of `max_in_flight`.
//!
//! The worker wakes when this process commits a change (or, on PostgreSQL,
//! another replica announces one), and every `poll_interval_ms` otherwise.
//! Retry times are on the app's clock; the signature's timestamp is on the
//! machine's.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use orgplane_core::WebhookEndpointId;
use orgplane_core::webhooks::retry_delay_secs;
use orgplane_store::{AttemptOutcome, AttemptResult, DueBody, DueDelivery, LeasedEndpoint, Store};
use tokio::sync::{Notify, Semaphore};

use crate::clock::Clock;
use crate::routes::events::EventResponse;
use crate::webhook_delivery::{Answer, SecretBox, Sender, SigningSecret, WebhooksConfig};

/// Events fanned out per step.
const FAN_OUT_BATCH: u32 = 500;
/// How long the worker lets commits gather after one woke it.
const COALESCE_COMMITS: Duration = Duration::from_millis(10);
/// Deliveries one endpoint task reads at a time.
const SEND_BATCH: u32 = 100;
/// Successful attempts logged together, at most. A replica killed before
/// logging them sends them again after its lease runs out (at least once).
const RECORD_BATCH: usize = 32;

/// Counters and a histogram of attempts, by outcome, for `/metrics`.
#[derive(Default)]
pub struct WebhookMetrics {
    inner: Mutex<AttemptSeries>,
}

#[derive(Default)]
struct AttemptSeries {
    /// (outcome) → (count, sum of seconds, cumulative buckets)
    by_outcome: std::collections::BTreeMap<&'static str, (u64, f64, [u64; BUCKETS.len()])>,
}

const BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

impl WebhookMetrics {
    fn observe(&self, outcome: &'static str, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let entry = inner.by_outcome.entry(outcome).or_insert((0, 0.0, [0; BUCKETS.len()]));
        entry.0 += 1;
        entry.1 += seconds;
        for (i, bound) in BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                entry.2[i] += 1;
            }
        }
    }

    /// The attempt counters and histogram, and the oldest pending
    /// delivery's age, in Prometheus text.
    pub fn render(&self, out: &mut String, oldest_pending_age_secs: f64) {
        use std::fmt::Write;
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        out.push_str("# HELP orgplane_webhook_attempts_total Outgoing webhook attempts by outcome (succeeded, failed_status, unreachable, gone).\n");
        out.push_str("# TYPE orgplane_webhook_attempts_total counter\n");
        for (outcome, (count, ..)) in &inner.by_outcome {
            let _ = writeln!(out, "orgplane_webhook_attempts_total{{outcome=\"{outcome}\"}} {count}");
        }
        out.push_str(
            "# HELP orgplane_webhook_attempt_duration_seconds Outgoing webhook attempt durations by outcome.\n",
        );
        out.push_str("# TYPE orgplane_webhook_attempt_duration_seconds histogram\n");
        for (outcome, (count, sum, buckets)) in &inner.by_outcome {
            for (i, bound) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "orgplane_webhook_attempt_duration_seconds_bucket{{outcome=\"{outcome}\",le=\"{bound}\"}} {}",
                    buckets[i]
                );
            }
            let _ = writeln!(
                out,
                "orgplane_webhook_attempt_duration_seconds_bucket{{outcome=\"{outcome}\",le=\"+Inf\"}} {count}"
            );
            let _ = writeln!(out, "orgplane_webhook_attempt_duration_seconds_sum{{outcome=\"{outcome}\"}} {sum}");
            let _ = writeln!(out, "orgplane_webhook_attempt_duration_seconds_count{{outcome=\"{outcome}\"}} {count}");
        }
        out.push_str(
            "# HELP orgplane_webhook_oldest_pending_seconds Age of the oldest delivery not yet delivered (0: none).\n",
        );
        out.push_str("# TYPE orgplane_webhook_oldest_pending_seconds gauge\n");
        let _ = writeln!(out, "orgplane_webhook_oldest_pending_seconds {oldest_pending_age_secs}");
    }
}

/// One replica's webhook worker.
pub struct WebhookWorker {
    store: Store,
    clock: Arc<dyn Clock>,
    config: WebhooksConfig,
    sender: Sender,
    secrets: SecretBox,
    pub metrics: WebhookMetrics,
    /// Names this replica in endpoint leases.
    holder: String,
    /// `max_in_flight` requests at once, over all endpoints.
    permits: Arc<Semaphore>,
    /// Endpoints this replica's tasks are sending to.
    running: Mutex<HashSet<WebhookEndpointId>>,
    /// Woken when an endpoint task ends (its endpoint may have more work).
    task_done: Notify,
}

impl WebhookWorker {
    pub fn new(
        store: Store,
        clock: Arc<dyn Clock>,
        config: WebhooksConfig,
        sender: Sender,
        secrets: SecretBox,
    ) -> Arc<Self> {
        let permits = Arc::new(Semaphore::new(usize::try_from(config.max_in_flight).unwrap_or(64)));
        Arc::new(WebhookWorker {
            store,
            clock,
            config,
            sender,
            secrets,
            metrics: WebhookMetrics::default(),
            holder: format!("{}:{}", std::process::id(), uuid::Uuid::now_v7().simple()),
            permits,
            running: Mutex::new(HashSet::new()),
            task_done: Notify::new(),
        })
    }

    /// Which URLs endpoints may have.
    pub fn sender_policy(&self) -> crate::webhook_delivery::TargetPolicy {
        self.sender.policy()
    }

    /// Seals new signing secrets for the database.
    pub fn secrets(&self) -> &SecretBox {
        &self.secrets
    }

    /// How long a lease lasts: three timeouts, renewed every timeout, so
    /// an endpoint held by a replica that died is free again soon.
    fn lease(&self) -> time::Duration {
        time::Duration::seconds(3 * self.config.timeout_secs as i64)
    }

    /// Runs until the store closes or `stop` turns true.
    pub fn spawn(self: &Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let worker = self.clone();
        tokio::spawn(async move {
            let poll = Duration::from_millis(worker.config.poll_interval_ms);
            loop {
                if worker.store.is_closed() || *stop.borrow() {
                    return;
                }
                worker.fan_out().await;
                worker.claim().await;
                tokio::select! {
                    _ = worker.store.changed() => {
                        // Under a stream of commits, one pass per few
                        // milliseconds takes them all: each pass takes the
                        // write lock (SQLite) that requests are waiting for.
                        tokio::time::sleep(COALESCE_COMMITS).await;
                    }
                    _ = worker.task_done.notified() => {}
                    _ = tokio::time::sleep(poll) => {}
                    changed = stop.changed() => if changed.is_err() { return },
                }
            }
        });
    }

    /// Fans out until the log is caught up (or another replica holds it).
    pub async fn fan_out(&self) {
        loop {
            match self.store.webhook_fan_out(FAN_OUT_BATCH, self.clock.now()).await {
                Ok(step) if step.events as u32 == FAN_OUT_BATCH => continue,
                Ok(_) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "webhooks: fan-out failed; the next pass tries again");
                    return;
                }
            }
        }
    }

    /// Leases endpoints with deliveries due and starts a task for each.
    async fn claim(self: &Arc<Self>) {
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner()).len() as u64;
        let free = self.config.max_in_flight.saturating_sub(running);
        if free == 0 {
            return;
        }
        let now = self.clock.now();
        let claimed = match self
            .store
            .claim_webhook_endpoints(&self.holder, now, now + self.lease(), u32::try_from(free).unwrap_or(u32::MAX))
            .await
        {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "webhooks: claiming endpoints failed; the next pass tries again");
                return;
            }
        };
        for endpoint in claimed {
            if !self.running.lock().unwrap_or_else(|e| e.into_inner()).insert(endpoint) {
                continue; // already ours and running
            }
            let worker = self.clone();
            tokio::spawn(async move {
                let exit = worker.run_endpoint(endpoint).await;
                // Out of `running` before the lease is released: a claim
                // that wins the endpoint next always finds it not running.
                worker.running.lock().unwrap_or_else(|e| e.into_inner()).remove(&endpoint);
                if let Exit::Release(paused_until) = exit
                    && let Err(e) = worker.store.release_webhook_lease(endpoint, &worker.holder, paused_until).await
                {
                    tracing::warn!(error = %e, %endpoint, "webhooks: releasing a lease failed; it runs out by itself");
                }
                worker.task_done.notify_one();
            });
        }
    }

    /// Sends the endpoint's due deliveries, batch after batch, while this
    /// replica holds its lease; says whether to release it.
    async fn run_endpoint(&self, id: WebhookEndpointId) -> Exit {
        loop {
            let now = self.clock.now();
            let endpoint = match self.store.renew_webhook_lease(id, &self.holder, now + self.lease()).await {
                Ok(Some(e)) => e,
                Ok(None) => return Exit::Keep, // lost, disabled or deleted
                Err(e) => {
                    tracing::warn!(error = %e, endpoint = %id, "webhooks: renewing a lease failed; it runs out by itself");
                    return Exit::Keep;
                }
            };
            let Some(secrets) = self.signing_secrets(&endpoint) else {
                tracing::error!(endpoint = %id, "webhooks: the endpoint's signing secret does not decrypt with this replica's key \
                    (webhooks.secret_key or data_dir/webhook-secrets.key differ from the ones it was made with); not sending");
                return Exit::Release(Some(now + time::Duration::minutes(1)));
            };
            let due = match self.store.due_webhook_deliveries(id, now, SEND_BATCH).await {
                Ok(due) => due,
                Err(e) => {
                    tracing::warn!(error = %e, endpoint = %id, "webhooks: reading due deliveries failed");
                    return Exit::Release(None);
                }
            };
            if due.is_empty() {
                return Exit::Release(None);
            }
            match self.send_batch(&endpoint, &secrets, due).await {
                BatchEnd::Done => continue,
                BatchEnd::Pause(until) => return Exit::Release(until),
                BatchEnd::Stop => return Exit::Keep,
            }
        }
    }

    /// The secrets that sign now: the current one, and the previous one
    /// while its overlap lasts.
    fn signing_secrets(&self, endpoint: &LeasedEndpoint) -> Option<Vec<SigningSecret>> {
        let mut secrets = vec![self.secrets.open(endpoint.id, &endpoint.secret)?];
        if let (Some(previous), Some(until)) = (&endpoint.previous_secret, endpoint.previous_secret_until)
            && until > self.clock.now()
            && let Some(previous) = self.secrets.open(endpoint.id, previous)
        {
            secrets.push(previous);
        }
        Some(secrets)
    }

    /// Sends one batch in order. Attempts are logged in groups: a run of
    /// successes up to [`RECORD_BATCH`] in one transaction, a failure at
    /// once (so that what follows it is decided on the record). Stops
    /// early when the endpoint can't be reached (the rest wait for its next
    /// attempt) or is gone.
    async fn send_batch(
        &self,
        endpoint: &LeasedEndpoint,
        secrets: &[SigningSecret],
        due: Vec<DueDelivery>,
    ) -> BatchEnd {
        let per_endpoint = usize::try_from(self.config.max_in_flight_per_endpoint).unwrap_or(1).max(1);
        let mut attempts = futures_util::stream::iter(due)
            .map(|delivery| async move {
                let body = body_of(&delivery);
                let _permit = self.permits.acquire().await;
                let answer = self.sender.send(&endpoint.url, &delivery.event_id, body.as_bytes(), secrets).await;
                (delivery, answer)
            })
            .buffered(per_endpoint);
        let mut renew = tokio::time::interval(Duration::from_secs(self.config.timeout_secs.max(1)));
        renew.tick().await; // the first tick is now
        let mut unrecorded = Vec::new();
        loop {
            let (delivery, answer) = tokio::select! {
                next = attempts.next() => match next {
                    Some(done) => done,
                    None => {
                        return match self.flush(endpoint.id, &mut unrecorded).await {
                            Some(false) => BatchEnd::Done,
                            _ => BatchEnd::Stop,
                        };
                    }
                },
                _ = renew.tick() => {
                    match self.store.renew_webhook_lease(endpoint.id, &self.holder, self.clock.now() + self.lease()).await {
                        Ok(Some(_)) => continue,
                        // Lost (or the endpoint was disabled): stop sending at once.
                        Ok(None) => {
                            self.flush(endpoint.id, &mut unrecorded).await;
                            return BatchEnd::Stop;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, endpoint = %endpoint.id, "webhooks: renewing a lease failed; stopping");
                            self.flush(endpoint.id, &mut unrecorded).await;
                            return BatchEnd::Stop;
                        }
                    }
                }
            };
            let outcome = self.judge(endpoint.id, &delivery, &answer);
            let result = outcome.result;
            unrecorded.push(outcome);
            if result == AttemptResult::Succeeded && unrecorded.len() < RECORD_BATCH {
                continue;
            }
            match self.flush(endpoint.id, &mut unrecorded).await {
                Some(false) => {}
                // Disabled, or the record failed (the deliveries go again).
                _ => return BatchEnd::Stop,
            }
            match result {
                AttemptResult::Gone => return BatchEnd::Stop,
                AttemptResult::RetryAt(at) if answer.unreachable() => return BatchEnd::Pause(Some(at)),
                AttemptResult::GaveUp if answer.unreachable() => return BatchEnd::Pause(None),
                _ => {}
            }
        }
    }

    /// What an answer means for its delivery: done, tried again when, or
    /// given up; counted and (when failed) logged.
    fn judge(&self, endpoint: WebhookEndpointId, delivery: &DueDelivery, answer: &Answer) -> AttemptOutcome {
        let now = self.clock.now();
        let (result, outcome) = if answer.succeeded() {
            (AttemptResult::Succeeded, "succeeded")
        } else if answer.status == Some(410) {
            (AttemptResult::Gone, "gone")
        } else {
            let jitter = rand::random_range(0.8..=1.2);
            let outcome = if answer.unreachable() { "unreachable" } else { "failed_status" };
            match retry_delay_secs(&self.config.retry_schedule_secs, delivery.failures.saturating_add(1), jitter) {
                Some(delay) => (AttemptResult::RetryAt(now + time::Duration::seconds_f64(delay)), outcome),
                None => (AttemptResult::GaveUp, outcome),
            }
        };
        self.metrics.observe(outcome, answer.duration);
        if result != AttemptResult::Succeeded {
            tracing::warn!(%endpoint, event = %delivery.event_id, delivery = %delivery.id,
                status = answer.status, error = answer.error.as_deref(), outcome,
                next = ?match result { AttemptResult::RetryAt(at) => Some(at), _ => None },
                "webhook attempt failed");
        }
        AttemptOutcome {
            delivery: delivery.id,
            generation: delivery.generation,
            endpoint,
            at: now,
            status_code: answer.status,
            duration_ms: i64::try_from(answer.duration.as_millis()).unwrap_or(i64::MAX),
            response_excerpt: answer.excerpt.clone(),
            error: answer.error.clone(),
            result,
        }
    }

    /// Logs the attempts not logged yet. `Some(disabled)`: whether that
    /// disabled the endpoint; `None`: the log could not be written (those
    /// deliveries stay pending and go again).
    async fn flush(&self, endpoint: WebhookEndpointId, unrecorded: &mut Vec<AttemptOutcome>) -> Option<bool> {
        if unrecorded.is_empty() {
            return Some(false);
        }
        let disable_after = time::Duration::hours(self.config.disable_after_hours as i64);
        let written = self.store.record_webhook_attempts(unrecorded, disable_after).await;
        unrecorded.clear();
        match written {
            Ok(disabled) => {
                if disabled {
                    tracing::warn!(%endpoint, "webhook endpoint disabled (410 Gone, or failing for webhooks.disable_after_hours)");
                }
                Some(disabled)
            }
            Err(e) => {
                tracing::warn!(error = %e, %endpoint, "webhooks: could not record attempts; those deliveries go again");
                None
            }
        }
    }

    /// The oldest pending delivery's age in seconds (0: none), for `/metrics`.
    pub async fn oldest_pending_age_secs(&self) -> f64 {
        match self.store.oldest_pending_webhook_delivery().await {
            Ok(Some(at)) => (self.clock.now() - at).as_seconds_f64().max(0.0),
            Ok(None) => 0.0,
            Err(e) => {
                tracing::warn!(error = %e, "webhooks: reading the oldest pending delivery failed");
                0.0
            }
        }
    }
}

/// How an endpoint task ends.
enum Exit {
    /// Release the lease (with a pause: no sending before then).
    Release(Option<orgplane_core::Timestamp>),
    /// Keep it as it is: lost to another replica, or the endpoint disabled.
    Keep,
}

enum BatchEnd {
    /// Every delivery of the batch was attempted: read the next batch.
    Done,
    /// The endpoint can't be reached: stop, and send nothing to it before this time.
    Pause(Option<orgplane_core::Timestamp>),
    /// The lease is lost or the endpoint disabled: stop without releasing.
    Stop,
}

/// The JSON a delivery carries: the event as the event stream shows it,
/// or the stored body of a `webhook.test`.
fn body_of(delivery: &DueDelivery) -> String {
    match &delivery.body {
        DueBody::Stored(body) => body.clone(),
        DueBody::Event(event) => {
            serde_json::to_string(&EventResponse::from(event.clone())).expect("an event serializes to JSON")
        }
    }
}
