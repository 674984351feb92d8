//! The portal's API keys page: the org's API keys (`ok_…`), which its
//! members make for their own scripts against the app (issue 11). Members
//! holding `api_keys:manage` list them (name, prefix, scopes, created, last
//! used, expires), create one — shown once, in the answer to the form, with
//! a note to copy it now — and revoke one after a confirmation step.
//!
//! Every read and write goes through the JSON API's handlers
//! (`crate::routes::api_keys`), so the permission, the `api_tokens`
//! feature, the personal-org refusal, the `api_keys` limit, the input rules
//! and the audit events are the API's own. What this page adds is words: an
//! org where keys can't be made (a personal org, or a plan without
//! `api_tokens`) gets the reason in the page, not an error page; keys made
//! before a downgrade stay listed and can still be revoked.

use std::collections::HashMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use orgplane_core::OrgApiKeyId;
use orgplane_core::keys::{parse_lifetime, usable};
use orgplane_core::org::OrgKind;
use orgplane_core::roles::Permission;
use orgplane_store::PageRequest;
use serde_json::{Value, json};

use super::html::Html;
use super::pages::{
    Form, Outcome, Settled, Tab, action_handler, body, csrf_form, csrf_refused, date, form_open, render, settle, shown,
};
use super::session::PortalCtx;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, Pagination, PathId};
use crate::routes::api_keys::{self, OrgKeyResponse};
use crate::routes::rfc3339;
use crate::state::AppState;

/// The lifetimes offered when making a key (the CLI's `--expires-in` syntax).
const LIFETIMES: [(&str, &str); 5] =
    [("", "Never"), ("7d", "7 days"), ("30d", "30 days"), ("90d", "90 days"), ("365d", "1 year")];

/// What a `GET` asks for besides the list: a later page, a key to confirm
/// revoking.
#[derive(Default)]
struct View {
    after: Option<String>,
    revoke: Option<String>,
}

/// `live`, `expired` or `revoked`, by the rule verify applies.
fn status(key: &OrgKeyResponse, now: orgplane_core::Timestamp) -> &'static str {
    let parse = |text: &Option<String>| {
        text.as_deref()
            .and_then(|t| time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok())
    };
    match usable(parse(&key.revoked_at), parse(&key.expires_at), now) {
        Ok(()) => "live",
        Err(refusal) => refusal.as_str(),
    }
}

/// Why no key can be made here, in the page; `None`: keys can be made.
async fn unavailable(state: &AppState, ctx: &PortalCtx) -> ApiResult<Option<Html>> {
    let mut h = Html::new();
    h.raw("<section class=\"card\" id=\"keys-unavailable\">");
    if ctx.org.kind == OrgKind::Personal {
        h.raw("<h2>API keys are for team organizations</h2>")
            .raw("<p>A personal organization is for one person and has no API keys. Create a team organization in ")
            .text(&state.config.portal.app_name)
            .raw(" to make keys for its scripts.</p></section>");
        return Ok(Some(h));
    }
    // The API's own feature guard, with its words.
    match crate::guards::feature(state, ctx.org.id, crate::keys::FEATURE).await {
        Ok(()) => Ok(None),
        Err(e) if e.code == "feature_not_entitled" => {
            h.raw("<h2>Your plan doesn't include API keys</h2><p>").text(&e.message).raw("</p>");
            if ctx.allows(state, Permission::BillingManage) {
                h.raw("<p><a class=\"button\" href=\"/portal/orgs/")
                    .text(ctx.org.id)
                    .raw("/billing\">See plans and upgrade</a></p>");
            } else {
                h.raw("<p class=\"muted\">Ask an owner or the billing admin to upgrade the plan.</p>");
            }
            h.raw("<p class=\"muted\">Keys made before stay listed below; apps are told they are not valid until the plan includes API keys again.</p></section>");
            Ok(Some(h))
        }
        Err(e) => Err(e),
    }
}

fn create_form(h: &mut Html, ctx: &PortalCtx) {
    h.raw("<section class=\"card\"><h2>Create a key</h2>");
    form_open(h, ctx, "stack", "/api_keys", "create");
    h.raw("<label for=\"key-name\">Name</label>")
        .raw("<input id=\"key-name\" name=\"name\" required maxlength=\"100\" autocomplete=\"off\" placeholder=\"e.g. zapier\">")
        .raw("<label for=\"key-expires\">Expires</label><select id=\"key-expires\" name=\"expires_in\">");
    for (value, label) in LIFETIMES {
        h.raw("<option value=\"").raw(value).raw("\">").raw(label).raw("</option>");
    }
    h.raw("</select><label for=\"key-scopes\">Scopes <span class=\"muted\">(optional; separated by spaces or commas)</span></label>")
        .raw("<input id=\"key-scopes\" name=\"scopes\" autocomplete=\"off\" placeholder=\"e.g. invoices:read\">")
        .raw("<div><button type=\"submit\" id=\"create-key\">Create key</button></div></form></section>");
}

/// The confirmation step before a revoke: names the key, says what follows.
fn confirmation(h: &mut Html, ctx: &PortalCtx, keys: &[OrgKeyResponse], wanted: &str, now: orgplane_core::Timestamp) {
    let Some(key) = keys.iter().find(|k| k.id == wanted && status(k, now) != "revoked") else {
        h.raw("<div class=\"error\" role=\"alert\" id=\"flash\"><strong>That key can't be revoked.</strong> ")
            .raw("It is not among this organization's live keys (revoked already, or never here).</div>");
        return;
    };
    h.raw("<section class=\"cta\" id=\"confirm-revoke\"><h2>Revoke ")
        .text(&key.name)
        .raw("?</h2><p>Scripts and apps using <code>")
        .text(&key.prefix)
        .raw("…</code> are refused from the moment it is revoked. This can't be undone.</p>");
    form_open(h, ctx, "inline", "/api_keys", "revoke");
    h.raw("<input type=\"hidden\" name=\"key_id\" value=\"").text(&key.id).raw("\">");
    h.raw("<button type=\"submit\" class=\"danger\" id=\"confirm-revoke-button\">Revoke ")
        .text(&key.name)
        .raw("</button></form><a href=\"/portal/orgs/")
        .text(ctx.org.id)
        .raw("/api_keys\" id=\"keep-key\">Keep it</a></section>");
}

fn key_table(h: &mut Html, ctx: &PortalCtx, keys: &[OrgKeyResponse], view: &View, now: orgplane_core::Timestamp) {
    h.raw("<section class=\"card\"><h2>Keys</h2>");
    if keys.is_empty() {
        h.raw("<p class=\"muted\" id=\"no-keys\">No API keys yet.</p></section>");
        return;
    }
    h.raw("<table id=\"keys\"><thead><tr><th scope=\"col\">Name</th><th scope=\"col\">Prefix</th><th scope=\"col\">Scopes</th>")
        .raw("<th scope=\"col\">Created</th><th scope=\"col\">Last used</th><th scope=\"col\">Expires</th><th scope=\"col\">Status</th></tr></thead><tbody>");
    for key in keys {
        let state = status(key, now);
        h.raw("<tr data-key=\"")
            .text(&key.id)
            .raw("\">")
            .wrap("<td class=\"name\">", &key.name, "</td>")
            .wrap("<td><code>", &key.prefix, "…</code></td>")
            .raw("<td class=\"scopes\">");
        if key.scopes.is_empty() {
            h.raw("<span class=\"muted\">none</span>");
        } else {
            h.text(key.scopes.join(", "));
        }
        h.wrap("</td><td>", date(&key.created_at), "</td><td>")
            .text(key.last_used_at.as_deref().map_or("never", date))
            .raw("</td><td>")
            .text(key.expires_at.as_deref().map_or("never", date))
            .raw("</td><td class=\"status\">");
        if state == "revoked" {
            h.raw("revoked ").text(key.revoked_at.as_deref().map_or("", date));
        } else {
            h.text(state).raw(" <a class=\"button danger\" href=\"/portal/orgs/").text(ctx.org.id);
            h.raw("/api_keys?revoke=").text(&key.id);
            if let Some(after) = &view.after {
                h.raw("&amp;after=").text(after);
            }
            h.raw("\" aria-label=\"Revoke ").text(&key.name).raw("\">Revoke</a>");
        }
        h.raw("</td></tr>");
    }
    h.raw("</tbody></table></section>");
}

async fn content(state: &AppState, ctx: &PortalCtx, view: &View) -> ApiResult<Html> {
    let request = PageRequest { limit: 100, starting_after: view.after.clone() };
    // The API's own list: it refuses a member without `api_keys:manage`.
    let Json(list) = api_keys::list_org_keys(State(state.clone()), ctx.org_ctx(), Pagination(request)).await?;
    let now = state.clock.now();
    let mut h = Html::new();
    h.raw("<h1>API keys</h1><p class=\"muted\">Keys let your organization's scripts call ")
        .text(&state.config.portal.app_name)
        .raw(". Each key is shown once, when it is made; only a hash of it is kept.</p>");
    let blocked = unavailable(state, ctx).await?;
    if let Some(wanted) = &view.revoke {
        confirmation(&mut h, ctx, &list.data, wanted, now);
    }
    let can_create = blocked.is_none();
    if let Some(reason) = blocked {
        h.append(reason);
    }
    // A personal org has no keys to list.
    if ctx.org.kind != OrgKind::Personal {
        key_table(&mut h, ctx, &list.data, view, now);
        if list.has_more
            && let Some(last) = list.data.last()
        {
            h.raw("<p><a id=\"next-keys\" href=\"/portal/orgs/")
                .text(ctx.org.id)
                .raw("/api_keys?after=")
                .text(&last.id)
                .raw("\">Next page</a></p>");
        }
    }
    if can_create {
        create_form(&mut h, ctx);
    }
    Ok(h)
}

/// The page as it is after an action.
async fn fresh_content(state: &AppState, ctx: &PortalCtx) -> ApiResult<Html> {
    content(state, ctx, &View::default()).await
}

/// The new key, once: the only time it is shown.
fn created(key: &OrgKeyResponse) -> Outcome {
    let mut h = Html::new();
    h.raw("<strong>API key ")
        .text(&key.name)
        .raw(" created. Copy it now: it is shown only this once.</strong>")
        .raw("<p><code id=\"new-key\">")
        .text(key.key.as_deref().unwrap_or(""))
        .raw(
            "</code></p><p>Store it where your script keeps secrets. If it is lost, revoke it and create another.</p>",
        );
    Outcome::Notice(h)
}

/// The form's scopes: words separated by spaces or commas.
fn scopes_field(form: &Form) -> Vec<&str> {
    form.text("scopes").split(|c: char| c == ',' || c.is_whitespace()).filter(|s| !s.is_empty()).collect()
}

async fn act(state: &AppState, ctx: &PortalCtx, form: &Form) -> ApiResult<Outcome> {
    let s = || State(state.clone());
    match form.text("action") {
        "create" => {
            let expires_at = match form.text("expires_in") {
                "" => Value::Null,
                lifetime => json!(rfc3339(state.clock.now() + parse_lifetime(lifetime)?)),
            };
            let request =
                body(json!({"name": form.text("name"), "scopes": scopes_field(form), "expires_at": expires_at}))?;
            let (_, _, Json(key)) = api_keys::create_org_key(s(), ctx.org_ctx(), ApiJson(request)).await?;
            Ok(created(&key))
        }
        "revoke" => {
            let id: OrgApiKeyId =
                form.text("key_id").parse().map_err(|_| ApiError::invalid("choose a key").with_param("key_id"))?;
            let Json(key) = api_keys::revoke_org_key(s(), ctx.org_ctx(), PathId(id)).await?;
            let mut h = Html::new();
            h.raw("API key ").text(&key.name).raw(" revoked. Scripts using it are refused from now on.");
            Ok(Outcome::Notice(h))
        }
        _ => Err(ApiError::invalid("unknown action").with_param("action")),
    }
}

pub async fn api_keys(
    State(state): State<AppState>,
    ctx: PortalCtx,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let view = View { after: query.get("after").cloned(), revoke: query.get("revoke").cloned() };
    let content = content(&state, &ctx, &view).await;
    shown(&state, &ctx, Tab::ApiKeys, content)
}

action_handler!(api_keys_action, Tab::ApiKeys, act, fresh_content);
