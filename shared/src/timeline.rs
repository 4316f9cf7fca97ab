//! From a saga's events to what each step looks like: the one projection both the API
//! (`GET /api/sagas/{id}`) and the live timeline in the browser use, so they always agree.

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
}
