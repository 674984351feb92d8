//! The WorkOS mirror against a local WorkOS stand-in that checks every
//! request (path, body, `Idempotency-Key`) and holds organizations and
//! memberships as WorkOS would: created, renamed, members added, re-roled
//! and removed, deleted; failures retried without creating twice; a restart
//! while work is pending; the backfill repeated.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use orgplane_server::Application;
use orgplane_server::config::Config;
use orgplane_server::workos_mirror::{WorkosMirror, WorkosMirrorConfig};
use serde_json::{Value, json};

use crate::helpers::{AUDIENCE, Backend, Idp, TestApp, TestUser, spawn_app_with};
use crate::on_both_backends;

on_both_backends!(
    mirrors_create_rename_members_and_delete,
    three_failures_then_success_make_one_org,
    a_restart_while_pending_loses_nothing,
    backfill_is_idempotent,
    a_cleared_billing_email_is_sent_as_an_empty_string_which_overwrites_the_stale_one,
    two_replicas_mirroring_concurrent_changes_make_one_workos_org_per_org,
);

const WORKOS_ISSUER: &str = "https://api.workos.com/user_management/client_test";

/// What the stand-in holds and saw.
#[derive(Default)]
struct World {
    orgs: BTreeMap<String, Value>,
    memberships: BTreeMap<String, Value>,
    /// Idempotency-Key → the first answer.
    replays: BTreeMap<String, Value>,
    /// (method, path with query, body, idempotency key)
    log: Vec<(String, String, Value, Option<String>)>,
    /// Requests still to fail with 500; a failing POST still acts (as one
    /// that timed out after WorkOS created the thing).
    fail_next: usize,
    next_id: u64,
    /// How long each answer takes, to widen the windows two replicas race in.
    delay: Duration,
}

#[derive(Clone)]
pub(crate) struct StandIn {
    world: Arc<Mutex<World>>,
    url: String,
}

type Shared = State<Arc<Mutex<World>>>;

/// The stand-in's API key; any other is refused with 401, as WorkOS does.
pub(crate) const WORKOS_KEY: &str = "sk_test_mirror";

fn authorized(headers: &HeaderMap) -> bool {
    headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(format!("Bearer {WORKOS_KEY}").as_str())
}

async fn handle(
    State(world): Shared,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Query(query): Query<BTreeMap<String, String>>,
    body: axum::body::Bytes,
) -> axum::response::Response {
    if !authorized(&headers) {
        return (StatusCode::UNAUTHORIZED, axum::Json(json!({"code": "unauthorized", "message": "Unauthorized"})))
            .into_response();
    }
    let delay = world.lock().expect("world").delay;
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let body: Value = if body.is_empty() { Value::Null } else { serde_json::from_slice(&body).expect("JSON body") };
    let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let mut w = world.lock().expect("world");
    w.log.push((method.to_string(), uri.to_string(), body.clone(), key.clone()));
    let failing = w.fail_next > 0;
    if failing {
        w.fail_next -= 1;
        if method != Method::POST {
            return (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(json!({"code": "boom", "message": "down"})))
                .into_response();
        }
    }
    if method == Method::POST {
        assert!(key.as_deref().is_some_and(|k| !k.is_empty()), "every POST carries an Idempotency-Key");
    }
    let segments: Vec<&str> = uri.path().trim_start_matches('/').split('/').collect();
    let (status, answer) = match (method.clone(), segments.as_slice()) {
        (Method::GET, ["organizations"]) => {
            let limit: usize = query.get("limit").and_then(|l| l.parse().ok()).unwrap_or(10);
            let data: Vec<Value> = w.orgs.values().take(limit).cloned().collect();
            (StatusCode::OK, json!({"object": "list", "data": data, "list_metadata": {}}))
        }
        (Method::GET, ["organizations", "external_id", ext]) => {
            match w.orgs.values().find(|o| o["external_id"] == *ext) {
                Some(org) => (StatusCode::OK, org.clone()),
                None => (StatusCode::NOT_FOUND, json!({"code": "entity_not_found", "message": "no"})),
            }
        }
        (Method::POST, ["organizations"]) => {
            let key = key.expect("key");
            if let Some(first) = w.replays.get(&key) {
                (StatusCode::CREATED, first.clone())
            } else {
                assert!(body["name"].is_string() && body["external_id"].is_string(), "{body}");
                assert!(body["metadata"]["billing_email"].is_string(), "{body}");
                let ext = body["external_id"].clone();
                if w.orgs.values().any(|o| o["external_id"] == ext) {
                    (StatusCode::CONFLICT, json!({"code": "external_id_taken", "message": "taken"}))
                } else {
                    w.next_id += 1;
                    let id = format!("org_{}", w.next_id);
                    let org = json!({"object": "organization", "id": id, "name": body["name"], "external_id": ext, "metadata": body["metadata"], "domains": []});
                    w.orgs.insert(id, org.clone());
                    w.replays.insert(key, org.clone());
                    (StatusCode::CREATED, org)
                }
            }
        }
        (Method::PUT, ["organizations", id]) => match w.orgs.get_mut(*id) {
            Some(org) => {
                org["name"] = body["name"].clone();
                // Keys are merged, the harder case for a stale value: a key
                // left out keeps what it had.
                let sent = body["metadata"].as_object().expect("metadata is an object").clone();
                for (key, value) in sent {
                    assert!(value.is_string(), "metadata values are strings: {body}");
                    org["metadata"][key] = value;
                }
                (StatusCode::OK, org.clone())
            }
            None => (StatusCode::NOT_FOUND, json!({"code": "entity_not_found", "message": "no"})),
        },
        (Method::DELETE, ["organizations", id]) => {
            let id = (*id).to_owned();
            w.memberships.retain(|_, m| m["organization_id"] != id.as_str());
            match w.orgs.remove(&id) {
                Some(_) => (StatusCode::ACCEPTED, Value::Null),
                None => (StatusCode::NOT_FOUND, json!({"code": "entity_not_found", "message": "no"})),
            }
        }
        (Method::GET, ["user_management", "organization_memberships"]) => {
            let data: Vec<Value> = w
                .memberships
                .values()
                .filter(|m| Some(m["user_id"].as_str().unwrap_or("")) == query.get("user_id").map(String::as_str))
                .filter(|m| {
                    Some(m["organization_id"].as_str().unwrap_or(""))
                        == query.get("organization_id").map(String::as_str)
                })
                .cloned()
                .collect();
            (StatusCode::OK, json!({"object": "list", "data": data}))
        }
        (Method::POST, ["user_management", "organization_memberships"]) => {
            let key = key.expect("key");
            if let Some(first) = w.replays.get(&key) {
                (StatusCode::CREATED, first.clone())
            } else {
                assert!(w.orgs.contains_key(body["organization_id"].as_str().expect("organization_id")), "{body}");
                w.next_id += 1;
                let id = format!("om_{}", w.next_id);
                let m = json!({"object": "organization_membership", "id": id, "user_id": body["user_id"], "organization_id": body["organization_id"], "status": "active", "role": {"slug": body["role_slug"]}});
                w.memberships.insert(id, m.clone());
                w.replays.insert(key, m.clone());
                (StatusCode::CREATED, m)
            }
        }
        (Method::PUT, ["user_management", "organization_memberships", id]) => match w.memberships.get_mut(*id) {
            Some(m) => {
                m["role"] = json!({"slug": body["role_slug"]});
                (StatusCode::OK, m.clone())
            }
            None => (StatusCode::NOT_FOUND, json!({"code": "entity_not_found", "message": "no"})),
        },
        (Method::DELETE, ["user_management", "organization_memberships", id]) => match w.memberships.remove(*id) {
            Some(_) => (StatusCode::ACCEPTED, Value::Null),
            None => (StatusCode::NOT_FOUND, json!({"code": "entity_not_found", "message": "no"})),
        },
        _ => panic!("unexpected WorkOS call {method} {uri}"),
    };
    if failing {
        return (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(json!({"code": "boom", "message": "timed out"})))
            .into_response();
    }
    if answer.is_null() { status.into_response() } else { (status, axum::Json(answer)).into_response() }
}

impl StandIn {
    pub(crate) async fn start() -> StandIn {
        let world = Arc::new(Mutex::new(World::default()));
        let router = axum::Router::new().fallback(handle).with_state(world.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind stand-in");
        let addr: SocketAddr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        StandIn { world, url: format!("http://{addr}") }
    }

    fn with<T>(&self, f: impl FnOnce(&mut World) -> T) -> T {
        f(&mut self.world.lock().expect("world"))
    }

    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    fn config(&self) -> WorkosMirrorConfig {
        WorkosMirrorConfig {
            api_key: WORKOS_KEY.to_owned(),
            api_base: self.url.clone(),
            poll_interval_ms: 20,
            ..WorkosMirrorConfig::default()
        }
    }

    fn org_of(&self, external_id: &str) -> Vec<Value> {
        self.with(|w| w.orgs.values().filter(|o| o["external_id"] == external_id).cloned().collect())
    }

    fn memberships_of(&self, user: &str) -> Vec<Value> {
        self.with(|w| w.memberships.values().filter(|m| m["user_id"] == user).cloned().collect())
    }

    /// Waits (with the app clock moved on, so retries fall due) until `done`.
    async fn wait(&self, app: &TestApp, what: &str, done: impl Fn(&World) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self.with(|w| done(w)) {
                return;
            }
            assert!(Instant::now() < deadline, "the stand-in never saw {what}: {:#?}", self.with(|w| w.log.clone()));
            app.clock.advance(time::Duration::seconds(30));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn with_workos_issuer(config: &mut Config, idp_jwks: &str) {
    let mut issuer = orgplane_auth::IssuerConfig::new(WORKOS_ISSUER, idp_jwks.to_owned(), vec![AUDIENCE.to_owned()]);
    issuer.jwks_url = idp_jwks.to_owned();
    config.auth.issuers.push(issuer);
}

/// A user who signs in through WorkOS: subject `user_…`.
async fn workos_user(app: &TestApp, subject: &str, email: &str) -> TestUser {
    let mut claims = Idp::claims(subject, email);
    claims["iss"] = json!(WORKOS_ISSUER);
    app.user_with_claims(&claims).await
}

async fn app_mirroring(backend: Backend, standin: &StandIn) -> Option<TestApp> {
    let mirror = standin.config();
    spawn_app_with(backend, |c| {
        let jwks = c.auth.issuers[0].jwks_url.clone();
        with_workos_issuer(c, &jwks);
        c.mirror.workos = Some(mirror);
    })
    .await
}

async fn mirrors_create_rename_members_and_delete(backend: Backend) {
    let standin = StandIn::start().await;
    let Some(app) = app_mirroring(backend, &standin).await else { return };
    let owner = workos_user(&app, "user_owner", "owner@acme.test").await;
    let org = app.team(&owner, "Acme").await;

    standin.wait(&app, "the org and its owner", |w| !w.memberships.is_empty()).await;
    let created = standin.org_of(&org);
    assert_eq!(created.len(), 1, "{created:?}");
    assert_eq!(created[0]["name"], "Acme");
    let workos_id = created[0]["id"].as_str().expect("id").to_owned();
    let shown = app.get(&format!("/v1/orgs/{org}"), &owner.token).await;
    assert_eq!(shown.expect(200)["workos_organization_id"], workos_id.as_str(), "GET /v1/orgs/{{org}} shows it");
    let posts: Vec<_> =
        standin.with(|w| w.log.iter().filter(|(m, p, ..)| m == "POST" && p == "/organizations").cloned().collect());
    assert_eq!(posts.len(), 1);
    assert_eq!(posts[0].2["external_id"], org.as_str());
    assert_eq!(posts[0].3.as_deref(), Some(format!("orgplane-org-{org}").as_str()));
    let looked_up = standin
        .with(|w| w.log.iter().position(|(m, p, ..)| m == "GET" && *p == format!("/organizations/external_id/{org}")));
    assert!(looked_up.is_some(), "looked up by external_id before creating");
    let owner_membership = standin.memberships_of("user_owner");
    assert_eq!(owner_membership.len(), 1);
    assert_eq!(owner_membership[0]["organization_id"], workos_id.as_str());
    assert_eq!(owner_membership[0]["role"]["slug"], "admin", "owner → admin");
    // The owner's personal org is not mirrored.
    assert!(standin.org_of(&owner.personal_org).is_empty());

    app.patch(
        &format!("/v1/orgs/{org}"),
        &owner.token,
        json!({"name": "Acme Two", "billing_email": "billing@acme.test"}),
    )
    .await
    .expect(200);
    standin.wait(&app, "the rename", |w| w.orgs.get(&workos_id).is_some_and(|o| o["name"] == "Acme Two")).await;
    assert_eq!(standin.org_of(&org)[0]["metadata"]["billing_email"], "billing@acme.test");

    let bob = workos_user(&app, "user_bob", "bob@acme.test").await;
    let carol = app.user("carol@acme.test").await; // not a WorkOS user
    app.add_member(&org, &owner, &bob, "member").await;
    standin.wait(&app, "bob's membership", |w| w.memberships.values().any(|m| m["user_id"] == "user_bob")).await;
    let bob_m = standin.memberships_of("user_bob");
    assert_eq!(bob_m[0]["role"]["slug"], "member");
    let bob_post = standin.with(|w| {
        w.log
            .iter()
            .find(|(m, p, b, _)| m == "POST" && p.ends_with("organization_memberships") && b["user_id"] == "user_bob")
            .cloned()
    });
    let bob_post = bob_post.expect("bob's POST");
    assert_eq!(bob_post.2, json!({"user_id": "user_bob", "organization_id": workos_id, "role_slug": "member"}));
    assert!(bob_post.3.as_deref().is_some_and(|k| k.starts_with(&format!("orgplane-membership-{org}-user_bob-"))));

    app.patch(&format!("/v1/orgs/{org}/members/{}", bob.id), &owner.token, json!({"role": "admin"})).await.expect(200);
    standin
        .wait(&app, "bob's new role", |w| {
            w.memberships.values().any(|m| m["user_id"] == "user_bob" && m["role"]["slug"] == "admin")
        })
        .await;

    app.delete(&format!("/v1/orgs/{org}/members/{}", bob.id), &owner.token).await.expect(200);
    standin.wait(&app, "bob's removal", |w| !w.memberships.values().any(|m| m["user_id"] == "user_bob")).await;
    // Carol signs in elsewhere (the free plan has two seats: she takes bob's).
    app.add_member(&org, &owner, &carol, "member").await;

    let deleted = app.delete(&format!("/v1/orgs/{org}"), &owner.token).await;
    assert!(deleted.status == 200 || deleted.status == 204, "{:?}", deleted.body);
    standin.wait(&app, "the deletion", |w| w.orgs.is_empty()).await;
    assert!(
        standin.with(|w| w.log.iter().any(|(m, p, ..)| m == "DELETE" && *p == format!("/organizations/{workos_id}")))
    );
    // Synced in log order, so carol's joining (before the deletion) was
    // seen: no membership was made for anyone but the two WorkOS users.
    let _ = carol;
    let members: Vec<Value> = standin.with(|w| {
        w.log
            .iter()
            .filter(|(m, p, ..)| m == "POST" && p.ends_with("organization_memberships"))
            .map(|(_, _, b, _)| b["user_id"].clone())
            .collect()
    });
    assert!(!members.is_empty() && members.iter().all(|u| *u == "user_owner" || *u == "user_bob"), "{members:?}");
}

async fn three_failures_then_success_make_one_org(backend: Backend) {
    let standin = StandIn::start().await;
    standin.with(|w| w.fail_next = 3);
    let Some(app) = app_mirroring(backend, &standin).await else { return };
    let owner = workos_user(&app, "user_owner", "owner@acme.test").await;
    let org = app.team(&owner, "Acme").await;
    standin.wait(&app, "the owner's membership", |w| !w.memberships.is_empty()).await;
    assert_eq!(standin.org_of(&org).len(), 1, "one org in WorkOS, not two");
    assert_eq!(standin.with(|w| w.memberships.len()), 1);
    let keys: Vec<Option<String>> = standin.with(|w| {
        w.log.iter().filter(|(m, p, ..)| m == "POST" && p == "/organizations").map(|(.., k)| k.clone()).collect()
    });
    assert!(keys.iter().all(|k| k.as_deref() == Some(format!("orgplane-org-{org}").as_str())), "{keys:?}");
}

/// Starts an orgplane that mirrors into `standin`, on `app`'s database and clock.
async fn start_mirroring(
    app: &TestApp,
    standin: &StandIn,
) -> (SocketAddr, tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<anyhow::Result<()>>) {
    let mut config = Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        database_url: Some(app.database_url.clone()),
        data_dir: app.data_dir.join(format!("mirror-{}", uuid::Uuid::now_v7().simple())),
        migrate_on_start: false,
        max_connections: 4,
        ..Config::default()
    };
    config.auth.issuers = vec![app.idp.issuer_config()];
    let jwks = app.idp.jwks_url.clone();
    with_workos_issuer(&mut config, &jwks);
    config.mirror.workos = Some(standin.config());
    let server = Application::build_with_clock(config, app.clock.clone()).await.expect("the mirroring server builds");
    let addr = server.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run_until(async move {
        let _ = stopped.await;
    }));
    (addr, stop, task)
}

async fn a_restart_while_pending_loses_nothing(backend: Backend) {
    let standin = StandIn::start().await;
    standin.with(|w| w.fail_next = usize::MAX);
    // The app itself does not mirror: the servers started below do.
    let Some(app) = spawn_app_with(backend, |c| {
        let jwks = c.auth.issuers[0].jwks_url.clone();
        with_workos_issuer(c, &jwks);
    })
    .await
    else {
        return;
    };
    let (addr, stop, task) = start_mirroring(&app, &standin).await;
    let owner = workos_user(&app, "user_owner", "owner@acme.test").await;
    let org = app.team(&owner, "Acme").await;
    standin.wait(&app, "a failing attempt", |w| !w.log.is_empty()).await;
    // The failure is listed by the mirroring server (API key only); the
    // app, which does not mirror, says so.
    let key = app.api_key().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let listed = loop {
        let res =
            app.send_request(app.http.get(format!("http://{addr}/v1/mirror/workos/failures")).bearer_auth(&key)).await;
        let body = res.expect(200).clone();
        if body["data"].as_array().is_some_and(|d| d.iter().any(|f| f["org_id"] == org.as_str())) {
            break body;
        }
        assert!(Instant::now() < deadline, "the failure was never listed: {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let failure =
        listed["data"].as_array().and_then(|d| d.iter().find(|f| f["org_id"] == org.as_str())).expect("listed");
    assert!(failure["failures"].as_i64().is_some_and(|n| n >= 1), "{failure}");
    assert!(failure["last_error"].as_str().is_some_and(|e| e.contains("500")), "{failure}");
    app.get("/v1/mirror/workos/failures", &key).await.expect_error(404, "not_found");
    app.get("/v1/mirror/workos/failures", &owner.token).await.expect_error(403, "forbidden");
    let _ = stop.send(());
    task.await.expect("task").expect("the first server stops cleanly");
    assert!(standin.with(|w| w.memberships.is_empty()), "nothing mirrored while WorkOS failed");

    standin.with(|w| w.fail_next = 0);
    let (_, stop, task) = start_mirroring(&app, &standin).await;
    standin.wait(&app, "the org and its owner after the restart", |w| !w.memberships.is_empty()).await;
    assert_eq!(standin.org_of(&org).len(), 1);
    let _ = stop.send(());
    task.await.expect("task").expect("the second server stops cleanly");
}

async fn backfill_is_idempotent(backend: Backend) {
    let standin = StandIn::start().await;
    let Some(app) = spawn_app_with(backend, |c| {
        let jwks = c.auth.issuers[0].jwks_url.clone();
        with_workos_issuer(c, &jwks);
    })
    .await
    else {
        return;
    };
    let owner = workos_user(&app, "user_owner", "owner@acme.test").await;
    let org = app.team(&owner, "Acme").await;
    // These orgs existed before the mirror: its log position is past them.
    app.sql("UPDATE workos_mirror_position SET after_seq = (SELECT MAX(seq) FROM events)").await;
    let mirror = WorkosMirror::new(app.state.store.clone(), app.clock.clone(), standin.config()).expect("mirror");
    assert_eq!(mirror.run_once().await.expect("pass"), 0, "nothing pending before the backfill");
    for round in 0..2 {
        assert_eq!(mirror.backfill().await.expect("backfill"), 4, "two orgs (one personal) and the owner in each");
        while mirror.run_once().await.expect("pass") > 0 {}
        assert_eq!(standin.org_of(&org).len(), 1, "round {round}");
        assert_eq!(standin.with(|w| (w.orgs.len(), w.memberships.len())), (1, 1), "round {round}");
    }
    let posts = standin.with(|w| w.log.iter().filter(|(m, ..)| m == "POST").count());
    assert_eq!(posts, 2, "the second backfill creates nothing");
}

/// WorkOS metadata values are strings, and an update may merge keys: an org
/// without a billing e-mail sends `billing_email: ""` (never omits the key),
/// so clearing the e-mail in orgplane overwrites the old one in WorkOS.
async fn a_cleared_billing_email_is_sent_as_an_empty_string_which_overwrites_the_stale_one(backend: Backend) {
    let standin = StandIn::start().await;
    let Some(app) = app_mirroring(backend, &standin).await else { return };
    let owner = workos_user(&app, "user_owner", "owner@acme.test").await;
    let org = app.team(&owner, "Acme").await;
    standin.wait(&app, "the org", |w| w.orgs.values().any(|o| o["external_id"] == org.as_str())).await;
    let post = standin.with(|w| w.log.iter().find(|(m, p, ..)| m == "POST" && p == "/organizations").cloned());
    assert_eq!(post.expect("the create").2["metadata"], json!({"billing_email": ""}), "no e-mail: the key, empty");

    let path = format!("/v1/orgs/{org}");
    app.patch(&path, &owner.token, json!({"billing_email": "billing@acme.test"})).await.expect(200);
    standin
        .wait(&app, "the e-mail", |w| w.orgs.values().any(|o| o["metadata"]["billing_email"] == "billing@acme.test"))
        .await;
    app.patch(&path, &owner.token, json!({"name": "Acme Renamed", "billing_email": null})).await.expect(200);
    standin.wait(&app, "the rename", |w| w.orgs.values().any(|o| o["name"] == "Acme Renamed")).await;
    let mirrored = standin.org_of(&org);
    assert_eq!(mirrored[0]["metadata"], json!({"billing_email": ""}), "the stale e-mail is gone: {mirrored:?}");
    let last_put = standin.with(|w| w.log.iter().rev().find(|(m, ..)| m == "PUT").cloned()).expect("a PUT");
    assert_eq!(last_put.2, json!({"name": "Acme Renamed", "metadata": {"billing_email": ""}}));
}

/// Two replicas on one database both run the mirror worker while orgs are
/// created, renamed twice and given a member, all at once: WorkOS ends with
/// exactly one organization per org (every create of an org carried the
/// org's one Idempotency-Key, so a repeat got the first answer), the last
/// names, and exactly the memberships with their roles.
async fn two_replicas_mirroring_concurrent_changes_make_one_workos_org_per_org(backend: Backend) {
    const ORGS: usize = 24;
    let standin = StandIn::start().await;
    standin.with(|w| w.delay = Duration::from_millis(3));
    let Some(app) = spawn_app_with(backend, |c| {
        let jwks = c.auth.issuers[0].jwks_url.clone();
        with_workos_issuer(c, &jwks);
    })
    .await
    else {
        return;
    };
    let replicas = [start_mirroring(&app, &standin).await, start_mirroring(&app, &standin).await];

    let owners = futures_util::future::join_all((0..ORGS).map(|i| {
        let app = &app;
        async move { workos_user(app, &format!("user_owner{i}"), &format!("owner{i}@acme.test")).await }
    }))
    .await;
    let members = futures_util::future::join_all((0..ORGS).map(|i| {
        let app = &app;
        async move { workos_user(app, &format!("user_member{i}"), &format!("member{i}@acme.test")).await }
    }))
    .await;
    let orgs = futures_util::future::join_all(owners.iter().enumerate().map(|(i, owner)| {
        let app = &app;
        async move { app.team(owner, &format!("Org {i}")).await }
    }))
    .await;
    let changes = owners.iter().zip(&members).zip(&orgs).enumerate().map(|(i, ((owner, member), org))| {
        let app = &app;
        async move {
            let path = format!("/v1/orgs/{org}");
            let role = if i % 2 == 0 { "admin" } else { "member" };
            tokio::join!(
                async {
                    for name in [format!("Org {i} renamed"), format!("Org {i} final")] {
                        app.patch(&path, &owner.token, json!({"name": name})).await.expect(200);
                    }
                },
                app.add_member(org, owner, member, role),
            );
        }
    });
    futures_util::future::join_all(changes).await;

    standin
        .wait(&app, "every org at its final name with both members", |w| {
            orgs.iter().enumerate().all(|(i, org)| {
                let mirrored: Vec<&Value> = w.orgs.values().filter(|o| o["external_id"] == org.as_str()).collect();
                mirrored.len() == 1
                    && mirrored[0]["name"] == format!("Org {i} final").as_str()
                    && w.memberships.values().filter(|m| m["organization_id"] == mirrored[0]["id"]).count() == 2
            })
        })
        .await;

    assert_eq!(standin.with(|w| w.orgs.len()), ORGS, "one WorkOS organization per org, personal orgs not mirrored");
    for (i, org) in orgs.iter().enumerate() {
        let mirrored = standin.org_of(org);
        assert_eq!(mirrored.len(), 1, "{org}: {mirrored:?}");
        let workos_id = mirrored[0]["id"].as_str().expect("id").to_owned();
        let keys: Vec<Option<String>> = standin.with(|w| {
            w.log
                .iter()
                .filter(|(m, p, b, _)| m == "POST" && p == "/organizations" && b["external_id"] == org.as_str())
                .map(|(.., k)| k.clone())
                .collect()
        });
        assert!(!keys.is_empty(), "{org} was created");
        assert!(keys.iter().all(|k| k.as_deref() == Some(format!("orgplane-org-{org}").as_str())), "{keys:?}");
        let mut roles: Vec<(String, String)> = standin.with(|w| {
            w.memberships
                .values()
                .filter(|m| m["organization_id"] == workos_id.as_str())
                .map(|m| {
                    (
                        m["user_id"].as_str().unwrap_or("").to_owned(),
                        m["role"]["slug"].as_str().unwrap_or("").to_owned(),
                    )
                })
                .collect()
        });
        roles.sort();
        let role = if i % 2 == 0 { "admin" } else { "member" };
        let mut expected =
            vec![(format!("user_member{i}"), role.to_owned()), (format!("user_owner{i}"), "admin".to_owned())];
        expected.sort();
        assert_eq!(roles, expected, "{org}");
        // Shown by a server that mirrors (either replica), read from the database.
        let addr = replicas[i % 2].0;
        let shown =
            app.send_request(app.http.get(format!("http://{addr}/v1/orgs/{org}")).bearer_auth(&owners[i].token)).await;
        assert_eq!(shown.expect(200)["workos_organization_id"], workos_id.as_str(), "{org}");
    }
    // A membership create carried one key per (org, user, generation); no
    // key ever made two memberships, and no user has two in one org.
    let membership_posts = standin
        .with(|w| w.log.iter().filter(|(m, p, ..)| m == "POST" && p.ends_with("organization_memberships")).count());
    assert_eq!(standin.with(|w| w.memberships.len()), 2 * ORGS, "{membership_posts} membership POSTs");
    for (_, stop, task) in replicas {
        let _ = stop.send(());
        task.await.expect("task").expect("a replica stops cleanly");
    }
}
