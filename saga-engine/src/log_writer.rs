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
//! A store that commits without waiting (in memory, see `SagaStore::commits_in_place`) has
//! nothing to share: each saga appends in its own task, the store announcing under its lock so
//! that announcements keep log order, and nobody is ever woken.
//!
//! It is also the one place where "log before announce" is enforced: records reach the
//! broadcast channel only after `append` returned Ok.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{broadcast, oneshot};

use crate::record::{RecordKind, SagaRecord};
use crate::sharded::Counter;
use crate::store::{Committed, SagaStore, StoreError};

/// Most records written in one transaction; bounds a commit's latency under a flood.
const MAX_BATCH_RECORDS: usize = 4096;

/// Counters for benchmarks and `/metrics`.
#[derive(Debug, Default)]
pub struct LogStats {
    commits: Counter,
    records: Counter,
    /// The position of the last record announced (0: none yet by this engine).
    pub last_announced: AtomicI64,
    /// Whether anyone has ever subscribed to the announcements. Until then nothing is built
    /// to announce, and the channel's own receiver count, which takes its lock, is not even
    /// asked: sagas on every thread commit, and a lock taken per commit moves its cache line
    /// between the cores. Set by a subscriber right after subscribing and before it reads
    /// `last_announced` or the store; an announcer reads it right after moving
    /// `last_announced` (both SeqCst), so either the announcer sees the subscriber, or the
    /// subscriber sees the records as already announced (and reads them as history).
    pub(crate) watched: AtomicBool,
}

impl LogStats {
    /// Log transactions committed by this engine.
    pub fn commits(&self) -> u64 {
        self.commits.get()
    }

    /// Records committed by this engine.
    pub fn records(&self) -> u64 {
        self.records.get()
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
    events: broadcast::Sender<Arc<Committed>>,
    stats: Arc<LogStats>,
    queue: Arc<Mutex<Queue>>,
}

impl LogWriter {
    pub(crate) fn new(
        store: Arc<dyn SagaStore>,
        events: broadcast::Sender<Arc<Committed>>,
        stats: Arc<LogStats>,
    ) -> Self {
        LogWriter {
            store,
            events,
            stats,
            queue: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Write `records` durably; returns once they are committed (and announced).
    pub(crate) async fn append(&self, records: Vec<SagaRecord>) -> Result<(), StoreError> {
        if self.store.commits_in_place() {
            return self
                .store
                .append_in_place(records, &mut |positions, records| {
                    self.count(positions.len());
                    self.announce(positions, || std::mem::take(records))
                });
        }
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

    /// Count a commit of `records` records, before announcing them: whoever sees a record
    /// announced sees it counted.
    fn count(&self, records: usize) {
        self.stats.commits.add(1);
        self.stats.records.add(records as u64);
    }

    /// Announce a commit's records, in order.
    ///
    /// `records` is called only if someone listens: otherwise the records stay where they are,
    /// to be freed by their owner (the memory store frees them after releasing its lock).
    fn announce<I: IntoIterator<Item = SagaRecord>>(
        &self,
        positions: &[i64],
        records: impl FnOnce() -> I,
    ) {
        // Noted before the announcements, so a subscriber from "now" that reads it after
        // subscribing misses nothing after it (see `events::follow`).
        if let Some(&last) = positions.last() {
            self.stats.last_announced.fetch_max(last, Ordering::SeqCst);
        }
        // Nobody watching: nothing to build. One who subscribes from now on reads
        // `last_announced`, already past these, and expects none of them live; one who follows
        // a saga reads its history from the store, which holds them.
        if !self.stats.watched.load(Ordering::SeqCst) || self.events.receiver_count() == 0 {
            return;
        }
        for (&position, record) in positions.iter().zip(records()) {
            // A receiver gone since is fine.
            let _ = self.events.send(Arc::new(Committed { position, record }));
        }
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

    /// Commit one round. A duplicate saga id fails only the request that tried to create it:
    /// the transaction rolled back, so the rest is retried without it.
    async fn commit(&self, records: &mut Vec<SagaRecord>, waiters: &mut Vec<Waiter>) {
        loop {
            if waiters.is_empty() {
                return;
            }
            match self.store.append(records).await {
                Ok(positions) => {
                    self.count(positions.len());
                    self.announce(&positions, || records.drain(..));
                    for w in waiters.iter_mut() {
                        if let Some(done) = w.done.take() {
                            let _ = done.send(Ok(()));
                        }
                    }
                    return;
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
                    let removed = waiters.remove(i);
                    if let Some(done) = removed.done {
                        let _ = done.send(Err(StoreError::DuplicateSaga(id)));
                    }
                    let (start, len) = (removed.range.start, removed.range.len());
                    records.drain(removed.range);
                    for w in waiters.iter_mut().filter(|w| w.range.start > start) {
                        w.range = w.range.start - len..w.range.end - len;
                    }
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

fn fail_all(waiters: &mut Vec<Waiter>, e: StoreError) {
    for w in waiters.drain(..) {
        if let Some(done) = w.done {
            let _ = done.send(Err(e.clone()));
        }
    }
}
