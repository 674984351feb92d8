//! The billing e-mail's way to the org's Stripe customers: a transactional
//! outbox. [`enqueue_billing_email`] runs inside the transaction that changes
//! `orgs.billing_email`, so the change and the row that will carry it to
//! Stripe commit together (a crash or a restart loses nothing), and the
//! request never waits for Stripe.
//!
//! One row per (org, Stripe customer): a newer change replaces the e-mail
//! and bumps `generation`, and a send settles the row as done only if its
//! generation is still the one it sent, so concurrent changes end with the
//! latest e-mail at Stripe. Sending is leased per row
//! ([`Store::claim_billing_email_syncs`]) exactly as the WorkOS mirror
//! leases its targets. Lemon Squeezy has no customer update API and the
//! sandbox keeps no customer: only Stripe customers get a row.
//!
//! This module stores what it is given: retry times arrive computed.

use orgplane_core::{OrgId, Timestamp};
use sqlx::Transaction;

use crate::sql::{Sql, query};
use crate::webhooks::with_pool;
use crate::write_gate::Lane;
use crate::{Backend, BackendKind, Result, Store, from_millis, millis};

/// A Stripe customer's e-mail to send, leased to this replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BillingEmailSync {
    pub org_id: String,
    pub customer_id: String,
    /// The e-mail Stripe must hold ('' clears it).
    pub email: String,
    pub generation: i64,
    /// Failed sends in a row before this one.
    pub failures: u32,
}

/// How a send ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BillingEmailOutcome {
    /// Stripe holds the e-mail.
    Sent,
    /// Stripe answered 404: the customer is gone; given up.
    Gone(String),
    /// Failed; retried at the time given.
    Failed(String, Timestamp),
}

/// A row whose sends keep failing (or were given up).
#[derive(Debug, Clone)]
pub struct BillingEmailFailure {
    pub org_id: String,
    pub customer_id: String,
    pub status: String,
    pub attempts: i64,
    pub failures: i64,
    pub failing_since: Option<Timestamp>,
    pub last_error: Option<String>,
    pub next_attempt_at: Timestamp,
}

/// Marks the org's new billing e-mail pending for each of its Stripe
/// customers, in the caller's transaction (the one changing the e-mail).
pub(crate) async fn enqueue_billing_email<DB: Sql>(
    tx: &mut Transaction<'_, DB>,
    org: OrgId,
    email: Option<&str>,
    now: Timestamp,
) -> Result<()> {
    query(
        "INSERT INTO billing_email_syncs (org_id, customer_id, email, status, next_attempt_at, updated_at) \
         SELECT DISTINCT $1, c.customer_id, $2, 'pending', $3, $3 FROM ( \
           SELECT provider_customer_id AS customer_id FROM provider_subscriptions \
             WHERE org_id = $1 AND provider = 'stripe' AND provider_customer_id IS NOT NULL \
           UNION SELECT customer_id FROM billing_customers WHERE org_id = $1 AND provider = 'stripe' \
         ) c WHERE true \
         ON CONFLICT (org_id, customer_id) DO UPDATE SET email = excluded.email, status = 'pending', \
         generation = billing_email_syncs.generation + 1, failures = 0, failing_since = NULL, last_error = NULL, \
         next_attempt_at = excluded.next_attempt_at, updated_at = excluded.updated_at",
    )
    .bind(org.to_string())
    .bind(email.unwrap_or_default().to_owned())
    .bind(millis(now))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The claim statement, with `$lock` after the inner select.
macro_rules! claim_sql {
    ($lock:literal) => {
        concat!(
            "UPDATE billing_email_syncs SET lease_owner = $1, lease_until = $2 WHERE (org_id, customer_id) IN (",
            "SELECT t.org_id, t.customer_id FROM billing_email_syncs t WHERE t.status = 'pending' AND t.next_attempt_at <= $3 ",
            "AND (t.lease_until IS NULL OR t.lease_until < $3) ",
            "ORDER BY t.next_attempt_at, t.org_id, t.customer_id LIMIT $4",
            $lock,
            ") RETURNING org_id, customer_id, email, generation, failures"
        )
    };
}

impl Store {
    /// Leases up to `limit` pending rows due at `now` to `owner` until `until`.
    pub async fn claim_billing_email_syncs(
        &self,
        owner: &str,
        now: Timestamp,
        until: Timestamp,
        limit: u32,
    ) -> Result<Vec<BillingEmailSync>> {
        // A read first: the worker looks after every commit, and on SQLite
        // an UPDATE takes the write lock even when it matches nothing.
        let due: Option<(String,)> = with_pool!(self, pool => {
            sqlx::query_as(
                "SELECT org_id FROM billing_email_syncs WHERE status = 'pending' AND next_attempt_at <= $1 \
                 AND (lease_until IS NULL OR lease_until < $1) LIMIT 1",
            )
            .bind(millis(now))
            .fetch_optional(pool)
            .await?
        });
        if due.is_none() {
            return Ok(Vec::new());
        }
        // PostgreSQL skips rows another replica is claiming.
        let sql = match self.kind() {
            BackendKind::Sqlite => claim_sql!(""),
            BackendKind::Postgres => claim_sql!(" FOR UPDATE SKIP LOCKED"),
        };
        let rows: Vec<(String, String, String, i64, i64)> = with_pool!(self, pool => {
            let _gate = crate::sql::Sql::write_permit_in(pool, Lane::Worker).await?;
            sqlx::query_as(sql)
                .bind(owner.to_owned())
                .bind(millis(until))
                .bind(millis(now))
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?
        });
        let mut syncs: Vec<BillingEmailSync> = rows
            .into_iter()
            .map(|(org_id, customer_id, email, generation, failures)| BillingEmailSync {
                org_id,
                customer_id,
                email,
                generation,
                failures: u32::try_from(failures).unwrap_or(u32::MAX),
            })
            .collect();
        syncs.sort_by(|a, b| (&a.org_id, &a.customer_id).cmp(&(&b.org_id, &b.customer_id)));
        Ok(syncs)
    }

    /// Settles `owner`'s send of `sync`: sent or gone settles the row only if
    /// no newer e-mail came meanwhile (else it stays pending, due now, for
    /// the newer one); a failure keeps it pending until its retry time.
    pub async fn record_billing_email_sync(
        &self,
        sync: &BillingEmailSync,
        owner: &str,
        now: Timestamp,
        outcome: &BillingEmailOutcome,
    ) -> Result<()> {
        let (settled, failed, error, next) = match outcome {
            BillingEmailOutcome::Sent => ("done", false, None, millis(now)),
            BillingEmailOutcome::Gone(error) => ("gone", false, Some(error.clone()), millis(now)),
            BillingEmailOutcome::Failed(error, at) => ("pending", true, Some(error.clone()), millis(*at)),
        };
        with_pool!(self, pool => {
            let _gate = crate::sql::Sql::write_permit_in(pool, Lane::Worker).await?;
            sqlx::query(
                "UPDATE billing_email_syncs SET attempts = attempts + 1, \
                 failures = CASE WHEN generation <> $7 THEN 0 WHEN $3 THEN failures + 1 ELSE 0 END, \
                 failing_since = CASE WHEN generation <> $7 THEN NULL WHEN $3 THEN COALESCE(failing_since, $5) ELSE NULL END, \
                 last_error = CASE WHEN generation <> $7 THEN NULL ELSE $4 END, \
                 next_attempt_at = CASE WHEN generation <> $7 THEN $5 ELSE $6 END, \
                 status = CASE WHEN generation = $7 THEN $9 ELSE 'pending' END, \
                 lease_owner = NULL, lease_until = NULL, updated_at = $5 \
                 WHERE org_id = $1 AND customer_id = $2 AND lease_owner = $8",
            )
            .bind(sync.org_id.clone())
            .bind(sync.customer_id.clone())
            .bind(failed)
            .bind(error)
            .bind(millis(now))
            .bind(next)
            .bind(sync.generation)
            .bind(owner.to_owned())
            .bind(settled)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Ends `owner`'s leases (a replica shutting down): its rows are free at once.
    pub async fn release_billing_email_leases(&self, owner: &str) -> Result<()> {
        with_pool!(self, pool => {
            let _gate = crate::sql::Sql::write_permit_in(pool, Lane::Worker).await?;
            sqlx::query("UPDATE billing_email_syncs SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = $1")
                .bind(owner.to_owned())
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Rows whose last send failed or that were given up, longest failing first.
    pub async fn billing_email_failures(&self, limit: u32) -> Result<Vec<BillingEmailFailure>> {
        type Row = (String, String, String, i64, i64, Option<i64>, Option<String>, i64);
        let rows: Vec<Row> = with_pool!(self, pool => {
            sqlx::query_as(
                "SELECT org_id, customer_id, status, attempts, failures, failing_since, last_error, next_attempt_at \
                 FROM billing_email_syncs WHERE failures > 0 OR status = 'gone' \
                 ORDER BY failing_since, org_id, customer_id LIMIT $1",
            )
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?
        });
        rows.into_iter()
            .map(|(org_id, customer_id, status, attempts, failures, since, last_error, next)| {
                Ok(BillingEmailFailure {
                    org_id,
                    customer_id,
                    status,
                    attempts,
                    failures,
                    failing_since: since.map(from_millis).transpose()?,
                    last_error,
                    next_attempt_at: from_millis(next)?,
                })
            })
            .collect()
    }
}
