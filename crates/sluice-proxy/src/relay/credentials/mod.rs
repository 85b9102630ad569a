//! Credential injection: the sandbox only ever sends placeholders
//! (`sluice:resolve:env:NAME`); the relay swaps in the real secret right
//! before the upstream write, only where the secret's provider is bound.

mod body;
mod inject;
mod prepare;
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
