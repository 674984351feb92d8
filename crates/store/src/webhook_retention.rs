//! Retention of outgoing-webhook deliveries: finished deliveries
//! (`succeeded` or `failed`) that have not changed for the retention
//! period are deleted with their attempts, a small batch per statement.
//!
//! What this must never delete:
//! - a `pending` delivery, whatever its age: it is still owed to its
//!   endpoint. The status is checked on the row the `DELETE` removes, so a
//!   delivery that a replay made pending again while the batch was being
//!   chosen stays (on PostgreSQL the row's new version is re-checked);
//! - a delivery of an endpoint that a replica holds a live lease on (it is
//!   sending to that endpoint now): that endpoint's rows wait for a later
//!   sweep.
//!
//! The event log is not touched: `replay` re-sends events from the log, so
//! an event whose delivery was swept can still be replayed (the replay
//! inserts a new delivery for it).

use orgplane_core::Timestamp;

use crate::webhooks::with_pool;
use crate::{Backend, Result, Store, millis};

/// Deletes the batch: `$1` the cut-off (last change before it), `$2` now
/// (leases live at that time hold their endpoint's rows), `$3` the batch
/// size. Attempts go with their delivery (`ON DELETE CASCADE`).
const SWEEP: &str = "DELETE FROM webhook_deliveries WHERE id IN (\
     SELECT d.id FROM webhook_deliveries d WHERE d.status <> 'pending' AND d.updated_at < $1 \
     AND NOT EXISTS (SELECT 1 FROM webhook_endpoints e WHERE e.id = d.endpoint_id \
     AND e.lease_owner IS NOT NULL AND e.lease_until >= $2) \
     ORDER BY d.updated_at LIMIT $3) \
     AND status <> 'pending' AND updated_at < $1";

impl Store {
    /// Deletes up to `limit` finished deliveries last changed before
    /// `before`, with their attempts, except those of endpoints leased at
    /// `now`. Returns how many deliveries were deleted: fewer than `limit`
    /// means none is left to delete.
    pub async fn sweep_webhook_deliveries(&self, before: Timestamp, now: Timestamp, limit: u32) -> Result<u64> {
        let deleted = with_pool!(self, pool => {
            let _gate = crate::sql::Sql::write_permit(pool).await?;
            sqlx::query(SWEEP)
                .bind(millis(before))
                .bind(millis(now))
                .bind(i64::from(limit))
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(deleted)
    }
}
