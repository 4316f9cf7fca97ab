//! Subscribers of `/api/events` that follow it from now on, written by a few lane tasks that
//! each walk their share of the sockets.
//!
//! Why: with a task per subscriber, every item of the feed wakes ten thousand tasks, and each
//! polls its own subscription before making its one write; on two cores that bookkeeping and the
//! hand-offs between worker threads are a fifth of the server's time in a delivery wave. A lane
//! takes each item once from its own subscription and writes it to every socket it holds
//! without waiting (`try_write`): a system call per subscriber and nothing else. Items that come
//! while it is writing (a saga commits several times in a few milliseconds) join the wave for
//! the sockets it has not reached yet, so no socket waits a whole wave for them and a burst
//! costs fewer writes; the sockets it had passed get them in one more wave.
//!
//! A socket that cannot take an item whole at once (its client reads slowly, or has stopped
//! reading) leaves the lane for a task of its own, which writes the rest of that item and then
//! follows the feed from the item's position (history from the log, then live): a slow client
//! never holds up the others, and still gets everything, in order, once. A subscriber that
//! resumes (`Last-Event-ID`) starts in such a task. Once the task has caught up it hands the
//! socket back to a lane. Every socket carries the last position its client was sent: a lane
//! skips what a socket already has, and sends one that is behind it back to a task to catch up
//! from the log. A client that has gone is noticed at the next write, and its socket closed.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::body::Bytes;
use futures_util::{FutureExt, Stream, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::api::sse::{self, EventsFeed};
use crate::events_listener::RESPONSE_HEAD;
use crate::metrics::SubscriberGuard;

/// At most this many bytes of ready items go out in one write.
const MAX_WRITE: usize = 64 * 1024;

/// The lanes of one server, one per core. A handle: clones share the lanes.
#[derive(Clone)]
pub struct Lanes {
    shared: Arc<Shared>,
}

struct Shared {
    joins: Vec<mpsc::UnboundedSender<Joining>>,
    next: AtomicUsize,
}

/// A subscriber coming into a lane.
enum Joining {
    /// New, following the stream from now on: the lane writes its response head first.
    New(TcpStream),
    /// Back from a task of its own, caught up with the stream.
    CaughtUp(Member),
}

/// A subscriber in a lane, or in a task of its own.
struct Member {
    stream: TcpStream,
    /// The last log position its client has been sent (`None`: nothing yet, from now on).
    seen: Option<i64>,
    _counted: SubscriberGuard,
}

impl Lanes {
    /// Start the lanes (needs a tokio runtime); they end when the feed does (server stop).
    pub fn start(feed: &EventsFeed) -> Lanes {
        let count = std::thread::available_parallelism().map_or(2, |n| n.get().min(8));
        let (joins, joined): (Vec<_>, Vec<_>) =
            (0..count).map(|_| mpsc::unbounded_channel()).unzip();
        let lanes = Lanes {
            shared: Arc::new(Shared {
                joins,
                next: AtomicUsize::new(0),
            }),
        };
        for joined in joined {
            tokio::spawn(lane(lanes.clone(), feed.clone(), joined));
        }
        lanes
    }

    /// Serve `/api/events` from now on to a connection whose request has been read: its
    /// response, head included, is written by the lane it joins.
    pub fn join(&self, stream: TcpStream) {
        self.send(Joining::New(stream));
    }

    /// Serve `/api/events` after log position `after` to a connection whose request has been
    /// read: a task of its own writes the head and what the client missed (from the log), and
    /// once it has caught up the subscriber moves to a lane.
    pub async fn resume(&self, mut stream: TcpStream, after: i64, feed: &EventsFeed) {
        if stream.write_all(RESPONSE_HEAD).await.is_err() {
            return;
        }
        let member = Member {
            stream,
            seen: Some(after),
            _counted: feed.subscriber(),
        };
        follow_alone(self.clone(), member, Bytes::new(), feed.clone()).await;
    }

    fn send(&self, joining: Joining) {
        let joins = &self.shared.joins;
        let i = self.shared.next.fetch_add(1, Ordering::Relaxed) % joins.len();
        // A lane that has ended (the server is stopping) drops the connection, closing it.
        let _ = joins[i].send(joining);
    }
}

async fn lane(lanes: Lanes, feed: EventsFeed, mut joined: mpsc::UnboundedReceiver<Joining>) {
    let mut items = Box::pin(feed.items(None));
    let mut members: Vec<Member> = Vec::new();
    // The last position this lane has written: a subscriber that has been sent exactly
    // that much (or more) can join it.
    let mut at: Option<i64> = None;
    let mut last_write = Instant::now();
    // How many members this lane has counted in the metrics.
    let mut counted = 0;
    let head = Bytes::from_static(RESPONSE_HEAD);
    let keep_alive = Bytes::from_static(sse::KEEP_ALIVE_COMMENT);
    loop {
        tokio::select! {
            biased;
            joining = joined.recv() => match joining {
                None => break,
                Some(Joining::New(stream)) => {
                    members.push(Member { stream, seen: at, _counted: feed.subscriber() });
                    let new = members.len() - 1;
                    write_to(&lanes, &mut members, new.., &head, None, &feed, None).await;
                }
                // Sent less than this lane has written: it would miss the difference.
                Some(Joining::CaughtUp(member)) if member.seen < at => {
                    tokio::spawn(follow_alone(lanes.clone(), member, Bytes::new(), feed.clone()));
                }
                // Sent as much or more: items it already has are skipped for it.
                Some(Joining::CaughtUp(member)) => members.push(member),
            },
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
                at = Some(item.position);
                let (more, _, mut ended) = ready_now(items.as_mut(), &mut at, MAX_WRITE);
                let mut bytes = if more.is_empty() {
                    item.value.clone()
                } else {
                    Bytes::from([&item.value[..], &more].concat())
                };
                let mut covers = Covers {
                    first: item.first,
                    ends: vec![(at.unwrap_or(item.position), bytes.len())],
                };
                last_write = Instant::now();
                // Items that come while a wave is under way join it for the sockets it has not
                // reached yet; the sockets it had passed get them in one more wave, which the
                // others skip. So the last socket of a wave is never a whole wave behind.
                loop {
                    let mut late = Late { items: items.as_mut(), at: &mut at, ended: false };
                    let passed = write_to(
                        &lanes, &mut members, 0.., &bytes, Some(covers), &feed, Some(&mut late),
                    )
                    .await;
                    ended |= late.ended;
                    let Some((late_bytes, late_covers)) = passed else { break };
                    bytes = late_bytes;
                    covers = late_covers;
                }
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
                write_to(&lanes, &mut members, 0.., &keep_alive, None, &feed, None).await;
            }
        }
        feed.lane_members_changed(counted, members.len());
        counted = members.len();
    }
    feed.lane_members_changed(counted, 0);
}

/// The feed ended without the server stopping: the log could not be read (to fill a gap).
/// The lane follows it again after the last item it wrote (history first), so every member
/// still gets everything; after a pause, not to spin while the log is unreadable.
async fn pause_before_following_again() {
    tracing::warn!("event lane: the feed ended; following it again");
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
}

/// How often, in sockets, a wave looks for items that came since it started.
const LATE_EVERY: usize = 32;

/// The log positions a wave's bytes hold: from `first`, in runs of whole items, each with the
/// last position it holds and where its bytes end. A socket sent the wave up to the end of a
/// run gets only what follows.
#[derive(Clone, Debug)]
struct Covers {
    first: i64,
    ends: Vec<(i64, usize)>,
}

impl Covers {
    fn last(&self) -> i64 {
        self.ends.last().map_or(self.first, |&(last, _)| last)
    }

    /// Add a run ending at position `last` and byte `end`.
    fn extend(&mut self, last: i64, end: usize) {
        self.ends.push((last, end));
    }
}

/// The lane's subscription while it writes a wave: items ready now join the wave.
struct Late<'a> {
    items: std::pin::Pin<&'a mut (dyn Stream<Item = Arc<saga_engine::Rendered<Bytes>>> + Send)>,
    /// The lane's last position, moved past each item taken.
    at: &'a mut Option<i64>,
    /// The feed ended.
    ended: bool,
}

impl Late<'_> {
    /// Add the items ready now to the wave, as long as its write stays under [`MAX_WRITE`] (a
    /// longer one would not go out whole to a socket). Returns where what it added starts: its
    /// first position, its first byte, and its first run.
    fn join(&mut self, bytes: &mut Bytes, covers: &mut Covers) -> Option<(i64, usize, usize)> {
        if self.ended {
            return None;
        }
        let room = MAX_WRITE.saturating_sub(bytes.len());
        let (more, first, ended) = ready_now(self.items.as_mut(), self.at, room);
        self.ended = ended;
        let (first, last) = (first?, (*self.at)?);
        let start = (first, bytes.len(), covers.ends.len());
        *bytes = Bytes::from([&bytes[..], &more[..]].concat());
        covers.extend(last, bytes.len());
        Some(start)
    }
}

/// Write `bytes` to the members from `from` on; `covers`: the log positions they hold (none
/// for the response head or a keep-alive). A member already sent all of them is skipped; one
/// sent them up to the end of a run gets what follows. One sent part of a run (it came back
/// from a task of its own mid-way), or that cannot take its bytes whole, leaves for a task of
/// its own, which writes the rest and follows the feed from what it has been sent. One whose
/// client has gone is dropped. With `late`, items that come meanwhile join the wave; what
/// joined is returned, for the members the wave had passed by then.
async fn write_to(
    lanes: &Lanes,
    members: &mut Vec<Member>,
    from: std::ops::RangeFrom<usize>,
    bytes: &Bytes,
    mut covers: Option<Covers>,
    feed: &EventsFeed,
    mut late: Option<&mut Late<'_>>,
) -> Option<(Bytes, Covers)> {
    let mut bytes = bytes.clone();
    // Where what joined late starts: first position, first byte, first run.
    let mut joined = None;
    let mut i = from.start;
    while i < members.len() {
        if i > from.start
            && i.is_multiple_of(LATE_EVERY)
            && let (Some(late), Some(covers)) = (late.as_deref_mut(), covers.as_mut())
            && let Some(start) = late.join(&mut bytes, covers)
        {
            joined.get_or_insert(start);
        }
        let member = &mut members[i];
        // Where in `bytes` this member's write starts; `None`: nothing to write.
        let start = match (&covers, member.seen) {
            (Some(c), Some(seen)) if seen >= c.last() => None,
            (Some(c), Some(seen)) if seen >= c.first => {
                match c.ends.iter().find(|&&(last, _)| last == seen) {
                    Some(&(_, end)) => Some(end),
                    // Part of a run: the task reads what follows from the log.
                    None => {
                        let member = members.swap_remove(i);
                        tokio::spawn(follow_alone(
                            lanes.clone(),
                            member,
                            Bytes::new(),
                            feed.clone(),
                        ));
                        continue;
                    }
                }
            }
            _ => Some(0),
        };
        let rest = match start {
            None => None,
            Some(start) => {
                let rest = match member.stream.try_write(&bytes[start..]) {
                    Ok(n) if start + n == bytes.len() => None,
                    Ok(n) => Some(bytes.slice(start + n..)),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        Some(bytes.slice(start..))
                    }
                    Err(_) => {
                        members.swap_remove(i);
                        continue;
                    }
                };
                // Written, or the rest will be, first thing, by its task.
                if let Some(c) = &covers {
                    member.seen = Some(c.last());
                }
                rest
            }
        };
        match rest {
            None => i += 1,
            Some(rest) => {
                let member = members.swap_remove(i);
                tokio::spawn(follow_alone(lanes.clone(), member, rest, feed.clone()));
            }
        }
        // Let other tasks in now and then: a lane may hold thousands of sockets.
        tokio::task::consume_budget().await;
    }
    let (first, offset, run) = joined?;
    let ends = covers?.ends[run..]
        .iter()
        .map(|&(last, end)| (last, end - offset))
        .collect();
    Some((bytes.slice(offset..), Covers { first, ends }))
}

/// A subscriber with a task of its own (it resumed, or could not keep up with its lane):
/// `rest`, the remainder of what it was being sent, then the feed after what it has been
/// sent, with keep-alives while quiet. Once it has written some of the feed and finds nothing
/// more waiting, it has caught up, and goes back to a lane.
async fn follow_alone(lanes: Lanes, member: Member, rest: Bytes, feed: EventsFeed) {
    let Member {
        mut stream,
        mut seen,
        _counted,
    } = member;
    if stream.write_all(&rest).await.is_err() {
        return;
    }
    let mut items = Box::pin(feed.items(seen).peekable());
    let mut last_write = Instant::now();
    let mut wrote = false;
    loop {
        let (burst, _, ended) = ready_now(items.as_mut(), &mut seen, MAX_WRITE);
        if !burst.is_empty() {
            if stream.write_all(&burst).await.is_err() {
                return;
            }
            last_write = Instant::now();
            wrote = true;
        }
        if ended {
            return;
        }
        if !burst.is_empty() {
            continue;
        }
        if wrote && seen.is_some() {
            let member = Member {
                stream,
                seen,
                _counted,
            };
            lanes.send(Joining::CaughtUp(member));
            return;
        }
        // Nothing waiting: wait for the next item (taken at the top of the loop), or write a
        // keep-alive.
        tokio::select! {
            next = items.as_mut().peek() => {
                if next.is_none() {
                    return;
                }
            }
            _ = tokio::time::sleep_until(last_write + sse::KEEP_ALIVE) => {
                if stream.write_all(sse::KEEP_ALIVE_COMMENT).await.is_err() {
                    return;
                }
                last_write = Instant::now();
            }
        }
    }
}

/// The items ready now, up to `limit` bytes, as one buffer; the first log position they hold;
/// and whether the feed ended.
fn ready_now<S>(
    mut items: std::pin::Pin<&mut S>,
    seen: &mut Option<i64>,
    limit: usize,
) -> (Vec<u8>, Option<i64>, bool)
where
    S: Stream<Item = Arc<saga_engine::Rendered<Bytes>>> + ?Sized,
{
    let mut burst = Vec::new();
    let mut first = None;
    while burst.len() < limit {
        match items.next().now_or_never() {
            Some(Some(item)) => {
                first.get_or_insert(item.first);
                burst.extend_from_slice(&item.value);
                *seen = Some(item.position);
            }
            Some(None) => return (burst, first, true),
            None => break,
        }
    }
    (burst, first, false)
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
        let (client, server) = connection(tcp).await;
        lanes.join(server);
        client
    }

    /// A connection's client and server sides.
    async fn connection(tcp: &TcpListener) -> (TcpStream, TcpStream) {
        let socket = TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(4096).expect("small buffer");
        let addr = tcp.local_addr().expect("address");
        let (client, accepted) = tokio::join!(socket.connect(addr), tcp.accept());
        (client.expect("connected"), accepted.expect("accepted").0)
    }

    /// An engine whose saga `one` has one step (its output padded to `padding` bytes), the
    /// event feed and lanes over it, and a listener to connect through.
    struct Setup {
        engine: Engine,
        metrics: Arc<Metrics>,
        feed: EventsFeed,
        lanes: Lanes,
        tcp: TcpListener,
        _running: watch::Sender<bool>,
    }

    async fn setup(padding: usize) -> Setup {
        let engine = Engine::new(MemoryStore::new());
        let step = Step::new("only")
            .action(move |_| async move { Ok(json!({"padding": "x".repeat(padding)})) });
        engine.register(SagaDefinition::new("one", vec![step]).expect("valid"));
        let metrics = Arc::new(Metrics::default());
        let (running, stop) = watch::channel(false);
        let feed = EventsFeed::new(&engine, metrics.clone(), stop);
        let lanes = Lanes::start(&feed);
        let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        Setup {
            engine,
            metrics,
            feed,
            lanes,
            tcp,
            _running: running,
        }
    }

    /// Wait (a minute at most) until the lanes hold `n` subscribers.
    async fn until_members(metrics: &Metrics, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while metrics.sse_in_lanes() != n {
            assert!(
                Instant::now() < deadline,
                "the lanes hold {} subscribers, not {n}",
                metrics.sse_in_lanes()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
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

    /// Sagas that commit while a lane is writing a wave: what comes in joins the wave for the
    /// sockets it has not reached, and the ones it had passed get it next. Every client still
    /// gets every event, in order, once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn events_that_come_during_a_wave_reach_every_client_once_in_order() {
        let Setup {
            engine,
            metrics,
            lanes,
            tcp,
            ..
        } = &setup(100).await;
        let clients = 400;
        let mut readers = Vec::with_capacity(clients);
        for _ in 0..clients {
            readers.push(subscriber(lanes, tcp).await);
        }
        until_members(metrics, clients).await;
        let sagas = 40;
        let events = (sagas * RECORDS_PER_SAGA) as usize;
        let readers: Vec<_> = readers
            .into_iter()
            .map(|mut client| tokio::spawn(async move { read_ids(&mut client, events).await }))
            .collect();
        // All at once, from tasks of their own: commits keep coming while waves are written.
        let runs: Vec<_> = (0..sagas)
            .map(|_| {
                let engine = engine.clone();
                tokio::spawn(async move { engine.run("one", &json!({})).await.expect("ran") })
            })
            .collect();
        for run in runs {
            run.await.expect("joined");
        }
        let all: Vec<i64> = (1..=sagas * RECORDS_PER_SAGA).collect();
        for reader in readers {
            assert_eq!(reader.await.expect("joined"), all);
        }
    }

    /// A client that stops reading leaves its lane without holding up the others, and once
    /// it reads again it gets every event, in order, once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_that_stops_reading_holds_up_nobody_and_misses_nothing() {
        let Setup {
            engine,
            metrics,
            lanes,
            tcp,
            ..
        } = &setup(8000).await;
        let mut reading = subscriber(lanes, tcp).await;
        let mut stalled = subscriber(lanes, tcp).await;
        until_members(metrics, 2).await;

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
        let (mut reading, ids) = reader.await.expect("joined");
        let all: Vec<i64> = (1..=sagas * RECORDS_PER_SAGA).collect();
        assert_eq!(
            ids, all,
            "the reading client got everything while the other stalled"
        );
        // (The reading client may have left too, whenever the engine outran it.)
        assert!(
            metrics.sse_in_lanes() <= 1,
            "the stalled client left its lane"
        );

        let ids = read_ids(&mut stalled, all.len()).await;
        assert_eq!(
            ids, all,
            "the stalled client, reading again, misses nothing"
        );

        // Caught up, both are back in lanes, and go on getting everything once.
        until_members(metrics, 2).await;
        engine.run("one", &json!({})).await.expect("ran");
        let next: Vec<i64> = (1..=RECORDS_PER_SAGA)
            .map(|i| sagas * RECORDS_PER_SAGA + i)
            .collect();
        assert_eq!(read_ids(&mut reading, next.len()).await, next);
        assert_eq!(read_ids(&mut stalled, next.len()).await, next);
    }

    /// A subscriber resuming after a position gets what followed it from the log, joins a
    /// lane once it has caught up, and goes on getting every event once, in order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_resuming_subscriber_catches_up_then_joins_a_lane() {
        let Setup {
            engine,
            metrics,
            feed,
            lanes,
            tcp,
            ..
        } = &setup(10).await;
        for _ in 0..5 {
            engine.run("one", &json!({})).await.expect("ran");
        }
        let (mut client, server) = connection(tcp).await;
        let (resuming, resumed_feed) = (lanes.clone(), feed.clone());
        tokio::spawn(async move { resuming.resume(server, 8, &resumed_feed).await });

        let history: Vec<i64> = (9..=5 * RECORDS_PER_SAGA).collect();
        assert_eq!(read_ids(&mut client, history.len()).await, history);
        until_members(metrics, 1).await;
        for _ in 0..2 {
            engine.run("one", &json!({})).await.expect("ran");
        }
        let live: Vec<i64> = (5 * RECORDS_PER_SAGA + 1..=7 * RECORDS_PER_SAGA).collect();
        assert_eq!(read_ids(&mut client, live.len()).await, live);
    }

    /// A subscriber coming back to a lane behind what the lane has sent gets the difference
    /// from the log first; one coming back in the middle of an item gets only the rest of it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_subscriber_coming_back_gets_exactly_what_it_lacks() {
        let Setup {
            engine,
            metrics,
            feed,
            lanes,
            tcp,
            ..
        } = &setup(10).await;
        // As many as it takes for a saga's records to go out as one item.
        let _audience: Vec<_> = (0..100).map(|_| feed.subscriber()).collect();
        let (mut watcher, server) = connection(tcp).await;
        lanes.join(server);
        until_members(metrics, 1).await;
        for _ in 0..2 {
            engine.run("one", &json!({})).await.expect("ran");
        }
        let sent: Vec<i64> = (1..=2 * RECORDS_PER_SAGA).collect();
        assert_eq!(read_ids(&mut watcher, sent.len()).await, sent);

        let back = |stream, seen| {
            lanes.send(Joining::CaughtUp(Member {
                stream,
                seen: Some(seen),
                _counted: feed.subscriber(),
            }))
        };
        let (mut behind, server) = connection(tcp).await;
        back(server, 2);
        let missed: Vec<i64> = (3..=2 * RECORDS_PER_SAGA).collect();
        assert_eq!(read_ids(&mut behind, missed.len()).await, missed);
        let (mut ahead, server) = connection(tcp).await;
        back(server, 2 * RECORDS_PER_SAGA + 2);
        until_members(metrics, 3).await;

        engine.run("one", &json!({})).await.expect("ran");
        let next: Vec<i64> = (2 * RECORDS_PER_SAGA + 1..=3 * RECORDS_PER_SAGA).collect();
        assert_eq!(read_ids(&mut watcher, next.len()).await, next);
        assert_eq!(read_ids(&mut behind, next.len()).await, next);
        assert_eq!(read_ids(&mut ahead, 2).await, next[2..].to_vec());
    }
}
