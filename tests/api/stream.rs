//! `GET /v1/events/stream`: server-sent events of every committed change,
//! resumable with `Last-Event-ID`.

use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, spawn_app};
use crate::on_both_backends;

/// Reads SSE events (`id`, `event`, `data`) from a streaming response until
/// `count` arrived, or fails after 10 s.
async fn next_events(res: &mut reqwest::Response, buffer: &mut String, count: usize) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while out.len() < count {
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let (mut id, mut kind, mut data) = (String::new(), String::new(), String::new());
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id: ") {
                    id = v.to_owned();
                } else if let Some(v) = line.strip_prefix("event: ") {
                    kind = v.to_owned();
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data.push_str(v);
                }
            }
            if !id.is_empty() {
                out.push((id, kind, serde_json::from_str(&data).expect("event data is JSON")));
            }
        }
        if out.len() >= count {
            break;
        }
        let chunk = tokio::time::timeout_at(deadline, res.chunk()).await.expect("events arrive within 10 s");
        buffer.push_str(std::str::from_utf8(&chunk.expect("stream").expect("stream open")).expect("utf-8"));
    }
    out
}

async fn open(app: &TestApp, key: &str, last_event_id: Option<&str>) -> reqwest::Response {
    let mut req = app.http.get(app.url("/v1/events/stream")).bearer_auth(key);
    if let Some(id) = last_event_id {
        req = req.header("last-event-id", id);
    }
    let res = req.send().await.expect("reaches");
    assert_eq!(res.status().as_u16(), 200);
    assert!(res.headers()["content-type"].to_str().unwrap_or("").starts_with("text/event-stream"));
    res
}

async fn the_stream_delivers_committed_changes_and_resumes_after_the_last_event(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let key = app.api_key().await;
    let alice = app.user("alice@example.com").await;
    let mut res = open(&app, &key, None).await;
    let mut buffer = String::new();
    let org = app.team(&alice, "Agency").await;
    app.patch(&format!("/v1/orgs/{org}"), &alice.token, json!({"name": "Agency & Co"})).await.expect(200);
    let events = next_events(&mut res, &mut buffer, 2).await;
    assert_eq!(events[0].1, "org.created");
    assert_eq!(events[0].2["org_id"], org.as_str());
    assert_eq!(events[0].2["actor"], alice.id.as_str());
    assert_eq!(events[1].1, "org.updated");
    assert!(events[0].0.starts_with("evt_") && events[0].0 == events[0].2["id"]);
    drop(res);

    // Changes while disconnected arrive after a reconnect with Last-Event-ID.
    app.post(&format!("/v1/orgs/{org}/invitations"), &alice.token, json!({"email": "bob@example.com"}))
        .await
        .expect(201);
    let mut res = open(&app, &key, Some(&events[0].0)).await;
    let mut buffer = String::new();
    let resumed = next_events(&mut res, &mut buffer, 2).await;
    assert_eq!(resumed[0].0, events[1].0, "resumes right after the given event");
    assert_eq!(resumed[1].1, "invitation.created");
}

async fn the_stream_is_for_api_keys_and_refuses_an_unknown_resume_point(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let key = app.api_key().await;
    let alice = app.user("alice@example.com").await;
    app.get("/v1/events/stream", &alice.token).await.expect_error(403, "forbidden");
    let res = app
        .http
        .get(app.url("/v1/events/stream"))
        .bearer_auth(&key)
        .header("last-event-id", "evt_00000000000000000000000000")
        .send()
        .await
        .expect("reaches");
    assert_eq!(res.status().as_u16(), 400);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["error"]["param"], "Last-Event-ID");
}

on_both_backends!(
    the_stream_delivers_committed_changes_and_resumes_after_the_last_event,
    the_stream_is_for_api_keys_and_refuses_an_unknown_resume_point,
);
