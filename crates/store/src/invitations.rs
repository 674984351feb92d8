//! Invitations: create, list, revoke, resend, accept, decline.
//!
//! Tokens arrive here already hashed; the plaintext never touches the
//! database. Accepting locks the org, re-reads the invitation inside the
//! transaction and flips it from `pending` in the same statement that
//! checks it, so two concurrent accepts can't both succeed.

use orgplane_core::invitation::{Invitation, InvitationStatus, Invitee, check_settle};
use orgplane_core::org::OrgKind;
use orgplane_core::roles::RoleName;
use orgplane_core::{DomainError, Email, InvitationId, OrgId, Timestamp, UserId};

use sqlx::Pool;

use crate::entitlements::{Guard, inputs, usage};
use crate::sql::{Sql, query, query_as};
use crate::tx::{ensure_cursor_in_list, lock_org, record_event};
use crate::{Actor, Backend, BeginWrite, Page, PageRequest, Result, Store, StoreError, from_millis, millis, parse_id};

/// What the caller decided before asking the store to invite.
#[derive(Debug, Clone)]
pub struct NewInvitation {
    pub org: OrgId,
    pub email: Email,
    pub role: RoleName,
    pub invited_by: Option<UserId>,
    pub token_hash: String,
    pub expires_at: Timestamp,
}

/// A created or re-sent invitation (the plaintext token is the caller's).
#[derive(Debug, Clone)]
pub struct InvitationCreated {
    pub invitation: Invitation,
}

type InvitationRow = (String, String, String, String, String, Option<String>, i64, i64);
const INVITATION_COLUMNS_BY_ID: &str =
    "SELECT id, org_id, email, role, status, invited_by, expires_at, created_at FROM invitations WHERE id = $1";
const INVITATION_COLUMNS_BY_TOKEN: &str =
    "SELECT id, org_id, email, role, status, invited_by, expires_at, created_at FROM invitations WHERE token_hash = $1";

fn invitation_from_row(row: InvitationRow) -> Result<Invitation> {
    let (id, org_id, email, role, status, invited_by, expires, created) = row;
    Ok(Invitation {
        id: parse_id(&id)?,
        org_id: parse_id(&org_id)?,
        email,
        role: RoleName::parse(&role).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        status: InvitationStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("invitation status `{status}`")))?,
        invited_by: invited_by.as_deref().map(parse_id).transpose()?,
        expires_at: from_millis(expires)?,
        created_at: from_millis(created)?,
    })
}

fn duplicate(new: &NewInvitation) -> DomainError {
    DomainError::conflict(format!(
        "{} already has a pending invitation; resend it (POST /v1/orgs/{}/invitations/{{inv}}/resend) or revoke it first",
        new.email, new.org
    ))
}

impl Store {
    /// Invites `email` to a team org. A personal org takes no invitations; an
    /// address that is already a member, or already has a pending invitation,
    /// is a conflict.
    ///
    /// `guard` runs inside the org's lock with fresh usage (seats = members +
    /// pending invitations), after the structural check.
    pub async fn create_invitation(
        &self,
        new: &NewInvitation,
        guard: Guard<'_>,
        actor: &Actor,
        now: Timestamp,
    ) -> Result<Invitation> {
        let id = InvitationId::new();
        match &self.backend {
            Backend::Sqlite(pool) => create_invitation(pool, id, new, guard, actor, now).await,
            Backend::Postgres(pool) => create_invitation(pool, id, new, guard, actor, now).await,
        }?;
        self.touched(new.org).await;
        self.invitation(new.org, id).await
    }

    /// An invitation of `org` (any status), or `not_found`.
    pub async fn invitation(&self, org: OrgId, id: InvitationId) -> Result<Invitation> {
        let row = match &self.backend {
            Backend::Sqlite(pool) => invitation_by_id(pool, id).await,
            Backend::Postgres(pool) => invitation_by_id(pool, id).await,
        }?;
        match row.map(invitation_from_row).transpose()? {
            Some(inv) if inv.org_id == org => Ok(inv),
            _ => Err(DomainError::NotFound { what: "invitation" }.into()),
        }
    }

    /// Pending invitations of `org`, oldest first.
    pub async fn pending_invitations(&self, org: OrgId, page: &PageRequest) -> Result<Page<Invitation>> {
        let rows = match &self.backend {
            Backend::Sqlite(pool) => pending_invitations(pool, org, page).await,
            Backend::Postgres(pool) => pending_invitations(pool, org, page).await,
        }?;
        let data = rows.into_iter().map(invitation_from_row).collect::<Result<Vec<_>>>()?;
        Ok(Page::from_rows(data, page.limit))
    }

    /// Revokes a pending invitation.
    pub async fn revoke_invitation(&self, org: OrgId, id: InvitationId, actor: &Actor, now: Timestamp) -> Result<()> {
        self.settle_by_admin(org, id, None, actor, now).await.map(|_| ())
    }

    /// Gives a pending invitation a new token and a new expiry.
    pub async fn resend_invitation(
        &self,
        org: OrgId,
        id: InvitationId,
        token_hash: &str,
        expires_at: Timestamp,
        actor: &Actor,
        now: Timestamp,
    ) -> Result<Invitation> {
        self.settle_by_admin(org, id, Some((token_hash, expires_at)), actor, now).await
    }

    /// Revoke (no new token) or resend (a new token and expiry).
    async fn settle_by_admin(
        &self,
        org: OrgId,
        id: InvitationId,
        resend: Option<(&str, Timestamp)>,
        actor: &Actor,
        now: Timestamp,
    ) -> Result<Invitation> {
        match &self.backend {
            Backend::Sqlite(pool) => settle_by_admin(pool, org, id, resend, actor, now).await,
            Backend::Postgres(pool) => settle_by_admin(pool, org, id, resend, actor, now).await,
        }?;
        self.touched(org).await;
        self.invitation(org, id).await
    }

    /// Accepts (`accept = true`) or declines the invitation whose token hashes
    /// to `token_hash`, as `user`. Single use under concurrency: the status
    /// flips from `pending` inside the org's lock.
    /// On accept, `guard` runs inside the org's lock with fresh usage (seats
    /// are checked again: the plan may have changed since the invitation).
    pub async fn settle_invitation(
        &self,
        token_hash: &str,
        user: UserId,
        invitee: &Invitee<'_>,
        accept: bool,
        guard: Guard<'_>,
        now: Timestamp,
    ) -> Result<Invitation> {
        let (org, id) = match &self.backend {
            Backend::Sqlite(pool) => settle_invitation(pool, token_hash, user, invitee, accept, guard, now).await,
            Backend::Postgres(pool) => settle_invitation(pool, token_hash, user, invitee, accept, guard, now).await,
        }?;
        self.touched(org).await;
        self.touched_user(user).await;
        self.invitation(org, id).await
    }
}

async fn create_invitation<DB: Sql>(
    pool: &Pool<DB>,
    id: InvitationId,
    new: &NewInvitation,
    guard: Guard<'_>,
    actor: &Actor,
    now: Timestamp,
) -> Result<()> {
    let mut tx = pool.begin_write().await?;
    let kind = lock_org(&mut tx, new.org).await?;
    if kind == OrgKind::Personal {
        return Err(DomainError::personal_org(
            "a personal organization can't invite members; create a team organization (POST /v1/orgs) and invite there",
        )
        .into());
    }
    let already =
        query("SELECT u.id FROM memberships m JOIN users u ON u.id = m.user_id WHERE m.org_id = $1 AND u.email = $2")
            .bind(new.org.to_string())
            .bind(new.email.as_str().to_owned())
            .fetch_optional(&mut *tx)
            .await?;
    if already.is_some() {
        return Err(DomainError::conflict(format!("{} is already a member of this organization", new.email)).into());
    }
    // Expired pending invitations make way for a new one.
    query(
        "UPDATE invitations SET status = 'revoked', updated_at = $1 WHERE org_id = $2 AND email = $3 AND status = 'pending' AND expires_at <= $1",
    )
    .bind(millis(now))
    .bind(new.org.to_string())
    .bind(new.email.as_str().to_owned())
    .execute(&mut *tx)
    .await?;
    let (pending,): (i64,) =
        query_as("SELECT COUNT(*) FROM invitations WHERE org_id = $1 AND email = $2 AND status = 'pending'")
            .bind(new.org.to_string())
            .bind(new.email.as_str().to_owned())
            .fetch_one(&mut *tx)
            .await?;
    if pending > 0 {
        return Err(duplicate(new).into());
    }
    let inputs = inputs::<DB>(&mut tx, new.org).await?;
    let usage = usage::<DB>(&mut tx, new.org, now).await?;
    guard(&inputs, &usage)?;
    let inserted = query(
        "INSERT INTO invitations (id, org_id, email, role, token_hash, status, invited_by, expires_at, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, 'pending', $6, $7, $8, $8) ON CONFLICT DO NOTHING",
    )
    .bind(id.to_string())
    .bind(new.org.to_string())
    .bind(new.email.as_str().to_owned())
    .bind(new.role.as_str().to_owned())
    .bind(new.token_hash.clone())
    .bind(new.invited_by.map(|u| u.to_string()))
    .bind(millis(new.expires_at))
    .bind(millis(now))
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if inserted == 0 {
        return Err(duplicate(new).into());
    }
    let data = serde_json::json!({"org_id": new.org, "invitation_id": id, "email": new.email, "role": new.role});
    record_event(&mut tx, new.org, "invitation.created", actor, data, now).await?;
    tx.commit().await?;
    Ok(())
}

async fn invitation_by_id<DB: Sql>(pool: &Pool<DB>, id: InvitationId) -> Result<Option<InvitationRow>> {
    Ok(query_as(INVITATION_COLUMNS_BY_ID).bind(id.to_string()).fetch_optional(pool).await?)
}

async fn pending_invitations<DB: Sql>(pool: &Pool<DB>, org: OrgId, page: &PageRequest) -> Result<Vec<InvitationRow>> {
    let cursor = page.starting_after.as_deref().unwrap_or_default();
    let exists = "SELECT 1 FROM invitations WHERE org_id = $1 AND status = 'pending' AND id = $2";
    ensure_cursor_in_list(pool, page, exists, &[&org.to_string(), cursor]).await?;
    let rows = query_as(
        "SELECT id, org_id, email, role, status, invited_by, expires_at, created_at FROM invitations \
         WHERE org_id = $1 AND status = 'pending' AND id > $2 ORDER BY id LIMIT $3",
    )
    .bind(org.to_string())
    .bind(page.starting_after.clone().unwrap_or_default())
    .bind(i64::from(page.limit) + 1)
    .fetch_all(pool)
    .await?;
    Ok(rows)
}

async fn settle_by_admin<DB: Sql>(
    pool: &Pool<DB>,
    org: OrgId,
    id: InvitationId,
    resend: Option<(&str, Timestamp)>,
    actor: &Actor,
    now: Timestamp,
) -> Result<()> {
    let mut tx = pool.begin_write().await?;
    lock_org(&mut tx, org).await?;
    let changed = match resend {
        Some((hash, expires)) => {
            query(
                "UPDATE invitations SET token_hash = $1, expires_at = $2, updated_at = $3 \
                 WHERE id = $4 AND org_id = $5 AND status = 'pending'",
            )
            .bind(hash.to_owned())
            .bind(millis(expires))
            .bind(millis(now))
            .bind(id.to_string())
            .bind(org.to_string())
            .execute(&mut *tx)
            .await?
        }
        None => {
            query(
                "UPDATE invitations SET status = 'revoked', updated_at = $1 WHERE id = $2 AND org_id = $3 AND status = 'pending'",
            )
            .bind(millis(now))
            .bind(id.to_string())
            .bind(org.to_string())
            .execute(&mut *tx)
            .await?
        }
    }
    .rows_affected();
    if changed == 0 {
        let row: Option<InvitationRow> =
            query_as(INVITATION_COLUMNS_BY_ID).bind(id.to_string()).fetch_optional(&mut *tx).await?;
        return Err(match row.map(invitation_from_row).transpose()? {
            Some(inv) if inv.org_id == org => DomainError::conflict(format!(
                "this invitation is {} and can no longer be changed",
                inv.status.as_str()
            )),
            _ => DomainError::NotFound { what: "invitation" },
        }
        .into());
    }
    let kind = if resend.is_some() { "invitation.resent" } else { "invitation.revoked" };
    record_event(&mut tx, org, kind, actor, serde_json::json!({"org_id": org, "invitation_id": id}), now).await?;
    tx.commit().await?;
    Ok(())
}

/// Settles the invitation inside its org's lock; returns the org and the
/// invitation's id.
async fn settle_invitation<DB: Sql>(
    pool: &Pool<DB>,
    token_hash: &str,
    user: UserId,
    invitee: &Invitee<'_>,
    accept: bool,
    guard: Guard<'_>,
    now: Timestamp,
) -> Result<(OrgId, InvitationId)> {
    let no_match = || DomainError::NotFound { what: "invitation" };
    let row: Option<InvitationRow> =
        query_as(INVITATION_COLUMNS_BY_TOKEN).bind(token_hash.to_owned()).fetch_optional(pool).await?;
    let org = row.map(invitation_from_row).transpose()?.ok_or_else(no_match)?.org_id;

    let mut tx = pool.begin_write().await?;
    lock_org(&mut tx, org).await?;
    let row: Option<InvitationRow> =
        query_as(INVITATION_COLUMNS_BY_TOKEN).bind(token_hash.to_owned()).fetch_optional(&mut *tx).await?;
    let invitation = row.map(invitation_from_row).transpose()?.ok_or_else(no_match)?;
    check_settle(&invitation, invitee, now)?;
    if accept {
        let inputs = inputs::<DB>(&mut tx, org).await?;
        let usage = usage::<DB>(&mut tx, org, now).await?;
        guard(&inputs, &usage)?;
        let inserted = query(
            "INSERT INTO memberships (org_id, user_id, role, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        )
        .bind(org.to_string())
        .bind(user.to_string())
        .bind(invitation.role.as_str().to_owned())
        .bind(millis(now))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            return Err(DomainError::conflict("you are already a member of this organization").into());
        }
    }
    let status = if accept { "accepted" } else { "declined" };
    let flipped = query("UPDATE invitations SET status = $1, updated_at = $2 WHERE id = $3 AND status = 'pending'")
        .bind(status.to_owned())
        .bind(millis(now))
        .bind(invitation.id.to_string())
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if flipped != 1 {
        return Err(DomainError::conflict("this invitation has already been used").into());
    }
    let kind = if accept { "invitation.accepted" } else { "invitation.declined" };
    let actor = Actor::User(user);
    let data =
        serde_json::json!({"org_id": org, "invitation_id": invitation.id, "user_id": user, "role": invitation.role});
    record_event(&mut tx, org, kind, &actor, data, now).await?;
    if accept {
        let data = serde_json::json!({"org_id": org, "user_id": user, "role": invitation.role});
        record_event(&mut tx, org, "member.added", &actor, data, now).await?;
    }
    tx.commit().await?;
    Ok((org, invitation.id))
}
