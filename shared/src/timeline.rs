//! From a saga's events to what each step looks like: the one projection both the API
//! (`GET /api/sagas/{id}`) and the live timeline in the browser use, so they always agree.

use crate::api::{SagaEvent, StepView};

/// A saga's state and its steps, as its events so far say.
#[derive(Debug, Clone, PartialEq)]
pub struct Timeline {
    pub saga_id: String,
    /// `pending` before the first event, then the saga status.
    pub status: String,
    pub steps: Vec<StepView>,
    /// The `seq` of the last event applied (0 for none).
    pub last_seq: u64,
}

impl Timeline {
    pub fn new(saga_id: &str, step_names: &[&str]) -> Self {
        Timeline {
            saga_id: saga_id.to_string(),
            status: "pending".into(),
            steps: step_names
                .iter()
                .map(|s| StepView {
                    step: s.to_string(),
                    status: "pending".into(),
                    attempts: 0,
                    started_at: None,
                    finished_at: None,
                    error: None,
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
        matches!(self.status.as_str(), "completed" | "compensated" | "stuck")
    }

    /// Apply the next event. Events at or below `last_seq` are ignored, so replaying a
    /// stream that overlaps what was seen is harmless.
    pub fn apply(&mut self, e: &SagaEvent) {
        if e.seq <= self.last_seq {
            return;
        }
        self.last_seq = e.seq;
        let error = e
            .detail
            .get("error")
            .and_then(|v| v.as_str())
            .map(str::to_string);
        let index = e
            .step
            .as_deref()
            .and_then(|s| self.steps.iter().position(|v| v.step == s));
        match e.kind.as_str() {
            "saga_started" => self.status = "running".into(),
            "compensation_started" => self.status = "compensating".into(),
            "saga_completed" => self.status = "completed".into(),
            "saga_compensated" => self.status = "compensated".into(),
            "saga_stuck" => self.status = "stuck".into(),
            _ => {}
        }
        if matches!(e.kind.as_str(), "saga_compensated" | "saga_stuck") {
            self.skip_pending();
        }
        let Some(i) = index else { return };
        let lane = &mut self.steps[i];
        match e.kind.as_str() {
            "step_started" => {
                lane.status = "running".into();
                lane.attempts = e.attempt.unwrap_or(lane.attempts + 1);
                lane.started_at.get_or_insert_with(|| e.at.clone());
                lane.finished_at = None;
            }
            "step_retrying" => {
                lane.status = "retrying".into();
                lane.error = error;
            }
            "step_succeeded" => {
                lane.status = "succeeded".into();
                lane.finished_at = Some(e.at.clone());
                lane.error = None;
            }
            "step_failed" => {
                lane.status = "failed".into();
                lane.finished_at = Some(e.at.clone());
                lane.error = error;
                // Nothing after a failed step will run.
                self.skip_pending();
            }
            "compensation_started" => {
                lane.status = "compensating".into();
                lane.finished_at = None;
            }
            "compensation_failed" => {
                let will_retry = e
                    .detail
                    .get("will_retry")
                    .and_then(|v| v.as_bool())
                    .unwrap_or(false);
                lane.status = if will_retry { "compensating" } else { "failed" }.into();
                lane.error = error;
                if !will_retry {
                    lane.finished_at = Some(e.at.clone());
                }
            }
            "compensation_succeeded" => {
                lane.status = "compensated".into();
                lane.finished_at = Some(e.at.clone());
            }
            _ => {}
        }
    }

    fn skip_pending(&mut self) {
        for lane in &mut self.steps {
            if lane.status == "pending" {
                lane.status = "skipped".into();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(seq: u64, kind: &str, step: Option<&str>) -> SagaEvent {
        SagaEvent {
            saga_id: "s".into(),
            seq,
            kind: kind.into(),
            at: format!("t{seq}"),
            step: step.map(str::to_string),
            attempt: Some(1),
            detail: serde_json::json!({}),
        }
    }

    #[test]
    fn a_failure_skips_later_steps_and_compensations_run_back_up() {
        let steps = ["a", "b", "c"];
        let events = [
            ev(1, "saga_started", None),
            ev(2, "step_started", Some("a")),
            ev(3, "step_succeeded", Some("a")),
            ev(4, "step_started", Some("b")),
            ev(5, "step_failed", Some("b")),
            ev(6, "compensation_started", Some("a")),
        ];
        let t = Timeline::from_events("s", &steps, &events);
        assert_eq!(t.status, "compensating");
        let st: Vec<&str> = t.steps.iter().map(|s| s.status.as_str()).collect();
        assert_eq!(st, ["compensating", "failed", "skipped"]);
        let mut t = t;
        t.apply(&ev(6, "compensation_succeeded", Some("a"))); // a repeat: ignored
        assert_eq!(t.steps[0].status, "compensating");
        t.apply(&ev(7, "compensation_succeeded", Some("a")));
        t.apply(&ev(8, "saga_compensated", None));
        assert_eq!(t.steps[0].status, "compensated");
        assert_eq!(t.status, "compensated");
    }
}
