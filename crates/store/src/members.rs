//! Members of an organization: list, change role, remove, leave.
//! "At least one owner" holds here, under concurrent changes too: every
//! change locks the org first, then counts owners inside the transaction.

use orgplane_core::org::{Membership, OwnerLoss, ensure_owner_remains};
use orgplane_core::roles::{RoleName, check_role_change};
use orgplane_core::{DomainError, OrgId, Timestamp, UserId};

use sqlx::{Pool, Transaction};

use crate::orgs::reset_active_org_of;
use crate::sql::{Sql, query, query_as};
use crate::tx::{ensure_cursor_in_list, live_subscription_status, lock_org, member_role, record_event};
use crate::{Actor, Backend, BeginWrite, Page, PageRequest, Result, Store, StoreError, from_millis, parse_id};

/// A member as listed: the membership and who the user is.
#[derive(Debug, Clone)]
pub struct MemberRecord {
    pub membership: Membership,
    /// Whether this member manages the org's subscription.
    pub billing_admin: bool,
    pub email: Option<String>,
    pub name: Option<String>,
}

type MemberRow = (String, String, i64, Option<String>, Option<String>, Option<String>);

fn member_from_row(org: OrgId, row: MemberRow) -> Result<MemberRecord> {
    let (user_id, role, joined, email, name, billing_admin) = row;
    Ok(MemberRecord {
        membership: Membership {
            org_id: org,
            user_id: parse_id(&user_id)?,
            role: RoleName::parse(&role).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            created_at: from_millis(joined)?,
        },
        billing_admin: billing_admin.as_deref() == Some(user_id.as_str()),
        email,
        name,
    })
}

impl Store {
    pub async fn members(&self, org: OrgId, page: &PageRequest) -> Result<Page<MemberRecord>> {
        let rows = match &self.backend {
            Backend::Sqlite(pool) => members(pool, org, page).await,
            Backend::Postgres(pool) => members(pool, org, page).await,
        }?;
        let data = rows.into_iter().map(|r| member_from_row(org, r)).collect::<Result<Vec<_>>>()?;
        Ok(Page::from_rows(data, page.limit))
    }

    /// Changes `target`'s role. `actor_role` is the caller's role (API keys
    /// act as owners). Refuses to demote the last owner.
    pub async fn change_role(
        &self,
        org: OrgId,
        target: UserId,
        new_role: &RoleName,
        actor_role: &RoleName,
        actor: &Actor,
        now: Timestamp,
    ) -> Result<MemberRecord> {
        match &self.backend {
            Backend::Sqlite(pool) => change_role(pool, org, target, new_role, actor_role, actor, now).await,
            Backend::Postgres(pool) => change_role(pool, org, target, new_role, actor_role, actor, now).await,
        }?;
        self.touched(org).await;
        self.touched_user(target).await;
        self.member(org, target).await
    }

    pub async fn member(&self, org: OrgId, user: UserId) -> Result<MemberRecord> {
        let row = match &self.backend {
            Backend::Sqlite(pool) => member(pool, org, user).await,
            Backend::Postgres(pool) => member(pool, org, user).await,
        }?;
        member_from_row(org, row.ok_or(DomainError::NotFound { what: "member" })?)
    }

    /// Removes `target` from `org` (or lets them leave). Refuses to remove the
    /// last owner; an owner being removed needs an owner actor. A user whose
    /// active org this was falls back to their personal org.
    pub async fn remove_member(
        &self,
        org: OrgId,
        target: UserId,
        actor_role: &RoleName,
        actor: &Actor,
        now: Timestamp,
    ) -> Result<()> {
        match &self.backend {
            Backend::Sqlite(pool) => remove_member(pool, org, target, actor_role, actor, now).await,
            Backend::Postgres(pool) => remove_member(pool, org, target, actor_role, actor, now).await,
        }?;
        self.touched(org).await;
        self.touched_user(target).await;
        Ok(())
    }
}

async fn members<DB: Sql>(pool: &Pool<DB>, org: OrgId, page: &PageRequest) -> Result<Vec<MemberRow>> {
    let cursor = page.starting_after.as_deref().unwrap_or_default();
    let exists = "SELECT 1 FROM memberships WHERE org_id = $1 AND user_id = $2";
    ensure_cursor_in_list(pool, page, exists, &[&org.to_string(), cursor]).await?;
    let rows = query_as(
        "SELECT m.user_id, m.role, m.created_at, u.email, u.name, o.billing_admin_user_id \
         FROM memberships m JOIN users u ON u.id = m.user_id JOIN orgs o ON o.id = m.org_id \
         WHERE m.org_id = $1 AND m.user_id > $2 ORDER BY m.user_id LIMIT $3",
    )
    .bind(org.to_string())
    .bind(page.starting_after.clone().unwrap_or_default())
    .bind(i64::from(page.limit) + 1)
    .fetch_all(pool)
    .await?;
    Ok(rows)
}

async fn member<DB: Sql>(pool: &Pool<DB>, org: OrgId, user: UserId) -> Result<Option<MemberRow>> {
    let row = query_as(
        "SELECT m.user_id, m.role, m.created_at, u.email, u.name, o.billing_admin_user_id \
         FROM memberships m JOIN users u ON u.id = m.user_id JOIN orgs o ON o.id = m.org_id \
         WHERE m.org_id = $1 AND m.user_id = $2",
    )
    .bind(org.to_string())
    .bind(user.to_string())
    .fetch_optional(pool)
    .await?;
    Ok(row)
}

async fn change_role<DB: Sql>(
    pool: &Pool<DB>,
    org: OrgId,
    target: UserId,
    new_role: &RoleName,
    actor_role: &RoleName,
    actor: &Actor,
    now: Timestamp,
) -> Result<()> {
    let mut tx = pool.begin_write().await?;
    let kind = lock_org(&mut tx, org).await?;
    ensure_actor_role_unchanged(&mut tx, org, actor, actor_role).await?;
    let current = existing_member_role(&mut tx, org, target).await?;
    check_role_change(actor_role, &current, new_role)?;
    if current.is_owner() && !new_role.is_owner() {
        ensure_owner_remains(kind, owner_count(&mut tx, org).await?, OwnerLoss::Demoted)?;
    }
    query("UPDATE memberships SET role = $1 WHERE org_id = $2 AND user_id = $3")
        .bind(new_role.as_str().to_owned())
        .bind(org.to_string())
        .bind(target.to_string())
        .execute(&mut *tx)
        .await?;
    let data = serde_json::json!({"org_id": org, "user_id": target, "from": current, "to": new_role});
    record_event(&mut tx, org, "member.role_changed", actor, data, now).await?;
    tx.commit().await?;
    Ok(())
}

async fn remove_member<DB: Sql>(
    pool: &Pool<DB>,
    org: OrgId,
    target: UserId,
    actor_role: &RoleName,
    actor: &Actor,
    now: Timestamp,
) -> Result<()> {
    let mut tx = pool.begin_write().await?;
    let kind = lock_org(&mut tx, org).await?;
    ensure_actor_role_unchanged(&mut tx, org, actor, actor_role).await?;
    let current = existing_member_role(&mut tx, org, target).await?;
    let leaving = matches!(actor, Actor::User(u) if *u == target);
    if current.is_owner() && !leaving && !actor_role.is_owner() {
        return Err(DomainError::forbidden("only an owner can remove another owner").into());
    }
    if current.is_owner() {
        ensure_owner_remains(kind, owner_count(&mut tx, org).await?, OwnerLoss::Removed)?;
    }
    // The subscription never dies with a user: its billing admin hands
    // the role over first. Without a live subscription the role just ends.
    let admin: Option<(Option<String>,)> = query_as("SELECT billing_admin_user_id FROM orgs WHERE id = $1")
        .bind(org.to_string())
        .fetch_optional(&mut *tx)
        .await?;
    if admin.and_then(|(a,)| a).as_deref() == Some(target.to_string().as_str()) {
        if live_subscription_status(&mut tx, org).await?.is_some() {
            return Err(DomainError::BillingAdminMustTransfer.into());
        }
        query("UPDATE orgs SET billing_admin_user_id = NULL WHERE id = $1")
            .bind(org.to_string())
            .execute(&mut *tx)
            .await?;
    }
    query("DELETE FROM memberships WHERE org_id = $1 AND user_id = $2")
        .bind(org.to_string())
        .bind(target.to_string())
        .execute(&mut *tx)
        .await?;
    reset_active_org_of(&mut tx, org, target).await?;
    let kind_name = if leaving { "member.left" } else { "member.removed" };
    record_event(&mut tx, org, kind_name, actor, serde_json::json!({"org_id": org, "user_id": target}), now).await?;
    tx.commit().await?;
    Ok(())
}

/// The target's role, read inside the org's lock, or `not_found`.
async fn existing_member_role<DB: Sql>(tx: &mut Transaction<'_, DB>, org: OrgId, user: UserId) -> Result<RoleName> {
    member_role(tx, org, user).await?.ok_or_else(|| DomainError::NotFound { what: "member" }.into())
}

/// The role the handler authorized the actor with must still be theirs
/// inside the org's lock: a demotion committed meanwhile would otherwise let
/// a stale role through (two owners revoking each other's rights at once).
async fn ensure_actor_role_unchanged<DB: Sql>(
    tx: &mut Transaction<'_, DB>,
    org: OrgId,
    actor: &Actor,
    actor_role: &RoleName,
) -> Result<()> {
    let Actor::User(user) = actor else { return Ok(()) };
    if member_role(tx, org, *user).await?.as_ref() != Some(actor_role) {
        return Err(DomainError::forbidden(
            "your role in this organization changed while this request ran and no longer allows it",
        )
        .into());
    }
    Ok(())
}

/// How many owners the org has, counted inside its lock.
async fn owner_count<DB: Sql>(tx: &mut Transaction<'_, DB>, org: OrgId) -> Result<i64> {
    let (n,): (i64,) = query_as("SELECT COUNT(*) FROM memberships WHERE org_id = $1 AND role = 'owner'")
        .bind(org.to_string())
        .fetch_one(&mut **tx)
        .await?;
    Ok(n)
}
