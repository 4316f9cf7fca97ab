//! The server as a public one must behave, against the real binary over raw sockets: a cap on
//! open connections with a clear 503 beyond it, request heads and idle connections on a
//! deadline, a subscriber that stops reading dropped (and able to resume), and a per-saga stream
//! resumed past its saga's end that ends at once.

use std::collections::BTreeSet;
use std::time::Duration;

use saga_shop_tests::server::ShopServer;
use saga_shop_tests::shop::{Shop, order};
use serde_json::{Value, json};
use shared::SagaState;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

fn addr(url: &str) -> String {
    url.trim_start_matches("http://").to_string()
}

/// Poll `check` every 100 ms until it holds, or panic with `what` after `patience`.
async fn eventually<F, Fut>(patience: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + patience;
    while !check().await {
        assert!(Instant::now() < deadline, "{what} (waited {patience:?})");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether the server closed `stream` (EOF or reset), reading whatever it still sends.
async fn closed_within(stream: &mut (impl AsyncReadExt + Unpin), patience: Duration) -> bool {
    let deadline = Instant::now() + patience;
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// One request on a connection of its own: the status line's code and the body.
async fn raw_request(url: &str, head: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr(url)).await.expect("connect");
    stream.write_all(head.as_bytes()).await.expect("send");
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response)).await;
    let text = String::from_utf8_lossy(&response).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

const HEALTHZ_CLOSE: &str = "GET /healthz HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n";

/// Open `n` connections that send nothing, then wait until the server refuses one more: the
/// held ones are counted once the server has taken them, and until then one more may get in.
async fn hold_idle_connections(url: &str, n: usize) -> Vec<TcpStream> {
    let mut idle = Vec::new();
    for _ in 0..n {
        idle.push(TcpStream::connect(addr(url)).await.expect("connect"));
    }
    eventually(
        Duration::from_secs(20),
        "a request past the cap is refused",
        || async { raw_request(url, HEALTHZ_CLOSE).await.0 == 503 },
    )
    .await;
    idle
}

#[tokio::test]
async fn past_the_connection_cap_a_connection_gets_a_clear_503_and_the_server_recovers() {
    let server = ShopServer::start(&["--max-connections", "20"]).expect("start saga-shop");
    let idle = hold_idle_connections(&server.url, 20).await;
    let (code, body) = raw_request(&server.url, HEALTHZ_CLOSE).await;
    assert_eq!(code, 503, "past the cap: {body}");
    let error: Value = serde_json::from_str(body.trim()).expect("a JSON error");
    assert!(
        error["error"]
            .as_str()
            .is_some_and(|e| e.contains("limit of 20")),
        "says why: {error}"
    );
    drop(idle);
    eventually(
        Duration::from_secs(20),
        "the server answers again",
        || async { raw_request(&server.url, HEALTHZ_CLOSE).await.0 == 200 },
    )
    .await;
}

#[tokio::test]
async fn silent_slow_and_idle_connections_are_closed_after_the_head_timeout() {
    let server = ShopServer::start(&["--request-head-timeout", "1"]).expect("start saga-shop");
    // Sends nothing at all.
    let mut silent = TcpStream::connect(addr(&server.url))
        .await
        .expect("connect");
    // A slowloris head: a byte at a time, never finished.
    let slow = TcpStream::connect(addr(&server.url))
        .await
        .expect("connect");
    let (mut slow, mut slow_writer) = slow.into_split();
    slow_writer
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: shop\r\n")
        .await
        .expect("send");
    let trickle = tokio::spawn(async move {
        for _ in 0..100 {
            if slow_writer.write_all(b"X").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    // Kept alive after one answered request, then idle.
    let mut kept = TcpStream::connect(addr(&server.url))
        .await
        .expect("connect");
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: shop\r\n\r\n")
        .await
        .expect("send");

    let patience = Duration::from_secs(15);
    assert!(
        closed_within(&mut silent, patience).await,
        "a silent connection is closed"
    );
    assert!(
        closed_within(&mut slow, patience).await,
        "a slowloris head is closed"
    );
    assert!(
        closed_within(&mut kept, patience).await,
        "an idle kept-alive connection is closed"
    );
    trickle.abort();
}

/// Ask the shop's `/metrics` for a gauge.
async fn gauge(url: &str, name: &str) -> Option<f64> {
    let text = reqwest::get(format!("{url}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The SSE ids in `text`.
fn ids(text: &str) -> Vec<i64> {
    text.lines()
        .filter_map(|l| l.strip_prefix("id: ")?.trim().parse().ok())
        .collect()
}

#[tokio::test]
async fn a_subscriber_that_stops_reading_is_dropped_and_resumes_where_it_was() {
    let server = ShopServer::start(&["--write-timeout", "1", "--seed-stock", "100000"])
        .expect("start saga-shop");
    let shop = Shop::new(&server.url);
    // A subscriber with a tiny receive window that reads nothing once subscribed.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("small window");
    let mut stalled = socket
        .connect(addr(&server.url).parse().expect("address"))
        .await
        .expect("connect");
    stalled
        .write_all(b"GET /api/events?after=0 HTTP/1.1\r\nHost: shop\r\n\r\n")
        .await
        .expect("send");
    eventually(
        Duration::from_secs(20),
        "the subscriber is counted",
        || async { gauge(&server.url, "sse_subscribers").await == Some(1.0) },
    )
    .await;

    // Purchases until the server gives up on it: its window and the server's buffers fill.
    let deadline = Instant::now() + Duration::from_secs(120);
    let body = order("KB-01", 1, json!({}));
    let mut placed = Vec::new();
    while gauge(&server.url, "sse_subscribers").await != Some(0.0) {
        assert!(
            Instant::now() < deadline,
            "a subscriber that reads nothing is still held after {} purchases",
            placed.len()
        );
        let mut batch = Vec::new();
        for _ in 0..20 {
            batch.push(shop.buy(&body));
        }
        for accepted in futures_util::future::join_all(batch).await {
            placed.push(accepted.expect("order accepted").saga_id);
        }
    }
    for saga in &placed {
        shop.finish(saga).await.expect("saga finished");
    }

    // What it got before it was dropped, then the rest from its last id.
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), stalled.read_to_end(&mut got)).await;
    let first = ids(&String::from_utf8_lossy(&got));
    let last = *first
        .last()
        .expect("it got some events before it stopped reading");
    let end: i64 = shop
        .request("/api/sagas")
        .await
        .expect("list")
        .headers()
        .get("x-log-position")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("x-log-position");
    let mut resumed = TcpStream::connect(addr(&server.url))
        .await
        .expect("connect");
    resumed
        .write_all(
            format!("GET /api/events HTTP/1.1\r\nHost: shop\r\nLast-Event-ID: {last}\r\n\r\n")
                .as_bytes(),
        )
        .await
        .expect("send");
    let mut rest = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let until = Instant::now() + Duration::from_secs(30);
    while ids(&String::from_utf8_lossy(&rest)).last() != Some(&end) {
        let n = tokio::time::timeout_at(until, resumed.read(&mut buf))
            .await
            .expect("the rest arrives after resuming")
            .expect("read");
        assert!(n > 0, "the resumed stream ended early");
        rest.extend_from_slice(&buf[..n]);
    }
    let second = ids(&String::from_utf8_lossy(&rest));
    let all: Vec<i64> = first.iter().chain(&second).copied().collect();
    let unique: BTreeSet<i64> = all.iter().copied().collect();
    assert_eq!(unique.len(), all.len(), "nothing arrives twice");
    assert_eq!(
        unique,
        (1..=end).collect::<BTreeSet<_>>(),
        "every record of the log arrives, before the drop or after resuming"
    );
}

/// `GET /api/sagas/{id}/events` with a `Last-Event-ID`: the status and, for a 200, the body once
/// the server ends it (or `None` if it did not end within `patience`).
async fn resume_saga_stream(
    url: &str,
    saga: &str,
    last: i64,
    patience: Duration,
) -> (u16, Option<String>) {
    let mut stream = TcpStream::connect(addr(url)).await.expect("connect");
    let head = format!(
        "GET /api/sagas/{saga}/events HTTP/1.1\r\nHost: shop\r\nConnection: close\r\nLast-Event-ID: {last}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("send");
    let mut response = Vec::new();
    let ended = tokio::time::timeout(patience, stream.read_to_end(&mut response))
        .await
        .is_ok();
    let text = String::from_utf8_lossy(&response).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, ended.then_some(text))
}

#[tokio::test]
async fn a_saga_stream_resumed_at_or_past_its_end_ends_at_once() {
    let server = ShopServer::start(&[]).expect("start saga-shop");
    let shop = Shop::new(&server.url);
    let done = shop
        .buy(&order("KB-01", 1, json!({})))
        .await
        .expect("order accepted");
    let events = shop.finish(&done.saga_id).await.expect("finished");
    let last = events.last().expect("events").seq as i64;
    for resume_at in [last, last + 5] {
        let (code, body) = resume_saga_stream(
            &server.url,
            &done.saga_id,
            resume_at,
            Duration::from_secs(10),
        )
        .await;
        assert_eq!(
            code, 204,
            "resumed at {resume_at} of {last}: nothing more to send"
        );
        assert!(body.is_some(), "the response ends");
    }
    // One before the end: the terminal event, then the end.
    let (code, body) = resume_saga_stream(
        &server.url,
        &done.saga_id,
        last - 1,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(code, 200);
    let body = body.expect("the stream ends after the terminal event");
    assert_eq!(ids(&body), vec![last]);

    // A running saga resumed past where it will end: the stream ends when the saga does.
    let slow = shop
        .buy(&order(
            "KB-01",
            1,
            json!({"ship_order": {"kind": "delay", "ms": 1500}}),
        ))
        .await
        .expect("order accepted");
    let (code, body) =
        resume_saga_stream(&server.url, &slow.saga_id, 99, Duration::from_secs(30)).await;
    assert_eq!(code, 200);
    let body = body.expect("the stream ends once the saga has finished");
    assert!(ids(&body).is_empty(), "no event is past 99: {body}");
    assert_eq!(
        shop.saga(&slow.saga_id).await.expect("saga").status,
        SagaState::Completed
    );
}

#[tokio::test]
async fn the_event_stream_is_served_by_the_http_stack_on_every_connection() {
    let server = ShopServer::start(&[]).expect("start saga-shop");
    let (code, _) = raw_request(&server.url, HEALTHZ_CLOSE).await;
    assert_eq!(code, 200);
    // The head of /api/events, whole in one segment, as a fresh EventSource sends it: hyper
    // answers (a `date` header, which only hyper writes).
    let mut stream = TcpStream::connect(addr(&server.url))
        .await
        .expect("connect");
    stream
        .write_all(b"GET /api/events HTTP/1.1\r\nHost: shop\r\nAccept: text/event-stream\r\n\r\n")
        .await
        .expect("send");
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&head).contains("\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("a response head")
            .expect("read");
        assert!(n > 0, "the stream closed before its head");
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("content-type: text/event-stream"), "{head}");
    assert!(head.contains("\r\ndate: "), "served by hyper: {head}");
}

#[tokio::test]
async fn a_body_that_never_ends_is_refused_and_its_connection_closed() {
    let server = ShopServer::start(&[]).expect("start saga-shop");
    let mut stream = TcpStream::connect(addr(&server.url))
        .await
        .expect("connect");
    stream
        .write_all(
            b"POST /api/orders HTTP/1.1\r\nHost: shop\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"customer\":",
        )
        .await
        .expect("send");
    let mut response = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut response))
        .await
        .is_ok();
    let text = String::from_utf8_lossy(&response);
    assert!(ended, "the connection is closed, not held: {text}");
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("did not arrive"), "says why: {text}");
}

/// What the public listener holds cannot fail a saga: the saga calls this process's services
/// on a listener of its own.
#[tokio::test]
async fn a_full_public_listener_does_not_fail_the_sagas_steps() {
    let server = ShopServer::start(&["--max-connections", "20"]).expect("start saga-shop");
    let shop = Shop::new(&server.url);
    // The client's one kept-alive connection, then every other slot held by idle ones.
    shop.catalog().await.expect("catalog");
    let idle = hold_idle_connections(&server.url, 19).await;
    let placed = shop
        .buy(&order("KB-01", 1, json!({})))
        .await
        .expect("order accepted on the kept-alive connection");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let status = shop.saga(&placed.saga_id).await.expect("the saga").status;
        if status.is_finished() {
            break status;
        }
        assert!(Instant::now() < deadline, "the saga finishes within 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        status,
        SagaState::Completed,
        "its steps reached the services"
    );
    drop(idle);
}

/// SIGTERM with a saga in flight: it stops where it is, as after a crash, and resumes at the
/// next start; the shutdown is never recorded as a failed step.
#[tokio::test]
async fn a_saga_in_flight_at_sigterm_resumes_at_the_next_start_with_no_failure_logged() {
    let mut server = ShopServer::start(&[]).expect("start saga-shop");
    let shop = Shop::new(&server.url);
    let placed = shop
        .buy(&order(
            "KB-01",
            1,
            json!({"process_payment": {"kind": "delay", "ms": 1500}}),
        ))
        .await
        .expect("order accepted");
    eventually(
        Duration::from_secs(20),
        "the payment step is running",
        || async {
            shop.saga(&placed.saga_id).await.is_ok_and(|d| {
                d.events.iter().any(|e| {
                    e.event.kind().as_str() == "step_started"
                        && e.step.as_deref() == Some("process_payment")
                })
            })
        },
    )
    .await;
    server.terminate().expect("SIGTERM");
    let status = server
        .wait_exit(Duration::from_secs(30))
        .expect("the server stops");
    assert!(status.success(), "a clean stop: {status}");
    let dir = server.dir.clone();
    drop(server);

    let server = ShopServer::start_in(dir, &[]).expect("restart saga-shop");
    let shop = Shop::new(&server.url);
    let events = shop.finish(&placed.saga_id).await.expect("finished");
    let kinds: Vec<&str> = events.iter().map(|e| e.event.kind().as_str()).collect();
    assert_eq!(kinds.last(), Some(&"saga_completed"), "{kinds:?}");
    assert!(
        !kinds
            .iter()
            .any(|k| matches!(*k, "step_failed" | "step_retrying" | "compensation_started")),
        "the shutdown was not taken for a failure: {kinds:?}"
    );
}
