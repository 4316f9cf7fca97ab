//! Accessibility checks with axe-core, run inside the page under test. `cargo xtask test`
//! installs axe-core from npm (pinned) and names its `axe.min.js` in `SAGA_TEST_AXE`; the
//! script is injected into the page, `axe.run()` checks the document as it is at that moment,
//! and the violations a person would be stopped by (impact serious or critical) come back.

use anyhow::{Context, bail};
use serde::Deserialize;

use crate::browser::Browser;

/// One rule the page breaks, with the elements that break it.
#[derive(Debug, Deserialize)]
pub struct Violation {
    pub id: String,
    pub impact: String,
    pub help: String,
    /// The CSS selectors of the offending elements (axe's `target`, one per node).
    pub targets: Vec<String>,
}

/// The axe-core script, read once per test.
pub struct Axe {
    source: String,
}

impl Axe {
    /// The script named by `SAGA_TEST_AXE`; without it, one line saying how to run the tests.
    pub fn from_env() -> anyhow::Result<Self> {
        let Ok(path) = std::env::var("SAGA_TEST_AXE") else {
            bail!(
                "SAGA_TEST_AXE is not set: run the tests with `cargo xtask test`, which installs axe-core, or set SAGA_TEST_AXE to its axe.min.js"
            );
        };
        let source = std::fs::read_to_string(&path).with_context(|| {
            format!("SAGA_TEST_AXE names {path}, which cannot be read: run `cargo xtask test`, which installs axe-core")
        })?;
        Ok(Axe { source })
    }

    /// Run every axe rule on the page as it is now; the serious and critical violations.
    pub async fn serious_violations(&self, b: &Browser) -> anyhow::Result<Vec<Violation>> {
        // Injected once per page load: the script defines `window.axe`.
        let loaded = b.client.execute("return !!window.axe;", vec![]).await?;
        if loaded.as_bool() != Some(true) {
            b.client.execute(&self.source, vec![]).await?;
        }
        let found = b
            .client
            .execute_async(
                "const done = arguments[arguments.length - 1];
                 axe.run(document, { resultTypes: ['violations'] }).then(
                   r => done({ violations: r.violations
                     .filter(v => v.impact === 'serious' || v.impact === 'critical')
                     .map(v => ({ id: v.id, impact: v.impact, help: v.help,
                                  targets: v.nodes.map(n => n.target.join(' ')) })) }),
                   e => done({ error: String(e) }));",
                vec![],
            )
            .await?;
        if let Some(error) = found.get("error") {
            bail!("axe.run failed: {error}");
        }
        serde_json::from_value(found["violations"].clone()).context("reading axe's violations")
    }

    /// `None` when the page as it is now has no serious or critical violation; otherwise a
    /// report naming the page and each violation.
    pub async fn audit(&self, b: &Browser, page: &str) -> anyhow::Result<Option<String>> {
        let found = self.serious_violations(b).await?;
        Ok((!found.is_empty()).then(|| {
            format!(
                "axe: {} serious or critical violation(s) on {page}:\n{}",
                found.len(),
                describe(&found)
            )
        }))
    }
}

/// The violations as lines a person can act on: rule, impact, what it asks, where (the first
/// few elements).
pub fn describe(violations: &[Violation]) -> String {
    const SHOWN: usize = 4;
    violations
        .iter()
        .map(|v| {
            let more = v.targets.len().saturating_sub(SHOWN);
            format!(
                "  {} ({}): {} — {}{}",
                v.id,
                v.impact,
                v.help,
                v.targets
                    .iter()
                    .take(SHOWN)
                    .map(String::as_str)
                    .collect::<Vec<_>>()
                    .join(", "),
                if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                }
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}
