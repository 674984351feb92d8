//! The audit log of an org.

use axum::Json;
use axum::extract::State;
use orgplane_core::roles::Permission;
use serde::Serialize;

use super::{List, rfc3339};
use crate::error::{ApiResult, ErrorBody};
use crate::extract::{OrgCtx, Pagination};
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
}

/// The org's audit log, newest first (`org:audit`).
#[utoipa::path(get, path = "/v1/orgs/{org}/events", tag = "events", security(("bearer" = [])),
    params(("org" = String, Path), ("limit" = Option<u32>, Query), ("starting_after" = Option<String>, Query)),
    responses((status = 200, body = Vec<EventResponse>, description = "`{\"data\": [event], \"has_more\"}`"), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    ctx: OrgCtx,
    Pagination(page): Pagination,
) -> ApiResult<Json<List<EventResponse>>> {
    ctx.require(&state, Permission::OrgAudit)?;
    let page = state.store.org_events(ctx.org.id, &page).await?;
    Ok(Json(List {
        data: page
            .data
            .into_iter()
            .map(|e| EventResponse {
                id: e.id,
                org_id: e.org_id,
                kind: e.kind,
                actor: e.actor,
                data: e.data,
                created_at: rfc3339(e.created_at),
            })
            .collect(),
        has_more: page.has_more,
    }))
}
