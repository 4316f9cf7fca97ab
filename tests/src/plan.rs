//! Fault plans: for each of the test saga's four steps, what its action and its compensation
//! do. A plan travels in the saga's input, so it survives a restart like the shop's faults do,
//! and [`FaultPlan::expected`] says what the saga must end as, without running it.

use std::sync::Arc;
use std::time::Duration;

use saga_engine::{RetryPolicy, SagaDefinition, SagaStatus, Step, StepContext, StepError};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::ledger::{Applied, Ledger};

/// The test saga's steps. Generic names: the engine knows nothing of shops.
pub const STEPS: [&str; 4] = ["first", "second", "third", "fourth"];

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ActionFault {
    #[default]
    None,
    /// Refused with a business error: nothing applied.
    Fail,
    /// Fails retryably on attempts `1..=n`, then succeeds.
    Transient(u32),
    /// Applies its effect and then never answers: the outcome is unknown to the engine.
    Timeout,
    /// Takes this many milliseconds on its first attempt (to kill a process mid-step).
    SlowOnce(u64),
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompensationFault {
    #[default]
    None,
    /// Fails on attempts `1..=n`, then succeeds.
    Transient(u32),
    /// Never succeeds.
    Fail,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepPlan {
    pub action: ActionFault,
    pub compensation: CompensationFault,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultPlan {
    pub steps: [StepPlan; 4],
}

/// Attempt limits and timeout of the test saga; short, so tests run fast.
pub const ACTION_ATTEMPTS: u32 = 3;
pub const COMPENSATION_ATTEMPTS: u32 = 4;

/// What a saga with a given plan must end as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    pub status: SagaStatus,
    /// Steps whose action takes effect, in order.
    pub applied: Vec<usize>,
    /// Steps whose compensation takes effect, in the order they must happen.
    pub compensated: Vec<usize>,
    /// Steps that must never be started.
    pub never_started: Vec<usize>,
}

impl FaultPlan {
    pub fn with(mut self, step: usize, action: ActionFault) -> Self {
        self.steps[step].action = action;
        self
    }

    pub fn with_compensation(mut self, step: usize, fault: CompensationFault) -> Self {
        self.steps[step].compensation = fault;
        self
    }

    pub fn expected(&self) -> Expected {
        self.expected_given(false)
    }

    /// What the saga must end as if the engine could not know whether the failing step's
    /// action took effect (a crash cut off its first attempt). Such a step is compensated too,
    /// first: DESIGN.md §2 counts an unknown outcome as possibly applied.
    pub fn expected_given(&self, failing_step_outcome_unknown: bool) -> Expected {
        let mut applied = Vec::new();
        let mut failed_at = None;
        for (i, s) in self.steps.iter().enumerate() {
            match s.action {
                ActionFault::Fail => {}
                ActionFault::Transient(n) if n >= ACTION_ATTEMPTS => {}
                ActionFault::Timeout => applied.push(i),
                _ => {
                    applied.push(i);
                    continue;
                }
            }
            failed_at = Some(i);
            break;
        }
        let Some(failed_at) = failed_at else {
            return Expected {
                status: SagaStatus::Completed,
                applied,
                compensated: vec![],
                never_started: vec![],
            };
        };
        let mut compensated = Vec::new();
        let mut status = SagaStatus::Compensated;
        let mut to_compensate: Vec<usize> = applied.iter().rev().copied().collect();
        if failing_step_outcome_unknown && !applied.contains(&failed_at) {
            to_compensate.insert(0, failed_at);
        }
        for i in to_compensate {
            match self.steps[i].compensation {
                CompensationFault::Fail => {
                    status = SagaStatus::Stuck;
                    break;
                }
                CompensationFault::Transient(n) if n >= COMPENSATION_ATTEMPTS => {
                    status = SagaStatus::Stuck;
                    break;
                }
                _ => compensated.push(i),
            }
        }
        Expected {
            status,
            applied,
            compensated,
            never_started: (failed_at + 1..STEPS.len()).collect(),
        }
    }
}

/// The saga's input.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TestInput {
    pub plan: FaultPlan,
}

/// Where to abort the process, to test a crash between an effect and its log record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrashPoint {
    pub step: String,
    pub phase: String,
}

/// The four-step test saga over `ledger`, with step timeouts of `timeout`.
pub fn test_saga(
    ledger: Arc<dyn Ledger>,
    timeout: Duration,
    crash: Option<CrashPoint>,
) -> SagaDefinition {
    let crash = Arc::new(crash);
    let steps = STEPS
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let (l1, l2) = (ledger.clone(), ledger.clone());
            let (c1, c2) = (crash.clone(), crash.clone());
            Step::new(name)
                .action(move |ctx| run_action(l1.clone(), c1.clone(), i, ctx))
                .compensation(move |ctx| run_compensation(l2.clone(), c2.clone(), i, ctx))
                .timeout(timeout)
                .retry(RetryPolicy {
                    max_attempts: ACTION_ATTEMPTS,
                    initial_backoff: Duration::from_millis(2),
                    max_backoff: Duration::from_millis(20),
                })
                .compensation_retry(RetryPolicy {
                    max_attempts: COMPENSATION_ATTEMPTS,
                    initial_backoff: Duration::from_millis(2),
                    max_backoff: Duration::from_millis(20),
                })
        })
        .collect();
    SagaDefinition::new("test_saga", steps).expect("the test saga is well formed")
}

fn maybe_crash(crash: &Option<CrashPoint>, ctx: &StepContext, phase: &str) {
    if crash
        .as_ref()
        .is_some_and(|c| c.step == *ctx.step && c.phase == phase)
    {
        // Like SIGKILL: no destructor, no flush. The effect is already durable in the ledger.
        std::process::abort();
    }
}

async fn run_action(
    ledger: Arc<dyn Ledger>,
    crash: Arc<Option<CrashPoint>>,
    i: usize,
    ctx: StepContext,
) -> Result<serde_json::Value, StepError> {
    let input: TestInput = ctx.input()?;
    let fault = input.plan.steps[i].action;
    match fault {
        ActionFault::Fail => return Err(StepError::Business("refused by the fault plan".into())),
        ActionFault::Transient(n) if ctx.attempt <= n => {
            return Err(StepError::Retryable(format!(
                "transient failure {} of {n}",
                ctx.attempt
            )));
        }
        _ => {}
    }
    let applied = ledger
        .apply(
            &ctx.saga_id.to_string(),
            &ctx.step,
            "action",
            &ctx.idempotency_key,
        )
        .await
        .map_err(|e| StepError::Retryable(format!("ledger: {e}")))?;
    if applied == Applied::Cancelled {
        return Err(StepError::Business("already compensated".into()));
    }
    if applied == Applied::Now {
        maybe_crash(&crash, &ctx, "action");
    }
    match fault {
        ActionFault::Timeout => std::future::pending::<()>().await,
        ActionFault::SlowOnce(ms) if ctx.attempt == 1 => {
            tokio::time::sleep(Duration::from_millis(ms)).await
        }
        _ => {}
    }
    Ok(json!({ "step": &*ctx.step }))
}

async fn run_compensation(
    ledger: Arc<dyn Ledger>,
    crash: Arc<Option<CrashPoint>>,
    i: usize,
    ctx: StepContext,
) -> Result<(), StepError> {
    let input: TestInput = ctx.input()?;
    match input.plan.steps[i].compensation {
        // An outage: over once a person has resumed the stuck saga.
        CompensationFault::Fail if ctx.resumed == 0 => {
            return Err(StepError::Retryable(
                "compensation refused by the fault plan".into(),
            ));
        }
        CompensationFault::Transient(n) if ctx.attempt <= n => {
            return Err(StepError::Retryable(format!(
                "transient compensation failure {} of {n}",
                ctx.attempt
            )));
        }
        _ => {}
    }
    let applied = ledger
        .apply(
            &ctx.saga_id.to_string(),
            &ctx.step,
            "compensation",
            &ctx.idempotency_key,
        )
        .await
        .map_err(|e| StepError::Retryable(format!("ledger: {e}")))?;
    if applied == Applied::Now {
        maybe_crash(&crash, &ctx, "compensation");
    }
    Ok(())
}
