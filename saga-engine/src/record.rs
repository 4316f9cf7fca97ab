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

/// What happened. The names are the event types of the public event stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    /// The saga exists: its definition's name and input are in the detail.
    SagaStarted,
    /// An attempt at a step's action is about to run; logged first, so a step with no such
    /// record never ran.
    StepStarted,
    /// The action succeeded; its output is in the detail, for later steps to read.
    StepSucceeded,
    /// The step failed for good (refused, or out of tries): the saga unwinds.
    StepFailed,
    /// The attempt failed in a way that may go away; another follows after a backoff.
    StepRetrying,
    /// An attempt at a step's compensation is about to run: the saga is unwinding.
    CompensationStarted,
    /// The step's effect is undone.
    CompensationSucceeded,
    /// The compensation failed; it is tried again unless it is out of tries.
    CompensationFailed,
    /// Every step succeeded.
    SagaCompleted,
    /// Every step that had (or might have had) an effect is undone.
    SagaCompensated,
    /// A compensation ran out of tries: the saga needs a person.
    SagaStuck,
}

impl RecordKind {
    /// Every kind, in the order a saga can log them.
    pub const ALL: [RecordKind; 11] = [
        RecordKind::SagaStarted,
        RecordKind::StepStarted,
        RecordKind::StepSucceeded,
        RecordKind::StepFailed,
        RecordKind::StepRetrying,
        RecordKind::CompensationStarted,
        RecordKind::CompensationSucceeded,
        RecordKind::CompensationFailed,
        RecordKind::SagaCompleted,
        RecordKind::SagaCompensated,
        RecordKind::SagaStuck,
    ];

    /// The kind's name in the log and in the event stream (`saga_started`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::SagaStarted => "saga_started",
            RecordKind::StepStarted => "step_started",
            RecordKind::StepSucceeded => "step_succeeded",
            RecordKind::StepFailed => "step_failed",
            RecordKind::StepRetrying => "step_retrying",
            RecordKind::CompensationStarted => "compensation_started",
            RecordKind::CompensationSucceeded => "compensation_succeeded",
            RecordKind::CompensationFailed => "compensation_failed",
            RecordKind::SagaCompleted => "saga_completed",
            RecordKind::SagaCompensated => "saga_compensated",
            RecordKind::SagaStuck => "saga_stuck",
        }
    }

    /// The saga status a record of this kind moves the saga to, if it changes it.
    pub fn status_after(self) -> Option<SagaStatus> {
        match self {
            RecordKind::SagaStarted => Some(SagaStatus::Running),
            RecordKind::StepFailed => None, // compensation may or may not follow; see `CompensationStarted`
            RecordKind::CompensationStarted => Some(SagaStatus::Compensating),
            RecordKind::SagaCompleted => Some(SagaStatus::Completed),
            RecordKind::SagaCompensated => Some(SagaStatus::Compensated),
            RecordKind::SagaStuck => Some(SagaStatus::Stuck),
            _ => None,
        }
    }

    /// Whether a record of this kind is a saga's last.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RecordKind::SagaCompleted | RecordKind::SagaCompensated | RecordKind::SagaStuck
        )
    }
}

impl fmt::Display for RecordKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RecordKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RecordKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown saga record kind {s:?}"))
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

/// One entry of the saga log.
///
/// `detail` carries what the kind needs: the definition name and input for `saga_started`,
/// the output for `step_succeeded`, the error for failures and retries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SagaRecord {
    /// The saga the record belongs to.
    pub saga_id: SagaId,
    /// The record's number within its saga: 1, 2, 3… with no gap.
    pub seq: u64,
    /// What happened.
    pub kind: RecordKind,
    /// Milliseconds since the Unix epoch, when the transition happened.
    pub at_ms: i64,
    /// The step it is about, for a step's or a compensation's record.
    pub step: Option<String>,
    /// Which try at the step's action or compensation (1 for the first).
    pub attempt: Option<u32>,
    /// What the kind carries (see the type's own doc).
    pub detail: Value,
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

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
