//! The column layout both backends share, and its conversion to and from
//! [`Proposal`]. Reading never trusts the database: an unreadable row is
//! [`StoreError::Unavailable`], never a panic.

use crate::model::{HistoryEntry, Origin, Proposal, ProposalId, Status};
use crate::store::StoreError;

/// The columns of `sluice_proposals` in the order [`StoredRow`] reads them.
pub(crate) const COLUMNS: &str = "id, status, created_at_ms, updated_at_ms, intent_summary, \
     operations, change_yaml, rule_name, denial, origin_sandbox, origin_binary, origin_pid, \
     base_policy_hash, history";

/// One row as the database holds it.
pub(crate) struct StoredRow {
    pub(crate) id: String,
    pub(crate) status: String,
    pub(crate) created_at_ms: i64,
    pub(crate) updated_at_ms: i64,
    pub(crate) intent_summary: Option<String>,
    pub(crate) operations: serde_json::Value,
    pub(crate) change_yaml: String,
    pub(crate) rule_name: Option<String>,
    pub(crate) denial: Option<String>,
    pub(crate) origin_sandbox: String,
    pub(crate) origin_binary: Option<String>,
    pub(crate) origin_pid: Option<i64>,
    pub(crate) base_policy_hash: String,
    pub(crate) history: serde_json::Value,
}

impl StoredRow {
    /// The proposal this row holds.
    pub(crate) fn into_proposal(self) -> Result<Proposal, StoreError> {
        let unreadable = |what: &str| {
            StoreError::Unavailable(format!("stored proposal has an unreadable {what}"))
        };
        let id: ProposalId = self.id.parse().map_err(|_| unreadable("id"))?;
        let status: Status = self.status.parse().map_err(|_| unreadable("status"))?;
        let pid = self
            .origin_pid
            .map(u32::try_from)
            .transpose()
            .map_err(|_| unreadable("pid"))?;
        let history: Vec<HistoryEntry> =
            serde_json::from_value(self.history).map_err(|_| unreadable("history"))?;
        Ok(Proposal {
            id,
            status,
            intent_summary: self.intent_summary,
            operations: self.operations,
            change_yaml: self.change_yaml,
            rule_name: self.rule_name,
            denial: self.denial,
            origin: Origin {
                sandbox: self.origin_sandbox,
                binary: self.origin_binary,
                pid,
            },
            base_policy_hash: self.base_policy_hash,
            created_at_ms: from_db_ms(self.created_at_ms),
            updated_at_ms: from_db_ms(self.updated_at_ms),
            history,
        })
    }
}

/// Milliseconds as a database integer (saturating; the clock is far from it).
pub(crate) fn to_db_ms(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

/// A database integer as milliseconds (a negative value reads as 0).
pub(crate) fn from_db_ms(ms: i64) -> u64 {
    u64::try_from(ms).unwrap_or(0)
}

/// A history as the JSON the database holds.
pub(crate) fn history_json(history: &[HistoryEntry]) -> Result<serde_json::Value, StoreError> {
    serde_json::to_value(history)
        .map_err(|e| StoreError::Invalid(format!("history is not serializable: {e}")))
}
