//! Extract GraphQL request items from an HTTP request (GraphQL over HTTP:
//! GET query parameters, POST JSON / `application/graphql` / form bodies).

use super::{GraphqlError, GraphqlItem, MAX_BATCH};
use crate::request::json::{self, Lookup, Value};

/// The parameters read from a query string or form body.
const PARAMS: [&str; 6] = [
    "query",
    "operationName",
    "extensions",
    "id",
    "documentId",
    "queryId",
];

/// Raw, not yet validated values of one request item.
#[derive(Default)]
struct Raw {
    query: Option<String>,
    operation_name: Option<String>,
    hash: Option<String>,
    /// `id`, `documentId`, `queryId` in that order.
    ids: [Option<String>; 3],
}

impl Raw {
    fn into_item(self) -> Result<GraphqlItem, GraphqlError> {
        let query = self.query.filter(|q| !q.is_empty());
        let operation_name = self.operation_name.filter(|n| !n.is_empty());
        // Every persisted id the request names must agree: a server may
        // honour any of them.
        let mut persisted: Option<String> = None;
        let mut document_id = false;
        for (i, id) in std::iter::once(self.hash)
            .chain(self.ids)
            .enumerate()
            .filter_map(|(i, v)| Some((i, v?)))
        {
            document_id |= i > 0;
            match &persisted {
                Some(p) if *p != id => return Err(GraphqlError::ConflictingPersistedIds),
                Some(_) => {}
                None => persisted = Some(id),
            }
        }
        // A document id next to a query: which one the server executes
        // is server-specific. (An APQ hash next to its query is verified
        // by the server.)
        if query.is_some() && document_id {
            return Err(GraphqlError::QueryAndDocumentId);
        }
        if query.is_none() && persisted.is_none() {
            return Err(GraphqlError::MissingQuery);
        }
        Ok(GraphqlItem {
            query,
            operation_name,
            persisted_id: persisted,
        })
    }
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Decodes `%XX` and `+` (form encoding); the result must be UTF-8.
fn decode(s: &str) -> Result<String, GraphqlError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hi = b.get(i + 1).copied().and_then(hex);
                let lo = b.get(i + 2).copied().and_then(hex);
                let (Some(hi), Some(lo)) = (hi, lo) else {
                    return Err(GraphqlError::InvalidEncoding);
                };
                out.push(hi << 4 | lo);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| GraphqlError::InvalidEncoding)
}

/// The GraphQL parameters of a query string / form body: index into
/// [`PARAMS`] → decoded value; duplicates are an error.
fn params(raw: &str) -> Result<[Option<String>; 6], GraphqlError> {
    let mut out: [Option<String>; 6] = Default::default();
    for pair in raw.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = decode(k)?;
        if let Some(i) = PARAMS.iter().position(|p| *p == k) {
            if out[i].is_some() {
                return Err(GraphqlError::DuplicateParameter(PARAMS[i]));
            }
            out[i] = Some(decode(v)?);
        }
    }
    Ok(out)
}

fn raw_from_params(p: [Option<String>; 6]) -> Result<Raw, GraphqlError> {
    let [query, operation_name, extensions, id, document_id, query_id] = p;
    let hash = match extensions {
        Some(ext) => {
            let v = json::parse(ext.as_bytes()).ok_or(GraphqlError::InvalidJson)?;
            apq_hash(&v)?
        }
        None => None,
    };
    Ok(Raw {
        query,
        operation_name,
        hash,
        ids: [id, document_id, query_id],
    })
}

/// A member that must be a string (or null / absent).
fn string(v: &Value, key: &'static str) -> Result<Option<String>, GraphqlError> {
    match v.get(key) {
        Err(Lookup::Duplicate) => Err(GraphqlError::DuplicateParameter(key)),
        Ok(None | Some(Value::Null)) => Ok(None),
        Ok(Some(Value::String(s))) => Ok(Some(s.clone())),
        Ok(Some(_)) => Err(GraphqlError::WrongType(key)),
    }
}

/// A member that must be an object (or null / absent).
fn object<'v>(v: &'v Value, key: &'static str) -> Result<Option<&'v Value>, GraphqlError> {
    match v.get(key) {
        Err(Lookup::Duplicate) => Err(GraphqlError::DuplicateParameter(key)),
        Ok(None | Some(Value::Null)) => Ok(None),
        Ok(Some(o @ Value::Object(_))) => Ok(Some(o)),
        Ok(Some(_)) => Err(GraphqlError::WrongType(key)),
    }
}

/// `extensions.persistedQuery.sha256Hash`.
fn apq_hash(extensions: &Value) -> Result<Option<String>, GraphqlError> {
    if !matches!(extensions, Value::Object(_) | Value::Null) {
        return Err(GraphqlError::WrongType("extensions"));
    }
    match object(extensions, "persistedQuery")? {
        Some(pq) => string(pq, "sha256Hash"),
        None => Ok(None),
    }
}

fn item_from_value(v: &Value) -> Result<GraphqlItem, GraphqlError> {
    if !matches!(v, Value::Object(_)) {
        return Err(GraphqlError::NotAnObject);
    }
    let hash = match object(v, "extensions")? {
        Some(ext) => apq_hash(ext)?,
        None => None,
    };
    Raw {
        query: string(v, "query")?,
        operation_name: string(v, "operationName")?,
        hash,
        ids: [
            string(v, "id")?,
            string(v, "documentId")?,
            string(v, "queryId")?,
        ],
    }
    .into_item()
}

/// See [`super::items_from_json`].
pub(super) fn items_from_json(body: &[u8]) -> Result<Vec<GraphqlItem>, GraphqlError> {
    let v = json::parse(body).ok_or(GraphqlError::InvalidJson)?;
    match &v {
        Value::Array(items) => {
            if items.is_empty() {
                return Err(GraphqlError::EmptyBatch);
            }
            if items.len() > MAX_BATCH {
                return Err(GraphqlError::BatchTooLarge);
            }
            items.iter().map(item_from_value).collect()
        }
        _ => Ok(vec![item_from_value(&v)?]),
    }
}

/// The media type, lowercased, without parameters.
fn media_type(content_type: Option<&str>) -> Option<String> {
    let ct = content_type?;
    let mt = ct.split(';').next().unwrap_or("").trim();
    (!mt.is_empty()).then(|| mt.to_ascii_lowercase())
}

/// See [`super::items_from_http`].
pub(super) fn items_from_http(
    method: &str,
    content_type: Option<&str>,
    raw_query: Option<&str>,
    body: &[u8],
) -> Result<Vec<GraphqlItem>, GraphqlError> {
    let url = params(raw_query.unwrap_or(""))?;
    match method {
        "GET" => {
            if !body.is_empty() {
                return Err(GraphqlError::GetWithBody);
            }
            Ok(vec![raw_from_params(url)?.into_item()?])
        }
        "POST" => {
            let mt = media_type(content_type).ok_or(GraphqlError::UnsupportedContentType)?;
            if mt == "application/graphql" {
                // The document is the body; only `operationName` may ride
                // in the URL (as some servers read it there).
                let [query, operation_name, rest @ ..] = url;
                if query.is_some() || rest.iter().any(Option::is_some) {
                    return Err(GraphqlError::ParametersInUrlAndBody);
                }
                let doc = std::str::from_utf8(body).map_err(|_| GraphqlError::InvalidUtf8)?;
                return Ok(vec![Raw {
                    query: Some(doc.to_owned()),
                    operation_name,
                    ..Raw::default()
                }
                .into_item()?]);
            }
            // Some servers merge URL parameters into POST requests.
            if url.iter().any(Option::is_some) {
                return Err(GraphqlError::ParametersInUrlAndBody);
            }
            if mt == "application/json" || (mt.starts_with("application/") && mt.ends_with("+json"))
            {
                items_from_json(body)
            } else if mt == "application/x-www-form-urlencoded" {
                let form = std::str::from_utf8(body).map_err(|_| GraphqlError::InvalidUtf8)?;
                Ok(vec![raw_from_params(params(form)?)?.into_item()?])
            } else {
                Err(GraphqlError::UnsupportedContentType)
            }
        }
        _ => Err(GraphqlError::UnsupportedMethod),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes() {
        assert_eq!(decode("a+b%20c%7B").unwrap(), "a b c{");
        assert!(decode("%2").is_err());
        assert!(decode("%zz").is_err());
        assert!(decode("%ff").is_err());
    }

    #[test]
    fn persisted_ids_must_agree() {
        let raw = |hash: Option<&str>, id: Option<&str>, q: Option<&str>| Raw {
            query: q.map(str::to_owned),
            hash: hash.map(str::to_owned),
            ids: [id.map(str::to_owned), None, None],
            ..Raw::default()
        };
        assert!(raw(Some("a"), Some("a"), None).into_item().is_ok());
        assert_eq!(
            raw(Some("a"), Some("b"), None).into_item().unwrap_err(),
            GraphqlError::ConflictingPersistedIds
        );
        assert_eq!(
            raw(None, Some("a"), Some("{a}")).into_item().unwrap_err(),
            GraphqlError::QueryAndDocumentId
        );
        let apq = raw(Some("h"), None, Some("{a}")).into_item().unwrap();
        assert_eq!(apq.persisted_id.as_deref(), Some("h"));
        assert_eq!(
            raw(None, None, Some("")).into_item().unwrap_err(),
            GraphqlError::MissingQuery
        );
    }
}
