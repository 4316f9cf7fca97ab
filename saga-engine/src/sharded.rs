//! State keyed by saga id, split into shards each behind its own lock on cache lines of its
//! own, for what every saga touches from whichever worker thread runs it (the running set,
//! the memory store's sagas). Two threads working on different sagas then seldom share a lock,
//! and a lock taken on one core does not evict the other core's.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use crate::record::SagaId;

/// A power of two, comfortably more than the worker threads of a node.
pub(crate) const SHARDS: usize = 16;

/// Which shard holds `id`. Saga ids are time-ordered (v7), random (v4) or hashed (v5) UUIDs:
/// in each, the low bits are random, so already uniform (v7's high bits are the time).
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

/// A count added to from every worker thread, read now and then (`/metrics`, benchmarks). Each
/// of the first threads to count owns a cell, on cache lines of its own, and adds to it with a
/// plain store: a shared counter bumped on every commit moved its line between the cores each
/// time, and even an uncontended atomic add waits for the core's pending writes (measured: the
/// hottest instruction of the commit path, in both cases, with sagas on both cores). Threads
/// beyond those share the last cell, with atomic adds.
#[derive(Debug, Default)]
pub(crate) struct Counter {
    cells: [Cell; SHARDS],
}

#[derive(Debug, Default)]
#[repr(align(128))]
struct Cell(AtomicU64);

/// The cell shared by threads that own none.
const SHARED_CELL: usize = SHARDS - 1;

impl Counter {
    pub(crate) fn add(&self, n: u64) {
        match owned_cell() {
            // Only this thread writes its cell: a load and a store lose nothing.
            Some(i) => {
                let cell = &self.cells[i].0;
                cell.store(cell.load(Ordering::Relaxed) + n, Ordering::Relaxed);
            }
            None => {
                self.cells[SHARED_CELL].0.fetch_add(n, Ordering::Relaxed);
            }
        }
    }

    /// The sum of every cell: exact once the adds it should see have happened.
    pub(crate) fn get(&self) -> u64 {
        self.cells.iter().map(|c| c.0.load(Ordering::Relaxed)).sum()
    }
}

/// The cell this thread owns, if it is among the first `SHARED_CELL` threads to count (a
/// process-wide count: a server's worker threads come first and live as long as it does).
fn owned_cell() -> Option<usize> {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static CELL: Option<usize> = Some(NEXT.fetch_add(1, Ordering::Relaxed))
            .filter(|&i| i < SHARED_CELL);
    }
    CELL.with(|cell| *cell)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Time-ordered ids made in the same instant still spread over every shard: the shard
    /// comes from their random low bits, not from the time at the front.
    #[test]
    fn ids_made_together_spread_over_every_shard() {
        let mut used = [0usize; SHARDS];
        for _ in 0..SHARDS * 64 {
            used[shard_of(SagaId::new())] += 1;
        }
        assert!(used.iter().all(|&n| n > 0), "shards used: {used:?}");
    }

    /// More threads than cells, so that owned cells and the shared one are both counted into.
    #[test]
    fn a_counter_added_to_from_many_threads_loses_nothing() {
        let counter = Counter::default();
        std::thread::scope(|s| {
            for _ in 0..3 * SHARDS {
                s.spawn(|| {
                    for _ in 0..10_000 {
                        counter.add(1);
                    }
                    counter.add(5);
                });
            }
        });
        assert_eq!(counter.get(), 3 * SHARDS as u64 * 10_005);
    }
}
