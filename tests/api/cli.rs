//! The `orgplane` command line: keys, plans, migrate, and serve's refusals.

use std::process::Command;

use crate::helpers::{Backend, TestApp, TestDb, spawn_app, spawn_app_with};
use crate::on_both_backends;

fn orgplane() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_orgplane"));
    cmd.env_remove("ORGPLANE_CONFIG").env("ORGPLANE_LOG", "warn");
    cmd
}

#[test]
fn plans_check_accepts_the_default_catalog() {
    let out = orgplane().args(["plans", "check"]).output().expect("runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("free (default)") && text.contains("business") && text.contains("valid"), "{text}");
}

#[test]
fn plans_check_names_the_plan_and_key_of_each_problem() {
    let dir = std::env::temp_dir().join(format!("orgplane_cli_{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("bad.toml");
    std::fs::write(
        &file,
        "[plans.free]\ndefault = true\ntier = \"free\"\nfeatures = [\"teleport\"]\nlimits = { widgets = 3 }\n",
    )
    .expect("write");
    let out = orgplane().args(["plans", "check", "--config"]).arg(&file).output().expect("runs");
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("plans.free.features") && text.contains("teleport"), "{text}");
    assert!(text.contains("plans.free.limits.widgets"), "{text}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn serve_in_dev_mode_refuses_a_public_address() {
    let out = orgplane().args(["serve", "--dev", "--listen", "0.0.0.0:0"]).output().expect("runs");
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("loopback"), "{text}");
}

/// A huge `invitations.ttl_hours` used to start fine and make every
/// invitation panic (`now + ttl` overflowed); now serve refuses to start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_an_out_of_range_setting_naming_key_value_and_range() {
    let data = std::env::temp_dir().join(format!("orgplane_ranges_{}", std::process::id()));
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_orgplane"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("ORGPLANE_INVITATIONS_TTL_HOURS", "4294967295")
        .env("ORGPLANE_DATA_DIR", &data)
        .env("ORGPLANE_LOG", "warn")
        .env_remove("ORGPLANE_CONFIG")
        .kill_on_drop(true)
        .output();
    // A guard against a hang, not a timing: serve that started would never exit.
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), child)
        .await
        .expect("serve exits instead of serving")
        .expect("serve runs");
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("invitations.ttl_hours: 4294967295 is out of range; allowed 1 to 8784 hours"),
        "the key, the value and the range are named: {text}"
    );
    assert!(!data.join("orgplane.db").exists(), "nothing was created before the config was checked");
    let _ = std::fs::remove_dir_all(data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_stops_cleanly_on_sigterm() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("free port").local_addr().expect("addr").port();
    let data = std::env::temp_dir().join(format!("orgplane_sigterm_{}", std::process::id()));
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_orgplane"))
        .args(["serve", "--dev", "--listen", &format!("127.0.0.1:{port}")])
        .env("ORGPLANE_DATA_DIR", &data)
        .env("ORGPLANE_LOG", "warn")
        .env_remove("ORGPLANE_CONFIG")
        .kill_on_drop(true)
        .spawn()
        .expect("serve starts");
    let http = reqwest::Client::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut ticks = tokio::time::interval(std::time::Duration::from_millis(50));
    loop {
        ticks.tick().await;
        if http.get(format!("http://127.0.0.1:{port}/healthz")).send().await.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "serve did not answer /healthz within 30 s");
    }
    // An open event stream must not hold the shutdown open.
    let key = orgplane()
        .args(["keys", "create", "--name", "stream"])
        .env("ORGPLANE_DATA_DIR", &data)
        .output()
        .expect("keys create");
    let key = String::from_utf8_lossy(&key.stdout).trim().to_owned();
    let stream = http
        .get(format!("http://127.0.0.1:{port}/v1/events/stream"))
        .bearer_auth(&key)
        .send()
        .await
        .expect("stream opens");
    assert_eq!(stream.status().as_u16(), 200);
    let pid = child.id().expect("running");
    let killed = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().expect("kill");
    assert!(killed.success());
    let status = tokio::time::timeout(std::time::Duration::from_secs(30), child.wait())
        .await
        .expect("serve exits within 30 s of SIGTERM")
        .expect("exit status");
    assert!(status.success(), "graceful shutdown exits 0, got {status}");
    drop(stream);
    let _ = std::fs::remove_dir_all(data);
}

async fn keys_create_prints_a_key_once_that_authenticates(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let out = orgplane()
        .args(["keys", "create", "--name", "ci-backend", "--database-url", &app.database_url])
        .output()
        .expect("runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let key = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(key.starts_with("sk_") && key.len() > 40, "{key}");
    assert_eq!(
        app.count("SELECT COUNT(*) FROM api_keys WHERE key_hash LIKE 'sk_%'").await,
        0,
        "only the hash is stored"
    );
    let alice = app.user("alice@example.com").await;
    let org = app.team(&alice, "Agency").await;
    app.get(&format!("/v1/orgs/{org}"), &key).await.expect(200);
}

/// Runs `orgplane keys …` against the app's database; (success, stdout, stderr).
fn keys(app: &TestApp, args: &[&str]) -> (bool, String, String) {
    let out = orgplane().arg("keys").args(args).args(["--database-url", &app.database_url]).output().expect("runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `keys create` prints the key on stdout and its id on stderr.
fn create_key(app: &TestApp, name: &str) -> (String, String) {
    let (ok, key, said) = keys(app, &["create", "--name", name]);
    assert!(ok, "{said}");
    let id = said.split_whitespace().find(|w| w.starts_with("key_")).expect("the key's id").to_owned();
    (key.trim().to_owned(), id)
}

async fn keys_list_shows_every_key_and_whether_it_is_revoked(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let (ok, out, err) = keys(&app, &["list"]);
    assert!(ok && out.contains("no API keys"), "{out}{err}");
    let (ci_key, ci) = create_key(&app, "ci-backend");
    let (_, old) = create_key(&app, "old-laptop");
    let (ok, out, err) = keys(&app, &["revoke", &old]);
    assert!(ok, "{err}");
    assert!(out.contains(&format!("revoked API key {old} (old-laptop)")), "{out}");

    let (ok, out, err) = keys(&app, &["list"]);
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "a header and one line per key: {out}");
    for column in ["ID", "NAME", "PREFIX", "SCOPE", "CREATED", "LAST USED", "EXPIRES", "STATUS"] {
        assert!(lines[0].contains(column), "{column}: {out}");
    }
    assert!(lines[1].starts_with(&ci) && lines[1].contains("ci-backend") && lines[1].ends_with("active"), "{out}");
    assert!(
        lines[1].contains(&ci_key[..11]) && lines[1].contains(" admin "),
        "the prefix and the default scope: {out}"
    );
    assert!(lines[2].starts_with(&old) && lines[2].contains("old-laptop") && lines[2].contains("revoked 20"), "{out}");
    assert!(!out.contains(&ci_key), "keys are never shown again, only their prefix: {out}");
}

async fn keys_create_takes_a_scope_and_a_lifetime(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let (ok, key, said) = keys(&app, &["create", "--name", "dashboard", "--scope", "read", "--expires-in", "90d"]);
    assert!(ok && said.contains("scope read") && said.contains("expires 20"), "{said}");
    let key = key.trim();
    let (ok, out, err) = keys(&app, &["list"]);
    assert!(ok, "{err}");
    let line = out.lines().nth(1).expect("one key");
    assert!(line.contains(" read ") && line.ends_with("active"), "{out}");
    let in_90_days = (time::OffsetDateTime::now_utc() + time::Duration::days(90)).date().to_string();
    assert!(line.contains(&in_90_days), "expires in 90 days ({in_90_days}): {out}");
    // A read key reads, and writes nothing.
    app.get("/v1/billing/events", key).await.expect(200);
    let alice = app.user("alice@example.com").await;
    let org = app.team(&alice, "Agency").await;
    let body = serde_json::json!({"type": "customers", "name": "Acme"});
    let res = app.post(&format!("/v1/orgs/{org}/resources"), key, body).await;
    res.expect_error(403, "forbidden");
    assert!(res.body["error"]["message"].as_str().unwrap_or("").contains("scope `read`"), "{}", res.body);
    for bad in [["--scope", "root"], ["--expires-in", "soon"]] {
        let (ok, _, err) = keys(&app, &["create", "--name", "x", bad[0], bad[1]]);
        assert!(!ok && err.contains(bad[0]), "{err}");
    }
}

async fn revoking_twice_says_so_and_an_unknown_id_is_an_error(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let (_, id) = create_key(&app, "ci-backend");
    assert!(keys(&app, &["revoke", &id]).0);
    let (ok, out, err) = keys(&app, &["revoke", &id]);
    assert!(ok, "revoking again is not a failure: {err}");
    assert!(out.contains(&format!("API key {id} (ci-backend) was already revoked at 20")), "{out}");
    assert!(out.contains("nothing changed"), "{out}");
    assert_eq!(app.count("SELECT COUNT(*) FROM events WHERE type = 'api_key.revoked'").await, 1, "one revocation");

    let unknown = crate::helpers::unknown_id("key");
    let (ok, _, err) = keys(&app, &["revoke", &unknown]);
    assert!(!ok);
    assert!(err.contains(&format!("no API key {unknown}")) && err.contains("keys list"), "{err}");
    let (ok, _, err) = keys(&app, &["revoke", "sk_not_an_id"]);
    assert!(!ok);
    assert!(err.contains("KEY_ID") && err.contains("key_"), "{err}");
}

/// The CLI revokes in another process: a server that cached the key learns
/// of it when the cached entry expires, after `cache.entitlements_ttl_ms`.
async fn a_revoked_key_is_refused_once_the_servers_cache_ttl_has_passed(backend: Backend) {
    const TTL_MS: u64 = 300;
    let Some(app) = spawn_app_with(backend, |c| c.cache.entitlements_ttl_ms = TTL_MS).await else { return };
    let alice = app.user("alice@example.com").await;
    let org = app.team(&alice, "Agency").await;
    let (key, id) = create_key(&app, "ci-backend");
    app.get(&format!("/v1/orgs/{org}"), &key).await.expect(200);
    let (ok, out, err) = keys(&app, &["revoke", &id]);
    assert!(ok, "{err}");
    assert!(out.contains("cache.entitlements_ttl_ms"), "the bound is stated: {out}");
    // The entry was cached before the revocation: one TTL from now it has
    // expired. Cache lifetimes run on the machine's clock, not the server's
    // injectable one (see `orgplane_server::clock`), so this waits the 300 ms.
    tokio::time::sleep(std::time::Duration::from_millis(TTL_MS)).await;
    let res = app.get(&format!("/v1/orgs/{org}"), &key).await;
    res.expect_error(401, "unauthenticated");
    assert!(res.body["error"]["message"].as_str().is_some_and(|m| m.contains("revoked")), "{}", res.body);
    let revoked = app.strings("SELECT data FROM events WHERE type = 'api_key.revoked'").await;
    assert_eq!(revoked.len(), 1);
    assert!(revoked[0].contains(&id) && revoked[0].contains("ci-backend"), "{revoked:?}");
}

async fn migrate_is_idempotent(backend: Backend) {
    let Some((_db, url)) = TestDb::create(backend).await else { return };
    for expected in ["applied migrations", "up to date"] {
        let out = orgplane().args(["migrate", "--database-url", &url]).output().expect("runs");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).contains(expected));
    }
}

on_both_backends!(
    keys_create_prints_a_key_once_that_authenticates,
    keys_list_shows_every_key_and_whether_it_is_revoked,
    keys_create_takes_a_scope_and_a_lifetime,
    revoking_twice_says_so_and_an_unknown_id_is_an_error,
    a_revoked_key_is_refused_once_the_servers_cache_ttl_has_passed,
    migrate_is_idempotent,
);
