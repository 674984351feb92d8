//! Keys: server keys (`sk_…`) managed by an `admin` server key, org API keys
//! (`ok_…`) managed by an org's members holding `api_keys:manage`, and the
//! one call with which the app verifies what its customer sent.
//!
//! A key is shown once, in the create response (and left out of the copy
//! kept for `Idempotency-Key` replay); only its hash is stored.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use orgplane_core::keys::{KeyScope, check_expiry, parse_key_name, parse_org_key_scopes};
use orgplane_core::roles::Permission;
use orgplane_core::{ApiKeyId, OrgApiKeyId, Timestamp};
use orgplane_store::{ApiKeyRecord, NewApiKey, NewOrgKey, OrgKeyRecord, Revocation};
use serde::{Deserialize, Serialize};

use super::entitlements::{EntitlementsResponse, response as entitlements_response};
use super::{List, rfc3339};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{AdminKey, ApiJson, ApiKeyCaller, OrgCtx, PageParams, Pagination, PathId};
use crate::keys::Verdict;
use crate::middleware::SecretFields;
use crate::state::AppState;

// -- server keys ------------------------------------------------------------------

#[derive(Serialize, utoipa::ToSchema)]
pub struct ServerKeyResponse {
    /// `key_…`
    pub id: String,
    pub name: String,
    /// `sk_` and the next 8 characters; `null` for keys made before prefixes were kept.
    pub prefix: Option<String>,
    /// `read`, `write` or `admin`
    pub scope: String,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub last_used_at: Option<String>,
    pub revoked_at: Option<String>,
    /// The key itself: in the create response only, once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

impl ServerKeyResponse {
    fn new(r: ApiKeyRecord, key: Option<String>) -> Self {
        ServerKeyResponse {
            id: r.id.to_string(),
            name: r.name,
            prefix: r.prefix,
            scope: r.scope.as_str().to_owned(),
            created_at: rfc3339(r.created_at),
            expires_at: r.expires_at.map(rfc3339),
            last_used_at: r.last_used_at.map(rfc3339),
            revoked_at: r.revoked_at.map(rfc3339),
            key,
        }
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateServerKey {
    /// 1 to 100 characters.
    #[schema(value_type = crate::openapi::schema::KeyName)]
    pub name: String,
    /// `read`, `write` or `admin` (default `write`).
    #[schema(value_type = Option<crate::openapi::schema::KeyScope>)]
    pub scope: Option<String>,
    /// RFC 3339; leave out for a key that does not expire.
    #[serde(default, with = "orgplane_core::rfc3339::option")]
    #[schema(value_type = Option<crate::openapi::schema::Timestamp>)]
    pub expires_at: Option<Timestamp>,
}

/// Server keys, live and revoked, oldest first (`admin` key).
#[utoipa::path(get, path = "/v1/api_keys", operation_id = "list_server_keys", tag = "keys", security(("api_key" = [])),
    params(PageParams),
    responses((status = 200, body = List<ServerKeyResponse>),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list_server_keys(
    State(state): State<AppState>,
    _admin: AdminKey,
    Pagination(page): Pagination,
) -> ApiResult<Json<List<ServerKeyResponse>>> {
    let page = state.store.api_keys_page(&page).await?;
    let data = page.data.into_iter().map(|k| ServerKeyResponse::new(k, None)).collect();
    Ok(Json(List { data, has_more: page.has_more }))
}

/// Creates a server key (`admin` key); the response carries it, once.
#[utoipa::path(post, path = "/v1/api_keys", operation_id = "create_server_key", tag = "keys", security(("api_key" = [])), request_body = CreateServerKey,
    responses((status = 201, body = ServerKeyResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)))]
pub async fn create_server_key(
    State(state): State<AppState>,
    AdminKey(caller): AdminKey,
    ApiJson(body): ApiJson<CreateServerKey>,
) -> ApiResult<(StatusCode, Extension<SecretFields>, Json<ServerKeyResponse>)> {
    let now = state.clock.now();
    let name = parse_key_name(&body.name)?;
    let scope = body.scope.as_deref().map(KeyScope::parse).transpose()?.unwrap_or(KeyScope::Write);
    check_expiry(body.expires_at, now)?;
    let (key, key_hash) = orgplane_auth::api_key::generate();
    let new = NewApiKey {
        name,
        prefix: orgplane_auth::api_key::display_prefix(&key),
        key_hash,
        scope,
        expires_at: body.expires_at,
    };
    let record = state.store.create_server_key(&new, &orgplane_store::Actor::ApiKey(caller), now).await?;
    Ok((StatusCode::CREATED, Extension(SecretFields(&["key"])), Json(ServerKeyResponse::new(record, Some(key)))))
}

/// Revokes a server key (`admin` key). Every replica refuses it within
/// `cache.entitlements_ttl_ms`, at once where the announcement arrives.
/// Revoking a revoked key changes nothing.
#[utoipa::path(delete, path = "/v1/api_keys/{key}", operation_id = "revoke_server_key", tag = "keys", security(("api_key" = [])),
    params(("key" = String, Path, description = "`key_…`")),
    responses((status = 200, body = ServerKeyResponse), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn revoke_server_key(
    State(state): State<AppState>,
    AdminKey(caller): AdminKey,
    PathId(id): PathId<ApiKeyId>,
) -> ApiResult<Json<ServerKeyResponse>> {
    let outcome = state.store.revoke_api_key(id, &orgplane_store::Actor::ApiKey(caller), state.clock.now()).await?;
    let record = match outcome {
        Revocation::Revoked(r) | Revocation::AlreadyRevoked(r) => r,
    };
    Ok(Json(ServerKeyResponse::new(record, None)))
}

// -- org keys ---------------------------------------------------------------------

#[derive(Serialize, utoipa::ToSchema)]
pub struct OrgKeyResponse {
    /// `oky_…`
    pub id: String,
    pub org_id: String,
    pub name: String,
    /// `ok_` and the next 8 characters.
    pub prefix: String,
    /// The app's own scope names.
    pub scopes: Vec<String>,
    /// `usr_…` of the member who made it (`null`: made with a server key).
    pub created_by: Option<String>,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub last_used_at: Option<String>,
    pub revoked_at: Option<String>,
    /// The key itself: in the create response only, once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

impl OrgKeyResponse {
    fn new(r: OrgKeyRecord, key: Option<String>) -> Self {
        OrgKeyResponse {
            id: r.id.to_string(),
            org_id: r.org_id.to_string(),
            name: r.name,
            prefix: r.prefix,
            scopes: r.scopes,
            created_by: r.created_by,
            created_at: rfc3339(r.created_at),
            expires_at: r.expires_at.map(rfc3339),
            last_used_at: r.last_used_at.map(rfc3339),
            revoked_at: r.revoked_at.map(rfc3339),
            key,
        }
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOrgKey {
    /// 1 to 100 characters.
    #[schema(value_type = crate::openapi::schema::KeyName)]
    pub name: String,
    /// RFC 3339; leave out for a key that does not expire.
    #[serde(default, with = "orgplane_core::rfc3339::option")]
    #[schema(value_type = Option<crate::openapi::schema::Timestamp>)]
    pub expires_at: Option<Timestamp>,
    /// The app's own scope names (at most 20; letters, digits, `_ - : .`), returned by verify.
    #[serde(default)]
    #[schema(value_type = Vec<crate::openapi::schema::OrgKeyScope>, max_items = 20)]
    pub scopes: Vec<String>,
}

/// Creates an org API key (`api_keys:manage`): refused on personal orgs
/// (`personal_org`), without the `api_tokens` feature (`feature_not_entitled`)
/// and at the plan's `api_keys` limit (`limit_reached`, atomically). The
/// response carries the key, once.
#[utoipa::path(post, path = "/v1/orgs/{org}/api_keys", operation_id = "create_org_key", tag = "keys", security(("user_token" = []), ("api_key" = [])),
    params(("org" = String, Path)), request_body = CreateOrgKey,
    responses((status = 201, body = OrgKeyResponse), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody, description = "forbidden, personal_org, feature_not_entitled or limit_reached"),
        (status = 404, body = ErrorBody)))]
pub async fn create_org_key(
    State(state): State<AppState>,
    ctx: OrgCtx,
    ApiJson(body): ApiJson<CreateOrgKey>,
) -> ApiResult<(StatusCode, Extension<SecretFields>, Json<OrgKeyResponse>)> {
    ctx.require(&state, Permission::ApiKeysManage)?;
    let now = state.clock.now();
    let name = parse_key_name(&body.name)?;
    let scopes = parse_org_key_scopes(&body.scopes)?;
    check_expiry(body.expires_at, now)?;
    let (key, key_hash) = orgplane_auth::api_key::generate_org_key();
    let new = NewOrgKey {
        org: ctx.org.id,
        name,
        prefix: orgplane_auth::api_key::display_prefix(&key),
        key_hash,
        scopes,
        expires_at: body.expires_at,
        created_by: ctx.user_id(),
    };
    let guard = crate::guards::org_api_key(&state, now);
    let record = state.store.create_org_key(&new, &guard, &ctx.actor(), now).await?;
    Ok((StatusCode::CREATED, Extension(SecretFields(&["key"])), Json(OrgKeyResponse::new(record, Some(key)))))
}

/// The org's API keys, live and revoked, oldest first (`api_keys:manage`).
#[utoipa::path(get, path = "/v1/orgs/{org}/api_keys", operation_id = "list_org_keys", tag = "keys", security(("user_token" = []), ("api_key" = [])),
    params(("org" = String, Path), PageParams),
    responses((status = 200, body = List<OrgKeyResponse>),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn list_org_keys(
    State(state): State<AppState>,
    ctx: OrgCtx,
    Pagination(page): Pagination,
) -> ApiResult<Json<List<OrgKeyResponse>>> {
    ctx.require(&state, Permission::ApiKeysManage)?;
    let page = state.store.org_keys(ctx.org.id, &page).await?;
    let data = page.data.into_iter().map(|k| OrgKeyResponse::new(k, None)).collect();
    Ok(Json(List { data, has_more: page.has_more }))
}

/// Revokes one of the org's API keys (`api_keys:manage`); another org's key
/// is `not_found`. Verify answers `revoked` at once on this replica, on the
/// others within `cache.entitlements_ttl_ms`.
#[utoipa::path(delete, path = "/v1/orgs/{org}/api_keys/{org_key}", operation_id = "revoke_org_key", tag = "keys", security(("user_token" = []), ("api_key" = [])),
    params(("org" = String, Path), ("org_key" = String, Path, description = "`oky_…`")),
    responses((status = 200, body = OrgKeyResponse), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn revoke_org_key(
    State(state): State<AppState>,
    ctx: OrgCtx,
    PathId(id): PathId<OrgApiKeyId>,
) -> ApiResult<Json<OrgKeyResponse>> {
    ctx.require(&state, Permission::ApiKeysManage)?;
    let record = state.store.revoke_org_key(ctx.org.id, id, &ctx.actor(), state.clock.now()).await?;
    Ok(Json(OrgKeyResponse::new(record, None)))
}

// -- verify -----------------------------------------------------------------------

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    /// What the app's customer sent (`ok_…`).
    #[schema(value_type = crate::openapi::schema::Text)]
    pub key: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct VerifyResponse {
    pub valid: bool,
    /// When not valid: `unknown`, `revoked`, `expired` or `feature_not_entitled`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub org_id: Option<String>,
    /// `oky_…`
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entitlements: Option<EntitlementsResponse>,
}

/// Verifies an org API key for the app (any server key): `{"valid": true,
/// "org_id", "key_id", "scopes", "entitlements"}`, or `{"valid": false,
/// "reason"}`. A key of an org that lost the `api_tokens` feature answers
/// `feature_not_entitled` until the org has it again.
#[utoipa::path(post, path = "/v1/api_keys/verify", operation_id = "verify_org_key", tag = "keys", security(("api_key" = [])), request_body = VerifyRequest,
    responses((status = 200, body = VerifyResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)))]
pub async fn verify(
    State(state): State<AppState>,
    _caller: ApiKeyCaller,
    ApiJson(body): ApiJson<VerifyRequest>,
) -> ApiResult<Response> {
    let render = |key: &OrgKeyRecord, resolved: &crate::entitlements::Resolved| {
        let answer = VerifyResponse {
            valid: true,
            reason: None,
            org_id: Some(key.org_id.to_string()),
            key_id: Some(key.id.to_string()),
            entitlements: Some(entitlements_response(&key.org_id.to_string(), resolved)),
            scopes: Some(key.scopes.clone()),
        };
        serde_json::to_vec(&answer).map(bytes::Bytes::from).map_err(ApiError::internal)
    };
    Ok(match crate::keys::verify(&state, &body.key, render).await? {
        Verdict::Valid(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Verdict::Invalid { reason } => Json(VerifyResponse {
            valid: false,
            reason: Some(reason),
            org_id: None,
            key_id: None,
            scopes: None,
            entitlements: None,
        })
        .into_response(),
    })
}
