//! Building the release artifacts: the browser bundle and the server binary.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

use crate::{cargo, done, run_cmd, step, tools};

const FRONTEND_CRATE: &str = "saga-shop-frontend";
const WASM_PROFILE: &str = "wasm-release";
/// The oldest wasm-opt known to keep wasm-bindgen's externref table intact.
const MIN_WASM_OPT: u32 = 116;
/// `pkg/<name>.js` and `pkg/<name>_bg.wasm`, as `index.html` loads them.
const BUNDLE_NAME: &str = "saga_shop_frontend";

pub fn dist_dir(root: &Path) -> PathBuf {
    root.join("frontend").join("dist")
}

/// Where cargo puts what it builds: `CARGO_TARGET_DIR` when set (a shared target directory;
/// relative to the workspace, as cargo reads it), else the workspace's `target/`.
pub fn target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => root.join(dir),
        _ => root.join("target"),
    }
}

pub fn server_binary(root: &Path) -> PathBuf {
    target_dir(root).join("release").join("saga-shop")
}

pub fn all(root: &Path) -> anyhow::Result<()> {
    frontend(root)?;
    server(root)
}

pub fn server(root: &Path) -> anyhow::Result<()> {
    let t = step("building the server (release)");
    run_cmd(
        cargo()
            .current_dir(root)
            .args(["build", "--release", "-p", "saga-shop"]),
    )?;
    done(t);
    Ok(())
}

/// wasm build → wasm-bindgen → wasm-opt (if the machine has it) → `frontend/dist`.
pub fn frontend(root: &Path) -> anyhow::Result<()> {
    let dist = dist_dir(root);
    wasm_bundle(root, FRONTEND_CRATE, BUNDLE_NAME, &dist.join("pkg"))?;
    for (from, to) in [
        ("index.html", "index.html"),
        ("frontend/style.css", "style.css"),
    ] {
        std::fs::copy(root.join(from), dist.join(to)).with_context(|| format!("copying {from}"))?;
    }
    Ok(())
}

/// Build `krate` for the browser with the `wasm-release` profile and bind it into `pkg` as
/// `<name>.js` and `<name>_bg.wasm`. The shop and the benchmark's baseline page go through
/// this same path, so their sizes compare.
pub fn wasm_bundle(root: &Path, krate: &str, name: &str, pkg: &Path) -> anyhow::Result<()> {
    tools::ensure_wasm_target()?;
    let bindgen = tools::ensure_wasm_bindgen(root)?;
    let t = step(&format!(
        "building {krate} for wasm32 (profile {WASM_PROFILE})"
    ));
    run_cmd(cargo().current_dir(root).args([
        "build",
        "-p",
        krate,
        "--target",
        "wasm32-unknown-unknown",
        "--profile",
        WASM_PROFILE,
    ]))?;
    done(t);
    std::fs::create_dir_all(pkg).with_context(|| format!("creating {}", pkg.display()))?;
    let wasm = target_dir(root)
        .join("wasm32-unknown-unknown")
        .join(WASM_PROFILE)
        .join(format!("{krate}.wasm"));
    let t = step("running wasm-bindgen");
    run_cmd(
        Command::new(&bindgen)
            .args([
                "--target",
                "web",
                "--no-typescript",
                "--remove-name-section",
                "--remove-producers-section",
                "--out-name",
                name,
                "--out-dir",
            ])
            .arg(pkg)
            .arg(&wasm),
    )?;
    done(t);
    optimise(&pkg.join(format!("{name}_bg.wasm")));
    Ok(())
}

/// Shrink the wasm with binaryen's `wasm-opt -Oz` when it is installed; never fail the build
/// over it (it is an optimisation, and Debian's binaryen is old).
fn optimise(wasm: &Path) {
    let version = Command::new("wasm-opt")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            // "wasm-opt version 108 (…)"
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .nth(2)
                .and_then(|v| v.parse::<u32>().ok())
        });
    let Some(version) = version else {
        eprintln!(
            "    note: wasm-opt not found, the bundle is not size-optimised (binaryen ≥ {MIN_WASM_OPT} needed)"
        );
        return;
    };
    // Older binaryen (Debian 12 ships 108) accepts the module but rewrites wasm-bindgen's
    // externref table into something browsers reject at load time: a broken page, silently.
    if version < MIN_WASM_OPT {
        eprintln!(
            "    note: wasm-opt {version} is too old for this module (reference types); the bundle is not size-optimised"
        );
        return;
    }
    let t = step("optimising the wasm with wasm-opt -Oz");
    let out = wasm.with_extension("opt.wasm");
    let result = Command::new("wasm-opt")
        .args([
            "-Oz",
            "--enable-bulk-memory",
            "--enable-nontrapping-float-to-int",
            "--enable-sign-ext",
            "--enable-mutable-globals",
            "--enable-reference-types",
            "--enable-multivalue",
        ])
        .arg(wasm)
        .arg("-o")
        .arg(&out)
        .output();
    match result {
        Ok(o) if o.status.success() => match std::fs::rename(&out, wasm) {
            Ok(()) => done(t),
            Err(e) => {
                eprintln!("    warning: could not replace the wasm with the optimised one: {e}")
            }
        },
        Ok(o) => eprintln!(
            "    warning: wasm-opt refused the module, keeping it unoptimised: {}",
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .next()
                .unwrap_or("")
        ),
        Err(e) => {
            eprintln!("    warning: wasm-opt failed to run, keeping the module unoptimised: {e}")
        }
    }
}
