//! The event log: every state change, written in the change's transaction.

use orgplane_core::{DomainError, OrgId, Timestamp};

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

impl Store {
    /// An org's events, newest first.
    pub async fn org_events(&self, org: OrgId, page: &PageRequest) -> Result<Page<EventRecord>> {
        let rows: Vec<(String, Option<String>, String, String, String, i64)> = on_pool!(self, pool => {
            let before: i64 = match &page.starting_after {
                Some(cursor) => {
                    let row: Option<(i64,)> = sqlx::query_as("SELECT seq FROM events WHERE id = $1 AND org_id = $2")
                        .bind(cursor)
                        .bind(org.to_string())
                        .fetch_optional(pool)
                        .await?;
                    row.ok_or_else(|| DomainError::invalid("starting_after", format!("no event `{cursor}` in this organization")))?.0
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
        let data = rows
            .into_iter()
            .map(|(id, org_id, kind, actor, data, created)| {
                Ok(EventRecord {
                    id,
                    org_id,
                    kind,
                    actor,
                    data: serde_json::from_str(&data).map_err(|e| StoreError::Corrupt(format!("event data: {e}")))?,
                    created_at: from_millis(created)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Page::from_rows(data, page.limit))
    }
}
