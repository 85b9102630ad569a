//! The L7 part of an endpoint: `access` / `rules` / `deny_rules` and the
//! cross-rule constraints between them.

use crate::dto::EndpointDto;
use crate::error::Ctx;
use crate::location::{join, join_idx};
use crate::model::{Glob, L7Rule, Protocol};
use crate::rules::{compile_rule, preset_rules, RuleEnv};

/// `access` / `rules` / `deny_rules` → (allow rules, deny rules).
pub(crate) fn compile_rules(
    ctx: &mut Ctx,
    path: &str,
    e: &EndpointDto,
    env: RuleEnv,
) -> (Vec<L7Rule>, Vec<L7Rule>) {
    let at = |f: &str| join(path, f);
    let p = env.protocol;
    let mut allow = Vec::new();
    if e.access.is_some() && e.rules.is_some() {
        ctx.err_key(&at("access"), "`access` and `rules` are mutually exclusive");
    }
    if p == Protocol::L4 {
        for f in ["access", "rules", "deny_rules"] {
            let set = match f {
                "access" => e.access.is_some(),
                "rules" => e.rules.is_some(),
                _ => e.deny_rules.is_some(),
            };
            if set {
                ctx.err_key(&at(f), format!("`{f}` requires an l7 `protocol` (e.g. `protocol: rest`); without one it would never be enforced"));
            }
        }
        return (allow, Vec::new());
    }
    if p == Protocol::Tcp {
        return (allow, Vec::new());
    }
    if let Some(a) = &e.access {
        match preset_rules(&a.to_ascii_lowercase(), p) {
            Ok(r) => allow = r,
            Err(m) => ctx.err(&at("access"), m),
        }
    }
    match &e.rules {
        Some(list) if list.is_empty() => ctx.err(
            &at("rules"),
            "`rules: []` allows nothing; list at least one allow rule",
        ),
        Some(list) => {
            for (i, r) in list.iter().enumerate() {
                if let Some(rule) = compile_rule(
                    ctx,
                    &join(&join_idx(&at("rules"), i), "allow"),
                    &r.allow,
                    env,
                ) {
                    allow.push(rule);
                }
            }
        }
        None if e.access.is_none() => {
            let optional = p == Protocol::Mcp && env.mcp_allow_all;
            if !optional {
                let need = if matches!(
                    p,
                    Protocol::Mcp | Protocol::JsonRpc | Protocol::Redis | Protocol::Postgres
                ) {
                    "`rules`"
                } else {
                    "`access` or `rules`"
                };
                ctx.err(path, format!("`protocol: {}` requires {need}", p.as_str()));
            }
        }
        None => {}
    }
    if p == Protocol::Mcp {
        let broad = allow.iter().any(|r| {
            r.tool.is_none()
                && r.arguments.is_empty()
                && r.method
                    .as_deref()
                    .is_some_and(|m| Glob::new(m, b'.').matches("tools/call"))
        });
        let specific = allow
            .iter()
            .any(|r| r.tool.is_some() || !r.arguments.is_empty());
        if broad && specific {
            ctx.err(&at("rules"), "a rule whose method covers `tools/call` without `tool` cannot be combined with tool-specific rules");
        }
    }
    let mut deny = Vec::new();
    if let Some(list) = &e.deny_rules {
        let has_base = e.access.is_some() || e.rules.as_ref().is_some_and(|r| !r.is_empty());
        if list.is_empty() {
            ctx.err(
                &at("deny_rules"),
                "`deny_rules: []` is empty; remove it or list at least one rule",
            );
        } else if !(has_base || (p == Protocol::Mcp && env.mcp_allow_all)) {
            ctx.err_key(
                &at("deny_rules"),
                "`deny_rules` require a base allow set (`access` or `rules`)",
            );
        }
        for (i, r) in list.iter().enumerate() {
            if let Some(rule) = compile_rule(ctx, &join_idx(&at("deny_rules"), i), r, env) {
                deny.push(rule);
            }
        }
    }
    (allow, deny)
}
