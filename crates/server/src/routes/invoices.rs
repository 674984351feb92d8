//! `GET /v1/orgs/{org}/invoices`: the org's invoices as its provider lists
//! them (`billing:manage`). The handler authorizes and calls
//! [`crate::billing::Billing::invoices`]; nothing is stored.

use axum::Json;
use axum::extract::State;
use orgplane_billing::Invoice;
use orgplane_core::roles::Permission;
use serde::Serialize;

use super::{List, rfc3339};
use crate::error::{ApiResult, ErrorBody};
use crate::extract::{OrgCtx, PageParams, Pagination};
use crate::state::AppState;

#[derive(Serialize, utoipa::ToSchema)]
pub struct InvoiceResponse {
    /// The provider's invoice id (Stripe `in_…`, a Lemon Squeezy number, sandbox `sbxin_…`):
    /// `starting_after` takes it.
    pub id: String,
    /// The number printed on the invoice; `null` at Lemon Squeezy.
    pub number: Option<String>,
    /// The provider's status as it writes it (Stripe `draft`, `open`, `paid`, `uncollectible`, `void`;
    /// Lemon Squeezy `pending`, `paid`, `void`, `refunded`, `partial_refund`; the sandbox `paid`).
    pub status: String,
    /// What the invoice asks for, in the currency's smallest unit (cents).
    pub amount: i64,
    /// Lowercase ISO 4217.
    pub currency: String,
    /// The period billed; `null` at Lemon Squeezy.
    pub period_start: Option<String>,
    pub period_end: Option<String>,
    /// The invoice's page at the provider; `null` in the sandbox.
    pub hosted_url: Option<String>,
    /// The invoice's PDF (Stripe only).
    pub pdf_url: Option<String>,
    pub created_at: String,
}

impl From<Invoice> for InvoiceResponse {
    fn from(i: Invoice) -> Self {
        InvoiceResponse {
            id: i.id,
            number: i.number,
            status: i.status,
            amount: i.amount,
            currency: i.currency,
            period_start: i.period_start.map(rfc3339),
            period_end: i.period_end.map(rfc3339),
            hosted_url: i.hosted_url,
            pdf_url: i.pdf_url,
            created_at: rfc3339(i.created_at),
        }
    }
}

/// The org's invoices, newest first, straight from its subscription's
/// provider (`billing:manage`). An org without a subscription has none.
#[utoipa::path(get, path = "/v1/orgs/{org}/invoices", operation_id = "list_invoices", tag = "billing", security(("user_token" = []), ("api_key" = [])),
    params(("org" = String, Path), PageParams),
    responses((status = 200, body = List<InvoiceResponse>),
        (status = 400, body = ErrorBody, description = "bad `limit`, or a `starting_after` that is no invoice of this list"),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 502, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    ctx: OrgCtx,
    Pagination(page): Pagination,
) -> ApiResult<Json<List<InvoiceResponse>>> {
    ctx.require(&state, Permission::BillingManage)?;
    let page = state.billing.invoices(ctx.org.id, &page).await?;
    Ok(Json(List { data: page.invoices.into_iter().map(Into::into).collect(), has_more: page.has_more }))
}
