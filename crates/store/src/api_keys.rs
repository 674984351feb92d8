//! Server API keys, stored as hashes only.

use orgplane_core::{ApiKeyId, Timestamp};

use crate::{Actor, BeginWrite, Result, Store, from_millis, millis, on_pool, parse_id, record_event};

#[derive(Debug, Clone)]
pub struct ApiKeyRecord {
    pub id: ApiKeyId,
    pub name: String,
    pub created_at: Timestamp,
}

impl Store {
    /// Stores a new key's hash; the plaintext is shown once by the caller.
    pub async fn create_api_key(&self, name: &str, key_hash: &str, now: Timestamp) -> Result<ApiKeyRecord> {
        let id = ApiKeyId::new();
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            sqlx::query("INSERT INTO api_keys (id, name, key_hash, created_at) VALUES ($1, $2, $3, $4)")
                .bind(id.to_string())
                .bind(name)
                .bind(key_hash)
                .bind(millis(now))
                .execute(&mut *tx)
                .await?;
            record_event!(tx, None::<String>, "api_key.created", Actor::System, serde_json::json!({"key_id": id, "name": name}), now)?;
            tx.commit().await?;
        });
        Ok(ApiKeyRecord { id, name: name.to_owned(), created_at: now })
    }

    /// The live key whose hash is `key_hash`.
    pub async fn api_key_by_hash(&self, key_hash: &str) -> Result<Option<ApiKeyRecord>> {
        let row: Option<(String, String, i64)> = on_pool!(self, pool => {
            sqlx::query_as("SELECT id, name, created_at FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL")
                .bind(key_hash)
                .fetch_optional(pool)
                .await?
        });
        row.map(|(id, name, created)| Ok(ApiKeyRecord { id: parse_id(&id)?, name, created_at: from_millis(created)? }))
            .transpose()
    }
}
