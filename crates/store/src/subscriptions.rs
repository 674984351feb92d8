//! The org's one subscription as stored: reading it. Applying provider
//! state lives in `billing.rs`.

use orgplane_core::subscription::{Provider, SubscriptionStatus};
use orgplane_core::{OrgId, SubscriptionId, Timestamp, UserId};

use sqlx::Pool;

use crate::sql::{FromSqlRow, Row, Sql, query_as};
use crate::{Backend, Result, Store, StoreError, from_millis, parse_id};

/// A subscription row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSubscription {
    pub id: SubscriptionId,
    pub org_id: OrgId,
    pub provider: Provider,
    pub provider_subscription_id: String,
    pub provider_customer_id: Option<String>,
    pub status: SubscriptionStatus,
    pub price_id: Option<String>,
    pub item_id: Option<String>,
    pub quantity: i64,
    pub current_period_end: Option<Timestamp>,
    pub cancel_at_period_end: bool,
    pub trial_end: Option<Timestamp>,
    pub past_due_since: Option<Timestamp>,
    pub portal_url: Option<String>,
    pub observed_at: Timestamp,
}

/// A `subscriptions` row as stored, read from the columns of
/// [`SELECT_SUBSCRIPTION_BY_ORG`] in their order.
pub(crate) struct SubscriptionRow {
    id: String,
    org_id: String,
    provider: String,
    provider_subscription_id: String,
    provider_customer_id: Option<String>,
    status: String,
    price_id: Option<String>,
    item_id: Option<String>,
    quantity: i64,
    current_period_end: Option<i64>,
    cancel_at_period_end: bool,
    trial_end: Option<i64>,
    past_due_since: Option<i64>,
    portal_url: Option<String>,
    observed_at: i64,
}

impl FromSqlRow for SubscriptionRow {
    fn from_row<DB: Sql>(row: &Row<DB>) -> sqlx::Result<Self> {
        Ok(SubscriptionRow {
            id: row.try_get(0)?,
            org_id: row.try_get(1)?,
            provider: row.try_get(2)?,
            provider_subscription_id: row.try_get(3)?,
            provider_customer_id: row.try_get(4)?,
            status: row.try_get(5)?,
            price_id: row.try_get(6)?,
            item_id: row.try_get(7)?,
            quantity: row.try_get(8)?,
            current_period_end: row.try_get(9)?,
            cancel_at_period_end: row.try_get(10)?,
            trial_end: row.try_get(11)?,
            past_due_since: row.try_get(12)?,
            portal_url: row.try_get(13)?,
            observed_at: row.try_get(14)?,
        })
    }
}

pub(crate) const SELECT_SUBSCRIPTION_BY_ORG: &str = "SELECT id, org_id, provider, provider_subscription_id, provider_customer_id, status, price_id, item_id, quantity, current_period_end, cancel_at_period_end, trial_end, past_due_since, portal_url, observed_at FROM subscriptions WHERE org_id = $1";

pub(crate) fn subscription_from_row(row: SubscriptionRow) -> Result<StoredSubscription> {
    let opt = |v: Option<i64>| v.map(from_millis).transpose();
    Ok(StoredSubscription {
        id: parse_id(&row.id)?,
        org_id: parse_id(&row.org_id)?,
        provider: Provider::parse(&row.provider)
            .ok_or_else(|| StoreError::Corrupt(format!("provider `{}`", row.provider)))?,
        provider_subscription_id: row.provider_subscription_id,
        provider_customer_id: row.provider_customer_id,
        status: SubscriptionStatus::parse(&row.status)
            .ok_or_else(|| StoreError::Corrupt(format!("subscription status `{}`", row.status)))?,
        price_id: row.price_id,
        item_id: row.item_id,
        quantity: row.quantity,
        current_period_end: opt(row.current_period_end)?,
        cancel_at_period_end: row.cancel_at_period_end,
        trial_end: opt(row.trial_end)?,
        past_due_since: opt(row.past_due_since)?,
        portal_url: row.portal_url,
        observed_at: from_millis(row.observed_at)?,
    })
}

impl Store {
    /// The org's subscription, live or ended, if it ever had one.
    pub async fn subscription(&self, org: OrgId) -> Result<Option<StoredSubscription>> {
        let row = match &self.backend {
            Backend::Sqlite(pool) => subscription(pool, org).await,
            Backend::Postgres(pool) => subscription(pool, org).await,
        }?;
        row.map(subscription_from_row).transpose()
    }

    /// The org's billing admin, if one is set.
    pub async fn billing_admin(&self, org: OrgId) -> Result<Option<UserId>> {
        let admin = match &self.backend {
            Backend::Sqlite(pool) => billing_admin(pool, org).await,
            Backend::Postgres(pool) => billing_admin(pool, org).await,
        }?;
        admin.as_deref().map(parse_id).transpose()
    }
}

async fn subscription<DB: Sql>(pool: &Pool<DB>, org: OrgId) -> Result<Option<SubscriptionRow>> {
    Ok(query_as(SELECT_SUBSCRIPTION_BY_ORG).bind(org.to_string()).fetch_optional(pool).await?)
}

/// The billing admin's user id as stored (`None`: no such org, or none set).
async fn billing_admin<DB: Sql>(pool: &Pool<DB>, org: OrgId) -> Result<Option<String>> {
    let row: Option<(Option<String>,)> = query_as("SELECT billing_admin_user_id FROM orgs WHERE id = $1")
        .bind(org.to_string())
        .fetch_optional(pool)
        .await?;
    Ok(row.and_then(|(id,)| id))
}
