//! Serde structs mirroring the policy file exactly. Every level rejects
//! unknown keys; semantic validation happens in `compile`.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_yaml::Value;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PolicyFile {
    pub(crate) version: Option<i64>,
    pub(crate) filesystem_policy: Option<Value>,
    pub(crate) landlock: Option<Value>,
    pub(crate) process: Option<Value>,
    #[serde(default)]
    pub(crate) network_policies: BTreeMap<String, NetworkPolicyDto>,
    #[serde(default)]
    pub(crate) network_middlewares: BTreeMap<String, MiddlewareDto>,
    /// Credential sources bound to endpoints.
    pub(crate) providers: Option<BTreeMap<String, ProviderDto>>,
    /// Routes of `inference.local` (design §6.4).
    pub(crate) inference: Option<crate::inference::InferenceDto>,
    /// A sluice extension not implemented by this build (rejected).
    pub(crate) runtime: Option<Value>,
    /// Provider profiles to attach (`crate::profile`).
    pub(crate) profiles: Option<Vec<Value>>,
}

/// `network_policies.<key>`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NetworkPolicyDto {
    pub(crate) name: Option<String>,
    #[serde(default)]
    pub(crate) endpoints: Vec<EndpointDto>,
    #[serde(default)]
    pub(crate) binaries: Vec<BinaryDto>,
}

/// `binaries[]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BinaryDto {
    pub(crate) path: String,
    /// Deprecated; accepted and ignored.
    #[allow(dead_code)]
    pub(crate) harness: Option<bool>,
}

/// `endpoints[]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EndpointDto {
    pub(crate) host: Option<String>,
    pub(crate) port: Option<i64>,
    pub(crate) ports: Option<Vec<i64>>,
    pub(crate) path: Option<String>,
    pub(crate) protocol: Option<String>,
    pub(crate) tls: Option<String>,
    pub(crate) enforcement: Option<String>,
    pub(crate) access: Option<String>,
    pub(crate) rules: Option<Vec<RuleDto>>,
    pub(crate) deny_rules: Option<Vec<RuleBodyDto>>,
    pub(crate) allowed_ips: Option<Vec<String>>,
    pub(crate) allow_encoded_slash: Option<bool>,
    pub(crate) websocket_credential_rewrite: Option<bool>,
    pub(crate) request_body_credential_rewrite: Option<bool>,
    pub(crate) allow_uninspected_credentials: Option<bool>,
    pub(crate) credential_signing: Option<String>,
    pub(crate) signing_service: Option<String>,
    pub(crate) signing_region: Option<String>,
    pub(crate) credential_binding: Option<CredentialBindingDto>,
    pub(crate) persisted_queries: Option<String>,
    pub(crate) graphql_persisted_queries: Option<BTreeMap<String, PersistedQueryDto>>,
    pub(crate) graphql_max_body_bytes: Option<i64>,
    pub(crate) json_rpc: Option<JsonRpcDto>,
    pub(crate) mcp: Option<McpDto>,
}

/// `rules[]`: `{allow: {...}}`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RuleDto {
    pub(crate) allow: RuleBodyDto,
}

/// An allow body or a `deny_rules[]` entry.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RuleBodyDto {
    pub(crate) method: Option<String>,
    pub(crate) path: Option<String>,
    pub(crate) query: Option<BTreeMap<String, Value>>,
    pub(crate) operation_type: Option<String>,
    pub(crate) operation_name: Option<String>,
    pub(crate) fields: Option<Vec<String>>,
    pub(crate) tool: Option<Value>,
    pub(crate) params: Option<BTreeMap<String, Value>>,
    pub(crate) command: Option<String>,
    /// `redis`: key glob.
    pub(crate) key: Option<String>,
    /// `postgres`: statement kind.
    pub(crate) statement: Option<String>,
    /// `postgres`: `schema.table` glob.
    pub(crate) table: Option<String>,
    /// MCP `tools/call` argument matchers (sluice extension).
    pub(crate) arguments: Option<BTreeMap<String, Value>>,
}

/// `credential_binding`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CredentialBindingDto {
    pub(crate) provider: String,
}

/// `graphql_persisted_queries.<id>`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PersistedQueryDto {
    pub(crate) operation_type: String,
    pub(crate) operation_name: Option<String>,
    #[serde(default)]
    pub(crate) fields: Vec<String>,
}

/// `json_rpc`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct JsonRpcDto {
    pub(crate) max_body_bytes: Option<i64>,
}

/// `mcp`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct McpDto {
    pub(crate) max_body_bytes: Option<i64>,
    pub(crate) strict_tool_names: Option<bool>,
    pub(crate) allow_all_known_mcp_methods: Option<bool>,
}

/// `network_middlewares.<key>`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MiddlewareDto {
    pub(crate) name: Option<String>,
    pub(crate) middleware: String,
    #[serde(default)]
    pub(crate) order: i64,
    pub(crate) config: Option<Value>,
    pub(crate) on_error: Option<String>,
    pub(crate) endpoints: MiddlewareSelectorDto,
}

/// `network_middlewares.<key>.endpoints`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MiddlewareSelectorDto {
    #[serde(default)]
    pub(crate) include: Vec<String>,
    #[serde(default)]
    pub(crate) exclude: Vec<String>,
}

/// `providers.<key>`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProviderDto {
    #[serde(default)]
    pub(crate) credentials: BTreeMap<String, SecretSourceDto>,
    #[serde(default)]
    pub(crate) endpoints: Vec<ProviderEndpointDto>,
    pub(crate) token_grant: Option<TokenGrantDto>,
    /// `gce` | `aws`: the cloud metadata service `sluice run` serves for it.
    pub(crate) metadata: Option<String>,
    /// `gce`: the default service account's email (non-secret).
    pub(crate) metadata_email: Option<String>,
    /// `gce`: the project id (non-secret).
    pub(crate) metadata_project_id: Option<String>,
    /// `aws`: the instance profile's role name (non-secret).
    pub(crate) metadata_role: Option<String>,
    /// `aws`: the region (placement) the instance reports (non-secret).
    pub(crate) metadata_region: Option<String>,
}

/// A secret source: exactly one of `env` / `file`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SecretSourceDto {
    pub(crate) env: Option<String>,
    pub(crate) file: Option<String>,
}

/// `providers.<key>.endpoints[]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProviderEndpointDto {
    pub(crate) host: Option<String>,
    pub(crate) port: Option<i64>,
    pub(crate) ports: Option<Vec<i64>>,
    pub(crate) path: Option<String>,
}

/// `providers.<key>.token_grant`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TokenGrantDto {
    pub(crate) token_endpoint: String,
    pub(crate) grant: String,
    pub(crate) client_id: Option<SecretSourceDto>,
    pub(crate) client_secret: Option<SecretSourceDto>,
    pub(crate) assertion: Option<SecretSourceDto>,
    pub(crate) client_assertion_type: Option<String>,
    pub(crate) scopes: Option<Vec<String>>,
    pub(crate) audience: Option<String>,
    pub(crate) header: Option<String>,
    pub(crate) style: Option<String>,
    pub(crate) timeout_seconds: Option<i64>,
}
