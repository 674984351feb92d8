//! Database constraints the store does not expect to hit still answer the
//! contract's error (`conflict`, `not_found`…), never a 500; and every
//! constraint of the migrated schema has its row in
//! `orgplane_store::constraints::SCHEMA`.

use orgplane_store::constraints::{Kind, SCHEMA};
use serde_json::json;

use crate::billing_support::sandbox_app;
use crate::helpers::{Backend, spawn_app};
use crate::on_both_backends;

on_both_backends!(
    every_constraint_of_the_schema_maps_to_a_contract_error,
    an_unexpected_unique_violation_is_a_conflict_not_a_500,
    an_unexpected_foreign_key_violation_is_not_found_not_a_500,
);

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

async fn every_constraint_of_the_schema_maps_to_a_contract_error(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    match backend {
        Backend::Postgres => {
            // Constraints by name, and unique indexes (a unique constraint's
            // index has the constraint's name).
            let names = app
                .strings(
                    "SELECT c.conname::text FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace \
                     WHERE n.nspname = 'public' AND c.contype IN ('p', 'u', 'f', 'c') \
                     UNION SELECT indexname::text FROM pg_indexes WHERE schemaname = 'public' AND indexdef LIKE 'CREATE UNIQUE INDEX%'",
                )
                .await;
            let listed: Vec<String> = SCHEMA.iter().map(|c| c.name.to_owned()).collect();
            assert_eq!(sorted(names), sorted(listed));
        }
        Backend::Sqlite => {
            // Unique keys as SQLite reports them (`t.a, t.b`): primary keys
            // from the table's columns (an INTEGER PRIMARY KEY has no index),
            // the other unique keys from their indexes.
            let tables =
                app.strings("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'").await;
            let mut keys = Vec::new();
            let mut foreign = Vec::new();
            for table in &tables {
                let pk = app
                    .strings(&format!(
                        "SELECT '{table}.' || name FROM pragma_table_info('{table}') WHERE pk > 0 ORDER BY pk"
                    ))
                    .await;
                if !pk.is_empty() {
                    keys.push(pk.join(", "));
                }
                let indexes = app
                    .strings(&format!(
                        "SELECT name FROM pragma_index_list('{table}') WHERE \"unique\" = 1 AND origin <> 'pk'"
                    ))
                    .await;
                for index in indexes {
                    let columns = app
                        .strings(&format!("SELECT '{table}.' || name FROM pragma_index_info('{index}') ORDER BY seqno"))
                        .await;
                    keys.push(columns.join(", "));
                }
                // One entry per foreign key; a composite key's columns in order.
                foreign.extend(
                    app.strings(&format!(
                        "SELECT group_concat('{table}.' || \"from\", ', ') FROM \
                         (SELECT id, seq, \"from\" FROM pragma_foreign_key_list('{table}') ORDER BY id, seq) GROUP BY id"
                    ))
                    .await,
                );
            }
            let listed_keys: Vec<String> =
                SCHEMA.iter().filter(|c| c.kind == Kind::Unique).map(|c| c.sqlite_columns()).collect();
            assert_eq!(sorted(keys), sorted(listed_keys));
            let listed_foreign: Vec<String> =
                SCHEMA.iter().filter(|c| c.kind == Kind::ForeignKey).map(|c| c.sqlite_columns()).collect();
            assert_eq!(sorted(foreign), sorted(listed_foreign));
        }
    }
}

/// A sandbox subscription already tied to an open checkout (a state the
/// API can't reach): paying the checkout inserts a second one for it.
async fn an_unexpected_unique_violation_is_a_conflict_not_a_500(backend: Backend) {
    let Some(app) = sandbox_app(backend, |_| {}).await else { return };
    let smith = app.user("dr.smith@clinic.example").await;
    let org = app.team(&smith, "Downtown Clinic").await;
    let body =
        json!({"plan": "business", "success_url": "https://app.example/ok", "cancel_url": "https://app.example/no"});
    let url = app.post(&format!("/v1/orgs/{org}/checkout"), &smith.token, body).await.expect(200)["url"]
        .as_str()
        .expect("url")
        .to_owned();
    let checkout = url.rsplit('/').next().expect("checkout id");
    app.sql(&format!(
        "INSERT INTO sandbox_subscriptions (id, checkout_id, org_id, customer_id, price_id, quantity, status, \
         cancel_at_period_end, current_period_end, created_at, updated_at) \
         VALUES ('sbxsub_planted', '{checkout}', '{org}', 'sbxcus_planted', 'sandbox_business', 1, 'active', FALSE, 0, 0, 0)"
    ))
    .await;

    let res = app.send_request(app.http.post(format!("{url}/pay")).header("accept", "application/json")).await;
    res.expect_error(409, "conflict");
    assert!(res.body["error"]["message"].as_str().is_some_and(|m| m.contains("already been paid")), "{}", res.body);
    // Nothing of the refused payment stayed.
    assert_eq!(
        app.count(&format!("SELECT COUNT(*) FROM checkouts WHERE id = '{checkout}' AND status = 'open'")).await,
        1
    );
    assert_eq!(app.subscription(&org, &smith.token).await.status.as_u16(), 404);
}

/// A membership whose user row is gone (planted with foreign keys off):
/// granting that member a resource inserts a grant for a missing user.
async fn an_unexpected_foreign_key_violation_is_not_found_not_a_500(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let key = app.api_key().await;
    let alice = app.user("alice@example.com").await;
    let org = app.team(&alice, "Agency").await;
    let res = app.post(&format!("/v1/orgs/{org}/resources"), &key, json!({"type": "customers", "name": "ACME"})).await;
    let resource = res.expect(201)["id"].as_str().expect("resource id").to_owned();
    let ghost = crate::helpers::unknown_id("usr");
    let without_foreign_keys = match backend {
        Backend::Sqlite => "PRAGMA foreign_keys = OFF;",
        Backend::Postgres => "SET session_replication_role = replica;",
    };
    app.sql(&format!(
        "{without_foreign_keys} INSERT INTO memberships (org_id, user_id, role, created_at) VALUES ('{org}', '{ghost}', 'member', 0)"
    ))
    .await;

    let res = app.put(&format!("/v1/orgs/{org}/resources/{resource}/grants/{ghost}"), &key, json!({})).await;
    res.expect_error(404, "not_found");
    assert_eq!(app.count("SELECT COUNT(*) FROM resource_grants").await, 0);
}
