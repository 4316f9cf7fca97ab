//! A store in memory: nothing survives the process. For tests, examples and for measuring the
//! executor without a disk (the way steno's `InMemorySecStore` is used).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use super::{
    Committed, SagaStore, SagaSummary, StoreError, SummaryChange, lease_until, summary_change,
};
use crate::definition::BoxFuture;
use crate::record::{SagaId, SagaRecord, SagaStatus, now_ms};

#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    log: Vec<Committed>,
    by_saga: HashMap<SagaId, Vec<usize>>,
    sagas: HashMap<SagaId, (SagaSummary, Option<String>, i64)>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl SagaStore for MemoryStore {
    fn append<'a>(
        &'a self,
        records: &'a [SagaRecord],
    ) -> BoxFuture<'a, Result<Vec<i64>, StoreError>> {
        let result = (|| {
            let mut inner = self.lock();
            // All or nothing, like a transaction: check before changing anything.
            for r in records {
                if matches!(summary_change(r), Some(SummaryChange::Create { .. }))
                    && inner.sagas.contains_key(&r.saga_id)
                {
                    return Err(StoreError::DuplicateSaga(r.saga_id));
                }
            }
            let mut positions = Vec::with_capacity(records.len());
            for r in records {
                match summary_change(r) {
                    Some(SummaryChange::Create { definition }) => {
                        let summary = SagaSummary {
                            saga_id: r.saga_id,
                            definition: definition.to_string(),
                            status: SagaStatus::Running,
                            started_at_ms: r.at_ms,
                            finished_at_ms: None,
                        };
                        inner.sagas.insert(r.saga_id, (summary, None, 0));
                    }
                    Some(SummaryChange::Status(status)) => {
                        if let Some((s, _, _)) = inner.sagas.get_mut(&r.saga_id) {
                            s.status = status;
                            s.finished_at_ms = status.is_finished().then_some(r.at_ms);
                        }
                    }
                    None => {}
                }
                let position = inner.log.len() as i64 + 1;
                let index = inner.log.len();
                inner.log.push(Committed {
                    position,
                    record: r.clone(),
                });
                inner.by_saga.entry(r.saga_id).or_default().push(index);
                positions.push(position);
            }
            Ok(positions)
        })();
        Box::pin(async move { result })
    }

    fn saga_records(
        &self,
        saga_id: SagaId,
        after_seq: u64,
    ) -> BoxFuture<'_, Result<Vec<SagaRecord>, StoreError>> {
        let inner = self.lock();
        let records = inner
            .by_saga
            .get(&saga_id)
            .map(|ix| {
                ix.iter()
                    .map(|&i| inner.log[i].record.clone())
                    .filter(|r| r.seq > after_seq)
                    .collect()
            })
            .unwrap_or_default();
        Box::pin(async move { Ok(records) })
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
            .skip(start)
            .take(limit as usize)
            .cloned()
            .collect();
        Box::pin(async move { Ok(page) })
    }

    fn last_position(&self) -> BoxFuture<'_, Result<i64, StoreError>> {
        let last = self.lock().log.len() as i64;
        Box::pin(async move { Ok(last) })
    }

    fn saga(&self, saga_id: SagaId) -> BoxFuture<'_, Result<Option<SagaSummary>, StoreError>> {
        let summary = self.lock().sagas.get(&saga_id).map(|(s, _, _)| s.clone());
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
            .map(|(s, _, _)| s.clone())
            .filter(|s| status.is_none_or(|st| s.status == st))
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
        for (id, (s, holder, lease_end)) in inner.sagas.iter_mut() {
            let free = holder.as_deref().is_none_or(|h| h == owner) || *lease_end < now;
            if !s.status.is_finished() && free {
                *holder = Some(owner.to_string());
                *lease_end = until;
                claimed.push(*id);
            }
        }
        Box::pin(async move { Ok(claimed) })
    }
}
