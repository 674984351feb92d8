//! The event log: every state change, written in the change's transaction
//! and numbered (`seq`) in commit order, so that readers of the whole log
//! (the event stream, outgoing webhooks) go through it with an
//! [`EventCursor`] and never skip an event.

use orgplane_core::{OrgId, Timestamp};

use crate::{Page, PageRequest, Result, Store, StoreError, from_millis, on_pool};

#[derive(Debug, Clone)]
pub struct EventRecord {
    pub id: String,
    pub org_id: Option<String>,
    pub kind: String,
    pub actor: String,
    pub data: serde_json::Value,
    pub created_at: Timestamp,
}

type EventRow = (String, Option<String>, String, String, String, i64);
type SeqEventRow = (i64, String, Option<String>, String, String, String, i64);

fn event_from_row((id, org_id, kind, actor, data, created): EventRow) -> Result<EventRecord> {
    Ok(EventRecord {
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
        let rows: Vec<EventRow> = on_pool!(self, pool => {
            let before: i64 = match &page.starting_after {
                Some(cursor) => {
                    let row: Option<(i64,)> = sqlx::query_as("SELECT seq FROM events WHERE id = $1 AND org_id = $2")
                        .bind(cursor)
                        .bind(org.to_string())
                        .fetch_optional(pool)
                        .await?;
                    row.ok_or_else(|| PageRequest::unknown_cursor(cursor))?.0
                }
                None => i64::MAX,
            };
            sqlx::query_as(
                "SELECT id, org_id, type, actor, data, created_at FROM events WHERE org_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3",
            )
            .bind(org.to_string())
            .bind(before)
            .bind(i64::from(page.limit) + 1)
            .fetch_all(pool)
            .await?
        });
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
        let (seq,): (Option<i64>,) = on_pool!(self, pool => {
            sqlx::query_as("SELECT MAX(seq) FROM events").fetch_one(pool).await?
        });
        Ok(EventCursor { after: seq.unwrap_or(0) })
    }

    /// A cursor right after event `id` (`None`: no such event), to resume a
    /// reader that got as far as it.
    pub async fn event_cursor_after(&self, id: &str) -> Result<Option<EventCursor>> {
        let row: Option<(i64,)> = on_pool!(self, pool => {
            sqlx::query_as("SELECT seq FROM events WHERE id = $1").bind(id).fetch_optional(pool).await?
        });
        Ok(row.map(|(after,)| EventCursor { after }))
    }

    /// Up to `limit` committed events after `cursor`, oldest first, and the
    /// cursor moved past them. An empty answer: nothing new yet.
    pub async fn next_events(&self, cursor: &mut EventCursor, limit: u32) -> Result<Vec<EventRecord>> {
        let rows: Vec<SeqEventRow> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT seq, id, org_id, type, actor, data, created_at FROM events WHERE seq > $1 ORDER BY seq LIMIT $2",
            )
            .bind(cursor.after)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?
        });
        let mut events = Vec::with_capacity(rows.len());
        let mut after = cursor.after;
        for (seq, id, org_id, kind, actor, data, created) in rows {
            events.push(event_from_row((id, org_id, kind, actor, data, created))?);
            after = seq;
        }
        // Moved only once every row converted: a corrupt row is met again, not passed.
        cursor.after = after;
        Ok(events)
    }
}
