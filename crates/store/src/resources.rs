//! The app's counted resources and member grants. Creating one counts and
//! inserts inside the org's lock, so concurrent creates never overshoot a
//! limit.

use orgplane_core::{DomainError, OrgId, ResourceId, Timestamp, UserId};

use crate::entitlements::{Guard, inputs_via, usage_via};
use crate::{
    Actor, BeginWrite, Page, PageRequest, Result, Store, from_millis, lock_org, millis, on_pool, parse_id, record_event,
};

#[derive(Debug, Clone)]
pub struct NewResource {
    pub org: OrgId,
    pub kind: String,
    pub external_id: Option<String>,
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceRecord {
    pub id: ResourceId,
    pub org_id: OrgId,
    pub kind: String,
    pub external_id: Option<String>,
    pub name: Option<String>,
    pub created_at: Timestamp,
}

type ResourceRow = (String, String, String, Option<String>, Option<String>, i64);

fn resource_from_row(row: ResourceRow) -> Result<ResourceRecord> {
    let (id, org, kind, external_id, name, created) = row;
    Ok(ResourceRecord {
        id: parse_id(&id)?,
        org_id: parse_id(&org)?,
        kind,
        external_id,
        name,
        created_at: from_millis(created)?,
    })
}

const SELECT_RESOURCE: &str =
    "SELECT id, org_id, type, external_id, name, created_at FROM resources WHERE id = $1 AND org_id = $2";

impl Store {
    /// Creates a resource if `guard` allows it with the usage counted inside
    /// the same transaction.
    pub async fn create_resource(
        &self,
        new: &NewResource,
        guard: Guard<'_>,
        actor: &Actor,
        now: Timestamp,
    ) -> Result<ResourceRecord> {
        let id = ResourceId::new();
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            lock_org!(tx, new.org);
            let inputs = inputs_via!(&mut *tx, new.org);
            let usage = usage_via!(&mut *tx, new.org, now);
            guard(&inputs, &usage)?;
            let inserted = sqlx::query(
                "INSERT INTO resources (id, org_id, type, external_id, name, created_at) VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(id.to_string())
            .bind(new.org.to_string())
            .bind(&new.kind)
            .bind(&new.external_id)
            .bind(&new.name)
            .bind(millis(now))
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if inserted == 0 {
                return Err(DomainError::conflict(format!(
                    "a {} with external_id `{}` already exists in this organization",
                    new.kind,
                    new.external_id.as_deref().unwrap_or("")
                ))
                .into());
            }
            record_event!(tx, new.org.to_string(), "resource.created", actor,
                serde_json::json!({"org_id": new.org, "resource_id": id, "type": new.kind, "external_id": new.external_id}), now)?;
            tx.commit().await?;
        });
        self.touched(new.org).await;
        self.resource(new.org, id).await
    }

    pub async fn resource(&self, org: OrgId, id: ResourceId) -> Result<ResourceRecord> {
        let row: Option<ResourceRow> = on_pool!(self, pool => {
            sqlx::query_as(SELECT_RESOURCE).bind(id.to_string()).bind(org.to_string()).fetch_optional(pool).await?
        });
        resource_from_row(row.ok_or(DomainError::NotFound { what: "resource" })?)
    }

    /// Resources of `org`, optionally of one type; with `granted_to`, only
    /// those granted to that user.
    pub async fn resources(
        &self,
        org: OrgId,
        kind: Option<&str>,
        granted_to: Option<UserId>,
        page: &PageRequest,
    ) -> Result<Page<ResourceRecord>> {
        let after = page.starting_after.clone().unwrap_or_default();
        let rows: Vec<ResourceRow> = on_pool!(self, pool => {
            // The cursor must be an item of this very list (same filters).
            if let Some(cursor) = &page.starting_after {
                let found: Option<(i32,)> = sqlx::query_as(
                    "SELECT 1 FROM resources r WHERE r.org_id = $1 AND ($2 = '' OR r.type = $2) AND r.id = $3 \
                     AND ($4 = '' OR EXISTS (SELECT 1 FROM resource_grants g WHERE g.resource_id = r.id AND g.user_id = $4))",
                )
                .bind(org.to_string())
                .bind(kind.unwrap_or(""))
                .bind(cursor)
                .bind(granted_to.map(|u| u.to_string()).unwrap_or_default())
                .fetch_optional(pool)
                .await?;
                if found.is_none() {
                    return Err(PageRequest::unknown_cursor(cursor));
                }
            }
            sqlx::query_as(
                "SELECT r.id, r.org_id, r.type, r.external_id, r.name, r.created_at FROM resources r \
                 WHERE r.org_id = $1 AND ($2 = '' OR r.type = $2) AND r.id > $3 \
                 AND ($4 = '' OR EXISTS (SELECT 1 FROM resource_grants g WHERE g.resource_id = r.id AND g.user_id = $4)) \
                 ORDER BY r.id LIMIT $5",
            )
            .bind(org.to_string())
            .bind(kind.unwrap_or(""))
            .bind(after)
            .bind(granted_to.map(|u| u.to_string()).unwrap_or_default())
            .bind(i64::from(page.limit) + 1)
            .fetch_all(pool)
            .await?
        });
        let data = rows.into_iter().map(resource_from_row).collect::<Result<Vec<_>>>()?;
        Ok(Page::from_rows(data, page.limit))
    }

    /// Deletes a resource, freeing its quota.
    pub async fn delete_resource(&self, org: OrgId, id: ResourceId, actor: &Actor, now: Timestamp) -> Result<()> {
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            lock_org!(tx, org);
            let deleted = sqlx::query("DELETE FROM resources WHERE id = $1 AND org_id = $2")
                .bind(id.to_string())
                .bind(org.to_string())
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if deleted == 0 {
                return Err(DomainError::NotFound { what: "resource" }.into());
            }
            record_event!(tx, org.to_string(), "resource.deleted", actor, serde_json::json!({"org_id": org, "resource_id": id}), now)?;
            tx.commit().await?;
        });
        self.touched(org).await;
        Ok(())
    }

    /// Grants (`grant = true`) or revokes a member's access to a resource.
    /// Idempotent: granting twice is one grant.
    pub async fn set_grant(
        &self,
        org: OrgId,
        resource: ResourceId,
        user: UserId,
        grant: bool,
        actor: &Actor,
        now: Timestamp,
    ) -> Result<()> {
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            lock_org!(tx, org);
            let exists: Option<(String,)> = sqlx::query_as("SELECT id FROM resources WHERE id = $1 AND org_id = $2")
                .bind(resource.to_string())
                .bind(org.to_string())
                .fetch_optional(&mut *tx)
                .await?;
            if exists.is_none() {
                return Err(DomainError::NotFound { what: "resource" }.into());
            }
            let member = crate::member_role_in_tx!(tx, org, user);
            if member.is_none() {
                return Err(DomainError::NotFound { what: "member" }.into());
            }
            let changed = if grant {
                sqlx::query(
                    "INSERT INTO resource_grants (resource_id, user_id, org_id, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                )
                .bind(resource.to_string())
                .bind(user.to_string())
                .bind(org.to_string())
                .bind(millis(now))
                .execute(&mut *tx)
                .await?
                .rows_affected()
            } else {
                sqlx::query("DELETE FROM resource_grants WHERE resource_id = $1 AND user_id = $2")
                    .bind(resource.to_string())
                    .bind(user.to_string())
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
            };
            if changed > 0 {
                let kind = if grant { "grant.created" } else { "grant.deleted" };
                record_event!(tx, org.to_string(), kind, actor,
                    serde_json::json!({"org_id": org, "resource_id": resource, "user_id": user}), now)?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Whether `user` holds a grant on `resource` (roles are the caller's
    /// business: owners and admins see everything without grants).
    pub async fn has_grant(&self, org: OrgId, resource: ResourceId, user: UserId) -> Result<bool> {
        let (n,): (i64,) = on_pool!(self, pool => {
            sqlx::query_as("SELECT COUNT(*) FROM resource_grants WHERE resource_id = $1 AND user_id = $2 AND org_id = $3")
                .bind(resource.to_string())
                .bind(user.to_string())
                .bind(org.to_string())
                .fetch_one(pool)
                .await?
        });
        Ok(n > 0)
    }
}
