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

/// `--schema PREFIX` on PostgreSQL: every table of the deployment, the saga log's and each
/// service's, lives in a schema named under the prefix, so two deployments share a database
/// without seeing each other's data. The schemas are dropped afterwards.
#[tokio::test]
async fn a_schema_prefix_keeps_a_deployment_apart_on_a_shared_postgres() {
    let Ok(url) = std::env::var("SAGA_TEST_POSTGRES_URL") else {
        eprintln!("SKIPPED: SAGA_TEST_POSTGRES_URL is not set");
        return;
    };
    let db = sqlx::PgPool::connect(&url).await.expect("connect");
    let prefixes = [
        saga_shop_tests::unique_name("ta"),
        saga_shop_tests::unique_name("tb"),
    ];
    let schemas_of = |prefix: &str| -> Vec<String> {
        ["billing", "orders", "payments", "saga_log", "shipping"]
            .iter()
            .map(|c| format!("{prefix}_{c}"))
            .collect()
    };
    let result = async {
        let a = ShopServer::start(&["--database", &url, "--schema", &prefixes[0]])?;
        let b = ShopServer::start(&["--database", &url, "--schema", &prefixes[1]])?;
        let shop_a = saga_shop_tests::shop::Shop::new(&a.url);
        let shop_b = saga_shop_tests::shop::Shop::new(&b.url);
        let order = saga_shop_tests::shop::order("KB-01", 1, serde_json::json!({}));
        let bought = shop_a.buy(&order).await?;
        shop_a.finish(&bought.saga_id).await?;
        // B's shop is untouched: its own stock, and no saga.
        anyhow::ensure!(shop_b.saga_count().await? == 0, "B sees A's saga");
        anyhow::ensure!(
            shop_a.stock("KB-01").await? + 1 == shop_b.stock("KB-01").await?,
            "A's sale took B's stock"
        );
        let found: Vec<String> = sqlx::query_scalar(
            "SELECT nspname::text FROM pg_namespace WHERE nspname LIKE $1 ORDER BY 1",
        )
        .bind(format!("{}\\_%", prefixes[0]))
        .fetch_all(&db)
        .await?;
        anyhow::ensure!(found == schemas_of(&prefixes[0]), "{found:?}");
        // The prefix is a name this test made (letters, digits, `_`).
        let logged: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM {}_saga_log.saga_log",
            prefixes[0]
        )))
        .fetch_one(&db)
        .await?;
        anyhow::ensure!(logged > 5, "the saga is in A's own log ({logged} records)");
        Ok(())
    }
    .await;
    for prefix in &prefixes {
        for schema in schemas_of(prefix) {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP SCHEMA IF EXISTS {schema} CASCADE"
            )))
            .execute(&db)
            .await;
        }
    }
    result.unwrap();
}

#[tokio::test]
async fn a_schema_prefix_is_refused_for_sqlite_and_when_it_is_not_a_plain_name() {
    let refused = ShopServer::start(&["--schema", "shop_a"]);
    assert!(refused.is_err(), "--schema with a SQLite file");
    let refused = ShopServer::start(&["--schema", "Shop-A; drop"]);
    assert!(refused.is_err(), "a prefix that is not a plain name");
}
