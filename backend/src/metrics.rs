//! `/metrics` in Prometheus text format, fed by the saga event feed: sagas by outcome, step
//! and compensation latencies, retries, and how many SSE subscribers are connected.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use saga_engine::{Engine, RecordKind};

/// Upper bounds of the latency buckets, in milliseconds.
const BUCKETS_MS: [u64; 12] = [
    5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 30_000,
];

#[derive(Debug, Default)]
struct Histogram {
    counts: [u64; BUCKETS_MS.len()],
    count: u64,
    sum_ms: u64,
}

impl Histogram {
    fn observe(&mut self, ms: u64) {
        for (i, bound) in BUCKETS_MS.iter().enumerate() {
            if ms <= *bound {
                self.counts[i] += 1;
            }
        }
        self.count += 1;
        self.sum_ms += ms;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        for (i, bound) in BUCKETS_MS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels},le=\"{}\"}} {}",
                *bound as f64 / 1000.0,
                self.counts[i]
            );
        }
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(
            out,
            "{name}_sum{{{labels}}} {}",
            self.sum_ms as f64 / 1000.0
        );
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count);
    }
}

#[derive(Debug, Default)]
struct Counts {
    outcomes: BTreeMap<String, u64>,
    steps: BTreeMap<String, Histogram>,
    compensations: BTreeMap<String, Histogram>,
}

#[derive(Debug, Default)]
pub struct Metrics {
    counts: Mutex<Counts>,
    started: AtomicU64,
    retries: AtomicU64,
    sse_subscribers: AtomicI64,
}

/// Counts one SSE subscriber while it lives.
pub struct SubscriberGuard(Arc<Metrics>);

impl Drop for SubscriberGuard {
    fn drop(&mut self) {
        self.0.sse_subscribers.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Metrics {
    /// Follow the engine's feed for as long as the engine lives.
    pub fn spawn_collector(self: &Arc<Self>, engine: &Engine) {
        let metrics = self.clone();
        let mut feed = engine.subscribe_all(None);
        tokio::spawn(async move {
            while let Some(Ok(c)) = feed.next().await {
                metrics.observe(c.record.kind, c.record.step.as_deref(), &c.record.detail);
            }
        });
    }

    fn observe(&self, kind: RecordKind, step: Option<&str>, detail: &serde_json::Value) {
        let ms = detail.get("duration_ms").and_then(|v| v.as_u64());
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        match kind {
            RecordKind::SagaStarted => {
                self.started.fetch_add(1, Ordering::Relaxed);
            }
            RecordKind::SagaCompleted | RecordKind::SagaCompensated | RecordKind::SagaStuck => {
                let outcome = kind
                    .status_after()
                    .map(|s| s.to_string())
                    .unwrap_or_default();
                *c.outcomes.entry(outcome).or_default() += 1;
            }
            RecordKind::StepSucceeded | RecordKind::StepFailed => {
                if let (Some(step), Some(ms)) = (step, ms) {
                    c.steps.entry(step.to_string()).or_default().observe(ms);
                }
            }
            RecordKind::CompensationSucceeded => {
                if let (Some(step), Some(ms)) = (step, ms) {
                    c.compensations
                        .entry(step.to_string())
                        .or_default()
                        .observe(ms);
                }
            }
            RecordKind::StepRetrying => {
                self.retries.fetch_add(1, Ordering::Relaxed);
            }
            RecordKind::CompensationFailed
                if detail.get("will_retry").and_then(|v| v.as_bool()) == Some(true) =>
            {
                self.retries.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }

    pub fn sse_subscriber(self: &Arc<Self>) -> SubscriberGuard {
        self.sse_subscribers.fetch_add(1, Ordering::Relaxed);
        SubscriberGuard(self.clone())
    }

    pub fn render(&self, engine: &Engine) -> String {
        let mut out = String::new();
        let c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        out.push_str("# HELP saga_started_total Sagas started since this process began.\n# TYPE saga_started_total counter\n");
        let _ = writeln!(
            out,
            "saga_started_total {}",
            self.started.load(Ordering::Relaxed)
        );
        out.push_str("# HELP saga_finished_total Sagas finished, by outcome.\n# TYPE saga_finished_total counter\n");
        for outcome in ["completed", "compensated", "stuck"] {
            let _ = writeln!(
                out,
                "saga_finished_total{{outcome=\"{outcome}\"}} {}",
                c.outcomes.get(outcome).copied().unwrap_or(0)
            );
        }
        out.push_str(
            "# HELP saga_running Sagas this process is driving now.\n# TYPE saga_running gauge\n",
        );
        let _ = writeln!(out, "saga_running {}", engine.running());
        out.push_str("# HELP saga_step_duration_seconds Time of one step attempt that ended the step.\n# TYPE saga_step_duration_seconds histogram\n");
        for (step, h) in &c.steps {
            h.render(
                &mut out,
                "saga_step_duration_seconds",
                &format!("step=\"{step}\""),
            );
        }
        out.push_str("# HELP saga_compensation_duration_seconds Time of a successful compensation attempt.\n# TYPE saga_compensation_duration_seconds histogram\n");
        for (step, h) in &c.compensations {
            h.render(
                &mut out,
                "saga_compensation_duration_seconds",
                &format!("step=\"{step}\""),
            );
        }
        out.push_str("# HELP saga_retries_total Retries of actions and compensations.\n# TYPE saga_retries_total counter\n");
        let _ = writeln!(
            out,
            "saga_retries_total {}",
            self.retries.load(Ordering::Relaxed)
        );
        out.push_str("# HELP saga_log_commits_total Saga log transactions committed.\n# TYPE saga_log_commits_total counter\n");
        let _ = writeln!(out, "saga_log_commits_total {}", engine.log_stats().commits);
        out.push_str("# HELP saga_log_records_total Saga log records written.\n# TYPE saga_log_records_total counter\n");
        let _ = writeln!(out, "saga_log_records_total {}", engine.log_stats().records);
        out.push_str("# HELP sse_subscribers Connected event-stream subscribers.\n# TYPE sse_subscribers gauge\n");
        let _ = writeln!(
            out,
            "sse_subscribers {}",
            self.sse_subscribers.load(Ordering::Relaxed)
        );
        out
    }
}
