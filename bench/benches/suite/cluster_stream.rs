//! Benchmark 9, its event stream: the delay from a record's time (`at`, the writing node's
//! clock, taken just before its commit; every node runs on this machine, so the clocks are
//! one) to its arrival at subscribers of `/api/events`, when the sagas run on the subscribers'
//! node and when they run on another. A record written elsewhere reaches a node as a
//! notification of the log's new head, which the node then reads from the log: that round trip
//! is what the comparison prices. Each subscriber also checks that it got every record once,
//! with positions (the SSE ids) dense and rising.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::cluster::{Deployment, NODES, place};
use crate::report::{Report, percentile_ms};
use crate::sse::{now_ms, parse_at};

/// Sagas started per second while the delays are measured: 100 records/s, as in the `sse`
/// group's paced phase.
const SAGAS_PER_S: f64 = 10.0;

/// Records of one successful purchase: started, four steps started and succeeded, completed.
const RECORDS_PER_SAGA: usize = 10;

/// What one subscriber received: per record its saga, its delay and its position.
#[derive(Default)]
struct Received {
    records: Vec<(String, f64, i64)>,
}

/// Read `/api/events` until the task is aborted, noting each record as it arrives.
async fn subscribe(response: reqwest::Response, into: Arc<Mutex<Received>>) {
    let mut response = response;
    let mut pending = String::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        let arrived = now_ms();
        pending.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = pending.find("\n\n") {
            let block: String = pending.drain(..end + 2).collect();
            let Some(data) = block.lines().find_map(|l| l.strip_prefix("data: ")) else {
                continue;
            };
            let position = block
                .lines()
                .find_map(|l| l.strip_prefix("id: "))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(-1);
            let Ok(event) = serde_json::from_str::<serde_json::Value>(data) else {
                continue;
            };
            let (Some(saga), Some(at)) = (
                event["saga_id"].as_str(),
                event["at"].as_str().and_then(parse_at),
            ) else {
                continue;
            };
            into.lock()
                .unwrap_or_else(|e| e.into_inner())
                .records
                .push((saga.to_string(), arrived - at, position));
        }
    }
}

/// What the subscribers of one measurement saw.
struct Delays {
    sorted: Vec<Duration>,
    /// Every subscriber got every record of the timed sagas, once, positions dense and rising.
    complete: bool,
}

/// `subscribers` on `/api/events` of `listen`, one saga (not timed) to warm up, then `sagas`
/// started on `post` at [`SAGAS_PER_S`].
async fn delays(
    listen: &str,
    post: &str,
    sagas: usize,
    subscribers: usize,
) -> anyhow::Result<Delays> {
    let http = reqwest::Client::new();
    let mut received = Vec::new();
    let mut tasks = Vec::new();
    for _ in 0..subscribers {
        // Subscribed once the response head is in: the server subscribes before answering.
        let response = http.get(format!("{listen}/api/events")).send().await?;
        let into = Arc::new(Mutex::new(Received::default()));
        tasks.push(tokio::spawn(subscribe(response, into.clone())));
        received.push(into);
    }
    let got = |ids: &HashSet<String>| -> usize {
        received
            .iter()
            .map(|r| {
                let r = r.lock().unwrap_or_else(|e| e.into_inner());
                r.records.iter().filter(|(s, _, _)| ids.contains(s)).count()
            })
            .min()
            .unwrap_or(0)
    };
    let wait_for = async |ids: &HashSet<String>| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while got(ids) < ids.len() * RECORDS_PER_SAGA && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };

    let warm: HashSet<String> = place(&http, post, json!({})).await.into_iter().collect();
    wait_for(&warm).await;

    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / SAGAS_PER_S));
    let mut posts = Vec::with_capacity(sagas);
    for _ in 0..sagas {
        tick.tick().await;
        let (http, post) = (http.clone(), post.to_string());
        posts.push(tokio::spawn(
            async move { place(&http, &post, json!({})).await },
        ));
    }
    let mut timed = HashSet::new();
    for p in posts {
        if let Ok(Ok(id)) = p.await {
            timed.insert(id);
        }
    }
    wait_for(&timed).await;
    for task in &tasks {
        task.abort();
    }

    let mut sorted = Vec::new();
    let mut complete = timed.len() == sagas;
    for r in &received {
        let r = r.lock().unwrap_or_else(|e| e.into_inner());
        let positions: Vec<i64> = r.records.iter().map(|(_, _, p)| *p).collect();
        complete &= positions.windows(2).all(|w| w[1] == w[0] + 1);
        let mine: Vec<f64> = r
            .records
            .iter()
            .filter(|(s, _, _)| timed.contains(s))
            .map(|(_, d, _)| *d)
            .collect();
        complete &= mine.len() == timed.len() * RECORDS_PER_SAGA;
        sorted.extend(
            mine.iter()
                .map(|ms| Duration::from_secs_f64(ms.max(0.0) / 1000.0)),
        );
    }
    sorted.sort();
    Ok(Delays { sorted, complete })
}

pub async fn run(report: &mut Report, quick: bool, db: &str) -> anyhow::Result<()> {
    let (sagas, subscribers) = if quick { (10, 10) } else { (100, 50) };
    let single = on_fresh(db, 1, async |d| {
        let a = d.nodes[0].url.clone();
        delays(&a, &a, sagas, subscribers).await
    })
    .await?;
    let (same, cross) = on_fresh(db, 2, async |d| {
        let (a, b) = (d.nodes[0].url.clone(), d.nodes[1].url.clone());
        let same = delays(&a, &a, sagas, subscribers).await?;
        let cross = delays(&a, &b, sagas, subscribers).await?;
        anyhow::Ok((same, cross))
    })
    .await?;
    let cases = [
        ("one node alone", &single),
        ("two nodes, sagas on the subscribers' node", &same),
        ("two nodes, sagas on the other node", &cross),
    ];
    for (case, d) in cases {
        for (p, name) in [(0.5, "p50"), (0.99, "p99")] {
            report.figure(
                "cluster",
                &format!("/api/events {name} record → subscriber, {case}"),
                percentile_ms(&d.sorted, p),
                "ms",
            );
        }
        report.figure(
            "cluster",
            &format!("/api/events every record once, dense and in order, {case}"),
            if d.complete { 1.0 } else { 0.0 },
            "(1 = yes)",
        );
    }
    let (one, other) = (
        percentile_ms(&single.sorted, 0.99),
        percentile_ms(&cross.sorted, 0.99),
    );
    let ratio = other / one.max(f64::MIN_POSITIVE);
    report.bar(
        "Cluster: /api/events p99 from another node ≤ 2× a single node's",
        ratio <= 2.0 && cross.complete,
        format!(
            "{ratio:.2}× ({other:.1} vs {one:.1} ms, {subscribers} subscribers, {sagas} sagas at \
             {SAGAS_PER_S} sagas/s), complete and ordered: {}",
            cross.complete
        ),
    );
    Ok(())
}

/// A fresh deployment of `nodes` nodes for `measure`, removed afterwards.
async fn on_fresh<T>(
    db: &str,
    nodes: usize,
    measure: impl AsyncFnOnce(&mut Deployment) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    crate::cluster::on_deployment(db, async |d| {
        for id in &NODES[..nodes] {
            d.start(id, 30)?;
        }
        measure(d).await
    })
    .await
}
