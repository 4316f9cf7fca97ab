//! `saga-shop`: the web application around the saga engine. It hosts the HTTP API and its SSE
//! streams, serves the WebAssembly frontend, and recovers unfinished sagas on start.
//!
//! Main types: [`config::Config`] (flags), [`app::AppState`] (what handlers share) and
//! [`app::router`] (the whole HTTP surface, callable from tests).

pub mod api;
pub mod app;
pub mod body;
pub mod config;
pub mod connections;
pub mod error;
pub mod metrics;
pub mod purchase;
pub mod server;
pub mod services;
