//! Plan changes and trials: the one-trial-per-org claim, and the sandbox
//! provider's side of a plan change.
//!
//! - **One trial per org, ever.** A checkout that would give a trial claims
//!   the org's `org_trials` row; the primary key refuses a second claim
//!   (also when two checkouts race), and so does a subscription of the org
//!   that already had a trial. A claim is released only for the checkout
//!   that made it, when the provider refused that checkout.
//! - A sandbox plan change is one statement; an ended subscription can't
//!   change (`conflict`).
//!
//! Local subscription state never changes here: the server applies the
//! provider's answer through the one apply path (`snapshots`, `ingest`).

use orgplane_core::{OrgId, Timestamp};
use sqlx::Pool;

use super::sandbox::{SANDBOX_COLUMNS, SandboxRow, SandboxSubscription};
use crate::sql::{Sql, query, query_as};
use crate::{Backend, Result, Store, millis};

impl Store {
    /// Claims the org's one trial for `checkout_id`: `true` when this
    /// checkout may give `days` of trial, `false` when the org had its
    /// trial (claimed by an earlier checkout, or a subscription of the org
    /// already had a trial end).
    pub async fn claim_trial(
        &self,
        org: OrgId,
        checkout_id: &str,
        plan: &str,
        days: u32,
        now: Timestamp,
    ) -> Result<bool> {
        match &self.backend {
            Backend::Sqlite(pool) => claim_trial(pool, org, checkout_id, plan, days, now).await,
            Backend::Postgres(pool) => claim_trial(pool, org, checkout_id, plan, days, now).await,
        }
    }

    /// Gives the trial back when the checkout that claimed it was refused
    /// by the provider (no trial was given). A claim of another checkout
    /// is left alone.
    pub async fn release_trial(&self, org: OrgId, checkout_id: &str) -> Result<()> {
        match &self.backend {
            Backend::Sqlite(pool) => release_trial(pool, org, checkout_id).await,
            Backend::Postgres(pool) => release_trial(pool, org, checkout_id).await,
        }
    }

    /// Moves a sandbox subscription to `price_id` (and `quantity`, when
    /// given), as the sandbox provider's API would: at once, in one
    /// statement. An ended subscription can't change (`conflict`).
    pub async fn sandbox_change_price(
        &self,
        id: &str,
        price_id: &str,
        quantity: Option<i64>,
        now: Timestamp,
    ) -> Result<SandboxSubscription> {
        let row = match &self.backend {
            Backend::Sqlite(pool) => sandbox_change_price(pool, id, price_id, quantity, now).await,
            Backend::Postgres(pool) => sandbox_change_price(pool, id, price_id, quantity, now).await,
        }?;
        self.sandbox_changed(id, row).await
    }
}

async fn claim_trial<DB: Sql>(
    pool: &Pool<DB>,
    org: OrgId,
    checkout_id: &str,
    plan: &str,
    days: u32,
    now: Timestamp,
) -> Result<bool> {
    let _gate = crate::sql::Sql::write_permit(pool).await?;
    let claimed = query(
        "INSERT INTO org_trials (org_id, checkout_id, plan, days, claimed_at) \
         SELECT $1, $2, $3, $4, $5 WHERE NOT EXISTS \
         (SELECT 1 FROM subscriptions WHERE org_id = $1 AND trial_end IS NOT NULL) \
         ON CONFLICT (org_id) DO NOTHING",
    )
    .bind(org.to_string())
    .bind(checkout_id.to_owned())
    .bind(plan.to_owned())
    .bind(i64::from(days))
    .bind(millis(now))
    .execute(pool)
    .await?;
    Ok(claimed.rows_affected() == 1)
}

async fn release_trial<DB: Sql>(pool: &Pool<DB>, org: OrgId, checkout_id: &str) -> Result<()> {
    let _gate = crate::sql::Sql::write_permit(pool).await?;
    query("DELETE FROM org_trials WHERE org_id = $1 AND checkout_id = $2")
        .bind(org.to_string())
        .bind(checkout_id.to_owned())
        .execute(pool)
        .await?;
    Ok(())
}

async fn sandbox_change_price<DB: Sql>(
    pool: &Pool<DB>,
    id: &str,
    price_id: &str,
    quantity: Option<i64>,
    now: Timestamp,
) -> Result<Option<SandboxRow>> {
    let _gate = crate::sql::Sql::write_permit(pool).await?;
    let row = query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE sandbox_subscriptions SET price_id = $2, quantity = COALESCE($3, quantity), updated_at = $4 \
         WHERE id = $1 AND status <> 'canceled' RETURNING {SANDBOX_COLUMNS}"
    )))
    .bind(id.to_owned())
    .bind(price_id.to_owned())
    .bind(quantity)
    .bind(millis(now))
    .fetch_optional(pool)
    .await?;
    Ok(row)
}
