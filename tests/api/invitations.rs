//! Invitations: create, list, revoke, resend, accept and decline; who may
//! accept, when, and only once.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::helpers::{Backend, Idp, TestApp, TestUser, read_res, spawn_app, spawn_app_with};
use crate::on_both_backends;

fn invitations_path(org: &str) -> String {
    format!("/v1/orgs/{org}/invitations")
}

/// Creates an invitation and returns the whole response body.
async fn create(app: &TestApp, org: &str, by: &TestUser, email: &str, role: &str) -> Value {
    let res = app.post(&invitations_path(org), &by.token, json!({"email": email, "role": role})).await;
    res.expect(201).clone()
}

async fn pending(app: &TestApp, org: &str, by: &TestUser) -> Vec<Value> {
    let res = app.get(&invitations_path(org), &by.token).await;
    res.expect(200)["data"].as_array().expect("data").clone()
}

async fn invitation_count(app: &TestApp, org: &str) -> i64 {
    app.count(&format!("SELECT COUNT(*) FROM invitations WHERE org_id = '{org}'")).await
}

async fn status_of(app: &TestApp, invitation: &str) -> String {
    // Status by SQL: the API lists only pending ones.
    for status in ["pending", "accepted", "declined", "revoked"] {
        let n = app
            .count(&format!("SELECT COUNT(*) FROM invitations WHERE id = '{invitation}' AND status = '{status}'"))
            .await;
        if n == 1 {
            return status.to_owned();
        }
    }
    panic!("no invitation {invitation}");
}

async fn accept(app: &TestApp, user: &TestUser, token: &str) -> crate::helpers::Res {
    app.post("/v1/invitations/accept", &user.token, json!({"token": token})).await
}

async fn creating_an_invitation_returns_its_token_once(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let alice = app.user("alice@example.com").await;
    let team = app.team(&alice, "Downtown Clinic").await;
    let inv = create(&app, &team, &alice, "Dr.Johnson@Clinic.Example", "admin").await;
    let id = inv["id"].as_str().expect("id").to_owned();
    assert!(id.starts_with("inv_"), "{inv}");
    assert_eq!(inv["org_id"], team.as_str());
    assert_eq!(inv["email"], "dr.johnson@clinic.example");
    assert_eq!(inv["role"], "admin");
    assert_eq!(inv["status"], "pending");
    assert_eq!(inv["invited_by"], alice.id.as_str());
    assert!(inv["expires_at"].is_string(), "{inv}");
    let token = inv["token"].as_str().expect("the token comes with the creation").to_owned();
    assert!(token.len() >= 32, "{token}");

    let listed = pending(&app, &team, &alice).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], id.as_str());
    assert_eq!(listed[0]["email"], "dr.johnson@clinic.example");
    assert!(listed[0].get("token").is_none(), "the list never shows the token: {}", listed[0]);
    // Nor does the database hold it in plain text.
    assert_eq!(app.count(&format!("SELECT COUNT(*) FROM invitations WHERE token_hash = '{token}'")).await, 0);
    // The revoke response carries no token either.
    let revoked = app.delete(&format!("{}/{id}", invitations_path(&team)), &alice.token).await;
    assert!(revoked.expect(200).get("token").is_none());
    // Without a role, the invitee becomes a member.
    let inv = app.post(&invitations_path(&team), &alice.token, json!({"email": "nurse@clinic.example"})).await;
    assert_eq!(inv.expect(201)["role"], "member");
}

async fn a_personal_org_takes_no_invitations(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let alice = app.user("alice@example.com").await;
    let res = app
        .post(
            &invitations_path(&alice.personal_org),
            &alice.token,
            json!({"email": "bob@example.com", "role": "member"}),
        )
        .await;
    res.expect_error(403, "personal_org");
    assert_eq!(invitation_count(&app, &alice.personal_org).await, 0);
    assert_eq!(app.count("SELECT COUNT(*) FROM invitations").await, 0);
}

/// `first` is the org's one invitation, pending and unchanged.
async fn assert_only_pending(app: &TestApp, org: &str, by: &TestUser, first: &Value) {
    let listed = pending(app, org, by).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], first["id"]);
    assert_eq!(listed[0]["role"], "member");
    assert_eq!(invitation_count(app, org).await, 1);
}

async fn a_second_pending_invitation_for_the_same_email_conflicts(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let alice = app.user("alice@example.com").await;
    let team = app.team(&alice, "Downtown Clinic").await;
    let first = create(&app, &team, &alice, "bob@example.com", "member").await;
    // With seats to spare (an override lifts the free plan's two)...
    let key = app.api_key().await;
    app.put(&format!("/v1/orgs/{team}/overrides"), &key, json!({"limits": {"seats": null}})).await.expect(200);
    for email in ["bob@example.com", "BOB@Example.com"] {
        let res = app.post(&invitations_path(&team), &alice.token, json!({"email": email, "role": "admin"})).await;
        res.expect_error(409, "conflict");
    }
    assert_only_pending(&app, &team, &alice, &first).await;
    // ...and on the plain free plan, whose two seats alice and bob's invitation
    // fill: a duplicate would take no seat, so it is still the conflict.
    app.put(&format!("/v1/orgs/{team}/overrides"), &key, json!({})).await.expect(200);
    let res =
        app.post(&invitations_path(&team), &alice.token, json!({"email": "bob@example.com", "role": "admin"})).await;
    res.expect_error(409, "conflict");
    assert_only_pending(&app, &team, &alice, &first).await;
}

async fn inviting_an_existing_member_conflicts(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let alice = app.user("alice@example.com").await;
    let bob = app.user("bob@example.com").await;
    let team = app.team(&alice, "Downtown Clinic").await;
    app.add_member(&team, &alice, &bob, "member").await;
    let res =
        app.post(&invitations_path(&team), &alice.token, json!({"email": "Bob@Example.com", "role": "admin"})).await;
    res.expect_error(409, "conflict");
    // The owner's own address too.
    let res =
        app.post(&invitations_path(&team), &alice.token, json!({"email": "alice@example.com", "role": "member"})).await;
    res.expect_error(409, "conflict");
    assert!(pending(&app, &team, &alice).await.is_empty());
    assert_eq!(invitation_count(&app, &team).await, 1, "only the accepted one");
    assert_eq!(app.role_of(&team, &alice, &bob).await.as_deref(), Some("member"));
}

async fn accepting_with_the_matching_verified_email_adds_the_member(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let alice = app.user("alice@example.com").await;
    let bob = app.user("bob@example.com").await;
    let team = app.team(&alice, "Downtown Clinic").await;
    let inv = create(&app, &team, &alice, "BOB@example.com", "admin").await;
    let res = accept(&app, &bob, inv["token"].as_str().expect("token")).await;
    let body = res.expect(200);
    assert_eq!(body["id"], inv["id"]);
    assert_eq!(body["status"], "accepted");
    assert!(body.get("token").is_none());
    assert_eq!(app.role_of(&team, &alice, &bob).await.as_deref(), Some("admin"));
    let me = app.get("/v1/me", &bob.token).await;
    let memberships = me.expect(200)["memberships"].as_array().expect("memberships").clone();
    assert!(memberships.iter().any(|m| m["org_id"] == team.as_str() && m["role"] == "admin"), "{memberships:?}");
    assert!(pending(&app, &team, &alice).await.is_empty());
    assert_eq!(status_of(&app, inv["id"].as_str().expect("id")).await, "accepted");
    let events = app.get(&format!("/v1/orgs/{team}/events"), &alice.token).await;
    let types: Vec<String> = events.expect(200)["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|e| e["type"].as_str().unwrap_or("").to_owned())
        .collect();
    assert!(
        types.contains(&"invitation.accepted".to_owned()) && types.contains(&"member.added".to_owned()),
        "{types:?}"
    );
}

/// Everything an accept attempt could have changed, to compare before and after.
async fn snapshot(app: &TestApp, org: &str, invitation: &str) -> (i64, String, i64) {
    (app.member_count(org).await, status_of(app, invitation).await, app.count("SELECT COUNT(*) FROM memberships").await)
}

async fn accepting_with_another_email_is_forbidden(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let alice = app.user("alice@example.com").await;
    let mallory = app.user("mallory@example.com").await;
    let team = app.team(&alice, "Downtown Clinic").await;
    let inv = create(&app, &team, &alice, "bob@example.com", "member").await;
    let id = inv["id"].as_str().expect("id");
    let before = snapshot(&app, &team, id).await;
    let res = accept(&app, &mallory, inv["token"].as_str().expect("token")).await;
    res.expect_error(403, "forbidden");
    assert_eq!(snapshot(&app, &team, id).await, before);
    assert_eq!(before.1, "pending");
    app.get(&format!("/v1/orgs/{team}"), &mallory.token).await.expect_error(404, "not_found");
    // Nor may she decline it for Bob.
    let res = app.post("/v1/invitations/decline", &mallory.token, json!({"token": inv["token"]})).await;
    res.expect_error(403, "forbidden");
    assert_eq!(snapshot(&app, &team, id).await, before);
}

async fn accepting_with_an_unverified_email_is_forbidden(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let alice = app.user("alice@example.com").await;
    let mut claims = Idp::claims("sub-bob", "bob@example.com");
    claims["email_verified"] = json!(false);
    let bob = app.user_with_claims(&claims).await;
    let team = app.team(&alice, "Downtown Clinic").await;
    let inv = create(&app, &team, &alice, "bob@example.com", "member").await;
    let id = inv["id"].as_str().expect("id");
    let before = snapshot(&app, &team, id).await;
    let res = accept(&app, &bob, inv["token"].as_str().expect("token")).await;
    res.expect_error(403, "forbidden");
    assert_eq!(snapshot(&app, &team, id).await, before);
    // Without the claim at all, the issuer's default (not verified) applies.
    let mut claims = Idp::claims("sub-bob", "bob@example.com");
    claims.as_object_mut().expect("object").remove("email_verified");
    let token = app.idp.rsa.sign(&claims).expect("sign");
    let res = app.post("/v1/invitations/accept", &token, json!({"token": inv["token"]})).await;
    res.expect_error(403, "forbidden");
    assert_eq!(snapshot(&app, &team, id).await, before);
}

async fn an_expired_invitation_cannot_be_accepted(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let alice = app.user("alice@example.com").await;
    let bob = app.user("bob@example.com").await;
    let team = app.team(&alice, "Downtown Clinic").await;
    let inv = create(&app, &team, &alice, "bob@example.com", "member").await;
    let id = inv["id"].as_str().expect("id");
    app.sql("UPDATE invitations SET expires_at = 0").await;
    let before = snapshot(&app, &team, id).await;
    let res = accept(&app, &bob, inv["token"].as_str().expect("token")).await;
    res.expect_error(400, "invitation_expired");
    assert_eq!(snapshot(&app, &team, id).await, before);
    assert_eq!(app.role_of(&team, &alice, &bob).await, None);
    // A new invitation for the same address may replace the expired one.
    let again = create(&app, &team, &alice, "bob@example.com", "member").await;
    accept(&app, &bob, again["token"].as_str().expect("token")).await.expect(200);
    assert_eq!(app.role_of(&team, &alice, &bob).await.as_deref(), Some("member"));
}

async fn a_revoked_invitation_cannot_be_accepted(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let alice = app.user("alice@example.com").await;
    let bob = app.user("bob@example.com").await;
    let team = app.team(&alice, "Downtown Clinic").await;
    let inv = create(&app, &team, &alice, "bob@example.com", "member").await;
    let id = inv["id"].as_str().expect("id");
    let res = app.delete(&format!("{}/{id}", invitations_path(&team)), &alice.token).await;
    let body = res.expect(200);
    assert_eq!(body["id"], id);
    assert_eq!(body["status"], "revoked");
    assert!(pending(&app, &team, &alice).await.is_empty());
    let before = snapshot(&app, &team, id).await;
    let res = accept(&app, &bob, inv["token"].as_str().expect("token")).await;
    res.expect_error(409, "conflict");
    assert_eq!(snapshot(&app, &team, id).await, before);
    assert_eq!(before.1, "revoked");
    // Revoking or re-sending it again is a conflict too.
    app.delete(&format!("{}/{id}", invitations_path(&team)), &alice.token).await.expect_error(409, "conflict");
    app.post(&format!("{}/{id}/resend", invitations_path(&team)), &alice.token, json!({}))
        .await
        .expect_error(409, "conflict");
}

async fn resending_gives_a_new_token_and_voids_the_old_one(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let alice = app.user("alice@example.com").await;
    let bob = app.user("bob@example.com").await;
    let team = app.team(&alice, "Downtown Clinic").await;
    let inv = create(&app, &team, &alice, "bob@example.com", "member").await;
    let id = inv["id"].as_str().expect("id");
    let old = inv["token"].as_str().expect("token");
    // Two days of its week gone: a resend starts a new one.
    app.sql(&format!("UPDATE invitations SET expires_at = expires_at - 172800000 WHERE id = '{id}'")).await;
    let aged = pending(&app, &team, &alice).await;
    let res = app.post(&format!("{}/{id}/resend", invitations_path(&team)), &alice.token, json!({})).await;
    let resent = res.expect(200).clone();
    assert_eq!(resent["id"], id);
    assert_eq!(resent["status"], "pending");
    let new = resent["token"].as_str().expect("a resend carries the new token");
    assert_ne!(new, old);
    let at = |v: &Value| {
        let text = v.as_str().expect("a timestamp");
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).expect("RFC 3339")
    };
    let gained = at(&resent["expires_at"]) - at(&aged[0]["expires_at"]);
    assert!(gained >= time::Duration::hours(47), "a new expiry: {resent} after {}", aged[0]);
    assert_eq!(pending(&app, &team, &alice).await[0]["expires_at"], resent["expires_at"]);

    let before = snapshot(&app, &team, id).await;
    let res = accept(&app, &bob, old).await;
    res.expect_error(404, "not_found");
    assert_eq!(snapshot(&app, &team, id).await, before);
    accept(&app, &bob, new).await.expect(200);
    assert_eq!(app.role_of(&team, &alice, &bob).await.as_deref(), Some("member"));
    assert_eq!(invitation_count(&app, &team).await, 1, "a resend keeps the invitation");
}

async fn declining_an_invitation_leaves_the_org_unchanged(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let alice = app.user("alice@example.com").await;
    let bob = app.user("bob@example.com").await;
    let team = app.team(&alice, "Downtown Clinic").await;
    let inv = create(&app, &team, &alice, "bob@example.com", "member").await;
    let token = inv["token"].as_str().expect("token");
    let res = app.post("/v1/invitations/decline", &bob.token, json!({"token": token})).await;
    let body = res.expect(200);
    assert_eq!(body["id"], inv["id"]);
    assert_eq!(body["status"], "declined");
    assert_eq!(app.member_count(&team).await, 1);
    assert!(pending(&app, &team, &alice).await.is_empty());
    // A declined invitation can't be accepted afterwards.
    accept(&app, &bob, token).await.expect_error(409, "conflict");
    assert_eq!(app.member_count(&team).await, 1);
    app.get(&format!("/v1/orgs/{team}"), &bob.token).await.expect_error(404, "not_found");
}

async fn one_invitation_accepted_concurrently_admits_exactly_once(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let alice = app.user("alice@example.com").await;
    let bob = app.user("bob@example.com").await;
    let team = app.team(&alice, "Downtown Clinic").await;
    let token = app.invite(&team, &alice, "bob@example.com", "member").await;
    let mut tasks = Vec::new();
    for _ in 0..24 {
        let req =
            app.http.post(app.url("/v1/invitations/accept")).bearer_auth(&bob.token).json(&json!({"token": token}));
        tasks.push(tokio::spawn(async move { read_res(req.send().await.expect("reaches")).await }));
    }
    let mut by_status: BTreeMap<u16, usize> = BTreeMap::new();
    for t in tasks {
        let res = t.await.expect("task");
        if res.status.as_u16() != 200 {
            res.expect_error(409, "conflict");
        }
        *by_status.entry(res.status.as_u16()).or_default() += 1;
    }
    assert_eq!(by_status, BTreeMap::from([(200, 1), (409, 23)]));
    assert_eq!(
        app.count(&format!("SELECT COUNT(*) FROM memberships WHERE org_id = '{team}' AND user_id = '{}'", bob.id))
            .await,
        1
    );
    assert_eq!(app.member_count(&team).await, 2);
    assert_eq!(
        app.count(&format!("SELECT COUNT(*) FROM events WHERE org_id = '{team}' AND type = 'member.added'")).await,
        1,
        "one membership, one event"
    );
}

async fn an_unknown_role_is_refused(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let alice = app.user("alice@example.com").await;
    let team = app.team(&alice, "Downtown Clinic").await;
    for role in ["wizard", "Owner", ""] {
        let res =
            app.post(&invitations_path(&team), &alice.token, json!({"email": "bob@example.com", "role": role})).await;
        res.expect_error(400, "invalid_request");
        assert_eq!(res.body["error"]["param"], "role", "{}", res.body);
    }
    assert_eq!(invitation_count(&app, &team).await, 0);
}

async fn a_configured_custom_role_can_be_invited(backend: Backend) {
    let Some(app) = spawn_app_with(backend, |config| {
        config.roles.insert(
            "support".into(),
            orgplane_core::roles::CustomRoleConfig { permissions: vec!["members:invite".into()], description: None },
        );
    })
    .await
    else {
        return;
    };
    let alice = app.user("alice@example.com").await;
    let bob = app.user("bob@example.com").await;
    let team = app.team(&alice, "Downtown Clinic").await;
    // Custom roles are a feature the free plan lacks: refused, nothing stored.
    let res =
        app.post(&invitations_path(&team), &alice.token, json!({"email": "bob@example.com", "role": "support"})).await;
    res.expect_error(403, "feature_not_entitled");
    assert_eq!(invitation_count(&app, &team).await, 0);
    // A sales-led override grants it.
    let key = app.api_key().await;
    let res = app.put(&format!("/v1/orgs/{team}/overrides"), &key, json!({"features": {"custom_roles": true}})).await;
    res.expect(200);
    let inv = create(&app, &team, &alice, "bob@example.com", "support").await;
    assert_eq!(inv["role"], "support");
    let res = app
        .post(&invitations_path(&team), &alice.token, json!({"email": "carol@example.com", "role": "supporter"}))
        .await;
    res.expect_error(400, "invalid_request");
    assert_eq!(res.body["error"]["param"], "role");
    assert_eq!(pending(&app, &team, &alice).await.len(), 1);
    // Bob joins as support and holds exactly `members:invite`.
    accept(&app, &bob, inv["token"].as_str().expect("token")).await.expect(200);
    assert_eq!(app.role_of(&team, &alice, &bob).await.as_deref(), Some("support"));
    app.get(&invitations_path(&team), &bob.token).await.expect(200);
    app.patch(&format!("/v1/orgs/{team}"), &bob.token, json!({"name": "x"})).await.expect_error(403, "forbidden");
}

async fn inviting_without_the_invitations_feature_is_refused(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let alice = app.user("alice@example.com").await;
    let team = app.team(&alice, "Downtown Clinic").await;
    let key = app.api_key().await;
    let res = app.put(&format!("/v1/orgs/{team}/overrides"), &key, json!({"features": {"invitations": false}})).await;
    res.expect(200);
    let res =
        app.post(&invitations_path(&team), &alice.token, json!({"email": "bob@example.com", "role": "member"})).await;
    res.expect_error(403, "feature_not_entitled");
    assert_eq!(res.body["error"]["param"], "invitations", "{}", res.body);
    assert_eq!(invitation_count(&app, &team).await, 0);
}

async fn inviting_past_the_seat_limit_is_refused(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let alice = app.user("alice@example.com").await;
    let team = app.team(&alice, "Downtown Clinic").await;
    // The free plan has two seats: alice and one pending invitation fill them.
    create(&app, &team, &alice, "bob@example.com", "member").await;
    let res =
        app.post(&invitations_path(&team), &alice.token, json!({"email": "carol@example.com", "role": "member"})).await;
    res.expect_error(403, "limit_reached");
    assert_eq!(res.body["error"]["param"], "seats", "{}", res.body);
    assert_eq!(invitation_count(&app, &team).await, 1);
}

async fn concurrent_invitations_never_overshoot_the_seats(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let alice = app.user("alice@example.com").await;
    let team = app.team(&alice, "Downtown Clinic").await;
    let mut tasks = Vec::new();
    for i in 0..12 {
        let req = app
            .http
            .post(app.url(&invitations_path(&team)))
            .bearer_auth(&alice.token)
            .json(&json!({"email": format!("staff{i}@clinic.example"), "role": "member"}));
        tasks.push(tokio::spawn(async move { read_res(req.send().await.expect("reaches")).await }));
    }
    let mut created = 0;
    for t in tasks {
        let res = t.await.expect("task");
        if res.status.as_u16() == 201 {
            created += 1;
        } else {
            res.expect_error(403, "limit_reached");
        }
    }
    assert_eq!(created, 1, "alice holds one of the free plan's two seats");
    assert_eq!(invitation_count(&app, &team).await, 1);
}

async fn accepting_past_the_seat_limit_is_refused(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let alice = app.user("alice@example.com").await;
    let bob = app.user("bob@example.com").await;
    let carol = app.user("carol@example.com").await;
    let team = app.team(&alice, "Downtown Clinic").await;
    // Two invitations sent while an override lifted the seat limit...
    let key = app.api_key().await;
    app.put(&format!("/v1/orgs/{team}/overrides"), &key, json!({"limits": {"seats": null}})).await.expect(200);
    let for_bob = create(&app, &team, &alice, "bob@example.com", "member").await;
    let for_carol = create(&app, &team, &alice, "carol@example.com", "member").await;
    // ...then the org is back to the free plan's two seats.
    app.put(&format!("/v1/orgs/{team}/overrides"), &key, json!({})).await.expect(200);
    accept(&app, &bob, for_bob["token"].as_str().expect("token")).await.expect(200);
    let id = for_carol["id"].as_str().expect("id");
    let before = snapshot(&app, &team, id).await;
    let res = accept(&app, &carol, for_carol["token"].as_str().expect("token")).await;
    res.expect_error(403, "limit_reached");
    assert_eq!(snapshot(&app, &team, id).await, before);
    assert_eq!(before.1, "pending");
    assert_eq!(app.member_count(&team).await, 2);
}

async fn an_idempotent_replay_never_stores_or_repeats_the_accept_token(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let alice = app.user("alice@example.com").await;
    let team = app.team(&alice, "Downtown Clinic").await;
    let send = || async {
        let res = app
            .http
            .post(app.url(&invitations_path(&team)))
            .bearer_auth(&alice.token)
            .header("idempotency-key", "invite-bob-1")
            .json(&json!({"email": "bob@example.com"}))
            .send()
            .await
            .expect("reaches");
        read_res(res).await
    };
    let first = send().await;
    let token = first.expect(201)["token"].as_str().expect("token once").to_owned();
    let replay = send().await;
    assert_eq!(replay.expect(201)["id"], first.body["id"], "the replay is the same invitation");
    assert!(replay.body.get("token").is_none(), "the replay does not repeat the secret: {}", replay.body);
    assert_eq!(
        app.count(&format!("SELECT COUNT(*) FROM idempotency_keys WHERE response_body LIKE '%{token}%'")).await,
        0,
        "the token is not stored in plain text"
    );
    assert_eq!(app.count("SELECT COUNT(*) FROM invitations").await, 1);
}

on_both_backends!(
    an_idempotent_replay_never_stores_or_repeats_the_accept_token,
    creating_an_invitation_returns_its_token_once,
    a_personal_org_takes_no_invitations,
    a_second_pending_invitation_for_the_same_email_conflicts,
    inviting_an_existing_member_conflicts,
    accepting_with_the_matching_verified_email_adds_the_member,
    accepting_with_another_email_is_forbidden,
    accepting_with_an_unverified_email_is_forbidden,
    an_expired_invitation_cannot_be_accepted,
    a_revoked_invitation_cannot_be_accepted,
    resending_gives_a_new_token_and_voids_the_old_one,
    declining_an_invitation_leaves_the_org_unchanged,
    one_invitation_accepted_concurrently_admits_exactly_once,
    an_unknown_role_is_refused,
    a_configured_custom_role_can_be_invited,
    inviting_without_the_invitations_feature_is_refused,
    inviting_past_the_seat_limit_is_refused,
    concurrent_invitations_never_overshoot_the_seats,
    accepting_past_the_seat_limit_is_refused,
);
