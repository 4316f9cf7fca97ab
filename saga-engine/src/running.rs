//! The sagas this process is driving: one driver per saga, whoever asks to drive it.

use std::collections::HashSet;
use std::sync::{Mutex, MutexGuard};

use crate::record::SagaId;

#[derive(Default)]
pub(crate) struct RunningSet {
    sagas: Mutex<HashSet<SagaId>>,
}

impl RunningSet {
    /// What it guards is one insert or remove at a time, never left half done by a panic.
    fn lock(&self) -> MutexGuard<'_, HashSet<SagaId>> {
        self.sagas.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Claim the saga for a driver; false if another driver already has it.
    pub(crate) fn insert(&self, id: SagaId) -> bool {
        self.lock().insert(id)
    }

    pub(crate) fn remove(&self, id: SagaId) {
        self.lock().remove(&id);
    }

    pub(crate) fn contains(&self, id: SagaId) -> bool {
        self.lock().contains(&id)
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_driver_per_saga() {
        let set = RunningSet::default();
        let ids: Vec<SagaId> = (0..100).map(|_| SagaId::new()).collect();
        assert!(ids.iter().all(|&id| set.insert(id)));
        assert!(
            ids.iter().all(|&id| !set.insert(id)),
            "a saga claimed twice"
        );
        assert_eq!(set.len(), 100);
        for &id in &ids[..40] {
            set.remove(id);
        }
        assert_eq!(set.len(), 60);
        assert!(!set.contains(ids[0]) && set.contains(ids[40]));
        assert!(set.insert(ids[0]), "a finished saga can be driven again");
    }
}
