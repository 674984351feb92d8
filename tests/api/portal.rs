//! The hosted portal without a browser: minting links, opening them once,
//! the session cookie, CSRF and `Origin` checks, one org per session, a
//! removed member's session, the return-URL allowlist, and the security
//! headers. (The pages in a real browser: `tests/portal_browser`.)

use reqwest::redirect::Policy;
use serde_json::json;

use crate::helpers::{Backend, TestApp, TestUser, spawn_app_with};
use crate::on_both_backends;

/// The API keys page (`portal/api_keys.rs`).
mod api_keys;

on_both_backends!(
    an_api_key_mints_a_link_that_opens_once_into_the_overview,
    a_used_link_shows_a_page_with_the_way_back_not_json,
    an_expired_link_is_refused_with_a_page,
    a_member_mints_a_link_for_themselves_with_their_token,
    a_link_for_someone_who_is_not_a_member_is_not_found,
    a_replayed_mint_answers_without_the_link_and_stores_none,
    a_form_without_the_csrf_token_is_refused_and_changes_nothing,
    a_foreign_origin_is_refused_even_with_the_token,
    a_session_for_one_org_gets_not_found_for_another,
    a_removed_member_loses_the_session_at_once,
    a_return_url_outside_the_allowlist_is_refused_with_422,
    every_portal_response_carries_the_csp_and_frame_headers,
    user_text_is_escaped_in_the_pages,
    the_last_owner_cant_be_demoted_from_the_portal_and_reads_why,
    an_invitation_over_the_seat_limit_shows_the_upgrade_path,
    an_idle_session_expires_and_logging_out_ends_one,
    the_portal_acts_through_the_same_rules_as_the_api_for_a_plain_member,
);

const APP: &str = "https://app.example";

async fn portal_app(backend: Backend) -> Option<TestApp> {
    spawn_app_with(backend, |config| {
        config.portal.return_url_allowlist = vec![APP.into()];
        config.portal.app_name = "Clinic Manager".into();
    })
    .await
}

/// A browser stand-in: no redirects followed, the portal cookie kept by hand.
struct Browser {
    http: reqwest::Client,
    base: String,
    cookie: Option<String>,
}

struct Page {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Page {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    /// The CSRF token the page's forms carry.
    fn csrf(&self) -> String {
        let at = self.body.find("name=\"csrf\" value=\"").expect("a form with a CSRF field") + 19;
        self.body[at..].split('"').next().expect("a value").to_owned()
    }
}

impl Browser {
    fn new(app: &TestApp) -> Browser {
        Browser {
            http: reqwest::Client::builder().redirect(Policy::none()).build().expect("client"),
            base: app.base.clone(),
            cookie: None,
        }
    }

    async fn read(&mut self, res: reqwest::Response) -> Page {
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        if let Some(set) = headers.get("set-cookie").and_then(|v| v.to_str().ok()) {
            let pair = set.split(';').next().unwrap_or("");
            self.cookie = Some(pair.to_owned()).filter(|p| !p.ends_with('='));
        }
        let body = res.text().await.expect("body");
        Page { status, headers, body }
    }

    async fn get(&mut self, path_or_url: &str) -> Page {
        let url = if path_or_url.starts_with("http") {
            path_or_url.to_owned()
        } else {
            format!("{}{path_or_url}", self.base)
        };
        let mut req = self.http.get(url);
        if let Some(c) = &self.cookie {
            req = req.header("cookie", c);
        }
        let res = req.send().await.expect("GET");
        self.read(res).await
    }

    async fn post(&mut self, path: &str, fields: &[(&str, &str)], origin: Option<&str>) -> Page {
        let mut req = self.http.post(format!("{}{path}", self.base)).form(fields);
        if let Some(c) = &self.cookie {
            req = req.header("cookie", c);
        }
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        let res = req.send().await.expect("POST");
        self.read(res).await
    }

    /// POSTs as the portal's own page would: its origin, its CSRF token.
    async fn submit(&mut self, path: &str, csrf: &str, fields: &[(&str, &str)]) -> Page {
        let mut all = vec![("csrf", csrf)];
        all.extend_from_slice(fields);
        let origin = self.base.clone();
        self.post(path, &all, Some(&origin)).await
    }
}

/// Mints a link with an API key for `user` in `org`.
async fn mint(app: &TestApp, key: &str, org: &str, user: &TestUser) -> String {
    let body = json!({"org_id": org, "user_id": user.id, "return_url": format!("{APP}/settings")});
    let res = app.post("/v1/portal_sessions", key, body).await;
    res.expect(200)["url"].as_str().expect("url").to_owned()
}

/// Opens a fresh link in a new browser and lands on the overview.
/// A team org of Dr Smith (owner) with Dr Johnson as a plain member.
async fn clinic_with_a_member(app: &TestApp) -> (TestUser, TestUser, String) {
    let smith = app.user("dr.smith@clinic.example").await;
    let johnson = app.user("dr.johnson@clinic.example").await;
    let org = app.team(&smith, "Downtown Clinic").await;
    app.add_member(&org, &smith, &johnson, "member").await;
    (smith, johnson, org)
}

async fn signed_in(app: &TestApp, key: &str, org: &str, user: &TestUser) -> (Browser, Page) {
    let mut browser = Browser::new(app);
    let url = mint(app, key, org, user).await;
    let opened = browser.get(&url).await;
    assert_eq!(opened.status, 303, "{}", opened.body);
    let overview = browser.get(&format!("/portal/orgs/{org}")).await;
    assert_eq!(overview.status, 200, "{}", overview.body);
    (browser, overview)
}

async fn an_api_key_mints_a_link_that_opens_once_into_the_overview(backend: Backend) {
    let Some(app) = portal_app(backend).await else { return };
    let key = app.api_key().await;
    let smith = app.user("dr.smith@clinic.example").await;
    let org = app.team(&smith, "Downtown Clinic").await;

    let res = app.post("/v1/portal_sessions", &key, json!({"org_id": org, "user_id": smith.id})).await;
    let body = res.expect(200);
    let url = body["url"].as_str().expect("url");
    assert!(url.starts_with(&format!("{}/portal/link/pl_", app.base)), "{url}");
    let expires = time::OffsetDateTime::parse(
        body["expires_at"].as_str().expect("expires_at"),
        &time::format_description::well_known::Rfc3339,
    )
    .expect("RFC 3339");
    let minutes = (expires - time::OffsetDateTime::now_utc()).whole_seconds();
    assert!((290..=300).contains(&minutes), "valid 5 minutes, not {minutes} s");
    assert!(body["id"].as_str().is_some_and(|id| id.starts_with("ps_")), "{body}");

    let mut browser = Browser::new(&app);
    let opened = browser.get(url).await;
    assert_eq!(opened.status, 303);
    assert_eq!(opened.header("location"), format!("/portal/orgs/{org}"));
    let cookie = opened.header("set-cookie");
    for part in ["orgplane_portal=", "HttpOnly", "SameSite=Lax", "Path=/portal"] {
        assert!(cookie.contains(part), "{part} missing from {cookie}");
    }
    // Plain http on loopback: the one case without `Secure`.
    assert!(!cookie.contains("Secure"), "{cookie}");
    assert_eq!(app.count("SELECT COUNT(*) FROM portal_sessions WHERE cookie_hash IS NOT NULL").await, 1);

    let overview = browser.get(&format!("/portal/orgs/{org}")).await;
    assert_eq!(overview.status, 200, "{}", overview.body);
    assert!(overview.header("content-type").starts_with("text/html"));
    for text in ["Downtown Clinic", "id=\"fact-plan\">free<", "id=\"fact-kind\">team<", "id=\"upgrade\"", "<meter"] {
        assert!(overview.body.contains(text), "{text} missing from the overview");
    }
    // Without the cookie, no page.
    let stranger = Browser::new(&app).get(&format!("/portal/orgs/{org}")).await;
    assert_eq!(stranger.status, 401);
    assert!(!stranger.body.contains("Downtown Clinic"));
}

async fn a_used_link_shows_a_page_with_the_way_back_not_json(backend: Backend) {
    let Some(app) = portal_app(backend).await else { return };
    let key = app.api_key().await;
    let smith = app.user("dr.smith@clinic.example").await;
    let org = app.team(&smith, "Downtown Clinic").await;
    let url = mint(&app, &key, &org, &smith).await;
    assert_eq!(Browser::new(&app).get(&url).await.status, 303);

    let mut other = Browser::new(&app);
    let again = other.get(&url).await;
    assert_eq!(again.status, 410);
    assert!(again.header("content-type").starts_with("text/html"), "{}", again.header("content-type"));
    assert!(again.body.contains("already been used"), "{}", again.body);
    assert!(again.body.contains("href=\"https://app.example/settings\""), "{}", again.body);
    assert!(again.body.contains("Back to Clinic Manager"), "{}", again.body);
    assert!(other.cookie.is_none(), "a used link sets no cookie");
    let unknown = other.get("/portal/link/pl_nothing").await;
    assert_eq!(unknown.status, 404);
    assert!(unknown.body.contains("not valid"));
}

async fn an_expired_link_is_refused_with_a_page(backend: Backend) {
    let Some(app) = portal_app(backend).await else { return };
    let key = app.api_key().await;
    let smith = app.user("dr.smith@clinic.example").await;
    let org = app.team(&smith, "Downtown Clinic").await;
    let url = mint(&app, &key, &org, &smith).await;
    app.clock.advance(time::Duration::minutes(5) + time::Duration::seconds(1));
    let mut browser = Browser::new(&app);
    let page = browser.get(&url).await;
    assert_eq!(page.status, 410);
    assert!(page.body.contains("expired"), "{}", page.body);
    assert!(page.body.contains("https://app.example/settings"));
    assert!(browser.cookie.is_none());
    assert_eq!(app.count("SELECT COUNT(*) FROM portal_sessions WHERE opened_at IS NOT NULL").await, 0);
}

async fn a_member_mints_a_link_for_themselves_with_their_token(backend: Backend) {
    let Some(app) = portal_app(backend).await else { return };
    let key = app.api_key().await;
    let (smith, johnson, org) = clinic_with_a_member(&app).await;

    let res = app.post(&format!("/v1/orgs/{org}/portal_session"), &johnson.token, json!({})).await;
    let url = res.expect(200)["url"].as_str().expect("url").to_owned();
    let mut browser = Browser::new(&app);
    assert_eq!(browser.get(&url).await.status, 303);
    let overview = browser.get(&format!("/portal/orgs/{org}")).await;
    assert_eq!(overview.status, 200);
    assert!(overview.body.contains("Signed in as dr.johnson"), "{}", overview.body);
    // An empty body works too; an API key is pointed at the other route.
    let res =
        app.send(reqwest::Method::POST, &format!("/v1/orgs/{org}/portal_session"), Some(&johnson.token), None).await;
    res.expect(200);
    let res = app.post(&format!("/v1/orgs/{org}/portal_session"), &key, json!({})).await;
    res.expect_error(403, "forbidden");
    assert!(res.body["error"]["message"].as_str().is_some_and(|m| m.contains("/v1/portal_sessions")));
    // A user's token can't mint for someone else.
    let res = app.post("/v1/portal_sessions", &johnson.token, json!({"org_id": org, "user_id": smith.id})).await;
    res.expect_error(403, "forbidden");
}

async fn a_link_for_someone_who_is_not_a_member_is_not_found(backend: Backend) {
    let Some(app) = portal_app(backend).await else { return };
    let key = app.api_key().await;
    let smith = app.user("dr.smith@clinic.example").await;
    let mallory = app.user("mallory@example.com").await;
    let org = app.team(&smith, "Downtown Clinic").await;
    let res = app.post("/v1/portal_sessions", &key, json!({"org_id": org, "user_id": mallory.id})).await;
    res.expect_error(404, "not_found");
    assert_eq!(res.body["error"]["param"], "user_id");
    let ghost = crate::helpers::unknown_id("org");
    let res = app.post("/v1/portal_sessions", &key, json!({"org_id": ghost, "user_id": smith.id})).await;
    res.expect_error(404, "not_found");
    assert_eq!(app.count("SELECT COUNT(*) FROM portal_sessions").await, 0);
}

async fn a_form_without_the_csrf_token_is_refused_and_changes_nothing(backend: Backend) {
    let Some(app) = portal_app(backend).await else { return };
    let key = app.api_key().await;
    let smith = app.user("dr.smith@clinic.example").await;
    let org = app.team(&smith, "Downtown Clinic").await;
    let (mut browser, overview) = signed_in(&app, &key, &org, &smith).await;
    let path = format!("/portal/orgs/{org}/invitations");
    let invite = [("action", "invite"), ("email", "dr.johnson@clinic.example"), ("role", "member")];

    let origin = app.base.clone();
    let refused = browser.post(&path, &invite, Some(&origin)).await;
    assert_eq!(refused.status, 403);
    assert!(refused.body.contains("CSRF"), "{}", refused.body);
    let wrong = [("csrf", "not-the-token"), ("action", "invite"), ("email", "dr.johnson@clinic.example")];
    assert_eq!(browser.post(&path, &wrong, Some(&origin)).await.status, 403);
    assert_eq!(app.count(&format!("SELECT COUNT(*) FROM invitations WHERE org_id = '{org}'")).await, 0);
    // Log-out is a form too.
    assert_eq!(browser.post("/portal/logout", &[], Some(&origin)).await.status, 403);

    // The page's own token passes, as a field or as htmx's header.
    let csrf = overview.csrf();
    let done = browser.submit(&path, &csrf, &invite).await;
    assert_eq!(done.status, 200, "{}", done.body);
    assert!(done.body.contains("Invitation sent to dr.johnson@clinic.example"), "{}", done.body);
    let res = browser
        .http
        .post(format!("{}{path}", app.base))
        .header("cookie", browser.cookie.clone().expect("cookie"))
        .header("origin", &origin)
        .header("x-csrf-token", &csrf)
        .form(&[("action", "invite"), ("email", "dr.jones@clinic.example"), ("role", "member")])
        .send()
        .await
        .expect("POST");
    // Two seats on the free plan: Smith and the first invitation fill them.
    assert_eq!(res.status().as_u16(), 403);
    assert!(res.text().await.expect("body").contains("limit"));
    assert_eq!(app.count(&format!("SELECT COUNT(*) FROM invitations WHERE org_id = '{org}'")).await, 1);
}

async fn a_foreign_origin_is_refused_even_with_the_token(backend: Backend) {
    let Some(app) = portal_app(backend).await else { return };
    let key = app.api_key().await;
    let smith = app.user("dr.smith@clinic.example").await;
    let org = app.team(&smith, "Downtown Clinic").await;
    let (mut browser, overview) = signed_in(&app, &key, &org, &smith).await;
    let csrf = overview.csrf();
    let fields = [("csrf", csrf.as_str()), ("action", "update"), ("name", "Pwned"), ("billing_email", "")];
    let path = format!("/portal/orgs/{org}/settings");
    let refused = browser.post(&path, &fields, Some("https://evil.example")).await;
    assert_eq!(refused.status, 403);
    assert!(refused.body.contains("Origin"), "{}", refused.body);
    // A cross-site request without Origin is told by Sec-Fetch-Site.
    let res = browser
        .http
        .post(format!("{}{path}", app.base))
        .header("cookie", browser.cookie.clone().expect("cookie"))
        .header("sec-fetch-site", "cross-site")
        .form(&fields)
        .send()
        .await
        .expect("POST");
    assert_eq!(res.status().as_u16(), 403);
    let org_now = app.get(&format!("/v1/orgs/{org}"), &smith.token).await;
    assert_eq!(org_now.expect(200)["name"], "Downtown Clinic");
    // The same form from the portal's own origin works.
    let saved =
        browser.submit(&path, &csrf, &[("action", "update"), ("name", "Uptown Clinic"), ("billing_email", "")]).await;
    assert_eq!(saved.status, 200, "{}", saved.body);
    assert!(saved.body.contains("Saved."));
    assert!(saved.body.contains("id=\"org-name\">Uptown Clinic<"), "the header shows the new name");
    assert_eq!(app.get(&format!("/v1/orgs/{org}"), &smith.token).await.expect(200)["name"], "Uptown Clinic");
}

async fn a_session_for_one_org_gets_not_found_for_another(backend: Backend) {
    let Some(app) = portal_app(backend).await else { return };
    let key = app.api_key().await;
    let smith = app.user("dr.smith@clinic.example").await;
    let downtown = app.team(&smith, "Downtown Clinic").await;
    let uptown = app.team(&smith, "Uptown Clinic").await;
    let (mut browser, overview) = signed_in(&app, &key, &downtown, &smith).await;
    let csrf = overview.csrf();
    for page in ["", "/members", "/invitations", "/billing", "/audit", "/settings"] {
        let res = browser.get(&format!("/portal/orgs/{uptown}{page}")).await;
        assert_eq!(res.status, 404, "{page}");
        assert!(!res.body.contains("Uptown Clinic"), "{page}");
    }
    let res = browser
        .submit(&format!("/portal/orgs/{uptown}/settings"), &csrf, &[("action", "update"), ("name", "Pwned")])
        .await;
    assert_eq!(res.status, 404);
    assert_eq!(app.get(&format!("/v1/orgs/{uptown}"), &smith.token).await.expect(200)["name"], "Uptown Clinic");
    // The same for an org that does not exist.
    let ghost = crate::helpers::unknown_id("org");
    assert_eq!(browser.get(&format!("/portal/orgs/{ghost}")).await.status, 404);
    assert_eq!(browser.get("/portal/orgs/not-an-id").await.status, 404);
}

async fn a_removed_member_loses_the_session_at_once(backend: Backend) {
    let Some(app) = portal_app(backend).await else { return };
    let key = app.api_key().await;
    let smith = app.user("dr.smith@clinic.example").await;
    let johnson = app.user("dr.johnson@clinic.example").await;
    let org = app.team(&smith, "Downtown Clinic").await;
    app.add_member(&org, &smith, &johnson, "admin").await;
    let (mut browser, _) = signed_in(&app, &key, &org, &johnson).await;
    assert_eq!(app.count(&format!("SELECT COUNT(*) FROM portal_sessions WHERE user_id = '{}'", johnson.id)).await, 1);

    app.delete(&format!("/v1/orgs/{org}/members/{}", johnson.id), &smith.token).await.expect(200);
    let after = browser.get(&format!("/portal/orgs/{org}/members")).await;
    assert_eq!(after.status, 401, "{}", after.body);
    assert!(after.body.contains("signed out"), "{}", after.body);
    assert!(!after.body.contains("Downtown Clinic"));
    // Deleted with the membership, in the same transaction.
    assert_eq!(app.count(&format!("SELECT COUNT(*) FROM portal_sessions WHERE user_id = '{}'", johnson.id)).await, 0);
    // Invited back, the old cookie still opens nothing.
    app.add_member(&org, &smith, &johnson, "member").await;
    assert_eq!(browser.get(&format!("/portal/orgs/{org}")).await.status, 401);
}

async fn a_return_url_outside_the_allowlist_is_refused_with_422(backend: Backend) {
    let Some(app) = portal_app(backend).await else { return };
    let key = app.api_key().await;
    let smith = app.user("dr.smith@clinic.example").await;
    let org = app.team(&smith, "Downtown Clinic").await;
    for bad in ["https://evil.example/phish", "https://app.example.evil.example/", "javascript:alert(1)", "/settings"] {
        let body = json!({"org_id": org, "user_id": smith.id, "return_url": bad});
        let res = app.post("/v1/portal_sessions", &key, body).await;
        res.expect_error(422, "invalid_request");
        assert_eq!(res.body["error"]["param"], "return_url", "{bad}");
        let res = app.post(&format!("/v1/orgs/{org}/portal_session"), &smith.token, json!({"return_url": bad})).await;
        res.expect_error(422, "invalid_request");
    }
    assert_eq!(app.count("SELECT COUNT(*) FROM portal_sessions").await, 0);
    let ok = json!({"org_id": org, "user_id": smith.id, "return_url": "https://app.example/orgs/1?tab=x"});
    app.post("/v1/portal_sessions", &key, ok).await.expect(200);
}

async fn every_portal_response_carries_the_csp_and_frame_headers(backend: Backend) {
    let Some(app) = portal_app(backend).await else { return };
    let key = app.api_key().await;
    let smith = app.user("dr.smith@clinic.example").await;
    let org = app.team(&smith, "Downtown Clinic").await;
    let (mut browser, overview) = signed_in(&app, &key, &org, &smith).await;
    let used = browser.get(&mint(&app, &key, &org, &smith).await).await; // a second link: opens
    let signed_out = Browser::new(&app).get(&format!("/portal/orgs/{org}")).await;
    let htmx = browser.get("/portal/assets/htmx.min.js").await;
    for page in [&overview, &used, &signed_out, &htmx] {
        let csp = page.header("content-security-policy");
        for directive in
            ["default-src 'none'", "script-src 'self'", "style-src 'self'", "frame-ancestors 'none'", "base-uri 'none'"]
        {
            assert!(csp.contains(directive), "{directive} missing from {csp}");
        }
        assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"), "{csp}");
        assert_eq!(page.header("x-frame-options"), "DENY");
        assert_eq!(page.header("x-content-type-options"), "nosniff");
    }
    // No inline script, no third-party origin: every script is ours.
    assert!(!overview.body.contains("<script>"), "inline script in the page");
    assert!(overview.body.contains("<script src=\"/portal/assets/htmx.min.js\" defer></script>"));
    for attr in ["src=\"http", "href=\"//", "src=\"//"] {
        assert!(!overview.body.contains(attr), "a third-party resource in the page: {attr}");
    }
    let stylesheet = "<link rel=\"stylesheet\" href=\"/portal/assets/portal.css\">";
    assert!(overview.body.contains(stylesheet) && !overview.body.contains("<style"), "styles are ours, not inline");
    assert!(htmx.body.starts_with("/*! htmx 2."), "vendored htmx with its license header");
    assert!(htmx.header("content-type").starts_with("text/javascript"));
    // Total page weight: the page, its stylesheet and the script.
    let css = browser.get("/portal/assets/portal.css").await;
    let weight = overview.body.len() + css.body.len() + htmx.body.len();
    assert!(weight < 100 * 1024, "the overview weighs {weight} bytes");

    // With frame_ancestors set, the app may frame the portal.
    drop(app);
    let Some(app) = spawn_app_with(backend, |c| c.portal.frame_ancestors = vec!["https://app.example".into()]).await
    else {
        return;
    };
    let page = Browser::new(&app).get("/portal/orgs/x").await;
    assert!(page.header("content-security-policy").contains("frame-ancestors https://app.example"));
    assert_eq!(page.header("x-frame-options"), "");
}

async fn user_text_is_escaped_in_the_pages(backend: Backend) {
    let Some(app) = portal_app(backend).await else { return };
    let key = app.api_key().await;
    let smith = app.user("dr.smith@clinic.example").await;
    let org = app.team(&smith, "<script>alert('x')</script> & Co").await;
    let (mut browser, overview) = signed_in(&app, &key, &org, &smith).await;
    assert!(!overview.body.contains("<script>alert"), "unescaped org name");
    assert!(overview.body.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; Co"));
    let members = browser.get(&format!("/portal/orgs/{org}/members")).await;
    assert!(!members.body.contains("<script>alert"));
}

async fn the_last_owner_cant_be_demoted_from_the_portal_and_reads_why(backend: Backend) {
    let Some(app) = portal_app(backend).await else { return };
    let key = app.api_key().await;
    let smith = app.user("dr.smith@clinic.example").await;
    let org = app.team(&smith, "Downtown Clinic").await;
    let (mut browser, overview) = signed_in(&app, &key, &org, &smith).await;
    let csrf = overview.csrf();
    let path = format!("/portal/orgs/{org}/members");
    let res =
        browser.submit(&path, &csrf, &[("action", "change_role"), ("user_id", &smith.id), ("role", "member")]).await;
    assert_eq!(res.status, 409, "{}", res.body);
    assert!(res.body.contains("role=\"alert\""), "{}", res.body);
    assert!(res.body.contains("always keeps at least one owner"), "{}", res.body);
    assert_eq!(app.owner_count(&org).await, 1);
    // Leaving as the last owner is refused the same way.
    let res = browser.submit(&path, &csrf, &[("action", "leave")]).await;
    assert_eq!(res.status, 409);
    assert_eq!(app.member_count(&org).await, 1);
}

async fn an_invitation_over_the_seat_limit_shows_the_upgrade_path(backend: Backend) {
    let Some(app) = portal_app(backend).await else { return };
    let key = app.api_key().await;
    let smith = app.user("dr.smith@clinic.example").await;
    let org = app.team(&smith, "Downtown Clinic").await;
    let (mut browser, overview) = signed_in(&app, &key, &org, &smith).await;
    let csrf = overview.csrf();
    let path = format!("/portal/orgs/{org}/invitations");
    let first =
        browser.submit(&path, &csrf, &[("action", "invite"), ("email", "a@clinic.example"), ("role", "member")]).await;
    assert_eq!(first.status, 200);
    assert!(first.body.contains("id=\"accept-token\">it_"), "the token is shown once");
    assert!(first.body.contains("a@clinic.example"));
    let over =
        browser.submit(&path, &csrf, &[("action", "invite"), ("email", "b@clinic.example"), ("role", "member")]).await;
    assert_eq!(over.status, 403);
    assert!(over.body.contains("limit is reached"), "{}", over.body);
    assert!(
        over.body.contains(&format!("href=\"/portal/orgs/{org}/billing\">Upgrade on the Billing page")),
        "{}",
        over.body
    );
    // Revoke frees the seat, through the API's own rule.
    let inv = app.strings(&format!("SELECT id FROM invitations WHERE org_id = '{org}'")).await.remove(0);
    let revoked = browser.submit(&path, &csrf, &[("action", "revoke"), ("invitation_id", &inv)]).await;
    assert_eq!(revoked.status, 200, "{}", revoked.body);
    assert!(revoked.body.contains("no-pending"));
    // A personal org takes no invitations: said as the API says it.
    let (mut own, own_page) = signed_in(&app, &key, &smith.personal_org, &smith).await;
    let res = own
        .submit(
            &format!("/portal/orgs/{}/invitations", smith.personal_org),
            &own_page.csrf(),
            &[("action", "invite"), ("email", "c@clinic.example"), ("role", "member")],
        )
        .await;
    assert_eq!(res.status, 403);
    assert!(res.body.contains("Personal organizations are for one person"), "{}", res.body);
}

async fn an_idle_session_expires_and_logging_out_ends_one(backend: Backend) {
    let Some(app) = portal_app(backend).await else { return };
    let key = app.api_key().await;
    let smith = app.user("dr.smith@clinic.example").await;
    let org = app.team(&smith, "Downtown Clinic").await;
    let (mut browser, _) = signed_in(&app, &key, &org, &smith).await;
    // Use within the hour keeps it alive.
    app.clock.advance(time::Duration::minutes(50));
    assert_eq!(browser.get(&format!("/portal/orgs/{org}")).await.status, 200);
    app.clock.advance(time::Duration::minutes(50));
    assert_eq!(browser.get(&format!("/portal/orgs/{org}")).await.status, 200);
    app.clock.advance(time::Duration::minutes(61));
    let expired = browser.get(&format!("/portal/orgs/{org}")).await;
    assert_eq!(expired.status, 401);
    assert!(expired.body.contains("Your session has expired"), "{}", expired.body);
    assert!(expired.body.contains("https://app.example/settings"));

    let (mut browser, overview) = signed_in(&app, &key, &org, &smith).await;
    let old_cookie = browser.cookie.clone();
    let origin = app.base.clone();
    let out = browser.post("/portal/logout", &[("csrf", &overview.csrf())], Some(&origin)).await;
    assert_eq!(out.status, 200);
    assert!(out.header("set-cookie").contains("Max-Age=0"));
    assert!(out.body.contains("signed out"));
    // The old cookie, sent again, opens nothing.
    let mut replay = Browser::new(&app);
    replay.cookie = old_cookie;
    assert_eq!(replay.get(&format!("/portal/orgs/{org}")).await.status, 401);
    assert_eq!(app.count("SELECT COUNT(*) FROM portal_sessions WHERE ended_at IS NOT NULL").await, 1);
}

async fn the_portal_acts_through_the_same_rules_as_the_api_for_a_plain_member(backend: Backend) {
    let Some(app) = portal_app(backend).await else { return };
    let key = app.api_key().await;
    let (smith, johnson, org) = clinic_with_a_member(&app).await;
    let (mut browser, overview) = signed_in(&app, &key, &org, &johnson).await;
    // The tabs a member may not use are not shown, nor the buttons.
    for hidden in ["/billing\"", "/audit\"", "/settings\"", "/invitations\""] {
        assert!(!overview.body.contains(&format!("/portal/orgs/{org}{hidden}")), "{hidden} shown to a member");
    }
    let members = browser.get(&format!("/portal/orgs/{org}/members")).await;
    assert!(!members.body.contains("value=\"change_role\""), "role change offered to a member");
    assert!(!members.body.contains("value=\"remove\""));
    assert!(members.body.contains("value=\"leave\""));
    // Forged anyway, the server refuses as the API does.
    let csrf = overview.csrf();
    let res = browser
        .submit(
            &format!("/portal/orgs/{org}/members"),
            &csrf,
            &[("action", "change_role"), ("user_id", &johnson.id), ("role", "owner")],
        )
        .await;
    assert_eq!(res.status, 403);
    assert!(res.body.contains("members:update"), "{}", res.body);
    let billing = browser.get(&format!("/portal/orgs/{org}/billing")).await;
    assert_eq!(billing.status, 403);
    assert!(billing.body.contains("billing:manage"));
    let audit = browser.get(&format!("/portal/orgs/{org}/audit")).await;
    assert_eq!(audit.status, 403);
    assert_eq!(app.role_of(&org, &smith, &johnson).await.as_deref(), Some("member"));
    // Leaving works, and ends the portal for this org.
    let left = browser.submit(&format!("/portal/orgs/{org}/members"), &csrf, &[("action", "leave")]).await;
    assert_eq!(left.status, 200, "{}", left.body);
    assert!(left.body.contains("You left the organization"));
    assert_eq!(app.member_count(&org).await, 1);
    assert_eq!(browser.get(&format!("/portal/orgs/{org}")).await.status, 401);
}

async fn a_replayed_mint_answers_without_the_link_and_stores_none(backend: Backend) {
    let Some(app) = portal_app(backend).await else { return };
    let key = app.api_key().await;
    let smith = app.user("dr.smith@clinic.example").await;
    let org = app.team(&smith, "Downtown Clinic").await;
    let send = || {
        app.http
            .post(app.url("/v1/portal_sessions"))
            .bearer_auth(&key)
            .header("idempotency-key", "mint-1")
            .json(&json!({"org_id": org, "user_id": smith.id}))
    };
    let first = app.send_request(send()).await;
    let url = first.expect(200)["url"].as_str().expect("url").to_owned();
    let token = url.rsplit('/').next().expect("token").to_owned();
    let replay = app.send_request(send()).await;
    let body = replay.expect(200);
    assert_eq!(body["id"], first.body["id"], "the same session");
    assert!(body.get("url").is_none(), "a replay carries no link: {body}");
    assert_eq!(app.count("SELECT COUNT(*) FROM portal_sessions").await, 1);
    let as_text = match backend {
        Backend::Sqlite => "CAST(response_body AS TEXT)",
        Backend::Postgres => "convert_from(response_body, 'UTF8')",
    };
    let stored = app.strings(&format!("SELECT {as_text} FROM idempotency_keys WHERE key = 'mint-1'")).await;
    assert_eq!(stored.len(), 1);
    assert!(stored[0].contains("ps_") && !stored[0].contains(&token), "{}", stored[0]);
}
