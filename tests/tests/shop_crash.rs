//! The shop process dying and coming back: the `crash` fault, SIGKILL mid-step, SIGTERM, and
//! the services split into processes of their own.

use std::time::Duration;

use saga_shop_tests::server::{ShopServer, scratch_dir};
use saga_shop_tests::shop::{Shop, kinds, order};
use serde_json::json;
use shared::Event;

fn attempts_of(events: &[shared::SagaEvent], step: &str) -> usize {
    events
        .iter()
        .filter(|e| e.event.kind().as_str() == "step_started" && e.step.as_deref() == Some(step))
        .count()
}

#[tokio::test]
async fn a_crash_after_the_payment_is_taken_recovers_with_the_card_charged_once() {
    let dir = scratch_dir("crash");
    let mut server = ShopServer::start_in(dir.clone(), &["--allow-crash-faults"]).unwrap();
    let shop = Shop::new(&server.url);
    let a = shop
        .buy(&order(
            "KB-01",
            1,
            json!({"process_payment": {"kind": "crash"}}),
        ))
        .await
        .unwrap();
    let status = server
        .wait_exit(Duration::from_secs(30))
        .expect("the crash fault aborts the server");
    assert!(!status.success());
    drop(server);

    let server = ShopServer::start_in(dir, &["--allow-crash-faults"]).unwrap();
    let shop = Shop::new(&server.url);
    let events = shop.finish(&a.saga_id).await.unwrap();
    assert_eq!(
        events.last().unwrap().event.kind().as_str(),
        "saga_completed",
        "{:?}",
        kinds(&events)
    );
    assert_eq!(
        attempts_of(&events, "process_payment"),
        2,
        "the interrupted attempt is re-sent"
    );
    let view = shop.order_view(&a.order_id).await.unwrap();
    let payment = view.payment.unwrap();
    assert_eq!(
        (payment.status.as_str(), payment.amount_cents),
        ("captured", view.total_cents)
    );
    // The re-sent request got the first charge back, not a second one.
    let logged = events
        .iter()
        .find(|e| {
            e.event.kind().as_str() == "step_succeeded"
                && e.step.as_deref() == Some("process_payment")
        })
        .unwrap();
    let Event::StepSucceeded { output, .. } = &logged.event else {
        panic!("a step_succeeded event");
    };
    assert_eq!(output["payment_id"], payment.payment_id);
    assert_eq!(view.status, "confirmed");
}

#[tokio::test]
async fn sigkill_in_the_middle_of_a_slow_step_and_a_restart_finish_the_saga() {
    let dir = scratch_dir("sigkill");
    let mut server = ShopServer::start_in(dir.clone(), &[]).unwrap();
    let shop = Shop::new(&server.url);
    let a = shop
        .buy(&order(
            "MS-02",
            1,
            json!({"create_invoice": {"kind": "delay", "ms": 2000}}),
        ))
        .await
        .unwrap();
    // Read until the slow step has started, then kill.
    let seen = shop.events(&a.saga_id, None, 4).await.unwrap();
    assert_eq!(seen.last().unwrap().1.event.kind().as_str(), "step_started");
    server.kill();
    drop(server);

    let server = ShopServer::start_in(dir, &[]).unwrap();
    let shop = Shop::new(&server.url);
    let events = shop.finish(&a.saga_id).await.unwrap();
    assert_eq!(
        events.last().unwrap().event.kind().as_str(),
        "saga_completed",
        "{:?}",
        kinds(&events)
    );
    assert_eq!(attempts_of(&events, "create_invoice"), 2);
    let view = shop.order_view(&a.order_id).await.unwrap();
    assert_eq!(view.invoice.unwrap().status, "issued");
}

#[tokio::test]
async fn sigterm_stops_the_server_even_with_streams_open() {
    let mut server = ShopServer::start(&[]).unwrap();
    let shop = Shop::new(&server.url);
    let _feed = shop.request("/api/events").await.unwrap();
    server.terminate().unwrap();
    let status = server
        .wait_exit(Duration::from_secs(20))
        .expect("graceful shutdown ends");
    assert!(status.success(), "{status}");
}

/// The largest `-wal` file in `dir`, with its name.
fn largest_wal(dir: &std::path::Path) -> (u64, String) {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap())
        .filter(|entry| entry.file_name().to_string_lossy().ends_with("-wal"))
        .map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            (entry.metadata().unwrap().len(), name)
        })
        .max()
        .unwrap_or_default()
}

/// Three times on the same files, since a process that ends without closing its databases
/// still leaves them checkpointed now and then, when their connections happen to close first.
#[tokio::test]
async fn sigterm_closes_every_database_and_leaves_no_write_ahead_log_behind() {
    const MOST: u64 = 64 * 1024;
    let dir = scratch_dir("sigterm-wal");
    for _ in 0..3 {
        let mut server = ShopServer::start_in(dir.clone(), &["--seed-stock", "1000"]).unwrap();
        let shop = Shop::new(&server.url);
        // A few dozen purchases, four at a time, each to its end.
        for round in 0..9 {
            let sagas = (0..4).map(|i| {
                let shop = &shop;
                async move {
                    let sku = ["KB-01", "MS-02", "LP-09", "CB-12"][(round + i) % 4];
                    let a = shop.buy(&order(sku, 1, json!({}))).await.unwrap();
                    shop.finish(&a.saga_id).await.unwrap()
                }
            });
            for events in futures_util::future::join_all(sagas).await {
                assert_eq!(
                    events.last().unwrap().event.kind().as_str(),
                    "saga_completed"
                );
            }
        }
        let (size, name) = largest_wal(&dir);
        assert!(
            size > MOST,
            "the purchases grew a write-ahead log past {MOST} bytes (largest: {name}, {size})"
        );
        server.terminate().unwrap();
        let status = server
            .wait_exit(Duration::from_secs(20))
            .expect("graceful shutdown ends");
        assert!(status.success(), "{status}");
        let (size, name) = largest_wal(&dir);
        assert!(
            size <= MOST,
            "{name} is left at {size} bytes: a database was not closed, so not checkpointed"
        );
    }
}

#[tokio::test]
async fn a_service_can_run_in_a_process_of_its_own() {
    let payments = ShopServer::start(&["--service", "payments"]).unwrap();
    let payments_url = format!("payments={}/svc/payments", payments.url);
    let server = ShopServer::start(&["--service-url", &payments_url]).unwrap();
    let shop = Shop::new(&server.url);
    let a = shop.buy(&order("LP-09", 1, json!({}))).await.unwrap();
    let events = shop.finish(&a.saga_id).await.unwrap();
    assert_eq!(
        events.last().unwrap().event.kind().as_str(),
        "saga_completed"
    );
    // The payment lives in the other process: the shop only sees it through HTTP.
    let direct: shared::PaymentView = reqwest::get(format!(
        "{}/svc/payments/payments/{}",
        payments.url, a.order_id
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(direct.status, "captured");
    assert!(
        !server.dir.join("saga-shop.payments.db").exists(),
        "the shop did not host payments itself"
    );
    assert!(payments.dir.join("saga-shop.payments.db").exists());
}

/// A person's retry is durable: the server killed right after answering `202` to
/// `POST /api/sagas/{id}/retry` resumes the saga from its log after a restart, and the
/// compensation takes effect once (the stock comes back exactly once).
#[tokio::test]
async fn a_retry_survives_a_restart_between_the_click_and_the_end() {
    let dir = scratch_dir("retry-restart");
    let mut server = ShopServer::start_in(dir.clone(), &[]).unwrap();
    let shop = Shop::new(&server.url);
    let before = shop.stock("SP-10").await.unwrap();
    let mut body = order(
        "SP-10",
        1,
        json!({"place_order": {"kind": "compensation_fail"}}),
    );
    body["payment"]["card_number"] = json!("4000000000000002");
    let stuck = shop.buy(&body).await.unwrap();
    let events = shop.finish(&stuck.saga_id).await.unwrap();
    assert_eq!(events.last().unwrap().event.kind().as_str(), "saga_stuck");

    let answer = shop
        .http
        .post(format!("{}/api/sagas/{}/retry", shop.url, stuck.saga_id))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 202);
    server.kill();
    drop(server);

    let server = ShopServer::start_in(dir, &[]).unwrap();
    let shop = Shop::new(&server.url);
    let events = shop.finish(&stuck.saga_id).await.unwrap();
    let kinds = kinds(&events);
    assert_eq!(
        kinds.last().map(String::as_str),
        Some("saga_compensated"),
        "{kinds:?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| *k == "saga_resumed").count(),
        1,
        "{kinds:?}"
    );
    let view = shop.order_view(&stuck.order_id).await.unwrap();
    assert_eq!(view.status, "cancelled");
    assert_eq!(shop.stock("SP-10").await.unwrap(), before);
}
