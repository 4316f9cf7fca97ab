//! Starting and stopping: open the stores, host the services, recover unfinished sagas, listen,
//! and shut down gracefully on SIGTERM or ctrl-c.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use saga_engine::{Engine, EngineConfig, PgStore, SagaStore, SqliteStore};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::api::sse::EventsFeed;
use crate::app::{AppState, router};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::purchase::{ServiceClient, ServiceUrls, purchase_saga};
use crate::services::{
    ServiceDb, ServiceName, billing::Billing, orders::Orders, payments::Payments,
    shipping::Shipping,
};

/// Open the saga log named by a `sqlite://` or `postgres://` URL.
pub async fn open_store(
    url: &str,
    schema_prefix: Option<&str>,
) -> anyhow::Result<Arc<dyn SagaStore>> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        // Its directory was made by `run`, which also needs it for the services' files.
        let path = std::path::Path::new(path.split('?').next().unwrap_or(path));
        let store = SqliteStore::open(path)
            .await
            .with_context(|| format!("opening the SQLite saga log at {}", path.display()))?;
        Ok(Arc::new(store))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let schema = crate::services::db::schema_name(schema_prefix, "saga_log");
        let store = PgStore::connect(url, Some(&schema))
            .await
            .context("connecting to the PostgreSQL saga log")?;
        Ok(Arc::new(store))
    } else {
        anyhow::bail!("--database must start with sqlite:// or postgres://, got {url:?}")
    }
}

/// What is closed at shutdown. The saga side first, as soon as the signal comes: the claims
/// stop, the node hands its unfinished sagas back (so another node on a shared database takes
/// them over at once, not after their leases) and the saga log closes, so every saga stops at
/// its next record, exactly as after a crash (whatever it logged stands; recovery resumes it). Only then do connections drain:
/// were the log still open, a saga whose step call found the listener gone would log that as
/// a failure and compensate, or end `stuck`, for a shutdown. The services' databases close
/// last, once nothing can call them.
#[derive(Default)]
struct Databases {
    sagas: SagaSide,
    services: Vec<ServiceDb>,
}

#[derive(Default)]
struct SagaSide {
    saga_log: Option<Arc<dyn SagaStore>>,
    engine: Option<Engine>,
    /// Claiming and renewing leases, and following other nodes' commits.
    recovery: Option<JoinHandle<()>>,
}

impl SagaSide {
    async fn close(self) {
        if let Some(recovery) = self.recovery {
            recovery.abort();
            let _ = recovery.await;
        }
        if let Some(engine) = self.engine {
            match engine.hand_back().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(sagas = n, "handed unfinished sagas back"),
                Err(e) => {
                    tracing::warn!(error = %e, "handing sagas back failed; they move when their leases expire")
                }
            }
        }
        if let Some(log) = self.saga_log {
            log.close().await;
        }
    }
}

impl Databases {
    async fn close_services(self) {
        for db in &self.services {
            db.close().await;
        }
    }
}

/// The router of one service, mounted at `/svc/{name}`; its database joins `databases`.
async fn service_router(
    service: ServiceName,
    config: &Config,
    databases: &mut Databases,
) -> anyhow::Result<Router> {
    let database = config.database.as_str();
    let prefix = config.schema.as_deref();
    let context = || format!("opening the {service} service's database");
    let (db, router) = match service {
        ServiceName::Orders => {
            let s = Orders::open(database, prefix, config.seed_stock)
                .await
                .with_context(context)?;
            (s.db().clone(), s.router())
        }
        ServiceName::Billing => {
            let s = Billing::open(database, prefix)
                .await
                .with_context(context)?;
            (s.db().clone(), s.router())
        }
        ServiceName::Payments => {
            let s = Payments::open(database, prefix)
                .await
                .with_context(context)?;
            (s.db().clone(), s.router())
        }
        ServiceName::Shipping => {
            let s = Shipping::open(database, prefix)
                .await
                .with_context(context)?;
            (s.db().clone(), s.router())
        }
    };
    databases.services.push(db);
    // The same body limit as the API's, which the refusals' message states.
    let limit = axum::extract::DefaultBodyLimit::max(crate::app::MAX_BODY_BYTES);
    Ok(Router::new().nest(&format!("/svc/{service}"), router.layer(limit)))
}

pub async fn run(config: Config) -> anyhow::Result<()> {
    if config.schema.is_some() && config.database.starts_with("sqlite://") {
        anyhow::bail!(
            "--schema names PostgreSQL schemas; a sqlite:// database is a file of its own, so choose another file instead"
        );
    }
    if let Some(dir) = config
        .database
        .strip_prefix("sqlite://")
        .and_then(|p| std::path::Path::new(p).parent())
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut databases = Databases::default();

    let opened = match config.service {
        Some(service) => {
            let healthz = Router::new().route("/healthz", axum::routing::get(|| async { "ok" }));
            service_router(service, &config, &mut databases)
                .await
                .map(|router| (router.merge(healthz), None))
        }
        None => {
            // The saga calls this process's own services here, not on the public listener.
            let internal = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .context("listening on loopback for the services' own calls")?;
            let services_at = internal.local_addr()?.to_string();
            shop(&config, &services_at, stop_rx.clone(), &mut databases)
                .await
                .map(|app| (app, Some(internal)))
        }
    };
    let (app, internal) = match opened {
        Ok(opened) => opened,
        Err(e) => {
            // What did open (the saga log, the services before the one that failed) is
            // closed, not left with its WAL.
            std::mem::take(&mut databases.sagas).close().await;
            databases.close_services().await;
            return Err(e);
        }
    };
    let public = config.limits();
    let (limits, internal_limits) = crate::connections::fit_to_descriptors(
        public,
        crate::connections::Limits::internal(public),
    );
    let internal_server = internal.map(|internal| {
        let mut stopped = stop_rx.clone();
        tokio::spawn(crate::connections::serve(
            internal,
            app.clone(),
            internal_limits,
            async move {
                let _ = stopped.wait_for(|stopping| *stopping).await;
            },
        ))
    });

    let sagas = std::mem::take(&mut databases.sagas);
    let server = tokio::spawn(crate::connections::serve(
        listener,
        app,
        limits,
        async move {
            shutdown_signal().await;
            sagas.close().await;
            // Event streams end on this, so that the connections can drain.
            let _ = stop_tx.send(true);
        },
    ));
    // Tests and `cargo xtask serve` read this line to find the server.
    match config.service {
        Some(service) => println!(
            "saga-shop listening on http://{addr} (the {service} service only, under /svc/{service})"
        ),
        None => println!("saga-shop listening on http://{addr}"),
    }
    let served = server.await;
    if let Some(internal_server) = internal_server {
        let _ = internal_server.await;
    }
    databases.close_services().await;
    served.context("the server task failed")?;
    tracing::info!("stopped; unfinished sagas resume at the next start");
    Ok(())
}

/// The whole shop: the engine with the purchase saga, the API and page, and every service not
/// pointed elsewhere by `--service-url`.
async fn shop(
    config: &Config,
    addr: &str,
    stop: watch::Receiver<bool>,
    databases: &mut Databases,
) -> anyhow::Result<Router> {
    let store = open_store(&config.database, config.schema.as_deref()).await?;
    databases.sagas.saga_log = Some(store.clone());
    let lease = Duration::from_secs(config.lease_secs);
    let engine = Engine::with_shared_store(
        store,
        EngineConfig {
            node_id: config.node_id(),
            lease,
            claim_every: lease / 3,
            takeover_every: (lease / 4).min(Duration::from_millis(500)),
            ..EngineConfig::default()
        },
    );
    let mut urls = ServiceUrls::local(&format!("http://{addr}"));
    for (service, url) in &config.service_urls {
        urls.set(*service, url);
    }
    let client = ServiceClient::new(urls);
    engine.register(purchase_saga(client.clone(), config.allow_crash_faults));
    let metrics = Arc::new(Metrics::default());
    metrics.spawn_collector(&engine);
    let events = EventsFeed::start(&engine, metrics.clone(), stop.clone())
        .await
        .context("reading the saga log's position")?;
    let state = AppState {
        engine: engine.clone(),
        client,
        allow_crash_faults: config.allow_crash_faults,
        metrics,
        events,
        shutdown: stop,
    };
    let mut app = router(state, &config.static_dir);
    for service in ServiceName::ALL {
        if !config.service_urls.iter().any(|(s, _)| *s == service) {
            app = app.merge(service_router(service, config, databases).await?);
        }
    }
    // Recover once the listener is up (the participants call this very server), but do not
    // hold up the start: a slow recovery must not make the server look dead. Then keep
    // claiming while the server runs, so sagas whose lease a dead node held are taken over
    // once it expires (see `Engine::keep_recovering`), and on PostgreSQL announce the other
    // nodes' records here (`Engine::follow_others`); stopped before the log is closed.
    databases.sagas.engine = Some(engine.clone());
    databases.sagas.recovery = Some(tokio::spawn(async move {
        tokio::join!(engine.keep_recovering(), engine.follow_others());
    }));
    Ok(app)
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
