//! Event subscriptions: history from the log, then the live broadcast, stitched with no gap
//! and no duplicate.
//!
//! The trick is ordering: subscribe to the broadcast *first*, then read history. Anything
//! committed after the read arrives live; anything in both is recognised by its number (`seq`
//! for one saga, `position` for the whole log) and skipped. A reader that falls behind the
//! broadcast's buffer (or sees a hole in the numbering) re-reads the missing stretch from the
//! log, which holds everything that was ever announced.

use std::collections::{HashSet, VecDeque};
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures_util::Stream;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::time::Instant;

use crate::error::EngineError;
use crate::record::{SagaId, SagaRecord};
use crate::running::RunningSet;
use crate::store::{Committed, SagaStore};

pub type EventStream = Pin<Box<dyn Stream<Item = Result<SagaRecord, EngineError>> + Send>>;
pub type FeedStream = Pin<Box<dyn Stream<Item = Result<Arc<Committed>, EngineError>> + Send>>;

/// A [`FeedView`] holds records back for its window only with at least this many subscribers.
const COALESCE_FROM_SUBSCRIBERS: usize = 100;

/// Page size when catching up on the whole log.
const FEED_PAGE: u32 = 1000;

/// How a subscriber to one saga learns of records written by another node: a saga's records
/// are announced live only on the node driving it, so while it is not driven here the log is
/// read every `every`.
pub(crate) struct Elsewhere {
    pub every: Duration,
    /// The sagas this node is driving now.
    pub running: Arc<RunningSet>,
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
        Some(
            *self
                .next_poll
                .get_or_insert_with(|| Instant::now() + self.elsewhere.every),
        )
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

/// What a feed carries: something that knows where in the log it came from. An item may
/// stand for a run of consecutive records (a [`FeedView`] sends a window's records as one):
/// `first_position..=position`.
pub trait Positioned {
    /// The last record it covers.
    fn position(&self) -> i64;
    /// The first record it covers.
    fn first_position(&self) -> i64 {
        self.position()
    }
}

impl Positioned for Committed {
    fn position(&self) -> i64 {
        self.position
    }
}

/// Records of the whole log as a [`FeedView`] made them: the positions `first..=position`
/// and their rendering (one record, or a window's records joined).
#[derive(Debug)]
pub struct Rendered<T> {
    pub first: i64,
    pub position: i64,
    pub value: T,
}

impl<T> Positioned for Rendered<T> {
    fn position(&self) -> i64 {
        self.position
    }
    fn first_position(&self) -> i64 {
        self.first
    }
}

/// Turns a record read from the log into what the live channel carries.
type FromLog<X> = Arc<dyn Fn(Committed) -> Arc<X> + Send + Sync>;

/// Follows the whole log: history in pages, then a live channel, with no gap and no duplicate.
/// Generic over what the live channel carries so that a [`FeedView`]'s subscribers share one
/// rendering of each record.
struct FeedCursor<X> {
    store: Arc<dyn SagaStore>,
    live: broadcast::Receiver<Arc<X>>,
    from_log: FromLog<X>,
    /// `None` until the first record when following from "now".
    last_position: Option<i64>,
    backlog: VecDeque<Committed>,
    need_log_read: bool,
}

impl<X: Positioned> FeedCursor<X> {
    async fn next(&mut self) -> Option<Result<Arc<X>, EngineError>> {
        loop {
            if let Some(c) = self.backlog.pop_front() {
                if self.last_position.is_some_and(|p| c.position <= p) {
                    continue;
                }
                self.last_position = Some(c.position);
                return Some(Ok((self.from_log)(c)));
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
                    match self.last_position {
                        Some(p) if c.position() <= p => continue,
                        // Partly handed out already (from the log): the rest is in the log too.
                        Some(p) if c.first_position() <= p => {
                            self.need_log_read = true;
                            continue;
                        }
                        _ => {}
                    }
                    self.last_position = Some(c.position());
                    return Some(Ok(c));
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

/// `after_position`: resume after it (history first). Otherwise follow from now, where `now` is
/// the last position announced before `live` was subscribed (0 if none yet): knowing it lets a
/// reader that falls behind before its first record re-read what it missed.
fn follow<X: Positioned + Send + Sync + 'static>(
    store: Arc<dyn SagaStore>,
    live: broadcast::Receiver<Arc<X>>,
    from_log: FromLog<X>,
    after_position: Option<i64>,
    now: i64,
) -> Pin<Box<dyn Stream<Item = Result<Arc<X>, EngineError>> + Send>> {
    let cursor = FeedCursor {
        store,
        live,
        from_log,
        need_log_read: after_position.is_some(),
        last_position: after_position.or((now > 0).then_some(now)),
        backlog: VecDeque::new(),
    };
    Box::pin(futures_util::stream::unfold(cursor, |mut c| async move {
        c.next().await.map(|item| (item, c))
    }))
}

pub(crate) fn feed_stream(
    store: Arc<dyn SagaStore>,
    live: broadcast::Receiver<Arc<Committed>>,
    after_position: Option<i64>,
    now: i64,
) -> FeedStream {
    follow(store, live, Arc::new(Arc::new), after_position, now)
}

pub type ViewStream<T> = Pin<Box<dyn Stream<Item = Result<Arc<Rendered<T>>, EngineError>> + Send>>;

/// The whole log as some reader renders it (an SSE frame, say), each record rendered **once**
/// and shared by every subscriber of the view, however many there are. One task follows the
/// log and renders; subscribers stitch history (rendered on their own, rarely needed) to that
/// live channel exactly as [`Engine::subscribe_all`](crate::Engine::subscribe_all) does.
///
/// With a non-zero `window` and many subscribers (100 or more), records committed within it of
/// each other are sent together, their renderings joined into one item (`join`): ten thousand
/// subscribers are each woken once and make one write per window instead of one per record,
/// for at most `window` more delay. The window closes early once every saga it holds records of
/// has finished (a purchase on a quiet shop goes out as soon as it is done). With few
/// subscribers every record goes out at once.
pub struct FeedView<T> {
    inner: Arc<ViewInner<T>>,
}

impl<T> Clone for FeedView<T> {
    fn clone(&self) -> Self {
        FeedView {
            inner: self.inner.clone(),
        }
    }
}

struct ViewInner<T> {
    store: Arc<dyn SagaStore>,
    live: broadcast::Sender<Arc<Rendered<T>>>,
    /// The position of the last record sent on `live` (0: none yet).
    sent: AtomicI64,
    render: Arc<dyn Fn(&Committed) -> T + Send + Sync>,
    join: Box<dyn Fn(Vec<T>) -> T + Send + Sync>,
    /// See [`FeedView::set_audience`].
    audience: OnceLock<Box<dyn Fn() -> usize + Send + Sync>>,
}

impl<T> ViewInner<T> {
    fn audience(&self) -> usize {
        match self.audience.get() {
            Some(count) => count(),
            None => self.live.receiver_count(),
        }
    }

    /// Send the records held back as one item, noting its last position first (see [`follow`]).
    fn send_all(&self, pending: &mut Vec<Rendered<T>>) {
        let (Some(first), Some(last)) = (pending.first(), pending.last()) else {
            return;
        };
        let (first, last, one) = (first.first, last.position, pending.len() == 1);
        let mut values = pending.drain(..).map(|r| r.value);
        let value = if one {
            values.next()
        } else {
            Some((self.join)(values.collect()))
        };
        let Some(value) = value else { return };
        self.sent.fetch_max(last, Ordering::SeqCst);
        let _ = self.live.send(Arc::new(Rendered {
            first,
            position: last,
            value,
        }));
    }
}

impl<T: Send + Sync + 'static> FeedView<T> {
    pub(crate) fn start(
        store: Arc<dyn SagaStore>,
        feed: impl Fn(Option<i64>) -> FeedStream + Send + 'static,
        buffer: usize,
        window: std::time::Duration,
        render: Arc<dyn Fn(&Committed) -> T + Send + Sync>,
        join: Box<dyn Fn(Vec<T>) -> T + Send + Sync>,
    ) -> FeedView<T> {
        let (live, _) = broadcast::channel(buffer.max(16));
        let inner = Arc::new(ViewInner {
            store,
            live,
            sent: AtomicI64::new(0),
            render,
            join,
            audience: OnceLock::new(),
        });
        let weak = Arc::downgrade(&inner);
        let mut records = feed(None);
        tokio::spawn(async move {
            use futures_util::StreamExt;
            let mut last = None;
            // Rendered, not yet sent: sent together once `window` has passed since the first.
            let mut pending: Vec<Rendered<T>> = Vec::new();
            // The sagas with records held that have not finished within the window.
            let mut open: HashSet<SagaId> = HashSet::new();
            let mut deadline = tokio::time::Instant::now();
            loop {
                let next = if pending.is_empty() {
                    records.next().await
                } else {
                    match tokio::time::timeout_at(deadline, records.next()).await {
                        Ok(next) => next,
                        Err(_) => {
                            let Some(view) = weak.upgrade() else { return };
                            view.send_all(&mut pending);
                            continue;
                        }
                    }
                };
                let Some(next) = next else {
                    return;
                };
                let Some(view) = weak.upgrade() else { return };
                match next {
                    Ok(c) => {
                        last = Some(c.position);
                        // Nobody listening: nothing to render (history is rendered on demand).
                        if view.live.receiver_count() > 0 {
                            let value = (view.render)(&c);
                            let rendered = Rendered {
                                first: c.position,
                                position: c.position,
                                value,
                            };
                            if pending.is_empty() {
                                deadline = tokio::time::Instant::now() + window;
                                open.clear();
                            }
                            if c.record.kind.is_terminal() {
                                open.remove(&c.record.saga_id);
                            } else {
                                open.insert(c.record.saga_id);
                            }
                            pending.push(rendered);
                            // Few subscribers: a wake-up is cheap, waiting is not. And once
                            // every saga held has finished, no record of theirs is coming to
                            // join: waiting longer would only add delay. Anything held goes
                            // out with this record, never after it.
                            let few =
                                window.is_zero() || view.audience() < COALESCE_FROM_SUBSCRIBERS;
                            if few || open.is_empty() {
                                view.send_all(&mut pending);
                            }
                        }
                    }
                    Err(e) => {
                        view.send_all(&mut pending);
                        // The log could not be read to fill a gap: try again from where we were.
                        tracing::warn!(error = %e, "feed view: reading the log failed; retrying");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        records = feed(last);
                    }
                }
            }
        });
        FeedView { inner }
    }

    /// How many readers the view's items reach, where one subscription may serve many (a
    /// writer fanning out to sockets): it decides whether records are held for the window. By
    /// default, the number of subscriptions. Set once; later calls change nothing.
    pub fn set_audience(&self, count: impl Fn() -> usize + Send + Sync + 'static) {
        let _ = self.inner.audience.set(Box::new(count));
    }

    /// Rendered records: after `after_position` in the log if given, else from now on.
    pub fn subscribe(&self, after_position: Option<i64>) -> ViewStream<T> {
        let render = self.inner.render.clone();
        let live = self.inner.live.subscribe();
        let now = self.inner.sent.load(Ordering::SeqCst);
        follow(
            self.inner.store.clone(),
            live,
            Arc::new(move |c: Committed| {
                Arc::new(Rendered {
                    first: c.position,
                    position: c.position,
                    value: render(&c),
                })
            }),
            after_position,
            now,
        )
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures_util::StreamExt;
    use serde_json::json;

    use super::*;
    use crate::store::MemoryStore;
    use crate::{Engine, SagaDefinition, Step};

    /// Per saga: started, 2 × (step started, step succeeded), completed.
    const RECORDS_PER_SAGA: i64 = 6;

    /// `two`: two no-op steps. `waits`: one step that takes an hour, to keep a window open.
    fn engine_with_two_steps() -> Engine {
        let engine = Engine::new(MemoryStore::new());
        let steps = (0..2)
            .map(|i| Step::new(&format!("s{i}")).action(move |_| async move { Ok(i) }))
            .collect();
        engine.register(SagaDefinition::new("two", steps).expect("valid"));
        let slow = Step::new("slow").action(|_| async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(())
        });
        engine.register(SagaDefinition::new("waits", vec![slow]).expect("valid"));
        engine
    }

    /// Start a saga that stays unfinished, so that a window holding its records stays open for
    /// its full length; returns how many records it logged (started, then its step started).
    async fn keep_the_window_open(engine: &Engine) -> i64 {
        engine.start("waits", &json!({})).await.expect("started");
        let mut feed = engine.subscribe_all(Some(0));
        for _ in 0..2 {
            feed.next().await.expect("more").expect("read");
        }
        2
    }

    /// A view rendering each record as its position, joining a window's into one list.
    fn positions_view(engine: &Engine, window: Duration) -> FeedView<Vec<i64>> {
        engine.feed_view(
            window,
            |c: &Committed| vec![c.position],
            |parts| parts.concat(),
        )
    }

    /// As many subscribers as it takes for the view to hold records for its window.
    fn enough_to_hold(view: &FeedView<Vec<i64>>) -> Vec<ViewStream<Vec<i64>>> {
        (0..COALESCE_FROM_SUBSCRIBERS)
            .map(|_| view.subscribe(None))
            .collect()
    }

    /// Let the view's task take in what was announced (time is paused: nothing elapses).
    async fn let_the_view_run() {
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
    }

    /// The next `n` positions a subscriber is handed, checking that every item's value
    /// matches the positions it says it covers.
    async fn next_positions(stream: &mut ViewStream<Vec<i64>>, n: usize) -> Vec<i64> {
        let mut seen = Vec::new();
        while seen.len() < n {
            let item = tokio::time::timeout(Duration::from_secs(60), stream.next())
                .await
                .expect("the subscriber got everything in time")
                .expect("the stream goes on")
                .expect("no error");
            let covered: Vec<i64> = (item.first..=item.position).collect();
            assert_eq!(item.value, covered, "an item holds exactly what it covers");
            seen.extend(covered);
        }
        seen
    }

    /// With many subscribers, a saga's records committed within the window reach each
    /// subscriber as one item.
    #[tokio::test(start_paused = true)]
    async fn records_within_the_window_go_out_as_one_item() {
        let engine = engine_with_two_steps();
        let view = positions_view(&engine, Duration::from_millis(500));
        let mut subscribers = enough_to_hold(&view);
        engine.run("two", &json!({})).await.expect("ran");
        for s in &mut subscribers {
            let item = s.next().await.expect("an item").expect("no error");
            assert_eq!((item.first, item.position), (1, RECORDS_PER_SAGA));
            assert_eq!(item.value, (1..=RECORDS_PER_SAGA).collect::<Vec<_>>());
        }
    }

    /// Subscribers leaving while records are held back (down to fewer than send together):
    /// the next record goes out at once, but only after the held ones, so that none is
    /// overtaken and then skipped as already seen.
    #[tokio::test(start_paused = true)]
    async fn held_records_are_not_overtaken_when_subscribers_leave() {
        let engine = engine_with_two_steps();
        let view = positions_view(&engine, Duration::from_secs(5));
        let mut subscribers = enough_to_hold(&view);
        let open = keep_the_window_open(&engine).await;
        engine.run("two", &json!({})).await.expect("ran");
        let_the_view_run().await;
        let mut stays = subscribers.pop().expect("one");
        drop(subscribers);
        engine.run("two", &json!({})).await.expect("ran");
        let_the_view_run().await;
        let all = open + 2 * RECORDS_PER_SAGA;
        let seen = next_positions(&mut stays, all as usize).await;
        assert_eq!(seen, (1..=all).collect::<Vec<_>>());
    }

    /// Once every saga held in the window has finished, the window closes without waiting.
    #[tokio::test(start_paused = true)]
    async fn a_window_closes_once_its_sagas_have_finished() {
        let engine = engine_with_two_steps();
        let window = Duration::from_secs(3600);
        let view = positions_view(&engine, window);
        let mut subscribers = enough_to_hold(&view);
        let started = tokio::time::Instant::now();
        engine.run("two", &json!({})).await.expect("ran");
        let seen = next_positions(&mut subscribers[0], RECORDS_PER_SAGA as usize).await;
        assert_eq!(seen, (1..=RECORDS_PER_SAGA).collect::<Vec<_>>());
        assert!(
            started.elapsed() < window,
            "sent when the saga finished, not when the window ran out"
        );
    }

    /// A subscriber that read part of a window from the log (it resumed while the window was
    /// held back) gets the rest of it once, in order, when the window goes out as one item.
    #[tokio::test(start_paused = true)]
    async fn a_window_partly_read_from_the_log_is_not_handed_out_twice() {
        let engine = engine_with_two_steps();
        let view = positions_view(&engine, Duration::from_secs(5));
        let _many = enough_to_hold(&view);
        let open = keep_the_window_open(&engine).await;
        engine.run("two", &json!({})).await.expect("ran");
        let_the_view_run().await;
        let before = open + RECORDS_PER_SAGA;
        let mut resumed = view.subscribe(Some(3));
        let from_log = next_positions(&mut resumed, before as usize - 3).await;
        assert_eq!(from_log, (4..=before).collect::<Vec<_>>());
        engine.run("two", &json!({})).await.expect("ran");
        // The view now sends all of them as one item, most of which were handed out already.
        let rest = next_positions(&mut resumed, RECORDS_PER_SAGA as usize).await;
        let want: Vec<i64> = (before + 1..=before + RECORDS_PER_SAGA).collect();
        assert_eq!(rest, want);
    }
}
