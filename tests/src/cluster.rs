//! Several `saga-shop` processes on one PostgreSQL database, as a deployment runs them: one
//! schema prefix shared by every node (`--schema`), a node id each (`--node-id`), a lease
//! (`--lease-secs`). Helpers to pause, resume, stop and kill a node as an operator (or a
//! failing host) would, and to read the saga log straight from the database, where who wrote
//! each record and under which lease is the evidence that no two nodes drove a saga at once.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use shared::SagaState;
use sqlx::Row;

use crate::server::ShopServer;
use crate::shop::Shop;

/// The variable that names the PostgreSQL database the tests may use (CI sets it).
pub const POSTGRES_ENV: &str = "SAGA_TEST_POSTGRES_URL";

/// What a node logs (the server's default), kept for [`ClusterNode::log`].
const LOG_FILTER: &str = "saga_shop=info,saga_engine=info";

/// The schemas a deployment's prefix covers: the saga log and each service.
const SCHEMAS: [&str; 5] = ["saga_log", "orders", "billing", "payments", "shipping"];

/// One node of a [`Cluster`]: a real process, named `node-a`, `node-b`, ….
pub struct ClusterNode {
    pub id: String,
    pub server: ShopServer,
}

impl ClusterNode {
    pub fn url(&self) -> &str {
        &self.server.url
    }

    /// A client of this node's API.
    pub fn shop(&self) -> Shop {
        Shop::new(&self.server.url)
    }

    pub fn pid(&self) -> u32 {
        self.server.pid()
    }

    /// SIGSTOP: the process is frozen, heartbeat and all, until [`ClusterNode::cont`].
    pub fn stop(&self) -> anyhow::Result<()> {
        self.server.signal("STOP")
    }

    /// SIGCONT: the frozen process goes on as if nothing happened, as far as it can tell.
    pub fn cont(&self) -> anyhow::Result<()> {
        self.server.signal("CONT")
    }

    /// What the node has logged so far (its stderr).
    pub fn log(&self) -> String {
        self.server.log_so_far().unwrap_or_default()
    }

    /// SIGKILL, and wait until the process is gone: no lease is handed back.
    pub fn kill(&mut self) {
        self.server.kill();
    }
}

/// N nodes on one fresh schema prefix. Dropping it kills every node, then drops the
/// prefix's schemas (passed or failed: the `test` database is shared by every run).
pub struct Cluster {
    /// Declared first so they are dropped (killed) before the schemas go.
    pub nodes: Vec<ClusterNode>,
    pub prefix: String,
    /// A connection pool of the test's own, to read the deployment's tables directly.
    pub db: sqlx::PgPool,
    _schemas: SchemasGuard,
}

/// The deployment's schemas, dropped when the cluster is.
struct SchemasGuard {
    url: String,
    prefix: String,
}

impl Drop for SchemasGuard {
    fn drop(&mut self) {
        let url = self.url.clone();
        let prefix = self.prefix.clone();
        // `Drop` cannot await and the test's runtime may be the one being dropped from: a
        // thread with a runtime and a connection of its own.
        let dropped = std::thread::spawn(move || -> anyhow::Result<()> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                use sqlx::Connection;
                // The killed nodes' connections close by themselves, but may still fill the
                // server's slots for a moment: try again for a while before giving up.
                let mut tries = 0;
                let mut conn = loop {
                    match sqlx::PgConnection::connect(&url).await {
                        Ok(conn) => break conn,
                        Err(_) if tries < 20 => tries += 1,
                        Err(e) => return Err(e.into()),
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                };
                // A killed node's backend may hold a lock for a moment; never hang on it.
                sqlx::query("SET lock_timeout = '10s'")
                    .execute(&mut conn)
                    .await?;
                for schema in schema_names(&prefix) {
                    // The prefix is a name this process made (letters, digits, `_`).
                    sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP SCHEMA IF EXISTS {schema} CASCADE"
                    )))
                    .execute(&mut conn)
                    .await?;
                }
                Ok(())
            })
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("could not drop the schemas of {}: {e:#}", self.prefix),
            Err(_) => eprintln!("dropping the schemas of {} panicked", self.prefix),
        }
    }
}

fn schema_names(prefix: &str) -> Vec<String> {
    SCHEMAS.iter().map(|s| format!("{prefix}_{s}")).collect()
}

/// `node-a`, `node-b`, … (as `cargo xtask cluster` names them).
pub fn node_id(i: usize) -> String {
    let letter = (b'a' + (i % 26) as u8) as char;
    if i < 26 {
        format!("node-{letter}")
    } else {
        format!("node-{letter}{}", i / 26)
    }
}

impl Cluster {
    /// Start `n` nodes on a fresh prefix with `--lease-secs lease_secs` and `extra` flags, or
    /// `None` (after saying so) when [`POSTGRES_ENV`] is not set.
    pub async fn start(
        test: &str,
        n: usize,
        lease_secs: u64,
        extra: &[&str],
    ) -> anyhow::Result<Option<Cluster>> {
        let Ok(url) = std::env::var(POSTGRES_ENV) else {
            eprintln!(
                "SKIPPED {test}: {POSTGRES_ENV} is not set (CI sets it; locally: export {POSTGRES_ENV}=postgres://postgres@127.0.0.1:5432/test)"
            );
            return Ok(None);
        };
        // A few connections: the nodes need the server's slots more.
        let db = sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect(&url)
            .await
            .with_context(|| format!("{POSTGRES_ENV} is set but PostgreSQL cannot be used"))?;
        // `c_` and 32 hex digits: within the server's 40 characters for a prefix.
        let prefix = crate::unique_name("c");
        // The guard first: a node that half-made the schemas and failed still has them go.
        let guard = SchemasGuard {
            url: url.clone(),
            prefix: prefix.clone(),
        };
        let lease = lease_secs.to_string();
        let mut nodes = Vec::with_capacity(n);
        // One after another: the first runs the migrations on the empty prefix, and a
        // node reports its address only once its databases are open.
        for i in 0..n {
            let id = node_id(i);
            let mut args = vec![
                "--database",
                url.as_str(),
                "--schema",
                prefix.as_str(),
                "--node-id",
                id.as_str(),
                "--lease-secs",
                lease.as_str(),
            ];
            args.extend_from_slice(extra);
            let server = ShopServer::start_logged(&args, LOG_FILTER)
                .with_context(|| format!("starting {id} of {n}"))?;
            nodes.push(ClusterNode { id, server });
        }
        Ok(Some(Cluster {
            nodes,
            prefix,
            db,
            _schemas: guard,
        }))
    }

    /// The node named `id`.
    pub fn node(&self, id: &str) -> &ClusterNode {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    pub fn node_mut(&mut self, id: &str) -> &mut ClusterNode {
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    /// `PREFIX_name`: the schema of `name` (`saga_log`, `orders`, …) in this deployment.
    pub fn schema(&self, name: &str) -> String {
        format!("{}_{name}", self.prefix)
    }

    /// The whole saga log, straight from its table, by saga then `seq`.
    pub async fn log(&self) -> anyhow::Result<Vec<LogRecord>> {
        // The prefix is a name this test made. `epoch` is read as BIGINT whatever integer
        // type it is stored as.
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT position, saga_id, seq, kind, at_ms, node, epoch::BIGINT AS epoch \
             FROM {}.saga_log ORDER BY saga_id, seq",
            self.schema("saga_log")
        )))
        .fetch_all(&self.db)
        .await
        .context("reading the saga log (with its `node` and `epoch` columns)")?;
        rows.iter()
            .map(|r| {
                Ok(LogRecord {
                    position: r.try_get("position")?,
                    saga_id: r.try_get("saga_id")?,
                    seq: r.try_get("seq")?,
                    kind: r.try_get("kind")?,
                    at_ms: r.try_get("at_ms")?,
                    node: r.try_get("node")?,
                    epoch: r.try_get("epoch")?,
                })
            })
            .collect()
    }

    /// Each unfinished saga's owner and lease end (ms since the epoch), from `sagas`.
    pub async fn leases(&self) -> anyhow::Result<HashMap<String, Lease>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT saga_id, owner, lease_until_ms FROM {}.sagas \
             WHERE status IN ('running', 'compensating')",
            self.schema("saga_log")
        )))
        .fetch_all(&self.db)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("saga_id")?,
                    Lease {
                        owner: r.try_get("owner")?,
                        until_ms: r.try_get("lease_until_ms")?,
                    },
                ))
            })
            .collect()
    }
}

/// A saga's owner as the `sagas` table has it.
#[derive(Debug, Clone)]
pub struct Lease {
    pub owner: Option<String>,
    pub until_ms: Option<i64>,
}

/// One row of the saga log, the columns that say who wrote it and when.
#[derive(Debug, Clone)]
pub struct LogRecord {
    pub position: i64,
    pub saga_id: String,
    pub seq: i64,
    pub kind: String,
    pub at_ms: i64,
    pub node: Option<String>,
    pub epoch: i64,
}

/// A saga passing from one node to another, as its log shows it.
#[derive(Debug, Clone)]
pub struct Takeover {
    pub saga_id: String,
    pub from: String,
    pub to: String,
    /// The last record the previous node wrote.
    pub last_before: LogRecord,
    /// The first record the new node wrote.
    pub first_after: LogRecord,
}

/// Check what fencing promises of every saga's log (`records` by saga, then `seq`): `seq` runs
/// 1, 2, 3… without a gap, the lease epoch never goes down, the writer changes only where the
/// epoch goes up (one epoch, one node), and a new node's first record is not older than its
/// predecessor's last. Returns every change of writer, for checks of when it happened.
pub fn check_fencing(records: &[LogRecord]) -> anyhow::Result<Vec<Takeover>> {
    let mut takeovers = Vec::new();
    for saga in records.chunk_by(|a, b| a.saga_id == b.saga_id) {
        let id = &saga[0].saga_id;
        for (i, r) in saga.iter().enumerate() {
            if r.seq != i as i64 + 1 {
                bail!("saga {id}: record {} has seq {}", i + 1, r.seq);
            }
            if r.node.is_none() {
                bail!("saga {id}: record {} names no node", r.seq);
            }
        }
        for pair in saga.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            if b.epoch < a.epoch {
                bail!(
                    "saga {id}: epoch goes down from {} to {} at seq {}",
                    a.epoch,
                    b.epoch,
                    b.seq
                );
            }
            if b.node != a.node {
                if b.epoch == a.epoch {
                    bail!(
                        "saga {id}: seq {} by {:?} and seq {} by {:?} under one epoch {}: two drivers",
                        a.seq,
                        a.node,
                        b.seq,
                        b.node,
                        a.epoch
                    );
                }
                if b.at_ms < a.at_ms {
                    bail!(
                        "saga {id}: {:?} wrote seq {} at {} ms, before {:?}'s last record (seq {}, {} ms)",
                        b.node,
                        b.seq,
                        b.at_ms,
                        a.node,
                        a.seq,
                        a.at_ms
                    );
                }
                takeovers.push(Takeover {
                    saga_id: id.clone(),
                    from: a.node.clone().unwrap_or_default(),
                    to: b.node.clone().unwrap_or_default(),
                    last_before: a.clone(),
                    first_after: b.clone(),
                });
            }
        }
    }
    Ok(takeovers)
}

/// The records of each saga, by saga id.
pub fn by_saga(records: &[LogRecord]) -> BTreeMap<&str, &[LogRecord]> {
    records
        .chunk_by(|a, b| a.saga_id == b.saga_id)
        .map(|s| (s[0].saga_id.as_str(), s))
        .collect()
}

/// Milliseconds since the Unix epoch, the clock the log's `at_ms` is on (every node runs on
/// this machine).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Poll `done` until it holds; fails, saying `what`, after `within`.
pub async fn wait_for<F: AsyncFnMut() -> anyhow::Result<bool>>(
    within: Duration,
    what: &str,
    mut done: F,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    while !done().await? {
        if Instant::now() > deadline {
            bail!("{what}: not within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Poll `GET /api/sagas/{id}` on `shop` until every saga of `saga_ids` is finished; their
/// final states. Fails after `within`, naming the sagas left unfinished.
pub async fn wait_finished(
    shop: &Shop,
    saga_ids: &[String],
    within: Duration,
) -> anyhow::Result<HashMap<String, SagaState>> {
    let deadline = Instant::now() + within;
    let mut states: HashMap<String, SagaState> = HashMap::new();
    loop {
        for id in saga_ids {
            if states.get(id).is_none_or(|s| !s.is_finished()) {
                let saga = shop.saga(id).await.with_context(|| format!("saga {id}"))?;
                states.insert(id.clone(), saga.status);
            }
        }
        let left: Vec<&String> = saga_ids
            .iter()
            .filter(|id| !states[*id].is_finished())
            .collect();
        if left.is_empty() {
            return Ok(states);
        }
        if Instant::now() > deadline {
            bail!(
                "{} of {} sagas unfinished after {within:?}: {:?}",
                left.len(),
                saga_ids.len(),
                &left[..left.len().min(10)]
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
