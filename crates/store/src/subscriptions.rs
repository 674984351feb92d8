//! The org's one subscription as stored: reading it. Applying provider
//! state lives in `billing.rs`.

use orgplane_core::subscription::{Provider, SubscriptionStatus};
use orgplane_core::{OrgId, SubscriptionId, Timestamp, UserId};

use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, Type};

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

pub(crate) type SubscriptionRow = (
    String,
    String,
    String,
    String,
    Option<String>,
    String,
    Option<String>,
    Option<String>,
    i64,
    Option<i64>,
    bool,
    Option<i64>,
    Option<i64>,
    Option<String>,
    i64,
);

pub(crate) const SELECT_SUBSCRIPTION_BY_ORG: &str = "SELECT id, org_id, provider, provider_subscription_id, provider_customer_id, status, price_id, item_id, quantity, current_period_end, cancel_at_period_end, trial_end, past_due_since, portal_url, observed_at FROM subscriptions WHERE org_id = $1";

pub(crate) fn subscription_from_row(row: SubscriptionRow) -> Result<StoredSubscription> {
    let (
        id,
        org,
        provider,
        psid,
        customer,
        status,
        price,
        item,
        qty,
        period_end,
        cancel,
        trial_end,
        past_due,
        portal,
        observed,
    ) = row;
    let opt = |v: Option<i64>| v.map(from_millis).transpose();
    Ok(StoredSubscription {
        id: parse_id(&id)?,
        org_id: parse_id(&org)?,
        provider: Provider::parse(&provider).ok_or_else(|| StoreError::Corrupt(format!("provider `{provider}`")))?,
        provider_subscription_id: psid,
        provider_customer_id: customer,
        status: SubscriptionStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("subscription status `{status}`")))?,
        price_id: price,
        item_id: item,
        quantity: qty,
        current_period_end: opt(period_end)?,
        cancel_at_period_end: cancel,
        trial_end: opt(trial_end)?,
        past_due_since: opt(past_due)?,
        portal_url: portal,
        observed_at: from_millis(observed)?,
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

async fn subscription<DB>(pool: &Pool<DB>, org: OrgId) -> Result<Option<SubscriptionRow>>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    usize: ColumnIndex<DB::Row>,
    for<'q> String: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> i64: Decode<'q, DB> + Type<DB>,
    for<'q> bool: Decode<'q, DB> + Type<DB>,
    for<'q> Option<String>: Decode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Decode<'q, DB> + Type<DB>,
{
    Ok(sqlx::query_as(SELECT_SUBSCRIPTION_BY_ORG).bind(org.to_string()).fetch_optional(pool).await?)
}

/// The billing admin's user id as stored (`None`: no such org, or none set).
async fn billing_admin<DB>(pool: &Pool<DB>, org: OrgId) -> Result<Option<String>>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    usize: ColumnIndex<DB::Row>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> Option<String>: Decode<'q, DB> + Type<DB>,
{
    let row: Option<(Option<String>,)> = sqlx::query_as("SELECT billing_admin_user_id FROM orgs WHERE id = $1")
        .bind(org.to_string())
        .fetch_optional(pool)
        .await?;
    Ok(row.and_then(|(id,)| id))
}
