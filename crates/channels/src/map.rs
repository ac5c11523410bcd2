//! A hash map split into shards, each behind its own lock, so lookups of
//! different keys from different threads do not touch one shared lock word.

use parking_lot::RwLock;
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

const SHARDS: usize = 16;

/// `Arc<str>` keys to `Arc<V>` values, bounded by a maximum length that is
/// enforced exactly under concurrent inserts.
pub(crate) struct ShardedMap<V> {
    shards: Vec<RwLock<HashMap<Arc<str>, Arc<V>>>>,
    hasher: RandomState,
    len: AtomicUsize,
}

/// Why [`ShardedMap::insert_new`] did not insert.
pub(crate) enum InsertError<V> {
    /// The key is there already (its value).
    Exists(Arc<V>),
    /// The map has its maximum length.
    Full,
}

impl<V> ShardedMap<V> {
    pub(crate) fn new() -> Self {
        ShardedMap {
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            len: AtomicUsize::new(0),
        }
    }

    fn shard(&self, key: &str) -> &RwLock<HashMap<Arc<str>, Arc<V>>> {
        let i = (self.hasher.hash_one(key) as usize) % SHARDS;
        &self.shards[i]
    }

    pub(crate) fn get(&self, key: &str) -> Option<Arc<V>> {
        self.shard(key).read().get(key).cloned()
    }

    /// Inserts `make()` under `key` unless the key exists or the map already
    /// has `max` entries.
    pub(crate) fn insert_new(
        &self,
        key: &str,
        max: usize,
        make: impl FnOnce() -> V,
    ) -> Result<Arc<V>, InsertError<V>> {
        let mut shard = self.shard(key).write();
        if let Some(v) = shard.get(key) {
            return Err(InsertError::Exists(Arc::clone(v)));
        }
        // Reserve a place first: two shards inserting at once cannot both
        // take the last one.
        if self
            .len
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < max).then_some(n + 1)
            })
            .is_err()
        {
            return Err(InsertError::Full);
        }
        let v = Arc::new(make());
        shard.insert(Arc::from(key), Arc::clone(&v));
        Ok(v)
    }

    /// Removes `key` only when `is_it` says its value is the one the caller
    /// means (not a newer value inserted under the same key since).
    pub(crate) fn remove_if(&self, key: &str, is_it: impl FnOnce(&V) -> bool) -> bool {
        let mut shard = self.shard(key).write();
        match shard.get(key) {
            Some(v) if is_it(v) => {
                shard.remove(key);
                self.len.fetch_sub(1, Ordering::SeqCst);
                true
            }
            _ => false,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Every entry, shard by shard (not one atomic snapshot).
    pub(crate) fn entries(&self) -> Vec<(Arc<str>, Arc<V>)> {
        let mut out = Vec::with_capacity(self.len());
        for shard in &self.shards {
            out.extend(
                shard
                    .read()
                    .iter()
                    .map(|(k, v)| (Arc::clone(k), Arc::clone(v))),
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_exactly_and_consistent() {
        let m: ShardedMap<u32> = ShardedMap::new();
        for i in 0..10 {
            assert!(m.insert_new(&format!("k{i}"), 10, || i).is_ok());
        }
        assert!(matches!(m.insert_new("k0", 10, || 0), Err(InsertError::Exists(v)) if *v == 0));
        assert!(matches!(
            m.insert_new("new", 10, || 0),
            Err(InsertError::Full)
        ));
        assert_eq!(m.len(), 10);
        assert!(!m.remove_if("k3", |v| *v == 4), "only the value meant");
        assert!(m.remove_if("k3", |v| *v == 3));
        assert!(!m.remove_if("k3", |_| true));
        assert_eq!(m.len(), 9);
        assert!(m.insert_new("new", 10, || 42).is_ok());
        assert_eq!(m.get("new").map(|v| *v), Some(42));
        let mut keys: Vec<String> = m.entries().iter().map(|(k, _)| k.to_string()).collect();
        keys.sort();
        assert_eq!(keys.len(), 10);
        assert!(keys.contains(&"new".to_owned()));
    }

    #[test]
    fn concurrent_inserts_never_pass_the_bound() {
        let m: Arc<ShardedMap<usize>> = Arc::new(ShardedMap::new());
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let m = Arc::clone(&m);
                std::thread::spawn(move || {
                    (0..100)
                        .filter(|i| m.insert_new(&format!("{t}-{i}"), 150, || *i).is_ok())
                        .count()
                })
            })
            .collect();
        let ok: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(ok, 150);
        assert_eq!(m.len(), 150);
        assert_eq!(m.entries().len(), 150);
    }
}
