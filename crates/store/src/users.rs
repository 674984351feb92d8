//! Users, their personal organizations, and the active org.

use orgplane_core::org::{Membership, Org, OrgKind, User};
use orgplane_core::roles::RoleName;
use orgplane_core::{DomainError, OrgId, Timestamp, UserId};

use sqlx::{Pool, Transaction};

use crate::orgs::{OrgRow, SELECT_ORG, org_from_row};
use crate::sql::{Sql, query, query_as};
use crate::tx::{record_event, record_user_event};
use crate::{Actor, Backend, BeginWrite, Result, Store, StoreError, from_millis, millis, parse_id};

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

impl Store {
    /// The user behind a verified token, created just in time with their
    /// personal org in one transaction. Safe under concurrent first requests:
    /// `(issuer, subject)` and `personal_user_id` are unique, so racing
    /// callers converge on one user and one personal org.
    ///
    /// A known user who has no personal org anymore (the clean-up deleted
    /// it, or a subscription made it a team org) gets a new one here, as on
    /// a first sign-in (`org.created`, and the active org if none is set),
    /// through [`Store::ensure_personal_org`]: racing requests converge on
    /// one org by the same unique `personal_user_id`.
    pub async fn provision_user(&self, identity: &NewIdentity, now: Timestamp) -> Result<User> {
        let existing = match &self.backend {
            Backend::Sqlite(pool) => user_and_personal_by_subject(pool, identity).await,
            Backend::Postgres(pool) => user_and_personal_by_subject(pool, identity).await,
        }?;
        let Some((mut user, has_personal)) = existing else {
            let id = match &self.backend {
                Backend::Sqlite(pool) => create_user(pool, identity, now).await,
                Backend::Postgres(pool) => create_user(pool, identity, now).await,
            }?;
            return self.user(id).await;
        };
        if !has_personal {
            self.ensure_personal_org(user.id, now).await?;
            user = self.user(user.id).await?;
        }
        let email_changed = identity.email.is_some()
            && (user.email != identity.email || user.email_verified != identity.email_verified);
        let name_changed = identity.name.is_some() && user.name != identity.name;
        if !email_changed && !name_changed {
            return Ok(user);
        }
        let user = match &self.backend {
            Backend::Sqlite(pool) => refresh_identity(pool, &user, identity, now).await,
            Backend::Postgres(pool) => refresh_identity(pool, &user, identity, now).await,
        }?;
        self.touched_user(user.id).await;
        Ok(user)
    }

    pub async fn user(&self, id: UserId) -> Result<User> {
        let row = match &self.backend {
            Backend::Sqlite(pool) => user(pool, id).await,
            Backend::Postgres(pool) => user(pool, id).await,
        }?;
        user_from_row(row.ok_or(DomainError::NotFound { what: "user" })?)
    }

    /// The user and their memberships, oldest first.
    pub async fn me(&self, id: UserId) -> Result<MeRecord> {
        let user = self.user(id).await?;
        let rows = match &self.backend {
            Backend::Sqlite(pool) => memberships_of(pool, id).await,
            Backend::Postgres(pool) => memberships_of(pool, id).await,
        }?;
        let mut memberships = Vec::with_capacity(rows.len());
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
            memberships.push((membership, org));
        }
        Ok(MeRecord { user, memberships })
    }

    /// Returns the user's personal org, creating it if missing. Idempotent and
    /// race-safe (see [`Store::provision_user`]).
    pub async fn ensure_personal_org(&self, user: UserId, now: Timestamp) -> Result<Org> {
        let me = self.user(user).await?;
        let display = me.name.clone().or_else(|| me.email.clone()).unwrap_or_else(|| "Personal".to_owned());
        let existing = match &self.backend {
            Backend::Sqlite(pool) => personal_org_of(pool, user).await,
            Backend::Postgres(pool) => personal_org_of(pool, user).await,
        }?;
        let org_id = match existing {
            Some(id) => id,
            None => {
                let id = match &self.backend {
                    Backend::Sqlite(pool) => create_personal_org(pool, user, &display, now).await,
                    Backend::Postgres(pool) => create_personal_org(pool, user, &display, now).await,
                }?;
                self.touched_user(user).await;
                id
            }
        };
        self.org(org_id).await
    }

    /// Points the user's active org at `org`, which they must belong to.
    pub async fn set_active_org(&self, user: UserId, org: OrgId) -> Result<()> {
        let done = match &self.backend {
            Backend::Sqlite(pool) => set_active_org(pool, user, org).await,
            Backend::Postgres(pool) => set_active_org(pool, user, org).await,
        }?;
        if !done {
            return Err(DomainError::NotFound { what: "organization" }.into());
        }
        self.touched_user(user).await;
        Ok(())
    }

    pub(crate) async fn org_row(&self, id: OrgId) -> Result<Option<OrgRow>> {
        match &self.backend {
            Backend::Sqlite(pool) => org_row(pool, id).await,
            Backend::Postgres(pool) => org_row(pool, id).await,
        }
    }

    pub async fn org(&self, id: OrgId) -> Result<Org> {
        let row = self.org_row(id).await?.ok_or(DomainError::NotFound { what: "organization" })?;
        org_from_row(row)
    }
}

/// The user of `identity`, and whether they have a personal org, in one read.
async fn user_and_personal_by_subject<DB: Sql>(
    pool: &Pool<DB>,
    identity: &NewIdentity,
) -> Result<Option<(User, bool)>> {
    type Row = (String, String, String, Option<String>, bool, Option<String>, Option<String>, i64, Option<String>);
    let row: Option<Row> = query_as(
        "SELECT u.id, u.issuer, u.subject, u.email, u.email_verified, u.name, u.active_org_id, u.created_at, \
         (SELECT o.id FROM orgs o WHERE o.personal_user_id = u.id) FROM users u WHERE u.issuer = $1 AND u.subject = $2",
    )
    .bind(identity.issuer.clone())
    .bind(identity.subject.clone())
    .fetch_optional(pool)
    .await?;
    row.map(|(id, issuer, subject, email, verified, name, active, created, personal)| {
        Ok((user_from_row((id, issuer, subject, email, verified, name, active, created))?, personal.is_some()))
    })
    .transpose()
}

/// Brings a known user's email and name in step with their token; returns
/// the user as stored now.
async fn refresh_identity<DB: Sql>(
    pool: &Pool<DB>,
    user: &User,
    identity: &NewIdentity,
    now: Timestamp,
) -> Result<User> {
    // Keep the email in step with the token's verified claim.
    let _gate = crate::sql::Sql::write_permit(pool).await?;
    query(
        "UPDATE users SET email = COALESCE($1, email), email_verified = $2, name = COALESCE($3, name), updated_at = $4 WHERE id = $5",
    )
    .bind(identity.email.clone())
    .bind(identity.email.is_some() && identity.email_verified || (identity.email.is_none() && user.email_verified))
    .bind(identity.name.clone())
    .bind(millis(now))
    .bind(user.id.to_string())
    .execute(pool)
    .await?;
    let row: UserRow = query_as(SELECT_BY_SUBJECT)
        .bind(identity.issuer.clone())
        .bind(identity.subject.clone())
        .fetch_one(pool)
        .await?;
    user_from_row(row)
}

/// Inserts the user and their personal org in one transaction (or finds
/// the user a racing request created); returns the user's id.
async fn create_user<DB: Sql>(pool: &Pool<DB>, identity: &NewIdentity, now: Timestamp) -> Result<UserId> {
    let mut tx = pool.begin_write().await?;
    let new_id = UserId::new();
    let inserted = query(
        "INSERT INTO users (id, issuer, subject, email, email_verified, name, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $7) ON CONFLICT (issuer, subject) DO NOTHING",
    )
    .bind(new_id.to_string())
    .bind(identity.issuer.clone())
    .bind(identity.subject.clone())
    .bind(identity.email.clone())
    .bind(identity.email_verified)
    .bind(identity.name.clone())
    .bind(millis(now))
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let row: UserRow = query_as(SELECT_BY_SUBJECT)
        .bind(identity.issuer.clone())
        .bind(identity.subject.clone())
        .fetch_one(&mut *tx)
        .await?;
    let user = user_from_row(row)?;
    if inserted == 1 {
        let data = serde_json::json!({"user_id": user.id, "email": user.email});
        record_user_event(&mut tx, "user.created", &Actor::User(user.id), data, now).await?;
        let display = user.name.clone().or_else(|| user.email.clone()).unwrap_or_else(|| "Personal".to_owned());
        ensure_personal(&mut tx, user.id, &display, now).await?;
    }
    tx.commit().await?;
    Ok(user.id)
}

async fn user<DB: Sql>(pool: &Pool<DB>, id: UserId) -> Result<Option<UserRow>> {
    let row = query_as(
        "SELECT id, issuer, subject, email, email_verified, name, active_org_id, created_at FROM users WHERE id = $1",
    )
    .bind(id.to_string())
    .fetch_optional(pool)
    .await?;
    Ok(row)
}

async fn memberships_of<DB: Sql>(pool: &Pool<DB>, user: UserId) -> Result<Vec<MembershipOrgRow>> {
    let rows = query_as(
        "SELECT m.role, m.created_at, o.id, o.kind, o.billing_email, o.name, o.created_at, o.updated_at \
         FROM memberships m JOIN orgs o ON o.id = m.org_id WHERE m.user_id = $1 ORDER BY o.id",
    )
    .bind(user.to_string())
    .fetch_all(pool)
    .await?;
    Ok(rows)
}

async fn personal_org_of<DB: Sql>(pool: &Pool<DB>, user: UserId) -> Result<Option<OrgId>> {
    let row: Option<(String,)> =
        query_as("SELECT id FROM orgs WHERE personal_user_id = $1").bind(user.to_string()).fetch_optional(pool).await?;
    row.map(|(id,)| parse_id(&id)).transpose()
}

async fn create_personal_org<DB: Sql>(pool: &Pool<DB>, user: UserId, display: &str, now: Timestamp) -> Result<OrgId> {
    let mut tx = pool.begin_write().await?;
    let id = ensure_personal(&mut tx, user, display, now).await?;
    tx.commit().await?;
    Ok(id)
}

/// Creates `user`'s personal org inside the caller's transaction unless the
/// user already has one (the unique `personal_user_id` decides, so racing
/// callers agree), and points a missing active org at it.
async fn ensure_personal<DB: Sql>(
    tx: &mut Transaction<'_, DB>,
    user: UserId,
    display: &str,
    now: Timestamp,
) -> Result<OrgId> {
    let org_id = OrgId::new();
    let name = format!("{display}'s workspace");
    let inserted = query(
        "INSERT INTO orgs (id, kind, name, personal_user_id, settings, created_at, updated_at) \
         VALUES ($1, 'personal', $2, $3, '{}', $4, $4) ON CONFLICT (personal_user_id) DO NOTHING",
    )
    .bind(org_id.to_string())
    .bind(name.clone())
    .bind(user.to_string())
    .bind(millis(now))
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if inserted == 1 {
        query("INSERT INTO memberships (org_id, user_id, role, created_at) VALUES ($1, $2, 'owner', $3)")
            .bind(org_id.to_string())
            .bind(user.to_string())
            .bind(millis(now))
            .execute(&mut **tx)
            .await?;
        let data = serde_json::json!({"org_id": org_id, "kind": "personal", "name": name});
        record_event(tx, org_id, "org.created", &Actor::User(user), data, now).await?;
    }
    let (personal,): (String,) =
        query_as("SELECT id FROM orgs WHERE personal_user_id = $1").bind(user.to_string()).fetch_one(&mut **tx).await?;
    query("UPDATE users SET active_org_id = $1 WHERE id = $2 AND active_org_id IS NULL")
        .bind(personal.clone())
        .bind(user.to_string())
        .execute(&mut **tx)
        .await?;
    parse_id(&personal)
}

/// Whether the user's active org now is `org` (false: not a member of it).
async fn set_active_org<DB: Sql>(pool: &Pool<DB>, user: UserId, org: OrgId) -> Result<bool> {
    let _gate = crate::sql::Sql::write_permit(pool).await?;
    let done = query(
        "UPDATE users SET active_org_id = $1 WHERE id = $2 \
         AND EXISTS (SELECT 1 FROM memberships WHERE org_id = $1 AND user_id = $2)",
    )
    .bind(org.to_string())
    .bind(user.to_string())
    .execute(pool)
    .await?
    .rows_affected();
    Ok(done == 1)
}

async fn org_row<DB: Sql>(pool: &Pool<DB>, id: OrgId) -> Result<Option<OrgRow>> {
    Ok(query_as(SELECT_ORG).bind(id.to_string()).fetch_optional(pool).await?)
}
