//! Development data at scale: orgs made in batches straight into the
//! tables, for load tests (`orgplane dev seed`, `bench/scale.sh`). Never
//! used by the server.
//!
//! Each org is a team org with one owner (a user of the issuer
//! [`SEED_ISSUER`], active in it), one `customers` and one `clients`
//! resource with their usage counters; every tenth (by its index in the
//! seed) also has an active sandbox subscription to `sandbox_business`,
//! stored as the sandbox provider would leave it: the sandbox's own row,
//! the provider's state, the org's current subscription and its customer.
//! Rows satisfy every constraint of the schema; no events are recorded and
//! no caches are told (run it before starting the server, or restart it).
//!
//! One batch is one transaction with one multi-row `INSERT` per table. The
//! values are this module's own (generated ids, numbers, fixed words), so
//! they are written into the SQL text rather than bound: a batch of
//! thousands of rows would otherwise exceed the parameter limits.

use std::fmt::Write as _;

use orgplane_core::{OrgId, ResourceId, SubscriptionId, Timestamp, UserId};
use sqlx::Pool;

use crate::sql::{Sql, query};
use crate::{Backend, BeginWrite, Result, Store, millis};

/// The issuer of seeded users: no real identity provider signs for it.
pub const SEED_ISSUER: &str = "urn:orgplane:seed";

/// The sandbox price every seeded subscription buys.
pub const SEED_PRICE: &str = "sandbox_business";

/// What one batch made.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeedBatch {
    pub orgs: Vec<OrgId>,
    pub subscriptions: u64,
    pub resources: u64,
}

impl Store {
    /// Makes `count` orgs numbered from `first` (the number names the user's
    /// subject and e-mail, so it must not repeat in one database; orgs
    /// whose number is a multiple of 10 get a subscription), in one transaction.
    pub async fn seed_orgs(&self, first: u64, count: u64, now: Timestamp) -> Result<SeedBatch> {
        let rows = SeedRows::new(first, count, now);
        match &self.backend {
            Backend::Sqlite(pool) => insert(pool, &rows).await?,
            Backend::Postgres(pool) => insert(pool, &rows).await?,
        }
        Ok(SeedBatch {
            orgs: rows.orgs.iter().map(|o| o.org).collect(),
            subscriptions: rows.orgs.iter().filter(|o| o.subscribed).count() as u64,
            resources: 2 * count,
        })
    }
}

struct SeedOrg {
    number: u64,
    org: OrgId,
    user: UserId,
    subscribed: bool,
}

struct SeedRows {
    orgs: Vec<SeedOrg>,
    now: i64,
    /// The seeded subscriptions' period end: 30 days on.
    period_end: i64,
}

impl SeedRows {
    fn new(first: u64, count: u64, now: Timestamp) -> Self {
        let orgs = (first..first + count)
            .map(|number| SeedOrg { number, org: OrgId::new(), user: UserId::new(), subscribed: number % 10 == 0 })
            .collect();
        let now = millis(now);
        SeedRows { orgs, now, period_end: now + 30 * 24 * 3600 * 1000 }
    }

    /// `INSERT INTO {head} VALUES (row), (row), …` over the orgs `row` answers for.
    fn insert(&self, head: &str, row: impl Fn(&SeedOrg, &mut String) -> bool) -> Option<String> {
        let mut sql = format!("INSERT INTO {head} VALUES ");
        let mut any = false;
        for org in &self.orgs {
            let before = sql.len();
            if any {
                sql.push_str(", ");
            }
            if row(org, &mut sql) {
                any = true;
            } else {
                sql.truncate(before);
            }
        }
        any.then_some(sql)
    }

    fn statements(&self) -> Vec<String> {
        let now = self.now;
        let end = self.period_end;
        let suffix = |org: &OrgId| org.to_string()[4..].to_owned();
        [
            self.insert(
                "users (id, issuer, subject, email, email_verified, name, active_org_id, created_at, updated_at)",
                |o, s| {
                    let n = o.number;
                    let _ = write!(
                        s,
                        "('{}', '{SEED_ISSUER}', 'seed-{n}', 'seed-{n}@seed.example', TRUE, 'Seed owner {n}', '{}', {now}, {now})",
                        o.user, o.org
                    );
                    true
                },
            ),
            self.insert("orgs (id, kind, name, created_at, updated_at)", |o, s| {
                let _ = write!(s, "('{}', 'team', 'Seed org {}', {now}, {now})", o.org, o.number);
                true
            }),
            self.insert("memberships (org_id, user_id, role, created_at)", |o, s| {
                let _ = write!(s, "('{}', '{}', 'owner', {now})", o.org, o.user);
                true
            }),
            self.insert("resources (id, org_id, type, name, created_at)", |o, s| {
                let _ = write!(
                    s,
                    "('{}', '{org}', 'customers', 'Customer of {n}', {now}), ('{}', '{org}', 'clients', 'Client of {n}', {now})",
                    ResourceId::new(),
                    ResourceId::new(),
                    org = o.org,
                    n = o.number
                );
                true
            }),
            self.insert("resource_usage (org_id, type, used)", |o, s| {
                let _ = write!(s, "('{org}', 'customers', 1), ('{org}', 'clients', 1)", org = o.org);
                true
            }),
            self.insert("billing_customers (provider, customer_id, org_id, created_at)", |o, s| {
                o.subscribed && write!(s, "('sandbox', 'sbxcus_{}', '{}', {now})", suffix(&o.org), o.org).is_ok()
            }),
            self.insert(
                "sandbox_subscriptions (id, checkout_id, org_id, customer_id, price_id, quantity, status, \
                 cancel_at_period_end, current_period_end, created_at, updated_at)",
                |o, s| {
                    let org = suffix(&o.org);
                    o.subscribed
                        && write!(
                            s,
                            "('sbxsub_{org}', 'sbxco_{org}', '{}', 'sbxcus_{org}', '{SEED_PRICE}', 1, 'active', FALSE, {end}, {now}, {now})",
                            o.org
                        )
                        .is_ok()
                },
            ),
            self.insert(
                "provider_subscriptions (provider, provider_subscription_id, id, org_id, provider_customer_id, status, \
                 price_id, quantity, current_period_end, cancel_at_period_end, observed_at, first_observed_at, updated_at)",
                |o, s| {
                    let org = suffix(&o.org);
                    o.subscribed
                        && write!(
                            s,
                            "('sandbox', 'sbxsub_{org}', '{}', '{}', 'sbxcus_{org}', 'active', '{SEED_PRICE}', 1, {end}, FALSE, {now}, {now}, {now})",
                            subscription_id(&o.org),
                            o.org
                        )
                        .is_ok()
                },
            ),
            self.insert(
                "subscriptions (id, org_id, provider, provider_subscription_id, provider_customer_id, status, price_id, \
                 quantity, current_period_end, cancel_at_period_end, observed_at, created_at, updated_at)",
                |o, s| {
                    let org = suffix(&o.org);
                    o.subscribed
                        && write!(
                            s,
                            "('{}', '{}', 'sandbox', 'sbxsub_{org}', 'sbxcus_{org}', 'active', '{SEED_PRICE}', 1, {end}, FALSE, {now}, {now}, {now})",
                            subscription_id(&o.org),
                            o.org
                        )
                        .is_ok()
                },
            ),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

/// The seeded subscription's id, the same in both tables that hold it.
fn subscription_id(org: &OrgId) -> SubscriptionId {
    // Derived from the org's id (one subscription per seeded org), so both
    // rows agree without keeping a map.
    format!("sub_{}", &org.to_string()[4..]).parse().unwrap_or_else(|_| SubscriptionId::new())
}

async fn insert<DB: Sql>(pool: &Pool<DB>, rows: &SeedRows) -> Result<()> {
    let mut tx = pool.begin_write().await?;
    for sql in rows.statements() {
        query::<DB>(sqlx::AssertSqlSafe(sql)).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(())
}
