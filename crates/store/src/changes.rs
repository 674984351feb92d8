//! Which orgs changed: a generation counter per org, bumped after every
//! commit that touches the org, so that caches of derived answers (the
//! server's entitlements cache) can tell a stale entry without a query.
//!
//! On PostgreSQL each bump is also announced with `NOTIFY orgplane_org_changed`
//! and [`Store::listen_for_changes`] applies other replicas' announcements,
//! so a replica learns of another's commit within milliseconds. Caches still
//! bound an entry's age, for the case where a notification is lost (a
//! dropped listener connection).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use orgplane_core::{OrgId, UserId};

use crate::{Backend, Store};

pub(crate) const CHANNEL: &str = "orgplane_org_changed";

#[derive(Default)]
pub(crate) struct OrgChanges {
    generations: Mutex<HashMap<OrgId, u64>>,
    /// Users whose own row or set of memberships changed.
    users: Mutex<HashMap<UserId, u64>>,
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
        self.committed.notify_one();
        let mut map = self.generations.lock().unwrap_or_else(|e| e.into_inner());
        *map.entry(org).or_insert(0) += 1;
    }

    fn bump_user(&self, user: UserId) {
        self.committed.notify_one();
        let mut map = self.users.lock().unwrap_or_else(|e| e.into_inner());
        *map.entry(user).or_insert(0) += 1;
    }

    fn user_generation(&self, user: UserId) -> u64 {
        let local = self.users.lock().unwrap_or_else(|e| e.into_inner()).get(&user).copied().unwrap_or(0);
        local.wrapping_add(self.epoch.load(Ordering::Acquire) << 32)
    }

    fn keys_generation(&self) -> u64 {
        self.keys.load(Ordering::Acquire).wrapping_add(self.epoch.load(Ordering::Acquire) << 32)
    }

    fn generation(&self, org: OrgId) -> u64 {
        let local = self.generations.lock().unwrap_or_else(|e| e.into_inner()).get(&org).copied().unwrap_or(0);
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
