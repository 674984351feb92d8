//! Request extractors: authentication, org membership, JSON bodies, ids in
//! paths and pagination. Each turns a bad request into the contract's error
//! body; handlers receive only typed, valid values.

use std::str::FromStr;

use axum::extract::{FromRequest, FromRequestParts, Query, RawPathParams, Request};
use axum::http::HeaderMap;
use axum::http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::request::Parts;
use orgplane_core::keys::KeyScope;
use orgplane_core::org::Org;
use orgplane_core::roles::{Permission, RoleName};
use orgplane_core::values::{TextKind, forbidden_char, strip_forbidden};
use orgplane_core::{ApiKeyId, IdParseError, OrgId, UserId};
use orgplane_store::{Actor, NewIdentity, PageRequest};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::error::{ApiError, ApiResult};
use crate::state::{AppState, KnownUser, OrgAccess};

/// Who is calling: a signed-in user or a server holding an API key.
#[derive(Debug, Clone)]
pub enum Principal {
    User(UserPrincipal),
    ApiKey(ApiKeyId),
}

#[derive(Debug, Clone)]
pub struct UserPrincipal {
    pub id: UserId,
    pub email: Option<String>,
    pub email_verified: bool,
    pub name: Option<String>,
}

impl Principal {
    pub fn actor(&self) -> Actor {
        match self {
            Principal::User(u) => Actor::User(u.id),
            Principal::ApiKey(k) => Actor::ApiKey(*k),
        }
    }

    /// A stable name for the principal (idempotency keys are scoped by it).
    pub fn key(&self) -> String {
        match self {
            Principal::User(u) => u.id.to_string(),
            Principal::ApiKey(k) => k.to_string(),
        }
    }
}

/// Resolves the `Authorization` header. `Ok(None)` when there is none.
pub async fn authenticate(state: &AppState, headers: &HeaderMap) -> ApiResult<Option<Principal>> {
    Ok(authenticate_scoped(state, headers).await?.map(|(principal, _)| principal))
}

/// Like [`authenticate`], with the scope of a server key (`None` for a user).
pub async fn authenticate_scoped(
    state: &AppState,
    headers: &HeaderMap,
) -> ApiResult<Option<(Principal, Option<KeyScope>)>> {
    let Some(value) = headers.get(AUTHORIZATION) else {
        return Ok(None);
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::unauthenticated("the Authorization header must be `Bearer <token>`"))?;

    if token.starts_with("sk_") {
        let key = server_key(state, token).await?;
        return Ok(Some((Principal::ApiKey(key.id), Some(key.scope))));
    }
    user(state, token).await.map(|u| Some((u, None)))
}

/// The server key `token`, if it is live and unexpired at the server's
/// `now`; its use is noted at most once a minute.
async fn server_key(state: &AppState, token: &str) -> ApiResult<std::sync::Arc<crate::state::KnownKey>> {
    let hash = orgplane_auth::api_key::hash(token);
    // The generation first: a revocation committed while we read makes the
    // entry stale at once instead of hiding behind a newer generation.
    let generation = state.store.keys_generation();
    let key = match state.principals.api_key(&hash, generation) {
        Some(key) => key,
        None => {
            let record = Box::pin(state.store.api_key_by_hash(&hash)).await?.ok_or_else(|| {
                ApiError::unauthenticated("this API key is unknown or revoked; create one with `orgplane keys create`")
            })?;
            let key = std::sync::Arc::new(crate::state::KnownKey {
                id: record.id,
                scope: record.scope,
                expires_at: record.expires_at,
                generation,
                use_noted: crate::state::UseNoted::new(record.last_used_at),
            });
            state.principals.remember_api_key(&hash, key.clone());
            key
        }
    };
    let now = state.clock.now();
    if let Err(refusal) = orgplane_core::keys::usable(None, key.expires_at, now) {
        return Err(ApiError::unauthenticated(format!(
            "this API key is {}; create another with `orgplane keys create` or POST /v1/api_keys",
            refusal.as_str()
        )));
    }
    if key.use_noted.due(now) {
        let (store, id) = (state.store.clone(), key.id);
        // Off the request: the answer waits for no write.
        tokio::spawn(async move {
            if let Err(e) = store.note_api_key_used(id, now).await {
                tracing::debug!(error = %e, key = %id, "could not note the API key's use");
            }
        });
    }
    Ok(key)
}

/// Writes the user's `last_seen_at` off the request, at most once an hour.
fn note_seen(state: &AppState, user: UserId) {
    let now = state.clock.now();
    if state.principals.seen_due(user, now) {
        let store = state.store.clone();
        tokio::spawn(async move {
            if let Err(e) = store.note_user_seen(user, now).await {
                tracing::debug!(error = %e, %user, "could not note the user's visit");
            }
        });
    }
}

/// The user behind a JWT, provisioned just in time.
async fn user(state: &AppState, token: &str) -> ApiResult<Principal> {
    let identity = state.verifier.verify(token).await.map_err(|e| {
        if e.is_retryable() {
            // The keys are unreachable, or may have rotated since they were fetched: the token may be fine.
            let retry_after = e.retry_after_secs().unwrap_or(state.config.auth.jwks_refresh_min_interval_secs).max(1);
            ApiError::unavailable(e.to_string(), u32::try_from(retry_after).unwrap_or(u32::MAX))
        } else {
            ApiError::unauthenticated(e.to_string())
        }
    })?;
    // The text rule for what a token says: a name keeps its printable part;
    // an e-mail address with a control character is no address (it could
    // match no invitation) and is treated as absent and unverified.
    let email =
        identity.email.as_deref().filter(|e| forbidden_char(e, TextKind::SingleLine).is_none()).map(str::to_lowercase);
    let email_verified = identity.email_verified && email.is_some() == identity.email.is_some();
    let name = identity.name.as_deref().and_then(strip_forbidden);
    if let Some(cached) = state.principals.user(&identity.issuer, &identity.subject)
        && cached.email == email
        && cached.email_verified == email_verified
        && cached.name == name
        && state.store.user_generation(cached.id) == cached.generation
    {
        note_seen(state, cached.id);
        return Ok(Principal::User(UserPrincipal { id: cached.id, email, email_verified, name }));
    }
    // Boxed: only a new or changed user needs the store's (large) future.
    let user = Box::pin(state.store.provision_user(
        &NewIdentity {
            issuer: identity.issuer.clone(),
            subject: identity.subject.clone(),
            email: email.clone(),
            email_verified,
            name: name.clone(),
        },
        state.clock.now(),
    ))
    .await?;
    let known =
        KnownUser { id: user.id, email, email_verified, name, generation: state.store.user_generation(user.id) };
    state.principals.remember_user(&identity.issuer, &identity.subject, known.clone());
    note_seen(state, known.id);
    Ok(Principal::User(UserPrincipal {
        id: known.id,
        email: known.email,
        email_verified: known.email_verified,
        name: known.name,
    }))
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Self> {
        if let Some(p) = parts.extensions.get::<Principal>() {
            return Ok(p.clone());
        }
        let principal = authenticate(state, &parts.headers).await?.ok_or_else(|| {
            ApiError::unauthenticated(
                "this route needs `Authorization: Bearer <token>` (a user's JWT or an sk_ API key)",
            )
        })?;
        parts.extensions.insert(principal.clone());
        Ok(principal)
    }
}

/// A signed-in user (API keys are refused: they can't act as a person).
pub struct AuthUser(pub UserPrincipal);

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Self> {
        match Principal::from_request_parts(parts, state).await? {
            Principal::User(u) => Ok(AuthUser(u)),
            Principal::ApiKey(_) => Err(ApiError::forbidden(
                "this route acts as a signed-in user; call it with the user's token, not an API key",
            )),
        }
    }
}

/// An API key holder (server principal).
pub struct ApiKeyCaller(pub ApiKeyId);

impl FromRequestParts<AppState> for ApiKeyCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Self> {
        match Principal::from_request_parts(parts, state).await? {
            Principal::ApiKey(k) => Ok(ApiKeyCaller(k)),
            Principal::User(_) => {
                Err(ApiError::forbidden("this route needs an API key (`Authorization: Bearer sk_…`)"))
            }
        }
    }
}

/// A server key of scope `admin`: manages server keys and users.
pub struct AdminKey(pub ApiKeyId);

impl FromRequestParts<AppState> for AdminKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Self> {
        let scope = match parts.extensions.get::<KeyScope>() {
            Some(scope) => Some(*scope),
            None => authenticate_scoped(state, &parts.headers).await?.and_then(|(_, scope)| scope),
        };
        let ApiKeyCaller(key) = ApiKeyCaller::from_request_parts(parts, state).await?;
        match scope {
            Some(KeyScope::Admin) => Ok(AdminKey(key)),
            Some(other) => Err(ApiError::forbidden(format!(
                "this route needs a server key of scope `admin`; this key's scope is `{other}`"
            ))),
            None => Err(ApiError::forbidden("this route needs a server key of scope `admin`")),
        }
    }
}

/// The `{org}` of the path, seen by a caller who may see it: a member, or an
/// API key. Anyone else gets `not_found`, exactly as for an org that does
/// not exist.
pub struct OrgCtx {
    pub org: std::sync::Arc<Org>,
    pub principal: Principal,
    /// The member's role; API keys act with an owner's rights.
    pub role: RoleName,
    pub is_billing_admin: bool,
}

impl OrgCtx {
    /// The one permission guard of org-scoped routes. Routes name a
    /// permission, never a role: owners pass because they hold every
    /// permission, and so does a custom role that holds this one.
    pub fn require(&self, state: &AppState, permission: Permission) -> ApiResult<()> {
        if self.allows(state, permission) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "your role `{}` lacks the `{permission}` permission in this organization; ask an owner",
                self.role
            )))
        }
    }

    /// Whether the caller holds `permission` here (for routes whose answer,
    /// not whose access, depends on it); see [`OrgCtx::require`].
    pub fn allows(&self, state: &AppState, permission: Permission) -> bool {
        state.roles.allows(&self.role, self.is_billing_admin, permission)
    }

    pub fn actor(&self) -> Actor {
        self.principal.actor()
    }

    pub fn user_id(&self) -> Option<UserId> {
        match &self.principal {
            Principal::User(u) => Some(u.id),
            Principal::ApiKey(_) => None,
        }
    }
}

impl FromRequestParts<AppState> for OrgCtx {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Self> {
        // Who is calling comes first: without credentials the answer is 401
        // whatever the path holds, and a malformed id tells a stranger nothing.
        let principal = Principal::from_request_parts(parts, state).await?;
        let PathId(org_id) = PathId::<OrgId>::from_request_parts(parts, state).await?;
        let user = match &principal {
            Principal::User(u) => Some(u.id),
            Principal::ApiKey(_) => None,
        };
        // Generations first: a change committed while we read makes the
        // entry stale at once instead of hiding behind a newer generation.
        let org_generation = state.store.org_generation(org_id);
        let user_generation = user.map(|u| state.store.user_generation(u)).unwrap_or(0);
        let key = (org_id, user);
        let access = match state.org_access.get(key, org_generation, user_generation) {
            Some(access) => access,
            None => {
                let access = match user {
                    Some(user) => {
                        // Boxed, like every store call on a cache miss here: the
                        // hit path's future stays small (it is moved per request).
                        let (org, membership, is_billing_admin) = Box::pin(state.store.membership(org_id, user))
                            .await?
                            .ok_or_else(|| ApiError::not_found(format!("no organization {org_id} among yours")))?;
                        OrgAccess { org: std::sync::Arc::new(org), role: membership.role, is_billing_admin }
                    }
                    None => {
                        let org = Box::pin(state.store.org(org_id)).await.map_err(|e| match e {
                            orgplane_store::StoreError::Domain(_) => {
                                ApiError::not_found(format!("no organization {org_id}"))
                            }
                            other => other.into(),
                        })?;
                        // API keys act with an owner's rights.
                        OrgAccess { org: std::sync::Arc::new(org), role: RoleName::owner(), is_billing_admin: true }
                    }
                };
                state.org_access.put(key, org_generation, user_generation, access.clone());
                access
            }
        };
        Ok(OrgCtx { org: access.org, principal, role: access.role, is_billing_admin: access.is_billing_admin })
    }
}

/// An id named in the route's path, typed: `PathId<UserId>` reads `{user}`.
/// A malformed id is a 400 naming the param. Put it after the extractor
/// that authenticates (`OrgCtx`, `AuthUser`), so that a caller without
/// credentials gets 401 whatever the path holds.
pub struct PathId<T>(pub T);

/// The path parameter each id type is read from.
pub trait PathParam: FromStr<Err = IdParseError> {
    const PARAM: &'static str;
}

impl PathParam for OrgId {
    const PARAM: &'static str = "org";
}

impl PathParam for UserId {
    const PARAM: &'static str = "user";
}

impl PathParam for orgplane_core::ResourceId {
    const PARAM: &'static str = "res";
}

impl PathParam for orgplane_core::InvitationId {
    const PARAM: &'static str = "inv";
}

impl PathParam for orgplane_core::WebhookEndpointId {
    const PARAM: &'static str = "endpoint";
}

impl PathParam for ApiKeyId {
    const PARAM: &'static str = "key";
}

impl PathParam for orgplane_core::OrgApiKeyId {
    const PARAM: &'static str = "org_key";
}

impl<T: PathParam + Send, S: Send + Sync> FromRequestParts<S> for PathId<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> ApiResult<Self> {
        let params = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::internal(format!("path params: {e}")))?;
        let raw = params
            .iter()
            .find(|(k, _)| *k == T::PARAM)
            .map(|(_, v)| v)
            .ok_or_else(|| ApiError::internal(format!("a typed id on a route without {{{}}}", T::PARAM)))?;
        raw.parse::<T>().map(PathId).map_err(|e| ApiError::invalid(e.to_string()).with_param(T::PARAM))
    }
}

/// A JSON body, parsed into `T`. Wrong content type, malformed JSON, wrong
/// types and missing fields become `invalid_request` naming the field;
/// bodies over `max_body_bytes` become 413.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> ApiResult<Self> {
        let json = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                let mime = v.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
                mime == "application/json" || mime.ends_with("+json")
            })
            .unwrap_or(false);
        if !json {
            return Err(ApiError::new(
                axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "invalid_request",
                "send the body as JSON with `Content-Type: application/json`",
            ));
        }
        let bytes = read_body(req, state.config.max_body_bytes).await?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// Parses a JSON body into `T`, with the path of the offending field in
/// the error. Before `T` sees it, the body as a whole must be one JSON
/// object (serde would read an array's elements as a struct's fields in
/// order), with no key twice in any object at any depth (serde keeps the
/// last one silently), every string under the text rule of
/// [`orgplane_core::values`] (object keys as single-line text), and nothing
/// after the object.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> ApiResult<T> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::invalid("the request body is empty; send a JSON object"));
    }
    check_shape(bytes)?;
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).or_else(|e| {
        // JSON has one number type: `5.0` is the integer 5 to JSON Schema
        // (and to the OpenAPI document). Read again with such numbers as
        // integers; anything else keeps the first error, with its position.
        if e.inner().to_string().starts_with("invalid type: floating point") {
            let mut value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| json_error(e, "."))?;
            if whole_numbers_as_integers(&mut value) {
                return serde_path_to_error::deserialize(value).map_err(|e| {
                    let path = e.path().to_string();
                    json_error(e.into_inner(), &path)
                });
            }
        }
        let path = e.path().to_string();
        Err(json_error(e.into_inner(), &path))
    })
}

/// Turns every float with no fractional part that fits an `i64` or `u64`
/// into that integer; answers whether it changed any.
fn whole_numbers_as_integers(value: &mut serde_json::Value) -> bool {
    match value {
        serde_json::Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            // Exactly representable integers only (below 2^53 in magnitude).
            let exact = f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0;
            if exact {
                *value = if f < 0.0 { serde_json::Value::from(f as i64) } else { serde_json::Value::from(f as u64) };
            }
            exact
        }
        serde_json::Value::Array(items) => {
            let mut changed = false;
            for item in items {
                changed |= whole_numbers_as_integers(item);
            }
            changed
        }
        serde_json::Value::Object(map) => {
            let mut changed = false;
            for item in map.values_mut() {
                changed |= whole_numbers_as_integers(item);
            }
            changed
        }
        _ => false,
    }
}

/// The contract's error for a serde error at `path` (`.` = the body).
fn json_error(inner: serde_json::Error, path: &str) -> ApiError {
    let message = inner.to_string();
    // serde names a missing field only in the message.
    let missing = message.strip_prefix("missing field `").and_then(|rest| rest.split('`').next()).map(str::to_owned);
    let param = match (path, missing) {
        (".", Some(field)) => Some(field),
        (_, Some(field)) => Some(format!("{path}.{field}")),
        (".", None) => None,
        (p, None) => Some(p.to_owned()),
    };
    let syntax = inner.is_syntax() || inner.is_eof();
    let what = if syntax { "malformed JSON" } else { "invalid request body" };
    let err = ApiError::new(
        if syntax { axum::http::StatusCode::BAD_REQUEST } else { axum::http::StatusCode::UNPROCESSABLE_ENTITY },
        "invalid_request",
        format!("{what}: {message}"),
    );
    match param {
        Some(p) => err.with_param(p),
        None => err,
    }
}

/// What [`check_shape`] found wrong, with the param at fault.
enum ShapeFault {
    Duplicate { path: String, key: String },
    Text { path: String, message: String },
}

/// Walks the whole body once: the body is an object, no object repeats a
/// key, every string passes the text rule, nothing trails the object.
fn check_shape(bytes: &[u8]) -> ApiResult<()> {
    let fault = std::cell::RefCell::new(None);
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let walked = serde::de::DeserializeSeed::deserialize(Shape { path: String::new(), fault: &fault }, &mut *de)
        .and_then(|is_object| de.end().map(|()| is_object));
    if let Some(fault) = fault.into_inner() {
        return Err(match fault {
            ShapeFault::Duplicate { path, key } => ApiError::new(
                axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request",
                format!("the key `{key}` appears twice in the same object; send each key once"),
            )
            .with_param(path),
            ShapeFault::Text { path, message } => {
                ApiError::new(axum::http::StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", message).with_param(path)
            }
        });
    }
    match walked {
        Ok(true) => Ok(()),
        Ok(false) => Err(ApiError::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            "the body must be a JSON object (`{...}`), not an array, string, number or null",
        )),
        Err(e) => Err(json_error(e, ".")),
    }
}

/// One value of the body at `path`; answers whether it is an object.
struct Shape<'a> {
    path: String,
    fault: &'a std::cell::RefCell<Option<ShapeFault>>,
}

impl Shape<'_> {
    fn child(&self, segment: &str) -> String {
        if self.path.is_empty() { segment.to_owned() } else { format!("{}.{segment}", self.path) }
    }

    fn refuse<E: serde::de::Error>(&self, fault: ShapeFault) -> Result<bool, E> {
        *self.fault.borrow_mut() = Some(fault);
        Err(E::custom("refused"))
    }

    fn text<E: serde::de::Error>(&self, path: String, text: &str, kind: TextKind) -> Result<(), E> {
        match forbidden_char(text, kind) {
            None => Ok(()),
            Some(c) => {
                let what = if path.is_empty() { "the body".to_owned() } else { format!("`{path}`") };
                let message = orgplane_core::values::forbidden_message(&what, c);
                self.refuse(ShapeFault::Text { path, message }).map(|_| ())
            }
        }
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for Shape<'_> {
    type Value = bool;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Shape<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_i64<E>(self, _: i64) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_u64<E>(self, _: u64) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_f64<E>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_unit<E>(self) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<bool, E> {
        // Free text may break lines; nothing stored may hold NUL or controls.
        self.text(self.path.clone(), text, TextKind::MultiLine)?;
        Ok(false)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        let mut index = 0usize;
        while seq.next_element_seed(Shape { path: self.child(&index.to_string()), fault: self.fault })?.is_some() {
            index += 1;
        }
        Ok(false)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        let mut seen = std::collections::HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            let path = self.child(&key);
            self.text(path.clone(), &key, TextKind::SingleLine)?;
            if !seen.insert(key.clone()) {
                return self.refuse(ShapeFault::Duplicate { path, key });
            }
            map.next_value_seed(Shape { path, fault: self.fault })?;
        }
        Ok(true)
    }
}

/// Reads a request body up to `limit` bytes, or answers 413.
pub async fn read_body(req: Request, limit: usize) -> ApiResult<bytes::Bytes> {
    if let Some(len) =
        req.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok())
        && len > limit as u64
    {
        return Err(ApiError::payload_too_large(limit));
    }
    axum::body::to_bytes(req.into_body(), limit).await.map_err(|e| {
        if exceeds_length_limit(&e) {
            ApiError::payload_too_large(limit)
        } else {
            ApiError::invalid(format!("could not read the request body: {e}"))
        }
    })
}

/// Whether a body read failed on the length limit, told by the error's type
/// anywhere in its chain of causes (never by its message text).
fn exceeds_length_limit(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = cause {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        cause = e.source();
    }
    false
}

/// A query string parsed into `T`. A value it can't read (a field given
/// twice, a wrong type) is `400 invalid_request` in the contract's error
/// body, never axum's plain-text rejection.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> ApiResult<Self> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(value)| ApiQuery(value))
            .map_err(|e| ApiError::invalid(format!("query string: {}", e.body_text())))
    }
}

#[derive(Deserialize)]
struct RawPage {
    limit: Option<String>,
    starting_after: Option<String>,
}

/// `?limit=` (1..=100, default 20) and `?starting_after=<id>`.
pub struct Pagination(pub PageRequest);

/// [`Pagination`] as the OpenAPI document states it: a list route's
/// annotation says `params(PageParams)`.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct PageParams {
    /// How many items to answer, 1 to 100.
    #[param(minimum = 1, maximum = 100, default = 20)]
    limit: Option<u32>,
    /// The id of the last item of the previous page (same list, same filters); the page starts after it.
    #[param(min_length = 1)]
    starting_after: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for Pagination {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> ApiResult<Self> {
        let Query(raw) = Query::<RawPage>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::invalid(format!("query string: {}", e.body_text())))?;
        let limit = match raw.limit {
            None => 20,
            Some(text) => match text.parse::<u32>() {
                Ok(n) if (1..=100).contains(&n) => n,
                _ => return Err(ApiError::invalid("limit must be a whole number from 1 to 100").with_param("limit")),
            },
        };
        // Every list checks its cursor against its own items; an empty one
        // is no item of any list, whether or not the list has items.
        if raw.starting_after.as_deref() == Some("") {
            return Err(ApiError::invalid(
                "starting_after is empty: give the id of the last item of the previous page, or leave it out for the first page",
            )
            .with_param("starting_after"));
        }
        Ok(Pagination(PageRequest { limit, starting_after: raw.starting_after }))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Body {
        name: Option<String>,
        limits: Option<BTreeMap<String, Option<i64>>>,
        settings: Option<serde_json::Map<String, serde_json::Value>>,
    }

    fn refused(text: &str) -> ApiError {
        parse_json::<Body>(text.as_bytes()).expect_err(text)
    }

    #[test]
    fn only_an_object_is_a_body() {
        for text in ["[]", r#"["X",null,null]"#, r#""X""#, "5", "null", "true"] {
            let e = refused(text);
            assert_eq!(e.status, axum::http::StatusCode::UNPROCESSABLE_ENTITY, "{text}");
            assert!(e.message.contains("the body must be a JSON object"), "{text}: {}", e.message);
        }
        assert!(parse_json::<Body>(br#" {"name": "X"} "#).is_ok());
        let trailing = refused(r#"{"name": "X"} []"#);
        assert_eq!(trailing.status, axum::http::StatusCode::BAD_REQUEST);
    }

    #[test]
    fn a_key_twice_in_any_object_is_named() {
        let cases = [
            (r#"{"name": "a", "name": "b"}"#, "name"),
            (r#"{"limits": {"customers": 1, "customers": 2}}"#, "limits.customers"),
            (r#"{"settings": {"a": {"b": [{"c": 1, "c": 1}]}}}"#, "settings.a.b.0.c"),
        ];
        for (text, param) in cases {
            let e = refused(text);
            assert_eq!(e.status, axum::http::StatusCode::UNPROCESSABLE_ENTITY, "{text}");
            assert_eq!(e.param.as_deref(), Some(param), "{text}");
        }
    }

    #[test]
    fn every_string_and_key_follows_the_text_rule() {
        let cases = [
            (r#"{"name": "a\u0000"}"#, "name"),
            (r#"{"settings": {"x": ["ok", "\u001b[0m"]}}"#, "settings.x.1"),
            (r#"{"settings": {"line\nbreak": 1}}"#, "settings.line\nbreak"),
        ];
        for (text, param) in cases {
            let e = refused(text);
            assert_eq!(e.status, axum::http::StatusCode::UNPROCESSABLE_ENTITY, "{text}");
            assert_eq!(e.param.as_deref(), Some(param), "{text}");
        }
        let ok = parse_json::<Body>(br#"{"settings": {"footer": "a\nb\tc\r\n"}}"#).expect("free text may break lines");
        assert_eq!(ok.settings.expect("settings")["footer"], "a\nb\tc\r\n");
    }
}
