//! Validation of one profile file, every problem located in that file.

use std::collections::HashSet;

use super::dto::{ProfileCredentialDto, ProfileDto};
use crate::endpoint::compile_endpoint;
use crate::error::Ctx;
use crate::glob::unsupported_glob_syntax;
use crate::location::{join, join_idx};
use crate::model::{EndpointId, PolicyId, Protocol, TlsMode};
use crate::placeholder::valid_name;

/// `category` values.
pub(crate) const CATEGORIES: [&str; 7] = [
    "other",
    "inference",
    "agent",
    "source_control",
    "messaging",
    "data",
    "knowledge",
];

/// `auth_style` values (informational: the credential is swapped wherever
/// its placeholder appears, as for any provider credential).
const AUTH_STYLES: [&str; 5] = ["basic", "bearer", "header", "query", "path"];

/// A profile id: what `--profile ID` and `profiles: [ID]` name.
pub(crate) fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// Checks everything a profile file can get wrong on its own.
pub(crate) fn validate(ctx: &mut Ctx, p: &ProfileDto) {
    if !valid_id(&p.id) {
        ctx.err(
            "id",
            format!(
                "invalid profile id `{}`; expected [a-z0-9][a-z0-9_-]* (at most 64 bytes)",
                p.id
            ),
        );
    }
    if let Some(c) = &p.category {
        if !CATEGORIES.contains(&c.as_str()) {
            ctx.err(
                "category",
                format!(
                    "unknown category `{c}`; expected one of {}",
                    CATEGORIES.join(", ")
                ),
            );
        }
    }
    let mut names = HashSet::new();
    let mut env_names = HashSet::new();
    for (i, c) in p.credentials.iter().enumerate() {
        let path = join_idx("credentials", i);
        if !names.insert(c.name.as_str()) {
            ctx.err(
                &join(&path, "name"),
                format!("duplicate credential name `{}`", c.name),
            );
        }
        if c.name.trim().is_empty() {
            ctx.err(&join(&path, "name"), "credential name must not be empty");
        }
        for (j, var) in c.env_vars.iter().enumerate() {
            let vpath = join_idx(&join(&path, "env_vars"), j);
            if !valid_name(var) {
                ctx.err(
                    &vpath,
                    format!("invalid environment variable name `{var}`; expected [A-Za-z0-9_]+"),
                );
            } else if !env_names.insert(var.as_str()) {
                ctx.err(
                    &vpath,
                    format!("environment variable `{var}` is listed twice in this profile"),
                );
            }
        }
        validate_credential(ctx, &path, c);
    }
    if let Some(d) = &p.discovery {
        for (i, name) in d.credentials.iter().enumerate() {
            if !p.credentials.iter().any(|c| &c.name == name) {
                ctx.err(
                    &join_idx("discovery.credentials", i),
                    format!("discovery names `{name}`, which is not a credential of this profile"),
                );
            }
        }
    }
    let credentialed = !p.credentials.is_empty();
    for (i, e) in p.endpoints.iter().enumerate() {
        let path = join_idx("endpoints", i);
        if e.credential_binding.is_some() {
            ctx.err(
                &join(&path, "credential_binding"),
                "`credential_binding` names a provider of one policy and is not allowed in a reusable profile",
            );
        }
        let Some(ep) = compile_endpoint(
            ctx,
            &path,
            e,
            PolicyId(0),
            i,
            EndpointId(u32::try_from(i).unwrap_or(u32::MAX)),
        ) else {
            continue;
        };
        let uninspected = ep.protocol == Protocol::L4 || ep.tls == TlsMode::Skip;
        if credentialed && uninspected && !ep.allow_uninspected_credentials {
            ctx.err(
                &path,
                format!(
                    "endpoint {}:{} of a profile with credentials is {}; give it an l7 `protocol` or set `allow_uninspected_credentials: true`",
                    ep.host.display(),
                    ep.ports.iter().map(u16::to_string).collect::<Vec<_>>().join(","),
                    if ep.tls == TlsMode::Skip { "`tls: skip`" } else { "L4 only" }
                ),
            );
        }
    }
    for (i, b) in p.binaries.iter().enumerate() {
        let at = join_idx("binaries", i);
        let path = match b {
            super::dto::ProfileBinaryDto::Path(_) => at,
            super::dto::ProfileBinaryDto::Entry(_) => join(&at, "path"),
        };
        let bin = b.path();
        if !(bin.starts_with('/') || bin.starts_with('*')) {
            ctx.err(
                &path,
                format!("binary path `{bin}` must be absolute or start with a `*`/`**` glob"),
            );
        } else if let Some(c) = unsupported_glob_syntax(bin) {
            ctx.err(
                &path,
                format!("binary path `{bin}` uses `{c}`; only `*`, `**` and `?` are supported"),
            );
        }
    }
}

fn validate_credential(ctx: &mut Ctx, path: &str, c: &ProfileCredentialDto) {
    match c
        .auth_style
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("") => {}
        Some(style) if !AUTH_STYLES.contains(&style) => ctx.err(
            &join(path, "auth_style"),
            format!(
                "unknown auth_style `{style}`; expected one of {}",
                AUTH_STYLES.join(", ")
            ),
        ),
        Some("bearer" | "header") if c.header_name.as_deref().is_none_or(str::is_empty) => {
            ctx.err(
                &join(path, "auth_style"),
                "auth_style `bearer`/`header` needs `header_name`",
            );
        }
        Some("query") if c.query_param.as_deref().is_none_or(str::is_empty) => {
            ctx.err(
                &join(path, "auth_style"),
                "auth_style `query` needs `query_param`",
            );
        }
        Some("path")
            if c.path_template
                .as_deref()
                .is_none_or(|t| t.matches("{credential}").count() != 1) =>
        {
            ctx.err(
                &join(path, "auth_style"),
                "auth_style `path` needs a `path_template` containing `{credential}` exactly once",
            );
        }
        Some(_) => {}
    }
    // What sluice cannot honour: named, never ignored.
    if let Some(refresh) = &c.refresh {
        let strategy = refresh
            .get("strategy")
            .and_then(serde_yaml::Value::as_str)
            .unwrap_or("(none)");
        ctx.err(
            &join(path, "refresh"),
            format!(
                "credential `{}` asks for refresh strategy `{strategy}`, which sluice does not perform (it never mints or renews credentials); remove `refresh` and bind a secret you rotate",
                c.name
            ),
        );
    }
    if c.token_grant.is_some() {
        ctx.err(
            &join(path, "token_grant"),
            format!(
                "credential `{}` asks for a profile token grant, which sluice does not perform; use a policy `providers` entry with `token_grant` instead",
                c.name
            ),
        );
    }
}
