//! Opening a fresh store per test: a SQLite file of its own, or a PostgreSQL schema of its own
//! that is dropped again when the test is done with it (the `test` database is shared by every
//! run on the machine, so schemas left behind would pile up run after run).

use std::ops::Deref;
use std::sync::Arc;

use saga_engine::{MemoryStore, PgStore, SagaStore, SqliteStore};

#[derive(Debug, Clone, Copy)]
#[allow(dead_code)] // Each test binary compiles this module; not all use every backend.
pub enum Backend {
    /// The reference store: what the durable ones are held to, held to the same suite.
    Memory,
    Sqlite,
    Postgres,
}

pub const POSTGRES_ENV: &str = "SAGA_TEST_POSTGRES_URL";

/// A store made for one test. Derefs to the store; dropping it drops the test's PostgreSQL
/// schema, so keep it alive for as long as the engine runs on the store.
pub struct FreshStore {
    store: Arc<dyn SagaStore>,
    _schema: Option<SchemaGuard>,
}

impl Deref for FreshStore {
    type Target = Arc<dyn SagaStore>;

    fn deref(&self) -> &Self::Target {
        &self.store
    }
}

/// Drops a test's schema when the test ends, passed or failed (a panicking test unwinds through
/// it too). The drop runs on a thread of its own with its own connection, because `Drop` cannot
/// await and the test's runtime may be the one being dropped from.
struct SchemaGuard {
    url: String,
    schema: String,
}

impl Drop for SchemaGuard {
    fn drop(&mut self) {
        let url = self.url.clone();
        let schema = self.schema.clone();
        let dropped = std::thread::spawn(move || -> Result<(), String> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async {
                use sqlx::Connection;
                let mut conn = sqlx::PgConnection::connect(&url)
                    .await
                    .map_err(|e| e.to_string())?;
                // A pool connection of the test's store that is still inside a transaction
                // would hold the drop forever; give up on the schema rather than hang the test.
                sqlx::query("SET lock_timeout = '10s'")
                    .execute(&mut conn)
                    .await
                    .map_err(|e| e.to_string())?;
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP SCHEMA IF EXISTS {schema} CASCADE"
                )))
                .execute(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
                Ok(())
            })
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("could not drop the test schema {}: {e}", self.schema),
            Err(_) => eprintln!("dropping the test schema {} panicked", self.schema),
        }
    }
}

/// A fresh, empty store that several engines share as several nodes share a database: on
/// PostgreSQL as [`fresh_store`], in memory one that says it is shared. (SQLite is one
/// process's log.)
#[allow(dead_code)] // Each test binary compiles this module; not all use every function.
pub async fn fresh_store_for_nodes(backend: Backend, test: &str) -> Option<FreshStore> {
    match backend {
        Backend::Memory => Some(FreshStore {
            store: Arc::new(MemoryStore::for_several_nodes()),
            _schema: None,
        }),
        Backend::Sqlite => panic!("SQLite is one process's saga log: {test} needs a shared store"),
        Backend::Postgres => fresh_store(backend, test).await,
    }
}

/// A fresh, empty store, or `None` (after saying so loudly) when the PostgreSQL tests have no
/// server to run against.
pub async fn fresh_store(backend: Backend, test: &str) -> Option<FreshStore> {
    match backend {
        Backend::Memory => Some(FreshStore {
            store: Arc::new(MemoryStore::new()),
            _schema: None,
        }),
        Backend::Sqlite => {
            let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("engine-tests");
            std::fs::create_dir_all(&dir).expect("create the test directory");
            let path = dir.join(format!("{}.db", saga_shop_tests::unique_name(test)));
            Some(FreshStore {
                store: Arc::new(SqliteStore::open(&path).await.expect("open SQLite store")),
                _schema: None,
            })
        }
        Backend::Postgres => {
            let Ok(url) = std::env::var(POSTGRES_ENV) else {
                eprintln!(
                    "SKIPPED {test} on PostgreSQL: {POSTGRES_ENV} is not set (CI sets it; locally: export {POSTGRES_ENV}=postgres://postgres@127.0.0.1:5432/test)"
                );
                return None;
            };
            let schema = saga_shop_tests::unique_name("t");
            // Guard first: if connecting half-creates the schema and fails, it still goes.
            let guard = SchemaGuard {
                url: url.clone(),
                schema: schema.clone(),
            };
            let store = PgStore::connect(&url, Some(&schema))
                .await
                .unwrap_or_else(|e| {
                    panic!("{POSTGRES_ENV} is set but PostgreSQL cannot be used: {e}")
                });
            Some(FreshStore {
                store: Arc::new(store),
                _schema: Some(guard),
            })
        }
    }
}
