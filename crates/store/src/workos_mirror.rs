//! The WorkOS mirror's bookkeeping: which orgs and memberships WorkOS must be
//! brought in step with, who is doing it, and what keeps failing.
//!
//! Targets are derived from the event log (a transactional outbox, as the
//! outgoing webhooks' deliveries are): [`Store::workos_mirror_fan_out`]
//! follows the log from a position kept in the database and marks the
//! targets of each event pending in the same transaction that moves the
//! position, so a crash loses nothing. A target is one row per org and per
//! (org, WorkOS user): many events about it collapse into one sync of its
//! state at that time, and `generation` keeps a sync that began before a
//! newer event from marking it synced. Syncing is leased per target
//! ([`Store::claim_workos_targets`]), and a replica never takes a target of
//! an org another replica is syncing, so one org's calls go out one at a time.
//!
//! This module stores what it is given: which issuers are WorkOS's is the
//! caller's rule, retry times arrive computed.

use orgplane_core::{OrgId, Timestamp};

use crate::webhooks::with_pool;
use crate::{Backend, BackendKind, BeginWrite, Result, Store, from_millis, millis};

/// Event types that change what WorkOS must hold.
const ORG_EVENTS: &[&str] = &["org.created", "org.updated", "org.deleted", "org.converted"];
const MEMBER_EVENTS: &[&str] = &["member.added", "member.role_changed", "member.removed", "member.left"];

/// A target leased to this replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorTarget {
    pub org_id: String,
    /// `None`: the org itself; `Some`: the membership of this orgplane user.
    pub user_id: Option<String>,
    /// The member's WorkOS user id (empty for the org).
    pub workos_user_id: String,
    pub generation: i64,
    /// Failed syncs in a row before this one.
    pub failures: u32,
}

/// What an org is now, as WorkOS should show it.
#[derive(Debug, Clone)]
pub struct MirrorOrg {
    pub name: String,
    pub billing_email: Option<String>,
    pub personal: bool,
}

/// A target whose syncs keep failing.
#[derive(Debug, Clone)]
pub struct MirrorFailure {
    pub org_id: String,
    pub user_id: Option<String>,
    pub attempts: i64,
    pub failures: i64,
    pub failing_since: Option<Timestamp>,
    pub last_error: Option<String>,
    pub next_attempt_at: Timestamp,
}

/// What one step of the fan-out did.
#[derive(Debug, Clone, Copy, Default)]
pub struct MirrorFanOut {
    pub events: usize,
    pub targets: usize,
    /// Another replica holds the log position (PostgreSQL): nothing done.
    pub busy: bool,
}

const MARK_PENDING: &str = "INSERT INTO workos_mirror_targets (org_id, user_id, workos_user_id, status, next_attempt_at, updated_at) \
     VALUES ($1, $2, $3, 'pending', $4, $4) ON CONFLICT (org_id, user_id) DO UPDATE SET status = 'pending', \
     generation = workos_mirror_targets.generation + 1, workos_user_id = excluded.workos_user_id, \
     next_attempt_at = CASE WHEN workos_mirror_targets.status = 'pending' THEN workos_mirror_targets.next_attempt_at ELSE excluded.next_attempt_at END, \
     updated_at = excluded.updated_at";

/// The claim statement, with `$lock` after the inner select.
macro_rules! claim_sql {
    ($lock:literal) => {
        concat!(
            "UPDATE workos_mirror_targets SET lease_owner = $1, lease_until = $2 WHERE (org_id, user_id) IN (",
            "SELECT t.org_id, t.user_id FROM workos_mirror_targets t WHERE t.status = 'pending' AND t.next_attempt_at <= $3 ",
            "AND (t.lease_until IS NULL OR t.lease_until < $3) ",
            "AND NOT EXISTS (SELECT 1 FROM workos_mirror_targets o WHERE o.org_id = t.org_id AND o.lease_until >= $3) ",
            "ORDER BY t.next_attempt_at, t.org_id, t.user_id LIMIT $4",
            $lock,
            ") RETURNING org_id, user_id, workos_user_id, generation, failures"
        )
    };
}

impl Store {
    /// One step of the fan-out: up to `limit` events after the position mark
    /// their targets pending, and the position moves past them, in one
    /// transaction. A membership is a target only if its user's issuer
    /// passes `is_workos` (its WorkOS user id is the subject).
    pub async fn workos_mirror_fan_out(
        &self,
        limit: u32,
        now: Timestamp,
        is_workos: &(dyn Fn(&str) -> bool + Sync),
    ) -> Result<MirrorFanOut> {
        let lock = match self.kind() {
            BackendKind::Sqlite => "SELECT after_seq FROM workos_mirror_position WHERE name = 'events'",
            BackendKind::Postgres => {
                "SELECT after_seq FROM workos_mirror_position WHERE name = 'events' FOR UPDATE SKIP LOCKED"
            }
        };
        let out = with_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let position: Option<(i64,)> = sqlx::query_as(lock).fetch_optional(&mut **tx).await?;
            let Some((after,)) = position else {
                return Ok(MirrorFanOut { busy: true, ..MirrorFanOut::default() });
            };
            let events: Vec<(i64, Option<String>, String, String)> =
                sqlx::query_as("SELECT seq, org_id, type, data FROM events WHERE seq > $1 ORDER BY seq LIMIT $2")
                    .bind(after)
                    .bind(i64::from(limit))
                    .fetch_all(&mut **tx)
                    .await?;
            let Some(last) = events.last().map(|e| e.0) else {
                return Ok(MirrorFanOut::default());
            };
            let mut targets = 0;
            for (_, org, kind, data) in &events {
                let Some(org) = org else { continue };
                let mut members: Vec<String> = Vec::new();
                if ORG_EVENTS.contains(&kind.as_str()) {
                    sqlx::query(MARK_PENDING).bind(org.clone()).bind(String::new()).bind(String::new()).bind(millis(now))
                        .execute(&mut **tx).await?;
                    targets += 1;
                    if kind == "org.created" || kind == "org.converted" {
                        // The creator is a member without a `member.added`; a
                        // converted org is mirrored from now on if personal orgs
                        // were not: every member with it.
                        let rows: Vec<(String,)> = sqlx::query_as("SELECT user_id FROM memberships WHERE org_id = $1")
                            .bind(org.clone()).fetch_all(&mut **tx).await?;
                        members.extend(rows.into_iter().map(|(u,)| u));
                    }
                } else if MEMBER_EVENTS.contains(&kind.as_str()) {
                    let data: serde_json::Value = serde_json::from_str(data).unwrap_or_default();
                    if let Some(user) = data.get("user_id").and_then(|u| u.as_str()) {
                        members.push(user.to_owned());
                    }
                }
                for user in members {
                    let identity: Option<(String, String)> =
                        sqlx::query_as("SELECT issuer, subject FROM users WHERE id = $1").bind(user.clone()).fetch_optional(&mut **tx).await?;
                    // A user deleted meanwhile: their memberships went with them, and so do WorkOS's with its user.
                    let Some((issuer, subject)) = identity else { continue };
                    if !is_workos(&issuer) {
                        continue;
                    }
                    sqlx::query(MARK_PENDING).bind(org.clone()).bind(user).bind(subject).bind(millis(now))
                        .execute(&mut **tx).await?;
                    targets += 1;
                }
            }
            sqlx::query("UPDATE workos_mirror_position SET after_seq = $1 WHERE name = 'events'").bind(last).execute(&mut **tx).await?;
            tx.commit().await?;
            MirrorFanOut { events: events.len(), targets, busy: false }
        });
        Ok(out)
    }

    /// Marks every org, and every membership of a WorkOS user, pending (the
    /// backfill of orgs that existed before the mirror); returns how many.
    /// Repeating it only syncs again what is already in step.
    pub async fn workos_mirror_backfill(
        &self,
        now: Timestamp,
        is_workos: &(dyn Fn(&str) -> bool + Sync),
    ) -> Result<usize> {
        let marked = with_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let orgs: Vec<(String,)> = sqlx::query_as("SELECT id FROM orgs ORDER BY id").fetch_all(&mut **tx).await?;
            let mut marked = 0;
            for (org,) in &orgs {
                sqlx::query(MARK_PENDING).bind(org.clone()).bind(String::new()).bind(String::new()).bind(millis(now))
                    .execute(&mut **tx).await?;
                marked += 1;
            }
            let members: Vec<(String, String, String, String)> = sqlx::query_as(
                "SELECT m.org_id, m.user_id, u.issuer, u.subject FROM memberships m JOIN users u ON u.id = m.user_id ORDER BY m.org_id, m.user_id",
            )
            .fetch_all(&mut **tx)
            .await?;
            for (org, user, issuer, subject) in members {
                if is_workos(&issuer) {
                    sqlx::query(MARK_PENDING).bind(org).bind(user).bind(subject).bind(millis(now)).execute(&mut **tx).await?;
                    marked += 1;
                }
            }
            tx.commit().await?;
            marked
        });
        Ok(marked)
    }

    /// Leases up to `limit` pending targets due at `now` to `owner` until
    /// `until`, orgs before their memberships. Targets of an org whose
    /// other target is leased (to anyone, unexpired) are left for later.
    pub async fn claim_workos_targets(
        &self,
        owner: &str,
        now: Timestamp,
        until: Timestamp,
        limit: u32,
    ) -> Result<Vec<MirrorTarget>> {
        // The same statement on both, PostgreSQL's skipping rows another replica is claiming.
        let sql = match self.kind() {
            BackendKind::Sqlite => claim_sql!(""),
            BackendKind::Postgres => claim_sql!(" FOR UPDATE SKIP LOCKED"),
        };
        let rows: Vec<(String, String, String, i64, i64)> = with_pool!(self, pool => {
            sqlx::query_as(sql)
                .bind(owner.to_owned())
                .bind(millis(until))
                .bind(millis(now))
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?
        });
        let mut targets: Vec<MirrorTarget> = rows
            .into_iter()
            .map(|(org_id, user, workos_user_id, generation, failures)| MirrorTarget {
                org_id,
                user_id: (!user.is_empty()).then_some(user),
                workos_user_id,
                generation,
                failures: u32::try_from(failures).unwrap_or(u32::MAX),
            })
            .collect();
        targets.sort_by(|a, b| (&a.org_id, &a.user_id).cmp(&(&b.org_id, &b.user_id)));
        Ok(targets)
    }

    /// Settles `owner`'s sync of a target that began at `generation`: a
    /// success marks it synced (unless an event came meanwhile), a failure
    /// keeps it pending until `retry_at` with `error` shown as its last.
    pub async fn record_workos_sync(
        &self,
        target: &MirrorTarget,
        owner: &str,
        now: Timestamp,
        failure: Option<(String, Timestamp)>,
    ) -> Result<()> {
        let failed = failure.is_some();
        let (error, next) = match failure {
            Some((error, at)) => (Some(error), millis(at)),
            None => (None, millis(now)),
        };
        with_pool!(self, pool => {
            let _gate = crate::sql::Sql::write_permit(pool).await?;
            sqlx::query(
                "UPDATE workos_mirror_targets SET attempts = attempts + 1, \
                 failures = CASE WHEN $3 THEN failures + 1 ELSE 0 END, \
                 failing_since = CASE WHEN $3 THEN COALESCE(failing_since, $5) ELSE NULL END, \
                 last_error = $4, next_attempt_at = $6, \
                 status = CASE WHEN NOT $3 AND generation = $7 THEN 'synced' ELSE 'pending' END, \
                 lease_owner = NULL, lease_until = NULL, updated_at = $5 \
                 WHERE org_id = $1 AND user_id = $2 AND lease_owner = $8",
            )
            .bind(target.org_id.clone())
            .bind(target.user_id.clone().unwrap_or_default())
            .bind(failed)
            .bind(error)
            .bind(millis(now))
            .bind(next)
            .bind(target.generation)
            .bind(owner.to_owned())
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Ends `owner`'s leases (a replica shutting down): its targets are free at once.
    pub async fn release_workos_leases(&self, owner: &str) -> Result<()> {
        with_pool!(self, pool => {
            let _gate = crate::sql::Sql::write_permit(pool).await?;
            sqlx::query("UPDATE workos_mirror_targets SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = $1")
                .bind(owner.to_owned())
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// The org as WorkOS should show it (`None`: deleted).
    pub async fn workos_mirror_org(&self, org: &str) -> Result<Option<MirrorOrg>> {
        let row: Option<(String, Option<String>, String)> = with_pool!(self, pool => {
            sqlx::query_as("SELECT name, billing_email, kind FROM orgs WHERE id = $1").bind(org.to_owned()).fetch_optional(pool).await?
        });
        Ok(row.map(|(name, billing_email, kind)| MirrorOrg { name, billing_email, personal: kind == "personal" }))
    }

    /// The member's role now (`None`: not a member, or the org is gone).
    pub async fn workos_mirror_member_role(&self, org: &str, user: &str) -> Result<Option<String>> {
        let row: Option<(String,)> = with_pool!(self, pool => {
            sqlx::query_as("SELECT role FROM memberships WHERE org_id = $1 AND user_id = $2")
                .bind(org.to_owned())
                .bind(user.to_owned())
                .fetch_optional(pool)
                .await?
        });
        Ok(row.map(|(role,)| role))
    }

    /// The org's WorkOS id, once known.
    pub async fn workos_organization_id(&self, org: OrgId) -> Result<Option<String>> {
        let row: Option<(String,)> = with_pool!(self, pool => {
            sqlx::query_as("SELECT workos_organization_id FROM workos_organizations WHERE org_id = $1")
                .bind(org.to_string())
                .fetch_optional(pool)
                .await?
        });
        Ok(row.map(|(id,)| id))
    }

    /// Records the org's WorkOS id (`None`: it is gone from WorkOS).
    pub async fn set_workos_organization_id(&self, org: &str, id: Option<&str>, now: Timestamp) -> Result<()> {
        with_pool!(self, pool => {
            let _gate = crate::sql::Sql::write_permit(pool).await?;
            match id {
                Some(id) => sqlx::query(
                    "INSERT INTO workos_organizations (org_id, workos_organization_id, updated_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (org_id) DO UPDATE SET workos_organization_id = excluded.workos_organization_id, updated_at = excluded.updated_at",
                )
                .bind(org.to_owned())
                .bind(id.to_owned())
                .bind(millis(now))
                .execute(pool)
                .await?,
                None => sqlx::query("DELETE FROM workos_organizations WHERE org_id = $1").bind(org.to_owned()).execute(pool).await?,
            };
        });
        Ok(())
    }

    /// Targets whose last sync failed, longest failing first.
    pub async fn workos_mirror_failures(&self, limit: u32) -> Result<Vec<MirrorFailure>> {
        type Row = (String, String, i64, i64, Option<i64>, Option<String>, i64);
        let rows: Vec<Row> = with_pool!(self, pool => {
            sqlx::query_as(
                "SELECT org_id, user_id, attempts, failures, failing_since, last_error, next_attempt_at \
                 FROM workos_mirror_targets WHERE failures > 0 ORDER BY failing_since, org_id, user_id LIMIT $1",
            )
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?
        });
        rows.into_iter()
            .map(|(org_id, user, attempts, failures, since, last_error, next)| {
                Ok(MirrorFailure {
                    org_id,
                    user_id: (!user.is_empty()).then_some(user),
                    attempts,
                    failures,
                    failing_since: since.map(from_millis).transpose()?,
                    last_error,
                    next_attempt_at: from_millis(next)?,
                })
            })
            .collect()
    }

    /// How many targets are waiting to be synced.
    pub async fn workos_mirror_pending(&self) -> Result<i64> {
        let (n,): (i64,) = with_pool!(self, pool => {
            sqlx::query_as("SELECT COUNT(*) FROM workos_mirror_targets WHERE status = 'pending'").fetch_one(pool).await?
        });
        Ok(n)
    }
}
