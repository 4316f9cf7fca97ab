//! `cargo xtask cluster`: several `saga-shop` nodes on the local PostgreSQL, one deployment, to
//! watch sagas move from a node that dies to the others.
//!
//! Every node gets the same database and schema prefix (a fresh `cluster_<random>` unless
//! `--schema` names one to go on with), a node id (`node-a`, `node-b`, …) and a port of its own
//! (`--port`, then the next ones), and serves the page and the whole API. Each runs in a
//! process group of its own, so ctrl-c in the terminal reaches this task alone, which sends
//! every node SIGTERM, the signal a deployment stops a node with (it hands its sagas back),
//! and waits for them: a second ctrl-c kills what is left. A node killed by hand is reported
//! and the others go on.

use std::io::{BufRead, BufReader, Read};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::build;

/// The local PostgreSQL of the development machine (and of CI).
const DEFAULT_DATABASE: &str = "postgres://postgres@127.0.0.1:5432/test";
/// Overrides [`DEFAULT_DATABASE`], as `--database` does.
const DATABASE_ENV: &str = "SAGA_CLUSTER_DATABASE";
/// `cargo xtask serve` listens on 3000; the cluster starts beside it.
const DEFAULT_PORT: u16 = 3001;
/// How long a node may take to open its databases and report its address.
const START_TIMEOUT: Duration = Duration::from_secs(60);

pub const USAGE: &str = "cargo xtask cluster [--nodes N] [--port P] [--database URL] [--schema PREFIX] [--lease-secs S] [-- SERVER FLAGS…]
  --nodes N          how many nodes (default 3): node-a, node-b, …
  --port P           node-a's port; the others take the next ones (default 3001)
  --database URL     the PostgreSQL database (default $SAGA_CLUSTER_DATABASE, else postgres://postgres@127.0.0.1:5432/test)
  --schema PREFIX    go on with an earlier cluster's schemas (default: a fresh cluster_<random>)
  --lease-secs S     how long a dead node's sagas wait for another (the server's default is 30)
  -- FLAGS…          passed on to every node (e.g. -- --allow-crash-faults)";

/// What `cargo xtask cluster` was asked for.
#[derive(Debug, PartialEq)]
pub struct Options {
    nodes: usize,
    port: u16,
    database: String,
    schema: Option<String>,
    lease_secs: Option<u64>,
    server_args: Vec<String>,
}

impl Options {
    pub fn parse(args: &[String]) -> anyhow::Result<Options> {
        let mut options = Options {
            nodes: 3,
            port: DEFAULT_PORT,
            database: std::env::var(DATABASE_ENV)
                .ok()
                .filter(|d| !d.is_empty())
                .unwrap_or_else(|| DEFAULT_DATABASE.into()),
            schema: None,
            lease_secs: None,
            server_args: Vec::new(),
        };
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            if arg == "--" {
                options.server_args = args.cloned().collect();
                break;
            }
            let (flag, inline) = match arg.split_once('=') {
                Some((flag, value)) => (flag, Some(value.to_string())),
                None => (arg.as_str(), None),
            };
            let mut value = || {
                inline
                    .clone()
                    .or_else(|| args.next().cloned())
                    .with_context(|| format!("{flag} needs a value\nusage: {USAGE}"))
            };
            match flag {
                "--nodes" => {
                    options.nodes = value()?
                        .parse()
                        .ok()
                        .filter(|n| (1..=26).contains(n))
                        .context("--nodes is a number from 1 to 26")?
                }
                "--port" => {
                    options.port = value()?
                        .parse()
                        .ok()
                        .filter(|p| *p > 0)
                        .context("--port is a port number")?
                }
                "--database" => options.database = value()?,
                "--schema" => options.schema = Some(value()?),
                "--lease-secs" => {
                    options.lease_secs = Some(
                        value()?
                            .parse()
                            .ok()
                            .filter(|s| *s > 0)
                            .context("--lease-secs is a whole number of seconds")?,
                    )
                }
                _ => bail!("unknown flag {arg:?}\nusage: {USAGE}"),
            }
        }
        if usize::from(options.port) + options.nodes > usize::from(u16::MAX) + 1 {
            bail!(
                "--port {} leaves no room for {} nodes",
                options.port,
                options.nodes
            );
        }
        Ok(options)
    }
}

/// How many times ctrl-c (or SIGTERM, or a closed terminal) reached this process.
static INTERRUPTS: AtomicUsize = AtomicUsize::new(0);

extern "C" fn interrupted(_signal: libc::c_int) {
    // Only an atomic store: all a signal handler may safely do.
    INTERRUPTS.fetch_add(1, Ordering::SeqCst);
}

fn catch_interrupts() {
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only increments an atomic, which is async-signal-safe.
        unsafe {
            libc::signal(
                signal,
                interrupted as extern "C" fn(libc::c_int) as libc::sighandler_t,
            );
        }
    }
}

/// A node started by this task.
struct Node {
    id: String,
    child: Child,
    /// Its exit, once seen.
    exited: Option<std::process::ExitStatus>,
}

impl Node {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn signal(&self, signal: libc::c_int) {
        if self.exited.is_none() {
            // SAFETY: kill(2) with a pid this process spawned and has not reaped yet (the
            // zombie keeps the pid from being reused until `try_wait` reaps it).
            unsafe {
                libc::kill(self.pid() as libc::pid_t, signal);
            }
        }
    }

    /// Reap the process if it has exited; true if it is gone.
    fn poll_exit(&mut self) -> anyhow::Result<bool> {
        if self.exited.is_none()
            && let Some(status) = self.child.try_wait()?
        {
            self.exited = Some(status);
            eprintln!("==> {} (pid {}) exited: {status}", self.id, self.pid());
        }
        Ok(self.exited.is_some())
    }
}

pub fn run(root: &Path, options: &Options) -> anyhow::Result<()> {
    check_postgres(&options.database)?;
    build::all(root)?;
    let prefix = options.schema.clone().unwrap_or_else(fresh_prefix);
    catch_interrupts();
    let mut nodes: Vec<Node> = Vec::new();
    let mut urls = Vec::new();
    for i in 0..options.nodes {
        match start_node(root, options, &prefix, i) {
            Ok((node, url)) => {
                nodes.push(node);
                urls.push(url);
            }
            Err(e) => {
                // The nodes already up go too: half a cluster is not what was asked for.
                for node in &nodes {
                    node.signal(libc::SIGTERM);
                }
                stop_all(&mut nodes)?;
                if !nodes.is_empty() {
                    say_where_the_data_is(options, &prefix);
                }
                return Err(e);
            }
        }
    }
    print_summary(options, &prefix, &nodes, &urls);
    stop_all(&mut nodes)?;
    say_where_the_data_is(options, &prefix);
    Ok(())
}

/// The schemas stay (a cluster can go on with them): how to use them again, or remove them.
fn say_where_the_data_is(options: &Options, prefix: &str) {
    eprintln!(
        "==> every node has stopped. The data stays in the schemas {prefix}_*: `cargo xtask cluster --schema {prefix}` goes on with it, and\n    psql {} -c 'DROP SCHEMA {} CASCADE'\n    removes it",
        options.database,
        ["saga_log", "orders", "billing", "payments", "shipping"]
            .map(|s| format!("{prefix}_{s}"))
            .join(", ")
    );
}

/// One clear line when nothing answers where the database should be, before minutes of build.
fn check_postgres(url: &str) -> anyhow::Result<()> {
    let Some(rest) = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
    else {
        bail!("--database must be a postgres:// URL, not {url:?}");
    };
    // postgres://user:password@host:port/db?options: the host and port only.
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let host_port = authority.rsplit('@').next().unwrap_or_default();
    let (host, port) = match host_port.strip_prefix('[') {
        // [::1]:5432
        Some(v6) => {
            let (host, after) = v6.split_once(']').unwrap_or((v6, ""));
            (host, after.strip_prefix(':'))
        }
        None => match host_port.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        },
    };
    let port = port.and_then(|p| p.parse::<u16>().ok()).unwrap_or(5432);
    let host = if host.is_empty() { "localhost" } else { host };
    let reachable = (host, port)
        .to_socket_addrs()
        .ok()
        .is_some_and(|mut addrs| {
            addrs.any(|addr| TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok())
        });
    if !reachable {
        bail!(
            "PostgreSQL is not reachable at {host}:{port}: start it, or name another with --database URL (or {DATABASE_ENV})"
        );
    }
    Ok(())
}

/// `cluster_` and 12 hex digits, from the standard library's randomly seeded hasher.
fn fresh_prefix() -> String {
    use std::hash::BuildHasher;
    let random = std::collections::hash_map::RandomState::new().hash_one(std::process::id());
    format!("cluster_{:012x}", random & 0xffff_ffff_ffff)
}

/// `node-a`, `node-b`, …
fn node_id(i: usize) -> String {
    format!("node-{}", (b'a' + i as u8) as char)
}

/// Start the `i`-th node and wait until it listens; its output goes to ours, each line
/// prefixed with its id.
fn start_node(
    root: &Path,
    options: &Options,
    prefix: &str,
    i: usize,
) -> anyhow::Result<(Node, String)> {
    let id = node_id(i);
    let port = usize::from(options.port) + i;
    let mut cmd = Command::new(build::server_binary(root));
    cmd.current_dir(root)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--database")
        .arg(&options.database)
        .arg("--schema")
        .arg(prefix)
        .arg("--node-id")
        .arg(&id)
        .arg("--static-dir")
        .arg(build::dist_dir(root));
    if let Some(lease) = options.lease_secs {
        cmd.arg("--lease-secs").arg(lease.to_string());
    }
    cmd.args(&options.server_args)
        // Out of the terminal's process group: ctrl-c is ours to forward as SIGTERM.
        .process_group(0)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {id} ({})", build::server_binary(root).display()))?;
    let (tx, listening) = mpsc::channel();
    if let Some(stdout) = child.stdout.take() {
        relay(&id, stdout, Some(tx));
    }
    if let Some(stderr) = child.stderr.take() {
        relay(&id, stderr, None);
    }
    let mut node = Node {
        id,
        child,
        exited: None,
    };
    let started = Instant::now();
    loop {
        if let Ok(url) = listening.recv_timeout(Duration::from_millis(100)) {
            return Ok((node, url));
        }
        if node.poll_exit()? {
            bail!(
                "{} (port {port}) stopped before it was listening; its log is above",
                node.id
            );
        }
        if INTERRUPTS.load(Ordering::SeqCst) > 0 {
            node.signal(libc::SIGTERM);
            let _ = node.child.wait();
            bail!("interrupted while starting {}", node.id);
        }
        if started.elapsed() > START_TIMEOUT {
            node.signal(libc::SIGKILL);
            let _ = node.child.wait();
            bail!(
                "{} did not report its address within {START_TIMEOUT:?} (its log is above)",
                node.id
            );
        }
    }
}

/// Copy a node's output to ours line by line, as `[node-a] …`; the line announcing its
/// address goes to `listening` too.
fn relay(id: &str, from: impl Read + Send + 'static, listening: Option<mpsc::Sender<String>>) {
    let id = id.to_string();
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines().map_while(Result::ok) {
            eprintln!("[{id}] {line}");
            if let (Some(tx), Some(url)) =
                (&listening, line.strip_prefix("saga-shop listening on "))
            {
                let _ = tx.send(
                    url.split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_string(),
                );
            }
        }
    });
}

fn print_summary(options: &Options, prefix: &str, nodes: &[Node], urls: &[String]) {
    let lease = options.lease_secs.map_or_else(
        || "the server's default, 30 s".to_string(),
        |s| format!("{s} s"),
    );
    eprintln!(
        "==> {} nodes on {}, schemas {prefix}_* (lease: {lease}); each serves the page and the whole API",
        nodes.len(),
        options.database
    );
    for (node, url) in nodes.iter().zip(urls) {
        eprintln!("    {}  {url}  pid {}", node.id, node.pid());
    }
    if let Some(node) = nodes.get(1).or(nodes.first()) {
        let pid = node.pid();
        eprintln!(
            "    kill -9 {pid}      crash {}: the others take its unfinished sagas over once its lease ran out",
            node.id
        );
        eprintln!(
            "    kill -TERM {pid}   stop {} cleanly: it hands its sagas back and the others go on with them at once",
            node.id
        );
    }
    eprintln!("    ctrl-c stops every node (SIGTERM to each); a second ctrl-c kills them");
}

/// Wait until every node has exited: by itself, killed by hand, or — after ctrl-c — stopped
/// with SIGTERM (SIGKILL after a second ctrl-c).
fn stop_all(nodes: &mut [Node]) -> anyhow::Result<()> {
    let mut sent = 0;
    loop {
        let mut running = 0;
        for node in nodes.iter_mut() {
            if !node.poll_exit()? {
                running += 1;
            }
        }
        if running == 0 {
            return Ok(());
        }
        let interrupts = INTERRUPTS.load(Ordering::SeqCst);
        if interrupts > sent {
            let (signal, name) = if interrupts == 1 {
                (libc::SIGTERM, "SIGTERM")
            } else {
                (libc::SIGKILL, "SIGKILL")
            };
            eprintln!("==> sending {name} to the {running} running node(s)");
            for node in nodes.iter() {
                node.signal(signal);
            }
            sent = interrupts;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn flags_and_the_server_flags_after_two_dashes() {
        let o = Options::parse(&args(
            "--nodes 4 --port=4000 --lease-secs 5 --database postgres://db/x -- --allow-crash-faults",
        ))
        .unwrap();
        assert_eq!(o.nodes, 4);
        assert_eq!(o.port, 4000);
        assert_eq!(o.lease_secs, Some(5));
        assert_eq!(o.database, "postgres://db/x");
        assert_eq!(o.server_args, args("--allow-crash-faults"));
        assert!(Options::parse(&args("--nodes 0")).is_err());
        assert!(Options::parse(&args("--nodes")).is_err());
        assert!(Options::parse(&args("--colour")).is_err());
    }

    #[test]
    fn an_unreachable_database_is_one_line_naming_it() {
        // Port 1 on loopback: nothing listens there.
        let e = check_postgres("postgres://postgres@127.0.0.1:1/test").unwrap_err();
        let e = e.to_string();
        assert!(
            e.starts_with("PostgreSQL is not reachable at 127.0.0.1:1"),
            "{e}"
        );
        assert!(!e.contains('\n'), "{e}");
        assert!(check_postgres("sqlite://x.db").is_err());
    }

    #[test]
    fn node_ids_and_prefixes() {
        assert_eq!(node_id(0), "node-a");
        assert_eq!(node_id(2), "node-c");
        let p = fresh_prefix();
        assert!(p.starts_with("cluster_") && p.len() == 20, "{p}");
        assert!(
            p.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        );
    }
}
