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

/// PostgreSQL only: the slow replica reaches the database through a TCP
/// proxy (SQLite is one file, written by one process at a time).
mod postgres_only {
    use std::time::Duration;

    use serde_json::json;

    use super::{next_events, open};
    use crate::billing_support::eventually;
    use crate::db_proxy::{DbProxy, Link, Replica};
    use crate::helpers::{Backend, spawn_app};

    /// The case: a replica whose database answers 1 s late takes
    /// its event's place in the log long before it commits, and another
    /// replica's change commits meanwhile. A live stream still gets both,
    /// once each, in the order of the log.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_slow_replicas_change_reaches_the_stream_in_order() {
        let Some(app) = spawn_app(Backend::Postgres).await else { return };
        let proxy = DbProxy::start(&app.database_url).await;
        let slow = Replica::start(&app, &proxy, |c| {
            // Every round trip takes 1 s here (the check of a pooled
            // connection too): room for a few dozen of them.
            c.database.acquire_timeout_ms = 30_000;
            c.server.request_timeout_secs = 300;
            c.server.idempotency_lease_secs = 600;
            c.cache.entitlements_ttl_ms = 60_000;
            c.max_connections = 2;
        })
        .await;
        let key = app.api_key().await;
        let alice = app.user("alice@example.com").await;
        let slow_org = app.team(&alice, "Slow Clinic").await;
        let fast_org = app.team(&alice, "Fast Clinic").await;
        // Before it slows down, the slow replica learns the key and the org,
        // and each of its connections prepares the statements of a create.
        let path = format!("/v1/orgs/{slow_org}/resources");
        let warm = (0..3).map(|_| slow.send(reqwest::Method::POST, &path, &key, Some(json!({"type": "clients"}))));
        for res in futures_util::future::join_all(warm).await {
            res.expect(201);
        }

        let mut stream = open(&app, &key, None).await;
        let mut buffer = String::new();
        let taken_before = app.count("SELECT last_value FROM events_seq_seq").await;
        proxy.set(Link::Forward { latency: Duration::from_secs(1) });
        let slow_create = tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            let res =
                slow.send(reqwest::Method::POST, &path, &key, Some(json!({"type": "customers", "name": "Late"}))).await;
            eprintln!("the slow create took {:?}", started.elapsed());
            res
        });
        // A sequence number is taken outside the transaction: seen at once.
        eventually(120, "the slow replica's event to take a sequence number", || async {
            app.count("SELECT last_value FROM events_seq_seq").await > taken_before
        })
        .await;
        // Its commit is at least one 1 s round trip away: this change commits first.
        app.patch(&format!("/v1/orgs/{fast_org}"), &alice.token, json!({"name": "Fast & Co"})).await.expect(200);
        slow_create.await.expect("the slow request ends").expect(201);

        let events = next_events(&mut stream, &mut buffer, 2).await;
        let kinds: Vec<&str> = events.iter().map(|(_, kind, _)| kind.as_str()).collect();
        assert!(kinds.contains(&"resource.created") && kinds.contains(&"org.updated"), "{kinds:?}");
        let streamed: Vec<&str> = events.iter().map(|(id, _, _)| id.as_str()).collect();
        let in_log_order = log_order(&app, &streamed).await;
        assert_eq!(streamed, in_log_order, "the stream follows the log's order");
    }

    /// Two transactions of other sessions: the first to record an event
    /// commits last. The log numbers them in commit order, and the stream
    /// delivers them so.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn events_are_numbered_and_streamed_in_commit_order() {
        use sqlx::Connection;
        let Some(app) = spawn_app(Backend::Postgres).await else { return };
        let key = app.api_key().await;
        let mut stream = open(&app, &key, None).await;
        let mut buffer = String::new();
        let insert = |id: &str| {
            format!(
                "INSERT INTO events (id, org_id, type, actor, data, created_at) VALUES ('{id}', NULL, 'test.event', 'system', '{{}}', 0)"
            )
        };
        let (first_id, second_id) = ("evt_01m8recordedfirst0000000", "evt_01m8recordedsecond000000");
        let mut first = sqlx::PgConnection::connect(&app.database_url).await.expect("pg");
        let mut second = sqlx::PgConnection::connect(&app.database_url).await.expect("pg");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("BEGIN; {}", insert(first_id))))
            .execute(&mut first)
            .await
            .expect("first records");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("BEGIN; {}; COMMIT", insert(second_id))))
            .execute(&mut second)
            .await
            .expect("second records and commits");
        sqlx::raw_sql("COMMIT").execute(&mut first).await.expect("first commits");

        let in_log_order = log_order(&app, &[first_id, second_id]).await;
        assert_eq!(in_log_order, [second_id, first_id], "numbered in commit order");
        let events = next_events(&mut stream, &mut buffer, 2).await;
        let streamed: Vec<&str> = events.iter().map(|(id, _, _)| id.as_str()).collect();
        assert_eq!(streamed, [second_id, first_id]);
    }

    /// `ids` sorted by their place in the log.
    async fn log_order<'a>(app: &crate::helpers::TestApp, ids: &[&'a str]) -> Vec<&'a str> {
        let mut placed = Vec::new();
        for id in ids {
            placed.push((app.count(&format!("SELECT seq FROM events WHERE id = '{id}'")).await, *id));
        }
        placed.sort();
        placed.into_iter().map(|(_, id)| id).collect()
    }
}
