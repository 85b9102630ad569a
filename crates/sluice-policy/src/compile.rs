//! Top-level loading: YAML → DTOs → validation → [`PolicySnapshot`].

use std::sync::Arc;

use crate::credentials::check_signing_providers;
use crate::dto::PolicyFile;
use crate::endpoint::compile_endpoint;
use crate::error::{Ctx, LoadError, Loaded};
use crate::glob::unsupported_glob_syntax;
use crate::inference::compile_inference;
use crate::location::{join, join_idx, yaml_error, LocationIndex};
use crate::middleware::compile_middlewares;
use crate::model::{BinaryMatcher, EndpointId, Glob, NetworkPolicy, PolicyId};
use crate::overlap::check_ambiguity;
use crate::provider::compile_providers;
use crate::secret::{Recording, SecretSource};
use crate::snapshot::PolicySnapshot;

const STATIC_SECTIONS: [&str; 3] = ["filesystem_policy", "landlock", "process"];
const EXTENSION_SECTIONS: [&str; 1] = ["runtime"];

/// Parses, validates and compiles `src`. `origin` names the file in messages.
pub(crate) fn load(
    src: &str,
    origin: &str,
    generation: u64,
    secrets: &dyn SecretSource,
    profiles: &crate::profile::ProfileOptions,
) -> Result<Loaded, LoadError> {
    let file: Arc<str> = Arc::from(origin);
    let mut dto: PolicyFile = match serde_yaml::from_str(src) {
        Ok(d) => d,
        Err(e) => {
            return Err(LoadError {
                diagnostics: vec![yaml_error(&file, &e)],
            });
        }
    };
    let mut ctx = Ctx::new(Arc::clone(&file), LocationIndex::build(src));
    let recording = Recording::new(secrets);
    let base = profiles
        .policy_dir
        .as_deref()
        .or_else(|| std::path::Path::new(origin).parent());
    let attached = crate::profile::compose(&mut ctx, &mut dto, base, profiles, &recording);
    let snapshot = compile(&mut ctx, &dto, generation, &recording).with_profiles(attached);
    if ctx.errors.is_empty() {
        let requirements = crate::capability::requirements(&ctx, &snapshot);
        let snapshot = snapshot.with_requirements(requirements);
        let mut notices = ctx.notices;
        notices.sort_by_key(|n| (n.line, n.col));
        Ok(Loaded {
            snapshot,
            notices,
            secret_sources: recording.into_sources(),
        })
    } else {
        let mut diagnostics = ctx.errors;
        // The policy's own problems first, then each other file's.
        diagnostics.sort_by(|a, b| {
            (a.file != file, &a.file, a.line, a.col).cmp(&(b.file != file, &b.file, b.line, b.col))
        });
        diagnostics.dedup();
        Err(LoadError { diagnostics })
    }
}

fn compile(
    ctx: &mut Ctx,
    dto: &PolicyFile,
    generation: u64,
    secrets: &dyn SecretSource,
) -> PolicySnapshot {
    match dto.version {
        None => ctx.err("", "missing `version`; expected `version: 1`"),
        Some(1) => {}
        Some(v) => ctx.err("version", format!("unsupported version {v}; expected 1")),
    }
    let statics = [&dto.filesystem_policy, &dto.landlock, &dto.process];
    for (name, value) in STATIC_SECTIONS.iter().zip(statics) {
        if value.is_some() {
            ctx.info_key(
                name,
                format!("static section `{name}` is accepted and ignored by sluice"),
            );
        }
    }
    let extensions = [&dto.runtime];
    for (name, value) in EXTENSION_SECTIONS.iter().zip(extensions) {
        if value.is_some() {
            ctx.err_key(name, format!("`{name}` is not supported by this build yet"));
        }
    }

    let mut policies = Vec::with_capacity(dto.network_policies.len());
    let mut endpoints = Vec::new();
    let mut names = Vec::new();
    let mut next_endpoint = 0u32;
    for (pid, (key, p)) in dto.network_policies.iter().enumerate() {
        let path = join("network_policies", key);
        let id = PolicyId(u32::try_from(pid).unwrap_or(u32::MAX));
        if key.is_empty() {
            ctx.err_key(&path, "policy key must not be empty");
        }
        if key.starts_with("_provider_") && !ctx.overlays.iter().any(|o| o.prefix == path) {
            ctx.err_key(
                &path,
                format!("policy key `{key}` uses the reserved `_provider_` prefix"),
            );
        }
        let mut ids = Vec::with_capacity(p.endpoints.len());
        for (i, e) in p.endpoints.iter().enumerate() {
            let epath = join_idx(&join(&path, "endpoints"), i);
            let eid = EndpointId(next_endpoint);
            next_endpoint = next_endpoint.saturating_add(1);
            if let Some(ep) = compile_endpoint(ctx, &epath, e, id, i, eid) {
                endpoints.push(ep);
                names.push(epath);
            }
            ids.push(eid);
        }
        if p.endpoints.is_empty() {
            ctx.warn(
                &path,
                format!("policy `{key}` has no endpoints and never matches"),
            );
        }
        let mut binaries = Vec::with_capacity(p.binaries.len());
        for (i, b) in p.binaries.iter().enumerate() {
            let bpath = join(&join_idx(&join(&path, "binaries"), i), "path");
            if b.path.is_empty() {
                ctx.err(&bpath, "binary path must not be empty");
            } else if !(b.path.starts_with('/') || b.path.starts_with('*')) {
                ctx.err(
                    &bpath,
                    format!(
                        "binary path `{}` must be absolute or start with a `*`/`**` glob",
                        b.path
                    ),
                );
            } else if let Some(c) = unsupported_glob_syntax(&b.path) {
                ctx.err(
                    &bpath,
                    format!(
                        "binary path `{}` uses `{c}`; only `*`, `**` and `?` are supported",
                        b.path
                    ),
                );
            } else {
                binaries.push(BinaryMatcher {
                    path: Glob::new(&b.path, b'/'),
                });
            }
        }
        if p.binaries.is_empty() {
            ctx.warn(
                &path,
                format!("policy `{key}` has no binaries and never matches"),
            );
        }
        policies.push(NetworkPolicy {
            id,
            key: Arc::from(key.as_str()),
            name: Arc::from(p.name.as_deref().unwrap_or(key)),
            endpoints: ids.into(),
            binaries: binaries.into(),
        });
    }
    if ctx.errors.is_empty() {
        check_ambiguity(ctx, &endpoints, &names);
    }
    let middlewares = compile_middlewares(ctx, &dto.network_middlewares);
    check_middleware_coverage(ctx, &middlewares, &endpoints, &names);
    let providers = match &dto.providers {
        Some(p) => compile_providers(ctx, p, secrets, &endpoints, &names),
        None => Vec::new(),
    };
    check_signing_providers(
        ctx,
        &endpoints,
        &names,
        dto.providers.as_ref().map(|_| providers.as_slice()),
    );
    let inference = dto
        .inference
        .as_ref()
        .map(|i| compile_inference(ctx, i, secrets))
        .unwrap_or_default();
    PolicySnapshot::new(
        generation,
        Arc::clone(&ctx.file),
        policies,
        endpoints,
        middlewares,
    )
    .with_providers(providers)
    .with_inference(inference)
}

/// A `fail_closed` middleware must be able to see every request it selects:
/// a selector that may match a `tls: skip` endpoint (whose bytes are never
/// read) is an error.
fn check_middleware_coverage(
    ctx: &mut Ctx,
    middlewares: &[crate::model::Middleware],
    endpoints: &[crate::model::Endpoint],
    names: &[String],
) {
    for m in middlewares.iter().filter(|m| !m.fail_open) {
        for e in endpoints
            .iter()
            .filter(|e| e.tls == crate::model::TlsMode::Skip)
        {
            if m.include.iter().any(|p| p.overlaps(&e.host))
                // Only an exclusion of exactly that host pattern takes it out.
                && !m.exclude.iter().any(|p| p == &e.host)
            {
                let endpoint = names
                    .get(e.id.0 as usize)
                    .map_or_else(|| e.host.display(), Clone::clone);
                ctx.err_key(
                    &format!("network_middlewares.{}", m.key),
                    format!(
                        "middleware `{}` (fail_closed) may select {endpoint}, which has `tls: skip` and is never inspected; exclude that host or use `on_error: fail_open`",
                        m.key
                    ),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::location::strip_location;

    #[test]
    fn strips_serde_location_suffix() {
        assert_eq!(
            strip_location("unknown field `x` at line 3 column 5"),
            "unknown field `x`"
        );
        assert_eq!(strip_location("no location here"), "no location here");
        assert_eq!(
            strip_location("did not find x at line 6 column 8, while parsing y at line 4 column 7"),
            "did not find x, while parsing y"
        );
    }
}
