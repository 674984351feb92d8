//! The WorkOS mirror as an operator sees it: what keeps failing.

use axum::Json;
use axum::extract::State;
use serde::Serialize;

use super::rfc3339;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::ApiKeyCaller;
use crate::state::AppState;

/// Failing targets listed at most.
const MAX_LISTED: u32 = 100;

#[derive(Serialize, utoipa::ToSchema)]
pub struct MirrorFailureResponse {
    #[schema(value_type = crate::openapi::schema::OrgId)]
    pub org_id: String,
    /// The member whose membership fails to sync; absent: the org itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// Syncs tried in all, and failed in a row.
    pub attempts: i64,
    pub failures: i64,
    pub failing_since: Option<String>,
    /// What WorkOS (or the connection) answered last time.
    pub last_error: Option<String>,
    pub next_attempt_at: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct MirrorFailures {
    pub data: Vec<MirrorFailureResponse>,
}

/// Orgs and memberships whose sync into WorkOS keeps failing (retried with
/// back-off, never dropped), longest failing first, at most 100.
#[utoipa::path(get, path = "/v1/mirror/workos/failures", operation_id = "list_workos_mirror_failures", tag = "mirror", security(("api_key" = [])),
    responses((status = 200, body = MirrorFailures), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn workos_failures(State(state): State<AppState>, _caller: ApiKeyCaller) -> ApiResult<Json<MirrorFailures>> {
    if state.workos_mirror.is_none() {
        return Err(ApiError::not_found(
            "the WorkOS mirror is not configured on this server; set [mirror.workos] api_key to turn it on",
        ));
    }
    let failures = state.store.workos_mirror_failures(MAX_LISTED).await?;
    let data = failures
        .into_iter()
        .map(|f| MirrorFailureResponse {
            org_id: f.org_id,
            user_id: f.user_id,
            attempts: f.attempts,
            failures: f.failures,
            failing_since: f.failing_since.map(rfc3339),
            last_error: f.last_error,
            next_attempt_at: rfc3339(f.next_attempt_at),
        })
        .collect();
    Ok(Json(MirrorFailures { data }))
}
