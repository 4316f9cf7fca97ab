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
    let ratio = ours as f64 / baseline as f64;
    report.bar(
        "page ≤ 4× a minimal Leptos page",
        ratio <= 4.0,
        format!(
            "{ratio:.2}× ({:.0} vs {:.0} KiB)",
            ours as f64 / 1024.0,
            baseline as f64 / 1024.0
        ),
    );
    Ok(())
}
