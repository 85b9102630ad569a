//! Query-string parsing for request-level rules: decoded `(name, value)`
//! pairs, bounded in count and size.

use thiserror::Error;

use super::path::escape_at;

/// Most parameters accepted in one query string.
pub const MAX_QUERY_PARAMS: usize = 256;
/// Longest raw query string accepted, in bytes.
pub const MAX_QUERY_LEN: usize = 8192;

/// Why a query string was rejected by [`QueryParams::parse`]. Callers should
/// deny the request (fail closed): deny rules cannot be evaluated.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum QueryError {
    /// Longer than [`MAX_QUERY_LEN`] bytes.
    #[error("query string is longer than 8192 bytes")]
    TooLong,
    /// More than [`MAX_QUERY_PARAMS`] non-empty parameters.
    #[error("query string has more than 256 parameters")]
    TooManyParams,
    /// A `%` not followed by two hex digits.
    #[error("query string contains an invalid percent escape")]
    BadEscape,
    /// A decoded name or value is not valid utf-8.
    #[error("query string decodes to invalid utf-8")]
    InvalidUtf8,
}

/// A parsed query string: decoded `(name, value)` pairs in request order.
/// Stored as one decoded buffer plus byte ranges (two allocations per parse).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueryParams {
    buf: String,
    /// (name start, name end, value end); the value starts at name end.
    spans: Vec<(usize, usize, usize)>,
}

/// Decodes `%XX` in `piece` into `out`; `+` stays `+`.
fn decode_into(out: &mut Vec<u8>, piece: &[u8]) -> Result<(), QueryError> {
    let mut i = 0;
    while let Some(&b) = piece.get(i) {
        if b == b'%' {
            out.push(escape_at(piece, i).ok_or(QueryError::BadEscape)?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    Ok(())
}

impl QueryParams {
    /// Parses a query string given **without** the leading `?`. Pieces are
    /// split on `&` (empty pieces are skipped), then at the first `=` (no `=`
    /// means an empty value). `%XX` is decoded in names and values; `+` is
    /// kept as `+` (this is not form decoding).
    ///
    /// # Errors
    /// More than [`MAX_QUERY_LEN`] bytes, more than [`MAX_QUERY_PARAMS`]
    /// parameters, an invalid escape, or invalid utf-8 after decoding.
    pub fn parse(raw: &str) -> Result<Self, QueryError> {
        if raw.len() > MAX_QUERY_LEN {
            return Err(QueryError::TooLong);
        }
        let mut buf = Vec::with_capacity(raw.len());
        let mut spans = Vec::new();
        for piece in raw.as_bytes().split(|&b| b == b'&') {
            if piece.is_empty() {
                continue;
            }
            if spans.len() == MAX_QUERY_PARAMS {
                return Err(QueryError::TooManyParams);
            }
            let (name, value) = match piece.iter().position(|&b| b == b'=') {
                Some(p) => (&piece[..p], &piece[p + 1..]),
                None => (piece, &[][..]),
            };
            let start = buf.len();
            decode_into(&mut buf, name)?;
            let mid = buf.len();
            decode_into(&mut buf, value)?;
            // Each part must be utf-8 on its own, so that both slices are
            // valid `str`s at char boundaries.
            for part in [&buf[start..mid], &buf[mid..]] {
                if std::str::from_utf8(part).is_err() {
                    return Err(QueryError::InvalidUtf8);
                }
            }
            spans.push((start, mid, buf.len()));
        }
        let buf = String::from_utf8(buf).map_err(|_| QueryError::InvalidUtf8)?;
        Ok(Self { buf, spans })
    }

    /// All `(name, value)` pairs in request order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.spans.iter().map(|&(s, m, e)| {
            (
                self.buf.get(s..m).unwrap_or_default(),
                self.buf.get(m..e).unwrap_or_default(),
            )
        })
    }

    /// Every value of parameter `name` (exact, case-sensitive, decoded), in
    /// request order. Allocates nothing.
    pub fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.iter().filter(move |(n, _)| *n == name).map(|(_, v)| v)
    }

    /// True if `name` occurs at least once.
    #[must_use]
    pub fn contains(&self, name: &str) -> bool {
        self.values(name).next().is_some()
    }

    /// Number of parameters.
    #[must_use]
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// True when there are no parameters.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }
}
