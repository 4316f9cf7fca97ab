//! PostgreSQL, for several nodes sharing the work. Same tables as SQLite; a schema name keeps
//! tenants (and tests) apart. Durability is PostgreSQL's own (`synchronous_commit = on`).
//!
//! Several processes write here at once, so three things SQLite gets from its single writer are
//! made explicit: a saga's row is locked (`FOR UPDATE`, in id order, so two transactions never
//! wait on each other in a cycle) while its fence is checked; positions come from a one-row
//! head, updated by the last statement before the commit, so they are dense and in commit order;
//! and each commit notifies `saga_log_<schema>` with the new head and its node, so the other
//! nodes announce its records live ([`SagaStore::watch`]). Lease times are the database's
//! clock, so the nodes' clocks need not agree.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions, PgRow};
use sqlx::{Connection, QueryBuilder, Row};

use super::{
    Claim, Claimed, Committed, LogHead, LogRow, LogWatch, SagaStore, SagaSummary, StoreError,
    SummaryChange, detail_of, fence_allows, parse_claimed, parse_record, parse_summary,
    summary_change,
};
use crate::definition::BoxFuture;
use crate::record::{SagaId, SagaRecord, SagaStatus};

/// The database's clock in milliseconds since the Unix epoch: leases are given and checked by
/// one clock, whatever the nodes' say.
const NOW_MS: &str = "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT";

/// The columns a log row is read from.
const LOG_COLUMNS: &str = "position, saga_id, seq, kind, at_ms, step, attempt, detail, node, epoch";

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The saga log in PostgreSQL: durable, and shared by every node on the database, each
/// claiming the sagas it drives. Clones share connections.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    /// Where commits are announced to the other nodes: `saga_log_<schema>`.
    channel: String,
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
            // Several nodes starting at once all create the schema: under a lock, or two
            // `IF NOT EXISTS` can both find it missing and one fail.
            let mut tx = conn.begin().await?;
            sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
                .bind(format!("saga-shop schema {schema}"))
                .execute(&mut *tx)
                .await?;
            // The name was checked above to hold only [A-Za-z0-9_].
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "CREATE SCHEMA IF NOT EXISTS {schema}"
            )))
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            conn.close().await?;
            options = options.options([("search_path", schema)]);
        }
        // A node paused (or cut off) inside an append would hold the log's head and its sagas'
        // rows, stalling every other node's commits and takeovers: the database ends such a
        // transaction after a while instead (a healthy append never waits on its client that
        // long; one that did fails, and its sagas resume from the log).
        options = options.options([("idle_in_transaction_session_timeout", "2s")]);
        let pool = PgPoolOptions::new()
            // The group commit writes through one connection at a time; the rest read (history
            // for subscribers, the list) and listen. Several nodes share one server, whose
            // connections are counted (100 by default).
            .max_connections(6)
            .connect_with(options)
            .await?;
        MIGRATOR.run(&pool).await?;
        let schema: String = sqlx::query_scalar("SELECT current_schema()::TEXT")
            .fetch_one(&pool)
            .await?;
        Ok(PgStore {
            pool,
            channel: format!("saga_log_{schema}"),
        })
    }

    /// One round trip per statement, not per record: the batch goes in as arrays (`UNNEST`).
    async fn append_batch(
        &self,
        records: &[SagaRecord],
        lease: Duration,
    ) -> Result<Vec<i64>, StoreError> {
        let mut tx = self.pool.begin().await?;
        // The summary first: a taken saga id must fail as DuplicateSaga, not as a log clash.
        // Each saga the batch starts, with its definition's name.
        let mut created: Vec<(&SagaRecord, &str)> = Vec::new();
        let mut statuses: HashMap<String, (String, Option<i64>)> = HashMap::new();
        for r in records {
            match summary_change(r) {
                Some(SummaryChange::Create { definition }) => created.push((r, definition)),
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
        let mut held: HashMap<String, (Option<String>, i64)> = HashMap::new();
        if !created.is_empty() {
            let owner = |r: &SagaRecord| r.epoch.and(r.node.as_deref()).map(str::to_string);
            let inserted: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "INSERT INTO sagas (saga_id, definition, status, started_at_ms, owner, lease_until_ms, epoch)
                 SELECT id, def, 'running', at, owner, CASE WHEN owner IS NULL THEN NULL ELSE {NOW_MS} + $6 END, epoch
                 FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[], $5::bigint[]) AS u(id, def, at, owner, epoch)
                 ON CONFLICT DO NOTHING RETURNING saga_id"
            )))
            .bind(created.iter().map(|(r, _)| r.saga_id.to_string()).collect::<Vec<_>>())
            .bind(created.iter().map(|(_, def)| def.to_string()).collect::<Vec<_>>())
            .bind(created.iter().map(|(r, _)| r.at_ms).collect::<Vec<_>>())
            .bind(created.iter().map(|(r, _)| owner(r)).collect::<Vec<_>>())
            .bind(created.iter().map(|(r, _)| r.epoch.unwrap_or(0) as i64).collect::<Vec<_>>())
            .bind(lease.as_millis() as i64)
            .fetch_all(&mut *tx)
            .await?;
            let inserted: HashSet<String> = inserted.into_iter().collect();
            let mut seen = HashSet::new();
            // Taken before this batch, or twice within it.
            if let Some((taken, _)) = created.iter().find(|(r, _)| {
                !inserted.contains(&r.saga_id.to_string()) || !seen.insert(r.saga_id)
            }) {
                return Err(StoreError::DuplicateSaga(taken.saga_id));
            }
            for (r, _) in &created {
                held.insert(
                    r.saga_id.to_string(),
                    (owner(r), r.epoch.unwrap_or(0) as i64),
                );
            }
        }
        // The fence: the rows of the sagas written under a lease, locked until the commit, so
        // no claim changes hands between this check and the records it lets in.
        let mut fenced: Vec<String> = records
            .iter()
            .filter(|r| r.epoch.is_some())
            .map(|r| r.saga_id.to_string())
            .filter(|id| !held.contains_key(id))
            .collect();
        fenced.sort_unstable();
        fenced.dedup();
        if !fenced.is_empty() {
            // Joined from the ids, not `saga_id = ANY($1)`: a generic plan for the latter can
            // scan the whole table, and did, a batch at a time, as the table grew.
            let rows = sqlx::query(
                "SELECT s.saga_id, s.owner, s.epoch
                 FROM UNNEST($1::text[]) AS u(id) JOIN sagas s ON s.saga_id = u.id
                 ORDER BY s.saga_id FOR UPDATE OF s",
            )
            .bind(&fenced)
            .fetch_all(&mut *tx)
            .await?;
            for row in &rows {
                held.insert(
                    row.try_get("saga_id")?,
                    (row.try_get("owner")?, row.try_get("epoch")?),
                );
            }
        }
        for r in records.iter().filter(|r| r.epoch.is_some()) {
            let (owner, epoch) = held
                .get(&r.saga_id.to_string())
                .map_or((None, 0), |(o, e)| (o.as_deref(), *e));
            if !fence_allows(r, owner, epoch) {
                return Err(StoreError::Fenced(r.saga_id));
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
        let n = records.len() as i64;
        let node = records.iter().find_map(|r| r.node.as_deref()).unwrap_or("");
        // Last: the head's lock is held from here to the commit, so transactions take their
        // positions in commit order. The notification goes out at the commit, never before.
        let rows: Vec<(String, i64, i64)> = sqlx::query_as(
            "WITH head AS (UPDATE saga_log_head SET position = position + $10 RETURNING position),
                  told AS (SELECT pg_notify($11, (SELECT position FROM head)::TEXT || ' ' || $12))
             INSERT INTO saga_log (position, saga_id, seq, kind, at_ms, step, attempt, detail, node, epoch)
             SELECT head.position - $10 + u.o, u.id, u.seq, u.kind, u.at, u.step, u.attempt, u.detail, u.node, u.epoch
             FROM head, told, UNNEST($1::text[], $2::bigint[], $3::text[], $4::bigint[], $5::text[], $6::bigint[], $7::text[], $8::text[], $9::bigint[])
                  WITH ORDINALITY AS u(id, seq, kind, at, step, attempt, detail, node, epoch, o)
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
        .bind(records.iter().map(|r| r.epoch.map(|e| e as i64)).collect::<Vec<_>>())
        .bind(n)
        .bind(&self.channel)
        .bind(node)
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
        epoch: row.try_get("epoch")?,
    })
}

fn claimed_from_row(row: &PgRow) -> Result<Claimed, StoreError> {
    parse_claimed(row.try_get("saga_id")?, row.try_get("epoch")?)
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

/// A commit's notification: `"<position> <node>"`. One that does not read so (sent by hand,
/// say) still says that something was committed: position 0 makes the reader look.
fn parse_head(payload: &str) -> LogHead {
    let (position, node) = payload.split_once(' ').unwrap_or((payload, ""));
    LogHead {
        position: position.parse().unwrap_or(0),
        node: (!node.is_empty()).then(|| node.to_string()),
    }
}

impl SagaStore for PgStore {
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
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {LOG_COLUMNS} FROM saga_log WHERE saga_id = $1 AND seq > $2 ORDER BY seq"
            )))
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
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {LOG_COLUMNS} FROM saga_log WHERE saga_id = ANY($1) ORDER BY saga_id, seq"
            )))
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
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {LOG_COLUMNS} FROM saga_log WHERE position > $1 ORDER BY position LIMIT $2"
            )))
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
            let row = sqlx::query("SELECT position AS p FROM saga_log_head")
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

    fn claim(
        &self,
        owner: &str,
        lease: Duration,
        which: Claim,
    ) -> BoxFuture<'_, Result<Vec<Claimed>, StoreError>> {
        let owner = owner.to_string();
        Box::pin(async move {
            // Rows locked in id order, as an append locks them; orphans another node is
            // claiming right now are skipped, not waited for.
            let (whose, lock) = match which {
                Claim::Orphans => (
                    format!(
                        "(owner IS NULL OR lease_until_ms < {NOW_MS}) AND owner IS DISTINCT FROM $1"
                    ),
                    "FOR UPDATE SKIP LOCKED",
                ),
                Claim::OrphansAndMine => (
                    format!("(owner IS NULL OR owner = $1 OR lease_until_ms < {NOW_MS})"),
                    "FOR UPDATE",
                ),
                Claim::Everything => ("TRUE".to_string(), "FOR UPDATE"),
            };
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE sagas SET owner = $1, lease_until_ms = {NOW_MS} + $2,
                     epoch = CASE WHEN owner IS NOT DISTINCT FROM $1 THEN epoch ELSE epoch + 1 END
                 WHERE saga_id IN (
                     SELECT saga_id FROM sagas
                     WHERE status IN ('running', 'compensating') AND {whose}
                     ORDER BY saga_id {lock})
                 RETURNING saga_id, epoch"
            )))
            .bind(&owner)
            .bind(lease.as_millis() as i64)
            .fetch_all(&self.pool)
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
            let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE sagas SET owner = $1, lease_until_ms = {NOW_MS} + $2, epoch = epoch + 1
                 WHERE saga_id = $3 AND status = 'stuck' RETURNING saga_id, epoch"
            )))
            .bind(owner)
            .bind(lease.as_millis() as i64)
            .bind(saga_id.to_string())
            .fetch_optional(&self.pool)
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
                 WHERE saga_id IN (
                     SELECT saga_id FROM sagas
                     WHERE owner = $1 AND status IN ('running', 'compensating')
                     ORDER BY saga_id FOR UPDATE)",
            )
            .bind(owner)
            .execute(&self.pool)
            .await?;
            Ok(done.rows_affected())
        })
    }

    fn shared(&self) -> bool {
        true
    }

    fn watch(&self) -> BoxFuture<'_, Result<Option<LogWatch>, StoreError>> {
        Box::pin(async move {
            let mut listener = PgListener::connect_with(&self.pool).await?;
            listener.listen(&self.channel).await?;
            let heads = futures_util::stream::unfold(listener, |mut listener| async move {
                let item = match listener.try_recv().await {
                    Ok(Some(told)) => Ok(Some(parse_head(told.payload()))),
                    // The connection was lost (and is made again): some may have been missed.
                    Ok(None) => Ok(None),
                    Err(e) => Err(StoreError::from(e)),
                };
                Some((item, listener))
            });
            Ok(Some(Box::pin(heads) as LogWatch))
        })
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.pool.close())
    }
}
