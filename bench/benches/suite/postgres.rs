//! Benchmark 3: the durable log on PostgreSQL, against single-row commits at 1 and 64 connections.

use std::time::Instant;

use futures_util::StreamExt;
use saga_engine::{Engine, PgStore};
use sqlx::postgres::PgPoolOptions;

use crate::engine::noop_saga;
use crate::report::{Report, rate};
use crate::sqlite::{DETAIL, engine_throughput};

async fn commits_per_second(
    url: &str,
    schema: &str,
    connections: usize,
    rows: usize,
) -> anyhow::Result<f64> {
    let schema = schema.to_string();
    let pool = PgPoolOptions::new()
        .max_connections(connections as u32)
        .after_connect(move |conn, _| {
            let schema = schema.clone();
            Box::pin(async move {
                sqlx::query(sqlx::AssertSqlSafe(format!("SET search_path TO {schema}")))
                    .execute(conn)
                    .await?;
                Ok(())
            })
        })
        .connect(url)
        .await?;
    let started = Instant::now();
    futures_util::stream::iter(0..rows)
        .map(|i| {
            let pool = pool.clone();
            async move {
                sqlx::query("INSERT INTO raw_log (saga_id, seq, kind, at_ms, step, attempt, detail) VALUES ($1, $2, 'step_succeeded', $3, 'step2', 1, $4)")
                    .bind(uuid::Uuid::new_v4().to_string())
                    .bind(i as i64)
                    .bind(i as i64)
                    .bind(DETAIL)
                    .execute(&pool)
                    .await
            }
        })
        .buffer_unordered(connections)
        .for_each(|r| {
            if let Err(e) = r {
                eprintln!("insert failed: {e}");
            }
            std::future::ready(())
        })
        .await;
    Ok(rate(rows, started.elapsed()))
}

pub async fn run(report: &mut Report, quick: bool) -> anyhow::Result<()> {
    eprintln!("==> 3. the saga log on PostgreSQL");
    let Ok(url) = std::env::var("SAGA_TEST_POSTGRES_URL") else {
        report.note("PostgreSQL benchmarks skipped: SAGA_TEST_POSTGRES_URL is not set".into());
        return Ok(());
    };
    let schema = format!("bench_{}", uuid::Uuid::new_v4().simple());
    let measured = measure(report, quick, &url, &schema).await;
    // The database is shared by every run on the machine: leave nothing behind, failed or not.
    let dropped = async {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect(&url)
            .await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE"
        )))
        .execute(&pool)
        .await?;
        anyhow::Ok(())
    }
    .await;
    if let Err(e) = dropped {
        eprintln!("    warning: could not drop the benchmark schema {schema}: {e:#}");
    }
    measured
}

async fn measure(report: &mut Report, quick: bool, url: &str, schema: &str) -> anyhow::Result<()> {
    let store = PgStore::connect(url, Some(schema)).await?;
    {
        let pool = PgPoolOptions::new().max_connections(1).connect(url).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE TABLE {schema}.raw_log (position BIGSERIAL PRIMARY KEY, saga_id TEXT, seq BIGINT, kind TEXT, at_ms BIGINT, step TEXT, attempt BIGINT, detail TEXT)"
        )))
        .execute(&pool)
        .await?;
    }
    let one = commits_per_second(url, schema, 1, if quick { 200 } else { 2000 }).await?;
    let many = commits_per_second(url, schema, 64, if quick { 2000 } else { 20_000 }).await?;
    report.figure(
        "postgres",
        "single-row INSERT commits/s, 1 connection",
        one,
        "commits/s",
    );
    report.figure(
        "postgres",
        "single-row INSERT commits/s, 64 connections",
        many,
        "commits/s",
    );

    let engine = Engine::new(store);
    engine.register(noop_saga("noop", false));
    let (_, alone_commits, records) = engine_throughput(&engine, 1, 1).await;
    report.figure(
        "postgres",
        "log commits per saga, run alone",
        alone_commits,
        "commits",
    );
    let (per_s, commits, _) =
        engine_throughput(&engine, if quick { 3000 } else { 30_000 }, 1024).await;
    report.figure(
        "postgres",
        "engine sagas/s, 1024 in flight",
        per_s,
        "sagas/s",
    );
    report.figure(
        "postgres",
        "log commits per saga, 1024 in flight",
        commits,
        "commits",
    );
    let bound = 2.0 * many / records;
    report.bar(
        "PostgreSQL: sagas/s at 1024 in flight ≥ 2 × (64-connection commits/s ÷ records per saga)",
        per_s >= bound,
        format!(
            "{per_s:.0} vs {bound:.0} sagas/s ({many:.0} commits/s, {records:.0} records per saga)"
        ),
    );
    Ok(())
}
