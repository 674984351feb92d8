//! Portal sessions: a single-use link minted for one member of one org, and
//! the browser session that opening it starts.
//!
//! Only hashes of the link token and of the session cookie are stored. Each
//! session row references its membership with `ON DELETE CASCADE`: a member
//! removed from the org (or a deleted org or user) loses every portal
//! session in the same transaction, with no code here to forget it.
//! Opening a link is one conditional `UPDATE`, so a link opens at most once
//! even when two browsers race for it.

use std::time::Duration;

use orgplane_core::{DomainError, OrgId, PortalSessionId, Timestamp, UserId};
use sqlx::Pool;

use crate::sql::{Sql, query, query_as};
use crate::{Backend, Result, Store, from_millis, millis, parse_id};

/// A link to mint.
#[derive(Debug, Clone)]
pub struct NewPortalSession {
    pub org: OrgId,
    pub user: UserId,
    /// SHA-256 (hex) of the link's token.
    pub link_hash: String,
    pub link_expires_at: Timestamp,
    pub return_url: Option<String>,
}

/// A portal session as stored.
#[derive(Debug, Clone)]
pub struct PortalSessionRecord {
    pub id: PortalSessionId,
    pub org_id: OrgId,
    pub user_id: UserId,
    pub link_expires_at: Timestamp,
    pub return_url: Option<String>,
    /// The per-session CSRF token (set when the link is opened).
    pub csrf_token: Option<String>,
    pub opened_at: Option<Timestamp>,
    pub last_seen_at: Option<Timestamp>,
    pub ended_at: Option<Timestamp>,
}

/// What opening a link did.
#[derive(Debug, Clone)]
pub enum LinkOpening {
    /// The link was unused and in time: the session is open now.
    Opened(PortalSessionRecord),
    /// The link had been opened before.
    AlreadyUsed(PortalSessionRecord),
    /// The link's 5 minutes had passed.
    Expired(PortalSessionRecord),
    /// No link has this token (never minted, or its member was removed).
    Unknown,
}

/// What a session cookie stands for now.
#[derive(Debug, Clone)]
pub enum SessionLookup {
    Live(PortalSessionRecord),
    /// Unused for longer than the idle timeout.
    IdleExpired(PortalSessionRecord),
    /// Logged out.
    Ended(PortalSessionRecord),
    /// No session has this cookie (never, or its membership is gone).
    Unknown,
}

type SessionRow = (String, String, String, i64, Option<String>, Option<String>, Option<i64>, Option<i64>, Option<i64>);

fn record_from_row(row: SessionRow) -> Result<PortalSessionRecord> {
    let (id, org, user, link_expires, return_url, csrf, opened, seen, ended) = row;
    Ok(PortalSessionRecord {
        id: parse_id(&id)?,
        org_id: parse_id(&org)?,
        user_id: parse_id(&user)?,
        link_expires_at: from_millis(link_expires)?,
        return_url,
        csrf_token: csrf,
        opened_at: opened.map(from_millis).transpose()?,
        last_seen_at: seen.map(from_millis).transpose()?,
        ended_at: ended.map(from_millis).transpose()?,
    })
}

/// Every column of a session, in [`SessionRow`]'s order.
macro_rules! session_columns {
    () => {
        "id, org_id, user_id, link_expires_at, return_url, csrf_token, opened_at, last_seen_at, ended_at"
    };
}

/// `$4` twice: the link must still be in time, and that moment is the
/// session's first use.
const OPEN: &str = concat!(
    "UPDATE portal_sessions SET cookie_hash = $2, csrf_token = $3, opened_at = $4, last_seen_at = $4 ",
    "WHERE link_hash = $1 AND opened_at IS NULL AND ended_at IS NULL AND link_expires_at > $4 RETURNING ",
    session_columns!()
);
const BY_LINK: &str = concat!("SELECT ", session_columns!(), " FROM portal_sessions WHERE link_hash = $1");
const BY_COOKIE: &str = concat!("SELECT ", session_columns!(), " FROM portal_sessions WHERE cookie_hash = $1");

/// A session seen within this long is not written again on the next
/// request: page views stay reads, and idleness is measured to within it.
const TOUCH_EVERY: time::Duration = time::Duration::seconds(30);

impl Store {
    /// Mints a link for a member of the org: `not_found` (`member`) when the
    /// user is not a member, decided by the same statement that inserts.
    pub async fn create_portal_session(&self, new: &NewPortalSession, now: Timestamp) -> Result<PortalSessionRecord> {
        let id = PortalSessionId::new();
        match &self.backend {
            Backend::Sqlite(pool) => create(pool, id, new, now).await,
            Backend::Postgres(pool) => create(pool, id, new, now).await,
        }?;
        Ok(PortalSessionRecord {
            id,
            org_id: new.org,
            user_id: new.user,
            link_expires_at: new.link_expires_at,
            return_url: new.return_url.clone(),
            csrf_token: None,
            opened_at: None,
            last_seen_at: None,
            ended_at: None,
        })
    }

    /// Opens the link whose token hashes to `link_hash`, once: the session
    /// gets its cookie hash and CSRF token in the same statement that marks
    /// the link used.
    pub async fn open_portal_link(
        &self,
        link_hash: &str,
        cookie_hash: &str,
        csrf_token: &str,
        now: Timestamp,
    ) -> Result<LinkOpening> {
        match &self.backend {
            Backend::Sqlite(pool) => open(pool, link_hash, cookie_hash, csrf_token, now).await,
            Backend::Postgres(pool) => open(pool, link_hash, cookie_hash, csrf_token, now).await,
        }
    }

    /// The session of a cookie, as of `now` with `idle` as the idle timeout.
    /// A live session's last use is written at most every 30 seconds.
    pub async fn portal_session(&self, cookie_hash: &str, now: Timestamp, idle: Duration) -> Result<SessionLookup> {
        let row = match &self.backend {
            Backend::Sqlite(pool) => by_cookie(pool, cookie_hash).await,
            Backend::Postgres(pool) => by_cookie(pool, cookie_hash).await,
        }?;
        let Some(row) = row else { return Ok(SessionLookup::Unknown) };
        let record = record_from_row(row)?;
        if record.ended_at.is_some() {
            return Ok(SessionLookup::Ended(record));
        }
        let last = record.last_seen_at.or(record.opened_at).unwrap_or(record.link_expires_at);
        let idle = time::Duration::try_from(idle).unwrap_or(time::Duration::MAX);
        if now - last >= idle {
            return Ok(SessionLookup::IdleExpired(record));
        }
        if now - last >= TOUCH_EVERY {
            match &self.backend {
                Backend::Sqlite(pool) => touch(pool, record.id, now).await,
                Backend::Postgres(pool) => touch(pool, record.id, now).await,
            }?;
        }
        Ok(SessionLookup::Live(record))
    }

    /// Ends a session (log out): its cookie opens nothing any more.
    pub async fn end_portal_session(&self, id: PortalSessionId, now: Timestamp) -> Result<()> {
        match &self.backend {
            Backend::Sqlite(pool) => end(pool, id, now).await,
            Backend::Postgres(pool) => end(pool, id, now).await,
        }
    }
}

async fn create<DB: Sql>(pool: &Pool<DB>, id: PortalSessionId, new: &NewPortalSession, now: Timestamp) -> Result<()> {
    // Inserted only if the membership exists, in one statement; the foreign
    // key holds it from then on.
    let _gate = crate::sql::Sql::write_permit(pool).await?;
    let done = query(
        "INSERT INTO portal_sessions (id, org_id, user_id, link_hash, link_expires_at, return_url, created_at) \
         SELECT $1, $2, $3, $4, $5, $6, $7 WHERE EXISTS \
         (SELECT 1 FROM memberships WHERE org_id = $2 AND user_id = $3)",
    )
    .bind(id.to_string())
    .bind(new.org.to_string())
    .bind(new.user.to_string())
    .bind(new.link_hash.clone())
    .bind(millis(new.link_expires_at))
    .bind(new.return_url.clone())
    .bind(millis(now))
    .execute(pool)
    .await?;
    if done.rows_affected() == 0 {
        return Err(DomainError::NotFound { what: "member" }.into());
    }
    Ok(())
}

async fn open<DB: Sql>(
    pool: &Pool<DB>,
    link_hash: &str,
    cookie_hash: &str,
    csrf: &str,
    now: Timestamp,
) -> Result<LinkOpening> {
    let opened: Option<SessionRow> = query_as(OPEN)
        .bind(link_hash.to_owned())
        .bind(cookie_hash.to_owned())
        .bind(csrf.to_owned())
        .bind(millis(now))
        .fetch_optional(pool)
        .await?;
    if let Some(row) = opened {
        return Ok(LinkOpening::Opened(record_from_row(row)?));
    }
    // Why not: told apart for the page the browser sees, after the fact.
    let row: Option<SessionRow> = query_as(BY_LINK).bind(link_hash.to_owned()).fetch_optional(pool).await?;
    let Some(row) = row else { return Ok(LinkOpening::Unknown) };
    let record = record_from_row(row)?;
    Ok(if record.opened_at.is_some() { LinkOpening::AlreadyUsed(record) } else { LinkOpening::Expired(record) })
}

async fn by_cookie<DB: Sql>(pool: &Pool<DB>, cookie_hash: &str) -> Result<Option<SessionRow>> {
    Ok(query_as(BY_COOKIE).bind(cookie_hash.to_owned()).fetch_optional(pool).await?)
}

async fn touch<DB: Sql>(pool: &Pool<DB>, id: PortalSessionId, now: Timestamp) -> Result<()> {
    let _gate = crate::sql::Sql::write_permit(pool).await?;
    query("UPDATE portal_sessions SET last_seen_at = $2 WHERE id = $1 AND ended_at IS NULL AND last_seen_at < $2")
        .bind(id.to_string())
        .bind(millis(now))
        .execute(pool)
        .await?;
    Ok(())
}

async fn end<DB: Sql>(pool: &Pool<DB>, id: PortalSessionId, now: Timestamp) -> Result<()> {
    let _gate = crate::sql::Sql::write_permit(pool).await?;
    query("UPDATE portal_sessions SET ended_at = $2 WHERE id = $1 AND ended_at IS NULL")
        .bind(id.to_string())
        .bind(millis(now))
        .execute(pool)
        .await?;
    Ok(())
}
