//! Each service's own database: a SQLite file of its own beside the saga log
//! (`saga-shop.orders.db`, …), or a schema of its own under PostgreSQL. One code path for both
//! through sqlx's `Any` driver; queries use `$1, $2, …` in order, which both engines accept.
//!
//! Also the idempotency every service endpoint relies on: a request's `Idempotency-Key` is
//! claimed in the same transaction as its effect, so a repeated key returns the first result
//! and changes nothing, even when both copies arrive at once.

use std::collections::HashMap;
use std::str::FromStr;

use serde_json::Value;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyConnection, AnyPool, Connection, Executor, Row};

use futures_util::FutureExt;
use saga_engine::BoxFuture;
use tokio::sync::{mpsc, oneshot};

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("migrating the {service} database: {source}")]
    Migrate {
        service: &'static str,
        source: sqlx::migrate::MigrateError,
    },
    #[error("the write was not committed: {0}")]
    Batch(String),
    #[error("the service's writer has stopped")]
    WriterGone,
    #[error("unsupported database URL {0:?}: use sqlite://PATH or postgres://…")]
    Url(String),
}

/// The database of `service`, derived from the server's `--database` URL.
pub fn service_url(database: &str, service: &str) -> Result<String, DbError> {
    if let Some(path) = database.strip_prefix("sqlite://") {
        let path = path.split('?').next().unwrap_or(path);
        let stem = path.strip_suffix(".db").unwrap_or(path);
        Ok(format!("sqlite://{stem}.{service}.db?mode=rwc"))
    } else if database.starts_with("postgres://") || database.starts_with("postgresql://") {
        Ok(database.to_string())
    } else {
        Err(DbError::Url(database.to_string()))
    }
}

/// A service's database: a pool for reads, and one writer that group-commits every write.
///
/// Why a writer: each effect must be durable before its reply (the saga records the step as
/// done on that reply), and on SQLite with `synchronous = FULL` every commit is an fsync. One
/// transaction per request caps a service at the disk's fsyncs per second. The writer takes
/// whatever requests are waiting, runs them one after another in one transaction, commits once,
/// and only then replies to all of them: the same guarantee, one fsync shared. It also
/// serialises each service's writes, which is what keeps stock from being oversold.
///
/// A write that fails (a database error; a business refusal is an answer, not an error) takes
/// its batch down with it: nothing of the batch is kept and every request in it is answered
/// 503, which its saga retries. Such errors would fail the commit anyway, and not paying for a
/// savepoint per request halves the statements a request costs.
#[derive(Debug, Clone)]
pub struct ServiceDb {
    pub pool: AnyPool,
    writer: mpsc::Sender<Order>,
}

/// What the writer is asked to do.
enum Order {
    Write(Job),
    /// Finish the batch at hand, close the connection, then say so. Writes queued behind it are
    /// never run: their callers are told the writer is gone.
    Close(oneshot::Sender<()>),
}

/// At most this many requests share one commit.
const MAX_BATCH: usize = 128;

/// A write's answer: the HTTP status and body the service replies with.
pub type Answer = (u16, Value);

/// A write: statements on the writer's connection, inside the batch's transaction.
pub trait Effect:
    for<'c> FnOnce(&'c mut AnyConnection) -> BoxFuture<'c, Result<Answer, sqlx::Error>> + Send + 'static
{
}

impl<F> Effect for F where
    F: for<'c> FnOnce(&'c mut AnyConnection) -> BoxFuture<'c, Result<Answer, sqlx::Error>>
        + Send
        + 'static
{
}

type Work = Box<dyn Effect>;

struct Job {
    /// The `Idempotency-Key`, for writes that must happen once per key.
    key: Option<String>,
    work: Work,
    reply: oneshot::Sender<Result<Answer, DbError>>,
}

/// The same settings on every connection of a service, pooled or the writer.
async fn prepare(conn: &mut AnyConnection, sqlite: bool, service: &str) -> sqlx::Result<()> {
    if sqlite {
        conn.execute(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 10000",
        )
        .await?;
    } else {
        // `service` is one of four fixed names, never user input.
        conn.execute(sqlx::AssertSqlSafe(format!("SET search_path TO {service}")))
            .await?;
    }
    Ok(())
}

impl ServiceDb {
    pub async fn open(
        database: &str,
        service: &'static str,
        migrator: &'static sqlx::migrate::Migrator,
    ) -> Result<Self, DbError> {
        sqlx::any::install_default_drivers();
        let url = service_url(database, service)?;
        let options = AnyConnectOptions::from_str(&url)?;
        let sqlite = url.starts_with("sqlite:");
        if !sqlite {
            let mut conn = AnyConnection::connect(&url).await?;
            conn.execute(sqlx::AssertSqlSafe(format!(
                "CREATE SCHEMA IF NOT EXISTS {service}"
            )))
            .await?;
            conn.close().await?;
        }
        let pool = AnyPoolOptions::new()
            .max_connections(if sqlite { 2 } else { 8 })
            .after_connect(move |conn, _| Box::pin(prepare(conn, sqlite, service)))
            .connect_with(options.clone())
            .await?;
        migrator
            .run(&pool)
            .await
            .map_err(|source| DbError::Migrate { service, source })?;
        let mut conn = AnyConnection::connect_with(&options).await?;
        prepare(&mut conn, sqlite, service).await?;
        let (writer, jobs) = mpsc::channel(4 * MAX_BATCH);
        tokio::spawn(write_loop(conn, options, sqlite, service, jobs));
        Ok(ServiceDb { pool, writer })
    }

    async fn submit<F>(&self, key: Option<String>, work: F) -> Result<Answer, DbError>
    where
        F: Effect,
    {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            key,
            work: Box::new(work),
            reply,
        };
        self.writer
            .send(Order::Write(job))
            .await
            .map_err(|_| DbError::WriterGone)?;
        answer.await.map_err(|_| DbError::WriterGone)?
    }

    /// Close the reading pool and the writer's connection, waiting for what is in use. For a
    /// clean stop, once nothing writes any more: SQLite checkpoints the write-ahead log into the
    /// database and deletes it only when the last connection closes, which the end of a process
    /// does not do (it would leave a WAL file of up to a few MiB behind). The writer closes
    /// last, as the one connection sure to be able to checkpoint.
    pub async fn close(&self) {
        self.pool.close().await;
        let (closed, wait) = oneshot::channel();
        if self.writer.send(Order::Close(closed)).await.is_ok() {
            let _ = wait.await;
        }
    }

    /// Run `work` in the writer's next batch; its answer comes back once the batch is durable.
    pub async fn write<F>(&self, work: F) -> Result<Answer, DbError>
    where
        F: Effect,
    {
        self.submit(None, work).await
    }

    /// Run `effect` once per `key`. The first call's answer is stored with its effect in one
    /// transaction; later calls with the key get it back without running `effect`, even when
    /// both copies arrive at once (the writer runs them one after the other). An effect answers
    /// with a business status (2xx or 4xx): it has no server errors of its own to store.
    pub async fn idempotent<F>(&self, key: &str, effect: F) -> Result<Answer, DbError>
    where
        F: Effect,
    {
        self.submit(Some(key.to_string()), effect).await
    }
}

/// The writer: one batch at a time, one commit per batch.
async fn write_loop(
    conn: AnyConnection,
    options: AnyConnectOptions,
    sqlite: bool,
    service: &'static str,
    mut orders: mpsc::Receiver<Order>,
) {
    let mut conn = Some(conn);
    let mut close = None;
    while close.is_none() {
        let mut batch = match orders.recv().await {
            Some(Order::Write(job)) => vec![job],
            Some(Order::Close(closed)) => {
                close = Some(closed);
                break;
            }
            None => break,
        };
        while batch.len() < MAX_BATCH {
            match orders.try_recv() {
                Ok(Order::Write(job)) => batch.push(job),
                Ok(Order::Close(closed)) => {
                    close = Some(closed);
                    break;
                }
                Err(_) => break,
            }
        }
        if conn.is_none() {
            match AnyConnection::connect_with(&options).await {
                Ok(mut c) => match prepare(&mut c, sqlite, service).await {
                    Ok(()) => conn = Some(c),
                    Err(e) => {
                        tracing::error!(service, error = %e, "preparing the writer's connection failed")
                    }
                },
                Err(e) => tracing::error!(service, error = %e, "the writer could not reconnect"),
            }
        }
        let (work, replies): (Vec<_>, Vec<_>) = batch
            .into_iter()
            .map(|j| ((j.key, j.work), j.reply))
            .unzip();
        let outcome = match conn.as_mut() {
            Some(c) => run_batch(c, work).await,
            None => Err("no connection".to_string()),
        };
        match outcome {
            Ok(answers) => {
                for (reply, answer) in replies.into_iter().zip(answers) {
                    let _ = reply.send(Ok(answer));
                }
            }
            Err(why) => {
                for reply in replies {
                    let _ = reply.send(Err(DbError::Batch(why.clone())));
                }
                tracing::error!(service, error = %why, "a write batch failed; reconnecting");
                conn = None;
            }
        }
    }
    if let Some(conn) = conn
        && let Err(e) = conn.close().await
    {
        tracing::warn!(service, error = %e, "closing the writer's connection failed");
    }
    if let Some(closed) = close {
        let _ = closed.send(());
    }
}

/// Run one batch: look up the keys already answered, run the rest, record their answers, and
/// commit. The answers, in the batch's order, hold only once the commit did; `Err` says why
/// nothing of the batch was kept.
async fn run_batch(
    conn: &mut AnyConnection,
    batch: Vec<(Option<String>, Work)>,
) -> Result<Vec<Answer>, String> {
    let mut tx = conn.begin().await.map_err(|e| e.to_string())?;
    let keys: Vec<&str> = batch.iter().filter_map(|(key, _)| key.as_deref()).collect();
    let mut known = answered(&mut tx, &keys).await.map_err(|e| e.to_string())?;
    let mut fresh: Vec<(String, Answer)> = Vec::new();
    let mut answers = Vec::with_capacity(batch.len());
    for (key, work) in batch {
        if let Some(answer) = key.as_ref().and_then(|k| known.get(k)) {
            answers.push(answer.clone());
            continue;
        }
        // A write that panics fails its batch like an error, instead of taking the writer (and
        // every later write of the service) down with it.
        let outcome = std::panic::AssertUnwindSafe(work(&mut tx))
            .catch_unwind()
            .await
            .unwrap_or_else(|_| Err(sqlx::Error::Protocol("a write panicked".into())));
        let answer = match outcome {
            Ok((status, _)) if status >= 500 => Err(format!("a write answered {status}")),
            Ok(answer) => Ok(answer),
            Err(e) => Err(e.to_string()),
        };
        let answer = match answer {
            Ok(answer) => answer,
            Err(why) => {
                let _ = tx.rollback().await;
                return Err(why);
            }
        };
        if let Some(key) = key {
            known.insert(key.clone(), answer.clone());
            fresh.push((key, answer.clone()));
        }
        answers.push(answer);
    }
    if let Err(e) = record(&mut tx, &fresh).await {
        let _ = tx.rollback().await;
        return Err(e.to_string());
    }
    tx.commit().await.map_err(|e| e.to_string())?;
    Ok(answers)
}

/// The stored answers of whichever of `keys` were already used, in one query.
async fn answered(
    conn: &mut AnyConnection,
    keys: &[&str],
) -> sqlx::Result<HashMap<String, Answer>> {
    let mut known = HashMap::new();
    if keys.is_empty() {
        return Ok(known);
    }
    let marks: Vec<String> = (1..=keys.len()).map(|i| format!("${i}")).collect();
    let sql = format!(
        "SELECT key, status, body FROM idempotency WHERE key IN ({})",
        marks.join(", ")
    );
    // One statement per batch size: not worth a place in the prepared-statement cache.
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(false);
    for key in keys {
        query = query.bind(*key);
    }
    for row in query.fetch_all(&mut *conn).await? {
        let key: String = row.try_get("key")?;
        let status: i64 = row.try_get("status")?;
        let body: String = row.try_get("body")?;
        let body = serde_json::from_str(&body).unwrap_or(Value::Null);
        known.insert(key, (status as u16, body));
    }
    Ok(known)
}

/// Store the answers of keys used for the first time in this batch, in one statement.
async fn record(conn: &mut AnyConnection, fresh: &[(String, Answer)]) -> sqlx::Result<()> {
    if fresh.is_empty() {
        return Ok(());
    }
    let rows: Vec<String> = (0..fresh.len())
        .map(|i| format!("(${}, ${}, ${})", 3 * i + 1, 3 * i + 2, 3 * i + 3))
        .collect();
    let sql = format!(
        "INSERT INTO idempotency (key, status, body) VALUES {}",
        rows.join(", ")
    );
    // One statement per batch size: not worth a place in the prepared-statement cache.
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(false);
    for (key, (status, body)) in fresh {
        query = query
            .bind(key.as_str())
            .bind(i64::from(*status))
            .bind(body.to_string());
    }
    query.execute(&mut *conn).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_service_gets_its_own_sqlite_file() {
        assert_eq!(
            service_url("sqlite://data/saga-shop.db", "orders").unwrap(),
            "sqlite://data/saga-shop.orders.db?mode=rwc"
        );
        assert_eq!(
            service_url("postgres://u@h/db", "orders").unwrap(),
            "postgres://u@h/db"
        );
        assert!(service_url("mysql://x", "orders").is_err());
    }

    async fn scratch_db() -> ServiceDb {
        scratch_db_in().await.0
    }

    /// A payments database in a directory of its own, and its file.
    async fn scratch_db_in() -> (ServiceDb, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("svc-db-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}", dir.join("t.db").display());
        let db = ServiceDb::open(&url, "payments", &crate::services::payments::MIGRATOR)
            .await
            .unwrap();
        (db, dir.join("t.payments.db"))
    }

    /// Insert a refunded order (a one-column table) and answer 200.
    fn insert(order: &str) -> impl Effect {
        let order = order.to_string();
        move |conn| {
            Box::pin(async move {
                sqlx::query("INSERT INTO refunded_orders (order_id) VALUES ($1)")
                    .bind(&order)
                    .execute(&mut *conn)
                    .await?;
                Ok((200, serde_json::json!({ "order": order })))
            })
        }
    }

    async fn count(db: &ServiceDb) -> i64 {
        sqlx::query("SELECT COUNT(*) AS n FROM refunded_orders")
            .fetch_one(&db.pool)
            .await
            .unwrap()
            .try_get("n")
            .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_requests_all_commit_and_a_key_applies_once() {
        let db = scratch_db().await;
        // 200 distinct keys at once, and the same key 20 times at once.
        let distinct = (0..200).map(|i| {
            let db = db.clone();
            async move {
                db.idempotent(&format!("k{i}"), insert(&format!("o{i}")))
                    .await
            }
        });
        let same = (0..20).map(|_| {
            let db = db.clone();
            async move { db.idempotent("once", insert("only-once")).await }
        });
        let (a, b) = futures_util::future::join(
            futures_util::future::join_all(distinct),
            futures_util::future::join_all(same),
        )
        .await;
        assert!(a.iter().all(|r| matches!(r, Ok((200, _)))));
        let answers: Vec<_> = b.into_iter().map(|r| r.unwrap()).collect();
        assert!(answers.iter().all(|x| *x == answers[0]), "{answers:?}");
        assert_eq!(count(&db).await, 201);
    }

    /// Closed, the database is checkpointed and its write-ahead log gone; a later write is
    /// refused, not lost in a queue nobody reads.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn closing_checkpoints_the_write_ahead_log_and_refuses_later_writes() {
        let (db, file) = scratch_db_in().await;
        for i in 0..50 {
            db.idempotent(&format!("k{i}"), insert(&format!("o{i}")))
                .await
                .unwrap();
        }
        let wal = file.with_file_name("t.payments.db-wal");
        assert!(wal.exists(), "the writes went through a write-ahead log");
        db.close().await;
        assert!(!wal.exists(), "the write-ahead log is left behind");
        assert!(matches!(
            db.idempotent("late", insert("late")).await,
            Err(DbError::WriterGone)
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_or_panicking_write_keeps_nothing_and_the_writer_carries_on() {
        let db = scratch_db().await;
        db.idempotent("first", insert("dup")).await.unwrap();
        // A constraint violation under a new key: an error, and the key is not used up.
        assert!(db.idempotent("second", insert("dup")).await.is_err());
        assert!(
            db.idempotent("third", |_conn| Box::pin(async { panic!("a bug") }))
                .await
                .is_err()
        );
        assert_eq!(
            db.idempotent("second", insert("fresh")).await.unwrap().0,
            200
        );
        assert_eq!(count(&db).await, 2);
    }
}
