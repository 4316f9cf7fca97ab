//! A store in memory: nothing survives the process. For tests, examples and for measuring the
//! executor without a disk (the way steno's `InMemorySecStore` is used).
//!
//! Records are kept compact, their detail as JSON text the way the durable stores keep it: a
//! `serde_json::Value` object is a B-tree node of ~600 bytes however small it is, so keeping
//! values made every record cost a fresh page-faulted kilobyte, and that growth, not the
//! executor, set the pace of a long run (measured: a third of the time went to the kernel
//! zeroing pages, and two threads faulting in the same heap slowed each other down).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Mutex;
use std::time::Duration;

use super::{
    Committed, SagaStore, SagaSummary, StoreError, SummaryChange, lease_until, summary_change,
};
use crate::definition::BoxFuture;
use crate::record::{RecordKind, SagaId, SagaRecord, SagaStatus, now_ms};

#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Position `i + 1` is `log[i]`.
    log: Vec<Kept>,
    sagas: HashMap<SagaId, Saga, BuildHasherDefault<IdHasher>>,
}

/// One saga: its summary row, its lease, and where its newest record is.
#[derive(Debug)]
struct Saga {
    /// `None` for records of a saga that was never started, kept all the same (as a table of
    /// records would keep them).
    summary: Option<SagaSummary>,
    holder: Option<String>,
    lease_end: i64,
    /// Index in `log` of its newest record, whose `previous` leads back to its first: no
    /// allocation per saga for an index.
    last: usize,
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

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A record as kept, made before taking the lock (which other threads' sagas wait on).
    fn keep(records: &[SagaRecord]) -> Result<Vec<Kept>, StoreError> {
        records.iter().map(Kept::new).collect()
    }
}

impl Inner {
    /// The whole of an append, under the store's lock.
    fn commit(&mut self, records: &[SagaRecord], kept: Vec<Kept>) -> Result<Vec<i64>, StoreError> {
        // All or nothing, like a transaction: check before changing anything.
        for r in records {
            if matches!(summary_change(r), Some(SummaryChange::Create { .. }))
                && self
                    .sagas
                    .get(&r.saga_id)
                    .is_some_and(|saga| saga.summary.is_some())
            {
                return Err(StoreError::DuplicateSaga(r.saga_id));
            }
        }
        let mut positions = Vec::with_capacity(records.len());
        for (r, mut kept) in records.iter().zip(kept) {
            let index = self.log.len();
            let saga = self.sagas.entry(r.saga_id).or_insert(Saga {
                summary: None,
                holder: None,
                lease_end: 0,
                last: index,
            });
            match summary_change(r) {
                Some(SummaryChange::Create { definition }) => {
                    saga.summary = Some(SagaSummary {
                        saga_id: r.saga_id,
                        definition: definition.to_string(),
                        status: SagaStatus::Running,
                        started_at_ms: r.at_ms,
                        finished_at_ms: None,
                    });
                }
                Some(SummaryChange::Status(status)) => {
                    if let Some(s) = &mut saga.summary {
                        s.status = status;
                        s.finished_at_ms = status.is_finished().then_some(r.at_ms);
                    }
                }
                None => {}
            }
            if saga.last != index {
                kept.previous = Some(saga.last);
            }
            saga.last = index;
            self.log.push(kept);
            positions.push(index as i64 + 1);
        }
        Ok(positions)
    }
}

impl SagaStore for MemoryStore {
    fn append<'a>(
        &'a self,
        records: &'a [SagaRecord],
    ) -> BoxFuture<'a, Result<Vec<i64>, StoreError>> {
        let result = Self::keep(records).and_then(|kept| self.lock().commit(records, kept));
        Box::pin(async move { result })
    }

    fn commits_in_place(&self) -> bool {
        true
    }

    fn append_in_place(
        &self,
        records: Vec<SagaRecord>,
        announce: &mut dyn FnMut(Vec<i64>, Vec<SagaRecord>),
    ) -> Result<(), StoreError> {
        let kept = Self::keep(&records)?;
        let mut inner = self.lock();
        let positions = inner.commit(&records, kept)?;
        announce(positions, records);
        Ok(())
    }

    fn saga_records(
        &self,
        saga_id: SagaId,
        after_seq: u64,
    ) -> BoxFuture<'_, Result<Vec<SagaRecord>, StoreError>> {
        let inner = self.lock();
        let mut newest_first = Vec::new();
        let mut next = inner.sagas.get(&saga_id).map(|saga| saga.last);
        while let Some(i) = next {
            let kept = &inner.log[i];
            if kept.seq > after_seq {
                newest_first.push(kept);
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
        let inner = self.lock();
        let start = usize::try_from(after.max(0)).unwrap_or(0);
        let page = inner
            .log
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
        let last = self.lock().log.len() as i64;
        Box::pin(async move { Ok(last) })
    }

    fn saga(&self, saga_id: SagaId) -> BoxFuture<'_, Result<Option<SagaSummary>, StoreError>> {
        let summary = self
            .lock()
            .sagas
            .get(&saga_id)
            .and_then(|saga| saga.summary.clone());
        Box::pin(async move { Ok(summary) })
    }

    fn list_sagas(
        &self,
        status: Option<SagaStatus>,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<SagaSummary>, StoreError>> {
        let mut list: Vec<SagaSummary> = self
            .lock()
            .sagas
            .values()
            .filter_map(|saga| saga.summary.as_ref())
            .filter(|s| status.is_none_or(|st| s.status == st))
            .cloned()
            .collect();
        list.sort_by(|a, b| {
            b.started_at_ms
                .cmp(&a.started_at_ms)
                .then(a.saga_id.cmp(&b.saga_id))
        });
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
        let mut inner = self.lock();
        let mut claimed = Vec::new();
        for (id, saga) in inner.sagas.iter_mut() {
            let Some(s) = &saga.summary else { continue };
            let free = saga.holder.as_deref().is_none_or(|h| h == owner) || saga.lease_end < now;
            if !s.status.is_finished() && free {
                saga.holder = Some(owner.to_string());
                saga.lease_end = until;
                claimed.push(*id);
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

    fn record(
        saga_id: SagaId,
        seq: u64,
        kind: RecordKind,
        detail: serde_json::Value,
    ) -> SagaRecord {
        SagaRecord {
            saga_id,
            seq,
            kind,
            at_ms: 1_700_000_000_000 + seq as i64,
            step: (kind != RecordKind::SagaStarted).then(|| "reserve".to_string()),
            attempt: (kind != RecordKind::SagaStarted).then_some(1),
            detail,
        }
    }

    #[tokio::test]
    async fn records_read_back_as_written_and_a_taken_id_changes_nothing() {
        let store = MemoryStore::new();
        let id = SagaId::new_random();
        let first = vec![
            record(
                id,
                1,
                RecordKind::SagaStarted,
                json!({ "saga": "buy", "input": { "n": [1, 2.5, null] } }),
            ),
            record(
                id,
                2,
                RecordKind::StepStarted,
                json!({ "timeout_ms": 5000 }),
            ),
        ];
        let mut announced = Vec::new();
        let mut announce = |positions: Vec<i64>, records: Vec<SagaRecord>| {
            announced.extend(positions.into_iter().zip(records));
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
            RecordKind::StepSucceeded,
            json!({ "output": "é\"\n" }),
        )];
        assert_eq!(store.append(&second).await, Ok(vec![3]));

        let all: Vec<SagaRecord> = first.iter().chain(&second).cloned().collect();
        assert_eq!(store.saga_records(id, 0).await, Ok(all.clone()));
        assert_eq!(store.saga_records(id, 2).await, Ok(all[2..].to_vec()));
        let page = store.records_after(1, 10).await.expect("read");
        assert_eq!(page.iter().map(|c| c.position).collect::<Vec<_>>(), [2, 3]);
        assert_eq!(page[1].record, all[2]);

        // Starting the same saga again fails as a whole: the other saga in the batch is not kept.
        let other = SagaId::new_random();
        let again = [
            record(other, 1, RecordKind::SagaStarted, json!({ "saga": "buy" })),
            record(id, 1, RecordKind::SagaStarted, json!({ "saga": "buy" })),
        ];
        let refused = store.append_in_place(again.to_vec(), &mut |_, _| panic!("announced"));
        assert_eq!(refused, Err(StoreError::DuplicateSaga(id)));
        assert_eq!(store.last_position().await, Ok(3));
        assert_eq!(store.saga(other).await, Ok(None));
    }

    /// Appended in the sagas' own tasks (no group commit), from many at once: every saga's
    /// records are announced once each, in log order, and match what the log holds.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sagas_appending_in_place_announce_everything_in_log_order() {
        let engine = Engine::new(MemoryStore::new());
        let steps = (0..3)
            .map(|i| Step::new(&format!("s{i}")).action(move |_| async move { Ok(i) }))
            .collect();
        engine.register(SagaDefinition::new("three", steps).expect("valid"));
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
}
