//! Organizations: create, read, update, delete, and the membership lookup
//! behind every org-scoped request.

use orgplane_core::org::{Membership, Org, OrgKind};
use orgplane_core::roles::RoleName;
use orgplane_core::{DomainError, Email, OrgId, OrgName, Timestamp, UserId};

use sqlx::{Pool, Transaction};

use crate::billing_email::enqueue_billing_email;
use crate::sql::{Sql, query, query_as};
use crate::tx::{ensure_cursor_in_list, live_subscription_status, lock_org, record_event};
use crate::{Actor, Backend, BeginWrite, Page, PageRequest, Result, Store, StoreError, from_millis, millis, parse_id};

type OrgWithRoleRow = (String, String, String, Option<String>, String, i64, i64, String);
/// An org with the user's membership in it and its billing admin.
type MembershipRow = (String, String, String, Option<String>, String, i64, i64, String, i64, Option<String>);
pub(crate) type OrgRow = (String, String, String, Option<String>, String, i64, i64);
pub(crate) const SELECT_ORG: &str =
    "SELECT id, kind, name, billing_email, settings, created_at, updated_at FROM orgs WHERE id = $1";

pub(crate) fn org_from_row(row: OrgRow) -> Result<Org> {
    let (id, kind, name, billing_email, settings, created, updated) = row;
    Ok(Org {
        id: parse_id(&id)?,
        kind: OrgKind::parse(&kind).ok_or_else(|| StoreError::Corrupt(format!("org kind `{kind}`")))?,
        name,
        billing_email,
        settings: serde_json::from_str(&settings).map_err(|e| StoreError::Corrupt(format!("org settings: {e}")))?,
        created_at: from_millis(created)?,
        updated_at: from_millis(updated)?,
    })
}

/// An org seen by one of its members.
#[derive(Debug, Clone)]
pub struct OrgWithRole {
    pub org: Org,
    pub role: RoleName,
}

/// `PATCH /v1/orgs/{org}`: only the fields given change.
#[derive(Debug, Clone, Default)]
pub struct OrgPatch {
    pub name: Option<OrgName>,
    /// `Some(None)` clears the billing email.
    pub billing_email: Option<Option<Email>>,
    /// Merged into the stored settings object, key by key (`null` deletes a key).
    pub settings: Option<serde_json::Map<String, serde_json::Value>>,
}

impl Store {
    /// A team org with `owner` as its owner, on the default plan.
    pub async fn create_team_org(
        &self,
        owner: UserId,
        name: &OrgName,
        billing_email: Option<&Email>,
        now: Timestamp,
    ) -> Result<Org> {
        let id = OrgId::new();
        match &self.backend {
            Backend::Sqlite(pool) => create_team_org(pool, id, owner, name, billing_email, now).await,
            Backend::Postgres(pool) => create_team_org(pool, id, owner, name, billing_email, now).await,
        }?;
        self.touched_user(owner).await;
        self.org(id).await
    }

    /// The caller's membership in `org` with the org itself, or `None` when
    /// the org does not exist or the caller is not a member (the two look
    /// the same from outside: no org's existence leaks).
    /// The third value tells whether the user is the org's billing admin.
    pub async fn membership(&self, org: OrgId, user: UserId) -> Result<Option<(Org, Membership, bool)>> {
        let row = match &self.backend {
            Backend::Sqlite(pool) => membership(pool, org, user).await,
            Backend::Postgres(pool) => membership(pool, org, user).await,
        }?;
        let Some((id, kind, name, billing_email, settings, created, updated, role, joined, billing_admin)) = row else {
            return Ok(None);
        };
        let org = org_from_row((id, kind, name, billing_email, settings, created, updated))?;
        let membership = Membership {
            org_id: org.id,
            user_id: user,
            role: RoleName::parse(&role).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            created_at: from_millis(joined)?,
        };
        let is_billing_admin = billing_admin.as_deref() == Some(user.to_string().as_str());
        Ok(Some((org, membership, is_billing_admin)))
    }

    /// Whether `org` exists (for API-key callers, who may act on any org).
    pub async fn org_exists(&self, org: OrgId) -> Result<bool> {
        Ok(self.org_row(org).await?.is_some())
    }

    /// The orgs `user` belongs to, by id.
    pub async fn orgs_of_user(&self, user: UserId, page: &PageRequest) -> Result<Page<OrgWithRole>> {
        let rows = match &self.backend {
            Backend::Sqlite(pool) => orgs_of_user(pool, user, page).await,
            Backend::Postgres(pool) => orgs_of_user(pool, user, page).await,
        }?;
        let mut out = Vec::with_capacity(rows.len());
        for (id, kind, name, billing_email, settings, created, updated, role) in rows {
            out.push(OrgWithRole {
                org: org_from_row((id, kind, name, billing_email, settings, created, updated))?,
                role: RoleName::parse(&role).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            });
        }
        Ok(Page::from_rows(out, page.limit))
    }

    pub async fn update_org(&self, org: OrgId, patch: &OrgPatch, actor: &Actor, now: Timestamp) -> Result<Org> {
        match &self.backend {
            Backend::Sqlite(pool) => update_org(pool, org, patch, actor, now).await,
            Backend::Postgres(pool) => update_org(pool, org, patch, actor, now).await,
        }?;
        self.touched(org).await;
        self.org(org).await
    }

    /// Deletes a team org with its memberships and invitations. Members whose
    /// active org it was fall back to their personal org. Personal orgs are
    /// refused: they belong to their user.
    pub async fn delete_org(&self, org: OrgId, actor: &Actor, now: Timestamp) -> Result<()> {
        let members = match &self.backend {
            Backend::Sqlite(pool) => delete_org(pool, org, actor, now).await,
            Backend::Postgres(pool) => delete_org(pool, org, actor, now).await,
        }?;
        self.touched(org).await;
        for user in members {
            if let Ok(user) = user.parse::<UserId>() {
                self.touched_user(user).await;
            }
        }
        Ok(())
    }
}

async fn create_team_org<DB: Sql>(
    pool: &Pool<DB>,
    id: OrgId,
    owner: UserId,
    name: &OrgName,
    billing_email: Option<&Email>,
    now: Timestamp,
) -> Result<()> {
    let mut tx = pool.begin_write().await?;
    query(
        "INSERT INTO orgs (id, kind, name, billing_email, settings, created_at, updated_at) \
         VALUES ($1, 'team', $2, $3, '{}', $4, $4)",
    )
    .bind(id.to_string())
    .bind(name.as_str().to_owned())
    .bind(billing_email.map(|e| e.as_str().to_owned()))
    .bind(millis(now))
    .execute(&mut *tx)
    .await?;
    query("INSERT INTO memberships (org_id, user_id, role, created_at) VALUES ($1, $2, 'owner', $3)")
        .bind(id.to_string())
        .bind(owner.to_string())
        .bind(millis(now))
        .execute(&mut *tx)
        .await?;
    let data = serde_json::json!({"org_id": id, "kind": "team", "name": name});
    record_event(&mut tx, id, "org.created", &Actor::User(owner), data, now).await?;
    tx.commit().await?;
    Ok(())
}

async fn membership<DB: Sql>(pool: &Pool<DB>, org: OrgId, user: UserId) -> Result<Option<MembershipRow>> {
    let row = query_as(
        "SELECT o.id, o.kind, o.name, o.billing_email, o.settings, o.created_at, o.updated_at, m.role, m.created_at, \
         o.billing_admin_user_id FROM orgs o JOIN memberships m ON m.org_id = o.id WHERE o.id = $1 AND m.user_id = $2",
    )
    .bind(org.to_string())
    .bind(user.to_string())
    .fetch_optional(pool)
    .await?;
    Ok(row)
}

async fn orgs_of_user<DB: Sql>(pool: &Pool<DB>, user: UserId, page: &PageRequest) -> Result<Vec<OrgWithRoleRow>> {
    let cursor = page.starting_after.as_deref().unwrap_or_default();
    let exists = "SELECT 1 FROM memberships WHERE user_id = $1 AND org_id = $2";
    ensure_cursor_in_list(pool, page, exists, &[&user.to_string(), cursor]).await?;
    let rows = query_as(
        "SELECT o.id, o.kind, o.name, o.billing_email, o.settings, o.created_at, o.updated_at, m.role \
         FROM memberships m JOIN orgs o ON o.id = m.org_id \
         WHERE m.user_id = $1 AND o.id > $2 ORDER BY o.id LIMIT $3",
    )
    .bind(user.to_string())
    .bind(page.starting_after.clone().unwrap_or_default())
    .bind(i64::from(page.limit) + 1)
    .fetch_all(pool)
    .await?;
    Ok(rows)
}

async fn update_org<DB: Sql>(
    pool: &Pool<DB>,
    org: OrgId,
    patch: &OrgPatch,
    actor: &Actor,
    now: Timestamp,
) -> Result<()> {
    let mut tx = pool.begin_write().await?;
    lock_org(&mut tx, org).await?;
    let current: OrgRow = query_as(SELECT_ORG).bind(org.to_string()).fetch_one(&mut *tx).await?;
    let current = org_from_row(current)?;
    let mut settings = match current.settings {
        serde_json::Value::Object(map) => map,
        _ => serde_json::Map::new(),
    };
    if let Some(changes) = &patch.settings {
        for (k, v) in changes {
            if v.is_null() {
                settings.remove(k);
            } else {
                settings.insert(k.clone(), v.clone());
            }
        }
    }
    let name = patch.name.as_ref().map(|n| n.as_str().to_owned()).unwrap_or(current.name);
    let billing_email = match &patch.billing_email {
        Some(value) => value.as_ref().map(|e| e.as_str().to_owned()),
        None => current.billing_email.clone(),
    };
    query("UPDATE orgs SET name = $1, billing_email = $2, settings = $3, updated_at = $4 WHERE id = $5")
        .bind(name.clone())
        .bind(billing_email.clone())
        .bind(serde_json::Value::Object(settings.clone()).to_string())
        .bind(millis(now))
        .bind(org.to_string())
        .execute(&mut *tx)
        .await?;
    if billing_email != current.billing_email {
        // With the change, in its transaction: the Stripe customers' update.
        enqueue_billing_email(&mut tx, org, billing_email.as_deref(), now).await?;
    }
    let data = serde_json::json!({"org_id": org, "name": name, "billing_email": billing_email, "settings": settings});
    record_event(&mut tx, org, "org.updated", actor, data, now).await?;
    tx.commit().await?;
    Ok(())
}

/// Deletes the org; returns the ids of its members (as stored).
async fn delete_org<DB: Sql>(pool: &Pool<DB>, org: OrgId, actor: &Actor, now: Timestamp) -> Result<Vec<String>> {
    let mut tx = pool.begin_write().await?;
    let kind = lock_org(&mut tx, org).await?;
    if kind == OrgKind::Personal {
        return Err(
            DomainError::personal_org("a personal organization can't be deleted; it belongs to its user").into()
        );
    }
    if let Some(status) = live_subscription_status(&mut tx, org).await? {
        let status = status.as_str();
        return Err(DomainError::conflict(format!(
            "this organization has a live subscription ({status}); cancel it immediately (POST /v1/orgs/{org}/subscription/cancel {{\"immediately\": true}}) before deleting the organization"
        ))
        .into());
    }
    reset_active_org(&mut tx, org).await?;
    let members: Vec<(String,)> =
        query_as("SELECT user_id FROM memberships WHERE org_id = $1").bind(org.to_string()).fetch_all(&mut *tx).await?;
    query("DELETE FROM orgs WHERE id = $1").bind(org.to_string()).execute(&mut *tx).await?;
    record_event(&mut tx, org, "org.deleted", actor, serde_json::json!({"org_id": org}), now).await?;
    tx.commit().await?;
    Ok(members.into_iter().map(|(user,)| user).collect())
}

/// Points every user whose active org was `org` at their personal org
/// (the org is going away).
async fn reset_active_org<DB: Sql>(tx: &mut Transaction<'_, DB>, org: OrgId) -> Result<()> {
    query(
        "UPDATE users SET active_org_id = (SELECT o.id FROM orgs o WHERE o.personal_user_id = users.id) \
         WHERE active_org_id = $1",
    )
    .bind(org.to_string())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Points `user`'s active org at their personal org if it was `org` (they
/// are leaving it).
pub(crate) async fn reset_active_org_of<DB: Sql>(tx: &mut Transaction<'_, DB>, org: OrgId, user: UserId) -> Result<()> {
    query(
        "UPDATE users SET active_org_id = (SELECT o.id FROM orgs o WHERE o.personal_user_id = users.id) \
         WHERE active_org_id = $1 AND id = $2",
    )
    .bind(org.to_string())
    .bind(user.to_string())
    .execute(&mut **tx)
    .await?;
    Ok(())
}
