//! Event subscriptions: history from the log, then the live broadcast, stitched with no gap
//! and no duplicate.
//!
//! The trick is ordering: subscribe to the broadcast *first*, then read history. Anything
//! committed after the read arrives live; anything in both is recognised by its number (`seq`
//! for one saga, `position` for the whole log) and skipped. A reader that falls behind the
//! broadcast's buffer (or sees a hole in the numbering) re-reads the missing stretch from the
//! log, which holds everything that was ever announced.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;

use futures_util::Stream;
use tokio::sync::broadcast::{self, error::RecvError};

use crate::error::EngineError;
use crate::record::{SagaId, SagaRecord};
use crate::store::{Committed, SagaStore};

pub type EventStream = Pin<Box<dyn Stream<Item = Result<SagaRecord, EngineError>> + Send>>;
pub type FeedStream = Pin<Box<dyn Stream<Item = Result<Committed, EngineError>> + Send>>;

/// Page size when catching up on the whole log.
const FEED_PAGE: u32 = 1000;

struct SagaCursor {
    store: Arc<dyn SagaStore>,
    live: broadcast::Receiver<Arc<Committed>>,
    saga_id: SagaId,
    last_seq: u64,
    /// Records read from the log, not yet handed out.
    backlog: VecDeque<SagaRecord>,
    need_log_read: bool,
    finished: bool,
}

impl SagaCursor {
    async fn next(&mut self) -> Option<Result<SagaRecord, EngineError>> {
        loop {
            if self.finished {
                return None;
            }
            if let Some(r) = self.backlog.pop_front() {
                if r.seq <= self.last_seq {
                    continue;
                }
                return Some(Ok(self.hand_out(r)));
            }
            if self.need_log_read {
                self.need_log_read = false;
                match self.store.saga_records(self.saga_id, self.last_seq).await {
                    Ok(records) if records.is_empty() && self.last_seq == 0 => {
                        // Nothing logged: does the saga exist at all?
                        match self.store.saga(self.saga_id).await {
                            Ok(Some(_)) => {}
                            Ok(None) => {
                                self.finished = true;
                                return Some(Err(EngineError::UnknownSaga(self.saga_id)));
                            }
                            Err(e) => return Some(Err(e.into())),
                        }
                    }
                    Ok(records) => self.backlog.extend(records),
                    Err(e) => {
                        self.finished = true;
                        return Some(Err(e.into()));
                    }
                }
                continue;
            }
            match self.live.recv().await {
                Ok(c) if c.record.saga_id == self.saga_id => {
                    if c.record.seq <= self.last_seq {
                        continue;
                    }
                    if c.record.seq == self.last_seq + 1 {
                        return Some(Ok(self.hand_out(c.record.clone())));
                    }
                    // A hole: fill it from the log (the hole and this record are both there).
                    self.need_log_read = true;
                }
                Ok(_) => {}
                Err(RecvError::Lagged(_)) => self.need_log_read = true,
                Err(RecvError::Closed) => return None,
            }
        }
    }

    fn hand_out(&mut self, r: SagaRecord) -> SagaRecord {
        self.last_seq = r.seq;
        if r.kind.is_terminal() {
            self.finished = true;
        }
        r
    }
}

pub(crate) fn saga_stream(
    store: Arc<dyn SagaStore>,
    live: broadcast::Receiver<Arc<Committed>>,
    saga_id: SagaId,
    after_seq: u64,
) -> EventStream {
    let cursor = SagaCursor {
        store,
        live,
        saga_id,
        last_seq: after_seq,
        backlog: VecDeque::new(),
        need_log_read: true,
        finished: false,
    };
    Box::pin(futures_util::stream::unfold(cursor, |mut c| async move {
        c.next().await.map(|item| (item, c))
    }))
}

struct FeedCursor {
    store: Arc<dyn SagaStore>,
    live: broadcast::Receiver<Arc<Committed>>,
    /// `None` until the first record when following from "now".
    last_position: Option<i64>,
    backlog: VecDeque<Committed>,
    need_log_read: bool,
}

impl FeedCursor {
    async fn next(&mut self) -> Option<Result<Committed, EngineError>> {
        loop {
            if let Some(c) = self.backlog.pop_front() {
                if self.last_position.is_some_and(|p| c.position <= p) {
                    continue;
                }
                self.last_position = Some(c.position);
                return Some(Ok(c));
            }
            if self.need_log_read {
                let after = self.last_position.unwrap_or(0);
                match self.store.records_after(after, FEED_PAGE).await {
                    Ok(page) => {
                        // A full page means there may be more: keep reading before going live.
                        self.need_log_read = page.len() == FEED_PAGE as usize;
                        self.backlog.extend(page);
                    }
                    Err(e) => return Some(Err(e.into())),
                }
                continue;
            }
            match self.live.recv().await {
                Ok(c) => {
                    if self.last_position.is_some_and(|p| c.position <= p) {
                        continue;
                    }
                    self.last_position = Some(c.position);
                    return Some(Ok((*c).clone()));
                }
                // Positions of one node's log are committed in order, so whatever was missed
                // sits right after the last one handed out.
                Err(RecvError::Lagged(_)) if self.last_position.is_some() => {
                    self.need_log_read = true
                }
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return None,
            }
        }
    }
}

pub(crate) fn feed_stream(
    store: Arc<dyn SagaStore>,
    live: broadcast::Receiver<Arc<Committed>>,
    after_position: Option<i64>,
) -> FeedStream {
    let cursor = FeedCursor {
        store,
        live,
        need_log_read: after_position.is_some(),
        last_position: after_position,
        backlog: VecDeque::new(),
    };
    Box::pin(futures_util::stream::unfold(cursor, |mut c| async move {
        c.next().await.map(|item| (item, c))
    }))
}
