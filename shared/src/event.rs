//! The saga vocabulary on the wire: what an event says ([`Event`], its [`EventKind`]) and the
//! states a saga and its steps go through ([`SagaState`], [`StepState`]).
//!
//! Typed once here for the API and the page: an event's fields are read through these types,
//! never by name out of a JSON object, so adding a kind or a state breaks the build wherever it
//! must be handled. The names are DESIGN.md §3's. The engine has its own record type (the
//! backend maps one onto the other in one exhaustive `match`): its `saga_started` holds the
//! saga's input, which the API never shows.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What happened, with the fields that kind of event carries: on the wire, the event's
/// `type` and its `detail` object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "detail", rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Event {
    /// The saga was started: which definition, and for a purchase which order.
    SagaStarted {
        /// The saga definition's name (`purchase`).
        saga: String,
        /// The order the purchase saga places; absent for other sagas.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        order_id: Option<String>,
        /// The last four digits of the card the purchase pays with; absent for a wallet or
        /// another saga. Never more of the number: the log never had it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        card_last4: Option<String>,
    },
    /// An attempt of the step's action began.
    StepStarted {
        /// How long the attempt may take before it counts as timed out.
        timeout_ms: u64,
    },
    /// The action succeeded.
    StepSucceeded {
        /// What the service answered (ids of what it created).
        #[serde(default)]
        #[cfg_attr(feature = "openapi", schema(value_type = Value))]
        output: serde_json::Value,
        duration_ms: u64,
    },
    /// The action failed for good; the saga unwinds.
    StepFailed {
        error: String,
        /// `unknown` if the action may have been applied (a timeout): it is compensated too.
        outcome: StepOutcome,
        /// Whether the retries ran out (`true`) or the service refused (`false`).
        retryable: bool,
        duration_ms: u64,
    },
    /// An attempt failed and the step will be tried again after `delay_ms`.
    StepRetrying {
        error: String,
        /// The attempt timed out: it may have been applied.
        outcome_unknown: bool,
        delay_ms: u64,
        duration_ms: u64,
    },
    /// An attempt of the step's compensation began.
    CompensationStarted {},
    /// The compensation succeeded: the step is undone.
    CompensationSucceeded { duration_ms: u64 },
    /// An attempt of the compensation failed.
    CompensationFailed {
        error: String,
        /// Whether it will be tried again (after `delay_ms`); if not, the saga is stuck.
        will_retry: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        delay_ms: Option<u64>,
        duration_ms: u64,
    },
    /// Every step succeeded.
    SagaCompleted {},
    /// A step failed and everything that had taken effect was undone.
    SagaCompensated {},
    /// A compensation failed for good: the saga needs a person.
    SagaStuck {
        /// The step whose compensation gave up.
        step: String,
        error: String,
    },
    /// A person asked the stuck saga to retry its compensations (`POST /api/sagas/{id}/retry`):
    /// it unwinds on from where it stopped.
    SagaResumed {},
}

/// How a failed action ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum StepOutcome {
    /// Refused or failed with no effect: nothing to undo.
    Failed,
    /// It may have been applied: undone like a success.
    Unknown,
}

impl Event {
    /// The event's type.
    pub fn kind(&self) -> EventKind {
        match self {
            Event::SagaStarted { .. } => EventKind::SagaStarted,
            Event::StepStarted { .. } => EventKind::StepStarted,
            Event::StepSucceeded { .. } => EventKind::StepSucceeded,
            Event::StepFailed { .. } => EventKind::StepFailed,
            Event::StepRetrying { .. } => EventKind::StepRetrying,
            Event::CompensationStarted {} => EventKind::CompensationStarted,
            Event::CompensationSucceeded { .. } => EventKind::CompensationSucceeded,
            Event::CompensationFailed { .. } => EventKind::CompensationFailed,
            Event::SagaCompleted {} => EventKind::SagaCompleted,
            Event::SagaCompensated {} => EventKind::SagaCompensated,
            Event::SagaStuck { .. } => EventKind::SagaStuck,
            Event::SagaResumed {} => EventKind::SagaResumed,
        }
    }

    /// The error the event reports, for the kinds that report one.
    pub fn error(&self) -> Option<&str> {
        match self {
            Event::StepFailed { error, .. }
            | Event::StepRetrying { error, .. }
            | Event::CompensationFailed { error, .. }
            | Event::SagaStuck { error, .. } => Some(error),
            Event::SagaStarted { .. }
            | Event::StepStarted { .. }
            | Event::StepSucceeded { .. }
            | Event::CompensationStarted {}
            | Event::CompensationSucceeded { .. }
            | Event::SagaCompleted {}
            | Event::SagaCompensated {}
            | Event::SagaResumed {} => None,
        }
    }

    /// How long the attempt the event ends took, for the kinds that end one.
    pub fn duration_ms(&self) -> Option<u64> {
        match self {
            Event::StepSucceeded { duration_ms, .. }
            | Event::StepFailed { duration_ms, .. }
            | Event::StepRetrying { duration_ms, .. }
            | Event::CompensationSucceeded { duration_ms }
            | Event::CompensationFailed { duration_ms, .. } => Some(*duration_ms),
            Event::SagaStarted { .. }
            | Event::StepStarted { .. }
            | Event::CompensationStarted {}
            | Event::SagaCompleted {}
            | Event::SagaCompensated {}
            | Event::SagaStuck { .. }
            | Event::SagaResumed {} => None,
        }
    }
}

/// An event's type without its fields: the SSE `event:` name a client listens for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
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
    SagaResumed,
}

impl EventKind {
    /// Every kind there is: what a client of the streams subscribes to.
    pub const ALL: [EventKind; 12] = [
        EventKind::SagaStarted,
        EventKind::StepStarted,
        EventKind::StepSucceeded,
        EventKind::StepFailed,
        EventKind::StepRetrying,
        EventKind::CompensationStarted,
        EventKind::CompensationSucceeded,
        EventKind::CompensationFailed,
        EventKind::SagaCompleted,
        EventKind::SagaCompensated,
        EventKind::SagaStuck,
        EventKind::SagaResumed,
    ];

    /// The name on the wire (`step_failed`).
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::SagaStarted => "saga_started",
            EventKind::StepStarted => "step_started",
            EventKind::StepSucceeded => "step_succeeded",
            EventKind::StepFailed => "step_failed",
            EventKind::StepRetrying => "step_retrying",
            EventKind::CompensationStarted => "compensation_started",
            EventKind::CompensationSucceeded => "compensation_succeeded",
            EventKind::CompensationFailed => "compensation_failed",
            EventKind::SagaCompleted => "saga_completed",
            EventKind::SagaCompensated => "saga_compensated",
            EventKind::SagaStuck => "saga_stuck",
            EventKind::SagaResumed => "saga_resumed",
        }
    }

    /// The state a saga is in after an event of this kind, if the event changes it.
    pub fn saga_state_after(self) -> Option<SagaState> {
        match self {
            EventKind::SagaStarted => Some(SagaState::Running),
            EventKind::CompensationStarted | EventKind::SagaResumed => {
                Some(SagaState::Compensating)
            }
            EventKind::SagaCompleted => Some(SagaState::Completed),
            EventKind::SagaCompensated => Some(SagaState::Compensated),
            EventKind::SagaStuck => Some(SagaState::Stuck),
            EventKind::StepStarted
            | EventKind::StepSucceeded
            | EventKind::StepFailed
            | EventKind::StepRetrying
            | EventKind::CompensationSucceeded
            | EventKind::CompensationFailed => None,
        }
    }

    /// Whether this is a saga's last event.
    pub fn is_terminal(self) -> bool {
        self.saga_state_after().is_some_and(SagaState::is_finished)
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a saga stands. `Pending` only on the page, before its first event arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SagaState {
    Pending,
    Running,
    Compensating,
    Completed,
    Compensated,
    Stuck,
}

impl SagaState {
    /// Every state a saga the server knows can be in (all but `Pending`).
    pub const LOGGED: [SagaState; 5] = [
        SagaState::Running,
        SagaState::Compensating,
        SagaState::Completed,
        SagaState::Compensated,
        SagaState::Stuck,
    ];

    /// The name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            SagaState::Pending => "pending",
            SagaState::Running => "running",
            SagaState::Compensating => "compensating",
            SagaState::Completed => "completed",
            SagaState::Compensated => "compensated",
            SagaState::Stuck => "stuck",
        }
    }

    /// `completed`, `compensated` and `stuck` are final.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            SagaState::Completed | SagaState::Compensated | SagaState::Stuck
        )
    }
}

impl fmt::Display for SagaState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a step stands, as its events say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    /// Not reached yet.
    Pending,
    Running,
    /// An attempt failed; another follows.
    Retrying,
    Succeeded,
    /// The action failed for good, or (during unwinding) its compensation did.
    Failed,
    Compensating,
    Compensated,
    /// Never ran: an earlier step failed.
    Skipped,
}

impl StepState {
    /// Every state a step can be in.
    pub const ALL: [StepState; 8] = [
        StepState::Pending,
        StepState::Running,
        StepState::Retrying,
        StepState::Succeeded,
        StepState::Failed,
        StepState::Compensating,
        StepState::Compensated,
        StepState::Skipped,
    ];

    /// The name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            StepState::Pending => "pending",
            StepState::Running => "running",
            StepState::Retrying => "retrying",
            StepState::Succeeded => "succeeded",
            StepState::Failed => "failed",
            StepState::Compensating => "compensating",
            StepState::Compensated => "compensated",
            StepState::Skipped => "skipped",
        }
    }
}

impl fmt::Display for StepState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names `as_str` gives are the ones serde writes, for every kind and state.
    #[test]
    fn names_are_the_ones_on_the_wire() {
        for kind in EventKind::ALL {
            assert_eq!(serde_json::to_value(kind).ok(), Some(kind.as_str().into()));
        }
        for state in SagaState::LOGGED.into_iter().chain([SagaState::Pending]) {
            assert_eq!(
                serde_json::to_value(state).ok(),
                Some(state.as_str().into())
            );
        }
        for state in StepState::ALL {
            assert_eq!(
                serde_json::to_value(state).ok(),
                Some(state.as_str().into())
            );
        }
    }

    /// An event is `type` plus `detail`, and its kind is the type it is sent as.
    #[test]
    fn an_event_is_its_type_and_its_detail() {
        let event = Event::CompensationFailed {
            error: "refunds are down".into(),
            will_retry: false,
            delay_ms: None,
            duration_ms: 4,
        };
        let json = serde_json::to_value(&event).expect("serialises");
        assert_eq!(
            json,
            serde_json::json!({
                "type": "compensation_failed",
                "detail": { "error": "refunds are down", "will_retry": false, "duration_ms": 4 }
            })
        );
        assert_eq!(json["type"], event.kind().as_str());
        assert_eq!(serde_json::from_value::<Event>(json).ok(), Some(event));
        let done = serde_json::json!({ "type": "saga_completed", "detail": {} });
        assert_eq!(
            serde_json::from_value::<Event>(done).ok(),
            Some(Event::SagaCompleted {})
        );
    }
}
