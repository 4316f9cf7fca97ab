//! Driving one saga: ask [`SagaProgress`] for the next move, log it, do it, log the outcome.
//!
//! The rules of DESIGN.md §2 live here. Each action or compensation runs only after its
//! `*_started` record is durable, so a step with no such record was never attempted and is
//! never compensated. Outcomes are buffered and committed together with the next `*_started`
//! (or the terminal record): a successful 4-step saga costs 5 commits, yet no step starts
//! before the previous one is durably logged as done.

use std::panic::AssertUnwindSafe;
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use serde_json::Value;
use tokio::sync::oneshot;

use crate::definition::{SagaDefinition, StepContext, StepError};
use crate::error::EngineError;
use crate::log_writer::LogWriter;
use crate::progress::{NextMove, SagaProgress};
use crate::record::{RecordKind, SagaId, SagaRecord, SagaStatus, StepOutcome, now_ms};

pub(crate) struct SagaRun {
    pub id: SagaId,
    pub definition: Arc<SagaDefinition>,
    pub progress: SagaProgress,
    pending: Vec<SagaRecord>,
    writer: Arc<LogWriter>,
    /// The lease epoch this node holds the saga under: on every record it writes, so the store
    /// refuses them once another node has taken the saga over.
    epoch: u64,
    /// Told the result of the first commit, for `Engine::start` to return only once the saga
    /// is durably on record.
    first_commit: Option<oneshot::Sender<Result<(), EngineError>>>,
}

/// How an attempt ended, whatever the step's code did.
enum Attempt<T> {
    Done(T),
    Refused(String),
    Failed {
        error: String,
        outcome_unknown: bool,
    },
}

impl SagaRun {
    pub fn new(
        id: SagaId,
        definition: Arc<SagaDefinition>,
        progress: SagaProgress,
        writer: Arc<LogWriter>,
        epoch: u64,
    ) -> Self {
        SagaRun {
            id,
            definition,
            progress,
            pending: Vec::new(),
            writer,
            epoch,
            first_commit: None,
        }
    }

    /// Queue the `saga_started` record; it is committed with the first step's start.
    pub fn begin(
        &mut self,
        input: Value,
        first_commit: oneshot::Sender<Result<(), EngineError>>,
    ) -> Result<(), EngineError> {
        let kind = RecordKind::SagaStarted {
            saga: self.definition.name().to_string(),
            input,
        };
        self.record(kind, None, None)?;
        self.first_commit = Some(first_commit);
        Ok(())
    }

    fn record(
        &mut self,
        kind: RecordKind,
        step: Option<usize>,
        attempt: Option<u32>,
    ) -> Result<(), EngineError> {
        let record = SagaRecord {
            saga_id: self.id,
            seq: self.progress.next_seq,
            kind,
            at_ms: now_ms(),
            step: step.map(|i| self.definition.steps[i].name.to_string()),
            attempt,
            node: Some(self.writer.node()),
            epoch: Some(self.epoch),
        };
        self.progress.apply(&self.definition, &record)?;
        self.pending.push(record);
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), EngineError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let records = std::mem::take(&mut self.pending);
        let result = self.writer.append(records).await.map_err(EngineError::from);
        if let Some(tx) = self.first_commit.take() {
            let _ = tx.send(result.clone());
        }
        result
    }

    /// Log, durably, that a person resumed this stuck saga; [`drive`](Self::drive) then
    /// unwinds it on.
    pub async fn resume(&mut self) -> Result<(), EngineError> {
        self.record(RecordKind::SagaResumed {}, None, None)?;
        self.flush().await
    }

    /// Run the saga to a final state (or until the log cannot be written).
    pub async fn drive(mut self) -> Result<SagaStatus, EngineError> {
        loop {
            match self.progress.next_move() {
                NextMove::Done(status) => {
                    self.flush().await?;
                    return Ok(status);
                }
                NextMove::Finish(status) => {
                    let kind = match status {
                        SagaStatus::Completed => RecordKind::SagaCompleted {},
                        _ => RecordKind::SagaCompensated {},
                    };
                    self.record(kind, None, None)?;
                }
                NextMove::RunAction { step, attempt } => self.run_action(step, attempt).await?,
                NextMove::Compensate { step, attempt } => {
                    self.run_compensation(step, attempt).await?
                }
            }
        }
    }

    fn context(&self, step: usize, attempt: u32, phase: &str) -> StepContext {
        let name = &*self.definition.steps[step].name;
        StepContext {
            saga_id: self.id,
            idempotency_key: format!("{}:{}:{}", self.id, name, phase),
            step: name.to_string(),
            attempt,
            resumed: self.progress.resumed,
            input: self.progress.input.clone(),
            outputs: self.progress.outputs.clone(),
        }
    }

    async fn run_action(&mut self, i: usize, attempt: u32) -> Result<(), EngineError> {
        // The step is read through `self.definition` each time rather than through a clone of
        // the definition's `Arc`: that count is shared by the sagas on every thread, and each
        // increment would move its cache line between the cores.
        let timeout = self.definition.steps[i].timeout;
        let timeout_ms = timeout.as_millis() as u64;
        self.record(
            RecordKind::StepStarted { timeout_ms },
            Some(i),
            Some(attempt),
        )?;
        self.flush().await?;
        let started = Instant::now();
        let attempt_fut = (self.definition.steps[i].action)(self.context(i, attempt, "action"));
        let outcome = attempt_with_timeout(timeout, attempt_fut).await;
        let duration_ms = elapsed_ms(started);
        match outcome {
            Attempt::Done(output) => {
                let kind = RecordKind::StepSucceeded {
                    output,
                    duration_ms,
                };
                self.record(kind, Some(i), Some(attempt))?;
            }
            Attempt::Refused(error) => {
                let kind = RecordKind::StepFailed {
                    error,
                    outcome: outcome_of(self.progress.steps[i].maybe_applied),
                    retryable: false,
                    duration_ms,
                };
                self.record(kind, Some(i), Some(attempt))?;
            }
            Attempt::Failed {
                error,
                outcome_unknown,
            } => {
                let failures = self.progress.steps[i].failures + 1;
                let retry = &self.definition.steps[i].retry;
                if failures < retry.max_attempts {
                    let delay = retry.backoff(attempt + 1);
                    let kind = RecordKind::StepRetrying {
                        error,
                        outcome_unknown,
                        delay_ms: delay.as_millis() as u64,
                        duration_ms,
                    };
                    self.record(kind, Some(i), Some(attempt))?;
                    self.flush().await?;
                    tokio::time::sleep(delay).await;
                } else {
                    let unknown = outcome_unknown || self.progress.steps[i].maybe_applied;
                    let kind = RecordKind::StepFailed {
                        error,
                        outcome: outcome_of(unknown),
                        retryable: true,
                        duration_ms,
                    };
                    self.record(kind, Some(i), Some(attempt))?;
                }
            }
        }
        Ok(())
    }

    async fn run_compensation(&mut self, i: usize, attempt: u32) -> Result<(), EngineError> {
        // Through `self.definition`, not a clone of its `Arc`: see `run_action`.
        self.record(RecordKind::CompensationStarted {}, Some(i), Some(attempt))?;
        self.flush().await?;
        let started = Instant::now();
        let step = &self.definition.steps[i];
        let attempt_fut = (step.compensation)(self.context(i, attempt, "compensation"));
        let outcome = attempt_with_timeout(step.timeout, attempt_fut).await;
        let duration_ms = elapsed_ms(started);
        let error = match outcome {
            Attempt::Done(()) => {
                let kind = RecordKind::CompensationSucceeded { duration_ms };
                return self.record(kind, Some(i), Some(attempt));
            }
            Attempt::Refused(error) | Attempt::Failed { error, .. } => error,
        };
        let failures = self.progress.steps[i].compensation_failures + 1;
        let retry = &self.definition.steps[i].compensation_retry;
        if failures < retry.max_attempts {
            let delay = retry.backoff(attempt + 1);
            let kind = RecordKind::CompensationFailed {
                error,
                will_retry: true,
                delay_ms: Some(delay.as_millis() as u64),
                duration_ms,
            };
            self.record(kind, Some(i), Some(attempt))?;
            self.flush().await?;
            tokio::time::sleep(delay).await;
        } else {
            let kind = RecordKind::CompensationFailed {
                error: error.clone(),
                will_retry: false,
                delay_ms: None,
                duration_ms,
            };
            self.record(kind, Some(i), Some(attempt))?;
            let step = self.definition.steps[i].name.to_string();
            self.record(RecordKind::SagaStuck { step, error }, Some(i), None)?;
        }
        Ok(())
    }
}

/// Run one attempt under the step's timeout. A timeout or a panic leaves the outcome unknown.
///
/// The attempt is polled once before the timer is set: one that finishes at once (in memory,
/// or a cached answer) needs no timer. Setting one takes a count on the runtime's handle, an
/// atomic that every worker thread shares, so with sagas on both cores each step moved that
/// cache line between them twice.
async fn attempt_with_timeout<T>(
    timeout: Duration,
    fut: impl std::future::Future<Output = Result<T, StepError>>,
) -> Attempt<T> {
    // The deadline is taken before the first poll, so a first poll that works for a while
    // counts against the timeout as it always did.
    let deadline = tokio::time::Instant::now() + timeout;
    let mut attempt = pin!(AssertUnwindSafe(fut).catch_unwind());
    let at_once = std::future::poll_fn(|cx| Poll::Ready(attempt.as_mut().poll(cx))).await;
    let outcome = match at_once {
        Poll::Ready(done) => Ok(done),
        Poll::Pending => tokio::time::timeout_at(deadline, attempt).await,
    };
    match outcome {
        Ok(Ok(Ok(v))) => Attempt::Done(v),
        Ok(Ok(Err(StepError::Business(e)))) => Attempt::Refused(e),
        Ok(Ok(Err(StepError::Retryable(e)))) => Attempt::Failed {
            error: e,
            outcome_unknown: false,
        },
        Ok(Err(_panic)) => Attempt::Failed {
            error: "the step's code panicked".into(),
            outcome_unknown: true,
        },
        Err(_elapsed) => Attempt::Failed {
            error: format!("timed out after {} ms", timeout.as_millis()),
            outcome_unknown: true,
        },
    }
}

/// A failed action's outcome: unknown if it may have been applied.
fn outcome_of(maybe_applied: bool) -> StepOutcome {
    if maybe_applied {
        StepOutcome::Unknown
    } else {
        StepOutcome::Failed
    }
}

fn elapsed_ms(since: Instant) -> u64 {
    since.elapsed().as_millis() as u64
}
