//! The sandbox payment provider's pages (`--dev` only): a checkout page with
//! Pay and Cancel buttons (plain HTML forms, no script), and a read-only
//! portal page. Paying goes through the billing service, which delivers the
//! sandbox's event through the same store path as a real webhook.
//!
//! `POST …/pay` and `…/cancel` answer a browser with `303 See Other` to the
//! checkout's success or cancel URL, and a client that sends
//! `Accept: application/json` with JSON, so that a curl walkthrough works.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::{Deserialize, Serialize};

use super::rfc3339;
use crate::error::{ApiResult, ErrorBody};
use crate::extract::ApiQuery;
use crate::state::AppState;

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

fn wants_json(headers: &HeaderMap) -> bool {
    headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("application/json"))
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem;color:#222}\
    dl{display:grid;grid-template-columns:auto 1fr;gap:.3rem 1rem}dt{color:#666}\
    form{display:inline-block;margin-right:.5rem}button{font-size:1rem;padding:.5rem 1.2rem;cursor:pointer}\
    .note{color:#666;font-size:.9rem}";

fn page(title: &str, body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>\
         <style>{STYLE}</style></head><body><main>{body}</main></body></html>",
        title = escape(title)
    ))
}

/// The sandbox checkout page.
#[utoipa::path(get, path = "/sandbox/checkout/{id}", operation_id = "sandbox_checkout_page", tag = "sandbox", params(("id" = String, Path)),
    responses((status = 200, content_type = "text/html", body = String), (status = 404, body = ErrorBody)))]
pub async fn checkout_page(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Html<String>> {
    let checkout = state.billing.sandbox_checkout(&id).await?;
    let status = match checkout.status {
        orgplane_store::CheckoutStatus::Open => "open",
        orgplane_store::CheckoutStatus::Paid => "paid",
        orgplane_store::CheckoutStatus::Canceled => "cancelled",
    };
    let actions = match checkout.status {
        orgplane_store::CheckoutStatus::Open => format!(
            "<form method=\"post\" action=\"/sandbox/checkout/{id}/pay\"><button type=\"submit\">Pay</button></form>\
             <form method=\"post\" action=\"/sandbox/checkout/{id}/cancel\"><button type=\"submit\">Cancel</button></form>",
            id = escape(&checkout.id)
        ),
        orgplane_store::CheckoutStatus::Paid => {
            format!("<p><a href=\"{}\">Paid: continue</a></p>", escape(&checkout.success_url))
        }
        orgplane_store::CheckoutStatus::Canceled => {
            format!("<p><a href=\"{}\">Cancelled: go back</a></p>", escape(&checkout.cancel_url))
        }
    };
    let body = format!(
        "<h1>Sandbox checkout</h1>\
         <p class=\"note\">orgplane's sandbox payment provider (--dev): no money moves, and paying delivers the same \
         events as a real provider's webhook.</p>\
         <dl><dt>Organization</dt><dd>{org}</dd><dt>Plan</dt><dd>{plan}</dd><dt>Seats</dt><dd>{seats}</dd>\
         <dt>Status</dt><dd>{status}</dd></dl>{actions}",
        org = escape(&checkout.org_id.to_string()),
        plan = escape(&checkout.plan),
        seats = checkout.quantity,
    );
    Ok(page("Sandbox checkout", &body))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct SandboxPayResponse {
    pub checkout_id: String,
    pub org_id: String,
    /// `paid`
    pub status: &'static str,
    /// The subscription as orgplane now stores it.
    pub subscription_status: Option<String>,
    pub plan: String,
    pub seats: i64,
    /// Seen before: the first payment stands.
    pub duplicate: bool,
    /// Where a browser goes next.
    pub redirect_url: String,
}

/// Pays a sandbox checkout: a 303 to its success URL, or JSON with `Accept: application/json`.
#[utoipa::path(post, path = "/sandbox/checkout/{id}/pay", operation_id = "sandbox_pay", tag = "sandbox", params(("id" = String, Path)),
    responses((status = 200, body = SandboxPayResponse), (status = 303, description = "to the checkout's success_url"),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "the checkout was cancelled")))]
pub async fn pay(State(state): State<AppState>, Path(id): Path<String>, headers: HeaderMap) -> ApiResult<Response> {
    let paid = state.billing.sandbox_pay(&id).await?;
    if !wants_json(&headers) {
        return Ok(Redirect::to(&paid.checkout.success_url).into_response());
    }
    Ok(Json(SandboxPayResponse {
        checkout_id: paid.checkout.id.clone(),
        org_id: paid.checkout.org_id.to_string(),
        status: "paid",
        subscription_status: paid.subscription.map(|s| s.status.as_str().to_owned()),
        plan: paid.checkout.plan.clone(),
        seats: paid.checkout.quantity,
        duplicate: paid.receipt.duplicate,
        redirect_url: paid.checkout.success_url.clone(),
    })
    .into_response())
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct SandboxCancelResponse {
    pub checkout_id: String,
    /// `cancelled`
    pub status: &'static str,
    pub redirect_url: String,
}

/// Abandons a sandbox checkout: a 303 to its cancel URL, or JSON.
#[utoipa::path(post, path = "/sandbox/checkout/{id}/cancel", operation_id = "sandbox_cancel", tag = "sandbox", params(("id" = String, Path)),
    responses((status = 200, body = SandboxCancelResponse), (status = 303, description = "to the checkout's cancel_url"),
        (status = 404, body = ErrorBody)))]
pub async fn cancel(State(state): State<AppState>, Path(id): Path<String>, headers: HeaderMap) -> ApiResult<Response> {
    let checkout = state.billing.sandbox_cancel(&id).await?;
    if !wants_json(&headers) {
        return Ok(Redirect::to(&checkout.cancel_url).into_response());
    }
    Ok((
        StatusCode::OK,
        Json(SandboxCancelResponse {
            checkout_id: checkout.id,
            status: "cancelled",
            redirect_url: checkout.cancel_url,
        }),
    )
        .into_response())
}

#[derive(Deserialize)]
pub struct PortalQuery {
    return_url: Option<String>,
}

/// The sandbox's customer portal: the subscription as the sandbox holds it.
#[utoipa::path(get, path = "/sandbox/portal/{id}", operation_id = "sandbox_portal_page", tag = "sandbox",
    params(("id" = String, Path), ("return_url" = Option<String>, Query)),
    responses((status = 200, content_type = "text/html", body = String), (status = 404, body = ErrorBody)))]
pub async fn portal_page(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<PortalQuery>,
) -> ApiResult<Html<String>> {
    let sub = state.billing.sandbox_subscription(&id).await?;
    let back = query
        .return_url
        .filter(|u| u.starts_with("http://") || u.starts_with("https://"))
        .map(|u| format!("<p><a href=\"{}\">Back</a></p>", escape(&u)))
        .unwrap_or_default();
    let body = format!(
        "<h1>Sandbox billing portal</h1>\
         <p class=\"note\">Change this subscription through orgplane's API (cancel, reactivate, seats).</p>\
         <dl><dt>Subscription</dt><dd>{id}</dd><dt>Status</dt><dd>{status}</dd><dt>Seats</dt><dd>{seats}</dd>\
         <dt>Period ends</dt><dd>{end}</dd><dt>Cancels at period end</dt><dd>{cancel}</dd></dl>{back}",
        id = escape(&sub.id),
        status = sub.status.as_str(),
        seats = sub.quantity,
        end = rfc3339(sub.current_period_end),
        cancel = if sub.cancel_at_period_end { "yes" } else { "no" },
    );
    Ok(page("Sandbox billing portal", &body))
}
