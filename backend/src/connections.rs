//! Accepting and serving connections: every request, event streams included, goes through
//! hyper and the router's tower layers; this module adds what a public server needs around
//! them.
//!
//! - **A cap on open connections** ([`Limits::max_connections`]). Each holds a descriptor and
//!   some memory; past the cap, a connection is answered `503` with the API's JSON error and
//!   closed, so the accept loop never stalls on a full descriptor table and `/healthz` keeps
//!   answering once load falls. The process's descriptor limit is raised to its hard limit at
//!   start, and the cap is lowered to fit under it. The saga's calls to this process's own
//!   services come in on a second, loopback-only listener ([`Limits::internal`]), so that a
//!   full public one never fails a saga's step.
//! - **A deadline for a request head** ([`Limits::request_head_timeout`]): from the moment a
//!   connection opens, or finished its previous response, it has this long to send a whole
//!   request head. This closes connections that never send anything, idle kept-alive ones and
//!   slowloris heads alike (hyper's header-read timer, which runs whenever the connection waits
//!   for a head). A response in progress (an event stream) is not idle.
//! - **A write deadline** ([`Limits::write_timeout`]): a peer that stops reading is dropped once
//!   no byte could be written for this long. An event stream's subscriber then resumes from the
//!   last id it received; meanwhile hyper stops pulling the stream, so what it is owed stays in
//!   the log, not in memory.
//! - **Graceful shutdown**: the listener closes, idle connections close at once, requests in
//!   flight finish (event streams end on the shutdown signal, see [`crate::app::AppState`]).

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Response, StatusCode, header};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, oneshot};
use tokio::time::{Instant, Sleep};

/// How many refused connections may be answered at once; beyond that they are closed unanswered.
const REFUSALS_AT_ONCE: usize = 64;
/// A refused connection's request head must arrive within this.
const REFUSAL_HEAD_TIMEOUT: Duration = Duration::from_secs(2);
/// Descriptors kept free of connections: databases, their WAL files, outgoing service calls.
const DESCRIPTOR_RESERVE: u64 = 256;
/// What a connection buffers while reading, roughly at most (hyper checks it between reads, so a
/// read may pass it once); a request head that does not fit is refused with 431.
const HEAD_BUFFER: usize = 64 * 1024;
/// How long to wait for in-flight requests at shutdown before closing them.
const DRAIN: Duration = Duration::from_secs(10);

/// The limits a connection is held to (flags in [`crate::config::Config`]).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub request_head_timeout: Duration,
    pub write_timeout: Duration,
}

/// Open connections at most on the listener for the saga's calls to this process's own
/// services. Each costs two descriptors (both ends are in this process).
const INTERNAL_CONNECTIONS: usize = 2048;

impl Limits {
    /// The listener the saga calls this process's own services on (loopback only, not
    /// published): apart from the public one, so that a public listener full of subscribers or
    /// hostile connections cannot fail a saga's steps. Its head timeout is well above the
    /// service client's pool idle timeout, so the client, not the server, closes idle ones.
    pub fn internal(public: Limits) -> Limits {
        Limits {
            max_connections: INTERNAL_CONNECTIONS,
            request_head_timeout: Duration::from_secs(120),
            write_timeout: public.write_timeout,
        }
    }
}

/// Raise the process's descriptor limit as far as allowed, and fit both listeners' caps under
/// it with [`DESCRIPTOR_RESERVE`] to spare: the internal one takes at most a quarter of what
/// is left (two descriptors a connection), the public one the rest.
pub fn fit_to_descriptors(mut public: Limits, mut internal: Limits) -> (Limits, Limits) {
    if let Some(available) = raise_descriptor_limit() {
        let budget =
            usize::try_from(available.saturating_sub(DESCRIPTOR_RESERVE)).unwrap_or(usize::MAX);
        internal.max_connections = internal.max_connections.min(budget / 4).max(16);
        let fits = budget.saturating_sub(2 * internal.max_connections).max(16);
        if fits < public.max_connections {
            tracing::warn!(
                requested = public.max_connections,
                capped = fits,
                descriptors = available,
                "the descriptor limit leaves room for fewer connections than asked; capping"
            );
            public.max_connections = fits;
        }
    }
    (public, internal)
}

/// Serve `app` on `listener` until `shutdown` completes, then drain.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let refusals = Arc::new(Semaphore::new(REFUSALS_AT_ONCE));
    let open = Arc::new(Open::default());
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.request_head_timeout)
        // A connection's read buffer, which a request head must fit in (hyper's default lets
        // it grow to about 400 KiB: ten thousand slow heads would hold gigabytes).
        .max_buf_size(HEAD_BUFFER);
    let mut refuse = http1::Builder::new();
    refuse
        .timer(TokioTimer::new())
        .header_read_timeout(REFUSAL_HEAD_TIMEOUT)
        .keep_alive(false);
    let limit = limits.max_connections;

    let mut shutdown = std::pin::pin!(shutdown);
    let mut last_accept_warning: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(e) => {
                // Out of descriptors (or a connection reset before it was taken): never a
                // reason to stop accepting. Wait a little for connections to close.
                if last_accept_warning.is_none_or(|at| at.elapsed() > Duration::from_secs(1)) {
                    tracing::warn!(error = %e, "accepting a connection failed; retrying");
                    last_accept_warning = Some(Instant::now());
                }
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(50)) => continue,
                    () = &mut shutdown => break,
                }
            }
        };
        let _ = stream.set_nodelay(true);
        match permits.clone().try_acquire_owned() {
            Ok(permit) => {
                let io = TokioIo::new(WriteDeadline::new(stream, limits.write_timeout));
                let service = TowerToHyperService::new(app.clone());
                let connection = http.serve_connection(io, service);
                let (id, stop) = open.add();
                let open = open.clone();
                tokio::spawn(async move {
                    let mut connection = std::pin::pin!(connection);
                    // A peer that goes away or breaks the protocol is its own business.
                    tokio::select! {
                        _ = connection.as_mut() => {}
                        _ = stop => {
                            connection.as_mut().graceful_shutdown();
                            let _ = connection.await;
                        }
                    }
                    open.remove(id);
                    drop(permit);
                });
            }
            Err(_) => {
                let Ok(refusing) = refusals.clone().try_acquire_owned() else {
                    // Flooded: closing at once is all there is room for.
                    continue;
                };
                let io = TokioIo::new(WriteDeadline::new(stream, REFUSAL_HEAD_TIMEOUT));
                let service = hyper::service::service_fn(move |_request| {
                    std::future::ready(Ok::<_, std::convert::Infallible>(at_capacity(limit)))
                });
                let connection = refuse.serve_connection(io, service);
                tokio::spawn(async move {
                    let _ = connection.await;
                    drop(refusing);
                });
            }
        }
    }
    drop(listener);
    open.stop_all();
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(DRAIN, permits.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!("requests still running after {DRAIN:?} are cut off as the process exits");
    }
}

/// The open connections, each with a way to ask it to finish: at shutdown an idle connection
/// closes at once and a busy one after its response. A signal of its own per connection, not
/// one shared watch: every poll of a connection would check a shared one, under its lock, and
/// an event stream's connection is polled for every event it is sent.
#[derive(Default)]
struct Open {
    stops: Mutex<(u64, HashMap<u64, oneshot::Sender<()>>)>,
}

impl Open {
    fn add(&self) -> (u64, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        let mut stops = self.stops.lock().unwrap_or_else(|e| e.into_inner());
        stops.0 += 1;
        let id = stops.0;
        stops.1.insert(id, tx);
        (id, rx)
    }

    fn remove(&self, id: u64) {
        let mut stops = self.stops.lock().unwrap_or_else(|e| e.into_inner());
        stops.1.remove(&id);
    }

    fn stop_all(&self) {
        let stops = std::mem::take(&mut self.stops.lock().unwrap_or_else(|e| e.into_inner()).1);
        for (_, stop) in stops {
            let _ = stop.send(());
        }
    }
}

/// The answer past the cap: the API's JSON error, and a hint to come back.
fn at_capacity(limit: usize) -> Response<Body> {
    let body = serde_json::json!({
        "error": format!("the server is at its limit of {limit} open connections; try again in a moment"),
        "field": null,
    });
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    headers.insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    headers.insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
    response
}

/// Raise the soft descriptor limit to the hard one; returns the limit now in force.
#[cfg(unix)]
fn raise_descriptor_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed by pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return None;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    Some(limit.rlim_cur)
}

#[cfg(not(unix))]
fn raise_descriptor_limit() -> Option<u64> {
    None
}

/// A socket whose writes fail once none could make progress for `limit`: a peer that stops
/// reading is dropped instead of holding its connection (and what hyper buffered for it)
/// forever. The timer is armed only while a write waits, and re-used.
struct WriteDeadline {
    stream: TcpStream,
    limit: Duration,
    timer: Option<Pin<Box<Sleep>>>,
    armed: bool,
}

impl WriteDeadline {
    fn new(stream: TcpStream, limit: Duration) -> Self {
        WriteDeadline {
            stream,
            limit,
            timer: None,
            armed: false,
        }
    }

    /// The write is pending: start the clock if it is not running; an error once it ran out.
    fn waiting(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let deadline = Instant::now() + self.limit;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if !self.armed {
            timer.as_mut().reset(deadline);
            self.armed = true;
        }
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(io::Error::new(
                io::ErrorKind::TimedOut,
                "the peer took nothing for the write timeout",
            )),
            Poll::Pending => Poll::Pending,
        }
    }

    fn progress<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match polled {
            Poll::Ready(result) => {
                self.armed = false;
                Poll::Ready(result)
            }
            Poll::Pending => self.waiting(cx).map(Err),
        }
    }
}

impl AsyncRead for WriteDeadline {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for WriteDeadline {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.progress(cx, polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.progress(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_flush(cx);
        this.progress(cx, polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_shutdown(cx);
        this.progress(cx, polled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// A peer that never reads: writes stop making progress, and the deadline turns that into
    /// an error instead of a wait forever.
    #[tokio::test]
    async fn a_write_the_peer_never_takes_fails_after_the_deadline() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let _peer = TcpStream::connect(addr).await.expect("connect");
        let (server_side, _) = listener.accept().await.expect("accept");
        let mut stream = WriteDeadline::new(server_side, Duration::from_millis(200));
        let chunk = vec![0u8; 64 * 1024];
        let outcome = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                if let Err(e) = stream.write_all(&chunk).await {
                    return e;
                }
            }
        })
        .await
        .expect("the write failed within the test's patience");
        assert_eq!(outcome.kind(), io::ErrorKind::TimedOut);
    }
}
