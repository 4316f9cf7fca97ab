//! A saga's state, as derived from its log. The executor never keeps state the log does not
//! hold: it appends a record and applies it here, and recovery applies the same records in the
//! same way. So "where was it?" has exactly one answer, before and after a crash.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use crate::definition::SagaDefinition;
use crate::error::EngineError;
use crate::record::{RecordKind, SagaRecord, SagaStatus, StepOutcome};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ActionOutcome {
    NotStarted,
    /// Started and not yet answered (or answered with a retryable error).
    InFlight,
    Succeeded,
    /// Refused by the participant: nothing was applied, nothing to compensate.
    Failed,
    /// Given up on without knowing whether it was applied: compensated like a success.
    Unknown,
}

#[derive(Debug, Clone)]
pub(crate) struct StepProgress {
    pub last_attempt: u32,
    /// Attempts that failed retryably; what the retry budget is measured against.
    pub failures: u32,
    /// Some attempt timed out, panicked or was cut off by a crash: it may have been applied.
    pub maybe_applied: bool,
    pub outcome: ActionOutcome,
    pub compensation_last_attempt: u32,
    pub compensation_failures: u32,
    pub compensated: bool,
}

impl StepProgress {
    fn new() -> Self {
        StepProgress {
            last_attempt: 0,
            failures: 0,
            maybe_applied: false,
            outcome: ActionOutcome::NotStarted,
            compensation_last_attempt: 0,
            compensation_failures: 0,
            compensated: false,
        }
    }

    /// Whether unwinding must run this step's compensation. A step that never started, or
    /// that was cleanly refused, is never compensated.
    pub fn needs_compensation(&self) -> bool {
        matches!(
            self.outcome,
            ActionOutcome::Succeeded | ActionOutcome::Unknown
        ) && !self.compensated
    }
}

/// What the executor should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NextMove {
    RunAction { step: usize, attempt: u32 },
    Compensate { step: usize, attempt: u32 },
    Finish(SagaStatus),
    Done(SagaStatus),
}

#[derive(Debug, Clone)]
pub(crate) struct SagaProgress {
    pub input: Arc<Value>,
    pub next_seq: u64,
    pub steps: Vec<StepProgress>,
    /// Shared with the step contexts handed out (cloned only if one outlives its step).
    pub outputs: Arc<BTreeMap<String, Value>>,
    /// Steps that completed, or ended with an unknown outcome, in the order they did so:
    /// unwinding walks it backwards.
    pub completion_order: Vec<usize>,
    pub unwinding: bool,
    pub finished: Option<SagaStatus>,
    /// How many times a person resumed the saga after it was stuck.
    pub resumed: u32,
}

impl SagaProgress {
    pub fn new(definition: &SagaDefinition) -> Self {
        SagaProgress {
            input: Arc::new(Value::Null),
            next_seq: 1,
            steps: vec![StepProgress::new(); definition.steps.len()],
            outputs: Arc::default(),
            completion_order: Vec::new(),
            unwinding: false,
            finished: None,
            resumed: 0,
        }
    }

    /// Rebuild a saga's state from its whole log, as after a restart.
    pub fn replay(
        definition: &SagaDefinition,
        records: &[SagaRecord],
    ) -> Result<Self, EngineError> {
        let mut progress = SagaProgress::new(definition);
        for r in records {
            progress.apply(definition, r)?;
        }
        // Whatever was running when the process died may have been applied.
        for step in &mut progress.steps {
            if step.outcome == ActionOutcome::InFlight {
                step.maybe_applied = true;
            }
        }
        Ok(progress)
    }

    pub fn apply(
        &mut self,
        definition: &SagaDefinition,
        r: &SagaRecord,
    ) -> Result<(), EngineError> {
        if r.seq != self.next_seq {
            return Err(EngineError::CorruptLog(format!(
                "saga {} record {} follows {}",
                r.saga_id,
                r.seq,
                self.next_seq - 1
            )));
        }
        self.next_seq += 1;
        let step_index = match &r.step {
            Some(name) => Some(definition.step_index(name).ok_or_else(|| {
                EngineError::CorruptLog(format!("saga {} logs unknown step {name}", r.saga_id))
            })?),
            None => None,
        };
        let attempt = r.attempt.unwrap_or(0);
        let step = || {
            step_index.ok_or_else(|| {
                EngineError::CorruptLog(format!(
                    "saga {} {} record without a step",
                    r.saga_id, r.kind
                ))
            })
        };
        match &r.kind {
            RecordKind::SagaStarted { input, .. } => {
                self.input = Arc::new(input.clone());
            }
            RecordKind::StepStarted { .. } => {
                let s = &mut self.steps[step()?];
                s.last_attempt = attempt;
                s.outcome = ActionOutcome::InFlight;
            }
            RecordKind::StepRetrying {
                outcome_unknown, ..
            } => {
                let s = &mut self.steps[step()?];
                s.failures += 1;
                s.maybe_applied |= *outcome_unknown;
            }
            RecordKind::StepSucceeded { output, .. } => {
                let i = step()?;
                self.steps[i].outcome = ActionOutcome::Succeeded;
                self.completion_order.push(i);
                Arc::make_mut(&mut self.outputs)
                    .insert(definition.steps[i].name.to_string(), output.clone());
            }
            RecordKind::StepFailed { outcome, .. } => {
                let i = step()?;
                let unknown = *outcome == StepOutcome::Unknown;
                let s = &mut self.steps[i];
                if unknown || s.maybe_applied {
                    s.outcome = ActionOutcome::Unknown;
                    self.completion_order.push(i);
                } else {
                    s.outcome = ActionOutcome::Failed;
                }
                self.unwinding = true;
            }
            RecordKind::CompensationStarted {} => {
                let s = &mut self.steps[step()?];
                s.compensation_last_attempt = attempt;
                self.unwinding = true;
            }
            RecordKind::CompensationFailed { .. } => {
                self.steps[step()?].compensation_failures += 1;
            }
            RecordKind::CompensationSucceeded { .. } => {
                self.steps[step()?].compensated = true;
            }
            RecordKind::SagaCompleted {} => self.finished = Some(SagaStatus::Completed),
            RecordKind::SagaCompensated {} => self.finished = Some(SagaStatus::Compensated),
            RecordKind::SagaStuck { .. } => self.finished = Some(SagaStatus::Stuck),
            RecordKind::SagaResumed {} => {
                // Only a stuck saga is resumed, and a stuck saga was unwinding: it unwinds on,
                // every compensation left with a fresh budget of attempts.
                self.finished = None;
                self.unwinding = true;
                self.resumed += 1;
                for s in &mut self.steps {
                    s.compensation_failures = 0;
                }
            }
        }
        Ok(())
    }

    pub fn next_move(&self) -> NextMove {
        if let Some(status) = self.finished {
            return NextMove::Done(status);
        }
        if !self.unwinding {
            return match self
                .steps
                .iter()
                .position(|s| s.outcome != ActionOutcome::Succeeded)
            {
                Some(i) => NextMove::RunAction {
                    step: i,
                    attempt: self.steps[i].last_attempt + 1,
                },
                None => NextMove::Finish(SagaStatus::Completed),
            };
        }
        match self
            .completion_order
            .iter()
            .rev()
            .find(|&&i| self.steps[i].needs_compensation())
        {
            Some(&i) => NextMove::Compensate {
                step: i,
                attempt: self.steps[i].compensation_last_attempt + 1,
            },
            None => NextMove::Finish(SagaStatus::Compensated),
        }
    }
}
