//! Organizations: create, read, update, delete, and the membership lookup
//! behind every org-scoped request.

use orgplane_core::org::{Membership, Org, OrgKind};
use orgplane_core::roles::RoleName;
use orgplane_core::{DomainError, Email, OrgId, OrgName, Timestamp, UserId};

use crate::{
    Actor, BeginWrite, Page, PageRequest, Result, Store, StoreError, from_millis, lock_org, millis, on_pool, parse_id,
    record_event,
};

type OrgWithRoleRow = (String, String, String, Option<String>, String, i64, i64, String);
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

/// Resets the active org of users whose active org was `$org` (or, with a
/// user, only that user) to their personal org.
macro_rules! reset_active_org {
    ($tx:expr, $org:expr) => {
        sqlx::query(
            "UPDATE users SET active_org_id = (SELECT o.id FROM orgs o WHERE o.personal_user_id = users.id) \
             WHERE active_org_id = $1",
        )
        .bind($org.to_string())
        .execute(&mut *$tx)
        .await
    };
    ($tx:expr, $org:expr, $user:expr) => {
        sqlx::query(
            "UPDATE users SET active_org_id = (SELECT o.id FROM orgs o WHERE o.personal_user_id = users.id) \
             WHERE active_org_id = $1 AND id = $2",
        )
        .bind($org.to_string())
        .bind($user.to_string())
        .execute(&mut *$tx)
        .await
    };
}
pub(crate) use reset_active_org;

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
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            sqlx::query(
                "INSERT INTO orgs (id, kind, name, billing_email, settings, created_at, updated_at) \
                 VALUES ($1, 'team', $2, $3, '{}', $4, $4)",
            )
            .bind(id.to_string())
            .bind(name.as_str())
            .bind(billing_email.map(|e| e.as_str()))
            .bind(millis(now))
            .execute(&mut *tx)
            .await?;
            sqlx::query("INSERT INTO memberships (org_id, user_id, role, created_at) VALUES ($1, $2, 'owner', $3)")
                .bind(id.to_string())
                .bind(owner.to_string())
                .bind(millis(now))
                .execute(&mut *tx)
                .await?;
            record_event!(tx, id.to_string(), "org.created", Actor::User(owner),
                serde_json::json!({"org_id": id, "kind": "team", "name": name}), now)?;
            tx.commit().await?;
        });
        self.touched_user(owner).await;
        self.org(id).await
    }

    /// The caller's membership in `org` with the org itself, or `None` when
    /// the org does not exist or the caller is not a member (the two look
    /// the same from outside: no org's existence leaks).
    /// The third value tells whether the user is the org's billing admin.
    pub async fn membership(&self, org: OrgId, user: UserId) -> Result<Option<(Org, Membership, bool)>> {
        type Row = (String, String, String, Option<String>, String, i64, i64, String, i64, Option<String>);
        let row: Option<Row> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT o.id, o.kind, o.name, o.billing_email, o.settings, o.created_at, o.updated_at, m.role, m.created_at, \
                 o.billing_admin_user_id FROM orgs o JOIN memberships m ON m.org_id = o.id WHERE o.id = $1 AND m.user_id = $2",
            )
            .bind(org.to_string())
            .bind(user.to_string())
            .fetch_optional(pool)
            .await?
        });
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
        let after = page.starting_after.clone().unwrap_or_default();
        let rows: Vec<OrgWithRoleRow> = on_pool!(self, pool => {
            if let Some(cursor) = &page.starting_after {
                let found: Option<(i32,)> = sqlx::query_as("SELECT 1 FROM memberships WHERE user_id = $1 AND org_id = $2")
                    .bind(user.to_string())
                    .bind(cursor)
                    .fetch_optional(pool)
                    .await?;
                if found.is_none() {
                    return Err(PageRequest::unknown_cursor(cursor));
                }
            }
            sqlx::query_as(
                "SELECT o.id, o.kind, o.name, o.billing_email, o.settings, o.created_at, o.updated_at, m.role \
                 FROM memberships m JOIN orgs o ON o.id = m.org_id \
                 WHERE m.user_id = $1 AND o.id > $2 ORDER BY o.id LIMIT $3",
            )
            .bind(user.to_string())
            .bind(after)
            .bind(i64::from(page.limit) + 1)
            .fetch_all(pool)
            .await?
        });
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
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            lock_org!(tx, org);
            let current: crate::orgs::OrgRow = sqlx::query_as(SELECT_ORG).bind(org.to_string()).fetch_one(&mut *tx).await?;
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
                None => current.billing_email,
            };
            sqlx::query("UPDATE orgs SET name = $1, billing_email = $2, settings = $3, updated_at = $4 WHERE id = $5")
                .bind(&name)
                .bind(&billing_email)
                .bind(serde_json::Value::Object(settings.clone()).to_string())
                .bind(millis(now))
                .bind(org.to_string())
                .execute(&mut *tx)
                .await?;
            record_event!(tx, org.to_string(), "org.updated", actor,
                serde_json::json!({"org_id": org, "name": name, "billing_email": billing_email, "settings": settings}), now)?;
            tx.commit().await?;
        });
        self.touched(org).await;
        self.org(org).await
    }

    /// Deletes a team org with its memberships and invitations. Members whose
    /// active org it was fall back to their personal org. Personal orgs are
    /// refused: they belong to their user.
    pub async fn delete_org(&self, org: OrgId, actor: &Actor, now: Timestamp) -> Result<()> {
        let members: Vec<(String,)> = on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let kind = lock_org!(tx, org);
            if kind == OrgKind::Personal {
                return Err(DomainError::personal_org(
                    "a personal organization can't be deleted; it belongs to its user",
                ).into());
            }
            let live: Option<(String,)> = sqlx::query_as(
                "SELECT status FROM subscriptions WHERE org_id = $1 AND status NOT IN ('canceled', 'incomplete_expired')",
            )
            .bind(org.to_string())
            .fetch_optional(&mut *tx)
            .await?;
            if let Some((status,)) = live {
                return Err(DomainError::conflict(format!(
                    "this organization has a live subscription ({status}); cancel it immediately (POST /v1/orgs/{org}/subscription/cancel {{\"immediately\": true}}) before deleting the organization"
                )).into());
            }
            reset_active_org!(tx, org)?;
            let members: Vec<(String,)> = sqlx::query_as("SELECT user_id FROM memberships WHERE org_id = $1")
                .bind(org.to_string())
                .fetch_all(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM orgs WHERE id = $1").bind(org.to_string()).execute(&mut *tx).await?;
            record_event!(tx, org.to_string(), "org.deleted", actor, serde_json::json!({"org_id": org}), now)?;
            tx.commit().await?;
            members
        });
        self.touched(org).await;
        for (user,) in members {
            if let Ok(user) = user.parse::<UserId>() {
                self.touched_user(user).await;
            }
        }
        Ok(())
    }
}
