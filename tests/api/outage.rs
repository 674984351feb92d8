//! A database outage. Calls answer `503 unavailable` with `Retry-After`
//! within about the pool's acquire timeout (2 s), a provider's webhook too
//! (it delivers again; nothing is stored as failed meanwhile), `/readyz` is
//! 503, and everything works again once the database is back, without a
//! restart. The outage tests are PostgreSQL only: the database is reached
//! through a TCP proxy that loses it (SQLite is a file, with no link to
//! lose). A statement held up past the statement timeout is the same kind
//! of failure, on both backends.

use std::time::Duration;

use serde_json::json;

use crate::billing_support::{StripeSub, now, stripe_event, stripe_webhook_app};
use crate::db_proxy::{DbProxy, Link};
use crate::helpers::{Backend, Res, postgres_admin_url};
use crate::on_both_backends;

on_both_backends!(a_statement_held_up_past_the_statement_timeout_answers_503_and_stores_no_failed_event);

mod postgres_only {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_black_holed_database_answers_503_with_retry_after_then_recovers_without_a_restart() {
        outage_and_recovery(Link::BlackHole).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cut_and_refused_database_answers_503_with_retry_after_then_recovers_without_a_restart() {
        outage_and_recovery(Link::Down).await
    }
}

#[track_caller]
fn expect_unavailable(res: &Res, what: &str) {
    assert_eq!(res.status.as_u16(), 503, "{what}: {}", res.body);
    assert_eq!(res.code(), "unavailable", "{what}: {}", res.body);
    let retry_after = res.headers.get("retry-after").and_then(|v| v.to_str().ok());
    assert_eq!(retry_after, Some("2"), "{what}: {:?}", res.headers);
}

async fn outage_and_recovery(link: Link) {
    let proxy = DbProxy::start(&postgres_admin_url()).await;
    let Some(app) = stripe_webhook_app(Backend::Postgres, |c| {
        c.database_url = c.database_url.as_deref().map(|url| proxy.url_for(url));
        // Every call below must ask the database.
        c.cache.entitlements_ttl_ms = 0;
    })
    .await
    else {
        return;
    };
    let alice = app.user("alice@example.com").await;
    let org = app.team(&alice, "Downtown Clinic").await;
    let subscription = StripeSub::new("sub_outage", Some(&org), "cus_outage").object();
    let delivery = stripe_event("evt_outage", "customer.subscription.created", now(), subscription);

    proxy.set(link);
    let started = tokio::time::Instant::now();
    let res = app.get(&format!("/v1/orgs/{org}"), &alice.token).await;
    expect_unavailable(&res, "a read");
    // Generous: the old answer (500) came after the old 10 s acquire timeout.
    assert!(started.elapsed() < Duration::from_secs(10), "answered after {:?}", started.elapsed());
    expect_unavailable(&app.post("/v1/orgs", &alice.token, json!({"name": "During"})).await, "a write");
    expect_unavailable(&app.stripe_webhook(&delivery).await, "a webhook");
    expect_unavailable(&app.get_anonymous("/readyz").await, "/readyz");

    proxy.set(Link::UP);
    app.get(&format!("/v1/orgs/{org}"), &alice.token).await.expect(200);
    app.post("/v1/orgs", &alice.token, json!({"name": "After"})).await.expect(201);
    // The provider's next delivery is the first one stored.
    let receipt = app.stripe_webhook(&delivery).await;
    assert_eq!(receipt.expect(200)["status"], "applied", "{}", receipt.body);
    assert_eq!(app.get_anonymous("/readyz").await.expect(200)["status"], "ok");
    assert_eq!(app.count("SELECT COUNT(*) FROM orgs WHERE name = 'During'").await, 0);
}

/// Another session holds the lock a change needs (PostgreSQL: the org's
/// row; SQLite: the write lock) for longer than `statement_timeout_ms`. The
/// change answers 503 instead of waiting, and a webhook is not stored as a
/// failed event (the provider delivers it again) but answered 503 at once.
async fn a_statement_held_up_past_the_statement_timeout_answers_503_and_stores_no_failed_event(backend: Backend) {
    let Some(app) = stripe_webhook_app(backend, |c| c.database.statement_timeout_ms = 300).await else { return };
    let alice = app.user("alice@example.com").await;
    let org = app.team(&alice, "Downtown Clinic").await;
    let subscription = StripeSub::new("sub_held", Some(&org), "cus_held").object();
    let delivery = stripe_event("evt_held", "customer.subscription.created", now(), subscription);

    let holder = LockHolder::hold(&app.database_url, &org).await;
    let res = app.patch(&format!("/v1/orgs/{org}"), &alice.token, json!({"name": "Renamed"})).await;
    expect_unavailable(&res, "a change");
    expect_unavailable(&app.stripe_webhook(&delivery).await, "a webhook");
    assert_eq!(app.count("SELECT COUNT(*) FROM provider_events").await, 0, "nothing stored as failed");
    holder.release().await;

    app.patch(&format!("/v1/orgs/{org}"), &alice.token, json!({"name": "Renamed"})).await.expect(200);
    let receipt = app.stripe_webhook(&delivery).await;
    assert_eq!(receipt.expect(200)["status"], "applied", "{}", receipt.body);
}

/// A session of the test's own that holds what a change of `org` needs.
enum LockHolder {
    Postgres(sqlx::PgConnection),
    Sqlite(sqlx::SqliteConnection),
}

impl LockHolder {
    async fn hold(database_url: &str, org: &str) -> LockHolder {
        use sqlx::Connection;
        if database_url.starts_with("postgres") {
            let mut conn = sqlx::PgConnection::connect(database_url).await.expect("pg");
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("BEGIN; SELECT 1 FROM orgs WHERE id = '{org}' FOR UPDATE")))
                .execute(&mut conn)
                .await
                .expect("lock the org");
            LockHolder::Postgres(conn)
        } else {
            let mut conn = sqlx::SqliteConnection::connect(database_url).await.expect("sqlite");
            sqlx::raw_sql("BEGIN IMMEDIATE").execute(&mut conn).await.expect("take the write lock");
            LockHolder::Sqlite(conn)
        }
    }

    async fn release(self) {
        match self {
            LockHolder::Postgres(mut conn) => {
                sqlx::raw_sql("ROLLBACK").execute(&mut conn).await.expect("rollback");
            }
            LockHolder::Sqlite(mut conn) => {
                sqlx::raw_sql("ROLLBACK").execute(&mut conn).await.expect("rollback");
            }
        }
    }
}
