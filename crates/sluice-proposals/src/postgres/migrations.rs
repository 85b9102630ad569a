//! The PostgreSQL schema, versioned, applied at open under an advisory
//! lock so that gateways starting together migrate one after the other.

use tokio_postgres::Client;

use super::pg_error;
use crate::model::now_ms;
use crate::row::to_db_ms;
use crate::store::StoreError;

/// The advisory lock key migrations hold ("sluicePR" in ASCII), so that
/// gateways starting together migrate one after the other.
const MIGRATION_LOCK: i64 = 0x736c_7569_6365_5052;

/// Versioned schema changes, applied in order at open; never edit one
/// that has shipped, add the next.
const MIGRATIONS: &[(i32, &str)] = &[(
    1,
    "CREATE TABLE sluice_proposals (
        seq bigserial PRIMARY KEY,
        id text NOT NULL UNIQUE,
        status text NOT NULL CHECK (status IN ('pending', 'approved', 'rejected')),
        created_at_ms bigint NOT NULL,
        updated_at_ms bigint NOT NULL,
        intent_summary text,
        operations jsonb NOT NULL,
        change_yaml text NOT NULL,
        rule_name text,
        denial text,
        origin_sandbox text NOT NULL,
        origin_binary text,
        origin_pid bigint,
        base_policy_hash text NOT NULL,
        history jsonb NOT NULL
     );
     CREATE INDEX sluice_proposals_by_created ON sluice_proposals (created_at_ms DESC, seq DESC);
     CREATE INDEX sluice_proposals_by_status ON sluice_proposals (status, created_at_ms DESC);
     CREATE TABLE sluice_store_revision (
        singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
        n bigint NOT NULL
     );
     INSERT INTO sluice_store_revision (singleton, n) VALUES (true, 0);",
)];

pub(super) async fn migrate(client: &mut Client) -> Result<(), StoreError> {
    let tx = client.transaction().await.map_err(pg_error)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(pg_error)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS sluice_schema_migrations (
            version integer PRIMARY KEY,
            applied_at_ms bigint NOT NULL
         )",
    )
    .await
    .map_err(pg_error)?;
    let current: i32 = tx
        .query_one(
            "SELECT coalesce(max(version), 0) FROM sluice_schema_migrations",
            &[],
        )
        .await
        .map_err(pg_error)?
        .try_get(0)
        .map_err(pg_error)?;
    let latest = MIGRATIONS.last().map_or(0, |(v, _)| *v);
    if current > latest {
        return Err(StoreError::Unavailable(format!(
            "the proposal database has schema version {current}, newer than this sluice's {latest}"
        )));
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
        tx.batch_execute(sql).await.map_err(pg_error)?;
        tx.execute(
            "INSERT INTO sluice_schema_migrations (version, applied_at_ms) VALUES ($1, $2)",
            &[version, &to_db_ms(now_ms())],
        )
        .await
        .map_err(pg_error)?;
    }
    tx.commit().await.map_err(pg_error)
}
