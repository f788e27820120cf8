//! A small most-recently-used memo of a local model's scoring pass, keyed by a hash of what was
//! scored. The scoring does not depend on the target ratio, so the same text compressed to
//! another budget (an eval at several ratios, two routes sharing a document) costs no second
//! prefill. Entries hold a few bytes per token of text.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use xxhash_rust::xxh3::Xxh3;

pub struct Memo<T> {
    /// Most recent first.
    entries: Mutex<VecDeque<(u64, Arc<T>)>>,
    capacity: usize,
}

impl<T> Memo<T> {
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: Mutex::new(VecDeque::with_capacity(capacity)),
            capacity: capacity.max(1),
        }
    }

    /// The key of `parts`, each delimited so `("ab", "c")` and `("a", "bc")` differ.
    pub fn key(parts: &[&str]) -> u64 {
        let mut hasher = Xxh3::new();
        for part in parts {
            hasher.update(part.as_bytes());
            hasher.update(&[0]);
        }
        hasher.digest()
    }

    /// The memoised value of `key`, or `compute`'s (remembered when it succeeds).
    pub fn get_or_try<E>(
        &self,
        key: u64,
        compute: impl FnOnce() -> Result<T, E>,
    ) -> Result<Arc<T>, E> {
        if let Some(hit) = self.recall(key) {
            return Ok(hit);
        }
        let value = Arc::new(compute()?);
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() == self.capacity {
                entries.pop_back();
            }
            entries.push_front((key, value.clone()));
        }
        Ok(value)
    }

    fn recall(&self, key: u64) -> Option<Arc<T>> {
        let entries = self.entries.lock().ok()?;
        entries
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_is_computed_once_and_the_oldest_is_evicted() {
        let memo: Memo<usize> = Memo::new(2);
        let mut calls = 0;
        let mut get = |text: &str| {
            *memo
                .get_or_try::<()>(Memo::<usize>::key(&["q", text]), || {
                    calls += 1;
                    Ok(text.len())
                })
                .expect("computes")
        };
        assert_eq!(get("abc"), 3);
        assert_eq!(get("abc"), 3);
        get("de");
        get("fgh");
        get("abc");
        assert_eq!(
            calls, 4,
            "abc was evicted by the third text, then recomputed"
        );
        assert_ne!(Memo::<()>::key(&["ab", "c"]), Memo::<()>::key(&["a", "bc"]));
    }
}
