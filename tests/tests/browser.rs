//! Browser tests: the real page in headless Chromium against the real server.

use std::time::Duration;

use saga_shop_tests::browser::{Browser, with_screenshot_on_failure};
use saga_shop_tests::server::ShopServer;

#[tokio::test]
async fn the_webassembly_page_loads_and_fetches_from_the_backend() {
    let server = ShopServer::start(&[]).expect("start saga-shop");
    let browser = Browser::start().await.expect("start Chromium");
    let result = with_screenshot_on_failure(&browser, "page_loads", || async {
        browser.client.goto(&server.url).await?;
        let count = browser
            .wait_testid("saga-count", Duration::from_secs(20))
            .await?;
        let text = count.text().await?;
        anyhow::ensure!(text.contains("sagas on record"), "the page shows {text:?}");
        Ok(())
    })
    .await;
    browser.close().await;
    result.unwrap();
}
