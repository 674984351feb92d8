//! Clean-up of abandoned personal orgs (issue 11): only personal orgs of
//! users unseen for `[cleanup] personal_orgs_inactive_days`, with no live
//! subscription, no resource and no other member, are deleted, each with
//! an event; `orgplane cleanup --dry-run` lists exactly those.

use std::process::Command;

use serde_json::json;

use crate::billing_support::eventually;
use crate::helpers::{Backend, TestApp, TestUser, spawn_app, spawn_app_with, unknown_id};
use crate::on_both_backends;

on_both_backends!(
    the_dry_run_lists_exactly_the_eligible_orgs_and_a_run_deletes_them_and_nothing_else,
    the_background_job_deletes_abandoned_personal_orgs_when_turned_on,
    a_returning_user_gets_a_new_personal_org_once_even_under_thirty_concurrent_requests,
);

/// Users whose personal orgs are and aren't eligible: (eligible, kept).
async fn population(app: &TestApp) -> (Vec<TestUser>, Vec<TestUser>) {
    let gone_1 = app.user("gone-1@example.com").await;
    let gone_2 = app.user("gone-2@example.com").await;
    let with_resource = app.user("resource@example.com").await;
    let with_subscription = app.user("subscription@example.com").await;
    let with_member = app.user("member@example.com").await;
    let recent = app.user("recent@example.com").await;
    let body = json!({"type": "customers", "name": "Acme"});
    app.post(&format!("/v1/orgs/{}/resources", with_resource.personal_org), &with_resource.token, body)
        .await
        .expect(201);
    app.sql(&format!(
        "INSERT INTO subscriptions (id, org_id, provider, provider_subscription_id, status, observed_at, created_at, updated_at) \
         VALUES ('{}', '{}', 'sandbox', 'sbx_cleanup', 'active', 0, 0, 0)",
        unknown_id("sub"),
        with_subscription.personal_org
    ))
    .await;
    app.sql(&format!(
        "INSERT INTO memberships (org_id, user_id, role, created_at) VALUES ('{}', '{}', 'member', 0)",
        with_member.personal_org, recent.id
    ))
    .await;
    (vec![gone_1, gone_2], vec![with_resource, with_subscription, with_member, recent])
}

fn cleanup_cli(app: &TestApp, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_orgplane"))
        .env_remove("ORGPLANE_CONFIG")
        .env("ORGPLANE_LOG", "warn")
        .env("ORGPLANE_CLEANUP_PERSONAL_ORGS_INACTIVE_DAYS", "365")
        .arg("cleanup")
        .args(args)
        .args(["--database-url", &app.database_url])
        .output()
        .expect("runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn orgs_left(app: &TestApp, users: &[TestUser]) -> usize {
    let mut n = 0;
    for user in users {
        n += app.count(&format!("SELECT COUNT(*) FROM orgs WHERE id = '{}'", user.personal_org)).await as usize;
    }
    n
}

async fn the_dry_run_lists_exactly_the_eligible_orgs_and_a_run_deletes_them_and_nothing_else(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let (eligible, kept) = population(&app).await;
    let everyone: Vec<&TestUser> = eligible.iter().chain(&kept).collect();
    // Visits are written off the request: wait for them, then age everyone
    // but `recent` by 400 days.
    eventually(5, "every visit to be kept", || async {
        app.count("SELECT COUNT(*) FROM users WHERE last_seen_at IS NULL").await == 0
    })
    .await;
    let old = (time::OffsetDateTime::now_utc() - time::Duration::days(400)).unix_timestamp() * 1000;
    for user in everyone.iter().filter(|u| u.email != "recent@example.com") {
        app.sql(&format!("UPDATE users SET last_seen_at = {old}, created_at = {old} WHERE id = '{}'", user.id)).await;
    }
    let (ok, out, err) = cleanup_cli(&app, &["--dry-run"]);
    assert!(ok, "{err}");
    let listed: Vec<&str> = out.lines().filter(|l| l.starts_with("org_")).map(|l| &l[..30]).collect();
    let mut expected: Vec<&str> = eligible.iter().map(|u| u.personal_org.as_str()).collect();
    expected.sort_unstable();
    assert_eq!(listed, expected, "{out}");
    assert!(out.contains("dry run"), "{out}");
    assert_eq!(orgs_left(&app, &eligible).await, 2, "a dry run deletes nothing");

    let (ok, out, err) = cleanup_cli(&app, &[]);
    assert!(ok, "{err}");
    assert!(out.contains("2 abandoned personal orgs deleted"), "{out}");
    assert_eq!(orgs_left(&app, &eligible).await, 0);
    assert_eq!(
        orgs_left(&app, &kept).await,
        kept.len(),
        "the org with a resource, a subscription, a second member, and the recent user's stay"
    );
    for user in &eligible {
        let events = app
            .strings(&format!(
                "SELECT data FROM events WHERE org_id = '{}' AND type = 'org.deleted'",
                user.personal_org
            ))
            .await;
        assert_eq!(events.len(), 1);
        assert!(events[0].contains("abandoned"), "{events:?}");
        assert_eq!(
            app.count(&format!("SELECT COUNT(*) FROM users WHERE id = '{}'", user.id)).await,
            1,
            "the user stays"
        );
    }
    // A second run finds nothing.
    let (ok, out, _) = cleanup_cli(&app, &[]);
    assert!(ok && out.contains("0 abandoned personal orgs deleted"), "{out}");
    // Without the setting, clean-up is off and says how to turn it on.
    let out = Command::new(env!("CARGO_BIN_EXE_orgplane"))
        .env_remove("ORGPLANE_CONFIG")
        .args(["cleanup", "--dry-run", "--database-url", &app.database_url])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("personal_orgs_inactive_days"));
}

async fn the_background_job_deletes_abandoned_personal_orgs_when_turned_on(backend: Backend) {
    let Some(app) = spawn_app_with(backend, |c| {
        c.cleanup.personal_orgs_inactive_days = Some(365);
        c.cleanup.interval_secs = 1;
        c.cleanup.batch_size = 1;
    })
    .await
    else {
        return;
    };
    let (eligible, kept) = population(&app).await;
    eventually(5, "every visit to be kept", || async {
        app.count("SELECT COUNT(*) FROM users WHERE last_seen_at IS NULL").await == 0
    })
    .await;
    // A year and a month pass; `recent` comes back meanwhile.
    app.clock.advance(time::Duration::days(400));
    let recent = kept.iter().find(|u| u.email == "recent@example.com").expect("recent");
    app.get("/v1/me", &recent.token).await.expect(200);
    eventually(5, "recent's visit to be kept", || async {
        let old = (time::OffsetDateTime::now_utc() + time::Duration::days(300)).unix_timestamp() * 1000;
        app.count(&format!("SELECT COUNT(*) FROM users WHERE id = '{}' AND last_seen_at > {old}", recent.id)).await == 1
    })
    .await;
    // Batches of one, a pass a second: both go within a few seconds.
    eventually(10, "the abandoned orgs to be deleted", || async { orgs_left(&app, &eligible).await == 0 }).await;
    assert_eq!(orgs_left(&app, &kept).await, kept.len());
    assert_eq!(app.count("SELECT COUNT(*) FROM events WHERE type = 'org.deleted'").await, 2);
}

async fn a_returning_user_gets_a_new_personal_org_once_even_under_thirty_concurrent_requests(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let alice = app.user("alice@example.com").await;
    let racer = app.user("racer@example.com").await;
    // A year and a month later, the clean-up takes both personal orgs.
    app.clock.advance(time::Duration::days(400));
    let now = orgplane_server::clock::Clock::now(app.clock.as_ref());
    let deleted = orgplane_server::cleanup::pass(&app.state.store, 365, 10, now).await.expect("a clean-up pass");
    assert_eq!(deleted.len(), 2, "{deleted:?}");
    assert_eq!(orgs_left(&app, &[alice.clone(), racer.clone()]).await, 0);
    let personal_of = |user: &TestUser| format!("SELECT COUNT(*) FROM orgs WHERE personal_user_id = '{}'", user.id);
    assert_eq!(app.count(&personal_of(&alice)).await, 0);

    // Alice comes back: her first request gives her a new personal org,
    // which is her active org, with the event a first sign-in writes.
    let me = app.get("/v1/me", &alice.token).await;
    let body = me.expect(200);
    let memberships = body["memberships"].as_array().expect("memberships");
    assert_eq!(memberships.len(), 1, "{body}");
    assert_eq!(memberships[0]["kind"], "personal");
    assert_eq!(memberships[0]["role"], "owner");
    let fresh = memberships[0]["org_id"].as_str().expect("org id").to_owned();
    assert_ne!(fresh, alice.personal_org);
    assert_eq!(body["active_org_id"], fresh.as_str());
    assert_eq!(body["id"], alice.id.as_str(), "the same user");
    let created =
        app.strings(&format!("SELECT data FROM events WHERE org_id = '{fresh}' AND type = 'org.created'")).await;
    assert_eq!(created.len(), 1, "{created:?}");
    assert!(created[0].contains("\"personal\""), "{created:?}");
    assert_eq!(
        app.count(&format!("SELECT COUNT(*) FROM events WHERE type = 'user.created' AND data LIKE '%{}%'", alice.id))
            .await,
        1,
        "she was not created again"
    );
    // POST /v1/me/personal_org agrees.
    let ensured = app.post("/v1/me/personal_org", &alice.token, json!({})).await;
    assert_eq!(ensured.expect(200)["id"], fresh.as_str());

    // Thirty first requests at once after the clean-up: one personal org.
    let mut tasks = Vec::new();
    for i in 0..30 {
        let (http, token) = (app.http.clone(), racer.token.clone());
        let url = app.url(if i % 3 == 0 { "/v1/orgs" } else { "/v1/me" });
        tasks.push(tokio::spawn(async move {
            let res = http.get(url).bearer_auth(token).send().await.expect("reaches");
            (res.status().as_u16(), res.json::<serde_json::Value>().await.expect("json"))
        }));
    }
    let mut active = std::collections::BTreeSet::new();
    for task in tasks {
        let (status, body) = task.await.expect("task");
        assert_eq!(status, 200, "{body}");
        if let Some(org) = body["active_org_id"].as_str() {
            active.insert(org.to_owned());
        }
    }
    assert_eq!(app.count(&personal_of(&racer)).await, 1);
    assert_eq!(app.count(&format!("SELECT COUNT(*) FROM memberships WHERE user_id = '{}'", racer.id)).await, 1);
    let racer_org = app.strings(&format!("SELECT id FROM orgs WHERE personal_user_id = '{}'", racer.id)).await;
    assert_eq!(active.into_iter().collect::<Vec<_>>(), racer_org, "every answer names the one new org");
    assert_eq!(
        app.count(&format!("SELECT COUNT(*) FROM events WHERE type = 'org.created' AND org_id = '{}'", racer_org[0]))
            .await,
        1
    );
}
