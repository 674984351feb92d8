//! Embedded migrations, one folder per backend with the same version numbers
//! (a test checks that they match). Each migration runs in one transaction
//! and is recorded in `orgplane_migrations`.

use crate::{Result, Store, StoreError};

pub(crate) struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sqlite: &'static str,
    pub postgres: &'static str,
}

pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "tenancy",
        sqlite: include_str!("../migrations/sqlite/0001_tenancy.sql"),
        postgres: include_str!("../migrations/postgres/0001_tenancy.sql"),
    },
    Migration {
        version: 2,
        name: "entitlements",
        sqlite: include_str!("../migrations/sqlite/0002_entitlements.sql"),
        postgres: include_str!("../migrations/postgres/0002_entitlements.sql"),
    },
    Migration {
        version: 3,
        name: "billing",
        sqlite: include_str!("../migrations/sqlite/0003_billing.sql"),
        postgres: include_str!("../migrations/postgres/0003_billing.sql"),
    },
    Migration {
        version: 4,
        name: "subscription_states",
        sqlite: include_str!("../migrations/sqlite/0004_subscription_states.sql"),
        postgres: include_str!("../migrations/postgres/0004_subscription_states.sql"),
    },
    Migration {
        version: 5,
        name: "commit_ordered_events",
        sqlite: include_str!("../migrations/sqlite/0005_commit_ordered_events.sql"),
        postgres: include_str!("../migrations/postgres/0005_commit_ordered_events.sql"),
    },
];

const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS orgplane_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)";

pub(crate) async fn run(store: &Store) -> Result<Vec<i64>> {
    let mut applied_now = Vec::new();
    let now = crate::millis(time::OffsetDateTime::now_utc());
    match &store.backend {
        crate::Backend::Sqlite(pool) => {
            sqlx::query(CREATE_TABLE).execute(pool).await?;
            for m in MIGRATIONS {
                let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                let done: Option<(i64,)> = sqlx::query_as("SELECT version FROM orgplane_migrations WHERE version = $1")
                    .bind(m.version)
                    .fetch_optional(&mut *tx)
                    .await?;
                if done.is_none() {
                    sqlx::raw_sql(m.sqlite).execute(&mut *tx).await.map_err(|e| migration_failed(m, e))?;
                    record(&mut tx, m, now).await?;
                    applied_now.push(m.version);
                }
                tx.commit().await?;
            }
        }
        crate::Backend::Postgres(pool) => {
            // Several replicas may start at once: one migrates, the others wait.
            let mut tx = pool.begin().await?;
            // A migration (or the wait for another replica's) may take longer
            // than the statement timeout that guards requests.
            sqlx::query("SET LOCAL statement_timeout = 0").execute(&mut *tx).await?;
            sqlx::query("SELECT pg_advisory_xact_lock(7242001)").execute(&mut *tx).await?;
            sqlx::query(CREATE_TABLE).execute(&mut *tx).await?;
            for m in MIGRATIONS {
                let done: Option<(i64,)> = sqlx::query_as("SELECT version FROM orgplane_migrations WHERE version = $1")
                    .bind(m.version)
                    .fetch_optional(&mut *tx)
                    .await?;
                if done.is_none() {
                    sqlx::raw_sql(m.postgres).execute(&mut *tx).await.map_err(|e| migration_failed(m, e))?;
                    record(&mut tx, m, now).await?;
                    applied_now.push(m.version);
                }
            }
            tx.commit().await?;
        }
    }
    Ok(applied_now)
}

/// `Ok` when every embedded migration has been applied; otherwise
/// [`StoreError::Unavailable`] naming what is missing (the database answers,
/// but this build can't use it until `orgplane migrate` runs).
pub(crate) async fn check_applied(store: &Store) -> Result<()> {
    let newest = MIGRATIONS.last().map_or(0, |m| m.version);
    let applied = match &store.backend {
        crate::Backend::Sqlite(pool) => newest_applied(pool).await,
        crate::Backend::Postgres(pool) => newest_applied(pool).await,
    };
    let applied = match applied {
        Ok(version) => version.unwrap_or(0),
        // No migrations table: an empty database. Anything else is what it is.
        Err(sqlx::Error::Database(e)) if is_missing_table(&*e) => 0,
        Err(e) => return Err(e.into()),
    };
    if applied < newest {
        return Err(StoreError::Unavailable(format!(
            "the database schema is at migration {applied} and this build needs {newest}; run `orgplane migrate`"
        )));
    }
    Ok(())
}

/// The newest migration recorded (`None`: none yet). The raw sqlx error,
/// so that the caller can tell a database without the table.
async fn newest_applied<DB>(pool: &sqlx::Pool<DB>) -> std::result::Result<Option<i64>, sqlx::Error>
where
    DB: sqlx::Database,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
    for<'q> Option<i64>: sqlx::Decode<'q, DB> + sqlx::Type<DB>,
{
    let (version,): (Option<i64>,) =
        sqlx::query_as("SELECT MAX(version) FROM orgplane_migrations").fetch_one(pool).await?;
    Ok(version)
}

/// PostgreSQL's `undefined_table`, SQLite's "no such table".
fn is_missing_table(e: &dyn sqlx::error::DatabaseError) -> bool {
    e.code().as_deref() == Some("42P01") || e.message().starts_with("no such table")
}

async fn record<DB>(tx: &mut sqlx::Transaction<'static, DB>, m: &Migration, now: i64) -> Result<()>
where
    DB: sqlx::Database,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> DB::Arguments: sqlx::IntoArguments<DB>,
{
    sqlx::query("INSERT INTO orgplane_migrations (version, name, applied_at) VALUES ($1, $2, $3)")
        .bind(m.version)
        .bind(m.name)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

fn migration_failed(m: &Migration, e: sqlx::Error) -> StoreError {
    StoreError::Config(format!("migration {:04}_{} failed: {e}", m.version, m.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_backends_have_the_same_migrations() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations");
        let list = |backend: &str| {
            let mut names: Vec<String> = std::fs::read_dir(format!("{dir}/{backend}"))
                .expect("migrations folder")
                .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        };
        assert_eq!(list("sqlite"), list("postgres"));
        assert_eq!(list("sqlite").len(), MIGRATIONS.len(), "every migration file is embedded");
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i as i64 + 1);
            assert!(list("sqlite")[i].starts_with(&format!("{:04}_{}", m.version, m.name)));
        }
    }
}
