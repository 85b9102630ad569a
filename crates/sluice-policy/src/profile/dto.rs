//! Serde structs mirroring an OpenShell provider profile file. Every level
//! rejects unknown keys; endpoints and binaries are the policy's own DTOs, so
//! a profile endpoint accepts exactly what a policy endpoint accepts.

use serde::Deserialize;
use serde_yaml::Value;

use crate::dto::{BinaryDto, EndpointDto};

/// The whole profile file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProfileDto {
    pub(crate) id: String,
    pub(crate) display_name: Option<String>,
    pub(crate) description: Option<String>,
    pub(crate) category: Option<String>,
    #[serde(default)]
    pub(crate) credentials: Vec<ProfileCredentialDto>,
    #[serde(default)]
    pub(crate) endpoints: Vec<EndpointDto>,
    #[serde(default)]
    pub(crate) binaries: Vec<ProfileBinaryDto>,
    pub(crate) discovery: Option<DiscoveryDto>,
    pub(crate) inference_capable: Option<bool>,
}

/// `binaries[]`: a path (OpenShell's profile form) or `{path: ...}` (the
/// policy's form).
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum ProfileBinaryDto {
    Path(String),
    Entry(BinaryDto),
}

impl ProfileBinaryDto {
    pub(crate) fn path(&self) -> &str {
        match self {
            Self::Path(p) => p,
            Self::Entry(b) => &b.path,
        }
    }

    /// The policy entry's form.
    pub(crate) fn to_policy(&self) -> BinaryDto {
        match self {
            Self::Path(p) => BinaryDto {
                path: p.clone(),
                harness: None,
            },
            Self::Entry(b) => b.clone(),
        }
    }
}

/// `credentials[]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProfileCredentialDto {
    pub(crate) name: String,
    pub(crate) description: Option<String>,
    #[serde(default)]
    pub(crate) env_vars: Vec<String>,
    #[serde(default)]
    pub(crate) required: bool,
    pub(crate) auth_style: Option<String>,
    pub(crate) header_name: Option<String>,
    pub(crate) query_param: Option<String>,
    pub(crate) path_template: Option<String>,
    /// Gateway-side renewal: parsed so it can be named, never performed.
    pub(crate) refresh: Option<Value>,
    /// A token minted by the proxy: parsed so it can be named.
    pub(crate) token_grant: Option<Value>,
}

/// `discovery`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DiscoveryDto {
    #[serde(default)]
    pub(crate) credentials: Vec<String>,
}
