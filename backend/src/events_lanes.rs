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
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::api::sse::{self, EventsFeed};
use crate::events_listener::{RESPONSE_HEAD, write_frames};
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
    let mut items = std::pin::pin!(feed.items(None));
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
                let Some(item) = item else { break };
                at = Some(item.position);
                last_write = Instant::now();
                write_to(&mut members, 0.., &item.value, at, &feed).await;
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
