//! The reference store: everything in memory, behind one lock, nothing durable. It is what the
//! [`SagaStore`] contract means, written plainly (the durable stores pass the same suite), and
//! what tests, examples and a first try of the engine run on.

use std::cmp::Reverse;
use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use super::{
    Claim, Claimed, Committed, SagaStore, SagaSummary, StoreError, SummaryChange, fence_allows,
    lease_until, summary_change,
};
use crate::definition::BoxFuture;
use crate::record::{SagaId, SagaRecord, SagaStatus, now_ms};

/// A saga log in memory: gone with the process. Use it for tests, examples and trying the
/// engine; [`Engine::recover`](crate::Engine::recover) finds nothing to resume on a new one.
#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<State>,
    /// Whether several engines share it, as several nodes share a database.
    several_nodes: bool,
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
    /// Grows by one each time the saga changes hands.
    epoch: i64,
}

impl MemoryStore {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty log that several engines in this process share, as several nodes share one
    /// database: [`shared`](SagaStore::shared), so an engine starting on it takes over only
    /// the sagas nobody holds, as it would on PostgreSQL. For trying leases and takeovers.
    pub fn for_several_nodes() -> Self {
        MemoryStore {
            several_nodes: true,
            ..Self::default()
        }
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
    fn append(&mut self, records: &[SagaRecord], lease: Duration) -> Result<Vec<i64>, StoreError> {
        // All or nothing, like a transaction: refuse the batch before changing anything.
        // Each saga's owner and epoch as the batch leaves them: a saga it starts is owned by
        // the starting record's node.
        let mut starting: HashMap<SagaId, (Option<&str>, i64)> = HashMap::new();
        for r in records {
            if let Some(SummaryChange::Create { .. }) = summary_change(r) {
                let taken = self
                    .sagas
                    .get(&r.saga_id)
                    .is_some_and(|s| s.summary.is_some());
                if taken || starting.contains_key(&r.saga_id) {
                    return Err(StoreError::DuplicateSaga(r.saga_id));
                }
                let owner = r.epoch.and(r.node.as_deref());
                starting.insert(r.saga_id, (owner, r.epoch.unwrap_or(0) as i64));
            }
            let (owner, epoch) = match starting.get(&r.saga_id) {
                Some(&held) => held,
                None => match self.sagas.get(&r.saga_id) {
                    Some(s) if s.summary.is_some() => (s.owner.as_deref(), s.epoch),
                    _ => (None, 0),
                },
            };
            if !fence_allows(r, owner, epoch) {
                return Err(StoreError::Fenced(r.saga_id));
            }
        }
        let until = lease_until(lease);
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
                    if let (Some(epoch), Some(node)) = (r.epoch, &r.node) {
                        saga.owner = Some(node.to_string());
                        saga.epoch = epoch as i64;
                        saga.lease_until_ms = until;
                    }
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

    fn claim(&mut self, owner: &str, lease: Duration, which: Claim) -> Vec<Claimed> {
        let (now, until) = (now_ms(), lease_until(lease));
        let mut claimed = Vec::new();
        for (&saga_id, saga) in &mut self.sagas {
            let unfinished = (saga.summary.as_ref()).is_some_and(|s| !s.status.is_finished());
            let mine = saga.owner.as_deref() == Some(owner);
            let orphan = saga.owner.is_none() || saga.lease_until_ms < now;
            let take = match which {
                Claim::Orphans => orphan && !mine,
                Claim::OrphansAndMine => orphan || mine,
                Claim::Everything => true,
            };
            if unfinished && take {
                if !mine {
                    saga.epoch += 1;
                }
                saga.owner = Some(owner.to_string());
                saga.lease_until_ms = until;
                claimed.push(Claimed {
                    saga_id,
                    epoch: saga.epoch as u64,
                });
            }
        }
        claimed
    }

    fn claim_stuck(&mut self, saga_id: SagaId, owner: &str, lease: Duration) -> Option<u64> {
        let saga = self.sagas.get_mut(&saga_id)?;
        if saga.summary.as_ref()?.status != SagaStatus::Stuck {
            return None;
        }
        saga.epoch += 1;
        saga.owner = Some(owner.to_string());
        saga.lease_until_ms = lease_until(lease);
        Some(saga.epoch as u64)
    }

    fn release(&mut self, owner: &str) -> u64 {
        let mut released = 0;
        for saga in self.sagas.values_mut() {
            let unfinished = (saga.summary.as_ref()).is_some_and(|s| !s.status.is_finished());
            if unfinished && saga.owner.as_deref() == Some(owner) {
                saga.owner = None;
                saga.lease_until_ms = 0;
                released += 1;
            }
        }
        released
    }
}

impl SagaStore for MemoryStore {
    fn append<'a>(
        &'a self,
        records: &'a [SagaRecord],
        lease: Duration,
    ) -> BoxFuture<'a, Result<Vec<i64>, StoreError>> {
        ready(
            self.open()
                .and_then(|mut state| state.append(records, lease)),
        )
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

    fn claim(
        &self,
        owner: &str,
        lease: Duration,
        which: Claim,
    ) -> BoxFuture<'_, Result<Vec<Claimed>, StoreError>> {
        ready(
            self.open()
                .map(|mut state| state.claim(owner, lease, which)),
        )
    }

    fn claim_stuck<'a>(
        &'a self,
        saga_id: SagaId,
        owner: &'a str,
        lease: Duration,
    ) -> BoxFuture<'a, Result<Option<u64>, StoreError>> {
        ready(
            self.open()
                .map(|mut state| state.claim_stuck(saga_id, owner, lease)),
        )
    }

    fn release<'a>(&'a self, owner: &'a str) -> BoxFuture<'a, Result<u64, StoreError>> {
        ready(self.open().map(|mut state| state.release(owner)))
    }

    fn shared(&self) -> bool {
        self.several_nodes
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
            epoch: None,
        }
    }

    /// Appended with no lease: the records carry none, so the sagas they start are unowned.
    const NO_LEASE: Duration = Duration::ZERO;

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
        assert_eq!(store.append(&first, NO_LEASE).await, Ok(vec![1, 2]));
        let second = [record(id, 3, RecordKind::SagaCompleted {})];
        assert_eq!(store.append(&second, NO_LEASE).await, Ok(vec![3]));

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
            store.append(&again, NO_LEASE).await,
            Err(StoreError::DuplicateSaga(id))
        );
        let twice = [
            record(other, 1, started("buy")),
            record(other, 1, started("buy")),
        ];
        assert_eq!(
            store.append(&twice, NO_LEASE).await,
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
            .append(
                &[
                    record(running, 1, started("s")),
                    record(done, 1, started("s")),
                    record(done, 2, RecordKind::SagaCompleted {}),
                ],
                NO_LEASE,
            )
            .await
            .expect("appended");
        let lease = Duration::from_secs(60);
        let held = |epoch| {
            Ok(vec![Claimed {
                saga_id: running,
                epoch,
            }])
        };
        let mine = Claim::OrphansAndMine;
        assert_eq!(store.claim("a", lease, mine).await, held(1));
        assert_eq!(store.claim("b", lease, mine).await, Ok(vec![]));
        assert_eq!(store.claim("a", lease, mine).await, held(1), "renewed");
        assert_eq!(store.claim("a", lease, Claim::Orphans).await, Ok(vec![]));
        assert_eq!(store.claim("a", Duration::ZERO, mine).await, held(1));
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(store.claim("b", lease, Claim::Orphans).await, held(2));
        assert_eq!(store.release("b").await, Ok(1));
        assert_eq!(store.claim("a", lease, Claim::Orphans).await, held(3));
        assert_eq!(store.claim("c", lease, Claim::Everything).await, held(4));

        store.close().await;
        assert_eq!(store.last_position().await, Err(StoreError::Closed));
        assert_eq!(
            store
                .append(&[record(SagaId::new(), 1, started(""))], NO_LEASE)
                .await,
            Err(StoreError::Closed)
        );
    }

    /// A record with an epoch goes in only while its node holds the saga at that epoch: the
    /// node that started it until another took it over, then only the new owner.
    #[tokio::test]
    async fn a_node_that_lost_a_saga_cannot_write_into_it() {
        let store = MemoryStore::new();
        let id = SagaId::new();
        let by = |node: &str, epoch: u64, seq: u64, kind: RecordKind| SagaRecord {
            node: Some(node.into()),
            epoch: Some(epoch),
            ..record(id, seq, kind)
        };
        let step = || RecordKind::StepStarted { timeout_ms: 5000 };
        let short = Duration::from_millis(1);
        store
            .append(&[by("a", 1, 1, started("s")), by("a", 1, 2, step())], short)
            .await
            .expect("a starts the saga, owning it");
        assert_eq!(
            store.append(&[by("b", 1, 3, step())], short).await,
            Err(StoreError::Fenced(id)),
            "b does not own it"
        );
        std::thread::sleep(Duration::from_millis(3));
        let taken = store
            .claim("b", Duration::from_secs(60), Claim::Orphans)
            .await;
        assert_eq!(
            taken,
            Ok(vec![Claimed {
                saga_id: id,
                epoch: 2
            }])
        );
        assert_eq!(
            store.append(&[by("a", 1, 3, step())], short).await,
            Err(StoreError::Fenced(id)),
            "a lost it when its lease expired"
        );
        assert_eq!(
            store.append(&[by("b", 2, 3, step())], short).await,
            Ok(vec![3])
        );
        let nodes: Vec<_> = (store.saga_records(id, 0).await.expect("read").iter())
            .map(|r| (r.node.as_deref().map(str::to_string), r.epoch))
            .collect();
        assert_eq!(
            nodes,
            [
                (Some("a".to_string()), Some(1)),
                (Some("a".to_string()), Some(1)),
                (Some("b".to_string()), Some(2)),
            ]
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
        store.append(&batch, NO_LEASE).await.unwrap();
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
