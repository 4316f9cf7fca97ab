//! Building the release artifacts: the browser bundle and the server binary.
//!
//! Everything a browser downloads is also written compressed beside itself, `NAME.br` (brotli,
//! quality 11) and `NAME.gz` (gzip, level 9): the server hands a client that accepts one of
//! them that file with its `Content-Encoding` (tower-http's precompressed `ServeDir`), so the
//! slowest, smallest levels cost build time once instead of CPU on every request.

use std::io::Write;
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
/// The files a browser gets compressed, by extension (images other than SVG are compressed
/// already).
const COMPRESSIBLE: &[&str] = &["wasm", "js", "html", "css", "svg"];

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
        ("frontend/favicon.svg", "favicon.svg"),
    ] {
        std::fs::copy(root.join(from), dist.join(to)).with_context(|| format!("copying {from}"))?;
    }
    precompress(&dist)
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
    precompress(pkg)
}

/// Write `NAME.br` and `NAME.gz` beside every compressible file of `dir` (not below it), each
/// rewritten on every build: a variant older than its file would be served in its place.
/// A variant no smaller than its file is removed instead, so the file goes as it is.
fn precompress(dir: &Path) -> anyhow::Result<()> {
    let t = step(&format!(
        "compressing {} (brotli 11, gzip 9)",
        dir.file_name().unwrap_or_default().to_string_lossy()
    ));
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let compressible = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| COMPRESSIBLE.contains(&e));
        if !compressible || !path.is_file() {
            continue;
        }
        let original =
            std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        write_variant(&path, "br", &brotli(&original)?, original.len())?;
        write_variant(&path, "gz", &gzip(&original)?, original.len())?;
    }
    done(t);
    Ok(())
}

fn write_variant(
    path: &Path,
    extension: &str,
    bytes: &[u8],
    original: usize,
) -> anyhow::Result<()> {
    let mut name = path.as_os_str().to_owned();
    name.push(".");
    name.push(extension);
    let variant = PathBuf::from(name);
    if bytes.len() < original {
        std::fs::write(&variant, bytes).with_context(|| format!("writing {}", variant.display()))
    } else {
        match std::fs::remove_file(&variant) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("removing {}", variant.display()))
            }
            _ => Ok(()),
        }
    }
}

fn brotli(bytes: &[u8]) -> anyhow::Result<Vec<u8>> {
    let params = brotli::enc::BrotliEncoderParams {
        quality: 11,
        // A 4 MiB window: the whole bundle, so any earlier repeat can be referenced.
        lgwin: 22,
        size_hint: bytes.len(),
        ..Default::default()
    };
    let mut out = Vec::with_capacity(bytes.len() / 3);
    brotli::BrotliCompress(&mut &bytes[..], &mut out, &params).context("brotli")?;
    Ok(out)
}

fn gzip(bytes: &[u8]) -> anyhow::Result<Vec<u8>> {
    // No name and a zero modification time in the header: the same input, the same bytes.
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(bytes.len() / 3),
        flate2::Compression::best(),
    );
    encoder.write_all(bytes).context("gzip")?;
    encoder.finish().context("gzip")
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
