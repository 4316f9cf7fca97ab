//! Headless Chromium driven through ChromeDriver (WebDriver), both from Debian's packages.
//! Plain HTTP on loopback, so no TLS stack is built.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

/// A browser session; the driver process is killed on drop.
pub struct Browser {
    pub client: Client,
    driver: Child,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Browser {
    pub async fn start() -> anyhow::Result<Self> {
        let chromium =
            std::env::var("SAGA_TEST_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        let chromedriver = std::env::var("SAGA_TEST_CHROMEDRIVER")
            .unwrap_or_else(|_| "/usr/bin/chromedriver".into());
        if !std::path::Path::new(&chromedriver).exists() {
            bail!(
                "{chromedriver} is missing: run the tests with `cargo xtask test`, which installs Chromium and ChromeDriver"
            );
        }
        let port = free_port()?;
        let mut driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting chromedriver")?;
        let profile: PathBuf = crate::server::scratch_dir("chromium-profile");
        let caps = json!({
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1440,1000",
                    format!("--user-data-dir={}", profile.display()),
                ]
            }
        });
        let serde_json::Value::Object(caps) = caps else {
            unreachable!()
        };
        let mut builder =
            ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new());
        builder.capabilities(caps);
        // ChromeDriver takes a moment to listen: retry the session until it answers.
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = loop {
            match builder.connect(&format!("http://127.0.0.1:{port}")).await {
                Ok(c) => break c,
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => {
                    let _ = driver.kill();
                    bail!("could not open a Chromium session: {e}");
                }
            }
        };
        Ok(Browser { client, driver })
    }

    /// Wait until an element with this `data-testid` exists.
    pub async fn wait_testid(
        &self,
        testid: &str,
        timeout: Duration,
    ) -> anyhow::Result<fantoccini::elements::Element> {
        let css = format!("[data-testid=\"{testid}\"]");
        self.client
            .wait()
            .at_most(timeout)
            .for_element(Locator::Css(&css))
            .await
            .with_context(|| format!("no element with data-testid={testid} within {timeout:?}"))
    }

    /// Wait until the element's attribute has the wanted value; returns the last value seen.
    pub async fn wait_attr(
        &self,
        testid: &str,
        attr: &str,
        want: &str,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let css = format!("[data-testid=\"{testid}\"]");
        let mut last = None;
        while Instant::now() < deadline {
            if let Ok(el) = self.client.find(Locator::Css(&css)).await {
                last = el.attr(attr).await.ok().flatten();
                if last.as_deref() == Some(want) {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("{testid} {attr} is {last:?}, not {want:?}, after {timeout:?}")
    }

    /// Wait until `script` (a function body that returns a boolean) returns true; `what`
    /// says in the error what never became true.
    pub async fn wait_js(&self, script: &str, what: &str, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(v) = self.client.execute(script, vec![]).await
                && v.as_bool() == Some(true)
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("{what}, after {timeout:?}")
    }

    pub async fn click(&self, testid: &str) -> anyhow::Result<()> {
        self.wait_testid(testid, Duration::from_secs(20))
            .await?
            .click()
            .await?;
        Ok(())
    }

    /// Replace an input's text and fire `input` and `change`, as typing and leaving would.
    /// (Keystrokes into an input whose value the page keeps in sync can interleave with the
    /// page's own updates; setting the value is what a person's typing ends up as.)
    pub async fn fill(&self, testid: &str, text: &str) -> anyhow::Result<()> {
        let el = self.wait_testid(testid, Duration::from_secs(20)).await?;
        let script = "const el = arguments[0]; el.focus(); el.value = arguments[1];
            el.dispatchEvent(new Event('input', { bubbles: true }));
            el.dispatchEvent(new Event('change', { bubbles: true }));
            el.blur();";
        self.client
            .execute(script, vec![serde_json::to_value(&el)?, json!(text)])
            .await?;
        Ok(())
    }

    pub async fn select(&self, testid: &str, value: &str) -> anyhow::Result<()> {
        let el = self.wait_testid(testid, Duration::from_secs(20)).await?;
        el.select_by_value(value).await?;
        Ok(())
    }

    /// The `data-status` of every step lane, in order.
    pub async fn lanes(&self) -> anyhow::Result<Vec<String>> {
        let mut out = Vec::new();
        for step in [
            "place_order",
            "create_invoice",
            "process_payment",
            "ship_order",
        ] {
            let el = self
                .wait_testid(&format!("step-{step}"), Duration::from_secs(20))
                .await?;
            out.push(el.attr("data-status").await?.unwrap_or_default());
        }
        Ok(out)
    }

    /// Save a screenshot under `target/browser-screenshots/NAME.png`; returns its path.
    pub async fn screenshot(&self, name: &str) -> anyhow::Result<PathBuf> {
        let png = self.client.screenshot().await?;
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/browser-screenshots");
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png)?;
        Ok(path)
    }

    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
    }
}

/// Run a browser test body; on failure save a screenshot named after the test, then fail.
pub async fn with_screenshot_on_failure<F, Fut>(
    browser: &Browser,
    name: &str,
    body: F,
) -> anyhow::Result<()>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    match body().await {
        Ok(()) => Ok(()),
        Err(e) => {
            let shot = browser.screenshot(&format!("FAILED-{name}")).await;
            let where_ = shot
                .map(|p| p.display().to_string())
                .unwrap_or_else(|e| format!("(no screenshot: {e})"));
            Err(e.context(format!("screenshot saved to {where_}")))
        }
    }
}
