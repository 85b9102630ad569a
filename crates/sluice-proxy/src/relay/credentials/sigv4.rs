//! AWS Signature Version 4, as a pure function of a request view: the
//! canonical request, the string to sign, the signing key, and the fields
//! a re-signed request carries (header form and presigned query form).
//! No I/O, no clock: the caller passes the timestamp. Nothing here logs.
//!
//! What the client sent is read by [`ClientSignature::detect`]; the relay
//! step that uses it is `credentials::resign`.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// The only algorithm sluice signs with.
pub(crate) const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// The payload hash of presigned URLs and of `sigv4:no_body`.
pub(crate) const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";
/// SHA-256 of the empty string.
pub(crate) const EMPTY_SHA256: &str =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
/// At most this many names in a client's `SignedHeaders` (a parser bound).
const MAX_SIGNED_HEADERS: usize = 64;

/// Why a client's SigV4 fields cannot be re-signed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SigV4Error {
    /// `Authorization: AWS4-HMAC-SHA256 ...` or the query form is malformed.
    #[error("malformed SigV4 {0}")]
    Malformed(&'static str),
    /// Both an `Authorization` header and a presigned query.
    #[error("request is signed both in the header and in the query")]
    Ambiguous,
    /// `STREAMING-AWS4-HMAC-SHA256-PAYLOAD*`: per-chunk signatures chained
    /// from the seed signature, which sluice does not re-sign.
    #[error("signed aws-chunked payloads are not supported")]
    Streaming,
    /// An `x-amz-content-sha256` value that is neither a hash nor a known mode.
    #[error("unsupported x-amz-content-sha256 value")]
    PayloadMode,
}

/// The parts of a credential scope (`AKID/date/region/service/aws4_request`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CredentialScope {
    pub(crate) access_key_id: String,
    pub(crate) date: String,
    pub(crate) region: String,
    pub(crate) service: String,
}

impl CredentialScope {
    fn parse(s: &str) -> Result<Self, SigV4Error> {
        // The access key id may itself hold no `/`; the last four parts are fixed.
        let mut parts = s.rsplitn(5, '/');
        let (Some(term), Some(service), Some(region), Some(date), Some(akid)) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(SigV4Error::Malformed("credential scope"));
        };
        let name = |s: &str| {
            !s.is_empty()
                && s.len() <= 64
                && s.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
        };
        let ok = term == "aws4_request"
            && !akid.is_empty()
            && date.len() == 8
            && date.bytes().all(|c| c.is_ascii_digit())
            && name(region)
            && name(service);
        if !ok {
            return Err(SigV4Error::Malformed("credential scope"));
        }
        Ok(Self {
            access_key_id: akid.to_owned(),
            date: date.to_owned(),
            region: region.to_owned(),
            service: service.to_owned(),
        })
    }
}

/// How the client signed its request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ClientSignature {
    /// Not SigV4-signed (anonymous, or another scheme).
    None,
    /// `Authorization: AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...`.
    Header {
        scope: CredentialScope,
        /// Lower-case names, as listed.
        signed_headers: Vec<String>,
    },
    /// `X-Amz-Algorithm=AWS4-HMAC-SHA256` in the query (a presigned URL).
    Query {
        scope: CredentialScope,
        signed_headers: Vec<String>,
        /// `X-Amz-Date` as sent (kept: the URL's validity counts from it).
        amz_date: String,
    },
}

impl ClientSignature {
    /// Reads the client's SigV4 fields from its header list and raw query.
    pub(crate) fn detect(
        headers: &[(String, Vec<u8>)],
        query: Option<&str>,
    ) -> Result<Self, SigV4Error> {
        let auth = headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("authorization"))
            .find_map(|(_, v)| aws4_params(v));
        let params = query.map(parse_query).unwrap_or_default();
        let param = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        };
        let presigned = param("X-Amz-Algorithm").is_some();
        match (auth, presigned) {
            (Some(_), true) => Err(SigV4Error::Ambiguous),
            (Some(a), false) => {
                let a = a?;
                Ok(Self::Header {
                    scope: CredentialScope::parse(a.credential)?,
                    signed_headers: signed_header_list(a.signed_headers)?,
                })
            }
            (None, true) => {
                if param("X-Amz-Algorithm") != Some(ALGORITHM) {
                    return Err(SigV4Error::Malformed("X-Amz-Algorithm"));
                }
                let scope = CredentialScope::parse(
                    param("X-Amz-Credential").ok_or(SigV4Error::Malformed("X-Amz-Credential"))?,
                )?;
                let amz_date = param("X-Amz-Date")
                    .filter(|d| valid_amz_date(d))
                    .ok_or(SigV4Error::Malformed("X-Amz-Date"))?;
                let signed = param("X-Amz-SignedHeaders")
                    .ok_or(SigV4Error::Malformed("X-Amz-SignedHeaders"))?;
                Ok(Self::Query {
                    scope,
                    signed_headers: signed_header_list(signed)?,
                    amz_date: amz_date.to_owned(),
                })
            }
            (None, false) => Ok(Self::None),
        }
    }
}

/// The `Credential=` and `SignedHeaders=` of an `AWS4-HMAC-SHA256`
/// authorization value; `None` when the value uses another scheme.
struct Aws4Params<'a> {
    credential: &'a str,
    signed_headers: &'a str,
}

fn aws4_params(value: &[u8]) -> Option<Result<Aws4Params<'_>, SigV4Error>> {
    let text = std::str::from_utf8(value).ok()?;
    let (scheme, rest) = text.trim().split_once([' ', '\t'])?;
    if !scheme.eq_ignore_ascii_case(ALGORITHM) {
        return None;
    }
    let mut credential = None;
    let mut signed_headers = None;
    for part in rest.split(',') {
        let Some((k, v)) = part.trim().split_once('=') else {
            return Some(Err(SigV4Error::Malformed("Authorization")));
        };
        match k.trim() {
            "Credential" => credential = Some(v.trim()),
            "SignedHeaders" => signed_headers = Some(v.trim()),
            "Signature" => {}
            _ => return Some(Err(SigV4Error::Malformed("Authorization"))),
        }
    }
    Some(match (credential, signed_headers) {
        (Some(credential), Some(signed_headers)) => Ok(Aws4Params {
            credential,
            signed_headers,
        }),
        _ => Err(SigV4Error::Malformed("Authorization")),
    })
}

fn signed_header_list(s: &str) -> Result<Vec<String>, SigV4Error> {
    let names: Vec<String> = s
        .split(';')
        .filter(|n| !n.is_empty())
        .map(str::to_ascii_lowercase)
        .collect();
    if names.is_empty() || names.len() > MAX_SIGNED_HEADERS {
        return Err(SigV4Error::Malformed("SignedHeaders"));
    }
    Ok(names)
}

/// `YYYYMMDDTHHMMSSZ`.
fn valid_amz_date(d: &str) -> bool {
    let b = d.as_bytes();
    b.len() == 16
        && b[8] == b'T'
        && b[15] == b'Z'
        && b[..8].iter().chain(&b[9..15]).all(u8::is_ascii_digit)
}

/// What the payload hash of a header-signed request is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PayloadHash {
    /// The client's `x-amz-content-sha256` value, kept on the wire and signed.
    FromClient(String),
    /// No such header: sluice decides (hash the body, or unsigned).
    Missing,
}

/// Classifies the client's `x-amz-content-sha256` (the first one).
pub(crate) fn payload_hash(headers: &[(String, Vec<u8>)]) -> Result<PayloadHash, SigV4Error> {
    let Some((_, v)) = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("x-amz-content-sha256"))
    else {
        return Ok(PayloadHash::Missing);
    };
    let v = std::str::from_utf8(v)
        .map_err(|_| SigV4Error::PayloadMode)?
        .trim();
    if v.starts_with("STREAMING-AWS4-") {
        return Err(SigV4Error::Streaming);
    }
    let is_hash = v.len() == 64 && v.bytes().all(|c| c.is_ascii_hexdigit());
    if is_hash || v == UNSIGNED_PAYLOAD || v == "STREAMING-UNSIGNED-PAYLOAD-TRAILER" {
        Ok(PayloadHash::FromClient(v.to_owned()))
    } else {
        Err(SigV4Error::PayloadMode)
    }
}

/// Lower-case hex SHA-256.
pub(crate) fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length: `new_from_slice` cannot fail for it.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        unreachable!("HMAC takes keys of any length")
    };
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// The real credentials a request is signed with.
pub(crate) struct Keys<'a> {
    pub(crate) access_key_id: &'a str,
    pub(crate) secret_access_key: &'a str,
    /// `None`: the client's `X-Amz-Security-Token` is dropped.
    pub(crate) session_token: Option<&'a str>,
}

/// Who signs, where, and when.
pub(crate) struct Signer<'a> {
    pub(crate) keys: Keys<'a>,
    pub(crate) region: &'a str,
    pub(crate) service: &'a str,
    /// `YYYYMMDDTHHMMSSZ`.
    pub(crate) amz_date: &'a str,
}

impl Signer<'_> {
    fn date(&self) -> &str {
        self.amz_date.get(..8).unwrap_or(self.amz_date)
    }

    fn scope(&self) -> String {
        format!(
            "{}/{}/{}/aws4_request",
            self.date(),
            self.region,
            self.service
        )
    }

    fn credential(&self) -> String {
        format!("{}/{}", self.keys.access_key_id, self.scope())
    }

    /// `kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request")`.
    fn signing_key(&self) -> [u8; 32] {
        let mut k = format!("AWS4{}", self.keys.secret_access_key).into_bytes();
        let mut key = hmac(&k, self.date().as_bytes());
        k.fill(0);
        for part in [self.region, self.service, "aws4_request"] {
            key = hmac(&key, part.as_bytes());
        }
        key
    }

    fn string_to_sign(&self, canonical_request: &[u8]) -> String {
        format!(
            "{ALGORITHM}\n{}\n{}\n{}",
            self.amz_date,
            self.scope(),
            sha256_hex(canonical_request)
        )
    }

    fn signature(&self, canonical_request: &[u8]) -> String {
        hex(&hmac(
            &self.signing_key(),
            self.string_to_sign(canonical_request).as_bytes(),
        ))
    }

    /// Header form. `headers` are the fields as they go on the wire, without
    /// the client's `Authorization`, `X-Amz-Date` and `X-Amz-Security-Token`;
    /// `client_signed` the names the client signed. Returns the fields to
    /// append: `X-Amz-Date`, `X-Amz-Security-Token` (only with a real
    /// token), `Authorization`.
    pub(crate) fn sign_headers(
        &self,
        method: &str,
        origin: &str,
        headers: &[(String, Vec<u8>)],
        client_signed: &[String],
        payload_hash: &str,
    ) -> Vec<(String, Vec<u8>)> {
        let mut added: Vec<(String, Vec<u8>)> =
            vec![("X-Amz-Date".into(), self.amz_date.as_bytes().to_vec())];
        if let Some(t) = self.keys.session_token {
            added.push(("X-Amz-Security-Token".into(), t.as_bytes().to_vec()));
        }
        let all: Vec<(String, Vec<u8>)> = headers.iter().chain(&added).cloned().collect();
        let present = |n: &str| all.iter().any(|(h, _)| h.eq_ignore_ascii_case(n));
        let mut names: Vec<String> = client_signed
            .iter()
            .filter(|n| !matches!(n.as_str(), "authorization") && present(n))
            .cloned()
            .collect();
        for n in [
            "host",
            "x-amz-date",
            "x-amz-content-sha256",
            "x-amz-security-token",
        ] {
            if present(n) {
                names.push(n.to_owned());
            }
        }
        let (path, query) = split_origin(origin);
        let (canonical_headers, signed) = canonical_headers(&all, &names);
        let cr = canonical_request(
            method,
            &canonical_uri(path, self.service),
            &canonical_query(query, false),
            &canonical_headers,
            &signed,
            payload_hash,
        );
        let auth = format!(
            "{ALGORITHM} Credential={}, SignedHeaders={signed}, Signature={}",
            self.credential(),
            self.signature(&cr)
        );
        added.push(("Authorization".into(), auth.into_bytes()));
        added
    }

    /// Query form (a presigned URL). `query` is the client's raw query
    /// without its credential, token and signature
    /// ([`strip_presigned_fields`]); `headers` the wire fields;
    /// `signed_headers` the client's `X-Amz-SignedHeaders`. Returns the new
    /// raw query: the client's parameters in their order, then
    /// `X-Amz-Credential`, `X-Amz-Security-Token` (only with a real token)
    /// and `X-Amz-Signature`. The payload is `UNSIGNED-PAYLOAD`.
    pub(crate) fn presign_query(
        &self,
        method: &str,
        path: &str,
        query: &str,
        headers: &[(String, Vec<u8>)],
        signed_headers: &[String],
    ) -> String {
        let mut parts: Vec<String> = strip_presigned_fields(query)
            .split('&')
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect();
        parts.push(format!(
            "X-Amz-Credential={}",
            uri_encode(self.credential().as_bytes(), true)
        ));
        if let Some(t) = self.keys.session_token {
            parts.push(format!(
                "X-Amz-Security-Token={}",
                uri_encode(t.as_bytes(), true)
            ));
        }
        let unsigned = parts.join("&");
        let (canonical_headers, signed) = canonical_headers(headers, signed_headers);
        let cr = canonical_request(
            method,
            &canonical_uri(path, self.service),
            &canonical_query(Some(&unsigned), true),
            &canonical_headers,
            &signed,
            UNSIGNED_PAYLOAD,
        );
        format!("{unsigned}&X-Amz-Signature={}", self.signature(&cr))
    }
}

/// A raw query without the presigned fields a re-signer replaces
/// (`X-Amz-Credential`, `X-Amz-Security-Token`, `X-Amz-Signature`, any
/// spelling); the other parameters as they were, in their order.
pub(crate) fn strip_presigned_fields(query: &str) -> String {
    const REPLACED: [&[u8]; 3] = [
        b"x-amz-credential",
        b"x-amz-security-token",
        b"x-amz-signature",
    ];
    let kept: Vec<&str> = query
        .split('&')
        .filter(|part| {
            let key = part.split_once('=').map_or(*part, |(k, _)| k);
            let decoded = percent_decode(key);
            !part.is_empty() && !REPLACED.iter().any(|r| decoded.eq_ignore_ascii_case(r))
        })
        .collect();
    kept.join("&")
}

/// `path?query` split at the first `?`.
pub(crate) fn split_origin(origin: &str) -> (&str, Option<&str>) {
    match origin.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (origin, None),
    }
}

fn canonical_request(
    method: &str,
    uri: &str,
    query: &str,
    canonical_headers: &[u8],
    signed: &str,
    payload_hash: &str,
) -> Vec<u8> {
    let mut cr = Vec::with_capacity(256 + canonical_headers.len());
    for part in [method, uri, query] {
        cr.extend_from_slice(part.as_bytes());
        cr.push(b'\n');
    }
    cr.extend_from_slice(canonical_headers);
    cr.push(b'\n');
    cr.extend_from_slice(signed.as_bytes());
    cr.push(b'\n');
    cr.extend_from_slice(payload_hash.as_bytes());
    cr
}

/// The canonical URI: for `s3` the wire path as is (S3 signs it once
/// encoded, unnormalized); for other services the path without dot and
/// empty segments, each byte but unreserved ones and `/` encoded again.
pub(crate) fn canonical_uri(path: &str, service: &str) -> String {
    let path = if path.is_empty() { "/" } else { path };
    if service == "s3" {
        return path.to_owned();
    }
    let mut segments: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = String::from("/");
    out.push_str(&segments.join("/"));
    if path.ends_with('/') && !segments.is_empty() {
        out.push('/');
    }
    uri_encode(out.as_bytes(), false)
}

/// Canonical query: each parameter decoded then encoded strictly (RFC 3986
/// unreserved only; `+` is a plus), sorted by key then value. With
/// `skip_signature`, `X-Amz-Signature` is left out (presigned URLs).
pub(crate) fn canonical_query(query: Option<&str>, skip_signature: bool) -> String {
    let Some(q) = query else {
        return String::new();
    };
    let mut pairs: Vec<(String, String)> = q
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                uri_encode(&percent_decode(k), true),
                uri_encode(&percent_decode(v), true),
            )
        })
        .filter(|(k, _)| !(skip_signature && k == "X-Amz-Signature"))
        .collect();
    pairs.sort();
    let parts: Vec<String> = pairs.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    parts.join("&")
}

/// Canonical header block (`name:value\n` each, sorted) and the
/// `SignedHeaders` list for the lower-case `names` (deduplicated). Values
/// are trimmed, inner runs of spaces collapsed, repeated fields joined by `,`.
fn canonical_headers(headers: &[(String, Vec<u8>)], names: &[String]) -> (Vec<u8>, String) {
    let mut names: Vec<&str> = names.iter().map(String::as_str).collect();
    names.sort_unstable();
    names.dedup();
    let mut block = Vec::new();
    for name in &names {
        block.extend_from_slice(name.as_bytes());
        block.push(b':');
        let values: Vec<Vec<u8>> = headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| collapse_spaces(v))
            .collect();
        block.extend_from_slice(&values.join(&b","[..]));
        block.push(b'\n');
    }
    (block, names.join(";"))
}

fn collapse_spaces(v: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len());
    for &c in v.trim_ascii() {
        if c == b' ' && out.last() == Some(&b' ') {
            continue;
        }
        out.push(c);
    }
    out
}

/// Percent-decode; an invalid escape stays as written.
fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = |c: Option<&u8>| c.and_then(|c| (*c as char).to_digit(16));
            if let (Some(h), Some(l)) = (hex(b.get(i + 1)), hex(b.get(i + 2))) {
                // Two hex digits: at most 255.
                out.push(u8::try_from(h * 16 + l).unwrap_or(b'%'));
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// AWS `UriEncode`: unreserved bytes as is, everything else `%XX`
/// (upper-case); `/` too when `encode_slash`.
fn uri_encode(v: &[u8], encode_slash: bool) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(v.len() * 3);
    for &c in v {
        if c.is_ascii_alphanumeric() || b"-._~".contains(&c) || (c == b'/' && !encode_slash) {
            out.push(char::from(c));
        } else {
            let _ = write!(out, "%{c:02X}");
        }
    }
    out
}

/// A raw query as (decoded key, decoded value) pairs, for reading the
/// presigned fields (bounded by the head size the loop accepted).
fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                String::from_utf8_lossy(&percent_decode(k)).into_owned(),
                String::from_utf8_lossy(&percent_decode(v)).into_owned(),
            )
        })
        .collect()
}

/// `YYYYMMDDTHHMMSSZ` for seconds since the Unix epoch (UTC).
pub(crate) fn amz_date(unix_secs: u64) -> String {
    let days = unix_secs / 86_400;
    let secs = unix_secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian
/// (H. Hinnant's `civil_from_days`, for non-negative days).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// The region in an AWS hostname (`s3.us-west-2.amazonaws.com`,
/// `bucket.s3.eu-central-1.amazonaws.com`, `s3-us-west-2.amazonaws.com`),
/// if one is there.
pub(crate) fn region_from_host(host: &str) -> Option<&str> {
    host.split('.')
        .map(|label| label.strip_prefix("s3-").unwrap_or(label))
        .find(|label| looks_like_region(label))
}

/// `geo-name-N` or `geo-gov-name-N`-shaped labels (`us-east-1`,
/// `ap-southeast-2`, `us-gov-west-1`), `geo` one of AWS's region prefixes.
fn looks_like_region(label: &str) -> bool {
    const GEOS: [&str; 10] = ["af", "ap", "ca", "cn", "eu", "il", "me", "mx", "sa", "us"];
    let parts: Vec<&str> = label.split('-').collect();
    let (Some(first), Some(last)) = (parts.first(), parts.last()) else {
        return false;
    };
    (3..=5).contains(&parts.len())
        && GEOS.contains(first)
        && !last.is_empty()
        && last.bytes().all(|c| c.is_ascii_digit())
        && parts[1..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|c| c.is_ascii_lowercase()))
}

#[cfg(test)]
mod tests;
