//! Server-sent events on the wire: frames made once, a keep-alive comment when idle.
//!
//! axum's `Sse` formats every event for every subscriber. `/api/events` may have ten thousand
//! subscribers, so its frames are rendered once per record (by a [`FeedView`]) and handed to
//! each connection as the same reference-counted bytes; this module turns such a stream into
//! the `text/event-stream` response.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

use futures_util::{Stream, StreamExt};
use saga_engine::{Committed, Engine, FeedView};
use shared::SagaEvent;
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

use crate::metrics::Metrics;

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
    /// The whole log as `/api/events` frames, each rendered once for every subscriber.
    pub fn new(engine: &Engine, metrics: Arc<Metrics>, shutdown: watch::Receiver<bool>) -> Self {
        let frames = engine.feed_view(COALESCE, |c: &Committed| {
            frame(c.position, &super::sagas::event(&c.record))
        });
        EventsFeed {
            frames,
            metrics,
            shutdown,
        }
    }

    /// Frames after `after` (a log position) if given, else from now on; counted as a
    /// subscriber while the stream lives; ends when the server stops.
    pub fn frames(&self, after: Option<i64>) -> impl Stream<Item = Bytes> + Send + 'static {
        let guard = self.metrics.sse_subscriber();
        let mut stop = self.shutdown.clone();
        self.frames
            .subscribe(after)
            .take_while(|r| std::future::ready(r.is_ok()))
            .filter_map(move |r| {
                let _held = &guard;
                std::future::ready(r.ok().map(|f| f.value.clone()))
            })
            .take_until(async move {
                let _ = stop.wait_for(|stopping| *stopping).await;
            })
    }
}

/// A `text/event-stream` response of `frames`, with keep-alive comments while idle.
pub fn response<S>(frames: S) -> Response
where
    S: Stream<Item = Bytes> + Send + 'static,
{
    let body = Body::from_stream(KeepAlive {
        frames: Box::pin(frames),
        idle: Box::pin(tokio::time::sleep(KEEP_ALIVE)),
    });
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

struct KeepAlive<S> {
    frames: Pin<Box<S>>,
    idle: Pin<Box<Sleep>>,
}

impl<S: Stream<Item = Bytes>> Stream for KeepAlive<S> {
    type Item = Result<Bytes, std::convert::Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.frames.as_mut().poll_next(cx) {
            Poll::Ready(Some(frame)) => {
                self.idle.as_mut().reset(Instant::now() + KEEP_ALIVE);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match self.idle.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    self.idle.as_mut().reset(Instant::now() + KEEP_ALIVE);
                    Poll::Ready(Some(Ok(Bytes::from_static(KEEP_ALIVE_COMMENT))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }
}
