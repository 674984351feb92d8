//! Entitlements, checks, overrides, quota-counted resources, seats and
//! grants — with the races that must not overshoot a limit.

use serde_json::json;

use crate::helpers::{Backend, spawn_app, spawn_app_with};
use crate::on_both_backends;

async fn a_new_team_org_gets_the_free_plan_with_usage(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let alice = app.user("alice@example.com").await;
    let org = app.team(&alice, "Agency").await;
    let res = app.get(&format!("/v1/orgs/{org}/entitlements"), &alice.token).await;
    let body = res.expect(200);
    assert_eq!(body["org_id"], org.as_str());
    assert_eq!(body["kind"], "team");
    assert_eq!(body["plan"], "free");
    assert_eq!(body["tier"], "free");
    assert_eq!(body["status"], serde_json::Value::Null);
    assert_eq!(body["features"]["invitations"], true);
    assert_eq!(body["features"]["audit_log"], false);
    assert_eq!(body["limits"]["customers"], json!({"limit": 3, "used": 0}));
    assert_eq!(body["limits"]["clients"], json!({"limit": 10, "used": 0}));
    assert_eq!(body["limits"]["seats"], json!({"limit": 2, "used": 1}));
    let org_body = app.get(&format!("/v1/orgs/{org}"), &alice.token).await;
    assert_eq!(org_body.expect(200)["plan"], "free");
}

async fn check_answers_features_and_limits_with_a_reason(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let alice = app.user("alice@example.com").await;
    let org = app.team(&alice, "Agency").await;
    let path = format!("/v1/orgs/{org}/check");
    let yes = app.post(&path, &alice.token, json!({"feature": "invitations"})).await;
    assert_eq!(yes.expect(200), &json!({"allowed": true}));
    let no = app.post(&path, &alice.token, json!({"feature": "audit_log"})).await;
    assert_eq!(no.expect(200)["allowed"], false);
    assert!(
        no.body["reason"].as_str().is_some_and(|r| r.contains("audit_log") && r.contains("business")),
        "{}",
        no.body
    );
    let fits = app.post(&path, &alice.token, json!({"limit": "customers", "amount": 3})).await;
    assert_eq!(fits.expect(200)["allowed"], true);
    let over = app.post(&path, &alice.token, json!({"limit": "customers", "amount": 4})).await;
    assert_eq!(over.expect(200)["allowed"], false);
    let unknown = app.post(&path, &alice.token, json!({"feature": "teleport"})).await;
    unknown.expect_error(400, "invalid_request");
    assert!(unknown.body["error"]["message"].as_str().unwrap_or("").contains("teleport"));
    let both = app.post(&path, &alice.token, json!({"feature": "invitations", "limit": "customers"})).await;
    both.expect_error(400, "invalid_request");
}

async fn resources_stop_at_the_plan_limit_and_deleting_frees_quota(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let alice = app.user("alice@example.com").await;
    let org = app.team(&alice, "Agency").await;
    let path = format!("/v1/orgs/{org}/resources");
    let mut ids = Vec::new();
    for i in 0..3 {
        let res = app.post(&path, &alice.token, json!({"type": "customers", "external_id": format!("c{i}")})).await;
        ids.push(res.expect(201)["id"].as_str().expect("id").to_owned());
    }
    let fourth = app.post(&path, &alice.token, json!({"type": "customers", "external_id": "c3"})).await;
    fourth.expect_error(403, "limit_reached");
    assert_eq!(fourth.body["error"]["param"], "customers");
    let message = fourth.body["error"]["message"].as_str().unwrap_or("");
    assert!(message.contains('3') && message.contains("business"), "{message}");
    assert_eq!(app.count("SELECT COUNT(*) FROM resources").await, 3);
    app.delete(&format!("{path}/{}", ids[0]), &alice.token).await.expect(200);
    app.post(&path, &alice.token, json!({"type": "customers", "external_id": "c3"})).await.expect(201);
    let dup = app.post(&path, &alice.token, json!({"type": "clients", "external_id": "x"})).await;
    dup.expect(201);
    app.post(&path, &alice.token, json!({"type": "clients", "external_id": "x"})).await.expect_error(409, "conflict");
    let unknown = app.post(&path, &alice.token, json!({"type": "spaceships"})).await;
    unknown.expect_error(400, "invalid_request");
    assert_eq!(unknown.body["error"]["param"], "type");
}

async fn forty_concurrent_creates_against_a_limit_of_ten_make_exactly_ten(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let key = app.api_key().await;
    let alice = app.user("alice@example.com").await;
    let org = app.team(&alice, "Agency").await;
    app.put(&format!("/v1/orgs/{org}/overrides"), &key, json!({"limits": {"customers": 10}})).await.expect(200);
    let mut tasks = Vec::new();
    for i in 0..40 {
        let (http, url, key) = (app.http.clone(), app.url(&format!("/v1/orgs/{org}/resources")), key.clone());
        tasks.push(tokio::spawn(async move {
            let res = http
                .post(url)
                .bearer_auth(key)
                .json(&json!({"type": "customers", "external_id": format!("cust-{i}")}))
                .send()
                .await
                .expect("reaches");
            res.status().as_u16()
        }));
    }
    let mut created = 0;
    let mut refused = 0;
    for t in tasks {
        match t.await.expect("task") {
            201 => created += 1,
            403 => refused += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!((created, refused), (10, 30));
    assert_eq!(app.count("SELECT COUNT(*) FROM resources WHERE type = 'customers'").await, 10);
    let ent = app.get(&format!("/v1/orgs/{org}/entitlements"), &key).await;
    assert_eq!(ent.expect(200)["limits"]["customers"], json!({"limit": 10, "used": 10}));
}

async fn concurrent_invitations_never_overshoot_the_seats(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let key = app.api_key().await;
    let alice = app.user("alice@example.com").await;
    let org = app.team(&alice, "Agency").await;
    app.put(&format!("/v1/orgs/{org}/overrides"), &key, json!({"limits": {"seats": 5}})).await.expect(200);
    let mut tasks = Vec::new();
    for i in 0..24 {
        let (http, url, token) =
            (app.http.clone(), app.url(&format!("/v1/orgs/{org}/invitations")), alice.token.clone());
        tasks.push(tokio::spawn(async move {
            let res = http
                .post(url)
                .bearer_auth(token)
                .json(&json!({"email": format!("staff{i}@example.com")}))
                .send()
                .await
                .expect("reaches");
            res.status().as_u16()
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.expect("task"));
    }
    assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 4, "owner + 4 pending = 5 seats: {statuses:?}");
    assert!(statuses.iter().all(|s| *s == 201 || *s == 403), "{statuses:?}");
    assert_eq!(app.count("SELECT COUNT(*) FROM invitations WHERE status = 'pending'").await, 4);
}

async fn seats_are_checked_again_at_accept(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let key = app.api_key().await;
    let alice = app.user("alice@example.com").await;
    let org = app.team(&alice, "Agency").await;
    app.put(&format!("/v1/orgs/{org}/overrides"), &key, json!({"limits": {"seats": 3}})).await.expect(200);
    let bob = app.user("bob@example.com").await;
    let carol = app.user("carol@example.com").await;
    let t_bob = app.invite(&org, &alice, &bob.email, "member").await;
    let t_carol = app.invite(&org, &alice, &carol.email, "member").await;
    // The plan shrinks after the invitations went out.
    app.put(&format!("/v1/orgs/{org}/overrides"), &key, json!({"limits": {"seats": 2}})).await.expect(200);
    app.post("/v1/invitations/accept", &bob.token, json!({"token": t_bob})).await.expect(200);
    let refused = app.post("/v1/invitations/accept", &carol.token, json!({"token": t_carol})).await;
    refused.expect_error(403, "limit_reached");
    assert_eq!(app.count(&format!("SELECT COUNT(*) FROM memberships WHERE org_id = '{org}'")).await, 2);
}

async fn concurrent_accepts_of_different_invitations_respect_the_seats(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let key = app.api_key().await;
    let alice = app.user("alice@example.com").await;
    let org = app.team(&alice, "Agency").await;
    app.put(&format!("/v1/orgs/{org}/overrides"), &key, json!({"limits": {"seats": 12}})).await.expect(200);
    let mut invitees = Vec::new();
    for i in 0..10 {
        let user = app.user(&format!("staff{i}@example.com")).await;
        let token = app.invite(&org, &alice, &user.email, "member").await;
        invitees.push((user, token));
    }
    app.put(&format!("/v1/orgs/{org}/overrides"), &key, json!({"limits": {"seats": 4}})).await.expect(200);
    let mut tasks = Vec::new();
    for (user, token) in invitees {
        let (http, url) = (app.http.clone(), app.url("/v1/invitations/accept"));
        tasks.push(tokio::spawn(async move {
            http.post(url)
                .bearer_auth(user.token)
                .json(&json!({"token": token}))
                .send()
                .await
                .expect("reaches")
                .status()
                .as_u16()
        }));
    }
    let mut ok = 0;
    for t in tasks {
        if t.await.expect("task") == 200 {
            ok += 1;
        }
    }
    assert_eq!(ok, 3, "owner + 3 accepted = 4 seats");
    assert_eq!(app.count(&format!("SELECT COUNT(*) FROM memberships WHERE org_id = '{org}'")).await, 4);
}

async fn overrides_are_for_api_keys_and_show_in_entitlements(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let key = app.api_key().await;
    let alice = app.user("alice@example.com").await;
    let org = app.team(&alice, "Agency").await;
    let path = format!("/v1/orgs/{org}/overrides");
    app.put(&path, &alice.token, json!({"features": {"audit_log": true}})).await.expect_error(403, "forbidden");
    let res = app.put(&path, &key, json!({"features": {"audit_log": true}, "limits": {"customers": null}})).await;
    let body = res.expect(200);
    assert_eq!(body["features"]["audit_log"], true);
    assert_eq!(body["limits"]["customers"]["limit"], serde_json::Value::Null);
    let seen = app.get(&format!("/v1/orgs/{org}/entitlements"), &alice.token).await;
    assert_eq!(seen.expect(200)["features"]["audit_log"], true);
    let bad = app.put(&path, &key, json!({"features": {"teleport": true}})).await;
    bad.expect_error(400, "invalid_request");
    let bad = app.put(&path, &key, json!({"limits": {"spaceships": 3}})).await;
    bad.expect_error(400, "invalid_request");
    // `{}` clears.
    let cleared = app.put(&path, &key, json!({})).await;
    assert_eq!(cleared.expect(200)["features"]["audit_log"], false);
}

async fn a_downgrade_deletes_nothing_and_refuses_creates_until_under_the_limit(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let key = app.api_key().await;
    let alice = app.user("alice@example.com").await;
    let org = app.team(&alice, "Agency").await;
    let path = format!("/v1/orgs/{org}/resources");
    app.put(&format!("/v1/orgs/{org}/overrides"), &key, json!({"limits": {"customers": 5}})).await.expect(200);
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(
            app.post(&path, &alice.token, json!({"type": "customers"})).await.expect(201)["id"]
                .as_str()
                .expect("id")
                .to_owned(),
        );
    }
    // Back to the free plan's 3.
    app.put(&format!("/v1/orgs/{org}/overrides"), &key, json!({})).await.expect(200);
    let ent = app.get(&format!("/v1/orgs/{org}/entitlements"), &alice.token).await;
    assert_eq!(ent.expect(200)["limits"]["customers"], json!({"limit": 3, "used": 5}));
    app.post(&path, &alice.token, json!({"type": "customers"})).await.expect_error(403, "limit_reached");
    for id in &ids[..3] {
        app.delete(&format!("{path}/{id}"), &alice.token).await.expect(200);
    }
    app.post(&path, &alice.token, json!({"type": "customers"})).await.expect(201);
}

async fn members_see_only_granted_resources_and_admins_see_all(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let alice = app.user("alice@example.com").await;
    let bob = app.user("bob@example.com").await;
    let org = app.team(&alice, "Agency").await;
    app.add_member(&org, &alice, &bob, "member").await;
    let path = format!("/v1/orgs/{org}/resources");
    let acme = app.post(&path, &alice.token, json!({"type": "customers", "name": "Acme"})).await.expect(201)["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let globex = app.post(&path, &alice.token, json!({"type": "customers", "name": "Globex"})).await.expect(201)["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let none = app.get(&path, &bob.token).await;
    assert_eq!(none.expect(200)["data"].as_array().map(Vec::len), Some(0));
    app.put(&format!("{path}/{acme}/grants/{}", bob.id), &alice.token, json!({})).await.expect(200);
    let mine = app.get(&format!("{path}?type=customers"), &bob.token).await;
    let data = mine.expect(200)["data"].as_array().expect("data").clone();
    assert_eq!(data.len(), 1);
    assert_eq!(data[0]["id"], acme.as_str());
    let all = app.get(&path, &alice.token).await;
    assert_eq!(all.expect(200)["data"].as_array().map(Vec::len), Some(2));
    let access = |res: &str, user: &str| format!("{path}/{res}/access?user_id={user}");
    assert_eq!(app.get(&access(&acme, &bob.id), &alice.token).await.expect(200)["allowed"], true);
    assert_eq!(app.get(&access(&globex, &bob.id), &alice.token).await.expect(200)["allowed"], false);
    assert_eq!(app.get(&access(&globex, &alice.id), &bob.token).await.expect(200)["allowed"], true);
    // A plain member can't grant.
    app.put(&format!("{path}/{globex}/grants/{}", bob.id), &bob.token, json!({})).await.expect_error(403, "forbidden");
    app.delete(&format!("{path}/{acme}/grants/{}", bob.id), &alice.token).await.expect(200);
    assert_eq!(app.get(&access(&acme, &bob.id), &alice.token).await.expect(200)["allowed"], false);
}

async fn invitations_need_the_invitations_feature(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let key = app.api_key().await;
    let alice = app.user("alice@example.com").await;
    let org = app.team(&alice, "Agency").await;
    app.put(&format!("/v1/orgs/{org}/overrides"), &key, json!({"features": {"invitations": false}})).await.expect(200);
    let res = app.post(&format!("/v1/orgs/{org}/invitations"), &alice.token, json!({"email": "bob@example.com"})).await;
    res.expect_error(403, "feature_not_entitled");
    assert_eq!(res.body["error"]["param"], "invitations");
    assert_eq!(app.count("SELECT COUNT(*) FROM invitations").await, 0);
}

async fn custom_roles_need_the_custom_roles_feature(backend: Backend) {
    let Some(app) = spawn_app_with(backend, |c| {
        c.roles.insert(
            "support".into(),
            orgplane_core::roles::CustomRoleConfig { permissions: vec!["members:invite".into()], description: None },
        );
    })
    .await
    else {
        return;
    };
    let key = app.api_key().await;
    let alice = app.user("alice@example.com").await;
    let org = app.team(&alice, "Agency").await;
    let path = format!("/v1/orgs/{org}/invitations");
    let refused = app.post(&path, &alice.token, json!({"email": "bob@example.com", "role": "support"})).await;
    refused.expect_error(403, "feature_not_entitled");
    app.put(
        &format!("/v1/orgs/{org}/overrides"),
        &key,
        json!({"features": {"custom_roles": true}, "limits": {"seats": 5}}),
    )
    .await
    .expect(200);
    let bob = app.user("bob@example.com").await;
    app.add_member(&org, &alice, &bob, "support").await;
    // The support role may invite, but not remove.
    app.post(&path, &bob.token, json!({"email": "carol@example.com"})).await.expect(201);
    app.delete(&format!("/v1/orgs/{org}/members/{}", alice.id), &bob.token).await.expect_error(403, "forbidden");
}

/// Starts a second orgplane on `app`'s database: another replica.
async fn replica(app: &crate::helpers::TestApp, ttl_ms: u64) -> String {
    let mut config = orgplane_server::Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        database_url: Some(app.database_url.clone()),
        data_dir: app.data_dir.join("replica"),
        max_connections: 4,
        ..orgplane_server::Config::default()
    };
    config.auth.issuers = vec![app.idp.issuer_config()];
    config.cache.entitlements_ttl_ms = ttl_ms;
    let replica = orgplane_server::Application::build(config).await.expect("replica builds");
    let base = format!("http://{}", replica.local_addr());
    tokio::spawn(replica.run_until(std::future::pending()));
    base
}

async fn a_commit_on_one_replica_reaches_the_others_cache(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let key = app.api_key().await;
    let alice = app.user("alice@example.com").await;
    let org = app.team(&alice, "Agency").await;
    // On PostgreSQL the other replica's cache may live a minute: only the
    // NOTIFY can make it see the change in time. On SQLite (one file, no
    // NOTIFY) the cache bound is what applies.
    let ttl_ms = if backend == Backend::Postgres { 60_000 } else { 1_000 };
    let other = replica(&app, ttl_ms).await;
    let url = format!("{other}/v1/orgs/{org}/entitlements");
    let read = || async {
        let res = app.http.get(&url).bearer_auth(&key).send().await.expect("reaches");
        res.json::<serde_json::Value>().await.expect("json")["limits"]["customers"]["limit"].clone()
    };
    assert_eq!(read().await, json!(3));
    app.put(&format!("/v1/orgs/{org}/overrides"), &key, json!({"limits": {"customers": 7}})).await.expect(200);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut ticks = tokio::time::interval(std::time::Duration::from_millis(20));
    loop {
        ticks.tick().await;
        if read().await == json!(7) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the other replica still serves the old limit after 5 s");
    }
}

on_both_backends!(
    a_commit_on_one_replica_reaches_the_others_cache,
    a_new_team_org_gets_the_free_plan_with_usage,
    check_answers_features_and_limits_with_a_reason,
    resources_stop_at_the_plan_limit_and_deleting_frees_quota,
    forty_concurrent_creates_against_a_limit_of_ten_make_exactly_ten,
    concurrent_invitations_never_overshoot_the_seats,
    seats_are_checked_again_at_accept,
    concurrent_accepts_of_different_invitations_respect_the_seats,
    overrides_are_for_api_keys_and_show_in_entitlements,
    a_downgrade_deletes_nothing_and_refuses_creates_until_under_the_limit,
    members_see_only_granted_resources_and_admins_see_all,
    invitations_need_the_invitations_feature,
    custom_roles_need_the_custom_roles_feature,
);
