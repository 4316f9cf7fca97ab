//! One submission per `Idempotency-Key` at a time in this process.
//!
//! A client that retries on a timeout can send the same order many times at once. Without a
//! turn, each would find no saga yet, tokenise the card and try to start it; the engine lets one
//! start and refuses the rest before the first one's `saga_started` is committed, so they would
//! find nothing to answer with. Taking turns, the first starts the saga (its start returns once
//! that record is durable) and every later one finds it and answers with the same 202. Across
//! nodes sharing one database the store's unique saga id decides, and the loser's insert returns
//! only after the winner committed, so it finds the saga too.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use saga_engine::SagaId;
use tokio::sync::OwnedMutexGuard;

/// The submissions in progress, by the saga id their key names.
#[derive(Default)]
pub struct Submissions {
    turns: Mutex<HashMap<SagaId, Entry>>,
}

struct Entry {
    turn: Arc<tokio::sync::Mutex<()>>,
    /// Requests holding or waiting for this turn; the entry goes when the last one leaves, so
    /// the map holds only keys in use.
    users: usize,
}

impl Submissions {
    /// Wait until no other request of this process works on `saga_id`, and hold it until the
    /// returned turn is dropped. A request that stops waiting (its client went away) leaves
    /// nothing behind.
    pub async fn turn(&self, saga_id: SagaId) -> Turn<'_> {
        let turn = {
            let mut turns = self.turns.lock().unwrap_or_else(PoisonError::into_inner);
            let entry = turns.entry(saga_id).or_insert_with(|| Entry {
                turn: Arc::default(),
                users: 0,
            });
            entry.users += 1;
            Arc::clone(&entry.turn)
        };
        let user = User {
            submissions: self,
            saga_id,
        };
        Turn {
            _held: turn.lock_owned().await,
            _user: user,
        }
    }
}

/// A request's turn on one saga id. Fields drop in order: the turn first, then the count.
pub struct Turn<'a> {
    _held: OwnedMutexGuard<()>,
    _user: User<'a>,
}

struct User<'a> {
    submissions: &'a Submissions,
    saga_id: SagaId,
}

impl Drop for User<'_> {
    fn drop(&mut self) {
        let mut turns = self
            .submissions
            .turns
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = turns.get_mut(&self.saga_id) {
            entry.users -= 1;
            if entry.users == 0 {
                turns.remove(&self.saga_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn one_turn_at_a_time_per_id_and_nothing_left_behind() {
        let submissions = Arc::new(Submissions::default());
        let id = SagaId::new();
        let inside = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let (submissions, inside, most) =
                    (submissions.clone(), inside.clone(), most.clone());
                tokio::spawn(async move {
                    let _turn = submissions.turn(id).await;
                    let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    tokio::task::yield_now().await;
                    inside.fetch_sub(1, Ordering::SeqCst);
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(most.load(Ordering::SeqCst), 1);
        assert!(submissions.turns.lock().unwrap().is_empty());

        // Another id is not held up; a waiter that gives up leaves no entry.
        let held = submissions.turn(id).await;
        let _other = submissions.turn(SagaId::new()).await;
        let gave_up = tokio::time::timeout(Duration::from_millis(10), submissions.turn(id)).await;
        assert!(gave_up.is_err());
        drop(held);
        drop(_other);
        assert!(submissions.turns.lock().unwrap().is_empty());
    }
}
