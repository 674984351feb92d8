//! The audit log of an org.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use orgplane_core::roles::Permission;
use orgplane_store::EventCursor;
use serde::Serialize;

use super::{List, rfc3339};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiKeyCaller, OrgCtx, PageParams, Pagination};
use crate::limits::StreamSlot;
use crate::state::AppState;

#[derive(Serialize, utoipa::ToSchema)]
pub struct EventResponse {
    /// `evt_…`
    pub id: String,
    pub org_id: Option<String>,
    /// e.g. `org.created`, `member.role_changed`, `invitation.accepted`
    #[serde(rename = "type")]
    pub kind: String,
    /// `usr_…`, `key_…`, `provider:<event id>` or `system`
    pub actor: String,
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
    pub created_at: String,
    /// The event's place in the commit-ordered log: of two events about
    /// the same org, the one with the higher `seq` is the newer state (a
    /// receiver keeps the highest it has applied and drops older ones that
    /// arrive late). Not contiguous.
    pub seq: i64,
}

/// The org's audit log, newest first (`org:audit`).
#[utoipa::path(get, path = "/v1/orgs/{org}/events", operation_id = "list_org_events", tag = "events", security(("user_token" = []), ("api_key" = [])),
    params(("org" = String, Path), PageParams),
    responses((status = 200, body = List<crate::openapi::schema::Event>), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    ctx: OrgCtx,
    Pagination(page): Pagination,
) -> ApiResult<Json<List<EventResponse>>> {
    ctx.require(&state, Permission::OrgAudit)?;
    let page = state.store.org_events(ctx.org.id, &page).await?;
    Ok(Json(List { data: page.data.into_iter().map(EventResponse::from).collect(), has_more: page.has_more }))
}

impl From<orgplane_store::EventRecord> for EventResponse {
    fn from(e: orgplane_store::EventRecord) -> Self {
        EventResponse {
            id: e.id,
            org_id: e.org_id,
            kind: e.kind,
            actor: e.actor,
            data: e.data,
            created_at: rfc3339(e.created_at),
            seq: e.seq,
        }
    }
}

/// How often the stream looks for new events.
const POLL: Duration = Duration::from_millis(100);
/// The most events read from the log at once.
const BATCH: u32 = 500;

struct Cursor {
    state: AppState,
    /// This stream's place under `limits.max_event_streams`; freed when the
    /// stream ends or its client leaves (the stream is dropped).
    _slot: StreamSlot,
    shutting_down: tokio::sync::watch::Receiver<bool>,
    log: EventCursor,
    ready: VecDeque<orgplane_store::EventRecord>,
}

impl Cursor {
    /// Moves committed events after the cursor into `ready`, in order. A
    /// failed read moves nothing: the next poll reads the same events again.
    async fn fill(&mut self) {
        match self.state.store.next_events(&mut self.log, BATCH).await {
            Ok(events) => self.ready.extend(events),
            Err(e) => tracing::warn!(error = %e, "event stream: reading events failed; retrying"),
        }
    }
}

/// Server-sent events of every committed change (API key), in commit
/// order, none skipped (see [`EventCursor`]). Each event's `id` is its
/// `evt_…` id; reconnect with `Last-Event-ID` to resume after it. Without
/// one, the stream starts with the next change. Streams are
/// capped per API key (429 `rate_limited`) and in total (503 `unavailable`),
/// both with `Retry-After`.
#[utoipa::path(get, path = "/v1/events/stream", operation_id = "stream_events", tag = "events", security(("api_key" = [])),
    params(("Last-Event-ID" = Option<String>, Header, description = "resume after this event")),
    responses((status = 200, content_type = "text/event-stream", body = crate::openapi::schema::Event, description = "`id: evt_…`, `event: <type>`, `data: <event JSON>`"),
        (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 429, body = ErrorBody, description = "rate_limited: this API key has as many streams open as it may"),
        (status = 503, body = ErrorBody, description = "unavailable: the server has as many streams open as it takes")))]
pub async fn stream(State(state): State<AppState>, ApiKeyCaller(key): ApiKeyCaller, headers: HeaderMap) -> Response {
    let slot = match state.limits.streams.open(key) {
        Ok(slot) => slot,
        Err(refusal) => return refusal.into_response(),
    };
    match events_after(state, slot, &headers).await {
        Ok(events) => events.into_response(),
        Err(e) => e.into_response(),
    }
}

async fn events_after(
    state: AppState,
    slot: StreamSlot,
    headers: &HeaderMap,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>> + use<>>> {
    let log = match headers.get("last-event-id").and_then(|v| v.to_str().ok()).map(str::trim) {
        Some(id) if !id.is_empty() => state.store.event_cursor_after(id).await?.ok_or_else(|| {
            ApiError::invalid(format!("no event `{id}` to resume after; reconnect without Last-Event-ID"))
                .with_param("Last-Event-ID")
        })?,
        _ => state.store.event_cursor_at_end().await?,
    };
    let shutting_down = state.shutting_down.clone();
    let cursor = Cursor { state, _slot: slot, shutting_down, log, ready: VecDeque::new() };
    let events = futures_util::stream::unfold(cursor, |mut cursor| async move {
        loop {
            if let Some(event) = cursor.ready.pop_front() {
                let id = event.id.clone();
                let kind = event.kind.clone();
                let body = serde_json::to_string(&EventResponse::from(event)).unwrap_or_else(|_| "{}".to_owned());
                return Some((Ok(Event::default().id(id).event(kind).data(body)), cursor));
            }
            if *cursor.shutting_down.borrow() {
                return None;
            }
            cursor.fill().await;
            if cursor.ready.is_empty() {
                // Nothing new yet: look again shortly, or end at shutdown.
                tokio::select! {
                    _ = tokio::time::sleep(POLL) => {}
                    changed = cursor.shutting_down.changed() => {
                        if changed.is_err() {
                            return None; // the server is gone
                        }
                    }
                }
            }
        }
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
