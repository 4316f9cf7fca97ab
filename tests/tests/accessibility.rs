//! Accessibility: axe-core run in headless Chromium on the real page, at 1280×800, in the
//! states a person meets — the shop before anything happened, a saga that unwound, and a
//! saga's own address opened directly. Any serious or critical violation fails the test,
//! with every page's violations named (rule, impact, the first elements).

use std::time::Duration;

use saga_shop_tests::axe::Axe;
use saga_shop_tests::browser::{Browser, with_screenshot_on_failure};
use saga_shop_tests::server::ShopServer;

const LONG: Duration = Duration::from_secs(40);

/// Until no colour on the page is changing any more: a lane fading to its new background
/// would be measured half-way. (Transitions only: a running bar's pulse has no text.)
async fn settled(b: &Browser) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + LONG;
    loop {
        let running = b
            .client
            .execute(
                "return document.getAnimations().filter(a => a instanceof CSSTransition && a.playState === 'running')
                   .map(a => a.effect.target.className + ' ' + a.transitionProperty);",
                vec![],
            )
            .await?;
        if running.as_array().is_some_and(Vec::is_empty) {
            return Ok(());
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "still in transition after {LONG:?}: {running}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A saga's end: its status in the timeline and in the list, and the panel of what the
/// services hold, filled.
async fn finished(b: &Browser, id: &str, status: &str) -> anyhow::Result<()> {
    b.wait_attr("timeline", "data-status", status, LONG).await?;
    b.wait_attr(&format!("saga-row-{id}"), "data-status", status, LONG)
        .await?;
    b.client
        .wait()
        .at_most(LONG)
        .for_element(fantoccini::Locator::Css("[data-testid=service-state] dl"))
        .await?;
    settled(b).await
}

#[tokio::test]
async fn the_shop_and_a_compensated_saga_have_no_serious_accessibility_violations() {
    let axe = Axe::from_env().unwrap_or_else(|e| panic!("{e}"));
    let server = ShopServer::start(&[]).expect("start saga-shop");
    let b = Browser::start().await.expect("start Chromium");
    let result = async {
        b.client.set_window_size(1280, 800).await?;
        let mut reports = Vec::new();

        b.client.goto(&server.url).await?;
        b.wait_testid("add-KB-01", LONG).await?;
        settled(&b).await?;
        reports.extend(axe.audit(&b, "the shop page, idle").await?);

        b.select("fault-process_payment", "fail").await?;
        b.click("add-KB-01").await?;
        b.click("buy").await?;
        let id = b
            .wait_testid("timeline", LONG)
            .await?
            .attr("data-saga-id")
            .await?
            .unwrap_or_default();
        finished(&b, &id, "compensated").await?;
        reports.extend(axe.audit(&b, "the shop after a compensated saga").await?);

        b.client.goto(&format!("{}/sagas/{id}", server.url)).await?;
        finished(&b, &id, "compensated").await?;
        reports.extend(
            axe.audit(&b, &format!("/sagas/{id} opened directly"))
                .await?,
        );

        anyhow::ensure!(reports.is_empty(), "{}", reports.join("\n"));
        Ok(())
    }
    .await;
    let result = with_screenshot_on_failure(&b, "accessibility", || async { result }).await;
    b.close().await;
    result.unwrap();
}
