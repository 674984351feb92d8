//! The one kind of in-memory cache the server keeps: bounded in entries
//! (moka: concurrent, TinyLFU eviction keeps the most used entries), bounded
//! in age (an optional time to live from insertion), and counted (hits,
//! misses, entries) for `/metrics`.
//!
//! A cache here never decides by itself whether an entry still tells the
//! truth: the caller's `fresh` check does, usually by comparing the change
//! generations the entry was computed at with the store's current ones
//! (`orgplane_store::Store::org_generation`). A stale entry counts as a
//! miss and is replaced by the caller's next insert.

use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use moka::Equivalent;
pub use orgplane_auth::CacheStats;

pub struct Cache<K, V> {
    entries: moka::sync::Cache<K, V>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl<K, V> Cache<K, V>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// At most `max_entries` entries, each served for at most `ttl` after
    /// it was inserted (`None`: until evicted or replaced).
    pub fn new(max_entries: u64, ttl: Option<Duration>) -> Self {
        let builder = moka::sync::Cache::builder().max_capacity(max_entries);
        let entries = match ttl {
            Some(ttl) => builder.time_to_live(ttl).build(),
            None => builder.build(),
        };
        Cache { entries, hits: AtomicU64::new(0), misses: AtomicU64::new(0) }
    }

    /// The entry for `key` if there is one and `fresh` accepts it.
    pub fn get<Q>(&self, key: &Q, fresh: impl FnOnce(&V) -> bool) -> Option<V>
    where
        Q: Equivalent<K> + Hash + ?Sized,
    {
        let found = self.entries.get(key).filter(fresh);
        let counter = if found.is_some() { &self.hits } else { &self.misses };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    pub fn insert(&self, key: K, value: V) {
        self.entries.insert(key, value);
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            entries: self.entries.entry_count(),
        }
    }

    /// Applies pending inserts and evictions now (moka batches them), so
    /// that `stats().entries` is exact.
    #[cfg(test)]
    pub fn settle(&self) {
        self.entries.run_pending_tasks();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stale_entry_is_a_miss_and_a_fresh_one_a_hit() {
        let cache: Cache<u32, (u64, &'static str)> = Cache::new(10, None);
        cache.insert(1, (7, "seven"));
        assert_eq!(cache.get(&1, |(generation, _)| *generation == 7), Some((7, "seven")));
        assert_eq!(cache.get(&1, |(generation, _)| *generation == 8), None, "another generation");
        assert_eq!(cache.get(&2, |_| true), None, "absent");
        cache.settle();
        assert_eq!(cache.stats(), CacheStats { hits: 1, misses: 2, entries: 1 });
    }

    #[test]
    fn entries_are_bounded() {
        let cache: Cache<u32, u32> = Cache::new(50, None);
        for i in 0..5_000 {
            cache.insert(i, i);
        }
        cache.settle();
        assert!(cache.stats().entries <= 50, "{:?}", cache.stats());
    }

    #[test]
    fn an_entry_older_than_the_ttl_is_not_served() {
        let cache: Cache<u32, u32> = Cache::new(10, Some(Duration::ZERO));
        cache.insert(1, 1);
        assert_eq!(cache.get(&1, |_| true), None);
    }
}
