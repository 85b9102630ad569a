//! GraphQL request-level policy (facts §1.5): extract request items from
//! HTTP, classify the selected operation (type, name, root fields) and
//! evaluate it against one endpoint's GraphQL rules.
//!
//! Root fields are the fields' real names (aliases resolved), with
//! fragment spreads and inline fragments at the root expanded, sorted and
//! deduplicated; `__typename` counts as a field. Every input is bounded
//! and no input panics.
//!
//! ```
//! use sluice_policy::request::graphql::{classify, OperationType};
//! let op = classify("query Viewer { b: viewer { login } ...F } fragment F on Query { repository(name: \"x\") { id } }", None).unwrap();
//! assert_eq!(op.op_type, OperationType::Query);
//! assert_eq!(op.name.as_deref(), Some("Viewer"));
//! assert_eq!(op.root_fields, ["repository", "viewer"]);
//! ```

mod classify;
mod eval;
mod http;

pub use eval::{evaluate, evaluate_operation};

pub use classify::{
    MAX_DOCUMENT_BYTES, MAX_FRAGMENT_DEPTH, MAX_FRAGMENT_EXPANSIONS, MAX_PARSE_DEPTH,
    MAX_ROOT_FIELDS, MAX_TOKENS,
};

/// Most items in one batched request.
pub const MAX_BATCH: usize = 64;
/// Longest verdict summary (longer ones are cut, ending in `...`).
pub const MAX_SUMMARY_LEN: usize = 512;

/// The operation keyword of a GraphQL operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OperationType {
    Query,
    Mutation,
    Subscription,
}

impl OperationType {
    /// `query`, `mutation` or `subscription`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Query => "query",
            Self::Mutation => "mutation",
            Self::Subscription => "subscription",
        }
    }

    /// Parses `query`/`mutation`/`subscription` (case-insensitive).
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Query, Self::Mutation, Self::Subscription]
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(s))
    }
}

/// What policy sees of one operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClassifiedOperation {
    pub op_type: OperationType,
    /// The operation's name (`None` for an anonymous operation).
    pub name: Option<String>,
    /// Real field names selected at the root, sorted and deduplicated;
    /// `__typename` included.
    pub root_fields: Vec<String>,
}

/// One GraphQL request item as sent over HTTP or WebSocket.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GraphqlItem {
    /// The document (`None`, or empty, for a hash-only persisted query).
    pub query: Option<String>,
    /// `operationName`.
    pub operation_name: Option<String>,
    /// `extensions.persistedQuery.sha256Hash`, or `id`/`documentId`/`queryId`.
    pub persisted_id: Option<String>,
}

/// Why a GraphQL request could not be classified. Messages are lower-case,
/// short and never echo the document or client-supplied names.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GraphqlError {
    #[error("empty batch")]
    EmptyBatch,
    #[error("batch exceeds 64 operations")]
    BatchTooLarge,
    #[error("unsupported method")]
    UnsupportedMethod,
    #[error("unsupported content type")]
    UnsupportedContentType,
    #[error("request body is not valid json")]
    InvalidJson,
    #[error("request body is not valid utf-8")]
    InvalidUtf8,
    #[error("request is not a json object")]
    NotAnObject,
    #[error("`{0}` has the wrong type")]
    WrongType(&'static str),
    #[error("duplicate `{0}` parameter")]
    DuplicateParameter(&'static str),
    #[error("invalid percent-encoding in query string")]
    InvalidEncoding,
    #[error("graphql parameters in both the url and the body")]
    ParametersInUrlAndBody,
    #[error("get request with a body")]
    GetWithBody,
    #[error("missing query")]
    MissingQuery,
    #[error("conflicting persisted query ids")]
    ConflictingPersistedIds,
    #[error("request has both a query and a persisted document id")]
    QueryAndDocumentId,
    #[error("document too large")]
    DocumentTooLarge,
    #[error("document does not parse")]
    Syntax,
    #[error("document contains non-executable definitions")]
    NonExecutable,
    #[error("document has no operations")]
    NoOperation,
    #[error("operationName is required when the document has several operations")]
    OperationNameRequired,
    #[error("operationName does not match any operation")]
    UnknownOperation,
    #[error("duplicate operation name")]
    DuplicateOperation,
    #[error("an anonymous operation must be the only operation")]
    AnonymousOperationNotAlone,
    #[error("unknown fragment")]
    UnknownFragment,
    #[error("duplicate fragment name")]
    DuplicateFragment,
    #[error("fragment cycle")]
    FragmentCycle,
    #[error("operation selects no root fields")]
    NoRootFields,
    #[error("document too complex")]
    TooComplex,
}

/// Extracts the request items of an HTTP request: a POST `application/json`
/// (or `application/*+json`) body holding one object or a non-empty array
/// (a batch, at most [`MAX_BATCH`] items); a POST `application/graphql` body
/// (the document; `operationName` may be in the URL); a POST
/// `application/x-www-form-urlencoded` body; or a GET whose raw query
/// string carries `query`, `operationName`, `extensions` (JSON), `id`,
/// `documentId`, `queryId` (percent and `+` decoded).
///
/// The body is expected to be capped by the caller (`graphql_max_body_bytes`).
///
/// # Errors
/// Any other method or content type, invalid JSON/UTF-8/percent-encoding,
/// a duplicated parameter or JSON key that policy reads, GraphQL parameters
/// in the URL of a POST (other than `operationName` with
/// `application/graphql`), a GET with a body, an empty or oversized batch,
/// an item without query or persisted id, persisted ids that disagree, or
/// a query next to a `id`/`documentId`/`queryId`.
pub fn items_from_http(
    method: &str,
    content_type: Option<&str>,
    raw_query: Option<&str>,
    body: &[u8],
) -> Result<Vec<GraphqlItem>, GraphqlError> {
    http::items_from_http(method, content_type, raw_query, body)
}

/// Extracts the items of a JSON GraphQL request body (object or non-empty
/// array); also usable for a GraphQL-over-WebSocket `payload` serialized
/// on its own.
///
/// # Errors
/// As [`items_from_http`] for JSON bodies.
pub fn items_from_json(body: &[u8]) -> Result<Vec<GraphqlItem>, GraphqlError> {
    http::items_from_json(body)
}

/// Parses `document` and classifies the operation selected by
/// `operation_name` (required when the document has several operations;
/// an empty name counts as none). Fragment spreads and inline fragments at
/// the root are expanded, bounded by [`MAX_FRAGMENT_DEPTH`] and
/// [`MAX_FRAGMENT_EXPANSIONS`], with cycle detection; at most
/// [`MAX_ROOT_FIELDS`] root selections are counted.
///
/// # Errors
/// Parse errors, documents over [`MAX_DOCUMENT_BYTES`], non-executable
/// definitions, no operation, ambiguous or unknown operation selection,
/// duplicate operation or fragment names, unknown fragments spread at the
/// root, fragment cycles and exceeded bounds.
pub fn classify(
    document: &str,
    operation_name: Option<&str>,
) -> Result<ClassifiedOperation, GraphqlError> {
    classify::classify(document, operation_name)
}
