use std::net::SocketAddr;
use std::sync::Arc;

/// Whether binary identity is part of authorization (`--identity`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum IdentityMode {
    /// Resolve the client process; deny on failure or ambiguity when policy names binaries.
    #[default]
    Required,
    /// Decide by endpoint only; identity is recorded as intentionally
    /// unavailable. Runtimes refuse policies with `binaries` in this mode
    /// (the capability contract), so none is ever loaded and ignored.
    EndpointOnly,
}

impl IdentityMode {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Required => "required",
            Self::EndpointOnly => "endpoint-only",
        }
    }
}

/// The process behind a client socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessIdentity {
    pub pid: u32,
    /// Executable path.
    pub exe: String,
    /// Lowercase hex SHA-256 of the executable.
    pub exe_sha256: String,
    /// Executable paths of the ancestors, parent first.
    pub ancestors: Vec<String>,
    /// Absolute paths from the command line (evidence only, never grants).
    pub cmdline_paths: Vec<String>,
    /// The pid inside the sandbox's own PID namespace (`sluice run`), if nested.
    pub sandbox_pid: Option<u32>,
}

/// Finds the process that owns the client side of an accepted connection.
/// Implemented over `/proc` by the sandbox crate; swapped in tests.
pub trait IdentityResolver: Send + Sync + 'static {
    /// Blocking; callers run it off the async workers.
    ///
    /// # Errors
    /// A human-readable reason when the owner cannot be found or is ambiguous.
    fn resolve(&self, peer: SocketAddr, local: SocketAddr) -> Result<ProcessIdentity, String>;

    /// The answer when it is at hand without blocking work (a few system
    /// calls at most, e.g. an identity cached since the last process event);
    /// called on the async worker before [`resolve`](Self::resolve), which
    /// runs when this gives `None` (the default).
    fn resolve_cached(&self, _peer: SocketAddr, _local: SocketAddr) -> Option<ProcessIdentity> {
        None
    }
}

/// Identity as evidence for a decision.
#[derive(Clone, Debug)]
pub enum IdentityEvidence {
    Resolved(Arc<ProcessIdentity>),
    /// `--identity endpoint-only`: deliberately not looked up.
    EndpointOnly,
    /// Lookup failed or was ambiguous; the reason is kept for the deny message.
    Failed(Arc<str>),
}

impl IdentityEvidence {
    #[must_use]
    pub fn process(&self) -> Option<&ProcessIdentity> {
        match self {
            Self::Resolved(p) => Some(p),
            _ => None,
        }
    }
}

/// Which identity fields a decision relied on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IdentityFieldsUsed {
    pub exe: bool,
    pub ancestors: bool,
}
