//! PostgreSQL, for several nodes sharing the work. Same tables as SQLite; a schema name keeps
//! tenants (and tests) apart. Durability is PostgreSQL's own (`synchronous_commit = on`).

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{Connection, QueryBuilder, Row};

use super::{
    Committed, SagaStore, SagaSummary, StoreError, SummaryChange, lease_until, parse_record,
    parse_summary, summary_change,
};
use crate::definition::BoxFuture;
use crate::record::{SagaId, SagaRecord, SagaStatus, now_ms};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connect to `url`, using (and creating) `schema` when given, and migrate.
    pub async fn connect(url: &str, schema: Option<&str>) -> Result<Self, StoreError> {
        let mut options = PgConnectOptions::from_str(url)?;
        if let Some(schema) = schema {
            if !schema
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                return Err(StoreError::Database(format!(
                    "schema name {schema:?} may only hold letters, digits and _"
                )));
            }
            let mut conn = sqlx::PgConnection::connect_with(&options).await?;
            // The name was checked above to hold only [A-Za-z0-9_].
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "CREATE SCHEMA IF NOT EXISTS {schema}"
            )))
            .execute(&mut conn)
            .await?;
            conn.close().await?;
            options = options.options([("search_path", schema)]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await?;
        MIGRATOR.run(&pool).await?;
        Ok(PgStore { pool })
    }

    async fn append_batch(&self, records: &[SagaRecord]) -> Result<Vec<i64>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let mut positions = Vec::with_capacity(records.len());
        for r in records {
            // The summary first: a taken saga id must fail as DuplicateSaga, not as a log clash.
            match summary_change(r) {
                Some(SummaryChange::Create { definition }) => {
                    let res = sqlx::query(
                        "INSERT INTO sagas (saga_id, definition, status, started_at_ms)
                         VALUES ($1, $2, 'running', $3) ON CONFLICT DO NOTHING",
                    )
                    .bind(r.saga_id.to_string())
                    .bind(definition)
                    .bind(r.at_ms)
                    .execute(&mut *tx)
                    .await?;
                    if res.rows_affected() == 0 {
                        return Err(StoreError::DuplicateSaga(r.saga_id));
                    }
                }
                Some(SummaryChange::Status(status)) => {
                    let finished = status.is_finished().then_some(r.at_ms);
                    sqlx::query(
                        "UPDATE sagas SET status = $1, finished_at_ms = $2 WHERE saga_id = $3",
                    )
                    .bind(status.as_str())
                    .bind(finished)
                    .bind(r.saga_id.to_string())
                    .execute(&mut *tx)
                    .await?;
                }
                None => {}
            }
            let row = sqlx::query(
                "INSERT INTO saga_log (saga_id, seq, kind, at_ms, step, attempt, detail)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING position",
            )
            .bind(r.saga_id.to_string())
            .bind(r.seq as i64)
            .bind(r.kind.as_str())
            .bind(r.at_ms)
            .bind(r.step.as_deref())
            .bind(r.attempt.map(i64::from))
            .bind(r.detail.to_string())
            .fetch_one(&mut *tx)
            .await?;
            positions.push(row.try_get("position")?);
        }
        tx.commit().await?;
        Ok(positions)
    }
}

fn record_from_row(row: &PgRow) -> Result<SagaRecord, StoreError> {
    parse_record(
        row.try_get("saga_id")?,
        row.try_get("seq")?,
        row.try_get("kind")?,
        row.try_get("at_ms")?,
        row.try_get("step")?,
        row.try_get("attempt")?,
        row.try_get("detail")?,
    )
}

fn summary_from_row(row: &PgRow) -> Result<SagaSummary, StoreError> {
    parse_summary(
        row.try_get("saga_id")?,
        row.try_get("definition")?,
        row.try_get("status")?,
        row.try_get("started_at_ms")?,
        row.try_get("finished_at_ms")?,
    )
}

impl SagaStore for PgStore {
    fn append<'a>(
        &'a self,
        records: &'a [SagaRecord],
    ) -> BoxFuture<'a, Result<Vec<i64>, StoreError>> {
        Box::pin(self.append_batch(records))
    }

    fn saga_records(
        &self,
        saga_id: SagaId,
        after_seq: u64,
    ) -> BoxFuture<'_, Result<Vec<SagaRecord>, StoreError>> {
        Box::pin(async move {
            let rows = sqlx::query("SELECT position, saga_id, seq, kind, at_ms, step, attempt, detail FROM saga_log WHERE saga_id = $1 AND seq > $2 ORDER BY seq")
            .bind(saga_id.to_string())
            .bind(after_seq as i64)
            .fetch_all(&self.pool)
            .await?;
            rows.iter().map(record_from_row).collect()
        })
    }

    fn records_after(
        &self,
        after: i64,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<Committed>, StoreError>> {
        Box::pin(async move {
            let rows = sqlx::query("SELECT position, saga_id, seq, kind, at_ms, step, attempt, detail FROM saga_log WHERE position > $1 ORDER BY position LIMIT $2")
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
            rows.iter()
                .map(|row| {
                    Ok(Committed {
                        position: row.try_get("position")?,
                        record: record_from_row(row)?,
                    })
                })
                .collect()
        })
    }

    fn last_position(&self) -> BoxFuture<'_, Result<i64, StoreError>> {
        Box::pin(async move {
            let row = sqlx::query("SELECT COALESCE(MAX(position), 0)::BIGINT AS p FROM saga_log")
                .fetch_one(&self.pool)
                .await?;
            Ok(row.try_get("p")?)
        })
    }

    fn saga(&self, saga_id: SagaId) -> BoxFuture<'_, Result<Option<SagaSummary>, StoreError>> {
        Box::pin(async move {
            let row = sqlx::query("SELECT saga_id, definition, status, started_at_ms, finished_at_ms FROM sagas WHERE saga_id = $1")
                .bind(saga_id.to_string())
                .fetch_optional(&self.pool)
                .await?;
            row.as_ref().map(summary_from_row).transpose()
        })
    }

    fn list_sagas(
        &self,
        status: Option<SagaStatus>,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<SagaSummary>, StoreError>> {
        Box::pin(async move {
            let mut q = QueryBuilder::new(
                "SELECT saga_id, definition, status, started_at_ms, finished_at_ms FROM sagas",
            );
            if let Some(status) = status {
                q.push(" WHERE status = ").push_bind(status.as_str());
            }
            q.push(" ORDER BY started_at_ms DESC, saga_id LIMIT ")
                .push_bind(i64::from(limit));
            let rows = q.build().fetch_all(&self.pool).await?;
            rows.iter().map(summary_from_row).collect()
        })
    }

    fn claim_unfinished(
        &self,
        owner: &str,
        lease: Duration,
    ) -> BoxFuture<'_, Result<Vec<SagaId>, StoreError>> {
        let owner = owner.to_string();
        Box::pin(async move {
            let rows = sqlx::query(
                "UPDATE sagas SET owner = $1, lease_until_ms = $2
                 WHERE status IN ('running', 'compensating')
                   AND (owner IS NULL OR owner = $1 OR lease_until_ms < $3)
                 RETURNING saga_id",
            )
            .bind(&owner)
            .bind(lease_until(lease))
            .bind(now_ms())
            .fetch_all(&self.pool)
            .await?;
            rows.iter()
                .map(|row| {
                    let id: &str = row.try_get("saga_id")?;
                    id.parse()
                        .map_err(|e| StoreError::Corrupt(format!("saga id {id:?}: {e}")))
                })
                .collect()
        })
    }
}
