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
use futures_util::Stream;
use saga_engine::{Committed, FeedView};
use shared::SagaEvent;
use tokio::time::{Instant, Sleep};

/// A comment line every this often when nothing else was sent, so proxies and browsers keep
/// an idle stream open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// One event as it goes on the wire. `id` is what `Last-Event-ID` brings back.
pub fn frame(id: i64, event: &SagaEvent) -> Bytes {
    let data = serde_json::to_string(event).unwrap_or_default();
    Bytes::from(format!("id: {id}\nevent: {}\ndata: {data}\n\n", event.kind))
}

/// The whole log as `/api/events` frames, each rendered once for every subscriber.
pub fn frames_view(engine: &saga_engine::Engine) -> FeedView<Bytes> {
    engine.feed_view(|c: &Committed| frame(c.position, &super::sagas::event(&c.record)))
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
                    Poll::Ready(Some(Ok(Bytes::from_static(b":keep-alive\n\n"))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }
}
