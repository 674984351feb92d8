//! The steps org-scoped writes share inside their transaction: lock the
//! org, read a member's role, look for a live subscription, append to the
//! event log.
//!
//! Written once for both backends: each function is generic over the
//! database (`DB: Sql`: what a query needs is stated once, in `crate::sql`), and takes the
//! caller's `&mut Transaction`, so a step can't run outside one. Nothing
//! here begins or commits: the caller owns the transaction. A `Store`
//! method picks the backend with one `match` and calls one such generic
//! function:
//!
//! ```text
//! match &self.backend {
//!     Backend::Sqlite(pool) => operation(pool, …).await,
//!     Backend::Postgres(pool) => operation(pool, …).await,
//! }
//! ```

use orgplane_core::org::OrgKind;
use orgplane_core::roles::RoleName;
use orgplane_core::subscription::SubscriptionStatus;
use orgplane_core::{DomainError, EventId, OrgId, Timestamp, UserId};
use sqlx::{Pool, Transaction};

use crate::sql::{Sql, Value, query};
use crate::{Actor, PageRequest, Result, StoreError, millis};

/// Bumps the org's version: the row lock that serializes writers to one
/// org (see the crate docs). Returns the org's kind; `not_found` when the
/// org does not exist.
pub(crate) async fn lock_org<DB: Sql>(tx: &mut Transaction<'_, DB>, org: OrgId) -> Result<OrgKind> {
    let row = query("UPDATE orgs SET version = version + 1 WHERE id = $1 RETURNING kind")
        .bind(org.to_string())
        .fetch_optional(&mut **tx)
        .await?
        .ok_or(DomainError::NotFound { what: "organization" })?;
    let kind: String = row.try_get(0)?;
    OrgKind::parse(&kind).ok_or_else(|| StoreError::Corrupt(format!("organization {org} has kind `{kind}`")))
}

/// A user's role in an org (`None`: not a member): the one query every
/// in-lock membership check uses.
pub(crate) async fn member_role<DB: Sql>(
    tx: &mut Transaction<'_, DB>,
    org: OrgId,
    user: UserId,
) -> Result<Option<RoleName>> {
    let row = query("SELECT role FROM memberships WHERE org_id = $1 AND user_id = $2")
        .bind(org.to_string())
        .bind(user.to_string())
        .fetch_optional(&mut **tx)
        .await?;
    let Some(row) = row else { return Ok(None) };
    let role: String = row.try_get(0)?;
    RoleName::parse(&role)
        .map(Some)
        .map_err(|e| StoreError::Corrupt(format!("role of {user} in organization {org}: {e}")))
}

/// [`SubscriptionStatus::TERMINAL`] as the values to bind to a query's
/// `status NOT IN ($n, $m)`, so that SQL and
/// [`SubscriptionStatus::is_terminal`] can't disagree. Two placeholders for
/// two statuses: if core's list changes length, the callers' `let [a, b]`
/// stops compiling instead of silently checking part of it.
pub(crate) fn terminal_statuses() -> [String; 2] {
    SubscriptionStatus::TERMINAL.map(|status| status.as_str().to_owned())
}

/// The status of the org's subscription if it is live (not in
/// [`SubscriptionStatus::TERMINAL`], see [`terminal_statuses`]).
pub(crate) async fn live_subscription_status<DB: Sql>(
    tx: &mut Transaction<'_, DB>,
    org: OrgId,
) -> Result<Option<SubscriptionStatus>> {
    let [first, second] = terminal_statuses();
    let row = query("SELECT status FROM subscriptions WHERE org_id = $1 AND status NOT IN ($2, $3)")
        .bind(org.to_string())
        .bind(first)
        .bind(second)
        .fetch_optional(&mut **tx)
        .await?;
    let Some(row) = row else { return Ok(None) };
    let status: String = row.try_get(0)?;
    SubscriptionStatus::parse(&status)
        .map(Some)
        .ok_or_else(|| StoreError::Corrupt(format!("subscription of organization {org} has status `{status}`")))
}

/// Appends an event about `org` to the log inside the caller's
/// transaction, so that nothing is announced that was not committed.
pub(crate) async fn record_event<DB: Sql>(
    tx: &mut Transaction<'_, DB>,
    org: OrgId,
    kind: &str,
    actor: &Actor,
    data: serde_json::Value,
    now: Timestamp,
) -> Result<()> {
    append_event(tx, org.to_string(), kind, actor, data, now).await
}

/// Appends an event that belongs to no org (`user.created`), like
/// [`record_event`].
pub(crate) async fn record_user_event<DB: Sql>(
    tx: &mut Transaction<'_, DB>,
    kind: &str,
    actor: &Actor,
    data: serde_json::Value,
    now: Timestamp,
) -> Result<()> {
    append_event(tx, None::<String>, kind, actor, data, now).await
}

/// The one insert into the event log. Generic over how the org column is
/// bound: an org id, or `NULL`.
async fn append_event<DB: Sql, O: Value>(
    tx: &mut Transaction<'_, DB>,
    org: O,
    kind: &str,
    actor: &Actor,
    data: serde_json::Value,
    now: Timestamp,
) -> Result<()> {
    query("INSERT INTO events (id, org_id, type, actor, data, created_at) VALUES ($1, $2, $3, $4, $5, $6)")
        .bind(EventId::new().to_string())
        .bind(org)
        .bind(kind.to_owned())
        .bind(actor.as_text())
        .bind(data.to_string())
        .bind(millis(now))
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The one cursor rule of every list: `starting_after` must name an item of
/// this very list (same scope, same filters), or the answer is a 400 naming
/// the parameter. `exists` selects that item with `params` bound in order
/// (`$1`, `$2`, …, the cursor among them).
pub(crate) async fn ensure_cursor_in_list<DB: Sql>(
    pool: &Pool<DB>,
    page: &PageRequest,
    exists: &'static str,
    params: &[&str],
) -> Result<()> {
    let Some(cursor) = &page.starting_after else { return Ok(()) };
    let mut query = query(exists);
    for param in params {
        query = query.bind(param.to_string());
    }
    match query.fetch_optional(pool).await? {
        Some(_) => Ok(()),
        None => Err(PageRequest::unknown_cursor(cursor)),
    }
}
