//! Browser tests: the real page in headless Chromium against the real server. A person's
//! path through the shop: add to cart, fill the form, pick faults, press Buy, watch the saga.

use std::time::Duration;

use saga_shop_tests::browser::{Browser, with_screenshot_on_failure};
use saga_shop_tests::server::ShopServer;
use saga_shop_tests::shop::{Shop, order};
use serde_json::json;

const LONG: Duration = Duration::from_secs(40);

/// Start a server and a browser on the shop page, run `body`, screenshot on failure.
async fn scenario<F, Fut>(name: &str, body: F)
where
    F: FnOnce(Browser, String) -> Fut,
    Fut: std::future::Future<Output = (Browser, anyhow::Result<()>)>,
{
    let server = ShopServer::start(&[]).expect("start saga-shop");
    let browser = Browser::start().await.expect("start Chromium");
    browser
        .client
        .goto(&server.url)
        .await
        .expect("open the shop");
    let url = server.url.clone();
    let (browser, result) = body(browser, url).await;
    let result = with_screenshot_on_failure(&browser, name, || async { result }).await;
    browser.close().await;
    result.unwrap();
}

async fn buy(b: &Browser, sku: &str) -> anyhow::Result<String> {
    b.click(&format!("add-{sku}")).await?;
    b.click("buy").await?;
    let timeline = b.wait_testid("timeline", LONG).await?;
    // The timeline of the new saga: its id is in the address bar too.
    let id = timeline.attr("data-saga-id").await?.unwrap_or_default();
    anyhow::ensure!(
        b.client.current_url().await?.path() == format!("/sagas/{id}"),
        "the saga has its own URL"
    );
    Ok(id)
}

#[tokio::test]
async fn the_happy_path_ends_completed_with_every_lane_succeeded() {
    scenario("happy_path", |b, _| async move {
        let r = async {
            buy(&b, "KB-01").await?;
            // A saga of a few ms is played slowed, and says so.
            let playback = b.wait_testid("playback", LONG).await?;
            let speed: u32 = playback
                .attr("data-speed")
                .await?
                .unwrap_or_default()
                .parse()
                .unwrap_or(0);
            anyhow::ensure!(speed > 1, "played {speed}x slower");
            let label = playback.text().await?;
            anyhow::ensure!(label.contains(&format!("{speed}× slower")), "{label}");
            b.wait_attr("timeline", "data-status", "completed", LONG)
                .await?;
            b.wait_attr("playback", "data-speed", "1", LONG).await?;
            let label = b.wait_testid("playback", LONG).await?.text().await?;
            anyhow::ensure!(label.contains("too fast to follow"), "{label}");
            anyhow::ensure!(
                b.lanes().await? == ["succeeded"; 4],
                "lanes {:?}",
                b.lanes().await?
            );
            let state = b.wait_testid("service-state", LONG).await?;
            b.client
                .wait()
                .at_most(LONG)
                .for_element(fantoccini::Locator::Css("[data-testid=service-state] dl"))
                .await?;
            let text = state.text().await?;
            anyhow::ensure!(
                text.contains("confirmed")
                    && text.contains("captured")
                    && text.contains("scheduled"),
                "{text}"
            );
            let log = b.wait_testid("event-log", LONG).await?.text().await?;
            anyhow::ensure!(log.contains("saga_completed"), "{log}");
            let summary = b.wait_testid("saga-summary", LONG).await?.text().await?;
            anyhow::ensure!(
                summary.starts_with("The order is confirmed")
                    && summary.ends_with("You were charged."),
                "{summary}"
            );
            // The bars read without a manual: a time axis with ticks, and a legend.
            let axis = b.wait_testid("time-axis", LONG).await?.text().await?;
            anyhow::ensure!(
                axis.starts_with("0 ms") && axis.contains(" ms"),
                "axis: {axis}"
            );
            let legend = b.wait_testid("timeline-legend", LONG).await?.text().await?;
            anyhow::ensure!(
                legend.contains("compensation (undo)") && legend.contains("interrupted by a crash"),
                "legend: {legend}"
            );
            Ok(())
        }
        .await;
        (b, r)
    })
    .await;
}

/// An address naming no saga says so, rather than showing a saga waiting to start forever.
#[tokio::test]
async fn an_unknown_saga_in_the_address_says_there_is_none() {
    scenario("no_such_saga", |b, url| async move {
        let r = async {
            b.client
                .goto(&format!("{url}/sagas/01935f5e-0000-7000-8000-000000000000"))
                .await?;
            let text = b.wait_testid("saga-missing", LONG).await?.text().await?;
            anyhow::ensure!(text.contains("No such saga"), "{text}");
            Ok(())
        }
        .await;
        (b, r)
    })
    .await;
}

/// The timeline's box and the viewport's height, as the page lays them out now.
async fn timeline_box(b: &Browser) -> anyhow::Result<(f64, f64, f64)> {
    let got = b
        .client
        .execute(
            "const r = document.querySelector('[data-testid=timeline]').getBoundingClientRect(); \
             return [r.top, r.bottom, window.innerHeight];",
            vec![],
        )
        .await?;
    let n = |i: usize| got[i].as_f64().unwrap_or(f64::NAN);
    Ok((n(0), n(1), n(2)))
}

/// Buy is at the bottom of a long form; the new saga's timeline must be where the person is
/// looking: wholly in the viewport side by side at 1280×800, brought into view on a phone.
#[tokio::test]
async fn the_new_sagas_timeline_is_in_view_after_buy() {
    scenario("timeline_in_view", |b, url| async move {
        let r = async {
            b.client.set_window_size(1280, 800).await?;
            buy(&b, "KB-01").await?;
            let placed = b.wait_testid("order-placed", LONG).await?.text().await?;
            anyhow::ensure!(placed.starts_with("Order ord_"), "{placed}");
            b.wait_attr("timeline", "data-status", "completed", LONG)
                .await?;
            let (top, bottom, height) = timeline_box(&b).await?;
            anyhow::ensure!(
                top >= 0.0 && bottom <= height,
                "at 1280×800 the timeline spans {top}..{bottom} of a {height} px viewport"
            );
            // The line confirming the order is in view too, by the button just pressed.
            b.wait_js(
                "const r = document.querySelector('[data-testid=order-placed]').getBoundingClientRect(); \
                 return r.top >= 0 && r.bottom <= window.innerHeight;",
                "the order's confirmation line is out of view after Buy",
                LONG,
            )
            .await?;
            b.screenshot("after-buy-1280").await?;

            b.client.goto(&url).await?;
            b.client.set_window_size(375, 812).await?;
            buy(&b, "KB-01").await?;
            b.wait_attr("timeline", "data-status", "completed", LONG)
                .await?;
            let (top, _, height) = timeline_box(&b).await?;
            anyhow::ensure!(
                (0.0..height / 2.0).contains(&top),
                "at 375 px the timeline starts at {top} of a {height} px viewport"
            );
            Ok(())
        }
        .await;
        (b, r)
    })
    .await;
}

#[tokio::test]
async fn a_declined_card_compensates_back_up_the_lanes() {
    scenario("declined_card", |b, _| async move {
        let r = async {
            b.fill("field-card_number", "4000 0000 0000 0002").await?;
            buy(&b, "MS-02").await?;
            b.wait_attr("timeline", "data-status", "compensated", LONG)
                .await?;
            let lanes = b.lanes().await?;
            anyhow::ensure!(
                lanes == ["compensated", "compensated", "failed", "skipped"],
                "lanes {lanes:?}"
            );
            let summary = b.wait_testid("saga-summary", LONG).await?.text().await?;
            anyhow::ensure!(
                summary
                    == "The payment was refused (card ending 0002): the card was declined. The \
                        invoice was voided and the order was cancelled, its stock back on the \
                        shelf. You were not charged.",
                "{summary}"
            );
            Ok(())
        }
        .await;
        (b, r)
    })
    .await;
}

#[tokio::test]
async fn an_unserved_country_compensates_three_steps_and_makes_the_readme_screenshot() {
    scenario("unserved_country", |b, _| async move {
        let r = async {
            b.fill("field-country", "AQ").await?;
            buy(&b, "HP-04").await?;
            b.wait_attr("timeline", "data-status", "compensated", LONG)
                .await?;
            let lanes = b.lanes().await?;
            anyhow::ensure!(
                lanes == ["compensated", "compensated", "compensated", "failed"],
                "lanes {lanes:?}"
            );
            let summary = b.wait_testid("saga-summary", LONG).await?.text().await?;
            anyhow::ensure!(
                summary.starts_with("The shipment could not be scheduled: ")
                    && summary.ends_with("You were charged, then refunded in full."),
                "{summary}"
            );
            b.client
                .wait()
                .at_most(LONG)
                .for_element(fantoccini::Locator::Css("[data-testid=service-state] dl"))
                .await?;
            b.client.execute("window.scrollTo(0, 0)", vec![]).await?;
            b.screenshot("timeline-compensated").await?;
            Ok(())
        }
        .await;
        (b, r)
    })
    .await;
}

#[tokio::test]
async fn insufficient_stock_fails_the_first_step_and_skips_the_rest() {
    scenario("out_of_stock", |b, url| async move {
        let r = async {
            // The cart takes no more than the stock the page shows (4)...
            b.click("add-DS-08").await?;
            b.fill("qty-DS-08", "4").await?;
            // ...but someone else buys two before this Buy: the stock shown is stale.
            let shop = Shop::new(&url);
            let other = shop.buy(&order("DS-08", 2, json!({}))).await?;
            shop.finish(&other.saga_id).await?;
            anyhow::ensure!(
                shop.stock("DS-08").await? == 2,
                "the other purchase took two"
            );
            b.click("buy").await?;
            b.wait_attr("timeline", "data-status", "compensated", LONG)
                .await?;
            let lanes = b.lanes().await?;
            anyhow::ensure!(
                lanes == ["failed", "skipped", "skipped", "skipped"],
                "lanes {lanes:?}"
            );
            let summary = b.wait_testid("saga-summary", LONG).await?.text().await?;
            anyhow::ensure!(
                summary.starts_with("The order was refused: ")
                    && summary.contains("Nothing had been done yet, so nothing was undone.")
                    && summary.ends_with("You were not charged."),
                "{summary}"
            );
            Ok(())
        }
        .await;
        (b, r)
    })
    .await;
}

#[tokio::test]
async fn faults_from_the_panel_show_their_retries_timeouts_and_stuck_compensations() {
    scenario("fault_panel", |b, url| async move {
        let r = async {
            // Transient: the lane retries, then succeeds on the third attempt.
            b.select("fault-create_invoice", "transient").await?;
            buy(&b, "CB-12").await?;
            b.wait_attr("timeline", "data-status", "completed", LONG)
                .await?;
            let lane = b
                .wait_testid("step-create_invoice", LONG)
                .await?
                .text()
                .await?;
            anyhow::ensure!(lane.contains("3 attempts"), "{lane}");
            // The reasons of the failed attempts stay, and the waits between them are drawn.
            anyhow::ensure!(lane.matches("waited ").count() == 2, "{lane}");
            anyhow::ensure!(
                lane.matches("#1 ").count() == 1 && lane.contains(": "),
                "{lane}"
            );
            let waits = b
                .client
                .find_all(fantoccini::Locator::Css(
                    "[data-testid=step-create_invoice] .bar.wait",
                ))
                .await?;
            anyhow::ensure!(waits.len() == 2, "{} waits drawn", waits.len());
            let log = b.wait_testid("event-log", LONG).await?.text().await?;
            anyhow::ensure!(log.matches("step_retrying").count() == 2, "{log}");
            let summary = b.wait_testid("saga-summary", LONG).await?.text().await?;
            anyhow::ensure!(summary.starts_with("The order is confirmed"), "{summary}");

            // Timeout: the step times out three times, its outcome is unknown, and it is compensated too.
            b.client.goto(&url).await?;
            b.select("fault-ship_order", "timeout").await?;
            buy(&b, "CB-12").await?;
            b.wait_attr("step-ship_order", "data-status", "retrying", LONG)
                .await?;
            b.wait_attr("timeline", "data-status", "compensated", LONG)
                .await?;
            anyhow::ensure!(
                b.lanes().await? == ["compensated"; 4],
                "lanes {:?}",
                b.lanes().await?
            );
            b.client
                .find(fantoccini::Locator::Css(
                    "[data-testid=step-ship_order] .bar.timeout",
                ))
                .await?;
            // The step's time limit is marked where the attempts ran into it.
            b.client
                .find(fantoccini::Locator::Css(
                    "[data-testid=step-ship_order] .limit",
                ))
                .await?;
            let summary = b.wait_testid("saga-summary", LONG).await?.text().await?;
            anyhow::ensure!(
                summary.starts_with("Shipping did not answer in time")
                    && summary
                        .contains("whether it went through is unknown: it is undone as if it had")
                    && summary.ends_with("You were charged, then refunded in full."),
                "{summary}"
            );

            // Delay: the lane is seen running. Compensation that never succeeds: stuck.
            b.client.goto(&url).await?;
            b.select("fault-create_invoice", "delay").await?;
            b.select("fault-place_order", "compensation_fail").await?;
            b.fill("field-card_number", "4000000000000002").await?;
            buy(&b, "CB-12").await?;
            b.wait_attr("step-create_invoice", "data-status", "running", LONG)
                .await?;
            // A step that takes seconds is followed in real time, not slowed.
            b.wait_attr("playback", "data-speed", "1", LONG).await?;
            b.screenshot("timeline-running").await?;
            b.wait_attr("timeline", "data-status", "stuck", LONG)
                .await?;
            let lane = b
                .wait_testid("step-place_order", LONG)
                .await?
                .text()
                .await?;
            anyhow::ensure!(lane.contains("undo failed: needs a person"), "{lane}");
            let summary = b.wait_testid("saga-summary", LONG).await?.text().await?;
            anyhow::ensure!(
                summary.contains("Left behind: the order stays open with its stock reserved")
                    && summary.contains("needs a person"),
                "{summary}"
            );
            // The README's picture starts at the saga's heading.
            b.client
                .execute(
                    "document.querySelector('[data-testid=timeline]').scrollIntoView()",
                    vec![],
                )
                .await?;
            b.screenshot("timeline-stuck").await?;
            // The outage is over: the operator retries, and the saga unwinds to the end.
            b.click("retry-saga").await?;
            b.wait_attr("timeline", "data-status", "compensated", LONG)
                .await?;
            b.wait_attr("step-place_order", "data-status", "compensated", LONG)
                .await?;
            let summary = b.wait_testid("saga-summary", LONG).await?.text().await?;
            anyhow::ensure!(
                summary.contains("until a person retried the compensation"),
                "{summary}"
            );
            let log = b.wait_testid("event-log", LONG).await?.text().await?;
            anyhow::ensure!(log.matches("saga_resumed").count() == 1, "{log}");
            // The log follows its newest row, with the reason of each failure in words.
            anyhow::ensure!(log.contains("the compensation failed"), "{log}");
            b.wait_js(
                "const w = document.querySelector('.log-wrap'); \
                 return w.scrollHeight - w.scrollTop - w.clientHeight < 4;",
                "the event log never scrolled to its newest row",
                LONG,
            )
            .await?;
            Ok(())
        }
        .await;
        (b, r)
    })
    .await;
}

#[tokio::test]
async fn a_reload_mid_saga_replays_history_and_continues_without_losing_events() {
    scenario("reload", |b, _| async move {
        let r = async {
            b.select("fault-process_payment", "delay").await?; // 2000 ms unless changed
            let id = buy(&b, "SS-11").await?;
            b.wait_attr("step-process_payment", "data-status", "running", LONG)
                .await?;
            b.client.refresh().await?;
            b.wait_attr("timeline", "data-saga-id", &id, LONG).await?;
            b.wait_attr("timeline", "data-status", "completed", LONG)
                .await?;
            let rows = b
                .client
                .find_all(fantoccini::Locator::Css("[data-testid=event-log] tbody tr"))
                .await?;
            let mut seqs = Vec::new();
            for row in rows {
                let text = row.text().await?;
                seqs.push(
                    text.split_whitespace()
                        .next()
                        .unwrap_or("")
                        .parse::<u64>()?,
                );
            }
            anyhow::ensure!(
                seqs == (1..=10).collect::<Vec<_>>(),
                "event log seqs {seqs:?}"
            );
            // The saga list shows it, live, and opens it.
            b.wait_attr(&format!("saga-row-{id}"), "data-status", "completed", LONG)
                .await?;
            Ok(())
        }
        .await;
        (b, r)
    })
    .await;
}

#[tokio::test]
async fn the_form_checks_fields_as_the_server_would() {
    scenario("validation", |b, _| async move {
        let r = async {
            b.click("add-KB-01").await?;
            b.fill("field-email", "not-an-email").await?;
            b.fill("field-card_number", "4242 4242 4242 4241").await?;
            b.click("buy").await?;
            let page = b
                .client
                .find(fantoccini::Locator::Css("form.checkout"))
                .await?
                .text()
                .await?;
            anyhow::ensure!(page.contains("the email address needs an @"), "{page}");
            anyhow::ensure!(page.contains("that card number is not valid"), "{page}");
            anyhow::ensure!(
                b.client.current_url().await?.path() == "/",
                "no saga was started"
            );
            Ok(())
        }
        .await;
        (b, r)
    })
    .await;
}

#[tokio::test]
async fn missing_funds_and_refusing_or_flaky_compensations_from_the_panel() {
    scenario("more_faults", |b, url| async move {
        let r = async {
            // A card without funds: the payment lane fails, the two before it are undone.
            b.fill("field-card_number", "4000 0000 0000 9995").await?;
            buy(&b, "WC-05").await?;
            b.wait_attr("timeline", "data-status", "compensated", LONG)
                .await?;
            anyhow::ensure!(
                b.lanes().await? == ["compensated", "compensated", "failed", "skipped"],
                "lanes {:?}",
                b.lanes().await?
            );
            let summary = b.wait_testid("saga-summary", LONG).await?.text().await?;
            anyhow::ensure!(
                summary.starts_with(
                    "The payment was refused (card ending 9995): the card has insufficient funds."
                ) && summary.ends_with("You were not charged."),
                "{summary}"
            );
            // Replayed to the moment the payment failed, every part of the page shows that
            // moment: the lanes, the summary and what the services held.
            let failed_at = b
                .client
                .execute(
                    "return [...document.querySelectorAll('[data-testid=event-log] tbody tr')] \
                     .findIndex(r => r.classList.contains('step_failed')) + 1;",
                    vec![],
                )
                .await?;
            let failed_at = failed_at.as_u64().unwrap_or(0);
            anyhow::ensure!(failed_at > 0, "the log has the failed step");
            b.client
                .execute(
                    "const s = document.querySelector('[data-testid=scrubber]'); \
                     s.value = arguments[0]; \
                     s.dispatchEvent(new Event('input', { bubbles: true }));",
                    vec![failed_at.into()],
                )
                .await?;
            b.wait_attr("step-place_order", "data-status", "succeeded", LONG)
                .await?;
            let services = b.wait_testid("service-state", LONG).await?.text().await?;
            anyhow::ensure!(
                services.contains(&format!("At event {failed_at} of"))
                    && services.contains("the invoice is issued")
                    && services.contains("The payment was refused"),
                "{services}"
            );
            let summary = b.wait_testid("saga-summary", LONG).await?.text().await?;
            anyhow::ensure!(summary.contains("The payment was refused"), "{summary}");

            // `fail` on create_invoice, with a compensation of place_order that fails twice first.
            b.client.goto(&url).await?;
            b.select("fault-create_invoice", "fail").await?;
            b.select("fault-place_order", "compensation_transient")
                .await?;
            buy(&b, "WC-05").await?;
            b.wait_attr("timeline", "data-status", "compensated", LONG)
                .await?;
            anyhow::ensure!(
                b.lanes().await? == ["compensated", "failed", "skipped", "skipped"],
                "lanes {:?}",
                b.lanes().await?
            );
            let log = b.wait_testid("event-log", LONG).await?.text().await?;
            anyhow::ensure!(log.matches("compensation_failed").count() == 2, "{log}");
            Ok(())
        }
        .await;
        (b, r)
    })
    .await;
}

#[tokio::test]
async fn a_crash_chosen_in_the_panel_kills_the_server_and_the_saga_finishes_after_a_restart() {
    let dir = saga_shop_tests::server::scratch_dir("browser-crash");
    let mut server =
        ShopServer::start_in(dir.clone(), &["--allow-crash-faults"]).expect("start saga-shop");
    let browser = Browser::start().await.expect("start Chromium");
    let result = async {
        browser.client.goto(&server.url).await?;
        browser.select("fault-process_payment", "crash").await?;
        let id = buy(&browser, "KB-01").await?;
        let status = server.wait_exit(LONG)?;
        anyhow::ensure!(!status.success(), "the crash fault aborts the server");
        // The page says its live updates are paused, not that the saga stalled.
        browser
            .wait_attr("live-status", "data-state", "reconnecting", LONG)
            .await?;
        let said = browser
            .wait_testid("live-status", LONG)
            .await?
            .text()
            .await?;
        anyhow::ensure!(said.contains("reconnecting"), "{said}");
        let url = server.url.clone();
        drop(server);
        // Back on the same address: the same page picks the saga up again by itself.
        let _restarted = ShopServer::restart_at(dir, &url, &["--allow-crash-faults"])?;
        browser
            .wait_attr("timeline", "data-status", "completed", LONG)
            .await?;
        browser
            .wait_attr("live-status", "data-state", "live", LONG)
            .await?;
        anyhow::ensure!(
            browser.client.current_url().await?.path() == format!("/sagas/{id}"),
            "still on the saga's page"
        );
        let summary = browser
            .wait_testid("saga-summary", LONG)
            .await?
            .text()
            .await?;
        anyhow::ensure!(
            summary.contains("The server stopped while charging the payment")
                && summary.contains("resumed from its log")
                && summary.ends_with("you were not charged twice."),
            "{summary}"
        );
        let lane = browser
            .wait_testid("step-process_payment", LONG)
            .await?
            .text()
            .await?;
        anyhow::ensure!(
            lane.contains("2 attempts"),
            "the interrupted attempt shows: {lane}"
        );
        browser
            .client
            .find(fantoccini::Locator::Css(
                "[data-testid=step-process_payment] .bar.interrupted",
            ))
            .await?;
        // The restart is a new node (the default id is the host and the process): the lane
        // where it resumed says who took over from whom, and so does the event log.
        let takeover = browser
            .client
            .find(fantoccini::Locator::Css(
                "[data-testid=step-process_payment] [data-testid=takeover]",
            ))
            .await?;
        let from = takeover.attr("data-from").await?.unwrap_or_default();
        let to = takeover.attr("data-to").await?.unwrap_or_default();
        anyhow::ensure!(!from.is_empty() && from != to, "{from} → {to}");
        let said = takeover.text().await?;
        anyhow::ensure!(
            said.contains("took over from") && said.contains(&from) && said.contains(&to),
            "{said}"
        );
        browser
            .client
            .find(fantoccini::Locator::Css(&format!(
                "[data-testid=takeover-row][data-from='{from}'][data-to='{to}']"
            )))
            .await?;
        // The list names the nodes once a row was taken over (fetched again as it finished).
        browser
            .wait_js(
                &format!(
                    "const row = document.querySelector('[data-testid=\"saga-row-{id}\"]'); \
                     return !!row && row.textContent.includes('{from} → {to}');"
                ),
                "the saga's row names both nodes",
                LONG,
            )
            .await?;
        Ok(())
    }
    .await;
    let result = with_screenshot_on_failure(&browser, "crash", || async { result }).await;
    browser.close().await;
    result.unwrap();
}

/// Two nodes on one PostgreSQL database: a saga node a drives, watched on node b's page, is
/// taken over by node b when node a is killed, and the page that never left node b shows it
/// happen live: the lane where node b resumed says who took over from whom, the event log has
/// the row, the summary says so, and the saga completes.
#[tokio::test]
async fn a_saga_watched_on_another_node_shows_its_takeover_when_its_node_dies() {
    let Some(mut cluster) = saga_shop_tests::cluster::Cluster::start("browser takeover", 2, 2, &[])
        .await
        .expect("start two nodes")
    else {
        return;
    };
    let browser = Browser::start().await.expect("start Chromium");
    let result = async {
        let slow = json!({"kind": "delay", "ms": 2500});
        let accepted = cluster
            .node("node-a")
            .shop()
            .buy(&order("KB-01", 1, json!({ "process_payment": slow })))
            .await?;
        let id = accepted.saga_id;
        let on_b = format!("{}/sagas/{id}", cluster.node("node-b").url());
        browser.client.goto(&on_b).await?;
        browser
            .wait_attr("step-process_payment", "data-status", "running", LONG)
            .await?;
        cluster.node_mut("node-a").kill();
        browser
            .wait_attr("timeline", "data-status", "completed", LONG)
            .await?;
        let takeover = browser
            .client
            .find(fantoccini::Locator::Css(
                "[data-testid=step-process_payment] [data-testid=takeover]",
            ))
            .await?;
        let (from, to) = (
            takeover.attr("data-from").await?.unwrap_or_default(),
            takeover.attr("data-to").await?.unwrap_or_default(),
        );
        anyhow::ensure!(
            (from.as_str(), to.as_str()) == ("node-a", "node-b"),
            "{from} → {to}"
        );
        let said = takeover.text().await?;
        anyhow::ensure!(said.contains("Node-b took over from node-a"), "{said}");
        browser
            .client
            .find(fantoccini::Locator::Css(
                "[data-testid=takeover-row][data-from='node-a'][data-to='node-b']",
            ))
            .await?;
        let summary = browser
            .wait_testid("saga-summary", LONG)
            .await?
            .text()
            .await?;
        anyhow::ensure!(
            summary.contains("node-b"),
            "the summary names the node that took over: {summary}"
        );
        browser.screenshot("takeover-on-another-node").await?;
        Ok(())
    }
    .await;
    let result = with_screenshot_on_failure(&browser, "takeover", || async { result }).await;
    browser.close().await;
    result.unwrap();
}

#[tokio::test]
async fn the_page_fits_a_phone_screen() {
    scenario("narrow", |b, _| async move {
        let r = async {
            b.client.set_window_size(375, 812).await?;
            buy(&b, "KB-01").await?;
            b.wait_attr("timeline", "data-status", "completed", LONG).await?;
            let overflow = b
                .client
                .execute("return document.documentElement.scrollWidth - document.documentElement.clientWidth", vec![])
                .await?;
            if overflow.as_f64() != Some(0.0) {
                let widest = b
                    .client
                    .execute(
                        "const cw = document.documentElement.clientWidth; let w = null; \
                         for (const el of document.querySelectorAll('body *')) { const r = el.getBoundingClientRect(); \
                         let clipped = false; for (let a = el.parentElement; a; a = a.parentElement) { if (getComputedStyle(a).overflowX !== 'visible') { clipped = a !== document.documentElement && a !== document.body; break; } } \
                         if (r.right > cw + 1 && !clipped && (!w || r.width < w.width)) \
                         w = { tag: el.tagName, cls: el.className, width: r.width, parent: el.parentElement.className }; } return w;",
                        vec![],
                    )
                    .await?;
                anyhow::bail!("the page scrolls sideways by {overflow} px at 375 px; widest element sticking out: {widest}");
            }
            // The event log reads at this width without scrolling sideways: every column,
            // the reason included, is within its box.
            let log_overflow = b
                .client
                .execute(
                    "const w = document.querySelector('.log-wrap'); \
                     w.scrollIntoView(); return w.scrollWidth - w.clientWidth;",
                    vec![],
                )
                .await?;
            anyhow::ensure!(
                log_overflow.as_f64().is_some_and(|o| o <= 1.0),
                "the event log scrolls sideways by {log_overflow} px at 375 px"
            );
            b.screenshot("narrow-375-log").await?;
            // So does the saga list: every row whole, nothing cut off at the right.
            let list_overflow = b
                .client
                .execute(
                    "const t = document.querySelector('.saga-list'); \
                     t.scrollIntoView(); return t.parentElement.scrollWidth - t.parentElement.clientWidth;",
                    vec![],
                )
                .await?;
            anyhow::ensure!(
                list_overflow.as_f64().is_some_and(|o| o <= 1.0),
                "the saga list scrolls sideways by {list_overflow} px at 375 px"
            );
            b.screenshot("narrow-375-list").await?;
            b.client.execute("window.scrollTo(0, 0)", vec![]).await?;
            b.screenshot("narrow-375").await?;
            Ok(())
        }
        .await;
        (b, r)
    })
    .await;
}

#[tokio::test]
async fn the_saga_list_shows_the_newest_fifty_live_newest_first() {
    scenario("saga-list", |b, url| async move {
        let r = async {
            // Placed one after another, so their sagas start in this order.
            let shop = saga_shop_tests::shop::Shop::new(&url);
            let body = saga_shop_tests::shop::order("CB-12", 1, serde_json::json!({}));
            // The first one is still running when fifty newer sagas have pushed it out of the
            // list; when it then finishes, it must not come back in as if it were new.
            // Each step is delayed under the step timeout (3 s): ten seconds in all.
            let delay = serde_json::json!({"kind": "delay", "ms": 2500});
            let slow = saga_shop_tests::shop::order(
                "CB-12",
                1,
                serde_json::json!({
                    "place_order": delay, "create_invoice": delay,
                    "process_payment": delay, "ship_order": delay,
                }),
            );
            let first = shop.buy(&slow).await?.saga_id;
            // The first one's row showing means the page is following the stream.
            b.wait_testid(&format!("saga-row-{first}"), LONG).await?;
            let mut ids = vec![first.clone()];
            for _ in 1..55 {
                ids.push(shop.buy(&body).await?.saga_id);
            }
            let newest = ids.last().cloned().unwrap_or_default();
            b.wait_attr(
                &format!("saga-row-{newest}"),
                "data-status",
                "completed",
                LONG,
            )
            .await?;
            let status = shop.saga(&first).await?.status;
            anyhow::ensure!(
                status == shared::SagaState::Running,
                "the delayed saga should still be running here, so that it finishes out of the \
                 list; it is {status}"
            );
            anyhow::ensure!(
                shown_rows(&b).await? == newest_fifty(&ids),
                "the list is not the newest fifty"
            );
            // Sagas started within the same seconds still read apart: each row's short id is
            // the random end of its UUIDv7, not its (shared) timestamp.
            let shown = b
                .client
                .execute(
                    "return [...document.querySelectorAll('[data-testid^=saga-row-] code')].map(c => c.textContent);",
                    vec![],
                )
                .await?;
            let short: Vec<&str> = shown
                .as_array()
                .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
                .unwrap_or_default();
            let distinct: std::collections::BTreeSet<&&str> = short.iter().collect();
            anyhow::ensure!(
                short.len() == 50 && distinct.len() == short.len(),
                "short ids {short:?}"
            );
            // It finishes; then one more saga, whose row finishing means the page has taken
            // in every event before it, the first one's end included.
            shop.finish(&first).await?;
            let last = shop.buy(&body).await?.saga_id;
            ids.push(last.clone());
            b.wait_attr(
                &format!("saga-row-{last}"),
                "data-status",
                "completed",
                LONG,
            )
            .await?;
            let shown = shown_rows(&b).await?;
            let expected = newest_fifty(&ids);
            anyhow::ensure!(shown == expected, "rows {shown:?}\nexpected {expected:?}");
            Ok(())
        }
        .await;
        (b, r)
    })
    .await;
}

/// The list reads without the timeline: each row says who bought, for how much, how it ended
/// and why, how long it took and when it started; the filter shows one state's sagas, and a
/// saga that changes state moves into or out of the filtered view as it happens.
#[tokio::test]
async fn the_saga_list_says_who_what_and_why_and_filters_by_state() {
    scenario("saga-list-words", |b, url| async move {
        let r = async {
            let shop = saga_shop_tests::shop::Shop::new(&url);
            b.client.set_window_size(1280, 900).await?;
            let happy = buy(&b, "KB-01").await?;
            b.wait_attr(&format!("saga-row-{happy}"), "data-status", "completed", LONG)
                .await?;
            b.fill("field-card_number", "4000 0000 0000 0002").await?;
            let declined = buy_another(&b, "MS-02", &happy).await?;
            b.wait_attr(
                &format!("saga-row-{declined}"),
                "data-status",
                "compensated",
                LONG,
            )
            .await?;
            for (id, outcome) in [
                (&happy, "completed"),
                (&declined, "compensated — Payments: the card was declined"),
            ] {
                let order_id = shop.saga(id).await?.order_id.unwrap_or_default();
                let total = shop.order_view(&order_id).await?.total_cents;
                let total = format!("€{}.{:02}", total / 100, total % 100);
                let row = wait_row(&b, id, |row| row.text.contains(outcome)).await?;
                anyhow::ensure!(
                    row.text.contains("Ada L.") && row.text.contains(&total),
                    "row {id}: {row:?} should say Ada L. and {total}"
                );
                anyhow::ensure!(
                    !row.text.contains("Lovelace") && !row.text.contains("ada@example.com"),
                    "row {id} shows more of the customer than a name: {row:?}"
                );
                anyhow::ensure!(
                    row.took.ends_with(" ms") || row.took.ends_with(" s"),
                    "took: {row:?}"
                );
                // `14:03:07 just now`: the browser's local time, then how long ago.
                let (time, ago) = row.started.split_once(' ').unwrap_or_default();
                anyhow::ensure!(
                    time.len() == 8
                        && time.matches(':').count() == 2
                        && (ago == "just now" || ago.ends_with(" s ago")),
                    "started: {row:?}"
                );
            }
            b.client
                .execute(
                    "document.querySelector('[data-testid=saga-filter]').closest('section').scrollIntoView();",
                    vec![],
                )
                .await?;
            b.screenshot("saga-list").await?;

            b.select("saga-filter", "compensated").await?;
            wait_rows(&b, &[declined.as_str()]).await?;
            b.select("saga-filter", "completed").await?;
            wait_rows(&b, &[happy.as_str()]).await?;
            b.select("saga-filter", "all").await?;
            wait_rows(&b, &[declined.as_str(), happy.as_str()]).await?;

            // Live: a slow saga shows among the running, leaves them when it completes, and
            // is then among the completed.
            b.select("saga-filter", "running").await?;
            wait_rows(&b, &[]).await?;
            let slow = saga_shop_tests::shop::order(
                "CB-12",
                1,
                serde_json::json!({"process_payment": {"kind": "delay", "ms": 1500}}),
            );
            let slow = shop.buy(&slow).await?.saga_id;
            wait_rows(&b, &[slow.as_str()]).await?;
            wait_row(&b, &slow, |row| {
                row.text.contains("running…") && row.took.ends_with("so far")
            })
            .await?;
            shop.finish(&slow).await?;
            wait_rows(&b, &[]).await?;
            b.select("saga-filter", "completed").await?;
            wait_rows(&b, &[slow.as_str(), happy.as_str()]).await?;
            Ok(())
        }
        .await;
        (b, r)
    })
    .await;
}

/// Buy again after `previous`: the id of the new saga, once the page shows it.
async fn buy_another(b: &Browser, sku: &str, previous: &str) -> anyhow::Result<String> {
    b.click(&format!("add-{sku}")).await?;
    b.click("buy").await?;
    let deadline = std::time::Instant::now() + LONG;
    while std::time::Instant::now() < deadline {
        let path = b.client.current_url().await?.path().to_string();
        if let Some(id) = path.strip_prefix("/sagas/")
            && id != previous
        {
            return Ok(id.to_string());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("no new saga's page after Buy")
}

/// What a row of the saga list says: all of it, and its `took` and `started` cells.
#[derive(Debug, Default)]
struct RowText {
    text: String,
    took: String,
    started: String,
}

/// Wait until the row of saga `id` says what `ok` wants; the row is read in one script, as
/// the list may rebuild it between two WebDriver calls.
async fn wait_row(b: &Browser, id: &str, ok: impl Fn(&RowText) -> bool) -> anyhow::Result<RowText> {
    let script = "const row = document.querySelector(`[data-testid=\"saga-row-${arguments[0]}\"]`);
        if (!row) return null;
        const cell = (c) => row.querySelector('td.' + c)?.innerText ?? '';
        return [row.innerText, cell('took'), cell('started')];";
    let deadline = std::time::Instant::now() + LONG;
    let mut last = RowText::default();
    while std::time::Instant::now() < deadline {
        let got = b
            .client
            .execute(script, vec![serde_json::json!(id)])
            .await?;
        if let Some([text, took, started]) = got.as_array().map(|a| a.as_slice()) {
            let s = |v: &serde_json::Value| v.as_str().unwrap_or_default().trim().to_string();
            last = RowText {
                text: s(text),
                took: s(took),
                started: s(started),
            };
            if ok(&last) {
                return Ok(last);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("the row of saga {id} says {last:?}")
}

/// Wait until the list shows exactly these rows, top to bottom.
async fn wait_rows(b: &Browser, want: &[&str]) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + LONG;
    let mut shown = Vec::new();
    while std::time::Instant::now() < deadline {
        shown = shown_rows(b).await?;
        if shown == want {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("rows {shown:?}, not {want:?}")
}

/// The saga ids of the list's rows, top to bottom, read in one script (the list may rebuild
/// its rows between two WebDriver calls).
async fn shown_rows(b: &Browser) -> anyhow::Result<Vec<String>> {
    let ids = b
        .client
        .execute(
            "return [...document.querySelectorAll('[data-testid^=saga-row-]')]
                .map(r => r.getAttribute('data-testid').slice('saga-row-'.length));",
            vec![],
        )
        .await?;
    Ok(ids
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default())
}

/// The fifty newest of `ids` (oldest first), newest first.
fn newest_fifty(ids: &[String]) -> Vec<String> {
    ids.iter().rev().take(50).cloned().collect()
}

/// The `data-testid` of the element that has the focus, if it has one.
async fn focused(b: &Browser) -> anyhow::Result<String> {
    let id = b
        .client
        .execute(
            "return document.activeElement && document.activeElement.dataset.testid || ''",
            vec![],
        )
        .await?;
    Ok(id.as_str().unwrap_or_default().to_string())
}

/// The text of the element with this `data-testid`, or `None` while there is none.
async fn text_of(b: &Browser, testid: &str) -> anyhow::Result<Option<String>> {
    let css = format!("[data-testid=\"{testid}\"]");
    match b.client.find(fantoccini::Locator::Css(&css)).await {
        Ok(el) => Ok(Some(el.text().await?)),
        Err(_) => Ok(None),
    }
}

/// Wait until the element with this `data-testid` says what `want` accepts (`None`: it is
/// gone); returns what it said last.
async fn wait_text(
    b: &Browser,
    testid: &str,
    want: impl Fn(Option<&str>) -> bool,
) -> anyhow::Result<Option<String>> {
    let deadline = std::time::Instant::now() + LONG;
    loop {
        let seen = text_of(b, testid).await?;
        if want(seen.as_deref()) {
            return Ok(seen);
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "{testid} still says {seen:?} after {LONG:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Scroll the element with this `data-testid` to the middle of the window (for a screenshot).
async fn show(b: &Browser, testid: &str) -> anyhow::Result<()> {
    let el = b.wait_testid(testid, LONG).await?;
    b.client
        .execute(
            "arguments[0].scrollIntoView({ block: 'center' })",
            vec![serde_json::to_value(&el)?],
        )
        .await?;
    Ok(())
}

/// An alert that is always there but empty is noise to a screen reader: alerts exist only
/// while they have something to say.
async fn no_empty_alerts(b: &Browser) -> anyhow::Result<()> {
    let empty = b
        .client
        .execute(
            "return [...document.querySelectorAll('[role=alert]')] \
             .filter(e => !e.textContent.trim()).map(e => e.outerHTML)",
            vec![],
        )
        .await?;
    anyhow::ensure!(
        empty.as_array().is_some_and(Vec::is_empty),
        "empty alerts: {empty}"
    );
    Ok(())
}

#[tokio::test]
async fn an_invalid_buy_counts_the_fields_to_fix_and_focuses_the_first() {
    scenario("invalid_buy", |b, _| async move {
        let r = async {
            b.client.set_window_size(1280, 800).await?;
            b.click("add-KB-01").await?;
            no_empty_alerts(&b).await?;
            b.fill("field-email", "not-an-email").await?;
            b.fill("field-card_number", "4242 4242 4242 4241").await?;
            b.click("buy").await?;
            let said = wait_text(&b, "form-problems", |t| t.is_some()).await?;
            anyhow::ensure!(
                said.as_deref() == Some("2 fields need fixing: Email, Card number."),
                "{said:?}"
            );
            anyhow::ensure!(
                focused(&b).await? == "field-email",
                "the focus is on {:?}",
                focused(&b).await?
            );
            b.screenshot("invalid-buy-focus-1280").await?;
            show(&b, "buy").await?;
            b.screenshot("invalid-buy-count-1280").await?;
            // Each fix takes its line away at once, and the count follows.
            b.fill("field-email", "ada@example.com").await?;
            let said = wait_text(&b, "form-problems", |t| t.is_some_and(|t| t.starts_with("1 ")))
                .await?;
            anyhow::ensure!(
                said.as_deref() == Some("1 field needs fixing: Card number."),
                "{said:?}"
            );
            let email_error = b.wait_testid("field-email", LONG).await?.attr("aria-invalid").await?;
            anyhow::ensure!(email_error.as_deref() == Some("false"), "{email_error:?}");
            b.click("buy").await?;
            anyhow::ensure!(
                focused(&b).await? == "field-card_number",
                "the focus is on {:?}",
                focused(&b).await?
            );
            b.fill("field-card_number", "4242 4242 4242 4242").await?;
            wait_text(&b, "form-problems", |t| t.is_none()).await?;
            let invalid = b
                .client
                .execute("return document.querySelectorAll('.field.invalid, [aria-invalid=true]').length", vec![])
                .await?;
            anyhow::ensure!(invalid.as_u64() == Some(0), "{invalid} fields still marked");
            no_empty_alerts(&b).await?;
            anyhow::ensure!(b.client.current_url().await?.path() == "/", "no saga yet");
            Ok(())
        }
        .await;
        (b, r)
    })
    .await;
}

#[tokio::test]
async fn a_message_goes_as_soon_as_its_cause_does() {
    scenario("stale_messages", |b, _| async move {
        let r = async {
            b.client.set_window_size(1280, 800).await?;
            // An empty cart: said beside Buy until a product is added.
            b.click("buy").await?;
            let said = wait_text(&b, "form-problems", |t| t.is_some()).await?;
            anyhow::ensure!(
                said.as_deref() == Some("The cart is empty: add a product first."),
                "{said:?}"
            );
            b.click("add-KB-01").await?;
            wait_text(&b, "form-problems", |t| t.is_none()).await?;
            // A refusal of the purchase (this server takes no crash faults) lasts until the
            // purchase changes...
            b.select("fault-process_payment", "crash").await?;
            b.click("buy").await?;
            let said = wait_text(&b, "order-error", |t| t.is_some()).await?;
            anyhow::ensure!(
                said.as_deref()
                    .is_some_and(|t| t.contains("crash fault is off")),
                "{said:?}"
            );
            no_empty_alerts(&b).await?;
            b.click("add-MS-02").await?;
            wait_text(&b, "order-error", |t| t.is_none()).await?;
            // ...or the next attempt, whatever it brings.
            b.click("buy").await?;
            wait_text(&b, "order-error", |t| t.is_some()).await?;
            b.select("fault-process_payment", "none").await?;
            b.click("buy").await?;
            b.wait_testid("timeline", LONG).await?;
            wait_text(&b, "order-error", |t| t.is_none()).await?;
            let placed =
                wait_text(&b, "order-placed", |t| t.is_some_and(|t| !t.is_empty())).await?;
            anyhow::ensure!(
                placed
                    .as_deref()
                    .is_some_and(|t| t.starts_with("Order ord_")),
                "{placed:?}"
            );
            // The cart emptied by the purchase is no problem: nothing is said of it.
            anyhow::ensure!(
                text_of(&b, "form-problems").await?.is_none(),
                "a stale problem"
            );
            no_empty_alerts(&b).await?;
            Ok(())
        }
        .await;
        (b, r)
    })
    .await;
}

#[tokio::test]
async fn the_cart_holds_no_more_than_the_stock_and_says_so() {
    scenario("cart_stock", |b, _| async move {
        let r = async {
            b.client.set_window_size(1280, 800).await?;
            // The standing desk: 4 in stock. A fifth Add adds nothing.
            for _ in 0..5 {
                b.click("add-DS-08").await?;
            }
            let qty = b.wait_testid("qty-DS-08", LONG).await?;
            anyhow::ensure!(
                qty.prop("value").await?.as_deref() == Some("4"),
                "{:?}",
                qty.prop("value").await?
            );
            let note =
                wait_text(&b, "stock-note-DS-08", |t| t.is_some_and(|t| !t.is_empty())).await?;
            anyhow::ensure!(note.as_deref() == Some("only 4 in stock"), "{note:?}");
            show(&b, "stock-note-DS-08").await?;
            b.screenshot("cart-at-stock-1280").await?;
            // Typed past it: back to the stock.
            b.fill("qty-DS-08", "9").await?;
            let qty = b.wait_testid("qty-DS-08", LONG).await?;
            anyhow::ensure!(
                qty.prop("value").await?.as_deref() == Some("4"),
                "{:?}",
                qty.prop("value").await?
            );
            // Under it: nothing to say.
            b.fill("qty-DS-08", "2").await?;
            wait_text(&b, "stock-note-DS-08", |t| t == Some("")).await?;
            let total = b.wait_testid("cart-total", LONG).await?.text().await?;
            anyhow::ensure!(total == "€1204.97", "{total}");
            Ok(())
        }
        .await;
        (b, r)
    })
    .await;
}

#[tokio::test]
async fn armed_faults_are_said_beside_buy_and_disarmed_by_a_purchase_unless_kept() {
    scenario("armed_faults", |b, _| async move {
        let r = async {
            b.client.set_window_size(1280, 800).await?;
            anyhow::ensure!(
                text_of(&b, "faults-armed").await?.is_none(),
                "nothing armed yet"
            );
            b.select("fault-process_payment", "fail").await?;
            b.select("fault-ship_order", "timeout").await?;
            let said = wait_text(&b, "faults-armed", |t| {
                t.is_some_and(|t| t.contains("shipping"))
            })
            .await?;
            anyhow::ensure!(
                said.as_deref() == Some("Faults armed: payment declines; shipping times out"),
                "{said:?}"
            );
            b.click("add-KB-01").await?;
            show(&b, "buy").await?;
            b.screenshot("faults-armed-1280").await?;
            b.click("buy").await?;
            b.wait_testid("timeline", LONG).await?;
            // Bought: the next purchase is a plain one again, and the pickers say so.
            wait_text(&b, "faults-armed", |t| t.is_none()).await?;
            for step in ["process_payment", "ship_order"] {
                let picker = b.wait_testid(&format!("fault-{step}"), LONG).await?;
                let value = picker.prop("value").await?;
                anyhow::ensure!(value.as_deref() == Some("none"), "{step}: {value:?}");
            }
            // Kept: they stay armed for the purchase after.
            b.select("fault-create_invoice", "transient").await?;
            let said = wait_text(&b, "faults-armed", |t| t.is_some()).await?;
            anyhow::ensure!(
                said.as_deref() == Some("Faults armed: the invoice fails 2 times, then succeeds"),
                "{said:?}"
            );
            b.click("faults-pin").await?;
            let first = b
                .wait_testid("timeline", LONG)
                .await?
                .attr("data-saga-id")
                .await?;
            b.click("add-KB-01").await?;
            b.click("buy").await?;
            let deadline = std::time::Instant::now() + LONG;
            loop {
                let path = b.client.current_url().await?.path().to_string();
                if first
                    .as_deref()
                    .is_some_and(|f| path.starts_with("/sagas/") && !path.ends_with(f))
                {
                    break;
                }
                anyhow::ensure!(std::time::Instant::now() < deadline, "no new saga: {path}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            b.wait_attr("timeline", "data-status", "completed", LONG)
                .await?;
            let said = text_of(&b, "faults-armed").await?;
            anyhow::ensure!(
                said.as_deref() == Some("Faults armed: the invoice fails 2 times, then succeeds"),
                "{said:?}"
            );
            let value = b
                .wait_testid("fault-create_invoice", LONG)
                .await?
                .prop("value")
                .await?;
            anyhow::ensure!(value.as_deref() == Some("transient"), "{value:?}");
            let pinned = b
                .wait_testid("faults-pin", LONG)
                .await?
                .prop("checked")
                .await?;
            anyhow::ensure!(pinned.as_deref() == Some("true"), "{pinned:?}");
            Ok(())
        }
        .await;
        (b, r)
    })
    .await;
}

/// A copy of the built page whose bundle never finishes loading (its module waits forever),
/// or fails to start (`fails`): what a person on a slow or broken link sees.
fn page_without_bundle(fails: bool) -> std::path::PathBuf {
    let built = saga_shop_tests::server::static_dir();
    let dir = saga_shop_tests::server::scratch_dir("page-without-bundle");
    let pkg = dir.join("pkg");
    std::fs::create_dir_all(&pkg).expect("scratch pkg");
    for file in ["index.html", "style.css", "favicon.svg"] {
        std::fs::copy(built.join(file), dir.join(file)).expect("copy the page");
    }
    let js = if fails {
        "export default async function () { throw new Error('no wasm'); }"
    } else {
        "await new Promise(() => {}); export default function () {}"
    };
    std::fs::write(pkg.join("saga_shop_frontend.js"), js).expect("write the bundle");
    dir
}

#[tokio::test]
async fn the_page_frame_shows_before_the_bundle_runs_and_gives_way_to_the_shop() {
    let browser = Browser::start().await.expect("start Chromium");
    let r = with_screenshot_on_failure(&browser, "page_frame", || async {
        let b = &browser;
        b.client.set_window_size(1280, 800).await?;
        // The bundle still on its way: the header and the frame, styled by the page itself.
        let loading = ShopServer::start_serving(&page_without_bundle(false), &[])?;
        b.client.goto(&loading.url).await?;
        let frame = b.wait_testid("page-frame", LONG).await?.text().await?;
        anyhow::ensure!(frame == "Loading the shop…", "{frame}");
        let header = b
            .client
            .execute(
                "const h = document.querySelector('header.top'); \
                 return [h.innerText, getComputedStyle(h).backgroundColor]",
                vec![],
            )
            .await?;
        anyhow::ensure!(
            header[0]
                .as_str()
                .is_some_and(|t| t.starts_with("Saga shop"))
                && header[1] == "rgb(17, 24, 43)",
            "{header}"
        );
        b.screenshot("page-frame-loading-1280").await?;
        // A bundle that cannot start: the frame says so instead of loading forever.
        let broken = ShopServer::start_serving(&page_without_bundle(true), &[])?;
        b.client.goto(&broken.url).await?;
        let said = wait_text(b, "page-frame", |t| {
            t.is_some_and(|t| t.contains("could not"))
        })
        .await?;
        anyhow::ensure!(
            said.as_deref()
                == Some("The shop could not be loaded. Check the connection and reload the page."),
            "{said:?}"
        );
        // The real bundle: the shop takes the frame's place, with one header.
        let shop = ShopServer::start(&[])?;
        b.client.goto(&shop.url).await?;
        b.wait_testid("add-KB-01", LONG).await?;
        let left = b
            .client
            .execute(
                "return [document.querySelectorAll('[data-testid=page-frame], #frame').length, \
                 document.querySelectorAll('header.top').length]",
                vec![],
            )
            .await?;
        anyhow::ensure!(left == json!([0, 1]), "frame and headers: {left}");
        Ok(())
    })
    .await;
    browser.close().await;
    r.unwrap();
}
