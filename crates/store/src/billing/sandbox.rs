//! The sandbox provider's own state: what Stripe would hold on its side
//! for a subscription bought through the sandbox.
//!
//! - Paying a checkout creates its subscription once: paying twice returns
//!   the first payment; a cancelled checkout can't be paid.
//! - Each change is one statement; an ended subscription can't change
//!   (`conflict`), except by a refresh, which leaves it as it is.

use crate::sql::{FromSqlRow, Row, Sql, query, query_as};
use orgplane_core::subscription::SubscriptionStatus;
use orgplane_core::{DomainError, OrgId, Timestamp};
use sqlx::Pool;

use super::checkouts::{CHECKOUT_COLUMNS, CheckoutRecord, CheckoutRow, CheckoutStatus, checkout_from_row};
use super::invoices::{Invoiced, invoice_paid_periods};
use super::sandbox_id;

use crate::{Backend, BeginWrite, Result, Store, StoreError, from_millis, millis, parse_id};

/// The sandbox provider's record of one subscription (what Stripe would
/// hold on its side).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxSubscription {
    pub id: String,
    pub checkout_id: String,
    pub org_id: OrgId,
    pub customer_id: String,
    pub price_id: String,
    pub quantity: i64,
    pub status: SubscriptionStatus,
    pub cancel_at_period_end: bool,
    pub current_period_end: Timestamp,
    pub updated_at: Timestamp,
}

/// A change the sandbox provider's API makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SandboxChange {
    CancelAtPeriodEnd(bool),
    CancelNow,
    Quantity(i64),
    /// Lets time pass: a period that ended renews, or ends the subscription
    /// when it was set to cancel.
    Refresh,
}

/// A paid sandbox checkout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxPayment {
    pub checkout: CheckoutRecord,
    pub subscription: SandboxSubscription,
}

pub(super) const SANDBOX_COLUMNS: &str = "id, checkout_id, org_id, customer_id, price_id, quantity, status, cancel_at_period_end, current_period_end, updated_at";

/// A `sandbox_subscriptions` row as stored (the columns of [`SANDBOX_COLUMNS`]).
pub(super) struct SandboxRow {
    id: String,
    checkout_id: String,
    org_id: String,
    customer_id: String,
    price_id: String,
    quantity: i64,
    status: String,
    cancel_at_period_end: bool,
    current_period_end: i64,
    updated_at: i64,
}

impl FromSqlRow for SandboxRow {
    fn from_row<DB: Sql>(row: &Row<DB>) -> sqlx::Result<Self> {
        Ok(SandboxRow {
            id: row.try_get("id")?,
            checkout_id: row.try_get("checkout_id")?,
            org_id: row.try_get("org_id")?,
            customer_id: row.try_get("customer_id")?,
            price_id: row.try_get("price_id")?,
            quantity: row.try_get("quantity")?,
            status: row.try_get("status")?,
            cancel_at_period_end: row.try_get("cancel_at_period_end")?,
            current_period_end: row.try_get("current_period_end")?,
            updated_at: row.try_get("updated_at")?,
        })
    }
}

pub(super) fn sandbox_from_row(row: SandboxRow) -> Result<SandboxSubscription> {
    Ok(SandboxSubscription {
        id: row.id,
        checkout_id: row.checkout_id,
        org_id: parse_id(&row.org_id)?,
        customer_id: row.customer_id,
        price_id: row.price_id,
        quantity: row.quantity,
        status: SubscriptionStatus::parse(&row.status)
            .ok_or_else(|| StoreError::Corrupt(format!("sandbox subscription status `{}`", row.status)))?,
        cancel_at_period_end: row.cancel_at_period_end,
        current_period_end: from_millis(row.current_period_end)?,
        updated_at: from_millis(row.updated_at)?,
    })
}

impl Store {
    /// Pays an open sandbox checkout: the sandbox provider creates its
    /// subscription, active for `period`. Paying twice returns the first
    /// payment; a cancelled checkout can't be paid.
    pub async fn sandbox_pay(
        &self,
        checkout_id: &str,
        now: Timestamp,
        period: time::Duration,
    ) -> Result<SandboxPayment> {
        match &self.backend {
            Backend::Sqlite(pool) => sandbox_pay(pool, checkout_id, now, period).await,
            Backend::Postgres(pool) => sandbox_pay(pool, checkout_id, now, period).await,
        }
    }

    pub async fn sandbox_subscription(&self, id: &str) -> Result<Option<SandboxSubscription>> {
        let row = match &self.backend {
            Backend::Sqlite(pool) => sandbox_subscription(pool, id).await,
            Backend::Postgres(pool) => sandbox_subscription(pool, id).await,
        }?;
        row.map(sandbox_from_row).transpose()
    }

    /// Changes a sandbox subscription as the sandbox provider's API would,
    /// in one statement. An ended subscription can't change (`conflict`),
    /// except by a refresh, which leaves it as it is.
    pub async fn sandbox_change(
        &self,
        id: &str,
        change: SandboxChange,
        now: Timestamp,
        period: time::Duration,
    ) -> Result<SandboxSubscription> {
        let row = match &self.backend {
            Backend::Sqlite(pool) => sandbox_change(pool, id, change, now, period).await,
            Backend::Postgres(pool) => sandbox_change(pool, id, change, now, period).await,
        }?;
        self.sandbox_changed(id, row).await
    }

    /// The subscription a conditional sandbox update returned, or why it
    /// returned none: no such subscription, or one that has ended.
    pub(super) async fn sandbox_changed(&self, id: &str, row: Option<SandboxRow>) -> Result<SandboxSubscription> {
        match row {
            Some(row) => sandbox_from_row(row),
            None => match self.sandbox_subscription(id).await? {
                None => Err(DomainError::NotFound { what: "sandbox subscription" }.into()),
                Some(_) => Err(DomainError::conflict("this subscription has ended; start a new checkout").into()),
            },
        }
    }
}

async fn sandbox_pay<DB: Sql>(
    pool: &Pool<DB>,
    checkout_id: &str,
    now: Timestamp,
    period: time::Duration,
) -> Result<SandboxPayment> {
    let mut tx = pool.begin_write().await?;
    let paid = query(
        "UPDATE checkouts SET status = 'paid', updated_at = $2 WHERE id = $1 AND provider = 'sandbox' AND status = 'open'",
    )
    .bind(checkout_id.to_owned())
    .bind(millis(now))
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let row: Option<CheckoutRow> = query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {CHECKOUT_COLUMNS} FROM checkouts WHERE id = $1 AND provider = 'sandbox'"
    )))
    .bind(checkout_id.to_owned())
    .fetch_optional(&mut *tx)
    .await?;
    let checkout = checkout_from_row(row.ok_or(DomainError::NotFound { what: "sandbox checkout" })?)?;
    if paid == 1 {
        query(
            "INSERT INTO sandbox_subscriptions (id, checkout_id, org_id, customer_id, price_id, quantity, status, \
             cancel_at_period_end, current_period_end, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, 'active', FALSE, $7, $8, $8)",
        )
        .bind(sandbox_id("sbxsub"))
        .bind(checkout_id.to_owned())
        .bind(checkout.org_id.to_string())
        .bind(format!("sbxcus_{}", &checkout.org_id.to_string()[4..]))
        .bind(checkout.price_id.clone())
        .bind(checkout.quantity)
        .bind(millis(now + period))
        .bind(millis(now))
        .execute(&mut *tx)
        .await?;
    } else if checkout.status == CheckoutStatus::Canceled {
        return Err(DomainError::conflict("this sandbox checkout was cancelled; start a new checkout").into());
    }
    let row: SandboxRow = query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {SANDBOX_COLUMNS} FROM sandbox_subscriptions WHERE checkout_id = $1"
    )))
    .bind(checkout_id.to_owned())
    .fetch_one(&mut *tx)
    .await?;
    if paid == 1 {
        let sub = Invoiced { id: &row.id, quantity: row.quantity, current_period_end: row.current_period_end };
        invoice_paid_periods(&mut tx, sub, period_ms(period), millis(now)).await?;
    }
    tx.commit().await?;
    Ok(SandboxPayment { checkout, subscription: sandbox_from_row(row)? })
}

async fn sandbox_subscription<DB: Sql>(pool: &Pool<DB>, id: &str) -> Result<Option<SandboxRow>> {
    let row =
        query_as(sqlx::AssertSqlSafe(format!("SELECT {SANDBOX_COLUMNS} FROM sandbox_subscriptions WHERE id = $1")))
            .bind(id.to_owned())
            .fetch_optional(pool)
            .await?;
    Ok(row)
}

/// The sandbox subscription after `change`, in one statement; `None` when
/// there is no such subscription, or (except for a refresh) it has ended.
async fn sandbox_change<DB: Sql>(
    pool: &Pool<DB>,
    id: &str,
    change: SandboxChange,
    now: Timestamp,
    period: time::Duration,
) -> Result<Option<SandboxRow>> {
    let now_ms = millis(now);
    let row = match change {
        SandboxChange::CancelAtPeriodEnd(cancel) => {
            let _gate = crate::sql::Sql::write_permit(pool).await?;
            query_as(sqlx::AssertSqlSafe(format!(
                "UPDATE sandbox_subscriptions SET cancel_at_period_end = $2, updated_at = $3 \
                 WHERE id = $1 AND status <> 'canceled' RETURNING {SANDBOX_COLUMNS}"
            )))
            .bind(id.to_owned())
            .bind(cancel)
            .bind(now_ms)
            .fetch_optional(pool)
            .await?
        }
        SandboxChange::CancelNow => {
            let _gate = crate::sql::Sql::write_permit(pool).await?;
            query_as(sqlx::AssertSqlSafe(format!(
                "UPDATE sandbox_subscriptions SET status = 'canceled', cancel_at_period_end = FALSE, current_period_end = $2, updated_at = $2 \
                 WHERE id = $1 AND status <> 'canceled' RETURNING {SANDBOX_COLUMNS}"
            )))
            .bind(id.to_owned())
            .bind(now_ms)
            .fetch_optional(pool)
            .await?
        }
        SandboxChange::Quantity(quantity) => {
            let _gate = crate::sql::Sql::write_permit(pool).await?;
            query_as(sqlx::AssertSqlSafe(format!(
                "UPDATE sandbox_subscriptions SET quantity = $2, updated_at = $3 \
                 WHERE id = $1 AND status <> 'canceled' RETURNING {SANDBOX_COLUMNS}"
            )))
            .bind(id.to_owned())
            .bind(quantity)
            .bind(now_ms)
            .fetch_optional(pool)
            .await?
        }
        SandboxChange::Refresh => return sandbox_refresh(pool, id, now_ms, period_ms(period)).await,
    };
    Ok(row)
}

fn period_ms(period: time::Duration) -> i64 {
    i64::try_from(period.whole_milliseconds()).unwrap_or(i64::MAX)
}

/// Lets time pass, in one transaction: a period that ended renews (whole
/// periods at a time) and each renewed period is invoiced, or the
/// subscription ends when it was set to cancel.
async fn sandbox_refresh<DB: Sql>(
    pool: &Pool<DB>,
    id: &str,
    now_ms: i64,
    period_ms: i64,
) -> Result<Option<SandboxRow>> {
    let mut tx = pool.begin_write().await?;
    let row: Option<SandboxRow> = query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE sandbox_subscriptions SET \
         status = CASE WHEN current_period_end <= $2 AND cancel_at_period_end THEN 'canceled' ELSE status END, \
         current_period_end = CASE WHEN current_period_end <= $2 AND NOT cancel_at_period_end AND status <> 'canceled' \
             THEN current_period_end + ((($2 - current_period_end) / $3) + 1) * $3 ELSE current_period_end END, \
         cancel_at_period_end = CASE WHEN current_period_end <= $2 THEN FALSE ELSE cancel_at_period_end END, \
         updated_at = CASE WHEN current_period_end <= $2 THEN $2 ELSE updated_at END \
         WHERE id = $1 RETURNING {SANDBOX_COLUMNS}"
    )))
    .bind(id.to_owned())
    .bind(now_ms)
    .bind(period_ms)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(row) = row.as_ref().filter(|r| r.status != "canceled") {
        let sub = Invoiced { id: &row.id, quantity: row.quantity, current_period_end: row.current_period_end };
        invoice_paid_periods(&mut tx, sub, period_ms, now_ms).await?;
    }
    tx.commit().await?;
    Ok(row)
}
