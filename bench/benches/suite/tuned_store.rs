//! The memory store as it was tuned for this benchmark, kept here to be measured beside the
//! engine's own `MemoryStore` (the plain reference: one mutex over a `Vec` and a map). It is
//! written against the engine's public `SagaStore` trait only, as any store outside the engine
//! would be, so it commits through the engine's group commit like every store.
//!
//! What it tried: records kept compact, their detail as JSON text (a `serde_json::Value`
//! object costs a fresh ~600-byte node per record); the sagas in 16 shards by id, each behind a
//! lock on cache lines of its own, so appends of different sagas on the two cores share only
//! the log's lock, which covers pushing a pointer per record; a saga's records chained through
//! the log instead of an index per saga; a hasher that takes the id's bits as they are.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use saga_engine::{
    BoxFuture, Committed, RecordKind, SagaId, SagaRecord, SagaStatus, SagaStore, SagaSummary,
    StoreError,
};

#[derive(Debug, Default)]
pub struct TunedMemoryStore {
    /// Position `i + 1` is `log[i]`. Taken after a shard's lock when both are held, never
    /// before.
    log: Mutex<Log>,
    /// The sagas by id, so that appends on different cores for different sagas touch nothing
    /// in common but the log.
    sagas: Sharded<SagaMap>,
}

type SagaMap = HashMap<SagaId, Saga, BuildHasherDefault<IdHasher>>;

/// Pointers, not the records themselves: each record is allocated (and its memory first
/// touched) by the appending thread before the lock, and the lock covers pushing 8 bytes,
/// where pushing the ~90-byte record would page-fault under it every few dozen records.
type Log = Vec<Box<Kept>>;

/// One saga: its summary row, its lease, and where its newest record is.
#[derive(Debug)]
struct Saga {
    /// `None` for records of a saga that was never started, kept all the same (as a table of
    /// records would keep them).
    summary: Option<SagaSummary>,
    holder: Option<String>,
    lease_end: i64,
    /// Index in `log` of its newest record, whose `previous` leads back to its first: no
    /// allocation per saga for an index. `None` only between making the entry and logging
    /// its first record, both under the shard's lock.
    last: Option<usize>,
}

/// Saga ids are random UUIDs: their bits are already a good hash, and SipHash on every record
/// of every saga is time spent under the store's lock.
#[derive(Debug, Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(word))
                .wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
}

/// A record as kept: what it was given, with its detail as JSON text.
#[derive(Debug)]
struct Kept {
    saga_id: SagaId,
    seq: u64,
    kind: RecordKind,
    at_ms: i64,
    step: Option<Box<str>>,
    attempt: Option<u32>,
    detail: Box<str>,
    /// Index in `log` of the same saga's record before this one.
    previous: Option<usize>,
}

impl Kept {
    fn new(r: &SagaRecord) -> Result<Self, StoreError> {
        let detail = serde_json::to_string(&r.detail)
            .map_err(|e| StoreError::Corrupt(format!("a record's detail: {e}")))?;
        Ok(Kept {
            saga_id: r.saga_id,
            seq: r.seq,
            kind: r.kind,
            at_ms: r.at_ms,
            step: r.step.as_deref().map(Box::from),
            attempt: r.attempt,
            detail: detail.into_boxed_str(),
            previous: None,
        })
    }

    fn record(&self) -> Result<SagaRecord, StoreError> {
        Ok(SagaRecord {
            saga_id: self.saga_id,
            seq: self.seq,
            kind: self.kind,
            at_ms: self.at_ms,
            step: self.step.as_deref().map(str::to_string),
            attempt: self.attempt,
            detail: serde_json::from_str(&self.detail)
                .map_err(|e| StoreError::Corrupt(format!("a record's detail: {e}")))?,
        })
    }
}

/// A record as it goes into the log, with the change it makes to its saga's summary: both made
/// before any lock is taken, so that the locks cover moves and no allocation.
struct Prepared {
    kept: Box<Kept>,
    change: Option<Change>,
}

enum Change {
    Create(SagaSummary),
    Status { status: SagaStatus, at_ms: i64 },
}

impl TunedMemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn log(&self) -> MutexGuard<'_, Log> {
        lock(&self.log)
    }

    /// Everything an append needs that can be done before taking a lock.
    fn prepare(records: &[SagaRecord]) -> Result<Vec<Prepared>, StoreError> {
        records
            .iter()
            .map(|r| {
                let change = summary_change(r).map(|change| match change {
                    SummaryChange::Create { definition } => Change::Create(SagaSummary {
                        saga_id: r.saga_id,
                        definition: definition.to_string(),
                        status: SagaStatus::Running,
                        started_at_ms: r.at_ms,
                        finished_at_ms: None,
                    }),
                    SummaryChange::Status(status) => Change::Status {
                        status,
                        at_ms: r.at_ms,
                    },
                });
                Ok(Prepared {
                    kept: Box::new(Kept::new(r)?),
                    change,
                })
            })
            .collect()
    }

    /// The whole of an append: lock the shards of the sagas in it (in shard order, so two
    /// appends cannot deadlock), refuse the batch if it starts a saga whose id is taken, then
    /// under the log's lock give each record its position, update its saga, and call
    /// `committed` (which announces, in log order) before letting the next append in.
    fn commit(
        &self,
        mut prepared: Vec<Prepared>,
        positions: &mut Vec<i64>,
        committed: impl FnOnce(&[i64]),
    ) -> Result<(), StoreError> {
        let mut wanted = [false; SHARDS];
        for p in &prepared {
            wanted[shard_of(p.kept.saga_id)] = true;
        }
        let mut shards: [Option<MutexGuard<'_, SagaMap>>; SHARDS] = Default::default();
        for (i, guard) in shards.iter_mut().enumerate() {
            if wanted[i] {
                *guard = Some(self.sagas.lock_shard(i));
            }
        }
        fn saga_map<'a>(
            shards: &'a mut [Option<MutexGuard<'_, SagaMap>>; SHARDS],
            id: SagaId,
        ) -> &'a mut SagaMap {
            shards[shard_of(id)]
                .as_deref_mut()
                .expect("the shard of every saga in the batch is locked")
        }
        // All or nothing, like a transaction: check before changing anything.
        for p in &prepared {
            if let Some(Change::Create(summary)) = &p.change
                && saga_map(&mut shards, summary.saga_id)
                    .get(&summary.saga_id)
                    .is_some_and(|saga| saga.summary.is_some())
            {
                return Err(StoreError::DuplicateSaga(summary.saga_id));
            }
        }
        // Each saga's entry found (or made) and its summary changed under the shards' locks
        // alone: the map's cache misses stay out of the log's lock, which every append on
        // every core takes.
        for p in &mut prepared {
            let saga = saga_map(&mut shards, p.kept.saga_id)
                .entry(p.kept.saga_id)
                .or_insert(Saga {
                    summary: None,
                    holder: None,
                    lease_end: 0,
                    last: None,
                });
            match p.change.take() {
                Some(Change::Create(summary)) => saga.summary = Some(summary),
                Some(Change::Status { status, at_ms }) => {
                    if let Some(s) = &mut saga.summary {
                        s.status = status;
                        s.finished_at_ms = status.is_finished().then_some(at_ms);
                    }
                }
                None => {}
            }
        }
        let mut log = self.log();
        for Prepared { mut kept, .. } in prepared {
            let index = log.len();
            let saga = saga_map(&mut shards, kept.saga_id)
                .get_mut(&kept.saga_id)
                .expect("every saga of the batch has its entry, made above");
            kept.previous = saga.last.replace(index);
            log.push(kept);
            positions.push(index as i64 + 1);
        }
        committed(positions);
        Ok(())
    }
}

impl SagaStore for TunedMemoryStore {
    fn append<'a>(
        &'a self,
        records: &'a [SagaRecord],
    ) -> BoxFuture<'a, Result<Vec<i64>, StoreError>> {
        let mut positions = Vec::with_capacity(records.len());
        let result = Self::prepare(records)
            .and_then(|prepared| self.commit(prepared, &mut positions, |_| {}))
            .map(|()| positions);
        Box::pin(async move { result })
    }

    fn saga_records(
        &self,
        saga_id: SagaId,
        after_seq: u64,
    ) -> BoxFuture<'_, Result<Vec<SagaRecord>, StoreError>> {
        // Where its newest record is, then the chain back from there: a record appended in
        // between is newer than all of these, and left for the next read.
        let last = self
            .sagas
            .lock(saga_id)
            .get(&saga_id)
            .and_then(|saga| saga.last);
        let log = self.log();
        let mut newest_first = Vec::new();
        let mut next = last;
        while let Some(i) = next {
            let kept = &log[i];
            if kept.seq > after_seq {
                newest_first.push(&**kept);
            }
            next = kept.previous;
        }
        let records = newest_first.into_iter().rev().map(Kept::record).collect();
        Box::pin(async move { records })
    }

    fn records_after(
        &self,
        after: i64,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<Committed>, StoreError>> {
        let log = self.log();
        let start = usize::try_from(after.max(0)).unwrap_or(0);
        let page = log
            .iter()
            .enumerate()
            .skip(start)
            .take(limit as usize)
            .map(|(i, k)| {
                Ok(Committed {
                    position: i as i64 + 1,
                    record: k.record()?,
                })
            })
            .collect();
        Box::pin(async move { page })
    }

    fn last_position(&self) -> BoxFuture<'_, Result<i64, StoreError>> {
        let last = self.log().len() as i64;
        Box::pin(async move { Ok(last) })
    }

    fn saga(&self, saga_id: SagaId) -> BoxFuture<'_, Result<Option<SagaSummary>, StoreError>> {
        let summary = self
            .sagas
            .lock(saga_id)
            .get(&saga_id)
            .and_then(|saga| saga.summary.clone());
        Box::pin(async move { Ok(summary) })
    }

    fn list_sagas(
        &self,
        status: Option<SagaStatus>,
        before: Option<SagaId>,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<SagaSummary>, StoreError>> {
        // The list's order, as a key that grows towards the older sagas.
        let key = |s: &SagaSummary| {
            (
                std::cmp::Reverse(s.started_at_ms),
                std::cmp::Reverse(s.saga_id),
            )
        };
        let cursor = match before {
            None => None,
            Some(id) => match self
                .sagas
                .lock(id)
                .get(&id)
                .and_then(|saga| saga.summary.as_ref())
            {
                Some(summary) => Some(key(summary)),
                None => return Box::pin(async move { Ok(Vec::new()) }),
            },
        };
        let mut list: Vec<SagaSummary> = Vec::new();
        for shard in self.sagas.each() {
            list.extend(
                shard
                    .values()
                    .filter_map(|saga| saga.summary.as_ref())
                    .filter(|s| status.is_none_or(|st| s.status == st))
                    .filter(|s| cursor.is_none_or(|c| key(s) > c))
                    .cloned(),
            );
        }
        list.sort_by_key(key);
        list.truncate(limit as usize);
        Box::pin(async move { Ok(list) })
    }

    fn claim_unfinished(
        &self,
        owner: &str,
        lease: Duration,
    ) -> BoxFuture<'_, Result<Vec<SagaId>, StoreError>> {
        let now = now_ms();
        let until = lease_until(lease);
        let mut claimed = Vec::new();
        for mut shard in self.sagas.each() {
            for (id, saga) in shard.iter_mut() {
                let Some(s) = &saga.summary else { continue };
                let free =
                    saga.holder.as_deref().is_none_or(|h| h == owner) || saga.lease_end < now;
                if !s.status.is_finished() && free {
                    saga.holder = Some(owner.to_string());
                    saga.lease_end = until;
                    claimed.push(*id);
                }
            }
        }
        Box::pin(async move { Ok(claimed) })
    }
}

/// What a record does to its saga's summary (the engine's stores share this rule privately).
enum SummaryChange<'a> {
    Create { definition: &'a str },
    Status(SagaStatus),
}

fn summary_change(record: &SagaRecord) -> Option<SummaryChange<'_>> {
    match record.kind {
        RecordKind::SagaStarted => Some(SummaryChange::Create {
            definition: record
                .detail
                .get("saga")
                .and_then(|v| v.as_str())
                .unwrap_or(""),
        }),
        kind => kind.status_after().map(SummaryChange::Status),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn lease_until(lease: Duration) -> i64 {
    now_ms() + lease.as_millis() as i64
}

// The shards: state keyed by saga id in 16 locks on cache lines of their own.

/// A power of two, comfortably more than the worker threads of a node.
const SHARDS: usize = 16;

/// Which shard holds `id`. Saga ids are time-ordered (v7), random (v4) or hashed (v5) UUIDs:
/// in each, the low bits are random, so already uniform (v7's high bits are the time).
fn shard_of(id: SagaId) -> usize {
    id.0.as_u128() as usize % SHARDS
}

/// A lock that a panic elsewhere does not make unusable: what it guards is left consistent
/// between statements.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// One shard on a cache line (two, for the adjacent-line prefetcher) of its own.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Shard<T>(Mutex<T>);

#[derive(Debug, Default)]
struct Sharded<T> {
    shards: [Shard<T>; SHARDS],
}

impl<T> Sharded<T> {
    /// The shard holding `id`, locked.
    fn lock(&self, id: SagaId) -> MutexGuard<'_, T> {
        self.lock_shard(shard_of(id))
    }

    /// Shard `i` (`< SHARDS`), locked.
    fn lock_shard(&self, i: usize) -> MutexGuard<'_, T> {
        lock(&self.shards[i].0)
    }

    /// Every shard, each locked in turn (one at a time, never all at once).
    fn each(&self) -> impl Iterator<Item = MutexGuard<'_, T>> {
        self.shards.iter().map(|shard| lock(&shard.0))
    }
}
