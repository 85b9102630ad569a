//! The policy-proposal store: sandboxed agents propose policy changes
//! (`POST http://policy.local/v1/proposals`), operators approve or reject
//! them in the console, and every proposal keeps who proposed it, the
//! denial it came from, the exact change and its decision history.
//!
//! Two backends behind one object-safe trait, [`ProposalStore`]: an
//! embedded SQLite file in `--state-dir` ([`SqliteStore`]) and PostgreSQL
//! ([`PostgresStore`], `--store postgres://...`) so several gateways share
//! one queue. Pick one with [`StoreSpec::parse`] and [`open`].

#![forbid(unsafe_code)]

mod model;
mod postgres;
mod row;
mod spec;
mod sqlite;
mod store;

use std::sync::Arc;

pub use model::{
    Action, HistoryEntry, NewProposal, Origin, Proposal, ProposalId, Status, MAX_ACTOR, MAX_BINARY,
    MAX_CHANGE_YAML, MAX_DENIAL, MAX_ID, MAX_INTENT_SUMMARY, MAX_LABEL, MAX_OPERATIONS_JSON,
    MAX_REASON,
};
pub use postgres::{PostgresStore, PostgresTimeouts};
pub use spec::StoreSpec;
pub use sqlite::{SqliteStore, SQLITE_FILE_NAME};
pub use store::{ProposalStore, StoreError, StoreFuture, MAX_LIST};

/// Opens the store `spec` names and applies its migrations: SQLite on
/// tokio's blocking pool; PostgreSQL by connecting now (so a gateway that
/// cannot reach its database fails at start, not at the first proposal).
pub async fn open(spec: &StoreSpec) -> Result<Arc<dyn ProposalStore>, StoreError> {
    match spec {
        StoreSpec::Sqlite { path } => {
            let path = path.clone();
            let store = tokio::task::spawn_blocking(move || SqliteStore::open(&path))
                .await
                .map_err(|e| StoreError::Unavailable(format!("sqlite open task failed: {e}")))??;
            Ok(Arc::new(store))
        }
        StoreSpec::Postgres { url } => Ok(Arc::new(
            PostgresStore::connect(url, PostgresTimeouts::default()).await?,
        )),
    }
}
