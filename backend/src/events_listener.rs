//! The listener in front of the HTTP server, with a fast path for `GET /api/events`.
//!
//! Why: `/api/events` is the one endpoint with thousands of connections that stay open and
//! idle. Through hyper each costs two 8 KiB buffers and a connection state machine for as long
//! as it lives (≈ 15 KiB resident per subscriber, measured); written directly to the socket
//! by a lane ([`crate::events_lanes`]) it costs little more than the socket (≈ 0.5 KiB). So
//! each new connection's first request is *peeked* (not read): a plain, complete
//! `GET /api/events` (HTTP/1.1, no body; a numeric `Last-Event-ID`, `?after=N`, both or
//! neither) is answered here with the same frames the route would send (from a lane when it
//! follows the stream from now on, from a task of its own when it resumes), and the
//! connection closes when the stream ends. Anything else — another path, another query, a
//! malformed or partial head, a second request on a kept-alive connection — goes to hyper
//! untouched, which answers it (and any error) as usual.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::api::sse::EventsFeed;
use crate::events_lanes::Lanes;

/// Longest request head the fast path looks at; longer ones go to hyper.
const MAX_HEAD: usize = 4096;

/// How long a new connection may take to send its first request before hyper takes it over
/// (and applies its own rules for slow clients).
const FIRST_REQUEST_WAIT: Duration = Duration::from_secs(5);

pub(crate) const RESPONSE_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\nconnection: close\r\n\r\n";

/// A TCP listener for `axum::serve` that serves `/api/events` itself when it can.
pub struct EventsListener {
    tcp: TcpListener,
    feed: Option<Served>,
    /// Connections the fast path looked at and left for hyper.
    handed_back: mpsc::Receiver<(TcpStream, SocketAddr)>,
    hand_back: mpsc::Sender<(TcpStream, SocketAddr)>,
}

impl EventsListener {
    /// `feed` is `None` where there is no event stream (a process hosting one service).
    /// Needs a tokio runtime: it starts the lanes that write to subscribers following the
    /// stream from now on.
    pub fn new(tcp: TcpListener, feed: Option<EventsFeed>) -> Self {
        let (hand_back, handed_back) = mpsc::channel(1024);
        EventsListener {
            tcp,
            feed: feed.map(|feed| Served {
                lanes: Lanes::start(&feed),
                feed,
            }),
            handed_back,
            hand_back,
        }
    }
}

impl axum::serve::Listener for EventsListener {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        loop {
            let accepted = tokio::select! {
                Some(conn) = self.handed_back.recv() => return conn,
                accepted = self.tcp.accept() => accepted,
            };
            let (stream, addr) = match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            // No Nagle: an event written while the previous one is not yet acknowledged must
            // not wait for that acknowledgement (a delayed ACK can hold it for 40 ms).
            if let Err(e) = stream.set_nodelay(true) {
                tracing::debug!(error = %e, "could not set TCP_NODELAY");
            }
            let Some(feed) = &self.feed else {
                return (stream, addr);
            };
            let (feed, hand_back) = (feed.clone(), self.hand_back.clone());
            tokio::spawn(async move {
                if let Some(stream) = serve_if_events(stream, &feed).await {
                    let _ = hand_back.send((stream, addr)).await;
                }
            });
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}

/// The event stream and the lanes that write it to subscribers following it from now on.
#[derive(Clone)]
struct Served {
    feed: EventsFeed,
    lanes: Lanes,
}

/// A request the fast path answers: how long its head is, and where to resume.
#[derive(Debug, PartialEq)]
struct EventsRequest {
    head_len: usize,
    after: Option<i64>,
}

/// `Some` only for a complete, plain `GET /api/events` (or `/api/events?after=N`, the page's
/// request after reading the list) that the route would answer with 200.
fn events_request(bytes: &[u8]) -> Option<EventsRequest> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut request = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(head_len) = request.parse(bytes).ok()? else {
        return None;
    };
    if request.method? != "GET" || request.version? != 1 {
        return None;
    }
    // Any other query, and a bad position, are the route's to answer.
    let mut after = match request.path?.strip_prefix("/api/events")? {
        "" => None,
        query => Some(query.strip_prefix("?after=")?.parse().ok()?),
    };
    for h in request.headers.iter() {
        let name = h.name.to_ascii_lowercase();
        match name.as_str() {
            // A body, an upgrade or an expectation: not the plain request served here.
            "content-length" if h.value != b"0" => return None,
            "transfer-encoding" | "upgrade" | "expect" => return None,
            "last-event-id" => {
                // A bad one is hyper's to refuse, with the API's error. As on the route, it
                // wins over `?after=`: a browser reconnecting sends the URL it first asked for
                // and the position it has reached since.
                after = Some(std::str::from_utf8(h.value).ok()?.trim().parse().ok()?);
            }
            _ => {}
        }
    }
    Some(EventsRequest { head_len, after })
}

/// Serve the connection if its first request is for `/api/events`; otherwise give it back,
/// nothing read from it.
async fn serve_if_events(stream: TcpStream, served: &Served) -> Option<TcpStream> {
    // Wait for the first bytes before taking a buffer to peek them into: an idle connection
    // holds nothing here.
    match tokio::time::timeout(FIRST_REQUEST_WAIT, stream.readable()).await {
        Ok(Ok(())) => {}
        Ok(Err(_)) => return None,
        Err(_) => return Some(stream),
    }
    let request = {
        let mut head = vec![0u8; MAX_HEAD];
        match tokio::time::timeout(FIRST_REQUEST_WAIT, stream.peek(&mut head)).await {
            Ok(Ok(n)) => events_request(&head[..n]),
            Ok(Err(_)) => return None,
            Err(_) => None,
        }
    };
    let Some(request) = request else {
        return Some(stream);
    };
    let mut stream = stream;
    let mut head = vec![0u8; request.head_len];
    if stream.read_exact(&mut head).await.is_err() {
        return None;
    }
    drop(head);
    match request.after {
        // From now on: as every other such subscriber, from one lane.
        None => served.lanes.join(stream),
        // Resuming: history from the log first, which is this subscriber's alone; then, caught
        // up, a lane.
        Some(after) => served.lanes.resume(stream, after, &served.feed).await,
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_plain_get_of_the_event_stream_takes_the_fast_path() {
        let plain = b"GET /api/events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n";
        assert_eq!(
            events_request(plain),
            Some(EventsRequest {
                head_len: plain.len(),
                after: None
            })
        );
        let resume = b"GET /api/events HTTP/1.1\r\nHost: x\r\nLast-Event-ID:  42 \r\n\r\n";
        assert_eq!(events_request(resume).map(|r| r.after), Some(Some(42)));
        let after = b"GET /api/events?after=7 HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(events_request(after).map(|r| r.after), Some(Some(7)));
        let reconnect = b"GET /api/events?after=7 HTTP/1.1\r\nLast-Event-ID: 90\r\n\r\n";
        assert_eq!(events_request(reconnect).map(|r| r.after), Some(Some(90)));
        for other in [
            &b"GET /api/events HTTP/1.1\r\nHost: x\r\n"[..],
            b"GET /api/events?x=1 HTTP/1.1\r\n\r\n",
            b"GET /api/events?after=soon HTTP/1.1\r\n\r\n",
            b"GET /api/events?after=7&x=1 HTTP/1.1\r\n\r\n",
            b"GET /api/eventsx HTTP/1.1\r\n\r\n",
            b"GET /api/sagas HTTP/1.1\r\n\r\n",
            b"POST /api/events HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}",
            b"GET /api/events HTTP/1.0\r\n\r\n",
            b"GET /api/events HTTP/1.1\r\nLast-Event-ID: soon\r\n\r\n",
            b"GET /api/events HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET /api/events HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
            b"\x16\x03\x01 not http at all",
        ] {
            assert_eq!(
                events_request(other),
                None,
                "{:?}",
                String::from_utf8_lossy(other)
            );
        }
    }
}
