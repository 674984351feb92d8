//! Which orgs changed: a generation counter per org, bumped after every
//! commit that touches the org, so that caches of derived answers (the
//! server's entitlements cache) can tell a stale entry without a query.
//! Counters live in fixed slots (see [`Slots`]): memory stays flat at any
//! number of orgs.
//!
//! On PostgreSQL each bump is also announced with `NOTIFY orgplane_org_changed`
//! and [`Store::listen_for_changes`] applies other replicas' announcements,
//! so a replica learns of another's commit within milliseconds. Caches still
//! bound an entry's age, for the case where a notification is lost (a
//! dropped listener connection).

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

use orgplane_core::{OrgId, UserId};

use crate::{Backend, Store};

pub(crate) const CHANNEL: &str = "orgplane_org_changed";

/// Generation slots per kind (orgs, users): a fixed 512 KiB each, whatever
/// the number of orgs and users.
const SLOTS: usize = 1 << 16;

/// Change counters for ids hashed into a fixed number of slots. Two ids
/// that share a slot see each other's changes: a change makes the other's
/// cached answers stale too (a spurious miss, never a stale hit). Reading
/// is one atomic load, with no lock, and the memory does not grow with the
/// number of ids changed.
pub(crate) struct Slots(Box<[AtomicU64]>);

impl Default for Slots {
    fn default() -> Self {
        Slots((0..SLOTS).map(|_| AtomicU64::new(0)).collect())
    }
}

impl Slots {
    fn slot(&self, id: impl Hash) -> &AtomicU64 {
        // Fixed keys: the same id maps to the same slot for the process's life.
        let mut hasher = std::hash::DefaultHasher::new();
        id.hash(&mut hasher);
        &self.0[(hasher.finish() as usize) % SLOTS]
    }

    fn bump(&self, id: impl Hash) {
        self.slot(id).fetch_add(1, Ordering::AcqRel);
    }

    fn get(&self, id: impl Hash) -> u64 {
        self.slot(id).load(Ordering::Acquire)
    }
}

#[derive(Default)]
pub(crate) struct OrgChanges {
    generations: Slots,
    /// Users whose own row or set of memberships changed.
    users: Slots,
    /// Bumped when a key (server or org) is revoked here or on another
    /// replica: every cached key is checked again.
    keys: AtomicU64,
    /// Bumped when a notification may have been missed: every entry is stale.
    epoch: AtomicU64,
    /// Woken by every change (here or announced by another replica): the
    /// outgoing webhooks' worker waits on it instead of polling alone.
    committed: tokio::sync::Notify,
}

/// The payload that announces a key revocation.
pub(crate) const KEYS_PAYLOAD: &str = "keys";

impl OrgChanges {
    fn bump(&self, org: OrgId) {
        self.generations.bump(org);
        self.committed.notify_one();
    }

    fn bump_user(&self, user: UserId) {
        self.users.bump(user);
        self.committed.notify_one();
    }

    fn user_generation(&self, user: UserId) -> u64 {
        let local = self.users.get(user);
        local.wrapping_add(self.epoch.load(Ordering::Acquire) << 32)
    }

    fn keys_generation(&self) -> u64 {
        self.keys.load(Ordering::Acquire).wrapping_add(self.epoch.load(Ordering::Acquire) << 32)
    }

    fn generation(&self, org: OrgId) -> u64 {
        let local = self.generations.get(org);
        local.wrapping_add(self.epoch.load(Ordering::Acquire) << 32)
    }
}

impl Store {
    /// The org's change generation in this process: equal generations mean
    /// no change was committed (here, or announced by another replica).
    pub fn org_generation(&self, org: OrgId) -> u64 {
        self.changes.generation(org)
    }

    /// The user's change generation: bumped when the user's row or their set
    /// of memberships changes.
    pub fn user_generation(&self, user: UserId) -> u64 {
        self.changes.user_generation(user)
    }

    /// Resolves after the next change committed by this process or
    /// announced by another replica (at once if one came since the last
    /// wait). One waiter: the outgoing webhooks' worker.
    pub async fn changed(&self) {
        self.changes.committed.notified().await;
    }

    /// Wakes [`Store::changed`]: a commit that touched no org or user
    /// (outgoing webhooks' own bookkeeping).
    pub(crate) fn wake(&self) {
        self.changes.committed.notify_one();
    }

    /// The key generation: equal generations mean no key was revoked since
    /// (here, or announced by another replica). Key caches compare it.
    pub fn keys_generation(&self) -> u64 {
        self.changes.keys_generation()
    }

    /// Records that a key was revoked; call after the commit.
    pub(crate) async fn touched_keys(&self) {
        self.changes.keys.fetch_add(1, Ordering::AcqRel);
        if let Backend::Postgres(pool) = &self.backend
            && let Err(e) = sqlx::query("SELECT pg_notify($1, $2)").bind(CHANNEL).bind(KEYS_PAYLOAD).execute(pool).await
        {
            tracing::warn!(error = %e, "could not announce a key revocation to other replicas");
        }
    }

    /// Records that `user` (their row or memberships) changed; call after the commit.
    pub(crate) async fn touched_user(&self, user: UserId) {
        self.changes.bump_user(user);
        if let Backend::Postgres(pool) = &self.backend
            && let Err(e) =
                sqlx::query("SELECT pg_notify($1, $2)").bind(CHANNEL).bind(user.to_string()).execute(pool).await
        {
            tracing::warn!(error = %e, %user, "could not announce a user change to other replicas");
        }
    }

    /// Records that `org` changed; call after the commit.
    pub(crate) async fn touched(&self, org: OrgId) {
        self.changes.bump(org);
        if let Backend::Postgres(pool) = &self.backend
            && let Err(e) =
                sqlx::query("SELECT pg_notify($1, $2)").bind(CHANNEL).bind(org.to_string()).execute(pool).await
        {
            tracing::warn!(error = %e, %org, "could not announce an org change to other replicas");
        }
    }

    /// On PostgreSQL, applies other replicas' change announcements until the
    /// store closes. A no-op on SQLite (one process owns the file).
    pub async fn listen_for_changes(&self) {
        let Backend::Postgres(pool) = &self.backend else { return };
        loop {
            let mut listener = match sqlx::postgres::PgListener::connect_with(pool).await {
                Ok(l) => l,
                Err(e) => {
                    if pool.is_closed() {
                        return;
                    }
                    tracing::warn!(error = %e, "change listener: connecting failed; retrying");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await; // back off before reconnecting
                    continue;
                }
            };
            if let Err(e) = listener.listen(CHANNEL).await {
                tracing::warn!(error = %e, "change listener: LISTEN failed; retrying");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await; // back off before reconnecting
                continue;
            }
            // Anything may have changed while we were not listening.
            self.changes.epoch.fetch_add(1, Ordering::AcqRel);
            loop {
                match listener.recv().await {
                    Ok(n) => {
                        if n.payload() == KEYS_PAYLOAD {
                            self.changes.keys.fetch_add(1, Ordering::AcqRel);
                        } else if let Ok(org) = n.payload().parse::<OrgId>() {
                            self.changes.bump(org);
                        } else if let Ok(user) = n.payload().parse::<UserId>() {
                            self.changes.bump_user(user);
                        }
                    }
                    Err(e) => {
                        if pool.is_closed() {
                            return;
                        }
                        tracing::warn!(error = %e, "change listener: connection lost; reconnecting");
                        self.changes.epoch.fetch_add(1, Ordering::AcqRel);
                        break;
                    }
                }
            }
        }
    }
}
