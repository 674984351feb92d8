//! The per-(org, type) resource counter behind quota checks: exact under
//! a race of creates and deletes on one hot org, and equal to the rows.

use serde_json::json;

use crate::helpers::{Backend, TestApp, spawn_app_with};
use crate::on_both_backends;

/// Sends `n` concurrent creates of `customers` to `org`; the statuses.
async fn create_concurrently(app: &TestApp, org: &str, key: &str, tag: &str, n: usize) -> Vec<u16> {
    let mut tasks = Vec::new();
    for i in 0..n {
        let (http, url, key) = (app.http.clone(), app.url(&format!("/v1/orgs/{org}/resources")), key.to_owned());
        let external_id = format!("{tag}-{i}");
        tasks.push(tokio::spawn(async move {
            let res = http
                .post(url)
                .bearer_auth(key)
                .json(&json!({"type": "customers", "external_id": external_id}))
                .send()
                .await
                .expect("reaches");
            res.status().as_u16()
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.expect("task"));
    }
    statuses
}

/// Rows of `customers` in `org`, its counter, and what entitlements show.
async fn rows_counter_shown(app: &TestApp, org: &str, key: &str) -> (i64, i64, serde_json::Value) {
    let rows =
        app.count(&format!("SELECT COUNT(*) FROM resources WHERE org_id = '{org}' AND type = 'customers'")).await;
    let counter = app
        .count(&format!(
            "SELECT COALESCE(MAX(used), 0) FROM resource_usage WHERE org_id = '{org}' AND type = 'customers'"
        ))
        .await;
    let shown = app.get(&format!("/v1/orgs/{org}/entitlements"), key).await.expect(200)["limits"]["customers"].clone();
    (rows, counter, shown)
}

async fn two_hundred_concurrent_creates_against_a_limit_of_fifty_make_exactly_fifty(backend: Backend) {
    // One API key sends all 200 at once: the rate limits are off,
    // and so are the waits for a connection and for the org's lock (200
    // writers to one org queue behind each other; on a loaded machine that
    // can pass the 2 s default, and a 503 there is right but not what this
    // test counts).
    let Some(app) = spawn_app_with(backend, |c| {
        c.limits.rate_per_second = 0.0;
        c.limits.anonymous_rate_per_second = 0.0;
        c.limits.max_in_flight = 0;
        c.database.acquire_timeout_ms = 60_000;
        c.database.statement_timeout_ms = 60_000;
    })
    .await
    else {
        return;
    };
    let key = app.api_key().await;
    let alice = app.user("alice@example.com").await;
    let org = app.team(&alice, "Agency").await;
    app.put(&format!("/v1/orgs/{org}/overrides"), &key, json!({"limits": {"customers": 50}})).await.expect(200);

    let statuses = create_concurrently(&app, &org, &key, "first", 200).await;
    let created = statuses.iter().filter(|s| **s == 201).count();
    assert_eq!(created, 50, "{statuses:?}");
    assert!(statuses.iter().all(|s| *s == 201 || *s == 403), "{statuses:?}");
    let (rows, counter, shown) = rows_counter_shown(&app, &org, &key).await;
    assert_eq!((rows, counter), (50, 50));
    assert_eq!(shown, json!({"limit": 50, "used": 50}));

    // Deletes and creates racing: 20 deletes free 20 places, 100 creates
    // take them; the counter follows the rows through both.
    let page = app.get(&format!("/v1/orgs/{org}/resources?type=customers&limit=20"), &key).await;
    let ids: Vec<String> = page.expect(200)["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|r| r["id"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(ids.len(), 20);
    let mut deletes = Vec::new();
    for id in ids {
        let (http, url, key) = (app.http.clone(), app.url(&format!("/v1/orgs/{org}/resources/{id}")), key.clone());
        deletes.push(tokio::spawn(async move {
            http.delete(url).bearer_auth(key).send().await.expect("reaches").status().as_u16()
        }));
    }
    let creates = create_concurrently(&app, &org, &key, "second", 100).await;
    for d in deletes {
        assert_eq!(d.await.expect("task"), 200);
    }
    assert!(creates.iter().all(|s| *s == 201 || *s == 403), "{creates:?}");
    let created_again = creates.iter().filter(|s| **s == 201).count() as i64;
    assert!(created_again <= 20, "at most the 20 freed places: {created_again}");
    let (rows, counter, shown) = rows_counter_shown(&app, &org, &key).await;
    assert_eq!(rows, 30 + created_again);
    assert_eq!(counter, rows, "the counter equals the rows after the race");
    assert_eq!(shown, json!({"limit": 50, "used": rows}));

    // With every place known free again, a last race fills exactly to 50.
    let last = create_concurrently(&app, &org, &key, "third", 60).await;
    assert_eq!(last.iter().filter(|s| **s == 201).count() as i64, 50 - rows, "{last:?}");
    let (rows, counter, _) = rows_counter_shown(&app, &org, &key).await;
    assert_eq!((rows, counter), (50, 50));
}

async fn a_deleted_org_takes_its_counters_along(backend: Backend) {
    let Some(app) = spawn_app_with(backend, |_| {}).await else { return };
    let key = app.api_key().await;
    let alice = app.user("alice@example.com").await;
    let org = app.team(&alice, "Agency").await;
    let statuses = create_concurrently(&app, &org, &key, "c", 3).await;
    assert_eq!(statuses, vec![201, 201, 201]);
    assert_eq!(app.count(&format!("SELECT COUNT(*) FROM resource_usage WHERE org_id = '{org}'")).await, 1);
    assert_eq!(app.delete(&format!("/v1/orgs/{org}"), &alice.token).await.expect(200)["deleted"], true);
    assert_eq!(app.count(&format!("SELECT COUNT(*) FROM resource_usage WHERE org_id = '{org}'")).await, 0);
}

on_both_backends!(
    two_hundred_concurrent_creates_against_a_limit_of_fifty_make_exactly_fifty,
    a_deleted_org_takes_its_counters_along,
);
