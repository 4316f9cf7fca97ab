//! From a saga's events to what each step looks like: the one projection both the API
//! (`GET /api/sagas/{id}`) and the live timeline in the browser use, so they always agree.
//!
//! It also finds the takeovers: a saga is driven by one node at a time, and when that node
//! stops (killed, its lease expired, or shut down, its leases handed back) another one resumes
//! the saga from its log. No event says so; the records say it by the node that wrote them,
//! which changes from one record to the next.

use crate::api::{SagaEvent, StepView};
use crate::event::{Event, SagaState, StepState};

/// A saga's state and its steps, as its events so far say.
#[derive(Debug, Clone, PartialEq)]
pub struct Timeline {
    pub saga_id: String,
    /// `Pending` before the first event, then the saga's state.
    pub status: SagaState,
    pub steps: Vec<StepView>,
    /// The `seq` of the last event applied (0 for none).
    pub last_seq: u64,
    /// The node that wrote the latest record naming one (`None` before any, and for a log
    /// from before records named their node).
    pub node: Option<String>,
    /// Every change of node between the saga's records, oldest first: empty for a saga one
    /// node drove from start to end.
    pub takeovers: Vec<Takeover>,
}

/// The saga's records changed node: `from` wrote the ones before, `to` wrote record `seq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Takeover {
    /// The node that drove the saga until then.
    pub from: String,
    /// The node that wrote the next record, and drives the saga from there.
    pub to: String,
    /// The first record `to` wrote.
    pub seq: u64,
    /// The step that record is about; `None` for a record about the whole saga (its end, or
    /// a person's retry).
    pub step: Option<String>,
    /// Why the node changed, as far as the records tell.
    pub cause: TakeoverCause,
}

/// Why a saga's records changed node. The log cannot tell a node that was killed (its lease
/// ran out) from one that shut down (it handed its leases back): both just stop writing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TakeoverCause {
    /// `from` stopped driving the saga in the middle of it: it stopped answering or shut
    /// down, and `to` resumed the saga from its log.
    Stopped,
    /// The saga was stuck, which no node drives; a person asked `to` to retry its
    /// compensations. Nothing stopped.
    Retried,
}

impl Timeline {
    pub fn new(saga_id: &str, step_names: &[&str]) -> Self {
        Timeline {
            saga_id: saga_id.to_string(),
            status: SagaState::Pending,
            steps: step_names
                .iter()
                .map(|s| StepView {
                    step: s.to_string(),
                    status: StepState::Pending,
                    attempts: 0,
                    started_at: None,
                    finished_at: None,
                    error: None,
                    node: None,
                })
                .collect(),
            last_seq: 0,
            node: None,
            takeovers: Vec::new(),
        }
    }

    pub fn from_events(saga_id: &str, step_names: &[&str], events: &[SagaEvent]) -> Self {
        let mut t = Timeline::new(saga_id, step_names);
        for e in events {
            t.apply(e);
        }
        t
    }

    pub fn is_finished(&self) -> bool {
        self.status.is_finished()
    }

    /// Apply the next event. Events at or below `last_seq` are ignored, so replaying a
    /// stream that overlaps what was seen is harmless.
    pub fn apply(&mut self, e: &SagaEvent) {
        if e.seq <= self.last_seq {
            return;
        }
        self.last_seq = e.seq;
        // The state before this record says whether a node change is a takeover or a person
        // picking up a stuck saga.
        let was_stuck = self.status == SagaState::Stuck;
        self.note_node(e, was_stuck);
        if let Some(state) = e.event.kind().saga_state_after() {
            self.status = state;
        }
        let index = e
            .step
            .as_deref()
            .and_then(|s| self.steps.iter().position(|v| v.step == s));
        let error = e.event.error().map(str::to_string);
        if let (Some(i), Some(node)) = (index, &e.node) {
            self.steps[i].node = Some(node.clone());
        }
        match (&e.event, index) {
            (Event::SagaCompensated {} | Event::SagaStuck { .. }, _) => self.skip_pending(),
            (Event::StepStarted { .. }, Some(i)) => {
                let lane = &mut self.steps[i];
                lane.status = StepState::Running;
                lane.attempts = e.attempt.unwrap_or(lane.attempts + 1);
                lane.started_at.get_or_insert_with(|| e.at.clone());
                lane.finished_at = None;
            }
            (Event::StepRetrying { .. }, Some(i)) => {
                let lane = &mut self.steps[i];
                lane.status = StepState::Retrying;
                lane.error = error;
            }
            (Event::StepSucceeded { .. }, Some(i)) => {
                let lane = &mut self.steps[i];
                lane.status = StepState::Succeeded;
                lane.finished_at = Some(e.at.clone());
                lane.error = None;
            }
            (Event::StepFailed { .. }, Some(i)) => {
                let lane = &mut self.steps[i];
                lane.status = StepState::Failed;
                lane.finished_at = Some(e.at.clone());
                lane.error = error;
                // Nothing after a failed step will run.
                self.skip_pending();
            }
            (Event::CompensationStarted {}, Some(i)) => {
                let lane = &mut self.steps[i];
                lane.status = StepState::Compensating;
                lane.finished_at = None;
            }
            (Event::CompensationFailed { will_retry, .. }, Some(i)) => {
                let lane = &mut self.steps[i];
                lane.status = if *will_retry {
                    StepState::Compensating
                } else {
                    StepState::Failed
                };
                lane.error = error;
                if !will_retry {
                    lane.finished_at = Some(e.at.clone());
                }
            }
            (Event::CompensationSucceeded { .. }, Some(i)) => {
                let lane = &mut self.steps[i];
                lane.status = StepState::Compensated;
                lane.finished_at = Some(e.at.clone());
            }
            // A step this timeline does not show, or an event about the saga as a whole (a
            // resumed saga's next compensation moves its lane).
            (
                Event::SagaStarted { .. }
                | Event::SagaResumed {}
                | Event::SagaCompleted {}
                | Event::StepStarted { .. }
                | Event::StepRetrying { .. }
                | Event::StepSucceeded { .. }
                | Event::StepFailed { .. }
                | Event::CompensationStarted {}
                | Event::CompensationFailed { .. }
                | Event::CompensationSucceeded { .. },
                _,
            ) => {}
        }
    }

    /// A record written by another node than the one before it (a record naming no node, from
    /// an older log, is passed over: it says nothing either way).
    fn note_node(&mut self, e: &SagaEvent, was_stuck: bool) {
        let Some(node) = &e.node else { return };
        if let Some(from) = self.node.as_ref().filter(|n| *n != node) {
            self.takeovers.push(Takeover {
                from: from.clone(),
                to: node.clone(),
                seq: e.seq,
                step: e.step.clone(),
                cause: if was_stuck {
                    TakeoverCause::Retried
                } else {
                    TakeoverCause::Stopped
                },
            });
        }
        self.node = Some(node.clone());
    }

    fn skip_pending(&mut self) {
        for lane in &mut self.steps {
            if lane.status == StepState::Pending {
                lane.status = StepState::Skipped;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(seq: u64, event: Event, step: Option<&str>) -> SagaEvent {
        SagaEvent {
            saga_id: "s".into(),
            seq,
            at: format!("t{seq}"),
            step: step.map(str::to_string),
            attempt: Some(1),
            node: None,
            event,
        }
    }

    fn started() -> Event {
        Event::SagaStarted {
            saga: "purchase".into(),
            order_id: None,
            card_last4: None,
        }
    }

    fn failed() -> Event {
        Event::StepFailed {
            error: "card declined".into(),
            outcome: crate::StepOutcome::Failed,
            retryable: false,
            duration_ms: 1,
        }
    }

    fn undone() -> Event {
        Event::CompensationSucceeded { duration_ms: 1 }
    }

    #[test]
    fn a_failure_skips_later_steps_and_compensations_run_back_up() {
        let steps = ["a", "b", "c"];
        let events = [
            ev(1, started(), None),
            ev(2, Event::StepStarted { timeout_ms: 5 }, Some("a")),
            ev(
                3,
                Event::StepSucceeded {
                    output: serde_json::Value::Null,
                    duration_ms: 1,
                },
                Some("a"),
            ),
            ev(4, Event::StepStarted { timeout_ms: 5 }, Some("b")),
            ev(5, failed(), Some("b")),
            ev(6, Event::CompensationStarted {}, Some("a")),
        ];
        let t = Timeline::from_events("s", &steps, &events);
        assert_eq!(t.status, SagaState::Compensating);
        let st: Vec<StepState> = t.steps.iter().map(|s| s.status).collect();
        assert_eq!(
            st,
            [
                StepState::Compensating,
                StepState::Failed,
                StepState::Skipped
            ]
        );
        assert_eq!(t.steps[1].error.as_deref(), Some("card declined"));
        let mut t = t;
        t.apply(&ev(6, undone(), Some("a"))); // a repeat: ignored
        assert_eq!(t.steps[0].status, StepState::Compensating);
        t.apply(&ev(7, undone(), Some("a")));
        t.apply(&ev(8, Event::SagaCompensated {}, None));
        assert_eq!(t.steps[0].status, StepState::Compensated);
        assert_eq!(t.status, SagaState::Compensated);
    }

    fn on(node: Option<&str>, e: SagaEvent) -> SagaEvent {
        SagaEvent {
            node: node.map(str::to_string),
            ..e
        }
    }

    #[test]
    fn a_node_change_between_records_is_a_takeover_at_the_record_the_new_node_wrote() {
        let steps = ["a", "b"];
        let events = [
            on(Some("n1"), ev(1, started(), None)),
            on(
                Some("n1"),
                ev(2, Event::StepStarted { timeout_ms: 5 }, Some("a")),
            ),
            on(
                Some("n2"),
                ev(3, Event::StepStarted { timeout_ms: 5 }, Some("a")),
            ),
            on(Some("n2"), ev(4, failed(), Some("a"))),
        ];
        let t = Timeline::from_events("s", &steps, &events);
        assert_eq!(
            t.takeovers,
            [Takeover {
                from: "n1".into(),
                to: "n2".into(),
                seq: 3,
                step: Some("a".into()),
                cause: TakeoverCause::Stopped,
            }]
        );
        assert_eq!(t.node.as_deref(), Some("n2"));
        assert_eq!(t.steps[0].node.as_deref(), Some("n2"));
    }

    #[test]
    fn one_node_or_none_named_is_no_takeover() {
        let steps = ["a"];
        let one = [
            on(Some("n1"), ev(1, started(), None)),
            on(
                Some("n1"),
                ev(2, Event::StepStarted { timeout_ms: 5 }, Some("a")),
            ),
        ];
        assert!(
            Timeline::from_events("s", &steps, &one)
                .takeovers
                .is_empty()
        );
        // A log from before records named their node, then one that does: nothing to compare.
        let old = [
            ev(1, started(), None),
            on(
                Some("n1"),
                ev(2, Event::StepStarted { timeout_ms: 5 }, Some("a")),
            ),
        ];
        assert!(
            Timeline::from_events("s", &steps, &old)
                .takeovers
                .is_empty()
        );
        // A record naming no node between two of one node is not a change either.
        let gap = [
            on(Some("n1"), ev(1, started(), None)),
            ev(2, Event::StepStarted { timeout_ms: 5 }, Some("a")),
            on(Some("n1"), ev(3, failed(), Some("a"))),
        ];
        assert!(
            Timeline::from_events("s", &steps, &gap)
                .takeovers
                .is_empty()
        );
    }

    #[test]
    fn a_stuck_saga_retried_on_another_node_is_a_retry_not_a_stop() {
        let steps = ["a"];
        let events = [
            on(Some("n1"), ev(1, started(), None)),
            on(
                Some("n1"),
                ev(
                    2,
                    Event::SagaStuck {
                        step: "a".into(),
                        error: "down".into(),
                    },
                    None,
                ),
            ),
            on(Some("n2"), ev(3, Event::SagaResumed {}, None)),
            on(Some("n2"), ev(4, Event::CompensationStarted {}, Some("a"))),
        ];
        let t = Timeline::from_events("s", &steps, &events);
        assert_eq!(t.takeovers.len(), 1);
        assert_eq!(t.takeovers[0].cause, TakeoverCause::Retried);
        assert_eq!(t.takeovers[0].step, None);
    }
}
