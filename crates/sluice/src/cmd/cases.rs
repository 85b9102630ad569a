//! The `sluice test` cases file: strict YAML (unknown fields are errors),
//! bounded (file size, case count), every problem reported as
//! `FILE:LINE:COL: message` with the policy loader's locations.

use std::io::Read as _;
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;
use sluice_policy::location::{yaml_error, LocationIndex};
use sluice_policy::Diagnostic;

/// Largest cases file read.
pub(crate) const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;
/// Most cases in one file.
pub(crate) const MAX_CASES: usize = 10_000;

/// One decision test case: intent → expected decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Case {
    pub(crate) name: String,
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) binary: Option<String>,
    pub(crate) ancestors: Vec<String>,
    /// Set when any of method, path or body is: the request-level verdict counts.
    pub(crate) request: Option<CaseRequest>,
    pub(crate) expect: Expect,
    /// The policy key the decision must have matched, and where it is written.
    pub(crate) policy: Option<Located>,
}

/// The request part of a case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CaseRequest {
    pub(crate) method: Option<String>,
    pub(crate) path: Option<String>,
    pub(crate) body: Option<String>,
    pub(crate) content_type: String,
}

/// A string with its position in the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Located {
    pub(crate) value: String,
    pub(crate) line: usize,
    pub(crate) col: usize,
}

/// The expected decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Expect {
    Allow,
    Deny,
}

impl Expect {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDto {
    cases: Option<Vec<CaseDto>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseDto {
    name: Option<String>,
    host: Option<String>,
    port: Option<u16>,
    binary: Option<String>,
    ancestors: Option<Vec<String>>,
    method: Option<String>,
    path: Option<String>,
    body: Option<String>,
    content_type: Option<String>,
    expect: Option<Expect>,
    policy: Option<String>,
}

/// Reads and parses the cases file at `path` (named in messages as given).
///
/// # Errors
/// Every problem found, in file order.
pub(crate) fn load(path: &Path) -> Result<Vec<Case>, Vec<Diagnostic>> {
    let origin = path.display().to_string();
    let whole = |message: String| {
        vec![Diagnostic {
            file: Arc::from(origin.as_str()),
            line: 0,
            col: 0,
            message,
        }]
    };
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|e| whole(format!("cannot read: {e}")))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(whole(format!(
            "larger than {} MiB",
            MAX_FILE_BYTES / (1024 * 1024)
        )));
    }
    let src = String::from_utf8(bytes).map_err(|_| whole("not UTF-8 text".into()))?;
    parse(&src, &origin)
}

/// Parses cases from `src`; `origin` names the file in messages.
///
/// # Errors
/// Every problem found, in file order (a YAML syntax or type error stops at
/// the first, as the parser does).
pub(crate) fn parse(src: &str, origin: &str) -> Result<Vec<Case>, Vec<Diagnostic>> {
    let file: Arc<str> = Arc::from(origin);
    let dto: FileDto = serde_yaml::from_str(src).map_err(|e| vec![yaml_error(&file, &e)])?;
    let locs = LocationIndex::build(src);
    let mut v = Validator {
        file,
        locs,
        errors: Vec::new(),
    };
    let Some(dtos) = dto.cases else {
        v.err("", "missing `cases`; expected a list of cases");
        return Err(v.errors);
    };
    if dtos.is_empty() {
        v.err("cases", "`cases` is empty");
    }
    if dtos.len() > MAX_CASES {
        v.err("cases", format!("more than {MAX_CASES} cases"));
        return Err(v.errors);
    }
    let mut seen = std::collections::HashMap::<String, usize>::new();
    let mut cases = Vec::with_capacity(dtos.len());
    for (i, dto) in dtos.into_iter().enumerate() {
        let at = format!("cases[{i}]");
        if let Some(name) = &dto.name {
            if let Some(first) = seen.insert(name.clone(), i) {
                let (line, _) = v.locs.value(&format!("cases[{first}].name"));
                v.err(
                    &format!("{at}.name"),
                    format!("duplicate case name `{name}`; the first is on line {line}"),
                );
            }
        }
        if let Some(case) = v.case(&at, dto) {
            cases.push(case);
        }
    }
    if v.errors.is_empty() {
        Ok(cases)
    } else {
        v.errors.sort_by_key(|d| (d.line, d.col));
        Err(v.errors)
    }
}

struct Validator {
    file: Arc<str>,
    locs: LocationIndex,
    errors: Vec<Diagnostic>,
}

impl Validator {
    fn err(&mut self, path: &str, message: impl Into<String>) {
        let (line, col) = self.locs.value(path);
        self.errors.push(Diagnostic {
            file: Arc::clone(&self.file),
            line,
            col,
            message: message.into(),
        });
    }

    /// A required field, or an error at the case naming it (`label`).
    fn required<T>(&mut self, at: &str, label: &str, field: &str, value: Option<T>) -> Option<T> {
        if value.is_none() {
            self.err(at, format!("{label}: missing `{field}`"));
        }
        value
    }

    /// Validates one case; `None` after recording its errors.
    fn case(&mut self, at: &str, dto: CaseDto) -> Option<Case> {
        let before = self.errors.len();
        let label = match &dto.name {
            Some(n) => format!("case `{}`", n.escape_debug()),
            None => at.to_owned(),
        };
        let name = self.required(at, &label, "name", dto.name);
        if name.as_deref().is_some_and(|n| n.trim().is_empty()) {
            self.err(&format!("{at}.name"), "empty `name`");
        } else if name
            .as_deref()
            .is_some_and(|n| n.chars().any(char::is_control))
        {
            // Names are printed one per line.
            self.err(&format!("{at}.name"), "`name` contains a control character");
        }
        let host = self.required(at, &label, "host", dto.host);
        if let Some(h) = &host {
            // The proxy's own host parser: what it refuses, a case cannot ask.
            if let Err(e) = sluice_proxy::egress::Host::parse(h) {
                self.err(
                    &format!("{at}.host"),
                    format!("invalid host `{}`: {e}", h.escape_debug()),
                );
            }
        }
        let port = self.required(at, &label, "port", dto.port);
        if port == Some(0) {
            self.err(&format!("{at}.port"), "port must be 1-65535");
        }
        let expect = self.required(at, &label, "expect", dto.expect);
        if dto.binary.as_deref().is_some_and(|p| !is_exe_path(p)) {
            self.err(&format!("{at}.binary"), "`binary` must be an absolute path");
        }
        for (j, a) in dto.ancestors.iter().flatten().enumerate() {
            if !is_exe_path(a) {
                self.err(
                    &format!("{at}.ancestors[{j}]"),
                    "`ancestors` must be absolute paths",
                );
            }
        }
        if dto.ancestors.as_ref().is_some_and(|a| !a.is_empty()) && dto.binary.is_none() {
            self.err(
                &format!("{at}.ancestors"),
                "`ancestors` needs `binary` (without it binaries are not considered)",
            );
        }
        if let Some(m) = &dto.method {
            if m.is_empty() || !m.bytes().all(is_tchar) {
                self.err(
                    &format!("{at}.method"),
                    format!("invalid method `{}`", m.escape_debug()),
                );
            }
        }
        if let Some(p) = &dto.path {
            if !p.starts_with('/') || p.bytes().any(|b| b <= b' ' || b == 0x7f) {
                self.err(
                    &format!("{at}.path"),
                    format!(
                        "invalid path `{}`: expected /path?query without spaces",
                        p.escape_debug()
                    ),
                );
            }
        }
        if let Some(ct) = &dto.content_type {
            if dto.body.is_none() {
                self.err(&format!("{at}.content_type"), "`content_type` needs `body`");
            } else if ct.is_empty() || ct.bytes().any(|b| b < b' ' || b == 0x7f) {
                self.err(&format!("{at}.content_type"), "invalid `content_type`");
            }
        }
        let policy = dto.policy.map(|value| {
            let (line, col) = self.locs.value(&format!("{at}.policy"));
            Located { value, line, col }
        });
        if self.errors.len() > before {
            return None;
        }
        let request =
            (dto.method.is_some() || dto.path.is_some() || dto.body.is_some()).then(|| {
                CaseRequest {
                    method: dto.method,
                    path: dto.path,
                    body: dto.body,
                    content_type: dto
                        .content_type
                        .unwrap_or_else(|| "application/json".to_owned()),
                }
            });
        Some(Case {
            name: name?,
            host: host?,
            port: port?,
            binary: dto.binary,
            ancestors: dto.ancestors.unwrap_or_default(),
            request,
            expect: expect?,
            policy,
        })
    }
}

/// An absolute path without control characters (it is printed in reasons).
fn is_exe_path(p: &str) -> bool {
    p.starts_with('/') && !p.chars().any(char::is_control)
}

/// An HTTP token character (RFC 9110 `tchar`).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
#[path = "cases_tests.rs"]
mod tests;
