//! Server API keys, stored as hashes only: create, look up, list, revoke,
//! and note their last use. A revoked key keeps its row (and so its id in
//! the event log) with `revoked_at` set; lookups never return it.
//!
//! A revocation is announced to every replica after its commit (see
//! `changes`), so that caches of keys stop trusting it at once.

use orgplane_core::keys::KeyScope;
use orgplane_core::{ApiKeyId, DomainError, Timestamp};

use sqlx::Pool;

use crate::sql::{Sql, query, query_as};
use crate::tx::{ensure_cursor_in_list, record_user_event};
use crate::{Actor, Backend, BeginWrite, Page, PageRequest, Result, Store, StoreError, from_millis, millis, parse_id};

#[derive(Debug, Clone)]
pub struct ApiKeyRecord {
    pub id: ApiKeyId,
    pub name: String,
    /// The key's first characters (`sk_` and 8 more); `None` for keys made
    /// before prefixes were stored.
    pub prefix: Option<String>,
    pub scope: KeyScope,
    pub created_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    pub last_used_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
}

/// A server key to store: its hash (never the key), what it may do and
/// until when.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    pub name: String,
    pub key_hash: String,
    pub prefix: String,
    pub scope: KeyScope,
    pub expires_at: Option<Timestamp>,
}

/// What revoking a key did.
#[derive(Debug, Clone)]
pub enum Revocation {
    /// The key was live and is revoked now.
    Revoked(ApiKeyRecord),
    /// The key had been revoked before (at its `revoked_at`); nothing changed.
    AlreadyRevoked(ApiKeyRecord),
}

type ApiKeyRow = (String, String, Option<String>, String, i64, Option<i64>, Option<i64>, Option<i64>);

fn record_from_row((id, name, prefix, scope, created, expires, used, revoked): ApiKeyRow) -> Result<ApiKeyRecord> {
    Ok(ApiKeyRecord {
        id: parse_id(&id)?,
        name,
        prefix,
        scope: KeyScope::parse(&scope).map_err(|e| StoreError::Corrupt(format!("API key {id}: {e}")))?,
        created_at: from_millis(created)?,
        expires_at: expires.map(from_millis).transpose()?,
        last_used_at: used.map(from_millis).transpose()?,
        revoked_at: revoked.map(from_millis).transpose()?,
    })
}

/// How often a key's `last_used_at` is written at most.
pub const LAST_USED_EVERY_MS: i64 = 60_000;

impl Store {
    /// Stores a new all-powerful (`admin`) key's hash that never expires;
    /// the plaintext is shown once by the caller. See [`Store::create_server_key`].
    pub async fn create_api_key(&self, name: &str, key_hash: &str, now: Timestamp) -> Result<ApiKeyRecord> {
        let new = NewApiKey {
            name: name.to_owned(),
            key_hash: key_hash.to_owned(),
            prefix: String::new(),
            scope: KeyScope::Admin,
            expires_at: None,
        };
        self.create_server_key(&new, &Actor::System, now).await
    }

    /// Stores a new server key; `api_key.created` is written in the same
    /// transaction.
    pub async fn create_server_key(&self, new: &NewApiKey, actor: &Actor, now: Timestamp) -> Result<ApiKeyRecord> {
        let id = ApiKeyId::new();
        match &self.backend {
            Backend::Sqlite(pool) => create_api_key(pool, id, new, actor, now).await,
            Backend::Postgres(pool) => create_api_key(pool, id, new, actor, now).await,
        }?;
        Ok(ApiKeyRecord {
            id,
            name: new.name.clone(),
            prefix: Some(new.prefix.clone()).filter(|p| !p.is_empty()),
            scope: new.scope,
            created_at: now,
            expires_at: new.expires_at,
            last_used_at: None,
            revoked_at: None,
        })
    }

    /// The live (unrevoked) key whose hash is `key_hash`, expired or not:
    /// the caller decides at its own `now`.
    pub async fn api_key_by_hash(&self, key_hash: &str) -> Result<Option<ApiKeyRecord>> {
        let row = match &self.backend {
            Backend::Sqlite(pool) => api_key_by_hash(pool, key_hash).await,
            Backend::Postgres(pool) => api_key_by_hash(pool, key_hash).await,
        }?;
        row.map(record_from_row).transpose()
    }

    /// Every key, live and revoked, oldest first.
    pub async fn api_keys(&self) -> Result<Vec<ApiKeyRecord>> {
        let page = PageRequest { limit: u32::MAX - 1, starting_after: None };
        Ok(self.api_keys_page(&page).await?.data)
    }

    /// A page of keys, live and revoked, oldest first.
    pub async fn api_keys_page(&self, page: &PageRequest) -> Result<Page<ApiKeyRecord>> {
        let rows = match &self.backend {
            Backend::Sqlite(pool) => api_keys(pool, page).await,
            Backend::Postgres(pool) => api_keys(pool, page).await,
        }?;
        let data = rows.into_iter().map(record_from_row).collect::<Result<Vec<_>>>()?;
        Ok(Page::from_rows(data, page.limit))
    }

    /// Revokes a key: lookups stop finding it at once, and every replica is
    /// told to drop its cached copy (a replica that misses the announcement
    /// stops within its cache TTL). Revoking a revoked key changes nothing
    /// and says so; an unknown id is `not_found`. The `api_key.revoked`
    /// event is written in the same transaction.
    pub async fn revoke_api_key(&self, id: ApiKeyId, actor: &Actor, now: Timestamp) -> Result<Revocation> {
        let outcome = match &self.backend {
            Backend::Sqlite(pool) => revoke_api_key(pool, id, actor, now).await,
            Backend::Postgres(pool) => revoke_api_key(pool, id, actor, now).await,
        }?;
        if matches!(outcome, Revocation::Revoked(_)) {
            self.touched_keys().await;
        }
        Ok(outcome)
    }

    /// Notes that the key was used at `now`, unless that was noted less than
    /// [`LAST_USED_EVERY_MS`] ago (then nothing is written). Callers also
    /// keep from calling more than once a minute per key.
    pub async fn note_api_key_used(&self, id: ApiKeyId, now: Timestamp) -> Result<()> {
        match &self.backend {
            Backend::Sqlite(pool) => note_used(pool, "api_keys", &id.to_string(), now).await,
            Backend::Postgres(pool) => note_used(pool, "api_keys", &id.to_string(), now).await,
        }
    }
}

async fn create_api_key<DB: Sql>(
    pool: &Pool<DB>,
    id: ApiKeyId,
    new: &NewApiKey,
    actor: &Actor,
    now: Timestamp,
) -> Result<()> {
    let mut tx = pool.begin_write().await?;
    query(
        "INSERT INTO api_keys (id, name, key_hash, created_at, scope, expires_at, prefix) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(id.to_string())
    .bind(new.name.clone())
    .bind(new.key_hash.clone())
    .bind(millis(now))
    .bind(new.scope.as_str().to_owned())
    .bind(new.expires_at.map(millis))
    .bind(Some(new.prefix.clone()).filter(|p| !p.is_empty()))
    .execute(&mut *tx)
    .await?;
    let data = serde_json::json!({
        "key_id": id, "name": new.name, "scope": new.scope.as_str(),
        "expires_at": new.expires_at.map(millis),
    });
    record_user_event(&mut tx, "api_key.created", actor, data, now).await?;
    tx.commit().await?;
    Ok(())
}

async fn api_key_by_hash<DB: Sql>(pool: &Pool<DB>, key_hash: &str) -> Result<Option<ApiKeyRow>> {
    let row = query_as(
        "SELECT id, name, prefix, scope, created_at, expires_at, last_used_at, revoked_at \
         FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL",
    )
    .bind(key_hash.to_owned())
    .fetch_optional(pool)
    .await?;
    Ok(row)
}

async fn api_keys<DB: Sql>(pool: &Pool<DB>, page: &PageRequest) -> Result<Vec<ApiKeyRow>> {
    ensure_cursor_in_list(
        pool,
        page,
        "SELECT id FROM api_keys WHERE id = $1",
        &[page.starting_after.as_deref().unwrap_or("")],
    )
    .await?;
    let rows = query_as(
        "SELECT id, name, prefix, scope, created_at, expires_at, last_used_at, revoked_at \
         FROM api_keys WHERE id > $1 ORDER BY id LIMIT $2",
    )
    .bind(page.starting_after.clone().unwrap_or_default())
    .bind(i64::from(page.limit) + 1)
    .fetch_all(pool)
    .await?;
    Ok(rows)
}

async fn revoke_api_key<DB: Sql>(pool: &Pool<DB>, id: ApiKeyId, actor: &Actor, now: Timestamp) -> Result<Revocation> {
    let mut tx = pool.begin_write().await?;
    let revoked: Option<ApiKeyRow> = query_as(
        "UPDATE api_keys SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL \
         RETURNING id, name, prefix, scope, created_at, expires_at, last_used_at, revoked_at",
    )
    .bind(id.to_string())
    .bind(millis(now))
    .fetch_optional(&mut *tx)
    .await?;
    let outcome = match revoked {
        Some(row) => {
            let record = record_from_row(row)?;
            let data = serde_json::json!({"key_id": id, "name": record.name});
            record_user_event(&mut tx, "api_key.revoked", actor, data, now).await?;
            Revocation::Revoked(record)
        }
        None => {
            let row: Option<ApiKeyRow> = query_as(
                "SELECT id, name, prefix, scope, created_at, expires_at, last_used_at, revoked_at \
                 FROM api_keys WHERE id = $1",
            )
            .bind(id.to_string())
            .fetch_optional(&mut *tx)
            .await?;
            Revocation::AlreadyRevoked(record_from_row(row.ok_or(DomainError::NotFound { what: "API key" })?)?)
        }
    };
    tx.commit().await?;
    Ok(outcome)
}

/// One conditional write of `last_used_at` on `table` (`api_keys` or
/// `org_api_keys`): nothing is written when the stored time is less than
/// [`LAST_USED_EVERY_MS`] old.
pub(crate) async fn note_used<DB: Sql>(pool: &Pool<DB>, table: &'static str, id: &str, now: Timestamp) -> Result<()> {
    let statement = match table {
        "api_keys" => {
            "UPDATE api_keys SET last_used_at = $2 WHERE id = $1 AND (last_used_at IS NULL OR last_used_at <= $3)"
        }
        _ => "UPDATE org_api_keys SET last_used_at = $2 WHERE id = $1 AND (last_used_at IS NULL OR last_used_at <= $3)",
    };
    let _gate = crate::sql::Sql::write_permit(pool).await?;
    query(statement).bind(id.to_owned()).bind(millis(now)).bind(millis(now) - LAST_USED_EVERY_MS).execute(pool).await?;
    Ok(())
}
