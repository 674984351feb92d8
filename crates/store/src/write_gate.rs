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
//! - writers get the lock in the order they asked for it, with no
//!   sleeping: a writer is woken the moment the previous one finished;
//! - except that background writes which unblock other work (the webhook
//!   worker's fan-out, claims, leases and attempt records: [`Lane::Worker`])
//!   go before waiting requests. Behind 16 request writers, each of the
//!   worker's short writes used to wait for all 16, and deliveries fell
//!   behind the changes they follow (commit-to-receipt p99 1.6 s). The
//!   worker has few writes waiting at any moment, so requests still get
//!   their turn;
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

use std::collections::{HashMap, VecDeque};
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use sqlx::{Database, Pool, Sqlite, Transaction};
use tokio::sync::oneshot;

/// Which queue a writer waits in. One writer holds the lock at a time
/// whatever its lane; when it ends, the longest-waiting [`Lane::Worker`]
/// writer goes next, and a [`Lane::Request`] writer only when no worker
/// writer waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lane {
    /// Requests (and everything else): first come, first served.
    Request,
    /// Background writes that unblock other work (the webhook worker's
    /// fan-out, endpoint claims, leases and attempt records). They are few
    /// at any moment (one fan-out, one claim, one per endpoint being sent
    /// to) and each is short, so requests behind them wait a bounded time.
    Worker,
}

/// One file's lock: who holds it and who waits, by lane.
#[derive(Default)]
struct Gate {
    state: Mutex<GateState>,
}

#[derive(Default)]
struct GateState {
    held: bool,
    worker: VecDeque<oneshot::Sender<WritePermit>>,
    request: VecDeque<oneshot::Sender<WritePermit>>,
}

impl Gate {
    fn state(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The turn at once if the lock is free, else a place in `lane`'s queue.
    fn take_or_queue(self: &Arc<Self>, lane: Lane) -> Result<WritePermit, oneshot::Receiver<WritePermit>> {
        let mut state = self.state();
        if !state.held {
            state.held = true;
            return Ok(WritePermit { gate: Some(self.clone()) });
        }
        let (sender, receiver) = oneshot::channel();
        match lane {
            Lane::Worker => state.worker.push_back(sender),
            Lane::Request => state.request.push_back(sender),
        }
        Err(receiver)
    }

    /// Hands the lock to the next waiter (worker lane first), or frees it.
    /// A waiter that gave up (timed out) is skipped.
    fn release(self: &Arc<Self>) {
        let mut state = self.state();
        loop {
            let next = match state.worker.pop_front() {
                Some(next) => next,
                None => match state.request.pop_front() {
                    Some(next) => next,
                    None => {
                        state.held = false;
                        return;
                    }
                },
            };
            // If the waiter gives up right after this send, dropping its
            // receiver drops the permit, which releases again (on its
            // thread, once this lock is let go).
            if let Err(mut unsent) = next.send(WritePermit { gate: Some(self.clone()) }) {
                unsent.gate = None; // never held: nothing to release
            } else {
                return;
            }
        }
    }
}

/// A file's gate and how long a writer may wait at it.
type FileGate = (Arc<Gate>, Duration);

/// The gate of each SQLite file opened in this process.
static GATES: LazyLock<Mutex<HashMap<PathBuf, FileGate>>> = LazyLock::new(Default::default);

/// The wait used for a file whose store did not [`register`] one.
const DEFAULT_WAIT: Duration = Duration::from_secs(5);

/// Sets how long writers to `path` may wait for the gate (the store's busy
/// timeout). Called by `Store::connect`.
pub(crate) fn register(path: &Path, wait: Duration) {
    let mut gates = GATES.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    gates.entry(path.to_path_buf()).or_insert_with(|| (Arc::default(), wait)).1 = wait;
}

fn gate(path: &Path) -> FileGate {
    let mut gates = GATES.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let (gate, wait) = gates.entry(path.to_path_buf()).or_insert_with(|| (Arc::default(), DEFAULT_WAIT));
    (gate.clone(), *wait)
}

/// A write transaction: sqlx's `Transaction` (it derefs to it), plus, on
/// SQLite, the gate's permit until it ends.
pub(crate) struct WriteTx<DB: Database> {
    tx: Option<Transaction<'static, DB>>,
    permit: Option<WritePermit>,
}

impl<DB: Database> WriteTx<DB> {
    /// An ungated transaction (PostgreSQL).
    pub(crate) fn ungated(tx: Transaction<'static, DB>) -> Self {
        WriteTx { tx: Some(tx), permit: None }
    }

    /// Commits. The `COMMIT` runs in a task of its own, so that a caller
    /// cancelled meanwhile (a client that hangs up: the server drops its
    /// request) can't interrupt it. Interrupted, sqlx would still count the
    /// transaction as open and queue a `ROLLBACK` after the `COMMIT` had
    /// gone through: PostgreSQL's "there is no transaction in progress".
    pub(crate) async fn commit(mut self) -> sqlx::Result<()> {
        let tx = self.tx.take().expect("a WriteTx holds its transaction until it ends");
        let permit = self.permit.take();
        let commit = async move {
            let done = tx.commit().await;
            // On failure sqlx has already rolled back or lost the
            // connection: either way the lock is free when the permit goes.
            drop(permit);
            done
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => runtime.spawn(commit).await.unwrap_or(Err(sqlx::Error::WorkerCrashed)),
            Err(_) => commit.await,
        }
    }

    pub(crate) async fn rollback(mut self) -> sqlx::Result<()> {
        let tx = self.tx.take().expect("a WriteTx holds its transaction until it ends");
        let done = tx.rollback().await;
        drop(self.permit.take());
        done
    }
}

/// This SQLite file's turn at the gate, for a write statement run outside
/// a transaction (autocommit): hold it until the statement has run. The
/// next writer goes when it is dropped.
pub(crate) struct WritePermit {
    /// `None` only for a permit that was never handed over.
    gate: Option<Arc<Gate>>,
}

impl Drop for WritePermit {
    fn drop(&mut self) {
        if let Some(gate) = self.gate.take() {
            gate.release();
        }
    }
}

/// Waits for this file's turn at the gate in `lane` (see the module docs).
pub(crate) async fn permit(pool: &Pool<Sqlite>, lane: Lane) -> sqlx::Result<WritePermit> {
    let (gate, wait) = gate(pool.connect_options().get_filename());
    wait_turn(&gate, lane, wait).await
}

async fn wait_turn(gate: &Arc<Gate>, lane: Lane, wait: Duration) -> sqlx::Result<WritePermit> {
    let receiver = match gate.take_or_queue(lane) {
        Ok(permit) => return Ok(permit),
        Err(receiver) => receiver,
    };
    match tokio::time::timeout(wait, receiver).await {
        Ok(Ok(permit)) => Ok(permit),
        // Senders live in the gate, which lives as long as the process.
        Ok(Err(_dropped)) => Err(sqlx::Error::PoolClosed),
        Err(_elapsed) => Err(sqlx::Error::PoolTimedOut),
    }
}

/// `BEGIN IMMEDIATE` on `pool`, after this file's turn at the gate in `lane`.
pub(crate) async fn begin_sqlite(pool: &Pool<Sqlite>, lane: Lane) -> sqlx::Result<WriteTx<Sqlite>> {
    let permit = permit(pool, lane).await?;
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
                let mut tx = begin_sqlite(&pool, Lane::Request).await?;
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
        let tx = begin_sqlite(&pool, Lane::Request).await.expect("the gate opens again");
        tx.rollback().await.expect("rollback");
        let (rows,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM t").fetch_one(&pool).await.expect("count");
        assert_eq!((committed, rows), (48, 48));
        pool.close().await;
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }

    /// Five writers queue behind a holder; when it ends, the worker-lane
    /// writers go first, each lane in the order it asked.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn worker_writes_go_before_waiting_requests_and_each_lane_keeps_its_order() {
        let gate = Arc::new(Gate::default());
        let holder = wait_turn(&gate, Lane::Request, Duration::from_secs(5)).await.expect("the gate is free");
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (name, lane) in [
            ("request 1", Lane::Request),
            ("request 2", Lane::Request),
            ("worker 1", Lane::Worker),
            ("request 3", Lane::Request),
            ("worker 2", Lane::Worker),
        ] {
            let Err(turn) = gate.take_or_queue(lane) else { panic!("the lock is held: {name} must queue") };
            let order = order.clone();
            tasks.push(tokio::spawn(async move {
                let permit = turn.await.expect("its turn comes");
                order.lock().expect("order").push(name);
                // Hold the turn a moment, as a real write does, so the order
                // recorded is the gate's and not the scheduler's.
                tokio::time::sleep(Duration::from_millis(2)).await;
                drop(permit);
            }));
        }
        drop(holder);
        for task in tasks {
            task.await.expect("task");
        }
        let order = order.lock().expect("order").clone();
        assert_eq!(order, ["worker 1", "worker 2", "request 1", "request 2", "request 3"]);
    }

    /// A writer that gave up waiting is skipped: the next one gets the
    /// turn, and once everyone is done the gate is free again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_writer_that_timed_out_is_skipped_and_the_gate_frees() {
        let gate = Arc::new(Gate::default());
        let holder = wait_turn(&gate, Lane::Request, Duration::from_secs(5)).await.expect("the gate is free");
        let gave_up = wait_turn(&gate, Lane::Worker, Duration::from_millis(20)).await;
        assert!(matches!(gave_up, Err(sqlx::Error::PoolTimedOut)), "a wait past the timeout fails");
        let Err(next) = gate.take_or_queue(Lane::Request) else { panic!("the lock is still held") };
        drop(holder);
        let permit = tokio::time::timeout(Duration::from_secs(5), next).await.expect("woken").expect("its turn");
        drop(permit);
        let again = gate.take_or_queue(Lane::Request);
        assert!(again.is_ok(), "nobody holds the gate any more");
    }
}
