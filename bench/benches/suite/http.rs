//! Benchmark 6: end to end through HTTP: `POST /api/orders` against `saga-shop` with the four services
//! over real HTTP and their own databases, from a load generator here on loopback, bounded in
//! count. Saturation throughput, then latency from POST to the terminal event at half that rate;
//! and the same with each service in a process of its own.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::json;

use crate::report::{Report, percentile_ms, rate};
use crate::sqlite::scratch;

pub struct Server {
    pub child: Child,
    pub url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn binary() -> PathBuf {
    std::env::var_os("SAGA_SHOP_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release/saga-shop")
        })
}

pub fn start(db: &str, args: &[String]) -> anyhow::Result<Server> {
    start_logging(db, args, Stdio::null())
}

/// [`start`], the server's warnings and errors written to `stderr`.
pub fn start_logging(db: &str, args: &[String], stderr: Stdio) -> anyhow::Result<Server> {
    let mut child = Command::new(binary())
        .args([
            "--listen",
            "127.0.0.1:0",
            "--database",
            db,
            "--seed-stock",
            "100000000",
        ])
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let url = line
        .strip_prefix("saga-shop listening on ")
        .and_then(|l| l.split_whitespace().next())
        .ok_or_else(|| anyhow::anyhow!("saga-shop did not start: {line:?}"))?
        .to_string();
    Ok(Server { child, url })
}

/// When each saga ended, from one `/api/events` subscription.
type Ends = Arc<Mutex<HashMap<String, Instant>>>;

async fn follow(url: &str) -> anyhow::Result<Ends> {
    let ends: Ends = Arc::default();
    let mut response = reqwest::get(format!("{url}/api/events")).await?;
    let sink = ends.clone();
    tokio::spawn(async move {
        let mut buf = String::new();
        while let Ok(Some(chunk)) = response.chunk().await {
            buf.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buf.find("\n\n") {
                let block: String = buf.drain(..end + 2).collect();
                let terminal = block.contains("event: saga_completed")
                    || block.contains("event: saga_compensated")
                    || block.contains("event: saga_stuck");
                if terminal
                    && let Some(data) = block.lines().find_map(|l| l.strip_prefix("data: "))
                    && let Ok(v) = serde_json::from_str::<serde_json::Value>(data)
                    && let Some(id) = v["saga_id"].as_str()
                {
                    sink.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(id.to_string(), Instant::now());
                }
            }
        }
    });
    Ok(ends)
}

pub fn order() -> serde_json::Value {
    json!({
        "customer": {"name": "Bench Mark", "email": "bench@example.com"},
        "address": {"line1": "1 Load Street", "city": "London", "postal_code": "N1", "country": "GB"},
        "delivery": "standard",
        "items": [{"sku": "CB-12", "qty": 1}],
        "payment": {"method": "wallet", "wallet_id": "bench-wallet"}
    })
}

pub async fn post(http: &reqwest::Client, url: &str) -> Option<(String, Instant)> {
    let sent = Instant::now();
    let response = http
        .post(format!("{url}/api/orders"))
        .json(&order())
        .send()
        .await
        .ok()?;
    let body: serde_json::Value = response.json().await.ok()?;
    Some((body["saga_id"].as_str()?.to_string(), sent))
}

async fn wait_all(ends: &Ends, ids: &[(String, Instant)], limit: Duration) -> Vec<Duration> {
    let deadline = Instant::now() + limit;
    loop {
        let done: Vec<Duration> = {
            let ends = ends.lock().unwrap_or_else(|e| e.into_inner());
            ids.iter()
                .filter_map(|(id, sent)| ends.get(id).map(|t| t.saturating_duration_since(*sent)))
                .collect()
        };
        if done.len() == ids.len() || Instant::now() > deadline {
            return done;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Saturation: `n` orders from 64 concurrent clients; sagas/s from the first POST to the last end.
async fn saturation(url: &str, ends: &Ends, n: usize) -> f64 {
    let http = reqwest::Client::new();
    let started = Instant::now();
    let ids: Vec<(String, Instant)> = futures_util::stream::iter(0..n)
        .map(|_| post(&http, url))
        .buffer_unordered(64)
        .filter_map(std::future::ready)
        .collect()
        .await;
    let done = wait_all(ends, &ids, Duration::from_secs(120)).await;
    rate(done.len(), started.elapsed())
}

/// Open loop at `per_second`: POST to terminal event, p50 and p99 in ms.
async fn latency(url: &str, ends: &Ends, per_second: f64, n: usize) -> (f64, f64) {
    let http = reqwest::Client::new();
    let interval = Duration::from_secs_f64(1.0 / per_second.max(1.0));
    let mut tick = tokio::time::interval(interval);
    let mut posts = Vec::with_capacity(n);
    for _ in 0..n {
        tick.tick().await;
        let http = http.clone();
        let url = url.to_string();
        posts.push(tokio::spawn(async move { post(&http, &url).await }));
    }
    let mut ids = Vec::new();
    for p in posts {
        if let Ok(Some(id)) = p.await {
            ids.push(id);
        }
    }
    let mut done = wait_all(ends, &ids, Duration::from_secs(120)).await;
    done.sort();
    (percentile_ms(&done, 0.5), percentile_ms(&done, 0.99))
}

/// Sagas/s at saturation with `n` orders, then p50/p99 POST → terminal event at half that rate.
async fn saturation_then_latency(url: &str, n: usize) -> anyhow::Result<(f64, f64, f64)> {
    let ends = follow(url).await?;
    let sat = saturation(url, &ends, n).await;
    let (p50, p99) = latency(url, &ends, sat / 2.0, n / 2).await;
    Ok((sat, p50, p99))
}

pub async fn run(report: &mut Report, quick: bool) -> anyhow::Result<()> {
    eprintln!("==> 6. end to end through HTTP");
    if !binary().exists() {
        report.note(
            "HTTP benchmark skipped: build saga-shop first (`cargo xtask bench` does)".into(),
        );
        return Ok(());
    }
    let n = if quick { 300 } else { 3000 };
    let dir = scratch("http");
    let db = format!("sqlite://{}", dir.display());
    let shop = start(&db, &[])?;
    let (sat, p50, p99) = saturation_then_latency(&shop.url, n).await?;
    report.figure(
        "http",
        "sagas/s at saturation (one process, 4 services over HTTP)",
        sat,
        "sagas/s",
    );
    report.figure(
        "http",
        "POST → terminal event p50 at half that rate",
        p50,
        "ms",
    );
    report.figure(
        "http",
        "POST → terminal event p99 at half that rate",
        p99,
        "ms",
    );
    report.bar(
        "HTTP: ≥ 1,000 sagas/s",
        sat >= 1000.0,
        format!("{sat:.0} sagas/s"),
    );
    report.bar(
        "HTTP: p99 < 50 ms at half load",
        p99 < 50.0,
        format!("p99 {p99:.1} ms, p50 {p50:.1} ms"),
    );
    drop(shop);

    // Each service in its own process.
    let mut services = Vec::new();
    let mut urls = Vec::new();
    for name in ["orders", "billing", "payments", "shipping"] {
        let dir = scratch(&format!("svc-{name}"));
        let s = start(
            &format!("sqlite://{}", dir.display()),
            &["--service".into(), name.into()],
        )?;
        urls.push(format!("--service-url={name}={}/svc/{name}", s.url));
        services.push(s);
    }
    let dir = scratch("http-split");
    let shop = start(&format!("sqlite://{}", dir.display()), &urls)?;
    let (sat, p50, p99) = saturation_then_latency(&shop.url, n).await?;
    report.figure(
        "http",
        "sagas/s at saturation (services in 4 processes)",
        sat,
        "sagas/s",
    );
    report.figure(
        "http",
        "split: POST → terminal p50 at half that rate",
        p50,
        "ms",
    );
    report.figure(
        "http",
        "split: POST → terminal p99 at half that rate",
        p99,
        "ms",
    );
    Ok(())
}
