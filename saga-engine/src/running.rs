//! The sagas this process is driving: one driver per saga, whoever asks to drive it.
//!
//! Every saga enters and leaves this set, on whichever worker thread runs it, so it is split
//! into shards, each on a cache line of its own: two threads starting different sagas seldom
//! touch the same lock, and a lock taken on one core does not evict the other core's.

use std::collections::HashSet;
use std::sync::{Mutex, MutexGuard};

use crate::record::SagaId;

/// A power of two, comfortably more than the worker threads of a node.
const SHARDS: usize = 16;

/// One shard on a cache line (two, for the adjacent-line prefetcher) of its own.
#[derive(Default)]
#[repr(align(128))]
struct Shard(Mutex<HashSet<SagaId>>);

#[derive(Default)]
pub(crate) struct RunningSet {
    shards: [Shard; SHARDS],
}

impl RunningSet {
    fn shard(&self, id: SagaId) -> MutexGuard<'_, HashSet<SagaId>> {
        // Saga ids are random (v4) or hashed (v5) UUIDs: their low bits are already uniform.
        let shard = &self.shards[id.0.as_u128() as usize % SHARDS];
        shard.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Claim the saga for a driver; false if another driver already has it.
    pub(crate) fn insert(&self, id: SagaId) -> bool {
        self.shard(id).insert(id)
    }

    pub(crate) fn remove(&self, id: SagaId) {
        self.shard(id).remove(&id);
    }

    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.0.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_driver_per_saga() {
        let set = RunningSet::default();
        let ids: Vec<SagaId> = (0..100).map(|_| SagaId::new_random()).collect();
        assert!(ids.iter().all(|&id| set.insert(id)));
        assert!(
            ids.iter().all(|&id| !set.insert(id)),
            "a saga claimed twice"
        );
        assert_eq!(set.len(), 100);
        for &id in &ids[..40] {
            set.remove(id);
        }
        assert_eq!(set.len(), 60);
        assert!(set.insert(ids[0]), "a finished saga can be driven again");
    }
}
