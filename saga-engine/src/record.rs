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
    SagaStarted,
    StepStarted,
    StepSucceeded,
    StepFailed,
    StepRetrying,
    CompensationStarted,
    CompensationSucceeded,
    CompensationFailed,
    SagaCompleted,
    SagaCompensated,
    SagaStuck,
}

impl RecordKind {
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
    Running,
    Compensating,
    Completed,
    Compensated,
    Stuck,
}

impl SagaStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SagaStatus::Running => "running",
            SagaStatus::Compensating => "compensating",
            SagaStatus::Completed => "completed",
            SagaStatus::Compensated => "compensated",
            SagaStatus::Stuck => "stuck",
        }
    }

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
    pub saga_id: SagaId,
    pub seq: u64,
    pub kind: RecordKind,
    /// Milliseconds since the Unix epoch, when the transition happened.
    pub at_ms: i64,
    pub step: Option<String>,
    pub attempt: Option<u32>,
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
