//! `sluice test CASES.yaml --policy FILE`: decision test cases (intent →
//! expected decision), each decided by [`super::decide`] exactly as
//! `sluice explain` decides. Exit 0 when every case passes, 1 when any fails,
//! 2 when the cases cannot be run (invalid policy or cases file).

use std::io::Write as _;
use std::process::ExitCode;
use std::sync::Arc;

use serde_json::json;
use sluice_policy::{Diagnostic, PolicySnapshot};

use super::cases::{self, Case};
use super::decide::{decide, Answer, Connection, Outcome, Question, Request};
use crate::cli::{TestArgs, TestFormat};

/// Exit status when the cases could not be run at all.
const CANNOT_RUN: u8 = 2;

pub(crate) fn run(args: &TestArgs) -> anyhow::Result<ExitCode> {
    let snapshot = match args
        .profiles
        .load(args.policy.as_deref(), &sluice_policy::StandInSecrets)
    {
        Ok(l) => Arc::new(l.snapshot),
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(CANNOT_RUN));
        }
    };
    let loaded = cases::load(&args.cases).and_then(|c| known_policies(&args.cases, c, &snapshot));
    let cases = match loaded {
        Ok(c) => c,
        Err(diagnostics) => {
            for d in diagnostics {
                eprintln!("{d}");
            }
            return Ok(ExitCode::from(CANNOT_RUN));
        }
    };
    let results: Vec<CaseResult<'_>> = cases.iter().map(|c| check(&snapshot, c)).collect();
    let mut out = std::io::stdout().lock();
    match args.format {
        TestFormat::Text => {
            for r in &results {
                match &r.failure {
                    None => writeln!(out, "ok   {}", r.case.name)?,
                    Some(why) => writeln!(out, "FAIL {}: {why}", r.case.name)?,
                }
            }
            let failed = results.iter().filter(|r| r.failure.is_some()).count();
            writeln!(out, "{} passed, {failed} failed", results.len() - failed)?;
        }
        TestFormat::Json => {
            let all: Vec<serde_json::Value> = results.iter().map(CaseResult::to_json).collect();
            writeln!(out, "{}", serde_json::to_string_pretty(&all)?)?;
        }
    }
    Ok(if results.iter().all(|r| r.failure.is_none()) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Every `policy:` a case names must exist in the policy file (a typo would
/// otherwise only show as a failing case).
fn known_policies(
    file: &std::path::Path,
    cases: Vec<Case>,
    snapshot: &PolicySnapshot,
) -> Result<Vec<Case>, Vec<Diagnostic>> {
    let origin: Arc<str> = Arc::from(file.display().to_string());
    let unknown: Vec<Diagnostic> = cases
        .iter()
        .filter_map(|c| c.policy.as_ref())
        .filter(|p| !snapshot.policies().iter().any(|k| *k.key == *p.value))
        .map(|p| Diagnostic {
            file: Arc::clone(&origin),
            line: p.line,
            col: p.col,
            message: format!(
                "no policy `{}` in {}",
                p.value.escape_debug(),
                snapshot.source()
            ),
        })
        .collect();
    if unknown.is_empty() {
        Ok(cases)
    } else {
        Err(unknown)
    }
}

/// One case decided and judged.
struct CaseResult<'a> {
    case: &'a Case,
    /// `Err`: the destination could not be asked about.
    answer: Result<Answer, String>,
    outcome: Outcome,
    /// Why the case failed; `None` when it passed.
    failure: Option<String>,
}

fn check<'a>(snapshot: &Arc<PolicySnapshot>, case: &'a Case) -> CaseResult<'a> {
    let question = Question {
        host: &case.host,
        port: case.port,
        binary: case.binary.as_deref(),
        ancestors: &case.ancestors,
        request: case.request.as_ref().map(|r| Request {
            method: r.method.as_deref(),
            path: r.path.as_deref(),
            body: r.body.as_deref().map(str::as_bytes),
            content_type: &r.content_type,
        }),
    };
    let answer = decide(snapshot, &question).map_err(|e| format!("invalid destination: {e}"));
    let outcome = match &answer {
        Ok(a) => a.outcome(),
        Err(e) => Outcome {
            allow: false,
            reason: e.clone(),
        },
    };
    let got = if outcome.allow { "allow" } else { "deny" };
    let policy = answer.as_ref().ok().and_then(Answer::policy);
    let why = details(&outcome, answer.as_ref().ok());
    let failure = if got != case.expect.as_str() {
        let mut all = why;
        all.extend(policy.map(|p| format!("policy: {p}")));
        Some(format!(
            "expected {}, got {got}{}",
            case.expect.as_str(),
            parenthesised(&all)
        ))
    } else {
        match &case.policy {
            Some(want) if policy != Some(want.value.as_str()) => {
                let all: Vec<String> = std::iter::once(got.to_owned()).chain(why).collect();
                Some(format!(
                    "expected policy {}, got {}{}",
                    want.value,
                    policy.unwrap_or("none"),
                    parenthesised(&all)
                ))
            }
            _ => None,
        }
    };
    CaseResult {
        case,
        answer,
        outcome,
        failure,
    }
}

/// `reason: R` and, for a request-level deny, `rule: X`.
fn details(outcome: &Outcome, answer: Option<&Answer>) -> Vec<String> {
    let mut parts = Vec::new();
    if !outcome.reason.is_empty() {
        parts.push(format!("reason: {}", outcome.reason));
    }
    if let Some(rule) = l7(answer).and_then(|l| l.rule.as_deref()) {
        if !outcome.allow {
            parts.push(format!("rule: {rule}"));
        }
    }
    parts
}

/// ` (A; B)`, or nothing when there are no parts.
fn parenthesised(parts: &[String]) -> String {
    if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join("; "))
    }
}

fn l7(answer: Option<&Answer>) -> Option<&super::decide::L7> {
    match &answer?.connection {
        Connection::Allowed(g) => g.l7.as_ref()?.as_ref().ok(),
        Connection::Denied { .. } => None,
    }
}

// === impl CaseResult ===

impl CaseResult<'_> {
    fn to_json(&self) -> serde_json::Value {
        let answer = self.answer.as_ref().ok();
        let endpoint = answer.and_then(|a| match &a.connection {
            Connection::Allowed(g) => Some(g.endpoint.clone()),
            Connection::Denied { .. } => None,
        });
        json!({
            "name": self.case.name,
            "passed": self.failure.is_none(),
            "expect": self.case.expect.as_str(),
            "decision": if self.outcome.allow { "allow" } else { "deny" },
            "reason": self.outcome.reason,
            "policy": answer.and_then(Answer::policy),
            "expected_policy": self.case.policy.as_ref().map(|p| &p.value),
            "endpoint": endpoint,
            "l7": l7(answer).map(|l| json!({
                "verdict": l.verdict,
                "reason": l.reason,
                "rule": l.rule,
            })),
            "failure": self.failure,
        })
    }
}
