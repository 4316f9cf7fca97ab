//! For benchmark 9's throughput runs: where the CPU went (PostgreSQL's processes, the nodes,
//! the load generator, read from `/proc`) and what PostgreSQL's sessions were doing (sampled
//! from `pg_stat_activity`), so the report can say whether the database or the nodes set the
//! pace. On this machine every process shares the same cores, so a curve of sagas/s alone
//! cannot tell the two apart.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqlx::PgPool;

use crate::report::Report;

/// CPU time, in clock ticks, of the processes that matter and of the whole machine.
#[derive(Default)]
struct Ticks {
    /// Every process named `postgres`, by pid: its backends and its own workers.
    postgres: HashMap<u32, u64>,
    nodes: u64,
    bench: u64,
    /// All cores, busy and idle; and busy alone.
    machine: u64,
    machine_busy: u64,
}

/// `utime + stime` of a process, and its command name.
fn process_ticks(pid: &str) -> Option<(String, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ...`: the name may hold spaces and parentheses, so split at the last.
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_string();
    let fields: Vec<&str> = stat.get(close + 2..)?.split_whitespace().collect();
    // After the name, `state` is field 3 of the line; utime and stime are fields 14 and 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((comm, utime + stime))
}

fn read_ticks(nodes: &[u32]) -> Ticks {
    let mut ticks = Ticks::default();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let name = entry.file_name();
            let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            if let Some((comm, t)) = process_ticks(&pid.to_string())
                && comm == "postgres"
            {
                ticks.postgres.insert(pid, t);
            }
        }
    }
    ticks.nodes = nodes
        .iter()
        .filter_map(|p| process_ticks(&p.to_string()))
        .map(|(_, t)| t)
        .sum();
    ticks.bench = process_ticks("self").map_or(0, |(_, t)| t);
    if let Some(cpu) = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| s.lines().next().map(str::to_string))
    {
        // user nice system idle iowait irq softirq steal (guest time is inside user).
        let v: Vec<u64> = cpu
            .split_whitespace()
            .skip(1)
            .take(8)
            .filter_map(|f| f.parse().ok())
            .collect();
        ticks.machine = v.iter().sum();
        ticks.machine_busy = ticks.machine - v.get(3).unwrap_or(&0) - v.get(4).unwrap_or(&0);
    }
    ticks
}

/// What a throughput run used, as shares of the whole machine (all cores = 1.0).
#[derive(Debug, Default)]
pub struct Usage {
    pub postgres: f64,
    pub nodes: f64,
    pub bench: f64,
    pub machine_busy: f64,
    /// CPU milliseconds per saga.
    pub postgres_ms_per_saga: f64,
    pub nodes_ms_per_saga: f64,
    /// PostgreSQL sessions of this database running a statement, on average over the samples.
    pub active_sessions: f64,
    /// Of those, by what they waited on (`CPU`: not waiting), most first.
    pub waits: Vec<(String, f64)>,
}

/// Samples `pg_stat_activity` every 100 ms while a run goes on, and `/proc` at both ends.
pub struct Sampler {
    before: Ticks,
    nodes: Vec<u32>,
    stop: Arc<AtomicBool>,
    sessions: tokio::task::JoinHandle<(usize, HashMap<String, usize>)>,
}

impl Sampler {
    pub fn start(pool: &PgPool, nodes: Vec<u32>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (pool, stopped) = (pool.clone(), stop.clone());
        let sessions = tokio::spawn(async move {
            let (mut samples, mut waits) = (0, HashMap::<String, usize>::new());
            while !stopped.load(Ordering::Relaxed) {
                let rows: Vec<(String, i64)> = sqlx::query_as(
                    "SELECT COALESCE(wait_event_type || ':' || wait_event, 'CPU'), count(*) \
                     FROM pg_stat_activity WHERE state = 'active' \
                     AND backend_type = 'client backend' AND datname = current_database() \
                     AND pid <> pg_backend_pid() GROUP BY 1",
                )
                .fetch_all(&pool)
                .await
                .unwrap_or_default();
                samples += 1;
                for (wait, count) in rows {
                    *waits.entry(wait).or_default() += count as usize;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            (samples, waits)
        });
        Sampler {
            before: read_ticks(&nodes),
            nodes,
            stop,
            sessions,
        }
    }

    /// Stop sampling; `sagas` ran meanwhile.
    pub async fn stop(self, sagas: usize) -> Usage {
        let after = read_ticks(&self.nodes);
        self.stop.store(true, Ordering::Relaxed);
        let (samples, waits) = self.sessions.await.unwrap_or_default();
        let machine = after.machine.saturating_sub(self.before.machine).max(1) as f64;
        // A backend that started during the run counts whole; one that ended is missed (the
        // nodes keep their pools' connections open, so few do).
        let postgres: u64 = after
            .postgres
            .iter()
            .map(|(pid, t)| t.saturating_sub(*self.before.postgres.get(pid).unwrap_or(&0)))
            .sum();
        let nodes = after.nodes.saturating_sub(self.before.nodes);
        // Ticks are 1/100 s on Linux (USER_HZ).
        let ms_per_saga = |ticks: u64| ticks as f64 * 10.0 / sagas.max(1) as f64;
        let mut waits: Vec<(String, f64)> = waits
            .into_iter()
            .map(|(w, n)| (w, n as f64 / samples.max(1) as f64))
            .collect();
        waits.sort_by(|a, b| b.1.total_cmp(&a.1));
        Usage {
            postgres: postgres as f64 / machine,
            nodes: nodes as f64 / machine,
            bench: after.bench.saturating_sub(self.before.bench) as f64 / machine,
            machine_busy: after.machine_busy.saturating_sub(self.before.machine_busy) as f64
                / machine,
            postgres_ms_per_saga: ms_per_saga(postgres),
            nodes_ms_per_saga: ms_per_saga(nodes),
            active_sessions: waits.iter().map(|(_, n)| n).sum(),
            waits,
        }
    }
}

/// The figures of one throughput run's usage.
pub fn figures(report: &mut Report, nodes: usize, u: &Usage) {
    let shares = [
        ("PostgreSQL's CPU", u.postgres),
        ("the nodes' CPU", u.nodes),
        ("the load generator's CPU", u.bench),
        ("machine busy", u.machine_busy),
    ];
    for (what, share) in shares {
        report.figure(
            "cluster",
            &format!("{nodes} node(s): {what}, % of all cores"),
            share * 100.0,
            "%",
        );
    }
    report.figure(
        "cluster",
        &format!("{nodes} node(s): PostgreSQL CPU per saga"),
        u.postgres_ms_per_saga,
        "ms",
    );
    report.figure(
        "cluster",
        &format!("{nodes} node(s): the nodes' CPU per saga"),
        u.nodes_ms_per_saga,
        "ms",
    );
    report.figure(
        "cluster",
        &format!("{nodes} node(s): PostgreSQL sessions active, mean"),
        u.active_sessions,
        "sessions",
    );
}

/// A sentence for the report: the curve, where the CPU went, and the rate at which
/// PostgreSQL alone would fill the machine.
pub fn where_the_limit_is(rates: &[f64], usages: &[&Usage]) -> String {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per_node: Vec<String> = rates
        .iter()
        .zip(usages)
        .enumerate()
        .map(|(i, (rate, u))| {
            let waits: Vec<String> = u
                .waits
                .iter()
                .take(3)
                .map(|(w, n)| format!("{w} {n:.1}"))
                .collect();
            format!(
                "{} node(s): {rate:.0} sagas/s, machine {:.0}% busy (PostgreSQL {:.0}%, nodes \
                 {:.0}%, load generator {:.0}%), PostgreSQL {:.2} ms CPU per saga, sessions \
                 active {:.1} ({})",
                i + 1,
                u.machine_busy * 100.0,
                u.postgres * 100.0,
                u.nodes * 100.0,
                u.bench * 100.0,
                u.postgres_ms_per_saga,
                u.active_sessions,
                waits.join(", ")
            )
        })
        .collect();
    let pg_ms = usages
        .iter()
        .map(|u| u.postgres_ms_per_saga)
        .fold(0.0, f64::max);
    format!(
        "cluster throughput: {}. With all {cores} cores to itself PostgreSQL would be the limit \
         at about {:.0} sagas/s (its CPU per saga at most {pg_ms:.2} ms)",
        per_node.join("; "),
        cores as f64 * 1000.0 / pg_ms.max(f64::MIN_POSITIVE)
    )
}
