//! Benchmark 8: the page: gzipped wasm + JS the browser loads, against a minimal Leptos CSR page built
//! with the same profile in the same run (`cargo xtask bench` builds both).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::report::Report;

fn gzipped(path: &Path) -> anyhow::Result<u64> {
    let out = Command::new("gzip")
        .arg("-9")
        .arg("-c")
        .arg(path)
        .output()?;
    anyhow::ensure!(out.status.success(), "gzip {} failed", path.display());
    Ok(out.stdout.len() as u64)
}

fn bundle(dir: &Path, name: &str) -> anyhow::Result<u64> {
    Ok(gzipped(&dir.join(format!("{name}_bg.wasm")))? + gzipped(&dir.join(format!("{name}.js")))?)
}

pub fn run(report: &mut Report) -> anyhow::Result<()> {
    eprintln!("==> 8. the page");
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let shop = root.join("frontend/dist/pkg");
    let hello = root.join("target/bench/hello-dist/pkg");
    if !hello.exists() || !shop.exists() {
        report.note(
            "page size skipped: run it through `cargo xtask bench`, which builds both pages".into(),
        );
        return Ok(());
    }
    let ours = bundle(&shop, "saga_shop_frontend")?;
    let baseline = bundle(&hello, "hello_page")?;
    report.figure(
        "page",
        "shop wasm + JS, gzipped",
        ours as f64 / 1024.0,
        "KiB",
    );
    report.figure(
        "page",
        "minimal Leptos page wasm + JS, gzipped",
        baseline as f64 / 1024.0,
        "KiB",
    );
    // A figure, not a bar: the size ratio is watched, not chased (a bar on it bought page
    // tricks that users did not need).
    report.figure(
        "page",
        "shop bundle ÷ minimal page",
        ours as f64 / baseline as f64,
        "×",
    );
    Ok(())
}

/// Time from clicking Buy to the first lane lighting up (leaving `pending`), measured inside
/// the page with `performance.now()` and a MutationObserver; p50 of `clicks` purchases.
pub async fn buy_to_first_lane(report: &mut Report, clicks: usize) -> anyhow::Result<()> {
    use saga_shop_tests::browser::Browser;
    use saga_shop_tests::server::ShopServer;
    let server = ShopServer::start(&["--seed-stock", "100000"])?;
    let mut times = Vec::with_capacity(clicks);
    let script = r#"
        window.__lit = null;
        const start = performance.now();
        const obs = new MutationObserver(() => {
            const lane = document.querySelector('[data-testid=step-place_order]');
            if (lane && lane.dataset.status && lane.dataset.status !== 'pending' && window.__lit === null) {
                window.__lit = performance.now() - start;
                obs.disconnect();
            }
        });
        obs.observe(document.body, { subtree: true, attributes: true, childList: true });
        document.querySelector('[data-testid=buy]').click();
    "#;
    for _ in 0..clicks {
        // A fresh browser each time: a cold page, as a shopper arriving would have it.
        let browser = Browser::start().await?;
        browser.client.goto(&server.url).await?;
        browser.click("add-KB-01").await?;
        browser.client.execute(script, vec![]).await?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let lit = browser
                .client
                .execute("return window.__lit", vec![])
                .await?;
            if let Some(ms) = lit.as_f64() {
                times.push(ms);
                break;
            }
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "the first lane never lit up"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        browser.close().await;
    }
    times.sort_by(f64::total_cmp);
    let p50 = times[times.len() / 2];
    report.figure(
        "page",
        &format!("Buy → first lane lit, p50 of {clicks} clicks (headless Chromium)"),
        p50,
        "ms",
    );
    Ok(())
}
