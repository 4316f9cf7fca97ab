//! The [`Engine`]: registered definitions, the log writer, the running sagas, and the
//! broadcast of committed records that event subscribers read from.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{broadcast, oneshot};

use crate::announce::Announcer;
use crate::definition::SagaDefinition;
use crate::error::EngineError;
use crate::events::{self, EventStream, FeedStream};
use crate::executor::SagaRun;
use crate::log_writer::{Counters, LogStats, LogWriter};
use crate::progress::SagaProgress;
use crate::record::{RecordKind, SagaId, SagaStatus};
use crate::running::RunningSet;
use crate::store::{Claim, Claimed, Committed, SagaStore, StoreError};

/// What [`Engine::retry_stuck`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retried {
    /// The saga was stuck; it is unwinding again.
    Resumed,
    /// It had been resumed already: nothing more was done.
    Already,
}

/// How an engine behaves towards other nodes and subscribers; the defaults suit one node.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Names this process as a saga owner in the store (see [`SagaStore::claim`]).
    pub node_id: String,
    /// How many committed records the live broadcast buffers; a subscriber further behind
    /// catches up from the log instead, so this bounds memory, not correctness.
    pub event_buffer: usize,
    /// How long a claim on an unfinished saga lasts. A node that dies (or is killed) keeps its
    /// sagas this long; then any node takes them over ([`Engine::keep_recovering`]). Node ids
    /// are new in every process, so a restarted node waits out its predecessor's leases too.
    pub lease: Duration,
    /// How often [`Engine::keep_recovering`] renews the leases of the sagas this node holds
    /// (one statement for all of them), resuming any of them whose driver stopped. Well under
    /// `lease` (a third by default), so a node's leases do not lapse while it drives the
    /// sagas, even if one renewal fails or comes late.
    pub claim_every: Duration,
    /// How often [`Engine::keep_recovering`] looks for sagas nobody holds (a lease expired, or
    /// handed back by a node stopping) and takes them over: what bounds how long a saga waits,
    /// after its lease, for another node.
    pub takeover_every: Duration,
    /// How often a subscriber to one saga that this engine is not driving reads the log for
    /// its new records. While [`Engine::follow_others`] announces other nodes' records here (on
    /// a shared store) they arrive live, and the log is read only eight times less often, in
    /// case the announcer missed one.
    pub elsewhere_poll: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            node_id: format!("node-{}", uuid::Uuid::new_v4().simple()),
            event_buffer: 16_384,
            lease: Duration::from_secs(30),
            claim_every: Duration::from_secs(10),
            takeover_every: Duration::from_millis(500),
            elsewhere_poll: Duration::from_millis(250),
        }
    }
}

/// A saga executor bound to one store: it starts sagas, drives each to its end in a task of
/// its own, resumes the unfinished ones a previous process left in the log, and tells
/// subscribers about every record it commits.
///
/// Cheap to clone; all clones share the same sagas. Register every definition before
/// [`recover`](Self::recover)ing, so that sagas of every kind can be resumed.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub store: Arc<dyn SagaStore>,
    pub events: broadcast::Sender<Arc<Committed>>,
    /// Puts committed records on `events` in log order, this node's and (on a shared store)
    /// the other nodes'.
    announcer: Arc<Announcer>,
    /// One per engine, shared by its sagas: a saga holds one count on it, not one on each part.
    writer: Arc<LogWriter>,
    counters: Arc<Counters>,
    config: EngineConfig,
    definitions: RwLock<HashMap<String, Arc<SagaDefinition>>>,
    /// Shared with per-saga subscribers, which ask it whether the saga is driven here.
    running: Arc<RunningSet>,
    /// Unfinished sagas this engine cannot resume (no start record, an unknown definition, a
    /// log that does not replay): said once, then skipped by every later claim instead of being
    /// read and reported again every [`EngineConfig::claim_every`].
    left_alone: std::sync::Mutex<std::collections::HashSet<SagaId>>,
}

impl Engine {
    /// An engine on `store`, with the default [`EngineConfig`].
    pub fn new(store: impl SagaStore) -> Self {
        Self::with_config(store, EngineConfig::default())
    }

    /// An engine on `store`, configured.
    pub fn with_config(store: impl SagaStore, config: EngineConfig) -> Self {
        Self::with_shared_store(Arc::new(store), config)
    }

    /// An engine on a store chosen at run time (SQLite or PostgreSQL, say), or one the caller
    /// keeps a handle on too (to [`close`](SagaStore::close) it at shutdown).
    pub fn with_shared_store(store: Arc<dyn SagaStore>, config: EngineConfig) -> Self {
        let (events, _) = broadcast::channel(config.event_buffer.max(16));
        let counters = Arc::new(Counters::default());
        let announcer = Arc::new(Announcer::new(
            store.clone(),
            events.clone(),
            counters.clone(),
        ));
        let writer = Arc::new(LogWriter::new(
            store.clone(),
            announcer.clone(),
            counters.clone(),
            Arc::from(config.node_id.as_str()),
            config.lease,
        ));
        Engine {
            inner: Arc::new(Inner {
                store,
                events,
                announcer,
                writer,
                counters,
                config,
                definitions: RwLock::new(HashMap::new()),
                running: Arc::default(),
                left_alone: Default::default(),
            }),
        }
    }

    /// Make a saga kind known, for new sagas and for recovering old ones of that name. A
    /// definition registered again under the same name replaces the earlier one.
    pub fn register(&self, definition: SagaDefinition) {
        let mut defs = self
            .inner
            .definitions
            .write()
            .unwrap_or_else(|e| e.into_inner());
        defs.insert(definition.name().to_string(), Arc::new(definition));
    }

    fn definition(&self, name: &str) -> Result<Arc<SagaDefinition>, EngineError> {
        let defs = self
            .inner
            .definitions
            .read()
            .unwrap_or_else(|e| e.into_inner());
        defs.get(name)
            .cloned()
            .ok_or_else(|| EngineError::UnknownDefinition(name.to_string()))
    }

    /// Start a saga with a fresh id; returns once its start is durably logged, while the saga
    /// runs on in a task of its own. `input` is logged as JSON and read by the steps through
    /// [`StepContext::input`](crate::StepContext::input).
    pub async fn start<I: Serialize>(
        &self,
        definition: &str,
        input: &I,
    ) -> Result<SagaId, EngineError> {
        self.start_with_id(SagaId::new(), definition, input).await
    }

    /// Start a saga under a chosen id; [`EngineError::DuplicateSaga`] if it is taken, which
    /// makes "start this saga once" safe to retry.
    pub async fn start_with_id<I: Serialize>(
        &self,
        id: SagaId,
        definition: &str,
        input: &I,
    ) -> Result<SagaId, EngineError> {
        let definition = self.definition(definition)?;
        let input = serde_json::to_value(input).map_err(|e| EngineError::Input(e.to_string()))?;
        let progress = SagaProgress::new(&definition);
        let mut run = SagaRun::new(id, definition, progress, self.inner.writer.clone(), 1);
        let (tx, rx) = oneshot::channel();
        run.begin(input, tx)?;
        if !self.spawn(run) {
            return Err(EngineError::DuplicateSaga(id));
        }
        rx.await.map_err(|_| EngineError::ShuttingDown)??;
        Ok(id)
    }

    /// Start a saga and wait for its final state, without subscribing to its events: the
    /// cheapest way to run a saga to the end (used by benchmarks and batch jobs).
    pub async fn run<I: Serialize>(
        &self,
        definition: &str,
        input: &I,
    ) -> Result<(SagaId, SagaStatus), EngineError> {
        let id = SagaId::new();
        let definition = self.definition(definition)?;
        let input = serde_json::to_value(input).map_err(|e| EngineError::Input(e.to_string()))?;
        let progress = SagaProgress::new(&definition);
        let mut run = SagaRun::new(id, definition, progress, self.inner.writer.clone(), 1);
        let (tx, mut rx) = oneshot::channel();
        run.begin(input, tx)?;
        if !self.mark_running(id) {
            return Err(EngineError::DuplicateSaga(id));
        }
        // Driven here, in the caller's task: a spawned task and the wake-ups back cost more than
        // the rest of a short saga (measured: the hop between worker threads dominated a
        // four-step saga run one at a time). If the caller stops waiting, the rest of the saga
        // moves to a task of its own, so it finishes all the same.
        let status = Inline {
            inner: &self.inner,
            id,
            drive: Some(Box::pin(run.drive())),
        }
        .await;
        if let Ok(Err(e)) = rx.try_recv() {
            return Err(e);
        }
        Ok((id, status?))
    }

    /// Resume every unfinished saga in the store that this node can claim: forward if it was
    /// going forward, backward if it was compensating, with the same idempotency keys.
    /// Returns how many were resumed. Safe to call again; sagas already running here are
    /// skipped.
    ///
    /// On a [shared](SagaStore::shared) store the claim takes the sagas nobody holds, those
    /// whose lease expired, and this node's own, whose leases it so renews
    /// ([`Claim::OrphansAndMine`]). On a store only this process writes it takes every
    /// unfinished saga ([`Claim::Everything`]): whoever held them has stopped, so waiting out
    /// their leases would only delay them.
    pub async fn recover(&self) -> Result<usize, EngineError> {
        let which = if self.inner.store.shared() {
            Claim::OrphansAndMine
        } else {
            Claim::Everything
        };
        self.claim_and_resume(which).await
    }

    async fn claim_and_resume(&self, which: Claim) -> Result<usize, EngineError> {
        let claimed = self
            .inner
            .store
            .claim(&self.inner.config.node_id, self.inner.config.lease, which)
            .await?;
        let (mut resumed, mut failed) = (0, None);
        for Claimed { saga_id: id, epoch } in claimed {
            // Marked as driven here before its log is read, so there is one driver per saga: a
            // saga driven here right now is skipped, and one whose driver has just returned is
            // read with every record it wrote (a driver leaves the set only after its last
            // commit), so its replay is finished and nothing is written twice.
            if self.is_left_alone(id) || !self.mark_running(id) {
                continue;
            }
            match self.resumable(id, epoch).await {
                Ok(Some(run)) => {
                    let (records, unwinding) = (run.progress.next_seq - 1, run.progress.unwinding);
                    tracing::info!(saga_id = %id, records, unwinding, epoch, "resuming saga");
                    self.drive_marked(run, None);
                    resumed += 1;
                }
                Ok(None) => self.inner.running.remove(id),
                // Claimed, so the rest of the list must still be driven: this one is tried
                // again at the next renewal.
                Err(e) => {
                    self.inner.running.remove(id);
                    tracing::error!(saga_id = %id, error = %e, "reading a claimed saga's log failed");
                    failed.get_or_insert(e);
                }
            }
        }
        match failed {
            Some(e) if resumed == 0 => Err(e),
            _ => Ok(resumed),
        }
    }

    /// [`recover`](Self::recover) now, then, for as long as the returned future is polled (a
    /// server runs it until it stops): every [`EngineConfig::takeover_every`], take over the
    /// sagas nobody holds (a lease expired: their node died or was cut off; or handed back by
    /// a node stopping); every [`EngineConfig::claim_every`], renew this node's leases, in one
    /// statement, resuming any saga of its own whose driver stopped on a failed commit.
    ///
    /// Recovering only at start-up would leave orphans: a node that dies while others run is
    /// never restarted, and a process killed during its own recovery holds the leases it had
    /// just taken, which the next one must not take before they expire.
    pub async fn keep_recovering(&self) {
        let config = &self.inner.config;
        let shared = self.inner.store.shared();
        // A zero period would make `interval` panic; a claim a millisecond is plenty.
        let period = (config.takeover_every.min(config.claim_every)).max(Duration::from_millis(1));
        let mut every = tokio::time::interval(period);
        // Late (a slow claim, a busy log): claim once, not a burst of catch-up claims.
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        every.tick().await;
        let mut renewed = tokio::time::Instant::now();
        let mut claimed = self.recover().await;
        loop {
            match claimed {
                Ok(0) => {}
                Ok(n) => tracing::info!(resumed = n, "resumed unfinished sagas"),
                Err(e) => tracing::error!(error = %e, "claiming unfinished sagas failed"),
            }
            every.tick().await;
            claimed = if renewed.elapsed() >= config.claim_every {
                renewed = tokio::time::Instant::now();
                self.claim_and_resume(Claim::OrphansAndMine).await
            } else if shared {
                self.claim_and_resume(Claim::Orphans).await
            } else {
                // No other process writes this log: nobody else's sagas can be orphaned.
                Ok(0)
            };
        }
    }

    /// On a [shared](SagaStore::shared) store, announce the records other nodes commit to this
    /// node's subscribers, live and in log order ([`subscribe_all`](Self::subscribe_all) then
    /// carries every node's records, and [`subscribe`](Self::subscribe) follows a saga
    /// whichever node drives it), for as long as the returned future is polled. Returns at once
    /// on a store only this process writes. The log is read up to each commit's head as its
    /// notification arrives, and again whenever notifications may have been missed (a lost
    /// connection, or a second with none while the log moved on).
    pub async fn follow_others(&self) {
        use futures_util::StreamExt;
        let announcer = &self.inner.announcer;
        let mut watch = loop {
            match self.inner.store.watch().await {
                Ok(Some(watch)) => break watch,
                Ok(None) | Err(StoreError::Closed) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "listening for other nodes' commits failed; trying again");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        };
        if let Err(e) = announcer.start_at_head().await {
            tracing::warn!(error = %e, "reading the saga log's head failed");
        }
        announcer.set_following(true);
        let node = self.inner.config.node_id.as_str();
        loop {
            let caught_up = match tokio::time::timeout(Duration::from_secs(1), watch.next()).await {
                Ok(Some(Ok(Some(head)))) if head.node.as_deref() == Some(node) => Ok(()),
                Ok(Some(Ok(Some(head)))) => {
                    announcer
                        .remote((head.position > 0).then_some(head.position))
                        .await
                }
                // Missed some (a lost connection), or a quiet second: read to the end.
                Ok(Some(Ok(None))) | Err(_) => announcer.remote(None).await,
                Ok(Some(Err(StoreError::Closed))) | Ok(None) => break,
                Ok(Some(Err(e))) => {
                    tracing::warn!(error = %e, "listening for other nodes' commits failed");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    announcer.remote(None).await
                }
            };
            match caught_up {
                Ok(()) => {}
                Err(StoreError::Closed) => break,
                Err(e) => tracing::warn!(error = %e, "reading other nodes' records failed"),
            }
        }
        announcer.set_following(false);
    }

    /// Hand back every unfinished saga this node holds, so that other nodes take them over at
    /// once rather than after their leases: for a clean stop, after
    /// [`keep_recovering`](Self::keep_recovering) has stopped and before the store closes.
    /// The sagas' drivers here are fenced from then on: each stops at its next record, which
    /// the new owner writes instead. Returns how many were handed back.
    pub async fn hand_back(&self) -> Result<u64, EngineError> {
        Ok(self.inner.store.release(&self.inner.config.node_id).await?)
    }

    /// Resume a stuck saga: log that a person asked for it (`saga_resumed`), then unwind on
    /// from where it stopped, each compensation with a fresh budget of attempts and the same
    /// idempotency key, as Step Functions redrives an execution. Returns once the request is
    /// durably on record; the saga then runs on its own task (follow it with
    /// [`subscribe`](Self::subscribe)). Idempotent: a saga resumed already, whether it is
    /// still unwinding or has ended since, gives [`Retried::Already`] and nothing more is done.
    /// A saga that was never stuck is [`EngineError::NotStuck`]. A crash after the request
    /// is logged leaves the saga compensating, which recovery resumes like any other.
    pub async fn retry_stuck(&self, id: SagaId) -> Result<Retried, EngineError> {
        let summary = self
            .inner
            .store
            .saga(id)
            .await?
            .ok_or(EngineError::UnknownSaga(id))?;
        if summary.status != SagaStatus::Stuck {
            let records = self.inner.store.saga_records(id, 0).await?;
            let resumed = records
                .iter()
                .any(|r| matches!(r.kind, RecordKind::SagaResumed {}));
            return if resumed {
                Ok(Retried::Already)
            } else {
                Err(EngineError::NotStuck(id, summary.status))
            };
        }
        // Its driver leaves the running set just after logging `saga_stuck`, and a request
        // a moment ago may be resuming it: wait out the one, and the other is `Already`.
        let mut waited = Duration::ZERO;
        while !self.mark_running(id) {
            if waited >= Duration::from_secs(1) {
                return Ok(Retried::Already);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            waited += Duration::from_millis(10);
        }
        let run = async {
            // Taken from whichever node drove it last (it may be another, or gone): any node
            // serves a person's request. Two nodes asked at once both take it, the second
            // under a newer epoch, and only that one's `saga_resumed` is let in.
            let config = &self.inner.config;
            let Some(epoch) = (self.inner.store)
                .claim_stuck(id, &config.node_id, config.lease)
                .await?
            else {
                return Ok(None);
            };
            let records = self.inner.store.saga_records(id, 0).await?;
            let Some(RecordKind::SagaStarted { saga, .. }) = records.first().map(|r| &r.kind)
            else {
                return Err(EngineError::CorruptLog(format!(
                    "saga {id} has no saga_started record"
                )));
            };
            let definition = self.definition(saga)?;
            let progress = SagaProgress::replay(&definition, &records)?;
            if progress.finished != Some(SagaStatus::Stuck) {
                return Ok(None);
            }
            let mut run = SagaRun::new(id, definition, progress, self.inner.writer.clone(), epoch);
            match run.resume().await {
                Err(EngineError::Store(StoreError::Fenced(_))) => return Ok(None),
                resumed => resumed?,
            }
            Ok(Some(run))
        }
        .await;
        match run {
            Ok(Some(run)) => {
                tracing::info!(saga_id = %id, "stuck saga resumed by request");
                self.drive_marked(run, None);
                Ok(Retried::Resumed)
            }
            // Resumed (and finished) by another request between the two reads.
            Ok(None) => {
                self.inner.running.remove(id);
                Ok(Retried::Already)
            }
            Err(e) => {
                self.inner.running.remove(id);
                Err(e)
            }
        }
    }

    /// A claimed saga, replayed from its log and ready to drive; `None` if it is finished
    /// already or cannot be resumed (then it is left alone, and said so).
    async fn resumable(&self, id: SagaId, epoch: u64) -> Result<Option<SagaRun>, EngineError> {
        let records = self.inner.store.saga_records(id, 0).await?;
        let Some(RecordKind::SagaStarted { saga: name, .. }) = records.first().map(|r| &r.kind)
        else {
            tracing::error!(saga_id = %id, "unfinished saga has no saga_started record; left alone");
            self.leave_alone(id);
            return Ok(None);
        };
        let definition = match self.definition(name) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(saga_id = %id, error = %e, "cannot recover saga; left alone");
                self.leave_alone(id);
                return Ok(None);
            }
        };
        let progress = match SagaProgress::replay(&definition, &records) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(saga_id = %id, error = %e, "cannot replay saga log; left alone");
                self.leave_alone(id);
                return Ok(None);
            }
        };
        if progress.finished.is_some() {
            return Ok(None);
        }
        let node = self.inner.config.node_id.as_str();
        if let Some(from) = (records.last().and_then(|r| r.node.as_deref())).filter(|&n| n != node)
        {
            tracing::info!(saga_id = %id, from, epoch, "taking the saga over from another node");
        }
        Ok(Some(SagaRun::new(
            id,
            definition,
            progress,
            self.inner.writer.clone(),
            epoch,
        )))
    }

    fn leave_alone(&self, id: SagaId) {
        let mut left = self
            .inner
            .left_alone
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        left.insert(id);
    }

    fn is_left_alone(&self, id: SagaId) -> bool {
        let left = self
            .inner
            .left_alone
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        left.contains(&id)
    }

    /// Drive `run` on its own task, unless this process already drives that saga (then
    /// returns false and drops it): one saga, one driver, one writer of its records.
    fn spawn(&self, run: SagaRun) -> bool {
        self.spawn_with(run, None)
    }

    fn spawn_with(
        &self,
        run: SagaRun,
        done: Option<oneshot::Sender<Result<SagaStatus, EngineError>>>,
    ) -> bool {
        if !self.mark_running(run.id) {
            return false;
        }
        self.drive_marked(run, done);
        true
    }

    /// Drive `run`, already marked as running here, on its own task.
    fn drive_marked(
        &self,
        run: SagaRun,
        done: Option<oneshot::Sender<Result<SagaStatus, EngineError>>>,
    ) {
        let (inner, id) = (self.inner.clone(), run.id);
        tokio::spawn(async move {
            let result = run.drive().await;
            finished(&inner, id, &result);
            if let Some(done) = done {
                let _ = done.send(result);
            }
        });
    }

    /// Note a saga as driven by this engine; false if it already is.
    fn mark_running(&self, id: SagaId) -> bool {
        self.inner.running.insert(id)
    }

    /// One saga's records after `after_seq`: its history from the log, then live, ending
    /// after the terminal record. No gap and no duplicate, however far behind the reader is.
    /// While this engine is not driving the saga (another node on the same database is, or
    /// nobody is yet), the log is also read for its new records every
    /// [`EngineConfig::elsewhere_poll`] (eight times less often while following the others).
    pub fn subscribe(&self, saga_id: SagaId, after_seq: u64) -> EventStream {
        let live = self.inner.events.subscribe();
        let elsewhere = events::Elsewhere {
            every: self.inner.config.elsewhere_poll,
            running: self.inner.running.clone(),
            announcer: self.inner.announcer.clone(),
        };
        events::saga_stream(
            self.inner.store.clone(),
            live,
            saga_id,
            after_seq,
            elsewhere,
        )
    }

    /// Every saga's records: from `after_position` in the log if given, else from now on.
    pub fn subscribe_all(&self, after_position: Option<i64>) -> FeedStream {
        let live = self.inner.events.subscribe();
        // After subscribing: see `Counters::last_announced`.
        let now = self.inner.counters.last_announced();
        events::feed_stream(self.inner.store.clone(), live, after_position, now)
    }

    /// Wait until a saga reaches a final state, and say which: completed, compensated or stuck.
    pub async fn wait_finished(&self, saga_id: SagaId) -> Result<SagaStatus, EngineError> {
        use futures_util::StreamExt;
        let mut stream = self.subscribe(saga_id, 0);
        let mut status = None;
        while let Some(record) = stream.next().await {
            let record = record?;
            if record.kind.is_terminal() {
                status = record.kind.status_after();
            }
        }
        status.ok_or(EngineError::ShuttingDown)
    }

    /// The store the log is in, for reading it: a saga's records, the list of sagas.
    pub fn store(&self) -> &dyn SagaStore {
        &*self.inner.store
    }

    /// What this engine has committed so far; see [`LogStats`].
    pub fn log_stats(&self) -> LogStats {
        self.inner.counters.snapshot()
    }

    /// How many sagas this engine is driving right now (started here or resumed here, not
    /// yet finished): a gauge for metrics and for waiting until a node is idle.
    pub fn running(&self) -> usize {
        self.inner.running.len()
    }

    /// The name this engine claims sagas under ([`EngineConfig::node_id`]).
    pub fn node_id(&self) -> &str {
        &self.inner.config.node_id
    }
}

/// A saga's driver has returned: it is no longer running here.
fn finished(inner: &Inner, id: SagaId, result: &Result<SagaStatus, EngineError>) {
    inner.running.remove(id);
    match result {
        Ok(status) => tracing::debug!(saga_id = %id, %status, "saga finished"),
        Err(EngineError::DuplicateSaga(_)) => {}
        // Taken over by another node (this one was paused or cut off past its lease), or
        // handed back at shutdown: the new owner writes its records from here.
        Err(EngineError::Store(StoreError::Fenced(_))) => tracing::warn!(
            saga_id = %id,
            "stopped driving the saga: another node owns it now (its lease here had expired, or it was handed back)"
        ),
        // The log was closed under it (the server is stopping): nothing wrong with the saga.
        Err(EngineError::ShuttingDown | EngineError::Store(StoreError::Closed)) => {
            tracing::debug!(saga_id = %id, "saga left to recovery: shutting down")
        }
        // Whatever was logged stands; the saga resumes at the next claim (`keep_recovering`).
        Err(e) => tracing::error!(saga_id = %id, error = %e, "saga stopped before finishing"),
    }
}

type Driving = Pin<Box<dyn Future<Output = Result<SagaStatus, EngineError>> + Send>>;

/// A saga driven in its caller's task ([`Engine::run`]). Dropped before the end, it hands the
/// rest of the saga to a task of its own.
struct Inline<'a> {
    /// Borrowed, not a count of its own: the engine's count is shared by every saga on every
    /// thread. Cloned only to hand the saga over.
    inner: &'a Arc<Inner>,
    id: SagaId,
    drive: Option<Driving>,
}

impl Future for Inline<'_> {
    type Output = Result<SagaStatus, EngineError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(drive) = self.drive.as_mut() else {
            return Poll::Ready(Err(EngineError::ShuttingDown));
        };
        let result = ready!(drive.as_mut().poll(cx));
        self.drive = None;
        finished(self.inner, self.id, &result);
        Poll::Ready(result)
    }
}

impl Drop for Inline<'_> {
    fn drop(&mut self) {
        let Some(drive) = self.drive.take() else {
            return;
        };
        let (inner, id) = (self.inner.clone(), self.id);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    let result = drive.await;
                    finished(&inner, id, &result);
                });
            }
            // No runtime left (shutting down): the log holds what was done; recovery resumes it.
            Err(_) => finished(&inner, id, &Err(EngineError::ShuttingDown)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use serde_json::json;
    use tokio::sync::watch;

    use super::*;
    use crate::record::{RecordKind, SagaRecord, now_ms};
    use crate::{MemoryStore, Step, StepError};

    /// An engine on `store` with a short lease, knowing `gate`: one step that waits until
    /// `open` says so.
    fn engine(store: Arc<dyn SagaStore>, lease: Duration, open: watch::Receiver<bool>) -> Engine {
        let engine = Engine::with_shared_store(
            store,
            EngineConfig {
                lease,
                claim_every: lease / 4,
                ..EngineConfig::default()
            },
        );
        let step = Step::new("wait").action(move |_| {
            let mut open = open.clone();
            async move {
                let _ = open.wait_for(|&open| open).await;
                Ok::<_, StepError>(())
            }
        });
        engine.register(SagaDefinition::new("gate", vec![step]).expect("valid"));
        engine
    }

    /// A `gate` saga as a process that died right after starting it leaves it: logged, unowned.
    async fn left_behind(store: &dyn SagaStore) -> SagaId {
        let id = SagaId::new();
        let started = SagaRecord {
            saga_id: id,
            seq: 1,
            kind: RecordKind::SagaStarted {
                saga: "gate".into(),
                input: json!({}),
            },
            at_ms: now_ms(),
            step: None,
            attempt: None,
            node: None,
            epoch: None,
        };
        store
            .append(&[started], Duration::ZERO)
            .await
            .expect("appended");
        id
    }

    /// A process that claimed a saga and died still holds its lease when the next one starts:
    /// recovery at start-up skips it, and the claims that follow take it over once it expired.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_saga_whose_lease_expired_is_taken_over_while_the_engine_runs() {
        let store: Arc<dyn SagaStore> = Arc::new(MemoryStore::for_several_nodes());
        let id = left_behind(&*store).await;
        let dead = store
            .claim(
                "a-node-that-died",
                Duration::from_millis(300),
                Claim::Orphans,
            )
            .await;
        assert_eq!(
            dead,
            Ok(vec![Claimed {
                saga_id: id,
                epoch: 1
            }])
        );
        let (_, open) = watch::channel(true);
        let engine = engine(store, Duration::from_secs(1), open);
        let claims = tokio::spawn({
            let engine = engine.clone();
            async move { engine.keep_recovering().await }
        });
        let status = tokio::time::timeout(Duration::from_secs(10), engine.wait_finished(id)).await;
        claims.abort();
        assert_eq!(
            status.expect("taken over and finished"),
            Ok(SagaStatus::Completed)
        );
    }

    /// While a node drives a saga its claims renew the lease, so another node claiming all the
    /// while gets nothing, over several lease lengths; the saga ends driven by the one node.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_node_keeps_the_lease_of_a_saga_it_drives() {
        let lease = Duration::from_millis(200);
        let store: Arc<dyn SagaStore> = Arc::new(MemoryStore::for_several_nodes());
        let id = left_behind(&*store).await;
        let (release, open) = watch::channel(false);
        let engine = engine(store.clone(), lease, open);
        let claims = tokio::spawn({
            let engine = engine.clone();
            async move { engine.keep_recovering().await }
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        while engine.running() == 0 {
            assert!(Instant::now() < deadline, "the engine claims the saga");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let watching = Instant::now();
        while watching.elapsed() < 5 * lease {
            let taken = store.claim("another-node", lease, Claim::Orphans).await;
            assert_eq!(
                taken,
                Ok(vec![]),
                "a saga driven here was handed to another node"
            );
            tokio::time::sleep(lease / 8).await;
        }
        release.send_replace(true);
        let status = tokio::time::timeout(Duration::from_secs(10), engine.wait_finished(id)).await;
        claims.abort();
        assert_eq!(status.expect("finished"), Ok(SagaStatus::Completed));
        let records = engine.store().saga_records(id, 0).await.expect("read");
        let starts = records
            .iter()
            .filter(|r| matches!(r.kind, RecordKind::StepStarted { .. }))
            .count();
        assert_eq!(starts, 1, "one driver, one attempt");
    }
}
