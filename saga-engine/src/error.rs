//! What the engine's API can fail with.

use crate::record::SagaId;
use crate::store::StoreError;

/// Why the engine could not do what it was asked. A saga that fails is not an error here: it
/// ends `compensated` or `stuck`, which is a [`SagaStatus`](crate::SagaStatus).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// Started, or found unfinished in the log, under a name nobody
    /// [registered](crate::Engine::register).
    #[error("no saga definition named {0} is registered")]
    UnknownDefinition(String),
    /// The id is taken: [`Engine::start_with_id`](crate::Engine::start_with_id) with an id
    /// that was started before, which is how a retried start finds it already done.
    #[error("a saga with id {0} already exists")]
    DuplicateSaga(SagaId),
    /// Subscribed to a saga the log has never heard of.
    #[error("no saga with id {0}")]
    UnknownSaga(SagaId),
    /// [`Engine::retry_stuck`](crate::Engine::retry_stuck) on a saga that is not stuck and
    /// was never resumed: there is nothing to retry.
    #[error("saga {0} is {1}, not stuck: there is nothing to retry")]
    NotStuck(SagaId, crate::SagaStatus),
    /// The input did not serialize to JSON, so the saga could not be logged.
    #[error("the saga input cannot be serialized: {0}")]
    Input(String),
    /// A saga's records do not replay (a gap in their numbers, a step its definition does not
    /// have): the saga is left alone rather than driven on a guess.
    #[error("the saga log is inconsistent: {0}")]
    CorruptLog(String),
    /// The store failed: the saga stops where its log stands and is resumed by a later
    /// [`Engine::recover`](crate::Engine::recover).
    #[error(transparent)]
    Store(StoreError),
    /// The runtime stopped before the saga's outcome was known; its log holds what was done.
    #[error("the engine is shutting down")]
    ShuttingDown,
}

impl From<StoreError> for EngineError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::DuplicateSaga(id) => EngineError::DuplicateSaga(id),
            e => EngineError::Store(e),
        }
    }
}
