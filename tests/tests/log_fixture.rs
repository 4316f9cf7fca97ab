//! A saga log written before records were typed still reads, and recovers to the same ends.
//!
//! `tests/fixtures/saga-log-v1.db` is a SQLite saga log written by the engine at commit
//! b747f61, whose records kept their fields as untyped JSON, running [`definition`] (the same
//! steps and the same behaviour for each plan): five sagas that finished in every way a saga
//! can (completed, after a retry, refused and compensated, timed out and compensated, stuck),
//! and two left unfinished when that process stopped, one in the middle of its last action and
//! one in the middle of a compensation. Today's engine must read every record of it, leave the
//! finished sagas as they are, and finish the other two from their logs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use saga_engine::{
    Engine, RecordKind, RetryPolicy, SagaDefinition, SagaId, SagaStatus, SagaStore, SqliteStore,
    Step, StepContext, StepError, StepOutcome,
};
use serde_json::json;

/// What each plan's saga is in the fixture, and where it ends once recovered.
const PLANS: [(&str, SagaStatus); 7] = [
    ("complete", SagaStatus::Completed),
    ("retry_charge", SagaStatus::Completed),
    ("refuse_charge", SagaStatus::Compensated),
    ("timeout_charge", SagaStatus::Compensated),
    ("stuck", SagaStatus::Stuck),
    ("hang_ship", SagaStatus::Completed),
    ("hang_undo", SagaStatus::Compensated),
];

/// The fixture's saga ids: a UUIDv5 of each plan's name.
fn saga_of(plan: &str) -> SagaId {
    SagaId(uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_OID,
        plan.as_bytes(),
    ))
}

fn plan(ctx: &StepContext) -> String {
    ctx.input::<serde_json::Value>()
        .ok()
        .and_then(|input| input["plan"].as_str().map(str::to_string))
        .unwrap_or_default()
}

/// The saga that wrote the fixture. An attempt that hung when the fixture was written (the
/// first of `ship` for `hang_ship`, of `charge`'s compensation for `hang_undo`) is attempt 1;
/// recovery runs attempt 2, which succeeds.
fn definition() -> SagaDefinition {
    let quick = |attempts| RetryPolicy {
        max_attempts: attempts,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(20),
    };
    SagaDefinition::new(
        "fixture",
        vec![
            Step::new("reserve")
                .action(|_ctx| async move { Ok::<_, StepError>(json!({ "reservation": "r-1" })) })
                .compensation(|_ctx| async move { Ok(()) }),
            Step::new("charge")
                .timeout(Duration::from_millis(100))
                .retry(quick(2))
                .compensation_retry(quick(2))
                .action(|ctx| async move {
                    match plan(&ctx).as_str() {
                        "refuse_charge" => Err(StepError::Business("card declined".into())),
                        "retry_charge" if ctx.attempt == 1 => {
                            Err(StepError::Retryable("payments answered 503".into()))
                        }
                        "timeout_charge" => {
                            tokio::time::sleep(Duration::from_secs(5)).await;
                            Ok(json!(null))
                        }
                        _ => Ok(json!({ "payment": "p-1", "amount_cents": 1999 })),
                    }
                })
                .compensation(|ctx| async move {
                    match plan(&ctx).as_str() {
                        "stuck" => Err(StepError::Retryable("refunds are down".into())),
                        "hang_undo" if ctx.attempt == 1 => std::future::pending().await,
                        _ => Ok(()),
                    }
                }),
            Step::new("ship")
                .action(|ctx| async move {
                    match plan(&ctx).as_str() {
                        "stuck" | "hang_undo" => Err(StepError::Business("no courier".into())),
                        "hang_ship" if ctx.attempt == 1 => std::future::pending().await,
                        _ => Ok(json!({ "tracking": "t-1" })),
                    }
                })
                .compensation(|_ctx| async move { Ok(()) }),
        ],
    )
    .expect("a valid definition")
}

/// A copy of the fixture in a directory of its own: recovery writes to the log.
fn fixture_copy() -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/saga-log-v1.db");
    let dir = std::env::temp_dir().join(format!("saga-fixture-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    let copy = dir.join("log.db");
    std::fs::copy(&source, &copy).expect("the fixture is in tests/fixtures");
    copy
}

#[tokio::test]
async fn a_log_written_before_records_were_typed_reads_and_recovers_to_the_same_ends() {
    let path = fixture_copy();
    let store = SqliteStore::open(&path).await.expect("the fixture opens");

    // Every record reads as a typed kind: nothing unreadable, nothing guessed.
    let before = store
        .records_after(0, 1000)
        .await
        .expect("every record reads");
    assert!(
        before.len() > 40,
        "the fixture holds {} records",
        before.len()
    );
    let mut logs: BTreeMap<SagaId, Vec<RecordKind>> = BTreeMap::new();
    for c in &before {
        logs.entry(c.record.saga_id)
            .or_default()
            .push(c.record.kind.clone());
    }
    let timeout = &logs[&saga_of("timeout_charge")];
    assert!(timeout.iter().any(|k| matches!(
        k,
        RecordKind::StepFailed {
            outcome: StepOutcome::Unknown,
            retryable: true,
            ..
        }
    )));
    assert!(timeout.iter().any(|k| matches!(
        k,
        RecordKind::StepRetrying {
            outcome_unknown: true,
            ..
        }
    )));
    let stuck = &logs[&saga_of("stuck")];
    assert!(stuck.iter().any(|k| matches!(
        k,
        RecordKind::CompensationFailed {
            will_retry: true,
            delay_ms: Some(_),
            ..
        }
    )));
    assert!(matches!(
        stuck.last(),
        Some(RecordKind::SagaStuck { step, .. }) if step == "charge"
    ));
    assert!(matches!(
        logs[&saga_of("complete")].first(),
        Some(RecordKind::SagaStarted { saga, input }) if saga == "fixture" && input["plan"] == "complete"
    ));

    let engine = Engine::new(store);
    engine.register(definition());
    let resumed = engine.recover().await.expect("recovery runs");
    assert_eq!(resumed, 2, "the two unfinished sagas are resumed");
    for (plan, status) in PLANS {
        let ended =
            tokio::time::timeout(Duration::from_secs(30), engine.wait_finished(saga_of(plan)))
                .await
                .expect("every saga finishes");
        assert_eq!(ended.ok(), Some(status), "saga {plan}");
    }

    // The finished sagas are as they were; the resumed ones went on from where they stopped.
    for (plan, _) in &PLANS[..5] {
        let now = engine
            .store()
            .saga_records(saga_of(plan), 0)
            .await
            .expect("read");
        let kinds: Vec<RecordKind> = now.into_iter().map(|r| r.kind).collect();
        assert_eq!(kinds, logs[&saga_of(plan)], "saga {plan} is unchanged");
    }
    let shipped = engine
        .store()
        .saga_records(saga_of("hang_ship"), 0)
        .await
        .expect("read");
    let ship_starts: Vec<Option<u32>> = shipped
        .iter()
        .filter(|r| {
            matches!(r.kind, RecordKind::StepStarted { .. }) && r.step.as_deref() == Some("ship")
        })
        .map(|r| r.attempt)
        .collect();
    assert_eq!(ship_starts, [Some(1), Some(2)]);
    let undone = engine
        .store()
        .saga_records(saga_of("hang_undo"), 0)
        .await
        .expect("read");
    let compensated: Vec<&str> = undone
        .iter()
        .filter(|r| matches!(r.kind, RecordKind::CompensationSucceeded { .. }))
        .filter_map(|r| r.step.as_deref())
        .collect();
    assert_eq!(compensated, ["charge", "reserve"]);
    engine.store().close().await;
    if let Some(dir) = path.parent() {
        let _ = std::fs::remove_dir_all(dir);
    }
}
