//! Embedded migrations, one folder per backend with the same version numbers
//! (a test checks that they match). Each migration runs in one transaction
//! and is recorded in `orgplane_migrations`, with the SHA-256 of the SQL that
//! ran in `orgplane_migration_checksums`. Migrations are append-only: a
//! build whose copy of an applied migration differs from what ran refuses to
//! migrate (and so to start), naming the migration, instead of leaving two
//! databases that claim the same version with different schemas.

use crate::sql::{Sql, query, query_as};
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
    Migration {
        version: 6,
        name: "seat_holds",
        sqlite: include_str!("../migrations/sqlite/0006_seat_holds.sql"),
        postgres: include_str!("../migrations/postgres/0006_seat_holds.sql"),
    },
    Migration {
        version: 7,
        name: "webhook_endpoints",
        sqlite: include_str!("../migrations/sqlite/0007_webhook_endpoints.sql"),
        postgres: include_str!("../migrations/postgres/0007_webhook_endpoints.sql"),
    },
    Migration {
        version: 8,
        name: "portal_sessions",
        sqlite: include_str!("../migrations/sqlite/0008_portal_sessions.sql"),
        postgres: include_str!("../migrations/postgres/0008_portal_sessions.sql"),
    },
    Migration {
        version: 9,
        name: "keys_and_admin",
        sqlite: include_str!("../migrations/sqlite/0009_keys_and_admin.sql"),
        postgres: include_str!("../migrations/postgres/0009_keys_and_admin.sql"),
    },
    Migration {
        version: 10,
        name: "webhook_retention",
        sqlite: include_str!("../migrations/sqlite/0010_webhook_retention.sql"),
        postgres: include_str!("../migrations/postgres/0010_webhook_retention.sql"),
    },
    Migration {
        version: 11,
        name: "trials",
        sqlite: include_str!("../migrations/sqlite/0011_trials.sql"),
        postgres: include_str!("../migrations/postgres/0011_trials.sql"),
    },
    Migration {
        version: 12,
        name: "sandbox_invoices",
        sqlite: include_str!("../migrations/sqlite/0012_sandbox_invoices.sql"),
        postgres: include_str!("../migrations/postgres/0012_sandbox_invoices.sql"),
    },
    Migration {
        version: 13,
        name: "workos_mirror",
        sqlite: include_str!("../migrations/sqlite/0013_workos_mirror.sql"),
        postgres: include_str!("../migrations/postgres/0013_workos_mirror.sql"),
    },
    Migration {
        version: 14,
        name: "resource_usage",
        sqlite: include_str!("../migrations/sqlite/0014_resource_usage.sql"),
        postgres: include_str!("../migrations/postgres/0014_resource_usage.sql"),
    },
    Migration {
        version: 15,
        name: "payment_failures",
        sqlite: include_str!("../migrations/sqlite/0015_payment_failures.sql"),
        postgres: include_str!("../migrations/postgres/0015_payment_failures.sql"),
    },
    Migration {
        version: 16,
        name: "unlinked_subscriptions",
        sqlite: include_str!("../migrations/sqlite/0016_unlinked_subscriptions.sql"),
        postgres: include_str!("../migrations/postgres/0016_unlinked_subscriptions.sql"),
    },
    Migration {
        version: 17,
        name: "plan_holds",
        sqlite: include_str!("../migrations/sqlite/0017_plan_holds.sql"),
        postgres: include_str!("../migrations/postgres/0017_plan_holds.sql"),
    },
    Migration {
        version: 21,
        name: "billing_email_syncs",
        sqlite: include_str!("../migrations/sqlite/0021_billing_email_syncs.sql"),
        postgres: include_str!("../migrations/postgres/0021_billing_email_syncs.sql"),
    },
];

const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS orgplane_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)";
/// Kept apart from `orgplane_migrations` so that databases migrated before
/// checksums existed need no change to that table: their checksums are
/// recorded the first time this build sees them.
const CREATE_CHECKSUMS: &str =
    "CREATE TABLE IF NOT EXISTS orgplane_migration_checksums (version BIGINT PRIMARY KEY, sha256 TEXT NOT NULL)";

impl Migration {
    fn sql(&self, backend: crate::BackendKind) -> &'static str {
        match backend {
            crate::BackendKind::Sqlite => self.sqlite,
            crate::BackendKind::Postgres => self.postgres,
        }
    }

    fn checksum(&self, backend: crate::BackendKind) -> String {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(self.sql(backend).as_bytes()))
    }
}

pub(crate) async fn run(store: &Store) -> Result<Vec<i64>> {
    let mut applied_now = Vec::new();
    let now = crate::millis(time::OffsetDateTime::now_utc());
    match &store.backend {
        crate::Backend::Sqlite(pool) => {
            sqlx::query(CREATE_TABLE).execute(pool).await?;
            sqlx::query(CREATE_CHECKSUMS).execute(pool).await?;
            for m in MIGRATIONS {
                let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                if applied(&mut tx, m, crate::BackendKind::Sqlite).await? {
                    tx.commit().await?;
                    continue;
                }
                sqlx::raw_sql(m.sqlite).execute(&mut *tx).await.map_err(|e| migration_failed(m, e))?;
                record(&mut tx, m, crate::BackendKind::Sqlite, now).await?;
                applied_now.push(m.version);
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
            sqlx::query(CREATE_CHECKSUMS).execute(&mut *tx).await?;
            for m in MIGRATIONS {
                if applied(&mut tx, m, crate::BackendKind::Postgres).await? {
                    continue;
                }
                sqlx::raw_sql(m.postgres).execute(&mut *tx).await.map_err(|e| migration_failed(m, e))?;
                record(&mut tx, m, crate::BackendKind::Postgres, now).await?;
                applied_now.push(m.version);
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
async fn newest_applied<DB: Sql>(pool: &sqlx::Pool<DB>) -> std::result::Result<Option<i64>, sqlx::Error> {
    let (version,): (Option<i64>,) = query_as("SELECT MAX(version) FROM orgplane_migrations").fetch_one(pool).await?;
    Ok(version)
}

/// PostgreSQL's `undefined_table`, SQLite's "no such table".
fn is_missing_table(e: &dyn sqlx::error::DatabaseError) -> bool {
    e.code().as_deref() == Some("42P01") || e.message().starts_with("no such table")
}

/// Whether `m` was applied; if so, that what ran is this build's copy of
/// it (a checksum missing from an older build's run is recorded now).
async fn applied<DB: Sql>(
    tx: &mut sqlx::Transaction<'static, DB>,
    m: &Migration,
    backend: crate::BackendKind,
) -> Result<bool> {
    let done = query("SELECT version FROM orgplane_migrations WHERE version = $1")
        .bind(m.version)
        .fetch_optional(&mut **tx)
        .await?;
    if done.is_none() {
        return Ok(false);
    }
    let expected = m.checksum(backend);
    let stored = query("SELECT sha256 FROM orgplane_migration_checksums WHERE version = $1")
        .bind(m.version)
        .fetch_optional(&mut **tx)
        .await?;
    match stored {
        None => {
            query("INSERT INTO orgplane_migration_checksums (version, sha256) VALUES ($1, $2)")
                .bind(m.version)
                .bind(expected)
                .execute(&mut **tx)
                .await?;
        }
        Some(row) => {
            let ran: String = row.try_get(0)?;
            if ran != expected {
                return Err(StoreError::Config(format!(
                    "migration {:04}_{} was changed after it was applied to this database (it ran with sha256 {ran}, \
                     this build has {expected}); migrations are append-only: restore the file and put the change in a new migration",
                    m.version, m.name
                )));
            }
        }
    }
    Ok(true)
}

async fn record<DB: Sql>(
    tx: &mut sqlx::Transaction<'static, DB>,
    m: &Migration,
    backend: crate::BackendKind,
    now: i64,
) -> Result<()> {
    query("INSERT INTO orgplane_migrations (version, name, applied_at) VALUES ($1, $2, $3)")
        .bind(m.version)
        .bind(m.name)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    query("INSERT INTO orgplane_migration_checksums (version, sha256) VALUES ($1, $2)")
        .bind(m.version)
        .bind(m.checksum(backend))
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
        // Migration numbers are handed out per feature branch, so a branch
        // may skip the number of one that has not landed yet: versions
        // start at 1 and only ever increase.
        assert_eq!(MIGRATIONS.first().map(|m| m.version), Some(1), "versions start at 1");
        for pair in MIGRATIONS.windows(2) {
            assert!(
                pair[0].version < pair[1].version,
                "versions increase: {} then {}",
                pair[0].version,
                pair[1].version
            );
        }
        for (m, file) in MIGRATIONS.iter().zip(list("sqlite")) {
            assert!(file.starts_with(&format!("{:04}_{}", m.version, m.name)), "{file} is migration {}", m.version);
        }
    }
}
