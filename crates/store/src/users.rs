//! Users, their personal organizations, and the active org.

use orgplane_core::org::{Membership, Org, OrgKind, User};
use orgplane_core::roles::RoleName;
use orgplane_core::{DomainError, OrgId, Timestamp, UserId};

use crate::orgs::{OrgRow, org_from_row};
use crate::{Actor, BeginWrite, Result, Store, StoreError, from_millis, millis, on_pool, parse_id, record_event};

/// What a verified token says about its user.
#[derive(Debug, Clone)]
pub struct NewIdentity {
    pub issuer: String,
    pub subject: String,
    pub email: Option<String>,
    pub email_verified: bool,
    pub name: Option<String>,
}

/// `GET /v1/me`: the user and every org they belong to.
#[derive(Debug, Clone)]
pub struct MeRecord {
    pub user: User,
    pub memberships: Vec<(Membership, Org)>,
}

type MembershipOrgRow = (String, i64, String, String, Option<String>, String, i64, i64);
pub(crate) type UserRow = (String, String, String, Option<String>, bool, Option<String>, Option<String>, i64);

pub(crate) fn user_from_row(row: UserRow) -> Result<User> {
    let (id, issuer, subject, email, email_verified, name, active, created) = row;
    Ok(User {
        id: parse_id(&id)?,
        issuer,
        subject,
        email,
        email_verified,
        name,
        active_org_id: active.as_deref().map(parse_id).transpose()?,
        created_at: from_millis(created)?,
    })
}

const SELECT_BY_SUBJECT: &str = "SELECT id, issuer, subject, email, email_verified, name, active_org_id, created_at FROM users WHERE issuer = $1 AND subject = $2";

/// Creates `user`'s personal org inside the caller's transaction unless the
/// user already has one (the unique `personal_user_id` decides, so racing
/// callers agree), and points a missing active org at it.
macro_rules! ensure_personal_in_tx {
    ($tx:expr, $user_id:expr, $display:expr, $now:expr) => {{
        let org_id = OrgId::new();
        let name = format!("{}'s workspace", $display);
        let inserted = sqlx::query(
            "INSERT INTO orgs (id, kind, name, personal_user_id, settings, created_at, updated_at) \
             VALUES ($1, 'personal', $2, $3, '{}', $4, $4) ON CONFLICT (personal_user_id) DO NOTHING",
        )
        .bind(org_id.to_string())
        .bind(&name)
        .bind($user_id.to_string())
        .bind(millis($now))
        .execute(&mut *$tx)
        .await?
        .rows_affected();
        if inserted == 1 {
            sqlx::query("INSERT INTO memberships (org_id, user_id, role, created_at) VALUES ($1, $2, 'owner', $3)")
                .bind(org_id.to_string())
                .bind($user_id.to_string())
                .bind(millis($now))
                .execute(&mut *$tx)
                .await?;
            record_event!(
                $tx,
                org_id.to_string(),
                "org.created",
                Actor::User($user_id),
                serde_json::json!({"org_id": org_id, "kind": "personal", "name": name}),
                $now
            )?;
        }
        let personal: (String,) = sqlx::query_as("SELECT id FROM orgs WHERE personal_user_id = $1")
            .bind($user_id.to_string())
            .fetch_one(&mut *$tx)
            .await?;
        sqlx::query("UPDATE users SET active_org_id = $1 WHERE id = $2 AND active_org_id IS NULL")
            .bind(&personal.0)
            .bind($user_id.to_string())
            .execute(&mut *$tx)
            .await?;
        parse_id::<OrgId>(&personal.0)?
    }};
}

impl Store {
    /// The user behind a verified token, created just in time with their
    /// personal org in one transaction. Safe under concurrent first requests:
    /// `(issuer, subject)` and `personal_user_id` are unique, so racing
    /// callers converge on one user and one personal org.
    pub async fn provision_user(&self, identity: &NewIdentity, now: Timestamp) -> Result<User> {
        on_pool!(self, pool => {
            let existing: Option<UserRow> = sqlx::query_as(SELECT_BY_SUBJECT)
                .bind(&identity.issuer)
                .bind(&identity.subject)
                .fetch_optional(pool)
                .await?;
            if let Some(row) = existing {
                let user = user_from_row(row)?;
                let email_changed = identity.email.is_some()
                    && (user.email != identity.email || user.email_verified != identity.email_verified);
                let name_changed = identity.name.is_some() && user.name != identity.name;
                if !email_changed && !name_changed {
                    return Ok(user);
                }
                // Keep the email in step with the token's verified claim.
                sqlx::query(
                    "UPDATE users SET email = COALESCE($1, email), email_verified = $2, name = COALESCE($3, name), updated_at = $4 WHERE id = $5",
                )
                .bind(&identity.email)
                .bind(identity.email.is_some() && identity.email_verified || (identity.email.is_none() && user.email_verified))
                .bind(&identity.name)
                .bind(millis(now))
                .bind(user.id.to_string())
                .execute(pool)
                .await?;
                let row: UserRow = sqlx::query_as(SELECT_BY_SUBJECT)
                    .bind(&identity.issuer)
                    .bind(&identity.subject)
                    .fetch_one(pool)
                    .await?;
                self.touched_user(user.id).await;
                return user_from_row(row);
            }

            let mut tx = pool.begin_write().await?;
            let new_id = UserId::new();
            let inserted = sqlx::query(
                "INSERT INTO users (id, issuer, subject, email, email_verified, name, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $7) ON CONFLICT (issuer, subject) DO NOTHING",
            )
            .bind(new_id.to_string())
            .bind(&identity.issuer)
            .bind(&identity.subject)
            .bind(&identity.email)
            .bind(identity.email_verified)
            .bind(&identity.name)
            .bind(millis(now))
            .execute(&mut *tx)
            .await?
            .rows_affected();
            let row: UserRow = sqlx::query_as(SELECT_BY_SUBJECT)
                .bind(&identity.issuer)
                .bind(&identity.subject)
                .fetch_one(&mut *tx)
                .await?;
            let user = user_from_row(row)?;
            if inserted == 1 {
                record_event!(tx, None::<String>, "user.created", Actor::User(user.id),
                    serde_json::json!({"user_id": user.id, "email": user.email}), now)?;
                let display = user.name.clone().or_else(|| user.email.clone()).unwrap_or_else(|| "Personal".to_owned());
                ensure_personal_in_tx!(tx, user.id, display, now);
            }
            tx.commit().await?;
            self.user(user.id).await
        })
    }

    pub async fn user(&self, id: UserId) -> Result<User> {
        on_pool!(self, pool => {
            let row: Option<UserRow> = sqlx::query_as(
                "SELECT id, issuer, subject, email, email_verified, name, active_org_id, created_at FROM users WHERE id = $1",
            )
            .bind(id.to_string())
            .fetch_optional(pool)
            .await?;
            user_from_row(row.ok_or(DomainError::NotFound { what: "user" })?)
        })
    }

    /// The user and their memberships, oldest first.
    pub async fn me(&self, id: UserId) -> Result<MeRecord> {
        let user = self.user(id).await?;
        let memberships = on_pool!(self, pool => {
            let rows: Vec<MembershipOrgRow> = sqlx::query_as(
                "SELECT m.role, m.created_at, o.id, o.kind, o.billing_email, o.name, o.created_at, o.updated_at \
                 FROM memberships m JOIN orgs o ON o.id = m.org_id WHERE m.user_id = $1 ORDER BY o.id",
            )
            .bind(id.to_string())
            .fetch_all(pool)
            .await?;
            let mut out = Vec::with_capacity(rows.len());
            for (role, joined, org_id, kind, billing_email, name, created, updated) in rows {
                let org_id: OrgId = parse_id(&org_id)?;
                let kind = OrgKind::parse(&kind).ok_or_else(|| StoreError::Corrupt(format!("org kind `{kind}`")))?;
                let membership = Membership {
                    org_id,
                    user_id: id,
                    role: RoleName::parse(&role).map_err(|e| StoreError::Corrupt(e.to_string()))?,
                    created_at: from_millis(joined)?,
                };
                let org = Org {
                    id: org_id,
                    kind,
                    name,
                    billing_email,
                    settings: serde_json::Value::Object(Default::default()),
                    created_at: from_millis(created)?,
                    updated_at: from_millis(updated)?,
                };
                out.push((membership, org));
            }
            out
        });
        Ok(MeRecord { user, memberships })
    }

    /// Returns the user's personal org, creating it if missing. Idempotent and
    /// race-safe (see [`Store::provision_user`]).
    pub async fn ensure_personal_org(&self, user: UserId, now: Timestamp) -> Result<Org> {
        let me = self.user(user).await?;
        let display = me.name.clone().or_else(|| me.email.clone()).unwrap_or_else(|| "Personal".to_owned());
        let org_id = on_pool!(self, pool => {
            let existing: Option<(String,)> = sqlx::query_as("SELECT id FROM orgs WHERE personal_user_id = $1")
                .bind(user.to_string())
                .fetch_optional(pool)
                .await?;
            match existing {
                Some((id,)) => parse_id::<OrgId>(&id)?,
                None => {
                    let mut tx = pool.begin_write().await?;
                    let id = ensure_personal_in_tx!(tx, user, display, now);
                    tx.commit().await?;
                    self.touched_user(user).await;
                    id
                }
            }
        });
        self.org(org_id).await
    }

    /// Points the user's active org at `org`, which they must belong to.
    pub async fn set_active_org(&self, user: UserId, org: OrgId) -> Result<()> {
        on_pool!(self, pool => {
            let done = sqlx::query(
                "UPDATE users SET active_org_id = $1 WHERE id = $2 \
                 AND EXISTS (SELECT 1 FROM memberships WHERE org_id = $1 AND user_id = $2)",
            )
            .bind(org.to_string())
            .bind(user.to_string())
            .execute(pool)
            .await?
            .rows_affected();
            if done == 0 {
                return Err(DomainError::NotFound { what: "organization" }.into());
            }
        });
        self.touched_user(user).await;
        Ok(())
    }

    pub(crate) async fn org_row(&self, id: OrgId) -> Result<Option<OrgRow>> {
        Ok(on_pool!(self, pool => {
            sqlx::query_as(crate::orgs::SELECT_ORG).bind(id.to_string()).fetch_optional(pool).await?
        }))
    }

    pub async fn org(&self, id: OrgId) -> Result<Org> {
        let row = self.org_row(id).await?.ok_or(DomainError::NotFound { what: "organization" })?;
        org_from_row(row)
    }
}
