//! The event log: every state change, written in the change's transaction
//! and numbered (`seq`) in commit order, so that readers of the whole log
//! (the event stream, outgoing webhooks) go through it with an
//! [`EventCursor`] and never skip an event.

use orgplane_core::{OrgId, Timestamp};

use sqlx::Pool;

use crate::sql::{Sql, query_as};
use crate::{Backend, Page, PageRequest, Result, Store, StoreError, from_millis};

#[derive(Debug, Clone)]
pub struct EventRecord {
    /// The event's place in the commit-ordered log: a later commit has a
    /// higher number, so of two states of an org the higher `seq` is newer.
    pub seq: i64,
    pub id: String,
    pub org_id: Option<String>,
    pub kind: String,
    pub actor: String,
    pub data: serde_json::Value,
    pub created_at: Timestamp,
}

type EventRow = (i64, String, Option<String>, String, String, String, i64);

pub(crate) fn event_from_row((seq, id, org_id, kind, actor, data, created): EventRow) -> Result<EventRecord> {
    Ok(EventRecord {
        seq,
        id,
        org_id,
        kind,
        actor,
        data: serde_json::from_str(&data).map_err(|e| StoreError::Corrupt(format!("event data: {e}")))?,
        created_at: from_millis(created)?,
    })
}

impl Store {
    /// An org's events, newest first.
    pub async fn org_events(&self, org: OrgId, page: &PageRequest) -> Result<Page<EventRecord>> {
        let rows = match &self.backend {
            Backend::Sqlite(pool) => org_events(pool, org, page).await,
            Backend::Postgres(pool) => org_events(pool, org, page).await,
        }?;
        let data = rows.into_iter().map(event_from_row).collect::<Result<Vec<_>>>()?;
        Ok(Page::from_rows(data, page.limit))
    }
}

/// A reader's place in the whole log (the event stream, and outgoing
/// webhooks): right after the event numbered `after`.
///
/// The log is read in `seq` order, and `seq` is commit order on both
/// backends (SQLite's writers take turns; PostgreSQL numbers an event as its
/// transaction commits, see migration 0005). So every event a reader can see
/// after its cursor is final, and a later commit can only add events past
/// it: moving the cursor past what was read never skips one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventCursor {
    after: i64,
}

impl Store {
    /// A cursor at the end of the log: it reads the changes committed from now on.
    pub async fn event_cursor_at_end(&self) -> Result<EventCursor> {
        let seq = match &self.backend {
            Backend::Sqlite(pool) => last_seq(pool).await,
            Backend::Postgres(pool) => last_seq(pool).await,
        }?;
        Ok(EventCursor { after: seq.unwrap_or(0) })
    }

    /// A cursor right after event `id` (`None`: no such event), to resume a
    /// reader that got as far as it.
    pub async fn event_cursor_after(&self, id: &str) -> Result<Option<EventCursor>> {
        let seq = match &self.backend {
            Backend::Sqlite(pool) => seq_of(pool, id).await,
            Backend::Postgres(pool) => seq_of(pool, id).await,
        }?;
        Ok(seq.map(|after| EventCursor { after }))
    }

    /// Up to `limit` committed events after `cursor`, oldest first, and the
    /// cursor moved past them. An empty answer: nothing new yet.
    pub async fn next_events(&self, cursor: &mut EventCursor, limit: u32) -> Result<Vec<EventRecord>> {
        let rows = match &self.backend {
            Backend::Sqlite(pool) => events_after(pool, cursor.after, limit).await,
            Backend::Postgres(pool) => events_after(pool, cursor.after, limit).await,
        }?;
        let mut events = Vec::with_capacity(rows.len());
        let mut after = cursor.after;
        for row in rows {
            let event = event_from_row(row)?;
            after = event.seq;
            events.push(event);
        }
        // Moved only once every row converted: a corrupt row is met again, not passed.
        cursor.after = after;
        Ok(events)
    }
}

async fn org_events<DB: Sql>(pool: &Pool<DB>, org: OrgId, page: &PageRequest) -> Result<Vec<EventRow>> {
    let before = match &page.starting_after {
        Some(cursor) => {
            let row: Option<(i64,)> = query_as("SELECT seq FROM events WHERE id = $1 AND org_id = $2")
                .bind(cursor.clone())
                .bind(org.to_string())
                .fetch_optional(pool)
                .await?;
            row.ok_or_else(|| PageRequest::unknown_cursor(cursor))?.0
        }
        None => i64::MAX,
    };
    let rows = query_as(
        "SELECT seq, id, org_id, type, actor, data, created_at FROM events WHERE org_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3",
    )
    .bind(org.to_string())
    .bind(before)
    .bind(i64::from(page.limit) + 1)
    .fetch_all(pool)
    .await?;
    Ok(rows)
}

/// The number of the newest event (`None`: the log is empty).
async fn last_seq<DB: Sql>(pool: &Pool<DB>) -> Result<Option<i64>> {
    let (seq,): (Option<i64>,) = query_as("SELECT MAX(seq) FROM events").fetch_one(pool).await?;
    Ok(seq)
}

/// The number of event `id` (`None`: no such event).
async fn seq_of<DB: Sql>(pool: &Pool<DB>, id: &str) -> Result<Option<i64>> {
    let row: Option<(i64,)> =
        query_as("SELECT seq FROM events WHERE id = $1").bind(id.to_owned()).fetch_optional(pool).await?;
    Ok(row.map(|(seq,)| seq))
}

/// Up to `limit` events numbered after `after`, oldest first, with their numbers.
async fn events_after<DB: Sql>(pool: &Pool<DB>, after: i64, limit: u32) -> Result<Vec<EventRow>> {
    let rows = query_as(
        "SELECT seq, id, org_id, type, actor, data, created_at FROM events WHERE seq > $1 ORDER BY seq LIMIT $2",
    )
    .bind(after)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    Ok(rows)
}
