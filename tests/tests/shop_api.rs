//! The shop over HTTP, against the real `saga-shop` binary on an ephemeral port with its four
//! services on their own SQLite files: every step's failure, every fault kind, SSE resume,
//! idempotency, bad input, and concurrency on one product's stock.

use saga_shop_tests::server::{ShopServer, scratch_dir};
use saga_shop_tests::shop::{Shop, kinds, order};
use serde_json::{Value, json};
use shared::story::summary;
use shared::{
    Event, EventKind, STEPS, SagaListItem, SagaRetried, SagaState, StepOutcome, Timeline,
};

fn start() -> (ShopServer, Shop) {
    let server = ShopServer::start(&[]).expect("start saga-shop");
    let shop = Shop::new(&server.url);
    (server, shop)
}

fn seq(lines: &[&str]) -> Vec<String> {
    lines.iter().map(|s| s.to_string()).collect()
}

const HAPPY: [&str; 10] = [
    "saga_started",
    "step_started place_order",
    "step_succeeded place_order",
    "step_started create_invoice",
    "step_succeeded create_invoice",
    "step_started process_payment",
    "step_succeeded process_payment",
    "step_started ship_order",
    "step_succeeded ship_order",
    "saga_completed",
];

#[tokio::test]
async fn a_purchase_completes_and_every_service_holds_its_part() {
    let (_server, shop) = start();
    let before = shop.stock("KB-01").await.unwrap();
    let accepted = shop.buy(&order("KB-01", 2, json!({}))).await.unwrap();
    assert_eq!(
        accepted.events_url,
        format!("/api/sagas/{}/events", accepted.saga_id)
    );
    let events = shop.finish(&accepted.saga_id).await.unwrap();
    assert_eq!(kinds(&events), seq(&HAPPY));
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.seq, i as u64 + 1);
    }
    let view = shop.order_view(&accepted.order_id).await.unwrap();
    assert_eq!(view.status, "confirmed");
    assert_eq!(view.total_cents, 2 * 8999 + 499);
    let invoice = view.invoice.expect("invoice");
    assert_eq!(
        (invoice.status.as_str(), invoice.total_cents),
        ("issued", view.total_cents)
    );
    let payment = view.payment.expect("payment");
    assert_eq!(
        (
            payment.status.as_str(),
            payment.amount_cents,
            payment.refunded_cents
        ),
        ("captured", view.total_cents, 0)
    );
    assert_eq!(payment.card_last4.as_deref(), Some("4242"));
    let shipment = view.shipment.expect("shipment");
    assert_eq!(shipment.status, "scheduled");
    assert!(shipment.tracking_number.starts_with("SS"));
    let notification = view
        .notification
        .expect("the customer is told when to expect the parcel");
    assert!(notification.message.contains(&shipment.estimated_delivery));
    assert_eq!(shop.stock("KB-01").await.unwrap(), before - 2);
    // The card number is nowhere in what the API shows.
    let detail = shop
        .http
        .get(format!("{}/api/sagas/{}", shop.url, accepted.saga_id))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!detail.contains("4242424242424242"));
    assert!(detail.contains("\"status\":\"completed\""));
}

#[tokio::test]
async fn express_is_sooner_than_standard() {
    let (_server, shop) = start();
    let mut express = order("MS-02", 1, json!({}));
    express["delivery"] = json!("express");
    let a = shop.buy(&order("MS-02", 1, json!({}))).await.unwrap();
    let b = shop.buy(&express).await.unwrap();
    shop.finish(&a.saga_id).await.unwrap();
    shop.finish(&b.saga_id).await.unwrap();
    let standard = shop.order_view(&a.order_id).await.unwrap();
    let express = shop.order_view(&b.order_id).await.unwrap();
    assert!(
        express.shipment.unwrap().estimated_delivery
            < standard.shipment.unwrap().estimated_delivery
    );
    assert_eq!(express.total_cents - standard.total_cents, 1499 - 499);
}

#[tokio::test]
async fn a_failure_at_place_order_compensates_nothing() {
    let (_server, shop) = start();
    let before = shop.stock("KB-01").await.unwrap();
    let a = shop
        .buy(&order("KB-01", 1, json!({"place_order": {"kind": "fail"}})))
        .await
        .unwrap();
    let events = shop.finish(&a.saga_id).await.unwrap();
    assert_eq!(
        kinds(&events),
        seq(&[
            "saga_started",
            "step_started place_order",
            "step_failed place_order",
            "saga_compensated"
        ])
    );
    let view = shop.order_view(&a.order_id).await.unwrap();
    assert_eq!(view.status, "cancelled");
    assert!(view.invoice.is_none() && view.payment.is_none() && view.shipment.is_none());
    assert_eq!(shop.stock("KB-01").await.unwrap(), before);
}

#[tokio::test]
async fn a_failure_at_create_invoice_cancels_the_order_and_restores_stock() {
    let (_server, shop) = start();
    let before = shop.stock("KB-01").await.unwrap();
    let a = shop
        .buy(&order(
            "KB-01",
            3,
            json!({"create_invoice": {"kind": "fail"}}),
        ))
        .await
        .unwrap();
    let events = shop.finish(&a.saga_id).await.unwrap();
    assert_eq!(
        kinds(&events),
        seq(&[
            "saga_started",
            "step_started place_order",
            "step_succeeded place_order",
            "step_started create_invoice",
            "step_failed create_invoice",
            "compensation_started place_order",
            "compensation_succeeded place_order",
            "saga_compensated"
        ])
    );
    let view = shop.order_view(&a.order_id).await.unwrap();
    assert_eq!(view.status, "cancelled");
    assert!(view.invoice.is_none() && view.payment.is_none());
    assert_eq!(shop.stock("KB-01").await.unwrap(), before);
}

const PAYMENT_FAILS: [&str; 12] = [
    "saga_started",
    "step_started place_order",
    "step_succeeded place_order",
    "step_started create_invoice",
    "step_succeeded create_invoice",
    "step_started process_payment",
    "step_failed process_payment",
    "compensation_started create_invoice",
    "compensation_succeeded create_invoice",
    "compensation_started place_order",
    "compensation_succeeded place_order",
    "saga_compensated",
];

#[tokio::test]
async fn a_declined_card_or_missing_funds_voids_the_invoice_and_cancels_the_order() {
    let (_server, shop) = start();
    let before = shop.stock("HP-04").await.unwrap();
    for card in ["4000000000000002", "4000000000009995"] {
        let mut body = order("HP-04", 1, json!({}));
        body["payment"]["card_number"] = json!(card);
        let a = shop.buy(&body).await.unwrap();
        let events = shop.finish(&a.saga_id).await.unwrap();
        assert_eq!(kinds(&events), seq(&PAYMENT_FAILS), "card {card}");
        let failed = events
            .iter()
            .find(|e| e.event.kind().as_str() == "step_failed")
            .unwrap();
        let error = failed.event.error().unwrap();
        assert!(
            error.contains("declined") || error.contains("insufficient funds"),
            "{error}"
        );
        let view = shop.order_view(&a.order_id).await.unwrap();
        assert_eq!(view.status, "cancelled");
        assert_eq!(view.invoice.unwrap().status, "void");
        assert!(view.payment.is_none() && view.shipment.is_none());
    }
    let mut wallet = order("HP-04", 1, json!({}));
    wallet["payment"] = json!({"method": "wallet", "wallet_id": "empty-wallet"});
    let a = shop.buy(&wallet).await.unwrap();
    assert_eq!(
        kinds(&shop.finish(&a.saga_id).await.unwrap()),
        seq(&PAYMENT_FAILS)
    );
    assert_eq!(shop.stock("HP-04").await.unwrap(), before);
}

#[tokio::test]
async fn an_unserved_country_refunds_in_full_voids_and_cancels() {
    let (_server, shop) = start();
    let before = shop.stock("DK-06").await.unwrap();
    let mut body = order("DK-06", 1, json!({}));
    body["address"]["country"] = json!("AQ");
    let a = shop.buy(&body).await.unwrap();
    let events = shop.finish(&a.saga_id).await.unwrap();
    assert_eq!(
        kinds(&events),
        seq(&[
            "saga_started",
            "step_started place_order",
            "step_succeeded place_order",
            "step_started create_invoice",
            "step_succeeded create_invoice",
            "step_started process_payment",
            "step_succeeded process_payment",
            "step_started ship_order",
            "step_failed ship_order",
            "compensation_started process_payment",
            "compensation_succeeded process_payment",
            "compensation_started create_invoice",
            "compensation_succeeded create_invoice",
            "compensation_started place_order",
            "compensation_succeeded place_order",
            "saga_compensated"
        ])
    );
    let view = shop.order_view(&a.order_id).await.unwrap();
    assert_eq!(view.status, "cancelled");
    let payment = view.payment.unwrap();
    assert_eq!(payment.status, "refunded");
    assert_eq!(payment.refunded_cents, payment.amount_cents);
    assert_eq!(view.invoice.unwrap().status, "void");
    assert!(view.shipment.is_none());
    assert_eq!(shop.stock("DK-06").await.unwrap(), before);
}

#[tokio::test]
async fn a_wallet_pays_too() {
    let (_server, shop) = start();
    let mut body = order("LP-09", 1, json!({}));
    body["payment"] = json!({"method": "wallet", "wallet_id": "ada-wallet-1"});
    let a = shop.buy(&body).await.unwrap();
    assert_eq!(kinds(&shop.finish(&a.saga_id).await.unwrap()), seq(&HAPPY));
    let payment = shop.order_view(&a.order_id).await.unwrap().payment.unwrap();
    assert_eq!(
        (payment.status.as_str(), payment.card_last4),
        ("captured", None)
    );
}

#[tokio::test]
async fn transient_faults_are_retried_and_delays_take_their_time() {
    let (_server, shop) = start();
    let a = shop
        .buy(&order("SS-11", 1, json!({"create_invoice": {"kind": "transient", "times": 2}, "ship_order": {"kind": "delay", "ms": 400}})))
        .await
        .unwrap();
    let events = shop.finish(&a.saga_id).await.unwrap();
    assert_eq!(
        events.last().unwrap().event.kind().as_str(),
        "saga_completed"
    );
    let retries: Vec<_> = events
        .iter()
        .filter(|e| e.event.kind().as_str() == "step_retrying")
        .collect();
    assert_eq!(retries.len(), 2);
    assert!(
        retries
            .iter()
            .all(|e| e.step.as_deref() == Some("create_invoice"))
    );
    assert!(
        retries[0]
            .event
            .error()
            .is_some_and(|e| e.contains("transient"))
    );
    let shipped = events
        .iter()
        .find(|e| {
            e.event.kind().as_str() == "step_succeeded" && e.step.as_deref() == Some("ship_order")
        })
        .unwrap();
    assert!(shipped.event.duration_ms().unwrap() >= 400);
}

#[tokio::test]
async fn a_timeout_is_an_unknown_outcome_and_is_compensated_too() {
    let (_server, shop) = start();
    let a = shop
        .buy(&order(
            "CB-12",
            1,
            json!({"ship_order": {"kind": "timeout"}}),
        ))
        .await
        .unwrap();
    let events = shop.finish(&a.saga_id).await.unwrap();
    let retries = events
        .iter()
        .filter(|e| {
            e.event.kind().as_str() == "step_retrying" && e.step.as_deref() == Some("ship_order")
        })
        .count();
    assert_eq!(retries, 2, "{:?}", kinds(&events));
    let failed = events
        .iter()
        .find(|e| e.event.kind().as_str() == "step_failed")
        .unwrap();
    assert!(matches!(
        failed.event,
        Event::StepFailed {
            outcome: StepOutcome::Unknown,
            ..
        }
    ));
    let compensated: Vec<_> = events
        .iter()
        .filter(|e| e.event.kind().as_str() == "compensation_succeeded")
        .filter_map(|e| e.step.clone())
        .collect();
    assert_eq!(
        compensated,
        [
            "ship_order",
            "process_payment",
            "create_invoice",
            "place_order"
        ]
    );
    // The shipment was made before the silence, and the compensation cancelled it.
    let view = shop.order_view(&a.order_id).await.unwrap();
    assert_eq!(view.shipment.unwrap().status, "cancelled");
    assert_eq!(view.payment.unwrap().status, "refunded");
}

#[tokio::test]
async fn compensations_are_retried_and_one_that_never_succeeds_leaves_the_saga_stuck() {
    let (_server, shop) = start();
    let mut body = order(
        "WC-05",
        1,
        json!({"create_invoice": {"kind": "compensation_transient", "times": 2}}),
    );
    body["payment"]["card_number"] = json!("4000000000000002");
    let a = shop.buy(&body).await.unwrap();
    let events = shop.finish(&a.saga_id).await.unwrap();
    assert_eq!(
        events.last().unwrap().event.kind().as_str(),
        "saga_compensated"
    );
    let comp_failures = events
        .iter()
        .filter(|e| e.event.kind().as_str() == "compensation_failed")
        .count();
    assert_eq!(comp_failures, 2);

    let mut body = order(
        "WC-05",
        1,
        json!({"place_order": {"kind": "compensation_fail"}}),
    );
    body["payment"]["card_number"] = json!("4000000000000002");
    let b = shop.buy(&body).await.unwrap();
    let events = shop.finish(&b.saga_id).await.unwrap();
    let last = events.last().unwrap();
    assert_eq!(
        (last.event.kind().as_str(), last.step.as_deref()),
        ("saga_stuck", Some("place_order"))
    );
    let list: Vec<Value> = shop
        .http
        .get(format!("{}/api/sagas?status=stuck", shop.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["saga_id"], b.saga_id);
    // The invoice was voided, the order could not be cancelled: that is what stuck means.
    let view = shop.order_view(&b.order_id).await.unwrap();
    assert_eq!(view.invoice.unwrap().status, "void");
    assert_eq!(view.status, "pending");
}

/// `POST /api/sagas/{id}/retry`: a stuck saga (its `compensation_fail` outage over once a
/// person retries) unwinds to `compensated`, the order cancelled and its stock back; a second
/// request does nothing more; a saga that was never stuck is a 409, an unknown one a 404.
#[tokio::test]
async fn a_stuck_saga_retried_by_a_person_ends_compensated_once() {
    let (_server, shop) = start();
    let before = shop.stock("WC-05").await.unwrap();
    let mut body = order(
        "WC-05",
        1,
        json!({"place_order": {"kind": "compensation_fail"}}),
    );
    body["payment"]["card_number"] = json!("4000000000000002");
    let stuck = shop.buy(&body).await.unwrap();
    let events = shop.finish(&stuck.saga_id).await.unwrap();
    assert_eq!(events.last().unwrap().event.kind(), EventKind::SagaStuck);
    assert_eq!(shop.stock("WC-05").await.unwrap(), before - 1);

    let retry = |id: &str| {
        shop.http
            .post(format!("{}/api/sagas/{id}/retry", shop.url))
            .send()
    };
    let first = retry(&stuck.saga_id).await.unwrap();
    assert_eq!(first.status(), 202);
    let first: SagaRetried = first.json().await.unwrap();
    assert!(first.resumed);
    assert_eq!(first.status, SagaState::Compensating);
    let events = shop.finish(&stuck.saga_id).await.unwrap();
    let tail: Vec<String> = kinds(&events).into_iter().rev().take(4).rev().collect();
    assert_eq!(
        tail,
        [
            "saga_resumed",
            "compensation_started place_order",
            "compensation_succeeded place_order",
            "saga_compensated"
        ]
    );
    let view = shop.order_view(&stuck.order_id).await.unwrap();
    assert_eq!(view.status, "cancelled");
    assert_eq!(shop.stock("WC-05").await.unwrap(), before);

    let again = retry(&stuck.saga_id).await.unwrap();
    assert_eq!(again.status(), 202);
    let again: SagaRetried = again.json().await.unwrap();
    assert!(!again.resumed);
    assert_eq!(
        again.status,
        SagaState::Compensated,
        "a repeat says where it got to"
    );
    let after = shop.finish(&stuck.saga_id).await.unwrap();
    assert_eq!(after.len(), events.len(), "a second retry wrote nothing");
    assert_eq!(shop.stock("WC-05").await.unwrap(), before);

    let completed = shop.buy(&order("WC-05", 1, json!({}))).await.unwrap();
    shop.finish(&completed.saga_id).await.unwrap();
    let refused = retry(&completed.saga_id).await.unwrap();
    assert_eq!(refused.status(), 409);
    let error: Value = refused.json().await.unwrap();
    assert!(
        error["error"]
            .as_str()
            .unwrap_or_default()
            .contains("not stuck"),
        "{error}"
    );
    let unknown = retry("01935f5e-0000-7000-8000-000000000000").await.unwrap();
    assert_eq!(unknown.status(), 404);
}

#[tokio::test]
async fn the_event_stream_resumes_after_last_event_id_with_nothing_lost_or_repeated() {
    let (_server, shop) = start();
    let a = shop
        .buy(&order(
            "SP-10",
            1,
            json!({"process_payment": {"kind": "delay", "ms": 500}}),
        ))
        .await
        .unwrap();
    let first = shop.events(&a.saga_id, None, 4).await.unwrap();
    assert_eq!(first.len(), 4);
    let last_id = first.last().unwrap().0;
    let rest = shop
        .events(&a.saga_id, Some(last_id), usize::MAX)
        .await
        .unwrap();
    let all: Vec<u64> = first.iter().chain(rest.iter()).map(|(id, _)| *id).collect();
    assert_eq!(all, (1..=10).collect::<Vec<u64>>());
    assert!(first.iter().chain(rest.iter()).all(|(id, e)| *id == e.seq));
    // A finished saga's stream replays and ends; an unknown saga is a 404.
    assert_eq!(
        shop.events(&a.saga_id, Some(8), usize::MAX)
            .await
            .unwrap()
            .len(),
        2
    );
    let missing = shop
        .http
        .get(format!(
            "{}/api/sagas/{}/events",
            shop.url,
            uuid::Uuid::new_v4()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn the_all_sagas_stream_carries_every_saga() {
    let (_server, shop) = start();
    let mut feed = shop
        .http
        .get(format!("{}/api/events", shop.url))
        .send()
        .await
        .unwrap();
    let a = shop.buy(&order("CB-12", 1, json!({}))).await.unwrap();
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while !text.contains("saga_completed") {
        let chunk = tokio::time::timeout_at(deadline, feed.chunk())
            .await
            .expect("events arrive")
            .unwrap()
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(text.contains(&a.saga_id));
    assert_eq!(text.matches("event: step_succeeded").count(), 4);
}

/// A raw HTTP/1.1 connection to the shop: exactly what goes over the wire.
struct Wire(tokio::net::TcpStream, Vec<u8>);

impl Wire {
    async fn open(url: &str) -> Wire {
        let addr = url.trim_start_matches("http://");
        Wire(
            tokio::net::TcpStream::connect(addr).await.unwrap(),
            Vec::new(),
        )
    }

    async fn send(&mut self, head: &str) {
        use tokio::io::AsyncWriteExt;
        self.0.write_all(head.as_bytes()).await.unwrap();
    }

    /// Read until `text` has arrived (or the connection ends); everything read so far.
    async fn read_until(&mut self, text: &str) -> String {
        use tokio::io::AsyncReadExt;
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&self.1).contains(text) {
            let n = tokio::time::timeout_at(deadline, self.0.read(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("{text:?} did not arrive"))
                .unwrap();
            if n == 0 {
                break;
            }
            self.1.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&self.1).into_owned()
    }
}

/// `request` sent on a fresh connection, and on a kept-alive one after a first request: the
/// two ways a browser's stream arrives.
async fn fresh_and_reused(url: &str, request: &str) -> (Wire, Wire) {
    let mut fresh = Wire::open(url).await;
    fresh.send(request).await;
    let mut reused = Wire::open(url).await;
    reused
        .send("GET /healthz HTTP/1.1\r\nHost: shop\r\n\r\n")
        .await;
    reused.read_until("\r\n\r\nok").await;
    reused.1.clear();
    reused.send(request).await;
    (fresh, reused)
}

/// `(id, event)` of each SSE event of `saga` in a response, whatever its framing.
fn sse_events_of(text: &str, saga: &str) -> Vec<(i64, String)> {
    text.split("\n\n")
        .filter(|block| block.contains(saga))
        .filter_map(|block| {
            let field = |name: &str| {
                block
                    .lines()
                    .find_map(|l| l.strip_prefix(name).map(str::to_string))
            };
            Some((field("id: ")?.parse().ok()?, field("event: ")?))
        })
        .collect()
}

/// A subscriber of `/api/events` on a fresh connection and one on a kept-alive connection must
/// carry the same events with the same ids, resume from `Last-Event-ID`, and a bad
/// `Last-Event-ID` is refused either way.
#[tokio::test]
async fn the_all_sagas_stream_is_the_same_on_a_fresh_and_on_a_reused_connection() {
    let (_server, shop) = start();
    let get = "GET /api/events HTTP/1.1\r\nHost: shop\r\nAccept: text/event-stream\r\n\r\n";
    let (mut fresh, mut reused) = fresh_and_reused(&shop.url, get).await;
    // Both streams are open (their heads came back) before the saga starts.
    let fresh_head = fresh.read_until("\r\n\r\n").await;
    let reused_head = reused.read_until("\r\n\r\n").await;
    for head in [&fresh_head, &reused_head] {
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(head.contains("text/event-stream"), "{head}");
    }

    let a = shop.buy(&order("CB-12", 1, json!({}))).await.unwrap();
    let on_fresh = sse_events_of(&fresh.read_until("saga_completed").await, &a.saga_id);
    let on_reused = sse_events_of(&reused.read_until("saga_completed").await, &a.saga_id);
    assert_eq!(on_fresh.len(), 10, "{on_fresh:?}");
    assert_eq!(on_fresh, on_reused);
    assert!(on_fresh.windows(2).all(|w| w[0].0 < w[1].0));

    // Resume after the third event: the seven after it, the same ids.
    let mut resumed = Wire::open(&shop.url).await;
    resumed
        .send(&format!(
            "GET /api/events HTTP/1.1\r\nHost: shop\r\nLast-Event-ID: {}\r\n\r\n",
            on_fresh[2].0
        ))
        .await;
    let text = resumed.read_until("saga_completed").await;
    assert_eq!(sse_events_of(&text, &a.saga_id), on_fresh[3..].to_vec());

    let mut bad = Wire::open(&shop.url).await;
    bad.send("GET /api/events HTTP/1.1\r\nHost: shop\r\nLast-Event-ID: soon\r\nConnection: close\r\n\r\n")
        .await;
    let refused = bad.read_until("Last-Event-ID").await;
    assert!(refused.starts_with("HTTP/1.1 400"), "{refused}");
}

/// The page reads the list, then follows `/api/events?after=` the list's `x-log-position`.
/// A saga that starts and finishes between the two must come on the stream, whole; one the
/// list already shows finished must not come again. On a fresh and a kept-alive connection
/// alike.
#[tokio::test]
async fn the_list_says_where_the_stream_resumes_so_nothing_between_them_is_missed() {
    let (_server, shop) = start();
    let before = shop.buy(&order("CB-12", 1, json!({}))).await.unwrap();
    shop.finish(&before.saga_id).await.unwrap();

    let listed = shop.request("/api/sagas?limit=50").await.unwrap();
    assert_eq!(listed.status(), 200);
    let position: i64 = listed
        .headers()
        .get("x-log-position")
        .expect("the list says where it is current")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let list: Vec<SagaListItem> = listed.json().await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(
        (list[0].saga_id.as_str(), list[0].status.as_str()),
        (before.saga_id.as_str(), "completed")
    );

    // Started after the list was read, and over before anyone follows the stream.
    let between = shop.buy(&order("MN-03", 1, json!({}))).await.unwrap();
    shop.finish(&between.saga_id).await.unwrap();

    let get = format!("GET /api/events?after={position} HTTP/1.1\r\nHost: shop\r\n\r\n");
    let (mut fresh, mut reused) = fresh_and_reused(&shop.url, &get).await;
    for wire in [&mut fresh, &mut reused] {
        let text = wire.read_until("saga_completed").await;
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        let events = sse_events_of(&text, &between.saga_id);
        assert_eq!(events.len(), 10, "{events:?}");
        assert_eq!(events[0].1, "saga_started");
        assert!(events.iter().all(|(id, _)| *id > position));
        assert!(sse_events_of(&text, &before.saga_id).is_empty(), "{text}");
    }

    for (path, field) in [
        ("/api/events?after=soon", "after"),
        ("/api/sagas?limit=many", "limit"),
    ] {
        let refused = shop.request(path).await.unwrap();
        assert_eq!(refused.status(), 400, "{path}");
        let body: Value = refused.json().await.unwrap();
        assert_eq!(body["field"], field, "{path}: {body}");
        assert!(
            body["error"].as_str().is_some_and(|e| e.contains(field)),
            "{body}"
        );
    }
}

/// A row of the list says what a person needs to tell purchases apart: who (first name and
/// initial, never the email or address), how much, and why a saga turned back. The filter by
/// status gives those rows alone.
#[tokio::test]
async fn the_list_says_who_bought_for_how_much_and_why_it_turned_back() {
    let (_server, shop) = start();
    let happy = shop.buy(&order("KB-01", 2, json!({}))).await.unwrap();
    let mut declined_body = order("CB-12", 1, json!({}));
    declined_body["customer"]["name"] = json!("Charles Babbage");
    declined_body["payment"]["card_number"] = json!("4000000000000002");
    let declined = shop.buy(&declined_body).await.unwrap();
    // More chairs than there are: the order is never placed, so it has no total.
    let unplaced = shop.buy(&order("CH-07", 6, json!({}))).await.unwrap();
    for saga in [&happy, &declined, &unplaced] {
        shop.finish(&saga.saga_id).await.unwrap();
    }

    let listed = shop.request("/api/sagas").await.unwrap();
    assert_eq!(listed.status(), 200);
    let raw = listed.text().await.unwrap();
    for private in [
        "ada@example.com",
        "Analytical",
        "London",
        "N1 9GU",
        "Babbage",
    ] {
        assert!(!raw.contains(private), "the list shows {private}: {raw}");
    }
    let list: Vec<SagaListItem> = serde_json::from_str(&raw).unwrap();
    let row = |id: &str| {
        list.iter()
            .find(|r| r.saga_id == id)
            .cloned()
            .expect("a row for the saga")
    };

    let happy_row = row(&happy.saga_id);
    assert_eq!(happy_row.status.as_str(), "completed");
    assert_eq!(happy_row.customer.as_deref(), Some("Ada L."));
    assert_eq!(happy_row.total_cents, Some(2 * 8999 + 499));
    assert_eq!(happy_row.currency.as_deref(), Some("EUR"));
    assert_eq!(happy_row.failure, None);

    let declined_row = row(&declined.saga_id);
    assert_eq!(declined_row.status.as_str(), "compensated");
    assert_eq!(declined_row.customer.as_deref(), Some("Charles B."));
    assert_eq!(declined_row.total_cents, Some(1499 + 499));
    let failure = declined_row.failure.expect("why it turned back");
    assert_eq!(
        (
            failure.step.as_str(),
            failure.error.as_str(),
            failure.outcome
        ),
        (
            "process_payment",
            "the card was declined",
            StepOutcome::Failed
        )
    );

    let unplaced_row = row(&unplaced.saga_id);
    assert_eq!(unplaced_row.status.as_str(), "compensated");
    assert_eq!(
        (unplaced_row.total_cents, unplaced_row.currency.as_deref()),
        (None, None)
    );
    let failure = unplaced_row.failure.expect("why it turned back");
    assert_eq!(failure.step, "place_order");
    assert!(failure.error.contains("not enough stock"), "{failure:?}");

    // The JSON spells out every field, null or not.
    let raw: Value = serde_json::from_str(&raw).unwrap();
    let unplaced_json = raw
        .as_array()
        .and_then(|rows| {
            rows.iter()
                .find(|r| r["saga_id"] == unplaced.saga_id.as_str())
        })
        .expect("the row");
    assert_eq!(unplaced_json["total_cents"], Value::Null);
    assert_eq!(unplaced_json["currency"], Value::Null);

    let compensated: Vec<SagaListItem> = shop
        .request("/api/sagas?status=compensated")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = compensated.iter().map(|r| r.saga_id.as_str()).collect();
    assert_eq!(ids, [unplaced.saga_id.as_str(), declined.saga_id.as_str()]);
}

#[tokio::test]
async fn an_idempotency_key_makes_a_retried_submission_the_same_saga() {
    let (_server, shop) = start();
    let body = order("MN-03", 1, json!({}));
    let first = shop.post_order(&body, Some("checkout-42")).await.unwrap();
    assert_eq!(first.status(), 202);
    let first: Value = first.json().await.unwrap();
    let again = shop.post_order(&body, Some("checkout-42")).await.unwrap();
    assert_eq!(again.status(), 202);
    let again: Value = again.json().await.unwrap();
    assert_eq!(first, again);
    shop.finish(first["saga_id"].as_str().unwrap())
        .await
        .unwrap();
    let after = shop.post_order(&body, Some("checkout-42")).await.unwrap();
    assert_eq!(after.json::<Value>().await.unwrap(), first);
    assert_eq!(shop.saga_count().await.unwrap(), 1);
    let mut other = body.clone();
    other["items"][0]["qty"] = json!(2);
    let clash = shop.post_order(&other, Some("checkout-42")).await.unwrap();
    assert_eq!(clash.status(), 422);
    assert_eq!(shop.saga_count().await.unwrap(), 1);
}

#[tokio::test]
async fn bad_input_is_refused_with_a_clear_error_and_no_saga() {
    let (_server, shop) = start();
    let before = shop.stock("KB-01").await.unwrap();
    let good = order("KB-01", 1, json!({}));
    let with = |path: &[&str], value: Value| {
        let mut body = good.clone();
        let mut at = &mut body;
        for p in &path[..path.len() - 1] {
            at = if let Ok(i) = p.parse::<usize>() {
                &mut at[i]
            } else {
                &mut at[*p]
            };
        }
        at[path[path.len() - 1]] = value;
        body
    };
    let cases: Vec<(&str, Value, u16, Option<&str>)> = vec![
        (
            "unknown sku",
            with(&["items", "0", "sku"], json!("NOPE-1")),
            422,
            Some("items[0].sku"),
        ),
        (
            "quantity 0",
            with(&["items", "0", "qty"], json!(0)),
            422,
            Some("items[0].qty"),
        ),
        (
            "quantity 1000",
            with(&["items", "0", "qty"], json!(1000)),
            422,
            Some("items[0].qty"),
        ),
        (
            "empty cart",
            with(&["items"], json!([])),
            422,
            Some("items"),
        ),
        (
            "malformed email",
            with(&["customer", "email"], json!("ada.example.com")),
            422,
            Some("customer.email"),
        ),
        (
            "empty name",
            with(&["customer", "name"], json!("  ")),
            422,
            Some("customer.name"),
        ),
        (
            "bad country code",
            with(&["address", "country"], json!("Britain")),
            422,
            Some("address.country"),
        ),
        (
            "Luhn failure",
            with(&["payment", "card_number"], json!("4242424242424241")),
            422,
            Some("payment.card_number"),
        ),
        (
            "expired card",
            with(&["payment", "expiry"], json!("01/20")),
            422,
            Some("payment.expiry"),
        ),
        (
            "bad cvc",
            with(&["payment", "cvc"], json!("12")),
            422,
            Some("payment.cvc"),
        ),
        (
            "unknown delivery",
            with(&["delivery"], json!("drone")),
            422,
            Some("delivery"),
        ),
        (
            "unknown payment method",
            with(&["payment", "method"], json!("cash")),
            422,
            Some("payment.method"),
        ),
        (
            "unknown fault step",
            with(&["faults"], json!({"teleport": {"kind": "fail"}})),
            422,
            Some("faults.teleport"),
        ),
        (
            "unknown fault kind",
            with(&["faults"], json!({"ship_order": {"kind": "meteor"}})),
            422,
            Some("faults.ship_order.kind"),
        ),
        (
            "crash without the flag",
            with(&["faults"], json!({"ship_order": {"kind": "crash"}})),
            422,
            Some("faults.ship_order"),
        ),
        (
            "qty as text",
            with(&["items", "0", "qty"], json!("two")),
            422,
            Some("items[0].qty"),
        ),
        (
            "missing customer",
            json!({"items": [{"sku": "KB-01", "qty": 1}]}),
            422,
            None,
        ),
    ];
    for (what, body, status, field) in cases {
        let response = shop.post_order(&body, None).await.unwrap();
        assert_eq!(response.status().as_u16(), status, "{what}");
        let error: Value = response.json().await.unwrap();
        let message = error["error"].as_str().unwrap_or("");
        assert!(message.len() > 10, "{what}: {error}");
        if let Some(field) = field {
            assert_eq!(error["field"], field, "{what}: {error}");
        }
        assert!(
            !message.contains("4242424242424241"),
            "{what}: the card number is echoed"
        );
    }
    // Not JSON, wrong content type, too large.
    let raw = shop
        .http
        .post(format!("{}/api/orders", shop.url))
        .header("content-type", "application/json")
        .body("{nope")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 400);
    let text = shop
        .http
        .post(format!("{}/api/orders", shop.url))
        .header("content-type", "text/plain")
        .body(good.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(text.status(), 415);
    assert!(
        text.json::<Value>().await.unwrap()["error"]
            .as_str()
            .unwrap()
            .contains("JSON")
    );
    let mut huge = good.clone();
    huge["customer"]["name"] = json!("x".repeat(2 * 1024 * 1024));
    // Its own connection: the server answers before reading the whole body, then closes it.
    let big = reqwest::Client::new()
        .post(format!("{}/api/orders", shop.url))
        .json(&huge)
        .send()
        .await
        .unwrap();
    assert_eq!(big.status(), 413);
    assert_eq!(shop.saga_count().await.unwrap(), 0, "no saga was created");
    assert_eq!(shop.stock("KB-01").await.unwrap(), before);
}

#[tokio::test]
async fn two_hundred_orders_for_fifty_in_stock_never_oversell() {
    let (_server, shop) = start();
    assert_eq!(shop.stock("SP-10").await.unwrap(), 50);
    let body = order("SP-10", 1, json!({}));
    let orders = (0..200).map(|_| shop.buy(&body));
    let accepted: Vec<_> = futures_util::future::join_all(orders)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    let finishes = accepted.iter().map(|a| shop.finish(&a.saga_id));
    let outcomes: Vec<String> = futures_util::future::join_all(finishes)
        .await
        .into_iter()
        .map(|events| events.unwrap().last().unwrap().event.kind().to_string())
        .collect();
    let completed = outcomes.iter().filter(|o| *o == "saga_completed").count();
    let compensated = outcomes.iter().filter(|o| *o == "saga_compensated").count();
    assert_eq!((completed, compensated), (50, 150));
    assert_eq!(shop.stock("SP-10").await.unwrap(), 0);
}

#[tokio::test]
async fn health_and_metrics() {
    let (_server, shop) = start();
    let a = shop
        .buy(&order(
            "CB-12",
            1,
            json!({"create_invoice": {"kind": "transient", "times": 1}}),
        ))
        .await
        .unwrap();
    shop.finish(&a.saga_id).await.unwrap();
    assert_eq!(
        shop.http
            .get(format!("{}/healthz", shop.url))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // The collector follows the feed; wait until it has seen the end.
    let mut text = String::new();
    for _ in 0..100 {
        text = shop
            .http
            .get(format!("{}/metrics", shop.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if text.contains("saga_finished_total{outcome=\"completed\"} 1") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        text.contains("saga_finished_total{outcome=\"completed\"} 1"),
        "{text}"
    );
    assert!(text.contains("saga_retries_total 1"));
    assert!(text.contains("saga_step_duration_seconds_bucket{step=\"place_order\""));
    assert!(text.contains("sse_subscribers 0"));
}

/// Every record says which node wrote it (`--node-id`): in the event stream, in the saga's
/// detail and in each step's view; a node id that is not a plain name is refused at start.
#[tokio::test]
async fn every_record_names_the_node_that_wrote_it() {
    let server = ShopServer::start(&["--node-id", "shop-a"]).expect("start saga-shop");
    let shop = Shop::new(&server.url);
    let a = shop.buy(&order("KB-01", 1, json!({}))).await.unwrap();
    let events = shop.finish(&a.saga_id).await.unwrap();
    assert!(
        events.iter().all(|e| e.node.as_deref() == Some("shop-a")),
        "{events:?}"
    );
    let detail = shop.saga(&a.saga_id).await.unwrap();
    assert!(
        detail
            .events
            .iter()
            .all(|e| e.node.as_deref() == Some("shop-a"))
    );
    assert!(
        detail
            .steps
            .iter()
            .all(|s| s.node.as_deref() == Some("shop-a")),
        "{:?}",
        detail.steps
    );
    let refused = ShopServer::start(&["--node-id", "a node; DROP TABLE"]);
    assert!(refused.is_err(), "a node id with spaces is refused");
}

/// A saga another node resumed lists both nodes, in the order they drove it, and its records
/// say where the node changed. Here the other node is a restart on the same log under another
/// `--node-id`: what a second node sharing a PostgreSQL log does once the first one stops,
/// without needing two at once. Short leases, so the new node need not wait for the old one's.
#[tokio::test]
async fn a_saga_another_node_resumed_lists_both_nodes_in_order() {
    let dir = scratch_dir("takeover");
    let args = |node: &'static str| ["--node-id", node, "--lease-secs", "1"];
    let mut first = ShopServer::start_in(dir.clone(), &args("shop-a")).expect("start shop-a");
    let shop = Shop::new(&first.url);
    let slow = shop
        .buy(&order(
            "MS-02",
            1,
            json!({"create_invoice": {"kind": "delay", "ms": 2000}}),
        ))
        .await
        .unwrap();
    // Until the slow step has started, then shop-a stops answering.
    let seen = shop.events(&slow.saga_id, None, 4).await.unwrap();
    assert_eq!(
        seen.last().map(|(_, e)| e.event.kind().as_str()),
        Some("step_started")
    );
    first.kill();
    drop(first);

    let second = ShopServer::start_in(dir, &args("shop-b")).expect("start shop-b");
    let shop = Shop::new(&second.url);
    let events = shop.finish(&slow.saga_id).await.unwrap();
    assert_eq!(
        events.last().map(|e| e.event.kind().as_str()),
        Some("saga_completed"),
        "{:?}",
        kinds(&events)
    );
    let plain = shop.buy(&order("KB-01", 1, json!({}))).await.unwrap();
    shop.finish(&plain.saga_id).await.unwrap();

    let list = shop.all_sagas(10).await.unwrap();
    let nodes = |id: &str| {
        list.iter()
            .find(|r| r.saga_id == id)
            .map(|r| r.nodes.clone())
            .expect("a row for the saga")
    };
    assert_eq!(nodes(&slow.saga_id), ["shop-a", "shop-b"]);
    assert_eq!(nodes(&plain.saga_id), ["shop-b"]);

    // The page reads the takeover from the records: shop-b's first one, the invoice sent again.
    let timeline = Timeline::from_events(&slow.saga_id, &STEPS, &events);
    let [takeover] = timeline.takeovers.as_slice() else {
        panic!("one takeover: {:?}", timeline.takeovers);
    };
    assert_eq!(
        (takeover.from.as_str(), takeover.to.as_str()),
        ("shop-a", "shop-b")
    );
    assert_eq!(takeover.step.as_deref(), Some("create_invoice"));
    let said = summary(&events);
    assert!(
        said.contains(
            "The server stopped while issuing the invoice (node shop-a); node shop-b took over"
        ),
        "{said}"
    );
}
