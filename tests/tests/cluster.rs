//! Several `saga-shop` processes on one PostgreSQL database (DESIGN.md §3, "Several nodes"):
//! a node killed mid-load, paused past its lease, or stopped with SIGTERM, and the others
//! finishing its sagas with every effect applied once; one event stream, the same on every node.
//!
//! Real processes on real PostgreSQL, each test on a schema prefix of its own that is dropped
//! afterwards. Without `SAGA_TEST_POSTGRES_URL` they print `SKIPPED` and pass.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use saga_shop_tests::cluster::{Cluster, LogRecord, by_saga, check_fencing, now_ms, wait_finished};
use saga_shop_tests::shop::{Shop, order};
use serde_json::{Value, json};
use shared::{SagaEvent, SagaState};

/// The tests here run one at a time: each runs three servers and PostgreSQL on a machine that
/// may have two cores, and a node starved of CPU by another test's load misses its heartbeat,
/// which is what `paused` and `handed back` below must tell apart from a lease running out.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Every product's stock, so that no order is refused for want of it and the stock left says
/// exactly which orders were kept.
const STOCK: i64 = 100_000;
const STOCK_FLAG: [&str; 2] = ["--seed-stock", "100000"];
const SKUS: [&str; 4] = ["KB-01", "MS-02", "LP-09", "CB-12"];
const STEPS: [&str; 4] = [
    "place_order",
    "create_invoice",
    "process_payment",
    "ship_order",
];

/// An order placed, and what its faults imply.
#[derive(Debug, Clone)]
struct Placed {
    order_id: String,
    saga_id: String,
    /// The node whose API accepted it, and which drives it from its first record.
    node: String,
    sku: &'static str,
    qty: i64,
    /// The step whose action refuses (so the saga is compensated), if any.
    fails_at: Option<usize>,
}

impl Placed {
    fn expected(&self) -> SagaState {
        match self.fails_at {
            Some(_) => SagaState::Compensated,
            None => SagaState::Completed,
        }
    }
}

/// The `i`-th order of the mixed load: plain, slow (so that many sagas are in flight at any
/// moment), retried (a `transient` fault, one failure, within the step's three attempts even
/// if a takeover costs one), and refused at a later step (compensated, the compensation
/// itself failing twice first for some). Never refused at `place_order`, so every order is
/// in the orders service and its stock can be counted.
fn mixed_faults(i: usize) -> (Value, Option<usize>) {
    let delay = |ms: u64| json!({"kind": "delay", "ms": ms});
    match i % 5 {
        0 => (json!({}), None),
        1 => (
            json!({ STEPS[i % 3]: delay(200 + 100 * (i % 6) as u64) }),
            None,
        ),
        2 => {
            let flaky = 1 + i % 3;
            (
                json!({ "place_order": delay(400), STEPS[flaky]: {"kind": "transient", "times": 1} }),
                None,
            )
        }
        3 => {
            let slow = i % 3;
            let fails_at = slow + 1 + i % (3 - slow);
            (
                json!({ STEPS[slow]: delay(500), STEPS[fails_at]: {"kind": "fail"} }),
                Some(fails_at),
            )
        }
        _ => {
            let fails_at = 1 + i % 3;
            let mut faults = json!({ STEPS[fails_at]: {"kind": "fail"} });
            if fails_at > 1 {
                faults[STEPS[0]] = delay(300);
            }
            faults[STEPS[fails_at - 1]] = json!({"kind": "compensation_transient", "times": 2});
            (faults, Some(fails_at))
        }
    }
}

/// Long steps for the tests that catch a node in the middle of its sagas: three slow actions
/// (each within the step's 3 s limit), every other saga refused at shipping and unwound.
fn slow_faults(i: usize) -> (Value, Option<usize>) {
    let delay = json!({"kind": "delay", "ms": 1500});
    let mut faults =
        json!({ "place_order": delay, "create_invoice": delay, "process_payment": delay });
    if i % 2 == 1 {
        faults["ship_order"] = json!({"kind": "fail"});
        (faults, Some(3))
    } else {
        (faults, None)
    }
}

/// Place orders `range` with `faults`, the `i`-th on `shops[i % shops.len()]`, a few at a
/// time.
async fn place(
    shops: &[(String, Shop)],
    range: std::ops::Range<usize>,
    faults: fn(usize) -> (Value, Option<usize>),
) -> anyhow::Result<Vec<Placed>> {
    let orders = range.map(|i| async move {
        let (node, shop) = &shops[i % shops.len()];
        let (faults, fails_at) = faults(i);
        let (sku, qty) = (SKUS[i % SKUS.len()], 1 + (i % 2) as i64);
        let accepted = shop.buy(&order(sku, qty, faults)).await?;
        Ok::<_, anyhow::Error>(Placed {
            order_id: accepted.order_id,
            saga_id: accepted.saga_id,
            node: node.clone(),
            sku,
            qty,
            fails_at,
        })
    });
    futures_util::stream::iter(orders)
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

fn shops_of(cluster: &Cluster, ids: &[&str]) -> Vec<(String, Shop)> {
    ids.iter()
        .map(|id| (id.to_string(), cluster.node(id).shop()))
        .collect()
}

fn saga_ids(placed: &[Placed]) -> Vec<String> {
    placed.iter().map(|p| p.saga_id.clone()).collect()
}

/// Every saga in the state its faults imply, and each service holding what that state means,
/// each effect once: the order confirmed or cancelled, the invoice issued or void, the
/// payment captured or refunded in full (never twice), the shipment scheduled or never made;
/// and the stock of every product down by exactly the orders kept.
async fn check_outcomes(
    shop: &Shop,
    placed: &[Placed],
    states: &HashMap<String, SagaState>,
) -> anyhow::Result<()> {
    let mut kept: HashMap<&str, i64> = HashMap::new();
    for p in placed {
        anyhow::ensure!(
            states[&p.saga_id] == p.expected(),
            "saga {} (accepted by {}) ended {}, its faults imply {}",
            p.saga_id,
            p.node,
            states[&p.saga_id],
            p.expected()
        );
        let view = shop.order_view(&p.order_id).await?;
        let total = view.total_cents;
        let invoice = view.invoice.map(|i| (i.status, i.total_cents));
        let payment = view
            .payment
            .map(|p| (p.status, p.amount_cents, p.refunded_cents));
        let shipment = view.shipment.map(|s| s.status);
        let notified = view.notification.is_some();
        let seen = (view.status.as_str(), invoice, payment, shipment, notified);
        let invoiced = |status: &str| Some((status.to_string(), total));
        let want = match p.fails_at {
            None => {
                *kept.entry(p.sku).or_default() += p.qty;
                (
                    "confirmed",
                    invoiced("issued"),
                    Some(("captured".to_string(), total, 0)),
                    Some("scheduled".to_string()),
                    true,
                )
            }
            // Every step before the refusing one undone; it and those after it never applied.
            Some(k) => (
                "cancelled",
                (k > 1).then(|| invoiced("void")).flatten(),
                (k > 2).then(|| ("refunded".to_string(), total, total)),
                None,
                false,
            ),
        };
        anyhow::ensure!(
            seen == want,
            "order {} (saga {}, refused at {:?}): the services hold {seen:?}, not {want:?}",
            p.order_id,
            p.saga_id,
            p.fails_at.map(|k| STEPS[k])
        );
    }
    for sku in SKUS {
        let left = shop.stock(sku).await?;
        let want = STOCK - kept.get(sku).copied().unwrap_or(0);
        anyhow::ensure!(
            left == want,
            "stock of {sku} is {left}, the sagas' outcomes leave {want}"
        );
    }
    Ok(())
}

/// Rows of `table` in the service schema `service` (a name this test made).
async fn count_rows(cluster: &Cluster, service: &str, table: &str) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT COUNT(*) FROM {}.{table}",
        cluster.schema(service)
    )))
    .fetch_one(&cluster.db)
    .await?)
}

/// Wait until every saga of `sagas` has a record written by a node other than `node`; the
/// log then.
async fn wait_taken_over(
    cluster: &Cluster,
    sagas: &[String],
    node: &str,
    within: Duration,
) -> anyhow::Result<Vec<LogRecord>> {
    let mut log = Vec::new();
    saga_shop_tests::cluster::wait_for(
        within,
        "every saga taken over by another node",
        async || {
            log = cluster.log().await?;
            let by = by_saga(&log);
            Ok(sagas.iter().all(|id| {
                by.get(id.as_str())
                    .is_some_and(|rs| rs.iter().any(|r| r.node.as_deref() != Some(node)))
            }))
        },
    )
    .await?;
    Ok(log)
}

/// Wait until every saga of `placed` has logged at least its first step's start, so each is
/// in the middle of its run.
async fn wait_running(cluster: &Cluster, placed: &[Placed]) -> anyhow::Result<()> {
    saga_shop_tests::cluster::wait_for(
        Duration::from_secs(20),
        "every saga started its first step",
        async || {
            let log = cluster.log().await?;
            let by = by_saga(&log);
            Ok(placed.iter().all(|p| {
                by.get(p.saga_id.as_str())
                    .is_some_and(|rs| rs.iter().any(|r| r.kind == "step_started"))
            }))
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_finish_every_saga_once_after_one_is_killed_mid_load() {
    let _serial = SERIAL.lock().await;
    let Some(mut cluster) = Cluster::start("cluster kill -9", 3, 2, &STOCK_FLAG)
        .await
        .unwrap()
    else {
        return;
    };
    let all = shops_of(&cluster, &["node-a", "node-b", "node-c"]);
    let survivors = shops_of(&cluster, &["node-a", "node-b"]);

    // 200 orders over the three nodes; then node-c is killed while 100 more go to the others.
    let mut placed = place(&all, 0..200, mixed_faults).await.unwrap();
    let (more, (killed_ms, leases)) =
        tokio::join!(place(&survivors, 200..300, mixed_faults), async {
            cluster.node_mut("node-c").kill();
            let killed_ms = now_ms();
            // The leases node-c held as it died: nobody can renew them now.
            (killed_ms, cluster.leases().await.unwrap())
        });
    placed.extend(more.unwrap());
    let held: HashMap<&String, i64> = leases
        .iter()
        .filter(|(_, l)| l.owner.as_deref() == Some("node-c"))
        .map(|(id, l)| (id, l.until_ms.unwrap_or(i64::MIN)))
        .collect();
    assert!(
        !held.is_empty(),
        "node-c held no unfinished saga when killed: the test proves nothing"
    );

    let shop = cluster.node("node-a").shop();
    let states = wait_finished(&shop, &saga_ids(&placed), Duration::from_secs(45))
        .await
        .unwrap();
    check_outcomes(&shop, &placed, &states).await.unwrap();
    assert_eq!(
        count_rows(&cluster, "orders", "orders").await.unwrap(),
        placed.len() as i64,
        "one order row per purchase"
    );

    let log = cluster.log().await.unwrap();
    let takeovers = check_fencing(&log).unwrap();
    for r in log.iter().filter(|r| r.node.as_deref() == Some("node-c")) {
        assert!(
            r.at_ms <= killed_ms,
            "node-c wrote seq {} of {} after it was killed",
            r.seq,
            r.saga_id
        );
    }
    // Each saga node-c held was taken over, and only once its lease had run out.
    for (saga, until_ms) in &held {
        let t = takeovers
            .iter()
            .find(|t| &&t.saga_id == saga && t.from == "node-c")
            .unwrap_or_else(|| panic!("saga {saga}, held by node-c, never changed hands"));
        assert!(
            t.first_after.at_ms >= *until_ms,
            "{} took saga {saga} over at {} ms, before node-c's lease ran out at {until_ms} ms",
            t.to,
            t.first_after.at_ms
        );
    }
    eprintln!(
        "{} sagas, {} held by node-c at the kill, {} changes of hands",
        placed.len(),
        held.len(),
        takeovers.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_paused_past_its_lease_loses_its_sagas_and_writes_nothing_more_into_them() {
    let _serial = SERIAL.lock().await;
    const LEASE: Duration = Duration::from_secs(2);
    let Some(cluster) = Cluster::start("cluster SIGSTOP", 3, LEASE.as_secs(), &STOCK_FLAG)
        .await
        .unwrap()
    else {
        return;
    };
    let paused = cluster.node("node-b");
    let placed = place(&shops_of(&cluster, &["node-b"]), 0..6, slow_faults)
        .await
        .unwrap();
    wait_running(&cluster, &placed).await.unwrap();

    paused.stop().unwrap();
    let stopped = Instant::now();
    // The leases node-b held as it froze. A renewal it had already sent may still land, so
    // the true ends are these or later: a takeover must come after them at least.
    let leases = cluster.leases().await;
    let ids = saga_ids(&placed);
    let shop = cluster.node("node-a").shop();
    let result = async {
        let states = wait_finished(&shop, &ids, Duration::from_secs(40)).await?;
        // Paused for two leases at least, however fast the others were.
        tokio::time::sleep_until((stopped + 2 * LEASE).into()).await;
        // The log as the others left it, before node-b can do anything again.
        Ok::<_, anyhow::Error>((states, cluster.log().await?))
    }
    .await;
    // Resumed whatever happened, so a failure below does not leave a frozen process behind.
    let logged_before = paused.log().len();
    paused.cont().unwrap();
    let (states, before) = result.unwrap();
    check_outcomes(&shop, &placed, &states).await.unwrap();

    let takeovers = check_fencing(&before).unwrap();
    let taken: HashMap<&str, &saga_shop_tests::cluster::Takeover> = takeovers
        .iter()
        .filter(|t| t.from == "node-b")
        .map(|t| (t.saga_id.as_str(), t))
        .collect();
    let leases = leases.unwrap();
    for id in &ids {
        let t = taken.get(id.as_str()).unwrap_or_else(|| {
            panic!("saga {id} finished without changing hands while node-b was paused")
        });
        let held = leases
            .get(id)
            .filter(|l| l.owner.as_deref() == Some("node-b"));
        if let Some(until_ms) = held.and_then(|l| l.until_ms) {
            assert!(
                t.first_after.at_ms >= until_ms,
                "{} took saga {id} over at {} ms, before node-b's lease ran out at {until_ms} ms",
                t.to,
                t.first_after.at_ms
            );
        }
    }

    // Woken, node-b finds each saga it was driving owned by another node (its append refused,
    // or its lease gone) and says so, naming the saga: from then on it has stopped driving it.
    saga_shop_tests::cluster::wait_for(
        Duration::from_secs(15),
        "node-b logs a warning naming each saga it lost while paused",
        async || {
            let log = paused.log();
            let woken: Vec<&str> = log[logged_before..]
                .lines()
                .filter(|l| l.contains("WARN"))
                .collect();
            Ok(ids
                .iter()
                .all(|id| woken.iter().any(|l| l.contains(&format!("saga_id={id}")))))
        },
    )
    .await
    .unwrap();
    let after = cluster.log().await.unwrap();
    check_fencing(&after).unwrap();
    let (before, after) = (by_saga(&before), by_saga(&after));
    for id in &ids {
        let t = taken[id.as_str()];
        assert_eq!(
            before[id.as_str()].len(),
            after[id.as_str()].len(),
            "saga {id} grew after it finished"
        );
        for r in after[id.as_str()] {
            assert!(
                r.node.as_deref() != Some("node-b") || r.seq < t.first_after.seq,
                "node-b wrote seq {} (epoch {}) into saga {id} after {} took it over at seq {} (epoch {})",
                r.seq,
                r.epoch,
                t.to,
                t.first_after.seq,
                t.first_after.epoch
            );
        }
    }
    // node-b goes on: it serves, and drives a saga of its own to its end.
    let b = paused.shop();
    let health = b.request("/healthz").await.unwrap();
    assert_eq!(health.status(), 200, "node-b is healthy after its pause");
    let fresh = b.buy(&order("MS-02", 1, json!({}))).await.unwrap();
    let end = wait_finished(
        &b,
        std::slice::from_ref(&fresh.saga_id),
        Duration::from_secs(20),
    )
    .await
    .unwrap();
    assert_eq!(end[&fresh.saga_id], SagaState::Completed);
    let log = cluster.log().await.unwrap();
    assert!(
        by_saga(&log)[fresh.saga_id.as_str()]
            .iter()
            .all(|r| r.node.as_deref() == Some("node-b")),
        "node-b drove its new saga itself"
    );
}

/// What a subscriber to `/api/events` received, kept as it arrives.
type Received = Arc<Mutex<Vec<(u64, SagaEvent)>>>;

/// A subscriber's reading task: it ends only when its stream fails or ends, which is an error
/// here (the stream of the whole log never ends by itself).
type Reader = tokio::task::JoinHandle<anyhow::Result<()>>;

/// Read `shop`'s `/api/events` from the start into a list, for as long as the task runs.
/// With `hop`, after `hop.0` events it disconnects and goes on at `hop.1` with its
/// `Last-Event-ID`, as an `EventSource` whose node went away would through a load balancer.
fn subscribe(shop: Shop, hop: Option<(usize, Shop)>) -> (Received, Reader) {
    let received: Received = Arc::default();
    let kept = Arc::clone(&received);
    let task = tokio::spawn(async move {
        let push = |e| kept.lock().unwrap_or_else(PoisonError::into_inner).push(e);
        let mut stream = shop.log_stream(None).await?;
        let mut hop = hop;
        let mut count = 0;
        while let Some(event) = stream.next().await? {
            let last = event.0;
            push(event);
            count += 1;
            if let Some((_, next)) = hop.take_if(|(after, _)| count >= *after) {
                drop(stream);
                stream = next.log_stream(Some(last)).await?;
            }
        }
        anyhow::bail!("the server ended the stream")
    });
    (received, task)
}

/// What `received` holds once it has `want` events (or its reader stopped, or 20 s passed),
/// as (id, saga, seq). The reader is stopped.
async fn collected(
    name: &str,
    received: &Received,
    mut reader: Reader,
    want: usize,
) -> Vec<(u64, String, u64)> {
    let len = || {
        received
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    };
    let waited = saga_shop_tests::cluster::wait_for(
        Duration::from_secs(20),
        &format!("{name}'s stream carries all {want} records"),
        async || Ok(len() >= want || reader.is_finished()),
    )
    .await;
    let stopped = if reader.is_finished() {
        (&mut reader).await.ok().and_then(Result::err)
    } else {
        reader.abort();
        None
    };
    let got: Vec<(u64, String, u64)> = received
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .map(|(id, e)| (*id, e.saga_id.clone(), e.seq))
        .collect();
    if got.len() < want {
        panic!(
            "{name}'s stream carried {} of {want} records ({}; {})",
            got.len(),
            waited.err().map_or("".into(), |e| format!("{e:#}")),
            stopped.map_or("still reading".into(), |e| format!("it stopped: {e:#}")),
        );
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_streams_every_record_once_in_one_order_and_resumes_on_another() {
    let _serial = SERIAL.lock().await;
    let Some(cluster) = Cluster::start("cluster events", 3, 5, &STOCK_FLAG)
        .await
        .unwrap()
    else {
        return;
    };
    let node = |id: &str| cluster.node(id).shop();
    // Subscribed before anything happens: whatever arrives arrives live.
    let subscribers = [
        ("node-a", subscribe(node("node-a"), None)),
        ("node-b", subscribe(node("node-b"), None)),
        ("node-c", subscribe(node("node-c"), None)),
        (
            "node-a, then node-b",
            subscribe(node("node-a"), Some((60, node("node-b")))),
        ),
    ];
    let placed = place(
        &shops_of(&cluster, &["node-b", "node-c"]),
        0..40,
        mixed_faults,
    )
    .await
    .unwrap();
    let states = wait_finished(&node("node-a"), &saga_ids(&placed), Duration::from_secs(30))
        .await
        .unwrap();
    check_outcomes(&node("node-a"), &placed, &states)
        .await
        .unwrap();

    // The log as the database holds it, by position: what every stream must carry, each
    // record once, its position as its id.
    let mut log = cluster.log().await.unwrap();
    log.sort_by_key(|r| r.position);
    let want: Vec<(u64, String, u64)> = log
        .iter()
        .map(|r| (r.position as u64, r.saga_id.clone(), r.seq as u64))
        .collect();
    let dense: Vec<u64> = (1..=want.len() as u64).collect();
    assert_eq!(
        want.iter().map(|w| w.0).collect::<Vec<_>>(),
        dense,
        "the log's positions run 1, 2, 3… with no hole"
    );
    let mut writers: HashSet<String> = HashSet::new();
    for (name, (received, reader)) in subscribers {
        let got = collected(name, &received, reader, want.len()).await;
        assert_eq!(
            got, want,
            "{name}: every record once, ids strictly increasing by one, in the log's order"
        );
        if name == "node-a" {
            let received = received.lock().unwrap_or_else(PoisonError::into_inner);
            writers.extend(received.iter().filter_map(|(_, e)| e.node.clone()));
        }
    }
    // Node a carried node b's and node c's records as they were written.
    for writer in ["node-b", "node-c"] {
        assert!(
            writers.contains(writer),
            "node-a streamed no record of {writer}'s: {writers:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_stopped_with_sigterm_hands_its_sagas_to_the_others_within_seconds_not_a_lease() {
    let _serial = SERIAL.lock().await;
    /// Long, so that a pickup within [`BOUND`] can only be the hand-back, not an expiry.
    const LEASE_SECS: u64 = 30;
    /// "About a second", generously: far below the lease.
    const BOUND: Duration = Duration::from_secs(10);
    let Some(mut cluster) = Cluster::start("cluster SIGTERM", 3, LEASE_SECS, &STOCK_FLAG)
        .await
        .unwrap()
    else {
        return;
    };
    let placed = place(&shops_of(&cluster, &["node-c"]), 0..6, slow_faults)
        .await
        .unwrap();
    wait_running(&cluster, &placed).await.unwrap();

    let stopping = cluster.node_mut("node-c");
    let terminated_ms = now_ms();
    stopping.server.terminate().unwrap();
    stopping
        .server
        .wait_exit(Duration::from_secs(20))
        .expect("node-c exits on SIGTERM");
    let exited_ms = now_ms();
    let exited = Instant::now();

    let ids = saga_ids(&placed);
    let log = wait_taken_over(&cluster, &ids, "node-c", BOUND)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{e:#} (after node-c exited; {:.1} s so far, the lease is {LEASE_SECS} s)",
                exited.elapsed().as_secs_f64()
            )
        });
    let takeovers = check_fencing(&log).unwrap();
    // From the exit, as the bound is; from the signal, for the record (a node hands its
    // sagas back first, then drains its connections, so the others may start before it is gone).
    let (mut delays, mut from_signal) = (Vec::new(), Vec::new());
    for id in &ids {
        let t = takeovers
            .iter()
            .find(|t| &t.saga_id == id && t.from == "node-c")
            .unwrap_or_else(|| panic!("saga {id} never left node-c"));
        delays.push(t.first_after.at_ms - exited_ms);
        from_signal.push(t.first_after.at_ms - terminated_ms);
    }
    eprintln!(
        "picked up, in ms after node-c's SIGTERM: {from_signal:?}; after its exit: {delays:?}"
    );

    let shop = cluster.node("node-a").shop();
    let states = wait_finished(&shop, &ids, Duration::from_secs(30))
        .await
        .unwrap();
    check_outcomes(&shop, &placed, &states).await.unwrap();
    check_fencing(&cluster.log().await.unwrap()).unwrap();
}
