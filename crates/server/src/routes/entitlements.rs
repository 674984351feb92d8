//! "May this org do this, and how much is left?": entitlements, checks and
//! per-org overrides.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use orgplane_core::DomainError;
use orgplane_core::entitlements::Overrides;
use serde::{Deserialize, Serialize};

use crate::entitlements::{Resolved, current};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, OrgCtx};
use crate::state::AppState;

#[derive(Serialize, utoipa::ToSchema)]
pub struct LimitUsage {
    /// `null` = unlimited.
    pub limit: Option<i64>,
    pub used: i64,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct EntitlementsResponse {
    #[schema(value_type = crate::openapi::schema::OrgId)]
    pub org_id: String,
    #[schema(value_type = crate::openapi::schema::OrgKind)]
    pub kind: String,
    #[schema(value_type = crate::openapi::schema::Plan)]
    pub plan: String,
    pub tier: String,
    /// The subscription's status, or `null` without one.
    #[schema(value_type = Option<crate::openapi::schema::SubscriptionStatus>)]
    pub status: Option<String>,
    /// When the trial ends, while the subscription is `trialing`.
    pub trial_end: Option<String>,
    pub features: BTreeMap<String, bool>,
    pub limits: BTreeMap<String, LimitUsage>,
}

pub(crate) fn response(org: &str, r: &Resolved) -> EntitlementsResponse {
    let e = &r.entitlements;
    EntitlementsResponse {
        org_id: org.to_owned(),
        kind: e.kind.as_str().to_owned(),
        plan: e.plan.clone(),
        tier: e.tier.clone(),
        status: e.status.map(|s| s.as_str().to_owned()),
        trial_end: e.trial_end.map(super::rfc3339),
        features: e.features.clone(),
        limits: e.limits.iter().map(|(k, v)| (k.clone(), LimitUsage { limit: *v, used: r.usage.used(k) })).collect(),
    }
}

/// The org's plan, features and limits with usage (member or API key).
#[utoipa::path(get, path = "/v1/orgs/{org}/entitlements", operation_id = "get_entitlements", tag = "entitlements", security(("user_token" = []), ("api_key" = [])),
    params(("org" = String, Path)),
    responses((status = 200, body = EntitlementsResponse), (status = 404, body = ErrorBody)))]
pub async fn get(State(state): State<AppState>, ctx: OrgCtx) -> ApiResult<Response> {
    let resolved = current(&state, ctx.org.id).await?;
    // Encoded once per resolution: repeat reads of an unchanged org send the same bytes.
    let body = match resolved.body.get() {
        Some(body) => body.clone(),
        None => {
            let encoded =
                serde_json::to_vec(&response(&ctx.org.id.to_string(), &resolved)).map_err(ApiError::internal)?;
            resolved.body.get_or_init(|| bytes::Bytes::from(encoded)).clone()
        }
    };
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// The same answer, typed, for the portal's pages.
pub(crate) async fn get_typed(State(state): State<AppState>, ctx: OrgCtx) -> ApiResult<Json<EntitlementsResponse>> {
    let resolved = current(&state, ctx.org.id).await?;
    Ok(Json(response(&ctx.org.id.to_string(), &resolved)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckRequest {
    /// A feature name; or give `limit`.
    pub feature: Option<String>,
    /// A limit key (`seats` or a resource type); or give `feature`.
    pub limit: Option<String>,
    /// How many more of `limit` (default 1).
    pub amount: Option<i64>,
}

/// `{"feature"}` or `{"limit", "amount"?}`: what [`CheckRequest`] takes, as the document states it.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
#[schema(as = CheckRequest)]
pub enum CheckRequestDoc {
    Feature(CheckFeature),
    Limit(CheckLimit),
}

/// May the org use this feature?
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct CheckFeature {
    #[schema(value_type = crate::openapi::schema::Feature)]
    feature: String,
}

/// May the org take `amount` more of this limit?
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct CheckLimit {
    #[schema(value_type = crate::openapi::schema::LimitKey)]
    limit: String,
    /// How many more (default 1).
    #[schema(minimum = 0)]
    amount: Option<i64>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct CheckResponse {
    pub allowed: bool,
    /// Why not, in words a user can act on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// May the org use a feature, or take `amount` more of a limit?
#[utoipa::path(post, path = "/v1/orgs/{org}/check", operation_id = "check_entitlement", tag = "entitlements", security(("user_token" = []), ("api_key" = [])),
    params(("org" = String, Path)), request_body = CheckRequestDoc,
    responses((status = 200, body = CheckResponse), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn check(
    State(state): State<AppState>,
    ctx: OrgCtx,
    ApiJson(body): ApiJson<CheckRequest>,
) -> ApiResult<Json<CheckResponse>> {
    let resolved = current(&state, ctx.org.id).await?;
    let outcome = match (&body.feature, &body.limit) {
        (Some(feature), None) => {
            if body.amount.is_some() {
                return Err(ApiError::invalid("`amount` goes with `limit`, not with `feature`").with_param("amount"));
            }
            resolved.entitlements.require_feature(feature, &state.catalog)
        }
        (None, Some(limit)) => {
            let amount = body.amount.unwrap_or(1);
            resolved.entitlements.check_limit(limit, resolved.usage.used(limit), amount, &state.catalog)
        }
        _ => return Err(ApiError::invalid("give exactly one of `feature` or `limit`")),
    };
    match outcome {
        Ok(()) => Ok(Json(CheckResponse { allowed: true, reason: None })),
        Err(e @ (DomainError::FeatureNotEntitled { .. } | DomainError::LimitReached { .. })) => {
            Ok(Json(CheckResponse { allowed: false, reason: Some(e.to_string()) }))
        }
        Err(other) => Err(other.into()),
    }
}

/// Per-org overrides for sales-led deals (API key only): features on or off,
/// limits replaced (`null` = unlimited). The body replaces the previous
/// overrides; `{}` clears them.
#[utoipa::path(put, path = "/v1/orgs/{org}/overrides", operation_id = "set_overrides", tag = "entitlements", security(("api_key" = [])),
    params(("org" = String, Path)), request_body = crate::openapi::schema::Overrides,
    responses((status = 200, body = EntitlementsResponse), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn put_overrides(
    State(state): State<AppState>,
    ctx: OrgCtx,
    ApiJson(overrides): ApiJson<Overrides>,
) -> ApiResult<Json<EntitlementsResponse>> {
    if ctx.user_id().is_some() {
        return Err(ApiError::forbidden(
            "overrides are set by your backend with an API key (`Authorization: Bearer sk_…`)",
        ));
    }
    overrides.validate(&state.catalog)?;
    state.store.set_overrides(ctx.org.id, &overrides, &ctx.actor(), state.clock.now()).await?;
    let resolved = current(&state, ctx.org.id).await?;
    Ok(Json(response(&ctx.org.id.to_string(), &resolved)))
}
