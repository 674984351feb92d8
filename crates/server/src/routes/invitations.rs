//! Invitations: create, list, revoke, resend; accept and decline by token.
//!
//! A token is 256 random bits, returned once (at creation or resend) and
//! stored only as its SHA-256.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use base64::Engine;
use orgplane_core::invitation::{Invitation, Invitee};
use orgplane_core::roles::{Permission, RoleName, check_role_change};
use orgplane_core::{Email, InvitationId};
use orgplane_store::NewInvitation;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{List, rfc3339};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, AuthUser, OrgCtx, PageParams, Pagination, PathId};
use crate::middleware::SecretFields;
use crate::state::AppState;

#[derive(Serialize, utoipa::ToSchema)]
pub struct InvitationResponse {
    #[schema(value_type = crate::openapi::schema::InvitationId)]
    pub id: String,
    #[schema(value_type = crate::openapi::schema::OrgId)]
    pub org_id: String,
    pub email: String,
    #[schema(value_type = crate::openapi::schema::Role)]
    pub role: String,
    #[schema(value_type = crate::openapi::schema::InvitationStatus)]
    pub status: String,
    #[schema(value_type = Option<crate::openapi::schema::UserId>)]
    pub invited_by: Option<String>,
    pub expires_at: String,
    pub created_at: String,
    /// The accept token: present only in the response that created it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

impl InvitationResponse {
    fn new(inv: Invitation, token: Option<String>) -> Self {
        InvitationResponse {
            id: inv.id.to_string(),
            org_id: inv.org_id.to_string(),
            email: inv.email,
            role: inv.role.to_string(),
            status: inv.status.as_str().to_owned(),
            invited_by: inv.invited_by.map(|u| u.to_string()),
            expires_at: rfc3339(inv.expires_at),
            created_at: rfc3339(inv.created_at),
            token,
        }
    }
}

fn new_token() -> (String, String) {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let token = format!("it_{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes));
    let hash = hash_token(&token);
    (token, hash)
}

fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn expiry(state: &AppState) -> ApiResult<time::OffsetDateTime> {
    let ttl = state.config.invitations.ttl_hours;
    orgplane_core::invitation::expires_at(state.clock.now(), ttl).ok_or_else(|| {
        ApiError::internal(format!("invitations.ttl_hours = {ttl} puts the expiry past the year 9999; lower it"))
    })
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateInvitation {
    #[schema(value_type = crate::openapi::schema::Email)]
    pub email: Email,
    /// Default `member`.
    #[schema(value_type = Option<crate::openapi::schema::Role>)]
    pub role: Option<String>,
}

/// Invites an e-mail address (`members:invite`). The response carries the accept token, once.
#[utoipa::path(post, path = "/v1/orgs/{org}/invitations", operation_id = "create_invitation", tag = "invitations", security(("user_token" = []), ("api_key" = [])),
    params(("org" = String, Path)), request_body = CreateInvitation,
    responses((status = 201, body = InvitationResponse), (status = 403, body = ErrorBody, description = "forbidden, personal_org, feature_not_entitled or limit_reached"),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    ctx: OrgCtx,
    ApiJson(body): ApiJson<CreateInvitation>,
) -> ApiResult<(StatusCode, Extension<SecretFields>, Json<InvitationResponse>)> {
    ctx.require(&state, Permission::MembersInvite)?;
    if ctx.org.kind == orgplane_core::org::OrgKind::Personal {
        // Said first, whatever else is wrong: no invitation fits a personal org.
        return Err(orgplane_core::DomainError::personal_org(
            "a personal organization can't invite members; create a team organization (POST /v1/orgs) and invite there",
        )
        .into());
    }
    let role = match &body.role {
        Some(r) => state.roles.resolve(r)?,
        None => RoleName::member(),
    };
    check_role_change(&ctx.role, &RoleName::member(), &role)?;
    crate::guards::custom_role(&state, ctx.org.id, &role).await?;
    let (token, token_hash) = new_token();
    let new = NewInvitation {
        org: ctx.org.id,
        email: body.email,
        role,
        invited_by: ctx.user_id(),
        token_hash,
        expires_at: expiry(&state)?,
    };
    let now = state.clock.now();
    let guard = crate::guards::seats_to_invite(&state, now);
    let inv = state.store.create_invitation(&new, &guard, &ctx.actor(), now).await?;
    Ok((StatusCode::CREATED, Extension(SecretFields(&["token"])), Json(InvitationResponse::new(inv, Some(token)))))
}

/// Pending invitations (`members:invite`).
#[utoipa::path(get, path = "/v1/orgs/{org}/invitations", operation_id = "list_invitations", tag = "invitations", security(("user_token" = []), ("api_key" = [])),
    params(("org" = String, Path), PageParams),
    responses((status = 200, body = List<InvitationResponse>), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    ctx: OrgCtx,
    Pagination(page): Pagination,
) -> ApiResult<Json<List<InvitationResponse>>> {
    ctx.require(&state, Permission::MembersInvite)?;
    let page = state.store.pending_invitations(ctx.org.id, &page).await?;
    Ok(Json(List {
        data: page.data.into_iter().map(|i| InvitationResponse::new(i, None)).collect(),
        has_more: page.has_more,
    }))
}

/// Revokes a pending invitation (`members:invite`).
#[utoipa::path(delete, path = "/v1/orgs/{org}/invitations/{inv}", operation_id = "revoke_invitation", tag = "invitations", security(("user_token" = []), ("api_key" = [])),
    params(("org" = String, Path), ("inv" = String, Path)),
    responses((status = 200, body = InvitationResponse), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn revoke(
    State(state): State<AppState>,
    ctx: OrgCtx,
    PathId(inv): PathId<InvitationId>,
) -> ApiResult<Json<InvitationResponse>> {
    ctx.require(&state, Permission::MembersInvite)?;
    let now = state.clock.now();
    state.store.revoke_invitation(ctx.org.id, inv, &ctx.actor(), now).await?;
    Ok(Json(InvitationResponse::new(state.store.invitation(ctx.org.id, inv).await?, None)))
}

/// A new token and a new expiry for a pending invitation (`members:invite`).
#[utoipa::path(post, path = "/v1/orgs/{org}/invitations/{inv}/resend", operation_id = "resend_invitation", tag = "invitations", security(("user_token" = []), ("api_key" = [])),
    params(("org" = String, Path), ("inv" = String, Path)),
    responses((status = 200, body = InvitationResponse), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn resend(
    State(state): State<AppState>,
    ctx: OrgCtx,
    PathId(inv): PathId<InvitationId>,
) -> ApiResult<(Extension<SecretFields>, Json<InvitationResponse>)> {
    ctx.require(&state, Permission::MembersInvite)?;
    let (token, hash) = new_token();
    let now = state.clock.now();
    let invitation = state.store.resend_invitation(ctx.org.id, inv, &hash, expiry(&state)?, &ctx.actor(), now).await?;
    Ok((Extension(SecretFields(&["token"])), Json(InvitationResponse::new(invitation, Some(token)))))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenBody {
    /// The accept token of the invitation (`it_…`).
    #[schema(value_type = crate::openapi::schema::Text)]
    pub token: String,
}

async fn settle(state: &AppState, user: AuthUser, token: &str, accept: bool) -> ApiResult<Json<InvitationResponse>> {
    let AuthUser(user) = user;
    let invitee = Invitee { email: user.email.as_deref(), email_verified: user.email_verified };
    let now = state.clock.now();
    let guard = crate::guards::seats_to_join(state, now);
    let inv = state.store.settle_invitation(&hash_token(token), user.id, &invitee, accept, &guard, now).await.map_err(
        |e| {
            let e = crate::error::ApiError::from(e);
            if e.code == "not_found" {
                crate::error::ApiError::not_found(
                    "no invitation matches this token; it may have been re-sent or revoked",
                )
                .with_param("token")
            } else {
                e
            }
        },
    )?;
    Ok(Json(InvitationResponse::new(inv, None)))
}

/// Accepts an invitation: the caller's verified e-mail must match.
#[utoipa::path(post, path = "/v1/invitations/accept", operation_id = "accept_invitation", tag = "invitations", security(("user_token" = [])), request_body = TokenBody,
    responses((status = 200, body = InvitationResponse), (status = 400, body = ErrorBody, description = "invitation_expired"), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn accept(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(body): ApiJson<TokenBody>,
) -> ApiResult<Json<InvitationResponse>> {
    settle(&state, user, &body.token, true).await
}

/// Declines an invitation addressed to the caller.
#[utoipa::path(post, path = "/v1/invitations/decline", operation_id = "decline_invitation", tag = "invitations", security(("user_token" = [])), request_body = TokenBody,
    responses((status = 200, body = InvitationResponse), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn decline(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(body): ApiJson<TokenBody>,
) -> ApiResult<Json<InvitationResponse>> {
    settle(&state, user, &body.token, false).await
}
