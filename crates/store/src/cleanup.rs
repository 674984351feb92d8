//! Clean-up of abandoned personal orgs: a personal org whose user has not
//! been seen since a cut-off, with no live subscription, no resources and
//! no member but its user.
//!
//! Eligibility is one SQL condition, used both to list candidates and,
//! again inside the org's lock, by the delete itself: replicas running the
//! job at once take turns on each org's row lock, and whoever comes second
//! finds nothing left to delete, so no org is deleted (or announced) twice
//! and an org that gained a resource, a subscription or a visit in the
//! meantime stays.

use orgplane_core::{OrgId, Timestamp, UserId};

use sqlx::Pool;

use crate::sql::{Sql, query, query_as};
use crate::tx::{lock_org, record_event, terminal_statuses};
use crate::{Actor, Backend, BeginWrite, Result, Store, from_millis, millis, parse_id};

/// A personal org the clean-up would delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AbandonedOrg {
    pub org_id: OrgId,
    pub user_id: UserId,
    /// The user's last visit (their sign-up when never seen since visits were kept).
    pub last_seen_at: Timestamp,
}

/// Eligible personal orgs `o` of users `u`: `$1` the cut-off, `$2`/`$3`
/// the terminal subscription statuses.
#[cfg_attr(not(test), allow(dead_code))]
const ELIGIBLE: &str = "o.kind = 'personal' AND COALESCE(u.last_seen_at, u.created_at) < $1 \
     AND NOT EXISTS (SELECT 1 FROM subscriptions s WHERE s.org_id = o.id AND s.status NOT IN ($2, $3)) \
     AND NOT EXISTS (SELECT 1 FROM resources r WHERE r.org_id = o.id) \
     AND NOT EXISTS (SELECT 1 FROM memberships m WHERE m.org_id = o.id AND m.user_id <> u.id)";

const CANDIDATES: &str = "SELECT o.id, u.id, COALESCE(u.last_seen_at, u.created_at) FROM orgs o \
     JOIN users u ON u.id = o.personal_user_id WHERE o.kind = 'personal' AND COALESCE(u.last_seen_at, u.created_at) < $1 \
     AND NOT EXISTS (SELECT 1 FROM subscriptions s WHERE s.org_id = o.id AND s.status NOT IN ($2, $3)) \
     AND NOT EXISTS (SELECT 1 FROM resources r WHERE r.org_id = o.id) \
     AND NOT EXISTS (SELECT 1 FROM memberships m WHERE m.org_id = o.id AND m.user_id <> u.id) \
     AND o.id > $4 ORDER BY o.id LIMIT $5";

const DELETE: &str = "DELETE FROM orgs WHERE id = $4 AND id IN (SELECT o.id FROM orgs o \
     JOIN users u ON u.id = o.personal_user_id WHERE o.kind = 'personal' AND COALESCE(u.last_seen_at, u.created_at) < $1 \
     AND NOT EXISTS (SELECT 1 FROM subscriptions s WHERE s.org_id = o.id AND s.status NOT IN ($2, $3)) \
     AND NOT EXISTS (SELECT 1 FROM resources r WHERE r.org_id = o.id) \
     AND NOT EXISTS (SELECT 1 FROM memberships m WHERE m.org_id = o.id AND m.user_id <> u.id))";

impl Store {
    /// Up to `limit` eligible personal orgs after `after` (by id), with
    /// users unseen since `inactive_before`.
    pub async fn abandoned_personal_orgs(
        &self,
        inactive_before: Timestamp,
        after: Option<OrgId>,
        limit: u32,
    ) -> Result<Vec<AbandonedOrg>> {
        let after = after.map(|o| o.to_string()).unwrap_or_default();
        let rows = match &self.backend {
            Backend::Sqlite(pool) => candidates(pool, inactive_before, after, limit).await,
            Backend::Postgres(pool) => candidates(pool, inactive_before, after, limit).await,
        }?;
        rows.into_iter()
            .map(|(org, user, seen)| {
                Ok(AbandonedOrg {
                    org_id: parse_id(&org)?,
                    user_id: parse_id(&user)?,
                    last_seen_at: from_millis(seen)?,
                })
            })
            .collect()
    }

    /// Deletes `org` if it is still eligible (checked again in its lock);
    /// `org.deleted` (reason `abandoned`) is written with it. Answers
    /// whether it was deleted.
    pub async fn delete_abandoned_personal_org(
        &self,
        candidate: &AbandonedOrg,
        inactive_before: Timestamp,
        now: Timestamp,
    ) -> Result<bool> {
        let deleted = match &self.backend {
            Backend::Sqlite(pool) => delete(pool, candidate, inactive_before, now).await,
            Backend::Postgres(pool) => delete(pool, candidate, inactive_before, now).await,
        }?;
        if deleted {
            self.touched(candidate.org_id).await;
            self.touched_user(candidate.user_id).await;
        }
        Ok(deleted)
    }
}

async fn candidates<DB: Sql>(
    pool: &Pool<DB>,
    inactive_before: Timestamp,
    after: String,
    limit: u32,
) -> Result<Vec<(String, String, i64)>> {
    let [first, second] = terminal_statuses();
    Ok(query_as(CANDIDATES)
        .bind(millis(inactive_before))
        .bind(first)
        .bind(second)
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await?)
}

async fn delete<DB: Sql>(
    pool: &Pool<DB>,
    candidate: &AbandonedOrg,
    inactive_before: Timestamp,
    now: Timestamp,
) -> Result<bool> {
    let org = candidate.org_id;
    let mut tx = pool.begin_write().await?;
    match lock_org(&mut tx, org).await {
        Ok(_) => {}
        // Deleted meanwhile (by another replica's pass, or its user).
        Err(crate::StoreError::Domain(orgplane_core::DomainError::NotFound { .. })) => return Ok(false),
        Err(e) => return Err(e),
    }
    let [first, second] = terminal_statuses();
    let deleted = query(DELETE)
        .bind(millis(inactive_before))
        .bind(first)
        .bind(second)
        .bind(org.to_string())
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if deleted == 0 {
        return Ok(false);
    }
    // The user gets a new personal org on their next authenticated request
    // (`Store::provision_user`) or from POST /v1/me/personal_org.
    query("UPDATE users SET active_org_id = NULL WHERE id = $1 AND active_org_id = $2")
        .bind(candidate.user_id.to_string())
        .bind(org.to_string())
        .execute(&mut *tx)
        .await?;
    let data = serde_json::json!({
        "org_id": org, "kind": "personal", "reason": "abandoned", "user_id": candidate.user_id,
        "last_seen_at": millis(candidate.last_seen_at),
    });
    record_event(&mut tx, org, "org.deleted", &Actor::System, data, now).await?;
    tx.commit().await?;
    Ok(true)
}

// `ELIGIBLE` is spelt out in both statements (queries take `&'static str`);
// a test keeps them in step.
#[cfg(test)]
mod tests {
    #[test]
    fn both_statements_use_the_one_eligibility_condition() {
        let condition = super::ELIGIBLE.split_whitespace().collect::<Vec<_>>().join(" ");
        for statement in [super::CANDIDATES, super::DELETE] {
            let statement = statement.split_whitespace().collect::<Vec<_>>().join(" ");
            assert!(statement.contains(&condition), "{statement}");
        }
    }
}
