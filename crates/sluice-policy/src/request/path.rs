//! Request path canonicalization (facts §4.8): the one form of a request
//! path that policy sees and that goes on the wire.

use thiserror::Error;

/// Longest raw origin-form path accepted, in bytes.
pub const MAX_PATH_LEN: usize = 4096;

/// Why a request path was rejected by [`canonicalize_path`].
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PathError {
    /// Empty, or not starting with `/`.
    #[error("request path must start with '/'")]
    NotAbsolute,
    /// A NUL, control, TAB, CR, LF or DEL byte.
    #[error("request path contains a control byte")]
    ControlByte,
    /// A raw (not percent-encoded) non-ASCII byte.
    #[error("request path contains a raw non-ascii byte")]
    NonAscii,
    /// A `#` fragment marker.
    #[error("request path contains a fragment ('#')")]
    Fragment,
    /// A `?`: the caller must split the query off before canonicalizing.
    #[error("request path contains '?'; the query must be split off first")]
    QueryDelimiter,
    /// A `%` not followed by two hex digits.
    #[error("request path contains an invalid percent escape")]
    BadEscape,
    /// `%2F` inside a segment on an endpoint without `allow_encoded_slash`.
    #[error("request path contains an encoded slash (%2F); set `allow_encoded_slash: true` on the endpoint to permit it")]
    EncodedSlash,
    /// A `..` segment that would climb above `/`.
    #[error("request path escapes the root with '..'")]
    EscapesRoot,
    /// Longer than [`MAX_PATH_LEN`] bytes.
    #[error("request path is longer than 4096 bytes")]
    TooLong,
    /// The asterisk-form request target `*` (OPTIONS *).
    #[error("asterisk-form request target '*' is not a path")]
    AsteriskForm,
}

/// Whether `b` is an RFC 3986 unreserved character (ALPHA DIGIT `-` `.` `_` `~`).
fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes the `%XX` at `seg[i..]`, or `None` if it is not a valid escape.
pub(crate) fn escape_at(seg: &[u8], i: usize) -> Option<u8> {
    let hi = hex(*seg.get(i + 1)?)?;
    let lo = hex(*seg.get(i + 2)?)?;
    Some(hi << 4 | lo)
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// Appends one segment (parameters already stripped) to `out`, decoding
/// unreserved escapes and upper-casing the others.
fn push_segment(out: &mut String, seg: &[u8], allow_encoded_slash: bool) -> Result<(), PathError> {
    let mut i = 0;
    while let Some(&b) = seg.get(i) {
        if b != b'%' {
            out.push(char::from(b));
            i += 1;
            continue;
        }
        let d = escape_at(seg, i).ok_or(PathError::BadEscape)?;
        if d == b'/' && !allow_encoded_slash {
            return Err(PathError::EncodedSlash);
        }
        if unreserved(d) {
            out.push(char::from(d));
        } else {
            out.push('%');
            out.push(char::from(HEX_UPPER[usize::from(d >> 4)]));
            out.push(char::from(HEX_UPPER[usize::from(d & 0xF)]));
        }
        i += 3;
    }
    Ok(())
}

/// Canonicalizes an origin-form request path (facts §4.8). `raw` is the path
/// **without** the query: callers split the request target at the first `?`.
///
/// Rejects: empty or not starting with `/`, `*` (asterisk form), NUL /
/// control / TAB / CR / LF / DEL bytes, raw non-ASCII bytes, `#`, `?`,
/// invalid `%` escapes, `..` climbing above `/`, more than
/// [`MAX_PATH_LEN`] bytes, and `%2F` unless `allow_encoded_slash` (then it is
/// kept as `%2F`, never decoded to `/`).
///
/// Normalizes, per `/`-separated segment: strips `;params` (from the first
/// raw `;`), decodes `%XX` of unreserved characters (`%41` → `A`) and writes
/// other escapes as upper-case `%HH`; then drops `.` segments, resolves `..`
/// (decoded dots count: `/a/%2e%2e/b` → `/b`) and collapses empty segments
/// (`//`). A trailing `/` is kept, and a trailing `.`/`..` segment leaves
/// one (`/a/b/..` → `/a/`). The result is never longer than `raw`, and
/// `canonicalize_path(canonicalize_path(x)?)` returns the same string.
///
/// # Errors
/// The first [`PathError`] found.
pub fn canonicalize_path(raw: &str, allow_encoded_slash: bool) -> Result<String, PathError> {
    let bytes = raw.as_bytes();
    if bytes.len() > MAX_PATH_LEN {
        return Err(PathError::TooLong);
    }
    if raw == "*" {
        return Err(PathError::AsteriskForm);
    }
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    for &b in bytes {
        match b {
            0..=0x1F | 0x7F => return Err(PathError::ControlByte),
            0x80..=0xFF => return Err(PathError::NonAscii),
            b'#' => return Err(PathError::Fragment),
            b'?' => return Err(PathError::QueryDelimiter),
            _ => {}
        }
    }
    let mut out = String::with_capacity(bytes.len());
    let mut trailing_slash = false;
    // The first piece is the empty string before the leading '/'.
    for raw_seg in bytes.split(|&b| b == b'/').skip(1) {
        let seg = match raw_seg.iter().position(|&b| b == b';') {
            Some(p) => &raw_seg[..p],
            None => raw_seg,
        };
        if seg.is_empty() {
            trailing_slash = true;
            continue;
        }
        let start = out.len();
        out.push('/');
        push_segment(&mut out, seg, allow_encoded_slash)?;
        match &out[start + 1..] {
            "." => {
                out.truncate(start);
                trailing_slash = true;
            }
            ".." => {
                out.truncate(start);
                let Some(prev) = out.rfind('/') else {
                    return Err(PathError::EscapesRoot);
                };
                out.truncate(prev);
                trailing_slash = true;
            }
            _ => trailing_slash = false,
        }
    }
    if trailing_slash || out.is_empty() {
        out.push('/');
    }
    Ok(out)
}
