//! Benchmark 1: the executor against steno 0.5: the same 4-step saga of no-op actions, in memory, one at
//! a time and 64 in flight, and the failure path (step 3 fails, two compensations). The bars are
//! judged on the engine's own `MemoryStore`, the plain reference store a user gets.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use saga_engine::{Engine, MemoryStore, SagaDefinition, Step, StepError};
use steno::{
    ActionContext, ActionError, ActionRegistry, DagBuilder, Node, SagaDag, SagaName, SagaType,
};

use crate::report::{Report, percentile_ms, rate};

pub struct Run {
    pub per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// How the sagas in flight are kept in flight.
#[derive(Clone, Copy, PartialEq)]
pub enum Callers {
    /// `in_flight` callers, each a task of its own starting its next saga when the last one
    /// ends, as concurrent clients of a server would (a closed loop, like `wrk -c 64`).
    Independent,
    /// One task keeps `in_flight` sagas going, each spawned as a task of its own, and is woken
    /// by every one that ends: the dispatcher takes part in every saga.
    Dispatcher,
}

/// Run `n` sagas with `in_flight` at a time; `one` runs one saga and returns when it ends.
/// One at a time, the measuring task awaits each saga itself.
pub async fn measure<F, Fut>(n: usize, in_flight: usize, callers: Callers, one: F) -> Run
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    /// `count` sagas back to back, each one's latency.
    async fn one_after_another<Fut: std::future::Future<Output = ()>>(
        count: usize,
        one: impl Fn() -> Fut,
    ) -> Vec<Duration> {
        let mut latencies = Vec::with_capacity(count);
        for _ in 0..count {
            let t = Instant::now();
            one().await;
            latencies.push(t.elapsed());
        }
        latencies
    }

    let started = Instant::now();
    let mut latencies: Vec<Duration> = if in_flight <= 1 {
        one_after_another(n, one).await
    } else if callers == Callers::Independent {
        let tasks: Vec<_> = (0..in_flight)
            .map(|caller| {
                let one = one.clone();
                // `n` shared out, the first callers taking one more when it does not divide.
                let count = n / in_flight + usize::from(caller < n % in_flight);
                tokio::spawn(one_after_another(count, one))
            })
            .collect();
        let mut latencies = Vec::with_capacity(n);
        for task in tasks {
            latencies.extend(task.await.unwrap_or_default());
        }
        latencies
    } else {
        futures_util::stream::iter(0..n)
            .map(|_| {
                let fut = one();
                async move {
                    let t = Instant::now();
                    let _ = tokio::spawn(fut).await;
                    t.elapsed()
                }
            })
            .buffer_unordered(in_flight)
            .collect()
            .await
    };
    let elapsed = started.elapsed();
    latencies.sort();
    Run {
        per_second: rate(latencies.len(), elapsed),
        p50_ms: percentile_ms(&latencies, 0.5),
        p99_ms: percentile_ms(&latencies, 0.99),
    }
}

/// Four no-op steps; with `fail_third`, the third refuses.
pub fn noop_saga(name: &str, fail_third: bool) -> SagaDefinition {
    let steps = (0..4)
        .map(|i| {
            let fail = fail_third && i == 2;
            Step::new(&format!("step{i}"))
                .action(move |_| async move {
                    if fail {
                        Err(StepError::Business("no".into()))
                    } else {
                        Ok(i)
                    }
                })
                .compensation(|_| async { Ok(()) })
        })
        .collect();
    SagaDefinition::new(name, steps).expect("valid")
}

#[derive(Debug)]
struct BenchSaga;
impl SagaType for BenchSaga {
    type ExecContextType = ();
}

async fn steno_ok(_: ActionContext<BenchSaga>) -> Result<u32, ActionError> {
    Ok(1)
}
async fn steno_fail(_: ActionContext<BenchSaga>) -> Result<u32, ActionError> {
    Err(ActionError::action_failed("no".to_string()))
}
async fn steno_undo(_: ActionContext<BenchSaga>) -> Result<(), anyhow::Error> {
    Ok(())
}

struct Steno {
    sec: steno::SecClient,
    registry: Arc<ActionRegistry<BenchSaga>>,
    ok: Arc<SagaDag>,
    fail: Arc<SagaDag>,
}

impl Steno {
    fn new() -> Self {
        let log = slog::Logger::root(slog::Discard, slog::o!());
        let sec = steno::sec(log, Arc::new(steno::InMemorySecStore::new()));
        let ok_action = steno::ActionFunc::new_action("ok", steno_ok, steno_undo);
        let fail_action = steno::ActionFunc::new_action("fail", steno_fail, steno_undo);
        let mut registry = ActionRegistry::new();
        registry.register(ok_action.clone());
        registry.register(fail_action.clone());
        let dag = |fail_third: bool| {
            let mut b = DagBuilder::new(SagaName::new("bench"));
            for i in 0..4 {
                let action = if fail_third && i == 2 {
                    fail_action.as_ref()
                } else {
                    ok_action.as_ref()
                };
                b.append(Node::action(
                    format!("n{i}").as_str(),
                    format!("N{i}").as_str(),
                    action,
                ));
            }
            Arc::new(SagaDag::new(b.build().expect("dag"), serde_json::json!({})))
        };
        Steno {
            sec,
            registry: Arc::new(registry),
            ok: dag(false),
            fail: dag(true),
        }
    }

    async fn one(&self, fail: bool) {
        let id = steno::SagaId::new_v4();
        let dag = if fail {
            self.fail.clone()
        } else {
            self.ok.clone()
        };
        let fut = self
            .sec
            .saga_create(id, Arc::new(()), dag, self.registry.clone())
            .await
            .expect("create");
        self.sec.saga_start(id).await.expect("start");
        fut.await;
    }
}

/// `n` sagas of `definition` on a fresh engine on its `MemoryStore`, `in_flight` at a time.
async fn ours(n: usize, in_flight: usize, callers: Callers, definition: &'static str) -> Run {
    let engine = Engine::new(MemoryStore::new());
    engine.register(noop_saga("noop", false));
    engine.register(noop_saga("noop_fail", true));
    measure(n, in_flight, callers, move || {
        let engine = engine.clone();
        async move {
            let _ = engine.run(definition, &serde_json::json!({})).await;
        }
    })
    .await
}

/// The same on a fresh steno executor.
async fn steno(n: usize, in_flight: usize, fail: bool) -> Run {
    let steno = Arc::new(Steno::new());
    let run = measure(n, in_flight, Callers::Independent, {
        let steno = steno.clone();
        move || {
            let steno = steno.clone();
            async move { steno.one(fail).await }
        }
    })
    .await;
    // steno's executor keeps every saga it ran; stop it so it does not weigh on what follows.
    if let Ok(steno) = Arc::try_unwrap(steno) {
        steno.sec.shutdown().await;
    }
    run
}

pub async fn run(report: &mut Report, quick: bool) -> anyhow::Result<()> {
    eprintln!("==> 1. engine against steno (in memory, no-op steps)");
    let n = if quick { 500 } else { 20_000 };
    // This machine is shared and its speed drifts within a run: every figure is measured
    // `rounds` times, the six measurements interleaved, and the median round kept.
    let rounds = if quick { 1 } else { 5 };
    // Each measurement on a fresh engine (an empty store), so that none runs on a store the
    // one before it filled; and from a task of the runtime, as a server's request handlers
    // call the engine, not from the thread that blocks on the runtime.
    use Callers::{Dispatcher, Independent};
    let runs: Vec<[Run; 7]> = tokio::spawn(async move {
        let mut runs = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            runs.push([
                ours(n, 1, Independent, "noop").await,
                ours(n, 64, Independent, "noop").await,
                ours(n, 1, Independent, "noop_fail").await,
                steno(n, 1, false).await,
                steno(n, 64, false).await,
                steno(n, 1, true).await,
                ours(n, 64, Dispatcher, "noop").await,
            ]);
            // Each round's own ratio as it ends: progress, and the spread behind the median.
            if let Some([one, many, ..]) = runs.last() {
                eprintln!(
                    "    round {}: ours {:.0} sagas/s one at a time, {:.0} with 64 in flight ({:.2}×)",
                    runs.len(),
                    one.per_second,
                    many.per_second,
                    many.per_second / one.per_second
                );
            }
        }
        runs
    })
    .await?;
    let median = |i: usize| {
        let mut of: Vec<&Run> = runs.iter().map(|r| &r[i]).collect();
        of.sort_by(|a, b| a.per_second.total_cmp(&b.per_second));
        of[of.len() / 2]
    };
    let [
        ours_one,
        ours_64,
        ours_fail,
        steno_one,
        steno_64,
        steno_fail,
        ours_dispatched,
    ] = [0, 1, 2, 3, 4, 5, 6].map(median);
    for (who, one, many, fail) in [
        ("ours", ours_one, ours_64, ours_fail),
        ("steno", steno_one, steno_64, steno_fail),
    ] {
        report.figure(
            "engine",
            &format!("{who}: sagas/s one at a time"),
            one.per_second,
            "sagas/s",
        );
        report.figure(
            "engine",
            &format!("{who}: p50 / p99 one at a time (ms)"),
            one.p50_ms,
            &format!("ms (p99 {:.3})", one.p99_ms),
        );
        report.figure(
            "engine",
            &format!("{who}: sagas/s 64 in flight"),
            many.per_second,
            "sagas/s",
        );
        report.figure(
            "engine",
            &format!("{who}: p50 / p99 64 in flight (ms)"),
            many.p50_ms,
            &format!("ms (p99 {:.3})", many.p99_ms),
        );
        report.figure(
            "engine",
            &format!("{who}: failure path sagas/s (step 3 fails)"),
            fail.per_second,
            "sagas/s",
        );
    }
    let ratio = ours_one.per_second / steno_one.per_second;
    report.bar(
        "engine ≥ 3× steno one at a time",
        ratio >= 3.0,
        format!(
            "{ratio:.1}× ({:.0} vs {:.0} sagas/s)",
            ours_one.per_second, steno_one.per_second
        ),
    );
    // The same 64 kept in flight by one dispatching task: shows what a single caller
    // multiplexing many sagas costs (it is woken by every saga that ends, on either core).
    report.figure(
        "engine",
        "ours: sagas/s 64 in flight, one dispatcher task",
        ours_dispatched.per_second,
        "sagas/s",
    );
    let scale = ours_64.per_second / ours_one.per_second;
    report.bar(
        "64 in flight ≥ 1.5× one at a time",
        scale >= 1.5,
        format!(
            "{scale:.2}× ({:.0} vs {:.0} sagas/s)",
            ours_64.per_second, ours_one.per_second
        ),
    );
    Ok(())
}
