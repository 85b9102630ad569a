//! Publishes policy generations. Readers take an `Arc` of the current
//! snapshot (lock-free); reloads swap the whole snapshot atomically and
//! announce the new generation on a watch channel.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use sha2::Digest as _;
use sluice_policy::{Capabilities, LoadError, Loaded, Notice, PolicySnapshot};
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
    /// SHA-256 of the text [`PolicyStore::apply_text`] last wrote and
    /// published: the file watcher's next look at that same file is not a
    /// new generation.
    applied: Mutex<Option<[u8; 32]>>,
    /// What the runtime can enforce; every later policy must need no more.
    capabilities: Mutex<Option<Capabilities>>,
    /// Profiles attached from the command line, and the operator's secret
    /// bindings: applied to every later load too.
    profiles: Mutex<Arc<sluice_policy::ProfileOptions>>,
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
            applied: Mutex::new(None),
            capabilities: Mutex::new(None),
            profiles: Mutex::new(Arc::default()),
        })
    }

    /// Attaches `profiles` to every later load (reloads, validations,
    /// replacements), as the initial load attached them.
    pub fn set_profiles(&self, profiles: sluice_policy::ProfileOptions) {
        *self
            .profiles
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(profiles);
    }

    fn profile_options(&self) -> Arc<sluice_policy::ProfileOptions> {
        Arc::clone(
            &self
                .profiles
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// Loads `text` as the store's policy: relative profile files are read
    /// from the policy file's directory whatever `origin` says (a proposal's
    /// candidate is named `candidate-policy.yaml`).
    fn load_text(&self, text: &str, origin: &str, generation: u64) -> Result<Loaded, LoadError> {
        let mut profiles = self.profile_options();
        if profiles.policy_dir.is_none() {
            if let Some(dir) = self.path.as_deref().and_then(Path::parent) {
                Arc::make_mut(&mut profiles).policy_dir = Some(dir.to_path_buf());
            }
        }
        sluice_policy::load_str_with_profiles(
            text,
            origin,
            generation,
            &sluice_policy::ProcessEnv,
            &profiles,
        )
    }

    /// Adds a check every later reload must pass (all of them, in the order
    /// they were added; the first refusal wins).
    pub fn add_reload_check(&self, check: ReloadCheck) {
        self.checks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(check);
    }

    /// Declares what the runtime enforcing this store can do. The policy in
    /// force must need no more (checked now); every later reload, validation
    /// and applied proposal is checked the same way, with located errors.
    ///
    /// # Errors
    /// The policy in force needs something the runtime cannot do: one
    /// located diagnostic per unmet requirement. Nothing is recorded then.
    pub fn set_capabilities(&self, capabilities: Capabilities) -> Result<(), LoadError> {
        capabilities.check(self.snapshot().requirements())?;
        *self
            .capabilities
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(capabilities);
        Ok(())
    }

    /// What the runtime declared it can enforce ([`Self::set_capabilities`]).
    #[must_use]
    pub fn capabilities(&self) -> Option<Capabilities> {
        self.capabilities
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
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
        let written_by_us = std::fs::read(path).is_ok_and(|bytes| {
            let digest: [u8; 32] = sha2::Sha256::digest(&bytes).into();
            self.applied
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take_if(|h| *h == digest)
                .is_some()
        });
        if written_by_us {
            return Err(ReloadError::Unchanged);
        }
        let next = self.generation() + 1;
        let loaded = sluice_policy::load_file_with_profiles(
            path,
            next,
            &sluice_policy::ProcessEnv,
            &self.profile_options(),
        )
        .map_err(ReloadError::Invalid)?;
        self.run_checks(&loaded)?;
        self.current.store(Arc::new(loaded.snapshot));
        self.generation_tx.send_replace(next);
        Ok((next, loaded.notices))
    }

    /// The policy file's text as it is now.
    ///
    /// # Errors
    /// [`ReloadError::NoFile`] without a file, [`ReloadError::Io`] when it cannot be read.
    pub fn read_text(&self) -> Result<String, ReloadError> {
        let path = self.path.as_deref().ok_or(ReloadError::NoFile)?;
        std::fs::read_to_string(path).map_err(|e| ReloadError::Io(e.to_string()))
    }

    /// Validates `text` exactly as a reload of it would be (the loader and
    /// every reload check), without publishing anything. `origin` names the
    /// text in located errors.
    ///
    /// # Errors
    /// The load diagnostics or a check's refusal.
    pub fn validate_text(&self, text: &str, origin: &str) -> Result<Loaded, ReloadError> {
        let loaded = self
            .load_text(text, origin, self.generation() + 1)
            .map_err(ReloadError::Invalid)?;
        self.run_checks(&loaded)?;
        Ok(loaded)
    }

    fn run_checks(&self, loaded: &Loaded) -> Result<(), ReloadError> {
        if let Some(caps) = self
            .capabilities
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
        {
            caps.check(loaded.snapshot.requirements())
                .map_err(ReloadError::Invalid)?;
        }
        for check in self
            .checks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
        {
            check(loaded).map_err(ReloadError::Refused)?;
        }
        Ok(())
    }

    /// Replaces the policy file with `text` and publishes it as the next
    /// generation, only if `text` passes everything a reload checks. The
    /// file is written next to the old one and renamed over it (same mode),
    /// so a reader never sees half a file; on any failure the old file and
    /// policy stay in force.
    ///
    /// # Errors
    /// [`ReloadError`] naming what failed; nothing changed then.
    pub fn apply_text(&self, text: &str) -> Result<u64, ReloadError> {
        let path = self.path.as_deref().ok_or(ReloadError::NoFile)?;
        let _guard = self
            .reload_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let next = self.generation() + 1;
        let origin = path.display().to_string();
        let loaded = self
            .load_text(text, &origin, next)
            .map_err(ReloadError::Invalid)?;
        self.run_checks(&loaded)?;
        write_atomically(path, text).map_err(|e| ReloadError::Io(e.to_string()))?;
        *self
            .applied
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some(sha2::Sha256::digest(text.as_bytes()).into());
        self.current.store(Arc::new(loaded.snapshot));
        self.generation_tx.send_replace(next);
        Ok(next)
    }

    /// Publishes `text` (named `origin` in messages) as the next generation,
    /// only if it passes everything a reload checks. For policies held in
    /// memory by an embedding program; nothing is written.
    ///
    /// # Errors
    /// [`ReloadError`] naming what failed; nothing changed then.
    pub fn replace_text(&self, text: &str, origin: &str) -> Result<u64, ReloadError> {
        let _guard = self
            .reload_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let next = self.generation() + 1;
        let loaded = self
            .load_text(text, origin, next)
            .map_err(ReloadError::Invalid)?;
        self.run_checks(&loaded)?;
        self.current.store(Arc::new(loaded.snapshot));
        self.generation_tx.send_replace(next);
        Ok(next)
    }

    /// Publish a snapshot directly (tests). Its generation must be newer
    /// than the current one. No check runs, the capability contract
    /// included: embedding programs use [`Self::replace_text`].
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
    /// The file could not be read or written.
    #[error("policy file: {0}")]
    Io(String),
    /// The file is exactly what sluice itself last wrote and published.
    #[error("the policy file is the one in force")]
    Unchanged,
}

/// Writes `text` to a temporary file beside `path` (same permissions as
/// `path`), syncs it and renames it over `path`.
fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let name = path
        .file_name()
        .map_or_else(|| "policy".into(), |n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(".{name}.sluice-{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        if let Ok(meta) = std::fs::metadata(path) {
            f.set_permissions(meta.permissions())?;
        }
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str = "version: 1\nnetwork_policies: {}\n";
    const V2: &str = "version: 1\n# two\nnetwork_policies:\n  a:\n    endpoints: [ { host: a.test, port: 443 } ]\n";

    /// Relative profile files are read from the policy file's directory on
    /// every load, whatever the text is named (a proposal's candidate), and
    /// command-line profiles stay attached across reloads.
    #[test]
    fn profiles_follow_the_policy_file_and_the_command_line() {
        let dir = sluice_test_support::TempDir::new("policy-store-profiles");
        let profile = "id: local-svc\nendpoints:\n  - { host: svc.test, port: 443, protocol: rest, enforcement: enforce, access: read-only }\n";
        std::fs::write(dir.path("svc.yaml"), profile).expect("profile");
        std::fs::write(
            dir.path("extra.yaml"),
            profile
                .replace("local-svc", "extra")
                .replace("svc.test", "extra.test"),
        )
        .expect("profile");
        let text = "version: 1\nprofiles: [{file: svc.yaml}]\n";
        let path = dir.path("policy.yaml");
        std::fs::write(&path, text).expect("write");
        let options = sluice_policy::ProfileOptions {
            profiles: vec![sluice_policy::profile::ProfileRef::File(
                dir.path("extra.yaml"),
            )],
            ..Default::default()
        };
        let loaded =
            sluice_policy::load_file_with_profiles(&path, 1, &sluice_policy::ProcessEnv, &options)
                .expect("loads");
        let store = PolicyStore::new(loaded.snapshot, Some(path.clone()));
        store.set_profiles(options);
        let keys = |s: &PolicySnapshot| -> Vec<String> {
            s.policies().iter().map(|p| p.key.to_string()).collect()
        };
        let candidate = store
            .validate_text(text, "candidate-policy.yaml")
            .expect("the candidate finds svc.yaml next to the policy file");
        assert_eq!(
            keys(&candidate.snapshot),
            ["_provider_extra", "_provider_local_svc"]
        );
        std::fs::write(&path, format!("{text}# touched\n")).expect("write");
        store.reload().expect("reload");
        assert_eq!(
            keys(&store.snapshot()),
            ["_provider_extra", "_provider_local_svc"]
        );
    }

    #[test]
    fn apply_text_writes_validates_and_publishes_once() {
        let dir = sluice_test_support::TempDir::new("policy-store-apply");
        let path = dir.path("policy.yaml");
        std::fs::write(&path, V1).expect("write");
        let loaded = sluice_policy::load_file(&path, 1).expect("v1");
        let store = PolicyStore::new(loaded.snapshot, Some(path.clone()));
        // Invalid text: nothing written, nothing published.
        assert!(matches!(
            store.apply_text("version: 2\n"),
            Err(ReloadError::Invalid(_))
        ));
        assert_eq!(std::fs::read_to_string(&path).expect("read"), V1);
        assert_eq!(store.generation(), 1);
        // Valid text: the file and the generation move together.
        assert_eq!(store.apply_text(V2).expect("applied"), 2);
        assert_eq!(std::fs::read_to_string(&path).expect("read"), V2);
        assert_eq!(store.snapshot().policies().len(), 1);
        // The watcher's look at the same file is not a new generation...
        assert!(matches!(store.reload(), Err(ReloadError::Unchanged)));
        assert_eq!(store.generation(), 2);
        // ...but an edit after it is.
        std::fs::write(&path, V1).expect("write");
        assert_eq!(store.reload().expect("reloaded").0, 3);
        assert!(!dir.root().read_dir().expect("dir").any(|e| e
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .ends_with(".tmp")));
    }
}
