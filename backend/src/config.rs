//! Command-line configuration, parsed once. Every flag has an environment-variable twin.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

use crate::services::ServiceName;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "saga-shop",
    version,
    about = "An online shop whose purchases run as sagas, and a live view of them."
)]
pub struct Config {
    /// Address to listen on (port 0 picks a free one; the chosen URL is printed).
    #[arg(long, env = "SAGA_SHOP_LISTEN", default_value = "127.0.0.1:3000")]
    pub listen: SocketAddr,

    /// The saga log: `sqlite://PATH` (created on first run) or `postgres://…`. Each service
    /// keeps its own database beside it: `PATH` with `.orders.db`, … for SQLite, a schema of
    /// its own for PostgreSQL.
    #[arg(
        long,
        env = "SAGA_SHOP_DATABASE",
        default_value = "sqlite://data/saga-shop.db"
    )]
    pub database: String,

    /// Where the built frontend (index.html, pkg/) is.
    #[arg(long, env = "SAGA_SHOP_STATIC_DIR", default_value = "frontend/dist")]
    pub static_dir: PathBuf,

    /// Accept the `crash` fault, which aborts this process on purpose. For demos and tests.
    #[arg(long, env = "SAGA_SHOP_ALLOW_CRASH_FAULTS")]
    pub allow_crash_faults: bool,

    /// Stock of every product when the catalog is first seeded (default: the catalog's own
    /// figures). For load tests, which need more than a shop's shelf.
    #[arg(long, env = "SAGA_SHOP_SEED_STOCK")]
    pub seed_stock: Option<i64>,

    /// How long, in seconds, this server's claim on a saga outlives it: after a crash, another
    /// server (or this one restarted, which is a new node) takes its unfinished sagas over once
    /// their lease expired. Claims are renewed every third of it. Short leases are for tests.
    #[arg(long, env = "SAGA_SHOP_LEASE_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub lease_secs: u64,

    /// Run only this shop service (orders, billing, payments or shipping), not the shop.
    #[arg(long, env = "SAGA_SHOP_SERVICE", value_parser = parse_service)]
    pub service: Option<ServiceName>,

    /// Use the service at URL instead of hosting it here, as NAME=URL (repeatable, or
    /// comma-separated in the environment variable), e.g. `payments=http://10.0.0.7:4000`.
    #[arg(long = "service-url", env = "SAGA_SHOP_SERVICE_URLS", value_delimiter = ',', value_parser = parse_service_url)]
    pub service_urls: Vec<(ServiceName, String)>,
}

fn parse_service(s: &str) -> Result<ServiceName, String> {
    s.parse()
}

fn parse_service_url(s: &str) -> Result<(ServiceName, String), String> {
    let (name, url) = s
        .split_once('=')
        .ok_or("expected NAME=URL, e.g. payments=http://127.0.0.1:4000")?;
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(format!("{url:?} is not an http:// URL"));
    }
    Ok((name.parse()?, url.to_string()))
}
