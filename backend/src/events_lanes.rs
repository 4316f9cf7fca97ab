//! Subscribers of `/api/events` that follow it from now on, written by a few lane tasks that
//! each walk their share of the sockets.
//!
//! Why: with a task per subscriber, every item of the feed wakes ten thousand tasks, and each
//! polls its own subscription before making its one write; on two cores that bookkeeping and the
//! hand-offs between worker threads are a fifth of the server's time in a delivery wave. A lane
//! takes each item once from its own subscription and writes it to every socket it holds
//! without waiting (`try_write`): a system call per subscriber and nothing else.
//!
//! A socket that cannot take an item whole at once (its client reads slowly, or has stopped
//! reading) leaves the lane for a task of its own, which writes the rest of that item and then
//! follows the feed from the item's position (history from the log, then live): a slow client
//! never holds up the others, and still gets everything, in order, once. A client that has
//! gone is noticed at the next write, and its socket closed.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::body::Bytes;
use futures_util::{FutureExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::api::sse::{self, EventsFeed};
use crate::events_listener::{MAX_WRITE, RESPONSE_HEAD, write_frames};
use crate::metrics::SubscriberGuard;

/// The lanes of one server, one per core.
pub struct Lanes {
    joins: Vec<mpsc::UnboundedSender<TcpStream>>,
    next: AtomicUsize,
    members: Arc<AtomicUsize>,
}

/// A subscriber in a lane.
struct Member {
    stream: TcpStream,
    _counted: SubscriberGuard,
}

impl Lanes {
    /// Start the lanes (needs a tokio runtime); they end when the feed does (server stop).
    pub fn start(feed: &EventsFeed) -> Lanes {
        let lanes = std::thread::available_parallelism().map_or(2, |n| n.get().min(8));
        let members = Arc::new(AtomicUsize::new(0));
        let joins = (0..lanes)
            .map(|_| {
                let (join, joined) = mpsc::unbounded_channel();
                tokio::spawn(lane(feed.clone(), joined, members.clone()));
                join
            })
            .collect();
        Lanes {
            joins,
            next: AtomicUsize::new(0),
            members,
        }
    }

    /// Serve `/api/events` from now on to a connection whose request has been read: its
    /// response, head included, is written by the lane it joins.
    pub fn join(&self, stream: TcpStream) {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.joins.len();
        // A lane that has ended (the server is stopping) drops the connection, closing it.
        let _ = self.joins[i].send(stream);
    }

    /// How many subscribers the lanes hold now (not those that left for a task of their own).
    pub fn members(&self) -> usize {
        self.members.load(Ordering::Relaxed)
    }
}

async fn lane(
    feed: EventsFeed,
    mut joined: mpsc::UnboundedReceiver<TcpStream>,
    count: Arc<AtomicUsize>,
) {
    let mut items = Box::pin(feed.items(None));
    let mut members: Vec<Member> = Vec::new();
    // The last item written: a socket that leaves the lane resumes after it.
    let mut at: Option<i64> = None;
    let mut last_write = Instant::now();
    // What this lane has added to `count`.
    let mut counted = 0;
    let head = Bytes::from_static(RESPONSE_HEAD);
    let keep_alive = Bytes::from_static(sse::KEEP_ALIVE_COMMENT);
    loop {
        tokio::select! {
            biased;
            stream = joined.recv() => {
                let Some(stream) = stream else { break };
                let member = Member { stream, _counted: feed.subscriber() };
                members.push(member);
                let new = members.len() - 1;
                write_to(&mut members, new.., &head, at, &feed).await;
            }
            item = items.next() => {
                let Some(item) = item else {
                    if feed.stopping() {
                        break;
                    }
                    pause_before_following_again().await;
                    items = Box::pin(feed.items(at));
                    continue;
                };
                // Whatever else is ready goes out in the same write (a burst, or a lane that
                // fell behind).
                let (mut bytes, mut ended) = (item.value.clone(), false);
                at = Some(item.position);
                let mut more: Option<Vec<u8>> = None;
                while more.as_ref().is_none_or(|m| m.len() < MAX_WRITE) {
                    match items.next().now_or_never() {
                        Some(Some(next)) => {
                            more.get_or_insert_with(|| bytes.to_vec()).extend_from_slice(&next.value);
                            at = Some(next.position);
                        }
                        Some(None) => {
                            ended = true;
                            break;
                        }
                        None => break,
                    }
                }
                if let Some(more) = more {
                    bytes = Bytes::from(more);
                }
                last_write = Instant::now();
                write_to(&mut members, 0.., &bytes, at, &feed).await;
                if ended {
                    if feed.stopping() {
                        break;
                    }
                    pause_before_following_again().await;
                    items = Box::pin(feed.items(at));
                }
            }
            _ = tokio::time::sleep_until(last_write + sse::KEEP_ALIVE) => {
                last_write = Instant::now();
                write_to(&mut members, 0.., &keep_alive, at, &feed).await;
            }
        }
        if members.len() != counted {
            count.fetch_add(members.len(), Ordering::Relaxed);
            count.fetch_sub(counted, Ordering::Relaxed);
            counted = members.len();
        }
    }
    count.fetch_sub(counted, Ordering::Relaxed);
}

/// The feed ended without the server stopping: the log could not be read (to fill a gap).
/// The lane follows it again after the last item it wrote (history first), so every member
/// still gets everything; after a pause, not to spin while the log is unreadable.
async fn pause_before_following_again() {
    tracing::warn!("event lane: the feed ended; following it again");
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
}

/// Write `bytes` to the members from `from` on. One that cannot take them whole leaves for a
/// task of its own that writes the rest and follows the feed after `at`; one whose client has
/// gone is dropped.
async fn write_to(
    members: &mut Vec<Member>,
    from: std::ops::RangeFrom<usize>,
    bytes: &Bytes,
    at: Option<i64>,
    feed: &EventsFeed,
) {
    let mut i = from.start;
    while i < members.len() {
        let rest = match members[i].stream.try_write(bytes) {
            Ok(n) if n == bytes.len() => None,
            Ok(n) => Some(bytes.slice(n..)),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Some(bytes.clone()),
            Err(_) => {
                members.swap_remove(i);
                continue;
            }
        };
        match rest {
            None => i += 1,
            Some(rest) => {
                let member = members.swap_remove(i);
                tokio::spawn(follow_alone(member, rest, at, feed.clone()));
            }
        }
        // Let other tasks in now and then: a lane may hold thousands of sockets.
        tokio::task::consume_budget().await;
    }
}

/// A subscriber that left its lane: the rest of what it was being sent, then the feed after
/// `at` (from now if the lane had sent nothing yet).
async fn follow_alone(member: Member, rest: Bytes, at: Option<i64>, feed: EventsFeed) {
    let Member {
        mut stream,
        _counted,
    } = member;
    if stream.write_all(&rest).await.is_err() {
        return;
    }
    write_frames(stream, feed.items(at).map(|item| item.value.clone())).await;
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use saga_engine::{Engine, MemoryStore, SagaDefinition, Step};
    use serde_json::json;
    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpSocket};
    use tokio::sync::watch;

    use super::*;
    use crate::metrics::Metrics;

    /// Per saga: started, step started, step succeeded, completed.
    const RECORDS_PER_SAGA: i64 = 4;

    /// A connection whose server side has joined `lanes`; the client side reads into a buffer
    /// as small as the system allows, so that a client that stops reading is soon noticed.
    async fn subscriber(lanes: &Lanes, tcp: &TcpListener) -> TcpStream {
        let socket = TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(4096).expect("small buffer");
        let addr = tcp.local_addr().expect("address");
        let (client, accepted) = tokio::join!(socket.connect(addr), tcp.accept());
        lanes.join(accepted.expect("accepted").0);
        client.expect("connected")
    }

    /// Read until the `id`s of `n` events are in (skipping the head and keep-alives); fails
    /// if they are not all in within a minute.
    async fn read_ids(client: &mut TcpStream, n: usize) -> Vec<i64> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut text = String::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let ids: Vec<i64> = text
                .lines()
                .filter_map(|l| l.strip_prefix("id: "))
                .filter_map(|id| id.parse().ok())
                .collect();
            if ids.len() >= n {
                return ids;
            }
            let read = tokio::time::timeout_at(deadline, client.read(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("only {} of {n} events came in time", ids.len()))
                .expect("read");
            assert!(
                read > 0,
                "the stream ended early, after {} events",
                ids.len()
            );
            text.push_str(&String::from_utf8_lossy(&buf[..read]));
        }
    }

    /// A client that stops reading leaves its lane without holding up the others, and once
    /// it reads again it gets every event, in order, once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_that_stops_reading_holds_up_nobody_and_misses_nothing() {
        let engine = Engine::new(MemoryStore::new());
        let step = Step::new("only").action(|_| async { Ok(json!({"padding": "x".repeat(8000)})) });
        engine.register(SagaDefinition::new("one", vec![step]).expect("valid"));
        let (_stop, stopped) = watch::channel(false);
        let feed = EventsFeed::new(&engine, Arc::new(Metrics::default()), stopped);
        let lanes = Lanes::start(&feed);
        let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let mut reading = subscriber(&lanes, &tcp).await;
        let mut stalled = subscriber(&lanes, &tcp).await;
        while lanes.members() < 2 {
            tokio::task::yield_now().await;
        }

        // About 8 MiB: more than the stalled connection's buffers hold (the kernel lets a
        // sender's grow to 4 MiB).
        let sagas = 1000;
        let reader = tokio::spawn(async move {
            let ids = read_ids(&mut reading, (sagas * RECORDS_PER_SAGA) as usize).await;
            (reading, ids)
        });
        for _ in 0..sagas {
            engine.run("one", &json!({})).await.expect("ran");
        }
        let (_reading, ids) = reader.await.expect("joined");
        let all: Vec<i64> = (1..=sagas * RECORDS_PER_SAGA).collect();
        assert_eq!(
            ids, all,
            "the reading client got everything while the other stalled"
        );
        // (The reading client may have left too, whenever the engine outran it.)
        assert!(lanes.members() <= 1, "the stalled client left its lane");

        let ids = read_ids(&mut stalled, all.len()).await;
        assert_eq!(
            ids, all,
            "the stalled client, reading again, misses nothing"
        );
    }
}
