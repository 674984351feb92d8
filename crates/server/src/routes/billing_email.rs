//! The billing e-mail's way to Stripe as an operator sees it (see
//! `crate::billing::BillingEmailWorker`): which customers' updates keep
//! failing, and which were given up.

use axum::Json;
use axum::extract::State;
use serde::Serialize;

use super::rfc3339;
use crate::error::{ApiResult, ErrorBody};
use crate::extract::ApiKeyCaller;
use crate::state::AppState;

/// Rows listed at most.
const MAX_LISTED: u32 = 100;

#[derive(Serialize, utoipa::ToSchema)]
pub struct BillingEmailFailureResponse {
    #[schema(value_type = crate::openapi::schema::OrgId)]
    pub org_id: String,
    /// The Stripe customer (`cus_…`) whose e-mail is not up to date.
    pub customer_id: String,
    /// `pending`: retried with back-off; `gone`: Stripe answered 404 (the
    /// customer was deleted), given up.
    pub status: String,
    /// Sends tried in all, and failed in a row.
    pub attempts: i64,
    pub failures: i64,
    pub failing_since: Option<String>,
    /// What Stripe (or the connection) answered last time.
    pub last_error: Option<String>,
    pub next_attempt_at: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct BillingEmailFailures {
    pub data: Vec<BillingEmailFailureResponse>,
}

/// Stripe customers whose billing e-mail update keeps failing (retried
/// with back-off, never dropped) or was given up (the customer is gone at
/// Stripe), longest failing first, at most 100.
#[utoipa::path(get, path = "/v1/billing/email_syncs/failures", operation_id = "list_billing_email_failures", tag = "billing", security(("api_key" = [])),
    responses((status = 200, body = BillingEmailFailures), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn failures(State(state): State<AppState>, _caller: ApiKeyCaller) -> ApiResult<Json<BillingEmailFailures>> {
    let failures = state.store.billing_email_failures(MAX_LISTED).await?;
    let data = failures
        .into_iter()
        .map(|f| BillingEmailFailureResponse {
            org_id: f.org_id,
            customer_id: f.customer_id,
            status: f.status,
            attempts: f.attempts,
            failures: f.failures,
            failing_since: f.failing_since.map(rfc3339),
            last_error: f.last_error,
            next_attempt_at: rfc3339(f.next_attempt_at),
        })
        .collect();
    Ok(Json(BillingEmailFailures { data }))
}
