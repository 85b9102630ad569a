//! The proposal loop of one gateway: validate and queue what an agent
//! proposes, decide (an operator's approval or rejection), apply an
//! approved proposal to this gateway's policy file, and wait for a
//! decision. `policy.local` and the operator console both go through here,
//! so a proposal is checked the same way whoever made it.

use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use sluice_proposals::{
    Action, NewProposal, Origin, Proposal, ProposalId, ProposalStore, Status, StoreError,
};
use tokio::time::Instant;

use super::ops::{change_yaml, AddRule, ProposalBody};
use crate::audit::Audit;
use crate::denials::DenialLog;
use crate::policy_store::{PolicyStore, ReloadError};

/// How often a waiting agent or the fleet sync looks at the store.
const POLL: Duration = Duration::from_millis(250);

/// Why a proposal was not queued.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The proposed rules do not load as a policy (located errors), or do
    /// not fit the policy in force.
    #[error("{summary}")]
    Invalid {
        summary: String,
        /// `ORIGIN:LINE:COL: message` lines.
        errors: Vec<String>,
        /// The text the locations refer to.
        located_in: Option<String>,
    },
    /// The store could not take it (try again later).
    #[error("proposal store unavailable: {0}")]
    Store(StoreError),
}

/// Why a decision failed.
#[derive(Debug, thiserror::Error)]
pub enum DecideError {
    #[error("no such proposal")]
    NotFound,
    #[error("the proposal is already {0}")]
    Conflict(&'static str),
    #[error("proposal store unavailable: {0}")]
    Store(StoreError),
    #[error("invalid decision: {0}")]
    Invalid(String),
}

impl From<StoreError> for DecideError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => Self::NotFound,
            StoreError::Conflict { status } => Self::Conflict(status.as_str()),
            StoreError::Invalid(m) => Self::Invalid(m),
            other => Self::Store(other),
        }
    }
}

/// What a wait ended with.
#[derive(Debug)]
pub struct Waited {
    pub proposal: Proposal,
    pub timed_out: bool,
    /// Approved and the policy in force has the proposed rules.
    pub policy_reloaded: bool,
}

/// One gateway's proposal loop.
pub struct ProposalService {
    store: Arc<dyn ProposalStore>,
    policy: Arc<PolicyStore>,
    audit: Audit,
    denials: DenialLog,
    /// This gateway's name: the actor of its `applied` history entries.
    gateway: String,
    /// When this gateway started (unix ms): approvals made before are not
    /// applied by the fleet sync (a gateway started later has its policy
    /// file from wherever it came from).
    started_ms: u64,
}

impl std::fmt::Debug for ProposalService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProposalService")
            .field("gateway", &self.gateway)
            .finish_non_exhaustive()
    }
}

/// SHA-256 of a policy text, hex (the "effective policy hash").
#[must_use]
pub fn policy_hash(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

impl ProposalService {
    #[must_use]
    pub fn new(
        store: Arc<dyn ProposalStore>,
        policy: Arc<PolicyStore>,
        audit: Audit,
        denials: DenialLog,
        gateway: String,
    ) -> Arc<Self> {
        let started_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Arc::new(Self {
            store,
            policy,
            audit,
            denials,
            gateway,
            started_ms,
        })
    }

    /// The store (read access for the console).
    #[must_use]
    pub fn store(&self) -> &Arc<dyn ProposalStore> {
        &self.store
    }

    /// The live policy.
    #[must_use]
    pub fn policy(&self) -> &Arc<PolicyStore> {
        &self.policy
    }

    /// The recent denials.
    #[must_use]
    pub fn denials(&self) -> &DenialLog {
        &self.denials
    }

    /// This gateway's name.
    #[must_use]
    pub fn gateway(&self) -> &str {
        &self.gateway
    }

    /// The policy text with `rules` added, or why it cannot be.
    fn candidate(&self, rules: &[AddRule], marker: &str) -> Result<(String, String), SubmitError> {
        let current = self.policy.read_text().map_err(|e| SubmitError::Invalid {
            summary: format!("the policy in force cannot be read: {e}"),
            errors: Vec::new(),
            located_in: None,
        })?;
        let mut text = current.clone();
        for r in rules {
            text =
                sluice_policy::amend::add_rule(&text, &r.name, &r.rule, marker).map_err(|e| {
                    SubmitError::Invalid {
                        summary: e.to_string(),
                        errors: vec![e.to_string()],
                        located_in: None,
                    }
                })?;
        }
        Ok((current, text))
    }

    /// Validates `body` like a policy file (the rules alone, with located
    /// errors; then merged into the policy in force, as a reload would
    /// check it) and queues it as pending.
    ///
    /// # Errors
    /// [`SubmitError`]; nothing is queued then.
    pub async fn submit(
        &self,
        body: ProposalBody,
        origin: Origin,
        denial: Option<String>,
    ) -> Result<Proposal, SubmitError> {
        let change = change_yaml(&body.rules);
        let alone = format!("version: 1\n{change}");
        if let Err(e) = sluice_policy::load_str(&alone, "proposal.yaml", 1) {
            return Err(SubmitError::Invalid {
                summary: "the proposed rules are not a valid policy".into(),
                errors: e.diagnostics.iter().map(ToString::to_string).collect(),
                located_in: Some(alone),
            });
        }
        let (current, candidate) = self.candidate(&body.rules, "proposed rule (validation)")?;
        if let Err(e) = self
            .policy
            .validate_text(&candidate, "candidate-policy.yaml")
        {
            let errors = match &e {
                ReloadError::Invalid(l) => l.diagnostics.iter().map(ToString::to_string).collect(),
                other => vec![other.to_string()],
            };
            return Err(SubmitError::Invalid {
                summary: "the proposed rules do not fit the policy in force".into(),
                errors,
                located_in: Some(candidate),
            });
        }
        let rule_name = body
            .rules
            .iter()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>()
            .join(",");
        let new = NewProposal {
            intent_summary: body.intent_summary,
            operations: body.operations,
            change_yaml: change,
            rule_name: Some(rule_name),
            denial,
            origin,
            base_policy_hash: policy_hash(&current),
        };
        let p = self.store.submit(new).await.map_err(SubmitError::Store)?;
        self.audit.proposal_event(
            "PROPOSED",
            p.id.as_str(),
            &p.origin.sandbox,
            p.rule_name.as_deref(),
            None,
        );
        Ok(p)
    }

    /// Approves or rejects a pending proposal; an approval is applied to
    /// this gateway's policy at once (the result is in the history).
    ///
    /// # Errors
    /// [`DecideError`] when it was not pending or the store failed.
    pub async fn decide(
        &self,
        id: &ProposalId,
        actor: &str,
        approve: bool,
        reason: Option<String>,
    ) -> Result<Proposal, DecideError> {
        let p = self
            .store
            .decide(id, actor.to_owned(), approve, reason.clone())
            .await?;
        let what = if approve { "APPROVED" } else { "REJECTED" };
        self.audit.proposal_event(
            what,
            id.as_str(),
            actor,
            p.rule_name.as_deref(),
            reason.as_deref(),
        );
        if approve {
            return Ok(self.apply(p).await);
        }
        Ok(p)
    }

    /// Writes an approved proposal into this gateway's policy file and
    /// publishes the new generation; records `applied` or `apply_failed`.
    /// Returns the proposal as stored afterwards (or as given when the
    /// store could not record).
    pub async fn apply(&self, p: Proposal) -> Proposal {
        let rules = rules_of(&p);
        let marker = format!(
            "proposal {} ({}), approved",
            p.id.as_str(),
            p.intent_summary
                .as_deref()
                .unwrap_or("no summary")
                .chars()
                .take(80)
                .collect::<String>()
        );
        let outcome = match rules {
            Err(e) => Err(e),
            Ok(rules) => match self.candidate(&rules, &marker) {
                Err(e) => Err(e.to_string()),
                Ok((_, text)) => self.policy.apply_text(&text).map_err(|e| e.to_string()),
            },
        };
        let (action, reason, label) = match &outcome {
            Ok(generation) => (
                Action::Applied,
                Some(format!("generation {generation}")),
                "APPLIED",
            ),
            Err(why) => (Action::ApplyFailed, Some(why.clone()), "APPLY_FAILED"),
        };
        if let Ok(generation) = outcome {
            self.audit
                .metrics()
                .policy_reload(crate::metrics::ReloadOutcome::Applied);
            self.audit.policy_loaded(
                generation,
                &self
                    .policy
                    .path()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                "proposal",
                self.policy.capabilities().as_ref(),
            );
        }
        self.audit.proposal_event(
            label,
            p.id.as_str(),
            &self.gateway,
            p.rule_name.as_deref(),
            reason.as_deref(),
        );
        match self
            .store
            .record(&p.id, self.gateway.clone(), action, reason)
            .await
        {
            Ok(updated) => updated,
            Err(_) => p,
        }
    }

    /// Applies approved proposals this gateway has not applied yet (other
    /// gateways sharing the store approved them). Runs until dropped.
    pub async fn sync_forever(self: Arc<Self>) {
        let mut seen = u64::MAX;
        loop {
            if let Ok(rev) = self.store.revision().await {
                if rev != seen {
                    seen = rev;
                    if let Ok(approved) = self.store.list(Some(Status::Approved), 100).await {
                        for p in approved {
                            let done = p.history.iter().any(|h| {
                                h.actor == self.gateway
                                    && matches!(h.action, Action::Applied | Action::ApplyFailed)
                            });
                            let approved_at = p
                                .history
                                .iter()
                                .rev()
                                .find(|h| h.action == Action::Approved)
                                .map_or(0, |h| h.at_ms);
                            if !done && approved_at >= self.started_ms {
                                // Decided elsewhere (another gateway's console,
                                // `sluice proposals`): recorded here too.
                                if let Some(h) = p
                                    .history
                                    .iter()
                                    .rev()
                                    .find(|h| h.action == Action::Approved)
                                {
                                    self.audit.proposal_event(
                                        "APPROVED",
                                        p.id.as_str(),
                                        &h.actor,
                                        p.rule_name.as_deref(),
                                        h.reason.as_deref(),
                                    );
                                }
                                self.apply(p).await;
                            }
                        }
                    }
                }
            }
            tokio::time::sleep(POLL * 4).await;
        }
    }

    /// Waits up to `timeout` for a decision. On approval it also waits (to
    /// the same deadline, at least half a second) until the policy in force
    /// has every proposed rule.
    ///
    /// # Errors
    /// [`DecideError::NotFound`] or a store failure.
    pub async fn wait(&self, id: &ProposalId, timeout: Duration) -> Result<Waited, DecideError> {
        let deadline = Instant::now() + timeout;
        loop {
            let p = self.store.get(id).await?.ok_or(DecideError::NotFound)?;
            match p.status {
                Status::Pending if Instant::now() >= deadline => {
                    return Ok(Waited {
                        proposal: p,
                        timed_out: true,
                        policy_reloaded: false,
                    })
                }
                Status::Pending => tokio::time::sleep(POLL).await,
                Status::Rejected => {
                    return Ok(Waited {
                        proposal: p,
                        timed_out: false,
                        policy_reloaded: false,
                    })
                }
                _ => {
                    let until = deadline.max(Instant::now() + Duration::from_millis(500));
                    loop {
                        if self.covers(&p) {
                            return Ok(Waited {
                                proposal: p,
                                timed_out: false,
                                policy_reloaded: true,
                            });
                        }
                        if Instant::now() >= until {
                            let p = self.store.get(id).await?.unwrap_or(p);
                            return Ok(Waited {
                                proposal: p,
                                timed_out: false,
                                policy_reloaded: false,
                            });
                        }
                        tokio::time::sleep(POLL / 5).await;
                    }
                }
            }
        }
    }

    /// Whether the policy in force has every rule of `p`.
    #[must_use]
    pub fn covers(&self, p: &Proposal) -> bool {
        let snapshot = self.policy.snapshot();
        rules_of(p).is_ok_and(|rules| {
            rules
                .iter()
                .all(|r| snapshot.policies().iter().any(|pol| *pol.key == *r.name))
        })
    }
}

/// The rules a stored proposal adds.
fn rules_of(p: &Proposal) -> Result<Vec<AddRule>, String> {
    let body = serde_json::json!({ "operations": p.operations });
    super::ops::parse(&body)
        .map(|b| b.rules)
        .map_err(|e| format!("stored operations no longer parse: {e}"))
}
