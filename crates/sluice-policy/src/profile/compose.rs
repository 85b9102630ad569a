//! Attaching profiles to a policy: each becomes a `_provider_<id>` policy
//! entry (endpoints and binaries) and, when a credential is bound, a provider
//! of the same key, inserted before the policy is compiled so that every
//! rule of a hand-written policy applies to the result.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use serde_yaml::Value;

use super::{load_profile, Profile, ProfileOptions, ProfileRef, SecretBindingSource};
use crate::dto::{NetworkPolicyDto, PolicyFile, ProviderDto, ProviderEndpointDto, SecretSourceDto};
use crate::error::{Ctx, Overlay};
use crate::location::{join, join_idx};
use crate::secret::SecretSource;
use crate::snapshot::AttachedProfile;

/// Where an attachment was asked for: a `profiles[i]` entry of the policy,
/// or the command line.
enum Asked {
    Policy(String),
    CommandLine,
}

struct Attachment {
    asked: Asked,
    r: ProfileRef,
    /// `credentials:` of a policy entry: env var (or credential) name -> source.
    bindings: BTreeMap<String, SecretSourceDto>,
}

/// Adds the attached profiles to `dto`, recording problems in `ctx`;
/// returns what was attached.
pub(crate) fn compose(
    ctx: &mut Ctx,
    dto: &mut PolicyFile,
    base: Option<&Path>,
    opts: &ProfileOptions,
    secrets: &dyn SecretSource,
) -> Vec<AttachedProfile> {
    let mut attached = Vec::new();
    let mut attachments = Vec::new();
    for (i, v) in dto.profiles.iter().flatten().enumerate() {
        let path = join_idx("profiles", i);
        if let Some(a) = parse_entry(ctx, &path, v) {
            attachments.push(a);
        }
    }
    attachments.extend(opts.profiles.iter().map(|r| Attachment {
        asked: Asked::CommandLine,
        r: r.clone(),
        bindings: BTreeMap::new(),
    }));
    if attachments.len() > super::MAX_ATTACHED {
        report(
            ctx,
            if dto.profiles.is_some() {
                "profiles"
            } else {
                ""
            },
            format!(
                "{} profiles attached; at most {} are accepted",
                attachments.len(),
                super::MAX_ATTACHED
            ),
        );
        return attached;
    }
    let mut seen = HashSet::new();
    let mut used_bindings = HashSet::new();
    let mut bound: Vec<Bound> = Vec::new();
    for a in attachments {
        let (where_, base) = match &a.asked {
            Asked::Policy(p) => (p.clone(), base),
            Asked::CommandLine => (String::new(), None),
        };
        let profile = match load_profile(&a.r, base) {
            Ok(p) => p,
            Err(e) => {
                for d in e.diagnostics {
                    if d.line == 0 && !where_.is_empty() {
                        ctx.err(&where_, d.message);
                    } else {
                        ctx.errors.push(d);
                    }
                }
                continue;
            }
        };
        if !seen.insert(profile.id.clone()) {
            report(
                ctx,
                &where_,
                format!("profile `{}` is attached twice", profile.id),
            );
            continue;
        }
        let key = profile.entry_key();
        let taken = dto.network_policies.contains_key(&key)
            || dto.providers.as_ref().is_some_and(|p| p.contains_key(&key));
        if taken {
            // A hand-written `_provider_` key (reserved, and refused as such
            // by the compiler): never replaced silently.
            report(
                ctx,
                &where_,
                format!(
                    "profile `{}` attaches as `{key}`, a key the policy already uses",
                    profile.id
                ),
            );
            continue;
        }
        attached.push(AttachedProfile {
            id: Arc::from(profile.id.as_str()),
            policy_key: Arc::from(key.as_str()),
            origin: Arc::clone(&profile.origin),
            yaml: Arc::clone(&profile.yaml),
        });
        let policy_path = join("network_policies", &key);
        ctx.overlays.push(Overlay {
            prefix: policy_path,
            file: Arc::clone(&profile.origin),
            locs: Arc::clone(&profile.locs),
        });
        dto.network_policies.insert(
            key.clone(),
            NetworkPolicyDto {
                name: Some(
                    profile
                        .display_name
                        .clone()
                        .unwrap_or_else(|| profile.id.clone()),
                ),
                endpoints: profile.dto.endpoints.clone(),
                binaries: profile
                    .dto
                    .binaries
                    .iter()
                    .map(super::dto::ProfileBinaryDto::to_policy)
                    .collect(),
            },
        );
        let credentials = bind(
            ctx,
            &where_,
            &profile,
            &a.bindings,
            opts,
            secrets,
            &mut used_bindings,
        );
        if credentials.is_empty() {
            continue;
        }
        let endpoints: Vec<ProviderEndpointDto> = profile
            .dto
            .endpoints
            .iter()
            .map(|e| ProviderEndpointDto {
                host: e.host.clone(),
                port: e.port,
                ports: e.ports.clone(),
                path: e.path.clone(),
            })
            .collect();
        bound.push(Bound {
            key,
            where_,
            profile,
            credentials,
            endpoints,
        });
    }
    let shared = share_common_variables(ctx, &mut bound);
    for b in bound.into_iter().chain(shared) {
        if b.credentials.is_empty() {
            continue;
        }
        ctx.overlays.push(Overlay {
            prefix: join("providers", &b.key),
            file: Arc::clone(&b.profile.origin),
            locs: Arc::clone(&b.profile.locs),
        });
        dto.providers.get_or_insert_with(BTreeMap::new).insert(
            b.key,
            ProviderDto {
                credentials: b.credentials,
                endpoints: b.endpoints,
                token_grant: None,
                metadata: None,
                metadata_email: None,
                metadata_project_id: None,
                metadata_role: None,
                metadata_region: None,
            },
        );
    }
    for b in &opts.secrets {
        if !used_bindings.contains(&b.name) {
            report(
                ctx,
                "",
                format!(
                    "--secret {}: no attached profile has a credential by that name (use an `env_vars` name, or PROFILE.CREDENTIAL)",
                    b.name
                ),
            );
        }
    }
    attached
}

/// A profile's provider before it joins the policy.
struct Bound {
    key: String,
    /// Where it was attached (for messages).
    where_: String,
    profile: Profile,
    /// Env var name -> source.
    credentials: BTreeMap<String, SecretSourceDto>,
    endpoints: Vec<ProviderEndpointDto>,
}

/// Variables several attached profiles hand out (`ANTHROPIC_API_KEY` of
/// `anthropic` and `claude-code`) with the same source move to a provider of
/// their own, `_provider_shared_<first var>`, bound to every such profile's
/// endpoints: each profile keeps exactly its own endpoints for its other
/// credentials. The same name from different sources is an error naming both.
fn share_common_variables(ctx: &mut Ctx, bound: &mut [Bound]) -> Vec<Bound> {
    let mut owners: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, b) in bound.iter().enumerate() {
        for var in b.credentials.keys() {
            owners.entry(var.clone()).or_default().push(i);
        }
    }
    // Variables handed out by the same profiles share one provider (so that
    // AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY stay together, as
    // `credential_signing` needs).
    let mut groups: BTreeMap<Vec<usize>, Vec<String>> = BTreeMap::new();
    for (var, idx) in owners.into_iter().filter(|(_, v)| v.len() > 1) {
        let first = idx[0];
        let source = &bound[first].credentials[&var];
        if let Some(&other) = idx[1..]
            .iter()
            .find(|&&j| &bound[j].credentials[&var] != source)
        {
            let (a, b) = (&bound[first], &bound[other]);
            let message = format!(
                "profiles `{}` and `{}` both hand out {var}, from different sources; bind it once (`--secret {var}=...`) or attach one of them",
                a.profile.id, b.profile.id
            );
            let at = b.where_.clone();
            report(ctx, &at, message);
            continue;
        }
        groups.entry(idx).or_default().push(var);
    }
    let mut shared = Vec::new();
    for (idx, vars) in groups {
        let first = idx[0];
        let mut credentials = BTreeMap::new();
        for var in &vars {
            if let Some(source) = bound[first].credentials.get(var) {
                credentials.insert(var.clone(), source.clone());
            }
        }
        let mut endpoints = Vec::new();
        for &j in &idx {
            for var in &vars {
                bound[j].credentials.remove(var);
            }
            endpoints.extend(bound[j].endpoints.iter().cloned());
        }
        shared.push(Bound {
            key: format!("_provider_shared_{}", vars[0].to_ascii_lowercase()),
            where_: bound[first].where_.clone(),
            profile: bound[first].profile.clone(),
            credentials,
            endpoints,
        });
    }
    shared
}

/// An error at `path` in the policy, or (empty path) about the command line.
fn report(ctx: &mut Ctx, path: &str, message: String) {
    if path.is_empty() {
        ctx.errors.push(crate::error::Diagnostic {
            file: Arc::from("command line"),
            line: 0,
            col: 0,
            message,
        });
    } else {
        ctx.err(path, message);
    }
}

/// `profiles[i]`: `ID`, `{id: ID}` or `{file: PATH}`, optionally with
/// `credentials: {NAME: {env: VAR} | {file: PATH}}`.
fn parse_entry(ctx: &mut Ctx, path: &str, v: &Value) -> Option<Attachment> {
    let asked = Asked::Policy(path.to_owned());
    match v {
        Value::String(id) => Some(Attachment {
            asked,
            r: ProfileRef::Catalog(id.clone()),
            bindings: BTreeMap::new(),
        }),
        Value::Mapping(m) => {
            let mut id = None;
            let mut file = None;
            let mut bindings = BTreeMap::new();
            for (k, val) in m {
                let Some(k) = k.as_str() else {
                    ctx.err(path, "profile entry keys must be strings");
                    return None;
                };
                let kpath = join(path, k);
                match k {
                    "id" => id = val.as_str().map(str::to_owned).or_else(|| {
                        ctx.err(&kpath, "`id` must be a string");
                        None
                    }),
                    "file" => file = val.as_str().map(str::to_owned).or_else(|| {
                        ctx.err(&kpath, "`file` must be a string");
                        None
                    }),
                    "credentials" => match serde_yaml::from_value(val.clone()) {
                        Ok(b) => bindings = b,
                        Err(e) => ctx.err(
                            &kpath,
                            format!("`credentials` must map names to `{{env: VAR}}` or `{{file: PATH}}`: {e}"),
                        ),
                    },
                    other => ctx.err_key(
                        &kpath,
                        format!("unknown field `{other}` in a profile entry; expected `id` or `file`, and `credentials`"),
                    ),
                }
            }
            let r = match (id, file) {
                (Some(id), None) => ProfileRef::Catalog(id),
                (None, Some(f)) => ProfileRef::File(f.into()),
                _ => {
                    ctx.err(path, "a profile entry needs exactly one of `id` and `file`");
                    return None;
                }
            };
            Some(Attachment { asked, r, bindings })
        }
        _ => {
            ctx.err(
                path,
                "a profile entry is an id, `{id: ID}` or `{file: PATH}`",
            );
            None
        }
    }
}

/// The provider credentials (env var name -> source) of the profile's
/// credentials that have a value: bound by the policy entry, by `--secret`,
/// or found by discovery in sluice's environment. A required credential
/// without one is an error.
fn bind(
    ctx: &mut Ctx,
    where_: &str,
    profile: &Profile,
    entry: &BTreeMap<String, SecretSourceDto>,
    opts: &ProfileOptions,
    secrets: &dyn SecretSource,
    used: &mut HashSet<String>,
) -> BTreeMap<String, SecretSourceDto> {
    let mut out = BTreeMap::new();
    let mut entry_used = HashSet::new();
    for c in &profile.credentials {
        // `--secret` names an env var or PROFILE.CREDENTIAL; a policy entry's
        // `credentials` may also use the bare credential name.
        let qualified = format!("{}.{}", profile.id, c.name);
        let cli_names: Vec<&str> = c
            .env_vars
            .iter()
            .map(String::as_str)
            .chain([qualified.as_str()])
            .collect();
        let from_entry = cli_names
            .iter()
            .chain([&c.name.as_str()])
            .find_map(|n| entry.get(*n).map(|s| (*n, s.clone())));
        let from_cli = opts
            .secrets
            .iter()
            .find(|b| cli_names.contains(&b.name.as_str()));
        if let (Some((n, _)), Some(b)) = (&from_entry, from_cli) {
            used.insert(b.name.clone());
            report(
                ctx,
                where_,
                format!(
                    "credential `{}` of profile `{}` is bound twice: by the policy entry (`{n}`) and by `--secret {}`; keep one",
                    c.name, profile.id, b.name
                ),
            );
        }
        let source = if let Some((n, s)) = from_entry {
            entry_used.insert(n.to_owned());
            Some(s)
        } else if let Some(b) = from_cli {
            used.insert(b.name.clone());
            Some(match &b.source {
                SecretBindingSource::Env(v) => SecretSourceDto {
                    env: Some(v.clone()),
                    file: None,
                },
                SecretBindingSource::File(p) => SecretSourceDto {
                    env: None,
                    file: Some(p.display().to_string()),
                },
            })
        } else if profile.discovery.contains(&c.name) {
            c.env_vars
                .iter()
                .find(|v| secrets.env(v).is_some())
                .map(|v| SecretSourceDto {
                    env: Some(v.clone()),
                    file: None,
                })
        } else {
            None
        };
        match source {
            Some(s) => {
                let placeholders: Vec<&String> = if c.env_vars.is_empty() {
                    vec![&c.name]
                } else {
                    c.env_vars.iter().collect()
                };
                for var in placeholders {
                    out.insert(var.clone(), s.clone());
                }
            }
            None if c.required => {
                let first = c.env_vars.first().unwrap_or(&c.name);
                let discover = if profile.discovery.contains(&c.name) {
                    format!(
                        ", or set {} in sluice's environment",
                        c.env_vars.join(" or ")
                    )
                } else {
                    String::new()
                };
                report(
                    ctx,
                    where_,
                    format!(
                        "profile `{}` needs credential `{}`: bind it with `--secret {first}=env:VAR` (or `=file:PATH`){discover}",
                        profile.id, c.name
                    ),
                );
            }
            None => {}
        }
    }
    for name in entry.keys() {
        if !entry_used.contains(name) {
            ctx.err_key(
                &join(&join(where_, "credentials"), name),
                format!(
                    "profile `{}` has no credential `{name}` (use one of its `env_vars` names)",
                    profile.id
                ),
            );
        }
    }
    out
}
