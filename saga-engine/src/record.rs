//! The saga log's vocabulary: one [`SagaRecord`] per transition of a saga.
//!
//! The log is the single source of truth. Every record is written (durably) before anyone is
//! told about it, and a saga's state after a crash is whatever replaying its records gives.
//! Records of one saga are numbered by `seq`, starting at 1 with no gaps: the saga's own task is
//! the only writer of its records, so it can number them itself.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// A saga's identity: a UUID, shown in its hyphenated form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SagaId(pub uuid::Uuid);

impl SagaId {
    /// A new id: a time-ordered UUID (v7), unique and with 74 random bits, that sorts by when
    /// it was made. A durable log indexes every record by saga id; ids that grow with time put
    /// a batch's new entries at the end of that index, in a page or two, where random ids
    /// would touch a page per saga and write every one of those pages to disk again.
    ///
    /// Ordered within a millisecond per thread, through a context of the thread's own:
    /// `Uuid::now_v7` shares one locked context between threads, a cache line that every
    /// saga start on one core would take from the other.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        thread_local! {
            static CONTEXT: uuid::ContextV7 = const { uuid::ContextV7::new() };
        }
        CONTEXT.with(|context| SagaId(uuid::Uuid::new_v7(uuid::Timestamp::now(context))))
    }
}

impl fmt::Display for SagaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl FromStr for SagaId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        uuid::Uuid::parse_str(s).map(SagaId)
    }
}

/// What happened, with what the log must remember of it: each kind carries its own fields.
///
/// A store keeps a record as its kind's name ([`name`](Self::name), the event types of the
/// public event stream) and its fields as a JSON object (the `detail` column), written and
/// read through serde; see [`detail_json`](Self::detail_json) and
/// [`from_parts`](Self::from_parts). Recovery folds these fields (whether an outcome is
/// unknown, whether a compensation will be tried again), so they are typed here once rather
/// than read back by name wherever they are needed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "detail", rename_all = "snake_case")]
pub enum RecordKind {
    /// The saga was started: which definition, and the input every step is given.
    SagaStarted {
        /// The definition's name.
        saga: String,
        /// The saga's input, as given to [`Engine::start`](crate::Engine::start).
        input: Value,
    },
    /// An attempt of a step's action is about to run; written before it runs.
    StepStarted {
        /// The step's timeout, so a reader can tell how long the attempt may take.
        timeout_ms: u64,
    },
    /// The action succeeded; its output is what later steps see.
    StepSucceeded {
        /// What the action returned.
        output: Value,
        /// How long the attempt took.
        duration_ms: u64,
    },
    /// The action failed for good: the saga unwinds.
    StepFailed {
        /// Why, as the step's code (or the timeout) said it.
        error: String,
        /// Whether the failed action may nevertheless have been applied.
        outcome: StepOutcome,
        /// Whether the last error was one worth retrying (the retries ran out) rather than a
        /// refusal.
        retryable: bool,
        /// How long the last attempt took.
        duration_ms: u64,
    },
    /// An attempt failed with a retryable error; the next one starts after `delay_ms`.
    StepRetrying {
        /// Why the attempt failed.
        error: String,
        /// The attempt timed out or panicked, so it may have been applied: the step will be
        /// compensated even if it finally fails.
        outcome_unknown: bool,
        /// The wait before the next attempt.
        delay_ms: u64,
        /// How long the failed attempt took.
        duration_ms: u64,
    },
    /// An attempt of a step's compensation is about to run; written before it runs.
    CompensationStarted {},
    /// The compensation succeeded: the step is undone.
    CompensationSucceeded {
        /// How long the attempt took.
        duration_ms: u64,
    },
    /// An attempt of a compensation failed.
    CompensationFailed {
        /// Why it failed.
        error: String,
        /// Whether another attempt follows (after `delay_ms`); if not, the saga is stuck.
        will_retry: bool,
        /// The wait before the next attempt, when there is one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        delay_ms: Option<u64>,
        /// How long the failed attempt took.
        duration_ms: u64,
    },
    /// Every step succeeded.
    SagaCompleted {},
    /// A step failed and every step that had (or might have) taken effect was undone.
    SagaCompensated {},
    /// A compensation failed for good: the saga needs a person.
    SagaStuck {
        /// The step whose compensation gave up.
        step: String,
        /// Its last error.
        error: String,
    },
    /// A person asked a stuck saga to try its compensations again
    /// ([`Engine::retry_stuck`](crate::Engine::retry_stuck)): it unwinds on from where it
    /// stopped, each compensation with a fresh retry budget and the same idempotency key.
    SagaResumed {},
}

/// How a step's action ended when it failed for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepOutcome {
    /// Refused or failed without effect: nothing to compensate.
    Failed,
    /// It may have been applied (a timeout, a panic, a crash mid-call): compensated like a
    /// success.
    Unknown,
}

impl RecordKind {
    /// The kind's name: the record's `kind` in a store and the event type of the public event
    /// stream (`step_failed`). The same names serde gives the variants, which a test checks.
    pub fn name(&self) -> &'static str {
        match self {
            RecordKind::SagaStarted { .. } => "saga_started",
            RecordKind::StepStarted { .. } => "step_started",
            RecordKind::StepSucceeded { .. } => "step_succeeded",
            RecordKind::StepFailed { .. } => "step_failed",
            RecordKind::StepRetrying { .. } => "step_retrying",
            RecordKind::CompensationStarted {} => "compensation_started",
            RecordKind::CompensationSucceeded { .. } => "compensation_succeeded",
            RecordKind::CompensationFailed { .. } => "compensation_failed",
            RecordKind::SagaCompleted {} => "saga_completed",
            RecordKind::SagaCompensated {} => "saga_compensated",
            RecordKind::SagaStuck { .. } => "saga_stuck",
            RecordKind::SagaResumed {} => "saga_resumed",
        }
    }

    /// The saga status a record of this kind moves the saga to, if it changes it.
    pub fn status_after(&self) -> Option<SagaStatus> {
        match self {
            RecordKind::SagaStarted { .. } => Some(SagaStatus::Running),
            RecordKind::CompensationStarted {} | RecordKind::SagaResumed {} => {
                Some(SagaStatus::Compensating)
            }
            RecordKind::SagaCompleted {} => Some(SagaStatus::Completed),
            RecordKind::SagaCompensated {} => Some(SagaStatus::Compensated),
            RecordKind::SagaStuck { .. } => Some(SagaStatus::Stuck),
            // A failed step is followed by compensations, or by `saga_compensated` at once
            // when nothing needs undoing; either record says so.
            RecordKind::StepStarted { .. }
            | RecordKind::StepSucceeded { .. }
            | RecordKind::StepFailed { .. }
            | RecordKind::StepRetrying { .. }
            | RecordKind::CompensationSucceeded { .. }
            | RecordKind::CompensationFailed { .. } => None,
        }
    }

    /// Whether this is a saga's last record.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            RecordKind::SagaCompleted {}
                | RecordKind::SagaCompensated {}
                | RecordKind::SagaStuck { .. }
        )
    }

    /// The kind's fields as the JSON object a store keeps in its `detail` column.
    pub fn detail_json(&self) -> Result<String, serde_json::Error> {
        match serde_json::to_value(self)? {
            Value::Object(mut tagged) => Ok(tagged
                .remove("detail")
                .unwrap_or_else(|| Value::Object(Default::default()))
                .to_string()),
            _ => Err(serde::ser::Error::custom(
                "a record kind serialises as an object",
            )),
        }
    }

    /// A kind read back from a store: its name and its `detail` JSON. Fails on a name this
    /// engine does not know or on fields that do not fit it, which a store reports as a
    /// corrupt log rather than guessing.
    pub fn from_parts(name: &str, detail: &str) -> Result<Self, serde_json::Error> {
        let detail: Value = serde_json::from_str(detail)?;
        let mut tagged = serde_json::Map::with_capacity(2);
        tagged.insert("kind".into(), Value::String(name.to_string()));
        tagged.insert("detail".into(), detail);
        serde_json::from_value(Value::Object(tagged))
    }
}

impl fmt::Display for RecordKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a saga stands. `Completed`, `Compensated` and `Stuck` are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SagaStatus {
    /// Going forward, step by step.
    Running,
    /// A step failed for good; undoing the steps before it, newest first.
    Compensating,
    /// Every step succeeded.
    Completed,
    /// Undone: every effect the saga had is compensated.
    Compensated,
    /// A compensation gave up; the saga stays here until a person sees to it.
    Stuck,
}

impl SagaStatus {
    /// The status's name in the store and the API (`running`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            SagaStatus::Running => "running",
            SagaStatus::Compensating => "compensating",
            SagaStatus::Completed => "completed",
            SagaStatus::Compensated => "compensated",
            SagaStatus::Stuck => "stuck",
        }
    }

    /// Whether the saga is over: completed, compensated or stuck.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            SagaStatus::Completed | SagaStatus::Compensated | SagaStatus::Stuck
        )
    }
}

impl fmt::Display for SagaStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SagaStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            SagaStatus::Running,
            SagaStatus::Compensating,
            SagaStatus::Completed,
            SagaStatus::Compensated,
            SagaStatus::Stuck,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
        .ok_or_else(|| format!("unknown saga status {s:?}"))
    }
}

/// One entry of the saga log: one transition of one saga.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SagaRecord {
    /// The saga it belongs to.
    pub saga_id: SagaId,
    /// Its number within the saga: from 1, without gaps.
    pub seq: u64,
    /// What happened, with its fields.
    #[serde(flatten)]
    pub kind: RecordKind,
    /// Milliseconds since the Unix epoch, when the transition happened.
    pub at_ms: i64,
    /// The step it concerns, for the step and compensation kinds (and `saga_stuck`).
    pub step: Option<String>,
    /// Which attempt of the step's action or compensation, from 1.
    pub attempt: Option<u32>,
    /// The node that wrote it ([`EngineConfig::node_id`](crate::EngineConfig::node_id)); `None`
    /// in logs written before records named their node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<Arc<str>>,
    /// The lease under which `node` held the saga when it wrote the record: the saga's epoch,
    /// which grows by one each time another node takes the saga over (see
    /// [`SagaStore::claim`](crate::SagaStore::claim)). A store appends a record that has one
    /// only while `node` still owns the saga at that epoch ([`StoreError::Fenced`]
    /// otherwise), so in a saga's log `node` changes only where `epoch` grows. `None` in
    /// records written before records carried it, and in records written straight to a
    /// store with no lease (a test setting up a log, say).
    ///
    /// [`StoreError::Fenced`]: crate::StoreError::Fenced
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// One record kind of each variant, with fields as the executor fills them.
    fn one_of_each() -> Vec<RecordKind> {
        vec![
            RecordKind::SagaStarted {
                saga: "trip".into(),
                input: json!({ "who": "Ada" }),
            },
            RecordKind::StepStarted { timeout_ms: 5000 },
            RecordKind::StepSucceeded {
                output: json!({ "id": 7 }),
                duration_ms: 12,
            },
            RecordKind::StepFailed {
                error: "declined".into(),
                outcome: StepOutcome::Failed,
                retryable: false,
                duration_ms: 3,
            },
            RecordKind::StepRetrying {
                error: "503".into(),
                outcome_unknown: true,
                delay_ms: 100,
                duration_ms: 2,
            },
            RecordKind::CompensationStarted {},
            RecordKind::CompensationSucceeded { duration_ms: 4 },
            RecordKind::CompensationFailed {
                error: "down".into(),
                will_retry: true,
                delay_ms: Some(200),
                duration_ms: 1,
            },
            RecordKind::CompensationFailed {
                error: "down".into(),
                will_retry: false,
                delay_ms: None,
                duration_ms: 1,
            },
            RecordKind::SagaCompleted {},
            RecordKind::SagaCompensated {},
            RecordKind::SagaStuck {
                step: "charge".into(),
                error: "down".into(),
            },
            RecordKind::SagaResumed {},
        ]
    }

    /// What a store writes (name, detail) reads back as the same kind, and the name is the
    /// one serde tags the variant with.
    #[test]
    fn every_kind_reads_back_from_its_name_and_detail() {
        for kind in one_of_each() {
            let detail = kind.detail_json().expect("serialises");
            assert_eq!(
                RecordKind::from_parts(kind.name(), &detail).ok(),
                Some(kind.clone())
            );
            let tagged = serde_json::to_value(&kind).expect("serialises");
            assert_eq!(tagged["kind"], kind.name());
        }
    }

    /// The detail objects the log has always held read as their kinds; an unknown name or a
    /// missing field is an error, never a default.
    #[test]
    fn the_logs_detail_objects_read_and_nothing_is_guessed() {
        let failed = RecordKind::from_parts(
            "step_failed",
            r#"{"error":"timed out after 800 ms","outcome":"unknown","retryable":true,"duration_ms":801}"#,
        );
        assert_eq!(
            failed.ok(),
            Some(RecordKind::StepFailed {
                error: "timed out after 800 ms".into(),
                outcome: StepOutcome::Unknown,
                retryable: true,
                duration_ms: 801,
            })
        );
        let gave_up = RecordKind::from_parts(
            "compensation_failed",
            r#"{"error":"e","will_retry":false,"duration_ms":5}"#,
        );
        assert!(matches!(
            gave_up,
            Ok(RecordKind::CompensationFailed {
                will_retry: false,
                delay_ms: None,
                ..
            })
        ));
        assert_eq!(
            RecordKind::from_parts("saga_completed", "{}").ok(),
            Some(RecordKind::SagaCompleted {})
        );
        assert!(RecordKind::from_parts("step_vanished", "{}").is_err());
        assert!(RecordKind::from_parts("step_retrying", r#"{"error":"e"}"#).is_err());
        assert!(RecordKind::from_parts("step_started", "not json").is_err());
    }

    /// What the log's index locality rests on: ids made one after another sort in that order,
    /// as UUIDs and as the text the stores keep.
    #[test]
    fn ids_made_later_sort_later_as_uuids_and_as_text() {
        let ids: Vec<SagaId> = (0..10_000).map(|_| SagaId::new()).collect();
        for pair in ids.windows(2) {
            assert!(pair[0] < pair[1], "{} made before {}", pair[0], pair[1]);
            assert!(pair[0].to_string() < pair[1].to_string());
        }
    }
}
