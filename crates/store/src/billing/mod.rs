//! Billing state: provider events stored before they are applied, applying a
//! provider's view of a subscription to the org's one subscription, checkouts,
//! the billing admin, reconciliation leases, and the sandbox provider's own
//! state.
//!
//! What holds here, on both backends:
//!
//! - **Once.** A provider event is stored in the transaction that applies
//!   it, unique on provider + the provider's event id: the event row and
//!   everything it changed commit together or not at all. A replay, or a
//!   concurrent copy, finds the stored row (or loses on the unique key) and
//!   changes nothing.
//! - **In any order.** Applying locks the org, then merges the snapshot into
//!   its provider subscription's own known state and chooses the org's
//!   subscription from every one it has had (`crate::apply`, rules in
//!   `orgplane_core::subscription`): older news never overwrites newer, a
//!   subscription that ended never comes back to life, and every arrival
//!   order of the same events ends in the same state.
//! - **One per org.** `subscriptions` is unique on the org and on the
//!   provider's subscription id. A second *live* subscription is recorded
//!   (so that it can't be lost or revived later) but its event is kept as
//!   `failed` with the reason, and retried, until one of them ends.
//! - **Nothing lost.** An event whose org can't be resolved is kept as
//!   `unmatched`, one that could not be applied as `failed`; both wait for
//!   `next_attempt_at` and a reconciliation pass. A pass claims each event
//!   (and each org it re-fetches) with a lease written by a conditional
//!   `UPDATE`/upsert, so replicas sharing a PostgreSQL database never work on
//!   the same one at once.
//! - **Throughput on SQLite.** Concurrent deliveries are applied together in
//!   one transaction (group commit, see `SqliteWrites`); if any of them
//!   fails, each is applied on its own.
//!
//! This module never calls a payment provider and never decides
//! entitlements: the server says whether a snapshot entitles
//! ([`SnapshotInput::entitling`]).
//!
//! Where each part lives: `events` (what an event asks, its row, listing),
//! `ingest` (storing and applying a delivery, group commit on SQLite),
//! `payments` (the log event of a failed payment),
//! `snapshots` (applying a provider's answer), `reconcile` (retries and
//! leases), `link` (subscriptions made elsewhere, discovery's unlinked list), `checkouts`, `admin` (the billing admin) and `sandbox` (the
//! sandbox provider's side). Each `Store` method picks the backend with one
//! `match` and calls a function written once for both backends (see
//! `crate::tx`).

mod admin;
mod change;
mod checkouts;
mod events;
mod ingest;
mod invoices;
mod link;
mod payments;
mod reconcile;
mod sandbox;
mod snapshots;

pub use checkouts::{CheckoutRecord, CheckoutStatus, NewCheckout};
pub use events::{EventEffect, Ingest, NewProviderEvent, ProcessedEvent, ProviderEventRecord, ProviderEventStatus};
pub use invoices::{SANDBOX_CURRENCY, SANDBOX_SEAT_AMOUNT, SandboxInvoice};
pub use link::{DiscoveredOwner, DiscoveredSubscription, UnlinkedSubscription};
pub use reconcile::{RetryCandidate, WalkClaim};
pub use sandbox::{SandboxChange, SandboxPayment, SandboxSubscription};
pub use snapshots::{ApplyOutcome, SnapshotInput};

use orgplane_core::{EventId, Timestamp};

use crate::{Backend, Store, StoreError, millis};

/// When to try an unmatched or failed event again, as stored (the rule is
/// [`orgplane_core::subscription::next_retry_at`]).
fn next_attempt(attempts: i64, received_at: Timestamp, now: Timestamp) -> Option<i64> {
    orgplane_core::subscription::next_retry_at(attempts, received_at, now).map(millis)
}

fn corrupt_provider(text: &str) -> StoreError {
    StoreError::Corrupt(format!("provider `{text}`"))
}

fn sandbox_id(prefix: &str) -> String {
    // The id alphabet and time order of orgplane's typed ids, under a sandbox prefix.
    format!("{prefix}_{}", &EventId::new().to_string()[4..])
}

impl Store {
    /// Whether the store was closed (background jobs stop then).
    pub fn is_closed(&self) -> bool {
        match &self.backend {
            Backend::Sqlite(pool) => pool.is_closed(),
            Backend::Postgres(pool) => pool.is_closed(),
        }
    }
}
