//! Errors of process identity resolution. Every variant means "deny": the caller must
//! never treat a failed lookup as an anonymous allow.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Why the process behind a connection could not be identified.
///
/// Messages are lower-case and, where OpenShell has an equivalent deny reason
/// (`openshell-facts.md` §2.4), use the same wording.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// No ESTABLISHED row with local == `peer` and remote == `local` in `net/tcp{,6}`.
    #[error("no established socket for {peer} -> {local} in /proc/net/tcp")]
    SocketNotFound {
        /// The client address as seen by the proxy.
        peer: SocketAddr,
        /// The proxy's address for the connection.
        local: SocketAddr,
    },
    /// No row for this flow (any state) in `net/{tcp,udp}{,6}` (bypass attribution).
    #[error("no {proto} socket for {local} -> {remote} in /proc/net")]
    FlowNotFound {
        /// `tcp` or `udp`.
        proto: &'static str,
        /// The workload's (source) address.
        local: SocketAddr,
        /// The destination address.
        remote: SocketAddr,
    },
    /// A `/proc` file or directory that must be readable was not.
    #[error("failed to read {}: {source}", path.display())]
    ReadProc {
        /// What was being read.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The socket exists, but no (surviving) process holds a descriptor for it.
    #[error("failed to resolve peer binary: no process holds socket inode {inode}")]
    NoOwner {
        /// The socket inode.
        inode: u64,
    },
    /// Several processes hold the socket and they do not share one policy identity
    /// (exe, exe hash, ancestor chain).
    #[error(
        "ambiguous shared socket ownership: inode {inode} is held by PIDs {pids:?} with different policy identities"
    )]
    Ambiguous {
        /// The socket inode.
        inode: u64,
        /// Every pid holding the socket, ascending.
        pids: Vec<u32>,
    },
    /// The owning process's binary could not be read or hashed.
    #[error("failed to resolve peer binary: pid {pid}: {source}")]
    ExeUnreadable {
        /// The owner pid.
        pid: u32,
        /// The underlying error.
        source: io::Error,
    },
    /// An ancestor's binary could not be read or hashed.
    #[error("ancestor integrity check failed for pid {pid}: {source}")]
    AncestorUnreadable {
        /// The ancestor pid.
        pid: u32,
        /// The underlying error.
        source: io::Error,
    },
    /// A `/proc` file did not have the expected format.
    #[error("malformed {} at line {line}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// 1-based line number; 0 when an expected field is missing from the whole file.
        line: usize,
    },
    /// A scan bound was hit, so ownership cannot be established completely (fail closed).
    #[error("process scan limit exceeded: more than {limit} {what}")]
    ScanLimitExceeded {
        /// What was being counted (`"pids"`, `"fds in pid 42"`, ...).
        what: String,
        /// The bound.
        limit: usize,
    },
}
