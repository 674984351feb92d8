//! User administration for operators, with an `admin` server key: find a
//! user, see their memberships, active org, personal org and last visit,
//! fix a user stuck on the wrong active org, and delete a user.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use orgplane_core::{OrgId, UserId};
use orgplane_store::{AdminUser, StoreError, UserDeletion};
use serde::{Deserialize, Serialize};

use super::me::MembershipSummary;
use super::{List, rfc3339};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{AdminKey, ApiJson, ApiQuery, PathId};
use crate::state::AppState;

#[derive(Serialize, utoipa::ToSchema)]
pub struct AdminUserResponse {
    /// `usr_…`
    pub id: String,
    pub issuer: String,
    pub subject: String,
    pub email: Option<String>,
    pub email_verified: bool,
    pub name: Option<String>,
    pub active_org_id: Option<String>,
    pub personal_org_id: Option<String>,
    /// The last authenticated request (kept to the hour); `null`: not seen since it was kept.
    pub last_seen_at: Option<String>,
    pub memberships: Vec<MembershipSummary>,
    pub created_at: String,
}

impl From<AdminUser> for AdminUserResponse {
    fn from(a: AdminUser) -> Self {
        AdminUserResponse {
            id: a.user.id.to_string(),
            issuer: a.user.issuer,
            subject: a.user.subject,
            email: a.user.email,
            email_verified: a.user.email_verified,
            name: a.user.name,
            active_org_id: a.user.active_org_id.map(|o| o.to_string()),
            personal_org_id: a.personal_org.map(|o| o.to_string()),
            last_seen_at: a.last_seen_at.map(rfc3339),
            memberships: a
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
            created_at: rfc3339(a.user.created_at),
        }
    }
}

#[derive(Deserialize)]
pub struct EmailQuery {
    pub email: Option<String>,
}

/// Users with this e-mail address (`admin` key; several issuers may know one address).
#[utoipa::path(get, path = "/v1/users", operation_id = "find_users", tag = "administration", security(("api_key" = [])),
    params(("email" = crate::openapi::schema::Email, Query)),
    responses((status = 200, body = List<AdminUserResponse>),
        (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn find_users(
    State(state): State<AppState>,
    _admin: AdminKey,
    ApiQuery(query): ApiQuery<EmailQuery>,
) -> ApiResult<Json<List<AdminUserResponse>>> {
    let email = query.email.filter(|e| !e.trim().is_empty()).ok_or_else(|| {
        ApiError::invalid("give the address to look for: GET /v1/users?email=someone@example.com").with_param("email")
    })?;
    let mut data = Vec::new();
    for id in state.store.users_by_email(&email).await? {
        data.push(state.store.admin_user(id).await?.into());
    }
    Ok(Json(List { data, has_more: false }))
}

/// One user (`admin` key).
#[utoipa::path(get, path = "/v1/users/{user}", operation_id = "get_user", tag = "administration", security(("api_key" = [])),
    params(("user" = String, Path)),
    responses((status = 200, body = AdminUserResponse), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_user(
    State(state): State<AppState>,
    _admin: AdminKey,
    PathId(user): PathId<UserId>,
) -> ApiResult<Json<AdminUserResponse>> {
    Ok(Json(state.store.admin_user(user).await?.into()))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActiveOrg {
    /// An org the user is a member of.
    #[schema(value_type = crate::openapi::schema::OrgId)]
    pub org_id: OrgId,
}

/// Sets a user's active org (`admin` key): the fix for a user stuck on the
/// wrong org. The org must be one of theirs.
#[utoipa::path(put, path = "/v1/users/{user}/active_org", operation_id = "set_user_active_org", tag = "administration", security(("api_key" = [])),
    params(("user" = String, Path)), request_body = ActiveOrg,
    responses((status = 200, body = AdminUserResponse), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn set_user_active_org(
    State(state): State<AppState>,
    _admin: AdminKey,
    PathId(user): PathId<UserId>,
    ApiJson(body): ApiJson<ActiveOrg>,
) -> ApiResult<Json<AdminUserResponse>> {
    // The user first: an unknown user is a 404, a foreign org a 400.
    state.store.user(user).await?;
    match state.store.set_active_org(user, body.org_id).await {
        Ok(()) => {}
        Err(StoreError::Domain(orgplane_core::DomainError::NotFound { .. })) => {
            return Err(ApiError::invalid(format!(
                "{user} is not a member of {}; pick one of the memberships GET /v1/users/{user} lists",
                body.org_id
            ))
            .with_param("org_id"));
        }
        Err(e) => return Err(e.into()),
    }
    Ok(Json(state.store.admin_user(user).await?.into()))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct UserDeleted {
    pub id: String,
    pub deleted: bool,
    /// The team orgs the user was removed from.
    pub left_orgs: Vec<String>,
    /// Their personal org, deleted with them.
    pub personal_org_id: Option<String>,
}

/// Deletes a user (`admin` key): refused with `409 last_owner` or
/// `billing_admin_must_transfer`, naming the orgs that need another owner
/// or billing admin first, and with `409 conflict` while their personal org
/// has a live subscription. Otherwise removes their memberships and their
/// personal org; audit events keep the user's id, and the next sign-in of
/// the same subject starts fresh.
#[utoipa::path(delete, path = "/v1/users/{user}", operation_id = "delete_user", tag = "administration", security(("api_key" = [])),
    params(("user" = String, Path)),
    responses((status = 200, body = UserDeleted), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "last_owner, billing_admin_must_transfer or conflict")))]
pub async fn delete_user(
    State(state): State<AppState>,
    AdminKey(key): AdminKey,
    PathId(user): PathId<UserId>,
) -> ApiResult<Json<UserDeleted>> {
    let actor = orgplane_store::Actor::ApiKey(key);
    match state.store.delete_user(user, &actor, state.clock.now()).await? {
        UserDeletion::Deleted { left, personal_org } => Ok(Json(UserDeleted {
            id: user.to_string(),
            deleted: true,
            left_orgs: left.iter().map(ToString::to_string).collect(),
            personal_org_id: personal_org.map(|o| o.to_string()),
        })),
        UserDeletion::Blocked { last_owner, billing_admin } => Err(blocked(user, &last_owner, &billing_admin)),
    }
}

/// The refusal of a deletion, naming every org to fix first.
fn blocked(user: UserId, last_owner: &[OrgId], billing_admin: &[OrgId]) -> ApiError {
    let list = |orgs: &[OrgId]| orgs.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
    let mut parts = Vec::new();
    if !last_owner.is_empty() {
        parts.push(format!("{user} is the last owner of {}: make another member owner there first", list(last_owner)));
    }
    if !billing_admin.is_empty() {
        parts.push(format!(
            "{user} is the billing admin of {}: transfer it (PUT /v1/orgs/{{org}}/billing_admin) first",
            list(billing_admin)
        ));
    }
    let code = if last_owner.is_empty() { "billing_admin_must_transfer" } else { "last_owner" };
    ApiError::new(StatusCode::CONFLICT, code, format!("{}; nothing was deleted", parts.join("; ")))
}
