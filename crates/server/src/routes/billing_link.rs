//! Subscriptions made elsewhere (API keys): `POST /v1/billing/link` ties one
//! to an org, `GET /v1/billing/unlinked` lists what discovery found that no
//! org holds. Handlers parse and call one billing or store function; the
//! checks live in the store (see `orgplane_store`'s `billing::link`).

use axum::Json;
use axum::extract::State;
use orgplane_core::OrgId;
use orgplane_core::subscription::Provider;
use orgplane_store::{Actor, UnlinkedSubscription};
use serde::{Deserialize, Serialize};

use super::billing::{SubscriptionResponse, subscription_response};
use super::{List, rfc3339};
use crate::billing::BillingError;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, ApiKeyCaller, PageParams, Pagination};
use crate::state::AppState;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkBody {
    /// Where the subscription lives: `stripe`, `lemonsqueezy` (or `sandbox` with `--dev`).
    #[schema(value_type = crate::openapi::schema::Provider)]
    pub provider: String,
    /// The provider's subscription id (Stripe `sub_…`, a Lemon Squeezy number).
    #[schema(value_type = crate::openapi::schema::ProviderSubscriptionId)]
    pub subscription_id: String,
    /// The org to tie it to.
    #[schema(value_type = crate::openapi::schema::OrgId)]
    pub org_id: String,
}

/// Ties a subscription made elsewhere (a payment link, the provider's
/// dashboard, a migration) to an org (API key): fetches it from the
/// provider, ties its customer to the org, applies it as a webhook would,
/// and writes a `subscription.linked` event. Linking one the org already
/// holds applies it again.
#[utoipa::path(post, path = "/v1/billing/link", operation_id = "link_subscription", tag = "billing", security(("api_key" = [])),
    request_body = LinkBody,
    responses((status = 200, body = SubscriptionResponse, description = "the org's subscription, now the linked one"),
        (status = 400, body = ErrorBody, description = "an unknown provider or one this deployment has no API key for (param provider), a malformed subscription id, or an org id that does not parse"),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "no such org, or no such subscription at the provider"),
        (status = 409, body = ErrorBody, description = "`conflict`: another org holds the subscription (or its metadata names another org); `subscription_exists`: the org has another live one"),
        (status = 502, body = ErrorBody, description = "provider_error"),
        (status = 503, body = ErrorBody, description = "provider_unavailable")))]
pub async fn link(
    State(state): State<AppState>,
    ApiKeyCaller(key): ApiKeyCaller,
    ApiJson(body): ApiJson<LinkBody>,
) -> ApiResult<Json<SubscriptionResponse>> {
    let provider = Provider::parse(&body.provider).ok_or_else(|| {
        ApiError::invalid("provider must be one of stripe, lemonsqueezy, sandbox").with_param("provider")
    })?;
    let subscription_id = body.subscription_id.as_str();
    if subscription_id.is_empty()
        || subscription_id.len() > 255
        || !subscription_id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(ApiError::invalid(
            "subscription_id must be the provider's subscription id (Stripe `sub_…`, a Lemon Squeezy number): 1 to 255 letters, digits, `_` or `-`",
        )
        .with_param("subscription_id"));
    }
    let org: OrgId = body.org_id.parse().map_err(|e| ApiError::invalid(format!("{e}")).with_param("org_id"))?;
    // The caller chose the provider: one this deployment has no API key for
    // is a request it can't serve, not an outage.
    let sub = state.billing.link(provider, subscription_id, org, &Actor::ApiKey(key)).await.map_err(|e| match e {
        BillingError::NotConfigured(message) => ApiError::invalid(message).with_param("provider"),
        e => ApiError::from(e),
    })?;
    Ok(Json(subscription_response(&state, sub).await?))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct UnlinkedSubscriptionResponse {
    /// `uls_…`: `starting_after` takes it.
    pub id: String,
    #[schema(value_type = crate::openapi::schema::Provider)]
    pub provider: String,
    /// What `POST /v1/billing/link` takes as `subscription_id`.
    pub subscription_id: String,
    pub customer_id: Option<String>,
    pub customer_email: Option<String>,
    /// The Lemon Squeezy variant (or price) id.
    pub price_id: Option<String>,
    /// The catalog plan that price buys; `null` when the catalog sells it under no plan.
    pub plan: Option<String>,
    #[schema(value_type = crate::openapi::schema::SubscriptionStatus)]
    pub status: String,
    pub first_seen_at: String,
    pub last_seen_at: String,
}

impl From<UnlinkedSubscription> for UnlinkedSubscriptionResponse {
    fn from(u: UnlinkedSubscription) -> Self {
        UnlinkedSubscriptionResponse {
            id: u.id.to_string(),
            provider: u.provider.as_str().to_owned(),
            subscription_id: u.provider_subscription_id,
            customer_id: u.provider_customer_id,
            customer_email: u.customer_email,
            price_id: u.price_id,
            plan: u.plan,
            status: u.status.as_str().to_owned(),
            first_seen_at: rfc3339(u.first_seen_at),
            last_seen_at: rfc3339(u.last_seen_at),
        }
    }
}

/// Subscriptions that discovery (a reconciliation pass) found at the
/// provider and that no org holds, oldest first, each once (API key). Link
/// one with `POST /v1/billing/link`; it then leaves this list.
#[utoipa::path(get, path = "/v1/billing/unlinked", operation_id = "list_unlinked_subscriptions", tag = "billing", security(("api_key" = [])),
    params(PageParams),
    responses((status = 200, body = List<UnlinkedSubscriptionResponse>),
        (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn unlinked(
    State(state): State<AppState>,
    _caller: ApiKeyCaller,
    Pagination(page): Pagination,
) -> ApiResult<Json<List<UnlinkedSubscriptionResponse>>> {
    let page = state.store.unlinked_subscriptions(&page).await?;
    Ok(Json(List { data: page.data.into_iter().map(Into::into).collect(), has_more: page.has_more }))
}
