//! What a proposal is: who proposed it, the denial it came from, the exact
//! policy change, and its decision history. Both stores keep these values
//! as they are; the console and `policy.local` return them as JSON.

use std::fmt;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::store::StoreError;

/// Longest `intent_summary`, in bytes.
pub const MAX_INTENT_SUMMARY: usize = 4 * 1024;
/// Longest `change_yaml`, in bytes.
pub const MAX_CHANGE_YAML: usize = 64 * 1024;
/// Longest `operations`, in bytes of compact JSON.
pub const MAX_OPERATIONS_JSON: usize = 64 * 1024;
/// Longest decision or apply `reason`, in bytes.
pub const MAX_REASON: usize = 4 * 1024;
/// Longest `denial` line, in bytes (`policy.local` caps denial lines at 4 KiB).
pub const MAX_DENIAL: usize = 4 * 1024;
/// Longest actor name (operator or sandbox), in bytes.
pub const MAX_ACTOR: usize = 256;
/// Longest short label: rule name, sandbox name, policy hash.
pub const MAX_LABEL: usize = 256;
/// Longest binary path, in bytes.
pub const MAX_BINARY: usize = 4 * 1024;
/// Longest proposal id accepted from outside, in bytes.
pub const MAX_ID: usize = 64;

/// A proposal's identity: `p-` and 16 random hex digits when generated;
/// otherwise opaque (ASCII letters, digits, `-` and `_`, at most
/// [`MAX_ID`] bytes).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ProposalId(String);

impl ProposalId {
    /// A fresh random id (`p-` + 16 hex digits, 64 bits from the OS).
    pub fn generate() -> Result<Self, StoreError> {
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes)
            .map_err(|e| StoreError::Unavailable(format!("no randomness for an id: {e}")))?;
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        Ok(Self(format!("p-{hex}")))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ProposalId {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let valid = !s.is_empty()
            && s.len() <= MAX_ID
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if valid {
            Ok(Self(s.to_owned()))
        } else {
            Err(StoreError::Invalid(
                "a proposal id is 1 to 64 ASCII letters, digits, '-' or '_'".into(),
            ))
        }
    }
}

impl TryFrom<String> for ProposalId {
    type Error = StoreError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<ProposalId> for String {
    fn from(id: ProposalId) -> Self {
        id.0
    }
}

impl fmt::Display for ProposalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a proposal stands. Only `Pending` can change, once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Waiting for an operator.
    Pending,
    /// An operator approved it (the policy change may or may not be applied
    /// yet: see the history's `applied` / `apply_failed` entries).
    Approved,
    /// An operator rejected it.
    Rejected,
}

impl Status {
    /// The wire and database spelling: `pending`, `approved`, `rejected`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Rejected => "rejected",
        }
    }
}

impl FromStr for Status {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pending" => Ok(Self::Pending),
            "approved" => Ok(Self::Approved),
            "rejected" => Ok(Self::Rejected),
            _ => Err(StoreError::Invalid(
                "status is pending, approved or rejected".into(),
            )),
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who proposed: the sandbox and, when known, the process inside it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// The sandbox's name.
    pub sandbox: String,
    /// The binary that sent the proposal, when identified.
    pub binary: Option<String>,
    /// Its process id, when identified.
    pub pid: Option<u32>,
}

/// A proposal as submitted, before the store gives it an id and a status.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewProposal {
    /// The agent's own words on why it needs the change.
    pub intent_summary: Option<String>,
    /// The OpenShell `addRule` operations exactly as submitted.
    pub operations: serde_json::Value,
    /// The exact policy change, as a YAML block a person reads.
    pub change_yaml: String,
    /// The name of the rule the change adds, when it has one.
    pub rule_name: Option<String>,
    /// The denial line the proposal came from, when it came from one.
    pub denial: Option<String>,
    /// Who proposed it.
    pub origin: Origin,
    /// The hash of the policy the change was written against.
    pub base_policy_hash: String,
}

/// A stored proposal and everything that happened to it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Proposal {
    /// Its identity.
    pub id: ProposalId,
    /// Where it stands.
    pub status: Status,
    /// The agent's own words on why it needs the change.
    pub intent_summary: Option<String>,
    /// The OpenShell `addRule` operations exactly as submitted.
    pub operations: serde_json::Value,
    /// The exact policy change, as a YAML block a person reads.
    pub change_yaml: String,
    /// The name of the rule the change adds, when it has one.
    pub rule_name: Option<String>,
    /// The denial line the proposal came from, when it came from one.
    pub denial: Option<String>,
    /// Who proposed it.
    pub origin: Origin,
    /// The hash of the policy the change was written against.
    pub base_policy_hash: String,
    /// When it was submitted (milliseconds since the Unix epoch).
    pub created_at_ms: u64,
    /// When it last changed (milliseconds since the Unix epoch).
    pub updated_at_ms: u64,
    /// What happened to it, oldest first; the first entry is `proposed`.
    pub history: Vec<HistoryEntry>,
}

/// One step in a proposal's life.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// When (milliseconds since the Unix epoch).
    pub at_ms: u64,
    /// Who: the sandbox for `proposed`, the operator or gateway otherwise.
    pub actor: String,
    /// What.
    pub action: Action,
    /// Why, when given (a rejection's reason, an apply failure's error).
    pub reason: Option<String>,
}

/// What happened in a [`HistoryEntry`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// The agent submitted it.
    Proposed,
    /// An operator approved it.
    Approved,
    /// An operator rejected it.
    Rejected,
    /// A gateway wrote the change into the policy and reloaded it.
    Applied,
    /// A gateway could not apply the approved change.
    ApplyFailed,
}

// === impl NewProposal ===

impl NewProposal {
    /// Refuses oversized fields and text PostgreSQL cannot store (NUL).
    pub fn check(&self) -> Result<(), StoreError> {
        check_text(
            "intent_summary",
            self.intent_summary.as_deref(),
            MAX_INTENT_SUMMARY,
        )?;
        check_text("change_yaml", Some(&self.change_yaml), MAX_CHANGE_YAML)?;
        check_text("rule_name", self.rule_name.as_deref(), MAX_LABEL)?;
        check_text("denial", self.denial.as_deref(), MAX_DENIAL)?;
        check_text("origin.sandbox", Some(&self.origin.sandbox), MAX_LABEL)?;
        check_text("origin.binary", self.origin.binary.as_deref(), MAX_BINARY)?;
        check_text("base_policy_hash", Some(&self.base_policy_hash), MAX_LABEL)?;
        if self.origin.sandbox.is_empty() {
            return Err(StoreError::Invalid("origin.sandbox is empty".into()));
        }
        let size = serde_json::to_vec(&self.operations)
            .map_err(|e| StoreError::Invalid(format!("operations are not JSON: {e}")))?
            .len();
        if size > MAX_OPERATIONS_JSON {
            return Err(StoreError::Invalid(format!(
                "operations exceed {MAX_OPERATIONS_JSON} bytes of JSON"
            )));
        }
        if json_has_nul(&self.operations) {
            return Err(StoreError::Invalid(
                "operations contain a NUL character".into(),
            ));
        }
        Ok(())
    }

    /// The stored form: pending, with one `proposed` entry by the sandbox.
    pub(crate) fn into_proposal(self, id: ProposalId, now_ms: u64) -> Proposal {
        let proposed = HistoryEntry {
            at_ms: now_ms,
            actor: self.origin.sandbox.clone(),
            action: Action::Proposed,
            reason: None,
        };
        Proposal {
            id,
            status: Status::Pending,
            intent_summary: self.intent_summary,
            operations: self.operations,
            change_yaml: self.change_yaml,
            rule_name: self.rule_name,
            denial: self.denial,
            origin: self.origin,
            base_policy_hash: self.base_policy_hash,
            created_at_ms: now_ms,
            updated_at_ms: now_ms,
            history: vec![proposed],
        }
    }
}

// === impl HistoryEntry ===

impl HistoryEntry {
    /// A checked entry stamped now: `actor` non-empty and ≤ [`MAX_ACTOR`],
    /// `reason` ≤ [`MAX_REASON`].
    pub(crate) fn new(
        actor: String,
        action: Action,
        reason: Option<String>,
    ) -> Result<Self, StoreError> {
        check_text("actor", Some(&actor), MAX_ACTOR)?;
        check_text("reason", reason.as_deref(), MAX_REASON)?;
        if actor.is_empty() {
            return Err(StoreError::Invalid("actor is empty".into()));
        }
        Ok(Self {
            at_ms: now_ms(),
            actor,
            action,
            reason,
        })
    }
}

/// Milliseconds since the Unix epoch on this gateway's clock.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn check_text(field: &str, value: Option<&str>, max: usize) -> Result<(), StoreError> {
    let Some(value) = value else { return Ok(()) };
    if value.len() > max {
        return Err(StoreError::Invalid(format!("{field} exceeds {max} bytes")));
    }
    if value.contains('\0') {
        return Err(StoreError::Invalid(format!(
            "{field} contains a NUL character"
        )));
    }
    Ok(())
}

fn json_has_nul(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::String(s) => s.contains('\0'),
        serde_json::Value::Array(items) => items.iter().any(json_has_nul),
        serde_json::Value::Object(map) => {
            map.iter().any(|(k, v)| k.contains('\0') || json_has_nul(v))
        }
        _ => false,
    }
}
