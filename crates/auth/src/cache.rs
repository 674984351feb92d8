//! Identities of tokens already verified, so that the next request with the
//! same token costs a SHA-256 and a map lookup instead of a signature check.
//!
//! Keyed by SHA-256 of the whole token: any change to a token, even to its
//! signature, misses and goes through full verification. An entry lives until
//! the token's `exp` (plus the leeway verification allows) and never longer:
//! each lookup compares that time with the caller's clock, and the cache
//! (moka, bounded in entries, TinyLFU eviction) drops the entry at that time
//! too. A full cache evicts the least useful entries, which only costs their
//! tokens one more signature check. Hits and misses are counted for
//! `/metrics`. This module never verifies anything itself.

use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use crate::Identity;

/// SHA-256 of a token.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct TokenDigest([u8; 32]);

impl TokenDigest {
    pub fn of(token: &str) -> Self {
        TokenDigest(Sha256::digest(token.as_bytes()).into())
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
#[derive(Default, Clone)]
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

#[derive(Clone)]
struct Entry {
    identity: Arc<Identity>,
    /// Unix seconds after which the entry must not be served.
    valid_until: i64,
}

/// Tells moka to drop an entry when its token stops being valid.
struct UntilInvalid;

impl UntilInvalid {
    fn remaining(entry: &Entry) -> Option<Duration> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_secs());
        let until = u64::try_from(entry.valid_until).unwrap_or(0);
        Some(Duration::from_secs(until.saturating_sub(now)))
    }
}

impl moka::Expiry<TokenDigest, Entry> for UntilInvalid {
    fn expire_after_create(&self, _: &TokenDigest, entry: &Entry, _: Instant) -> Option<Duration> {
        Self::remaining(entry)
    }

    fn expire_after_update(&self, _: &TokenDigest, entry: &Entry, _: Instant, _: Option<Duration>) -> Option<Duration> {
        Self::remaining(entry)
    }
}

/// Hits, misses and entries of a cache, as `/metrics` shows them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    /// Approximate: moka applies inserts and evictions in batches.
    pub entries: u64,
}

pub(crate) struct TokenCache {
    /// `None`: the cache is off.
    entries: Option<moka::sync::Cache<TokenDigest, Entry, BuildHasherDefault<DigestHasher>>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl TokenCache {
    /// A cache of at most `capacity` identities; 0 disables it.
    pub fn new(capacity: usize) -> Self {
        let entries = (capacity > 0).then(|| {
            moka::sync::Cache::builder()
                .max_capacity(u64::try_from(capacity).unwrap_or(u64::MAX))
                .expire_after(UntilInvalid)
                .build_with_hasher(BuildHasherDefault::<DigestHasher>::default())
        });
        TokenCache { entries, hits: AtomicU64::new(0), misses: AtomicU64::new(0) }
    }

    pub fn get(&self, digest: &TokenDigest, now: i64) -> Option<Arc<Identity>> {
        let entries = self.entries.as_ref()?;
        match entries.get(digest) {
            Some(entry) if now < entry.valid_until => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                Some(entry.identity)
            }
            Some(_) => {
                entries.invalidate(digest);
                self.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
            None => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    pub fn insert(&self, digest: TokenDigest, identity: Arc<Identity>, valid_until: i64, now: i64) {
        let Some(entries) = &self.entries else { return };
        if valid_until <= now {
            return;
        }
        entries.insert(digest, Entry { identity, valid_until });
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            entries: self.entries.as_ref().map_or(0, moka::sync::Cache::entry_count),
        }
    }

    #[cfg(test)]
    fn settle(&self) {
        if let Some(entries) = &self.entries {
            entries.run_pending_tasks();
        }
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

    /// A `valid_until` far enough ahead of the real clock that moka keeps the entry.
    fn far_future() -> i64 {
        i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs()).expect("i64") + 3_600
    }

    #[test]
    fn entry_is_served_until_it_expires_and_not_after() {
        let cache = TokenCache::new(100);
        let digest = TokenDigest::of("token");
        let until = far_future();
        cache.insert(digest, identity("u1"), until, until - 1_000);
        assert_eq!(cache.get(&digest, until - 1).map(|id| id.subject.clone()).as_deref(), Some("u1"));
        assert!(cache.get(&digest, until).is_none());
        assert!(cache.get(&digest, until - 1).is_none(), "the expired entry was removed");
    }

    #[test]
    fn an_already_expired_token_is_not_cached() {
        let cache = TokenCache::new(100);
        let digest = TokenDigest::of("token");
        cache.insert(digest, identity("u1"), 1_000, 1_000);
        assert!(cache.get(&digest, 999).is_none());
    }

    #[test]
    fn a_different_token_misses() {
        let cache = TokenCache::new(100);
        let until = far_future();
        cache.insert(TokenDigest::of("token"), identity("u1"), until, until - 1_000);
        assert!(cache.get(&TokenDigest::of("token2"), until - 1_000).is_none());
    }

    #[test]
    fn size_stays_bounded_under_many_distinct_tokens() {
        let cache = TokenCache::new(160);
        let until = far_future();
        for i in 0..10_000 {
            cache.insert(TokenDigest::of(&format!("token-{i}")), identity("u"), until, until - 1_000);
        }
        cache.settle();
        assert!(cache.stats().entries <= 160, "{:?}", cache.stats());
    }

    #[test]
    fn hits_and_misses_are_counted() {
        let cache = TokenCache::new(100);
        let digest = TokenDigest::of("token");
        let until = far_future();
        assert!(cache.get(&digest, until - 1_000).is_none());
        cache.insert(digest, identity("u1"), until, until - 1_000);
        assert!(cache.get(&digest, until - 1_000).is_some());
        assert!(cache.get(&digest, until - 999).is_some());
        cache.settle();
        assert_eq!(cache.stats(), CacheStats { hits: 2, misses: 1, entries: 1 });
    }

    #[test]
    fn zero_capacity_disables_the_cache() {
        let cache = TokenCache::new(0);
        let digest = TokenDigest::of("token");
        cache.insert(digest, identity("u"), far_future(), 1_000);
        assert!(cache.get(&digest, 1_000).is_none());
    }
}
