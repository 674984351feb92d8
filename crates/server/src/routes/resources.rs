//! The app's counted resources (customers, clients…) and member grants.
//! Members holding `resources:manage` (owners and admins among them) see
//! every resource; other members see and access only what they are granted.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use orgplane_core::roles::Permission;
use orgplane_core::{Label, ResourceId, UserId};
use orgplane_store::{NewResource, ResourceRecord};
use serde::{Deserialize, Serialize};

use super::{Deleted, List, rfc3339};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, ApiQuery, OrgCtx, PageParams, Pagination, PathId};
use crate::state::AppState;

#[derive(Serialize, utoipa::ToSchema)]
pub struct ResourceResponse {
    #[schema(value_type = crate::openapi::schema::ResourceId)]
    pub id: String,
    #[schema(value_type = crate::openapi::schema::OrgId)]
    pub org_id: String,
    #[serde(rename = "type")]
    #[schema(value_type = crate::openapi::schema::ResourceType)]
    pub kind: String,
    pub external_id: Option<String>,
    pub name: Option<String>,
    pub created_at: String,
}

impl From<ResourceRecord> for ResourceResponse {
    fn from(r: ResourceRecord) -> Self {
        ResourceResponse {
            id: r.id.to_string(),
            org_id: r.org_id.to_string(),
            kind: r.kind,
            external_id: r.external_id,
            name: r.name,
            created_at: rfc3339(r.created_at),
        }
    }
}

/// Whether the caller sees every resource of the org.
fn sees_all(state: &AppState, ctx: &OrgCtx) -> bool {
    ctx.user_id().is_none() || ctx.allows(state, Permission::ResourcesManage)
}

fn known_type(state: &AppState, kind: &str) -> ApiResult<()> {
    if state.catalog.resource_types().iter().any(|t| t == kind) {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "unknown resource type `{kind}` (declared: {}); declare it under [resources] types",
            state.catalog.resource_types().join(", ")
        ))
        .with_param("type"))
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateResource {
    /// A declared resource type, e.g. `customers`.
    #[serde(rename = "type")]
    #[schema(value_type = crate::openapi::schema::ResourceType)]
    pub kind: String,
    /// Your id for it; unique per org and type. 1 to 256 characters, one line.
    #[schema(value_type = Option<crate::openapi::schema::Label>)]
    pub external_id: Option<Label>,
    /// 1 to 256 characters, one line.
    #[schema(value_type = Option<crate::openapi::schema::Label>)]
    pub name: Option<Label>,
}

/// Registers a counted resource: refused with `limit_reached` at the plan's
/// limit, atomically (concurrent creates never overshoot).
#[utoipa::path(post, path = "/v1/orgs/{org}/resources", operation_id = "create_resource", tag = "resources", security(("user_token" = []), ("api_key" = [])),
    params(("org" = String, Path)), request_body = CreateResource,
    responses((status = 201, body = ResourceResponse), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody, description = "limit_reached"),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    ctx: OrgCtx,
    ApiJson(body): ApiJson<CreateResource>,
) -> ApiResult<(StatusCode, Json<ResourceResponse>)> {
    known_type(&state, &body.kind)?;
    let now = state.clock.now();
    let new = NewResource {
        org: ctx.org.id,
        kind: body.kind,
        external_id: body.external_id.map(Label::into_string),
        name: body.name.map(Label::into_string),
    };
    let guard = crate::guards::limit(&state, &new.kind, now);
    let record = state.store.create_resource(&new, &guard, &ctx.actor(), now).await?;
    Ok((StatusCode::CREATED, Json(record.into())))
}

#[derive(Deserialize)]
pub struct TypeFilter {
    #[serde(rename = "type")]
    pub kind: Option<String>,
}

/// Resources of the org, `?type=` to filter. Non-admins see only what they are granted.
#[utoipa::path(get, path = "/v1/orgs/{org}/resources", operation_id = "list_resources", tag = "resources", security(("user_token" = []), ("api_key" = [])),
    params(("org" = String, Path), ("type" = Option<crate::openapi::schema::ResourceType>, Query, description = "only resources of this type"), PageParams),
    responses((status = 200, body = List<ResourceResponse>), (status = 404, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    ctx: OrgCtx,
    ApiQuery(filter): ApiQuery<TypeFilter>,
    Pagination(page): Pagination,
) -> ApiResult<Json<List<ResourceResponse>>> {
    if let Some(kind) = &filter.kind {
        known_type(&state, kind)?;
    }
    let granted_to = if sees_all(&state, &ctx) { None } else { ctx.user_id() };
    let page = state.store.resources(ctx.org.id, filter.kind.as_deref(), granted_to, &page).await?;
    Ok(Json(List { data: page.data.into_iter().map(Into::into).collect(), has_more: page.has_more }))
}

/// Deletes a resource, freeing its quota (`resources:manage` or API key).
#[utoipa::path(delete, path = "/v1/orgs/{org}/resources/{res}", operation_id = "delete_resource", tag = "resources", security(("user_token" = []), ("api_key" = [])),
    params(("org" = String, Path), ("res" = String, Path)),
    responses((status = 200, body = Deleted), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    ctx: OrgCtx,
    PathId(res): PathId<ResourceId>,
) -> ApiResult<Json<Deleted>> {
    ctx.require(&state, Permission::ResourcesManage)?;
    state.store.delete_resource(ctx.org.id, res, &ctx.actor(), state.clock.now()).await?;
    Ok(Json(Deleted { id: res.to_string(), deleted: true }))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct GrantResponse {
    pub resource_id: String,
    pub user_id: String,
    pub granted: bool,
}

async fn set_grant(
    state: &AppState,
    ctx: &OrgCtx,
    res: ResourceId,
    user: UserId,
    grant: bool,
) -> ApiResult<GrantResponse> {
    ctx.require(state, Permission::ResourcesManage)?;
    state.store.set_grant(ctx.org.id, res, user, grant, &ctx.actor(), state.clock.now()).await?;
    Ok(GrantResponse { resource_id: res.to_string(), user_id: user.to_string(), granted: grant })
}

/// Gives a member access to a resource (`resources:manage` or API key). Idempotent.
#[utoipa::path(put, path = "/v1/orgs/{org}/resources/{res}/grants/{user}", operation_id = "grant_resource_access", tag = "resources", security(("user_token" = []), ("api_key" = [])),
    params(("org" = String, Path), ("res" = String, Path), ("user" = String, Path)),
    responses((status = 200, body = GrantResponse), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn grant(
    State(state): State<AppState>,
    ctx: OrgCtx,
    PathId(res): PathId<ResourceId>,
    PathId(user): PathId<UserId>,
) -> ApiResult<Json<GrantResponse>> {
    Ok(Json(set_grant(&state, &ctx, res, user, true).await?))
}

/// Takes a member's access away (`resources:manage` or API key). Idempotent.
#[utoipa::path(delete, path = "/v1/orgs/{org}/resources/{res}/grants/{user}", operation_id = "revoke_resource_access", tag = "resources", security(("user_token" = []), ("api_key" = [])),
    params(("org" = String, Path), ("res" = String, Path), ("user" = String, Path)),
    responses((status = 200, body = GrantResponse), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn revoke(
    State(state): State<AppState>,
    ctx: OrgCtx,
    PathId(res): PathId<ResourceId>,
    PathId(user): PathId<UserId>,
) -> ApiResult<Json<GrantResponse>> {
    Ok(Json(set_grant(&state, &ctx, res, user, false).await?))
}

#[derive(Deserialize)]
pub struct AccessQuery {
    pub user_id: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct AccessResponse {
    pub allowed: bool,
}

/// Whether a member may access a resource: owners and admins always, others when granted.
#[utoipa::path(get, path = "/v1/orgs/{org}/resources/{res}/access", operation_id = "check_resource_access", tag = "resources", security(("user_token" = []), ("api_key" = [])),
    params(("org" = String, Path), ("res" = String, Path), ("user_id" = crate::openapi::schema::UserId, Query, description = "the member asking")),
    responses((status = 200, body = AccessResponse), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn access(
    State(state): State<AppState>,
    ctx: OrgCtx,
    PathId(res): PathId<ResourceId>,
    ApiQuery(query): ApiQuery<AccessQuery>,
) -> ApiResult<Json<AccessResponse>> {
    let raw = query.user_id.ok_or_else(|| ApiError::invalid("give ?user_id=usr_…").with_param("user_id"))?;
    let user: UserId =
        raw.parse().map_err(|e: orgplane_core::IdParseError| ApiError::invalid(e.to_string()).with_param("user_id"))?;
    // The resource must exist in this org: another org's id is not_found.
    state.store.resource(ctx.org.id, res).await?;
    let member = match state.store.member(ctx.org.id, user).await {
        Ok(m) => m,
        Err(orgplane_store::StoreError::Domain(orgplane_core::DomainError::NotFound { .. })) => {
            return Ok(Json(AccessResponse { allowed: false }));
        }
        Err(e) => return Err(e.into()),
    };
    let role = &member.membership.role;
    let allowed = state.roles.allows(role, member.billing_admin, Permission::ResourcesManage)
        || state.store.has_grant(ctx.org.id, res, user).await?;
    Ok(Json(AccessResponse { allowed }))
}
