//! Tenant isolation: an org the caller does not belong to is `not_found` on
//! every org-scoped route, exactly like an org that does not exist, and
//! nothing about it changes.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, router_routes, spawn_app, unknown_id};
use crate::on_both_backends;

/// What a stranger could have changed in `org`.
#[derive(Debug, PartialEq)]
struct OrgState {
    org: Value,
    members: Value,
    invitations: Value,
    counts: Vec<(&'static str, i64)>,
}

async fn org_state(app: &TestApp, org: &str, owner_token: &str) -> OrgState {
    let get = |path: String| async move { app.get(&path, owner_token).await.expect(200).clone() };
    let mut org_body = get(format!("/v1/orgs/{org}")).await;
    // Only the fields a stranger could touch.
    org_body.as_object_mut().expect("object").remove("role");
    let mut counts = Vec::new();
    for table in ["events", "memberships", "invitations", "resources", "org_overrides", "subscriptions"] {
        counts.push((table, app.count(&format!("SELECT COUNT(*) FROM {table} WHERE org_id = '{org}'")).await));
    }
    counts.push(("orgs", app.count(&format!("SELECT COUNT(*) FROM orgs WHERE id = '{org}'")).await));
    OrgState {
        org: org_body,
        members: get(format!("/v1/orgs/{org}/members")).await,
        invitations: get(format!("/v1/orgs/{org}/invitations")).await,
        counts,
    }
}

/// The body a stranger would send to do harm with `method path`.
fn hostile_body(method: &str, route: &str) -> Option<Value> {
    let body = match (method, route) {
        ("get" | "delete", _) => return None,
        ("patch", "/v1/orgs/{org}") => {
            json!({"name": "Pwned", "billing_email": "mallory@example.com", "settings": {"evil": true}})
        }
        ("patch", "/v1/orgs/{org}/members/{user}") => json!({"role": "member"}),
        ("post", "/v1/orgs/{org}/invitations") => json!({"email": "mallory@example.com", "role": "owner"}),
        ("post", "/v1/orgs/{org}/check") => json!({"feature": "invitations"}),
        ("put", "/v1/orgs/{org}/overrides") => json!({"features": {"custom_roles": true}, "limits": {"seats": null}}),
        ("post", "/v1/orgs/{org}/resources") => json!({"type": "customers", "name": "Evil"}),
        _ => json!({}),
    };
    Some(body)
}

/// The routes the contract names as org-scoped: the parsed router must have them.
const REQUIRED: &[(&str, &str)] = &[
    ("get", "/v1/orgs/{org}"),
    ("patch", "/v1/orgs/{org}"),
    ("delete", "/v1/orgs/{org}"),
    ("get", "/v1/orgs/{org}/members"),
    ("patch", "/v1/orgs/{org}/members/{user}"),
    ("delete", "/v1/orgs/{org}/members/{user}"),
    ("post", "/v1/orgs/{org}/invitations"),
    ("get", "/v1/orgs/{org}/invitations"),
    ("delete", "/v1/orgs/{org}/invitations/{inv}"),
    ("post", "/v1/orgs/{org}/invitations/{inv}/resend"),
    ("get", "/v1/orgs/{org}/events"),
];

/// Every (method, route) of the router under `/v1/orgs/{org}`.
fn org_scoped_routes() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (path, methods) in router_routes() {
        if path.starts_with("/v1/orgs/{org}") {
            for m in methods {
                out.push((m, path.clone()));
            }
        }
    }
    for (m, p) in REQUIRED {
        assert!(out.iter().any(|(om, op)| om == m && op == p), "{m} {p} missing from the routes read: {out:?}");
    }
    out
}

fn concrete(route: &str, org: &str, user: &str, inv: &str, res: &str) -> String {
    let path = route.replace("{org}", org).replace("{user}", user).replace("{inv}", inv).replace("{res}", res);
    if path.ends_with("/access") { format!("{path}?user_id={user}") } else { path }
}

async fn a_stranger_gets_not_found_on_every_org_scoped_route_and_changes_nothing(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let alice = app.user("alice@example.com").await;
    let mallory = app.user("mallory@example.com").await;
    // Alice and one pending invitation: within the free plan's two seats.
    let team = app.team(&alice, "Downtown Clinic").await;
    let inv =
        app.post(&format!("/v1/orgs/{team}/invitations"), &alice.token, json!({"email": "carol@example.com"})).await;
    let inv = inv.expect(201).clone();
    let inv_id = inv["id"].as_str().expect("id").to_owned();
    let res = app
        .post(&format!("/v1/orgs/{team}/resources"), &alice.token, json!({"type": "customers", "name": "Acme"}))
        .await;
    let res_id = res.expect(201)["id"].as_str().expect("resource id").to_owned();
    let routes = org_scoped_routes();

    for org in [team.clone(), alice.personal_org.clone()] {
        let before = org_state(&app, &org, &alice.token).await;
        for (method, route) in &routes {
            let http_method = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
            // Aimed at alice (a member), and at mallory herself (leave, self-promote).
            for user in [&alice.id, &mallory.id] {
                let path = concrete(route, &org, user, &inv_id, &res_id);
                let body = hostile_body(method, route);
                let res = app.send(http_method.clone(), &path, Some(&mallory.token), body.clone()).await;
                assert_eq!(res.status.as_u16(), 404, "{http_method} {path} by a stranger: {}", res.body);
                res.expect_error(404, "not_found");
                // The same request on an org that does not exist looks the same.
                let ghost_path = concrete(route, &unknown_id("org"), user, &inv_id, &res_id);
                let res = app.send(http_method.clone(), &ghost_path, Some(&mallory.token), body).await;
                assert_eq!(res.status.as_u16(), 404, "{http_method} {ghost_path}: {}", res.body);
                res.expect_error(404, "not_found");
            }
        }
        assert_eq!(org_state(&app, &org, &alice.token).await, before, "a stranger changed {org}");
    }
    // Setting it as the active org is refused the same way.
    app.put("/v1/me/active_org", &mallory.token, json!({"org_id": team})).await.expect_error(404, "not_found");
    // Mallory gained nothing, and the invitation still works for its addressee.
    assert_eq!(app.count(&format!("SELECT COUNT(*) FROM memberships WHERE user_id = '{}'", mallory.id)).await, 1);
    let carol = app.user("carol@example.com").await;
    app.post("/v1/invitations/accept", &carol.token, json!({"token": inv["token"]})).await.expect(200);
}

async fn another_orgs_members_and_invitations_are_not_found_through_ones_own_org(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let alice = app.user("alice@example.com").await;
    let mallory = app.user("mallory@example.com").await;
    let bob = app.user("bob@example.com").await;
    let victim = app.team(&alice, "Victim").await;
    let inv =
        app.post(&format!("/v1/orgs/{victim}/invitations"), &alice.token, json!({"email": "bob@example.com"})).await;
    let inv = inv.expect(201).clone();
    let inv_id = inv["id"].as_str().expect("id").to_owned();
    let res = app
        .post(&format!("/v1/orgs/{victim}/resources"), &alice.token, json!({"type": "customers", "name": "Acme"}))
        .await;
    let res_id = res.expect(201)["id"].as_str().expect("resource id").to_owned();
    // Mallory owns an org of her own and aims its routes at the victim's rows.
    let own = app.team(&mallory, "Mallory's").await;
    let before = org_state(&app, &victim, &alice.token).await;
    let requests = [
        (Method::PATCH, format!("/v1/orgs/{own}/members/{}", alice.id), Some(json!({"role": "member"}))),
        (Method::DELETE, format!("/v1/orgs/{own}/members/{}", alice.id), None),
        (Method::DELETE, format!("/v1/orgs/{own}/invitations/{inv_id}"), None),
        (Method::POST, format!("/v1/orgs/{own}/invitations/{inv_id}/resend"), Some(json!({}))),
        (Method::DELETE, format!("/v1/orgs/{own}/resources/{res_id}"), None),
        (Method::PUT, format!("/v1/orgs/{own}/resources/{res_id}/grants/{}", mallory.id), None),
        (Method::GET, format!("/v1/orgs/{own}/resources/{res_id}/access?user_id={}", mallory.id), None),
    ];
    for (method, path, body) in requests {
        let res = app.send(method.clone(), &path, Some(&mallory.token), body).await;
        assert_eq!(res.status.as_u16(), 404, "{method} {path}: {}", res.body);
        res.expect_error(404, "not_found");
    }
    assert_eq!(org_state(&app, &victim, &alice.token).await, before);
    assert_eq!(app.owner_count(&victim).await, 1);
    assert_eq!(app.member_count(&own).await, 1);
    // The invitation was neither revoked nor re-sent: its token still admits bob.
    app.post("/v1/invitations/accept", &bob.token, json!({"token": inv["token"]})).await.expect(200);
    assert_eq!(app.role_of(&victim, &alice, &bob).await.as_deref(), Some("member"));
}

on_both_backends!(
    a_stranger_gets_not_found_on_every_org_scoped_route_and_changes_nothing,
    another_orgs_members_and_invitations_are_not_found_through_ones_own_org,
);
