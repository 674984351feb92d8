//! Seat holds: the part of a seat change that runs before the payment
//! provider is called, and the reads that make every seat limit see it.
//!
//! A seat change can't run the provider call inside a transaction, so it
//! takes a hold first: inside the org's lock, with the seats in use
//! counted in the same transaction as the quota guards count them, core's
//! [`SeatHold::take`] decides, and the hold is written on the org's
//! subscription row. From then on [`seat_hold`] hands it to entitlement
//! resolution, for display and for the guards of invitations and
//! acceptances, which run in that same lock. The server releases the hold
//! once the provider's answer is applied (or the call failed); a hold whose
//! process died expires by itself.
//!
//! A plan change holds the same way ([`Store::hold_plan_change`]): the
//! target plan's seat limit, checked against the seats in use in the
//! hold's transaction, caps every seat limit until the provider's answer
//! with the target price is applied (the apply path clears it), the call
//! fails (the server releases it) or it expires.
//!
//! This module never calls a provider and never decides: the rules are
//! core's.

use orgplane_core::subscription::{PlanHold, PlanHoldRefused, SeatHold};
use orgplane_core::{DomainError, OrgId, Timestamp};
use sqlx::Pool;

use crate::entitlements::usage;
use crate::sql::{Sql, query, query_as};
use crate::tx::lock_org;
use crate::{Backend, BeginWrite, Result, Store, from_millis, millis};

impl Store {
    /// Takes a hold of `seats` on the org's subscription until
    /// `now + hold_for`, in one transaction under the org's lock: refused
    /// (`invalid_request`, param `seats`) when more seats are in use
    /// (members and pending invitations), `conflict` while another seat
    /// change holds seats, `not_found` without a subscription.
    pub async fn hold_seats(
        &self,
        org: OrgId,
        seats: u32,
        now: Timestamp,
        hold_for: time::Duration,
    ) -> Result<SeatHold> {
        let hold = match &self.backend {
            Backend::Sqlite(pool) => hold_seats(pool, org, seats, now, hold_for).await,
            Backend::Postgres(pool) => hold_seats(pool, org, seats, now, hold_for).await,
        }?;
        self.touched(org).await;
        Ok(hold)
    }

    /// Releases `hold` if it is still the org's (a hold that expired and
    /// was replaced by another seat change's is left to that one).
    pub async fn release_seat_hold(&self, org: OrgId, hold: &SeatHold) -> Result<()> {
        match &self.backend {
            Backend::Sqlite(pool) => release_seat_hold(pool, org, hold).await,
            Backend::Postgres(pool) => release_seat_hold(pool, org, hold).await,
        }?;
        self.touched(org).await;
        Ok(())
    }
}

impl Store {
    /// Takes the hold of a plan change to `price` whose target plan allows
    /// `seats` seats, until `now + hold_for`, in one transaction under the
    /// org's lock. The inner `Err` says why core refused it (more seats in
    /// use, another change waiting); `not_found` without a subscription.
    pub async fn hold_plan_change(
        &self,
        org: OrgId,
        price: &str,
        seats: i64,
        now: Timestamp,
        hold_for: time::Duration,
    ) -> Result<std::result::Result<PlanHold, PlanHoldRefused>> {
        let hold = match &self.backend {
            Backend::Sqlite(pool) => hold_plan_change(pool, org, price, seats, now, hold_for).await,
            Backend::Postgres(pool) => hold_plan_change(pool, org, price, seats, now, hold_for).await,
        }?;
        self.touched(org).await;
        Ok(hold)
    }

    /// Releases a plan change's hold after its provider call failed, if it
    /// is still `hold` (a replaced or already cleared one is left alone).
    pub async fn release_plan_hold(&self, org: OrgId, hold: &PlanHold) -> Result<()> {
        match &self.backend {
            Backend::Sqlite(pool) => release_plan_hold(pool, org, hold).await,
            Backend::Postgres(pool) => release_plan_hold(pool, org, hold).await,
        }?;
        self.touched(org).await;
        Ok(())
    }
}

async fn hold_plan_change<DB: Sql>(
    pool: &Pool<DB>,
    org: OrgId,
    price: &str,
    seats: i64,
    now: Timestamp,
    hold_for: time::Duration,
) -> Result<std::result::Result<PlanHold, PlanHoldRefused>> {
    let mut tx = pool.begin_write().await?;
    lock_org(&mut tx, org).await?;
    let current = plan_hold::<DB>(&mut *tx, org).await?;
    let in_use = usage::<DB>(&mut *tx, org, now).await?.seats();
    let hold = match PlanHold::take(seats, in_use, current.as_ref(), now, hold_for) {
        Ok(hold) => hold,
        Err(refused) => return Ok(Err(refused)),
    };
    let held = query(
        "UPDATE subscriptions SET plan_hold_price = $2, plan_hold_seats = $3, plan_hold_until = $4 WHERE org_id = $1",
    )
    .bind(org.to_string())
    .bind(price.to_owned())
    .bind(hold.seats)
    .bind(millis(hold.until))
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if held == 0 {
        return Err(DomainError::NotFound { what: "subscription" }.into());
    }
    tx.commit().await?;
    Ok(Ok(hold))
}

async fn release_plan_hold<DB: Sql>(pool: &Pool<DB>, org: OrgId, hold: &PlanHold) -> Result<()> {
    // One statement, as for a seat hold: a guard that read the hold just
    // before still commits within the lower limit.
    let _gate = crate::sql::Sql::write_permit(pool).await?;
    query(
        "UPDATE subscriptions SET plan_hold_price = NULL, plan_hold_seats = NULL, plan_hold_until = NULL \
         WHERE org_id = $1 AND plan_hold_seats = $2 AND plan_hold_until = $3",
    )
    .bind(org.to_string())
    .bind(hold.seats)
    .bind(millis(hold.until))
    .execute(pool)
    .await?;
    Ok(())
}

/// The org's plan hold as stored, expired or not (`None`: no subscription,
/// or no plan change in progress), read on `conn` (see [`seat_hold`]).
pub(crate) async fn plan_hold<DB: Sql>(conn: &mut DB::Connection, org: OrgId) -> Result<Option<PlanHold>> {
    let row: Option<(Option<i64>, Option<i64>)> =
        query_as("SELECT plan_hold_seats, plan_hold_until FROM subscriptions WHERE org_id = $1")
            .bind(org.to_string())
            .fetch_optional(&mut *conn)
            .await?;
    match row {
        Some((Some(seats), Some(until))) => Ok(Some(PlanHold { seats, until: from_millis(until)? })),
        _ => Ok(None),
    }
}

async fn hold_seats<DB: Sql>(
    pool: &Pool<DB>,
    org: OrgId,
    seats: u32,
    now: Timestamp,
    hold_for: time::Duration,
) -> Result<SeatHold> {
    let mut tx = pool.begin_write().await?;
    lock_org(&mut tx, org).await?;
    let current = seat_hold::<DB>(&mut *tx, org).await?;
    let in_use = usage::<DB>(&mut *tx, org, now).await?.seats();
    let hold = SeatHold::take(seats, in_use, current.as_ref(), now, hold_for)?;
    let held = query("UPDATE subscriptions SET seat_hold = $2, seat_hold_until = $3 WHERE org_id = $1")
        .bind(org.to_string())
        .bind(hold.seats)
        .bind(millis(hold.until))
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if held == 0 {
        return Err(DomainError::NotFound { what: "subscription" }.into());
    }
    tx.commit().await?;
    Ok(hold)
}

async fn release_seat_hold<DB: Sql>(pool: &Pool<DB>, org: OrgId, hold: &SeatHold) -> Result<()> {
    // One statement: nothing is read first, so no lock is needed. A guard
    // that read the hold just before still commits within the lower limit.
    let _gate = crate::sql::Sql::write_permit(pool).await?;
    query(
        "UPDATE subscriptions SET seat_hold = NULL, seat_hold_until = NULL \
         WHERE org_id = $1 AND seat_hold = $2 AND seat_hold_until = $3",
    )
    .bind(org.to_string())
    .bind(hold.seats)
    .bind(millis(hold.until))
    .execute(pool)
    .await?;
    Ok(())
}

/// The org's seat hold as stored, expired or not (`None`: no subscription,
/// or no seat change in progress), read on `conn`: a pooled connection for
/// display, or a write's transaction for a guard inside the org's lock.
/// Whether it still counts is core's rule ([`SeatHold::cap`]).
pub(crate) async fn seat_hold<DB: Sql>(conn: &mut DB::Connection, org: OrgId) -> Result<Option<SeatHold>> {
    let row: Option<(Option<i64>, Option<i64>)> =
        query_as("SELECT seat_hold, seat_hold_until FROM subscriptions WHERE org_id = $1")
            .bind(org.to_string())
            .fetch_optional(&mut *conn)
            .await?;
    match row {
        Some((Some(seats), Some(until))) => Ok(Some(SeatHold { seats, until: from_millis(until)? })),
        _ => Ok(None),
    }
}
