//! Built-in stages, named `sluice/...` in a policy's `middleware` field:
//! no service to run.

use std::sync::Arc;

use super::stage::{HttpStage, WsStage};

/// Whether `name` is in the built-in namespace.
pub(crate) fn is_builtin(name: &str) -> bool {
    name.starts_with("sluice/")
}

/// The built-in `name` configured with `config`.
///
/// # Errors
/// An unknown built-in or a config it rejects (one line, naming the field).
pub(crate) fn resolve(
    name: &str,
    config: &serde_json::Map<String, serde_json::Value>,
) -> Result<(Option<Arc<dyn HttpStage>>, Option<Arc<dyn WsStage>>), String> {
    let _ = config;
    Err(format!("unknown built-in middleware `{name}`"))
}
