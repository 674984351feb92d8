//! Organizations: create, list, get, update, delete.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use orgplane_core::org::{Org, OrgKind};
use orgplane_core::roles::Permission;
use orgplane_core::{Email, OrgName};
use orgplane_store::OrgPatch;
use serde::{Deserialize, Deserializer, Serialize};

use super::{Deleted, List, rfc3339};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, AuthUser, OrgCtx, PageParams, Pagination};
use crate::state::AppState;

#[derive(Serialize, utoipa::ToSchema)]
pub struct OrgResponse {
    #[schema(value_type = crate::openapi::schema::OrgId)]
    pub id: String,
    #[schema(value_type = crate::openapi::schema::OrgKind)]
    pub kind: String,
    pub name: String,
    pub billing_email: Option<String>,
    #[schema(value_type = Object)]
    pub settings: serde_json::Value,
    /// The caller's role, when the caller is a member.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<crate::openapi::schema::Role>)]
    pub role: Option<String>,
    /// The plan in effect (`GET /v1/orgs/{org}` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<crate::openapi::schema::Plan>)]
    pub plan: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    /// The subscription, when the org has one (`GET /v1/orgs/{org}` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subscription: Option<SubscriptionSummary>,
    /// The org's id in WorkOS, once the WorkOS mirror knows it (`GET /v1/orgs/{org}` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workos_organization_id: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl OrgResponse {
    pub fn new(org: Org, role: Option<String>) -> Self {
        OrgResponse {
            id: org.id.to_string(),
            kind: org.kind.as_str().to_owned(),
            name: org.name,
            billing_email: org.billing_email,
            settings: org.settings,
            role,
            plan: None,
            tier: None,
            subscription: None,
            workos_organization_id: None,
            created_at: rfc3339(org.created_at),
            updated_at: rfc3339(org.updated_at),
        }
    }
}

fn role_of(ctx: &OrgCtx) -> Option<String> {
    ctx.user_id().map(|_| ctx.role.to_string())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOrg {
    #[schema(value_type = crate::openapi::schema::OrgName)]
    pub name: OrgName,
    #[schema(value_type = Option<crate::openapi::schema::Email>)]
    pub billing_email: Option<Email>,
}

/// Creates a team org on the free plan with the caller as owner.
#[utoipa::path(post, path = "/v1/orgs", operation_id = "create_org", tag = "orgs", security(("user_token" = [])), request_body = CreateOrg,
    responses((status = 201, body = OrgResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiJson(body): ApiJson<CreateOrg>,
) -> ApiResult<(StatusCode, Json<OrgResponse>)> {
    let org = state.store.create_team_org(user.id, &body.name, body.billing_email.as_ref(), state.clock.now()).await?;
    Ok((StatusCode::CREATED, Json(OrgResponse::new(org, Some("owner".into())))))
}

/// The orgs the caller belongs to.
#[utoipa::path(get, path = "/v1/orgs", operation_id = "list_orgs", tag = "orgs", security(("user_token" = [])),
    params(PageParams),
    responses((status = 200, body = List<OrgResponse>), (status = 401, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Pagination(page): Pagination,
) -> ApiResult<Json<List<OrgResponse>>> {
    let page = state.store.orgs_of_user(user.id, &page).await?;
    Ok(Json(List {
        data: page.data.into_iter().map(|o| OrgResponse::new(o.org, Some(o.role.to_string()))).collect(),
        has_more: page.has_more,
    }))
}

/// One org the caller belongs to.
#[utoipa::path(get, path = "/v1/orgs/{org}", operation_id = "get_org", tag = "orgs", security(("user_token" = []), ("api_key" = [])), params(("org" = String, Path)),
    responses((status = 200, body = OrgResponse), (status = 404, body = ErrorBody)))]
pub async fn get(State(state): State<AppState>, ctx: OrgCtx) -> ApiResult<Json<OrgResponse>> {
    let role = role_of(&ctx);
    let resolved = crate::entitlements::current(&state, ctx.org.id).await?;
    let subscription = state.store.subscription(ctx.org.id).await?.map(|s| SubscriptionSummary {
        status: s.status.as_str().to_owned(),
        seats: s.quantity,
        current_period_end: s.current_period_end.map(rfc3339),
        cancel_at_period_end: s.cancel_at_period_end,
    });
    let workos_organization_id = match state.workos_mirror {
        Some(_) => state.store.workos_organization_id(ctx.org.id).await?,
        None => None,
    };
    let mut response = OrgResponse::new(std::sync::Arc::unwrap_or_clone(ctx.org), role);
    response.workos_organization_id = workos_organization_id;
    response.plan = Some(resolved.entitlements.plan.clone());
    response.tier = Some(resolved.entitlements.tier.clone());
    response.subscription = subscription;
    Ok(Json(response))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct SubscriptionSummary {
    #[schema(value_type = crate::openapi::schema::SubscriptionStatus)]
    pub status: String,
    pub seats: i64,
    pub current_period_end: Option<String>,
    pub cancel_at_period_end: bool,
}

/// `null` and absent differ for `billing_email`: null clears it.
fn some_nullable<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<Email>>, D::Error> {
    Option::<Email>::deserialize(d).map(Some)
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateOrg {
    #[schema(value_type = Option<crate::openapi::schema::OrgName>)]
    pub name: Option<OrgName>,
    /// `null` clears it.
    #[serde(default, deserialize_with = "some_nullable")]
    #[schema(value_type = Option<crate::openapi::schema::Email>)]
    pub billing_email: Option<Option<Email>>,
    /// Merged key by key; a `null` value deletes the key.
    #[schema(value_type = Option<crate::openapi::schema::Settings>)]
    pub settings: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Changes name, billing email or settings (`org:update`).
#[utoipa::path(patch, path = "/v1/orgs/{org}", operation_id = "update_org", tag = "orgs", security(("user_token" = []), ("api_key" = [])), params(("org" = String, Path)),
    request_body = UpdateOrg,
    responses((status = 200, body = OrgResponse), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn update(
    State(state): State<AppState>,
    ctx: OrgCtx,
    ApiJson(body): ApiJson<UpdateOrg>,
) -> ApiResult<Json<OrgResponse>> {
    ctx.require(&state, Permission::OrgUpdate)?;
    let patch = OrgPatch { name: body.name, billing_email: body.billing_email, settings: body.settings };
    let org = state.store.update_org(ctx.org.id, &patch, &ctx.actor(), state.clock.now()).await?;
    Ok(Json(OrgResponse::new(org, role_of(&ctx))))
}

/// Deletes a team org (`org:delete`). A personal org can't be deleted by its user.
#[utoipa::path(delete, path = "/v1/orgs/{org}", operation_id = "delete_org", tag = "orgs", security(("user_token" = []), ("api_key" = [])), params(("org" = String, Path)),
    responses((status = 200, body = Deleted), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn delete(State(state): State<AppState>, ctx: OrgCtx) -> ApiResult<Json<Deleted>> {
    if ctx.org.kind == OrgKind::Personal {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "personal_org",
            "a personal organization can't be deleted; it belongs to its user",
        ));
    }
    ctx.require(&state, Permission::OrgDelete)?;
    state.store.delete_org(ctx.org.id, &ctx.actor(), state.clock.now()).await?;
    Ok(Json(Deleted { id: ctx.org.id.to_string(), deleted: true }))
}
