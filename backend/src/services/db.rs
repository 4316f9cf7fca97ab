//! Each service's own database: a SQLite file of its own beside the saga log
//! (`saga-shop.orders.db`, …), or a schema of its own under PostgreSQL. One code path for both
//! through sqlx's `Any` driver; queries use `$1, $2, …` in order, which both engines accept.
//!
//! Also the idempotency every service endpoint relies on: a request's `Idempotency-Key` is
//! claimed in the same transaction as its effect, so a repeated key returns the first result
//! and changes nothing, even when both copies arrive at once.

use std::str::FromStr;

use serde_json::Value;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyConnection, AnyPool, Connection, Executor, Row};

use saga_engine::BoxFuture;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("migrating the {service} database: {source}")]
    Migrate {
        service: &'static str,
        source: sqlx::migrate::MigrateError,
    },
    #[error("unsupported database URL {0:?}: use sqlite://PATH or postgres://…")]
    Url(String),
}

/// A service's connection pool.
#[derive(Debug, Clone)]
pub struct ServiceDb {
    pub pool: AnyPool,
}

/// The database of `service`, derived from the server's `--database` URL.
pub fn service_url(database: &str, service: &str) -> Result<String, DbError> {
    if let Some(path) = database.strip_prefix("sqlite://") {
        let path = path.split('?').next().unwrap_or(path);
        let stem = path.strip_suffix(".db").unwrap_or(path);
        Ok(format!("sqlite://{stem}.{service}.db?mode=rwc"))
    } else if database.starts_with("postgres://") || database.starts_with("postgresql://") {
        Ok(database.to_string())
    } else {
        Err(DbError::Url(database.to_string()))
    }
}

impl ServiceDb {
    pub async fn open(
        database: &str,
        service: &'static str,
        migrator: &'static sqlx::migrate::Migrator,
    ) -> Result<Self, DbError> {
        sqlx::any::install_default_drivers();
        let url = service_url(database, service)?;
        let options = AnyConnectOptions::from_str(&url)?;
        let sqlite = url.starts_with("sqlite:");
        if !sqlite {
            let mut conn = AnyConnection::connect(&url).await?;
            // `service` is one of four fixed names, never user input.
            conn.execute(sqlx::AssertSqlSafe(format!(
                "CREATE SCHEMA IF NOT EXISTS {service}"
            )))
            .await?;
            conn.close().await?;
        }
        let pool = AnyPoolOptions::new()
            // SQLite has one writer anyway; a single connection also serialises each service's
            // transactions, which is what keeps stock from being oversold.
            .max_connections(if sqlite { 1 } else { 8 })
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if sqlite {
                        conn.execute("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 10000")
                            .await?;
                    } else {
                        conn.execute(sqlx::AssertSqlSafe(format!("SET search_path TO {service}")))
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        migrator
            .run(&pool)
            .await
            .map_err(|source| DbError::Migrate { service, source })?;
        Ok(ServiceDb { pool })
    }

    /// Run `effect` once per `key`. The first call's `(status, body)` is stored with its effect
    /// in one transaction; later calls with the key get it back without running `effect`.
    /// Server errors (5xx) are not stored, and their transaction is rolled back, so a retry
    /// can still succeed.
    pub async fn idempotent<F>(&self, key: &str, effect: F) -> Result<(u16, Value), DbError>
    where
        F: for<'c> FnOnce(
            &'c mut AnyConnection,
        ) -> BoxFuture<'c, Result<(u16, Value), sqlx::Error>>,
    {
        let mut tx = self.pool.begin().await?;
        // Claim the key first: a concurrent request with the same key blocks here (PostgreSQL)
        // or is serialised (SQLite), then finds it taken.
        let claimed = sqlx::query(
            "INSERT INTO idempotency (key, status, body) VALUES ($1, 0, '') ON CONFLICT DO NOTHING",
        )
        .bind(key)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if claimed == 0 {
            let row = sqlx::query("SELECT status, body FROM idempotency WHERE key = $1")
                .bind(key)
                .fetch_one(&mut *tx)
                .await?;
            let status: i64 = row.try_get("status")?;
            let body: String = row.try_get("body")?;
            return Ok((
                status as u16,
                serde_json::from_str(&body).unwrap_or(Value::Null),
            ));
        }
        let (status, body) = effect(&mut tx).await?;
        if status >= 500 {
            tx.rollback().await?;
            return Ok((status, body));
        }
        sqlx::query("UPDATE idempotency SET status = $1, body = $2 WHERE key = $3")
            .bind(i64::from(status))
            .bind(body.to_string())
            .bind(key)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok((status, body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_service_gets_its_own_sqlite_file() {
        assert_eq!(
            service_url("sqlite://data/saga-shop.db", "orders").unwrap(),
            "sqlite://data/saga-shop.orders.db?mode=rwc"
        );
        assert_eq!(
            service_url("postgres://u@h/db", "orders").unwrap(),
            "postgres://u@h/db"
        );
        assert!(service_url("mysql://x", "orders").is_err());
    }
}
