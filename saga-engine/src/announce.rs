//! Announcing committed records to this node's subscribers, in log order.
//!
//! On a store only this process writes, a commit's records are the next positions of the log
//! and go out as they are. On a shared store (several nodes on one PostgreSQL), other nodes
//! commit in between: their records reach this node as notifications of the log's new head
//! ([`SagaStore::watch`]), and are read from the log and announced before anything this node
//! commits after them. Every node so announces every record, once, in position order, which is
//! the one order of the log (positions are dense and given at commit).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{Mutex, broadcast};

use crate::log_writer::Counters;
use crate::store::{Committed, SagaStore, StoreError};

/// Most records read from the log in one go while catching up.
const PAGE: u32 = 1000;

pub(crate) struct Announcer {
    store: Arc<dyn SagaStore>,
    events: broadcast::Sender<Arc<Committed>>,
    counters: Arc<Counters>,
    /// The position of the last record announced; `None` until this node knows where the log
    /// stood (its first commit, or [`Announcer::start_at_head`]). Held while announcing, so
    /// two announcers never interleave.
    cursor: Mutex<Option<i64>>,
    /// Whether other nodes' records are being followed ([`crate::Engine::follow_others`]):
    /// then a subscriber to one saga gets them live, whoever drives it.
    following: AtomicBool,
}

impl Announcer {
    pub(crate) fn new(
        store: Arc<dyn SagaStore>,
        events: broadcast::Sender<Arc<Committed>>,
        counters: Arc<Counters>,
    ) -> Self {
        Announcer {
            store,
            events,
            counters,
            cursor: Mutex::new(None),
            following: AtomicBool::new(false),
        }
    }

    /// Start after the log's current end, unless this node has announced something already.
    pub(crate) async fn start_at_head(&self) -> Result<(), StoreError> {
        let mut cursor = self.cursor.lock().await;
        if cursor.is_none() {
            let head = self.store.last_position().await?;
            self.counters.announced(head);
            *cursor = Some(head);
        }
        Ok(())
    }

    /// Records this node has just committed. On a shared store, whatever other nodes committed
    /// just before them is read and announced first.
    pub(crate) async fn local(&self, committed: Vec<Committed>) {
        let Some(first) = committed.first().map(|c| c.position) else {
            return;
        };
        let mut cursor = self.cursor.lock().await;
        if let Some(at) = *cursor
            && first > at + 1
            && self.store.shared()
            && let Err(e) = self.catch_up(&mut cursor, Some(first - 1)).await
        {
            // Subscribers see the hole and read it from the log themselves.
            tracing::warn!(error = %e, "reading other nodes' records failed");
        }
        for c in committed {
            self.send(&mut cursor, Arc::new(c));
        }
    }

    /// Another node committed, up to `head` (`None`: up to wherever the log has got).
    pub(crate) async fn remote(&self, head: Option<i64>) -> Result<(), StoreError> {
        let mut cursor = self.cursor.lock().await;
        if cursor.is_some_and(|at| head.is_some_and(|head| head <= at)) {
            return Ok(());
        }
        self.catch_up(&mut cursor, head).await
    }

    /// Read and announce the log after the cursor, up to `upto` or its end.
    async fn catch_up(
        &self,
        cursor: &mut Option<i64>,
        upto: Option<i64>,
    ) -> Result<(), StoreError> {
        loop {
            let at = match *cursor {
                Some(at) => at,
                None => {
                    let head = self.store.last_position().await?;
                    *cursor = Some(head);
                    self.counters.announced(head);
                    return Ok(());
                }
            };
            let want = match upto {
                Some(upto) if upto <= at => return Ok(()),
                Some(upto) => u32::try_from(upto - at).unwrap_or(PAGE).min(PAGE),
                None => PAGE,
            };
            let page = self.store.records_after(at, want).await?;
            let full = page.len() == want as usize;
            if page.is_empty() {
                return Ok(());
            }
            for c in page {
                self.send(cursor, Arc::new(c));
            }
            if !full && upto.is_none() {
                return Ok(());
            }
        }
    }

    /// Send one record unless it was announced already.
    fn send(&self, cursor: &mut Option<i64>, c: Arc<Committed>) {
        if cursor.is_some_and(|at| c.position <= at) {
            return;
        }
        *cursor = Some(c.position);
        // Noted before the record is sent: see `Counters::last_announced`.
        self.counters.announced(c.position);
        // Nobody listening, or a receiver gone since, is fine.
        let _ = self.events.send(c);
    }

    pub(crate) fn following(&self) -> bool {
        self.following.load(Ordering::Relaxed)
    }

    pub(crate) fn set_following(&self, following: bool) {
        self.following.store(following, Ordering::Relaxed);
    }
}
