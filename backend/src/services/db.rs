//! Each service's own database: a SQLite file of its own beside the saga log
//! (`saga-shop.orders.db`, …), or a schema of its own under PostgreSQL. One code path for both
//! through sqlx's `Any` driver; queries use `$1, $2, …` in order, which both engines accept.
//!
//! Also where the idempotency every service endpoint relies on happens: a request's
//! `Idempotency-Key` is claimed in the same transaction as its effect, so a repeated key
//! returns the first answer and changes nothing, even when both copies arrive at once (what
//! an answer is and how it is kept: [`super::idempotency`]).

use std::marker::PhantomData;
use std::str::FromStr;
use std::sync::Arc;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyConnection, AnyPool, Connection, Executor};
use tokio::sync::{mpsc, oneshot};

use super::ServiceError;
use super::idempotency::{self, Answer, Stored, Written};

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

/// The PostgreSQL schema of one part of a deployment (`saga_log`, `orders`, …): its own name,
/// or `{prefix}_{name}` under `--schema PREFIX`, so deployments (and test runs) that share a
/// database keep apart.
pub fn schema_name(prefix: Option<&str>, component: &str) -> String {
    match prefix {
        Some(prefix) => format!("{prefix}_{component}"),
        None => component.to_string(),
    }
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
/// A write that fails (a [`ServiceError`] that is not a refusal: a database error, an unreadable
/// row) takes its batch down with it: nothing of the batch is kept, the write gets its own error
/// and every other request in the batch a 503, which its saga retries. Its statements may
/// already have run in the shared transaction, and not paying for a savepoint per request halves
/// the statements a request costs.
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

/// A write: statements on the writer's connection, inside the batch's transaction, and its
/// result. A refusal (a 4xx [`ServiceError`]) is an answer like a result, and must leave
/// nothing behind: returning it rolls nothing back by itself. Any other error fails the batch.
pub trait Effect<T>:
    for<'c> FnOnce(&'c mut AnyConnection) -> BoxFuture<'c, Result<T, ServiceError>> + Send + 'static
{
}

impl<T, F> Effect<T> for F where
    F: for<'c> FnOnce(&'c mut AnyConnection) -> BoxFuture<'c, Result<T, ServiceError>>
        + Send
        + 'static
{
}

/// A write of any result type, so that all of a service's writes share one queue.
trait Work: Send {
    fn run<'c>(self: Box<Self>, conn: &'c mut AnyConnection) -> BoxFuture<'c, Written>;
}

/// An [`Effect`] whose result is turned into an [`Answer`] once it has run.
struct Typed<T, F> {
    effect: F,
    result: PhantomData<fn() -> T>,
}

impl<T: Serialize + 'static, F: Effect<T>> Work for Typed<T, F> {
    fn run<'c>(self: Box<Self>, conn: &'c mut AnyConnection) -> BoxFuture<'c, Written> {
        let effect = (self.effect)(conn);
        Box::pin(async move { Answer::of(effect.await) })
    }
}

struct Job {
    /// The `Idempotency-Key`, for writes that must happen once per key.
    key: Option<String>,
    work: Box<dyn Work>,
    reply: oneshot::Sender<Written>,
}

/// The same settings on every connection of a service, pooled or the writer.
/// How long PostgreSQL lets a transaction of ours wait on its client before ending it.
const IDLE_IN_TRANSACTION: &str = "2s";

async fn prepare(conn: &mut AnyConnection, sqlite: bool, schema: &str) -> sqlx::Result<()> {
    if sqlite {
        conn.execute(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 10000",
        )
        .await?;
    } else {
        // `schema` is one of four fixed names, under a prefix `--schema` checked to be
        // lowercase letters, digits and underscores.
        // A node paused (or cut off) inside a transaction would hold its row locks, stock
        // included, and stall every other node's writes: the database ends such a transaction
        // after a while instead (a healthy batch never waits on its client that long).
        conn.execute(sqlx::AssertSqlSafe(format!(
            "SET search_path TO {schema}; SET idle_in_transaction_session_timeout = '{IDLE_IN_TRANSACTION}'"
        )))
        .await?;
    }
    Ok(())
}

/// How several nodes' writers of one service share its PostgreSQL schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writers {
    /// Side by side: each request writes rows of its own order, so two nodes' batches meet
    /// only when both act on one order (a saga taken over while its old node still ran the
    /// step), and then one fails on the other's key and is retried, finding its answer.
    SideBySide,
    /// One batch at a time, under an advisory lock per service schema, as on one node: rows
    /// every order shares (a product's stock) would otherwise be taken by two nodes' batches
    /// in different orders, and deadlock.
    TakeTurns,
}

impl ServiceDb {
    /// The database of `service` for the server's `--database` URL; on PostgreSQL a schema
    /// of its own, named under `schema_prefix` (`--schema`), written by several nodes' writers
    /// side by side ([`Writers::SideBySide`]).
    pub async fn open(
        database: &str,
        schema_prefix: Option<&str>,
        service: &'static str,
        migrator: &'static sqlx::migrate::Migrator,
    ) -> Result<Self, DbError> {
        Self::open_with(
            database,
            schema_prefix,
            service,
            migrator,
            Writers::SideBySide,
        )
        .await
    }

    /// [`ServiceDb::open`], saying how several nodes' writers share the schema.
    pub async fn open_with(
        database: &str,
        schema_prefix: Option<&str>,
        service: &'static str,
        migrator: &'static sqlx::migrate::Migrator,
        writers: Writers,
    ) -> Result<Self, DbError> {
        sqlx::any::install_default_drivers();
        let url = service_url(database, service)?;
        let options = AnyConnectOptions::from_str(&url)?;
        let sqlite = url.starts_with("sqlite:");
        let schema: Arc<str> = schema_name(schema_prefix, service).into();
        if !sqlite {
            // Several nodes starting at once on one database all create the schema: under a
            // lock, or two `IF NOT EXISTS` can both find it missing and one fail.
            let mut conn = AnyConnection::connect(&url).await?;
            let mut tx = conn.begin().await?;
            sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))::TEXT")
                .bind(format!("saga-shop schema {schema}"))
                .execute(&mut *tx)
                .await?;
            tx.execute(sqlx::AssertSqlSafe(format!(
                "CREATE SCHEMA IF NOT EXISTS {schema}"
            )))
            .await?;
            tx.commit().await?;
            conn.close().await?;
        }
        let pool = AnyPoolOptions::new()
            // Reads are few (an order looked up); every write goes through the one writer
            // connection. Kept small: several nodes share one PostgreSQL server, whose
            // connections are counted (100 by default).
            .max_connections(2)
            .after_connect({
                let schema = schema.clone();
                move |conn, _| {
                    let schema = schema.clone();
                    Box::pin(async move { prepare(conn, sqlite, &schema).await })
                }
            })
            .connect_with(options.clone())
            .await?;
        migrator
            .run(&pool)
            .await
            .map_err(|source| DbError::Migrate { service, source })?;
        let mut conn = AnyConnection::connect_with(&options).await?;
        prepare(&mut conn, sqlite, &schema).await?;
        let (writer, jobs) = mpsc::channel(4 * MAX_BATCH);
        let turns = !sqlite && writers == Writers::TakeTurns;
        tokio::spawn(write_loop(
            conn, options, sqlite, turns, service, schema, jobs,
        ));
        Ok(ServiceDb { pool, writer })
    }

    async fn submit<T>(&self, key: Option<String>, work: Box<dyn Work>) -> Result<T, ServiceError>
    where
        T: DeserializeOwned,
    {
        let (reply, answer) = oneshot::channel();
        let job = Job { key, work, reply };
        self.writer
            .send(Order::Write(job))
            .await
            .map_err(|_| DbError::WriterGone)?;
        answer
            .await
            .map_err(|_| DbError::WriterGone)??
            .into_result()
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

    /// Run `effect` in the writer's next batch; its result comes back once the batch is durable.
    pub async fn write<T, F>(&self, effect: F) -> Result<T, ServiceError>
    where
        T: Serialize + DeserializeOwned + 'static,
        F: Effect<T>,
    {
        self.submit(None, typed(effect)).await
    }

    /// Run `effect` once per `key`. The first call's answer, its result or its refusal, is
    /// stored with its effect in one transaction; later calls with the key get the same status
    /// and body back without running `effect`, even when both copies arrive at once (the writer
    /// runs them one after the other). A failure is not an answer: it keeps nothing, so the key
    /// is still unused and the next attempt runs `effect` afresh.
    pub async fn idempotent<T, F>(&self, key: &str, effect: F) -> Result<T, ServiceError>
    where
        T: Serialize + DeserializeOwned + 'static,
        F: Effect<T>,
    {
        self.submit(Some(key.to_string()), typed(effect)).await
    }
}

fn typed<T: Serialize + 'static, F: Effect<T>>(effect: F) -> Box<dyn Work> {
    Box::new(Typed {
        effect,
        result: PhantomData,
    })
}

/// The writer: one batch at a time, one commit per batch.
async fn write_loop(
    conn: AnyConnection,
    options: AnyConnectOptions,
    sqlite: bool,
    take_turns: bool,
    service: &'static str,
    schema: Arc<str>,
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
                Ok(mut c) => match prepare(&mut c, sqlite, &schema).await {
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
            Some(c) => run_batch(c, take_turns.then_some(&*schema), work).await,
            None => Err(Failed::batch("no connection")),
        };
        match outcome {
            Ok(answers) => {
                for (reply, answer) in replies.into_iter().zip(answers) {
                    let _ = reply.send(answer);
                }
            }
            Err(Failed { why, mut culprit }) => {
                for (i, reply) in replies.into_iter().enumerate() {
                    let error = match culprit.take_if(|(at, _)| *at == i) {
                        Some((_, own)) => own,
                        None => DbError::Batch(why.clone()).into(),
                    };
                    let _ = reply.send(Err(error));
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

/// Why a batch kept nothing: what to log, and the write that failed it (its place in the batch
/// and its own error, which it is answered with), when one did.
struct Failed {
    why: String,
    culprit: Option<(usize, ServiceError)>,
}

impl Failed {
    fn batch(why: impl std::fmt::Display) -> Self {
        Failed {
            why: why.to_string(),
            culprit: None,
        }
    }
}

/// Run one batch: look up the keys already answered, run the rest, record their answers, and
/// commit. The answers, in the batch's order, hold only once the commit did.
async fn run_batch(
    conn: &mut AnyConnection,
    take_turns: Option<&str>,
    batch: Vec<(Option<String>, Box<dyn Work>)>,
) -> Result<Vec<Written>, Failed> {
    let mut tx = conn.begin().await.map_err(Failed::batch)?;
    // See `Writers::TakeTurns`: one batch at a time across the nodes on this schema.
    if let Some(schema) = take_turns {
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))::TEXT")
            .bind(format!("saga-shop writer {schema}"))
            .execute(&mut *tx)
            .await
            .map_err(Failed::batch)?;
    }
    let keys: Vec<&str> = batch.iter().filter_map(|(key, _)| key.as_deref()).collect();
    let mut known = idempotency::answered(&mut tx, &keys)
        .await
        .map_err(Failed::batch)?;
    let mut fresh: Vec<(String, Stored)> = Vec::new();
    let mut answers = Vec::with_capacity(batch.len());
    for (at, (key, work)) in batch.into_iter().enumerate() {
        if let Some(stored) = key.as_ref().and_then(|k| known.get(k)) {
            answers.push(Answer::from_stored(stored));
            continue;
        }
        // A write that panics fails its batch like an error, instead of taking the writer (and
        // every later write of the service) down with it.
        let written = std::panic::AssertUnwindSafe(work.run(&mut tx))
            .catch_unwind()
            .await
            .unwrap_or_else(|_| Err(DbError::Batch("a write panicked".into()).into()));
        let outcome = written.and_then(|answer| {
            let stored = match key {
                Some(_) => Some(answer.stored()?),
                None => None,
            };
            Ok((answer, stored))
        });
        match outcome {
            Ok((answer, stored)) => {
                if let (Some(key), Some(stored)) = (key, stored) {
                    known.insert(key.clone(), stored.clone());
                    fresh.push((key, stored));
                }
                answers.push(Ok(answer));
            }
            Err(failure) => {
                let _ = tx.rollback().await;
                return Err(Failed {
                    why: failure.to_string(),
                    culprit: Some((at, failure)),
                });
            }
        }
    }
    if let Err(e) = idempotency::record(&mut tx, &fresh).await {
        let _ = tx.rollback().await;
        return Err(Failed::batch(e));
    }
    tx.commit().await.map_err(Failed::batch)?;
    Ok(answers)
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;
    use sqlx::Row;

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
        let db = ServiceDb::open(&url, None, "payments", &crate::services::payments::MIGRATOR)
            .await
            .unwrap();
        (db, dir.join("t.payments.db"))
    }

    /// Insert a refunded order (a one-column table) and answer its id.
    fn insert(order: &str) -> impl Effect<String> {
        let order = order.to_string();
        move |conn| Box::pin(insert_refunded(conn, order))
    }

    async fn insert_refunded(
        conn: &mut AnyConnection,
        order: String,
    ) -> Result<String, ServiceError> {
        sqlx::query("INSERT INTO refunded_orders (order_id) VALUES ($1)")
            .bind(&order)
            .execute(&mut *conn)
            .await?;
        Ok(order)
    }

    /// Insert a refunded order, then refuse: the effect itself must undo what it did.
    async fn insert_then_refuse(conn: &mut AnyConnection) -> Result<String, ServiceError> {
        insert_refunded(conn, "refused".into()).await?;
        sqlx::query("DELETE FROM refunded_orders WHERE order_id = 'refused'")
            .execute(&mut *conn)
            .await?;
        Err(ServiceError::OutOfStock {
            sku: "KB-01".into(),
            qty: 2,
        })
    }

    /// Insert a refunded order, then find a row it cannot read.
    async fn insert_then_find_corrupt(conn: &mut AnyConnection) -> Result<String, ServiceError> {
        insert_refunded(conn, "before".into()).await?;
        Err(ServiceError::corrupt(
            "the lines of order o",
            "expected value",
        ))
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
        assert!(
            a.iter()
                .enumerate()
                .all(|(i, r)| r.as_deref().ok() == Some(format!("o{i}").as_str()))
        );
        let answers: Vec<_> = b.into_iter().map(|r| r.unwrap()).collect();
        assert!(answers.iter().all(|x| x == "only-once"), "{answers:?}");
        assert_eq!(count(&db).await, 201);
    }

    /// A refusal is an answer like a result: stored under its key, the same status and body
    /// for every repeat, even one whose effect would now succeed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refusal_is_the_answer_to_every_repeat_of_its_key() {
        let db = scratch_db().await;
        let first = db
            .idempotent("refused", |conn| Box::pin(insert_then_refuse(conn)))
            .await
            .unwrap_err();
        assert!(
            matches!(first, ServiceError::OutOfStock { .. }),
            "{first:?}"
        );
        let again = db
            .idempotent("refused", insert("now-fine"))
            .await
            .unwrap_err();
        assert!(matches!(again, ServiceError::Repeated { .. }), "{again:?}");
        assert_eq!(
            (again.status(), again.body()),
            (first.status(), first.body())
        );
        assert_eq!(count(&db).await, 0);
    }

    /// A stored answer that cannot be read is an error (500), never an empty answer.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unreadable_stored_answer_is_an_error() {
        let db = scratch_db().await;
        for (key, status, body) in [("bad-body", 409, "not json"), ("bad-status", 99, "{}")] {
            sqlx::query("INSERT INTO idempotency (key, status, body) VALUES ($1, $2, $3)")
                .bind(key)
                .bind(status)
                .bind(body)
                .execute(&db.pool)
                .await
                .unwrap();
            let e = db.idempotent(key, insert(key)).await.unwrap_err();
            assert!(matches!(e, ServiceError::Corrupt { .. }), "{e:?}");
        }
        // Only the requests with unreadable answers failed: nothing else was held up.
        assert_eq!(db.idempotent("fine", insert("fine")).await.unwrap(), "fine");
        assert_eq!(count(&db).await, 1);
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
            Err(ServiceError::Unavailable(DbError::WriterGone))
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_or_panicking_write_keeps_nothing_and_the_writer_carries_on() {
        let db = scratch_db().await;
        db.idempotent("first", insert("dup")).await.unwrap();
        // A constraint violation under a new key: an error, and the key is not used up.
        let e = db.idempotent("second", insert("dup")).await.unwrap_err();
        assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE, "{e:?}");
        let panicked = db
            .idempotent::<String, _>("third", |_conn| Box::pin(async { panic!("a bug") }))
            .await;
        assert!(panicked.is_err());
        assert_eq!(
            db.idempotent("second", insert("fresh")).await.unwrap(),
            "fresh"
        );
        assert_eq!(count(&db).await, 2);
    }

    /// A write whose row is unreadable gets its own error; the others of its batch a 503, and
    /// nothing of the batch is kept.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_corrupt_row_fails_its_write_with_a_500_and_its_batch_with_503s() {
        let db = scratch_db().await;
        // Queued behind one another while the writer is busy: one batch.
        let (a, b, c) = tokio::join!(
            db.idempotent("a", insert("a")),
            db.idempotent("b", |conn| Box::pin(insert_then_find_corrupt(conn))),
            db.idempotent("c", insert("c")),
        );
        let b = b.unwrap_err();
        assert_eq!(b.status(), StatusCode::INTERNAL_SERVER_ERROR);
        for other in [a, c] {
            // Either in the failed batch (503) or in one of its own (committed).
            match other {
                Ok(_) => {}
                Err(e) => assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE, "{e:?}"),
            }
        }
        // The corrupt write's key was not used up, and its effect was not kept.
        let exists: Option<String> =
            sqlx::query_scalar("SELECT order_id FROM refunded_orders WHERE order_id = 'before'")
                .fetch_optional(&db.pool)
                .await
                .unwrap();
        assert_eq!(exists, None);
        assert_eq!(db.idempotent("b", insert("b")).await.unwrap(), "b");
    }
}
