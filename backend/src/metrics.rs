//! `/metrics` in the Prometheus text format (version 0.0.4), written by `prometheus-client`:
//! sagas by outcome, step and compensation latencies, retries, the saga log's commits and
//! records, and how many SSE subscribers are connected.
//!
//! Sagas, latencies and retries follow the saga event feed, one record at a time
//! ([`observation`] is the one place that reads a record); the engine's own figures are read
//! at each scrape ([`EngineFigures`]). The series and their buckets are those dashboards know:
//! change a name, a label or a bound and every query on it breaks.

use std::sync::Arc;

use futures_util::StreamExt;
use prometheus_client::encoding::{EncodeLabelSet, prometheus_text};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use saga_engine::{Engine, RecordKind, SagaRecord};

/// The `Content-Type` of what [`Metrics::render`] writes.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Upper bounds of the latency buckets, in milliseconds.
const BUCKETS_MS: [u64; 12] = [
    5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 30_000,
];

/// A latency histogram with [`BUCKETS_MS`], in seconds.
fn latency_histogram() -> Histogram {
    Histogram::new(BUCKETS_MS.map(seconds))
}

/// The same conversion for bounds and observations, so that a duration of exactly a bound's
/// milliseconds lands in that bound's bucket.
fn seconds(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: &'static str,
}

/// The outcomes a saga finishes with; each is exposed from the start, at zero.
const OUTCOMES: [&str; 3] = ["completed", "compensated", "stuck"];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepName {
    step: String,
}

type Latencies = Family<StepName, Histogram, fn() -> Histogram>;

/// The series that follow the event feed and the SSE streams. Each handle shares its value
/// with the one in `registry`.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    started: Counter,
    finished: Family<Outcome, Counter>,
    steps: Latencies,
    compensations: Latencies,
    retries: Counter,
    sse_subscribers: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let metrics = Metrics {
            registry: Registry::default(),
            started: Counter::default(),
            finished: Family::default(),
            steps: Latencies::new_with_constructor(latency_histogram),
            compensations: Latencies::new_with_constructor(latency_histogram),
            retries: Counter::default(),
            sse_subscribers: Gauge::default(),
        };
        for outcome in OUTCOMES {
            // Created, at zero; the guard it returns is let go at once.
            let _ = metrics.finished.get_or_create(&Outcome { outcome });
        }
        let mut registry = Registry::default();
        // Counters are registered without `_total`: the encoder adds it.
        registry.register(
            "saga_started",
            "Sagas started since this process began",
            metrics.started.clone(),
        );
        registry.register(
            "saga_finished",
            "Sagas finished, by outcome",
            metrics.finished.clone(),
        );
        registry.register(
            "saga_step_duration_seconds",
            "Time of one step attempt that ended the step",
            metrics.steps.clone(),
        );
        registry.register(
            "saga_compensation_duration_seconds",
            "Time of a successful compensation attempt",
            metrics.compensations.clone(),
        );
        registry.register(
            "saga_retries",
            "Retries of actions and compensations",
            metrics.retries.clone(),
        );
        registry.register(
            "sse_subscribers",
            "Connected event-stream subscribers",
            metrics.sse_subscribers.clone(),
        );
        Metrics {
            registry,
            ..metrics
        }
    }
}

/// Counts one SSE subscriber while it lives.
pub struct SubscriberGuard(Arc<Metrics>);

impl Drop for SubscriberGuard {
    fn drop(&mut self) {
        self.0.sse_subscribers.dec();
    }
}

/// What one saga log record adds to the metrics.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Observation<'r> {
    Started,
    Finished(&'static str),
    /// The attempt that ended a step, whether it succeeded or failed.
    StepTook {
        step: &'r str,
        ms: u64,
    },
    CompensationTook {
        step: &'r str,
        ms: u64,
    },
    /// A retry of an action or of a compensation is coming.
    Retry,
}

/// The one place that reads a saga record for the metrics. A step's record without its step
/// name adds nothing, rather than a figure under no label.
fn observation(record: &SagaRecord) -> Option<Observation<'_>> {
    let step = record.step.as_deref();
    match &record.kind {
        RecordKind::SagaStarted { .. } => Some(Observation::Started),
        RecordKind::SagaCompleted {} => Some(Observation::Finished("completed")),
        RecordKind::SagaCompensated {} => Some(Observation::Finished("compensated")),
        RecordKind::SagaStuck { .. } => Some(Observation::Finished("stuck")),
        RecordKind::StepSucceeded { duration_ms, .. }
        | RecordKind::StepFailed { duration_ms, .. } => step.map(|step| Observation::StepTook {
            step,
            ms: *duration_ms,
        }),
        RecordKind::CompensationSucceeded { duration_ms } => {
            step.map(|step| Observation::CompensationTook {
                step,
                ms: *duration_ms,
            })
        }
        RecordKind::StepRetrying { .. } => Some(Observation::Retry),
        RecordKind::CompensationFailed { will_retry, .. } => {
            will_retry.then_some(Observation::Retry)
        }
        RecordKind::StepStarted { .. }
        | RecordKind::CompensationStarted {}
        | RecordKind::SagaResumed {} => None,
    }
}

/// The engine's own figures, as a scrape reads them. The one place that reads the engine's
/// log statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct EngineFigures {
    running: usize,
    commits: u64,
    records: u64,
}

impl EngineFigures {
    fn of(engine: &Engine) -> Self {
        let stats = engine.log_stats();
        EngineFigures {
            running: engine.running(),
            commits: stats.commits,
            records: stats.records,
        }
    }

    /// A registry of constants, made for one scrape: the figures are the engine's, kept
    /// nowhere else.
    fn registry(self) -> Registry {
        let mut registry = Registry::default();
        registry.register(
            "saga_running",
            "Sagas this process is driving now",
            ConstGauge::new(i64::try_from(self.running).unwrap_or(i64::MAX)),
        );
        registry.register(
            "saga_log_commits",
            "Saga log transactions committed",
            ConstCounter::new(self.commits),
        );
        registry.register(
            "saga_log_records",
            "Saga log records written",
            ConstCounter::new(self.records),
        );
        registry
    }
}

impl Metrics {
    /// Follow the engine's feed for as long as the engine lives.
    pub fn spawn_collector(self: &Arc<Self>, engine: &Engine) {
        let metrics = self.clone();
        let mut feed = engine.subscribe_all(None);
        tokio::spawn(async move {
            while let Some(Ok(c)) = feed.next().await {
                metrics.observe(&c.record);
            }
        });
    }

    fn observe(&self, record: &SagaRecord) {
        if let Some(observation) = observation(record) {
            self.count(observation);
        }
    }

    fn count(&self, observation: Observation<'_>) {
        match observation {
            Observation::Started => {
                self.started.inc();
            }
            Observation::Finished(outcome) => {
                self.finished.get_or_create(&Outcome { outcome }).inc();
            }
            Observation::StepTook { step, ms } => {
                let step = StepName { step: step.into() };
                self.steps.get_or_create(&step).observe(seconds(ms));
            }
            Observation::CompensationTook { step, ms } => {
                let step = StepName { step: step.into() };
                self.compensations.get_or_create(&step).observe(seconds(ms));
            }
            Observation::Retry => {
                self.retries.inc();
            }
        }
    }

    pub fn sse_subscriber(self: &Arc<Self>) -> SubscriberGuard {
        self.sse_subscribers.inc();
        SubscriberGuard(self.clone())
    }

    /// The exposition, in [`CONTENT_TYPE`]. Fails only if an encoder does: writing to a
    /// `String` itself cannot.
    pub fn render(&self, engine: &Engine) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_text::encode(&mut out, &self.registry)?;
        prometheus_text::encode(&mut out, &EngineFigures::of(engine).registry())?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use saga_engine::{SagaId, StepOutcome};
    use serde_json::json;

    fn record(kind: RecordKind, step: Option<&str>) -> SagaRecord {
        SagaRecord {
            saga_id: SagaId::new(),
            seq: 1,
            kind,
            at_ms: 0,
            step: step.map(str::to_string),
            attempt: Some(1),
            node: None,
            epoch: None,
        }
    }

    fn gave_up(will_retry: bool) -> RecordKind {
        RecordKind::CompensationFailed {
            error: "down".into(),
            will_retry,
            delay_ms: will_retry.then_some(10),
            duration_ms: 1,
        }
    }

    /// Goes with [`observation`]: what each kind of record counts for.
    #[test]
    fn records_read_as_observations() {
        let cases = [
            (
                RecordKind::SagaStarted {
                    saga: "purchase".into(),
                    input: json!({}),
                },
                None,
                Some(Observation::Started),
            ),
            (
                RecordKind::StepFailed {
                    error: "declined".into(),
                    outcome: StepOutcome::Failed,
                    retryable: false,
                    duration_ms: 12,
                },
                Some("ship_order"),
                Some(Observation::StepTook {
                    step: "ship_order",
                    ms: 12,
                }),
            ),
            (
                RecordKind::CompensationSucceeded { duration_ms: 3 },
                Some("ship_order"),
                Some(Observation::CompensationTook {
                    step: "ship_order",
                    ms: 3,
                }),
            ),
            (
                RecordKind::StepRetrying {
                    error: "503".into(),
                    outcome_unknown: false,
                    delay_ms: 10,
                    duration_ms: 1,
                },
                Some("ship_order"),
                Some(Observation::Retry),
            ),
            (gave_up(true), Some("ship_order"), Some(Observation::Retry)),
            (gave_up(false), Some("ship_order"), None),
            (
                RecordKind::SagaStuck {
                    step: "ship_order".into(),
                    error: "down".into(),
                },
                None,
                Some(Observation::Finished("stuck")),
            ),
            // No step, no figure.
            (
                RecordKind::StepSucceeded {
                    output: json!(null),
                    duration_ms: 5,
                },
                None,
                None,
            ),
            (
                RecordKind::StepStarted { timeout_ms: 10 },
                Some("ship_order"),
                None,
            ),
        ];
        for (kind, step, expected) in cases {
            let name = kind.name();
            assert_eq!(observation(&record(kind, step)), expected, "{name}");
        }
    }

    fn exposition(metrics: &Metrics) -> String {
        let mut out = String::new();
        prometheus_text::encode(&mut out, &metrics.registry).unwrap();
        let figures = EngineFigures {
            running: 2,
            commits: 7,
            records: 30,
        };
        prometheus_text::encode(&mut out, &figures.registry()).unwrap();
        out
    }

    /// The series, types, labels and buckets dashboards and `tests/` read.
    #[test]
    fn the_exposition_keeps_its_series() {
        let metrics = Metrics::default();
        for observation in [
            Observation::Started,
            Observation::StepTook {
                step: "place_order",
                ms: 5,
            },
            Observation::Retry,
            Observation::Retry,
            Observation::CompensationTook {
                step: "place_order",
                ms: 40_000,
            },
            Observation::Finished("completed"),
        ] {
            metrics.count(observation);
        }
        let text = exposition(&metrics);
        for line in [
            "# TYPE saga_started_total counter",
            "saga_started_total 1",
            "# TYPE saga_finished_total counter",
            "saga_finished_total{outcome=\"completed\"} 1",
            "saga_finished_total{outcome=\"compensated\"} 0",
            "saga_finished_total{outcome=\"stuck\"} 0",
            "# TYPE saga_step_duration_seconds histogram",
            // 5 ms is in the 5 ms bucket, bounds included.
            "saga_step_duration_seconds_bucket{step=\"place_order\",le=\"0.005\"} 1",
            "saga_step_duration_seconds_bucket{step=\"place_order\",le=\"30\"} 1",
            "saga_step_duration_seconds_bucket{step=\"place_order\",le=\"+Inf\"} 1",
            "saga_step_duration_seconds_count{step=\"place_order\"} 1",
            "# TYPE saga_compensation_duration_seconds histogram",
            "saga_compensation_duration_seconds_bucket{step=\"place_order\",le=\"30\"} 0",
            "saga_compensation_duration_seconds_bucket{step=\"place_order\",le=\"+Inf\"} 1",
            "saga_compensation_duration_seconds_sum{step=\"place_order\"} 40.0",
            "# TYPE saga_retries_total counter",
            "saga_retries_total 2",
            "# TYPE sse_subscribers gauge",
            "sse_subscribers 0",
            "# HELP saga_running Sagas this process is driving now.",
            "# TYPE saga_running gauge",
            "saga_running 2",
            "saga_log_commits_total 7",
            "saga_log_records_total 30",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "no line {line:?} in\n{text}"
            );
        }
        let bounds: Vec<&str> = text
            .lines()
            .filter_map(|l| {
                l.strip_prefix("saga_step_duration_seconds_bucket{step=\"place_order\",le=\"")
            })
            .filter_map(|l| l.split('"').next())
            .collect();
        assert_eq!(
            bounds,
            [
                "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10",
                "30", "+Inf"
            ]
        );
        assert!(
            !text.contains("# EOF"),
            "the 0.0.4 text format has no end marker"
        );
    }

    #[test]
    fn subscribers_are_counted_while_they_live() {
        let metrics = Arc::new(Metrics::default());
        let guard = metrics.sse_subscriber();
        assert!(
            exposition(&metrics)
                .lines()
                .any(|l| l == "sse_subscribers 1")
        );
        drop(guard);
        assert!(
            exposition(&metrics)
                .lines()
                .any(|l| l == "sse_subscribers 0")
        );
    }
}
