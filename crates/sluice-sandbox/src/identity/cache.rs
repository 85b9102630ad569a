//! Identities of sole socket holders, kept while no process event happened.
//!
//! What an identity is made of (a process's binary, its parent chain and
//! their binaries) changes only when a process on the host is forked (a pid
//! can be reused only by a new process), executes a program, or exits (its
//! children are reparented). The kernel counts those events
//! ([`ProcessEvents`]); an identity computed while the counts read `E` is
//! still the answer while they read `E`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::ebpf::ProcessEvents;

use super::ProcessIdentity;

/// Entries before the cache is cleared (a full cache means pids churn, and
/// then the counts have moved anyway).
const CAPACITY: usize = 4_096;

/// Identity by pid, each with the event counts read before it was computed.
#[derive(Debug, Default)]
pub(crate) struct IdentityCache {
    entries: Mutex<HashMap<u32, (ProcessEvents, Arc<ProcessIdentity>)>>,
}

impl IdentityCache {
    /// The identity of `pid` if it was computed while the counts read `now`.
    pub(crate) fn get(&self, pid: u32, now: ProcessEvents) -> Option<Arc<ProcessIdentity>> {
        let map = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        match map.get(&pid) {
            Some((at, identity)) if *at == now => Some(Arc::clone(identity)),
            _ => None,
        }
    }

    /// Remembers `identity` (of `identity.pid`), computed after the counts
    /// read `at`. Entries of other moments are dropped: they can never match
    /// again, since the counts only grow.
    pub(crate) fn insert(&self, at: ProcessEvents, identity: Arc<ProcessIdentity>) {
        let mut map = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= CAPACITY || map.values().next().is_some_and(|(t, _)| *t != at) {
            map.clear();
        }
        map.insert(identity.pid, (at, identity));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(pid: u32, exe: &str) -> Arc<ProcessIdentity> {
        Arc::new(ProcessIdentity {
            pid,
            exe: exe.to_owned(),
            exe_sha256: String::new(),
            ancestors: Vec::new(),
            ancestor_sha256: Vec::new(),
            ancestor_pids: Vec::new(),
            cmdline_paths: Vec::new(),
            owners: vec![pid],
            sandbox_pid: None,
        })
    }

    fn at(forks: u64, execs: u64, exits: u64) -> ProcessEvents {
        ProcessEvents {
            forks,
            execs,
            exits,
        }
    }

    #[test]
    fn an_identity_holds_only_while_no_process_event_happened() {
        let cache = IdentityCache::default();
        cache.insert(at(5, 5, 5), identity(10, "/usr/bin/curl"));
        cache.insert(at(5, 5, 5), identity(11, "/usr/bin/git"));
        assert_eq!(
            cache.get(10, at(5, 5, 5)).map(|i| i.exe.clone()).as_deref(),
            Some("/usr/bin/curl")
        );
        assert_eq!(cache.get(12, at(5, 5, 5)), None, "another pid");
        for later in [at(6, 5, 5), at(5, 6, 5), at(5, 5, 6)] {
            assert_eq!(cache.get(10, later), None, "{later:?}");
        }
        // A newer moment replaces every older entry.
        cache.insert(at(6, 5, 5), identity(10, "/usr/bin/python3"));
        assert_eq!(cache.get(11, at(5, 5, 5)), None);
        assert_eq!(
            cache.get(10, at(6, 5, 5)).map(|i| i.exe.clone()).as_deref(),
            Some("/usr/bin/python3")
        );
    }

    #[test]
    fn bounded() {
        let cache = IdentityCache::default();
        for pid in 0..(CAPACITY as u32 + 10) {
            cache.insert(at(1, 1, 1), identity(pid, "/bin/x"));
        }
        let len = cache.entries.lock().map(|m| m.len()).unwrap_or(0);
        assert!(len <= CAPACITY);
    }
}
