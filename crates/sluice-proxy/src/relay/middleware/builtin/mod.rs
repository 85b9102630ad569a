//! Built-in stages, named `sluice/...` in a policy's `middleware` field:
//! no service to run.
//!
//! - `regex` (`sluice/regex`): operator patterns, deny or redact;
//! - `secrets` (`sluice/secrets`): credential-shaped strings, deny or redact;
//! - `size` (`sluice/size`): body, header and message limits;
//! - `scan`: the deny/redact engine `regex` and `secrets` share.
//!
//! A built-in answers exactly as a gRPC service would (the chain validates
//! its results the same way), but in process: every evaluation is CPU-only,
//! bounded (linear-time matching with the `regex` crate, and a work budget
//! where finding every match could be quadratic) and computed before the
//! returned future is polled. Config errors are policy load errors: one
//! line, naming the field.

mod regex;
mod scan;
mod secrets;
mod size;

use std::sync::Arc;

use serde_json::{Map, Value};

use super::proto;
use super::stage::{HttpStage, StageError, StageFuture, WsSession, WsStage};

/// The built-in names, for messages.
const NAMES: &str = "sluice/regex, sluice/secrets, sluice/size";

/// Every built-in implementation name.
pub(crate) const BUILTINS: [&str; 3] = [regex::NAME, secrets::NAME, size::NAME];

/// Whether `name` is in the built-in namespace.
pub(crate) fn is_builtin(name: &str) -> bool {
    name.starts_with("sluice/")
}

/// A built-in's implementations: HTTP requests, WebSocket messages (either
/// may be absent, as for a service that binds one operation).
pub(crate) type Stages = (Option<Arc<dyn HttpStage>>, Option<Arc<dyn WsStage>>);

/// The built-in `name` configured with `config`.
///
/// # Errors
/// An unknown built-in or a config it rejects (one line, naming the field).
pub(crate) fn resolve(name: &str, config: &Map<String, Value>) -> Result<Stages, String> {
    match name {
        regex::NAME => {
            let stage = Arc::new(regex::build(config)?);
            Ok((Some(stage.clone()), Some(Arc::new(Ws(stage)))))
        }
        secrets::NAME => {
            let stage = Arc::new(secrets::build(config)?);
            Ok((Some(stage.clone()), Some(Arc::new(Ws(stage)))))
        }
        size::NAME => {
            let stage = Arc::new(size::build(config)?);
            let http: Option<Arc<dyn HttpStage>> = if stage.has_http_limit() {
                Some(stage.clone())
            } else {
                None
            };
            let ws: Option<Arc<dyn WsStage>> = if stage.has_message_limit() {
                Some(Arc::new(Ws(stage)))
            } else {
                None
            };
            Ok((http, ws))
        }
        _ => Err(format!(
            "unknown built-in middleware `{}` (built-ins: {NAMES})",
            name.escape_debug()
        )),
    }
}

// === config ===

/// What a content stage does on a match.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    /// Refuse the request or message.
    Deny,
    /// Replace each match and let it through (deny when that is impossible).
    Redact,
}

/// Most patterns in one list (`patterns`, `allow`).
const MAX_PATTERNS: usize = 64;
/// Longest pattern source, in bytes.
const MAX_PATTERN_LEN: usize = 1024;
/// Largest compiled pattern (the `regex` crate's `size_limit`). Unicode
/// classes are large: `\w{40}` needs 2 MiB, `(?-u:\w){40}` a few KiB.
const MAX_COMPILED_PATTERN: usize = 2 * 1024 * 1024;
/// Longest `replacement`, in bytes (bounds how much a redaction grows a body).
const MAX_REPLACEMENT_LEN: usize = 256;
/// Longest `reason_code` (the contract's limit).
const MAX_REASON_CODE_LEN: usize = 64;

/// A stage's `config` object, read strictly: unknown keys and wrong types
/// are errors that name the key.
struct Config<'a> {
    map: &'a Map<String, Value>,
}

impl<'a> Config<'a> {
    /// Rejects any key outside `known`.
    fn new(map: &'a Map<String, Value>, known: &[&str]) -> Result<Self, String> {
        if let Some(key) = map.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(format!(
                "`{}`: unknown field (expected one of: {})",
                key.escape_debug(),
                known.join(", ")
            ));
        }
        Ok(Self { map })
    }

    fn bool(&self, key: &str, default: bool) -> Result<bool, String> {
        match self.map.get(key) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(format!("`{key}`: must be true or false")),
        }
    }

    fn str(&self, key: &str) -> Result<Option<&'a str>, String> {
        match self.map.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(format!("`{key}`: must be a string")),
        }
    }

    /// A list of strings; `None` when absent.
    fn strings(&self, key: &str) -> Result<Option<Vec<&'a str>>, String> {
        let Some(value) = self.map.get(key) else {
            return Ok(None);
        };
        let Value::Array(items) = value else {
            return Err(format!("`{key}`: must be a list of strings"));
        };
        items
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) => Ok(s.as_str()),
                _ => Err(format!("`{key}[{i}]`: must be a string")),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    /// A positive integer; `None` when absent.
    fn positive(&self, key: &str) -> Result<Option<u64>, String> {
        match self.map.get(key) {
            None => Ok(None),
            Some(v) => match v.as_u64() {
                Some(n) if n > 0 => Ok(Some(n)),
                _ => Err(format!("`{key}`: must be a positive integer")),
            },
        }
    }

    /// `action`: `deny` (default) or `redact`.
    fn action(&self) -> Result<Action, String> {
        match self.str("action")? {
            None | Some("deny") => Ok(Action::Deny),
            Some("redact") => Ok(Action::Redact),
            Some(other) => Err(format!(
                "`action`: must be `deny` or `redact`, not `{}`",
                other.escape_debug()
            )),
        }
    }

    /// `replacement` (default `[REDACTED]`), at most [`MAX_REPLACEMENT_LEN`] bytes.
    fn replacement(&self) -> Result<String, String> {
        let r = self.str("replacement")?.unwrap_or("[REDACTED]");
        if r.len() > MAX_REPLACEMENT_LEN {
            return Err(format!(
                "`replacement`: longer than {MAX_REPLACEMENT_LEN} bytes"
            ));
        }
        Ok(r.to_owned())
    }

    /// `reason_code` (default `default`): `[a-z][a-z0-9_]*`, 1-64 bytes.
    fn reason_code(&self, default: &str) -> Result<String, String> {
        let code = self.str("reason_code")?.unwrap_or(default);
        if !valid_reason_code(code) {
            return Err(format!(
                "`reason_code`: `{}` must match [a-z][a-z0-9_]* and be at most {MAX_REASON_CODE_LEN} bytes",
                code.escape_debug()
            ));
        }
        Ok(code.to_owned())
    }

    /// A list of regular expressions (`key[i]` names a bad one).
    fn patterns(&self, key: &str) -> Result<Option<Vec<::regex::bytes::Regex>>, String> {
        let Some(sources) = self.strings(key)? else {
            return Ok(None);
        };
        if sources.len() > MAX_PATTERNS {
            return Err(format!(
                "`{key}`: {} patterns, at most {MAX_PATTERNS} allowed",
                sources.len()
            ));
        }
        sources
            .iter()
            .enumerate()
            .map(|(i, src)| compile(src).map_err(|e| format!("`{key}[{i}]`: {e}")))
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }
}

/// Whether `code` is a valid `reason_code` (`[a-z][a-z0-9_]*`, 1-64 bytes).
fn valid_reason_code(code: &str) -> bool {
    let mut bytes = code.bytes();
    code.len() <= MAX_REASON_CODE_LEN
        && bytes.next().is_some_and(|b| b.is_ascii_lowercase())
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Compiles one operator pattern with the size limits. A pattern that
/// matches the empty text is refused: it would match everywhere (empty
/// matches are ignored when scanning, so it would silently match nothing).
fn compile(src: &str) -> Result<::regex::bytes::Regex, String> {
    if src.len() > MAX_PATTERN_LEN {
        return Err(format!("longer than {MAX_PATTERN_LEN} bytes"));
    }
    let re = ::regex::bytes::RegexBuilder::new(src)
        .size_limit(MAX_COMPILED_PATTERN)
        .dfa_size_limit(MAX_COMPILED_PATTERN)
        .build()
        .map_err(|e| match e {
            ::regex::Error::CompiledTooBig(limit) => format!(
                "regex too large when compiled (limit {limit} bytes; `(?-u)` makes classes ASCII and smaller)"
            ),
            ::regex::Error::Syntax(msg) => format!("invalid regex: {}", syntax_line(&msg)),
            other => format!("invalid regex: {}", syntax_line(&other.to_string())),
        })?;
    if re.is_match(b"") {
        return Err("matches the empty string".into());
    }
    Ok(re)
}

/// The one-line cause of a `regex` syntax error (its message spans lines:
/// the pattern, a caret, then `error: ...`).
fn syntax_line(msg: &str) -> String {
    msg.lines()
        .find_map(|l| l.trim().strip_prefix("error: "))
        .map_or_else(
            || msg.split_whitespace().collect::<Vec<_>>().join(" "),
            str::to_owned,
        )
}

// === results ===

/// Most findings in one result (the contract's limit).
const MAX_FINDINGS: usize = 32;

/// A computed value as a stage future.
fn ready<'a, T: Send + 'a>(value: Result<T, StageError>) -> StageFuture<'a, T> {
    Box::pin(std::future::ready(value))
}

fn finding(kind: &str, label: String, count: u32) -> proto::Finding {
    proto::Finding {
        r#type: kind.to_owned(),
        label,
        count,
        ..Default::default()
    }
}

/// One finding per label with a non-zero count, at most [`MAX_FINDINGS`]:
/// past that, the rest are summed under the label `other`.
fn findings(kind: &str, counts: &[u32], label: impl Fn(usize) -> String) -> Vec<proto::Finding> {
    let hit: Vec<(usize, u32)> = counts
        .iter()
        .enumerate()
        .filter(|(_, c)| **c > 0)
        .map(|(i, c)| (i, *c))
        .collect();
    if hit.len() <= MAX_FINDINGS {
        return hit
            .into_iter()
            .map(|(i, c)| finding(kind, label(i), c))
            .collect();
    }
    let (kept, rest) = hit.split_at(MAX_FINDINGS - 1);
    let mut out: Vec<_> = kept
        .iter()
        .map(|(i, c)| finding(kind, label(*i), *c))
        .collect();
    let other = rest.iter().fold(0u32, |a, (_, c)| a.saturating_add(*c));
    out.push(finding(kind, "other".into(), other));
    out
}

fn http_allow() -> proto::HttpRequestResult {
    proto::HttpRequestResult {
        decision: proto::Decision::Allow as i32,
        ..Default::default()
    }
}

fn http_deny(
    reason_code: &str,
    reason: String,
    findings: Vec<proto::Finding>,
) -> proto::HttpRequestResult {
    proto::HttpRequestResult {
        decision: proto::Decision::Deny as i32,
        reason,
        reason_code: reason_code.to_owned(),
        findings,
        ..Default::default()
    }
}

fn ws_allow() -> proto::WebSocketMessageResult {
    proto::WebSocketMessageResult {
        decision: proto::Decision::Allow as i32,
        ..Default::default()
    }
}

fn ws_deny(
    reason_code: &str,
    reason: String,
    findings: Vec<proto::Finding>,
) -> proto::WebSocketMessageResult {
    proto::WebSocketMessageResult {
        decision: proto::Decision::Deny as i32,
        reason,
        reason_code: reason_code.to_owned(),
        findings,
        ..Default::default()
    }
}

/// `path` and, when present, `?query`: what `target: true` scans.
fn target_text(target: &proto::HttpRequestTarget) -> String {
    if target.query.is_empty() {
        target.path.clone()
    } else {
        format!("{}?{}", target.path, target.query)
    }
}

// === WebSocket ===

/// What a built-in does with a WebSocket upgrade and its messages.
trait MessageCheck: Send + Sync + 'static {
    /// The largest message it is given.
    fn max_message(&self) -> usize;

    /// `Some` (a DENY decision) to refuse the upgrade; `None` to inspect.
    fn preflight(
        &self,
        preflight: &proto::WebSocketPreflight,
    ) -> Option<proto::WebSocketPreflightDecision>;

    /// The result for one client message (the caller sets `sequence`).
    fn message(
        &self,
        payload: Option<&proto::web_socket_message::Payload>,
    ) -> proto::WebSocketMessageResult;
}

/// A [`MessageCheck`] as a [`WsStage`].
struct Ws<C>(Arc<C>);

impl<C: MessageCheck> WsStage for Ws<C> {
    fn max_payload(&self) -> usize {
        self.0.max_message()
    }

    fn open(
        &self,
        preflight: proto::WebSocketPreflight,
    ) -> StageFuture<
        '_,
        (
            proto::WebSocketPreflightDecision,
            Option<Box<dyn WsSession>>,
        ),
    > {
        let opened = match self.0.preflight(&preflight) {
            Some(deny) => (deny, None),
            None => {
                let session: Box<dyn WsSession> = Box::new(Session {
                    check: Arc::clone(&self.0),
                    last_sequence: 0,
                });
                let inspect = proto::WebSocketPreflightDecision {
                    action: proto::WebSocketPreflightAction::Inspect as i32,
                    ..Default::default()
                };
                (inspect, Some(session))
            }
        };
        ready(Ok(opened))
    }
}

/// One inspected WebSocket session of a built-in.
struct Session<C> {
    check: Arc<C>,
    /// The last sequence seen (0: none yet). Sequences start at 1 and
    /// strictly increase; the contract has services reject anything else.
    last_sequence: u64,
}

impl<C: MessageCheck> WsSession for Session<C> {
    fn start(&mut self, _selected_subprotocol: String) {}

    fn message(
        &mut self,
        message: proto::WebSocketMessage,
    ) -> StageFuture<'_, proto::WebSocketMessageResult> {
        if message.sequence <= self.last_sequence {
            return ready(Err(StageError::Invalid(format!(
                "message sequence {} after {} (sequences start at 1 and strictly increase)",
                message.sequence, self.last_sequence
            ))));
        }
        self.last_sequence = message.sequence;
        let mut result = self.check.message(message.payload.as_ref());
        result.sequence = message.sequence;
        ready(Ok(result))
    }

    fn end(self: Box<Self>, _reason: proto::MiddlewareSessionEndReason) {}
}

#[cfg(test)]
#[path = "builtin_tests.rs"]
mod tests;
