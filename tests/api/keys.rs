//! Keys (issue 11): server keys with a scope, an expiry and a last use,
//! managed over HTTP by an `admin` key and revoked on every replica; org
//! API keys made by an org's members on plans with `api_tokens`, verified
//! by the app in one call.

use orgplane_server::clock::Clock;
use serde_json::{Value, json};

use crate::billing_support::{eventually, sandbox_app};
use crate::helpers::{Backend, TestApp, TestUser, spawn_app, spawn_app_with, unknown_id};
use crate::on_both_backends;

on_both_backends!(
    a_revoked_server_key_fails_on_another_replica_within_the_ttl,
    an_expired_server_key_fails,
    a_read_key_may_only_read,
    a_write_key_can_not_manage_keys,
    server_keys_list_their_scope_expiry_and_a_last_use_written_once_a_minute,
    org_keys_need_api_tokens_and_verify_follows_the_plan,
    org_keys_are_refused_on_personal_orgs_and_to_members_without_the_permission,
    another_orgs_key_id_is_not_found,
    twenty_concurrent_creates_against_an_api_keys_limit_of_5_make_exactly_5,
);

const SUCCESS: &str = "https://app.example/billing/done";
const CANCEL: &str = "https://app.example/billing";

/// A second orgplane on the same database, its caches bounded by `ttl_ms`.
async fn replica(app: &TestApp, ttl_ms: u64) -> String {
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

/// A server key made over HTTP by `admin`: (id, key).
async fn server_key(app: &TestApp, admin: &str, body: Value) -> (String, String) {
    let res = app.post("/v1/api_keys", admin, body).await;
    let body = res.expect(201);
    (body["id"].as_str().expect("id").to_owned(), body["key"].as_str().expect("key").to_owned())
}

fn rfc3339(at: time::OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339).expect("rfc3339")
}

async fn a_revoked_server_key_fails_on_another_replica_within_the_ttl(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let admin = app.api_key().await;
    let alice = app.user("alice@example.com").await;
    let org = app.team(&alice, "Agency").await;
    let (id, key) = server_key(&app, &admin, json!({"name": "backend", "scope": "write"})).await;
    // On PostgreSQL the other replica trusts a cached key for a minute: only
    // the announcement can make it refuse in time. On SQLite (one process
    // owns the file in production) the cache bound is what applies.
    let ttl_ms = if backend == Backend::Postgres { 60_000 } else { 1_000 };
    let other = replica(&app, ttl_ms).await;
    let url = format!("{other}/v1/orgs/{org}/entitlements");
    let status = || async { app.http.get(&url).bearer_auth(&key).send().await.expect("reaches").status().as_u16() };
    assert_eq!(status().await, 200, "the key works on the other replica (and is cached there)");
    let revoked = app.delete(&format!("/v1/api_keys/{id}"), &admin).await;
    assert!(revoked.expect(200)["revoked_at"].is_string(), "{}", revoked.body);
    // This replica refuses at once.
    app.get(&format!("/v1/orgs/{org}/entitlements"), &key).await.expect_error(401, "unauthenticated");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while status().await != 401 {
        assert!(std::time::Instant::now() < deadline, "the other replica still accepts the revoked key after 5 s");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(app.count("SELECT COUNT(*) FROM events WHERE type = 'api_key.revoked'").await, 1);
}

async fn an_expired_server_key_fails(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let admin = app.api_key().await;
    let expires = app.clock.now() + time::Duration::minutes(10);
    let (_, key) = server_key(&app, &admin, json!({"name": "short", "expires_at": rfc3339(expires)})).await;
    app.get("/v1/billing/events", &key).await.expect(200);
    app.clock.advance(time::Duration::minutes(11));
    let res = app.get("/v1/billing/events", &key).await;
    res.expect_error(401, "unauthenticated");
    assert!(res.body["error"]["message"].as_str().unwrap_or("").contains("expired"), "{}", res.body);
    // An expiry in the past is refused at creation and makes no key.
    let before = app.count("SELECT COUNT(*) FROM api_keys").await;
    let past = rfc3339(app.clock.now() - time::Duration::minutes(1));
    let res = app.post("/v1/api_keys", &admin, json!({"name": "late", "expires_at": past})).await;
    res.expect_error(400, "invalid_request");
    assert_eq!(res.body["error"]["param"], "expires_at");
    assert_eq!(app.count("SELECT COUNT(*) FROM api_keys").await, before);
}

async fn a_read_key_may_only_read(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let admin = app.api_key().await;
    let alice = app.user("alice@example.com").await;
    let org = app.team(&alice, "Agency").await;
    let (_, read) = server_key(&app, &admin, json!({"name": "dashboard", "scope": "read"})).await;
    app.get(&format!("/v1/orgs/{org}/entitlements"), &read).await.expect(200);
    app.post(&format!("/v1/orgs/{org}/check"), &read, json!({"feature": "invitations"})).await.expect(200);
    app.post("/v1/api_keys/verify", &read, json!({"key": "ok_nothing"})).await.expect(200);
    let res = app.post(&format!("/v1/orgs/{org}/resources"), &read, json!({"type": "customers", "name": "Acme"})).await;
    res.expect_error(403, "forbidden");
    assert!(res.body["error"]["message"].as_str().unwrap_or("").contains("read"), "{}", res.body);
    app.put(&format!("/v1/orgs/{org}/overrides"), &read, json!({"limits": {"customers": 7}}))
        .await
        .expect_error(403, "forbidden");
    assert_eq!(app.count(&format!("SELECT COUNT(*) FROM resources WHERE org_id = '{org}'")).await, 0);
    assert_eq!(app.count(&format!("SELECT COUNT(*) FROM org_overrides WHERE org_id = '{org}'")).await, 0);
}

async fn a_write_key_can_not_manage_keys(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let admin = app.api_key().await;
    let (admin_id, _) = server_key(&app, &admin, json!({"name": "other admin", "scope": "admin"})).await;
    let (_, write) = server_key(&app, &admin, json!({"name": "backend"})).await;
    let before = app.count("SELECT COUNT(*) FROM api_keys").await;
    app.get("/v1/api_keys", &write).await.expect_error(403, "forbidden");
    app.post("/v1/api_keys", &write, json!({"name": "escalate", "scope": "admin"}))
        .await
        .expect_error(403, "forbidden");
    app.delete(&format!("/v1/api_keys/{admin_id}"), &write).await.expect_error(403, "forbidden");
    assert_eq!(app.count("SELECT COUNT(*) FROM api_keys").await, before);
    assert_eq!(app.count("SELECT COUNT(*) FROM api_keys WHERE revoked_at IS NOT NULL").await, 0);
    // A user is no server key at all.
    let alice = app.user("alice@example.com").await;
    app.get("/v1/api_keys", &alice.token).await.expect_error(403, "forbidden");
    // Unknown ids and bad scopes are clear errors.
    app.delete(&format!("/v1/api_keys/{}", unknown_id("key")), &admin).await.expect_error(404, "not_found");
    let res = app.post("/v1/api_keys", &admin, json!({"name": "x", "scope": "root"})).await;
    res.expect_error(400, "invalid_request");
    assert_eq!(res.body["error"]["param"], "scope");
}

async fn server_keys_list_their_scope_expiry_and_a_last_use_written_once_a_minute(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let admin = app.api_key().await;
    let expires = app.clock.now() + time::Duration::days(90);
    let (id, key) =
        server_key(&app, &admin, json!({"name": "ci", "scope": "read", "expires_at": rfc3339(expires)})).await;
    let listed = || async {
        let res = app.get("/v1/api_keys?limit=100", &admin).await;
        res.expect(200)["data"]
            .as_array()
            .expect("data")
            .iter()
            .find(|k| k["id"] == id.as_str())
            .cloned()
            .expect("listed")
    };
    let entry = listed().await;
    assert_eq!(entry["name"], "ci");
    assert_eq!(entry["scope"], "read");
    assert_eq!(entry["prefix"], &key[..11]);
    assert!(
        entry["expires_at"].is_string() && entry["last_used_at"].is_null() && entry.get("key").is_none(),
        "{entry}"
    );
    // The first use is written (off the request: wait for it).
    app.get("/v1/billing/events", &key).await.expect(200);
    let used_at = || async {
        app.strings(&format!(
            "SELECT CAST(last_used_at AS TEXT) FROM api_keys WHERE id = '{id}' AND last_used_at IS NOT NULL"
        ))
        .await
    };
    eventually(5, "the first use to be written", || async { used_at().await.len() == 1 }).await;
    let first = used_at().await;
    // More uses within the minute write nothing.
    for _ in 0..5 {
        app.get("/v1/billing/events", &key).await.expect(200);
    }
    // The write is off the request: give a wrongly written one time to land
    // before proving there is none.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(used_at().await, first, "no write per request");
    // A minute later, the next use is written.
    app.clock.advance(time::Duration::seconds(61));
    app.get("/v1/billing/events", &key).await.expect(200);
    eventually(5, "the use a minute later to be written", || async { used_at().await != first }).await;
    assert!(listed().await["last_used_at"].is_string());
}

// -- org keys ---------------------------------------------------------------------

async fn clinic(app: &TestApp) -> (TestUser, String) {
    let smith = app.user("dr.smith@clinic.example").await;
    let org = app.team(&smith, "Downtown Clinic").await;
    (smith, org)
}

async fn pay_business(app: &TestApp, org: &str, by: &TestUser) {
    let body = json!({"plan": "business", "success_url": SUCCESS, "cancel_url": CANCEL});
    let res = app.post(&format!("/v1/orgs/{org}/checkout"), &by.token, body).await;
    let url = res.expect(200)["url"].as_str().expect("url").to_owned();
    app.send_request(app.http.post(format!("{url}/pay")).header("accept", "application/json")).await.expect(200);
}

async fn verify(app: &TestApp, server_key: &str, key: &str) -> Value {
    app.post("/v1/api_keys/verify", server_key, json!({"key": key})).await.expect(200).clone()
}

async fn org_keys_need_api_tokens_and_verify_follows_the_plan(backend: Backend) {
    let Some(app) = sandbox_app(backend, |c| {
        c.billing.retry_interval_secs = 0;
        c.billing.reconcile_interval_secs = 0;
    })
    .await
    else {
        return;
    };
    let server = app.api_key().await;
    let (smith, org) = clinic(&app).await;
    let path = format!("/v1/orgs/{org}/api_keys");
    // The free plan has no `api_tokens`.
    let res = app.post(&path, &smith.token, json!({"name": "zapier"})).await;
    res.expect_error(403, "feature_not_entitled");
    assert_eq!(app.count(&format!("SELECT COUNT(*) FROM org_api_keys WHERE org_id = '{org}'")).await, 0);

    pay_business(&app, &org, &smith).await;
    let res = app.post(&path, &smith.token, json!({"name": "zapier", "scopes": ["invoices:read"]})).await;
    let created = res.expect(201).clone();
    let key = created["key"].as_str().expect("the key, once").to_owned();
    let key_id = created["id"].as_str().expect("id").to_owned();
    assert!(key.starts_with("ok_") && key_id.starts_with("oky_"), "{created}");
    assert_eq!(created["prefix"], &key[..11]);
    assert_eq!(created["created_by"], smith.id.as_str());
    // Stored as a hash only; listed without the key.
    assert_eq!(app.count(&format!("SELECT COUNT(*) FROM org_api_keys WHERE key_hash = '{key}'")).await, 0);
    let listed = app.get(&path, &smith.token).await;
    let listed = listed.expect(200)["data"].as_array().expect("data").clone();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].get("key").is_none() && listed[0]["id"] == key_id.as_str(), "{listed:?}");
    assert_eq!(
        app.count(&format!("SELECT COUNT(*) FROM events WHERE org_id = '{org}' AND type = 'org_api_key.created'"))
            .await,
        1
    );

    // The app verifies what its customer sent.
    let answer = verify(&app, &server, &key).await;
    assert_eq!(answer["valid"], true, "{answer}");
    assert_eq!(answer["org_id"], org.as_str());
    assert_eq!(answer["key_id"], key_id.as_str());
    assert_eq!(answer["scopes"], json!(["invoices:read"]));
    assert_eq!(answer["entitlements"]["plan"], "business");
    assert_eq!(answer["entitlements"]["features"]["api_tokens"], true);
    assert_eq!(answer["entitlements"]["limits"]["api_keys"]["used"], 1);
    let unknown = verify(&app, &server, "ok_not-a-key").await;
    assert_eq!(unknown, json!({"valid": false, "reason": "unknown"}));

    // A downgrade turns the key off, keeping it.
    app.post(&format!("/v1/orgs/{org}/subscription/cancel"), &smith.token, json!({})).await.expect(200);
    app.clock.advance(time::Duration::days(40));
    app.state.billing.reconcile_once(None).await.expect("a reconciliation pass");
    let answer = verify(&app, &server, &key).await;
    assert_eq!(answer, json!({"valid": false, "reason": "feature_not_entitled"}));
    assert_eq!(
        app.count(&format!("SELECT COUNT(*) FROM org_api_keys WHERE id = '{key_id}' AND revoked_at IS NULL")).await,
        1
    );
    // An upgrade brings it back.
    pay_business(&app, &org, &smith).await;
    assert_eq!(verify(&app, &server, &key).await["valid"], true);

    // Revoked: invalid at once, and the reason says so.
    let res = app.delete(&format!("{path}/{key_id}"), &smith.token).await;
    assert!(res.expect(200)["revoked_at"].is_string());
    assert_eq!(verify(&app, &server, &key).await, json!({"valid": false, "reason": "revoked"}));
    assert_eq!(
        app.count(&format!("SELECT COUNT(*) FROM events WHERE org_id = '{org}' AND type = 'org_api_key.revoked'"))
            .await,
        1
    );

    // An expired key is invalid.
    let soon = rfc3339(app.clock.now() + time::Duration::minutes(5));
    let res = app.post(&path, &smith.token, json!({"name": "temp", "expires_at": soon})).await;
    let temp = res.expect(201)["key"].as_str().expect("key").to_owned();
    assert_eq!(verify(&app, &server, &temp).await["valid"], true);
    app.clock.advance(time::Duration::minutes(6));
    assert_eq!(verify(&app, &server, &temp).await, json!({"valid": false, "reason": "expired"}));
}

async fn org_keys_are_refused_on_personal_orgs_and_to_members_without_the_permission(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let server = app.api_key().await;
    let (smith, org) = clinic(&app).await;
    // The org has api_tokens by override; a personal org never takes keys.
    app.put(&format!("/v1/orgs/{org}/overrides"), &server, json!({"features": {"api_tokens": true}})).await.expect(200);
    let personal = &smith.personal_org;
    app.put(&format!("/v1/orgs/{personal}/overrides"), &server, json!({"features": {"api_tokens": true}}))
        .await
        .expect(200);
    app.post(&format!("/v1/orgs/{personal}/api_keys"), &smith.token, json!({"name": "mine"}))
        .await
        .expect_error(403, "personal_org");
    // Members lack api_keys:manage by default; admins hold it.
    let lee = app.user("lee@clinic.example").await;
    app.add_member(&org, &smith, &lee, "member").await;
    let path = format!("/v1/orgs/{org}/api_keys");
    app.post(&path, &lee.token, json!({"name": "lee's"})).await.expect_error(403, "forbidden");
    app.get(&path, &lee.token).await.expect_error(403, "forbidden");
    app.patch(&format!("/v1/orgs/{org}/members/{}", lee.id), &smith.token, json!({"role": "admin"})).await.expect(200);
    app.post(&path, &lee.token, json!({"name": "lee's"})).await.expect(201);
    // Bad input changes nothing.
    for (body, param) in [
        (json!({"name": ""}), "name"),
        (json!({"name": "x", "scopes": ["has space"]}), "scopes.0"),
        (json!({"name": "x", "expires_at": "2001-01-01T00:00:00Z"}), "expires_at"),
    ] {
        let res = app.post(&path, &smith.token, body).await;
        res.expect_error(400, "invalid_request");
        assert_eq!(res.body["error"]["param"], param, "{}", res.body);
    }
    assert_eq!(app.count(&format!("SELECT COUNT(*) FROM org_api_keys WHERE org_id = '{org}'")).await, 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM org_api_keys").await, 1);
}

async fn another_orgs_key_id_is_not_found(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let server = app.api_key().await;
    let (smith, clinic_org) = clinic(&app).await;
    let jones = app.user("jones@law.example").await;
    let firm = app.team(&jones, "Jones Law").await;
    for org in [&clinic_org, &firm] {
        app.put(&format!("/v1/orgs/{org}/overrides"), &server, json!({"features": {"api_tokens": true}}))
            .await
            .expect(200);
    }
    let res = app.post(&format!("/v1/orgs/{firm}/api_keys"), &jones.token, json!({"name": "firm key"})).await;
    let firm_key_id = res.expect(201)["id"].as_str().expect("id").to_owned();
    let firm_key = res.body["key"].as_str().expect("key").to_owned();
    // Smith, owner of the clinic, names the firm's key under the clinic.
    let res = app.delete(&format!("/v1/orgs/{clinic_org}/api_keys/{firm_key_id}"), &smith.token).await;
    res.expect_error(404, "not_found");
    // And under the firm, which she can't see.
    app.delete(&format!("/v1/orgs/{firm}/api_keys/{firm_key_id}"), &smith.token).await.expect_error(404, "not_found");
    app.get(&format!("/v1/orgs/{firm}/api_keys"), &smith.token).await.expect_error(404, "not_found");
    assert_eq!(verify(&app, &server, &firm_key).await["valid"], true, "the firm's key is untouched");
}

async fn twenty_concurrent_creates_against_an_api_keys_limit_of_5_make_exactly_5(backend: Backend) {
    let Some(app) = spawn_app_with(backend, |c| {
        c.plans = Some(
            orgplane_core::plans::CatalogConfig::from_toml(
                r#"
                [plans.free]
                default = true
                tier = "free"
                features = ["invitations", "api_tokens"]
                limits = { seats = 5, api_keys = 5 }
                "#,
            )
            .expect("catalog")
            .plans
            .expect("plans"),
        );
    })
    .await
    else {
        return;
    };
    let (smith, org) = clinic(&app).await;
    let app = std::sync::Arc::new(app);
    let mut tasks = Vec::new();
    for i in 0..20 {
        let (app, token, org) = (app.clone(), smith.token.clone(), org.clone());
        tasks.push(tokio::spawn(async move {
            app.post(&format!("/v1/orgs/{org}/api_keys"), &token, json!({"name": format!("key {i}")})).await
        }));
    }
    let mut created = 0;
    for task in tasks {
        let res = task.await.expect("task");
        match res.status.as_u16() {
            201 => created += 1,
            _ => res.expect_error(403, "limit_reached"),
        }
    }
    assert_eq!(created, 5);
    assert_eq!(app.count(&format!("SELECT COUNT(*) FROM org_api_keys WHERE org_id = '{org}'")).await, 5);
    // Revoking one frees its place.
    let listed = app.get(&format!("/v1/orgs/{org}/api_keys"), &smith.token).await;
    let first = listed.expect(200)["data"][0]["id"].as_str().expect("id").to_owned();
    app.delete(&format!("/v1/orgs/{org}/api_keys/{first}"), &smith.token).await.expect(200);
    app.post(&format!("/v1/orgs/{org}/api_keys"), &smith.token, json!({"name": "again"})).await.expect(201);
}
