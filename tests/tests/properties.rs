//! Property test: for every fault plan proptest can think of, the saga ends as the plan implies
//! and the invariants of DESIGN.md §2 hold (see `check_saga`).

mod support;

use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use saga_engine::Engine;
use saga_shop_tests::{
    ActionFault, CompensationFault, FaultPlan, MemoryLedger, StepPlan, TestInput, check_saga,
    test_saga,
};

fn action_fault() -> impl Strategy<Value = ActionFault> {
    prop_oneof![
        6 => Just(ActionFault::None),
        1 => Just(ActionFault::Fail),
        1 => (1u32..5).prop_map(ActionFault::Transient),
        1 => Just(ActionFault::Timeout),
    ]
}

fn compensation_fault() -> impl Strategy<Value = CompensationFault> {
    prop_oneof![
        6 => Just(CompensationFault::None),
        1 => (1u32..6).prop_map(CompensationFault::Transient),
        1 => Just(CompensationFault::Fail),
    ]
}

fn fault_plan() -> impl Strategy<Value = FaultPlan> {
    proptest::array::uniform4((action_fault(), compensation_fault()).prop_map(
        |(action, compensation)| StepPlan {
            action,
            compensation,
        },
    ))
    .prop_map(|steps| FaultPlan { steps })
}

#[test]
fn every_fault_plan_ends_as_it_implies_in_memory() {
    every_fault_plan_ends_as_it_implies(support::Backend::Memory, 128);
}

#[test]
fn every_fault_plan_ends_as_it_implies_on_sqlite() {
    every_fault_plan_ends_as_it_implies(support::Backend::Sqlite, 128);
}

#[test]
fn every_fault_plan_ends_as_it_implies_on_postgres() {
    every_fault_plan_ends_as_it_implies(support::Backend::Postgres, 48);
}

fn every_fault_plan_ends_as_it_implies(backend: support::Backend, cases: u32) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let Some((engine, ledger, store)) = rt.block_on(async {
        let store = support::fresh_store(backend, "proptest").await?;
        let ledger = MemoryLedger::default();
        let engine = Engine::with_shared_store(Arc::clone(&store), Default::default());
        engine.register(test_saga(
            Arc::new(ledger.clone()),
            Duration::from_millis(50),
            None,
        ));
        Some((engine, ledger, store))
    }) else {
        return;
    };
    let mut runner = TestRunner::new(Config {
        cases,
        ..Config::default()
    });
    runner
        .run(&fault_plan(), |plan| {
            rt.block_on(async {
                let id = engine
                    .start("test_saga", &TestInput { plan: plan.clone() })
                    .await
                    .unwrap();
                engine.wait_finished(id).await.unwrap();
                check_saga(engine.store(), &ledger, id, &plan).await
            })
            .map_err(|e| TestCaseError::fail(format!("{e:#}")))
        })
        .unwrap();
    // The engine first, then its schema.
    drop(engine);
    drop(store);
}
