//! How the real `saga-shop` reads what a client sends, found wanting by an outside probe
//! (issue 16): card data never comes back in a refusal or goes into the log, however it is
//! misplaced; a body is one JSON document; media types are parsed as such; every path under
//! `/api` answers as the API; the saga list is paged; and concurrent retries of one order all
//! get the same 202.

use std::time::Duration;

use saga_shop_tests::server::ShopServer;
use saga_shop_tests::shop::{Shop, order};
use serde_json::{Value, json};
use shared::SagaListItem;

const CARD: &str = "4242424242424242";
const CVC: &str = "7373";

fn start() -> (ShopServer, Shop) {
    let server = ShopServer::start(&[]).expect("start saga-shop");
    let shop = Shop::new(&server.url);
    (server, shop)
}

/// An order that is valid in every way, with [`CVC`] as its security code.
fn good() -> Value {
    let mut body = order("KB-01", 1, json!({}));
    body["payment"]["cvc"] = json!(CVC);
    body
}

/// `good()` with the value at `pointer` replaced.
fn with(pointer: &str, value: Value) -> Value {
    let mut body = good();
    *body
        .pointer_mut(pointer)
        .unwrap_or_else(|| panic!("no {pointer} in the order")) = value;
    body
}

/// POST `body` as it is, with `content_type`.
async fn post_raw(shop: &Shop, content_type: &str, body: String) -> reqwest::Response {
    shop.http
        .post(format!("{}/api/orders", shop.url))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap()
}

/// The API's error body: `{"error": "<a sentence>", "field": <path or null>}`.
async fn api_error(what: &str, response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let text = response.text().await.unwrap();
    assert!(
        content_type.starts_with("application/json"),
        "{what}: {status} {content_type}: {text}"
    );
    let body: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what}: {e}: {text}"));
    assert!(
        body["error"].as_str().is_some_and(|e| e.len() > 10),
        "{what}: {body}"
    );
    assert!(
        body.as_object().is_some_and(|o| o.contains_key("field")),
        "{what}: {body}"
    );
    (status, body)
}

#[tokio::test]
async fn card_data_never_comes_back_in_a_refusal_nor_goes_into_the_log() {
    let mut server = ShopServer::start_logged(&[], "trace").expect("start saga-shop");
    let shop = Shop::new(&server.url);
    let number: Value = json!(4242424242424242u64);
    // (what, body, status, field)
    let cases: Vec<(&str, Value, u16, Value)> = vec![
        (
            "card number as a JSON number",
            with("/payment/card_number", number.clone()),
            422,
            json!("payment.card_number"),
        ),
        (
            "security code as a JSON number",
            with("/payment/cvc", json!(7373)),
            422,
            json!("payment.cvc"),
        ),
        (
            "card number as the payment",
            with("/payment", json!(CARD)),
            422,
            json!("payment"),
        ),
        (
            "card number as the payment, a number",
            with("/payment", number.clone()),
            422,
            json!("payment"),
        ),
        (
            "card number as the method",
            with("/payment/method", json!(CARD)),
            422,
            json!("payment.method"),
        ),
        (
            "card number as the method, a number",
            with("/payment/method", number.clone()),
            422,
            json!("payment.method"),
        ),
        (
            "card number as a sku",
            with("/items/0/sku", json!(CARD)),
            422,
            json!("items[0].sku"),
        ),
        (
            "card number as a sku, a number",
            with("/items/0/sku", number.clone()),
            422,
            json!("items[0].sku"),
        ),
        (
            "card number as the delivery",
            with("/delivery", json!(CARD)),
            422,
            json!("delivery"),
        ),
        (
            "card number as the delivery, a number",
            with("/delivery", number.clone()),
            422,
            json!("delivery"),
        ),
        (
            "card number as a quantity",
            with("/items/0/qty", json!(CARD)),
            422,
            json!("items[0].qty"),
        ),
        (
            "card number as a fault's step",
            with("/faults", json!({CARD: {"kind": "fail"}})),
            422,
            json!("faults.?"),
        ),
        (
            "card number as a fault's kind",
            with("/faults", json!({"ship_order": {"kind": CARD}})),
            422,
            json!("faults.ship_order.kind"),
        ),
        (
            "security code as an expiry",
            with("/payment/expiry", json!(CVC)),
            422,
            json!("payment.expiry"),
        ),
        (
            "a card and a wallet in one",
            with("/payment/method", json!("wallet")),
            422,
            json!("payment.wallet_id"),
        ),
    ];
    let mut refusals = Vec::new();
    for (what, body, status, field) in cases {
        let response = shop.post_order(&body, None).await.unwrap();
        let (got, error) = api_error(what, response).await;
        assert_eq!(got, status, "{what}: {error}");
        assert_eq!(error["field"], field, "{what}: {error}");
        refusals.push((what.to_string(), error.to_string()));
    }
    // Card data in the path, the query, the method, and in a service's own body.
    for path in [
        format!("/api/sagas/{CARD}"),
        format!("/api/orders/{CARD}"),
        format!("/api/orders/ord_{CARD}{CARD}"),
        format!("/api/sagas?status={CARD}"),
        format!("/api/sagas?limit={CARD}"),
        format!("/api/sagas?before={CARD}"),
        format!("/api/{CARD}"),
    ] {
        let (status, error) = api_error(&path, shop.request(&path).await.unwrap()).await;
        assert!((400..500).contains(&status), "{path}: {status}");
        refusals.push((path, error.to_string()));
    }
    let method = reqwest::Method::from_bytes(CARD.as_bytes()).unwrap();
    let odd = shop
        .http
        .request(method, format!("{}/api/orders", shop.url))
        .send()
        .await
        .unwrap();
    let (status, error) = api_error("a card number as the method", odd).await;
    assert_eq!(status, 405);
    refusals.push(("method".into(), error.to_string()));
    let tokenise = shop
        .http
        .post(format!("{}/svc/payments/tokens", shop.url))
        .json(&json!({"card_number": number, "expiry": "12/30"}))
        .send()
        .await
        .unwrap();
    let (status, error) = api_error("the payments service's tokens", tokenise).await;
    assert_eq!(status, 422);
    assert_eq!(error["field"], "card_number");
    refusals.push(("tokens".into(), error.to_string()));

    for (what, refusal) in &refusals {
        assert!(
            !refusal.contains(CARD) && !refusal.contains(CVC),
            "{what}: card data comes back: {refusal}"
        );
    }
    assert_eq!(shop.saga_count().await.unwrap(), 0, "no saga was started");
    // An order that goes through takes the card number to tokenisation and no further.
    let accepted = shop.buy(&good()).await.unwrap();
    shop.finish(&accepted.saga_id).await.unwrap();

    let log = server
        .stop_and_read_log(Duration::from_secs(30))
        .expect("the server stops and its log is read");
    assert!(
        log.contains("stopped; unfinished sagas resume at the next start"),
        "the log is read to its end"
    );
    for line in log.lines() {
        assert!(
            !line.contains(CARD),
            "the card number is in the log: {line}"
        );
        // The security code as serde or a JSON body would show it (four digits alone occur
        // anywhere in a trace log: times, ids).
        for shown in [
            format!("`{CVC}`"),
            format!("\"{CVC}\""),
            format!("cvc\":{CVC}"),
        ] {
            assert!(
                !line.contains(&shown),
                "the security code is in the log: {line}"
            );
        }
    }
}

#[tokio::test]
async fn a_body_is_one_json_document_and_nothing_after_it() {
    let (_server, shop) = start();
    let body = good().to_string();
    for (what, text) in [
        ("garbage after the order", format!("{body}garbage")),
        ("two orders in one body", format!("{body}{body}")),
        ("an order, then an empty object", format!("{body} {{}}")),
        ("a comma after the order", format!("{body},")),
    ] {
        let (status, error) =
            api_error(what, post_raw(&shop, "application/json", text).await).await;
        assert_eq!(status, 400, "{what}: {error}");
        assert_eq!(error["field"], Value::Null, "{what}: {error}");
    }
    assert_eq!(shop.saga_count().await.unwrap(), 0, "no saga was started");
    let spaced = post_raw(&shop, "application/json", format!("\n {body} \r\n")).await;
    assert_eq!(spaced.status(), 202, "white space around the order is fine");
    assert_eq!(shop.saga_count().await.unwrap(), 1);
}

#[tokio::test]
async fn media_types_are_parsed_as_media_types() {
    let (_server, shop) = start();
    let body = good().to_string();
    for accepted in [
        "Application/JSON",
        "application/json; charset=utf-8",
        "APPLICATION/json;charset=UTF-8",
    ] {
        let response = post_raw(&shop, accepted, body.clone()).await;
        assert_eq!(response.status(), 202, "{accepted}");
    }
    for refused in [
        "application/jsonx",
        "application/json-seq",
        "text/json",
        "json",
    ] {
        let (status, error) =
            api_error(refused, post_raw(&shop, refused, body.clone()).await).await;
        assert_eq!(status, 415, "{refused}: {error}");
    }
    assert_eq!(shop.saga_count().await.unwrap(), 3);
}

#[tokio::test]
async fn every_path_under_api_answers_as_the_api() {
    let (_server, shop) = start();
    for path in [
        "/api/nope",
        "/api",
        "/api/",
        "/api/sagas/a/b/c",
        "/api/catalog/x",
        // An id that is not UTF-8 once decoded: axum's own answer would be a text 400.
        "/api/sagas/%FF",
        "/api/sagas/%FF/events",
        "/api/orders/%FF",
    ] {
        let (status, error) = api_error(path, shop.request(path).await.unwrap()).await;
        assert_eq!(status, 404, "{path}: {error}");
        assert_eq!(error["field"], Value::Null, "{path}");
    }
    let posted = shop
        .http
        .post(format!("{}/api/nope", shop.url))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(api_error("POST /api/nope", posted).await.0, 404);
    for (method, path, allow) in [
        (reqwest::Method::GET, "/api/orders", "POST"),
        (reqwest::Method::DELETE, "/api/sagas", "GET"),
        (reqwest::Method::PUT, "/api/catalog", "GET"),
    ] {
        let response = shop
            .http
            .request(method.clone(), format!("{}{path}", shop.url))
            .send()
            .await
            .unwrap();
        let allowed = response
            .headers()
            .get("allow")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let (status, error) = api_error(path, response).await;
        assert_eq!(status, 405, "{method} {path}: {error}");
        assert!(allowed.contains(allow), "{method} {path}: Allow: {allowed}");
    }
    // Outside /api, the page routes itself.
    for path in ["/", "/sagas/0190d1b2-0000-7000-8000-000000000000", "/nope"] {
        let page = shop.request(path).await.unwrap();
        assert_eq!(page.status(), 200, "{path}");
        let content_type = page.headers()["content-type"].to_str().unwrap().to_string();
        assert!(
            content_type.starts_with("text/html"),
            "{path}: {content_type}"
        );
    }
}

#[tokio::test]
async fn the_saga_list_comes_in_pages_newest_first() {
    let (_server, shop) = start();
    // Sagas that fail at once: quick, and they take no stock.
    let failing = order("KB-01", 1, json!({"place_order": {"kind": "fail"}}));
    let orders = (0..57).map(|_| shop.buy(&failing));
    let started: Vec<String> = futures_util::future::join_all(orders)
        .await
        .into_iter()
        .map(|a| a.unwrap().saga_id)
        .collect();

    // Until every one has ended, so that the lists read below do not change in between.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let ended: Vec<Value> = shop
            .request("/api/sagas?status=compensated&limit=500")
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if ended.len() == started.len() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {} sagas ended within 60 s",
            ended.len(),
            started.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let first = shop.request("/api/sagas").await.unwrap();
    assert_eq!(first.status(), 200);
    let first: Vec<SagaListItem> = first.json().await.unwrap();
    assert_eq!(
        first.len(),
        50,
        "a page holds 50 sagas unless asked otherwise"
    );

    let everything: Vec<SagaListItem> = shop
        .request("/api/sagas?limit=500")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(everything.len(), 57);
    let mut ids: Vec<&str> = everything.iter().map(|s| s.saga_id.as_str()).collect();
    assert!(
        everything
            .windows(2)
            .all(|w| w[0].started_at >= w[1].started_at),
        "newest first"
    );
    assert_eq!(
        first[..],
        everything[..50],
        "the default page is the list's head"
    );
    ids.sort_unstable();
    let mut expected: Vec<&str> = started.iter().map(String::as_str).collect();
    expected.sort_unstable();
    assert_eq!(ids, expected);

    // Page by page: the same list, each saga once.
    let paged = shop.all_sagas(7).await.unwrap();
    let paged: Vec<&str> = paged.iter().map(|s| s.saga_id.as_str()).collect();
    let listed: Vec<&str> = everything.iter().map(|s| s.saga_id.as_str()).collect();
    assert_eq!(paged, listed);
    let last = &everything[56].saga_id;
    let after_last: Vec<Value> = shop
        .request(&format!("/api/sagas?before={last}"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(after_last.is_empty());
    let tail: Vec<SagaListItem> = shop
        .request(&format!(
            "/api/sagas?status=compensated&before={}&limit=3",
            everything[9].saga_id
        ))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(tail[..], everything[10..13]);

    for (path, field) in [
        ("/api/sagas?limit=501", "limit"),
        ("/api/sagas?limit=0", "limit"),
        ("/api/sagas?limit=-1", "limit"),
        ("/api/sagas?limit=many", "limit"),
        ("/api/sagas?before=nope", "before"),
        (
            "/api/sagas?before=0190d1b2-0000-7000-8000-000000000000",
            "before",
        ),
        ("/api/sagas?status=lost", "status"),
    ] {
        let (status, error) = api_error(path, shop.request(path).await.unwrap()).await;
        assert_eq!(status, 400, "{path}: {error}");
        assert_eq!(error["field"], field, "{path}: {error}");
    }
    let (_, error) = api_error("limit", shop.request("/api/sagas?limit=501").await.unwrap()).await;
    assert!(
        error["error"].as_str().unwrap().contains("500"),
        "the refusal says the most a page holds: {error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_retries_of_one_order_all_get_the_same_answer() {
    let (_server, shop) = start();
    let body = order("MN-03", 1, json!({"place_order": {"kind": "fail"}}));
    const ROUNDS: usize = 50;
    for round in 0..ROUNDS {
        let key = format!("checkout-{round}");
        let posts = (0..20).map(|_| {
            let (shop, body, key) = (&shop, &body, key.as_str());
            async move {
                let response = shop.post_order(body, Some(key)).await.unwrap();
                let status = response.status().as_u16();
                (status, response.text().await.unwrap())
            }
        });
        let answers = futures_util::future::join_all(posts).await;
        for (status, text) in &answers {
            assert_eq!(*status, 202, "round {round}: {text}");
            assert_eq!(text, &answers[0].1, "round {round}: one answer for all");
        }
    }
    assert_eq!(shop.saga_count().await.unwrap(), ROUNDS, "one saga per key");
}
