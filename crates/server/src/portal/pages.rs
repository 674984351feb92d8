//! The portal's pages: overview, members, invitations, billing, audit log
//! and settings (the API keys page, which uses the helpers here, is
//! [`super::api_keys`]). Each `GET` renders; each `POST` (a form with the session's
//! CSRF token and an `action` field) performs one action through the JSON
//! API's handler function and renders the page again with the outcome:
//! a notice, or the API's refusal in words (`last_owner`,
//! `billing_admin_must_transfer`, `limit_reached`…) with its status code.
//!
//! Forms work without JavaScript; with it, htmx (`hx-boost`) submits them
//! in the background and swaps the page, sending the CSRF token as a header
//! too.

use std::collections::HashMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use orgplane_core::roles::Permission;
use orgplane_core::{InvitationId, UserId};
use orgplane_store::PageRequest;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::PageError;
use super::html::Html;
use super::session::{PortalCtx, api_failure};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, Pagination, PathId, parse_json};
use crate::routes::billing::{CallerKey, CancelBody, OptionalJson};
use crate::routes::{billing, entitlements, events, invitations, members, orgs};
use crate::state::AppState;

/// A submitted form: `application/x-www-form-urlencoded` fields.
pub struct Form(HashMap<String, String>);

impl Form {
    pub fn parse(body: &[u8]) -> Form {
        Form(serde_urlencoded::from_bytes::<Vec<(String, String)>>(body).unwrap_or_default().into_iter().collect())
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    pub(super) fn text(&self, name: &str) -> &str {
        self.get(name).map(str::trim).unwrap_or("")
    }
}

/// A request body for an API handler, from form fields: parsed exactly as
/// the API parses JSON, so the same input rules apply.
pub(super) fn body<T: DeserializeOwned>(value: Value) -> ApiResult<T> {
    let bytes = serde_json::to_vec(&value).map_err(|e| ApiError::internal(format!("form body: {e}")))?;
    parse_json(&bytes)
}

fn user_field(form: &Form) -> ApiResult<UserId> {
    form.text("user_id").parse().map_err(|_| ApiError::invalid("choose a member").with_param("user_id"))
}

fn seats_field(form: &Form) -> ApiResult<Option<u32>> {
    match form.text("seats") {
        "" => Ok(None),
        text => text
            .parse::<u32>()
            .ok()
            .filter(|n| *n >= 1)
            .map(Some)
            .ok_or_else(|| ApiError::invalid("seats must be a whole number, 1 or more").with_param("seats")),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Tab {
    Overview,
    Members,
    Invitations,
    Billing,
    ApiKeys,
    Audit,
    Settings,
}

impl Tab {
    const ALL: [Tab; 7] =
        [Tab::Overview, Tab::Members, Tab::Invitations, Tab::Billing, Tab::ApiKeys, Tab::Audit, Tab::Settings];

    fn label(self) -> &'static str {
        match self {
            Tab::Overview => "Overview",
            Tab::Members => "Members",
            Tab::Invitations => "Invitations",
            Tab::Billing => "Billing",
            Tab::ApiKeys => "API keys",
            Tab::Audit => "Audit log",
            Tab::Settings => "Settings",
        }
    }

    fn path(self) -> &'static str {
        match self {
            Tab::Overview => "",
            Tab::Members => "/members",
            Tab::Invitations => "/invitations",
            Tab::Billing => "/billing",
            Tab::ApiKeys => "/api_keys",
            Tab::Audit => "/audit",
            Tab::Settings => "/settings",
        }
    }

    /// Whether the tab is shown: the permission its page needs.
    fn visible(self, state: &AppState, ctx: &PortalCtx) -> bool {
        match self {
            Tab::Overview | Tab::Members => true,
            Tab::Invitations => ctx.allows(state, Permission::MembersInvite),
            Tab::Billing => ctx.allows(state, Permission::BillingManage),
            Tab::ApiKeys => ctx.allows(state, Permission::ApiKeysManage),
            Tab::Audit => ctx.allows(state, Permission::OrgAudit),
            Tab::Settings => ctx.allows(state, Permission::OrgUpdate) || ctx.allows(state, Permission::OrgDelete),
        }
    }
}

/// What an action did, shown above the page.
pub(super) enum Flash {
    None,
    Notice(Html),
    Refused(ApiError),
}

/// A refusal in words a person can act on, for the codes the API uses.
fn refusal(h: &mut Html, e: &ApiError, ctx: &PortalCtx, state: &AppState) {
    let headline = match e.code {
        "last_owner" => "An organization always keeps at least one owner.",
        "billing_admin_must_transfer" => "The billing admin must hand over the role first.",
        "limit_reached" => "Your plan's limit is reached.",
        "feature_not_entitled" => "Your plan doesn't include this.",
        "personal_org" => "Personal organizations are for one person.",
        "subscription_exists" => "This organization already has a subscription.",
        "forbidden" => "Your role doesn't allow this.",
        "not_found" => "That no longer exists.",
        "conflict" => "This can't be done right now.",
        "invalid_request" => "Please check what you entered.",
        "provider_unavailable" | "provider_error" | "billing_not_configured" | "unavailable" => {
            "The payment provider or the server can't be reached right now."
        }
        _ => "This can't be done.",
    };
    h.raw("<div class=\"error\" role=\"alert\" id=\"flash\"><strong>")
        .text(headline)
        .raw("</strong> ")
        .text(&e.message);
    if matches!(e.code, "limit_reached" | "feature_not_entitled" | "personal_org") {
        if ctx.allows(state, Permission::BillingManage) {
            h.raw(" <a href=\"/portal/orgs/").text(ctx.org.id).raw("/billing\">Upgrade on the Billing page</a>.");
        } else {
            h.raw(" Ask an owner or the billing admin to upgrade the plan.");
        }
    }
    h.raw("</div>");
}

/// The whole document around a page's content.
pub(super) fn page(state: &AppState, ctx: &PortalCtx, tab: Tab, content: Html, flash: Flash) -> Response {
    let portal = &state.config.portal;
    let mut h = Html::new();
    h.raw("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">")
        .raw("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">")
        .raw("<title>")
        .text(tab.label())
        .raw(" · ")
        .text(&ctx.org.name)
        .raw(" · ")
        .text(&portal.app_name)
        .raw("</title>")
        .raw("<meta name=\"htmx-config\" content='{\"includeIndicatorStyles\":false,\"responseHandling\":[{\"code\":\"204\",\"swap\":false},{\"code\":\"...\",\"swap\":true}]}'>")
        .raw("<link rel=\"stylesheet\" href=\"/portal/assets/portal.css\">")
        .raw("<script src=\"/portal/assets/htmx.min.js\" defer></script></head>")
        .raw("<body hx-boost=\"true\" hx-headers='{\"X-CSRF-Token\":\"")
        .text(&ctx.csrf)
        .raw("\"}'><a class=\"skip\" href=\"#main\">Skip to content</a><header class=\"top\">");
    if let Some(logo) = &portal.logo_url {
        h.raw("<img src=\"").text(logo).raw("\" alt=\"").text(&portal.app_name).raw("\">");
    }
    h.wrap("<span class=\"app\">", &portal.app_name, "</span>")
        .wrap("<span class=\"org\" id=\"org-name\">", &ctx.org.name, "</span>")
        .raw("<span class=\"spacer\"></span>")
        .raw("<span class=\"muted\">Signed in as ")
        .text(ctx.user.name.as_deref().or(ctx.user.email.as_deref()).unwrap_or("a member"))
        .raw("</span>");
    if let Some(url) = &ctx.session.return_url {
        h.raw("<a id=\"return\" href=\"").text(url).raw("\">Back to ").text(&portal.app_name).raw("</a>");
    }
    h.raw("<form class=\"inline\" method=\"post\" action=\"/portal/logout\">");
    csrf_field(&mut h, ctx);
    h.raw("<button class=\"secondary\" type=\"submit\">Log out</button></form></header>");
    h.raw("<nav class=\"tabs\" aria-label=\"Organization\">");
    for t in Tab::ALL {
        if !t.visible(state, ctx) {
            continue;
        }
        h.raw("<a href=\"/portal/orgs/").text(ctx.org.id).text(t.path()).raw("\"");
        if t == tab {
            h.raw(" aria-current=\"page\"");
        }
        h.raw(">").text(t.label()).raw("</a>");
    }
    h.raw("</nav><main id=\"main\" tabindex=\"-1\">");
    match flash {
        Flash::None => {}
        Flash::Notice(notice) => {
            h.raw("<div class=\"notice\" role=\"status\" id=\"flash\">").append(notice).raw("</div>");
        }
        Flash::Refused(e) => refusal(&mut h, &e, ctx, state),
    }
    h.append(content).raw("</main></body></html>");
    html_response(StatusCode::OK, h)
}

fn html_response(status: StatusCode, h: Html) -> Response {
    (status, [(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"))], h.into_string())
        .into_response()
}

pub(super) fn csrf_field(h: &mut Html, ctx: &PortalCtx) {
    h.raw("<input type=\"hidden\" name=\"csrf\" value=\"").text(&ctx.csrf).raw("\">");
}

/// The opening of a form that posts `action` to this page.
pub(super) fn form_open(h: &mut Html, ctx: &PortalCtx, class: &'static str, page: &'static str, action: &'static str) {
    h.raw("<form class=\"")
        .raw(class)
        .raw("\" method=\"post\" action=\"/portal/orgs/")
        .text(ctx.org.id)
        .raw(page)
        .raw("\">");
    csrf_field(h, ctx);
    h.raw("<input type=\"hidden\" name=\"action\" value=\"").raw(action).raw("\">");
}

pub(super) fn date(text: &str) -> &str {
    text.split('T').next().unwrap_or(text)
}

// ---------------------------------------------------------------- overview

async fn overview_content(state: &AppState, ctx: &PortalCtx) -> ApiResult<Html> {
    let Json(org) = orgs::get(State(state.clone()), ctx.org_ctx()).await?;
    let Json(ent) = entitlements::get_typed(State(state.clone()), ctx.org_ctx()).await?;
    let mut h = Html::new();
    h.raw("<h1>Overview</h1>");
    let free = ent.plan == state.catalog.default_plan().key();
    if ent.kind == "personal" || free {
        h.raw("<section class=\"cta\" id=\"upgrade\"><h2>");
        if ent.kind == "personal" {
            h.raw("This is your personal organization</h2><p>Upgrade to a paid plan to invite colleagues and share the subscription with them.</p>");
        } else {
            h.raw("You're on the ")
                .text(&ent.plan)
                .raw(" plan</h2><p>Upgrade for more seats, more of every limit and more features.</p>");
        }
        if ctx.allows(state, Permission::BillingManage) {
            h.raw("<p><a class=\"button\" href=\"/portal/orgs/")
                .text(ctx.org.id)
                .raw("/billing\">See plans and upgrade</a></p>");
        } else {
            h.raw("<p class=\"muted\">Ask an owner or the billing admin to upgrade.</p>");
        }
        h.raw("</section>");
    }
    h.raw("<section class=\"card\"><h2>Organization</h2><dl class=\"facts\">")
        .wrap("<dt>Name</dt><dd id=\"fact-name\">", &org.name, "</dd>")
        .wrap("<dt>Kind</dt><dd id=\"fact-kind\">", &ent.kind, "</dd>")
        .wrap("<dt>Plan</dt><dd id=\"fact-plan\">", &ent.plan, "</dd>")
        .wrap("<dt>Tier</dt><dd id=\"fact-tier\">", &ent.tier, "</dd>")
        .wrap("<dt>Status</dt><dd id=\"fact-status\">", ent.status.as_deref().unwrap_or("no subscription"), "</dd>");
    if let Some(sub) = &org.subscription {
        if let Some(end) = &sub.current_period_end {
            if sub.cancel_at_period_end {
                h.wrap("<dt>Cancels on</dt><dd id=\"fact-renewal\">", date(end), "</dd>");
            } else {
                h.wrap("<dt>Renews on</dt><dd id=\"fact-renewal\">", date(end), "</dd>");
            }
        }
        h.wrap("<dt>Seats purchased</dt><dd>", sub.seats, "</dd>");
    }
    h.wrap("<dt>Your role</dt><dd>", &ctx.role, "</dd>").raw("</dl></section>");
    h.raw("<section class=\"card\"><h2>Usage</h2><table><thead><tr><th scope=\"col\">Limit</th><th scope=\"col\">Used</th><th scope=\"col\">Of</th></tr></thead><tbody>");
    for (key, usage) in &ent.limits {
        h.raw("<tr id=\"limit-").text(key).raw("\"><th scope=\"row\">").text(key).raw("</th><td>");
        match usage.limit {
            Some(limit) => {
                h.raw("<meter min=\"0\" max=\"")
                    .text(limit.max(1))
                    .raw("\" value=\"")
                    .text(usage.used)
                    .raw("\" aria-label=\"")
                    .text(key)
                    .raw(" used\"></meter> ")
                    .text(usage.used)
                    .raw("</td><td>")
                    .text(limit);
            }
            None => {
                h.text(usage.used).raw("</td><td>unlimited");
            }
        }
        h.raw("</td></tr>");
    }
    h.raw("</tbody></table></section><section class=\"card\"><h2>Features</h2><ul>");
    for (name, on) in &ent.features {
        h.raw("<li id=\"feature-").text(name).raw("\">").text(name);
        if *on {
            h.raw(" <span class=\"on\">on</span></li>");
        } else {
            h.raw(" <span class=\"off\">off</span></li>");
        }
    }
    h.raw("</ul></section>");
    Ok(h)
}

pub async fn overview(
    State(state): State<AppState>,
    ctx: PortalCtx,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    // Back from the provider's checkout: its webhook may still be on its way.
    let flash = if query.get("checkout").is_some_and(|v| v == "done") {
        let mut h = Html::new();
        h.raw("Thank you. The plan below changes as soon as the payment provider confirms the payment.");
        Flash::Notice(h)
    } else {
        Flash::None
    };
    match overview_content(&state, &ctx).await {
        Ok(content) => page(&state, &ctx, Tab::Overview, content, flash),
        Err(e) => api_failure(e).into_response(),
    }
}

// ----------------------------------------------------------------- members

async fn members_content(state: &AppState, ctx: &PortalCtx, after: Option<String>) -> ApiResult<Html> {
    let request = PageRequest { limit: 100, starting_after: after };
    let Json(list) = members::list(State(state.clone()), ctx.org_ctx(), Pagination(request)).await?;
    let may_update = ctx.allows(state, Permission::MembersUpdate);
    let may_remove = ctx.allows(state, Permission::MembersRemove);
    let may_set_admin = ctx.allows(state, Permission::BillingSetAdmin) || ctx.is_billing_admin;
    let roles = state.roles.names();
    let mut h = Html::new();
    h.raw("<h1>Members</h1><section class=\"card\"><table id=\"members\"><thead><tr><th scope=\"col\">Member</th><th scope=\"col\">Role</th><th scope=\"col\">Actions</th></tr></thead><tbody>");
    for m in &list.data {
        let me = m.user_id == ctx.user.id.to_string();
        let who = m.name.as_deref().or(m.email.as_deref()).unwrap_or(&m.user_id).to_owned();
        h.raw("<tr data-user=\"").text(&m.user_id).raw("\"><td>").text(&who);
        if let (Some(email), Some(_)) = (&m.email, &m.name) {
            h.raw(" <span class=\"muted\">").text(email).raw("</span>");
        }
        if me {
            h.raw(" <span class=\"badge\">you</span>");
        }
        if m.billing_admin {
            h.raw(" <span class=\"badge billing-admin\">billing admin</span>");
        }
        h.raw("</td><td class=\"role\">").text(&m.role).raw("</td><td>");
        if may_update {
            form_open(&mut h, ctx, "inline", "/members", "change_role");
            h.raw("<input type=\"hidden\" name=\"user_id\" value=\"").text(&m.user_id).raw("\">");
            h.raw("<label class=\"sr-only\" for=\"role-")
                .text(&m.user_id)
                .raw("\">Role of ")
                .text(&who)
                .raw("</label>");
            h.raw("<select name=\"role\" id=\"role-").text(&m.user_id).raw("\">");
            for role in &roles {
                h.raw("<option value=\"").text(role).raw("\"");
                if role.as_str() == m.role {
                    h.raw(" selected");
                }
                h.raw(">").text(role).raw("</option>");
            }
            h.raw("</select><button type=\"submit\" class=\"secondary\" aria-label=\"Change the role of ")
                .text(&who)
                .raw("\">Change role</button></form>");
        }
        if may_set_admin && !m.billing_admin {
            form_open(&mut h, ctx, "inline", "/members", "billing_admin");
            h.raw("<input type=\"hidden\" name=\"user_id\" value=\"").text(&m.user_id).raw("\">");
            h.raw("<button type=\"submit\" class=\"secondary\" aria-label=\"Make ")
                .text(&who)
                .raw(" billing admin\">Make billing admin</button></form>");
        }
        if me {
            form_open(&mut h, ctx, "inline", "/members", "leave");
            h.raw("<button type=\"submit\" class=\"danger\">Leave organization</button></form>");
        } else if may_remove {
            form_open(&mut h, ctx, "inline", "/members", "remove");
            h.raw("<input type=\"hidden\" name=\"user_id\" value=\"").text(&m.user_id).raw("\">");
            h.raw("<button type=\"submit\" class=\"danger\" aria-label=\"Remove ")
                .text(&who)
                .raw("\">Remove</button></form>");
        }
        h.raw("</td></tr>");
    }
    h.raw("</tbody></table>");
    if list.has_more
        && let Some(last) = list.data.last()
    {
        h.raw("<p><a href=\"/portal/orgs/")
            .text(ctx.org.id)
            .raw("/members?after=")
            .text(&last.user_id)
            .raw("\">Next page</a></p>");
    }
    h.raw("</section>");
    Ok(h)
}

pub async fn members(
    State(state): State<AppState>,
    ctx: PortalCtx,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    match members_content(&state, &ctx, query.get("after").cloned()).await {
        Ok(content) => page(&state, &ctx, Tab::Members, content, Flash::None),
        Err(e) => api_failure(e).into_response(),
    }
}

/// What an action did.
pub(super) enum Outcome {
    /// Shown above the page, rendered again.
    Notice(Html),
    /// Somewhere else now (checkout, the provider's portal).
    Redirect(String),
    /// The session's org is gone for this member (left, deleted).
    Gone(PageError),
}

fn notice(text: &'static str) -> Outcome {
    let mut h = Html::new();
    h.raw(text);
    Outcome::Notice(h)
}

async fn members_act(state: &AppState, ctx: &PortalCtx, form: &Form) -> ApiResult<Outcome> {
    let s = || State(state.clone());
    match form.text("action") {
        "change_role" => {
            let user = user_field(form)?;
            let role = body(json!({"role": form.text("role")}))?;
            let Json(_) = members::change_role(s(), ctx.org_ctx(), PathId(user), ApiJson(role)).await?;
            Ok(notice("Role changed."))
        }
        "remove" => {
            let Json(_) = members::remove(s(), ctx.org_ctx(), PathId(user_field(form)?)).await?;
            Ok(notice("Member removed."))
        }
        "leave" => {
            let Json(_) = members::remove(s(), ctx.org_ctx(), PathId(ctx.user.id)).await?;
            Ok(Outcome::Gone(PageError::new(
                StatusCode::OK,
                "You left the organization",
                format!("You are no longer a member of {}.", ctx.org.name),
            )))
        }
        "billing_admin" => {
            let user = user_field(form)?;
            let admin = body(json!({"user_id": user}))?;
            let Json(_) = billing::set_billing_admin(s(), ctx.org_ctx(), ApiJson(admin)).await?;
            Ok(notice("Billing admin changed."))
        }
        _ => Err(ApiError::invalid("unknown action").with_param("action")),
    }
}

/// The submitted form, if it carries this session's CSRF token.
pub(super) fn csrf_form(ctx: &PortalCtx, headers: &HeaderMap, raw: &[u8]) -> Option<Form> {
    let form = Form::parse(raw);
    ctx.csrf_ok(headers, form.get("csrf")).then_some(form)
}

pub(super) fn csrf_refused() -> Response {
    PageError::new(
        StatusCode::FORBIDDEN,
        "Request refused",
        "This form lacks the portal's CSRF token; reload the page and try again.",
    )
    .into_response()
}

/// What an action leads to: the page again with a flash and a status, or
/// a response of its own (a redirect, a page that stands alone).
pub(super) enum Settled {
    Show(Flash, StatusCode),
    Replace(Response),
}

pub(super) fn settle(state: &AppState, ctx: &PortalCtx, outcome: ApiResult<Outcome>) -> Settled {
    match outcome {
        Ok(Outcome::Notice(h)) => Settled::Show(Flash::Notice(h), StatusCode::OK),
        Ok(Outcome::Redirect(url)) => Settled::Replace(match HeaderValue::from_str(&url) {
            Ok(location) => (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response(),
            Err(_) => PageError::new(StatusCode::BAD_GATEWAY, "Can't continue", "The provider's link is not valid.")
                .into_response(),
        }),
        Ok(Outcome::Gone(done)) => Settled::Replace(
            done.with_return(ctx.session.return_url.clone(), &state.config.portal.app_name).into_response(),
        ),
        Err(e) => {
            let status = e.status;
            Settled::Show(Flash::Refused(e), status)
        }
    }
}

/// The page again after an action, with the action's status code.
pub(super) fn render(
    state: &AppState,
    ctx: &PortalCtx,
    tab: Tab,
    content: ApiResult<Html>,
    flash: Flash,
    status: StatusCode,
) -> Response {
    match content {
        Ok(content) => {
            let mut response = page(state, ctx, tab, content, flash);
            *response.status_mut() = status;
            response
        }
        Err(e) => api_failure(e).into_response(),
    }
}

pub async fn members_action(State(state): State<AppState>, ctx: PortalCtx, headers: HeaderMap, raw: Bytes) -> Response {
    let Some(form) = csrf_form(&ctx, &headers, &raw) else { return csrf_refused() };
    let outcome = members_act(&state, &ctx, &form).await;
    let (flash, status) = match settle(&state, &ctx, outcome) {
        Settled::Show(flash, status) => (flash, status),
        Settled::Replace(response) => return response,
    };
    let ctx = ctx.refreshed(&state).await;
    render(&state, &ctx, Tab::Members, members_content(&state, &ctx, None).await, flash, status)
}

/// Renders a page whose content may be refused (a permission the tab
/// needs): the refusal is shown in the page, with its status.
pub(super) fn shown(state: &AppState, ctx: &PortalCtx, tab: Tab, content: ApiResult<Html>) -> Response {
    match content {
        Ok(content) => page(state, ctx, tab, content, Flash::None),
        Err(e) if e.code == "forbidden" => {
            let status = e.status;
            render(state, ctx, tab, Ok(Html::new()), Flash::Refused(e), status)
        }
        Err(e) => api_failure(e).into_response(),
    }
}

macro_rules! action_handler {
    ($name:ident, $tab:expr, $act:ident, $content:ident) => {
        pub async fn $name(State(state): State<AppState>, ctx: PortalCtx, headers: HeaderMap, raw: Bytes) -> Response {
            let Some(form) = csrf_form(&ctx, &headers, &raw) else { return csrf_refused() };
            let outcome = $act(&state, &ctx, &form).await;
            let (flash, status) = match settle(&state, &ctx, outcome) {
                Settled::Show(flash, status) => (flash, status),
                Settled::Replace(response) => return response,
            };
            // The action may have changed the org (its name): show it as it is now.
            let ctx = ctx.refreshed(&state).await;
            let content = $content(&state, &ctx).await;
            match content {
                Err(e) if e.code == "forbidden" => render(&state, &ctx, $tab, Ok(Html::new()), flash, status),
                content => render(&state, &ctx, $tab, content, flash, status),
            }
        }
    };
}
pub(super) use action_handler;

// ------------------------------------------------------------- invitations

async fn invitations_content(state: &AppState, ctx: &PortalCtx) -> ApiResult<Html> {
    let request = PageRequest { limit: 100, starting_after: None };
    let Json(list) = invitations::list(State(state.clone()), ctx.org_ctx(), Pagination(request)).await?;
    let mut h = Html::new();
    h.raw("<h1>Invitations</h1><section class=\"card\"><h2>Invite someone</h2>");
    form_open(&mut h, ctx, "stack", "/invitations", "invite");
    h.raw("<label for=\"invite-email\">E-mail address</label>")
        .raw("<input type=\"email\" id=\"invite-email\" name=\"email\" required autocomplete=\"off\">")
        .raw("<label for=\"invite-role\">Role</label><select id=\"invite-role\" name=\"role\">");
    for role in state.roles.names() {
        h.raw("<option value=\"").text(&role).raw("\"");
        if role.as_str() == "member" {
            h.raw(" selected");
        }
        h.raw(">").text(&role).raw("</option>");
    }
    h.raw("</select><div><button type=\"submit\">Send invitation</button></div></form></section>");
    h.raw("<section class=\"card\"><h2>Pending</h2>");
    if list.data.is_empty() {
        h.raw("<p class=\"muted\" id=\"no-pending\">No pending invitations.</p>");
    } else {
        h.raw("<table id=\"pending\"><thead><tr><th scope=\"col\">E-mail</th><th scope=\"col\">Role</th><th scope=\"col\">Expires</th><th scope=\"col\">Actions</th></tr></thead><tbody>");
        for inv in &list.data {
            h.raw("<tr data-invitation=\"")
                .text(&inv.id)
                .raw("\">")
                .wrap("<td class=\"email\">", &inv.email, "</td>")
                .wrap("<td class=\"role\">", &inv.role, "</td>")
                .wrap("<td>", date(&inv.expires_at), "</td><td>");
            form_open(&mut h, ctx, "inline", "/invitations", "resend");
            h.raw("<input type=\"hidden\" name=\"invitation_id\" value=\"").text(&inv.id).raw("\">");
            h.raw("<button type=\"submit\" class=\"secondary\" aria-label=\"Resend the invitation to ")
                .text(&inv.email)
                .raw("\">Resend</button></form>");
            form_open(&mut h, ctx, "inline", "/invitations", "revoke");
            h.raw("<input type=\"hidden\" name=\"invitation_id\" value=\"").text(&inv.id).raw("\">");
            h.raw("<button type=\"submit\" class=\"danger\" aria-label=\"Revoke the invitation to ")
                .text(&inv.email)
                .raw("\">Revoke</button></form></td></tr>");
        }
        h.raw("</tbody></table>");
    }
    h.raw("</section>");
    Ok(h)
}

fn invitation_field(form: &Form) -> ApiResult<InvitationId> {
    form.text("invitation_id")
        .parse()
        .map_err(|_| ApiError::invalid("choose an invitation").with_param("invitation_id"))
}

/// The accept token is handed out once, as by the API: the app (or the
/// person inviting) passes it on to the invitee.
fn sent(email: &str, token: Option<&str>, what: &'static str) -> Outcome {
    let mut h = Html::new();
    h.raw(what).raw(" ").text(email).raw(".");
    if let Some(token) = token {
        h.raw(" Its accept token, shown only now: <code id=\"accept-token\">").text(token).raw("</code>");
    }
    Outcome::Notice(h)
}

async fn invitations_act(state: &AppState, ctx: &PortalCtx, form: &Form) -> ApiResult<Outcome> {
    let s = || State(state.clone());
    match form.text("action") {
        "invite" => {
            let email = form.text("email").to_ascii_lowercase();
            let request = body(json!({"email": email, "role": form.text("role")}))?;
            let (_, _, Json(inv)) = invitations::create(s(), ctx.org_ctx(), ApiJson(request)).await?;
            Ok(sent(&inv.email, inv.token.as_deref(), "Invitation sent to"))
        }
        "resend" => {
            let (_, Json(inv)) = invitations::resend(s(), ctx.org_ctx(), PathId(invitation_field(form)?)).await?;
            Ok(sent(&inv.email, inv.token.as_deref(), "Invitation sent again to"))
        }
        "revoke" => {
            let Json(inv) = invitations::revoke(s(), ctx.org_ctx(), PathId(invitation_field(form)?)).await?;
            Ok(sent(&inv.email, None, "Invitation revoked for"))
        }
        _ => Err(ApiError::invalid("unknown action").with_param("action")),
    }
}

pub async fn invitations(State(state): State<AppState>, ctx: PortalCtx) -> Response {
    let content = invitations_content(&state, &ctx).await;
    shown(&state, &ctx, Tab::Invitations, content)
}

action_handler!(invitations_action, Tab::Invitations, invitations_act, invitations_content);

// ----------------------------------------------------------------- billing

async fn billing_content(state: &AppState, ctx: &PortalCtx) -> ApiResult<Html> {
    if !ctx.allows(state, Permission::BillingManage) {
        return Err(ApiError::forbidden(format!(
            "your role `{}` lacks the `billing:manage` permission in this organization; ask an owner or the billing admin",
            ctx.role
        )));
    }
    let subscription = match billing::get(State(state.clone()), ctx.org_ctx()).await {
        Ok(Json(sub)) => Some(sub),
        Err(e) if e.code == "not_found" => None,
        Err(e) => return Err(e),
    };
    let mut h = Html::new();
    h.raw("<h1>Billing</h1>");
    if state.config.dev {
        h.raw("<p class=\"muted\" id=\"sandbox-note\">Development mode: payments go to orgplane's sandbox provider; no money moves.</p>");
    }
    let live = subscription.as_ref().filter(|s| s.live);
    if let Some(sub) = live {
        h.raw("<section class=\"card\" id=\"subscription\"><h2>Subscription</h2><dl class=\"facts\">")
            .wrap("<dt>Plan</dt><dd id=\"sub-plan\">", sub.plan.as_deref().unwrap_or("unknown price"), "</dd>")
            .wrap("<dt>Status</dt><dd id=\"sub-status\">", &sub.status, "</dd>")
            .wrap("<dt>Seats</dt><dd id=\"sub-seats\">", sub.seats, "</dd>")
            .wrap("<dt>Provider</dt><dd>", &sub.provider, "</dd>");
        if let Some(end) = &sub.current_period_end {
            if sub.cancel_at_period_end {
                h.wrap("<dt>Ends on</dt><dd id=\"sub-end\">", date(end), " (cancelled at period end)</dd>");
            } else {
                h.wrap("<dt>Renews on</dt><dd id=\"sub-end\">", date(end), "</dd>");
            }
        }
        h.raw("</dl></section><section class=\"card\"><h2>Seats</h2>");
        form_open(&mut h, ctx, "inline", "/billing", "seats");
        h.raw(
            "<label for=\"seats\">Seats</label><input type=\"number\" min=\"1\" id=\"seats\" name=\"seats\" value=\"",
        )
        .text(sub.seats)
        .raw("\"><button type=\"submit\">Change seats</button></form></section>");
        h.raw("<section class=\"card\"><h2>Manage</h2>");
        if sub.cancel_at_period_end {
            form_open(&mut h, ctx, "inline", "/billing", "reactivate");
            h.raw("<button type=\"submit\" id=\"reactivate\">Reactivate subscription</button></form>");
        } else {
            form_open(&mut h, ctx, "inline", "/billing", "cancel");
            h.raw("<button type=\"submit\" class=\"danger\" id=\"cancel\">Cancel at period end</button></form>");
        }
        h.raw("<form class=\"inline\" method=\"post\" hx-boost=\"false\" action=\"/portal/orgs/")
            .text(ctx.org.id)
            .raw("/billing\">");
        csrf_field(&mut h, ctx);
        h.raw("<input type=\"hidden\" name=\"action\" value=\"provider_portal\">")
            .raw("<button type=\"submit\" class=\"secondary\">Payment details and invoices</button></form></section>");
    } else {
        let Json(ent) = entitlements::get_typed(State(state.clone()), ctx.org_ctx()).await?;
        let seats_used = ent.limits.get(orgplane_core::plans::SEATS).map_or(1, |l| l.used.max(1));
        h.raw("<section class=\"card\" id=\"plans\"><h2>Choose a plan</h2><p>You're on the ")
            .text(&ent.plan)
            .raw(" plan.</p>");
        for plan in state.catalog.plans().iter().filter(|p| !p.is_default()) {
            h.raw("<form class=\"inline\" method=\"post\" hx-boost=\"false\" action=\"/portal/orgs/")
                .text(ctx.org.id)
                .raw("/billing\">");
            csrf_field(&mut h, ctx);
            h.raw("<input type=\"hidden\" name=\"action\" value=\"checkout\">")
                .raw("<input type=\"hidden\" name=\"plan\" value=\"")
                .text(plan.key())
                .raw("\"><label for=\"seats-")
                .text(plan.key())
                .raw("\">Seats</label><input type=\"number\" min=\"1\" name=\"seats\" id=\"seats-")
                .text(plan.key())
                .raw("\" value=\"")
                .text(seats_used)
                .raw("\"><button type=\"submit\" id=\"checkout-")
                .text(plan.key())
                .raw("\">Upgrade to ")
                .text(plan.key())
                .raw("</button></form>");
        }
        h.raw("</section>");
    }
    Ok(h)
}

async fn billing_act(state: &AppState, ctx: &PortalCtx, form: &Form) -> ApiResult<Outcome> {
    let s = || State(state.clone());
    let base = format!("{}/portal/orgs/{}", state.portal.public_url, ctx.org.id);
    match form.text("action") {
        "checkout" => {
            let request = body(json!({
                "plan": form.text("plan"),
                "seats": seats_field(form)?,
                "success_url": format!("{base}?checkout=done"),
                "cancel_url": format!("{base}/billing"),
            }))?;
            let Json(started) = billing::checkout(s(), ctx.org_ctx(), CallerKey(None), ApiJson(request)).await?;
            Ok(Outcome::Redirect(started.url))
        }
        "provider_portal" => {
            let request = body(json!({"return_url": format!("{base}/billing")}))?;
            let Json(portal) = billing::billing_portal(s(), ctx.org_ctx(), CallerKey(None), ApiJson(request)).await?;
            Ok(Outcome::Redirect(portal.url))
        }
        "seats" => {
            let seats = seats_field(form)?.ok_or_else(|| ApiError::invalid("enter the seats").with_param("seats"))?;
            let request = body(json!({"seats": seats}))?;
            let Json(_) = billing::set_seats(s(), ctx.org_ctx(), CallerKey(None), ApiJson(request)).await?;
            Ok(notice("Seats changed."))
        }
        "cancel" => {
            let request = CancelBody { immediately: false };
            let Json(_) = billing::cancel(s(), ctx.org_ctx(), CallerKey(None), OptionalJson(request)).await?;
            Ok(notice("The subscription will end at the end of the period."))
        }
        "reactivate" => {
            let Json(_) = billing::reactivate(s(), ctx.org_ctx(), CallerKey(None)).await?;
            Ok(notice("The subscription is active again and will renew."))
        }
        _ => Err(ApiError::invalid("unknown action").with_param("action")),
    }
}

pub async fn billing(State(state): State<AppState>, ctx: PortalCtx) -> Response {
    let content = billing_content(&state, &ctx).await;
    shown(&state, &ctx, Tab::Billing, content)
}

action_handler!(billing_action, Tab::Billing, billing_act, billing_content);

// ------------------------------------------------------------------- audit

async fn audit_content(state: &AppState, ctx: &PortalCtx, after: Option<String>) -> ApiResult<Html> {
    let request = PageRequest { limit: 25, starting_after: after };
    let Json(list) = events::list(State(state.clone()), ctx.org_ctx(), Pagination(request)).await?;
    let mut h = Html::new();
    h.raw("<h1>Audit log</h1><section class=\"card\"><table id=\"events\"><thead><tr><th scope=\"col\">When</th><th scope=\"col\">What</th><th scope=\"col\">Who</th></tr></thead><tbody>");
    for e in &list.data {
        h.raw("<tr>").wrap("<td>", e.created_at.replace('T', " "), "</td>").wrap("<td>", &e.kind, "</td>").wrap(
            "<td>",
            &e.actor,
            "</td></tr>",
        );
    }
    h.raw("</tbody></table>");
    if list.has_more
        && let Some(last) = list.data.last()
    {
        h.raw("<p><a id=\"older\" href=\"/portal/orgs/")
            .text(ctx.org.id)
            .raw("/audit?after=")
            .text(&last.id)
            .raw("\">Older events</a></p>");
    }
    h.raw("</section>");
    Ok(h)
}

pub async fn audit(
    State(state): State<AppState>,
    ctx: PortalCtx,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let content = audit_content(&state, &ctx, query.get("after").cloned()).await;
    shown(&state, &ctx, Tab::Audit, content)
}

// ---------------------------------------------------------------- settings

async fn settings_content(state: &AppState, ctx: &PortalCtx) -> ApiResult<Html> {
    let may_update = ctx.allows(state, Permission::OrgUpdate);
    let may_delete = ctx.allows(state, Permission::OrgDelete);
    if !may_update && !may_delete {
        return Err(ApiError::forbidden(format!(
            "your role `{}` lacks the `org:update` permission in this organization; ask an owner",
            ctx.role
        )));
    }
    let mut h = Html::new();
    h.raw("<h1>Settings</h1>");
    if may_update {
        h.raw("<section class=\"card\"><h2>Organization</h2>");
        form_open(&mut h, ctx, "stack", "/settings", "update");
        h.raw("<label for=\"org-name-input\">Name</label><input id=\"org-name-input\" name=\"name\" required value=\"")
            .text(&ctx.org.name)
            .raw("\"><label for=\"billing-email\">Billing e-mail</label><input type=\"email\" id=\"billing-email\" name=\"billing_email\" value=\"")
            .text(ctx.org.billing_email.as_deref().unwrap_or(""))
            .raw("\"><div><button type=\"submit\">Save</button></div></form></section>");
    }
    if may_delete && ctx.org.kind == orgplane_core::org::OrgKind::Team {
        h.raw("<section class=\"card\"><h2>Delete organization</h2><p>This removes the organization and every membership. It is refused while a subscription is live.</p>");
        form_open(&mut h, ctx, "stack", "/settings", "delete");
        h.raw("<label for=\"confirm\">Type the organization's name, ")
            .text(&ctx.org.name)
            .raw(", to confirm</label><input id=\"confirm\" name=\"confirm\" autocomplete=\"off\" required>")
            .raw("<div><button type=\"submit\" class=\"danger\">Delete organization</button></div></form></section>");
    }
    Ok(h)
}

async fn settings_act(state: &AppState, ctx: &PortalCtx, form: &Form) -> ApiResult<Outcome> {
    let s = || State(state.clone());
    match form.text("action") {
        "update" => {
            let email = form.text("billing_email");
            let email = if email.is_empty() { Value::Null } else { json!(email.to_ascii_lowercase()) };
            let request = body(json!({"name": form.text("name"), "billing_email": email}))?;
            let Json(_) = orgs::update(s(), ctx.org_ctx(), ApiJson(request)).await?;
            Ok(notice("Saved."))
        }
        "delete" => {
            if form.text("confirm") != ctx.org.name.trim() {
                return Err(ApiError::invalid(
                    "the name typed does not match the organization's name; nothing was deleted",
                )
                .with_param("confirm"));
            }
            let Json(_) = orgs::delete(s(), ctx.org_ctx()).await?;
            Ok(Outcome::Gone(PageError::new(
                StatusCode::OK,
                "Organization deleted",
                format!("{} and its memberships are gone.", ctx.org.name),
            )))
        }
        _ => Err(ApiError::invalid("unknown action").with_param("action")),
    }
}

pub async fn settings(State(state): State<AppState>, ctx: PortalCtx) -> Response {
    let content = settings_content(&state, &ctx).await;
    shown(&state, &ctx, Tab::Settings, content)
}

action_handler!(settings_action, Tab::Settings, settings_act, settings_content);
