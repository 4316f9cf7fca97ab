//! Test participants for the saga engine: a four-step saga whose steps do what a fault plan
//! says, and an effect ledger that remembers every effect a participant applied.
//!
//! The ledger is what lets the tests judge the engine from the outside, as a service would:
//! participants dedupe on the idempotency key like real services, and the ledger counts
//! applications per (saga, step, phase). If the engine ever sent a different key for the same
//! step (after a retry or a restart), the count goes to 2 and the tests fail.

pub mod axe;
pub mod browser;
pub mod cluster;
pub mod ledger;
pub mod plan;
pub mod server;
pub mod shop;

pub use ledger::{Effect, Ledger, MemoryLedger, SqliteLedger};
pub mod check;

pub use check::{check_saga, check_saga_with};
pub use plan::{
    ActionFault, CompensationFault, CrashPoint, Expected, FaultPlan, STEPS, StepPlan, TestInput,
    test_saga,
};

/// A unique name for a throwaway database or schema.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}
