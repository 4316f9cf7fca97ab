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
use std::time::Duration;

use futures_util::Stream;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::time::Instant;

use crate::announce::Announcer;
use crate::error::EngineError;
use crate::record::{SagaId, SagaRecord};
use crate::running::RunningSet;
use crate::store::{Committed, SagaStore};

/// One saga's records, from [`Engine::subscribe`](crate::Engine::subscribe): its history,
/// then each record as it is committed, numbered by `seq` with no gap and no repeat; it ends
/// after the saga's final record. A saga the log does not know, or a store that failed,
/// comes as an `Err` item.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<SagaRecord, EngineError>> + Send>>;

/// Every saga's records in log order, from [`Engine::subscribe_all`](crate::Engine::subscribe_all),
/// each with its position, which a reader keeps to resume after it. Shared (`Arc`) because one
/// committed record goes to every subscriber. It does not end while the engine lives.
pub type FeedStream = Pin<Box<dyn Stream<Item = Result<Arc<Committed>, EngineError>> + Send>>;

/// How much less often a subscriber to one saga reads the log while other nodes' records come
/// live ([`crate::Engine::follow_others`]): a safety net, not the way records arrive.
const FOLLOWING_POLL_FACTOR: u32 = 8;

/// Page size when catching up on the whole log.
const FEED_PAGE: u32 = 1000;

/// How a subscriber to one saga learns of records written by another node: unless this node
/// follows the others' commits ([`crate::Engine::follow_others`]), a saga's records are
/// announced live only on the node driving it, so while it is not driven here the log is read
/// every `every`.
pub(crate) struct Elsewhere {
    pub every: Duration,
    /// The sagas this node is driving now.
    pub running: Arc<RunningSet>,
    /// Says whether other nodes' records are announced here too.
    pub announcer: Arc<Announcer>,
}

struct SagaCursor {
    store: Arc<dyn SagaStore>,
    live: broadcast::Receiver<Arc<Committed>>,
    saga_id: SagaId,
    last_seq: u64,
    /// Records read from the log, not yet handed out.
    backlog: VecDeque<SagaRecord>,
    need_log_read: bool,
    finished: bool,
    elsewhere: Elsewhere,
    /// When to read the log next while the saga is driven elsewhere. A deadline, not a
    /// timeout per wait: other sagas' records keep arriving on the live channel.
    next_poll: Option<Instant>,
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
                    Ok(records) if records.is_empty() => {
                        // Nothing after `last_seq`: does the saga exist at all, and has it
                        // finished? A reader resumed at (or past) a finished saga's last
                        // record is owed nothing more: it ends now instead of waiting forever.
                        match self.store.saga(self.saga_id).await {
                            // Its last records may have committed between the two reads (a
                            // summary changes in the same transaction as its records): read
                            // once more, and end only if there is still nothing.
                            Ok(Some(s)) if s.status.is_finished() => {
                                match self.store.saga_records(self.saga_id, self.last_seq).await {
                                    Ok(records) if records.is_empty() => {
                                        self.finished = true;
                                        return None;
                                    }
                                    Ok(records) => self.backlog.extend(records),
                                    Err(e) => {
                                        self.finished = true;
                                        return Some(Err(e.into()));
                                    }
                                }
                            }
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
            let received = match self.poll_deadline() {
                None => self.live.recv().await,
                Some(at) => match tokio::time::timeout_at(at, self.live.recv()).await {
                    Ok(received) => received,
                    Err(_) => {
                        self.next_poll = None;
                        self.need_log_read = true;
                        continue;
                    }
                },
            };
            match received {
                Ok(c) if c.record.saga_id == self.saga_id => {
                    if c.record.seq <= self.last_seq {
                        // A reader resumed past the saga's end (an id from elsewhere) still
                        // ends with the saga.
                        if c.record.kind.is_terminal() {
                            self.finished = true;
                        }
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

    /// `None` while this node drives the saga: every record then comes on the live channel.
    fn poll_deadline(&mut self) -> Option<Instant> {
        if self.elsewhere.running.contains(self.saga_id) {
            self.next_poll = None;
            return None;
        }
        // Following the other nodes, their records come live; a slow look at the log all the
        // same, since a record the announcer could not read (a failed read, a commit around
        // its start) would otherwise leave this stream waiting for the saga's next record,
        // which may never come.
        let every = if self.elsewhere.announcer.following() {
            self.elsewhere.every * FOLLOWING_POLL_FACTOR
        } else {
            self.elsewhere.every
        };
        Some(*self.next_poll.get_or_insert_with(|| Instant::now() + every))
    }

    fn hand_out(&mut self, r: SagaRecord) -> SagaRecord {
        self.last_seq = r.seq;
        // A terminal record ends the stream unless the log already holds more after it: a
        // stuck saga that a person resumed goes on (`saga_resumed`).
        if r.kind.is_terminal() && self.backlog.is_empty() {
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
    elsewhere: Elsewhere,
) -> EventStream {
    let cursor = SagaCursor {
        store,
        live,
        saga_id,
        last_seq: after_seq,
        backlog: VecDeque::new(),
        need_log_read: true,
        finished: false,
        elsewhere,
        next_poll: None,
    };
    Box::pin(futures_util::stream::unfold(cursor, |mut c| async move {
        c.next().await.map(|item| (item, c))
    }))
}

/// Follows the whole log: history in pages, then the live channel, with no gap and no duplicate.
struct FeedCursor {
    store: Arc<dyn SagaStore>,
    live: broadcast::Receiver<Arc<Committed>>,
    /// `None` until the first record when following from "now".
    last_position: Option<i64>,
    backlog: VecDeque<Committed>,
    need_log_read: bool,
}

impl FeedCursor {
    async fn next(&mut self) -> Option<Result<Arc<Committed>, EngineError>> {
        loop {
            if let Some(c) = self.backlog.pop_front() {
                if self.last_position.is_some_and(|p| c.position <= p) {
                    continue;
                }
                self.last_position = Some(c.position);
                return Some(Ok(Arc::new(c)));
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
                    // Positions are dense: a hole is records not announced here (a node that
                    // could not read another's commit). Read them, this one with them.
                    if self.last_position.is_some_and(|p| c.position > p + 1) {
                        self.need_log_read = true;
                        continue;
                    }
                    self.last_position = Some(c.position);
                    return Some(Ok(c));
                }
                // Positions are committed in order, so whatever was missed sits right after
                // the last one handed out.
                Err(RecvError::Lagged(_)) if self.last_position.is_some() => {
                    self.need_log_read = true
                }
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return None,
            }
        }
    }
}

/// `after_position`: resume after it (history first). Otherwise follow from now, where `now` is
/// the last position announced before `live` was subscribed (0 if none yet): knowing it lets a
/// reader that falls behind before its first record re-read what it missed.
pub(crate) fn feed_stream(
    store: Arc<dyn SagaStore>,
    live: broadcast::Receiver<Arc<Committed>>,
    after_position: Option<i64>,
    now: i64,
) -> FeedStream {
    let cursor = FeedCursor {
        store,
        live,
        need_log_read: after_position.is_some(),
        last_position: after_position.or((now > 0).then_some(now)),
        backlog: VecDeque::new(),
    };
    Box::pin(futures_util::stream::unfold(cursor, |mut c| async move {
        c.next().await.map(|item| (item, c))
    }))
}
