//! What fuzzing found (issue 14, item 7): each bad input gets a clear error
//! and changes nothing — array bodies, control characters, duplicate keys
//! in nested objects, arithmetic at the top of the range, unknown cursors,
//! malformed ids without credentials, and answers sent before the body is
//! read on a keep-alive connection.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{Backend, Idp, Res, TestApp, spawn_app, unknown_id};
use crate::on_both_backends;

#[track_caller]
fn assert_param(res: &Res, param: &str) {
    assert_eq!(res.body["error"]["param"], param, "param; body: {}", res.body);
}

#[track_caller]
fn assert_message_has(res: &Res, words: &str) {
    let message = res.body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(words), "the message should say {words:?}: {}", res.body);
}

/// A request with a raw JSON text body.
async fn send_text(app: &TestApp, method: Method, path: &str, token: &str, text: &str) -> Res {
    app.send_raw(method, path, Some(token), "application/json", text.to_owned()).await
}

async fn customers_limit(app: &TestApp, org: &str, key: &str) -> Value {
    app.get(&format!("/v1/orgs/{org}/entitlements"), key).await.expect(200)["limits"]["customers"]["limit"].clone()
}

async fn a_json_array_body_is_refused_and_changes_nothing(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let alice = app.user("alice@example.com").await;
    let key = app.api_key().await;
    let res =
        app.post("/v1/orgs", &alice.token, json!({"name": "Clinic", "billing_email": "pay@clinic.example"})).await;
    let team = res.expect(201)["id"].as_str().expect("id").to_owned();
    app.put(&format!("/v1/orgs/{team}/overrides"), &key, json!({"limits": {"customers": 5}})).await.expect(200);

    // `[]` would have cleared every override.
    let res = send_text(&app, Method::PUT, &format!("/v1/orgs/{team}/overrides"), &key, "[]").await;
    res.expect_error(422, "invalid_request");
    assert_message_has(&res, "the body must be a JSON object");
    assert_eq!(customers_limit(&app, &team, &key).await, 5);

    // `["X", null, null]` would have renamed the org and cleared its billing e-mail.
    for text in [r#"["X",null,null]"#, r#""X""#, "5", "null", "true"] {
        let res = send_text(&app, Method::PATCH, &format!("/v1/orgs/{team}"), &alice.token, text).await;
        res.expect_error(422, "invalid_request");
        assert_message_has(&res, "the body must be a JSON object");
    }
    let org = app.get(&format!("/v1/orgs/{team}"), &alice.token).await;
    assert_eq!(org.expect(200)["name"], "Clinic");
    assert_eq!(org.body["billing_email"], "pay@clinic.example");

    let path = format!("/v1/orgs/{team}/resources");
    let res = send_text(&app, Method::POST, &path, &alice.token, r#"["customers","c-1","Ada"]"#).await;
    res.expect_error(422, "invalid_request");
    assert_eq!(app.count("SELECT COUNT(*) FROM resources").await, 0);

    let text = format!(r#"["{team}"]"#);
    let res = send_text(&app, Method::PUT, "/v1/me/active_org", &alice.token, &text).await;
    res.expect_error(422, "invalid_request");
    assert_eq!(app.get("/v1/me", &alice.token).await.expect(200)["active_org_id"], alice.personal_org.as_str());

    let res = send_text(&app, Method::POST, &format!("/v1/orgs/{team}/check"), &alice.token, r#"["sso"]"#).await;
    res.expect_error(422, "invalid_request");
    // Trailing data after the object is malformed JSON, not ignored.
    let res =
        send_text(&app, Method::PATCH, &format!("/v1/orgs/{team}"), &alice.token, r#"{"name": "Y"} {"name": "Z"}"#)
            .await;
    res.expect_error(400, "invalid_request");
    assert_eq!(app.get(&format!("/v1/orgs/{team}"), &alice.token).await.expect(200)["name"], "Clinic");
}

async fn control_characters_are_refused_in_every_stored_string(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let alice = app.user("alice@example.com").await;
    let team = app.team(&alice, "Clinic").await;
    let resources = format!("/v1/orgs/{team}/resources");
    let cases = [
        (json!({"type": "customers", "external_id": "c\u{0}1"}), "external_id"),
        (json!({"type": "customers", "name": "Ada\u{0}"}), "name"),
        (json!({"type": "customers", "name": "Ada\u{1b}[31m"}), "name"),
        // Names and ids are one line.
        (json!({"type": "customers", "external_id": "c\n1"}), "external_id"),
    ];
    for (body, param) in cases {
        let res = app.post(&resources, &alice.token, body.clone()).await;
        res.expect_error(422, "invalid_request");
        assert_param(&res, param);
    }
    assert_eq!(app.count("SELECT COUNT(*) FROM resources").await, 0);

    let org = format!("/v1/orgs/{team}");
    let res = app.patch(&org, &alice.token, json!({"settings": {"motto": "a\u{0}b"}})).await;
    res.expect_error(422, "invalid_request");
    assert_param(&res, "settings.motto");
    assert_message_has(&res, "U+0000");
    let res = app.patch(&org, &alice.token, json!({"settings": {"nested": {"list": ["ok", "\u{7}"]}}})).await;
    res.expect_error(422, "invalid_request");
    assert_param(&res, "settings.nested.list.1");
    let res = app.patch(&org, &alice.token, json!({"settings": {"ke\u{0}y": "v"}})).await;
    res.expect_error(422, "invalid_request");
    let res = app.patch(&org, &alice.token, json!({"name": "Re\u{0}named"})).await;
    res.expect_error(422, "invalid_request");
    assert_param(&res, "name");
    let got = app.get(&org, &alice.token).await;
    assert_eq!(got.expect(200)["name"], "Clinic");
    assert_eq!(got.body["settings"], json!({}));

    // Free text inside settings may break lines; it is stored as sent.
    let res = app.patch(&org, &alice.token, json!({"settings": {"footer": "line 1\nline 2\tend"}})).await;
    assert_eq!(res.expect(200)["settings"]["footer"], "line 1\nline 2\tend");
    // Printable Unicode is fine everywhere.
    let res = app.post(&resources, &alice.token, json!({"type": "customers", "name": "Zoë 東京 🏥"})).await;
    assert_eq!(res.expect(201)["name"], "Zoë 東京 🏥");
}

async fn control_characters_in_a_tokens_name_are_dropped(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let mut claims = Idp::claims("sub-ada", "ada@example.com");
    claims["name"] = json!("Ada\u{0} Lovelace\u{1b}\n");
    let ada = app.user_with_claims(&claims).await;
    let me = app.get("/v1/me", &ada.token).await;
    assert_eq!(me.expect(200)["name"], "Ada Lovelace");
    assert_eq!(me.body["email"], "ada@example.com");

    // An address with a control character is no address: absent, unverified.
    let mut claims = Idp::claims("sub-eve", "eve@example.com");
    claims["email"] = json!("eve\u{0}@example.com");
    claims["name"] = json!("\u{0}");
    let eve = app.user_with_claims(&claims).await;
    let me = app.get("/v1/me", &eve.token).await;
    assert_eq!(me.expect(200)["email"], Value::Null);
    assert_eq!(me.body["email_verified"], false);
    assert_eq!(me.body["name"], Value::Null);
}

async fn duplicate_keys_in_nested_objects_are_refused(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let alice = app.user("alice@example.com").await;
    let key = app.api_key().await;
    let team = app.team(&alice, "Clinic").await;
    let overrides = format!("/v1/orgs/{team}/overrides");
    app.put(&overrides, &key, json!({"limits": {"customers": 5}})).await.expect(200);

    let res =
        send_text(&app, Method::PUT, &overrides, &key, r#"{"limits": {"customers": 50, "customers": 500}}"#).await;
    res.expect_error(422, "invalid_request");
    assert_param(&res, "limits.customers");
    assert_message_has(&res, "customers");
    let res = send_text(&app, Method::PUT, &overrides, &key, r#"{"features": {"sso": true, "sso": false}}"#).await;
    res.expect_error(422, "invalid_request");
    assert_param(&res, "features.sso");
    assert_eq!(customers_limit(&app, &team, &key).await, 5);

    let org = format!("/v1/orgs/{team}");
    let text = r#"{"settings": {"theme": "dark", "deep": {"a": 1, "a": 2}}}"#;
    let res = send_text(&app, Method::PATCH, &org, &alice.token, text).await;
    res.expect_error(422, "invalid_request");
    assert_param(&res, "settings.deep.a");
    let res = send_text(&app, Method::PATCH, &org, &alice.token, r#"{"name": "A", "name": "B"}"#).await;
    res.expect_error(422, "invalid_request");
    assert_param(&res, "name");
    let got = app.get(&org, &alice.token).await;
    assert_eq!(got.expect(200)["name"], "Clinic");
    assert_eq!(got.body["settings"], json!({}));
}

async fn check_is_exact_at_the_top_of_the_range_and_its_hint_is_true(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let alice = app.user("alice@example.com").await;
    let key = app.api_key().await;
    let team = app.team(&alice, "Clinic").await;
    let overrides = format!("/v1/orgs/{team}/overrides");
    app.put(&overrides, &key, json!({"limits": {"customers": i64::MAX}})).await.expect(200);
    for i in 0..2 {
        let body = json!({"type": "customers", "external_id": format!("c{i}")});
        app.post(&format!("/v1/orgs/{team}/resources"), &alice.token, body).await.expect(201);
    }
    let check = format!("/v1/orgs/{team}/check");
    let res = app.post(&check, &alice.token, json!({"limit": "customers", "amount": i64::MAX})).await;
    assert_eq!(res.expect(200)["allowed"], false, "2 in use + i64::MAX passes every limit: {}", res.body);
    let res = app.post(&check, &alice.token, json!({"limit": "customers", "amount": i64::MAX - 2})).await;
    assert_eq!(res.expect(200)["allowed"], true, "{}", res.body);

    app.put(&overrides, &key, json!({"limits": {"customers": 10}})).await.expect(200);
    let res = app.post(&check, &alice.token, json!({"limit": "customers", "amount": 100})).await;
    assert_eq!(res.expect(200)["allowed"], false);
    let reason = res.body["reason"].as_str().expect("a reason");
    assert!(reason.contains("add at most 8"), "{reason}");
    assert!(!reason.contains("remove"), "removing the 2 in use can't make room for 100: {reason}");
    let res = app.post(&check, &alice.token, json!({"limit": "customers", "amount": 8})).await;
    assert_eq!(res.expect(200)["allowed"], true);
}

async fn an_unknown_cursor_is_refused_by_every_list(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let alice = app.user("alice@example.com").await;
    let bob = app.user("bob@example.com").await;
    let dave = app.user("dave@example.com").await;
    let key = app.api_key().await;
    let team = app.team(&alice, "Clinic").await;
    app.put(&format!("/v1/orgs/{team}/overrides"), &key, json!({"limits": {"seats": 5}})).await.expect(200);
    app.add_member(&team, &alice, &bob, "member").await;
    app.invite(&team, &alice, "carol@example.com", "member").await;
    let body = json!({"type": "customers", "external_id": "c-1"});
    app.post(&format!("/v1/orgs/{team}/resources"), &alice.token, body).await.expect(201);

    let lists = [
        ("/v1/orgs".to_owned(), &alice.token, "org"),
        (format!("/v1/orgs/{team}/members"), &alice.token, "usr"),
        (format!("/v1/orgs/{team}/invitations"), &alice.token, "inv"),
        (format!("/v1/orgs/{team}/resources"), &alice.token, "res"),
        (format!("/v1/orgs/{team}/events"), &alice.token, "evt"),
        ("/v1/billing/events".to_owned(), &key, "pev"),
    ];
    for (path, token, prefix) in lists {
        // Unknown, of another type, another org's, and no id at all.
        for cursor in [unknown_id(prefix), bob.personal_org.clone(), dave.id.clone(), "zzz".to_owned()] {
            let res = app.get(&format!("{path}?starting_after={cursor}"), token).await;
            res.expect_error(400, "invalid_request");
            assert_param(&res, "starting_after");
            assert_message_has(&res, "not in this list");
        }
    }
    // A resource of another type is not in the `?type=` list.
    let res = app.get(&format!("/v1/orgs/{team}/resources"), &alice.token).await;
    let resource = res.expect(200)["data"][0]["id"].as_str().expect("resource id").to_owned();
    let res = app.get(&format!("/v1/orgs/{team}/resources?type=clients&starting_after={resource}"), &alice.token).await;
    res.expect_error(400, "invalid_request");

    // Following real cursors still walks every item once.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let cursor = after.as_ref().map(|c| format!("&starting_after={c}")).unwrap_or_default();
        let res = app.get(&format!("/v1/orgs/{team}/members?limit=1{cursor}"), &alice.token).await;
        let page = res.expect(200).clone();
        for m in page["data"].as_array().expect("data") {
            seen.push(m["user_id"].as_str().expect("user id").to_owned());
        }
        if page["has_more"] != true {
            break;
        }
        after = seen.last().cloned();
        assert!(seen.len() <= 2, "cursors loop: {seen:?}");
    }
    seen.sort();
    let mut expected = vec![alice.id.clone(), bob.id.clone()];
    expected.sort();
    assert_eq!(seen, expected);
    let res = app.get(&format!("/v1/orgs/{team}/resources?starting_after={resource}"), &alice.token).await;
    assert_eq!(res.expect(200)["data"], json!([]));
}

async fn without_credentials_a_malformed_id_is_unauthenticated(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let alice = app.user("alice@example.com").await;
    let team = app.team(&alice, "Clinic").await;
    for path in ["/v1/orgs/nope", "/v1/orgs/nope/members", "/v1/orgs/org_123/resources", "/v1/orgs/usr_x/events"] {
        app.get_anonymous(path).await.expect_error(401, "unauthenticated");
    }
    let cases = [
        (Method::PATCH, format!("/v1/orgs/{team}/members/nope"), Some(json!({"role": "admin"}))),
        (Method::DELETE, "/v1/orgs/nope/invitations/nope".to_owned(), None),
        (Method::POST, "/v1/orgs/nope/check".to_owned(), Some(json!({"feature": "sso"}))),
    ];
    for (method, path, body) in cases {
        let res = app.send(method.clone(), &path, None, body).await;
        res.expect_error(401, "unauthenticated");
    }
    // With credentials, the malformed id is named.
    let res = app.get("/v1/orgs/nope", &alice.token).await;
    res.expect_error(400, "invalid_request");
    assert_param(&res, "org");
}

/// A raw HTTP/1.1 response read from a kept-alive connection.
struct RawResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl RawResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Reads one response (head and `Content-Length` body) within a deadline,
/// leaving the connection open.
async fn read_response(stream: &mut tokio::net::TcpStream) -> RawResponse {
    let read = async {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at;
            }
            let n = stream.read(&mut chunk).await.expect("read");
            assert!(n > 0, "the connection closed before a response: {:?}", String::from_utf8_lossy(&buf));
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut lines = head.lines();
        let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|c| c.parse().ok()).expect("status");
        let headers: Vec<(String, String)> =
            lines.filter_map(|l| l.split_once(':')).map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned())).collect();
        let length: usize = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut body = buf[head_end + 4..].to_vec();
        while body.len() < length {
            let n = stream.read(&mut chunk).await.expect("read body");
            assert!(n > 0, "the connection closed inside a body");
            body.extend_from_slice(&chunk[..n]);
        }
        RawResponse { status, headers, body }
    };
    tokio::time::timeout(Duration::from_secs(20), read).await.expect("a response within 20 s")
}

async fn an_answer_sent_before_the_body_is_read_says_connection_close(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let alice = app.user("alice@example.com").await;
    let host = app.addr;

    // 401 before the body: only the head is sent, the body would follow.
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.expect("connect");
    let head = format!(
        "POST /v1/orgs HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: 64\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    let res = read_response(&mut stream).await;
    assert_eq!(res.status, 401, "{}", String::from_utf8_lossy(&res.body));
    assert_eq!(res.header("connection"), Some("close"), "{:?}", res.headers);

    // 404 on an unknown route with a body sent in full.
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.expect("connect");
    let body = r#"{"name": "Clinic"}"#;
    let request = format!(
        "POST /v1/nope HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        alice.token,
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let res = read_response(&mut stream).await;
    assert_eq!(res.status, 404);
    assert_eq!(res.header("connection"), Some("close"), "{:?}", res.headers);

    // A body that was read keeps the connection: two requests on one.
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.expect("connect");
    let request = format!(
        "POST /v1/orgs HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        alice.token,
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let res = read_response(&mut stream).await;
    assert_eq!(res.status, 201, "{}", String::from_utf8_lossy(&res.body));
    assert_eq!(res.header("connection"), None, "{:?}", res.headers);
    let again = format!("GET /v1/orgs HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {}\r\n\r\n", alice.token);
    stream.write_all(again.as_bytes()).await.expect("write on the same connection");
    let res = read_response(&mut stream).await;
    assert_eq!(res.status, 200);
}

on_both_backends!(
    a_json_array_body_is_refused_and_changes_nothing,
    control_characters_are_refused_in_every_stored_string,
    control_characters_in_a_tokens_name_are_dropped,
    duplicate_keys_in_nested_objects_are_refused,
    check_is_exact_at_the_top_of_the_range_and_its_hint_is_true,
    an_unknown_cursor_is_refused_by_every_list,
    without_credentials_a_malformed_id_is_unauthenticated,
    an_answer_sent_before_the_body_is_read_says_connection_close,
);
