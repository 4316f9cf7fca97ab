//! The `saga-shop` binary as a user runs it: flags, health, the frontend, the API.

use saga_shop_tests::server::ShopServer;

#[tokio::test]
async fn the_server_starts_on_a_fresh_sqlite_file_and_serves_health_page_and_api() {
    let server = ShopServer::start(&[]).expect("start saga-shop");
    let http = reqwest::Client::new();
    let health = http
        .get(format!("{}/healthz", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    assert!(
        server.dir.join("saga-shop.db").exists(),
        "the SQLite file is created on first run"
    );

    let page = http.get(format!("{}/", server.url)).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(
        html.contains("saga_shop_frontend.js"),
        "index.html loads the wasm bundle"
    );
    // Client-side routes get the page too.
    let deep = http
        .get(format!("{}/sagas/some-id", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(deep.status(), 200);
    let wasm = http
        .get(format!("{}/pkg/saga_shop_frontend_bg.wasm", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(wasm.status(), 200);
    assert_eq!(wasm.headers()["content-type"], "application/wasm");

    let sagas: Vec<shared::SagaListItem> = http
        .get(format!("{}/api/sagas", server.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(sagas.is_empty());
    let bad = http
        .get(format!("{}/api/sagas?status=sideways", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let body: shared::ApiErrorBody = bad.json().await.unwrap();
    assert_eq!(body.field.as_deref(), Some("status"));
}

#[test]
fn a_bad_database_url_is_one_clear_error() {
    let out = std::process::Command::new(saga_shop_tests::server::server_binary().unwrap())
        .args(["--listen", "127.0.0.1:0", "--database", "mysql://nope"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--database must start with sqlite:// or postgres://"),
        "{stderr}"
    );
}
