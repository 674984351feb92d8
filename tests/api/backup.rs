//! `orgplane backup` and `orgplane restore`: a consistent copy while the
//! server takes writes, restored whole; PostgreSQL refused with the tools
//! to use instead.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::json;

use crate::helpers::{Backend, TestDb, spawn_app};
use crate::on_both_backends;

fn orgplane(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_orgplane"))
        .args(args)
        .env_remove("ORGPLANE_CONFIG")
        .env("ORGPLANE_LOG", "warn")
        .output()
        .expect("runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const WRITERS: usize = 32;

async fn a_backup_taken_under_writes_restores_every_acknowledged_write(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let dir = app.data_dir.join("backups");
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("orgplane-backup.db");
    let file_text = file.display().to_string();
    if backend == Backend::Postgres {
        let (ok, _, err) = orgplane(&["backup", "--to", &file_text, "--database-url", &app.database_url]);
        assert!(!ok);
        assert!(err.contains("pg_dump --format=custom --file=") && err.contains("pg_restore --clean"), "{err}");
        assert!(!file.exists(), "nothing written");
        let (ok, _, err) = orgplane(&["restore", "--from", &file_text, "--database-url", &app.database_url]);
        assert!(!ok && err.contains("does not exist"), "{err}");
        std::fs::write(&file, b"x").expect("file");
        let (ok, _, err) = orgplane(&["restore", "--from", &file_text, "--database-url", &app.database_url]);
        assert!(!ok && err.contains("pg_restore --clean --if-exists") && err.contains("orgplane copy"), "{err}");
        return;
    }

    let mut users = Vec::new();
    for i in 0..WRITERS {
        users.push(app.user(&format!("writer{i}@example.com")).await);
    }
    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for (i, user) in users.into_iter().enumerate() {
        let (acknowledged, stop, http, url) =
            (acknowledged.clone(), stop.clone(), app.http.clone(), app.url("/v1/orgs"));
        tasks.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let res =
                    http.post(&url).bearer_auth(&user.token).json(&json!({"name": format!("w{i}-{n}")})).send().await;
                if let Ok(res) = res
                    && res.status().as_u16() == 201
                {
                    let body: serde_json::Value = res.json().await.expect("JSON");
                    acknowledged.lock().expect("list").push(body["id"].as_str().expect("id").to_owned());
                }
            }
        }));
    }
    // Writes under way; the list as it stands now was acknowledged before
    // the backup starts.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut ticks = tokio::time::interval(std::time::Duration::from_millis(20));
    while acknowledged.lock().expect("list").len() < 2 * WRITERS {
        ticks.tick().await;
        assert!(std::time::Instant::now() < deadline, "writes go through within 60 s");
    }
    let before: Vec<String> = acknowledged.lock().expect("list").clone();
    let url = app.database_url.clone();
    let backup_file = file_text.clone();
    let (ok, out, err) =
        tokio::task::spawn_blocking(move || orgplane(&["backup", "--to", &backup_file, "--database-url", &url]))
            .await
            .expect("backup");
    let during = acknowledged.lock().expect("list").len();
    stop.store(true, Ordering::SeqCst);
    for task in tasks {
        task.await.expect("writer");
    }
    assert!(ok, "{err}");
    assert!(out.contains("backup written") && out.contains("integrity ok"), "{out}");
    assert!(during > before.len(), "writes went on while the backup ran ({during} > {})", before.len());

    // A backup never overwrites.
    let (ok, _, err) = orgplane(&["backup", "--to", &file_text, "--database-url", &app.database_url]);
    assert!(!ok && err.contains("exists") && err.contains("never overwrites"), "{err}");

    // Restored into a new path: whole, and with every acknowledged write.
    let Some((_restored_db, restored_url)) = TestDb::create(Backend::Sqlite).await else { return };
    let (ok, out, err) = orgplane(&["restore", "--from", &file_text, "--database-url", &restored_url]);
    assert!(ok, "{err}");
    assert!(out.contains("restored") && out.contains("integrity ok"), "{out}");
    use sqlx::Connection;
    let mut c = sqlx::SqliteConnection::connect(&restored_url).await.expect("restored database");
    let check: Vec<String> = sqlx::query_scalar("PRAGMA integrity_check").fetch_all(&mut c).await.expect("check");
    assert_eq!(check, ["ok"]);
    let ids: std::collections::HashSet<String> =
        sqlx::query_scalar("SELECT id FROM orgs").fetch_all(&mut c).await.expect("orgs").into_iter().collect();
    let missing: Vec<&String> = before.iter().filter(|id| !ids.contains(*id)).collect();
    assert!(missing.is_empty(), "acknowledged before the backup and missing from it: {missing:?}");
    drop(c);

    // A database holding rows is replaced only with --force.
    let (ok, _, err) = orgplane(&["restore", "--from", &file_text, "--database-url", &app.database_url]);
    assert!(!ok && err.contains("is not empty") && err.contains("--force") && err.contains("orgs ("), "{err}");
    let (ok, out, err) = orgplane(&["restore", "--from", &file_text, "--database-url", &restored_url, "--force"]);
    assert!(ok, "{err}");
    assert!(out.contains("replaced the database's rows"), "{out}");

    // A file that is not a backup is refused before anything changes.
    let junk = dir.join("junk.db");
    std::fs::write(&junk, vec![7u8; 4096]).expect("junk");
    let (ok, _, err) =
        orgplane(&["restore", "--from", &junk.display().to_string(), "--database-url", &restored_url, "--force"]);
    assert!(!ok && err.contains("junk.db"), "{err}");
}

on_both_backends!(a_backup_taken_under_writes_restores_every_acknowledged_write);
