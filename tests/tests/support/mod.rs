//! Opening a fresh store per test: a SQLite file of its own, or a PostgreSQL schema of its own.

use std::sync::Arc;

use saga_engine::{PgStore, SagaStore, SqliteStore};

#[derive(Debug, Clone, Copy)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub const POSTGRES_ENV: &str = "SAGA_TEST_POSTGRES_URL";

/// A fresh, empty store, or `None` (after saying so loudly) when the PostgreSQL tests have no
/// server to run against.
pub async fn fresh_store(backend: Backend, test: &str) -> Option<Arc<dyn SagaStore>> {
    match backend {
        Backend::Sqlite => {
            let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("engine-tests");
            std::fs::create_dir_all(&dir).expect("create the test directory");
            let path = dir.join(format!("{}.db", saga_shop_tests::unique_name(test)));
            Some(Arc::new(
                SqliteStore::open(&path).await.expect("open SQLite store"),
            ))
        }
        Backend::Postgres => {
            let Ok(url) = std::env::var(POSTGRES_ENV) else {
                eprintln!(
                    "SKIPPED {test} on PostgreSQL: {POSTGRES_ENV} is not set (CI sets it; locally: export {POSTGRES_ENV}=postgres://postgres@127.0.0.1:5432/test)"
                );
                return None;
            };
            let schema = saga_shop_tests::unique_name("t");
            Some(Arc::new(
                PgStore::connect(&url, Some(&schema))
                    .await
                    .unwrap_or_else(|e| {
                        panic!("{POSTGRES_ENV} is set but PostgreSQL cannot be used: {e}")
                    }),
            ))
        }
    }
}
