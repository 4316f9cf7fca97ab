//! The `saga-shop` binary: parse flags, set up logging, run the server.

use clap::Parser;
use saga_shop::config::Config;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "saga_shop=info,saga_engine=info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    saga_shop::server::run(Config::parse()).await
}
