//! What entitlement resolution reads (org kind, subscription, overrides)
//! and what limits count (seats, resources), for display and for the
//! guards that run inside a write's transaction.

use std::collections::BTreeMap;

use orgplane_core::entitlements::Overrides;
use orgplane_core::org::OrgKind;
use orgplane_core::subscription::{PlanHold, SeatHold};
use orgplane_core::{DomainError, OrgId, Timestamp};

use sqlx::Pool;

use crate::seats::{plan_hold, seat_hold};
use crate::sql::{Sql, query, query_as};
use crate::subscriptions::{SELECT_SUBSCRIPTION_BY_ORG, StoredSubscription, SubscriptionRow, subscription_from_row};
use crate::tx::{lock_org, record_event};
use crate::{Actor, Backend, BeginWrite, Result, Store, StoreError, millis};

/// Everything entitlement resolution needs about one org.
#[derive(Debug, Clone)]
pub struct EntitlementInputs {
    pub kind: OrgKind,
    pub subscription: Option<StoredSubscription>,
    /// A seat change on its way to the provider (see `seats.rs`), expired
    /// or not: resolution decides whether it still counts.
    pub seat_hold: Option<SeatHold>,
    /// A plan change on its way to the provider (see `seats.rs`), expired
    /// or not.
    pub plan_hold: Option<PlanHold>,
    pub overrides: Overrides,
}

/// What an org uses of its limits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    pub members: i64,
    /// Pending, unexpired invitations: each holds a seat.
    pub pending_invitations: i64,
    /// Resources by type.
    pub resources: BTreeMap<String, i64>,
    /// Live (unrevoked, unexpired) org API keys.
    pub api_keys: i64,
}

impl Usage {
    /// Seats in use: members plus pending invitations.
    pub fn seats(&self) -> i64 {
        self.members + self.pending_invitations
    }

    /// Usage of a limit key (`seats`, `api_keys` or a resource type).
    pub fn used(&self, key: &str) -> i64 {
        match key {
            orgplane_core::plans::SEATS => self.seats(),
            orgplane_core::plans::API_KEYS => self.api_keys,
            _ => self.resources.get(key).copied().unwrap_or(0),
        }
    }
}

/// A rule checked inside the org's lock with fresh inputs and usage: the
/// core decides, the store makes the check and the write one atomic step.
pub type Guard<'a> = &'a (dyn Fn(&EntitlementInputs, &Usage) -> std::result::Result<(), DomainError> + Send + Sync);

impl Store {
    /// The org's entitlement inputs and usage, read now.
    pub async fn entitlement_inputs(&self, org: OrgId, now: Timestamp) -> Result<(EntitlementInputs, Usage)> {
        match &self.backend {
            Backend::Sqlite(pool) => inputs_and_usage(pool, org, now).await,
            Backend::Postgres(pool) => inputs_and_usage(pool, org, now).await,
        }
    }

    /// Replaces the org's overrides (sales-led deals).
    pub async fn set_overrides(&self, org: OrgId, overrides: &Overrides, actor: &Actor, now: Timestamp) -> Result<()> {
        match &self.backend {
            Backend::Sqlite(pool) => set_overrides(pool, org, overrides, actor, now).await,
            Backend::Postgres(pool) => set_overrides(pool, org, overrides, actor, now).await,
        }?;
        self.touched(org).await;
        Ok(())
    }
}

async fn inputs_and_usage<DB: Sql>(pool: &Pool<DB>, org: OrgId, now: Timestamp) -> Result<(EntitlementInputs, Usage)> {
    let mut conn = pool.acquire().await?;
    let inputs = inputs::<DB>(&mut conn, org).await?;
    let usage = usage::<DB>(&mut conn, org, now).await?;
    Ok((inputs, usage))
}

async fn set_overrides<DB: Sql>(
    pool: &Pool<DB>,
    org: OrgId,
    overrides: &Overrides,
    actor: &Actor,
    now: Timestamp,
) -> Result<()> {
    let features = serde_json::to_string(&overrides.features).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let limits = serde_json::to_string(&overrides.limits).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let mut tx = pool.begin_write().await?;
    lock_org(&mut tx, org).await?;
    query(
        "INSERT INTO org_overrides (org_id, features, limits, updated_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (org_id) DO UPDATE SET features = $2, limits = $3, updated_at = $4",
    )
    .bind(org.to_string())
    .bind(features)
    .bind(limits)
    .bind(millis(now))
    .execute(&mut *tx)
    .await?;
    let data = serde_json::json!({"org_id": org, "features": overrides.features, "limits": overrides.limits});
    record_event(&mut tx, org, "overrides.updated", actor, data, now).await?;
    tx.commit().await?;
    Ok(())
}

/// Reads what entitlement resolution needs about `org` on `conn`: a pooled
/// connection for display, or a write's transaction (`&mut *tx`) for a
/// guard that runs inside the org's lock.
pub(crate) async fn inputs<DB: Sql>(conn: &mut DB::Connection, org: OrgId) -> Result<EntitlementInputs> {
    let kind: Option<(String,)> =
        query_as("SELECT kind FROM orgs WHERE id = $1").bind(org.to_string()).fetch_optional(&mut *conn).await?;
    let (kind,) = kind.ok_or(DomainError::NotFound { what: "organization" })?;
    let kind =
        OrgKind::parse(&kind).ok_or_else(|| StoreError::Corrupt(format!("organization {org} has kind `{kind}`")))?;
    inputs_of_kind::<DB>(conn, org, kind).await
}

/// [`inputs`] when the org's kind is already known (a writer that locked
/// the org has it from `lock_org`): one round trip fewer inside the lock.
pub(crate) async fn inputs_of_kind<DB: Sql>(
    conn: &mut DB::Connection,
    org: OrgId,
    kind: OrgKind,
) -> Result<EntitlementInputs> {
    let sub: Option<SubscriptionRow> =
        query_as(SELECT_SUBSCRIPTION_BY_ORG).bind(org.to_string()).fetch_optional(&mut *conn).await?;
    let seat_hold = if sub.is_some() { seat_hold::<DB>(&mut *conn, org).await? } else { None };
    let plan_hold = if sub.is_some() { plan_hold::<DB>(&mut *conn, org).await? } else { None };
    let overrides: Option<(String, String)> = query_as("SELECT features, limits FROM org_overrides WHERE org_id = $1")
        .bind(org.to_string())
        .fetch_optional(&mut *conn)
        .await?;
    let overrides = match overrides {
        None => Overrides::default(),
        Some((features, limits)) => Overrides {
            features: serde_json::from_str(&features)
                .map_err(|e| StoreError::Corrupt(format!("overrides of organization {org}: {e}")))?,
            limits: serde_json::from_str(&limits)
                .map_err(|e| StoreError::Corrupt(format!("overrides of organization {org}: {e}")))?,
        },
    };
    Ok(EntitlementInputs {
        kind,
        subscription: sub.map(subscription_from_row).transpose()?,
        seat_hold,
        plan_hold,
        overrides,
    })
}

/// What a guard on one more resource of type `kind` reads: that type's
/// counter, one indexed read, where [`usage`] counts members, pending
/// invitations and keys too (four statements inside the org's lock, on the
/// hottest write). The other fields are zero: the guard of a resource
/// create (`limit(kind)`) reads only `used(kind)`. A type named like a
/// counted key that is not a resource (seats, API keys) gets the full count.
pub(crate) async fn usage_of_resource<DB: Sql>(
    conn: &mut DB::Connection,
    org: OrgId,
    kind: &str,
    now: Timestamp,
) -> Result<Usage> {
    if kind == orgplane_core::plans::SEATS || kind == orgplane_core::plans::API_KEYS {
        return usage::<DB>(conn, org, now).await;
    }
    let used: Option<(i64,)> = query_as("SELECT used FROM resource_usage WHERE org_id = $1 AND type = $2")
        .bind(org.to_string())
        .bind(kind.to_owned())
        .fetch_optional(&mut *conn)
        .await?;
    let resources = used.map(|(used,)| (kind.to_owned(), used)).into_iter().collect();
    Ok(Usage { members: 0, pending_invitations: 0, resources, api_keys: 0 })
}

/// Counts what `org` uses of its limits on `conn` (see [`inputs`]).
pub(crate) async fn usage<DB: Sql>(conn: &mut DB::Connection, org: OrgId, now: Timestamp) -> Result<Usage> {
    let (members,): (i64,) = query_as("SELECT COUNT(*) FROM memberships WHERE org_id = $1")
        .bind(org.to_string())
        .fetch_one(&mut *conn)
        .await?;
    let (pending,): (i64,) =
        query_as("SELECT COUNT(*) FROM invitations WHERE org_id = $1 AND status = 'pending' AND expires_at > $2")
            .bind(org.to_string())
            .bind(millis(now))
            .fetch_one(&mut *conn)
            .await?;
    // The per-type counters that every resource insert and delete keeps in
    // its own transaction (see `resources.rs`): one indexed read, however
    // many resources the org has.
    let rows: Vec<(String, i64)> = query_as("SELECT type, used FROM resource_usage WHERE org_id = $1 AND used > 0")
        .bind(org.to_string())
        .fetch_all(&mut *conn)
        .await?;
    let (api_keys,): (i64,) = query_as(
        "SELECT COUNT(*) FROM org_api_keys WHERE org_id = $1 AND revoked_at IS NULL \
         AND (expires_at IS NULL OR expires_at > $2)",
    )
    .bind(org.to_string())
    .bind(millis(now))
    .fetch_one(&mut *conn)
    .await?;
    Ok(Usage { members, pending_invitations: pending, resources: rows.into_iter().collect(), api_keys })
}
