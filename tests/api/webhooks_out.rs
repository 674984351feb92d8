//! Outgoing webhooks (Standard Webhooks): every delivery is received by a
//! real HTTP receiver on loopback (`webhook_receiver.py`) that verifies it
//! with the `standardwebhooks` PyPI package — an implementation independent
//! of orgplane's signing code — and records what it got.
//!
//! The receiver needs `ORGPLANE_TEST_PYTHON` (set by `scripts/test.sh`: the
//! venv with the pinned `standardwebhooks`). Without it a test fails when
//! `CI` is set and otherwise skips loudly.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use orgplane_server::clock::ManualClock;
use orgplane_server::{Application, Config};
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;

use crate::helpers::{Backend, TestApp, TestDb, spawn_app_with};
use crate::on_both_backends;

on_both_backends!(
    every_event_type_reaches_a_subscribed_endpoint_signed_in_commit_order,
    filters_by_prefix_and_org_hold_and_a_disabled_endpoint_gets_nothing,
    a_receiver_answering_500_twice_then_200_gets_three_attempts_of_one_webhook_id,
    orgplane_killed_with_deliveries_pending_delivers_everything_after_restart_and_repeats_no_success,
    during_a_secret_rotation_both_secrets_verify_and_after_it_only_the_new_one,
    a_private_address_or_plain_http_url_is_refused_without_the_allow_flags,
    a_target_that_resolves_to_a_private_address_at_delivery_is_not_contacted,
    a_redirect_is_not_followed,
    a_410_answer_disables_the_endpoint_and_writes_an_event,
    an_endpoint_failing_for_disable_after_hours_is_disabled,
    replay_resends_exactly_the_events_after_the_given_point,
    a_receiver_that_never_answers_does_not_delay_another_endpoint,
    endpoints_are_listed_changed_and_deleted_and_bad_input_changes_nothing,
);

/// The receiver: a child process, killed when dropped.
pub struct Receiver {
    _child: tokio::process::Child,
    pub base: String,
    http: reqwest::Client,
}

impl Receiver {
    /// `None` (after a loud message) when no test Python is configured
    /// and `CI` is unset; under `CI` that is a failure.
    pub async fn start() -> Option<Receiver> {
        let python = match std::env::var("ORGPLANE_TEST_PYTHON") {
            Ok(p) if !p.is_empty() => p,
            _ => {
                if std::env::var_os("CI").is_some() {
                    panic!(
                        "CI is set and ORGPLANE_TEST_PYTHON is not: run the tests through scripts/test.sh, which prepares the Python venv with standardwebhooks"
                    );
                }
                eprintln!(
                    "\n!!! ORGPLANE_TEST_PYTHON is not set: SKIPPING this outgoing-webhook test (it verifies deliveries with the \
                     standardwebhooks PyPI package). Run scripts/test.sh, or `source scripts/python-env.sh` first.\n"
                );
                return None;
            }
        };
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/api/webhook_receiver.py");
        let mut child = tokio::process::Command::new(python)
            .arg(script)
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("the webhook receiver starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("the receiver says its port within 30 s")
            .expect("read")
            .expect("a line");
        let port = line.strip_prefix("PORT ").expect("PORT <n>").trim().to_owned();
        Some(Receiver { _child: child, base: format!("http://127.0.0.1:{port}"), http: reqwest::Client::new() })
    }

    pub fn url(&self, name: &str) -> String {
        format!("{}/hook/{name}", self.base)
    }

    pub async fn set_secrets(&self, name: &str, secrets: &[&str]) {
        let res = self.http.post(format!("{}/control/secrets/{name}", self.base)).json(&secrets).send().await;
        assert!(res.expect("receiver control").status().is_success());
    }

    pub async fn script(&self, name: &str, statuses: &[u16]) {
        let res = self.http.post(format!("{}/control/script/{name}", self.base)).json(&statuses).send().await;
        assert!(res.expect("receiver control").status().is_success());
    }

    /// Makes the receiver wait `secs` before answering deliveries to `name`.
    pub async fn delay(&self, name: &str, secs: u64) {
        let res = self.http.post(format!("{}/control/delay/{name}", self.base)).json(&secs).send().await;
        assert!(res.expect("receiver control").status().is_success());
    }

    /// Answers every delivery to `name` with `status` (`None`: as scripted again).
    pub async fn fail(&self, name: &str, status: Option<u16>) {
        let res = self.http.post(format!("{}/control/fail/{name}", self.base)).json(&status).send().await;
        assert!(res.expect("receiver control").status().is_success());
    }

    pub async fn received(&self) -> Vec<Value> {
        let res = self.http.get(format!("{}/control/received", self.base)).send().await.expect("receiver control");
        res.json().await.expect("json")
    }

    /// Waits until `done` holds for the deliveries so far (30 s at most:
    /// a guard against a hang, not a timing).
    pub async fn wait_until(&self, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        self.wait_up_to(30, what, done).await
    }

    pub async fn wait_up_to(&self, secs: u64, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let got = self.received().await;
            if done(&got) {
                return got;
            }
            if Instant::now() >= deadline {
                let ids: HashSet<&str> = got.iter().filter_map(|d| d["webhook_id"].as_str()).collect();
                panic!(
                    "waited {secs} s for {what}; {} deliveries of {} events received: {got:#?}",
                    got.len(),
                    ids.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await; // polling the receiver's record
        }
    }
}

/// Webhook settings for tests: local receivers allowed, short retries,
/// a quick poll.
pub(crate) fn local_webhooks(config: &mut Config) {
    config.webhooks.allow_http = Some(true);
    config.webhooks.allow_private_targets = Some(true);
    config.webhooks.retry_schedule_secs = vec![1, 1, 1];
    config.webhooks.timeout_secs = 2;
    config.webhooks.poll_interval_ms = 100;
}

async fn app_and_receiver(backend: Backend) -> Option<(TestApp, Receiver, String)> {
    app_and_receiver_with(backend, |_| {}).await
}

pub(crate) async fn app_and_receiver_with(
    backend: Backend,
    adjust: impl FnOnce(&mut Config),
) -> Option<(TestApp, Receiver, String)> {
    let receiver = Receiver::start().await?;
    let app = spawn_app_with(backend, |c| {
        local_webhooks(c);
        adjust(c)
    })
    .await?;
    let key = app.api_key().await;
    Some((app, receiver, key))
}

/// Creates an endpoint for the receiver's `name` and tells the receiver
/// its secret; returns the endpoint's id and secret.
pub(crate) async fn endpoint(
    app: &TestApp,
    key: &str,
    receiver: &Receiver,
    name: &str,
    extra: Value,
) -> (String, String) {
    let mut body = json!({"url": receiver.url(name)});
    body.as_object_mut().expect("object").extend(extra.as_object().cloned().unwrap_or_default());
    let res = app.post("/v1/webhook_endpoints", key, body).await;
    let created = res.expect(201);
    let id = created["id"].as_str().expect("id").to_owned();
    let secret = created["secret"].as_str().expect("secret shown once").to_owned();
    assert!(id.starts_with("whe_"), "{created}");
    assert!(secret.starts_with("whsec_"), "{created}");
    receiver.set_secrets(name, &[&secret]).await;
    (id, secret)
}

/// The ids and types of the events committed after the endpoint was made.
async fn events_for(app: &TestApp, endpoint: &str) -> Vec<(String, String)> {
    let rows = app
        .strings(&format!(
            "SELECT id || ' ' || type FROM events WHERE seq > (SELECT start_after_seq FROM webhook_endpoints WHERE id = '{endpoint}') ORDER BY seq"
        ))
        .await;
    rows.into_iter()
        .map(|r| {
            let (id, kind) = r.split_once(' ').expect("id and type");
            (id.to_owned(), kind.to_owned())
        })
        .collect()
}

pub(crate) fn ids_of(received: &[Value], name: &str) -> Vec<String> {
    received.iter().filter(|r| r["name"] == name).filter_map(|r| r["webhook_id"].as_str().map(str::to_owned)).collect()
}

fn assert_verified(received: &[Value]) {
    for r in received {
        assert!(
            r["verified"].as_array().is_some_and(|v| v.iter().any(|b| b == true)),
            "every delivery verifies with standardwebhooks: {r:#}"
        );
    }
}

async fn deliveries(app: &TestApp, key: &str, endpoint: &str, query: &str) -> Vec<Value> {
    let res = app.get(&format!("/v1/webhook_endpoints/{endpoint}/deliveries?limit=100{query}"), key).await;
    res.expect(200)["data"].as_array().expect("data").clone()
}

async fn every_event_type_reaches_a_subscribed_endpoint_signed_in_commit_order(backend: Backend) {
    let Some((app, receiver, key)) = app_and_receiver(backend).await else { return };
    let (endpoint, _) = endpoint(&app, &key, &receiver, "all", json!({})).await;

    // A tour of the API: users, orgs, members, invitations, resources, overrides.
    let alice = app.user("alice@example.com").await;
    let bob = app.user("bob@example.com").await;
    let team = app.team(&alice, "Clinic").await;
    app.patch(&format!("/v1/orgs/{team}"), &alice.token, json!({"name": "Downtown Clinic"})).await.expect(200);
    app.add_member(&team, &alice, &bob, "member").await;
    app.patch(&format!("/v1/orgs/{team}/members/{}", bob.id), &alice.token, json!({"role": "admin"})).await.expect(200);
    let res = app.post(&format!("/v1/orgs/{team}/resources"), &key, json!({"type": "customers", "name": "Acme"})).await;
    let res_id = res.expect(201)["id"].as_str().expect("id").to_owned();
    app.put(&format!("/v1/orgs/{team}/overrides"), &key, json!({"limits": {"customers": 50}})).await.expect(200);
    app.delete(&format!("/v1/orgs/{team}/resources/{res_id}"), &key).await.expect(200);
    app.delete(&format!("/v1/orgs/{team}/members/{}", bob.id), &alice.token).await.expect(200);

    let expected = events_for(&app, &endpoint).await;
    let types: HashSet<&str> = expected.iter().map(|(_, t)| t.as_str()).collect();
    for kind in [
        "user.created",
        "org.created",
        "org.updated",
        "invitation.created",
        "invitation.accepted",
        "member.role_changed",
        "resource.created",
        "resource.deleted",
        "overrides.updated",
        "member.removed",
    ] {
        assert!(types.contains(kind), "the tour wrote a {kind} event: {types:?}");
    }
    let want: Vec<String> = expected.iter().map(|(id, _)| id.clone()).collect();
    let got = receiver.wait_until("every event", |r| ids_of(r, "all").len() >= want.len()).await;
    assert_verified(&got);
    // In commit order, each once, each the event as the stream shows it.
    assert_eq!(ids_of(&got, "all"), want, "every event once, in commit order");
    let mut last_seq = 0;
    for (r, (id, kind)) in got.iter().zip(&expected) {
        let body = &r["body"];
        assert_eq!(body["id"], id.as_str());
        assert_eq!(body["type"], kind.as_str());
        assert!(body["created_at"].as_str().is_some_and(|t| t.ends_with('Z')), "{body}");
        let seq = body["seq"].as_i64().expect("seq");
        assert!(seq > last_seq, "seq grows with commit order: {seq} after {last_seq}");
        last_seq = seq;
        assert!(body.get("data").is_some() && body.get("actor").is_some(), "{body}");
        assert_eq!(r["content_type"], "application/json");
        assert!(r["user_agent"].as_str().is_some_and(|u| u.starts_with("orgplane/")), "{r}");
        let ts: i64 = r["webhook_timestamp"].as_str().expect("timestamp").parse().expect("unix seconds");
        assert!((ts - time::OffsetDateTime::now_utc().unix_timestamp()).abs() < 120, "{ts}");
    }
    // The delivery log agrees (once the last answer is recorded).
    let deadline = Instant::now() + Duration::from_secs(30);
    while deliveries(&app, &key, &endpoint, "&status=succeeded").await.len() < want.len() {
        assert!(Instant::now() < deadline, "the log shows every delivery succeeded within 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await; // polling the delivery log
    }
    assert!(deliveries(&app, &key, &endpoint, "&status=pending").await.is_empty());
}

async fn filters_by_prefix_and_org_hold_and_a_disabled_endpoint_gets_nothing(backend: Backend) {
    let Some((app, receiver, key)) = app_and_receiver(backend).await else { return };
    let alice = app.user("alice@example.com").await;
    let bob = app.user("bob@example.com").await;
    let team = app.team(&alice, "Clinic").await;
    let other = app.team(&alice, "Other").await;
    let (_, _) = endpoint(&app, &key, &receiver, "members", json!({"event_types": ["member.*"]})).await;
    let (_, _) = endpoint(&app, &key, &receiver, "team", json!({"org_id": team})).await;
    let (off, _) = endpoint(&app, &key, &receiver, "off", json!({})).await;
    let (all, _) = endpoint(&app, &key, &receiver, "all", json!({})).await;
    let res = app.patch(&format!("/v1/webhook_endpoints/{off}"), &key, json!({"enabled": false})).await;
    assert_eq!(res.expect(200)["enabled"], false);

    app.patch(&format!("/v1/orgs/{team}"), &alice.token, json!({"name": "Clinic 2"})).await.expect(200);
    app.patch(&format!("/v1/orgs/{other}"), &alice.token, json!({"name": "Other 2"})).await.expect(200);
    app.add_member(&team, &alice, &bob, "member").await;
    app.patch(&format!("/v1/orgs/{team}/members/{}", bob.id), &alice.token, json!({"role": "admin"})).await.expect(200);
    app.add_member(&other, &alice, &bob, "member").await;

    let expected = events_for(&app, &all).await;
    let got =
        receiver.wait_until("the catch-all endpoint's events", |r| ids_of(r, "all").len() >= expected.len()).await;
    assert_verified(&got);
    let org_of: HashMap<String, Option<String>> = app
        .strings("SELECT id || ' ' || COALESCE(org_id, '-') FROM events")
        .await
        .into_iter()
        .map(|r| {
            let (id, org) = r.split_once(' ').expect("pair");
            (id.to_owned(), (org != "-").then(|| org.to_owned()))
        })
        .collect();
    let want_members: Vec<String> =
        expected.iter().filter(|(_, t)| t.starts_with("member.")).map(|(id, _)| id.clone()).collect();
    let want_team: Vec<String> = expected
        .iter()
        .filter(|(id, _)| org_of.get(id).cloned().flatten().as_deref() == Some(team.as_str()))
        .map(|(id, _)| id.clone())
        .collect();
    assert!(!want_members.is_empty() && !want_team.is_empty());
    let got = receiver
        .wait_until("the filtered endpoints' events", |r| {
            ids_of(r, "members").len() >= want_members.len() && ids_of(r, "team").len() >= want_team.len()
        })
        .await;
    assert_eq!(ids_of(&got, "members"), want_members, "member.* takes exactly the member events");
    assert_eq!(ids_of(&got, "team"), want_team, "org_id takes exactly that org's events");
    assert!(ids_of(&got, "off").is_empty(), "a disabled endpoint gets nothing: {got:#?}");
    assert_eq!(app.count(&format!("SELECT COUNT(*) FROM webhook_deliveries WHERE endpoint_id = '{off}'")).await, 0);
    // Nor a test event: refused, nothing queued.
    app.post(&format!("/v1/webhook_endpoints/{off}/test"), &key, json!({})).await.expect_error(409, "conflict");
    assert_eq!(app.count(&format!("SELECT COUNT(*) FROM webhook_deliveries WHERE endpoint_id = '{off}'")).await, 0);
}

async fn a_receiver_answering_500_twice_then_200_gets_three_attempts_of_one_webhook_id(backend: Backend) {
    let Some((app, receiver, key)) = app_and_receiver(backend).await else { return };
    let (endpoint, _) = endpoint(&app, &key, &receiver, "flaky", json!({})).await;
    receiver.script("flaky", &[500, 500]).await;
    let res = app.post(&format!("/v1/webhook_endpoints/{endpoint}/test"), &key, json!({})).await;
    let queued = res.expect(202).clone();
    let got = receiver.wait_until("a 200", |r| r.iter().any(|d| d["answered"] == 200)).await;
    assert_verified(&got);
    assert_eq!(got.iter().map(|r| r["answered"].as_i64().unwrap_or(0)).collect::<Vec<_>>(), vec![500, 500, 200]);
    let ids: HashSet<&str> = got.iter().filter_map(|r| r["webhook_id"].as_str()).collect();
    assert_eq!(ids, HashSet::from([queued["event_id"].as_str().expect("event id")]), "one webhook-id across retries");
    assert_eq!(got[0]["body"]["type"], "webhook.test");
    // The log shows all three.
    let log = deliveries(&app, &key, &endpoint, "").await;
    assert_eq!(log.len(), 1, "{log:#?}");
    let delivery = &log[0];
    assert_eq!(delivery["id"], queued["delivery_id"]);
    assert_eq!(delivery["status"], "succeeded");
    let attempts = delivery["attempts"].as_array().expect("attempts");
    assert_eq!(
        attempts.iter().map(|a| a["status_code"].as_i64().unwrap_or(0)).collect::<Vec<_>>(),
        vec![500, 500, 200]
    );
    assert_eq!(attempts.iter().map(|a| a["attempt"].as_i64().unwrap_or(0)).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert!(attempts[0]["response_excerpt"].as_str().is_some_and(|t| t.contains("500")), "{delivery:#}");
    assert!(attempts[0]["error"].as_str().is_some_and(|t| t.contains("500")), "{delivery:#}");
    assert!(attempts[2]["error"].is_null(), "{delivery:#}");
    assert!(attempts.iter().all(|a| a["duration_ms"].as_i64().is_some_and(|d| d >= 0)));
    // And the metrics count them by outcome.
    let metrics = app.http.get(app.url("/metrics")).send().await.expect("metrics").text().await.expect("text");
    assert!(metrics.contains("orgplane_webhook_attempts_total{outcome=\"failed_status\"} 2"), "{metrics}");
    assert!(metrics.contains("orgplane_webhook_attempts_total{outcome=\"succeeded\"} 1"), "{metrics}");
    assert!(metrics.contains("orgplane_webhook_oldest_pending_seconds 0"), "{metrics}");
}

/// The real binary, as `orgplane serve --dev` on a fixed port.
struct Serve {
    child: tokio::process::Child,
    base: String,
}

impl Serve {
    async fn start(database_url: &str, data: &PathBuf, config: &PathBuf, port: u16) -> Serve {
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_orgplane"))
            .args([
                "serve",
                "--dev",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--database-url",
                database_url,
                "--config",
            ])
            .arg(config)
            .env("ORGPLANE_DATA_DIR", data)
            .env("ORGPLANE_LOG", "warn")
            .env_remove("ORGPLANE_CONFIG")
            .kill_on_drop(true)
            .spawn()
            .expect("serve starts");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if http.get(format!("{base}/healthz")).send().await.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            assert!(Instant::now() < deadline, "serve did not answer /healthz within 60 s");
            tokio::time::sleep(Duration::from_millis(50)).await; // waiting for start-up
        }
        Serve { child, base }
    }

    fn kill(&mut self) {
        let pid = self.child.id().expect("running");
        let killed = std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status().expect("kill");
        assert!(killed.success());
    }
}

async fn orgplane_killed_with_deliveries_pending_delivers_everything_after_restart_and_repeats_no_success(
    backend: Backend,
) {
    let Some(receiver) = Receiver::start().await else { return };
    let Some((_db, url)) = TestDb::create(backend).await else { return };
    let data = std::env::temp_dir().join(format!("orgplane_sigkill_{}_{:?}", std::process::id(), backend));
    std::fs::create_dir_all(&data).expect("data dir");
    let config = data.join("orgplane.toml");
    // Failed attempts come back after 3 s; an endpoint lease of a killed
    // process runs out after 3 timeouts (3 s).
    std::fs::write(&config, "[webhooks]\nretry_schedule_secs = [3, 3, 3]\ntimeout_secs = 1\npoll_interval_ms = 100\n")
        .expect("config");
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("free port").local_addr().expect("addr").port();
    let mut serve = Serve::start(&url, &data, &config, port).await;
    let http = reqwest::Client::new();
    let key = std::process::Command::new(env!("CARGO_BIN_EXE_orgplane"))
        .args(["keys", "create", "--name", "sigkill", "--database-url", &url])
        .env("ORGPLANE_LOG", "warn")
        .output()
        .expect("keys create");
    let key = String::from_utf8_lossy(&key.stdout).trim().to_owned();
    let token: Value = http
        .post(format!("{}/dev/token", serve.base))
        .json(&json!({"email": "alice@example.com"}))
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("json");
    let token = token["token"].as_str().expect("token").to_owned();
    let res: Value = http
        .post(format!("{}/v1/webhook_endpoints", serve.base))
        .bearer_auth(&key)
        .json(&json!({"url": receiver.url("k")}))
        .send()
        .await
        .expect("create")
        .json()
        .await
        .expect("json");
    receiver.set_secrets("k", &[res["secret"].as_str().expect("secret")]).await;
    let org: Value = http
        .post(format!("{}/v1/orgs", serve.base))
        .bearer_auth(&token)
        .json(&json!({"name": "Team 0"}))
        .send()
        .await
        .expect("org")
        .json()
        .await
        .expect("json");
    let org = org["id"].as_str().expect("org id").to_owned();
    let rename = |n: usize| {
        let (http, base, token, org) = (http.clone(), serve.base.clone(), token.clone(), org.clone());
        async move {
            let res = http
                .patch(format!("{base}/v1/orgs/{org}"))
                .bearer_auth(&token)
                .json(&json!({"name": format!("Team {n}")}))
                .send()
                .await
                .expect("rename");
            assert!(res.status().is_success(), "{}", res.status());
        }
    };
    for n in 1..=3 {
        rename(n).await;
    }
    // Everything so far arrives and succeeds.
    // user.created, two org.created (personal, team), three renames.
    let first =
        receiver.wait_until("the first deliveries", |r| r.iter().filter(|d| d["answered"] == 200).count() >= 6).await;
    // Then the receiver fails every delivery while more changes are made:
    // deliveries are pending (waiting for their retry) when orgplane is
    // killed, and the last changes may not even have been sent. No answer
    // is a success between the first deliveries and the restart, so an
    // event answered 200 twice could only be a success orgplane repeated.
    receiver.fail("k", Some(500)).await;
    for n in 4..=9 {
        rename(n).await;
    }
    receiver.wait_until("failed answers", |r| r.iter().filter(|d| d["answered"] == 500).count() >= 3).await;
    serve.kill();
    let _ = serve.child.wait().await;
    let all_events: Vec<String> = strings_at(
        backend,
        &url,
        "SELECT id FROM events WHERE seq > (SELECT start_after_seq FROM webhook_endpoints) ORDER BY seq",
    )
    .await;
    assert_eq!(all_events.len(), 12, "user.created, two org.created, nine renames: {all_events:?}");
    let pending = strings_at(backend, &url, "SELECT id FROM webhook_deliveries WHERE status = 'pending'").await;
    assert!(pending.len() >= 3, "deliveries were pending at the kill: {pending:?}");
    receiver.fail("k", None).await;
    let serve = Serve::start(&url, &data, &config, port).await;
    let got = receiver
        .wait_until("every event after the restart", |r| {
            let ok: HashSet<&str> =
                r.iter().filter(|d| d["answered"] == 200).filter_map(|d| d["webhook_id"].as_str()).collect();
            all_events.iter().all(|id| ok.contains(id.as_str()))
        })
        .await;
    assert_verified(&got);
    let mut successes: HashMap<&str, usize> = HashMap::new();
    for d in got.iter().filter(|d| d["answered"] == 200) {
        *successes.entry(d["webhook_id"].as_str().expect("id")).or_default() += 1;
    }
    let repeated: Vec<_> = successes.iter().filter(|(_, n)| **n > 1).collect();
    assert!(repeated.is_empty(), "nothing that had succeeded arrives twice: {repeated:?}");
    assert!(first.len() >= 6);
    drop(serve);
    let _ = std::fs::remove_dir_all(&data);
}

/// The first column of `query`'s rows, on a database the test reaches directly.
async fn strings_at(backend: Backend, url: &str, query: &str) -> Vec<String> {
    use sqlx::Connection;
    match backend {
        Backend::Sqlite => {
            let mut c = sqlx::SqliteConnection::connect(url).await.expect("sqlite");
            sqlx::query_scalar(sqlx::AssertSqlSafe(query.to_owned())).fetch_all(&mut c).await.expect("rows")
        }
        Backend::Postgres => {
            let mut c = sqlx::PgConnection::connect(url).await.expect("pg");
            sqlx::query_scalar(sqlx::AssertSqlSafe(query.to_owned())).fetch_all(&mut c).await.expect("rows")
        }
    }
}

async fn during_a_secret_rotation_both_secrets_verify_and_after_it_only_the_new_one(backend: Backend) {
    let Some((app, receiver, key)) = app_and_receiver(backend).await else { return };
    let (endpoint, old) = endpoint(&app, &key, &receiver, "r", json!({})).await;
    let res = app.post(&format!("/v1/webhook_endpoints/{endpoint}/rotate_secret"), &key, json!({})).await;
    let rotated = res.expect(200).clone();
    let new = rotated["secret"].as_str().expect("new secret").to_owned();
    assert!(new.starts_with("whsec_") && new != old);
    assert!(rotated["previous_secret_expires_at"].is_string());
    receiver.set_secrets("r", &[&old, &new]).await;
    app.post(&format!("/v1/webhook_endpoints/{endpoint}/test"), &key, json!({})).await.expect(202);
    let got = receiver.wait_until("the delivery during the overlap", |r| !r.is_empty()).await;
    assert_eq!(got[0]["verified"], json!([true, true]), "old and new both verify: {:#}", got[0]);
    assert_eq!(got[0]["signatures"], 2);
    // 24 hours later only the new secret signs.
    app.clock.advance(time::Duration::hours(24) + time::Duration::minutes(1));
    app.post(&format!("/v1/webhook_endpoints/{endpoint}/test"), &key, json!({})).await.expect(202);
    let got = receiver.wait_until("the delivery after the overlap", |r| r.len() >= 2).await;
    assert_eq!(got[1]["verified"], json!([false, true]), "only the new one verifies: {:#}", got[1]);
    assert_eq!(got[1]["signatures"], 1);
    // The secret is stored encrypted: not in clear, not as its base64.
    let stored = app.strings(&format!("SELECT url FROM webhook_endpoints WHERE id = '{endpoint}'")).await;
    assert_eq!(stored.len(), 1);
    let raw = new.trim_start_matches("whsec_");
    let hits = app
        .count(&format!(
            "SELECT COUNT(*) FROM webhook_endpoints WHERE event_types LIKE '%{raw}%' OR url LIKE '%{raw}%'"
        ))
        .await;
    assert_eq!(hits, 0);
}

async fn a_private_address_or_plain_http_url_is_refused_without_the_allow_flags(backend: Backend) {
    let Some(receiver) = Receiver::start().await else { return };
    let Some(app) = spawn_app_with(backend, |c| {
        c.webhooks.allow_http = Some(true);
        c.webhooks.allow_private_targets = Some(false);
    })
    .await
    else {
        return;
    };
    let key = app.api_key().await;
    for url in [
        receiver.url("x"),
        "http://localhost:9/x".to_owned(),
        "http://10.0.0.1/x".to_owned(),
        "http://[::1]/x".to_owned(),
        "http://169.254.169.254/latest".to_owned(),
    ] {
        let res = app.post("/v1/webhook_endpoints", &key, json!({"url": url})).await;
        res.expect_error(422, "invalid_request");
        assert_eq!(res.body["error"]["param"], "url");
        let message = res.body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("webhooks.allow_private_targets"), "{message}");
    }
    let strict = spawn_app_with(backend, |c| {
        c.webhooks.allow_http = Some(false);
        c.webhooks.allow_private_targets = Some(true);
    })
    .await
    .expect("app");
    let key2 = strict.api_key().await;
    let res = strict.post("/v1/webhook_endpoints", &key2, json!({"url": receiver.url("x")})).await;
    res.expect_error(422, "invalid_request");
    assert!(res.body["error"]["message"].as_str().unwrap_or_default().contains("https"), "{}", res.body);
    assert_eq!(app.count("SELECT COUNT(*) FROM webhook_endpoints").await, 0);
    assert_eq!(strict.count("SELECT COUNT(*) FROM webhook_endpoints").await, 0);
}

async fn a_target_that_resolves_to_a_private_address_at_delivery_is_not_contacted(backend: Backend) {
    let Some((app, receiver, key)) =
        app_and_receiver_with(backend, |c| c.webhooks.allow_private_targets = Some(false)).await
    else {
        return;
    };
    // Accepted at creation (a public address) ...
    let res = app.post("/v1/webhook_endpoints", &key, json!({"url": "http://93.184.216.34/hook"})).await;
    let endpoint = res.expect(201)["id"].as_str().expect("id").to_owned();
    // ... and later its name points at loopback (DNS rebinding, in effect).
    let port = receiver.base.rsplit(':').next().expect("port").to_owned();
    app.sql(&format!(
        "UPDATE webhook_endpoints SET url = 'http://localhost:{port}/hook/rebound' WHERE id = '{endpoint}'"
    ))
    .await;
    app.post(&format!("/v1/webhook_endpoints/{endpoint}/test"), &key, json!({})).await.expect(202);
    let deadline = Instant::now() + Duration::from_secs(30);
    let attempt = loop {
        let log = deliveries(&app, &key, &endpoint, "").await;
        if let Some(a) = log.first().and_then(|d| d["attempts"].as_array()).and_then(|a| a.first()).cloned() {
            break a;
        }
        assert!(Instant::now() < deadline, "no attempt logged within 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await; // polling the delivery log
    };
    assert!(attempt["status_code"].is_null(), "{attempt}");
    let error = attempt["error"].as_str().unwrap_or_default();
    assert!(error.contains("refused") && error.contains("private"), "{error}");
    assert!(receiver.received().await.is_empty(), "the receiver was never contacted");
}

async fn a_redirect_is_not_followed(backend: Backend) {
    let Some((app, receiver, key)) = app_and_receiver(backend).await else { return };
    let (endpoint, secret) = endpoint(&app, &key, &receiver, "moving", json!({})).await;
    receiver.set_secrets("moving-moved", &[&secret]).await;
    receiver.script("moving", &[302]).await;
    app.post(&format!("/v1/webhook_endpoints/{endpoint}/test"), &key, json!({})).await.expect(202);
    // The 302, then the retry to the same URL (answered 200).
    let got = receiver.wait_until("the retry", |r| r.len() >= 2).await;
    assert!(got.iter().all(|r| r["name"] == "moving"), "the Location was never followed: {got:#?}");
    assert_eq!(got[0]["answered"], 302);
    let log = deliveries(&app, &key, &endpoint, "").await;
    let first = &log[0]["attempts"][0];
    assert_eq!(first["status_code"], 302);
    assert!(first["error"].as_str().is_some_and(|e| e.contains("redirects are not followed")), "{first}");
}

async fn a_410_answer_disables_the_endpoint_and_writes_an_event(backend: Backend) {
    let Some((app, receiver, key)) = app_and_receiver(backend).await else { return };
    let (endpoint, _) = endpoint(&app, &key, &receiver, "gone", json!({})).await;
    receiver.script("gone", &[410]).await;
    app.post(&format!("/v1/webhook_endpoints/{endpoint}/test"), &key, json!({})).await.expect(202);
    receiver.wait_until("the 410", |r| !r.is_empty()).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let body = loop {
        let body = app.get(&format!("/v1/webhook_endpoints/{endpoint}"), &key).await.expect(200).clone();
        if body["enabled"] == false {
            break body;
        }
        assert!(Instant::now() < deadline, "not disabled within 30 s: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await; // polling the endpoint
    };
    assert!(body["disabled_reason"].as_str().is_some_and(|r| r.contains("410")), "{body}");
    let log = deliveries(&app, &key, &endpoint, "&status=failed").await;
    assert_eq!(log.len(), 1, "the 410 fails the delivery at once: {log:#?}");
    assert_eq!(
        app.count(&format!(
            "SELECT COUNT(*) FROM events WHERE type = 'webhook_endpoint.disabled' AND org_id IS NULL AND data LIKE '%{endpoint}%'"
        ))
        .await,
        1
    );
    // Nothing more goes to it.
    let alice = app.user("alice@example.com").await;
    app.team(&alice, "After").await;
    tokio::time::sleep(Duration::from_millis(500)).await; // several worker polls: a delivery would have gone out
    assert_eq!(receiver.received().await.len(), 1);
}

async fn an_endpoint_failing_for_disable_after_hours_is_disabled(backend: Backend) {
    let Some((app, receiver, key)) = app_and_receiver_with(backend, |c| {
        c.webhooks.retry_schedule_secs = vec![60, 60, 60];
        c.webhooks.disable_after_hours = 120;
    })
    .await
    else {
        return;
    };
    let (endpoint, _) = endpoint(&app, &key, &receiver, "down", json!({})).await;
    receiver.script("down", &[500, 500, 500]).await;
    app.post(&format!("/v1/webhook_endpoints/{endpoint}/test"), &key, json!({})).await.expect(202);
    receiver.wait_until("the first failure", |r| !r.is_empty()).await;
    // Still enabled after one failure; 121 hours later the next failure disables it.
    assert_eq!(app.get(&format!("/v1/webhook_endpoints/{endpoint}"), &key).await.expect(200)["enabled"], true);
    app.clock.advance(time::Duration::hours(121));
    receiver.wait_until("the second failure", |r| r.len() >= 2).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let body = app.get(&format!("/v1/webhook_endpoints/{endpoint}"), &key).await.expect(200).clone();
        if body["enabled"] == false {
            assert!(body["disabled_reason"].as_str().is_some_and(|r| r.contains("120 hours")), "{body}");
            break;
        }
        assert!(Instant::now() < deadline, "not disabled within 30 s: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await; // polling the endpoint
    }
    assert_eq!(app.count("SELECT COUNT(*) FROM events WHERE type = 'webhook_endpoint.disabled'").await, 1);
}

async fn replay_resends_exactly_the_events_after_the_given_point(backend: Backend) {
    let Some((app, receiver, key)) = app_and_receiver(backend).await else { return };
    let alice = app.user("alice@example.com").await;
    let team = app.team(&alice, "Clinic").await;
    let (endpoint, _) = endpoint(&app, &key, &receiver, "rp", json!({"event_types": ["org.*"]})).await;
    for n in 1..=5 {
        app.patch(&format!("/v1/orgs/{team}"), &alice.token, json!({"name": format!("Clinic {n}")})).await.expect(200);
    }
    let events: Vec<String> = events_for(&app, &endpoint).await.into_iter().map(|(id, _)| id).collect();
    assert_eq!(events.len(), 5);
    receiver.wait_until("the five renames", |r| r.len() >= 5).await;
    // After the second: the third, fourth and fifth again.
    let res = app.post(&format!("/v1/webhook_endpoints/{endpoint}/replay"), &key, json!({"since": events[1]})).await;
    assert_eq!(res.expect(200)["queued"], 3);
    let got = receiver.wait_until("the replay", |r| r.len() >= 8).await;
    assert_verified(&got);
    assert_eq!(ids_of(&got[5..], "rp"), events[2..].to_vec());
    // By time: everything from the first event's time on (the events of the
    // team's creation are before the endpoint and of another type anyway).
    let first_at =
        app.strings(&format!("SELECT CAST(created_at AS TEXT) FROM events WHERE id = '{}'", events[0])).await;
    let ms: i64 = first_at[0].parse().expect("millis");
    let since = time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .expect("time")
        .format(&time::format_description::well_known::Rfc3339)
        .expect("rfc3339");
    let res = app.post(&format!("/v1/webhook_endpoints/{endpoint}/replay"), &key, json!({"since": since})).await;
    let queued = res.expect(200)["queued"].as_u64().expect("n");
    // org.* since then: the renames, and org.created events of the same millisecond are excluded by type only if not org.*.
    let want = app.count(&format!("SELECT COUNT(*) FROM events WHERE created_at >= {ms} AND type LIKE 'org.%'")).await;
    assert_eq!(queued as i64, want);
    receiver.wait_until("the replay by time", |r| r.len() >= 8 + want as usize).await;
    // Bad points change nothing.
    let res = app.post(&format!("/v1/webhook_endpoints/{endpoint}/replay"), &key, json!({"since": "yesterday"})).await;
    res.expect_error(400, "invalid_request");
    assert_eq!(res.body["error"]["param"], "since");
    let unknown = crate::helpers::unknown_id("evt");
    let res = app.post(&format!("/v1/webhook_endpoints/{endpoint}/replay"), &key, json!({"since": unknown})).await;
    res.expect_error(400, "invalid_request");
    tokio::time::sleep(Duration::from_millis(300)).await; // a few worker polls: nothing more goes out
    assert_eq!(receiver.received().await.len(), 8 + want as usize);
}

/// One endpoint's receiver hangs past the timeout on every delivery; the
/// other endpoint gets each event at once all the same.
async fn a_receiver_that_never_answers_does_not_delay_another_endpoint(backend: Backend) {
    let Some((app, receiver, key)) = app_and_receiver_with(backend, |c| c.webhooks.timeout_secs = 5).await else {
        return;
    };
    let (stuck, _) = endpoint(&app, &key, &receiver, "stuck", json!({})).await;
    let (_, _) = endpoint(&app, &key, &receiver, "fine", json!({})).await;
    receiver.delay("stuck", 30).await;
    let alice = app.user("alice@example.com").await;
    let team = app.team(&alice, "Clinic").await;
    for n in 1..=3 {
        app.patch(&format!("/v1/orgs/{team}"), &alice.token, json!({"name": format!("Clinic {n}")})).await.expect(200);
    }
    let expected = events_for(&app, &stuck).await;
    let started = Instant::now();
    let got = receiver.wait_until("the healthy endpoint's events", |r| ids_of(r, "fine").len() >= expected.len()).await;
    // Each event reached the healthy endpoint while the stuck one still
    // waited on its first answer (5 s timeout).
    assert!(started.elapsed() < Duration::from_secs(4), "took {:?}", started.elapsed());
    assert_eq!(ids_of(&got, "fine").len(), expected.len());
    assert!(ids_of(&got, "stuck").len() <= 1, "one attempt at a time to the stuck endpoint: {got:#?}");
}

async fn endpoints_are_listed_changed_and_deleted_and_bad_input_changes_nothing(backend: Backend) {
    let Some((app, receiver, key)) = app_and_receiver(backend).await else { return };
    let alice = app.user("alice@example.com").await;
    // Users can't manage endpoints.
    app.get("/v1/webhook_endpoints", &alice.token).await.expect_error(403, "forbidden");
    let (a, _) = endpoint(&app, &key, &receiver, "a", json!({"description": "first"})).await;
    let (b, _) = endpoint(&app, &key, &receiver, "b", json!({"event_types": ["subscription.*", "org.updated"]})).await;
    let list = app.get("/v1/webhook_endpoints?limit=1", &key).await.expect(200).clone();
    assert_eq!(list["data"][0]["id"], a.as_str());
    assert_eq!(list["has_more"], true);
    assert!(list["data"][0].get("secret").is_none(), "the secret is shown once only");
    let next = app.get(&format!("/v1/webhook_endpoints?limit=1&starting_after={a}"), &key).await.expect(200).clone();
    assert_eq!(next["data"][0]["id"], b.as_str());
    assert_eq!(next["data"][0]["event_types"], json!(["subscription.*", "org.updated"]));
    let changed = app
        .patch(&format!("/v1/webhook_endpoints/{a}"), &key, json!({"description": null, "event_types": ["member.*"]}))
        .await
        .expect(200)
        .clone();
    assert!(changed["description"].is_null());
    assert_eq!(changed["event_types"], json!(["member.*"]));
    // Bad input: named, and nothing changes.
    for (body, param) in [
        (json!({"url": receiver.url("c"), "event_types": ["Not A Type"]}), "event_types"),
        (json!({"url": receiver.url("c"), "org_id": "nope"}), "org_id"),
        (json!({"url": receiver.url("c"), "org_id": crate::helpers::unknown_id("org")}), "org_id"),
    ] {
        let res = app.post("/v1/webhook_endpoints", &key, body).await;
        res.expect_error(400, "invalid_request");
        assert_eq!(res.body["error"]["param"], param);
    }
    let res = app.post("/v1/webhook_endpoints", &key, json!({"url": "not a url"})).await;
    res.expect_error(422, "invalid_request");
    let res = app.patch(&format!("/v1/webhook_endpoints/{a}"), &key, json!({"url": "ftp://x"})).await;
    res.expect_error(422, "invalid_request");
    assert_eq!(app.count("SELECT COUNT(*) FROM webhook_endpoints").await, 2);
    assert_eq!(app.get(&format!("/v1/webhook_endpoints/{a}"), &key).await.expect(200)["url"], receiver.url("a"));
    let res = app.get(&format!("/v1/webhook_endpoints/{a}/deliveries?status=lost"), &key).await;
    res.expect_error(400, "invalid_request");
    // Delete.
    app.delete(&format!("/v1/webhook_endpoints/{a}"), &key).await.expect(200);
    app.get(&format!("/v1/webhook_endpoints/{a}"), &key).await.expect_error(404, "not_found");
    app.delete(&format!("/v1/webhook_endpoints/{a}"), &key).await.expect_error(404, "not_found");
    app.post(&format!("/v1/webhook_endpoints/{a}/test"), &key, json!({})).await.expect_error(404, "not_found");
    // A malformed id is a 400 naming the path parameter, as for every typed id.
    let res = app.get("/v1/webhook_endpoints/whe_nope", &key).await;
    assert_eq!(res.body["error"]["param"], "endpoint", "{}", res.body);
    res.expect_error(400, "invalid_request");
}

/// Three replicas on one PostgreSQL database share the work: 1,000 changes
/// made through all three reach the endpoint, each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_on_postgres_deliver_each_of_1000_changes_and_count_duplicates() {
    let Some(receiver) = Receiver::start().await else { return };
    let secret_key = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode([42u8; 32])
    };
    let setup = |c: &mut Config| {
        local_webhooks(c);
        c.webhooks.secret_key = Some(secret_key.clone());
        c.limits.rate_per_second = 0.0;
    };
    let Some(first) = spawn_app_with(Backend::Postgres, setup).await else { return };
    let mut replicas = vec![first.base.clone()];
    for n in 0..2 {
        let mut config: Config = first.state.config.clone();
        config.listen = "127.0.0.1:0".parse().expect("addr");
        config.data_dir = std::env::temp_dir().join(format!("orgplane_replica_{}_{n}", std::process::id()));
        let app =
            Application::build_with_clock(config, Arc::new(ManualClock::running())).await.expect("replica builds");
        replicas.push(format!("http://{}", app.local_addr()));
        tokio::spawn(app.run_until(std::future::pending()));
    }
    let key = first.api_key().await;
    let (endpoint, _) = endpoint(&first, &key, &receiver, "replicas", json!({})).await;
    let alice = first.user("alice@example.com").await;
    let mut teams = Vec::new();
    for n in 0..4 {
        teams.push(first.team(&alice, &format!("Team {n}")).await);
    }
    // 1,000 renames, spread over the replicas and the teams, 8 at a time.
    let http = reqwest::Client::new();
    let mut tasks = Vec::new();
    for worker in 0..8usize {
        let (http, replicas, teams, token) = (http.clone(), replicas.clone(), teams.clone(), alice.token.clone());
        tasks.push(tokio::spawn(async move {
            for i in (worker..1000).step_by(8) {
                let base = &replicas[i % 3];
                let team = &teams[i % 4];
                let res = http
                    .patch(format!("{base}/v1/orgs/{team}"))
                    .bearer_auth(&token)
                    .json(&json!({"name": format!("Team {team} #{i}")}))
                    .send()
                    .await
                    .expect("rename");
                assert!(res.status().is_success(), "{}", res.status());
            }
        }));
    }
    for t in tasks {
        t.await.expect("renames");
    }
    let expected: Vec<String> = events_for(&first, &endpoint).await.into_iter().map(|(id, _)| id).collect();
    assert!(expected.len() >= 1000, "{}", expected.len());
    let want: HashSet<String> = expected.iter().cloned().collect();
    let started = Instant::now();
    let got = receiver
        .wait_up_to(180, "every change through three replicas", |r| {
            let seen: HashSet<&str> = r.iter().filter_map(|d| d["webhook_id"].as_str()).collect();
            want.iter().all(|id| seen.contains(id.as_str()))
        })
        .await;
    assert_verified(&got);
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for d in &got {
        *seen.entry(d["webhook_id"].as_str().expect("id")).or_default() += 1;
    }
    let duplicates: usize = seen.values().map(|n| n - 1).sum();
    let report = format!(
        "three replicas: {} events delivered in {:.1} s after the last change, {duplicates} duplicate deliveries",
        expected.len(),
        started.elapsed().as_secs_f64()
    );
    println!("{report}");
    eprintln!("{report}");
    assert_eq!(duplicates, 0, "no event reached the endpoint twice");
    let attempts = first.count(&format!("SELECT COUNT(*) FROM webhook_attempts a JOIN webhook_deliveries d ON d.id = a.delivery_id WHERE d.endpoint_id = '{endpoint}'")).await;
    assert_eq!(attempts as usize, expected.len(), "one attempt per event");
}
