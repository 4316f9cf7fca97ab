//! A crash loop leaves no orphan: the shop killed under load and again and again during its
//! recovery, each time within the lease its predecessor took on the sagas, and the process that
//! survives finishes every saga without another restart, as its faults imply, with every
//! service agreeing.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use saga_shop_tests::server::ShopServer;
use saga_shop_tests::shop::{Shop, order};
use serde_json::{Value, json};
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{Connection, Row};

/// Short, so the test waits out a few leases in seconds; long enough that each restart below
/// comes well within the lease its killed predecessor had just taken.
const LEASE_SECS: &str = "4";
/// Every product's stock, so that no order is refused for want of it and the stock left says
/// exactly which orders were kept.
const STOCK: i64 = 100_000;
const SKUS: [&str; 4] = ["KB-01", "MS-02", "LP-09", "CB-12"];
const STEPS: [&str; 4] = [
    "place_order",
    "create_invoice",
    "process_payment",
    "ship_order",
];

/// An order placed, and what its faults imply.
struct Placed {
    order_id: String,
    saga_id: String,
    sku: &'static str,
    qty: i64,
    /// The step whose action refuses (so the saga is compensated), if any.
    fails_at: Option<usize>,
}

/// The `i`-th order's faults: a quarter plain, a quarter slow, a half slow and then refused at
/// a later step, so that many are in flight (in a `delay`) whenever the server is killed.
fn faults(i: usize) -> (Value, Option<usize>) {
    let slow = i % 3; // place_order, create_invoice or process_payment
    let delay = json!({"kind": "delay", "ms": 1500});
    match i % 4 {
        0 => (json!({}), None),
        1 => (json!({ STEPS[slow]: delay }), None),
        _ => {
            let fails_at = slow + 1 + i % (3 - slow);
            (
                json!({ STEPS[slow]: delay, STEPS[fails_at]: {"kind": "fail"} }),
                Some(fails_at),
            )
        }
    }
}

async fn place_orders(shop: &Shop, from: usize, n: usize) -> Vec<Placed> {
    let orders = (from..from + n).map(|i| async move {
        let (faults, fails_at) = faults(i);
        let (sku, qty) = (SKUS[i % SKUS.len()], 1 + (i % 2) as i64);
        let accepted = shop.buy(&order(sku, qty, faults)).await.unwrap();
        Placed {
            order_id: accepted.order_id,
            saga_id: accepted.saga_id,
            sku,
            qty,
            fails_at,
        }
    });
    futures_util::future::join_all(orders).await
}

/// The owners of the unfinished sagas, read straight from the saga log.
async fn owners(dir: &Path) -> (usize, HashSet<String>) {
    let options = SqliteConnectOptions::new()
        .filename(dir.join("saga-shop.db"))
        .read_only(true);
    let mut conn = SqliteConnection::connect_with(&options).await.unwrap();
    let rows = sqlx::query("SELECT owner FROM sagas WHERE status IN ('running', 'compensating')")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    let owners = rows
        .iter()
        .filter_map(|r| r.get::<Option<String>, _>("owner"))
        .collect();
    (rows.len(), owners)
}

/// Poll `done` until it holds; panics with `what` after `within`.
async fn wait_for<F: AsyncFn() -> bool>(within: Duration, what: &str, done: F) {
    let deadline = Instant::now() + within;
    while !done().await {
        assert!(Instant::now() < deadline, "{what} within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_loop_ends_with_every_saga_finished_by_the_process_that_survives() {
    let dir = saga_shop_tests::server::scratch_dir("orphans");
    let stock = STOCK.to_string();
    let args = ["--lease-secs", LEASE_SECS, "--seed-stock", &stock];

    // Killed twice under load, right after its last order was accepted.
    let mut placed = Vec::new();
    for round in 0..2 {
        let mut server = ShopServer::start_in(dir.clone(), &args).unwrap();
        placed.extend(place_orders(&Shop::new(&server.url), round * 40, 40).await);
        server.kill();
    }
    // Then three times during recovery: as soon as the new process holds a saga. Its leases
    // outlive it and the next process starts within them, so that one can only take them over
    // once they expired, while it runs.
    for _ in 0..3 {
        let (_, before) = owners(&dir).await;
        let mut server = ShopServer::start_in(dir.clone(), &args).unwrap();
        let took_over = "the restarted server takes over sagas (those its killed predecessor \
                         held, once that lease expired)";
        wait_for(Duration::from_secs(30), took_over, async || {
            owners(&dir).await.1.difference(&before).next().is_some()
        })
        .await;
        server.kill();
    }
    let (unfinished, _) = owners(&dir).await;
    assert!(unfinished > 0, "the crash loop left sagas to finish");

    // The survivor: no further restart.
    let server = ShopServer::start_in(dir.clone(), &args).unwrap();
    let shop = Shop::new(&server.url);
    let unfinished = |s: &str| s == "running" || s == "compensating";
    let mut status: HashMap<String, String> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        for p in &placed {
            if status.get(&p.saga_id).is_none_or(|s| unfinished(s)) {
                let saga = shop.saga(&p.saga_id).await.unwrap();
                status.insert(p.saga_id.clone(), saga.status.to_string());
            }
        }
        let left: Vec<&String> = status
            .iter()
            .filter(|(_, s)| unfinished(s))
            .map(|(id, _)| id)
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} sagas are still unfinished, with nobody driving them: {left:?}",
            left.len(),
            placed.len()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    let mut kept: HashMap<&str, i64> = HashMap::new();
    for p in &placed {
        let want = if p.fails_at.is_some() {
            "compensated"
        } else {
            "completed"
        };
        assert_eq!(status[&p.saga_id], want, "saga {}", p.saga_id);
        let view = shop.order_view(&p.order_id).await.unwrap();
        let total = view.total_cents;
        let invoice = view.invoice.map(|i| (i.status, i.total_cents));
        let payment = view
            .payment
            .map(|p| (p.status, p.amount_cents, p.refunded_cents));
        let shipment = view.shipment.map(|s| s.status);
        let seen = (view.status.as_str(), invoice, payment, shipment);
        let invoiced = |status: &str| Some((status.to_string(), total));
        match p.fails_at {
            None => {
                *kept.entry(p.sku).or_default() += p.qty;
                assert_eq!(
                    seen,
                    (
                        "confirmed",
                        invoiced("issued"),
                        Some(("captured".into(), total, 0)),
                        Some("scheduled".into()),
                    ),
                    "order {}",
                    p.order_id
                );
            }
            // Every step before the refusing one undone; it and those after it never applied.
            Some(k) => assert_eq!(
                seen,
                (
                    "cancelled",
                    (k > 1).then(|| invoiced("void")).flatten(),
                    (k > 2).then(|| ("refunded".into(), total, total)),
                    None,
                ),
                "order {} refused at {}",
                p.order_id,
                STEPS[k]
            ),
        }
    }
    for sku in SKUS {
        assert_eq!(
            shop.stock(sku).await.unwrap(),
            STOCK - kept.get(sku).copied().unwrap_or(0),
            "stock of {sku}: the orders service agrees with the sagas' outcomes"
        );
    }
}
