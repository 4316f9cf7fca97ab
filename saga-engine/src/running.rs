//! The sagas this process is driving: one driver per saga, whoever asks to drive it. Every
//! saga enters and leaves this set, on whichever worker thread runs it, so it is sharded.

use std::collections::HashSet;

use crate::record::SagaId;
use crate::sharded::Sharded;

#[derive(Default)]
pub(crate) struct RunningSet {
    sagas: Sharded<HashSet<SagaId>>,
}

impl RunningSet {
    /// Claim the saga for a driver; false if another driver already has it.
    pub(crate) fn insert(&self, id: SagaId) -> bool {
        self.sagas.lock(id).insert(id)
    }

    pub(crate) fn remove(&self, id: SagaId) {
        self.sagas.lock(id).remove(&id);
    }

    pub(crate) fn contains(&self, id: SagaId) -> bool {
        self.sagas.lock(id).contains(&id)
    }

    pub(crate) fn len(&self) -> usize {
        self.sagas.each().map(|shard| shard.len()).sum()
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
