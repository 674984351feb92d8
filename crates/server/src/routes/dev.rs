//! The `--dev` local issuer: mints tokens for any e-mail address, so the
//! whole flow works offline. Mounted only in dev mode, which refuses to
//! listen on anything but loopback.

use axum::Json;
use axum::extract::State;
use orgplane_core::Email;
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::ApiJson;
use crate::state::AppState;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DevTokenRequest {
    #[schema(value_type = crate::openapi::schema::Email)]
    pub email: Email,
    #[schema(value_type = Option<crate::openapi::schema::Text>)]
    pub name: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct DevToken {
    pub token: String,
}

/// A token from the dev issuer (`--dev` only), valid one hour.
#[utoipa::path(post, path = "/dev/token", operation_id = "create_dev_token", tag = "dev", request_body = DevTokenRequest,
    responses((status = 200, body = DevToken), (status = 400, body = ErrorBody)))]
pub async fn token(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<DevTokenRequest>,
) -> ApiResult<Json<DevToken>> {
    let dev = state.dev.as_ref().ok_or_else(|| ApiError::not_found("the dev issuer runs only with --dev"))?;
    let token = dev.mint(body.email.as_str(), body.name.as_deref()).map_err(ApiError::internal)?;
    Ok(Json(DevToken { token }))
}

/// The dev issuer's public keys.
#[utoipa::path(get, path = "/dev/jwks.json", operation_id = "get_dev_jwks", tag = "dev", responses((status = 200, content_type = "application/json", body = Object)))]
pub async fn jwks(State(state): State<AppState>) -> ApiResult<Json<serde_json::Value>> {
    let dev = state.dev.as_ref().ok_or_else(|| ApiError::not_found("the dev issuer runs only with --dev"))?;
    Ok(Json(dev.jwks()))
}
