//! The deny/redact engine of the content built-ins (`sluice/regex`,
//! `sluice/secrets`): a [`Scanner`] finds labelled byte ranges, and
//! [`Content`] turns them into the answer a service would give.
//!
//! Where a match is found decides what `redact` can do:
//! - body: each match is replaced, when the body is UTF-8 text and stays
//!   UTF-8 and within the platform cap afterwards; otherwise the request is
//!   denied (never forwarded half-redacted);
//! - a visible header value: the header is removed (the contract lets a
//!   stage remove visible headers but write only `x-openshell-middleware-*`);
//! - the target (path and query): a stage cannot rewrite it, so the request
//!   is denied;
//! - a WebSocket text message: each match is replaced.
//!
//! A scanner that stops at its work budget (see `regex`) makes the stage
//! deny whatever the action: an incomplete scan is never a redaction.

use std::ops::Range;

use super::super::stage::{HttpStage, StageFuture, PLATFORM_MAX_PAYLOAD};
use super::{
    findings, http_allow, http_deny, proto, ready, target_text, ws_allow, ws_deny, Action,
    MessageCheck,
};

/// One match: the bytes it covers and the index of its label.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Hit {
    pub(super) range: Range<usize>,
    pub(super) label: usize,
}

/// Finds matches in a text. Every hit is non-empty and inside the text.
pub(super) trait Scanner: Send + Sync {
    /// How many labels there are (hits carry an index below this).
    fn labels(&self) -> usize;

    /// The finding label of `index` (never matched content).
    fn label(&self, index: usize) -> String;

    /// Appends the matches in `text` to `hits`, spending at most `budget`
    /// bytes of search beyond what is always linear (see `regex`); `false`
    /// when it stopped early (some matches may be missing).
    fn scan(&self, text: &[u8], hits: &mut Vec<Hit>, budget: &mut usize) -> bool;
}

/// A configured content stage.
pub(super) struct Content {
    /// The built-in's name (`sluice/regex`), for `reason`.
    pub(super) name: &'static str,
    /// The findings' `type`.
    pub(super) finding_type: &'static str,
    pub(super) scanner: Box<dyn Scanner>,
    pub(super) action: Action,
    pub(super) replacement: String,
    pub(super) reason_code: String,
    /// Also scan visible header values.
    pub(super) headers: bool,
    /// Also scan the target (path and query).
    pub(super) target: bool,
}

/// Search bytes a scanner may spend on one request or message beyond its
/// linear first pass (about 0.3 s of matching at worst, release build).
const SEARCH_BUDGET: usize = 128 * 1024 * 1024;

/// Match counts per label, where matches were found, and the work left, for
/// one request or message.
struct Tally {
    counts: Vec<u32>,
    places: Vec<&'static str>,
    /// What is left of [`SEARCH_BUDGET`].
    budget: usize,
    /// A scan stopped at the budget: deny, whatever the action.
    incomplete: bool,
}

impl Tally {
    fn new(labels: usize) -> Self {
        Self {
            counts: vec![0; labels],
            places: Vec::new(),
            budget: SEARCH_BUDGET,
            incomplete: false,
        }
    }

    /// Counts `hits`; notes `place` when there are any.
    fn add(&mut self, hits: &[Hit], place: &'static str) {
        for h in hits {
            if let Some(c) = self.counts.get_mut(h.label) {
                *c = c.saturating_add(1);
            }
        }
        if !hits.is_empty() && !self.places.contains(&place) {
            self.places.push(place);
        }
    }

    fn any(&self) -> bool {
        !self.places.is_empty() || self.incomplete
    }
}

impl Content {
    /// The matches in `text`; notes in `tally` a scan cut short.
    fn hits(&self, text: &[u8], tally: &mut Tally) -> Vec<Hit> {
        let mut hits = Vec::new();
        if !self.scanner.scan(text, &mut hits, &mut tally.budget) {
            tally.incomplete = true;
        }
        hits
    }

    fn findings(&self, tally: &Tally) -> Vec<proto::Finding> {
        findings(self.finding_type, &tally.counts, |i| self.scanner.label(i))
    }

    fn reason(&self, tally: &Tally, why: &str) -> String {
        let mut reason = format!("{}: match in {}", self.name, tally.places.join(", "));
        if tally.incomplete {
            reason.push_str(" (scanning stopped at its work budget)");
        }
        reason + why
    }

    /// The answer for one buffered request.
    pub(super) fn evaluate_http(
        &self,
        eval: &proto::HttpRequestEvaluation,
    ) -> proto::HttpRequestResult {
        let mut tally = Tally::new(self.scanner.labels());
        let mut target_hit = false;
        if self.target {
            if let Some(target) = &eval.target {
                let hits = self.hits(target_text(target).as_bytes(), &mut tally);
                tally.add(&hits, "target");
                target_hit = !hits.is_empty();
            }
        }
        let mut removed: Vec<String> = Vec::new();
        if self.headers {
            for header in &eval.headers {
                let hits = self.hits(header.value.as_bytes(), &mut tally);
                tally.add(&hits, "headers");
                if !hits.is_empty() && !removed.contains(&header.name) {
                    removed.push(header.name.clone());
                }
            }
        }
        let body_hits = self.hits(&eval.body, &mut tally);
        tally.add(&body_hits, "body");

        if !tally.any() {
            return http_allow();
        }
        let findings = self.findings(&tally);
        let deny = |why: &str| {
            http_deny(
                &self.reason_code,
                self.reason(&tally, why),
                findings.clone(),
            )
        };
        if self.action == Action::Deny || tally.incomplete {
            return deny("");
        }
        if target_hit {
            return deny(" (the target cannot be rewritten)");
        }
        let mut result = http_allow();
        if !body_hits.is_empty() {
            let Some(body) = redact(&eval.body, body_hits, &self.replacement) else {
                return deny(" (the body is not UTF-8 text, would not stay UTF-8, or would exceed the platform cap)");
            };
            result.body = body;
            result.has_body = true;
        }
        result.header_mutations = removed
            .into_iter()
            .map(|name| proto::HeaderMutation {
                operation: Some(proto::header_mutation::Operation::Remove(
                    proto::RemoveHeader { name },
                )),
            })
            .collect();
        result.reason = format!(
            "{}: redacted match in {}",
            self.name,
            tally.places.join(", ")
        );
        result.findings = findings;
        result
    }

    /// The answer for one WebSocket message (binary passes: the contract
    /// gives stages text only).
    fn evaluate_message(
        &self,
        payload: Option<&proto::web_socket_message::Payload>,
    ) -> proto::WebSocketMessageResult {
        let Some(proto::web_socket_message::Payload::Text(text)) = payload else {
            return ws_allow();
        };
        let mut tally = Tally::new(self.scanner.labels());
        let hits = self.hits(text.as_bytes(), &mut tally);
        tally.add(&hits, "message");
        if !tally.any() {
            return ws_allow();
        }
        let findings = self.findings(&tally);
        let deny = |why: &str| {
            ws_deny(
                &self.reason_code,
                self.reason(&tally, why),
                findings.clone(),
            )
        };
        if self.action == Action::Deny || tally.incomplete {
            return deny("");
        }
        let redacted = redact(text.as_bytes(), hits, &self.replacement)
            .and_then(|b| String::from_utf8(b).ok());
        let Some(redacted) = redacted else {
            return deny(" (would not stay UTF-8, or would exceed the platform cap)");
        };
        let mut result = ws_allow();
        result.replacement = Some(proto::web_socket_message_result::Replacement::Text(
            redacted,
        ));
        result.reason = format!("{}: redacted match in message", self.name);
        result.findings = findings;
        result
    }
}

/// `text` with every hit replaced by `replacement` (overlapping hits,
/// from different patterns, are merged first; adjacent ones are not). `None` when `text` is not UTF-8, when
/// the result would not be (a pattern that matched part of a character),
/// or when it would exceed [`PLATFORM_MAX_PAYLOAD`].
pub(super) fn redact(text: &[u8], mut hits: Vec<Hit>, replacement: &str) -> Option<Vec<u8>> {
    std::str::from_utf8(text).ok()?;
    hits.sort_by_key(|h| (h.range.start, h.range.end));
    let mut merged: Vec<Range<usize>> = Vec::new();
    for h in hits {
        let r = h.range.start.min(text.len())..h.range.end.min(text.len());
        match merged.last_mut() {
            Some(last) if r.start < last.end => last.end = last.end.max(r.end),
            _ => merged.push(r),
        }
    }
    let removed: usize = merged.iter().map(|r| r.end - r.start).sum();
    let size = (text.len() - removed).checked_add(merged.len().checked_mul(replacement.len())?)?;
    if size > PLATFORM_MAX_PAYLOAD {
        return None;
    }
    let mut out = Vec::with_capacity(size);
    let mut at = 0;
    for r in merged {
        out.extend_from_slice(&text[at..r.start]);
        out.extend_from_slice(replacement.as_bytes());
        at = r.end;
    }
    out.extend_from_slice(&text[at..]);
    std::str::from_utf8(&out).ok()?;
    Some(out)
}

// === impl HttpStage / MessageCheck ===

impl HttpStage for Content {
    fn max_payload(&self) -> usize {
        PLATFORM_MAX_PAYLOAD
    }

    fn evaluate(
        &self,
        eval: proto::HttpRequestEvaluation,
    ) -> StageFuture<'_, proto::HttpRequestResult> {
        ready(Ok(self.evaluate_http(&eval)))
    }
}

impl MessageCheck for Content {
    fn max_message(&self) -> usize {
        PLATFORM_MAX_PAYLOAD
    }

    /// With `target: true`, an upgrade whose path matches is refused
    /// (a target cannot be redacted).
    fn preflight(
        &self,
        preflight: &proto::WebSocketPreflight,
    ) -> Option<proto::WebSocketPreflightDecision> {
        if !self.target {
            return None;
        }
        let mut tally = Tally::new(self.scanner.labels());
        let hits = self.hits(
            target_text(preflight.target.as_ref()?).as_bytes(),
            &mut tally,
        );
        tally.add(&hits, "target");
        if !tally.any() {
            return None;
        }
        Some(proto::WebSocketPreflightDecision {
            action: proto::WebSocketPreflightAction::Deny as i32,
            reason: self.reason(&tally, ""),
            reason_code: self.reason_code.clone(),
            findings: self.findings(&tally),
            ..Default::default()
        })
    }

    fn message(
        &self,
        payload: Option<&proto::web_socket_message::Payload>,
    ) -> proto::WebSocketMessageResult {
        self.evaluate_message(payload)
    }
}
