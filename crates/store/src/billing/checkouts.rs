//! Checkouts: the record of a purchase opened at a provider, before its
//! subscription arrives.
//!
//! - **No second purchase.** A checkout is refused with `subscription_exists`
//!   while the org has a live subscription, checked under the org's lock in
//!   the transaction that records it (with its `checkout.started` event).
//! - A checkout's id is also the idempotency key of the provider call that
//!   opens it; cancelling changes only a checkout that is still open.

use crate::sql::{FromSqlRow, Row, Sql, query, query_as};
use orgplane_core::subscription::Provider;
use orgplane_core::{DomainError, OrgId, Timestamp, UserId};
use sqlx::Pool;

use super::{corrupt_provider, sandbox_id};
use crate::tx::{lock_org, record_event, terminal_statuses};
use crate::{Actor, Backend, BeginWrite, Result, Store, StoreError, from_millis, millis, parse_id};

/// A checkout about to be opened at a provider.
#[derive(Debug, Clone)]
pub struct NewCheckout {
    pub org: OrgId,
    pub provider: Provider,
    pub plan: String,
    pub price_id: String,
    pub quantity: i64,
    /// Becomes the billing admin when the subscription arrives.
    pub started_by: Option<UserId>,
    pub success_url: String,
    pub cancel_url: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckoutStatus {
    Open,
    Paid,
    Canceled,
}

impl CheckoutStatus {
    fn parse(text: &str) -> Option<Self> {
        match text {
            "open" => Some(CheckoutStatus::Open),
            "paid" => Some(CheckoutStatus::Paid),
            "canceled" => Some(CheckoutStatus::Canceled),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckoutRecord {
    /// `chk_…`: also the idempotency key of the provider call.
    pub id: String,
    pub org_id: OrgId,
    pub provider: Provider,
    pub plan: String,
    pub price_id: String,
    pub quantity: i64,
    pub started_by: Option<UserId>,
    pub success_url: String,
    pub cancel_url: String,
    pub session_id: Option<String>,
    pub url: Option<String>,
    pub status: CheckoutStatus,
    pub created_at: Timestamp,
}

pub(super) const CHECKOUT_COLUMNS: &str = "id, org_id, provider, plan, price_id, quantity, started_by, success_url, cancel_url, session_id, url, status, created_at";

/// A `checkouts` row as stored (the columns of [`CHECKOUT_COLUMNS`]).
pub(super) struct CheckoutRow {
    id: String,
    org_id: String,
    provider: String,
    plan: String,
    price_id: String,
    quantity: i64,
    started_by: Option<String>,
    success_url: String,
    cancel_url: String,
    session_id: Option<String>,
    url: Option<String>,
    status: String,
    created_at: i64,
}

impl FromSqlRow for CheckoutRow {
    fn from_row<DB: Sql>(row: &Row<DB>) -> sqlx::Result<Self> {
        Ok(CheckoutRow {
            id: row.try_get("id")?,
            org_id: row.try_get("org_id")?,
            provider: row.try_get("provider")?,
            plan: row.try_get("plan")?,
            price_id: row.try_get("price_id")?,
            quantity: row.try_get("quantity")?,
            started_by: row.try_get("started_by")?,
            success_url: row.try_get("success_url")?,
            cancel_url: row.try_get("cancel_url")?,
            session_id: row.try_get("session_id")?,
            url: row.try_get("url")?,
            status: row.try_get("status")?,
            created_at: row.try_get("created_at")?,
        })
    }
}

pub(super) fn checkout_from_row(row: CheckoutRow) -> Result<CheckoutRecord> {
    Ok(CheckoutRecord {
        id: row.id,
        org_id: parse_id(&row.org_id)?,
        provider: Provider::parse(&row.provider).ok_or_else(|| corrupt_provider(&row.provider))?,
        plan: row.plan,
        price_id: row.price_id,
        quantity: row.quantity,
        started_by: row.started_by.as_deref().map(parse_id).transpose()?,
        success_url: row.success_url,
        cancel_url: row.cancel_url,
        session_id: row.session_id,
        url: row.url,
        status: CheckoutStatus::parse(&row.status)
            .ok_or_else(|| StoreError::Corrupt(format!("checkout status `{}`", row.status)))?,
        created_at: from_millis(row.created_at)?,
    })
}

impl Store {
    /// Records a checkout about to be opened. Refused with
    /// `subscription_exists` while the org has a live subscription (checked
    /// under the org's lock).
    pub async fn begin_checkout(&self, new: &NewCheckout, actor: &Actor, now: Timestamp) -> Result<CheckoutRecord> {
        let id = sandbox_id("chk");
        match &self.backend {
            Backend::Sqlite(pool) => begin_checkout(pool, &id, new, actor, now).await,
            Backend::Postgres(pool) => begin_checkout(pool, &id, new, actor, now).await,
        }?;
        self.checkout(&id).await?.ok_or_else(|| StoreError::Corrupt(format!("checkout {id} vanished")))
    }

    /// Records the provider's session for a checkout.
    pub async fn checkout_opened(&self, id: &str, session_id: &str, url: &str, now: Timestamp) -> Result<()> {
        match &self.backend {
            Backend::Sqlite(pool) => checkout_opened(pool, id, session_id, url, now).await,
            Backend::Postgres(pool) => checkout_opened(pool, id, session_id, url, now).await,
        }
    }

    /// Marks an open checkout abandoned (the provider refused it, or the
    /// buyer cancelled). `false` when it was no longer open.
    pub async fn cancel_checkout(&self, id: &str, now: Timestamp) -> Result<bool> {
        match &self.backend {
            Backend::Sqlite(pool) => cancel_checkout(pool, id, now).await,
            Backend::Postgres(pool) => cancel_checkout(pool, id, now).await,
        }
    }

    pub async fn checkout(&self, id: &str) -> Result<Option<CheckoutRecord>> {
        let row = match &self.backend {
            Backend::Sqlite(pool) => checkout(pool, id).await,
            Backend::Postgres(pool) => checkout(pool, id).await,
        }?;
        row.map(checkout_from_row).transpose()
    }

    /// The provider customer the org is known as, if any (so that a new
    /// checkout reuses it).
    pub async fn org_customer(&self, org: OrgId, provider: Provider) -> Result<Option<String>> {
        match &self.backend {
            Backend::Sqlite(pool) => org_customer(pool, org, provider).await,
            Backend::Postgres(pool) => org_customer(pool, org, provider).await,
        }
    }
}

async fn begin_checkout<DB: Sql>(
    pool: &Pool<DB>,
    id: &str,
    new: &NewCheckout,
    actor: &Actor,
    now: Timestamp,
) -> Result<()> {
    let mut tx = pool.begin_write().await?;
    lock_org(&mut tx, new.org).await?;
    let [first, second] = terminal_statuses();
    let live: Option<(String, String)> =
        query_as("SELECT status, provider FROM subscriptions WHERE org_id = $1 AND status NOT IN ($2, $3)")
            .bind(new.org.to_string())
            .bind(first)
            .bind(second)
            .fetch_optional(&mut *tx)
            .await?;
    if let Some((status, provider)) = live {
        return Err(DomainError::SubscriptionExists {
            message: format!(
                "this organization already has a live subscription ({status}, at {provider}); change its seats \
                 (PUT /v1/orgs/{org}/subscription/seats) or cancel it (POST /v1/orgs/{org}/subscription/cancel) instead of buying another",
                org = new.org
            ),
        }
        .into());
    }
    query(
        "INSERT INTO checkouts (id, org_id, provider, plan, price_id, quantity, started_by, success_url, cancel_url, status, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'open', $10, $10)",
    )
    .bind(id.to_owned())
    .bind(new.org.to_string())
    .bind(new.provider.as_str().to_owned())
    .bind(new.plan.clone())
    .bind(new.price_id.clone())
    .bind(new.quantity)
    .bind(new.started_by.map(|u| u.to_string()))
    .bind(new.success_url.clone())
    .bind(new.cancel_url.clone())
    .bind(millis(now))
    .execute(&mut *tx)
    .await?;
    let data = serde_json::json!({"org_id": new.org, "checkout_id": id, "provider": new.provider.as_str(), "plan": new.plan, "seats": new.quantity});
    record_event(&mut tx, new.org, "checkout.started", actor, data, now).await?;
    tx.commit().await?;
    Ok(())
}

async fn checkout_opened<DB: Sql>(
    pool: &Pool<DB>,
    id: &str,
    session_id: &str,
    url: &str,
    now: Timestamp,
) -> Result<()> {
    let _gate = crate::sql::Sql::write_permit(pool).await?;
    query("UPDATE checkouts SET session_id = $2, url = $3, updated_at = $4 WHERE id = $1")
        .bind(id.to_owned())
        .bind(session_id.to_owned())
        .bind(url.to_owned())
        .bind(millis(now))
        .execute(pool)
        .await?;
    Ok(())
}

async fn cancel_checkout<DB: Sql>(pool: &Pool<DB>, id: &str, now: Timestamp) -> Result<bool> {
    let _gate = crate::sql::Sql::write_permit(pool).await?;
    let done = query("UPDATE checkouts SET status = 'canceled', updated_at = $2 WHERE id = $1 AND status = 'open'")
        .bind(id.to_owned())
        .bind(millis(now))
        .execute(pool)
        .await?;
    Ok(done.rows_affected() == 1)
}

async fn checkout<DB: Sql>(pool: &Pool<DB>, id: &str) -> Result<Option<CheckoutRow>> {
    let row = query_as(sqlx::AssertSqlSafe(format!("SELECT {CHECKOUT_COLUMNS} FROM checkouts WHERE id = $1")))
        .bind(id.to_owned())
        .fetch_optional(pool)
        .await?;
    Ok(row)
}

async fn org_customer<DB: Sql>(pool: &Pool<DB>, org: OrgId, provider: Provider) -> Result<Option<String>> {
    let row: Option<(String,)> = query_as(
        "SELECT provider_customer_id FROM subscriptions WHERE org_id = $1 AND provider = $2 AND provider_customer_id IS NOT NULL \
         UNION ALL SELECT customer_id FROM billing_customers WHERE org_id = $1 AND provider = $2",
    )
    .bind(org.to_string())
    .bind(provider.as_str().to_owned())
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(customer,)| customer))
}
