//! The caller: `GET /v1/me`, ensure-personal, the active org.

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use orgplane_core::OrgId;
use serde::{Deserialize, Serialize};

use super::orgs::OrgResponse;
use super::rfc3339;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, AuthUser};
use crate::state::AppState;

#[derive(Serialize, utoipa::ToSchema)]
pub struct MeResponse {
    #[schema(value_type = crate::openapi::schema::UserId)]
    pub id: String,
    pub email: Option<String>,
    pub email_verified: bool,
    pub name: Option<String>,
    /// The org the user works in now; their personal org unless they chose another.
    #[schema(value_type = Option<crate::openapi::schema::OrgId>)]
    pub active_org_id: Option<String>,
    pub memberships: Vec<MembershipSummary>,
    pub created_at: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct MembershipSummary {
    #[schema(value_type = crate::openapi::schema::OrgId)]
    pub org_id: String,
    pub org_name: String,
    #[schema(value_type = crate::openapi::schema::OrgKind)]
    pub kind: String,
    #[schema(value_type = crate::openapi::schema::Role)]
    pub role: String,
    pub joined_at: String,
}

async fn me_response(state: &AppState, user: orgplane_core::UserId) -> ApiResult<MeResponse> {
    let me = state.store.me(user).await?;
    Ok(MeResponse {
        id: me.user.id.to_string(),
        email: me.user.email,
        email_verified: me.user.email_verified,
        name: me.user.name,
        active_org_id: me.user.active_org_id.map(|o| o.to_string()),
        memberships: me
            .memberships
            .into_iter()
            .map(|(m, org)| MembershipSummary {
                org_id: org.id.to_string(),
                org_name: org.name,
                kind: org.kind.as_str().to_owned(),
                role: m.role.to_string(),
                joined_at: rfc3339(m.created_at),
            })
            .collect(),
        created_at: rfc3339(me.user.created_at),
    })
}

/// The caller, provisioned just in time with a personal org.
///
/// The answer is cached per user while neither the user (row, memberships)
/// nor any of their orgs changed, and for at most `cache.entitlements_ttl_ms`.
#[utoipa::path(get, path = "/v1/me", operation_id = "get_me", tag = "users", security(("user_token" = [])),
    responses((status = 200, body = MeResponse), (status = 401, body = ErrorBody)))]
pub async fn get_me(State(state): State<AppState>, AuthUser(user): AuthUser) -> ApiResult<Response> {
    let user_generation = state.store.user_generation(user.id);
    let body = match state.me_cache.get(user.id, user_generation, |org| state.store.org_generation(org)) {
        Some(body) => body,
        None => {
            let me = me_response(&state, user.id).await?;
            let orgs: Vec<(OrgId, u64)> = me
                .memberships
                .iter()
                .filter_map(|m| m.org_id.parse::<OrgId>().ok())
                .map(|org| (org, state.store.org_generation(org)))
                .collect();
            let body = bytes::Bytes::from(serde_json::to_vec(&me).map_err(ApiError::internal)?);
            state.me_cache.put(user.id, user_generation, orgs, body.clone());
            body
        }
    };
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// Returns the caller's personal org, creating it if missing. Idempotent.
#[utoipa::path(post, path = "/v1/me/personal_org", operation_id = "ensure_personal_org", tag = "users", security(("user_token" = [])),
    responses((status = 200, body = OrgResponse), (status = 401, body = ErrorBody)))]
pub async fn ensure_personal_org(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
) -> ApiResult<Json<OrgResponse>> {
    let org = state.store.ensure_personal_org(user.id, state.clock.now()).await?;
    Ok(Json(OrgResponse::new(org, Some("owner".into()))))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetActiveOrg {
    /// An org the caller belongs to.
    #[schema(value_type = crate::openapi::schema::OrgId)]
    pub org_id: OrgId,
}

/// Chooses the org the caller works in; they must be a member.
#[utoipa::path(put, path = "/v1/me/active_org", operation_id = "set_active_org", tag = "users", security(("user_token" = [])), request_body = SetActiveOrg,
    responses((status = 200, body = MeResponse), (status = 404, body = ErrorBody), (status = 400, body = ErrorBody)))]
pub async fn set_active_org(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiJson(body): ApiJson<SetActiveOrg>,
) -> ApiResult<Json<MeResponse>> {
    state.store.set_active_org(user.id, body.org_id).await.map_err(|e| match ApiError::from(e) {
        e if e.code == "not_found" => {
            ApiError::not_found(format!("no organization {} among yours", body.org_id)).with_param("org_id")
        }
        e => e,
    })?;
    Ok(Json(me_response(&state, user.id).await?))
}
