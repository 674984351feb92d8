//! `orgplane copy`: a SQLite database populated through the API, copied to
//! a fresh PostgreSQL database, answers the same there. Each test uses both
//! backends by nature: a real SQLite file and a real PostgreSQL database.

use std::process::Command;

use serde_json::{Value, json};

use crate::billing_support::sandbox_app;
use crate::helpers::{Backend, TestApp, TestDb, TestUser};

fn orgplane() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_orgplane"));
    cmd.env_remove("ORGPLANE_CONFIG").env("ORGPLANE_LOG", "warn");
    cmd
}

/// `orgplane copy --from … --to …`: (success, stdout, stderr).
fn copy(from: &str, to: &str) -> (bool, String, String) {
    let out = orgplane().args(["copy", "--from", from, "--to", to]).output().expect("runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

struct Populated {
    alice: TestUser,
    bob: TestUser,
    org: String,
    server_key: String,
    org_key: String,
}

/// Every kind of row the API writes: orgs, members, a pending invitation,
/// a sandbox subscription, resources and a grant, events, server and org
/// keys, a webhook endpoint, a portal session.
async fn populate(app: &TestApp) -> Populated {
    let server_key = app.api_key().await;
    let alice = app.user("alice@agency.example").await;
    let bob = app.user("bob@agency.example").await;
    let org = app.team(&alice, "Agency").await;
    let body = json!({"plan": "business", "seats": 3, "success_url": "https://app.example/ok", "cancel_url": "https://app.example/no"});
    let url = app.post(&format!("/v1/orgs/{org}/checkout"), &alice.token, body).await.expect(200)["url"]
        .as_str()
        .expect("url")
        .to_owned();
    app.send_request(app.http.post(format!("{url}/pay")).header("accept", "application/json")).await.expect(200);
    app.add_member(&org, &alice, &bob, "admin").await;
    app.invite(&org, &alice, "carol@agency.example", "member").await;
    for name in ["Acme", "Globex"] {
        let res = app
            .post(&format!("/v1/orgs/{org}/resources"), &alice.token, json!({"type": "customers", "name": name}))
            .await;
        let id = res.expect(201)["id"].as_str().expect("id").to_owned();
        if name == "Acme" {
            app.put(&format!("/v1/orgs/{org}/resources/{id}/grants/{}", bob.id), &alice.token, json!({}))
                .await
                .expect(200);
        }
    }
    let res = app.post(&format!("/v1/orgs/{org}/api_keys"), &alice.token, json!({"name": "zapier"})).await;
    let org_key = res.expect(201)["key"].as_str().expect("key").to_owned();
    // Used once now, as the server key is: its `last_used_at` is set
    // before the answers are compared (it is refreshed at most once a minute).
    let res = app.post("/v1/api_keys/verify", &server_key, json!({"key": org_key})).await;
    assert_eq!(res.expect(200)["valid"], true);
    app.post("/v1/api_keys", &server_key, json!({"name": "dashboard", "scope": "read"})).await.expect(201);
    app.post("/v1/portal_sessions", &server_key, json!({"org_id": org, "user_id": bob.id})).await.expect(200);
    app.patch(&format!("/v1/orgs/{org}"), &alice.token, json!({"name": "The Agency"})).await.expect(200);
    // Last, and disabled at once: no delivery is attempted meanwhile.
    let res = app.post("/v1/webhook_endpoints", &server_key, json!({"url": "http://127.0.0.1:9/hooks"})).await;
    let endpoint = res.expect(201)["id"].as_str().expect("id").to_owned();
    app.patch(&format!("/v1/webhook_endpoints/{endpoint}"), &server_key, json!({"enabled": false})).await.expect(200);
    Populated { alice, bob, org, server_key, org_key }
}

/// What the server answers about the populated data, as JSON.
async fn answers(base: &str, data: &Populated) -> Vec<(String, Value)> {
    let http = reqwest::Client::new();
    let org = &data.org;
    let mut out = Vec::new();
    for (path, token) in [
        ("/v1/me".to_owned(), &data.alice.token),
        ("/v1/me".to_owned(), &data.bob.token),
        (format!("/v1/orgs/{org}"), &data.alice.token),
        (format!("/v1/orgs/{org}/entitlements"), &data.alice.token),
        (format!("/v1/orgs/{org}/members"), &data.alice.token),
        (format!("/v1/orgs/{org}/invitations"), &data.alice.token),
        (format!("/v1/orgs/{org}/events?limit=100"), &data.server_key),
        (format!("/v1/orgs/{org}/subscription"), &data.alice.token),
        (format!("/v1/orgs/{org}/resources"), &data.alice.token),
        (format!("/v1/orgs/{org}/api_keys"), &data.alice.token),
        ("/v1/webhook_endpoints".to_owned(), &data.server_key),
        ("/v1/api_keys".to_owned(), &data.server_key),
    ] {
        let res = http.get(format!("{base}{path}")).bearer_auth(token).send().await.expect("answers");
        let status = res.status().as_u16();
        let body: Value = res.json().await.expect("JSON");
        assert_eq!(status, 200, "{path}: {body}");
        out.push((path, body));
    }
    let res = http
        .post(format!("{base}/v1/api_keys/verify"))
        .bearer_auth(&data.server_key)
        .json(&json!({"key": data.org_key}))
        .send()
        .await
        .expect("verify");
    out.push(("verify the org key".to_owned(), res.json().await.expect("JSON")));
    out
}

/// The tables of the SQLite database, bookkeeping left out.
async fn sqlite_tables(url: &str) -> Vec<String> {
    use sqlx::Connection;
    let mut c = sqlx::SqliteConnection::connect(url).await.expect("sqlite");
    sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name NOT LIKE 'orgplane_migration%' ORDER BY name",
    )
    .fetch_all(&mut c)
    .await
    .expect("tables")
}

async fn pg_count(url: &str, query: &str) -> i64 {
    use sqlx::Connection;
    let mut c = sqlx::PgConnection::connect(url).await.expect("pg");
    sqlx::query_scalar(sqlx::AssertSqlSafe(query.to_owned())).fetch_one(&mut c).await.expect("count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_on_postgresql_answers_exactly_as_the_sqlite_original() {
    let Some(app) = sandbox_app(Backend::Sqlite, |_| {}).await else { return };
    let Some((_pg, pg_url)) = TestDb::create(Backend::Postgres).await else { return };
    let data = populate(&app).await;
    let before = answers(&app.base, &data).await;

    let (ok, out, err) = copy(&app.database_url, &pg_url);
    assert!(ok, "{err}");
    // Every table of the schema is in the summary: none skipped.
    let listed: Vec<&str> = out
        .lines()
        .skip(1)
        .take_while(|l| !l.starts_with("sequence ") && !l.starts_with("copied "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let mut sorted = listed.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, sqlite_tables(&app.database_url).await, "{out}");
    let at = |t: &str| listed.iter().position(|l| *l == t).expect("listed");
    assert!(
        at("users") < at("orgs") && at("orgs") < at("memberships") && at("memberships") < at("portal_sessions"),
        "{out}"
    );
    assert!(out.contains("sequence events.seq continues at"), "{out}");
    assert!(out.contains("row counts and checksums verified"), "{out}");
    let orgs_line = out.lines().find(|l| l.starts_with("orgs ")).expect("orgs line");
    assert_eq!(orgs_line.split_whitespace().nth(1), Some("3"), "two personal orgs and the team: {out}");

    // The event log keeps its numbers (webhook cursors point into it).
    let sqlite_seqs: String = {
        use sqlx::Connection;
        let mut c = sqlx::SqliteConnection::connect(&app.database_url).await.expect("sqlite");
        sqlx::query_scalar("SELECT group_concat(id || ':' || seq, ',') FROM (SELECT id, seq FROM events ORDER BY seq)")
            .fetch_one(&mut c)
            .await
            .expect("events")
    };
    let pg_seqs: String = {
        use sqlx::Connection;
        let mut c = sqlx::PgConnection::connect(&pg_url).await.expect("pg");
        sqlx::query_scalar("SELECT string_agg(id || ':' || seq, ',' ORDER BY seq) FROM events")
            .fetch_one(&mut c)
            .await
            .expect("events")
    };
    assert_eq!(sqlite_seqs, pg_seqs);

    // A server on the copy (same identity provider, same data_dir for the
    // webhook secrets' key) answers the same, to the same credentials.
    let mut config = orgplane_server::Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        database_url: Some(pg_url.clone()),
        data_dir: app.data_dir.clone(),
        dev: true,
        migrate_on_start: false,
        max_connections: 4,
        ..orgplane_server::Config::default()
    };
    config.auth.issuers = vec![app.idp.issuer_config()];
    let server = orgplane_server::Application::build(config).await.expect("a server on the copy");
    let base = format!("http://{}", server.local_addr());
    tokio::spawn(server.run_until(std::future::pending()));
    let after = answers(&base, &data).await;
    for ((path, was), (_, is)) in before.iter().zip(&after) {
        assert_eq!(was, is, "{path} answers the same on the copy");
    }

    // New writes continue the event log after the copied events.
    let max_before = pg_count(&pg_url, "SELECT MAX(seq) FROM events").await;
    let http = reqwest::Client::new();
    let res = http
        .post(format!("{base}/v1/orgs/{}/resources", data.org))
        .bearer_auth(&data.alice.token)
        .json(&json!({"type": "customers", "name": "Initech"}))
        .send()
        .await
        .expect("create");
    assert_eq!(res.status().as_u16(), 201);
    let newer = pg_count(&pg_url, &format!("SELECT COUNT(*) FROM events WHERE seq > {max_before}")).await;
    assert!(newer >= 1, "the new event is numbered after every copied one");

    // Copying again: the target holds rows now, and nothing changes.
    let users = pg_count(&pg_url, "SELECT COUNT(*) FROM users").await;
    let (ok, _, err) = copy(&app.database_url, &pg_url);
    assert!(!ok);
    assert!(err.contains("is not empty") && err.contains("users (") && err.contains("nothing was copied"), "{err}");
    assert_eq!(pg_count(&pg_url, "SELECT COUNT(*) FROM users").await, users);
}

/// A table in the source that the target's schema lacks (or the reverse)
/// stops the copy before a row is written: no table is ever skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_the_other_side_lacks_or_another_version_stops_the_copy() {
    let Some(app) = crate::helpers::spawn_app(Backend::Sqlite).await else { return };
    let Some((_pg, pg_url)) = TestDb::create(Backend::Postgres).await else { return };
    app.user("alice@agency.example").await;
    app.sql("CREATE TABLE widgets (id TEXT PRIMARY KEY)").await;
    let (ok, _, err) = copy(&app.database_url, &pg_url);
    assert!(!ok);
    assert!(
        err.contains("tables only in the SQLite database [widgets]") && err.contains("nothing was copied"),
        "{err}"
    );
    assert_eq!(pg_count(&pg_url, "SELECT COUNT(*) FROM users").await, 0);
    app.sql("DROP TABLE widgets").await;

    app.sql("DELETE FROM orgplane_migrations WHERE version = (SELECT MAX(version) FROM orgplane_migrations)").await;
    let (ok, _, err) = copy(&app.database_url, &pg_url);
    assert!(!ok);
    assert!(err.contains("run `orgplane migrate --database-url"), "{err}");

    let (ok, _, err) = copy("sqlite:///nonexistent/orgplane.db", &pg_url);
    assert!(!ok && err.contains("/nonexistent/orgplane.db does not exist"), "{err}");
    let (ok, _, err) = copy(&pg_url, &app.database_url);
    assert!(!ok && err.contains("--from") && err.contains("not a sqlite:// URL"), "{err}");
}

/// The copy replaces only rows the target's migrations seeded: a freshly
/// migrated database holds rows in no other table (a migration that seeds
/// a new table must add it to `MIGRATION_SEEDED`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_freshly_migrated_database_holds_rows_only_in_the_seeded_tables() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let Some((_db, url)) = TestDb::create(backend).await else { return };
        let out = orgplane().args(["migrate", "--database-url", &url]).output().expect("migrate");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let tables: Vec<String> = match backend {
            Backend::Sqlite => sqlite_tables(&url).await,
            Backend::Postgres => {
                use sqlx::Connection;
                let mut c = sqlx::PgConnection::connect(&url).await.expect("pg");
                sqlx::query_scalar(
                    "SELECT table_name::text FROM information_schema.tables WHERE table_schema = current_schema() AND table_name NOT LIKE 'orgplane_migration%'",
                )
                .fetch_all(&mut c)
                .await
                .expect("tables")
            }
        };
        assert!(tables.len() > 20, "{tables:?}");
        for table in tables {
            let rows = match backend {
                Backend::Sqlite => {
                    use sqlx::Connection;
                    let mut c = sqlx::SqliteConnection::connect(&url).await.expect("sqlite");
                    sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM \"{table}\"")))
                        .fetch_one(&mut c)
                        .await
                        .expect("count")
                }
                Backend::Postgres => pg_count(&url, &format!("SELECT COUNT(*) FROM \"{table}\"")).await,
            };
            if rows > 0 {
                assert!(
                    orgplane_store::MIGRATION_SEEDED.contains(&table.as_str()),
                    "{table} holds {rows} rows after migrating a new database: add it to MIGRATION_SEEDED ({backend:?})"
                );
            }
        }
    }
}
