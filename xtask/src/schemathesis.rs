//! `cargo xtask schemathesis`: fuzz the release server against its own OpenAPI document.
//!
//! The server starts on a fresh SQLite directory and a free port; schemathesis (from PyPI, in a
//! venv under `.tools/`) reads `/api/openapi.json` and sends generated requests, valid and
//! invalid, checking that none gets a 5xx, that every status, media type and body is one the
//! document allows, and that every request breaking the document is refused. Afterwards every
//! saga the server holds must have come from a `202` that schemathesis saw: a refused request
//! must never start one.
//!
//! The two event streams are left out: `/api/events` never ends and a saga's stream lasts as
//! long as the saga, which schemathesis would report as timeouts. The server runs without
//! `--allow-crash-faults`, so the `crash` fault is refused (a documented 422) and never aborts it.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;

use crate::{build, done, run_cmd, step, tools};

/// Per operation and phase: about 3,600 requests, 75 s against the release server on two
/// idle cores.
const MAX_EXAMPLES: &str = "300";
const CHECKS: &str = "not_a_server_error,response_schema_conformance,status_code_conformance,\
content_type_conformance,negative_data_rejection";
/// The event streams (see the module doc).
const EXCLUDE_PATHS: &str = "/events$";
/// Sagas per page of `GET /api/sagas` when listing them all (the most a page holds).
const PAGE: usize = 500;

/// Run schemathesis against a server built beforehand (`build::all`).
pub fn run(root: &Path) -> anyhow::Result<()> {
    let st = tools::ensure_schemathesis(root)?;
    let scratch = build::target_dir(root).join("schemathesis");
    if scratch.exists() {
        std::fs::remove_dir_all(&scratch)
            .with_context(|| format!("clearing {}", scratch.display()))?;
    }
    std::fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;

    let t = step("starting the release server on a fresh SQLite directory");
    let server = Server::start(root, &scratch)?;
    eprintln!("    {} (log: {})", server.url, server.log.display());
    done(t);

    let t = step(&format!(
        "fuzzing {}/api/openapi.json with schemathesis (at most {MAX_EXAMPLES} examples per operation and phase)",
        server.url
    ));
    let har = scratch.join("requests.har");
    let mut cmd = Command::new(&st);
    cmd.current_dir(&scratch)
        .arg("run")
        .arg(format!("{}/api/openapi.json", server.url))
        .args(["--checks", CHECKS])
        .args(["--max-examples", MAX_EXAMPLES])
        .args(["--exclude-path-regex", EXCLUDE_PATHS])
        .args(["--request-timeout", "20"])
        .args(["--generation-database", "none"])
        .args(["--report", "har", "--report-har-path"])
        .arg(&har);
    run_cmd(&mut cmd).with_context(|| {
        format!(
            "schemathesis found the server and its document disagreeing (server log: {})",
            server.log.display()
        )
    })?;
    done(t);

    let t = step("checking that every saga came from an accepted order");
    let accepted = accepted_sagas(&har)?;
    let listed = listed_sagas(&server.url)?;
    let orphans: Vec<&String> = listed.difference(&accepted).collect();
    if !orphans.is_empty() {
        bail!(
            "{} saga(s) exist that no 202 announced, so a refused request started them: {orphans:?} (requests: {}, server log: {})",
            orphans.len(),
            har.display(),
            server.log.display()
        );
    }
    let phantoms: Vec<&String> = accepted.difference(&listed).collect();
    if !phantoms.is_empty() {
        bail!(
            "{} saga(s) announced by a 202 do not exist: {phantoms:?} (requests: {}, server log: {})",
            phantoms.len(),
            har.display(),
            server.log.display()
        );
    }
    eprintln!(
        "    the {} sagas on the server are exactly those the 202s announced",
        listed.len()
    );
    done(t);
    Ok(())
}

/// The release server on a free port, killed when dropped so an error never leaves it running.
struct Server {
    child: Child,
    url: String,
    log: PathBuf,
}

impl Server {
    fn start(root: &Path, scratch: &Path) -> anyhow::Result<Self> {
        let log = scratch.join("server.log");
        let log_file =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut cmd = Command::new(build::server_binary(root));
        cmd.current_dir(scratch)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--database")
            .arg(format!("sqlite://{}", scratch.join("shop.db").display()))
            .arg("--static-dir")
            .arg(build::dist_dir(root))
            .stdout(Stdio::piped())
            .stderr(log_file);
        // The flags' environment twins must not change what is fuzzed (above all, the crash
        // fault must stay refused).
        for var in [
            "SAGA_SHOP_ALLOW_CRASH_FAULTS",
            "SAGA_SHOP_SEED_STOCK",
            "SAGA_SHOP_SERVICE",
            "SAGA_SHOP_SERVICE_URLS",
        ] {
            cmd.env_remove(var);
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", build::server_binary(root).display()))?;
        let Some(stdout) = child.stdout.take() else {
            let _ = child.kill();
            bail!("the server's stdout was not captured");
        };
        let mut server = Server {
            child,
            url: String::new(),
            log,
        };
        // The first line says where it listens; the rest is drained so the pipe never fills.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("saga-shop listening on ") {
                    let _ = tx.send(url.to_string());
                }
            }
        });
        server.url = rx.recv_timeout(Duration::from_secs(60)).with_context(|| {
            format!(
                "the server did not say where it listens within 60 s (log: {})",
                server.log.display()
            )
        })?;
        Ok(server)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The saga ids of every `202` that `POST /api/orders` answered during the run, as recorded
/// in schemathesis's HAR file.
fn accepted_sagas(path: &Path) -> anyhow::Result<BTreeSet<String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let har: Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let entries = har["log"]["entries"]
        .as_array()
        .context("the HAR file has no log.entries")?;
    let mut sagas = BTreeSet::new();
    for entry in entries {
        let is_order = entry["request"]["method"] == "POST"
            && entry["request"]["url"]
                .as_str()
                .is_some_and(|u| u.ends_with("/api/orders"));
        if !is_order || entry["response"]["status"] != 202 {
            continue;
        }
        let body = entry["response"]["content"]["text"].as_str().unwrap_or("");
        let accepted: Value = serde_json::from_str(body)
            .with_context(|| format!("a 202 to POST /api/orders whose body is not JSON: {body}"))?;
        let saga = accepted["saga_id"]
            .as_str()
            .with_context(|| format!("a 202 to POST /api/orders without saga_id: {body}"))?;
        sagas.insert(saga.to_string());
    }
    Ok(sagas)
}

/// Every saga `GET /api/sagas` lists, page by page (`before` the last saga of the previous one).
fn listed_sagas(url: &str) -> anyhow::Result<BTreeSet<String>> {
    let mut sagas = BTreeSet::new();
    let mut before: Option<String> = None;
    loop {
        let path = match &before {
            None => format!("/api/sagas?limit={PAGE}"),
            Some(last) => format!("/api/sagas?limit={PAGE}&before={last}"),
        };
        let body = http_get(url, &path)?;
        let page: Value =
            serde_json::from_str(&body).with_context(|| format!("GET {path} answered {body}"))?;
        let page = page
            .as_array()
            .with_context(|| format!("GET {path} is not a list"))?;
        let known = sagas.len();
        for saga in page {
            let id = saga["saga_id"]
                .as_str()
                .with_context(|| format!("a listed saga without saga_id: {saga}"))?;
            sagas.insert(id.to_string());
        }
        if page.len() < PAGE {
            return Ok(sagas);
        }
        if sagas.len() == known {
            bail!("GET {path} repeats the page before it: the list does not page with before=");
        }
        before = page
            .last()
            .and_then(|s| s["saga_id"].as_str())
            .map(str::to_string);
    }
}

/// A plain HTTP/1.1 GET of a JSON body (the server answers such a body with a
/// `content-length`, so reading to the close is enough).
fn http_get(base: &str, path: &str) -> anyhow::Result<String> {
    let addr = base
        .strip_prefix("http://")
        .with_context(|| format!("{base} is not an http:// URL"))?;
    let mut stream = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .with_context(|| format!("reading the answer to GET {path}"))?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .with_context(|| format!("GET {path}: not an HTTP response: {response}"))?;
    let status = head.lines().next().unwrap_or_default();
    if !status.contains(" 200 ") {
        bail!("GET {path} answered {status}: {body}");
    }
    Ok(body.to_string())
}
