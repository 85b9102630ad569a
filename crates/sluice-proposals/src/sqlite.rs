//! The embedded store: one SQLite file (`proposals.sqlite3` in the state
//! directory, mode 0600, WAL journal), for a gateway that keeps its queue
//! to itself. Calls run on tokio's blocking pool over one connection.
//! Writes take SQLite's write lock up front (`BEGIN IMMEDIATE`), so the
//! compare-and-set in `decide` also holds against a second process on the
//! same file.

use std::fs::{DirBuilder, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, Row, Transaction, TransactionBehavior};

use crate::model::{now_ms, Action, HistoryEntry, NewProposal, Proposal, ProposalId, Status};
use crate::row::{history_json, to_db_ms, StoredRow, COLUMNS};
use crate::store::{
    check_recorded_action, clamp_limit, decision, ProposalStore, StoreError, StoreFuture,
};

#[cfg(test)]
mod tests;

/// The store's file name inside the state directory.
pub const SQLITE_FILE_NAME: &str = "proposals.sqlite3";

/// How long a call waits for another process's write lock on the file.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Versioned schema changes, applied in order at open; never edit one
/// that has shipped, add the next.
const MIGRATIONS: &[(i64, &str)] = &[(
    1,
    "CREATE TABLE sluice_proposals (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        status TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'rejected')),
        created_at_ms INTEGER NOT NULL,
        updated_at_ms INTEGER NOT NULL,
        intent_summary TEXT,
        operations TEXT NOT NULL,
        change_yaml TEXT NOT NULL,
        rule_name TEXT,
        denial TEXT,
        origin_sandbox TEXT NOT NULL,
        origin_binary TEXT,
        origin_pid INTEGER,
        base_policy_hash TEXT NOT NULL,
        history TEXT NOT NULL
     );
     CREATE INDEX sluice_proposals_by_status ON sluice_proposals (status, created_at_ms);
     CREATE TABLE sluice_store_revision (
        singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
        n INTEGER NOT NULL
     );
     INSERT INTO sluice_store_revision (singleton, n) VALUES (1, 0);",
)];

/// Proposals in a SQLite file.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
}

impl SqliteStore {
    /// Opens (creating it, mode 0600, and its directory, mode 0700, when
    /// missing) the database at `path` and applies pending migrations.
    /// Blocking: call it before serving or on the blocking pool.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        create_private_file(path)?;
        let mut conn = Connection::open(path).map_err(sql_error)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(sql_error)?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(sql_error)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Unavailable(format!(
                "sqlite refused WAL mode (journal_mode={mode})"
            )));
        }
        migrate(&mut conn)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            path: path.to_owned(),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on the connection on the blocking pool.
    fn run<T, F>(&self, f: F) -> StoreFuture<'_, T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                // A panic mid-call rolled its transaction back on unwind:
                // the connection is still consistent.
                let mut conn = conn.lock().unwrap_or_else(PoisonError::into_inner);
                f(&mut conn)
            })
            .await
            .map_err(|e| StoreError::Unavailable(format!("sqlite task failed: {e}")))?
        })
    }
}

impl ProposalStore for SqliteStore {
    fn submit(&self, proposal: NewProposal) -> StoreFuture<'_, Proposal> {
        self.run(move |conn| {
            proposal.check()?;
            let stored = proposal.into_proposal(ProposalId::generate()?, now_ms());
            let tx = write_tx(conn)?;
            insert(&tx, &stored)?;
            bump_revision(&tx)?;
            tx.commit().map_err(sql_error)?;
            Ok(stored)
        })
    }

    fn get<'a>(&'a self, id: &'a ProposalId) -> StoreFuture<'a, Option<Proposal>> {
        let id = id.clone();
        self.run(move |conn| {
            let tx = conn.transaction().map_err(sql_error)?;
            select(&tx, &id)
        })
    }

    fn list(&self, status: Option<Status>, limit: usize) -> StoreFuture<'_, Vec<Proposal>> {
        self.run(move |conn| {
            let limit = i64::try_from(clamp_limit(limit)).unwrap_or(i64::MAX);
            let sql = format!(
                "SELECT {COLUMNS} FROM sluice_proposals WHERE ?1 IS NULL OR status = ?1 \
                 ORDER BY created_at_ms DESC, seq DESC LIMIT ?2"
            );
            let mut stmt = conn.prepare_cached(&sql).map_err(sql_error)?;
            let rows = stmt
                .query_map(params![status.map(Status::as_str), limit], read_row)
                .map_err(sql_error)?;
            rows.map(|row| row.map_err(sql_error)?.into_proposal())
                .collect()
        })
    }

    fn decide<'a>(
        &'a self,
        id: &'a ProposalId,
        actor: String,
        approve: bool,
        reason: Option<String>,
    ) -> StoreFuture<'a, Proposal> {
        let id = id.clone();
        self.run(move |conn| {
            let (status, action) = decision(approve);
            let entry = HistoryEntry::new(actor, action, reason)?;
            let tx = write_tx(conn)?;
            let mut proposal = select(&tx, &id)?.ok_or(StoreError::NotFound)?;
            if proposal.status != Status::Pending {
                return Err(StoreError::Conflict {
                    status: proposal.status,
                });
            }
            proposal.status = status;
            append(&tx, &mut proposal, entry)?;
            tx.commit().map_err(sql_error)?;
            Ok(proposal)
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
        self.run(move |conn| {
            check_recorded_action(action)?;
            let entry = HistoryEntry::new(actor, action, reason)?;
            let tx = write_tx(conn)?;
            let mut proposal = select(&tx, &id)?.ok_or(StoreError::NotFound)?;
            if proposal.status != Status::Approved {
                return Err(StoreError::Conflict {
                    status: proposal.status,
                });
            }
            append(&tx, &mut proposal, entry)?;
            tx.commit().map_err(sql_error)?;
            Ok(proposal)
        })
    }

    fn revision(&self) -> StoreFuture<'_, u64> {
        self.run(|conn| {
            let n: i64 = conn
                .query_row("SELECT n FROM sluice_store_revision", [], |row| row.get(0))
                .map_err(sql_error)?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
    }
}

/// Creates `path` (mode 0600) and its directory (0700) when missing, and
/// takes group and other access away from an existing file.
fn create_private_file(path: &Path) -> Result<(), StoreError> {
    let io = |what: &str, e: std::io::Error| {
        StoreError::Unavailable(format!("{what} {}: {e}", path.display()))
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| io("cannot create the directory of", e))?;
    }
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| io("cannot open", e))?;
    let meta = file.metadata().map_err(|e| io("cannot stat", e))?;
    if meta.permissions().mode() & 0o077 != 0 {
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(|e| io("cannot make private", e))?;
    }
    Ok(())
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = write_tx(conn)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS sluice_schema_migrations (
            version INTEGER PRIMARY KEY,
            applied_at_ms INTEGER NOT NULL
         )",
    )
    .map_err(sql_error)?;
    let current: i64 = tx
        .query_row(
            "SELECT coalesce(max(version), 0) FROM sluice_schema_migrations",
            [],
            |row| row.get(0),
        )
        .map_err(sql_error)?;
    let latest = MIGRATIONS.last().map_or(0, |(v, _)| *v);
    if current > latest {
        return Err(StoreError::Unavailable(format!(
            "the proposal database has schema version {current}, newer than this sluice's {latest}"
        )));
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
        tx.execute_batch(sql).map_err(sql_error)?;
        tx.execute(
            "INSERT INTO sluice_schema_migrations (version, applied_at_ms) VALUES (?1, ?2)",
            params![version, to_db_ms(now_ms())],
        )
        .map_err(sql_error)?;
    }
    tx.commit().map_err(sql_error)
}

/// A transaction holding the file's write lock from its start.
fn write_tx(conn: &mut Connection) -> Result<Transaction<'_>, StoreError> {
    conn.transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql_error)
}

fn insert(tx: &Transaction<'_>, p: &Proposal) -> Result<(), StoreError> {
    let operations = p.operations.to_string();
    let history = history_json(&p.history)?.to_string();
    tx.execute(
        &format!(
            "INSERT INTO sluice_proposals ({COLUMNS}) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
        ),
        params![
            p.id.as_str(),
            p.status.as_str(),
            to_db_ms(p.created_at_ms),
            to_db_ms(p.updated_at_ms),
            p.intent_summary,
            operations,
            p.change_yaml,
            p.rule_name,
            p.denial,
            p.origin.sandbox,
            p.origin.binary,
            p.origin.pid,
            p.base_policy_hash,
            history,
        ],
    )
    .map_err(sql_error)?;
    Ok(())
}

fn select(tx: &Transaction<'_>, id: &ProposalId) -> Result<Option<Proposal>, StoreError> {
    tx.query_row(
        &format!("SELECT {COLUMNS} FROM sluice_proposals WHERE id = ?1"),
        [id.as_str()],
        read_row,
    )
    .optional()
    .map_err(sql_error)?
    .map(StoredRow::into_proposal)
    .transpose()
}

/// Appends `entry` to `proposal` and writes its status and history back.
fn append(
    tx: &Transaction<'_>,
    proposal: &mut Proposal,
    entry: HistoryEntry,
) -> Result<(), StoreError> {
    proposal.updated_at_ms = entry.at_ms.max(proposal.updated_at_ms);
    proposal.history.push(entry);
    let history = history_json(&proposal.history)?.to_string();
    tx.execute(
        "UPDATE sluice_proposals SET status = ?2, updated_at_ms = ?3, history = ?4 WHERE id = ?1",
        params![
            proposal.id.as_str(),
            proposal.status.as_str(),
            to_db_ms(proposal.updated_at_ms),
            history,
        ],
    )
    .map_err(sql_error)?;
    bump_revision(tx)
}

fn bump_revision(tx: &Transaction<'_>) -> Result<(), StoreError> {
    tx.execute("UPDATE sluice_store_revision SET n = n + 1", [])
        .map_err(sql_error)?;
    Ok(())
}

fn read_row(row: &Row<'_>) -> rusqlite::Result<StoredRow> {
    let json = |i: usize| -> rusqlite::Result<serde_json::Value> {
        let text: String = row.get(i)?;
        serde_json::from_str(&text).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
        })
    };
    Ok(StoredRow {
        id: row.get(0)?,
        status: row.get(1)?,
        created_at_ms: row.get(2)?,
        updated_at_ms: row.get(3)?,
        intent_summary: row.get(4)?,
        operations: json(5)?,
        change_yaml: row.get(6)?,
        rule_name: row.get(7)?,
        denial: row.get(8)?,
        origin_sandbox: row.get(9)?,
        origin_binary: row.get(10)?,
        origin_pid: row.get(11)?,
        base_policy_hash: row.get(12)?,
        history: json(13)?,
    })
}

fn sql_error(e: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(format!("sqlite: {e}"))
}
