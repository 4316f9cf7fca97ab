//! The embedded default: SQLite in WAL mode with `synchronous = FULL`, so a committed record
//! survives power loss. One connection writes (SQLite allows one writer anyway, and the log
//! writer already batches), a small pool reads.

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    Sqlite, SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row};

use super::{
    Claim, Claimed, Committed, LogRow, SagaStore, SagaSummary, StoreError, SummaryChange,
    detail_of, fence_allows, lease_until, parse_claimed, parse_record, parse_summary,
    summary_change,
};
use crate::definition::BoxFuture;
use crate::record::{SagaId, SagaRecord, SagaStatus, now_ms};

/// Log rows per INSERT: 9 variables each, under SQLite's limit of 32,766 per statement.
const LOG_ROWS_PER_INSERT: usize = 1000;

/// Saga ids per SELECT of `sagas_records`, each one variable.
const IDS_PER_SELECT: usize = 1000;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// The saga log in a SQLite file: durable, embedded, for one node. Clones share connections.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
}

impl SqliteStore {
    /// Open (creating if needed) the log at `path` and bring its schema up to date.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::new().filename(path);
        Self::open_with(options).await
    }

    /// Open from a `sqlite://PATH` URL.
    pub async fn open_url(url: &str) -> Result<Self, StoreError> {
        Self::open_with(SqliteConnectOptions::from_str(url)?).await
    }

    async fn open_with(options: SqliteConnectOptions) -> Result<Self, StoreError> {
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10));
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await?;
        MIGRATOR.run(&writer).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.read_only(true))
            .await?;
        Ok(SqliteStore { writer, reader })
    }

    async fn append_batch(
        &self,
        records: &[SagaRecord],
        lease: Duration,
    ) -> Result<Vec<i64>, StoreError> {
        let mut tx = self.writer.begin().await?;
        // The fence, before anything is written: each saga's owner and epoch, read in as few
        // statements as the variable limit allows (one writer connection: nobody changes them
        // before this transaction ends).
        let mut ids: Vec<String> = Vec::new();
        for r in records.iter().filter(|r| r.epoch.is_some()) {
            if summary_change(r).is_none_or(|c| !matches!(c, SummaryChange::Create { .. })) {
                ids.push(r.saga_id.to_string());
            }
        }
        ids.sort_unstable();
        ids.dedup();
        let mut held: HashMap<String, (Option<String>, i64)> = HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(IDS_PER_SELECT) {
            let mut query = QueryBuilder::<Sqlite>::new(
                "SELECT saga_id, owner, epoch FROM sagas WHERE saga_id IN (",
            );
            let mut list = query.separated(", ");
            for id in chunk {
                list.push_bind(id.as_str());
            }
            query.push(")");
            for row in query.build().persistent(false).fetch_all(&mut *tx).await? {
                held.insert(
                    row.try_get("saga_id")?,
                    (row.try_get("owner")?, row.try_get("epoch")?),
                );
            }
        }
        let until = lease_until(lease);
        for r in records {
            // The summary first: a taken saga id must fail as DuplicateSaga, not as a log clash.
            match summary_change(r) {
                Some(SummaryChange::Create { definition }) => {
                    let owner = r.epoch.and(r.node.as_deref());
                    let epoch = r.epoch.unwrap_or(0) as i64;
                    let res = sqlx::query(
                        "INSERT INTO sagas (saga_id, definition, status, started_at_ms, owner, lease_until_ms, epoch) VALUES (?, ?, 'running', ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    )
                    .bind(r.saga_id.to_string())
                    .bind(definition)
                    .bind(r.at_ms)
                    .bind(owner)
                    .bind(owner.map(|_| until))
                    .bind(epoch)
                    .execute(&mut *tx)
                    .await?;
                    if res.rows_affected() == 0 {
                        return Err(StoreError::DuplicateSaga(r.saga_id));
                    }
                    held.insert(r.saga_id.to_string(), (owner.map(str::to_string), epoch));
                }
                Some(SummaryChange::Status(status)) => {
                    let finished = status.is_finished().then_some(r.at_ms);
                    sqlx::query(
                        "UPDATE sagas SET status = ?, finished_at_ms = ? WHERE saga_id = ?",
                    )
                    .bind(status.as_str())
                    .bind(finished)
                    .bind(r.saga_id.to_string())
                    .execute(&mut *tx)
                    .await?;
                }
                None => {}
            }
            if r.epoch.is_some() {
                let (owner, epoch) = held
                    .get(&r.saga_id.to_string())
                    .map_or((None, 0), |(o, e)| (o.as_deref(), *e));
                if !fence_allows(r, owner, epoch) {
                    return Err(StoreError::Fenced(r.saga_id));
                }
            }
        }
        // The log rows in as few statements as the variable limit allows: every statement is a
        // round trip to SQLite's thread, and a round carries the records of many sagas.
        let mut positions = Vec::with_capacity(records.len());
        for chunk in records.chunks(LOG_ROWS_PER_INSERT) {
            let mut insert = QueryBuilder::<Sqlite>::new(
                "INSERT INTO saga_log (saga_id, seq, kind, at_ms, step, attempt, detail, node, epoch) ",
            );
            let details = chunk.iter().map(detail_of).collect::<Result<Vec<_>, _>>()?;
            insert.push_values(chunk.iter().zip(details), |mut row, (r, detail)| {
                row.push_bind(r.saga_id.to_string())
                    .push_bind(r.seq as i64)
                    .push_bind(r.kind.name())
                    .push_bind(r.at_ms)
                    .push_bind(r.step.clone())
                    .push_bind(r.attempt.map(i64::from))
                    .push_bind(detail)
                    .push_bind(r.node.as_deref().map(str::to_string))
                    .push_bind(r.epoch.map(|e| e as i64));
            });
            insert.push(" RETURNING position, saga_id, seq");
            // RETURNING's order is unspecified: match the rows back by (saga, seq).
            let mut at: HashMap<(String, i64), i64> = HashMap::with_capacity(chunk.len());
            // Not kept as a prepared statement: each batch size is a different statement, and
            // caching them (sqlx keeps 100 per connection) grew the heap by tens of MiB.
            for row in insert.build().persistent(false).fetch_all(&mut *tx).await? {
                at.insert(
                    (row.try_get("saga_id")?, row.try_get("seq")?),
                    row.try_get("position")?,
                );
            }
            for r in chunk {
                let key = (r.saga_id.to_string(), r.seq as i64);
                let position = at.get(&key).copied().ok_or_else(|| {
                    StoreError::Corrupt(format!(
                        "no position came back for {} #{}",
                        r.saga_id, r.seq
                    ))
                })?;
                positions.push(position);
            }
        }
        tx.commit().await?;
        Ok(positions)
    }
}

fn record_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<SagaRecord, StoreError> {
    parse_record(LogRow {
        saga_id: row.try_get("saga_id")?,
        seq: row.try_get("seq")?,
        kind: row.try_get("kind")?,
        at_ms: row.try_get("at_ms")?,
        step: row.try_get("step")?,
        attempt: row.try_get("attempt")?,
        detail: row.try_get("detail")?,
        node: row.try_get("node")?,
        epoch: row.try_get("epoch")?,
    })
}

fn claimed_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<Claimed, StoreError> {
    parse_claimed(row.try_get("saga_id")?, row.try_get("epoch")?)
}

fn summary_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<SagaSummary, StoreError> {
    parse_summary(
        row.try_get("saga_id")?,
        row.try_get("definition")?,
        row.try_get("status")?,
        row.try_get("started_at_ms")?,
        row.try_get("finished_at_ms")?,
    )
}

impl SagaStore for SqliteStore {
    fn append<'a>(
        &'a self,
        records: &'a [SagaRecord],
        lease: Duration,
    ) -> BoxFuture<'a, Result<Vec<i64>, StoreError>> {
        Box::pin(self.append_batch(records, lease))
    }

    fn saga_records(
        &self,
        saga_id: SagaId,
        after_seq: u64,
    ) -> BoxFuture<'_, Result<Vec<SagaRecord>, StoreError>> {
        Box::pin(async move {
            let rows = sqlx::query("SELECT position, saga_id, seq, kind, at_ms, step, attempt, detail, node, epoch FROM saga_log WHERE saga_id = ? AND seq > ? ORDER BY seq")
            .bind(saga_id.to_string())
            .bind(after_seq as i64)
            .fetch_all(&self.reader)
            .await?;
            rows.iter().map(record_from_row).collect()
        })
    }

    fn sagas_records<'a>(
        &'a self,
        saga_ids: &'a [SagaId],
    ) -> BoxFuture<'a, Result<Vec<SagaRecord>, StoreError>> {
        Box::pin(async move {
            let mut unique = saga_ids.to_vec();
            unique.sort_unstable();
            unique.dedup();
            let mut records = Vec::new();
            // Ids go in as variables, a statement's worth at a time (SQLite caps their number).
            for ids in unique.chunks(IDS_PER_SELECT) {
                let mut query = QueryBuilder::<Sqlite>::new(
                    "SELECT position, saga_id, seq, kind, at_ms, step, attempt, detail, node, epoch FROM saga_log WHERE saga_id IN (",
                );
                let mut list = query.separated(", ");
                for id in ids {
                    list.push_bind(id.to_string());
                }
                query.push(") ORDER BY saga_id, seq");
                let rows = query.build().fetch_all(&self.reader).await?;
                for row in &rows {
                    records.push(record_from_row(row)?);
                }
            }
            Ok(records)
        })
    }

    fn records_after(
        &self,
        after: i64,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<Committed>, StoreError>> {
        Box::pin(async move {
            let rows = sqlx::query("SELECT position, saga_id, seq, kind, at_ms, step, attempt, detail, node, epoch FROM saga_log WHERE position > ? ORDER BY position LIMIT ?")
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(&self.reader)
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
            let row = sqlx::query("SELECT COALESCE(MAX(position), 0) AS p FROM saga_log")
                .fetch_one(&self.reader)
                .await?;
            Ok(row.try_get("p")?)
        })
    }

    fn saga(&self, saga_id: SagaId) -> BoxFuture<'_, Result<Option<SagaSummary>, StoreError>> {
        Box::pin(async move {
            let row = sqlx::query("SELECT saga_id, definition, status, started_at_ms, finished_at_ms FROM sagas WHERE saga_id = ?")
                .bind(saga_id.to_string())
                .fetch_optional(&self.reader)
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
                "SELECT saga_id, definition, status, started_at_ms, finished_at_ms FROM sagas WHERE 1 = 1",
            );
            if let Some(status) = status {
                q.push(" AND status = ").push_bind(status.as_str());
            }
            if let Some(before) = before {
                // A saga's start never changes, so reading it first is as good as a join.
                let Some(cursor) = self.saga(before).await? else {
                    return Ok(Vec::new());
                };
                q.push(" AND (started_at_ms < ")
                    .push_bind(cursor.started_at_ms)
                    .push(" OR (started_at_ms = ")
                    .push_bind(cursor.started_at_ms)
                    .push(" AND saga_id < ")
                    .push_bind(before.to_string())
                    .push("))");
            }
            q.push(" ORDER BY started_at_ms DESC, saga_id DESC LIMIT ")
                .push_bind(i64::from(limit));
            let rows = q.build().fetch_all(&self.reader).await?;
            rows.iter().map(summary_from_row).collect()
        })
    }

    fn claim(
        &self,
        owner: &str,
        lease: Duration,
        which: Claim,
    ) -> BoxFuture<'_, Result<Vec<Claimed>, StoreError>> {
        let owner = owner.to_string();
        Box::pin(async move {
            let whose = match which {
                Claim::Orphans => "(owner IS NULL OR lease_until_ms < ?3) AND owner IS NOT ?1",
                Claim::OrphansAndMine => "(owner IS NULL OR owner = ?1 OR lease_until_ms < ?3)",
                Claim::Everything => "TRUE",
            };
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE sagas SET owner = ?1, lease_until_ms = ?2,
                     epoch = CASE WHEN owner IS ?1 THEN epoch ELSE epoch + 1 END
                 WHERE status IN ('running', 'compensating') AND {whose}
                 RETURNING saga_id, epoch"
            )))
            .bind(&owner)
            .bind(lease_until(lease))
            .bind(now_ms())
            .fetch_all(&self.writer)
            .await?;
            rows.iter().map(claimed_from_row).collect()
        })
    }

    fn claim_stuck<'a>(
        &'a self,
        saga_id: SagaId,
        owner: &'a str,
        lease: Duration,
    ) -> BoxFuture<'a, Result<Option<u64>, StoreError>> {
        Box::pin(async move {
            let row = sqlx::query(
                "UPDATE sagas SET owner = ?, lease_until_ms = ?, epoch = epoch + 1
                 WHERE saga_id = ? AND status = 'stuck' RETURNING saga_id, epoch",
            )
            .bind(owner)
            .bind(lease_until(lease))
            .bind(saga_id.to_string())
            .fetch_optional(&self.writer)
            .await?;
            Ok(row
                .as_ref()
                .map(claimed_from_row)
                .transpose()?
                .map(|c| c.epoch))
        })
    }

    fn release<'a>(&'a self, owner: &'a str) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async move {
            let done = sqlx::query(
                "UPDATE sagas SET owner = NULL, lease_until_ms = NULL
                 WHERE owner = ? AND status IN ('running', 'compensating')",
            )
            .bind(owner)
            .execute(&self.writer)
            .await?;
            Ok(done.rows_affected())
        })
    }

    /// The readers first: the last connection to close checkpoints the write-ahead log into
    /// the database and deletes it, which a read-only one cannot do.
    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.reader.close().await;
            self.writer.close().await;
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::record::RecordKind;

    /// Closed, the log is checkpointed and its write-ahead file gone; later calls say so.
    #[tokio::test]
    async fn closing_checkpoints_the_write_ahead_log_and_later_calls_fail_as_closed() {
        let dir = std::env::temp_dir().join(format!("saga-log-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("a scratch directory");
        let store = SqliteStore::open(&dir.join("log.db"))
            .await
            .expect("opened");
        let started = |saga_id| SagaRecord {
            saga_id,
            seq: 1,
            kind: RecordKind::SagaStarted {
                saga: "s".into(),
                input: json!(null),
            },
            at_ms: now_ms(),
            step: None,
            attempt: None,
            node: None,
            epoch: None,
        };
        store
            .append(&[started(SagaId::new())], Duration::ZERO)
            .await
            .expect("appended");
        let wal = dir.join("log.db-wal");
        assert!(wal.exists(), "the append went through a write-ahead log");
        store.close().await;
        assert!(!wal.exists(), "the write-ahead log is left behind");
        assert_eq!(
            store
                .append(&[started(SagaId::new())], Duration::ZERO)
                .await,
            Err(StoreError::Closed)
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
