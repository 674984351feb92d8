//! The org's billing admin: who receives billing mail and may manage the
//! subscription besides the owners.
//!
//! - The billing admin is always a member: checked under the org's lock, in
//!   the transaction that sets it.
//! - A hand-over conditioned on the current billing admin happens only while
//!   that user still holds the role (no lost update between check and write).
//! - A change records a `billing_admin.changed` event in the same transaction.

use crate::sql::{Sql, query, query_as};
use orgplane_core::{DomainError, OrgId, Timestamp, UserId};
use sqlx::Pool;

use crate::tx::{lock_org, member_role, record_event};
use crate::{Actor, Backend, BeginWrite, Result, Store, millis};

impl Store {
    /// Makes `target` (a member) the org's billing admin. With
    /// `only_if_current`, the change happens only while that user is still
    /// the billing admin (the caller's authority, checked under the lock).
    pub async fn set_billing_admin(
        &self,
        org: OrgId,
        target: UserId,
        only_if_current: Option<UserId>,
        actor: &Actor,
        now: Timestamp,
    ) -> Result<()> {
        match &self.backend {
            Backend::Sqlite(pool) => set_billing_admin(pool, org, target, only_if_current, actor, now).await,
            Backend::Postgres(pool) => set_billing_admin(pool, org, target, only_if_current, actor, now).await,
        }?;
        self.touched(org).await;
        Ok(())
    }
}

async fn set_billing_admin<DB: Sql>(
    pool: &Pool<DB>,
    org: OrgId,
    target: UserId,
    only_if_current: Option<UserId>,
    actor: &Actor,
    now: Timestamp,
) -> Result<()> {
    let mut tx = pool.begin_write().await?;
    lock_org(&mut tx, org).await?;
    if member_role(&mut tx, org, target).await?.is_none() {
        return Err(DomainError::invalid(
            "user_id",
            format!("{target} is not a member of this organization; invite them first, then make them billing admin"),
        )
        .into());
    }
    let (current,): (Option<String>,) = query_as("SELECT billing_admin_user_id FROM orgs WHERE id = $1")
        .bind(org.to_string())
        .fetch_one(&mut *tx)
        .await?;
    if let Some(required) = only_if_current
        && current.as_deref() != Some(required.to_string().as_str())
    {
        return Err(DomainError::forbidden(
            "only an owner or the current billing admin can hand over the billing admin role",
        )
        .into());
    }
    if current.as_deref() != Some(target.to_string().as_str()) {
        query("UPDATE orgs SET billing_admin_user_id = $1, updated_at = $2 WHERE id = $3")
            .bind(target.to_string())
            .bind(millis(now))
            .bind(org.to_string())
            .execute(&mut *tx)
            .await?;
        let data = serde_json::json!({"org_id": org, "from": current, "to": target, "reason": "transfer"});
        record_event(&mut tx, org, "billing_admin.changed", actor, data, now).await?;
    }
    tx.commit().await?;
    Ok(())
}
