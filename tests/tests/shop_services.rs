//! The shop services against the real `saga-shop` binary, reached through the saga and over
//! their own routes (`/svc/{name}`): what a service does with a row of its database it cannot
//! read. The bad row is written straight into the service's SQLite file, as a bug, a failed
//! migration or a hand edit would leave it.

use std::time::Duration;

use saga_shop_tests::server::ShopServer;
use saga_shop_tests::shop::{Shop, order};
use serde_json::{Value, json};
use shared::SagaEvent;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{Connection, Executor};

/// The orders service's own database of `server` (`saga-shop.orders.db` beside the saga log).
async fn orders_db(server: &ShopServer) -> SqliteConnection {
    let options = SqliteConnectOptions::new()
        .filename(server.dir.join("saga-shop.orders.db"))
        .busy_timeout(Duration::from_secs(10));
    SqliteConnection::connect_with(&options)
        .await
        .expect("open the orders database")
}

async fn order_status(db: &mut SqliteConnection, order_id: &str) -> String {
    sqlx::query_scalar("SELECT status FROM orders WHERE order_id = $1")
        .bind(order_id)
        .fetch_one(db)
        .await
        .expect("the order's row")
}

async fn set_lines(db: &mut SqliteConnection, order_id: &str, lines: &str) {
    let changed = db
        .execute(
            sqlx::query("UPDATE orders SET lines = $1 WHERE order_id = $2")
                .bind(lines)
                .bind(order_id),
        )
        .await
        .expect("write the order's lines")
        .rows_affected();
    assert_eq!(changed, 1, "the order {order_id} is in the orders database");
}

/// `cancel_order` on an order whose `lines` hold no JSON. Read as "no lines", the order would
/// be marked cancelled with its stock still reserved, for good, and the saga would call that
/// compensated. Instead the service answers 500 and keeps nothing, the saga tries again until
/// its attempts run out and is left `stuck` for a person, and once the row is repaired the same
/// compensation (same key: a failure keeps nothing under it) cancels the order and releases
/// the stock.
#[tokio::test]
async fn cancelling_an_order_whose_lines_cannot_be_read_fails_and_is_retried() {
    let server = ShopServer::start(&[]).expect("start saga-shop");
    let shop = Shop::new(&server.url);
    let before = shop.stock("MS-02").await.unwrap();
    // The invoice takes long enough to damage the placed order; then the payment is refused,
    // so the order must be cancelled.
    let a = shop
        .buy(&order(
            "MS-02",
            2,
            json!({
                "create_invoice": {"kind": "delay", "ms": 2000},
                "process_payment": {"kind": "fail"},
            }),
        ))
        .await
        .unwrap();
    let first = shop.events(&a.saga_id, None, 3).await.unwrap();
    let placed = &first.last().expect("three events").1;
    assert_eq!(
        (placed.event.kind().as_str(), placed.step.as_deref()),
        ("step_succeeded", Some("place_order"))
    );
    let mut db = orders_db(&server).await;
    set_lines(&mut db, &a.order_id, "not json").await;

    let events = shop.finish(&a.saga_id).await.unwrap();
    let last = events.last().unwrap();
    assert_eq!(
        (last.event.kind().as_str(), last.step.as_deref()),
        ("saga_stuck", Some("place_order")),
        "{events:#?}"
    );
    let of_place_order = |kind: &str| -> Vec<&SagaEvent> {
        events
            .iter()
            .filter(|e| e.event.kind().as_str() == kind && e.step.as_deref() == Some("place_order"))
            .collect()
    };
    assert!(of_place_order("compensation_succeeded").is_empty());
    let failures = of_place_order("compensation_failed");
    assert_eq!(
        failures.len(),
        5,
        "every attempt failed, and was tried again"
    );
    let why = format!("the service cannot read the lines of order {}", a.order_id);
    for failure in &failures {
        assert_eq!(failure.event.error(), Some(why.as_str()), "{failure:?}");
    }
    // Still what it was: a pending order, its stock reserved.
    assert_eq!(order_status(&mut db, &a.order_id).await, "pending");
    assert_eq!(shop.stock("MS-02").await.unwrap(), before - 2);
    // Read over the service's route, the order is an error too, not an order without lines.
    let read = shop
        .request(&format!("/svc/orders/orders/{}", a.order_id))
        .await
        .unwrap();
    assert_eq!(read.status(), 500);
    assert_eq!(
        read.json::<Value>().await.unwrap(),
        json!({ "error": why, "field": null })
    );

    let lines = json!([
        {"sku": "MS-02", "name": "Wireless mouse", "qty": 2, "unit_price_cents": 3499}
    ]);
    set_lines(&mut db, &a.order_id, &lines.to_string()).await;
    let cancelled = shop
        .http
        .post(format!("{}/svc/orders/cancel_order", server.url))
        .header(
            "Idempotency-Key",
            format!("{}:place_order:compensation", a.saga_id),
        )
        .json(&json!({ "order_id": a.order_id, "fault": null }))
        .send()
        .await
        .unwrap();
    assert_eq!(cancelled.status(), 200);
    assert_eq!(
        cancelled.json::<Value>().await.unwrap(),
        json!({ "order_id": a.order_id, "status": "cancelled" })
    );
    assert_eq!(order_status(&mut db, &a.order_id).await, "cancelled");
    assert_eq!(shop.stock("MS-02").await.unwrap(), before);
    db.close().await.unwrap();
}

/// An order whose status is none the service knows is not taken for "not cancelled" either:
/// nothing is released on a guess.
#[tokio::test]
async fn cancelling_an_order_whose_status_cannot_be_read_changes_nothing() {
    let server = ShopServer::start(&[]).expect("start saga-shop");
    let shop = Shop::new(&server.url);
    let before = shop.stock("LP-09").await.unwrap();
    let a = shop.buy(&order("LP-09", 1, json!({}))).await.unwrap();
    let events = shop.finish(&a.saga_id).await.unwrap();
    assert_eq!(
        events.last().unwrap().event.kind().as_str(),
        "saga_completed"
    );
    let mut db = orders_db(&server).await;
    sqlx::query("UPDATE orders SET status = 'shipped?' WHERE order_id = $1")
        .bind(&a.order_id)
        .execute(&mut db)
        .await
        .unwrap();
    let cancel = shop
        .http
        .post(format!("{}/svc/orders/cancel_order", server.url))
        .header("Idempotency-Key", "by-hand")
        .json(&json!({ "order_id": a.order_id }))
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), 500);
    assert_eq!(order_status(&mut db, &a.order_id).await, "shipped?");
    assert_eq!(shop.stock("LP-09").await.unwrap(), before - 1);
    db.close().await.unwrap();
}
