//! What the engine's API can fail with.

use crate::record::SagaId;
use crate::store::StoreError;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    #[error("no saga definition named {0} is registered")]
    UnknownDefinition(String),
    #[error("a saga with id {0} already exists")]
    DuplicateSaga(SagaId),
    #[error("no saga with id {0}")]
    UnknownSaga(SagaId),
    #[error("the saga input cannot be serialized: {0}")]
    Input(String),
    #[error("the saga log is inconsistent: {0}")]
    CorruptLog(String),
    #[error(transparent)]
    Store(StoreError),
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
