//! Command-line configuration, parsed once. Every flag has an environment-variable twin.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "saga-shop",
    version,
    about = "An online shop whose purchases run as sagas, and a live view of them."
)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "SAGA_SHOP_LISTEN", default_value = "127.0.0.1:3000")]
    pub listen: SocketAddr,

    /// The saga log: `sqlite://PATH` (created on first run) or `postgres://…`.
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
}
