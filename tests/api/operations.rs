//! Operations: health, readiness, metrics, request ids, the OpenAPI document.

use serde_json::json;

use crate::helpers::{Backend, spawn_app, spawn_app_with};
use crate::on_both_backends;

async fn healthz_and_readyz_answer_ok(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    for path in ["/healthz", "/readyz"] {
        let res = app.get_anonymous(path).await;
        assert_eq!(res.expect(200)["status"], "ok", "{path}");
    }
}

/// A database that answers but lacks this build's schema (re-created
/// empty, or not migrated yet) can serve nothing: not ready.
async fn readyz_is_503_while_the_schema_is_missing_or_behind(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    app.sql("DELETE FROM orgplane_migrations WHERE version = (SELECT MAX(version) FROM orgplane_migrations)").await;
    let res = app.get_anonymous("/readyz").await;
    res.expect_error(503, "unavailable");
    assert!(res.headers.contains_key("retry-after"), "{:?}", res.headers);
    app.sql("DROP TABLE orgplane_migrations").await;
    app.get_anonymous("/readyz").await.expect_error(503, "unavailable");
}

/// Migrations are append-only: a database on which an applied migration
/// ran with other SQL than this build's copy refuses to migrate, naming the
/// migration; a database migrated before checksums existed gets them.
async fn an_applied_migration_whose_sql_changed_is_refused_by_name(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let applied = app.count("SELECT COUNT(*) FROM orgplane_migrations").await;
    assert_eq!(app.count("SELECT COUNT(*) FROM orgplane_migration_checksums").await, applied);
    let store = orgplane_store::Store::connect(&orgplane_store::ConnectOptions {
        max_connections: 2,
        ..orgplane_store::ConnectOptions::new(app.database_url.clone())
    })
    .await
    .expect("store");
    // As left by a build from before checksums: they are recorded now.
    app.sql("DELETE FROM orgplane_migration_checksums").await;
    assert_eq!(store.migrate().await.expect("an older database migrates"), Vec::<i64>::new());
    assert_eq!(app.count("SELECT COUNT(*) FROM orgplane_migration_checksums").await, applied);
    // 0003 ran with other SQL than this build has.
    app.sql("UPDATE orgplane_migration_checksums SET sha256 = 'edited' WHERE version = 3").await;
    let err = store.migrate().await.expect_err("a changed migration is refused");
    let message = err.to_string();
    assert!(message.contains("migration 0003_billing was changed after it was applied"), "{message}");
    assert!(message.contains("append-only"), "{message}");
    store.close().await;
}

async fn metrics_count_requests_by_matched_route(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let alice = app.user("alice@example.com").await;
    let team = app.team(&alice, "Downtown Clinic").await;
    app.get(&format!("/v1/orgs/{team}"), &alice.token).await.expect(200);
    app.get(&format!("/v1/orgs/{team}/members"), &alice.token).await.expect(200);
    let res = app.http.get(app.url("/metrics")).send().await.expect("metrics");
    assert_eq!(res.status().as_u16(), 200);
    let content_type = res.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let text = res.text().await.expect("text");
    assert!(text.contains("# TYPE orgplane_http_requests_total counter"), "{text}");
    let line = text
        .lines()
        .find(|l| {
            l.starts_with("orgplane_http_requests_total{")
                && l.contains(r#"route="/v1/orgs/{org}""#)
                && l.contains(r#"method="GET""#)
                && l.contains(r#"status="200""#)
        })
        .unwrap_or_else(|| panic!("no series for GET /v1/orgs/{{org}}:\n{text}"));
    let count: f64 = line.rsplit(' ').next().and_then(|n| n.parse().ok()).expect("a number");
    assert!(count >= 1.0, "{line}");
    assert!(text.contains(r#"route="/v1/orgs/{org}/members""#), "{text}");
    assert!(text.contains(r#"route="/v1/orgs",method="POST",status="201""#), "{text}");
    assert!(!text.contains(&team), "raw ids never become labels:\n{text}");
    assert!(text.contains("orgplane_http_request_duration_seconds_bucket"), "{text}");
}

async fn a_sent_request_id_is_echoed(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let alice = app.user("alice@example.com").await;
    for (path, token) in
        [("/v1/me", Some(alice.token.as_str())), ("/healthz", None), ("/v1/nope", None), ("/v1/me", None)]
    {
        let mut req = app.http.get(app.url(path)).header("x-request-id", "client-req-42");
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let res = app.send_request(req).await;
        assert_eq!(
            res.headers.get("x-request-id").and_then(|v| v.to_str().ok()),
            Some("client-req-42"),
            "{path}: {:?}",
            res.headers
        );
    }
}

async fn a_request_id_is_generated_when_absent(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let mut ids = Vec::new();
    for path in ["/healthz", "/healthz", "/v1/me", "/v1/nope"] {
        let res = app.get_anonymous(path).await;
        let id = res.headers.get("x-request-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let id = id.unwrap_or_else(|| panic!("{path} answered without X-Request-Id: {:?}", res.headers));
        assert!(!id.is_empty() && id.len() <= 128, "{id}");
        ids.push(id);
    }
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "each request gets its own id: {ids:?}");
    // An unusable id (not visible ASCII) is replaced, not echoed.
    let req = app.http.get(app.url("/healthz")).header("x-request-id", "has space");
    let res = app.send_request(req).await;
    let id = res.headers.get("x-request-id").and_then(|v| v.to_str().ok()).expect("an id");
    assert_ne!(id, "has space");
}

async fn dev_mode_mints_tokens_that_its_own_issuer_accepts(backend: Backend) {
    let Some(app) = spawn_app_with(backend, |config| config.dev = true).await else { return };
    let res =
        app.send(reqwest::Method::POST, "/dev/token", None, Some(json!({"email": "Dr.Smith@Clinic.Example"}))).await;
    let token = res.expect(200)["token"].as_str().expect("token").to_owned();
    let me = app.get("/v1/me", &token).await;
    let body = me.expect(200);
    assert_eq!(body["email"], "dr.smith@clinic.example");
    assert_eq!(body["email_verified"], true);
    let jwks = app.get_anonymous("/dev/jwks.json").await;
    assert!(jwks.expect(200)["keys"].as_array().is_some_and(|k| !k.is_empty()), "{}", jwks.body);
    // The test IdP's tokens still work beside it.
    app.get("/v1/me", &app.idp.token("alice", "alice@example.com")).await.expect(200);
}

async fn without_dev_mode_there_is_no_dev_issuer(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let res = app.send(reqwest::Method::POST, "/dev/token", None, Some(json!({"email": "a@b.co"}))).await;
    res.expect_error(404, "not_found");
    app.get_anonymous("/dev/jwks.json").await.expect_error(404, "not_found");
}

on_both_backends!(
    healthz_and_readyz_answer_ok,
    readyz_is_503_while_the_schema_is_missing_or_behind,
    an_applied_migration_whose_sql_changed_is_refused_by_name,
    metrics_count_requests_by_matched_route,
    a_sent_request_id_is_echoed,
    a_request_id_is_generated_when_absent,
    dev_mode_mints_tokens_that_its_own_issuer_accepts,
    without_dev_mode_there_is_no_dev_issuer,
);
