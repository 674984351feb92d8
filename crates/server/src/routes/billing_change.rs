//! Plan changes: change the plan, preview a change, resume a paused
//! subscription. Handlers authorize (`billing:manage`) and call one billing
//! function; the downgrade check and the provider calls live there.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use orgplane_billing::Proration;
use orgplane_core::roles::Permission;
use serde::{Deserialize, Serialize};

use super::billing::{CallerKey, SubscriptionResponse, subscription_response};
use super::rfc3339;
use crate::billing::{ChangePreviewed, ChangeRequest};
use crate::error::{ApiResult, ErrorBody};
use crate::extract::{ApiJson, OrgCtx};
use crate::state::AppState;

/// How the provider charges for the rest of the current period.
#[derive(Debug, Clone, Copy, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProrationBody {
    /// Credit and charge the difference on the next invoice.
    #[default]
    CreateProrations,
    /// The new price applies from the next period.
    None,
    /// Prorate and invoice the difference now.
    AlwaysInvoice,
}

impl From<ProrationBody> for Proration {
    fn from(p: ProrationBody) -> Self {
        match p {
            ProrationBody::CreateProrations => Proration::CreateProrations,
            ProrationBody::None => Proration::None,
            ProrationBody::AlwaysInvoice => Proration::AlwaysInvoice,
        }
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeBody {
    /// The target plan (not the default plan).
    #[schema(value_type = crate::openapi::schema::PlanForSale)]
    pub plan: String,
    /// Seats to buy on the new plan; default: the current quantity.
    #[schema(value_type = Option<crate::openapi::schema::Seats>)]
    pub seats: Option<u32>,
    /// Default `create_prorations`.
    pub proration: Option<ProrationBody>,
    /// Change even when more seats are in use than the target plan allows
    /// (nobody is removed; nobody can join until seats are free).
    #[serde(default)]
    pub force: bool,
}

/// Moves the org's subscription to another plan at its provider, keeping
/// its one item (`billing:manage`). Refused with `409 conflict`, naming
/// members to remove, when the target plan allows fewer seats than are in
/// use, unless `"force": true`.
#[utoipa::path(post, path = "/v1/orgs/{org}/subscription/change", operation_id = "change_subscription_plan", tag = "billing", security(("user_token" = []), ("api_key" = [])),
    params(("org" = String, Path)), request_body = ChangeBody,
    responses((status = 200, body = SubscriptionResponse), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "seats over the target plan's limit, or the subscription has ended"),
        (status = 422, body = ErrorBody), (status = 502, body = ErrorBody, description = "provider_error"),
        (status = 503, body = ErrorBody, description = "provider_unavailable or billing_not_configured")))]
pub async fn change(
    State(state): State<AppState>,
    ctx: OrgCtx,
    key: CallerKey,
    ApiJson(body): ApiJson<ChangeBody>,
) -> ApiResult<Json<SubscriptionResponse>> {
    ctx.require(&state, Permission::BillingManage)?;
    let request = ChangeRequest {
        plan: &body.plan,
        seats: body.seats,
        proration: body.proration.unwrap_or_default().into(),
        force: body.force,
    };
    let sub = state.billing.change_plan(ctx.org.id, &request, &ctx.actor(), key.scoped(&ctx).as_deref()).await?;
    Ok(Json(subscription_response(&state, sub).await?))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePreviewBody {
    #[schema(value_type = crate::openapi::schema::PlanForSale)]
    pub plan: String,
    #[schema(value_type = Option<crate::openapi::schema::Seats>)]
    pub seats: Option<u32>,
    pub proration: Option<ProrationBody>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct PreviewLineResponse {
    pub description: Option<String>,
    /// In the currency's smallest unit (cents); negative for a credit.
    pub amount: i64,
    pub quantity: Option<i64>,
    /// A credit or charge for the rest of the current period.
    pub proration: bool,
    pub period_start: Option<String>,
    pub period_end: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct OverLimitResponse {
    pub used: i64,
    pub limit: i64,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ChangePreviewResponse {
    pub plan: String,
    pub seats: u32,
    /// The next invoice's total in cents (Stripe's preview, the sandbox's 0);
    /// `null` when the provider computes proration itself (Lemon Squeezy).
    pub amount_due: Option<i64>,
    /// ISO 4217, lower case; `null` when not known.
    pub currency: Option<String>,
    pub lines: Vec<PreviewLineResponse>,
    pub next_payment_at: Option<String>,
    /// The provider prorates when the change is made and previews no
    /// invoice: `lines` show the new price per period.
    pub proration_by_provider: bool,
    /// Limit key → usage and the target plan's limit, for each limit usage
    /// would exceed (seats over the limit refuse the change unless forced).
    pub over_limits: BTreeMap<String, OverLimitResponse>,
    /// Features on now that the target plan turns off.
    pub features_lost: Vec<String>,
}

impl From<ChangePreviewed> for ChangePreviewResponse {
    fn from(p: ChangePreviewed) -> Self {
        ChangePreviewResponse {
            plan: p.plan,
            seats: p.seats,
            amount_due: p.preview.amount_due,
            currency: p.preview.currency,
            lines: p
                .preview
                .lines
                .into_iter()
                .map(|l| PreviewLineResponse {
                    description: l.description,
                    amount: l.amount,
                    quantity: l.quantity,
                    proration: l.proration,
                    period_start: l.period_start.map(rfc3339),
                    period_end: l.period_end.map(rfc3339),
                })
                .collect(),
            next_payment_at: p.preview.next_payment_at.map(rfc3339),
            proration_by_provider: p.preview.proration_by_provider,
            over_limits: p
                .check
                .over_limits
                .into_iter()
                .map(|(k, o)| (k, OverLimitResponse { used: o.used, limit: o.limit }))
                .collect(),
            features_lost: p.check.features_lost,
        }
    }
}

/// What a change would cost (the provider's preview) and leave behind
/// (limits over, features lost), without making it (`billing:manage`).
#[utoipa::path(post, path = "/v1/orgs/{org}/subscription/change_preview", operation_id = "preview_subscription_change", tag = "billing", security(("user_token" = []), ("api_key" = [])),
    params(("org" = String, Path)), request_body = ChangePreviewBody,
    responses((status = 200, body = ChangePreviewResponse), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "the subscription has ended"), (status = 422, body = ErrorBody),
        (status = 502, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn change_preview(
    State(state): State<AppState>,
    ctx: OrgCtx,
    ApiJson(body): ApiJson<ChangePreviewBody>,
) -> ApiResult<Json<ChangePreviewResponse>> {
    ctx.require(&state, Permission::BillingManage)?;
    let proration = body.proration.unwrap_or_default().into();
    let previewed = state.billing.preview_change(ctx.org.id, &body.plan, body.seats, proration).await?;
    Ok(Json(previewed.into()))
}

/// Resumes a paused subscription (a trial that ended without a payment
/// method): Stripe `resume`, Lemon Squeezy unpause (`billing:manage`).
#[utoipa::path(post, path = "/v1/orgs/{org}/subscription/resume", operation_id = "resume_subscription", tag = "billing", security(("user_token" = []), ("api_key" = [])),
    params(("org" = String, Path)),
    responses((status = 200, body = SubscriptionResponse), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "the subscription is not paused, or has ended"),
        (status = 502, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn resume(
    State(state): State<AppState>,
    ctx: OrgCtx,
    key: CallerKey,
) -> ApiResult<Json<SubscriptionResponse>> {
    ctx.require(&state, Permission::BillingManage)?;
    let sub = state.billing.resume(ctx.org.id, &ctx.actor(), key.scoped(&ctx).as_deref()).await?;
    Ok(Json(subscription_response(&state, sub).await?))
}
