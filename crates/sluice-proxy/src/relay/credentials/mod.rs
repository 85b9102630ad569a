//! Credential injection: the sandbox only ever sends placeholders
//! (`sluice:resolve:env:NAME`); the relay swaps in the real secret right
//! before the upstream write, only where the secret's provider is bound.

mod body;
mod inject;
mod prepare;
mod resign;
mod sigv4;
pub(crate) mod token_grant;

/// Resolve placeholders in a WebSocket text message (same binding rules as
/// HTTP slots); `Err` carries a log-safe reason.
pub(crate) fn resolve_message(
    snapshot: &sluice_policy::PolicySnapshot,
    target: &crate::egress::Target,
    path: &str,
    text: &str,
) -> Result<String, String> {
    let mut injected = inject::Injected::default();
    let out = inject::resolve_text(snapshot, target, path, text, &mut injected, str::to_owned)
        .map_err(|e| format!("credential refused in WebSocket message: {e:?}"))?;
    if sluice_policy::placeholder::contains_marker(out.as_bytes()) {
        return Err("unresolved credential placeholder in WebSocket message".into());
    }
    Ok(out)
}
pub(crate) use prepare::{prepare, Outbound};

/// A credential field of a native protocol (a Redis `AUTH` password, a
/// Postgres password): `Ok(None)` when `value` holds no placeholder (sent
/// as it is), `Ok(Some(secret))` when the whole value is one placeholder
/// whose provider is bound to `target`. Anything else (a placeholder inside
/// other text, an unknown credential, one bound elsewhere) is `Err` with a
/// log-safe reason: refuse, never forward.
pub(crate) fn resolve_native_credential(
    snapshot: &sluice_policy::PolicySnapshot,
    target: &crate::egress::Target,
    value: &[u8],
) -> Result<Option<String>, String> {
    if !sluice_policy::placeholder::contains_marker(value) {
        return Ok(None);
    }
    let found: Vec<_> = sluice_policy::placeholder::find(value).collect();
    let [(range, name)] = found.as_slice() else {
        return Err("credential field holds several placeholders".into());
    };
    if range.start != 0 || range.end != value.len() {
        return Err("a placeholder must be the whole credential field".into());
    }
    let Some(cred) = snapshot.credential(name) else {
        return Err(format!("unknown credential {name}"));
    };
    if !snapshot.provider_binds(cred.provider, target.host.as_host_ref(), target.port, "/") {
        return Err(format!("credential {name} is not bound to {target}"));
    }
    Ok(Some(cred.value.expose().to_owned()))
}
