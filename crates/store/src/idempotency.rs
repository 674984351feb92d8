//! Stored responses for `Idempotency-Key`: a repeat with the same key and
//! body gets the first response; the same key with another body is refused.
//! The key is claimed by an insert (unique on principal + key) before the
//! request runs, so concurrent repeats can't both execute.

use orgplane_core::Timestamp;

use crate::{Result, Store, millis, on_pool};

/// What to do with a request that carries an `Idempotency-Key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotencyBegin {
    /// First use: run the request, then [`Store::idempotency_complete`].
    Proceed,
    /// Seen before with the same request: replay this response.
    Replay { status: u16, body: Vec<u8> },
    /// Seen before with a different request.
    Mismatch,
    /// The first request with this key is still running.
    InProgress,
}

impl Store {
    pub async fn idempotency_begin(
        &self,
        principal: &str,
        key: &str,
        request_hash: &str,
        now: Timestamp,
    ) -> Result<IdempotencyBegin> {
        on_pool!(self, pool => {
            let claimed = sqlx::query(
                "INSERT INTO idempotency_keys (principal, key, request_hash, created_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (principal, key) DO NOTHING",
            )
            .bind(principal)
            .bind(key)
            .bind(request_hash)
            .bind(millis(now))
            .execute(pool)
            .await?
            .rows_affected();
            if claimed == 1 {
                return Ok(IdempotencyBegin::Proceed);
            }
            let row: Option<(String, Option<i64>, Option<Vec<u8>>)> = sqlx::query_as(
                "SELECT request_hash, status_code, response_body FROM idempotency_keys WHERE principal = $1 AND key = $2",
            )
            .bind(principal)
            .bind(key)
            .fetch_optional(pool)
            .await?;
            Ok(match row {
                None => IdempotencyBegin::InProgress,
                Some((hash, _, _)) if hash != request_hash => IdempotencyBegin::Mismatch,
                Some((_, Some(status), Some(body))) => IdempotencyBegin::Replay { status: status as u16, body },
                Some(_) => IdempotencyBegin::InProgress,
            })
        })
    }

    /// Records the response of a request that ran under `key`.
    pub async fn idempotency_complete(&self, principal: &str, key: &str, status: u16, body: &[u8]) -> Result<()> {
        on_pool!(self, pool => {
            sqlx::query("UPDATE idempotency_keys SET status_code = $1, response_body = $2 WHERE principal = $3 AND key = $4")
                .bind(i64::from(status))
                .bind(body)
                .bind(principal)
                .bind(key)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Forgets a key whose request failed on our side, so that a retry runs.
    pub async fn idempotency_release(&self, principal: &str, key: &str) -> Result<()> {
        on_pool!(self, pool => {
            sqlx::query("DELETE FROM idempotency_keys WHERE principal = $1 AND key = $2 AND status_code IS NULL")
                .bind(principal)
                .bind(key)
                .execute(pool)
                .await?;
        });
        Ok(())
    }
}
