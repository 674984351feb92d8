//! Retention of outgoing-webhook deliveries (`webhooks.retention_days`):
//! every hour, and once at start-up, each replica deletes the succeeded and
//! failed deliveries that have not changed for that many days, with their
//! attempts, in batches of [`BATCH`] so that no statement holds the
//! database (SQLite's write lock) for long.
//!
//! What is never deleted — pending deliveries, and deliveries of an
//! endpoint a replica is sending to under its lease — is decided in the
//! store (`orgplane_store::Store::sweep_webhook_deliveries`), so replicas
//! sweeping at once can only each delete what is eligible. Events stay in
//! the log: `replay` still re-sends an event whose delivery was swept.

use std::sync::Arc;
use std::time::Duration;

use orgplane_core::Timestamp;
use orgplane_store::Store;

use crate::clock::Clock;

/// Deliveries deleted per statement.
pub const BATCH: u32 = 500;

/// Finished deliveries last changed before this are swept.
pub fn cutoff(retention_days: u32, now: Timestamp) -> Timestamp {
    now - time::Duration::days(i64::from(retention_days))
}

/// One sweep: deletes every eligible delivery, batch after batch, and
/// answers how many went.
pub async fn sweep(store: &Store, retention_days: u32, now: Timestamp) -> orgplane_store::Result<u64> {
    let before = cutoff(retention_days, now);
    let mut deleted = 0;
    loop {
        let n = store.sweep_webhook_deliveries(before, now, BATCH).await?;
        deleted += n;
        if n < u64::from(BATCH) {
            return Ok(deleted);
        }
        // Let waiting requests have the database between batches.
        tokio::task::yield_now().await;
    }
}

/// Sweeps at start-up and every hour after, until the store closes.
pub fn spawn(store: Store, clock: Arc<dyn Clock>, retention_days: u32) {
    tokio::spawn(async move {
        let mut every_hour = tokio::time::interval(Duration::from_secs(3600));
        loop {
            every_hour.tick().await;
            if store.is_closed() {
                return;
            }
            match sweep(&store, retention_days, clock.now()).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(deleted = n, retention_days, "old webhook deliveries deleted"),
                Err(e) => {
                    tracing::warn!(error = %e, "could not delete old webhook deliveries; trying again in an hour")
                }
            }
        }
    });
}
