//! The capability contract: what a policy needs from the runtime that
//! enforces it, and what each runtime mode can enforce.
//!
//! Loading records every [`Requirement`] of a policy with the location of
//! the YAML node that creates it (a `binaries` list needs process identity,
//! `protocol: tcp` needs transparent capture, ...). A runtime mode describes
//! itself as [`Capabilities`]; [`Capabilities::check`] refuses a policy whose
//! requirements the mode cannot meet, with one located error per unmet
//! requirement, so that nothing in a policy is silently left unenforced.

use std::fmt;
use std::sync::Arc;

use crate::error::{Diagnostic, LoadError};
use crate::model::MetadataKind;

/// One thing a runtime must be able to do for a policy to mean what it says.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Need {
    /// `binaries` rules: the process behind every connection must be known.
    ProcessIdentity,
    /// `protocol: tcp`: policy DNS and transparent capture of native TCP.
    TransparentCapture,
    /// `protocol: redis` / `protocol: postgres`: a native protocol processor.
    Processor(&'static str),
    /// A `network_middlewares` entry: its implementation must be registered.
    Middleware(Arc<str>),
    /// `providers.*.metadata`: the cloud metadata loopback of that kind.
    MetadataLoopback(MetadataKind),
}

impl fmt::Display for Need {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ProcessIdentity => f.write_str("process identity"),
            Self::TransparentCapture => f.write_str("transparent capture"),
            Self::Processor(p) => write!(f, "the {p} processor"),
            Self::Middleware(m) => write!(f, "middleware `{m}`"),
            Self::MetadataLoopback(kind) => write!(f, "the {} metadata loopback", kind.as_str()),
        }
    }
}

/// A [`Need`] and the policy node that creates it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requirement {
    /// What is needed.
    pub need: Need,
    /// The YAML path of the node, e.g. `network_policies.github.binaries`.
    pub path: String,
    /// The origin name of the file.
    pub file: Arc<str>,
    /// 1-based line of the node (0 = unknown).
    pub line: usize,
    /// 1-based column of the node (0 = unknown).
    pub col: usize,
}

/// The runtime modes sluice ships.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RuntimeMode {
    /// `sluice serve`: an explicit proxy on a host.
    Serve,
    /// `sluice run -- CMD`: the sandbox namespace sluice creates.
    Run,
    /// `sluice serve` with the sidecar listeners, behind `sluice sidecar-init`.
    Sidecar,
    /// `sluice-proxy` embedded in another program.
    Library,
}

impl RuntimeMode {
    /// The mode's name in messages and events.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Serve => "serve",
            Self::Run => "run",
            Self::Sidecar => "sidecar",
            Self::Library => "library",
        }
    }
}

/// The native protocol processors this build carries.
pub const PROCESSORS: [&str; 2] = ["redis", "postgres"];

/// What one runtime mode, as configured, can enforce.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// The mode.
    pub mode: RuntimeMode,
    /// Every connection's process is resolved (`--identity required` with a
    /// resolver that can see the clients).
    pub process_identity: bool,
    /// Policy DNS and a transparent listener receive native TCP.
    pub transparent_capture: bool,
    /// The metadata loopbacks served to the workload (`sluice run` serves
    /// the kinds its policy names when it starts).
    pub metadata_loopback: Vec<MetadataKind>,
    /// Native protocol processors available (names as in [`PROCESSORS`]).
    pub processors: Vec<&'static str>,
    /// Middleware implementations that can be bound: the built-ins and
    /// every registered service.
    pub middleware: Vec<Arc<str>>,
}

impl Capabilities {
    /// A mode with the processors of this build and nothing else; set the
    /// other fields for what the mode can do.
    #[must_use]
    pub fn new(mode: RuntimeMode) -> Self {
        Self {
            mode,
            process_identity: false,
            transparent_capture: false,
            metadata_loopback: Vec::new(),
            processors: PROCESSORS.to_vec(),
            middleware: Vec::new(),
        }
    }

    /// Whether the mode meets `need`.
    #[must_use]
    pub fn meets(&self, need: &Need) -> bool {
        match need {
            Need::ProcessIdentity => self.process_identity,
            Need::TransparentCapture => self.transparent_capture,
            Need::MetadataLoopback(kind) => self.metadata_loopback.contains(kind),
            Need::Processor(p) => self.processors.contains(p),
            Need::Middleware(m) => self.middleware.iter().any(|r| r == m),
        }
    }

    /// The capabilities as short names, for start lines and events:
    /// e.g. `["process-identity", "processors:redis,postgres", "middleware:sluice/regex"]`.
    #[must_use]
    pub fn names(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.process_identity {
            out.push("process-identity".to_owned());
        }
        if self.transparent_capture {
            out.push("transparent-capture".to_owned());
        }
        if !self.metadata_loopback.is_empty() {
            let kinds: Vec<&str> = self.metadata_loopback.iter().map(|k| k.as_str()).collect();
            out.push(format!("metadata-loopback:{}", kinds.join(",")));
        }
        if !self.processors.is_empty() {
            out.push(format!("processors:{}", self.processors.join(",")));
        }
        if !self.middleware.is_empty() {
            let names: Vec<&str> = self.middleware.iter().map(AsRef::as_ref).collect();
            out.push(format!("middleware:{}", names.join(",")));
        }
        out
    }

    /// Refuses `requirements` this mode cannot meet: one located error per
    /// unmet requirement, naming the mode and what would meet it.
    ///
    /// # Errors
    /// A [`LoadError`] listing every unmet requirement, in file order.
    pub fn check(&self, requirements: &[Requirement]) -> Result<(), LoadError> {
        let mut diagnostics: Vec<Diagnostic> = requirements
            .iter()
            .filter(|r| !self.meets(&r.need))
            .map(|r| Diagnostic {
                file: Arc::clone(&r.file),
                line: r.line,
                col: r.col,
                message: format!(
                    "{}: needs {}, which {} cannot enforce ({})",
                    r.path,
                    r.need,
                    self.mode_label(),
                    self.remedy(&r.need)
                ),
            })
            .collect();
        if diagnostics.is_empty() {
            return Ok(());
        }
        diagnostics.sort_by_key(|d| (d.line, d.col));
        diagnostics.dedup();
        Err(LoadError { diagnostics })
    }

    fn mode_label(&self) -> &'static str {
        match self.mode {
            RuntimeMode::Serve => "`sluice serve`",
            RuntimeMode::Run => "`sluice run`",
            RuntimeMode::Sidecar => "the sidecar",
            RuntimeMode::Library => "an embedded gateway",
        }
    }

    /// What would meet `need`, in this mode's terms.
    fn remedy(&self, need: &Need) -> String {
        match (need, self.mode) {
            (Need::ProcessIdentity, RuntimeMode::Library) => {
                "give the gateway an identity provider, or remove `binaries`".into()
            }
            (Need::ProcessIdentity, _) => {
                "run with `--identity required`, or remove `binaries`".into()
            }
            (Need::TransparentCapture, RuntimeMode::Serve) => {
                "use `sluice run`, or the sidecar listeners `--dns-listen` and `--transparent-listen`".into()
            }
            (Need::TransparentCapture, RuntimeMode::Run) => {
                "drop `--transparent off`".into()
            }
            (Need::TransparentCapture, RuntimeMode::Sidecar) => {
                "give `--transparent-listen`, and not `--transparent off`".into()
            }
            (Need::TransparentCapture, RuntimeMode::Library) => {
                "an embedded gateway has no transparent listener".into()
            }
            (Need::MetadataLoopback(_), RuntimeMode::Run) => {
                "`sluice run` starts the metadata services its policy names at start: restart it to add one".into()
            }
            (Need::MetadataLoopback(_), _) => {
                "the metadata loopback is served only inside `sluice run`".into()
            }
            (Need::Processor(_), _) => "this build has no such processor".into(),
            (Need::Middleware(m), _) => {
                let known: Vec<&str> = self.middleware.iter().map(AsRef::as_ref).collect();
                format!(
                    "register it with `--middleware {m}=URL`; available: {}",
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                )
            }
        }
    }
}

/// Every requirement of a compiled policy, located in its source.
pub(crate) fn requirements(
    ctx: &crate::error::Ctx,
    snapshot: &crate::PolicySnapshot,
) -> Vec<Requirement> {
    use crate::model::Protocol;
    let mut out = Vec::new();
    let mut push = |need: Need, path: String, (file, line, col): (Arc<str>, usize, usize)| {
        out.push(Requirement {
            need,
            path,
            file,
            line,
            col,
        });
    };
    for p in snapshot.policies() {
        let base = format!("network_policies.{}", p.key);
        if !p.binaries.is_empty() {
            let path = format!("{base}.binaries");
            let at = ctx.locate_key(&path);
            push(Need::ProcessIdentity, path, at);
        }
        for id in p.endpoints.iter() {
            let e = snapshot.endpoint(*id);
            let need = match e.protocol {
                Protocol::Tcp => Need::TransparentCapture,
                Protocol::Redis | Protocol::Postgres => Need::Processor(e.protocol.as_str()),
                _ => continue,
            };
            let path = format!("{base}.endpoints[{}].protocol", e.index_in_policy);
            let at = ctx.locate(&path);
            push(need, path, at);
        }
    }
    for m in snapshot.middlewares() {
        let path = format!("network_middlewares.{}.middleware", m.key);
        let at = ctx.locate(&path);
        push(Need::Middleware(Arc::clone(&m.middleware)), path, at);
    }
    for p in snapshot.providers() {
        if let Some(meta) = &p.metadata {
            let path = format!("providers.{}.metadata", p.key);
            let at = ctx.locate(&path);
            push(Need::MetadataLoopback(meta.kind()), path, at);
        }
    }
    out.sort_by(|a, b| (&a.file, a.line, a.col).cmp(&(&b.file, b.line, b.col)));
    out
}
