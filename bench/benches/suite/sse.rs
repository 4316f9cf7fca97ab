//! Benchmark 7: the event stream. Thousands of SSE subscribers on `/api/events` of `saga-shop`
//! while sagas run, against the plain axum + `tokio::sync::broadcast` SSE endpoint of axum's
//! example (served by this very binary, in a process of its own, `--serve-baseline`).
//! Per subscriber: resident memory while idle; then deliveries/s and the delay from an event's
//! timestamp to its arrival, checked for loss and order on a sample of subscribers.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::report::{Report, percentile_ms, rss_kib_of};

/// How many subscribers parse every event (for delay, loss and order), spread evenly over the
/// connection order; the rest only count.
const SAMPLED: usize = 50;

#[derive(Default)]
struct Tally {
    deliveries: AtomicU64,
    connected: AtomicU64,
}

struct Sample {
    delays_ms: Vec<f64>,
    ids: Vec<i64>,
}

pub fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

/// `2026-11-25T12:00:00.123Z` → ms since the epoch (UTC, days from the civil calendar).
pub fn parse_at(at: &str) -> Option<f64> {
    let (y, m, d) = (
        at.get(0..4)?.parse::<i64>().ok()?,
        at.get(5..7)?.parse::<i64>().ok()?,
        at.get(8..10)?.parse::<i64>().ok()?,
    );
    let (hh, mm, ss, ms) = (
        at.get(11..13)?.parse::<i64>().ok()?,
        at.get(14..16)?.parse::<i64>().ok()?,
        at.get(17..19)?.parse::<i64>().ok()?,
        at.get(20..23)?.parse::<i64>().ok()?,
    );
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((((days * 24 + hh) * 60 + mm) * 60 + ss) as f64 * 1000.0 + ms as f64)
}

/// One subscriber: a raw HTTP/1.1 GET, then count (or parse) event blocks until `stop`.
async fn subscribe(
    addr: String,
    path: &'static str,
    tally: Arc<Tally>,
    sample: Option<Arc<std::sync::Mutex<Sample>>>,
    stop: Arc<tokio::sync::Notify>,
) {
    let Ok(mut stream) = TcpStream::connect(&addr).await else {
        return;
    };
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return;
    }
    // Subscribed once the response head is in: both servers subscribe before answering. A
    // subscriber counted when its request was merely sent could still be in the server's
    // accept queue when the first events go out, and miss them.
    let mut head: Option<Vec<u8>> = Some(Vec::new());
    let mut buf = vec![0u8; 16 * 1024];
    let mut pending = String::new();
    let mut carry: Vec<u8> = Vec::with_capacity(16 * 1024 + 5);
    loop {
        let n = tokio::select! {
            r = stream.read(&mut buf) => match r { Ok(0) | Err(_) => return, Ok(n) => n },
            _ = stop.notified() => return,
        };
        let chunk = &buf[..n];
        if let Some(so_far) = &mut head {
            so_far.extend_from_slice(chunk);
            if so_far.windows(4).any(|w| w == b"\r\n\r\n") {
                head = None;
                tally.connected.fetch_add(1, Ordering::Relaxed);
            }
        }
        match &sample {
            None => {
                // Count `data: ` lines, including one split across two reads.
                carry.extend_from_slice(chunk);
                let events = carry.windows(6).filter(|w| w == b"data: ").count();
                tally.deliveries.fetch_add(events as u64, Ordering::Relaxed);
                let keep = carry.len().saturating_sub(5);
                carry.drain(..keep);
            }
            Some(sample) => {
                pending.push_str(&String::from_utf8_lossy(chunk));
                while let Some(end) = pending.find("\n\n") {
                    let block: String = pending.drain(..end + 2).collect();
                    let Some(data) = block.lines().find_map(|l| l.strip_prefix("data: ")) else {
                        continue;
                    };
                    tally.deliveries.fetch_add(1, Ordering::Relaxed);
                    let id = block
                        .lines()
                        .find_map(|l| l.strip_prefix("id: "))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(-1);
                    let at = data
                        .find("\"at\":\"")
                        .and_then(|i| parse_at(&data[i + 6..]));
                    let mut s = sample.lock().unwrap_or_else(|e| e.into_inner());
                    s.ids.push(id);
                    if let Some(at) = at {
                        s.delays_ms.push(now_ms() - at);
                    }
                }
            }
        }
    }
}

pub struct Target<'a> {
    pub name: &'a str,
    pub addr: String,
    pub path: &'static str,
    pub pid: u32,
    /// Make `events` events happen, spread over `over`; returns how many really did.
    pub produce:
        Box<dyn Fn(usize, Duration) -> futures_util::future::BoxFuture<'static, usize> + 'a>,
}

/// Connect `subscribers`, measure idle memory, then run a paced phase (delay) and a burst
/// (throughput), each written to the report as a figure.
pub async fn measure(
    report: &mut Report,
    t: Target<'_>,
    subscribers: usize,
    paced_events: usize,
    burst_events: usize,
) -> anyhow::Result<Measured> {
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(tokio::sync::Notify::new());
    let samples: Vec<Arc<std::sync::Mutex<Sample>>> = (0..SAMPLED.min(subscribers))
        .map(|_| {
            Arc::new(std::sync::Mutex::new(Sample {
                delays_ms: vec![],
                ids: vec![],
            }))
        })
        .collect();
    let rss_before = rss_kib_of(&t.pid.to_string());
    let mut tasks = Vec::with_capacity(subscribers);
    // The sampled subscribers are spread evenly over the connection order, not the first to
    // connect: a server tends to serve its subscribers in the order they came, and the first
    // ones alone would show only the start of each wave of delivery.
    let every = (subscribers / samples.len().max(1)).max(1);
    for i in 0..subscribers {
        let sample = if i % every == 0 {
            samples.get(i / every).cloned()
        } else {
            None
        };
        tasks.push(tokio::spawn(subscribe(
            t.addr.clone(),
            t.path,
            tally.clone(),
            sample,
            stop.clone(),
        )));
        if i % 500 == 499 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while (tally.connected.load(Ordering::Relaxed) as usize) < subscribers
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let connected = tally.connected.load(Ordering::Relaxed) as usize;
    let per_sub = (rss_kib_of(&t.pid.to_string()).saturating_sub(rss_before)) as f64
        / connected.max(1) as f64;

    // Warm-up: the first saga on a fresh server opens the services' connections and database
    // pages; the figures below are about the stream in steady state. Its events are checked
    // for loss and order with the rest, but not timed.
    let warm_made = (t.produce)(10, Duration::ZERO).await;
    let warm_deadline = Instant::now() + Duration::from_secs(30);
    while (tally.deliveries.load(Ordering::Relaxed) as usize) < warm_made * connected
        && Instant::now() < warm_deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for s in &samples {
        s.lock()
            .unwrap_or_else(|e| e.into_inner())
            .delays_ms
            .clear();
    }

    // Paced: delay under a steady load.
    let paced_made = (t.produce)(
        paced_events,
        Duration::from_secs_f64(paced_events as f64 / 10.0),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut delays: Vec<Duration> = samples
        .iter()
        .flat_map(|s| {
            s.lock()
                .unwrap_or_else(|e| e.into_inner())
                .delays_ms
                .clone()
        })
        .map(|ms| Duration::from_secs_f64(ms.max(0.0) / 1000.0))
        .collect();
    delays.sort();
    let p50 = percentile_ms(&delays, 0.5);
    let p99 = percentile_ms(&delays, 0.99);

    // Burst: as fast as the producer goes; deliveries/s until every subscriber has them all.
    let before = tally.deliveries.load(Ordering::Relaxed);
    let started = Instant::now();
    let burst_made = (t.produce)(burst_events, Duration::ZERO).await;
    let want = before + (burst_made * connected) as u64;
    let deadline = Instant::now() + Duration::from_secs(120);
    while tally.deliveries.load(Ordering::Relaxed) < want && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let delivered = tally.deliveries.load(Ordering::Relaxed) - before;
    let per_s = delivered as f64 / started.elapsed().as_secs_f64();
    let made = warm_made + paced_made + burst_made;
    let mut orderly = true;
    for (i, s) in samples.iter().enumerate() {
        let s = s.lock().unwrap_or_else(|e| e.into_inner());
        let ordered = s.ids.windows(2).all(|w| w[0] < w[1]);
        if !ordered || s.ids.len() != made {
            orderly = false;
            report.note(format!(
                "{}: sampled subscriber {i} got {} of {made} events, {}",
                t.name,
                s.ids.len(),
                if ordered { "in order" } else { "out of order" }
            ));
        }
    }
    stop.notify_waiters();
    for task in tasks {
        task.abort();
    }
    let name = t.name;
    report.figure(
        "sse",
        &format!("{name}: subscribers connected"),
        connected as f64,
        "subscribers",
    );
    report.figure(
        "sse",
        &format!("{name}: events produced (warm-up + paced + burst)"),
        (warm_made + paced_made + burst_made) as f64,
        "events",
    );
    report.figure(
        "sse",
        &format!("{name}: server RSS per idle subscriber"),
        per_sub,
        "KiB",
    );
    report.figure(
        "sse",
        &format!("{name}: p50 event → subscriber at 10 events/s"),
        p50,
        "ms",
    );
    report.figure(
        "sse",
        &format!("{name}: p99 event → subscriber at 10 events/s"),
        p99,
        "ms",
    );
    report.figure(
        "sse",
        &format!("{name}: deliveries/s in a burst"),
        per_s,
        "deliveries/s",
    );
    report.figure(
        "sse",
        &format!("{name}: sampled subscribers got every event, in order"),
        if orderly { 1.0 } else { 0.0 },
        "(1 = yes)",
    );
    Ok(Measured {
        kib_per_subscriber: per_sub,
        deliveries_per_s: per_s,
        p99_ms: p99,
        orderly,
    })
}

/// What [`measure`] found on one server.
pub struct Measured {
    pub kib_per_subscriber: f64,
    pub deliveries_per_s: f64,
    pub p99_ms: f64,
    /// Every sampled subscriber got every event, once, in order.
    pub orderly: bool,
}

/// The bars: ours against axum's broadcast example, measured in the same run.
pub fn bars(report: &mut Report, ours: &Measured, example: &Measured) {
    let memory = ours.kib_per_subscriber / example.kib_per_subscriber.max(f64::MIN_POSITIVE);
    report.bar(
        "SSE: RSS per idle subscriber ≤ 1.0× axum's broadcast example",
        memory <= 1.0,
        format!(
            "{memory:.2}× ({:.1} vs {:.1} KiB)",
            ours.kib_per_subscriber, example.kib_per_subscriber
        ),
    );
    let throughput = ours.deliveries_per_s / example.deliveries_per_s.max(f64::MIN_POSITIVE);
    report.bar(
        "SSE: deliveries/s in a burst ≥ 1.0× axum's broadcast example",
        throughput >= 1.0,
        format!(
            "{throughput:.2}× ({:.0} vs {:.0} deliveries/s)",
            ours.deliveries_per_s, example.deliveries_per_s
        ),
    );
    let delay = ours.p99_ms / example.p99_ms.max(f64::MIN_POSITIVE);
    report.bar(
        "SSE: p99 commit → subscriber ≤ 1.0× axum's broadcast example, none lost or reordered",
        delay <= 1.0 && ours.orderly,
        format!(
            "{delay:.2}× ({:.1} vs {:.1} ms), complete and ordered: {}",
            ours.p99_ms, example.p99_ms, ours.orderly
        ),
    );
}
