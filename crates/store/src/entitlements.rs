//! What entitlement resolution reads (org kind, subscription, overrides)
//! and what limits count (seats, resources), for display and for the
//! guards that run inside a write's transaction.

use std::collections::BTreeMap;

use orgplane_core::entitlements::Overrides;
use orgplane_core::org::OrgKind;
use orgplane_core::{DomainError, OrgId, Timestamp};

use crate::subscriptions::StoredSubscription;
use crate::{Actor, BeginWrite, Result, Store, StoreError, lock_org, millis, on_pool, record_event};

/// Everything entitlement resolution needs about one org.
#[derive(Debug, Clone)]
pub struct EntitlementInputs {
    pub kind: OrgKind,
    pub subscription: Option<StoredSubscription>,
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
}

impl Usage {
    /// Seats in use: members plus pending invitations.
    pub fn seats(&self) -> i64 {
        self.members + self.pending_invitations
    }

    /// Usage of a limit key (`seats` or a resource type).
    pub fn used(&self, key: &str) -> i64 {
        if key == orgplane_core::plans::SEATS { self.seats() } else { self.resources.get(key).copied().unwrap_or(0) }
    }
}

/// A rule checked inside the org's lock with fresh inputs and usage: the
/// core decides, the store makes the check and the write one atomic step.
pub type Guard<'a> = &'a (dyn Fn(&EntitlementInputs, &Usage) -> std::result::Result<(), DomainError> + Send + Sync);

/// Reads the inputs through `$ex` (a pool, or `&mut *tx` inside a write).
macro_rules! inputs_via {
    ($ex:expr, $org:expr) => {{
        let kind: Option<(String,)> =
            sqlx::query_as("SELECT kind FROM orgs WHERE id = $1").bind($org.to_string()).fetch_optional($ex).await?;
        let (kind,) = kind.ok_or(orgplane_core::DomainError::NotFound { what: "organization" })?;
        let kind = orgplane_core::org::OrgKind::parse(&kind)
            .ok_or_else(|| $crate::StoreError::Corrupt(format!("org kind `{kind}`")))?;
        let sub: Option<$crate::subscriptions::SubscriptionRow> =
            sqlx::query_as($crate::subscriptions::SELECT_SUBSCRIPTION_BY_ORG)
                .bind($org.to_string())
                .fetch_optional($ex)
                .await?;
        let overrides: Option<(String, String)> =
            sqlx::query_as("SELECT features, limits FROM org_overrides WHERE org_id = $1")
                .bind($org.to_string())
                .fetch_optional($ex)
                .await?;
        let overrides = match overrides {
            None => orgplane_core::entitlements::Overrides::default(),
            Some((features, limits)) => orgplane_core::entitlements::Overrides {
                features: serde_json::from_str(&features)
                    .map_err(|e| $crate::StoreError::Corrupt(format!("overrides: {e}")))?,
                limits: serde_json::from_str(&limits)
                    .map_err(|e| $crate::StoreError::Corrupt(format!("overrides: {e}")))?,
            },
        };
        $crate::entitlements::EntitlementInputs {
            kind,
            subscription: sub.map($crate::subscriptions::subscription_from_row).transpose()?,
            overrides,
        }
    }};
}
pub(crate) use inputs_via;

macro_rules! usage_via {
    ($ex:expr, $org:expr, $now:expr) => {{
        let (members,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM memberships WHERE org_id = $1")
            .bind($org.to_string())
            .fetch_one($ex)
            .await?;
        let (pending,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM invitations WHERE org_id = $1 AND status = 'pending' AND expires_at > $2",
        )
        .bind($org.to_string())
        .bind($crate::millis($now))
        .fetch_one($ex)
        .await?;
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT type, COUNT(*) FROM resources WHERE org_id = $1 GROUP BY type")
                .bind($org.to_string())
                .fetch_all($ex)
                .await?;
        $crate::entitlements::Usage { members, pending_invitations: pending, resources: rows.into_iter().collect() }
    }};
}
pub(crate) use usage_via;

impl Store {
    /// The org's entitlement inputs and usage, read now.
    pub async fn entitlement_inputs(&self, org: OrgId, now: Timestamp) -> Result<(EntitlementInputs, Usage)> {
        on_pool!(self, pool => {
            let inputs = inputs_via!(pool, org);
            let usage = usage_via!(pool, org, now);
            Ok((inputs, usage))
        })
    }

    /// Replaces the org's overrides (sales-led deals).
    pub async fn set_overrides(&self, org: OrgId, overrides: &Overrides, actor: &Actor, now: Timestamp) -> Result<()> {
        let features = serde_json::to_string(&overrides.features).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let limits = serde_json::to_string(&overrides.limits).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            lock_org!(tx, org);
            sqlx::query(
                "INSERT INTO org_overrides (org_id, features, limits, updated_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (org_id) DO UPDATE SET features = $2, limits = $3, updated_at = $4",
            )
            .bind(org.to_string())
            .bind(&features)
            .bind(&limits)
            .bind(millis(now))
            .execute(&mut *tx)
            .await?;
            record_event!(tx, org.to_string(), "overrides.updated", actor,
                serde_json::json!({"org_id": org, "features": overrides.features, "limits": overrides.limits}), now)?;
            tx.commit().await?;
        });
        self.touched(org).await;
        Ok(())
    }
}
