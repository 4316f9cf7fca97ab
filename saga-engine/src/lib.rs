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
//! ```no_run
//! # #[cfg(feature = "sqlite")] {
//! use saga_engine::{Engine, SagaDefinition, SqliteStore, Step, StepError};
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let store = SqliteStore::open(std::path::Path::new("sagas.db")).await?;
//! let engine = Engine::new(store);
//! engine.register(SagaDefinition::new("trip", vec![
//!     Step::new("book_hotel")
//!         .action(|ctx| async move { Ok::<_, StepError>(format!("room for {}", ctx.idempotency_key)) })
//!         .compensation(|_ctx| async move { Ok(()) }),
//!     Step::new("book_flight"),
//! ])?);
//! engine.recover().await?; // resume whatever a previous run left unfinished
//! let id = engine.start("trip", &serde_json::json!({"who": "Ada"})).await?;
//! let status = engine.wait_finished(id).await?;
//! # Ok(()) }
//! # }
//! ```

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
pub mod store;

pub use definition::{
    BoxFuture, DefinitionError, RetryPolicy, SagaDefinition, Step, StepContext, StepError,
};
pub use engine::{Engine, EngineConfig};
pub use error::EngineError;
pub use events::{EventStream, FeedStream};
pub use log_writer::LogStats;
pub use record::{RecordKind, SagaId, SagaRecord, SagaStatus};
#[cfg(feature = "postgres")]
pub use store::PgStore;
#[cfg(feature = "sqlite")]
pub use store::SqliteStore;
pub use store::{Committed, MemoryStore, SagaStore, SagaSummary, StoreError};
