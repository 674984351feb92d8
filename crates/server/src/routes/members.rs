//! Members: list, change role, remove or leave.

use axum::Json;
use axum::extract::State;
use orgplane_core::UserId;
use orgplane_core::roles::Permission;
use orgplane_store::MemberRecord;
use serde::{Deserialize, Serialize};

use super::{Deleted, List, rfc3339};
use crate::error::{ApiResult, ErrorBody};
use crate::extract::{ApiJson, OrgCtx, PageParams, Pagination, PathId};
use crate::state::AppState;

#[derive(Serialize, utoipa::ToSchema)]
pub struct MemberResponse {
    #[schema(value_type = crate::openapi::schema::UserId)]
    pub user_id: String,
    pub email: Option<String>,
    pub name: Option<String>,
    #[schema(value_type = crate::openapi::schema::Role)]
    pub role: String,
    /// Whether this member manages the org's subscription.
    pub billing_admin: bool,
    pub joined_at: String,
}

impl From<MemberRecord> for MemberResponse {
    fn from(m: MemberRecord) -> Self {
        MemberResponse {
            user_id: m.membership.user_id.to_string(),
            email: m.email,
            name: m.name,
            role: m.membership.role.to_string(),
            billing_admin: m.billing_admin,
            joined_at: rfc3339(m.membership.created_at),
        }
    }
}

/// The org's members with their roles.
#[utoipa::path(get, path = "/v1/orgs/{org}/members", operation_id = "list_members", tag = "members", security(("user_token" = []), ("api_key" = [])),
    params(("org" = String, Path), PageParams),
    responses((status = 200, body = List<MemberResponse>), (status = 404, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    ctx: OrgCtx,
    Pagination(page): Pagination,
) -> ApiResult<Json<List<MemberResponse>>> {
    let page = state.store.members(ctx.org.id, &page).await?;
    Ok(Json(List { data: page.data.into_iter().map(Into::into).collect(), has_more: page.has_more }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeRole {
    /// `owner`, `admin`, `member` or a custom role.
    #[schema(value_type = crate::openapi::schema::Role)]
    pub role: String,
}

/// Changes a member's role (`members:update`); only owners grant or revoke `owner`, and one owner always remains.
#[utoipa::path(patch, path = "/v1/orgs/{org}/members/{user}", operation_id = "change_member_role", tag = "members", security(("user_token" = []), ("api_key" = [])),
    params(("org" = String, Path), ("user" = String, Path)), request_body = ChangeRole,
    responses((status = 200, body = MemberResponse), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "last_owner")))]
pub async fn change_role(
    State(state): State<AppState>,
    ctx: OrgCtx,
    PathId(user): PathId<UserId>,
    ApiJson(body): ApiJson<ChangeRole>,
) -> ApiResult<Json<MemberResponse>> {
    ctx.require(&state, Permission::MembersUpdate)?;
    let role = state.roles.resolve(&body.role)?;
    crate::guards::custom_role(&state, ctx.org.id, &role).await?;
    let member = state.store.change_role(ctx.org.id, user, &role, &ctx.role, &ctx.actor(), state.clock.now()).await?;
    Ok(Json(member.into()))
}

/// Removes a member (`members:remove`), or lets the caller leave.
#[utoipa::path(delete, path = "/v1/orgs/{org}/members/{user}", operation_id = "remove_member", tag = "members", security(("user_token" = []), ("api_key" = [])),
    params(("org" = String, Path), ("user" = String, Path)),
    responses((status = 200, body = Deleted), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "last_owner or billing_admin_must_transfer")))]
pub async fn remove(
    State(state): State<AppState>,
    ctx: OrgCtx,
    PathId(user): PathId<UserId>,
) -> ApiResult<Json<Deleted>> {
    if ctx.user_id() != Some(user) {
        ctx.require(&state, Permission::MembersRemove)?;
    }
    state.store.remove_member(ctx.org.id, user, &ctx.role, &ctx.actor(), state.clock.now()).await?;
    Ok(Json(Deleted { id: user.to_string(), deleted: true }))
}
