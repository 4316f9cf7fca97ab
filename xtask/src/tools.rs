//! The pieces a fresh machine lacks: the wasm target, wasm-bindgen-cli at exactly the version
//! of the `wasm-bindgen` crate in Cargo.lock, Chromium with ChromeDriver for browser tests,
//! axe-core (from npm) for the browser tests' accessibility checks, and schemathesis (in a
//! Python venv) for fuzzing the API. Each is installed when missing, or named in one line with
//! the command that fixes it.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use crate::{cargo, done, run_cmd, step};

pub fn ensure_wasm_target() -> anyhow::Result<()> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .context("rustup is missing: install Rust with rustup (https://rustup.rs), then run `rustup target add wasm32-unknown-unknown`")?;
    if String::from_utf8_lossy(&installed.stdout)
        .lines()
        .any(|l| l.trim() == "wasm32-unknown-unknown")
    {
        return Ok(());
    }
    let t = step("installing the wasm32-unknown-unknown target (rustup)");
    run_cmd(Command::new("rustup").args(["target", "add", "wasm32-unknown-unknown"]))
        .context("could not add the wasm target: run `rustup target add wasm32-unknown-unknown`")?;
    done(t);
    Ok(())
}

/// The `wasm-bindgen` version pinned by Cargo.lock; the CLI must match it exactly.
fn locked_wasm_bindgen_version(root: &Path) -> anyhow::Result<String> {
    let lock = std::fs::read_to_string(root.join("Cargo.lock")).context("reading Cargo.lock")?;
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line.trim() == "name = \"wasm-bindgen\""
            && let Some(v) = lines
                .next()
                .and_then(|l| l.trim().strip_prefix("version = \""))
        {
            return Ok(v.trim_end_matches('"').to_string());
        }
    }
    bail!("Cargo.lock has no wasm-bindgen package")
}

/// `.tools/wasm-bindgen-<version>/bin/wasm-bindgen`, installed there from crates.io if absent.
pub fn ensure_wasm_bindgen(root: &Path) -> anyhow::Result<PathBuf> {
    let version = locked_wasm_bindgen_version(root)?;
    let dir = root.join(".tools").join(format!("wasm-bindgen-{version}"));
    let bin = dir.join("bin").join("wasm-bindgen");
    if bin.exists() {
        return Ok(bin);
    }
    let t = step(&format!(
        "installing wasm-bindgen-cli {version} into .tools/ (a few minutes, once)"
    ));
    let install = |locked: bool| {
        let mut cmd = cargo();
        cmd.args([
            "install",
            "wasm-bindgen-cli",
            "--version",
            &version,
            "--root",
        ])
        .arg(&dir);
        if locked {
            cmd.arg("--locked");
        }
        run_cmd(&mut cmd)
    };
    // `--locked` reproduces the CLI's own lock file, but that can pin a crate the registry no
    // longer serves; then build it with fresh resolution instead.
    if install(true).is_err() {
        eprintln!("    --locked install failed; retrying without --locked");
        install(false).with_context(|| {
            format!("could not install wasm-bindgen-cli: run `cargo install wasm-bindgen-cli --version {version} --root .tools/wasm-bindgen-{version}`")
        })?;
    }
    done(t);
    Ok(bin)
}

pub struct Browser {
    pub chromium: PathBuf,
    pub chromedriver: PathBuf,
}

fn find(candidates: &[&str]) -> Option<PathBuf> {
    candidates.iter().map(PathBuf::from).find(|p| p.exists())
}

fn locate() -> Option<Browser> {
    Some(Browser {
        chromium: find(&["/usr/bin/chromium", "/usr/bin/chromium-browser"])?,
        chromedriver: find(&["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"])?,
    })
}

/// Chromium and ChromeDriver from Debian's packages (the same version, and no download of a
/// browser from the internet, which this kind of machine cannot reach).
pub fn ensure_browser() -> anyhow::Result<Browser> {
    if let Some(b) = locate() {
        return Ok(b);
    }
    let fix = "apt-get update && apt-get install -y chromium chromium-driver";
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0"))
        .unwrap_or(false);
    if !is_root || Command::new("apt-get").arg("--version").output().is_err() {
        bail!("Chromium and ChromeDriver are missing for the browser tests: run `sudo {fix}`");
    }
    let t = step("installing Chromium and ChromeDriver from Debian's packages");
    run_cmd(Command::new("apt-get").args(["update", "-q"]))?;
    run_cmd(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "chromium", "chromium-driver"])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
    .with_context(|| format!("could not install Chromium: run `{fix}`"))?;
    done(t);
    locate()
        .with_context(|| format!("Chromium was installed but not found in /usr/bin: run `{fix}`"))
}

/// Pinned: the flags `cargo xtask schemathesis` passes are this version's.
const SCHEMATHESIS_VERSION: &str = "4.32.5";

/// `.tools/schemathesis-<version>/bin/st`, a venv with schemathesis from PyPI, made if absent.
/// A marker written after a successful install tells a finished venv from an interrupted one.
pub fn ensure_schemathesis(root: &Path) -> anyhow::Result<PathBuf> {
    let dir = root
        .join(".tools")
        .join(format!("schemathesis-{SCHEMATHESIS_VERSION}"));
    let st = dir.join("bin").join("st");
    let marker = dir.join(".installed");
    if marker.exists() && st.exists() {
        return Ok(st);
    }
    let python = Command::new("python3").arg("--version").output();
    if !python.is_ok_and(|o| o.status.success()) {
        bail!(
            "python3 is missing, and schemathesis needs it: install Python 3 with venv and pip (Debian: `apt-get install python3 python3-venv`)"
        );
    }
    let t = step(&format!(
        "installing schemathesis {SCHEMATHESIS_VERSION} from PyPI into .tools/ (a minute, once)"
    ));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    run_cmd(Command::new("python3").args(["-m", "venv"]).arg(&dir)).context(
        "python3 could not make a venv with pip: install the venv module (Debian: `apt-get install python3-venv`)",
    )?;
    run_cmd(
        Command::new(dir.join("bin").join("pip"))
            .args(["install", "--disable-pip-version-check", "--progress-bar", "off"])
            .arg(format!("schemathesis=={SCHEMATHESIS_VERSION}")),
    )
    .with_context(|| {
        format!(
            "could not install schemathesis from PyPI: run `{} install schemathesis=={SCHEMATHESIS_VERSION}`",
            dir.join("bin").join("pip").display()
        )
    })?;
    std::fs::write(&marker, SCHEMATHESIS_VERSION)
        .with_context(|| format!("writing {}", marker.display()))?;
    done(t);
    Ok(st)
}

/// Pinned: the rules the accessibility tests hold the page to are this version's.
const AXE_CORE_VERSION: &str = "4.14.1";

/// `.tools/axe-core-<version>/node_modules/axe-core/axe.min.js`, the npm package installed
/// there if absent. It is installed beside the folder and moved into place whole, so an
/// interrupted install is never taken for a finished one.
pub fn ensure_axe(root: &Path) -> anyhow::Result<PathBuf> {
    let tools = root.join(".tools");
    let dir = tools.join(format!("axe-core-{AXE_CORE_VERSION}"));
    let script = |dir: &Path| dir.join("node_modules/axe-core/axe.min.js");
    if script(&dir).exists() {
        return Ok(script(&dir));
    }
    let npm = Command::new("npm").arg("--version").output();
    if !npm.is_ok_and(|o| o.status.success()) {
        bail!(
            "npm is missing, and the browser tests need axe-core from it: install Node.js with npm (Debian: `apt-get install npm`)"
        );
    }
    let t = step(&format!(
        "installing axe-core {AXE_CORE_VERSION} from npm into .tools/ (seconds, once)"
    ));
    let partial = tools.join(format!("axe-core-{AXE_CORE_VERSION}.partial"));
    for stale in [&partial, &dir] {
        if stale.exists() {
            std::fs::remove_dir_all(stale)
                .with_context(|| format!("removing {}", stale.display()))?;
        }
    }
    std::fs::create_dir_all(&partial).with_context(|| format!("creating {}", partial.display()))?;
    run_cmd(
        Command::new("npm")
            .args(["install", "--prefix"])
            .arg(&partial)
            .args(["--no-save", "--no-package-lock", "--no-audit", "--no-fund"])
            .arg(format!("axe-core@{AXE_CORE_VERSION}")),
    )
    .with_context(|| {
        format!(
            "could not install axe-core from npm: run `npm install --prefix .tools/axe-core-{AXE_CORE_VERSION} axe-core@{AXE_CORE_VERSION}`"
        )
    })?;
    if !script(&partial).exists() {
        bail!(
            "npm installed axe-core {AXE_CORE_VERSION} without axe.min.js in {}",
            partial.display()
        );
    }
    std::fs::rename(&partial, &dir)
        .with_context(|| format!("moving {} to {}", partial.display(), dir.display()))?;
    done(t);
    Ok(script(&dir))
}
