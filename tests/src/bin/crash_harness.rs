//! Runs one test saga in this process, so a test can kill the process at a chosen point of the
//! saga's log and then start another one on the same files to recover it.
//!
//! ```text
//! crash-harness run     --log L.db --ledger E.db --saga-id ID --plan JSON [--crash-after-commits N] [--crash-in STEP:PHASE]
//! crash-harness recover --log L.db --ledger E.db --saga-id ID
//! ```
//! Prints the saga's final status on success. `--crash-after-commits N` aborts right after the
//! N-th log commit is durable (before anyone hears of it); `--crash-in` aborts right after a
//! step's effect is applied, before the engine can log it.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use saga_engine::{
    BoxFuture, Claim, Claimed, Committed, Engine, SagaId, SagaRecord, SagaStatus, SagaStore,
    SagaSummary, SqliteStore, StoreError,
};
use saga_shop_tests::{CrashPoint, FaultPlan, SqliteLedger, TestInput, test_saga};

/// A store that dies after a number of commits: the commit is durable, the process is gone.
struct CrashingStore {
    inner: SqliteStore,
    commits_left: AtomicU64,
}

impl SagaStore for CrashingStore {
    fn append<'a>(
        &'a self,
        records: &'a [SagaRecord],
        lease: Duration,
    ) -> BoxFuture<'a, Result<Vec<i64>, StoreError>> {
        Box::pin(async move {
            let positions = self.inner.append(records, lease).await?;
            if self.commits_left.fetch_sub(1, Ordering::SeqCst) == 1 {
                std::process::abort();
            }
            Ok(positions)
        })
    }
    fn saga_records(
        &self,
        id: SagaId,
        after: u64,
    ) -> BoxFuture<'_, Result<Vec<SagaRecord>, StoreError>> {
        self.inner.saga_records(id, after)
    }
    fn sagas_records<'a>(
        &'a self,
        ids: &'a [SagaId],
    ) -> BoxFuture<'a, Result<Vec<SagaRecord>, StoreError>> {
        self.inner.sagas_records(ids)
    }
    fn records_after(
        &self,
        after: i64,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<Committed>, StoreError>> {
        self.inner.records_after(after, limit)
    }
    fn last_position(&self) -> BoxFuture<'_, Result<i64, StoreError>> {
        self.inner.last_position()
    }
    fn saga(&self, id: SagaId) -> BoxFuture<'_, Result<Option<SagaSummary>, StoreError>> {
        self.inner.saga(id)
    }
    fn list_sagas(
        &self,
        status: Option<SagaStatus>,
        before: Option<SagaId>,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<SagaSummary>, StoreError>> {
        self.inner.list_sagas(status, before, limit)
    }
    fn claim(
        &self,
        owner: &str,
        lease: Duration,
        which: Claim,
    ) -> BoxFuture<'_, Result<Vec<Claimed>, StoreError>> {
        self.inner.claim(owner, lease, which)
    }
    fn claim_stuck<'a>(
        &'a self,
        id: SagaId,
        owner: &'a str,
        lease: Duration,
    ) -> BoxFuture<'a, Result<Option<u64>, StoreError>> {
        self.inner.claim_stuck(id, owner, lease)
    }
    fn release<'a>(&'a self, owner: &'a str) -> BoxFuture<'a, Result<u64, StoreError>> {
        self.inner.release(owner)
    }
}

#[derive(Default)]
struct Args {
    mode: String,
    log: PathBuf,
    ledger: PathBuf,
    saga_id: Option<SagaId>,
    plan: FaultPlan,
    crash_after_commits: Option<u64>,
    crash_in: Option<CrashPoint>,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args::default();
    let mut it = std::env::args().skip(1);
    args.mode = it.next().context("missing mode: run or recover")?;
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--log" => args.log = value.into(),
            "--ledger" => args.ledger = value.into(),
            "--saga-id" => args.saga_id = Some(value.parse()?),
            "--plan" => args.plan = serde_json::from_str(&value)?,
            "--crash-after-commits" => args.crash_after_commits = Some(value.parse()?),
            "--crash-in" => {
                let (step, phase) = value.split_once(':').context("--crash-in STEP:PHASE")?;
                args.crash_in = Some(CrashPoint {
                    step: step.into(),
                    phase: phase.into(),
                });
            }
            other => bail!("unknown flag {other}"),
        }
    }
    Ok(args)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let id = args.saga_id.context("--saga-id is required")?;
    let store = CrashingStore {
        inner: SqliteStore::open(&args.log).await?,
        commits_left: AtomicU64::new(args.crash_after_commits.unwrap_or(u64::MAX)),
    };
    let ledger = Arc::new(SqliteLedger::open(&args.ledger).await?);
    let engine = Engine::new(store);
    engine.register(test_saga(ledger, Duration::from_millis(200), args.crash_in));
    match args.mode.as_str() {
        "run" => {
            engine
                .start_with_id(id, "test_saga", &TestInput { plan: args.plan })
                .await?;
        }
        "recover" => {
            engine.recover().await?;
        }
        other => bail!("unknown mode {other}"),
    }
    let status = engine.wait_finished(id).await?;
    println!("{status}");
    Ok(())
}
