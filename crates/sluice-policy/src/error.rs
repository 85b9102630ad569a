//! Load results: diagnostics (errors), notices (info/warnings) and the
//! collector used while validating.

use std::fmt;
use std::sync::Arc;

use crate::location::LocationIndex;
use crate::secret::SecretSources;
use crate::snapshot::PolicySnapshot;

/// A successfully loaded policy plus everything worth telling the operator.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// The compiled, immutable policy.
    pub snapshot: PolicySnapshot,
    /// Informational notices and warnings, in file order.
    pub notices: Vec<Notice>,
    /// Every secret source the policy names (providers, token grants, ...).
    pub secret_sources: SecretSources,
}

/// Severity of a [`Notice`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NoticeLevel {
    /// Informational (e.g. a static section that sluice ignores).
    Info,
    /// The file loads, but something deserves attention.
    Warning,
}

impl NoticeLevel {
    /// `info` or `warning`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warning => "warning",
        }
    }
}

/// A non-fatal message about a loaded file. Displays as `FILE:LINE:COL: warning: message`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    /// The origin name of the file.
    pub file: Arc<str>,
    /// 1-based line (0 = unknown).
    pub line: usize,
    /// 1-based column (0 = unknown).
    pub col: usize,
    /// Severity.
    pub level: NoticeLevel,
    /// Lower-case message.
    pub message: String,
}

impl fmt::Display for Notice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_location(f, &self.file, self.line, self.col)?;
        write!(f, " {}: {}", self.level.as_str(), self.message)
    }
}

/// One load error with the location of the offending YAML node.
/// Displays as `FILE:LINE:COL: message` (line/col omitted when 0).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// The origin name of the file.
    pub file: Arc<str>,
    /// 1-based line (0 = not tied to a line, e.g. the file cannot be read).
    pub line: usize,
    /// 1-based column (0 = unknown).
    pub col: usize,
    /// Lower-case message.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_location(f, &self.file, self.line, self.col)?;
        write!(f, " {}", self.message)
    }
}

fn write_location(f: &mut fmt::Formatter<'_>, file: &str, line: usize, col: usize) -> fmt::Result {
    match (line, col) {
        (0, _) => write!(f, "{file}:"),
        (l, 0) => write!(f, "{file}:{l}:"),
        (l, c) => write!(f, "{file}:{l}:{c}:"),
    }
}

/// The policy could not be loaded. Holds every problem found, in file order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadError {
    /// All diagnostics (never empty).
    pub diagnostics: Vec<Diagnostic>,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for LoadError {}

impl LoadError {
    /// A single diagnostic not tied to a YAML node.
    pub(crate) fn whole_file(file: &Arc<str>, message: String) -> Self {
        Self {
            diagnostics: vec![Diagnostic {
                file: Arc::clone(file),
                line: 0,
                col: 0,
                message,
            }],
        }
    }
}

/// Collects diagnostics and notices while validating one file, and the
/// entries other files (attached provider profiles) contributed to it.
pub(crate) struct Ctx {
    pub(crate) file: Arc<str>,
    pub(crate) locs: LocationIndex,
    pub(crate) errors: Vec<Diagnostic>,
    pub(crate) notices: Vec<Notice>,
    /// Paths under these prefixes are located in another file.
    pub(crate) overlays: Vec<Overlay>,
}

/// A subtree of the policy that came from another file: `prefix` in the
/// policy corresponds to the root of `file`.
pub(crate) struct Overlay {
    pub(crate) prefix: String,
    pub(crate) file: Arc<str>,
    pub(crate) locs: Arc<LocationIndex>,
}

impl Ctx {
    pub(crate) fn new(file: Arc<str>, locs: LocationIndex) -> Self {
        Self {
            file,
            locs,
            errors: Vec::new(),
            notices: Vec::new(),
            overlays: Vec::new(),
        }
    }

    /// The file and the index `path` is located with, and the path inside
    /// that file.
    fn resolve<'a>(&'a self, path: &'a str) -> (&'a Arc<str>, &'a LocationIndex, &'a str) {
        for o in &self.overlays {
            if let Some(rest) = path.strip_prefix(o.prefix.as_str()) {
                if rest.is_empty() {
                    return (&o.file, &o.locs, "");
                }
                if let Some(inner) = rest.strip_prefix('.') {
                    return (&o.file, &o.locs, inner);
                }
            }
        }
        (&self.file, &self.locs, path)
    }

    /// File, line and column of the value at `path`.
    pub(crate) fn locate(&self, path: &str) -> (Arc<str>, usize, usize) {
        let (file, locs, inner) = self.resolve(path);
        let (line, col) = locs.value(inner);
        (Arc::clone(file), line, col)
    }

    /// File, line and column of the key of `path`.
    pub(crate) fn locate_key(&self, path: &str) -> (Arc<str>, usize, usize) {
        let (file, locs, inner) = self.resolve(path);
        let (line, col) = locs.key(inner);
        (Arc::clone(file), line, col)
    }

    /// Line and column of the value at `path` (in whichever file holds it).
    pub(crate) fn position(&self, path: &str) -> (usize, usize) {
        let (_, line, col) = self.locate(path);
        (line, col)
    }

    /// Records an error at the value node of `path` (or its nearest ancestor).
    pub(crate) fn err(&mut self, path: &str, message: impl Into<String>) {
        let (file, line, col) = self.locate(path);
        self.err_in(file, line, col, message);
    }

    /// Records an error at the key of `path` (falls back to the value).
    pub(crate) fn err_key(&mut self, path: &str, message: impl Into<String>) {
        let (file, line, col) = self.locate_key(path);
        self.err_in(file, line, col, message);
    }

    pub(crate) fn err_in(
        &mut self,
        file: Arc<str>,
        line: usize,
        col: usize,
        message: impl Into<String>,
    ) {
        self.errors.push(Diagnostic {
            file,
            line,
            col,
            message: message.into(),
        });
    }

    pub(crate) fn notice(&mut self, path: &str, level: NoticeLevel, message: impl Into<String>) {
        let (file, line, col) = self.locate(path);
        self.notices.push(Notice {
            file,
            line,
            col,
            level,
            message: message.into(),
        });
    }

    pub(crate) fn warn(&mut self, path: &str, message: impl Into<String>) {
        self.notice(path, NoticeLevel::Warning, message);
    }

    pub(crate) fn info_key(&mut self, path: &str, message: impl Into<String>) {
        let (file, line, col) = self.locate_key(path);
        self.notices.push(Notice {
            file,
            line,
            col,
            level: NoticeLevel::Info,
            message: message.into(),
        });
    }
}
