//! Several engines on one store, as several nodes on one PostgreSQL database (and on the memory
//! store made to be shared, which holds the same contract plainly): a saga is owned by the node
//! that started it, leases are renewed while it drives it, a node whose lease expired or that
//! handed its sagas back loses them to another, which resumes them from the log, and a node
//! that lost a saga cannot write into it. Judged from the log: every record names its node and
//! the epoch it held the saga under.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use saga_engine::{
    Claim, Engine, EngineConfig, RecordKind, SagaDefinition, SagaId, SagaRecord, SagaStatus, Step,
    StepError,
};
use serde_json::json;
use support::{Backend, FreshStore, fresh_store_for_nodes};
use tokio::sync::watch;

/// A node on `store`: a `gate` saga of two steps, the first waiting until `open` says so.
fn node(store: &FreshStore, id: &str, lease: Duration, open: watch::Receiver<bool>) -> Engine {
    let engine = Engine::with_shared_store(
        Arc::clone(store),
        EngineConfig {
            node_id: id.to_string(),
            lease,
            claim_every: lease / 3,
            takeover_every: Duration::from_millis(50),
            elsewhere_poll: Duration::from_millis(50),
            ..EngineConfig::default()
        },
    );
    let wait = Step::new("wait").action(move |_| {
        let mut open = open.clone();
        async move {
            let _ = open.wait_for(|&open| open).await;
            Ok::<_, StepError>(())
        }
    });
    let then = Step::new("then").action(|_| async { Ok::<_, StepError>(()) });
    engine.register(SagaDefinition::new("gate", vec![wait, then]).expect("a valid definition"));
    engine
}

/// Run `engine`'s background work (claims, renewals, takeovers, following the others) until
/// the handle is aborted: a node alive.
fn alive(engine: &Engine) -> tokio::task::JoinHandle<()> {
    let engine = engine.clone();
    tokio::spawn(async move {
        tokio::join!(engine.keep_recovering(), engine.follow_others());
    })
}

/// Nodes a and b on `store`, both alive, their `gate` steps waiting until `open` says so.
struct Pair {
    open: watch::Sender<bool>,
    a: Engine,
    b: Engine,
    a_alive: tokio::task::JoinHandle<()>,
    b_alive: tokio::task::JoinHandle<()>,
}

fn pair(store: &FreshStore, lease: Duration) -> Pair {
    let (open, gate) = watch::channel(false);
    let a = node(store, "node-a", lease, gate.clone());
    let b = node(store, "node-b", lease, gate);
    let (a_alive, b_alive) = (alive(&a), alive(&b));
    Pair {
        open,
        a,
        b,
        a_alive,
        b_alive,
    }
}

async fn wait_until<F: std::future::Future<Output = bool>>(
    what: &str,
    within: Duration,
    mut check: impl FnMut() -> F,
) {
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Within each saga's log, the node changes only where the epoch grows, and the epoch never
/// shrinks: no two nodes wrote for the same moment of a saga.
fn assert_one_writer_per_epoch(log: &[SagaRecord]) {
    for pair in log.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        assert!(b.epoch >= a.epoch, "the epoch went back: {a:?} then {b:?}");
        if a.node != b.node {
            assert!(
                b.epoch > a.epoch,
                "another node wrote at the same epoch: {a:?} then {b:?}"
            );
        }
    }
}

/// A saga is its starting node's from its first record: another node claiming all the while
/// (its start-up recovery, its renewals, its takeovers) gets nothing while the lease is renewed,
/// over several lease lengths, and the saga ends with every record written by its starter.
async fn a_saga_is_owned_from_its_first_record_and_its_lease_renewed(backend: Backend) {
    let Some(store) = fresh_store_for_nodes(backend, "owned").await else {
        return;
    };
    let lease = Duration::from_millis(400);
    let Pair {
        open,
        a,
        b,
        a_alive,
        b_alive,
    } = pair(&store, lease);
    let id = a.start("gate", &json!({})).await.expect("started");
    assert_eq!(
        b.recover().await,
        Ok(0),
        "a saga just started is not an orphan"
    );
    let watching = Instant::now();
    while watching.elapsed() < 4 * lease {
        let taken = store.claim("node-c", lease, Claim::Orphans).await;
        assert_eq!(
            taken,
            Ok(vec![]),
            "a saga whose node renews its lease was taken"
        );
        tokio::time::sleep(lease / 8).await;
    }
    assert_eq!(b.running(), 0, "node b drove nothing");
    open.send_replace(true);
    let status = tokio::time::timeout(Duration::from_secs(10), a.wait_finished(id)).await;
    assert_eq!(status.expect("finished"), Ok(SagaStatus::Completed));
    let log = store.saga_records(id, 0).await.expect("read");
    assert!(
        log.iter()
            .all(|r| r.node.as_deref() == Some("node-a") && r.epoch == Some(1)),
        "every record by node a under its first lease: {log:?}"
    );
    a_alive.abort();
    b_alive.abort();
}

/// A node that stops renewing (dead, paused, cut off) loses its saga once the lease expired:
/// another node takes it over and finishes it from the log; the first node, waking up, is
/// fenced at its next record and stops driving it, and nothing it does lands in the log.
async fn an_expired_lease_is_taken_over_and_the_old_driver_is_fenced(backend: Backend) {
    let Some(store) = fresh_store_for_nodes(backend, "takeover").await else {
        return;
    };
    let lease = Duration::from_millis(400);
    let Pair {
        open,
        a,
        b,
        a_alive,
        b_alive,
    } = pair(&store, lease);
    let id = a.start("gate", &json!({})).await.expect("started");
    // Node a stops renewing (its background work dies) but its driver still waits in the step.
    a_alive.abort();
    let stopped = Instant::now();
    wait_until(
        "node b takes the saga over",
        Duration::from_secs(10),
        || {
            let b = b.clone();
            async move { b.running() == 1 }
        },
    )
    .await;
    assert!(
        stopped.elapsed() >= lease / 2,
        "taken over after {:?}, before the lease could have expired",
        stopped.elapsed()
    );
    // Both drivers now pass the step: a's record is refused, b's goes in.
    open.send_replace(true);
    let status = tokio::time::timeout(Duration::from_secs(10), b.wait_finished(id)).await;
    assert_eq!(
        status.expect("finished by node b"),
        Ok(SagaStatus::Completed)
    );
    wait_until(
        "node a stops driving the saga",
        Duration::from_secs(10),
        || {
            let a = a.clone();
            async move { a.running() == 0 }
        },
    )
    .await;
    let log = store.saga_records(id, 0).await.expect("read");
    assert_one_writer_per_epoch(&log);
    let by_a: Vec<u64> = (log.iter())
        .filter(|r| r.node.as_deref() == Some("node-a"))
        .map(|r| r.seq)
        .collect();
    assert_eq!(
        by_a,
        [1, 2],
        "node a wrote the start and the first step's start, nothing after"
    );
    assert!(
        log[2..]
            .iter()
            .all(|r| r.node.as_deref() == Some("node-b") && r.epoch == Some(2)),
        "the rest is node b's, under the next epoch: {log:?}"
    );
    let ends = log.iter().filter(|r| r.kind.is_terminal()).count();
    assert_eq!(ends, 1, "one end");
    b_alive.abort();
}

/// A node stopping cleanly hands its sagas back: another node resumes them at its next look
/// for orphans, long before their lease (30 s here) would have expired.
async fn a_node_handing_its_sagas_back_lets_another_take_them_at_once(backend: Backend) {
    let Some(store) = fresh_store_for_nodes(backend, "handback").await else {
        return;
    };
    let lease = Duration::from_secs(30);
    let Pair {
        open,
        a,
        b,
        a_alive,
        b_alive,
    } = pair(&store, lease);
    let ids = [
        a.start("gate", &json!({})).await.expect("started"),
        a.start("gate", &json!({})).await.expect("started"),
    ];
    a_alive.abort();
    assert_eq!(a.hand_back().await, Ok(2));
    wait_until("node b takes both sagas", Duration::from_secs(5), || {
        let b = b.clone();
        async move { b.running() == 2 }
    })
    .await;
    open.send_replace(true);
    for id in ids {
        let status = tokio::time::timeout(Duration::from_secs(10), b.wait_finished(id)).await;
        assert_eq!(status.expect("finished"), Ok(SagaStatus::Completed));
        let log = store.saga_records(id, 0).await.expect("read");
        assert_one_writer_per_epoch(&log);
        assert_eq!(log.last().and_then(|r| r.node.as_deref()), Some("node-b"));
    }
    b_alive.abort();
}

/// Every node's feed carries every node's records, once each, in one order: the same on all
/// nodes, positions 1, 2, 3, … with no hole, and a feed resumed on another node from a
/// position goes on from there.
async fn every_node_announces_every_nodes_records_in_one_order(backend: Backend) {
    let Some(store) = fresh_store_for_nodes(backend, "feeds").await else {
        return;
    };
    let lease = Duration::from_secs(30);
    let (_open, gate) = watch::channel(true);
    let nodes: Vec<Engine> = ["node-a", "node-b", "node-c"]
        .into_iter()
        .map(|id| node(&store, id, lease, gate.clone()))
        .collect();
    let background: Vec<_> = nodes.iter().map(alive).collect();
    // Following begins once each node listens: wait until a saga started now reaches them all.
    let mut feeds: Vec<_> = nodes.iter().map(|n| n.subscribe_all(Some(0))).collect();
    let per_node = 20;
    let starts = nodes.iter().flat_map(|n| {
        (0..per_node).map(move |_| {
            let n = n.clone();
            async move { n.run("gate", &json!({})).await }
        })
    });
    for ran in futures_util::future::join_all(starts).await {
        assert_eq!(ran.expect("ran").1, SagaStatus::Completed);
    }
    let total = store.last_position().await.expect("read");
    // Per saga: started, 2 × (step started, step succeeded), completed.
    assert_eq!(total, 3 * per_node * 6);
    let logged = store.records_after(0, 10_000).await.expect("read");
    for (i, feed) in feeds.iter_mut().enumerate() {
        let seen: Vec<_> = tokio::time::timeout(
            Duration::from_secs(10),
            feed.by_ref()
                .take(total as usize)
                .map(|c| (*c.expect("no error")).clone())
                .collect::<Vec<_>>(),
        )
        .await
        .unwrap_or_else(|_| panic!("node {i}'s feed carries every record"));
        assert_eq!(seen, logged, "node {i}'s feed is the log, in its order");
    }
    let positions: Vec<i64> = logged.iter().map(|c| c.position).collect();
    assert_eq!(
        positions,
        (1..=total).collect::<Vec<_>>(),
        "dense positions"
    );
    // Resumed on another node from the middle: the rest, once each.
    let half = total / 2;
    let rest: Vec<_> = nodes[2]
        .subscribe_all(Some(half))
        .take((total - half) as usize)
        .map(|c| c.expect("no error").position)
        .collect()
        .await;
    assert_eq!(rest, (half + 1..=total).collect::<Vec<_>>());
    // And live: a saga on node a reaches a feed on node c subscribed from now.
    let mut live = nodes[2].subscribe_all(None);
    let id: SagaId = nodes[0].start("gate", &json!({})).await.expect("started");
    let first = tokio::time::timeout(Duration::from_secs(10), live.next())
        .await
        .expect("node c hears of node a's saga live")
        .expect("a record")
        .expect("no error");
    assert_eq!(first.record.saga_id, id);
    assert!(matches!(first.record.kind, RecordKind::SagaStarted { .. }));
    for b in background {
        b.abort();
    }
}

macro_rules! nodes_suite {
    ($($test:ident),* $(,)?) => {
        mod memory {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() { super::$test(super::Backend::Memory).await })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() { super::$test(super::Backend::Postgres).await })*
        }
    };
}

nodes_suite!(
    a_saga_is_owned_from_its_first_record_and_its_lease_renewed,
    an_expired_lease_is_taken_over_and_the_old_driver_is_fenced,
    a_node_handing_its_sagas_back_lets_another_take_them_at_once,
);

/// Only a store other processes write has other nodes' commits to follow.
mod postgres_feeds {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_node_announces_every_nodes_records_in_one_order() {
        super::every_node_announces_every_nodes_records_in_one_order(super::Backend::Postgres).await
    }
}
