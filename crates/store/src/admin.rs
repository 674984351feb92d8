//! User administration for operators: find a user, see where they belong,
//! and delete them; and the user's last-seen time.
//!
//! Deleting a user is one transaction holding the lock of every org they
//! belong to: it refuses (changing nothing) while they are the last owner
//! or the billing admin of a team org, naming those orgs, and otherwise
//! removes their memberships and their personal org (refused while that
//! has a live subscription). Events keep the user's id: the audit log
//! outlives the user.

use orgplane_core::org::{Membership, Org, User};
use orgplane_core::{DomainError, OrgId, Timestamp, UserId};

use sqlx::Pool;

use crate::sql::{Sql, query, query_as};
use crate::tx::{live_subscription_status, lock_org, record_event, record_user_event};
use crate::{Actor, Backend, BeginWrite, Result, Store, from_millis, millis, parse_id};

/// What an operator sees of a user.
#[derive(Debug, Clone)]
pub struct AdminUser {
    pub user: User,
    pub personal_org: Option<OrgId>,
    pub last_seen_at: Option<Timestamp>,
    pub memberships: Vec<(Membership, Org)>,
}

/// What deleting a user did, or why it did nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserDeletion {
    /// The user, their memberships and their personal org are gone.
    Deleted { left: Vec<OrgId>, personal_org: Option<OrgId> },
    /// Nothing changed: these team orgs need another owner, or another
    /// billing admin, first.
    Blocked { last_owner: Vec<OrgId>, billing_admin: Vec<OrgId> },
}

/// How often a user's `last_seen_at` is written at most.
pub const LAST_SEEN_EVERY_MS: i64 = 3_600_000;

impl Store {
    /// Users whose e-mail address is `email` (lower-cased; several issuers
    /// may know the same address), oldest first.
    pub async fn users_by_email(&self, email: &str) -> Result<Vec<UserId>> {
        let email = email.trim().to_lowercase();
        let rows: Vec<(String,)> = match &self.backend {
            Backend::Sqlite(pool) => ids_by_email(pool, email).await,
            Backend::Postgres(pool) => ids_by_email(pool, email).await,
        }?;
        rows.into_iter().map(|(id,)| parse_id(&id)).collect()
    }

    /// The user with their memberships, personal org and last-seen time.
    pub async fn admin_user(&self, id: UserId) -> Result<AdminUser> {
        let me = self.me(id).await?;
        let (personal, seen) = match &self.backend {
            Backend::Sqlite(pool) => personal_and_seen(pool, id).await,
            Backend::Postgres(pool) => personal_and_seen(pool, id).await,
        }?;
        Ok(AdminUser {
            user: me.user,
            personal_org: personal.as_deref().map(parse_id).transpose()?,
            last_seen_at: seen.map(from_millis).transpose()?,
            memberships: me.memberships,
        })
    }

    /// Notes that the user made a request at `now`, unless that was noted
    /// less than [`LAST_SEEN_EVERY_MS`] ago (then nothing is written).
    pub async fn note_user_seen(&self, id: UserId, now: Timestamp) -> Result<()> {
        match &self.backend {
            Backend::Sqlite(pool) => note_seen(pool, id, now).await,
            Backend::Postgres(pool) => note_seen(pool, id, now).await,
        }
    }

    /// Deletes a user (see the module's docs). `not_found` for an unknown
    /// user; `conflict` while their personal org has a live subscription.
    pub async fn delete_user(&self, id: UserId, actor: &Actor, now: Timestamp) -> Result<UserDeletion> {
        let outcome = match &self.backend {
            Backend::Sqlite(pool) => delete_user(pool, id, actor, now).await,
            Backend::Postgres(pool) => delete_user(pool, id, actor, now).await,
        }?;
        if let UserDeletion::Deleted { left, personal_org } = &outcome {
            for org in left.iter().chain(personal_org) {
                self.touched(*org).await;
            }
            self.touched_user(id).await;
        }
        Ok(outcome)
    }
}

async fn ids_by_email<DB: Sql>(pool: &Pool<DB>, email: String) -> Result<Vec<(String,)>> {
    Ok(query_as("SELECT id FROM users WHERE email = $1 ORDER BY id LIMIT 100").bind(email).fetch_all(pool).await?)
}

async fn personal_and_seen<DB: Sql>(pool: &Pool<DB>, id: UserId) -> Result<(Option<String>, Option<i64>)> {
    let row: Option<(Option<String>, Option<i64>)> = query_as(
        "SELECT (SELECT o.id FROM orgs o WHERE o.personal_user_id = u.id), u.last_seen_at FROM users u WHERE u.id = $1",
    )
    .bind(id.to_string())
    .fetch_optional(pool)
    .await?;
    row.ok_or_else(|| DomainError::NotFound { what: "user" }.into())
}

async fn note_seen<DB: Sql>(pool: &Pool<DB>, id: UserId, now: Timestamp) -> Result<()> {
    let _gate = crate::sql::Sql::write_permit(pool).await?;
    query("UPDATE users SET last_seen_at = $2 WHERE id = $1 AND (last_seen_at IS NULL OR last_seen_at <= $3)")
        .bind(id.to_string())
        .bind(millis(now))
        .bind(millis(now) - LAST_SEEN_EVERY_MS)
        .execute(pool)
        .await?;
    Ok(())
}

/// A membership of the user being deleted, read inside the locks.
type MembershipRow = (String, String, String, Option<String>);

async fn delete_user<DB: Sql>(pool: &Pool<DB>, id: UserId, actor: &Actor, now: Timestamp) -> Result<UserDeletion> {
    const MEMBERSHIPS: &str = "SELECT m.org_id, m.role, o.kind, o.billing_admin_user_id FROM memberships m \
                               JOIN orgs o ON o.id = m.org_id WHERE m.user_id = $1 ORDER BY m.org_id";
    let mut tx = pool.begin_write().await?;
    let user: Option<(Option<String>,)> =
        query_as("SELECT email FROM users WHERE id = $1").bind(id.to_string()).fetch_optional(&mut *tx).await?;
    let Some((email,)) = user else { return Err(DomainError::NotFound { what: "user" }.into()) };
    // Lock every org the user belongs to, in id order (so that two
    // deletions can't wait on each other), then read the memberships again
    // under the locks: what is decided below can't change before commit.
    let seen: Vec<MembershipRow> = query_as(MEMBERSHIPS).bind(id.to_string()).fetch_all(&mut *tx).await?;
    for (org, ..) in &seen {
        lock_org(&mut tx, parse_id(org)?).await?;
    }
    let rows: Vec<MembershipRow> = query_as(MEMBERSHIPS).bind(id.to_string()).fetch_all(&mut *tx).await?;
    if rows.len() != seen.len() || rows.iter().zip(&seen).any(|(a, b)| a.0 != b.0) {
        return Err(
            DomainError::conflict("the user joined or left an organization meanwhile; send the request again").into()
        );
    }
    let (mut last_owner, mut billing_admin) = (Vec::new(), Vec::new());
    let mut left = Vec::new();
    for (org, role, kind, admin) in &rows {
        if kind == "personal" {
            continue;
        }
        let org_id: OrgId = parse_id(org)?;
        if role == "owner" {
            let (owners,): (i64,) = query_as("SELECT COUNT(*) FROM memberships WHERE org_id = $1 AND role = 'owner'")
                .bind(org.clone())
                .fetch_one(&mut *tx)
                .await?;
            if owners == 1 {
                last_owner.push(org_id);
            }
        }
        if admin.as_deref() == Some(id.to_string().as_str()) {
            billing_admin.push(org_id);
        }
        left.push(org_id);
    }
    if !last_owner.is_empty() || !billing_admin.is_empty() {
        // Dropping the transaction rolls it back: nothing changed.
        return Ok(UserDeletion::Blocked { last_owner, billing_admin });
    }
    let personal: Option<(String,)> = query_as("SELECT id FROM orgs WHERE personal_user_id = $1")
        .bind(id.to_string())
        .fetch_optional(&mut *tx)
        .await?;
    let personal_org: Option<OrgId> = personal.map(|(o,)| parse_id(&o)).transpose()?;
    if let Some(org) = personal_org {
        lock_org(&mut tx, org).await?;
        if let Some(status) = live_subscription_status(&mut tx, org).await? {
            return Err(DomainError::conflict(format!(
                "the user's personal organization {org} has a live subscription ({}); cancel it immediately (POST /v1/orgs/{org}/subscription/cancel {{\"immediately\": true}}) first",
                status.as_str()
            ))
            .into());
        }
        query("DELETE FROM orgs WHERE id = $1").bind(org.to_string()).execute(&mut *tx).await?;
        let data = serde_json::json!({"org_id": org, "reason": "user_deleted", "user_id": id});
        record_event(&mut tx, org, "org.deleted", actor, data, now).await?;
    }
    for org in &left {
        let data = serde_json::json!({"org_id": org, "user_id": id, "reason": "user_deleted"});
        record_event(&mut tx, *org, "member.removed", actor, data, now).await?;
    }
    // Memberships and grants go with the user (ON DELETE CASCADE);
    // checkouts keep their row without the user (ON DELETE SET NULL).
    query("DELETE FROM users WHERE id = $1").bind(id.to_string()).execute(&mut *tx).await?;
    let data = serde_json::json!({"user_id": id, "email": email, "left": left, "personal_org": personal_org});
    record_user_event(&mut tx, "user.deleted", actor, data, now).await?;
    tx.commit().await?;
    Ok(UserDeletion::Deleted { left, personal_org })
}
