//! Starting and stopping the server: open the store, recover unfinished sagas, listen, and
//! shut down gracefully on SIGTERM or ctrl-c.

use std::sync::Arc;

use anyhow::Context;
use saga_engine::{Engine, EngineConfig, PgStore, SagaStore, SqliteStore};

use crate::app::{AppState, router};
use crate::config::Config;

/// Open the saga log named by a `sqlite://` or `postgres://` URL.
pub async fn open_store(url: &str) -> anyhow::Result<Arc<dyn SagaStore>> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        let path = std::path::Path::new(path.split('?').next().unwrap_or(path));
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let store = SqliteStore::open(path)
            .await
            .with_context(|| format!("opening the SQLite saga log at {}", path.display()))?;
        Ok(Arc::new(store))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let store = PgStore::connect(url, None)
            .await
            .context("connecting to the PostgreSQL saga log")?;
        Ok(Arc::new(store))
    } else {
        anyhow::bail!("--database must start with sqlite:// or postgres://, got {url:?}")
    }
}

pub async fn run(config: Config) -> anyhow::Result<()> {
    let store = open_store(&config.database).await?;
    let engine = Engine::with_shared_store(store, EngineConfig::default());
    let state = AppState {
        engine: engine.clone(),
        allow_crash_faults: config.allow_crash_faults,
    };
    let resumed = engine
        .recover()
        .await
        .context("recovering unfinished sagas")?;
    if resumed > 0 {
        tracing::info!(resumed, "resumed unfinished sagas");
    }
    let app = router(state, &config.static_dir);
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    let addr = listener.local_addr()?;
    // Tests and `cargo xtask serve` read this line to find the server.
    println!("saga-shop listening on http://{addr}");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("serving HTTP")?;
    tracing::info!("stopped accepting requests; unfinished sagas resume at the next start");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
