//! Benchmarks 2 (the durable log on SQLite against the disk), 4 (memory over a long run) and
//! 5 (recovery after a kill with thousands of sagas in flight).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use saga_engine::{Engine, SagaDefinition, SqliteStore, Step};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use crate::engine::{Callers, measure, noop_saga};
use crate::report::{Report, rate, rss_kib};

pub fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench/scratch");
    let _ = std::fs::create_dir_all(&dir);
    dir.join(format!("{name}-{}.db", uuid::Uuid::new_v4().simple()))
}

/// A row the size of a saga log record (a step_succeeded with a small output).
pub const DETAIL: &str = r#"{"output":{"step":2,"ok":true},"duration_ms":1}"#;

/// The disk's bound: raw inserts of log-sized rows, `per_tx` per transaction.
async fn raw_sqlite(rows: usize, per_tx: usize) -> anyhow::Result<f64> {
    let options = SqliteConnectOptions::new()
        .filename(scratch("raw"))
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full);
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await?;
    sqlx::query("CREATE TABLE log (position INTEGER PRIMARY KEY, saga_id TEXT, seq INTEGER, kind TEXT, at_ms INTEGER, step TEXT, attempt INTEGER, detail TEXT, UNIQUE (saga_id, seq))")
        .execute(&pool)
        .await?;
    let started = Instant::now();
    let mut written = 0;
    while written < rows {
        let mut tx = pool.begin().await?;
        for _ in 0..per_tx {
            sqlx::query("INSERT INTO log (saga_id, seq, kind, at_ms, step, attempt, detail) VALUES (?, ?, 'step_succeeded', ?, 'step2', 1, ?)")
                .bind(uuid::Uuid::new_v4().to_string())
                .bind(written as i64)
                .bind(written as i64)
                .bind(DETAIL)
                .execute(&mut *tx)
                .await?;
            written += 1;
        }
        tx.commit().await?;
    }
    Ok(rate(written, started.elapsed()))
}

/// Sagas/s of the engine with `in_flight` at a time, and the log commits and records per saga.
pub async fn engine_throughput(engine: &Engine, n: usize, in_flight: usize) -> (f64, f64, f64) {
    let input = serde_json::json!({});
    let before = engine.log_stats();
    let run = measure(n, in_flight, Callers::Dispatcher, {
        let engine = engine.clone();
        move || {
            let (engine, input) = (engine.clone(), input.clone());
            async move {
                let _ = engine.run("noop", &input).await;
            }
        }
    })
    .await;
    let after = engine.log_stats();
    (
        run.per_second,
        (after.commits - before.commits) as f64 / n as f64,
        (after.records - before.records) as f64 / n as f64,
    )
}

pub async fn run(report: &mut Report, quick: bool) -> anyhow::Result<()> {
    eprintln!("==> 2. the saga log on SQLite against the disk");
    let one_per_tx = raw_sqlite(if quick { 100 } else { 1000 }, 1).await?;
    let hundred_per_tx = raw_sqlite(if quick { 10_000 } else { 100_000 }, 100).await?;
    report.figure(
        "sqlite",
        "raw rows/s, 1 per transaction (WAL, synchronous=FULL)",
        one_per_tx,
        "rows/s",
    );
    report.figure(
        "sqlite",
        "raw rows/s, 100 per transaction",
        hundred_per_tx,
        "rows/s",
    );

    let engine = Engine::new(SqliteStore::open(&scratch("engine")).await?);
    engine.register(noop_saga("noop", false));
    let (_, alone_commits, alone_records) = engine_throughput(&engine, 1, 1).await;
    report.figure(
        "sqlite",
        "log commits per saga, run alone",
        alone_commits,
        "commits",
    );
    report.figure("sqlite", "log records per saga", alone_records, "records");
    let mut at_1024 = 0.0;
    for (in_flight, n) in [
        (1, if quick { 100 } else { 1000 }),
        (64, if quick { 2000 } else { 20_000 }),
        (1024, if quick { 5000 } else { 50_000 }),
    ] {
        let (per_s, commits, records) = engine_throughput(&engine, n, in_flight).await;
        report.figure(
            "sqlite",
            &format!("engine sagas/s, {in_flight} in flight"),
            per_s,
            "sagas/s",
        );
        report.figure(
            "sqlite",
            &format!("log commits per saga, {in_flight} in flight"),
            commits,
            "commits",
        );
        if in_flight == 1024 {
            at_1024 = per_s * records;
            report.figure(
                "sqlite",
                "records written/s, 1024 in flight",
                at_1024,
                "records/s",
            );
        }
    }
    let share = at_1024 / hundred_per_tx;
    report.bar(
        "SQLite: records/s at 1024 in flight ≥ 50% of the 100-per-transaction bound",
        share >= 0.5,
        format!(
            "{:.0}% ({at_1024:.0} vs {hundred_per_tx:.0} rows/s)",
            share * 100.0
        ),
    );
    report.bar(
        "SQLite: ≤ 5 log commits per 4-step saga run alone",
        alone_commits <= 5.0,
        format!("{alone_commits:.0} commits"),
    );
    Ok(())
}

pub fn memory(
    rt: &tokio::runtime::Runtime,
    report: &mut Report,
    quick: bool,
) -> anyhow::Result<()> {
    eprintln!("==> 4. memory over a long run (SQLite)");
    let (first, second) = if quick {
        (2_000, 20_000)
    } else {
        (10_000, 100_000)
    };
    rt.block_on(async {
        let engine = Engine::new(SqliteStore::open(&scratch("memory")).await?);
        engine.register(noop_saga("noop", false));
        engine_throughput(&engine, first, 1024).await;
        let rss_first = rss_kib();
        engine_throughput(&engine, second - first, 1024).await;
        let rss_second = rss_kib();
        report.figure(
            "memory",
            &format!("RSS after {first} finished sagas"),
            rss_first as f64 / 1024.0,
            "MiB",
        );
        report.figure(
            "memory",
            &format!("RSS after {second} finished sagas"),
            rss_second as f64 / 1024.0,
            "MiB",
        );
        let ratio = rss_second as f64 / rss_first.max(1) as f64;
        report.bar(
            &format!("memory: RSS after {second} ≤ 1.1× after {first}"),
            ratio <= 1.1,
            format!("{ratio:.2}×"),
        );
        Ok(())
    })
}

/// A saga whose first step never answers (the "before" process), or does nothing (the "after").
fn stalled_saga(stall: bool) -> SagaDefinition {
    let steps = (0..4)
        .map(|i| {
            Step::new(&format!("step{i}")).action(move |_| async move {
                if stall && i == 0 {
                    std::future::pending::<()>().await;
                }
                Ok(i)
            })
        })
        .collect();
    SagaDefinition::new("stalled", steps).expect("valid")
}

pub fn recovery(report: &mut Report, quick: bool) -> anyhow::Result<()> {
    eprintln!("==> 5. recovery after a kill with sagas in flight");
    let n = if quick { 1000 } else { 10_000 };
    let path = scratch("recovery");
    // The process that dies: its runtime is dropped with every saga mid-step, nothing flushed
    // beyond what the log already committed.
    let doomed = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    doomed.block_on(async {
        let engine = Engine::new(SqliteStore::open(&path).await?);
        engine.register(stalled_saga(true));
        let input = serde_json::json!({});
        let starts = (0..n).map(|_| engine.start("stalled", &input));
        for r in futures_util::future::join_all(starts).await {
            r?;
        }
        anyhow::Ok(())
    })?;
    doomed.shutdown_background();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let engine = Engine::new(SqliteStore::open(&path).await?);
        engine.register(stalled_saga(false));
        let started = Instant::now();
        let resumed = engine.recover().await?;
        while engine.running() > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let recovery = rate(resumed, started.elapsed());
        // Normal throughput on the same store, same saga, same number in flight.
        let input = serde_json::json!({});
        let normal = measure(n, n.min(1024), Callers::Dispatcher, {
            let engine = engine.clone();
            move || {
                let (engine, input) = (engine.clone(), input.clone());
                async move {
                    let _ = engine.run("stalled", &input).await;
                }
            }
        })
        .await;
        report.figure("recovery", &format!("sagas resumed after the kill (of {n})"), resumed as f64, "sagas");
        report.figure("recovery", "recovery throughput (all four steps left)", recovery, "sagas/s");
        report.figure("recovery", "normal throughput, same store, 1024 in flight", normal.per_second, "sagas/s");
        let share = recovery / normal.per_second;
        report.bar("recovery ≥ 80% of normal throughput", share >= 0.8 && resumed == n, format!("{:.0}% ({recovery:.0} vs {:.0} sagas/s, {resumed} of {n} resumed)", share * 100.0, normal.per_second));
        report.note("recovery: the 'kill' drops the first engine's tokio runtime with every saga mid-step (as SIGKILL would leave the log); a second engine on the same file recovers".into());
        anyhow::Ok(())
    })
}
