//! `orgplane dev seed` (issue 13): orgs made in batches straight into the
//! database answer through the API like any other org: the owner in the
//! members list, the subscription's plan and the resources' usage in the
//! entitlements, and a quota counter a new resource goes on counting from.

use std::collections::HashSet;
use std::process::Command;

use serde_json::json;

use crate::billing_support::sandbox_app;
use crate::helpers::Backend;
use crate::on_both_backends;

on_both_backends!(seeded_orgs_answer_through_the_api_like_any_org, seeding_a_number_twice_is_refused_and_adds_nothing,);

fn seed_cli(database_url: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_orgplane"))
        .env_remove("ORGPLANE_CONFIG")
        .env("ORGPLANE_LOG", "warn")
        .args(["dev", "seed"])
        .args(args)
        .args(["--database-url", database_url])
        .output()
        .expect("runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn seeded_orgs_answer_through_the_api_like_any_org(backend: Backend) {
    let Some(app) = sandbox_app(backend, |_| {}).await else { return };
    let key = app.api_key().await;
    let ids_file = app.data_dir.join("seeded-ids.txt");
    std::fs::create_dir_all(&app.data_dir).expect("data dir");
    // 50 orgs in batches of 20: three transactions, the last one short.
    let (ok, stdout, stderr) =
        seed_cli(&app.database_url, &["--orgs", "50", "--batch", "20", "--ids", ids_file.to_str().expect("utf-8")]);
    assert!(ok, "seed failed: {stdout}{stderr}");
    assert!(stdout.contains("seeded 50 orgs"), "{stdout}");
    assert!(stdout.contains("5 with an active sandbox subscription"), "{stdout}");
    let ids: Vec<String> = std::fs::read_to_string(&ids_file).expect("ids file").lines().map(str::to_owned).collect();
    assert_eq!(ids.len(), 50);
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 50, "distinct ids");

    // Number 0 has a subscription to business; number 1 is on the free plan.
    let subscribed = &ids[0];
    let ent = app.get(&format!("/v1/orgs/{subscribed}/entitlements"), &key).await;
    let ent = ent.expect(200);
    assert_eq!(ent["plan"], "business", "{ent}");
    assert_eq!(ent["status"], "active", "{ent}");
    assert_eq!(ent["kind"], "team");
    assert_eq!(ent["limits"]["customers"], json!({"limit": 100, "used": 1}), "{ent}");
    assert_eq!(ent["limits"]["clients"], json!({"limit": 1000, "used": 1}), "{ent}");
    assert_eq!(ent["features"]["api_tokens"], true);
    let sub = app.get(&format!("/v1/orgs/{subscribed}/subscription"), &key).await;
    assert_eq!(sub.expect(200)["plan"], "business", "{}", sub.body);

    let free = &ids[1];
    let ent = app.get(&format!("/v1/orgs/{free}/entitlements"), &key).await;
    let ent = ent.expect(200);
    assert_eq!(ent["plan"], "free", "{ent}");
    assert_eq!(ent["status"], serde_json::Value::Null);
    assert_eq!(ent["limits"]["customers"], json!({"limit": 3, "used": 1}), "{ent}");
    assert_eq!(ent["limits"]["seats"], json!({"limit": 2, "used": 1}), "{ent}");

    let members = app.get(&format!("/v1/orgs/{free}/members"), &key).await;
    let members = members.expect(200)["data"].as_array().expect("data").clone();
    assert_eq!(members.len(), 1, "{members:?}");
    assert_eq!(members[0]["email"], "seed-1@seed.example");
    assert_eq!(members[0]["role"], "owner");

    // The usage counter is the real one: creates count on from the seeded row.
    for name in ["Second", "Third"] {
        let res =
            app.post(&format!("/v1/orgs/{free}/resources"), &key, json!({"type": "customers", "name": name})).await;
        res.expect(201);
    }
    let res =
        app.post(&format!("/v1/orgs/{free}/resources"), &key, json!({"type": "customers", "name": "Fourth"})).await;
    res.expect_error(403, "limit_reached");
    let ent = app.get(&format!("/v1/orgs/{free}/entitlements"), &key).await;
    assert_eq!(ent.expect(200)["limits"]["customers"], json!({"limit": 3, "used": 3}));

    // Counters equal the rows for every seeded org.
    let mismatched = app
        .count(
            "SELECT COUNT(*) FROM resource_usage u WHERE u.used <> \
             (SELECT COUNT(*) FROM resources r WHERE r.org_id = u.org_id AND r.type = u.type)",
        )
        .await;
    assert_eq!(mismatched, 0);
    assert_eq!(app.count("SELECT COUNT(*) FROM subscriptions WHERE provider = 'sandbox'").await, 5);
    assert_eq!(app.count("SELECT COUNT(*) FROM provider_subscriptions WHERE provider = 'sandbox'").await, 5);
}

async fn seeding_a_number_twice_is_refused_and_adds_nothing(backend: Backend) {
    let Some(app) = sandbox_app(backend, |_| {}).await else { return };
    let (ok, stdout, stderr) = seed_cli(&app.database_url, &["--orgs", "10"]);
    assert!(ok, "{stdout}{stderr}");
    let orgs = app.count("SELECT COUNT(*) FROM orgs").await;
    // Numbers 5..15 overlap 0..10: the batch is one transaction, so nothing of it stays.
    let (ok, stdout, stderr) = seed_cli(&app.database_url, &["--orgs", "10", "--start", "5"]);
    assert!(!ok, "a repeated number must fail: {stdout}");
    assert!(stderr.contains("--start"), "the error says what to do: {stderr}");
    assert_eq!(app.count("SELECT COUNT(*) FROM orgs").await, orgs);
    let (ok, stdout, stderr) = seed_cli(&app.database_url, &["--orgs", "10", "--start", "10"]);
    assert!(ok, "{stdout}{stderr}");
    assert_eq!(app.count("SELECT COUNT(*) FROM orgs").await, orgs + 10);
}
