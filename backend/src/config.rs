//! Command-line configuration, parsed once. Every flag has an environment-variable twin.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

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

    /// Open connections at most; past it a connection is answered 503 and closed. Lowered to
    /// fit the process's descriptor limit.
    #[arg(long, env = "SAGA_SHOP_MAX_CONNECTIONS", default_value_t = 10_000, value_parser = parse_connections)]
    pub max_connections: usize,

    /// Seconds a connection has to send a whole request head, from when it opens or finished
    /// its previous response; an idle kept-alive connection is closed after it.
    #[arg(long, env = "SAGA_SHOP_REQUEST_HEAD_TIMEOUT", default_value_t = 20.0, value_parser = parse_seconds)]
    pub request_head_timeout: f64,

    /// Seconds a write may wait on a peer that takes nothing (an event-stream subscriber that
    /// stopped reading) before its connection is dropped; it resumes from its last event id.
    #[arg(long, env = "SAGA_SHOP_WRITE_TIMEOUT", default_value_t = 30.0, value_parser = parse_seconds)]
    pub write_timeout: f64,

    /// Use the service at URL instead of hosting it here, as NAME=URL (repeatable, or
    /// comma-separated in the environment variable), e.g. `payments=http://10.0.0.7:4000`.
    #[arg(long = "service-url", env = "SAGA_SHOP_SERVICE_URLS", value_delimiter = ',', value_parser = parse_service_url)]
    pub service_urls: Vec<(ServiceName, String)>,

    /// On PostgreSQL, the prefix of this deployment's schemas: `PREFIX_saga_log`,
    /// `PREFIX_orders`, … instead of `saga_log`, `orders`, …, so several deployments (or test
    /// runs) share one database without seeing each other's data. Every node of one deployment
    /// uses the same prefix. Lowercase letters, digits and `_`, starting with a letter.
    #[arg(long, env = "SAGA_SHOP_SCHEMA", value_parser = parse_schema_prefix)]
    pub schema: Option<String>,

    /// This node's name: every saga-log record it writes says which node wrote it, and it
    /// claims sagas under it. Default: the host name and the process id (`web-1-4242`), new in
    /// every process. Two processes running at once must never share one.
    #[arg(long, env = "SAGA_SHOP_NODE_ID", value_parser = parse_node_id)]
    pub node_id: Option<String>,
}

impl Config {
    /// [`Config::node_id`], or the host name and process id.
    pub fn node_id(&self) -> String {
        self.node_id.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .or_else(|| std::env::var("HOSTNAME").ok())
                .map(|h| h.trim().to_string())
                .filter(|h| parse_node_id(h).is_ok())
                .unwrap_or_else(|| "saga-shop".into());
            format!("{host}-{}", std::process::id())
        })
    }

    /// The connection limits of [`crate::connections`].
    pub fn limits(&self) -> crate::connections::Limits {
        crate::connections::Limits {
            max_connections: self.max_connections.max(1),
            request_head_timeout: Duration::from_secs_f64(self.request_head_timeout),
            write_timeout: Duration::from_secs_f64(self.write_timeout),
        }
    }
}

fn parse_connections(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=1_000_000).contains(&n) => Ok(n),
        _ => Err(format!(
            "{s:?} is not a number of connections between 1 and 1000000"
        )),
    }
}

fn parse_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 86_400.0 => Ok(v),
        _ => Err(format!(
            "{s:?} is not a number of seconds between 0 and 86400"
        )),
    }
}

fn parse_schema_prefix(s: &str) -> Result<String, String> {
    let mut chars = s.chars();
    let ok = (1..=40).contains(&s.len())
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(s.to_string())
    } else {
        Err(
            "a schema prefix is 1 to 40 lowercase letters, digits or '_', starting with a letter"
                .into(),
        )
    }
}

fn parse_node_id(s: &str) -> Result<String, String> {
    let ok = (1..=64).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'));
    if ok {
        Ok(s.to_string())
    } else {
        Err("a node id is 1 to 64 letters, digits, '-', '_', '.' or ':'".into())
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_node_id_is_the_flag_or_the_host_and_process() {
        let named = Config::parse_from(["saga-shop", "--node-id", "web-1"]);
        assert_eq!(named.node_id(), "web-1");
        let default = Config::parse_from(["saga-shop"]).node_id();
        assert!(
            default.ends_with(&format!("-{}", std::process::id())),
            "{default}"
        );
        assert!(parse_node_id(&default).is_ok(), "{default}");
        for bad in ["", "a b", "x;y", &"n".repeat(65)] {
            assert!(parse_node_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_schema_prefix_is_a_plain_lowercase_name() {
        assert_eq!(parse_schema_prefix("shop_eu1").as_deref(), Ok("shop_eu1"));
        for bad in ["", "1shop", "Shop", "shop-eu", "a;drop", &"s".repeat(41)] {
            assert!(parse_schema_prefix(bad).is_err(), "{bad:?}");
        }
    }
}
