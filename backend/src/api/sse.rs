//! Server-sent events on the wire: frames made once, a keep-alive comment when idle.
//!
//! `/api/events` may have thousands of subscribers, so each committed record is rendered into
//! its frame once, by one task ([`EventsFeed`]), and every subscriber is handed the same
//! reference-counted bytes. A subscriber that falls behind the shared channel (a slow reader,
//! or one resuming with `Last-Event-ID`) reads what it missed from the log and renders that
//! itself, then rejoins the channel: nothing lost, nothing twice, and a lagging reader holds no
//! copy of what it is owed.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures_util::{FutureExt, Stream, StreamExt};
use saga_engine::{Committed, Engine, StoreError};
use shared::SagaEvent;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

use crate::metrics::{Metrics, SubscriberGuard};

/// A comment line every this often when nothing else was sent, so proxies and browsers keep
/// an idle stream open.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

pub const KEEP_ALIVE_COMMENT: &[u8] = b":keep-alive\n\n";

/// Items on the shared channel that a subscriber may be behind before it reads from the log
/// instead. A reader that keeps up but barely (a trickle just inside the write timeout) holds
/// the ring's items alive, so this and [`JOIN_AT_MOST`] bound what one slow reader can pin:
/// 1,024 × 32 records × about 0.5 KiB, some 16 MiB, shared, whatever the number of readers.
const CHANNEL_CAPACITY: usize = 1024;

/// Records read from the log at a time by a subscriber catching up.
const LOG_PAGE: u32 = 500;

/// One event as it goes on the wire. `id` is what `Last-Event-ID` brings back.
pub fn frame(id: i64, event: &SagaEvent) -> Bytes {
    let data = serde_json::to_string(event).unwrap_or_default();
    Bytes::from(format!(
        "id: {id}\nevent: {}\ndata: {data}\n\n",
        event.event.kind()
    ))
}

/// A committed record's `/api/events` frame (its id is the log position).
fn render(c: &Committed) -> Bytes {
    frame(c.position, &super::sagas::event(&c.record))
}

/// Rendered records on the shared channel: the log positions `first..=position`, their
/// frames one after another. Records committed together (a group commit's, taken in at once)
/// travel as one item, so that each subscriber is woken and writes once for them, not once
/// per record: with thousands of subscribers every extra wave of wake-ups and writes is what
/// the last of them waits for.
#[derive(Clone)]
struct Frame {
    first: i64,
    position: i64,
    bytes: Bytes,
}

impl Frame {
    fn of(c: &Committed) -> Frame {
        Frame {
            first: c.position,
            position: c.position,
            bytes: render(c),
        }
    }
}

/// At most this many records go out as one item.
const JOIN_AT_MOST: usize = 32;

/// `/api/events`: every committed record rendered once and shared by all subscribers.
#[derive(Clone)]
pub struct EventsFeed {
    inner: Arc<FeedInner>,
}

struct FeedInner {
    engine: Engine,
    /// For new subscribers; `None` once the server is stopping. The render task holds the
    /// other sender: when both are gone every subscriber's stream ends, after what it was
    /// already sent. (Ending streams this way costs them nothing per event, where watching a
    /// shutdown signal in each stream would take a shared lock on every poll.)
    live: Mutex<Option<broadcast::Sender<Frame>>>,
    /// The position of the last record the render task took in: "now" for a new subscriber.
    now: AtomicI64,
    metrics: Arc<Metrics>,
}

impl EventsFeed {
    /// Starts the task that renders each record committed from now on (needs a runtime); it
    /// ends, and with it every subscriber's stream, when `shutdown` turns true.
    pub async fn start(
        engine: &Engine,
        metrics: Arc<Metrics>,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Self, StoreError> {
        let now = engine.store().last_position().await?;
        let (live, _) = broadcast::channel(CHANNEL_CAPACITY);
        let inner = Arc::new(FeedInner {
            engine: engine.clone(),
            live: Mutex::new(Some(live.clone())),
            now: AtomicI64::new(now),
            metrics,
        });
        tokio::spawn(render_from(Arc::downgrade(&inner), live, now, shutdown));
        Ok(EventsFeed { inner })
    }

    /// Frames after `after` (a log position) if given, else from now on; counted as a
    /// subscriber while the stream lives; ends when the server stops.
    pub fn frames(&self, after: Option<i64>) -> impl Stream<Item = Bytes> + Send + 'static {
        // Subscribe before reading "now": a record taken in after the read arrives live.
        let live = self
            .inner
            .live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|sender| sender.subscribe());
        let now = self.inner.now.load(Ordering::SeqCst);
        let cursor = FeedCursor {
            engine: self.inner.engine.clone(),
            live,
            last: after.unwrap_or(now),
            backlog: VecDeque::new(),
            read_log: after.is_some(),
            _counted: self.inner.metrics.sse_subscriber(),
        };
        futures_util::stream::unfold(cursor, |mut c| async move {
            c.next().await.map(|bytes| (bytes, c))
        })
    }
}

/// The render task: follows the engine's feed from `after` and puts each record's frame on the
/// shared channel, until the server stops. Renders nothing while nobody listens.
async fn render_from(
    feed: Weak<FeedInner>,
    live: broadcast::Sender<Frame>,
    mut after: i64,
    mut shutdown: watch::Receiver<bool>,
) {
    let stopping = async move {
        let _ = shutdown.wait_for(|stopping| *stopping).await;
    };
    let mut stopping = std::pin::pin!(stopping);
    loop {
        let Some(engine) = feed.upgrade().map(|f| f.engine.clone()) else {
            return;
        };
        let mut records = engine.subscribe_all(Some(after));
        drop(engine);
        loop {
            let next = tokio::select! {
                next = records.next() => next,
                () = &mut stopping => {
                    if let Some(inner) = feed.upgrade() {
                        inner.live.lock().unwrap_or_else(|e| e.into_inner()).take();
                    }
                    return;
                }
            };
            let mut taken = Vec::new();
            let mut failed = None;
            match next {
                None => break,
                Some(Ok(c)) => taken.push(c),
                Some(Err(e)) => failed = Some(e),
            }
            // And whatever else is ready now: the rest of the commit, usually.
            while failed.is_none() && !taken.is_empty() && taken.len() < JOIN_AT_MOST {
                match records.next().now_or_never() {
                    Some(Some(Ok(c))) => taken.push(c),
                    Some(Some(Err(e))) => failed = Some(e),
                    Some(None) | None => break,
                }
            }
            let Some(inner) = feed.upgrade() else { return };
            if let (Some(first), Some(last)) = (taken.first(), taken.last()) {
                after = last.position;
                if live.receiver_count() > 0 {
                    let bytes = if taken.len() == 1 {
                        render(first)
                    } else {
                        Bytes::from(taken.iter().map(|c| render(c)).collect::<Vec<_>>().concat())
                    };
                    let _ = live.send(Frame {
                        first: first.position,
                        position: last.position,
                        bytes,
                    });
                }
                inner.now.store(last.position, Ordering::SeqCst);
            }
            if let Some(e) = failed {
                // The log could not be read: try again from the last record taken in.
                tracing::warn!(error = %e, "the event feed could not read the log; retrying");
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One subscriber of `/api/events`: the log from `last` on while behind, the shared channel
/// once caught up, stitched by position.
struct FeedCursor {
    engine: Engine,
    /// `None`: the server is stopping.
    live: Option<broadcast::Receiver<Frame>>,
    /// The position of the last frame handed out (or where the subscriber starts).
    last: i64,
    /// Frames read from the log, not yet handed out.
    backlog: VecDeque<Frame>,
    read_log: bool,
    _counted: SubscriberGuard,
}

impl FeedCursor {
    async fn next(&mut self) -> Option<Bytes> {
        loop {
            if let Some(f) = self.backlog.pop_front() {
                if f.position > self.last {
                    self.last = f.position;
                    return Some(f.bytes);
                }
                continue;
            }
            if self.read_log {
                match self.engine.store().records_after(self.last, LOG_PAGE).await {
                    Ok(page) => {
                        // A full page means there may be more: keep reading before going live.
                        self.read_log = page.len() == LOG_PAGE as usize;
                        self.backlog.extend(page.iter().map(Frame::of));
                    }
                    Err(e) => {
                        // The client resumes from its last id once the stream ends.
                        tracing::warn!(error = %e, "an event-stream subscriber could not read the log");
                        return None;
                    }
                }
                continue;
            }
            let live = self.live.as_mut()?;
            match live.recv().await {
                Ok(f) if f.first == self.last + 1 => {
                    self.last = f.position;
                    return Some(f.bytes);
                }
                Ok(f) if f.position <= self.last => {}
                // Partly handed out already (from the log), or after a hole (positions are
                // dense): the rest and the hole are in the log.
                Ok(_) => self.read_log = true,
                // Positions are committed in order, so what was missed comes right after the
                // last one handed out: read it from the log.
                Err(RecvError::Lagged(_)) => self.read_log = true,
                Err(RecvError::Closed) => return None,
            }
        }
    }
}

/// A `text/event-stream` response of `frames`, with keep-alive comments while idle.
pub fn response<S>(frames: S) -> Response
where
    S: Stream<Item = Bytes> + Send + 'static,
{
    let body = Body::from_stream(with_keep_alive(frames).map(Ok::<_, std::convert::Infallible>));
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// `frames`, with a keep-alive comment after [`KEEP_ALIVE`] without one.
///
/// Ten thousand subscribers go through this for every committed round, so no timer is re-armed
/// per frame: when the timer fires, it looks at when the last frame went and waits the rest.
pub fn with_keep_alive<S>(frames: S) -> impl Stream<Item = Bytes> + Send
where
    S: Stream<Item = Bytes> + Send,
{
    KeepAlive {
        frames: Box::pin(frames),
        idle: Box::pin(tokio::time::sleep(KEEP_ALIVE)),
        last: Instant::now(),
    }
}

struct KeepAlive<S> {
    frames: Pin<Box<S>>,
    idle: Pin<Box<Sleep>>,
    /// When the last frame or comment went out.
    last: Instant,
}

impl<S: Stream<Item = Bytes>> Stream for KeepAlive<S> {
    type Item = Bytes;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = this.frames.as_mut().poll_next(cx) {
            if frame.is_some() {
                this.last = Instant::now();
            }
            return Poll::Ready(frame);
        }
        loop {
            ready!(this.idle.as_mut().poll(cx));
            let due = this.last + KEEP_ALIVE;
            if Instant::now() >= due {
                this.last = Instant::now();
                this.idle.as_mut().reset(this.last + KEEP_ALIVE);
                return Poll::Ready(Some(Bytes::from_static(KEEP_ALIVE_COMMENT)));
            }
            // A frame went out since the timer was set: wait out the rest of the quiet spell.
            this.idle.as_mut().reset(due);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use saga_engine::{MemoryStore, SagaDefinition, Step};

    /// An engine whose log holds one saga of two steps: positions 1 to 6.
    async fn six_records() -> Engine {
        let engine = Engine::new(MemoryStore::new());
        let steps = (0..2)
            .map(|i| Step::new(&format!("s{i}")).action(move |_| async move { Ok(i) }))
            .collect();
        engine.register(SagaDefinition::new("two", steps).expect("a valid definition"));
        engine
            .run("two", &serde_json::json!({}))
            .await
            .expect("ran");
        engine
    }

    /// What a subscriber that had everything up to `last` is handed when the channel carries
    /// the six records as one item: the ids of the frames, in order.
    async fn handed_out(engine: &Engine, last: i64) -> Vec<i64> {
        let (tx, rx) = broadcast::channel(16);
        let mut cursor = FeedCursor {
            engine: engine.clone(),
            live: Some(rx),
            last,
            backlog: VecDeque::new(),
            read_log: false,
            _counted: Arc::new(Metrics::default()).sse_subscriber(),
        };
        let all = engine.store().records_after(0, 100).await.expect("the log");
        assert_eq!(all.len(), 6);
        let joined = all.iter().map(render).collect::<Vec<_>>().concat();
        let item = Frame {
            first: 1,
            position: 6,
            bytes: Bytes::from(joined),
        };
        tx.send(item).map_err(|_| "no receiver").expect("sent");
        drop(tx);
        let mut text = String::new();
        while let Some(bytes) = cursor.next().await {
            text.push_str(&String::from_utf8_lossy(&bytes));
        }
        text.lines()
            .filter_map(|l| l.strip_prefix("id: ")?.parse().ok())
            .collect()
    }

    #[tokio::test]
    async fn an_item_of_several_records_goes_out_whole_or_is_completed_from_the_log() {
        let engine = six_records().await;
        assert_eq!(handed_out(&engine, 0).await, vec![1, 2, 3, 4, 5, 6]);
        // Had two of them (resumed from the log while they were joined): the other four, once.
        assert_eq!(handed_out(&engine, 2).await, vec![3, 4, 5, 6]);
        assert_eq!(handed_out(&engine, 6).await, Vec::<i64>::new());
    }

    #[tokio::test(start_paused = true)]
    async fn a_comment_goes_out_only_after_a_quiet_spell() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
        let frames = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
        let mut stream = std::pin::pin!(with_keep_alive(frames));
        let comment = Bytes::from_static(KEEP_ALIVE_COMMENT);

        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(stream.next().now_or_never(), None, "nothing yet at 10 s");
        tx.send(Bytes::from_static(b"data: 1\n\n")).unwrap();
        assert_eq!(
            stream.next().await,
            Some(Bytes::from_static(b"data: 1\n\n"))
        );
        // 15 s after the start, but only 5 s after the frame: still quiet.
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(
            stream.next().now_or_never(),
            None,
            "the frame at 10 s moved it on"
        );
        // 15 s after the frame.
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(stream.next().await, Some(comment.clone()));
        tokio::time::advance(Duration::from_secs(15)).await;
        assert_eq!(stream.next().await, Some(comment));
        drop(tx);
        assert_eq!(stream.next().await, None, "the stream ends with its frames");
    }
}
