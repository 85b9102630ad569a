//! Publishes policy generations. Readers take an `Arc` of the current
//! snapshot (lock-free); reloads swap the whole snapshot atomically and
//! announce the new generation on a watch channel.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use sluice_policy::{LoadError, Loaded, Notice, PolicySnapshot};
use tokio::sync::watch;

/// A check every reloaded policy must pass before it is published (e.g.
/// `sluice run`: no secret source the sandboxed command can already see).
pub type ReloadCheck = Box<dyn Fn(&Loaded) -> Result<(), String> + Send + Sync>;

/// The live policy and its generation counter.
pub struct PolicyStore {
    current: ArcSwap<PolicySnapshot>,
    generation_tx: watch::Sender<u64>,
    path: Option<PathBuf>,
    /// Serializes reloads so generations are strictly increasing.
    reload_lock: Mutex<()>,
    checks: Mutex<Vec<ReloadCheck>>,
}

impl std::fmt::Debug for PolicyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyStore")
            .field("generation", &self.generation())
            .field("path", &self.path)
            .field("checks", &self.checks.lock().map_or(0, |c| c.len()))
            .finish_non_exhaustive()
    }
}

impl PolicyStore {
    /// Start from an already loaded snapshot; `path` is what reloads read.
    #[must_use]
    pub fn new(initial: PolicySnapshot, path: Option<PathBuf>) -> Arc<Self> {
        let (generation_tx, _) = watch::channel(initial.generation());
        Arc::new(Self {
            current: ArcSwap::from_pointee(initial),
            generation_tx,
            path,
            reload_lock: Mutex::new(()),
            checks: Mutex::new(Vec::new()),
        })
    }

    /// Adds a check every later reload must pass (all of them, in the order
    /// they were added; the first refusal wins).
    pub fn add_reload_check(&self, check: ReloadCheck) {
        self.checks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(check);
    }

    /// The snapshot in force now.
    #[must_use]
    pub fn snapshot(&self) -> Arc<PolicySnapshot> {
        self.current.load_full()
    }

    /// The generation in force now.
    #[must_use]
    pub fn generation(&self) -> u64 {
        self.current.load().generation()
    }

    /// A receiver that wakes on every published generation.
    #[must_use]
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation_tx.subscribe()
    }

    /// The file reloads read, if any.
    #[must_use]
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Load the file again; on success publish it as the next generation,
    /// on failure keep the last good policy and return the errors.
    ///
    /// # Errors
    /// The load diagnostics; the policy in force is unchanged.
    pub fn reload(&self) -> Result<(u64, Vec<Notice>), ReloadError> {
        let Some(path) = self.path.as_deref() else {
            return Err(ReloadError::NoFile);
        };
        let _guard = self
            .reload_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let next = self.generation() + 1;
        let loaded = sluice_policy::load_file(path, next).map_err(ReloadError::Invalid)?;
        for check in self
            .checks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
        {
            check(&loaded).map_err(ReloadError::Refused)?;
        }
        self.current.store(Arc::new(loaded.snapshot));
        self.generation_tx.send_replace(next);
        Ok((next, loaded.notices))
    }

    /// Publish a snapshot directly (tests and embedding). Its generation
    /// must be newer than the current one.
    pub fn publish(&self, snapshot: PolicySnapshot) {
        let _guard = self
            .reload_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let generation = snapshot.generation();
        self.current.store(Arc::new(snapshot));
        self.generation_tx.send_replace(generation);
    }
}

/// Why a reload did not publish.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReloadError {
    #[error("no policy file to reload")]
    NoFile,
    #[error("policy rejected, keeping the last good policy:\n{0}")]
    Invalid(LoadError),
    /// The policy is valid but the running mode refuses it.
    #[error("policy refused, keeping the last good policy: {0}")]
    Refused(String),
}
