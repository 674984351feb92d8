//! orgplane's storage: the only code that speaks SQL.
//!
//! One [`Store`] serves both backends. Every query is written once, with
//! `$1..$n` placeholders that SQLite and PostgreSQL both accept, and runs on
//! a concrete `SqlitePool` or `PgPool` (sqlx's `Any` can't carry our types):
//! each `Store` method matches on the backend once and calls one function
//! generic over the database, `DB: Sql` (see `tx` for the pattern, and
//! `sql` for what `Sql` states once for every query).
//! Multi-row invariants (one personal org per user, last owner, single-use
//! invitations, quotas) are held here by constraints and single
//! transactions, never by a read in a handler followed by a write.
//!
//! Writes that guard an org-wide invariant start by bumping the org's
//! `version`: on PostgreSQL that locks the org's row until commit, on SQLite
//! every write transaction is `BEGIN IMMEDIATE` and so already serialized,
//! and writers wait for that lock in turn at an in-process gate instead of
//! in SQLite's busy handler (see `write_gate`). Either way, two writers to
//! the same org take turns.

use std::str::FromStr;
use std::time::Duration;

use orgplane_core::{DomainError, Timestamp};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};

mod admin;
mod api_keys;
mod apply;
pub mod backup;
mod billing;
mod billing_email;
mod changes;
mod cleanup;
mod connect;
pub mod constraints;
mod copy;
mod entitlements;
mod events;
mod idempotency;
mod invitations;
mod members;
mod migrate;
mod org_keys;
mod orgs;
mod portal_sessions;
mod resources;
mod seats;
mod seed;
mod sql;
mod subscriptions;
mod tx;
mod users;
mod webhook_retention;
mod webhooks;
mod workos_mirror;
mod write_gate;

pub use admin::{AdminUser, LAST_SEEN_EVERY_MS, UserDeletion};
pub use api_keys::{ApiKeyRecord, LAST_USED_EVERY_MS, NewApiKey, Revocation};
pub use billing::{
    ApplyOutcome, CheckoutRecord, CheckoutStatus, EventEffect, Ingest, NewCheckout, NewProviderEvent, ProcessedEvent,
    ProviderEventRecord, ProviderEventStatus, RetryCandidate, SandboxChange, SandboxPayment, SandboxSubscription,
    SnapshotInput, WalkClaim,
};
pub use billing::{DiscoveredOwner, DiscoveredSubscription, UnlinkedSubscription};
pub use billing::{SANDBOX_CURRENCY, SANDBOX_SEAT_AMOUNT, SandboxInvoice};
pub use billing_email::{BillingEmailFailure, BillingEmailOutcome, BillingEmailSync};
pub use cleanup::AbandonedOrg;
pub use copy::{CopyReport, MIGRATION_SEEDED, SequenceSet, TableCopy};
pub use entitlements::{EntitlementInputs, Guard, Usage};
pub use events::{EventCursor, EventRecord};
pub use idempotency::IdempotencyBegin;
pub use invitations::{InvitationCreated, NewInvitation};
pub use members::MemberRecord;
pub use org_keys::{NewOrgKey, OrgKeyRecord};
pub use orgs::{OrgPatch, OrgWithRole};
pub use portal_sessions::{LinkOpening, NewPortalSession, PortalSessionRecord, SessionLookup};
pub use resources::{NewResource, ResourceRecord};
pub use seed::{SEED_ISSUER, SEED_PRICE, SeedBatch};
pub use subscriptions::StoredSubscription;
pub use users::{MeRecord, NewIdentity};
pub use webhooks::{
    AttemptOutcome, AttemptRecord, AttemptResult, DeliveryRecord, DeliveryStatus, DueBody, DueDelivery, FanOut,
    LeasedEndpoint, NewWebhookEndpoint, ReplayFrom, WebhookEndpointPatch, WebhookEndpointRecord,
};
pub use workos_mirror::{MirrorFailure, MirrorFanOut, MirrorOrg, MirrorTarget};

/// Which database a [`Store`] runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    Sqlite,
    Postgres,
}

#[derive(Clone)]
enum Backend {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// The store: cheap to clone, shared by every request.
#[derive(Clone)]
pub struct Store {
    backend: Backend,
    changes: std::sync::Arc<changes::OrgChanges>,
}

/// What can go wrong in the store: a rule refused the change, a constraint
/// of the schema did, the database can't be reached right now (try again
/// later), or the database failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// A unique or foreign-key violation the code did not turn into a domain
    /// error itself (see [`constraints`]): the caller's conflict, never a 500.
    /// Kept apart from `Domain` so that paths which store a failure for a
    /// retry (provider events) still do.
    #[error(transparent)]
    Constraint(#[from] constraints::ConstraintViolation),
    /// No connection within the acquire timeout, a connection lost or
    /// refused, a statement stopped by the statement timeout, a server
    /// shutting down or full: nothing was committed, and the same call may
    /// succeed in a moment.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    #[error("database error: {0}")]
    Database(sqlx::Error),
    #[error("stored data is not what orgplane wrote: {0}")]
    Corrupt(String),
    #[error("{0}")]
    Config(String),
}

/// Every `?` on a query comes through here: constraint violations become
/// their contract error, and a database that can't serve us right now
/// becomes `Unavailable`, in one place.
impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &e
            && let Some(violation) = constraints::classify(db.kind(), db.constraint(), db.message())
        {
            return StoreError::Constraint(violation);
        }
        if is_unavailable(&e) { StoreError::Unavailable(e.to_string()) } else { StoreError::Database(e) }
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// Whether `e` says the database can't serve us right now, rather than
/// that a query is wrong: the errors worth a retry by the caller.
fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(db) => match (db.try_downcast_ref::<sqlx::sqlite::SqliteError>(), db.code()) {
            // The SQLITE_BUSY family: the busy timeout ran out waiting for the writer.
            (Some(_), Some(code)) => code.parse::<i32>().is_ok_and(|code| code & 0xff == 5),
            (None, Some(sqlstate)) => unavailable_sqlstate(&sqlstate),
            (_, None) => false,
        },
        _ => false,
    }
}

/// PostgreSQL's SQLSTATEs of a lost or refused connection (class 08), a
/// server shutting down or starting (57P01–57P03), a statement stopped by
/// `statement_timeout` (57014) and too many connections (53300).
fn unavailable_sqlstate(code: &str) -> bool {
    code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03" | "57014" | "53300")
}

/// Who made a change, as written into the event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    User(orgplane_core::UserId),
    ApiKey(orgplane_core::ApiKeyId),
    Provider(String),
    System,
}

impl Actor {
    pub fn as_text(&self) -> String {
        match self {
            Actor::User(id) => id.to_string(),
            Actor::ApiKey(id) => id.to_string(),
            Actor::Provider(event) => format!("provider:{event}"),
            Actor::System => "system".to_owned(),
        }
    }
}

/// A page request: `?limit=` and `?starting_after=`.
#[derive(Debug, Clone, Default)]
pub struct PageRequest {
    pub limit: u32,
    pub starting_after: Option<String>,
}

impl PageRequest {
    /// The one answer of every list to a `starting_after` that names no
    /// item of that list (unknown, of another type, or no longer there):
    /// answering a page anyway would send a client following cursors back
    /// to the start, or to a silent end.
    pub fn unknown_cursor(cursor: &str) -> StoreError {
        let shown: String = cursor.chars().take(80).collect();
        DomainError::invalid(
            "starting_after",
            format!(
                "`{shown}` is not in this list; pass the id of the last item of the previous page, or leave starting_after out to start from the first page"
            ),
        )
        .into()
    }
}

/// A page of results.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub data: Vec<T>,
    pub has_more: bool,
}

impl<T> Page<T> {
    /// Builds a page from `limit + 1` fetched rows.
    fn from_rows(mut rows: Vec<T>, limit: u32) -> Self {
        let has_more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        Page { data: rows, has_more }
    }
}

pub(crate) fn millis(at: Timestamp) -> i64 {
    (at.unix_timestamp_nanos() / 1_000_000) as i64
}

pub(crate) fn from_millis(ms: i64) -> Result<Timestamp> {
    Timestamp::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .map_err(|e| StoreError::Corrupt(format!("timestamp {ms}: {e}")))
}

pub(crate) fn parse_id<T: FromStr<Err = orgplane_core::IdParseError>>(text: &str) -> Result<T> {
    text.parse().map_err(|e: orgplane_core::IdParseError| StoreError::Corrupt(e.to_string()))
}

/// `pool.begin_write()`: a transaction that will write (on SQLite,
/// `BEGIN IMMEDIATE` after the write gate: see [`sql::Sql::begin_write_in`]'s
/// implementations and `write_gate`).
/// `pool.begin_worker_write()`: the same, in the gate's lane for the
/// webhook worker's writes ([`write_gate::Lane::Worker`]).
trait BeginWrite {
    type Db: sqlx::Database;
    async fn begin_write(&self) -> sqlx::Result<write_gate::WriteTx<Self::Db>>;
    async fn begin_worker_write(&self) -> sqlx::Result<write_gate::WriteTx<Self::Db>>;
}

impl<DB: sql::Sql> BeginWrite for sqlx::Pool<DB> {
    type Db = DB;
    async fn begin_write(&self) -> sqlx::Result<write_gate::WriteTx<DB>> {
        DB::begin_write_in(self, write_gate::Lane::Request).await
    }
    async fn begin_worker_write(&self) -> sqlx::Result<write_gate::WriteTx<DB>> {
        DB::begin_write_in(self, write_gate::Lane::Worker).await
    }
}

/// How to open the store.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub url: String,
    pub max_connections: u32,
    /// Longest wait for a pooled connection (opening one included); then
    /// the call fails with [`StoreError::Unavailable`].
    pub acquire_timeout: Duration,
    /// Longest run of one statement: PostgreSQL's `statement_timeout`;
    /// on SQLite, the longest wait for the writer's lock (busy timeout).
    pub statement_timeout: Duration,
}

impl ConnectOptions {
    /// `url` with the default pool size and timeouts (those of `[database]`).
    pub fn new(url: impl Into<String>) -> Self {
        ConnectOptions {
            url: url.into(),
            max_connections: 16,
            acquire_timeout: Duration::from_secs(2),
            statement_timeout: Duration::from_secs(5),
        }
    }
}

impl Store {
    /// Opens `sqlite://PATH` (created if missing; WAL, foreign keys on, busy
    /// timeout) or `postgres://…`.
    pub async fn connect(options: &ConnectOptions) -> Result<Store> {
        let url = options.url.as_str();
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let statement_timeout = options.statement_timeout.as_millis().to_string();
            // `client_min_messages`: the NOTICEs of `CREATE … IF NOT EXISTS`
            // at every start are not worth a log line.
            let connect = PgConnectOptions::from_str(url)
                .map_err(|e| StoreError::Config(format!("database_url: not a PostgreSQL URL ({e})")))?
                .options([("statement_timeout", statement_timeout.as_str()), ("client_min_messages", "warning")]);
            connect::probe_postgres(&connect, options.acquire_timeout.max(Duration::from_secs(5))).await?;
            let pool = PgPoolOptions::new()
                .max_connections(options.max_connections.max(2))
                .acquire_timeout(options.acquire_timeout)
                .connect_with(connect)
                .await?;
            Ok(Store { backend: Backend::Postgres(pool), changes: Default::default() })
        } else if url.starts_with("sqlite:") {
            let connect = SqliteConnectOptions::from_str(url)
                .map_err(|e| StoreError::Config(format!("database_url: not a SQLite URL ({e})")))?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .foreign_keys(true)
                .busy_timeout(options.statement_timeout);
            let path = connect.get_filename().to_path_buf();
            write_gate::register(&path, options.statement_timeout);
            let pool = SqlitePoolOptions::new()
                .max_connections(options.max_connections.clamp(1, 16))
                .acquire_timeout(options.acquire_timeout)
                .connect_with(connect)
                .await
                .map_err(|e| connect::sqlite_error(&path, e))?;
            Ok(Store { backend: Backend::Sqlite(pool), changes: Default::default() })
        } else {
            Err(StoreError::Config(format!(
                "database_url: `{url}` is neither sqlite:// nor postgres://; use e.g. sqlite://orgplane-data/orgplane.db or postgres://user@host/db"
            )))
        }
    }

    pub fn kind(&self) -> BackendKind {
        match self.backend {
            Backend::Sqlite(_) => BackendKind::Sqlite,
            Backend::Postgres(_) => BackendKind::Postgres,
        }
    }

    /// Applies the embedded migrations that have not run yet.
    pub async fn migrate(&self) -> Result<Vec<i64>> {
        migrate::run(self).await
    }

    /// Whether the database answers with the schema this build needs (for
    /// `/readyz`): every embedded migration applied. A database re-created
    /// empty, or not migrated yet, answers but can serve nothing.
    pub async fn ready(&self) -> Result<()> {
        migrate::check_applied(self).await
    }

    /// Closes every connection (graceful shutdown, tests).
    pub async fn close(&self) {
        match &self.backend {
            Backend::Sqlite(pool) => pool.close().await,
            Backend::Postgres(pool) => pool.close().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_refused_busy_and_timed_out_connections_are_unavailable_and_query_errors_are_not() {
        for code in ["08006", "08001", "57P01", "57P02", "57P03", "57014", "53300"] {
            assert!(unavailable_sqlstate(code), "{code}");
        }
        for code in ["23505", "42P01", "40001", "57000", "22P02"] {
            assert!(!unavailable_sqlstate(code), "{code}");
        }
        assert!(is_unavailable(&sqlx::Error::PoolTimedOut));
        assert!(is_unavailable(&sqlx::Error::Io(std::io::ErrorKind::ConnectionReset.into())));
        assert!(!is_unavailable(&sqlx::Error::RowNotFound));
        assert!(matches!(StoreError::from(sqlx::Error::PoolClosed), StoreError::Unavailable(_)));
        assert!(matches!(StoreError::from(sqlx::Error::RowNotFound), StoreError::Database(_)));
    }
}
