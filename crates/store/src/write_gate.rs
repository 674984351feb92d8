//! SQLite's one writer, taken in turn: a FIFO gate in front of
//! `BEGIN IMMEDIATE`.
//!
//! SQLite allows one write transaction per database file. Without a gate,
//! every writer (requests and the webhook worker alike) issues
//! `BEGIN IMMEDIATE` on its own pooled connection and, when the lock is
//! taken, waits in SQLite's busy handler: it sleeps (1, 2, 5, 10 … 100 ms)
//! and retries, and a writer that wakes up late loses the lock to a
//! newcomer that happened to ask at the right instant, again and again.
//! Under 32 concurrent writers that is where the p99 of hundreds of
//! milliseconds came from, not from the work done inside the lock.
//!
//! Guarantees:
//! - one [`WriteTx`] at a time per SQLite database file in this process: the
//!   permit is taken *before* a pooled connection (so waiting writers hold no
//!   connection) and held from `BEGIN IMMEDIATE` until `COMMIT`/`ROLLBACK`
//!   has run;
//! - writers get the lock in the order they asked for it (tokio's semaphore
//!   is fair), with no sleeping: a writer is woken the moment the previous
//!   one finished;
//! - a wait longer than the busy timeout (`[database] statement_timeout`)
//!   fails as before, with `PoolTimedOut` (the store's `Unavailable`);
//! - a `WriteTx` dropped without commit (an error returned with `?`) is
//!   rolled back *before* its permit is released, so the next writer never
//!   finds the lock still held;
//! - PostgreSQL is not gated: its row locks already order writers to one
//!   org, and writers to different orgs run in parallel.
//!
//! The few single write statements run outside a transaction (a key's
//! `last_used_at`, an idempotency key, a webhook lease released, …) take
//! the same turn with [`permit`] (`Sql::write_permit`). Other processes
//! writing the same file (the CLI, a second server) are not gated: they
//! meet SQLite's busy handler as before.

use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use sqlx::{Database, Pool, Sqlite, Transaction};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// One file's gate and how long a writer may wait at it.
type Gate = (Arc<Semaphore>, Duration);

/// The gate of each SQLite file opened in this process.
static GATES: LazyLock<Mutex<HashMap<PathBuf, Gate>>> = LazyLock::new(Default::default);

/// The wait used for a file whose store did not [`register`] one.
const DEFAULT_WAIT: Duration = Duration::from_secs(5);

/// Sets how long writers to `path` may wait for the gate (the store's busy
/// timeout). Called by `Store::connect`.
pub(crate) fn register(path: &Path, wait: Duration) {
    let mut gates = GATES.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    gates.entry(path.to_path_buf()).or_insert_with(|| (Arc::new(Semaphore::new(1)), wait)).1 = wait;
}

fn gate(path: &Path) -> Gate {
    let mut gates = GATES.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let (gate, wait) = gates.entry(path.to_path_buf()).or_insert_with(|| (Arc::new(Semaphore::new(1)), DEFAULT_WAIT));
    (gate.clone(), *wait)
}

/// A write transaction: sqlx's `Transaction` (it derefs to it), plus, on
/// SQLite, the gate's permit until it ends.
pub(crate) struct WriteTx<DB: Database> {
    tx: Option<Transaction<'static, DB>>,
    permit: Option<OwnedSemaphorePermit>,
}

impl<DB: Database> WriteTx<DB> {
    /// An ungated transaction (PostgreSQL).
    pub(crate) fn ungated(tx: Transaction<'static, DB>) -> Self {
        WriteTx { tx: Some(tx), permit: None }
    }

    pub(crate) async fn commit(mut self) -> sqlx::Result<()> {
        let tx = self.tx.take().expect("a WriteTx holds its transaction until it ends");
        let done = tx.commit().await;
        // On failure sqlx has already rolled back or lost the connection:
        // either way the lock is free when the permit goes.
        drop(self.permit.take());
        done
    }

    pub(crate) async fn rollback(mut self) -> sqlx::Result<()> {
        let tx = self.tx.take().expect("a WriteTx holds its transaction until it ends");
        let done = tx.rollback().await;
        drop(self.permit.take());
        done
    }
}

/// This SQLite file's turn at the gate, for a write statement run outside
/// a transaction (autocommit): hold it until the statement has run.
pub(crate) type WritePermit = OwnedSemaphorePermit;

/// Waits for this file's turn at the gate (see the module docs).
pub(crate) async fn permit(pool: &Pool<Sqlite>) -> sqlx::Result<WritePermit> {
    let (gate, wait) = gate(pool.connect_options().get_filename());
    match tokio::time::timeout(wait, gate.acquire_owned()).await {
        Ok(Ok(permit)) => Ok(permit),
        Ok(Err(_closed)) => Err(sqlx::Error::PoolClosed),
        Err(_elapsed) => Err(sqlx::Error::PoolTimedOut),
    }
}

/// `BEGIN IMMEDIATE` on `pool`, after this file's turn at the gate.
pub(crate) async fn begin_sqlite(pool: &Pool<Sqlite>) -> sqlx::Result<WriteTx<Sqlite>> {
    let permit = permit(pool).await?;
    let tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    Ok(WriteTx { tx: Some(tx), permit: Some(permit) })
}

impl<DB: Database> Deref for WriteTx<DB> {
    type Target = Transaction<'static, DB>;
    fn deref(&self) -> &Self::Target {
        self.tx.as_ref().expect("a WriteTx holds its transaction until it ends")
    }
}

impl<DB: Database> DerefMut for WriteTx<DB> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        self.tx.as_mut().expect("a WriteTx holds its transaction until it ends")
    }
}

impl<DB: Database> Drop for WriteTx<DB> {
    fn drop(&mut self) {
        let (Some(tx), Some(permit)) = (self.tx.take(), self.permit.take()) else { return };
        // sqlx only queues the ROLLBACK of a dropped transaction; run it,
        // then let the next writer in.
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    let _ = tx.rollback().await;
                    drop(permit);
                });
            }
            Err(_) => drop((tx, permit)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};

    /// With SQLite's busy timeout at zero, any writer that met the lock
    /// held would fail at once with SQLITE_BUSY: 64 concurrent writers all
    /// succeeding shows they reached `BEGIN IMMEDIATE` one at a time, and
    /// the count shows each dropped transaction rolled back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writers_never_meet_sqlite_busy_and_dropped_ones_roll_back() {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_nanos();
        let path = std::env::temp_dir().join(format!("orgplane-gate-{}-{nanos}.db", std::process::id()));
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::ZERO);
        let pool = SqlitePoolOptions::new().max_connections(16).connect_with(options).await.expect("opens");
        register(&path, Duration::from_secs(60));
        sqlx::query("CREATE TABLE t (n INTEGER NOT NULL)").execute(&pool).await.expect("table");

        let mut tasks = Vec::new();
        for i in 0..64_i64 {
            let pool = pool.clone();
            tasks.push(tokio::spawn(async move {
                let mut tx = begin_sqlite(&pool).await?;
                sqlx::query("INSERT INTO t (n) VALUES ($1)").bind(i).execute(&mut **tx).await?;
                let (_,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM t").fetch_one(&mut **tx).await?;
                if i % 4 == 0 {
                    drop(tx); // as an error returned with `?` does
                    Ok::<_, sqlx::Error>(false)
                } else {
                    tx.commit().await?;
                    Ok(true)
                }
            }));
        }
        let mut committed = 0;
        for task in tasks {
            if task.await.expect("task").expect("no writer meets SQLITE_BUSY") {
                committed += 1;
            }
        }
        // The last dropped transaction's rollback may still be running:
        // taking the gate waits for it.
        let tx = begin_sqlite(&pool).await.expect("the gate opens again");
        tx.rollback().await.expect("rollback");
        let (rows,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM t").fetch_one(&pool).await.expect("count");
        assert_eq!((committed, rows), (48, 48));
        pool.close().await;
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }
}
