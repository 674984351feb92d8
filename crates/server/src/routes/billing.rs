//! Billing: the org's subscription, checkout, the customer portal, cancel,
//! reactivate, seats, sync, the billing admin, and the stored provider
//! events. Handlers authorize (through `OrgCtx::require` and the
//! extractors) and call one billing or store function; the rules live there.

use axum::Json;
use axum::extract::{FromRequest, Request, State};
use orgplane_core::UserId;
use orgplane_core::entitlements::{SubscriptionFacts, past_due_grace_ends_at};
use orgplane_core::roles::Permission;
use orgplane_store::{ProviderEventRecord, ProviderEventStatus, StoredSubscription};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{List, rfc3339};
use crate::billing::CheckoutStarted;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{
    ApiJson, ApiKeyCaller, ApiQuery, OrgCtx, PageParams, Pagination, Principal, parse_json, read_body,
};
use crate::state::AppState;

#[derive(Serialize, utoipa::ToSchema)]
pub struct SubscriptionResponse {
    /// `sub_…`
    pub id: String,
    pub org_id: String,
    #[schema(value_type = crate::openapi::schema::Provider)]
    pub provider: String,
    pub provider_subscription_id: String,
    pub provider_customer_id: Option<String>,
    #[schema(value_type = crate::openapi::schema::SubscriptionStatus)]
    pub status: String,
    /// Not ended (`canceled` and `incomplete_expired` are ended).
    pub live: bool,
    /// The catalog plan the price buys; `null` for a price the catalog doesn't know.
    pub plan: Option<String>,
    /// The provider's price (Stripe) or variant (Lemon Squeezy) id.
    pub price_id: Option<String>,
    /// The purchased quantity.
    pub seats: i64,
    pub current_period_end: Option<String>,
    pub cancel_at_period_end: bool,
    pub trial_end: Option<String>,
    /// Since when the subscription is `past_due` (the grace period counts from it).
    pub past_due_since: Option<String>,
    /// While `past_due`: when the grace period ends and the plan stops
    /// (`past_due_since` + the catalog's `grace_period_days`); `null` otherwise.
    pub grace_ends_at: Option<String>,
    /// The member who manages the subscription.
    pub billing_admin_user_id: Option<String>,
    /// The provider's time of the state shown.
    pub observed_at: String,
}

pub(crate) async fn subscription_response(
    state: &AppState,
    sub: StoredSubscription,
) -> ApiResult<SubscriptionResponse> {
    let billing_admin = state.store.billing_admin(sub.org_id).await?;
    let facts = SubscriptionFacts {
        status: sub.status,
        plan: None,
        quantity: sub.quantity,
        trial_end: sub.trial_end,
        past_due_since: sub.past_due_since,
        seat_hold: None,
        plan_hold: None,
    };
    let grace_ends_at = past_due_grace_ends_at(&state.catalog, &facts);
    Ok(SubscriptionResponse {
        id: sub.id.to_string(),
        org_id: sub.org_id.to_string(),
        provider: sub.provider.as_str().to_owned(),
        plan: state.billing.plan_of(&sub),
        provider_subscription_id: sub.provider_subscription_id,
        provider_customer_id: sub.provider_customer_id,
        status: sub.status.as_str().to_owned(),
        live: sub.status.is_live(),
        price_id: sub.price_id,
        seats: sub.quantity,
        current_period_end: sub.current_period_end.map(rfc3339),
        cancel_at_period_end: sub.cancel_at_period_end,
        trial_end: sub.trial_end.map(rfc3339),
        past_due_since: sub.past_due_since.map(rfc3339),
        grace_ends_at: grace_ends_at.map(rfc3339),
        billing_admin_user_id: billing_admin.map(|u| u.to_string()),
        observed_at: rfc3339(sub.observed_at),
    })
}

/// The org's subscription, live or ended (any member, or an API key).
#[utoipa::path(get, path = "/v1/orgs/{org}/subscription", operation_id = "get_subscription", tag = "billing", security(("user_token" = []), ("api_key" = [])),
    params(("org" = String, Path)),
    responses((status = 200, body = SubscriptionResponse), (status = 404, body = ErrorBody, description = "no such org, or no subscription")))]
pub async fn get(State(state): State<AppState>, ctx: OrgCtx) -> ApiResult<Json<SubscriptionResponse>> {
    let sub = state.store.subscription(ctx.org.id).await?.ok_or_else(|| {
        ApiError::not_found(format!(
            "organization {} has no subscription; start one with POST /v1/orgs/{}/checkout",
            ctx.org.id, ctx.org.id
        ))
    })?;
    Ok(Json(subscription_response(&state, sub).await?))
}

/// An absolute http(s) URL, or `invalid_request` naming `param`.
fn http_url(param: &str, value: &str) -> ApiResult<()> {
    let ok = value.len() <= 2048
        && value
            .parse::<axum::http::Uri>()
            .is_ok_and(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some());
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(format!("{param} must be an absolute http(s) URL")).with_param(param))
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckoutBody {
    /// A plan key of the catalog (`business`), not the default plan.
    #[schema(value_type = crate::openapi::schema::PlanForSale)]
    pub plan: String,
    /// Seats to buy; default: the seats the org uses now.
    #[schema(value_type = Option<crate::openapi::schema::Seats>)]
    pub seats: Option<u32>,
    #[schema(value_type = crate::openapi::schema::HttpUrl)]
    pub success_url: String,
    #[schema(value_type = crate::openapi::schema::HttpUrl)]
    pub cancel_url: String,
}

/// Starts a checkout at the configured provider (`billing:manage`). The caller
/// becomes billing admin when the subscription arrives.
#[utoipa::path(post, path = "/v1/orgs/{org}/checkout", operation_id = "start_checkout", tag = "billing", security(("user_token" = []), ("api_key" = [])),
    params(("org" = String, Path)), request_body = CheckoutBody,
    responses((status = 200, body = CheckoutStarted), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "subscription_exists"), (status = 422, body = ErrorBody),
        (status = 502, body = ErrorBody, description = "provider_error"), (status = 503, body = ErrorBody, description = "provider_unavailable or billing_not_configured")))]
pub async fn checkout(
    State(state): State<AppState>,
    ctx: OrgCtx,
    key: CallerKey,
    ApiJson(body): ApiJson<CheckoutBody>,
) -> ApiResult<Json<CheckoutStarted>> {
    ctx.require(&state, Permission::BillingManage)?;
    http_url("success_url", &body.success_url)?;
    http_url("cancel_url", &body.cancel_url)?;
    let buyer = match &ctx.principal {
        Principal::User(u) => Some((u.id, u.email.as_deref())),
        Principal::ApiKey(_) => None,
    };
    let started = state
        .billing
        .checkout(
            &ctx.org,
            &body.plan,
            body.seats,
            &body.success_url,
            &body.cancel_url,
            buyer,
            &ctx.actor(),
            key.scoped(&ctx).as_deref(),
        )
        .await?;
    Ok(Json(started))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PortalBody {
    /// Where the portal sends the customer back (Stripe; Lemon Squeezy ignores it).
    #[schema(value_type = crate::openapi::schema::HttpUrl)]
    pub return_url: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct UrlResponse {
    pub url: String,
}

/// A customer-portal link: a Stripe billing-portal session, or Lemon Squeezy's
/// pre-signed `urls.customer_portal` (`billing:manage`).
#[utoipa::path(post, path = "/v1/orgs/{org}/billing_portal", operation_id = "create_billing_portal_session", tag = "billing", security(("user_token" = []), ("api_key" = [])),
    params(("org" = String, Path)), request_body = PortalBody,
    responses((status = 200, body = UrlResponse), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 502, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn billing_portal(
    State(state): State<AppState>,
    ctx: OrgCtx,
    key: CallerKey,
    ApiJson(body): ApiJson<PortalBody>,
) -> ApiResult<Json<UrlResponse>> {
    ctx.require(&state, Permission::BillingManage)?;
    http_url("return_url", &body.return_url)?;
    let url = state.billing.portal_url(ctx.org.id, &body.return_url, key.scoped(&ctx).as_deref()).await?;
    Ok(Json(UrlResponse { url }))
}

/// The caller's `Idempotency-Key`, if any: provider calls derive their own
/// key from it (see [`crate::billing::provider_key`]), so that a retry
/// after a failure is one provider call.
pub struct CallerKey(pub Option<String>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for CallerKey {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, Self::Rejection> {
        let key = parts.headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::to_owned);
        Ok(CallerKey(key))
    }
}

impl CallerKey {
    /// Scoped to who sent it: two callers' equal keys are different keys.
    pub(crate) fn scoped(&self, ctx: &OrgCtx) -> Option<String> {
        self.0.as_ref().map(|k| format!("{}:{k}", ctx.principal.key()))
    }
}

/// A JSON body that may be left out entirely (then `T::default()`).
pub struct OptionalJson<T>(pub T);

impl<T: DeserializeOwned + Default> FromRequest<AppState> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> ApiResult<Self> {
        let bytes = read_body(req, state.config.max_body_bytes).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(T::default()));
        }
        parse_json(&bytes).map(OptionalJson)
    }
}

#[derive(Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelBody {
    /// End now instead of at the end of the paid period (Lemon Squeezy always
    /// keeps the paid period).
    #[serde(default)]
    pub immediately: bool,
}

/// Cancels at the end of the period, or now with `{"immediately": true}` (`billing:manage`).
#[utoipa::path(post, path = "/v1/orgs/{org}/subscription/cancel", operation_id = "cancel_subscription", tag = "billing", security(("user_token" = []), ("api_key" = [])),
    params(("org" = String, Path)), request_body(content = Option<CancelBody>, description = "optional"),
    responses((status = 200, body = SubscriptionResponse), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "the subscription has ended"), (status = 502, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn cancel(
    State(state): State<AppState>,
    ctx: OrgCtx,
    key: CallerKey,
    OptionalJson(body): OptionalJson<CancelBody>,
) -> ApiResult<Json<SubscriptionResponse>> {
    ctx.require(&state, Permission::BillingManage)?;
    let sub = state.billing.cancel(ctx.org.id, body.immediately, &ctx.actor(), key.scoped(&ctx).as_deref()).await?;
    Ok(Json(subscription_response(&state, sub).await?))
}

/// Undoes a pending cancellation (`billing:manage`).
#[utoipa::path(post, path = "/v1/orgs/{org}/subscription/reactivate", operation_id = "reactivate_subscription", tag = "billing", security(("user_token" = []), ("api_key" = [])),
    params(("org" = String, Path)),
    responses((status = 200, body = SubscriptionResponse), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "the subscription has ended"), (status = 502, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn reactivate(
    State(state): State<AppState>,
    ctx: OrgCtx,
    key: CallerKey,
) -> ApiResult<Json<SubscriptionResponse>> {
    ctx.require(&state, Permission::BillingManage)?;
    let sub = state.billing.reactivate(ctx.org.id, &ctx.actor(), key.scoped(&ctx).as_deref()).await?;
    Ok(Json(subscription_response(&state, sub).await?))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SeatsBody {
    /// The new purchased quantity (at least the seats in use).
    #[schema(value_type = crate::openapi::schema::Seats)]
    pub seats: u32,
}

/// Changes the purchased seats at the provider, prorated (`billing:manage`).
#[utoipa::path(put, path = "/v1/orgs/{org}/subscription/seats", operation_id = "set_subscription_seats", tag = "billing", security(("user_token" = []), ("api_key" = [])),
    params(("org" = String, Path)), request_body = SeatsBody,
    responses((status = 200, body = SubscriptionResponse), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 502, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn set_seats(
    State(state): State<AppState>,
    ctx: OrgCtx,
    key: CallerKey,
    ApiJson(body): ApiJson<SeatsBody>,
) -> ApiResult<Json<SubscriptionResponse>> {
    ctx.require(&state, Permission::BillingManage)?;
    let sub = state.billing.set_seats(ctx.org.id, body.seats, &ctx.actor(), key.scoped(&ctx).as_deref()).await?;
    Ok(Json(subscription_response(&state, sub).await?))
}

/// Re-fetches the subscription from its provider and applies it now (`billing:sync`).
#[utoipa::path(post, path = "/v1/orgs/{org}/subscription/sync", operation_id = "sync_subscription", tag = "billing", security(("user_token" = []), ("api_key" = [])),
    params(("org" = String, Path)),
    responses((status = 200, body = SubscriptionResponse), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 502, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn sync(State(state): State<AppState>, ctx: OrgCtx) -> ApiResult<Json<SubscriptionResponse>> {
    ctx.require(&state, Permission::BillingSync)?;
    let sub = state.billing.sync(ctx.org.id, &ctx.actor()).await?;
    Ok(Json(subscription_response(&state, sub).await?))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BillingAdminBody {
    /// `usr_…` of a member.
    #[schema(value_type = crate::openapi::schema::UserId)]
    pub user_id: UserId,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct BillingAdminResponse {
    pub org_id: String,
    pub billing_admin_user_id: String,
}

/// Hands the billing admin role to a member (`billing:set_admin`, or the
/// current billing admin handing over their own role). The billing admin
/// holds `billing:manage` whatever their role.
#[utoipa::path(put, path = "/v1/orgs/{org}/billing_admin", operation_id = "set_billing_admin", tag = "billing", security(("user_token" = []), ("api_key" = [])),
    params(("org" = String, Path)), request_body = BillingAdminBody,
    responses((status = 200, body = BillingAdminResponse), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody, description = "the user is not a member")))]
pub async fn set_billing_admin(
    State(state): State<AppState>,
    ctx: OrgCtx,
    ApiJson(body): ApiJson<BillingAdminBody>,
) -> ApiResult<Json<BillingAdminResponse>> {
    let only_if_current = match ctx.require(&state, Permission::BillingSetAdmin) {
        Ok(()) => None,
        // Like leaving an org: the billing admin may give their own role
        // away, as long as it is still theirs when the store takes the lock.
        Err(_) if ctx.is_billing_admin => ctx.user_id(),
        Err(refused) => return Err(refused),
    };
    state.store.set_billing_admin(ctx.org.id, body.user_id, only_if_current, &ctx.actor(), state.clock.now()).await?;
    Ok(Json(BillingAdminResponse { org_id: ctx.org.id.to_string(), billing_admin_user_id: body.user_id.to_string() }))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ProviderEventResponse {
    /// `pev_…`
    pub id: String,
    #[schema(value_type = crate::openapi::schema::Provider)]
    pub provider: String,
    /// The provider's event id (Stripe `evt_…`; Lemon Squeezy `{event_name}:{id}:{updated_at}`).
    pub event_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[schema(value_type = crate::openapi::schema::ProviderEventStatus)]
    pub status: String,
    /// What applying did: `created`, `updated`, `unchanged`, `stale`, `superseded`, `linked`.
    pub outcome: Option<String>,
    /// Why it is unmatched or failed.
    pub error: Option<String>,
    pub org_id: Option<String>,
    pub provider_subscription_id: Option<String>,
    pub provider_customer_id: Option<String>,
    pub attempts: i64,
    pub occurred_at: Option<String>,
    pub received_at: String,
    pub processed_at: String,
    /// When reconciliation tries it again (unmatched and failed events).
    pub next_attempt_at: Option<String>,
}

impl From<ProviderEventRecord> for ProviderEventResponse {
    fn from(e: ProviderEventRecord) -> Self {
        ProviderEventResponse {
            id: e.id.to_string(),
            provider: e.provider.as_str().to_owned(),
            event_id: e.event_id,
            kind: e.event_type,
            status: e.status.as_str().to_owned(),
            outcome: e.outcome,
            error: e.error,
            org_id: e.org_id,
            provider_subscription_id: e.provider_subscription_id,
            provider_customer_id: e.provider_customer_id,
            attempts: e.attempts,
            occurred_at: e.occurred_at.map(rfc3339),
            received_at: rfc3339(e.received_at),
            processed_at: rfc3339(e.processed_at),
            next_attempt_at: e.next_attempt_at.map(rfc3339),
        }
    }
}

#[derive(Deserialize)]
pub struct EventsQuery {
    status: Option<String>,
}

/// Stored provider events, newest first (API keys): `?status=unmatched`
/// shows what matched no org, `failed` what could not be applied.
#[utoipa::path(get, path = "/v1/billing/events", operation_id = "list_provider_events", tag = "billing", security(("api_key" = [])),
    params(("status" = Option<crate::openapi::schema::ProviderEventStatus>, Query, description = "only events with this status"),
        PageParams),
    responses((status = 200, body = List<ProviderEventResponse>),
        (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list_events(
    State(state): State<AppState>,
    _caller: ApiKeyCaller,
    ApiQuery(query): ApiQuery<EventsQuery>,
    Pagination(page): Pagination,
) -> ApiResult<Json<List<ProviderEventResponse>>> {
    let status = match query.status.as_deref() {
        None | Some("") => None,
        Some(text) => Some(ProviderEventStatus::parse(text).ok_or_else(|| {
            ApiError::invalid("status must be one of applied, ignored, unmatched, failed").with_param("status")
        })?),
    };
    let page = state.store.provider_events(status, &page).await?;
    Ok(Json(List { data: page.data.into_iter().map(Into::into).collect(), has_more: page.has_more }))
}
