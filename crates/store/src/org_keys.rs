//! Org API keys (`ok_…`): keys an org's members make for their own scripts
//! against the app. Stored as hashes only. Creating one checks the org's
//! kind, feature and `api_keys` limit inside the org's lock, with the keys
//! counted in the same transaction, so concurrent creates never overshoot.
//! A revoked key keeps its row, so that verifying it can say "revoked".

use orgplane_core::org::OrgKind;
use orgplane_core::{DomainError, OrgApiKeyId, OrgId, Timestamp, UserId};

use sqlx::Pool;

use crate::api_keys::note_used;
use crate::entitlements::{Guard, inputs, usage};
use crate::sql::{Sql, query, query_as};
use crate::tx::{ensure_cursor_in_list, lock_org, record_event};
use crate::{Actor, Backend, BeginWrite, Page, PageRequest, Result, Store, StoreError, from_millis, millis, parse_id};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgKeyRecord {
    pub id: OrgApiKeyId,
    pub org_id: OrgId,
    pub name: String,
    /// The key's first characters (`ok_` and 8 more), to tell keys apart.
    pub prefix: String,
    /// The app's own scope names, as given at creation.
    pub scopes: Vec<String>,
    pub created_by: Option<String>,
    pub created_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    pub last_used_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
}

#[derive(Debug, Clone)]
pub struct NewOrgKey {
    pub org: OrgId,
    pub name: String,
    pub key_hash: String,
    pub prefix: String,
    pub scopes: Vec<String>,
    pub expires_at: Option<Timestamp>,
    pub created_by: Option<UserId>,
}

type OrgKeyRow = (String, String, String, String, String, Option<String>, i64, Option<i64>, Option<i64>, Option<i64>);

const SELECT: &str = "SELECT id, org_id, name, prefix, scopes, created_by, created_at, expires_at, last_used_at, revoked_at \
                      FROM org_api_keys";

fn record_from_row(row: OrgKeyRow) -> Result<OrgKeyRecord> {
    let (id, org, name, prefix, scopes, created_by, created, expires, used, revoked) = row;
    Ok(OrgKeyRecord {
        scopes: serde_json::from_str(&scopes).map_err(|e| StoreError::Corrupt(format!("scopes of {id}: {e}")))?,
        id: parse_id(&id)?,
        org_id: parse_id(&org)?,
        name,
        prefix,
        created_by,
        created_at: from_millis(created)?,
        expires_at: expires.map(from_millis).transpose()?,
        last_used_at: used.map(from_millis).transpose()?,
        revoked_at: revoked.map(from_millis).transpose()?,
    })
}

impl Store {
    /// Creates an org key if the org is a team org and `guard` (feature and
    /// limit) allows one more with the keys counted inside the same
    /// transaction; `org_api_key.created` is written with it.
    pub async fn create_org_key(
        &self,
        new: &NewOrgKey,
        guard: Guard<'_>,
        actor: &Actor,
        now: Timestamp,
    ) -> Result<OrgKeyRecord> {
        let id = OrgApiKeyId::new();
        match &self.backend {
            Backend::Sqlite(pool) => create_org_key(pool, id, new, guard, actor, now).await,
            Backend::Postgres(pool) => create_org_key(pool, id, new, guard, actor, now).await,
        }?;
        // Usage changed: cached entitlements of the org are stale.
        self.touched(new.org).await;
        Ok(OrgKeyRecord {
            id,
            org_id: new.org,
            name: new.name.clone(),
            prefix: new.prefix.clone(),
            scopes: new.scopes.clone(),
            created_by: new.created_by.map(|u| u.to_string()),
            created_at: now,
            expires_at: new.expires_at,
            last_used_at: None,
            revoked_at: None,
        })
    }

    /// The org's keys, live and revoked, oldest first.
    pub async fn org_keys(&self, org: OrgId, page: &PageRequest) -> Result<Page<OrgKeyRecord>> {
        let rows = match &self.backend {
            Backend::Sqlite(pool) => org_keys(pool, org, page).await,
            Backend::Postgres(pool) => org_keys(pool, org, page).await,
        }?;
        let data = rows.into_iter().map(record_from_row).collect::<Result<Vec<_>>>()?;
        Ok(Page::from_rows(data, page.limit))
    }

    /// The key whose hash is `key_hash`, revoked or not.
    pub async fn org_key_by_hash(&self, key_hash: &str) -> Result<Option<OrgKeyRecord>> {
        let row = match &self.backend {
            Backend::Sqlite(pool) => org_key_by_hash(pool, key_hash).await,
            Backend::Postgres(pool) => org_key_by_hash(pool, key_hash).await,
        }?;
        row.map(record_from_row).transpose()
    }

    /// Revokes the org's key `id` (`not_found` if it is not this org's).
    /// Revoking a revoked key changes nothing and returns it as it is.
    /// Every replica is told to drop its cached copy.
    pub async fn revoke_org_key(
        &self,
        org: OrgId,
        id: OrgApiKeyId,
        actor: &Actor,
        now: Timestamp,
    ) -> Result<OrgKeyRecord> {
        let (record, changed) = match &self.backend {
            Backend::Sqlite(pool) => revoke_org_key(pool, org, id, actor, now).await,
            Backend::Postgres(pool) => revoke_org_key(pool, org, id, actor, now).await,
        }?;
        if changed {
            self.touched(org).await;
            self.touched_keys().await;
        }
        Ok(record)
    }

    /// Notes the org key's use (at most one write a minute, see
    /// [`Store::note_api_key_used`]).
    pub async fn note_org_key_used(&self, id: OrgApiKeyId, now: Timestamp) -> Result<()> {
        match &self.backend {
            Backend::Sqlite(pool) => note_used(pool, "org_api_keys", &id.to_string(), now).await,
            Backend::Postgres(pool) => note_used(pool, "org_api_keys", &id.to_string(), now).await,
        }
    }
}

async fn create_org_key<DB: Sql>(
    pool: &Pool<DB>,
    id: OrgApiKeyId,
    new: &NewOrgKey,
    guard: Guard<'_>,
    actor: &Actor,
    now: Timestamp,
) -> Result<()> {
    let mut tx = pool.begin_write().await?;
    if lock_org(&mut tx, new.org).await? == OrgKind::Personal {
        return Err(DomainError::personal_org(
            "a personal organization has no API keys; create the key in a team organization",
        )
        .into());
    }
    let inputs = inputs::<DB>(&mut tx, new.org).await?;
    let usage = usage::<DB>(&mut tx, new.org, now).await?;
    guard(&inputs, &usage)?;
    let scopes = serde_json::to_string(&new.scopes).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    query(
        "INSERT INTO org_api_keys (id, org_id, name, key_hash, prefix, scopes, created_by, expires_at, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(id.to_string())
    .bind(new.org.to_string())
    .bind(new.name.clone())
    .bind(new.key_hash.clone())
    .bind(new.prefix.clone())
    .bind(scopes)
    .bind(new.created_by.map(|u| u.to_string()))
    .bind(new.expires_at.map(millis))
    .bind(millis(now))
    .execute(&mut *tx)
    .await?;
    let data = serde_json::json!({
        "org_id": new.org, "key_id": id, "name": new.name, "scopes": new.scopes, "prefix": new.prefix,
    });
    record_event(&mut tx, new.org, "org_api_key.created", actor, data, now).await?;
    tx.commit().await?;
    Ok(())
}

async fn org_keys<DB: Sql>(pool: &Pool<DB>, org: OrgId, page: &PageRequest) -> Result<Vec<OrgKeyRow>> {
    let org_text = org.to_string();
    let cursor = page.starting_after.clone().unwrap_or_default();
    ensure_cursor_in_list(
        pool,
        page,
        "SELECT id FROM org_api_keys WHERE org_id = $1 AND id = $2",
        &[&org_text, &cursor],
    )
    .await?;
    let rows = query_as(sqlx::AssertSqlSafe(format!("{SELECT} WHERE org_id = $1 AND id > $2 ORDER BY id LIMIT $3")))
        .bind(org_text)
        .bind(cursor)
        .bind(i64::from(page.limit) + 1)
        .fetch_all(pool)
        .await?;
    Ok(rows)
}

async fn org_key_by_hash<DB: Sql>(pool: &Pool<DB>, key_hash: &str) -> Result<Option<OrgKeyRow>> {
    Ok(query_as(sqlx::AssertSqlSafe(format!("{SELECT} WHERE key_hash = $1")))
        .bind(key_hash.to_owned())
        .fetch_optional(pool)
        .await?)
}

async fn revoke_org_key<DB: Sql>(
    pool: &Pool<DB>,
    org: OrgId,
    id: OrgApiKeyId,
    actor: &Actor,
    now: Timestamp,
) -> Result<(OrgKeyRecord, bool)> {
    let mut tx = pool.begin_write().await?;
    let revoked: Option<OrgKeyRow> = query_as(
        "UPDATE org_api_keys SET revoked_at = $3 WHERE id = $1 AND org_id = $2 AND revoked_at IS NULL \
         RETURNING id, org_id, name, prefix, scopes, created_by, created_at, expires_at, last_used_at, revoked_at",
    )
    .bind(id.to_string())
    .bind(org.to_string())
    .bind(millis(now))
    .fetch_optional(&mut *tx)
    .await?;
    let outcome = match revoked {
        Some(row) => {
            let record = record_from_row(row)?;
            let data = serde_json::json!({"org_id": org, "key_id": id, "name": record.name});
            record_event(&mut tx, org, "org_api_key.revoked", actor, data, now).await?;
            (record, true)
        }
        None => {
            let row: Option<OrgKeyRow> =
                query_as(sqlx::AssertSqlSafe(format!("{SELECT} WHERE id = $1 AND org_id = $2")))
                    .bind(id.to_string())
                    .bind(org.to_string())
                    .fetch_optional(&mut *tx)
                    .await?;
            (record_from_row(row.ok_or(DomainError::NotFound { what: "API key" })?)?, false)
        }
    };
    tx.commit().await?;
    Ok(outcome)
}
