//! Members of an organization: list, change role, remove, leave.
//! "At least one owner" holds here, under concurrent changes too: every
//! change locks the org first, then counts owners inside the transaction.

use orgplane_core::org::{Membership, OwnerLoss, ensure_owner_remains};
use orgplane_core::roles::{RoleName, check_role_change};
use orgplane_core::{DomainError, OrgId, Timestamp, UserId};

use crate::orgs::reset_active_org;
use crate::{
    Actor, BeginWrite, Page, PageRequest, Result, Store, StoreError, from_millis, lock_org, on_pool, parse_id,
    record_event,
};

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

/// Reads the target's role inside the transaction, or `not_found`.
macro_rules! existing_member_role_in_tx {
    ($tx:expr, $org:expr, $user:expr) => {{
        let role = crate::member_role_in_tx!($tx, $org, $user).ok_or(DomainError::NotFound { what: "member" })?;
        RoleName::parse(&role).map_err(|e| StoreError::Corrupt(e.to_string()))?
    }};
}

/// The role the handler authorized the actor with must still be theirs
/// inside the org's lock: a demotion committed meanwhile would otherwise let
/// a stale role through (two owners revoking each other's rights at once).
macro_rules! actor_role_unchanged_in_tx {
    ($tx:expr, $org:expr, $actor:expr, $actor_role:expr) => {
        if let Actor::User(user) = $actor {
            let role = crate::member_role_in_tx!($tx, $org, user);
            if role.as_deref() != Some($actor_role.as_str()) {
                return Err(DomainError::forbidden(
                    "your role in this organization changed while this request ran and no longer allows it",
                )
                .into());
            }
        }
    };
}

macro_rules! owner_count_in_tx {
    ($tx:expr, $org:expr) => {{
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM memberships WHERE org_id = $1 AND role = 'owner'")
            .bind($org.to_string())
            .fetch_one(&mut *$tx)
            .await?;
        n
    }};
}

impl Store {
    pub async fn members(&self, org: OrgId, page: &PageRequest) -> Result<Page<MemberRecord>> {
        let after = page.starting_after.clone().unwrap_or_default();
        let rows: Vec<MemberRow> = on_pool!(self, pool => {
            if let Some(cursor) = &page.starting_after {
                let found: Option<(i32,)> = sqlx::query_as("SELECT 1 FROM memberships WHERE org_id = $1 AND user_id = $2")
                    .bind(org.to_string())
                    .bind(cursor)
                    .fetch_optional(pool)
                    .await?;
                if found.is_none() {
                    return Err(PageRequest::unknown_cursor(cursor));
                }
            }
            sqlx::query_as(
                "SELECT m.user_id, m.role, m.created_at, u.email, u.name, o.billing_admin_user_id \
                 FROM memberships m JOIN users u ON u.id = m.user_id JOIN orgs o ON o.id = m.org_id \
                 WHERE m.org_id = $1 AND m.user_id > $2 ORDER BY m.user_id LIMIT $3",
            )
            .bind(org.to_string())
            .bind(after)
            .bind(i64::from(page.limit) + 1)
            .fetch_all(pool)
            .await?
        });
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
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let kind = lock_org!(tx, org);
            actor_role_unchanged_in_tx!(tx, org, actor, actor_role);
            let current = existing_member_role_in_tx!(tx, org, target);
            check_role_change(actor_role, &current, new_role)?;
            if current.is_owner() && !new_role.is_owner() {
                ensure_owner_remains(kind, owner_count_in_tx!(tx, org), OwnerLoss::Demoted)?;
            }
            sqlx::query("UPDATE memberships SET role = $1 WHERE org_id = $2 AND user_id = $3")
                .bind(new_role.as_str())
                .bind(org.to_string())
                .bind(target.to_string())
                .execute(&mut *tx)
                .await?;
            record_event!(tx, org.to_string(), "member.role_changed", actor,
                serde_json::json!({"org_id": org, "user_id": target, "from": current, "to": new_role}), now)?;
            tx.commit().await?;
        });
        self.touched(org).await;
        self.touched_user(target).await;
        self.member(org, target).await
    }

    pub async fn member(&self, org: OrgId, user: UserId) -> Result<MemberRecord> {
        let row: Option<MemberRow> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT m.user_id, m.role, m.created_at, u.email, u.name, o.billing_admin_user_id \
                 FROM memberships m JOIN users u ON u.id = m.user_id JOIN orgs o ON o.id = m.org_id \
                 WHERE m.org_id = $1 AND m.user_id = $2",
            )
            .bind(org.to_string())
            .bind(user.to_string())
            .fetch_optional(pool)
            .await?
        });
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
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let kind = lock_org!(tx, org);
            actor_role_unchanged_in_tx!(tx, org, actor, actor_role);
            let current = existing_member_role_in_tx!(tx, org, target);
            let leaving = matches!(actor, Actor::User(u) if *u == target);
            if current.is_owner() && !leaving && !actor_role.is_owner() {
                return Err(DomainError::forbidden("only an owner can remove another owner").into());
            }
            if current.is_owner() {
                ensure_owner_remains(kind, owner_count_in_tx!(tx, org), OwnerLoss::Removed)?;
            }
            // The subscription never dies with a user: its billing admin hands
            // the role over first. Without a live subscription the role just ends.
            let admin: Option<(Option<String>,)> = sqlx::query_as("SELECT billing_admin_user_id FROM orgs WHERE id = $1")
                .bind(org.to_string())
                .fetch_optional(&mut *tx)
                .await?;
            if admin.and_then(|(a,)| a).as_deref() == Some(target.to_string().as_str()) {
                let live: Option<(String,)> = sqlx::query_as(
                    "SELECT status FROM subscriptions WHERE org_id = $1 AND status NOT IN ('canceled', 'incomplete_expired')",
                )
                .bind(org.to_string())
                .fetch_optional(&mut *tx)
                .await?;
                if live.is_some() {
                    return Err(DomainError::BillingAdminMustTransfer.into());
                }
                sqlx::query("UPDATE orgs SET billing_admin_user_id = NULL WHERE id = $1")
                    .bind(org.to_string())
                    .execute(&mut *tx)
                    .await?;
            }
            sqlx::query("DELETE FROM memberships WHERE org_id = $1 AND user_id = $2")
                .bind(org.to_string())
                .bind(target.to_string())
                .execute(&mut *tx)
                .await?;
            reset_active_org!(tx, org, target)?;
            let kind_name = if leaving { "member.left" } else { "member.removed" };
            record_event!(tx, org.to_string(), kind_name, actor, serde_json::json!({"org_id": org, "user_id": target}), now)?;
            tx.commit().await?;
        });
        self.touched(org).await;
        self.touched_user(target).await;
        Ok(())
    }
}
