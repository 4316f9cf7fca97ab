//! How a saga is described: a named list of steps, each an action with its compensation.
//!
//! A definition is plain data plus closures; it holds no state of any running saga, so one
//! definition serves every saga of its kind, including the ones recovered after a restart.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::record::SagaId;

/// The future every [`SagaStore`](crate::SagaStore) method returns: boxed, so that the trait
/// can be used as `dyn SagaStore` (an engine holds its store that way, chosen at run time). An
/// implementation returns `Box::pin(async move { … })`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How a step failed, as told by the step's own code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StepError {
    /// The participant refused, and nothing was applied (a declined card, no stock).
    /// Not retried: the saga compensates the steps before this one.
    #[error("{0}")]
    Business(String),
    /// A failure that may go away (a 503, a dropped connection). Retried with backoff up to
    /// the step's attempt limit. The idempotency key makes a retry of an applied action harmless.
    #[error("{0}")]
    Retryable(String),
}

impl StepError {
    /// What the step said, whichever kind of failure it is: what the log records.
    pub fn message(&self) -> &str {
        match self {
            StepError::Business(m) | StepError::Retryable(m) => m,
        }
    }
}

/// Retries: up to `max_attempts` tries in all, waiting `initial_backoff * 2^(n-1)` (capped at
/// `max_backoff`) with random jitter between tries so that many sagas hitting the same failing
/// service do not retry in lock step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries in all, the first included: 1 never retries. A step's action that is still
    /// failing after these fails the step (the saga unwinds); a compensation leaves the saga
    /// stuck, for a person to look at.
    pub max_attempts: u32,
    /// The wait before the first retry; each retry after it waits twice as long.
    pub initial_backoff: Duration,
    /// The longest wait between two tries, however many came before.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// The wait before attempt `next_attempt` (2 for the first retry): exponential, capped,
    /// with "equal jitter" (half fixed, half random) so it never collapses to zero.
    pub(crate) fn backoff(&self, next_attempt: u32) -> Duration {
        let exp = next_attempt.saturating_sub(2).min(30);
        let base = self
            .initial_backoff
            .saturating_mul(1u32 << exp)
            .min(self.max_backoff);
        let half = base / 2;
        half + half.mul_f64(crate::jitter::unit())
    }
}

/// What a step's action or compensation is given: who it is, and everything the saga knows.
#[derive(Debug, Clone)]
pub struct StepContext {
    /// The saga this attempt belongs to.
    pub saga_id: SagaId,
    /// The step being attempted, by its name in the definition.
    pub step: String,
    /// 1 for the first try; grows across retries and across restarts.
    pub attempt: u32,
    /// `{saga_id}:{step}:action` or `{saga_id}:{step}:compensation`: the same on every retry and
    /// after every restart, so a participant can apply each effect once.
    pub idempotency_key: String,
    /// How many times a person resumed this saga after it was stuck
    /// ([`Engine::retry_stuck`](crate::Engine::retry_stuck)): 0 until then. A step that models
    /// an outage can take it as the sign that the outage is over.
    pub resumed: u32,
    pub(crate) input: Arc<Value>,
    pub(crate) outputs: Arc<BTreeMap<String, Value>>,
}

impl StepContext {
    /// The saga's input, as the type it was started with.
    pub fn input<T: DeserializeOwned>(&self) -> Result<T, StepError> {
        T::deserialize(&*self.input)
            .map_err(|e| StepError::Business(format!("saga input does not match the step: {e}")))
    }

    /// The output of an earlier step that succeeded (`None` if it has none).
    pub fn output_of<T: DeserializeOwned>(&self, step: &str) -> Result<Option<T>, StepError> {
        match self.outputs.get(step) {
            None => Ok(None),
            Some(v) => T::deserialize(v).map(Some).map_err(|e| {
                StepError::Business(format!("output of step {step} does not match: {e}"))
            }),
        }
    }
}

type ActionFn = dyn Fn(StepContext) -> BoxFuture<'static, Result<Value, StepError>> + Send + Sync;
type CompensationFn =
    dyn Fn(StepContext) -> BoxFuture<'static, Result<(), StepError>> + Send + Sync;

/// One step: an action, the compensation that undoes it, and how hard to try each.
#[derive(Clone)]
pub struct Step {
    pub(crate) name: Arc<str>,
    pub(crate) action: Arc<ActionFn>,
    pub(crate) compensation: Arc<CompensationFn>,
    pub(crate) retry: RetryPolicy,
    pub(crate) compensation_retry: RetryPolicy,
    pub(crate) timeout: Duration,
}

impl std::fmt::Debug for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Step")
            .field("name", &self.name)
            .field("retry", &self.retry)
            .field("compensation_retry", &self.compensation_retry)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Step {
    /// A step whose action and compensation do nothing yet; set them with [`Step::action`]
    /// and [`Step::compensation`].
    pub fn new(name: &str) -> Self {
        Step {
            name: Arc::from(name),
            action: Arc::new(|_| Box::pin(async { Ok(Value::Null) })),
            compensation: Arc::new(|_| Box::pin(async { Ok(()) })),
            retry: RetryPolicy::default(),
            compensation_retry: RetryPolicy {
                max_attempts: 10,
                ..RetryPolicy::default()
            },
            timeout: Duration::from_secs(10),
        }
    }

    /// The action. Its output (any `Serialize`) is logged and readable by later steps.
    pub fn action<F, Fut, O>(mut self, f: F) -> Self
    where
        F: Fn(StepContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, StepError>> + Send + 'static,
        O: Serialize,
    {
        let f = Arc::new(f);
        self.action = Arc::new(move |ctx| {
            let fut = f(ctx);
            Box::pin(async move {
                let out = fut.await?;
                serde_json::to_value(out)
                    .map_err(|e| StepError::Business(format!("step output is not JSON: {e}")))
            })
        });
        self
    }

    /// The compensation: undo the action's effect. Must be idempotent and must cope with an
    /// action that never arrived (a timed-out step is compensated without knowing).
    pub fn compensation<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(StepContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), StepError>> + Send + 'static,
    {
        self.compensation = Arc::new(move |ctx| Box::pin(f(ctx)));
        self
    }

    /// How the action is retried when it fails retryably ([`StepError::Retryable`], a
    /// timeout or a panic): 3 tries by default.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// How the compensation is retried when it fails, whatever the error: 10 tries by
    /// default, since a saga whose compensation gives up is left stuck.
    pub fn compensation_retry(mut self, policy: RetryPolicy) -> Self {
        self.compensation_retry = policy;
        self
    }

    /// How long one attempt may take. A timed-out attempt's outcome is unknown: the step may
    /// be retried, and is compensated if the saga unwinds.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The name the log records for this step's records, unique within its saga.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Why a definition cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DefinitionError {
    /// A saga with nothing to do: the definition's name.
    #[error("saga {0} has no steps")]
    Empty(String),
    /// Two steps share a name, so the log could not tell their records apart.
    #[error("saga {saga} has two steps named {step}")]
    DuplicateStep {
        /// The definition's name.
        saga: String,
        /// The name given twice.
        step: String,
    },
}

/// A saga kind: a name (recorded in the log, so recovery can find the definition again) and
/// its steps in order.
#[derive(Debug, Clone)]
pub struct SagaDefinition {
    pub(crate) name: Arc<str>,
    pub(crate) steps: Vec<Step>,
}

impl SagaDefinition {
    /// Steps run one after another in the order given.
    pub fn new(name: &str, steps: Vec<Step>) -> Result<Self, DefinitionError> {
        if steps.is_empty() {
            return Err(DefinitionError::Empty(name.to_string()));
        }
        for (i, step) in steps.iter().enumerate() {
            if steps[..i].iter().any(|earlier| earlier.name == step.name) {
                return Err(DefinitionError::DuplicateStep {
                    saga: name.to_string(),
                    step: step.name.to_string(),
                });
            }
        }
        Ok(SagaDefinition {
            name: Arc::from(name),
            steps,
        })
    }

    /// The name sagas of this kind are started by and recorded under.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The steps' names in the order they run: what a view of a saga's progress lays out.
    pub fn step_names(&self) -> impl Iterator<Item = &str> {
        self.steps.iter().map(|s| &*s.name)
    }

    pub(crate) fn step_index(&self, name: &str) -> Option<usize> {
        self.steps.iter().position(|s| &*s.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(1000),
        };
        for _ in 0..100 {
            let b2 = p.backoff(2);
            assert!(b2 >= Duration::from_millis(50) && b2 <= Duration::from_millis(100));
            let b4 = p.backoff(4);
            assert!(b4 >= Duration::from_millis(200) && b4 <= Duration::from_millis(400));
            let b9 = p.backoff(9);
            assert!(b9 >= Duration::from_millis(500) && b9 <= Duration::from_millis(1000));
        }
    }

    #[test]
    fn definitions_reject_duplicates_and_empty() {
        assert!(matches!(
            SagaDefinition::new("x", vec![]),
            Err(DefinitionError::Empty(_))
        ));
        assert!(matches!(
            SagaDefinition::new("x", vec![Step::new("a"), Step::new("a")]),
            Err(DefinitionError::DuplicateStep { .. })
        ));
    }
}
