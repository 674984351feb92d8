//! Bad input: malformed or mistyped bodies, wrong content types, oversized
//! bodies, malformed ids, bad pagination, unknown routes and methods, and
//! `Idempotency-Key` replays. Each is answered with the contract's error
//! body and changes nothing.

use reqwest::Method;
use serde_json::json;

use crate::helpers::{Backend, Res, TestApp, TestUser, spawn_app, spawn_app_with, unknown_id};
use crate::on_both_backends;

async fn team_org_count(app: &TestApp) -> i64 {
    app.count("SELECT COUNT(*) FROM orgs WHERE kind = 'team'").await
}

async fn post_json_text(app: &TestApp, path: &str, user: &TestUser, text: &str) -> Res {
    app.send_raw(Method::POST, path, Some(&user.token), "application/json", text.to_owned()).await
}

#[track_caller]
fn assert_param(res: &Res, param: &str) {
    assert_eq!(res.body["error"]["param"], param, "param; body: {}", res.body);
}

async fn malformed_json_is_an_invalid_request(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let alice = app.user("alice@example.com").await;
    for text in [r#"{"name": "#, r#"{"name": "x",}"#, "not json", r#"{"name": 'x'}"#, "", "   "] {
        let res = post_json_text(&app, "/v1/orgs", &alice, text).await;
        res.expect_error(400, "invalid_request");
    }
    assert_eq!(team_org_count(&app).await, 0);
}

async fn a_wrongly_typed_field_is_named(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let alice = app.user("alice@example.com").await;
    let res = app.post("/v1/orgs", &alice.token, json!({"name": 5})).await;
    res.expect_error(422, "invalid_request");
    assert_param(&res, "name");
    let res = app.post("/v1/orgs", &alice.token, json!({"name": "Fine", "billing_email": ["a@b.co"]})).await;
    res.expect_error(422, "invalid_request");
    assert_param(&res, "billing_email");
    let res = app.post("/v1/orgs", &alice.token, json!(["name"])).await;
    res.expect_error(422, "invalid_request");
    let team = app.team(&alice, "Downtown Clinic").await;
    let res = app.patch(&format!("/v1/orgs/{team}"), &alice.token, json!({"settings": "dark"})).await;
    res.expect_error(422, "invalid_request");
    assert_param(&res, "settings");
    let res =
        app.post(&format!("/v1/orgs/{team}/invitations"), &alice.token, json!({"email": "b@c.de", "role": 1})).await;
    res.expect_error(422, "invalid_request");
    assert_param(&res, "role");
    assert_eq!(team_org_count(&app).await, 1);
    assert_eq!(app.get(&format!("/v1/orgs/{team}"), &alice.token).await.expect(200)["settings"], json!({}));
    assert_eq!(app.count("SELECT COUNT(*) FROM invitations").await, 0);
}

async fn a_missing_field_is_named(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let alice = app.user("alice@example.com").await;
    let res = app.post("/v1/orgs", &alice.token, json!({"billing_email": "a@b.co"})).await;
    res.expect_error(422, "invalid_request");
    assert_param(&res, "name");
    let res = app.post("/v1/orgs", &alice.token, json!({})).await;
    assert_param(&res, "name");
    let team = app.team(&alice, "Downtown Clinic").await;
    let res = app.post(&format!("/v1/orgs/{team}/invitations"), &alice.token, json!({"role": "member"})).await;
    res.expect_error(422, "invalid_request");
    assert_param(&res, "email");
    let res = app.post("/v1/invitations/accept", &alice.token, json!({})).await;
    res.expect_error(422, "invalid_request");
    assert_param(&res, "token");
    assert_eq!(team_org_count(&app).await, 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM invitations").await, 0);
}

async fn an_unknown_field_is_refused(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let alice = app.user("alice@example.com").await;
    let res = app.post("/v1/orgs", &alice.token, json!({"name": "Downtown Clinic", "plan": "enterprise"})).await;
    res.expect_error(422, "invalid_request");
    assert!(res.body["error"]["message"].as_str().is_some_and(|m| m.contains("plan")), "{}", res.body);
    assert_eq!(team_org_count(&app).await, 0);
    let team = app.team(&alice, "Downtown Clinic").await;
    let res = app.patch(&format!("/v1/orgs/{team}"), &alice.token, json!({"name": "X", "kind": "personal"})).await;
    res.expect_error(422, "invalid_request");
    let got = app.get(&format!("/v1/orgs/{team}"), &alice.token).await;
    assert_eq!(got.expect(200)["name"], "Downtown Clinic");
    assert_eq!(got.body["kind"], "team");
}

async fn a_wrong_content_type_is_unsupported(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let alice = app.user("alice@example.com").await;
    let body = r#"{"name": "Downtown Clinic"}"#;
    for content_type in ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"] {
        let res = app.send_raw(Method::POST, "/v1/orgs", Some(&alice.token), content_type, body).await;
        res.expect_error(415, "invalid_request");
    }
    // No content type at all.
    let req = app.http.post(app.url("/v1/orgs")).bearer_auth(&alice.token).body(body);
    app.send_request(req).await.expect_error(415, "invalid_request");
    assert_eq!(team_org_count(&app).await, 0);
    // With a charset it is JSON.
    let res = app.send_raw(Method::POST, "/v1/orgs", Some(&alice.token), "application/json; charset=utf-8", body).await;
    res.expect(201);
}

fn body_of_size(size: usize) -> String {
    let prefix = r#"{"name": "Big", "billing_email": null, "x": ""#;
    let filler = size.saturating_sub(prefix.len() + 2);
    format!("{prefix}{}\"}}", "a".repeat(filler))
}

/// How an oversized body is framed.
#[derive(Clone, Copy, Debug)]
enum Framing {
    /// `Content-Length: size`; nothing of the body is sent: the length alone is over the limit.
    Length,
    /// `Transfer-Encoding: chunked`, one chunk of `size` bytes, no terminating chunk.
    Chunked,
}

/// Sends `method path` with an oversized JSON body over a connection of its
/// own, and reads the answer. Only what the server reads before refusing is
/// sent: bytes it never reads make its kernel reset the connection on close,
/// and the client may then see the reset instead of the 413.
async fn send_oversized(
    app: &TestApp,
    method: &str,
    path: &str,
    user: &TestUser,
    key: Option<&str>,
    size: usize,
    framing: Framing,
) -> Res {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nConnection: close\r\n",
        app.addr, user.token
    );
    if let Some(key) = key {
        head.push_str(&format!("Idempotency-Key: {key}\r\n"));
    }
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.expect("connect");
    match framing {
        Framing::Length => {
            head.push_str(&format!("Content-Length: {size}\r\n\r\n"));
            stream.write_all(head.as_bytes()).await.expect("write head");
        }
        Framing::Chunked => {
            head.push_str(&format!("Transfer-Encoding: chunked\r\n\r\n{size:x}\r\n"));
            stream.write_all(head.as_bytes()).await.expect("write head");
            stream.write_all(body_of_size(size).as_bytes()).await.expect("write chunk");
        }
    }
    let mut raw = Vec::new();
    let read = tokio::time::timeout(std::time::Duration::from_secs(20), stream.read_to_end(&mut raw)).await;
    assert!(read.is_ok(), "{method} {path} ({framing:?}): no answer; the server waits for the rest of the body");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("not an HTTP response: {text:?}"));
    let mut lines = head.lines();
    let status: u16 = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|c| c.parse().ok()).expect("status");
    let mut headers = reqwest::header::HeaderMap::new();
    for (name, value) in lines.filter_map(|line| line.split_once(':')) {
        if let (Ok(n), Ok(v)) = (
            reqwest::header::HeaderName::from_bytes(name.trim().as_bytes()),
            reqwest::header::HeaderValue::from_str(value.trim()),
        ) {
            headers.insert(n, v);
        }
    }
    let body = serde_json::from_str(body).unwrap_or(serde_json::Value::Null);
    Res { status: reqwest::StatusCode::from_u16(status).expect("status"), body, headers }
}

/// A request whose body is read in full, on a connection of its own.
async fn send_large(app: &TestApp, method: Method, path: &str, user: &TestUser, body: String) -> Res {
    let http = reqwest::Client::builder().pool_max_idle_per_host(0).build().expect("client");
    let req = http.request(method, app.url(path)).bearer_auth(&user.token).header("content-type", "application/json");
    app.send_request(req.body(body)).await
}

async fn a_body_over_one_mebibyte_is_too_large(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let alice = app.user("alice@example.com").await;
    let team = app.team(&alice, "Downtown Clinic").await;
    let limit = 1024 * 1024;
    for framing in [Framing::Length, Framing::Chunked] {
        let res = send_oversized(&app, "POST", "/v1/orgs", &alice, None, limit + 1, framing).await;
        res.expect_error(413, "payload_too_large");
        let res = send_oversized(&app, "PATCH", &format!("/v1/orgs/{team}"), &alice, None, limit + 1, framing).await;
        res.expect_error(413, "payload_too_large");
        // Through the Idempotency-Key path too, which reads the body first.
        let res = send_oversized(&app, "POST", "/v1/orgs", &alice, Some("big-one"), limit + 1, framing).await;
        res.expect_error(413, "payload_too_large");
    }
    let res = send_oversized(&app, "POST", "/v1/orgs", &alice, None, 3 * limit, Framing::Length).await;
    res.expect_error(413, "payload_too_large");
    assert_eq!(team_org_count(&app).await, 1);
    assert_eq!(app.get(&format!("/v1/orgs/{team}"), &alice.token).await.expect(200)["name"], "Downtown Clinic");
    // Exactly the limit is accepted: the limit is the largest body taken.
    let res = send_large(&app, Method::PATCH, &format!("/v1/orgs/{team}"), &alice, exactly(limit)).await;
    assert_eq!(res.expect(200)["name"], "Renamed");
}

/// A valid PATCH body of exactly `size` bytes (padding inside `settings`).
fn exactly(size: usize) -> String {
    let prefix = r#"{"name": "Renamed", "settings": {"pad": ""#;
    let filler = size - prefix.len() - 3;
    let body = format!("{prefix}{}\"}}}}", "a".repeat(filler));
    assert_eq!(body.len(), size);
    body
}

async fn a_lowered_max_body_bytes_is_enforced(backend: Backend) {
    let Some(app) = spawn_app_with(backend, |config| config.max_body_bytes = 2048).await else { return };
    let alice = app.user("alice@example.com").await;
    for framing in [Framing::Length, Framing::Chunked] {
        let res = send_oversized(&app, "POST", "/v1/orgs", &alice, None, 2049, framing).await;
        res.expect_error(413, "payload_too_large");
        assert!(res.body["error"]["message"].as_str().is_some_and(|m| m.contains("2048")), "{}", res.body);
        // (Chunked, no more is sent than the server reads: one byte over.)
        let size = if matches!(framing, Framing::Length) { 4096 } else { 2049 };
        let res = send_oversized(&app, "POST", "/v1/orgs", &alice, Some("big-one"), size, framing).await;
        res.expect_error(413, "payload_too_large");
    }
    assert_eq!(team_org_count(&app).await, 0);
    // A body within the limit is fine.
    let res = app.post("/v1/orgs", &alice.token, json!({"name": "a".repeat(100)})).await;
    let team = res.expect(201)["id"].as_str().expect("id").to_owned();
    let res = send_large(&app, Method::PATCH, &format!("/v1/orgs/{team}"), &alice, exactly(2048)).await;
    assert_eq!(res.expect(200)["name"], "Renamed");
}

async fn malformed_ids_in_paths_are_invalid_requests(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let alice = app.user("alice@example.com").await;
    let team = app.team(&alice, "Downtown Clinic").await;
    for bad in ["nope", "org_", "org_123", &alice.id, &format!("{team}x"), &team.to_uppercase()] {
        let res = app.get(&format!("/v1/orgs/{bad}"), &alice.token).await;
        res.expect_error(400, "invalid_request");
        assert_param(&res, "org");
    }
    let res = app.get("/v1/orgs/nope/members", &alice.token).await;
    res.expect_error(400, "invalid_request");
    assert_param(&res, "org");
    let res = app.patch(&format!("/v1/orgs/{team}/members/nope"), &alice.token, json!({"role": "member"})).await;
    res.expect_error(400, "invalid_request");
    assert_param(&res, "user");
    let res = app.delete(&format!("/v1/orgs/{team}/members/{team}"), &alice.token).await;
    res.expect_error(400, "invalid_request");
    assert_param(&res, "user");
    let res = app.delete(&format!("/v1/orgs/{team}/invitations/nope"), &alice.token).await;
    res.expect_error(400, "invalid_request");
    assert_param(&res, "inv");
    let res = app.post(&format!("/v1/orgs/{team}/invitations/nope/resend"), &alice.token, json!({})).await;
    res.expect_error(400, "invalid_request");
    assert_param(&res, "inv");
    assert_eq!(app.member_count(&team).await, 1);
}

async fn an_unknown_well_formed_id_is_not_found(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let alice = app.user("alice@example.com").await;
    let ghost = orgplane_core::OrgId::new().to_string();
    app.get(&format!("/v1/orgs/{ghost}"), &alice.token).await.expect_error(404, "not_found");
    app.get(&format!("/v1/orgs/{}", unknown_id("org")), &alice.token).await.expect_error(404, "not_found");
    let team = app.team(&alice, "Downtown Clinic").await;
    let res = app
        .patch(&format!("/v1/orgs/{team}/members/{}", unknown_id("usr")), &alice.token, json!({"role": "admin"}))
        .await;
    res.expect_error(404, "not_found");
    let res = app.delete(&format!("/v1/orgs/{team}/invitations/{}", unknown_id("inv")), &alice.token).await;
    res.expect_error(404, "not_found");
    let res = app.post("/v1/invitations/accept", &alice.token, json!({"token": "it_unknown"})).await;
    res.expect_error(404, "not_found");
}

async fn out_of_range_limits_are_invalid_requests(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let alice = app.user("alice@example.com").await;
    let team = app.team(&alice, "Downtown Clinic").await;
    for base in [
        "/v1/orgs".to_owned(),
        format!("/v1/orgs/{team}/members"),
        format!("/v1/orgs/{team}/invitations"),
        format!("/v1/orgs/{team}/events"),
    ] {
        for limit in ["0", "101", "abc", "-1", "1.5", ""] {
            let res = app.get(&format!("{base}?limit={limit}"), &alice.token).await;
            res.expect_error(400, "invalid_request");
            assert_param(&res, "limit");
        }
        for limit in ["1", "100"] {
            app.get(&format!("{base}?limit={limit}"), &alice.token).await.expect(200);
        }
    }
}

async fn an_unknown_route_is_a_json_404(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let alice = app.user("alice@example.com").await;
    for path in ["/v1/nope", "/v2/orgs", "/", "/v1/orgs/a/b/c/d"] {
        app.get(path, &alice.token).await.expect_error(404, "not_found");
        app.get_anonymous(path).await.expect_error(404, "not_found");
    }
    let res = app.get_anonymous("/v1/nope").await;
    assert!(
        res.headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json")),
        "{:?}",
        res.headers
    );
}

async fn a_wrong_method_is_a_json_405(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let alice = app.user("alice@example.com").await;
    let team = app.team(&alice, "Downtown Clinic").await;
    let cases = [
        (Method::PUT, "/v1/orgs".to_owned()),
        (Method::DELETE, "/v1/orgs".to_owned()),
        (Method::POST, format!("/v1/orgs/{team}")),
        (Method::PUT, format!("/v1/orgs/{team}/members")),
        (Method::GET, "/v1/invitations/accept".to_owned()),
        (Method::POST, "/healthz".to_owned()),
        (Method::DELETE, "/v1/me".to_owned()),
    ];
    for (method, path) in cases {
        let res = app.send(method.clone(), &path, Some(&alice.token), None).await;
        assert_eq!(res.status.as_u16(), 405, "{method} {path}: {}", res.body);
        res.expect_error(405, "invalid_request");
        assert!(
            res.headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("application/json")),
            "{method} {path}: {:?}",
            res.headers
        );
    }
    assert_eq!(app.get(&format!("/v1/orgs/{team}"), &alice.token).await.expect(200)["name"], "Downtown Clinic");
    assert_eq!(team_org_count(&app).await, 1);
}

async fn post_with_key(app: &TestApp, user: &TestUser, key: &str, body: serde_json::Value) -> Res {
    let req = app.http.post(app.url("/v1/orgs")).bearer_auth(&user.token).header("idempotency-key", key).json(&body);
    app.send_request(req).await
}

async fn an_idempotent_repeat_replays_the_first_response(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let alice = app.user("alice@example.com").await;
    let body = json!({"name": "Downtown Clinic", "billing_email": "billing@clinic.example"});
    let first = post_with_key(&app, &alice, "create-clinic-1", body.clone()).await;
    let first_body = first.expect(201).clone();
    assert!(first.headers.get("idempotent-replayed").is_none(), "the first response is no replay");
    for _ in 0..2 {
        let again = post_with_key(&app, &alice, "create-clinic-1", body.clone()).await;
        assert_eq!(again.expect(201), &first_body, "the identical first response");
        assert_eq!(again.headers.get("idempotent-replayed").and_then(|v| v.to_str().ok()), Some("true"));
    }
    assert_eq!(team_org_count(&app).await, 1);
    let orgs = app.get("/v1/orgs", &alice.token).await;
    assert_eq!(orgs.expect(200)["data"].as_array().expect("data").len(), 2, "personal + one team");
    // A new key is a new request.
    let other = post_with_key(&app, &alice, "create-clinic-2", body.clone()).await;
    assert_ne!(other.expect(201)["id"], first_body["id"]);
    assert_eq!(team_org_count(&app).await, 2);
    // Keys belong to their caller: bob's same key is his own request.
    let bob = app.user("bob@example.com").await;
    let bobs = post_with_key(&app, &bob, "create-clinic-1", body).await;
    assert_ne!(bobs.expect(201)["id"], first_body["id"]);
    assert!(bobs.headers.get("idempotent-replayed").is_none());
    assert_eq!(team_org_count(&app).await, 3);
}

async fn an_idempotency_key_reused_with_another_body_is_refused(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let alice = app.user("alice@example.com").await;
    let first = post_with_key(&app, &alice, "k-1", json!({"name": "Downtown Clinic"})).await;
    let first_body = first.expect(201).clone();
    let res = post_with_key(&app, &alice, "k-1", json!({"name": "Uptown Clinic"})).await;
    res.expect_error(422, "invalid_request");
    assert!(res.headers.get("idempotent-replayed").is_none());
    assert_eq!(team_org_count(&app).await, 1);
    let got = app.get(&format!("/v1/orgs/{}", first_body["id"].as_str().expect("id")), &alice.token).await;
    assert_eq!(got.expect(200)["name"], "Downtown Clinic");
    // The original body still replays.
    let again = post_with_key(&app, &alice, "k-1", json!({"name": "Downtown Clinic"})).await;
    assert_eq!(again.expect(201), &first_body);
}

async fn concurrent_repeats_of_one_idempotency_key_create_one_org(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let alice = app.user("alice@example.com").await;
    let body = json!({"name": "Downtown Clinic"});
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let req = app
            .http
            .post(app.url("/v1/orgs"))
            .bearer_auth(&alice.token)
            .header("idempotency-key", "race-1")
            .json(&body);
        tasks.push(tokio::spawn(async move { crate::helpers::read_res(req.send().await.expect("reaches")).await }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        let res = t.await.expect("task");
        match res.status.as_u16() {
            201 => ids.push(res.body["id"].as_str().expect("id").to_owned()),
            // Still running: the caller is told to retry.
            _ => res.expect_error(409, "conflict"),
        }
    }
    assert!(!ids.is_empty());
    ids.dedup();
    assert_eq!(ids.len(), 1, "every 201 is the same org: {ids:?}");
    assert_eq!(team_org_count(&app).await, 1);
    // Once settled, the key replays.
    let again = post_with_key(&app, &alice, "race-1", body).await;
    assert_eq!(again.expect(201)["id"], ids[0].as_str());
    assert_eq!(again.headers.get("idempotent-replayed").and_then(|v| v.to_str().ok()), Some("true"));
}

on_both_backends!(
    malformed_json_is_an_invalid_request,
    a_wrongly_typed_field_is_named,
    a_missing_field_is_named,
    an_unknown_field_is_refused,
    a_wrong_content_type_is_unsupported,
    a_body_over_one_mebibyte_is_too_large,
    a_lowered_max_body_bytes_is_enforced,
    malformed_ids_in_paths_are_invalid_requests,
    an_unknown_well_formed_id_is_not_found,
    out_of_range_limits_are_invalid_requests,
    an_unknown_route_is_a_json_404,
    a_wrong_method_is_a_json_405,
    an_idempotent_repeat_replays_the_first_response,
    an_idempotency_key_reused_with_another_body_is_refused,
    concurrent_repeats_of_one_idempotency_key_create_one_org,
);
