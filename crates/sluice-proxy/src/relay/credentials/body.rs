//! Opt-in body rewrite (`request_body_credential_rewrite`): JSON, form and
//! `text/*` bodies up to 256 KiB; and the body backstop for everything else.

use std::sync::Arc;

use sluice_policy::{placeholder, PolicySnapshot};

use super::inject::{resolve_text, CredentialError, Injected};
use crate::egress::Target;

/// Largest body buffered for rewriting or checking.
pub(crate) const BODY_LIMIT: usize = 256 * 1024;

/// The media type of a request (lowercase, parameters dropped).
pub(crate) fn media_type(content_type: Option<&[u8]>) -> String {
    let raw = content_type
        .and_then(|v| std::str::from_utf8(v).ok())
        .unwrap_or_default();
    raw.split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// Rewrite placeholders in a body of `media` type.
pub(crate) fn rewrite_body(
    snapshot: &Arc<PolicySnapshot>,
    target: &Target,
    path: &str,
    media: &str,
    body: &[u8],
) -> Result<Option<Vec<u8>>, CredentialError> {
    if !placeholder::contains_marker(body) {
        return Ok(None);
    }
    let text = std::str::from_utf8(body).map_err(|_| CredentialError::Leftover)?;
    let mut injected = Injected::default();
    let out = match media {
        "application/json" => {
            resolve_text(snapshot, target, path, text, &mut injected, json_escape)?
        }
        "application/x-www-form-urlencoded" => {
            rewrite_form(snapshot, target, path, text, &mut injected)?
        }
        m if m.starts_with("text/") => {
            resolve_text(snapshot, target, path, text, &mut injected, |s| {
                s.to_owned()
            })?
        }
        _ => return Err(CredentialError::Leftover),
    };
    if placeholder::contains_marker(out.as_bytes()) {
        return Err(CredentialError::Leftover);
    }
    Ok(Some(out.into_bytes()))
}

fn json_escape(secret: &str) -> String {
    let quoted = serde_json::Value::String(secret.to_owned()).to_string();
    quoted[1..quoted.len() - 1].to_owned()
}

fn rewrite_form(
    snapshot: &Arc<PolicySnapshot>,
    target: &Target,
    path: &str,
    text: &str,
    injected: &mut Injected,
) -> Result<String, CredentialError> {
    let mut parts = Vec::new();
    for part in text.split('&') {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        if !placeholder::contains_marker(v.as_bytes()) {
            parts.push(part.to_owned());
            continue;
        }
        let decoded = form_decode(v);
        let new = resolve_text(snapshot, target, path, &decoded, injected, |s| s.to_owned())?;
        parts.push(format!("{k}={}", form_encode(&new)));
    }
    Ok(parts.join("&"))
}

fn form_decode(v: &str) -> String {
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn form_encode(v: &str) -> String {
    let mut out = String::with_capacity(v.len() * 3);
    for &c in v.as_bytes() {
        match c {
            b' ' => out.push('+'),
            c if c.is_ascii_alphanumeric() || b"-._~*".contains(&c) => out.push(c as char),
            c => out.push_str(&format!("%{c:02X}")),
        }
    }
    out
}
