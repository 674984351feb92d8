//! Clean-up of abandoned personal orgs (`[cleanup]`, off by default): the
//! background job and the pass `orgplane cleanup` runs. What is eligible,
//! and the guarantee that no org is deleted twice when replicas run the
//! job at once, live in the store (`orgplane_store::Store::delete_abandoned_personal_org`).

use std::sync::Arc;
use std::time::Duration;

use orgplane_store::{AbandonedOrg, Store};

use crate::clock::Clock;
use crate::config::CleanupConfig;

/// The cut-off: users unseen since then are inactive.
pub fn inactive_before(days: u32, now: orgplane_core::Timestamp) -> orgplane_core::Timestamp {
    now - time::Duration::days(i64::from(days))
}

/// Every eligible org (what `--dry-run` lists), by id.
pub async fn eligible(
    store: &Store,
    days: u32,
    now: orgplane_core::Timestamp,
) -> orgplane_store::Result<Vec<AbandonedOrg>> {
    let cutoff = inactive_before(days, now);
    let mut all = Vec::new();
    loop {
        let page = store.abandoned_personal_orgs(cutoff, all.last().map(|o: &AbandonedOrg| o.org_id), 500).await?;
        let done = page.len() < 500;
        all.extend(page);
        if done {
            return Ok(all);
        }
    }
}

/// One pass: deletes up to `batch` eligible orgs; answers the ones deleted.
pub async fn pass(
    store: &Store,
    days: u32,
    batch: u32,
    now: orgplane_core::Timestamp,
) -> orgplane_store::Result<Vec<AbandonedOrg>> {
    let cutoff = inactive_before(days, now);
    let mut deleted = Vec::new();
    for candidate in store.abandoned_personal_orgs(cutoff, None, batch).await? {
        if store.delete_abandoned_personal_org(&candidate, cutoff, now).await? {
            deleted.push(candidate);
        }
    }
    Ok(deleted)
}

/// Runs a pass every `interval_secs` while `[cleanup]` is on.
pub fn spawn(store: Store, clock: Arc<dyn Clock>, config: CleanupConfig) {
    let Some(days) = config.personal_orgs_inactive_days else { return };
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(config.interval_secs));
        loop {
            every.tick().await;
            match pass(&store, days, config.batch_size, clock.now()).await {
                Ok(deleted) if deleted.is_empty() => {}
                Ok(deleted) => tracing::info!(deleted = deleted.len(), "abandoned personal orgs deleted"),
                Err(e) => {
                    tracing::warn!(error = %e, "clean-up of abandoned personal orgs failed; trying again next pass")
                }
            }
        }
    });
}
