//! Subscriptions made elsewhere (a payment link, the provider's dashboard, a
//! migration): linking one to an org, and the ones discovery found that no
//! org holds yet.
//!
//! - **One org per subscription, one live subscription per org**, decided
//!   in the transaction that links: the org is locked (so links and
//!   webhooks of one org take turns), its other live subscriptions are
//!   looked for under that lock, and the subscription is claimed on
//!   `provider_subscriptions`' primary key (a concurrent claim by another
//!   org loses on it, see `crate::apply`).
//! - **Linking is applying.** The provider's view goes through the same
//!   apply path as a webhook (`crate::apply::apply_snapshot`), which also
//!   ties its customer to the org and takes it off the unlinked list.
//! - **Listed once.** `unlinked_subscriptions` is unique on the provider's
//!   subscription id: a second discovery pass updates the row it wrote.
//!
//! This module never calls a provider: the server fetches and says what
//! the snapshot entitles.

use orgplane_core::subscription::{Provider, SubscriptionStatus};
use orgplane_core::{DomainError, OrgId, Timestamp, UnlinkedSubscriptionId};
use sqlx::Pool;

use super::snapshots::SnapshotInput;
use crate::apply::{Applied, Refused, apply_snapshot, org_of_subscription};
use crate::sql::{Row, Sql, query};
use crate::subscriptions::StoredSubscription;
use crate::tx::{ensure_cursor_in_list, lock_org, record_event, terminal_statuses};
use crate::{Actor, Backend, BeginWrite, Page, PageRequest, Result, Store, StoreError, from_millis, millis, parse_id};

/// What discovery read of a provider subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveredSubscription {
    pub provider: Provider,
    pub provider_subscription_id: String,
    pub provider_customer_id: Option<String>,
    pub customer_email: Option<String>,
    /// The variant (Lemon Squeezy) or price id.
    pub price_id: Option<String>,
    /// The catalog plan that price buys, if any.
    pub plan: Option<String>,
    pub status: SubscriptionStatus,
}

/// Where a discovered subscription belongs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiscoveredOwner {
    /// An org holds it already (webhooks and the walk keep it).
    Held(OrgId),
    /// No org holds it, and its customer is tied to this org: apply it there.
    Customer(OrgId),
    /// No org: it is on the unlinked list (`new`: put there by this pass).
    Unlinked { new: bool },
}

/// A provider subscription no org holds, as `GET /v1/billing/unlinked` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnlinkedSubscription {
    pub id: UnlinkedSubscriptionId,
    pub provider: Provider,
    pub provider_subscription_id: String,
    pub provider_customer_id: Option<String>,
    pub customer_email: Option<String>,
    pub price_id: Option<String>,
    pub plan: Option<String>,
    pub status: SubscriptionStatus,
    pub first_seen_at: Timestamp,
    pub last_seen_at: Timestamp,
}

const UNLINKED_COLUMNS: &str = "u.id, u.provider, u.provider_subscription_id, u.provider_customer_id, u.customer_email, \
     u.price_id, u.plan, u.status, u.first_seen_at, u.last_seen_at";

/// Not held by any org (a row a concurrent link left behind is not listed).
const NOT_HELD: &str = "NOT EXISTS (SELECT 1 FROM provider_subscriptions p \
     WHERE p.provider = u.provider AND p.provider_subscription_id = u.provider_subscription_id)";

impl Store {
    /// Links the subscription of `input` (the provider's present view) to
    /// `org` and applies it, attributed to `actor`: `not_found` for an
    /// unknown org, `conflict` when another org holds the subscription,
    /// `subscription_exists` when the org has another live one. Linking
    /// a subscription the org already holds applies it again and writes no
    /// second `subscription.linked` event.
    pub async fn link_subscription(
        &self,
        org: OrgId,
        input: &SnapshotInput,
        actor: &Actor,
        now: Timestamp,
    ) -> Result<StoredSubscription> {
        let gate = self.sqlite_write_gate().await;
        match &self.backend {
            Backend::Sqlite(pool) => link_subscription(pool, org, input, actor, now).await,
            Backend::Postgres(pool) => link_subscription(pool, org, input, actor, now).await,
        }?;
        drop(gate);
        self.touched(org).await;
        self.subscription(org).await?.ok_or_else(|| {
            StoreError::Corrupt(format!("organization {org} lost the subscription it was just linked to"))
        })
    }

    /// Sorts one subscription discovery found: held by an org, tied to an
    /// org by its customer, or (neither) put on the unlinked list, or its
    /// row there brought up to date.
    pub async fn sort_discovered_subscription(
        &self,
        found: &DiscoveredSubscription,
        now: Timestamp,
    ) -> Result<DiscoveredOwner> {
        let gate = self.sqlite_write_gate().await;
        let owner = match &self.backend {
            Backend::Sqlite(pool) => sort_discovered(pool, found, now).await,
            Backend::Postgres(pool) => sort_discovered(pool, found, now).await,
        };
        drop(gate);
        owner
    }

    /// The subscriptions discovery found that no org holds, oldest first.
    pub async fn unlinked_subscriptions(&self, page: &PageRequest) -> Result<Page<UnlinkedSubscription>> {
        let rows = match &self.backend {
            Backend::Sqlite(pool) => unlinked(pool, page).await,
            Backend::Postgres(pool) => unlinked(pool, page).await,
        }?;
        Ok(Page::from_rows(rows, page.limit))
    }
}

async fn link_subscription<DB: Sql>(
    pool: &Pool<DB>,
    org: OrgId,
    input: &SnapshotInput,
    actor: &Actor,
    now: Timestamp,
) -> Result<()> {
    let snap = &input.snapshot;
    let provider = snap.provider.as_str();
    let subscription = snap.provider_subscription_id.as_str();
    let mut tx = pool.begin_write().await?;
    let kind = lock_org(&mut tx, org).await?;
    let held_by = org_of_subscription(&mut tx, snap.provider, subscription).await?;
    if held_by.is_some_and(|holder| holder != org) {
        return Err(linked_elsewhere(provider, subscription).into());
    }
    let [ended, expired] = terminal_statuses();
    let rival = query(
        "SELECT provider_subscription_id, status FROM provider_subscriptions WHERE org_id = $1 \
         AND status NOT IN ($2, $3) AND NOT (provider = $4 AND provider_subscription_id = $5) \
         ORDER BY first_observed_at LIMIT 1",
    )
    .bind(org.to_string())
    .bind(ended)
    .bind(expired)
    .bind(provider.to_owned())
    .bind(subscription.to_owned())
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(row) = rival {
        let (id, status): (String, String) = (row.try_get(0)?, row.try_get(1)?);
        return Err(DomainError::SubscriptionExists {
            message: format!(
                "this organization already has a live subscription ({id}, {status}); cancel it (or let it end) before \
                 linking {provider} subscription {subscription}"
            ),
        }
        .into());
    }
    match apply_snapshot(&mut tx, org, kind, input, actor, now).await? {
        // Another org claimed it between our look and our write.
        Err(Refused(_)) => return Err(linked_elsewhere(provider, subscription).into()),
        Ok(Applied { rival: Some(reason), .. }) => {
            return Err(DomainError::SubscriptionExists { message: reason }.into());
        }
        Ok(_) => {}
    }
    if held_by.is_none() {
        let data = serde_json::json!({
            "org_id": org,
            "provider": provider,
            "provider_subscription_id": subscription,
            "provider_customer_id": snap.provider_customer_id,
            "status": snap.status.as_str(),
        });
        record_event(&mut tx, org, "subscription.linked", actor, data, now).await?;
    }
    tx.commit().await?;
    Ok(())
}

fn linked_elsewhere(provider: &str, subscription: &str) -> DomainError {
    DomainError::conflict(format!(
        "{provider} subscription {subscription} is already linked to another organization; a subscription belongs to \
         one organization for good (cancel it at the provider and start a new one for this organization)"
    ))
}

async fn sort_discovered<DB: Sql>(
    pool: &Pool<DB>,
    found: &DiscoveredSubscription,
    now: Timestamp,
) -> Result<DiscoveredOwner> {
    let provider = found.provider.as_str().to_owned();
    let mut tx = pool.begin_write().await?;
    if let Some(org) = org_of_subscription(&mut tx, found.provider, &found.provider_subscription_id).await? {
        return Ok(DiscoveredOwner::Held(org));
    }
    if let Some(customer) = &found.provider_customer_id {
        let row = query("SELECT org_id FROM billing_customers WHERE provider = $1 AND customer_id = $2")
            .bind(provider.clone())
            .bind(customer.clone())
            .fetch_optional(&mut *tx)
            .await?;
        if let Some(row) = row {
            return Ok(DiscoveredOwner::Customer(parse_id(&row.try_get::<String, _>(0)?)?));
        }
    }
    let listed = query("SELECT 1 FROM unlinked_subscriptions WHERE provider = $1 AND provider_subscription_id = $2")
        .bind(provider.clone())
        .bind(found.provider_subscription_id.clone())
        .fetch_optional(&mut *tx)
        .await?
        .is_some();
    query(
        "INSERT INTO unlinked_subscriptions (id, provider, provider_subscription_id, provider_customer_id, customer_email, \
         price_id, plan, status, first_seen_at, last_seen_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9) \
         ON CONFLICT (provider, provider_subscription_id) DO UPDATE SET provider_customer_id = excluded.provider_customer_id, \
         customer_email = excluded.customer_email, price_id = excluded.price_id, plan = excluded.plan, \
         status = excluded.status, last_seen_at = excluded.last_seen_at",
    )
    .bind(UnlinkedSubscriptionId::new().to_string())
    .bind(provider)
    .bind(found.provider_subscription_id.clone())
    .bind(found.provider_customer_id.clone())
    .bind(found.customer_email.clone())
    .bind(found.price_id.clone())
    .bind(found.plan.clone())
    .bind(found.status.as_str().to_owned())
    .bind(millis(now))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(DiscoveredOwner::Unlinked { new: !listed })
}

async fn unlinked<DB: Sql>(pool: &Pool<DB>, page: &PageRequest) -> Result<Vec<UnlinkedSubscription>> {
    let cursor = page.starting_after.as_deref().unwrap_or_default();
    ensure_cursor_in_list(pool, page, "SELECT 1 FROM unlinked_subscriptions u WHERE u.id = $1", &[cursor]).await?;
    let rows = query(sqlx::AssertSqlSafe(format!(
        "SELECT {UNLINKED_COLUMNS} FROM unlinked_subscriptions u WHERE u.id > $1 AND {NOT_HELD} ORDER BY u.id LIMIT $2"
    )))
    .bind(cursor.to_owned())
    .bind(i64::from(page.limit) + 1)
    .fetch_all(pool)
    .await?;
    rows.iter().map(unlinked_from_row::<DB>).collect()
}

fn unlinked_from_row<DB: Sql>(row: &Row<DB>) -> Result<UnlinkedSubscription> {
    let id: String = row.try_get(0)?;
    let provider: String = row.try_get(1)?;
    let status: String = row.try_get(7)?;
    Ok(UnlinkedSubscription {
        id: parse_id(&id)?,
        provider: Provider::parse(&provider).ok_or_else(|| super::corrupt_provider(&provider))?,
        provider_subscription_id: row.try_get(2)?,
        provider_customer_id: row.try_get(3)?,
        customer_email: row.try_get(4)?,
        price_id: row.try_get(5)?,
        plan: row.try_get(6)?,
        status: SubscriptionStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("subscription status `{status}`")))?,
        first_seen_at: from_millis(row.try_get(8)?)?,
        last_seen_at: from_millis(row.try_get(9)?)?,
    })
}
