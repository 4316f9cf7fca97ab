//! The invariants every finished test saga must satisfy, judged from the log and the ledger.

use anyhow::{bail, ensure};
use saga_engine::{RecordKind, SagaId, SagaStore, StepOutcome};

use crate::ledger::Ledger;
use crate::plan::{FaultPlan, STEPS};

/// Check a finished saga against what its plan implies:
/// - the log is numbered 1..=n with no gap, opens with `saga_started`, ends with the expected
///   terminal record, and nothing follows it;
/// - steps after the failing one were never started;
/// - every action and compensation took effect at most once, exactly the expected ones did,
///   and compensations happened in reverse order.
///
/// `after_crash`: the process died during the saga, so a failing step whose first attempt was
/// cut off may rightly be logged with an unknown outcome and compensated.
pub async fn check_saga(
    store: &dyn SagaStore,
    ledger: &dyn Ledger,
    id: SagaId,
    plan: &FaultPlan,
) -> anyhow::Result<()> {
    check_saga_with(store, ledger, id, plan, false).await
}

pub async fn check_saga_with(
    store: &dyn SagaStore,
    ledger: &dyn Ledger,
    id: SagaId,
    plan: &FaultPlan,
    after_crash: bool,
) -> anyhow::Result<()> {
    let log = store.saga_records(id, 0).await?;
    let failed_unknown = log.iter().any(|r| {
        matches!(
            r.kind,
            RecordKind::StepFailed {
                outcome: StepOutcome::Unknown,
                ..
            }
        ) && r
            .step
            .as_deref()
            .and_then(|s| STEPS.iter().position(|x| *x == s))
            .is_some_and(|i| !matches!(plan.steps[i].action, crate::plan::ActionFault::Timeout))
    });
    ensure!(
        !failed_unknown || after_crash,
        "saga {id}: a refused step was logged with an unknown outcome"
    );
    let expected = plan.expected_given(failed_unknown);
    let summary = store.saga(id).await?;
    let Some(summary) = summary else {
        bail!("saga {id} is not in the store")
    };
    ensure!(
        summary.status == expected.status,
        "saga {id} with {plan:?}: status {} but expected {}",
        summary.status,
        expected.status
    );

    for (i, r) in log.iter().enumerate() {
        ensure!(
            r.seq == i as u64 + 1,
            "saga {id}: record {} has seq {}",
            i + 1,
            r.seq
        );
    }
    ensure!(
        matches!(
            log.first().map(|r| &r.kind),
            Some(RecordKind::SagaStarted { .. })
        ),
        "saga {id}: log does not open with saga_started"
    );
    let last = log.last().map(|r| &r.kind);
    ensure!(
        last.and_then(RecordKind::status_after) == Some(expected.status)
            && last.is_some_and(RecordKind::is_terminal),
        "saga {id}: log ends with {last:?}"
    );
    ensure!(
        log.iter().filter(|r| r.kind.is_terminal()).count() == 1,
        "saga {id}: more than one terminal record"
    );
    for &i in &expected.never_started {
        ensure!(
            !log.iter().any(|r| r.step.as_deref() == Some(STEPS[i])
                && matches!(r.kind, RecordKind::StepStarted { .. })),
            "saga {id}: step {} started though an earlier step failed",
            STEPS[i]
        );
    }
    let logged_compensations: Vec<&str> = log
        .iter()
        .filter(|r| matches!(r.kind, RecordKind::CompensationSucceeded { .. }))
        .filter_map(|r| r.step.as_deref())
        .collect();
    let want_compensations: Vec<&str> = expected.compensated.iter().map(|&i| STEPS[i]).collect();
    ensure!(
        logged_compensations == want_compensations,
        "saga {id}: logged compensations {logged_compensations:?}, expected {want_compensations:?}"
    );

    let effects = ledger.effects(&id.to_string()).await?;
    for step in STEPS {
        for phase in ["action", "compensation"] {
            let n = effects
                .iter()
                .filter(|e| e.step == step && e.phase == phase)
                .count();
            ensure!(n <= 1, "saga {id}: {step} {phase} took effect {n} times");
        }
    }
    let actions: Vec<&str> = effects
        .iter()
        .filter(|e| e.phase == "action")
        .map(|e| e.step.as_str())
        .collect();
    let want_actions: Vec<&str> = expected.applied.iter().map(|&i| STEPS[i]).collect();
    ensure!(
        actions == want_actions,
        "saga {id} with {plan:?}: actions took effect {actions:?}, expected {want_actions:?}"
    );
    let compensations: Vec<&str> = effects
        .iter()
        .filter(|e| e.phase == "compensation")
        .map(|e| e.step.as_str())
        .collect();
    ensure!(
        compensations == want_compensations,
        "saga {id} with {plan:?}: compensations took effect {compensations:?}, expected {want_compensations:?}"
    );
    Ok(())
}
