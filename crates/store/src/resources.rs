//! The app's counted resources and member grants. Creating one checks the
//! quota and inserts inside the org's lock, so concurrent creates never
//! overshoot a limit. The count a quota reads is `resource_usage`, a
//! per-(org, type) counter changed in the same transaction as every insert
//! and delete of a resource (and removed with the org): always equal to the
//! rows, and read in one indexed lookup instead of a count that grows with
//! the org.

use orgplane_core::{DomainError, OrgId, ResourceId, Timestamp, UserId};

use sqlx::Pool;

use crate::entitlements::{Guard, inputs_of_kind, usage_of_resource};
use crate::sql::{Sql, query, query_as};
use crate::tx::{ensure_cursor_in_list, lock_org, member_role, record_event};
use crate::{Actor, Backend, BeginWrite, Page, PageRequest, Result, Store, StoreError, from_millis, millis, parse_id};

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
        match &self.backend {
            Backend::Sqlite(pool) => create_resource(pool, id, new, guard, actor, now).await,
            Backend::Postgres(pool) => create_resource(pool, id, new, guard, actor, now).await,
        }?;
        self.touched(new.org).await;
        self.resource(new.org, id).await
    }

    pub async fn resource(&self, org: OrgId, id: ResourceId) -> Result<ResourceRecord> {
        let row = match &self.backend {
            Backend::Sqlite(pool) => resource(pool, org, id).await,
            Backend::Postgres(pool) => resource(pool, org, id).await,
        }?;
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
        let rows = match &self.backend {
            Backend::Sqlite(pool) => resources(pool, org, kind, granted_to, page).await,
            Backend::Postgres(pool) => resources(pool, org, kind, granted_to, page).await,
        }?;
        let data = rows.into_iter().map(resource_from_row).collect::<Result<Vec<_>>>()?;
        Ok(Page::from_rows(data, page.limit))
    }

    /// Deletes a resource, freeing its quota.
    pub async fn delete_resource(&self, org: OrgId, id: ResourceId, actor: &Actor, now: Timestamp) -> Result<()> {
        match &self.backend {
            Backend::Sqlite(pool) => delete_resource(pool, org, id, actor, now).await,
            Backend::Postgres(pool) => delete_resource(pool, org, id, actor, now).await,
        }?;
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
        match &self.backend {
            Backend::Sqlite(pool) => set_grant(pool, org, resource, user, grant, actor, now).await,
            Backend::Postgres(pool) => set_grant(pool, org, resource, user, grant, actor, now).await,
        }
    }

    /// Whether `user` holds a grant on `resource` (roles are the caller's
    /// business: owners and admins see everything without grants).
    pub async fn has_grant(&self, org: OrgId, resource: ResourceId, user: UserId) -> Result<bool> {
        match &self.backend {
            Backend::Sqlite(pool) => has_grant(pool, org, resource, user).await,
            Backend::Postgres(pool) => has_grant(pool, org, resource, user).await,
        }
    }
}

async fn create_resource<DB: Sql>(
    pool: &Pool<DB>,
    id: ResourceId,
    new: &NewResource,
    guard: Guard<'_>,
    actor: &Actor,
    now: Timestamp,
) -> Result<()> {
    let mut tx = pool.begin_write().await?;
    let kind = lock_org(&mut tx, new.org).await?;
    let inputs = inputs_of_kind::<DB>(&mut tx, new.org, kind).await?;
    let usage = usage_of_resource::<DB>(&mut tx, new.org, &new.kind, now).await?;
    guard(&inputs, &usage)?;
    let inserted = query(
        "INSERT INTO resources (id, org_id, type, external_id, name, created_at) VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT DO NOTHING",
    )
    .bind(id.to_string())
    .bind(new.org.to_string())
    .bind(new.kind.clone())
    .bind(new.external_id.clone())
    .bind(new.name.clone())
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
    query(
        "INSERT INTO resource_usage (org_id, type, used) VALUES ($1, $2, 1) \
         ON CONFLICT (org_id, type) DO UPDATE SET used = resource_usage.used + 1",
    )
    .bind(new.org.to_string())
    .bind(new.kind.clone())
    .execute(&mut *tx)
    .await?;
    let data =
        serde_json::json!({"org_id": new.org, "resource_id": id, "type": new.kind, "external_id": new.external_id});
    record_event(&mut tx, new.org, "resource.created", actor, data, now).await?;
    tx.commit().await?;
    Ok(())
}

async fn resource<DB: Sql>(pool: &Pool<DB>, org: OrgId, id: ResourceId) -> Result<Option<ResourceRow>> {
    Ok(query_as(SELECT_RESOURCE).bind(id.to_string()).bind(org.to_string()).fetch_optional(pool).await?)
}

async fn resources<DB: Sql>(
    pool: &Pool<DB>,
    org: OrgId,
    kind: Option<&str>,
    granted_to: Option<UserId>,
    page: &PageRequest,
) -> Result<Vec<ResourceRow>> {
    let kind = kind.unwrap_or("").to_owned();
    let granted_to = granted_to.map(|u| u.to_string()).unwrap_or_default();
    // The cursor must be an item of this very list (same filters).
    let cursor = page.starting_after.as_deref().unwrap_or_default();
    let exists = "SELECT 1 FROM resources r WHERE r.org_id = $1 AND ($2 = '' OR r.type = $2) AND r.id = $3 \
         AND ($4 = '' OR EXISTS (SELECT 1 FROM resource_grants g WHERE g.resource_id = r.id AND g.user_id = $4))";
    ensure_cursor_in_list(pool, page, exists, &[&org.to_string(), &kind, cursor, &granted_to]).await?;
    let rows = query_as(
        "SELECT r.id, r.org_id, r.type, r.external_id, r.name, r.created_at FROM resources r \
         WHERE r.org_id = $1 AND ($2 = '' OR r.type = $2) AND r.id > $3 \
         AND ($4 = '' OR EXISTS (SELECT 1 FROM resource_grants g WHERE g.resource_id = r.id AND g.user_id = $4)) \
         ORDER BY r.id LIMIT $5",
    )
    .bind(org.to_string())
    .bind(kind)
    .bind(page.starting_after.clone().unwrap_or_default())
    .bind(granted_to)
    .bind(i64::from(page.limit) + 1)
    .fetch_all(pool)
    .await?;
    Ok(rows)
}

async fn delete_resource<DB: Sql>(
    pool: &Pool<DB>,
    org: OrgId,
    id: ResourceId,
    actor: &Actor,
    now: Timestamp,
) -> Result<()> {
    let mut tx = pool.begin_write().await?;
    lock_org(&mut tx, org).await?;
    let deleted: Option<(String,)> = query_as("DELETE FROM resources WHERE id = $1 AND org_id = $2 RETURNING type")
        .bind(id.to_string())
        .bind(org.to_string())
        .fetch_optional(&mut *tx)
        .await?;
    let Some((kind,)) = deleted else {
        return Err(DomainError::NotFound { what: "resource" }.into());
    };
    let counted = query("UPDATE resource_usage SET used = used - 1 WHERE org_id = $1 AND type = $2")
        .bind(org.to_string())
        .bind(kind.clone())
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if counted != 1 {
        return Err(StoreError::Corrupt(format!("no usage counter for the {kind} resources of organization {org}")));
    }
    let data = serde_json::json!({"org_id": org, "resource_id": id});
    record_event(&mut tx, org, "resource.deleted", actor, data, now).await?;
    tx.commit().await?;
    Ok(())
}

async fn set_grant<DB: Sql>(
    pool: &Pool<DB>,
    org: OrgId,
    resource: ResourceId,
    user: UserId,
    grant: bool,
    actor: &Actor,
    now: Timestamp,
) -> Result<()> {
    let mut tx = pool.begin_write().await?;
    lock_org(&mut tx, org).await?;
    let exists = query("SELECT id FROM resources WHERE id = $1 AND org_id = $2")
        .bind(resource.to_string())
        .bind(org.to_string())
        .fetch_optional(&mut *tx)
        .await?;
    if exists.is_none() {
        return Err(DomainError::NotFound { what: "resource" }.into());
    }
    if member_role(&mut tx, org, user).await?.is_none() {
        return Err(DomainError::NotFound { what: "member" }.into());
    }
    let changed = if grant {
        query(
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
        query("DELETE FROM resource_grants WHERE resource_id = $1 AND user_id = $2")
            .bind(resource.to_string())
            .bind(user.to_string())
            .execute(&mut *tx)
            .await?
            .rows_affected()
    };
    if changed > 0 {
        let kind = if grant { "grant.created" } else { "grant.deleted" };
        let data = serde_json::json!({"org_id": org, "resource_id": resource, "user_id": user});
        record_event(&mut tx, org, kind, actor, data, now).await?;
    }
    tx.commit().await?;
    Ok(())
}

async fn has_grant<DB: Sql>(pool: &Pool<DB>, org: OrgId, resource: ResourceId, user: UserId) -> Result<bool> {
    let (n,): (i64,) =
        query_as("SELECT COUNT(*) FROM resource_grants WHERE resource_id = $1 AND user_id = $2 AND org_id = $3")
            .bind(resource.to_string())
            .bind(user.to_string())
            .bind(org.to_string())
            .fetch_one(pool)
            .await?;
    Ok(n > 0)
}
