//! Where the saga log lives. [`SagaStore`] is deliberately small: append records (in one
//! transaction, durably), read them back, and keep a one-row-per-saga summary beside them so
//! that "which sagas are unfinished" and "list recent sagas" do not scan the log.
//!
//! Two durable implementations pass the same test suite: `SqliteStore` (embedded; the `sqlite`
//! feature) and `PgStore` (for several nodes sharing one database; the `postgres` feature).
//! [`MemoryStore`] keeps nothing, and is the contract written plainly.

mod memory;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;

pub use memory::MemoryStore;
#[cfg(feature = "postgres")]
pub use postgres::PgStore;
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteStore;

use std::time::Duration;

use crate::definition::BoxFuture;
use crate::record::{RecordKind, SagaId, SagaRecord, SagaStatus};

/// A store failure. Cloneable because one failed group commit fails every saga in the group.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// A `saga_started` record for an id the store already has: nothing of its batch is kept.
    #[error("a saga with id {0} already exists")]
    DuplicateSaga(SagaId),
    /// The database failed (or could not be reached); the message is the driver's.
    #[error("saga log database error: {0}")]
    Database(String),
    /// Something read back is not what the engine writes: a row edited by hand, a schema
    /// from elsewhere.
    #[error("saga log holds something unreadable: {0}")]
    Corrupt(String),
    /// The store was [closed](SagaStore::close): the process is stopping, and its sagas are
    /// left for the next one to resume.
    #[error("the saga log is closed")]
    Closed,
    /// A record for a saga its node no longer owns at the record's epoch: another node took
    /// the saga over (this one was paused, or cut off from the database, past its lease), or
    /// it was handed back. Nothing of the batch is kept; the writer must stop driving it.
    #[error("saga {0} is owned by another node now; this node no longer drives it")]
    Fenced(SagaId),
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::PoolClosed => StoreError::Closed,
            e => StoreError::Database(e.to_string()),
        }
    }
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        StoreError::Database(format!("migrating the saga log: {e}"))
    }
}

/// One saga, as the summary table holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct SagaSummary {
    /// Which saga.
    pub saga_id: SagaId,
    /// The name of its [`SagaDefinition`](crate::SagaDefinition).
    pub definition: String,
    /// Where it stands, as of its last committed record.
    pub status: SagaStatus,
    /// When it was started, in milliseconds since the Unix epoch.
    pub started_at_ms: i64,
    /// When it finished, once it has.
    pub finished_at_ms: Option<i64>,
}

/// A record together with its position in the store-wide log order, which lets a subscriber
/// to every saga resume where it left off.
#[derive(Debug, Clone, PartialEq)]
pub struct Committed {
    /// Where the record is in the whole log; larger for records committed later by the same
    /// engine. What a reader of every saga keeps to resume after.
    pub position: i64,
    /// The record itself.
    pub record: SagaRecord,
}

/// A saga a node has just [claimed](SagaStore::claim): its id, and the epoch under which the
/// node now holds it, which every record it writes for the saga carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claimed {
    /// Which saga.
    pub saga_id: SagaId,
    /// The saga's epoch now: one more than before if the saga changed hands.
    pub epoch: u64,
}

/// Which unfinished sagas a [claim](SagaStore::claim) takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Those nobody holds: no owner (handed back, or written with no lease), or a lease that
    /// expired. What a node takes over while it runs.
    Orphans,
    /// The orphans and the claimer's own, whose leases are so renewed, all in one statement:
    /// a node's heartbeat, which also resumes a saga of its own whose driver stopped.
    OrphansAndMine,
    /// Every unfinished saga, live leases included. Only for a store no other process writes
    /// ([`SagaStore::shared`] is false), at start-up: whoever held the sagas before has
    /// stopped, since the log is this process's alone, so waiting out its leases gains nothing.
    Everything,
}

/// What a store that several processes write says each time one of them commits: the log's
/// last position after that commit, and the node that committed (`None` when the store could
/// not tell). [`LogWatch`] yields `None` instead when it may have missed some (its connection
/// was lost and made again): the reader re-reads what it has not seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogHead {
    /// The position of the newest record committed.
    pub position: i64,
    /// The node whose commit it was.
    pub node: Option<String>,
}

/// The commits of every process on a shared store, as [`SagaStore::watch`] reports them.
pub type LogWatch =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<Option<LogHead>, StoreError>> + Send>>;

/// The durable saga log.
///
/// Implementations must make `append` atomic and durable: when it returns `Ok`, every record of
/// the batch survives a crash, and if it fails, none is visible. A saga's first record
/// (`saga_started`) creates its summary row and fails with [`StoreError::DuplicateSaga`] if the
/// id is taken; records that change the saga's status update that row in the same transaction.
///
/// Ownership: a saga's row names the node that drives it (`owner`), until when (its lease), and
/// an `epoch` that grows by one whenever the saga changes hands. A `saga_started` record with a
/// node and an epoch creates the row owned by that node, at that epoch, for `lease`. Every
/// record with an epoch is appended only if its node owns the saga at exactly that epoch, checked
/// in the same transaction as the append ([`StoreError::Fenced`] otherwise): a node that lost a
/// saga cannot write into it, however late its append arrives.
///
/// Positions are dense (1, 2, 3, … with no hole) and in commit order: a reader that has seen
/// position `p` committed has every position below it committed too.
pub trait SagaStore: Send + Sync + 'static {
    /// Append a batch, possibly of many sagas (group commit). Returns each record's position.
    /// The sagas it starts are leased to their node for `lease`.
    fn append<'a>(
        &'a self,
        records: &'a [SagaRecord],
        lease: Duration,
    ) -> BoxFuture<'a, Result<Vec<i64>, StoreError>>;

    /// One saga's records with `seq > after_seq`, in order.
    fn saga_records(
        &self,
        saga_id: SagaId,
        after_seq: u64,
    ) -> BoxFuture<'_, Result<Vec<SagaRecord>, StoreError>>;

    /// Every record of each saga in `saga_ids`, in one read: each saga's records together and
    /// in `seq` order, the sagas one after another in no set order (an id the store does not
    /// know has none). For a reader that shows many sagas at once, such as a list of them with
    /// what their logs say, and would otherwise read them one saga at a time.
    fn sagas_records<'a>(
        &'a self,
        saga_ids: &'a [SagaId],
    ) -> BoxFuture<'a, Result<Vec<SagaRecord>, StoreError>>;

    /// Records of all sagas with `position > after`, in order, at most `limit`.
    fn records_after(
        &self,
        after: i64,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<Committed>, StoreError>>;

    /// The position of the newest record (0 for an empty log).
    fn last_position(&self) -> BoxFuture<'_, Result<i64, StoreError>>;

    /// One saga's summary, if the store has it.
    fn saga(&self, saga_id: SagaId) -> BoxFuture<'_, Result<Option<SagaSummary>, StoreError>>;

    /// Recent sagas, newest first (by start, then by id, descending: UUIDv7 ids started in
    /// the same millisecond are in start order), at most `limit`, optionally only those in
    /// `status`. With `before`, the page that follows that saga in this order (the sagas
    /// started before it); none if `before` is not a saga of this store. A listing reads pages
    /// by passing each page's last saga as the next one's `before`: sagas started meanwhile
    /// come before the first page, so no page changes under the reader.
    fn list_sagas(
        &self,
        status: Option<SagaStatus>,
        before: Option<SagaId>,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<SagaSummary>, StoreError>>;

    /// Take ownership of the unfinished sagas `which` names, for `lease`; returns them, each
    /// with the epoch it is now held under (one more than before for a saga that changed hands,
    /// the same for one the claimer held already). This is how a node restarting, or one of
    /// several nodes on a shared database, picks up the sagas it must drive, and how it renews
    /// its leases ([`Claim::OrphansAndMine`]): a saga it holds is never offered to another
    /// claimer while it renews more often than `lease`.
    fn claim(
        &self,
        owner: &str,
        lease: Duration,
        which: Claim,
    ) -> BoxFuture<'_, Result<Vec<Claimed>, StoreError>>;

    /// Take a `stuck` saga, whoever last drove it, for a person's request to resume it;
    /// returns its new epoch, or `None` if it is not stuck (any more).
    fn claim_stuck<'a>(
        &'a self,
        saga_id: SagaId,
        owner: &'a str,
        lease: Duration,
    ) -> BoxFuture<'a, Result<Option<u64>, StoreError>>;

    /// Hand back every unfinished saga `owner` holds (a node stopping cleanly), so that
    /// another node takes them over at its next claim instead of after their leases; returns
    /// how many. The owner's later appends to them are fenced.
    fn release<'a>(&'a self, owner: &'a str) -> BoxFuture<'a, Result<u64, StoreError>>;

    /// Whether other processes may write this log at the same time (several nodes on one
    /// PostgreSQL database). A store only one process opens lets that process, starting, take
    /// every unfinished saga at once ([`Claim::Everything`]).
    fn shared(&self) -> bool {
        false
    }

    /// For a [shared](Self::shared) store: a stream of every process's commits, so that a
    /// node announces other nodes' records live. `None` for a store only this process writes.
    fn watch(&self) -> BoxFuture<'_, Result<Option<LogWatch>, StoreError>> {
        Box::pin(async { Ok(None) })
    }

    /// Close the store's connections, waiting for those in use to be given back; later calls
    /// fail with [`StoreError::Closed`]. For a clean stop: SQLite checkpoints the log into the
    /// database and removes its write-ahead file only when its last connection closes, which
    /// the end of a process does not do. Nothing to do for a store without connections.
    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// What a batch does to the summary table, shared by both implementations.
pub(crate) enum SummaryChange<'a> {
    Create { definition: &'a str },
    Status(SagaStatus),
}

pub(crate) fn summary_change(record: &SagaRecord) -> Option<SummaryChange<'_>> {
    match &record.kind {
        RecordKind::SagaStarted { saga, .. } => Some(SummaryChange::Create { definition: saga }),
        kind => kind.status_after().map(SummaryChange::Status),
    }
}

/// A record's fields as its `detail` column holds them.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn detail_of(record: &SagaRecord) -> Result<String, StoreError> {
    record.kind.detail_json().map_err(|e| {
        StoreError::Corrupt(format!(
            "saga {} record {} cannot be written: {e}",
            record.saga_id, record.seq
        ))
    })
}

/// A log row as the SQL stores read it, its columns not yet checked.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) struct LogRow<'a> {
    pub saga_id: &'a str,
    pub seq: i64,
    pub kind: &'a str,
    pub at_ms: i64,
    pub step: Option<String>,
    pub attempt: Option<i64>,
    pub detail: &'a str,
    pub node: Option<String>,
    pub epoch: Option<i64>,
}

/// A log row as a typed record; a row that does not read as one is `Corrupt`.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn parse_record(row: LogRow<'_>) -> Result<SagaRecord, StoreError> {
    let LogRow {
        saga_id,
        seq,
        kind,
        at_ms,
        step,
        attempt,
        detail,
        node,
        epoch,
    } = row;
    Ok(SagaRecord {
        saga_id: saga_id
            .parse()
            .map_err(|e| StoreError::Corrupt(format!("saga id {saga_id:?}: {e}")))?,
        seq: u64::try_from(seq).map_err(|_| StoreError::Corrupt(format!("seq {seq}")))?,
        kind: RecordKind::from_parts(kind, detail).map_err(|e| {
            StoreError::Corrupt(format!("saga {saga_id} record {seq} ({kind}): {e}"))
        })?,
        at_ms,
        step,
        attempt: attempt.map(|a| a as u32),
        node: node.map(std::sync::Arc::from),
        epoch: epoch
            .map(|e| u64::try_from(e).map_err(|_| StoreError::Corrupt(format!("epoch {e}"))))
            .transpose()?,
    })
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn parse_summary(
    saga_id: &str,
    definition: String,
    status: &str,
    started_at_ms: i64,
    finished_at_ms: Option<i64>,
) -> Result<SagaSummary, StoreError> {
    Ok(SagaSummary {
        saga_id: saga_id
            .parse()
            .map_err(|e| StoreError::Corrupt(format!("saga id {saga_id:?}: {e}")))?,
        definition,
        status: status.parse().map_err(StoreError::Corrupt)?,
        started_at_ms,
        finished_at_ms,
    })
}

/// A claimed row (`saga_id`, `epoch`) as the SQL stores read it.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn parse_claimed(saga_id: &str, epoch: i64) -> Result<Claimed, StoreError> {
    Ok(Claimed {
        saga_id: saga_id
            .parse()
            .map_err(|e| StoreError::Corrupt(format!("saga id {saga_id:?}: {e}")))?,
        epoch: u64::try_from(epoch).map_err(|_| StoreError::Corrupt(format!("epoch {epoch}")))?,
    })
}

pub(crate) fn lease_until(lease: Duration) -> i64 {
    crate::record::now_ms() + lease.as_millis() as i64
}

/// Whether `record` may be appended to a saga whose row says `owner` holds it at `epoch`: a
/// record with no epoch is not fenced; one with an epoch needs its own node there, at that
/// epoch. Shared by the three stores, so they fence alike.
pub(crate) fn fence_allows(record: &SagaRecord, owner: Option<&str>, epoch: i64) -> bool {
    match record.epoch {
        None => true,
        Some(e) => owner.is_some() && owner == record.node.as_deref() && epoch == e as i64,
    }
}
