//! The `orgplane` command line: keys, plans, migrate, and serve's refusals.

use std::process::Command;

use crate::helpers::{Backend, TestDb, spawn_app};
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

async fn migrate_is_idempotent(backend: Backend) {
    let Some((_db, url)) = TestDb::create(backend).await else { return };
    for expected in ["applied migrations", "up to date"] {
        let out = orgplane().args(["migrate", "--database-url", &url]).output().expect("runs");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).contains(expected));
    }
}

on_both_backends!(keys_create_prints_a_key_once_that_authenticates, migrate_is_idempotent);
