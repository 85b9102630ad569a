//! Provider profiles: ready-made access bundles for a service (its
//! endpoints with L7 rules, the binaries that use it, and its credentials),
//! in OpenShell's provider profile format.
//!
//! A profile is attached by a policy's `profiles:` section or by
//! `sluice run --profile ID|FILE`. Attaching one adds a policy entry named
//! `_provider_<id>` with the profile's endpoints and binaries, and a
//! provider of the same name that binds each credential the operator gives
//! (or that discovery finds in sluice's own environment) to the profile's
//! endpoints: the sandbox sees placeholders under every `env_vars` name,
//! never the values. The composed policy is then validated exactly as a
//! hand-written one (ambiguity, capabilities, credential rules), with every
//! problem located in the file it comes from.
//!
//! sluice ships its own catalog ([`catalog`]), written from the services'
//! public documentation and linted in CI.

mod catalog;
mod compose;
mod dto;
mod validate;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use serde::Serialize;

pub use catalog::{catalog, CatalogEntry};
pub(crate) use compose::compose;

use crate::error::{Ctx, LoadError};
use crate::location::{yaml_error, LocationIndex};

/// The policy profiles attached on the command line are composed into when
/// there is no policy file (`sluice run --profile ID -- CMD`).
pub const PROFILES_ONLY_POLICY: &str = "version: 1\n";

/// Largest profile file accepted.
pub const MAX_PROFILE_BYTES: usize = 1024 * 1024;
/// Most profiles attached to one policy (the policy's and the command line's).
pub const MAX_ATTACHED: usize = 64;

/// A validated profile.
#[derive(Clone, Debug, Serialize)]
pub struct Profile {
    pub id: String,
    pub display_name: Option<String>,
    pub description: Option<String>,
    pub category: Option<String>,
    pub inference_capable: bool,
    pub credentials: Vec<ProfileCredential>,
    pub endpoints: Vec<ProfileEndpoint>,
    pub binaries: Vec<String>,
    /// Credentials discovery may take from sluice's own environment.
    pub discovery: Vec<String>,
    /// Where it was read from (`catalog:ID.yaml` or the file path).
    #[serde(serialize_with = "as_str")]
    pub origin: Arc<str>,
    #[serde(skip)]
    pub(crate) dto: dto::ProfileDto,
    #[serde(skip)]
    pub(crate) locs: Arc<LocationIndex>,
    /// The file's text.
    #[serde(skip)]
    pub(crate) yaml: Arc<str>,
}

/// One credential of a profile (its value never lives here).
#[derive(Clone, Debug, Serialize)]
pub struct ProfileCredential {
    pub name: String,
    pub description: Option<String>,
    /// The sandbox gets a placeholder under each of these names.
    pub env_vars: Vec<String>,
    pub required: bool,
    pub auth_style: Option<String>,
    pub header_name: Option<String>,
}

/// One endpoint of a profile, summarised.
#[derive(Clone, Debug, Serialize)]
pub struct ProfileEndpoint {
    pub host: String,
    pub ports: Vec<u16>,
    pub path: Option<String>,
    pub protocol: Option<String>,
    pub access: Option<String>,
    pub enforcement: Option<String>,
    /// Number of `rules` / `deny_rules`.
    pub rules: usize,
    pub deny_rules: usize,
}

/// Which profile to attach.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProfileRef {
    /// An id of the embedded catalog.
    Catalog(String),
    /// A profile file.
    File(PathBuf),
}

impl FromStr for ProfileRef {
    type Err = std::convert::Infallible;

    /// `--profile` values: a catalog id, or a path (anything with a `/` or a
    /// `.yaml`/`.yml` suffix).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.contains('/') || s.ends_with(".yaml") || s.ends_with(".yml") {
            Ok(Self::File(PathBuf::from(s)))
        } else {
            Ok(Self::Catalog(s.to_owned()))
        }
    }
}

/// Where a credential's value comes from (`--secret NAME=env:VAR|file:PATH`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretBindingSource {
    Env(String),
    File(PathBuf),
}

/// `--secret NAME=env:VAR|file:PATH`: the value of the profile credential
/// whose `env_vars` include `NAME` (or named `PROFILE.CREDENTIAL`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretBinding {
    pub name: String,
    pub source: SecretBindingSource,
}

impl FromStr for SecretBinding {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, source) = s
            .split_once('=')
            .ok_or_else(|| format!("`{s}`: expected NAME=env:VAR or NAME=file:PATH"))?;
        if name.is_empty() {
            return Err(format!("`{s}`: the name is empty"));
        }
        let source = if let Some(var) = source.strip_prefix("env:") {
            if !crate::placeholder::valid_name(var) {
                return Err(format!(
                    "`{s}`: `{var}` is not an environment variable name"
                ));
            }
            SecretBindingSource::Env(var.to_owned())
        } else if let Some(path) = source.strip_prefix("file:") {
            if path.is_empty() {
                return Err(format!("`{s}`: the file path is empty"));
            }
            SecretBindingSource::File(PathBuf::from(path))
        } else {
            return Err(format!(
                "`{s}`: the source must start with `env:` or `file:`"
            ));
        };
        Ok(Self {
            name: name.to_owned(),
            source,
        })
    }
}

/// Profiles attached from outside the policy file (`sluice run --profile`)
/// and the operator's secret bindings. Applied on every load and reload.
#[derive(Clone, Debug, Default)]
pub struct ProfileOptions {
    pub profiles: Vec<ProfileRef>,
    pub secrets: Vec<SecretBinding>,
    /// Where relative `profiles: [{file: ...}]` paths of the policy are read
    /// from; `None`: the directory of the policy's origin.
    pub policy_dir: Option<PathBuf>,
}

/// Parses and validates a profile's YAML. `origin` names it in messages.
///
/// # Errors
/// Every problem found, located in the profile (`FILE:LINE:COL: message`).
pub fn parse_profile(src: &str, origin: &str) -> Result<Profile, LoadError> {
    let file: Arc<str> = Arc::from(origin);
    if src.len() > MAX_PROFILE_BYTES {
        return Err(LoadError::whole_file(
            &file,
            format!(
                "profile is {} bytes; at most {MAX_PROFILE_BYTES} are accepted",
                src.len()
            ),
        ));
    }
    let dto: dto::ProfileDto = serde_yaml::from_str(src).map_err(|e| LoadError {
        diagnostics: vec![yaml_error(&file, &e)],
    })?;
    let locs = Arc::new(LocationIndex::build(src));
    let mut ctx = Ctx::new(Arc::clone(&file), LocationIndex::build(src));
    validate::validate(&mut ctx, &dto);
    if !ctx.errors.is_empty() {
        let mut diagnostics = ctx.errors;
        diagnostics.sort_by_key(|d| (d.line, d.col));
        diagnostics.dedup();
        return Err(LoadError { diagnostics });
    }
    Ok(summarise(dto, file, locs, Arc::from(src)))
}

/// Reads a profile: a catalog id, or a file (relative paths from `base`).
///
/// # Errors
/// An unknown id, an unreadable file, or the file's problems.
pub fn load_profile(r: &ProfileRef, base: Option<&Path>) -> Result<Profile, LoadError> {
    match r {
        ProfileRef::Catalog(id) => match catalog().iter().find(|e| e.id == id) {
            Some(entry) => parse_profile(entry.source, &entry.origin()),
            None => Err(LoadError::whole_file(
                &Arc::from("--profile"),
                format!(
                    "no profile `{id}` in the catalog (`sluice profiles list` shows them; a file path needs a `/` or a .yaml suffix)"
                ),
            )),
        },
        ProfileRef::File(path) => {
            let full = match base {
                Some(b) if path.is_relative() => b.join(path),
                _ => path.clone(),
            };
            let origin = full.display().to_string();
            let text = read_bounded(&full).map_err(|e| {
                LoadError::whole_file(&Arc::from(origin.as_str()), format!("cannot read profile: {e}"))
            })?;
            parse_profile(&text, &origin)
        }
    }
}

fn read_bounded(path: &Path) -> std::io::Result<String> {
    use std::io::Read as _;
    let file = std::fs::File::open(path)?;
    let mut text = String::new();
    let limit = u64::try_from(MAX_PROFILE_BYTES).unwrap_or(u64::MAX) + 1;
    file.take(limit).read_to_string(&mut text)?;
    Ok(text)
}

fn summarise(
    dto: dto::ProfileDto,
    origin: Arc<str>,
    locs: Arc<LocationIndex>,
    yaml: Arc<str>,
) -> Profile {
    let endpoints = dto
        .endpoints
        .iter()
        .map(|e| {
            let mut ports: Vec<u16> = e
                .ports
                .iter()
                .flatten()
                .chain(e.port.iter())
                .filter_map(|p| u16::try_from(*p).ok())
                .collect();
            ports.sort_unstable();
            ports.dedup();
            ProfileEndpoint {
                host: e.host.clone().unwrap_or_default(),
                ports,
                path: e.path.clone(),
                protocol: e.protocol.clone(),
                access: e.access.clone(),
                enforcement: e.enforcement.clone(),
                rules: e.rules.as_ref().map_or(0, Vec::len),
                deny_rules: e.deny_rules.as_ref().map_or(0, Vec::len),
            }
        })
        .collect();
    Profile {
        id: dto.id.clone(),
        display_name: dto.display_name.clone(),
        description: dto.description.clone(),
        category: dto.category.clone(),
        inference_capable: dto.inference_capable.unwrap_or(false),
        credentials: dto
            .credentials
            .iter()
            .map(|c| ProfileCredential {
                name: c.name.clone(),
                description: c.description.clone(),
                env_vars: c.env_vars.clone(),
                required: c.required,
                auth_style: c.auth_style.clone(),
                header_name: c.header_name.clone(),
            })
            .collect(),
        endpoints,
        binaries: dto.binaries.iter().map(|b| b.path().to_owned()).collect(),
        discovery: dto
            .discovery
            .as_ref()
            .map(|d| d.credentials.clone())
            .unwrap_or_default(),
        origin,
        dto,
        locs,
        yaml,
    }
}

fn as_str<S: serde::Serializer>(s: &Arc<str>, out: S) -> Result<S::Ok, S::Error> {
    out.serialize_str(s)
}

impl Profile {
    /// The policy entry (and provider) key this profile is attached under.
    #[must_use]
    pub fn entry_key(&self) -> String {
        entry_key(&self.id)
    }
}

/// `_provider_` + the id with every character outside `[A-Za-z0-9_]` as `_`.
#[must_use]
pub fn entry_key(id: &str) -> String {
    let body: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("_provider_{body}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_values_parse() {
        let cases: &[(&str, Result<SecretBinding, &str>)] = &[
            (
                "GITHUB_TOKEN=env:HOST_GH",
                Ok(SecretBinding {
                    name: "GITHUB_TOKEN".into(),
                    source: SecretBindingSource::Env("HOST_GH".into()),
                }),
            ),
            (
                "github.api_token=file:/run/secrets/gh",
                Ok(SecretBinding {
                    name: "github.api_token".into(),
                    source: SecretBindingSource::File("/run/secrets/gh".into()),
                }),
            ),
            (
                "GITHUB_TOKEN",
                Err("`GITHUB_TOKEN`: expected NAME=env:VAR or NAME=file:PATH"),
            ),
            ("=env:X", Err("`=env:X`: the name is empty")),
            (
                "T=env:A-B",
                Err("`T=env:A-B`: `A-B` is not an environment variable name"),
            ),
            ("T=file:", Err("`T=file:`: the file path is empty")),
            (
                "T=ghp_123",
                Err("`T=ghp_123`: the source must start with `env:` or `file:`"),
            ),
        ];
        for (text, want) in cases {
            let got = text.parse::<SecretBinding>();
            assert_eq!(got, want.clone().map_err(str::to_owned), "{text}");
        }
        for (text, want) in [
            ("github", ProfileRef::Catalog("github".into())),
            ("./mine.yaml", ProfileRef::File("./mine.yaml".into())),
            ("mine.yml", ProfileRef::File("mine.yml".into())),
            ("/etc/sluice/p", ProfileRef::File("/etc/sluice/p".into())),
        ] {
            assert_eq!(text.parse::<ProfileRef>().unwrap(), want, "{text}");
        }
        assert_eq!(entry_key("claude-code"), "_provider_claude_code");
    }
}
