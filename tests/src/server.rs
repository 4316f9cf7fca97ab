//! Starting the real `saga-shop` binary on an ephemeral port, as a user would run it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::time::Duration;

use anyhow::{Context, bail};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// The server binary: `SAGA_SHOP_BIN` (set by `cargo xtask test`), else the release build.
pub fn server_binary() -> anyhow::Result<PathBuf> {
    let bin = std::env::var_os("SAGA_SHOP_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/release/saga-shop"));
    if !bin.exists() {
        bail!(
            "{} is missing: run the tests with `cargo xtask test`, which builds it",
            bin.display()
        );
    }
    Ok(bin)
}

/// The built frontend: `SAGA_SHOP_STATIC_DIR`, else `frontend/dist`.
pub fn static_dir() -> PathBuf {
    std::env::var_os("SAGA_SHOP_STATIC_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("frontend/dist"))
}

/// A scratch directory for one test's databases.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = workspace_root()
        .join("target/test-scratch")
        .join(crate::unique_name(name));
    let _ = std::fs::create_dir_all(&dir);
    dir
}

/// A running `saga-shop`. Killed (SIGKILL) when dropped.
pub struct ShopServer {
    child: Child,
    pub url: String,
    pub dir: PathBuf,
    /// Its log (stderr), when started with [`ShopServer::start_logged`].
    log: Option<Log>,
}

/// A server's stderr, kept as it comes (and passed on to the test's own stderr).
struct Log {
    text: Arc<Mutex<String>>,
    reader: std::thread::JoinHandle<()>,
}

impl ShopServer {
    /// Start on a fresh SQLite database in a new scratch directory.
    pub fn start(extra_args: &[&str]) -> anyhow::Result<Self> {
        Self::start_in(scratch_dir("shop"), extra_args)
    }

    /// Start on the databases in `dir` (to restart a server on the same files).
    pub fn start_in(dir: PathBuf, extra_args: &[&str]) -> anyhow::Result<Self> {
        Self::spawn(dir, &static_dir(), extra_args, None)
    }

    /// Start on a fresh database, serving the page's files from `static_dir` instead of the
    /// built page (a page whose bundle never loads, say).
    pub fn start_serving(static_dir: &Path, extra_args: &[&str]) -> anyhow::Result<Self> {
        Self::spawn(scratch_dir("shop"), static_dir, extra_args, None)
    }

    /// Start again on the databases in `dir` at the address `url` of a server that has
    /// stopped, so clients of the old one (a page's event streams) reconnect by themselves.
    pub fn restart_at(dir: PathBuf, url: &str, extra_args: &[&str]) -> anyhow::Result<Self> {
        let addr = url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        Self::spawn_at(dir, &addr, &static_dir(), extra_args, None)
    }

    /// Start on a fresh database, logging at `filter` (`RUST_LOG`), with its log kept for
    /// [`ShopServer::stop_and_read_log`].
    pub fn start_logged(extra_args: &[&str], filter: &str) -> anyhow::Result<Self> {
        Self::spawn(scratch_dir("shop"), &static_dir(), extra_args, Some(filter))
    }

    fn spawn(
        dir: PathBuf,
        static_dir: &Path,
        extra_args: &[&str],
        log_filter: Option<&str>,
    ) -> anyhow::Result<Self> {
        Self::spawn_at(dir, "127.0.0.1:0", static_dir, extra_args, log_filter)
    }

    fn spawn_at(
        dir: PathBuf,
        listen: &str,
        static_dir: &Path,
        extra_args: &[&str],
        log_filter: Option<&str>,
    ) -> anyhow::Result<Self> {
        // A `--database` among the extra arguments (PostgreSQL) stands instead of the file.
        let db = if extra_args.contains(&"--database") {
            None
        } else {
            Some(format!("sqlite://{}", dir.join("saga-shop.db").display()))
        };
        let mut command = Command::new(server_binary()?);
        command
            .args(["--listen", listen])
            .args(db.iter().flat_map(|db| ["--database", db.as_str()]))
            .arg("--static-dir")
            .arg(static_dir)
            .args(extra_args)
            .stdout(Stdio::piped());
        match log_filter {
            Some(filter) => command.env("RUST_LOG", filter).stderr(Stdio::piped()),
            None => command.stderr(Stdio::inherit()),
        };
        let mut child = command.spawn().context("starting saga-shop")?;
        let log = match child.stderr.take() {
            Some(stderr) => {
                let text = Arc::new(Mutex::new(String::new()));
                let kept = Arc::clone(&text);
                let reader = std::thread::spawn(move || {
                    for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                        eprintln!("{line}");
                        let mut kept = kept.lock().unwrap_or_else(PoisonError::into_inner);
                        kept.push_str(&line);
                        kept.push('\n');
                    }
                });
                Some(Log { text, reader })
            }
            None => None,
        };
        let stdout = child.stdout.take().context("saga-shop stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("saga-shop listening on ") {
                    let _ = tx.send(
                        url.split_whitespace()
                            .next()
                            .unwrap_or_default()
                            .to_string(),
                    );
                }
            }
        });
        let url = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                bail!(
                    "saga-shop exited or did not report its address within 60 s (its stderr is above)"
                );
            }
        };
        Ok(ShopServer {
            child,
            url,
            dir,
            log,
        })
    }

    /// Stop the server gracefully (SIGTERM) and return everything it logged, to the end: the
    /// log is complete once the process has exited and its stderr is closed. Needs
    /// [`ShopServer::start_logged`].
    pub fn stop_and_read_log(&mut self, timeout: Duration) -> anyhow::Result<String> {
        let log = self
            .log
            .take()
            .context("the server was not started with start_logged")?;
        self.terminate()?;
        self.wait_exit(timeout)?;
        log.reader
            .join()
            .map_err(|_| anyhow::anyhow!("the log reader panicked"))?;
        let text = log.text.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(text.clone())
    }

    /// Everything it has logged so far, when started with [`ShopServer::start_logged`].
    pub fn log_so_far(&self) -> Option<String> {
        let log = self.log.as_ref()?;
        let text = log.text.lock().unwrap_or_else(PoisonError::into_inner);
        Some(text.clone())
    }

    /// SIGKILL: no graceful anything, as in a crash.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM: ask for a graceful shutdown.
    pub fn terminate(&self) -> anyhow::Result<()> {
        self.signal("TERM")
    }

    /// The process id, as a person would pass it to `kill`.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send the signal `name` (`TERM`, `STOP`, `CONT`, …) with kill(1), as a person would:
    /// SIGSTOP freezes the whole process (a node paused by its host, its leases running out
    /// while it cannot tell), SIGCONT lets it go on from where it stood.
    pub fn signal(&self, name: &str) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()?;
        anyhow::ensure!(status.success(), "kill -{name} failed");
        Ok(())
    }

    /// Wait for the process to exit by itself (after a `crash` fault) and return its status.
    pub fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if std::time::Instant::now() > deadline {
                bail!("saga-shop did not exit within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ShopServer {
    fn drop(&mut self) {
        self.kill();
    }
}
