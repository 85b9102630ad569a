//! Head slots: path segments, query values, header values (including
//! `Basic` credentials after base64 decoding). Nothing here logs a value.

use base64::Engine as _;
use sluice_policy::{placeholder, PolicySnapshot, ProviderId};

use crate::egress::Target;

/// Why a request with placeholders cannot be forwarded.
#[derive(Debug)]
pub(crate) enum CredentialError {
    /// A known credential whose provider is not bound to this host:port/path.
    Mismatch { name: String },
    /// A placeholder naming no configured credential.
    Unknown { name: String },
    /// The secret cannot be placed in this slot (e.g. `/` in a path segment).
    BadSlot,
    /// A reserved marker is still present after rewriting.
    Leftover,
}

/// The rewritten head and which providers supplied credentials.
#[derive(Debug, Default)]
pub(crate) struct Injected {
    pub(crate) providers: Vec<ProviderId>,
}

impl Injected {
    fn note(&mut self, p: ProviderId) {
        if !self.providers.contains(&p) {
            self.providers.push(p);
        }
    }
}

/// Resolve every placeholder in `text` for this request, or refuse.
fn resolve(
    snapshot: &PolicySnapshot,
    target: &Target,
    path: &str,
    text: &[u8],
    injected: &mut Injected,
) -> Result<Option<Vec<u8>>, CredentialError> {
    let mut out: Option<Vec<u8>> = None;
    let mut last = 0usize;
    for (range, name) in placeholder::find(text) {
        let Some(cred) = snapshot.credential(name) else {
            return Err(CredentialError::Unknown {
                name: name.to_owned(),
            });
        };
        if !snapshot.provider_binds(cred.provider, target.host.as_host_ref(), target.port, path) {
            return Err(CredentialError::Mismatch {
                name: name.to_owned(),
            });
        }
        let o = out.get_or_insert_with(|| Vec::with_capacity(text.len() + 64));
        o.extend_from_slice(&text[last..range.start]);
        o.extend_from_slice(cred.value.expose().as_bytes());
        last = range.end;
        injected.note(cred.provider);
    }
    if let Some(o) = out.as_mut() {
        o.extend_from_slice(&text[last..]);
    }
    Ok(out)
}

/// Resolve placeholders in UTF-8 text, escaping each secret with `escape`.
pub(crate) fn resolve_text(
    snapshot: &PolicySnapshot,
    target: &Target,
    path: &str,
    text: &str,
    injected: &mut Injected,
    escape: impl Fn(&str) -> String,
) -> Result<String, CredentialError> {
    let mut out = String::with_capacity(text.len() + 64);
    let mut last = 0usize;
    for (range, name) in placeholder::find(text.as_bytes()) {
        let Some(cred) = snapshot.credential(name) else {
            return Err(CredentialError::Unknown {
                name: name.to_owned(),
            });
        };
        if !snapshot.provider_binds(cred.provider, target.host.as_host_ref(), target.port, path) {
            return Err(CredentialError::Mismatch {
                name: name.to_owned(),
            });
        }
        out.push_str(&text[last..range.start]);
        out.push_str(&escape(cred.value.expose()));
        last = range.end;
        injected.note(cred.provider);
    }
    out.push_str(&text[last..]);
    Ok(out)
}

/// Percent-decode (invalid escapes left as they are: only used to find placeholders).
fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// Percent-encode everything but unreserved characters.
fn percent_encode(v: &[u8]) -> String {
    let mut out = String::with_capacity(v.len() * 3);
    for &c in v {
        if c.is_ascii_alphanumeric() || b"-._~".contains(&c) {
            out.push(c as char);
        } else {
            out.push_str(&format!("%{c:02X}"));
        }
    }
    out
}

/// Rewrite one path or query component that (after decoding) holds placeholders.
fn rewrite_component(
    snapshot: &PolicySnapshot,
    target: &Target,
    path: &str,
    raw: &str,
    slot: &'static str,
    injected: &mut Injected,
) -> Result<Option<String>, CredentialError> {
    if !placeholder::contains_marker(raw.as_bytes()) {
        return Ok(None);
    }
    let decoded = percent_decode(raw);
    let Some(value) = resolve(snapshot, target, path, &decoded, injected)? else {
        return Err(CredentialError::Leftover);
    };
    let unsafe_in_path = value
        .iter()
        .any(|&c| matches!(c, b'/' | b'\\' | b'?' | b'#' | b'\r' | b'\n' | 0))
        || value.windows(2).any(|w| w == b"..");
    if slot == "path" && unsafe_in_path {
        return Err(CredentialError::BadSlot);
    }
    Ok(Some(percent_encode(&value)))
}

/// Header fields as (name, value) pairs.
pub(crate) type Headers = Vec<(String, Vec<u8>)>;

/// The rewritten target (if it changed), header list (if it changed), and
/// which providers supplied values.
pub(crate) type HeadRewrite = (Option<String>, Option<Headers>, Injected);

/// Inject credentials into an outgoing head. `path` is the canonical path
/// (without query) used for binding; `query` the raw query. Returns the new
/// origin-form target and header list, or `None` when nothing changed.
pub(crate) fn inject_head(
    snapshot: &PolicySnapshot,
    target: &Target,
    path: &str,
    query: Option<&str>,
    headers: &[(String, Vec<u8>)],
) -> Result<HeadRewrite, CredentialError> {
    let mut injected = Injected::default();
    // Path segments.
    let mut new_path: Option<String> = None;
    if placeholder::contains_marker(path.as_bytes()) {
        let mut segs = Vec::new();
        for seg in path.split('/') {
            match rewrite_component(snapshot, target, path, seg, "path", &mut injected)? {
                Some(v) => segs.push(v),
                None => segs.push(seg.to_owned()),
            }
        }
        new_path = Some(segs.join("/"));
    }
    // Query values (keys are left alone; a marker in a key is refused below).
    let mut new_query: Option<String> = None;
    if let Some(q) = query.filter(|q| placeholder::contains_marker(q.as_bytes())) {
        let mut parts = Vec::new();
        for part in q.split('&') {
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            match rewrite_component(snapshot, target, path, v, "query", &mut injected)? {
                Some(nv) => parts.push(format!("{k}={nv}")),
                None => parts.push(part.to_owned()),
            }
        }
        new_query = Some(parts.join("&"));
    }
    // Header values.
    let mut new_headers: Option<Vec<(String, Vec<u8>)>> = None;
    for (i, (name, value)) in headers.iter().enumerate() {
        let replaced = header_value(snapshot, target, path, value, &mut injected)?;
        if let Some(v) = replaced {
            let hs = new_headers.get_or_insert_with(|| headers.to_vec());
            hs[i] = (name.clone(), v);
        }
    }
    let final_path = new_path.as_deref().unwrap_or(path);
    let final_query = new_query.as_deref().or(query);
    let origin = match final_query {
        Some(q) => format!("{final_path}?{q}"),
        None => final_path.to_owned(),
    };
    // Backstop: no reserved marker may survive anywhere in the head.
    let hs = new_headers.as_deref().unwrap_or(headers);
    if placeholder::contains_marker(origin.as_bytes())
        || hs.iter().any(|(n, v)| {
            placeholder::contains_marker(n.as_bytes()) || placeholder::contains_marker(v)
        })
    {
        return Err(CredentialError::Leftover);
    }
    let changed_target = (new_path.is_some() || new_query.is_some()).then_some(origin);
    Ok((changed_target, new_headers, injected))
}

fn header_value(
    snapshot: &PolicySnapshot,
    target: &Target,
    path: &str,
    value: &[u8],
    injected: &mut Injected,
) -> Result<Option<Vec<u8>>, CredentialError> {
    if let Some(rest) = value
        .strip_prefix(b"Basic ")
        .or_else(|| value.strip_prefix(b"basic "))
    {
        let engine = base64::engine::general_purpose::STANDARD;
        if let Ok(decoded) = engine.decode(rest.trim_ascii()) {
            if placeholder::contains_marker(&decoded) {
                let Some(new) = resolve(snapshot, target, path, &decoded, injected)? else {
                    return Err(CredentialError::Leftover);
                };
                let mut out = b"Basic ".to_vec();
                out.extend_from_slice(engine.encode(new).as_bytes());
                return Ok(Some(out));
            }
        }
    }
    if !placeholder::contains_marker(value) {
        return Ok(None);
    }
    let Some(new) = resolve(snapshot, target, path, value, injected)? else {
        return Err(CredentialError::Leftover);
    };
    if new.iter().any(|&c| matches!(c, b'\r' | b'\n' | 0)) {
        return Err(CredentialError::BadSlot);
    }
    Ok(Some(new))
}

/// Replace every placeholder in text meant for logs or error bodies with
/// `[CREDENTIAL]` (names of credentials are not secrets, but the rule is
/// simple: nothing placeholder-shaped is echoed).
pub(crate) fn scrub(text: &str) -> String {
    if !placeholder::contains_marker(text.as_bytes()) {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for (range, _) in placeholder::find(text.as_bytes()) {
        out.push_str(&text[last..range.start]);
        out.push_str("[CREDENTIAL]");
        last = range.end;
    }
    out.push_str(&text[last..]);
    if placeholder::contains_marker(out.as_bytes()) {
        // An encoded form `find` does not match: drop the whole text.
        return "[CREDENTIAL]".to_owned();
    }
    out
}
