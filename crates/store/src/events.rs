//! The event log: every state change, written in the change's transaction.

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

impl Store {
    /// The `seq` of an event, for resuming a stream after it.
    pub async fn event_seq(&self, id: &str) -> Result<Option<i64>> {
        let row: Option<(i64,)> = on_pool!(self, pool => {
            sqlx::query_as("SELECT seq FROM events WHERE id = $1").bind(id).fetch_optional(pool).await?
        });
        Ok(row.map(|(seq,)| seq))
    }

    /// The newest event's `seq` (0 when there is none).
    pub async fn last_event_seq(&self) -> Result<i64> {
        let (seq,): (Option<i64>,) = on_pool!(self, pool => {
            sqlx::query_as("SELECT MAX(seq) FROM events").fetch_one(pool).await?
        });
        Ok(seq.unwrap_or(0))
    }

    /// Committed events after `after_seq`, oldest first, with their `seq`.
    pub async fn events_after(&self, after_seq: i64, limit: i64) -> Result<Vec<(i64, EventRecord)>> {
        let rows: Vec<SeqEventRow> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT seq, id, org_id, type, actor, data, created_at FROM events WHERE seq > $1 ORDER BY seq LIMIT $2",
            )
            .bind(after_seq)
            .bind(limit)
            .fetch_all(pool)
            .await?
        });
        rows.into_iter()
            .map(|(seq, id, org_id, kind, actor, data, created)| {
                Ok((seq, event_from_row((id, org_id, kind, actor, data, created))?))
            })
            .collect()
    }
}
