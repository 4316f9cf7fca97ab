//! Group commit: every saga hands its records to one writer task, which writes whatever has
//! queued up in a single transaction, and only then announces them.
//!
//! This is what makes durability affordable: with a thousand sagas in flight, one fsync covers
//! hundreds of records instead of one each. It is also the one place where "log before
//! announce" is enforced: records reach the broadcast channel only after `append` returned Ok.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{broadcast, mpsc, oneshot};

use crate::record::{RecordKind, SagaRecord};
use crate::store::{Committed, SagaStore, StoreError};

/// Most records written in one transaction; bounds a commit's latency under a flood.
const MAX_BATCH_RECORDS: usize = 4096;

struct AppendRequest {
    records: Vec<SagaRecord>,
    done: oneshot::Sender<Result<(), StoreError>>,
}

/// Counters for benchmarks and `/metrics`.
#[derive(Debug, Default)]
pub struct LogStats {
    pub commits: AtomicU64,
    pub records: AtomicU64,
}

#[derive(Clone)]
pub(crate) struct LogWriter {
    tx: mpsc::Sender<AppendRequest>,
}

impl LogWriter {
    pub(crate) fn spawn(
        store: Arc<dyn SagaStore>,
        events: broadcast::Sender<Arc<Committed>>,
        stats: Arc<LogStats>,
    ) -> Self {
        let (tx, rx) = mpsc::channel(8192);
        tokio::spawn(run(store, rx, events, stats));
        LogWriter { tx }
    }

    /// Write `records` durably; returns once they are committed (and announced).
    pub(crate) async fn append(&self, records: Vec<SagaRecord>) -> Result<(), StoreError> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(AppendRequest { records, done })
            .await
            .map_err(|_| StoreError::Database("the saga log writer has stopped".into()))?;
        wait.await
            .map_err(|_| StoreError::Database("the saga log writer has stopped".into()))?
    }
}

async fn run(
    store: Arc<dyn SagaStore>,
    mut rx: mpsc::Receiver<AppendRequest>,
    events: broadcast::Sender<Arc<Committed>>,
    stats: Arc<LogStats>,
) {
    let mut group: Vec<AppendRequest> = Vec::new();
    let mut batch: Vec<SagaRecord> = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut size = first.records.len();
        group.push(first);
        while size < MAX_BATCH_RECORDS {
            match rx.try_recv() {
                Ok(req) => {
                    size += req.records.len();
                    group.push(req);
                }
                Err(_) => break,
            }
        }
        commit_group(&*store, &mut group, &mut batch, &events, &stats).await;
    }
}

/// Commit one group. A duplicate saga id fails only the request that tried to create it: the
/// transaction rolled back, so the rest is retried without it.
async fn commit_group(
    store: &dyn SagaStore,
    group: &mut Vec<AppendRequest>,
    batch: &mut Vec<SagaRecord>,
    events: &broadcast::Sender<Arc<Committed>>,
    stats: &LogStats,
) {
    loop {
        if group.is_empty() {
            return;
        }
        batch.clear();
        for req in group.iter() {
            batch.extend(req.records.iter().cloned());
        }
        match store.append(batch).await {
            Ok(positions) => {
                stats.commits.fetch_add(1, Ordering::Relaxed);
                stats
                    .records
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                for (position, record) in positions.into_iter().zip(batch.drain(..)) {
                    // No receiver is fine: nobody is watching.
                    let _ = events.send(Arc::new(Committed { position, record }));
                }
                for req in group.drain(..) {
                    let _ = req.done.send(Ok(()));
                }
                return;
            }
            Err(StoreError::DuplicateSaga(id)) => {
                // Drop the last request creating `id`: if two in this group race for the same
                // id, the first one wins on the retry; if it existed before, the next round
                // drops the other.
                let culprit = group.iter().rposition(|req| {
                    req.records
                        .iter()
                        .any(|r| r.saga_id == id && r.kind == RecordKind::SagaStarted)
                });
                match culprit {
                    Some(i) => {
                        let req = group.remove(i);
                        let _ = req.done.send(Err(StoreError::DuplicateSaga(id)));
                    }
                    None => {
                        for req in group.drain(..) {
                            let _ = req.done.send(Err(StoreError::DuplicateSaga(id)));
                        }
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, records = batch.len(), "saga log commit failed");
                for req in group.drain(..) {
                    let _ = req.done.send(Err(e.clone()));
                }
                return;
            }
        }
    }
}
