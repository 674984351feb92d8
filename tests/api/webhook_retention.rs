//! Retention of outgoing-webhook deliveries (`webhooks.retention_days`):
//! finished deliveries older than the retention go with their attempts;
//! pending ones, recent ones and those of an endpoint under a replica's
//! lease stay; and a replay after the sweep delivers the swept events
//! again (from the event log). Time moves on the app's manual clock; the
//! deliveries are real, to the loopback receiver of `webhooks_out`.

use orgplane_server::clock::Clock;
use serde_json::json;

use crate::billing_support::eventually;
use crate::helpers::{Backend, TestApp};
use crate::on_both_backends;
use crate::webhooks_out::{app_and_receiver_with, endpoint, ids_of};

on_both_backends!(
    old_finished_deliveries_go_pending_recent_and_leased_ones_stay_and_replay_still_delivers,
    sweeps_racing_replays_never_delete_a_delivery_made_pending,
);

/// Deliveries of `endpoint` with `status`.
async fn count(app: &TestApp, endpoint: &str, status: &str) -> i64 {
    app.count(&format!(
        "SELECT COUNT(*) FROM webhook_deliveries WHERE endpoint_id = '{endpoint}' AND status = '{status}'"
    ))
    .await
}

async fn attempts_of(app: &TestApp, endpoint: &str) -> i64 {
    app.count(&format!(
        "SELECT COUNT(*) FROM webhook_attempts WHERE delivery_id IN (SELECT id FROM webhook_deliveries WHERE endpoint_id = '{endpoint}')"
    ))
    .await
}

async fn sweep(app: &TestApp) -> u64 {
    let retention = app.state.config.webhooks.retention_days;
    orgplane_server::webhook_retention::sweep(&app.state.store, retention, app.clock.now()).await.expect("a sweep")
}

async fn old_finished_deliveries_go_pending_recent_and_leased_ones_stay_and_replay_still_delivers(backend: Backend) {
    // Two attempts a second apart, then a week: a failing delivery stays
    // pending for days before it fails. No endpoint is disabled for failing.
    let Some((app, receiver, key)) = app_and_receiver_with(backend, |c| {
        c.webhooks.retry_schedule_secs = vec![1, 604_800];
        c.webhooks.disable_after_hours = 8784;
    })
    .await
    else {
        return;
    };
    assert_eq!(app.state.config.webhooks.retention_days, 30, "the default");
    let alice = app.user("alice@example.com").await;
    let team = app.team(&alice, "Clinic").await;
    let org_only = json!({"event_types": ["org.*"]});
    let (ok, _) = endpoint(&app, &key, &receiver, "ok", org_only.clone()).await;
    let (down, _) = endpoint(&app, &key, &receiver, "down", org_only.clone()).await;
    let (held, _) = endpoint(&app, &key, &receiver, "held", org_only).await;
    receiver.fail("down", Some(500)).await;
    receiver.fail("held", Some(500)).await;
    let rename = |n: u32| {
        let (app, alice, team) = (&app, &alice, &team);
        async move {
            app.patch(&format!("/v1/orgs/{team}"), &alice.token, json!({"name": format!("Clinic {n}")}))
                .await
                .expect(200);
        }
    };
    for n in 1..=3 {
        rename(n).await;
    }
    let first_events: Vec<String> = app.strings("SELECT id FROM events WHERE type = 'org.updated' ORDER BY seq").await;
    assert_eq!(first_events.len(), 3);
    // `ok` has them; `down` and `held` failed twice and wait a week.
    eventually(30, "three successes and two failed attempts each elsewhere", || async {
        count(&app, &ok, "succeeded").await == 3
            && attempts_of(&app, &down).await == 6
            && attempts_of(&app, &held).await == 6
    })
    .await;
    // `held` is turned off: its three deliveries stay pending for good.
    app.patch(&format!("/v1/webhook_endpoints/{held}"), &key, json!({"enabled": false})).await.expect(200);

    // Nine days on, `down`'s last attempts fail: `failed`, nine days after `ok`'s successes.
    app.clock.advance(time::Duration::days(9));
    eventually(30, "down's deliveries to fail", || async { count(&app, &down, "failed").await == 3 }).await;

    // A month after the first deliveries: `ok`'s three are past the 30
    // days; `down`'s failures (21 days) and `held`'s pending ones stay.
    app.clock.advance(time::Duration::days(24));
    rename(4).await;
    // `ok` has it; `down` failed twice again and waits a week.
    eventually(30, "the recent success and down's two attempts", || async {
        count(&app, &ok, "succeeded").await == 4 && attempts_of(&app, &down).await == 9 + 2
    })
    .await;
    let attempts_before = attempts_of(&app, &ok).await;
    assert_eq!(sweep(&app).await, 3);
    assert_eq!(count(&app, &ok, "succeeded").await, 1, "the recent one stays");
    assert_eq!(attempts_of(&app, &ok).await, attempts_before - 3, "attempts go with their delivery");
    let kept = app.strings(&format!("SELECT event_id FROM webhook_deliveries WHERE endpoint_id = '{ok}'")).await;
    assert!(first_events.iter().all(|e| !kept.contains(e)), "{kept:?}");
    assert_eq!(count(&app, &down, "failed").await, 3);
    assert_eq!(count(&app, &held, "pending").await, 3, "pending: never swept, however old");
    assert_eq!(attempts_of(&app, &held).await, 6);
    assert_eq!(sweep(&app).await, 0, "nothing else is due");

    // Ten days later `down`'s failures are 31 days old, but a replica holds
    // `down`'s lease: they wait for a sweep after it is let go.
    app.clock.advance(time::Duration::days(10));
    let until = (app.clock.now() + time::Duration::hours(1)).unix_timestamp() * 1000;
    app.sql(&format!(
        "UPDATE webhook_endpoints SET lease_owner = 'another-replica', lease_until = {until} WHERE id = '{down}'"
    ))
    .await;
    assert_eq!(sweep(&app).await, 0);
    assert_eq!(count(&app, &down, "failed").await, 3);
    app.sql(&format!("UPDATE webhook_endpoints SET lease_owner = NULL, lease_until = NULL WHERE id = '{down}'")).await;
    eventually(30, "down's delivery of the fourth rename to fail too", || async {
        count(&app, &down, "failed").await == 4
    })
    .await;
    assert_eq!(sweep(&app).await, 3, "the three old failures; the fourth is 10 days old");
    assert_eq!(count(&app, &down, "failed").await, 1);
    assert_eq!(count(&app, &held, "pending").await, 3);

    // Replay re-sends stored events, not deliveries: the swept ones go out again.
    let before = ids_of(&receiver.received().await, "ok").len();
    let res = app.post(&format!("/v1/webhook_endpoints/{ok}/replay"), &key, json!({"since": first_events[0]})).await;
    assert_eq!(res.expect(200)["queued"], 3, "the second, third and fourth renames");
    let got = receiver.wait_until("the replay", |r| ids_of(r, "ok").len() >= before + 3).await;
    let replayed = ids_of(&got, "ok")[before..].to_vec();
    let mut want = first_events[1..].to_vec();
    want.extend(app.strings("SELECT id FROM events WHERE type = 'org.updated' ORDER BY seq DESC LIMIT 1").await);
    assert_eq!(replayed, want);
    eventually(30, "the replayed deliveries to be logged", || async { count(&app, &ok, "succeeded").await == 3 }).await;
}

/// Replays (which make deliveries pending again) race sweeps of the same
/// old deliveries: whatever the interleaving, no replayed delivery is lost.
async fn sweeps_racing_replays_never_delete_a_delivery_made_pending(backend: Backend) {
    let Some((app, receiver, key)) = app_and_receiver_with(backend, |_| {}).await else { return };
    let alice = app.user("alice@example.com").await;
    let team = app.team(&alice, "Clinic").await;
    let (ok, _) = endpoint(&app, &key, &receiver, "ok", json!({"event_types": ["org.*"]})).await;
    const RENAMES: i64 = 30;
    const REPLAYS: usize = 1;
    const SWEEPERS: usize = 24;
    for n in 1..=RENAMES {
        app.patch(&format!("/v1/orgs/{team}"), &alice.token, json!({"name": format!("Clinic {n}")})).await.expect(200);
    }
    eventually(30, "every rename delivered", || async { count(&app, &ok, "succeeded").await == RENAMES }).await;
    // Off, so that the replayed deliveries stay pending for the count below.
    app.patch(&format!("/v1/webhook_endpoints/{ok}"), &key, json!({"enabled": false})).await.expect(200);
    let since = app
        .strings("SELECT id FROM events WHERE seq < (SELECT MIN(seq) FROM events WHERE type = 'org.updated') ORDER BY seq DESC LIMIT 1")
        .await
        .remove(0);
    app.clock.advance(time::Duration::days(31));
    let now = app.clock.now();
    let before = orgplane_server::webhook_retention::cutoff(30, now);

    // Sweepers first (as other replicas would), then the replay, so that
    // sweeps run while its transaction is open. One replay: a second one
    // would queue again what a wrong sweep deleted and hide the loss.
    let mut tasks = Vec::new();
    for _ in 0..SWEEPERS {
        let store = app.state.store.clone();
        tasks.push(tokio::spawn(async move {
            // One delivery per statement: many chances to interleave.
            while store.sweep_webhook_deliveries(before, now, 1).await.expect("a sweep step") == 1 {}
        }));
    }
    for _ in 0..REPLAYS {
        let (http, url, key) = (app.http.clone(), app.url(&format!("/v1/webhook_endpoints/{ok}/replay")), key.clone());
        let body = json!({"since": since});
        tasks.push(tokio::spawn(async move {
            let res = http.post(url).bearer_auth(key).json(&body).send().await.expect("reaches");
            assert_eq!(res.status().as_u16(), 200);
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
    let rows = app
        .count(&format!(
            "SELECT COUNT(DISTINCT event_id) FROM webhook_deliveries WHERE endpoint_id = '{ok}' AND status = 'pending'"
        ))
        .await;
    assert_eq!(rows, RENAMES, "every replayed event has its pending delivery");
    assert_eq!(
        app.count(&format!("SELECT COUNT(*) FROM webhook_deliveries WHERE endpoint_id = '{ok}'")).await,
        RENAMES
    );
    assert_eq!(sweep(&app).await, 0, "pending deliveries are never swept");
}
