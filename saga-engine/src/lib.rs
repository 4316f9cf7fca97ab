//! A durable saga executor.
//!
//! A **saga** keeps one business transaction consistent across services that each own their
//! data. It is a sequence of **steps**; each step has an **action** (a local transaction in one
//! service) and a **compensation** that semantically undoes it. If a step fails for good, the
//! saga **unwinds**: it compensates every step that completed (or might have, because its
//! outcome is unknown) in reverse order. A step that never started is never compensated.
//!
//! How this crate thinks:
//! - The **saga log** ([`SagaRecord`]s in a [`SagaStore`]) is the truth. Every transition is
//!   appended durably *before* it is announced to subscribers and before the next action runs.
//!   A saga's state is what replaying its log gives, so recovery after a crash is a replay
//!   ([`Engine::recover`]): forward if it was going forward, backward if it was unwinding.
//! - Every action and compensation gets an **idempotency key** (`saga id : step : phase`),
//!   the same on retries and after restarts, so participants apply each effect at most once.
//! - Failures are classified by the step's code ([`StepError::Business`] is final,
//!   [`StepError::Retryable`] is retried with exponential backoff and jitter); a timeout means
//!   the outcome is unknown. A compensation that keeps failing leaves the saga `stuck`.
//! - Records of many sagas are committed together (**group commit**), so durability costs one
//!   fsync per batch, not per record.
//!
//! Using it comes down to four moves: describe a kind of saga as a [`SagaDefinition`] of
//! [`Step`]s (each an action and its compensation, both async closures given a
//! [`StepContext`]); make an [`Engine`] on a [`SagaStore`]; [`register`](Engine::register) the
//! definition; [`start`](Engine::start) sagas of it and follow them
//! ([`subscribe`](Engine::subscribe) streams a saga's records as they are committed).
//!
//! ```
//! use saga_engine::{Engine, MemoryStore, SagaDefinition, SagaStatus, Step, StepError};
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let engine = Engine::new(MemoryStore::new());
//! engine.register(SagaDefinition::new("transfer", vec![
//!     Step::new("debit")
//!         .action(|ctx| async move {
//!             let cents: u64 = ctx.input()?;
//!             // Call the bank with `ctx.idempotency_key`; its answer is this step's output.
//!             Ok::<_, StepError>(format!("debited {cents}"))
//!         })
//!         .compensation(|_ctx| async move { Ok(()) }), // credit it back
//!     Step::new("credit")
//!         .action(|_ctx| async move {
//!             Err::<(), _>(StepError::Business("account closed".into()))
//!         }),
//! ])?);
//! engine.recover().await?; // resume whatever a previous run left unfinished
//! let id = engine.start("transfer", &1_500u64).await?;
//! // The credit is refused, so the debit is compensated.
//! assert_eq!(engine.wait_finished(id).await?, SagaStatus::Compensated);
//! # Ok(()) }
//! ```
//!
//! `examples/trip.rs` is a whole saga in one file: book a flight, a hotel and a car, and
//! watch the first two undone when the car cannot be had.
//!
//! # Stores
//!
//! [`MemoryStore`] keeps the log in memory (tests, examples, trying the engine). The durable
//! stores are behind Cargo features, both on by default: `sqlite` gives `SqliteStore`
//! (embedded, one node) and `postgres` gives `PgStore` (several nodes sharing one database).
//! Without either, the crate has no database dependency at all. Each store migrates its own
//! tables when opened. Another database is one implementation of [`SagaStore`] away.

#![deny(missing_docs)]

mod announce;
mod definition;
mod engine;
mod error;
mod events;
mod executor;
mod jitter;
mod log_writer;
mod progress;
mod record;
mod running;
mod store;

pub use definition::{
    BoxFuture, DefinitionError, RetryPolicy, SagaDefinition, Step, StepContext, StepError,
};
pub use engine::{Engine, EngineConfig, Retried};
pub use error::EngineError;
pub use events::{EventStream, FeedStream};
pub use log_writer::LogStats;
pub use record::{RecordKind, SagaId, SagaRecord, SagaStatus, StepOutcome};
#[cfg(feature = "postgres")]
pub use store::PgStore;
#[cfg(feature = "sqlite")]
pub use store::SqliteStore;
pub use store::{
    Claim, Claimed, Committed, LogHead, LogWatch, MemoryStore, SagaStore, SagaSummary, StoreError,
};
