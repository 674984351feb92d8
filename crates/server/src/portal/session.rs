//! Portal sessions: minting a link (two JSON routes of the API), opening it
//! (a cookie), the [`PortalCtx`] extractor every page starts with, CSRF and
//! `Origin` checks, and logging out.

use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use base64::Engine;
use orgplane_core::roles::{Permission, RoleName};
use orgplane_core::{OrgId, UserId};
use orgplane_store::{LinkOpening, NewPortalSession, PortalSessionRecord, SessionLookup};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{LINK_TTL, PageError};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, ApiKeyCaller, OrgCtx, PathId, Principal, UserPrincipal};
use crate::middleware::SecretFields;
use crate::routes::billing::OptionalJson;
use crate::routes::rfc3339;
use crate::state::AppState;

/// The session cookie's name.
pub const COOKIE: &str = "orgplane_portal";

fn random_token(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{prefix}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePortalSession {
    /// `org_…`
    #[schema(value_type = crate::openapi::schema::OrgId)]
    pub org_id: OrgId,
    /// `usr_…` of a member of the org: the person the portal acts as.
    #[schema(value_type = crate::openapi::schema::UserId)]
    pub user_id: UserId,
    /// Where the portal's "Back to the app" link goes; its origin must be in `portal.return_url_allowlist`.
    #[schema(value_type = Option<crate::openapi::schema::HttpUrl>)]
    pub return_url: Option<String>,
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOwnPortalSession {
    /// Where the portal's "Back to the app" link goes; its origin must be in `portal.return_url_allowlist`.
    #[schema(value_type = Option<crate::openapi::schema::HttpUrl>)]
    pub return_url: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct PortalSessionResponse {
    /// `ps_…`
    pub id: String,
    /// The single-use link to open in the member's browser.
    pub url: String,
    /// When the link stops opening (5 minutes after it was made).
    pub expires_at: String,
}

/// The link is a one-time secret: left out of the copy stored for
/// `Idempotency-Key` replay (a replay answers without `url`; mint again).
type Minted = (Extension<SecretFields>, Json<PortalSessionResponse>);

async fn mint(state: &AppState, org: OrgId, user: UserId, return_url: Option<String>) -> ApiResult<Minted> {
    if let Some(url) = &return_url {
        state.config.portal.check_return_url(url).map_err(|m| {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", m).with_param("return_url")
        })?;
    }
    let token = random_token("pl_");
    let now = state.clock.now();
    let new = NewPortalSession { org, user, link_hash: hash(&token), link_expires_at: now + LINK_TTL, return_url };
    let session = state.store.create_portal_session(&new, now).await.map_err(|e| match ApiError::from(e) {
        e if e.code == "not_found" => {
            ApiError::not_found(format!("{user} is not a member of organization {org}")).with_param("user_id")
        }
        e => e,
    })?;
    let response = PortalSessionResponse {
        id: session.id.to_string(),
        url: format!("{}/portal/link/{token}", state.portal.public_url),
        expires_at: rfc3339(session.link_expires_at),
    };
    Ok((Extension(SecretFields(&["url"])), Json(response)))
}

/// Mints a portal link for a member of an org (API key): single use, valid 5 minutes.
#[utoipa::path(post, path = "/v1/portal_sessions", operation_id = "create_portal_session", tag = "portal", security(("api_key" = [])),
    request_body = CreatePortalSession,
    responses((status = 200, body = PortalSessionResponse),
        (status = 404, body = ErrorBody, description = "no such org, or the user is not its member"),
        (status = 422, body = ErrorBody, description = "return_url outside portal.return_url_allowlist")))]
pub async fn create(
    State(state): State<AppState>,
    _caller: ApiKeyCaller,
    ApiJson(body): ApiJson<CreatePortalSession>,
) -> ApiResult<Minted> {
    mint(&state, body.org_id, body.user_id, body.return_url).await
}

/// Mints a portal link for the calling member (a user's JWT): single use, valid 5 minutes.
#[utoipa::path(post, path = "/v1/orgs/{org}/portal_session", operation_id = "create_own_portal_session", tag = "portal", security(("user_token" = [])),
    params(("org" = String, Path)), request_body(content = Option<CreateOwnPortalSession>, description = "optional"),
    responses((status = 200, body = PortalSessionResponse), (status = 403, body = ErrorBody, description = "an API key: use POST /v1/portal_sessions"),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody, description = "return_url outside portal.return_url_allowlist")))]
pub async fn create_own(
    State(state): State<AppState>,
    ctx: OrgCtx,
    OptionalJson(body): OptionalJson<CreateOwnPortalSession>,
) -> ApiResult<Minted> {
    let Some(user) = ctx.user_id() else {
        return Err(ApiError::forbidden(
            "a portal session is for a person; with an API key, use POST /v1/portal_sessions naming the user",
        ));
    };
    mint(&state, ctx.org.id, user, body.return_url).await
}

fn cookie_header(state: &AppState, value: &str, max_age: Option<i64>) -> HeaderValue {
    let secure = if state.portal.secure_cookie { "; Secure" } else { "" };
    let age = max_age.map(|s| format!("; Max-Age={s}")).unwrap_or_default();
    let text = format!("{COOKIE}={value}; Path=/portal; HttpOnly; SameSite=Lax{secure}{age}");
    HeaderValue::from_str(&text).expect("a cookie of base64url and fixed words is a valid header")
}

/// `GET /portal/link/{token}`: opens a minted link once, sets the session
/// cookie and goes to the org's overview. A used, expired or unknown link
/// gets a page saying so, with the way back to the app.
pub async fn open_link(State(state): State<AppState>, Path(token): Path<String>) -> Response {
    let app = &state.config.portal.app_name;
    let cookie = random_token("");
    let csrf = random_token("");
    let now = state.clock.now();
    match state.store.open_portal_link(&hash(&token), &hash(&cookie), &csrf, now).await {
        Ok(LinkOpening::Opened(session)) => (
            StatusCode::SEE_OTHER,
            [
                (header::SET_COOKIE, cookie_header(&state, &cookie, None)),
                (
                    header::LOCATION,
                    HeaderValue::from_str(&format!("/portal/orgs/{}", session.org_id))
                        .expect("an org id is a valid path"),
                ),
            ],
        )
            .into_response(),
        Ok(LinkOpening::AlreadyUsed(session)) => PageError::new(
            StatusCode::GONE,
            "This link has already been used",
            "A portal link opens once. Ask the app for a new one.",
        )
        .with_return(session.return_url, app)
        .into_response(),
        Ok(LinkOpening::Expired(session)) => PageError::new(
            StatusCode::GONE,
            "This link has expired",
            "A portal link can be opened for 5 minutes after it was made. Ask the app for a new one.",
        )
        .with_return(session.return_url, app)
        .into_response(),
        Ok(LinkOpening::Unknown) => PageError::new(
            StatusCode::NOT_FOUND,
            "This link is not valid",
            "No portal link matches it. Ask the app for a new one.",
        )
        .into_response(),
        Err(e) => store_failure(e).into_response(),
    }
}

fn store_failure(e: orgplane_store::StoreError) -> PageError {
    let e = ApiError::from(e);
    api_failure(e)
}

/// An API error met while loading a page, as a page.
pub fn api_failure(e: ApiError) -> PageError {
    match e.code {
        "not_found" => PageError::not_found(),
        "unavailable" => PageError::new(e.status, "Temporarily unavailable", "Please try again in a moment."),
        "internal_error" => PageError::new(e.status, "Something went wrong", e.message),
        _ => PageError::new(e.status, "This can't be done", e.message),
    }
}

/// A signed-in portal request for the org in its path: the session, the
/// member as the API sees them, and the session's CSRF token.
pub struct PortalCtx {
    pub session: PortalSessionRecord,
    pub user: UserPrincipal,
    pub org: orgplane_core::org::Org,
    pub role: RoleName,
    pub is_billing_admin: bool,
    pub csrf: String,
}

impl PortalCtx {
    /// The org context the API's handlers take: the same member, role and
    /// billing-admin flag that `OrgCtx` reads for a JWT.
    pub fn org_ctx(&self) -> OrgCtx {
        OrgCtx {
            org: std::sync::Arc::new(self.org.clone()),
            principal: Principal::User(self.user.clone()),
            role: self.role.clone(),
            is_billing_admin: self.is_billing_admin,
        }
    }

    /// The same context with the org and the member's role read again
    /// (after an action that may have changed them).
    pub async fn refreshed(mut self, state: &AppState) -> PortalCtx {
        if let Ok(Some((org, membership, is_billing_admin))) = state.store.membership(self.org.id, self.user.id).await {
            self.org = org;
            self.role = membership.role;
            self.is_billing_admin = is_billing_admin;
        }
        self
    }

    pub fn allows(&self, state: &AppState, permission: Permission) -> bool {
        state.roles.allows(&self.role, self.is_billing_admin, permission)
    }

    /// Whether the request carries this session's CSRF token, as a form
    /// field or as the `X-CSRF-Token` header (htmx).
    pub fn csrf_ok(&self, headers: &HeaderMap, field: Option<&str>) -> bool {
        let header = headers.get("x-csrf-token").and_then(|v| v.to_str().ok());
        [field, header].into_iter().flatten().any(|given| constant_time_eq(given.as_bytes(), self.csrf.as_bytes()))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The session cookie's value, if the request has one.
fn cookie_value(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

/// A state-changing request must come from the portal's own pages: a
/// browser's `Origin` (or, without one, `Sec-Fetch-Site`) must say so.
pub fn same_origin(state: &AppState, headers: &HeaderMap) -> bool {
    match headers.get(header::ORIGIN).map(|v| v.to_str().unwrap_or("")) {
        Some(origin) => origin.eq_ignore_ascii_case(&state.portal.origin),
        None => headers
            .get("sec-fetch-site")
            .and_then(|v| v.to_str().ok())
            .is_none_or(|site| site == "same-origin" || site == "none"),
    }
}

/// The live session of the request's cookie, or the page that says why not.
async fn live_session(state: &AppState, headers: &HeaderMap) -> Result<PortalSessionRecord, PageError> {
    let app = &state.config.portal.app_name;
    let signed_out = || {
        PageError::new(
            StatusCode::UNAUTHORIZED,
            "You're signed out of the portal",
            "Open the organization's settings from the app again to get a new link.",
        )
    };
    let cookie = cookie_value(headers).ok_or_else(signed_out)?;
    let idle = std::time::Duration::from_secs(state.config.portal.idle_timeout_secs.into());
    match state.store.portal_session(&hash(cookie), state.clock.now(), idle).await.map_err(store_failure)? {
        SessionLookup::Live(session) => Ok(session),
        SessionLookup::IdleExpired(session) => Err(PageError::new(
            StatusCode::UNAUTHORIZED,
            "Your session has expired",
            "The portal signs you out after a while without use. Open it from the app again to continue.",
        )
        .with_return(session.return_url, app)),
        SessionLookup::Ended(session) => Err(signed_out().with_return(session.return_url, app)),
        SessionLookup::Unknown => Err(signed_out()),
    }
}

impl FromRequestParts<AppState> for PortalCtx {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, PageError> {
        let session = live_session(state, &parts.headers).await?;
        if parts.method != Method::GET && parts.method != Method::HEAD && !same_origin(state, &parts.headers) {
            return Err(PageError::new(
                StatusCode::FORBIDDEN,
                "Request refused",
                "This request did not come from the portal's own pages (its Origin is foreign).",
            ));
        }
        let PathId(org) =
            PathId::<OrgId>::from_request_parts(parts, state).await.map_err(|_| PageError::not_found())?;
        // A session is for one org: any other is not found, as in the API.
        if org != session.org_id {
            return Err(PageError::not_found());
        }
        let user = state.store.user(session.user_id).await.map_err(store_failure)?;
        let user =
            UserPrincipal { id: user.id, email: user.email, email_verified: user.email_verified, name: user.name };
        // The API's own membership check, cached as for a JWT.
        parts.extensions.insert(Principal::User(user.clone()));
        let ctx = OrgCtx::from_request_parts(parts, state).await.map_err(api_failure)?;
        let csrf = session.csrf_token.clone().unwrap_or_default();
        Ok(PortalCtx {
            session,
            user,
            org: std::sync::Arc::unwrap_or_clone(ctx.org),
            role: ctx.role,
            is_billing_admin: ctx.is_billing_admin,
            csrf,
        })
    }
}

/// `POST /portal/logout`: ends the session (with its CSRF token).
pub async fn logout(State(state): State<AppState>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let app = state.config.portal.app_name.clone();
    let session = match live_session(&state, &headers).await {
        Ok(session) => session,
        Err(page) => return page.into_response(),
    };
    let form = super::pages::Form::parse(&body);
    let header = headers.get("x-csrf-token").and_then(|v| v.to_str().ok());
    let token = session.csrf_token.as_deref().unwrap_or("");
    let csrf_ok = !token.is_empty()
        && [form.get("csrf"), header].into_iter().flatten().any(|t| constant_time_eq(t.as_bytes(), token.as_bytes()));
    if !same_origin(&state, &headers) || !csrf_ok {
        return PageError::new(StatusCode::FORBIDDEN, "Request refused", "This request lacks the portal's CSRF token.")
            .into_response();
    }
    if let Err(e) = state.store.end_portal_session(session.id, state.clock.now()).await {
        return store_failure(e).into_response();
    }
    let mut response =
        PageError::new(StatusCode::OK, "You're signed out", "Your portal session has ended on this device.")
            .with_return(session.return_url, &app)
            .into_response();
    response.headers_mut().insert(header::SET_COOKIE, cookie_header(&state, "", Some(0)));
    response
}
