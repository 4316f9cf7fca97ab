//! Server-sent events on the wire: frames made once, a keep-alive comment when idle.
//!
//! axum's `Sse` formats every event for every subscriber. `/api/events` may have ten thousand
//! subscribers, so its frames are rendered once per record (by a [`FeedView`]) and handed to
//! each connection as the same reference-counted bytes; this module turns such a stream into
//! the `text/event-stream` response.

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

use futures_util::{Stream, StreamExt};
use saga_engine::{Committed, Engine, FeedView, Rendered};
use shared::SagaEvent;
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

use crate::metrics::{Metrics, SubscriberGuard};

/// A comment line every this often when nothing else was sent, so proxies and browsers keep
/// an idle stream open.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// With many subscribers, commits this close together go out to `/api/events` together (a
/// purchase's five commits come a few milliseconds apart; each separate one costs every
/// subscriber a write). With few, each goes out at once.
const COALESCE: Duration = Duration::from_millis(10);

pub const KEEP_ALIVE_COMMENT: &[u8] = b":keep-alive\n\n";

/// One event as it goes on the wire. `id` is what `Last-Event-ID` brings back.
pub fn frame(id: i64, event: &SagaEvent) -> Bytes {
    let data = serde_json::to_string(event).unwrap_or_default();
    Bytes::from(format!("id: {id}\nevent: {}\ndata: {data}\n\n", event.kind))
}

/// What every subscriber of `/api/events` follows, whichever way it connected (the axum route
/// or the listener's fast path, [`crate::events_listener`]).
#[derive(Clone)]
pub struct EventsFeed {
    frames: FeedView<Bytes>,
    metrics: Arc<Metrics>,
    shutdown: watch::Receiver<bool>,
}

impl EventsFeed {
    /// The whole log as `/api/events` frames, each rendered once for every subscriber; the
    /// frames of a window sent together go out as one buffer, so that each subscriber takes
    /// them in one piece.
    pub fn new(engine: &Engine, metrics: Arc<Metrics>, shutdown: watch::Receiver<bool>) -> Self {
        let frames = engine.feed_view(
            COALESCE,
            |c: &Committed| frame(c.position, &super::sagas::event(&c.record)),
            |frames: Vec<Bytes>| Bytes::from(frames.concat()),
        );
        // The lanes of the listener's fast path each hold one subscription for thousands.
        let counted = metrics.clone();
        frames.set_audience(move || counted.sse_subscribers());
        EventsFeed {
            frames,
            metrics,
            shutdown,
        }
    }

    /// Frames after `after` (a log position) if given, else from now on; counted as a
    /// subscriber while the stream lives; ends when the server stops.
    pub fn frames(&self, after: Option<i64>) -> impl Stream<Item = Bytes> + Send + 'static {
        let counted = self.subscriber();
        self.items(after).map(move |item| {
            let _held = &counted;
            item.value.clone()
        })
    }

    /// Like [`Self::frames`], but each item with the log positions it covers, and not
    /// counted: for a writer that serves many subscribers from one stream.
    pub fn items(
        &self,
        after: Option<i64>,
    ) -> impl Stream<Item = Arc<Rendered<Bytes>>> + Send + 'static {
        let mut stop = self.shutdown.clone();
        self.frames
            .subscribe(after)
            .take_while(|r| std::future::ready(r.is_ok()))
            .filter_map(|r| std::future::ready(r.ok()))
            .take_until(async move {
                let _ = stop.wait_for(|stopping| *stopping).await;
            })
    }

    /// Whether the server is stopping (the streams of [`Self::items`] end then).
    pub fn stopping(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// A lane's count of members went from `from` to `to` (for the metrics).
    pub fn lane_members_changed(&self, from: usize, to: usize) {
        self.metrics.lane_members_changed(from, to);
    }

    /// Counts one subscriber (in the metrics) while the guard lives.
    pub fn subscriber(&self) -> SubscriberGuard {
        self.metrics.sse_subscriber()
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

/// `frames`, with a keep-alive comment after [`KEEP_ALIVE`] without one. Used by both the
/// route and the listener's fast path.
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
    use futures_util::FutureExt;

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
