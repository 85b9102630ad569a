//! The store interface every backend implements, and its errors.

use std::future::Future;
use std::pin::Pin;

use crate::model::{Action, NewProposal, Proposal, ProposalId, Status};

/// Most proposals one [`ProposalStore::list`] returns.
pub const MAX_LIST: usize = 1000;

/// The future a store method returns (boxed, so the trait stays
/// object-safe and callers can hold `Arc<dyn ProposalStore>`).
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Why a store call failed. Messages never carry secrets (a PostgreSQL
/// URL's password is never printed: only host, port and database).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database cannot be reached or read (I/O error, connection lost,
    /// unreadable row). Callers answer 503: nothing was stored by this
    /// call, except that a write whose commit was already sent when the
    /// connection died may have been committed.
    #[error("proposal store unavailable: {0}")]
    Unavailable(String),
    /// No proposal has this id.
    #[error("no such proposal")]
    NotFound,
    /// The proposal is no longer in a state that allows this change (it
    /// was already decided, possibly by another gateway).
    #[error("proposal is already {status}")]
    Conflict {
        /// Where it stands now.
        status: Status,
    },
    /// The request itself is wrong (oversized field, bad id, bad spec).
    #[error("invalid proposal request: {0}")]
    Invalid(String),
}

/// A queue of proposals shared by every gateway that opens the same store.
///
/// Every method is atomic: a write either committed or returned an error.
pub trait ProposalStore: Send + Sync {
    /// Stores `proposal` as pending, with the history `[proposed by
    /// origin.sandbox]`, and returns it with its new id.
    fn submit(&self, proposal: NewProposal) -> StoreFuture<'_, Proposal>;

    /// The proposal with this id, if any.
    fn get<'a>(&'a self, id: &'a ProposalId) -> StoreFuture<'a, Option<Proposal>>;

    /// Up to `limit` proposals (at most [`MAX_LIST`]), newest first, only
    /// those with `status` when given.
    fn list(&self, status: Option<Status>, limit: usize) -> StoreFuture<'_, Vec<Proposal>>;

    /// Approves or rejects a pending proposal, as one compare-and-set:
    /// when gateways race, exactly one wins and the others get
    /// [`StoreError::Conflict`] with the winner's status.
    fn decide<'a>(
        &'a self,
        id: &'a ProposalId,
        actor: String,
        approve: bool,
        reason: Option<String>,
    ) -> StoreFuture<'a, Proposal>;

    /// Appends an `applied` or `apply_failed` entry to an approved
    /// proposal's history (any other action is [`StoreError::Invalid`]; a
    /// proposal that is not approved is [`StoreError::Conflict`]).
    fn record<'a>(
        &'a self,
        id: &'a ProposalId,
        actor: String,
        action: Action,
        reason: Option<String>,
    ) -> StoreFuture<'a, Proposal>;

    /// A counter that grows with every committed change, across every
    /// gateway sharing the store: a console polls it to know when to
    /// reload. It only says "something changed", never what.
    fn revision(&self) -> StoreFuture<'_, u64>;
}

/// The status and history action a decision leads to.
pub(crate) fn decision(approve: bool) -> (Status, Action) {
    if approve {
        (Status::Approved, Action::Approved)
    } else {
        (Status::Rejected, Action::Rejected)
    }
}

/// Refuses actions other than `applied` / `apply_failed` in `record`.
pub(crate) fn check_recorded_action(action: Action) -> Result<(), StoreError> {
    match action {
        Action::Applied | Action::ApplyFailed => Ok(()),
        other => Err(StoreError::Invalid(format!(
            "record takes applied or apply_failed, not {other:?}"
        ))),
    }
}

/// `limit` clamped to `1..=MAX_LIST`.
pub(crate) fn clamp_limit(limit: usize) -> usize {
    limit.clamp(1, MAX_LIST)
}
