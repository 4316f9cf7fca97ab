//! A store in memory: nothing survives the process. For tests, examples and for measuring the
//! executor without a disk (the way steno's `InMemorySecStore` is used).
//!
//! Records are kept compact, their detail as JSON text the way the durable stores keep it: a
//! `serde_json::Value` object is a B-tree node of ~600 bytes however small it is, so keeping
//! values made every record cost a fresh page-faulted kilobyte, and that growth, not the
//! executor, set the pace of a long run (measured: a third of the time went to the kernel
//! zeroing pages, and two threads faulting in the same heap slowed each other down).
//!
//! Sagas append from their own tasks, on every worker thread at once, so the store is built
//! for that: the per-saga state (summary, lease, where its records are) lives in shards by saga
//! id, and the one lock every append takes, the log's, covers only giving the records their
//! positions (pushing a pointer each) and announcing them. A contended lock puts a thread to
//! sleep and wakes it again, which costs more than the whole critical section; before this
//! split, the map lookups under one lock made two threads appending slower per saga than one.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use super::{
    Committed, SagaStore, SagaSummary, StoreError, SummaryChange, lease_until, summary_change,
};
use crate::definition::BoxFuture;
use crate::record::{RecordKind, SagaId, SagaRecord, SagaStatus, now_ms};
use crate::sharded::{SHARDS, Sharded, lock, shard_of};

#[derive(Debug, Default)]
pub struct MemoryStore {
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
    /// Index in `log` of the same saga's record before this one.
    previous: Option<usize>,
}

impl Kept {
    fn new(r: &SagaRecord) -> Result<Self, StoreError> {
        Ok(Kept {
            saga_id: r.saga_id,
            seq: r.seq,
            kind: r.kind.clone(),
            at_ms: r.at_ms,
            step: r.step.as_deref().map(Box::from),
            attempt: r.attempt,
            previous: None,
        })
    }

    fn record(&self) -> Result<SagaRecord, StoreError> {
        Ok(SagaRecord {
            saga_id: self.saga_id,
            seq: self.seq,
            kind: self.kind.clone(),
            at_ms: self.at_ms,
            step: self.step.as_deref().map(str::to_string),
            attempt: self.attempt,
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

impl MemoryStore {
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

impl SagaStore for MemoryStore {
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

    fn commits_in_place(&self) -> bool {
        true
    }

    fn append_in_place(
        &self,
        mut records: Vec<SagaRecord>,
        announce: &mut dyn FnMut(&[i64], &mut Vec<SagaRecord>),
    ) -> Result<(), StoreError> {
        let prepared = Self::prepare(&records)?;
        let mut positions = Vec::with_capacity(records.len());
        self.commit(prepared, &mut positions, |positions| {
            announce(positions, &mut records)
        })?;
        // What `announce` left (all of it, when nobody listens) is freed here, after the locks.
        drop(records);
        Ok(())
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

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;
    use serde_json::json;

    use super::*;
    use crate::{Engine, SagaDefinition, Step};

    fn record(saga_id: SagaId, seq: u64, kind: RecordKind) -> SagaRecord {
        let started = matches!(kind, RecordKind::SagaStarted { .. });
        SagaRecord {
            saga_id,
            seq,
            kind,
            at_ms: 1_700_000_000_000 + seq as i64,
            step: (!started).then(|| "reserve".to_string()),
            attempt: (!started).then_some(1),
        }
    }

    fn started(saga: &str, input: serde_json::Value) -> RecordKind {
        RecordKind::SagaStarted {
            saga: saga.into(),
            input,
        }
    }

    #[tokio::test]
    async fn records_read_back_as_written_and_a_taken_id_changes_nothing() {
        let store = MemoryStore::new();
        let id = SagaId::new();
        let first = vec![
            record(id, 1, started("buy", json!({ "n": [1, 2.5, null] }))),
            record(id, 2, RecordKind::StepStarted { timeout_ms: 5000 }),
        ];
        let mut announced = Vec::new();
        let mut announce = |positions: &[i64], records: &mut Vec<SagaRecord>| {
            announced.extend(positions.iter().copied().zip(records.drain(..)));
        };
        assert_eq!(store.append_in_place(first.clone(), &mut announce), Ok(()));
        assert_eq!(
            announced,
            [(1, first[0].clone()), (2, first[1].clone())],
            "announced with their positions"
        );
        let second = [record(
            id,
            3,
            RecordKind::StepSucceeded {
                output: json!("é\"\n"),
                duration_ms: 1,
            },
        )];
        assert_eq!(store.append(&second).await, Ok(vec![3]));

        let all: Vec<SagaRecord> = first.iter().chain(&second).cloned().collect();
        assert_eq!(store.saga_records(id, 0).await, Ok(all.clone()));
        assert_eq!(store.saga_records(id, 2).await, Ok(all[2..].to_vec()));
        let page = store.records_after(1, 10).await.expect("read");
        assert_eq!(page.iter().map(|c| c.position).collect::<Vec<_>>(), [2, 3]);
        assert_eq!(page[1].record, all[2]);

        // Starting the same saga again fails as a whole: the other saga in the batch is not kept.
        let other = SagaId::new();
        let again = [
            record(other, 1, started("buy", json!(null))),
            record(id, 1, started("buy", json!(null))),
        ];
        let refused = store.append_in_place(again.to_vec(), &mut |_, _| panic!("announced"));
        assert_eq!(refused, Err(StoreError::DuplicateSaga(id)));
        assert_eq!(store.last_position().await, Ok(3));
        assert_eq!(store.saga(other).await, Ok(None));
    }

    /// An engine on a fresh memory store, with `three`: three steps that succeed (a saga of
    /// it logs 8 records).
    fn engine_with_three_steps() -> Engine {
        let engine = Engine::new(MemoryStore::new());
        let steps = (0..3)
            .map(|i| Step::new(&format!("s{i}")).action(move |_| async move { Ok(i) }))
            .collect();
        engine.register(SagaDefinition::new("three", steps).expect("valid"));
        engine
    }

    /// Appended in the sagas' own tasks (no group commit), from many at once: every saga's
    /// records are announced once each, in log order, and match what the log holds.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sagas_appending_in_place_announce_everything_in_log_order() {
        let engine = engine_with_three_steps();
        let feed = engine.subscribe_all(None);
        let runs: Vec<_> = (0..200)
            .map(|_| {
                let engine = engine.clone();
                tokio::spawn(async move { engine.run("three", &json!({})).await })
            })
            .collect();
        let mut ids = Vec::new();
        for run in runs {
            let (id, status) = run.await.expect("joined").expect("ran");
            assert_eq!(status, SagaStatus::Completed);
            ids.push(id);
        }
        let logged = engine.store().last_position().await.expect("read");
        // Per saga: started, 3 × (step started, step succeeded), completed.
        assert_eq!(logged, 200 * 8);
        let seen: Vec<Committed> = tokio::time::timeout(
            Duration::from_secs(10),
            feed.take(logged as usize)
                .map(|c| (*c.expect("no gap")).clone())
                .collect(),
        )
        .await
        .expect("every record announced");
        let positions: Vec<i64> = seen.iter().map(|c| c.position).collect();
        assert_eq!(positions, (1..=logged).collect::<Vec<_>>());
        let stored = engine.store().records_after(0, 10_000).await.expect("read");
        assert_eq!(seen, stored);
        // Each saga's own records, interleaved with the others' in the log, read back alone.
        for id in ids {
            let own: Vec<SagaRecord> = stored
                .iter()
                .filter(|c| c.record.saga_id == id)
                .map(|c| c.record.clone())
                .collect();
            assert_eq!(own.len(), 8);
            assert_eq!(engine.store().saga_records(id, 0).await, Ok(own.clone()));
            assert_eq!(
                engine.store().saga_records(id, 5).await,
                Ok(own[5..].to_vec())
            );
        }
    }

    /// Until someone subscribes nothing is announced at all (`LogStats::watched`); the first
    /// subscribers must still get exactly what they asked for: "from now on" is from now on,
    /// and a saga's history is all there.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_first_subscriber_after_unwatched_sagas_misses_nothing_and_gets_no_old_news() {
        let engine = engine_with_three_steps();
        let mut earlier = Vec::new();
        for _ in 0..20 {
            let (id, status) = engine.run("three", &json!({})).await.expect("ran");
            assert_eq!(status, SagaStatus::Completed);
            earlier.push(id);
        }
        let before = engine.store().last_position().await.expect("read");
        assert_eq!(before, 20 * 8);

        let feed = engine.subscribe_all(None);
        let (later, _) = engine.run("three", &json!({})).await.expect("ran");
        let seen: Vec<Committed> = tokio::time::timeout(
            Duration::from_secs(10),
            feed.take(8)
                .map(|c| (*c.expect("no gap")).clone())
                .collect(),
        )
        .await
        .expect("the new saga's records announced");
        assert!(
            seen.iter().all(|c| c.record.saga_id == later),
            "only what was committed after subscribing"
        );
        assert_eq!(
            seen.iter().map(|c| c.position).collect::<Vec<_>>(),
            (before + 1..=before + 8).collect::<Vec<_>>()
        );

        // A saga that ended before anyone watched: its whole history, then the stream ends.
        let history: Vec<SagaRecord> = tokio::time::timeout(
            Duration::from_secs(10),
            engine
                .subscribe(earlier[7], 0)
                .map(|r| r.expect("readable"))
                .collect(),
        )
        .await
        .expect("the stream of a finished saga ends");
        assert_eq!(
            engine.store().saga_records(earlier[7], 0).await,
            Ok(history.clone())
        );
        assert_eq!(history.len(), 8);
        assert_eq!(
            history.last().map(|r| r.kind.clone()),
            Some(RecordKind::SagaCompleted {})
        );
    }

    /// The list's order (newest start first, ties by id descending) and its pages, `before`
    /// the last saga of the page before, as the SQL stores (tests/tests/engine.rs).
    #[tokio::test]
    async fn the_list_comes_in_pages_newest_first() {
        let store = MemoryStore::new();
        let ids: Vec<SagaId> = (0..9).map(|_| SagaId::new()).collect();
        let batch: Vec<SagaRecord> = ids
            .iter()
            .enumerate()
            .map(|(i, &id)| SagaRecord {
                at_ms: 100 + i as i64 / 3,
                ..record(id, 1, started("list", json!(null)))
            })
            .collect();
        store.append(&batch).await.unwrap();
        let mut expected: Vec<(i64, SagaId)> = ids
            .iter()
            .enumerate()
            .map(|(i, &id)| (100 + i as i64 / 3, id))
            .collect();
        expected.sort_by(|a, b| b.cmp(a));
        let expected: Vec<SagaId> = expected.into_iter().map(|(_, id)| id).collect();
        let page = |before: Option<SagaId>, limit: u32| {
            let store = &store;
            async move {
                store
                    .list_sagas(None, before, limit)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|s| s.saga_id)
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!(page(None, 100).await, expected);
        assert_eq!(page(None, 4).await, expected[..4]);
        assert_eq!(page(Some(expected[3]), 4).await, expected[4..8]);
        assert_eq!(page(Some(expected[7]), 4).await, expected[8..]);
        assert!(page(Some(expected[8]), 4).await.is_empty());
        assert!(page(Some(SagaId::new()), 4).await.is_empty());
        let completed = store
            .list_sagas(Some(SagaStatus::Completed), None, 100)
            .await
            .unwrap();
        assert!(completed.is_empty(), "none has completed");
    }
}
