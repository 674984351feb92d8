//! Background work leases: with several replicas on one database, no two
//! work on the same org at once. Raced here through the store, the way the
//! reconciliation pass of each replica claims an org.

use crate::helpers::{Backend, spawn_app};
use crate::on_both_backends;

async fn racing_replicas_get_one_reconciliation_lease_per_org(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let alice = app.user("alice@example.com").await;
    let org: orgplane_core::OrgId = app.team(&alice, "Agency").await.parse().expect("org id");
    let store = orgplane_store::Store::connect(&orgplane_store::ConnectOptions {
        url: app.database_url.clone(),
        max_connections: 8,
    })
    .await
    .expect("store");
    let now = time::OffsetDateTime::now_utc();
    let ttl = time::Duration::minutes(5);
    let mut tasks = Vec::new();
    for replica in 0..24 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store.claim_reconcile_lease(org, &format!("replica-{replica}"), now, ttl).await.expect("claim")
        }));
    }
    let mut winners = 0;
    for t in tasks {
        if t.await.expect("task") {
            winners += 1;
        }
    }
    assert_eq!(winners, 1, "exactly one replica holds the org");
    // While the lease runs, nobody else gets it; once released (or expired), one can.
    assert!(!store.claim_reconcile_lease(org, "late-replica", now, ttl).await.expect("claim"));
    assert_eq!(app.count(&format!("SELECT COUNT(*) FROM reconcile_leases WHERE org_id = '{org}'")).await, 1);
    let later = now + time::Duration::minutes(6);
    assert!(store.claim_reconcile_lease(org, "late-replica", later, ttl).await.expect("claim after expiry"));
    store.release_reconcile_lease(org, "late-replica").await.expect("release");
    assert!(store.claim_reconcile_lease(org, "another", later, ttl).await.expect("claim after release"));
    store.close().await;
}

on_both_backends!(racing_replicas_get_one_reconciliation_lease_per_org);
