//! Identities of tokens already verified, so that the next request with the
//! same token costs a SHA-256 and a map lookup instead of a signature check.
//!
//! Keyed by SHA-256 of the whole token: any change to a token, even to its
//! signature, misses and goes through full verification. An entry lives until
//! the token's `exp` (plus the leeway verification allows) and never longer.
//! The cache is split into shards, each behind its own mutex, so that
//! concurrent requests rarely wait on each other. When a shard is full it
//! drops expired entries, then, if still full, an arbitrary eighth of itself:
//! cheap, and a dropped entry only costs one more signature check.
//! This module never verifies anything itself.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::{Arc, Mutex, PoisonError};

use sha2::{Digest, Sha256};

use crate::Identity;

const SHARDS: usize = 16;

/// SHA-256 of a token.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct TokenDigest([u8; 32]);

impl TokenDigest {
    pub fn of(token: &str) -> Self {
        TokenDigest(Sha256::digest(token.as_bytes()).into())
    }

    fn shard(&self) -> usize {
        usize::from(self.0[31]) % SHARDS
    }
}

impl Hash for TokenDigest {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Already uniformly distributed: eight of its bytes are a fine hash.
        let mut word = [0; 8];
        word.copy_from_slice(&self.0[..8]);
        state.write_u64(u64::from_le_bytes(word));
    }
}

/// Passes a [`TokenDigest`]'s own bytes through instead of hashing them again.
#[derive(Default)]
struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only reached if something other than `TokenDigest` is hashed; stay correct anyway.
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u64(&mut self, word: u64) {
        self.0 = word;
    }
}

struct Entry {
    identity: Arc<Identity>,
    /// Unix seconds after which the entry must not be served.
    valid_until: i64,
}

type Shard = HashMap<TokenDigest, Entry, BuildHasherDefault<DigestHasher>>;

pub(crate) struct TokenCache {
    shards: Box<[Mutex<Shard>]>,
    per_shard: usize,
}

impl TokenCache {
    /// A cache of about `capacity` identities; 0 disables it.
    pub fn new(capacity: usize) -> Self {
        TokenCache { shards: (0..SHARDS).map(|_| Mutex::default()).collect(), per_shard: capacity.div_ceil(SHARDS) }
    }

    fn shard(&self, digest: &TokenDigest) -> std::sync::MutexGuard<'_, Shard> {
        // A panic while holding the lock cannot leave an entry half-written
        // that would be unsafe to serve, so a poisoned shard is still usable.
        self.shards[digest.shard()].lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn get(&self, digest: &TokenDigest, now: i64) -> Option<Arc<Identity>> {
        if self.per_shard == 0 {
            return None;
        }
        let mut shard = self.shard(digest);
        let entry = shard.get(digest)?;
        if now < entry.valid_until {
            return Some(Arc::clone(&entry.identity));
        }
        shard.remove(digest);
        None
    }

    pub fn insert(&self, digest: TokenDigest, identity: Arc<Identity>, valid_until: i64, now: i64) {
        if self.per_shard == 0 || valid_until <= now {
            return;
        }
        let mut shard = self.shard(&digest);
        if shard.len() >= self.per_shard && !shard.contains_key(&digest) {
            shard.retain(|_, entry| now < entry.valid_until);
            if shard.len() >= self.per_shard {
                let victims: Vec<TokenDigest> = shard.keys().take((self.per_shard / 8).max(1)).copied().collect();
                for victim in &victims {
                    shard.remove(victim);
                }
            }
        }
        shard.insert(digest, Entry { identity, valid_until });
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards.iter().map(|shard| shard.lock().unwrap_or_else(PoisonError::into_inner).len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(subject: &str) -> Arc<Identity> {
        Arc::new(Identity {
            issuer: "https://issuer.example".into(),
            subject: subject.into(),
            email: None,
            email_verified: false,
            name: None,
            expires_at: 2_000,
        })
    }

    #[test]
    fn entry_is_served_until_it_expires_and_not_after() {
        let cache = TokenCache::new(100);
        let digest = TokenDigest::of("token");
        cache.insert(digest, identity("u1"), 2_000, 1_000);
        assert_eq!(cache.get(&digest, 1_999).map(|id| id.subject.clone()).as_deref(), Some("u1"));
        assert!(cache.get(&digest, 2_000).is_none());
        assert!(cache.get(&digest, 1_999).is_none(), "the expired entry was removed");
    }

    #[test]
    fn a_different_token_misses() {
        let cache = TokenCache::new(100);
        cache.insert(TokenDigest::of("token"), identity("u1"), 2_000, 1_000);
        assert!(cache.get(&TokenDigest::of("token2"), 1_000).is_none());
    }

    #[test]
    fn size_stays_bounded_under_many_distinct_tokens() {
        let cache = TokenCache::new(160);
        for i in 0..10_000 {
            cache.insert(TokenDigest::of(&format!("token-{i}")), identity("u"), 2_000, 1_000);
        }
        assert!(cache.len() <= 160, "{}", cache.len());
        let recent = TokenDigest::of("token-9999");
        assert!(cache.get(&recent, 1_000).is_some(), "the latest insert is kept");
    }

    #[test]
    fn full_shard_drops_expired_entries_first() {
        let cache = TokenCache::new(SHARDS * 4);
        let live: Vec<_> =
            (0..).map(|i| TokenDigest::of(&format!("live-{i}"))).filter(|digest| digest.shard() == 0).take(2).collect();
        let stale: Vec<_> = (0..)
            .map(|i| TokenDigest::of(&format!("stale-{i}")))
            .filter(|digest| digest.shard() == 0)
            .take(2)
            .collect();
        for digest in &live {
            cache.insert(*digest, identity("live"), 5_000, 1_000);
        }
        for digest in &stale {
            cache.insert(*digest, identity("stale"), 1_500, 1_000);
        }
        let newcomer = (0..).map(|i| TokenDigest::of(&format!("new-{i}"))).find(|d| d.shard() == 0).expect("some");
        cache.insert(newcomer, identity("new"), 5_000, 2_000);
        assert!(live.iter().all(|digest| cache.get(digest, 2_000).is_some()));
        assert!(cache.get(&newcomer, 2_000).is_some());
    }

    #[test]
    fn zero_capacity_disables_the_cache() {
        let cache = TokenCache::new(0);
        let digest = TokenDigest::of("token");
        cache.insert(digest, identity("u"), 2_000, 1_000);
        assert!(cache.get(&digest, 1_000).is_none());
    }
}
