//! The query phase: every client message is framed and, when it carries
//! SQL (`Query`, `Parse`), classified and evaluated before a byte of it is
//! written upstream; the upstream's messages stream back to the client.
//!
//! A denied message is never forwarded. In its place the upstream gets a
//! *stand-in*: a `Query` (or a `Parse` under the client's statement name)
//! whose text is a fresh token, `sluice_denied_<session>_<n>`, that the
//! server rejects with a syntax error. The server then does exactly what it
//! does for any failed statement (aborts the implicit or explicit
//! transaction, skips the rest of an extended-protocol batch until `Sync`,
//! answers `ReadyForQuery`), so the client's view stays in step with the
//! upstream's, pipelined or not; the upstream-to-client side swaps that
//! one `ErrorResponse` (recognized by the token) for sluice's own,
//! SQLSTATE `42501`, `sluice: <reason>`. After a denied `Parse` the rest
//! of the batch (up to `Sync`) is dropped, not forwarded.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use bytes::BytesMut;
use sluice_policy::request::native::{evaluate_sql, SqlStatement};
use sluice_policy::request::ProtocolVerdict;
use sluice_policy::{Endpoint, Enforcement};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::classify::{classify, safe_encoding, Access, Classified};
use super::io::{MsgReader, ReadError};
use super::wire;
use crate::egress::Allowed;
use crate::relay::RelayContext;

/// Most stand-ins awaiting their `ErrorResponse` (older ones are dropped:
/// a stand-in sent while the server was already skipping to `Sync` is
/// never answered).
const MAX_PENDING: usize = 256;
/// Largest upstream `ErrorResponse`/`ParameterStatus` read whole to be
/// inspected; larger ones stream through untouched.
const INSPECT_MAX: usize = 64 * 1024;
/// Longest event summary.
const SUMMARY_MAX: usize = 512;

/// How the session ended.
#[derive(Debug)]
pub(super) enum End {
    ClientClosed,
    Terminated,
    UpstreamClosed,
    /// The client broke the protocol: told FATAL, closed.
    Violation(String),
    /// The upstream reports a setting sluice cannot lex under.
    Unsafe(String),
    /// Nothing moved either way for the idle bound.
    Idle,
    /// A reload no longer allows the session.
    Revoked,
}

/// What both directions share.
pub(super) struct Shared<'a> {
    pub(super) relay: &'a RelayContext,
    pub(super) decision: &'a Allowed,
    pub(super) max_message: usize,
    pub(super) stand_ins: StandIns,
    pub(super) to_upstream: AtomicU64,
    pub(super) to_client: AtomicU64,
}

impl<'a> Shared<'a> {
    pub(super) fn new(relay: &'a RelayContext, decision: &'a Allowed, max_message: usize) -> Self {
        Self {
            relay,
            decision,
            max_message,
            stand_ins: StandIns::new(),
            to_upstream: AtomicU64::new(0),
            to_client: AtomicU64::new(0),
        }
    }

    fn endpoint(&self) -> &Endpoint {
        self.decision.endpoint()
    }

    /// Evaluates and audits one message; `true` when it may be forwarded.
    fn judge(&self, verdict: &ProtocolVerdict) -> bool {
        let audit_mode = self.decision.permit().enforcement == Enforcement::Audit;
        let forward = verdict.allowed || (audit_mode && !verdict.hard);
        if !verdict.allowed || audit_mode {
            self.relay.audit.processor_message(
                self.decision,
                super::name(),
                verdict,
                !verdict.allowed && forward,
            );
        }
        forward
    }

    /// A stand-in token for a denied message.
    fn stand_in(&self, verdict: &ProtocolVerdict) -> String {
        self.stand_ins
            .issue(&format!("sluice: {} [{}]", verdict.reason, verdict.summary))
    }
}

/// Stand-in tokens sent upstream, each with the `ErrorResponse` the client
/// gets in place of the upstream's.
pub(super) struct StandIns {
    /// Random per session: tokens cannot be guessed or collide.
    tag: u64,
    serial: AtomicU64,
    pending: Mutex<VecDeque<(String, Vec<u8>)>>,
}

impl StandIns {
    pub(super) fn new() -> Self {
        Self {
            tag: session_tag(),
            serial: AtomicU64::new(0),
            pending: Mutex::new(VecDeque::new()),
        }
    }

    /// A fresh token whose error the client will see as `42501` `text`.
    pub(super) fn issue(&self, text: &str) -> String {
        let n = self.serial.fetch_add(1, Ordering::Relaxed);
        let token = format!("sluice_denied_{:016x}_{n}", self.tag);
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if pending.len() >= MAX_PENDING {
            pending.pop_front();
        }
        pending.push_back((token.clone(), wire::error_response(false, "42501", text)));
        token
    }

    /// The replacement for an upstream `ErrorResponse` body whose message
    /// names a pending token (consumed), if it does.
    pub(super) fn replacement(&self, body: &[u8]) -> Option<Vec<u8>> {
        let (_, text) = wire::error_fields(body);
        let text = text?;
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let at = pending
            .iter()
            .position(|(token, _)| contains(text, token.as_bytes()))?;
        pending.remove(at).map(|(_, reply)| reply)
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// 64 random-enough bits from the standard library's per-process keyed hasher.
fn session_tag() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.finish()
}

/// The verdict for a classified query string under `endpoint`: the first
/// denied access decides; otherwise allowed with every access summarized.
pub(super) fn evaluate(endpoint: &Endpoint, c: &Classified) -> ProtocolVerdict {
    if let Some(why) = &c.refusal {
        return ProtocolVerdict::hard_deny(why.clone(), format!("statements={}", c.statements));
    }
    let mut summaries = Vec::new();
    for access in &c.accesses {
        let tables: Vec<&str> = access.tables.iter().map(String::as_str).collect();
        let stmt = SqlStatement {
            kind: access.kind,
            tables: &tables,
        };
        if let Some(v) = opaque_denial(endpoint, access) {
            return v;
        }
        let v = evaluate_sql(endpoint, &stmt);
        if !v.allowed {
            return v;
        }
        summaries.push(v.summary);
    }
    let mut summary = if summaries.is_empty() {
        "statement=transaction".to_owned()
    } else {
        summaries.join("; ")
    };
    if summary.len() > SUMMARY_MAX {
        let mut cut = SUMMARY_MAX;
        while !summary.is_char_boundary(cut) {
            cut -= 1;
        }
        summary.truncate(cut);
    }
    ProtocolVerdict::allow(summary)
}

/// An access whose tables cannot all be listed is denied when a deny rule
/// for its kind names tables: it might touch one of them.
fn opaque_denial(endpoint: &Endpoint, access: &Access) -> Option<ProtocolVerdict> {
    if !access.opaque {
        return None;
    }
    let kind = access.kind.as_str();
    let rule = endpoint.deny_rules.iter().find(|r| {
        r.table.is_some()
            && r.statement
                .as_deref()
                .is_some_and(|k| k == "*" || k == kind)
    })?;
    let table = rule.table.as_ref().map_or("", |t| &*t.pattern);
    Some(ProtocolVerdict::deny(
        format!("{kind} touches objects sluice cannot list while a deny rule names tables"),
        Some(format!(
            "deny {} table {table}",
            rule.statement.as_deref().unwrap_or("*")
        )),
        format!("statement={kind} tables=unknown"),
    ))
}

/// Whether the upstream's `ParameterStatus` leaves statement text lexed
/// the way sluice lexes it.
pub(super) fn parameter_ok(body: &[u8]) -> Result<(), String> {
    let Some((name, rest)) = wire::cstr(body) else {
        return Ok(());
    };
    let value = wire::cstr(rest).map_or(&b""[..], |(v, _)| v);
    let value = String::from_utf8_lossy(value).to_ascii_lowercase();
    match name {
        b"standard_conforming_strings" if value != "on" => Err(format!(
            "upstream reports standard_conforming_strings={value}"
        )),
        b"client_encoding" if !safe_encoding(&value) => {
            Err(format!("upstream reports client_encoding={value}"))
        }
        _ => Ok(()),
    }
}

/// Client to upstream: frame, judge, forward or stand in.
pub(super) async fn client_to_upstream<R, W>(
    shared: &Shared<'_>,
    rd: &mut MsgReader<R>,
    wr: &mut W,
) -> End
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut discarding = false;
    let mut copy_seen = false;
    let mut out: Vec<u8> = Vec::with_capacity(16 * 1024);
    loop {
        if !out.is_empty()
            && !matches!(
                wire::frame(&rd.buf, shared.max_message),
                wire::Parse::Frame(..)
            )
        {
            // Nothing more is queued: write what this batch produced.
            if wr.write_all(&out).await.is_err() {
                return End::UpstreamClosed;
            }
            shared
                .to_upstream
                .fetch_add(out.len() as u64, Ordering::Relaxed);
            out.clear();
        }
        let msg = match rd.message(shared.max_message).await {
            Ok(Some(m)) => m,
            Ok(None) | Err(ReadError::Io(_)) => return End::ClientClosed,
            Err(e) => return End::Violation(e.to_string()),
        };
        if discarding && !matches!(msg.tag, b'S' | b'X') {
            continue;
        }
        match msg.tag {
            b'Q' => {
                let Ok(text) = wire::query_text(msg.body()) else {
                    return End::Violation("malformed query message".into());
                };
                let c = classify(text);
                let verdict = evaluate(shared.endpoint(), &c);
                if shared.judge(&verdict) {
                    copy_seen |= c.copy_in;
                    out.extend_from_slice(&msg.raw);
                } else {
                    let token = shared.stand_in(&verdict);
                    out.extend(wire::query_message(token.as_bytes()));
                }
            }
            b'P' => {
                let Ok(parse) = wire::parse_body(msg.body()) else {
                    return End::Violation("malformed parse message".into());
                };
                let c = classify(parse.query);
                let verdict = evaluate(shared.endpoint(), &c);
                if shared.judge(&verdict) {
                    copy_seen |= c.copy_in;
                    out.extend_from_slice(&msg.raw);
                } else {
                    let token = shared.stand_in(&verdict);
                    out.extend(wire::parse_message(parse.name, token.as_bytes()));
                    discarding = true;
                }
            }
            b'S' => {
                discarding = false;
                out.extend_from_slice(&msg.raw);
            }
            b'B' | b'D' | b'E' | b'C' | b'H' => out.extend_from_slice(&msg.raw),
            // The copy sub-protocol, once an allowed COPY FROM STDIN went
            // upstream (a server not in copy mode ignores these anyway).
            b'd' | b'c' | b'f' => {
                if copy_seen {
                    out.extend_from_slice(&msg.raw);
                }
            }
            b'F' => {
                let verdict = ProtocolVerdict::hard_deny(
                    "function calls over the fast-path protocol are not allowed".into(),
                    "message=FunctionCall".into(),
                );
                shared.judge(&verdict);
                let token = shared.stand_in(&verdict);
                out.extend(wire::query_message(token.as_bytes()));
            }
            b'X' => {
                out.extend_from_slice(&msg.raw);
                let _ = wr.write_all(&out).await;
                return End::Terminated;
            }
            other => {
                return End::Violation(format!(
                    "unexpected message type 0x{other:02x} from the client"
                ))
            }
        }
    }
}

/// Upstream to client: bytes stream through; `ErrorResponse`s are checked
/// for a stand-in token and `ParameterStatus` for settings that change
/// lexing.
pub(super) async fn upstream_to_client<R, W>(
    shared: &Shared<'_>,
    rd: &mut R,
    mut buf: BytesMut,
    wr: &mut W,
) -> End
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    // Bytes of a streamed-through frame still to copy.
    let mut remaining = 0usize;
    let mut out: Vec<u8> = Vec::with_capacity(64 * 1024);
    loop {
        let mut end = None;
        loop {
            if remaining > 0 {
                let n = remaining.min(buf.len());
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&buf.split_to(n));
                remaining -= n;
                continue;
            }
            if buf.len() < 5 {
                break;
            }
            let tag = buf[0];
            let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
            if len < 4 {
                end = Some(End::UpstreamClosed);
                break;
            }
            let total = len + 1;
            if matches!(tag, b'E' | b'S') && total <= INSPECT_MAX {
                if buf.len() < total {
                    break;
                }
                let frame = buf.split_to(total);
                if tag == b'E' {
                    match shared.stand_ins.replacement(&frame[5..]) {
                        Some(reply) => out.extend_from_slice(&reply),
                        None => out.extend_from_slice(&frame),
                    }
                } else if let Err(why) = parameter_ok(&frame[5..]) {
                    end = Some(End::Unsafe(why));
                    break;
                } else {
                    out.extend_from_slice(&frame);
                }
            } else {
                let n = total.min(buf.len());
                out.extend_from_slice(&buf.split_to(n));
                remaining = total - n;
            }
        }
        if !out.is_empty() {
            if wr.write_all(&out).await.is_err() {
                return End::ClientClosed;
            }
            shared
                .to_client
                .fetch_add(out.len() as u64, Ordering::Relaxed);
            out.clear();
        }
        if let Some(end) = end {
            return end;
        }
        if buf.capacity() - buf.len() < 16 * 1024 {
            buf.reserve(64 * 1024);
        }
        match rd.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return End::UpstreamClosed,
            Ok(_) => {}
        }
    }
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
