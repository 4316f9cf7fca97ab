//! Where test participants record their effects: in memory for in-process tests, in a SQLite
//! file for tests whose engine runs (and dies) in a child process.

use std::sync::{Arc, Mutex};

use saga_engine::BoxFuture;
use sqlx::Row;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

/// One applied effect. `order` is global and increasing, so compensation order is checkable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effect {
    pub order: i64,
    pub saga_id: String,
    pub step: String,
    /// `action` or `compensation`.
    pub phase: String,
    pub key: String,
}

/// What happened when a participant asked to apply an effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Applied now, for the first time.
    Now,
    /// This key was applied before: nothing changes, the first result stands.
    Before,
    /// An action whose compensation already arrived: refused, so that the pair leaves the
    /// service as if neither happened.
    Cancelled,
}

pub trait Ledger: Send + Sync + 'static {
    /// Apply the effect for `key` unless it was applied already (or cancelled).
    fn apply(
        &self,
        saga_id: &str,
        step: &str,
        phase: &str,
        key: &str,
    ) -> BoxFuture<'_, anyhow::Result<Applied>>;
    /// Every effect applied for a saga, in order.
    fn effects(&self, saga_id: &str) -> BoxFuture<'_, anyhow::Result<Vec<Effect>>>;
}

#[derive(Debug, Default, Clone)]
pub struct MemoryLedger {
    inner: Arc<Mutex<Vec<Effect>>>,
}

fn decide(
    effects: &[Effect],
    saga_id: &str,
    step: &str,
    phase: &str,
    key: &str,
) -> Option<Applied> {
    if effects.iter().any(|e| e.key == key) {
        return Some(Applied::Before);
    }
    let compensated = effects
        .iter()
        .any(|e| e.saga_id == saga_id && e.step == step && e.phase == "compensation");
    (phase == "action" && compensated).then_some(Applied::Cancelled)
}

impl Ledger for MemoryLedger {
    fn apply(
        &self,
        saga_id: &str,
        step: &str,
        phase: &str,
        key: &str,
    ) -> BoxFuture<'_, anyhow::Result<Applied>> {
        let mut effects = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let result = match decide(&effects, saga_id, step, phase, key) {
            Some(a) => a,
            None => {
                let order = effects.len() as i64 + 1;
                effects.push(Effect {
                    order,
                    saga_id: saga_id.into(),
                    step: step.into(),
                    phase: phase.into(),
                    key: key.into(),
                });
                Applied::Now
            }
        };
        Box::pin(async move { Ok(result) })
    }

    fn effects(&self, saga_id: &str) -> BoxFuture<'_, anyhow::Result<Vec<Effect>>> {
        let effects = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mine: Vec<Effect> = effects
            .iter()
            .filter(|e| e.saga_id == saga_id)
            .cloned()
            .collect();
        Box::pin(async move { Ok(mine) })
    }
}

/// A ledger in a SQLite file, durable before `apply` returns: a crash right after an effect
/// must not lose it, or the test could not see a double application.
#[derive(Debug, Clone)]
pub struct SqliteLedger {
    pool: SqlitePool,
}

impl SqliteLedger {
    pub async fn open(path: &std::path::Path) -> anyhow::Result<Self> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(std::time::Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS effects (
                ord INTEGER PRIMARY KEY, saga_id TEXT NOT NULL, step TEXT NOT NULL,
                phase TEXT NOT NULL, key TEXT NOT NULL)",
        )
        .execute(&pool)
        .await?;
        Ok(SqliteLedger { pool })
    }

    async fn all(&self, saga_id: &str) -> anyhow::Result<Vec<Effect>> {
        let rows = sqlx::query(
            "SELECT ord, saga_id, step, phase, key FROM effects WHERE saga_id = ? ORDER BY ord",
        )
        .bind(saga_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Effect {
                    order: r.try_get("ord")?,
                    saga_id: r.try_get("saga_id")?,
                    step: r.try_get("step")?,
                    phase: r.try_get("phase")?,
                    key: r.try_get("key")?,
                })
            })
            .collect()
    }
}

impl Ledger for SqliteLedger {
    fn apply(
        &self,
        saga_id: &str,
        step: &str,
        phase: &str,
        key: &str,
    ) -> BoxFuture<'_, anyhow::Result<Applied>> {
        let (saga_id, step, phase, key) = (
            saga_id.to_string(),
            step.to_string(),
            phase.to_string(),
            key.to_string(),
        );
        Box::pin(async move {
            // One connection: the check and the insert cannot interleave with another apply.
            let mut tx = self.pool.begin().await?;
            let rows =
                sqlx::query("SELECT ord, saga_id, step, phase, key FROM effects WHERE saga_id = ?")
                    .bind(&saga_id)
                    .fetch_all(&mut *tx)
                    .await?;
            let effects: Vec<Effect> = rows
                .iter()
                .map(|r| Effect {
                    order: r.get("ord"),
                    saga_id: r.get("saga_id"),
                    step: r.get("step"),
                    phase: r.get("phase"),
                    key: r.get("key"),
                })
                .collect();
            if let Some(a) = decide(&effects, &saga_id, &step, &phase, &key) {
                return Ok(a);
            }
            sqlx::query("INSERT INTO effects (saga_id, step, phase, key) VALUES (?, ?, ?, ?)")
                .bind(&saga_id)
                .bind(&step)
                .bind(&phase)
                .bind(&key)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(Applied::Now)
        })
    }

    fn effects(&self, saga_id: &str) -> BoxFuture<'_, anyhow::Result<Vec<Effect>>> {
        let saga_id = saga_id.to_string();
        Box::pin(async move { self.all(&saga_id).await })
    }
}
