//! The sandbox provider's invoices: one per paid period of a sandbox
//! subscription, what Stripe would list for it.
//!
//! - Written in the transaction that pays the checkout or renews the period
//!   (after the subscription row's update, which serializes them), so a
//!   period is invoiced once and never lost; `UNIQUE (subscription_id,
//!   period_start)` holds it in the schema too.
//! - A sandbox seat costs [`SANDBOX_SEAT_AMOUNT`] cents of
//!   [`SANDBOX_CURRENCY`] per period: the sandbox has no real prices.
//! - Listed newest first; ids are time-ordered, so id order is period order.

use sqlx::{Pool, Transaction};

use crate::sql::{FromSqlRow, Row, Sql, query, query_as};
use crate::tx::ensure_cursor_in_list;
use crate::{Backend, Page, PageRequest, Result, Store, from_millis};
use orgplane_core::Timestamp;

use super::sandbox_id;

/// What one seat of a sandbox subscription costs per period, in cents.
pub const SANDBOX_SEAT_AMOUNT: i64 = 1_000;
pub const SANDBOX_CURRENCY: &str = "usd";

/// One invoice of a sandbox subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxInvoice {
    pub id: String,
    pub subscription_id: String,
    /// `<subscription id>-0001`, counting the subscription's invoices.
    pub number: String,
    pub amount: i64,
    pub currency: String,
    pub period_start: Timestamp,
    pub period_end: Timestamp,
    pub created_at: Timestamp,
}

const INVOICE_COLUMNS: &str = "id, subscription_id, number, amount, currency, period_start, period_end, created_at";

struct InvoiceRow {
    id: String,
    subscription_id: String,
    number: String,
    amount: i64,
    currency: String,
    period_start: i64,
    period_end: i64,
    created_at: i64,
}

impl FromSqlRow for InvoiceRow {
    fn from_row<DB: Sql>(row: &Row<DB>) -> sqlx::Result<Self> {
        Ok(InvoiceRow {
            id: row.try_get("id")?,
            subscription_id: row.try_get("subscription_id")?,
            number: row.try_get("number")?,
            amount: row.try_get("amount")?,
            currency: row.try_get("currency")?,
            period_start: row.try_get("period_start")?,
            period_end: row.try_get("period_end")?,
            created_at: row.try_get("created_at")?,
        })
    }
}

fn invoice_from_row(row: InvoiceRow) -> Result<SandboxInvoice> {
    Ok(SandboxInvoice {
        id: row.id,
        subscription_id: row.subscription_id,
        number: row.number,
        amount: row.amount,
        currency: row.currency,
        period_start: from_millis(row.period_start)?,
        period_end: from_millis(row.period_end)?,
        created_at: from_millis(row.created_at)?,
    })
}

impl Store {
    /// The sandbox subscription's invoices, newest first.
    pub async fn sandbox_invoices(&self, subscription_id: &str, page: &PageRequest) -> Result<Page<SandboxInvoice>> {
        let rows = match &self.backend {
            Backend::Sqlite(pool) => sandbox_invoices(pool, subscription_id, page).await,
            Backend::Postgres(pool) => sandbox_invoices(pool, subscription_id, page).await,
        }?;
        let data = rows.into_iter().map(invoice_from_row).collect::<Result<Vec<_>>>()?;
        Ok(Page::from_rows(data, page.limit))
    }
}

async fn sandbox_invoices<DB: Sql>(
    pool: &Pool<DB>,
    subscription_id: &str,
    page: &PageRequest,
) -> Result<Vec<InvoiceRow>> {
    let cursor = page.starting_after.as_deref().unwrap_or_default();
    let exists = "SELECT 1 FROM sandbox_invoices WHERE id = $1 AND subscription_id = $2";
    ensure_cursor_in_list(pool, page, exists, &[cursor, subscription_id]).await?;
    let before = page.starting_after.clone().unwrap_or_else(|| "~".to_owned());
    let rows = query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {INVOICE_COLUMNS} FROM sandbox_invoices WHERE subscription_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3"
    )))
    .bind(subscription_id.to_owned())
    .bind(before)
    .bind(i64::from(page.limit) + 1)
    .fetch_all(pool)
    .await?;
    Ok(rows)
}

/// The subscription as [`invoice_paid_periods`] needs it.
pub(super) struct Invoiced<'a> {
    pub id: &'a str,
    pub quantity: i64,
    pub current_period_end: i64,
}

/// Invoices each period of `sub` that is paid (ends by its current period
/// end) and not invoiced yet, oldest first; a subscription with no invoice
/// gets one for its current period. Runs in the transaction that paid or
/// renewed, after the subscription row's update (which serializes them).
pub(super) async fn invoice_paid_periods<DB: Sql>(
    tx: &mut Transaction<'_, DB>,
    sub: Invoiced<'_>,
    period_ms: i64,
    now_ms: i64,
) -> Result<()> {
    let (last_end, count): (Option<i64>, i64) =
        query_as("SELECT MAX(period_end), COUNT(*) FROM sandbox_invoices WHERE subscription_id = $1")
            .bind(sub.id.to_owned())
            .fetch_one(&mut **tx)
            .await?;
    let period_ms = period_ms.max(1);
    let mut start = last_end.unwrap_or(sub.current_period_end - period_ms);
    let mut number = count;
    while start < sub.current_period_end {
        number += 1;
        query(
            "INSERT INTO sandbox_invoices (id, subscription_id, number, amount, currency, period_start, period_end, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (subscription_id, period_start) DO NOTHING",
        )
        .bind(sandbox_id("sbxin"))
        .bind(sub.id.to_owned())
        .bind(format!("{}-{number:04}", sub.id))
        .bind(sub.quantity * SANDBOX_SEAT_AMOUNT)
        .bind(SANDBOX_CURRENCY.to_owned())
        .bind(start)
        .bind(start + period_ms)
        .bind(now_ms)
        .execute(&mut **tx)
        .await?;
        start += period_ms;
    }
    Ok(())
}
