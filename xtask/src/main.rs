//! `cargo xtask`: the project's build automation, in Rust so it runs wherever cargo does.
//!
//! - `cargo xtask build` — the wasm frontend (wasm-bindgen, wasm-opt when present) and the
//!   release server, installing the wasm target and the matching wasm-bindgen-cli if missing.
//! - `cargo xtask serve [ARGS…]` — build, then run `saga-shop` on an embedded SQLite file.
//! - `cargo xtask test` — build, then every test of the workspace, browser tests included
//!   (installing Chromium and ChromeDriver from Debian's packages and axe-core from npm when
//!   they are missing), the
//!   engine's example saga (`saga-engine/examples/trip.rs`), and the schemathesis run below.
//! - `cargo xtask schemathesis` — build the server, then fuzz it against its OpenAPI document
//!   (installing schemathesis from PyPI into a venv under `.tools/` when it is missing).
//! - `cargo xtask cluster [--nodes N]` — build, then run N nodes on the local PostgreSQL, one
//!   deployment sharing a fresh schema prefix (`cluster.rs`).

mod build;
mod cluster;
mod schemathesis;
mod tools;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};

fn main() {
    if let Err(e) = run() {
        eprintln!("xtask: error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let task = args.next().unwrap_or_default();
    let rest: Vec<String> = args.collect();
    let root = project_root();
    match task.as_str() {
        "build" => build::all(&root),
        "serve" => serve(&root, &rest),
        "test" => test(&root, &rest),
        "schemathesis" => {
            build::server(&root)?;
            schemathesis::run(&root)
        }
        "bench" => bench(&root, rest.iter().any(|a| a == "--quick")),
        "cluster" => {
            let options = cluster::Options::parse(&rest)?;
            cluster::run(&root, &options)
        }
        _ => {
            eprintln!(
                "usage: cargo xtask <build|serve|cluster|test|schemathesis|bench>\n  build         build the frontend (wasm) and the server (release)\n  serve         build, then run the server on an embedded SQLite file\n  cluster       build, then run several nodes on the local PostgreSQL (--nodes N, default 3)\n  test          build, then run every test (browser tests and schemathesis included)\n  schemathesis  build the server, then fuzz it against its OpenAPI document\n\n{}",
                cluster::USAGE
            );
            if task.is_empty() || task == "help" || task == "--help" {
                Ok(())
            } else {
                bail!("unknown task {task:?}")
            }
        }
    }
}

fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Print a step heading; long steps print their own progress beneath it.
pub fn step(what: &str) -> Instant {
    eprintln!("==> {what}");
    Instant::now()
}

pub fn done(started: Instant) {
    eprintln!("    done in {:.1}s", started.elapsed().as_secs_f64());
}

/// Run a command, failing with its name if it fails.
pub fn run_cmd(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("could not start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

pub fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn serve(root: &Path, args: &[String]) -> anyhow::Result<()> {
    build::all(root)?;
    let _ = step("starting saga-shop (ctrl-c to stop); the URL to open follows");
    // `cargo xtask serve -- --flag` and `cargo xtask serve --flag` both reach the server.
    let args = args.strip_prefix(&["--".to_string()]).unwrap_or(args);
    let mut cmd = Command::new(build::server_binary(root));
    cmd.current_dir(root)
        .arg("--static-dir")
        .arg(build::dist_dir(root))
        .args(args);
    run_cmd(&mut cmd)
}

fn bench(root: &Path, quick: bool) -> anyhow::Result<()> {
    build::all(root)?;
    run_bench(root, quick)
}

/// The suite in `bench/`: builds the baseline page, then runs `cargo bench`, which writes
/// `target/bench/results.json`.
fn run_bench(root: &Path, quick: bool) -> anyhow::Result<()> {
    build::wasm_bundle(
        root,
        "hello-page",
        "hello_page",
        &root.join("target/bench/hello-dist/pkg"),
    )?;
    let t = step(if quick {
        "running the benchmarks (quick)"
    } else {
        "running the benchmarks (full: several minutes)"
    });
    let mut cmd = cargo();
    cmd.current_dir(root)
        .args(["bench", "-p", "saga-bench", "--bench", "suite", "--"])
        .env("SAGA_SHOP_BIN", build::server_binary(root));
    if quick {
        cmd.arg("--quick");
    }
    run_cmd(&mut cmd)?;
    done(t);
    Ok(())
}

/// What `cargo xtask test` builds for the host: the pages are wasm-only, and the benchmark
/// crate's tests are the quick run of the suite.
const TESTED_PACKAGES: [&str; 7] = [
    "--workspace",
    "--exclude",
    "saga-shop-frontend",
    "--exclude",
    "hello-page",
    "--exclude",
    "saga-bench",
];

/// The engine's example saga, which exits with a failure if the saga did not end as it must.
/// Built as part of the same packages as the tests (`cargo run -p saga-engine` would resolve
/// the dependencies' features for the engine alone and compile sqlx again), then run.
fn trip_example(root: &Path) -> anyhow::Result<()> {
    let t = step("running the engine's example saga (saga-engine/examples/trip.rs)");
    run_cmd(
        cargo()
            .current_dir(root)
            .arg("build")
            .args(TESTED_PACKAGES)
            .args(["--example", "trip"]),
    )?;
    run_cmd(Command::new(build::target_dir(root).join("debug/examples/trip")).current_dir(root))?;
    done(t);
    Ok(())
}

fn test(root: &Path, args: &[String]) -> anyhow::Result<()> {
    let started = Instant::now();
    build::all(root)?;
    let browser = tools::ensure_browser()?;
    let axe = tools::ensure_axe(root)?;
    // The benchmarks once at their smallest, so they cannot rot; no figure is asserted.
    run_bench(root, true)?;
    let t = step("running every test of the workspace");
    let mut cmd = cargo();
    cmd.current_dir(root)
        .arg("test")
        .args(TESTED_PACKAGES)
        .args(args)
        .env("SAGA_SHOP_BIN", build::server_binary(root))
        .env("SAGA_SHOP_STATIC_DIR", build::dist_dir(root))
        .env("SAGA_TEST_CHROMIUM", &browser.chromium)
        .env("SAGA_TEST_CHROMEDRIVER", &browser.chromedriver)
        .env("SAGA_TEST_AXE", &axe);
    run_cmd(&mut cmd)?;
    done(t);
    trip_example(root)?;
    schemathesis::run(root)?;
    eprintln!(
        "==> all tests passed in {:.0}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
