//! PostgreSQL, for several nodes sharing the work. Same tables as SQLite; a schema name keeps
//! tenants (and tests) apart. Durability is PostgreSQL's own (`synchronous_commit = on`).

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{Connection, QueryBuilder, Row};

use super::{
    Committed, LogRow, SagaStore, SagaSummary, StoreError, SummaryChange, detail_of, lease_until,
    parse_record, parse_summary, summary_change,
};
use crate::definition::BoxFuture;
use crate::record::{SagaId, SagaRecord, SagaStatus, now_ms};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The saga log in PostgreSQL: durable, and shared by every node on the database, each
/// claiming the sagas it drives. Clones share connections.
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

    /// One round trip per statement, not per record: the batch goes in as arrays (`UNNEST`).
    async fn append_batch(&self, records: &[SagaRecord]) -> Result<Vec<i64>, StoreError> {
        let mut tx = self.pool.begin().await?;
        // The summary first: a taken saga id must fail as DuplicateSaga, not as a log clash.
        let mut created: Vec<(String, String, i64)> = Vec::new();
        let mut statuses: HashMap<String, (String, Option<i64>)> = HashMap::new();
        for r in records {
            match summary_change(r) {
                Some(SummaryChange::Create { definition }) => {
                    created.push((r.saga_id.to_string(), definition.to_string(), r.at_ms))
                }
                // Later records of a saga in the batch win: its last status is what stands.
                Some(SummaryChange::Status(status)) => {
                    let finished = status.is_finished().then_some(r.at_ms);
                    statuses.insert(
                        r.saga_id.to_string(),
                        (status.as_str().to_string(), finished),
                    );
                }
                None => {}
            }
        }
        if !created.is_empty() {
            let inserted: Vec<String> = sqlx::query_scalar(
                "INSERT INTO sagas (saga_id, definition, status, started_at_ms)
                 SELECT id, def, 'running', at FROM UNNEST($1::text[], $2::text[], $3::bigint[]) AS u(id, def, at)
                 ON CONFLICT DO NOTHING RETURNING saga_id",
            )
            .bind(created.iter().map(|c| c.0.clone()).collect::<Vec<_>>())
            .bind(created.iter().map(|c| c.1.clone()).collect::<Vec<_>>())
            .bind(created.iter().map(|c| c.2).collect::<Vec<_>>())
            .fetch_all(&mut *tx)
            .await?;
            let inserted: HashSet<String> = inserted.into_iter().collect();
            let mut seen = HashSet::new();
            // Taken before this batch, or twice within it.
            if let Some(taken) = created
                .iter()
                .find(|c| !inserted.contains(&c.0) || !seen.insert(&c.0))
            {
                let id = taken
                    .0
                    .parse()
                    .map_err(|e| StoreError::Corrupt(format!("saga id {}: {e}", taken.0)))?;
                return Err(StoreError::DuplicateSaga(id));
            }
        }
        if !statuses.is_empty() {
            let (ids, rest): (Vec<String>, Vec<(String, Option<i64>)>) =
                statuses.into_iter().unzip();
            let (status, finished): (Vec<String>, Vec<Option<i64>>) = rest.into_iter().unzip();
            sqlx::query(
                "UPDATE sagas SET status = u.status, finished_at_ms = u.finished
                 FROM UNNEST($1::text[], $2::text[], $3::bigint[]) AS u(id, status, finished)
                 WHERE sagas.saga_id = u.id",
            )
            .bind(ids)
            .bind(status)
            .bind(finished)
            .execute(&mut *tx)
            .await?;
        }
        let details = records
            .iter()
            .map(detail_of)
            .collect::<Result<Vec<_>, _>>()?;
        let rows: Vec<(String, i64, i64)> = sqlx::query_as(
            "INSERT INTO saga_log (saga_id, seq, kind, at_ms, step, attempt, detail, node)
             SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::bigint[], $5::text[], $6::bigint[], $7::text[], $8::text[])
             RETURNING saga_id, seq, position",
        )
        .bind(records.iter().map(|r| r.saga_id.to_string()).collect::<Vec<_>>())
        .bind(records.iter().map(|r| r.seq as i64).collect::<Vec<_>>())
        .bind(records.iter().map(|r| r.kind.name()).collect::<Vec<_>>())
        .bind(records.iter().map(|r| r.at_ms).collect::<Vec<_>>())
        .bind(records.iter().map(|r| r.step.clone()).collect::<Vec<_>>())
        .bind(records.iter().map(|r| r.attempt.map(i64::from)).collect::<Vec<_>>())
        .bind(details)
        .bind(
            records
                .iter()
                .map(|r| r.node.as_deref().map(str::to_string))
                .collect::<Vec<_>>(),
        )
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        // RETURNING's order is not promised: match positions back by (saga, seq).
        let by_key: HashMap<(String, i64), i64> = rows
            .into_iter()
            .map(|(id, seq, pos)| ((id, seq), pos))
            .collect();
        records
            .iter()
            .map(|r| {
                by_key
                    .get(&(r.saga_id.to_string(), r.seq as i64))
                    .copied()
                    .ok_or_else(|| {
                        StoreError::Corrupt(format!(
                            "no position returned for saga {} record {}",
                            r.saga_id, r.seq
                        ))
                    })
            })
            .collect()
    }
}

fn record_from_row(row: &PgRow) -> Result<SagaRecord, StoreError> {
    parse_record(LogRow {
        saga_id: row.try_get("saga_id")?,
        seq: row.try_get("seq")?,
        kind: row.try_get("kind")?,
        at_ms: row.try_get("at_ms")?,
        step: row.try_get("step")?,
        attempt: row.try_get("attempt")?,
        detail: row.try_get("detail")?,
        node: row.try_get("node")?,
    })
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
            let rows = sqlx::query("SELECT position, saga_id, seq, kind, at_ms, step, attempt, detail, node FROM saga_log WHERE saga_id = $1 AND seq > $2 ORDER BY seq")
            .bind(saga_id.to_string())
            .bind(after_seq as i64)
            .fetch_all(&self.pool)
            .await?;
            rows.iter().map(record_from_row).collect()
        })
    }

    fn sagas_records<'a>(
        &'a self,
        saga_ids: &'a [SagaId],
    ) -> BoxFuture<'a, Result<Vec<SagaRecord>, StoreError>> {
        Box::pin(async move {
            let ids: Vec<String> = saga_ids.iter().map(SagaId::to_string).collect();
            let rows = sqlx::query("SELECT position, saga_id, seq, kind, at_ms, step, attempt, detail, node FROM saga_log WHERE saga_id = ANY($1) ORDER BY saga_id, seq")
            .bind(&ids)
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
            let rows = sqlx::query("SELECT position, saga_id, seq, kind, at_ms, step, attempt, detail, node FROM saga_log WHERE position > $1 ORDER BY position LIMIT $2")
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
        before: Option<SagaId>,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<SagaSummary>, StoreError>> {
        Box::pin(async move {
            let mut q = QueryBuilder::new(
                "SELECT saga_id, definition, status, started_at_ms, finished_at_ms FROM sagas WHERE TRUE",
            );
            if let Some(status) = status {
                q.push(" AND status = ").push_bind(status.as_str());
            }
            // Ids compare byte by byte (`COLLATE "C"`), as in SQLite and in memory, whatever
            // the database's collation.
            if let Some(before) = before {
                // A saga's start never changes, so reading it first is as good as a join.
                let Some(cursor) = self.saga(before).await? else {
                    return Ok(Vec::new());
                };
                q.push(" AND (started_at_ms < ")
                    .push_bind(cursor.started_at_ms)
                    .push(" OR (started_at_ms = ")
                    .push_bind(cursor.started_at_ms)
                    .push(r#" AND saga_id COLLATE "C" < "#)
                    .push_bind(before.to_string())
                    .push("))");
            }
            q.push(r#" ORDER BY started_at_ms DESC, saga_id COLLATE "C" DESC LIMIT "#)
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

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.pool.close())
    }
}
