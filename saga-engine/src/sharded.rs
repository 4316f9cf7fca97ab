//! State keyed by saga id, split into shards each behind its own lock on cache lines of its
//! own, for what every saga touches from whichever worker thread runs it (the running set,
//! the memory store's sagas). Two threads working on different sagas then seldom share a lock,
//! and a lock taken on one core does not evict the other core's.

use std::sync::{Mutex, MutexGuard};

use crate::record::SagaId;

/// A power of two, comfortably more than the worker threads of a node.
pub(crate) const SHARDS: usize = 16;

/// Which shard holds `id`. Saga ids are random (v4) or hashed (v5) UUIDs: their low bits are
/// already uniform.
pub(crate) fn shard_of(id: SagaId) -> usize {
    id.0.as_u128() as usize % SHARDS
}

/// A lock that a panic elsewhere does not make unusable: what it guards is left consistent
/// between statements.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// One shard on a cache line (two, for the adjacent-line prefetcher) of its own.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Shard<T>(Mutex<T>);

#[derive(Debug, Default)]
pub(crate) struct Sharded<T> {
    shards: [Shard<T>; SHARDS],
}

impl<T> Sharded<T> {
    /// The shard holding `id`, locked.
    pub(crate) fn lock(&self, id: SagaId) -> MutexGuard<'_, T> {
        self.lock_shard(shard_of(id))
    }

    /// Shard `i` (`< SHARDS`), locked.
    pub(crate) fn lock_shard(&self, i: usize) -> MutexGuard<'_, T> {
        lock(&self.shards[i].0)
    }

    /// Every shard, each locked in turn (one at a time, never all at once).
    pub(crate) fn each(&self) -> impl Iterator<Item = MutexGuard<'_, T>> {
        self.shards.iter().map(|shard| lock(&shard.0))
    }
}
