//! `cargo xtask bench [--quick]`: every benchmark of the suite in one run, each figure beside
//! the bound it is judged against (measured in the same run, since this machine is shared and
//! absolute times drift). Prints a table and writes `target/bench/results.json`.

mod cluster;
mod cluster_load;
mod cluster_stream;
mod engine;
mod http;
mod page;
mod postgres;
mod report;
mod sqlite;
mod sse;
mod sse_run;

use report::Report;

fn main() -> anyhow::Result<()> {
    if std::env::args().any(|a| a == "--serve-baseline") {
        return sse_run::serve_baseline();
    }
    let quick = std::env::args().any(|a| a == "--quick");
    let only: Option<String> = std::env::args().skip_while(|a| a != "--only").nth(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut report = Report::new(quick);
    let wanted = |name: &str| only.as_deref().is_none_or(|o| o == name);
    // Memory first, before other benchmarks have grown the heap.
    if wanted("memory") {
        sqlite::memory(&rt, &mut report, quick)?;
    }
    if wanted("engine") {
        rt.block_on(engine::run(&mut report, quick))?;
    }
    if wanted("sqlite") {
        rt.block_on(sqlite::run(&mut report, quick))?;
    }
    if wanted("recovery") {
        sqlite::recovery(&mut report, quick)?;
    }
    if wanted("postgres") {
        rt.block_on(postgres::run(&mut report, quick))?;
    }
    if wanted("http") {
        rt.block_on(http::run(&mut report, quick))?;
    }
    if wanted("sse") {
        rt.block_on(sse_run::run(&mut report, quick))?;
    }
    if wanted("cluster") {
        rt.block_on(cluster::run(&mut report, quick))?;
    }
    if wanted("page") {
        page::run(&mut report)?;
        if let Err(e) = rt.block_on(page::first_load(&mut report, if quick { 3 } else { 7 })) {
            report.note(format!("the page's first load not measured: {e:#}"));
        }
        if let Err(e) = rt.block_on(page::buy_to_first_lane(
            &mut report,
            if quick { 5 } else { 20 },
        )) {
            report.note(format!("Buy → first lane not measured: {e:#}"));
        }
    }
    report.finish()
}
