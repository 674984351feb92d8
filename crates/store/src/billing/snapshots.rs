//! Applying a provider's answer (to a cancel, a seat change, a sync or a
//! reconciliation) to the org's subscription.
//!
//! - Under the org's lock, in one transaction, through the same merge as
//!   events (`crate::apply`): older news never overwrites newer and an ended
//!   subscription never comes back to life.
//! - Refused (`conflict`) when the answer is about a subscription that is not
//!   the org's while the org has another live one, or one of another org.

use crate::sql::Sql;
use orgplane_core::subscription::SubscriptionSnapshot;
use orgplane_core::{DomainError, OrgId, Timestamp};
use sqlx::Pool;

use crate::apply::{Applied, Refused};
use crate::subscriptions::StoredSubscription;
use crate::tx::lock_org;
use crate::{Actor, Backend, BeginWrite, Result, Store};

/// A provider's view of a subscription, with what the server's catalog says
/// of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInput {
    pub snapshot: SubscriptionSnapshot,
    /// Its price maps to a plan that this status entitles: a personal org
    /// that receives it becomes a team org.
    pub entitling: bool,
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

impl Store {
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
        let outcome = match &self.backend {
            Backend::Sqlite(pool) => apply_provider_answer(pool, org, input, actor, now).await,
            Backend::Postgres(pool) => apply_provider_answer(pool, org, input, actor, now).await,
        }?;
        drop(gate);
        self.touched(org).await;
        Ok((outcome, self.subscription(org).await?))
    }
}

/// Applies a provider's answer to the org's subscription under the org's
/// lock. Refused (`conflict`) when the answer is about a subscription that
/// is not the org's while the org has another live one, or one that
/// belongs to another org.
async fn apply_provider_answer<DB: Sql>(
    pool: &Pool<DB>,
    org: OrgId,
    input: &SnapshotInput,
    actor: &Actor,
    now: Timestamp,
) -> Result<ApplyOutcome> {
    let mut tx = pool.begin_write().await?;
    let kind = lock_org(&mut tx, org).await?;
    match crate::apply::apply_snapshot(&mut tx, org, kind, input, actor, now).await? {
        Ok(Applied { rival: Some(reason), is_current: false, .. }) | Err(Refused(reason)) => {
            Err(DomainError::conflict(reason).into())
        }
        Ok(applied) => {
            tx.commit().await?;
            Ok(applied.outcome)
        }
    }
}
