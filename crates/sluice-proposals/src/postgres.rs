//! The shared store: a PostgreSQL database several gateways use as one
//! queue (`--store postgres://user:password@host:port/db`).
//!
//! **No TLS yet**: the connection is plain TCP. `sslmode=disable` (and
//! libpq's default, `prefer`, which here never upgrades) are accepted;
//! `sslmode=require` is refused at open. Use it on a trusted network or
//! through a local tunnel.
//!
//! One connection per store, opened at start (where the migrations run,
//! serialized across gateways by `pg_advisory_xact_lock`) and reopened
//! lazily: after the connection is lost, every call tries to reconnect
//! once (bounded by [`PostgresTimeouts::connect`]) and answers
//! [`StoreError::Unavailable`] while the server is down. Each write is one
//! transaction, so a proposal is either committed or the call failed.

mod migrations;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::{Client, Config, GenericClient, NoTls, Row};

use crate::model::{now_ms, Action, HistoryEntry, NewProposal, Proposal, ProposalId, Status};
use crate::row::{history_json, to_db_ms, StoredRow, COLUMNS};
use crate::store::{
    check_recorded_action, clamp_limit, decision, ProposalStore, StoreError, StoreFuture,
};
use migrations::migrate;

/// How long the PostgreSQL store waits before answering
/// [`StoreError::Unavailable`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PostgresTimeouts {
    /// To open a connection (TCP and authentication). Default 5 s.
    pub connect: Duration,
    /// For one call's statements once connected. Default 10 s.
    pub call: Duration,
}

impl Default for PostgresTimeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(5),
            call: Duration::from_secs(10),
        }
    }
}

/// Proposals in a PostgreSQL database, shared by every gateway that opens it.
pub struct PostgresStore {
    config: Config,
    /// `host:port/db`, for messages: never the URL, which holds a password.
    target: String,
    timeouts: PostgresTimeouts,
    /// The live connection; `None` after a failure, reopened by the next call.
    client: Mutex<Option<Client>>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

/// A call's statements on a connection (boxed: the connection is borrowed).
type PgCall<'c, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'c>>;

impl PostgresStore {
    /// Parses `url`, connects and applies pending migrations. Fails with
    /// [`StoreError::Invalid`] on a bad URL or `sslmode=require`, and
    /// [`StoreError::Unavailable`] when the server cannot be reached.
    pub async fn connect(url: &str, timeouts: PostgresTimeouts) -> Result<Self, StoreError> {
        let mut config: Config = url.parse().map_err(|_| {
            StoreError::Invalid(
                "--store is not a valid PostgreSQL URL \
                 (postgres://user:password@host:port/db?sslmode=disable)"
                    .into(),
            )
        })?;
        match config.get_ssl_mode() {
            SslMode::Disable | SslMode::Prefer => {}
            _ => {
                return Err(StoreError::Invalid(
                    "the PostgreSQL proposal store has no TLS support yet: \
                     use sslmode=disable on a trusted network"
                        .into(),
                ))
            }
        }
        if config.get_hosts().is_empty() {
            return Err(StoreError::Invalid("--store URL names no host".into()));
        }
        config
            .connect_timeout(timeouts.connect)
            .application_name("sluice-proposals");
        let store = Self {
            target: describe(&config),
            config,
            timeouts,
            client: Mutex::new(None),
        };
        store
            .call(|client| Box::pin(async move { migrate(client).await }))
            .await?;
        Ok(store)
    }

    /// Runs `op` on the connection, opening it first when there is none
    /// or it was closed. Any [`StoreError::Unavailable`] (or running out of
    /// time) drops the connection, so the next call starts afresh.
    async fn call<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        F: for<'c> FnOnce(&'c mut Client) -> PgCall<'c, T>,
    {
        let unavailable =
            |what: String| StoreError::Unavailable(format!("{}: {what}", self.target));
        let mut slot = tokio::time::timeout(self.timeouts.call, self.client.lock())
            .await
            .map_err(|_| unavailable("busy: no turn on the connection in time".into()))?;
        if slot.as_ref().is_none_or(Client::is_closed) {
            *slot = None;
            *slot = Some(self.open_connection().await?);
        }
        let Some(client) = slot.as_mut() else {
            return Err(unavailable("no connection".into()));
        };
        match tokio::time::timeout(self.timeouts.call, op(client)).await {
            Ok(Err(StoreError::Unavailable(why))) => {
                *slot = None;
                Err(unavailable(why))
            }
            Ok(result) => result,
            Err(_) => {
                *slot = None;
                Err(unavailable(format!(
                    "no answer within {:?}",
                    self.timeouts.call
                )))
            }
        }
    }

    async fn open_connection(&self) -> Result<Client, StoreError> {
        let connecting = self.config.connect(NoTls);
        let (client, connection) = tokio::time::timeout(self.timeouts.connect, connecting)
            .await
            .map_err(|_| {
                StoreError::Unavailable(format!(
                    "{}: no connection within {:?}",
                    self.target, self.timeouts.connect
                ))
            })?
            .map_err(|e| {
                StoreError::Unavailable(format!("{}: {}", self.target, with_causes(&e)))
            })?;
        // The connection task ends when the socket closes; the client then
        // reports `is_closed` and the next call reconnects.
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }
}

impl ProposalStore for PostgresStore {
    fn submit(&self, proposal: NewProposal) -> StoreFuture<'_, Proposal> {
        Box::pin(async move {
            proposal.check()?;
            let stored = proposal.into_proposal(ProposalId::generate()?, now_ms());
            let history = history_json(&stored.history)?;
            self.call(move |client| {
                Box::pin(async move {
                    let p = &stored;
                    let pid = p.origin.pid.map(i64::from);
                    let tx = client.transaction().await.map_err(pg_error)?;
                    tx.execute(
                        &format!(
                            "INSERT INTO sluice_proposals ({COLUMNS}) VALUES \
                             ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
                        ),
                        &[
                            &p.id.as_str(),
                            &p.status.as_str(),
                            &to_db_ms(p.created_at_ms),
                            &to_db_ms(p.updated_at_ms),
                            &p.intent_summary,
                            &p.operations,
                            &p.change_yaml,
                            &p.rule_name,
                            &p.denial,
                            &p.origin.sandbox,
                            &p.origin.binary,
                            &pid,
                            &p.base_policy_hash,
                            &history,
                        ],
                    )
                    .await
                    .map_err(pg_error)?;
                    bump_revision(&tx).await?;
                    tx.commit().await.map_err(pg_error)?;
                    Ok(stored)
                })
            })
            .await
        })
    }

    fn get<'a>(&'a self, id: &'a ProposalId) -> StoreFuture<'a, Option<Proposal>> {
        let id = id.clone();
        Box::pin(self.call(move |client| {
            Box::pin(async move {
                let row = client
                    .query_opt(
                        &format!("SELECT {COLUMNS} FROM sluice_proposals WHERE id = $1"),
                        &[&id.as_str()],
                    )
                    .await
                    .map_err(pg_error)?;
                row.map(|r| read_row(&r)?.into_proposal()).transpose()
            })
        }))
    }

    fn list(&self, status: Option<Status>, limit: usize) -> StoreFuture<'_, Vec<Proposal>> {
        let limit = i64::try_from(clamp_limit(limit)).unwrap_or(i64::MAX);
        Box::pin(self.call(move |client| {
            Box::pin(async move {
                let rows = client
                    .query(
                        &format!(
                            "SELECT {COLUMNS} FROM sluice_proposals \
                             WHERE $1::text IS NULL OR status = $1 \
                             ORDER BY created_at_ms DESC, seq DESC LIMIT $2"
                        ),
                        &[&status.map(Status::as_str), &limit],
                    )
                    .await
                    .map_err(pg_error)?;
                rows.iter().map(|r| read_row(r)?.into_proposal()).collect()
            })
        }))
    }

    fn decide<'a>(
        &'a self,
        id: &'a ProposalId,
        actor: String,
        approve: bool,
        reason: Option<String>,
    ) -> StoreFuture<'a, Proposal> {
        let id = id.clone();
        Box::pin(async move {
            let (status, action) = decision(approve);
            let entry = HistoryEntry::new(actor, action, reason)?;
            self.call(move |client| {
                Box::pin(
                    async move { transition(client, &id, Status::Pending, status, entry).await },
                )
            })
            .await
        })
    }

    fn record<'a>(
        &'a self,
        id: &'a ProposalId,
        actor: String,
        action: Action,
        reason: Option<String>,
    ) -> StoreFuture<'a, Proposal> {
        let id = id.clone();
        Box::pin(async move {
            check_recorded_action(action)?;
            let entry = HistoryEntry::new(actor, action, reason)?;
            self.call(move |client| {
                Box::pin(async move {
                    transition(client, &id, Status::Approved, Status::Approved, entry).await
                })
            })
            .await
        })
    }

    fn revision(&self) -> StoreFuture<'_, u64> {
        Box::pin(self.call(|client| {
            Box::pin(async move {
                let row = client
                    .query_one("SELECT n FROM sluice_store_revision", &[])
                    .await
                    .map_err(pg_error)?;
                let n: i64 = row.try_get(0).map_err(pg_error)?;
                Ok(u64::try_from(n).unwrap_or(0))
            })
        }))
    }
}

/// The compare-and-set behind `decide` and `record`: appends `entry` and
/// sets `to` only while the proposal is `from`. Row locks make racing
/// gateways queue here; the losers see the winner's status and get
/// [`StoreError::Conflict`].
async fn transition(
    client: &mut Client,
    id: &ProposalId,
    from: Status,
    to: Status,
    entry: HistoryEntry,
) -> Result<Proposal, StoreError> {
    let at = to_db_ms(entry.at_ms);
    let appended = history_json(std::slice::from_ref(&entry))?;
    let tx = client.transaction().await.map_err(pg_error)?;
    let row = tx
        .query_opt(
            &format!(
                "UPDATE sluice_proposals \
                 SET status = $3, updated_at_ms = greatest(updated_at_ms, $4), \
                     history = history || $5 \
                 WHERE id = $1 AND status = $2 RETURNING {COLUMNS}"
            ),
            &[&id.as_str(), &from.as_str(), &to.as_str(), &at, &appended],
        )
        .await
        .map_err(pg_error)?;
    if let Some(row) = row {
        bump_revision(&tx).await?;
        tx.commit().await.map_err(pg_error)?;
        return read_row(&row)?.into_proposal();
    }
    let current = tx
        .query_opt(
            "SELECT status FROM sluice_proposals WHERE id = $1",
            &[&id.as_str()],
        )
        .await
        .map_err(pg_error)?;
    let Some(current) = current else {
        return Err(StoreError::NotFound);
    };
    let status: String = current.try_get(0).map_err(pg_error)?;
    let status = status
        .parse()
        .map_err(|_| StoreError::Unavailable("stored proposal has an unreadable status".into()))?;
    Err(StoreError::Conflict { status })
}

async fn bump_revision(client: &impl GenericClient) -> Result<(), StoreError> {
    client
        .execute("UPDATE sluice_store_revision SET n = n + 1", &[])
        .await
        .map_err(pg_error)?;
    Ok(())
}

fn read_row(row: &Row) -> Result<StoredRow, StoreError> {
    Ok(StoredRow {
        id: row.try_get(0).map_err(pg_error)?,
        status: row.try_get(1).map_err(pg_error)?,
        created_at_ms: row.try_get(2).map_err(pg_error)?,
        updated_at_ms: row.try_get(3).map_err(pg_error)?,
        intent_summary: row.try_get(4).map_err(pg_error)?,
        operations: row.try_get(5).map_err(pg_error)?,
        change_yaml: row.try_get(6).map_err(pg_error)?,
        rule_name: row.try_get(7).map_err(pg_error)?,
        denial: row.try_get(8).map_err(pg_error)?,
        origin_sandbox: row.try_get(9).map_err(pg_error)?,
        origin_binary: row.try_get(10).map_err(pg_error)?,
        origin_pid: row.try_get(11).map_err(pg_error)?,
        base_policy_hash: row.try_get(12).map_err(pg_error)?,
        history: row.try_get(13).map_err(pg_error)?,
    })
}

/// `host:port/db` of the first host, for messages (never the password).
fn describe(config: &Config) -> String {
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(name)) => name.clone(),
        Some(Host::Unix(dir)) => dir.display().to_string(),
        None => "?".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config
        .get_dbname()
        .or(config.get_user())
        .unwrap_or("postgres");
    format!("postgres {host}:{port}/{db}")
}

fn pg_error(e: tokio_postgres::Error) -> StoreError {
    StoreError::Unavailable(with_causes(&e))
}

/// `e` and its causes, `: `-separated (tokio-postgres keeps the I/O or
/// server error as the source, not in its own message).
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}
