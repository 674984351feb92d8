//! Server API keys, stored as hashes only: create, look up, list, revoke.
//! A revoked key keeps its row (and so its id in the event log) with
//! `revoked_at` set; lookups never return it.

use orgplane_core::{ApiKeyId, DomainError, Timestamp};

use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, Type};

use crate::tx::record_user_event;
use crate::{Actor, Backend, BeginWrite, Result, Store, from_millis, millis, parse_id};

#[derive(Debug, Clone)]
pub struct ApiKeyRecord {
    pub id: ApiKeyId,
    pub name: String,
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

/// What revoking a key did.
#[derive(Debug, Clone)]
pub enum Revocation {
    /// The key was live and is revoked now.
    Revoked(ApiKeyRecord),
    /// The key had been revoked before (at its `revoked_at`); nothing changed.
    AlreadyRevoked(ApiKeyRecord),
}

type ApiKeyRow = (String, String, i64, Option<i64>);

fn record_from_row((id, name, created, revoked): ApiKeyRow) -> Result<ApiKeyRecord> {
    Ok(ApiKeyRecord {
        id: parse_id(&id)?,
        name,
        created_at: from_millis(created)?,
        revoked_at: revoked.map(from_millis).transpose()?,
    })
}

impl Store {
    /// Stores a new key's hash; the plaintext is shown once by the caller.
    pub async fn create_api_key(&self, name: &str, key_hash: &str, now: Timestamp) -> Result<ApiKeyRecord> {
        let id = ApiKeyId::new();
        match &self.backend {
            Backend::Sqlite(pool) => create_api_key(pool, id, name, key_hash, now).await,
            Backend::Postgres(pool) => create_api_key(pool, id, name, key_hash, now).await,
        }?;
        Ok(ApiKeyRecord { id, name: name.to_owned(), created_at: now, revoked_at: None })
    }

    /// The live key whose hash is `key_hash`.
    pub async fn api_key_by_hash(&self, key_hash: &str) -> Result<Option<ApiKeyRecord>> {
        let row = match &self.backend {
            Backend::Sqlite(pool) => api_key_by_hash(pool, key_hash).await,
            Backend::Postgres(pool) => api_key_by_hash(pool, key_hash).await,
        }?;
        row.map(record_from_row).transpose()
    }

    /// Every key, live and revoked, oldest first.
    pub async fn api_keys(&self) -> Result<Vec<ApiKeyRecord>> {
        let rows = match &self.backend {
            Backend::Sqlite(pool) => api_keys(pool).await,
            Backend::Postgres(pool) => api_keys(pool).await,
        }?;
        rows.into_iter().map(record_from_row).collect()
    }

    /// Revokes a key: lookups stop finding it at once (servers that cached
    /// it stop within their cache TTL). Revoking a revoked key changes
    /// nothing and says so; an unknown id is `not_found`. The
    /// `api_key.revoked` event is written in the same transaction.
    pub async fn revoke_api_key(&self, id: ApiKeyId, actor: &Actor, now: Timestamp) -> Result<Revocation> {
        match &self.backend {
            Backend::Sqlite(pool) => revoke_api_key(pool, id, actor, now).await,
            Backend::Postgres(pool) => revoke_api_key(pool, id, actor, now).await,
        }
    }
}

async fn create_api_key<DB>(pool: &Pool<DB>, id: ApiKeyId, name: &str, key_hash: &str, now: Timestamp) -> Result<()>
where
    DB: Database,
    Pool<DB>: BeginWrite<Db = DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> Option<String>: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
{
    let mut tx = pool.begin_write().await?;
    sqlx::query("INSERT INTO api_keys (id, name, key_hash, created_at) VALUES ($1, $2, $3, $4)")
        .bind(id.to_string())
        .bind(name.to_owned())
        .bind(key_hash.to_owned())
        .bind(millis(now))
        .execute(&mut *tx)
        .await?;
    let data = serde_json::json!({"key_id": id, "name": name});
    record_user_event(&mut tx, "api_key.created", &Actor::System, data, now).await?;
    tx.commit().await?;
    Ok(())
}

async fn api_key_by_hash<DB>(pool: &Pool<DB>, key_hash: &str) -> Result<Option<ApiKeyRow>>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    usize: ColumnIndex<DB::Row>,
    for<'q> String: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> i64: Decode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Decode<'q, DB> + Type<DB>,
{
    let row = sqlx::query_as(
        "SELECT id, name, created_at, revoked_at FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL",
    )
    .bind(key_hash.to_owned())
    .fetch_optional(pool)
    .await?;
    Ok(row)
}

async fn api_keys<DB>(pool: &Pool<DB>) -> Result<Vec<ApiKeyRow>>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    usize: ColumnIndex<DB::Row>,
    for<'q> String: Decode<'q, DB> + Type<DB>,
    for<'q> i64: Decode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Decode<'q, DB> + Type<DB>,
{
    let rows = sqlx::query_as("SELECT id, name, created_at, revoked_at FROM api_keys ORDER BY created_at, id")
        .fetch_all(pool)
        .await?;
    Ok(rows)
}

async fn revoke_api_key<DB>(pool: &Pool<DB>, id: ApiKeyId, actor: &Actor, now: Timestamp) -> Result<Revocation>
where
    DB: Database,
    Pool<DB>: BeginWrite<Db = DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    usize: ColumnIndex<DB::Row>,
    for<'q> String: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Option<String>: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Decode<'q, DB> + Type<DB>,
{
    let mut tx = pool.begin_write().await?;
    let revoked: Option<ApiKeyRow> = sqlx::query_as(
        "UPDATE api_keys SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL \
         RETURNING id, name, created_at, revoked_at",
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
            let row: Option<ApiKeyRow> =
                sqlx::query_as("SELECT id, name, created_at, revoked_at FROM api_keys WHERE id = $1")
                    .bind(id.to_string())
                    .fetch_optional(&mut *tx)
                    .await?;
            Revocation::AlreadyRevoked(record_from_row(row.ok_or(DomainError::NotFound { what: "API key" })?)?)
        }
    };
    tx.commit().await?;
    Ok(outcome)
}
