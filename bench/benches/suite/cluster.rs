//! Benchmark 9: several `saga-shop` nodes on one PostgreSQL database (issue 19). How soon a
//! surviving node resumes the sagas of one killed with `kill -9`; sagas/s with one, two and
//! three nodes, each hosting its four services, and what the database was doing meanwhile; and
//! (in `cluster_stream.rs`) how much later a record reaches `/api/events` on a node that did
//! not write it than on the node that did.
//!
//! Every measurement runs on a deployment of its own: a fresh `--schema` prefix on the shared
//! database, whose schemas are dropped afterwards, failed or not, since other runs (and other
//! people's tests) share that database.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use serde_json::json;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::sync::oneshot;

use crate::cluster_stream;
use crate::http::{Server, binary, order, start_logging};
use crate::report::{Report, rate};
use crate::sqlite::scratch;

/// The nodes' names (`--node-id`), in the order they are started.
pub const NODES: [&str; 3] = ["a", "b", "c"];

/// The components of a deployment, each a schema `PREFIX_component` (the backend's
/// `services::db::schema_name`).
const COMPONENTS: [&str; 5] = ["saga_log", "orders", "billing", "payments", "shipping"];

/// Sagas in flight at once from the load generator, whatever the number of nodes: the same
/// offered load, so the figures compare the nodes, not the client.
const CONCURRENCY: usize = 64;

pub async fn run(report: &mut Report, quick: bool) -> anyhow::Result<()> {
    eprintln!("==> 9. several nodes on one PostgreSQL");
    let Ok(db) = std::env::var("SAGA_TEST_POSTGRES_URL") else {
        report.note("cluster benchmarks skipped: SAGA_TEST_POSTGRES_URL is not set".into());
        return Ok(());
    };
    if !binary().exists() {
        report.note(
            "cluster benchmarks skipped: build saga-shop first (`cargo xtask bench` does)".into(),
        );
        return Ok(());
    }
    takeover(report, quick, &db).await?;
    throughput(report, quick, &db).await?;
    cluster_stream::run(report, quick, &db).await
}

/// One deployment on the shared database: its schema prefix and the nodes started on it.
pub struct Deployment {
    db: String,
    prefix: String,
    pub nodes: Vec<Server>,
    /// The bench's own connections, for reading the saga log.
    pub pool: PgPool,
}

impl Deployment {
    pub async fn new(db: &str) -> anyhow::Result<Self> {
        let simple = uuid::Uuid::new_v4().simple().to_string();
        Ok(Deployment {
            db: db.to_string(),
            prefix: format!("bench_{}", &simple[..12]),
            nodes: Vec::new(),
            pool: PgPoolOptions::new().max_connections(2).connect(db).await?,
        })
    }

    /// Start node `id` and wait until it listens. Nodes are started one after another: each
    /// migrates the schemas, and the first seeds the stock. Its warnings go to
    /// `target/bench/scratch/PREFIX-ID.log`, kept for a look after a run.
    pub fn start(&mut self, id: &str, lease_secs: u64) -> anyhow::Result<&Server> {
        let args = [
            "--schema".to_string(),
            self.prefix.clone(),
            "--node-id".into(),
            id.into(),
            "--lease-secs".into(),
            lease_secs.to_string(),
        ];
        let log = scratch(&format!("{}-{id}", self.prefix)).with_extension("log");
        let stderr = std::fs::File::create(&log)?;
        self.nodes
            .push(start_logging(&self.db, &args, Stdio::from(stderr))?);
        Ok(&self.nodes[self.nodes.len() - 1])
    }

    /// The table of `component`'s schema, e.g. `PREFIX_saga_log.saga_log`.
    pub fn table(&self, component: &str, table: &str) -> String {
        format!("{}_{component}.{table}", self.prefix)
    }

    /// Kill the nodes, then drop every schema of the deployment. Only warns on failure: the
    /// figures measured stand.
    pub async fn remove(mut self) {
        self.nodes.clear();
        let schemas: Vec<String> = COMPONENTS
            .iter()
            .map(|c| format!("{}_{c}", self.prefix))
            .collect();
        let sql = format!("DROP SCHEMA IF EXISTS {} CASCADE", schemas.join(", "));
        if let Err(e) = sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&self.pool)
            .await
        {
            eprintln!(
                "    warning: could not drop the schemas {}_*: {e:#}",
                self.prefix
            );
        }
        self.pool.close().await;
    }
}

/// Run `measure` on a fresh deployment, which is removed afterwards whatever the outcome.
pub async fn on_deployment<T>(
    db: &str,
    measure: impl AsyncFnOnce(&mut Deployment) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let mut deployment = Deployment::new(db).await?;
    let measured = measure(&mut deployment).await;
    deployment.remove().await;
    measured
}

pub fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Place one order with `faults` on the node at `url`; its saga id once accepted, or why not.
pub async fn place(
    http: &reqwest::Client,
    url: &str,
    faults: serde_json::Value,
) -> Result<String, String> {
    let mut body = order();
    body["faults"] = faults;
    let response = http
        .post(format!("{url}/api/orders"))
        .json(&body)
        .send()
        .await
        .map_err(|e| format!("no answer: {e}"))?;
    let status = response.status();
    let text = response
        .text()
        .await
        .map_err(|e| format!("{status}: {e}"))?;
    serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v["saga_id"].as_str().map(str::to_string))
        .ok_or_else(|| format!("{status}: {}", text.chars().take(200).collect::<String>()))
}

/// Takeover: `n` sagas started on node a, each held in `process_payment` by a `delay` fault
/// (under the step's 3 s time limit, so no attempt times out before the kill), then a is
/// killed with SIGKILL. The figure is the time from the kill to the first record node b
/// wrote in the last of them to be taken over, by b's clock (`at_ms`), which is this
/// machine's: b can only start once a's lease expired, and looks for orphans every 500 ms.
async fn takeover(report: &mut Report, quick: bool, db: &str) -> anyhow::Result<()> {
    let (n, lease_secs) = if quick { (20, 1) } else { (200, 3) };
    let (orphans, first_ms, last_ms) = on_deployment(db, async |d| {
        d.start(NODES[0], lease_secs)?;
        d.start(NODES[1], lease_secs)?;
        let a = d.nodes[0].url.clone();
        let http = reqwest::Client::new();
        let delay = json!({"process_payment": {"kind": "delay", "ms": 2500}});
        let ids: Vec<String> = futures_util::stream::iter(0..n)
            .map(|_| place(&http, &a, delay.clone()))
            .buffer_unordered(CONCURRENCY)
            .filter_map(|placed| std::future::ready(placed.ok()))
            .collect()
            .await;
        let killed_ms = wall_ms();
        d.nodes[0].child.kill()?;
        d.nodes[0].child.wait()?;
        let log = d.table("saga_log", "saga_log");
        // The orphans: sagas a had not finished when it died (a writes nothing after).
        let finished: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT DISTINCT saga_id FROM {log} WHERE saga_id = ANY($1) AND node = $2 \
             AND kind IN ('saga_completed', 'saga_compensated', 'saga_stuck')"
        )))
        .bind(&ids)
        .bind(NODES[0])
        .fetch_all(&d.pool)
        .await?;
        let orphans: Vec<String> = ids
            .into_iter()
            .filter(|id| !finished.contains(id))
            .collect();
        let deadline = Instant::now() + Duration::from_secs(lease_secs + 30);
        let firsts: Vec<i64> = loop {
            let firsts: Vec<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT MIN(at_ms) FROM {log} WHERE saga_id = ANY($1) AND node = $2 \
                 GROUP BY saga_id"
            )))
            .bind(&orphans)
            .bind(NODES[1])
            .fetch_all(&d.pool)
            .await?;
            if firsts.len() == orphans.len() || Instant::now() > deadline {
                break firsts;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        if firsts.len() < orphans.len() {
            anyhow::bail!(
                "node b took over {} of {} orphaned sagas within {} s of the kill",
                firsts.len(),
                orphans.len(),
                lease_secs + 30
            );
        }
        let first = firsts.iter().min().map_or(0, |t| t - killed_ms);
        let last = firsts.iter().max().map_or(0, |t| t - killed_ms);
        anyhow::Ok((orphans.len(), first, last))
    })
    .await?;
    report.figure(
        "cluster",
        &format!("takeover: sagas in flight on node a at its kill -9 (lease {lease_secs} s)"),
        orphans as f64,
        "sagas",
    );
    report.figure(
        "cluster",
        "takeover: kill → first orphan's first record by node b",
        first_ms as f64,
        "ms",
    );
    report.figure(
        "cluster",
        "takeover: kill → last orphan's first record by node b",
        last_ms as f64,
        "ms",
    );
    let bar_ms = (lease_secs as i64 + 2) * 1000;
    report.bar(
        "Cluster: the last orphaned saga resumes ≤ lease + 2 s after kill -9",
        orphans > 0 && last_ms <= bar_ms,
        format!("{last_ms} ms vs {bar_ms} ms (lease {lease_secs} s, {orphans} sagas in flight)"),
    );
    Ok(())
}

/// What one throughput run found.
struct Throughput {
    sagas_per_s: f64,
    /// Saga-log commits per saga, all nodes together (their `/metrics`).
    commits_per_saga: f64,
    usage: crate::cluster_load::Usage,
}

/// Throughput with 1, 2 and 3 nodes, each on a fresh deployment: `n` orders spread round-robin
/// over the nodes, [`CONCURRENCY`] sagas at once, sagas/s from the first POST to the last end.
async fn throughput(report: &mut Report, quick: bool, db: &str) -> anyhow::Result<()> {
    let n = if quick { 100 } else { 3000 };
    let mut runs = Vec::new();
    for nodes in 1..=NODES.len() {
        let run = on_deployment(db, async |d| {
            for id in &NODES[..nodes] {
                d.start(id, 30)?;
            }
            saturate(d, n).await
        })
        .await?;
        report.figure(
            "cluster",
            &format!("sagas/s with {nodes} node(s), 4 services each over HTTP"),
            run.sagas_per_s,
            "sagas/s",
        );
        report.figure(
            "cluster",
            &format!("{nodes} node(s): saga-log commits per saga"),
            run.commits_per_saga,
            "commits",
        );
        crate::cluster_load::figures(report, nodes, &run.usage);
        runs.push(run);
    }
    let (one, two) = (runs[0].sagas_per_s, runs[1].sagas_per_s);
    let ratio = two / one.max(f64::MIN_POSITIVE);
    report.bar(
        "Cluster: sagas/s with 2 nodes ≥ 0.9× one node",
        ratio >= 0.9,
        format!(
            "{ratio:.2}× ({two:.0} vs {one:.0} sagas/s; 3 nodes {:.0})",
            runs[2].sagas_per_s
        ),
    );
    let usages: Vec<&crate::cluster_load::Usage> = runs.iter().map(|r| &r.usage).collect();
    report.note(crate::cluster_load::where_the_limit_is(
        &runs.iter().map(|r| r.sagas_per_s).collect::<Vec<_>>(),
        &usages,
    ));
    Ok(())
}

/// Sagas' ends as the nodes' `/api/events` streams tell them, to whoever waits for one. A
/// saga's end may come before anyone waits for it (a fast saga, its POST's answer not yet read),
/// and once from each node's stream: the first is kept until it is waited for.
#[derive(Default)]
struct Ends(Mutex<HashMap<String, End>>);

enum End {
    Seen,
    Awaited(oneshot::Sender<()>),
}

impl Ends {
    fn ended(&self, saga: &str) {
        let mut ends = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match ends.remove(saga) {
            Some(End::Awaited(waiter)) => {
                let _ = waiter.send(());
            }
            _ => {
                ends.insert(saga.to_string(), End::Seen);
            }
        }
    }

    fn wait(&self, saga: String) -> oneshot::Receiver<()> {
        let (waiter, ended) = oneshot::channel();
        let mut ends = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match ends.remove(&saga) {
            Some(End::Seen) => {
                let _ = waiter.send(());
            }
            _ => {
                ends.insert(saga, End::Awaited(waiter));
            }
        }
        ended
    }
}

/// Follow `/api/events` of the node at `url`, noting every saga's terminal record.
async fn follow(url: &str, ends: Arc<Ends>) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let mut response = reqwest::get(format!("{url}/api/events")).await?;
    Ok(tokio::spawn(async move {
        let mut pending = String::new();
        while let Ok(Some(chunk)) = response.chunk().await {
            pending.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = pending.find("\n\n") {
                let block: String = pending.drain(..end + 2).collect();
                let terminal = ["saga_completed", "saga_compensated", "saga_stuck"]
                    .iter()
                    .any(|kind| block.contains(&format!("event: {kind}\n")));
                if terminal
                    && let Some(data) = block.lines().find_map(|l| l.strip_prefix("data: "))
                    && let Ok(v) = serde_json::from_str::<serde_json::Value>(data)
                    && let Some(saga) = v["saga_id"].as_str()
                {
                    ends.ended(saga);
                }
            }
        }
    }))
}

/// A warm-up (not timed: connections and pages), then `n` orders round-robin over the nodes,
/// each of the [`CONCURRENCY`] clients placing its next order once its last saga ended. The
/// bound is on sagas, not on requests: a node answers `POST /api/orders` once the saga has
/// started, so a client that only waited for that answer would pile up sagas in flight as fast
/// as the nodes accept them, and measure the backlog rather than the rate.
async fn saturate(d: &Deployment, n: usize) -> anyhow::Result<Throughput> {
    let urls: Vec<String> = d.nodes.iter().map(|s| s.url.clone()).collect();
    let http = reqwest::Client::new();
    let ends = Arc::new(Ends::default());
    // Every node's stream carries every node's records; following each, the first to tell
    // ends the wait, so the figure does not hang on one node's path to another's records.
    let mut followers = Vec::new();
    for url in &urls {
        followers.push(follow(url, ends.clone()).await?);
    }
    let one = async |i: usize| -> Result<(), String> {
        let saga = place(&http, &urls[i % urls.len()], json!({})).await?;
        tokio::time::timeout(Duration::from_secs(60), ends.wait(saga.clone()))
            .await
            .map_err(|_| format!("saga {saga} did not end within 60 s"))?
            .map_err(|_| format!("saga {saga}: its wait was dropped"))
    };
    // How many sagas ended, and the first failure's reason.
    let run_all = async |count: usize| -> (usize, Option<String>) {
        futures_util::stream::iter(0..count)
            .map(one)
            .buffer_unordered(CONCURRENCY)
            .fold((0, None), |(n, why), ended| {
                std::future::ready(match ended {
                    Ok(()) => (n + 1, why),
                    Err(e) => (n, why.or(Some(e))),
                })
            })
            .await
    };
    run_all(CONCURRENCY).await;

    let pids: Vec<u32> = d.nodes.iter().map(|s| s.child.id()).collect();
    let commits_before = log_commits(&http, &urls).await;
    let sampler = crate::cluster_load::Sampler::start(&d.pool, pids);
    let started = Instant::now();
    let (ended, failed) = run_all(n).await;
    let elapsed = started.elapsed();
    let usage = sampler.stop(ended).await;
    let commits = log_commits(&http, &urls).await - commits_before;
    for follower in followers {
        follower.abort();
    }
    if let Some(why) = failed {
        anyhow::bail!("only {ended} of {n} sagas ended; the first failure: {why}");
    }
    Ok(Throughput {
        sagas_per_s: rate(ended, elapsed),
        commits_per_saga: commits / ended.max(1) as f64,
        usage,
    })
}

/// The saga-log commits the nodes at `urls` made so far, from their `/metrics`: how well each
/// node's group commit gathers records is what splitting the sagas over nodes can change.
async fn log_commits(http: &reqwest::Client, urls: &[String]) -> f64 {
    let mut commits = 0.0;
    for url in urls {
        let Ok(response) = http.get(format!("{url}/metrics")).send().await else {
            continue;
        };
        let text = response.text().await.unwrap_or_default();
        commits += text
            .lines()
            .find_map(|l| l.strip_prefix("saga_log_commits_total "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
    }
    commits
}
