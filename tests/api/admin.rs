//! User administration (issue 11): an `admin` server key finds users, fixes
//! a user stuck on the wrong active org, and deletes users once no team org
//! depends on them; the CLI does the first two.

use std::process::Command;

use serde_json::json;

use crate::billing_support::eventually;
use crate::helpers::{Backend, TestApp, spawn_app, unknown_id};
use crate::on_both_backends;

on_both_backends!(
    an_admin_key_finds_a_user_and_reassigns_their_active_org,
    deleting_the_last_owner_of_a_team_org_is_refused_naming_it,
    deleting_the_billing_admin_of_a_team_org_is_refused_naming_it,
    deleting_a_user_after_a_transfer_removes_memberships_and_personal_org_and_keeps_audit,
    the_cli_shows_a_user_and_sets_their_active_org,
);

/// An `admin` server key and a `write` one.
async fn keys(app: &TestApp) -> (String, String) {
    let admin = app.api_key().await;
    let res = app.post("/v1/api_keys", &admin, json!({"name": "backend", "scope": "write"})).await;
    let write = res.expect(201)["key"].as_str().expect("key").to_owned();
    (admin, write)
}

async fn an_admin_key_finds_a_user_and_reassigns_their_active_org(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let (admin, write) = keys(&app).await;
    let alice = app.user("alice@example.com").await;
    let team = app.team(&alice, "Agency").await;
    let stranger = app.user("mallory@example.com").await;

    let found = app.get("/v1/users?email=Alice@Example.com", &admin).await;
    let found = found.expect(200)["data"].as_array().expect("data").clone();
    assert_eq!(found.len(), 1);
    let shown = &found[0];
    assert_eq!(shown["id"], alice.id.as_str());
    assert_eq!(shown["personal_org_id"], alice.personal_org.as_str());
    assert_eq!(shown["active_org_id"], alice.personal_org.as_str());
    assert_eq!(shown["memberships"].as_array().expect("memberships").len(), 2);
    // The visit is written off the request.
    eventually(5, "alice's visit to be kept", || async {
        app.get(&format!("/v1/users/{}", alice.id), &admin).await.expect(200)["last_seen_at"].is_string()
    })
    .await;

    let path = format!("/v1/users/{}/active_org", alice.id);
    let res = app.put(&path, &admin, json!({"org_id": team})).await;
    assert_eq!(res.expect(200)["active_org_id"], team.as_str());
    assert_eq!(app.get("/v1/me", &alice.token).await.expect(200)["active_org_id"], team.as_str(), "alice sees it");
    // Not one of hers: refused, nothing changed.
    let res = app.put(&path, &admin, json!({"org_id": stranger.personal_org})).await;
    res.expect_error(400, "invalid_request");
    assert_eq!(res.body["error"]["param"], "org_id");
    assert_eq!(app.get("/v1/me", &alice.token).await.expect(200)["active_org_id"], team.as_str());
    // Only an admin key administers users.
    app.put(&path, &write, json!({"org_id": alice.personal_org})).await.expect_error(403, "forbidden");
    app.get(&format!("/v1/users/{}", alice.id), &write).await.expect_error(403, "forbidden");
    app.get(&format!("/v1/users/{}", alice.id), &alice.token).await.expect_error(403, "forbidden");
    app.get(&format!("/v1/users/{}", unknown_id("usr")), &admin).await.expect_error(404, "not_found");
    app.get("/v1/users", &admin).await.expect_error(400, "invalid_request");
}

async fn deleting_the_last_owner_of_a_team_org_is_refused_naming_it(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let (admin, _) = keys(&app).await;
    let alice = app.user("alice@example.com").await;
    let team = app.team(&alice, "Agency").await;
    let bob = app.user("bob@example.com").await;
    app.add_member(&team, &alice, &bob, "member").await;
    let res = app.delete(&format!("/v1/users/{}", alice.id), &admin).await;
    res.expect_error(409, "last_owner");
    let message = res.body["error"]["message"].as_str().expect("message");
    assert!(message.contains(&team) && !message.contains(&alice.personal_org), "names the team org only: {message}");
    // Nothing changed.
    assert_eq!(app.count(&format!("SELECT COUNT(*) FROM users WHERE id = '{}'", alice.id)).await, 1);
    assert_eq!(app.member_count(&team).await, 2);
    assert_eq!(app.count(&format!("SELECT COUNT(*) FROM orgs WHERE id = '{}'", alice.personal_org)).await, 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM events WHERE type = 'user.deleted'").await, 0);
}

async fn deleting_the_billing_admin_of_a_team_org_is_refused_naming_it(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let (admin, _) = keys(&app).await;
    let alice = app.user("alice@example.com").await;
    let team = app.team(&alice, "Agency").await;
    let bob = app.user("bob@example.com").await;
    app.add_member(&team, &alice, &bob, "admin").await;
    // Bob bought the plan (the state a checkout leaves).
    app.sql(&format!("UPDATE orgs SET billing_admin_user_id = '{}' WHERE id = '{team}'", bob.id)).await;
    let res = app.delete(&format!("/v1/users/{}", bob.id), &admin).await;
    res.expect_error(409, "billing_admin_must_transfer");
    assert!(res.body["error"]["message"].as_str().unwrap_or("").contains(&team), "{}", res.body);
    assert_eq!(app.member_count(&team).await, 2);
}

async fn deleting_a_user_after_a_transfer_removes_memberships_and_personal_org_and_keeps_audit(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let (admin, _) = keys(&app).await;
    let alice = app.user("alice@example.com").await;
    let team = app.team(&alice, "Agency").await;
    let bob = app.user("bob@example.com").await;
    app.add_member(&team, &alice, &bob, "member").await;
    app.patch(&format!("/v1/orgs/{team}/members/{}", bob.id), &alice.token, json!({"role": "owner"})).await.expect(200);
    let audit_before = app.count(&format!("SELECT COUNT(*) FROM events WHERE actor = '{}'", alice.id)).await;
    assert!(audit_before > 0);

    let res = app.delete(&format!("/v1/users/{}", alice.id), &admin).await;
    let body = res.expect(200);
    assert_eq!(body["deleted"], true);
    assert_eq!(body["left_orgs"], json!([team]));
    assert_eq!(body["personal_org_id"], alice.personal_org.as_str());
    assert_eq!(app.count(&format!("SELECT COUNT(*) FROM memberships WHERE user_id = '{}'", alice.id)).await, 0);
    assert_eq!(app.count(&format!("SELECT COUNT(*) FROM orgs WHERE id = '{}'", alice.personal_org)).await, 0);
    assert_eq!(app.count(&format!("SELECT COUNT(*) FROM users WHERE id = '{}'", alice.id)).await, 0);
    // The team carries on with bob; the audit log keeps alice's id.
    assert_eq!(app.role_of(&team, &bob, &bob).await.as_deref(), Some("owner"));
    assert_eq!(app.count(&format!("SELECT COUNT(*) FROM events WHERE actor = '{}'", alice.id)).await, audit_before);
    let deleted = app.strings("SELECT data FROM events WHERE type = 'user.deleted'").await;
    assert_eq!(deleted.len(), 1);
    assert!(deleted[0].contains(&alice.id), "{deleted:?}");
    app.get(&format!("/v1/users/{}", alice.id), &admin).await.expect_error(404, "not_found");
    app.delete(&format!("/v1/users/{}", alice.id), &admin).await.expect_error(404, "not_found");

    // Her next sign-in (same token, same subject) starts fresh.
    let me = app.get("/v1/me", &alice.token).await;
    let me = me.expect(200);
    assert_ne!(me["id"], alice.id.as_str());
    let memberships = me["memberships"].as_array().expect("memberships");
    assert_eq!(memberships.len(), 1, "only a new personal org: {me}");
    assert_ne!(memberships[0]["org_id"], alice.personal_org.as_str());
}

fn users_cli(app: &TestApp, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_orgplane"))
        .env_remove("ORGPLANE_CONFIG")
        .env("ORGPLANE_LOG", "warn")
        .arg("users")
        .args(args)
        .args(["--database-url", &app.database_url])
        .output()
        .expect("runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn the_cli_shows_a_user_and_sets_their_active_org(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let alice = app.user("alice@example.com").await;
    let team = app.team(&alice, "Agency").await;
    let (ok, out, err) = users_cli(&app, &["show", "alice@example.com"]);
    assert!(ok, "{err}");
    assert!(out.contains(&alice.id) && out.contains(&alice.personal_org) && out.contains(&team), "{out}");
    assert!(out.contains("Agency") && out.contains("owner"), "{out}");
    let (ok, out, err) = users_cli(&app, &["set-active-org", &alice.id, &team]);
    assert!(ok, "{err}");
    assert!(out.contains(&team), "{out}");
    eventually(5, "the server to show the new active org", || async {
        app.get("/v1/me", &alice.token).await.expect(200)["active_org_id"] == team.as_str()
    })
    .await;
    let stranger = app.user("mallory@example.com").await;
    let (ok, _, err) = users_cli(&app, &["set-active-org", &alice.id, &stranger.personal_org]);
    assert!(!ok && err.contains("not a member"), "{err}");
    let (ok, _, err) = users_cli(&app, &["show", "nobody@example.com"]);
    assert!(!ok && err.contains("no user"), "{err}");
}
