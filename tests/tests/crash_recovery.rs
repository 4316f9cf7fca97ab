//! Crash recovery for real: the engine runs in a child process that dies (abort, or SIGKILL
//! from here) at every point of a saga's log, and a second process recovers it from the same
//! SQLite files. Judged by the log and by the effect ledger: the saga finishes as its plan
//! implies, and no action or compensation took effect twice.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use saga_engine::{SagaId, SqliteStore};
use saga_shop_tests::{
    ActionFault as A, CompensationFault as C, FaultPlan, STEPS, SqliteLedger, check_saga,
    check_saga_with, unique_name,
};

const HARNESS: &str = env!("CARGO_BIN_EXE_crash-harness");

struct Files {
    log: PathBuf,
    ledger: PathBuf,
}

fn files() -> Files {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("crash-tests");
    std::fs::create_dir_all(&dir).expect("test dir");
    let name = unique_name("crash");
    Files {
        log: dir.join(format!("{name}.log.db")),
        ledger: dir.join(format!("{name}.ledger.db")),
    }
}

fn harness(mode: &str, f: &Files, id: SagaId, extra: &[String]) -> Command {
    let mut cmd = Command::new(HARNESS);
    cmd.arg(mode)
        .arg("--log")
        .arg(&f.log)
        .arg("--ledger")
        .arg(&f.ledger)
        .arg("--saga-id")
        .arg(id.to_string())
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

fn output(cmd: &mut Command) -> Output {
    cmd.output().expect("run crash-harness")
}

/// Runs the saga, crashing at `crash`; then recovers it. Returns whether the crash happened
/// (false once the crash point lies beyond the end of the saga).
async fn crash_and_recover(plan: &FaultPlan, crash: &[String]) -> bool {
    let f = files();
    let id = SagaId::new();
    let mut extra = vec!["--plan".to_string(), serde_json::to_string(plan).unwrap()];
    extra.extend_from_slice(crash);
    let first = output(&mut harness("run", &f, id, &extra));
    let crashed = !first.status.success();
    if crashed {
        let stderr = String::from_utf8_lossy(&first.stderr);
        assert!(
            !stderr.contains("panicked"),
            "the harness panicked instead of crashing: {stderr}"
        );
        let second = output(&mut harness("recover", &f, id, &[]));
        assert!(
            second.status.success(),
            "recovery after {crash:?} failed: {}",
            String::from_utf8_lossy(&second.stderr)
        );
        let status = String::from_utf8_lossy(&second.stdout).trim().to_string();
        assert!(
            status == plan.expected().status.as_str()
                || status == plan.expected_given(true).status.as_str(),
            "after {crash:?}: {status}"
        );
    }
    let store = SqliteStore::open(&f.log).await.unwrap();
    let ledger = SqliteLedger::open(&f.ledger).await.unwrap();
    check_saga_with(&store, &ledger, id, plan, crashed)
        .await
        .unwrap_or_else(|e| panic!("after crash {crash:?}: {e:#}"));
    crashed
}

fn plans() -> Vec<FaultPlan> {
    vec![
        FaultPlan::default(),
        FaultPlan::default().with(0, A::Fail),
        FaultPlan::default().with(2, A::Fail),
        FaultPlan::default()
            .with(3, A::Fail)
            .with_compensation(1, C::Transient(2)),
        FaultPlan::default()
            .with(1, A::Transient(1))
            .with(3, A::Timeout),
        FaultPlan::default()
            .with(2, A::Fail)
            .with_compensation(0, C::Fail),
    ]
}

#[tokio::test]
async fn a_crash_after_any_commit_is_recovered_with_every_effect_once() {
    let mut points = 0;
    for plan in plans() {
        for n in 1.. {
            if !crash_and_recover(&plan, &["--crash-after-commits".into(), n.to_string()]).await {
                break;
            }
            points += 1;
        }
    }
    // Each plan's saga commits several times; all of them were crash points.
    assert!(points >= 30, "only {points} crash points exercised");
}

#[tokio::test]
async fn a_crash_between_an_effect_and_its_record_is_recovered_with_every_effect_once() {
    let mut crashes = 0;
    for plan in plans() {
        let expected = plan.expected();
        let mut points: Vec<String> = expected
            .applied
            .iter()
            .map(|&i| format!("{}:action", STEPS[i]))
            .collect();
        points.extend(
            expected
                .compensated
                .iter()
                .map(|&i| format!("{}:compensation", STEPS[i])),
        );
        for point in points {
            assert!(
                crash_and_recover(&plan, &["--crash-in".into(), point.clone()]).await,
                "the process did not crash at {point}"
            );
            crashes += 1;
        }
    }
    assert!(crashes >= 15);
}

#[tokio::test]
async fn sigkill_in_the_middle_of_a_slow_step_then_restart_finishes_the_saga() {
    let f = files();
    let id = SagaId::new();
    let plan = FaultPlan::default().with(1, A::SlowOnce(60_000));
    let mut child = harness(
        "run",
        &f,
        id,
        &["--plan".into(), serde_json::to_string(&plan).unwrap()],
    )
    .spawn()
    .expect("spawn harness");
    // Wait until the slow step's effect is applied (it sleeps after applying), then kill.
    let deadline = Instant::now() + Duration::from_secs(30);
    let ledger = loop {
        assert!(Instant::now() < deadline, "the slow step never started");
        if f.ledger.exists() {
            let ledger = SqliteLedger::open(&f.ledger).await.unwrap();
            let effects = saga_shop_tests::Ledger::effects(&ledger, &id.to_string())
                .await
                .unwrap();
            if effects.iter().any(|e| e.step == "second") {
                break ledger;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    child.kill().expect("SIGKILL the harness");
    let status = child.wait().expect("reap");
    assert!(!status.success());
    let second = output(&mut harness("recover", &f, id, &[]));
    assert!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&second.stdout).trim(), "completed");
    let store = SqliteStore::open(&f.log).await.unwrap();
    check_saga(&store, &ledger, id, &plan).await.unwrap();
    // The interrupted attempt is visible: step "second" started twice.
    let log = saga_engine::SagaStore::saga_records(&store, id, 0)
        .await
        .unwrap();
    let starts = log
        .iter()
        .filter(|r| {
            matches!(r.kind, saga_engine::RecordKind::StepStarted { .. })
                && r.step.as_deref() == Some("second")
        })
        .count();
    assert_eq!(starts, 2);
}
