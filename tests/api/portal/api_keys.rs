//! The portal's API keys page (issue 11): a key made in the page is shown
//! once, listed without its secret, verified by the app's one call, and
//! revoked after a confirmation; the rules (permission, `api_tokens`,
//! personal orgs, input, CSRF) are the API's, and refusals change nothing.

use serde_json::{Value, json};

use super::{Page, clinic_with_a_member, portal_app, signed_in};
use crate::helpers::{Backend, TestApp};
use crate::on_both_backends;

on_both_backends!(
    a_key_made_in_the_portal_is_shown_once_listed_verified_and_revoked_after_confirming,
    a_member_without_the_permission_is_refused_and_a_form_without_csrf_changes_nothing,
    a_plan_without_api_tokens_and_a_personal_org_say_why_there_are_no_keys,
);

/// Turns the org's `api_tokens` feature on (a sales-led override).
async fn with_api_tokens(app: &TestApp, server_key: &str, org: &str) {
    let body = json!({"features": {"api_tokens": true}});
    app.put(&format!("/v1/orgs/{org}/overrides"), server_key, body).await.expect(200);
}

async fn verify(app: &TestApp, server_key: &str, key: &str) -> Value {
    app.post("/v1/api_keys/verify", server_key, json!({"key": key})).await.expect(200).clone()
}

async fn keys_of(app: &TestApp, org: &str) -> i64 {
    app.count(&format!("SELECT COUNT(*) FROM org_api_keys WHERE org_id = '{org}'")).await
}

/// The text of the element with `id` (up to its closing tag).
fn element<'a>(page: &'a Page, id: &str) -> &'a str {
    let marker = format!("id=\"{id}\">");
    let at = page.body.find(&marker).unwrap_or_else(|| panic!("no #{id} in {}", page.body)) + marker.len();
    page.body[at..].split('<').next().expect("text")
}

async fn a_key_made_in_the_portal_is_shown_once_listed_verified_and_revoked_after_confirming(backend: Backend) {
    let Some(app) = portal_app(backend).await else { return };
    let server = app.api_key().await;
    let (smith, _johnson, org) = clinic_with_a_member(&app).await;
    with_api_tokens(&app, &server, &org).await;
    let (mut browser, overview) = signed_in(&app, &server, &org, &smith).await;
    let path = format!("/portal/orgs/{org}/api_keys");
    assert!(overview.body.contains(&format!("href=\"{path}\">API keys<")), "the tab is shown to an owner");
    let empty = browser.get(&path).await;
    assert_eq!(empty.status, 200, "{}", empty.body);
    assert!(empty.body.contains("id=\"no-keys\"") && empty.body.contains("value=\"create\""), "{}", empty.body);
    let csrf = overview.csrf();

    // Made: shown once, with the note to copy it now.
    let fields =
        [("action", "create"), ("name", "zapier"), ("expires_in", "30d"), ("scopes", "invoices:read, invoices:write")];
    let made = browser.submit(&path, &csrf, &fields).await;
    assert_eq!(made.status, 200, "{}", made.body);
    assert!(made.body.contains("Copy it now: it is shown only this once"), "{}", made.body);
    let key = element(&made, "new-key").to_owned();
    assert!(key.starts_with("ok_") && key.len() > 20, "{key}");

    // Listed without the secret, as the API lists it.
    let listed = browser.get(&path).await;
    assert!(!listed.body.contains(&key), "the key is shown once only");
    assert!(listed.body.contains(&format!("<code>{}…</code>", &key[..11])), "{}", listed.body);
    assert!(listed.body.contains("invoices:read, invoices:write"));
    let api = app.get(&format!("/v1/orgs/{org}/api_keys"), &smith.token).await;
    let keys = api.expect(200)["data"].as_array().expect("data").clone();
    assert_eq!(keys.len(), 1);
    let id = keys[0]["id"].as_str().expect("id").to_owned();
    assert_eq!(keys[0]["name"], "zapier");
    assert_eq!(keys[0]["scopes"], json!(["invoices:read", "invoices:write"]));
    assert_eq!(keys[0]["created_by"], smith.id.as_str());
    let expires = keys[0]["expires_at"].as_str().expect("expires in 30 days");
    assert!(listed.body.contains(&expires[..10]), "the expiry date is listed");
    assert!(listed.body.contains(&format!("data-key=\"{id}\"")));
    let created = app.strings("SELECT actor FROM events WHERE type = 'org_api_key.created'").await;
    assert_eq!(created, vec![smith.id.clone()], "the audit event names the member");

    // The app verifies what its customer sends.
    let answer = verify(&app, &server, &key).await;
    assert_eq!(answer["valid"], true, "{answer}");
    assert_eq!(answer["org_id"], org.as_str());
    assert_eq!(answer["key_id"], id.as_str());
    assert_eq!(answer["scopes"], json!(["invoices:read", "invoices:write"]));

    // Revoke asks first; asking changes nothing.
    let asked = browser.get(&format!("{path}?revoke={id}")).await;
    assert_eq!(asked.status, 200);
    assert!(asked.body.contains("id=\"confirm-revoke\"") && asked.body.contains("Revoke zapier?"), "{}", asked.body);
    assert_eq!(verify(&app, &server, &key).await["valid"], true);
    let revoked = browser.submit(&path, &csrf, &[("action", "revoke"), ("key_id", &id)]).await;
    assert_eq!(revoked.status, 200, "{}", revoked.body);
    assert!(revoked.body.contains("API key zapier revoked"), "{}", revoked.body);
    assert!(element(&revoked, "flash").contains("revoked"));
    assert_eq!(verify(&app, &server, &key).await, json!({"valid": false, "reason": "revoked"}));
    let revokes = app.strings("SELECT actor FROM events WHERE type = 'org_api_key.revoked'").await;
    assert_eq!(revokes, vec![smith.id.clone()]);
    let gone = browser.get(&format!("{path}?revoke={id}")).await;
    assert!(gone.body.contains("can't be revoked") && !gone.body.contains("id=\"confirm-revoke\""), "{}", gone.body);

    // Bad input is refused in words, with the API's status, and makes nothing.
    for (fields, words) in [
        (vec![("action", "create"), ("name", "  ")], "name is 1 to 100 characters"),
        (vec![("action", "create"), ("name", "x"), ("expires_in", "forever")], "is not a lifetime"),
        (vec![("action", "create"), ("name", "x"), ("scopes", "a/b")], "scope"),
        (vec![("action", "revoke"), ("key_id", "oky_nothing")], "choose a key"),
    ] {
        let res = browser.submit(&path, &csrf, &fields).await;
        assert_eq!(res.status, 400, "{fields:?}: {}", res.body);
        assert!(res.body.contains("Please check what you entered") && res.body.contains(words), "{}", res.body);
    }
    assert_eq!(keys_of(&app, &org).await, 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM events WHERE type LIKE 'org_api_key.%'").await, 2);
}

async fn a_member_without_the_permission_is_refused_and_a_form_without_csrf_changes_nothing(backend: Backend) {
    let Some(app) = portal_app(backend).await else { return };
    let server = app.api_key().await;
    let (smith, johnson, org) = clinic_with_a_member(&app).await;
    with_api_tokens(&app, &server, &org).await;
    let path = format!("/portal/orgs/{org}/api_keys");

    // A plain member sees no tab and gets the portal's refusal.
    let (mut member, member_page) = signed_in(&app, &server, &org, &johnson).await;
    assert!(!member_page.body.contains(&path), "the tab is not shown to a member");
    let refused = member.get(&path).await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(refused.body.contains("role=\"alert\"") && refused.body.contains("api_keys:manage"), "{}", refused.body);
    assert!(!refused.body.contains("value=\"create\""));
    let forged = member.submit(&path, &member_page.csrf(), &[("action", "create"), ("name", "mine")]).await;
    assert_eq!(forged.status, 403);
    assert_eq!(keys_of(&app, &org).await, 0);

    // The owner's form without (or with a wrong) CSRF token changes nothing.
    let (mut owner, overview) = signed_in(&app, &server, &org, &smith).await;
    let origin = app.base.clone();
    let create = [("action", "create"), ("name", "zapier")];
    let missing = owner.post(&path, &create, Some(&origin)).await;
    assert_eq!(missing.status, 403);
    assert!(missing.body.contains("CSRF"), "{}", missing.body);
    let wrong = [("csrf", "not-the-token"), ("action", "create"), ("name", "zapier")];
    assert_eq!(owner.post(&path, &wrong, Some(&origin)).await.status, 403);
    assert_eq!(keys_of(&app, &org).await, 0);
    assert_eq!(app.count("SELECT COUNT(*) FROM events WHERE type LIKE 'org_api_key.%'").await, 0);

    // With the token it works; a revoke without it leaves the key valid.
    let csrf = overview.csrf();
    let made = owner.submit(&path, &csrf, &create).await;
    assert_eq!(made.status, 200, "{}", made.body);
    let key = element(&made, "new-key").to_owned();
    let id = app.strings(&format!("SELECT id FROM org_api_keys WHERE org_id = '{org}'")).await.remove(0);
    let revoke = [("action", "revoke"), ("key_id", id.as_str())];
    assert_eq!(owner.post(&path, &revoke, Some(&origin)).await.status, 403);
    assert_eq!(verify(&app, &server, &key).await["valid"], true);
    assert_eq!(app.count("SELECT COUNT(*) FROM events WHERE type = 'org_api_key.revoked'").await, 0);
}

async fn a_plan_without_api_tokens_and_a_personal_org_say_why_there_are_no_keys(backend: Backend) {
    let Some(app) = portal_app(backend).await else { return };
    let server = app.api_key().await;
    let (smith, _johnson, org) = clinic_with_a_member(&app).await;

    // The free plan: the reason and the way to upgrade, in the page.
    let (mut browser, overview) = signed_in(&app, &server, &org, &smith).await;
    let path = format!("/portal/orgs/{org}/api_keys");
    let page = browser.get(&path).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("id=\"keys-unavailable\""), "{}", page.body);
    assert!(
        page.body.contains("Your plan doesn't include API keys") && page.body.contains("api_tokens"),
        "{}",
        page.body
    );
    assert!(page.body.contains(&format!("href=\"/portal/orgs/{org}/billing\">See plans and upgrade")));
    assert!(!page.body.contains("value=\"create\""), "no form where no key can be made");
    // A forged create is refused by the API's rule.
    let forged = browser.submit(&path, &overview.csrf(), &[("action", "create"), ("name", "zapier")]).await;
    assert_eq!(forged.status, 403);
    assert!(forged.body.contains("Your plan doesn&#39;t include this."), "{}", forged.body);
    assert_eq!(keys_of(&app, &org).await, 0);

    // A personal org: why, without a table or a form.
    let personal = smith.personal_org.clone();
    let (mut own, _) = signed_in(&app, &server, &personal, &smith).await;
    let page = own.get(&format!("/portal/orgs/{personal}/api_keys")).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("API keys are for team organizations"), "{}", page.body);
    assert!(!page.body.contains("id=\"keys\"") && !page.body.contains("value=\"create\""));
    assert_eq!(keys_of(&app, &personal).await, 0);
}
