//! `network_middlewares`: parsed and shape-validated here. Whether each
//! `middleware` names a registered service or a built-in stage, and whether
//! that implementation accepts its `config`, is checked by the proxy when the
//! policy loads (the loader does not know the registrations).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::dto::MiddlewareDto;
use crate::error::Ctx;
use crate::host::parse_host;
use crate::location::{join, join_idx};
use crate::model::{HostPattern, Middleware};

const MAX_MIDDLEWARES: usize = 10;
const MAX_SELECTOR_PATTERNS: usize = 32;

fn selector(ctx: &mut Ctx, path: &str, list: &[String]) -> Vec<HostPattern> {
    let mut out = Vec::with_capacity(list.len());
    for (i, raw) in list.iter().enumerate() {
        let lower = raw.to_ascii_lowercase();
        let h = lower.strip_suffix('.').unwrap_or(&lower);
        if h.is_empty() {
            ctx.err(
                &join_idx(path, i),
                "selector host pattern must not be empty",
            );
            continue;
        }
        match parse_host(h) {
            Ok(p) => out.push(p),
            Err(m) => ctx.err(&join_idx(path, i), m),
        }
    }
    out
}

/// Validates every middleware; returns the compiled list (sorted by order).
pub(crate) fn compile_middlewares(
    ctx: &mut Ctx,
    map: &BTreeMap<String, MiddlewareDto>,
) -> Vec<Middleware> {
    let root = "network_middlewares";
    if map.len() > MAX_MIDDLEWARES {
        ctx.err(
            root,
            format!(
                "at most {MAX_MIDDLEWARES} middleware configs are allowed, found {}",
                map.len()
            ),
        );
    }
    let mut orders: HashMap<i64, &str> = HashMap::new();
    let mut out = Vec::with_capacity(map.len());
    for (key, m) in map {
        let path = join(root, key);
        if let Some(other) = orders.insert(m.order, key) {
            ctx.err(
                &join(&path, "order"),
                format!(
                    "middleware `{key}`: order {} is already used by `{other}`",
                    m.order
                ),
            );
        }
        if m.middleware.trim().is_empty() {
            ctx.err(
                &join(&path, "middleware"),
                format!("middleware `{key}`: `middleware` must not be empty"),
            );
        }
        let sel = join(&path, "endpoints");
        if m.endpoints.include.is_empty() {
            ctx.err(
                &sel,
                format!("middleware `{key}`: `endpoints.include` must not be empty"),
            );
        }
        let total = m.endpoints.include.len() + m.endpoints.exclude.len();
        if total > MAX_SELECTOR_PATTERNS {
            ctx.err(&sel, format!("middleware `{key}`: at most {MAX_SELECTOR_PATTERNS} selector patterns are allowed, found {total}"));
        }
        let include = selector(ctx, &join(&sel, "include"), &m.endpoints.include);
        let exclude = selector(ctx, &join(&sel, "exclude"), &m.endpoints.exclude);
        let fail_open = match m.on_error.as_deref() {
            None | Some("fail_closed") => false,
            Some("fail_open") => true,
            Some(o) => {
                ctx.err(&join(&path, "on_error"), format!("middleware `{key}`: unknown on_error `{o}`; expected fail_closed or fail_open"));
                false
            }
        };
        let config = match &m.config {
            None => serde_json::Map::new(),
            Some(v) => match serde_json::to_value(v) {
                Ok(serde_json::Value::Object(map)) => map,
                Ok(serde_json::Value::Null) => serde_json::Map::new(),
                Ok(_) => {
                    ctx.err(
                        &join(&path, "config"),
                        format!("middleware `{key}`: `config` must be a mapping"),
                    );
                    serde_json::Map::new()
                }
                Err(e) => {
                    ctx.err(
                        &join(&path, "config"),
                        format!("middleware `{key}`: `config` cannot be represented as JSON: {e}"),
                    );
                    serde_json::Map::new()
                }
            },
        };
        out.push(Middleware {
            key: Arc::from(key.as_str()),
            name: Arc::from(m.name.as_deref().unwrap_or(key)),
            middleware: Arc::from(m.middleware.as_str()),
            order: m.order,
            fail_open,
            include,
            exclude,
            config: Arc::new(config),
        });
    }
    out.sort_by_key(|m| m.order);
    out
}
