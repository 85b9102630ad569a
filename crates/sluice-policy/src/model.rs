//! The compiled, immutable policy model. Every type here is built by the
//! loader from a validated file; nothing here can represent an invalid policy.

use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

/// Index of a `network_policies` entry inside one [`PolicySnapshot`](crate::PolicySnapshot).
/// Policies are stored sorted by key, so `PolicyId` order is key order: the
/// smallest matching id is the lexicographically smallest matching key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PolicyId(pub u32);

/// Index of an endpoint inside one [`PolicySnapshot`](crate::PolicySnapshot). Endpoints are stored
/// in (policy key, position in the policy's list) order, so `EndpointId`
/// order is the documented precedence order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EndpointId(pub u32);

/// A host as the proxy saw it after strict normalization (lowercase, no
/// trailing dot, IP literals parsed). Used to query the index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostRef<'a> {
    /// A DNS name: lowercase ASCII, no trailing dot.
    Name(&'a str),
    /// An IP literal (never matched by name patterns).
    Ip(IpAddr),
}

/// The `host` of an endpoint after compilation.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HostPattern {
    /// An exact DNS name (lowercase, no trailing dot).
    Exact(Arc<str>),
    /// An IP literal host (implies that address is allowed: "implicit IP literal").
    Ip(IpAddr),
    /// A DNS glob: `*` one label (or part of the first label), `**` one or more labels.
    Glob(HostGlob),
    /// No host: matches any name on its ports, only valid with `allowed_ips`.
    Any,
}

/// A compiled DNS glob, e.g. `*.example.com`, `**.example.com`, `*.s3.*.amazonaws.com`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostGlob {
    /// The pattern as written (lowercased), for messages.
    pub pattern: Arc<str>,
    /// Labels, left to right.
    pub labels: Arc<[GlobLabel]>,
}

/// One label of a [`HostGlob`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum GlobLabel {
    /// A literal label.
    Literal(Arc<str>),
    /// `*`: exactly one label.
    Any,
    /// `**`: one or more labels (first label only).
    AnyMany,
    /// A label with an intra-label `*` such as `*-aiplatform` (first label only).
    Partial { prefix: Arc<str>, suffix: Arc<str> },
}

/// Endpoint `protocol`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Protocol {
    /// No protocol: L4 through the explicit proxy (HTTP still parsed, no L7 rules).
    L4,
    /// `tcp`: native TCP through policy DNS + transparent capture.
    Tcp,
    Rest,
    Websocket,
    Graphql,
    JsonRpc,
    Mcp,
    /// `grpc`: gRPC over HTTP/2; rules name `package.Service/Method` globs
    /// (compiled to `POST /package.Service/Method` REST rules).
    Grpc,
    /// `sql`: audit-only, not implemented.
    Sql,
    /// `redis`: RESP2/RESP3 commands, through the Redis processor.
    Redis,
    /// `postgres`: the PostgreSQL v3 wire protocol, through the Postgres processor.
    Postgres,
}

impl Protocol {
    /// The spelling used in policy files and events.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::L4 => "",
            Self::Tcp => "tcp",
            Self::Rest => "rest",
            Self::Websocket => "websocket",
            Self::Graphql => "graphql",
            Self::JsonRpc => "json-rpc",
            Self::Mcp => "mcp",
            Self::Grpc => "grpc",
            Self::Sql => "sql",
            Self::Redis => "redis",
            Self::Postgres => "postgres",
        }
    }

    /// Whether request-level (L7) policy applies.
    #[must_use]
    pub fn is_l7(self) -> bool {
        !matches!(self, Self::L4 | Self::Tcp)
    }

    /// Whether a native protocol processor (not HTTP) owns the connection.
    #[must_use]
    pub fn is_native(self) -> bool {
        matches!(self, Self::Redis | Self::Postgres)
    }
}

/// Endpoint `tls` mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TlsMode {
    /// Detect TLS in the tunnel and terminate it when inspection needs it.
    Auto,
    /// `tls: skip`: raw tunnel, no detection, no termination.
    Skip,
}

/// Endpoint `enforcement`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Enforcement {
    Enforce,
    /// Violations are logged, traffic is forwarded.
    Audit,
}

impl Enforcement {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enforce => "enforce",
            Self::Audit => "audit",
        }
    }
}

/// A string glob with a delimiter (`/` for paths, `.` for names), `*` never
/// crosses the delimiter, `**` does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Glob {
    /// As written.
    pub pattern: Arc<str>,
    /// The delimiter `*` may not cross.
    pub delimiter: u8,
}

/// A query matcher value: one glob, or `{any: [globs]}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QueryMatcher {
    One(Glob),
    Any(Vec<Glob>),
}

/// One L7 rule (an `allow` body or a `deny_rules` entry), as parsed. Which
/// fields are meaningful depends on the endpoint protocol; the loader has
/// already rejected combinations that do not apply.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct L7Rule {
    /// Upper-cased method (`GET`, `*`, `WEBSOCKET_TEXT`, `WEBSOCKET_BINARY`,
    /// JSON-RPC/MCP method name as written).
    pub method: Option<Arc<str>>,
    pub path: Option<Glob>,
    /// Decoded parameter name → matcher, sorted by name.
    pub query: Vec<(Arc<str>, QueryMatcher)>,
    pub operation_type: Option<Arc<str>>,
    pub operation_name: Option<Glob>,
    pub fields: Vec<Glob>,
    pub tool: Option<QueryMatcher>,
    /// `sql`: upper-cased command. `redis`: upper-cased command name or glob.
    pub command: Option<Arc<str>>,
    /// `redis`: glob over every key argument of the command (`*` crosses
    /// every character but NUL).
    pub key: Option<Glob>,
    /// `postgres`: statement kind, lower case: `select`, `insert`, `update`,
    /// `delete`, `ddl`, `other` or `*`.
    pub statement: Option<Arc<str>>,
    /// `postgres`: glob over `schema.table` of every table the statement
    /// touches (`*` does not cross `.`).
    pub table: Option<Glob>,
    /// MCP `tools/call` argument matchers (sluice extension): JSON pointer
    /// into `params.arguments` (a top-level name `path` is stored as
    /// `/path`) → matcher, sorted by pointer. Only string values match.
    pub arguments: Vec<(Arc<str>, QueryMatcher)>,
}

/// One compiled endpoint. All metadata that a decision needs is here, so the
/// same entry that supplies the log name supplies the metadata.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub id: EndpointId,
    pub policy: PolicyId,
    /// Position in the policy's `endpoints` list (for messages: `key.endpoints[i]`).
    pub index_in_policy: usize,
    pub host: HostPattern,
    /// Sorted, deduplicated, non-empty.
    pub ports: Arc<[u16]>,
    /// Endpoint-level path selector (`None` = all paths).
    pub path: Option<Glob>,
    pub protocol: Protocol,
    pub tls: TlsMode,
    pub enforcement: Enforcement,
    /// `access` presets already expanded into rules.
    pub rules: Arc<[L7Rule]>,
    pub deny_rules: Arc<[L7Rule]>,
    pub allowed_ips: Arc<[IpNet]>,
    pub allow_encoded_slash: bool,
    pub websocket_credential_rewrite: bool,
    pub request_body_credential_rewrite: bool,
    pub allow_uninspected_credentials: bool,
    /// 1-based line of the endpoint in the source file (for messages and `explain`).
    pub line: usize,
    /// 1-based column of the endpoint in the source file.
    pub column: usize,
    /// `credential_signing`: requests are re-signed (SigV4) with the keys of
    /// the provider bound to this endpoint.
    pub credential_signing: Option<CredentialSigning>,
    /// `signing_service` (required with `credential_signing`).
    pub signing_service: Option<Arc<str>>,
    /// `signing_region`.
    pub signing_region: Option<Arc<str>>,
    /// `credential_binding.provider` (parsed; inactive until providers exist).
    pub credential_binding: Option<Arc<str>>,
    /// `persisted_queries`: how hash-only GraphQL requests are handled.
    pub persisted_queries: PersistedQueries,
    /// `graphql_persisted_queries`: registered id/hash → stored classification, sorted by id.
    pub graphql_persisted_queries: Arc<[(Arc<str>, PersistedQuery)]>,
    /// `graphql_max_body_bytes` (default 65536).
    pub graphql_max_body_bytes: usize,
    /// `json_rpc.max_body_bytes` (default 65536).
    pub json_rpc_max_body_bytes: usize,
    /// `mcp.max_body_bytes` (default 65536).
    pub mcp_max_body_bytes: usize,
    /// `mcp.strict_tool_names` (default true).
    pub mcp_strict_tool_names: bool,
    /// `mcp.allow_all_known_mcp_methods` (default false).
    pub mcp_allow_all_known_mcp_methods: bool,
}

/// Default body limit for GraphQL, JSON-RPC and MCP inspection.
pub const DEFAULT_L7_MAX_BODY_BYTES: usize = 65_536;

/// `credential_signing` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CredentialSigning {
    /// `sigv4`.
    Sigv4,
    /// `sigv4:body` (buffers the body to sign it).
    Sigv4Body,
    /// `sigv4:no_body` (unsigned payload).
    Sigv4NoBody,
}

impl CredentialSigning {
    /// The spelling used in policy files.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sigv4 => "sigv4",
            Self::Sigv4Body => "sigv4:body",
            Self::Sigv4NoBody => "sigv4:no_body",
        }
    }
}

/// `persisted_queries` mode for hash-only GraphQL requests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum PersistedQueries {
    /// `deny` (default): hash-only requests are denied.
    #[default]
    Deny,
    /// `allow_registered`: hash-only requests are classified from the registry.
    AllowRegistered,
}

/// One `graphql_persisted_queries` entry: the stored classification of a query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PersistedQuery {
    /// `query`, `mutation` or `subscription` (lowercase).
    pub operation_type: Arc<str>,
    /// Operation name, if registered.
    pub operation_name: Option<Arc<str>>,
    /// Root field names.
    pub fields: Vec<Arc<str>>,
}

/// One `network_middlewares.<key>` entry (parsed and validated; not executed by this build).
#[derive(Clone, Debug)]
pub struct Middleware {
    /// The map key.
    pub key: Arc<str>,
    /// Display name (defaults to the key).
    pub name: Arc<str>,
    /// Implementation name, e.g. `openshell/regex`.
    pub middleware: Arc<str>,
    /// Chain order (unique).
    pub order: i64,
    /// `on_error: fail_open` (false = `fail_closed`).
    pub fail_open: bool,
    /// `endpoints.include` host patterns.
    pub include: Vec<HostPattern>,
    /// `endpoints.exclude` host patterns (exclusions win).
    pub exclude: Vec<HostPattern>,
    /// `config`: owned by the implementation (a JSON object; `{}` when
    /// absent), validated by it when the policy loads.
    pub config: Arc<serde_json::Map<String, serde_json::Value>>,
}

impl Middleware {
    /// Whether this stage applies to requests for `host` (an include
    /// pattern matches and no exclude pattern does).
    #[must_use]
    pub fn selects(&self, host: HostRef<'_>) -> bool {
        self.include.iter().any(|p| p.matches(host))
            && !self.exclude.iter().any(|p| p.matches(host))
    }
}

impl Endpoint {
    /// True when the host is an exact name (not a glob, not hostless): an
    /// "exact declared host", which may resolve to private addresses.
    #[must_use]
    pub fn is_exact_host(&self) -> bool {
        matches!(self.host, HostPattern::Exact(_))
    }
}

/// A `binaries[].path` matcher: exact path or `/`-delimited glob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BinaryMatcher {
    pub path: Glob,
}

/// One `network_policies.<key>` entry.
#[derive(Clone, Debug)]
pub struct NetworkPolicy {
    pub id: PolicyId,
    /// The map key: what logs, `X-Sluice-Policy` and `firewall_rule.name` show.
    pub key: Arc<str>,
    /// Display name (defaults to the key).
    pub name: Arc<str>,
    pub endpoints: Arc<[EndpointId]>,
    pub binaries: Arc<[BinaryMatcher]>,
}

/// Index of a `providers` entry inside one [`PolicySnapshot`](crate::PolicySnapshot).
/// Providers are stored sorted by key, so `ProviderId` order is key order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProviderId(pub u32);

/// One `providers.<key>.credentials.<NAME>` entry: the value that replaces the
/// placeholder `sluice:resolve:env:NAME` (or `openshell:resolve:env:NAME`).
/// `Debug` prints the value as `[REDACTED]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credential {
    /// The placeholder name, `[A-Za-z0-9_]+`, unique across all providers.
    pub name: Arc<str>,
    /// The provider that defines it.
    pub provider: ProviderId,
    /// The real value, read from env or file at load time.
    pub value: crate::secret::Secret,
}

/// One `providers.<key>.endpoints[]` entry: where the provider's
/// credentials (and token grant) may be injected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderEndpoint {
    /// Host pattern (exact name, IP literal or DNS glob; never hostless).
    pub host: HostPattern,
    /// Sorted, deduplicated, non-empty.
    pub ports: Arc<[u16]>,
    /// Optional `/`-delimited path glob (`None` = all paths).
    pub path: Option<Glob>,
}

impl ProviderEndpoint {
    /// Whether this endpoint covers the request. `path` is the request path
    /// (anything from `?` on is ignored).
    #[must_use]
    pub fn covers(&self, host: HostRef<'_>, port: u16, path: &str) -> bool {
        let path = path.split_once('?').map_or(path, |(p, _)| p);
        self.ports.binary_search(&port).is_ok()
            && self.host.matches(host)
            && self.path.as_ref().is_none_or(|g| g.matches(path))
    }
}

/// `token_grant.grant`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GrantKind {
    /// `client_credentials`: `client_id` + `client_secret`.
    ClientCredentials,
    /// `jwt_bearer`: a JWT client assertion (`client_assertion_type` + `client_assertion`).
    JwtBearer,
}

impl GrantKind {
    /// The spelling used in policy files.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClientCredentials => "client_credentials",
            Self::JwtBearer => "jwt_bearer",
        }
    }
}

/// `token_grant.style`: how the token is written into `header`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TokenStyle {
    /// `bearer` (default): `Bearer <token>`.
    Bearer,
    /// `raw`: the token as is.
    Raw,
}

impl TokenStyle {
    /// The spelling used in policy files.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bearer => "bearer",
            Self::Raw => "raw",
        }
    }
}

/// Default `token_grant.timeout_seconds`.
pub const DEFAULT_TOKEN_GRANT_TIMEOUT_SECS: u64 = 10;

/// Default `token_grant.client_assertion_type`.
pub const DEFAULT_CLIENT_ASSERTION_TYPE: &str =
    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// `providers.<key>.token_grant`: an OAuth2 token fetched by the proxy and
/// injected into `header` on requests the provider's endpoints cover.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenGrant {
    /// The full token endpoint URL (https, or http for loopback hosts only).
    pub token_endpoint: Arc<str>,
    pub grant: GrantKind,
    /// Required for `client_credentials`; optional for `jwt_bearer`.
    pub client_id: Option<crate::secret::Secret>,
    /// Required for (and only allowed with) `client_credentials`.
    pub client_secret: Option<crate::secret::Secret>,
    /// Required for (and only allowed with) `jwt_bearer`.
    pub assertion: Option<crate::secret::Secret>,
    /// `client_assertion_type` (default [`DEFAULT_CLIENT_ASSERTION_TYPE`]).
    pub assertion_type: Arc<str>,
    /// `scopes`, in file order (space-joined on the wire).
    pub scopes: Arc<[Arc<str>]>,
    pub audience: Option<Arc<str>>,
    /// Header name as written (default `Authorization`).
    pub header: Arc<str>,
    pub style: TokenStyle,
    /// Token request timeout (default 10 s, 1..=60 s).
    pub timeout: std::time::Duration,
}

/// One `providers.<key>` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Provider {
    pub id: ProviderId,
    /// The map key (what logs show).
    pub key: Arc<str>,
    /// Sorted by name.
    pub credentials: Arc<[Credential]>,
    /// Non-empty.
    pub endpoints: Arc<[ProviderEndpoint]>,
    pub token_grant: Option<Arc<TokenGrant>>,
    /// `metadata: gce | aws`: the metadata service `sluice run` serves for it.
    pub metadata: Option<Metadata>,
}

/// The credential a `metadata: gce` provider must define: the default service
/// account's access token.
pub const GCE_TOKEN_CREDENTIAL: &str = "GCP_ADC_ACCESS_TOKEN";
/// Credentials a `metadata: aws` provider must define.
pub const AWS_ACCESS_KEY_CREDENTIAL: &str = "AWS_ACCESS_KEY_ID";
/// See [`AWS_ACCESS_KEY_CREDENTIAL`].
pub const AWS_SECRET_KEY_CREDENTIAL: &str = "AWS_SECRET_ACCESS_KEY";
/// Optional for a `metadata: aws` provider (its placeholder is handed out anyway).
pub const AWS_SESSION_TOKEN_CREDENTIAL: &str = "AWS_SESSION_TOKEN";
/// `metadata_email` when not given (a reserved, non-routable domain).
pub const DEFAULT_METADATA_EMAIL: &str = "sandbox@sluice.invalid";
/// `metadata_role` when not given.
pub const DEFAULT_METADATA_ROLE: &str = "sluice";

/// Which metadata service a provider is served through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MetadataKind {
    /// A GCE metadata server subset (`Metadata-Flavor: Google`).
    Gce,
    /// An AWS IMDSv2 subset.
    Aws,
}

impl MetadataKind {
    /// The policy spelling.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gce => "gce",
            Self::Aws => "aws",
        }
    }
}

/// `providers.<key>.metadata` and its non-secret values. The services hand out
/// placeholders only; the values here are not secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Metadata {
    Gce {
        /// `metadata_email` (default [`DEFAULT_METADATA_EMAIL`]).
        email: Arc<str>,
        /// `metadata_project_id`; `project/project-id` is 404 without it.
        project_id: Option<Arc<str>>,
    },
    Aws {
        /// `metadata_role` (default [`DEFAULT_METADATA_ROLE`]).
        role: Arc<str>,
        /// `metadata_region`; the placement paths are 404 without it.
        region: Option<Arc<str>>,
    },
}

impl Metadata {
    #[must_use]
    pub fn kind(&self) -> MetadataKind {
        match self {
            Self::Gce { .. } => MetadataKind::Gce,
            Self::Aws { .. } => MetadataKind::Aws,
        }
    }
}

impl Provider {
    /// Whether any endpoint of this provider covers the request.
    #[must_use]
    pub fn binds(&self, host: HostRef<'_>, port: u16, path: &str) -> bool {
        self.endpoints.iter().any(|e| e.covers(host, port, path))
    }
}
