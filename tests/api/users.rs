//! Users: just-in-time provisioning, the personal org, the active org.

use serde_json::json;

use crate::helpers::{Backend, spawn_app};
use crate::on_both_backends;

async fn first_request_provisions_the_user_with_a_personal_org(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let token = app.idp.token("alice-1", "Alice@Example.com");
    let me = app.get("/v1/me", &token).await;
    let body = me.expect(200);
    assert!(body["id"].as_str().is_some_and(|id| id.starts_with("usr_")), "{body}");
    assert_eq!(body["email"], "alice@example.com");
    assert_eq!(body["email_verified"], true);
    let memberships = body["memberships"].as_array().expect("memberships");
    assert_eq!(memberships.len(), 1);
    assert_eq!(memberships[0]["kind"], "personal");
    assert_eq!(memberships[0]["role"], "owner");
    assert_eq!(body["active_org_id"], memberships[0]["org_id"]);
}

async fn concurrent_first_requests_make_one_user_and_one_personal_org(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let token = app.idp.token("racer", "racer@example.com");
    let mut tasks = Vec::new();
    for i in 0..24 {
        let (http, url, token) =
            (app.http.clone(), app.url(if i % 2 == 0 { "/v1/me" } else { "/v1/me/personal_org" }), token.clone());
        tasks.push(tokio::spawn(async move {
            let req = if i % 2 == 0 { http.get(url) } else { http.post(url) };
            req.bearer_auth(token).send().await.expect("reaches").status().as_u16()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.expect("task"), 200);
    }
    assert_eq!(app.count("SELECT COUNT(*) FROM users").await, 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM orgs WHERE kind = 'personal'").await, 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM memberships").await, 1);
}

async fn ensure_personal_org_is_idempotent(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let alice = app.user("alice@example.com").await;
    let first = app.post("/v1/me/personal_org", &alice.token, json!({})).await;
    let second = app.post("/v1/me/personal_org", &alice.token, json!({})).await;
    assert_eq!(first.expect(200)["id"], alice.personal_org.as_str());
    assert_eq!(second.expect(200)["id"], alice.personal_org.as_str());
    assert_eq!(first.body["kind"], "personal");
}

async fn active_org_must_be_one_of_the_callers_orgs(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let alice = app.user("alice@example.com").await;
    let bob = app.user("bob@example.com").await;
    let team = app.team(&alice, "Downtown Clinic").await;
    let res = app.put("/v1/me/active_org", &alice.token, json!({"org_id": team})).await;
    assert_eq!(res.expect(200)["active_org_id"], team.as_str());
    let res = app.put("/v1/me/active_org", &bob.token, json!({"org_id": team})).await;
    res.expect_error(404, "not_found");
    let me = app.get("/v1/me", &bob.token).await;
    assert_eq!(me.expect(200)["active_org_id"], bob.personal_org.as_str());
}

async fn leaving_the_active_org_falls_back_to_the_personal_org(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let alice = app.user("alice@example.com").await;
    let bob = app.user("bob@example.com").await;
    let team = app.team(&alice, "Downtown Clinic").await;
    app.add_member(&team, &alice, &bob, "member").await;
    app.put("/v1/me/active_org", &bob.token, json!({"org_id": team})).await.expect(200);
    app.delete(&format!("/v1/orgs/{team}/members/{}", bob.id), &bob.token).await.expect(200);
    let me = app.get("/v1/me", &bob.token).await;
    assert_eq!(me.expect(200)["active_org_id"], bob.personal_org.as_str());
}

async fn the_users_email_follows_the_tokens_verified_email(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let first = app.idp.token("carol", "carol@old.example");
    app.get("/v1/me", &first).await.expect(200);
    let second = app.idp.token("carol", "carol@new.example");
    let me = app.get("/v1/me", &second).await;
    assert_eq!(me.expect(200)["email"], "carol@new.example");
    assert_eq!(app.count("SELECT COUNT(*) FROM users").await, 1);
}

async fn without_dev_mode_there_is_no_token_endpoint(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let res = app.send(reqwest::Method::POST, "/dev/token", None, Some(json!({"email": "dev@example.com"}))).await;
    res.expect_error(404, "not_found");
}

on_both_backends!(
    without_dev_mode_there_is_no_token_endpoint,
    first_request_provisions_the_user_with_a_personal_org,
    concurrent_first_requests_make_one_user_and_one_personal_org,
    ensure_personal_org_is_idempotent,
    active_org_must_be_one_of_the_callers_orgs,
    leaving_the_active_org_falls_back_to_the_personal_org,
    the_users_email_follows_the_tokens_verified_email,
);
