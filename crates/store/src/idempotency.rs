//! Stored responses for `Idempotency-Key`: a repeat with the same key and
//! body gets the first response; the same key with another body is refused.
//!
//! The key is claimed by an insert (unique on principal + key) before the
//! request runs, so concurrent repeats can't both execute. A claim is a
//! lease: `created_at` is when the current claim was taken, and a claim
//! that is still unfinished `lease` after that belonged to a request that
//! can no longer finish (its replica was killed, or it outlived the request
//! timeout). A retry then takes the claim over with one conditional UPDATE
//! on the `created_at` it saw, so exactly one of several concurrent retries
//! wins. The claim time is also the claim's identity: completing or
//! releasing a claim only touches the row if it still carries that time, so
//! a request whose claim was taken over can't overwrite its successor.
//!
//! Records older than a day are deleted by [`Store::idempotency_sweep`].

use std::time::Duration;

use orgplane_core::Timestamp;

use sqlx::Pool;

use crate::sql::{Sql, query, query_as};
use crate::{Backend, Result, Store, from_millis, millis};

/// What to do with a request that carries an `Idempotency-Key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotencyBegin {
    /// The key is claimed by this request (first use, or a takeover of an
    /// expired claim): run the request, then [`Store::idempotency_complete`]
    /// or [`Store::idempotency_release`] with this `claimed_at`.
    Proceed { claimed_at: Timestamp },
    /// Seen before with the same request: replay this response.
    Replay { status: u16, body: Vec<u8> },
    /// Seen before with a different request.
    Mismatch,
    /// Another request holds the key until `until` (its lease's end).
    InProgress { until: Timestamp },
}

/// A stored key: request hash, status and body once finished, claim time.
type KeyRow = (String, Option<i64>, Option<Vec<u8>>, i64);

impl Store {
    /// Claims `key` for a request, or says why not. `now` must be later
    /// than any earlier claim of the key by more than `lease` for a
    /// takeover, which holds for a wall clock and a lease of a second or
    /// more.
    pub async fn idempotency_begin(
        &self,
        principal: &str,
        key: &str,
        request_hash: &str,
        now: Timestamp,
        lease: Duration,
    ) -> Result<IdempotencyBegin> {
        match &self.backend {
            Backend::Sqlite(pool) => begin(pool, principal, key, request_hash, now, lease).await,
            Backend::Postgres(pool) => begin(pool, principal, key, request_hash, now, lease).await,
        }
    }

    /// Records the response of a request that ran under the claim taken at
    /// `claimed_at`. Returns false when the claim was no longer ours (its
    /// lease ran out and another request took it over).
    pub async fn idempotency_complete(
        &self,
        principal: &str,
        key: &str,
        claimed_at: Timestamp,
        status: u16,
        body: &[u8],
    ) -> Result<bool> {
        match &self.backend {
            Backend::Sqlite(pool) => complete(pool, principal, key, claimed_at, status, body).await,
            Backend::Postgres(pool) => complete(pool, principal, key, claimed_at, status, body).await,
        }
    }

    /// Forgets the claim taken at `claimed_at` by a request that failed on
    /// our side, so that a retry runs.
    pub async fn idempotency_release(&self, principal: &str, key: &str, claimed_at: Timestamp) -> Result<()> {
        match &self.backend {
            Backend::Sqlite(pool) => release(pool, principal, key, claimed_at).await,
            Backend::Postgres(pool) => release(pool, principal, key, claimed_at).await,
        }
    }

    /// Deletes every record (stored response or claim) taken before
    /// `before`; returns how many. A key is remembered for a day: after
    /// that, a repeat runs again.
    pub async fn idempotency_sweep(&self, before: Timestamp) -> Result<u64> {
        match &self.backend {
            Backend::Sqlite(pool) => sweep(pool, before).await,
            Backend::Postgres(pool) => sweep(pool, before).await,
        }
    }
}

async fn begin<DB: Sql>(
    pool: &Pool<DB>,
    principal: &str,
    key: &str,
    request_hash: &str,
    now: Timestamp,
    lease: Duration,
) -> Result<IdempotencyBegin> {
    let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
    // A row can change between our statements (completed, released,
    // taken over): look again a few times; each change is progress made
    // by another request, so this ends quickly.
    for _ in 0..4 {
        let gate = crate::sql::Sql::write_permit(pool).await?;
        let claimed = query(
            "INSERT INTO idempotency_keys (principal, key, request_hash, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (principal, key) DO NOTHING",
        )
        .bind(principal.to_owned())
        .bind(key.to_owned())
        .bind(request_hash.to_owned())
        .bind(millis(now))
        .execute(pool)
        .await?
        .rows_affected();
        // The gate is for the one statement: the takeover below takes it again.
        drop(gate);
        if claimed == 1 {
            return Ok(IdempotencyBegin::Proceed { claimed_at: now });
        }
        let row: Option<KeyRow> = query_as(
            "SELECT request_hash, status_code, response_body, created_at FROM idempotency_keys \
             WHERE principal = $1 AND key = $2",
        )
        .bind(principal.to_owned())
        .bind(key.to_owned())
        .fetch_optional(pool)
        .await?;
        let Some((hash, status, body, claimed_at)) = row else {
            // Released since our insert: claim it again.
            continue;
        };
        if hash != request_hash {
            return Ok(IdempotencyBegin::Mismatch);
        }
        if let (Some(status), Some(body)) = (status, body) {
            return Ok(IdempotencyBegin::Replay { status: u16::try_from(status).unwrap_or(500), body });
        }
        let expires = claimed_at.saturating_add(lease_ms);
        if expires > millis(now) {
            return Ok(IdempotencyBegin::InProgress { until: from_millis(expires)? });
        }
        // The lease ran out: take the claim over, unless another retry
        // (or the late original) changed the row since we read it.
        let _gate = crate::sql::Sql::write_permit(pool).await?;
        let taken = query(
            "UPDATE idempotency_keys SET created_at = $1 \
             WHERE principal = $2 AND key = $3 AND created_at = $4 AND status_code IS NULL",
        )
        .bind(millis(now))
        .bind(principal.to_owned())
        .bind(key.to_owned())
        .bind(claimed_at)
        .execute(pool)
        .await?
        .rows_affected();
        if taken == 1 {
            return Ok(IdempotencyBegin::Proceed { claimed_at: now });
        }
    }
    // Still changing under us: someone else is working on this key.
    Ok(IdempotencyBegin::InProgress { until: now + lease })
}

async fn complete<DB: Sql>(
    pool: &Pool<DB>,
    principal: &str,
    key: &str,
    claimed_at: Timestamp,
    status: u16,
    body: &[u8],
) -> Result<bool> {
    let _gate = crate::sql::Sql::write_permit(pool).await?;
    let updated = query(
        "UPDATE idempotency_keys SET status_code = $1, response_body = $2 \
         WHERE principal = $3 AND key = $4 AND created_at = $5 AND status_code IS NULL",
    )
    .bind(i64::from(status))
    .bind(body.to_vec())
    .bind(principal.to_owned())
    .bind(key.to_owned())
    .bind(millis(claimed_at))
    .execute(pool)
    .await?
    .rows_affected();
    Ok(updated == 1)
}

async fn release<DB: Sql>(pool: &Pool<DB>, principal: &str, key: &str, claimed_at: Timestamp) -> Result<()> {
    let _gate = crate::sql::Sql::write_permit(pool).await?;
    query(
        "DELETE FROM idempotency_keys \
         WHERE principal = $1 AND key = $2 AND created_at = $3 AND status_code IS NULL",
    )
    .bind(principal.to_owned())
    .bind(key.to_owned())
    .bind(millis(claimed_at))
    .execute(pool)
    .await?;
    Ok(())
}

async fn sweep<DB: Sql>(pool: &Pool<DB>, before: Timestamp) -> Result<u64> {
    let _gate = crate::sql::Sql::write_permit(pool).await?;
    let deleted = query("DELETE FROM idempotency_keys WHERE created_at < $1")
        .bind(millis(before))
        .execute(pool)
        .await?
        .rows_affected();
    Ok(deleted)
}
