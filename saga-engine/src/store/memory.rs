//! The reference store: everything in memory, behind one lock, nothing durable. It is what the
//! [`SagaStore`] contract means, written plainly (the durable stores pass the same suite), and
//! what tests, examples and a first try of the engine run on.

use std::cmp::Reverse;
use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use super::{
    Committed, SagaStore, SagaSummary, StoreError, SummaryChange, lease_until, summary_change,
};
use crate::definition::BoxFuture;
use crate::record::{SagaId, SagaRecord, SagaStatus, now_ms};

/// A saga log in memory: gone with the process. Use it for tests, examples and trying the
/// engine; [`Engine::recover`](crate::Engine::recover) finds nothing to resume on a new one.
#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// The whole log in commit order: the record at position `p` is `log[p - 1]`.
    log: Vec<SagaRecord>,
    sagas: HashMap<SagaId, Saga>,
    closed: bool,
}

/// What the durable stores keep in their `sagas` table, and where the saga's records are.
#[derive(Debug, Default)]
struct Saga {
    /// `None` for records of a saga that was never started: kept all the same, as a table of
    /// records would keep them.
    summary: Option<SagaSummary>,
    /// Indices into `State::log`, oldest first.
    records: Vec<usize>,
    owner: Option<String>,
    lease_until_ms: i64,
}

impl MemoryStore {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// The state, unless the store was closed. A panic while the lock was held cannot have
    /// left it half changed (an append checks everything before it changes anything).
    fn open(&self) -> Result<MutexGuard<'_, State>, StoreError> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.closed {
            return Err(StoreError::Closed);
        }
        Ok(state)
    }
}

/// The store's answer, already there: nothing here waits.
fn ready<'a, T: Send + 'a>(value: T) -> BoxFuture<'a, T> {
    Box::pin(std::future::ready(value))
}

impl State {
    fn append(&mut self, records: &[SagaRecord]) -> Result<Vec<i64>, StoreError> {
        // All or nothing, like a transaction: refuse the batch before changing anything.
        let mut starting = HashSet::new();
        for r in records {
            if let Some(SummaryChange::Create { .. }) = summary_change(r) {
                let taken = self
                    .sagas
                    .get(&r.saga_id)
                    .is_some_and(|s| s.summary.is_some());
                if taken || !starting.insert(r.saga_id) {
                    return Err(StoreError::DuplicateSaga(r.saga_id));
                }
            }
        }
        let mut positions = Vec::with_capacity(records.len());
        for r in records {
            let saga = self.sagas.entry(r.saga_id).or_default();
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
                    if let Some(summary) = &mut saga.summary {
                        summary.status = status;
                        summary.finished_at_ms = status.is_finished().then_some(r.at_ms);
                    }
                }
                None => {}
            }
            saga.records.push(self.log.len());
            self.log.push(r.clone());
            positions.push(self.log.len() as i64);
        }
        Ok(positions)
    }

    fn saga_records(&self, saga_id: SagaId, after_seq: u64) -> Vec<SagaRecord> {
        let indices = self.sagas.get(&saga_id).map(|s| s.records.as_slice());
        let mut records: Vec<SagaRecord> = (indices.unwrap_or_default().iter())
            .map(|&i| &self.log[i])
            .filter(|r| r.seq > after_seq)
            .cloned()
            .collect();
        records.sort_by_key(|r| r.seq);
        records
    }

    fn records_after(&self, after: i64, limit: u32) -> Vec<Committed> {
        let skip = usize::try_from(after).unwrap_or(0);
        (self.log.iter().zip(1..))
            .skip(skip)
            .take(limit as usize)
            .map(|(record, position)| Committed {
                position,
                record: record.clone(),
            })
            .collect()
    }

    fn list_sagas(
        &self,
        status: Option<SagaStatus>,
        before: Option<SagaId>,
        limit: u32,
    ) -> Vec<SagaSummary> {
        // The list's order, as a key that grows towards the older sagas.
        let key = |s: &SagaSummary| (Reverse(s.started_at_ms), Reverse(s.saga_id));
        let after = match before {
            None => None,
            Some(id) => match self.sagas.get(&id).and_then(|s| s.summary.as_ref()) {
                Some(cursor) => Some(key(cursor)),
                None => return Vec::new(),
            },
        };
        let mut list: Vec<SagaSummary> = (self.sagas.values())
            .filter_map(|saga| saga.summary.as_ref())
            .filter(|s| status.is_none_or(|wanted| s.status == wanted))
            .filter(|s| after.is_none_or(|after| key(s) > after))
            .cloned()
            .collect();
        list.sort_by_key(key);
        list.truncate(limit as usize);
        list
    }

    fn claim_unfinished(&mut self, owner: &str, lease: Duration) -> Vec<SagaId> {
        let (now, until) = (now_ms(), lease_until(lease));
        let mut claimed = Vec::new();
        for (&id, saga) in &mut self.sagas {
            let unfinished = (saga.summary.as_ref()).is_some_and(|s| !s.status.is_finished());
            let free =
                saga.owner.as_deref().is_none_or(|o| o == owner) || saga.lease_until_ms < now;
            if unfinished && free {
                saga.owner = Some(owner.to_string());
                saga.lease_until_ms = until;
                claimed.push(id);
            }
        }
        claimed
    }
}

impl SagaStore for MemoryStore {
    fn append<'a>(
        &'a self,
        records: &'a [SagaRecord],
    ) -> BoxFuture<'a, Result<Vec<i64>, StoreError>> {
        ready(self.open().and_then(|mut state| state.append(records)))
    }

    fn saga_records(
        &self,
        saga_id: SagaId,
        after_seq: u64,
    ) -> BoxFuture<'_, Result<Vec<SagaRecord>, StoreError>> {
        ready(
            self.open()
                .map(|state| state.saga_records(saga_id, after_seq)),
        )
    }

    fn sagas_records<'a>(
        &'a self,
        saga_ids: &'a [SagaId],
    ) -> BoxFuture<'a, Result<Vec<SagaRecord>, StoreError>> {
        ready(self.open().map(|state| {
            let mut seen = HashSet::new();
            (saga_ids.iter())
                .filter(|id| seen.insert(**id))
                .flat_map(|&id| state.saga_records(id, 0))
                .collect()
        }))
    }

    fn records_after(
        &self,
        after: i64,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<Committed>, StoreError>> {
        ready(self.open().map(|state| state.records_after(after, limit)))
    }

    fn last_position(&self) -> BoxFuture<'_, Result<i64, StoreError>> {
        ready(self.open().map(|state| state.log.len() as i64))
    }

    fn saga(&self, saga_id: SagaId) -> BoxFuture<'_, Result<Option<SagaSummary>, StoreError>> {
        ready(self.open().map(|state| {
            let saga = state.sagas.get(&saga_id);
            saga.and_then(|s| s.summary.clone())
        }))
    }

    fn list_sagas(
        &self,
        status: Option<SagaStatus>,
        before: Option<SagaId>,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<SagaSummary>, StoreError>> {
        ready(
            self.open()
                .map(|state| state.list_sagas(status, before, limit)),
        )
    }

    fn claim_unfinished(
        &self,
        owner: &str,
        lease: Duration,
    ) -> BoxFuture<'_, Result<Vec<SagaId>, StoreError>> {
        ready(
            self.open()
                .map(|mut state| state.claim_unfinished(owner, lease)),
        )
    }

    /// Later calls fail with [`StoreError::Closed`], as on the durable stores.
    fn close(&self) -> BoxFuture<'_, ()> {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).closed = true;
        ready(())
    }
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;
    use serde_json::json;

    use super::*;
    use crate::record::RecordKind;
    use crate::{Engine, SagaDefinition, Step};

    fn record(saga_id: SagaId, seq: u64, kind: RecordKind) -> SagaRecord {
        SagaRecord {
            saga_id,
            seq,
            kind,
            at_ms: 1_700_000_000_000 + seq as i64,
            step: None,
            attempt: None,
            node: Some("memory-test".into()),
        }
    }

    fn started(saga: &str) -> RecordKind {
        RecordKind::SagaStarted {
            saga: saga.into(),
            input: json!({ "n": [1, 2.5, null] }),
        }
    }

    /// Records come back as they went in, by saga and by position; a batch that starts a
    /// taken saga is refused as a whole.
    #[tokio::test]
    async fn records_come_back_as_written_and_a_duplicate_start_refuses_the_whole_batch() {
        let store = MemoryStore::new();
        let id = SagaId::new();
        let first = [
            record(id, 1, started("buy")),
            record(id, 2, RecordKind::StepStarted { timeout_ms: 5000 }),
        ];
        assert_eq!(store.append(&first).await, Ok(vec![1, 2]));
        let second = [record(id, 3, RecordKind::SagaCompleted {})];
        assert_eq!(store.append(&second).await, Ok(vec![3]));

        let all: Vec<SagaRecord> = first.iter().chain(&second).cloned().collect();
        assert_eq!(store.saga_records(id, 0).await, Ok(all.clone()));
        assert_eq!(store.saga_records(id, 2).await, Ok(all[2..].to_vec()));
        let page = store.records_after(1, 10).await.expect("read");
        assert_eq!(page.iter().map(|c| c.position).collect::<Vec<_>>(), [2, 3]);
        assert_eq!(page[1].record, all[2]);
        let summary = store.saga(id).await.expect("read").expect("listed");
        assert_eq!(summary.status, SagaStatus::Completed);
        assert_eq!(summary.finished_at_ms, Some(all[2].at_ms));

        let other = SagaId::new();
        let again = [
            record(other, 1, started("buy")),
            record(id, 1, started("buy")),
        ];
        assert_eq!(
            store.append(&again).await,
            Err(StoreError::DuplicateSaga(id))
        );
        let twice = [
            record(other, 1, started("buy")),
            record(other, 1, started("buy")),
        ];
        assert_eq!(
            store.append(&twice).await,
            Err(StoreError::DuplicateSaga(other))
        );
        assert_eq!(store.last_position().await, Ok(3));
        assert_eq!(store.saga(other).await, Ok(None));
    }

    /// Claims take unfinished sagas nobody holds, renew the claimer's own, and leave another
    /// node's live lease alone; a closed store refuses everything.
    #[tokio::test]
    async fn claims_respect_live_leases_and_a_closed_store_refuses() {
        let store = MemoryStore::new();
        let (running, done) = (SagaId::new(), SagaId::new());
        store
            .append(&[
                record(running, 1, started("s")),
                record(done, 1, started("s")),
                record(done, 2, RecordKind::SagaCompleted {}),
            ])
            .await
            .expect("appended");
        let lease = Duration::from_secs(60);
        assert_eq!(store.claim_unfinished("a", lease).await, Ok(vec![running]));
        assert_eq!(store.claim_unfinished("b", lease).await, Ok(vec![]));
        assert_eq!(store.claim_unfinished("a", lease).await, Ok(vec![running]));
        assert_eq!(
            store.claim_unfinished("a", Duration::ZERO).await,
            Ok(vec![running])
        );
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(store.claim_unfinished("b", lease).await, Ok(vec![running]));

        store.close().await;
        assert_eq!(store.last_position().await, Err(StoreError::Closed));
        assert_eq!(
            store.append(&[record(SagaId::new(), 1, started(""))]).await,
            Err(StoreError::Closed)
        );
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

    /// Many sagas at once through the engine: every record is announced once, in log order,
    /// and each saga's records, interleaved with the others' in the log, read back alone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_sagas_are_announced_in_log_order_and_read_back_per_saga() {
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
        let stored = engine.store().records_after(0, 10_000).await.expect("read");
        assert_eq!(seen, stored);
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
        assert_eq!(
            engine.log_stats().records,
            logged as u64,
            "every record counted"
        );
    }

    /// A subscriber that comes after sagas ran gets exactly what it asked for: "from now on"
    /// is from now on, and a finished saga's history is all there.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_late_subscriber_misses_nothing_and_gets_no_old_news() {
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

        // A saga that ended before anyone subscribed: its whole history, then the stream ends.
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
                ..record(id, 1, started("list"))
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
