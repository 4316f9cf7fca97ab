//! Group commit: the records of every saga go through one queue, and whatever has queued up
//! while a commit was in progress is written by the next commit, in a single transaction, and
//! only then announced.
//!
//! This is what makes durability affordable: with a thousand sagas in flight, one fsync covers
//! hundreds of records instead of one each. There is no writer task: the first saga to find no
//! commit in progress becomes the *leader* and commits the queue itself, round after round,
//! until the queue is empty; the others just wait for their records' outcome. A saga running
//! alone so pays no task hop per commit, and a crowd still shares commits.
//!
//! It is also the one place where "log before announce" is enforced: records reach the
//! broadcast channel only after `append` returned Ok.

use std::ops::Range;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

use crate::announce::Announcer;
use crate::record::{RecordKind, SagaRecord};
use crate::store::{Committed, SagaStore, StoreError};

/// Most records written in one transaction; bounds a commit's latency under a flood.
const MAX_BATCH_RECORDS: usize = 4096;

/// How much this engine has written to its saga log, as [`Engine::log_stats`] reads it: a
/// snapshot, for metrics and for judging group commit (records per commit).
///
/// [`Engine::log_stats`]: crate::Engine::log_stats
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogStats {
    /// Log transactions committed by this engine since it was made.
    pub commits: u64,
    /// Records committed by this engine since it was made.
    pub records: u64,
}

/// What the log writer counts and remembers as it commits.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    commits: AtomicU64,
    records: AtomicU64,
    /// The position of the last record announced (0: none yet by this engine): what a
    /// subscriber "from now on" starts after. Moved before the records are sent, so one who
    /// subscribes and then reads it either receives a record or finds it counted as past.
    last_announced: AtomicI64,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> LogStats {
        LogStats {
            commits: self.commits.load(Ordering::Relaxed),
            records: self.records.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn last_announced(&self) -> i64 {
        self.last_announced.load(Ordering::SeqCst)
    }

    pub(crate) fn announced(&self, position: i64) {
        self.last_announced.fetch_max(position, Ordering::SeqCst);
    }
}

struct Waiter {
    /// Where this request's records sit in the batch being committed.
    range: Range<usize>,
    done: Option<oneshot::Sender<Result<(), StoreError>>>,
}

#[derive(Default)]
struct Queue {
    records: Vec<SagaRecord>,
    waiters: Vec<Waiter>,
    leader: bool,
}

#[derive(Clone)]
pub(crate) struct LogWriter {
    store: Arc<dyn SagaStore>,
    announcer: Arc<Announcer>,
    counters: Arc<Counters>,
    queue: Arc<Mutex<Queue>>,
    /// Written on every record: which node wrote it.
    node: Arc<str>,
    /// How long a saga started here is leased to this node before it must be renewed.
    lease: Duration,
}

impl LogWriter {
    pub(crate) fn new(
        store: Arc<dyn SagaStore>,
        announcer: Arc<Announcer>,
        counters: Arc<Counters>,
        node: Arc<str>,
        lease: Duration,
    ) -> Self {
        LogWriter {
            store,
            announcer,
            counters,
            queue: Arc::default(),
            node,
            lease,
        }
    }

    /// The node this writer writes for.
    pub(crate) fn node(&self) -> Arc<str> {
        self.node.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Write `records` durably; returns once they are committed (and announced).
    pub(crate) async fn append(&self, records: Vec<SagaRecord>) -> Result<(), StoreError> {
        let (done, wait) = oneshot::channel();
        let lead = {
            let mut q = self.lock();
            let start = q.records.len();
            q.records.extend(records);
            let range = start..q.records.len();
            q.waiters.push(Waiter {
                range,
                done: Some(done),
            });
            !std::mem::replace(&mut q.leader, true)
        };
        if lead {
            self.lead().await;
        }
        wait.await
            .map_err(|_| StoreError::Database("the saga log writer has stopped".into()))?
    }

    /// Count a commit: before anyone hears of it, so whoever sees a record committed or
    /// announced sees it counted.
    fn count(&self, records: usize) {
        self.counters.commits.fetch_add(1, Ordering::Relaxed);
        (self.counters.records).fetch_add(records as u64, Ordering::Relaxed);
    }

    /// Announce a commit's records, in order.
    async fn announce(&self, positions: &[i64], records: impl IntoIterator<Item = SagaRecord>) {
        let committed = (positions.iter().zip(records))
            .map(|(&position, record)| Committed { position, record })
            .collect();
        self.announcer.local(committed).await;
    }

    /// Commit one round as the saga that found no commit in progress, then hand over.
    async fn lead(&self) {
        // Runs on drop too: if this saga's task is cancelled mid-commit (runtime shutdown),
        // the queue must not be left without a leader.
        struct HandOver<'a>(&'a LogWriter);
        impl Drop for HandOver<'_> {
            fn drop(&mut self) {
                self.0.hand_over();
            }
        }
        let _hand_over = HandOver(self);
        let (mut records, mut waiters) = take_round(&mut self.lock());
        self.commit(&mut records, &mut waiters).await;
    }

    /// Step down if the queue is empty; otherwise a task of its own leads the next rounds, so
    /// no saga is held up committing the records of others.
    fn hand_over(&self) {
        let mut q = self.lock();
        if q.waiters.is_empty() {
            q.leader = false;
            return;
        }
        drop(q);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.lock().leader = false;
            return;
        };
        let next = self.clone();
        runtime.spawn(async move {
            loop {
                let (mut records, mut waiters) = {
                    let mut q = next.lock();
                    if q.waiters.is_empty() {
                        q.leader = false;
                        return;
                    }
                    take_round(&mut q)
                };
                next.commit(&mut records, &mut waiters).await;
            }
        });
    }

    /// Commit one round. A duplicate saga id fails only the request that tried to create it,
    /// and a fenced saga only the requests writing to it: the transaction rolled back, so the
    /// rest is retried without them.
    async fn commit(&self, records: &mut Vec<SagaRecord>, waiters: &mut Vec<Waiter>) {
        loop {
            if waiters.is_empty() {
                return;
            }
            match self.store.append(records, self.lease).await {
                Ok(positions) => {
                    self.count(positions.len());
                    // The waiters first: a saga's next step need not wait for the announcement
                    // (which, on a shared store, may read other nodes' records first).
                    for w in waiters.iter_mut() {
                        if let Some(done) = w.done.take() {
                            let _ = done.send(Ok(()));
                        }
                    }
                    self.announce(&positions, records.drain(..)).await;
                    return;
                }
                Err(StoreError::Fenced(id)) => {
                    // Every request writing to the saga this node lost (one driver per saga:
                    // one request, unless a stale driver is still about).
                    let mut i = 0;
                    while i < waiters.len() {
                        if records[waiters[i].range.clone()]
                            .iter()
                            .any(|r| r.saga_id == id)
                        {
                            remove_waiter(records, waiters, i, StoreError::Fenced(id));
                        } else {
                            i += 1;
                        }
                    }
                }
                Err(StoreError::DuplicateSaga(id)) => {
                    // Drop the last request creating `id`: if two in this round race for the
                    // same id the first wins on the retry; if it existed before, the next
                    // round drops the other.
                    let culprit = waiters.iter().rposition(|w| {
                        records[w.range.clone()].iter().any(|r| {
                            r.saga_id == id && matches!(r.kind, RecordKind::SagaStarted { .. })
                        })
                    });
                    let Some(i) = culprit else {
                        fail_all(waiters, StoreError::DuplicateSaga(id));
                        return;
                    };
                    remove_waiter(records, waiters, i, StoreError::DuplicateSaga(id));
                }
                Err(e) => {
                    // Closed: the server is stopping; its sagas are left to recovery.
                    if e != StoreError::Closed {
                        tracing::error!(error = %e, records = records.len(), "saga log commit failed");
                    }
                    fail_all(waiters, e);
                    return;
                }
            }
        }
    }
}

/// Take up to `MAX_BATCH_RECORDS` (whole requests, at least one) off the queue.
fn take_round(q: &mut Queue) -> (Vec<SagaRecord>, Vec<Waiter>) {
    if q.records.len() <= MAX_BATCH_RECORDS {
        return (
            std::mem::take(&mut q.records),
            std::mem::take(&mut q.waiters),
        );
    }
    let cut = q
        .waiters
        .iter()
        .position(|w| w.range.end > MAX_BATCH_RECORDS)
        .map_or(q.waiters.len(), |i| i.max(1));
    let taken: Vec<Waiter> = q.waiters.drain(..cut).collect();
    let end = taken.last().map_or(0, |w| w.range.end);
    let records: Vec<SagaRecord> = q.records.drain(..end).collect();
    for w in &mut q.waiters {
        w.range = w.range.start - end..w.range.end - end;
    }
    (records, taken)
}

/// Take the `i`-th request out of a round, telling it why; the others' records move up.
fn remove_waiter(
    records: &mut Vec<SagaRecord>,
    waiters: &mut Vec<Waiter>,
    i: usize,
    why: StoreError,
) {
    let removed = waiters.remove(i);
    if let Some(done) = removed.done {
        let _ = done.send(Err(why));
    }
    let (start, len) = (removed.range.start, removed.range.len());
    records.drain(removed.range);
    for w in waiters.iter_mut().filter(|w| w.range.start > start) {
        w.range = w.range.start - len..w.range.end - len;
    }
}

fn fail_all(waiters: &mut Vec<Waiter>, e: StoreError) {
    for w in waiters.drain(..) {
        if let Some(done) = w.done {
            let _ = done.send(Err(e.clone()));
        }
    }
}
