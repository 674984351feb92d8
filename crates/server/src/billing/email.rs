//! The billing e-mail follows the org to its Stripe customers (issue 10
//! item 9). Changing `billing_email` (PATCH `/v1/orgs/{org}`) writes, in the
//! same transaction, one pending row per Stripe customer of the org
//! (`orgplane_store::BillingEmailSync`); this worker leases the due rows
//! and sends Stripe `POST /v1/customers/{id}` with `email=…`, so the request
//! never waits for Stripe and a crash or restart loses nothing.
//!
//! The `Idempotency-Key` is the row's (org, customer, generation): a retry
//! of one change repeats it, a newer change gets a new one. Failed sends
//! are retried on the app clock with the WorkOS mirror's schedule (1 s
//! doubling to an hour), each failure logged as a warning; a 404 (the
//! customer was deleted at Stripe) is given up and logged as an error. Each
//! row keeps its `attempts`, `failures`, `failing_since` and `last_error`
//! and `GET /v1/billing/email_syncs/failures` (API key) lists the failing
//! and given-up ones.
//!
//! Lemon Squeezy has no customer update API, and the sandbox keeps no
//! customer: their orgs get no row.

use std::sync::Arc;
use std::time::Duration;

use orgplane_billing::{ProviderError, StripeClient};
use orgplane_store::{BillingEmailOutcome, BillingEmailSync, Store};

use crate::clock::Clock;
use crate::workos_mirror::retry_delay_secs;

/// Rows one pass sends, one after another.
const CLAIM_BATCH: u32 = 16;
/// How often the worker looks for due rows when no commit woke it.
const POLL: Duration = Duration::from_millis(500);

/// One replica's billing e-mail worker (runs when a Stripe API key is set).
pub struct BillingEmailWorker {
    store: Store,
    clock: Arc<dyn Clock>,
    stripe: StripeClient,
    /// How long one Stripe call may take.
    timeout: Duration,
    /// Names this replica in leases.
    holder: String,
}

impl BillingEmailWorker {
    pub fn new(store: Store, clock: Arc<dyn Clock>, stripe: StripeClient, timeout: Duration) -> Arc<Self> {
        Arc::new(BillingEmailWorker {
            store,
            clock,
            stripe,
            timeout,
            holder: format!("{}:{}", std::process::id(), uuid::Uuid::now_v7().simple()),
        })
    }

    /// A lease covers a whole claimed batch, each call at its time limit.
    fn lease(&self) -> time::Duration {
        time::Duration::seconds((self.timeout.as_secs().max(1) * 4 * u64::from(CLAIM_BATCH)) as i64)
    }

    /// Runs until the store closes or `stop` turns true; then frees this
    /// replica's leases so that another takes its rows at once.
    pub fn spawn(self: &Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let worker = self.clone();
        tokio::spawn(async move {
            loop {
                if worker.store.is_closed() || *stop.borrow() {
                    break;
                }
                if let Err(e) = worker.run_once().await {
                    tracing::warn!(error = %e, "billing e-mail sync: a pass failed; the next one tries again");
                }
                tokio::select! {
                    _ = worker.store.changed() => {}
                    _ = tokio::time::sleep(POLL) => {}
                    changed = stop.changed() => if changed.is_err() { break },
                }
            }
            if !worker.store.is_closed() {
                let _ = worker.store.release_billing_email_leases(&worker.holder).await;
            }
        });
    }

    /// One pass: the due rows sent. Returns how many were attempted.
    pub async fn run_once(&self) -> anyhow::Result<usize> {
        let now = self.clock.now();
        let syncs = self.store.claim_billing_email_syncs(&self.holder, now, now + self.lease(), CLAIM_BATCH).await?;
        for sync in &syncs {
            let outcome = self.send(sync).await;
            self.store.record_billing_email_sync(sync, &self.holder, self.clock.now(), &outcome).await?;
        }
        Ok(syncs.len())
    }

    async fn send(&self, sync: &BillingEmailSync) -> BillingEmailOutcome {
        let key = format!("orgplane-customer-email-{}-{}-{}", sync.org_id, sync.customer_id, sync.generation);
        match self.stripe.update_customer_email(&sync.customer_id, &sync.email, &key).await {
            Ok(()) => BillingEmailOutcome::Sent,
            Err(ProviderError::Api { status: 404, message, .. }) => {
                tracing::error!(org = %sync.org_id, customer = %sync.customer_id, error = %message,
                    "billing e-mail sync: Stripe has no such customer (deleted?); the org's billing e-mail is not sent to it");
                BillingEmailOutcome::Gone(format!("Stripe answered 404: {message}"))
            }
            Err(e) => {
                let delay = retry_delay_secs(sync.failures, None);
                tracing::warn!(org = %sync.org_id, customer = %sync.customer_id, error = %e, retry_in_secs = delay,
                    "billing e-mail sync: updating the Stripe customer failed");
                BillingEmailOutcome::Failed(e.to_string(), self.clock.now() + time::Duration::seconds(delay as i64))
            }
        }
    }
}
