//! Process identity: which local process owns the client side of a proxy connection.
//!
//! Follows `openshell-facts.md` §11:
//!
//! 1. In the workload's network-namespace view (`/proc/<anchor>/net/tcp`, then `tcp6`),
//!    find the ESTABLISHED socket whose local end is the connection's peer and whose
//!    remote end is the proxy; take its inode.
//! 2. Find **every** process with a descriptor for `socket:[inode]` (descendants of the
//!    anchor first, then a full `/proc` scan). With the connect-time map
//!    ([`ProcfsIdentity::with_connect_map`]), start from the process that connected the
//!    socket instead and look only at its tree; the scan remains the fallback. When the
//!    kernel's records prove the connector the only holder (it created the socket and
//!    no process was forked on the host since), there is nothing to search.
//! 3. For each owner read its exe (`/proc/<pid>/exe`), the SHA-256 of the running binary,
//!    and its `PPid` chain of ancestor exes (up to the anchor or PID 1, depth ≤ 64).
//! 4. If owners disagree on (exe, hash, ancestors) the connection is ambiguous and must be
//!    denied; otherwise the lowest pid is reported. A sole holder's identity is kept
//!    (`cache.rs`) until the kernel counts a process event (fork, exec, exit).
//!
//! [`ProcfsIdentity::resolve`] is blocking file I/O on `/proc`; async callers use
//! `spawn_blocking`. [`ProcfsIdentity::resolve_cached`] answers only from the kept
//! identities (a netlink round trip and three map lookups) and may run on an async worker.

mod cache;
mod diag;
mod error;
mod exe;
mod parse;
mod scan;

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

pub use error::IdentityError;

use crate::ebpf::{ConnectMap, ProcessEvents};

use cache::IdentityCache;

use exe::{process_exists, read_cmdline, read_exe, read_ns_pid, read_ppid, ExeInfo, HashCache};
use parse::{cmdline_abs_paths, find_established_inode, find_flow_inode, WordOrder};

/// Ancestor walks stop after this many parents.
pub const MAX_ANCESTOR_DEPTH: usize = 64;
/// `/proc/net/tcp{,6}` larger than this is refused rather than truncated.
const MAX_TCP_TABLE_BYTES: u64 = 256 << 20;

/// The process behind a connection, as far as `/proc` can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessIdentity {
    /// Lowest pid among the socket's owners (all of which share this identity).
    pub pid: u32,
    /// Path of the running binary (`readlink /proc/<pid>/exe`; a kernel ` (deleted)`
    /// marker is stripped only when the binary is really gone from that path).
    pub exe: String,
    /// Lowercase hex SHA-256 of the running binary's bytes, read via `/proc/<pid>/exe`.
    pub exe_sha256: String,
    /// Exe paths of the parent, grandparent, ... up to and including the anchor process
    /// (or PID 1, which is included only if its exe is readable).
    pub ancestors: Vec<String>,
    /// Lowercase hex SHA-256 of each ancestor's binary, parallel to `ancestors`.
    pub ancestor_sha256: Vec<String>,
    /// Pids parallel to `ancestors`.
    pub ancestor_pids: Vec<u32>,
    /// Absolute paths found in the owner's command line other than `exe` and `ancestors`.
    /// Evidence for logs and deny messages only; never grounds for an allow.
    pub cmdline_paths: Vec<String>,
    /// Every pid holding the socket, ascending.
    pub owners: Vec<u32>,
    /// `pid` as the process itself sees it, when it lives in a nested PID
    /// namespace (`sluice run`'s sandbox); `None` in the host's.
    pub sandbox_pid: Option<u32>,
}

/// Transport of a flow for [`ProcfsIdentity::resolve_flow`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowProto {
    /// `/proc/<pid>/net/tcp{,6}`.
    Tcp,
    /// `/proc/<pid>/net/udp{,6}`.
    Udp,
}

/// Resolves connection owners by reading a procfs mount. `Send + Sync`; share behind `Arc`.
#[derive(Debug)]
pub struct ProcfsIdentity {
    proc_root: PathBuf,
    anchor_pid: Option<u32>,
    cache: Arc<HashCache>,
    /// Exact socket lookups (step 1) without reading the whole table.
    diag: Option<diag::SockDiag>,
    /// A process step 2 never examines (the proxy itself).
    skip_pid: Option<u32>,
    /// The anchor is the init of a PID namespace (see [`Self::namespace_init`]).
    anchor_is_namespace_init: bool,
    /// Who connected each socket, recorded by the kernel (see [`Self::with_connect_map`]).
    connect_map: Option<Arc<ConnectMap>>,
    /// Identities of sole holders, valid while no process event happened.
    sole_identities: IdentityCache,
}

/// How step 2 found a socket's owners (logged at debug as `identity.via`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    /// From the connecting process recorded by the connect-time map.
    ConnectMap,
    /// The connector created the socket and no process was forked since:
    /// it is the only holder, no `/proc` search needed.
    SoleHolder,
    /// As [`Self::SoleHolder`], and its identity was computed since the last
    /// process event on the host: no `/proc` read at all.
    Cached,
    /// The `/proc` scan (anchor tree, then host).
    Scan,
}

impl Via {
    fn as_str(self) -> &'static str {
        match self {
            Self::ConnectMap => "connect-map",
            Self::SoleHolder => "sole-holder",
            Self::Cached => "cached",
            Self::Scan => "scan",
        }
    }
}

/// The per-owner part of an identity, before owners are compared.
#[derive(Debug)]
struct OwnerIdentity {
    exe: ExeInfo,
    ancestors: Vec<ExeInfo>,
    ancestor_pids: Vec<u32>,
}

impl OwnerIdentity {
    /// Whether two owners look the same to policy: exe path and hash, and the ancestor
    /// chain's paths and hashes. Pids do not matter (siblings forked from the same kind
    /// of parent are one identity).
    fn same_policy_identity(&self, other: &Self) -> bool {
        self.exe == other.exe && self.ancestors == other.ancestors
    }
}

impl ProcfsIdentity {
    /// `proc_root` is usually `/proc`.
    ///
    /// `anchor_pid`: `Some(pid)` reads that process's `/proc/<pid>/net/tcp{,6}` (its
    /// network namespace, e.g. the sandbox entrypoint) and stops ancestor walks at that
    /// pid; `None` reads `/proc/self/net/tcp{,6}` and walks ancestors to PID 1.
    pub fn new(proc_root: impl Into<PathBuf>, anchor_pid: Option<u32>) -> Self {
        Self {
            proc_root: proc_root.into(),
            anchor_pid,
            cache: Arc::default(),
            diag: None,
            skip_pid: None,
            anchor_is_namespace_init: false,
            connect_map: None,
            sole_identities: IdentityCache::default(),
        }
    }

    /// Step 2 from the process that called `connect(2)` on the socket, as
    /// recorded by the kernel in `map` ([`ConnectMap`], keyed by the socket
    /// cookie sock_diag reports): that process is checked to still hold the
    /// socket, then its tree is searched for other holders (from its topmost
    /// parent still holding it, every descendant), and the owners are
    /// compared as always. No entry, a connector that exited or no longer
    /// holds the socket, or no sock_diag answer: the `/proc` scan, as
    /// without a map. `None` leaves the resolver as it is.
    ///
    /// What is given up against the scan: a holder outside that tree is not
    /// seen, i.e. a process that received the socket over `SCM_RIGHTS` (or
    /// `pidfd_getfd`) after it was connected, or a sibling that inherited it
    /// when the common parent has since closed it or exited (the scan sees
    /// such a holder only if it exists at the moment of the lookup).
    #[must_use]
    pub fn with_connect_map(mut self, map: Option<Arc<ConnectMap>>) -> Self {
        if map.is_some() {
            self.connect_map = map;
        }
        self
    }

    /// The anchor is the init (PID 1) of a PID namespace, as `sluice run`'s
    /// sandbox init is: every process of that namespace descends from it
    /// (orphans are reparented to it), so step 2 looks only at the anchor's
    /// tree and the host-wide `/proc` scan runs only when no owner is found
    /// there (a process that entered the namespace from outside). The cost
    /// of a lookup then follows the sandbox's process count, not the host's.
    /// What is given up: a host process sharing a socket with a sandbox
    /// process is not seen (the sandboxed program cannot hand a socket to a
    /// host process of its choosing; today's answer for that case was a
    /// deny of the sandbox's own connection).
    #[must_use]
    pub fn namespace_init(mut self) -> Self {
        self.anchor_is_namespace_init = self.anchor_pid.is_some();
        self
    }

    /// Hashes the anchor's binary on a background thread, so that the first
    /// connections do not wait for it (every sandboxed process has the
    /// anchor among its ancestors, and `sluice run`'s anchor is a large
    /// binary). Without an anchor, or when reading it fails, nothing happens
    /// (the first lookup hashes it, as always).
    pub fn prehash_anchor(&self) {
        let Some(pid) = self.anchor_pid else { return };
        let (root, cache) = (self.proc_root.clone(), Arc::clone(&self.cache));
        let spawned = std::thread::Builder::new()
            .name("identity-prehash".into())
            .spawn(move || {
                if let Err(e) = read_exe(&root, pid, &cache) {
                    tracing::debug!(pid, error = %e, "anchor binary not prehashed");
                }
            });
        if let Err(e) = spawned {
            tracing::debug!(error = %e, "no thread to prehash the anchor binary");
        }
    }

    /// Step 2 never examines `pid`: meant for the proxy's own pid, which holds
    /// two descriptors per connection (thousands under load, all read on every
    /// lookup otherwise) and never the client's end of a connection. Should
    /// the skipped process be a socket's only owner, the lookup finds no
    /// owner and fails (deny).
    #[must_use]
    pub fn skip_process(mut self, pid: u32) -> Self {
        self.skip_pid = Some(pid);
        self
    }

    /// Step 1 by an exact `NETLINK_SOCK_DIAG` lookup in the anchor's network
    /// namespace (this process's without an anchor) instead of reading
    /// `/proc/<anchor>/net/tcp{,6}`, whose cost grows with every socket of
    /// the namespace. Falls back to the tables when the socket cannot be
    /// opened or a lookup does not find the connection. Only meaningful for
    /// the real `/proc`.
    #[must_use]
    pub fn with_socket_diag(self) -> Self {
        let ns = self
            .anchor_pid
            .map(|pid| self.proc_root.join(pid.to_string()).join("ns/net"));
        self.with_socket_diag_at(ns.as_deref())
    }

    /// [`with_socket_diag`](Self::with_socket_diag) in the network namespace
    /// at `ns_path` (e.g. `/run/netns/NAME`; `None`: this process's), for an
    /// anchor that may not have joined its namespace yet (`ip netns exec`
    /// before its `setns`).
    #[must_use]
    pub fn with_socket_diag_at(mut self, ns_path: Option<&std::path::Path>) -> Self {
        let opened = match ns_path {
            Some(path) => diag::SockDiag::open_in(path),
            None => diag::SockDiag::open(),
        };
        match opened {
            Ok(d) => self.diag = Some(d),
            Err(e) => {
                tracing::info!(error = %e, "sock_diag unavailable; identity reads /proc/net/tcp");
            }
        }
        self
    }

    /// Identifies the process owning the client side of an accepted TCP connection.
    ///
    /// `peer` is the client's address as seen by the proxy (`TcpStream::peer_addr`),
    /// `local` the proxy's address for that connection (`TcpStream::local_addr`).
    /// IPv4-mapped IPv6 addresses are treated as the IPv4 address on both sides.
    ///
    /// Blocking: reads `/proc`. Every error means "unidentified" and must deny.
    pub fn resolve(
        &self,
        peer: SocketAddr,
        local: SocketAddr,
    ) -> Result<ProcessIdentity, IdentityError> {
        self.resolve_via(peer, local).map(|(identity, _)| identity)
    }

    /// [`resolve`](Self::resolve) when its answer is at hand without reading
    /// `/proc`: the socket's only holder (see
    /// [`with_connect_map`](Self::with_connect_map)) has an identity computed
    /// since the last process event on the host. A sock_diag round trip and
    /// three map lookups, cheap enough for an async worker; `None` means ask
    /// [`resolve`](Self::resolve) (off the async workers).
    pub fn resolve_cached(&self, peer: SocketAddr, local: SocketAddr) -> Option<ProcessIdentity> {
        self.connect_map.as_ref()?;
        let diag = self.diag.as_ref()?;
        let diag::Lookup::Socket { cookie, .. } = diag.tcp_inode(peer, local).ok()? else {
            return None;
        };
        let (pid, events) = self.sole_holder(Some(cookie))?;
        let identity = self.sole_identities.get(pid, events)?;
        tracing::debug!(pid, identity.via = %Via::Cached.as_str(), "Socket owners found");
        Some(ProcessIdentity::clone(&identity))
    }

    /// [`resolve`](Self::resolve), and how the owners were found
    /// (`"cached"`, `"sole-holder"`, `"connect-map"` or `"scan"`).
    pub(crate) fn resolve_via(
        &self,
        peer: SocketAddr,
        local: SocketAddr,
    ) -> Result<(ProcessIdentity, &'static str), IdentityError> {
        let (inode, cookie) = self.find_inode(peer, local)?;
        self.identity_for_socket(inode, cookie)
            .map(|(identity, via)| (identity, via.as_str()))
    }

    /// Identifies the process owning the sandbox side of an outgoing flow
    /// `local -> remote` that never reached the proxy (bypass attribution): the socket
    /// may be in any state (TCP SYN_SENT) and, for UDP, unconnected or unbound.
    ///
    /// Blocking: reads `/proc`.
    pub fn resolve_flow(
        &self,
        proto: FlowProto,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> Result<ProcessIdentity, IdentityError> {
        let (files, wildcard, name) = match proto {
            FlowProto::Tcp => (["tcp", "tcp6"], false, "tcp"),
            FlowProto::Udp => (["udp", "udp6"], true, "udp"),
        };
        let net_dir = self.net_dir();
        for (i, file) in files.into_iter().enumerate() {
            let path = net_dir.join(file);
            let text = match read_table(&path) {
                Ok(text) => text,
                Err(e) if i > 0 && e.kind() == io::ErrorKind::NotFound => continue,
                Err(source) => return Err(IdentityError::ReadProc { path, source }),
            };
            match find_flow_inode(&text, WordOrder::NATIVE, local, remote, wildcard) {
                Ok(Some(inode)) => {
                    return self
                        .identity_for_socket(inode, None)
                        .map(|(identity, _)| identity)
                }
                Ok(None) => {}
                Err(line) => return Err(IdentityError::Malformed { path, line }),
            }
        }
        Err(IdentityError::FlowNotFound {
            proto: name,
            local,
            remote,
        })
    }

    fn net_dir(&self) -> PathBuf {
        let ns = self
            .anchor_pid
            .map_or_else(|| "self".to_owned(), |pid| pid.to_string());
        self.proc_root.join(ns).join("net")
    }

    /// The owners of socket `inode` from its connector, when the map knows it.
    fn connect_map_owners(&self, inode: u64, cookie: Option<u64>) -> Option<Vec<u32>> {
        let (map, cookie) = (self.connect_map.as_ref()?, cookie?);
        let connector = match map.connector(cookie) {
            Ok(Some(pid)) => pid,
            Ok(None) => {
                tracing::debug!(inode, "socket not in the connect-time map");
                return None;
            }
            Err(e) => {
                tracing::debug!(error = %e, "connect-time map lookup failed");
                return None;
            }
        };
        match scan::find_owners_from_connector(
            &self.proc_root,
            inode,
            connector,
            self.anchor_pid,
            self.skip_pid,
        ) {
            Ok(Some(owners)) => Some(owners),
            Ok(None) => {
                tracing::debug!(inode, connector, "connector no longer holds the socket");
                None
            }
            Err(e) => {
                tracing::debug!(error = %e, inode, connector, "connector tree unreadable");
                None
            }
        }
    }

    /// The socket's only holder, when the kernel's records prove it: the
    /// process that connected it also created it, and no process was forked
    /// on the host since it was created (so no process inherited it; a
    /// descriptor passed over a socket or taken with `pidfd_getfd` is not
    /// followed on any path). With the event counts read first, which the
    /// identity computed for that holder is then valid for.
    fn sole_holder(&self, cookie: Option<u64>) -> Option<(u32, ProcessEvents)> {
        let (map, cookie) = (self.connect_map.as_ref()?, cookie?);
        let events = map.process_events().ok()??;
        let connector = map.connector(cookie).ok()??;
        let origin = map.origin(cookie).ok()??;
        (origin.creator == connector
            && origin.forks_at_creation == events.forks
            && Some(connector) != self.skip_pid)
            .then_some((connector, events))
    }

    /// Every owner of socket `inode`, compared and reported (steps 2-4).
    /// `cookie`: the socket's cookie, when sock_diag found it.
    fn identity_for_socket(
        &self,
        inode: u64,
        cookie: Option<u64>,
    ) -> Result<(ProcessIdentity, Via), IdentityError> {
        let sole = self.sole_holder(cookie);
        if let Some((pid, events)) = sole {
            if let Some(identity) = self.sole_identities.get(pid, events) {
                return Ok((ProcessIdentity::clone(&identity), Via::Cached));
            }
        }
        let (owners, via) = match sole {
            Some((pid, _)) => (vec![pid], Via::SoleHolder),
            None => match self.connect_map_owners(inode, cookie) {
                Some(owners) => (owners, Via::ConnectMap),
                None => (
                    scan::find_owners(
                        &self.proc_root,
                        inode,
                        self.anchor_pid,
                        self.skip_pid,
                        self.anchor_is_namespace_init,
                    )?,
                    Via::Scan,
                ),
            },
        };
        tracing::debug!(
            inode,
            ?owners,
            identity.via = %via.as_str(),
            "Socket owners found"
        );

        let mut identified: Vec<(u32, OwnerIdentity)> = Vec::with_capacity(owners.len());
        for &pid in &owners {
            match self.owner_identity(pid) {
                Ok(Some(id)) => identified.push((pid, id)),
                Ok(None) => tracing::debug!(pid, inode, "socket owner exited during lookup"),
                Err(err) => return Err(err),
            }
        }
        let Some((first_pid, first)) = identified.first() else {
            return Err(IdentityError::NoOwner { inode });
        };
        if identified
            .iter()
            .any(|(_, other)| !other.same_policy_identity(first))
        {
            return Err(IdentityError::Ambiguous {
                inode,
                pids: owners,
            });
        }

        let mut exclude: Vec<&str> = vec![first.exe.path.as_str()];
        exclude.extend(first.ancestors.iter().map(|a| a.path.as_str()));
        let cmdline_paths = cmdline_abs_paths(&read_cmdline(&self.proc_root, *first_pid), &exclude);

        let identity = ProcessIdentity {
            pid: *first_pid,
            exe: first.exe.path.clone(),
            exe_sha256: first.exe.sha256.clone(),
            ancestors: first.ancestors.iter().map(|a| a.path.clone()).collect(),
            ancestor_sha256: first.ancestors.iter().map(|a| a.sha256.clone()).collect(),
            ancestor_pids: first.ancestor_pids.clone(),
            cmdline_paths,
            owners,
            sandbox_pid: read_ns_pid(&self.proc_root, *first_pid),
        };
        if let Some((_, events)) = sole {
            self.sole_identities
                .insert(events, Arc::new(identity.clone()));
        }
        Ok((identity, via))
    }

    /// The inode of the client-side socket in the anchor's network namespace,
    /// and its cookie when sock_diag answered.
    fn find_inode(
        &self,
        peer: SocketAddr,
        local: SocketAddr,
    ) -> Result<(u64, Option<u64>), IdentityError> {
        if let Some(diag) = &self.diag {
            match diag.tcp_inode(peer, local) {
                Ok(diag::Lookup::Socket { inode, cookie }) => return Ok((inode, Some(cookie))),
                // Rare (the client already closed, or it is in another
                // namespace): the table has the last word.
                Ok(diag::Lookup::NotFound) => {}
                Err(e) => tracing::debug!(error = %e, "sock_diag lookup failed; reading the table"),
            }
        }
        let net_dir = self.net_dir();
        for (file, required) in [("tcp", true), ("tcp6", false)] {
            let path = net_dir.join(file);
            let text = match read_table(&path) {
                Ok(text) => text,
                // tcp6 is absent when IPv6 is disabled.
                Err(e) if !required && e.kind() == io::ErrorKind::NotFound => continue,
                Err(source) => return Err(IdentityError::ReadProc { path, source }),
            };
            match find_established_inode(&text, WordOrder::NATIVE, peer, local) {
                Ok(Some(inode)) => return Ok((inode, None)),
                Ok(None) => {}
                Err(line) => return Err(IdentityError::Malformed { path, line }),
            }
        }
        Err(IdentityError::SocketNotFound { peer, local })
    }

    /// Exe, hash and ancestry of one owner; `Ok(None)` if it exited meanwhile.
    fn owner_identity(&self, pid: u32) -> Result<Option<OwnerIdentity>, IdentityError> {
        let exe = match read_exe(&self.proc_root, pid, &self.cache) {
            Ok(exe) => exe,
            Err(_) if !process_exists(&self.proc_root, pid) => return Ok(None),
            Err(source) => return Err(IdentityError::ExeUnreadable { pid, source }),
        };
        let (ancestors, ancestor_pids) = self.ancestors_of(pid)?;
        Ok(Some(OwnerIdentity {
            exe,
            ancestors,
            ancestor_pids,
        }))
    }

    /// Walks `PPid` from `pid` to the anchor or PID 1 (both inclusive), ≤ 64 steps.
    fn ancestors_of(&self, pid: u32) -> Result<(Vec<ExeInfo>, Vec<u32>), IdentityError> {
        let mut exes = Vec::new();
        let mut pids = Vec::new();
        let mut current = pid;
        for _ in 0..MAX_ANCESTOR_DEPTH {
            if Some(current) == self.anchor_pid || current <= 1 {
                break;
            }
            let parent = read_ppid(&self.proc_root, current)?;
            if parent == 0 || pids.contains(&parent) {
                break;
            }
            match read_exe(&self.proc_root, parent, &self.cache) {
                Ok(exe) => {
                    exes.push(exe);
                    pids.push(parent);
                }
                // PID 1's exe may be unreadable (other user, other mount ns): omit it.
                Err(_) if parent == 1 => break,
                Err(source) => {
                    return Err(IdentityError::AncestorUnreadable {
                        pid: parent,
                        source,
                    })
                }
            }
            current = parent;
        }
        Ok((exes, pids))
    }
}

fn read_table(path: &std::path::Path) -> io::Result<String> {
    use std::io::Read as _;
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(MAX_TCP_TABLE_BYTES + 1)
        .read_to_string(&mut text)?;
    if text.len() as u64 > MAX_TCP_TABLE_BYTES {
        return Err(io::Error::other("socket table too large"));
    }
    Ok(text)
}

/// Test helper: sock_diag's (inode, cookie) for a TCP socket of this
/// process's network namespace.
#[cfg(test)]
pub(crate) fn test_diag() -> impl Fn(SocketAddr, SocketAddr) -> Option<(u64, u64)> {
    let diag = diag::SockDiag::open().expect("sock_diag socket");
    move |src, dst| match diag.tcp_inode(src, dst) {
        Ok(diag::Lookup::Socket { inode, cookie }) => Some((inode, cookie)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_send_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<ProcfsIdentity>();
        assert_send_sync::<ProcessIdentity>();
        assert_send_sync::<IdentityError>();
    }

    #[test]
    fn own_ancestry_stops_at_anchor() {
        let me = std::process::id();
        let parent = read_ppid(std::path::Path::new("/proc"), me).expect("own ppid");
        let ident = ProcfsIdentity::new("/proc", Some(parent));
        let (exes, pids) = ident.ancestors_of(me).expect("ancestors");
        assert_eq!(pids, vec![parent]);
        assert_eq!(exes.len(), 1);
        let (exes, pids) = ident.ancestors_of(parent).expect("anchor itself");
        assert!(exes.is_empty() && pids.is_empty());
    }

    #[test]
    fn own_ancestry_without_anchor_reaches_init() {
        let ident = ProcfsIdentity::new("/proc", None);
        let (exes, pids) = ident
            .ancestors_of(std::process::id())
            .expect("ancestors to pid 1");
        assert_eq!(exes.len(), pids.len());
        assert!(pids.len() <= MAX_ANCESTOR_DEPTH);
        let parent = read_ppid(std::path::Path::new("/proc"), std::process::id()).expect("ppid");
        assert_eq!(pids.first(), Some(&parent));
    }

    #[test]
    fn missing_net_table_is_read_error() {
        let ident = ProcfsIdentity::new("/nonexistent-proc-root", None);
        let err = ident
            .resolve(
                "127.0.0.1:1".parse().expect("addr"),
                "127.0.0.1:2".parse().expect("addr"),
            )
            .expect_err("must fail");
        assert!(matches!(err, IdentityError::ReadProc { .. }), "{err}");
    }
}
